"""bitsandbytes' public Python API, served by bnb.

This package is bnb's compatibility layer (bindings/python/compat). transformers, peft and
accelerate import `bitsandbytes` by name; installed with `pip install . ./bindings/python/compat`
from the bnb repository, they get these modules, and every quantization, matmul and optimizer
kernel runs in libbnb. The names, arguments and state-dict keys follow the bitsandbytes release
in _version.API_VERSION; the implementation is bnb's own.
"""

from . import _guard

_guard.check_environment()

import torch  # noqa: E402  (bitsandbytes imports torch on import; its users expect that)

from ._version import API_VERSION, __version__  # noqa: E402
from . import _ops, cextension, functional, research, utils  # noqa: E402
from .autograd._functions import MatmulLtState, matmul, matmul_4bit  # noqa: E402
from .nn import modules  # noqa: E402
from . import nn, optim  # noqa: E402

# Read by transformers and diffusers: a backend-neutral build, and the torch device types whose
# tensors this library takes. bnb serves `cpu` and `cuda` (NVIDIA through the CUDA plugin, AMD
# through the HIP plugin, which torch also names `cuda`).
features = {"multi_backend"}
supported_torch_devices = {"cpu", "cuda"}

__all__ = ["API_VERSION", "MatmulLtState", "__version__", "cextension", "features", "functional", "matmul",
           "matmul_4bit", "modules", "nn", "optim", "research", "supported_torch_devices", "utils"]
