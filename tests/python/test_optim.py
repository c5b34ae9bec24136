"""bnb.optim: the torch optimizers over bnb_optimizer_update.

* 32-bit state against a float64 reference written here from docs/OPS.md §6.3/6.4/6.7 (the library is
  not used for the reference), for every optimizer, parameter dtype and device;
* 8-bit state tracking its 32-bit twin on a small least-squares problem;
* state_dict round trips (bit-identical continuation, bitsandbytes key names, paged, dtypes kept);
* min_8bit_size, grads None, non-contiguous parameters, bad input, paged memory on the CPU;
* the element-wise state dict of FSDP1's flattened parameters.
Skipped without torch; 'cuda' runs only where torch sees a GPU and bnb has a GPU backend.
"""

import copy
import io
import math

import pytest

import bnb
from conftest import needs_cpu, needs_cuda, needs_torch

torch = pytest.importorskip("torch")
pytestmark = needs_torch
DEVICES = [pytest.param("cpu", marks=needs_cpu), pytest.param("cuda", marks=needs_cuda)]
O = bnb.optim

ALL = ["Adam", "AdamW", "SGD", "RMSprop", "Lion", "Adagrad", "AdEMAMix", "LAMB", "LARS"]

# Settings for the comparisons: each with weight decay where the optimizer takes it, lr large
# enough that several steps move p well beyond rounding.
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


def make(name, params, bits=32, **extra):
    kwargs = dict(SETTINGS[name])
    kwargs.update(extra)
    return getattr(O, name)(params, optim_bits=bits, **kwargs)


# ---------------------------------------------------------------- the float64 reference (docs/OPS.md §6)
def f32(x):
    """A Python float as the float32 the library receives."""
    return torch.tensor(x, dtype=torch.float32).item()


def rnd(x, dtype):
    """Rounds a float64 tensor to the parameter dtype and back (the "p <- T(...)" of docs/OPS.md)."""
    return x.to(dtype).to(torch.float64)


class Reference:
    """One parameter's update rule in float64, written from docs/OPS.md §6.3 (32-bit rules), 6.4
    (update-norm clipping) and 6.7 (AdEMAMix schedules)."""

    def __init__(self, name, p, dtype, settings):
        self.name, self.dtype = name, dtype
        self.p = p.detach().to(torch.float64).clone()
        self.t = 0
        s = dict(settings)
        self.lr = s.get("lr")
        self.wd = s.get("weight_decay", {"AdamW": 1e-2, "AdEMAMix": 1e-2}.get(name, 0.0))
        self.eps = s.get("eps", {"Adagrad": 1e-10, "SGD": 0.0, "LARS": 0.0, "Lion": 0.0}.get(name, 1e-8))
        self.max_unorm = s.get("max_unorm", {"LAMB": 1.0, "LARS": 0.02}.get(name, 0.0))
        if name in ("SGD", "LARS"):
            self.b1 = s["momentum"]
        elif name == "RMSprop":
            self.b1 = s.get("alpha", 0.99)
        elif name == "AdEMAMix":
            self.b1, self.b2, self.b3 = s.get("betas", (0.9, 0.999, 0.9999))
            self.alpha, self.t_alpha, self.t_beta3 = s.get("alpha", 5.0), s.get("t_alpha"), s.get("t_beta3")
        elif name == "Lion":
            self.b1, self.b2 = s.get("betas", (0.9, 0.99))
        elif name != "Adagrad":
            self.b1, self.b2 = s.get("betas", (0.9, 0.999))
        for key in ("lr", "wd", "eps", "b1", "b2", "b3", "alpha"):
            if hasattr(self, key):
                setattr(self, key, f32(getattr(self, key)))
        zeros = torch.zeros_like(self.p)
        self.s1, self.s2, self.s3 = zeros.clone(), zeros.clone(), zeros.clone()

    def step(self, grad):
        """One update; the hyper-parameters are taken as the float32 values the library receives
        (docs/OPS.md §6.1: fp32 scalars), e.g. 1 - fp32(0.999) is 1.3e-5 away from 0.001."""
        self.t += 1
        t, lr, wd, eps, T = self.t, self.lr, self.wd, self.eps, self.dtype
        g = grad.detach().to(torch.float64)  # g' = T(1 * g) = g
        p = self.p
        if self.name in ("Adam", "AdamW", "LAMB"):
            self.s1 = self.s1 * self.b1 + (1 - self.b1) * g
            self.s2 = self.s2 * self.b2 + (1 - self.b2) * g * g
            c1, c2 = 1 - self.b1 ** t, math.sqrt(1 - self.b2 ** t)
            update = (self.s1 / c1) / (self.s2.sqrt() / c2 + eps)
            scale = 1.0
            if self.max_unorm > 0:
                limit = self.max_unorm * p.norm().item()
                norm = update.norm().item()
                scale = limit / norm if norm > limit else 1.0
            p = rnd(p - scale * lr * update, T)
            if wd > 0:
                p = rnd(p * (1 - lr * wd), T)
        elif self.name == "AdEMAMix":
            alpha, b3 = self.alpha, self.b3
            if self.t_alpha:
                alpha = min(t * alpha / self.t_alpha, alpha)
            if self.t_beta3:
                l1, l3, f = math.log(self.b1), math.log(self.b3), t / self.t_beta3
                b3 = f32(min(math.exp(l1 * l3 / ((1 - f) * l3 + f * l1)), self.b3))
            alpha = f32(alpha)
            self.s1 = self.s1 * self.b1 + (1 - self.b1) * g
            self.s3 = self.s3 * b3 + (1 - b3) * g
            self.s2 = self.s2 * self.b2 + (1 - self.b2) * g * g
            c1, c2 = 1 - self.b1 ** t, math.sqrt(1 - self.b2 ** t)
            p = rnd(p - lr * ((self.s1 / c1 + alpha * self.s3) / (self.s2.sqrt() / c2 + eps)), T)
            if wd > 0:
                p = rnd(p * (1 - lr * wd), T)
        elif self.name == "Lion":
            if wd > 0:
                p = rnd(p * (1 - lr * wd), T)
            p = rnd(p - lr * torch.sign(self.s1 * self.b1 + (1 - self.b1) * g), T)
            self.s1 = self.s1 * self.b2 + (1 - self.b2) * g
        else:  # coupled decay, rounded to the parameter dtype
            if wd > 0:
                g = rnd(g + p * wd, T)
            if self.name in ("SGD", "LARS"):
                self.s1 = g.clone() if t == 1 else self.s1 * self.b1 + g
                scale = 1.0
                if self.max_unorm > 0:
                    limit = self.max_unorm * self.p.norm().item() + eps
                    norm = self.s1.norm().item()
                    scale = limit / norm if norm > limit else 1.0
                p = rnd(p - scale * lr * self.s1, T)
            elif self.name == "RMSprop":
                self.s1 = self.s1 * self.b1 + (1 - self.b1) * g * g
                p = rnd(p - lr * g / (self.s1.sqrt() + eps), T)
            elif self.name == "Adagrad":
                self.s1 = self.s1 + g * g
                p = rnd(p - lr * g / (self.s1.sqrt() + eps), T)
        self.p = p

    def states(self):
        """The reference's states in the library's layout (state1, state2 or None)."""
        if self.name in ("Adam", "AdamW", "LAMB"):
            return self.s1, self.s2
        if self.name == "AdEMAMix":
            return torch.stack([self.s1, self.s3]), self.s2
        return self.s1, None


