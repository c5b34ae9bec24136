"""bnb's torch custom ops (namespace `bnb`), registered with torch.library on first import.

Each op is opaque to torch.compile and has a fake (meta) implementation that gives output shapes
and dtypes, so a model calling them compiles with fullgraph=True. The eager implementation
makes one library call on the tensor's device and the current torch stream, allocating outputs
with torch's allocator and never synchronizing, so the ops can be captured in CUDA graphs.

Deliberately no `from __future__ import annotations`: torch.library reads the real annotations.
"""

import ctypes
import math
from typing import List, Optional, Tuple

import torch

from . import _arrays, _lib, _ops
from ._arrays import kit_for

Tensor = torch.Tensor


_EAGER = {}


def _op(name):
    """Registers `bnb::<name>` as a torch custom op, keeping the plain function for eager calls."""
    def register(fn):
        _EAGER[name] = fn
        return torch.library.custom_op("bnb::" + name, mutates_args=())(fn)
    return register


# Tensor types the eager path takes as they are: plain tensors, parameters, and bnb.nn's
# parameter subclasses (which disable __torch_function__, so they behave as plain tensors).
PLAIN_TENSOR_TYPES = {torch.Tensor, torch.nn.Parameter}


def _dispatcher(op, eager):
    """Calls the registered op when torch is tracing (torch.compile, export, fake or other tensor
    subclasses) or recording autograd for an input that requires grad; otherwise the eager
    function directly, skipping the dispatcher's Python round trip (about 8 us a call). Both run
    the same code on the same stream."""
    plain = PLAIN_TENSOR_TYPES
    is_compiling = torch.compiler.is_compiling
    grad_enabled = torch.is_grad_enabled
    Tensor_ = torch.Tensor

    def call(*args):
        if is_compiling():
            return op(*args)
        for a in args:
            if isinstance(a, Tensor_) and (type(a) not in plain or (a.requires_grad and grad_enabled())):
                return op(*args)
        return eager(*args)
    return call


_F32, _U8, _I8, _I32 = _lib.F32, _lib.U8, _lib.I8, _lib.I32
_QUANT_TYPES = _lib.QUANT_TYPES
_TORCH_CODES = _arrays._TORCH_CODES()


def _code_of(dtype):
    """bnb dtype code of a torch dtype (the eager functions only ever see torch dtypes)."""
    code = _TORCH_CODES.get(dtype)
    return code if code is not None else _arrays.dtype_code(dtype)


def _prep(kit, a, name, dtype=None):
    return kit.prepare(a, name, dtype)[0] if a is not None else None


def _nb(n, blocksize):
    return _ops.nblocks(n, blocksize)


# ---------------------------------------------------------------- 8-bit blockwise
@_op("quantize_blockwise")
def quantize_blockwise(A: Tensor, code: Optional[Tensor], blocksize: int) -> Tuple[Tensor, Tensor]:
    if A.numel() == 0:
        return torch.empty_like(A, dtype=torch.uint8), A.new_empty((0,), dtype=torch.float32)
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    return _ops.quantize_blockwise(kit, A, dt, _prep(kit, code, "code", _F32), blocksize)


@quantize_blockwise.register_fake
def _(A, code, blocksize):
    return torch.empty_like(A, dtype=torch.uint8), A.new_empty((_nb(A.numel(), blocksize),), dtype=torch.float32)


@_op("dequantize_blockwise")
def dequantize_blockwise(A: Tensor, absmax: Tensor, code: Optional[Tensor], blocksize: int,
                         dtype: torch.dtype) -> Tensor:
    if A.numel() == 0:
        return torch.empty_like(A, dtype=dtype)
    kit = kit_for(A)
    A = _prep(kit, A, "A", _U8)
    return _ops.dequantize_blockwise(kit, A, _prep(kit, absmax, "absmax", _F32), _prep(kit, code, "code", _F32),
                                     blocksize, _code_of(dtype))


@dequantize_blockwise.register_fake
def _(A, absmax, code, blocksize, dtype):
    return torch.empty_like(A, dtype=dtype)


# ---------------------------------------------------------------- 4-bit
@_op("quantize_4bit")
def quantize_4bit(A: Tensor, blocksize: int, quant_type: str) -> Tuple[Tensor, Tensor]:
    if A.numel() == 0:
        return A.new_empty((0, 1), dtype=torch.uint8), A.new_empty((0,), dtype=torch.float32)
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    return _ops.quantize_4bit(kit, A, dt, blocksize, _lib.QUANT_TYPES[quant_type])


