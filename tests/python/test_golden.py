"""bitsandbytes' golden vectors (manifest.json, and nonfinite.json for NaN and +-inf inputs) through
the binding: numpy on the CPU backend, and torch on every device available (CPU, CUDA). Codes,
absmax and row statistics must be identical to the cuda cases; dequantized values too, except that
a NaN matches any NaN."""

import numpy as np
import pytest

import bnb
from conftest import load_golden, needs_cpu, torch_devices

# Read while collecting: a missing set is a collection error, not a skip.
GOLDEN = load_golden()
NONFINITE = load_golden("nonfinite.json")


def case_id(case):
    p = case["params"]
    return "-".join(f"{k}={v}" for k, v in p.items()) + "-" + case["inputs"]["A"]["dtype"]


def cases(op):
    """The op's cases of both manifests (their arrays share one directory)."""
    return ([pytest.param(c, id=case_id(c)) for c in GOLDEN.cases(op)] +
            [pytest.param(c, id="nonfinite-" + case_id(c)) for c in NONFINITE.cases(op)])


def as_bits(a):
    a = np.asarray(a)
    return a.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[a.dtype.itemsize])


NAN_ABOVE = {"float32": 0x7F800000, "float16": 0x7C00, "bfloat16": 0x7F80}  # |bits| above: NaN


def assert_same_values(got, want, dtype):
    """Bit for bit, except that a NaN matches any NaN (the format leaves its payload and sign free)."""
    g, w = as_bits(got).ravel(), as_bits(want).ravel()
    assert g.shape == w.shape
    magnitude = (1 << (8 * w.dtype.itemsize - 1)) - 1
    both_nan = ((g & magnitude) > NAN_ABOVE[dtype]) & ((w & magnitude) > NAN_ABOVE[dtype])
    differ = np.flatnonzero((g != w) & ~both_nan)
    assert differ.size == 0, f"{differ.size} values differ, first at {differ[:5]}"


class Place:
    """Where a case runs: numpy, or torch on a device. Converts golden arrays in and results out."""

    def __init__(self, where):
        self.where = where

    def put(self, array, dtype):
        if self.where == "numpy":
            return array, ({"dtype": "bfloat16"} if dtype == "bfloat16" else {})
        import torch

        if dtype == "bfloat16":
            t = torch.from_numpy(array.astype(np.int16, copy=False).view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.ascontiguousarray(array))
        return t.to(self.where), {}

    def get(self, x):
        if self.where == "numpy":
            return np.asarray(x)
        import torch

        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            return x.view(torch.int16).numpy().view(np.uint16)
        return x.numpy()


def places():
    out = []
    try:
        from conftest import cpu_available

        if cpu_available():
            out.append("numpy")
    except Exception:  # pragma: no cover
        pass
    return out + torch_devices()


PLACES = places()


def golden_input(where, case):
    """The case's Place and its input A there, with the keywords that name its dtype."""
    place = Place(where)
    A, dtype = GOLDEN.load(case["inputs"]["A"])
    x, kw = place.put(A, dtype)
    return place, x, kw


def assert_same_bits(got, entry):
    """got (a host array) equals the golden array `entry` bit for bit."""
    assert np.array_equal(as_bits(got), as_bits(GOLDEN.load(entry)[0]))


