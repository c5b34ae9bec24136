"""One call into libbnb per op, for any kit (numpy or torch).

Inputs are already contiguous arrays of the kit's place (kit.prepare); each
function allocates its outputs with the kit, calls the C function once and returns the outputs.
The numpy functional API calls these directly; the torch custom ops (bnb/_torch_ops.py) call
them from their eager implementations.

The C ABI takes bare pointers and reads as many elements as the sizes it is given imply, so
every function here first checks that each array holds what the counts, blocksize and quant
type imply (need_size, check_scales): a short array is a ValueError naming it and both sizes,
never a read past its end. Integer arguments are checked before ctypes sees them (int_arg).
"""

import ctypes

from . import _lib

_c = _lib.lib
_check = _lib.check

CODE_ENTRIES = 256  # entries of an 8-bit code table (bitsandbytes' quant_map)


def nblocks(n, blocksize):
    # A blocksize the library will reject still needs a finite allocation before the call.
    return -(-n // blocksize) if blocksize > 0 else 0


# ---------------------------------------------------------------- argument checks (one place)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def int_arg(value, name):
    """`value` as an int that fits the C ABI's int64_t: Python and numpy integers pass; anything
    else (a string, a float, a bool) is a TypeError naming the argument, before ctypes would turn
    it into an ArgumentError. ctypes wraps a larger integer silently (2**64 + 64 would arrive as
    64, after the size checks used the large value), so that is a ValueError."""
    if type(value) is not int:
        import numbers

        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, not {type(value).__name__} {value!r}")
        value = int(value)
    if value < _INT64_MIN or value > _INT64_MAX:
        raise ValueError(f"{name} {value} does not fit a 64-bit integer")
    return value


def blocksize_arg(value, name="blocksize"):
    """A positive integer blocksize (which sizes the library supports, it checks itself)."""
    value = int_arg(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


def shape_arg(shape, name="shape"):
    """A shape as a tuple of non-negative ints (int_arg's rule for each dimension)."""
    dims = tuple(int_arg(d, name) for d in shape)
    for d in dims:
        if d < 0:
            raise ValueError(f"{name} {dims} has a negative dimension")
    return dims


def need_size(kit, a, name, need, why, *why_args, exact=False):
    """`a` must hold at least `need` elements (exactly, for statistics and code tables, whose count
    a different blocksize or shape would change): else a ValueError naming `a` and both sizes.
    `why` (formatted with why_args only on failure: the passing call costs a comparison) says
    what needs them."""
    if a is None:
        return
    have = kit.numel(a)
    if have < need or (exact and have != need):
        _size_error(name, have, need, why, why_args, exact)


def _size_error(name, have, need, why, why_args, exact=True):
    raise ValueError(f"{name} holds {have} elements, but {why.format(*why_args)} needs "
                     f"{'' if exact else 'at least '}{need}")


def check_scales(s, n, blocksize, what, *what_args):
    """The statistics behind a bnb_scales_t (scales() / scales_cached() record their element counts)
    against n values in blocks of `blocksize`; `what` (a format string of what_args) describes
    the n values for the message."""
    nb = nblocks(n, blocksize)
    absmax_n, absmax2_n, code2_n, offset_n, blocksize2 = s.sizes
    if absmax2_n is None:
        if absmax_n != nb:
            _size_error("absmax", absmax_n, nb, what + " in blocks of {}", what_args + (blocksize,))
        return
    if absmax_n != nb:
        _size_error("absmax (codes of the nested state)", absmax_n, nb, what + " in blocks of {}",
                    what_args + (blocksize,))
    blocksize2 = blocksize_arg(blocksize2, "state2.blocksize")
    if absmax2_n != nblocks(nb, blocksize2):
        _size_error("state2.absmax", absmax2_n, nblocks(nb, blocksize2), "{} absmax codes in blocks of {}",
                    (nb, blocksize2))
    if code2_n != CODE_ENTRIES:
        _size_error("state2.code", code2_n, CODE_ENTRIES, "an 8-bit code table", ())
    if offset_n != 1:
        _size_error("offset", offset_n, 1, "the nested offset", ())


def quantize_blockwise(kit, A, dtype, code, blocksize):
    blocksize = blocksize_arg(blocksize)
    need_size(kit, code, "code", CODE_ENTRIES, "an 8-bit code table", exact=True)
    n = kit.numel(A)
    q = kit.empty(tuple(A.shape), _lib.U8)
    absmax = kit.empty((nblocks(n, blocksize),), _lib.F32)
    ptr = kit.ptr
    st = _c.bnb_quantize_blockwise(kit.ctx, dtype, ptr(A), n, blocksize, ptr(code), ptr(q), ptr(absmax),
                                   kit.stream)
    if st:
        _lib.raise_for(st, "bnb_quantize_blockwise")
    return q, absmax


def dequantize_blockwise(kit, q, absmax, code, blocksize, out_dtype):
    blocksize = blocksize_arg(blocksize)
    n = kit.numel(q)
    need_size(kit, absmax, "absmax", nblocks(n, blocksize), "{} codes in blocks of {}", n, blocksize, exact=True)
    need_size(kit, code, "code", CODE_ENTRIES, "an 8-bit code table", exact=True)
    out = kit.empty(tuple(q.shape), out_dtype)
    ptr = kit.ptr
    st = _c.bnb_dequantize_blockwise(kit.ctx, ptr(q), ptr(absmax), ptr(code), n, blocksize, out_dtype, ptr(out),
                                     kit.stream)
    if st:
        _lib.raise_for(st, "bnb_dequantize_blockwise")
    return out


def quantize_4bit(kit, A, dtype, blocksize, quant_type):
    blocksize = blocksize_arg(blocksize)
    n = kit.numel(A)
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
        blocksize2 = int_arg(blocksize2, "state2.blocksize")
        s.absmax_q = kit.ptr(absmax)
        s.absmax2 = kit.ptr(absmax2)
        s.code2 = kit.ptr(code2)
        s.offset = kit.ptr(offset)
        s.blocksize2 = blocksize2
    s.keep_alive = (absmax, absmax2, code2, offset)  # the struct holds bare pointers into these
    s.sizes = _scales_sizes(kit, absmax, absmax2, code2, offset, blocksize2)
    return s


def _scales_sizes(kit, absmax, absmax2, code2, offset, blocksize2):
    """The element counts behind a scales struct, for check_scales (None for an absent array)."""
    numel = kit.numel
    if absmax2 is None:
        return (numel(absmax), None, None, None, None)
    return (numel(absmax), numel(absmax2), numel(code2) if code2 is not None else 0,
            numel(offset) if offset is not None else 0, blocksize2)


_scales_cache = {}


def scales_cached(kit, absmax, absmax2=None, code2=None, offset=None, blocksize2=256):
    """scales(), without building a new struct each call: one struct per set of addresses, reused.
    The struct holds nothing but those addresses (and the arrays' sizes, part of the key), so a
    reused one equals a fresh one; the caller
    keeps the arrays alive until the library call returns (they are not kept here)."""
    ptr = kit.ptr
    sizes = _scales_sizes(kit, absmax, absmax2, code2, offset, blocksize2)
    key = (ptr(absmax), ptr(absmax2), ptr(code2), ptr(offset), sizes)
    s = _scales_cache.get(key)
    if s is None:
        s = _lib.new_scales()
        if absmax2 is None:
            s.absmax = key[0]
        else:
            s.absmax_q, s.absmax2, s.code2, s.offset = key[:4]
            s.blocksize2 = int_arg(blocksize2, "state2.blocksize")
        s.sizes = sizes
        if len(_scales_cache) >= 4096:
            _scales_cache.clear()
        _scales_cache[key] = s
    return s


def dequantize_4bit(kit, packed, scales_, n, shape, blocksize, quant_type, out_dtype):
    blocksize = blocksize_arg(blocksize)
    shape = tuple(shape)
    need_size(kit, packed, "A (the packed 4-bit codes)", (n + 1) // 2, "shape {}, two codes a byte,", shape)
    check_scales(scales_, n, blocksize, "shape {}", shape)
    out = kit.empty(shape, out_dtype)
    st = _c.bnb_dequantize_4bit(kit.ctx, quant_type, kit.ptr(packed), ctypes.byref(scales_), n, blocksize,
                                out_dtype, kit.ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_dequantize_4bit")
    return out


def compress_absmax(kit, absmax):
    nb = kit.numel(absmax)
    absmax_q = kit.empty((nb,), _lib.U8)
    absmax2 = kit.empty((nblocks(nb, 256),), _lib.F32)
    offset = kit.empty((), _lib.F32)
    ptr = kit.ptr
    st = _c.bnb_compress_absmax(kit.ctx, ptr(absmax), nb, ptr(absmax_q), ptr(absmax2), ptr(offset), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_compress_absmax")
    return absmax_q, absmax2, offset


def check_gemm_4bit(kit, N, K, W, scales_, blocksize, bias):
    """The weight's arrays of a 4-bit product: W [N, K] packed, its statistics, bias [N]."""
    blocksize = blocksize_arg(blocksize)
    N, K = int_arg(N, "N"), int_arg(K, "K")
    need_size(kit, W, "B (the packed 4-bit weight)", (N * K + 1) // 2, "a [{}, {}] weight, two codes a byte,", N, K)
    check_scales(scales_, N * K, blocksize, "a [{}, {}] weight", N, K)
    need_size(kit, bias, "bias", N, "a [{}, {}] weight (one per output)", N, K, exact=True)
    return blocksize


def gemm_4bit(kit, dtype, A, M, K, W, N, scales_, quant_type, blocksize, bias, out_shape):
    blocksize = check_gemm_4bit(kit, N, K, W, scales_, blocksize, bias)
    need_size(kit, A, "A", M * K, "[{}, {}] inputs", M, K)
    out = kit.empty(tuple(out_shape), dtype)
    ptr = kit.ptr
    st = _c.bnb_gemm_4bit(kit.ctx, dtype, M, N, K, ptr(A), ptr(W), ctypes.byref(scales_), quant_type, blocksize,
                          ptr(bias), ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_gemm_4bit")
    return out


def gemm_4bit_transposed(kit, dtype, A, M, N, W, K, scales_, quant_type, blocksize, out_shape):
    """out[M, K] = A[M, N] @ W[N, K]: the other orientation of gemm_4bit's weight."""
    blocksize = check_gemm_4bit(kit, N, K, W, scales_, blocksize, None)
    need_size(kit, A, "A", M * N, "[{}, {}] inputs", M, N)
    out = kit.empty(tuple(out_shape), dtype)
    ptr = kit.ptr
    st = _c.bnb_gemm_4bit_transposed(kit.ctx, dtype, M, N, K, ptr(A), ptr(W), ctypes.byref(scales_), quant_type,
                                     blocksize, ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_gemm_4bit_transposed")
    return out


def int8_vectorwise_quant(kit, A, dtype, rows, cols, threshold):
    need_size(kit, A, "A", rows * cols, "[{}, {}] inputs", rows, cols)
    q = kit.empty(tuple(A.shape), _lib.I8)
    row_stats = kit.empty((rows,), _lib.F32)
    ptr = kit.ptr
    st = _c.bnb_int8_vectorwise_quant(kit.ctx, dtype, rows, cols, ptr(A), threshold, ptr(q), ptr(row_stats),
                                      kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_vectorwise_quant")
    return q, row_stats


def int8_outlier_columns(kit, A, dtype, rows, cols, threshold):
    need_size(kit, A, "A", rows * cols, "[{}, {}] inputs", rows, cols)
    columns = kit.empty((max(cols, 1),), _lib.I32)
    count = ctypes.c_int64()
    st = _c.bnb_int8_outlier_columns(kit.ctx, dtype, rows, cols, kit.ptr(A), threshold, kit.ptr(columns), cols,
                                     ctypes.byref(count), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_outlier_columns")
    return columns[:count.value]


def int8_matmul(kit, A, B, M, N, K):
    need_size(kit, A, "A", M * K, "[{}, {}] int8 inputs", M, K)
    need_size(kit, B, "B", N * K, "an [{}, {}] int8 weight", N, K)
    C = kit.empty((M, N), _lib.I32)
    st = _c.bnb_int8_matmul(kit.ctx, M, N, K, kit.ptr(A), kit.ptr(B), kit.ptr(C), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_matmul")
    return C


def int8_mm_dequant(kit, C, M, N, row_stats, col_stats, bias, out_dtype):
    need_size(kit, C, "C", M * N, "an [{}, {}] product", M, N)
    need_size(kit, row_stats, "row_stats", M, "an [{}, {}] product (one per row)", M, N, exact=True)
    need_size(kit, col_stats, "col_stats", N, "an [{}, {}] product (one per column)", M, N, exact=True)
    need_size(kit, bias, "bias", N, "an [{}, {}] product (one per column)", M, N, exact=True)
    out = kit.empty((M, N), out_dtype)
    ptr = kit.ptr
    st = _c.bnb_int8_mm_dequant(kit.ctx, M, N, ptr(C), ptr(row_stats), ptr(col_stats), ptr(bias), out_dtype,
                                ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_mm_dequant")
    return out


def _int8_layer_buffers(kit, A, dtype, M, N, K, CB, SCB, bias):
    """The size checks of an LLM.int8() layer call, then its buffers: q [M, K] and row_stats [M]
    (written), C [M, N] (scratch) and out [M, N] in dtype."""
    need_size(kit, A, "A", M * K, "[{}, {}] inputs", M, K)
    need_size(kit, CB, "CB", N * K, "an [{}, {}] int8 weight", N, K)
    need_size(kit, SCB, "SCB", N, "an [{}, {}] weight (one per row)", N, K, exact=True)
    need_size(kit, bias, "bias", N, "an [{}, {}] weight (one per row)", N, K, exact=True)
    return (kit.empty((M, K), _lib.I8), kit.empty((M,), _lib.F32), kit.empty((M, N), _lib.I32),
            kit.empty((M, N), dtype))


def int8_linear(kit, A, dtype, M, N, K, CB, SCB, bias):
    """bnb_int8_linear without outliers (threshold 0): out [M, N] in dtype, bit for bit what
    int8_vectorwise_quant, int8_matmul and int8_mm_dequant give, in one library call (on a GPU the
    layer's own kernels: no int32 product through memory for small M)."""
    q, row_stats, C, out = _int8_layer_buffers(kit, A, dtype, M, N, K, CB, SCB, bias)
    ptr = kit.ptr
    st = _c.bnb_int8_linear(kit.ctx, dtype, M, N, K, ptr(A), 0.0, ptr(CB), ptr(SCB), ptr(bias), ptr(q),
                            ptr(row_stats), ptr(C), ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_linear")
    return out


def int8_linear_outliers(kit, A, dtype, M, N, K, CB, SCB, bias, threshold, count):
    """bnb_int8_linear_outliers: (out [M, N] in dtype, columns int32 [K]); the outlier count goes to
    `count` (one int64 in the same place as A), the outlier columns to columns[:count]. Nothing is
    read back to the host."""
    q, row_stats, C, out = _int8_layer_buffers(kit, A, dtype, M, N, K, CB, SCB, bias)
    columns = kit.empty((K,), _lib.I32)
    ptr = kit.ptr
    st = _c.bnb_int8_linear_outliers(kit.ctx, dtype, M, N, K, ptr(A), threshold, ptr(CB), ptr(SCB), ptr(bias),
                                     ptr(q), ptr(row_stats), ptr(C), ptr(columns), ptr(count), ptr(out), kit.stream)
    if st:
        _lib.raise_for(st, "bnb_int8_linear_outliers")
    return out, columns


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
        blocksize = check_gemm_4bit(kit, N, K, W, scales_struct, blocksize, bias)
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


gemm4_plan_run = _lib.plan_run_caller(_c.bnb_gemm_4bit_plan_run)

