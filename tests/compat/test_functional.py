"""bitsandbytes.functional and bitsandbytes.utils as the compatibility layer serves them.

References are independent of the code under test: float64 torch math, nibbles unpacked here,
bnb's own verified functions and tables, and fingerprints of real bitsandbytes 0.50.2's code maps
(recorded once from that release; bitsandbytes is not needed to run these tests).
"""

import hashlib
import json

import pytest

torch = pytest.importorskip("torch")

import bitsandbytes  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
import bitsandbytes.utils as U  # noqa: E402
import bnb  # noqa: E402
import bnb.functional as BF  # noqa: E402

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def table(name):
    return torch.from_numpy(BF.get_code_table(name))


def fingerprint(t):
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------- code maps
# sha256 (first 16 hex digits) of the float32 bytes real bitsandbytes 0.50.2 returns.
REAL_MAPS = {
    ("dynamic", True, 1, 8): "11e2b218c33f8137",
    ("dynamic", True, 4, 8): "658354198d3adf24",
    ("dynamic", True, 7, 8): "e732639a65f497b4",
    ("dynamic", False, 7, 8): "305f002cc11278fb",
    ("linear", True, 4, True): "796ada13e4d246a6",
    ("linear", True, 8, True): "80bf4c55fa736fa1",
    ("linear", True, 8, False): "d88eea2f793473b6",
    ("linear", False, 4, True): "d0b9f4e8fb23a19e",
    ("linear", False, 8, True): "7cb9ea560989533d",
    ("fp8", True, 5, 2, 8): "0da7c4e2990b302a",
    ("fp8", True, 4, 3, 8): "f3c007a4cafc83fe",
    ("fp8", True, 2, 1, 4): "d92a5fb4cd0a2592",
    ("fp8", False, 5, 3, 8): "81bae5b06de8bc08",
    ("fp8", True, 2, 2, 5): "c4e94ec721376dfb",
}


@pytest.mark.parametrize("key", sorted(REAL_MAPS, key=str))
def test_code_maps_match_real_bitsandbytes(key):
    build = {"dynamic": F.create_dynamic_map, "linear": F.create_linear_map, "fp8": F.create_fp8_map}[key[0]]
    code = build(*key[1:])
    assert code.dtype == torch.float32 and code.shape == (256,)
    assert fingerprint(code) == REAL_MAPS[key]


def test_dynamic_maps_are_bnb_tables():
    assert torch.equal(F.create_dynamic_map(), table("dynamic_signed"))
    assert torch.equal(F.create_dynamic_map(signed=False), table("dynamic_unsigned"))


def test_normal_map_is_nf4():
    code = F.create_normal_map()
    assert code.shape == (256,) and torch.equal(code, code.sort().values)
    nonzero = code[code != 0]
    nf4 = table("nf4")
    assert torch.equal(nonzero, nf4[nf4 != 0])
    symmetric = F.create_normal_map(use_extra_value=False)
    assert (symmetric != 0).sum() == 14 and torch.allclose(symmetric, -symmetric.flip(0))


def test_linear_map_values():
    code = F.create_linear_map(signed=True, total_bits=8, add_zero=True)
    ref = torch.linspace(-1, 1, 255, dtype=torch.float64)
    assert torch.allclose(torch.cat([code[:127], code[128:]]).double(), ref, atol=1e-7)
    assert code[127] == 0 and abs(code[128]) < 1e-7  # the padding entry, then the centre of the linspace
    four = F.create_linear_map(signed=False, total_bits=4)
    assert (four != 0).sum() == 15 and four.max() == 1


def test_fp8_map_values_and_bad_bits():
    code = F.create_fp8_map(signed=True, exponent_bits=2, precision_bits=1, total_bits=4)
    # the largest magnitudes of e2m1 with bias 2 scaled by the maximum: 1, 2/3, 1/2, 1/3, 1/4, 1/6
    assert torch.allclose(code[-6:].double(), torch.tensor([1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1.0],
                                                           dtype=torch.float64))
    with pytest.raises(ValueError, match="total_bits"):
        F.create_fp8_map(signed=True, exponent_bits=4, precision_bits=4, total_bits=8)


NF4_REAL = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
            1.0]
FP4_REAL = [0.0, 0.0052083334885537624, 0.6666666865348816, 1.0, 0.3333333432674408, 0.5, 0.1666666716337204, 0.25,
            0.0, -0.0052083334885537624, -0.6666666865348816, -1.0, -0.3333333432674408, -0.5, -0.1666666716337204,
            -0.25]


def test_get_4bit_type():
    assert F.get_4bit_type("nf4", device="cpu").tolist() == NF4_REAL
    assert F.get_4bit_type("fp4", device="cpu").tolist() == FP4_REAL
    assert torch.equal(F.get_4bit_type("nf4", device="cpu"), table("nf4"))
    int4 = F.get_4bit_type("int4", device="cpu")
    expected = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0, 0, -1, -2, -3, -4, -5, -6, -7], dtype=torch.float64) / 7
    assert int4.dtype == torch.float32 and torch.allclose(int4.double(), expected)
    af4 = F.get_4bit_type("af4", device="cpu")
    assert af4[0] == 1 and af4[-1] == -1 and af4[8] == 0
    with pytest.raises(NotImplementedError):
        F.get_4bit_type("af4", device="cpu", blocksize=128)
    with pytest.raises(NotImplementedError, match="xx"):
        F.get_4bit_type("xx", device="cpu")


# ---------------------------------------------------------------- 4-bit
def unpack_nibbles(packed, n):
    b = packed.reshape(-1).view(torch.uint8).long()
    return torch.stack([b >> 4, b & 15], dim=1).reshape(-1)[:n]


