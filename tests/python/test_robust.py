"""Bad input and misuse through the Python binding (issue 17): every reported repro gives a
ValueError or TypeError that names the argument or key, never a crash, a read past an array's end,
or a raw KeyError / JSONDecodeError / ctypes.ArgumentError.

Repros that crashed the interpreter run in a subprocess, so a regression fails its test instead of
killing pytest; the environment cases do too, since a context reads BNB_BACKEND once."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bnb
from conftest import HAVE_TORCH, cuda_available, needs_cpu, needs_cuda, needs_torch

pytestmark = needs_cpu


def run_isolated(code, **env):
    """Runs `code` in a fresh interpreter with this one's bnb; returns (returncode, stdout, stderr)."""
    full_env = dict(os.environ)
    full_env.pop("BNB_BACKEND", None)
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr


def expect_error_in_subprocess(code, **env):
    """`code` must end by printing `type: message` of the exception it caught; a crash (a negative
    return code) or an uncaught exception fails."""
    rc, out, err = run_isolated(code, **env)
    assert rc == 0, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    return out.strip()


CATCH = """
def report(fn):
    try:
        fn()
    except Exception as e:
        print(f"{type(e).__name__}: {e}")
    else:
        print("no error")
"""


# ---------------------------------------------------------------- 1. the segfault: shape larger than the data
def test_from_dict_with_a_shape_larger_than_its_arrays_is_an_error_not_a_crash():
    out = expect_error_in_subprocess(CATCH + """
import numpy as np, bnb
A = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
packed, state = bnb.quantize_4bit(A, quant_type="nf4")
d = state.as_dict(packed=True)
blob = json.loads(bytes(d["quant_state.bitsandbytes__nf4"]))
blob["shape"] = [8192, 8192]
d["quant_state.bitsandbytes__nf4"] = np.frombuffer(json.dumps(blob).encode(), np.uint8).copy()
report(lambda: bnb.dequantize_4bit(packed, bnb.QuantState.from_dict(d)))
""".replace("import numpy as np, bnb", "import json, numpy as np, bnb"))
    assert out.startswith("ValueError:") and "'absmax'" in out and "1048576" in out, out


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("library", ["numpy", "torch", "cuda"])
def test_dequantize_4bit_with_a_shape_larger_than_its_data_is_an_error_not_a_crash(library, nested):
    if library == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    if library == "cuda" and not cuda_available():
        pytest.skip("no CUDA device with bnb's CUDA backend")
    out = expect_error_in_subprocess(CATCH + f"""
import numpy as np, bnb
A = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
if {library!r} != "numpy":
    import torch
    A = torch.from_numpy(A).to("cuda" if {library!r} == "cuda" else "cpu")
packed, state = bnb.quantize_4bit(A, quant_type="nf4", compress_statistics={nested})
state.shape = (8192, 8192)  # what a damaged state carries, bypassing from_dict's checks
report(lambda: bnb.dequantize_4bit(packed, state))
""")
    assert out.startswith("ValueError:") and "A (the packed 4-bit codes) holds 2048" in out, out
    assert "33554432" in out, out


# ---------------------------------------------------------------- 2. arrays too short for what the sizes imply
def as_library(a, library):
    """numpy array `a` as the library's array: numpy, a torch CPU tensor, or a CUDA tensor."""
    if library in ("torch", "cuda"):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.cuda() if library == "cuda" else t
    return a


LIBRARIES = ["numpy"] + (["torch"] if HAVE_TORCH else []) + (["cuda"] if cuda_available() else [])


@pytest.fixture(params=LIBRARIES)
def library(request):
    return request.param


def data(rng, shape, library):
    return as_library(rng.standard_normal(shape).astype(np.float32), library)


def test_short_packed_codes(rng, library):
    packed, state = bnb.quantize_4bit(data(rng, (32, 64), library), quant_type="fp4")
    with pytest.raises(ValueError, match=r"A \(the packed 4-bit codes\) holds 1000 elements.* needs at least 1024"):
        bnb.dequantize_4bit(packed[:1000], state)


