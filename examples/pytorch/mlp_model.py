"""The paper's MLPs in PyTorch with the reference code's attribute names, and safetensors by hand.

Shared by the examples: `build` gives the reference `BottleneckMLP` (B_) or `MLP` (S_), whose
state dict loads our model.safetensors with strict=True; `read_safetensors` / `write_safetensors`
need no package beyond numpy and torch.
"""
import json
import os
import re
import struct

import numpy as np
import torch
from torch import nn


def build(arch, dim_in, classes):
    """The reference code's BottleneckMLP (B_) and MLP (S_), with its attribute names."""
    m = re.fullmatch(r"([BS])_(\d+)-Wi_(\d+)(?:-Ex_(\d+))?", arch)
    if not m:
        raise SystemExit(f"bad --arch {arch!r}: expected B_<depth>-Wi_<width> or S_<depth>-Wi_<width>")
    kind, depth, width, ex = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4) or 4)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(width, ex * width), nn.GELU(), nn.Linear(ex * width, width))

        def forward(self, x):
            return self.block(x)

    class BottleneckMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_in = nn.Linear(dim_in, width)
            self.linear_out = nn.Linear(width, classes)
            self.blocks = nn.ModuleList([Block() for _ in range(depth)])
            self.layernorms = nn.ModuleList([nn.LayerNorm(width) for _ in range(depth)])

        def forward(self, x):
            x = self.linear_in(x)
            for b, n in zip(self.blocks, self.layernorms):
                x = x + b(n(x))
            return self.linear_out(x)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_in = nn.Linear(dim_in, width)
            self.linear_out = nn.Linear(width, classes)
            self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth - 1)])
            self.layernorms = nn.ModuleList([nn.LayerNorm(width) for _ in range(depth - 1)])

        def forward(self, x):
            z = self.linear_in(x)
            for layer, norm in zip(self.layers, self.layernorms):
                z = layer(nn.functional.gelu(norm(z)))
            return self.linear_out(z)

    return (BottleneckMLP if kind == "B" else MLP)(), ("BottleneckMLP" if kind == "B" else "MLP")


# safetensors by hand (no package needed): 8-byte header length, JSON header, raw tensors.
def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    data = buf[8 + n :]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if v["dtype"] != "F32":
            raise SystemExit(f"{path}: {k} is {v['dtype']}, expected F32")
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype="<f4").copy().reshape(v["shape"]))
    return out


def write_safetensors(path, tensors, metadata=None):
    header, chunks, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, t in tensors.items():
        raw = t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
    os.replace(tmp, path)
