"""transformers' 4-bit path through the layer: from_pretrained with BitsAndBytesConfig(load_in_4bit=...),
generate(), and the logits against a float64 model whose Linear weights are the dequantized ones."""

import pytest
import torch

from conftest import float64_reference, load, rel_err

# (quant type, double quant, compute dtype, quant storage): every value of each argument, the
# full product only for the first two (the float32 rows).
CASES = [
    ("nf4", True, "float32", "uint8"),
    ("nf4", False, "float32", "uint8"),
    ("fp4", True, "float32", "uint8"),
    ("fp4", False, "float32", "uint8"),
    ("nf4", True, "bfloat16", "uint8"),
    ("fp4", False, "bfloat16", "uint8"),
    ("nf4", True, "float16", "uint8"),
    ("nf4", True, "bfloat16", "bfloat16"),
    ("fp4", False, "float32", "bfloat16"),
    ("nf4", False, "float16", "bfloat16"),
]
# Relative error of the logits against the float64 model with the same (dequantized) weights: only
# the compute dtype's rounding of activations is left.
TOL = {"float32": 1e-5, "bfloat16": 4e-2, "float16": 5e-3}


def _id(case):
    qt, dq, cd, st = case
    return f"{qt}-{'dq' if dq else 'nodq'}-{cd}-{st}"


@pytest.fixture(scope="module", params=CASES, ids=_id)
def model4(request):
    qt, dq, cd, st = request.param
    m = load(dtype=getattr(torch, cd), load_in_4bit=True, bnb_4bit_quant_type=qt, bnb_4bit_use_double_quant=dq,
             bnb_4bit_compute_dtype=cd, bnb_4bit_quant_storage=st).eval()
    return request.param, m


def test_layers_are_4bit(model4):
    import bitsandbytes as bb

    (qt, dq, cd, st), m = model4
    linears = {n: mod for n, mod in m.named_modules() if isinstance(mod, bb.nn.Linear4bit)}
    assert len(linears) == 2 * 7, sorted(linears)  # q k v o gate up down, per layer; lm_head stays float
    assert not isinstance(m.lm_head, bb.nn.Linear4bit)
    assert m.is_loaded_in_4bit
    for mod in linears.values():
        w = mod.weight
        assert isinstance(w, bb.nn.Params4bit)
        assert w.dtype == getattr(torch, st)
        assert w.quant_state.quant_type == qt
        assert (w.quant_state.state2 is not None) == dq
        assert mod.compute_dtype == getattr(torch, cd)
        assert w.numel() * w.element_size() * 2 == mod.in_features * mod.out_features


def test_logits_match_dequantized_float64(model4, ids):
    (qt, dq, cd, st), m = model4
    with torch.no_grad():
        got = m(input_ids=ids).logits
        want = float64_reference(m)(input_ids=ids).logits
    assert got.shape == (2, ids.shape[1], 256)
    assert torch.isfinite(got).all()
    err = rel_err(got, want)
    assert err < TOL[cd], f"{_id((qt, dq, cd, st))}: relative error {err:.3g}"


def test_generate(model4, ids):
    (qt, dq, cd, st), m = model4
    with torch.no_grad():
        out = m.generate(ids[:1, :6], max_new_tokens=4, do_sample=False, pad_token_id=0)
        again = m.generate(ids[:1, :6], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 10)
    assert torch.equal(out[:, :6], ids[:1, :6])
    assert ((out >= 0) & (out < 256)).all()
    assert torch.equal(out, again)
    if cd == "float32":  # the same greedy tokens as the float64 model with the dequantized weights
        ref = float64_reference(m)
        with torch.no_grad():
            want = ref.generate(ids[:1, :6], max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert torch.equal(out, want)
