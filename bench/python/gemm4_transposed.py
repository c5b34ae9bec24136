"""The transposed 4-bit product out[M, K] = A[M, N] @ W[N, K] (bnb_gemm_4bit_transposed, the input
gradient of a 4-bit layer), against what the backward did before: dequantize W and multiply with
torch. NF4, blocksize 64, nested statistics. Times are the median of --reps calls after one
warm-up (synchronised on CUDA); both sides produce the same [M, K] result in A's dtype.

    python bench/python/gemm4_transposed.py [--device cpu|cuda] [--shapes 1x4096x4096,64x4096x4096,...]
        [--dtypes bfloat16,float32] [--reps 5] [--json bench/results/gemm4_transposed_<device>.json]
Shapes are MxNxK. With BNB_LIBRARY_PATH set, bnb is imported from bindings/python with that library.
"""

import argparse
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

DEFAULT_SHAPES = "1x4096x4096,64x4096x4096,128x2048x5632,512x2048x5632"


def median_ms(fn, reps, sync):
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    dev = args.device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or platform.machine()
    print(f"bnb {bnb.__version__} gemm_4bit_transposed on {dev} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'M x N x K':>20}{'dtype':>10}{'library ms':>12}{'dequant+torch ms':>18}{'speed-up':>10}")
    rows = []
    for shape in args.shapes.split(","):
        M, N, K = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        W = (torch.randn(N, K) * 0.02).to(dev)
        packed, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=True)
        s2 = state.state2
        op_args = (packed, state.absmax, s2.absmax, s2.code, state.offset, s2.blocksize, 64, "nf4", N, K)
        for dname in args.dtypes.split(","):
            dtype = getattr(torch, dname)
            A = torch.randn(M, N, device=dev).to(dtype)
            op = torch.ops.bnb.gemm_4bit_transposed
            t_lib = median_ms(lambda: op(A, *op_args), args.reps, sync)
            t_ref = median_ms(lambda: A @ bnb.dequantize_4bit(packed, state, dtype=dtype), args.reps, sync)
            rows.append({"M": M, "N": N, "K": K, "dtype": dname, "library_ms": round(t_lib, 3),
                         "dequantize_torch_ms": round(t_ref, 3), "speedup": round(t_ref / t_lib, 3)})
            print(f"{shape:>20}{dname:>10}{t_lib:12.2f}{t_ref:18.2f}{t_ref / t_lib:9.2f}x")
    out = args.json or os.path.join(REPO, "bench", "results", f"gemm4_transposed_{dev}.json")
    with open(out, "w") as f:
        json.dump({"bench": "bench/python/gemm4_transposed.py", "device": dev, "device_name": name,
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "reps": args.reps,
                   "results": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
