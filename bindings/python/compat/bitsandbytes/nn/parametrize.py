"""bitsandbytes.nn.parametrize: 4-bit quantization of any module parameter (not only a Linear's
weight; e.g. the stacked expert weights of an MoE layer) through torch's parametrizations.

    replace_parameter_4bit(module, "weight", quant_type="nf4")
    module.weight            # the dequantized tensor, computed on access (cached within a forward)
    module.state_dict()      # "weight" (packed codes) + "weight.absmax", ..., as Linear4bit writes them

The parameter's storage becomes the packed codes (`module.parametrizations[name].original`); a
Bnb4bitParametrization holding the QuantState dequantizes it on access. The dequantized value
carries no gradient (the quantized parameter is frozen).
"""

from functools import partial

import torch
import torch.nn.utils.parametrize as P

from .. import functional as F

__all__ = ["Bnb4bitParametrization", "replace_parameter_4bit", "replace_parameter_4bit_prequantized"]


class Bnb4bitParametrization(torch.nn.Module):
    """Turns the packed 4-bit codes of a parameter back into its values: dequantize_4bit with
    `quant_state` (shape and dtype of the original parameter)."""

    def __init__(self, quant_state):
        super().__init__()
        self.quant_state = quant_state

    @torch.no_grad()
    def forward(self, quantized_param):
        return F.dequantize_4bit(quantized_param, self.quant_state)


def _parameter(module, param_name):
    if not hasattr(module, param_name):
        raise AttributeError(f"{type(module).__name__} has no parameter {param_name!r}")
    param = getattr(module, param_name)
    if not isinstance(param, torch.nn.Parameter):
        raise TypeError(f"{type(module).__name__}.{param_name} is a {type(param).__name__}, not an nn.Parameter")
    return param


def replace_parameter_4bit(module, param_name, compress_statistics=False, quant_type="nf4", blocksize=None):
    """Quantizes `module.<param_name>` to 4 bits (NF4/FP4, blocks of `blocksize`, default 64;
    double-quantized statistics with compress_statistics) and registers the parametrization that
    dequantizes it on access, the caching hooks and the state-dict hook."""
    param = _parameter(module, param_name)
    packed, quant_state = F.quantize_4bit(param.data, blocksize=blocksize, compress_statistics=compress_statistics,
                                          quant_type=quant_type)
    setattr(module, param_name, torch.nn.Parameter(packed, requires_grad=False))
    _parametrize(module, param_name, quant_state)


def replace_parameter_4bit_prequantized(module, param_name, qs_dict, device):
    """For a parameter that already holds packed codes (loaded from a state dict): reads its
    QuantState from `qs_dict` (the `<param_name>.`-prefixed items the state dict holds, with or
    without the prefix) onto `device` and registers the parametrization and hooks."""
    _parameter(module, param_name)
    _parametrize(module, param_name, F.QuantState.from_dict(qs_dict, device=device))


def _parametrize(module, param_name, quant_state):
    P.register_parametrization(module, param_name, Bnb4bitParametrization(quant_state), unsafe=True)
    module.register_state_dict_post_hook(partial(_write_quantized_entries, param_name=param_name))
    # Within one forward, each access to the parameter reuses one dequantized tensor (torch's
    # parametrization cache, switched on for the forward). The closing hook runs even when the
    # forward stops early (activation checkpointing's recompute does), so the count never drifts.
    module.register_forward_pre_hook(_cache_on)
    module.register_forward_hook(_cache_off, always_call=True)


def _cache_on(module, inputs):
    P._cache_enabled += 1


def _cache_off(module, inputs, output):
    P._cache_enabled = max(0, P._cache_enabled - 1)
    if not P._cache_enabled:
        P._cache = {}


def _write_quantized_entries(module, state_dict, prefix, local_metadata, *, param_name="weight", **kwargs):
    """State dict as Linear4bit writes it: `<param_name>` holds the packed codes (instead of
    `parametrizations.<param_name>.original`), followed by the packed QuantState items."""
    original = f"{prefix}parametrizations.{param_name}.original"
    if original not in state_dict:
        return
    state_dict[f"{prefix}{param_name}"] = state_dict.pop(original)
    for p in module.parametrizations[param_name]:
        if isinstance(p, Bnb4bitParametrization) and p.quant_state is not None:
            for key, value in p.quant_state.as_dict(packed=True).items():
                state_dict[f"{prefix}{param_name}.{key}"] = value
            break
