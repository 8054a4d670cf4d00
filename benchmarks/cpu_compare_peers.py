#!/usr/bin/env python3
"""The peers' side of benchmarks/cpu_compare.sh, and its table.

    cpu_compare_peers.py torch  --model DIR  --threads T [--prefill 64 512] [--decode-batches 1 16]
                                [--decode-prompt 16] [--new-tokens N]
    cpu_compare_peers.py llama  --gguf FILE  (same options; llama.cpp decodes batch 1 only)
    cpu_compare_peers.py report RESULTS.jsonl

torch and llama print one JSON line per measurement: {"preset", "model", "system", "work":
prefill|decode, "batch", "prompt", "tokens_per_s"}. Each system runs in its own process, so a 7B
model is resident once. Tokens are the same fixed function of position as dsmath-bench-decode's,
and, like it, decode times new_tokens - 1 steps after the prompt; all three run an untimed
warm-up forward first. A difference that remains: transformers 4.40 computes lm_head for every
prompt position, dsmath and llama.cpp (logits_all=False) for the last.
"""
import argparse
import json
import os
import statistics
import time


def toks(vocab, batch, n, start=0):
    return [[(1000 + 37 * (start + i) + 11 * b) % vocab for i in range(n)] for b in range(batch)]


def emit(system, work, batch, prompt, tokens_per_s):
    print(json.dumps({"preset": A.preset, "model": A.model or os.path.dirname(A.gguf),
                      "system": system, "work": work, "batch": batch, "prompt": prompt,
                      "tokens_per_s": tokens_per_s}), flush=True)


def run_torch(a):
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    model = transformers.LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.bfloat16).eval()
    V = model.config.vocab_size
    T = lambda b, n, s=0: torch.tensor(toks(V, b, n, s))
    with torch.inference_mode():
        model(T(1, 8))  # warm-up: first-call allocations and kernel selection
        for p in a.prefill:
            t0 = time.perf_counter()
            model(T(1, p), use_cache=True)
            emit("torch", "prefill", 1, p, p / (time.perf_counter() - t0))
        for b in a.decode_batches:
            past = model(T(b, a.decode_prompt), use_cache=True).past_key_values
            t0 = time.perf_counter()
            for i in range(a.new_tokens - 1):
                past = model(T(b, 1, a.decode_prompt + i), past_key_values=past,
                             use_cache=True).past_key_values
            emit("torch", "decode", b, a.decode_prompt,
                 b * (a.new_tokens - 1) / (time.perf_counter() - t0))


def run_llama(a):
    from llama_cpp import Llama

    # logits_all=False: logits of the last token only, as a server computes them.
    llm = Llama(model_path=a.gguf, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=1024,
                n_batch=512, logits_all=False, verbose=False)
    V = llm.n_vocab()
    llm.reset()
    llm.eval(toks(V, 1, 8)[0])  # warm-up; also pages in the mmapped weights
    for p in a.prefill:
        llm.reset()  # the next eval drops the whole KV cache: a fresh sequence
        t0 = time.perf_counter()
        llm.eval(toks(V, 1, p)[0])
        emit("llama.cpp", "prefill", 1, p, p / (time.perf_counter() - t0))
    llm.reset()
    llm.eval(toks(V, 1, a.decode_prompt)[0])
    t0 = time.perf_counter()
    for i in range(a.new_tokens - 1):
        llm.eval(toks(V, 1, 1, a.decode_prompt + i)[0])
    emit("llama.cpp", a.decode_work, 1, a.decode_prompt,
         (a.new_tokens - 1) / (time.perf_counter() - t0))


