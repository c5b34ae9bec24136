"""Import-time checks of the compatibility layer: bnb is importable, and no second `bitsandbytes`
distribution (the real one) sits on sys.path beside this one.

Precedence, as documented in bindings/python/compat/README.md: one environment holds one
distribution named `bitsandbytes`. pip enforces that within one site-packages (installing either
replaces the other). Across sys.path entries (a user site, a --target folder, PYTHONPATH) Python
imports whichever package comes first; when that is this layer and another `bitsandbytes`
distribution is visible too, the import fails with an error that names both, instead of
silently shadowing it. BNB_COMPAT_SHADOW=1 states the other order explicitly: this layer
is used even though another distribution is visible (for side-by-side benchmarks in one
environment); the import then warns once instead of failing.
"""

import importlib.metadata as _md
import os
import warnings

_LOCAL_LABEL = "+bnb"


def _location(dist):
    try:
        return os.path.realpath(str(dist.locate_file("")))
    except Exception:  # a finder without files on disk
        return repr(dist)


def other_distributions():
    """(version, location) of every `bitsandbytes` distribution on sys.path that is not this layer."""
    seen, others = set(), []
    for dist in _md.distributions(name="bitsandbytes"):
        version = dist.version or ""
        where = _location(dist)
        if version.endswith(_LOCAL_LABEL) or (version, where) in seen:
            continue
        seen.add((version, where))
        others.append((version, where))
    return others


def check_environment():
    others = other_distributions()
    if others:
        listed = "; ".join(f"bitsandbytes {v} in {w}" for v, w in others)
        if os.environ.get("BNB_COMPAT_SHADOW") == "1":
            warnings.warn(f"BNB_COMPAT_SHADOW=1: bnb's bitsandbytes layer is used; also visible: {listed}",
                          stacklevel=3)
            return
        raise ImportError(
            f"bnb's bitsandbytes compatibility layer ({os.path.dirname(__file__)}) and another bitsandbytes "
            f"distribution are both installed ({listed}). Only one may be installed: run `pip uninstall "
            "bitsandbytes` and reinstall the one you want (bnb's: `pip install . ./bindings/python/compat` "
            "from the bnb repository), or set BNB_COMPAT_SHADOW=1 to use this layer regardless.")
    try:
        import bnb  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "bnb's bitsandbytes compatibility layer needs the bnb package: install both from the bnb "
            f"repository with `pip install . ./bindings/python/compat` ({e})") from e
