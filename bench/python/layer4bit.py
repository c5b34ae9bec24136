"""Batch-1 4-bit linear layer: what torch users pay over the bare C call (issue 7: >= 90 %).

For each weight shape [N, K] (out, in) and dtype, one NF4 weight (blocksize 64, nested
statistics) and one input row x [1, K], three ways to compute x @ W^T:
  layer   bnb.nn.Linear4bit.forward, eager, under torch.inference_mode()
  op      torch.ops.bnb.gemm_4bit(...) called directly (the torch custom op, through the dispatcher)
  c_call  bnb_gemm_4bit through its ctypes prototype: prebuilt arguments and scales struct,
          preallocated output, the same context and stream (the library's own time plus the
          unavoidable ctypes trampoline)
  graph   (CUDA only) one layer forward captured in a torch.cuda.CUDAGraph, timed as graph.replay():
          what a CUDA-graph user (e.g. torch.compile mode="reduce-overhead") pays per layer
Times are per call: the best of `--repeats` interleaved timed loops (each at least --min-time
seconds; on CUDA the loop is synchronised at both ends, so a launch-bound call shows its Python
cost). ratio = c_call / layer and c_call / op (1.0 = no overhead). The layer is called once
before timing, so its eager fast path (the library call's fixed arguments kept per layer) is
built, as it is after a model's first forward.

    python bench/python/layer4bit.py [--device cuda|cpu] [--dtypes bfloat16,float16]
        [--shapes 4096x4096,11008x4096,4096x11008] [--json bench/results/layer4bit_<device>.json]
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

import torch  # noqa: E402

import bnb  # noqa: E402
from bnb import _arrays, _lib  # noqa: E402

DEFAULT_SHAPES = "4096x4096,11008x4096,4096x11008"


def timed_loop(fn, loops, sync):
    sync()
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    sync()
    return (time.perf_counter() - t0) / loops * 1e6


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


def bench_one(N, K, dtype, device, min_time, repeats):
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(K, N, bias=False, compute_dtype=dtype, compress_statistics=True, quant_type="nf4")
    with torch.no_grad():
        layer.weight.data = (torch.randn(N, K) * 0.02).to(dtype)
    layer = layer.to(device)  # quantized here
    qs = layer.quant_state
    assert qs.nested and qs.blocksize == 64 and qs.state2.blocksize == 256
    x = torch.randn(1, K, device=device).to(dtype)
    W = layer.weight.data

    # (b) the custom op as torch.compile sees it
    op = torch.ops.bnb.gemm_4bit.default
    op_args = (x, W, qs.absmax, qs.state2.absmax, qs.state2.code, qs.offset, qs.state2.blocksize, qs.blocksize,
               "nf4", N, None)

    # (c) the bare C call on the same context and stream
    kit = _arrays.kit_for(x)
    ctx, stream = kit.ctx, kit.stream
    out = torch.empty(1, N, dtype=dtype, device=device)
    scales = _lib.new_scales()
    scales.absmax_q, scales.absmax2 = qs.absmax.data_ptr(), qs.state2.absmax.data_ptr()
    scales.code2, scales.offset, scales.blocksize2 = qs.state2.code.data_ptr(), qs.offset.data_ptr(), 256
    c_args = (ctx, _arrays._TORCH_CODES()[dtype], 1, N, K, x.data_ptr(), W.data_ptr(), ctypes.byref(scales),
              _lib.NF4, 64, None, out.data_ptr(), stream)
    gemm = _lib.lib.bnb_gemm_4bit

    def c_call():
        gemm(*c_args)

    with torch.inference_mode():
        want = layer(x)
        assert gemm(*c_args) == 0, _lib.last_error_message()
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        assert torch.equal(op(*op_args), want) and torch.equal(out, want)
        assert layer._fast is not None, "the layer's eager fast path was not taken"
        fns = [lambda: layer(x), lambda: op(*op_args), c_call]
        if device == "cuda":
            fns.append(captured_layer(layer, x, want).replay)
        times = best_us(fns, sync, min_time, repeats)
    t_layer, t_op, t_c = times[:3]
    t_graph = times[3] if len(times) > 3 else None
    return {"N": N, "K": K, "dtype": str(dtype).replace("torch.", ""), "quant_type": "nf4", "blocksize": 64,
            "nested": True, "M": 1, "layer_us": round(t_layer, 3), "op_us": round(t_op, 3), "c_call_us": round(t_c, 3),
            "graph_us": None if t_graph is None else round(t_graph, 3),
            "ratio_layer": round(t_c / t_layer, 4), "ratio_op": round(t_c / t_op, 4),
            "meets_target": t_c / t_layer >= 0.9}


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="NxK (out x in) weight shapes, comma separated")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timed loop (default 0.05)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default=None, help="default bench/results/layer4bit_<device>.json")
    args = parser.parse_args()
    device = args.device
    json_path = args.json or os.path.join(REPO, "bench", "results", f"layer4bit_{device}.json")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    print(f"bnb {bnb.__version__} Linear4bit M=1 (NF4, blocksize 64, nested) on {device} ({name}), "
          f"torch {torch.__version__}")
    print(f"{'N x K':>14}{'dtype':>10}{'layer us':>11}{'op us':>10}{'C us':>10}{'graph us':>10}{'C/layer':>9}"
          f"{'C/op':>8}{'>=90%':>7}")
    results = []
    for N, K in shapes:
        for dtype in dtypes:
            r = bench_one(N, K, dtype, device, args.min_time, args.repeats)
            results.append(r)
            graph = "-" if r["graph_us"] is None else f"{r['graph_us']:.2f}"
            print(f"{N:>7} x {K:<5}{r['dtype']:>10}{r['layer_us']:>11.2f}{r['op_us']:>10.2f}{r['c_call_us']:>10.2f}"
                  f"{graph:>10}{r['ratio_layer'] * 100:>8.1f}%{r['ratio_op'] * 100:>7.1f}%"
                  f"{'yes' if r['meets_target'] else 'NO':>7}")
    report = {"bench": "layer4bit", "device": device, "device_name": name, "bnb_version": bnb.__version__,
              "torch": torch.__version__, "python": platform.python_version(), "library": bnb.library_path,
              "backends": [b["name"] + ": " + b["detail"] for b in bnb.backends() if b["available"]],
              "timing": f"best of {args.repeats} interleaved loops of >= {args.min_time} s, inference_mode",
              "target_ratio": 0.9, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
