"""matmul_4bit and the LLM.int8() ops through the binding (numpy, and torch where available),
against float64 numpy references. Skipped where the backend does not offer an op."""

import numpy as np
import pytest

import bnb
from conftest import needs_cpu, torch_devices

pytestmark = needs_cpu


def offered(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_matmul_4bit_numpy(rng, nested, quant_type):
    W = rng.standard_normal((96, 192)).astype(np.float32)
    x = rng.standard_normal((2, 3, 192)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    packed, state = bnb.quantize_4bit(W, blocksize=64, quant_type=quant_type, compress_statistics=nested)
    out = offered(bnb.matmul_4bit, x, packed, state, bias=b)
    want = x.astype(np.float64) @ bnb.dequantize_4bit(packed, state).astype(np.float64).T + b
    assert out.shape == (2, 3, 96) and out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="columns"):
        bnb.matmul_4bit(x[..., :100], packed, state)


@pytest.mark.parametrize("device", torch_devices())
def test_matmul_4bit_torch(rng, device):
    import torch

    W = torch.from_numpy(rng.standard_normal((64, 128)).astype(np.float32)).to(device, torch.float16)
    x = torch.from_numpy(rng.standard_normal((4, 128)).astype(np.float32)).to(device, torch.float16)
    packed, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=True)
    out = offered(bnb.matmul_4bit, x, packed, state)
    want = x.double() @ bnb.dequantize_4bit(packed, state).double().T
    assert out.device == x.device and out.dtype == torch.float16 and out.shape == (4, 64)
    torch.testing.assert_close(out.double(), want, rtol=2e-3, atol=2e-2)


def test_int8_ops_numpy(rng):
    A = (rng.standard_normal((32, 100)) * 2.5).astype(np.float16)
    threshold = 6.0
    q, row_stats, outliers = offered(bnb.int8_vectorwise_quant, A, threshold=threshold)
    a = A.astype(np.float64)
    is_outlier = np.abs(a) >= threshold
    want_stats = np.where(is_outlier, 0, np.abs(a)).max(axis=1)
    assert q.dtype == np.int8 and q.shape == A.shape and row_stats.dtype == np.float32
    np.testing.assert_array_equal(row_stats, want_stats.astype(np.float32))
    assert np.array_equal(outliers, np.flatnonzero(is_outlier.any(axis=0)))
    scaled = a * 127 / want_stats[:, None]
    clean = ~is_outlier.any(axis=0)  # docs/FORMATS.md §6.1: outlier columns may be zeroed whole
    assert np.all(np.abs(q - scaled)[:, clean] <= 0.5 + 1e-3)
    assert np.all(q[is_outlier] == 0)
    q0, stats0, none = bnb.int8_vectorwise_quant(A)
    assert none is None and np.array_equal(stats0, np.abs(A).max(axis=1).astype(np.float32))

    B = rng.integers(-127, 128, size=(40, 100)).astype(np.int8)
    C = offered(bnb.int8_linear_matmul, q0, B)
    assert C.dtype == np.int32 and np.array_equal(C, q0.astype(np.int64) @ B.astype(np.int64).T)
    col_stats = np.abs(rng.standard_normal(40)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float16)
    out = offered(bnb.int8_mm_dequant, C, stats0, col_stats, bias=bias)
    want = C * stats0[:, None].astype(np.float64) * col_stats / (127 * 127) + bias
    assert out.dtype == np.float16 and out.shape == (32, 40)
    np.testing.assert_allclose(out.astype(np.float64), want, rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="share K"):
        bnb.int8_linear_matmul(q0, B[:, :50])


@pytest.mark.parametrize("device", torch_devices())
def test_int8_ops_torch_match_numpy(rng, device):
    import torch

    A_np = (rng.standard_normal((16, 64)) * 3).astype(np.float16)
    A = torch.from_numpy(A_np).to(device)
    q, stats, cols = offered(bnb.int8_vectorwise_quant, A, threshold=6.0)
    q_np, stats_np, cols_np = bnb.int8_vectorwise_quant(A_np, threshold=6.0)
    assert q.device == A.device and np.array_equal(q.cpu().numpy(), q_np)
    assert np.array_equal(stats.cpu().numpy(), stats_np) and np.array_equal(cols.cpu().numpy(), cols_np)
    C = offered(bnb.int8_linear_matmul, q, q[:8].contiguous())
    assert np.array_equal(C.cpu().numpy(), bnb.int8_linear_matmul(q_np, q_np[:8]))
    out = offered(bnb.int8_mm_dequant, C, stats, stats[:8].contiguous())
    assert out.dtype == torch.float16 and out.device == A.device


