"""bitsandbytes.nn as the compatibility layer serves it: the constructor signatures and parameter
attributes transformers and peft rely on, state-dict round trips, Params4bit.from_prequantized,
forwards against float64 references, device/dtype moves, copies, empty inputs and the embeddings.

References: float64 torch math through the dequantized weight (bitsandbytes.functional's
dequantize_4bit, or CB * SCB / 127 computed here), and signatures recorded once from bitsandbytes
0.50.2. The tests use only `bitsandbytes` and torch, so they also run against the real package
(tests marked needs_bnb_layer are about bnb's layer and skip there).
"""

import copy
import inspect

import pytest

torch = pytest.importorskip("torch")

import bitsandbytes  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
from bitsandbytes.nn import (  # noqa: E402
    Embedding, Embedding4bit, Embedding8bit, EmbeddingFP4, EmbeddingNF4, Int8Params, Linear4bit, Linear8bitLt,
    LinearFP4, LinearNF4, Params4bit, StableEmbedding)
from conftest import IS_BNB, needs_bnb_layer  # noqa: E402

# relative error norm against float64 through the same quantized weight
from device_helpers import DEVICES, TOL, device, randn, rel_err  # noqa: E402,F401  (device: autouse fixture)


def linear4bit(K, N, quant_type="nf4", nested=True, storage=torch.uint8, compute_dtype=torch.float32, bias=True,
               seed=1):
    layer = Linear4bit(K, N, bias, compute_dtype, compress_statistics=nested, quant_type=quant_type,
                       quant_storage=storage)
    with torch.no_grad():
        layer.weight.data = randn(N, K, seed=seed)
        if bias:
            layer.bias.data = randn(N, seed=seed + 1)
    return layer.to(torch.get_default_device())


def linear8bit(K, N, threshold=0.0, bias=True, seed=1):
    layer = Linear8bitLt(K, N, bias, has_fp16_weights=False, threshold=threshold)
    with torch.no_grad():
        layer.weight.data = randn(N, K, seed=seed)
        if bias:
            layer.bias.data = randn(N, seed=seed + 1)
    return layer.to(torch.get_default_device())