def _ulp(dtype):
    return {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}[dtype]


# ---------------------------------------------------------------- 32-bit vs the reference
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_32bit_matches_float64_reference(name, dtype, device):
    gen = torch.Generator().manual_seed(7)
    shape = (37, 29)  # 1073 elements: not a multiple of anything
    p0 = torch.randn(shape, generator=gen).to(dtype)
    p = torch.nn.Parameter(p0.clone().to(device))
    opt = make(name, [p])
    ref = Reference(name, p0, dtype, SETTINGS[name])
    steps = 5
    for _ in range(steps):
        g = torch.randn(shape, generator=gen).to(dtype)
        p.grad = g.to(device)
        opt.step()
        ref.step(g)
    got = p.detach().cpu().to(torch.float64)
    want = ref.p
    # The GPU kernels evaluate beta^t, divisions and roots with fast-math instructions, as the
    # reference library does (docs/OPTIMIZERS.md): allow 2e-4 of the update there.
    gpu = device != "cpu"
    lr = SETTINGS[name]["lr"]
    if dtype == torch.float32:
        # The parameter within 1e-5 relative, and the distance travelled within 1e-4 of itself.
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7 + (2e-4 * lr * steps if gpu else 0.0))
        moved, moved_ref = got - p0.double(), want - p0.double()
        err = (moved - moved_ref).abs().max().item()
        assert err <= (3e-4 if gpu else 1e-4) * moved_ref.abs().max().item() + 4 * _ulp(dtype) * p0.abs().max().item()
    else:
        # Both round to the parameter dtype at the same points, so nearly all elements are equal;
        # a rounding decided differently in fp32 and float64 may flip the last place of a few.
        # On the GPU the fast-math differences can flip a rounding in any of the steps, and a flip
        # made above a power of two counts double below it: allow two ulps of the larger of the
        # start and end values there.
        diff = (got - want).abs()
        differing = (diff > 0).sum().item()
        assert differing <= want.numel() // (20 if gpu else 100), f"{differing} of {want.numel()} elements differ"
        ulps = 2 if gpu else 1
        bound = ulps * _ulp(dtype) * torch.maximum(want.abs(), p0.double().abs()) + 1e-7
        worst = (diff - bound).argmax()
        assert (diff <= bound).all(), (f"got {got.view(-1)[worst].item()}, want {want.view(-1)[worst].item()} "
                                       f"(start {p0.view(-1)[worst].item()})")
    # the states (fp32 for every parameter dtype)
    state = opt.state[p]
    assert state["step"] == steps
    s1, s2 = ref.states()
    assert state["state1"].dtype == torch.float32 and state["state1"].device == p.device
    rtol = 1e-5 if dtype == torch.float32 else 2 * _ulp(dtype)
    torch.testing.assert_close(state["state1"].cpu().double(), s1, rtol=rtol, atol=1e-6 * s1.abs().max().item())
    if s2 is not None:
        torch.testing.assert_close(state["state2"].cpu().double(), s2, rtol=rtol, atol=1e-6 * s2.abs().max().item())
    else:
        assert "state2" not in state


@pytest.mark.parametrize("device", DEVICES)
def test_lamb_lars_clip_is_active_and_matches(device):
    """The default max_unorm clips in these settings (so the reference's clipping branch ran)."""
    gen = torch.Generator().manual_seed(3)
    for name, settings in (("LAMB", dict(lr=0.5)), ("LARS", dict(lr=0.5, momentum=0.9))):
        p0 = 0.01 * torch.randn(300, generator=gen)  # small ||p||: the update norm limit binds
        p = torch.nn.Parameter(p0.clone().to(device))
        opt = getattr(O, name)([p], **settings)
        ref = Reference(name, p0, torch.float32, settings)
        g = torch.randn(300, generator=gen)
        p.grad = g.to(device)
        opt.step()
        ref.step(g)
        torch.testing.assert_close(p.detach().cpu().double(), ref.p, rtol=1e-5, atol=1e-7)
        moved = (ref.p - p0.double()).norm().item()
        limit = 0.5 * {"LAMB": 1.0, "LARS": 0.02}[name] * p0.norm().item()  # lr * max_unorm * ||p||
        assert moved <= limit * (1 + 1e-5)
        assert (p.detach().cpu() - p0).norm().item() <= limit * (1 + 1e-5)
        assert opt.state[p]["unorm_vec"].shape == (1,)


