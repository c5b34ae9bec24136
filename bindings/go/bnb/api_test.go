package bnb

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func TestVersionMatchesTheHeader(t *testing.T) {
	if VersionNumber() != HeaderVersionNumber {
		t.Fatalf("library %d, header %d", VersionNumber(), HeaderVersionNumber)
	}
	if !strings.HasPrefix(VersionString(), "0.1") {
		t.Fatalf("version string %q", VersionString())
	}
}

func TestCPUBackendIsListedAndAvailable(t *testing.T) {
	infos, err := Backends()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range infos {
		if b.Kind == BackendCPU {
			if b.Name != "cpu" || !b.Available {
				t.Fatalf("cpu backend: %+v", b)
			}
			ctx, err := NewContext(&ContextOptions{Backend: BackendCPU})
			if err != nil {
				t.Fatal(err)
			}
			defer ctx.Close()
			if ctx.Backend() != BackendCPU {
				t.Fatalf("context backend %v", ctx.Backend())
			}
			return
		}
	}
	t.Fatalf("no cpu backend in %+v", infos)
}

func TestBackendCapabilities(t *testing.T) {
	infos, err := Backends()
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range infos {
		caps, err := GetBackendCapabilities(i)
		if !b.Available {
			if !errors.Is(err, StatusBackendUnavailable) {
				t.Fatalf("%s did not load, capabilities gave %v", b.Name, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if caps.Kind != b.Kind || caps.DeviceCount != b.DeviceCount || caps.Blocksize8BitMin != 64 ||
			caps.Blocksize8BitMax != 4096 || caps.Blocksize4BitMin != 32 || caps.Blocksize4BitMax != 4096 ||
			caps.OptimizerBlock != 256 || caps.Int8MaxK != 131071 {
			t.Fatalf("%s: %+v", b.Name, caps)
		}
		if b.Kind == BackendCPU {
			for op := OpQuantizeBlockwise; op <= OpInt8LinearOutliers; op++ {
				if !caps.Offers(op) {
					t.Fatalf("cpu does not offer op %d: %+v", op, caps)
				}
			}
			if caps.Optimizers != 0x1fe || caps.OptimizerStateBits != 1<<8|1<<32 || caps.OptimizerMaxStep != 1<<63-1 {
				t.Fatalf("cpu: %+v", caps)
			}
		}
	}
	if _, err := GetBackendCapabilities(len(infos)); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("index past the list gave %v", err)
	}
}

func TestUnsupportedBlocksizeIsAnErrorWithTheLibraryMessage(t *testing.T) {
	ctx := newTestContext(t)
	a := make([]float32, 480)
	err := QuantizeBlockwise(ctx, a, 48, nil, make([]uint8, 480), make([]float32, 10))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error, got %v", err)
	}
	if e.Status != StatusInvalidArgument || !strings.Contains(e.Message, "blocksize") {
		t.Fatalf("got %v / %q", e.Status, e.Message)
	}
	if !errors.Is(err, StatusInvalidArgument) || errors.Is(err, StatusNotSupported) {
		t.Fatal("errors.Is does not match the status")
	}
	if !strings.Contains(err.Error(), e.Message) || !strings.HasPrefix(err.Error(), e.Status.String()) {
		t.Fatalf("Error() = %q", err.Error())
	}
}

func TestBadCodeTableIsAnError(t *testing.T) {
	if _, err := GetCodeTable(CodeTable(99)); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("code table 99: %v", err)
	}
	fp4, err := GetCodeTable(CodeFP4)
	if err != nil || len(fp4) != 16 {
		t.Fatalf("fp4: %d entries, %v", len(fp4), err)
	}
}

func TestShortSlicesAreRejectedBeforeTheCall(t *testing.T) {
	ctx := newTestContext(t)
	a := make([]float32, 1000)
	err := QuantizeBlockwise(ctx, a, 64, nil, make([]uint8, 999), make([]float32, 16))
	if !errors.Is(err, StatusInvalidArgument) || !strings.Contains(err.Error(), "q has 999 elements, needs 1000") {
		t.Fatalf("short q: %v", err)
	}
	err = Quantize4Bit(ctx, NF4, a, 64, make([]uint8, 500), make([]float32, 15))
	if !strings.Contains(err.Error(), "absmax has 15 elements, needs 16") {
		t.Fatalf("short absmax: %v", err)
	}
}

func TestUnavailableBackendIsAnErrorNotAFallback(t *testing.T) {
	infos, err := Backends()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range infos {
		if b.Kind == BackendHIP && b.Available {
			t.Skip("this machine has HIP")
		}
	}
	ctx, err := NewContext(&ContextOptions{Backend: BackendHIP})
	if err == nil {
		ctx.Close()
		t.Fatal("a HIP context was created without HIP")
	}
	var e *Error
	if !errors.As(err, &e) || e.Message == "" {
		t.Fatalf("want a message, got %v", err)
	}
}

func TestClosedContextIsAnError(t *testing.T) {
	ctx, err := NewContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err = QuantizeBlockwise(ctx, make([]float32, 64), 64, nil, make([]uint8, 64), make([]float32, 1))
	if !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("use after Close: %v", err)
	}
}

// signal is a deterministic pseudo-random vector (xorshift), roughly normal.
func signal(n int, seed uint64) []float32 {
	v := make([]float32, n)
	for i := range v {
		var sum float32
		for j := 0; j < 4; j++ {
			seed ^= seed << 13
			seed ^= seed >> 7
			seed ^= seed << 17
			sum += float32(seed>>40)/float32(1<<24) - 0.5
		}
		v[i] = sum
	}
	return v
}

