"""torch.ops.bitsandbytes.*: bitsandbytes' custom ops, with its op names and schemas, run by bnb.

Code written against bitsandbytes (its own layers, or graphs that call the ops directly) finds the
ops under the same names and signatures. Each op has:
  - a fake (meta) implementation giving output shapes and dtypes, so torch.compile
    (fullgraph=True) and torch.export trace through it without running it;
  - one kernel for CPU and CUDA tensors (bnb picks its CPU, CUDA or HIP backend from the tensor's
    device), which calls this package's functional module or bnb directly.

The optimizer ops update one parameter per call through bnb_optimizer_update (bitsandbytes.optim's
classes batch many parameters per library call instead).
"""

import weakref
from math import prod

import torch

from . import functional as F

_DEVICES = ("cpu", "cuda")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
_BLOCKSIZES_4BIT = (32, 64, 128, 256, 512, 1024, 2048, 4096)

# name -> schema, exactly as bitsandbytes 0.50.2 declares them
SCHEMAS = {
    "int8_mixed_scaled_mm": "(Tensor A, Tensor CA, Tensor CB, Tensor SCA, Tensor SCB, Tensor? outlier_cols=None, "
                            "Tensor? bias=None) -> (Tensor, Tensor?)",
    "int8_scaled_mm": "(Tensor A, Tensor B, Tensor row_stats, Tensor col_stats, Tensor? bias=None, "
                      "ScalarType? dtype=None) -> Tensor",
    "int8_linear_matmul": "(Tensor A, Tensor B) -> Tensor",
    "int8_linear_matmul.out": "(Tensor A, Tensor B, Tensor! out) -> ()",
    "int8_vectorwise_quant": "(Tensor A, float threshold=0.0) -> (Tensor, Tensor, Tensor?)",
    "int8_vectorwise_dequant": "(Tensor A, Tensor stats) -> Tensor",
    "int8_mm_dequant": "(Tensor A, Tensor row_stats, Tensor col_stats, ScalarType? dtype=None, Tensor? bias=None) "
                       "-> Tensor",
    "int8_double_quant": "(Tensor A, float threshold=0.0) -> (Tensor, Tensor, Tensor, Tensor, Tensor?)",
    "dequantize_4bit": "(Tensor A, Tensor absmax, int blocksize, str quant_type, int[] shape, ScalarType dtype) "
                       "-> Tensor",
    "dequantize_4bit.out": "(Tensor A, Tensor absmax, int blocksize, str quant_type, int[] shape, "
                           "ScalarType dtype, Tensor! out) -> ()",
    "quantize_4bit": "(Tensor A, int blocksize, str quant_type, ScalarType quant_storage) -> (Tensor, Tensor)",
    "gemm_4bit": "(Tensor A, Tensor B, int[] shapeB, Tensor absmax, int blocksize, str quant_type, "
                 "Tensor? bias=None, Tensor? absmax_8bit=None, Tensor? absmax_code=None, "
                 "Tensor? absmax_offset=None) -> Tensor",
    "dequantize_blockwise": "(Tensor A, Tensor absmax, Tensor code, int blocksize, ScalarType dtype) -> Tensor",
    "dequantize_blockwise.out": "(Tensor A, Tensor absmax, Tensor code, int blocksize, ScalarType dtype, "
                                "Tensor! out) -> ()",
    "quantize_blockwise": "(Tensor A, Tensor code, int blocksize) -> (Tensor, Tensor)",
    "gemv_4bit": "(Tensor A, Tensor B, int[] shapeB, Tensor absmax, Tensor code, int blocksize) -> Tensor",
    "gemv_4bit.out": "(Tensor A, Tensor B, int[] shapeB, Tensor absmax, Tensor code, int blocksize, Tensor! out) "
                     "-> ()",
    "optimizer_update_32bit": "(str optimizer_name, Tensor(a0!) g, Tensor(a1!) p, Tensor(a2!) state1, "
                              "Tensor(a3!)? state2, Tensor(a4!)? unorm_vec, float max_unorm, float param_norm, "
                              "float beta1, float beta2, float beta3, float alpha, float eps, float weight_decay, "
                              "int step, float lr, float gnorm_scale, bool skip_zeros=False) -> ()",
    "optimizer_update_8bit_blockwise": "(str optimizer_name, Tensor(a0!) g, Tensor(a1!) p, Tensor(a2!) state1, "
                                       "Tensor(a3!)? state2, float beta1, float beta2, float beta3, float alpha, "
                                       "float eps, int step, float lr, Tensor(a4!) qmap1, Tensor(a5!)? qmap2, "
                                       "Tensor(a6!) absmax1, Tensor(a7!)? absmax2, float weight_decay, "
                                       "float gnorm_scale, bool skip_zeros=False) -> ()",
}

