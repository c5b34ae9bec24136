"""bitsandbytes.matmul (LLM.int8()), bitsandbytes.matmul_4bit and MatmulLtState as the
compatibility layer serves them: forwards and gradients against float64 autograd through the
dequantized weight, B given as bitsandbytes' callers give it ([N, K], a [K, N] view, int8 codes
through the state, any quant_storage), `out=`, empty inputs, and the state's fields.

The tests use only `bitsandbytes` and torch (needs_bnb_layer marks what is about bnb's layer).
"""

import warnings

import pytest

torch = pytest.importorskip("torch")

import bitsandbytes  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
from conftest import IS_BNB, needs_bnb_layer  # noqa: E402

# relative error norm of a gradient in the dtype against float64 through the same weight
from device_helpers import DEVICES, TOL, device, randn, rel_err  # noqa: E402,F401  (device: autouse fixture)
DTYPES = [torch.float32, torch.bfloat16]


def float64_grads(A, W64, bias, g):
    """(out, dA, dW, dbias) of out = A @ W^T + bias and loss sum(g * out), in float64."""
    A64 = A.detach().double().requires_grad_()
    W64 = W64.detach().double().clone().requires_grad_()
    b64 = None if bias is None else bias.detach().double().requires_grad_()
    out = A64 @ W64.t()
    if b64 is not None:
        out = out + b64
    (out * g.double()).sum().backward()
    return out.detach(), A64.grad, W64.grad, None if b64 is None else b64.grad


def int8_rows(W):
    """Row-wise int8 codes of W's fp16 rounding and their absmax (LLM.int8()'s weight format),
    computed here in float64."""
    W16 = W.detach().to(torch.float16).double()
    SCB = W16.abs().amax(1)
    CB = torch.round(W16 * (127 / SCB.unsqueeze(1))).to(torch.int8)
    return CB, SCB.float()


def activation_bound(A, W64):
    """Bound on |int8 product - A @ W^T| from quantizing A's rows (half a step, rowmax / 254)."""
    step = A.detach().double().abs().reshape(-1, A.shape[-1]).amax(1, keepdim=True) / 254
    return (step @ W64.abs().sum(1, keepdim=True).t()).reshape(A.shape[:-1] + (W64.shape[0],))


