"""torch.ops.bitsandbytes.*: bitsandbytes' op names and schemas, each op against its
bitsandbytes.functional counterpart and float64 references, fake implementations against the real
outputs, and torch.compile(fullgraph=True) through them. Runs on the CPU and, where there is one,
on a CUDA device.
"""

import pytest

torch = pytest.importorskip("torch")

import bitsandbytes  # noqa: E402,F401  (registers the ops)
import bitsandbytes.functional as F  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.fx.experimental.symbolic_shapes import ShapeEnv  # noqa: E402

ops = torch.ops.bitsandbytes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# The schemas bitsandbytes 0.50.2 registers, as torch prints them.
REAL_SCHEMAS = {
    "bitsandbytes::dequantize_4bit(Tensor A, Tensor absmax, int blocksize, str quant_type, int[] shape, "
    "ScalarType dtype) -> Tensor",
    "bitsandbytes::dequantize_4bit.out(Tensor A, Tensor absmax, int blocksize, str quant_type, int[] shape, "
    "ScalarType dtype, Tensor($0! -> ) out) -> ()",
    "bitsandbytes::dequantize_blockwise(Tensor A, Tensor absmax, Tensor code, int blocksize, ScalarType dtype) "
    "-> Tensor",
    "bitsandbytes::dequantize_blockwise.out(Tensor A, Tensor absmax, Tensor code, int blocksize, "
    "ScalarType dtype, Tensor($0! -> ) out) -> ()",
    "bitsandbytes::gemm_4bit(Tensor A, Tensor B, int[] shapeB, Tensor absmax, int blocksize, str quant_type, "
    "Tensor? bias=None, Tensor? absmax_8bit=None, Tensor? absmax_code=None, Tensor? absmax_offset=None) -> Tensor",
    "bitsandbytes::gemv_4bit(Tensor A, Tensor B, int[] shapeB, Tensor absmax, Tensor code, int blocksize) "
    "-> Tensor",
    "bitsandbytes::gemv_4bit.out(Tensor A, Tensor B, int[] shapeB, Tensor absmax, Tensor code, int blocksize, "
    "Tensor($0! -> ) out) -> ()",
    "bitsandbytes::int8_double_quant(Tensor A, float threshold=0.) -> (Tensor, Tensor, Tensor, Tensor, Tensor?)",
    "bitsandbytes::int8_linear_matmul(Tensor A, Tensor B) -> Tensor",
    "bitsandbytes::int8_linear_matmul.out(Tensor A, Tensor B, Tensor($0! -> ) out) -> ()",
    "bitsandbytes::int8_mixed_scaled_mm(Tensor A, Tensor CA, Tensor CB, Tensor SCA, Tensor SCB, "
    "Tensor? outlier_cols=None, Tensor? bias=None) -> (Tensor, Tensor?)",
    "bitsandbytes::int8_mm_dequant(Tensor A, Tensor row_stats, Tensor col_stats, ScalarType? dtype=None, "
    "Tensor? bias=None) -> Tensor",
    "bitsandbytes::int8_scaled_mm(Tensor A, Tensor B, Tensor row_stats, Tensor col_stats, Tensor? bias=None, "
    "ScalarType? dtype=None) -> Tensor",
    "bitsandbytes::int8_vectorwise_dequant(Tensor A, Tensor stats) -> Tensor",
    "bitsandbytes::int8_vectorwise_quant(Tensor A, float threshold=0.) -> (Tensor, Tensor, Tensor?)",
    "bitsandbytes::optimizer_update_32bit(str optimizer_name, Tensor(a0!) g, Tensor(a1!) p, Tensor(a2!) state1, "
    "Tensor(a3!)? state2, Tensor(a4!)? unorm_vec, float max_unorm, float param_norm, float beta1, float beta2, "
    "float beta3, float alpha, float eps, float weight_decay, int step, float lr, float gnorm_scale, "
    "bool skip_zeros=False) -> ()",
    "bitsandbytes::optimizer_update_8bit_blockwise(str optimizer_name, Tensor(a0!) g, Tensor(a1!) p, "
    "Tensor(a2!) state1, Tensor(a3!)? state2, float beta1, float beta2, float beta3, float alpha, float eps, "
    "int step, float lr, Tensor(a4!) qmap1, Tensor(a5!)? qmap2, Tensor(a6!) absmax1, Tensor(a7!)? absmax2, "
    "float weight_decay, float gnorm_scale, bool skip_zeros=False) -> ()",
    "bitsandbytes::quantize_4bit(Tensor A, int blocksize, str quant_type, ScalarType quant_storage) "
    "-> (Tensor, Tensor)",
    "bitsandbytes::quantize_blockwise(Tensor A, Tensor code, int blocksize) -> (Tensor, Tensor)",
}


