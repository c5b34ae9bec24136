package bnb

/*
#include "bnb.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// ContextOptions says how a context is made; the zero value is the library's defaults
// (backend from $BNB_BACKEND else the best available, device 0, all cores).
type ContextOptions struct {
	Backend    Backend
	Device     int
	NumThreads int // CPU threads; 0 = $BNB_NUM_THREADS, else all cores
	// 1 = scan the float inputs of the quantizers, products and optimizers for NaN and infinity
	// before each op (the first fails it with an error naming the argument and index); -1 =
	// never; 0 = $BNB_CHECK_FINITE, off when unset.
	CheckFinite int
}

// Context is one backend and device. It is safe for concurrent use; Close frees it (a
// finalizer does so too if Close is never called).
type Context struct {
	mu      sync.RWMutex // Close waits for calls in flight
	raw     C.bnb_context_t
	backend Backend
	device  int

	kidsMu sync.Mutex
	kids   map[*resource]struct{} // plans and paged buffers, released before the context
	paged  map[uintptr]int        // live paged allocations: address -> bytes
}

// resource is something made on a context that must go before it (a plan, paged memory).
type resource struct {
	release func(raw C.bnb_context_t) error
	done    bool
}

// adopt registers a resource that Close releases if its owner has not.
func (c *Context) adopt(release func(raw C.bnb_context_t) error) *resource {
	r := &resource{release: release}
	c.kidsMu.Lock()
	defer c.kidsMu.Unlock()
	if c.kids == nil {
		c.kids = make(map[*resource]struct{})
	}
	c.kids[r] = struct{}{}
	return r
}

// releaseNow frees r once, with the context's handle (nothing to do once the context is closed:
// Close released it then).
func (c *Context) releaseNow(r *resource) error {
	return c.useOrClosed(func(raw C.bnb_context_t) error {
		c.kidsMu.Lock()
		defer c.kidsMu.Unlock()
		if raw == nil || r.done {
			return nil
		}
		r.done = true
		delete(c.kids, r)
		return r.release(raw)
	})
}

// NewContext creates a context; nil options = the defaults. A backend that was asked for and
// cannot load is an error, never a silent fallback.
func NewContext(opts *ContextOptions) (*Context, error) {
	var o ContextOptions
	if opts != nil {
		o = *opts
	}
	var raw C.bnb_context_t
	err := call(func() C.bnb_status_t {
		var copts C.bnb_context_options_t
		if st := C.bnb_context_options_init(&copts); st != C.BNB_SUCCESS {
			return st
		}
		copts.backend = C.int32_t(o.Backend)
		copts.device = C.int32_t(o.Device)
		copts.num_threads = C.int32_t(o.NumThreads)
		copts.check_finite = C.int32_t(o.CheckFinite)
		return C.bnb_context_create(&copts, &raw)
	})
	if err != nil {
		return nil, err
	}
	var kind, device C.int32_t
	if err := call(func() C.bnb_status_t { return C.bnb_context_get_backend(raw, &kind, &device) }); err != nil {
		C.bnb_context_destroy(raw)
		return nil, err
	}
	ctx := &Context{raw: raw, backend: Backend(kind), device: int(device)}
	runtime.SetFinalizer(ctx, (*Context).Close)
	return ctx, nil
}

// Close destroys the context; later calls on it fail. Closing twice is harmless.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.raw == nil {
		return nil
	}
	raw := c.raw
	c.raw = nil
	runtime.SetFinalizer(c, nil)
	c.kidsMu.Lock()
	for r := range c.kids {
		if !r.done {
			r.done = true
			_ = r.release(raw)
		}
	}
	c.kids = nil
	c.kidsMu.Unlock()
	return call(func() C.bnb_status_t { return C.bnb_context_destroy(raw) })
}

// Backend is the backend this context runs on (never BackendAuto).
func (c *Context) Backend() Backend { return c.backend }

// Device is the device index on GPU backends.
func (c *Context) Device() int { return c.device }

// use runs f with the live handle, holding Close off until it returns.
func (c *Context) use(f func(raw C.bnb_context_t) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.raw == nil {
		return invalid("the context is closed")
	}
	return f(c.raw)
}

// useOrClosed runs f with the live handle, or with nil once the context is closed.
func (c *Context) useOrClosed(f func(raw C.bnb_context_t) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return f(c.raw)
}

// ---------------------------------------------------------------- staging
//
// Every array must live in the context's backend memory. On the CPU backend that is the Go
// slice itself; on a GPU backend a call copies inputs to device buffers and outputs back.

type staged struct {
	ptr   unsafe.Pointer
	host  unsafe.Pointer // where an output goes back to
	bytes int
	owned bool
}

type stager struct {
	raw     C.bnb_context_t
	direct  bool
	ctx     *Context // set: slices of the context's paged buffers pass without copies
	buffers []*staged
	outputs []*staged
}

func (c *Context) stager(raw C.bnb_context_t) *stager {
	return &stager{raw: raw, direct: c.backend == BackendCPU, ctx: c}
}

// inPlace says whether an array needs no staging: host memory on the CPU backend, nothing at
// all, or inside one of the context's paged allocations (which the device addresses too).
func (s *stager) inPlace(p unsafe.Pointer, bytes int) bool {
	if s.direct || bytes == 0 {
		return true
	}
	if s.ctx == nil {
		return false
	}
	s.ctx.kidsMu.Lock()
	defer s.ctx.kidsMu.Unlock()
	start := uintptr(p)
	for at, n := range s.ctx.paged {
		if at <= start && start+uintptr(bytes) <= at+uintptr(n) {
			return true
		}
	}
	return false
}

// copyingStager copies every array into memory the library allocated, on every backend: for
// pointers that C keeps after the call (a plan: every array, as a paged buffer may go first) or
// that sit inside Go memory handed to C (an array of tensor structs: Go arrays only, which cgo
// forbids there; paged memory is C memory and may stay in place).
func (c *Context) copyingStager(raw C.bnb_context_t, pagedInPlace bool) *stager {
	s := &stager{raw: raw}
	if pagedInPlace {
		s.ctx = c
	}
	return s
}

func slicePtr[T any](s []T) (unsafe.Pointer, int) {
	if len(s) == 0 {
		return nil, 0
	}
	var zero T
	return unsafe.Pointer(&s[0]), len(s) * int(unsafe.Sizeof(zero))
}

func (s *stager) alloc(bytes int) (*staged, error) {
	var p unsafe.Pointer
	if err := call(func() C.bnb_status_t { return C.bnb_malloc(s.raw, C.int64_t(bytes), &p) }); err != nil {
		return nil, err
	}
	b := &staged{ptr: p, bytes: bytes, owned: true}
	s.buffers = append(s.buffers, b)
	return b, nil
}

// in places an input; a nil or empty slice stays NULL.
func in[T any](s *stager, host []T) (unsafe.Pointer, error) {
	p, bytes := slicePtr(host)
	if s.inPlace(p, bytes) {
		return p, nil
	}
	b, err := s.alloc(bytes)
	if err != nil {
		return nil, err
	}
	err = call(func() C.bnb_status_t {
		return C.bnb_memcpy(s.raw, b.ptr, p, C.int64_t(bytes), C.BNB_MEMCPY_HOST_TO_BACKEND, nil)
	})
	return b.ptr, err
}

// out places an output, copied back by finish.
func out[T any](s *stager, host []T) (unsafe.Pointer, error) {
	p, bytes := slicePtr(host)
	if s.inPlace(p, bytes) {
		return p, nil
	}
	b, err := s.alloc(bytes)
	if err != nil {
		return nil, err
	}
	b.host = p
	s.outputs = append(s.outputs, b)
	return b.ptr, nil
}

// inout places an array the call reads and writes: its contents go in, finish brings it back.
func inout[T any](s *stager, host []T) (unsafe.Pointer, error) {
	p, bytes := slicePtr(host)
	if s.inPlace(p, bytes) {
		return p, nil
	}
	b, err := s.alloc(bytes)
	if err != nil {
		return nil, err
	}
	err = call(func() C.bnb_status_t {
		return C.bnb_memcpy(s.raw, b.ptr, p, C.int64_t(bytes), C.BNB_MEMCPY_HOST_TO_BACKEND, nil)
	})
	b.host = p
	s.outputs = append(s.outputs, b)
	return b.ptr, err
}

// scratch places an array the call may write and nobody reads back.
func scratch[T any](s *stager, host []T) (unsafe.Pointer, error) {
	p, bytes := slicePtr(host)
	if s.inPlace(p, bytes) {
		return p, nil
	}
	b, err := s.alloc(bytes)
	if err != nil {
		return nil, err
	}
	return b.ptr, nil
}

// keep hands the stager's buffers to the caller (a plan), so free leaves them alone.
func (s *stager) keep() []unsafe.Pointer {
	ptrs := make([]unsafe.Pointer, len(s.buffers))
	for i, b := range s.buffers {
		ptrs[i] = b.ptr
	}
	s.buffers = nil
	return ptrs
}

// finish waits for the backend and copies staged outputs back to their slices.
func (s *stager) finish() error {
	if err := call(func() C.bnb_status_t { return C.bnb_synchronize(s.raw, nil) }); err != nil {
		return err
	}
	for _, b := range s.outputs {
		err := call(func() C.bnb_status_t {
			return C.bnb_memcpy(s.raw, b.host, b.ptr, C.int64_t(b.bytes), C.BNB_MEMCPY_BACKEND_TO_HOST, nil)
		})
		if err != nil {
			return err
		}
	}
	return call(func() C.bnb_status_t { return C.bnb_synchronize(s.raw, nil) })
}

// free releases every device buffer (deferred by each op).
func (s *stager) free() {
	for _, b := range s.buffers {
		C.bnb_free(s.raw, b.ptr)
	}
}
