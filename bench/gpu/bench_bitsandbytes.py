#!/usr/bin/env python3
"""The same measurements as bnb_bench_gpu_quant, made on bitsandbytes itself (torch + its CUDA
library) on the same GPU, for a side-by-side table. CUDA events, median of repeated runs, bytes =
each input read once + each output written once (the same formulas as bench_quant.cc).

    python3 bench/gpu/bench_bitsandbytes.py [--n 268435456] [--reps 30] [--json out.json]
"""
import argparse
import json
import statistics

import torch


def time_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=1 << 28)
    ap.add_argument('--reps', type=int, default=30)
    ap.add_argument('--json', default='')
    args = ap.parse_args()

    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    n, reps = args.n, args.reps
    dev = torch.device('cuda')
    results = []
    src = torch.randn(n, device=dev, dtype=torch.float16)
    dst = torch.empty_like(src)
    copy_ms = time_ms(lambda: dst.copy_(src), reps)
    copy_gbps = 2.0 * n * 2 / (copy_ms * 1e-3) / 1e9
    results.append(dict(op='device_copy', dtype='-', blocksize=0, bytes=4.0 * n, ms=copy_ms, gbps=copy_gbps,
                        pct_copy=100.0))

    def add(op, dtype, bs, nbytes, fn):
        ms = time_ms(fn, reps)
        gbps = nbytes / (ms * 1e-3) / 1e9
        results.append(dict(op=op, dtype=dtype, blocksize=bs, bytes=nbytes, ms=ms, gbps=gbps,
                            pct_copy=100.0 * gbps / copy_gbps))

    for tdtype, dname in ((torch.float16, 'fp16'), (torch.bfloat16, 'bf16')):
        A = torch.randn(n, device=dev, dtype=tdtype)
        inb = 2.0 * n
        for bs in (256, 4096):
            nb = (n + bs - 1) // bs
            add('quantize_blockwise', dname, bs, inb + n + nb * 4.0,
                lambda: F.quantize_blockwise(A, blocksize=bs))
            q, st = F.quantize_blockwise(A, blocksize=bs)
            add('dequantize_blockwise', dname, bs, n + nb * 4.0 + inb,
                lambda: F.dequantize_blockwise(q, st))
        bs = 64
        nb = (n + bs - 1) // bs
        for qt in ('nf4', 'fp4'):
            add(f'quantize_4bit_{qt}', dname, bs, inb + n / 2.0 + nb * 4.0,
                lambda: F.quantize_4bit(A, blocksize=bs, quant_type=qt))
        q4, st4 = F.quantize_4bit(A, blocksize=bs, quant_type='nf4')
        add('dequantize_4bit_nf4', dname, bs, n / 2.0 + nb * 4.0 + inb, lambda: F.dequantize_4bit(q4, st4))
        q4n, st4n = F.quantize_4bit(A, blocksize=bs, quant_type='nf4', compress_statistics=True)
        add('dequantize_4bit_nf4_nested', dname, bs, n / 2.0 + nb + (nb + 255) // 256 * 4.0 + 4 + inb,
            lambda: F.dequantize_4bit(q4n, st4n))
        del A, q, st, q4, st4, q4n, st4n
        torch.cuda.empty_cache()

    name = torch.cuda.get_device_name(0)
    print(f'bitsandbytes {bnb.__version__}, torch {torch.__version__}, {name}, n = {n}, median of {reps}')
    print(f"{'op':28s} {'dtype':5s} {'bs':>6s} {'ms':>10s} {'GB/s':>10s} {'%copy':>8s}")
    for r in results:
        print(f"{r['op']:28s} {r['dtype']:5s} {r['blocksize']:6d} {r['ms']:10.4f} {r['gbps']:10.1f} "
              f"{r['pct_copy']:7.1f}%")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(impl='bitsandbytes', version=bnb.__version__, torch=torch.__version__, device=name,
                           n=n, reps=reps, results=results), f, indent=1)


if __name__ == '__main__':
    main()
