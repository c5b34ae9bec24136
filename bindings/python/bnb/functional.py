"""The functional API, shaped like bitsandbytes.functional.

Every function takes numpy arrays (host, CPU backend) or torch tensors (the tensor's device picks
the backend and device; on a GPU the current torch stream is used). Outputs are allocated in the
same library and on the same device as the input. torch tensors go through the torch custom ops
of bnb/_torch_ops.py (so torch.compile sees one opaque op per call); numpy arrays call the
library directly.

Which dtype to read: float32, float16 and bfloat16 inputs are quantized. numpy has no bfloat16:
pass an ml_dtypes.bfloat16 array, or a uint16 array of bf16 bit patterns together with
dtype="bfloat16". dequantize_* return bf16 as ml_dtypes.bfloat16 when ml_dtypes is installed,
else as uint16 bit patterns.
"""

import json
import math

import numpy as np

from . import _arrays, _lib, _ops
from ._arrays import is_torch

_torch_ops_module = None


def _torch_ops():
    """bnb's torch custom ops, registered on first use (importing torch only when a tensor is seen)."""
    global _torch_ops_module
    if _torch_ops_module is None:
        from . import _torch_ops

        _torch_ops_module = _torch_ops
    return _torch_ops_module.ops


def _array_arg(x, name):
    """The main input of a public function must be an array: a TypeError naming it and the types
    taken, before anything reads its shape."""
    if not (isinstance(x, np.ndarray) or is_torch(x)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, not {type(x).__name__}")


def _quant_type_code(quant_type):
    code = _lib.QUANT_TYPES.get(quant_type)
    if code is None:
        raise ValueError(f"quant_type {quant_type!r} is not supported: use 'nf4' or 'fp4'")
    return code


# ---------------------------------------------------------------- code tables
_host_tables = {}


def get_code_table(name="dynamic_signed"):
    """A code table as a float32 numpy array: 'dynamic_signed' (or 'dynamic'), 'dynamic_unsigned'
    (256 entries), 'nf4', 'fp4' (16 entries)."""
    which = _lib.CODE_TABLES.get(name)
    if which is None:
        raise ValueError(f"code table {name!r} is unknown: use one of {', '.join(_lib.CODE_TABLES)}")
    table = _host_tables.get(which)
    if table is None:
        table = _ops.get_code_table(which)
        _host_tables[which] = table
    return table.copy()


def _code_table_like(like, name):
    """A private copy of a code table in the library and device of `like` (for QuantState.code)."""
    return _torch_ops().code_table_like(like, name) if is_torch(like) else get_code_table(name)


def _mean_f32(absmax):
    """offset = RN32(sum(absmax) / n), summed in binary64 (docs/FORMATS.md §4.1's recommendation)."""
    if is_torch(absmax):
        return absmax.double().mean().float()
    return np.array(absmax.sum(dtype=np.float64) / absmax.size, dtype=np.float32)


# ---------------------------------------------------------------- QuantState
class QuantState:
    """Everything needed to dequantize a tensor; the fields and dictionaries of bitsandbytes'
    QuantState (docs/FORMATS.md §5)."""

    valid_quant_types = ("fp4", "nf4")
    valid_qs_type_keys = [f"bitsandbytes__{x}" for x in valid_quant_types]
    valid_qs_keys = [
        "absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state", "quant_type", "blocksize",
        "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset",
    ]

    def __init__(self, absmax, shape=None, code=None, blocksize=None, quant_type=None, dtype=None, offset=None,
                 state2=None):
        self.absmax = absmax
        self.shape = tuple(shape) if shape is not None else None
        self.code = code
        self.blocksize = blocksize
        self.quant_type = quant_type
        self.dtype = dtype
        self.offset = offset
        self.state2 = state2
        self.nested = state2 is not None

    def __repr__(self):
        return (f"QuantState(quant_type={self.quant_type!r}, blocksize={self.blocksize}, shape={self.shape}, "
                f"dtype={_dtype_str(self.dtype)}, nested={self.nested})")

    def __getattr__(self, name):
        # only reached for attributes that are not set: the packed entry read as an attribute
        # (`state.bitsandbytes__nf4`), as torch's state-dict walks resolve `weight.quant_state.bitsandbytes__nf4`
        if name.startswith("bitsandbytes__") and "quant_type" in self.__dict__:
            packed = self.as_dict(packed=True)
            key = "quant_state." + name
            if key in packed:
                return packed[key]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getitem__(self, index):
        """The legacy positional view: [absmax, shape, dtype, blocksize, [offset, state2] | None, quant_type]."""
        state2 = [self.offset, self.state2] if self.nested else None
        return [self.absmax, self.shape, self.dtype, self.blocksize, state2, self.quant_type][index]

    def as_dict(self, packed=False):
        """bitsandbytes' dictionary of this state. packed=True (4-bit states): the tensors plus one
        `quant_state.bitsandbytes__<type>` uint8 array holding the other items as JSON."""
        qs = {
            "quant_type": self.quant_type,
            "absmax": self.absmax,
            "blocksize": self.blocksize,
            "quant_map": self.code,
            "dtype": _dtype_str(self.dtype),
            "shape": list(self.shape) if self.shape is not None else None,
        }
        if self.nested:
            qs.update({
                "nested_absmax": self.state2.absmax,
                "nested_blocksize": self.state2.blocksize,
                "nested_quant_map": _copy(self.state2.code),
                "nested_dtype": _dtype_str(self.state2.dtype),
                "nested_offset": float(_scalar(self.offset)),
            })
        if not packed or self.quant_type is None:
            return qs
        arrays = {k: v for k, v in qs.items() if _is_array(v)}
        others = {k: v for k, v in qs.items() if not _is_array(v)}
        blob = np.frombuffer(json.dumps(others).encode("utf-8"), dtype=np.uint8).copy()
        if is_torch(self.absmax):
            import torch

            blob = torch.from_numpy(blob)
        arrays["quant_state.bitsandbytes__" + self.quant_type] = blob
        return arrays

    @classmethod
    def from_dict(cls, qs_dict, device=None):
        """Reads as_dict()'s output, packed or not, with any key prefix (e.g. a layer's state dict
        entries under `P.weight.`). torch tensors are moved to `device` when it is given.

        Every item is checked before anything reads it (_StateItems): a missing, mistyped or
        wrongly sized item, or a packed item that is not a JSON object, is a ValueError naming
        its key."""
        if not hasattr(qs_dict, "items"):
            raise TypeError(f"qs_dict must be a dict of quant_state items, not {type(qs_dict).__name__}")
        items = _StateItems.read(qs_dict, cls.valid_qs_keys, cls.valid_qs_type_keys)
        quant_type = items.choice("quant_type", cls.valid_quant_types, allow_none=True)
        blocksize = items.positive_int("blocksize")
        dtype = items.float_dtype_name("dtype")
        shape = items.shape("shape", required=quant_type is not None)
        nested = items.nested()
        absmax = items.array("absmax", "uint8" if nested else "float32")
        if shape is not None:
            n = math.prod(shape)
            items.count("absmax", absmax, _ops.nblocks(n, blocksize), f"shape {shape} in blocks of {blocksize}")
        code = items.array("quant_map", "float32")
        items.count("quant_map", code, 16 if quant_type is not None else _ops.CODE_ENTRIES,
                    f"a {'4' if quant_type is not None else '8'}-bit code table")

        move = _mover(absmax, device)
        native = _native_dtype_of(absmax)
        if nested:
            blocksize2 = items.positive_int("nested_blocksize")
            dtype2 = items.float_dtype_name("nested_dtype", only=("float32",))
            absmax2 = items.array("nested_absmax", "float32")
            nb = _numel(absmax)
            items.count("nested_absmax", absmax2, _ops.nblocks(nb, blocksize2),
                        f"{nb} absmax codes in blocks of {blocksize2}")
            code2 = items.array("nested_quant_map", "float32")
            items.count("nested_quant_map", code2, _ops.CODE_ENTRIES, "an 8-bit code table")
            offset = move(np.array(items.number("nested_offset"), dtype=np.float32))
            state2 = cls(absmax=move(absmax2), blocksize=blocksize2, code=move(code2),
                         dtype=native(dtype2))
        else:
            offset, state2 = None, None
        return cls(quant_type=quant_type, absmax=move(absmax), blocksize=blocksize, code=move(code),
                   dtype=native(dtype), shape=shape, offset=offset, state2=state2)

    def to(self, device):
        """Moves the torch tensors of this state (and its nested state) to `device`."""
        for name in ("absmax", "code", "offset"):
            value = getattr(self, name)
            if is_torch(value):
                setattr(self, name, value.to(device))
        if self.state2 is not None:
            self.state2.to(device)
        return self

    def __eq__(self, other):
        if not isinstance(other, QuantState):
            return NotImplemented
        return (self.quant_type == other.quant_type and self.blocksize == other.blocksize
                and self.shape == other.shape and _dtype_str(self.dtype) == _dtype_str(other.dtype)
                and _same(self.absmax, other.absmax) and _same(self.code, other.code)
                and _same(self.offset, other.offset) and self.state2 == other.state2)

    __hash__ = None


class _StateItems:
    """The items of a quant_state dictionary, keyed by their last name, with checks that name the
    item's key as the caller wrote it (prefix included) in every error."""

    NESTED = ("nested_absmax", "nested_quant_map", "nested_blocksize", "nested_dtype", "nested_offset")

    def __init__(self, values, keys):
        self.values = values  # last name -> value
        self.keys = keys      # last name -> where the caller wrote it, for messages

    @classmethod
    def read(cls, qs_dict, valid_keys, valid_packed_keys):
        """Strips key prefixes and unpacks the packed JSON item, checking which items are there."""
        raw = dict(qs_dict)
        for key in raw:
            if not isinstance(key, str):
                raise ValueError(f"quant_state keys must be strings, not {type(key).__name__} {key!r}")
        # the packed item is `<prefix>quant_state.bitsandbytes__<type>`; a prefix may say anything
        packed_keys = [k for k in raw if k.split(".")[-2:-1] == ["quant_state"]]
        stripped = {k.split(".")[-1] for k in raw}
        if not packed_keys and "quant_type" not in stripped:
            raise ValueError("expected packed or unpacked quant_state items, found neither")
        if len(packed_keys) > 1 or (packed_keys and packed_keys[0].split(".")[-1] not in valid_packed_keys):
            raise ValueError(f"there must be exactly one quant_state item ending in one of "
                             f"{valid_packed_keys}; found {packed_keys}")
        values, keys = {}, {}
        for key, value in raw.items():
            if key in packed_keys:
                continue
            name = key.split(".")[-1]
            if name in values:
                raise ValueError(f"quant_state items {keys[name]} and {key!r} both give {name!r}")
            values[name], keys[name] = value, repr(key)
        if packed_keys:
            key = packed_keys[0]
            for name, value in _unpack_quant_state(key, raw[key]).items():
                values[name], keys[name] = value, f"{name!r} (in the JSON of {key!r})"
        unknown = sorted(set(values) - set(valid_keys))
        if unknown:
            raise ValueError(f"unexpected quant_state items {unknown}")
        return cls(values, keys)

    def __getitem__(self, name):
        if name not in self.values:
            raise ValueError(f"quant_state item {name!r} is missing")
        return self.values[name]

    def fail(self, name, problem):
        raise ValueError(f"quant_state item {self.keys.get(name, repr(name))} {problem}")

    def choice(self, name, allowed, allow_none=False):
        value = self[name]
        if not ((value is None and allow_none) or (isinstance(value, str) and value in allowed)):
            self.fail(name, f"is {value!r}, not one of {list(allowed) + ([None] if allow_none else [])}")
        return value

    def positive_int(self, name):
        """A blocksize: the rule the ops apply (_ops.blocksize_arg), with this item's key named."""
        value = self[name]
        try:
            return _ops.blocksize_arg(value, name)
        except (TypeError, ValueError) as e:
            self.fail(name, f"is invalid: {e}")

    def number(self, name):
        value = self[name]
        if _is_array(value):
            if _numel(value) != 1:
                self.fail(name, f"must be a single number, not an array of {_numel(value)} elements")
            value = _to_host(value).reshape(()).item()
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            self.fail(name, f"must be a number, not {type(value).__name__} {value!r}")
        return float(value)

    def float_dtype_name(self, name, only=("float32", "float16", "bfloat16")):
        value = self[name]
        text = _dtype_label(value) if not isinstance(value, str) else value
        if text not in only:
            self.fail(name, f"is {value!r}, not one of {list(only)}")
        return text

    def shape(self, name, required):
        value = self.values.get(name)
        if value is None:
            if required:
                self.fail(name, "is missing: a 4-bit state needs the shape of its tensor")
            return None
        if not isinstance(value, (list, tuple)) or not all(
                not isinstance(d, bool) and isinstance(d, (int, np.integer)) and d >= 0 for d in value):
            self.fail(name, f"must be a list of non-negative integers, not {value!r}")
        return tuple(int(d) for d in value)

    def nested(self):
        present = [name for name in self.NESTED if name in self.values]
        if present and len(present) != len(self.NESTED):
            missing = [name for name in self.NESTED if name not in self.values]
            self.fail(present[0], f"comes without {missing}: a nested state needs all of {list(self.NESTED)}")
        return bool(present)

    def array(self, name, dtype):
        value = self[name]
        if not _is_array(value):
            self.fail(name, f"must be a numpy array or a torch tensor, not {type(value).__name__}")
        if _dtype_label(value.dtype) != dtype:
            self.fail(name, f"has dtype {_dtype_label(value.dtype)}, not {dtype}")
        return value

    def count(self, name, value, need, why):
        have = _numel(value)
        if have != need:
            self.fail(name, f"holds {have} elements, but {why} needs {need}")


def _unpack_quant_state(key, blob):
    """The JSON object of a packed `quant_state.bitsandbytes__<type>` item (uint8 bytes)."""
    if not _is_array(blob):
        raise ValueError(f"quant_state item {key!r} must be a uint8 array of JSON bytes, not {type(blob).__name__}")
    if _dtype_label(blob.dtype) != "uint8":
        raise ValueError(f"quant_state item {key!r} must hold uint8 bytes of JSON, not {_dtype_label(blob.dtype)}")
    raw = _to_host(blob).reshape(-1).tobytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"quant_state item {key!r} is not UTF-8 text: {e}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"quant_state item {key!r} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"quant_state item {key!r} must hold a JSON object, not {type(obj).__name__}")
    named = key.split("__")[-1]
    if obj.get("quant_type") != named:
        raise ValueError(f"quant_state item {key!r} holds quant_type {obj.get('quant_type')!r}, its key says "
                         f"{named!r}")
    return obj


