"""bitsandbytes.functional: the documented functions of bitsandbytes' functional module, served by bnb.

Every quantization and matmul runs in libbnb through bnb.functional (whose torch custom ops
`torch.ops.bnb.*` have fake implementations, so these functions also trace under torch.compile).
This module adds what bitsandbytes' callers expect beyond bnb's own API:
  - bitsandbytes' argument names and order (`absmax=`/`out=` buffers, `quant_storage`, `nested`);
  - a QuantState that is also bnb's (same fields and dictionaries), with torch.Size shapes and the
    attribute view of the packed key that FSDP's state-dict walk uses;
  - empty inputs give empty results of bitsandbytes' shapes instead of a library error;
  - bad arguments raise ValueError / TypeError naming the argument.

Left out (CUDA-library internals or deprecated in bitsandbytes 0.50): CUBLAS_Context, igemm,
batched_igemm, check_matmul, elementwise_func, fill and the CPU weight-repacking helpers.
"""

import ctypes
import itertools
from collections.abc import Iterable
from math import prod
from typing import Any, Optional

import torch

import bnb
from bnb import functional as _bnbf
from bnb.optim import paged_zeros as _paged_zeros

from .cextension import lib  # noqa: F401  (bitsandbytes.functional.lib, as in bitsandbytes)
from .utils import pack_dict_to_tensor, unpack_tensor_to_dict

Tensor = torch.Tensor
FIRST_CUDA_DEVICE = torch.device("cuda", index=0)
C = 127.0  # the LLM.int8() code range: int8 codes are x * 127 / absmax

# Code maps built on request, by name (bitsandbytes keeps this cache under the same name).
name2qmap = {}

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_BLOCKSIZES_4BIT = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_QUANT_TYPES = ("nf4", "fp4")
_NESTED_BLOCKSIZE_4BIT = 256  # bitsandbytes double-quantizes 4-bit absmax in blocks of 256


# ---------------------------------------------------------------- argument checks
def _tensor(name, x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(x).__name__}")
    return x


def _float_tensor(name, x, what):
    _tensor(name, x)
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{what} takes float16, bfloat16 or float32 tensors; {name} is {x.dtype}")
    return x


def _blocksize_4bit(blocksize):
    if blocksize is None:
        return 64
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize not in _BLOCKSIZES_4BIT:
        raise ValueError(f"blocksize must be one of {_BLOCKSIZES_4BIT} for 4-bit quantization, not {blocksize!r}")
    return blocksize


def _blocksize_positive(blocksize):
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize <= 0:
        raise ValueError(f"blocksize must be a positive int, not {blocksize!r}")
    return blocksize


def _quant_type(quant_type):
    if quant_type not in _QUANT_TYPES:
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', not {quant_type!r}")
    return quant_type


