"""bitsandbytes.optim.optimizer: the base classes and the global per-parameter configuration.

Every optimizer of this package is one of bnb's (bnb.optim, docs/OPTIMIZERS.md) under
bitsandbytes' class name, constructor signature and module path: the update rules, state,
batching and paged memory are bnb's. What this module adds is what bitsandbytes' users reach
beyond the constructor:

* `Optimizer8bit`, `Optimizer1State`, `Optimizer2State`: the base names (isinstance checks, and
  subclasses that call `Optimizer2State.__init__("adam", params, ...)` with an optimizer name);
* `.args`: the namespace of bitsandbytes' settings (optim_bits, min_8bit_size, max_unorm,
  skip_zeros, and bnb's percentile_clipping, block_wise); a constructor's `args=` object
  replaces those settings, as in bitsandbytes;
* `GlobalOptimManager`: per-parameter overrides (`override_config`, `register_module_override`),
  applied at each step through bnb.optim.Optimizer._param_overrides;
* `state_dict()` in bitsandbytes' layout: each parameter's state tensors under
  "__bnb_optimizer_quant_state__" (bnb.optim loads that layout and the flat one).

Differences from bitsandbytes 0.50.2 (also in docs/OPTIMIZERS.md):
* `amsgrad=True` raises NotImplementedError in every class (bitsandbytes ignores it in Adam and
  AdamW, and raises ValueError in the 8-bit ones);
* 8-bit LAMB, LARS and `max_unorm` with 8-bit Adam clip the update as asked (bitsandbytes'
  8-bit kernels drop max_unorm);
* paged optimizers page on the CPU too (host memory from bnb; bitsandbytes falls back to
  ordinary tensors there with a warning);
* `load_state_dict(move_to_device=False)` still puts the state on the parameter's device (bnb's
  kernels need it there; bitsandbytes moves it at the first step anyway);
* param_groups carry bnb's settings (optim_bits, min_8bit_size, percentile_clipping, max_unorm,
  skip_zeros) and not bitsandbytes' unused alpha/t_alpha/t_beta3 outside AdEMAMix; either
  library loads the other's groups;
* subclasses that replace `init_state` / `update_step` are not called: the step is bnb's;
* `.args` is read when the optimizer is built (bitsandbytes reads it at every step): change a
  setting later through GlobalOptimManager or the param groups instead;
* AdamW's decay comes after the step, as in bitsandbytes' CUDA kernels (its CPU path decays
  first: the two differ by lr^2 * weight_decay * |update| per step).
"""

import inspect
import types

import torch

from bnb.optim import _optimizers as _bnb

__all__ = ["GlobalOptimManager", "MockArgs", "Optimizer1State", "Optimizer2State", "Optimizer8bit"]

#: Settings that bitsandbytes reads from `.args` (not from the param groups) and that an `args=`
#: object replaces; percentile_clipping and block_wise are bnb's (bitsandbytes < 0.45 had them too).
_ARGS_KEYS = ("optim_bits", "min_8bit_size", "percentile_clipping", "block_wise", "max_unorm", "skip_zeros")
#: The neutral value of each setting: a class whose bnb constructor lacks the setting accepts it.
_NEUTRAL = {"percentile_clipping": 100, "block_wise": True, "max_unorm": 0.0, "skip_zeros": False}


class MockArgs:
    """The `.args` of an optimizer built without `args=`: one attribute per setting."""

    def __init__(self, initial_data):
        for key, value in initial_data.items():
            setattr(self, key, value)

    def __repr__(self):
        return f"MockArgs({vars(self)!r})"


