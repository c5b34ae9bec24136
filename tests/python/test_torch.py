"""torch tensors: same results as numpy, outputs on the input's device, custom ops that pass
torch.library.opcheck, torch.compile(fullgraph=True) and CUDA graphs. Skipped without torch."""

import os
import subprocess
import sys

import numpy as np
import pytest

import bnb
from conftest import needs_cuda, needs_torch, torch_devices

torch = pytest.importorskip("torch")
pytestmark = needs_torch
DEVICES = torch_devices()


def t(a, device):
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def host(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_blockwise_matches_numpy_and_stays_on_device(rng, device, dtype):
    A32 = rng.standard_normal((33, 200)).astype(np.float32)
    A = t(A32, device).to(dtype)
    q, state = bnb.quantize_blockwise(A, blocksize=256)
    assert q.device == A.device and state.absmax.device == A.device and state.code.device == A.device
    assert q.dtype == torch.uint8 and q.shape == A.shape and state.dtype == dtype
    A_np = A.float().cpu().numpy() if dtype != torch.float16 else A.cpu().numpy()
    if dtype == torch.bfloat16:
        q_np, s_np = bnb.quantize_blockwise(A.cpu().view(torch.int16).numpy().view(np.uint16), blocksize=256,
                                            dtype="bfloat16")
    else:
        q_np, s_np = bnb.quantize_blockwise(A_np, blocksize=256)
    assert np.array_equal(host(q), q_np) and np.array_equal(host(state.absmax), s_np.absmax)
    out = bnb.dequantize_blockwise(q, state)
    assert out.device == A.device and out.dtype == dtype and out.shape == A.shape
    want = bnb.dequantize_blockwise(q_np, s_np, dtype="float32")
    assert torch.equal(out.float().cpu(), torch.from_numpy(want).to(dtype).float())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True])
