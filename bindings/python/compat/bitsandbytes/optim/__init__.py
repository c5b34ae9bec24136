"""Placeholder: bitsandbytes.optim (filled in by the optim work)."""
