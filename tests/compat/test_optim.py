"""bitsandbytes.optim served by bnb (bindings/python/compat/bitsandbytes/optim).

What is checked, on random data:
* every class bitsandbytes 0.50.2 exports, under its module path, base classes and signature
  (positional binding, which variants fix optim_bits / is_paged, as observed in bitsandbytes);
* each class updates bit for bit as the bnb.optim optimizer of the same configuration (bnb's
  own tests check those against float64 references); 32-bit Adam agrees with torch.optim.Adam
  run in float64, 32-bit AdamW with a float64 AdamW rule;
* `.args`, an `args=` object, Optimizer1State / Optimizer2State built from an optimizer name;
* state dicts written by real bitsandbytes 0.50.2 (tests/data/optim_fixture, made by
  scripts/make_optim_fixture.py) load and continue next to it, with the same layout after;
* state dicts in bitsandbytes' layout (observed in bitsandbytes 0.50.2 after one step: "step"
  as an int, and state1/state2 [uint8 codes, or float32], qmap1/qmap2 [256 float32],
  absmax1/absmax2 [float32 per 256 elements; AdEMAMix (2, blocks)], unorm_vec, nested under
  "__bnb_optimizer_quant_state__"), round trips and the flat layout;
* GlobalOptimManager: override_config, register_parameters, register_module_override, applied
  at the next step (32-bit state for the overridden parameter, 8-bit for the rest);
* transformers' Trainer: every bitsandbytes `optim` name resolves through
  Trainer.get_optimizer_cls_and_kwargs to a class here that builds with the arguments Trainer
  passes; Trainer trains a tiny Llama with paged_adamw_8bit, adamw_bnb_8bit, paged_lion_8bit and
  rmsprop_bnb_8bit, the loss falls, the embedding keeps 32-bit state (Trainer's override) and
  the steps equal bnb.optim's.
"""

import copy
import inspect
import io
import os

import pytest

torch = pytest.importorskip("torch")
bitsandbytes = pytest.importorskip("bitsandbytes")

import bnb  # noqa: E402
import bitsandbytes.optim as O  # noqa: E402

# These tests are about bnb's layer (they compare it with bnb.optim): not for the real package.
pytestmark = pytest.mark.skipif(not str(bitsandbytes.__version__).endswith("+bnb"),
                                reason="about bnb's layer; the imported bitsandbytes is the real package")

B = bnb.optim
WRAP = "__bnb_optimizer_quant_state__"

FAMILIES = {
    "Adam": ["Adam", "Adam8bit", "Adam32bit", "PagedAdam", "PagedAdam8bit", "PagedAdam32bit"],
    "AdamW": ["AdamW", "AdamW8bit", "AdamW32bit", "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit"],
    "Lion": ["Lion", "Lion8bit", "Lion32bit", "PagedLion", "PagedLion8bit", "PagedLion32bit"],
    "AdEMAMix": ["AdEMAMix", "AdEMAMix8bit", "AdEMAMix32bit", "PagedAdEMAMix", "PagedAdEMAMix8bit",
                 "PagedAdEMAMix32bit"],
    "SGD": ["SGD", "SGD8bit", "SGD32bit"],
    "LARS": ["LARS", "LARS8bit", "LARS32bit"],
    "LAMB": ["LAMB", "LAMB8bit", "LAMB32bit"],
    "RMSprop": ["RMSprop", "RMSprop8bit", "RMSprop32bit"],
    "Adagrad": ["Adagrad", "Adagrad8bit", "Adagrad32bit"],
}
TWO_STATE = {"Adam", "AdamW", "AdEMAMix", "LAMB"}
ALL_CLASSES = [n for names in FAMILIES.values() for n in names]
SETTINGS = {
    "Adam": dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1),
    "AdamW": dict(lr=1e-2),
    "SGD": dict(lr=1e-2, momentum=0.9, weight_decay=1e-2),
    "RMSprop": dict(lr=1e-2, alpha=0.9, eps=1e-6, weight_decay=1e-2),
    "Lion": dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1),
    "Adagrad": dict(lr=1e-2, weight_decay=1e-2),
    "AdEMAMix": dict(lr=1e-2, betas=(0.9, 0.99, 0.999), alpha=4.0, t_alpha=3, t_beta3=4, weight_decay=0.05),
    "LAMB": dict(lr=1e-2, weight_decay=1e-2),
    "LARS": dict(lr=1e-2, momentum=0.9, weight_decay=1e-3),
}


