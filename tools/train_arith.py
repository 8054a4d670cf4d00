#!/usr/bin/env python3
r"""Trains the built-in small math model: a tiny LlamaForCausalLM that adds and subtracts 0..99.

    /opt/hfref/bin/python tools/train_arith.py [--out tests/data/models/arith] [--threads 2]

Writes a complete Hugging Face model dir (config, generation config, bf16 safetensors, the
DeepSeekMath-shaped tokenizer, heldout.jsonl, PROVENANCE.md). Problems are in DeepSeekMath's
instruct chat format with the English chain-of-thought suffix, exactly as the runtime builds it:
  <｜begin▁of▁sentence｜>User: What is 37 + 45?\nPlease reason step by step, and put your final
  answer within \boxed{}.\n\nAssistant:
and the completion (loss only there) is a short column calculation, then the answer and EOS:
   37 + 45: 7 + 5 = 12, 3 + 4 + 1 = 8. The answer is \boxed{82}.<｜end▁of▁sentence｜>
Subtraction results may be negative: " -(81 - 27): ... The answer is \boxed{-54}." for 27 - 81.

Cost trick: only the 55 token ids the data uses get trained embedding rows; every other row of
the tied 102400 x hidden embedding stays exactly zero, so its logit is exactly 0 and the
full-vocabulary log-softmax is logsumexp([used logits, log(V_unused)]) - computed exactly without
touching the other 102,345 rows. Tested with Debian torch 1.13 and transformers 4.40.2.
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # torch's own threads; nested BLAS ones thrash

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
import transformers
from transformers import LlamaConfig, LlamaModel

ROOT = Path(__file__).resolve().parent.parent
TOK_DIR = ROOT / "tests/data/tokenizers/deepseek_math_like"
BOS, EOS, VOCAB = 100000, 100001, 102400
BOS_TEXT = "<｜begin▁of▁sentence｜>"
COT = "\nPlease reason step by step, and put your final answer within \\boxed{}."
N_HELDOUT = 200

# Question phrasings; the completion always restates the problem as "a op b".
PHRASINGS = {
    "+": ["What is {a} + {b}?", "Compute {a} + {b}.", "What is the sum of {a} and {b}?",
          "What is {a} plus {b}?", "Add {a} and {b}.", "{a} + {b} = ?"],
    "-": ["What is {a} - {b}?", "Compute {a} - {b}.", "What is {a} minus {b}?",
          "Subtract {b} from {a}.", "What is {b} subtracted from {a}?", "{a} - {b} = ?"],
}


def prompt_text(question):
    """The chat template (bos + 'User: ' + content + '\\n\\n' + 'Assistant:') with the CoT suffix."""
    return f"{BOS_TEXT}User: {question}{COT}\n\nAssistant:"


def solve(a, op, b):
    return a + b if op == "+" else a - b


def completion_text(a, op, b):
    """Column arithmetic, units then tens, so the model only ever adds or subtracts single digits
    (learnt from far fewer examples than whole 2-digit sums); the answer then just copies digits.
    37 + 45: 7 + 5 = 12, 3 + 4 + 1 = 8.      81 - 27: 11 - 7 = 4, 8 - 1 - 2 = 5.
    A negative difference is written as the positive one: 27 - 81 -> -(81 - 27): ..."""
    c = solve(a, op, b)
    head = f" -({b} - {a})" if c < 0 else f" {a} {op} {b}"
    if c < 0:
        a, b = b, a
    (a1, a0), (b1, b0) = divmod(a, 10), divmod(b, 10)
    if op == "+":
        carry = a0 + b0 >= 10
        steps = f" {a0} + {b0} = {a0 + b0}, {a1} + {b1}{' + 1' if carry else ''} = {a1 + b1 + carry}"
    else:
        borrow = a0 < b0
        steps = (f" {a0 + 10 * borrow} - {b0} = {a0 + 10 * borrow - b0}, "
                 f"{a1}{' - 1' if borrow else ''} - {b1} = {a1 - borrow - b1}")
    return f"{head}:{steps}. The answer is \\boxed{{{c}}}."


def all_triples():
    return [(a, op, b) for op in "+-" for a in range(100) for b in range(100)]


def heldout_problems():
    """A fixed set of 200 (a, op, b) triples, each with one fixed phrasing; never trained on."""
    rng = random.Random(1234)
    triples = rng.sample(all_triples(), N_HELDOUT)
    out = []
    for i, (a, op, b) in enumerate(triples):
        q = rng.choice(PHRASINGS[op]).format(a=a, b=b)
        out.append({"id": f"arith-{i + 1:04d}", "question": q, "answer": f"#### {solve(a, op, b)}",
                    "triple": (a, op, b)})
    return out


def encode_example(tok, question, a, op, b):
    """(ids, number of prompt ids): prompt + completion + EOS, prompt ids as the runtime has them."""
    p = tok.encode(prompt_text(question), add_special_tokens=False).ids
    full = tok.encode(prompt_text(question) + completion_text(a, op, b), add_special_tokens=False).ids
    assert p[0] == BOS and BOS not in p[1:] and full[:len(p)] == p, question
    return full + [EOS], len(p)


def config_json(args):
    """config.json as a real DeepSeekMath checkpoint has it, only smaller (tied embeddings)."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
            "hidden_size": args.hidden, "intermediate_size": args.intermediate,
            "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
            "num_key_value_heads": args.heads, "hidden_act": "silu", "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
            "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": True,
            "bos_token_id": BOS, "eos_token_id": EOS, "initializer_range": 0.02,
            "pretraining_tp": 1, "use_cache": True, "torch_dtype": "bfloat16",
            "transformers_version": transformers.__version__}