def same_bytes(a, b):
    """Bit-identical tensors (packed codes viewed as bf16 may hold NaN patterns, which torch.equal
    calls unequal)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                      b.reshape(-1).view(torch.uint8))


def dequantized_4bit(layer):
    w = layer.weight
    return F.dequantize_4bit(w.data, w.quant_state).to(torch.float64)


def dequantized_int8(layer):
    return layer.weight.data.double() * (layer.weight.SCB.double() / 127).unsqueeze(1)


# ---------------------------------------------------------------- signatures and attributes
# parameter names of bitsandbytes 0.50.2 (recorded once with that release)
SIGNATURES = {
    Linear4bit.__init__: "input_features output_features bias compute_dtype compress_statistics quant_type "
                         "quant_storage device",
    LinearNF4.__init__: "input_features output_features bias compute_dtype compress_statistics quant_storage device",
    LinearFP4.__init__: "input_features output_features bias compute_dtype compress_statistics quant_storage device",
    Linear8bitLt.__init__: "input_features output_features bias has_fp16_weights threshold index device",
    Embedding.__init__: "num_embeddings embedding_dim padding_idx max_norm norm_type scale_grad_by_freq sparse "
                        "_weight device",
    StableEmbedding.__init__: "num_embeddings embedding_dim padding_idx max_norm norm_type scale_grad_by_freq "
                              "sparse _weight device dtype",
    Embedding8bit.__init__: "num_embeddings embedding_dim device dtype",
    Embedding4bit.__init__: "num_embeddings embedding_dim dtype quant_type quant_storage device",
    EmbeddingNF4.__init__: "num_embeddings embedding_dim dtype quant_storage device",
    EmbeddingFP4.__init__: "num_embeddings embedding_dim dtype quant_storage device",
    Params4bit.__new__: "data requires_grad quant_state blocksize compress_statistics quant_type quant_storage "
                        "module bnb_quantized kwargs",
    Int8Params.__new__: "data requires_grad has_fp16_weights CB SCB kwargs",
    Params4bit.from_prequantized: "data quantized_stats requires_grad device module kwargs",
}


@pytest.mark.parametrize("fn", list(SIGNATURES), ids=lambda f: f.__qualname__)
def test_signatures_match_bitsandbytes(fn):
    names = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
    assert names == SIGNATURES[fn].split()


def test_defaults_match_bitsandbytes():
    assert Linear8bitLt(8, 4).state.has_fp16_weights is True  # bitsandbytes' default: a trained float weight
    assert Linear8bitLt(8, 4).weight.requires_grad
    assert Int8Params(torch.zeros(2, 2)).requires_grad
    assert not Params4bit(torch.zeros(2, 2)).requires_grad and Params4bit(torch.zeros(2, 2)).blocksize == 64
    layer = Linear4bit(64, 8, quant_type="nf4")
    assert layer.weight.quant_type == "nf4" and layer.weight.compress_statistics and layer.compute_dtype is None
    assert LinearNF4(64, 8).weight.quant_type == "nf4" and LinearFP4(64, 8).weight.quant_type == "fp4"


def test_parameter_attributes_are_bitsandbytes(device):
    """transformers and peft rebuild parameters from `old.__dict__`: its keys must be the
    constructor's, and the rebuilt parameter must behave like the old one."""
    layer = Linear4bit(64, 16, True, torch.float32, compress_statistics=False, quant_type="fp4",
                       quant_storage=torch.bfloat16)
    w = layer.weight
    assert set(w.__dict__) == {"blocksize", "compress_statistics", "quant_type", "quant_state", "quant_storage",
                               "bnb_quantized", "module"}
    assert w.module is layer and w.quant_state is None and not w.bnb_quantized
    value = randn(16, 64, seed=3)
    new = Params4bit(value, requires_grad=False, **w.__dict__).to(device)  # transformers' Bnb4bitQuantize
    assert new.bnb_quantized and new.dtype == torch.bfloat16 and new.quant_type == "fp4"
    assert not new.quant_state.nested and tuple(new.quant_state.shape) == (16, 64)
    if new.module is layer:  # bitsandbytes points the module at the new state too
        assert layer.quant_state is new.quant_state
    l8 = Linear8bitLt(64, 16, has_fp16_weights=False)
    kwargs = dict(l8.weight.__dict__)
    assert {"has_fp16_weights", "SCB"} <= set(kwargs) and l8.weight.CB is None
    kwargs.pop("SCB", None)
    q = Int8Params(value, requires_grad=False, **kwargs).to(device)  # transformers' Bnb8bitQuantize
    assert q.dtype == torch.int8 and q.SCB.shape == (16,) and torch.equal(q.CB, q.data)


# ---------------------------------------------------------------- 4-bit
@needs_bnb_layer  # bitsandbytes' own load_state_dict does not take the quantized keys (transformers uses
# from_prequantized, tested below on both)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16], ids=str)
def test_linear4bit_state_dict_round_trip(quant_type, nested, storage):
    K, N = 128, 48
    layer = linear4bit(K, N, quant_type, nested, storage)
    sd = layer.state_dict()
    keys = ["weight", "bias", "weight.absmax", "weight.quant_map"]
    if nested:
        keys += ["weight.nested_absmax", "weight.nested_quant_map"]
    assert list(sd) == keys + [f"weight.quant_state.bitsandbytes__{quant_type}"]
    assert sd["weight"].dtype == storage and sd["weight"].numel() * sd["weight"].element_size() == N * K // 2
    fresh = Linear4bit(K, N, True, torch.float32, compress_statistics=not nested, quant_type="fp4" if
                       quant_type == "nf4" else "nf4", quant_storage=storage)
    fresh.load_state_dict(sd)
    w = fresh.weight
    assert isinstance(w, Params4bit) and w.bnb_quantized and w.quant_type == quant_type
    assert w.compress_statistics == nested and w.dtype == storage
    assert isinstance(w.quant_state, F.QuantState)
    again = fresh.state_dict()
    assert list(again) == list(sd) and all(same_bytes(again[k], sd[k]) for k in sd)
    x = randn(3, K, seed=5)
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("quant_type,nested", [("nf4", True), ("fp4", False)])
def test_linear4bit_forward_against_float64(compute_dtype, quant_type, nested):
    K, N = 192, 40
    layer = linear4bit(K, N, quant_type, nested, compute_dtype=compute_dtype)
    x = randn(2, 3, K, seed=7)
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == x.dtype and y.shape == (2, 3, N)
    want = x.double() @ dequantized_4bit(layer).t() + layer.bias.double()
    assert rel_err(y, want) < TOL[compute_dtype]


