"""Placeholder: filled in by the compatibility layer's functional work."""
