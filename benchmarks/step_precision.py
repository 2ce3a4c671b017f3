"""One training step (batch 128, 1x28x28, SGD), fp32 vs bf16 autocast, NCHW vs channels_last, in one process:

    python benchmarks/step_precision.py resnet20 2      # model, threads

Prints the mean of 8 steps after 3 warm-up steps per setting (settings run in sequence).
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from kdlab.models import create_model
from kdlab.models.contract import as_outputs


def main() -> None:
    name, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    model = create_model(name, in_channels=1, num_classes=10, image_size=28)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def step(bf16: bool, nhwc: bool) -> None:
        xx = x.to(memory_format=torch.channels_last) if nhwc else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = as_outputs(model(xx)).logits
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for bf16, nhwc in [(False, False), (True, False), (False, True), (True, True)]:
        if nhwc:
            model.to(memory_format=torch.channels_last)
        for _ in range(3):
            step(bf16, nhwc)
        t, n = time.perf_counter(), 8
        for _ in range(n):
            step(bf16, nhwc)
        print(name, "bf16" if bf16 else "fp32", "channels_last" if nhwc else "nchw",
              f"{(time.perf_counter() - t) / n * 1000:.0f} ms/step")


if __name__ == "__main__":
    main()
