package bnb

/*
#include "bnb.h"
*/
import "C"

import (
	"sync"
	"unsafe"
)

// Element is the set of element types of the C API's arrays.
type Element interface {
	float32 | F16 | BF16 | uint8 | int8 | int32
}

// PagedBuffer is paged (unified) memory (bnb_paged_alloc): addressed by the host and by the
// context's device, migrated page by page. On the CPU backend it is ordinary host memory.
// Slice views it from Go; every call of this package has finished on the device when it
// returns (prefetches too), so the view never races with the backend. Slices of it go to the
// context's calls as they are (no staging copy on a GPU backend), so optimizer state kept here
// stays put between steps; OptimizerUpdateMulti and plans still copy (see their docs). Close frees it (closing
// the context does too); the view must not be used after that. There is no finalizer: a view
// may outlive the last reference to the buffer.
type PagedBuffer[T Element] struct {
	ctx *Context
	res *resource
	mu  sync.RWMutex
	ptr unsafe.Pointer
	n   int
}

// NewPagedBuffer allocates n zero-filled elements of paged memory; n = 0 is an error, as in the
// C API.
func NewPagedBuffer[T Element](c *Context, n int) (*PagedBuffer[T], error) {
	var zero T
	bytes, err := product("n * element size", n, int(unsafe.Sizeof(zero)))
	if err != nil {
		return nil, err
	}
	b := &PagedBuffer[T]{ctx: c, n: n}
	err = c.use(func(raw C.bnb_context_t) error {
		if err := call(func() C.bnb_status_t { return C.bnb_paged_alloc(raw, C.int64_t(bytes), &b.ptr) }); err != nil {
			return err
		}
		ptr := b.ptr
		c.kidsMu.Lock()
		if c.paged == nil {
			c.paged = make(map[uintptr]int)
		}
		c.paged[uintptr(ptr)] = bytes
		c.kidsMu.Unlock()
		b.res = c.adopt(func(raw C.bnb_context_t) error { // runs with kidsMu held
			delete(c.paged, uintptr(ptr))
			return call(func() C.bnb_status_t { return C.bnb_paged_free(raw, ptr) })
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	s := b.Slice()
	for i := range s {
		s[i] = zero
	}
	return b, nil
}

// Len is the number of elements.
func (b *PagedBuffer[T]) Len() int { return b.n }

// Slice is the buffer as a Go slice (nil once closed).
func (b *PagedBuffer[T]) Slice() []T {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ptr == nil {
		return nil
	}
	return unsafe.Slice((*T)(b.ptr), b.n)
}

// PrefetchToDevice moves the pages to the context's device ahead of use, and waits for it.
func (b *PagedBuffer[T]) PrefetchToDevice() error { return b.prefetch(1) }

// PrefetchToHost moves the pages back to the host, and waits for it.
func (b *PagedBuffer[T]) PrefetchToHost() error { return b.prefetch(0) }

func (b *PagedBuffer[T]) prefetch(toDevice C.int32_t) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var zero T
	return b.ctx.use(func(raw C.bnb_context_t) error {
		if b.ptr == nil || b.res.done {
			return invalid("the paged buffer is closed")
		}
		bytes := C.int64_t(b.n * int(unsafe.Sizeof(zero)))
		if err := call(func() C.bnb_status_t { return C.bnb_paged_prefetch(raw, b.ptr, bytes, toDevice, nil) }); err != nil {
			return err
		}
		return call(func() C.bnb_status_t { return C.bnb_synchronize(raw, nil) })
	})
}

// Close frees the memory; closing twice is harmless.
func (b *PagedBuffer[T]) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return nil
	}
	b.ptr = nil
	return b.ctx.releaseNow(b.res)
}