def reference_dequant_4bit(packed, absmax, code, blocksize, n):
    """float64 code[nibble] * absmax[block]."""
    idx = unpack_nibbles(packed, n)
    scale = absmax.double().repeat_interleave(blocksize)[:n]
    return code.double()[idx] * scale


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("blocksize", [32, 64, 256])
def test_quantize_4bit_codes_and_dequantize(quant_type, dtype, blocksize):
    torch.manual_seed(blocksize)
    A = torch.randn(33, 17, dtype=dtype)  # 561 values: the last block and the last byte are partial
    n = A.numel()
    packed, state = F.quantize_4bit(A, blocksize=blocksize, quant_type=quant_type)
    assert packed.dtype == torch.uint8 and packed.shape == ((n + 1) // 2, 1)
    assert isinstance(state, F.QuantState) and isinstance(state, BF.QuantState)
    assert state.shape == torch.Size([33, 17]) and state.dtype == dtype and state.blocksize == blocksize
    assert torch.equal(state.code, table(quant_type))
    # absmax: the largest magnitude of each block
    flat = A.reshape(-1).double()
    pad = (-n) % blocksize
    blocks = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, blocksize)
    assert torch.equal(state.absmax.double(), blocks.abs().amax(1).float().double())
    # each code is a nearest table entry for x / absmax
    idx = unpack_nibbles(packed, n)
    scaled = flat / state.absmax.double().repeat_interleave(blocksize)[:n]
    dist = (scaled[:, None] - state.code.double()[None, :]).abs()
    chosen = dist.gather(1, idx[:, None]).squeeze(1)
    assert (chosen <= dist.min(1).values + 1e-6).all()
    # dequantize = code * absmax in the state's dtype
    out = F.dequantize_4bit(packed, state)
    assert out.dtype == dtype and out.shape == A.shape
    ref = reference_dequant_4bit(packed, state.absmax, state.code, blocksize, n).reshape(A.shape)
    assert torch.equal(out, ref.to(dtype))
    # the same bytes as bnb's own function
    packed_bnb, _ = BF.quantize_4bit(A, blocksize=blocksize, quant_type=quant_type)
    assert torch.equal(packed, packed_bnb)


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16, torch.float32, torch.int8, torch.int32])
def test_quant_storage(storage):
    torch.manual_seed(1)
    A = torch.randn(16, 64)
    ref_packed, ref_state = F.quantize_4bit(A, quant_type="nf4")
    packed, state = F.quantize_4bit(A, quant_type="nf4", quant_storage=storage)
    itemsize = torch.empty((), dtype=storage).element_size()
    assert packed.dtype == storage and packed.shape == (512 // itemsize, 1)
    assert torch.equal(packed.reshape(-1).view(torch.uint8), ref_packed.reshape(-1))
    assert torch.equal(F.dequantize_4bit(packed, state), F.dequantize_4bit(ref_packed, ref_state))
    assert torch.equal(F.dequantize_nf4(packed, state), F.dequantize_4bit(ref_packed, ref_state))


def test_quant_storage_that_cannot_hold_the_bytes():
    with pytest.raises(ValueError, match="quant_storage"):
        F.quantize_4bit(torch.randn(9), quant_storage=torch.float32)  # 5 bytes
    packed, state = F.quantize_4bit(torch.randn(7), quant_storage=torch.bfloat16)  # 4 bytes
    assert packed.shape == (2, 1) and F.dequantize_4bit(packed, state).shape == (7,)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_compress_statistics(quant_type):
    torch.manual_seed(2)
    A = torch.randn(64, 256, dtype=torch.bfloat16)
    packed, state = F.quantize_4bit(A, quant_type=quant_type, compress_statistics=True)
    plain_packed, plain = F.quantize_4bit(A, quant_type=quant_type)
    assert torch.equal(packed, plain_packed)
    assert state.nested and state.absmax.dtype == torch.uint8 and state.state2.blocksize == 256
    assert isinstance(state.state2, F.QuantState) and state.offset.dtype == torch.float32
    # the offset is the mean of the absmax; the nested absmax reproduces the absmax closely
    assert abs(state.offset.item() - plain.absmax.double().mean().item()) < 1e-6
    # bnb's rule (docs/FORMATS.md §4.1): the binary64 mean rounded to float32, on every device; torch's
    # float32 mean (bitsandbytes') is at most an ulp away
    assert state.offset.item() == plain.absmax.double().mean().float().item()
    assert abs(state.offset.item() - plain.absmax.mean().item()) <= plain.absmax.mean().abs().item() * 2 ** -23
    absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
    assert (absmax.double() - plain.absmax.double()).abs().max() < 0.01 * plain.absmax.max()
    ref = reference_dequant_4bit(packed, absmax.float(), state.code, 64, A.numel()).reshape(A.shape)
    out = F.dequantize_4bit(packed, state)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.double(), ref, rtol=1e-2, atol=1e-3)


def test_quantize_fp4_nf4_wrappers_and_buffers():
    torch.manual_seed(3)
    A = torch.randn(128)
    p4, s4 = F.quantize_fp4(A)
    pn, sn = F.quantize_nf4(A, blocksize=128)
    assert s4.quant_type == "fp4" and sn.quant_type == "nf4" and sn.blocksize == 128
    assert torch.equal(F.dequantize_fp4(p4, s4), F.dequantize_4bit(p4, s4))
    out = torch.empty(64, 1, dtype=torch.uint8)
    absmax = torch.empty(2)
    packed, state = F.quantize_4bit(A, absmax=absmax, out=out, quant_type="nf4")
    assert packed is out and state.absmax is absmax and torch.equal(out, F.quantize_4bit(A, quant_type="nf4")[0])
    # absmax + out instead of a state
    result = torch.empty(128)
    got = F.dequantize_4bit(packed, absmax=absmax, out=result, quant_type="nf4")
    assert got is result and torch.equal(result, F.dequantize_4bit(packed, state))


