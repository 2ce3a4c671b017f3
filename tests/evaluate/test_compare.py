"""The comparison table: one latency per architecture (with its spread), batch sizes named."""
import torch

from kdlab.data import load_data
from kdlab.evaluate.compare import compare, to_markdown
from kdlab.models import create_model


def test_copies_of_one_architecture_share_one_timing_and_the_table_says_how_it_was_measured():
    data = load_data("digits")
    torch.manual_seed(0)
    t = create_model("cnn_small", 10, 1, 8)
    a, b = create_model("cnn_tiny", 10, 1, 8), create_model("cnn_tiny", 10, 1, 8)
    rows = compare({"teacher": t, "alone": a, "distilled": b}, data)
    assert (rows[1].latency_b1_ms, rows[1].latency_b256_ms) == (rows[2].latency_b1_ms, rows[2].latency_b256_ms)
    assert rows[1].speedup == rows[2].speedup and rows[0].speedup == 1.0
    assert rows[1].latency_b1_spread_ms >= 0 and rows[0].latency_b256_ms != rows[1].latency_b256_ms
    md = to_markdown(rows)
    assert "ms @ batch 1" in md and "speed-up @ batch 256" in md and "once per architecture" in md
    # accuracy and F1 at the same precision
    cells = md.splitlines()[2].split(" | ")
    assert len(cells[1].split(".")[1]) == len(cells[4].split(".")[1]) == 2
