"""Quantized linear layers for torch models, named and serialized like bitsandbytes.nn.

    import torch, bnb
    layer = bnb.nn.Linear4bit(4096, 4096, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.load_state_dict(float_layer.state_dict())   # float weights: still float here
    layer = layer.to("cuda")                           # quantized now (4-bit, on the GPU)
    y = layer(x)

When a weight is quantized (one rule for both layers and both parameter types):
  * moving it with `.to(device)`, `.cuda()` or `.cpu()` (on the parameter or on any module that
    holds it) quantizes a floating-point weight on that device — also when it is already there;
    `.to(dtype)` alone only changes the float weight's dtype;
  * otherwise the first forward quantizes it on the input's device (eager mode only: under
    torch.compile the weight must already be quantized, and a clear error says so);
  * loading a quantized state dict (bitsandbytes' key layout) gives a quantized weight at once.
A quantized parameter moved to another device moves in place (data and quantization state) and
`.to()` returns the same object, so modules keep their parameter objects.

Training (QLoRA, LoRA on LLM.int8()): the quantized weights are frozen (requires_grad=False);
gradients reach the input and the bias through the dequantized weight (gemm_4bit's autograd
formula, _torch_ops.Int8Linear). `Linear8bitLt(has_fp16_weights=True)` keeps a trainable float
weight that is quantized on every forward and gets its own gradient.

This module imports torch; `import bnb` does not (bnb.nn is loaded on first access).
"""

import copy
import math
import sys

import torch

from . import _arrays, _lib, _ops, _torch_ops
from . import functional as F

__all__ = ["Int8Params", "Linear4bit", "Linear8bitLt", "LinearFP4", "LinearNF4", "Params4bit"]


def _parse_to(args, kwargs):
    """(device, dtype, non_blocking) of a Tensor.to(...) call; device None when not given."""
    device, dtype, non_blocking, _fmt = torch._C._nn._parse_to(*args, **kwargs)
    return device, dtype, non_blocking


def _cuda_device(device):
    if device is None:
        return torch.device("cuda", torch.cuda.current_device())
    if isinstance(device, int):
        return torch.device("cuda", device)
    return torch.device(device)


class _QuantizedParameter(torch.nn.Parameter):
    """Shared device-move behaviour of Params4bit and Int8Params (see the module docstring)."""

    def _is_quantized(self):
        raise NotImplementedError

    def _quantize(self, device):
        raise NotImplementedError

    def _move_quantized(self, device, non_blocking):
        raise NotImplementedError

    def _rewrap(self, data):
        raise NotImplementedError

    def to(self, *args, **kwargs):
        device, dtype, non_blocking = _parse_to(args, kwargs)
        if self._is_quantized():
            if device is not None:
                self._move_quantized(device, non_blocking)
            return self  # a dtype does not apply to quantized codes
        if device is not None and device.type != "meta":
            if dtype is not None and self.is_floating_point():
                self.data = self.data.to(dtype)  # quantize from the requested dtype
            return self._quantize(device)
        return self._rewrap(super().to(*args, **kwargs))

    def cuda(self, device=None, non_blocking=False):
        return self.to(device=_cuda_device(device), non_blocking=non_blocking)

    def cpu(self):
        return self.to(device="cpu")

    def __reduce_ex__(self, proto):
        # torch.nn.Parameter pickles as a plain Parameter; keep the type and the attributes
        return _rebuild_quantized_parameter, (type(self), self.data, self.requires_grad, dict(self.__dict__))


def _rebuild_quantized_parameter(cls, data, requires_grad, attrs):
    param = torch.Tensor._make_subclass(cls, data, requires_grad)
    param.__dict__.update(attrs)
    return param


