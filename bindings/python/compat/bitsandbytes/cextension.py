"""bitsandbytes.cextension: which native backend is in use, as bitsandbytes' users read it.

bitsandbytes loads one of its own shared libraries here; this layer's native library is bnb's
libbnb (with its CPU, CUDA and HIP plugins), loaded by the bnb package. `lib` stands for it:
`lib.compiled_with_cuda` says whether a GPU backend of bnb can run, `lib.bnb_*` are libbnb's C
functions, and any other (bitsandbytes C symbol) name gives a function that raises
NotImplementedError naming it, since the Python API (bitsandbytes.functional, torch.ops.bitsandbytes)
is what this layer serves.
"""

import logging

import torch

import bnb
from bnb import _lib

logger = logging.getLogger(__name__)


def _gpu_backend_available():
    return any(info["name"] in ("cuda", "hip") and info["available"] for info in bnb.backends())


class BNBNativeLibrary:
    """libbnb, standing where bitsandbytes keeps its ctypes library."""

    def __init__(self, path, compiled_with_cuda):
        self.path = path
        self.compiled_with_cuda = compiled_with_cuda

    def __getattr__(self, name):
        if name.startswith("bnb_"):
            return getattr(_lib.lib, name)

        def not_served(*args, **kwargs):
            raise NotImplementedError(
                f"bitsandbytes' native function {name!r} does not exist in bnb's library ({self.path}); "
                "bnb serves bitsandbytes' Python API instead: call bitsandbytes.functional or "
                "torch.ops.bitsandbytes.*")
        if name.startswith("__"):
            raise AttributeError(name)
        return not_served

    def __getitem__(self, name):
        return self.__getattr__(name)

    def __repr__(self):
        return f"BNBNativeLibrary({self.path!r}, compiled_with_cuda={self.compiled_with_cuda})"


def get_rocm_gpu_arch() -> str:
    """The gfx architecture of the first AMD GPU torch sees, else 'unknown'."""
    if not torch.version.hip or not torch.cuda.is_available():
        return "unknown"
    try:
        name = torch.cuda.get_device_properties(0).gcnArchName
    except Exception as e:  # an old torch without the property, a device that went away
        logger.warning(f"could not read the ROCm GPU architecture: {e}")
        return "unknown"
    return name.split(":")[0] or "unknown"


def get_rocm_warpsize() -> int:
    """The wavefront size of the first AMD GPU (64 on CDNA, 32 on RDNA); 32 elsewhere."""
    if not torch.version.hip or not torch.cuda.is_available():
        return 32
    return int(getattr(torch.cuda.get_device_properties(0), "warp_size", 64))


HIP_ENVIRONMENT = bool(torch.version.hip)
if HIP_ENVIRONMENT:
    BNB_BACKEND = "ROCm"
elif torch.cuda.is_available():
    BNB_BACKEND = "CUDA"
else:
    BNB_BACKEND = "CPU"
ROCM_GPU_ARCH = get_rocm_gpu_arch()
ROCM_WARP_SIZE_64 = get_rocm_warpsize() == 64
COMPILED_WITH_CUDA = _gpu_backend_available()  # read by integrations written for older releases

lib = BNBNativeLibrary(bnb.library_path, COMPILED_WITH_CUDA)

__all__ = ["BNBNativeLibrary", "BNB_BACKEND", "COMPILED_WITH_CUDA", "HIP_ENVIRONMENT", "ROCM_GPU_ARCH",
           "ROCM_WARP_SIZE_64", "get_rocm_gpu_arch", "get_rocm_warpsize", "lib"]