def test_dequantize_4bit_transposed_packed():
    torch.manual_seed(4)
    W = torch.randn(8, 64)
    packed, state = F.quantize_4bit(W, quant_type="nf4")
    full = F.dequantize_4bit(packed, state)
    assert torch.equal(F.dequantize_4bit(packed.t(), state), full.t())


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0), (2, 0, 4)])
@pytest.mark.parametrize("compress", [False, True])
def test_4bit_empty(shape, compress):
    A = torch.empty(shape, dtype=torch.float16)
    packed, state = F.quantize_4bit(A, quant_type="nf4", compress_statistics=compress)
    assert packed.shape == (0, 1) and packed.dtype == torch.uint8
    assert state.shape == torch.Size(shape) and state.nested == compress
    assert state.absmax.shape == (0,) and state.absmax.dtype == (torch.uint8 if compress else torch.float32)
    out = F.dequantize_4bit(packed, state)
    assert out.shape == shape and out.dtype == torch.float16
    pb, sb = F.quantize_4bit(A, quant_storage=torch.bfloat16)
    assert pb.shape == (0, 1) and pb.dtype == torch.bfloat16
    assert F.dequantize_4bit(pb, sb).shape == shape
    # the packed state of an empty tensor round-trips
    assert F.QuantState.from_dict(state.as_dict(packed=True)).shape == torch.Size(shape)


def test_4bit_bad_arguments():
    A = torch.randn(64)
    with pytest.raises(ValueError, match="blocksize"):
        F.quantize_4bit(A, blocksize=48)
    with pytest.raises(ValueError, match="quant_type"):
        F.quantize_4bit(A, quant_type="int4")
    with pytest.raises(ValueError, match="A"):
        F.quantize_4bit(torch.ones(64, dtype=torch.int32))
    with pytest.raises(TypeError, match="A"):
        F.quantize_4bit([1.0, 2.0])
    with pytest.raises(TypeError, match="quant_storage"):
        F.quantize_4bit(A, quant_storage="uint8")
    packed, state = F.quantize_4bit(A)
    with pytest.raises(ValueError, match="absmax and out"):
        F.dequantize_4bit(packed, absmax=state.absmax)
    with pytest.raises(ValueError, match="bytes"):
        F.dequantize_4bit(packed[:10], state)
    with pytest.raises(TypeError, match="quant_state"):
        F.dequantize_4bit(packed, {"absmax": state.absmax})


# ---------------------------------------------------------------- QuantState
def make_state(nested, quant_type="nf4"):
    torch.manual_seed(5)
    return F.quantize_4bit(torch.randn(32, 64, dtype=torch.float16), quant_type=quant_type,
                           compress_statistics=nested)


@pytest.mark.parametrize("nested", [False, True])
def test_quant_state_packed_dict(nested):
    packed, state = make_state(nested)
    d = state.as_dict(packed=True)
    keys = {"absmax", "quant_map", "quant_state.bitsandbytes__nf4"}
    if nested:
        keys |= {"nested_absmax", "nested_quant_map"}
    assert set(d) == keys and all(isinstance(v, torch.Tensor) for v in d.values())
    # the packed item is the JSON bitsandbytes writes: these keys, in this order, default separators
    items = {"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [32, 64]}
    if nested:
        items.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": state.offset.item()})
    blob = d["quant_state.bitsandbytes__nf4"]
    assert blob.dtype == torch.uint8 and bytes(blob.numpy()) == json.dumps(items).encode()
    assert torch.equal(U.pack_dict_to_tensor(items), blob)
    assert torch.equal(state.bitsandbytes__nf4, blob)  # FSDP's attribute walk
    with pytest.raises(AttributeError):
        state.bitsandbytes__fp4
    back = F.QuantState.from_dict({"model.w.weight." + k: v for k, v in d.items()}, device="cpu")
    assert isinstance(back, F.QuantState) and back == state and back.shape == torch.Size([32, 64])
    assert back.dtype == torch.float16
    assert torch.equal(F.dequantize_4bit(packed, back), F.dequantize_4bit(packed, state))


def test_quant_state_unpacked_dict_and_legacy_views():
    _, state = make_state(True)
    d = state.as_dict()
    assert d["shape"] == (32, 64) and d["dtype"] == "float16" and d["quant_type"] == "nf4"
    assert d["nested_blocksize"] == 256 and isinstance(d["nested_offset"], float)
    assert F.QuantState.from_dict(dict(d)) == state
    assert state[0] is state.absmax and state[1] == torch.Size([32, 64]) and state[2] == torch.float16
    assert state[3] == 64 and state[4][0] is state.offset and state[4][1] is state.state2 and state[5] == "nf4"
    _, plain = make_state(False)
    assert plain[4] is None
    moved = plain.to("cpu")
    assert plain.absmax.device.type == "cpu" and (moved is None or moved is plain)


def test_quant_state_copies_and_pickles():
    import copy
    import io
    import pickle

    _, state = make_state(True)
    clone = copy.deepcopy(state)
    assert clone == state and clone.absmax is not state.absmax and clone.state2.absmax is not state.state2.absmax
    assert pickle.loads(pickle.dumps(state)) == state
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False) == state