# ---------------------------------------------------------------- 4-bit
class Params4bit(_QuantizedParameter):
    """A 4-bit (NF4/FP4) weight: float until quantized, then the packed codes
    [(N*K+1)//2, 1] (viewed as `quant_storage`) with a QuantState in `quant_state`.

    The attributes (`__dict__`) are exactly bitsandbytes': blocksize, compress_statistics,
    quant_type, quant_state, quant_storage, bnb_quantized, module (the Linear4bit holding it, or
    None). Callers rebuild a parameter from another one's `__dict__`
    (`Params4bit(data, requires_grad=False, **old.__dict__)`, as transformers and peft do); other
    keyword arguments are accepted and ignored. blocksize=None means 64."""

    def __new__(cls, data=None, requires_grad=False, quant_state=None, blocksize=None, compress_statistics=True,
                quant_type="fp4", quant_storage=torch.uint8, module=None, bnb_quantized=False, **kwargs):
        if data is None:
            data = torch.empty(0)
        self = torch.Tensor._make_subclass(cls, data, requires_grad)
        self.blocksize = 64 if blocksize is None else blocksize
        self.compress_statistics = compress_statistics
        self.quant_type = quant_type
        self.quant_state = quant_state
        self.quant_storage = quant_storage
        self.bnb_quantized = bnb_quantized
        self.module = module
        return self

    @classmethod
    def from_prequantized(cls, data, quantized_stats, requires_grad=False, device="cuda", module=None, **kwargs):
        """A quantized parameter from its packed codes and the `weight.`-prefixed items of a
        Linear4bit state dict (absmax, quant_map, nested_*, quant_state.bitsandbytes__<type>; with
        or without the prefix), on `device`. The storage dtype is the packed tensor's. A
        truncated or inconsistent state raises ValueError."""
        state = _read_quant_state(data, quantized_stats, device, cls._state_type)
        if module is not None:  # as bitsandbytes: the module names the state before the parameter is attached
            module.quant_state = state
        return cls(data.to(device), requires_grad, state, blocksize=state.blocksize, compress_statistics=state.nested,
                   quant_type=state.quant_type, quant_storage=data.dtype, module=module, bnb_quantized=True)

    def _is_quantized(self):
        return self.bnb_quantized

    def _config(self):
        return dict(blocksize=self.blocksize, compress_statistics=self.compress_statistics,
                    quant_type=self.quant_type, quant_storage=self.quant_storage)

    def _rewrap(self, data):
        return type(self)(data, self.requires_grad, self.quant_state, bnb_quantized=self.bnb_quantized,
                          module=self.module, **self._config())

    def _quantize(self, device):
        w = self.data.contiguous().to(device)
        if not w.is_floating_point():
            raise TypeError(f"Params4bit: cannot quantize a {w.dtype} weight (float32, float16 or bfloat16)")
        self.data, self.quant_state = self._quantize_4bit(w, self.blocksize, self.compress_statistics, self.quant_type,
                                                          self.quant_storage)
        self.bnb_quantized = True
        if self.module is not None:
            self.module.quant_state = self.quant_state
        return self

    # The QuantState type this parameter holds, and the quantizer that makes it: bnb.functional's. A
    # subclass (the bitsandbytes compatibility layer's) may name others.
    _state_type = F.QuantState

    @staticmethod
    def _quantize_4bit(w, blocksize, compress_statistics, quant_type, quant_storage):
        """(packed codes viewed as quant_storage, QuantState) of the float weight w."""
        packed, state = F.quantize_4bit(w, blocksize=blocksize, compress_statistics=compress_statistics,
                                        quant_type=quant_type)
        return _to_storage(packed, quant_storage), state

    def _move_quantized(self, device, non_blocking):
        self.data = self.data.to(device, non_blocking=non_blocking)
        if self.quant_state is not None:
            self.quant_state.to(device)

    def packed_uint8(self):
        """The packed codes as a uint8 tensor (a view; quant_storage may be another dtype)."""
        data = self.data
        return data if data.dtype == torch.uint8 else data.reshape(-1).view(torch.uint8).reshape(-1, 1)

    def __deepcopy__(self, memo):
        # the module: its copy when the module itself is being copied, else the same module
        module = memo.get(id(self.module), self.module)
        new = type(self)(self.data.clone(), self.requires_grad, copy.deepcopy(self.quant_state, memo),
                         bnb_quantized=self.bnb_quantized, module=module, **self._config())
        memo[id(self)] = new
        return new

    def __copy__(self):
        return self._rewrap(self.data)

    def __repr__(self):
        if not self.bnb_quantized:
            return "Params4bit (not quantized yet) containing:\n" + super().__repr__()
        return f"Params4bit({self.quant_state!r}, storage {self.dtype} {tuple(self.shape)} on {self.device})"


def _quant_state_proxy(name, read, nested):
    """A read-only attribute of Params4bit that reads its QuantState (for code, such as FSDP's state-dict
    traversal, that resolves `weight.absmax`-style names on the parameter)."""

    def get(self):
        qs = self.__dict__.get("quant_state")
        if qs is None or (nested and qs.state2 is None):
            raise AttributeError(f"{type(self).__name__} has no {name!r} (not quantized{', or not nested' * nested})")
        return read(qs)
    return property(get, doc=f"quant_state's {name} (AttributeError when there is none)")


for _name, _read, _nested in [
        ("absmax", lambda qs: qs.absmax, False), ("code", lambda qs: qs.code, False),
        ("quant_map", lambda qs: qs.code, False), ("offset", lambda qs: qs.offset, False),
        ("state2", lambda qs: qs.state2, False), ("nested_offset", lambda qs: qs.offset, False),
        ("nested_absmax", lambda qs: qs.state2.absmax, True),
        ("nested_blocksize", lambda qs: qs.state2.blocksize, True),
        ("nested_quant_map", lambda qs: qs.state2.code, True), ("nested_dtype", lambda qs: qs.state2.dtype, True)]:
    setattr(Params4bit, _name, _quant_state_proxy(_name, _read, _nested))