# ---------------------------------------------------------------- 8-bit tracks 32-bit
# Learning rates with which every 32-bit run reaches the noise floor within the steps (comparing
# unconverged runs would compare trajectories, not the optimizers).
TRACK_LR = {"Adam": 1e-2, "AdamW": 1e-2, "SGD": 0.1, "RMSprop": 3e-3, "Lion": 3e-3, "Adagrad": 0.05,
            "AdEMAMix": 1e-2, "LAMB": 3e-2, "LARS": 1.0}


def _regression(name, bits, device, steps=300):
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(256, 64, generator=gen)
    W_true = 0.125 * torch.randn(64, 80, generator=gen)
    Y = X @ W_true + 0.3 * torch.randn(256, 80, generator=gen)
    X, Y = X.to(device), Y.to(device)
    W = torch.nn.Parameter((0.01 * torch.randn(64, 80, generator=gen)).to(device))  # 5120 >= 4096: 8-bit
    b = torch.nn.Parameter(torch.zeros(80, device=device))  # below min_8bit_size: 32-bit state
    kwargs = dict(lr=TRACK_LR[name])
    if name in ("SGD", "LARS"):
        kwargs["momentum"] = 0.9
    opt = getattr(O, name)([W, b], optim_bits=bits, **kwargs)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((X @ W + b - Y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert (opt.state[W]["state1"].dtype == torch.uint8) == (bits == 8)
    assert opt.state[b]["state1"].dtype == torch.float32
    return losses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL)
def test_8bit_tracks_32bit(name, device):
    l32 = _regression(name, 32, device)
    l8 = _regression(name, 8, device)
    assert l32[-1] < 0.1 * l32[0], f"32-bit {name} did not converge: {l32[0]} -> {l32[-1]}"
    assert abs(l8[-1] - l32[-1]) <= 0.02 * l32[-1], f"8-bit {l8[-1]} vs 32-bit {l32[-1]}"


# ---------------------------------------------------------------- state dicts
def _train(opt, params, gen, steps, device):
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype).to(device)
        opt.step()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bits", [32, 8])
def test_state_dict_round_trip_continues_identically(name, bits, device):
    def params():
        gen = torch.Generator().manual_seed(5)
        return [torch.nn.Parameter(torch.randn(80, 70, generator=gen).to(device)),      # 8-bit when asked
                torch.nn.Parameter(torch.randn(33, generator=gen).to(device)),          # always 32-bit
                torch.nn.Parameter(torch.randn(64, 80, generator=gen).bfloat16().to(device))]

    a = params()
    opt_a = make(name, a, bits)
    gen = torch.Generator().manual_seed(9)
    _train(opt_a, a, gen, 3, device)
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in a], "opt": opt_a.state_dict()}, buf)
    gen_state = gen.get_state()
    _train(opt_a, a, gen, 3, device)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = params()
    with torch.no_grad():
        for p, v in zip(b, saved["params"]):
            p.copy_(v)
    opt_b = make(name, b, bits)
    opt_b.load_state_dict(saved["opt"])
    st = opt_b.state[b[2]]
    assert st["state1"].dtype == (torch.uint8 if bits == 8 else torch.float32)  # never cast to bf16
    if bits == 8:
        assert st["absmax1"].dtype == torch.float32 and st["qmap1"].dtype == torch.float32
    gen.set_state(gen_state)
    _train(opt_b, b, gen, 3, device)
    # On the GPU, LAMB's and LARS's update norm is summed with atomics (in no fixed order), so
    # even two uninterrupted runs may differ in the last bits there; everything else is exact.
    exact = device == "cpu" or name not in ("LAMB", "LARS")
    for pa, pb in zip(a, b):
        if exact:
            assert torch.equal(pa, pb)
        else:
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    for pa, pb in zip(a, b):
        assert opt_a.state[pa].keys() == opt_b.state[pb].keys()
        for key, value in opt_a.state[pa].items():
            other = opt_b.state[pb][key]
            if not torch.is_tensor(value):
                assert value == other
            elif exact:
                assert torch.equal(value, other)
            else:
                assert value.dtype == other.dtype and value.shape == other.shape


