"""Before/after tables of scripts/gpu/ab_call.sh's JSON (its $OUT/ab.tgz unpacked into DIR): per case, the best of
the two rounds of each side, and after/before.

    python3 scripts/gpu/ab_table.py DIR > tables.md
"""
import glob
import json
import sys

d = sys.argv[1]
def load(bench, side):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{d}/{bench}_{side}_*.json"))]
specs = {
  "quant": (lambda r: (r["op"], r["dtype"], r["blocksize"]), "ms"),
  "optim": (lambda r: (r["case"], r["optimizer"]), "median_ms"),
  "gemm4": (lambda r: (r["M"], r["N"], r["K"], r["dtype"]), "us"),
  "int8": (lambda r: (r["M"], r["N"], r["K"]), "linear_ms"),
}
for bench, (key, field) in specs.items():
    b, a = load(bench, "before"), load(bench, "after")
    if not b: continue
    rows = lambda docs: [r for doc in docs for r in (doc.get("results") or doc.get("rows"))]
    best = lambda docs: {k: min(x[field] for x in rows(docs) if key(x) == k) for k in {key(x) for x in rows(docs)}}
    bb, aa = best(b), best(a)
    print(f"\n## {bench} ({field}, best of two rounds each)\n\n| case | before | after | after/before |\n|---|---:|---:|---:|")
    for k in sorted(bb, key=str):
        if k in aa:
            print(f"| {' '.join(map(str, k))} | {bb[k]:.4f} | {aa[k]:.4f} | {aa[k]/bb[k]:.3f} |")