def test_from_prequantized_round_trip(device):
    K, N = 128, 32
    layer = linear4bit(K, N, "nf4", True, torch.bfloat16)
    sd = layer.state_dict()
    assert list(sd) == ["weight", "bias", "weight.absmax", "weight.quant_map", "weight.nested_absmax",
                        "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4"]
    stats = {k: v for k, v in sd.items() if k.startswith("weight.")}
    for items in (stats, {k[len("weight."):]: v for k, v in stats.items()}):  # with and without the prefix
        target = Linear4bit(K, N, True, torch.float32, quant_type="nf4", quant_storage=torch.bfloat16)
        p = Params4bit.from_prequantized(data=sd["weight"], quantized_stats=items, requires_grad=False, device=device,
                                         module=target)
        assert isinstance(p, Params4bit) and p.bnb_quantized and not p.requires_grad
        assert p.quant_storage == torch.bfloat16 and p.quant_type == "nf4" and p.blocksize == 64
        assert p.compress_statistics and target.quant_state is p.quant_state
        assert torch.equal(F.dequantize_4bit(p.data, p.quant_state), F.dequantize_4bit(layer.weight.data,
                                                                                       layer.weight.quant_state))
        target.weight = p
        target.bias.data = sd["bias"]
        x = randn(2, K, seed=8)
        with torch.no_grad():
            assert torch.equal(target(x), layer(x))


@needs_bnb_layer
def test_from_prequantized_rejects_corrupt_state(device):
    K, N = 128, 32
    sd = linear4bit(K, N, "nf4", False).state_dict()
    stats = {k: v for k, v in sd.items() if k.startswith("weight.")}
    blob_key = "weight.quant_state.bitsandbytes__nf4"
    broken = dict(stats, **{blob_key: stats[blob_key][:-5]})  # truncated JSON
    with pytest.raises(ValueError, match="bitsandbytes__nf4"):
        Params4bit.from_prequantized(sd["weight"], broken, device=device)
    with pytest.raises(ValueError, match="absmax"):
        Params4bit.from_prequantized(sd["weight"], dict(stats, **{"weight.absmax": stats["weight.absmax"][:-1]}),
                                     device=device)
    with pytest.raises(ValueError, match="packed weight"):
        Params4bit.from_prequantized(sd["weight"][:-1], stats, device=device)
    target = Linear4bit(K, N, quant_type="nf4", compress_statistics=False)
    with pytest.raises(RuntimeError, match="weight"):
        target.load_state_dict(dict(sd, **{blob_key: sd[blob_key][:-5]}))


def test_peft_style_requantize_after_merge(device):
    """peft merges a LoRA delta by dequantizing, adding, and rebuilding the parameter from the
    old one's __dict__ with bnb_quantized=False; the move quantizes the new values."""
    K, N = 64, 16
    layer = linear4bit(K, N, "nf4", True)
    w = layer.weight
    merged = F.dequantize_4bit(w.data, w.quant_state) + 0.5
    kwargs = dict(w.__dict__)
    kwargs["bnb_quantized"] = False
    kwargs["requires_grad"] = False
    new = Params4bit(merged.to("cpu"), **kwargs).to(w.device)
    assert new.bnb_quantized and new.quant_state is not w.quant_state
    assert rel_err(F.dequantize_4bit(new.data, new.quant_state), merged) < 0.1
    packed, state = F.quantize_4bit(merged, compress_statistics=True, quant_type="nf4")
    assert torch.equal(new.data, packed)