@quantize_4bit.register_fake
def _(A, blocksize, quant_type):
    n = A.numel()
    return (A.new_empty(((n + 1) // 2, 1), dtype=torch.uint8),
            A.new_empty((_nb(n, blocksize),), dtype=torch.float32))


@_op("compress_absmax")
def compress_absmax(absmax: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    if absmax.numel() == 0:  # no blocks: no codes, no second-level scales, offset 0
        return (absmax.new_empty((0,), dtype=torch.uint8), absmax.new_empty((0,), dtype=torch.float32),
                absmax.new_zeros((), dtype=torch.float32))
    kit = kit_for(absmax)
    return _ops.compress_absmax(kit, _prep(kit, absmax, "absmax", _F32))


@compress_absmax.register_fake
def _(absmax):
    nb = absmax.numel()
    return (absmax.new_empty((nb,), dtype=torch.uint8), absmax.new_empty((_nb(nb, 256),), dtype=torch.float32),
            absmax.new_empty((), dtype=torch.float32))


@_op("dequantize_4bit")
def dequantize_4bit(A: Tensor, absmax: Tensor, absmax2: Optional[Tensor], code2: Optional[Tensor],
                    offset: Optional[Tensor], blocksize2: int, blocksize: int, quant_type: str, shape: List[int],
                    dtype: torch.dtype) -> Tensor:
    if A.numel() == 0 or 0 in shape:
        return A.new_empty(shape, dtype=dtype)
    kit = kit_for(A)
    A = _prep(kit, A, "A", _U8)
    parts = _contiguous_scales(kit, absmax, absmax2, code2, offset)  # alive until the call returns
    scales = _ops.scales_cached(kit, *parts, blocksize2)
    n = 1
    for d in shape:
        n *= d
    return _ops.dequantize_4bit(kit, A, scales, n, shape, blocksize, _QUANT_TYPES[quant_type], _code_of(dtype))


@dequantize_4bit.register_fake
def _(A, absmax, absmax2, code2, offset, blocksize2, blocksize, quant_type, shape, dtype):
    return A.new_empty(shape, dtype=dtype)


def _contiguous_scales(kit, absmax, absmax2, code2, offset):
    if absmax2 is None:
        return (_prep(kit, absmax, "absmax", _F32), None, None, None)
    return (_prep(kit, absmax, "absmax", _U8), _prep(kit, absmax2, "state2.absmax", _F32),
            _prep(kit, code2, "state2.code", _F32), _prep(kit, offset, "offset", _F32))


@_op("gemm_4bit")
def gemm_4bit(A: Tensor, B: Tensor, absmax: Tensor, absmax2: Optional[Tensor], code2: Optional[Tensor],
              offset: Optional[Tensor], blocksize2: int, blocksize: int, quant_type: str, N: int,
              bias: Optional[Tensor]) -> Tensor:
    if A.numel() == 0:  # no rows: an empty result of the right shape
        return A.new_empty(tuple(A.shape[:-1]) + (N,))
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    K = A.shape[-1]
    M = A.numel() // K if K else 0
    parts = _contiguous_scales(kit, absmax, absmax2, code2, offset)  # alive until the call returns
    scales = _ops.scales_cached(kit, *parts, blocksize2)
    return _ops.gemm_4bit(kit, dt, A, M, K, _prep(kit, B, "B", _U8), N, scales, _QUANT_TYPES[quant_type],
                          blocksize, _prep(kit, bias, "bias", dt), tuple(A.shape[:-1]) + (N,))


@gemm_4bit.register_fake
def _(A, B, absmax, absmax2, code2, offset, blocksize2, blocksize, quant_type, N, bias):
    return A.new_empty(tuple(A.shape[:-1]) + (N,))


def gemm_4bit_plan(A, B, absmax, absmax2, code2, offset, blocksize2, blocksize, quant_type, N, bias):
    """A library plan (_ops.Gemm4Plan) of gemm_4bit's arguments that do not change between calls
    with the same weight, for inputs like A: a caller that checks the weight, its statistics and
    the bias are still the same tensors then passes only A, the output and the stream per call
    (bnb.nn.Linear4bit's eager fast path). None when the arguments do not fit that shortcut (every
    tensor must already be contiguous, on A's device, bias in A's dtype, K a whole number of
    blocks) or the library declines the plan."""
    kit = kit_for(A)
    dt = _TORCH_CODES.get(A.dtype)
    K = A.shape[-1]
    if dt is None or dt not in (_lib.F32, _lib.F16, _lib.BF16) or K <= 0 or blocksize <= 0 or K % blocksize:
        return None
    tensors = (B, absmax, absmax2, code2, offset, bias)
    for t in tensors:
        if t is not None and (t.get_device() != kit._device_id or not t.is_contiguous()):
            return None
    if B.dtype != torch.uint8 or B.numel() * 2 < N * K or (bias is not None and bias.dtype != A.dtype):
        return None
    if absmax2 is None:
        if absmax.dtype != torch.float32:
            return None
    elif absmax.dtype != torch.uint8 or absmax2.dtype != torch.float32 or code2.dtype != torch.float32 \
            or offset.dtype != torch.float32:
        return None
    scales = _ops.scales(kit, absmax, absmax2, code2, offset, blocksize2)  # holds its tensors
    try:
        return _ops.Gemm4Plan(kit, dt, N, K, B, scales, _QUANT_TYPES[quant_type], blocksize, bias, ())
    except _lib.Error:
        return None


@_op("gemm_4bit_transposed")
def gemm_4bit_transposed(A: Tensor, B: Tensor, absmax: Tensor, absmax2: Optional[Tensor], code2: Optional[Tensor],
                         offset: Optional[Tensor], blocksize2: int, blocksize: int, quant_type: str, N: int,
                         K: int) -> Tensor:
    """A[..., N] @ W[N, K] for the 4-bit weight W [N, K] that B packs (gemm_4bit's other orientation:
    the input gradient of A @ W^T). Where the backend does not offer bnb_gemm_4bit_transposed
    (HIP today) the weight is dequantized and multiplied by torch."""
    if A.numel() == 0:
        return A.new_empty(tuple(A.shape[:-1]) + (K,))
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    M = A.numel() // N if N else 0
    if K % blocksize == 0:
        parts = _contiguous_scales(kit, absmax, absmax2, code2, offset)  # alive until the call returns
        scales = _ops.scales_cached(kit, *parts, blocksize2)
        try:
            return _ops.gemm_4bit_transposed(kit, dt, A, M, N, _prep(kit, B, "B", _U8), K, scales,
                                             _QUANT_TYPES[quant_type], blocksize, tuple(A.shape[:-1]) + (K,))
        except _lib.NotSupportedError:
            pass
    W = dequantize_4bit(B, absmax, absmax2, code2, offset, blocksize2, blocksize, quant_type, [N, K], A.dtype)
    return A @ W


@gemm_4bit_transposed.register_fake
def _(A, B, absmax, absmax2, code2, offset, blocksize2, blocksize, quant_type, N, K):
    return A.new_empty(tuple(A.shape[:-1]) + (K,))


def _gemm_4bit_setup(ctx, inputs, output):
    A, B, absmax, absmax2, code2, offset, blocksize2, blocksize, quant_type, N, bias = inputs
    ctx.save_for_backward(B, absmax, absmax2, code2, offset)
    ctx.args = (blocksize2, blocksize, quant_type, N, A.shape[-1])


def _gemm_4bit_backward(ctx, grad):
    """The weight is frozen: gradients for A (grad @ W, the transposed 4-bit product) and the bias only."""
    B, absmax, absmax2, code2, offset = ctx.saved_tensors
    blocksize2, blocksize, quant_type, N, K = ctx.args
    grads = [None] * 11
    if ctx.needs_input_grad[0]:
        grads[0] = torch.ops.bnb.gemm_4bit_transposed(grad.contiguous(), B, absmax, absmax2, code2, offset, blocksize2,
                                                      blocksize, quant_type, N, K)
    if ctx.needs_input_grad[10]:
        grads[10] = grad.reshape(-1, N).sum(0)
    if any(ctx.needs_input_grad[1:6]):
        raise RuntimeError("bnb.gemm_4bit: the 4-bit weight and its statistics have no gradient (frozen weight)")
    return tuple(grads)


gemm_4bit.register_autograd(_gemm_4bit_backward, setup_context=_gemm_4bit_setup)


# ---------------------------------------------------------------- LLM.int8()
@_op("int8_vectorwise_quant")
def int8_vectorwise_quant(A: Tensor, threshold: float) -> Tuple[Tensor, Tensor]:
    if A.numel() == 0:  # no rows, or rows without entries (their absmax is 0)
        return torch.empty_like(A, dtype=torch.int8), A.new_zeros((_rows(A),), dtype=torch.float32)
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    cols = A.shape[-1]
    rows = A.numel() // cols if cols else 0
    return _ops.int8_vectorwise_quant(kit, A, dt, rows, cols, threshold)


@int8_vectorwise_quant.register_fake
def _(A, threshold):
    return torch.empty_like(A, dtype=torch.int8), A.new_empty((_rows(A),), dtype=torch.float32)


def _rows(A):
    """Rows of A viewed as [rows, A.shape[-1]] (a 1-D A is one row)."""
    return math.prod(A.shape[:-1])


@_op("int8_outlier_columns")
def int8_outlier_columns(A: Tensor, threshold: float) -> Tensor:
    if A.numel() == 0:
        return A.new_empty((0,), dtype=torch.int32)
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    cols = A.shape[-1]
    rows = A.numel() // cols if cols else 0
    return _ops.int8_outlier_columns(kit, A, dt, rows, cols, threshold).clone()


@int8_outlier_columns.register_fake
def _(A, threshold):
    count = torch.library.get_ctx().new_dynamic_size()
    return A.new_empty((count,), dtype=torch.int32)


@_op("int8_matmul")
def int8_matmul(A: Tensor, B: Tensor) -> Tensor:
    M, K = A.shape
    if A.numel() == 0 or B.numel() == 0:  # a sum over no terms is 0
        return A.new_zeros((M, B.shape[0]), dtype=torch.int32)
    kit = kit_for(A)
    return _ops.int8_matmul(kit, _prep(kit, A, "A", _I8), _prep(kit, B, "B", _I8), M, B.shape[0], K)


@int8_matmul.register_fake
def _(A, B):
    return A.new_empty((A.shape[0], B.shape[0]), dtype=torch.int32)


@_op("int8_mm_dequant")
def int8_mm_dequant(C: Tensor, row_stats: Tensor, col_stats: Tensor, bias: Optional[Tensor],
                    dtype: torch.dtype) -> Tensor:
    if C.numel() == 0:
        return C.new_empty(tuple(C.shape), dtype=dtype)
    kit = kit_for(C)
    M, N = C.shape
    out_dt = _code_of(dtype)
    return _ops.int8_mm_dequant(kit, _prep(kit, C, "C", _I32), M, N, _prep(kit, row_stats, "row_stats", _F32),
                                _prep(kit, col_stats, "col_stats", _F32), _prep(kit, bias, "bias", out_dt), out_dt)


@int8_mm_dequant.register_fake
def _(C, row_stats, col_stats, bias, dtype):
    return C.new_empty(tuple(C.shape), dtype=dtype)


@_op("int8_linear")
def int8_linear(A: Tensor, CB: Tensor, SCB: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The LLM.int8() layer without outliers (threshold 0) in one library call (bnb_int8_linear):
    out [M, N] in A's dtype, bit for bit int8_vectorwise_quant, int8_matmul and int8_mm_dequant.
    A is [M, K] (M, N, K > 0), CB int8 [N, K], SCB float32 [N], bias None or [N] in A's dtype."""
    _layer_shapes(A, CB, "int8_linear")
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    M, K = A.shape
    N = CB.shape[0]
    return _ops.int8_linear(kit, A, dt, M, N, K, _prep(kit, CB, "CB", _I8), _prep(kit, SCB, "SCB", _F32),
                            _prep(kit, bias, "bias", dt))


@int8_linear.register_fake
def _(A, CB, SCB, bias):
    return A.new_empty((A.shape[0], CB.shape[0]), dtype=A.dtype)


def _layer_shapes(A, CB, name):
    if A.dim() != 2 or CB.dim() != 2 or A.numel() == 0 or CB.numel() == 0:
        raise ValueError(f"bnb.{name} takes A [M, K] and CB [N, K] with M, N, K > 0, not "
                         f"{tuple(A.shape)} and {tuple(CB.shape)} (bnb.functional.int8_linear takes any)")


@_op("int8_linear_outliers")
def int8_linear_outliers(A: Tensor, CB: Tensor, SCB: Tensor, bias: Optional[Tensor],
                         threshold: float) -> Tuple[Tensor, Tensor, Tensor]:
    """The LLM.int8() layer with its outlier product in one library call (bnb_int8_linear_outliers,
    docs/OPS.md §5.10): (out [M, N] in A's dtype, columns int32 [K], count int64 [1]); the outlier
    columns are columns[:count]. A is [M, K] (M, N, K > 0), CB int8 [N, K], SCB float32 [N], bias
    None or [N] in A's dtype. The count stays on the device: no synchronisation, and the output
    sizes depend only on the input sizes (CUDA-graph capturable)."""
    _layer_shapes(A, CB, "int8_linear_outliers")
    kit = kit_for(A)
    A, dt = kit.prepare(A, "A")
    M, K = A.shape
    N = CB.shape[0]
    count = A.new_empty((1,), dtype=torch.int64)
    out, columns = _ops.int8_linear_outliers(kit, A, dt, M, N, K, _prep(kit, CB, "CB", _I8),
                                             _prep(kit, SCB, "SCB", _F32), _prep(kit, bias, "bias", dt), threshold,
                                             count)
    return out, columns, count


@int8_linear_outliers.register_fake
def _(A, CB, SCB, bias, threshold):
    return (A.new_empty((A.shape[0], CB.shape[0]), dtype=A.dtype), A.new_empty((A.shape[1],), dtype=torch.int32),
            A.new_empty((1,), dtype=torch.int64))


def int8_linear_plan(A, CB, SCB, bias):
    """The fixed arguments of the library call of an LLM.int8() product without outliers
    (bnb_int8_linear) for inputs like A and this weight:
    (the C function, context, A's dtype code, N, K, CB pointer, SCB pointer, bias pointer,
    device index for the stream or None on the host, the objects to keep alive); None when they do
    not fit (every tensor contiguous on A's device, CB int8 [N, K], SCB float32 [N], bias [N] in
    A's dtype). For bnb.nn.Linear8bitLt's eager fast path, like gemm_4bit_plan."""
    kit = kit_for(A)
    dt = _TORCH_CODES.get(A.dtype)
    if dt not in (_lib.F32, _lib.F16, _lib.BF16) or A.dim() == 0 or CB.dim() != 2:
        return None
    N, K = CB.shape
    if A.shape[-1] != K or K <= 0 or N <= 0:
        return None
    for t in (CB, SCB, bias):
        if t is not None and (t.get_device() != kit._device_id or not t.is_contiguous()):
            return None
    if CB.dtype != torch.int8 or SCB.dtype != torch.float32 or tuple(SCB.shape) != (N,):
        return None
    if bias is not None and (bias.dtype != A.dtype or tuple(bias.shape) != (N,)):
        return None
    c = _ops._c
    stream_device = None if kit.backend == _lib.BACKEND_CPU else kit.index
    return (c.bnb_int8_linear, kit.ctx, dt, N, K, CB.data_ptr(),
            SCB.data_ptr(), None if bias is None else bias.data_ptr(), stream_device, (CB, SCB, bias))


def _mm_dequant_setup(ctx, inputs, output):
    ctx.N = inputs[0].shape[1]


def _mm_dequant_backward(ctx, grad):
    """Only the bias has a gradient: LLM.int8()'s quantized operands have no backward in bnb."""
    if any(ctx.needs_input_grad[:3]):
        raise RuntimeError("bnb.int8_mm_dequant: no backward through LLM.int8() quantization (inference only); "
                           "only the bias can be trained")
    return None, None, None, (grad.reshape(-1, ctx.N).sum(0) if ctx.needs_input_grad[3] else None), None


int8_mm_dequant.register_autograd(_mm_dequant_backward, setup_context=_mm_dequant_setup)


class Int8Linear(torch.autograd.Function):
    """LLM.int8()'s layer product with a backward pass:

        out = int8_linear(A, CB, SCB, bias, threshold)   (bnb.functional.int8_linear)
        grad_A    = grad_out @ W_dq,   W_dq = CB * SCB / 127 in A's dtype
        grad_W    = grad_out^T @ A     (only for a float weight W that is being trained)
        grad_bias = grad_out summed over rows

    apply(A, W, CB, SCB, bias, threshold, state, product=None): W is the float weight CB/SCB were
    quantized from when it is trained (Linear8bitLt(has_fp16_weights=True), bitsandbytes.matmul
    with a float B), else None; state (a MatmulLtState or None) receives the outlier columns in
    idx. The forward is `product(A, CB, SCB, bias, threshold, state)`, by default
    bnb.functional.int8_linear (so bit-identical to it); the compatibility layer passes its own
    (bitsandbytes' rounding of the activations)."""

    @staticmethod
    def forward(ctx, A, W, CB, SCB, bias, threshold, state, product=None):
        if product is None:
            from .functional import int8_linear

            out = int8_linear(A, CB, SCB, bias=bias, threshold=threshold, state=state)
        else:
            out = product(A, CB, SCB, bias, threshold, state)
        ctx.save_for_backward(A if ctx.needs_input_grad[1] else None, CB, SCB)
        ctx.dtypes = (A.dtype, None if W is None else W.dtype, None if bias is None else bias.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        A, CB, SCB = ctx.saved_tensors
        a_dtype, w_dtype, b_dtype = ctx.dtypes
        N, K = CB.shape
        needs = ctx.needs_input_grad
        grad_A = grad_W = grad_bias = None
        if needs[0]:
            grad_A = grad.to(a_dtype) @ dequantize_int8_rows(CB, SCB, a_dtype)
        if needs[1]:
            grad_W = (grad.reshape(-1, N).t() @ A.reshape(-1, K).to(grad.dtype)).to(w_dtype)
        if needs[4]:
            grad_bias = grad.reshape(-1, N).sum(0).to(b_dtype)
        return grad_A, grad_W, None, None, grad_bias, None, None, None


def dequantize_int8_rows(CB, SCB, dtype):
    """W = CB * SCB / 127 (an LLM.int8() weight [N, K] from its row codes and row absmax),
    computed in float32 and rounded once to `dtype`."""
    return (CB.to(torch.float32) * (SCB.to(torch.float32) / 127.0).unsqueeze(1)).to(dtype)


# ---------------------------------------------------------------- code tables on a device
@_op("code_table")
def code_table(which: int, like: Tensor) -> Tensor:
    """A fresh copy of a code table on `like`'s device (an op, so it traces under torch.compile)."""
    return _code_table_copy(which, like)


_host_tables = {}  # (which, pinned) -> the table in host memory, never written


def _code_table_copy(which, like):
    # The master copy stays on the host: one on each GPU would be an allocation the process
    # holds beyond what the quantization states hold (bitsandbytes keeps one of the dynamic map
    # only: a device copy of NF4 made a QLoRA run's peak 512 bytes, one allocator block, higher
    # than bitsandbytes', bench/results/h100_run16). The GPU copy is
    # asynchronous from pinned memory, so it also runs inside a CUDA graph capture.
    device = like.device
    pinned = device.type == "cuda"
    table = _host_tables.get((which, pinned))
    if table is None:
        table = torch.from_numpy(_ops.get_code_table(which))
        if pinned:
            table = table.pin_memory()
        _host_tables[(which, pinned)] = table
    if device.type == "cpu":
        return table.clone()
    return table.to(device, non_blocking=pinned)


@code_table.register_fake
def _(which, like):
    return like.new_empty((16 if which in (_lib.CODE_NF4, _lib.CODE_FP4) else 256,), dtype=torch.float32)


class _Ops:
    """What functional.py calls: the registered ops (through torch.ops, as a compiled graph sees them)."""

    def __init__(self):
        for name, eager in _EAGER.items():
            setattr(self, name, _dispatcher(getattr(torch.ops.bnb, name), eager))

    def code_table_like(self, like, name):
        which = _lib.CODE_TABLES[name]
        if not torch.compiler.is_compiling() and type(like) in PLAIN_TENSOR_TYPES:
            return _code_table_copy(which, like)  # eager: skip the dispatcher
        return self.code_table(which, like)

    tracing = staticmethod(torch.compiler.is_compiling)

    @staticmethod
    def dtype(code):
        return _arrays.TORCH_BY_CODE()[code]

    @staticmethod
    def torch_dtype(dtype):
        """A torch dtype for any accepted spelling (None = float32)."""
        if type(dtype) is torch.dtype:
            return dtype
        return _arrays.TORCH_BY_CODE()[_arrays.dtype_code(dtype if dtype is not None else "float32")]


ops = _Ops()