def test_op_names_and_schemas():
    ours = {str(s) for s in torch._C._jit_get_all_schemas() if s.name.startswith("bitsandbytes::")}
    assert ours == REAL_SCHEMAS


def same_meta(fake, real):
    """A fake output (or tuple of them) has the real output's shape, dtype and device type."""
    if isinstance(real, (tuple, list)):
        assert len(fake) == len(real)
        for f, r in zip(fake, real):
            same_meta(f, r)
        return
    if real is None:
        assert fake is None
        return
    assert fake.dtype == real.dtype and fake.device.type == real.device.type
    for f, r in zip(fake.shape, real.shape):  # a data-dependent size is a symbol in the fake
        assert not isinstance(f, int) or f == r
    assert len(fake.shape) == len(real.shape)


def run_and_fake(op, *args, **kwargs):
    """The op's eager result, and its fake implementation's on fake copies of the same inputs."""
    real = op(*args, **kwargs)
    mode = FakeTensorMode(shape_env=ShapeEnv())  # a shape environment for data-dependent sizes
    with mode:
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fkwargs = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        fake = op(*fargs, **fkwargs)
    same_meta(fake, real)
    return real


def code_of(quant_type, device):
    return F.get_4bit_type(quant_type, device=device)


# ---------------------------------------------------------------- blockwise
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_blockwise_ops(device, dtype):
    torch.manual_seed(0)
    A = torch.randn(5, 300, dtype=dtype, device=device)
    code = F.create_dynamic_map().to(device)
    q, absmax = run_and_fake(ops.quantize_blockwise, A, code, 256)
    fq, fstate = F.quantize_blockwise(A, blocksize=256)
    assert torch.equal(q, fq) and torch.equal(absmax, fstate.absmax)
    out = run_and_fake(ops.dequantize_blockwise, q, absmax, code, 256, dtype)
    ref = code.double()[q.reshape(-1).long()] * absmax.double().repeat_interleave(256)[:1500]
    assert out.dtype == dtype and torch.equal(out, ref.reshape(5, 300).to(dtype))
    buf = torch.empty_like(A)
    assert run_and_fake(ops.dequantize_blockwise.out, q, absmax, code, 256, dtype, buf) is None
    assert torch.equal(buf, out)
    with pytest.raises(Exception, match="out"):
        ops.dequantize_blockwise.out(q, absmax, code, 256, dtype, torch.empty(3, device=device, dtype=dtype))
    empty_q, empty_absmax = run_and_fake(ops.quantize_blockwise, A[:0], code, 256)
    assert empty_q.shape == (0, 300) and empty_absmax.shape == (0,)
    assert run_and_fake(ops.dequantize_blockwise, empty_q, empty_absmax, code, 256, dtype).shape == (0, 300)


# ---------------------------------------------------------------- 4-bit
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16, torch.float32])
def test_quantize_dequantize_4bit_ops(device, quant_type, storage):
    torch.manual_seed(1)
    A = torch.randn(24, 64, dtype=torch.float16, device=device)
    packed, absmax = run_and_fake(ops.quantize_4bit, A, 64, quant_type, storage)
    fpacked, fstate = F.quantize_4bit(A, quant_type=quant_type, quant_storage=storage)
    assert packed.dtype == storage and torch.equal(absmax, fstate.absmax)
    assert torch.equal(packed.view(torch.uint8), fpacked.view(torch.uint8))  # bytes: floats may read as NaN
    out = run_and_fake(ops.dequantize_4bit, packed, absmax, 64, quant_type, [24, 64], torch.float16)
    assert torch.equal(out, F.dequantize_4bit(fpacked, fstate))
    # float64 reference: code[nibble] * absmax
    b = packed.reshape(-1).view(torch.uint8).long()
    idx = torch.stack([b >> 4, b & 15], 1).reshape(-1)
    ref = code_of(quant_type, device).double()[idx] * absmax.double().repeat_interleave(64)
    assert torch.equal(out, ref.reshape(24, 64).half())
    buf = torch.empty(24, 64, dtype=torch.float16, device=device)
    run_and_fake(ops.dequantize_4bit.out, packed, absmax, 64, quant_type, [24, 64], torch.float16, buf)
    assert torch.equal(buf, out)
    empty, empty_absmax = run_and_fake(ops.quantize_4bit, A[:0], 64, quant_type, storage)
    assert empty.shape == (0, 1) and empty_absmax.shape == (0,)
    assert run_and_fake(ops.dequantize_4bit, empty, empty_absmax, 64, quant_type, [0, 64],
                        torch.float32).shape == (0, 64)


