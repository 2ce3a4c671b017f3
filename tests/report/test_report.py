"""The HTML report: written at the end of every run, rebuilt by `kdlab report`, rendered by Chromium."""
import base64
import json
import re
import shutil
import subprocess
import warnings

import pytest

from kdlab.api import run
from kdlab.config import load_config
from kdlab.data import load_data

PLOTS = {"learning_curves", "loss_terms", "confusion", "agreement", "reliability", "tradeoff"}


def _run(out, student, epochs=3, teacher=None, report=True):
    methods = [{"name": "ce"}] if teacher is None else [{"name": "ce", "weight": 0.1},
                                                        {"name": "kd", "weight": 0.9, "T": 4}]
    return load_config(base={"data": {"name": "digits"}, "student": {"name": student}, "methods": methods,
                             "teacher": None if teacher is None else {"checkpoint": str(teacher)},
                             "train": {"epochs": epochs, "batch_size": 64}, "out": str(out), "report": report})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher, the student alone, and the student distilled (each writes its own report)."""
    root = tmp_path_factory.mktemp("runs")
    data = load_data("digits")
    run(_run(root / "teacher", "cnn_tiny", report=False), command="train", data=data, progress=False)
    run(_run(root / "alone", "mlp_tiny", report=False), command="train", data=data, progress=False)
    run(_run(root / "kd", "mlp_tiny", teacher=root / "teacher" / "best"), data=data, progress=False)
    return root


def _images(html):
    return re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)' alt='([^']*)'", html)


def test_every_run_writes_a_self_contained_report(runs):
    html = (runs / "kd" / "report.html").read_text()
    imgs = _images(html)
    assert len(imgs) == 6
    for b64, _alt in imgs:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    assert {p.stem for p in (runs / "kd" / "plots").glob("*.png")} == PLOTS
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from anywhere
    for needle in ("teacher–student top-1 agreement", "ECE", "Configuration", "name: kd"):
        assert needle in html
    assert not (runs / "teacher" / "report.html").exists()  # report: false


def test_report_command_rebuilds_with_a_baseline_and_compare_json(runs, tmp_path):
    from typer.testing import CliRunner

    from kdlab.cli.main import _register, app

    _register()
    rows = [{"name": "teacher", "acc": 0.95, "params": 30000, "latency_b1_ms": 0.5},
            {"name": "student alone", "acc": 0.9, "params": 2400, "latency_b1_ms": 0.05},
            {"name": "student + kd", "acc": 0.92, "params": 2400, "latency_b1_ms": 0.05}]
    cmp = tmp_path / "compare.json"
    cmp.write_text(json.dumps(rows))
    out = tmp_path / "rebuilt" / "report.html"
    res = CliRunner().invoke(app, ["report", str(runs / "kd"), "--baseline", str(runs / "alone"),
                                   "--compare", str(cmp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "against student alone (alone)" in html and f"source: {cmp}" in html
    assert len(_images(html)) == 6 and (out.parent / "plots" / "tradeoff.png").is_file()
    res = CliRunner().invoke(app, ["report", str(runs / "kd"), "--baseline", str(tmp_path / "nope")])
    assert "is not a run directory" in str(res.exception)
    res = CliRunner().invoke(app, ["report", "--help"])
    assert "kdlab report runs/kd --baseline runs/alone" in res.output


def test_run_without_teacher_omits_agreement_and_a_failing_report_only_warns(runs, tmp_path, monkeypatch):
    from kdlab.report import write_report

    path = write_report(runs / "alone", measure=False)
    html = path.read_text()
    assert "agreement omitted" in html
    assert "alt='Teacher–student agreement'" not in html and len(_images(html)) == 4

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("kdlab.report.write_report", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run(_run(tmp_path / "w", "mlp_tiny", epochs=1), command="train", data=load_data("digits"), progress=False)
    assert (tmp_path / "w" / "summary.json").is_file() and r.test["acc"] > 0
    assert any("report for" in str(w.message) and "disk full" in str(w.message) for w in caught)


CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100);
  const d = document.createElement('div');
  d.id = 'img-check';
  d.textContent = `images ${ok.length}/${imgs.length} widths ${imgs.map(i => i.naturalWidth).join(',')}`;
  document.body.appendChild(d);
});
</script>"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    page = tmp_path / "page.html"
    page.write_text((runs / "kd" / "report.html").read_text().replace("</body>", CHECK + "</body>"))
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"<div id=\"img-check\">images (\d+)/(\d+) widths ([\d,]+)</div>", dom)
    assert m, dom[-2000:]
    assert m.group(1) == m.group(2) == "6", m.group(0)
    # and it paints: a screenshot of the real page (no injected script) is far from blank
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--hide-scrollbars", "--window-size=1100,2400", f"--screenshot={shot}",
                    (runs / "kd" / "report.html").as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    im = Image.open(shot).convert("L")
    assert im.size == (1100, 2400)
    dark = sum(im.histogram()[:200]) / (im.size[0] * im.size[1])
    assert dark > 0.02, f"only {dark:.3%} of the page is drawn"
