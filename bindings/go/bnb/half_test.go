package bnb

import (
	"math"
	"testing"
)

func TestF16KnownValues(t *testing.T) {
	for _, c := range []struct {
		bits  F16
		value float32
	}{{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.9604645e-8}, {0x0400, 6.1035156e-5},
		{0x3555, 0.33325195}, {0x8000, float32(math.Copysign(0, -1))}} {
		if got := c.bits.Float32(); math.Float32bits(got) != math.Float32bits(c.value) {
			t.Errorf("%#04x -> %v, want %v", uint16(c.bits), got, c.value)
		}
		if got := F16FromFloat32(c.value); got != c.bits {
			t.Errorf("%v -> %#04x, want %#04x", c.value, uint16(got), uint16(c.bits))
		}
	}
	if F16FromFloat32(65520) != 0x7c00 || F16FromFloat32(65519) != 0x7bff {
		t.Error("rounding at the top of the range")
	}
}

func TestF16EveryValueRoundTripsAndTiesGoToEven(t *testing.T) {
	for b := 0; b <= 0xffff; b++ {
		h := F16(b)
		x := h.Float32()
		if x != x {
			if y := F16FromFloat32(x).Float32(); y == y {
				t.Fatalf("NaN %#04x lost", b)
			}
			continue
		}
		if F16FromFloat32(x) != h {
			t.Fatalf("%#04x -> %v -> %#04x", b, x, uint16(F16FromFloat32(x)))
		}
		next := F16(b + 1)
		if h&0x7c00 != 0x7c00 && next&0x7fff != 0x7c00 && next&0x8000 == h&0x8000 {
			mid := float32((float64(x) + float64(next.Float32())) / 2)
			even := h
			if b%2 == 1 {
				even = next
			}
			if F16FromFloat32(mid) != even {
				t.Fatalf("midpoint after %#04x -> %#04x", b, uint16(F16FromFloat32(mid)))
			}
		}
	}
}

func TestBF16RoundsToNearestEven(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want BF16
	}{{0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, {0x3f818000, 0x3f82}, {0x3f808001, 0x3f81}} {
		if got := BF16FromFloat32(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("%#08x -> %#04x, want %#04x", c.in, uint16(got), uint16(c.want))
		}
	}
	if v := BF16FromFloat32(float32(math.NaN())).Float32(); v == v {
		t.Error("NaN lost")
	}
}
