"""The optimizer classes behind bnb.optim (imported on first use: this module needs torch).

Each class is a torch.optim.Optimizer. step() walks the parameters that have a gradient and
updates those of a group that share device, state width, dtype and step with one
bnb_optimizer_update_multi call (clipping, strided parameters: one bnb_optimizer_update call
each), on the parameters' device and, on a GPU, the current torch stream (the library context and
stream come from bnb/_arrays.py, as for every other op). The update rules, state layouts and
numerics are the library's: docs/OPTIMIZERS.md and docs/OPS.md §6.

State, per parameter, under bitsandbytes' key names so that state dicts move between the two:

    step              Python int, the number of updates so far (the C call gets step + 1)
    state1, state2    float32 (32-bit) or uint8 codes (8-bit), the parameter's shape;
                      AdEMAMix's state1 is (2, *shape): the fast EMA, then the slow one
    absmax1, absmax2  8-bit only: float32, one scale per 256 elements (AdEMAMix: (2, blocks))
    qmap1, qmap2      8-bit only: the 256-entry code tables (signed / unsigned dynamic)
    unorm_vec         float32[1], only when max_unorm > 0 (update-norm clipping)
    gnorm_vec         float32[100], only when percentile_clipping < 100

All state tensors live on the parameter's device. 2-state optimizers (Adam, AdamW, LAMB,
AdEMAMix) have state2; the others do not.
"""

import copy
import ctypes
import math
import warnings
from collections import defaultdict

import numpy as np
import torch

from .. import _arrays, _lib
from ._traits import TRAITS
from ._traits import ADAGRAD as _K_ADAGRAD, ADAM as _K_ADAM, ADEMAMIX as _K_ADEMAMIX, LAMB as _K_LAMB
from ._traits import LARS as _K_LARS, LION as _K_LION, MOMENTUM as _K_MOMENTUM, RMSPROP as _K_RMSPROP

_c = _lib.lib

_TWO_STATES = tuple(k for k, t in TRAITS.items() if t.states == 2)
_NO_CLIPPING = tuple(k for k, t in TRAITS.items() if not t.clipping)  # the library rejects max_unorm > 0
BLOCKSIZE = 256  # the 8-bit state's block (fixed by the library)
#: bitsandbytes' state_dict() moves each parameter's state tensors (state1, qmap1, absmax1, ...) into
#: a dict under this key (so that FSDP does not gather them); load_state_dict accepts both forms.
BITSANDBYTES_WRAPPED_STATE_KEY = "__bnb_optimizer_quant_state__"

_PARAM_DTYPES = {torch.float32: _lib.F32, torch.float16: _lib.F16, torch.bfloat16: _lib.BF16}

# ---------------------------------------------------------------- C structs, initialised once, then copied
_templates = {}


def _new_struct(cls, init):
    blob = _templates.get(cls)
    if blob is None:
        value = cls()
        _lib.check(getattr(_c, init)(ctypes.byref(value)), init)
        blob = _templates[cls] = bytes(value)
    return cls.from_buffer_copy(blob)


