"""What the layer tests of tests/compat share: tolerances, seeded data on the test's device, and
the autouse fixture that runs each test once per device torch sees (import `device` into a test
module to apply it)."""

import pytest
import torch

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def rel_err(got, want):
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def randn(*shape, dtype=torch.float32, seed=0):
    """Seeded random data on the test's device (the default device the fixture sets)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, device="cpu").to(device=torch.get_default_device(), dtype=dtype)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, params=DEVICES)
def device(request):
    """Every test runs on each device: tensors it makes without a device land there."""
    torch.set_default_device(request.param)
    try:
        yield request.param
    finally:
        torch.set_default_device(None)
