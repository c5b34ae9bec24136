package bnb

/*
#include "shims.h"
*/
import "C"

import (
	"fmt"
	"math/bits"
	"unsafe"
)

// NumBlocks is the number of per-block scales for n elements: ceil(n / blocksize).
func NumBlocks(n, blocksize int) int {
	if blocksize <= 0 {
		return 0 // the library rejects the blocksize; no scale storage is needed meanwhile
	}
	return (n + blocksize - 1) / blocksize
}

// PackedLen is the bytes of packed 4-bit codes for n elements (two per byte).
func PackedLen(n int) int { return (n + 1) / 2 }

func need(name string, have, want int, what string) error {
	if have < want {
		return invalid("%s has %d elements, needs %d (%s)", name, have, want, what)
	}
	return nil
}

func product(what string, a, b int) (int, error) {
	if a < 0 || b < 0 {
		return 0, invalid("%s: negative size %d x %d", what, a, b)
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > uint64(^uint(0)>>1) {
		return 0, invalid("%s: %d x %d overflows", what, a, b)
	}
	return int(lo), nil
}

func needCode(name string, code []float32) error {
	if code == nil {
		return nil
	}
	return need(name, len(code), 256, "a 256-entry table")
}

// Scales are the per-block scales of a 4-bit tensor: plain (Absmax set) or double-quantized.
type Scales struct {
	Absmax []float32 // plain: one float per block

	AbsmaxQ    []uint8   // nested: one code per block
	Absmax2    []float32 // nested: one float per Blocksize2 codes
	Code2      []float32 // nested: 256-entry table of the codes; nil = signed dynamic map
	Offset     float32   // nested: the mean subtracted before the codes were made
	Blocksize2 int       // nested: 256 for what CompressAbsmax makes
}

// PlainScales are one float per block.
func PlainScales(absmax []float32) Scales { return Scales{Absmax: absmax} }

// NestedScales are what CompressAbsmax made (blocksize2 256, signed dynamic map).
func NestedScales(absmaxQ []uint8, absmax2 []float32, offset float32) Scales {
	return Scales{AbsmaxQ: absmaxQ, Absmax2: absmax2, Offset: offset, Blocksize2: 256}
}

type stagedScales struct {
	absmax, absmax2, code2, offset unsafe.Pointer
	absmaxQ                        unsafe.Pointer
	blocksize2                     C.int64_t
}

func (s *stager) scales(sc *Scales, nblocks int) (stagedScales, error) {
	var r stagedScales
	var err error
	if sc.Absmax != nil {
		if err = need("Absmax", len(sc.Absmax), nblocks, "one float per block"); err != nil {
			return r, err
		}
		r.absmax, err = in(s, sc.Absmax)
		return r, err
	}
	if err = need("AbsmaxQ", len(sc.AbsmaxQ), nblocks, "one code per block"); err != nil {
		return r, err
	}
	if err = need("Absmax2", len(sc.Absmax2), NumBlocks(nblocks, sc.Blocksize2), "one float per Blocksize2 codes"); err != nil {
		return r, err
	}
	if err = needCode("Code2", sc.Code2); err != nil {
		return r, err
	}
	if r.absmaxQ, err = in(s, sc.AbsmaxQ); err != nil {
		return r, err
	}
	if r.absmax2, err = in(s, sc.Absmax2); err != nil {
		return r, err
	}
	if r.code2, err = in(s, sc.Code2); err != nil {
		return r, err
	}
	offset := []float32{sc.Offset}
	if r.offset, err = in(s, offset); err != nil {
		return r, err
	}
	r.blocksize2 = C.int64_t(sc.Blocksize2)
	return r, nil
}

// QuantizeBlockwise quantizes a to 8-bit codes, one per element into q, one absmax per block.
// code is a 256-entry table, or nil for the signed dynamic map.
func QuantizeBlockwise[T Float](c *Context, a []T, blocksize int, code []float32, q []uint8, absmax []float32) error {
	n := len(a)
	if err := need("q", len(q), n, "one code per input element"); err != nil {
		return err
	}
	if err := need("absmax", len(absmax), NumBlocks(n, blocksize), "one float per block"); err != nil {
		return err
	}
	if err := needCode("code", code); err != nil {
		return err
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pa, err := in(s, a)
		if err != nil {
			return err
		}
		pc, err := in(s, code)
		if err != nil {
			return err
		}
		pq, err := out(s, q[:n])
		if err != nil {
			return err
		}
		pm, err := out(s, absmax)
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_quantize_blockwise(raw, C.int32_t(dtypeOf[T]()), pa, C.int64_t(n), C.int64_t(blocksize),
				(*C.float)(pc), (*C.uint8_t)(pq), (*C.float)(pm), nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// DequantizeBlockwise fills all of dst (its length is n) from 8-bit codes and block absmax.
func DequantizeBlockwise[T Float](c *Context, q []uint8, absmax []float32, code []float32, blocksize int, dst []T) error {
	n := len(dst)
	if err := need("q", len(q), n, "one code per output element"); err != nil {
		return err
	}
	if err := need("absmax", len(absmax), NumBlocks(n, blocksize), "one float per block"); err != nil {
		return err
	}
	if err := needCode("code", code); err != nil {
		return err
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pq, err := in(s, q)
		if err != nil {
			return err
		}
		pm, err := in(s, absmax)
		if err != nil {
			return err
		}
		pc, err := in(s, code)
		if err != nil {
			return err
		}
		po, err := out(s, dst)
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_dequantize_blockwise(raw, (*C.uint8_t)(pq), (*C.float)(pm), (*C.float)(pc), C.int64_t(n),
				C.int64_t(blocksize), C.int32_t(dtypeOf[T]()), po, nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// Quantize4Bit quantizes a to NF4/FP4: packed gets PackedLen(len(a)) bytes (even element in
// the high nibble), absmax one float per block.
func Quantize4Bit[T Float](c *Context, quant Quant4, a []T, blocksize int, packed []uint8, absmax []float32) error {
	n := len(a)
	if err := need("packed", len(packed), PackedLen(n), "two codes per byte"); err != nil {
		return err
	}
	if err := need("absmax", len(absmax), NumBlocks(n, blocksize), "one float per block"); err != nil {
		return err
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pa, err := in(s, a)
		if err != nil {
			return err
		}
		pp, err := out(s, packed[:PackedLen(n)])
		if err != nil {
			return err
		}
		pm, err := out(s, absmax)
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_quantize_4bit(raw, C.int32_t(quant), C.int32_t(dtypeOf[T]()), pa, C.int64_t(n),
				C.int64_t(blocksize), (*C.uint8_t)(pp), (*C.float)(pm), nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// Dequantize4Bit fills all of dst (its length is n) from packed 4-bit codes and their scales.
func Dequantize4Bit[T Float](c *Context, quant Quant4, packed []uint8, scales Scales, blocksize int, dst []T) error {
	n := len(dst)
	if err := need("packed", len(packed), PackedLen(n), "two codes per byte"); err != nil {
		return err
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pp, err := in(s, packed)
		if err != nil {
			return err
		}
		sc, err := s.scales(&scales, NumBlocks(n, blocksize))
		if err != nil {
			return err
		}
		po, err := out(s, dst)
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.go_bnb_dequantize_4bit(raw, C.int32_t(quant), (*C.uint8_t)(pp), (*C.float)(sc.absmax),
				(*C.uint8_t)(sc.absmaxQ), (*C.float)(sc.absmax2), (*C.float)(sc.code2), (*C.float)(sc.offset),
				sc.blocksize2, C.int64_t(n), C.int64_t(blocksize), C.int32_t(dtypeOf[T]()), po)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// CompressAbsmax double-quantizes per-block scales: absmaxQ gets one code per entry,
// absmax2 one float per 256 of them; the offset (their mean) is returned.
func (c *Context) CompressAbsmax(absmax []float32, absmaxQ []uint8, absmax2 []float32) (float32, error) {
	nblocks := len(absmax)
	if err := need("absmaxQ", len(absmaxQ), nblocks, "one code per block"); err != nil {
		return 0, err
	}
	if err := need("absmax2", len(absmax2), NumBlocks(nblocks, 256), "one float per 256 blocks"); err != nil {
		return 0, err
	}
	offset := make([]float32, 1)
	err := c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pa, err := in(s, absmax)
		if err != nil {
			return err
		}
		pq, err := out(s, absmaxQ[:nblocks])
		if err != nil {
			return err
		}
		p2, err := out(s, absmax2)
		if err != nil {
			return err
		}
		po, err := out(s, offset)
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_compress_absmax(raw, (*C.float)(pa), C.int64_t(nblocks), (*C.uint8_t)(pq), (*C.float)(p2),
				(*C.float)(po), nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
	return offset[0], err
}

// Gemm4Bit computes dst[m,n] = a[m,k] @ dequant(w)[n,k]^T (+ bias[n]), w quantized from its
// [n,k] row-major form by Quantize4Bit. bias may be nil.
func Gemm4Bit[T Float](c *Context, m, n, k int, a []T, w []uint8, scales Scales, quant Quant4, blocksize int,
	bias []T, dst []T) error {
	weights, err := product("n*k", n, k)
	if err != nil {
		return err
	}
	mk, err := product("m*k", m, k)
	if err != nil {
		return err
	}
	mn, err := product("m*n", m, n)
	if err != nil {
		return err
	}
	if err := need("a", len(a), mk, "m rows of k"); err != nil {
		return err
	}
	if err := need("w", len(w), PackedLen(weights), "n*k packed 4-bit codes"); err != nil {
		return err
	}
	if err := need("dst", len(dst), mn, "m rows of n"); err != nil {
		return err
	}
	if bias != nil {
		if err := need("bias", len(bias), n, "one per output column"); err != nil {
			return err
		}
	}
	return gemm4Call(c, a, w, scales, weights, blocksize, bias, dst[:mn],
		func(raw C.bnb_context_t, pa, pw unsafe.Pointer, sc stagedScales, pb, po unsafe.Pointer) C.bnb_status_t {
			return C.go_bnb_gemm_4bit(raw, C.int32_t(dtypeOf[T]()), C.int64_t(m), C.int64_t(n), C.int64_t(k), pa,
				(*C.uint8_t)(pw), (*C.float)(sc.absmax), (*C.uint8_t)(sc.absmaxQ), (*C.float)(sc.absmax2),
				(*C.float)(sc.code2), (*C.float)(sc.offset), sc.blocksize2, C.int32_t(quant), C.int64_t(blocksize),
				pb, po)
		})
}

// gemm4Call stages a 4-bit product's arrays (a, the packed w of `weights` codes with its scales,
// bias when not nil, dst) and makes the library call `run` with them.
func gemm4Call[T Float](c *Context, a []T, w []uint8, scales Scales, weights, blocksize int, bias, dst []T,
	run func(raw C.bnb_context_t, pa, pw unsafe.Pointer, sc stagedScales, pb, po unsafe.Pointer) C.bnb_status_t) error {
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pa, err := in(s, a)
		if err != nil {
			return err
		}
		pw, err := in(s, w)
		if err != nil {
			return err
		}
		pb, err := in(s, bias)
		if err != nil {
			return err
		}
		sc, err := s.scales(&scales, NumBlocks(weights, blocksize))
		if err != nil {
			return err
		}
		po, err := out(s, dst)
		if err != nil {
			return err
		}
		if err := call(func() C.bnb_status_t { return run(raw, pa, pw, sc, pb, po) }); err != nil {
			return err
		}
		return s.finish()
	})
}

// Gemm4BitTransposed computes dst[m,k] = a[m,n] @ dequant(w)[n,k]: the other orientation of
// Gemm4Bit's weight (the same packed w and scales; the input gradient of a @ w^T).
func Gemm4BitTransposed[T Float](c *Context, m, n, k int, a []T, w []uint8, scales Scales, quant Quant4,
	blocksize int, dst []T) error {
	weights, err := product("n*k", n, k)
	if err != nil {
		return err
	}
	mn, err := product("m*n", m, n)
	if err != nil {
		return err
	}
	mk, err := product("m*k", m, k)
	if err != nil {
		return err
	}
	if err := need("a", len(a), mn, "m rows of n"); err != nil {
		return err
	}
	if err := need("w", len(w), PackedLen(weights), "n*k packed 4-bit codes"); err != nil {
		return err
	}
	if err := need("dst", len(dst), mk, "m rows of k"); err != nil {
		return err
	}
	return gemm4Call(c, a, w, scales, weights, blocksize, nil, dst[:mk],
		func(raw C.bnb_context_t, pa, pw unsafe.Pointer, sc stagedScales, _, po unsafe.Pointer) C.bnb_status_t {
			return C.go_bnb_gemm_4bit_transposed(raw, C.int32_t(dtypeOf[T]()), C.int64_t(m), C.int64_t(n), C.int64_t(k),
				pa, (*C.uint8_t)(pw), (*C.float)(sc.absmax), (*C.uint8_t)(sc.absmaxQ), (*C.float)(sc.absmax2),
				(*C.float)(sc.code2), (*C.float)(sc.offset), sc.blocksize2, C.int32_t(quant), C.int64_t(blocksize), po)
		})
}

// Int8VectorwiseQuant is LLM.int8()'s row-wise quantization of a[rows, cols]; entries with
// |x| >= threshold become 0 (threshold 0 = none).
func Int8VectorwiseQuant[T Float](c *Context, rows, cols int, a []T, threshold float32, q []int8, rowStats []float32) error {
	total, err := product("rows*cols", rows, cols)
	if err != nil {
		return err
	}
	if err := need("a", len(a), total, "rows*cols"); err != nil {
		return err
	}
	if err := need("q", len(q), total, "rows*cols"); err != nil {
		return err
	}
	if err := need("rowStats", len(rowStats), rows, "one per row"); err != nil {
		return err
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pa, err := in(s, a)
		if err != nil {
			return err
		}
		pq, err := out(s, q[:total])
		if err != nil {
			return err
		}
		pr, err := out(s, rowStats[:rows])
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_int8_vectorwise_quant(raw, C.int32_t(dtypeOf[T]()), C.int64_t(rows), C.int64_t(cols), pa,
				C.float(threshold), (*C.int8_t)(pq), (*C.float)(pr), nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// Int8Matmul computes dst[m,n] (int32) = a[m,k] (int8) @ b[n,k]^T (int8).
func (c *Context) Int8Matmul(m, n, k int, a, b []int8, dst []int32) error {
	mk, err := product("m*k", m, k)
	if err != nil {
		return err
	}
	nk, err := product("n*k", n, k)
	if err != nil {
		return err
	}
	mn, err := product("m*n", m, n)
	if err != nil {
		return err
	}
	if err := need("a", len(a), mk, "m rows of k"); err != nil {
		return err
	}
	if err := need("b", len(b), nk, "n rows of k"); err != nil {
		return err
	}
	if err := need("dst", len(dst), mn, "m rows of n"); err != nil {
		return err
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pa, err := in(s, a)
		if err != nil {
			return err
		}
		pb, err := in(s, b)
		if err != nil {
			return err
		}
		pc, err := out(s, dst[:mn])
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_int8_matmul(raw, C.int64_t(m), C.int64_t(n), C.int64_t(k), (*C.int8_t)(pa), (*C.int8_t)(pb),
				(*C.int32_t)(pc), nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// Int8OutlierColumns lists the columns of a[rows, cols] holding any |x| >= threshold, ascending.
func Int8OutlierColumns[T Float](c *Context, rows, cols int, a []T, threshold float32) ([]int32, error) {
	total, err := product("rows*cols", rows, cols)
	if err != nil {
		return nil, err
	}
	if err := need("a", len(a), total, "rows*cols"); err != nil {
		return nil, err
	}
	columns := make([]int32, cols)
	var count C.int64_t
	err = c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		pa, err := in(s, a)
		if err != nil {
			return err
		}
		pc, err := out(s, columns)
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_int8_outlier_columns(raw, C.int32_t(dtypeOf[T]()), C.int64_t(rows), C.int64_t(cols), pa,
				C.float(threshold), (*C.int32_t)(pc), C.int64_t(cols), &count, nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
	if err != nil {
		return nil, err
	}
	if count < 0 || int(count) > cols {
		return nil, &Error{Status: StatusInternal, Message: fmt.Sprintf("outlier column count %d", count)}
	}
	return columns[:count], nil
}

// Int8MmDequant computes dst[m,n] = acc * rowStats[m] * colStats[n] / (127*127) (+ bias[n]).
// bias may be nil.
func Int8MmDequant[T Float](c *Context, m, n int, acc []int32, rowStats, colStats []float32, bias []T, dst []T) error {
	total, err := product("m*n", m, n)
	if err != nil {
		return err
	}
	for _, chk := range []struct {
		name      string
		have, min int
		what      string
	}{{"acc", len(acc), total, "m rows of n"}, {"rowStats", len(rowStats), m, "one per row"},
		{"colStats", len(colStats), n, "one per column"}, {"dst", len(dst), total, "m rows of n"}} {
		if err := need(chk.name, chk.have, chk.min, chk.what); err != nil {
			return err
		}
	}
	if bias != nil {
		if err := need("bias", len(bias), n, "one per column"); err != nil {
			return err
		}
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		var ptrs [4]unsafe.Pointer
		var err error
		if ptrs[0], err = in(s, acc); err != nil {
			return err
		}
		if ptrs[1], err = in(s, rowStats); err != nil {
			return err
		}
		if ptrs[2], err = in(s, colStats); err != nil {
			return err
		}
		if ptrs[3], err = in(s, bias); err != nil {
			return err
		}
		po, err := out(s, dst[:total])
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_int8_mm_dequant(raw, C.int64_t(m), C.int64_t(n), (*C.int32_t)(ptrs[0]), (*C.float)(ptrs[1]),
				(*C.float)(ptrs[2]), ptrs[3], C.int32_t(dtypeOf[T]()), po, nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}