def _numel(a):
    return a.numel() if is_torch(a) else a.size


def _dtype_label(dtype):
    """'float32', 'uint8', ... for a numpy or torch dtype (torch's without its 'torch.' prefix)."""
    text = str(dtype)
    return text[len("torch."):] if text.startswith("torch.") else text


def _is_array(v):
    return isinstance(v, np.ndarray) or is_torch(v)


def _to_host(a):
    return a.detach().cpu().numpy() if is_torch(a) else np.asarray(a)


def _copy(a):
    return a.clone() if is_torch(a) else np.array(a, copy=True)


def _scalar(a):
    return a.item() if _is_array(a) else a


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    a, b = _to_host(a), _to_host(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _dtype_str(dtype):
    return None if dtype is None else _arrays.dtype_name(dtype)


def _mover(example, device):
    if is_torch(example):
        import torch

        target = device if device is not None else example.device

        def move(a):
            return (a if is_torch(a) else torch.from_numpy(np.asarray(a))).to(target)
        return move
    return np.asarray


def _native_dtype_of(example):
    if is_torch(example):
        import torch

        return lambda name: getattr(torch, name)
    return lambda name: _arrays.NUMPY.native_dtype(_lib.DTYPE_CODES[name])


# ---------------------------------------------------------------- 8-bit blockwise
def _host(a, name, dtype=None):
    """A numpy input made contiguous, and its bnb dtype code (checked against `dtype` if given)."""
    return _arrays.NUMPY.prepare(a, name, dtype)


def _host_opt(a, name, dtype=None):
    return _arrays.NUMPY.prepare(a, name, dtype)[0] if a is not None else None


def quantize_blockwise(A, code=None, blocksize=4096, nested=False, dtype=None):
    """8-bit blockwise quantization (docs/FORMATS.md §2). Returns (codes uint8 shaped like A, QuantState).

    code: a 256-entry float32 table in A's library and device, None = the signed dynamic map.
    nested: also quantize the absmax (minus its mean) with the same blocksize (docs/FORMATS.md §4.2).
    dtype: only to read a uint16 numpy array as bfloat16 bits (dtype="bfloat16")."""
    _array_arg(A, "A")
    blocksize = _ops.blocksize_arg(blocksize)
    if is_torch(A):
        _check_torch_dtype(A, dtype)
        if _torch_ops().tracing():
            _check_torch_inputs(A, code=code)
        q, absmax = _torch_ops().quantize_blockwise(A, code, blocksize)
        native = A.dtype
    else:
        kit = _arrays.NUMPY
        A, dt = _host(A, "A", dtype)
        code = _host_opt(code, "code", _lib.F32)
        q, absmax = _ops.quantize_blockwise(kit, A, dt, code, blocksize)
        native = kit.native_dtype(dt)
    code_out = _copy(code) if code is not None else _code_table_like(absmax, "dynamic_signed")
    if not nested:
        return q, QuantState(absmax=absmax, code=code_out, blocksize=blocksize, dtype=native)
    offset = _mean_f32(absmax)
    qabsmax, state2 = quantize_blockwise(absmax - offset, blocksize=blocksize, nested=False)
    return q, QuantState(absmax=qabsmax, code=code_out, blocksize=blocksize, dtype=native, offset=offset,
                         state2=state2)


def _check_torch_inputs(A, **others):
    """Every other array of a torch call must be a tensor on A's device (None allowed). Run while
    torch.compile traces (fake tensors never reach the library); in eager mode the op's kit.prepare
    checks the same, so callers skip this there."""
    for name, x in others.items():
        if x is None:
            continue
        if not is_torch(x):
            raise TypeError(f"{name} must be a torch tensor like A, not {type(x).__name__}")
        if x.device != A.device:
            raise ValueError(f"{name} is on {x.device}, A on {A.device}")


def _check_torch_dtype(A, dtype):
    if dtype is not None and _arrays.dtype_code(dtype) != _arrays.dtype_code(A.dtype):
        raise ValueError(f"A: dtype {A.dtype} does not match dtype={dtype!r}")


def dequantize_blockwise(A, quant_state=None, absmax=None, code=None, blocksize=4096, dtype=None):
    """Inverse of quantize_blockwise. Either quant_state, or absmax (+ code, blocksize).
    dtype: of the output; default quant_state.dtype, or float32 without a quant_state."""
    _array_arg(A, "A")
    if quant_state is not None:
        absmax, code, blocksize = quant_state.absmax, quant_state.code, quant_state.blocksize
        if dtype is None:
            dtype = quant_state.dtype
        if quant_state.nested:
            absmax = dequantize_blockwise(quant_state.absmax, quant_state.state2, dtype="float32")
            absmax = absmax + quant_state.offset
    elif absmax is None:
        raise ValueError("dequantize_blockwise needs a quant_state or an absmax")
    blocksize = _ops.blocksize_arg(blocksize)
    if is_torch(A):
        ops = _torch_ops()
        if ops.tracing():
            _check_torch_inputs(A, absmax=absmax, code=code)
        return ops.dequantize_blockwise(A, absmax, code, blocksize, ops.torch_dtype(dtype))
    out_dt = _arrays.dtype_code(dtype if dtype is not None else "float32")
    A, _ = _host(A, "A", _lib.U8)
    absmax = _host_opt(absmax, "absmax", _lib.F32)
    code = _host_opt(code, "code", _lib.F32)
    return _ops.dequantize_blockwise(_arrays.NUMPY, A, absmax, code, blocksize, out_dt)


# ---------------------------------------------------------------- 4-bit
def quantize_4bit(A, blocksize=64, compress_statistics=False, quant_type="fp4", dtype=None):
    """NF4/FP4 quantization (docs/FORMATS.md §3). Returns (packed uint8 [(n+1)//2, 1], QuantState).
    compress_statistics: double-quantize the absmax (docs/FORMATS.md §4.1; nested blocksize 256)."""
    _array_arg(A, "A")
    blocksize = _ops.blocksize_arg(blocksize)
    qt = _quant_type_code(quant_type)
    shape = tuple(A.shape)
    if is_torch(A):
        _check_torch_dtype(A, dtype)
        packed, absmax = _torch_ops().quantize_4bit(A, blocksize, quant_type)
        native, f32 = A.dtype, _torch_ops().dtype(_lib.F32)
    else:
        kit = _arrays.NUMPY
        A, dt = _host(A, "A", dtype)
        packed, absmax = _ops.quantize_4bit(kit, A, dt, blocksize, qt)
        native, f32 = kit.native_dtype(dt), kit.native_dtype(_lib.F32)
    code = _code_table_like(absmax, quant_type)
    if not compress_statistics:
        return packed, QuantState(absmax=absmax, shape=shape, code=code, blocksize=blocksize, quant_type=quant_type,
                                  dtype=native)
    absmax_q, absmax2, offset = compress_absmax(absmax)
    state2 = QuantState(absmax=absmax2, code=_code_table_like(absmax, "dynamic_signed"), blocksize=256, dtype=f32)
    return packed, QuantState(absmax=absmax_q, shape=shape, code=code, blocksize=blocksize, quant_type=quant_type,
                              dtype=native, offset=offset, state2=state2)


def compress_absmax(absmax):
    """Double quantization of float32 absmax: (codes uint8 [nb], absmax2 float32 [ceil(nb/256)],
    offset float32 0-d) with offset = mean(absmax)."""
    _array_arg(absmax, "absmax")
    if is_torch(absmax):
        return _torch_ops().compress_absmax(absmax)
    absmax, _ = _host(absmax, "absmax", _lib.F32)
    return _ops.compress_absmax(_arrays.NUMPY, absmax)


def _scales_args(quant_state, absmax):
    """(absmax-or-codes, absmax2, code2, offset, blocksize2) of a QuantState or a plain absmax."""
    if quant_state is not None and quant_state.nested:
        s2 = quant_state.state2
        return quant_state.absmax, s2.absmax, s2.code, quant_state.offset, s2.blocksize
    return (quant_state.absmax if quant_state is not None else absmax), None, None, None, 256


def _host_scales(amax, absmax2, code2, offset, blocksize2):
    if absmax2 is None:
        return _ops.scales(_arrays.NUMPY, _host_opt(amax, "absmax", _lib.F32))
    return _ops.scales(_arrays.NUMPY, _host_opt(amax, "absmax", _lib.U8),
                       _host_opt(absmax2, "state2.absmax", _lib.F32), _host_opt(code2, "state2.code", _lib.F32),
                       _host_opt(np.asarray(offset, dtype=np.float32), "offset", _lib.F32), blocksize2)


def dequantize_4bit(A, quant_state=None, absmax=None, blocksize=64, quant_type="fp4", shape=None, dtype=None):
    """Inverse of quantize_4bit. Either quant_state, or absmax + shape (+ blocksize, quant_type).
    dtype: of the output; default quant_state.dtype, or float32."""
    _array_arg(A, "A")
    if quant_state is not None:
        blocksize, quant_type, shape = quant_state.blocksize, quant_state.quant_type, quant_state.shape
        if dtype is None:
            dtype = quant_state.dtype
    elif absmax is None or shape is None:
        raise ValueError("dequantize_4bit needs a quant_state, or an absmax and a shape")
    blocksize = _ops.blocksize_arg(blocksize)
    if shape is None:
        raise ValueError("dequantize_4bit: quant_state.shape is None (an 8-bit state?); a 4-bit state has a shape")
    shape = _ops.shape_arg(shape)
    qt = _quant_type_code(quant_type)
    amax, absmax2, code2, offset, blocksize2 = _scales_args(quant_state, absmax)
    if is_torch(A):
        ops = _torch_ops()
        if ops.tracing():
            _check_torch_inputs(A, absmax=amax, nested_absmax=absmax2, nested_code=code2, offset=offset)
        return ops.dequantize_4bit(A, amax, absmax2, code2, offset, blocksize2, blocksize, quant_type,
                                   list(shape), ops.torch_dtype(dtype))
    out_dt = _arrays.dtype_code(dtype if dtype is not None else "float32")
    A, _ = _host(A, "A", _lib.U8)
    # the contiguous copies behind the scales' pointers must live until the call returns
    scales = _host_scales(amax, absmax2, code2, offset, blocksize2)
    return _ops.dequantize_4bit(_arrays.NUMPY, A, scales, math.prod(shape), shape, blocksize, qt, out_dt)


def matmul_4bit(A, B, quant_state, out=None, bias=None):
    """A[..., K] @ dequantize_4bit(B, quant_state).T (+ bias): out [..., N] in A's dtype.

    B holds the packed codes of a [N, K] weight (quant_state.shape): the [(N*K+1)//2, 1] array
    quantize_4bit returned, or any view of the same bytes (bitsandbytes callers pass `weight.t()`).
    out: optional array of the result's shape and dtype that receives the result (returned).
    K not a multiple of the blocksize: the weight is dequantized and multiplied by torch/numpy
    (the fused kernel needs whole blocks per row). bitsandbytes' order: (A, B, quant_state, out, bias)."""
    _array_arg(A, "A")
    _array_arg(B, "B")
    if quant_state is None or quant_state.shape is None or len(quant_state.shape) != 2:
        shape = None if quant_state is None else quant_state.shape
        raise ValueError(f"quant_state.shape must be (N, K) of the weight, not {shape}")
    qt = _quant_type_code(quant_state.quant_type)
    _ops.blocksize_arg(quant_state.blocksize, "quant_state.blocksize")
    N, K = quant_state.shape
    if A.shape[-1] != K:
        raise ValueError(f"A has {A.shape[-1]} columns, the weight {K}")
    amax, absmax2, code2, offset, blocksize2 = _scales_args(quant_state, None)
    if is_torch(A):
        if _torch_ops().tracing():
            _check_torch_inputs(A, B=B, absmax=amax, nested_absmax=absmax2, nested_code=code2, offset=offset,
                                bias=bias)
        if not is_torch(B):
            raise TypeError(f"B must be a torch tensor like A, not {type(B).__name__}")
        u8 = _torch_ops().dtype(_lib.U8)
        if B.dtype != u8:
            B = B.reshape(-1).view(u8)  # a quant_storage other than uint8 holds the same bytes
        if B.numel() * 2 < N * K:
            raise ValueError(f"B holds {B.numel()} bytes, a [{N}, {K}] 4-bit weight needs {(N * K + 1) // 2}")
        if K % quant_state.blocksize:  # the fused kernel needs whole blocks in each weight row
            import torch

            W = dequantize_4bit(B, quant_state, dtype=A.dtype)
            result = torch.nn.functional.linear(A, W, bias)
        else:
            result = _torch_ops().gemm_4bit(A, B, amax, absmax2, code2, offset, blocksize2, quant_state.blocksize,
                                            quant_state.quant_type, N, bias)
        if out is not None:
            out.copy_(result)
            return out
        return result
    A, dt = _host(A, "A")
    B = _host_opt(B, "B", _lib.U8)
    if B.size * 2 < N * K:
        raise ValueError(f"B holds {B.size} bytes, a [{N}, {K}] 4-bit weight needs {(N * K + 1) // 2}")
    bias = _host_opt(bias, "bias", dt)
    if K % quant_state.blocksize:  # the fused kernel needs whole blocks in each weight row
        W = dequantize_4bit(B, quant_state, dtype=dt)
        result = A @ W.T
        if bias is not None:
            result = result + bias
        result = result.astype(A.dtype, copy=False)
    else:
        scales = _host_scales(amax, absmax2, code2, offset, blocksize2)
        M = A.size // K if K else 0
        result = _ops.gemm_4bit(_arrays.NUMPY, dt, A, M, K, B, N, scales, qt, quant_state.blocksize, bias,
                                tuple(A.shape[:-1]) + (N,))
    if out is not None:
        np.copyto(out, result)
        return out
    return result


# ---------------------------------------------------------------- LLM.int8()
def int8_vectorwise_quant(A, threshold=0.0, dtype=None):
    """Row-wise int8 quantization over the last axis: (q int8, row_stats float32 [rows],
    outlier columns int32 or None). With threshold > 0, entries with |x| >= threshold are zeroed
    in q, left out of row_stats, and their columns returned."""
    _array_arg(A, "A")
    if A.ndim < 1:
        raise ValueError("A must have at least one dimension")
    threshold = float(threshold)
    if is_torch(A):
        _check_torch_dtype(A, dtype)
        ops = _torch_ops()
        q, row_stats = ops.int8_vectorwise_quant(A, threshold)
        return q, row_stats, (ops.int8_outlier_columns(A, threshold) if threshold > 0 else None)
    cols = int(A.shape[-1])
    rows = math.prod(A.shape[:-1]) if A.ndim > 1 else 1
    A, dt = _host(A, "A", dtype)
    q, row_stats = _ops.int8_vectorwise_quant(_arrays.NUMPY, A, dt, rows, cols, threshold)
    outliers = _ops.int8_outlier_columns(_arrays.NUMPY, A, dt, rows, cols, threshold) if threshold > 0 else None
    return q, row_stats, outliers


def int8_linear_matmul(A, B):
    """C[M, N] int32 = A[M, K] int8 @ B[N, K]^T int8."""
    _array_arg(A, "A")
    _array_arg(B, "B")
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"A [M, K] and B [N, K] must share K: got {tuple(A.shape)} and {tuple(B.shape)}")
    if is_torch(A):
        if _torch_ops().tracing():
            _check_torch_inputs(A, B=B)
        return _torch_ops().int8_matmul(A, B)
    M, K = (int(d) for d in A.shape)
    A, _ = _host(A, "A", _lib.I8)
    return _ops.int8_matmul(_arrays.NUMPY, A, _host_opt(B, "B", _lib.I8), M, int(B.shape[0]), K)


