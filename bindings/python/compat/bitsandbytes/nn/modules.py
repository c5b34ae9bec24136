"""bitsandbytes.nn: the quantized layers and parameters, with bitsandbytes' names, constructor
signatures, attributes and state-dict keys, built on bnb.nn's layers.

Linear4bit / LinearNF4 / LinearFP4 / Params4bit and Linear8bitLt / Int8Params are bnb.nn's
classes (subclasses of them) that hold this package's QuantState and MatmulLtState and use
bitsandbytes' defaults where bnb's differ: `Int8Params(requires_grad=True)` and
`Linear8bitLt(has_fp16_weights=True)`. When a weight is quantized, how it moves and what a
state dict holds are bnb.nn's rules (its module docstring), which are bitsandbytes': a float
weight is quantized by `.to(device)` / `.cuda()` / `.cpu()` (or the first forward), and
`Params4bit.from_prequantized` / `load_state_dict` take the serialized form.

Embedding and StableEmbedding are torch embeddings whose weight the 8-bit optimizers keep in
32 bits (registered with bitsandbytes.optim.GlobalOptimManager); StableEmbedding adds a layer
norm. Embedding8bit / Embedding4bit (EmbeddingNF4, EmbeddingFP4) hold their table quantized row
by row (int8 with a row absmax; 4 bits in blocks) and dequantize only the rows looked up.
"""

import warnings

import torch

import bnb.nn as _bnn
from bnb import functional as _bnbf

from .. import functional as _functional
from ..autograd._functions import MatmulLtState, int8_product, quantize_weight_rows

__all__ = [
    "Embedding", "Embedding4bit", "Embedding8bit", "EmbeddingFP4", "EmbeddingNF4", "Int8Params", "Linear4bit",
    "Linear8bitLt", "LinearFP4", "LinearNF4", "OutlierAwareLinear", "Params4bit", "StableEmbedding",
]


# ---------------------------------------------------------------- 4-bit
class Params4bit(_bnn.Params4bit):
    """bnb.nn.Params4bit holding a bitsandbytes.functional.QuantState.

    Params4bit(data=None, requires_grad=False, quant_state=None, blocksize=None,
    compress_statistics=True, quant_type="fp4", quant_storage=torch.uint8, module=None,
    bnb_quantized=False, **kwargs); Params4bit.from_prequantized(data, quantized_stats,
    requires_grad=False, device="cuda", module=None, **kwargs)."""

    _state_type = _functional.QuantState

    @staticmethod
    def _quantize_4bit(w, blocksize, compress_statistics, quant_type, quant_storage):
        # bitsandbytes.functional's quantizer: its QuantState, and the nested statistics (offset
        # included) exactly as bitsandbytes computes them, so saved checkpoints match byte for byte
        return _functional.quantize_4bit(w, blocksize=blocksize, compress_statistics=compress_statistics,
                                         quant_type=quant_type, quant_storage=quant_storage)


class Linear4bit(_bnn.Linear4bit):
    """bnb.nn.Linear4bit with Params4bit weights of this module, and bitsandbytes' handling of the
    compute dtype: without one, the first float32 or bfloat16 input sets it (a float16 input leaves
    it unset and is computed in float16); the bias is converted in place to the dtype the product
    runs in (so a model's fp32 biases become that dtype at the first forward, as in bitsandbytes).

    The eager fast path is bnb's, reached from `layer(x)` directly (bnb.nn._FastLinear): once it
    exists, compute_type_is_set is True (it is pinned with compute_dtype: changing either drops
    the shortcut) and the bias is in the input's dtype, which is compute_dtype when set (the
    shortcut requires both), so this forward would only call bnb's.

    Linear4bit(input_features, output_features, bias=True, compute_dtype=None,
    compress_statistics=True, quant_type="fp4", quant_storage=torch.uint8, device=None)."""

    _param_type = Params4bit
    _fast_keys = ("compute_dtype", "compute_type_is_set")

    def __init__(self, input_features, output_features, bias=True, compute_dtype=None, compress_statistics=True,
                 quant_type="fp4", quant_storage=torch.uint8, device=None):
        super().__init__(input_features, output_features, bias, compute_dtype, compress_statistics, quant_type,
                         quant_storage, device)

    def forward(self, x):
        if not self.compute_type_is_set:
            if x.dtype in (torch.float32, torch.bfloat16):
                self.compute_dtype = x.dtype
            self.compute_type_is_set = True
        bias = self._parameters["bias"]
        if bias is not None:  # (checks kept inline: this runs before every eager fast-path call)
            cd = self.compute_dtype
            _bias_to(bias, x.dtype if cd is None else cd)
        return _bnn.Linear4bit.forward(self, x)