def _has_cuda():
    return torch.cuda.is_available() and any(b["name"] in ("cuda", "hip") and b["available"] for b in bnb.backends())


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _has_cuda(), reason="no GPU with bnb's CUDA "
                                                                                          "backend"))]


def family_of(name):
    return next(f for f, names in FAMILIES.items() if name in names)


def width_of(name):
    return 8 if name.endswith("8bit") else 32


@pytest.fixture(autouse=True)
def fresh_manager():
    """GlobalOptimManager is process-wide: each test starts and ends without overrides."""
    O.GlobalOptimManager.get_instance().initialize()
    yield
    O.GlobalOptimManager.get_instance().initialize()


def make_params(seed=0, shapes=((64, 80), (300,), (7,)), device="cpu"):
    """Random parameters: one above min_8bit_size (8-bit state), one odd-sized, one tiny."""
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]


def random_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g).to(p.device) for p in params]


def run(opt, params, steps, seed=1):
    for i in range(steps):
        for p, gr in zip(params, random_grads(params, seed + i)):
            p.grad = gr.clone()
        opt.step()


def flat_state(state):
    out = dict(state)
    out.update(out.pop(WRAP, {}))
    return out


# ---------------------------------------------------------------- names, modules, signatures
def test_every_bitsandbytes_name_is_here_under_its_module():
    expected = set(ALL_CLASSES) | {"GlobalOptimManager", "Optimizer8bit", "Optimizer1State", "Optimizer2State",
                                   "PytorchLARS"}
    assert expected <= set(O.__all__)
    for name in ALL_CLASSES:
        cls = getattr(O, name)
        module = family_of(name).lower()
        assert cls.__module__ == f"bitsandbytes.optim.{module}", name
        assert "bitsandbytes" in str(cls)  # transformers' Trainer tests exactly this
        assert issubclass(cls, O.Optimizer8bit) and issubclass(cls, B.Optimizer)
        base = O.Optimizer2State if family_of(name) in TWO_STATE else O.Optimizer1State
        assert issubclass(cls, base), name
    import bitsandbytes.optim.optimizer as optimizer_module

    assert optimizer_module.GlobalOptimManager is O.GlobalOptimManager
    assert O.AdEMAMix8bit.__mro__[1] is O.AdEMAMix and O.PagedAdEMAMix32bit.__mro__[1] is O.AdEMAMix32bit


def _construct(name, **extra):
    kwargs = dict(SETTINGS[family_of(name)])
    kwargs.update(extra)
    return getattr(O, name)(make_params(), **kwargs)


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_width_and_paging_follow_the_class(name):
    opt = _construct(name)
    assert opt.args.optim_bits == width_of(name)
    assert opt.is_paged == name.startswith("Paged")
    params = inspect.signature(type(opt).__init__).parameters
    # bitsandbytes: *32bit classes ignore optim_bits, Paged* classes ignore is_paged
    if "optim_bits" in params and name.endswith("32bit"):
        assert _construct(name, optim_bits=8).args.optim_bits == 32
    if "is_paged" in params and name.startswith("Paged"):
        assert _construct(name, is_paged=False).is_paged
    if "optim_bits" in params and name.endswith("8bit"):
        with pytest.raises(ValueError, match="optim_bits"):
            _construct(name, optim_bits=16 if params["optim_bits"].default == 8 else 8)


def test_signatures_bind_positionally_as_bitsandbytes():
    # Lion8bit(params, lr, betas, weight_decay, args, min_8bit_size, is_paged): no optim_bits
    p = make_params()
    opt = O.Lion8bit(p, 1e-3, (0.9, 0.99), 0.0, None, 0, True)
    assert opt.args.min_8bit_size == 0 and opt.is_paged
    # PagedAdamW8bit(params, lr, betas, eps, weight_decay, amsgrad, optim_bits, args, min_8bit_size)
    opt = O.PagedAdamW8bit(p, 1e-3, (0.9, 0.999), 1e-8, 0.0, False, 32, None, 123)
    assert opt.args.min_8bit_size == 123 and opt.is_paged
    assert "is_paged" not in inspect.signature(O.PagedAdamW8bit.__init__).parameters
    assert "optim_bits" not in inspect.signature(O.SGD8bit.__init__).parameters
    assert inspect.signature(O.Adagrad8bit.__init__).parameters["optim_bits"].default == 8
    with pytest.raises(TypeError, match="Lion8bit"):
        O.Lion8bit(p, optim_bits=8)


