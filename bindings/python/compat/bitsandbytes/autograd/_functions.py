"""Placeholder: matmul, matmul_4bit and MatmulLtState (filled in by the autograd work)."""
from bnb.functional import MatmulLtState, matmul, matmul_4bit  # noqa: F401