for _name, _schema in SCHEMAS.items():
    torch.library.define("bitsandbytes::" + _name, _schema)


def _fake(name):
    return torch.library.register_fake("bitsandbytes::" + name)


def _kernel(name):
    return torch.library.register_kernel("bitsandbytes::" + name, _DEVICES)


def _check_out(out, shape, dtype, device, op):
    """The checks of an `.out` overload's buffer (in the fake and the kernel alike)."""
    torch._check(tuple(out.shape) == tuple(shape),
                 lambda: f"{op}: out has shape {tuple(out.shape)}, the result {tuple(shape)}")
    torch._check(out.dtype == dtype, lambda: f"{op}: out is {out.dtype}, the result {dtype}")
    torch._check(out.device == device, lambda: f"{op}: out is on {out.device}, the inputs on {device}")


def _check_4bit(blocksize, quant_type, op):
    torch._check(blocksize in _BLOCKSIZES_4BIT, lambda: f"{op}: blocksize must be one of {_BLOCKSIZES_4BIT}, "
                                                        f"not {blocksize}")
    torch._check(quant_type in ("nf4", "fp4"), lambda: f"{op}: quant_type must be 'nf4' or 'fp4', not {quant_type!r}")


def _check_float(x, name, op):
    torch._check(x.dtype in _FLOATS, lambda: f"{op}: {name} must be float16, bfloat16 or float32, not {x.dtype}")