def int8_mm_dequant(C, row_stats, col_stats, bias=None, dtype="float16"):
    """out[M, N] = C * row_stats[m] * col_stats[n] / 127^2 (+ bias[n]) in `dtype`."""
    _array_arg(C, "C")
    out_dt = _arrays.dtype_code(dtype)
    if C.ndim != 2:
        raise ValueError(f"C must be 2-D, not {tuple(C.shape)}")
    if is_torch(C):
        if _torch_ops().tracing():
            _check_torch_inputs(C, row_stats=row_stats, col_stats=col_stats, bias=bias)
        return _torch_ops().int8_mm_dequant(C, row_stats, col_stats, bias, _torch_ops().dtype(out_dt))
    M, N = (int(d) for d in C.shape)
    C, _ = _host(C, "C", _lib.I32)
    return _ops.int8_mm_dequant(_arrays.NUMPY, C, M, N, _host_opt(row_stats, "row_stats", _lib.F32),
                                _host_opt(col_stats, "col_stats", _lib.F32),
                                _host_opt(bias, "bias", out_dt), out_dt)


# ---------------------------------------------------------------- the LLM.int8() product
class MatmulLtState:
    """What bnb.matmul keeps for one weight between calls (the fields of bitsandbytes'
    MatmulLtState that inference uses).

    CB: the int8 weight [N, K] (row-wise codes), SCB: its row absmax [N] (float32),
    threshold: outlier threshold of the activations (0 = none), has_fp16_weights: when False and
    CB is set, a float B passed to bnb.matmul is not quantized again (CB/SCB are reused),
    idx: the outlier columns of the last call (torch int32 / numpy int32), or None."""

    def __init__(self, CB=None, SCB=None, threshold=0.0, has_fp16_weights=True):
        self.CB = CB
        self.SCB = SCB
        self.threshold = threshold
        self.has_fp16_weights = has_fp16_weights
        self.is_training = False
        self.idx = None

    @property
    def idx(self):
        """The outlier columns of the last call (int32), or None. A call on a GPU leaves them on
        the device with their count; the first read here takes the count to the host (the one
        synchronisation, and only for a caller who asks)."""
        pending = self._pending_idx
        if pending is not None:
            columns, count = pending
            self._pending_idx = None
            self._idx = columns[:int(count[0])]
        return self._idx

    @idx.setter
    def idx(self, value):
        self._idx = value
        self._pending_idx = None

    def _set_pending_idx(self, columns, count):
        """state.idx is columns[:count], read when asked for."""
        self._idx = None
        self._pending_idx = (columns, count)

    def __repr__(self):
        return (f"MatmulLtState(threshold={self.threshold}, has_fp16_weights={self.has_fp16_weights}, "
                f"quantized={self.CB is not None})")


