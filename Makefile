# Quick start:  make demo   (set up, then distill a Fashion-MNIST teacher and print the comparison)
#               make test   (set up, then run the test suite)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup setup-test data browser demo test teachers clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

# the tests also exercise TensorBoard, MLflow, transformers and Optuna against the real libraries
setup-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test,track,hf,text,trl,tune]'
	touch $@

# Debian's Chromium renders the HTML report in a test (skipped where it cannot be installed)
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || echo "chromium not installed: the report rendering test will skip"; \
	else echo "chromium not available: the report rendering test will skip"; fi

# Debian ships Fashion-MNIST as IDX files; elsewhere point KDLAB_DATA at a directory holding them.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ -n "$$KDLAB_DATA" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) && \
	  echo "installed Fashion-MNIST into $(FMNIST_DIR)"; \
	else echo "Fashion-MNIST not found: apt-get install dataset-fashion-mnist, or export KDLAB_DATA=/dir/with/idx/files"; fi

demo: setup data
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/kdlab demo

# lint (pyflakes, line length, import order), the layering contract, the type checker, then the tests
test: setup-test data browser
	$(BIN)/ruff check -q kdlab tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The strong Fashion-MNIST teachers (configs/teachers/*.yaml): hours on 2 CPU cores, so every run is
# resumable: an interrupted `make teachers` continues where it stopped. Runs live in $(TEACHER_RUNS)
# (outside the work tree by default, so a fresh checkout keeps the progress of an earlier one).
TEACHER_RUNS ?= $(HOME)/.cache/kdlab/teacher-runs
teachers: setup data
	@for cfg in configs/teachers/*.yaml; do \
	  name=$$(basename $$cfg .yaml); \
	  $(BIN)/kdlab train $$cfg --out $(TEACHER_RUNS)/$$name --resume --quiet || exit 1; \
	  mkdir -p kdlab/assets/teachers; \
	  cp $(TEACHER_RUNS)/$$name/best.safetensors kdlab/assets/teachers/$$name.safetensors; \
	  cp $(TEACHER_RUNS)/$$name/best.json kdlab/assets/teachers/$$name.json; \
	done

clean:
	rm -rf $(VENV) runs