_bnn.allow_call_shortcut(Linear4bit)


def _bias_to(bias, dtype):
    """bitsandbytes converts a layer's bias to the product's dtype in place, once."""
    if bias.dtype is not dtype and dtype.is_floating_point:
        bias.data = bias.data.to(dtype)


class LinearNF4(Linear4bit):
    """Linear4bit with quant_type='nf4'."""

    def __init__(self, input_features, output_features, bias=True, compute_dtype=None, compress_statistics=True,
                 quant_storage=torch.uint8, device=None):
        super().__init__(input_features, output_features, bias, compute_dtype, compress_statistics, "nf4",
                         quant_storage, device)


class LinearFP4(Linear4bit):
    """Linear4bit with quant_type='fp4'."""

    def __init__(self, input_features, output_features, bias=True, compute_dtype=None, compress_statistics=True,
                 quant_storage=torch.uint8, device=None):
        super().__init__(input_features, output_features, bias, compute_dtype, compress_statistics, "fp4",
                         quant_storage, device)


# ---------------------------------------------------------------- LLM.int8()
class Int8Params(_bnn.Int8Params):
    """bnb.nn.Int8Params with bitsandbytes' default requires_grad=True (for a float weight;
    quantized weights are created with requires_grad=False by the layers and by transformers),
    quantized as bitsandbytes does on the target device (autograd._functions.quantize_weight_rows).

    Int8Params(data=None, requires_grad=True, has_fp16_weights=False, CB=None, SCB=None, **kwargs)."""

    def __new__(cls, data=None, requires_grad=True, has_fp16_weights=False, CB=None, SCB=None, **kwargs):
        if data is not None and requires_grad and not (data.is_floating_point() or data.is_complex()):
            requires_grad = False  # int8 codes cannot require grad; they are frozen anyway
        return super().__new__(cls, data, requires_grad, has_fp16_weights, CB, SCB, **kwargs)

    _quantize_rows = staticmethod(quantize_weight_rows)  # bitsandbytes' rounding on each device


class Linear8bitLt(_bnn.Linear8bitLt):
    """bnb.nn.Linear8bitLt with bitsandbytes' default has_fp16_weights=True (a trained float
    weight, quantized on each forward; pass has_fp16_weights=False for int8 weights, as
    transformers does) and a MatmulLtState of this package in `state`.

    Linear8bitLt(input_features, output_features, bias=True, has_fp16_weights=True,
    threshold=0.0, index=None, device=None)."""

    _param_type = Int8Params
    _state_type = MatmulLtState
    _int8_product = staticmethod(int8_product)  # bitsandbytes' roundings (autograd._functions.int8_product)

    def __init__(self, input_features, output_features, bias=True, has_fp16_weights=True, threshold=0.0,
                 index=None, device=None):
        super().__init__(input_features, output_features, bias, has_fp16_weights, threshold, index, device)
        self.state.use_pool = threshold > 0.0 and not has_fp16_weights

    def forward(self, x):
        self.state.is_training = self.training
        bias = self._parameters["bias"]
        if bias is not None:
            _bias_to(bias, x.dtype)
        return super().forward(x)

    def _make_fast(self, x):
        # bnb's fast path computes int8_product's result only for float16 activations on a GPU
        if x.dtype != torch.float16 or x.device.type == "cpu":
            return None
        return super()._make_fast(x)


