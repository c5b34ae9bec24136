"""`bnb quantize` (tools/cli) makes checkpoints that transformers loads through bnb's layer with no
quantization at load time, and the model then computes what the same float model quantized at load
time by from_pretrained(..., BitsAndBytesConfig(...)) computes.

The command is found through BNB_CLI, else build/bin/bnb; without it the tests skip. The command
writes only model.safetensors for now, so config.json (with its quantization_config) is written
here.
"""

import json
import os
import shutil
import subprocess

import pytest
import torch
from safetensors import safe_open

from conftest import FLOAT_DIR, REPO, bnb_config, load, needs_bnb_layer, rel_err

CLI = os.environ.get("BNB_CLI") or os.path.join(REPO, "build", "bin", "bnb")

pytestmark = [
    needs_bnb_layer,
    pytest.mark.skipif(not os.access(CLI, os.X_OK),
                       reason=f"the bnb command is not built ({CLI}; set BNB_CLI to its path)"),
]

# name -> (command-line options, BitsAndBytesConfig keywords)
VARIANTS = {
    "nf4": (["--to", "nf4"], {"bnb_4bit_quant_type": "nf4"}),
    "fp4": (["--to", "fp4"], {"bnb_4bit_quant_type": "fp4"}),
    "nf4_bs128": (["--to", "nf4", "--blocksize", "128"], {"bnb_4bit_quant_type": "nf4"}),
    "nf4_dq": (["--to", "nf4", "--double-quant"], {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}),
}


def _quantize_with_cli(tmp_path, options, bnb_kw):
    out = tmp_path / "model"
    out.mkdir()
    env = dict(os.environ, BNB_BACKEND="cpu")
    r = subprocess.run([CLI, "quantize", os.path.join(FLOAT_DIR, "model.safetensors"),
                        str(out / "model.safetensors"), *options], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(FLOAT_DIR, "config.json")) as f:
        config = json.load(f)
    config["quantization_config"] = bnb_config(load_in_4bit=True, bnb_4bit_compute_dtype="float32", **bnb_kw).to_dict()
    with open(out / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    shutil.copy(os.path.join(FLOAT_DIR, "generation_config.json"), out)
    return out


def _blocksize(model):
    return model.model.layers[0].self_attn.q_proj.weight.quant_state.blocksize


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_cli_checkpoint_equals_load_time_quantization(name, ids, tmp_path):
    options, bnb_kw = VARIANTS[name]
    path = _quantize_with_cli(tmp_path, options, bnb_kw)
    mine = load(path=str(path)).eval()
    if "--blocksize" in options:
        # BitsAndBytesConfig has no blocksize (load time always uses 64): check that 128 was stored and
        # compare both models with the float one below.
        assert _blocksize(mine) == 128
    want_model = load(load_in_4bit=True, bnb_4bit_compute_dtype="float32", **bnb_kw).eval()
    with torch.no_grad():
        got = mine(input_ids=ids).logits
        want = want_model(input_ids=ids).logits
    if "--blocksize" in options:
        # Quantization noise of blocks of 128 against the float model: of the order of 64's.
        with torch.no_grad():
            ref = load().eval()(input_ids=ids).logits
        assert rel_err(got, ref) < 2 * rel_err(want, ref)
    else:
        assert torch.equal(got, want), f"{name}: relative error {rel_err(got, want):.3g}"


def test_cli_checkpoint_bytes_equal_saved_model(tmp_path):
    """The keys, dtypes, shapes and bytes equal what save_pretrained writes from the load-time model."""
    path = _quantize_with_cli(tmp_path, ["--to", "nf4"], {"bnb_4bit_quant_type": "nf4"})
    saved = tmp_path / "saved"
    load(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float32").save_pretrained(
        saved, safe_serialization=True)
    with safe_open(str(path / "model.safetensors"), "pt") as a, safe_open(str(saved / "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for k in b.keys():
            x, y = a.get_tensor(k), b.get_tensor(k)
            assert (x.dtype, tuple(x.shape)) == (y.dtype, tuple(y.shape)), k
            assert torch.equal(x.view(-1).view(torch.uint8), y.view(-1).view(torch.uint8)), k
