"""Checkpoints in both directions: save_pretrained -> from_pretrained here; the checkpoints that real
bitsandbytes saved (tests/data/hf_fixture) load here and give the logits it recorded; and what we
save from the same float model holds the same keys and the same bytes as those checkpoints, so real
bitsandbytes loads ours."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from conftest import DEVICE, FIXTURE, load, manifest, needs_bnb_layer, rel_err

VARIANTS = manifest()["variants"]

def _recorded_logits(name):
    with safe_open(os.path.join(FIXTURE, manifest()["logits_file"]), "pt") as f:
        return f.get_tensor(VARIANTS[name]["logits_key"])


def _tensors(path):
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _bytes(t):
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_save_and_reload_gives_the_same_logits(name, ids, tmp_path):
    m = load(**VARIANTS[name]["bnb_config"]).eval()
    m.save_pretrained(tmp_path, safe_serialization=True)
    back = load(path=str(tmp_path)).eval()
    assert type(back.model.layers[0].self_attn.q_proj) is type(m.model.layers[0].self_attn.q_proj)
    with torch.no_grad():
        want = m(input_ids=ids).logits
        got = back(input_ids=ids).logits
    assert torch.equal(got, want), rel_err(got, want)
    # (saving the reloaded model again is not tested: transformers 5.25 cannot reverse its bitsandbytes
    # deserialize step, NotImplementedError in Bnb4bitDeserialize.reverse_op, with either package)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fixture_checkpoint_gives_recorded_logits(name, ids):
    """A checkpoint saved by transformers with real bitsandbytes (the fixture) loads here."""
    m = load(path=os.path.join(FIXTURE, name)).eval()
    with torch.no_grad():
        got = m(input_ids=ids).logits
    want = _recorded_logits(name)
    err = rel_err(got, want)
    # The fixture's logits come from bitsandbytes' CPU path. On CUDA, LLM.int8 rounds as bitsandbytes'
    # CUDA kernels do (an approximate reciprocal for the activation codes, the product scaled back
    # through float16: autograd._functions.int8_product), which moves these logits by a few 1e-3
    # (0.0055 on the H100); the 4-bit models compute alike on both.
    bound = 1e-2 if name == "int8" and DEVICE == "cuda" else 1e-3
    assert err < bound, f"{name}: relative error {err:.3g} against bitsandbytes {manifest()['versions']['bitsandbytes']}"


def _fp4_zero_unsigned(packed):
    """FP4 has two zero codes, 0 (+0) and 8 (-0), which decode alike. For inputs that round to zero,
    bitsandbytes' CPU kernel (which made the fixture) does not write the input's sign (it gives 8 for
    +0.001 and 0 for -0.001); bnb writes the sign. Both are read back as 0: compare with -0 as +0."""
    u = packed.view(torch.uint8)
    hi, lo = u >> 4, u & 15
    hi = torch.where(hi == 8, torch.zeros_like(hi), hi)
    lo = torch.where(lo == 8, torch.zeros_like(lo), lo)
    return (hi << 4) | lo


def _check_nearer_nested_codes(key, ours, theirs, fixture):
    """The double-quantized absmax (8-bit dynamic codes of absmax - offset) may differ from the
    fixture's in a few entries that lie near the midpoint between two codes: bitsandbytes' CPU
    blockwise kernel (which made the fixture) then sometimes takes the farther of the two neighbours
    (seen here: |x - code| 0.00704 against 0.00702). Everything else (the offset, the second-level
    absmax, the JSON) must be identical; where the codes differ, they must be neighbours and ours the
    nearer one to the value recomputed from the float weight."""
    import json

    prefix = key[: -len("absmax")]
    weight = _tensors(os.path.join(FIXTURE, "float"))[prefix[:-1]]
    blob = [v for k, v in fixture.items() if k.startswith(prefix + "quant_state.bitsandbytes__")][0]
    meta = json.loads(bytes(blob.tolist()).decode())
    absmax = weight.float().reshape(-1, meta["blocksize"]).abs().amax(1)
    x = (absmax - torch.tensor(meta["nested_offset"], dtype=torch.float32)).double()
    scale = fixture[prefix + "nested_absmax"].double().repeat_interleave(meta["nested_blocksize"])[: x.numel()]
    code = fixture[prefix + "nested_quant_map"].double()
    where = (ours != theirs).nonzero().view(-1)
    assert where.numel() <= max(1, x.numel() // 50), f"{key}: {where.numel()} of {x.numel()} codes differ"
    for i in where.tolist():
        a, b, v = int(ours[i]), int(theirs[i]), (x[i] / scale[i]).item()
        assert abs(a - b) == 1, f"{key}[{i}]: codes {a} and {b} are not neighbours"
        assert abs(v - code[a].item()) <= abs(v - code[b].item()), f"{key}[{i}]: {a} is the farther code for {v}"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_quantized_here_equals_fixture_bytes(name, tmp_path):
    """Quantizing the fixture's float model here and saving gives what real bitsandbytes saved: the
    same keys, dtypes, shapes and bytes (packed weights, absmax, code tables, the packed
    quant_state.bitsandbytes__* JSON, SCB), up to what the formats leave free:
      * the double-quantization offset is the mean of the absmax, which bnb takes in binary64 and
        the reference in float32 (docs/FORMATS.md §4.1): it may differ in its last bits, and with it
        the second-level absmax (by as much) and a few nested codes (by one step);
      * on CUDA, LLM.int8 rounds each weight row as bitsandbytes' CUDA kernel does, the fixture as
        its CPU path does: a few codes differ by one step at ties (SCB is the same)."""
    m = load(**VARIANTS[name]["bnb_config"])
    m.save_pretrained(tmp_path, safe_serialization=True)
    ours, theirs = _tensors(tmp_path), _tensors(os.path.join(FIXTURE, name))
    assert sorted(ours) == sorted(theirs)
    packed_fp4 = {k for k in theirs if k + ".quant_state.bitsandbytes__fp4" in theirs}
    nested = {k for k in theirs if k.endswith(".absmax") and k[: -len("absmax")] + "nested_absmax" in theirs}
    blobs = {k for k in theirs if ".quant_state.bitsandbytes__" in k}
    other_offset = {}  # weight prefix ("...weight.") -> |ours - theirs| where the offsets differ
    for k in blobs:
        a, b = _blob(ours[k]), _blob(theirs[k])
        oa, ob = a.pop("nested_offset", None), b.pop("nested_offset", None)
        assert a == b, f"{k}: {a} != {b}"
        if oa != ob:  # a float32 sum of the absmax is a few ulps from the binary64 one
            assert abs(oa - ob) <= abs(ob) * 2.0 ** -20, f"{k}: nested_offset {oa} is more than a few ulps from {ob}"
            other_offset[k.split("quant_state.")[0]] = abs(oa - ob)
    for k in sorted(set(theirs) - blobs):
        a, b = ours[k], theirs[k]
        if k in packed_fp4:
            a, b = _fp4_zero_unsigned(a), _fp4_zero_unsigned(b)
        assert (a.dtype, tuple(a.shape)) == (b.dtype, tuple(b.shape)), k
        if _bytes(a) == _bytes(b):
            continue
        prefix = k[: k.rfind(".") + 1]
        if k in nested and prefix in other_offset:
            _check_neighbour_codes(k, a, b)
        elif k in nested:
            _check_nearer_nested_codes(k, a, b, theirs)
        elif k.endswith(".nested_absmax") and prefix in other_offset:  # max |absmax - offset| moves with it
            assert (a.double() - b.double()).abs().max() <= 2 * other_offset[prefix] + b.abs().max() * 2.0 ** -23, k
        elif DEVICE == "cuda" and a.dtype == torch.int8:
            _check_neighbour_codes(k, a, b)
        else:
            diff = (a.double() - b.double()).abs().max().item() if a.is_floating_point() else None
            raise AssertionError(f"{k}: bytes differ (max |diff| {diff})")


def _blob(t):
    return json.loads(bytes(t.tolist()).decode())


def _check_neighbour_codes(key, ours, theirs):
    """Codes that may differ by one step where the value lies at a tie: at most 2 % of them."""
    d = (ours.int() - theirs.int()).abs()
    assert d.max() <= 1, f"{key}: codes differ by {d.max().item()}"
    assert (d != 0).sum() <= max(1, d.numel() // 50), f"{key}: {(d != 0).sum().item()} of {d.numel()} codes differ"


@needs_bnb_layer
@pytest.mark.parametrize("damage", ["quant_state_truncated", "absmax_truncated", "weight_truncated"])
def test_corrupt_checkpoint_is_a_value_error_naming_the_tensor(damage, tmp_path):
    """A 4-bit checkpoint whose quant_state is corrupt or truncated does not load: the layer raises a
    ValueError saying what is wrong, and transformers' load report names the tensor. (transformers
    collects conversion errors into that report and then raises its own RuntimeError.)"""
    import shutil

    from safetensors.torch import load_file, save_file

    src = os.path.join(FIXTURE, "nf4_dq")
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), tmp_path)
    tensors = load_file(os.path.join(tmp_path, "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    part = {"quant_state_truncated": key + ".quant_state.bitsandbytes__nf4", "absmax_truncated": key + ".absmax",
            "weight_truncated": key}[damage]
    tensors[part] = tensors[part][: tensors[part].shape[0] // 3].clone()
    save_file(tensors, os.path.join(tmp_path, "model.safetensors"), metadata={"format": "pt"})
    import logging

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.text = []

        def emit(self, record):
            self.text.append(record.getMessage())

    keep, hf_logger = Keep(), logging.getLogger("transformers")
    hf_logger.addHandler(keep)
    try:
        with pytest.raises(Exception) as raised:
            load(path=str(tmp_path))
    finally:
        hf_logger.removeHandler(keep)
    report = "\n".join(keep.text) + str(raised.value)
    assert "ValueError" in report, report[-2000:]
    assert key in report