def test_code_tables():
    out = GOLDEN.cases("code_tables")[0]["outputs"]
    for name, entry in out.items():
        want = GOLDEN.load(entry)[0]
        assert np.array_equal(as_bits(bnb.get_code_table(name)), as_bits(want)), name


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("case", cases("quantize_blockwise"))
def test_quantize_blockwise(where, case):
    place, x, kw = golden_input(where, case)
    code = bnb.get_code_table(case["params"]["code"])
    code_x, _ = place.put(code, "float32")
    q, state = bnb.quantize_blockwise(x, code=code_x, blocksize=case["params"]["blocksize"], **kw)
    out = case["outputs"]
    assert_same_bits(place.get(q), out["q"])
    assert_same_bits(place.get(state.absmax), out["absmax"])
    want, want_dtype = GOLDEN.load(out["dequant"])
    got = place.get(bnb.dequantize_blockwise(q, state, dtype=want_dtype))
    assert_same_values(got, want, want_dtype)


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("case", cases("quantize_4bit"))
def test_quantize_4bit(where, case):
    place, x, kw = golden_input(where, case)
    p = case["params"]
    packed, state = bnb.quantize_4bit(x, blocksize=p["blocksize"], quant_type=p["quant_type"], **kw)
    out = case["outputs"]
    assert_same_bits(place.get(packed), out["packed"])
    assert_same_bits(place.get(state.absmax), out["absmax"])
    want, want_dtype = GOLDEN.load(out["dequant"])
    got = place.get(bnb.dequantize_4bit(packed, state, dtype=want_dtype))
    assert_same_values(got, want, want_dtype)


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("case", cases("quantize_4bit_nested"))
def test_quantize_4bit_nested(where, case):
    place, x, kw = golden_input(where, case)
    p = case["params"]
    out = case["outputs"]
    packed, state = bnb.quantize_4bit(x, blocksize=p["blocksize"], quant_type=p["quant_type"],
                                      compress_statistics=True, **kw)
    assert_same_bits(place.get(packed), out["packed"])
    golden_offset = GOLDEN.load(out["absmax_offset"])[0].reshape(())
    offset = place.get(state.offset).reshape(())
    assert np.isclose(offset, golden_offset, rtol=1e-6)
    if offset == golden_offset:  # codes are bit-exact given the same offset (docs/FORMATS.md §4.1)
        assert_same_bits(place.get(state.absmax), out["absmax_q"])
        assert_same_bits(place.get(state.state2.absmax), out["absmax_absmax"])
    # with the golden statistics, dequantization is bit-exact
    absmax_q, _ = place.put(GOLDEN.load(out["absmax_q"])[0], "uint8")
    absmax2, _ = place.put(GOLDEN.load(out["absmax_absmax"])[0], "float32")
    offset_x, _ = place.put(golden_offset.astype(np.float32), "float32")
    code2, _ = place.put(bnb.get_code_table("dynamic_signed"), "float32")
    golden_state = bnb.QuantState(absmax=absmax_q, shape=state.shape, code=state.code, blocksize=p["blocksize"],
                                  quant_type=p["quant_type"], dtype=state.dtype, offset=offset_x,
                                  state2=bnb.QuantState(absmax=absmax2, code=code2, blocksize=256,
                                                        dtype=state.state2.dtype))
    want, want_dtype = GOLDEN.load(out["dequant"])
    got = place.get(bnb.dequantize_4bit(packed, golden_state, dtype=want_dtype))
    assert_same_values(got, want, want_dtype)
    # and the codes of absmax - golden offset, composed from the 8-bit op, are the golden ones
    plain_packed, plain = bnb.quantize_4bit(x, blocksize=p["blocksize"], quant_type=p["quant_type"], **kw)
    with np.errstate(invalid="ignore"):  # nonfinite: inf - inf
        centered = plain.absmax - offset_x
    qabs, s2 = bnb.quantize_blockwise(centered, blocksize=256)
    assert_same_bits(place.get(qabs), out["absmax_q"])
    assert_same_bits(place.get(s2.absmax), out["absmax_absmax"])


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("case", cases("int8_vectorwise_quant"))
def test_int8_vectorwise_quant(where, case):
    place, x, kw = golden_input(where, case)
    threshold = case["params"]["threshold"]
    q, row_stats, outlier_cols = bnb.int8_vectorwise_quant(x, threshold=threshold, **kw)
    out = case["outputs"]
    assert_same_bits(place.get(q), out["q"])
    assert_same_bits(place.get(row_stats), out["row_stats"])
    if threshold > 0:
        want = GOLDEN.load(out["outlier_cols"])[0]
        assert np.array_equal(np.sort(place.get(outlier_cols).astype(np.int32)), np.sort(want))


@needs_cpu
def test_there_are_golden_cases():
    counts = {GOLDEN: (("quantize_blockwise", 24), ("quantize_4bit", 48), ("quantize_4bit_nested", 6)),
              NONFINITE: (("quantize_blockwise", 8), ("quantize_4bit", 14), ("quantize_4bit_nested", 6),
                          ("int8_vectorwise_quant", 2))}
    for golden, expected in counts.items():
        for op, count in expected:
            assert len(golden.cases(op)) == count, (golden.path, op)
