#!/usr/bin/env python3
"""Golden logits and greedy continuations from Hugging Face transformers for `tiny` checkpoints.

Pinned reference: transformers 4.40.2, tokenizers 0.19.1, torch 1.13 (Debian python3-torch, CPU).
For each case it makes the checkpoint with dsmath-make-model (seeded, so the C++ test rebuilds the
identical one), runs LlamaForCausalLM in float32 (bf16 weights upcast exactly; eager attention) and
writes tests/data/golden/<case>.json:
  make_model_args   arguments the test passes to dsmath-make-model
  config_overrides  config.json keys replaced afterwards (e.g. rope_scaling), by the test too
  prompts           token ids (encoded by the HF tokenizer, BOS included)
  top_logits        per prompt, per position: the TOP_K largest logits and their ids
  greedy            per prompt: GREEDY_TOKENS argmax tokens (EOS not treated specially)
  min_greedy_margin smallest top-1 minus top-2 logit gap along the greedy paths; cases are
                    chosen so it is far above the 1e-3 tolerance, else greedy ties could flip.

Usage: python3 tools/make_model_goldens.py BUILD_DIR   (BUILD_DIR/bin/dsmath-make-model)
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "golden"
TOP_K = 8
GREEDY_TOKENS = 12

CASES = {
    "tiny_mha_safetensors_bf16": ["--preset", "tiny", "--format", "safetensors", "--seed", "1"],
    "tiny_gqa_bin_sharded_bf16": ["--preset", "tiny", "--kv-heads", "2", "--format", "bin",
                                  "--shards", "2", "--seed", "11"],
    "tiny_tied_safetensors_sharded_f32": ["--preset", "tiny", "--tie-embeddings", "--dtype", "f32",
                                          "--format", "safetensors-sharded", "--shards", "3",
                                          "--seed", "3"],
    "tiny_gqa_safetensors_f16": ["--preset", "tiny", "--kv-heads", "1", "--dtype", "f16",
                                 "--format", "safetensors", "--seed", "12"],
    "tiny_rope_linear_scaling": ["--preset", "tiny", "--seed", "13"],
}
# config.json keys set after dsmath-make-model writes the checkpoint (the test does the same).
CONFIG_OVERRIDES = {
    "tiny_rope_linear_scaling": {"rope_scaling": {"type": "linear", "factor": 4.0},
                                 "rope_theta": 500000.0},
}

PROMPTS = [
    "The integral of x^2 from 0 to 2 is",
    "User: Find all real x with x^2 - 5x + 6 = 0.\nPlease reason step by step, and put your final "
    "answer within \\boxed{}.\n\nAssistant:",
    "请通过逐步推理来解答问题 12345",
]


def greedy(model, ids, n):
    ids = list(ids)
    out, margin = [], float("inf")
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        top2 = torch.topk(logits, 2)
        margin = min(margin, float(top2.values[0] - top2.values[1]))
        tok = int(top2.indices[0])
        out.append(tok)
        ids.append(tok)
    return out, margin


def main(build_dir: Path) -> None:
    make_model = build_dir / "bin" / "dsmath-make-model"
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, args in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([str(make_model), *args, "--out", tmp], check=True)
            overrides = CONFIG_OVERRIDES.get(name, {})
            if overrides:
                config_path = Path(tmp) / "config.json"
                config = json.loads(config_path.read_text())
                config.update(overrides)
                config_path.write_text(json.dumps(config, indent=2))
            tok = AutoTokenizer.from_pretrained(tmp)
            model = LlamaForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32,
                                                     attn_implementation="eager")
            model.eval()
            prompts = [tok(p).input_ids for p in PROMPTS]
            top_logits, continuations, min_margin = [], [], float("inf")
            for ids in prompts:
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0]
                top = torch.topk(logits, TOP_K, dim=-1)
                top_logits.append([{"ids": top.indices[i].tolist(),
                                    "values": [round(v, 6) for v in top.values[i].tolist()]}
                                   for i in range(len(ids))])
                cont, margin = greedy(model, ids, GREEDY_TOKENS)
                continuations.append(cont)
                min_margin = min(min_margin, margin)
        golden = {"make_model_args": args, "config_overrides": CONFIG_OVERRIDES.get(name, {}),
                  "prompts": prompts, "top_k": TOP_K,
                  "top_logits": top_logits, "greedy": continuations,
                  "min_greedy_margin": min_margin,
                  "reference": f"transformers {transformers.__version__}, torch {torch.__version__}"}
        (OUT / f"{name}.json").write_text(json.dumps(golden, separators=(",", ":")) + "\n")
        print(f"{name}: {sum(map(len, prompts))} positions, min greedy margin {min_margin:.2e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
