"""Array adapters: what the ops need from numpy arrays and torch tensors, behind one interface.

A "kit" knows the library context and stream that arrays of one place (host, or one GPU) use,
allocates outputs there, and gives data pointers. `kit_for(x)` picks it from an input:
numpy arrays -> the CPU context; torch tensors -> the context of the tensor's device, and on a
GPU the current torch stream. torch is never imported here: a tensor can only exist once the
caller has imported it.

bfloat16 on the numpy side: numpy has no bfloat16. An `ml_dtypes.bfloat16` array is taken as
bf16; a uint16 array holding bf16 bit patterns is taken as bf16 only when the caller says so
(dtype="bfloat16"). bf16 outputs are ml_dtypes.bfloat16 arrays when ml_dtypes is installed,
else uint16 arrays of the bit patterns.
"""

import sys

import numpy as np

from . import _lib

try:  # optional: a real bfloat16 dtype for numpy
    import ml_dtypes as _ml_dtypes

    NP_BF16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _ml_dtypes = None
    NP_BF16 = None

_NP_BY_CODE = {
    _lib.F32: np.dtype(np.float32),
    _lib.F16: np.dtype(np.float16),
    _lib.BF16: NP_BF16 if NP_BF16 is not None else np.dtype(np.uint16),
    _lib.U8: np.dtype(np.uint8),
    _lib.I8: np.dtype(np.int8),
    _lib.I32: np.dtype(np.int32),
}
_CODE_BY_NP = {np.dtype(np.float32): _lib.F32, np.dtype(np.float16): _lib.F16, np.dtype(np.uint8): _lib.U8,
               np.dtype(np.int8): _lib.I8, np.dtype(np.int32): _lib.I32}
if NP_BF16 is not None:
    _CODE_BY_NP[NP_BF16] = _lib.BF16
# Every accepted spelling of a dtype -> its code, grown as new spellings (torch dtypes) are seen.
_FAST_CODES = {code: code for code in _lib.DTYPE_NAMES}
_FAST_CODES.update(_lib.DTYPE_CODES)
_FAST_CODES.update(_CODE_BY_NP)
_FAST_CODES.update({dt.type: code for dt, code in _CODE_BY_NP.items()})