def test_quant_state_corrupt_packed_item():
    _, state = make_state(False)
    d = state.as_dict(packed=True)
    d["quant_state.bitsandbytes__nf4"] = d["quant_state.bitsandbytes__nf4"][:-5]
    with pytest.raises(ValueError):
        F.QuantState.from_dict(d)
    with pytest.raises(ValueError):
        F.QuantState.from_dict({"absmax": state.absmax})


# ---------------------------------------------------------------- 8-bit blockwise
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("blocksize", [64, 256, 4096])
def test_blockwise_roundtrip_against_reference(dtype, blocksize):
    torch.manual_seed(blocksize)
    A = torch.randn(3, 1000, dtype=dtype)
    q, state = F.quantize_blockwise(A, blocksize=blocksize)
    assert q.dtype == torch.uint8 and q.shape == A.shape and state.blocksize == blocksize
    assert torch.equal(state.code, F.create_dynamic_map())
    n = A.numel()
    flat = A.reshape(-1).double()
    pad = (-n) % blocksize
    absmax = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, blocksize).abs().amax(1)
    assert torch.equal(state.absmax.double(), absmax.float().double())
    scaled = flat / state.absmax.double().repeat_interleave(blocksize)[:n]
    code = state.code.double()
    dist = (scaled[:, None] - code[None, :]).abs()
    assert (dist.gather(1, q.reshape(-1, 1).long()).squeeze(1) <= dist.min(1).values + 1e-6).all()
    out = F.dequantize_blockwise(q, state)
    ref = code[q.reshape(-1).long()] * state.absmax.double().repeat_interleave(blocksize)[:n]
    assert out.dtype == dtype and torch.equal(out, ref.reshape(A.shape).to(dtype))
    # absmax (+ code, blocksize) instead of a state: float32 output
    out32 = F.dequantize_blockwise(q, absmax=state.absmax, blocksize=blocksize)
    assert out32.dtype == torch.float32 and torch.equal(out32, ref.reshape(A.shape).float())


def test_blockwise_custom_code_nested_and_buffers():
    torch.manual_seed(6)
    A = torch.rand(5000)  # non-negative: an unsigned code fits
    code = F.create_linear_map(signed=False)
    q, state = F.quantize_blockwise(A, code=code, blocksize=256)
    assert torch.equal(state.code, code) and state.code is not code
    ref = code.double()[q.long()] * state.absmax.double().repeat_interleave(256)[:5000]
    assert torch.equal(F.dequantize_blockwise(q, state), ref.float())
    assert (F.dequantize_blockwise(q, state).double() - A.double()).abs().max() < state.absmax.max() / 254 + 1e-6
    qn, sn = F.quantize_blockwise(A, blocksize=256, nested=True)
    assert sn.nested and sn.absmax.dtype == torch.uint8 and sn.state2.blocksize == 256
    assert sn.offset.item() == F.quantize_blockwise(A, blocksize=256)[1].absmax.double().mean().float().item()
    assert torch.allclose(F.dequantize_blockwise(qn, sn), A, atol=0.02)
    out, absmax = torch.empty(5000, dtype=torch.uint8), torch.empty(20)
    q2, s2 = F.quantize_blockwise(A, absmax=absmax, out=out, blocksize=256)
    assert q2 is out and s2.absmax is absmax
    result = torch.empty(5000)
    assert F.dequantize_blockwise(q2, s2, out=result) is result


@pytest.mark.parametrize("shape", [(0,), (0, 3), (4, 0)])
@pytest.mark.parametrize("nested", [False, True])
def test_blockwise_empty(shape, nested):
    A = torch.empty(shape, dtype=torch.bfloat16)
    q, state = F.quantize_blockwise(A, nested=nested)
    assert q.shape == shape and q.dtype == torch.uint8 and state.nested == nested
    assert state.absmax.shape == (0,) and state.code.shape == (256,)
    out = F.dequantize_blockwise(q, state)
    assert out.shape == shape and out.dtype == torch.bfloat16


def test_blockwise_bad_arguments():
    with pytest.raises(ValueError, match="A"):
        F.quantize_blockwise(torch.ones(10, dtype=torch.int64))
    with pytest.raises(ValueError, match="blocksize"):
        F.quantize_blockwise(torch.randn(10), blocksize=0)
    with pytest.raises(ValueError, match="code"):
        F.quantize_blockwise(torch.randn(10), code=torch.zeros(16))
    with pytest.raises(ValueError, match="uint8"):
        F.dequantize_blockwise(torch.randn(10), absmax=torch.ones(1))
    with pytest.raises(ValueError, match="quant_state or absmax"):
        F.dequantize_blockwise(torch.zeros(10, dtype=torch.uint8))
    with pytest.raises(ValueError):  # bnb's own check: blocksize is a power of two from 64 to 4096
        F.quantize_blockwise(torch.randn(10), blocksize=100)


