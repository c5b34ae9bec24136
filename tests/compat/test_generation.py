"""bnb.generation.greedy_decode on the fixture model loaded in 4 and 8 bits through transformers: the
tokens of generate()'s greedy decoding with a static cache, for batches of one and two prompts,
any number of new tokens, and the decode step through torch.compile; with BNB_TEST_DEVICE=cuda
the decode step is replayed from a CUDA graph (the default there), and equals the plain loop too."""

import pytest
import torch

from conftest import DEVICE, input_ids, load, needs_bnb_layer

pytestmark = needs_bnb_layer

CONFIGS = {
    "nf4-nested-bf16": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype="bfloat16"),
    "fp4-fp32": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype="float32"),
    "int8": dict(load_in_8bit=True),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    return load(**CONFIGS[request.param]).eval()


def capturable(model):
    """Whether the model's decode step can be captured in a CUDA graph. The compatibility layer's
    8-bit product with outlier columns (threshold > 0, transformers' default) is bitsandbytes' own
    (its roundings, the outlier columns gathered by their count, which is read on the host), and a
    graph cannot hold that; greedy_decode then raises (test below) and runs with cuda_graph=False."""
    return not getattr(model, "is_loaded_in_8bit", False)


def graph_arg(model):
    return None if capturable(model) else False


def generate(model, ids, n):
    """generate()'s greedy ids [B, L + n] and the logits each new token came from [B, n, vocab]."""
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                             cache_implementation="static", output_logits=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits, 1)


def assert_same_decoding(got, want, exact=True):
    """Equal tokens, and logits equal (the same kernels in the same order) or, through torch.compile's
    fused kernels, close. The logits see what the tokens of a small model may not: a step fed the
    wrong position (its rotary angle) or the wrong cache slot still often picks the same token."""
    (ids, logits), (want_ids, want_logits) = got, want
    assert ids.shape == want_ids.shape and torch.equal(ids, want_ids)
    assert logits.shape == want_logits.shape
    if exact:
        assert torch.equal(logits, want_logits.to(logits.dtype))
    else:
        torch.testing.assert_close(logits.float(), want_logits.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("n", [1, 2, 4, 7])
@pytest.mark.parametrize("batch", [1, 2])
def test_greedy_decode_gives_generates_tokens(model, n, batch):
    from bnb.generation import greedy_decode

    ids = input_ids()[:batch, :6].contiguous()
    want = generate(model, ids, n)
    got = greedy_decode(model, ids, n, cuda_graph=graph_arg(model), output_logits=True)
    assert got[0].shape == (batch, 6 + n)
    assert_same_decoding(got, want)
    assert torch.equal(greedy_decode(model, ids, n, cuda_graph=graph_arg(model)), got[0])  # ids without logits
    if DEVICE == "cuda" and capturable(model):  # the graph's replays equal the plain loop's steps
        assert_same_decoding(greedy_decode(model, ids, n, cuda_graph=False, output_logits=True), got)


def test_greedy_decode_through_torch_compile(model):
    from bnb.generation import greedy_decode

    ids = input_ids()[:2, :6].contiguous()
    assert_same_decoding(greedy_decode(model, ids, 5, compile=True, cuda_graph=graph_arg(model), output_logits=True),
                         generate(model, ids, 5), exact=False)


def test_uncapturable_step_names_the_way_out(model):
    from bnb.generation import greedy_decode

    if DEVICE != "cuda" or capturable(model):
        pytest.skip("a CUDA device and a model whose step cannot be captured")
    with pytest.raises(RuntimeError, match="cuda_graph=False"):
        greedy_decode(model, input_ids()[:1, :6].contiguous(), 7)


def test_greedy_decode_rejects_bad_arguments(model):
    from bnb.generation import greedy_decode

    ids = input_ids()[:1, :6].contiguous()
    assert torch.equal(greedy_decode(model, ids, 0), ids)
    none, logits = greedy_decode(model, ids, 0, output_logits=True)
    assert torch.equal(none, ids) and logits.shape == (1, 0, model.config.vocab_size)
    with pytest.raises(ValueError, match="input_ids"):
        greedy_decode(model, ids.float(), 2)
    with pytest.raises(ValueError, match="input_ids"):
        greedy_decode(model, ids[0], 2)
    with pytest.raises(ValueError, match="input_ids"):
        greedy_decode(model, ids[:, :0], 2)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="max_new_tokens"):
            greedy_decode(model, ids, bad)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="cuda_graph"):
            greedy_decode(model, ids, 2, cuda_graph=True)
