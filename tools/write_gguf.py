#!/usr/bin/env python3
"""Write a dsmath / Hugging Face LLaMA checkpoint as a GGUF file that llama.cpp reads.

    write_gguf.py MODEL_DIR OUT.gguf

MODEL_DIR holds config.json and model.safetensors, or shards listed by model.safetensors.index.json
(what dsmath-make-model writes). Matrices stay bf16 (GGML type BF16), so llama.cpp and dsmath read
the same bytes per token; the 1-D norm weights become f32, as llama.cpp's own converter writes
them. Needs numpy and the gguf package:  pip install gguf==0.19.0  (tested with 0.19.0, the gguf-py
vendored by llama-cpp-python 0.3.36).

The checkpoints carry random weights and no SentencePiece model, so the vocabulary is dummy tokens
<t{i}> under tokenizer model "llama" (the minimum llama.cpp's loader takes: tokens, scores, types,
bos/eos ids); feed llama.cpp token ids, never text.
"""
import json
import os
import struct
import sys

import numpy as np
import gguf

ST_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}  # bf16 kept as raw bits


def read_safetensors(model_dir):
    """name -> numpy array memory-mapped from the .safetensors file(s), no copy."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        path = os.path.join(model_dir, name)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, t in header.items():
            if key == "__metadata__":
                continue
            begin, end = t["data_offsets"]
            dtype = ST_DTYPES[t["dtype"]]
            count = (end - begin) // np.dtype(dtype).itemsize
            a = np.memmap(path, dtype=dtype, mode="r", offset=8 + n + begin, shape=(count,))
            tensors[key] = (a.reshape(t["shape"]), t["dtype"])
    return tensors


def permute_rope(w, n_head):
    """HF rotates halves of each head (rotate_half); llama.cpp's LLaMA rope rotates adjacent pairs.
    Reorder each head's rows so pair i is (row i, row i + d/2), as convert_hf_to_gguf.py's
    LlamaModel.permute does."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main(model_dir, out_path):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    hidden, vocab = cfg["hidden_size"], cfg["vocab_size"]
    if cfg.get("rope_scaling"):
        sys.exit("write_gguf: rope_scaling is not supported")
    src = read_safetensors(model_dir)

    w = gguf.GGUFWriter(out_path, "llama")
    w.add_name(os.path.basename(os.path.normpath(model_dir)))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_rope_dimension_count(hidden // n_head)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)

    bos, eos = cfg.get("bos_token_id", 1), cfg.get("eos_token_id", 2)
    types = [gguf.TokenType.NORMAL] * vocab
    types[bos] = types[eos] = gguf.TokenType.CONTROL
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)

    def put(gguf_name, hf_name, heads=None):
        a, dtype = src[hf_name]
        if a.ndim == 1:  # norm weights: f32, which every ggml op takes
            a = (a.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else a.astype(np.float32)
            w.add_tensor(gguf_name, np.ascontiguousarray(a))
            return
        if heads:  # a copy: numpy would write a strided view one element at a time
            a = np.ascontiguousarray(permute_rope(a, heads))
        w.add_tensor(gguf_name, a, raw_dtype=gguf.GGMLQuantizationType.BF16 if dtype == "BF16" else None)

    put("token_embd.weight", "model.embed_tokens.weight")
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        put(b + "attn_norm.weight", p + "input_layernorm.weight")
        put(b + "attn_q.weight", p + "self_attn.q_proj.weight", n_head)
        put(b + "attn_k.weight", p + "self_attn.k_proj.weight", n_kv)
        put(b + "attn_v.weight", p + "self_attn.v_proj.weight")
        put(b + "attn_output.weight", p + "self_attn.o_proj.weight")
        put(b + "ffn_norm.weight", p + "post_attention_layernorm.weight")
        put(b + "ffn_gate.weight", p + "mlp.gate_proj.weight")
        put(b + "ffn_up.weight", p + "mlp.up_proj.weight")
        put(b + "ffn_down.weight", p + "mlp.down_proj.weight")
    put("output_norm.weight", "model.norm.weight")
    if "lm_head.weight" in src:  # tied embeddings: llama.cpp falls back to token_embd
        put("output.weight", "lm_head.weight")

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
