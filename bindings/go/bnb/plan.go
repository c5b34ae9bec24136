package bnb

/*
#include "shims.h"
*/
import "C"

import "sync"

// Gemm4Plan is a prepared 4-bit matmul (bnb_gemm_4bit_plan_*): the arguments of Gemm4Bit that
// stay fixed across calls with one weight, checked once. The library keeps pointers to the
// weight, its scales and the bias, which cgo forbids for Go memory; so the plan holds its own
// copies, made when it is created (later changes to the caller's slices do not reach it).
// Close frees it; closing the context closes it too.
type Gemm4Plan[T Float] struct {
	ctx  *Context
	res  *resource
	mu   sync.RWMutex // Close waits for runs in flight
	raw  C.bnb_gemm4_plan_t
	n, k int
}

// NewGemm4Plan checks the fixed arguments of Gemm4Bit once (bias may be nil).
func NewGemm4Plan[T Float](c *Context, n, k int, w []uint8, scales Scales, quant Quant4, blocksize int,
	bias []T) (*Gemm4Plan[T], error) {
	weights, err := product("n*k", n, k)
	if err != nil {
		return nil, err
	}
	if err := need("w", len(w), PackedLen(weights), "n*k packed 4-bit codes"); err != nil {
		return nil, err
	}
	if bias != nil {
		if err := need("bias", len(bias), n, "one per output column"); err != nil {
			return nil, err
		}
		bias = bias[:n]
	}
	plan := &Gemm4Plan[T]{ctx: c, n: n, k: k}
	err = c.use(func(raw C.bnb_context_t) error {
		s := c.copyingStager(raw, false)
		defer s.free() // frees nothing once keep() has taken the buffers
		pw, err := in(s, w[:PackedLen(weights)])
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
		err = call(func() C.bnb_status_t {
			return C.go_bnb_gemm_4bit_plan_create(raw, C.int32_t(dtypeOf[T]()), C.int64_t(n), C.int64_t(k),
				(*C.uint8_t)(pw), (*C.float)(sc.absmax), (*C.uint8_t)(sc.absmaxQ), (*C.float)(sc.absmax2),
				(*C.float)(sc.code2), (*C.float)(sc.offset), sc.blocksize2, C.int32_t(quant), C.int64_t(blocksize),
				pb, &plan.raw)
		})
		if err != nil {
			return err
		}
		if err := s.finish(); err != nil { // the copies are complete before the plan reads them
			C.bnb_gemm_4bit_plan_destroy(plan.raw)
			return err
		}
		buffers := s.keep()
		handle := plan.raw
		plan.res = c.adopt(func(raw C.bnb_context_t) error {
			err := call(func() C.bnb_status_t { return C.bnb_gemm_4bit_plan_destroy(handle) })
			for _, p := range buffers {
				C.bnb_free(raw, p)
			}
			return err
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return plan, nil
}

// Run computes dst[m,n] = a[m,k] @ dequant(w)^T (+ bias): what Gemm4Bit gives with the plan's
// arguments, bit for bit.
func (p *Gemm4Plan[T]) Run(m int, a []T, dst []T) error {
	mk, err := product("m*k", m, p.k)
	if err != nil {
		return err
	}
	mn, err := product("m*n", m, p.n)
	if err != nil {
		return err
	}
	if err := need("a", len(a), mk, "m rows of k"); err != nil {
		return err
	}
	if err := need("dst", len(dst), mn, "m rows of n"); err != nil {
		return err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ctx.use(func(raw C.bnb_context_t) error {
		if p.res == nil || p.res.done {
			return invalid("the plan is closed")
		}
		s := p.ctx.stager(raw)
		defer s.free()
		pa, err := in(s, a[:mk])
		if err != nil {
			return err
		}
		po, err := out(s, dst[:mn])
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.bnb_gemm_4bit_plan_run(p.raw, C.int64_t(m), pa, po, nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// N and K are the weight's shape.
func (p *Gemm4Plan[T]) N() int { return p.n }
func (p *Gemm4Plan[T]) K() int { return p.k }

// Close destroys the plan and frees its copies; closing twice is harmless.
func (p *Gemm4Plan[T]) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.res == nil {
		return nil
	}
	return p.ctx.releaseNow(p.res)
}