def test_4bit_matches_numpy(rng, device, quant_type, nested):
    A_np = rng.standard_normal((64, 130)).astype(np.float16)
    A = t(A_np, device)
    packed, state = bnb.quantize_4bit(A, blocksize=64, quant_type=quant_type, compress_statistics=nested)
    p_np, s_np = bnb.quantize_4bit(A_np, blocksize=64, quant_type=quant_type, compress_statistics=nested)
    assert packed.device == A.device and packed.shape == ((A.numel() + 1) // 2, 1)
    assert np.array_equal(host(packed), p_np)
    assert state.nested == nested and state.dtype == torch.float16 and state.shape == (64, 130)
    if nested:
        assert state.offset.device == A.device and state.offset.shape == ()
        assert np.isclose(host(state.offset), s_np.offset, rtol=1e-6)
    out = bnb.dequantize_4bit(packed, state)
    assert out.device == A.device and out.dtype == torch.float16 and out.shape == A.shape
    if not nested or host(state.offset) == s_np.offset:
        assert np.array_equal(host(out), bnb.dequantize_4bit(p_np, s_np))


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_tensors(rng, device):
    base = t(rng.standard_normal((128, 128)).astype(np.float32), device)
    A = base.t()
    assert not A.is_contiguous()
    q, s = bnb.quantize_4bit(A, blocksize=64, quant_type="nf4")
    q2, s2 = bnb.quantize_4bit(A.contiguous(), blocksize=64, quant_type="nf4")
    assert torch.equal(q, q2) and torch.equal(s.absmax, s2.absmax)
    q8, s8 = bnb.quantize_blockwise(A[:, ::3], blocksize=64)
    q8b, _ = bnb.quantize_blockwise(A[:, ::3].contiguous(), blocksize=64)
    assert torch.equal(q8, q8b)


@pytest.mark.parametrize("device", DEVICES)
def test_errors_from_torch_inputs(rng, device):
    A = t(rng.standard_normal(1000).astype(np.float32), device)
    with pytest.raises(ValueError, match="blocksize"):
        bnb.quantize_blockwise(A, blocksize=48)
    with pytest.raises(ValueError, match="not supported"):
        bnb.quantize_blockwise(A.double())
    with pytest.raises(TypeError, match="torch tensor"):
        bnb.dequantize_blockwise(bnb.quantize_blockwise(A)[0], absmax=np.ones(1, np.float32))


@needs_cuda
def test_mixed_devices_are_rejected(rng):
    A = t(rng.standard_normal(1000).astype(np.float32), "cuda")
    q, state = bnb.quantize_blockwise(A, blocksize=256)
    with pytest.raises(ValueError, match="is on cpu"):
        bnb.dequantize_blockwise(q, absmax=state.absmax.cpu(), blocksize=256)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(rng, device):
    A = t(rng.standard_normal((16, 64)).astype(np.float32), device)
    ops = torch.ops.bnb
    q, absmax = ops.quantize_blockwise(A, None, 64)
    packed, absmax4 = ops.quantize_4bit(A, 64, "nf4")
    aq, a2, off = ops.compress_absmax(absmax4)
    code2 = bnb.functional._code_table_like(A, "dynamic_signed")
    checks = [
        (ops.quantize_blockwise.default, (A, None, 64)),
        (ops.dequantize_blockwise.default, (q, absmax, None, 64, torch.float16)),
        (ops.quantize_4bit.default, (A, 64, "nf4")),
        (ops.compress_absmax.default, (absmax4,)),
        (ops.dequantize_4bit.default, (packed, absmax4, None, None, None, 256, 64, "nf4", [16, 64], torch.float32)),
        (ops.dequantize_4bit.default, (packed, aq, a2, code2, off, 256, 64, "nf4", [16, 64], torch.bfloat16)),
        (ops.code_table.default, (2, A)),
        (ops.gemm_4bit_transposed.default, (A[:5, :16].contiguous(), packed, aq, a2, code2, off, 256, 64, "nf4", 16,
                                            64)),
    ]
    for op, args in checks:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("nested", [False, True])
def test_gemm_4bit_transposed_is_the_other_orientation(rng, device, dtype, nested):
    N, K = 96, 192
    W = t(rng.standard_normal((N, K)).astype(np.float32), device)
    packed, state = bnb.quantize_4bit(W, blocksize=64, quant_type="fp4" if nested else "nf4",
                                      compress_statistics=nested)
    Wdq = bnb.dequantize_4bit(packed, state, dtype=torch.float32).double()
    s2 = state.state2
    args = (packed, state.absmax, s2.absmax if nested else None, s2.code if nested else None,
            state.offset if nested else None, s2.blocksize if nested else 256, 64, state.quant_type, N, K)
    for lead in [(1,), (7,), (2, 3), (2, 65)]:  # 130 rows: the CPU's bf16 oneDNN path (gemm4_onednn.cc)
        A = t(rng.standard_normal(lead + (N,)).astype(np.float32), device).to(dtype)
        out = torch.ops.bnb.gemm_4bit_transposed(A, *args)
        assert out.shape == lead + (K,) and out.dtype == dtype
        ref = A.double() @ Wdq
        err = ((out.double() - ref).norm() / ref.norm()).item()
        assert err < {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype], (lead, err)
    empty = torch.ops.bnb.gemm_4bit_transposed(A[..., :0, :], *args)
    assert empty.shape == (2, 0, K)


class QuantLinear4bit(torch.nn.Module):
    """A minimal 4-bit linear layer built on the functional API, as a model would use it."""

    def __init__(self, weight, bias, quant_type="nf4", nested=True):
        super().__init__()
        self.packed, self.state = bnb.quantize_4bit(weight, blocksize=64, quant_type=quant_type,
                                                    compress_statistics=nested)
        self.bias = bias

    def forward(self, x):
        w = bnb.dequantize_4bit(self.packed, self.state)
        return torch.nn.functional.linear(x, w.to(x.dtype), self.bias)


class Roundtrip8bit(torch.nn.Module):
    def forward(self, x):
        q, state = bnb.quantize_blockwise(x, blocksize=256)
        return bnb.dequantize_blockwise(q, state) * 2


def make_model(rng, device, dtype=torch.float32):
    W = t(rng.standard_normal((96, 128)).astype(np.float32), device).to(dtype)
    b = t(rng.standard_normal(96).astype(np.float32), device).to(dtype)
    return QuantLinear4bit(W, b)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(rng, device):
    torch._dynamo.reset()
    model = make_model(rng, device)
    x = t(rng.standard_normal((4, 128)).astype(np.float32), device)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    assert torch.equal(compiled(x), eager)
    rt = Roundtrip8bit()
    assert torch.equal(torch.compile(rt, fullgraph=True)(x), rt(x))

    def quantize_and_back(a):
        packed, state = bnb.quantize_4bit(a, blocksize=64, quant_type="fp4", compress_statistics=True)
        return bnb.dequantize_4bit(packed, state)

    assert torch.equal(torch.compile(quantize_and_back, fullgraph=True)(x), quantize_and_back(x))


@pytest.mark.parametrize("device", DEVICES)
def test_each_quant_state_owns_a_fresh_code_table(rng, device):
    A = t(rng.standard_normal(4096).astype(np.float32), device)
    _, first = bnb.quantize_4bit(A, quant_type="nf4", compress_statistics=True)
    _, second = bnb.quantize_4bit(A, quant_type="nf4", compress_statistics=True)
    for a, b, name in ((first.code, second.code, "nf4"), (first.state2.code, second.state2.code, "dynamic_signed")):
        assert a.device == A.device and a.data_ptr() != b.data_ptr()
        assert np.array_equal(host(a), bnb.get_code_table(name))
    first.code.zero_()  # a caller's write reaches neither another state nor the next one
    _, third = bnb.quantize_4bit(A, quant_type="nf4", compress_statistics=True)
    assert np.array_equal(host(second.code), bnb.get_code_table("nf4"))
    assert np.array_equal(host(third.code), bnb.get_code_table("nf4"))


@needs_cuda
def test_quantize_4bit_holds_no_device_memory_beyond_its_outputs():
    # In a fresh process: after the first nested NF4 quantization, the allocator holds exactly the
    # blocks of the packed weight and the QuantState's tensors (no cached device code tables).
    code = (
        "import torch, bnb\n"
        "W = torch.randn(512, 384, device='cuda', dtype=torch.bfloat16)\n"
        "torch.cuda.synchronize(); before = torch.cuda.memory_allocated()\n"
        "q, s = bnb.quantize_4bit(W, quant_type='nf4', compress_statistics=True)\n"
        "torch.cuda.synchronize()\n"
        "held = [q, s.absmax, s.code, s.offset, s.state2.absmax, s.state2.code]\n"
        "blocks = sum(-(-x.untyped_storage().nbytes() // 512) * 512 for x in held if x.is_cuda)\n"
        "print(torch.cuda.memory_allocated() - before, blocks)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    grown, blocks = map(int, r.stdout.split())
    assert grown == blocks


@needs_cuda
def test_quantize_4bit_in_a_cuda_graph(rng):
    A = t(rng.standard_normal(1 << 14).astype(np.float32), "cuda").to(torch.bfloat16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture
        bnb.quantize_4bit(A, quant_type="nf4", compress_statistics=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q, state = bnb.quantize_4bit(A, quant_type="nf4", compress_statistics=True)
        out = bnb.dequantize_4bit(q, state)
    A.copy_(t(rng.standard_normal(1 << 14).astype(np.float32), "cuda").to(torch.bfloat16))
    graph.replay()
    torch.cuda.synchronize()
    want_q, want_state = bnb.quantize_4bit(A, quant_type="nf4", compress_statistics=True)
    assert torch.equal(q, want_q) and torch.equal(state.code, want_state.code)
    assert torch.equal(out, bnb.dequantize_4bit(want_q, want_state))


@needs_cuda
def test_cuda_graph_capture_and_replay(rng):
    model = make_model(rng, "cuda", torch.float16)
    rt = Roundtrip8bit()
    x = t(rng.standard_normal((8, 128)).astype(np.float16), "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (contexts, tables) outside the capture
        for _ in range(2):
            model(x), rt(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = model(x)
        z = rt(x)
    x.copy_(t(rng.standard_normal((8, 128)).astype(np.float16), "cuda"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, model(x)) and torch.equal(z, rt(x))


@needs_cuda
def test_compile_reduce_overhead_uses_cuda_graphs(rng):
    torch._dynamo.reset()
    model = make_model(rng, "cuda", torch.bfloat16)
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    for _ in range(4):
        x = t(rng.standard_normal((2, 128)).astype(np.float32), "cuda").to(torch.bfloat16)
        got = compiled(x).clone()
        assert torch.equal(got, model(x))


@needs_cuda
def test_runs_on_the_current_stream(rng):
    A = t(rng.standard_normal(1 << 20).astype(np.float32), "cuda")
    want_q, want_state = bnb.quantize_4bit(A, quant_type="nf4")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        q, state = bnb.quantize_4bit(A, quant_type="nf4")
        out = bnb.dequantize_4bit(q, state)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(q, want_q) and torch.equal(out, bnb.dequantize_4bit(want_q, want_state))


def test_kit_for_keeps_one_kit_per_device():
    from bnb._arrays import kit_for

    kit = kit_for(torch.zeros(3))
    assert kit is kit_for(torch.ones(2, dtype=torch.float16)) and kit.stream is None


@needs_cuda
def test_kit_stream_follows_the_current_stream():
    from bnb._arrays import kit_for

    kit = kit_for(torch.zeros(4, device="cuda"))
    assert kit is kit_for(torch.ones(2, device="cuda", dtype=torch.float16))
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        assert kit.stream == side.cuda_stream
    assert (kit.stream or 0) == torch.cuda.current_stream().cuda_stream


@needs_cuda
@pytest.mark.parametrize("bias", [False, True])
def test_linear4bit_fast_path_on_a_side_stream_and_in_a_cuda_graph(bias):
    layer = bnb.nn.Linear4bit(256, 128, bias=bias, compute_dtype=torch.bfloat16, quant_type="nf4")
    if bias:
        layer.bias.data = layer.bias.data.to(torch.bfloat16)
    layer = layer.to("cuda")
    x = torch.randn(1, 256, device="cuda").to(torch.bfloat16)
    with torch.no_grad():
        want = layer._forward(x)
        assert torch.equal(layer(x), want) and layer._fast is not None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            ys = [layer(x) for _ in range(3)]
        torch.cuda.current_stream().wait_stream(side)
        assert all(torch.equal(y, want) for y in ys)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = layer(x)
        x.copy_(torch.randn(1, 256, device="cuda").to(torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, layer._forward(x))
