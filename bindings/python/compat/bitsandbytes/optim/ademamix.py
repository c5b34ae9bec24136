"""bitsandbytes.optim.ademamix: bnb.optim.AdEMAMix as bitsandbytes' classes
AdEMAMix, AdEMAMix8bit, AdEMAMix32bit, PagedAdEMAMix, PagedAdEMAMix8bit, PagedAdEMAMix32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

from ._families import define

__all__ = ["AdEMAMix", "AdEMAMix8bit", "AdEMAMix32bit", "PagedAdEMAMix", "PagedAdEMAMix8bit", "PagedAdEMAMix32bit"]

(AdEMAMix, AdEMAMix8bit, AdEMAMix32bit, PagedAdEMAMix, PagedAdEMAMix8bit,
 PagedAdEMAMix32bit) = define(__name__, "AdEMAMix")
