"""Independent numpy references of the formats (docs/FORMATS.md §2-4), written from the spec, not from
the library: used to check the binding's results on random data."""

import numpy as np


def f32(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


NF4_BITS = [0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
            0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000]
FP4_BITS = [0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000,
            0x00000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000]
NF4_THRESHOLDS = f32([0xbf591cd8, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc, 0xbd3a7871,
                      0x3d22faff, 0x3df64862, 0x3e5067e0, 0x3e9582d4, 0x3ec753f9, 0x3f006d04, 0x3f248daf,
                      0x3f5c89da])
FP4_THRESHOLDS = f32([0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555, 0x3ed55556, 0x3f155550, 0x3f555555])
FP4_PATTERN = np.array([0, 1, 6, 7, 4, 5, 2, 3], dtype=np.uint8)


def nf4_table():
    return f32(NF4_BITS)


def fp4_table():
    return f32(FP4_BITS)


def fp4_decode_table():
    t = fp4_table().copy()
    t[8] = -0.0  # the decoder applies bit 3 as a sign (docs/FORMATS.md §3.6)
    return t


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def _blocks(x, blocksize):
    n = x.size
    nb = -(-n // blocksize)
    padded = np.zeros(nb * blocksize, dtype=np.float32)
    padded[:n] = x
    return padded.reshape(nb, blocksize), nb


def absmax_ref(x, blocksize):
    """NaN-dropping max |x| of each block from -FLT_MAX (docs/FORMATS.md §2.2): a block with no
    other element keeps -FLT_MAX; a partial last block's padding counts as zeros."""
    a = np.abs(x.astype(np.float32)).ravel()
    nb = -(-a.size // blocksize)
    padded = np.zeros(nb * blocksize, dtype=np.float32)
    padded[:a.size] = a
    return np.fmax.reduce(padded.reshape(nb, blocksize), axis=1, initial=-np.finfo(np.float32).max)


def _scaled(x, blocksize):
    """x_i * RN32(1/M) per block (the IEEE reciprocal; CUDA's approximate one differs by an ulp
    on some blocks, which can move a value sitting next to a threshold)."""
    x = x.astype(np.float32).ravel()
    M = absmax_ref(x, blocksize)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1.0) / M
        blocks, _ = _blocks(x, blocksize)
        scaled = (blocks * inv[:, None]).ravel()[:x.size]
    return scaled, M


def q8_select(code, x):
    """Nearest code, exact ties to the even index, NaN -> 0 (docs/FORMATS.md §2.3 closed form)."""
    code = code.astype(np.float32)
    mid = ((code[:-1] + code[1:]) * np.float32(0.5)).astype(np.float32)
    q = np.searchsorted(mid, x, side="left")
    tie = (q < 255) & (mid[np.minimum(q, 254)] == x) & (q % 2 == 1)
    q = q + tie
    q[np.isnan(x)] = 0
    return q.astype(np.uint8)


def quantize_blockwise_ref(x, code, blocksize):
    scaled, M = _scaled(x, blocksize)
    return q8_select(code, scaled), M


def dequantize_blockwise_ref(q, absmax, code, blocksize):
    idx = np.arange(q.size) // blocksize
    return (code.astype(np.float32)[q.ravel()] * absmax[idx]).astype(np.float32)


def encode_4bit(x, quant_type):
    if quant_type == "nf4":
        q = np.searchsorted(NF4_THRESHOLDS, x, side="left").astype(np.uint8)
        q[np.isnan(x)] = 0
        return q
    a = np.abs(x)
    k = np.searchsorted(FP4_THRESHOLDS, a, side="left")
    k[np.isnan(x)] = 0
    return (np.where(x < 0, 8, 0) + FP4_PATTERN[k]).astype(np.uint8)


def quantize_4bit_ref(x, blocksize, quant_type):
    n = x.size
    x = x.astype(np.float32).ravel()
    if n % 2:
        x = np.concatenate([x, np.zeros(1, np.float32)])  # odd n: the pad nibble encodes 0.0
    scaled, M = _scaled(x, blocksize)
    codes = encode_4bit(scaled, quant_type)
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    return packed.reshape(-1, 1), M[:-(-n // blocksize)]


def dequantize_4bit_ref(packed, absmax, n, blocksize, quant_type):
    p = packed.ravel()
    codes = np.empty(p.size * 2, np.uint8)
    codes[0::2], codes[1::2] = p >> 4, p & 15
    lut = nf4_table() if quant_type == "nf4" else fp4_decode_table()
    return (lut[codes[:n]] * absmax[np.arange(n) // blocksize]).astype(np.float32)


def compress_absmax_ref(absmax, dynamic_signed, offset=None):
    if offset is None:
        offset = np.float32(absmax.astype(np.float64).sum() / absmax.size)
    r = (absmax - np.float32(offset)).astype(np.float32)
    q, a2 = quantize_blockwise_ref(r, dynamic_signed, 256)
    return q, a2, np.float32(offset)


def nested_absmax_ref(absmax_q, absmax2, offset, dynamic_signed, blocksize2=256):
    idx = np.arange(absmax_q.size) // blocksize2
    return ((dynamic_signed[absmax_q] * absmax2[idx]).astype(np.float32) + np.float32(offset)).astype(np.float32)
