#!/usr/bin/env python3
"""Independent check of checkpoints written by dsmath-make-model (or any writer), with torch.

    check_checkpoint_with_torch.py PATH [--transformers]
    check_checkpoint_with_torch.py --write-sample FILE [--transposed]

PATH is a checkpoint directory or a single .bin / .safetensors file. Prints one JSON object:
{"tensors": {name: {"dtype", "shape", "sum", "abs_sum"}}} where .bin files are read by
torch.load(weights_only=True) (the loader transformers uses) and .safetensors files by the
`safetensors` package when installed, else by a minimal parser over torch.frombuffer.
With --transformers, also loads the directory with LlamaForCausalLM.from_pretrained and adds
"missing_keys" / "unexpected_keys" (both must be empty for a well-named checkpoint) and
"logits_sum" for a fixed prompt. The C++ tests compare these numbers with their own reader.
--write-sample writes, with torch.save itself, a state dict with what real checkpoints contain
beyond plain tensors: an OrderedDict with _metadata, tied weights sharing one storage, a view
with a storage offset, an nn.Parameter; --transposed adds a non-contiguous tensor.
Tested with torch 1.13 (Debian python3-torch) and transformers 4.40.2.
"""
import json
import struct
import sys
from pathlib import Path

import torch

DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def read_safetensors(path):
    try:
        from safetensors.torch import load_file
        return load_file(str(path))
    except ImportError:
        pass
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = bytearray(raw[8 + n + b:8 + n + end])
        out[name] = torch.frombuffer(buf, dtype=ST_DTYPES[e["dtype"]]).reshape(e["shape"])
    return out


def read_file(path):
    if path.suffix == ".bin":
        return torch.load(str(path), map_location="cpu", weights_only=True)
    return read_safetensors(path)


def weight_files(path):
    if path.is_file():
        return [path]
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).exists():
            names = json.loads((path / index).read_text())["weight_map"].values()
            return [path / n for n in sorted(set(names))]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (path / single).exists():
            return [path / single]
    raise SystemExit(f"{path}: no weights found")


def write_sample(path, transposed):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model = model.to(torch.bfloat16)
    model[1].weight = model[0].weight
    sd = model.state_dict()
    sd["half"] = torch.randn(3, 4).to(torch.float16)[1:]
    sd["param"] = torch.nn.Parameter(torch.randn(3))
    if transposed:
        sd["transposed"] = torch.randn(3, 5).t()
    torch.save(sd, path)


def main():
    if sys.argv[1] == "--write-sample":
        write_sample(sys.argv[2], "--transposed" in sys.argv[3:])
        return
    path = Path(sys.argv[1])
    result = {"tensors": {}}
    for f in weight_files(path):
        for name, t in read_file(f).items():
            t64 = t.to(torch.float64)
            result["tensors"][name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                                       "sum": float(t64.sum()), "abs_sum": float(t64.abs().sum())}
    if "--transformers" in sys.argv[2:]:
        from transformers import LlamaForCausalLM
        model, info = LlamaForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32,
                                                       output_loading_info=True)
        result["missing_keys"] = sorted(info["missing_keys"])
        result["unexpected_keys"] = sorted(info["unexpected_keys"])
        with torch.no_grad():
            logits = model(torch.tensor([[100000, 5, 17, 300, 4000]])).logits
        result["logits_sum"] = float(logits.to(torch.float64).abs().sum())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
