"""Builds bitsandbytes' optimizer classes (Adam, Adam8bit, PagedAdam, ...) over bnb.optim's.

A family is one bnb class (bnb.optim.Adam, ...) and bitsandbytes' constructor signature for it.
Each class of the family has that signature, less the parameters bitsandbytes leaves out of that
variant (optim_bits in most *8bit/*32bit classes, is_paged in most Paged* ones), so that
positional calls bind as they do in bitsandbytes. Its constructor binds the call to the
signature and hands the values to Optimizer8bit._from_signature, which runs bnb's constructor.
The keyword-only percentile_clipping and block_wise are bnb's additions (older bitsandbytes
releases had them).
"""

import inspect

from bnb.optim import _optimizers as _bnb

from .optimizer import Optimizer1State, Optimizer2State


# bitsandbytes 0.50.2's signatures, one per family (the bodies are never run).
def _adam(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, optim_bits=32,
          args=None, min_8bit_size=4096, is_paged=False, *, percentile_clipping=100, block_wise=True): ...


def _adamw(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, optim_bits=32,
           args=None, min_8bit_size=4096, is_paged=False, *, percentile_clipping=100, block_wise=True): ...


def _lion(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, optim_bits=32, args=None, min_8bit_size=4096,
          is_paged=False, *, percentile_clipping=100, block_wise=True): ...


def _ademamix(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, t_alpha=None, t_beta3=None, eps=1e-8,
              weight_decay=1e-2, optim_bits=32, min_8bit_size=4096, is_paged=False): ...


def _sgd(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, optim_bits=32, args=None,
         min_8bit_size=4096, *, percentile_clipping=100, block_wise=True): ...


def _lars(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, optim_bits=32, args=None,
          min_8bit_size=4096, max_unorm=0.02, *, percentile_clipping=100): ...


def _lamb(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
          adam_w_mode=True, optim_bits=32, args=None, min_8bit_size=4096, max_unorm=1.0, *, percentile_clipping=100,
          block_wise=True): ...


def _rmsprop(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, optim_bits=32,
             args=None, min_8bit_size=4096, *, percentile_clipping=100, block_wise=True): ...


def _adagrad(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, optim_bits=32,
             args=None, min_8bit_size=4096, *, percentile_clipping=100, block_wise=True): ...


class _Family:
    """One family's specification. variant_optim_bits: the *8bit/*32bit classes keep optim_bits
    ("default32": defaulting to 32, as Adam8bit's; "own": defaulting to the class's width, as
    Adagrad8bit's; None: dropped). paged_keeps_is_paged: the Paged* classes keep is_paged."""

    def __init__(self, name, bnb_cls, optimizer_name, template, paged, variant_optim_bits, paged_keeps_is_paged,
                 parents=None):
        self.name, self.bnb_cls, self.optimizer_name = name, bnb_cls, optimizer_name
        self.signature = inspect.signature(template)
        self.paged = paged
        self.variant_optim_bits = variant_optim_bits
        self.paged_keeps_is_paged = paged_keeps_is_paged
        self.parents = parents or {}


FAMILIES = {f.name: f for f in (
    _Family("Adam", _bnb.Adam, "adam", _adam, True, "default32", True),
    _Family("AdamW", _bnb.AdamW, "adam", _adamw, True, "default32", False),
    _Family("Lion", _bnb.Lion, "lion", _lion, True, None, False),
    _Family("AdEMAMix", _bnb.AdEMAMix, "ademamix", _ademamix, True, None, False,
            parents={"AdEMAMix8bit": "AdEMAMix", "PagedAdEMAMix": "AdEMAMix", "PagedAdEMAMix8bit": "AdEMAMix8bit",
                     "PagedAdEMAMix32bit": "AdEMAMix32bit"}),
    _Family("SGD", _bnb.SGD, "momentum", _sgd, False, None, False),
    _Family("LARS", _bnb.LARS, "lars", _lars, False, None, False),
    _Family("LAMB", _bnb.LAMB, "lamb", _lamb, False, None, False),
    _Family("RMSprop", _bnb.RMSprop, "rmsprop", _rmsprop, False, None, False),
    _Family("Adagrad", _bnb.Adagrad, "adagrad", _adagrad, False, "own", False),
)}


def _variant_signature(family, bits, paged):
    params = list(family.signature.parameters.values())
    out = []
    for p in params:
        if p.name == "optim_bits" and bits:
            if family.variant_optim_bits is None:
                continue
            if family.variant_optim_bits == "own":
                p = p.replace(default=bits)
        if p.name == "is_paged" and paged and not family.paged_keeps_is_paged:
            continue
        out.append(p)
    return family.signature.replace(parameters=out)


def _make_init(signature, name):
    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}(): {e}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        self._from_signature(arguments, signature.parameters.get("optim_bits"))

    __init__.__signature__ = signature
    __init__.__qualname__ = f"{name}.__init__"
    return __init__


def define(module_name, family_name):
    """The classes of one family, in bitsandbytes' order: X, X8bit, X32bit, then PagedX,
    PagedX8bit, PagedX32bit where bitsandbytes has them; their __module__ is module_name."""
    family = FAMILIES[family_name]
    state_base = Optimizer2State if family.bnb_cls._kind in _bnb._TWO_STATES else Optimizer1State
    combos = [(None, False), (8, False), (32, False)]
    if family.paged:
        combos += [(None, True), (8, True), (32, True)]
    made = {}
    for bits, paged in combos:
        name = ("Paged" if paged else "") + family.name + (f"{bits}bit" if bits else "")
        parent = family.parents.get(name)
        bases = (made[parent],) if parent else (state_base, family.bnb_cls)
        signature = _variant_signature(family, bits, paged)
        what = []
        if bits:
            what.append(f"always {bits}-bit state")
        if paged:
            what.append("paged state")
        doc = (f"bitsandbytes.optim.{name}: bnb.optim.{family.bnb_cls.__name__}"
               + (f" with {' and '.join(what)}" if what else "") + f", under bitsandbytes' name and arguments.\n\n"
               + (family.bnb_cls.__doc__ or ""))
        made[name] = type(name, bases, {
            "__init__": _make_init(signature, name),
            "__module__": module_name,
            "__qualname__": name,
            "__doc__": doc,
            "_bnb_class": family.bnb_cls,
            "_optimizer_name": family.optimizer_name,
            "_variant_bits": bits,
            "_variant_paged": paged,
        })
    return tuple(made.values())