def test_short_absmax_4bit(rng, library):
    packed, state = bnb.quantize_4bit(data(rng, (32, 64), library), blocksize=64, quant_type="nf4")
    with pytest.raises(ValueError, match=r"absmax holds 31 elements, but shape \(32, 64\) in blocks of 64 needs 32"):
        bnb.dequantize_4bit(packed, absmax=state.absmax[:31], shape=(32, 64), quant_type="nf4")
    # a blocksize other than the one quantized with: the count no longer matches either
    with pytest.raises(ValueError, match="absmax holds 32 elements, but .* in blocks of 128 needs 16"):
        bnb.dequantize_4bit(packed, absmax=state.absmax, shape=(32, 64), blocksize=128, quant_type="nf4")


def test_short_nested_statistics(rng, library):
    packed, state = bnb.quantize_4bit(data(rng, (64, 512), library), blocksize=64, compress_statistics=True,
                                      quant_type="nf4")
    full = state.state2.absmax
    state.state2.absmax = full[:1]
    with pytest.raises(ValueError, match="state2.absmax holds 1 elements, but 512 absmax codes in blocks of 256 needs 2"):
        bnb.dequantize_4bit(packed, state)
    state.state2.absmax = full
    state.state2.code = state.state2.code[:16]
    with pytest.raises(ValueError, match="state2.code holds 16 elements, but an 8-bit code table needs 256"):
        bnb.dequantize_4bit(packed, state)


def test_short_arrays_of_the_8bit_blockwise_ops(rng, library):
    A = data(rng, (4096,), library)
    q, state = bnb.quantize_blockwise(A, blocksize=256)
    with pytest.raises(ValueError, match="absmax holds 15 elements, but 4096 codes in blocks of 256 needs 16"):
        bnb.dequantize_blockwise(q, absmax=state.absmax[:15], code=state.code, blocksize=256)
    with pytest.raises(ValueError, match="code holds 255 elements, but an 8-bit code table needs 256"):
        bnb.dequantize_blockwise(q, absmax=state.absmax, code=state.code[:255], blocksize=256)
    with pytest.raises(ValueError, match="code holds 16 elements, but an 8-bit code table needs 256"):
        bnb.quantize_blockwise(A, code=state.code[:16], blocksize=256)


def test_short_arrays_of_the_4bit_product(rng, library):
    W = data(rng, (48, 128), library)
    packed, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4")
    x = data(rng, (3, 128), library)
    state.absmax = state.absmax[:50]
    with pytest.raises(ValueError, match=r"absmax holds 50 elements, but a \[48, 128\] weight in blocks of 64 needs 96"):
        bnb.matmul_4bit(x, packed, state)
    _, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4")
    with pytest.raises(ValueError, match="bias holds 47 elements"):
        bnb.matmul_4bit(x, packed, state, bias=data(rng, (47,), library))


def test_short_statistics_of_the_int8_product(rng, library):
    C = as_library(rng.integers(-1000, 1000, (8, 16)).astype(np.int32), library)
    row, col = data(rng, (8,), library), data(rng, (16,), library)
    with pytest.raises(ValueError, match="row_stats holds 7 elements"):
        bnb.int8_mm_dequant(C, row[:7], col)
    with pytest.raises(ValueError, match="col_stats holds 15 elements"):
        bnb.int8_mm_dequant(C, row, col[:15])
    with pytest.raises(ValueError, match="bias holds 3 elements"):
        bnb.int8_mm_dequant(C, row, col, bias=as_library(np.zeros(3, np.float16), library))


# ---------------------------------------------------------------- 3. raw exceptions -> named errors
def test_string_blocksize_is_named_up_front(rng, library):
    A = data(rng, (256,), library)
    with pytest.raises(TypeError, match="blocksize must be an integer, not str '64'"):
        bnb.quantize_4bit(A, blocksize="64")
    with pytest.raises(TypeError, match="blocksize must be an integer, not str"):
        bnb.quantize_blockwise(A, blocksize="256")
    with pytest.raises(ValueError, match="blocksize must be positive, not -64"):
        bnb.quantize_4bit(A, blocksize=-64)
    packed, state = bnb.quantize_4bit(A)
    with pytest.raises(TypeError, match="blocksize must be an integer, not float"):
        bnb.dequantize_4bit(packed, absmax=state.absmax, shape=(256,), blocksize=64.0)


