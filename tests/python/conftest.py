"""pytest setup for the Python binding's tests.

The package under test: the installed `bnb` when there is one and BNB_LIBRARY_PATH is unset;
otherwise the source tree's bindings/python (with BNB_LIBRARY_PATH pointing at a build, e.g.
`BNB_LIBRARY_PATH=build/lib python -m pytest tests/python`).
Golden vectors: $BNB_GOLDEN_DIR, default <repo>/../shared/golden.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))  # ref.py
if os.environ.get("BNB_LIBRARY_PATH") or importlib.util.find_spec("bnb") is None:
    sys.path.insert(0, os.path.join(REPO, "bindings", "python"))

import bnb  # noqa: E402

GOLDEN_DIR = os.environ.get("BNB_GOLDEN_DIR") or os.path.join(REPO, "..", "shared", "golden")

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False


def cpu_available():
    return any(b["name"] == "cpu" and b["available"] for b in bnb.backends())


def cuda_available():
    if not HAVE_TORCH:
        return False
    import torch

    return torch.cuda.is_available() and any(b["name"] in ("cuda", "hip") and b["available"] for b in bnb.backends())


needs_cpu = pytest.mark.skipif(not cpu_available(), reason="the CPU backend plugin is not available")
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
needs_cuda = pytest.mark.skipif(not cuda_available(), reason="no CUDA device with bnb's CUDA backend")


def torch_devices():
    """The torch devices to run on: cpu when the CPU backend is there, cuda when a GPU is."""
    devices = []
    if HAVE_TORCH and cpu_available():
        devices.append("cpu")
    if cuda_available():
        devices.append("cuda")
    return devices


class Golden:
    def __init__(self, root):
        self.root = root
        with open(os.path.join(root, "manifest.json")) as f:
            self.manifest = json.load(f)

    def cases(self, op, backend="cuda"):
        return [c for c in self.manifest["cases"] if c["op"] == op and c["backend"] == backend]

    def load(self, entry):
        """(array, dtype name); bfloat16 comes back as its uint16 bit patterns."""
        dtype = entry["dtype"]
        np_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
        a = np.fromfile(os.path.join(self.root, entry["file"]), dtype=np_dtype).reshape(entry["shape"])
        return a, dtype


def golden_or_none():
    if os.path.isfile(os.path.join(GOLDEN_DIR, "manifest.json")):
        return Golden(GOLDEN_DIR)
    return None


@pytest.fixture(scope="session")
def golden():
    g = golden_or_none()
    if g is None:
        pytest.skip(f"no golden vectors at {GOLDEN_DIR} (set BNB_GOLDEN_DIR)")
    return g


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
