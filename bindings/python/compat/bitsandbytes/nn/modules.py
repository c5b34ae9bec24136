"""Placeholder: bitsandbytes.nn layers (filled in by the nn work)."""
from bnb.nn import Int8Params, Linear4bit, Linear8bitLt, LinearFP4, LinearNF4, Params4bit  # noqa: F401