# ---------------------------------------------------------------- the layer with its outlier product
def outlier_activations(rng, M, K, fraction):
    """Standard normal activations with |x| in [6, 60) in about `fraction` of the columns (at least
    one), in a third of the rows of each such column."""
    a = rng.standard_normal((M, K)).astype(np.float32) * 0.8
    for c in rng.choice(K, size=max(1, int(K * fraction)), replace=False):
        rows = rng.random(M) < 1 / 3
        rows[0] = True
        a[rows, c] = rng.choice([-1.0, 1.0], size=rows.sum()) * rng.uniform(6, 60, size=rows.sum())
    return a


def int8_layer_inputs(rng, M, N, K, fraction, dtype, device):
    import torch

    A = torch.from_numpy(outlier_activations(rng, M, K, fraction)).to(dtype).to(device)
    W = torch.from_numpy(rng.standard_normal((N, K)).astype(np.float32) * 0.1)
    CB, SCB = bnb.functional.quantize_int8_rows(W)
    bias = torch.from_numpy(rng.standard_normal(N).astype(np.float32)).to(dtype).to(device)
    return A, CB.to(device), SCB.to(device), bias


def int8_term(A, CB, SCB, bias, threshold):
    """bnb_int8_linear's result through the three ops (the int8 part of the layer)."""
    q, row_stats, cols = bnb.int8_vectorwise_quant(A, threshold=threshold)
    return bnb.int8_mm_dequant(bnb.int8_linear_matmul(q, CB), row_stats, SCB, bias=bias, dtype=A.dtype), cols


@pytest.mark.parametrize("device", torch_devices())
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fraction", [0.001, 0.01])
def test_int8_linear_with_outliers_is_ops_5_10_bit_for_bit(rng, device, dtype, fraction):
    """threshold > 0: the int8 term plus docs/OPS.md §5.10's product, bit for bit (the products of
    two fp16/bf16 values are exact in float32, so a float32 add per column is the fma); within
    the rounding of the result of the two-step form bnb used before (A[:, cols] @ W[:, cols]^T in
    A's dtype) and near the float64 product."""
    import torch

    dt = getattr(torch, dtype)
    M, N, K = 24, 40, 1000
    A, CB, SCB, bias = int8_layer_inputs(rng, M, N, K, fraction, dt, device)
    state = bnb.MatmulLtState()
    out = offered(bnb.functional.int8_linear, A, CB, SCB, bias=bias, threshold=6.0, state=state)
    assert out.shape == (M, N) and out.dtype == dt and out.device == A.device
    base, cols = int8_term(A, CB, SCB, bias, 6.0)
    cols = cols.long()
    assert 1 <= cols.numel() <= max(1, int(K * fraction)) and torch.equal(state.idx.long(), cols)
    a = A.float().cpu()
    wc = ((CB.float().cpu() * SCB.cpu()[:, None]) * np.float32(1 / 127)).to(dt).float()
    s = torch.zeros(M, N)
    for c in cols.tolist():
        s = s + a[:, c:c + 1] * wc[None, :, c]
    want = (base.float().cpu() + s.to(dt).float()).to(dt)
    assert torch.equal(out.cpu(), want)
    before = base + A[:, cols] @ ((CB[:, cols].float() * SCB[:, None] * (1.0 / 127.0)).to(dt)).t()
    ulp = 2.0 ** -10 if dtype == "float16" else 2.0 ** -7
    assert (out.float() - before.float()).abs().max() <= 2 * ulp * before.float().abs().max()
    exact = a.double() @ (CB.double().cpu() * SCB.double().cpu()[:, None] / 127).T + bias.double().cpu()
    plain, _ = int8_term(A, CB, SCB, bias, 0.0)
    assert (out.double().cpu() - exact).abs().max() < (plain.double().cpu() - exact).abs().max()


