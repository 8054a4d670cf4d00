#!/usr/bin/env python3
"""Builds tests/data/tokenizers/deepseek_math_like: a tokenizer shaped like DeepSeekMath 7B's.

DeepSeekMath's own tokenizer files cannot be downloaded here, so this derives one with the same
facts from the DeepSeek-LLM-style tokenizer (deepseek_v3 vocabulary + DeepSeek-LLM pre-tokenizer):
  - the first 100,000 BPE tokens (ids 0..99999; merges are ordered so every kept token is built
    only from kept tokens), the original special tokens 0..2 dropped,
  - BOS <｜begin▁of▁sentence｜> = 100000, EOS <｜end▁of▁sentence｜> = 100001 (as DeepSeekMath),
  - tokenizer_config.json with add_bos_token = true and DeepSeekMath's chat template.
The model embedding is padded to 102400 rows, as in the real checkpoint.

Usage: python3 tools/make_deepseek_math_tokenizer.py SRC_DIR OUT_DIR
"""
import json
import sys
from pathlib import Path

KEEP = 100000
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def main(src: Path, out: Path) -> None:
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    specials = {a["id"] for a in tok["added_tokens"]}
    old_vocab = tok["model"]["vocab"]
    by_id = sorted((i, s) for s, i in old_vocab.items() if i not in specials)
    vocab = {s: new_id for new_id, (_, s) in enumerate(by_id[:KEEP])}
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(f"{a} {b}")
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = merges

    def added(i, content):
        return {"id": i, "content": content, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": True, "special": True}

    tok["added_tokens"] = [added(KEEP, BOS), added(KEEP + 1, EOS)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")

    token = lambda c: {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": True,
                       "rstrip": False, "single_word": False}
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": token(BOS),
              "eos_token": token(EOS), "pad_token": None, "clean_up_tokenization_spaces": False,
              "legacy": True, "model_max_length": 4096, "sp_model_kwargs": {}, "unk_token": None,
              "tokenizer_class": "LlamaTokenizerFast", "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2),
                                               encoding="utf-8")
    print(f"{out}: {len(vocab)} tokens, {len(merges)} merges, BOS {KEEP}, EOS {KEEP + 1}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
