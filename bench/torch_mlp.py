#!/usr/bin/env python3
"""PyTorch reference for bench/train.ts: the same MLP, batch, optimizer and loss, data from
memory, one JSON line per run. The comparison point for the wasm backend (stack.md: Debian's
python3-torch 1.13 with libopenblas0-pthread, one thread) and, with --device cuda, for the
webgpu backend: plain fp32 there (TF32 off, so tensor cores do not change the arithmetic)."""
import argparse
import json
import math
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pytorch"))
from mlp_model import build as _build  # noqa: E402


def build(arch: str, dim_in: int, classes: int) -> nn.Module:
    """The reference MLP of `arch` (examples/pytorch/mlp_model.py, the one definition the examples,
    this benchmark and the interop tests share)."""
    return _build(arch, dim_in, classes)[0]


def forward_macs(model: nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="B_2-Wi_512")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    dim_in = a.channels * a.res * a.res
    model = build(a.arch, dim_in, a.num_classes).to(dev)
    opt = {
        "adam": lambda: torch.optim.Adam(model.parameters(), lr=1e-4),
        "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3),
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9),
    }[a.optimizer]()
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(a.batch_size, dim_in, device=dev)
    y = torch.randint(0, a.num_classes, (a.batch_size,), device=dev)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    # loss.item() waits for the step on a GPU, so every timed step is complete.
    t0 = time.perf_counter()
    best = math.inf
    for _ in range(a.steps):
        s0 = time.perf_counter()
        loss = step()
        best = min(best, time.perf_counter() - s0)
    dt = time.perf_counter() - t0
    ips = a.batch_size * a.steps / dt
    flops = 6 * forward_macs(model)
    print(json.dumps({
        "bench": "train", "impl": "pytorch", "torch": torch.__version__, "threads": a.threads,
        "arch": a.arch, "backend": f"torch-{dev.type}", "optimizer": a.optimizer, "batch_size": a.batch_size,
        **({"device_name": torch.cuda.get_device_name(dev), "tf32": False,
            "max_memory_bytes": torch.cuda.max_memory_allocated(dev)} if dev.type == "cuda" else {}),
        "input_dim": dim_in, "num_classes": a.num_classes, "steps": a.steps,
        "step_ms": round(1000 * dt / a.steps, 2), "best_step_ms": round(1000 * best, 2), "images_per_sec": round(ips, 1),
        "gflops": round(ips * flops / 1e9, 2), "loss": None if math.isnan(loss) else round(loss, 4),
    }))


if __name__ == "__main__":
    main()
