"""`kdlab train` a tiny transformer teacher on a CSV of texts, then `kdlab distill` (kd; kd+hidden) into the
text students (same tokenizer), all offline: the teacher is built from a config, no weights downloaded."""
import json
import os
import subprocess
import sys

from tests._text import tiny_hf_dir, write_csv

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
ADAM = ["--lr", "0.003", "--batch-size", "16", "train.optimizer=adamw", "train.weight_decay=0.01"]


def kdlab(*args: str, cwd, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "kdlab", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"kdlab {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def test_train_a_transformer_teacher_then_distill_text_students(tmp_path):
    csv = write_csv(tmp_path / "texts.csv", n=150)
    tiny = tiny_hf_dir(tmp_path / "tiny")
    data = ["--data", "text-file", "--root", str(csv), f"data.options.tokenizer={tiny}", "data.options.max_len=24"]
    kdlab("train", *data, "--model", "hf-classifier", f"student.options.path={tiny}", "--epochs", "6", *ADAM,
          "--out", "t", "--quiet", cwd=tmp_path)
    teacher = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert teacher["test"]["acc"] >= 0.8  # 3 separable topics: a teacher that learned
    for student, method, opts in (("bilstm", "kd", ["student.options.hidden=32"]),
                                  ("text-transformer", "kd+hidden", ["student.options.layers=1",
                                                                     "student.options.hidden=32",
                                                                     "student.options.heads=2"])):
        kdlab("distill", *data, "--teacher", "t/best", "--student", student, *opts, "--method", method,
              "--epochs", "6", *ADAM, "--out", f"s-{student}", "--quiet", cwd=tmp_path)
        s = json.loads((tmp_path / f"s-{student}" / "summary.json").read_text())
        assert s["test"]["acc"] >= 0.8, (student, s["test"])
        assert "name: kd" in (tmp_path / f"s-{student}" / "config.yaml").read_text()
        last = json.loads((tmp_path / f"s-{student}" / "metrics.jsonl").read_text().splitlines()[-1])
        assert "train_kd" in last and ("train_hidden" in last) == (method == "kd+hidden")
    # the teacher labels the unlabeled 90 % (the unlabeled scheme on token data), next to the labels alone
    out = kdlab("unlabeled", *data, "--teacher", "t/best", "--student", "bilstm", "--labeled", "0.1", "--baseline",
                "--epochs", "4", *ADAM, "--out", "u", "--quiet", cwd=tmp_path).stdout
    assert "labeled part alone" in out and "student test acc" in out
    p = kdlab("export", "s-bilstm/best", "--out", "onnx", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "text models are not exported yet" in p.stderr  # stated, not silently wrong


def test_text_source_errors_exit_2(tmp_path):
    (tmp_path / "t.csv").write_text("body,label\nhello,a\n")
    p = kdlab("train", "--data", "text-file", "--root", "t.csv", "--model", "bilstm", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "no column 'text'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