def _is_int8(a):
    return str(a.dtype) in ("int8", "torch.int8")


def matmul(A, B, out=None, state=None, threshold=0.0, bias=None):
    """LLM.int8() matrix product: A[..., K] @ B[N, K]^T (+ bias[N]) -> [..., N] in A's dtype.

    B is either an int8 weight already quantized row-wise (its row absmax SCB comes from
    `B.SCB` for an nn.Int8Params, else from `state.SCB`), or a float weight, which is quantized
    row-wise from its fp16 rounding on every call (stored in `state.CB`/`state.SCB`; reused
    instead when `state.has_fp16_weights` is False and `state.CB` is set).
    threshold > 0 (or state.threshold): activation columns holding any |x| >= threshold are
    multiplied in A's dtype against the dequantized weight columns, the rest in int8
    (docs/FORMATS.md §6.5). out: optional array receiving the result. Inference only: no backward.
    Works on torch tensors (any device bnb supports) and numpy arrays.
    bitsandbytes' argument order: (A, B, out, state, threshold, bias)."""
    _array_arg(A, "A")
    _array_arg(B, "B")
    if state is None:
        state = MatmulLtState()
    if threshold and threshold > 0:
        state.threshold = threshold
    threshold = float(state.threshold or 0.0)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, not {threshold}")
    if B.ndim != 2:
        raise ValueError(f"B must be a 2-D [N, K] weight, not {tuple(B.shape)}")
    if A.ndim < 1 or A.shape[-1] != B.shape[1]:
        raise ValueError(f"A [..., K] and B [N, K] must share K: got {tuple(A.shape)} and {tuple(B.shape)}")
    if _is_int8(B):
        SCB = getattr(B, "SCB", None)
        if SCB is None:
            SCB = state.SCB
        if SCB is None:
            raise ValueError("B is int8: its row absmax SCB is needed (pass state with state.SCB, or an "
                             "nn.Int8Params weight)")
        CB = B
    elif state.CB is not None and not state.has_fp16_weights:
        CB, SCB = state.CB, state.SCB
    else:
        CB, SCB = quantize_int8_rows(B)
        state.CB, state.SCB = CB, SCB
    result = int8_linear(A, CB, SCB, bias=bias, threshold=threshold, state=state)
    if out is None:
        return result
    if is_torch(out):
        out.copy_(result)
    else:
        np.copyto(out, result)
    return out