def _copy_into(out, result, name="out"):
    """bitsandbytes' `out=` buffers: the result is written into the caller's tensor, returned."""
    if out is None:
        return result
    _tensor(name, out)
    if tuple(out.shape) != tuple(result.shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, the result {tuple(result.shape)}")
    return out.copy_(result)


# ---------------------------------------------------------------- paged memory and small helpers
class GlobalPageManager:
    """The registry of paged tensors that bitsandbytes' paged optimizers prefetch (a singleton)."""

    _instance = None

    def __init__(self):
        raise RuntimeError("Call get_instance() instead")

    def initialize(self):
        self.paged_tensors = []

    @classmethod
    def get_instance(cls):
        if cls._instance is None:
            cls._instance = cls.__new__(cls)
            cls._instance.initialize()
        return cls._instance

    def prefetch_all(self, to_cpu=False):
        # the first tensors registered are used first: bring them in last so they stay resident
        for t in reversed(self.paged_tensors):
            prefetch_tensor(t, to_cpu)


def get_paged(*shape, dtype=torch.float32, device=None):
    """A zero-filled tensor in bnb's paged memory (CUDA managed memory on a GPU, library host memory
    on the CPU), marked `is_paged` with its `page_deviceid`. device: default the first CUDA device
    when there is one, else the CPU."""
    if device is None:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    out = _paged_zeros(torch.empty(0, device=device), tuple(shape), dtype)
    out.is_paged = True
    out.page_deviceid = device.index if device.index is not None else 0
    return out


def prefetch_tensor(A, to_cpu=False):
    """Moves a paged tensor's pages to its GPU (or to the host with to_cpu=True), asynchronously on
    the current stream. A paged tensor on the CPU backend has nothing to move."""
    if not getattr(A, "is_paged", False):
        raise ValueError("prefetch_tensor takes paged tensors only (made by get_paged or a paged optimizer)")
    if A.device.type == "cpu" or A.numel() == 0:
        return
    from bnb import _arrays, _lib

    kit = _arrays.kit_for(A)
    status = _lib.lib.bnb_paged_prefetch(kit.ctx, A.data_ptr(), A.numel() * A.element_size(), 0 if to_cpu else 1,
                                         kit.stream)
    if status:
        _lib.raise_for(status, "bnb_paged_prefetch")


def is_on_gpu(tensors: Iterable[Optional[Tensor]]):
    """True when the tensors (None and paged ones ignored) are all on the CPU or all on one GPU;
    RuntimeError listing their shapes and devices otherwise."""
    tensors = list(tensors)
    devices = {(t.device.type, t.device.index) for t in tensors
               if t is not None and not getattr(t, "is_paged", False)}
    if len(devices) > 1:
        where = "device" if ("cpu", None) in devices else "GPU"
        listing = [(tuple(t.shape), t.device) for t in tensors if t is not None]
        raise RuntimeError(f"Input tensors need to be on the same {where}, but found: {listing}")
    return True


def get_ptr(A: Optional[Tensor]) -> Optional[ctypes.c_void_p]:
    """The address of a tensor's first element as a ctypes pointer (None for None)."""
    return None if A is None else ctypes.c_void_p(A.data_ptr())


def has_avx512bf16():
    """Whether bnb's CPU backend found AVX512-BF16 instructions on this machine."""
    for info in bnb.backends():
        if info["name"] == "cpu" and info["available"]:
            return "avx512bf16" in info["detail"].split()
    return False


# ---------------------------------------------------------------- code maps
def create_linear_map(signed=True, total_bits=8, add_zero=True):
    """256 evenly spaced values in [-1, 1] (signed) or [0, 1]. With fewer than 8 bits (or add_zero
    when signed) one value is given up so that 0 is exact, and the unused entries are zeros placed
    in the middle of the table."""
    count = 2 ** total_bits
    if signed and (add_zero or total_bits < 8):
        count -= 1
    values = torch.linspace(-1.0 if signed else 0.0, 1.0, count)
    if count == 256:
        return values
    half = count // 2
    return torch.cat([values[:half], torch.zeros(256 - count), values[half:]])


def create_normal_map(offset=0.9677083, use_extra_value=True):
    """The NormalFloat map: quantiles of N(0, 1) between 1 - offset and offset, normalized to
    [-1, 1], with zero; 8 negative and 8 positive values (use_extra_value) or 7 and 7. Returned as
    256 sorted entries, the unused ones zero. The quantiles come from torch.special.ndtri in
    float64 at the float32 probabilities (no scipy needed)."""
    positive_count = 9 if use_extra_value else 8
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, positive_count)[:-1].double())
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())
    zeros = 256 - (positive.numel() + negative.numel())
    values = torch.tensor(positive.tolist() + [0.0] * zeros + negative.tolist(), dtype=torch.float32)
    values = values.sort().values
    return values / values.max()


