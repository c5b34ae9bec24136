"""The `bitsandbytes` distribution bnb installs (bindings/python/compat): the version it declares is the
one it reports, transformers/peft/accelerate see it as available, and a second bitsandbytes
distribution on sys.path is an ImportError naming both, unless BNB_COMPAT_SHADOW=1 (then a warning)."""

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, needs_bnb_layer

pytestmark = needs_bnb_layer


def test_versions_agree():
    import bitsandbytes
    from bitsandbytes._version import API_VERSION

    assert importlib.metadata.version("bitsandbytes") == bitsandbytes.__version__ == API_VERSION + "+bnb"
    assert API_VERSION == "0.50.2"


def test_the_libraries_see_it():
    import accelerate.utils
    import peft.import_utils
    import transformers
    from packaging import version
    from transformers.utils import import_utils

    assert transformers.is_bitsandbytes_available()
    assert version.parse(importlib.metadata.version("bitsandbytes")) >= version.parse(
        import_utils.BITSANDBYTES_MIN_VERSION)
    assert peft.import_utils.is_bnb_available() and peft.import_utils.is_bnb_4bit_available()
    assert accelerate.utils.is_bnb_available(min_version="0.39.0")
    assert accelerate.utils.is_bitsandbytes_multi_backend_available()
    import bitsandbytes

    assert "cpu" in bitsandbytes.supported_torch_devices


def test_distribution_metadata():
    dist = importlib.metadata.distribution("bitsandbytes")
    assert dist.metadata["Name"] == "bitsandbytes"
    assert dist.version.endswith("+bnb")
    with open(os.path.join(REPO, "bindings", "python", "compat", "pyproject.toml")) as f:
        text = f.read()
    assert 'name = "bitsandbytes"' in text and "bitsandbytes._version.__version__" in text


def _fake_dist(tmp_path, version="0.50.2"):
    info = tmp_path / f"bitsandbytes-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bitsandbytes\nVersion: {version}\n")
    return str(tmp_path)


def _import_in_subprocess(extra_path, shadow):
    env = dict(os.environ)
    env.pop("BNB_COMPAT_SHADOW", None)
    if shadow:
        env["BNB_COMPAT_SHADOW"] = "1"
    # this process's path (the layer and bnb as the test run found them), the fake distribution first
    env["PYTHONPATH"] = os.pathsep.join([extra_path] + [p for p in sys.path if p])
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("always")
        import bitsandbytes
        print("VERSION", bitsandbytes.__version__)
    """)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_second_distribution_is_an_error(tmp_path):
    import bitsandbytes

    fake = _fake_dist(tmp_path)
    r = _import_in_subprocess(fake, shadow=False)
    assert r.returncode != 0, r.stdout
    assert "ImportError" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "bitsandbytes 0.50.2" in last and os.path.realpath(fake) in last, last
    assert os.path.dirname(bitsandbytes.__file__) in last, last  # names this layer too
    assert "BNB_COMPAT_SHADOW" in last


def test_second_distribution_with_shadow_warns(tmp_path):
    fake = _fake_dist(tmp_path, version="0.49.0")
    r = _import_in_subprocess(fake, shadow=True)
    assert r.returncode == 0, r.stderr
    assert "VERSION 0.50.2+bnb" in r.stdout
    assert "BNB_COMPAT_SHADOW=1" in r.stderr and "bitsandbytes 0.49.0" in r.stderr, r.stderr


def test_no_second_distribution_imports_quietly():
    r = _import_in_subprocess(os.devnull, shadow=False)
    assert r.returncode == 0, r.stderr
    assert "VERSION 0.50.2+bnb" in r.stdout
    assert "BNB_COMPAT_SHADOW" not in r.stderr