def test_moves_and_dtypes(device):
    layer = linear4bit(64, 16, "fp4", False)
    w = layer.weight
    codes = w.data.clone()
    if IS_BNB:
        assert w.to(torch.float16).dtype == torch.uint8  # bnb: quantized codes ignore a dtype
    layer = layer.to(torch.bfloat16)  # the float bias follows, the codes stay
    assert layer.bias.dtype == torch.bfloat16 and torch.equal(layer.weight.data, codes)
    layer = layer.to(device)
    assert torch.equal(layer.weight.data, codes) and layer.weight.quant_state.absmax.device.type == device
    p = Int8Params(randn(8, 16), requires_grad=False, has_fp16_weights=False)
    assert p.to(device).dtype == torch.int8
    f = Int8Params(randn(8, 16), requires_grad=True, has_fp16_weights=True)
    moved = f.to(device)
    assert moved.dtype == torch.float32 and moved.SCB is None and moved.requires_grad
    l8 = linear8bit(32, 8).to(device)
    assert l8.weight.dtype == torch.int8 and l8.to(torch.float16).weight.dtype == torch.int8


def test_deepcopy():
    layer = linear4bit(64, 16, "nf4", True)
    clone = copy.deepcopy(layer)
    assert clone.weight is not layer.weight and clone.weight.data_ptr() != layer.weight.data_ptr()
    assert clone.weight.quant_state is not layer.weight.quant_state
    x = randn(2, 64, seed=9)
    with torch.no_grad():
        assert torch.equal(clone(x), layer(x))
        layer.weight.data.zero_()
        assert not torch.equal(clone(x), layer(x))
    if IS_BNB:  # (bitsandbytes' copy still points at the original layer)
        assert clone.weight.module is clone
    l8 = linear8bit(32, 8)
    c8 = copy.deepcopy(l8)
    assert c8.weight.SCB is not l8.weight.SCB and torch.equal(c8.weight.SCB, l8.weight.SCB)
    x = randn(3, 32, seed=10)
    with torch.no_grad():
        assert torch.equal(c8(x), l8(x))


# ---------------------------------------------------------------- LLM.int8()
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_linear8bitlt_state_dict_round_trip(threshold, device):
    K, N = 96, 24
    layer = linear8bit(K, N, threshold)
    sd = layer.state_dict()
    assert list(sd) == ["weight", "bias", "SCB", "weight_format"]
    assert sd["weight"].dtype == torch.int8 and sd["SCB"].dtype == torch.float32 and int(sd["weight_format"]) == 0
    fresh = Linear8bitLt(K, N, has_fp16_weights=False, threshold=threshold).to(device)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.weight.data, sd["weight"]) and torch.equal(fresh.weight.SCB, sd["SCB"])
    x = randn(4, K, seed=11)
    x[:, 3] *= 20
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))
    assert list(fresh.state_dict()) == list(sd)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_linear8bitlt_forward_against_float64(dtype, device):
    """y = x @ W^T + b for W = CB * SCB / 127: the int8 product's only other error is the
    row-wise quantization of x (at most half a step, rowmax / 254, per entry)."""
    K, N = 128, 32
    layer = linear8bit(K, N)
    W = dequantized_int8(layer)
    x = randn(5, K, dtype=dtype, seed=12)
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == dtype and y.shape == (5, N)
    want = x.double() @ W.t() + layer.bias.double()
    step = x.double().abs().amax(1, keepdim=True) / 254  # bound on each entry's rounding error
    bound = step @ W.abs().sum(1, keepdim=True).t()
    # float32 results: rounded once on the CPU, through float16 on a GPU (as bitsandbytes' kernels)
    tol = 1e-2 if dtype != torch.float32 else (1e-5 if device == "cpu" else 1e-3)
    assert ((y.double() - want).abs() <= bound + tol * want.abs() + 1e-6).all()
    assert state_matches(layer)


def state_matches(layer):
    """After a forward the state holds the int8 weight (bitsandbytes moves SCB there from the weight)."""
    SCB = layer.weight.SCB if layer.weight.SCB is not None else layer.state.SCB
    return layer.state.CB is not None and torch.equal(layer.state.CB, layer.weight.data) and \
        torch.equal(layer.state.SCB, SCB)


