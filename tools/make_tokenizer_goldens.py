#!/usr/bin/env python3
"""Writes the tokenizer goldens the C++ tests compare against (tests/data/tokenizers/*/golden.jsonl).

Oracle: Hugging Face `tokenizers` and `transformers` (pinned below), run from the reference venv:
    /opt/hfref/bin/python tools/make_tokenizer_goldens.py
Pinned versions (the script refuses others, so goldens stay reproducible):
    tokenizers==0.19.1  transformers==4.40.2  sentencepiece==0.2.0 or newer 0.2.x
It also trains the small committed sentencepiece model with `spm_train` (Debian package
`sentencepiece`) when tests/data/tokenizers/sentencepiece_bpe/tokenizer.model is missing.

Each golden line is one case:
  text            the input
  ids             encode(text, add_special_tokens=False); checked equal between
                  tokenizers.Tokenizer.from_file and transformers.AutoTokenizer
  ids_special     transformers.AutoTokenizer(...).encode(text) (add_bos_token / add_eos_token
                  as LlamaTokenizerFast applies them)
  ids_json_special tokenizers.Tokenizer.from_file(...).encode(text, True): the tokenizer.json
                  post-processor alone (what a directory without tokenizer_config.json gives)
  decode          decode(ids_special, skip_special_tokens=False)
  decode_skip     decode(ids_special, skip_special_tokens=True)
  partial_ids / partial_decode   ids[:-1] and its decode (U+FFFD where a character is cut)
For the sentencepiece model ids come from transformers' slow LlamaTokenizer and decodes from
the sentencepiece Python package.

With `--fuzz N --bin BUILD/bin/dsmath` it writes nothing and instead compares the C++
`dsmath tokenize` / `dsmath detokenize` with the oracle on N random strings and id lists per
tokenizer (and per variant), printing every mismatch.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import sentencepiece
import tokenizers
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "tokenizers")

if tokenizers.__version__ != "0.19.1" or transformers.__version__ != "4.40.2":
    sys.exit(f"need tokenizers 0.19.1 and transformers 4.40.2, have "
             f"{tokenizers.__version__} and {transformers.__version__}")
if not sentencepiece.__version__.startswith("0.2."):
    sys.exit(f"need sentencepiece 0.2.x, have {sentencepiece.__version__}")

HF_TOKENIZERS = ["deepseek_v3", "llama2", "deepseek_llm_style", "deepseek_math_like",
                 "subword_bpe"]
SP_DIR = "sentencepiece_bpe"

BASE_CASES = [
    # empty and whitespace runs
    "", " ", "  ", "   leading", "trailing   ", "a  b   c    d", "\t", "\ttab\tseparated\t",
    "\n", "\n\n\n", "line1\nline2", "line1\r\nline2\r\n", "\r", "mixed \t \n \r\n end",
    "x \n y", "word\n\n\nword", "   \n   ", "end with newline\n", "  \t  \n\t\t", "\u00a0nbsp\u00a0",
    "ideographic\u3000space", "thin\u2009space", "zero\u200bwidth",
    "mongolian\u180evowel separator", "x \u180e y", "\u0085next line", "form\x0cfeed\x0bvtab",
    # math and LaTeX
    "What is 2+2?", "The integral of x^2 from 0 to 2 is 8/3.",
    "Let $f(x) = 3x^2 - 5x + 2$. Find $f'(1)$.",
    "\\frac{a}{b} + \\sqrt{x^2+y^2} = \\boxed{42}",
    "$$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$",
    "\\begin{align} a &= b \\\\ c &= d \\end{align}",
    "\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}",
    "If $x \\geq 0$ and $y \\leq 1$, then $x \\cdot y \\in [0, \\infty)$.",
    "3.14159265358979323846", "1,000,000 and 1.5e-10 and -42", "12345678901234567890",
    "0.000001", "x_1, x_2, \\ldots, x_n", "a^{b^{c}}", "\\mathbb{R}^n \\to \\mathbb{R}",
    "∀ε>0 ∃δ>0: |x−a|<δ ⇒ |f(x)−f(a)|<ε", "∑∏∫∂∇√∞≈≠≤≥±×÷", "α β γ δ θ λ μ π σ φ ω Ω",
    "The answer is \\boxed{\\frac{1}{2}}.", "2x + 3 = 7 \\implies x = 2",
    "Solve: x² − 5x + 6 = 0", "(a+b)^2 = a^2 + 2ab + b^2",
    "what is the integral of x^2 from 0 to 2?\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "User: What is 7*8?\n\nAssistant:",
    # Unicode digits
    "٠١٢٣٤٥٦٧٨٩", "۱۲۳ Persian digits", "१२३ Devanagari", "x² + y³ = z⁴", "H₂O and CO₂",
    "½ + ¼ = ¾", "⅓ ⅔ ⅕ ⅞", "Chapter Ⅻ and Ⅳ", "ⅰⅱⅲ roman small", "①②③ circled",
    "１２３ full-width digits", "𝟙𝟚𝟛 math digits", "五十六 and 56", "〇一二三",
    # CJK and other scripts
    "你好，世界！", "请通过逐步推理来解答问题，并把最终答案放置于\\boxed{}中。",
    "求函数 f(x)=x^2 的导数。", "日本語のテキストです。カタカナとひらがな。", "한국어 텍스트입니다",
    "Привет, мир! Математика.", "Ελληνικά: α + β = γ", "مرحبا بالعالم", "שלום עולם",
    "ภาษาไทย", "Tiếng Việt có dấu", "中文English混合123",
    # emoji and combining characters
    "😀", "Hello 👋🏽 world 🌍!", "👨‍👩‍👧‍👦 family", "🇫🇷🇯🇵 flags", "❤️ heart",
    "e\u0301 combining acute", "cafe\u0301 vs café", "n\u0303 and ñ", "a\u0308\u0304 stacked",
    "ﬁ ligature ﬂ", "Å Ω K (compat chars)", "\u212b angstrom sign",
    # code
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "if x == 1:\n\tprint('tab indented')", "import numpy as np\nnp.array([1, 2, 3])",
    "#include <stdio.h>\nint main() { printf(\"%d\\n\", 42); }",
    "    four spaces\n        eight spaces", "fn main() -> Result<(), Box<dyn Error>> {}",
    "SELECT * FROM t WHERE id = 1;", "<div class=\"x\">&amp;</div>", "https://example.com/a?b=c&d=e",
    "camelCaseIdentifier snake_case_identifier", "'s 't 're 've 'm 'll 'd", "I'm sure it's",
    "DON'T SHOUT", "!!!???...", "----====____", "a.b.c.d", "(((nested)))", "{\"key\": [1, 2]}",
    # special-token text embedded in text
    "<s>", "</s>", "<unk>", "<s>hello</s>", "a <s> b", "text</s>more",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "x<｜end▁of▁sentence｜>y",
    "<｜begin▁of▁sentence｜>User: hi\n\nAssistant:", "  <｜end▁of▁sentence｜>  ",
    "<｜begin▁of▁sentence｜><｜begin▁of▁sentence｜>", "<|endoftext|>", "<｜User｜>question<｜Assistant｜>",
    "▁already▁has▁metaspace", "ĠĊ byte-level chars", "<0x41> looks like a byte token",
    # long-ish
    "The quick brown fox jumps over the lazy dog. " * 3,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
]


def shared_cases():
    texts = []
    for name in ("deepseek_v3", "deepseek_llm_style"):
        path = os.path.join(DATA, name, "cases.jsonl")
        with open(path, encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    return texts


def all_cases():
    seen, out = set(), []
    for t in BASE_CASES + shared_cases():
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} cases to {os.path.relpath(path, ROOT)}")


def hf_goldens(name, texts):
    d = os.path.join(DATA, name)
    raw = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    if os.path.exists(os.path.join(d, "tokenizer_config.json")):
        auto = transformers.AutoTokenizer.from_pretrained(d)
    else:
        auto = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))
    rows = []
    for text in texts:
        ids = raw.encode(text, add_special_tokens=False).ids
        auto_ids = auto.encode(text, add_special_tokens=False)
        if ids != auto_ids:
            sys.exit(f"{name}: tokenizers and transformers disagree on {text!r}")
        special = auto.encode(text)
        row = {
            "text": text,
            "ids": ids,
            "ids_special": special,
            "ids_json_special": raw.encode(text, add_special_tokens=True).ids,
            "decode": raw.decode(special, skip_special_tokens=False),
            "decode_skip": raw.decode(special, skip_special_tokens=True),
        }
        if len(ids) > 1:
            row["partial_ids"] = ids[:-1]
            row["partial_decode"] = raw.decode(ids[:-1], skip_special_tokens=False)
        rows.append(row)
    return rows


def ensure_subword_bpe():
    """A small BPE trained by `tokenizers` itself on the sentencepiece corpus, for what the
    real checkpoints do not use: continuing_subword_prefix, end_of_word_suffix, fused unk
    without byte fallback, Lowercase, BertProcessing and the BPEDecoder."""
    path = os.path.join(DATA, "subword_bpe", "tokenizer.json")
    if os.path.exists(path):
        return
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##",
                                          end_of_word_suffix="</w>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Whitespace()])
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=600, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False,
        continuing_subword_prefix="##", end_of_word_suffix="</w>")
    tok.train([os.path.join(DATA, SP_DIR, "corpus.txt")], trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tok.save(path)


def ensure_sp_model():
    d = os.path.join(DATA, SP_DIR)
    model = os.path.join(d, "tokenizer.model")
    if not os.path.exists(model):
        subprocess.run(["spm_train", *spm_train_args(os.path.join(d, "corpus.txt"),
                                                     os.path.join(d, "tokenizer"))], check=True)
        os.remove(os.path.join(d, "tokenizer.vocab"))
    return model


def spm_train_args(corpus, prefix):
    # Llama-like: BPE, byte fallback, digits split, no normalization, whitespace kept.
    # The C++ test (tests/unit/tokenizer) trains with the same arguments.
    return [f"--input={corpus}", f"--model_prefix={prefix}", "--vocab_size=800",
            "--model_type=bpe", "--byte_fallback=true", "--character_coverage=1.0",
            "--split_digits=true", "--normalization_rule_name=identity",
            "--remove_extra_whitespaces=false", "--add_dummy_prefix=true",
            "--allow_whitespace_only_pieces=true", "--num_threads=1", "--minloglevel=2"]


def sp_goldens(texts):
    model = ensure_sp_model()
    slow = transformers.LlamaTokenizer(vocab_file=model, legacy=True)
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    rows = []
    for text in texts:
        ids = slow.encode(text, add_special_tokens=False)
        special = slow.encode(text)
        skip = [i for i in special if not (sp.is_control(i) or sp.is_unknown(i))]
        row = {"text": text, "ids": ids, "ids_special": special,
               "decode_skip": sp.decode(skip)}
        if len(ids) > 1:
            row["partial_ids"] = [i for i in ids[:-1] if not sp.is_control(i)]
            row["partial_decode"] = sp.decode(row["partial_ids"])
        rows.append(row)
    return rows


CHATS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "what is the integral of x^2 from 0 to 2?\nPlease reason step by step, "
                                 "and put your final answer within \\boxed{}."}],
    [{"role": "system", "content": "You are a careful mathematician."},
     {"role": "user", "content": "Solve x^2 = 4."}],
    [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
     {"role": "user", "content": "求函数 f(x)=x^2 的导数。"}],
    [{"role": "user", "content": ""}],
]


def chat_goldens():
    auto = transformers.AutoTokenizer.from_pretrained(os.path.join(DATA, "deepseek_math_like"))
    rows = []
    for messages in CHATS:
        for prompt in (True, False):
            text = auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            ids = auto.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt)
            rows.append({"messages": messages, "add_generation_prompt": prompt, "text": text,
                         "ids": ids})
    return rows


# Variants of the shipped tokenizers that exercise the rest of tokenizer.json: "replace" sets
# top-level keys, "model" sets keys of "model", "config" is a tokenizer_config.json (or None).
META = "\u2581"
VARIANTS = {
    "metaspace_first_nfkc": {
        "base": "llama2",
        "replace": {
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}]},
            "pre_tokenizer": {"type": "Metaspace", "replacement": META, "prepend_scheme": "first",
                              "split": True},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Metaspace", "replacement": META, "prepend_scheme": "first", "split": True},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "added_tokens": "BASE+",
        },
        "extra_added": [
            {"id": 32000, "content": "<tool>", "single_word": False, "lstrip": True, "rstrip": True,
             "normalized": False, "special": False},
            {"id": 32001, "content": "[MASK]", "single_word": True, "lstrip": False, "rstrip": False,
             "normalized": True, "special": True},
            {"id": 32002, "content": "\ufb01x", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": True, "special": False},
        ],
        "model": {},
        "config": None,
    },
    "metaspace_always_nosplit": {
        "base": "llama2",
        "replace": {
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFD"}, {"type": "Lowercase"},
                {"type": "Strip", "strip_left": True, "strip_right": True},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
            "pre_tokenizer": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always",
                              "split": False},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": META}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        },
        "model": {"byte_fallback": False, "fuse_unk": False},
        "config": None,
    },
    "unk_fused": {
        "base": "llama2",
        "replace": {},
        "model": {"byte_fallback": False, "fuse_unk": True},
        "config": None,
    },
    "bytelevel_gpt2_template": {
        "base": "deepseek_v3",
        "replace": {
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "<\uff5cend\u2581of\u2581sentence\uff5c>", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {
                    "<\uff5cbegin\u2581of\u2581sentence\uff5c>": {"id": "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "ids": [0], "tokens": ["<\uff5cbegin\u2581of\u2581sentence\uff5c>"]},
                    "<\uff5cend\u2581of\u2581sentence\uff5c>": {"id": "<\uff5cend\u2581of\u2581sentence\uff5c>", "ids": [1], "tokens": ["<\uff5cend\u2581of\u2581sentence\uff5c>"]}}},
        },
        "model": {"ignore_merges": True},
        "config": None,
    },
    "split_behaviors": {
        "base": "deepseek_v3",
        "replace": {
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
                {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Contiguous", "invert": False},
                {"type": "Split", "pattern": {"Regex": "[aeiou]"}, "behavior": "MergedWithNext", "invert": False},
                {"type": "Split", "pattern": {"Regex": "[,;]"}, "behavior": "Removed", "invert": False},
                {"type": "Split", "pattern": {"Regex": "[A-Z]+"}, "behavior": "Isolated", "invert": True},
                {"type": "Split", "pattern": {"Regex": "q*"}, "behavior": "Isolated", "invert": False},
                {"type": "Split", "pattern": {"Regex": "^\\s+|\\s+$"}, "behavior": "Isolated", "invert": False},
                {"type": "Digits", "individual_digits": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": {"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
                {"type": "RobertaProcessing", "sep": ["<\uff5cend\u2581of\u2581sentence\uff5c>", 1],
                 "cls": ["<\uff5cbegin\u2581of\u2581sentence\uff5c>", 0], "trim_offsets": False,
                 "add_prefix_space": False}]},
        },
        "model": {},
        "config": None,
    },
    "whitespace_nfkd": {
        "base": "deepseek_v3",
        "replace": {
            "normalizer": {"type": "NFKD"},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "WhitespaceSplit"}, {"type": "Whitespace"},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        },
        "model": {},
        "config": None,
    },
    "llama_add_eos": {
        "base": "llama2",
        "replace": {},
        "model": {},
        "config": {"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": False,
                   "add_eos_token": True, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "legacy": True, "clean_up_tokenization_spaces": False},
    },
}

VARIANT_EXTRA_CASES = [
    "<tool>", "a <tool> b", "  <tool>  x", "x<tool>y", "<tool>start", "[MASK]", "a [MASK] b",
    "a[MASK]b", "word [MASK]", "\ufb01x and fix", "UPPER lower MiXeD", "a,b;c,,d", "qqq q aqqb",
    "12 345 6789", "  two  spaces  ", "\u00bd\u2167 \u2460", "HELLO, World; 123!",
]


def variant_goldens(name, spec, texts):
    with open(os.path.join(DATA, spec["base"], "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    replace = copy.deepcopy(spec["replace"])
    if replace.get("added_tokens") == "BASE+":
        replace["added_tokens"] = j["added_tokens"] + spec["extra_added"]
    j.update(replace)
    j["model"].update(spec["model"])
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
        raw = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        auto = None
        if spec["config"] is not None:
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(spec["config"], f)
            auto = transformers.AutoTokenizer.from_pretrained(d)
        cases = []
        for text in texts:
            ids = raw.encode(text, add_special_tokens=False).ids
            if auto is not None and auto.encode(text, add_special_tokens=False) != ids:
                sys.exit(f"{name}: tokenizers and transformers disagree on {text!r}")
            special = auto.encode(text) if auto is not None else raw.encode(text).ids
            cases.append({"text": text, "ids": ids, "ids_special": special,
                          "decode": raw.decode(special, skip_special_tokens=False),
                          "decode_skip": raw.decode(special, skip_special_tokens=True)})
    out = {"base": spec["base"], "replace": replace, "model": spec["model"],
           "config": spec["config"], "cases": cases}
    os.makedirs(os.path.join(DATA, "variants"), exist_ok=True)
    path = os.path.join(DATA, "variants", name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.relpath(path, ROOT)}")


FUZZ_POOL = list("abcXYZ019 ,.;:!?'\"()[]{}\\$^_-+=*/<>|~`@#%&") + [
    "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u0085", "\u180e", "\u2009", "\u200b", "\u3000",
    "\u2028", "\u000b", "\u0301", "\u0308", "\u00e9", "\u00df", "\u0130", "\ufb01", "\u00bd",
    "\u00b2", "\u2083", "\u216b", "\u0663", "\u06f4", "\u0967", "\u3007", "\u4e94", "\u4e2d\u6587",
    "\u30ab\u30bf", "\ud55c\uae00", "\U0001f600", "\U0001f44b\U0001f3fd", "\u200d", "\U0001d7d9",
    "\u03a9", "\u00b5", "\u01c5", "'s", "'ll", "<s>", "</s>", "<unk>",
    "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>", META,
    "\u0120", "<0x41>", "\\frac", "\\boxed{}", "x^2", "12345", "3.14", "\u2211", "\u2212", "\u3002",
    "<tool>", "[MASK]", "\u0000", "\ufeff", "\ufffd"]


def run_cli(binary, args, lines):
    proc = subprocess.run([binary, *args], input="".join(json.dumps(x) + "\n" for x in lines).encode(),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"dsmath {' '.join(args)} failed: {proc.stderr.decode()}")
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def fuzz(n, binary):
    import random
    rng = random.Random(n)
    texts = ["".join(rng.choice(FUZZ_POOL) for _ in range(rng.randint(0, 25))) for _ in range(n)]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [(name, os.path.join(DATA, name)) for name in HF_TOKENIZERS]
        for name, spec in VARIANTS.items():
            with open(os.path.join(DATA, "variants", name + ".json"), encoding="utf-8") as f:
                v = json.load(f)
            with open(os.path.join(DATA, v["base"], "tokenizer.json"), encoding="utf-8") as f:
                j = json.load(f)
            j.update(v["replace"])
            j["model"].update(v["model"])
            d = os.path.join(tmp, name)
            os.makedirs(d)
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(j, f)
            if v["config"] is not None:
                with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                    json.dump(v["config"], f)
            dirs.append((name, d))
        for name, d in dirs:
            raw = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            has_config = os.path.exists(os.path.join(d, "tokenizer_config.json"))
            auto = transformers.AutoTokenizer.from_pretrained(d) if has_config else None
            plain = run_cli(binary, ["tokenize", "--model", d, "--no-special-tokens"], texts)
            special = run_cli(binary, ["tokenize", "--model", d], texts)
            id_lists = [[rng.randrange(raw.get_vocab_size(True)) for _ in range(rng.randint(0, 10))]
                        for _ in range(n)]
            decoded = run_cli(binary, ["detokenize", "--model", d], id_lists)
            bad = 0
            for text, got, got_special in zip(texts, plain, special):
                want_special = auto.encode(text) if auto else raw.encode(text).ids
                if got != raw.encode(text, add_special_tokens=False).ids or got_special != want_special:
                    bad += 1
                    print(f"{name}: encode differs on {text!r}")
            for ids, got in zip(id_lists, decoded):
                if got != raw.decode(ids, skip_special_tokens=False):
                    bad += 1
                    print(f"{name}: decode differs on {ids}")
            print(f"{name}: {bad} mismatches in {3 * n} checks")
            failures += bad
    model = os.path.join(DATA, SP_DIR, "tokenizer.model")
    slow = transformers.LlamaTokenizer(vocab_file=model, legacy=True)
    got = run_cli(binary, ["tokenize", "--model", os.path.join(DATA, SP_DIR)], texts)
    bad = sum(1 for text, ids in zip(texts, got) if ids != slow.encode(text))
    print(f"{SP_DIR}: {bad} mismatches in {n} checks")
    return failures + bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuzz", type=int, default=0, help="compare N random cases instead")
    parser.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "dsmath"))
    args = parser.parse_args()
    if args.fuzz:
        sys.exit(1 if fuzz(args.fuzz, args.bin) else 0)
    texts = all_cases()
    for name, spec in VARIANTS.items():
        variant_goldens(name, spec, texts + VARIANT_EXTRA_CASES)
    write_jsonl(os.path.join(DATA, "deepseek_math_like", "chat_golden.jsonl"), chat_goldens())
    ensure_subword_bpe()
    for name in HF_TOKENIZERS:
        write_jsonl(os.path.join(DATA, name, "golden.jsonl"), hf_goldens(name, texts))
    write_jsonl(os.path.join(DATA, SP_DIR, "golden.jsonl"), sp_goldens(texts))
    # The shared cases.jsonl came from a JavaScript port; report where the real library differs.
    for name in ("deepseek_v3", "deepseek_llm_style"):
        raw = tokenizers.Tokenizer.from_file(os.path.join(DATA, name, "tokenizer.json"))
        with open(os.path.join(DATA, name, "cases.jsonl"), encoding="utf-8") as f:
            for line in f:
                case = json.loads(line)
                real = raw.encode(case["text"], add_special_tokens=False).ids
                if real != case["ids"]:
                    print(f"{name}: cases.jsonl differs from tokenizers on {case['text']!r}")


if __name__ == "__main__":
    main()
