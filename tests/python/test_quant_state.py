"""QuantState dictionaries and the Linear4bit state-dict layout (docs/FORMATS.md §5), numpy and torch."""

import json

import numpy as np
import pytest

import bnb
from conftest import HAVE_TORCH, needs_cpu, needs_torch

pytestmark = needs_cpu


def expected_blob(quant_type, blocksize, dtype, shape, offset=None):
    """The JSON that bitsandbytes writes, spelled out by hand (json.dumps defaults)."""
    text = f'{{"quant_type": "{quant_type}", "blocksize": {blocksize}, "dtype": "{dtype}", "shape": {list(shape)}'
    if offset is not None:
        text += f', "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": {float(np.float32(offset))!r}'
    return (text + "}").encode("utf-8")


def to_bytes(a):
    return bytes(np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.uint8))


def test_packed_dict_plain_4bit(rng):
    A = rng.standard_normal((48, 64)).astype(np.float16)
    _, state = bnb.quantize_4bit(A, blocksize=128, quant_type="fp4")
    d = state.as_dict(packed=True)
    assert list(d) == ["absmax", "quant_map", "quant_state.bitsandbytes__fp4"]
    assert to_bytes(d["quant_state.bitsandbytes__fp4"]) == expected_blob("fp4", 128, "float16", (48, 64))
    assert d["quant_state.bitsandbytes__fp4"].dtype == np.uint8


def test_packed_dict_nested_4bit_and_round_trip(rng):
    A = rng.standard_normal((40, 96)).astype(np.float32)
    packed, state = bnb.quantize_4bit(A, blocksize=64, compress_statistics=True, quant_type="nf4")
    d = state.as_dict(packed=True)
    assert list(d) == ["absmax", "quant_map", "nested_absmax", "nested_quant_map",
                       "quant_state.bitsandbytes__nf4"]
    assert to_bytes(d["quant_state.bitsandbytes__nf4"]) == expected_blob("nf4", 64, "float32", (40, 96),
                                                                          state.offset)
    assert d["nested_quant_map"] is not state.state2.code
    back = bnb.QuantState.from_dict(d)
    assert back == state and back.nested and back.offset.dtype == np.float32
    assert np.array_equal(bnb.dequantize_4bit(packed, back), bnb.dequantize_4bit(packed, state))
    # unpacked items load too
    plain = state.as_dict()
    assert plain["shape"] == [40, 96] and plain["nested_offset"] == float(state.offset)
    assert bnb.QuantState.from_dict(plain) == state


def test_from_dict_strips_prefixes_and_rejects_bad_dicts(rng):
    _, state = bnb.quantize_4bit(rng.standard_normal(1000).astype(np.float32), quant_type="nf4")
    d = {"model.layer.weight." + k: v for k, v in state.as_dict(packed=True).items()}
    assert bnb.QuantState.from_dict(d) == state
    with pytest.raises(ValueError, match="found neither"):
        bnb.QuantState.from_dict({"absmax": state.absmax})
    two = dict(d)
    two["other.quant_state.bitsandbytes__fp4"] = d["model.layer.weight.quant_state.bitsandbytes__nf4"]
    with pytest.raises(ValueError, match="exactly one"):
        bnb.QuantState.from_dict(two)
    odd = dict(d)
    odd["x.quant_state.bitsandbytes__int4"] = odd.pop("model.layer.weight.quant_state.bitsandbytes__nf4")
    with pytest.raises(ValueError, match="exactly one"):
        bnb.QuantState.from_dict(odd)
    extra = dict(d)
    extra["model.layer.weight.scale"] = state.absmax
    with pytest.raises(ValueError, match="unexpected quant_state items \\['scale'\\]"):
        bnb.QuantState.from_dict(extra)


def test_8bit_dict_has_no_packed_key(rng):
    _, state = bnb.quantize_blockwise(rng.standard_normal(9000).astype(np.float32), blocksize=512, nested=True)
    d = state.as_dict(packed=True)
    assert d["quant_type"] is None and d["shape"] is None and d["blocksize"] == 512
    assert d["nested_blocksize"] == 512 and d["quant_map"].shape == (256,)
    assert not any(k.startswith("quant_state") for k in d)


def test_legacy_positional_view(rng):
    _, state = bnb.quantize_4bit(rng.standard_normal(256).astype(np.float32), compress_statistics=True)
    absmax, shape, dtype, blocksize, nested, quant_type = (state[i] for i in range(6))
    assert absmax is state.absmax and shape == (256,) and blocksize == 64 and quant_type == "fp4"
    assert nested[0] is state.offset and nested[1] is state.state2


