"""bnb: bitsandbytes' 8-bit and 4-bit quantization formats on a stable C library (libbnb).

    import bnb, numpy as np
    q, state = bnb.quantize_4bit(np.random.randn(4096).astype(np.float32), quant_type="nf4")
    x = bnb.dequantize_4bit(q, state)

bnb.matmul (LLM.int8()) and bnb.matmul_4bit are the bitsandbytes-style products; bnb.nn has the
torch layers Linear4bit / LinearNF4 / LinearFP4 and Linear8bitLt (imported on first access).

Works with numpy arrays (host) and torch tensors (CPU and GPU; torch is imported only when a
tensor is passed). Errors raise bnb.Error subclasses that are also ValueError,
NotImplementedError, MemoryError or RuntimeError, carrying the library's message.
Environment: BNB_LIBRARY_PATH (a libbnb file or its directory) overrides the bundled library;
BNB_NUM_THREADS, BNB_LOG_LEVEL and BNB_CHECK_FINITE are read by the library itself, when the first
array of a device is passed (BNB_CHECK_FINITE=1: a NaN or infinity in what is quantized, in the
activations of a product or in a gradient raises InvalidArgumentError naming the argument and the
index of the first one, e.g. "A[17] is not finite", before anything is written). The arrays
pick the backend (numpy arrays and CPU tensors: cpu; GPU tensors: cuda or hip); BNB_BACKEND, when
it names a backend, must name that one: any other value is an error that names BNB_BACKEND (and, for a
value that is not a backend, lists those it takes), never a silent fallback.

Array sizes are checked against what the shapes, blocksize and quant type imply before the
library is called, and QuantState.from_dict checks every item: a ValueError names the argument
or key and both sizes.
"""

from . import _lib
from . import optim  # torch optimizers; imports torch only when a class is used
from ._lib import (BackendError, Error, InvalidArgumentError, NotSupportedError, OutOfMemoryError)
from .functional import (MatmulLtState, QuantState, compress_absmax, dequantize_4bit, dequantize_blockwise,
                         get_code_table, int8_linear_matmul, int8_mm_dequant, int8_vectorwise_quant,
                         linear4bit_state_dict, load_linear4bit_state_dict, matmul, matmul_4bit, quantize_4bit,
                         quantize_blockwise)

__version__ = _lib.version()

_LAZY_SUBMODULES = ("nn",)  # submodules that import torch: loaded on first access (bnb.nn)


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


library_path = _lib.LIBRARY_PATH


def backends():
    """The backends libbnb knows about: dicts with name, kind, available, device_count, detail."""
    return _lib.backend_infos()


def backend_capabilities(backend):
    """What a loaded backend ("cpu", "cuda", "hip", or its index in backends()) runs and the limits
    its calls are checked against: a dict with ops, float_dtypes, quant_types, optimizers,
    optimizer_state_bits, device_count, max_elements, blocksize_8bit_min/max, blocksize_4bit_min/max,
    int8_max_k, optimizer_block and optimizer_max_step. BackendError when it did not load."""
    return _lib.backend_capabilities(backend)


def _register_torch_ops_if_loaded():
    # A model compiled later must find the ops already registered; when torch is not imported
    # yet they are registered on the first tensor passed in.
    import sys

    if sys.modules.get("torch") is not None:
        from . import functional

        functional._torch_ops()


_register_torch_ops_if_loaded()

__all__ = [
    "BackendError", "Error", "InvalidArgumentError", "MatmulLtState", "NotSupportedError", "OutOfMemoryError",
    "QuantState", "matmul",
    "backend_capabilities", "backends", "compress_absmax", "dequantize_4bit", "dequantize_blockwise", "get_code_table",
    "int8_linear_matmul", "int8_mm_dequant", "int8_vectorwise_quant", "library_path",
    "linear4bit_state_dict", "load_linear4bit_state_dict", "matmul_4bit", "quantize_4bit",
    "quantize_blockwise",
]
