#!/usr/bin/env python3
"""Host model of the GPU's bucketed 8-bit code selection (src/gpu/quant_kernels.cuh), checked
against the reference's 7-step search (docs/FORMATS.md §2.3) at every midpoint +-2 ulp and on random
values, for the signed/unsigned dynamic maps and a linear map. Costs no device time."""
import struct
import sys

import numpy as np

sys.path.insert(0, '.')
f32 = np.float32


def tables():
    src = open('src/common/tables.h').read()
    out = {}
    for name in ('BNB_DYNAMIC_SIGNED_BITS', 'BNB_DYNAMIC_UNSIGNED_BITS'):
        body = src[src.index(name):]
        body = body[body.index('{') + 1:body.index('}')]
        bits = [int(t, 16) for t in body.replace('\n', ' ').split(',') if t.strip()]
        out[name] = np.array(bits, dtype=np.uint32).view(np.float32)
    return out


def search7(x, c):
    p, lo_i, hi_i, lo_v, hi_v = 127, 0, 255, f32(-1), f32(1)
    v = c[127]
    for s in (64, 32, 16, 8, 4, 2, 1):
        if x > v:
            lo_i, lo_v, p = p, v, p + s
        else:
            hi_i, hi_v, p = p, v, p - s
        v = c[p]
    if hi_i == 255:
        hi_v = c[255]
    if lo_i == 0:
        lo_v = c[0]
    if x > v:
        return hi_i if x > f32(f32(hi_v + v) * f32(0.5)) else p
    return lo_i if x < f32(f32(lo_v + v) * f32(0.5)) else p


MAG = 1 + 25 * 64 + 1
NB = 2 * MAG


def fbits(u):
    return np.array([u], dtype=np.uint32).view(np.float32)[0]


def start_bits(mb):
    return 0 if mb == 0 else (mb - 1 + 103 * 64) << 17


def end_bits(mb):
    return 0x7f800000 if mb == MAG - 1 else start_bits(mb + 1) - 1


def build(c):
    mid = np.empty(256, np.float32)
    for j in range(255):
        mid[j] = f32(f32(c[j] + c[j + 1]) * f32(0.5))
    mid[255] = np.inf
    buckets = []
    for b in range(NB):
        if b >= MAG:
            lo_v, hi_v = fbits(start_bits(b - MAG)), fbits(end_bits(b - MAG))
        else:
            mb = MAG - 1 - b
            lo_v, hi_v = -fbits(end_bits(mb)), -fbits(start_bits(mb))
        lo = min(int(np.sum(mid < lo_v)), 255)
        hi = min(int(np.sum(mid <= hi_v)), 255)
        m_lo = mid[lo] if lo < 255 else np.float32(np.nan)
        buckets.append((lo, hi - lo, m_lo))
    return mid, buckets


def bucket_of(x):
    b = int(np.array([x], np.float32).view(np.uint32)[0])
    mag = ((b >> 17) & 0x3fff) - (103 * 64 - 1)
    mag = min(max(mag, 0), MAG - 1)
    neg = -1 if b >> 31 else 0
    return MAG + (mag ^ neg)


def fast(x, mid, buckets):
    lo, inside, m_lo = buckets[bucket_of(x)]
    if inside <= 1:
        q = lo + (1 if x > m_lo else 0) + ((lo & 1) if x == m_lo else 0)
    else:
        hi = lo + inside
        q, m = lo, m_lo
        while q < hi and x > m:
            q += 1
            m = mid[q]
        if q < hi and x == m:
            q += q & 1
    return q if x == x else 0


def main():
    rng = np.random.default_rng(1)
    maps = tables()
    maps['linear'] = np.linspace(-1, 1, 256).astype(np.float32)
    bad = 0
    for name, c in maps.items():
        mid, buckets = build(c)
        multi = sum(1 for b in buckets if b[1] >= 2)
        xs = []
        for m in mid[:255]:
            u = int(np.array([m], np.float32).view(np.uint32)[0])
            for d in (-2, -1, 0, 1, 2):
                xs.append(fbits((u + d) & 0xffffffff))
        xs += list(rng.uniform(-1.01, 1.01, 20000).astype(np.float32))
        xs += list((rng.standard_normal(20000) * 1e-3).astype(np.float32))
        xs += [f32(0), f32(-0.0), f32(np.nan), f32(np.inf), f32(-np.inf), f32(1), f32(-1), f32(3)]
        for x in xs:
            a, b = search7(x, c), fast(x, mid, buckets)
            if a != b:
                bad += 1
                if bad < 10:
                    print(name, repr(x), a, b)
        print(f'{name}: {len(xs)} values, buckets with >=2 midpoints: {multi}')
    print('mismatches:', bad)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