@pytest.mark.parametrize("layout", ["flat", "nested"])
@pytest.mark.parametrize("device", DEVICES)
def test_loads_bitsandbytes_style_state_dict(device, layout):
    """A state dict written the way bitsandbytes writes it (its key names, Python int step,
    8-bit codes with absmax and qmap, only bitsandbytes' group keys) loads and steps; "nested":
    the state tensors under "__bnb_optimizer_quant_state__", as bitsandbytes 0.50.2 writes them."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 96, device=device))
    small = torch.nn.Parameter(torch.randn(10, device=device))
    donor = O.Adam8bit([p, small], lr=1e-3)
    p.grad, small.grad = torch.randn_like(p), torch.randn_like(small)
    donor.step()
    own = donor.state_dict()
    n = p.numel()
    table_s = bnb.get_code_table("dynamic_signed")
    table_u = bnb.get_code_table("dynamic_unsigned")
    bnb_style = {
        "state": {
            0: {"step": own["state"][0]["step"], "state1": own["state"][0]["state1"].cpu(),
                "state2": own["state"][0]["state2"].cpu(), "absmax1": own["state"][0]["absmax1"].cpu(),
                "absmax2": own["state"][0]["absmax2"].cpu(), "qmap1": torch.from_numpy(table_s),
                "qmap2": torch.from_numpy(table_u)},
            1: {"step": torch.tensor(1.0), "state1": own["state"][1]["state1"].cpu(),
                "state2": own["state"][1]["state2"].cpu()},
        },
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [0, 1]}],
    }
    assert bnb_style["state"][0]["absmax1"].numel() == -(-n // 256)
    if layout == "nested":
        for index, entry in list(bnb_style["state"].items()):
            bnb_style["state"][index] = {"step": entry.pop("step"), "__bnb_optimizer_quant_state__": entry}
    p2 = torch.nn.Parameter(p.detach().clone())
    small2 = torch.nn.Parameter(small.detach().clone())
    opt = O.Adam8bit([p2, small2], lr=5.0)
    opt.load_state_dict(bnb_style)
    assert opt.param_groups[0]["lr"] == 1e-3
    assert opt.state[small2]["step"] == 1 and isinstance(opt.state[small2]["step"], int)
    assert opt.state[p2]["qmap1"].device == p2.device
    g, gs = torch.randn_like(p), torch.randn_like(small)
    p.grad, small.grad, p2.grad, small2.grad = g, gs, g.clone(), gs.clone()
    donor.step()
    opt.step()
    assert torch.equal(p, p2) and torch.equal(small, small2)


def test_load_state_dict_rejects_mismatches():
    p = torch.nn.Parameter(torch.randn(100, 50))
    opt = O.Adam([p])
    with pytest.raises(ValueError, match="state1 has 10 elements"):
        opt.load_state_dict({"state": {0: {"step": 1, "state1": torch.zeros(10), "state2": torch.zeros(10)}},
                             "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                                               "weight_decay": 0.0, "params": [0]}]})
    with pytest.raises(ValueError, match="absmax1"):
        opt.load_state_dict({"state": {0: {"step": 1, "state1": torch.zeros(5000, dtype=torch.uint8),
                                           "state2": torch.zeros(5000, dtype=torch.uint8)}},
                             "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                                               "weight_decay": 0.0, "params": [0]}]})
    with pytest.raises(ValueError, match="number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})


# ---------------------------------------------------------------- min_8bit_size, skipping, layouts
@pytest.mark.parametrize("device", DEVICES)
def test_min_8bit_size(device):
    sizes = [4095, 4096, 300]
    params = [torch.nn.Parameter(torch.randn(n, device=device)) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = O.Adam8bit(params)
    opt.step()
    assert [opt.state[p]["state1"].dtype for p in params] == [torch.float32, torch.uint8, torch.float32]
    assert "absmax1" not in opt.state[params[0]] and opt.state[params[1]]["absmax1"].shape == (16,)
    opt = O.Lion(params, optim_bits=8, min_8bit_size=100)
    opt.step()
    assert all(opt.state[p]["state1"].dtype == torch.uint8 for p in params)
    assert "state2" not in opt.state[params[0]]


@pytest.mark.parametrize("device", DEVICES)
def test_ademamix_8bit_state_layout(device):
    p = torch.nn.Parameter(torch.randn(50, 101, device=device))  # 5050 = 19 full blocks + a partial one
    p.grad = torch.randn_like(p)
    opt = O.AdEMAMix8bit([p])
    opt.step()
    st = opt.state[p]
    assert st["state1"].shape == (2, 50, 101) and st["state1"].dtype == torch.uint8
    assert st["absmax1"].shape == (2, 20) and st["absmax2"].shape == (20,)
    assert torch.isfinite(p).all()


@pytest.mark.parametrize("device", DEVICES)
def test_grad_none_is_skipped(device):
    a = torch.nn.Parameter(torch.randn(10, device=device))
    b = torch.nn.Parameter(torch.randn(10, device=device))
    before = b.detach().clone()
    a.grad = torch.randn_like(a)
    opt = O.AdamW([a, b], lr=0.1)
    opt.step()
    assert torch.equal(b, before) and len(opt.state[b]) == 0
    assert opt.state[a]["step"] == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [32, 8])
def test_non_contiguous_parameter_and_grad(device, bits):
    torch.manual_seed(1)
    base = torch.randn(80, 70, device=device)
    grads = [torch.randn(80, 70, device=device) for _ in range(3)]
    contiguous = torch.nn.Parameter(base.t().contiguous())
    strided = torch.nn.Parameter(base.t())  # a transposed leaf: not contiguous
    assert not strided.is_contiguous()
    opt_c = O.Adam([contiguous], lr=1e-2, optim_bits=bits)
    opt_s = O.Adam([strided], lr=1e-2, optim_bits=bits)
    for g in grads:
        contiguous.grad = g.t().contiguous()
        strided.grad = g.t()  # non-contiguous gradient too
        opt_c.step()
        opt_s.step()
    assert not strided.is_contiguous()
    assert torch.equal(strided, contiguous)


@pytest.mark.parametrize("device", DEVICES)
def test_closure_and_param_groups(device):
    w = torch.nn.Parameter(torch.ones(4, device=device))
    v = torch.nn.Parameter(torch.ones(4, device=device))
    opt = O.SGD([{"params": [w]}, {"params": [v], "lr": 0.0}], lr=0.1, momentum=0.5)

    def closure():
        opt.zero_grad()
        loss = (w * 2).sum() + (v * 3).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 20.0
    assert torch.allclose(w, torch.full_like(w, 1 - 0.1 * 2)) and torch.equal(v, torch.ones_like(v))


# ---------------------------------------------------------------- bad input
def test_bad_arguments_raise_clearly():
    p = torch.nn.Parameter(torch.randn(10))
    with pytest.raises(NotImplementedError, match="amsgrad"):
        O.Adam([p], amsgrad=True)
    with pytest.raises(NotImplementedError, match="amsgrad"):
        O.AdamW8bit([p], amsgrad=True)
    with pytest.raises(ValueError, match="optim_bits"):
        O.Adam([p], optim_bits=16)
    with pytest.raises(ValueError, match="optim_bits"):
        O.Lion8bit([p], optim_bits=32)
    with pytest.raises(ValueError, match="is_paged"):
        O.PagedAdam([p], is_paged=False)
    with pytest.raises(NotImplementedError, match="momentum=0"):
        O.SGD([p], lr=0.1)
    with pytest.raises(NotImplementedError, match="centered"):
        O.RMSprop([p], centered=True)
    with pytest.raises(NotImplementedError, match="lr_decay"):
        O.Adagrad([p], lr_decay=0.1)
    with pytest.raises(NotImplementedError, match="block_wise"):
        O.Adam8bit([p], block_wise=False)
    with pytest.raises(ValueError, match="betas"):
        O.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr"):
        O.Adam([p], lr=-1.0)
    with pytest.raises(ValueError, match="percentile_clipping"):
        O.Adam([p], percentile_clipping=0)
    with pytest.raises(NotImplementedError, match="args"):
        O.Adam([p], args=object())
    with pytest.raises(TypeError):
        O.Lion([p], max_unorm=0.5)  # Lion has no update-norm clipping
    with pytest.raises(ValueError, match="max_unorm"):
        O.Adam([p], max_unorm=-1.0)
    with pytest.raises(TypeError, match="skip_zeros"):
        O.SGD([p], lr=0.1, momentum=0.9, skip_zeros="yes")


def test_bad_gradients_raise_clearly():
    p = torch.nn.Parameter(torch.randn(10))
    before = p.detach().clone()
    opt = O.Adam([p])
    p.grad = torch.randn(10).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(p, before) and "state1" not in opt.state[p]
    q = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))
    q.grad = torch.randn(10, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        O.Adam([q]).step()


def test_sparse_grad_from_embedding():
    emb = torch.nn.Embedding(20, 4, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        O.Adam8bit(emb.parameters()).step()


# ---------------------------------------------------------------- percentile clipping
@pytest.mark.parametrize("device", DEVICES)
def test_percentile_clipping_scales_large_gradients(device):
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.zeros(100, device=device))
    q = torch.nn.Parameter(torch.zeros(100, device=device))
    clipped = O.SGD([p], lr=1.0, momentum=0.5, percentile_clipping=5)
    plain = O.SGD([q], lr=1.0, momentum=0.5)
    small = torch.randn(100, device=device)
    for k in range(3):
        g = small * (1.0 if k < 2 else 100.0)  # the third gradient is an outlier
        p.grad, q.grad = g.clone(), g.clone()
        before_p, before_q = p.detach().clone(), q.detach().clone()
        clipped.step()
        plain.step()
    # The outlier step was scaled back to the norm of the earlier gradients.
    step_p = (p - before_p).norm().item()
    step_q = (q - before_q).norm().item()
    assert step_p < 0.05 * step_q
    assert clipped.state[p]["gnorm_vec"].shape == (100,)


# ---------------------------------------------------------------- paged state
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ["PagedAdam", "PagedAdamW8bit", "PagedLion", "PagedAdEMAMix8bit"])
def test_paged_matches_unpaged(cls, device):
    gen = torch.Generator().manual_seed(4)
    big0 = torch.randn(400, 300, generator=gen)  # >= paged_min_numel: paged
    small0 = torch.randn(50, generator=gen)
    paged_params = [torch.nn.Parameter(big0.clone().to(device)), torch.nn.Parameter(small0.clone().to(device))]
    plain_params = [torch.nn.Parameter(big0.clone().to(device)), torch.nn.Parameter(small0.clone().to(device))]
    paged = getattr(O, cls)(paged_params, lr=1e-3)
    plain = getattr(O, cls.replace("Paged", ""))(plain_params, lr=1e-3)
    assert paged.is_paged and not plain.is_paged
    for _ in range(3):
        for a, b in zip(paged_params, plain_params):
            a.grad = torch.randn(a.shape, generator=gen).to(device)
            b.grad = a.grad.clone()
        paged.step()
        plain.step()
    for a, b in zip(paged_params, plain_params):
        assert torch.equal(a, b)
    big_state = paged.state[paged_params[0]]
    assert O.is_paged(big_state["state1"]) and big_state["state1"].device == paged_params[0].device
    assert not O.is_paged(paged.state[paged_params[1]]["state1"])
    # a state dict of the paged optimizer loads into a fresh paged optimizer, into paged memory
    again = getattr(O, cls)(paged_params, lr=1e-3)
    again.load_state_dict(copy.deepcopy(paged.state_dict()))
    assert O.is_paged(again.state[paged_params[0]]["state1"])
    assert torch.equal(again.state[paged_params[0]]["state1"], big_state["state1"])


@needs_cpu
def test_paged_memory_is_freed(monkeypatch):
    from bnb.optim import _optimizers

    freed = []
    real_free = _optimizers._c.bnb_paged_free
    monkeypatch.setattr(_optimizers._c, "bnb_paged_free", lambda ctx, ptr: (freed.append(ptr), real_free(ctx, ptr))[1])
    t = O.paged_zeros(torch.empty(1), (1000, 3), torch.float32)
    assert t.shape == (1000, 3) and t.dtype == torch.float32 and O.is_paged(t)
    assert torch.count_nonzero(t) == 0
    t += 1.5
    view = t[10:20]
    ptr = t.data_ptr()
    del t
    assert freed == [] and view.sum().item() == 1.5 * 30  # a view keeps the memory
    del view
    assert freed == [ptr]


# ---------------------------------------------------------------- many parameters: the batched step
# step() updates parameters that share device, state width, dtype and step with one
# bnb_optimizer_update_multi call; `_multi_tensor = False` forces one bnb_optimizer_update per
# parameter. The library promises equal results, so the two paths must agree bit for bit.
MIXED_SHAPES = [(1,), (3,), (64,), (255,), (256,), (257,), (31, 33), (4096,), (5000,), (80, 70)]


def _mixed_params(device, dtypes, seed=11):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, shape in enumerate(MIXED_SHAPES):
        dtype = dtypes[i % len(dtypes)]
        out.append(torch.nn.Parameter(torch.randn(shape, generator=gen).to(dtype).to(device)))
    return out


def _twin_runs(name, bits, device, dtypes, steps=4, **extra):
    """The same training run through the batched and the per-parameter path (fresh gradient
    tensors each step, one parameter without a gradient at step 2 so that steps diverge, a
    strided gradient); returns both optimizers and parameter lists."""
    runs = []
    for multi in (True, False):
        params = _mixed_params(device, dtypes)
        opt = make(name, params, bits, min_8bit_size=0, **extra)
        opt._multi_tensor = multi
        gen = torch.Generator().manual_seed(3)
        for step in range(steps):
            for i, p in enumerate(params):
                g = torch.randn(p.shape[::-1], generator=gen).to(p.dtype).to(device)
                p.grad = g.t() if p.dim() == 2 else g  # the 2-D ones get a transposed (strided) gradient
            params[1].grad = None if step == 1 else params[1].grad
            opt.step()
        runs.append((opt, params))
    return runs


def _assert_same_run(a, b):
    (opt_a, pa), (opt_b, pb) = a, b
    for x, y in zip(pa, pb):
        assert x.dtype == y.dtype and torch.equal(x, y)
        sa, sb = opt_a.state[x], opt_b.state[y]
        assert sa.keys() == sb.keys()
        for key, value in sa.items():
            if torch.is_tensor(value):
                assert torch.equal(value, sb[key]), key
            else:
                assert value == sb[key], key


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtypes", [(torch.float32,), (torch.bfloat16,), (torch.float32, torch.bfloat16)],
                         ids=["f32", "bf16", "mixed"])
@pytest.mark.parametrize("bits", [32, 8])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "RMSprop", "Lion", "Adagrad", "AdEMAMix"])
def test_batched_step_equals_per_parameter_calls(name, bits, dtypes, device, monkeypatch):
    from bnb.optim import _optimizers

    calls = {"multi": 0, "single": 0}
    real_multi, real_single = _optimizers._c.bnb_optimizer_update_multi, _optimizers._c.bnb_optimizer_update

    def multi(*args):
        calls["multi"] += 1
        return real_multi(*args)

    def single(*args):
        calls["single"] += 1
        return real_single(*args)

    monkeypatch.setattr(_optimizers._c, "bnb_optimizer_update_multi", multi)
    monkeypatch.setattr(_optimizers._c, "bnb_optimizer_update", single)
    batched, alone = _twin_runs(name, bits, device, dtypes)
    _assert_same_run(batched, alone)
    steps, kinds = 4, len(dtypes)
    # the batched run: one call per dtype per step, plus one for params[1] lagging a step behind
    # (steps 3 and 4); the per-parameter run: one call per parameter and step
    assert calls["multi"] == steps * kinds + 2
    assert calls["single"] == steps * len(MIXED_SHAPES) - 1
    eight = torch.uint8 if bits == 8 else torch.float32
    assert all(batched[0].state[p]["state1"].dtype == eight for p in batched[1])


@pytest.mark.parametrize("device", DEVICES)
def test_batched_step_keeps_clipping_and_strided_params_on_single_calls(device, monkeypatch):
    from bnb.optim import _optimizers

    calls = []
    real_multi = _optimizers._c.bnb_optimizer_update_multi
    monkeypatch.setattr(_optimizers._c, "bnb_optimizer_update_multi",
                        lambda *args: (calls.append(args[2]), real_multi(*args))[1])
    for name, extra in (("LAMB", {}), ("LARS", {}), ("Adam", dict(percentile_clipping=50))):
        batched, alone = _twin_runs(name, 32, device, (torch.float32,), **extra)
        _assert_same_run(batched, alone)
    assert calls == []
    # a strided parameter in a group of contiguous ones: the others still share one call
    batched, alone = [], []
    for multi, out in ((True, batched), (False, alone)):
        base = torch.arange(12.0, device=device).reshape(3, 4)
        params = [torch.nn.Parameter(base.t()), torch.nn.Parameter(base.clone()), torch.nn.Parameter(base[0].clone())]
        opt = O.Adam8bit(params, lr=0.1, min_8bit_size=0)
        opt._multi_tensor = multi
        for k in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.5 + k)
            opt.step()
        assert not params[0].is_contiguous()
        out.extend([opt, params])
    _assert_same_run(batched, alone)
    assert calls == [2, 2, 2]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [32, 8])
def test_batched_step_follows_replaced_data_and_state(bits, device):
    """The cached descriptors are rebuilt when p.data, the state dict or one state tensor is
    replaced between steps, and after load_state_dict."""
    runs = []
    for multi in (True, False):
        params = _mixed_params(device, (torch.float32,))
        opt = make("AdamW", params, bits, min_8bit_size=0)
        opt._multi_tensor = multi
        gen = torch.Generator().manual_seed(8)

        def train(steps):
            for _ in range(steps):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen).to(device)
                opt.step()

        train(2)
        params[3].data = params[3].data.clone()  # new storage under the same Parameter
        params[4].data = torch.randn(7, generator=gen).to(device)  # new shape: state no longer fits
        opt.state[params[4]] = {}
        old = opt.state[params[5]]["state1"]
        snapshot = old.clone()
        opt.state[params[5]]["state1"] = old.clone()  # a replaced state tensor
        train(1)
        # the new tensor was updated, the replaced one left alone
        assert torch.equal(old, snapshot) and not torch.equal(opt.state[params[5]]["state1"], snapshot)
        sd = copy.deepcopy(opt.state_dict())
        opt.load_state_dict(sd)
        train(2)
        runs.append((opt, params))
    _assert_same_run(*runs)
    assert runs[0][0].state[runs[0][1][4]]["step"] == 3


def test_batched_step_checks_gradients_every_step():
    params = [torch.nn.Parameter(torch.randn(10)) for _ in range(3)]
    opt = O.AdamW8bit(params, min_8bit_size=0)
    for p in params:
        p.grad = torch.randn(10)
    opt.step()
    before = [p.detach().clone() for p in params]

    def unchanged():
        return all(torch.equal(p, b) for p, b in zip(params, before)) and \
            all(opt.state[p]["step"] == 1 for p in params)

    params[2].grad.data = torch.randn(10, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        opt.step()
    assert unchanged()  # the check runs before the group's call: nothing moved
    params[2].grad = torch.randn(10)
    params[1].grad.data = torch.randn(5)
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    assert unchanged()
    params[1].grad = torch.randn(10).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert unchanged()
    params[1].grad = torch.randn(10)
    opt.step()
    assert all(opt.state[p]["step"] == 2 for p in params)


@needs_cuda
def test_batched_step_checks_gradient_device():
    p = torch.nn.Parameter(torch.randn(10, device="cuda"))
    opt = O.AdamW([p])
    p.grad = torch.randn(10, device="cuda")
    opt.step()
    p.grad.data = torch.randn(10)
    with pytest.raises(ValueError, match="gradient is on"):
        opt.step()


def test_parameter_listed_twice_in_a_group_is_updated_twice():
    results = []
    for multi in (True, False):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 50))
        q = torch.nn.Parameter(torch.linspace(1, 2, 50))
        with pytest.warns(UserWarning):
            opt = O.Adam([p, q, p], lr=0.1)
        opt._multi_tensor = multi
        for _ in range(2):
            p.grad, q.grad = torch.ones(50), torch.full((50,), -1.0)
            opt.step()
        assert opt.state[p]["step"] == 4
        results.append(torch.cat([p.detach(), q.detach()]))
    assert torch.equal(*results)


# ---------------------------------------------------------------- names
def test_class_names():
    for base in ALL:
        for suffix in ("", "8bit", "32bit"):
            assert issubclass(getattr(O, base + suffix), torch.optim.Optimizer)
    for base in ("Adam", "AdamW", "Lion", "AdEMAMix"):
        for suffix in ("", "8bit", "32bit"):
            assert getattr(O, "Paged" + base + suffix)._fixed_paged is True
    assert O.Adam8bit._fixed_bits == 8 and O.Adam32bit._fixed_bits == 32 and O.Adam._fixed_bits is None


# ---------------------------------------------------------------- max_unorm, skip_zeros, per-parameter settings
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_max_unorm_on_adam_and_sgd_matches_reference(name, device):
    """Update-norm clipping, offered by the library for Adam and momentum, reachable as a keyword."""
    torch.manual_seed(0)
    settings = dict(SETTINGS[name], max_unorm=0.002)
    p = torch.nn.Parameter(torch.randn(33, 17, device=device))
    start = p.detach().cpu().double().clone()
    opt = getattr(O, name)([p], **settings)
    ref = Reference(name, p.detach().cpu(), torch.float32, settings)
    grads = []
    for _ in range(4):
        g = torch.randn_like(p)
        p.grad = g
        opt.step()
        grads.append(g.cpu())
        ref.step(grads[-1])
    assert opt.state[p]["unorm_vec"].numel() == 1
    # the GPU's fast-math division, root and power: a few 1e-5 of the update (as in the tests above)
    tol = (1e-4 if device == "cpu" else 3e-4) * (ref.p - start).abs().max().item() + 1e-6
    assert (p.detach().cpu().double() - ref.p).abs().max().item() <= tol
    # the clip was active: without it the parameter moves further
    free = Reference(name, start.float(), torch.float32, SETTINGS[name])
    for g in grads:
        free.step(g)
    assert (free.p - start).norm() > 1.5 * (ref.p - start).norm()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, bits", [("Adam", 32), ("SGD", 32), ("RMSprop", 32), ("Adagrad", 32), ("Lion", 32),
                                        ("SGD", 8), ("Lion", 8), ("RMSprop", 8)])
def test_skip_zeros_keeps_elements_with_zero_gradient(name, bits, device):
    """skip_zeros=True: where g == 0, p (and in 32 bits the state) stay as they are; elsewhere the
    update equals a run without it (the rules are elementwise). Without weight decay: the library
    tests g after the coupled decay is added, as the reference does (OPS.md 6.3)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5000, device=device))
    q = torch.nn.Parameter(p.detach().clone())
    skip = make(name, [p], bits, skip_zeros=True, min_8bit_size=0, weight_decay=0.0)
    plain = make(name, [q], bits, min_8bit_size=0, weight_decay=0.0)
    for step in range(3):
        g = torch.randn_like(p)
        zero = torch.rand(p.shape, device=device) < 0.3
        g[zero] = 0
        before = p.detach().clone()
        state_before = skip.state[p]["state1"].clone() if step else None
        p.grad, q.grad = g, g.clone()
        skip.step()
        plain.step()
        assert torch.equal(p[zero], before[zero])
        if bits == 32:
            assert torch.equal(p[~zero], q[~zero])
            if step:
                assert torch.equal(skip.state[p]["state1"][zero], state_before[zero])
        else:
            moved = ~zero & (p != before)
            assert moved.float().mean() > 0.5
        q.data.copy_(p.detach())  # the next step starts from the same point and state
        for key, value in skip.state[p].items():
            if isinstance(value, torch.Tensor) and not key.startswith("qmap"):
                plain.state[q][key].copy_(value)