# ---------------------------------------------------------------- empty inputs
def test_empty_inputs_give_empty_outputs(device):
    K, N = 64, 16
    layers = [linear4bit(K, N, "nf4", True), linear4bit(K, N, "fp4", False, torch.bfloat16), linear8bit(K, N),
              linear8bit(K, N, threshold=6.0)]
    for layer in layers:
        for shape in [(0, K), (2, 0, K)]:
            with torch.no_grad():
                y = layer(torch.zeros(shape))
            assert y.shape == shape[:-1] + (N,) and y.dtype == torch.float32, type(layer).__name__
    for emb in (EmbeddingNF4(10, 64), Embedding8bit(10, 64), EmbeddingFP4(10, 48)):
        emb = emb.to(device)
        out = emb(torch.zeros((0,), dtype=torch.long))
        assert out.shape == (0, emb.embedding_dim)
        assert emb(torch.zeros((3, 0), dtype=torch.long)).shape == (3, 0, emb.embedding_dim)


# ---------------------------------------------------------------- embeddings
def float_embedding(num, dim, seed=13):
    emb = torch.nn.Embedding(num, dim)
    with torch.no_grad():
        emb.weight.copy_(randn(num, dim, seed=seed))
    return emb


@pytest.mark.parametrize("cls,dim,storage", [(EmbeddingNF4, 128, torch.uint8), (EmbeddingFP4, 128, torch.bfloat16),
                                               (EmbeddingNF4, 48, torch.uint8)])
def test_embedding4bit_looks_up_dequantized_rows(cls, dim, storage, device):
    """Only the rows looked up are dequantized when rows are whole blocks (dim 128); else the table
    (dim 48): both equal rows of the dequantized table, for any quant_storage."""
    num = 20
    ref = float_embedding(num, dim)
    emb = cls(num, dim, quant_storage=storage)
    emb.load_state_dict(ref.state_dict())
    emb = emb.to(device)
    assert emb.weight.dtype == storage
    table = F.dequantize_4bit(emb.weight.data, emb.weight.quant_state)
    assert rel_err(table, ref.weight) < 0.2  # 4-bit quantization of the table
    idx = torch.tensor([[3, 0, 19], [7, 7, 1]])
    out = emb(idx)
    assert out.shape == (2, 3, dim) and out.dtype == torch.float32
    assert torch.equal(out, table[idx])


def test_embedding8bit_against_float64(device):
    num, dim = 16, 40
    ref = float_embedding(num, dim)
    emb = Embedding8bit(num, dim)
    emb.load_state_dict(ref.state_dict())
    emb = emb.to(device)
    assert emb.weight.dtype == torch.int8 and emb.weight.SCB.shape == (num,)
    idx = torch.tensor([5, 0, 15, 5])
    out = emb(idx)
    want = emb.weight.data[idx].double() * emb.weight.SCB[idx].double().unsqueeze(1) / 127
    assert out.dtype == torch.float32 and rel_err(out, want) < 1e-6
    assert rel_err(out, ref.weight[idx]) < 1e-2  # int8 rows of the fp16-rounded table
    with pytest.raises(NotImplementedError):
        emb.state_dict()


def test_embeddings_register_32bit_optimizer_state():
    from bitsandbytes.optim import GlobalOptimManager

    manager = GlobalOptimManager.get_instance()
    for emb in (Embedding(12, 8, padding_idx=2), StableEmbedding(12, 8, padding_idx=2)):
        assert any(m is emb and name == "weight" and cfg == {"optim_bits": 32}
                   for m, name, cfg in manager.module_weight_config_triple)
        assert torch.count_nonzero(emb.weight[2]) == 0  # the padding row
        limit = (6 / (12 + 8)) ** 0.5  # Xavier-uniform initialization
        assert emb.weight.abs().max() <= limit


