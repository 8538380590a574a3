#!/usr/bin/env python3
"""Data-parallel training of the paper's MLP with PyTorch DDP, fed by `npm run loader -- serve`.

    npm run loader -- serve --data shards/in21k/index.json --bind ipc:///tmp/smlp.sock \\
        --ranks all --world 8 --batch-size 2048 --epochs 100 &
    torchrun --standalone --nproc_per_node=8 examples/torch-ddp/train_ddp.py \\
        --endpoint ipc:///tmp/smlp.sock --arch B_12-Wi_1024 --epochs 100 --out runs/ddp

Each rank asks the server for its own rank's frames; `--batch-size` on the server is per rank
(global batch = world x that). Weights are saved with the reference code's state-dict names
(linear_in, blocks.{i}.block.{0,2}, layernorms.{i}, linear_out) as model.safetensors plus
config.json, the files `npm run finetune/eval` read. A checkpoint also holds the optimizer state
and the loader position, and `--resume` continues with exactly the next frames.

Rank and world come from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or, under `srun` without
torchrun, from Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR/MASTER_PORT must be
set by the batch script).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pytorch"))
from client import Batch, EndEpoch, FrameClient, PinnedStager  # noqa: E402
from mlp_model import build, read_safetensors, write_safetensors  # noqa: E402


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def save_model(d, model, arch, kind, ready):
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"), model.state_dict(), {"format": "pt", "arch": arch, "model": kind})
    c, r = ready["channels"], ready["res"]
    write_json(os.path.join(d, "config.json"), {
        "arch": arch, "model": kind, "res": r, "channels": c, "num_classes": ready["num_classes"],
        "input_dim": c * r * r, "input_layout": "CHW", "format": "safetensors", "producer": "scaling-mlps-ts torch-ddp example",
    })


def launcher_env():
    """torchrun's variables, or Slurm's under srun (mapped onto torchrun's names for init)."""
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="the server's endpoint; {rank} and {local_rank} are replaced (one server per rank)")
    p.add_argument("--arch", default="B_6-Wi_512")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    p.add_argument("--out", default="runs/ddp")
    p.add_argument("--resume", help="a checkpoint folder (<out>/checkpoint) to continue from")
    p.add_argument("--checkpoint-every", type=int, default=500, help="updates between checkpoints (0: epoch ends only)")
    p.add_argument("--window", type=int, default=None, help="frames in flight (default: the server's)")
    p.add_argument("--backend", default=None, help="nccl (default with CUDA) or gloo")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per rank")
    p.add_argument("--log", help="append one JSON line per step and rank (epoch, step, keys, loss) to <log>.<rank>")
    p.add_argument("--stop-after", type=int, default=None, help="tests: exit abruptly after this many updates, as a crash would")
    a = p.parse_args()

    rank, world, local = launcher_env()
    cuda = torch.cuda.is_available()
    backend = a.backend or ("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}") if cuda and backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if a.threads:
        torch.set_num_threads(a.threads)
    if world > 1:
        dist.init_process_group(backend, rank=rank, world_size=world)

    endpoint = a.endpoint.format(rank=rank, local_rank=local)
    client = FrameClient(endpoint, rank=rank, world=world, window=a.window, timeout_ms=600_000)
    start = {"epoch": 0, "step": 0, "updates": 0}
    if a.resume:
        start = json.load(open(os.path.join(a.resume, "position.json")))
    ready = client.hello(epoch=start["epoch"], step=start["step"])
    if rank == 0:
        print(f"rank 0: {ready['num_samples']} samples, {ready['steps_per_epoch']} steps/epoch of {ready['batch_size']} x {world} ranks, "
              f"from (epoch {ready['epoch']}, step {ready['step']}), device {device}, backend {backend}", flush=True)

    torch.manual_seed(a.seed)
    dim_in = ready["channels"] * ready["res"] * ready["res"]
    model, kind = build(a.arch, dim_in, ready["num_classes"])
    model.to(device)
    if a.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=a.weight_decay)
    if a.resume:
        model.load_state_dict(read_safetensors(os.path.join(a.resume, "model.safetensors")), strict=True)
        opt.load_state_dict(torch.load(os.path.join(a.resume, "optimizer.pt"), map_location=device))
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=a.smoothing)
    stager = PinnedStager() if device.type == "cuda" else None
    log = open(f"{a.log}.{rank}", "a") if a.log else None
    steps = ready["steps_per_epoch"]
    updates = start["updates"]
    ckpt = os.path.join(a.out, "checkpoint")

    def checkpoint(epoch, step):
        # Every rank holds the same weights (DDP); rank 0 writes them. The position is where the
        # next frame starts, normalised past an epoch's end.
        if step >= steps:
            epoch, step = epoch + 1, 0
        if rank == 0:
            save_model(ckpt, model, a.arch, kind, ready)
            torch.save(opt.state_dict(), os.path.join(ckpt, "optimizer.pt.tmp"))
            os.replace(os.path.join(ckpt, "optimizer.pt.tmp"), os.path.join(ckpt, "optimizer.pt"))
            write_json(os.path.join(ckpt, "position.json"), {"epoch": epoch, "step": step, "updates": updates})
        if world > 1:
            dist.barrier()

    t0, seen = time.perf_counter(), 0
    for m in client:
        if isinstance(m, EndEpoch):
            if rank == 0:
                dt = time.perf_counter() - t0
                print(f"epoch {m.epoch} done: {updates} updates, {seen * world / max(dt, 1e-9):.0f} images/s", flush=True)
            t0, seen = time.perf_counter(), 0
            checkpoint(m.epoch + 1, 0)
            continue
        assert isinstance(m, Batch)
        x, y = m.to_torch(device, stager)
        loss = loss_fn(ddp(x.reshape(x.shape[0], -1)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        updates += 1
        seen += m.shape[0]
        if log:
            log.write(json.dumps({"epoch": m.epoch, "step": m.step, "rank": m.rank, "keys": m.keys, "loss": float(loss)}) + "\n")
            log.flush()
        if a.checkpoint_every and updates % a.checkpoint_every == 0:
            checkpoint(m.epoch, m.step + 1)
        if a.stop_after is not None and updates - start["updates"] >= a.stop_after:
            # A crash: no goodbye, frames still in flight.
            os._exit(0)
    if rank == 0:
        save_model(a.out, model, a.arch, kind, ready)
        print(f"done: {updates} updates; model in {a.out}", flush=True)
    client.close()
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