# ---------------------------------------------------------------- the Linear4bit layout from the golden data
def golden_linear4bit(golden, case):
    """A state dict in bitsandbytes' Linear4bit key layout, assembled from a golden nested case."""
    out = case["outputs"]
    qt, bs = case["params"]["quant_type"], case["params"]["blocksize"]
    offset = golden.load(out["absmax_offset"])[0].reshape(())
    dtype = case["inputs"]["A"]["dtype"]
    shape = case["inputs"]["A"]["shape"]
    tables = golden.cases("code_tables")[0]["outputs"]
    return {
        "lin.weight": golden.load(out["packed"])[0],
        "lin.bias": np.arange(3, dtype=np.float32),
        "lin.weight.absmax": golden.load(out["absmax_q"])[0],
        "lin.weight.quant_map": golden.load(tables[qt])[0],
        "lin.weight.nested_absmax": golden.load(out["absmax_absmax"])[0],
        "lin.weight.nested_quant_map": golden.load(tables["dynamic_signed"])[0],
        f"lin.weight.quant_state.bitsandbytes__{qt}": np.frombuffer(
            expected_blob(qt, bs, dtype, shape, offset), dtype=np.uint8).copy(),
    }


def golden_dequant(golden, case):
    d, dtype = golden.load(case["outputs"]["dequant"])
    return d, dtype


def as_bits(a):
    a = np.asarray(a)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def test_linear4bit_golden_state_dict_loads_and_dequantizes_bit_exactly(golden):
    cases = golden.cases("quantize_4bit_nested")
    assert cases
    for case in cases:
        sd = golden_linear4bit(golden, case)
        weight, state, bias = bnb.load_linear4bit_state_dict(sd, prefix="lin.")
        assert state.nested and state.quant_type == case["params"]["quant_type"]
        assert weight is sd["lin.weight"] and bias is sd["lin.bias"]
        want, want_dtype = golden_dequant(golden, case)
        out = bnb.dequantize_4bit(weight, state, dtype="float32" if want_dtype == "float32" else None)
        if want_dtype == "bfloat16":
            out = np.asarray(out).view(np.uint16)
        assert np.array_equal(as_bits(out).ravel(), as_bits(want).ravel()), case["params"]
        # ours -> the same layout: identical keys, order and bytes
        again = bnb.linear4bit_state_dict(weight, state, bias=bias, prefix="lin.")
        assert list(again) == list(sd)
        for key in sd:
            assert to_bytes(np.asarray(again[key]).view(np.uint8)) == to_bytes(np.asarray(sd[key]).view(np.uint8)), key


def test_our_quantization_writes_the_golden_layout(golden):
    """Quantizing the golden input ourselves gives the golden keys, codes and (given the offset) blob."""
    for case in golden.cases("quantize_4bit_nested"):
        A, dtype = golden.load(case["inputs"]["A"])
        kw = {"dtype": "bfloat16"} if dtype == "bfloat16" else {}
        qt, bs = case["params"]["quant_type"], case["params"]["blocksize"]
        packed, state = bnb.quantize_4bit(A, blocksize=bs, compress_statistics=True, quant_type=qt, **kw)
        ours = bnb.linear4bit_state_dict(packed, state, prefix="lin.")
        theirs = golden_linear4bit(golden, case)
        del theirs["lin.bias"]
        assert list(ours) == list(theirs)
        for key in ("lin.weight", "lin.weight.quant_map", "lin.weight.nested_quant_map"):
            assert to_bytes(np.asarray(ours[key]).view(np.uint8)) == to_bytes(theirs[key].view(np.uint8)), key
        blob = json.loads(to_bytes(ours[f"lin.weight.quant_state.bitsandbytes__{qt}"]))
        golden_offset = golden.load(case["outputs"]["absmax_offset"])[0].reshape(())
        assert np.isclose(blob["nested_offset"], golden_offset, rtol=1e-6)
        if np.float32(blob["nested_offset"]) == golden_offset:  # the codes depend on the offset's last bit
            for key in ("lin.weight.absmax", "lin.weight.nested_absmax",
                        f"lin.weight.quant_state.bitsandbytes__{qt}"):
                assert to_bytes(np.asarray(ours[key]).view(np.uint8)) == to_bytes(theirs[key].view(np.uint8)), key


@needs_torch
def test_torch_state_dict_round_trip(rng):
    import torch

    A = torch.from_numpy(rng.standard_normal((64, 80)).astype(np.float32)).to(torch.bfloat16)
    packed, state = bnb.quantize_4bit(A, blocksize=64, compress_statistics=True, quant_type="nf4")
    assert state.dtype == torch.bfloat16 and isinstance(state.offset, torch.Tensor)
    sd = bnb.linear4bit_state_dict(packed, state, prefix="m.")
    blob = sd["m.weight.quant_state.bitsandbytes__nf4"]
    assert isinstance(blob, torch.Tensor) and blob.dtype == torch.uint8
    assert to_bytes(blob) == expected_blob("nf4", 64, "bfloat16", (64, 80), state.offset.item())
    weight, back, _ = bnb.load_linear4bit_state_dict(sd, prefix="m.")
    assert back == state and back.dtype == torch.bfloat16
    assert torch.equal(bnb.dequantize_4bit(weight, back), bnb.dequantize_4bit(packed, state))