# ---------------------------------------------------------------- LLM.int8()
def reference_rowwise(A, threshold=0.0):
    """float64 LLM.int8() row quantization: outlier columns excluded, round half away from zero."""
    X = A.double().reshape(-1, A.shape[-1])
    cols = torch.zeros(X.shape[1], dtype=torch.bool)
    if threshold > 0:
        cols = (X.abs() >= threshold).any(0)
        X = X.masked_fill(cols[None, :], 0.0)
    stats = X.abs().amax(1)
    scaled = X * 127.0 / stats[:, None]
    q = (scaled.sign() * (scaled.abs() + 0.5).floor()).to(torch.int8)
    return q.reshape(A.shape), stats, torch.nonzero(cols).reshape(-1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_int8_vectorwise_quant(dtype):
    torch.manual_seed(7)
    A = torch.randn(2, 7, 33, dtype=dtype)
    q, stats, outliers = F.int8_vectorwise_quant(A)
    ref_q, ref_stats, _ = reference_rowwise(A)
    assert outliers is None and q.dtype == torch.int8 and q.shape == A.shape and stats.shape == (14,)
    assert torch.equal(stats.double(), ref_stats.float().double())
    assert (q.int() - ref_q.int()).abs().max() <= 1  # float32 scaling vs float64: a tie may go either way
    deq = F.int8_vectorwise_dequant(q, stats)
    assert deq.dtype == torch.float32 and deq.shape == A.shape
    assert torch.allclose(deq.double(), q.double() * stats.double().reshape(2, 7, 1) / 127, rtol=1e-6)


def test_int8_vectorwise_quant_threshold():
    torch.manual_seed(8)
    A = torch.randn(6, 40, dtype=torch.float16)
    A[1, 3], A[4, 17], A[0, 17] = 9.0, -8.0, 7.0
    q, stats, outliers = F.int8_vectorwise_quant(A, threshold=6.0)
    ref_q, ref_stats, ref_cols = reference_rowwise(A, 6.0)
    assert outliers.dtype == torch.int64 and outliers.tolist() == ref_cols.tolist() == [3, 17]
    assert (q[:, [3, 17]] == 0).all() and torch.equal(stats.double(), ref_stats.float().double())
    assert (q.int() - ref_q.int()).abs().max() <= 1


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (2, 0, 5)])
def test_int8_vectorwise_empty(shape):
    A = torch.empty(shape, dtype=torch.float16)
    rows = shape[0] * (shape[1] if len(shape) == 3 else 1)
    q, stats, outliers = F.int8_vectorwise_quant(A)
    assert q.shape == shape and q.dtype == torch.int8 and stats.shape == (rows,) and outliers is None
    _, _, outliers = F.int8_vectorwise_quant(A, threshold=3.0)
    assert outliers.shape == (0,) and outliers.dtype == torch.int64
    assert F.int8_vectorwise_dequant(q, stats).shape == shape


def test_int8_linear_matmul():
    torch.manual_seed(9)
    A = torch.randint(-127, 128, (2, 5, 48), dtype=torch.int8)
    B = torch.randint(-127, 128, (7, 48), dtype=torch.int8)
    C = F.int8_linear_matmul(A, B)
    ref = (A.double().reshape(-1, 48) @ B.double().t()).reshape(2, 5, 7)
    assert C.dtype == torch.int32 and torch.equal(C.double(), ref)
    out = torch.empty(2, 5, 7, dtype=torch.int32)
    assert F.int8_linear_matmul(A, B, out=out) is out and torch.equal(out, C)
    assert F.int8_linear_matmul(A[:, :0], B).shape == (2, 0, 7)
    assert F.int8_linear_matmul(A, B[:0]).shape == (2, 5, 0)
    zero_k = F.int8_linear_matmul(A[..., :0], B[:, :0])
    assert zero_k.shape == (2, 5, 7) and (zero_k == 0).all()
    with pytest.raises(TypeError, match="A"):
        F.int8_linear_matmul(A.float(), B)
    with pytest.raises(TypeError, match="B"):
        F.int8_linear_matmul(A, B.int())
    with pytest.raises(ValueError, match="share K"):
        F.int8_linear_matmul(A, B[:, :40])


def test_int8_mm_dequant():
    torch.manual_seed(10)
    C = torch.randint(-200000, 200000, (9, 12), dtype=torch.int32)
    rs, cs = torch.rand(9) * 4, torch.rand(12) * 4
    bias = torch.randn(12, dtype=torch.float16)
    out = F.int8_mm_dequant(C, rs, cs, bias=bias)
    ref = C.double() * rs.double()[:, None] * cs.double()[None, :] / (127 * 127) + bias.double()
    assert out.dtype == torch.float16 and torch.allclose(out.double(), ref, rtol=2e-3, atol=2e-3)
    buf = torch.empty(9, 12, dtype=torch.float16)
    assert F.int8_mm_dequant(C, rs, cs, out=buf) is buf
    C3 = C.reshape(3, 3, 12)
    assert torch.equal(F.int8_mm_dequant(C3, rs, cs), F.int8_mm_dequant(C, rs, cs).reshape(3, 3, 12))
    empty = F.int8_mm_dequant(C[:0], rs[:0], cs)
    assert empty.shape == (0, 12) and empty.dtype == torch.float16
    with pytest.raises(ValueError, match="int32"):
        F.int8_mm_dequant(C.float(), rs, cs)
    with pytest.raises(ValueError, match="row_stats"):
        F.int8_mm_dequant(C, rs[:5], cs)


def test_int8_product_through_the_functions():
    """The LLM.int8() product built from the documented functions, against float64 matmul."""
    torch.manual_seed(11)
    X = torch.randn(6, 64, dtype=torch.float16)
    W = torch.randn(10, 64, dtype=torch.float16)
    qx, sx, _ = F.int8_vectorwise_quant(X)
    qw, sw, _ = F.int8_vectorwise_quant(W)
    Y = F.int8_mm_dequant(F.int8_linear_matmul(qx, qw), sx, sw)
    ref = X.double() @ W.double().t()
    assert ((Y.double() - ref).abs().max() / ref.abs().max()) < 0.03


