#!/usr/bin/env python3
"""Held-out accuracy of the arith model with transformers (independent of the C++ runtime).

    /opt/hfref/bin/python tools/eval_arith.py [MODEL_DIR] [--no-sample]

Loads MODEL_DIR (default tests/data/models/arith; bf16 weights cast to f32), builds each prompt of
MODEL_DIR/heldout.jsonl exactly as the runtime does (chat template + English CoT suffix), decodes
at most 48 new tokens (stop at EOS), and grades the last \\boxed{...} against the number after
"####". Prints greedy accuracy, and at temperature 0.7 (4 samples each, seed 0) maj@4 and pass@4.
"""
import argparse
import collections
import json
import os
import re
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # torch's own threads; nested BLAS ones thrash

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
BOS_TEXT = "<｜begin▁of▁sentence｜>"
COT = "\nPlease reason step by step, and put your final answer within \\boxed{}."
EOS = 100001


def boxed(text):
    m = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return m[-1].strip() if m else None


def generate(model, tok, questions, **kw):
    """Batched decoding with left padding (pad = EOS, masked out); returns lists of texts."""
    prompts = [tok.encode(f"{BOS_TEXT}User: {q}{COT}\n\nAssistant:", add_special_tokens=False).ids
               for q in questions]
    n = max(map(len, prompts))
    ids = torch.tensor([[EOS] * (n - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=48, eos_token_id=EOS,
                         pad_token_id=EOS, **kw)[:, n:]
    k = kw.get("num_return_sequences", 1)
    texts = [tok.decode([t for t in row.tolist() if t != EOS]) for row in out]
    return [texts[i * k:(i + 1) * k] for i in range(len(questions))]


def evaluate(model_dir, sampled=True, batch=50):
    model_dir = Path(model_dir)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    probs = [json.loads(l) for l in open(model_dir / "heldout.jsonl")]
    refs = [p["answer"].split("####")[-1].strip() for p in probs]
    greedy, maj, anyok = 0, 0, 0
    torch.manual_seed(0)
    with torch.no_grad():
        for s in range(0, len(probs), batch):
            qs = [p["question"] for p in probs[s:s + batch]]
            for texts, ref in zip(generate(model, tok, qs, do_sample=False), refs[s:s + batch]):
                greedy += boxed(texts[0]) == ref
            if sampled:  # full-vocabulary sampling: no top-k / top-p truncation
                outs = generate(model, tok, qs, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                                num_return_sequences=4)
                for texts, ref in zip(outs, refs[s:s + batch]):
                    answers = [boxed(t) for t in texts]
                    votes = collections.Counter(a for a in answers if a is not None)
                    maj += bool(votes) and votes.most_common(1)[0][0] == ref
                    anyok += ref in answers
    n = len(probs)
    res = {"n": n, "greedy": greedy / n}
    if sampled:
        res.update(maj4=maj / n, pass4=anyok / n)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default=ROOT / "tests/data/models/arith")
    ap.add_argument("--no-sample", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(evaluate(args.model_dir, sampled=not args.no_sample)))