def create_fp8_map(signed=True, exponent_bits=5, precision_bits=2, total_bits=8):
    """A small floating-point format's values, normalized by the largest: every exponent field
    (0 = subnormal) and mantissa pattern, with its negative when signed; sorted, padded with zeros
    to 256 entries when total_bits < 8."""
    if exponent_bits + precision_bits != total_bits - (1 if signed else 0):
        raise ValueError(f"exponent_bits ({exponent_bits}) + precision_bits ({precision_bits}) + sign bit "
                         f"({int(bool(signed))}) must equal total_bits ({total_bits})")
    bias = 2 ** (exponent_bits - 1)
    values = []
    for exponent in range(2 ** exponent_bits):
        for bits in itertools.product((0, 1), repeat=precision_bits):
            mantissa = (0.0 if exponent == 0 else 1.0) + sum(b * 2.0 ** -(i + 1) for i, b in enumerate(bits))
            scale = 2.0 ** -bias if exponent == 0 else 2.0 ** -(exponent - bias - 1)
            values.append(mantissa * scale)
            if signed:
                values.append(-mantissa * scale)
    values += [0.0] * (256 - len(values)) if total_bits < 8 else []
    code = torch.tensor(sorted(values), dtype=torch.float32)
    return code / code.max()


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """The dynamic (exponent + fraction) map of 8-bit blockwise quantization: for each decade
    10^-(max_exponent_bits-1) .. 10^0 the midpoints of an even split of [0.1, 1] into as many
    parts as the fraction bits left at that exponent allow (and their negatives when signed),
    plus 0 and 1; sorted, zero-padded to 256 entries. float32 arithmetic throughout, so the
    values are bitsandbytes' exactly."""
    data = []
    fraction_bits = total_bits - 1 - max_exponent_bits

    def add_decade(decade, parts):
        edges = torch.linspace(0.1, 1, parts + 1, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0
        scale = 10 ** (-(max_exponent_bits - 1) + decade)
        data.extend((scale * mids).tolist())
        if signed:
            data.extend((-scale * mids).tolist())

    for decade in range(max_exponent_bits):
        add_decade(decade, 2 ** (decade + fraction_bits + (0 if signed else 1)))
    extra = 2 ** fraction_bits - 1  # all exponent bits zero and no indicator bit
    if extra > 0:
        add_decade(max_exponent_bits - 1, extra)
    data += [0.0, 1.0]
    if len(data) != 2 ** total_bits:
        raise ValueError(f"max_exponent_bits={max_exponent_bits} and total_bits={total_bits} do not describe a "
                         f"{2 ** total_bits}-entry map (got {len(data)} values)")
    data += [0.0] * (256 - len(data))
    return torch.tensor(sorted(data), dtype=torch.float32)


# AbnormalFloat4 (arXiv:2306.06965) for blocksize 64, in bitsandbytes' index order (descending).
_AF4_64 = [1.0, 0.72424863, 0.55496234, 0.42563882, 0.31675666, 0.21961274, 0.12934483, 0.04273164, 0.0,
           -0.04934812, -0.14982478, -0.25607552, -0.3736951, -0.51243739, -0.69441008, -1.0]


def get_4bit_type(typename, device=None, blocksize=64):
    """The 16 values of a 4-bit type in code order, scaled to max |v| = 1: 'nf4', 'fp4' (bnb's
    tables, the ones the kernels use), 'int4' (7 .. -7), 'af4' (blocksize 64 only).
    device: default the first CUDA device when there is one, else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if typename in _QUANT_TYPES:
        return torch.from_numpy(_bnbf.get_code_table(typename)).to(device)
    if typename == "int4":
        data = [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0]
    elif typename == "af4":
        if blocksize != 64:
            raise NotImplementedError("4-bit AbnormalFloats are defined for blocksize 64 only")
        data = _AF4_64
    else:
        raise NotImplementedError(f"4-bit type {typename!r} is not supported: use 'nf4', 'fp4', 'int4' or 'af4'")
    values = torch.tensor(data, dtype=torch.float32, device=device)
    return values / values.abs().max()


def _dynamic_map_like(A):
    if "dynamic" not in name2qmap:
        name2qmap["dynamic"] = create_dynamic_map()
    return name2qmap["dynamic"].to(A.device)


# ---------------------------------------------------------------- QuantState
class QuantState(_bnbf.QuantState):
    """What dequantization needs: bnb's QuantState (same fields, `as_dict`/`from_dict`, the
    `quant_state.bitsandbytes__<type>` packing) with bitsandbytes' details: `shape` is a
    torch.Size and the unpacked dict gives the shape as a tuple (the packed entry reads as an
    attribute, `state.bitsandbytes__nf4`, in bnb's class)."""

    def __init__(self, absmax, shape=None, code=None, blocksize=None, quant_type=None, dtype=None, offset=None,
                 state2=None):
        super().__init__(absmax, shape=shape, code=code, blocksize=blocksize, quant_type=quant_type, dtype=dtype,
                         offset=offset, state2=state2)
        self.shape = torch.Size(shape) if shape is not None else None

    def as_dict(self, packed: bool = False) -> dict[str, Any]:
        qs = super().as_dict(packed=packed)
        if not packed and qs.get("shape") is not None:
            qs["shape"] = tuple(qs["shape"])
        return qs

    @classmethod
    def from_dict(cls, qs_dict: dict[str, Any], device=None) -> "QuantState":
        """Reads as_dict()'s items, packed or not, under any key prefix (a layer's state-dict keys).
        A corrupt, truncated or inconsistent entry raises ValueError naming its key (bnb's checks)."""
        if not isinstance(qs_dict, dict):
            raise TypeError(f"qs_dict must be a dict of quant_state items, not {type(qs_dict).__name__}")
        return super().from_dict(qs_dict, device=device)  # bnb checks every item and names it


def _adopt(state):
    """bnb's QuantState (as bnb.functional returns it) as this module's QuantState."""
    if state is None or isinstance(state, QuantState):
        return state
    return QuantState(absmax=state.absmax, shape=state.shape, code=state.code, blocksize=state.blocksize,
                      quant_type=state.quant_type, dtype=state.dtype, offset=state.offset,
                      state2=_adopt(state.state2))


def _nested(state, blocksize):
    """The state with its float32 absmax double-quantized: offset = the mean of the absmax by bnb's
    rule (docs/FORMATS.md §4.1: summed in binary64, then rounded to float32, the same on every device
    and in `bnb quantize`), then 8-bit blockwise quantization of absmax - offset with the signed
    dynamic map. bitsandbytes takes torch's float32 mean on the tensor's device, whose last bit can
    differ; a stored offset loads the same either way."""
    offset = _bnbf._mean_f32(state.absmax)
    qabsmax, state2 = quantize_blockwise(state.absmax - offset, blocksize=blocksize)
    return QuantState(absmax=qabsmax, shape=state.shape, code=state.code, blocksize=state.blocksize,
                      quant_type=state.quant_type, dtype=state.dtype, offset=offset, state2=state2)


def _empty_nested_state(like, blocksize):
    """The nested part of a state for an empty input: no quantized absmax, no second-level absmax."""
    state2 = QuantState(absmax=like.new_empty((0,), dtype=torch.float32), code=_dynamic_map_like(like).clone(),
                        blocksize=blocksize, dtype=torch.float32)
    return like.new_empty((0,), dtype=torch.uint8), state2, like.new_zeros((), dtype=torch.float32)


# ---------------------------------------------------------------- 8-bit blockwise
def quantize_blockwise(A: Tensor, code: Optional[Tensor] = None, absmax: Optional[Tensor] = None,
                       out: Optional[Tensor] = None, blocksize=4096, nested=False) -> tuple[Tensor, QuantState]:
    """8-bit blockwise quantization: (codes uint8 shaped like A, QuantState). code: a 256-entry
    float32 map (default the signed dynamic map); nested: also quantize the absmax (minus its mean)
    with the same blocksize. absmax/out: optional buffers that receive the results."""
    _float_tensor("A", A, "quantize_blockwise")
    _blocksize_positive(blocksize)
    if code is not None:
        code = _tensor("code", code).to(device=A.device, dtype=torch.float32)
        if code.numel() != 256:
            raise ValueError(f"code must hold 256 values, not {code.numel()}")
    if A.numel() == 0:
        q = torch.empty_like(A, dtype=torch.uint8)
        code_copy = (code if code is not None else _dynamic_map_like(A)).clone()
        if nested:
            qabsmax, state2, offset = _empty_nested_state(A, blocksize)
            state = QuantState(absmax=qabsmax, code=code_copy, blocksize=blocksize, dtype=A.dtype, offset=offset,
                               state2=state2)
        else:
            state = QuantState(absmax=A.new_empty((0,), dtype=torch.float32), code=code_copy, blocksize=blocksize,
                               dtype=A.dtype)
    else:
        q, state = _bnbf.quantize_blockwise(A, code=code, blocksize=blocksize)
        state = _adopt(state)
        if nested:
            state = _nested(state, blocksize)
    if absmax is not None:
        state.absmax = _copy_into(absmax, state.absmax, "absmax")
    return _copy_into(out, q), state


def dequantize_blockwise(A: Tensor, quant_state: Optional[QuantState] = None, absmax: Optional[Tensor] = None,
                         code: Optional[Tensor] = None, out: Optional[Tensor] = None, blocksize: int = 4096,
                         nested=False) -> Tensor:
    """Inverse of quantize_blockwise: from quant_state, or from absmax (+ code, blocksize), which
    give float32. out: optional buffer receiving the result."""
    _tensor("A", A)
    if A.dtype != torch.uint8:
        raise ValueError(f"A must be uint8 (the codes of quantize_blockwise), not {A.dtype}")
    if quant_state is None:
        if absmax is None:
            raise ValueError("dequantize_blockwise needs quant_state or absmax")
        if code is None:
            code = _dynamic_map_like(A)
        quant_state = QuantState(absmax=_tensor("absmax", absmax), code=_tensor("code", code), blocksize=blocksize,
                                 dtype=torch.float32)
    _blocksize_positive(quant_state.blocksize)
    dtype = quant_state.dtype if quant_state.dtype is not None else torch.float32
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"quant_state.dtype must be float16, bfloat16 or float32, not {dtype}")
    if A.numel() == 0:
        result = torch.empty_like(A, dtype=dtype)
    else:
        if quant_state.code is not None and quant_state.code.device != A.device:
            # the caller's state is left as it is: a copy whose code map is on A's device
            quant_state = QuantState(absmax=quant_state.absmax, code=quant_state.code.to(A.device),
                                     blocksize=quant_state.blocksize, dtype=quant_state.dtype,
                                     offset=quant_state.offset, state2=quant_state.state2)
        result = _bnbf.dequantize_blockwise(A, quant_state, dtype=dtype)
    return _copy_into(out, result)


