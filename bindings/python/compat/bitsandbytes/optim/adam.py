"""bitsandbytes.optim.adam: bnb.optim.Adam as bitsandbytes' classes
Adam, Adam8bit, Adam32bit, PagedAdam, PagedAdam8bit, PagedAdam32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["Adam", "Adam8bit", "Adam32bit", "PagedAdam", "PagedAdam8bit", "PagedAdam32bit"]

Adam, Adam8bit, Adam32bit, PagedAdam, PagedAdam8bit, PagedAdam32bit = define(__name__, "Adam")