@pytest.mark.parametrize("device", torch_devices())
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("M", [1, 5, 16, 67])
def test_int8_linear_threshold_0_is_the_three_ops_bit_for_bit(rng, device, dtype, M):
    """threshold 0: functional.int8_linear is one library call (torch.ops.bnb.int8_linear,
    bnb_int8_linear: on a GPU the layer's own kernels) giving the three ops' bits, with and
    without a bias, on torch and numpy; near the float64 product."""
    import torch

    dt = getattr(torch, dtype)
    N, K = 48, 256
    A, CB, SCB, bias = int8_layer_inputs(rng, M, N, K, 0.0, dt, device)
    for b in (bias, None):
        state = bnb.MatmulLtState()
        out = offered(bnb.functional.int8_linear, A, CB, SCB, bias=b, threshold=0.0, state=state)
        want, cols = int8_term(A, CB, SCB, b, 0.0)
        assert out.dtype == dt and out.shape == (M, N) and state.idx is None and cols is None
        assert torch.equal(out, want) and torch.equal(torch.ops.bnb.int8_linear(A, CB, SCB, b), want)
    on_host = bnb.functional.int8_linear(A.cpu().float().numpy(), CB.cpu().numpy(), SCB.cpu().numpy(),
                                         bias=bias.cpu().float().numpy())
    assert np.array_equal(on_host, int8_term(A.cpu().float().numpy(), CB.cpu().numpy(), SCB.cpu().numpy(),
                                             bias.cpu().float().numpy(), 0.0)[0])
    # against float64 with the dequantized weight: only the activations' rounding to int8 (at most
    # half a step, row absmax / 254, per element) and the output's rounding to its dtype
    a, wdq = A.double().cpu(), CB.double().cpu() * SCB.double().cpu()[:, None] / 127
    exact = a @ wdq.T + bias.double().cpu()
    out = bnb.functional.int8_linear(A, CB, SCB, bias=bias)
    ulp = {"float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype]
    bound = a.abs().amax(1, keepdim=True) / 254 * wdq.abs().sum(1)[None, :] * (1 + 1e-6) + ulp * exact.abs() + 1e-12
    assert ((out.double().cpu() - exact).abs() <= bound).all()
    x3 = A.reshape(1, M, K)
    assert torch.equal(bnb.functional.int8_linear(x3, CB, SCB, bias=bias), int8_term(A, CB, SCB, bias, 0.0)[0][None])
    with pytest.raises(ValueError, match="M, N, K > 0"):
        torch.ops.bnb.int8_linear(A[:0], CB, SCB, bias)
    assert bnb.functional.int8_linear(A[:0], CB, SCB, bias=bias).shape == (0, N)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fo = torch.ops.bnb.int8_linear(mode.from_tensor(A), mode.from_tensor(CB), mode.from_tensor(SCB), None)
    assert fo.shape == (M, N) and fo.dtype == dt


@pytest.mark.parametrize("device", torch_devices())
def test_int8_linear_outliers_op_torch_and_numpy(rng, device):
    """torch.ops.bnb.int8_linear_outliers: (out, columns [K], count [1]); functional.int8_linear on
    numpy arrays gives the same bits; threshold 0 gives count 0 and the int8 term."""
    import torch

    M, N, K = 9, 33, 256
    A, CB, SCB, bias = int8_layer_inputs(rng, M, N, K, 0.01, torch.float16, device)
    out, columns, count = offered(torch.ops.bnb.int8_linear_outliers, A, CB, SCB, bias, 6.0)
    assert columns.shape == (K,) and columns.dtype == torch.int32 and count.shape == (1,)
    assert count.dtype == torch.int64 and count.device == A.device
    _, cols = int8_term(A, CB, SCB, bias, 6.0)
    assert torch.equal(columns[:int(count)].cpu(), cols.cpu())
    on_host = bnb.functional.int8_linear(A.cpu().numpy(), CB.cpu().numpy(), SCB.cpu().numpy(),
                                         bias=bias.cpu().numpy(), threshold=6.0)
    assert np.array_equal(on_host.view(np.uint16), out.cpu().numpy().view(np.uint16))
    out0, _, count0 = torch.ops.bnb.int8_linear_outliers(A, CB, SCB, bias, 0.0)
    assert int(count0) == 0 and torch.equal(out0, int8_term(A, CB, SCB, bias, 0.0)[0])
    with pytest.raises(ValueError, match="M, N, K > 0"):
        torch.ops.bnb.int8_linear_outliers(A[:0], CB, SCB, bias, 6.0)
    empty = bnb.functional.int8_linear(A[:0], CB, SCB, bias=bias, threshold=6.0)
    assert empty.shape == (0, N)
    # the fake implementation: the sizes depend on the input sizes only
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fo, fc, fn = torch.ops.bnb.int8_linear_outliers(mode.from_tensor(A), mode.from_tensor(CB),
                                                         mode.from_tensor(SCB), mode.from_tensor(bias), 6.0)
    assert fo.shape == (M, N) and fc.shape == (K,) and fn.shape == (1,)


@pytest.mark.parametrize("device", [d for d in torch_devices() if d != "cpu"])
def test_int8_linear_with_outliers_does_not_synchronize_and_captures(rng, device):
    """On a GPU, Linear8bitLt at threshold 6 runs with torch's sync debug mode set to error (no
    host synchronisation) and is captured in a CUDA graph whose replay on activations with other
    outlier columns gives their eager result."""
    import torch

    K, N = 512, 64
    layer = bnb.nn.Linear8bitLt(K, N, threshold=6.0).to(device)
    x0 = torch.from_numpy(outlier_activations(rng, 16, K, 0.01)).half().to(device)
    x1 = torch.from_numpy(outlier_activations(rng, 16, K, 0.01)).half().to(device)
    with torch.no_grad():
        want1 = layer(x1)  # quantizes the weight on the first forward
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            layer(x0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        static_x = x0.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            layer(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = layer(static_x)
        static_x.copy_(x1)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(static_y, want1)
