"""`bnb quantize` (tools/cli) makes checkpoints that transformers loads through bnb's layer with no
quantization at load time, and the model then computes what the same float model quantized at load
time by from_pretrained(..., BitsAndBytesConfig(...)) computes: bit for bit for nf4/fp4 (any block
size, double quantization, compute dtype, quant storage), and for int8 up to the rounding rule the
spec leaves to the device.

The command is found through BNB_CLI, else build/bin/bnb; without it the tests skip. It writes
config.json (with its quantization_config) itself; generation_config.json is copied here.
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
    "nf4": (["--to", "nf4"], {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    "fp4": (["--to", "fp4"], {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    "nf4_bs128": (["--to", "nf4", "--blocksize", "128"], {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    "nf4_dq": (["--to", "nf4", "--double-quant"],
               {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}),
    "fp4_dq_bf16": (["--to", "fp4", "--double-quant", "--compute-dtype", "bfloat16"],
                    {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": True,
                     "bnb_4bit_compute_dtype": torch.bfloat16}),
    "nf4_storage_bf16": (["--to", "nf4", "--quant-storage", "bfloat16"],
                         {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_quant_storage": torch.bfloat16}),
    "int8": (["--to", "int8"], {"load_in_8bit": True}),
}


def _run(*args):
    env = dict(os.environ, BNB_BACKEND="cpu")
    r = subprocess.run([CLI, "quantize", *args], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _quantize_with_cli(tmp_path, options):
    out = tmp_path / "model"
    out.mkdir()
    _run(os.path.join(FLOAT_DIR, "model.safetensors"), str(out / "model.safetensors"), *options)
    shutil.copy(os.path.join(FLOAT_DIR, "generation_config.json"), out)
    return out


def _load_time(bnb_kw):
    kw = dict(bnb_kw)
    if kw.get("load_in_4bit"):
        kw.setdefault("bnb_4bit_compute_dtype", torch.float32)
    return load(**kw).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_cli_checkpoint_equals_load_time_quantization(name, ids, tmp_path):
    options, bnb_kw = VARIANTS[name]
    path = _quantize_with_cli(tmp_path, options)
    # The command wrote the quantization_config transformers writes for the same settings.
    with open(path / "config.json") as f:
        written = json.load(f)["quantization_config"]
    expected = bnb_config(**({"bnb_4bit_compute_dtype": torch.float32} | bnb_kw if "load_in_4bit" in bnb_kw
                             else bnb_kw)).to_dict()
    assert written == expected
    mine = load(path=str(path)).eval()  # no quantization_config argument: the checkpoint's own
    want_model = _load_time(bnb_kw)
    got, want = _logits(mine, ids), _logits(want_model, ids)
    if name == "nf4_bs128":
        # BitsAndBytesConfig has no blocksize (load time always uses 64): check that 128 was stored, and
        # that the quantization noise of blocks of 128 against the float model is of the order of 64's.
        assert mine.model.layers[0].self_attn.q_proj.weight.quant_state.blocksize == 128
        ref = _logits(load().eval(), ids)
        assert rel_err(got, ref) < 2 * rel_err(want, ref)
    elif name == "int8":
        # The command rounds each weight row as bitsandbytes' CUDA kernel does (and bnb on every
        # backend); load time on the CPU follows bitsandbytes' CPU rounding, which differs at ties.
        q_mine = mine.model.layers[0].mlp.up_proj.weight
        q_load = want_model.model.layers[0].mlp.up_proj.weight
        assert q_mine.dtype == torch.int8 and torch.equal(q_mine.SCB, q_load.SCB)
        assert (q_mine.int() - q_load.int()).abs().max() <= 1
        assert rel_err(got, want) < 1e-2, f"relative error {rel_err(got, want):.3g}"
    else:
        assert torch.equal(got, want), f"{name}: relative error {rel_err(got, want):.3g}"


def test_cli_checkpoint_bytes_equal_saved_model(tmp_path):
    """The keys, dtypes, shapes and bytes equal what save_pretrained writes from the load-time model."""
    path = _quantize_with_cli(tmp_path, ["--to", "nf4", "--double-quant"])
    saved = tmp_path / "saved"
    _load_time({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}).save_pretrained(
        saved, safe_serialization=True)
    with safe_open(str(path / "model.safetensors"), "pt") as a, safe_open(str(saved / "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for k in b.keys():
            x, y = a.get_tensor(k), b.get_tensor(k)
            assert (x.dtype, tuple(x.shape)) == (y.dtype, tuple(y.shape)), k
            assert torch.equal(x.view(-1).view(torch.uint8), y.view(-1).view(torch.uint8)), k


@pytest.mark.parametrize("to", ["nf4", "int8"])
def test_cli_sharded_checkpoint_written_here(to, ids, tmp_path):
    """A tiny Llama written by this test (random init from a config, bf16, in shards with an index),
    quantized directory to directory, loads as one model and computes what load-time quantization of
    the same checkpoint computes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(22)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=192, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    src = tmp_path / "bf16"
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(src, max_shard_size="40KB", safe_serialization=True)
    assert (src / "model.safetensors.index.json").exists()
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    assert len(shards) > 2
    out = tmp_path / to
    _run(str(src), str(out), "--to", to, *(["--compute-dtype", "bfloat16"] if to == "nf4" else []))
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    kw = ({"load_in_4bit": True, "bnb_4bit_quant_type": to, "bnb_4bit_compute_dtype": torch.bfloat16} if to == "nf4"
          else {"load_in_8bit": True})
    # Loaded in bfloat16, the checkpoint's dtype, as load-time quantization then sees the same weights.
    got = _logits(load(path=str(out), dtype=torch.bfloat16).eval(), ids)
    want = _logits(load(path=str(src), dtype=torch.bfloat16, **kw).eval(), ids)
    if to == "nf4":
        assert torch.equal(got, want), f"relative error {rel_err(got, want):.3g}"
    else:  # the rounding rule of LLM.int8 at ties differs between the command and CPU load time
        assert rel_err(got, want) < 1e-2, f"relative error {rel_err(got, want):.3g}"