class _WithOverrides(O.Adam):
    """An Adam whose subclass gives single parameters their own settings (the hook the
    bitsandbytes compatibility layer's GlobalOptimManager uses)."""

    overrides = {}

    def _param_overrides(self):
        return self.overrides


@pytest.mark.parametrize("device", DEVICES)
def test_param_overrides_give_single_parameters_their_settings(device):
    torch.manual_seed(0)
    shapes = [(64, 80), (100, 50), (70, 70)]
    params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in shapes]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = _WithOverrides(params, lr=1e-2, optim_bits=8)
    opt.overrides = {id(params[1]): {"optim_bits": 32, "lr": 1e-3}, id(params[2]): {"betas": (0.8, 0.9)}}
    refs = [O.Adam([twins[0]], lr=1e-2, optim_bits=8), O.Adam([twins[1]], lr=1e-3, optim_bits=32),
            O.Adam([twins[2]], lr=1e-2, betas=(0.8, 0.9), optim_bits=8)]
    for _ in range(3):
        for p, t in zip(params, twins):
            p.grad = torch.randn_like(p)
            t.grad = p.grad.clone()
        opt.step()
        for r in refs:
            r.step()
    for p, t in zip(params, twins):
        assert torch.equal(p, t)
    assert [opt.state[p]["state1"].dtype for p in params] == [torch.uint8, torch.float32, torch.uint8]
    opt.overrides = {id(params[0]): {"momentum": 0.9}}
    with pytest.raises(ValueError, match="momentum"):
        opt.step()
    opt.overrides = {id(params[0]): {"optim_bits": 16}}
    with pytest.raises(ValueError, match="optim_bits"):
        opt.step()