def is_torch(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_dtensor(x):
    """Whether x is a torch.distributed DTensor (FSDP2's sharded parameters and gradients); none
    exists before torch.distributed.tensor is imported."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(x, module.DTensor)


def local_shard(x):
    """This rank's part of a DTensor (outside autograd: its local tensor itself, not a copy), or x."""
    return x.to_local() if is_dtensor(x) else x


def dtype_code(dtype):
    """bnb_dtype_t of a dtype given as a bnb code, a name, a numpy dtype or a torch dtype."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.compiler.is_compiling():
        # Dynamo cannot trace look-ups in a dict keyed by numpy dtypes: use torch-only keys.
        return _compile_safe_dtype_code(dtype)
    try:
        code = _FAST_CODES.get(dtype)
    except TypeError:  # unhashable
        code = None
    if code is not None:
        return code
    code = _slow_dtype_code(dtype)
    _FAST_CODES[dtype] = code
    return code


def _compile_safe_dtype_code(dtype):
    if isinstance(dtype, int):
        return dtype
    if isinstance(dtype, str):
        return _lib.DTYPE_CODES[dtype]
    return _TORCH_CODES()[dtype]


def _slow_dtype_code(dtype):
    if isinstance(dtype, str):
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(_lib.DTYPE_CODES)}")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype):
        code = _TORCH_CODES().get(dtype)
        if code is None:
            raise ValueError(f"dtype {dtype} is not supported (float32, float16, bfloat16, uint8, int8, int32)")
        return code
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype {dtype!r} is not a dtype") from None
    code = _CODE_BY_NP.get(np_dtype)
    if code is None:
        raise ValueError(f"dtype {np_dtype} is not supported (float32, float16, bfloat16, uint8, int8, int32)")
    return code


def dtype_name(dtype):
    """'float32', 'float16', 'bfloat16', ... for any accepted dtype spelling."""
    return _lib.DTYPE_NAMES[dtype_code(dtype)]


_torch_codes = None


def _TORCH_CODES():
    global _torch_codes
    if _torch_codes is None:
        import torch

        _torch_codes = {torch.float32: _lib.F32, torch.float16: _lib.F16, torch.bfloat16: _lib.BF16,
                        torch.uint8: _lib.U8, torch.int8: _lib.I8, torch.int32: _lib.I32}
    return _torch_codes


_torch_by_code = None


def TORCH_BY_CODE():
    global _torch_by_code
    if _torch_by_code is None:
        _torch_by_code = {code: dt for dt, code in _TORCH_CODES().items()}
    return _torch_by_code


# ---------------------------------------------------------------- numpy (host memory, CPU backend)
def _slow_data_ptr(a):
    return a.__array_interface__["data"][0]


def _make_fast_data_ptr():
    """numpy's `__array_interface__` and `.ctypes.data` cost about 2 us each, more than the rest of a
    call. The data pointer is the first field after the object header of numpy's array struct
    (PyArray_DATA reads it there; it is part of numpy's binary ABI), so read it directly, ~0.1 us.
    Checked here against __array_interface__; on any mismatch the slow, public route is used."""
    import ctypes

    offset = object.__basicsize__  # the object header: larger on free-threaded builds
    read = ctypes.c_void_p.from_address

    def fast(a):
        return read(id(a) + offset).value

    probes = [np.arange(10, dtype=np.float32)[3:], np.zeros((4, 6), np.uint8)[1:, ::2], np.empty(0, np.int8)]
    try:
        if all(fast(p) == _slow_data_ptr(p) for p in probes):
            return fast
    except Exception:  # pragma: no cover - an interpreter where id() is not an address
        pass
    return _slow_data_ptr  # pragma: no cover


_data_ptr = _make_fast_data_ptr()


class NumpyKit:
    stream = None
    library = "numpy"

    _ctx = None

    @property
    def ctx(self):
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = _lib.context(_lib.BACKEND_CPU, 0)
        return ctx

    @staticmethod
    def prepare(a, name, dtype=None):
        """(C-contiguous array, bnb dtype code). `dtype` (a code or any dtype spelling) is what
        the array must hold; it also lets a uint16 array stand for bfloat16 bits."""
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy array like the other inputs, not {type(a).__name__}")
        code = _CODE_BY_NP.get(a.dtype)
        if dtype is not None:
            want = dtype if type(dtype) is int else dtype_code(dtype)
            if code != want:
                if want == _lib.BF16 and a.dtype == np.uint16:
                    code = want
                else:
                    raise ValueError(f"{name}: dtype {a.dtype} does not match dtype={_lib.DTYPE_NAMES[want]!r}")
        elif code is None:
            hint = " (pass dtype='bfloat16' to read uint16 as bfloat16 bits)" if a.dtype == np.uint16 else ""
            raise ValueError(f"{name}: dtype {a.dtype} is not supported{hint}")
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        return a, code

    @staticmethod
    def empty(shape, code):
        return np.empty(shape, _NP_BY_CODE[code])

    @staticmethod
    def numel(a):
        return a.size

    @staticmethod
    def ptr(a):
        return _data_ptr(a) if a is not None else None

    @staticmethod
    def native_dtype(code):
        """The dtype a QuantState records for arrays of this kit."""
        if code == _lib.BF16 and NP_BF16 is None:
            return "bfloat16"
        return _NP_BY_CODE[code]

    def from_host(self, array):
        return array


NUMPY = NumpyKit()


# ---------------------------------------------------------------- torch (CPU, CUDA or ROCm tensors)
class TorchKit:
    """torch tensors of one device. The eager path of every torch op goes through prepare/empty/ptr,
    so these avoid what costs in Python: a torch.device object per call, shape tuples parsed by
    torch.empty (integers as separate arguments are about 0.6 us cheaper), dtype names."""

    library = "torch"

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device
        if device.type == "cpu":
            self.backend, self.index = _lib.BACKEND_CPU, 0
        elif device.type == "cuda":
            self.backend = _lib.BACKEND_HIP if getattr(torch.version, "hip", None) else _lib.BACKEND_CUDA
            self.index = device.index if device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", self.index)
        else:
            raise ValueError(f"tensors on {device} are not supported (cpu, cuda)")
        self._ctx = None
        self._by_code = TORCH_BY_CODE()
        self._codes = _TORCH_CODES()
        self._device_id = -1 if self.device.type == "cpu" else self.index  # Tensor.get_device()
        self._empty = torch.empty
        self._Tensor = torch.Tensor
        self._raw_stream = None if self.backend == _lib.BACKEND_CPU else raw_stream_function()

    @property
    def ctx(self):
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = _lib.context(self.backend, self.index)
        return ctx

    @property
    def stream(self):
        raw = self._raw_stream
        return None if raw is None else raw(self.index)

    def prepare(self, a, name, dtype=None):
        """(contiguous tensor, bnb dtype code); `dtype` (a code or any dtype spelling) is what the
        tensor must hold."""
        if not isinstance(a, self._Tensor):
            raise TypeError(f"{name} must be a torch tensor like the other inputs, not {type(a).__name__}")
        if a.get_device() != self._device_id:
            raise ValueError(f"{name} is on {a.device}, the other inputs on {self.device}")
        code = self._codes.get(a.dtype)
        if code is None:
            raise ValueError(f"{name}: dtype {a.dtype} is not supported")
        if dtype is not None and code != dtype and code != (dtype if type(dtype) is int else dtype_code(dtype)):
            raise ValueError(f"{name}: dtype {a.dtype} does not match dtype={_lib.DTYPE_NAMES.get(dtype, dtype)!r}")
        if not a.is_contiguous():
            a = a.contiguous()
        return a, code

    def empty(self, shape, code):
        if shape:
            return self._empty(*shape, dtype=self._by_code[code], device=self.device)
        return self._empty((), dtype=self._by_code[code], device=self.device)

    @staticmethod
    def ptr(a):
        return a.data_ptr() if a is not None else None

    @staticmethod
    def numel(a):
        return a.numel()

    def native_dtype(self, code):
        return self._by_code[code]

    def from_host(self, array):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)


_raw_stream = None


def raw_stream_function():
    """f(device_index) -> the current torch stream of that GPU as an integer handle (0 for the
    legacy default stream; the library reads 0 and NULL alike). torch's own C accessor costs a
    fraction of torch.cuda.current_stream(), which builds a Stream object per call; it is private,
    so the public route stays as the fallback."""
    global _raw_stream
    if _raw_stream is None:
        import torch

        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        if raw is None:  # pragma: no cover - depends on the torch build
            current_stream = torch.cuda.current_stream

            def raw(index):
                return current_stream(index).cuda_stream
        _raw_stream = raw
    return _raw_stream


_torch_kits = {}
_torch_cuda_kits = {}  # by Tensor.get_device(): no torch.device object per call
_torch_cpu_kit = None


def kit_for(x, name="A"):
    """The kit of an input array (numpy -> host; torch -> the tensor's device); `name` is the
    argument's name for the error when x is neither."""
    global _torch_cpu_kit
    if isinstance(x, np.ndarray):
        return NUMPY
    if is_torch(x):
        if x.is_cpu:
            kit = _torch_cpu_kit
            if kit is not None:
                return kit
        elif x.is_cuda:
            kit = _torch_cuda_kits.get(x.get_device())
            if kit is not None:
                return kit
        device = x.device
        kit = _torch_kits.get(device)
        if kit is None:
            kit = TorchKit(device)
            _torch_kits[device] = kit
        if device.type == "cpu":
            _torch_cpu_kit = kit
        elif device.type == "cuda":
            _torch_cuda_kits[kit.index] = kit
        return kit
    raise TypeError(f"{name} must be a numpy array or a torch tensor, not {type(x).__name__}")
