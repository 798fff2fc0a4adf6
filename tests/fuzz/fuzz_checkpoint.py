"""Fuzzes checkpoint reading with atheris: mutated small safetensors files (header-structure-aware)
or torch zip checkpoints (pickle-aware), each written as a checkpoint folder and read through
vlmzoo.convert.checkpoint.read_safetensors_folder, then loaded with convert.validate.load_into
into parameters shaped like the seed's tensors.

Every file must give tensors or a ValueError naming the file; loaded tensors never exceed the
file's size; load_into loads everything or raises ValueError/KeyError with the parameters
untouched; no pickled code ever runs (a seed carries a payload that would create a marker file).

  python tests/fuzz/fuzz_checkpoint.py --format safetensors --seconds 30 --stats stats.json [libFuzzer flags, dirs]
  python tests/fuzz/fuzz_checkpoint.py --write-seeds tests/fuzz/corpus   (regenerates the seed files)"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import struct
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from json_mutator import JsonMutator, words  # noqa: E402

MARKER = "vlmzoo-fuzz-pwned"  # created in the working folder if pickled code ever ran
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16", "U32",
          "U64", "C64", "F4", "F8_E8M0", "XX", "f32", ""]
FILE_NAME = {"safetensors": "model.safetensors", "torch": "pytorch_model.bin"}


class Payload:
    def __reduce__(self):
        return (open, (MARKER, "w"))


def seed_tensors(seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    return {
        "vision.w": torch.randn(3, 4, generator=g),
        "llm.embed": torch.randn(5, 2, generator=g).to(torch.bfloat16),
        "llm.norm": torch.randn(4, generator=g).to(torch.float16),
        "llm.scale": torch.randn((), generator=g),
    }


def write_seeds(corpus: Path) -> None:
    import torch
    from safetensors.torch import save_file

    (corpus / "safetensors").mkdir(parents=True, exist_ok=True)
    (corpus / "torch").mkdir(parents=True, exist_ok=True)
    for seed in range(3):
        tensors = seed_tensors(seed)
        if seed == 1:
            tensors["llm.norm"][1] = float("nan")
        if seed == 2:
            tensors["extra.ids"] = torch.arange(6).reshape(2, 3)
        save_file(tensors, str(corpus / "safetensors" / f"seed{seed}.safetensors"), metadata={"format": "pt"})
        torch.save(tensors, corpus / "torch" / f"seed{seed}.pt")
    torch.save({**seed_tensors(0), "evil": Payload()}, corpus / "torch" / "payload.pt")


# ---- mutators
def split_safetensors(data: bytes):
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, RecursionError):
        return None
    return header, data[8 + n :]


def mutate_safetensors(data: bytes, rng: random.Random, mutator: JsonMutator) -> bytes:
    parts = split_safetensors(data)
    if parts is None or rng.random() < 0.1:
        return mutator.damage(data, 1 << 20)
    header, body = parts
    if body and rng.random() < 0.3:  # the header kept, the values hit: NaN, inf, wild numbers
        body = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(body))
            body[i] = rng.choice([body[i] ^ (1 << rng.randrange(8)), 0xFF, 0x7F, 0x80, 0x00])
        return data[: len(data) - len(body)] + bytes(body)
    if rng.random() < 0.8:
        header = mutator.mutate_tree(header)
    raw = mutator.dumps(header).encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        raw += b" " * rng.randrange(8)  # the format pads headers with spaces
    n = len(raw) if rng.random() < 0.85 else rng.choice([0, 1, len(raw) - 1, len(raw) + 1, 2**63, 2**64 - 1, len(data)])
    if rng.random() < 0.25:
        body = mutator.damage(body, 1 << 20)
    return struct.pack("<Q", n % 2**64) + raw + body


def mutate_torch(data: bytes, rng: random.Random, mutator: JsonMutator, atheris) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            entries = [(info.filename, z.read(info)) for info in z.infolist()]
    except Exception:
        return mutator.damage(data, 1 << 20)
    if not entries or rng.random() < 0.1:
        return mutator.damage(data, 1 << 20)
    i = rng.randrange(len(entries))
    pickles = [j for j, (name, _) in enumerate(entries) if name.endswith(".pkl")]
    if pickles and rng.random() < 0.7:
        i = rng.choice(pickles)
    name, content = entries[i]
    if rng.random() < 0.8:
        content = atheris.Mutate(content, max(64, 2 * len(content)))
    else:
        content = content[: rng.randrange(len(content) + 1)]
    entries[i] = (name, content)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:  # fresh CRCs, so the reader gets to the pickle
        for n, c in entries:
            z.writestr(n, c)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", choices=sorted(FILE_NAME), default="safetensors")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--stats", type=Path)
    parser.add_argument("--write-seeds", type=Path)
    args, fuzzer_args = parser.parse_known_args()
    if args.write_seeds:
        write_seeds(args.write_seeds)
        return

    import atheris
    import torch

    from vlmzoo.models.checkpoint import read_safetensors_folder
    from vlmzoo.models.validate import load_into

    torch.set_num_threads(1)
    # The payload seed names its marker relative to the working folder: work in a fresh one.
    fuzzer_args = [a if a.startswith("-") else os.path.abspath(a) for a in fuzzer_args]
    work = Path(tempfile.mkdtemp(prefix="vlmzoo-fuzz-"))
    os.chdir(work)
    folder = work / "checkpoint"
    folder.mkdir()
    path = folder / FILE_NAME[args.format]
    shapes = {k: tuple(v.shape) for k, v in seed_tensors(0).items()}
    headers = [split_safetensors(p.read_bytes()) for p in sorted((HERE / "corpus" / "safetensors").glob("*"))]
    dictionary = words([h[0] for h in headers if h]) | set(DTYPES)
    seeds = [p.read_bytes() for p in sorted((HERE / "corpus" / args.format).glob("*"))]
    # Inputs with an outcome never seen before: the mutator draws from them (no C++ coverage here).
    pool: list[bytes] = list(seeds)
    seen: set[str] = set()
    messages: Counter = Counter()
    stats: Counter = Counter()
    deadline = time.monotonic() + args.seconds

    def note(kind: str, detail: str, data: bytes) -> None:
        stats[kind] += 1
        shape = kind + ": " + re.sub(r"\d+", "N", detail)[:150]
        messages[shape] += 1
        if shape not in seen:
            seen.add(shape)
            if len(pool) < 2000:
                pool.append(data)

    def finish() -> None:
        report = {"format": args.format, "executions": stats["executions"], "outcomes": dict(stats),
                  "distinct_messages": len(messages), "top_messages": messages.most_common(25)}
        if args.stats:
            args.stats.write_text(json.dumps(report, indent=1))
        os._exit(0)

    def test_one(data: bytes) -> None:
        if time.monotonic() > deadline:
            finish()
        stats["executions"] += 1
        path.write_bytes(data)
        try:
            tensors = read_safetensors_folder(folder)
        except ValueError as e:
            if str(path) not in str(e):
                raise AssertionError(f"the error does not name the file: {e}") from None
            note("file ValueError", str(e).replace(str(path), "<file>"), data)
            return
        finally:
            if os.path.exists(MARKER):
                raise AssertionError("a pickled payload ran while reading a checkpoint")
        stats["file loaded"] += 1
        for name, t in tensors.items():
            if not isinstance(name, str) or not isinstance(t, torch.Tensor):
                raise AssertionError(f"read gave {type(name).__name__} -> {type(t).__name__}")
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > len(data):
            raise AssertionError(f"{size} bytes of tensors from a {len(data)}-byte file")
        params = {k: torch.zeros(s) for k, s in shapes.items()}
        try:
            load_into(params, tensors)
        except (ValueError, KeyError) as e:
            if any(bool(p.any()) for p in params.values()):
                raise AssertionError(f"load_into failed ({e}) but wrote some parameters") from None
            note(f"tensors {type(e).__name__}", str(e).split(":")[0], data)
            return
        for k, p in params.items():
            if not torch.equal(p, tensors[k].float()):
                raise AssertionError(f"load_into reported success but {k} differs")
        note("tensors loaded", ",".join(sorted(f"{k}:{t.dtype}" for k, t in tensors.items())), data)

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        mutator = JsonMutator(dictionary, rng)
        if rng.random() < 0.85:  # libFuzzer's own corpus stays near-empty without coverage
            data = rng.choice(pool)
        if args.format == "safetensors":
            out = mutate_safetensors(data, rng, mutator)
        else:
            out = mutate_torch(data, rng, mutator, atheris)
        return out[:max_size]

    atheris.Setup([sys.argv[0], *fuzzer_args], test_one, custom_mutator=mutate)
    atheris.Fuzz()
    finish()


if __name__ == "__main__":
    main()
