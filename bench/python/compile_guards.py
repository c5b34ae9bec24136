#!/usr/bin/env python3
"""What a torch.compile'd model pays per call for its 4-bit layers before any kernel runs: dynamo's
guards (and the collection of the graph's inputs), side by side for the real bitsandbytes package
and bnb's bitsandbytes layer (issue 16: transformers' compiled decoding calls the compiled step
once per generated token, so this is paid per token, for every layer).

Each side runs in its own process (bench/hf/qlora_bench.py's side_env): a stack of --layers
bitsandbytes.nn.Linear4bit (NF4, nested statistics, bf16 compute, no bias), run eagerly twice (as
generate()'s prefill does), then torch.compile(fullgraph=True) with a backend that returns the
graph's precomputed output, so a call is dynamo's frame entry, its guard checks and its input
collection only. Recorded per side: the guards installed (counted from TORCH_LOGS=guards) and
the thread CPU time per call (best of --repeats loops of 100 calls; thread time, so that other
processes on a loaded machine count less).

    BNB_LIBRARY_PATH=build/lib PYTHONPATH=<bitsandbytes' site dir> python bench/python/compile_guards.py
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf"))
from qlora_bench import side_env  # noqa: E402  (the two sides' environments, written once)

GUARD_LINE = re.compile(r"\+- [A-Z][A-Z_]+: ")


def worker(args):
    import time
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    import bitsandbytes

    torch.manual_seed(0)
    layers = []
    for _ in range(args.layers):
        layer = bitsandbytes.nn.Linear4bit(args.features, args.features, bias=False, compute_dtype=torch.bfloat16,
                                           quant_type="nf4", compress_statistics=True)
        layer.weight = bitsandbytes.nn.Params4bit(torch.randn(args.features, args.features, dtype=torch.bfloat16),
                                                  requires_grad=False, quant_type="nf4", compress_statistics=True)
        layers.append(layer)
    model = torch.nn.Sequential(*layers).to(args.device)
    x = torch.randn(1, args.features, dtype=torch.bfloat16, device=args.device)

    def backend(gm, inputs):
        out = gm.forward(*inputs)
        return lambda *a: out

    with torch.no_grad():
        model(x), model(x)
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        compiled(x), compiled(x)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.thread_time()
            for _ in range(100):
                compiled(x)
            best = min(best, (time.thread_time() - t0) / 100)
    return {"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__, "us_per_call": best * 1e6}


def run_side(side, args):
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--result", path, "--layers", str(args.layers),
           "--features", str(args.features), "--repeats", str(args.repeats), "--device", args.device]
    env = side_env(side)
    env["TORCH_LOGS"] = "guards"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    if r.returncode != 0:
        raise SystemExit(f"side {side} failed:\n{r.stderr[-3000:]}")
    out = json.load(open(path))
    os.unlink(path)
    out["guards"] = sum(1 for line in r.stderr.splitlines() if GUARD_LINE.search(line))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="bitsandbytes,bnb")
    ap.add_argument("--layers", type=int, default=154, help="4-bit layers (154: a 1.1 B Llama's 22 x 7)")
    ap.add_argument("--features", type=int, default=64, help="in = out features of each layer")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        json.dump(worker(args), open(args.result, "w"))
        return
    results = {side: run_side(side, args) for side in args.sides.split(",")}
    print(f"{args.layers} Linear4bit layers, torch.compile(fullgraph=True), guards and inputs only")
    print(f"{'side':14} {'version':16} {'guards':>8} {'per layer':>10} {'us / call':>10} {'us / layer':>11}")
    for side, r in results.items():
        print(f"{side:14} {r['bitsandbytes']:16} {r['guards']:8d} {r['guards'] / args.layers:10.1f} "
              f"{r['us_per_call']:10.1f} {r['us_per_call'] / args.layers:11.3f}")
    if args.json:
        json.dump({"args": vars(args), "results": results}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
