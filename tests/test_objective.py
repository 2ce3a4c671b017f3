"""The one objective parser (kdlab.objective) and the places that use it: API, CLI, bench, init."""
import pytest
from typer.testing import CliRunner

from kdlab.bench import _method_entries
from kdlab.cli.main import _register, app
from kdlab.config import load_config
from kdlab.errors import ConfigError
from kdlab.objective import parse_objective
from kdlab.schemes.offline import create_methods

_register()


def weights(methods):
    """{name: (weight, T)} of built methods (constructor defaults filled in)."""
    return {type(m).__name__.lower(): (m.weight, getattr(m, "T", None)) for m in create_methods(methods)}


def test_kd_is_hintons_mix_as_help_states():
    assert weights(parse_objective("kd")) == {"ce": (0.1, None), "kd": (0.9, 4.0)}


def test_at_plus_kd_keeps_ats_paper_weight():
    w = weights(parse_objective("at+kd"))
    assert w["at"][0] == 1000.0 and w["kd"] == (0.9, 4.0) and w["ce"][0] == 0.1


def test_fitnet_plus_kd_T_goes_to_kd_only():
    m = parse_objective("fitnet+kd", T=4)
    assert m[2] == {"name": "kd", "T": 4} and "T" not in m[1]
    create_methods(m)  # fitnet has no T: building it must not fail


def test_dist_plus_crd_paper_weights_and_alpha_on_the_logit_method_only():
    m = parse_objective("dist+crd")
    assert m[0] == {"name": "ce", "weight": 1.0} and m[1:] == [{"name": "dist"}, {"name": "crd"}]
    a = parse_objective("dist+crd", alpha=0.5)
    assert a[0]["weight"] == 0.5 and a[1] == {"name": "dist", "weight": 0.5} and "weight" not in a[2]


def test_list_with_explicit_weights_wins_over_alpha():
    m = parse_objective([{"name": "kd", "weight": 0.5, "T": 2}, {"name": "at", "weight": 10}, "dkd"], alpha=0.7, T=3)
    assert m[0] == {"name": "ce", "weight": 0.3}
    assert m[1] == {"name": "kd", "weight": 0.5, "T": 2}
    assert m[2] == {"name": "at", "weight": 10}
    assert m[3] == {"name": "dkd", "weight": 0.7, "T": 3}


@pytest.mark.parametrize("spec,kw,match", [
    ("kd", {"alpha": 1.5}, "alpha must be in"),
    ("kd", {"T": 0}, "T .* must be > 0"),
    ("fitnet", {"alpha": 0.5}, "alpha weighs response-family.*'fitnet'"),
    ("at+fitnet", {"T": 4}, "T is the temperature.*'at', 'fitnet'"),
    ("dist", {"T": 4}, "T is the temperature.*'dist'"),
    ("kdd", {}, "did you mean 'kd'"),
    ("kd+", {}, "empty name"),
])
def test_errors_name_the_method_and_the_hyperparameter(spec, kw, match):
    with pytest.raises(ConfigError, match=match):
        parse_objective(spec, **kw)


def _cli_methods(tmp_path, *args):
    """The methods list `kdlab distill` resolves (no training: the config is built only)."""
    from kdlab.cli.common import build_config

    flags = dict(zip(["method", "alpha", "T"], [None, None, None]))
    for a, b in zip(args[::2], args[1::2]):
        flags[a.lstrip("-")] = b
    cfg = build_config(flags.pop("config", None), [], {}, base={"methods": parse_objective("kd")},
                       objective=(flags["method"], flags["alpha"], flags["T"]))
    return [m.model_dump() for m in cfg.methods]


def test_cli_alpha_and_T_apply_without_method_and_after_a_config_file(tmp_path):
    assert _cli_methods(tmp_path) == [{"name": "ce", "weight": 0.1}, {"name": "kd"}]
    assert _cli_methods(tmp_path, "--T", 1.0, "--alpha", 0.5) == [{"name": "ce", "weight": 0.5},
                                                                 {"name": "kd", "weight": 0.5, "T": 1.0}]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("methods: [{name: ce, weight: 1.0}, {name: dkd, weight: 2.0}, {name: at}]\n")
    got = _cli_methods(tmp_path, "config", str(cfg), "--alpha", 0.8, "--T", 2.0)
    assert got == [{"name": "ce", "weight": pytest.approx(0.2)}, {"name": "dkd", "weight": 0.8, "T": 2.0},
                   {"name": "at"}]


def test_cli_bad_alpha_and_T_are_one_line_errors(tmp_path):
    r = CliRunner().invoke(app, ["distill", "--teacher", "x", "--T", "0"])
    assert isinstance(r.exception, ConfigError) and "T (temperature) must be > 0" in str(r.exception)
    r = CliRunner().invoke(app, ["distill", "--teacher", "x", "--alpha", "1.5"])
    assert isinstance(r.exception, ConfigError) and "alpha must be in [0, 1]" in str(r.exception)


def test_api_and_bench_and_init_use_the_same_parser(tmp_path):
    assert _method_entries("at+kd", None)[1] == parse_objective("at+kd")
    assert _method_entries({"name": "kd", "label": "kd_T2", "T": 2}, None) == (
        "kd_T2", parse_objective([{"name": "kd", "T": 2}]), {}, {})
    assert _method_entries("dkd", 0.5)[1][0] == {"name": "ce", "weight": 0.5}
    path = tmp_path / "k.yaml"
    assert CliRunner().invoke(app, ["init", str(path), "--method", "at+kd"]).exit_code == 0
    got = weights([m.model_dump() for m in load_config(path).methods])
    assert got == weights(parse_objective("at+kd"))