def quantize_int8_rows(W):
    """Row-wise int8 quantization of a float weight [N, K] as LLM.int8() stores it:
    (CB int8 [N, K], SCB float32 [N]) from the weight rounded to float16 (docs/FORMATS.md §5.5, 6.1)."""
    if is_torch(W):
        import torch

        W16 = W.detach().to(torch.float16)
    else:
        W16 = np.asarray(W, dtype=np.float16)
    CB, SCB, _ = int8_vectorwise_quant(W16)
    return CB, SCB


def int8_linear(A, CB, SCB, bias=None, threshold=0.0, state=None):
    """The LLM.int8() layer product (docs/FORMATS.md §6.5): A[..., K] @ (CB * SCB / 127)^T (+ bias).

    A is quantized row-wise (int8_vectorwise_quant with `threshold`); the int8 product is
    dequantized with int8_mm_dequant into A's dtype with the bias fused, in one library call
    (bnb_int8_linear, bit for bit those three). With threshold > 0 the
    outlier columns of A are added back in A's dtype against CB's columns times SCB / 127, all in
    one library call (bnb_int8_linear_outliers, docs/OPS.md §5.10: a fixed summation order, no
    host synchronisation, output sizes that do not depend on the data). `state`, when given,
    receives the outlier columns in state.idx (read from the device when first asked for)."""
    K = A.shape[-1]
    N = CB.shape[0]
    lead = tuple(A.shape[:-1])
    A2 = A.reshape(-1, K) if A.ndim != 2 else A
    torch_in = is_torch(A)
    if bias is not None and bias.dtype != A.dtype:
        bias = bias.to(A.dtype) if torch_in else np.asarray(bias).astype(A.dtype)
    if A2.shape[0] > 0 and N > 0 and K > 0:
        if threshold > 0:
            out, columns, count = _int8_linear_call(A2, CB, SCB, bias, float(threshold))
            if state is not None:
                state._set_pending_idx(columns, count)
        else:
            out = _int8_linear_call(A2, CB, SCB, bias, 0.0)
            if state is not None:
                state.idx = None
        return out.reshape(lead + (N,)) if len(lead) != 1 else out
    CA, SCA, cols = int8_vectorwise_quant(A2, threshold)
    if state is not None:
        state.idx = cols
    C = int8_linear_matmul(CA, CB)
    out = int8_mm_dequant(C, SCA, SCB, bias=bias, dtype=A.dtype)
    return out.reshape(lead + (N,)) if len(lead) != 1 else out