def test_4bit_op_argument_checks():
    A = torch.randn(64)
    with pytest.raises(ValueError, match="blocksize"):
        ops.quantize_4bit(A, 48, "nf4", torch.uint8)
    with pytest.raises(ValueError, match="quant_type"):
        ops.quantize_4bit(A, 64, "int4", torch.uint8)
    with FakeTensorMode():
        with pytest.raises(Exception, match="blocksize"):
            ops.quantize_4bit(torch.empty(64), 48, "nf4", torch.uint8)


def dequantized_weight(packed, state):
    return F.dequantize_4bit(packed, state).double()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemm_4bit_op(device, nested, dtype):
    torch.manual_seed(2)
    W = torch.randn(40, 128, dtype=dtype, device=device)
    packed, state = F.quantize_4bit(W, quant_type="nf4", compress_statistics=nested)
    A = torch.randn(2, 3, 128, dtype=dtype, device=device)
    bias = torch.randn(40, dtype=dtype, device=device)
    if nested:
        extra = dict(absmax_8bit=state.absmax, absmax_code=state.state2.code, absmax_offset=state.offset)
        absmax = state.state2.absmax
    else:
        extra, absmax = {}, state.absmax
    y = run_and_fake(ops.gemm_4bit, A, packed.t(), [40, 128], absmax, 64, "nf4", bias=bias, **extra)
    ref = A.double() @ dequantized_weight(packed, state).t() + bias.double()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert y.shape == (2, 3, 40) and y.dtype == dtype
    assert ((y.double() - ref).abs().max() / ref.abs().max()) < tol
    no_bias = ops.gemm_4bit(A, packed.t(), [40, 128], absmax, 64, "nf4", **extra)
    assert torch.equal(no_bias, F.gemv_4bit(A, packed.t(), state=state))
    zero_rows = run_and_fake(ops.gemm_4bit, A[:, :0], packed, [40, 128], absmax, 64, "nf4", **extra)
    assert zero_rows.shape == (2, 0, 40)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4", "af4"])