def test_stable_embedding_is_layer_normed():
    emb = StableEmbedding(12, 8)
    with torch.no_grad():
        emb.norm.weight.copy_(randn(8, seed=14))
        emb.norm.bias.copy_(randn(8, seed=15))
    idx = torch.tensor([[1, 4], [11, 0]])
    rows = emb.weight[idx].double()
    mean, var = rows.mean(-1, keepdim=True), rows.var(-1, unbiased=False, keepdim=True)
    want = (rows - mean) / torch.sqrt(var + emb.norm.eps) * emb.norm.weight.double() + emb.norm.bias.double()
    out = emb(idx)
    assert out.dtype == torch.float32 and rel_err(out, want) < 1e-5
    out.sum().backward()
    assert emb.weight.grad is not None


def test_int8_weight_codes_follow_bitsandbytes_cpu_rounding(device):
    """On the CPU the weight is quantized as bitsandbytes' CPU backend does (so 8-bit checkpoints
    saved here match its bytes): codes = round-half-even(fp16(W) * fp32(127 / rowmax)), the row
    absmax of the fp16 weight in SCB."""
    if device != "cpu":
        pytest.skip("the CPU's rounding (on a GPU the CUDA kernels' rounding applies)")
    W = randn(256, 80, seed=30) * 3
    W[:, :8] = (W.abs().amax(1, keepdim=True) / 2).half().float()  # exact ties: rowmax / 2 gives 63.5
    layer = Linear8bitLt(80, 256, has_fp16_weights=False)
    with torch.no_grad():
        layer.weight.data = W.clone()
    layer = layer.to(device)
    W16 = W.half().float()
    absmax = W16.abs().amax(1)
    want = torch.round(W16 * (127.0 / absmax).unsqueeze(1)).to(torch.int8)
    assert torch.equal(layer.weight.SCB, absmax)
    assert torch.equal(layer.weight.data, want)


def test_copies_and_pickles_keep_parameters_and_state(device):
    """What bitsandbytes' users do with layers and parameters: copy.copy shares, deepcopy and
    pickle copy (same attributes, equal QuantState / MatmulLtState, the codes and SCB)."""
    import pickle

    p = Params4bit(randn(32, 64, seed=31), requires_grad=False, quant_type="nf4", blocksize=64,
                   compress_statistics=True).to(device)
    keys = set(p.__dict__)
    shallow = copy.copy(p)
    assert shallow.quant_state is p.quant_state and shallow.data_ptr() == p.data_ptr()
    deep = copy.deepcopy(p)
    assert deep.quant_state is not p.quant_state and deep.data_ptr() != p.data_ptr()
    assert deep.quant_state == p.quant_state and set(deep.__dict__) == set(p.__dict__) == keys
    restored = pickle.loads(pickle.dumps(p))
    assert torch.equal(restored.data, p.data) and not restored.requires_grad
    if IS_BNB:  # (bitsandbytes' pickle gives a plain Parameter with these attributes)
        assert isinstance(restored, Params4bit)
    assert restored.quant_state == p.quant_state and set(restored.__dict__) == keys
    assert (restored.quant_type, restored.blocksize, restored.compress_statistics) == ("nf4", 64, True)

    l8 = linear8bit(64, 24, threshold=6.0)
    clones = (copy.deepcopy(l8), pickle.loads(pickle.dumps(l8)))
    x = randn(3, 64, seed=32)
    for clone in clones:
        assert clone.weight is not l8.weight and clone.weight.data_ptr() != l8.weight.data_ptr()
        assert clone.state == l8.state
        assert torch.equal(clone.weight.CB, l8.weight.CB) and torch.equal(clone.weight.SCB, l8.weight.SCB)
    for clone in clones:
        with torch.no_grad():
            assert torch.equal(clone(x), l8(x))
    assert copy.copy(l8).weight is l8.weight


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_torch_compile_fullgraph(kind, device):
    """The layers trace in one graph (forward in no_grad, and forward + backward)."""
    layer = linear4bit(64, 32, "nf4", True) if kind == "4bit" else linear8bit(64, 32, threshold=6.0)
    x = randn(4, 64, seed=33)
    x[:, 3] = 9.0  # outliers for the 8-bit layer
    torch.set_default_device(None)  # (the default-device mode would be traced too)
    torch.compiler.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert torch.allclose(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled(xa).sum().backward()
    layer(xb).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)


