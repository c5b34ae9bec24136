"""bitsandbytes.matmul (LLM.int8()), bitsandbytes.matmul_4bit and MatmulLtState, over bnb.

Both products are differentiable where bitsandbytes' are: the input A and the bias always, and a
float weight B of `matmul` that requires grad (training with `has_fp16_weights=True`). The
quantized weights themselves are frozen. The gradient formulas live in bnb (bnb._torch_ops:
Int8Linear for LLM.int8(), the gemm_4bit op's autograd for 4 bits); this module only maps
bitsandbytes' arguments onto them.
"""

import warnings

import torch

from bnb import _torch_ops
from bnb import functional as _bnbf

__all__ = ["MatmulLtState", "matmul", "matmul_4bit"]


class MatmulLtState(_bnbf.MatmulLtState):
    """What `matmul` keeps for one weight between calls, with bitsandbytes' fields.

    Set `threshold` (outlier threshold of the activations, 0 = none) and `has_fp16_weights`
    after construction, as bitsandbytes' callers do. CB / SCB: the int8 weight [N, K] and its
    row absmax [N]; with has_fp16_weights False and CB set, `matmul` uses them and ignores B's
    values. idx: the outlier columns of the last call. SB, SBt, CBt, subB, outlier_pool,
    force_no_igemmlt, use_pool, has_accumulated_gradients: accepted and kept for code that sets
    or reads them; bnb's kernels need none of them."""

    _deprecated_fields = frozenset({"CxB", "CxBt", "formatB", "_tile_indices"})

    def __init__(self, force_no_igemmlt=False, CB=None, SB=None, SCB=None, SBt=None, CBt=None, subB=None,
                 outlier_pool=None, idx=None):
        super().__init__(CB=CB, SCB=SCB, threshold=0.0, has_fp16_weights=True)
        self.force_no_igemmlt = force_no_igemmlt
        self.SB = SB
        self.SBt = SBt
        self.CBt = CBt
        self.subB = subB
        self.outlier_pool = outlier_pool
        self.idx = idx
        self.has_accumulated_gradients = False
        self.is_training = True
        self.use_pool = False

    def __getattr__(self, name):
        # layouts of older bitsandbytes releases: always None here
        if name in MatmulLtState._deprecated_fields:
            warnings.warn(f"MatmulLtState.{name} is deprecated (always None)", FutureWarning, stacklevel=2)
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def reset_grads(self):
        """Forgets the quantized weight (the next call with a float B quantizes it again)."""
        self.CB = None
        self.SB = None
        self.SCB = None
        self.SBt = None
        self.CBt = None


def _as_rows_weight(B, K, what):
    """B as the [N, K] weight the product multiplies by: B itself, or B.t() when B is given as
    [K, N] (bitsandbytes' callers pass `CB.t()` views). A square B is taken as [N, K]."""
    if B.dim() != 2:
        raise ValueError(f"{what} must be a 2-D weight, not {tuple(B.shape)}")
    if B.shape[1] == K:
        return B
    if B.shape[0] == K:
        return B.t()
    raise ValueError(f"A has {K} columns; {what} {tuple(B.shape)} has no dimension of that size")


def _row_absmax(B, state):
    SCB = getattr(B, "SCB", None)
    if SCB is None and state is not None:
        SCB = state.SCB
    return SCB


