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