def test_int8_double_quant():
    torch.manual_seed(12)
    A = torch.randn(8, 24, dtype=torch.float16)
    A[2, 5] = 10.0
    for threshold in (0.0, 6.0):
        q_row, q_col, rs, cs, outliers = F.int8_double_quant(A, threshold=threshold)
        r_q, r_s, r_o = F.int8_vectorwise_quant(A, threshold=threshold)
        assert torch.equal(q_row, r_q) and torch.equal(rs, r_s)
        X = A.double()
        if threshold:
            X = X.masked_fill(X.abs() >= threshold, 0)
            assert outliers.tolist() == [5]
        else:
            assert outliers is None
        ref_cs = X.abs().amax(0)
        assert torch.equal(cs.double(), ref_cs.float().double())
        ref_col = torch.round(X * 127 / ref_cs.clamp_min(1e-30)[None, :])
        assert (q_col.double() - ref_col).abs().max() <= 1
    with pytest.raises(ValueError, match="row_stats"):
        F.int8_double_quant(A, row_stats=torch.empty(8))


# ---------------------------------------------------------------- gemv_4bit
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
def test_gemv_4bit_against_dequantize_then_matmul(storage, nested, dtype):
    torch.manual_seed(13)
    W = torch.randn(24, 128, dtype=dtype)
    packed, state = F.quantize_4bit(W, quant_type="nf4", compress_statistics=nested, quant_storage=storage)
    Wd = F.dequantize_4bit(packed, state).double()
    for shape in [(1, 128), (3, 128), (2, 1, 128)]:
        A = torch.randn(shape, dtype=dtype)
        y = F.gemv_4bit(A, packed.t(), state=state)
        ref = A.double() @ Wd.t()
        assert y.dtype == dtype and y.shape == shape[:-1] + (24,)
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        assert ((y.double() - ref).abs().max() / ref.abs().max()) < tol
    out = torch.empty(1, 24, dtype=dtype)
    assert F.gemv_4bit(A.reshape(2, 128)[:1], packed, out=out, state=state) is out
    assert F.gemv_4bit(torch.empty(0, 128, dtype=dtype), packed.t(), state=state).shape == (0, 24)
    with pytest.raises(ValueError, match="state"):
        F.gemv_4bit(A, packed.t())
    with pytest.raises(ValueError, match="columns"):
        F.gemv_4bit(torch.randn(1, 64, dtype=dtype), packed.t(), state=state)



