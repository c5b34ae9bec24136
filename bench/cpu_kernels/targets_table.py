"""The CPU quantization ops on each SIMD target of this machine (issue 21's per-target table).

Runs `bnb bench --backend cpu --dtype DTYPE --threads T` once per BNB_CPU_MAX_TARGET cap (the
plugin picks its target when it loads, so each cap is its own process), prints GB/s per op and
target, and writes the rows and the machine's lscpu to JSON.

    python3 bench/cpu_kernels/targets_table.py [--bnb build/bin/bnb] [--dtype f32] [--threads 2]
        [--caps none,avx3,avx2,sse4,emu128] [--json bench/results/cpu_targets_<dtype>.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def run(bnb, cap, dtype, threads):
    env = dict(os.environ)
    env.pop("BNB_CPU_MAX_TARGET", None)
    if cap != "none":
        env["BNB_CPU_MAX_TARGET"] = cap
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        r = subprocess.run([bnb, "bench", "--backend", "cpu", "--dtype", dtype, "--threads", str(threads), "--json",
                            f.name], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bnb bench with BNB_CPU_MAX_TARGET={cap} failed:\n{r.stdout}{r.stderr}")
        return json.load(open(f.name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bnb", default=os.path.join(REPO, "build", "bin", "bnb"))
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--caps", default="none,avx3,avx2,sse4,emu128")
    ap.add_argument("--json")
    args = ap.parse_args()
    results = {}
    for cap in args.caps.split(","):
        d = run(args.bnb, cap, args.dtype, args.threads)
        simd = d["detail"].split("simd: ", 1)[1].split(";", 1)[0]
        results[cap] = {"simd": simd, "copy_gbps": d["copy_gbps"], "rows": d["rows"]}
    caps = list(results)
    ops = [(r["op"], r["dtype"], r["blocksize"]) for r in results[caps[0]]["rows"]]
    print(f"bnb bench --backend cpu --dtype {args.dtype} --threads {args.threads}, GB/s (median of 10) per target")
    print(f"{'op':28s} {'dtype':5s} {'bs':>5s} " + " ".join(f"{results[c]['simd'][:14]:>14s}" for c in caps))
    print(f"{'copy':28s} {'':5s} {'':>5s} " + " ".join(f"{results[c]['copy_gbps']:14.1f}" for c in caps))
    for i, (op, dt, bs) in enumerate(ops):
        print(f"{op:28s} {dt:5s} {bs:5d} " + " ".join(f"{results[c]['rows'][i]['gbps']:14.1f}" for c in caps))
    if args.json:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "dtype": args.dtype, "threads": args.threads, "targets": results,
                       "lscpu": lscpu}, f, indent=1)


if __name__ == "__main__":
    main()
