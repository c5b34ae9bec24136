"""bitsandbytes.research: placeholder."""
