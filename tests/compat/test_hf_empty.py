"""Empty inputs through quantized layers of a loaded model give empty results (as with bitsandbytes): a
batch of zero sequences or zero tokens through an MLP block, and zero-row inputs to Linear4bit /
Linear8bitLt, forward and backward."""

import pytest
import torch

from conftest import DEVICE, load

CONFIGS = {
    "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype="float32"),
    "fp4-bf16": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype="bfloat16"),
    "int8": dict(load_in_8bit=True, llm_int8_threshold=6.0),
    "int8-t0": dict(load_in_8bit=True, llm_int8_threshold=0.0),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def qmodel(request):
    kw = CONFIGS[request.param]
    dtype = torch.bfloat16 if kw.get("bnb_4bit_compute_dtype") == "bfloat16" else torch.float32
    return load(dtype=dtype, **kw).eval()


@pytest.mark.parametrize("shape", [(0, 5, 64), (3, 0, 64)], ids=str)
def test_mlp_block_zero_rows(qmodel, shape):
    """A decoder layer's MLP (three quantized linears) on a batch of zero sequences or zero tokens.
    (The whole model cannot take such a batch: Llama's attention reshapes with -1, which torch refuses
    for zero elements; that is transformers', with any weights.)"""
    mlp = qmodel.model.layers[0].mlp
    x = torch.empty(shape, dtype=qmodel.model.embed_tokens.weight.dtype, device=DEVICE)
    with torch.no_grad():
        y = mlp(x)
    assert y.shape == shape and y.dtype == x.dtype


@pytest.mark.parametrize("shape", [(0, 64), (3, 0, 64), (0, 0, 64)], ids=str)
def test_linear_zero_rows(qmodel, shape):
    layer = qmodel.model.layers[0].mlp.up_proj  # 64 -> 128
    dtype = qmodel.model.embed_tokens.weight.dtype
    x = torch.empty(shape, dtype=dtype, device=DEVICE)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == shape[:-1] + (128,)
    assert y.dtype == dtype


def test_linear_zero_rows_backward(qmodel):
    layer = qmodel.model.layers[0].mlp.down_proj  # 128 -> 64
    dtype = qmodel.model.embed_tokens.weight.dtype
    x = torch.empty(0, 128, dtype=dtype, device=DEVICE, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 64)
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == (0, 128)


def test_one_row_after_empty(qmodel):
    """An empty call leaves the layer usable: the next real input gives the same result as before it."""
    layer = qmodel.model.layers[1].self_attn.o_proj
    dtype = qmodel.model.embed_tokens.weight.dtype
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(3)).to(DEVICE, dtype)
    with torch.no_grad():
        before = layer(x)
        layer(x[:0])
        after = layer(x)
    assert torch.equal(before, after)