def matmul(A, B, out=None, state=None, threshold=0.0, bias=None):
    """LLM.int8() product A[..., K] @ W^T (+ bias) -> [..., N] in A's dtype.

    The weight W [N, K], in this order of precedence:
      * state.CB / state.SCB when state.has_fp16_weights is False and state.CB is set (B then
        only gives the orientation, as in bitsandbytes);
      * B itself when it is int8 ([N, K], or a [K, N] view), with its row absmax from B.SCB
        (an Int8Params) or state.SCB;
      * a float B ([N, K] or [K, N]), quantized row-wise from its fp16 rounding on each call
        (stored in state.CB / state.SCB); it gets a gradient when it requires one.
    threshold > 0 (or state.threshold): outlier activation columns are multiplied in A's dtype.
    Gradients: A and bias always; a float B that requires grad (grad_out^T @ A)."""
    if state is None:
        state = MatmulLtState()
    if threshold and threshold > 0:
        state.threshold = threshold
    threshold = float(state.threshold or 0.0)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, not {threshold}")
    if A.dim() < 1:
        raise ValueError("A must have at least one dimension")
    K = A.shape[-1]
    W = None  # the float weight, when one is multiplied (and maybe trained)
    if not state.has_fp16_weights and state.CB is not None:
        CB, SCB = state.CB, state.SCB
        if CB.dim() != 2 or CB.shape[1] != K:
            CB = _as_rows_weight(CB, K, "state.CB")
        if SCB is None:
            raise ValueError("state.CB is set without its row absmax state.SCB")
    elif B.dtype == torch.int8:
        CB, SCB = _as_rows_weight(B, K, "B"), _row_absmax(B, state)
        if SCB is None:
            raise ValueError("B is int8: its row absmax SCB is needed (state.SCB, or an Int8Params weight)")
    else:
        W = _as_rows_weight(B, K, "B")
        with torch.no_grad():
            CB, SCB = _bnbf.quantize_int8_rows(W)
        state.CB, state.SCB = CB, SCB
    if tuple(SCB.shape) != (CB.shape[0],):
        raise ValueError(f"SCB {tuple(SCB.shape)} does not match the int8 weight {tuple(CB.shape)}")
    if bias is not None and bias.dtype != A.dtype:
        bias = bias.to(A.dtype)
    CB = CB.contiguous()
    grad = torch.is_grad_enabled() and (A.requires_grad or (bias is not None and bias.requires_grad)
                                        or (W is not None and W.requires_grad))
    if grad:
        result = _torch_ops.Int8Linear.apply(A, W if W is not None and W.requires_grad else None, CB, SCB, bias,
                                             threshold, state)
    else:
        result = _bnbf.int8_linear(A, CB, SCB, bias=bias, threshold=threshold, state=state)
    if out is None:
        return result
    out.copy_(result)
    return out


def matmul_4bit(A, B, quant_state, out=None, bias=None):
    """A[..., K] @ W^T (+ bias) for the 4-bit weight W [N, K] = quant_state.shape that B packs
    (the packed tensor in any quant_storage, or its `.t()` view). A weight quantized as [K, N]
    (quant_state.shape[0] == K != shape[1]) is dequantized and multiplied the other way, with
    a DeprecationWarning as in bitsandbytes. Gradients: A and bias. out: receives the result."""
    if quant_state is None:
        raise ValueError("quant_state is required: the QuantState of the 4-bit weight B")
    shape = tuple(quant_state.shape) if quant_state.shape is not None else ()
    if len(shape) != 2:
        raise ValueError(f"matmul_4bit: quant_state.shape must be the 2-D [N, K] of the weight, not {shape}")
    K = A.shape[-1]
    packed = B.reshape(-1)
    if packed.dtype != torch.uint8:
        packed = packed.view(torch.uint8)  # another quant_storage holds the same bytes
    packed = packed.reshape(-1, 1)
    if K == shape[0] and K != shape[1]:
        warnings.warn(f"matmul_4bit: the weight was quantized as [K, N] = {list(shape)}; quantize it as "
                      "[N, K] (out_features, in_features)", DeprecationWarning, stacklevel=2)
        W = _bnbf.dequantize_4bit(packed, quant_state, dtype=A.dtype)
        result = torch.nn.functional.linear(A, W.t(), None if bias is None else bias.to(A.dtype))
    else:
        if bias is not None and bias.dtype != A.dtype:
            bias = bias.to(A.dtype)
        result = _bnbf.matmul_4bit(A, packed, quant_state, bias=bias)
    if out is None:
        return result
    out.copy_(result)
    return out