# ---------------------------------------------------------------- 4-bit
def _view_as_storage(packed, quant_storage, n):
    """The packed uint8 bytes [(n+1)//2, 1] viewed as quant_storage: [bytes // itemsize, 1]."""
    if quant_storage == torch.uint8:
        return packed
    nbytes = packed.numel()
    itemsize = torch.empty((), dtype=quant_storage).element_size()
    if nbytes % itemsize:
        raise ValueError(f"quant_storage={quant_storage} cannot hold the {nbytes} packed bytes of {n} values: "
                         f"the byte count must be a multiple of {itemsize}")
    return packed.reshape(-1).view(quant_storage).reshape(nbytes // itemsize, 1)


def _as_packed_bytes(A, n):
    """Packed 4-bit codes in any storage dtype, as the uint8 bytes the kernels read."""
    _tensor("A", A)
    data = A if A.dtype == torch.uint8 else A.reshape(-1).view(torch.uint8)
    if data.numel() * 2 < n:
        raise ValueError(f"A holds {data.numel()} bytes; {n} 4-bit values need {(n + 1) // 2}")
    return data


def quantize_4bit(A: Tensor, absmax: Optional[Tensor] = None, out: Optional[Tensor] = None, blocksize=None,
                  compress_statistics=False, quant_type="fp4", quant_storage=torch.uint8
                  ) -> tuple[Tensor, QuantState]:
    """NF4/FP4 quantization in blocks (default 64): (packed codes [(n+1)//2 // itemsize, 1] of dtype
    quant_storage, QuantState). compress_statistics: double-quantize the absmax (nested blocks of
    256). absmax/out: optional buffers that receive the results."""
    _float_tensor("A", A, "quantize_4bit")
    blocksize = _blocksize_4bit(blocksize)
    _quant_type(quant_type)
    if not isinstance(quant_storage, torch.dtype):
        raise TypeError(f"quant_storage must be a torch.dtype, not {type(quant_storage).__name__}")
    n = A.numel()
    if n == 0:
        packed = A.new_empty((0, 1), dtype=torch.uint8)
        code = get_4bit_type(quant_type, device=A.device)
        if compress_statistics:
            qabsmax, state2, offset = _empty_nested_state(A, _NESTED_BLOCKSIZE_4BIT)
            state = QuantState(absmax=qabsmax, shape=A.shape, code=code, blocksize=blocksize, quant_type=quant_type,
                               dtype=A.dtype, offset=offset, state2=state2)
        else:
            state = QuantState(absmax=A.new_empty((0,), dtype=torch.float32), shape=A.shape, code=code,
                               blocksize=blocksize, quant_type=quant_type, dtype=A.dtype)
    else:
        packed, state = _bnbf.quantize_4bit(A, blocksize=blocksize, quant_type=quant_type)
        state = _adopt(state)
        if compress_statistics:
            state = _nested(state, _NESTED_BLOCKSIZE_4BIT)
    packed = _view_as_storage(packed, quant_storage, n)
    if absmax is not None:
        state.absmax = _copy_into(absmax, state.absmax, "absmax")
    return _copy_into(out, packed), state


def quantize_fp4(A: Tensor, absmax: Optional[Tensor] = None, out: Optional[Tensor] = None, blocksize=None,
                 compress_statistics=False, quant_storage=torch.uint8):
    return quantize_4bit(A, absmax, out, blocksize, compress_statistics, "fp4", quant_storage)


def quantize_nf4(A: Tensor, absmax: Optional[Tensor] = None, out: Optional[Tensor] = None, blocksize=None,
                 compress_statistics=False, quant_storage=torch.uint8):
    return quantize_4bit(A, absmax, out, blocksize, compress_statistics, "nf4", quant_storage)


def dequantize_4bit(A: Tensor, quant_state: Optional[QuantState] = None, absmax: Optional[Tensor] = None,
                    out: Optional[Tensor] = None, blocksize: Optional[int] = None, quant_type="fp4") -> Tensor:
    """Inverse of quantize_4bit, for packed codes in any quant_storage. Either quant_state, or absmax
    and out (whose shape and dtype say what to produce; blocksize default 64, quant_type).
    Packed codes passed in the transposed [1, bytes] form give the result transposed, as
    bitsandbytes does."""
    if quant_state is None:
        if absmax is None or out is None:
            raise ValueError("dequantize_4bit needs quant_state, or both absmax and out")
        quant_state = QuantState(absmax=_tensor("absmax", absmax), shape=_tensor("out", out).shape,
                                 dtype=out.dtype, blocksize=_blocksize_4bit(blocksize), quant_type=quant_type)
    elif not isinstance(quant_state, _bnbf.QuantState):
        raise TypeError(f"quant_state must be a QuantState, not {type(quant_state).__name__}")
    _blocksize_4bit(quant_state.blocksize)
    _quant_type(quant_state.quant_type)
    if quant_state.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"quant_state.dtype must be float16, bfloat16 or float32, not {quant_state.dtype}")
    if quant_state.shape is None:
        raise ValueError("quant_state.shape is None: a 4-bit state needs the shape of the quantized tensor")
    n = prod(quant_state.shape)
    data = _as_packed_bytes(A, n)
    if n == 0:
        result = A.new_empty(tuple(quant_state.shape), dtype=quant_state.dtype)
    else:
        result = _bnbf.dequantize_4bit(data, quant_state, dtype=quant_state.dtype)
    result = _copy_into(out, result)
    if A.dim() == 2 and A.shape[0] == 1 and A.shape[1] > 1 and result.dim() == 2:
        return result.t()
    return result


