"""pytest setup for the compatibility layer's tests: transformers, peft and accelerate through the
`bitsandbytes` package that bnb serves (bindings/python/compat), on a tiny Llama model.

The package under test is whatever `import bitsandbytes` finds: bnb's layer once
`pip install . ./bindings/python/compat` has run (or the source tree's bindings/python/compat when
no bitsandbytes is installed; BNB_LIBRARY_PATH=build/lib points bnb at a build tree). The same
files also run against the real bitsandbytes package (that is how they were checked); tests that
are about bnb itself (packaging, which layer serves the optimizers) say so and skip there.

The model: tests/data/hf_fixture/float, a Llama-architecture model of 64 hidden units and two
layers, random init from a config with a fixed seed (scripts/make_hf_fixture.py made it, and the
nf4/fp4/int8 checkpoints beside it, with real bitsandbytes). Nothing is downloaded
(HF_HUB_OFFLINE=1).

BNB_TEST_DEVICE=cuda runs the same tests on a GPU (the models on cuda:0; the float64 references
beside them); the default is cpu.

torch, transformers, peft and accelerate are needed. Without them the suite skips, unless
BNB_REQUIRE_HF=1 (scripts/test.sh sets it) or CI=true: then a missing package is an error.
"""

import importlib.util
import json
import os
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(REPO, "tests", "data", "hf_fixture")
FLOAT_DIR = os.path.join(FIXTURE, "float")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

DEVICE = os.environ.get("BNB_TEST_DEVICE", "cpu")

REQUIRED = ("torch", "transformers", "peft", "accelerate", "safetensors")
_missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
if _missing:
    if os.environ.get("BNB_REQUIRE_HF") == "1" or os.environ.get("CI") == "true":
        raise RuntimeError(f"the compatibility suite is required here (BNB_REQUIRE_HF=1 or CI=true) but cannot run: "
                           f"{', '.join(_missing)} missing (scripts/install_deps.sh --hf installs them into build/venv)")
    collect_ignore_glob = ["test_*.py"]
else:
    # The layer from the source tree when nothing named bitsandbytes is installed, and bnb from the
    # source tree when BNB_LIBRARY_PATH names a build (as tests/python does).
    if importlib.util.find_spec("bitsandbytes") is None:
        sys.path.insert(0, os.path.join(REPO, "bindings", "python", "compat"))
    if os.environ.get("BNB_LIBRARY_PATH") and os.path.join(REPO, "bindings", "python") not in sys.path:
        sys.path.insert(0, os.path.join(REPO, "bindings", "python"))

    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))


def _is_bnb_layer():
    import bitsandbytes

    return str(getattr(bitsandbytes, "__version__", "")).endswith("+bnb")


IS_BNB = _is_bnb_layer() if not _missing else False
needs_bnb_layer = pytest.mark.skipif(not IS_BNB, reason="about bnb's layer; the imported bitsandbytes is the real package")


def manifest():
    with open(os.path.join(FIXTURE, "manifest.json")) as f:
        return json.load(f)


def input_ids():
    import torch

    return torch.tensor(manifest()["input_ids"], dtype=torch.long, device=DEVICE)


def bnb_config(**kw):
    """BitsAndBytesConfig from keyword arguments, dtype names accepted as strings."""
    import torch
    from transformers import BitsAndBytesConfig

    for k in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
        if isinstance(kw.get(k), str):
            kw[k] = getattr(torch, kw[k])
    return BitsAndBytesConfig(**kw)


def load(path=FLOAT_DIR, dtype=None, device_map=None, **bnb_kw):
    """AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(**bnb_kw)): the
    user's code, unchanged."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype or torch.float32, "device_map": device_map or {"": DEVICE}}
    if bnb_kw:
        kwargs["quantization_config"] = bnb_config(**bnb_kw)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not IS_BNB:
        real_bitsandbytes_exact_cpu(model)
    return model


def real_bitsandbytes_exact_cpu(model):
    """Only when these tests run against the real bitsandbytes (to check the tests themselves): on a CPU
    with AVX512-BF16 its Linear4bit repacks the weight at the first eval forward and computes in
    bfloat16 whatever the compute dtype; switch that off so it computes as documented."""
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False


def rel_err(a, b):
    """max |a - b| / max |b|, in float64."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def dequantized_weight(module):
    """The float64 weight a bitsandbytes Linear4bit / Linear8bitLt computes with (through the public
    functional API: dequantize_4bit for 4-bit, int8 rows times SCB / 127 for 8-bit); None for
    another module."""
    import bitsandbytes as bb
    import torch

    if isinstance(module, bb.nn.Linear4bit):
        w = module.weight
        return bb.functional.dequantize_4bit(w.data, w.quant_state).double()
    if isinstance(module, bb.nn.Linear8bitLt):
        w = module.weight
        scb = getattr(w, "SCB", None)
        if scb is None:
            scb = module.state.SCB
        return w.data.double() * scb.double().view(-1, 1) / 127.0
    return None


def float64_reference(qmodel):
    """A float64 copy of the architecture whose Linear weights are qmodel's dequantized ones and whose
    other parameters (embeddings, norms, lm_head, skipped layers) are qmodel's, cast to float64."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(FLOAT_DIR)
    config.quantization_config = None
    ref = AutoModelForCausalLM.from_config(config, dtype=torch.float64).to(DEVICE).eval()
    ref_modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, m in qmodel.named_modules():
            # a peft model's base: the wrapped layer sits at <name>.base_layer; its LoRA parts are not here
            name = name.replace(".base_layer", "")
            if "lora_" in name or name not in ref_modules:
                continue
            w = dequantized_weight(m)
            if w is not None:
                ref_modules[name].weight.copy_(w)
                if m.bias is not None:
                    ref_modules[name].bias.copy_(m.bias.double())
                continue
            for pname, p in m.named_parameters(recurse=False):
                if hasattr(ref_modules[name], pname):
                    getattr(ref_modules[name], pname).copy_(p.double())
    return ref


def train(model, ids, steps, make_optimizer=None, reduce=None):
    """The per-step losses of `steps` training steps on `ids` (labels = ids) over the parameters that
    require grad; make_optimizer(params) gives the optimizer (torch's AdamW, lr 1e-2, by default);
    reduce(loss) gives the loss to record (e.g. its mean over distributed ranks)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params) if make_optimizer else torch.optim.AdamW(params, lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        loss = loss.detach().clone()
        losses.append((loss if reduce is None else reduce(loss)).item())
    return losses


@pytest.fixture(scope="session")
def ids():
    return input_ids()
