"""bitsandbytes.optim.sgd: bnb.optim.SGD as bitsandbytes' classes
SGD, SGD8bit, SGD32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["SGD", "SGD8bit", "SGD32bit"]

SGD, SGD8bit, SGD32bit = define(__name__, "SGD")
