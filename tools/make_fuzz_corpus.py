#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/seed-* and bad-*).

Seeds are small valid inputs and a few broken ones, made from tests/data or generated here
(only the standard library: the safetensors, pickle, zip and protobuf bytes are written by
hand). Files named crash-* / regress-* are inputs that once failed; this script never touches
them. Run from anywhere: python3 tools/make_fuzz_corpus.py
"""

import io
import json
import os
import struct
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors ----------------------------------------------------------------------------

def safetensors(tensors, metadata=None, header_override=None):
    """tensors: [(name, dtype, shape, bytes)] laid out in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = header_override if header_override is not None else json.dumps(header)
    text = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(text)) + text + data


def make_safetensors():
    t = [("model.embed_tokens.weight", "BF16", [4, 3], bytes(range(24))),
         ("model.norm.weight", "F32", [3], struct.pack("<3f", 1, 2, 3)),
         ("lm_head.weight", "F16", [2, 2], b"\x00\x3c" * 4)]
    write("safetensors", "seed-three-dtypes", safetensors(t, {"format": "pt"}))
    write("safetensors", "seed-empty-header", safetensors([]))
    write("safetensors", "seed-zero-sized", safetensors([("a", "F32", [0, 5], b""),
                                                         ("b", "F32", [], b"\x00\x00\x80\x3f")]))
    # The real header of tests/data/models/arith (its data cut off): truncated, but every
    # tensor name and shape of a LlamaForCausalLM.
    with open(os.path.join(DATA, "models", "arith", "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        write("safetensors", "bad-arith-header-only", struct.pack("<Q", n) + f.read(n))
    write("safetensors", "bad-overlap", safetensors(
        [], header_override='{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                            '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}') + bytes(8))
    write("safetensors", "bad-dtype", safetensors([("x", "I64", [1], bytes(8))]))
    write("safetensors", "bad-shape-mismatch", safetensors(
        [], header_override='{"x":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,4]}}') + bytes(4))
    write("safetensors", "bad-huge-length", struct.pack("<Q", 1 << 62) + b"{}")
    write("safetensors", "bad-short", b"\x02\x00\x00")


# ---- pickle (data.pkl) and .bin zips ---------------------------------------------------------

def put_str(s):
    s = s.encode()
    return b"X" + struct.pack("<I", len(s)) + s


def put_int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    return b"\x8a\x08" + struct.pack("<q", v)


def put_tuple(xs):
    return b"(" + b"".join(put_int(x) for x in xs) + b"t"


STORAGE = {"BF16": b"ctorch\nBFloat16Storage\n", "F16": b"ctorch\nHalfStorage\n",
           "F32": b"ctorch\nFloatStorage\n"}


def pickle_state_dict(tensors):
    """What common/checkpoint/pickle.cpp's pickle_state_dict writes:
    tensors = [(name, dtype, key, numel, offset, shape, stride)]."""
    out = b"\x80\x02}("
    for name, dtype, key, numel, offset, shape, stride in tensors:
        out += put_str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(("
        out += put_str("storage") + STORAGE[dtype] + put_str(key) + put_str("cpu") + put_int(numel)
        out += b"tQ" + put_int(offset) + put_tuple(shape) + put_tuple(stride)
        out += b"\x89ccollections\nOrderedDict\n)RtR"
    return out + b"u."


def torch_style_pickle():
    """Protocol 2 as torch.save writes it: memo puts/gets, an OrderedDict, BUILD of _metadata,
    a _rebuild_parameter, a storage shared by two tensors (tied weights)."""
    p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01("
    p += b"X\x05\x00\x00\x00embedq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04"
    p += b"ctorch\nBFloat16Storage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x0ctq\x08QK\x00K\x04K\x03\x86q\tK\x03K\x01\x86q\n"
    p += b"\x89h\x00)Rq\x0btq\x0cRq\rX\x07\x00\x00\x00lm_headq\x0eh\x03((h\x04h\x05h\x06h\x07K\x0ctq\x0fQK\x00K\x04K\x03\x86K\x03K\x01\x86\x89h\x00)RtRq\x10"
    p += b"X\x04\x00\x00\x00normq\x11ctorch._utils\n_rebuild_parameter\n"
    p += b"h\x03((h\x04ctorch\nFloatStorage\nX\x01\x00\x00\x001h\x07K\x03tQK\x00K\x03\x85K\x01\x85\x89h\x00)RtR\x88h\x00)R\x87R"
    p += b"u}X\t\x00\x00\x00_metadataq\x12h\x00)Rsb."
    return p


def protocol4_pickle():
    """Protocol 4 opcodes other writers use: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE."""
    def sbu(s):
        s = s.encode()
        return b"\x8c" + bytes([len(s)]) + s + b"\x94"
    body = b"}\x94(" + sbu("w") + sbu("torch._utils") + sbu("_rebuild_tensor_v2") + b"\x93\x94"
    body += b"((" + sbu("storage") + sbu("torch") + sbu("HalfStorage") + b"\x93\x94" + sbu("k")
    body += sbu("cpu") + b"K\x04t\x94QK\x00K\x02K\x02\x86\x94K\x02K\x01\x86\x94\x89"
    body += sbu("collections") + sbu("OrderedDict") + b"\x93\x94)R\x94t\x94R\x94u."
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body


def make_pickle():
    dict3 = [("embed", "BF16", "0", 12, 0, [4, 3], [3, 1]),
             ("norm", "F32", "1", 3, 0, [3], [1]),
             ("lm_head", "F16", "2", 10, 2, [2, 4], [4, 1])]
    write("pickle", "seed-writer", pickle_state_dict(dict3))
    write("pickle", "seed-writer-empty", pickle_state_dict([]))
    write("pickle", "seed-writer-long1", pickle_state_dict(
        [("big", "F32", "0", 2**40, 2**33, [2**20, 2**7], [2**7, 1])]))
    write("pickle", "seed-torch-protocol2", torch_style_pickle())
    write("pickle", "seed-protocol4", protocol4_pickle())
    write("pickle", "bad-os-system", b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.")
    write("pickle", "bad-truncated", pickle_state_dict(dict3)[:50])
    write("pickle", "bad-odd-setitems", b"\x80\x02}(K\x01u.")
    write("pickle", "bad-not-a-dict", b"\x80\x02]K\x01a.")


def torch_zip(pkl, storages, archive="pytorch_model", compress=False, zip64=False):
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        entries = [(f"{archive}/data.pkl", pkl)] + \
                  [(f"{archive}/data/{k}", v) for k, v in storages] + [(f"{archive}/version", b"3\n")]
        for name, data in entries:
            with z.open(zipfile.ZipInfo(name), "w", force_zip64=zip64) as f:
                f.write(data)
    return buf.getvalue()


def make_torch_bin():
    tensors = [("embed", "BF16", "0", 12, 0, [4, 3], [3, 1]),
               ("norm", "F32", "1", 3, 0, [3], [1]),
               ("tied", "BF16", "0", 12, 6, [2, 3], [3, 1])]
    storages = [("0", bytes(range(24))), ("1", struct.pack("<3f", 1, 2, 3))]
    pkl = pickle_state_dict(tensors)
    write("torch_bin", "seed-stored", torch_zip(pkl, storages))
    write("torch_bin", "seed-zip64", torch_zip(pkl, storages, zip64=True))
    write("torch_bin", "seed-other-archive-name", torch_zip(pickle_state_dict(tensors[:1]),
                                                            storages[:1], archive="archive"))
    write("torch_bin", "bad-deflated", torch_zip(pkl, storages, compress=True))
    write("torch_bin", "bad-missing-storage", torch_zip(pkl, storages[:1]))
    write("torch_bin", "bad-truncated", torch_zip(pkl, storages)[:-30])
    write("torch_bin", "bad-legacy", b"\x80\x02" + pkl[2:])


# ---- tokenizer.json ----------------------------------------------------------------------------

def tiny(base, keep=300):
    """tests/data/tokenizers/<base>/tokenizer.json with only the ids below `keep` and the merges
    among them: every component as in the original, a few KB."""
    with open(os.path.join(DATA, "tokenizers", base, "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    model = j["model"]
    vocab = {t: i for t, i in model["vocab"].items() if i < keep}
    merges = []
    for m in model.get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    model["vocab"], model["merges"] = vocab, merges
    j["added_tokens"] = j.get("added_tokens", [])[:8]  # deepseek_v3 has 818
    return j


def dumps(j):
    return json.dumps(j, ensure_ascii=False, separators=(",", ":"))


def make_tokenizer_json():
    with open(os.path.join(DATA, "tokenizers", "deepseek_math_like", "tokenizer_config.json"),
              encoding="utf-8") as f:
        ds_config = json.load(f)
    ds_config.pop("chat_template", None)
    bases = {"deepseek_math_like": tiny("deepseek_math_like"), "llama2": tiny("llama2"),
             "deepseek_v3": tiny("deepseek_v3"), "deepseek_llm_style": tiny("deepseek_llm_style")}
    for name, j in bases.items():
        write("tokenizer_json", f"seed-tiny-{name}", dumps(j))
    write("tokenizer_json", "seed-tiny-deepseek_math_like-with-config",
          dumps(bases["deepseek_math_like"]) + "\0" + dumps(ds_config))
    with open(os.path.join(DATA, "tokenizers", "subword_bpe", "tokenizer.json"), "rb") as f:
        write("tokenizer_json", "seed-subword_bpe", f.read())
    # The feature variants of tests/unit/tokenizer (features_test.cpp) on tiny bases.
    vdir = os.path.join(DATA, "tokenizers", "variants")
    for v in sorted(os.listdir(vdir)):
        with open(os.path.join(vdir, v), encoding="utf-8") as f:
            variant = json.load(f)
        j = json.loads(dumps(bases.get(variant["base"]) or tiny(variant["base"])))
        j.update(variant["replace"])
        j["model"].update(variant["model"])
        text = dumps(j)
        if variant.get("config") is not None:
            text += "\0" + dumps(variant["config"])
        write("tokenizer_json", "seed-variant-" + v[:-len(".json")], text)
    write("tokenizer_json", "bad-empty-object", "{}")
    write("tokenizer_json", "bad-model-type", '{"model": {"type": "Unigram", "vocab": []}}')
    write("tokenizer_json", "bad-truncated", dumps(bases["llama2"])[:2000])
    j = json.loads(dumps(bases["deepseek_math_like"]))
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": "(unclosed"}
    write("tokenizer_json", "bad-regex", dumps(j))


# ---- encode / decode ---------------------------------------------------------------------------

def make_tokenizer_codec():
    texts = {
        "ascii": "The answer is 42.",
        "math": "Let $f(x) = 3x^2 - 5x + 2$. Then $f'(x) = 6x - 5$, so \\boxed{\\frac{1}{2}}.\n\n",
        "digits": "12345678901234567890 0.000001 1,000,000",
        "cjk-emoji": "求导数 😀 한국어 日本語テキスト ü é",
        "whitespace": "  \t\n\r\n   x  \u00a0\u2009y\u3000",
        "special": "<｜begin▁of▁sentence｜>User: hi\n\nAssistant: ok<｜end▁of▁sentence｜>",
        "chat": "User: What is 2 + 3?\n\nAssistant: 2 + 3 = 5. The answer is 5.",
    }
    for name, text in texts.items():
        write("tokenizer_codec", f"seed-{name}", text)
    # Texts of the golden cases (HF's ids for them are in the file; the fuzzer needs the text).
    with open(os.path.join(DATA, "tokenizers", "deepseek_math_like", "golden.jsonl"),
              encoding="utf-8") as f:
        cases = [json.loads(line)["text"] for line in f if line.strip()]
    for i in range(0, len(cases), max(1, len(cases) // 12)):
        write("tokenizer_codec", f"seed-golden-{i}", cases[i])
    write("tokenizer_codec", "bad-invalid-utf8", b"ok \xc3\x28 \xff\xfe \xed\xa0\x80 \xf0\x9f\x98")
    write("tokenizer_codec", "bad-overlong", b"\xc0\xaf\xe0\x80\xaf")
    write("tokenizer_codec", "bad-truncated-emoji", "ok 😀".encode()[:-1])


# ---- batch job input ---------------------------------------------------------------------------

def make_job_input():
    with open(os.path.join(DATA, "models", "arith", "heldout.jsonl"), encoding="utf-8") as f:
        arith = [line for line in f.read().splitlines() if line.strip()][:4]
    write("job_input", "seed-native-arith", "\n".join(arith) + "\n")
    write("job_input", "seed-native-forms", "\n".join([
        json.dumps({"id": 7, "problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$."}),
        json.dumps({"question": "No id: the line number is the id.", "answer": "#### 1,000"}),
        json.dumps({"id": "m1", "messages": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "2+2?"}]}),
        "",
        "   ",
        json.dumps({"uid": "u1", "text": "custom fields", "target": "3"}),
        json.dumps({"id": "p", "prompt": "Prompt field", "answer": 12.5}),
    ]) + "\n")
    write("job_input", "seed-openai", "\n".join([
        json.dumps({"custom_id": "c1", "method": "POST", "url": "/v1/completions",
                    "body": {"model": "m", "prompt": "1+1=", "max_tokens": 16, "temperature": 0.5,
                             "top_p": 0.9, "n": 2, "seed": 7, "stop": ["\n"]}}),
        json.dumps({"custom_id": "c2", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": "2+2?"}], "stop": "END"}}),
        json.dumps({"custom_id": "c3", "url": "/v1/completions",
                    "body": {"prompt": "x", "stop": None}}),
    ]) + "\r\n")
    write("job_input", "bad-lines", "\n".join([
        "{not json",
        "[1, 2]",
        json.dumps({"id": "x"}),
        json.dumps({"custom_id": "", "body": {}}),
        json.dumps({"custom_id": "c", "method": "GET", "url": "/v1/completions", "body": {}}),
        json.dumps({"custom_id": "c", "url": "/v1/embeddings", "body": {"prompt": "x"}}),
        json.dumps({"custom_id": "c", "url": "/v1/completions", "body": {"prompt": "x",
                                                                           "max_tokens": "ten"}}),
        json.dumps({"custom_id": "c", "url": "/v1/chat/completions", "body": {"messages": []}}),
        json.dumps({"id": "y", "messages": [{"role": 1, "content": "x"}]}),
        '{"id": "bad-utf8", "question": "\xff"}',
    ]) + "\n")
    write("job_input", "bad-duplicate-id",
          json.dumps({"id": "a", "question": "q"}) + "\n" + json.dumps({"id": "a", "question": "r"}))


# ---- answers -----------------------------------------------------------------------------------

def make_answer():
    pairs = [
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5"),
        ("So the result is \\boxed{\\dfrac{3}{4}}.", "\\frac34"),
        ("\\boxed 5$ done", "#### 5"),
        ("\\fbox{(1, 2]}", "Solution: $\\boxed{(1,2]}$"),
        ("The answer is: $1,234.50$.", "1234.5"),
        ("Hence x = 7", "x=7"),
        ("I think 50\\% of them.", "0.5"),
        ("It costs 18 dollars", "\\$18"),
        ("The angle is 90^\\circ.", "90"),
        ("The answer is \\text{(B)}", "B"),
        ("1.5\\times10^{3}", "1500"),
        ("-.5", "-0.50"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("no number here", "abc"),
        ("\\boxed{\\frac{\\frac{1}{2}}{\\sqrt2}}", "\\frac{1}{2\\sqrt{2}}"),
        ("99999999999999999999999999", "99999999999999999999999998"),
        ("\\boxed{unbalanced", "{"),
        ("The answer is 5 cm.", "5"),
    ]
    for i, (out, ref) in enumerate(pairs):
        write("answer", f"seed-pair-{i:02d}", out + "\0" + ref)
    write("answer", "seed-same-text", "The answer is $2\\sqrt{2}$")


# ---- worker link messages ----------------------------------------------------------------------

def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(n, value):
    """value: int (varint), bytes/str (length-delimited), ('d', float) double, ('f', float)."""
    if isinstance(value, tuple):
        kind, x = value
        if kind == "d":
            return varint(n << 3 | 1) + struct.pack("<d", x)
        return varint(n << 3 | 5) + struct.pack("<f", x)
    if isinstance(value, int):
        return varint(n << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(n << 3 | 2) + varint(len(value)) + value


def packed(n, values):
    return field(n, b"".join(varint(v) for v in values))


def token_event(key, sample, token=None, logprob=-0.5, top=(), finish=0, error=""):
    m = field(1, key) + field(2, sample)
    if token is not None:
        m += field(3, 1) + field(4, token) + field(5, ("f", logprob))
        for t, lp in top:
            m += field(6, field(1, t) + field(2, ("f", lp)))
    if finish:
        m += field(7, finish) + field(8, error) + field(9, 3) + field(10, 1) + field(11, 2)
    return m


def make_link_codec():
    # deepseek_math_like ids: "The answer is 42." and two newlines (a stop string), "Done".
    with open(os.path.join(DATA, "tokenizers", "deepseek_math_like", "tokenizer.json"),
              encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    ids = [vocab[t] for t in ["The", "Ġanswer", "Ġis", "Ġ", "4", "2", ".", "ĊĊ", "Done"]]
    stats = field(1, 1) + field(2, 2) + field(6, 10) + field(7, 90) + field(13, 100)
    events = [token_event("q", s, t, top=[(t, -0.1), (ids[0], -2.0)]) for s in range(3)
              for t in ids[:4]]
    events += [token_event("q", 0, ids[6], finish=3), token_event("q2", 1, ids[4]),
               token_event("q2", 1, ids[5]), token_event("q2", 2, ids[7], finish=1),
               token_event("q3", 1, ids[8], finish=4)]
    step = field(2, b"".join(field(1, e) for e in events) + field(2, stats))
    write("link_codec", "seed-worker-events-streaming", b"\x03" + step)
    write("link_codec", "seed-worker-events-unary", b"\x01" + step)
    bad = field(2, field(1, token_event("q", 5, ids[0])))
    write("link_codec", "bad-worker-sample-index", b"\x03" + bad)
    write("link_codec", "bad-worker-token-id", b"\x01" + field(2, field(1, token_event(
        "q", 0, 200000))))
    write("link_codec", "seed-worker-refused", b"\x03" + field(2, field(1, token_event(
        "q", -1, finish=6, error="prompt too long"))))
    write("link_codec", "seed-worker-error", b"\x03" + field(2, field(1, token_event(
        "q", 1, ids[0], finish=6, error="NaN logits"))))
    write("link_codec", "seed-worker-heartbeat", b"\x01" + field(3, field(1, stats)))
    write("link_codec", "seed-worker-register", b"\x01" + field(1, field(1, 1) + field(
        2, "fingerprint") + field(3, 2) + field(4, 100) + field(5, 16) + field(6, 4096) + field(
        7, 256) + field(8, "host") + field(9, 1234) + field(10, 1)))
    sampling = (field(1, ("d", 0.7)) + field(2, 40) + field(3, ("d", 0.95)) + field(4, ("d", 0.05))
                + field(5, ("d", 1.1)) + field(6, ("d", 0.5)) + field(7, ("d", -0.5))
                + field(8, 12345) + field(9, 64) + field(10, 1) + packed(11, [100001, 13])
                + field(12, 1) + field(13, 5))
    item = (field(1, "req-1") + field(2, "problem-7") + packed(3, [100000] + ids[:4])
            + field(4, sampling) + field(5, 4) + field(6, 8))
    write("link_codec", "seed-coordinator-work", b"\x00" + field(2, field(1, item) + field(
        1, field(1, "req-2") + field(4, field(1, ("d", float("nan"))) + field(3, ("d", 2.0))))))
    write("link_codec", "seed-coordinator-cancel", b"\x00" + field(3, field(1, "req-1") + field(
        1, "req-2")))
    write("link_codec", "seed-coordinator-stop", b"\x00" + field(4, field(1, "req-1") + field(2, 2)))
    write("link_codec", "seed-coordinator-shutdown", b"\x00" + field(5, field(1, "bye")))
    write("link_codec", "seed-coordinator-registered", b"\x00" + field(1, field(1, "g1") + field(
        2, 1000)))
    write("link_codec", "bad-truncated", b"\x01" + step[:-7])


if __name__ == "__main__":
    make_safetensors()
    make_pickle()
    make_torch_bin()
    make_tokenizer_json()
    make_tokenizer_codec()
    make_job_input()
    make_answer()
    make_link_codec()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(CORPUS) for f in fs)
    print(f"{CORPUS}: {total} bytes")