def test_gemv_4bit_op(device, quant_type):
    torch.manual_seed(3)
    N, K = 16, 256
    code = F.get_4bit_type(quant_type, device=device)
    if quant_type == "af4":  # a map bnb's kernels do not know: quantize with nf4's codes, decode with af4
        packed, state = F.quantize_4bit(torch.randn(N, K, device=device), quant_type="nf4")
    else:
        packed, state = F.quantize_4bit(torch.randn(N, K, device=device), quant_type=quant_type)
    A = torch.randn(1, K, device=device)
    y = run_and_fake(ops.gemv_4bit, A, packed.t(), [N, K], state.absmax, code, 64)
    b = packed.reshape(-1).long()
    idx = torch.stack([b >> 4, b & 15], 1).reshape(-1)
    W = (code.double()[idx] * state.absmax.double().repeat_interleave(64)).reshape(N, K)
    ref = A.double() @ W.t()
    assert y.shape == (1, N) and ((y.double() - ref).abs().max() / ref.abs().max()) < 1e-5
    buf = torch.empty(1, N, device=device)
    run_and_fake(ops.gemv_4bit.out, A, packed.t(), [N, K], state.absmax, code, 64, buf)
    assert torch.equal(buf, y)
    code.mul_(-1)  # a changed code map is looked at again
    flipped = ops.gemv_4bit(A, packed.t(), [N, K], state.absmax, code, 64)
    assert torch.allclose(flipped, -y, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- LLM.int8()
@pytest.mark.parametrize("device", DEVICES)
def test_int8_ops(device):
    torch.manual_seed(4)
    X = torch.randn(6, 64, dtype=torch.float16, device=device)
    X[2, 7] = 9.0
    W = torch.randn(10, 64, dtype=torch.float16, device=device)
    q, rs, cols = run_and_fake(ops.int8_vectorwise_quant, X)
    fq, frs, fcols = F.int8_vectorwise_quant(X)
    assert cols is None and torch.equal(q, fq) and torch.equal(rs, frs)
    qo, rso, colso = run_and_fake(ops.int8_vectorwise_quant, X, 6.0)
    assert colso.tolist() == [7] and colso.dtype == torch.int64 and (qo[:, 7] == 0).all()
    deq = run_and_fake(ops.int8_vectorwise_dequant, q, rs)
    assert torch.allclose(deq.double(), q.double() * rs.double()[:, None] / 127, rtol=1e-6)
    qw, sw, _ = F.int8_vectorwise_quant(W)
    C = run_and_fake(ops.int8_linear_matmul, q, qw)
    assert torch.equal(C.double(), q.double() @ qw.double().t())
    buf = torch.empty(6, 10, dtype=torch.int32, device=device)
    run_and_fake(ops.int8_linear_matmul.out, q, qw, buf)
    assert torch.equal(buf, C)
    ref = C.double() * rs.double()[:, None] * sw.double()[None, :] / 127 ** 2
    y16 = run_and_fake(ops.int8_mm_dequant, C, rs, sw)
    y32 = run_and_fake(ops.int8_mm_dequant, C, rs, sw, dtype=torch.float32)
    assert y16.dtype == torch.float16 and y32.dtype == torch.float32
    # as bitsandbytes' CUDA kernel: the fp16 result, converted to another requested dtype
    assert torch.equal(y32, y16.float())
    assert torch.allclose(y16.double(), ref, rtol=1e-3, atol=1e-3)
    assert torch.equal(y16, F.int8_mm_dequant(C, rs, sw))
    bias = torch.randn(10, dtype=torch.float16, device=device)
    scaled = run_and_fake(ops.int8_scaled_mm, q, qw, rs, sw, bias=bias, dtype=torch.float32)
    assert torch.allclose(scaled.double(), ref + bias.double(), rtol=2e-3, atol=2e-3)
    # the product with outliers: int8 part + outlier columns in float16
    out, sub = run_and_fake(ops.int8_mixed_scaled_mm, X, qo, qw, rso, sw, outlier_cols=colso, bias=bias)
    assert torch.equal(sub, X[:, [7]])
    wdeq = qw.double() * sw.double()[:, None] / 127
    ref_mixed = (qo.double() * rso.double()[:, None] / 127) @ wdeq.t() + X.double()[:, [7]] @ wdeq[:, [7]].t()
    assert out.dtype == torch.float16
    assert ((out.double() - bias.double() - ref_mixed).abs().max() / ref_mixed.abs().max()) < 2e-3
    no_outliers, empty_sub = run_and_fake(ops.int8_mixed_scaled_mm, X, q, qw, rs, sw)
    assert empty_sub.shape == (6, 0) and torch.allclose(no_outliers.double(), ref, rtol=2e-3, atol=2e-3)
    rq, cq, r_s, c_s, outl = run_and_fake(ops.int8_double_quant, X, 6.0)
    frq, fcq, frs2, fcs, foutl = F.int8_double_quant(X, threshold=6.0)
    assert torch.equal(rq, frq) and torch.equal(cq, fcq) and torch.equal(r_s, frs2) and torch.equal(c_s, fcs)
    assert outl.tolist() == foutl.tolist() == [7]
    # empty inputs
    eq, ers, _ = run_and_fake(ops.int8_vectorwise_quant, X[:0])
    assert eq.shape == (0, 64) and ers.shape == (0,)
    assert run_and_fake(ops.int8_linear_matmul, eq, qw).shape == (0, 10)
    assert run_and_fake(ops.int8_mm_dequant, C[:0], rs[:0], sw).shape == (0, 10)


@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_ops_match_the_functions(device):
    torch.manual_seed(8)
    n = 4096
    p0 = torch.randn(n, device=device)
    grads = [torch.randn(n, device=device) for _ in range(3)]

    def fresh():
        return p0.clone(), torch.zeros(n, device=device), torch.zeros(n, device=device), torch.zeros(1, device=device)

    p, m, v, unorm = fresh()
    q, mq, vq, unq = fresh()
    for t, g in enumerate(grads, 1):
        norm = float(torch.linalg.vector_norm(p))
        ops.optimizer_update_32bit("lamb", g.clone(), p, m, v, unorm, 0.5, norm, 0.9, 0.999, 0.0, 0.0, 1e-8, 0.01,
                                   t, 1e-2, 1.0)
        F.optimizer_update_32bit("lamb", g.clone(), q, mq, 0.9, 1e-8, t, 1e-2, state2=vq, beta2=0.999,
                                 weight_decay=0.01, unorm_vec=unq, max_unorm=0.5)
    assert torch.equal(p, q) and torch.equal(m, mq) and not torch.equal(p, p0)
    blocks = n // 256
    states = [(p0.clone(), torch.zeros(n, dtype=torch.uint8, device=device), torch.zeros(blocks, device=device))
              for _ in range(2)]
    qmap = F.create_dynamic_map().to(device)
    for t, g in enumerate(grads, 1):
        (pa, sa, aa), (pb, sb, ab) = states
        ops.optimizer_update_8bit_blockwise("momentum", g, pa, sa, None, 0.9, 0.0, 0.0, 0.0, 0.0, t, 1e-2, qmap, None,
                                            aa, None, 0.0, 1.0)
        F.optimizer_update_8bit_blockwise("momentum", g, pb, sb, None, 0.9, 0.0, 0.0, 0.0, 0.0, t, 1e-2, qmap, None,
                                          ab, None)
    assert torch.equal(states[0][0], states[1][0]) and torch.equal(states[0][1], states[1][1])
    with FakeTensorMode():
        fake = torch.empty(8)
        ops.optimizer_update_32bit("adam", fake, torch.empty(8), torch.empty(8), torch.empty(8), None, 0.0, 0.0,
                                   0.9, 0.99, 0.0, 0.0, 1e-8, 0.0, 1, 1e-3, 1.0)
        with pytest.raises(Exception, match="same number of elements"):
            ops.optimizer_update_32bit("adam", fake, torch.empty(9), torch.empty(8), None, None, 0.0, 0.0, 0.9,
                                       0.99, 0.0, 0.0, 1e-8, 0.0, 1, 1e-3, 1.0)


# ---------------------------------------------------------------- torch.compile
def test_compile_fullgraph_through_the_ops():
    torch.manual_seed(5)
    W = torch.randn(32, 64)
    X = torch.randn(4, 64)

    def f(w, x):
        packed, absmax = ops.quantize_4bit(w, 64, "nf4", torch.uint8)
        wd = ops.dequantize_4bit(packed, absmax, 64, "nf4", [32, 64], torch.float32)
        y4 = ops.gemm_4bit(x, packed, [32, 64], absmax, 64, "nf4")
        qx, sx, _ = ops.int8_vectorwise_quant(x.half())
        qw, sw, _ = ops.int8_vectorwise_quant(w.half())
        y8 = ops.int8_mm_dequant(ops.int8_linear_matmul(qx, qw), sx, sw, dtype=torch.float32)
        return x @ wd.t(), y4, y8

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(W, X), f(W, X)):
        assert torch.equal(got, want)


