#!/usr/bin/env python3
"""Seeds fuzz/corpus/gguf_reader/ (git-ignored) for `cargo +nightly fuzz run gguf_reader`.

Seeds: every file of fixtures/malformed/, the metadata part of a few synthetic models (their
first 16 KiB: header, vocabulary, tensor infos), and small valid files written here with every
metadata value type, an array of arrays, and tensors of several types.
"""
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


def main():
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
