"""The numpy paths against the independent references of ref.py on random data."""

import numpy as np
import pytest

import bnb
import ref
from bnb import _arrays
from conftest import needs_cpu

pytestmark = needs_cpu

DYN8S = None


def dyn8s():
    global DYN8S
    if DYN8S is None:
        DYN8S = bnb.get_code_table("dynamic_signed")
    return DYN8S


def assert_codes_close(got, want, scaled_like=None, max_fraction=2e-3):
    """Codes equal to the reference except at rare reciprocal ties (docs/FORMATS.md §2.2: the library uses
    the GPU's approximate reciprocal, the reference the IEEE one); those differ by one code."""
    got, want = np.asarray(got).ravel(), np.asarray(want).ravel()
    assert got.shape == want.shape and got.dtype == want.dtype
    diff = got != want
    assert diff.sum() <= max(1, max_fraction * got.size), f"{diff.sum()} of {got.size} codes differ"


def assert_codes_close_4bit(got, want, max_fraction=2e-3):
    g, w = np.asarray(got).ravel(), np.asarray(want).ravel()
    assert_codes_close(np.concatenate([g >> 4, g & 15]), np.concatenate([w >> 4, w & 15]), max_fraction=max_fraction)


def bits(a):
    a = np.asarray(a)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def to_f32(a, dtype_name):
    if dtype_name == "bfloat16":
        return ref.bf16_bits_to_f32(np.asarray(a).view(np.uint16))
    return np.asarray(a).astype(np.float32)


def from_f32(x, dtype_name):
    """The reference's rounding of float32 results to the output dtype, as raw bits."""
    if dtype_name == "bfloat16":
        return ref.f32_to_bf16_bits(x)
    return bits(x.astype(dtype_name))


def random_input(rng, shape, dtype_name, bf16_as="ml_dtypes"):
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 10)).astype(np.float32)
    if dtype_name == "bfloat16":
        raw = ref.f32_to_bf16_bits(x)
        if bf16_as == "ml_dtypes":
            if _arrays.NP_BF16 is None:
                pytest.skip("ml_dtypes is not installed")
            return raw.view(_arrays.NP_BF16), {}
        return raw, {"dtype": "bfloat16"}
    return x.astype(dtype_name), {}


