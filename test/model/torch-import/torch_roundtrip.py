"""PyTorch side of test/model/torch-import/roundtrip.test.ts (needs torch + numpy).

  save <dir> <cases.json>   for each case: a reference-named model built with bench/torch_mlp.py,
                            torch.save'd the way the case says, plus <dir>/<name>.ref.safetensors
                            with an input batch x and the model's logits on it
  check <dir> <cases.json>  for each case: load <dir>/<name>/ (our model directory) into a fresh
                            PyTorch model with load_state_dict(strict=True), write its logits on
                            the same x to <dir>/<name>.back.safetensors
"""
import json
import os
import sys

import torch
from torch import nn

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_interop import build, read_safetensors, write_safetensors  # noqa: E402  (test/model/torch_interop.py)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def dim_in(c):
    return c["channels"] * c["res"] * c["res"]


def save(d, cases):
    for c in cases:
        torch.manual_seed(c["seed"])
        model = build(c["arch"], dim_in(c), c["classes"])
        dtype = DTYPES[c.get("dtype", "float32")]
        # Round the weights to the saved dtype first, so the reference logits are those of the
        # weights actually in the file.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dtype).float())
        x = torch.randn(5, dim_in(c))
        with torch.no_grad():
            logits = model(x)
        wrap = c.get("wrap", "plain")
        if wrap == "dataparallel":
            sd = nn.DataParallel(model).state_dict()
        elif wrap == "compiled":
            sd = {"module._orig_mod." + k: v for k, v in model.state_dict().items()}
        else:
            sd = model.state_dict()
        sd = {k: v.to(dtype) for k, v in sd.items()}
        if c.get("transpose"):
            sd = {k: (v.t().contiguous().t() if v.dim() == 2 else v) for k, v in sd.items()}
            assert not all(v.is_contiguous() for v in sd.values())
        obj = sd
        if c.get("checkpoint"):
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            obj = {c["checkpoint"]: sd, "epoch": 7, "optimizer": opt.state_dict(), "arch": c["arch"]}
        torch.save(obj, os.path.join(d, c["name"] + ".pt"))
        write_safetensors(os.path.join(d, c["name"] + ".ref.safetensors"), {"x": x, "logits": logits})


def check(d, cases):
    for c in cases:
        md = os.path.join(d, c["name"])
        cfg = json.load(open(os.path.join(md, "config.json")))
        model = build(cfg["arch"], cfg["input_dim"], cfg["num_classes"])
        model.load_state_dict(read_safetensors(os.path.join(md, "model.safetensors")), strict=True)
        x = read_safetensors(os.path.join(d, c["name"] + ".ref.safetensors"))["x"]
        with torch.no_grad():
            write_safetensors(os.path.join(d, c["name"] + ".back.safetensors"), {"logits": model(x)})


def main():
    torch.set_num_threads(1)
    cmd, d, cases = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
    {"save": save, "check": check}[cmd](d, cases)


if __name__ == "__main__":
    main()