def test_blocksize_beyond_int64_is_refused_not_wrapped(rng):
    """ctypes wraps integers into int64_t silently: 2**64 + 64 would reach the library as 64 after
    the size checks had counted one block of 2**64 + 64 values."""
    packed, state = bnb.quantize_4bit(rng.standard_normal(4096).astype(np.float32))
    with pytest.raises(ValueError, match="blocksize 18446744073709551680 does not fit a 64-bit integer"):
        bnb.dequantize_4bit(packed, absmax=state.absmax[:1], shape=(4096,), blocksize=2**64 + 64)


@pytest.mark.parametrize("call", ["quantize_4bit", "quantize_blockwise", "dequantize_4bit", "int8_vectorwise_quant",
                                  "compress_absmax", "matmul"])
def test_plain_list_is_a_type_error_naming_the_argument(call):
    args = {"quantize_4bit": ([1.0, 2.0],), "quantize_blockwise": ([1.0, 2.0],),
            "dequantize_4bit": ([1, 2], None, np.ones(1, np.float32), 64, "fp4", (4,)),
            "int8_vectorwise_quant": ([[1.0, 2.0]],), "compress_absmax": ([1.0],),
            "matmul": ([[1.0]], np.ones((1, 1), np.float32))}[call]
    name = "absmax" if call == "compress_absmax" else "A"
    with pytest.raises(TypeError, match=f"{name} must be a numpy array or a torch tensor, not list"):
        getattr(bnb, call)(*args)


def packed_dict(rng, nested=False, quant_type="nf4", shape=(16, 64)):
    A = rng.standard_normal(shape).astype(np.float32)
    packed, state = bnb.quantize_4bit(A, quant_type=quant_type, compress_statistics=nested)
    return packed, state.as_dict(packed=True)


def blob_of(d):
    key = next(k for k in d if k.startswith("quant_state."))
    return key, json.loads(bytes(d[key]))


def with_blob(d, blob):
    key, _ = blob_of(d)
    d = dict(d)
    d[key] = np.frombuffer(json.dumps(blob).encode("utf-8"), np.uint8).copy()
    return d


def test_from_dict_missing_array_names_it(rng):
    _, d = packed_dict(rng)
    del d["absmax"]
    with pytest.raises(ValueError, match="quant_state item 'absmax' is missing"):
        bnb.QuantState.from_dict(d)


def test_from_dict_unknown_quant_type_names_the_key(rng):
    A = rng.standard_normal(256).astype(np.float32)
    d = bnb.quantize_4bit(A)[1].as_dict()
    with pytest.raises(ValueError, match=r"quant_state item 'quant_type' is 'int4', not one of \['fp4', 'nf4', None\]"):
        bnb.QuantState.from_dict(dict(d, quant_type="int4"))