def _read_quant_state(data, items, device, state_type):
    """state_type.from_dict of a 4-bit weight's serialized items, checked against the packed data."""
    keys = sorted(items)
    try:
        state = state_type.from_dict(dict(items), device=device)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"4-bit weight state {keys}: corrupt or incomplete ({type(e).__name__}: {e})") from e
    shape, blocksize = state.shape, state.blocksize
    if state.quant_type not in _QUANT_TYPES or not isinstance(blocksize, int) or blocksize <= 0 or not shape:
        raise ValueError(f"4-bit weight state {keys}: quant_type {state.quant_type!r}, blocksize {blocksize!r}, "
                         f"shape {shape} do not describe a 4-bit weight")
    n = math.prod(shape)
    nbytes = data.numel() * data.element_size()
    if nbytes != (n + 1) // 2:
        raise ValueError(f"4-bit weight state {keys}: the packed weight holds {nbytes} bytes, its shape {tuple(shape)} "
                         f"needs {(n + 1) // 2}")
    blocks = -(-n // blocksize)
    if state.absmax.numel() != blocks:
        raise ValueError(f"4-bit weight state {keys}: absmax holds {state.absmax.numel()} scales, {tuple(shape)} "
                         f"in blocks of {blocksize} needs {blocks}")
    return state


def _to_storage(packed, storage):
    if storage in (None, torch.uint8):
        return packed
    size = torch.empty((), dtype=storage).element_size()
    if packed.numel() % size:
        raise ValueError(f"quant_storage {storage}: {packed.numel()} packed bytes are not a multiple of {size}")
    return packed.reshape(-1).view(storage).reshape(-1, 1)


_QUANT_TYPES = ("fp4", "nf4")


class _FastLinear(torch.nn.Linear):
    """The eager fast path shared by the quantized layers (issues 7 and 16): a batch-1 product on
    a GPU takes a few microseconds, so the Python around the library call decides the layer's
    speed. After a forward through the general path (`_forward`), the library call's fixed
    arguments are kept in `_fast` (a closure made by `_make_fast`); later calls that pass its
    checks make that one call directly. The closure is called as run(d, x), d being the layer's
    `__dict__`, and returns the output, None (this input does not fit: the general path runs) or
    _STALE (the layer changed: it is rebuilt). Besides the weight and the bias it depends on the
    attributes named in `_fast_keys`: assigning one drops the closure (`__setattr__`), so the
    calls do not compare them.

    `layer(x)` reaches the closure without torch's Module._call_impl and forward (two more Python
    frames with their own checks, about 1 us a call) when _call_impl would only call forward:
    nothing hooked (the module's or the global hooks), no forward replaced on the instance
    (accelerate's hooks do that), not compiling, not tracing, torch's __call__ not patched
    (torch.fx does), and a forward known to do nothing else while the closure's checks pass
    (`_CALL_SHORTCUT_FORWARDS`: this class's, and any a subclass registers with
    `allow_call_shortcut`). Otherwise _call_impl runs. (A profiler's module hierarchy does not
    show these calls; their library call and allocation are there.)

    The way in is torch's own: Module.__call__ calls an instance's `_compiled_call_impl` when it
    is set (module.compile() sets it), and the first forward that makes the closure sets it to
    `_call_shortcut` unless module.compile() did. The class keeps torch's __call__, so
    torch.compile sees a plain module and traces its forward directly: overriding __call__ made
    dynamo trace that override and torch's __call__ and _call_impl behind it, about seven more
    guards per layer (60.7 against 53.6: hook dictionaries, instance-dict lookups) that every
    compiled call evaluates, for every layer of the model (bench/python/compile_guards.py)."""

    _fast = None
    _fast_keys = ()

    def _call_shortcut(self, *args, **kwargs):
        if not kwargs and len(args) == 1 and not _is_compiling():
            d = self.__dict__
            run = d.get("_fast")
            if (run is not None and "forward" not in d and type(self).forward in _CALL_SHORTCUT_FORWARDS
                    and not (d["_forward_pre_hooks"] or d["_forward_hooks"] or d["_backward_pre_hooks"]
                             or d["_backward_hooks"] or _global_hooks["_global_forward_pre_hooks"]
                             or _global_hooks["_global_forward_hooks"] or _global_hooks["_global_backward_pre_hooks"]
                             or _global_hooks["_global_backward_hooks"])
                    and _Module.__call__ is _module_call and not _is_tracing()):
                out = run(d, args[0])
                if out is not None and out is not _STALE:
                    return out
        return self._call_impl(*args, **kwargs)

    def __setattr__(self, name, value):
        if name in self._fast_keys:  # the fast path was made for the old value
            self.__dict__.pop("_fast", None)
        super().__setattr__(name, value)

    def forward(self, x):
        # (not under jit.trace either: a trace records no library call)
        if type(x) is _Tensor and not _is_compiling() and not _is_tracing():
            run = self._fast
            if run is not None:
                out = run(self.__dict__, x)
                if out is not _STALE:
                    if out is not None:
                        return out
                    return self._forward(x)  # this input does not fit the shortcut
            out = self._forward(x)
            self._fast = self._make_fast(x)
            d = self.__dict__
            if d.get("_compiled_call_impl") is None:  # (copies and pickles leave it out: Module.__getstate__)
                d["_compiled_call_impl"] = self._call_shortcut
            return out
        return self._forward(x)

    def _apply(self, fn, recurse=True):
        self._fast = None  # a device move replaces the tensors; do not keep the old ones alive
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_fast", None)  # ctypes objects: neither picklable nor meaningful in a copy
        return state


_Module = torch.nn.Module
_module_call = torch.nn.Module.__call__  # torch's own; anything else (a patch) is always called
_global_hooks = vars(sys.modules[torch.nn.Module.__module__])  # where torch keeps the global module hooks
_is_tracing = torch._C._is_tracing
_CALL_SHORTCUT_FORWARDS = {_FastLinear.forward}


def allow_call_shortcut(cls):
    """Lets `layer(x)` of a _FastLinear subclass that defines its own forward reach the eager fast
    path without torch's Module.__call__ (see _FastLinear). Only for a forward that, whenever the
    fast path's checks pass (the same weight, bias and `_fast_keys` values, an input that fits),
    does nothing but return _FastLinear.forward's result."""
    _CALL_SHORTCUT_FORWARDS.add(cls.forward)
    return cls


class Linear4bit(_FastLinear):
    """y = x @ dequantize(W)^T + b with W held in 4 bits (NF4 or FP4, blocksize 64 by default,
    double-quantized statistics when compress_statistics).

    compute_dtype: dtype the product runs in (the input is cast to it and the result cast back
    to the input's dtype); None = the input's own dtype. quant_storage: dtype the packed bytes
    are viewed as (uint8 by default). The weight is quantized on a device move or the first
    forward (module docstring). state_dict() writes bitsandbytes' keys (docs/FORMATS.md §5.2): `weight`,
    `bias`, `weight.absmax`, `weight.quant_map`, `weight.nested_absmax`, `weight.nested_quant_map`,
    `weight.quant_state.bitsandbytes__<nf4|fp4>`; load_state_dict() reads them (or a float weight)."""

    def __init__(self, input_features, output_features, bias=True, compute_dtype=None, compress_statistics=True,
                 quant_type="fp4", quant_storage=torch.uint8, device=None, blocksize=64):
        if quant_type not in _QUANT_TYPES:
            raise ValueError(f"quant_type {quant_type!r} is not supported: use 'nf4' or 'fp4'")
        super().__init__(input_features, output_features, bias, device=device)
        self.weight = self._param_type(self.weight.data, requires_grad=False, blocksize=blocksize,
                                       compress_statistics=compress_statistics, quant_type=quant_type,
                                       quant_storage=quant_storage, module=self)
        self.compute_dtype = compute_dtype
        self.compute_type_is_set = compute_dtype is not None
        self.quant_storage = quant_storage

    @property
    def quant_state(self):
        """The weight's QuantState (None before quantization). Assigning one (bitsandbytes'
        from_prequantized does, before the parameter is attached; quantizing or loading the
        weight does too) keeps it on the layer, for a weight that is not a Params4bit: FSDP's
        parameter, which the forward wraps with it (_compute_weight)."""
        w = self._parameters.get("weight")
        qs = w.quant_state if isinstance(w, Params4bit) else None
        return qs if qs is not None else self.__dict__.get("_quant_state")

    @quant_state.setter
    def quant_state(self, value):
        self.__dict__["_quant_state"] = value

    def extra_repr(self):
        w = self.weight
        if not isinstance(w, Params4bit):  # FSDP's parameter: the layer's state describes it
            qs = self.quant_state
            return (f"{super().extra_repr()}, quant_type={qs and qs.quant_type}, blocksize={qs and qs.blocksize}, "
                    f"compress_statistics={qs and qs.nested}, compute_dtype={self.compute_dtype}, "
                    f"quantized={qs is not None}, {type(w).__name__} weight")
        return (f"{super().extra_repr()}, quant_type={w.quant_type}, blocksize={w.blocksize}, "
                f"compress_statistics={w.compress_statistics}, compute_dtype={self.compute_dtype}, "
                f"quantized={w.bnb_quantized}")

    _fast_keys = ("compute_dtype",)

    def _make_fast(self, x):
        return _fast_gemm_4bit(self, x)

    def _forward(self, x):
        w = self._compute_weight()
        if not w.bnb_quantized:
            _quantize_on_first_forward(self, x)
        in_dtype = x.dtype
        if self.compute_dtype is not None and in_dtype != self.compute_dtype:
            x = x.to(self.compute_dtype)
        bias = self.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        if x.dtype not in _FAST_DTYPES:  # float64: the dequantized weight, multiplied by torch
            if not x.is_floating_point():
                raise TypeError(f"{type(self).__name__}: the input must be floating point (float32, float16, "
                                f"bfloat16 or float64), not {x.dtype}")
            W = F.dequantize_4bit(w.packed_uint8(), w.quant_state, dtype=torch.float32).to(x.dtype)
            out = torch.nn.functional.linear(x, W, bias)
            return out if out.dtype == in_dtype else out.to(in_dtype)
        out = F.matmul_4bit(x, w.data if w.dtype == torch.uint8 else w.packed_uint8(), w.quant_state, bias=bias)
        return out if out.dtype == in_dtype else out.to(in_dtype)

    def _compute_weight(self):
        """The Params4bit the forward multiplies by. Under FSDP the layer's `weight` is FSDP's own
        parameter: a DTensor shard between forwards, and a plain parameter holding the all-gathered
        packed codes (viewed as quant_storage) during one. The quantization state is not sharded: it
        stays on this layer (`quant_state`), and the packed codes are wrapped with it here, for this
        call only (FSDP keeps owning the attribute; the wrapper shares its storage, so what autograd
        saves is refilled by FSDP's all-gather before the backward)."""
        w = self.weight
        if isinstance(w, self._param_type):
            if w.quant_state is None and w.bnb_quantized:  # the state dropped from the parameter
                w.quant_state = self._restorable_quant_state(w)
            return w
        qs = self.quant_state
        if _arrays.is_dtensor(w):
            raise RuntimeError(f"{type(self).__name__}: the weight is a sharded DTensor; FSDP all-gathers it before "
                               "the forward (call the module FSDP wrapped, not this layer alone)")
        if qs is None or w.dim() != 2 or w.shape[1] != 1:
            raise RuntimeError(f"{type(self).__name__}: the weight is a plain {type(w).__name__} {tuple(w.shape)} "
                               "without a quantization state; load a state dict or move the layer with .to(device)")
        return self._param_type(w.detach(), False, qs, blocksize=qs.blocksize, compress_statistics=qs.nested,
                                quant_type=qs.quant_type, quant_storage=w.dtype, module=self, bnb_quantized=True)

    def _restorable_quant_state(self, w):
        qs = self.__dict__.get("_quant_state")
        if qs is None:
            raise RuntimeError(f"{type(self).__name__}: the quantized weight has lost its quantization state")
        return qs

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        w = self.weight
        # FSDP's parameter (a DTensor shard of the packed codes) has no Params4bit attributes: the
        # layer's quantization state says it is quantized
        qs = w.quant_state if isinstance(w, Params4bit) and w.bnb_quantized else self.quant_state
        if qs is None:  # still float: a plain Linear's keys
            return super()._save_to_state_dict(destination, prefix, keep_vars)
        weight = w if keep_vars else w.detach()
        bias = None if self.bias is None else (self.bias if keep_vars else self.bias.detach())
        items = F.linear4bit_state_dict(weight, qs, bias=bias, prefix=prefix)
        if not keep_vars:
            items = {k: v.detach() for k, v in items.items()}
        if not isinstance(w, Params4bit):
            _answer_key_paths(w, qs, items, prefix + "weight.")
        destination.update(items)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        self._fast = None
        wkey = prefix + "weight"
        qs_items = {k: v for k, v in state_dict.items() if k.startswith(wkey + ".")}
        weight = state_dict.get(wkey)
        device = _load_device(self.weight, weight)
        if weight is None:
            missing_keys.append(wkey)
        elif qs_items and self._loads_in_place(weight):
            self._load_in_place(wkey, weight, qs_items, device, error_msgs)
        elif qs_items:
            try:
                param = self._param_type.from_prequantized(weight.detach(), qs_items, device=device, module=self)
            except ValueError as e:
                error_msgs.append(f"{wkey}: cannot read the 4-bit quantization state: {e}")
            else:
                state = param.quant_state
                if tuple(state.shape) != (self.out_features, self.in_features):
                    error_msgs.append(f"{wkey}: quantized shape {tuple(state.shape)} does not match the layer's "
                                      f"{(self.out_features, self.in_features)}")
                else:
                    self.weight = param
        elif _check_float_weight(self, wkey, weight, error_msgs):
            was_quantized = self.weight.bnb_quantized
            self.weight = self.weight._rewrap(weight.detach().to(device, copy=True))
            self.weight.bnb_quantized, self.weight.quant_state = False, None
            if was_quantized:
                self.weight._quantize(device)
        _load_bias(self, state_dict, prefix, missing_keys, error_msgs)
        _unexpected(self, state_dict, prefix, strict, unexpected_keys, ("weight", "bias"))

    def _loads_in_place(self, weight):
        """Whether packed codes are copied into the layer's weight rather than replacing it: always for
        FSDP's parameter (not a Params4bit: FSDP2's), and for a quantized Params4bit with the same
        storage dtype and shape, as torch copies into a plain module's parameters. FSDP1 with
        use_orig_params keeps the original Params4bit objects as views of its flat parameter and
        writes back only what changed in place: a new object would be dropped at its next reshard."""
        current = self.weight
        if not isinstance(current, Params4bit):
            return True
        return (current.bnb_quantized and current.device.type != "meta" and current.dtype == weight.dtype
                and tuple(current.shape) == tuple(weight.shape))

    def _load_in_place(self, wkey, weight, qs_items, device, error_msgs):
        """Copies the packed codes into the current weight (a DTensor shard takes its own part) and
        puts the state read from the items on the layer (and on the weight when it is a Params4bit)."""
        current = self.weight
        try:
            state = _read_quant_state(weight, qs_items, device, self._param_type._state_type)
        except ValueError as e:
            error_msgs.append(f"{wkey}: cannot read the 4-bit quantization state: {e}")
            return
        if tuple(state.shape) != (self.out_features, self.in_features):
            error_msgs.append(f"{wkey}: quantized shape {tuple(state.shape)} does not match the layer's "
                              f"{(self.out_features, self.in_features)}")
        elif weight.dtype != current.dtype or tuple(weight.shape) != tuple(current.shape):
            error_msgs.append(f"{wkey}: packed weight {weight.dtype} {tuple(weight.shape)} does not match the "
                              f"sharded parameter's {current.dtype} {tuple(current.shape)} (quant_storage)")
        else:
            with torch.no_grad():
                current.copy_(weight)
            if isinstance(current, Params4bit):
                current.quant_state, current.blocksize = state, state.blocksize
                current.compress_statistics, current.quant_type = state.nested, state.quant_type
            self.quant_state = state


Linear4bit._param_type = Params4bit


def _answer_key_paths(w, qs, items, wprefix):
    """torch.distributed.checkpoint's get_state_dict / get_model_state_dict resolve every state-dict
    key as an attribute path from the model (`weight.absmax`, `weight.quant_state.bitsandbytes__nf4`).
    A Params4bit answers them (its quant_state proxies); FSDP's parameter gets them as attributes of
    its own, set at each state_dict(). The layer never reads them (quant_state reads a Params4bit's
    or the layer's own)."""
    for key, value in items.items():
        if key.startswith(wprefix):
            name = key[len(wprefix):].split(".", 1)[0]
            setattr(w, name, qs if name == "quant_state" else value)


_STALE = object()  # what a fast-path closure returns once the layer's tensors have changed
_Tensor = torch.Tensor
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_data_ptr = torch._C.TensorBase.data_ptr
_new_empty = torch._C.TensorBase.new_empty
_raise_for = _lib.raise_for


def _fast_gemm_4bit(layer, x):
    """The eager fast path of one Linear4bit for inputs like `x` (its dtype and device), or None
    when the layer does not fit it. Made right after a forward through the general path, which
    has checked the inputs and quantized the weight.

    The closure run(d, x) (d: the layer's __dict__) keeps the library call's fixed arguments
    (context, dtype, N, K, weight pointer, scales struct, quant type, blocksize, bias pointer) and
    the tensors behind them, and per call checks, cheapest first, that the layer still holds the
    same weight (object and data pointer), quantization state (object and absmax) and bias
    (object and data pointer); if not it returns _STALE (the caller rebuilds it; assigning
    compute_dtype, one of `_fast_keys`, drops it). Then that this input fits: a plain tensor,
    contiguous, the cached dtype and device, K columns, and no autograd to record; if not it
    returns None (the general path runs). Otherwise it allocates the output and makes the call.
    The library call is the one the general path makes (same function and arguments), so the
    results are bit-identical."""
    params = layer._parameters
    w, b = params["weight"], params["bias"]
    if not isinstance(w, Params4bit):  # FSDP's parameter: the general path (_compute_weight)
        return None
    qs = w.quant_state
    cd = layer.compute_dtype
    if not w.bnb_quantized or qs is None or x.dtype not in _FAST_DTYPES or \
            (cd is not None and cd is not x.dtype) or qs.shape is None or len(qs.shape) != 2 or \
            qs.quant_type not in _QUANT_TYPES or not w.is_contiguous():
        return None
    N, K = qs.shape
    if x.dim() == 0 or x.shape[-1] != K or not qs.blocksize or K % qs.blocksize:
        return None
    if b is not None and (b.dtype is not x.dtype or tuple(b.shape) != (N,)):
        return None
    B = w.data if w.dtype == torch.uint8 else w.packed_uint8()
    amax, absmax2, code2, offset, blocksize2 = F._scales_args(qs, None)
    plan = _torch_ops.gemm_4bit_plan(x, B, amax, absmax2, code2, offset, blocksize2, qs.blocksize,
                                     qs.quant_type, N, None if b is None else b.data)
    if plan is None:
        return None
    # The library's plan holds the fixed arguments, checked once: a call then passes five.
    N, K, stream_device = plan.N, plan.K, plan.stream_device
    plan_run, hp = _ops.gemm4_plan_run, plan.ptr
    w_ptr, b_ptr = _data_ptr(B), None if b is None else _data_ptr(b)
    dtype, device_id = x.dtype, x.get_device()
    raw_stream = None if stream_device is None else _arrays.raw_stream_function()
    data_ptr, raise_for, fast_rows = _data_ptr, _raise_for, _fast_rows

    def run(d, x):
        params = d["_parameters"]
        weight, bias = params.get("weight"), params.get("bias")
        if (weight is not w or bias is not b or weight.quant_state is not qs or qs.absmax is not amax
                or data_ptr(weight) != w_ptr or (bias is not None and data_ptr(bias) != b_ptr)):
            return _STALE
        rows = fast_rows(x, dtype, device_id, bias, K, N)
        if rows is None:
            return None
        M, x_ptr, out = rows
        st = plan_run(hp, M, x_ptr, data_ptr(out), None if raw_stream is None else raw_stream(stream_device))
        if st:
            raise_for(st, "bnb_gemm_4bit_plan_run")
        return out

    run.keep_alive = plan  # the library plan and the tensors its pointers refer to
    return run


def _fast_rows(x, dtype, device_id, bias, K, N):
    """For the layers' eager fast paths: (M, x's data pointer, output tensor [..., N]) when `x`
    fits the cached call (a plain tensor of the cached dtype and device, contiguous, K columns, at
    least one row, no autograd to record), else None. A meta tensor has the host's device index
    (-1) and no data: it does not fit (the general path names the device it does not support)."""
    if (type(x) is not _Tensor or x.dtype is not dtype or x.get_device() != device_id or not x.is_contiguous()
            or (_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)))):
        return None
    x_ptr = _data_ptr(x)
    if not x_ptr:
        return None
    # The sizes go to new_empty as separate arguments: torch parses a tuple (shape[:-1] + (N,))
    # about 2 us slower. Ranks 2 and 3 ([batch, 1, K] from generate()) unpack the shape directly.
    shape = x.shape
    rank = len(shape)
    if rank == 2:
        M, k = shape
        if k == K and M:
            return M, x_ptr, _new_empty(x, M, N)
    elif rank == 3:
        B, T, k = shape
        if k == K and B and T:
            return B * T, x_ptr, _new_empty(x, B, T, N)
    elif rank and shape[-1] == K:
        M = x.numel() // K
        if M:
            return M, x_ptr, _new_empty(x, *shape[:-1], N)
    return None  # no rows (the general path gives the empty result) or not K columns


