"""bitsandbytes.optim.rmsprop: bnb.optim.RMSprop as bitsandbytes' classes
RMSprop, RMSprop8bit, RMSprop32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["RMSprop", "RMSprop8bit", "RMSprop32bit"]

RMSprop, RMSprop8bit, RMSprop32bit = define(__name__, "RMSprop")
