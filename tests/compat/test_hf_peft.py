"""peft on the layer: QLoRA on the 4-bit model (prepare_model_for_kbit_training, get_peft_model with LoRA
on every linear layer, 20 steps, merge_and_unload) and the same on the 8-bit model, with the LoRA
gradients through LLM.int8 checked against float64 autograd through the dequantized weights."""

import pytest
import torch

from conftest import float64_reference, load, rel_err, train

STEPS = 20


def _lora(model, **kw):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM", **kw)
    return get_peft_model(model, config)


def _lora_layers(model, base_cls):
    return [m for m in model.modules() if hasattr(m, "lora_A") and isinstance(m.get_base_layer(), base_cls)]


def _assert_falls(losses):
    assert all(torch.isfinite(torch.tensor(losses))), losses
    # The tiny model starts near log(256) = 5.5 with a frozen, small lm_head: LoRA moves it by tenths.
    assert losses[-1] < losses[0] - 0.25, losses
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, losses


def test_qlora_4bit_trains_and_merges(ids):
    import bitsandbytes as bb

    m = load(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
             bnb_4bit_compute_dtype="float32")
    pm = _lora(m)
    assert len(_lora_layers(pm, bb.nn.Linear4bit)) == 14  # every linear layer but lm_head
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen = [p.data.clone() for p in pm.parameters() if not p.requires_grad and p.dtype == torch.uint8]
    losses = train(pm, ids, STEPS)
    print("4-bit LoRA losses", losses)
    _assert_falls(losses)
    assert all(torch.equal(a, p.data) for a, p in
               zip(frozen, [p for p in pm.parameters() if not p.requires_grad and p.dtype == torch.uint8]))

    pm.eval()
    with torch.no_grad():
        adapted = pm(input_ids=ids).logits
        with pm.disable_adapter():
            base = pm(input_ids=ids).logits
    merged = pm.merge_and_unload()
    assert not any(hasattr(mod, "lora_A") for mod in merged.modules())
    assert sum(isinstance(mod, bb.nn.Linear4bit) for mod in merged.modules()) == 14
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    # Merging re-quantizes W + BA to nf4, one more 4-bit rounding of the weights; the merged model
    # must still carry the adapter: much closer to the adapted model than the base model is.
    err, base_err = rel_err(got, adapted), rel_err(base, adapted)
    assert err < 0.15 and err < 0.5 * base_err, (err, base_err)
    assert got.argmax(-1).eq(adapted.argmax(-1)).float().mean() > 0.8


@pytest.fixture(scope="module")
def lora8():
    import bitsandbytes as bb

    m = load(load_in_8bit=True, llm_int8_threshold=6.0)
    # init_lora_weights=False: B is random too, so that the first step's gradients of A are not zero
    pm = _lora(m, init_lora_weights=False)
    assert len(_lora_layers(pm, bb.nn.Linear8bitLt)) == 14
    return pm


def test_lora_8bit_gradients_match_float64(lora8, ids):
    """One forward and backward of the LoRA model on LLM.int8, against float64 autograd through a model
    whose weights are the int8 ones dequantized and whose LoRA matrices are the same."""
    from peft import LoraConfig, get_peft_model

    pm = lora8
    pm.train()
    pm.zero_grad()
    pm(input_ids=ids, labels=ids).loss.backward()
    got = {n: p.grad.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    assert got and all(g is not None and torch.isfinite(g).all() for g in got.values())

    ref = float64_reference(pm.get_base_model())
    ref = get_peft_model(ref, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                         task_type="CAUSAL_LM", init_lora_weights=False))
    ref_params = dict(ref.named_parameters())
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad:
                ref_params[n].copy_(p.double())
    ref.train()
    ref(input_ids=ids, labels=ids).loss.backward()
    # bnb's Linear8bitLt trains through LLM.int8 (activations quantized to int8 by rows, 1/127 of each
    # row's largest value): about 2e-2 of each gradient's largest entry here. (bitsandbytes itself, in
    # training mode on the CPU, multiplies by the dequantized weight instead: 3e-6.)
    worst = max((rel_err(got[n], ref_params[n].grad), n) for n in got)
    assert worst[0] < 5e-2, worst


def test_lora_8bit_trains(lora8, ids):
    losses = train(lora8, ids, STEPS)
    print("8-bit LoRA losses", losses)
    _assert_falls(losses)
