"""Placeholder: filled in by the compatibility layer's _ops work."""
