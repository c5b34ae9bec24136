"""Python-call overhead of the bnb binding over the C call, per op, on small inputs.

For each op: `api` is the time of the public function (bnb.quantize_4bit(...) etc., which
validates, allocates outputs and builds the QuantState); `c_call` is the same C function called
through its ctypes prototype with preallocated outputs and prebuilt arguments (the library's own
time plus the unavoidable ctypes trampoline); `overhead = api - c_call` is what the binding adds.
`ctypes_floor` is one call of bnb_version_number, the cost of any ctypes call. Target: overhead
<= 10 us. Timings are the best of 25 interleaved repeats of a timed loop.

    python bench/python/overhead.py [--n 256] [--torch] [--json bench/results/python_overhead.json]
"""

import argparse
import ctypes
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
if os.environ.get("BNB_LIBRARY_PATH"):
    sys.path.insert(0, os.path.join(REPO, "bindings", "python"))

import bnb  # noqa: E402
from bnb import _lib  # noqa: E402


def _loops_for(fn, min_time):
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - t0 > min_time:
            return loops
        loops *= 2


def _once(fn, loops):
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t0) / loops * 1e6


def best_us(*fns, min_time=0.02, repeats=25):
    """Best per-call time of each function in microseconds, their repeats interleaved so that a
    busy machine slows all of them alike."""
    loops = [_loops_for(fn, min_time) for fn in fns]
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _once(fn, loops[i]))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256, help="elements per input (default 256)")
    parser.add_argument("--torch", action="store_true",
                        help="also time torch CPU tensors (through the torch custom ops)")
    parser.add_argument("--json", default=os.path.join(REPO, "bench", "results", "python_overhead.json"))
    args = parser.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    A = rng.standard_normal(n).astype(np.float32)
    lib, ctx = _lib.lib, _lib.context(_lib.BACKEND_CPU, 0)
    ptr = lambda a: a.ctypes.data  # noqa: E731

    q8, s8 = bnb.quantize_blockwise(A, blocksize=256)
    p4, s4 = bnb.quantize_4bit(A, blocksize=64, quant_type="nf4")
    p4n, s4n = bnb.quantize_4bit(A, blocksize=64, quant_type="nf4", compress_statistics=True)
    out_q, out_amax = np.empty(n, np.uint8), np.empty(n // 256 + 1, np.float32)
    out_p, out_a4 = np.empty((n + 1) // 2, np.uint8), np.empty(n // 64 + 1, np.float32)
    out_f = np.empty(n, np.float32)
    scales = _lib.new_scales()
    scales.absmax = ptr(s4.absmax)
    nscales = _lib.new_scales()
    nscales.absmax_q, nscales.absmax2 = ptr(s4n.absmax), ptr(s4n.state2.absmax)
    nscales.code2, nscales.offset, nscales.blocksize2 = ptr(s4n.state2.code), ptr(s4n.offset), 256
    code = ptr(s8.code)
    a, q, am, pp, a4, of = ptr(A), ptr(q8), ptr(s8.absmax), ptr(p4), ptr(s4.absmax), ptr(out_f)
    oq, oam, op, oa4 = ptr(out_q), ptr(out_amax), ptr(out_p), ptr(out_a4)
    by_ref, by_ref_n = ctypes.byref(scales), ctypes.byref(nscales)

    rows = [
        ("quantize_blockwise", lambda: bnb.quantize_blockwise(A, blocksize=256),
         lambda: lib.bnb_quantize_blockwise(ctx, 0, a, n, 256, code, oq, oam, None)),
        ("dequantize_blockwise", lambda: bnb.dequantize_blockwise(q8, s8),
         lambda: lib.bnb_dequantize_blockwise(ctx, q, am, code, n, 256, 0, of, None)),
        ("quantize_4bit", lambda: bnb.quantize_4bit(A, blocksize=64, quant_type="nf4"),
         lambda: lib.bnb_quantize_4bit(ctx, 2, 0, a, n, 64, op, oa4, None)),
        ("dequantize_4bit", lambda: bnb.dequantize_4bit(p4, s4),
         lambda: lib.bnb_dequantize_4bit(ctx, 2, pp, by_ref, n, 64, 0, of, None)),
        ("dequantize_4bit_nested", lambda: bnb.dequantize_4bit(p4n, s4n),
         lambda: lib.bnb_dequantize_4bit(ctx, 2, pp, by_ref_n, n, 64, 0, of, None)),
    ]
    if args.torch:
        import torch

        At = torch.from_numpy(A)
        q8t, s8t = bnb.quantize_blockwise(At, blocksize=256)
        p4t, s4t = bnb.quantize_4bit(At, blocksize=64, quant_type="nf4")
        p4nt, s4nt = bnb.quantize_4bit(At, blocksize=64, quant_type="nf4", compress_statistics=True)
        rows += [
            ("torch_cpu:" + name, api, raw) for name, api, raw in [
                ("quantize_blockwise", lambda: bnb.quantize_blockwise(At, blocksize=256), rows[0][2]),
                ("dequantize_blockwise", lambda: bnb.dequantize_blockwise(q8t, s8t), rows[1][2]),
                ("quantize_4bit", lambda: bnb.quantize_4bit(At, blocksize=64, quant_type="nf4"), rows[2][2]),
                ("dequantize_4bit", lambda: bnb.dequantize_4bit(p4t, s4t), rows[3][2]),
                ("dequantize_4bit_nested", lambda: bnb.dequantize_4bit(p4nt, s4nt), rows[4][2]),
            ]]
    floor, = best_us(lambda: lib.bnb_version_number())
    results = []
    print(f"bnb {bnb.__version__} python overhead, n={n} float32, CPU backend, {platform.python_version()}")
    print(f"ctypes floor (bnb_version_number): {floor:.2f} us")
    print(f"{'op':<34}{'api us':>10}{'c_call us':>12}{'overhead us':>14}{'<=10us':>8}")
    for name, api, raw in rows:
        assert raw() == 0, name
        t_api, t_raw = best_us(api, raw)
        over = t_api - t_raw
        results.append({"op": name, "n": n, "api_us": round(t_api, 3), "c_call_us": round(t_raw, 3),
                        "overhead_us": round(over, 3), "meets_target": over <= 10.0})
        print(f"{name:<34}{t_api:>10.2f}{t_raw:>12.2f}{over:>14.2f}{'yes' if over <= 10 else 'NO':>8}")
    report = {"bench": "python_overhead", "bnb_version": bnb.__version__, "python": platform.python_version(),
              "numpy": np.__version__, "torch": sys.modules["torch"].__version__ if args.torch else None, "machine": platform.machine(), "library": bnb.library_path,
              "backends": [b["name"] + ": " + b["detail"] for b in bnb.backends() if b["available"]],
              "ctypes_floor_us": round(floor, 3), "target_overhead_us": 10.0, "results": results}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
