"""FGSM / PGD (kdlab.evaluate.attack): ε = 0 changes nothing, outputs stay in the ε-ball and in
[0, 1], no sample's loss drops below its clean loss, and the attacks do hurt a trained model."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.evaluate.attack import PixelModel, attack_pixels, robust_accuracy


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small CNN trained on digits for a few epochs (pixels in [0, 1], normalised inputs)."""
    from kdlab.api import run
    from kdlab.config import load_config

    out = tmp_path_factory.mktemp("attack") / "r"
    cfg = load_config(base={"data": {"name": "digits"}, "student": {"name": "cnn_tiny"}, "report": False,
                            "train": {"epochs": 3, "batch_size": 64}, "out": str(out)})
    run(cfg, command="train", progress=False)
    return out


@pytest.fixture(scope="module")
def trained(run_dir):
    from kdlab.api import load_model
    from kdlab.data import load_data

    model, _ = load_model(run_dir / "best")
    d = load_data("digits")
    x, y = d.test.gather(torch.arange(120)), d.test.y[:120]
    return model.eval(), PixelModel(model.eval(), d.test.mean, d.test.std), x, y


def _pixels(net, x):
    return net.to_pixels(x).clamp(0, 1)


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_eps_zero_changes_nothing(trained, kind):
    _, net, x, y = trained
    p = _pixels(net, x)
    assert torch.equal(attack_pixels(net, p, y, kind=kind, eps=0.0, steps=3), p)


@pytest.mark.parametrize("kind,restarts", [("fgsm", 1), ("pgd", 1), ("pgd", 3)])
def test_stays_in_the_ball_and_the_range_and_never_lowers_the_loss(trained, kind, restarts):
    _, net, x, y = trained
    p = _pixels(net, x)
    eps = 0.1
    a = attack_pixels(net, p, y, kind=kind, eps=eps, steps=5, restarts=restarts,
                      generator=torch.Generator().manual_seed(1))
    assert float((a - p).abs().max()) <= eps + 1e-6
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    with torch.no_grad():
        clean, adv = (F.cross_entropy(net(v), y, reduction="none") for v in (p, a))
    assert bool((adv >= clean - 1e-6).all())
    assert float(adv.mean()) > float(clean.mean()) + 0.1  # it does attack


def test_pgd_is_at_least_as_strong_as_fgsm_and_hurts_accuracy(trained):
    model, net, x, y = trained
    d_mean, d_std = net.mean.flatten(), net.std.flatten()
    clean = robust_accuracy(model, x, y, d_mean, d_std, kind="fgsm", eps=0.0)
    fgsm = robust_accuracy(model, x, y, d_mean, d_std, kind="fgsm", eps=0.15)
    pgd = robust_accuracy(model, x, y, d_mean, d_std, kind="pgd", eps=0.15, steps=10)
    assert clean["clean_acc"] == clean["adv_acc"] > 0.8
    assert pgd["adv_acc"] <= fgsm["adv_acc"] < clean["clean_acc"]
    assert pgd["clean_acc"] == clean["clean_acc"] and pgd["steps"] == 10 and fgsm["steps"] == 1


def test_eps_is_in_pixel_units_through_the_normalisation():
    """A linear model on one pixel: logit gap w·(p − mean)/std; an ε step in pixels moves it by w·ε/std."""
    lin = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    model = nn.Sequential(nn.Flatten(), lin)
    net = PixelModel(model, torch.tensor([0.5]), torch.tensor([0.25]))
    p = torch.full((1, 1, 1, 1), 0.6)
    a = attack_pixels(net, p, torch.tensor([0]), kind="fgsm", eps=0.05)
    assert float(a) == pytest.approx(0.55)  # pushes class 0's logit down by one ε in pixel space
    with torch.no_grad():
        gap = float(net(a)[0, 0] - net(a)[0, 1])
    assert gap == pytest.approx(2 * (0.55 - 0.5) / 0.25)


def test_bad_attack_arguments():
    net = PixelModel(nn.Sequential(nn.Flatten(), nn.Linear(1, 2)), torch.tensor([0.0]), torch.tensor([1.0]))
    p, y = torch.zeros(1, 1, 1, 1), torch.tensor([0])
    with pytest.raises(ConfigError, match="unknown attack 'cw'"):
        attack_pixels(net, p, y, kind="cw")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="eps >= 0"):
        attack_pixels(net, p, y, eps=-0.1)


def test_eval_cli_reports_clean_and_adversarial_accuracy(run_dir):
    import json

    from typer.testing import CliRunner

    from kdlab.cli.main import _register, app

    tmp_path = run_dir.parent
    _register()
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "r" / "best"), "--attack", "pgd", "--eps", "0.1",
                                   "--steps", "3", "--attack-samples", "50", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["pgd_samples"] == 50 and m["pgd_eps"] == 0.1 and m["pgd_adv_acc"] <= m["pgd_clean_acc"]
    bad = CliRunner().invoke(app, ["eval", str(tmp_path / "r" / "best"), "--attack", "cw"])
    assert isinstance(bad.exception, ConfigError) and "unknown attack 'cw'" in str(bad.exception)  # exit 2
    res = CliRunner().invoke(app, ["compare", "--teacher", str(tmp_path / "r" / "best"), "--student",
                                   f"s={tmp_path / 'r' / 'best'}", "--attack", "fgsm", "--attack-samples", "40"])
    assert res.exit_code == 0, res.output
    assert "FGSM (ε = 0.1" in res.output and "clean top-1" in res.output