# ---------------------------------------------------------------- optimizer updates
def run_bnb_optimizer(cls, p0, grads, **kw):
    """p after len(grads) steps of a bnb.optim class (the library's own verified optimizers)."""
    p = torch.nn.Parameter(p0.clone())
    opt = cls([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def test_optimizer_update_32bit_adam():
    torch.manual_seed(16)
    p0 = torch.randn(3000)
    grads = [torch.randn(3000) for _ in range(4)]
    p, m, v = p0.clone(), torch.zeros(3000), torch.zeros(3000)
    for t, g in enumerate(grads, 1):
        F.optimizer_update_32bit("adam", g, p, m, 0.9, 1e-8, t, 1e-2, state2=v, beta2=0.999, weight_decay=0.1)
    ref = run_bnb_optimizer(bnb.optim.Adam, p0, grads, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
                            optim_bits=32)
    assert torch.equal(p, ref)
    # float64 Adam with decoupled weight decay after the step
    P, M, V = p0.double(), torch.zeros(3000, dtype=torch.float64), torch.zeros(3000, dtype=torch.float64)
    for t, g in enumerate(grads, 1):
        g = g.double()
        M = 0.9 * M + 0.1 * g
        V = 0.999 * V + 0.001 * g * g
        P = P - 1e-2 * (M / (1 - 0.9 ** t)) / ((V / (1 - 0.999 ** t)).sqrt() + 1e-8)
        P = P * (1 - 1e-2 * 0.1)
    assert (p.double() - P).abs().max() < 1e-5
    assert torch.allclose(m.double(), M, atol=1e-6) and torch.allclose(v.double(), V, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "lion", "momentum", "rmsprop"])
def test_optimizer_update_8bit_blockwise_matches_bnb_optim(name):
    torch.manual_seed(17)
    n = 5000
    p0 = torch.randn(n, dtype=torch.bfloat16)
    grads = [torch.randn(n, dtype=torch.bfloat16) for _ in range(3)]
    two = name == "adam"
    blocks = -(-n // 256)
    p, s1 = p0.clone(), torch.zeros(n, dtype=torch.uint8)
    s2 = torch.zeros(n, dtype=torch.uint8) if two else None
    a1, a2 = torch.zeros(blocks), (torch.zeros(blocks) if two else None)
    q1, q2 = F.create_dynamic_map(signed=True), (F.create_dynamic_map(signed=False) if two else None)
    settings = {"adam": (bnb.optim.Adam, dict(lr=1e-3, betas=(0.9, 0.995), eps=1e-6), (0.9, 0.995, 1e-6)),
                "lion": (bnb.optim.Lion, dict(lr=1e-3, betas=(0.9, 0.99)), (0.9, 0.99, 0.0)),
                "momentum": (bnb.optim.SGD, dict(lr=1e-2, momentum=0.9), (0.9, 0.0, 0.0)),
                "rmsprop": (bnb.optim.RMSprop, dict(lr=1e-3, alpha=0.9, eps=1e-6), (0.9, 0.0, 1e-6))}
    cls, kw, (beta1, beta2, eps) = settings[name]
    for t, g in enumerate(grads, 1):
        F.optimizer_update_8bit_blockwise(name, g, p, s1, s2, beta1, beta2, 0.0, 0.0, eps, t, kw["lr"], q1, q2, a1,
                                          a2)
    assert torch.equal(p, run_bnb_optimizer(cls, p0, grads, optim_bits=8, **kw))
    assert not torch.equal(p, p0) and (a1 > 0).all()


def test_optimizer_update_lamb_clipping_and_bad_arguments():
    torch.manual_seed(18)
    p0, grads = torch.randn(700), [torch.randn(700) * 5 for _ in range(3)]
    p, m, v, unorm = p0.clone(), torch.zeros(700), torch.zeros(700), torch.zeros(1)
    for t, g in enumerate(grads, 1):
        F.optimizer_update_32bit("lamb", g, p, m, 0.9, 1e-8, t, 0.1, state2=v, beta2=0.999, unorm_vec=unorm,
                                 max_unorm=0.01)
    ref = run_bnb_optimizer(bnb.optim.LAMB, p0, grads, lr=0.1, max_unorm=0.01, optim_bits=32)
    assert torch.equal(p, ref)
    # the clip holds: each step moves p by at most max_unorm * ||p|| (plus rounding)
    q, m2, v2 = p0.clone(), torch.zeros(700), torch.zeros(700)
    before = q.clone()
    F.optimizer_update_32bit("lamb", grads[0], q, m2, 0.9, 1e-8, 1, 0.1, state2=v2, beta2=0.999, unorm_vec=unorm,
                             max_unorm=0.01)
    assert (q - before).norm() <= 0.01 * before.norm() * 0.1 * 1.001
    with pytest.raises(ValueError, match="optimizer_name"):
        F.optimizer_update_32bit("adamax", grads[0], p, m, 0.9, 1e-8, 1, 0.1)
    with pytest.raises(ValueError, match="unorm_vec"):
        F.optimizer_update_32bit("lamb", grads[0], p, m, 0.9, 1e-8, 1, 0.1, state2=v, max_unorm=1.0)
    with pytest.raises(ValueError, match="state1"):
        F.optimizer_update_32bit("momentum", grads[0], p, m.to(torch.uint8), 0.9, 1e-8, 1, 0.1)
    with pytest.raises(ValueError, match="g and p"):
        F.optimizer_update_32bit("momentum", grads[0].half(), p, m, 0.9, 1e-8, 1, 0.1)
    empty = torch.empty(0)
    F.optimizer_update_32bit("adam", empty, empty.clone(), empty.clone(), 0.9, 1e-8, 1, 0.1, state2=empty.clone())


# ---------------------------------------------------------------- helpers
def test_is_on_gpu_get_ptr_paged_and_cpu_features():
    a, b = torch.zeros(3), torch.ones(2)
    assert F.is_on_gpu([a, None, b]) is True
    assert F.get_ptr(None) is None and F.get_ptr(a).value == a.data_ptr()
    paged = F.get_paged(4, 5, dtype=torch.float16, device="cpu")
    assert paged.shape == (4, 5) and paged.dtype == torch.float16 and paged.is_paged and (paged == 0).all()
    assert F.is_on_gpu([paged, a])
    F.prefetch_tensor(paged)  # nothing to move on the CPU, but accepted
    with pytest.raises(ValueError, match="paged"):
        F.prefetch_tensor(a)
    manager = F.GlobalPageManager.get_instance()
    assert manager is F.GlobalPageManager.get_instance() and isinstance(manager.paged_tensors, list)
    with pytest.raises(RuntimeError):
        F.GlobalPageManager()
    assert isinstance(F.has_avx512bf16(), bool)
    assert F.pack_dict_to_tensor is U.pack_dict_to_tensor
    assert F.lib is bitsandbytes.cextension.lib and F.C == 127.0


def test_utils_packing():
    d = {"quant_type": "fp4", "blocksize": 128, "shape": [3, 4], "nested_offset": 0.25, "name": "é"}
    t = U.pack_dict_to_tensor(d)
    assert t.dtype == torch.uint8 and t.dim() == 1
    assert bytes(t.numpy()) == json.dumps(d).encode("utf-8")
    assert U.unpack_tensor_to_dict(t) == d
    with pytest.raises(ValueError, match="JSON"):
        U.unpack_tensor_to_dict(t[:-3])
    with pytest.raises(ValueError, match="object"):
        U.unpack_tensor_to_dict(U.pack_dict_to_tensor({"a": 1})[:0].new_tensor(list(b"[1]"), dtype=torch.uint8))
    with pytest.raises(TypeError):
        U.pack_dict_to_tensor([1, 2])
    U.sync_gpu(t)


def test_utils_replace_linear_and_outliers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False)))
    model.lm_head = torch.nn.Linear(8, 2)
    made = []

    def replacement(i, o, bias):
        made.append((i, o, bias))
        return torch.nn.Identity()

    U.replace_linear(model, replacement)
    assert made == [(4, 8, True), (8, 8, False)]
    assert isinstance(model[0], torch.nn.Identity) and isinstance(model[2][0], torch.nn.Identity)
    assert isinstance(model.lm_head, torch.nn.Linear)
    torch.manual_seed(14)
    W = torch.randn(256, 64)
    W[:, 9] *= 30
    assert U.find_outlier_dims(W).tolist() == [9]
    assert U.find_outlier_dims(W, topk=1).tolist() == [9]


