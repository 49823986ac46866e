#!/usr/bin/env python3
"""Seeds the git-ignored corpora in fuzz/corpus/ for every fuzz target.

- gguf_reader: every file of fixtures/malformed/, the metadata part of a few synthetic models
  (their first 16 KiB: header, vocabulary, tensor infos), and small valid files written here
  with every metadata value type, an array of arrays, and tensors of several types.
- tokenizer: the golden tokenizer inputs (fixtures/golden/real/*.tokenize.jsonl texts and
  fixtures/golden/inputs/*.txt lines), each behind a selector byte for each tokenizer.
- chat_template: a few conversations for each fixed template, and the real models' templates
  (read from fixtures/models/ when present) as message content (hostile Jinja-looking text).
- model_load: the unmutated model (empty patch list) and a few single patches.
"""
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus", "gguf_reader")


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def scalar(ty, v):
    fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
           10: "<Q", 11: "<q", 12: "<d"}
    return gstr(v) if ty == 8 else struct.pack(fmt[ty], v)


def array(elem, items):
    out = struct.pack("<IQ", elem, len(items))
    for it in items:
        out += array(*it) if elem == 9 else scalar(elem, it)
    return out


def gguf(kvs, tensors, align=32, version=3):
    """kvs: [(key, type, value)], value for arrays is (elem, items); tensors: [(name, ne, type, nbytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, ty, v in kvs:
        out += gstr(key) + struct.pack("<I", ty) + (array(*v) if ty == 9 else scalar(ty, v))
    offset, datas = 0, []
    for name, ne, ty, nbytes in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", ty, offset)
        datas.append(bytes((i * 7 + 3) % 256 for i in range(nbytes)))
        offset += (nbytes + align - 1) // align * align
    out += b"\0" * (-len(out) % align)
    for d in datas:
        out += d + b"\0" * (-len(d) % align)
    return out


def write_corpus(target, seeds):
    out = os.path.join(ROOT, "fuzz", "corpus", target)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"seeded {len(os.listdir(out))} files into {out}")


def tokenizer_texts():
    texts = []
    real = os.path.join(ROOT, "fixtures", "golden", "real")
    for f in sorted(os.listdir(real)):
        if f.endswith(".tokenize.jsonl"):
            with open(os.path.join(real, f), encoding="utf-8") as fh:
                texts += [json.loads(line)["text"] for line in fh if line.strip()]
    inputs = os.path.join(ROOT, "fixtures", "golden", "inputs")
    for f in sorted(os.listdir(inputs)):
        with open(os.path.join(inputs, f), encoding="utf-8") as fh:
            texts += [line.rstrip("\n") for line in fh][:40]
    texts += ["<|im_start|>user\nhi<|im_end|>", "<start_of_turn>user\nhi<end_of_turn>", "<s></s>"]
    return list(dict.fromkeys(t for t in texts if len(t.encode()) < 4000))


def read_gguf_string(path, key):
    """The string value of `key` in the GGUF file at `path` (metadata only), or None."""
    with open(path, "rb") as f:
        magic, _version, _n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def rd_str():
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n)

        def skip(ty):
            if ty == 8:
                rd_str()
            elif ty == 9:
                elem, n = struct.unpack("<IQ", f.read(12))
                if elem in sizes:
                    f.seek(sizes[elem] * n, 1)
                else:
                    for _ in range(n):
                        skip(elem)
            else:
                f.seek(sizes[ty], 1)

        for _ in range(n_kv):
            k = rd_str().decode()
            (ty,) = struct.unpack("<I", f.read(4))
            if k == key and ty == 8:
                return rd_str().decode()
            skip(ty)
    return None


def seed_tokenizer():
    seeds = {}
    for i, t in enumerate(tokenizer_texts()):
        for sel in (0, 1, 2, 0x10, 0x11, 0x12):
            if (i + sel) % 3 == 0 or sel < 3:
                seeds[f"text-{i:03}-{sel:02x}"] = bytes([sel]) + t.encode()
    write_corpus("tokenizer", seeds)


def seed_chat_template():
    convo = [("system", "You are helpful."), ("user", "Hi {{ 1 + 1 }} <|im_end|>"),
             ("assistant", "Hello!"), ("user", "Und jetzt? 日本語 \U0001F600")]
    body = "\0".join(x for m in convo for x in m).encode()
    seeds = {}
    for sel in range(10):
        seeds[f"fixed-{sel}"] = bytes([sel, 1]) + body
        seeds[f"fixed-{sel}-one"] = bytes([sel, 0]) + b"user\0hello"
    models = os.path.join(ROOT, "fixtures", "models")
    if os.path.isdir(models):
        for m in sorted(os.listdir(models)):
            src = read_gguf_string(os.path.join(models, m), "tokenizer.chat_template")
            if src:
                seeds[f"jinja-content-{m}"] = bytes([len(seeds) % 10, 1]) + b"user\0" + src.encode() + b"\0" + body
    seeds["jinja-content-small"] = b"\x05\x01user\0{% for m in messages %}{{ m.role }}{% endfor %}\0" + body
    write_corpus("chat_template", seeds)


def seed_model_load():
    seeds = {"unmutated": b""}
    # kind, offset (u32 LE), len, bytes: overwrite in the header, truncate, delete, insert.
    seeds["overwrite-header"] = bytes([1]) + struct.pack("<I", 40) + bytes([4]) + b"\xff" * 4
    seeds["truncate"] = bytes([4]) + struct.pack("<I", 300000) + bytes([0])
    seeds["delete-header"] = bytes([7]) + struct.pack("<I", 100) + bytes([8])
    seeds["insert-header"] = bytes([3]) + struct.pack("<I", 64) + bytes([3]) + b"abc"
    seeds["overwrite-data"] = bytes([0]) + struct.pack("<I", 400000) + bytes([8]) + b"\x7f" * 8
    write_corpus("model_load", seeds)


def main():
    seed_tokenizer()
    seed_chat_template()
    seed_model_load()
    os.makedirs(OUT, exist_ok=True)
    mal = os.path.join(ROOT, "fixtures", "malformed")
    for f in sorted(os.listdir(mal)):
        shutil.copy(os.path.join(mal, f), os.path.join(OUT, "malformed-" + f))
    syn = os.path.join(ROOT, "fixtures", "golden", "synthetic", "models")
    for m in ["llama-q4_0.gguf", "gemma3-q4_k_m.gguf", "qwen3moe-q4_k_m.gguf"]:
        with open(os.path.join(syn, m), "rb") as f:
            head = f.read(16384)
        with open(os.path.join(OUT, "head-" + m), "wb") as f:
            f.write(head)
    every_type = [
        ("general.architecture", 8, "llama"), ("u8", 0, 200), ("i8", 1, -5), ("u16", 2, 60000),
        ("i16", 3, -300), ("llama.block_count", 4, 2), ("i32", 5, -7),
        ("llama.rope.freq_base", 6, 10000.0), ("b", 7, 1), ("u64", 10, 1 << 40),
        ("i64", 11, -(1 << 40)), ("f64", 12, 0.5),
        ("tokenizer.ggml.tokens", 9, (8, ["a", "b", "<s>"])),
        ("tokenizer.ggml.scores", 9, (6, [0.0, -1.0, -2.0])),
        ("nested", 9, (9, [(4, [1, 2]), (8, ["x"]), (9, [(0, [1])])])),
    ]
    seeds = {
        "valid-every-type.gguf": gguf(every_type, [("a", [8], 0, 32), ("b", [32, 2], 8, 68)]),
        "valid-align64-v2.gguf": gguf([("general.alignment", 4, 64)] + every_type[:3],
                                      [("q", [256], 12, 144), ("h", [4, 2], 1, 16)], 64, 2),
        "valid-empty.gguf": gguf([], []),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"seeded {len(os.listdir(OUT))} files into {OUT}")


if __name__ == "__main__":
    main()
