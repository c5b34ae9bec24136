"""bitsandbytes.optim.lion: bnb.optim.Lion as bitsandbytes' classes
Lion, Lion8bit, Lion32bit, PagedLion, PagedLion8bit, PagedLion32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["Lion", "Lion8bit", "Lion32bit", "PagedLion", "PagedLion8bit", "PagedLion32bit"]

Lion, Lion8bit, Lion32bit, PagedLion, PagedLion8bit, PagedLion32bit = define(__name__, "Lion")
