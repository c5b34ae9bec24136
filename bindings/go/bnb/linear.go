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
	_, err := int8Layer(c, m, n, k, a, threshold, w, scb, bias, q, rowStats, acc, nil, dst)
	return err
}

// Int8LinearOutliers is the LLM.int8() layer with its outlier product (bnb_int8_linear_outliers,
// docs/OPS.md §5.10): dst is what Int8Linear gives, plus the product of the outlier columns of a
// (any |x| >= threshold) with the dequantized columns of w, summed in a fixed order. The outlier
// columns go, ascending, to columns[:count] (columns holds k); it returns count (0 at threshold 0,
// where dst equals Int8Linear's).
func Int8LinearOutliers[T Float](c *Context, m, n, k int, a []T, threshold float32, w []int8, scb []float32,
	bias []T, q []int8, rowStats []float32, acc []int32, columns []int32, dst []T) (int, error) {
	if columns == nil {
		return 0, need("columns", 0, k, "one per column of a")
	}
	return int8Layer(c, m, n, k, a, threshold, w, scb, bias, q, rowStats, acc, columns, dst)
}

// int8Layer is Int8Linear (columns nil) or Int8LinearOutliers; it returns the outlier count (0 for
// the first).
func int8Layer[T Float](c *Context, m, n, k int, a []T, threshold float32, w []int8, scb []float32, bias []T,
	q []int8, rowStats []float32, acc []int32, columns []int32, dst []T) (int, error) {
	mk, err := product("m*k", m, k)
	if err != nil {
		return 0, err
	}
	nk, err := product("n*k", n, k)
	if err != nil {
		return 0, err
	}
	mn, err := product("m*n", m, n)
	if err != nil {
		return 0, err
	}
	for _, chk := range []struct {
		name      string
		have, min int
		what      string
	}{{"a", len(a), mk, "m rows of k"}, {"w", len(w), nk, "n rows of k"}, {"scb", len(scb), n, "one per row of w"},
		{"q", len(q), mk, "m rows of k"}, {"rowStats", len(rowStats), m, "one per row of a"},
		{"acc", len(acc), mn, "m rows of n"}, {"dst", len(dst), mn, "m rows of n"}} {
		if err := need(chk.name, chk.have, chk.min, chk.what); err != nil {
			return 0, err
		}
	}
	if columns != nil {
		if err := need("columns", len(columns), k, "one per column of a"); err != nil {
			return 0, err
		}
	}
	if bias != nil {
		if err := need("bias", len(bias), n, "one per output column"); err != nil {
			return 0, err
		}
		bias = bias[:n]
	}
	count := make([]int64, 1)
	err = c.use(func(raw C.bnb_context_t) error {
		s := c.stager(raw)
		defer s.free()
		var pa, pw, ps, pb, pq, pr, pc, pcols, pcount, po unsafe.Pointer
		places := []func() error{
			func() (e error) { pa, e = in(s, a[:mk]); return },
			func() (e error) { pw, e = in(s, w[:nk]); return },
			func() (e error) { ps, e = in(s, scb[:n]); return },
			func() (e error) { pb, e = in(s, bias); return },
			func() (e error) { pq, e = out(s, q[:mk]); return },
			func() (e error) { pr, e = out(s, rowStats[:m]); return },
			func() (e error) { pc, e = scratch(s, acc[:mn]); return },
			func() (e error) { po, e = out(s, dst[:mn]); return },
		}
		if columns != nil {
			places = append(places, func() (e error) { pcols, e = out(s, columns[:k]); return },
				func() (e error) { pcount, e = out(s, count); return })
		}
		for _, place := range places {
			if err := place(); err != nil {
				return err
			}
		}
		err := call(func() C.bnb_status_t {
			dtype, cm, cn, ck := C.int32_t(dtypeOf[T]()), C.int64_t(m), C.int64_t(n), C.int64_t(k)
			if columns == nil {
				return C.bnb_int8_linear(raw, dtype, cm, cn, ck, pa, C.float(threshold), (*C.int8_t)(pw), (*C.float)(ps),
					pb, (*C.int8_t)(pq), (*C.float)(pr), (*C.int32_t)(pc), po, nil)
			}
			return C.bnb_int8_linear_outliers(raw, dtype, cm, cn, ck, pa, C.float(threshold), (*C.int8_t)(pw),
				(*C.float)(ps), pb, (*C.int8_t)(pq), (*C.float)(pr), (*C.int32_t)(pc), (*C.int32_t)(pcols),
				(*C.int64_t)(pcount), po, nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
	if err != nil {
		return 0, err
	}
	return int(count[0]), nil
}