class GlobalOptimManager:
    """Per-parameter optimizer settings shared by every optimizer of this package (a singleton).

        mng = bitsandbytes.optim.GlobalOptimManager.get_instance()
        mng.register_parameters(model.parameters())          # optional, before moving the model
        opt = bitsandbytes.optim.Adam(model.parameters(), optim_bits=8)
        mng.override_config(model.emb.weight, "optim_bits", 32)

    A parameter's settings at a step are its group's, then those registered for its (group,
    index) position by register_parameters, then those for the parameter itself. optim_bits and
    min_8bit_size decide the state's width when the state is created (the parameter's first
    step); the other keys (lr, betas, eps, weight_decay, max_unorm, skip_zeros, ...) apply at
    every step. A key the optimizer does not have raises ValueError at the step.
    """

    _instance = None

    def __init__(self):
        raise RuntimeError("Call get_instance() instead")

    def initialize(self):
        """Forgets every override."""
        self.pid2config = {}
        self.index2config = {}
        self.optimizer = None
        self.uses_config_override = False
        self.module_weight_config_triple = []

    @classmethod
    def get_instance(cls):
        if cls._instance is None:
            cls._instance = cls.__new__(cls)
            cls._instance.initialize()
        return cls._instance

    def register_parameters(self, params):
        """Records, for parameters that already have overrides, their (group, index) position in
        `params` (a list of tensors or of param-group dicts), so that the overrides follow that
        position in an optimizer built later from equivalent parameters."""
        groups = list(params)
        if not groups:
            return
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for gi, group in enumerate(groups):
            for pi, p in enumerate(group["params"]):
                config = self.pid2config.get(id(p))
                if config is not None:
                    self.index2config[(gi, pi)] = config

    def override_config(self, parameters, key=None, value=None, key_value_dict=None):
        """Sets `key` to `value` (or every item of `key_value_dict`) for one parameter or a list
        of them. Settings given earlier for the same parameter are kept unless replaced."""
        if key is not None and key_value_dict is not None:
            raise ValueError("override_config: pass either key and value or key_value_dict, not both")
        if key is not None:
            if value is None:
                raise ValueError(f"override_config: key {key!r} needs a value")
            key_value_dict = {key: value}
        if not key_value_dict:
            return
        self.uses_config_override = True
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        for p in parameters:
            self.pid2config.setdefault(id(p), {}).update(key_value_dict)

    def register_module_override(self, module, param_name, config):
        """Settings for `getattr(module, param_name)`, applied by each optimizer that holds that
        parameter from its next step on (transformers' Trainer and peft use this to keep
        embeddings in 32-bit state: {"optim_bits": 32})."""
        self.module_weight_config_triple.append((module, param_name, config))


