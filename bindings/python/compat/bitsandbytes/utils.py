"""Placeholder: filled in by the compatibility layer's utils work."""
