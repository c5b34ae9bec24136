package bnb

import "math"

// F16 is an IEEE binary16 value held as its bit pattern.
type F16 uint16

// BF16 is a bfloat16 value (the upper half of a binary32) held as its bit pattern.
type BF16 uint16

// Float is the set of element types the quantizers read and the dequantizers write.
type Float interface {
	float32 | F16 | BF16
}

func dtypeOf[T Float]() DType {
	var zero T
	switch any(zero).(type) {
	case F16:
		return F16DType
	case BF16:
		return BF16DType
	}
	return F32DType
}

// Float32 widens exactly.
func (h F16) Float32() float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0 && man == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: man * 2^-24, exact in binary32
		v := float32(man) * math.Float32frombits(0x33800000)
		if sign != 0 {
			return -v
		}
		return v
	case exp == 0x1f && man == 0:
		return math.Float32frombits(sign | 0x7f800000)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7fc00000 | man<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// F16FromFloat32 rounds to nearest, ties to even.
func F16FromFloat32(x float32) F16 {
	bits := math.Float32bits(x)
	sign := uint16(bits>>16) & 0x8000
	abs := bits & 0x7fffffff
	switch {
	case abs > 0x7f800000: // NaN stays NaN
		return F16(sign | 0x7e00 | uint16(abs>>13)&0x3ff)
	case abs >= 0x47800000: // 65536 and up rounds past the largest finite half
		return F16(sign | 0x7c00)
	case abs < 0x38800000: // below 2^-14: subnormal result; the 10-bit field is x * 2^24
		scaled := float64(math.Float32frombits(abs)) * (1 << 24)
		return F16(sign | uint16(math.RoundToEven(scaled)))
	}
	adjusted := abs - 112<<23
	rest := adjusted & 0x1fff
	half := adjusted >> 13
	if rest > 0x1000 || (rest == 0x1000 && half&1 == 1) {
		half++
	}
	return F16(sign | uint16(half))
}

// Float32 widens exactly.
func (b BF16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// BF16FromFloat32 rounds to nearest, ties to even; NaN stays NaN.
func BF16FromFloat32(x float32) BF16 {
	bits := math.Float32bits(x)
	if x != x {
		return BF16(bits>>16 | 0x0040)
	}
	return BF16((bits + 0x7fff + (bits>>16)&1) >> 16)
}
