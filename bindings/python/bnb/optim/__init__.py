"""torch optimizers with 32-bit or 8-bit blockwise state, computed by libbnb (bnb_optimizer_update,
and bnb_optimizer_update_multi for many parameters in one call).

    import bnb
    opt = bnb.optim.AdamW8bit(model.parameters(), lr=1e-3)

The class names and constructor arguments are bitsandbytes' (bitsandbytes.optim). torch is
imported only when one of these names is first used, so `import bnb` works without torch; the
classes themselves live in bnb/optim/_optimizers.py.
"""

_BASE = ("Adam", "AdamW", "SGD", "RMSprop", "Lion", "Adagrad", "AdEMAMix", "LAMB", "LARS")
_PAGED = ("Adam", "AdamW", "Lion", "AdEMAMix")

__all__ = sorted(
    list(_BASE)
    + [n + suffix for n in _BASE for suffix in ("8bit", "32bit")]
    + ["Paged" + n + suffix for n in _PAGED for suffix in ("", "8bit", "32bit")]
    + ["Optimizer", "is_paged", "paged_zeros"]
)


def __getattr__(name):
    if name in __all__:
        from . import _optimizers

        value = getattr(_optimizers, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'bnb.optim' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