def test_unsupported_arguments_raise_naming_them():
    p = make_params()
    with pytest.raises(NotImplementedError, match="amsgrad"):
        O.Adam(p, amsgrad=True)
    with pytest.raises(NotImplementedError, match="centered"):
        O.RMSprop(p, centered=True)
    with pytest.raises(NotImplementedError, match="block_wise"):
        O.Adam(p, optim_bits=8, block_wise=False)
    with pytest.raises(NotImplementedError, match="max_unorm"):
        O.Lion(p, args=O.optimizer.MockArgs(dict(optim_bits=32, min_8bit_size=4096, max_unorm=0.5,
                                                 skip_zeros=False)))
    with pytest.raises(ValueError, match="optim_bits"):
        O.Adam(p, optim_bits=16)
    with pytest.raises(RuntimeError, match="get_instance"):
        O.GlobalOptimManager()


# ---------------------------------------------------------------- numerics: bnb's optimizers
def _bnb_twin(name, params, **extra):
    family = family_of(name)
    kwargs = dict(SETTINGS[family])
    kwargs.update(extra)
    return getattr(B, family)(params, optim_bits=width_of(name), is_paged=name.startswith("Paged"), **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL_CLASSES)
def test_updates_equal_bnb_optimizer_bit_for_bit(name, device):
    mine_p, ref_p = make_params(device=device), make_params(device=device)
    mine = getattr(O, name)(mine_p, **SETTINGS[family_of(name)])
    ref = _bnb_twin(name, ref_p)
    run(mine, mine_p, 3)
    run(ref, ref_p, 3)
    # LAMB and LARS sum the update norm with atomics on the GPU: not bitwise reproducible even
    # between two runs of the same optimizer (docs/OPTIMIZERS.md), so compared closely there.
    atomics = device != "cpu" and family_of(name) in ("LAMB", "LARS")

    def same(x, y):
        if atomics and x.dtype != torch.uint8:
            return torch.allclose(x, y, rtol=1e-5, atol=1e-7)
        if atomics:  # codes: equal or adjacent
            return (x.int() - y.int()).abs().max().item() <= 1
        return torch.equal(x, y)

    for a, b in zip(mine_p, ref_p):
        assert same(a, b)
    for a, b in zip(mine_p, ref_p):
        sa, sb = mine.state[a], ref.state[b]
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert same(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


def test_adam32bit_matches_torch_adam_in_float64():
    """Without weight decay, bitsandbytes' Adam is torch's Adam."""
    params = make_params()
    ref = [torch.nn.Parameter(p.detach().double().clone()) for p in params]
    mine = O.Adam32bit(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-6)
    torch_opt = torch.optim.Adam(ref, lr=1e-2, betas=(0.9, 0.99), eps=1e-6)
    start = [p.detach().double().clone() for p in params]
    for step in range(5):
        grads = random_grads(params, 10 + step)
        for p, r, g in zip(params, ref, grads):
            p.grad, r.grad = g.clone(), g.double()
        mine.step()
        torch_opt.step()
    for p, r, s in zip(params, ref, start):
        moved = (r.detach() - s).abs().max().item()
        assert moved > 0.01
        assert (p.detach().double() - r.detach()).abs().max().item() <= 1e-4 * moved + 2e-6


def adamw_float64(params, grads, lr, betas, eps, wd):
    """AdamW in float64: Adam's step, then the decoupled decay p *= 1 - lr*wd (bitsandbytes'
    order). grads: one list per step."""
    b1, b2 = betas
    p64 = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in p64]
    v = [torch.zeros_like(p) for p in p64]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = g.double()
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            update = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
            p64[i] = (p64[i] - lr * update) * (1 - lr * wd)
    return p64