class Optimizer8bit(_bnb.Optimizer):
    """The base of every optimizer of bitsandbytes.optim: bnb's optimizer machinery plus
    bitsandbytes' `.args`, GlobalOptimManager overrides and state-dict layout."""

    _FSDP_WRAPPED_QUANT_STATE_KEY = _bnb.BITSANDBYTES_WRAPPED_STATE_KEY
    #: The per-parameter state keys that bitsandbytes never casts to the parameter's dtype (and
    #: that its state_dict nests under _FSDP_WRAPPED_QUANT_STATE_KEY).
    non_castable_tensor_keys = frozenset({"qmap1", "qmap2", "max1", "max2", "new_max1", "new_max2", "state1",
                                          "state2", "gnorm_vec", "absmax1", "absmax2", "unorm_vec"})

    #: bitsandbytes' optimizer_name of each bnb class
    _NAMES = {"adam": _bnb.Adam, "lamb": _bnb.LAMB, "ademamix": _bnb.AdEMAMix, "momentum": _bnb.SGD,
              "lars": _bnb.LARS, "rmsprop": _bnb.RMSprop, "adagrad": _bnb.Adagrad, "lion": _bnb.Lion}

    def __init__(self, params, defaults, optim_bits=32, is_paged=False):
        raise NotImplementedError(
            f"{type(self).__name__}: subclassing bitsandbytes.optim.Optimizer8bit with your own init_state/"
            "update_step is not supported by bnb's compatibility layer; subclass Optimizer1State or "
            "Optimizer2State with one of the optimizer names " + ", ".join(sorted(self._NAMES)))

    # -------------------------------------------------------------- construction
    def _compat_setup(self, optimizer_name, args_obj, settings):
        """The attributes bitsandbytes' optimizers carry, after bnb's constructor ran."""
        self.optimizer_name = optimizer_name
        self.args = args_obj if args_obj is not None else MockArgs(settings)
        self.mng = GlobalOptimManager.get_instance()
        self.initialized = False
        self._module_overrides_done = (None, 0)

    @staticmethod
    def _settings_from(args_obj, settings):
        """bitsandbytes reads optim_bits, min_8bit_size, max_unorm and skip_zeros from an `args`
        object when one is given, instead of the constructor's values; missing ones keep those."""
        if args_obj is None:
            return settings
        out = dict(settings)
        for key in _ARGS_KEYS:
            if hasattr(args_obj, key):
                out[key] = getattr(args_obj, key)
        return out

    # Set by _families.define on each concrete class.
    _bnb_class = None
    _optimizer_name = None
    _variant_bits = None  # 8 or 32 for the *8bit / *32bit classes
    _variant_paged = False  # True for the Paged* classes

    def _from_signature(self, arguments, optim_bits_parameter):
        """The constructor of the concrete classes: `arguments` bound to bitsandbytes' signature.
        A *32bit class ignores optim_bits and a Paged* class is_paged, as bitsandbytes does; an
        *8bit class that has optim_bits accepts only that parameter's default."""
        name = type(self).__name__
        args_obj = arguments.pop("args", None)
        bits = arguments.pop("optim_bits", 32)
        if self._variant_bits == 8 and optim_bits_parameter is not None and bits != optim_bits_parameter.default:
            raise ValueError(f"{name} always keeps 8-bit state: optim_bits={bits!r} is not allowed (it may only be "
                             f"{optim_bits_parameter.default}, its default, kept for bitsandbytes' signature)")
        if self._variant_bits is not None:
            bits = self._variant_bits
        paged = arguments.pop("is_paged", False) or self._variant_paged
        settings = dict(_NEUTRAL, optim_bits=bits)
        for key in _ARGS_KEYS:
            if key in arguments:
                settings[key] = arguments.pop(key)
        self._construct(self._bnb_class, self._optimizer_name, arguments, settings, args_obj, paged)

    def _construct(self, bnb_cls, optimizer_name, arguments, settings, args_obj, is_paged):
        """Runs bnb_cls's constructor on self with the bitsandbytes-level `arguments` (the
        family's own ones: lr, betas, momentum, ...) and `settings` (_ARGS_KEYS)."""
        settings = self._settings_from(args_obj, settings)
        accepted = _accepted_keywords(bnb_cls)
        kwargs = dict(arguments)
        for key, value in settings.items():
            if key in accepted:
                kwargs[key] = value
            elif value != _NEUTRAL.get(key, object()):
                raise NotImplementedError(f"{type(self).__name__}: {key}={value!r} is not supported for this "
                                          "optimizer by bnb")
        if "is_paged" in accepted:
            kwargs["is_paged"] = bool(is_paged)
        elif is_paged:
            raise NotImplementedError(f"{type(self).__name__}: paged state is not available for this optimizer")
        bnb_cls.__init__(self, **kwargs)
        self._compat_setup(optimizer_name, args_obj, settings)

    # -------------------------------------------------------------- overrides
    def check_overrides(self):
        """Turns GlobalOptimManager.register_module_override entries that name one of this
        optimizer's parameters into overrides of that parameter (done at every step for entries
        added since the last one)."""
        triples = self.mng.module_weight_config_triple
        seen_list, seen_count = self._module_overrides_done
        start = seen_count if seen_list is triples and seen_count <= len(triples) else 0
        if start == len(triples):
            return
        positions = {id(p): (gi, pi) for gi, group in enumerate(self.param_groups)
                     for pi, p in enumerate(group["params"])}
        for module, attr, config in triples[start:]:
            target = getattr(module, attr, None)
            if not isinstance(target, torch.Tensor):
                raise ValueError(f"register_module_override: {type(module).__name__}.{attr} is not a tensor")
            where = positions.get(id(target))
            if where is not None:
                self.mng.pid2config[id(target)] = config
                self.mng.index2config[where] = config
        self._module_overrides_done = (triples, len(triples))

    def _param_overrides(self):
        mng = self.mng
        self.check_overrides()
        self.initialized = True
        if not mng.pid2config and not mng.index2config:
            return None
        out = {}
        groups = self.param_groups
        for (gi, pi), config in mng.index2config.items():
            if gi < len(groups) and pi < len(groups[gi]["params"]):
                out[id(groups[gi]["params"][pi])] = dict(config)
        for pid, config in mng.pid2config.items():
            out.setdefault(pid, {}).update(config)
        return out

    def get_config(self, gindex, pindex, group):
        """The settings that parameter `pindex` of group `gindex` gets at the next step."""
        config = {k: v for k, v in group.items() if k != "params"}
        for key in _bnb.Optimizer.SETTINGS:
            config[key] = self._setting(group, key)
        own = (self._param_overrides() or {}).get(id(self.param_groups[gindex]["params"][pindex]))
        if own:
            config = {k: v for k, v in self._group_with(dict(group), own).items() if k != "params"}
        return config

    # -------------------------------------------------------------- state
    def to_gpu(self):
        """Moves non-paged state tensors to their parameter's device (bnb's steps and
        load_state_dict keep them there already)."""
        for group in self.param_groups:
            for p in group["params"]:
                for key, value in self.state.get(p, {}).items():
                    if isinstance(value, torch.Tensor) and not _bnb.is_paged(value) and value.device != p.device:
                        self.state[p][key] = value.to(p.device)

    def prefetch_state(self, p):
        """bnb prefetches paged state before each update itself; kept for callers of the name."""

    def state_dict(self):
        """torch's state dict with each parameter's state tensors (state1, state2, qmap*, absmax*,
        unorm_vec, gnorm_vec) nested under "__bnb_optimizer_quant_state__", as bitsandbytes
        writes it; except the element-wise state of FSDP1's parameters (bnb.optim's state_dict),
        which FSDP1 must see at the top to gather it (a nested dict would have to be the same on
        every rank)."""
        sd = super().state_dict()
        wrapped_state = {}
        for index, param_state in sd["state"].items():
            if not isinstance(param_state, dict) or param_state.get(_bnb.ELEMENTWISE_STATE_KEY):
                wrapped_state[index] = param_state
                continue
            plain = {k: v for k, v in param_state.items() if k not in self.non_castable_tensor_keys}
            nested = {k: v for k, v in param_state.items() if k in self.non_castable_tensor_keys}
            if nested:
                plain[self._FSDP_WRAPPED_QUANT_STATE_KEY] = nested
            wrapped_state[index] = plain
        sd["state"] = wrapped_state
        return sd

    def load_state_dict(self, state_dict, move_to_device=True):
        """Loads a state dict of this layer, of bnb.optim or of bitsandbytes (nested or flat).
        The state always goes to the parameter's device (move_to_device is accepted for
        bitsandbytes' signature)."""
        return super().load_state_dict(state_dict)


