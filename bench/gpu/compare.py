#!/usr/bin/env python3
"""Side-by-side table of bnb_bench_gpu_quant and bench_bitsandbytes.py results (same GPU, same
run): prints it and writes a combined JSON and a Markdown table.

    python3 bench/gpu/compare.py bnb.json bitsandbytes.json --json out.json --md out.md
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('ours')
    ap.add_argument('theirs', nargs='?')
    ap.add_argument('--json', default='')
    ap.add_argument('--md', default='')
    args = ap.parse_args()
    ours = json.load(open(args.ours))
    theirs = json.load(open(args.theirs)) if args.theirs else {'results': []}
    key = lambda r: (r['op'], r['dtype'], r['blocksize'])
    tmap = {key(r): r for r in theirs['results']}
    rows = []
    for r in ours['results']:
        t = tmap.get(key(r))
        rows.append(dict(op=r['op'], dtype=r['dtype'], blocksize=r['blocksize'], bnb_ms=r['ms'], bnb_gbps=r['gbps'],
                         bnb_pct_copy=r['pct_copy'], bitsandbytes_ms=t['ms'] if t else None,
                         bitsandbytes_gbps=t['gbps'] if t else None,
                         bitsandbytes_pct_copy=t['pct_copy'] if t else None,
                         speedup=(t['ms'] / r['ms']) if t else None))
    head = '| op | dtype | bs | bnb ms | bnb GB/s | bnb % copy | bitsandbytes ms | bitsandbytes GB/s | ' \
           'bitsandbytes % copy | speed-up |'
    lines = [head, '|' + '---|' * 10]
    fmt = lambda v, f: (f % v) if v is not None else '-'
    for x in rows:
        lines.append(f"| {x['op']} | {x['dtype']} | {x['blocksize']} | {x['bnb_ms']:.4f} | {x['bnb_gbps']:.0f} | "
                     f"{x['bnb_pct_copy']:.1f} | {fmt(x['bitsandbytes_ms'], '%.4f')} | "
                     f"{fmt(x['bitsandbytes_gbps'], '%.0f')} | {fmt(x['bitsandbytes_pct_copy'], '%.1f')} | "
                     f"{fmt(x['speedup'], '%.2fx')} |")
    title = (f"device: {ours.get('device')}, n = {ours.get('n')}, median of {ours.get('reps')}; "
             f"bitsandbytes {theirs.get('version', '-')}, torch {theirs.get('torch', '-')}")
    print(title)
    print('\n'.join(lines))
    if args.json:
        json.dump(dict(title=title, bnb=ours, bitsandbytes=theirs, rows=rows), open(args.json, 'w'), indent=1)
    if args.md:
        open(args.md, 'w').write(title + '\n\n' + '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
