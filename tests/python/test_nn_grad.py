"""Gradients through bnb.nn's quantized layers, against float64 autograd through the dequantized
weight (QLoRA and LoRA on LLM.int8() train through these): the input and bias gradients of
Linear4bit and Linear8bitLt, the weight gradient of Linear8bitLt(has_fp16_weights=True), and
empty inputs in grad mode."""

import pytest

import bnb
from conftest import needs_cpu, torch_devices

torch = pytest.importorskip("torch")
pytestmark = needs_cpu
DEVICES = torch_devices()
# relative error norm of a gradient computed in the dtype against float64 through the same weight
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}
DTYPES = [torch.float32, torch.bfloat16]


def rel_err(got, want):
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def randn(shape, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def int8_weight_f64(layer):
    w = layer.weight
    return w.data.double() * (w.SCB.double() / 127.0).unsqueeze(1)


def float64_grads(x, W64, bias, g):
    """d/dx, d/dW, d/db of sum(g * (x @ W^T + b)) in float64."""
    x64 = x.detach().double().requires_grad_()
    W64 = W64.detach().clone().requires_grad_()
    b64 = None if bias is None else bias.detach().double().requires_grad_()
    y = x64 @ W64.t()
    if b64 is not None:
        y = y + b64
    (y * g.double()).sum().backward()
    return x64.grad, W64.grad, None if b64 is None else b64.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("threshold", [0.0, 3.0])
def test_linear8bitlt_input_and_bias_gradients(device, dtype, threshold):
    K, N = 96, 40
    layer = bnb.nn.Linear8bitLt(K, N, threshold=threshold)
    with torch.no_grad():
        layer.weight.data = randn((N, K), "cpu", seed=1)
        layer.bias.data = randn((N,), "cpu", seed=2)
    layer = layer.to(device)
    layer.bias.data = layer.bias.data.to(dtype)
    layer.bias.requires_grad_(True)
    x = randn((2, 5, K), device, dtype, seed=3)
    x[..., 7] *= 10  # outlier columns when threshold > 0
    x.requires_grad_(True)
    y = layer(x)
    with torch.no_grad():
        assert torch.equal(y, layer(x.detach()))  # the forward is the inference path's
    g = randn(y.shape, device, dtype, seed=4)
    y.backward(g)
    gx, _, gb = float64_grads(x, int8_weight_f64(layer), layer.bias, g)
    assert x.grad.dtype == dtype and x.grad.shape == x.shape
    assert rel_err(x.grad, gx) < TOL[dtype]
    assert rel_err(layer.bias.grad, gb) < TOL[dtype]
    assert layer.weight.grad is None and not layer.weight.requires_grad
    if threshold:
        assert layer.state.idx is not None and 7 in layer.state.idx.tolist()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear8bitlt_fp16_weights_train(device, dtype):
    """has_fp16_weights=True: the float weight stays, is quantized on each forward, and gets
    grad_out^T @ x; the input's gradient goes through that forward's quantized weight."""
    K, N = 64, 24
    layer = bnb.nn.Linear8bitLt(K, N, has_fp16_weights=True).to(device)
    assert layer.weight.dtype == torch.float32 and layer.weight.requires_grad and layer.weight.SCB is None
    x = randn((7, K), device, dtype, seed=5).requires_grad_()
    y = layer(x)
    assert y.dtype == dtype and y.shape == (7, N)
    CB, SCB = layer.state.CB, layer.state.SCB
    want_CB, want_SCB = bnb.functional.quantize_int8_rows(layer.weight.detach())
    assert torch.equal(CB, want_CB) and torch.equal(SCB, want_SCB)
    g = randn(y.shape, device, dtype, seed=6)
    y.backward(g)
    W64 = CB.double() * (SCB.double() / 127).unsqueeze(1)
    gx, _, gb = float64_grads(x, W64, layer.bias, g)
    gw = g.double().t() @ x.detach().double()
    assert rel_err(x.grad, gx) < TOL[dtype]
    assert layer.weight.grad.dtype == torch.float32 and rel_err(layer.weight.grad, gw) < TOL[dtype]
    assert rel_err(layer.bias.grad, gb) < TOL[dtype]
    # a step changes the weight: the next forward quantizes the new one
    with torch.no_grad():
        layer.weight -= 0.1 * layer.weight.grad
    layer(x.detach())
    assert not torch.equal(layer.state.CB, CB)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("quant_type,nested", [("nf4", True), ("fp4", False)])
def test_linear4bit_input_and_bias_gradients(device, dtype, quant_type, nested):
    K, N = 128, 48
    layer = bnb.nn.Linear4bit(K, N, compute_dtype=dtype, quant_type=quant_type, compress_statistics=nested)
    with torch.no_grad():
        layer.weight.data = randn((N, K), "cpu", seed=7)
        layer.bias.data = randn((N,), "cpu", dtype, seed=8)
    layer = layer.to(device)
    layer.bias.requires_grad_(True)
    x = randn((3, 4, K), device, dtype, seed=9).requires_grad_()
    y = layer(x)
    g = randn(y.shape, device, dtype, seed=10)
    y.backward(g)
    W64 = bnb.dequantize_4bit(layer.weight.packed_uint8(), layer.weight.quant_state, dtype=torch.float32).double()
    gx, _, gb = float64_grads(x, W64, layer.bias, g)
    assert x.grad.dtype == dtype and rel_err(x.grad, gx) < TOL[dtype]
    assert rel_err(layer.bias.grad, gb) < TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs_in_grad_mode(device):
    """Zero rows: empty outputs of the right shape, and gradients (zero for the bias and a
    trained weight) through both layers."""
    K, N = 64, 16
    l4 = bnb.nn.Linear4bit(K, N, compute_dtype=torch.float32, quant_type="nf4").to(device)
    l8 = bnb.nn.Linear8bitLt(K, N, threshold=6.0).to(device)
    l8f = bnb.nn.Linear8bitLt(K, N, has_fp16_weights=True).to(device)
    for layer in (l4, l8, l8f):
        layer.bias.requires_grad_(True)
        for shape in [(0, K), (3, 0, K)]:
            x = torch.zeros(shape, device=device, requires_grad=True)
            y = layer(x)
            assert y.shape == shape[:-1] + (N,)
            y.sum().backward()
            assert x.grad.shape == x.shape
            assert torch.count_nonzero(layer.bias.grad) == 0
            layer.bias.grad = None
    assert torch.count_nonzero(l8f.weight.grad) == 0