_keywords_cache = {}


def _accepted_keywords(cls):
    names = _keywords_cache.get(cls)
    if names is None:
        names = _keywords_cache[cls] = frozenset(inspect.signature(cls.__init__).parameters)
    return names


class _ByName(Optimizer8bit):
    """Optimizer1State/Optimizer2State built from bitsandbytes' optimizer name: the bnb class of
    that name supplies the update rule (its _kind and _coefficients)."""

    _STATES = None

    def _by_name(self, optimizer_name, params, defaults, settings, args_obj, is_paged):
        bnb_cls = self._NAMES.get(optimizer_name)
        two = bnb_cls is not None and bnb_cls._kind in _bnb._TWO_STATES
        if bnb_cls is None or (2 if two else 1) != self._STATES:
            names = sorted(n for n, c in self._NAMES.items() if (c._kind in _bnb._TWO_STATES) == (self._STATES == 2))
            raise NotImplementedError(f"{type(self).__name__}: optimizer_name {optimizer_name!r} is not one bnb "
                                      f"offers for {self._STATES}-state optimizers ({', '.join(names)})")
        self._kind = bnb_cls._kind
        self._coefficients = types.MethodType(bnb_cls._coefficients, self)
        settings = self._settings_from(args_obj, settings)
        if not settings.get("block_wise", True) and settings["optim_bits"] == 8:
            _bnb._not_supported(type(self).__name__, "8-bit state with block_wise=False")
        betas = defaults["betas"]
        if isinstance(betas, str):  # bitsandbytes accepts "(0.9, 0.999)"
            betas = tuple(float(b) for b in betas.replace("(", "").replace(")", "").split(","))
        for i, b in enumerate(betas):
            _bnb._check_number(type(self).__name__, f"betas[{i}]", b, 0.0, 1.0, high_open=True)
        defaults = dict(defaults, betas=tuple(float(b) for b in betas))
        _bnb.Optimizer.__init__(self, params, defaults, settings["optim_bits"], settings["min_8bit_size"],
                                settings.get("percentile_clipping", 100), True, settings["max_unorm"],
                                bool(is_paged), None, settings["skip_zeros"])
        self._compat_setup(optimizer_name, args_obj, settings)


class Optimizer2State(_ByName):
    """Base of the optimizers with two states (Adam, AdamW, LAMB, AdEMAMix). Called directly, or
    from a subclass, with optimizer_name "adam", "lamb" or "ademamix"."""

    _STATES = 2

    def __init__(self, optimizer_name, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 optim_bits=32, args=None, min_8bit_size=4096, max_unorm=0.0, skip_zeros=False, is_paged=False,
                 alpha=0.0, t_alpha=None, t_beta3=None, *, percentile_clipping=100, block_wise=True):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        if optimizer_name == "ademamix":
            defaults.update(alpha=alpha, t_alpha=t_alpha, t_beta3=t_beta3)
        settings = dict(optim_bits=optim_bits, min_8bit_size=min_8bit_size, percentile_clipping=percentile_clipping,
                        block_wise=block_wise, max_unorm=max_unorm, skip_zeros=skip_zeros)
        self._by_name(optimizer_name, params, defaults, settings, args, is_paged)


class Optimizer1State(_ByName):
    """Base of the optimizers with one state (SGD, LARS, RMSprop, Adagrad, Lion). Called directly,
    or from a subclass, with optimizer_name "momentum", "lars", "rmsprop", "adagrad" or "lion"."""

    _STATES = 1

    def __init__(self, optimizer_name, params, lr=1e-3, betas=(0.9, 0.0), eps=1e-8, weight_decay=0.0,
                 optim_bits=32, args=None, min_8bit_size=4096, max_unorm=0.0, skip_zeros=False, is_paged=False,
                 *, percentile_clipping=100, block_wise=True):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        settings = dict(optim_bits=optim_bits, min_8bit_size=min_8bit_size, percentile_clipping=percentile_clipping,
                        block_wise=block_wise, max_unorm=max_unorm, skip_zeros=skip_zeros)
        self._by_name(optimizer_name, params, defaults, settings, args, is_paged)
