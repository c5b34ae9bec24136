"""Batch-1 4-bit linear layer: what torch users pay over the bare C call (issues 7 and 16: >= 90 %).

For each weight shape [N, K] (out, in) and dtype, one NF4 weight (blocksize 64, nested
statistics) and one input row x [1, K], these ways to compute x @ W^T:
  layer   layer(x) of a bnb.nn.Linear4bit, eager, under torch.inference_mode()
  compat  layer(x) of the compatibility layer's bitsandbytes.nn.Linear4bit (this repository's
          bindings/python/compat; "-" when `import bitsandbytes` finds another package)
  op      torch.ops.bnb.gemm_4bit(...) called directly (the torch custom op, through the dispatcher)
  c_call  bnb_gemm_4bit through its ctypes prototype: prebuilt arguments and scales struct,
          preallocated output, the same context and stream (the library's own time plus the
          unavoidable ctypes trampoline)
  plan    (CUDA only) bnb_gemm_4bit_plan_run through its ctypes prototype with the layer's plan:
          the library call the layers' fast path makes
  graph   (CUDA only) one layer forward captured in a torch.cuda.CUDAGraph, timed as graph.replay():
          what a CUDA-graph user (e.g. torch.compile mode="reduce-overhead") pays per layer
On CUDA each is also timed as issued: the wall time of 64 calls right after a synchronisation,
before the next (the GPU queue does not fill), per call: the host's own cost (`*_issue_us`, the
second line of each row), which bounds the loop when it exceeds the kernel's time.
Times are per call: the best of `--repeats` interleaved timed loops (each at least --min-time
seconds; on CUDA the loop is synchronised at both ends, so a launch-bound call shows its Python
cost). ratio = c_call / layer (and compat, op; 1.0 = no overhead). The layers are called once
before timing, so their eager fast path (the library call's fixed arguments kept per layer) is
built, as it is after a model's first forward.

--host-only: the Python cost alone, on the CPU. Every library call the timed functions make
(bnb_gemm_4bit_plan_run of the layers' fast path, bnb_gemm_4bit of the op) is replaced by a C
function that returns 0 at once (glibc's getauxval, which reads only its first argument: an
address, never an auxv type, so it finds nothing), declared with the same prototype and called
the same way (the layers: through bnb._hotcall where it loaded, else ctypes; both release the
GIL as for the real call). `C us` is then that no-op through its ctypes prototype
(bnb_gemm_4bit_plan_run with the layers' plan, five arguments) and layer - C, compat - C are
what each forward adds on the host over a bare ctypes call (below zero: less than ctypes alone). On a GPU the
kernel runs asynchronously, so a layer reaches the target once that host time (plus the launch)
is below the kernel's time. Default shape 64x64 (the shape does not change the Python). The
loops are timed in the thread's CPU time (time.thread_time), not wall time, so that other
processes on a busy machine do not count.

    python bench/python/layer4bit.py [--device cuda|cpu] [--dtypes bfloat16,float16]
        [--shapes 4096x4096,11008x4096,4096x11008] [--rank 2|3] [--json bench/results/layer4bit_<device>.json]
    python bench/python/layer4bit.py --host-only [--json bench/results/layer4bit_host.json]
"""

import argparse
import ctypes
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
if os.environ.get("BNB_LIBRARY_PATH"):
    sys.path.insert(0, os.path.join(REPO, "bindings", "python"))
    sys.path.insert(0, os.path.join(REPO, "bindings", "python", "compat"))

import torch  # noqa: E402

import bnb  # noqa: E402
from bnb import _arrays, _lib, _ops  # noqa: E402

try:
    import bitsandbytes as compat  # noqa: E402

    if not compat.__version__.endswith("+bnb"):  # the real bitsandbytes: not what this measures
        compat = None
except ImportError:
    compat = None

DEFAULT_SHAPES = "4096x4096,11008x4096,4096x11008"


# Wall time, except with --host-only: the calling thread's CPU time, which leaves out the time
# the thread waits for a core on a busy machine (there is nothing else to wait for: no device).
clock = time.perf_counter


def timed_loop(fn, loops, sync):
    sync()
    t0 = clock()
    for _ in range(loops):
        fn()
    sync()
    return (clock() - t0) / loops * 1e6


def best_us(fns, sync, min_time, repeats):
    """Best per-call microseconds of each function, their repeats interleaved."""
    loops = []
    for fn in fns:
        n = 1
        while timed_loop(fn, n, sync) * n * 1e-6 < min_time:
            n *= 2
        loops.append(n)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], timed_loop(fn, loops[i], sync))
    return best


