#!/usr/bin/env python3
"""Hugging Face transformers' greedy completions of the arith model's held-out problems, the
golden tokens tests/e2e/arith_test.py compares dsmath with.

    /opt/hfref/bin/python tools/make_arith_goldens.py [MODEL_DIR]   (default tests/data/models/arith)

Each prompt alone (no padding), built exactly as the runtime builds it (chat template + English
chain-of-thought suffix), greedy, at most 48 new tokens, stopping at EOS (kept, as dsmath reports
it). Writes MODEL_DIR/hf_greedy.jsonl: {"id", "token_ids", "text", "min_margin"}, min_margin being
the smallest gap between the best and second-best logit along the path (a near-tie there could
make an exact f32 comparison flip). Pinned: torch 1.13 (Debian), transformers 4.40.2.
"""
import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from eval_arith import BOS_TEXT, COT, EOS  # noqa: E402  (one definition of the prompt)


def main():
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "tests/data/models/arith")
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    problems = [json.loads(line) for line in open(model_dir / "heldout.jsonl")]
    with open(model_dir / "hf_greedy.jsonl", "w") as out, torch.no_grad():
        for p in problems:
            ids = tok.encode(f"{BOS_TEXT}User: {p['question']}{COT}\n\nAssistant:",
                             add_special_tokens=False).ids
            r = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=48, do_sample=False,
                               eos_token_id=EOS, pad_token_id=EOS, output_scores=True,
                               return_dict_in_generate=True)
            new = r.sequences[0, len(ids):].tolist()
            margin = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in r.scores)
            out.write(json.dumps({"id": p["id"], "token_ids": new,
                                  "text": tok.decode([t for t in new if t != EOS]),
                                  "min_margin": round(margin, 6)}) + "\n")
    print(f"wrote {len(problems)} greedy completions to {model_dir / 'hf_greedy.jsonl'}")


if __name__ == "__main__":
    main()
