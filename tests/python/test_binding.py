"""Loading, prototypes, errors and diagnostics of the Python binding (numpy only)."""

import ctypes
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import bnb
from bnb import _lib
from conftest import REPO, needs_cpu

HEADER = os.path.join(REPO, "include", "bnb.h")


def header_functions():
    """{name: parameter count} of every BNB_API function declared in include/bnb.h."""
    text = re.sub(r"/\*.*?\*/", "", open(HEADER).read(), flags=re.S)
    found = {}
    for m in re.finditer(r"BNB_API\s+[\w\s\*]+?\b(bnb_\w+)\s*\(([^)]*)\)", text):
        params = m.group(2).strip()
        found[m.group(1)] = 0 if params in ("", "void") else params.count(",") + 1
    return found


@pytest.mark.skipif(not os.path.isfile(HEADER), reason="include/bnb.h is not beside the tests")
def test_every_header_function_has_a_prototype_with_its_arity():
    declared = header_functions()
    assert len(declared) > 30
    assert set(declared) == set(_lib.PROTOTYPES)
    for name, count in declared.items():
        restype, argtypes = _lib.PROTOTYPES[name]
        assert len(argtypes) == count, name
        fn = getattr(_lib.lib, name)
        assert fn.argtypes == argtypes and fn.restype == restype, name


@pytest.mark.skipif(not os.path.isfile(HEADER), reason="include/bnb.h is not beside the tests")
def test_struct_layouts_match_the_header_sizes():
    # sizes on LP64 computed by hand from bnb.h's field lists
    assert ctypes.sizeof(_lib.BackendInfo) == 4 + 4 + 32 + 4 + 4 + 256
    assert ctypes.sizeof(_lib.ContextOptions) == 20 and _lib.ContextOptions.check_finite.offset == 16
    assert ctypes.sizeof(_lib.Scales) == 8 + 5 * 8 + 8
    assert _lib.OptimizerParams.step.offset == 64 and ctypes.sizeof(_lib.OptimizerParams) == 80
    assert ctypes.sizeof(_lib.OptimizerTensors) == 8 + 9 * 8
    assert ctypes.sizeof(_lib.BackendCapabilities) == 4 + 4 + 8 + 4 * 4 + 8 + 8 * 8


def test_version_matches_the_expected_major():
    number = _lib.lib.bnb_version_number()
    assert number // 10000 == _lib.EXPECTED_MAJOR
    assert bnb.__version__ == f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def run_python(code, **env):
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_library_path_override_accepts_a_directory_and_a_file():
    path = bnb.library_path
    for override in (os.path.dirname(path), path):
        r = run_python("import bnb; print(bnb.library_path)", BNB_LIBRARY_PATH=override)
        assert r.returncode == 0, r.stderr
        assert os.path.realpath(r.stdout.strip()) == os.path.realpath(path)


def test_library_path_override_that_does_not_exist_fails_clearly():
    r = run_python("import bnb", BNB_LIBRARY_PATH="/nonexistent/libbnb")
    assert r.returncode != 0
    assert "BNB_LIBRARY_PATH='/nonexistent/libbnb' is neither a file nor a directory" in r.stderr


def test_python_m_bnb_prints_diagnostics():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-m", "bnb"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"bnb {bnb.__version__}" in r.stdout
    assert bnb.library_path in r.stdout
    for info in bnb.backends():
        assert info["name"] in r.stdout


def test_backends_lists_cpu_with_its_fields():
    infos = bnb.backends()
    names = [b["name"] for b in infos]
    assert "cpu" in names
    for b in infos:
        assert set(b) == {"name", "kind", "available", "device_count", "detail"}
        assert isinstance(b["available"], bool) and b["detail"]