def test_compile_fullgraph_through_the_functional_api():
    torch.manual_seed(6)
    W = torch.randn(32, 128, dtype=torch.bfloat16)
    X = torch.randn(3, 128, dtype=torch.bfloat16)
    packed, state = F.quantize_4bit(W, quant_type="fp4", compress_statistics=True, quant_storage=torch.bfloat16)

    def f(x):
        y = F.gemv_4bit(x, packed.t(), state=state)
        w = F.dequantize_4bit(packed, state)
        q, s = F.quantize_blockwise(x, blocksize=64)
        return y, w, F.dequantize_blockwise(q, s)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(X), f(X)):
        assert torch.equal(got, want)

    def g(w, x):  # quantizing inside the graph, and the LLM.int8() functions
        p, st = F.quantize_4bit(w, quant_type="nf4", compress_statistics=True, quant_storage=torch.bfloat16)
        q, rs, _ = F.int8_vectorwise_quant(x)
        c = F.int8_linear_matmul(q, q)
        return (F.gemv_4bit(x, p.t(), state=st), F.dequantize_4bit(p, st), F.int8_mm_dequant(c, rs, rs),
                F.int8_vectorwise_dequant(q, rs))

    compiled = torch.compile(g, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(W, X), g(W, X)):
        assert torch.equal(got, want)


