#!/usr/bin/env python3
"""Records what bitsandbytes' CUDA kernels give for NaN and ±inf inputs, as golden cases, and
compares bnb (its CUDA and CPU backends) with them in the same run.

Issue 17 asks that non-finite input give what the reference gives, since checkpoints must agree.
The recording is a second golden manifest, tests/data/golden/nonfinite.json, in the layout of
tests/data/golden/README.md (arrays under data/, gzip -9 -n each); tests/unit/test_golden.cc
reads it beside manifest.json.

On the device (run tool, carry [".gpu_carry"], after scripts/gpu/full.sh build here, which unpacks
the bitsandbytes wheel into .gpu_carry/site):
    PYTHONPATH=.gpu_carry/site:bindings/python BNB_LIBRARY_PATH=.gpu_carry/lib \
        python3 scripts/gpu/record_nonfinite.py --out $OUT/nonfinite
Then here: copy the folder's manifest and data into tests/data/golden (nonfinite.json, data/nf_*).

The inputs are built here from a fixed seed: normal data in which chosen blocks hold a NaN, +inf,
-inf, all NaN, NaN beside inf, both infinities, all +inf, zeros with a NaN, and -0.0 with a NaN.
"""

import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def planted(n, block, seed):
    """n normal values; the first blocks of `block` elements get the non-finite patterns."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n).astype(np.float32)
    nan, inf = np.float32("nan"), np.float32("inf")
    patterns = [
        lambda b: b.__setitem__(5 % len(b), nan),
        lambda b: b.__setitem__(10 % len(b), inf),
        lambda b: b.__setitem__(3 % len(b), -inf),
        lambda b: b.fill(nan),
        lambda b: (b.__setitem__(1, nan), b.__setitem__(2, inf)),
        lambda b: (b.fill(0.0), b.__setitem__(7 % len(b), nan)),
        lambda b: (b.__setitem__(0, inf), b.__setitem__(len(b) - 1, -inf)),
        lambda b: b.fill(inf),
        lambda b: (b.fill(-0.0), b.__setitem__(4 % len(b), nan)),
    ]
    for i, p in enumerate(patterns):
        if (i + 1) * block <= n:
            p(a[i * block:(i + 1) * block])
    return a


def to_np(t):
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    return t.numpy(), str(t.dtype).replace("torch.", "")


class Writer:
    def __init__(self, out, backend):
        self.out, self.backend, self.count, self.cases = out, backend, 0, []
        os.makedirs(os.path.join(out, "data"), exist_ok=True)

    def array(self, name, t):
        arr, dtype = to_np(t) if isinstance(t, torch.Tensor) else (t, str(t.dtype))
        self.count += 1
        rel = f"data/nf_{self.count:04d}_{name}.bin"
        with open(os.path.join(self.out, rel + ".gz"), "wb") as f:
            # gzip -9 -n: no name, no time stamp
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0, filename="") as g:
                g.write(np.ascontiguousarray(arr).tobytes())
        return {"file": rel, "dtype": dtype, "shape": list(arr.shape)}

    def case(self, op, params, inputs, outputs, note):
        self.cases.append({"op": op, "backend": self.backend, "params": params,
                           "inputs": {k: self.array(k, v) for k, v in inputs.items()},
                           "outputs": {k: self.array(k, v) for k, v in outputs.items()}, "note": note})


def same(a, b):
    """Element count where two arrays differ, NaN matching NaN (payload and sign free)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    if a.dtype.kind == "f":
        both_nan = np.isnan(a) & np.isnan(b)
        return int(np.count_nonzero((a.view(f"u{a.itemsize}") != b.view(f"u{b.itemsize}")) & ~both_nan))
    return int(np.count_nonzero(a != b))