def test_from_dict_bad_packed_bytes_name_the_key(rng):
    _, d = packed_dict(rng)
    key = "quant_state.bitsandbytes__nf4"
    for raw, problem in ((b'{"quant_type": "nf4", "blocks', "is not valid JSON"),
                         (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
                         (b"[1, 2]", "must hold a JSON object, not list")):
        bad = dict(d, **{key: np.frombuffer(raw, np.uint8).copy()})
        with pytest.raises(ValueError, match=f"quant_state item '{key}' {problem}"):
            bnb.QuantState.from_dict(bad)
    with pytest.raises(ValueError, match=f"'{key}' must hold uint8 bytes of JSON, not float32"):
        bnb.QuantState.from_dict(dict(d, **{key: np.zeros(4, np.float32)}))
    with pytest.raises(ValueError, match=f"'{key}' must be a uint8 array of JSON bytes, not bytes"):
        bnb.QuantState.from_dict(dict(d, **{key: b"{}"}))
    _, blob = blob_of(d)
    with pytest.raises(ValueError, match="holds quant_type 'fp4', its key says 'nf4'"):
        bnb.QuantState.from_dict(with_blob(d, dict(blob, quant_type="fp4")))


@pytest.mark.parametrize("item, value, problem", [
    ("dtype", "float64", r"is 'float64', not one of \['float32', 'float16', 'bfloat16'\]"),
    ("blocksize", "64", "is invalid: blocksize must be an integer, not str '64'"),
    ("blocksize", 0, "is invalid: blocksize must be positive, not 0"),
    ("blocksize", 2**64, "is invalid: blocksize 18446744073709551616 does not fit a 64-bit integer"),
    ("shape", [16, -64], "must be a list of non-negative integers"),
    ("shape", "16x64", "must be a list of non-negative integers"),
    ("shape", None, "is missing: a 4-bit state needs the shape"),
])
def test_from_dict_bad_json_items_name_the_key(rng, item, value, problem):
    _, d = packed_dict(rng)
    _, blob = blob_of(d)
    with pytest.raises(ValueError, match=f"quant_state item '{item}' \\(in the JSON of "
                                         f"'quant_state.bitsandbytes__nf4'\\) {problem}"):
        bnb.QuantState.from_dict(with_blob(d, dict(blob, **{item: value})))


@pytest.mark.parametrize("item, value, problem", [
    ("absmax", np.ones(16, np.float16), "has dtype float16, not float32"),
    ("absmax", np.ones(15, np.float32), r"holds 15 elements, but shape \(16, 64\) in blocks of 64 needs 16"),
    ("absmax", [1.0] * 16, "must be a numpy array or a torch tensor, not list"),
    ("quant_map", np.ones(16, np.float64), "has dtype float64, not float32"),
    ("quant_map", np.ones(256, np.float32), "holds 256 elements, but a 4-bit code table needs 16"),
])
def test_from_dict_bad_arrays_name_the_key(rng, item, value, problem):
    _, d = packed_dict(rng)
    d = {"layer.weight." + k: v for k, v in d.items()}
    d["layer.weight." + item] = value
    with pytest.raises(ValueError, match=f"quant_state item 'layer.weight.{item}' {problem}"):
        bnb.QuantState.from_dict(d)


def test_from_dict_checks_the_nested_items(rng):
    _, d = packed_dict(rng, nested=True, shape=(64, 512))
    _, blob = blob_of(d)
    with pytest.raises(ValueError, match=r"'nested_absmax' holds 1 elements, but 512 absmax codes in blocks of 256 needs 2"):
        bnb.QuantState.from_dict(dict(d, nested_absmax=d["nested_absmax"][:1]))
    with pytest.raises(ValueError, match="'nested_quant_map' holds 16 elements, but an 8-bit code table needs 256"):
        bnb.QuantState.from_dict(dict(d, nested_quant_map=d["nested_quant_map"][:16]))
    with pytest.raises(ValueError, match="'absmax' has dtype float32, not uint8"):
        bnb.QuantState.from_dict(dict(d, absmax=d["absmax"].astype(np.float32)))
    no_offset = dict(blob)
    del no_offset["nested_offset"]
    with pytest.raises(ValueError, match=r"comes without \['nested_offset'\]"):
        bnb.QuantState.from_dict(with_blob(d, no_offset))
    with pytest.raises(ValueError, match="'nested_offset' .* must be a number, not str"):
        bnb.QuantState.from_dict(with_blob(d, dict(blob, nested_offset="0.5")))
    with pytest.raises(ValueError, match=r"'nested_dtype' .* is 'float16', not one of \['float32'\]"):
        bnb.QuantState.from_dict(with_blob(d, dict(blob, nested_dtype="float16")))


def test_from_dict_of_something_else_is_a_type_error():
    with pytest.raises(TypeError, match="qs_dict must be a dict of quant_state items, not list"):
        bnb.QuantState.from_dict([("absmax", np.ones(1))])


def test_shape_with_a_string_or_negative_dimension_names_shape(rng, library):
    packed, state = bnb.quantize_4bit(data(rng, (128,), library))
    with pytest.raises(TypeError, match="shape must be an integer, not str"):
        bnb.dequantize_4bit(packed, absmax=state.absmax, shape=("128",))
    with pytest.raises(ValueError, match=r"shape \(-2, -64\) has a negative dimension"):
        bnb.dequantize_4bit(packed, absmax=state.absmax, shape=(-2, -64))


# ---------------------------------------------------------------- 4. BNB_BACKEND for host arrays
QUANTIZE_NUMPY = CATCH + """
import numpy as np, bnb
report(lambda: bnb.quantize_4bit(np.ones(64, np.float32)))
"""


@pytest.mark.parametrize("value", ["cuda", "hip"])
def test_backend_that_cannot_run_host_arrays_is_an_error(value):
    out = expect_error_in_subprocess(QUANTIZE_NUMPY, BNB_BACKEND=value)
    assert out.startswith("BackendError:") and f"BNB_BACKEND={value} selects the {value} backend" in out, out
    assert "auto, cpu, cuda, hip" in out, out


@pytest.mark.parametrize("value", ["bogus", "CPU"])
def test_invalid_backend_value_is_an_error_listing_the_values(value):
    out = expect_error_in_subprocess(QUANTIZE_NUMPY, BNB_BACKEND=value)
    assert out.startswith("InvalidArgumentError:") and f"BNB_BACKEND={value}" in out, out
    assert all(v in out for v in ("auto", "cpu", "cuda", "hip")), out


@pytest.mark.parametrize("value", ["cpu", "auto", ""])
def test_backend_that_runs_host_arrays_works(value):
    assert expect_error_in_subprocess(QUANTIZE_NUMPY, BNB_BACKEND=value) == "no error"


@needs_torch
def test_backend_that_cannot_run_cpu_tensors_is_an_error():
    out = expect_error_in_subprocess(CATCH + """
import torch, bnb
report(lambda: bnb.quantize_4bit(torch.ones(64)))
""", BNB_BACKEND="cuda")
    assert out.startswith("BackendError:") and "BNB_BACKEND=cuda" in out and "CPU tensors" in out, out


@pytest.mark.parametrize("variable, value", [("BNB_NUM_THREADS", "abc"), ("BNB_NUM_THREADS", "0"),
                                             ("BNB_LOG_LEVEL", "loud"), ("BNB_CPU_MAX_TARGET", "bogus"),
                                             ("BNB_CHECK_FINITE", "yes"), ("BNB_CHECK_FINITE", "2")])
def test_invalid_library_variable_reaches_python_with_its_name(variable, value):
    """The library checks these when a context is created (where it does: an older libbnb ignores
    them, and the test skips); the binding passes its error on, naming the variable."""
    out = expect_error_in_subprocess(CATCH + """
import ctypes, numpy as np, bnb
from bnb import _lib
options = _lib.ContextOptions()
_lib.lib.bnb_context_options_init(ctypes.byref(options))
options.backend = _lib.BACKEND_CPU
handle = ctypes.c_void_p()
if _lib.lib.bnb_context_create(ctypes.byref(options), ctypes.byref(handle)) == 0:
    print("library accepts it")
else:
    report(lambda: bnb.quantize_4bit(np.ones(64, np.float32)))
""", **{variable: value})
    if out == "library accepts it":
        pytest.skip(f"this libbnb does not check {variable}")
    assert out.startswith("InvalidArgumentError:") and f"{variable}={value}" in out, out


# ---------------------------------------------------------------- the finite check (BNB_CHECK_FINITE)
FINITE_CASES = """
import numpy as np, bnb
rng = np.random.default_rng({seed})
x = rng.standard_normal({n}).astype(np.float32)
x[{positions}] = np.float32({value})
x = x.astype({dtype!r}) if {dtype!r} != "float32" else x
report(lambda: bnb.quantize_4bit(x, blocksize=64, quant_type="nf4"))
report(lambda: bnb.quantize_blockwise(x, blocksize=256))
"""


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_check_finite_names_the_argument_and_the_first_index(value, dtype):
    rng = np.random.default_rng(["nan", "inf", "-inf"].index(value) * 2 + (dtype == "float16"))
    n = int(rng.integers(1000, 200000))
    positions = sorted(int(p) for p in rng.choice(n, size=int(rng.integers(1, 5)), replace=False))
    code = CATCH + FINITE_CASES.format(seed=1, n=n, positions=positions, value=f"float({value!r})", dtype=dtype)
    out = expect_error_in_subprocess(code, BNB_CHECK_FINITE="1").splitlines()
    assert len(out) == 2, out
    for line in out:
        assert line.startswith("InvalidArgumentError:") and f"A[{positions[0]}] is not finite" in line, line
    assert expect_error_in_subprocess(code, BNB_CHECK_FINITE="0").splitlines() == ["no error"] * 2


@needs_torch
def test_check_finite_in_a_gradient_stops_the_optimizer_step():
    out = expect_error_in_subprocess(CATCH + """
import torch, bnb
p = torch.nn.Parameter(torch.randn(300, 20))
before = p.detach().clone()
p.grad = torch.randn(300, 20)
p.grad.view(-1)[4321] = float("nan")
opt = bnb.optim.Adam8bit([p], lr=1e-2)
report(opt.step)
print("unchanged" if torch.equal(p.detach(), before) else "changed")
""", BNB_CHECK_FINITE="1").splitlines()
    assert out[0].startswith("InvalidArgumentError:") and "g[4321] is not finite" in out[0], out
    assert out[1] == "unchanged", out


def test_python_m_bnb_reports_the_environment():
    code = "import runpy; runpy.run_module('bnb', run_name='__main__')"
    rc, out, _ = run_isolated(code, BNB_BACKEND="bogus")
    assert rc == 1 and "env:      BNB_BACKEND=bogus" in out and "numpy:    cannot run:" in out, out
    rc, out, _ = run_isolated(code, BNB_BACKEND="cuda")
    assert rc == 0 and "numpy:    cannot run: BNB_BACKEND=cuda selects the cuda backend" in out, out
    rc, out, _ = run_isolated(code)
    assert rc == 0 and "numpy:    runs on the cpu backend" in out, out


@needs_cuda
def test_backend_that_cannot_run_cuda_tensors_is_an_error():
    out = expect_error_in_subprocess(CATCH + """
import torch, bnb
report(lambda: bnb.quantize_4bit(torch.ones(64, device="cuda")))
""", BNB_BACKEND="cpu")
    assert out.startswith("BackendError:") and "BNB_BACKEND=cpu" in out, out
    assert "CUDA tensors" in out or "ROCm tensors" in out, out
    import torch

    gpu_backend = "hip" if getattr(torch.version, "hip", None) else "cuda"
    assert expect_error_in_subprocess(CATCH + """
import torch, bnb
report(lambda: bnb.quantize_4bit(torch.ones(64, device="cuda")))
""", BNB_BACKEND=gpu_backend) == "no error"


# ---------------------------------------------------------------- 5. corrupt checkpoints
def checkpoint(rng, nested=True):
    W = rng.standard_normal((32, 128)).astype(np.float32)
    packed, state = bnb.quantize_4bit(W, blocksize=64, compress_statistics=nested, quant_type="nf4")
    return bnb.linear4bit_state_dict(packed, state, bias=np.zeros(32, np.float32), prefix="lin.")


def test_intact_checkpoint_loads(rng):
    weight, state, bias = bnb.load_linear4bit_state_dict(checkpoint(rng), prefix="lin.")
    assert bnb.dequantize_4bit(weight, state).shape == (32, 128)


@pytest.mark.parametrize("key, damage, problem", [
    ("lin.weight", lambda a: a[:1000], r"holds 1000 uint8 elements, but a 4-bit \[32, 128\] weight packed into "
                                       r"uint8 needs 2048"),
    ("lin.weight", lambda a: np.zeros((32, 128), np.float16), "holds 4096 float16 elements, .* needs 1024"),
    ("lin.weight", lambda a: a.ravel().tolist(), "must be a numpy array or a torch tensor, not list"),
    ("lin.weight.absmax", lambda a: a[:10], "quant_state item 'lin.weight.absmax' holds 10 elements"),
    ("lin.weight.absmax", lambda a: a.astype(np.float32), "'lin.weight.absmax' has dtype float32, not uint8"),
    ("lin.weight.nested_absmax", lambda a: a.astype(np.float64), "'lin.weight.nested_absmax' has dtype float64"),
    ("lin.weight.nested_quant_map", lambda a: a[:100], "'lin.weight.nested_quant_map' holds 100 elements"),
    ("lin.weight.quant_state.bitsandbytes__nf4", lambda a: a[:20], "is not valid JSON"),
    ("lin.bias", lambda a: a[:5], r"lin.bias holds 5 elements, but a \[32, 128\] weight needs 32"),
    ("lin.bias", lambda a: a.astype(np.int32), "lin.bias has dtype int32"),
])
def test_corrupt_checkpoint_names_the_tensor(rng, key, damage, problem):
    sd = checkpoint(rng)
    sd[key] = damage(sd[key])
    with pytest.raises(ValueError, match=problem):
        bnb.load_linear4bit_state_dict(sd, prefix="lin.")


def test_checkpoint_without_its_weight_names_the_key(rng):
    sd = checkpoint(rng)
    del sd["lin.weight"]
    with pytest.raises(ValueError, match="lin.weight is missing"):
        bnb.load_linear4bit_state_dict(sd, prefix="lin.")


def test_checkpoint_claiming_a_larger_shape_is_an_error_not_a_crash():
    out = expect_error_in_subprocess(CATCH + """
import json, numpy as np, bnb
W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
packed, state = bnb.quantize_4bit(W, quant_type="nf4")
sd = bnb.linear4bit_state_dict(packed, state, prefix="lin.")
key = "lin.weight.quant_state.bitsandbytes__nf4"
blob = json.loads(bytes(sd[key]))
blob["shape"] = [8192, 8192]
sd[key] = np.frombuffer(json.dumps(blob).encode(), np.uint8).copy()
sd["lin.weight.absmax"] = np.ones(8192 * 8192 // 64, np.float32)  # consistent statistics, short weight
def load_and_run():
    weight, st, _ = bnb.load_linear4bit_state_dict(sd, prefix="lin.")
    bnb.dequantize_4bit(weight, st)
report(load_and_run)
""")
    assert out.startswith("ValueError:") and "lin.weight holds 2048 uint8 elements" in out, out


@needs_torch
def test_corrupt_checkpoint_through_linear4bit_load_state_dict(rng):
    import torch

    layer = bnb.nn.Linear4bit(128, 32, bias=True, quant_type="nf4")
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in checkpoint(rng).items()}
    sd = {k[len("lin."):]: v for k, v in sd.items()}
    sd["weight.absmax"] = sd["weight.absmax"][:7]
    with pytest.raises(RuntimeError, match="weight.absmax' holds 7 elements"):
        layer.load_state_dict(sd)