_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class LinearNF4(Linear4bit):
    """Linear4bit with quant_type='nf4'."""

    def __init__(self, input_features, output_features, bias=True, compute_dtype=None, compress_statistics=True,
                 quant_storage=torch.uint8, device=None, blocksize=64):
        super().__init__(input_features, output_features, bias, compute_dtype, compress_statistics, "nf4",
                         quant_storage, device, blocksize)


class LinearFP4(Linear4bit):
    """Linear4bit with quant_type='fp4'."""

    def __init__(self, input_features, output_features, bias=True, compute_dtype=None, compress_statistics=True,
                 quant_storage=torch.uint8, device=None, blocksize=64):
        super().__init__(input_features, output_features, bias, compute_dtype, compress_statistics, "fp4",
                         quant_storage, device, blocksize)


# ---------------------------------------------------------------- LLM.int8()
class Int8Params(_QuantizedParameter):
    """An LLM.int8() weight: float until quantized, then the int8 row codes CB [N, K] (the
    parameter's data) with their row absmax SCB [N] (float32), from the weight rounded to fp16.

    has_fp16_weights=True: a float weight that is trained; it is never quantized in place (the
    layer quantizes it on every forward) and a device move only moves it.
    CB is the data itself once quantized (None before); a CB keyword (bitsandbytes' callers pass
    one from another parameter's `__dict__`) and other keywords are accepted and ignored."""

    def __new__(cls, data=None, requires_grad=False, has_fp16_weights=False, CB=None, SCB=None, **kwargs):
        if data is None:
            data = torch.empty(0)
        self = torch.Tensor._make_subclass(cls, data, requires_grad)
        self.has_fp16_weights = bool(has_fp16_weights)
        self.SCB = SCB
        return self

    @property
    def CB(self):
        return self.data if self.SCB is not None else None

    @CB.setter
    def CB(self, value):
        # bitsandbytes code clears or sets CB on the parameter; here CB is the data itself
        if value is not None and value is not self.data:
            self.data = value

    def _is_quantized(self):
        return self.SCB is not None

    def _rewrap(self, data):
        return type(self)(data, self.requires_grad, has_fp16_weights=self.has_fp16_weights, SCB=self.SCB)

    def _quantize(self, device):
        if self.has_fp16_weights:  # trained in float: a move only
            self.data = self.data.to(device)
            return self
        w = self.data.contiguous().to(device)
        if not w.is_floating_point():
            raise TypeError(f"Int8Params: cannot quantize a {w.dtype} weight without its SCB")
        CB, SCB = self._quantize_rows(w)
        self.data = CB
        self.SCB = SCB
        return self

    def _move_quantized(self, device, non_blocking):
        self.data = self.data.to(device, non_blocking=non_blocking)
        self.SCB = self.SCB.to(device, non_blocking=non_blocking)

    # float weight [N, K] -> (CB int8, SCB float32): bnb.functional's rule; a subclass may name another
    _quantize_rows = staticmethod(F.quantize_int8_rows)

    def __deepcopy__(self, memo):
        new = type(self)(self.data.clone(), self.requires_grad, has_fp16_weights=self.has_fp16_weights,
                         SCB=None if self.SCB is None else self.SCB.clone())
        memo[id(self)] = new
        return new

    def __copy__(self):
        return self._rewrap(self.data)


