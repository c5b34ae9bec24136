"""One call into libbnb per op, for any kit (numpy or torch).

Inputs are already contiguous arrays of the kit's place (kit.prepare); each
function allocates its outputs with the kit, calls the C function once and returns the outputs.
The numpy functional API calls these directly; the torch custom ops (bnb/_torch_ops.py) call
them from their eager implementations.
"""

import ctypes

from . import _lib

_c = _lib.lib
_check = _lib.check


def nblocks(n, blocksize):
    # A blocksize the library will reject still needs a finite allocation before the call.
    return -(-n // blocksize) if blocksize > 0 else 0


def quantize_blockwise(kit, A, dtype, code, blocksize):
    n = A.size if kit.library == "numpy" else A.numel()
    q = kit.empty(tuple(A.shape), _lib.U8)
    absmax = kit.empty((nblocks(n, blocksize),), _lib.F32)
    ptr = kit.ptr
    st = _c.bnb_quantize_blockwise(kit.ctx, dtype, ptr(A), n, blocksize, ptr(code), ptr(q), ptr(absmax),
                                   kit.stream)
    if st:
        _lib.raise_for(st, "bnb_quantize_blockwise")
    return q, absmax


def dequantize_blockwise(kit, q, absmax, code, blocksize, out_dtype):
    n = q.size if kit.library == "numpy" else q.numel()
    out = kit.empty(tuple(q.shape), out_dtype)
    ptr = kit.ptr
    st = _c.bnb_dequantize_blockwise(kit.ctx, ptr(q), ptr(absmax), ptr(code), n, blocksize, out_dtype, ptr(out),
                                     kit.stream)
    if st:
        _lib.raise_for(st, "bnb_dequantize_blockwise")
    return out


def quantize_4bit(kit, A, dtype, blocksize, quant_type):
    n = A.size if kit.library == "numpy" else A.numel()
    packed = kit.empty(((n + 1) // 2, 1), _lib.U8)
    absmax = kit.empty((nblocks(n, blocksize),), _lib.F32)
    ptr = kit.ptr
    st = _c.bnb_quantize_4bit(kit.ctx, quant_type, dtype, ptr(A), n, blocksize, ptr(packed), ptr(absmax),
                              kit.stream)
    if st:
        _lib.raise_for(st, "bnb_quantize_4bit")
    return packed, absmax


def scales(kit, absmax, absmax2=None, code2=None, offset=None, blocksize2=256):
    """A bnb_scales_t: plain when absmax is float32, nested when it holds uint8 codes."""
    s = _lib.new_scales()
    if absmax2 is None:
        s.absmax = kit.ptr(absmax)
    else:
        s.absmax_q = kit.ptr(absmax)
        s.absmax2 = kit.ptr(absmax2)
        s.code2 = kit.ptr(code2)
        s.offset = kit.ptr(offset)
        s.blocksize2 = blocksize2
    s.keep_alive = (absmax, absmax2, code2, offset)  # the struct holds bare pointers into these
    return s


_scales_cache = {}


def scales_cached(kit, absmax, absmax2=None, code2=None, offset=None, blocksize2=256):
    """scales(), without building a new struct each call: one struct per set of addresses, reused.
    The struct holds nothing but those addresses, so a reused one equals a fresh one; the caller
    keeps the arrays alive until the library call returns (they are not kept here)."""
    ptr = kit.ptr
    key = (ptr(absmax), ptr(absmax2), ptr(code2), ptr(offset), blocksize2)
    s = _scales_cache.get(key)
    if s is None:
        s = _lib.new_scales()
        if absmax2 is None:
            s.absmax = key[0]
        else:
            s.absmax_q, s.absmax2, s.code2, s.offset = key[:4]
            s.blocksize2 = blocksize2
        if len(_scales_cache) >= 4096:
            _scales_cache.clear()
        _scales_cache[key] = s
    return s


def dequantize_4bit(kit, packed, scales_, n, shape, blocksize, quant_type, out_dtype):
    out = kit.empty(tuple(shape), out_dtype)
    st = _c.bnb_dequantize_4bit(kit.ctx, quant_type, kit.ptr(packed), ctypes.byref(scales_), n, blocksize,
                                out_dtype, kit.ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_dequantize_4bit")
    return out


def compress_absmax(kit, absmax):
    nb = absmax.size if kit.library == "numpy" else absmax.numel()
    absmax_q = kit.empty((nb,), _lib.U8)
    absmax2 = kit.empty((nblocks(nb, 256),), _lib.F32)
    offset = kit.empty((), _lib.F32)
    ptr = kit.ptr
    st = _c.bnb_compress_absmax(kit.ctx, ptr(absmax), nb, ptr(absmax_q), ptr(absmax2), ptr(offset), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_compress_absmax")
    return absmax_q, absmax2, offset


def gemm_4bit(kit, dtype, A, M, K, W, N, scales_, quant_type, blocksize, bias, out_shape):
    out = kit.empty(tuple(out_shape), dtype)
    ptr = kit.ptr
    st = _c.bnb_gemm_4bit(kit.ctx, dtype, M, N, K, ptr(A), ptr(W), ctypes.byref(scales_), quant_type, blocksize,
                          ptr(bias), ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_gemm_4bit")
    return out


def int8_vectorwise_quant(kit, A, dtype, rows, cols, threshold):
    q = kit.empty(tuple(A.shape), _lib.I8)
    row_stats = kit.empty((rows,), _lib.F32)
    ptr = kit.ptr
    st = _c.bnb_int8_vectorwise_quant(kit.ctx, dtype, rows, cols, ptr(A), threshold, ptr(q), ptr(row_stats),
                                      kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_vectorwise_quant")
    return q, row_stats


def int8_outlier_columns(kit, A, dtype, rows, cols, threshold):
    columns = kit.empty((max(cols, 1),), _lib.I32)
    count = ctypes.c_int64()
    st = _c.bnb_int8_outlier_columns(kit.ctx, dtype, rows, cols, kit.ptr(A), threshold, kit.ptr(columns), cols,
                                     ctypes.byref(count), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_outlier_columns")
    return columns[:count.value]


def int8_matmul(kit, A, B, M, N, K):
    C = kit.empty((M, N), _lib.I32)
    st = _c.bnb_int8_matmul(kit.ctx, M, N, K, kit.ptr(A), kit.ptr(B), kit.ptr(C), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_matmul")
    return C


def int8_mm_dequant(kit, C, M, N, row_stats, col_stats, bias, out_dtype):
    out = kit.empty((M, N), out_dtype)
    ptr = kit.ptr
    st = _c.bnb_int8_mm_dequant(kit.ctx, M, N, ptr(C), ptr(row_stats), ptr(col_stats), ptr(bias), out_dtype,
                                ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_mm_dequant")
    return out


def get_code_table(which):
    """The table as a host float32 numpy array (256 or 16 entries)."""
    import numpy as np

    out = np.empty(256, np.float32)
    count = ctypes.c_int64()
    _check(_c.bnb_get_code_table(which, out.ctypes.data, ctypes.byref(count)), "bnb_get_code_table")
    return out[:count.value].copy()


class Gemm4Plan:
    """A bnb_gemm4_plan_t (the fixed arguments of a 4-bit matmul, checked once by the library) and
    the objects its pointers refer to; destroyed with this object. `ptr`, `N`, `K` and
    `stream_device` (the device index for the current stream, None on the host) are what a call
    of bnb_gemm_4bit_plan_run needs besides A, out and the stream."""

    __slots__ = ("ptr", "N", "K", "stream_device", "_keep")

    def __init__(self, kit, dtype, N, K, W, scales_struct, quant_type, blocksize, bias, keep):
        handle = ctypes.c_void_p()
        ptr = kit.ptr
        st = _c.bnb_gemm_4bit_plan_create(kit.ctx, dtype, N, K, ptr(W), ctypes.byref(scales_struct), quant_type,
                                          blocksize, ptr(bias), ctypes.byref(handle))
        if st:
            _lib.raise_for(st, "bnb_gemm_4bit_plan_create")
        self.ptr, self.N, self.K = handle.value, N, K
        self.stream_device = None if kit.backend == _lib.BACKEND_CPU else kit.index
        self._keep = (scales_struct, W, bias) + tuple(keep)

    def __del__(self):
        lib = getattr(_lib, "lib", None)
        if lib is not None and getattr(self, "ptr", None):
            lib.bnb_gemm_4bit_plan_destroy(self.ptr)
            self.ptr = None


gemm4_plan_run = _c.bnb_gemm_4bit_plan_run

