"""PyTorch side of test/model/torch.test.ts: safetensors read and written by hand (no
safetensors package needed), the model built with bench/torch_mlp.py's modules, which use the
reference code's attribute names, so load_state_dict(strict=True) checks names and shapes.

  check <dir> <x.f32> <labels.i32> <smoothing>   load <dir>, write <dir>/torch_out.safetensors
                                                 (logits, loss, grad.<name> for every parameter)
  make <dir> <arch> <res> <channels> <classes> <seed> <x.f32>
                                                 torch-initialised model -> <dir>, plus logits
"""
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn

# Import without leaving bench/__pycache__ behind in the working tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from torch_mlp import build  # noqa: E402


def read_st(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    data = buf[8 + n :]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype="<f4").copy().reshape(v["shape"]))
    return out


def write_st(path, tensors, metadata=None):
    header, chunks, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, t in tensors.items():
        raw = t.detach().contiguous().numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def main():
    torch.set_num_threads(1)
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "check":
        cfg = json.load(open(os.path.join(d, "config.json")))
        model = build(cfg["arch"], cfg["input_dim"], cfg["num_classes"])
        model.load_state_dict(read_st(os.path.join(d, "model.safetensors")), strict=True)
        x = torch.from_numpy(np.fromfile(sys.argv[3], dtype="<f4").reshape(-1, cfg["input_dim"]))
        y = torch.from_numpy(np.fromfile(sys.argv[4], dtype="<i4").astype(np.int64))
        logits = model(x)
        loss = nn.CrossEntropyLoss(label_smoothing=float(sys.argv[5]))(logits, y)
        loss.backward()
        out = {"logits": logits, "loss": loss.reshape(1)}
        for k, p in model.named_parameters():
            out["grad." + k] = p.grad
        write_st(os.path.join(d, "torch_out.safetensors"), out)
    elif cmd == "make":
        arch, res, ch, classes, seed, xpath = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
        torch.manual_seed(seed)
        model = build(arch, ch * res * res, classes)
        os.makedirs(d, exist_ok=True)
        write_st(os.path.join(d, "model.safetensors"), model.state_dict(), {"format": "pt"})
        json.dump({"arch": arch, "res": res, "channels": ch, "num_classes": classes}, open(os.path.join(d, "config.json"), "w"))
        x = torch.from_numpy(np.fromfile(xpath, dtype="<f4").reshape(-1, ch * res * res))
        with torch.no_grad():
            write_st(os.path.join(d, "torch_logits.safetensors"), {"logits": model(x)})
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
