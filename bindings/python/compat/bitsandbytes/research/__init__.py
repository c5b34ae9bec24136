"""bitsandbytes.research: the experimental FP8-simulation and SwitchBack entry points that older
bitsandbytes releases shipped (the 0.50 API has none). The names exist so that code importing them
loads; bnb has no kernels for them, so calling one raises NotImplementedError saying so.
"""

from . import nn
from ._unserved import not_served

matmul_fp8_global = not_served("research.matmul_fp8_global")
matmul_fp8_mixed = not_served("research.matmul_fp8_mixed")
switchback_bnb = not_served("research.switchback_bnb")

__all__ = ["matmul_fp8_global", "matmul_fp8_mixed", "nn", "switchback_bnb"]
