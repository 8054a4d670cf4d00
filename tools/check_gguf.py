#!/usr/bin/env python3
"""Check that a GGUF written by write_gguf.py is the same model as its Hugging Face checkpoint:
llama.cpp's logits for a fixed token sequence against transformers' float32 forward over the same
bf16 weights. On models/small a wrong q/k rope permutation gives max |diff| / max |logit| = 0.70;
llama.cpp's bf16 activations and f16 KV cache give 0.0075, hence the default tolerance 0.02.

    check_gguf.py MODEL_DIR GGUF [--tokens 24] [--threads 2] [--tol 0.02]

Needs torch, transformers==4.40.2 and llama-cpp-python==0.3.36 in one interpreter (the venv that
benchmarks/cpu_compare.sh sets up). Exits 1 when max |diff| / max |logit| exceeds --tol.
"""
import argparse

import numpy as np
import torch
import transformers
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("gguf")
ap.add_argument("--tokens", type=int, default=24)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--tol", type=float, default=0.02)
a = ap.parse_args()

torch.set_num_threads(a.threads)
hf = transformers.LlamaForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.float32).eval()
V = hf.config.vocab_size
tokens = [(1000 + 37 * i) % V for i in range(a.tokens)]
with torch.no_grad():
    ref = hf(torch.tensor([tokens])).logits[0].numpy()
del hf

llm = Llama(model_path=a.gguf, n_threads=a.threads, n_ctx=max(64, a.tokens), logits_all=True,
            verbose=False)
llm.eval(tokens)
got = np.array(llm.scores[: a.tokens], dtype=np.float32)

err = float(np.abs(got - ref).max() / np.abs(ref).max())
same_argmax = float((got.argmax(-1) == ref.argmax(-1)).mean())
ok = err < a.tol
print(f"check_gguf: {a.tokens} tokens, max|logit| {np.abs(ref).max():.3f}, "
      f"max|diff|/max|logit| {err:.2e} (tol {a.tol}), same argmax {same_argmax:.0%}: "
      f"{'OK' if ok else 'FAIL'}")
raise SystemExit(0 if ok else 1)
