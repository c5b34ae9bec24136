"""bitsandbytes.research.nn: the FP8-simulation linear layers of older bitsandbytes releases, as names
only; constructing one raises NotImplementedError (bnb has no kernels for them)."""

import torch

from .._unserved import message


class _Unserved(torch.nn.Linear):
    _name = ""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(message("research.nn." + self._name))


class LinearFP8Mixed(_Unserved):
    _name = "LinearFP8Mixed"


class LinearFP8Global(_Unserved):
    _name = "LinearFP8Global"


__all__ = ["LinearFP8Global", "LinearFP8Mixed"]
