"""Placeholder: filled in by the compatibility layer's cextension work."""