# ---------------------------------------------------------------- the fuzz target's smoke run
FUZZ_TARGET = os.path.join(os.path.dirname(__file__), "..", "fuzz", "fuzz_quant_state.py")


@pytest.mark.skipif(not os.path.isfile(FUZZ_TARGET), reason="tests/fuzz is not beside the tests")
def test_fuzz_target_for_damaged_state_dicts_finds_nothing():
    """tests/fuzz/fuzz_quant_state.py without atheris: seeded random damage to state dicts gives
    success or a ValueError/TypeError, never a crash or another exception."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("BNB_BACKEND", None)
    r = subprocess.run([sys.executable, "-W", "ignore", FUZZ_TARGET, "--runs", "3000", "--seed", "17"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "3000 inputs, no finding" in r.stdout, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"


# ---------------------------------------------------------------- declared buffer lengths
def test_declared_buffer_length_is_checked_by_the_library():
    """bnb_buffer_declare (in PROTOTYPES like every function): a call reaching past the declared
    end of a buffer raises, naming the argument and both byte counts; the thread's own table."""
    import ctypes
    from bnb import _lib
    x = np.random.default_rng(3).standard_normal(4096).astype(np.float32)
    start = x.ctypes.data
    _lib.check(_lib.lib.bnb_buffer_declare(start, 2048 * 4), "bnb_buffer_declare")
    try:
        with pytest.raises(bnb.InvalidArgumentError, match=r"A needs 16384 bytes .* has 8192 bytes"):
            bnb.quantize_blockwise(x, blocksize=256)
    finally:
        _lib.check(_lib.lib.bnb_buffer_forget(start), "bnb_buffer_forget")
    bnb.quantize_blockwise(x, blocksize=256)
    with pytest.raises(bnb.InvalidArgumentError, match="not the start"):
        _lib.check(_lib.lib.bnb_buffer_forget(ctypes.c_void_p(start)), "bnb_buffer_forget")
