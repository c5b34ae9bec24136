#!/usr/bin/env python3
"""One QLoRA layer step, side by side: real bitsandbytes and bnb's bitsandbytes layer (issue 19).

The layer is a Llama-7B MLP, down(silu(gate(x)) * up(x)) with gate/up 4096 -> 11008 and down
11008 -> 4096, each a frozen `bitsandbytes.nn.Linear4bit` (NF4, blocksize 64, nested statistics,
bf16 compute) plus a LoRA adapter of rank 16 (x @ A^T @ B^T * 2, A and B trainable). One step is
the forward and the backward of --tokens tokens (default 4096): the gradients of the input, A and
B, through the frozen 4-bit weights (so the backward multiplies by W, the transposed product).
The same code runs in one subprocess per side:
  bitsandbytes  the installed bitsandbytes package (the real one; the run stops if it is bnb's layer)
  bnb           this repository's compat package (bench/hf/qlora_bench.py's side_env: first on
                sys.path, BNB_COMPAT_SHADOW=1; BNB_LIBRARY_PATH=<build>/lib for a build tree)
and a third, `dense`, the same layer on bf16 nn.Linear weights (for scale; it needs neither).
Weights, adapters, input and output gradient come from fixed seeds, so the sides compute the same
step: the parent checks that their output and input-gradient norms agree within 1 % (the 4-bit
formats are bit-exact; the products' summation order differs).

Per side: the median step time over --iters synchronised steps after --warmup, GPU time through
CUDA events; peak memory. Issue 19's target: bnb at least 1.25x faster than bitsandbytes.

    python bench/python/qlora_layer.py [--tokens 4096] [--json bench/results/qlora_layer_<card>.json]
    python bench/python/qlora_layer.py --tiny --device cpu --sides bnb,dense     # smoke check
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "bench", "hf"))
from qlora_bench import side_env  # noqa: E402  (the two 4-bit sides' environments, written once)

SIDES = ("bitsandbytes", "bnb", "dense")
FULL = dict(hidden=4096, intermediate=11008)
TINY = dict(hidden=64, intermediate=128)
RANK, ALPHA = 16, 32


def build_layer(args, torch):
    """(forward(x) -> y, trainable parameters): the MLP of this side on args.device."""
    sizes = TINY if args.tiny else FULL
    h, f = sizes["hidden"], sizes["intermediate"]
    gen = torch.Generator().manual_seed(0)
    shapes = {"gate": (f, h), "up": (f, h), "down": (h, f)}
    weights = {k: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16) for k, s in shapes.items()}
    lora = {k: (torch.randn(RANK, s[1], generator=gen) * 0.01, torch.randn(s[0], RANK, generator=gen) * 0.01)
            for k, s in shapes.items()}
    dev = args.device
    if args.worker == "dense":
        bases = {}
        for k, w in weights.items():
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=torch.bfloat16)
            lin.weight.data.copy_(w)
            lin.weight.requires_grad_(False)
            bases[k] = lin.to(dev)
    else:
        import bitsandbytes

        is_layer = str(bitsandbytes.__version__).endswith("+bnb")
        if is_layer != (args.worker == "bnb"):
            raise SystemExit(f"side {args.worker}: `import bitsandbytes` found {bitsandbytes.__version__} at "
                             f"{bitsandbytes.__file__}, which is not this side's package")
        bases = {}
        for k, w in weights.items():
            lin = bitsandbytes.nn.Linear4bit(w.shape[1], w.shape[0], bias=False, compute_dtype=torch.bfloat16,
                                             quant_type="nf4", compress_statistics=True)
            lin.weight = bitsandbytes.nn.Params4bit(w, requires_grad=False, quant_type="nf4",
                                                    compress_statistics=True)
            bases[k] = lin.to(dev)  # quantizes on the way
    params = []
    adapters = {}
    for k, (a, b) in lora.items():
        a = a.to(dev, torch.bfloat16).requires_grad_(True)
        b = b.to(dev, torch.bfloat16).requires_grad_(True)
        adapters[k] = (a, b)
        params += [a, b]
    scale = ALPHA / RANK

    def proj(k, x):
        a, b = adapters[k]
        return bases[k](x) + (x @ a.t()) @ b.t() * scale

    def forward(x):
        return proj("down", torch.nn.functional.silu(proj("gate", x)) * proj("up", x))

    return forward, params, h


def run_side(args):
    import torch

    forward, params, h = build_layer(args, torch)
    dev = args.device
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(args.tokens, h, generator=gen)).to(dev, torch.bfloat16).requires_grad_(True)
    dy = (torch.randn(args.tokens, h, generator=gen) * 0.01).to(dev, torch.bfloat16)
    cuda = dev.startswith("cuda")

    def step():
        for p in params + [x]:
            p.grad = None
        y = forward(x)
        y.backward(dy)
        return y

    for _ in range(args.warmup):
        y = step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        if cuda:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            y = step()
            t1.record()
            torch.cuda.synchronize()
            times.append(t0.elapsed_time(t1))
        else:
            s = time.perf_counter()
            y = step()
            times.append((time.perf_counter() - s) * 1e3)
    out = {"side": args.worker, "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "step_ms": times, "step_ms_median": statistics.median(times),
           "y_norm": float(y.detach().float().norm()), "grad_x_norm": float(x.grad.float().norm()),
           "grad_lora_norm": float(sum(p.grad.float().norm() ** 2 for p in params) ** 0.5)}
    if cuda:
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    if args.worker != "dense":
        import bitsandbytes

        out["bitsandbytes"] = bitsandbytes.__version__
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--tiny", action="store_true", help="hidden 64, intermediate 128 (a smoke check)")
    ap.add_argument("--json", help="result file (default: none)")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tokens is None:
        args.tokens = 32 if args.tiny else 4096
    if args.worker:
        with open(args.result, "w") as f:
            json.dump(run_side(args), f)
        return

    results = {}
    for side in args.sides.split(","):
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--result", path, "--tokens",
               str(args.tokens), "--iters", str(args.iters), "--warmup", str(args.warmup), "--device", args.device]
        cmd += ["--tiny"] * args.tiny
        env = side_env(side) if side != "dense" else dict(os.environ)
        r = subprocess.run(cmd, env=env, cwd=os.path.dirname(REPO))
        if r.returncode != 0:
            raise SystemExit(f"side {side} failed (exit {r.returncode})")
        results[side] = json.load(open(path))
        os.unlink(path)

    sizes = TINY if args.tiny else FULL
    print(f"QLoRA MLP step (hidden {sizes['hidden']}, intermediate {sizes['intermediate']}, LoRA r={RANK}, "
          f"{args.tokens} tokens, bf16, NF4 bs64 nested), median of {args.iters} on {args.device}")
    print(f"{'side':14s} {'step ms':>9s} {'peak GiB':>9s} {'|y|':>10s} {'|dx|':>10s} {'|dLoRA|':>10s}")
    for side, r in results.items():
        peak = r.get("peak_memory_bytes")
        print(f"{side:14s} {r['step_ms_median']:9.3f} {peak / 2**30 if peak else float('nan'):9.3f} "
              f"{r['y_norm']:10.4g} {r['grad_x_norm']:10.4g} {r['grad_lora_norm']:10.4g}")
    comparison = {}
    a, b = results.get("bitsandbytes"), results.get("bnb")
    if a and b:
        comparison["speedup_vs_bitsandbytes"] = a["step_ms_median"] / b["step_ms_median"]
        comparison["at_least_1.25x"] = comparison["speedup_vs_bitsandbytes"] >= 1.25
        comparison["norms_agree_within_1pct"] = all(
            abs(a[k] - b[k]) <= 0.01 * abs(a[k]) for k in ("y_norm", "grad_x_norm", "grad_lora_norm"))
    if b and results.get("dense"):
        comparison["bnb_vs_dense_bf16"] = results["dense"]["step_ms_median"] / b["step_ms_median"]
    for k, v in comparison.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bench": "bench/python/qlora_layer.py", "tokens": args.tokens, "sizes": sizes, "rank": RANK,
                       "iters": args.iters, "sides": results, "comparison": comparison}, f, indent=1)
        print(f"wrote {args.json}")
    if comparison.get("norms_agree_within_1pct") is False:
        raise SystemExit("the two sides computed different steps (norms differ by more than 1 %)")


if __name__ == "__main__":
    main()
