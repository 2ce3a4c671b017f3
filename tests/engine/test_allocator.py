"""The malloc settings: a KD training step's buffers come back from warm heap pages."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# a live-teacher KD step (what benchmarks/speed.py times); page faults counted over the steps after warm-up
PROBE = """
import json, resource, torch
import torch.nn.functional as F
from kdlab.engine.allocator import tune_allocator
from kdlab.models import create_model
applied = tune_allocator()
torch.manual_seed(0)
teacher, student = create_model("resnet20", 10, 1, 28).eval(), create_model("resnet8", 10, 1, 28)
opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    with torch.no_grad():
        t = teacher(x).logits
    s = student(x).logits
    loss = F.cross_entropy(s, y) + F.kl_div(s.log_softmax(1), t.softmax(1), reduction="batchmean")
    opt.zero_grad()
    loss.backward()
    opt.step()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
before = faults()
for _ in range(4):
    step()
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def _probe(env: dict[str, str]) -> dict:
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.path.exists("/etc/alpine-release"),
                    reason="glibc only")
def test_tuned_heap_serves_training_steps_without_page_faults():
    tuned, default = _probe({}), _probe({"KDLAB_MALLOC": "off"})
    assert tuned["applied"] and not default["applied"]
    # measured: glibc's defaults fault 10,000-20,000 pages per step here (buffers mapped afresh and
    # trimmed back); tuned, the same steps fault (nearly) none
    assert default["faults"] > 4 * 4000
    assert tuned["faults"] < default["faults"] / 10
