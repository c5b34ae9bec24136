"""bitsandbytes.optim.adamw: bnb.optim.AdamW as bitsandbytes' classes
AdamW, AdamW8bit, AdamW32bit, PagedAdamW, PagedAdamW8bit, PagedAdamW32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["AdamW", "AdamW8bit", "AdamW32bit", "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit"]

AdamW, AdamW8bit, AdamW32bit, PagedAdamW, PagedAdamW8bit, PagedAdamW32bit = define(__name__, "AdamW")