def _int8_linear_call(A, CB, SCB, bias, threshold):
    """The layer in one library call on A [M, K] (M, N, K > 0): threshold 0, bnb_int8_linear: out [M, N]
    in A's dtype; threshold > 0, bnb_int8_linear_outliers: (out, columns [K], count [1])."""
    M, K = (int(d) for d in A.shape)
    N = int(CB.shape[0])
    if is_torch(A):
        if _torch_ops().tracing():
            _check_torch_inputs(A, B=CB, SCB=SCB, bias=bias)
        if threshold > 0:
            return _torch_ops().int8_linear_outliers(A, CB, SCB, bias, threshold)
        return _torch_ops().int8_linear(A, CB, SCB, bias)
    A, dt = _host(A, "A")
    args = (_arrays.NUMPY, A, dt, M, N, K, _host_opt(CB, "CB", _lib.I8), _host_opt(SCB, "SCB", _lib.F32),
            _host_opt(bias, "bias", dt))
    if threshold > 0:
        count = np.zeros(1, np.int64)
        out, columns = _ops.int8_linear_outliers(*args, threshold, count)
        return out, columns, count
    return _ops.int8_linear(*args)


# ---------------------------------------------------------------- the 4-bit linear layer's state dict
def linear4bit_state_dict(weight, quant_state, bias=None, prefix=""):
    """The keys bitsandbytes' Linear4bit writes (docs/FORMATS.md §5.2), in its order: weight, bias, then
    weight.<packed quant_state items>."""
    sd = {prefix + "weight": weight}
    if bias is not None:
        sd[prefix + "bias"] = bias
    for key, value in quant_state.as_dict(packed=True).items():
        sd[prefix + "weight." + key] = value
    return sd


