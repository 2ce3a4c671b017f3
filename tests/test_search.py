"""kdlab search: Pareto ranking (pinned), the budget (a latency over it is rejected, the cheap checks
come first), latency measured in ONNX Runtime and cached per architecture, and a tiny search on
digits that never reads the test split and writes a config `kdlab distill` runs."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import kdlab.search as search_mod
from kdlab.config import load_config
from kdlab.core import DataInfo
from kdlab.errors import ConfigError
from kdlab.models.load import model_for_data
from kdlab.search import (
    Budget,
    Candidate,
    LatencyCache,
    LatencySpec,
    dominates,
    grid,
    load_search,
    measure,
    onnx_latency_ms,
    pareto_ranks,
)
from kdlab.tune import SealedSplit
from tests.reliability._helpers import make_teacher

INFO = DataInfo(10, 100, (1, 8, 8))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("search_teacher") / "t", model="mlp_tiny", epochs=1)


class _Data:
    """What measure() reads of a dataset: the classes and the input shape."""

    num_classes = 10
    input_shape = (1, 8, 8)


def test_dominance_and_pareto_ranks_by_hand() -> None:
    # (accuracy, latency ms)
    assert dominates((0.9, 1.0), (0.8, 1.0)) and dominates((0.9, 1.0), (0.9, 2.0))
    assert not dominates((0.9, 1.0), (0.9, 1.0)) and not dominates((0.9, 2.0), (0.8, 1.0))
    pts = [(0.90, 2.0), (0.80, 1.0), (0.85, 1.5), (0.80, 2.0), (0.70, 3.0), (0.95, 5.0)]
    # front: 0, 1, 2, 5 (each is best at its latency); 3 is dominated by 1 and 2; 4 by 3 as well
    assert pareto_ranks(pts) == [0, 0, 0, 1, 2, 0]


def test_grid_takes_every_combination_families_in_turn() -> None:
    cfg, spec = load_search(None, ["search.families=[{name: cnn, options: {convs_per_stage: [1, 2]}}, "
                                   "{name: resnet, options: {depth: [8], width: [4, 8, 16]}}]"])
    assert grid(spec.families) == [("cnn", {"convs_per_stage": 1}), ("resnet", {"depth": 8, "width": 4}),
                                   ("cnn", {"convs_per_stage": 2}), ("resnet", {"depth": 8, "width": 8}),
                                   ("resnet", {"depth": 8, "width": 16})]


@pytest.mark.parametrize("override, needle", [
    ("search.budget.latency=3", "unknown key 'search.budget.latency'; did you mean 'search.budget.latency_ms'?"),
    ("search.rungs=[3, 1]", "rungs must be increasing"),
    ("search.famlies=[]", "did you mean 'search.families'"),
])
def test_search_section_is_validated(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_search(None, [override])
    assert needle in str(e.value)


def _cache_with(tmp: Path, spec: LatencySpec, values: dict[tuple[str, str], float]) -> LatencyCache:
    """A latency cache pre-filled with chosen figures (so the budget test does not depend on timing)."""
    lat = LatencyCache(tmp / "latency.json", spec)
    for (name, opts), ms in values.items():
        lat.entries[lat.key(model_for_data(name, INFO, **json.loads(opts)), INFO.input_shape)] = {"median_ms": ms}
    lat.save()
    return LatencyCache(tmp / "latency.json", spec)


def test_latency_budget_rejects_a_candidate_over_it(tmp_path, monkeypatch) -> None:
    def no_measuring(*_a, **_k):
        raise AssertionError("measured although the figure is cached")

    monkeypatch.setattr(search_mod, "onnx_latency_ms", no_measuring)
    lat = _cache_with(tmp_path, LatencySpec(), {("cnn", '{"widths": [4, 8]}'): 0.2,
                                                ("cnn", '{"widths": [32, 64]}'): 3.0})
    budget = Budget(latency_ms=1.0)
    fast = measure(Candidate("cnn", {"widths": [4, 8]}), _Data(), budget, lat)  # type: ignore[arg-type]
    slow = measure(Candidate("cnn", {"widths": [32, 64]}), _Data(), budget, lat)  # type: ignore[arg-type]
    assert fast.rejected is None and fast.latency_ms == 0.2
    assert slow.rejected == "latency 3.000 ms > 1 ms" and slow.latency_ms == 3.0
    # a parameter budget rejects before any latency is measured (the cache has no entry for this one)
    big = measure(Candidate("cnn", {"widths": [64, 128]}), _Data(), Budget(params=1000), lat)  # type: ignore[arg-type]
    assert big.rejected is not None and big.rejected.endswith("parameters > 1000") and big.params > 1000


def test_onnx_latency_is_measured_then_cached(tmp_path, monkeypatch) -> None:
    spec = LatencySpec(repeats=3, warmup=1)
    model = model_for_data("cnn", INFO, widths=[4, 8])
    lat = LatencyCache(tmp_path / "lat.json", spec)
    ms = lat.get(model, INFO.input_shape)
    assert 0 < ms < 1000 and lat.measured == 1
    monkeypatch.setattr(search_mod, "onnx_latency_ms", lambda *_a, **_k: pytest.fail("not read from the cache"))
    again = LatencyCache(tmp_path / "lat.json", spec)
    assert again.get(model_for_data("cnn", INFO, widths=[4, 8]), INFO.input_shape) == ms and again.measured == 0
    # another batch size is another measurement
    other = LatencyCache(tmp_path / "lat.json", LatencySpec(batch_size=4, repeats=3, warmup=1))
    assert other.key(model, INFO.input_shape) != again.key(model, INFO.input_shape)


def test_onnx_latency_of_every_family_exports() -> None:
    for name, opts in [("resnet", {"width": 4}), ("mobilenetv2", {"width_mult": 0.25}), ("vit", {"dim": 16,
                                                                                                 "depth": 1})]:
        assert onnx_latency_ms(model_for_data(name, INFO, **opts), INFO.input_shape, repeats=3, warmup=0) > 0


class _Tripwire:
    def __getattr__(self, name: str):
        raise AssertionError(f"the test split was read (.{name})")

    def __len__(self) -> int:
        raise AssertionError("the test split was read (len)")


def test_tiny_search_on_digits(tmp_path, monkeypatch, teacher) -> None:
    from kdlab.data import load_data

    raw = {"data": {"name": "digits"}, "teacher": {"checkpoint": str(teacher), "accelerate": "eager"},
           "methods": [{"name": "ce", "weight": 0.1}, {"name": "kd"}], "train": {"epochs": 3, "batch_size": 64},
           "threads": 1, "report": False,
           "search": {"dir": str(tmp_path / "s"), "rungs": [1, 2], "keep": 0.5, "candidates": 4,
                      "latency": {"repeats": 3, "warmup": 1},
                      "families": [{"name": "cnn", "options": {"widths": [[4, 8], [8, 16], [64, 128]]}},
                                   {"name": "resnet", "options": {"width": [4]}},
                                   {"name": "vit", "options": {"dim": [16], "depth": [1], "patch": [4]}}],
                      "budget": {"params": 30000}, "reference": {"name": "cnn_tiny"}}}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(raw))
    cfg, spec = load_search(tmp_path / "search.yaml")
    seen: list[object] = []
    real = search_mod.train_short

    def spy(c, d, *a, **k):
        seen.append(d.test)
        return real(c, d, *a, **k)

    monkeypatch.setattr(search_mod, "train_short", spy)
    data = replace(load_data("digits"), test=_Tripwire())
    r = search_mod.search(cfg, spec, data=data, say=lambda _m: None)
    assert seen and all(isinstance(t, SealedSplit) for t in seen)
    rejected = [c for c in r.candidates if c.rejected]
    assert [c.options for c in rejected] == [{"widths": [64, 128]}]  # over the parameter budget
    scored = [c for c in r.candidates if c.val_acc]
    assert len(scored) == 4 and all(1 in c.val_acc for c in scored)
    assert sum(2 in c.val_acc for c in scored) == 2  # half promoted to the longer rung
    assert r.front and r.chosen in r.front
    ranks = pareto_ranks([(c.val_acc[2], c.latency_ms) for c in scored if 2 in c.val_acc])
    assert len(r.front) == ranks.count(0)
    report = (r.dir / "report.md").read_text()
    assert "Pareto front" in report and "Rejected (over the budget" in report and "cnn_tiny" in report
    assert (r.dir / "pareto.png").is_file() and (r.dir / "latency.json").is_file()
    student = load_config(r.dir / "student.yaml")
    assert student.student.name == r.chosen.name and student.train.epochs == 3
    assert r.command == f"kdlab distill {r.dir / 'student.yaml'}"


def test_cli_budget_nothing_meets_is_one_line_exit_2(tmp_path, teacher) -> None:
    from typer.testing import CliRunner

    from kdlab.cli.main import _register, app

    _register()
    r = CliRunner().invoke(app, ["search", "--teacher", str(teacher), "--data", "digits", "--latency-ms", "0.000001",
                                 "--out", str(tmp_path / "s"), "threads=1",
                                 "search.families=[{name: cnn, options: {widths: [[4, 8]]}}]",
                                 "search.latency.repeats=3"])
    assert r.exit_code == 1 and isinstance(r.exception, ConfigError)  # the entry point turns it into exit 2
    assert "no architecture meets the budget" in str(r.exception) and "latency" in str(r.exception)
    assert len(json.loads((tmp_path / "s" / "latency.json").read_text())) == 1
