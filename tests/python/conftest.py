"""pytest setup for the Python binding's tests.

The package under test: the installed `bnb` when there is one and BNB_LIBRARY_PATH is unset;
otherwise the source tree's bindings/python (with BNB_LIBRARY_PATH pointing at a build, e.g.
`BNB_LIBRARY_PATH=build/lib python -m pytest tests/python`).
Golden vectors: $BNB_GOLDEN_DIR, default <repo>/tests/data/golden (a missing or damaged set is an
error, never a skip).
"""

import gzip
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

GOLDEN_DIR = os.environ.get("BNB_GOLDEN_DIR") or os.path.join(REPO, "tests", "data", "golden")

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
    """The golden set (tests/data/golden/README.md): a manifest (manifest.json, or nonfinite.json),
    each array gzip-compressed."""

    def __init__(self, root, manifest="manifest.json"):
        self.root = root
        self.path = os.path.join(root, manifest)
        with open(self.path) as f:
            self.manifest = json.load(f)

    def cases(self, op, backend="cuda"):
        found = [c for c in self.manifest["cases"] if c["op"] == op and c["backend"] == backend]
        if not found:
            raise LookupError(f"{self.path} has no {backend} {op} case")
        return found

    def load(self, entry):
        """(array, dtype name); bfloat16 comes back as its uint16 bit patterns. gzip checks the
        file's CRC-32 and length; the size must match the manifest's shape and dtype."""
        dtype = entry["dtype"]
        np_dtype = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)
        path = os.path.join(self.root, entry["file"] + ".gz")
        with gzip.open(path, "rb") as f:
            raw = f.read()
        want = int(np.prod(entry["shape"], dtype=np.int64)) * np_dtype.itemsize
        if len(raw) != want:
            raise ValueError(f"{path}: {len(raw)} bytes, its shape and dtype need {want}")
        return np.frombuffer(raw, dtype=np_dtype).reshape(entry["shape"]).copy(), dtype


def load_golden(manifest="manifest.json"):
    """The golden set of one manifest; a missing one raises (golden tests fail, they do not skip)."""
    path = os.path.join(GOLDEN_DIR, manifest)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no golden vectors: {path} is missing (BNB_GOLDEN_DIR={GOLDEN_DIR})")
    return Golden(GOLDEN_DIR, manifest)


@pytest.fixture(scope="session")
def golden():
    return load_golden()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