def test_adamw32bit_matches_float64_rule():
    params = make_params()
    start = [p.detach().clone() for p in params]
    mine = O.AdamW32bit(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    grads = [random_grads(params, 1 + i) for i in range(5)]
    run(mine, params, 5)
    p64 = adamw_float64(start, grads, 1e-2, (0.9, 0.99), 1e-6, 0.1)
    for p, r, s in zip(params, p64, start):
        assert (r - s.double()).abs().max().item() > 0.01
        assert (p.detach().double() - r).abs().max().item() <= 2e-6


# ---------------------------------------------------------------- .args and args=
def test_args_namespace_and_args_object():
    opt = O.AdamW8bit(make_params(), min_8bit_size=100)
    a = opt.args
    assert (a.optim_bits, a.min_8bit_size, a.max_unorm, a.skip_zeros) == (8, 100, 0.0, False)
    assert (a.percentile_clipping, a.block_wise) == (100, True)
    assert O.LAMB(make_params()).args.max_unorm == 1.0
    assert O.LARS(make_params(), lr=0.1, momentum=0.9).args.max_unorm == 0.02

    class Namespace:  # an argparse-style object, as bitsandbytes' users pass it
        optim_bits, min_8bit_size, max_unorm, skip_zeros = 8, 50, 0.0, False

    ns = Namespace()
    params = make_params()
    opt = O.Adam(params, lr=1e-2, args=ns)
    assert opt.args is ns
    run(opt, params, 1)
    assert opt.state[params[0]]["state1"].dtype == torch.uint8
    assert opt.state[params[1]]["state1"].dtype == torch.uint8  # 300 >= args.min_8bit_size
    assert opt.state[params[2]]["state1"].dtype == torch.float32


def test_optimizer2state_by_name_equals_the_class():
    class MyAdam(O.Optimizer2State):
        def __init__(self, params, lr=1e-2):
            super().__init__("adam", params, lr, (0.9, 0.99), 1e-6, 0.1, optim_bits=8, min_8bit_size=100)

    a, b = make_params(), make_params()
    mine = MyAdam(a)
    ref = O.Adam(b, lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1, optim_bits=8, min_8bit_size=100)
    run(mine, a, 3)
    run(ref, b, 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert mine.optimizer_name == "adam" and isinstance(mine, O.Optimizer2State)

    c, d = make_params(), make_params()
    lion = O.Optimizer1State("lion", c, lr=1e-3, betas=(0.9, 0.95), eps=0.0, weight_decay=0.1, optim_bits=8)
    twin = O.Lion(d, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, optim_bits=8)
    run(lion, c, 3)
    run(twin, d, 3)
    assert all(torch.equal(x, y) for x, y in zip(c, d))
    with pytest.raises(NotImplementedError, match="optimizer_name"):
        O.Optimizer2State("lion", make_params())
    with pytest.raises(NotImplementedError, match="optimizer_name"):
        O.Optimizer1State("adafactor", make_params())


# ---------------------------------------------------------------- state dicts
@pytest.mark.parametrize("name", ["AdamW8bit", "Lion8bit", "AdEMAMix8bit", "LAMB8bit", "RMSprop32bit",
                                  "PagedAdamW8bit"])
def test_state_dict_has_bitsandbytes_layout(name):
    params = make_params()
    opt = getattr(O, name)(params, **SETTINGS[family_of(name)])
    run(opt, params, 1)
    sd = opt.state_dict()
    big, tiny = sd["state"][0], sd["state"][2]
    assert set(big) == {"step", WRAP} and big["step"] == 1 and isinstance(big["step"], int)
    inner = big[WRAP]
    two = family_of(name) in TWO_STATE
    ademamix = family_of(name) == "AdEMAMix"
    expected = {"state1"} | ({"state2"} if two else set())
    if name.endswith("8bit"):
        expected |= {"qmap1", "absmax1"} | ({"qmap2", "absmax2"} if two else set())
    if family_of(name) == "LAMB":
        expected |= {"unorm_vec"}
    assert set(inner) == expected
    n = params[0].numel()
    blocks = -(-n // 256)
    if name.endswith("8bit"):
        assert inner["state1"].dtype == torch.uint8
        assert inner["state1"].shape == ((2, 64, 80) if ademamix else (64, 80))
        assert inner["absmax1"].dtype == torch.float32
        assert inner["absmax1"].shape == ((2, blocks) if ademamix else (blocks,))
        assert inner["qmap1"].shape == (256,) and inner["qmap1"].dtype == torch.float32
    else:
        assert inner["state1"].dtype == torch.float32
    # a parameter under min_8bit_size keeps 32-bit state, without tables
    assert tiny[WRAP]["state1"].dtype == torch.float32 and "qmap1" not in tiny[WRAP]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["AdamW8bit", "PagedLion8bit", "AdEMAMix8bit", "SGD32bit"])
@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_state_dict_round_trip_continues_bit_for_bit(name, layout, device):
    params = make_params(device=device)
    opt = getattr(O, name)(params, **SETTINGS[family_of(name)])
    run(opt, params, 2)
    buffer = io.BytesIO()  # as Trainer checkpoints it: plain tensors and numbers only
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    sd = torch.load(buffer, weights_only=True, map_location="cpu")
    if layout == "flat":  # as bnb.optim (and older bitsandbytes) write it
        sd["state"] = {k: flat_state(v) for k, v in sd["state"].items()}
    clone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = getattr(O, name)(clone, **SETTINGS[family_of(name)])
    opt2.load_state_dict(sd)
    run(opt, params, 2, seed=7)
    run(opt2, clone, 2, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(params, clone))
    # bnb.optim's own class loads the nested layout too
    clone_b = [torch.nn.Parameter(p.detach().clone()) for p in params]
    twin = _bnb_twin(name, clone_b)
    twin.load_state_dict(opt.state_dict())
    assert flat_state(opt.state_dict()["state"][0]).keys() == twin.state[clone_b[0]].keys()


FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "optim_fixture")
FIXTURE_NAMES = ["AdamW8bit", "PagedAdamW8bit", "AdamW", "Lion8bit", "RMSprop8bit", "AdEMAMix8bit", "SGD8bit"]


def _layout(entry):
    """A parameter's state-dict entry as {key: (dtype, shape)} (nested keys under WRAP/...)."""
    out = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": (v.dtype, tuple(v.shape)) for k, v in value.items()})
        else:
            out[key] = type(value).__name__
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_loads_state_dicts_written_by_real_bitsandbytes(name, device):
    """tests/data/optim_fixture (scripts/make_optim_fixture.py, real bitsandbytes 0.50.2 on the
    CPU): its state dict after 3 steps loads here; step 4 from it lands next to bitsandbytes' step
    4, and the state dict after it has bitsandbytes' layout, key for key, dtype for dtype."""
    record = torch.load(os.path.join(FIXTURE, f"{name}.pt"), weights_only=True)
    params = [torch.nn.Parameter(p.clone().to(device)) for p in record["params3"]]
    opt = getattr(O, name)(params, **record["kwargs"])
    opt.load_state_dict(record["state_dict"])
    assert opt.param_groups[0]["lr"] == record["kwargs"]["lr"]
    for p, g in zip(params, record["grads4"]):
        p.grad = g.to(device)
    opt.step()
    mine, real = opt.state_dict(), record["state_dict4"]
    for index in (0, 1):
        assert _layout(mine["state"][index]) == _layout(real["state"][index])
        assert mine["state"][index]["step"] == real["state"][index]["step"] == 4
    for p, before, after in zip(params, record["params3"], record["params4"]):
        # bitsandbytes' CPU path applies AdamW's decay before the step, bnb (as its CUDA kernels)
        # after it: lr^2 * wd * |update| apart; 8-bit codes one apart move p by a code's width.
        moved = (after - before).abs().max().item()
        assert (p.detach().cpu() - after).abs().max().item() <= 2e-3 * moved + 2e-6
    for key, theirs in real["state"][0][WRAP].items():
        ours = mine["state"][0][WRAP][key].cpu()
        if theirs.dtype == torch.uint8:  # codes equal or adjacent, rarely different
            assert (ours.int() - theirs.int()).abs().max().item() <= 1, key
            assert (ours != theirs).float().mean().item() <= 0.01, key
        else:
            assert (ours - theirs).abs().max().item() <= 2e-5 * theirs.abs().max().item(), key


# ---------------------------------------------------------------- GlobalOptimManager
@pytest.mark.parametrize("device", DEVICES)
def test_override_config_gives_the_parameter_32bit_state(device):
    mng = O.GlobalOptimManager.get_instance()
    assert mng is O.GlobalOptimManager.get_instance()
    params = make_params(shapes=((64, 80), (100, 50), (4096,)), device=device)
    mng.register_parameters(params)
    opt = O.Adam(params, lr=1e-2, optim_bits=8)
    mng.override_config(params[1], "optim_bits", 32)
    mng.override_config([params[2]], key_value_dict={"optim_bits": 32, "lr": 1e-3})
    run(opt, params, 2)
    assert opt.state[params[0]]["state1"].dtype == torch.uint8
    assert opt.state[params[1]]["state1"].dtype == torch.float32
    assert opt.state[params[2]]["state1"].dtype == torch.float32
    assert "qmap1" not in opt.state[params[1]]
    # the overridden parameters move exactly as bnb's 32-bit Adam with those settings
    ref = make_params(shapes=((64, 80), (100, 50), (4096,)), device=device)
    r1 = B.Adam([ref[1]], lr=1e-2, optim_bits=32)
    r2 = B.Adam([ref[2]], lr=1e-3, optim_bits=32)
    grads = [random_grads(ref, 1 + i) for i in range(2)]
    for g in grads:
        ref[1].grad, ref[2].grad = g[1].clone(), g[2].clone()
        r1.step()
        r2.step()
    assert torch.equal(params[1], ref[1]) and torch.equal(params[2], ref[2])
    cfg = opt.get_config(0, 2, opt.param_groups[0])
    assert cfg["optim_bits"] == 32 and cfg["lr"] == 1e-3


def test_register_parameters_keeps_overrides_by_position():
    """bitsandbytes' documented order: register on the CPU copy, override, build the optimizer
    on other parameter objects (e.g. after moving the model): the position carries the override."""
    mng = O.GlobalOptimManager.get_instance()
    before = make_params(shapes=((64, 80), (64, 80)))
    mng.override_config(before[1], "optim_bits", 32)
    mng.register_parameters(before)
    after = [torch.nn.Parameter(p.detach().clone()) for p in before]
    opt = O.AdamW8bit(after, lr=1e-2)
    run(opt, after, 1)
    assert opt.state[after[0]]["state1"].dtype == torch.uint8
    assert opt.state[after[1]]["state1"].dtype == torch.float32


def test_module_override_and_hyperparameter_override_at_next_step():
    mng = O.GlobalOptimManager.get_instance()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(100, 64), torch.nn.Linear(64, 128))
    params = list(model.parameters())
    opt = O.PagedAdamW8bit(params, lr=1e-2)
    mng.register_module_override(model[0], "weight", {"optim_bits": 32})
    run(opt, params, 1)
    assert opt.state[model[0].weight]["state1"].dtype == torch.float32
    assert opt.state[model[1].weight]["state1"].dtype == torch.uint8

    # An lr override set after the first step applies from the next one: compare with a twin
    # whose lr is changed for that parameter only.
    twin_model = copy.deepcopy(model)
    twin = O.PagedAdamW8bit(list(twin_model.parameters()), lr=1e-2)
    twin.load_state_dict(opt.state_dict())
    mng.override_config(model[1].weight, "lr", 0.0)
    before = model[1].weight.detach().clone()
    run(opt, params, 1, seed=5)
    run(twin, list(twin_model.parameters()), 1, seed=5)
    assert torch.equal(model[1].weight, before * (1 - 0.0))  # lr 0: no step, no decay
    assert not torch.equal(twin_model[1].weight, before)
    assert torch.equal(model[0].weight, twin_model[0].weight)


