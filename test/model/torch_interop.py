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
import sys

import numpy as np
import torch
from torch import nn

# Import without leaving bench/__pycache__ behind in the working tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from torch_mlp import build  # noqa: E402
from mlp_model import read_safetensors, write_safetensors  # noqa: E402  (on the path through torch_mlp)


def main():
    torch.set_num_threads(1)
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "check":
        cfg = json.load(open(os.path.join(d, "config.json")))
        model = build(cfg["arch"], cfg["input_dim"], cfg["num_classes"])
        model.load_state_dict(read_safetensors(os.path.join(d, "model.safetensors")), strict=True)
        x = torch.from_numpy(np.fromfile(sys.argv[3], dtype="<f4").reshape(-1, cfg["input_dim"]))
        y = torch.from_numpy(np.fromfile(sys.argv[4], dtype="<i4").astype(np.int64))
        logits = model(x)
        loss = nn.CrossEntropyLoss(label_smoothing=float(sys.argv[5]))(logits, y)
        loss.backward()
        out = {"logits": logits, "loss": loss.reshape(1)}
        for k, p in model.named_parameters():
            out["grad." + k] = p.grad
        write_safetensors(os.path.join(d, "torch_out.safetensors"), out)
    elif cmd == "make":
        arch, res, ch, classes, seed, xpath = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
        torch.manual_seed(seed)
        model = build(arch, ch * res * res, classes)
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), model.state_dict(), {"format": "pt"})
        json.dump({"arch": arch, "res": res, "channels": ch, "num_classes": classes}, open(os.path.join(d, "config.json"), "w"))
        x = torch.from_numpy(np.fromfile(xpath, dtype="<f4").reshape(-1, ch * res * res))
        with torch.no_grad():
            write_safetensors(os.path.join(d, "torch_logits.safetensors"), {"logits": model(x)})
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
