package bnb

/*
#include "bnb.h"
*/
import "C"

import "unsafe"

// Int8Linear is the LLM.int8() layer without its outlier product, in one call
// (bnb_int8_linear): dst[m,n] = dequant(int8(a) @ w^T) (+ bias), bit for bit what
// Int8VectorwiseQuant (into q, rowStats), Int8Matmul (into acc) and Int8MmDequant (with scb as
// the column statistics) give. w is [n,k] int8 with its row absmax scb; acc (m*n) is scratch
// whose contents are unspecified afterwards. bias may be nil.
func Int8Linear[T Float](c *Context, m, n, k int, a []T, threshold float32, w []int8, scb []float32, bias []T,
	q []int8, rowStats []float32, acc []int32, dst []T) error {
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
	for _, chk := range []struct {
		name      string
		have, min int
		what      string
	}{{"a", len(a), mk, "m rows of k"}, {"w", len(w), nk, "n rows of k"}, {"scb", len(scb), n, "one per row of w"},
		{"q", len(q), mk, "m rows of k"}, {"rowStats", len(rowStats), m, "one per row of a"},
		{"acc", len(acc), mn, "m rows of n"}, {"dst", len(dst), mn, "m rows of n"}} {
		if err := need(chk.name, chk.have, chk.min, chk.what); err != nil {
			return err
		}
	}
	if bias != nil {
		if err := need("bias", len(bias), n, "one per output column"); err != nil {
			return err
		}
		bias = bias[:n]
	}
	return c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		var pa, pw, ps, pb, pq, pr, pc, po unsafe.Pointer
		for _, place := range []func() error{
			func() (e error) { pa, e = in(s, a[:mk]); return },
			func() (e error) { pw, e = in(s, w[:nk]); return },
			func() (e error) { ps, e = in(s, scb[:n]); return },
			func() (e error) { pb, e = in(s, bias); return },
			func() (e error) { pq, e = out(s, q[:mk]); return },
			func() (e error) { pr, e = out(s, rowStats[:m]); return },
			func() (e error) { pc, e = scratch(s, acc[:mn]); return },
			func() (e error) { po, e = out(s, dst[:mn]); return },
		} {
			if err := place(); err != nil {
				return err
			}
		}
		err := call(func() C.bnb_status_t {
			return C.bnb_int8_linear(raw, C.int32_t(dtypeOf[T]()), C.int64_t(m), C.int64_t(n), C.int64_t(k), pa,
				C.float(threshold), (*C.int8_t)(pw), (*C.float)(ps), pb, (*C.int8_t)(pq), (*C.float)(pr),
				(*C.int32_t)(pc), po, nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}