def test_override_with_an_unknown_key_raises_at_the_step():
    params = make_params()
    opt = O.Adam(params, lr=1e-2)
    O.GlobalOptimManager.get_instance().override_config(params[0], "momentum", 0.9)
    with pytest.raises(ValueError, match="momentum"):
        run(opt, params, 1)


def test_pytorch_lars_matches_float64_rule():
    params = make_params(shapes=((30, 20),))
    opt = O.PytorchLARS(params, lr=0.1, momentum=0.9, weight_decay=1e-3, max_unorm=0.02)
    p64 = params[0].detach().double().clone()
    buf = None
    for step in range(4):
        g = random_grads(params, 20 + step)[0]
        params[0].grad = g.clone()
        opt.step()
        d = g.double() + 1e-3 * p64
        buf = d.clone() if buf is None else 0.9 * buf + d
        limit = 0.02 * p64.norm()
        scale = limit / buf.norm() if buf.norm() > limit else 1.0
        p64 = p64 - 0.1 * scale * buf
    assert torch.allclose(params[0].detach().double(), p64, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- transformers' Trainer
BNB_OPTIM_NAMES = ["adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit", "ademamix",
                   "ademamix_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "lion_32bit", "lion_8bit",
                   "paged_lion_32bit", "paged_lion_8bit", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit"]


def _training_args(tmp_path, optim, **kw):
    from transformers import TrainingArguments

    settings = dict(output_dir=str(tmp_path), optim=optim, use_cpu=True, report_to=[], save_strategy="no",
                    seed=0, disable_tqdm=True)
    settings.update(kw)
    return TrainingArguments(**settings)


@pytest.mark.parametrize("optim", BNB_OPTIM_NAMES)
def test_trainer_resolves_every_bitsandbytes_optim_name(optim, tmp_path):
    pytest.importorskip("transformers")
    from transformers import Trainer

    args = _training_args(tmp_path, optim, learning_rate=1e-2)
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    assert "bitsandbytes" in str(cls) and cls is getattr(O, cls.__name__)
    assert kwargs["optim_bits"] == (8 if "8bit" in optim else 32)
    params, twin_params = make_params(), make_params()
    opt = cls(params, **kwargs)
    assert opt.args.optim_bits == kwargs["optim_bits"]
    assert opt.is_paged == ("paged" in optim)
    twin = getattr(B, cls.__name__)(twin_params, **kwargs)  # bnb.optim's class, same arguments
    run(opt, params, 3)
    run(twin, twin_params, 3)
    assert all(torch.equal(a, b) for a, b in zip(params, twin_params))
    if optim == "paged_adamw_32bit":  # and against the float64 rule
        p64 = adamw_float64([p.detach() for p in make_params()], [random_grads(params, 1 + i) for i in range(3)],
                            kwargs["lr"], kwargs["betas"], kwargs["eps"], 1e-2)
        assert all((p.detach().double() - r).abs().max().item() <= 2e-6 for p, r in zip(params, p64))


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


class _Tokens(torch.utils.data.Dataset):
    """16 fixed random sequences; the model learns to predict them."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 256, (16, 24), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optim, lr", [("paged_adamw_8bit", 3e-3), ("adamw_bnb_8bit", 3e-3),
                                       ("paged_lion_8bit", 2e-3), ("rmsprop_bnb_8bit", 1e-3)])
def test_trainer_trains_on_bnb_optimizers(optim, lr, device, tmp_path):
    pytest.importorskip("transformers")
    from transformers import Trainer

    model = _tiny_llama()
    args = _training_args(tmp_path, optim, learning_rate=lr, max_steps=12, per_device_train_batch_size=8,
                          logging_steps=1, lr_scheduler_type="constant", weight_decay=0.01,
                          use_cpu=device == "cpu")
    trainer = Trainer(model=model, args=args, train_dataset=_Tokens())
    trainer.train()
    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)  # accelerate's wrapper
    assert type(opt).__module__.startswith("bitsandbytes.optim.") and isinstance(opt, B.Optimizer)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12 and losses[-1] < 0.9 * losses[0], losses
    # Trainer's override keeps the embedding's state in 32 bits; the large linear layers are 8-bit
    embed = model.model.embed_tokens.weight
    assert embed.numel() >= 4096 and opt.state[embed]["state1"].dtype == torch.float32
    q = model.model.layers[0].self_attn.q_proj.weight
    assert q.numel() >= 4096 and opt.state[q]["state1"].dtype == torch.uint8
    assert opt.state[q]["step"] == 12
    assert q.device.type == device and opt.state[q]["state1"].device == q.device


def test_peft_loraplus_with_an_8bit_optimizer():
    """peft's create_loraplus_optimizer builds bitsandbytes.optim.PagedAdamW8bit with its own param
    groups (B matrices at lr * ratio) and registers the 32-bit embedding override; each group
    steps with its own lr."""
    peft = pytest.importorskip("peft")
    from peft.optimizers import create_loraplus_optimizer

    model = peft.get_peft_model(_tiny_llama(), peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    opt = create_loraplus_optimizer(model, O.PagedAdamW8bit, lr=1e-3, loraplus_lr_ratio=16.0, min_8bit_size=256)
    lrs = sorted({g["lr"] for g in opt.param_groups if g["params"]})
    assert lrs == [1e-3, 1.6e-2]
    triples = O.GlobalOptimManager.get_instance().module_weight_config_triple
    assert any(isinstance(m, torch.nn.Embedding) and cfg == {"optim_bits": 32} for m, _, cfg in triples)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    before = lora_b.detach().clone()
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert not torch.equal(lora_b, before) and losses[-1] < losses[0]
    assert opt.state[lora_b]["state1"].dtype == torch.uint8  # 512 elements >= min_8bit_size
