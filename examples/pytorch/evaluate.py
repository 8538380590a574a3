#!/usr/bin/env python3
"""Evaluate one of our models in PyTorch, preparing images exactly as its config.json says.

    python3 examples/pytorch/evaluate.py runs/my-model shards/my-val/index.json

Builds the reference `BottleneckMLP`/`MLP` (examples/pytorch/mlp_model.py), loads
model.safetensors with strict=True, reads the samples of our WebDataset shards (`<key>.cls` +
`<key>.npy`, uint8 H x W x C) with Python's tarfile, and prepares each image as config.json's
"preprocessing" block describes:

    x[c, i, j] = (pixel[c, i, j] - mean[c]) / std[c]     pixels in 0..255, flattened C, H, W

computed in float32 as pixel * (1 / std) + (-mean / std), the loader's order of operations, so
the inputs equal those of `npm run eval` bit for bit. The eval crop (the centred square of the
shorter side, resized to the model's resolution) is the identity for shards stored at the model's
resolution, which is what this example handles; other sizes need a resampler that matches ours
and are refused with a clear message. Prints one JSON line: samples, top1, top5, loss.
"""
import argparse
import io
import json
import os
import sys
import tarfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlp_model import build, read_safetensors  # noqa: E402


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    pre = config.get("preprocessing")
    if pre is None:
        raise SystemExit(f"{model_dir}/config.json has no preprocessing block (a model written before it was recorded)")
    c, r = config["channels"], config["res"]
    model, _ = build(config["arch"], c * r * r, config["num_classes"])
    model.load_state_dict(read_safetensors(os.path.join(model_dir, "model.safetensors")), strict=True)
    model.eval()
    return model, config, pre


def shard_paths(index_path):
    with open(index_path) as f:
        index = json.load(f)
    base = os.path.dirname(os.path.abspath(index_path))
    return [u if os.path.isabs(u) else os.path.join(base, u) for u in (s["url"] for s in index["shardlist"])]


def samples(paths):
    """(key, label, HxWxC uint8) in shard order, as `npm run eval` reads them."""
    for path in paths:
        with tarfile.open(path) as tar:
            members = {}
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
                if "cls" in members[key] and "npy" in members[key]:
                    s = members.pop(key)
                    yield key, int(s["cls"]), np.load(io.BytesIO(s["npy"]))


def prepare(image, pre):
    c, r = pre["channels"], pre["resolution"]
    if image.ndim == 2:
        image = image[:, :, None]
    h, w = image.shape[:2]
    if (h, w) != (r, r) or pre["eval_crop"]["fraction"] != 1:
        raise SystemExit(f"image is {h}x{w}: this example evaluates shards stored at the model's {r}x{r}")
    if image.shape[2] != c:
        raise SystemExit(f"image has {image.shape[2]} channels, the model {c}")
    mean = np.asarray(pre["mean"], dtype=np.float64)
    std = np.asarray(pre["std"], dtype=np.float64)
    scale = (1.0 / std).astype(np.float32)
    bias = (-mean / std).astype(np.float32)
    chw = image.transpose(2, 0, 1).astype(np.float32)
    return (chw * scale[:, None, None] + bias[:, None, None]).reshape(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="model folder: model.safetensors + config.json")
    ap.add_argument("data", help="index.json of the shards to evaluate")
    ap.add_argument("--batch-size", type=int, default=1024)
    a = ap.parse_args()
    model, config, pre = load_model(a.model)
    xs, ys = [], []
    n = right1 = right5 = 0
    loss_sum = 0.0

    def flush():
        nonlocal n, right1, right5, loss_sum
        if not xs:
            return
        x = torch.from_numpy(np.stack(xs))
        y = torch.tensor(ys, dtype=torch.long)
        with torch.no_grad():
            logits = model(x)
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        right1 += (top5[:, 0] == y).sum().item()
        right5 += (top5 == y[:, None]).any(dim=1).sum().item()
        n += len(ys)
        xs.clear()
        ys.clear()

    for _, label, image in samples(shard_paths(a.data)):
        xs.append(prepare(image, pre))
        ys.append(label)
        if len(xs) == a.batch_size:
            flush()
    flush()
    print(json.dumps({"samples": n, "right": right1, "top1": 100.0 * right1 / n, "top5": 100.0 * right5 / n, "loss": loss_sum / n}))


if __name__ == "__main__":
    main()