func TestDoubleQuantizedScalesRoundTrip(t *testing.T) {
	ctx := newTestContext(t)
	x := signal(64*700+3, 7)
	const bs = 64
	packed := make([]uint8, PackedLen(len(x)))
	absmax := make([]float32, NumBlocks(len(x), bs))
	if err := Quantize4Bit(ctx, NF4, x, bs, packed, absmax); err != nil {
		t.Fatal(err)
	}
	absmaxQ := make([]uint8, len(absmax))
	absmax2 := make([]float32, NumBlocks(len(absmax), 256))
	offset, err := ctx.CompressAbsmax(absmax, absmaxQ, absmax2)
	if err != nil {
		t.Fatal(err)
	}
	var mean float64
	for _, v := range absmax {
		mean += float64(v)
	}
	mean /= float64(len(absmax))
	if math.Abs(float64(offset)-mean) > 1e-5*mean {
		t.Fatalf("offset %v, mean %v", offset, mean)
	}
	plain := make([]float32, len(x))
	nested := make([]float32, len(x))
	if err := Dequantize4Bit(ctx, NF4, packed, PlainScales(absmax), bs, plain); err != nil {
		t.Fatal(err)
	}
	if err := Dequantize4Bit(ctx, NF4, packed, NestedScales(absmaxQ, absmax2, offset), bs, nested); err != nil {
		t.Fatal(err)
	}
	var worst, peak float64
	for i := range x {
		worst = math.Max(worst, math.Abs(float64(plain[i]-nested[i])))
		peak = math.Max(peak, math.Abs(float64(plain[i])))
		if d := math.Abs(float64(x[i] - plain[i])); d > 0.17*float64(absmax[i/bs]) {
			t.Fatalf("element %d: %v -> %v (absmax %v)", i, x[i], plain[i], absmax[i/bs])
		}
	}
	if worst > 0.02*peak {
		t.Fatalf("nested vs plain: %v (peak %v)", worst, peak)
	}
}

func TestConcurrentCallsAndPerThreadErrors(t *testing.T) {
	ctx := newTestContext(t)
	x := signal(4096, 11)
	var wg sync.WaitGroup
	results := make([][]uint8, 8)
	errs := make([]error, 16)
	for g := 0; g < 8; g++ {
		wg.Add(2)
		go func(g int) {
			defer wg.Done()
			q := make([]uint8, len(x))
			errs[g] = QuantizeBlockwise(ctx, x, 256, nil, q, make([]float32, 16))
			results[g] = q
		}(g)
		go func(g int) {
			defer wg.Done()
			errs[8+g] = Quantize4Bit(ctx, NF4, x, 3, make([]uint8, 2048), make([]float32, 1366))
		}(g)
	}
	wg.Wait()
	for g := 0; g < 8; g++ {
		if errs[g] != nil {
			t.Fatal(errs[g])
		}
		sameBits(t, "concurrent q", results[g], results[0])
		if !errors.Is(errs[8+g], StatusInvalidArgument) || !strings.Contains(errs[8+g].Error(), "blocksize") {
			t.Fatalf("blocksize 3: %v", errs[8+g])
		}
	}
}

func TestCheckFiniteOptionNamesTheFirstNonFiniteElement(t *testing.T) {
	checked, err := NewContext(&ContextOptions{Backend: BackendCPU, CheckFinite: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer checked.Close()
	unchecked, err := NewContext(&ContextOptions{Backend: BackendCPU, CheckFinite: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer unchecked.Close()
	a := make([]float32, 3000)
	for i := range a {
		a[i] = float32(math.Sin(float64(i)))
	}
	a[2999] = float32(math.Inf(-1))
	a[777] = float32(math.NaN())
	q := make([]uint8, 3000)
	for i := range q {
		q[i] = 0xA5
	}
	absmax := make([]float32, 12)
	err = QuantizeBlockwise(checked, a, 256, nil, q, absmax)
	if !errors.Is(err, StatusInvalidArgument) || !strings.Contains(err.Error(), "A[777] is not finite") {
		t.Fatalf("checked: %v", err)
	}
	for i, b := range q {
		if b != 0xA5 {
			t.Fatalf("q[%d] was written", i)
		}
	}
	if err := QuantizeBlockwise(unchecked, a, 256, nil, q, absmax); err != nil {
		t.Fatalf("unchecked: %v", err)
	}
	if _, err := NewContext(&ContextOptions{Backend: BackendCPU, CheckFinite: 2}); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("check_finite 2: %v", err)
	}
}

func TestDeclaredBufferLengthsAreChecked(t *testing.T) {
	runtime.LockOSThread() // declarations belong to the OS thread
	defer runtime.UnlockOSThread()
	ctx, err := NewContext(&ContextOptions{Backend: BackendCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	a := make([]float32, 2048)
	q, absmax := make([]uint8, 2048), make([]float32, 8)
	start := unsafe.Pointer(&a[0])
	if err := DeclareBuffer(start, 1000*4); err != nil { // shorter than the slice
		t.Fatal(err)
	}
	err = QuantizeBlockwise(ctx, a, 256, nil, q, absmax)
	if !errors.Is(err, StatusInvalidArgument) || !strings.Contains(err.Error(), "A needs 8192 bytes") ||
		!strings.Contains(err.Error(), "has 4000 bytes") {
		t.Fatalf("declared 4000 bytes: %v", err)
	}
	if err := ForgetBuffer(start); err != nil {
		t.Fatal(err)
	}
	if err := QuantizeBlockwise(ctx, a, 256, nil, q, absmax); err != nil {
		t.Fatalf("after forgetting: %v", err)
	}
	if err := ForgetBuffer(start); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("forgetting twice: %v", err)
	}
	if err := DeclareBuffer(nil, 10); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("nil: %v", err)
	}
	runtime.KeepAlive(a)
}