@needs_bnb_layer  # (bitsandbytes 0.50.2's forward stops after quantize_weight and returns None)
def test_outlier_aware_linear_calls_its_hooks():
    """OutlierAwareLinear: the traced outlier dimensions reach quantize_weight (once) and
    forward_with_outliers."""
    from bitsandbytes.nn import OutlierAwareLinear
    from bitsandbytes.utils import OutlierTracer

    calls = []

    class Rounded(OutlierAwareLinear):
        def quantize_weight(self, w, outlier_idx):
            calls.append(("quantize", outlier_idx))
            return torch.round(w * 8) / 8

        def forward_with_outliers(self, x, outlier_idx):
            calls.append(("forward", outlier_idx))
            return torch.nn.functional.linear(x, self.weight, self.bias)

    model = torch.nn.Sequential(torch.nn.Linear(16, 16), Rounded(16, 8))
    x = randn(4, 16, seed=40)
    tracer = OutlierTracer.get_instance()
    tracer.initialize(model)
    with torch.no_grad():
        model(x)
        w = model[1].weight.clone()
        y = model(x)
    assert [c[0] for c in calls] == ["quantize", "forward", "forward"]
    assert calls[0][1] is calls[1][1] and model[1].is_quantized
    assert torch.equal(model[1].weight, torch.round(w * 8) / 8)
    assert torch.allclose(y, torch.nn.functional.linear(model[0](x), model[1].weight, model[1].bias))


@needs_bnb_layer  # (bitsandbytes 0.50.2's CPU float64 4-bit product gives garbage; integers fail deeper down)
def test_float64_and_integer_inputs(device):
    """float64 activations work (as in bitsandbytes); integer ones raise a TypeError naming the dtype."""
    K, N = 64, 16
    l4, l8 = linear4bit(K, N, "fp4", False, compute_dtype=None), linear8bit(K, N)
    x = randn(3, K, seed=41).double()
    with torch.no_grad():
        y4, y8 = l4(x), l8(x)
    assert y4.dtype == y8.dtype == torch.float64
    assert rel_err(y4, x @ dequantized_4bit(l4).t() + l4.bias.double()) < 1e-6
    W = dequantized_int8(l8)
    want = x @ W.t() + l8.bias.double()
    bound = (x.abs().amax(1, keepdim=True) / 254) @ W.abs().sum(1, keepdim=True).t()
    assert ((y8 - want).abs() <= bound + 2e-3 * want.abs() + 1e-5).all()
    for layer in (l4, l8):
        with pytest.raises(TypeError, match="int32"):
            layer(torch.ones(2, K, dtype=torch.int32))