DTYPES = ["float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("blocksize", [64, 256, 4096])
def test_quantize_blockwise_matches_reference(rng, dtype_name, blocksize):
    A, kw = random_input(rng, (37, 129), dtype_name)
    q, state = bnb.quantize_blockwise(A, blocksize=blocksize, **kw)
    x = to_f32(A, dtype_name)
    want_q, want_absmax = ref.quantize_blockwise_ref(x, dyn8s(), blocksize)
    assert q.shape == A.shape and q.dtype == np.uint8
    assert np.array_equal(bits(state.absmax), bits(want_absmax))
    assert_codes_close(q, want_q)
    assert state.blocksize == blocksize and not state.nested
    assert np.array_equal(state.code, dyn8s())
    assert bnb.functional._dtype_str(state.dtype) == dtype_name

    out = bnb.dequantize_blockwise(q, state)
    want = ref.dequantize_blockwise_ref(q, state.absmax, dyn8s(), blocksize).reshape(A.shape)
    assert out.shape == A.shape
    assert np.array_equal(bits(out), from_f32(want, dtype_name))


def test_bf16_as_uint16_bits_with_explicit_dtype(rng):
    A, kw = random_input(rng, (4096,), "bfloat16", bf16_as="uint16")
    assert A.dtype == np.uint16 and kw == {"dtype": "bfloat16"}
    q, state = bnb.quantize_4bit(A, blocksize=64, quant_type="nf4", **kw)
    want_p, want_absmax = ref.quantize_4bit_ref(ref.bf16_bits_to_f32(A), 64, "nf4")
    assert_codes_close_4bit(q, want_p)
    assert np.array_equal(state.absmax, want_absmax)
    out = bnb.dequantize_4bit(q, state)
    want = ref.dequantize_4bit_ref(q, state.absmax, A.size, 64, "nf4")
    assert np.array_equal(bits(out).view(np.uint16), ref.f32_to_bf16_bits(want))


def test_dequantize_output_dtype_and_explicit_absmax(rng):
    A = rng.standard_normal(5000).astype(np.float32)
    q, state = bnb.quantize_blockwise(A, blocksize=128)
    out16 = bnb.dequantize_blockwise(q, absmax=state.absmax, blocksize=128, dtype="float16")
    want = ref.dequantize_blockwise_ref(q, state.absmax, dyn8s(), 128)
    assert out16.dtype == np.float16 and np.array_equal(out16, want.astype(np.float16))
    out32 = bnb.dequantize_blockwise(q, absmax=state.absmax, blocksize=128)
    assert out32.dtype == np.float32 and np.array_equal(bits(out32), bits(want))


def test_custom_code_table(rng):
    A = np.abs(rng.standard_normal(3000)).astype(np.float32)
    code = bnb.get_code_table("dynamic_unsigned")
    q, state = bnb.quantize_blockwise(A, code=code, blocksize=256)
    want_q, want_absmax = ref.quantize_blockwise_ref(A, code, 256)
    assert_codes_close(q, want_q)
    assert np.array_equal(state.code, code) and state.code is not code
    out = bnb.dequantize_blockwise(q, state)
    assert np.array_equal(bits(out), bits(ref.dequantize_blockwise_ref(q, want_absmax, code, 256)))


def test_non_contiguous_inputs_are_copied_not_misread(rng):
    base = rng.standard_normal((64, 256)).astype(np.float32)
    A = base[:, ::2]
    assert not A.flags.c_contiguous
    q, state = bnb.quantize_blockwise(A, blocksize=64)
    q2, state2 = bnb.quantize_blockwise(np.ascontiguousarray(A), blocksize=64)
    assert np.array_equal(q, q2) and np.array_equal(state.absmax, state2.absmax)
    p, s4 = bnb.quantize_4bit(A.T, blocksize=64, quant_type="fp4")
    p2, _ = bnb.quantize_4bit(np.ascontiguousarray(A.T), blocksize=64, quant_type="fp4")
    assert np.array_equal(p, p2) and s4.shape == A.T.shape
    # a non-contiguous view of codes dequantizes like its copy
    qv = np.repeat(q, 2, axis=1)[:, ::2]
    assert not qv.flags.c_contiguous and np.array_equal(qv, q)
    assert np.array_equal(bnb.dequantize_blockwise(qv, state), bnb.dequantize_blockwise(q, state))


def test_nested_blockwise_uses_the_outer_blocksize(rng):
    A = rng.standard_normal(300_000).astype(np.float32)
    q, state = bnb.quantize_blockwise(A, blocksize=256, nested=True)
    assert state.nested and state.state2.blocksize == 256
    plain_q, plain = bnb.quantize_blockwise(A, blocksize=256)
    assert np.array_equal(q, plain_q)
    want_aq, want_a2, _ = ref.compress_absmax_ref(plain.absmax, dyn8s(), offset=state.offset)
    assert state.absmax.dtype == np.uint8
    assert np.isclose(state.offset, plain.absmax.mean(dtype=np.float64), rtol=1e-6)
    assert np.array_equal(state.state2.absmax, want_a2)
    assert_codes_close(state.absmax, want_aq)
    absmax = ref.nested_absmax_ref(state.absmax, state.state2.absmax, state.offset, dyn8s())
    out = bnb.dequantize_blockwise(q, state)
    assert np.array_equal(bits(out), bits(ref.dequantize_blockwise_ref(q, absmax, dyn8s(), 256)))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("blocksize,n", [(32, 4097), (64, 10_000), (128, 999), (4096, 12_345)])
def test_quantize_4bit_matches_reference(rng, quant_type, dtype_name, blocksize, n):
    A, kw = random_input(rng, (n,), dtype_name)
    A[:blocksize] = 0  # an all-zero block
    packed, state = bnb.quantize_4bit(A, blocksize=blocksize, quant_type=quant_type, **kw)
    want_p, want_absmax = ref.quantize_4bit_ref(to_f32(A, dtype_name), blocksize, quant_type)
    assert packed.shape == ((n + 1) // 2, 1) and packed.dtype == np.uint8
    assert np.array_equal(bits(state.absmax), bits(want_absmax))
    assert_codes_close_4bit(packed, want_p)
    assert state.shape == (n,) and state.quant_type == quant_type and state.blocksize == blocksize
    assert np.array_equal(state.code, ref.nf4_table() if quant_type == "nf4" else ref.fp4_table())
    out = bnb.dequantize_4bit(packed, state)
    want = ref.dequantize_4bit_ref(packed, state.absmax, n, blocksize, quant_type)
    assert np.array_equal(bits(out), from_f32(want, dtype_name))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_quantize_4bit_compressed_statistics(rng, quant_type):
    A = rng.standard_normal((512, 300)).astype(np.float16)
    packed, state = bnb.quantize_4bit(A, blocksize=64, compress_statistics=True, quant_type=quant_type)
    plain_p, plain = bnb.quantize_4bit(A, blocksize=64, quant_type=quant_type)
    assert np.array_equal(packed, plain_p)
    assert state.nested and state.absmax.dtype == np.uint8 and state.state2.blocksize == 256
    assert state.offset.dtype == np.float32 and state.offset.shape == ()
    assert np.isclose(state.offset, plain.absmax.mean(dtype=np.float64), rtol=1e-6)
    want_aq, want_a2, _ = ref.compress_absmax_ref(plain.absmax, dyn8s(), offset=state.offset)
    assert np.array_equal(state.state2.absmax, want_a2)
    assert_codes_close(state.absmax, want_aq)
    absmax = ref.nested_absmax_ref(state.absmax, state.state2.absmax, state.offset, dyn8s())
    out = bnb.dequantize_4bit(packed, state)
    assert out.shape == A.shape and out.dtype == np.float16
    want = ref.dequantize_4bit_ref(packed, absmax, A.size, 64, quant_type).reshape(A.shape)
    assert np.array_equal(bits(out), bits(want.astype(np.float16)))


def test_dequantize_4bit_from_absmax_and_shape(rng):
    A = rng.standard_normal((30, 40)).astype(np.float32)
    packed, state = bnb.quantize_4bit(A, blocksize=128, quant_type="fp4")
    out = bnb.dequantize_4bit(packed, absmax=state.absmax, blocksize=128, quant_type="fp4", shape=(30, 40))
    assert np.array_equal(out, bnb.dequantize_4bit(packed, state))


def test_code_tables_match_the_spec():
    assert np.array_equal(bits(bnb.get_code_table("nf4")), bits(ref.nf4_table()))
    assert np.array_equal(bits(bnb.get_code_table("fp4")), bits(ref.fp4_table()))
    for name in ("dynamic_signed", "dynamic_unsigned"):
        t = bnb.get_code_table(name)
        assert t.shape == (256,) and t.dtype == np.float32 and np.all(np.diff(t) > 0)
    assert np.array_equal(bnb.get_code_table("dynamic"), bnb.get_code_table("dynamic_signed"))
    t = bnb.get_code_table("nf4")
    t[:] = 7  # a caller's copy: the cache is untouched
    assert bnb.get_code_table("nf4")[0] == -1.0