# ---------------------------------------------------------------- paged memory as torch tensors
class _PagedBlock:
    """One bnb_paged_alloc allocation; freed with bnb_paged_free when the last tensor over it goes."""

    __slots__ = ("ctx", "ptr", "nbytes")

    def __init__(self, ctx, nbytes):
        ptr = ctypes.c_void_p()
        _lib.check(_c.bnb_paged_alloc(ctx, nbytes, ctypes.byref(ptr)), "bnb_paged_alloc")
        self.ctx, self.ptr, self.nbytes = ctx, ptr.value, nbytes

    def __del__(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            try:
                _c.bnb_paged_free(self.ctx, ptr)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


class _DeviceBuffer:
    """Shows a paged block to torch.as_tensor as CUDA memory (__cuda_array_interface__). torch keeps
    this object, and so the block, alive for as long as the tensor's storage."""

    def __init__(self, block):
        self.block = block
        self.__cuda_array_interface__ = {"shape": (block.nbytes,), "typestr": "|u1", "data": (block.ptr, False),
                                         "strides": None, "version": 2}


def paged_zeros(like, shape, dtype):
    """A zero-filled tensor of `shape` and `dtype` in bnb paged memory of `like`'s device: CUDA
    managed memory on a GPU, host memory from the library on the CPU. Its memory is returned
    with bnb_paged_free when the tensor (and every view of it) is gone. Marked `t.is_paged`."""
    kit = _arrays.kit_for(like)
    numel = math.prod(shape)
    if numel == 0:
        return torch.zeros(shape, dtype=dtype, device=like.device)
    nbytes = max(numel * torch.empty((), dtype=dtype).element_size(), 1)
    block = _PagedBlock(kit.ctx, nbytes)
    if kit.backend == _lib.BACKEND_CPU:
        raw = (ctypes.c_uint8 * nbytes).from_address(block.ptr)
        raw._bnb_block = block  # the ctypes array owns the block; torch.frombuffer keeps the array
        flat = torch.frombuffer(raw, dtype=torch.uint8)
    else:
        flat = torch.as_tensor(_DeviceBuffer(block), device=kit.device)
    t = flat.view(dtype)[:numel].view(shape)
    t.zero_()
    t.is_paged = True
    return t


def is_paged(t):
    """True for a tensor made by paged_zeros (an optimizer's paged state)."""
    return bool(getattr(t, "is_paged", False))


def _prefetch(kit, t):
    st = _c.bnb_paged_prefetch(kit.ctx, t.data_ptr(), t.numel() * t.element_size(), 1, kit.stream)
    if st:
        _lib.raise_for(st, "bnb_paged_prefetch")


# ---------------------------------------------------------------- the batched step's caches
_local_shard = _arrays.local_shard
_ALONE = object()  # _slot()'s answer for a parameter that takes the one-call path
_STRIDED = torch.strided
_batch_keys = {}
_WORD = ctypes.sizeof(ctypes.c_void_p)


def _batch_key(kit, bits, code):
    """(kit, state bits, dtype code), one shared tuple per value so that `is` compares them."""
    key = (kit, bits, code)
    return _batch_keys.setdefault(key, key)


class _Slot:
    """One parameter's filled bnb_optimizer_tensors_t (g left NULL) and what it was built from."""

    __slots__ = ("p", "state", "p_ptr", "dtype", "shape", "device", "n", "kit", "key", "tensors",
                 "state1", "state2", "absmax1", "absmax2", "qmap1", "qmap2", "paged")

    def __init__(self, p, state, kit, key, tensors):
        self.p, self.state, self.kit, self.key, self.tensors = p, state, kit, key, tensors
        self.p_ptr, self.dtype, self.shape, self.device, self.n = p.data_ptr(), p.dtype, p.shape, p.device, p.numel()
        get = state.get
        self.state1, self.state2 = get("state1"), get("state2")
        self.absmax1, self.absmax2 = get("absmax1"), get("absmax2")
        self.qmap1, self.qmap2 = get("qmap1"), get("qmap2")
        self.paged = () if kit.backend == _lib.BACKEND_CPU else \
            tuple(s for s in (self.state1, self.state2) if s is not None and is_paged(s))


class _Batch:
    """The packed arguments of one bnb_optimizer_update_multi call: the slots' descriptors copied
    into one array, their element counts, and a numpy view of the array's gradient pointers."""

    __slots__ = ("slots", "params", "tensors", "n", "grads", "paged")

    def __init__(self, slots):
        k = len(slots)
        self.slots = slots
        self.params = [s.p for s in slots]
        arr = (_lib.OptimizerTensors * k)()
        for i, s in enumerate(slots):
            arr[i] = s.tensors
        self.tensors = arr
        self.n = (ctypes.c_int64 * k)(*[s.n for s in slots])
        words = np.frombuffer(arr, dtype=np.uintp).reshape(k, ctypes.sizeof(_lib.OptimizerTensors) // _WORD)
        self.grads = words[:, _lib.OptimizerTensors.g.offset // _WORD]
        self.paged = [t for s in slots for t in s.paged]

    def run(self, opt, group, key, t, grad_ptrs, paged_streams):
        self.grads[:] = grad_ptrs
        prm = opt._batch_params(group, key, t)
        kit = key[0]
        if self.paged:
            for s in self.paged:
                _prefetch(kit, s)
            paged_streams[kit.device] = kit
        k = len(self.slots)
        st = _c.bnb_optimizer_update_multi(kit.ctx, ctypes.byref(prm), k, self.tensors, self.n, kit.stream)
        if st:
            _lib.raise_for(st, f"bnb_optimizer_update_multi ({type(opt).__name__}, {k} parameters)")
        for s in self.slots:
            s.state["step"] = t
        # Written through raw pointers: tell autograd the parameters changed in place.
        torch.autograd.graph.increment_version(self.params)


# ---------------------------------------------------------------- argument checks
def _check_number(cls, name, value, low=0.0, high=None, high_open=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{cls}: {name} must be a number, not {type(value).__name__}") from None
    if not math.isfinite(v) or v < low or (high is not None and (v >= high if high_open else v > high)):
        bound = f"in [{low}, {high})" if high_open else (f"in [{low}, {high}]" if high is not None else f">= {low}")
        raise ValueError(f"{cls}: {name} = {value!r} is invalid: it must be finite and {bound}")
    return v


def _not_supported(cls, what):
    raise NotImplementedError(f"{cls}: {what} is not supported by bnb's optimizers")


# ---------------------------------------------------------------- the base class
class Optimizer(torch.optim.Optimizer):
    """Common machinery of the bnb optimizers: state creation, the library call, state dicts.

    Subclasses set `_kind` (a bnb_optimizer_t) and implement `_coefficients(group, step)`, which
    returns (beta1, beta2, beta3, alpha, eps) as the library expects them (docs/OPS.md §6.2).
    `_fixed_bits` / `_fixed_paged` are set by the *8bit, *32bit and Paged* variants.
    """

    _kind = None
    _fixed_bits = None
    _fixed_paged = None
    #: Paged optimizers put state1/state2 of parameters with at least this many elements in paged
    #: memory (smaller ones use ordinary tensors), as bitsandbytes does.
    paged_min_numel = 100_000

    def __init__(self, params, defaults, optim_bits=None, min_8bit_size=4096, percentile_clipping=100,
                 block_wise=True, max_unorm=0.0, is_paged=None, args=None, skip_zeros=False):
        name = type(self).__name__
        if args is not None:
            _not_supported(name, "args (bitsandbytes' GlobalOptimManager configuration object); pass the "
                                  "settings as keyword arguments instead")
        bits = self._fixed_bits if optim_bits is None else optim_bits
        if bits is None:
            bits = 32
        if self._fixed_bits is not None and bits != self._fixed_bits and bits in (8, 32):
            raise ValueError(f"{name} always keeps {self._fixed_bits}-bit state; optim_bits={optim_bits!r} "
                             f"contradicts it (use the class without the suffix to choose)")
        paged = self._fixed_paged if is_paged is None else bool(is_paged)
        if self._fixed_paged is not None and paged != self._fixed_paged:
            raise ValueError(f"{name}: is_paged={is_paged!r} contradicts the class (use the class without "
                             f"'Paged' to choose)")
        if not block_wise and bits == 8:
            _not_supported(name, "8-bit state with block_wise=False (only blockwise 8-bit state exists)")
        settings = self._checked_settings(dict(optim_bits=bits, min_8bit_size=min_8bit_size,
                                               percentile_clipping=percentile_clipping, max_unorm=max_unorm,
                                               skip_zeros=skip_zeros))
        _check_number(name, "lr", defaults["lr"])
        _check_number(name, "eps", defaults["eps"])
        _check_number(name, "weight_decay", defaults["weight_decay"])
        super().__init__(params, dict(defaults, **settings))
        self.is_paged = bool(paged)
        self._tables = {}  # (device, signed) -> the default code table on that device

    # -------------------------------------------------------------- per-group settings
    def _setting(self, group, key):
        """A group's value of one of bnb's own settings; a group loaded from a bitsandbytes state
        dict lacks them and falls back to this optimizer's defaults."""
        value = group.get(key)
        return self.defaults[key] if value is None else value

    #: bnb's own settings: constructor arguments kept in every group (and so in state dicts), read
    #: through _setting. Any of them, and any hyper-parameter key of a group, may also be set per
    #: parameter through _param_overrides.
    SETTINGS = ("optim_bits", "min_8bit_size", "percentile_clipping", "max_unorm", "skip_zeros")

    def _checked_settings(self, settings):
        """Validates values of SETTINGS (all or some of them); returns them normalised."""
        name = type(self).__name__
        out = dict(settings)
        if "optim_bits" in out:
            bits = out["optim_bits"]
            if isinstance(bits, bool) or bits not in (8, 32):
                raise ValueError(f"{name}: optim_bits = {bits!r} is not supported: use 32 or 8")
            out["optim_bits"] = int(bits)
        if "min_8bit_size" in out:
            size = out["min_8bit_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValueError(f"{name}: min_8bit_size = {size!r} must be an integer >= 0")
        if "percentile_clipping" in out:
            pc = out["percentile_clipping"]
            if isinstance(pc, bool) or not isinstance(pc, int) or not 1 <= pc <= 100:
                raise ValueError(f"{name}: percentile_clipping = {pc!r} must be an integer in [1, 100] "
                                 "(100 turns it off)")
        if "max_unorm" in out:
            out["max_unorm"] = _check_number(name, "max_unorm", out["max_unorm"])
            if out["max_unorm"] > 0 and self._kind in _NO_CLIPPING:
                raise ValueError(f"{name}: max_unorm > 0 (update-norm clipping) is not available for this "
                                 "optimizer")
        if "skip_zeros" in out:
            if not isinstance(out["skip_zeros"], (bool, int)):
                raise TypeError(f"{name}: skip_zeros must be a bool, not {type(out['skip_zeros']).__name__}")
            out["skip_zeros"] = bool(out["skip_zeros"])
        return out

    # -------------------------------------------------------------- per-parameter settings
    def _param_overrides(self):
        """Settings of single parameters for this step: {id(p): {key: value}}, or None for none.

        A parameter listed here is updated on its own (not batched) with its group's values
        replaced by these: hyper-parameters (lr, betas, eps, weight_decay, ...) at every step,
        optim_bits and min_8bit_size when its state is created (its first step, or after the
        state is dropped). bnb's classes have none; subclasses supply them (the bitsandbytes
        compatibility layer reads its GlobalOptimManager here)."""
        return None

    def _group_with(self, group, overrides):
        """`group` with one parameter's overrides applied (checked: known keys, valid values)."""
        unknown = [k for k in overrides if k == "params" or (k not in group and k not in self.SETTINGS)]
        if unknown:
            known = sorted(set(k for k in group if k != "params") | set(self.SETTINGS))
            raise ValueError(f"{type(self).__name__}: a parameter override names {unknown}, which this optimizer "
                             f"does not have (known: {known})")
        merged = dict(group)
        merged.update(overrides)
        merged.update(self._checked_settings({k: v for k, v in overrides.items() if k in self.SETTINGS}))
        for key in ("lr", "eps", "weight_decay"):
            if key in overrides:
                _check_number(type(self).__name__, key, overrides[key])
        return merged

    def _coefficients(self, group, step):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    # -------------------------------------------------------------- state
    def _default_table(self, p, signed):
        key = (p.device, signed)
        table = self._tables.get(key)
        if table is None:
            values = _lib_table(_lib.CODE_DYNAMIC_SIGNED if signed else _lib.CODE_DYNAMIC_UNSIGNED)
            table = self._tables[key] = values.to(p.device, copy=True)
        return table

    def _state_shape(self, p):
        copies = TRAITS[self._kind].state1_copies
        return (copies, *p.shape) if copies > 1 else tuple(p.shape)

    def _zeros(self, p, shape, dtype, paged):
        if paged:
            return paged_zeros(p, shape, dtype)
        return torch.zeros(shape, dtype=dtype, device=p.device)

    def _wants_paging(self, p):
        return self.is_paged and p.numel() >= self.paged_min_numel

    def _init_state(self, group, p, state):
        n = p.numel()
        eight = self._setting(group, "optim_bits") == 8 and n >= self._setting(group, "min_8bit_size")
        paged = self._wants_paging(p)
        shape = self._state_shape(p)
        dtype = torch.uint8 if eight else torch.float32
        state.setdefault("step", 0)
        state["state1"] = self._zeros(p, shape, dtype, paged)
        if self._kind in _TWO_STATES:
            state["state2"] = self._zeros(p, tuple(p.shape), dtype, paged)
        if eight:
            blocks = _blocks(n)
            copies = TRAITS[self._kind].state1_copies
            absmax_shape = (copies, blocks) if copies > 1 else (blocks,)
            state["qmap1"] = self._default_table(p, True)
            state["absmax1"] = torch.zeros(absmax_shape, dtype=torch.float32, device=p.device)
            if self._kind in _TWO_STATES:
                state["qmap2"] = self._default_table(p, False)
                state["absmax2"] = torch.zeros((blocks,), dtype=torch.float32, device=p.device)

    # -------------------------------------------------------------- step
    #: True: parameters that can share one library call (same device, state width, dtype and
    #: step, no clipping) are updated together through bnb_optimizer_update_multi. False sends
    #: every parameter through bnb_optimizer_update on its own; the results are the same bit for
    #: bit (the tests compare the two).
    _multi_tensor = True

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient (parameters whose .grad is None are
        skipped). `closure`, if given, re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        paged_streams = {}
        overrides = self._param_overrides() or None
        if self._multi_tensor:
            self._step_batched(paged_streams, overrides)
        else:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update_alone(group, p, paged_streams, overrides)
        # Paged state may be touched by the host (or evicted) next: let the updates finish first.
        for kit in paged_streams.values():
            torch.cuda.current_stream(kit.device).synchronize()
        return loss

    def _update_alone(self, group, p, paged_streams, overrides=None):
        if overrides is not None:
            own = overrides.get(id(p))
            if own:
                group = self._group_with(group, own)
        kit = self._update(group, p)
        if kit is not None and kit.backend != _lib.BACKEND_CPU:
            paged_streams[kit.device] = kit

    def _step_batched(self, paged_streams, overrides=None):
        """step() through bnb_optimizer_update_multi.

        Per parameter, a _Slot (kept between steps in self._bnb_slots, keyed by id(p)) holds the
        filled bnb_optimizer_tensors_t and the objects it was built from. A step re-checks it
        with identity and pointer comparisons only; anything that differs (a new p.data, state
        replaced by load_state_dict, an odd gradient) rebuilds the slot through _slot(), which
        runs the full argument checks and raises as _update does. Parameters that share a
        _Batch.key and a step go into one multi call; the packed descriptor array of each call is
        kept too (self._bnb_batches) and reused while the same slots fill it, so a step only
        writes the gradient pointers into it."""
        old_slots = self.__dict__.get("_bnb_slots") or {}
        old_batches = self.__dict__.get("_bnb_batches") or {}
        slots, batches = {}, {}
        states = self.state
        for gi, group in enumerate(self.param_groups):
            if float(self._setting(group, "max_unorm")) > 0 or int(self._setting(group, "percentile_clipping")) < 100:
                # Clipping needs per-tensor norms: one call per parameter.
                for p in group["params"]:
                    if p.grad is not None:
                        self._update_alone(group, p, paged_streams, overrides)
                continue
            pending = {}  # (key, step) -> ([slot...], [gradient pointer...])
            keep = []  # contiguous copies of strided gradients, alive until the calls are made
            repeats = []  # a parameter listed twice in the group: its second update comes after the batch
            cur_key = cur_t = cur_slots = cur_ptrs = None
            group_params = {}
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                pid = id(p)
                group_params[pid] = p
                if overrides is not None and pid in overrides:  # its own settings: updated alone
                    self._update_alone(group, p, paged_streams, overrides)
                    continue
                if pid in slots:
                    repeats.append(p)
                    continue
                state = states[p]
                p, g = _local_shard(p), _local_shard(g)  # FSDP: this rank's shard (state keyed by the parameter)
                get = state.get
                s = old_slots.get(pid)
                shape = p.shape
                # The slot is still right when p, its storage and its state are the ones it was
                # built from; the gradient passes _checked_code's tests when it is strided and
                # has the parameter's dtype, shape and device.
                if (s is None or s.p is not p or s.state is not state or p.data_ptr() != s.p_ptr
                        or p.dtype is not s.dtype or shape != s.shape or not p.is_contiguous()
                        or get("state1") is not s.state1 or get("state2") is not s.state2
                        or get("absmax1") is not s.absmax1 or get("absmax2") is not s.absmax2
                        or get("qmap1") is not s.qmap1 or get("qmap2") is not s.qmap2
                        or g.layout is not _STRIDED or g.dtype is not s.dtype or g.shape != shape
                        or g.device != s.device):
                    s = self._slot(group, p, g, state)
                    if s is None:  # no elements: nothing to do
                        continue
                    if s is _ALONE:  # a strided parameter: updated through a contiguous copy
                        self._update_alone(group, group_params[pid], paged_streams)
                        continue
                slots[pid] = s
                if not g.is_contiguous():
                    g = g.contiguous()
                    keep.append(g)
                t = int(get("step")) + 1
                if s.key is not cur_key or t != cur_t:
                    cur_key, cur_t = s.key, t
                    entry = pending.get((cur_key, t))
                    if entry is None:
                        entry = pending[(cur_key, t)] = ([], [])
                    cur_slots, cur_ptrs = entry
                cur_slots.append(s)
                cur_ptrs.append(g.data_ptr())
            for j, ((key, t), (group_slots, ptrs)) in enumerate(pending.items()):
                bkey = (gi, j)
                batch = old_batches.get(bkey)
                if batch is None or batch.slots != group_slots:
                    batch = _Batch(group_slots)
                batches[bkey] = batch
                batch.run(self, group, key, t, ptrs, paged_streams)
            del keep
            for p in repeats:
                self._update_alone(group, p, paged_streams, overrides)
        self._bnb_slots = slots
        self._bnb_batches = batches

    def _batch_params(self, group, key, t):
        """The bnb_optimizer_params_t of one multi call (n is per tensor there)."""
        prm = _new_struct(_lib.OptimizerParams, "bnb_optimizer_params_init")
        prm.optimizer = self._kind
        prm.state_bits = key[1]
        prm.param_dtype = key[2]
        prm.n = 1
        prm.lr = float(group["lr"])
        prm.beta1, prm.beta2, prm.beta3, prm.alpha, prm.eps = self._coefficients(group, t)
        prm.weight_decay = float(group["weight_decay"])
        prm.gnorm_scale = 1.0
        prm.step = t
        prm.skip_zeros = 1 if self._setting(group, "skip_zeros") else 0
        return prm

    def _checked_code(self, p, g):
        """The checks on a parameter and its gradient; returns the parameter's dtype code."""
        name = type(self).__name__
        if g.is_sparse or g.layout != torch.strided:
            raise RuntimeError(f"{name} does not support sparse gradients (parameter of shape {tuple(p.shape)})")
        code = _PARAM_DTYPES.get(p.dtype)
        if code is None:
            raise TypeError(f"{name}: parameters of dtype {p.dtype} are not supported (float32, float16, bfloat16)")
        if g.dtype != p.dtype:
            raise TypeError(f"{name}: the gradient's dtype {g.dtype} differs from its parameter's {p.dtype}")
        if g.device != p.device:
            raise ValueError(f"{name}: the gradient is on {g.device}, its parameter on {p.device}")
        if g.shape != p.shape:
            raise ValueError(f"{name}: the gradient's shape {tuple(g.shape)} differs from its parameter's "
                             f"{tuple(p.shape)}")
        return code

    def _tensors(self, p, state, work):
        """A bnb_optimizer_tensors_t for `work` (p or its contiguous copy) and p's state; g and
        unorm_vec are left NULL."""
        state1 = state["state1"]
        two = self._kind in _TWO_STATES
        ten = _new_struct(_lib.OptimizerTensors, "bnb_optimizer_tensors_init")
        ten.p = work.data_ptr()
        ten.state1 = state1.data_ptr()
        ten.state2 = state["state2"].data_ptr() if two else None
        if state1.dtype == torch.uint8:
            ten.absmax1 = state["absmax1"].data_ptr()
            ten.qmap1 = self._table_ptr(p, state["qmap1"], True)
            if two:
                ten.absmax2 = state["absmax2"].data_ptr()
                ten.qmap2 = self._table_ptr(p, state["qmap2"], False)
        return ten

    def _slot(self, group, p, g, state):
        """Checks p and its gradient g in full and builds p's _Slot; None when p has no elements,
        _ALONE when p is not contiguous (the single-call path writes it back through a copy)."""
        code = self._checked_code(p, g)
        if p.numel() == 0:
            return None
        if not p.is_contiguous():
            return _ALONE
        if "state1" not in state:
            self._init_state(group, p, state)
        kit = _arrays.kit_for(p)
        bits = 8 if state["state1"].dtype == torch.uint8 else 32
        return _Slot(p, state, kit, _batch_key(kit, bits, code), self._tensors(p, state, p))

    def _update(self, group, p):
        """Updates one parameter; returns its kit when its state is paged (else None)."""
        name = type(self).__name__
        state = self.state[p]
        p, g = _local_shard(p), _local_shard(p.grad)  # FSDP: this rank's shard (state keyed by the parameter)
        code = self._checked_code(p, g)
        n = p.numel()
        if n == 0:
            return None
        if "state1" not in state:
            self._init_state(group, p, state)
        kit = _arrays.kit_for(p)

        state1 = state["state1"]
        eight = state1.dtype == torch.uint8
        state2 = state.get("state2")
        t = int(state["step"]) + 1

        beta1, beta2, beta3, alpha, eps = self._coefficients(group, t)
        wd = float(group["weight_decay"])
        max_unorm = float(self._setting(group, "max_unorm"))
        work = p if p.is_contiguous() else p.contiguous()  # written back below
        grad = g if g.is_contiguous() else g.contiguous()

        prm = _new_struct(_lib.OptimizerParams, "bnb_optimizer_params_init")
        prm.optimizer = self._kind
        prm.state_bits = 8 if eight else 32
        prm.param_dtype = code
        prm.n = n
        prm.lr = float(group["lr"])
        prm.beta1, prm.beta2, prm.beta3, prm.alpha, prm.eps = beta1, beta2, beta3, alpha, eps
        prm.weight_decay = wd
        prm.gnorm_scale = self._gnorm_scale(group, state, grad, t)
        prm.step = t
        prm.skip_zeros = 1 if self._setting(group, "skip_zeros") else 0
        ten = self._tensors(p, state, work)
        ten.g = grad.data_ptr()
        if max_unorm > 0:
            unorm = state.get("unorm_vec")
            if unorm is None:
                unorm = state["unorm_vec"] = torch.zeros((1,), dtype=torch.float32, device=p.device)
            prm.max_unorm = max_unorm
            prm.param_norm = float(torch.linalg.vector_norm(work, dtype=torch.float32))
            ten.unorm_vec = unorm.data_ptr()

        paged = [s for s in (state1, state2) if s is not None and is_paged(s)]
        if kit.backend != _lib.BACKEND_CPU:
            for s in paged:
                _prefetch(kit, s)
        st = _c.bnb_optimizer_update(kit.ctx, ctypes.byref(prm), ctypes.byref(ten), kit.stream)
        if st:
            _lib.raise_for(st, f"bnb_optimizer_update ({name}, parameter of shape {tuple(p.shape)})")
        state["step"] = t
        if work is not p:
            p.copy_(work)
        else:
            # Written through a raw pointer: tell autograd the parameter changed in place.
            torch.autograd.graph.increment_version(p)
        return kit if paged else None

    def _table_ptr(self, p, table, signed):
        # NULL selects the library's own copy of the default table (and its fast GPU path).
        if table is self._tables.get((p.device, signed)):
            return None
        return table.data_ptr()

    def _gnorm_scale(self, group, state, grad, t):
        """Percentile clipping (docs/OPS.md §6.8): the gradient is scaled down to the `percentile`-th
        smallest of the last 100 gradient norms. Costs a host synchronisation on the GPU."""
        percentile = int(self._setting(group, "percentile_clipping"))
        if percentile >= 100:
            return 1.0
        history = state.get("gnorm_vec")
        if history is None:
            history = state["gnorm_vec"] = torch.zeros((100,), dtype=torch.float32, device=grad.device)
        squared = torch.linalg.vector_norm(grad, dtype=torch.float32).square()
        slot = t % 100
        if t == 1:
            history.fill_(squared)
        else:
            history[slot] = squared
        limit = torch.sort(history).values[percentile].sqrt()
        current = history[slot].sqrt()
        return float(torch.where(current > limit, limit / current, torch.ones_like(limit)))

    # -------------------------------------------------------------- state dicts
    def state_dict(self):
        """torch's state dict, with the state of a DTensor parameter (FSDP2) as DTensors over its
        mesh (_sharded_state): each rank holds the state of its own shard only, and
        torch.distributed.checkpoint saves a plain tensor once, as if every rank held the same. The
        state of FSDP1's flattened parameters is given element-wise (_elementwise_state)."""
        sd = super().state_dict()
        params = {}
        for group, saved in zip(self.param_groups, sd["param_groups"]):
            params.update(zip(saved["params"], group["params"]))
        for index, param_state in sd["state"].items():
            p = params.get(index)
            if not isinstance(param_state, dict):
                continue
            if _arrays.is_dtensor(p):
                sd["state"][index] = {k: _sharded_state(p, k, v) for k, v in param_state.items()}
            elif _is_fsdp1_view(p):
                sd["state"][index] = self._elementwise_state(param_state)
        return sd

    def _elementwise_state(self, state):
        """The state of a parameter of FSDP1's flat parameters in the form its optim_state_dict can
        gather (see "state under FSDP1" below)."""
        name = type(self).__name__
        if "gnorm_vec" in state:
            raise NotImplementedError(
                f"{name}: percentile_clipping < 100 keeps each rank's own history of gradient norms, which a "
                "state dict of FSDP1's flattened parameters cannot hold (FSDP1's optim_state_dict gathers only "
                "state shaped like the parameter); use FSDP2 (fully_shard) or percentile_clipping=100")
        out = {k: v for k, v in state.items() if k != "unorm_vec"}  # scratch: every step starts it at 0
        state1 = state.get("state1")
        copies = TRAITS[self._kind].state1_copies
        if state1 is None:
            return out
        out[ELEMENTWISE_STATE_KEY] = True  # 32-bit state of one copy is already in this form
        for i in (1, 2):
            codes, absmax, table = (out.pop(f"{k}{i}", None) for k in ("state", "absmax", "qmap"))
            if codes is None:
                continue
            k = copies if i == 1 else 1
            rows = codes.reshape(k, codes.numel() // k)
            n = rows.shape[1]
            scales = None if absmax is None else absmax.reshape(k, absmax.numel() // k)
            for c, suffix in enumerate(_COPY_SUFFIXES[:k]):
                out[f"state{i}{suffix}"] = rows[c].float()  # the codes 0..255, exact in float32
                if scales is not None:
                    out[f"absmax{i}{suffix}"] = scales[c].repeat_interleave(BLOCKSIZE)[:n]
            if table is not None and table is not self._tables.get((codes.device, i == 1)):
                out[f"qmap{i}"] = table.tolist()
        return out

    def load_state_dict(self, state_dict):
        """Loads a state dict of this class or of the matching bitsandbytes optimizer. Unlike
        torch's default, state tensors keep their dtype (float32 state, uint8 codes and float32
        scales are never cast to the parameter's dtype); they are copied to the parameter's
        device (into paged memory for a paged optimizer). For a DTensor parameter (FSDP2) the state
        is its shard's: DTensor items (state_dict's) give this rank's part. Element-wise state
        (FSDP1's, cut to this rank's part by FSDP1) is turned back into codes and block scales."""
        # The batched step's caches point at the state being replaced: drop them (and the old state).
        self.__dict__.pop("_bnb_slots", None)
        self.__dict__.pop("_bnb_batches", None)
        for hook in getattr(self, "_optimizer_load_state_dict_pre_hooks", {}).values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, sg in zip(groups, saved_groups):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "the optimizer's group")
        id_map = {}
        for g, sg in zip(groups, saved_groups):
            id_map.update(zip(sg["params"], g["params"]))
        state = {}
        for key, value in state_dict["state"].items():
            if key in id_map:
                p = id_map[key]
                state[p] = self._import_state(p, value)
            else:
                state[key] = value
        new_groups = []
        for g, sg in zip(groups, saved_groups):
            ng = copy.deepcopy({k: v for k, v in sg.items() if k != "params"})
            ng["params"] = g["params"]
            if "param_names" in g and "param_names" not in ng:
                ng["param_names"] = g["param_names"]
            new_groups.append(ng)
        self.__setstate__({"state": defaultdict(dict, state), "param_groups": new_groups})
        for hook in getattr(self, "_optimizer_load_state_dict_post_hooks", {}).values():
            hook(self)

    def _local_state(self, key, t, n):
        """This rank's part of DTensor state item t (state_dict's _sharded_state) for a shard of n
        elements: the local tensor, without the padding of a per-rank item."""
        t = t.to_local()
        if key.startswith("absmax"):
            copies = TRAITS[self._kind].state1_copies if key == "absmax1" else 1
            return t[:copies * _blocks(n)]
        return t

    def _from_elementwise(self, saved, p):
        """_elementwise_state's form back in the optimizer's own, for this rank's part p of the
        parameter (which FSDP1 cut from the gathered whole as in the run that saved it)."""
        name = type(self).__name__
        n = p.numel()
        copies = TRAITS[self._kind].state1_copies
        out = dict(saved)
        for i in (1, 2):
            suffixes = _COPY_SUFFIXES[:copies if i == 1 else 1]
            rows = [out.pop(f"state{i}{s}", None) for s in suffixes]
            if rows[0] is None:
                continue
            scales = [out.pop(f"absmax{i}{s}", None) for s in suffixes]
            checked = rows + (scales if scales[0] is not None else [])
            if any(t is None or t.numel() != n for t in checked):
                raise ValueError(f"{name}.load_state_dict: the element-wise state{i} (FSDP1) does not have "
                                 f"{n} elements per part, as this rank's part of the parameter")
            if scales[0] is None:  # 32-bit state (AdEMAMix's rows)
                out[f"state{i}"] = torch.stack([r.reshape(-1) for r in rows])
                continue
            codes = torch.stack([r.reshape(-1) for r in rows])
            as_bytes = codes.to(torch.uint8)
            if not torch.equal(as_bytes.float(), codes):
                raise ValueError(f"{name}.load_state_dict: the element-wise state{i} (FSDP1) holds values that "
                                 "are not 8-bit codes (0..255)")
            table = out.get(f"qmap{i}")
            if table is not None and not isinstance(table, torch.Tensor):
                table = out[f"qmap{i}"] = torch.tensor(table, dtype=torch.float32, device=p.device)
            blocks = []
            for c, per_element in enumerate(scales):
                per_element = per_element.reshape(-1)
                per_block = per_element[::BLOCKSIZE]
                if torch.equal(per_block.repeat_interleave(BLOCKSIZE)[:n], per_element):
                    blocks.append(per_block)
                else:  # saved from another sharding (FSDP1's units or world size): requantized in this part's blocks
                    used = self._default_table(p, i == 1) if table is None else table
                    as_bytes[c], absmax = _requantize(as_bytes[c], per_element, used)
                    blocks.append(absmax)
            out[f"state{i}"] = as_bytes
            out[f"absmax{i}"] = torch.cat(blocks)
        return out

    def _import_state(self, p, saved):
        name = type(self).__name__
        p = _local_shard(p)  # FSDP2: the state is this rank's shard's
        shape = tuple(p.shape)
        n = p.numel()
        wrapped = saved.get(BITSANDBYTES_WRAPPED_STATE_KEY)
        if isinstance(wrapped, dict):  # bitsandbytes (0.50.2) nests the state tensors under this key
            saved = {k: v for k, v in saved.items() if k != BITSANDBYTES_WRAPPED_STATE_KEY}
            saved.update(wrapped)
        out = {}
        for key, value in saved.items():
            if isinstance(value, torch.Tensor) and key != "step":
                if _arrays.is_dtensor(value):
                    value = self._local_state(key, value, n)
                out[key] = value.detach().to(p.device, copy=True).contiguous()
            else:
                out[key] = value
        if "step" in out:
            out["step"] = int(out["step"].item() if isinstance(out["step"], torch.Tensor) else out["step"])
        if out.pop(ELEMENTWISE_STATE_KEY, False):
            out = self._from_elementwise(out, p)
        if "state1" not in out:  # no update yet: the first step creates the state
            return out
        if "max1" in out or "new_max1" in out:
            _not_supported(name, "a state dict of a non-blockwise 8-bit optimizer (max1/new_max1)")
        mult = TRAITS[self._kind].state1_copies
        state1 = out["state1"]
        eight = state1.dtype == torch.uint8
        keys = ["state1"] + (["state2"] if self._kind in _TWO_STATES else [])
        for key in keys:
            t = out.get(key)
            if t is None:
                raise ValueError(f"{name}.load_state_dict: the state of a parameter of shape {shape} has no {key!r}")
            if (t.dtype == torch.uint8) != eight:
                raise ValueError(f"{name}.load_state_dict: state1 and {key} differ in width ({state1.dtype}, "
                                 f"{t.dtype})")
            want = n * (mult if key == "state1" else 1)
            if t.numel() != want:
                raise ValueError(f"{name}.load_state_dict: {key} has {t.numel()} elements, a parameter of shape "
                                 f"{shape} needs {want}")
            if not eight and t.dtype != torch.float32:
                if not t.is_floating_point():
                    raise ValueError(f"{name}.load_state_dict: {key} has dtype {t.dtype}")
                t = t.float()
            out[key] = t.view((2, *shape) if key == "state1" and mult == 2 else shape)
        if eight:
            blocks = _blocks(n)
            for i, key in enumerate(keys, start=1):
                absmax = out.get(f"absmax{i}")
                want = blocks * (mult if i == 1 else 1)
                if absmax is None or absmax.numel() != want or absmax.dtype != torch.float32:
                    raise ValueError(f"{name}.load_state_dict: 8-bit state needs absmax{i} as float32 with "
                                     f"{want} elements for a parameter of shape {shape}")
                if mult == 2 and i == 1:
                    out["absmax1"] = absmax.view(2, blocks)
                table_key = f"qmap{i}"
                default = self._default_table(p, i == 1)
                table = out.get(table_key)
                if table is None:
                    out[table_key] = default
                    continue
                if table.numel() != 256 or table.dtype != torch.float32:
                    raise ValueError(f"{name}.load_state_dict: {table_key} must be 256 float32 values")
                out[table_key] = default if torch.equal(table.view(-1), default) else table.view(-1)
        if self._wants_paging(p):
            for key in keys:
                t = out[key]
                paged = paged_zeros(p, tuple(t.shape), t.dtype)
                paged.copy_(t)
                out[key] = paged
        return out


# ---------------------------------------------------------------- state under FSDP2
# A DTensor parameter's state is its local shard's: state1/state2 have the shard's shape, absmax1/2
# one scale per 256 elements *of the shard*, unorm_vec/gnorm_vec the shard's norms. In a state dict
# state1/state2 are DTensors placed as the parameter; the other per-rank tensors are flattened, padded
# with zeros to the largest rank's length and sharded along dim 0 over the dimensions of the mesh
# that shard the parameter, so a checkpoint holds every rank's values (reloaded on the same mesh).
# The code tables are the same on every rank and stay plain tensors.
_PARAM_SHAPED = ("state1", "state2")


def _sharded_state(p, key, t):
    """State item `key` of the DTensor parameter p as a DTensor (or as it is: tables, non-tensors)."""
    if not isinstance(t, torch.Tensor) or key.startswith("qmap"):
        return t
    from torch.distributed.tensor import DTensor, Replicate, Shard

    mesh, placements = p.device_mesh, p.placements
    if key in _PARAM_SHAPED:
        extra = t.dim() - p.dim()  # AdEMAMix's state1 is (2, *shape): the sharded dimension moves by one
        shape = tuple(t.shape[:extra]) + tuple(p.shape)
        if extra:
            placements = [Shard(pl.dim + extra) if pl.is_shard() else pl for pl in placements]
        return DTensor.from_local(t, mesh, placements, run_check=False, shape=shape, stride=_contiguous_strides(shape))
    length = _largest_rank_length(p, key, t)
    flat = t.reshape(-1)
    if flat.numel() < length:
        flat = torch.cat([flat, flat.new_zeros(length - flat.numel())])
    shards = math.prod(mesh.size(i) for i, pl in enumerate(placements) if pl.is_shard())
    placements = [Shard(0) if pl.is_shard() else Replicate() for pl in placements]
    return DTensor.from_local(flat, mesh, placements, run_check=False, shape=(shards * length,), stride=(1,))


def _largest_rank_length(p, key, t):
    """The length of per-rank state item t on the rank with the largest shard of p (the first: FSDP2
    splits dim 0 as torch.chunk does)."""
    if not key.startswith("absmax"):
        return t.numel()  # the same on every rank (the norms' vectors)
    shape = list(p.shape)
    for i, pl in enumerate(p.placements):
        if pl.is_shard():
            shape[pl.dim] = -(-shape[pl.dim] // p.device_mesh.size(i))
    return t.numel() // _blocks(_local_shard(p).numel()) * _blocks(math.prod(shape))


def _blocks(n):
    """The 8-bit state's blocks over n elements (absmax's length per state copy)."""
    return -(-n // BLOCKSIZE)


def _contiguous_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _requantize(codes, scales, table):
    """8-bit state given per element (codes, each with its own block's scale, from another sharding)
    quantized again in blocks of BLOCKSIZE from this part's first element: (codes, absmax). The
    values are the saved ones (table[code] * scale); the new blocks' scales are their absmax, so
    each value moves by at most half a step of the table near it."""
    from .. import functional as F

    table = table.to(codes.device).contiguous()
    values = table[codes.long()] * scales.to(codes.device)
    q, state = F.quantize_blockwise(values.contiguous(), code=table, blocksize=BLOCKSIZE)
    return q, state.absmax


_host_tables = {}


def _lib_table(which):
    table = _host_tables.get(which)
    if table is None:
        from .. import _ops

        table = _host_tables[which] = torch.from_numpy(_ops.get_code_table(which))
    return table


# ---------------------------------------------------------------- state under FSDP1
# FSDP1 with use_orig_params=True hands the optimizer its original parameters as 1-D views of the
# rank's slice of a flat parameter (possibly part of one, possibly empty), so the state is the
# slice's, as under FSDP2. Its optim_state_dict then gathers every state tensor with a dimension as
# if it were shaped like that slice, all into one buffer of one dtype per flat parameter, and it
# requires every other value to be the same on each rank. 8-bit state fits neither: uint8 codes
# beside float32 scales, and the scales and code tables are not shaped like the parameter. In
# state_dict() such a parameter's state is therefore given element by element in float32:
# state1/state2 as the codes (0..255, exact in float32), absmax1/absmax2 as each element's block
# scale, a code table only when it is not the default (as a list), AdEMAMix's two EMAs as state1
# and state1_slow, and ELEMENTWISE_STATE_KEY set (for 32-bit state too, which but for AdEMAMix is
# already in this form: the compat layer then leaves it unnested). FSDP1 gathers, unflattens and
# re-cuts these like any float state; load_state_dict turns this rank's part back into codes and
# one scale per block; state saved under other shard boundaries (scales that change inside a block
# of this rank's part) is quantized again in this part's blocks (_requantize). unorm_vec is left out (each step starts it at zero);
# percentile clipping's per-rank history of gradient norms cannot be held.
#: Marks a parameter's state given element-wise (FSDP1) in a state dict.
ELEMENTWISE_STATE_KEY = "bnb_elementwise_state"
_COPY_SUFFIXES = ("", "_slow")


def _is_fsdp1_view(p):
    """Whether p is one of FSDP1's original parameters (or a FlatParameter): a view of a flat shard."""
    return p is not None and getattr(p, "_fsdp_flattened", False) and not _arrays.is_dtensor(p)


# ---------------------------------------------------------------- the optimizers
def _adam_betas(cls, betas, count=2):
    if len(betas) != count:
        raise ValueError(f"{cls}: betas must have {count} values, got {betas!r}")
    for i, b in enumerate(betas):
        _check_number(cls, f"betas[{i}]", b, 0.0, 1.0, high_open=True)
    return tuple(float(b) for b in betas)


class Adam(Optimizer):
    """Adam with 32-bit or 8-bit blockwise state. weight_decay is decoupled (applied to the
    parameter after the step, as bitsandbytes' Adam does), not torch.optim.Adam's L2 term.
    amsgrad is not supported."""

    _kind = _K_ADAM

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 optim_bits=None, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=None, *, max_unorm=0.0, skip_zeros=False):
        cls = type(self).__name__
        if amsgrad:
            _not_supported(cls, "amsgrad=True")
        defaults = dict(lr=lr, betas=_adam_betas(cls, betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, percentile_clipping, block_wise, max_unorm,
                         is_paged, args, skip_zeros)

    def _coefficients(self, group, step):
        b1, b2 = group["betas"][:2]
        return float(b1), float(b2), 0.0, 0.0, float(group["eps"])


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, default weight_decay=1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 optim_bits=None, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=None, *, max_unorm=0.0, skip_zeros=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, optim_bits, args, min_8bit_size,
                         percentile_clipping, block_wise, is_paged, max_unorm=max_unorm, skip_zeros=skip_zeros)


class LAMB(Optimizer):
    """LAMB as bitsandbytes defines it: Adam's update, scaled down when its norm exceeds
    max_unorm * ||p|| (a clip, not the textbook trust ratio). Decoupled weight decay."""

    _kind = _K_LAMB

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, adam_w_mode=True, optim_bits=None, args=None, min_8bit_size=4096,
                 percentile_clipping=100, block_wise=True, max_unorm=1.0, is_paged=None, *, skip_zeros=False):
        cls = type(self).__name__
        if amsgrad:
            _not_supported(cls, "amsgrad=True")
        if not bias_correction:
            _not_supported(cls, "bias_correction=False")
        if not adam_w_mode:
            _not_supported(cls, "adam_w_mode=False (weight decay is always decoupled)")
        defaults = dict(lr=lr, betas=_adam_betas(cls, betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, percentile_clipping, block_wise, max_unorm,
                         is_paged, args, skip_zeros)

    def _coefficients(self, group, step):
        b1, b2 = group["betas"][:2]
        return float(b1), float(b2), 0.0, 0.0, float(group["eps"])


class AdEMAMix(Optimizer):
    """AdEMAMix (a fast and a slow EMA of the gradient). t_alpha / t_beta3 warm alpha and beta3 up
    over that many steps (docs/OPS.md §6.7). Decoupled weight decay, default 1e-2."""

    _kind = _K_ADEMAMIX

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, t_alpha=None, t_beta3=None,
                 eps=1e-8, weight_decay=1e-2, optim_bits=None, min_8bit_size=4096, is_paged=None):
        cls = type(self).__name__
        betas = _adam_betas(cls, betas, 3)
        _check_number(cls, "alpha", alpha)
        for key, value in (("t_alpha", t_alpha), ("t_beta3", t_beta3)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{cls}: {key} = {value!r} must be None or a positive integer")
        defaults = dict(lr=lr, betas=betas, alpha=alpha, t_alpha=t_alpha, t_beta3=t_beta3, eps=eps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, 100, True, 0.0, is_paged, None)

    def _coefficients(self, group, step):
        b1, b2, b3 = (float(b) for b in group["betas"])
        alpha = float(group.get("alpha", 5.0))
        t_alpha, t_beta3 = group.get("t_alpha"), group.get("t_beta3")
        if t_alpha:
            alpha = min(step * alpha / t_alpha, alpha)
        if t_beta3 and b3 > 0 and b1 > 0:
            ln1, ln3 = math.log(b1), math.log(b3)
            frac = step / t_beta3
            b3 = min(math.exp(ln1 * ln3 / ((1.0 - frac) * ln3 + frac * ln1)), b3)
        return b1, b2, b3, alpha, float(group["eps"])


def _momentum_args(cls, momentum, dampening, nesterov):
    if momentum == 0:
        _not_supported(cls, "momentum=0 (the kernels always keep a momentum buffer; use momentum > 0)")
    _check_number(cls, "momentum", momentum, 0.0, 1.0)
    if dampening:
        warnings.warn(f"{cls}: dampening is ignored (as in bitsandbytes)", stacklevel=3)
    if nesterov:
        warnings.warn(f"{cls}: nesterov is ignored (as in bitsandbytes)", stacklevel=3)
    return (float(momentum), float(dampening))


class SGD(Optimizer):
    """SGD with momentum (momentum > 0 required): s = momentum*s + g (s = g at the first step),
    p -= lr*s. Coupled (L2) weight decay. No dampening, no Nesterov."""

    _kind = _K_MOMENTUM

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, optim_bits=None,
                 args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True, is_paged=None, *,
                 max_unorm=0.0, skip_zeros=False):
        cls = type(self).__name__
        betas = _momentum_args(cls, momentum, dampening, nesterov)
        defaults = dict(lr=lr, betas=betas, eps=0.0, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, percentile_clipping, block_wise, max_unorm,
                         is_paged, args, skip_zeros)

    def _coefficients(self, group, step):
        return float(group["betas"][0]), 0.0, 0.0, 0.0, float(group["eps"])


class LARS(Optimizer):
    """LARS as bitsandbytes defines it: SGD with momentum whose update is scaled down when its
    norm exceeds max_unorm * ||p|| (a clip, not the textbook trust ratio). Coupled weight decay."""

    _kind = _K_LARS

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, optim_bits=None,
                 args=None, min_8bit_size=4096, percentile_clipping=100, max_unorm=0.02, is_paged=None, *,
                 skip_zeros=False):
        cls = type(self).__name__
        betas = _momentum_args(cls, momentum, dampening, nesterov)
        defaults = dict(lr=lr, betas=betas, eps=0.0, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, percentile_clipping, True, max_unorm,
                         is_paged, args, skip_zeros)

    def _coefficients(self, group, step):
        return float(group["betas"][0]), 0.0, 0.0, 0.0, float(group["eps"])


class RMSprop(Optimizer):
    """RMSprop: s = alpha*s + (1-alpha)*g^2, p -= lr*g/(sqrt(s)+eps). Coupled weight decay.
    centered and alpha=0 are not supported; momentum is ignored (as in bitsandbytes)."""

    _kind = _K_RMSPROP

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 optim_bits=None, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=None, *, max_unorm=0.0, skip_zeros=False):
        cls = type(self).__name__
        if alpha == 0:
            _not_supported(cls, "alpha=0")
        if centered:
            _not_supported(cls, "centered=True")
        _check_number(cls, "alpha", alpha, 0.0, 1.0)
        if momentum:
            warnings.warn(f"{cls}: momentum is ignored (as in bitsandbytes)", stacklevel=2)
        defaults = dict(lr=lr, betas=(float(alpha), float(momentum)), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, percentile_clipping, block_wise, max_unorm,
                         is_paged, args, skip_zeros)

    def _coefficients(self, group, step):
        return float(group["betas"][0]), 0.0, 0.0, 0.0, float(group["eps"])


class Adagrad(Optimizer):
    """Adagrad: s += g^2, p -= lr*g/(sqrt(s)+eps). Coupled weight decay. lr_decay and
    initial_accumulator_value must be 0."""

    _kind = _K_ADAGRAD

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 optim_bits=None, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=None, *, max_unorm=0.0, skip_zeros=False):
        cls = type(self).__name__
        if initial_accumulator_value != 0:
            _not_supported(cls, "initial_accumulator_value != 0")
        if lr_decay != 0:
            _not_supported(cls, "lr_decay != 0")
        defaults = dict(lr=lr, betas=(0.0, 0.0), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, percentile_clipping, block_wise, max_unorm,
                         is_paged, args, skip_zeros)

    def _coefficients(self, group, step):
        return 0.0, 0.0, 0.0, 0.0, float(group["eps"])


class Lion(Optimizer):
    """Lion: p -= lr*sign(beta1*s + (1-beta1)*g), then s = beta2*s + (1-beta2)*g. Decoupled
    weight decay."""

    _kind = _K_LION

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, optim_bits=None, args=None,
                 min_8bit_size=4096, percentile_clipping=100, block_wise=True, is_paged=None, *, skip_zeros=False):
        cls = type(self).__name__
        defaults = dict(lr=lr, betas=_adam_betas(cls, betas), eps=0.0, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, min_8bit_size, percentile_clipping, block_wise, 0.0,
                         is_paged, args, skip_zeros)

    def _coefficients(self, group, step):
        b1, b2 = group["betas"][:2]
        return float(b1), float(b2), 0.0, 0.0, 0.0


# ---------------------------------------------------------------- the fixed variants
_BASES = (Adam, AdamW, SGD, RMSprop, Lion, Adagrad, AdEMAMix, LAMB, LARS)
_PAGED_BASES = (Adam, AdamW, Lion, AdEMAMix)


def _variant(base, name, bits, paged):
    what = []
    if paged:
        what.append("state1/state2 in paged memory (parameters with >= paged_min_numel elements)")
    if bits:
        what.append(f"always {bits}-bit state" + (" (tensors under min_8bit_size keep 32-bit state)"
                                                  if bits == 8 else ""))
    doc = f"{base.__name__} with {' and '.join(what)}.\n\n{base.__doc__}"
    attrs = {"__doc__": doc, "__module__": __name__, "__qualname__": name}
    if bits:
        attrs["_fixed_bits"] = bits
    if paged:
        attrs["_fixed_paged"] = True
    return type(name, (base,), attrs)


for _base in _BASES:
    for _bits in (8, 32):
        globals()[f"{_base.__name__}{_bits}bit"] = _variant(_base, f"{_base.__name__}{_bits}bit", _bits, False)
for _base in _PAGED_BASES:
    for _bits, _suffix in ((None, ""), (8, "8bit"), (32, "32bit")):
        _name = f"Paged{_base.__name__}{_suffix}"
        globals()[_name] = _variant(_base, _name, _bits, True)
del _base, _bits, _suffix, _name
