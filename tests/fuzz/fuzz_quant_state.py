"""Fuzz target: bnb.QuantState.from_dict, load_linear4bit_state_dict and the dequantization that
reads what they return, on damaged state dictionaries.

The input bytes choose one of a few valid dictionaries (4-bit nf4/fp4, plain or nested, packed or
not; 8-bit blockwise, plain or nested) and a list of damages: a deleted item, an array truncated,
grown or cast to another dtype, a non-array in place of an array, an unknown item, JSON fields set
to odd values, or the packed JSON bytes replaced. Any outcome but success, ValueError, TypeError or
a bnb.Error is a finding (and a crash is one by itself).

    python tests/fuzz/fuzz_quant_state.py -max_total_time=60 tests/fuzz/corpus/quant_state
        with atheris installed (libFuzzer flags; the corpus directory is read and grown)
    python tests/fuzz/fuzz_quant_state.py --runs 5000 --seed 1
        without atheris: the same decoder fed seeded random bytes (what tests/python runs)
    python tests/fuzz/fuzz_quant_state.py --write-seeds tests/fuzz/corpus/quant_state
        writes the seed corpus (one input per base dictionary, undamaged, and a few damaged)

Needs BNB_LIBRARY_PATH / PYTHONPATH like the Python tests when bnb is not installed.
"""

import argparse
import json
import os
import random
import sys

import numpy as np

import bnb


class Bytes:
    """Reads small integers and byte strings from the fuzz input; zeros once it runs out."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n):
        return (self.byte() | self.byte() << 8) % n if n > 1 else 0

    def int64(self):
        v = int.from_bytes(bytes(self.byte() for _ in range(8)), "little", signed=True)
        return v

    def raw(self, n):
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return bytes(out)


def base_cases():
    """(dictionary, packed data, kind) for each base: kind '4bit' or '8bit'."""
    rng = np.random.default_rng(7)
    A = rng.standard_normal((8, 96)).astype(np.float32)
    cases = []
    for quant_type in ("nf4", "fp4"):
        for nested in (False, True):
            packed, state = bnb.quantize_4bit(A, blocksize=64, compress_statistics=nested, quant_type=quant_type)
            cases.append((state.as_dict(packed=True), packed, "4bit"))
            cases.append((state.as_dict(), packed, "4bit"))
            cases.append((bnb.linear4bit_state_dict(packed, state, bias=np.zeros(8, np.float32), prefix="l."),
                          packed, "linear"))
    for nested in (False, True):
        q, state = bnb.quantize_blockwise(A, blocksize=256, nested=nested)
        cases.append((state.as_dict(), q, "8bit"))
    return cases


CASES = None
DTYPES = [np.float32, np.float16, np.float64, np.uint8, np.int8, np.int32, np.uint16]
ODD_VALUES = [None, "", "nf4", "float64", "64", -1, 0, 1, 3, 64, 4096, 2**31, 2**63, 2**64 + 64, -2**63 - 1, 1.5,
              float("nan"), True, [], [0], [-1, 8], [8, 96], [2**40, 2**40], ["8", 96], {"a": 1}]


def damage(d, data, src):
    d = dict(d)
    keys = list(d)
    kind = data.below(9)
    key = keys[data.below(len(keys))] if keys else "absmax"
    value = d.get(key)
    is_array = isinstance(value, np.ndarray)
    if kind == 0:
        d.pop(key, None)
    elif kind == 1 and is_array:
        d[key] = value.reshape(-1)[:data.below(value.size + 1)].copy()
    elif kind == 2 and is_array:
        d[key] = np.concatenate([value.reshape(-1)] * (1 + data.below(3)))
    elif kind == 3 and is_array:
        d[key] = value.astype(DTYPES[data.below(len(DTYPES))])
    elif kind == 4:
        d[key] = ODD_VALUES[data.below(len(ODD_VALUES))]
    elif kind == 5:
        d[key + ("" if data.below(2) else ".extra")] = np.zeros(data.below(5), np.float32)
    elif kind in (6, 7):
        packed_key = next((k for k in keys if "quant_state." in k), None)
        if packed_key is None:
            field = ("quant_type", "blocksize", "dtype", "shape", "nested_offset")[data.below(5)]
            d[field] = ODD_VALUES[data.below(len(ODD_VALUES))] if kind == 6 else data.int64()
            return d, src
        blob = _json_of(d[packed_key])
        if not blob:  # an earlier damage already replaced it
            return d, src
        field = list(blob)[data.below(len(blob))]
        if kind == 6:
            blob[field] = ODD_VALUES[data.below(len(ODD_VALUES))]
        else:
            blob[field] = data.int64()
        d[packed_key] = np.frombuffer(json.dumps(blob).encode("utf-8"), np.uint8).copy()
    elif kind == 8:
        packed_key = next((k for k in keys if "quant_state." in k), None)
        if packed_key is not None:
            d[packed_key] = np.frombuffer(data.raw(data.below(64)), np.uint8).copy()
        else:
            src = src.reshape(-1)[:data.below(src.size + 1)].copy()
    return d, src


def _json_of(value):
    try:
        blob = json.loads(value.tobytes())
    except (AttributeError, ValueError):
        return None
    return blob if isinstance(blob, dict) else None


def exercise(data_bytes):
    global CASES
    if CASES is None:
        CASES = base_cases()
    data = Bytes(data_bytes)
    d, src, kind = CASES[data.below(len(CASES))]
    for _ in range(data.below(4)):
        d, src = damage(d, data, src)
    try:
        if kind == "linear":
            weight, state, _ = bnb.load_linear4bit_state_dict(d, prefix="l.")
            bnb.dequantize_4bit(weight, state)
        elif kind == "4bit":
            bnb.dequantize_4bit(src, bnb.QuantState.from_dict(d))
        else:
            bnb.dequantize_blockwise(src, bnb.QuantState.from_dict(d))
    except (ValueError, TypeError, bnb.Error):
        pass


def write_seeds(directory):
    os.makedirs(directory, exist_ok=True)
    count = len(base_cases())
    seeds = [bytes([i, 0, 0, 0]) for i in range(count)]  # each base, undamaged
    rng = random.Random(0)
    seeds += [bytes([i % count, 0, 3, 0]) + rng.randbytes(40) for i in range(16)]  # damaged ones
    for i, seed in enumerate(seeds):
        with open(os.path.join(directory, f"seed_{i:02d}"), "wb") as f:
            f.write(seed)
    return len(seeds)


def main(argv):
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None and not any(a.startswith("--") for a in argv[1:]):
        atheris.instrument_all()
        atheris.Setup(argv, exercise)
        atheris.Fuzz()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="random inputs to try (no atheris)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write-seeds", metavar="DIR", help="write the seed corpus to DIR and stop")
    args = parser.parse_args(argv[1:])
    if args.write_seeds:
        print(f"{write_seeds(args.write_seeds)} seeds in {args.write_seeds}")
        return 0
    rng = random.Random(args.seed)
    for _ in range(args.runs):
        exercise(rng.randbytes(rng.randrange(4, 96)))
    print(f"{args.runs} inputs, no finding")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