def best_issue_us(fn, sync, repeats, calls=64):
    """Host microseconds per call: the wall time of `calls` calls issued back to back after a
    synchronisation, before the next one (the GPU queue does not fill: the host's own cost),
    best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    sync()
    return best


class _NoOpLibrary:
    """The library with bnb_gemm_4bit answered by a C no-op (--host-only); the rest unchanged."""

    def __init__(self, lib, noop):
        self._lib = lib
        self.bnb_gemm_4bit = noop

    def __getattr__(self, name):
        return getattr(self._lib, name)


def c_noop_like(fn):
    """A C function that returns 0 without doing anything, with fn's prototype (see --host-only)."""
    try:
        noop = ctypes.CDLL(None)["getauxval"]
    except (OSError, AttributeError):
        sys.exit("--host-only needs glibc's getauxval as its no-op C function")
    noop.argtypes, noop.restype = fn.argtypes, fn.restype
    return noop


def host_only():
    """Replaces the library calls the timed functions make by C no-ops (before any layer builds
    its fast path, which keeps the function it calls) and times CPU time."""
    global clock
    clock = time.thread_time
    global plan_run_noop
    plan_run_noop = c_noop_like(_lib.lib.bnb_gemm_4bit_plan_run)
    _ops.gemm4_plan_run = _lib.plan_run_caller(plan_run_noop)  # bnb._hotcall's caller where it loaded
    _ops._c = _NoOpLibrary(_ops._c, c_noop_like(_lib.lib.bnb_gemm_4bit))


def make_layer(cls, N, K, dtype, device):
    torch.manual_seed(0)
    layer = cls(K, N, bias=False, compute_dtype=dtype, compress_statistics=True, quant_type="nf4")
    with torch.no_grad():
        layer.weight.data = (torch.randn(N, K) * 0.02).to(dtype)
    return layer.to(device)  # quantized here


def bench_one(N, K, dtype, device, min_time, repeats, noop, rank=2):
    layer = make_layer(bnb.nn.Linear4bit, N, K, dtype, device)
    other = None if compat is None else make_layer(compat.nn.Linear4bit, N, K, dtype, device)
    qs = layer.quant_state
    assert qs.nested and qs.blocksize == 64 and qs.state2.blocksize == 256
    x = torch.randn((1,) * (rank - 1) + (K,), device=device).to(dtype)
    W = layer.weight.data

    # (b) the custom op as torch.compile sees it
    op = torch.ops.bnb.gemm_4bit.default
    op_args = (x, W, qs.absmax, qs.state2.absmax, qs.state2.code, qs.offset, qs.state2.blocksize, qs.blocksize,
               "nf4", N, None)

    # (c) the bare C call on the same context and stream
    kit = _arrays.kit_for(x)
    ctx, stream = kit.ctx, kit.stream
    out = torch.empty(x.shape[:-1] + (N,), dtype=dtype, device=device)
    scales = _lib.new_scales()
    scales.absmax_q, scales.absmax2 = qs.absmax.data_ptr(), qs.state2.absmax.data_ptr()
    scales.code2, scales.offset, scales.blocksize2 = qs.state2.code.data_ptr(), qs.offset.data_ptr(), 256
    c_args = (ctx, _arrays._TORCH_CODES()[dtype], 1, N, K, x.data_ptr(), W.data_ptr(), ctypes.byref(scales),
              _lib.NF4, 64, None, out.data_ptr(), stream)
    gemm = _ops._c.bnb_gemm_4bit

    def c_call():
        gemm(*c_args)

    with torch.inference_mode():
        want = layer(x)
        assert gemm(*c_args) == 0, _lib.last_error_message()
        # the call the layers make: their library plan's, five arguments (the stream: the plan's)
        plan_run, plan_args = _ops.gemm4_plan_run, (layer._fast.keep_alive.ptr, 1, x.data_ptr(), out.data_ptr(),
                                                    stream)

        def plan_call():
            plan_run(*plan_args)

        if noop:  # the no-op of that call, through its ctypes prototype
            def c_call():
                plan_run_noop(*plan_args)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        y = op(*op_args)  # its first call imports more of torch: not in the timed loops
        assert noop or (torch.equal(y, want) and torch.equal(out, want))  # (the no-ops compute nothing)
        assert layer._fast is not None, "the layer's eager fast path was not taken"
        fns = {"layer": lambda: layer(x), "op": lambda: op(*op_args), "c_call": c_call}
        if other is not None:
            y = other(x)
            assert noop or torch.equal(y, other._forward(x))
            assert other._fast is not None, "the compatibility layer's eager fast path was not taken"
            fns["compat"] = lambda: other(x)
        if device == "cuda":
            fns["plan_call"] = plan_call
            fns["graph"] = captured_layer(layer, x, want).replay
        times = dict(zip(fns, best_us(list(fns.values()), sync, min_time, repeats)))
        # on a GPU: the host's share, the wall time of issuing calls while the GPU works behind
        issue = {name: best_issue_us(fn, sync, repeats) for name, fn in fns.items()} if device == "cuda" else {}
    t_c = times["c_call"]
    r = {"N": N, "K": K, "dtype": str(dtype).replace("torch.", ""), "quant_type": "nf4", "blocksize": 64,
         "nested": True, "M": 1, "input_shape": list(x.shape)}
    for name in ("layer", "compat", "op", "c_call", "plan_call", "graph"):
        r[name + "_us"] = round(times[name], 3) if name in times else None
    for name, us in issue.items():
        r[name + "_issue_us"] = round(us, 3)
    if noop:  # host-only: the Python each call adds over the (no-op) C call
        for name in ("layer", "compat", "op"):
            r[name + "_host_us"] = round(times[name] - t_c, 3) if name in times else None
    else:
        for name in ("layer", "compat", "op"):
            r["ratio_" + name] = round(t_c / times[name], 4) if name in times else None
        r["meets_target"] = all(r["ratio_" + name] >= 0.9 for name in ("layer", "compat") if name in times)
    return r