# ---------------------------------------------------------------- cextension, research
def test_cextension_attributes():
    from bitsandbytes import cextension as C

    assert C.HIP_ENVIRONMENT == bool(torch.version.hip)
    expected = "ROCm" if torch.version.hip else ("CUDA" if torch.cuda.is_available() else "CPU")
    assert C.BNB_BACKEND == expected
    assert isinstance(C.ROCM_WARP_SIZE_64, bool) and isinstance(C.ROCM_GPU_ARCH, str)
    gpu = any(b["name"] in ("cuda", "hip") and b["available"] for b in bnb.backends())
    assert C.lib.compiled_with_cuda == gpu == C.COMPILED_WITH_CUDA
    assert C.lib.bnb_status_string is bnb._lib.lib.bnb_status_string
    with pytest.raises(NotImplementedError, match="cquantize_blockwise_fp16"):
        C.lib.cquantize_blockwise_fp16(None)
    with pytest.raises(NotImplementedError, match="cgemm_4bit_inference"):
        C.lib["cgemm_4bit_inference"]()


def test_research_names_raise_not_implemented():
    from bitsandbytes import research

    for name in ("matmul_fp8_global", "matmul_fp8_mixed", "switchback_bnb"):
        with pytest.raises(NotImplementedError, match=name):
            getattr(research, name)(torch.zeros(2, 2), torch.zeros(2, 2))
    for cls in (research.nn.LinearFP8Mixed, research.nn.LinearFP8Global):
        assert issubclass(cls, torch.nn.Linear)
        with pytest.raises(NotImplementedError, match=cls.__name__):
            cls(4, 4)


# ---------------------------------------------------------------- the same on a CUDA device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_functions_on_cuda_match_the_cpu():
    torch.manual_seed(15)
    dev = "cuda"
    A = torch.randn(40, 128, dtype=torch.float16)
    for quant_type in ("nf4", "fp4"):
        for storage in (torch.uint8, torch.bfloat16):
            pc, sc = F.quantize_4bit(A, quant_type=quant_type, compress_statistics=True, quant_storage=storage)
            pg, sg = F.quantize_4bit(A.to(dev), quant_type=quant_type, compress_statistics=True,
                                     quant_storage=storage)
            assert pg.device.type == "cuda" and sg.absmax.device.type == "cuda" and sg.code.device.type == "cuda"
            assert torch.equal(pg.cpu().view(torch.uint8), pc.view(torch.uint8))
            assert torch.equal(sg.absmax.cpu(), sc.absmax)
            assert torch.equal(F.dequantize_4bit(pg, sg).cpu(), F.dequantize_4bit(pc, sc))
            X = torch.randn(3, 128, dtype=torch.float16)
            ref = X.double() @ F.dequantize_4bit(pc, sc).double().t()
            y = F.gemv_4bit(X.to(dev), pg.t(), state=sg)
            assert ((y.cpu().double() - ref).abs().max() / ref.abs().max()) < 2e-2
    qc, stc = F.quantize_blockwise(A, blocksize=256, nested=True)
    qg, stg = F.quantize_blockwise(A.to(dev), blocksize=256, nested=True)
    assert torch.equal(qg.cpu(), qc)
    assert torch.equal(F.dequantize_blockwise(qg, stg).cpu(), F.dequantize_blockwise(qc, stc))
    q8c, rc, _ = F.int8_vectorwise_quant(A)
    q8g, rg, _ = F.int8_vectorwise_quant(A.to(dev))
    assert torch.equal(q8g.cpu(), q8c) and torch.equal(rg.cpu(), rc)
    Cg = F.int8_linear_matmul(q8g, q8g[:7])
    assert torch.equal(Cg.cpu(), F.int8_linear_matmul(q8c, q8c[:7]))
    assert torch.allclose(F.int8_mm_dequant(Cg, rg, rg[:7]).cpu().float(),
                          F.int8_mm_dequant(Cg.cpu(), rc, rc[:7]).float(), rtol=1e-3, atol=1e-3)
    # empty inputs on the device
    e, es = F.quantize_4bit(torch.empty(0, 64, device=dev))
    assert e.shape == (0, 1) and e.device.type == "cuda" and F.dequantize_4bit(e, es).shape == (0, 64)
    assert F.int8_vectorwise_quant(torch.empty(0, 8, device=dev, dtype=torch.float16))[0].shape == (0, 8)
    paged = F.get_paged(16, dtype=torch.float32, device=dev)
    assert paged.is_paged and paged.page_deviceid == 0 and (paged.cpu() == 0).all()
    F.prefetch_tensor(paged)
    F.prefetch_tensor(paged, to_cpu=True)
    torch.cuda.synchronize()


@pytest.mark.parametrize("nested", [False, True])
def test_quant_state_errors_name_the_item(nested):
    _, state = make_state(nested)
    prefix = "model.layers.0.mlp.up_proj.weight."
    good = {prefix + k: v for k, v in state.as_dict(packed=True).items()}
    bad = dict(good)
    bad[prefix + "absmax"] = good[prefix + "absmax"][:-1]
    with pytest.raises(ValueError, match=r"up_proj\.weight\.absmax.*holds 31"):
        F.QuantState.from_dict(bad)
    blob_key = prefix + "quant_state.bitsandbytes__nf4"
    for broken in (good[blob_key][:-4], good[blob_key][:0], torch.tensor(list(b'{"x": 1}'), dtype=torch.uint8)):
        with pytest.raises(ValueError, match="bitsandbytes__nf4"):
            F.QuantState.from_dict({**good, blob_key: broken})
    if nested:
        bad = {**good, prefix + "nested_absmax": good[prefix + "nested_absmax"][:0]}
        with pytest.raises(ValueError, match="nested_absmax"):
            F.QuantState.from_dict(bad)
    assert F.QuantState.from_dict(good) == state