def model_costs(model_dir):
    """Weight bytes read per decode step, and flops per token of prefill and of decode: the
    inputs of the physical bounds."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    h, L, V = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c.get("num_key_value_heads", c["num_attention_heads"])
    layer = L * (2 * h * h + 2 * h * kv + 3 * h * c["intermediate_size"])  # matrix params
    lm_head = V * h
    # Every matrix is read once per step (the embedding only one row per token): bf16, 2 bytes.
    read_bytes = 2 * (layer + lm_head)
    # Attention (QK^T and PV) over `ctx` positions is 4 * ctx * h flops a layer; a prompt of p
    # tokens averages p/2 positions, and computes lm_head for its last token only.
    prefill = lambda p: 2 * layer + 2 * lm_head / p + 4 * L * (p / 2) * h
    decode = lambda ctx: 2 * (layer + lm_head) + 4 * L * ctx * h
    return read_bytes, prefill, decode, layer + 2 * V * h


def report(path):
    recs = [json.loads(line) for line in open(path) if line.strip()]
    probe = next(r for r in recs if r["system"] == "probe")
    peaks = [k for k in ("peak_amx_bf16_gflops", "peak_bf16_gflops", "peak_f32_fma_gflops")
             if k in probe]
    peak = probe[peaks[0]] * 1e9 if peaks else float("inf")
    bw = probe["read_bandwidth_gbs"] * 1e9
    print("cpu: " + " ".join(k if v else "-" + k for k, v in probe["cpu_flags"].items())
          + f"; {probe['threads']} threads; read {probe['read_bandwidth_gbs']:.1f} GB/s"
          + "".join(f"; {k[5:-7]} {probe[k]:.0f} GFLOP/s" for k in peaks))
    for preset in dict.fromkeys(r["preset"] for r in recs if "preset" in r):
        rows = [r for r in recs if r.get("preset") == preset]
        model = rows[0]["model"]
        read_bytes, prefill_flops, decode_flops, params = model_costs(model)
        ctx = next((r["prompt"] for r in rows if r["work"] == "decode"), 0)
        print(f"\n== {preset}: {model}, {params / 1e9:.3f} B params, {read_bytes / 1e9:.3f} GB "
              f"of weights read per decode step, decode after a {ctx}-token prompt")
        print(f"{'work':<14}{'dsmath':>10}{'llama.cpp':>11}{'torch':>10}{'/llama.cpp':>12}"
              f"{'/torch':>9}{'bound':>10}{'of bound':>10}{'dsmath-bf16':>13}{'/llama.cpp':>12}"
              f"{'/torch':>9}")
        for work, batch, prompt in dict.fromkeys((r["work"], r["batch"], r["prompt"]) for r in rows):
            runs = {}  # system -> its runs (several for alternated rounds)
            for r in rows:
                if (r["work"], r["batch"], r["prompt"]) == (work, batch, prompt):
                    runs.setdefault(r["system"], []).append(r["tokens_per_s"])
            tps = {k: statistics.median(v) for k, v in runs.items()}
            if work == "prefill":
                label, bound = f"prefill {prompt}", peak / prefill_flops(prompt)
            else:  # roofline: the weights are read once a step for the whole batch
                label = f"decode b{batch}"
                if work == "decode-alt":
                    label += f" alt x{max(len(v) for v in runs.values())}"
                bound = min(batch * bw / read_bytes, peak / decode_flops(prompt))
            d, l, t, m = (tps.get(k) for k in ("dsmath", "llama.cpp", "torch", "dsmath-bf16"))
            num = lambda x, w: f"{x:{w}.1f}" if x else f"{'-':>{w}}"
            ratio = lambda x, y: f"{x / y:.2f}x" if x and y else "-"
            print(f"{label:<14}{num(d, 10)}{num(l, 11)}{num(t, 10)}{ratio(d, l):>12}"
                  f"{ratio(d, t):>9}{bound:10.1f}{(f'{100 * d / bound:.0f}%' if d else '-'):>10}"
                  f"{num(m, 13)}{ratio(m, l):>12}{ratio(m, t):>9}")
        turns = [r["result"]["read_bound"] for r in rows
                 if r["system"] == "dsmath" and "read_bound" in r.get("result", {})]
        if turns:
            med = lambda k: statistics.median(t[k] for t in turns)
            print(f"decode b1 against a plain read of the same weights, in turns in one process "
                  f"(--read-bound, {len(turns)} runs x {turns[0]['turns']} turns): "
                  f"{100 * med('decode_of_read'):.0f}% (read {med('read_gb_per_s'):.1f} GB/s, "
                  f"decode {med('decode_weight_gb_per_s'):.1f} GB/s)")
    print("\ndsmath: default precision (f32-grade activations, within 1e-3 of f32 transformers); "
          "dsmath-bf16: --matmul-precision medium, bf16 activations like torch's and llama.cpp's "
          "bf16 products.")
    print("decode b1 alt xN: N rounds of dsmath and llama.cpp run one after the other, each after "
          "reading its own weight file, and the median of each (on a VM whose memory speed "
          "changes from minute to minute, a single pair of runs can differ by 1.5x).")
    print(f"tokens/s throughout. bound: prefill = {peaks[0] if peaks else 'peak'} / flops per "
          "token; decode = min(batch x read bandwidth / weight bytes, peak / flops per token).")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["torch", "llama", "report"])
    ap.add_argument("path", nargs="?", help="report: the results .jsonl")
    ap.add_argument("--preset", help="names the model in the output")
    ap.add_argument("--model")
    ap.add_argument("--gguf")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prefill", type=int, nargs="*", default=[64, 512])
    ap.add_argument("--decode-batches", type=int, nargs="*", default=[1])
    ap.add_argument("--decode-prompt", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--decode-work", default="decode",
                    help="the work name of the decode lines (decode-alt: a round of alternated runs)")
    A = ap.parse_args()
    {"torch": run_torch, "llama": run_llama, "report": lambda a: report(a.path)}[A.what](A)