class Linear8bitLt(_FastLinear):
    """LLM.int8() linear layer: y = x @ (CB * SCB / 127)^T + b with the weight held as int8 rows.

    threshold > 0 enables the mixed-precision decomposition: input columns holding any
    |x| >= threshold are multiplied in the input's dtype (docs/FORMATS.md §6.5). The weight is quantized
    on a device move or the first forward (module docstring). state_dict() writes bitsandbytes'
    keys (docs/FORMATS.md §5.5): `weight` (int8 [N, K]), `bias`, `SCB` (float32 [N]), `weight_format`
    (uint8 0 = row-major). `index` is accepted for compatibility and unused.

    Gradients: the input and the bias get theirs through the dequantized weight (Int8Linear in
    _torch_ops). has_fp16_weights=True keeps a float weight that is trained: it is quantized
    again on every forward and gets the gradient grad_out^T @ x.
    `state` (a MatmulLtState) mirrors the quantized weight: state.CB, state.SCB are the
    weight's after a forward or a device move, state.idx the last call's outlier columns."""

    _state_type = F.MatmulLtState
    # The product (A, CB, SCB, bias, threshold, state) -> out; None = bnb.functional.int8_linear.
    # A subclass that names another also decides where the eager fast path applies (_make_fast).
    _int8_product = None

    def __init__(self, input_features, output_features, bias=True, has_fp16_weights=False, threshold=0.0,
                 index=None, device=None):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, not {threshold}")
        super().__init__(input_features, output_features, bias, device=device)
        self.state = self._state_type()
        self.state.threshold = float(threshold)
        self.state.has_fp16_weights = bool(has_fp16_weights)
        self.index = index
        self.weight = self._param_type(self.weight.data, requires_grad=bool(has_fp16_weights),
                                       has_fp16_weights=has_fp16_weights)

    def init_8bit_state(self):
        """Points state.CB / state.SCB at the quantized weight (bitsandbytes' name for this step)."""
        self.state.CB, self.state.SCB = self.weight.CB, self.weight.SCB

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        if self.state.CB is not None and getattr(self.weight, "SCB", None) is not None:
            self.init_8bit_state()  # the moved tensors, not the old ones
        return result

    def extra_repr(self):
        return (f"{super().extra_repr()}, threshold={self.state.threshold}, "
                f"quantized={self.weight.SCB is not None}")

    _fast_keys = ("state",)  # the eager fast path without outliers (threshold 0)

    def _make_fast(self, x):
        return _fast_int8_linear(self, x)

    def _forward(self, x):
        w = self.weight
        state = self.state
        bias = self.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        product = self._int8_product
        if getattr(w, "has_fp16_weights", False) and w.SCB is None:
            with torch.no_grad():  # the trained float weight, quantized for this forward
                CB, SCB = w._quantize_rows(w.detach())
            state.CB, state.SCB = CB, SCB
            return _torch_ops.Int8Linear.apply(x, w, CB, SCB, bias, state.threshold, state, product)
        if w.SCB is None:
            _quantize_on_first_forward(self, x)
        state.CB, state.SCB = w.data, w.SCB
        if _grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
            return _torch_ops.Int8Linear.apply(x, None, w.data, w.SCB, bias, state.threshold, state, product)
        if product is not None:
            return product(x, w.data, w.SCB, bias, state.threshold, state)
        return F.int8_linear(x, w.data, w.SCB, bias=bias, threshold=state.threshold, state=state)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        SCB = self.weight.SCB
        if SCB is not None:
            destination[prefix + "SCB"] = SCB if keep_vars else SCB.detach()
            destination[prefix + "weight_format"] = torch.tensor(0, dtype=torch.uint8)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        self._fast = None
        wkey, skey, fkey = prefix + "weight", prefix + "SCB", prefix + "weight_format"
        weight = state_dict.get(wkey)
        device = _load_device(self.weight, weight)
        if weight is None:
            missing_keys.append(wkey)
        elif weight.dtype == torch.int8:
            SCB = state_dict.get(skey)
            fmt = state_dict.get(fkey)
            shape = (self.out_features, self.in_features)
            if SCB is None:
                error_msgs.append(f"{skey}: missing; an int8 weight needs its row absmax SCB")
            elif fmt is not None and int(fmt.item() if isinstance(fmt, torch.Tensor) else fmt) != 0:
                error_msgs.append(f"{fkey}: layout {int(fmt)} is not supported (only 0 = row-major)")
            elif tuple(weight.shape) != shape or tuple(SCB.shape) != (self.out_features,):
                error_msgs.append(f"{wkey}: int8 weight {tuple(weight.shape)} / SCB {tuple(SCB.shape)} do not match "
                                  f"the layer's {shape}")
            else:
                self.weight = self._param_type(weight.detach().to(device, copy=True), False,
                                               SCB=SCB.detach().to(device, torch.float32, copy=True))
        elif _check_float_weight(self, wkey, weight, error_msgs):
            old = self.weight
            was_quantized = old.SCB is not None
            fp16 = getattr(old, "has_fp16_weights", False) and not was_quantized
            self.weight = self._param_type(weight.detach().to(device, copy=True), fp16 and old.requires_grad,
                                           has_fp16_weights=fp16)
            if was_quantized:
                self.weight._quantize(device)
        _load_bias(self, state_dict, prefix, missing_keys, error_msgs)
        _unexpected(self, state_dict, prefix, strict, unexpected_keys, ("weight", "bias", "SCB", "weight_format"))