def captured_layer(layer, x, want):
    """A CUDA graph holding one forward of `layer` on `x` (warmed up on a side stream first, as
    torch.cuda.graph's documentation asks), checked against `want`."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            layer(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = layer(x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, want)
    return graph


def _cell(value, width, fmt="{:.2f}"):
    return f"{'-' if value is None else fmt.format(value):>{width}}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda when available, else cpu (--host-only: cpu)")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--shapes", default=None, help=f"NxK (out x in) weight shapes, comma separated (default "
                        f"{DEFAULT_SHAPES}; --host-only: 64x64)")
    parser.add_argument("--host-only", action="store_true", help="the Python per call alone: library calls "
                        "replaced by a C no-op (module docstring)")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timed loop (default 0.05)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rank", type=int, default=2, choices=(2, 3), help="the input's dimensions: 2 = [1, K] "
                        "(default), 3 = [1, 1, K] (what a model's generate() passes)")
    parser.add_argument("--json", default=None, help="default bench/results/layer4bit_<device>.json "
                        "(--host-only: layer4bit_host.json)")
    args = parser.parse_args()
    noop = args.host_only
    device = args.device or ("cuda" if torch.cuda.is_available() and not noop else "cpu")
    if noop:
        if device != "cpu":
            sys.exit("--host-only runs on the CPU (a GPU's no-op call would still queue nothing)")
        host_only()
    json_path = args.json or os.path.join(REPO, "bench", "results",
                                          "layer4bit_host.json" if noop else f"layer4bit_{device}.json")
    shapes = [tuple(int(v) for v in s.split("x")) for s in (args.shapes or ("64x64" if noop else DEFAULT_SHAPES))
              .split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    print(f"bnb {bnb.__version__} Linear4bit M=1 ({'[1, 1, K]' if args.rank == 3 else '[1, K]'} input, NF4, blocksize 64, nested) on {device} ({name}), "
          f"torch {torch.__version__}, Python {platform.python_version()}"
          f"{', library calls replaced by a C no-op (host-only)' if noop else ''}")
    if noop:
        print(f"{'N x K':>14}{'dtype':>10}{'layer us':>11}{'compat us':>11}{'op us':>10}{'C us':>9}"
              f"{'layer-C':>10}{'compat-C':>10}{'op-C':>9}")
    else:
        print(f"{'N x K':>14}{'dtype':>10}{'layer us':>11}{'compat us':>11}{'op us':>10}{'C us':>10}{'graph us':>10}"
              f"{'C/layer':>9}{'C/compat':>10}{'C/op':>8}{'>=90%':>7}")
    results = []
    for N, K in shapes:
        for dtype in dtypes:
            r = bench_one(N, K, dtype, device, args.min_time, args.repeats, noop, args.rank)
            results.append(r)
            row = (f"{N:>7} x {K:<5}{r['dtype']:>10}{_cell(r['layer_us'], 11)}{_cell(r['compat_us'], 11)}"
                   f"{_cell(r['op_us'], 10)}")
            if noop:
                row += (f"{_cell(r['c_call_us'], 9)}{_cell(r['layer_host_us'], 10)}{_cell(r['compat_host_us'], 10)}"
                        f"{_cell(r['op_host_us'], 9)}")
            else:
                pct = "{:.1%}"
                row += (f"{_cell(r['c_call_us'], 10)}{_cell(r['graph_us'], 10)}{_cell(r['ratio_layer'], 9, pct)}"
                        f"{_cell(r['ratio_compat'], 10, pct)}{_cell(r['ratio_op'], 8, pct)}"
                        f"{'yes' if r['meets_target'] else 'NO':>7}")
            print(row)
            if r.get("layer_issue_us") is not None:
                print(f"{'issued, host us:':>24}" + "  ".join(f"{n} {r[n + '_issue_us']:.2f}" for n in
                                                          ("layer", "compat", "op", "c_call", "plan_call", "graph")
                                                          if r.get(n + "_issue_us") is not None))
    report = {"bench": "layer4bit", "device": device, "device_name": name, "bnb_version": bnb.__version__,
              "torch": torch.__version__, "python": platform.python_version(), "library": bnb.library_path,
              "backends": [b["name"] + ": " + b["detail"] for b in bnb.backends() if b["available"]],
              "compat": None if compat is None else compat.__version__,
              "host_only": noop, "hotcall": _lib.hotcall is not None,
              "timing": f"best of {args.repeats} interleaved loops of >= {args.min_time} s, inference_mode",
              "target_ratio": None if noop else 0.9, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