# ---------------------------------------------------------------- LLM.int8()
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
@pytest.mark.parametrize("transposed", [False, True], ids=["NK", "KN"])
def test_matmul_int8_weight_from_state(dtype, threshold, transposed, device):
    """Frozen int8 weight (has_fp16_weights=False, state.CB/SCB): B passed as CB [N, K] or as
    the view CB.t() [K, N]; gradients for A and the bias through W = CB * SCB / 127."""
    M, K, N = 6, 64, 40
    W = randn(N, K, seed=1)
    CB, SCB = int8_rows(W)
    state = bitsandbytes.MatmulLtState()
    state.threshold = threshold
    state.has_fp16_weights = False
    state.CB, state.SCB = CB, SCB
    A = randn(2, M // 2, K, dtype=dtype, seed=2)
    if threshold:
        with torch.no_grad():
            A[..., [3, 17]] = 8.0  # outlier columns, multiplied in A's dtype
    A.requires_grad_(True)
    bias = randn(N, dtype=dtype, seed=3).requires_grad_(True)
    out = bitsandbytes.matmul(A, CB.t() if transposed else CB, state=state, bias=bias)
    assert out.dtype == dtype and out.shape == (2, M // 2, N)
    W64 = CB.double() * (SCB.double() / 127).unsqueeze(1)
    g = randn(*out.shape, dtype=dtype, seed=4)
    want, dA, _, db = float64_grads(A, W64, bias, g)
    # float32 results: rounded once on the CPU, through float16 on a GPU (as bitsandbytes' kernels)
    tol = 1e-2 if dtype != torch.float32 else (1e-5 if device == "cpu" else 1e-3)
    assert ((out.detach().double() - want).abs() <= activation_bound(A, W64) + tol * want.abs() + 1e-5).all()
    out.backward(g)
    assert A.grad.dtype == dtype and rel_err(A.grad, dA) < TOL[dtype]
    assert rel_err(bias.grad, db) < TOL[dtype]
    if threshold and IS_BNB:  # (bitsandbytes' CPU path does not record them)
        assert state.idx is not None and {3, 17} <= set(state.idx.tolist())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("transposed", [False, True], ids=["NK", "KN"])
def test_matmul_float_weight_trains(dtype, transposed):
    """A float B that requires grad (has_fp16_weights=True): quantized on each call into
    state.CB/SCB, and B gets grad_out^T @ A; A's gradient goes through the quantized weight."""
    M, K, N = 5, 48, 32
    W = randn(N, K, seed=5)
    B = (W.t().contiguous() if transposed else W.clone()).requires_grad_(True)  # [K, N] or [N, K]
    A = randn(M, K, dtype=dtype, seed=6).requires_grad_(True)
    state = bitsandbytes.MatmulLtState()
    out = bitsandbytes.matmul(A, B.t() if transposed else B, state=state)
    CB, SCB = int8_rows(W)  # the kernels scale by an approximate 1/absmax: a tie may round the other way
    assert torch.equal(state.SCB, SCB) and (state.CB.int() - CB.int()).abs().max() <= 1
    assert (state.CB != CB).float().mean() < 0.02
    W64 = state.CB.double() * (state.SCB.double() / 127).unsqueeze(1)
    g = randn(*out.shape, dtype=dtype, seed=7)
    _, dA, _, _ = float64_grads(A, W64, None, g)
    out.backward(g)
    assert rel_err(A.grad, dA) < TOL[dtype]
    dW = g.double().t() @ A.detach().double()  # d/dW of sum(g * A @ W^T)
    assert B.grad.shape == B.shape
    assert rel_err(B.grad.t() if transposed else B.grad, dW) < TOL[dtype]


def test_matmul_int8_params_and_out(device):
    """An Int8Params weight carries its SCB; out= receives the result."""
    K, N = 32, 16
    layer = bitsandbytes.nn.Linear8bitLt(K, N, bias=False, has_fp16_weights=False)
    with torch.no_grad():
        layer.weight.data = randn(N, K, seed=8)
    layer = layer.to(device)
    weight, SCB = layer.weight, layer.weight.SCB
    A = randn(4, K, seed=9)
    state = bitsandbytes.MatmulLtState()
    state.has_fp16_weights = False
    state.CB, state.SCB = weight.data, SCB
    want = bitsandbytes.matmul(A, weight.data, state=state)
    got = bitsandbytes.matmul(A, weight, state=state)
    assert torch.equal(got, want)
    if IS_BNB:  # (bitsandbytes' CPU path ignores out)
        out = torch.empty(4, N)
        assert bitsandbytes.matmul(A, weight, out=out, state=state) is out and torch.equal(out, want)
    with torch.no_grad():
        assert torch.equal(layer(A), want)


def test_matmul_empty_inputs():
    K, N = 32, 24
    W = randn(N, K, seed=10).requires_grad_(True)
    bias = randn(N, seed=11).requires_grad_(True)
    for shape in [(0, K), (3, 0, K)] if IS_BNB else [(0, K)]:  # (bitsandbytes fails on 3-D empty input)
        A = torch.zeros(shape, requires_grad=True)
        out = bitsandbytes.matmul(A, W, bias=bias)
        assert out.shape == shape[:-1] + (N,)
        out.sum().backward()
        assert A.grad.shape == A.shape
        assert torch.count_nonzero(bias.grad) == 0 and torch.count_nonzero(W.grad) == 0
        W.grad = bias.grad = None


def test_matmul_lt_state_fields():
    state = bitsandbytes.MatmulLtState()
    assert state.CB is None and state.SCB is None and state.idx is None and state.threshold == 0.0
    assert state.has_fp16_weights is True and state.is_training is True and state.use_pool is False
    for name in ("SB", "SBt", "CBt", "subB", "outlier_pool"):
        assert getattr(state, name) is None
    state.CB, state.SCB, state.CBt = torch.zeros(2, 2, dtype=torch.int8), torch.ones(2), torch.zeros(1)
    state.reset_grads()
    assert state.CB is None and state.SCB is None and state.CBt is None
    with pytest.warns(FutureWarning):
        assert state.CxB is None
    with pytest.raises(AttributeError):
        state.not_a_field
    layer = bitsandbytes.nn.Linear8bitLt(16, 8, has_fp16_weights=False, threshold=6.0)
    assert isinstance(layer.state, bitsandbytes.MatmulLtState)
    assert layer.state.threshold == 6.0 and layer.state.has_fp16_weights is False


# ---------------------------------------------------------------- 4-bit
@pytest.mark.parametrize("dtype", DTYPES + [torch.float16], ids=str)
@pytest.mark.parametrize("quant_type,nested", [("nf4", True), ("fp4", False)])
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16], ids=str)
@pytest.mark.parametrize("transposed", [False, True], ids=["packed", "packed.t()"])
def test_matmul_4bit_forward_and_gradients(dtype, quant_type, nested, storage, transposed):
    M, K, N = 7, 128, 48
    W = randn(N, K, seed=12)
    B, qs = F.quantize_4bit(W, compress_statistics=nested, quant_type=quant_type, quant_storage=storage)
    assert B.dtype == storage
    W64 = F.dequantize_4bit(B, qs).double()
    A = randn(M, K, dtype=dtype, seed=13).requires_grad_(True)
    bias = randn(N, dtype=dtype, seed=14).requires_grad_(True)
    out = bitsandbytes.matmul_4bit(A, B.t() if transposed else B, qs, bias=bias)
    assert out.dtype == dtype and out.shape == (M, N)
    g = randn(M, N, dtype=dtype, seed=15)
    want, dA, _, db = float64_grads(A, W64, bias, g)
    assert rel_err(out, want) < TOL[dtype]
    out.backward(g)
    assert A.grad.dtype == dtype and rel_err(A.grad, dA) < TOL[dtype]
    assert rel_err(bias.grad, db) < TOL[dtype]