# ---------------------------------------------------------------- 8-bit blockwise
@_fake("quantize_blockwise")
def _(A, code, blocksize):
    torch._check(blocksize > 0, lambda: f"quantize_blockwise: blocksize must be positive, not {blocksize}")
    _check_float(A, "A", "quantize_blockwise")
    blocks = -(A.numel() // -blocksize)
    return torch.empty_like(A, dtype=torch.uint8), A.new_empty((blocks,), dtype=torch.float32)


@_kernel("quantize_blockwise")
def _(A, code, blocksize):
    q, state = F.quantize_blockwise(A, code=code, blocksize=blocksize)
    return q, state.absmax


def _dequantize_blockwise(A, absmax, code, blocksize, dtype):
    state = F.QuantState(absmax=absmax, code=code, blocksize=blocksize, dtype=dtype)
    return F.dequantize_blockwise(A, state)


def _fake_dequantize_blockwise(A, blocksize, dtype, op):
    torch._check(blocksize > 0, lambda: f"{op}: blocksize must be positive, not {blocksize}")
    torch._check(A.dtype == torch.uint8, lambda: f"{op}: A must be uint8, not {A.dtype}")
    torch._check(dtype in _FLOATS, lambda: f"{op}: dtype must be float16, bfloat16 or float32, not {dtype}")


@_fake("dequantize_blockwise")
def _(A, absmax, code, blocksize, dtype):
    _fake_dequantize_blockwise(A, blocksize, dtype, "dequantize_blockwise")
    return torch.empty_like(A, dtype=dtype)


@_kernel("dequantize_blockwise")
def _(A, absmax, code, blocksize, dtype):
    return _dequantize_blockwise(A, absmax, code, blocksize, dtype)


@_fake("dequantize_blockwise.out")
def _(A, absmax, code, blocksize, dtype, out):
    _fake_dequantize_blockwise(A, blocksize, dtype, "dequantize_blockwise.out")
    _check_out(out, A.shape, dtype, A.device, "dequantize_blockwise.out")


@_kernel("dequantize_blockwise.out")
def _(A, absmax, code, blocksize, dtype, out):
    _check_out(out, A.shape, dtype, A.device, "dequantize_blockwise.out")
    out.copy_(_dequantize_blockwise(A, absmax, code, blocksize, dtype))


# ---------------------------------------------------------------- 4-bit
@_fake("quantize_4bit")
def _(A, blocksize, quant_type, quant_storage):
    _check_4bit(blocksize, quant_type, "quantize_4bit")
    _check_float(A, "A", "quantize_4bit")
    n = A.numel()
    itemsize = torch.empty((), dtype=quant_storage).element_size()
    return (A.new_empty(((n + 1) // (2 * itemsize), 1), dtype=quant_storage),
            A.new_empty((-(n // -blocksize),), dtype=torch.float32))


@_kernel("quantize_4bit")
def _(A, blocksize, quant_type, quant_storage):
    packed, state = F.quantize_4bit(A, blocksize=blocksize, quant_type=quant_type, quant_storage=quant_storage)
    return packed, state.absmax


def _dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype):
    state = F.QuantState(absmax=absmax, shape=shape, blocksize=blocksize, quant_type=quant_type, dtype=dtype)
    return F.dequantize_4bit(A.reshape(-1), state)  # flat: no transposed-input convention at this level


def _fake_dequantize_4bit(absmax, blocksize, quant_type, dtype, op):
    _check_4bit(blocksize, quant_type, op)
    torch._check(absmax.dtype == torch.float32, lambda: f"{op}: absmax must be float32, not {absmax.dtype}")
    torch._check(dtype in _FLOATS, lambda: f"{op}: dtype must be float16, bfloat16 or float32, not {dtype}")


@_fake("dequantize_4bit")
def _(A, absmax, blocksize, quant_type, shape, dtype):
    _fake_dequantize_4bit(absmax, blocksize, quant_type, dtype, "dequantize_4bit")
    return A.new_empty(shape, dtype=dtype)


@_kernel("dequantize_4bit")
def _(A, absmax, blocksize, quant_type, shape, dtype):
    return _dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype)


@_fake("dequantize_4bit.out")
def _(A, absmax, blocksize, quant_type, shape, dtype, out):
    _fake_dequantize_4bit(absmax, blocksize, quant_type, dtype, "dequantize_4bit.out")
    _check_out(out, shape, dtype, A.device, "dequantize_4bit.out")


@_kernel("dequantize_4bit.out")
def _(A, absmax, blocksize, quant_type, shape, dtype, out):
    _check_out(out, shape, dtype, A.device, "dequantize_4bit.out")
    out.copy_(_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype))


def _fake_matmul_4bit(A, B, shapeB, blocksize, op):
    torch._check(len(shapeB) == 2, lambda: f"{op}: shapeB must be [N, K], not {list(shapeB)}")
    torch._check(A.shape[-1] == shapeB[1], lambda: f"{op}: A has {A.shape[-1]} columns, shapeB is {list(shapeB)}")
    _check_float(A, "A", op)
    torch._check(blocksize in _BLOCKSIZES_4BIT, lambda: f"{op}: blocksize must be one of {_BLOCKSIZES_4BIT}")
    return tuple(A.shape[:-1]) + (shapeB[0],)


@_fake("gemm_4bit")
def _(A, B, shapeB, absmax, blocksize, quant_type, bias=None, absmax_8bit=None, absmax_code=None,
      absmax_offset=None):
    shape = _fake_matmul_4bit(A, B, shapeB, blocksize, "gemm_4bit")
    _check_4bit(blocksize, quant_type, "gemm_4bit")
    torch._check(absmax.dtype == torch.float32, lambda: f"gemm_4bit: absmax must be float32, not {absmax.dtype}")
    if absmax_8bit is not None:
        torch._check(absmax_8bit.dtype == torch.uint8, lambda: "gemm_4bit: absmax_8bit must be uint8")
        torch._check(absmax_code is not None and absmax_offset is not None,
                     lambda: "gemm_4bit: absmax_8bit needs absmax_code and absmax_offset")
    return A.new_empty(shape)


@_kernel("gemm_4bit")
def _(A, B, shapeB, absmax, blocksize, quant_type, bias=None, absmax_8bit=None, absmax_code=None,
      absmax_offset=None):
    """absmax_8bit given: the weight's absmax is double-quantized (codes absmax_8bit, code map
    absmax_code, mean absmax_offset) and `absmax` holds the float32 scales of its blocks of 256."""
    if absmax_8bit is None:
        state = F.QuantState(absmax=absmax, shape=shapeB, blocksize=blocksize, quant_type=quant_type, dtype=A.dtype)
    else:
        if absmax_code is None or absmax_offset is None:
            raise ValueError("gemm_4bit: absmax_8bit needs absmax_code and absmax_offset")
        state2 = F.QuantState(absmax=absmax, code=absmax_code, blocksize=256, dtype=torch.float32)
        state = F.QuantState(absmax=absmax_8bit, shape=shapeB, blocksize=blocksize, quant_type=quant_type,
                             dtype=A.dtype, offset=absmax_offset, state2=state2)
    return F._matmul_4bit(A, B, state, bias)


# gemv_4bit names the weight's 4-bit type by its code map. bnb's kernels take NF4 and FP4 by name:
# a code equal to one of those tables runs there; any other 16-entry map is decoded here in torch.
# The answer is remembered per code tensor and version, so a GPU code map is read back only once.
_code_types = {}


def _quant_type_of_code(code):
    key = id(code)
    known = _code_types.get(key)
    if known is not None and known[0]() is code and known[1] == code._version:
        return known[2]
    values = code.detach().reshape(-1).float().cpu()
    found = None
    for name in ("nf4", "fp4"):
        if values.numel() == 16 and torch.equal(values, F.get_4bit_type(name, device="cpu")):
            found = name
    _code_types[key] = (weakref.ref(code, lambda _, k=key: _code_types.pop(k, None)), code._version, found)
    return found


def _gemv_4bit(A, B, shapeB, absmax, code, blocksize):
    quant_type = _quant_type_of_code(code)
    if quant_type is not None:
        state = F.QuantState(absmax=absmax, shape=shapeB, blocksize=blocksize, quant_type=quant_type, dtype=A.dtype)
        return F._matmul_4bit(A, B, state)
    if code.numel() != 16:
        raise ValueError(f"gemv_4bit: code must hold the 16 values of a 4-bit type, not {code.numel()}")
    N, K = shapeB
    n = N * K
    data = B.reshape(-1).view(torch.uint8) if B.dtype != torch.uint8 else B.reshape(-1)
    nibbles = torch.stack([data >> 4, data & 15], dim=1).reshape(-1)[:n].long()
    W = code.float().reshape(-1)[nibbles] * absmax.float().repeat_interleave(blocksize)[:n]
    return torch.nn.functional.linear(A, W.reshape(N, K).to(A.dtype))


@_fake("gemv_4bit")
def _(A, B, shapeB, absmax, code, blocksize):
    return A.new_empty(_fake_matmul_4bit(A, B, shapeB, blocksize, "gemv_4bit"))


@_kernel("gemv_4bit")
def _(A, B, shapeB, absmax, code, blocksize):
    return _gemv_4bit(A, B, shapeB, absmax, code, blocksize)


@_fake("gemv_4bit.out")
def _(A, B, shapeB, absmax, code, blocksize, out):
    shape = _fake_matmul_4bit(A, B, shapeB, blocksize, "gemv_4bit.out")
    _check_out(out, shape, A.dtype, A.device, "gemv_4bit.out")


@_kernel("gemv_4bit.out")
def _(A, B, shapeB, absmax, code, blocksize, out):
    _check_out(out, tuple(A.shape[:-1]) + (shapeB[0],), A.dtype, A.device, "gemv_4bit.out")
    out.copy_(_gemv_4bit(A, B, shapeB, absmax, code, blocksize))


# ---------------------------------------------------------------- LLM.int8()
def _fake_int8_matmul(A, B, op):
    torch._check(A.dtype == torch.int8, lambda: f"{op}: A must be int8, not {A.dtype}")
    torch._check(B.dtype == torch.int8, lambda: f"{op}: B must be int8, not {B.dtype}")
    return tuple(A.shape[:-1]) + (B.shape[0],)


@_fake("int8_linear_matmul")
def _(A, B):
    return A.new_empty(_fake_int8_matmul(A, B, "int8_linear_matmul"), dtype=torch.int32)


@_kernel("int8_linear_matmul")
def _(A, B):
    return F.int8_linear_matmul(A, B)


@_fake("int8_linear_matmul.out")
def _(A, B, out):
    _check_out(out, _fake_int8_matmul(A, B, "int8_linear_matmul.out"), torch.int32, A.device,
               "int8_linear_matmul.out")


@_kernel("int8_linear_matmul.out")
def _(A, B, out):
    F.int8_linear_matmul(A, B, out=out)


def _rows(A):
    return prod(A.shape[:-1])


@_fake("int8_vectorwise_quant")
def _(A, threshold=0.0):
    _check_float(A, "A", "int8_vectorwise_quant")
    q = torch.empty_like(A, dtype=torch.int8)
    row_stats = A.new_empty((_rows(A),), dtype=torch.float32)
    if threshold == 0.0:
        return q, row_stats, None
    return q, row_stats, A.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


@_kernel("int8_vectorwise_quant")
def _(A, threshold=0.0):
    return F.int8_vectorwise_quant(A, threshold)


@_fake("int8_vectorwise_dequant")
def _(A, stats):
    torch._check(A.dtype == torch.int8, lambda: f"int8_vectorwise_dequant: A must be int8, not {A.dtype}")
    return torch.empty_like(A, dtype=torch.float32)


@_kernel("int8_vectorwise_dequant")
def _(A, stats):
    return F.int8_vectorwise_dequant(A, stats)


@_fake("int8_mm_dequant")
def _(A, row_stats, col_stats, dtype=None, bias=None):
    torch._check(A.dtype == torch.int32, lambda: f"int8_mm_dequant: A must be int32, not {A.dtype}")
    return torch.empty_like(A, dtype=dtype or torch.float16)


@_kernel("int8_mm_dequant")
def _(A, row_stats, col_stats, dtype=None, bias=None):
    return F._int8_mm_dequant(A, row_stats, col_stats, bias, dtype or torch.float16)


@_fake("int8_scaled_mm")
def _(A, B, row_stats, col_stats, bias=None, dtype=None):
    return A.new_empty(_fake_int8_matmul(A, B, "int8_scaled_mm"), dtype=dtype or torch.float16)


@_kernel("int8_scaled_mm")
def _(A, B, row_stats, col_stats, bias=None, dtype=None):
    return F._int8_mm_dequant(F.int8_linear_matmul(A, B), row_stats, col_stats, bias, dtype or torch.float16)


@_fake("int8_mixed_scaled_mm")
def _(A, CA, CB, SCA, SCB, outlier_cols=None, bias=None):
    # the second output is A's outlier columns (what the kernel returns; bitsandbytes' own fake
    # declares a 1-D int64 tensor there, which its kernels do not produce)
    out = A.new_empty(tuple(CA.shape[:-1]) + (CB.shape[0],))
    return out, A.new_empty(tuple(A.shape[:-1]) + (torch.library.get_ctx().new_dynamic_size(),))


@_kernel("int8_mixed_scaled_mm")
def _(A, CA, CB, SCA, SCB, outlier_cols=None, bias=None):
    """The LLM.int8() product with outliers: CA @ CB.T dequantized to A's dtype (+ bias), plus the
    outlier columns of A in A's dtype times the same columns of the dequantized weight. Also
    returns those columns of A ([..., 0] without outliers)."""
    out = F._int8_mm_dequant(F.int8_linear_matmul(CA, CB), SCA, SCB, bias, A.dtype)
    if outlier_cols is None or outlier_cols.numel() == 0:
        return out, A.new_empty(tuple(A.shape[:-1]) + (0,))
    sub_a = A[..., outlier_cols].contiguous()
    sub_w = F.int8_vectorwise_dequant(CB[:, outlier_cols].contiguous(), SCB).to(A.dtype)
    return out + sub_a @ sub_w.t(), sub_a


@_fake("int8_double_quant")
def _(A, threshold=0.0):
    _check_float(A, "A", "int8_double_quant")
    outliers = A.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)
    return (torch.empty_like(A, dtype=torch.int8), torch.empty_like(A, dtype=torch.int8),
            A.new_empty((_rows(A),), dtype=torch.float32), A.new_empty((A.shape[-1],), dtype=torch.float32), outliers)


@_kernel("int8_double_quant")
def _(A, threshold=0.0):
    F._float_tensor("A", A, "int8_double_quant")
    return F._int8_double_quant(A, float(threshold))


# ---------------------------------------------------------------- optimizers
def _fake_optimizer(g, p, op):
    torch._check(g.numel() == p.numel(), lambda: f"{op}: g and p must have the same number of elements")
    torch._check(g.dtype in _FLOATS and g.dtype == p.dtype,
                 lambda: f"{op}: g and p must share one of float16, bfloat16, float32, got {g.dtype} and {p.dtype}")


@_fake("optimizer_update_32bit")
def _(optimizer_name, g, p, state1, state2, unorm_vec, max_unorm, param_norm, beta1, beta2, beta3, alpha, eps,
      weight_decay, step, lr, gnorm_scale, skip_zeros=False):
    _fake_optimizer(g, p, "optimizer_update_32bit")


@_kernel("optimizer_update_32bit")
def _(optimizer_name, g, p, state1, state2, unorm_vec, max_unorm, param_norm, beta1, beta2, beta3, alpha, eps,
      weight_decay, step, lr, gnorm_scale, skip_zeros=False):
    """The caller supplies param_norm (||p|| before the step) when max_unorm > 0."""
    F._optimizer_update(optimizer_name, 32, g, p, state1, state2, None, None, None, None, unorm_vec, beta1, beta2,
                        beta3, alpha, eps, weight_decay, step, lr, gnorm_scale, max_unorm, param_norm, skip_zeros)


@_fake("optimizer_update_8bit_blockwise")
def _(optimizer_name, g, p, state1, state2, beta1, beta2, beta3, alpha, eps, step, lr, qmap1, qmap2, absmax1,
      absmax2, weight_decay, gnorm_scale, skip_zeros=False):
    _fake_optimizer(g, p, "optimizer_update_8bit_blockwise")
    torch._check(state1.dtype == torch.uint8, lambda: f"optimizer_update_8bit_blockwise: state1 must be uint8, "
                                                      f"not {state1.dtype}")


@_kernel("optimizer_update_8bit_blockwise")
def _(optimizer_name, g, p, state1, state2, beta1, beta2, beta3, alpha, eps, step, lr, qmap1, qmap2, absmax1,
      absmax2, weight_decay, gnorm_scale, skip_zeros=False):
    F.optimizer_update_8bit_blockwise(optimizer_name, g, p, state1, state2, beta1, beta2, beta3, alpha, eps, step,
                                      lr, qmap1, qmap2, absmax1, absmax2, weight_decay, gnorm_scale, skip_zeros)


__all__ = ["SCHEMAS"]