def dequantize_fp4(A: Tensor, quant_state: Optional[QuantState] = None, absmax: Optional[Tensor] = None,
                   out: Optional[Tensor] = None, blocksize: Optional[int] = None) -> Tensor:
    return dequantize_4bit(A, quant_state, absmax, out, blocksize, "fp4")


def dequantize_nf4(A: Tensor, quant_state: Optional[QuantState] = None, absmax: Optional[Tensor] = None,
                   out: Optional[Tensor] = None, blocksize: Optional[int] = None) -> Tensor:
    return dequantize_4bit(A, quant_state, absmax, out, blocksize, "nf4")


def gemv_4bit(A: Tensor, B: Tensor, out: Optional[Tensor] = None, transposed_A=False, transposed_B=False,
              state=None):
    """A[..., K] @ W.T for the 4-bit weight W [N, K] that B packs (as quantize_4bit returned it, in
    any quant_storage, or transposed): [..., N] in A's dtype. state: W's QuantState (required).
    Any number of rows works (one row is the case bitsandbytes' kernel is built for)."""
    if state is None:
        raise ValueError("state cannot be None: gemv_4bit needs the QuantState from quantize_4bit")
    return _copy_into(out, _matmul_4bit(A, B, state))


def _matmul_4bit(A, B, state, bias=None):
    """A @ W.T (+ bias) for the 4-bit weight W that B packs, with W's QuantState: the checks and the
    empty cases of gemv_4bit and of the gemm_4bit op; the product is bnb's fused 4-bit matmul."""
    _float_tensor("A", A, "a 4-bit matmul")
    if not isinstance(state, _bnbf.QuantState):
        raise TypeError(f"state must be a QuantState, not {type(state).__name__}")
    if state.shape is None or len(state.shape) != 2:
        raise ValueError(f"state.shape must be the [N, K] shape of the weight, not {state.shape}")
    N, K = state.shape
    if A.dim() < 1 or A.shape[-1] != K:
        raise ValueError(f"A has {A.shape[-1] if A.dim() else 0} columns; the weight's shape is {tuple(state.shape)}")
    data = _as_packed_bytes(B, N * K)
    if bias is not None:
        _tensor("bias", bias)
        if bias.numel() != N:
            raise ValueError(f"bias holds {bias.numel()} values for {N} outputs")
        bias = bias.reshape(N).to(A.dtype)
    if A.numel() == 0 or N == 0:
        result = A.new_zeros(tuple(A.shape[:-1]) + (N,))
        return result + bias if bias is not None else result
    return _bnbf.matmul_4bit(A, data, state, bias=bias)