Linear8bitLt._param_type = Int8Params


def _fast_int8_linear(layer, x):
    """The eager fast path of one Linear8bitLt for inputs like `x`, or None when it does not fit
    (it covers threshold 0: no outlier columns). Same contract as _fast_gemm_4bit: per call the
    closure returns _STALE when the weight (object, data pointer, SCB) or the bias (object, data
    pointer) changed (assigning another state object drops it: `_fast_keys`), None when this
    input or the threshold does not fit, else the output of the library call the general path makes
    (bnb_int8_linear), so bit-identical to it."""
    params = layer._parameters
    w, b = params["weight"], params["bias"]
    state = layer.state
    SCB = getattr(w, "SCB", None)
    if SCB is None or state.threshold != 0 or x.dtype not in _FAST_DTYPES or x.dim() == 0:
        return None
    plan = _torch_ops.int8_linear_plan(x, w.data, SCB, None if b is None else b.data)
    if plan is None:
        return None
    linear, ctx, code, N, K, cb_ptr, scb_ptr, b_ptr, stream_device, keep_alive = plan
    dtype, device_id = x.dtype, x.get_device()
    raw_stream = None if stream_device is None else _arrays.raw_stream_function()
    data_ptr, raise_for, fast_rows = _data_ptr, _raise_for, _fast_rows
    i8, i32, f32 = torch.int8, torch.int32, torch.float32

    def run(d, x):
        params = d["_parameters"]
        weight, bias = params.get("weight"), params.get("bias")
        if (weight is not w or bias is not b or weight.SCB is not SCB or data_ptr(weight) != cb_ptr
                or (bias is not None and data_ptr(bias) != b_ptr)):
            return _STALE
        rows = None if state.threshold != 0 else fast_rows(x, dtype, device_id, bias, K, N)
        if rows is None:
            return None
        M, x_ptr, out = rows
        q = x.new_empty(M, K, dtype=i8)
        row_stats = x.new_empty(M, dtype=f32)
        C = x.new_empty(M, N, dtype=i32)
        status = linear(ctx, code, M, N, K, x_ptr, 0.0, cb_ptr, scb_ptr, b_ptr, data_ptr(q), data_ptr(row_stats),
                        data_ptr(C), data_ptr(out), None if raw_stream is None else raw_stream(stream_device))
        if status:
            raise_for(status, "bnb_int8_linear")
        return out

    run.keep_alive = keep_alive
    return run