def test_matmul_4bit_out_and_shapes():
    K, N = 64, 32
    B, qs = F.quantize_4bit(randn(N, K, seed=16), quant_type="nf4")
    A = randn(2, 3, K, seed=17)
    want = bitsandbytes.matmul_4bit(A, B, qs)
    assert want.shape == (2, 3, N)
    out = torch.zeros(2, 3, N)
    assert bitsandbytes.matmul_4bit(A, B, qs, out=out) is out and torch.equal(out, want)
    one = bitsandbytes.matmul_4bit(A[0, 0], B, qs)  # a single row as a 1-D input
    assert one.shape == (N,) and rel_err(one, want[0, 0]) < 1e-5
    with pytest.raises(ValueError):
        bitsandbytes.matmul_4bit(A, B, None)


def test_matmul_4bit_weight_quantized_as_k_by_n():
    """A weight quantized in [K, N] orientation: multiplied the other way, with a warning."""
    K, N = 64, 96
    Wkn = randn(K, N, seed=18)
    B, qs = F.quantize_4bit(Wkn, quant_type="fp4")
    A = randn(5, K, seed=19)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = bitsandbytes.matmul_4bit(A, B, qs)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    want = A.double() @ F.dequantize_4bit(B, qs).double()
    assert out.shape == (5, N) and rel_err(out, want) < 1e-5


def test_matmul_4bit_empty_inputs():
    K, N = 64, 16
    B, qs = F.quantize_4bit(randn(N, K, seed=20), quant_type="nf4", compress_statistics=True)
    bias = randn(N, seed=21).requires_grad_(True)
    for shape in [(0, K), (2, 0, K)]:
        A = torch.zeros(shape, requires_grad=True)
        out = bitsandbytes.matmul_4bit(A, B, qs, bias=bias)
        assert out.shape == shape[:-1] + (N,)
        out.sum().backward()
        assert A.grad.shape == A.shape and torch.count_nonzero(bias.grad) == 0
        bias.grad = None
        with torch.no_grad():
            assert bitsandbytes.matmul_4bit(A, B, qs).shape == shape[:-1] + (N,)


# ---------------------------------------------------------------- layers in training
@needs_bnb_layer  # bitsandbytes on the CPU multiplies the dequantized weight instead (MatMul8bitFp)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lora_on_linear8bitlt_gets_input_gradients(dtype, device):
    """LoRA on an 8-bit model: the frozen int8 layer passes the gradient to its input, so
    earlier adapters train; it matches float64 through the dequantized weight."""
    K, N = 64, 32
    layer = bitsandbytes.nn.Linear8bitLt(K, N, has_fp16_weights=False, threshold=6.0)
    with torch.no_grad():
        layer.weight.data = randn(N, K, seed=22)
        layer.bias.data = randn(N, seed=23)
    layer = layer.to(device).requires_grad_(False)
    lora_a = randn(K, 4, seed=24).requires_grad_(True)  # an adapter before the layer
    h = randn(6, K, seed=25).to(dtype)
    x = h + (h.float() @ lora_a @ randn(4, K, seed=26)).to(dtype)
    W64 = layer.weight.data.double() * (layer.weight.SCB.double() / 127).unsqueeze(1)
    y = layer(x)
    g = randn(*y.shape, seed=27).to(dtype)
    y.backward(g)
    assert lora_a.grad is not None and torch.count_nonzero(lora_a.grad) > 0
    _, dx, _, _ = float64_grads(x, W64, None, g)
    dlora = h.double().t() @ (dx @ randn(4, K, seed=26).double().t())
    assert rel_err(lora_a.grad, dlora) < TOL[dtype] * 2


def test_function_names_and_outlier_pooler(device):
    """bitsandbytes' autograd.Function names route to the same products; the outlier pooler keeps
    the indices of the first feature width it sees."""
    from bitsandbytes.autograd._functions import GlobalOutlierPooler, MatMul4Bit, MatMul8bitLt

    K, N = 64, 16
    W = randn(N, K, seed=50)
    A = randn(3, K, seed=51)
    direct, through = MatMul8bitLt.apply(A, W), bitsandbytes.matmul(A, W)
    assert rel_err(direct, through) < 2e-2  # (bitsandbytes' matmul picks another product on the CPU)
    if IS_BNB:
        assert torch.equal(direct, through)
    B, qs = F.quantize_4bit(W, quant_type="nf4")
    assert torch.equal(MatMul4Bit.apply(A, B, None, None, qs), bitsandbytes.matmul_4bit(A, B, qs))
    pooler = GlobalOutlierPooler.get_instance()
    assert pooler is GlobalOutlierPooler.get_instance()
    pooler.initialize()
    pooler.add_outliers(torch.tensor([5, 2]), 64)
    pooler.add_outliers(torch.tensor([9]), 128)  # another width: ignored
    pooler.add_outliers(torch.tensor([2, 7]), 64)
    assert pooler.get_current_outlier_idx().tolist() == [2, 5, 7]
