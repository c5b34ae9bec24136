"""bitsandbytes.utils: the helpers its users and tests import.

pack_dict_to_tensor / unpack_tensor_to_dict are the checkpoint format of a 4-bit layer's
non-tensor quant_state items (`weight.quant_state.bitsandbytes__nf4`): the dict as JSON text
(json.dumps' default separators) in a uint8 tensor, one byte per UTF-8 byte. bnb's
QuantState.as_dict(packed=True) writes the same bytes.
"""

import json
import logging
import shlex
import subprocess

import torch

logger = logging.getLogger(__name__)

# The weight layouts of older Linear8bitLt checkpoints (the `weight_format` entry); only "row" is
# produced nowadays.
LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING = {"row": 0, "col32": 1, "col_turing": 2, "col_ampere": 3}
INVERSE_LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING = {code: name for name, code in LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING.items()}


def pack_dict_to_tensor(source_dict):
    """A JSON-serialisable dict as a 1-D uint8 tensor of its UTF-8 JSON text."""
    if not isinstance(source_dict, dict):
        raise TypeError(f"source_dict must be a dict, not {type(source_dict).__name__}")
    data = json.dumps(source_dict).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def unpack_tensor_to_dict(tensor_data):
    """Inverse of pack_dict_to_tensor (the tensor may be on any device). A tensor that does not hold
    UTF-8 JSON of a dict raises ValueError."""
    if not isinstance(tensor_data, torch.Tensor):
        raise TypeError(f"tensor_data must be a torch.Tensor, not {type(tensor_data).__name__}")
    if tensor_data.dtype != torch.uint8:
        raise ValueError(f"tensor_data must be uint8 (packed JSON bytes), not {tensor_data.dtype}")
    raw = bytes(tensor_data.detach().reshape(-1).cpu().numpy())
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise ValueError(f"packed tensor of {len(raw)} bytes is not UTF-8 JSON (corrupt or truncated?): {e}") from e
    if not isinstance(value, dict):
        raise ValueError(f"packed tensor holds JSON {type(value).__name__}, expected an object")
    return value


def sync_gpu(t: torch.Tensor):
    """Waits for the work queued on t's GPU (nothing to do for a CPU tensor)."""
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
    elif t.device.type == "xpu":
        torch.xpu.synchronize(t.device)


def execute_and_return(command_string: str) -> tuple[str, str]:
    """Runs a command (no shell) and returns its decoded, stripped (stdout, stderr)."""
    proc = subprocess.run(shlex.split(command_string), capture_output=True, check=False)
    return proc.stdout.decode("UTF-8").strip(), proc.stderr.decode("UTF-8").strip()


def find_outlier_dims(weight, reduction_dim=0, zscore=4.0, topk=None, rdm=False):
    """Indices of the dimensions whose standard deviation (taken along reduction_dim) stands out:
    a z-score above `zscore` among all dimensions' deviations, or the `topk` largest deviations;
    rdm=True draws `topk` random indices instead."""
    if rdm:
        if topk is None:
            raise ValueError("rdm=True needs topk (how many random dimensions)")
        return torch.randint(0, weight.shape[1], size=(topk,), device=weight.device).long()
    spread = weight.std(reduction_dim)
    if topk is not None:
        return torch.topk(spread.abs(), k=topk, dim=0).indices
    z = (spread - spread.mean()) / spread.std()
    return torch.where(z > zscore)[0]


def _outlier_hook(module, inputs):
    """Forward pre-hook of OutlierTracer: records the outlier dimensions seen by each linear layer
    once (by the previous layer's weight, or for the first layer by its input), then removes the
    hooks when a layer comes round again."""
    tracer = OutlierTracer.get_instance()
    key = tracer.get_hvalue(module.weight)
    if key in tracer.hvalue2outlier_idx:
        for hook in tracer.hooks:
            hook.remove()
        return
    tracer.outliers.append(find_outlier_dims(module.weight))
    tracer.hvalues.append(key)
    if len(tracer.outliers) > 1:
        tracer.hvalue2outlier_idx[key] = tracer.outliers[-1]
        return
    x = inputs[0]
    flat = x.reshape(-1, x.shape[-1])
    by_spread = find_outlier_dims(flat, reduction_dim=1, zscore=3)
    by_magnitude = torch.where((x.abs() > 6).reshape(-1, x.shape[-1]).any(dim=0))[0]
    tracer.hvalue2outlier_idx[key] = torch.cat([by_spread, by_magnitude]).unique()


class OutlierTracer:
    """Finds outlier feature dimensions of a model's linear layers during one forward pass
    (a singleton: OutlierTracer.get_instance().initialize(model), run the model, then
    get_outliers(layer.weight))."""

    _instance = None

    def __init__(self):
        raise RuntimeError("Call get_instance() instead")

    @classmethod
    def get_instance(cls):
        if cls._instance is None:
            cls._instance = cls.__new__(cls)
        return cls._instance

    def initialize(self, model):
        self.last_w = None
        self.current_outlier_dims = None
        self.hvalues = []
        self.outliers = []
        self.hvalue2outlier_idx = {}
        self.initialized = True
        self.hooks = [m.register_forward_pre_hook(_outlier_hook) for m in model.modules()
                      if isinstance(m, torch.nn.Linear)]

    def is_initialized(self):
        return getattr(self, "initialized", False)

    def get_hvalue(self, weight):
        return weight.data.untyped_storage().data_ptr()

    def get_outliers(self, weight):
        if not self.is_initialized():
            logger.warning("OutlierTracer is not initialized: call initialize(model) and run the model first")
            return None
        return self.hvalue2outlier_idx.get(self.get_hvalue(weight))


def replace_linear(model, linear_replacement, skip_modules=("lm_head",), copy_weights=False,
                   post_processing_function=None):
    """Replaces every torch.nn.Linear of `model` (recursively; children named in skip_modules are
    kept) by linear_replacement(in_features, out_features, has_bias). copy_weights: the new module
    takes the old weight and bias. post_processing_function: the name of a method called on the
    replaced module afterwards, when it has one. Returns the model."""
    for name, child in list(model.named_children()):
        if any(True for _ in child.children()):
            replace_linear(child, linear_replacement, skip_modules, copy_weights, post_processing_function)
        if isinstance(child, torch.nn.Linear) and name not in skip_modules:
            new = linear_replacement(child.in_features, child.out_features, child.bias is not None)
            if copy_weights:
                new.weight = child.weight
                new.bias = child.bias
            model._modules[name] = new
            if post_processing_function is not None:
                hook = getattr(child, post_processing_function, None)
                if hook is not None:
                    hook(child)
    return model


__all__ = [
    "INVERSE_LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING", "LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING", "OutlierTracer",
    "execute_and_return", "find_outlier_dims", "pack_dict_to_tensor", "replace_linear", "sync_gpu",
    "unpack_tensor_to_dict",
]
