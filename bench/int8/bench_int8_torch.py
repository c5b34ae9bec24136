"""The LLM.int8() layer through torch, side by side on one GPU: bnb.nn.Linear8bitLt (this library's
Python binding), bitsandbytes.nn.Linear8bitLt and a dense fp16 layer (torch.nn.functional.linear,
cuBLAS), inference (has_fp16_weights=False), fp16 activations and bias.

For each (M, N = K, threshold): the activations are bench_int8_cuda's (|x| < 2, except in
--outlier-fraction of the columns, at least one, where a third of the rows, row 0 always, hold
+-[8, 64)), so threshold 6 meets the same outlier columns there. Each layer is built --copies times
over its own weight (the int8 copies together at least 4x the L2 cache, the fp16 ones likewise),
and one measurement is R calls, each on the next copy, timed with CUDA events: as a CUDA graph of
the R calls where the layer can be captured ("graph"; GPU time, as bench_int8_cuda), else eagerly
("eager": host time where the host is slower than the GPU; bitsandbytes' threshold > 0 reads the
outlier columns back to the host, so it cannot be captured). Median over --reps, divided by R.
Speedups are over the fp16 layer of the same shape in the same run.

    python bench/int8/bench_int8_torch.py [--m 1,16,256,2048] [--nk 4096,8192] [--thresholds 0,6]
        [--outlier-fraction 0.005] [--reps 20] [--impls bnb,bitsandbytes] [--json out.json]
    (bnb from bindings/python with BNB_LIBRARY_PATH, bitsandbytes from PYTHONPATH; an implementation
    that cannot be imported is skipped)
"""

import argparse
import json
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
if os.environ.get("BNB_LIBRARY_PATH"):
    sys.path.insert(0, os.path.join(REPO, "bindings", "python"))

import torch  # noqa: E402


def activations(M, K, fraction, gen):
    """bench_int8_cuda's activations (its generator's distribution, not its exact values)."""
    x = (torch.rand(M, K, generator=gen) * 4 - 2).to(torch.float16)
    n = max(1, int(K * fraction))
    cols = torch.randint(0, K, (n,), generator=gen)
    for c in cols.tolist():
        rows = torch.rand(M, generator=gen) < 1 / 3
        rows[0] = True
        mag = 8 + torch.rand(int(rows.sum()), generator=gen) * 56
        sign = torch.where(torch.rand(mag.shape, generator=gen) < 0.5, -1.0, 1.0)
        x[rows, c] = (mag * sign).to(torch.float16)
    return x


def int8_layer(impl, W, b, threshold, device):
    """A Linear8bitLt of `impl` holding W (fp16 [N, K], quantized on the move to the device) and b."""
    if impl == "bnb":
        import bnb as lib
    else:
        import bitsandbytes as lib
    N, K = W.shape
    layer = lib.nn.Linear8bitLt(K, N, bias=True, has_fp16_weights=False, threshold=threshold)
    layer.weight = lib.nn.Int8Params(W.clone(), requires_grad=False, has_fp16_weights=False)
    layer.bias = torch.nn.Parameter(b.clone(), requires_grad=False)
    return layer.to(device).eval()


def time_calls(fns, x, calls, reps, graph):
    """Median ms per call over `reps` measurements of `calls` calls (fns[i % len(fns)](x))."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), torch.no_grad():
        for i in range(3):  # warm-up (and the first forward's one-time work)
            fns[i % len(fns)](x)
        torch.cuda.synchronize()
        run = None
        if graph:
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=stream):
                    for i in range(calls):
                        fns[i % len(fns)](x)
                run = g.replay
            except Exception:  # noqa: BLE001 - not capturable: time it eagerly
                torch.cuda.synchronize()
                run = None
        mode = "graph" if run is not None else "eager"
        if run is None:
            def run():
                for i in range(calls):
                    fns[i % len(fns)](x)
        run()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            run()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end) / calls)
    return statistics.median(times), mode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default="1,16,256,2048")
    ap.add_argument("--nk", default="4096,8192")
    ap.add_argument("--thresholds", default="0,6")
    ap.add_argument("--outlier-fraction", type=float, default=0.005)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--calls", type=int, default=16)
    ap.add_argument("--impls", default="bnb,bitsandbytes")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_int8_torch: needs a CUDA GPU")
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    impls, versions = [], {}
    for impl in args.impls.split(","):
        try:
            mod = __import__(impl)
            versions[impl] = getattr(mod, "__version__", "?")
            impls.append(impl)
        except Exception as e:  # noqa: BLE001 - report and skip
            print(f"skipping {impl}: {e}")
    print(f"device {props.name}, torch {torch.__version__}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = []
    header = f"{'M':>5} {'N=K':>5} {'fp16 us':>8}" + "".join(
        f" {impl + ' t' + format(t, 'g'):>18}" for impl in impls for t in thresholds)
    print(header + "   (us, speedup over fp16, graph/eager)")
    gen = torch.Generator().manual_seed(20)
    for nk in [int(v) for v in args.nk.split(",")]:
        N = K = nk
        copies8 = max(2, math.ceil(4 * l2 / (N * K)))
        copies16 = max(2, math.ceil(4 * l2 / (2 * N * K)))
        weights = [(torch.randn(N, K, generator=gen) * 0.05).to(torch.float16) for _ in range(max(copies8, copies16))]
        bias = (torch.rand(N, generator=gen) * 0.5).to(torch.float16)
        dense = [w.to(device) for w in weights[:copies16]]
        bias_d = bias.to(device)
        layers = {(impl, t): [int8_layer(impl, w, bias, t, device) for w in weights[:copies8]]
                  for impl in impls for t in thresholds}
        for M in [int(v) for v in args.m.split(",")]:
            x = activations(M, K, args.outlier_fraction, gen).to(device)
            calls = max(args.calls, copies8)
            fp16_ms, _ = time_calls([lambda x, w=w: torch.nn.functional.linear(x, w, bias_d) for w in dense], x,
                                    calls, args.reps, True)
            row = dict(M=M, N=N, K=K, fp16_us=fp16_ms * 1e3, impls={})
            line = f"{M:5d} {N:5d} {fp16_ms * 1e3:8.2f}"
            for impl in impls:
                for t in thresholds:
                    # bitsandbytes reads the outlier columns back to the host: not capturable.
                    capturable = not (impl == "bitsandbytes" and t > 0)
                    ms, mode = time_calls(layers[(impl, t)], x, calls, args.reps, capturable)
                    row["impls"][f"{impl} t{t:g}"] = dict(us=ms * 1e3, speedup_vs_fp16=fp16_ms / ms, mode=mode)
                    line += f" {ms * 1e3:8.2f} {fp16_ms / ms:5.2f}x {mode[0]}"
            print(line, flush=True)
            rows.append(row)
        del layers, dense
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(bench="int8_torch", device=props.name, torch=torch.__version__, versions=versions,
                           outlier_fraction=args.outlier_fraction, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
