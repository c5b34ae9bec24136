"""Optimizer steps through torch, side by side: bnb.optim (this library's Python binding),
bitsandbytes.optim and torch.optim (fused AdamW), on the same GPU, parameters and gradients.

Cases (issue 6): a 1.08 B-parameter model as 24 fp32 tensors of 4096 x 11008, and 1000 tensors of
65536; AdamW 8-bit, Lion 8-bit, AdamW 32-bit. One step = optimizer.step() over every parameter;
GPU time of `--steps` consecutive steps from CUDA events (after 3 warm-up steps), per step, median
of `--repeats`. Host-bound cases (many small tensors) show their Python cost in that time too.

    python bench/optim/bench_torch_optim.py [--json out.json] [--impls bnb,bitsandbytes,torch]
    (bitsandbytes from PYTHONPATH; an implementation that cannot be imported is skipped)
"""

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
if os.environ.get("BNB_LIBRARY_PATH"):
    sys.path.insert(0, os.path.join(REPO, "bindings", "python"))

import torch  # noqa: E402

CONFIGS = [
    # name, bits, kind, kwargs
    ("AdamW 8-bit", 8, "adamw", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
    ("Lion 8-bit", 8, "lion", dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.01)),
    ("AdamW 32-bit", 32, "adamw", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
]
CASES = [("1.08B (24x4096x11008)", 24, (4096, 11008)), ("1000 x 65536", 1000, (65536,))]


def make_optimizer(impl, kind, bits, params, kw):
    if impl == "bnb":
        import bnb

        cls = {("adamw", 8): bnb.optim.AdamW8bit, ("adamw", 32): bnb.optim.AdamW32bit,
               ("lion", 8): bnb.optim.Lion8bit, ("lion", 32): bnb.optim.Lion32bit}[(kind, bits)]
        return cls(params, **kw)
    if impl == "bitsandbytes":
        import bitsandbytes

        cls = {("adamw", 8): bitsandbytes.optim.AdamW8bit, ("adamw", 32): bitsandbytes.optim.AdamW32bit,
               ("lion", 8): bitsandbytes.optim.Lion8bit, ("lion", 32): bitsandbytes.optim.Lion32bit}[(kind, bits)]
        return cls(params, **kw)
    if impl == "torch":
        if bits != 32 or kind != "adamw":
            return None  # torch has no 8-bit state and no Lion
        return torch.optim.AdamW(params, fused=True, **kw)
    raise ValueError(impl)


def time_steps(opt, steps, repeats):
    for _ in range(3):
        opt.step()
    torch.cuda.synchronize()
    per_step = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            opt.step()
        end.record()
        end.synchronize()
        per_step.append(start.elapsed_time(end) / steps)
    return statistics.median(per_step)


def state_bytes_per_param(bits):
    return 2 if bits == 8 else 8  # two states of one byte (plus 1/64 absmax) or two float32


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impls", default="bnb,bitsandbytes,torch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to time")
        return 0
    impls = []
    for impl in args.impls.split(","):
        try:
            if impl == "bnb":
                import bnb  # noqa: F401
            elif impl == "bitsandbytes":
                import bitsandbytes  # noqa: F401
            impls.append(impl)
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"skipping {impl}: {e}")
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    print(f"{'case':24} {'optimizer':14} {'impl':13} {'ms/step':>9} {'GB/s':>8}")
    results = []
    for case, count, shape in CASES:
        gen = torch.Generator(device=dev).manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(shape, device=dev, generator=gen)) for _ in range(count)]
        for p in params:
            p.grad = torch.randn(shape, device=dev, generator=gen) * 0.01
        n = sum(p.numel() for p in params)
        for name, bits, kind, kw in CONFIGS:
            for impl in impls:
                opt = make_optimizer(impl, kind, bits, params, kw)
                if opt is None:
                    continue
                ms = time_steps(opt, args.steps, args.repeats)
                two = kind == "adamw"
                traffic = n * (4 * 3 + (state_bytes_per_param(bits) if two else state_bytes_per_param(bits) // 2) * 2)
                gbps = traffic / (ms * 1e-3) / 1e9
                print(f"{case:24} {name:14} {impl:13} {ms:9.3f} {gbps:8.1f}", flush=True)
                results.append({"case": case, "tensors": count, "params": n, "optimizer": name, "impl": impl,
                                "ms_per_step": round(ms, 4), "traffic_gbps": round(gbps, 1)})
                del opt
                torch.cuda.empty_cache()
        del params
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "torch_optimizer_step", "device": torch.cuda.get_device_name(dev),
                       "torch": torch.__version__, "results": results}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