def f32(t):
    return t.detach().float().cpu().numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-bnb", action="store_true", help="record only")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script on the reference's CPU path")
    args = ap.parse_args()
    import bitsandbytes as bb
    import bitsandbytes.functional as F
    bnb = None
    if not args.no_bnb:
        import bnb
    dev = args.device
    wheres = ("cuda", "cpu") if dev == "cuda" else ("cpu",)
    w = Writer(args.out, dev)
    report = []

    def compare(label, ref, ours):
        diffs = {k: same(ref[k], ours[k]) for k in ref}
        report.append((label, diffs))

    # 8-bit blockwise, signed dynamic map
    for dtype in DTYPES:
        for bs in (64, 256):
            n = 9 * 256 + 37
            A = torch.from_numpy(planted(n, bs, 1700 + bs)).to(DTYPES[dtype]).to(dev)
            q, st = F.quantize_blockwise(A, blocksize=bs)
            deq = F.dequantize_blockwise(q, st)
            w.case("quantize_blockwise", {"blocksize": bs, "code": "dynamic_signed", "n": n}, {"A": A},
                   {"q": q, "absmax": st.absmax, "dequant": deq}, "non-finite input")
            if bnb:
                for where in wheres:
                    Ad = A.to(where)
                    q2, st2 = bnb.quantize_blockwise(Ad, blocksize=bs)
                    d2 = bnb.dequantize_blockwise(q.to(where), absmax=st.absmax.to(where), blocksize=bs, dtype=A.dtype)
                    compare(f"blockwise {dtype} bs{bs} {where}",
                            {"q": q.cpu().numpy(), "absmax": f32(st.absmax), "dequant": f32(deq)},
                            {"q": q2.cpu().numpy().reshape(-1), "absmax": f32(st2.absmax), "dequant": f32(d2)})
    # 4-bit, plain and nested statistics
    for dtype in DTYPES:
        for qt in ("nf4", "fp4"):
            for bs, nested in ((64, False), (256, False), (64, True)):
                n = (300 if nested else 9) * bs + 37
                A = torch.from_numpy(planted(n, bs, 1900 + bs)).to(DTYPES[dtype]).to(dev)
                packed, st = F.quantize_4bit(A, blocksize=bs, quant_type=qt, compress_statistics=nested)
                deq = F.dequantize_4bit(packed, st)
                params = {"blocksize": bs, "quant_type": qt, "n": n}
                if nested:
                    params["nested_blocksize"] = st.state2.blocksize
                    outs = {"packed": packed, "absmax_q": st.absmax, "absmax_offset": st.offset.reshape(1),
                            "absmax_absmax": st.state2.absmax, "dequant": deq}
                    w.case("quantize_4bit_nested", params, {"A": A}, outs, "non-finite input")
                else:
                    w.case("quantize_4bit", params, {"A": A}, {"packed": packed, "absmax": st.absmax, "dequant": deq},
                           "non-finite input")
                if bnb:
                    for where in wheres:
                        Ad = A.to(where)
                        p2, st2 = bnb.quantize_4bit(Ad, blocksize=bs, quant_type=qt, compress_statistics=nested)
                        d2 = bnb.dequantize_4bit(p2, st2)
                        ref = {"packed": packed.cpu().numpy().reshape(-1), "dequant": f32(deq)}
                        ours = {"packed": p2.cpu().numpy().reshape(-1), "dequant": f32(d2)}
                        if nested:
                            ref.update(absmax_q=st.absmax.cpu().numpy(), offset=f32(st.offset.reshape(1)))
                            ours.update(absmax_q=st2.absmax.cpu().numpy().reshape(-1),
                                        offset=f32(torch.as_tensor(st2.offset).reshape(1)))
                        else:
                            ref["absmax"], ours["absmax"] = f32(st.absmax), f32(st2.absmax)
                        compare(f"4bit {qt} {dtype} bs{bs}{' nested' if nested else ''} {where}", ref, ours)
    # LLM.int8 row-wise quantization
    for dtype in ("float16", "bfloat16", "float32"):
        rows, cols = 12, 96
        flat = planted(rows * cols, cols, 2100)
        flat[9 * cols + 11] = 7.5     # an outlier beside finite data
        A = torch.from_numpy(flat.reshape(rows, cols)).to(DTYPES[dtype]).to(dev)
        for thr in (0.0, 6.0):
            try:
                CA, stats, cols_out = F.int8_vectorwise_quant(A, threshold=thr)
            except Exception as e:  # the reference may refuse a dtype
                report.append((f"int8 {dtype} thr{thr}", {"reference raised": repr(e)[:120]}))
                continue
            outs = {"q": CA, "row_stats": stats}
            if cols_out is not None:
                outs["outlier_cols"] = cols_out.to(torch.int32)
            w.case("int8_vectorwise_quant", {"threshold": thr, "rows": rows, "cols": cols}, {"A": A}, outs,
                   "non-finite input")
            if bnb:
                for where in wheres:
                    q2, s2, c2 = bnb.int8_vectorwise_quant(A.to(where), threshold=thr)
                    ref = {"q": CA.cpu().numpy(), "row_stats": f32(stats)}
                    ours = {"q": q2.cpu().numpy(), "row_stats": f32(s2)}
                    if cols_out is not None:
                        ref["outlier_cols"] = np.sort(cols_out.cpu().numpy().astype(np.int32))
                        ours["outlier_cols"] = (np.sort(np.asarray(c2.cpu()).astype(np.int32)) if c2 is not None
                                                else np.zeros(0, np.int32))
                    compare(f"int8 {dtype} thr{thr} {where}", ref, ours)

    # A short last block that is all NaN: its padding's zeros count (absmax 0), unlike a whole block.
    for dtype, bs, tail in (("float32", 256, 37), ("bfloat16", 4096, 1000)):
        a = planted(3 * bs, bs, 2300 + bs)
        A = torch.from_numpy(np.concatenate([a, np.full(tail, np.nan, np.float32)])).to(DTYPES[dtype]).to(dev)
        q, st = F.quantize_blockwise(A, blocksize=bs)
        deq = F.dequantize_blockwise(q, st)
        w.case("quantize_blockwise", {"blocksize": bs, "code": "dynamic_signed", "n": A.numel()}, {"A": A},
               {"q": q, "absmax": st.absmax, "dequant": deq}, "non-finite input, short all-NaN last block")
        if bnb:
            for where in wheres:
                q2, st2 = bnb.quantize_blockwise(A.to(where), blocksize=bs)
                compare(f"blockwise {dtype} bs{bs} short NaN tail {where}", {"q": q.cpu().numpy(), "absmax": f32(st.absmax)},
                        {"q": q2.cpu().numpy().reshape(-1), "absmax": f32(st2.absmax)})
    for qt in ("nf4", "fp4"):
        a = planted(3 * 64, 64, 2400)
        A = torch.from_numpy(np.concatenate([a, np.full(37, np.nan, np.float32)])).to(dev)
        packed, st = F.quantize_4bit(A, blocksize=64, quant_type=qt)
        deq = F.dequantize_4bit(packed, st)
        w.case("quantize_4bit", {"blocksize": 64, "quant_type": qt, "n": A.numel()}, {"A": A},
               {"packed": packed, "absmax": st.absmax, "dequant": deq}, "non-finite input, short all-NaN last block")
        if bnb:
            for where in wheres:
                p2, st2 = bnb.quantize_4bit(A.to(where), blocksize=64, quant_type=qt)
                compare(f"4bit {qt} short NaN tail {where}", {"packed": packed.cpu().numpy().reshape(-1), "absmax": f32(st.absmax)},
                        {"packed": p2.cpu().numpy().reshape(-1), "absmax": f32(st2.absmax)})

    import bitsandbytes
    manifest = {"reference": f"bitsandbytes {bitsandbytes.__version__}", "torch": torch.__version__,
                "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "cases": w.cases,
                "note": "non-finite inputs (scripts/gpu/record_nonfinite.py)"}
    with open(os.path.join(args.out, "nonfinite.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    bad = 0
    for label, diffs in report:
        ok = all(v == 0 for v in diffs.values())
        bad += not ok
        print(f"{'ok  ' if ok else 'DIFF'} {label}: {diffs}")
    print(f"{len(w.cases)} cases recorded; bnb differs from the reference in {bad} of {len(report)} comparisons")


if __name__ == "__main__":
    sys.exit(main())