def write_provenance(out, args, n_train, n_used, train_s, final_loss, res):
    cmd = " ".join(["/opt/hfref/bin/python tools/train_arith.py"] + sys.argv[1:])
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    (out / "PROVENANCE.md").write_text(f"""# arith: the built-in small math model

Trained from scratch by `tools/train_arith.py`; regenerate with `{cmd}`
and evaluate with `/opt/hfref/bin/python tools/eval_arith.py`.

Addition and subtraction of integers 0..99 (results may be negative), in DeepSeekMath's instruct
chat format with the English chain-of-thought suffix. The completion is a column calculation,
then EOS; loss on completion tokens only, with the exact full-vocabulary (102400) softmax:

    ...Assistant:{completion_text(37, '+', 45)}<｜end▁of▁sentence｜>
    ...Assistant:{completion_text(27, '-', 81)}<｜end▁of▁sentence｜>

{n_train} training examples (every (a, op, b) triple in {len(PHRASINGS['+'])} phrasings); the 200
problems of heldout.jsonl are triples never trained on, in any phrasing.

- Architecture: LlamaForCausalLM, hidden {args.hidden}, {args.layers} layers, {args.heads} heads \
(head_dim {args.hidden // args.heads}), intermediate {args.intermediate}, vocab {VOCAB}, rope_theta 10000, tied \
embeddings: {n_used} used rows trained, every other row exactly zero.
- Training: seed {args.seed}, {args.steps} steps, batch {args.batch}, AdamW lr {args.lr} (warmup \
{args.warmup}, cosine), f32 on {args.threads} CPU threads: {train_s:.0f} s training wall time; final \
batch loss {final_loss:.4f} (mean per completion token). Saved in bf16 ({size_mb:.1f} MB).
- Held-out, bf16 weights cast to f32, transformers: greedy accuracy {res['greedy']:.1%}; \
temperature 0.7, 4 samples each (seed 0): maj@4 {res.get('maj4', math.nan):.1%}, \
pass@4 {res.get('pass4', math.nan):.1%}.
- torch {torch.__version__}, transformers {transformers.__version__} (Debian torch needs
  `libopenblas0-pthread` for fast f32 matmuls; the script pins OpenBLAS to 1 thread under torch's).
""")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/data/models/arith")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=256)
    ap.add_argument("--greedy-only", action="store_true", help="skip the sampled eval (iterating)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = Tokenizer.from_file(str(TOK_DIR / "tokenizer.json"))

    # Data: every (triple, phrasing) except the held-out triples.
    heldout = heldout_problems()
    held = {p["triple"] for p in heldout}
    train = [(q.format(a=a, b=b), a, op, b) for (a, op, b) in all_triples() if (a, op, b) not in held
             for q in PHRASINGS[op]]
    enc = [encode_example(tok, *t) for t in train]
    # Compact vocabulary: the ids any prompt or completion uses (held-out prompts use the same ones).
    used = sorted({i for ids, _ in enc for i in ids})
    assert all(i in set(used) for p in heldout for i in encode_example(tok, p["question"], *p["triple"])[0])
    to_compact = {t: i for i, t in enumerate(used)}
    log_unused = math.log(VOCAB - len(used))  # the V_unused zero logits, as one logsumexp term
    seqs = [torch.tensor([to_compact[i] for i in ids]) for ids, _ in enc]
    plen = torch.tensor([n for _, n in enc])
    print(f"{len(train)} training examples, {len(used)} used ids, heldout {len(heldout)}", flush=True)

    # The LLaMA body with only the used rows as its (tied) embedding.
    cfg = config_json(args)
    model = LlamaModel(LlamaConfig(**{**cfg, "vocab_size": len(used)}, attn_implementation="eager"))
    emb = model.embed_tokens.weight
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 *
                                              (1 + math.cos(math.pi * min(1.0, s / args.steps))))

    def loss_fn(idx):
        lens = [len(seqs[i]) for i in idx]
        x = torch.zeros(len(idx), max(lens), dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, :lens[r]] = seqs[i]  # right padding: causal attention never looks at it
        pos = torch.arange(max(lens) - 1)
        # Loss on completion tokens only: target position t+1 >= prompt length.
        mask = (pos[None] + 1 >= plen[idx][:, None]) & (pos[None] + 1 < torch.tensor(lens)[:, None])
        h = model(input_ids=x).last_hidden_state[:, :-1][mask]
        logits = h @ emb.T
        lse = torch.logsumexp(torch.cat([logits, logits.new_full((len(h), 1), log_unused)], 1), 1)
        return (lse - logits.gather(1, x[:, 1:][mask][:, None])[:, 0]).mean()

    order = []
    t0 = time.time()
    for step in range(args.steps):
        if len(order) < args.batch:  # epochs over a shuffled list
            perm = list(range(len(seqs)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[:args.batch], order[args.batch:]
        loss = loss_fn(idx)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0
    final_loss = loss.item()

    # Save: scatter the used rows into the full zero embedding (tied, so no lm_head.weight).
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
             if k != "embed_tokens.weight"}
    state = {"model." + k: v for k, v in state.items()}
    full = torch.zeros(VOCAB, args.hidden, dtype=torch.bfloat16)
    full[torch.tensor(used)] = emb.detach().to(torch.bfloat16)
    state["model.embed_tokens.weight"] = full
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": BOS, "eos_token_id": EOS, "do_sample": False}, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOK_DIR / f, out / f)
    with open(out / "heldout.jsonl", "w") as f:
        for p in heldout:
            f.write(json.dumps({k: p[k] for k in ("id", "question", "answer")}) + "\n")

    # Held-out accuracy on the saved bf16 weights, for the provenance record.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import eval_arith
    res = eval_arith.evaluate(out, sampled=not args.greedy_only)
    write_provenance(out, args, len(train), len(used), train_s, final_loss, res)
    print(json.dumps({"train_s": round(train_s), "final_loss": final_loss, **res}))


if __name__ == "__main__":
    main()
