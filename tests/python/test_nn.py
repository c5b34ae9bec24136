"""bnb.nn (Linear4bit, Linear8bitLt), bnb.matmul and bnb.matmul_4bit against float64 references,
bitsandbytes' state-dict layouts (golden data), the quantization rule, torch.compile and errors.
Skipped without torch (one test checks that `import bnb` itself needs no torch)."""

import copy
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import bnb
from conftest import load_golden, needs_cpu, torch_devices

torch = pytest.importorskip("torch")
pytestmark = needs_cpu
DEVICES = torch_devices()
GOLDEN = load_golden()
TOL_4BIT = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}  # relative error norm


def rel_err(got, want):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).norm() / want.norm()).item()


def randn(shape, device, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dtype)


# ---------------------------------------------------------------- Linear4bit
def dequantized_weight(layer):
    return bnb.dequantize_4bit(layer.weight.packed_uint8(), layer.quant_state, dtype=torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("quant_type,nested", [("nf4", True), ("fp4", False), ("nf4", False)])
@pytest.mark.parametrize("shape", [(128, 64), (256, 96), (67, 33), (64, 1), (4096 // 32, 130)])
def test_linear4bit_forward_matches_float64(device, dtype, quant_type, nested, shape):
    K, N = shape
    layer = bnb.nn.Linear4bit(K, N, compute_dtype=dtype, compress_statistics=nested, quant_type=quant_type)
    with torch.no_grad():
        layer.weight.data = randn((N, K), "cpu", seed=1)  # still float: quantized on the move below
        layer.bias.data = randn((N,), "cpu", seed=2)
    layer = layer.to(device)
    assert layer.weight.bnb_quantized and layer.weight.dtype == torch.uint8
    assert layer.weight.shape == ((N * K + 1) // 2, 1) and layer.quant_state.nested == nested
    for lead in [(1,), (5,), (2, 3)]:
        x = randn(lead + (K,), device, dtype, seed=3)
        y = layer(x)
        assert y.shape == lead + (N,) and y.dtype == dtype and y.device == x.device
        want = x.double() @ dequantized_weight(layer).double().T + layer.bias.to(dtype).double()
        assert rel_err(y, want) <= TOL_4BIT[dtype], (lead, rel_err(y, want))


@pytest.mark.parametrize("device", DEVICES)
def test_linear4bit_quantization_rule(device):
    layer = bnb.nn.LinearNF4(128, 32)
    assert layer.weight.quant_type == "nf4" and not layer.weight.bnb_quantized
    assert layer.weight.dtype == torch.float32
    layer = layer.to(torch.bfloat16)  # a dtype alone: still float
    assert not layer.weight.bnb_quantized and layer.weight.dtype == torch.bfloat16
    w = layer.weight.data.clone()
    x = randn((3, 128), device, torch.bfloat16)
    if device != "cpu":
        layer = layer.to(device)
        assert layer.weight.bnb_quantized and layer.weight.device == x.device
    else:
        y = layer(x)  # first forward quantizes on the input's device
        assert layer.weight.bnb_quantized and y.dtype == torch.bfloat16
    assert layer.quant_state.dtype == torch.bfloat16 and layer.quant_state.shape == (32, 128)
    packed, state = bnb.quantize_4bit(w.to(device), blocksize=64, compress_statistics=True, quant_type="nf4")
    assert torch.equal(layer.weight.data, packed)
    # moving a quantized parameter moves it in place, state included
    p = layer.weight
    assert p.to(device) is p and p.cpu() is p and p.device.type == "cpu"
    assert p.quant_state.absmax.device.type == "cpu" and p.quant_state.state2.absmax.device.type == "cpu"
    assert bnb.nn.LinearFP4(64, 8).weight.quant_type == "fp4"


@pytest.mark.parametrize("device", DEVICES)
def test_linear4bit_state_dict_round_trip(device):
    layer = bnb.nn.Linear4bit(192, 40, quant_type="nf4", compute_dtype=torch.float16).to(device)
    sd = layer.state_dict()
    assert list(sd) == ["weight", "bias", "weight.absmax", "weight.quant_map", "weight.nested_absmax",
                        "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4"]
    assert sd["weight"].dtype == torch.uint8 and type(sd["weight"]) is torch.Tensor
    blob = json.loads(bytes(sd["weight.quant_state.bitsandbytes__nf4"].cpu().tolist()))
    assert blob["quant_type"] == "nf4" and blob["blocksize"] == 64 and blob["shape"] == [40, 192]
    assert blob["dtype"] == "float32" and blob["nested_blocksize"] == 256
    other = bnb.nn.Linear4bit(192, 40, compute_dtype=torch.float16, quant_type="fp4", compress_statistics=False,
                              device=device)
    assert str(other.load_state_dict(sd)) == "<All keys matched successfully>"
    assert other.weight.bnb_quantized and other.weight.quant_type == "nf4" and other.quant_state == layer.quant_state
    x = randn((4, 192), device)
    assert torch.equal(other(x), layer(x))
    again = other.state_dict()
    assert list(again) == list(sd) and all(torch.equal(again[k], sd[k]) for k in sd)
    # a float state dict: loaded as float, quantized like any float weight
    plain = torch.nn.Linear(192, 40)
    fresh = bnb.nn.Linear4bit(192, 40, quant_type="fp4")
    fresh.load_state_dict(plain.state_dict())
    assert not fresh.weight.bnb_quantized and torch.equal(fresh.weight.data, plain.weight.data)
    fresh = fresh.to(device)
    assert fresh.weight.bnb_quantized and torch.equal(fresh.bias.cpu(), plain.bias.detach())
    # quantization to another storage dtype keeps the bytes (bitsandbytes' quant_storage)
    st = bnb.nn.Linear4bit(192, 40, quant_type="nf4", quant_storage=torch.bfloat16)
    st.load_state_dict(plain.state_dict())
    st = st.to(device)
    ref = bnb.nn.Linear4bit(192, 40, quant_type="nf4")
    ref.load_state_dict(plain.state_dict())
    ref = ref.to(device)
    assert st.weight.dtype == torch.bfloat16 and torch.equal(st.weight.packed_uint8().flatten(), ref.weight.data.flatten())
    assert torch.equal(st(x), ref(x))
    clone = copy.deepcopy(ref)
    assert clone.quant_state == ref.quant_state and clone.quant_state is not ref.quant_state
    assert torch.equal(clone(x), ref(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_linear4bit_under_an_fsdp_parameter(device, storage):
    """FSDP replaces the layer's Params4bit by its own plain parameter (the all-gathered packed codes,
    viewed as quant_storage) without the Params4bit attributes: the layer computes with its own
    quantization state, leaves FSDP's parameter in place, and reads and writes bitsandbytes' keys."""
    layer = bnb.nn.Linear4bit(192, 40, quant_type="nf4", quant_storage=storage).to(device)
    x = randn((3, 192), device, seed=5).requires_grad_()
    want = layer(x)
    (want_grad,) = torch.autograd.grad(want.sum(), x)
    sd = layer.state_dict()
    assert layer.weight.dtype == storage
    fsdp_param = torch.nn.Parameter(layer.weight.data.clone(), requires_grad=False)
    layer._parameters["weight"] = fsdp_param
    got = layer(x)
    (got_grad,) = torch.autograd.grad(got.sum(), x)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)
    assert layer.weight is fsdp_param and "quantized=True" in repr(layer)
    again = layer.state_dict()
    as_bytes = lambda t: t.view(torch.uint8)  # noqa: E731 (codes viewed as a float may hold NaN patterns)
    assert list(again) == list(sd) and all(torch.equal(as_bytes(again[k]), as_bytes(sd[k])) for k in sd)
    # loading copies the codes into FSDP's parameter in place and the state onto the layer
    with torch.no_grad():
        fsdp_param.zero_()
    layer.quant_state = None
    assert str(layer.load_state_dict(sd)) == "<All keys matched successfully>"
    assert layer.weight is fsdp_param and torch.equal(layer(x), want)
    bad = dict(sd, weight=sd["weight"].view(torch.uint8).flatten()[:-2])
    if storage == torch.uint8:
        with pytest.raises(RuntimeError, match="packed weight|holds"):
            layer.load_state_dict(bad)


@pytest.mark.parametrize("device", DEVICES)
def test_linear4bit_loads_a_quantized_weight_in_place(device):
    """A quantized weight of the same storage dtype and shape goes into the layer's own Params4bit
    (FSDP1 keeps that object as a view of its flat parameter, and would drop a new one); its state
    and attributes become the loaded ones, here another quant type and blocksize."""
    layer = bnb.nn.Linear4bit(192, 40, quant_type="fp4", quant_storage=torch.bfloat16).to(device)
    other = bnb.nn.Linear4bit(192, 40, quant_type="nf4", quant_storage=torch.bfloat16, blocksize=128).to(device)
    x = randn((3, 192), device, seed=6)
    y = layer(x)  # the fast path's closure for the old weight
    w, ptr = layer.weight, layer.weight.data_ptr()
    assert str(layer.load_state_dict(other.state_dict())) == "<All keys matched successfully>"
    assert layer.weight is w and w.data_ptr() == ptr
    assert (w.quant_type, w.blocksize, layer.quant_state) == ("nf4", 128, w.quant_state)
    assert torch.equal(layer(x), other(x)) and not torch.equal(layer(x), y)
    uint8 = bnb.nn.Linear4bit(192, 40, quant_type="nf4").to(device)  # another storage: a new parameter
    layer.load_state_dict(uint8.state_dict())
    assert layer.weight is not w and layer.weight.dtype == torch.uint8 and torch.equal(layer(x), uint8(x))


def golden_linear4bit_dict(case, shape, bias):
    """bitsandbytes' Linear4bit keys built from a golden nested case (its flat input viewed as `shape`)."""
    out = case["outputs"]
    qt, bs = case["params"]["quant_type"], case["params"]["blocksize"]
    offset = float(GOLDEN.load(out["absmax_offset"])[0].reshape(()))
    tables = GOLDEN.cases("code_tables")[0]["outputs"]
    blob = json.dumps({"quant_type": qt, "blocksize": bs, "dtype": case["inputs"]["A"]["dtype"], "shape": list(shape),
                       "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset})
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return {
        "lin.weight": t(GOLDEN.load(out["packed"])[0]),
        "lin.bias": bias,
        "lin.weight.absmax": t(GOLDEN.load(out["absmax_q"])[0]),
        "lin.weight.quant_map": t(GOLDEN.load(tables[qt])[0]),
        "lin.weight.nested_absmax": t(GOLDEN.load(out["absmax_absmax"])[0]),
        "lin.weight.nested_quant_map": t(GOLDEN.load(tables["dynamic_signed"])[0]),
        f"lin.weight.quant_state.bitsandbytes__{qt}": torch.frombuffer(bytearray(blob.encode()), dtype=torch.uint8),
    }


def golden_tensor(entry):
    a, dtype = GOLDEN.load(entry)
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


@pytest.mark.parametrize("device", DEVICES)
def test_linear4bit_loads_a_bitsandbytes_state_dict_bit_exactly(device):
    cases = GOLDEN.cases("quantize_4bit_nested")
    assert cases
    N, K = 7, 9367  # the golden inputs hold 65569 = 7 * 9367 values: one [7, 9367] weight
    for case in cases:
        want = golden_tensor(case["outputs"]["dequant"]).reshape(N, K)
        dtype = want.dtype
        sd = golden_linear4bit_dict(case, (N, K), torch.arange(N, dtype=dtype))
        model = torch.nn.Sequential()
        lin = bnb.nn.Linear4bit(K, N, quant_type="fp4", compress_statistics=False, device=device).to(dtype)
        assert not lin.weight.bnb_quantized  # a dtype alone does not quantize; the bias is in `dtype` now
        model.add_module("lin", lin)
        assert str(model.load_state_dict(sd)) == "<All keys matched successfully>"
        layer = model.lin
        assert layer.weight.bnb_quantized and layer.quant_state.quant_type == case["params"]["quant_type"]
        assert layer.weight.device.type == device and layer.quant_state.absmax.device.type == device
        got = bnb.dequantize_4bit(layer.weight, layer.quant_state)
        assert got.dtype == dtype and torch.equal(got.cpu().view(torch.int16 if dtype != torch.float32 else torch.int32),
                                                  want.view(torch.int16 if dtype != torch.float32 else torch.int32))
        x = randn((2, K), device, dtype)
        y = layer(x)
        ref = x.double() @ want.double().to(device).T + torch.arange(N, dtype=torch.float64, device=device)
        assert rel_err(y, ref) <= TOL_4BIT[dtype]
        again = model.state_dict()
        assert list(again) == list(sd)
        for k in sd:
            assert torch.equal(again[k].cpu().view(torch.uint8), sd[k].view(torch.uint8)), k


@pytest.mark.parametrize("device", DEVICES)
def test_linear4bit_under_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = bnb.nn.Linear4bit(128, 192, quant_type="nf4")
            self.down = bnb.nn.LinearFP4(192, 64, compress_statistics=False)

        def forward(self, x):
            return self.down(torch.relu(self.up(x)))

    model = Model().to(device)
    x = randn((4, 128), device)
    eager = model(x)
    try:
        compiled = torch.compile(model, fullgraph=True)
        got = compiled(x)
    except Exception as e:  # pragma: no cover - depends on a working compiler toolchain
        if "compiler" in str(e).lower() and "not found" in str(e).lower():
            pytest.skip(f"torch.compile unavailable here: {e}")
        raise
    assert torch.equal(got, eager)
    with torch.no_grad():
        assert torch.equal(compiled(x), eager)
    # the weight is frozen; gradients reach the input and the bias
    xr = x.clone().requires_grad_()
    model(xr).sum().backward()
    assert xr.grad is not None and model.up.bias.grad is not None
    lin = bnb.nn.Linear4bit(64, 16, quant_type="nf4")  # not quantized: compiling cannot quantize it
    with pytest.raises(Exception, match="not quantized"):
        torch.compile(lin, fullgraph=True)(randn((2, 64), "cpu"))


@pytest.mark.parametrize("device", DEVICES)
def test_linear4bit_non_contiguous_input_and_bad_inputs(device):
    layer = bnb.nn.Linear4bit(128, 48, quant_type="nf4", compute_dtype=torch.float16).to(device)
    base = randn((128, 6), device, torch.float32)
    x = base.t()
    assert not x.is_contiguous()
    y = layer(x)
    assert y.dtype == torch.float32 and torch.equal(y, layer(x.contiguous()))
    assert torch.equal(layer(randn((12, 256), device)[::2, ::2]), layer(randn((12, 256), device)[::2, ::2].contiguous()))
    with pytest.raises(ValueError, match="columns"):
        layer(randn((2, 100), device))
    plain = bnb.nn.Linear4bit(128, 48, quant_type="nf4").to(device)
    with pytest.raises((ValueError, TypeError)):
        plain(torch.ones((2, 128), dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="quant_type"):
        bnb.nn.Linear4bit(64, 8, quant_type="int4")
    bad = layer.state_dict()
    bad["weight.quant_state.bitsandbytes__nf4"] = torch.frombuffer(bytearray(b"{not json"), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="quantization state"):
        bnb.nn.Linear4bit(128, 48).load_state_dict(bad)
    with pytest.raises(RuntimeError, match="does not match"):
        bnb.nn.Linear4bit(128, 40).load_state_dict(layer.state_dict())
    with pytest.raises(RuntimeError, match="Unexpected"):
        bnb.nn.Linear4bit(128, 48).load_state_dict({**layer.state_dict(), "extra": torch.zeros(1)})


def general_path(layer, x):
    """Linear4bit's forward without the eager fast path."""
    return layer._forward(x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("quant_type,nested", [("nf4", True), ("fp4", False)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear4bit_fast_path_is_bit_identical(device, dtype, quant_type, nested, bias):
    K, N = 128, 96
    layer = bnb.nn.Linear4bit(K, N, bias=bias, compute_dtype=dtype, compress_statistics=nested, quant_type=quant_type)
    with torch.no_grad():
        layer.weight.data = randn((N, K), "cpu", seed=1)
        if bias:
            layer.bias.data = randn((N,), "cpu", dtype, seed=2)
    layer = layer.to(device)
    assert layer._fast is None
    with torch.inference_mode():
        layer(randn((1, K), device, dtype, seed=9))  # the general path, then the shortcut is made
        assert layer._fast is not None
        for i, lead in enumerate([(1,), (5,), (2, 3), (1, 1), (2, 1, 1), ()]):
            x = randn(lead + (K,), device, dtype, seed=10 + i)
            y = layer(x)
            want = general_path(layer, x)
            assert y.shape == want.shape == lead + (N,) and y.dtype == dtype and y.device == x.device
            assert torch.equal(y, want), lead
        for empty in (randn((0, K), device, dtype), randn((2, 0, K), device, dtype)):  # no rows: empty results
            for y in (general_path(layer, empty), layer(empty)):
                assert y.shape == empty.shape[:-1] + (N,) and y.dtype == dtype and y.device == empty.device
    with torch.no_grad():  # no_grad (the usual generate() setting) takes it too
        x = randn((1, K), device, dtype, seed=20)
        assert torch.equal(layer(x), general_path(layer, x))
    # grad mode: a bias that requires grad (or an input that does) goes through autograd
    x = randn((3, K), device, dtype, seed=21)
    y = layer(x)
    assert torch.equal(y, general_path(layer, x).detach())
    assert y.requires_grad == bias
    xr = x.clone().requires_grad_()
    layer(xr).float().sum().backward()
    assert xr.grad is not None and xr.grad.shape == x.shape


def test_linear4bit_fast_path_skips_the_general_path(monkeypatch):
    layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4").to("cpu")
    x = randn((1, 64), "cpu", torch.bfloat16)
    with torch.no_grad():
        want = layer(x)
        calls = []
        real = bnb.functional.matmul_4bit
        monkeypatch.setattr(bnb.functional, "matmul_4bit", lambda *a, **k: calls.append(1) or real(*a, **k))
        assert torch.equal(layer(x), want) and not calls
        # inputs that do not fit it take the general path, which casts or copies as before
        for other in (x.float(), randn((64, 2), "cpu", torch.bfloat16).t(), x.half()):
            assert torch.equal(layer(other), general_path(layer, other))
        assert len(calls) == 6
        assert layer._fast is not None
        calls.clear()
        assert torch.equal(layer(x), want) and not calls


def test_linear4bit_fast_path_follows_changes_of_the_layer():
    K, N = 128, 48
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(K, N, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
    x = randn((2, K), "cpu")

    def check():
        with torch.no_grad():
            y = layer(x)
            assert layer._fast is not None
            assert torch.equal(y, general_path(layer, x))
            return y

    y0 = check()
    with torch.no_grad():
        layer.bias.add_(1.0)  # in place: the same memory
    assert torch.allclose(check(), y0 + 1.0, atol=1e-5)
    layer.bias.data = layer.bias.data.clone() * 2  # another tensor behind the same parameter
    check()
    layer.bias = torch.nn.Parameter(torch.zeros(N))  # another parameter
    check()
    layer.bias = None
    y1 = check()
    other = bnb.nn.Linear4bit(K, N, bias=False, quant_type="fp4", compress_statistics=False)
    with torch.no_grad():
        other.weight.data = randn((N, K), "cpu", seed=5)
    other = other.to("cpu")
    layer.load_state_dict(other.state_dict())  # a new weight and quantization state
    y2 = check()
    assert not torch.equal(y1, y2) and torch.equal(y2, other(x))
    w = layer.weight
    w.data = w.data.clone()  # the same parameter, its data elsewhere
    assert torch.equal(check(), y2)
    w.quant_state = copy.deepcopy(w.quant_state)
    assert torch.equal(check(), y2)
    layer.compute_dtype = torch.bfloat16  # now the input is cast: the general path
    with torch.no_grad():
        assert torch.equal(layer(x), general_path(layer, x)) and layer(x).dtype == torch.float32
    layer.compute_dtype = None
    assert torch.equal(check(), y2)
    layer.to("cpu")  # a move drops the shortcut (and the tensors it holds)
    assert layer._fast is None
    assert torch.equal(check(), y2)
    # copies and pickles leave the shortcut behind
    clone = copy.deepcopy(layer)
    assert clone._fast is None and torch.equal(clone(x), y2)
    import pickle

    restored = pickle.loads(pickle.dumps(layer))
    assert restored._fast is None and torch.equal(restored(x), y2)
    # a bias in another dtype than the input: always the general path (it casts the bias)
    mixed = bnb.nn.Linear4bit(K, N, compute_dtype=torch.bfloat16, quant_type="nf4").to("cpu")
    xb = x.to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(mixed(xb), general_path(mixed, xb)) and mixed._fast is None
    # errors after the shortcut exists are the general path's
    with torch.no_grad():
        layer(x)
        with pytest.raises(ValueError, match="columns"):
            layer(randn((2, K + 64), "cpu"))
        with pytest.raises(Exception):
            layer(torch.ones((), dtype=torch.float32))


def watch_fast_path(layer):
    """Wraps the layer's fast-path closure: the list records, per call, whether it answered."""
    real, answered = layer._fast, []

    def run(d, x):
        out = real(d, x)
        answered.append(out is not None and out is not bnb.nn._STALE)
        return out

    layer._fast = run
    return answered


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("rank", [2, 3])
def test_linear4bit_fast_path_falls_back(dtype, rank):
    """Every input or layer change the eager fast path was not made for runs the general path:
    an input that requires grad (grad mode), a non-contiguous input, another dtype, a meta input
    (the host's device index, no data), a weight, quantization state or bias replaced or moved
    in memory, jit tracing. Results equal the general path's and the float64 product with the
    dequantized weight; after each change the shortcut is made again and answers."""
    K, N = 128, 64
    layer = bnb.nn.Linear4bit(K, N, compute_dtype=dtype, quant_type="nf4")
    with torch.no_grad():
        layer.weight.data = randn((N, K), "cpu", seed=1)
        layer.bias.data = randn((N,), "cpu", dtype, seed=2)
    layer = layer.to("cpu")
    lead = (1,) * (rank - 1)
    x = randn(lead + (K,), "cpu", dtype, seed=3)

    def reference(x):
        W = dequantized_weight(layer).double()
        return x.double() @ W.T + layer.bias.double()

    def check(x, fast):
        y = layer(x)
        want = general_path(layer, x)
        assert torch.equal(y.detach(), want.detach()) and y.shape == lead + (N,)
        assert rel_err(y, reference(x)) <= TOL_4BIT[dtype]
        assert answered[-1] is fast
        return y

    with torch.no_grad():
        layer(x)
        answered = watch_fast_path(layer)
        check(x, True)
        check(randn(lead + (2 * K,), "cpu", dtype, seed=4)[..., ::2], False)  # not contiguous
        other = torch.float16 if dtype == torch.bfloat16 else torch.bfloat16
        y = layer(x.to(other))  # another dtype: cast to compute_dtype and back by the general path
        assert answered[-1] is False and y.dtype == other and torch.equal(y, general_path(layer, x.to(other)))
        with pytest.raises(ValueError, match="meta"):
            layer(torch.empty(lead + (K,), dtype=dtype, device="meta"))
        assert answered[-1] is False
        check(x.clone().requires_grad_(), True)  # no grad mode: the shortcut
    # grad mode: an input that requires grad goes through autograd
    xr = x.clone().requires_grad_()
    layer.bias.requires_grad_(False)
    check(x, True)
    y = check(xr, False)
    assert y.requires_grad
    y.float().sum().backward()
    assert xr.grad is not None and xr.grad.shape == x.shape
    layer.bias.requires_grad_(True)  # a bias that requires grad too
    assert check(x, False).requires_grad
    with torch.no_grad():
        # the layer's tensors replaced or moved: the closure is stale, the general path runs and the
        # shortcut is made again (a new closure)
        w, qs = layer.weight, layer.quant_state
        for change in (lambda: setattr(w, "data", w.data.clone()),
                       lambda: setattr(w, "quant_state", copy.deepcopy(w.quant_state)),
                       lambda: setattr(layer.quant_state, "absmax", layer.quant_state.absmax.clone()),
                       lambda: setattr(layer.bias, "data", layer.bias.data * 2),
                       lambda: layer.load_state_dict({k: v.clone() for k, v in layer.state_dict().items()})):
            before, calls = layer._fast, len(answered)
            change()
            y = layer(x)
            assert not any(answered[calls:])  # dropped (load_state_dict) or declined
            assert layer._fast is not before and layer._fast is not None
            assert torch.equal(y, general_path(layer, x)) and rel_err(y, reference(x)) <= TOL_4BIT[dtype]
            answered = watch_fast_path(layer)
            check(x, True)
        layer.compute_dtype = dtype  # assigning a pinned attribute drops the shortcut (even the same value)
        assert layer._fast is None
        y = layer(x)
        assert layer._fast is not None and torch.equal(y, general_path(layer, x))
        # jit.trace would record no library call: it gets the general path (which it cannot trace)
        answered = watch_fast_path(layer)
        with pytest.raises(TypeError), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit.trace is deprecated; its tracer warns too
            torch.jit.trace(layer, x, check_trace=False)
        assert not any(answered)


def test_linear4bit_call_shortcut_keeps_what_module_call_does():
    """layer(x) reaches the fast path without torch's Module._call_impl only where that would just
    call forward: hooks (the module's and the global ones), a forward replaced on the instance
    (accelerate) or overridden by a subclass, module.compile() and torch.compile see every call,
    hooks included under torch.compile."""
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    K, N = 64, 32
    layer = bnb.nn.Linear4bit(K, N, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
    x = randn((1, K), "cpu")
    calls = []
    with torch.no_grad():
        want = layer(x)
        real_run = layer._fast
        assert real_run is not None

        def counting_run(d, x):
            calls.append(1)
            return real_run(d, x)

        layer._fast = counting_run
        assert torch.equal(layer(x), want) and calls == [1]  # the shortcut: no Module._call_impl
        seen = []
        pre = layer.register_forward_pre_hook(lambda m, args: seen.append("pre"))
        post = layer.register_forward_hook(lambda m, args, out: out * 2)
        assert torch.equal(layer(x), want * 2) and seen == ["pre"]
        pre.remove(), post.remove()
        for register in (register_module_forward_pre_hook, register_module_forward_hook):
            handle = register(lambda *args: seen.append(register.__name__))
            try:
                assert torch.equal(layer(x), want)
            finally:
                handle.remove()
        assert seen == ["pre", "register_module_forward_pre_hook", "register_module_forward_hook"]
        layer.forward = lambda x: bnb.nn.Linear4bit.forward(layer, x) * 3  # accelerate replaces forward so
        assert torch.equal(layer(x), want * 3)
        del layer.forward

        class Scaled(bnb.nn.Linear4bit):
            def forward(self, x):
                return super().forward(x) * 4

        layer.__class__ = Scaled
        assert torch.equal(layer(x), want * 4)
        layer.__class__ = bnb.nn.Linear4bit
        calls.clear()
        assert torch.equal(layer(x), want) and calls == [1]
        # the general path still runs for what the shortcut does not take, with its errors
        with pytest.raises(TypeError):
            layer(x, x)
        assert torch.equal(layer(x=x), want)
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    with torch.no_grad():
        assert torch.allclose(compiled(x), want) and len(graphs) == 1
        assert any("gemm_4bit" in str(n.target) for n in graphs[0].graph.nodes)
        hooked = torch.compile(torch.nn.Sequential(layer), fullgraph=True, backend=backend)
        post = layer.register_forward_hook(lambda m, args, out: out * 5)
        assert torch.allclose(hooked(x), want * 5) and len(graphs) == 2
        post.remove()
        layer.compile(backend=backend)  # module.compile(): the module's own call goes through it
        assert torch.allclose(layer(x), want) and len(graphs) == 3
    torch._dynamo.reset()


def test_linear4bit_without_whole_blocks_has_no_shortcut():
    layer = bnb.nn.Linear4bit(96, 16, quant_type="nf4", blocksize=64).to("cpu")  # K % blocksize != 0
    x = randn((1, 96), "cpu")
    with torch.no_grad():
        assert torch.equal(layer(x), general_path(layer, x)) and layer._fast is None


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_4bit_top_level_takes_the_transposed_weight(device):
    W = randn((48, 128), device, torch.float16)
    packed, state = bnb.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    x = randn((3, 128), device, torch.float16)
    b = randn((48,), device, torch.float16)
    y = bnb.matmul_4bit(x, packed.t(), quant_state=state, bias=b)  # bitsandbytes callers pass weight.t()
    assert torch.equal(y, bnb.matmul_4bit(x, packed, state, bias=b))
    out = torch.empty_like(y)
    assert bnb.matmul_4bit(x, packed, state, out, b) is out and torch.equal(out, y)
    with pytest.raises(ValueError, match="bytes"):
        bnb.matmul_4bit(x, packed[:10], state)


# ---------------------------------------------------------------- LLM.int8()
def int8_reference(x, W, bias, threshold):
    """float64 LLM.int8(): W rounded to fp16 and quantized row-wise, x row-wise without the
    outlier columns, int8 product rescaled, plus the outlier columns against the dequantized W."""
    a = x.double().reshape(-1, x.shape[-1]).cpu()
    w = W.half().double().cpu()
    SCB = w.abs().amax(1)
    CB = torch.round(w * 127 / SCB[:, None])
    outlier = a.abs() >= threshold if threshold > 0 else torch.zeros_like(a, dtype=torch.bool)
    cols = outlier.any(0)
    SCA = torch.where(outlier, 0.0, a.abs()).amax(1)
    CA = torch.round(a * 127 / SCA[:, None])
    CA[:, cols] = 0
    out = (CA @ CB.T) * SCA[:, None] * SCB[None, :] / 127 ** 2
    out = out + a[:, cols] @ (CB[:, cols] * SCB[:, None] / 127).T
    if bias is not None:
        out = out + bias.double().cpu()
    return out.reshape(x.shape[:-1] + (W.shape[0],)), CB, SCB


def make_int8_layer(K, N, device, threshold=0.0, seed=5):
    layer = bnb.nn.Linear8bitLt(K, N, threshold=threshold)
    with torch.no_grad():
        layer.weight.data = randn((N, K), "cpu", seed=seed) * 0.1
        layer.bias.data = randn((N,), "cpu", seed=seed + 1)
    W, b = layer.weight.data.clone(), layer.bias.data.clone()
    return layer.to(device), W, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_linear8bitlt_forward_matches_float64(device, dtype, threshold):
    K, N = 160, 72
    layer, W, b = make_int8_layer(K, N, device, threshold)
    assert layer.weight.dtype == torch.int8 and layer.weight.SCB.dtype == torch.float32
    x = randn((3, 5, K), device, torch.float32)
    x[..., [7, 100]] *= 12.0  # outlier columns (|x| >= 6 in some rows)
    x = x.to(dtype)
    y = layer(x)
    assert y.shape == (3, 5, N) and y.dtype == dtype and y.device == x.device
    want, CB, SCB = int8_reference(x, W, b.to(dtype), threshold)
    assert torch.equal(layer.weight.SCB.cpu(), SCB.float())
    assert (layer.weight.data.cpu().double() - CB).abs().max() <= 1
    tol = 2e-3 if dtype != torch.bfloat16 else 1e-2
    assert rel_err(y, want) <= tol, rel_err(y, want)
    exact = x.double().cpu() @ W.half().double().T + b.to(dtype).double()
    if threshold > 0:  # the decomposition keeps the outlier columns exact: closer than plain int8
        plain, _, _ = int8_reference(x, W, b.to(dtype), 0.0)
        assert rel_err(y, exact) < rel_err(plain, exact)
        assert layer.state.threshold == threshold


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_linear8bitlt_fast_path_is_bit_identical(device, dtype):
    K, N = 160, 72
    layer, _, _ = make_int8_layer(K, N, device)
    layer.bias.data = layer.bias.data.to(dtype)  # a bias in the input's dtype: the shortcut applies
    with torch.inference_mode():
        layer(randn((1, K), device, dtype, seed=9))
        assert layer._fast is not None
        for i, lead in enumerate([(1,), (4,), (2, 3), ()]):
            x = randn(lead + (K,), device, dtype, seed=10 + i)
            x[..., 7] *= 12.0
            y = layer(x)
            want = layer._forward(x)
            assert y.shape == lead + (N,) and y.dtype == dtype and torch.equal(y, want), lead
    x = randn((2, K), device, dtype, seed=30)
    with torch.no_grad():
        y0 = layer(x)
        layer.state.threshold = 6.0  # outliers: the general path, per call
        assert torch.equal(layer(x), layer._forward(x))
        layer.state.threshold = 0.0
        assert torch.equal(layer(x), y0)
        layer.bias.data = layer.bias.data.clone() + 1  # another tensor behind the bias
        assert torch.equal(layer(x), layer._forward(x)) and not torch.equal(layer(x), y0)
        other, _, _ = make_int8_layer(K, N, device, seed=11)
        layer.load_state_dict(other.state_dict())  # a new weight (the bias is copied in place)
        assert torch.equal(layer(x), other(x))
    y = layer(x)  # grad mode, bias requires grad: autograd through the ops
    assert y.requires_grad and torch.equal(y.detach(), layer._forward(x).detach())
    clone = copy.deepcopy(layer)
    assert clone._fast is None and torch.equal(clone(x), layer(x))


@pytest.mark.parametrize("device", DEVICES)
def test_linear8bitlt_state_dict(device):
    layer, W, b = make_int8_layer(96, 40, device, threshold=6.0)
    sd = layer.state_dict()
    assert list(sd) == ["weight", "bias", "SCB", "weight_format"]
    assert sd["weight"].dtype == torch.int8 and sd["weight"].shape == (40, 96)
    assert sd["SCB"].dtype == torch.float32 and sd["SCB"].shape == (40,)
    assert sd["weight_format"].dtype == torch.uint8 and sd["weight_format"].shape == () and int(sd["weight_format"]) == 0
    fresh = bnb.nn.Linear8bitLt(96, 40, threshold=6.0, device=device)
    assert str(fresh.load_state_dict(sd)) == "<All keys matched successfully>"
    assert fresh.weight.SCB is not None and torch.equal(fresh.weight.data, layer.weight.data)
    x = randn((4, 96), device, torch.float16)
    assert torch.equal(fresh(x), layer(x))
    unquantized = bnb.nn.Linear8bitLt(96, 40)
    assert unquantized.state_dict().keys() == {"weight", "bias"}
    # older dicts without weight_format load too; other layouts are refused
    sd2 = {k: v for k, v in sd.items() if k != "weight_format"}
    assert str(bnb.nn.Linear8bitLt(96, 40).load_state_dict(sd2)) == "<All keys matched successfully>"
    with pytest.raises(RuntimeError, match="layout"):
        bnb.nn.Linear8bitLt(96, 40).load_state_dict({**sd, "weight_format": torch.tensor(2, dtype=torch.uint8)})
    with pytest.raises(RuntimeError, match="SCB"):
        bnb.nn.Linear8bitLt(96, 40).load_state_dict({"weight": sd["weight"], "bias": sd["bias"]})
    # a float dict loads as float and is quantized on the move
    plain = torch.nn.Linear(96, 40)
    f = bnb.nn.Linear8bitLt(96, 40)
    f.load_state_dict(plain.state_dict())
    assert f.weight.SCB is None
    f = f.to(device)
    assert f.weight.SCB is not None and f.weight.dtype == torch.int8
    clone = copy.deepcopy(f)
    assert torch.equal(clone(x), f(x)) and clone.weight.SCB is not f.weight.SCB


@pytest.mark.parametrize("device", DEVICES)
def test_linear8bitlt_quantizes_like_bitsandbytes(device):
    """A [64, 512] fp16 weight: int8 rows and SCB equal the golden row-wise quantization."""
    case = [c for c in GOLDEN.cases("int8_vectorwise_quant") if c["params"]["threshold"] == 0.0][0]
    A = golden_tensor(case["inputs"]["A"])
    layer = bnb.nn.Linear8bitLt(512, 64, bias=False)
    layer.load_state_dict({"weight": A.float()})
    layer = layer.to(device)
    assert torch.equal(layer.weight.data.cpu(), golden_tensor(case["outputs"]["q"]))
    assert torch.equal(layer.weight.SCB.cpu(), golden_tensor(case["outputs"]["row_stats"]))
    assert torch.equal(layer.state_dict()["SCB"].cpu(), golden_tensor(case["outputs"]["row_stats"]))


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_int8(device):
    layer, W, b = make_int8_layer(128, 24, device, threshold=6.0)
    x = randn((6, 128), device, torch.float16)
    x[:, 5] *= 20
    y = layer(x)
    # an Int8Params weight carries its SCB; a plain int8 B needs state.SCB
    assert torch.equal(bnb.matmul(x, layer.weight, bias=layer.bias.half(), threshold=6.0), y)
    state = bnb.MatmulLtState(SCB=layer.weight.SCB)
    assert torch.equal(bnb.matmul(x, layer.weight.data, state=state, threshold=6.0, bias=layer.bias.half()), y)
    assert state.idx is not None and 5 in state.idx.tolist()
    # a float B is quantized from its fp16 rounding: the same codes
    state = bnb.MatmulLtState()
    got = bnb.matmul(x, W.to(device), state=state, threshold=6.0, bias=b.to(device).half())
    assert torch.equal(got, y) and torch.equal(state.CB, layer.weight.data)
    out = torch.empty_like(y)
    assert bnb.matmul(x, W.to(device), out=out, threshold=6.0, bias=b.to(device).half()) is out
    assert torch.equal(out, y)
    with pytest.raises(ValueError, match="SCB"):
        bnb.matmul(x, layer.weight.data)
    with pytest.raises(ValueError, match="share K"):
        bnb.matmul(x[:, :100], layer.weight)
    # has_fp16_weights=True: a trained float weight (its gradients: test_nn_grad.py)
    fp16 = bnb.nn.Linear8bitLt(16, 8, has_fp16_weights=True)
    assert fp16.weight.requires_grad and fp16.weight.dtype == torch.float32 and fp16.weight.SCB is None


def test_matmul_int8_numpy():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 64)) * 2).astype(np.float16)
    x[:, 9] = 30
    W = rng.standard_normal((16, 64)).astype(np.float32)
    y = bnb.matmul(x, W, threshold=6.0)
    want, _, _ = int8_reference(torch.from_numpy(x), torch.from_numpy(W), None, 6.0)
    assert y.dtype == np.float16 and y.shape == (5, 16)
    assert rel_err(torch.from_numpy(y), want) <= 2e-3
    yt = bnb.matmul(torch.from_numpy(x), torch.from_numpy(W), threshold=6.0)
    assert np.array_equal(yt.numpy(), y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_linear8bitlt_under_torch_compile(device, threshold):
    """threshold 6: one torch.ops.bnb.int8_linear_outliers call, whose output sizes do not depend
    on the data, so the graph needs no dynamic size."""
    torch._dynamo.reset()
    layer, _, _ = make_int8_layer(64, 32, device, threshold=threshold)
    x = randn((4, 64), device, torch.float16)
    x[:, 3] *= 20  # an outlier column at threshold 6
    eager = layer(x)
    assert torch.equal(torch.compile(layer, fullgraph=True)(x), eager)


def test_import_bnb_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import bnb, numpy as np\n"
            "assert callable(bnb.matmul) and callable(bnb.matmul_4bit)\n"
            "try:\n    bnb.nn\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('bnb.nn imported without torch')\n"
            "x = np.ones((2, 64), np.float16); w = np.ones((8, 64), np.float32)\n"
            "assert bnb.matmul(x, w).shape == (2, 8)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(bnb.__file__)), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
