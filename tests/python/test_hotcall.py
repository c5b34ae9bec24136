"""bnb._hotcall: the eager 4-bit layers' library call without ctypes (bnb/_hotcall.c).

It must be a drop-in for the ctypes prototype of bnb_gemm_4bit_plan_run: same arguments, same
status, same output bits, and argument errors as Python exceptions. Where the build has it, CI
sets BNB_EXPECT_HOTCALL=1 so that a module that silently failed to load fails here instead of
falling back to ctypes unnoticed."""

import ctypes
import os
import subprocess
import sys

import pytest

from bnb import _lib, _ops

torch = pytest.importorskip("torch")
import bnb  # noqa: E402

hot = pytest.mark.skipif(_lib.hotcall is None, reason="bnb._hotcall is not built here (no Python headers)")


def test_the_module_is_there_where_ci_built_it():
    if os.environ.get("BNB_EXPECT_HOTCALL") != "1":
        pytest.skip("BNB_EXPECT_HOTCALL is not set")
    assert _lib.hotcall is not None, f"no loadable _hotcall*.so beside {_lib.LIBRARY_PATH}"
    assert isinstance(_ops.gemm4_plan_run, _lib.hotcall.PlanRun)


def make_layer(N, K, dtype, bias):
    torch.manual_seed(N + K)
    layer = bnb.nn.Linear4bit(K, N, bias=bias, compute_dtype=dtype, quant_type="nf4")
    with torch.no_grad():
        layer.weight.data = torch.randn(N, K).to(dtype)
        if bias:
            layer.bias.data = torch.randn(N).to(dtype)
    return layer.to("cpu")


@hot
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 3, 17])
def test_same_output_bits_and_status_as_the_ctypes_call(dtype, M):
    N, K = 40, 128
    layer = make_layer(N, K, dtype, bias=True)
    x = torch.randn(M, K).to(dtype)
    with torch.inference_mode():
        want = layer(x)  # builds the fast path (and its plan) through the general path
        plan = layer._fast.keep_alive
        outs = []
        for call in (_lib.lib.bnb_gemm_4bit_plan_run, _lib.plan_run_caller(_lib.lib.bnb_gemm_4bit_plan_run)):
            out = torch.full((M, N), float("nan"), dtype=dtype)
            assert call(plan.ptr, M, x.data_ptr(), out.data_ptr(), None) == _lib.SUCCESS
            outs.append(out)
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], want)
        # the library's own refusal comes back as the same status through both callers
        for call in (_lib.lib.bnb_gemm_4bit_plan_run, _ops.gemm4_plan_run):
            assert call(None, M, x.data_ptr(), outs[0].data_ptr(), None) == _lib.ERR_INVALID_ARGUMENT
            assert call(plan.ptr, -1, x.data_ptr(), outs[0].data_ptr(), None) == _lib.ERR_INVALID_ARGUMENT


@hot
def test_the_fast_path_calls_the_ops_caller():
    """The layer's fast path calls _ops.gemm4_plan_run (bnb._hotcall's PlanRun where the module
    loaded: test_the_module_is_there_where_ci_built_it), bound when the fast path is built."""
    layer = make_layer(24, 64, torch.bfloat16, bias=False)
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    seen = []
    real = _lib.hotcall.PlanRun(ctypes.cast(_lib.lib.bnb_gemm_4bit_plan_run, ctypes.c_void_p).value)

    def spy(*args):
        seen.append(args[1])
        return real(*args)

    saved = _ops.gemm4_plan_run
    _ops.gemm4_plan_run = spy  # the fast path binds the caller when it is built
    try:
        with torch.inference_mode():
            y0 = layer(x)
            y1 = layer(x)
    finally:
        _ops.gemm4_plan_run = saved
    assert seen == [2] and torch.equal(y0, y1)


@hot
def test_bad_arguments_raise_naming_the_argument():
    run = _ops.gemm4_plan_run
    with pytest.raises(TypeError, match="5 positional arguments"):
        run(1, 1, 1, 1)
    with pytest.raises(TypeError, match="5 positional arguments"):
        run(1, 1, 1, 1, None, stream=None)
    with pytest.raises(TypeError, match="A must be an integer address or None"):
        run(None, 1, 1.5, 0, None)
    with pytest.raises(TypeError, match="stream must be an integer address or None"):
        run(None, 1, 0, 0, "s")
    with pytest.raises(TypeError, match="M must be an int"):
        run(None, 1.0, 0, 0, None)
    with pytest.raises(OverflowError):
        run(None, 1 << 70, 0, 0, None)
    with pytest.raises(OverflowError):
        run(1 << 70, 1, 0, 0, None)
    with pytest.raises(ValueError, match="address is NULL"):
        _lib.hotcall.PlanRun(0)
    with pytest.raises(TypeError, match="PlanRun: address must be an integer address or None"):
        _lib.hotcall.PlanRun("bnb_gemm_4bit_plan_run")


def test_bnb_hotcall_0_falls_back_to_ctypes():
    code = ("import torch, bnb; from bnb import _lib, _ops\n"
            "assert _lib.hotcall is None and _ops.gemm4_plan_run is _lib.lib.bnb_gemm_4bit_plan_run\n"
            "l = bnb.nn.Linear4bit(64, 16, compute_dtype=torch.float32)\n"
            "x = torch.randn(3, 64)\n"
            "with torch.inference_mode():\n"
            "    y = l(x); z = l(x); w = l._forward(x)\n"
            "assert l._fast is not None and torch.equal(y, z) and torch.equal(z, w)\n")
    env = dict(os.environ, BNB_HOTCALL="0", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
