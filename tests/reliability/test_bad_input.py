"""Bad input through the CLI: every user error is one line on stderr naming the problem, exit code 2,
never a traceback (and no stray warnings, which would print more lines)."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from kdlab.cli.main import main
from tests.reliability._helpers import make_teacher


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    make_teacher(d / "t")  # on 1x8x8 digits, 10 classes
    rng = np.random.default_rng(0)
    img = lambda *s: rng.random(s).astype(np.float32)
    lab = lambda n, k: rng.integers(0, k, n)
    np.savez(d / "mnist_like.npz", x=rng.integers(0, 255, (60, 28, 28), dtype=np.uint8), y=lab(60, 10))
    np.savez(d / "three.npz", x=img(60, 1, 8, 8), y=lab(60, 3))
    np.savez(d / "rgb.npz", x=img(60, 3, 8, 8), y=lab(60, 10))
    np.savez(d / "vec.npz", x=img(60, 64), y=lab(60, 10))
    np.savez(d / "named.npz", x=img(60, 64), y=np.arange(60) % 10, classes=np.array(["a", "b", "c"]))
    np.savez(d / "neg.npz", x=img(60, 64), y=-lab(60, 10) - 1)
    np.savez(d / "huge.npz", x=img(3, 64), y=np.array([0, 1, 10**12]))
    np.savez(d / "nan.npz", x=np.full((60, 64), np.nan, np.float32), y=lab(60, 10))
    np.savez(d / "empty.npz", x=np.zeros((0, 64), np.float32), y=np.zeros(0, np.int64))
    np.savez(d / "noy.npz", x=img(60, 64))
    (d / "junk.npz").write_bytes(os.urandom(512))
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("a,b,label\n")
    (d / "latin1.csv").write_bytes(b"a,label\n\xe9\xff,1\n")
    (d / "ragged.csv").write_text("a,b,label\n1,2,0\n3,1\n")
    (d / "folder_empty" / "cat").mkdir(parents=True)
    (d / "folder_bad" / "cat").mkdir(parents=True)
    (d / "folder_bad" / "cat" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (d / "bad.yaml").write_text("train: [1, 2\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    return d


DIGITS = ["--data", "digits", "--epochs", "1", "--quiet", "report=false"]
CASES = {
    # teacher / student / data pairing
    "class count": (["distill", "--teacher", "t/best", "--student", "mlp_tiny", "--data", "npz", "data.root=three.npz"],
                    "teacher t/best predicts 10 classes but dataset 'npz' has 3"),
    "input size": (["distill", "--teacher", "t/best", "--student", "mlp_tiny", "--data", "npz",
                    "data.root=mnist_like.npz"],
                   "teacher t/best expects inputs (1, 8, 8) but dataset 'npz' gives (1, 28, 28)"),
    "input channels": (["distill", "--teacher", "t/best", "--student", "mlp_tiny", "--data", "npz",
                        "data.root=rgb.npz"],
                       "gives (3, 8, 8)"),
    "student on vectors": (["train", "--model", "cnn_small", "--data", "npz", "data.root=vec.npz"],
                           "the student cannot take this dataset's inputs (64,)"),
    "weights of another model": (["distill", "--student", "mlp_tiny", *DIGITS, "teacher.model.name=cnn_small",
                                  "teacher.weights=t/best.safetensors"], "cannot be loaded into 'cnn_small'"),
    # labels
    "label beyond class names": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=named.npz"],
                                 "'y' has label 9 but 'classes' names only 3 classes"),
    "negative labels": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=neg.npz"], "negative labels"),
    "absurd label": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=huge.npz"],
                     "label 1000000000000 is out of range"),
    # empty or unreadable data
    "no samples": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=empty.npz"], "'x' holds no samples"),
    "missing array": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=noy.npz"], "missing array 'y'"),
    "non-finite inputs": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=nan.npz"], "NaN or infinite"),
    "not an npz": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=junk.npz"],
                   "not a readable .npz archive"),
    "empty csv": (["train", "--model", "mlp_tiny", "--data", "csv", "data.root=empty.csv"], "empty file"),
    "header only": (["train", "--model", "mlp_tiny", "--data", "csv", "data.root=header.csv"], "no data rows"),
    "not utf-8": (["train", "--model", "mlp_tiny", "--data", "csv", "data.root=latin1.csv"], "not UTF-8 text"),
    "ragged csv": (["train", "--model", "mlp_tiny", "--data", "csv", "data.root=ragged.csv"], "line 3: 2 fields"),
    "empty class folder": (["train", "--model", "mlp_tiny", "--data", "imagefolder", "data.root=folder_empty"],
                           "contains no images"),
    "corrupt image": (["train", "--model", "mlp_tiny", "--data", "imagefolder", "data.root=folder_bad"],
                      "cannot read image"),
    "too few samples": (["train", "--model", "mlp_tiny", *DIGITS, "data.subset=1"], "training sample(s) left"),
    # missing files
    "missing teacher": (["distill", "--teacher", "nope/best", "--student", "mlp_tiny", *DIGITS], "nope/best"),
    "missing npz": (["train", "--model", "mlp_tiny", "--data", "npz", "data.root=gone.npz"], "gone.npz does not exist"),
    "missing folder": (["train", "--model", "mlp_tiny", "--data", "imagefolder", "data.root=gone"],
                       "gone does not exist"),
    "missing cifar": (["train", "--model", "mlp_tiny", "--data", "cifar10", "data.root=gone"], "CIFAR-10 not found"),
    "missing idx": (["train", "--model", "mlp_tiny", "--data", "fashion-mnist", "data.root=gone"],
                    "Fashion-MNIST IDX files not found"),
    "missing config": (["train", "gone.yaml"], "config file gone.yaml not found"),
    "missing teacher weights": (["distill", "--student", "mlp_tiny", *DIGITS, "teacher.model.name=mlp_tiny",
                                 "teacher.weights=gone.safetensors"], "gone.safetensors not found"),
    "missing eval checkpoint": (["eval", "gone/best"], "not found"),
    # config values
    "bad yaml": (["train", "bad.yaml"], "bad.yaml: not valid YAML"),
    "yaml list": (["train", "list.yaml"], "top level must be a mapping"),
    "typo": (["train", *DIGITS, "train.epoch=3"], "did you mean 'train.epochs'"),
    "negative lr": (["train", *DIGITS, "train.lr=-1"], "bad value for 'train.lr'"),
    "zero epochs": (["train", "--data", "digits", "--epochs", "0"], "bad value for 'train.epochs'"),
    "batch not a number": (["train", *DIGITS, "train.batch_size=abc"], "bad value for 'train.batch_size'"),
    "val fraction": (["train", *DIGITS, "data.val_fraction=1.5"], "bad value for 'data.val_fraction'"),
    "threads": (["train", *DIGITS, "threads=0"], "bad value for 'threads'"),
    "optimizer": (["train", *DIGITS, "train.optimizer=foo"], "bad value for 'train.optimizer'"),
    "seed overflow": (["train", *DIGITS, "seed=99999999999999999999"], "bad value for 'seed'"),
    "unknown model": (["train", "--model", "resnet21", *DIGITS], "unknown model 'resnet21'"),
    "unknown dataset": (["train", "--data", "digitz"], "unknown dataset 'digitz'"),
    "unknown method": (["distill", "--teacher", "t/best", "--student", "mlp_tiny", "--method", "nope", *DIGITS],
                       "unknown method 'nope'"),
    "method hyperparameter": (["distill", "--teacher", "t/best", "--student", "mlp_tiny", *DIGITS, "methods.1.T=-3"],
                              "temperature T must be > 0"),
    "dataset option": (["train", *DIGITS, "data.options.foo=1"], "dataset 'digits' has no option 'foo'"),
    "model option": (["train", "--model", "mlp_tiny", *DIGITS, "student.options.foo=1"],
                     "model 'mlp_tiny' has no option 'foo'"),
    "model option value": (["train", "--model", "mlp", *DIGITS, "student.options.hidden=abc"],
                           "model 'mlp' cannot be built"),
}
# flag parsing is typer's: its usage message (several lines: usage, hint, the error), exit 2, no traceback
USAGE = {
    "epochs not a number": (["train", "--data", "digits", "--epochs", "abc"], "'--epochs'"),
    "stray argument": (["eval", "t/best", "data.root=x"], "unexpected extra argument"),
    "unknown command": (["distil"], "No such command 'distil'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_exit_2(case, files, monkeypatch, capsys):
    args, needle = CASES[case]
    monkeypatch.chdir(files)
    monkeypatch.setattr(sys, "argv", ["kdlab", *args])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as e:
            main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert needle in err, err
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    assert not shown, [str(w.message) for w in shown]  # a warning would be a second line on stderr


@pytest.mark.parametrize("case", list(USAGE))
def test_usage_error_exit_2(case, files, monkeypatch, capsys):
    args, needle = USAGE[case]
    monkeypatch.chdir(files)
    monkeypatch.setattr(sys, "argv", ["kdlab", *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and "Traceback" not in err, err


def test_real_process_wrong_input_size(files):
    """The brief's example end to end: a teacher trained on 1x8x8 digits used on 1x28x28 images."""
    p = subprocess.run([sys.executable, "-m", "kdlab", "distill", "--teacher", "t/best", "--student", "mlp_tiny",
                        "--data", "npz", "data.root=mnist_like.npz", "--quiet"], cwd=files, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 2
    assert p.stderr.strip() == ("error: teacher t/best expects inputs (1, 8, 8) but dataset 'npz' gives (1, 28, 28)")