def test_backend_capabilities_of_cpu_and_of_backends_that_did_not_load():
    caps = bnb.backend_capabilities("cpu")
    assert caps["name"] == "cpu" and caps["ops"] == _lib.OP_NAMES
    assert caps["float_dtypes"] == ("float32", "float16", "bfloat16")
    assert caps["quant_types"] == ("fp4", "nf4")
    assert caps["optimizers"] == ("adam", "momentum", "rmsprop", "lion", "adagrad", "ademamix", "lamb", "lars")
    assert caps["optimizer_state_bits"] == (8, 32)
    assert (caps["blocksize_8bit_min"], caps["blocksize_8bit_max"]) == (64, 4096)
    assert (caps["blocksize_4bit_min"], caps["blocksize_4bit_max"]) == (32, 4096)
    assert caps["optimizer_block"] == 256 and caps["optimizer_max_step"] == 2**63 - 1
    assert bnb.backend_capabilities(0) == caps
    for i, info in enumerate(bnb.backends()):
        if not info["available"]:
            with pytest.raises(bnb.BackendError):
                bnb.backend_capabilities(info["name"])
    with pytest.raises(ValueError):
        bnb.backend_capabilities("tpu")
    with pytest.raises(bnb.InvalidArgumentError):
        bnb.backend_capabilities(len(bnb.backends()))


# ---------------------------------------------------------------- errors
def test_status_to_exception_mapping_carries_the_library_message():
    # A real failure first, so bnb_last_error_message() holds a real message.
    with pytest.raises(bnb.Error):
        _lib.context(_lib.BACKEND_HIP if not _hip_available() else 99, 0)
    message = _lib.last_error_message()
    assert message
    for status, cls, builtin in [(1, bnb.InvalidArgumentError, ValueError),
                                 (2, bnb.NotSupportedError, NotImplementedError),
                                 (3, bnb.OutOfMemoryError, MemoryError), (4, bnb.BackendError, RuntimeError),
                                 (5, bnb.BackendError, RuntimeError), (6, bnb.BackendError, RuntimeError)]:
        with pytest.raises(builtin) as info:
            _lib.raise_for(status, "bnb_test")
        assert type(info.value) is cls and info.value.status == status
        assert str(info.value) == f"bnb_test: {message}"


def _hip_available():
    return any(b["name"] == "hip" and b["available"] for b in bnb.backends())


def test_unavailable_backend_is_a_runtime_error_naming_the_backend():
    if _hip_available():
        pytest.skip("hip is available here")
    with pytest.raises(RuntimeError, match="hip") as info:
        _lib.context(_lib.BACKEND_HIP, 0)
    assert info.value.status == _lib.ERR_BACKEND_UNAVAILABLE


@needs_cpu
def test_bad_blocksize_is_a_value_error_with_the_library_message(rng):
    A = rng.standard_normal(1000).astype(np.float32)
    with pytest.raises(ValueError, match="blocksize") as info:
        bnb.quantize_blockwise(A, blocksize=48)
    assert isinstance(info.value, bnb.InvalidArgumentError)
    assert str(info.value) == "bnb_quantize_blockwise: " + _lib.last_error_message()
    with pytest.raises(ValueError, match="blocksize"):
        bnb.quantize_4bit(A, blocksize=100, quant_type="nf4")


@needs_cpu
def test_empty_input_is_rejected_by_the_library():
    with pytest.raises(ValueError, match="bnb_quantize_4bit: "):
        bnb.quantize_4bit(np.zeros(0, np.float32))


def test_python_side_argument_errors(rng):
    A = rng.standard_normal(256).astype(np.float32)
    with pytest.raises(ValueError, match="quant_type 'int4'"):
        bnb.quantize_4bit(A, quant_type="int4")
    with pytest.raises(ValueError, match="float64"):
        bnb.quantize_blockwise(A.astype(np.float64))
    with pytest.raises(ValueError, match="dtype='bfloat16'"):
        bnb.quantize_blockwise(A.view(np.uint16))
    with pytest.raises(TypeError, match="numpy array"):
        bnb.quantize_blockwise([1.0, 2.0])
    with pytest.raises(ValueError, match="code table 'int3'"):
        bnb.get_code_table("int3")
    with pytest.raises(ValueError, match="needs a quant_state"):
        bnb.dequantize_blockwise(np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="absmax and a shape"):
        bnb.dequantize_4bit(np.zeros((2, 1), np.uint8))