# ---------------------------------------------------------------- LLM.int8()
def int8_vectorwise_quant(A: Tensor, threshold=0.0):
    """Row-wise int8 quantization over the last axis (LLM.int8()): (int8 codes like A, float32
    row absmax [rows], outlier columns int64 or None). threshold > 0: columns holding any
    |x| >= threshold are outliers; they are zeroed in the codes and left out of the row absmax."""
    _float_tensor("A", A, "int8_vectorwise_quant")
    if A.dim() == 0:
        raise ValueError("A must have at least one dimension")
    threshold = float(threshold)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, not {threshold}")
    cols = A.shape[-1]
    if A.numel() == 0:
        rows = prod(A.shape[:-1])
        outliers = A.new_empty((0,), dtype=torch.int64) if threshold > 0 else None
        return torch.zeros_like(A, dtype=torch.int8), A.new_zeros((rows,), dtype=torch.float32), outliers
    q, row_stats, outliers = _bnbf.int8_vectorwise_quant(A, threshold)
    return q, row_stats, (outliers.long() if outliers is not None else None)


def int8_vectorwise_dequant(A: Tensor, stats: Tensor):
    """float32 values of row-wise int8 codes: A[..., K] * stats[row] / 127."""
    _tensor("A", A)
    _tensor("stats", stats)
    if A.dtype != torch.int8:
        raise ValueError(f"A must be int8, not {A.dtype}")
    if A.dim() == 0:
        raise ValueError("A must have at least one dimension")
    rows = A.reshape(-1, A.shape[-1]) if A.shape[-1] else A.reshape(prod(A.shape[:-1]), 0)
    if stats.numel() != rows.shape[0]:
        raise ValueError(f"stats holds {stats.numel()} values for {rows.shape[0]} rows of A")
    return (rows * stats.reshape(-1, 1).float() * (1.0 / 127.0)).reshape(A.shape)


def _int8_operand(name, x):
    _tensor(name, x)
    if x.dtype != torch.int8:
        raise TypeError(f"{name} must be an int8 tensor, not {x.dtype}")
    return x


def int8_linear_matmul(A: Tensor, B: Tensor, out: Optional[Tensor] = None, dtype=torch.int32):
    """int32 C[..., N] = A[..., K] @ B[N, K].T for int8 A and B. out: optional int32 buffer."""
    _int8_operand("A", A)
    _int8_operand("B", B)
    if dtype != torch.int32:
        raise ValueError(f"dtype must be torch.int32 (the product's type), not {dtype}")
    if A.dim() < 1 or B.dim() != 2 or A.shape[-1] != B.shape[1]:
        raise ValueError(f"A [..., K] and B [N, K] must share K: got {tuple(A.shape)} and {tuple(B.shape)}")
    K, N = B.shape[1], B.shape[0]
    lead = tuple(A.shape[:-1])
    if A.numel() == 0 or B.numel() == 0:
        result = A.new_zeros(lead + (N,), dtype=torch.int32)
    else:
        result = _bnbf.int8_linear_matmul(A.reshape(-1, K), B).reshape(lead + (N,))
    if out is not None and out.dtype != torch.int32:
        raise ValueError(f"out must be int32, not {out.dtype}")
    return _copy_into(out, result)