def load_linear4bit_state_dict(state_dict, prefix="", device=None):
    """Reads a Linear4bit state dict: returns (packed weight, QuantState, bias or None).
    A missing, mistyped or wrongly sized tensor is a ValueError naming its key."""
    head = prefix + "weight."
    qs_items = {k: v for k, v in state_dict.items() if k.startswith(head)}
    quant_state = QuantState.from_dict(qs_items, device=device)
    if quant_state.quant_type is None:
        raise ValueError(f"{head}*: the quant_state items are an 8-bit state, a Linear4bit weight needs nf4 or fp4")
    n = math.prod(quant_state.shape)
    weight = _checked_weight(state_dict, prefix + "weight", (n + 1) // 2, quant_state.shape)
    bias = state_dict.get(prefix + "bias")
    if bias is not None:
        if not _is_array(bias):
            raise ValueError(f"{prefix}bias must be a numpy array or a torch tensor, not {type(bias).__name__}")
        if _dtype_label(bias.dtype) not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"{prefix}bias has dtype {_dtype_label(bias.dtype)}, not float32, float16 or bfloat16")
        outputs = quant_state.shape[0] if len(quant_state.shape) == 2 else None
        if outputs is not None and _numel(bias) != outputs:
            raise ValueError(f"{prefix}bias holds {_numel(bias)} elements, but a {list(quant_state.shape)} weight "
                             f"needs {outputs} (one per output)")
    if device is not None and is_torch(weight):
        weight = weight.to(device)
        bias = bias.to(device) if bias is not None else None
    return weight, quant_state, bias


def _checked_weight(state_dict, key, nbytes, shape):
    """The packed weight under `key`: an array of any dtype (bitsandbytes' quant_storage) whose
    elements hold exactly the `nbytes` bytes of a 4-bit tensor of `shape`, rounded up to whole
    elements."""
    if key not in state_dict:
        raise ValueError(f"{key} is missing: the quant_state items come without their packed weight")
    weight = state_dict[key]
    if not _is_array(weight):
        raise ValueError(f"{key} must be a numpy array or a torch tensor, not {type(weight).__name__}")
    itemsize = weight.element_size() if is_torch(weight) else weight.itemsize
    need = -(-nbytes // itemsize)
    if _numel(weight) != need:
        raise ValueError(f"{key} holds {_numel(weight)} {_dtype_label(weight.dtype)} elements, but a 4-bit "
                         f"{list(shape)} weight packed into {_dtype_label(weight.dtype)} needs {need}")
    return weight