# ---------------------------------------------------------------- FSDP1's flattened parameters
def _fsdp1_views(n, device, seed=3):
    """Parameters as FSDP1 (use_orig_params) gives them: marked _fsdp_flattened, one of n elements
    and an empty one (a rank that holds none of that parameter; it gets no gradient)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen).to(device)), torch.nn.Parameter(torch.empty(0))]
    for p in params:
        p._fsdp_flattened = True
    return params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["AdamW", "AdEMAMix"])
@pytest.mark.parametrize("bits", [8, 32])
def test_fsdp1_state_dict_is_elementwise_and_resumes_exactly(name, bits, device):
    """state_dict gives every state tensor of an FSDP1 parameter with one value per element, in
    float32 (what FSDP1's optim_state_dict can gather); loading it gives back the same state and
    the same continuation; a cut at another block boundary is refused."""
    n = 5000  # 19 whole blocks and a part of one
    a = _fsdp1_views(n, device)
    opt_a = make(name, a, bits, min_8bit_size=0)
    gen = torch.Generator().manual_seed(9)
    _train(opt_a, a[:1], gen, 3, device)
    sd = opt_a.state_dict()
    assert sd["state"].keys() == {0}  # the empty parameter got no state
    st = sd["state"][0]
    assert st["bnb_elementwise_state"] is True and "qmap1" not in st and "qmap2" not in st
    tensors = {k: v for k, v in st.items() if torch.is_tensor(v)}
    want = {"state1", "state2"} | ({"state1_slow"} if name == "AdEMAMix" else set())
    if bits == 8:
        want |= {k.replace("state", "absmax") for k in want}
    assert tensors.keys() == want
    assert all(v.dtype == torch.float32 and v.shape == (n,) for v in tensors.values())
    if bits == 8:
        codes = st["state1"]
        assert torch.equal(codes, codes.round()) and 0 <= codes.min() and codes.max() <= 255
        assert torch.equal(st["absmax1"][:256], opt_a.state[a[0]]["absmax1"].reshape(-1)[0].expand(256))
    buf = io.BytesIO()
    torch.save({"p": a[0].detach().clone(), "opt": sd}, buf)
    gen_state = gen.get_state()
    _train(opt_a, a[:1], gen, 2, device)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = _fsdp1_views(n, device)
    with torch.no_grad():
        b[0].copy_(saved["p"])
    opt_b = make(name, b, bits, min_8bit_size=0)
    opt_b.load_state_dict(saved["opt"])
    gen.set_state(gen_state)
    _train(opt_b, b[:1], gen, 2, device)
    assert torch.equal(a[0], b[0])
    for key, value in opt_a.state[a[0]].items():
        other = opt_b.state[b[0]][key]
        assert torch.equal(value, other) if torch.is_tensor(value) else value == other, key

    if bits == 8:  # the part of a rank whose slice begins 100 elements later: its blocks are new
        c = _fsdp1_views(n - 100, device)
        cut = {k: (v[100:] if torch.is_tensor(v) else v) for k, v in saved["opt"]["state"][0].items()}
        opt_c = make(name, c, bits, min_8bit_size=0)
        opt_c.load_state_dict(dict(saved["opt"], state={0: cut}))
        tables = {i: torch.from_numpy(bnb.functional.get_code_table(which)) for i, which in
                  ((1, "dynamic_signed"), (2, "dynamic_unsigned"))}
        for key in [k for k in cut if k.startswith("state")]:
            i = int(key[5])
            want = tables[i][cut[key].long()] * cut[key.replace("state", "absmax")]  # the saved values
            row = 1 if key.endswith("_slow") else 0
            st = opt_c.state[c[0]]
            codes = st[f"state{i}"].reshape(-1, n - 100)[row if i == 1 else 0].cpu()
            absmax = st[f"absmax{i}"].reshape(-1, (n - 100 + 255) // 256)[row if i == 1 else 0].cpu()
            got = tables[i][codes.long()] * absmax.repeat_interleave(256)[: n - 100]
            assert not torch.equal(absmax.repeat_interleave(256)[: n - 100], cut[key.replace("state", "absmax")])
            # within half a step of the dynamic map (its widest: ~1/14 of the block's absmax near 1)
            bound = absmax.repeat_interleave(256)[: n - 100] * 0.04 + 1e-12
            assert ((got - want).abs() <= bound).all(), (key, ((got - want).abs() / bound).max().item())
        _train(opt_c, c[:1], gen, 2, device)  # and it steps


def test_fsdp1_state_dict_refuses_percentile_clipping():
    p = _fsdp1_views(300, "cpu")[0]
    p.grad = torch.randn_like(p)
    opt = O.Adam8bit([p], min_8bit_size=0, percentile_clipping=90)
    opt.step()
    with pytest.raises(NotImplementedError, match="FSDP1"):
        opt.state_dict()
