"""bitsandbytes.optim.lamb: bnb.optim.LAMB as bitsandbytes' classes
LAMB, LAMB8bit, LAMB32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["LAMB", "LAMB8bit", "LAMB32bit"]

LAMB, LAMB8bit, LAMB32bit = define(__name__, "LAMB")