# ---------------------------------------------------------------- shared helpers
def _quantize_on_first_forward(module, x):
    if torch.compiler.is_compiling():
        raise RuntimeError(f"{type(module).__name__}: the weight is not quantized yet; quantize it before "
                           "torch.compile (move the module with .to(device) or run one eager forward)")
    if module.weight.device.type == "meta":
        raise RuntimeError(f"{type(module).__name__}: the weight is on the meta device; load a state dict first")
    with torch.no_grad():
        module.weight._quantize(x.device)


def _load_device(current, incoming):
    """Where loaded tensors go: the module's device, or the state dict's for a module on meta."""
    if current.device.type != "meta" or incoming is None:
        return current.device
    return incoming.device


def _check_float_weight(module, key, weight, error_msgs):
    shape = (module.out_features, module.in_features)
    if not weight.is_floating_point():
        error_msgs.append(f"{key}: a {weight.dtype} weight needs its quantization state")
        return False
    if tuple(weight.shape) != shape:
        error_msgs.append(f"{key}: shape {tuple(weight.shape)} does not match the layer's {shape}")
        return False
    return True


def _load_bias(module, state_dict, prefix, missing_keys, error_msgs):
    key = prefix + "bias"
    bias = state_dict.get(key)
    if module.bias is None:
        return
    if bias is None:
        missing_keys.append(key)
    elif tuple(bias.shape) != tuple(module.bias.shape):
        error_msgs.append(f"{key}: shape {tuple(bias.shape)} does not match the layer's {tuple(module.bias.shape)}")
    elif module.bias.device.type == "meta":
        module.bias = torch.nn.Parameter(bias.detach().clone(), requires_grad=module.bias.requires_grad)
    else:
        with torch.no_grad():
            module.bias.copy_(bias)


def _unexpected(module, state_dict, prefix, strict, unexpected_keys, known):
    if not strict:
        return
    for key in state_dict:
        if key.startswith(prefix) and key[len(prefix):].split(".", 1)[0] not in known:
            unexpected_keys.append(key)


# The eager fast path of the custom ops treats these parameter types as plain tensors.
_torch_ops.PLAIN_TENSOR_TYPES.update((Params4bit, Int8Params))