# ---------------------------------------------------------------- embeddings
def _register_32bit_optimizer_state(module):
    """The 8-bit optimizers keep this module's weight in 32-bit state (bitsandbytes' rule for its
    embeddings). Imported here so that the layers still import when bitsandbytes.optim cannot."""
    from ..optim import GlobalOptimManager

    GlobalOptimManager.get_instance().register_module_override(module, "weight", {"optim_bits": 32})


class Embedding(torch.nn.Embedding):
    """torch.nn.Embedding initialized with Xavier-uniform weights (padding row zero), whose weight
    the 8-bit optimizers update with 32-bit state."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, device=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                         _weight, device=device)
        _register_32bit_optimizer_state(self)

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.weight)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.weight[self.padding_idx].fill_(0)


class StableEmbedding(Embedding):
    """Embedding followed by a LayerNorm (`norm`) computed in torch's default dtype, the result
    cast back to the weight's dtype; 32-bit optimizer state for the weight."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, device=None, dtype=None):
        torch.nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx, max_norm, norm_type,
                                    scale_grad_by_freq, sparse, _weight, device, dtype)
        self.norm = torch.nn.LayerNorm(embedding_dim, device=device)
        _register_32bit_optimizer_state(self)

    def forward(self, input):
        emb = super().forward(input).to(torch.get_default_dtype())
        return self.norm(emb).to(self.weight.dtype)


