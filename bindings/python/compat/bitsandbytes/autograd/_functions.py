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

__all__ = ["GlobalOutlierPooler", "MatMul4Bit", "MatMul8bitFp", "MatMul8bitLt", "MatmulLtState", "matmul",
           "matmul_4bit"]

# 1/127^2 as bitsandbytes' CPU backend writes it (1.8e-5 relative above the quotient; bnb's
# kernels, like bitsandbytes' CUDA ones, use RN32(1/16129)): on the CPU the layer reproduces it.
_CPU_DEQUANT_SCALE = 6.200124e-05


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

    # compared like bitsandbytes' dataclass: by these fields (tensors by identity, then by value)
    _fields = ("force_no_igemmlt", "CB", "SB", "SCB", "SBt", "CBt", "subB", "outlier_pool", "idx")

    def __eq__(self, other):
        if not isinstance(other, MatmulLtState):
            return NotImplemented
        return tuple(getattr(self, f) for f in self._fields) == tuple(getattr(other, f) for f in other._fields)

    __hash__ = None

    def reset_grads(self):
        """Forgets the quantized weight (the next call with a float B quantizes it again)."""
        self.CB = None
        self.SB = None
        self.SCB = None
        self.SBt = None
        self.CBt = None


def int8_product(A, CB, SCB, bias, threshold, state):
    """The LLM.int8() product A[..., K] @ (CB * SCB / 127)^T (+ bias) as bitsandbytes computes it on
    the device of A (the int8 product is bnb's kernel). It differs from bnb.functional.int8_linear,
    which follows bitsandbytes' CUDA kernels everywhere, in these roundings:
      * float32 (and float64) activations are quantized from their float16 rounding (bitsandbytes
        casts A to float16 first; fp16/bf16 activations are used as they are);
      * on the CPU, as bitsandbytes' CPU backend: the activation codes are round-half-even of
        A * (127 / rowmax) with a correctly rounded quotient (the CUDA kernel, and bnb's, use an
        approximate reciprocal, which moves ties), and the int32 product is scaled back in float32
        (with that backend's constant for 1/127^2) and rounded once to A's dtype (the CUDA kernel
        rounds through float16 first).
    Outlier columns (threshold > 0) are multiplied in A's own precision and added to the result
    (one fused multiply-add, as bitsandbytes); state.idx gets them."""
    if not A.is_floating_point():
        raise TypeError(f"LLM.int8() product: the input must be a floating-point tensor, not {A.dtype}")
    K = A.shape[-1]
    N = CB.shape[0]
    lead = tuple(A.shape[:-1])
    A2 = A.reshape(-1, K)
    Aq = A2 if A2.dtype in (torch.float16, torch.bfloat16) else A2.to(torch.float16)
    if A.device.type == "cpu":
        CA, SCA, cols = _quantize_rows_cpu(Aq, threshold)
    else:
        CA, SCA, cols = _bnbf.int8_vectorwise_quant(Aq, threshold)
    if state is not None:
        state.idx = cols
    C = _bnbf.int8_linear_matmul(CA, CB)
    if A.device.type == "cpu":
        out = C * (SCA.unsqueeze(1) * SCB.unsqueeze(0)) * _CPU_DEQUANT_SCALE
        if bias is not None:
            out = out + bias
        out = out.to(A.dtype)
    elif A.dtype in (torch.float32, torch.float16, torch.bfloat16):
        out = _bnbf.int8_mm_dequant(C, SCA, SCB, bias=bias, dtype=A.dtype)
    else:  # e.g. float64: the kernel's float32 result, converted
        out = _bnbf.int8_mm_dequant(C, SCA, SCB, bias=None if bias is None else bias.float(),
                                    dtype=torch.float32).to(A.dtype)
    if cols is not None and (torch.compiler.is_compiling() or cols.numel()):
        cols = cols.long()
        # the columns' weights as bitsandbytes dequantizes them: codes * SCB, then * 1/127
        W_cols = (CB[:, cols].to(torch.float32) * SCB.unsqueeze(1) * (1.0 / 127.0)).to(A.dtype)
        out = out.addmm(A2[:, cols], W_cols.t())
    return out.reshape(lead + (N,))


def _quantize_rows_cpu(A, threshold):
    """Row-wise int8 codes of A [M, K] as bitsandbytes' CPU backend makes them: (codes, row absmax
    float32 [M], outlier columns int32 or None). Outliers (|a| >= threshold > 0) are left out of
    the absmax and their columns written as 0; a row without non-zero entries encodes as zeros."""
    cols = None
    if threshold > 0:
        outliers = A.abs() >= threshold
        cols = torch.nonzero(outliers.any(0)).view(-1).to(torch.int32)
        A = A.masked_fill(outliers, 0)
    absmax = A.abs().amax(1).to(torch.float32) if A.shape[0] else A.new_zeros((0,), dtype=torch.float32)
    scale = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    codes = torch.round(A * scale.unsqueeze(1)).to(torch.int8)
    if cols is not None:
        codes[:, cols.long()] = 0  # (no branch on the count: it traces under torch.compile)
    return codes, absmax, cols


def quantize_weight_rows(W):
    """A float weight [N, K] as LLM.int8() stores it, (CB int8, SCB float32 [N]), from its float16
    rounding as bitsandbytes quantizes it on W's device: bnb's kernel (bitsandbytes' CUDA rounding)
    on a GPU, bitsandbytes' CPU rounding on the CPU (so checkpoints match byte for byte)."""
    if W.device.type != "cpu":
        return _bnbf.quantize_int8_rows(W)
    CB, SCB, _ = _quantize_rows_cpu(W.detach().to(torch.float16), 0.0)
    return CB, SCB


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
            CB, SCB = quantize_weight_rows(W)
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
                                             threshold, state, int8_product)
    else:
        result = int8_product(A, CB, SCB, bias, threshold, state)
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


# ---------------------------------------------------------------- bitsandbytes' other names in this module
class MatMul8bitLt:
    """bitsandbytes' autograd.Function names for the products, for code that calls them directly:
    `.apply(A, B, out=None, bias=None, state=None)` is `matmul(A, B, out, state, bias=bias)`."""

    @staticmethod
    def apply(A, B, out=None, bias=None, state=None):
        return matmul(A, B, out=out, state=state, bias=bias)


MatMul8bitFp = MatMul8bitLt  # bitsandbytes' CPU variant of the same product


class MatMul4Bit:
    """`.apply(A, B, out=None, bias=None, quant_state=None)` is `matmul_4bit(A, B, quant_state, out, bias)`."""

    @staticmethod
    def apply(A, B, out=None, bias=None, quant_state=None):
        return matmul_4bit(A, B, quant_state, out=out, bias=bias)


class GlobalOutlierPooler:
    """A process-wide set of outlier feature indices (of layers whose input width is the first one
    seen). get_instance() returns the one pooler."""

    _instance = None

    def __init__(self):
        raise RuntimeError("Call get_instance() instead")

    def initialize(self):
        self.outliers = set()
        self.model_dim = None

    @classmethod
    def get_instance(cls):
        if cls._instance is None:
            cls._instance = cls.__new__(cls)
            cls._instance.initialize()
        return cls._instance

    def add_outliers(self, outlier_idx, feature_dim):
        if self.model_dim is None:
            self.model_dim = feature_dim
        if feature_dim == self.model_dim:  # other widths (the second FFN layer) are not pooled
            self.outliers.update(int(i) for i in outlier_idx.tolist())

    def get_current_outlier_idx(self):
        return torch.tensor(sorted(self.outliers), dtype=torch.int64)