def _int8_mm_dequant(A, row_stats, col_stats, bias, dtype):
    """int8_mm_dequant with the output dtype as an argument (the torch op's form)."""
    _tensor("A", A)
    if A.dtype != torch.int32:
        raise ValueError(f"A must be int32 (an int8 product), not {A.dtype}")
    if A.dim() < 1:
        raise ValueError("A must have at least one dimension")
    for name, s in (("row_stats", row_stats), ("col_stats", col_stats)):
        if _tensor(name, s).dtype != torch.float32:
            raise ValueError(f"{name} must be float32, not {s.dtype}")
    N = A.shape[-1]
    rows = A.numel() // N if N else prod(A.shape[:-1])
    if row_stats.numel() != rows or col_stats.numel() != N:
        raise ValueError(f"A [{rows} rows, {N} columns] needs {rows} row_stats and {N} col_stats, got "
                         f"{row_stats.numel()} and {col_stats.numel()}")
    if bias is not None:
        _tensor("bias", bias)
        if bias.numel() != N:
            raise ValueError(f"bias holds {bias.numel()} values for {N} columns")
        bias = bias.reshape(N).to(dtype)
    if A.numel() == 0:
        return A.new_zeros(A.shape, dtype=dtype)
    result = _bnbf.int8_mm_dequant(A.reshape(rows, N), row_stats.reshape(rows), col_stats.reshape(N), bias=bias,
                                   dtype=dtype)
    return result.reshape(A.shape)


def int8_mm_dequant(A: Tensor, row_stats: Tensor, col_stats: Tensor, out: Optional[Tensor] = None,
                    bias: Optional[Tensor] = None):
    """float16 A * row_stats[m] * col_stats[n] / 127^2 (+ bias) for an int32 product A [..., N].
    out: optional buffer receiving the result."""
    return _copy_into(out, _int8_mm_dequant(A, row_stats, col_stats, bias, torch.float16))


def _int8_double_quant(A, threshold):
    """(row codes, column codes, row absmax, column absmax, outlier columns int64): row-wise codes
    through int8_vectorwise_quant, column-wise from the column absmax (outliers left out of both)."""
    q_row, row_stats, outliers = int8_vectorwise_quant(A, threshold)
    flat = A.reshape(-1, A.shape[-1]) if A.shape[-1] else A.reshape(prod(A.shape[:-1]), 0)
    magnitude = flat.abs().float()
    if threshold > 0:
        kept = magnitude < threshold
        magnitude = magnitude * kept
        flat = flat * kept
    col_stats = magnitude.amax(dim=0) if flat.shape[0] else flat.new_zeros((flat.shape[1],), dtype=torch.float32)
    safe = torch.where(col_stats > 0, col_stats, torch.ones_like(col_stats))  # an all-zero column codes to 0
    q_col = torch.round(flat.float() * 127.0 / safe.unsqueeze(0)).to(torch.int8).reshape(A.shape)
    if outliers is None:
        outliers = A.new_empty((0,), dtype=torch.int64)
    return q_row, q_col, row_stats, col_stats, outliers


def int8_double_quant(A: Tensor, col_stats: Optional[Tensor] = None, row_stats: Optional[Tensor] = None,
                      out_col: Optional[Tensor] = None, out_row: Optional[Tensor] = None, threshold=0.0):
    """LLM.int8() statistics along both axes: (row-wise int8 codes, column-wise int8 codes, row
    absmax, column absmax, outlier columns or None). Pre-allocated outputs are not taken (as in
    bitsandbytes)."""
    for name, given in (("row_stats", row_stats), ("col_stats", col_stats), ("out_col", out_col),
                        ("out_row", out_row)):
        if given is not None:
            raise ValueError(f"{name} must be None: int8_double_quant does not take a pre-allocated {name}")
    _float_tensor("A", A, "int8_double_quant")
    q_row, q_col, rs, cs, outliers = _int8_double_quant(A, float(threshold))
    return q_row, q_col, rs, cs, (outliers if float(threshold) > 0 else None)


# ---------------------------------------------------------------- optimizer updates
# bitsandbytes' optimizer names and bnb's optimizer kinds (bnb.h's bnb_optimizer_t): lamb and lars
# are Adam and Momentum with update-norm clipping, as in bitsandbytes (docs/OPS.md §6).
_OPTIMIZER_KINDS = {"adam": 1, "momentum": 2, "rmsprop": 3, "lion": 4, "adagrad": 5, "ademamix": 6, "lamb": 7,
                    "lars": 8}
