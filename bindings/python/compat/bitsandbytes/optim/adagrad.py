"""bitsandbytes.optim.adagrad: bnb.optim.Adagrad as bitsandbytes' classes
Adagrad, Adagrad8bit, Adagrad32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["Adagrad", "Adagrad8bit", "Adagrad32bit"]

Adagrad, Adagrad8bit, Adagrad32bit = define(__name__, "Adagrad")