class _QuantizedEmbedding(torch.nn.Embedding):
    """Shared by Embedding8bit and Embedding4bit: `dtype` is the dtype of the float table (and of
    the output); the table is quantized by a device move or on the first lookup (on the indices'
    device); state dicts are not written (as in bitsandbytes)."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise NotImplementedError(f"saving a {type(self).__name__} is not implemented (as in bitsandbytes): save "
                                  "the float embedding instead")

    def _quantized_weight(self, input):
        w = self.weight
        if getattr(w, "bnb_quantized", False) and w.quant_state is None:  # the state dropped (FSDP)
            w.quant_state = self.__dict__.get("quant_state")
        if not w._is_quantized():
            if torch.compiler.is_compiling():
                raise RuntimeError(f"{type(self).__name__}: quantize the table (.to(device)) before torch.compile")
            if w.device.type == "meta":
                raise RuntimeError(f"{type(self).__name__}: the table is on the meta device; load a state dict first")
            with torch.no_grad():
                w._quantize(input.device)
        return w


class Embedding8bit(_QuantizedEmbedding):
    """An embedding table held as LLM.int8() rows: int8 codes [num_embeddings, embedding_dim]
    and a float32 row absmax SCB; a lookup returns codes * SCB / 127 in `dtype`."""

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.dtype = self.weight.data.dtype
        self.weight = Int8Params(self.weight.data, requires_grad=False, has_fp16_weights=False)

    def forward(self, input):
        w = self._quantized_weight(input)
        rows = torch.nn.functional.embedding(input, w.data)
        scale = torch.nn.functional.embedding(input, w.SCB.view(-1, 1))
        return (rows.to(torch.float32) * (scale / 127.0)).to(self.dtype)


class Embedding4bit(_QuantizedEmbedding):
    """An embedding table held in 4 bits (NF4/FP4, blocks of 64, no nested statistics). When the
    rows are whole blocks (embedding_dim % 64 == 0) a lookup dequantizes only the rows it
    returns; otherwise the whole table is dequantized. Output in `dtype`.

    Embedding4bit(num_embeddings, embedding_dim, dtype=None, quant_type="fp4",
    quant_storage=torch.uint8, device=None)."""

    def __init__(self, num_embeddings, embedding_dim, dtype=None, quant_type="fp4", quant_storage=torch.uint8,
                 device=None):
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.dtype = self.weight.data.dtype
        self.weight = Params4bit(self.weight.data, requires_grad=False, compress_statistics=False,
                                 quant_type=quant_type, quant_storage=quant_storage, module=self)
        if embedding_dim % self.weight.blocksize:
            warnings.warn(f"Embedding4bit: embedding_dim {embedding_dim} is not a multiple of the block size "
                          f"{self.weight.blocksize}, so each lookup dequantizes the whole table (slow inference).",
                          UserWarning, stacklevel=2 if type(self) is Embedding4bit else 3)  # the caller's line

    def forward(self, input):
        w = self._quantized_weight(input)
        qs = w.quant_state
        D = self.embedding_dim
        if D % qs.blocksize or qs.nested:
            table = _bnbf.dequantize_4bit(w.packed_uint8(), qs, dtype=self.dtype)
            return torch.nn.functional.embedding(input, table)
        packed_rows = w.packed_uint8().view(self.num_embeddings, D // 2)
        absmax_rows = qs.absmax.view(self.num_embeddings, D // qs.blocksize)
        picked = _bnbf.QuantState(absmax=torch.nn.functional.embedding(input, absmax_rows).reshape(-1),
                                  shape=tuple(input.shape) + (D,), code=qs.code, blocksize=qs.blocksize,
                                  quant_type=qs.quant_type, dtype=self.dtype)
        return _bnbf.dequantize_4bit(torch.nn.functional.embedding(input, packed_rows).reshape(-1, 1), picked)


class EmbeddingNF4(Embedding4bit):
    """Embedding4bit with quant_type='nf4'."""

    def __init__(self, num_embeddings, embedding_dim, dtype=None, quant_storage=torch.uint8, device=None):
        super().__init__(num_embeddings, embedding_dim, dtype=dtype, quant_type="nf4", quant_storage=quant_storage,
                         device=device)


class EmbeddingFP4(Embedding4bit):
    """Embedding4bit with quant_type='fp4'."""

    def __init__(self, num_embeddings, embedding_dim, dtype=None, quant_storage=torch.uint8, device=None):
        super().__init__(num_embeddings, embedding_dim, dtype=dtype, quant_type="fp4", quant_storage=quant_storage,
                         device=device)


# ---------------------------------------------------------------- research base class
class OutlierAwareLinear(torch.nn.Linear):
    """A base class for linear layers that treat outlier input dimensions apart: on the first
    forward it asks bitsandbytes.utils.OutlierTracer for this weight's outlier dimensions
    (`outlier_dim`), replaces the weight by `quantize_weight(weight, outlier_dim)` once, and
    returns `forward_with_outliers(x, outlier_dim)`. Subclasses implement those two methods."""

    def __init__(self, input_features, output_features, bias=True, device=None):
        super().__init__(input_features, output_features, bias, device)
        self.outlier_dim = None
        self.is_quantized = False

    def forward_with_outliers(self, x, outlier_idx):
        raise NotImplementedError("override forward_with_outliers(self, x, outlier_idx)")

    def quantize_weight(self, w, outlier_idx):
        raise NotImplementedError("override quantize_weight(self, w, outlier_idx)")

    def forward(self, x):
        if self.outlier_dim is None:
            from ..utils import OutlierTracer

            tracer = OutlierTracer.get_instance()
            if not tracer.is_initialized():
                warnings.warn("OutlierAwareLinear: call OutlierTracer.get_instance().initialize(model) and run the "
                              "model once first", stacklevel=2)
            self.outlier_dim = tracer.get_outliers(self.weight)
        if not self.is_quantized:
            with torch.no_grad():
                self.weight.data.copy_(self.quantize_weight(self.weight, self.outlier_dim))
            self.is_quantized = True
        return self.forward_with_outliers(x, self.outlier_dim)