# ---------------------------------------------------------------- torch.library.opcheck
def opcheck_cases():
    torch.manual_seed(7)
    A = torch.randn(8, 64)
    packed, absmax = ops.quantize_4bit(A, 64, "nf4", torch.uint8)
    code = F.create_dynamic_map()
    qb, ab = ops.quantize_blockwise(A, code, 64)
    i8 = torch.randint(-127, 128, (3, 64), dtype=torch.int8)
    w8 = torch.randint(-127, 128, (4, 64), dtype=torch.int8)
    c32 = torch.randint(-5000, 5000, (3, 4), dtype=torch.int32)
    return {
        "quantize_4bit": (ops.quantize_4bit.default, (A, 64, "nf4", torch.int32)),  # int32 storage: no NaN bytes
        "dequantize_4bit": (ops.dequantize_4bit.default, (packed, absmax, 64, "nf4", [8, 64], torch.float16)),
        "dequantize_4bit.out": (ops.dequantize_4bit.out, (packed, absmax, 64, "fp4", [8, 64], torch.float32,
                                                           torch.empty(8, 64))),
        "quantize_blockwise": (ops.quantize_blockwise.default, (A, code, 64)),
        "dequantize_blockwise": (ops.dequantize_blockwise.default, (qb, ab, code, 64, torch.bfloat16)),
        "gemm_4bit": (ops.gemm_4bit.default, (torch.randn(3, 64), packed, [8, 64], absmax, 64, "nf4")),
        "gemv_4bit": (ops.gemv_4bit.default, (torch.randn(1, 64), packed, [8, 64], absmax,
                                              F.get_4bit_type("nf4", device="cpu"), 64)),
        "int8_vectorwise_quant": (ops.int8_vectorwise_quant.default, (A.half(),)),
        "int8_vectorwise_dequant": (ops.int8_vectorwise_dequant.default, (i8, torch.rand(3))),
        "int8_linear_matmul": (ops.int8_linear_matmul.default, (i8, w8)),
        "int8_mm_dequant": (ops.int8_mm_dequant.default, (c32, torch.rand(3), torch.rand(4))),
        "int8_scaled_mm": (ops.int8_scaled_mm.default, (i8, w8, torch.rand(3), torch.rand(4))),
        "int8_double_quant": (ops.int8_double_quant.default, (A.half(), 0.0)),
    }


@pytest.mark.parametrize("name", sorted(opcheck_cases()))
def test_opcheck(name):
    """torch's own consistency checks: schema, fake vs real outputs, AOT dispatch with dynamic shapes."""
    op, args = opcheck_cases()[name]
    result = torch.library.opcheck(op, args)
    assert set(result.values()) == {"SUCCESS"}, result


# ---------------------------------------------------------------- CUDA graphs
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ops_and_functions_replay_in_a_cuda_graph():
    """Captured once (after a warm-up call), replayed on new inputs: no host synchronisation inside."""
    torch.manual_seed(9)
    dev = "cuda"
    W = torch.randn(64, 256, device=dev, dtype=torch.bfloat16)
    packed, state = F.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    plain_packed, plain = F.quantize_4bit(W, quant_type="fp4")
    code = F.get_4bit_type("fp4", device=dev)
    qw, sw, _ = F.int8_vectorwise_quant(W.half())
    x = torch.randn(2, 256, device=dev, dtype=torch.bfloat16)

    def step(x):
        return (F.gemv_4bit(x, packed.t(), state=state),
                ops.gemv_4bit(x, plain_packed.t(), [64, 256], plain.absmax, code, 64),
                ops.dequantize_4bit(plain_packed, plain.absmax, 64, "fp4", [64, 256], torch.bfloat16),
                ops.int8_scaled_mm(F.int8_vectorwise_quant(x.half())[0], qw,
                                   F.int8_vectorwise_quant(x.half())[1], sw, dtype=torch.float32))

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step(x)  # warm-up: library plans, code-map lookups
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step(x)
    for _ in range(2):
        x.copy_(torch.randn(2, 256, device=dev, dtype=torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip(outs, step(x)):
            assert torch.equal(got, want)