_PARAM_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _optimizer_update(optimizer_name, bits, g, p, state1, state2, qmap1, qmap2, absmax1, absmax2, unorm_vec,
                      beta1, beta2, beta3, alpha, eps, weight_decay, step, lr, gnorm_scale, max_unorm, param_norm,
                      skip_zeros):
    """One in-place step of p and its state through bnb_optimizer_update (the checks first)."""
    from bnb import _arrays, _lib

    kind = _OPTIMIZER_KINDS.get(optimizer_name)
    if kind is None:
        raise ValueError(f"optimizer_name {optimizer_name!r} is not supported: use one of {sorted(_OPTIMIZER_KINDS)}")
    _tensor("g", g)
    _tensor("p", p)
    if p.dtype not in _PARAM_DTYPES or g.dtype != p.dtype:
        raise ValueError(f"g and p must share one of float32, float16, bfloat16: got g {g.dtype}, p {p.dtype}")
    if g.numel() != p.numel():
        raise ValueError(f"g and p must have the same number of elements, got {g.numel()} and {p.numel()}")
    state_dtype = torch.uint8 if bits == 8 else torch.float32
    named = {"g": g, "p": p, "state1": state1, "state2": state2, "qmap1": qmap1, "qmap2": qmap2,
             "absmax1": absmax1, "absmax2": absmax2, "unorm_vec": unorm_vec}
    for name, t in named.items():
        if t is None:
            continue
        _tensor(name, t)
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
        if t.device != p.device and not getattr(t, "is_paged", False):
            raise ValueError(f"{name} is on {t.device}, p on {p.device}")
    for name in ("state1", "state2"):
        if named[name] is not None and named[name].dtype != state_dtype:
            raise ValueError(f"{name} must be {state_dtype} for a {bits}-bit update, not {named[name].dtype}")
    if p.numel() == 0:
        return
    kit = _arrays.kit_for(p)
    prm = _lib.OptimizerParams()
    _lib.check(_lib.lib.bnb_optimizer_params_init(ctypes.byref(prm)), "bnb_optimizer_params_init")
    ten = _lib.OptimizerTensors()
    _lib.check(_lib.lib.bnb_optimizer_tensors_init(ctypes.byref(ten)), "bnb_optimizer_tensors_init")
    prm.optimizer, prm.state_bits, prm.n = kind, bits, p.numel()
    prm.param_dtype = _lib.DTYPE_CODES[_PARAM_DTYPES[p.dtype]]
    prm.lr, prm.beta1, prm.beta2, prm.beta3, prm.alpha, prm.eps = lr, beta1, beta2, beta3, alpha, eps
    prm.weight_decay, prm.gnorm_scale, prm.step = weight_decay, gnorm_scale, int(step)
    prm.max_unorm, prm.param_norm, prm.skip_zeros = max_unorm, float(param_norm), 1 if skip_zeros else 0
    for name, t in named.items():
        setattr(ten, name, t.data_ptr() if t is not None else None)
    status = _lib.lib.bnb_optimizer_update(kit.ctx, ctypes.byref(prm), ctypes.byref(ten), kit.stream)
    if status:
        _lib.raise_for(status, f"bnb_optimizer_update ({optimizer_name}, {bits}-bit, {p.numel()} values)")
    torch.autograd.graph.increment_version(p)  # written through a raw pointer


def optimizer_update_32bit(optimizer_name: str, g: Tensor, p: Tensor, state1: Tensor, beta1: float, eps: float,
                           step: int, lr: float, state2: Optional[Tensor] = None, beta2: float = 0.0,
                           beta3: float = 0.0, alpha: float = 0.0, weight_decay: float = 0.0, gnorm_scale: float = 1.0,
                           unorm_vec: Optional[Tensor] = None, max_unorm: float = 0.0, skip_zeros=False) -> None:
    """One optimizer step on p with float32 state, in place (bnb's kernels; the rules of
    docs/OPS.md §6). optimizer_name: adam, momentum, rmsprop, lion, adagrad, ademamix, lamb, lars.
    max_unorm > 0 clips the update's norm to max_unorm * ||p|| (needs unorm_vec, float32 [1])."""
    param_norm = 0.0
    if max_unorm > 0.0:
        if unorm_vec is None:
            raise ValueError("max_unorm > 0 needs unorm_vec (a float32 tensor of one element)")
        param_norm = float(torch.linalg.vector_norm(p.detach(), dtype=torch.float32))
    _optimizer_update(optimizer_name, 32, g, p, state1, state2, None, None, None, None, unorm_vec, beta1, beta2,
                      beta3, alpha, eps, weight_decay, step, lr, gnorm_scale, max_unorm, param_norm, skip_zeros)


def optimizer_update_8bit_blockwise(optimizer_name: str, g: Tensor, p: Tensor, state1: Tensor,
                                    state2: Optional[Tensor], beta1: float, beta2: float, beta3: float, alpha: float,
                                    eps: float, step: int, lr: float, qmap1: Tensor, qmap2: Optional[Tensor],
                                    absmax1: Tensor, absmax2: Optional[Tensor], weight_decay: float = 0.0,
                                    gnorm_scale: float = 1.0, skip_zeros=False) -> None:
    """One optimizer step on p with 8-bit blockwise state (uint8 codes of qmap1/qmap2, float32
    absmax per block of 256), in place."""
    _optimizer_update(optimizer_name, 8, g, p, state1, state2, qmap1, qmap2, absmax1, absmax2, None, beta1, beta2,
                      beta3, alpha, eps, weight_decay, step, lr, gnorm_scale, 0.0, 0.0, skip_zeros)


__all__ = [
    "GlobalPageManager", "QuantState", "create_dynamic_map", "create_fp8_map", "create_linear_map",
    "create_normal_map", "dequantize_4bit", "dequantize_blockwise", "dequantize_fp4", "dequantize_nf4", "gemv_4bit",
    "get_4bit_type", "get_paged", "get_ptr", "has_avx512bf16", "int8_double_quant", "int8_linear_matmul",
    "int8_mm_dequant", "int8_vectorwise_dequant", "int8_vectorwise_quant", "is_on_gpu", "name2qmap",
    "optimizer_update_32bit", "optimizer_update_8bit_blockwise",
    "pack_dict_to_tensor", "prefetch_tensor", "quantize_4bit", "quantize_blockwise", "quantize_fp4", "quantize_nf4",
    "unpack_tensor_to_dict",
]