def test_parametrize_replaces_a_parameter_with_4bit(device):
    """bitsandbytes.nn.parametrize: any parameter (here a 3-D stack of expert weights) held as
    4-bit codes, dequantized on access, saved with Linear4bit's keys, and restored from them."""
    from bitsandbytes.nn.parametrize import replace_parameter_4bit, replace_parameter_4bit_prequantized

    class Experts(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(randn(4, 16, 64, seed=42))
            self.same = None

        def forward(self, x):
            first, second = self.weight, self.weight  # cached within a forward: one dequantization
            self.same = first is second
            return torch.einsum("ek,enk->en", x, first) + second.sum()

    m = Experts()
    W = m.weight.detach().clone()
    replace_parameter_4bit(m, "weight", compress_statistics=True, quant_type="nf4")
    packed = m.parametrizations.weight.original
    assert packed.dtype == torch.uint8 and not packed.requires_grad
    qs = m.parametrizations.weight[0].quant_state
    want = F.dequantize_4bit(packed, qs)
    assert m.weight.shape == W.shape and torch.equal(m.weight, want) and rel_err(want, W) < 0.15
    x = randn(4, 64, seed=43)
    y = m(x)
    assert torch.allclose(y, torch.einsum("ek,enk->en", x, want) + want.sum())
    assert m.same is True and m.weight is not m.weight  # (outside a forward: recomputed per access)
    sd = m.state_dict()
    assert list(sd) == ["weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax",
                        "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4"]
    assert torch.equal(sd["weight"], packed)

    fresh = Experts()
    fresh.weight = torch.nn.Parameter(sd["weight"].clone(), requires_grad=False)
    items = {k[len("weight."):]: v for k, v in sd.items() if k.startswith("weight.")}
    replace_parameter_4bit_prequantized(fresh, "weight", items, device)
    assert torch.equal(fresh.weight, m.weight)
    with pytest.raises(AttributeError):
        replace_parameter_4bit(fresh, "nothing")
    m.plain = torch.zeros(3)
    with pytest.raises(TypeError):
        replace_parameter_4bit(m, "plain")


def test_quant_state_dropped_from_the_weight_is_restored(device):
    """FSDP may drop the parameter's quant_state; the layer keeps it and restores it at the next forward."""
    layer = linear4bit(64, 32, "nf4", True)
    x = randn(2, 64, seed=44)
    with torch.no_grad():
        want = layer(x)
        layer.weight.quant_state = None
        assert torch.equal(layer(x), want)
    assert layer.weight.quant_state is not None
    emb = EmbeddingNF4(16, 64).to(device)
    idx = torch.tensor([3, 1])
    want = emb(idx)
    emb.weight.quant_state = None
    assert torch.equal(emb(idx), want) and emb.weight.quant_state is not None


@needs_bnb_layer  # (bitsandbytes 0.50.2 logs this instead of warning)
def test_embedding4bit_warns_when_rows_are_not_whole_blocks():
    with pytest.warns(UserWarning, match="inference"):
        Embedding4bit(8, 65, quant_type="nf4")


def test_bias_and_compute_dtype_follow_the_first_input(device):
    """As bitsandbytes: the bias is converted in place to the product's dtype at the forward, and a
    Linear4bit without compute_dtype takes the first float32/bfloat16 input's dtype."""
    for make in (lambda: Linear8bitLt(32, 64, has_fp16_weights=False), lambda: LinearNF4(32, 64)):
        layer = make().to(device)
        assert layer.bias.dtype == torch.float32
        y = layer(randn(4, 32, seed=45, dtype=torch.float16))
        assert y.dtype == torch.float16 and layer.bias.dtype == torch.float16
    layer = Linear4bit(32, 64, quant_type="nf4").to(device)
    x = randn(2, 32, seed=46, dtype=torch.bfloat16)
    want = x.double() @ dequantized_4bit(layer).t() + layer.bias.double()
    y = layer(x)
    assert layer.compute_dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    assert y.dtype == torch.bfloat16 and rel_err(y, want) < TOL[torch.bfloat16]
    y32 = layer(x.float())  # later inputs are computed in the compute dtype, returned in theirs
    assert y32.dtype == torch.float32 and torch.equal(y32, y.float())


def test_compute_dtype_follows_the_first_input_again_once_unset(device):
    """The eager fast path (bnb's, taken from layer(x) once a forward has run) keeps bitsandbytes'
    rule: setting compute_type_is_set back to False makes the next float32/bfloat16 input set the
    compute dtype again, and a changed compute_dtype is followed."""
    layer = Linear4bit(64, 32, quant_type="nf4").to(device)
    x = randn(1, 64, seed=47, dtype=torch.float16)
    with torch.no_grad():
        y16 = layer(x)
        assert not IS_BNB or layer._fast is not None  # bnb's layer: the fast path from here on
        assert torch.equal(layer(x), y16) and layer.compute_dtype is None and layer.compute_type_is_set
        layer.compute_type_is_set = False
        assert torch.equal(layer(x), y16) and layer.compute_type_is_set and layer.compute_dtype is None
        layer.compute_type_is_set = False
        yb = layer(x.to(torch.bfloat16))
        assert layer.compute_dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
        assert yb.dtype == torch.bfloat16 and torch.equal(layer(x.to(torch.bfloat16)), yb)
        layer.compute_dtype = torch.float32
        y32 = layer(x.float())
        assert y32.dtype == torch.float32 and layer.bias.dtype == torch.float32
        assert torch.equal(layer(x.float()), y32)
