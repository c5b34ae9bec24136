"""transformers' 8-bit (LLM.int8) path through the layer: llm_int8_threshold, llm_int8_skip_modules,
llm_int8_enable_fp32_cpu_offload, generate(), and the logits against float64 with the int8 weights."""

import pytest
import torch

from conftest import DEVICE, float64_reference, load, rel_err

LINEARS_PER_LAYER = 7


def _int8_modules(m):
    import bitsandbytes as bb

    return {n: mod for n, mod in m.named_modules() if isinstance(mod, bb.nn.Linear8bitLt)}


@pytest.fixture(scope="module", params=[0.0, 6.0], ids=["threshold0", "threshold6"])
def model8(request):
    return request.param, load(load_in_8bit=True, llm_int8_threshold=request.param).eval()


def test_layers_are_int8(model8):
    import bitsandbytes as bb

    threshold, m = model8
    mods = _int8_modules(m)
    assert len(mods) == 2 * LINEARS_PER_LAYER, sorted(mods)
    assert m.is_loaded_in_8bit
    for mod in mods.values():
        assert isinstance(mod.weight, bb.nn.Int8Params)
        assert mod.weight.dtype == torch.int8
        assert mod.state.threshold == threshold


def test_logits_match_int8_weights_in_float64(model8, ids):
    threshold, m = model8
    ref = float64_reference(m)
    with torch.no_grad():
        got = m(input_ids=ids).logits
        want = ref(input_ids=ids).logits
    assert torch.isfinite(got).all()
    # The activations are quantized to int8 by rows (outlier columns above the threshold stay in
    # float): a few 1/127 steps of each row's largest value, summed over two layers.
    err = rel_err(got, want)
    assert err < 3e-2, f"threshold {threshold}: relative error {err:.3g}"


def test_generate(model8, ids):
    threshold, m = model8
    with torch.no_grad():
        out = m.generate(ids[:1, :6], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 10)
    assert torch.equal(out[:, :6], ids[:1, :6])
    assert ((out >= 0) & (out < 256)).all()


def test_outlier_threshold_takes_float_columns(ids):
    """With a threshold below the activations' magnitude, the outlier columns go through the float
    weights: closer to float64 than threshold 0, where every column is int8."""
    import bitsandbytes as bb

    results = {}
    for threshold in (0.0, 0.05):
        m = load(load_in_8bit=True, llm_int8_threshold=threshold).eval()
        ref = float64_reference(m)
        with torch.no_grad():
            results[threshold] = rel_err(m(input_ids=ids).logits, ref(input_ids=ids).logits)
        assert all(isinstance(mod, bb.nn.Linear8bitLt) for mod in _int8_modules(m).values())
    assert results[0.05] < results[0.0], results


def test_skip_modules():
    m = load(load_in_8bit=True, llm_int8_skip_modules=["down_proj", "lm_head"])
    mods = _int8_modules(m)
    assert len(mods) == 2 * (LINEARS_PER_LAYER - 1)
    for i in range(2):
        down = m.model.layers[i].mlp.down_proj
        assert type(down) is torch.nn.Linear and down.weight.dtype == torch.float32
    with torch.no_grad():
        assert m(input_ids=torch.tensor([[1, 2, 3]], device=DEVICE)).logits.shape == (1, 3, 256)


def test_fp32_cpu_offload():
    """Modules the device_map sends to "cpu" stay float32 when llm_int8_enable_fp32_cpu_offload is on
    (and the map is refused without it). On a machine without a GPU the rest of the model is mapped
    to torch.device("cpu"), which transformers does not count as offloaded. (accelerate keeps the
    offloaded weights off the module, on the meta device, and brings them in for each forward.)"""
    device_map = {"model.layers.1.mlp": "cpu", "": torch.device(DEVICE)}
    with pytest.raises(ValueError, match="llm_int8_enable_fp32_cpu_offload"):
        load(device_map=device_map, load_in_8bit=True)
    m = load(device_map=device_map, load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=True).eval()
    mods = _int8_modules(m)
    assert len(mods) == 2 * LINEARS_PER_LAYER - 3, sorted(mods)
    for name in ("gate_proj", "up_proj", "down_proj"):
        offloaded = getattr(m.model.layers[1].mlp, name)
        assert type(offloaded) is torch.nn.Linear and offloaded.weight.dtype == torch.float32
    ids = torch.tensor([[1, 2, 3, 4]], device=m.device)
    with torch.no_grad():
        out = m.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7)
