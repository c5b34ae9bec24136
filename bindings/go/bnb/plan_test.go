package bnb

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unsafe"
)

func TestGemm4BitTransposedIsTheOtherOrientation(t *testing.T) {
	ctx := newTestContext(t)
	m, n, k, bs := 3, 40, 128, 64
	packed := make([]uint8, PackedLen(n*k))
	absmax := make([]float32, NumBlocks(n*k, bs))
	if err := Quantize4Bit(ctx, FP4, signal(n*k, 4), bs, packed, absmax); err != nil {
		t.Fatal(err)
	}
	wdq := make([]float32, n*k)
	if err := Dequantize4Bit(ctx, FP4, packed, PlainScales(absmax), bs, wdq); err != nil {
		t.Fatal(err)
	}
	a := signal(m*n, 5)
	dst := make([]float32, m*k)
	ran(t, Gemm4BitTransposed(ctx, m, n, k, a, packed, PlainScales(absmax), FP4, bs, dst))
	num, den := 0.0, 0.0
	for i := 0; i < m; i++ {
		for j := 0; j < k; j++ {
			want := 0.0
			for r := 0; r < n; r++ {
				want += float64(a[i*n+r]) * float64(wdq[r*k+j])
			}
			d := float64(dst[i*k+j]) - want
			num += d * d
			den += want * want
		}
	}
	if num/den > 1e-10 {
		t.Fatalf("relative error %g", num/den)
	}
	wantMessage(t, Gemm4BitTransposed(ctx, m, n, k, a, packed, PlainScales(absmax), FP4, bs, dst[1:]), "dst has")
}

func TestGemm4PlanRunsEqualDirectGemm4Bit(t *testing.T) {
	ctx := newTestContext(t)
	n, k, bs := 48, 256, 64
	w := signal(n*k, 1)
	packed := make([]uint8, PackedLen(n*k))
	absmax := make([]float32, NumBlocks(n*k, bs))
	if err := Quantize4Bit(ctx, NF4, w, bs, packed, absmax); err != nil {
		t.Fatal(err)
	}
	absmaxQ := make([]uint8, len(absmax))
	absmax2 := make([]float32, NumBlocks(len(absmax), 256))
	offset, err := ctx.CompressAbsmax(absmax, absmaxQ, absmax2)
	if err != nil {
		t.Fatal(err)
	}
	bias := scaled(signal(n, 2), 0.5)
	for _, c := range []struct {
		name   string
		scales Scales
		bias   []float32
	}{{"plain", PlainScales(absmax), nil}, {"plain+bias", PlainScales(absmax), bias},
		{"nested+bias", NestedScales(absmaxQ, absmax2, offset), bias}} {
		plan, err := NewGemm4Plan(ctx, n, k, packed, c.scales, NF4, bs, c.bias)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []int{1, 3, 17} {
			a := signal(m*k, uint64(m))
			direct, planned := make([]float32, m*n), make([]float32, m*n)
			ran(t, Gemm4Bit(ctx, m, n, k, a, packed, c.scales, NF4, bs, c.bias, direct))
			if err := plan.Run(m, a, planned); err != nil {
				t.Fatal(err)
			}
			sameBits(t, c.name, bitsOf(planned), bitsOf(direct))
		}
		if err := plan.Close(); err != nil {
			t.Fatal(err)
		}
		if err := plan.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		wantMessage(t, plan.Run(1, make([]float32, k), make([]float32, n)), "the plan is closed")
	}

	// fp16, the plan's own checks, and a plan that the context's Close takes with it.
	plan, err := NewGemm4Plan[F16](ctx, n, k, packed, PlainScales(absmax), NF4, bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := make([]F16, 2*k)
	for i, x := range signal(2*k, 9) {
		a[i] = F16FromFloat32(x)
	}
	direct, planned := make([]F16, 2*n), make([]F16, 2*n)
	ran(t, Gemm4Bit(ctx, 2, n, k, a, packed, PlainScales(absmax), NF4, bs, nil, direct))
	if err := plan.Run(2, a, planned); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "f16", planned, direct)
	wantMessage(t, plan.Run(3, a, planned), "a has 512 elements, needs 768")
	_, err = NewGemm4Plan[float32](ctx, n, k, packed[:10], PlainScales(absmax), NF4, bs, nil)
	wantMessage(t, err, "w has 10")
	_, err = NewGemm4Plan[float32](ctx, n, k, packed, PlainScales(absmax), NF4, 48, nil)
	if !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("blocksize 48: %v", err)
	}
	other, err := NewContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := NewGemm4Plan[float32](other, n, k, packed, PlainScales(absmax), NF4, bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	wantMessage(t, orphan.Run(1, make([]float32, k), make([]float32, n)), "closed")
	if err := orphan.Close(); err != nil {
		t.Fatalf("Close after the context's: %v", err)
	}
}

// The int8 layer of the tests below: m, n, k, w [n,k], scb [n], a [m,k] with an outlier at column
// 7 (threshold 6) and bias [n].
func int8Layer5x40x96() (int, int, int, []int8, []float32, []F16, []F16) {
	m, n, k := 5, 40, 96
	w := make([]int8, n*k)
	for i := range w {
		w[i] = int8((i*37 + 11) % 255)
	}
	scb := make([]float32, n)
	for r := range scb {
		scb[r] = 0.5 + float32(r)*0.01
	}
	a := make([]F16, m*k)
	for i, x := range signal(m*k, 4) {
		a[i] = F16FromFloat32(x)
	}
	a[7] = F16FromFloat32(9)
	bias := make([]F16, n)
	for i, x := range signal(n, 5) {
		bias[i] = F16FromFloat32(x * 0.25)
	}
	return m, n, k, w, scb, a, bias
}

func TestInt8LinearEqualsTheThreeCalls(t *testing.T) {
	ctx := newTestContext(t)
	m, n, k, w, scb, a, bias := int8Layer5x40x96()
	for _, c := range []struct {
		threshold float32
		bias      []F16
	}{{0, nil}, {0, bias}, {6, bias}} {
		q3, rs3, acc3, out3 := make([]int8, m*k), make([]float32, m), make([]int32, m*n), make([]F16, m*n)
		ran(t, Int8VectorwiseQuant(ctx, m, k, a, c.threshold, q3, rs3))
		if err := ctx.Int8Matmul(m, n, k, q3, w, acc3); err != nil {
			t.Fatal(err)
		}
		if err := Int8MmDequant(ctx, m, n, acc3, rs3, scb, c.bias, out3); err != nil {
			t.Fatal(err)
		}
		q, rs, acc, out := make([]int8, m*k), make([]float32, m), make([]int32, m*n), make([]F16, m*n)
		if err := Int8Linear(ctx, m, n, k, a, c.threshold, w, scb, c.bias, q, rs, acc, out); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "q", q, q3)
		sameBits(t, "rowStats", bitsOf(rs), bitsOf(rs3))
		sameBits(t, "out", out, out3)
	}
	q, rs, out := make([]int8, m*k), make([]float32, m), make([]F16, m*n)
	wantMessage(t, Int8Linear(ctx, m, n, k, a, 0, w, scb, nil, q, rs, make([]int32, m*n-1), out),
		"acc has 199 elements, needs 200")
	wantMessage(t, Int8Linear(ctx, m, n, k, a, 0, w, scb[:3], nil, q, rs, make([]int32, m*n), out), "scb has 3")
}

func TestInt8LinearOutliersAddsTheOutlierProduct(t *testing.T) {
	ctx := newTestContext(t)
	m, n, k, w, scb, a, bias := int8Layer5x40x96()
	a[2*k+50] = F16FromFloat32(-12.5) // outlier columns 7 and 50 at threshold 6
	for _, threshold := range []float32{0, 6} {
		q1, rs1, acc1, out1 := make([]int8, m*k), make([]float32, m), make([]int32, m*n), make([]F16, m*n)
		if err := Int8Linear(ctx, m, n, k, a, threshold, w, scb, bias, q1, rs1, acc1, out1); err != nil {
			t.Fatal(err)
		}
		q, rs, acc, cols, out := make([]int8, m*k), make([]float32, m), make([]int32, m*n), make([]int32, k),
			make([]F16, m*n)
		count, err := Int8LinearOutliers(ctx, m, n, k, a, threshold, w, scb, bias, q, rs, acc, cols, out)
		if errors.Is(err, StatusNotSupported) {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		sameBits(t, "q", q, q1)
		if threshold == 0 {
			if count != 0 {
				t.Fatalf("count %d at threshold 0", count)
			}
			sameBits(t, "out", out, out1)
			continue
		}
		sameBits(t, "columns", cols[:count], []int32{7, 50})
		// docs/OPS.md §5.10 (no subnormals here, so no flushing).
		want := make([]F16, m*n)
		for i := range want {
			row, col := i/n, i%n
			var s float32
			for _, c := range cols[:count] {
				ws := float32(w[col*k+int(c)]) * scb[col]
				wc := F16FromFloat32(ws * float32(1.0/127.0)).Float32()
				s += a[row*k+int(c)].Float32() * wc // the product of two fp16 values is exact: fma or not
			}
			want[i] = F16FromFloat32(out1[i].Float32() + F16FromFloat32(s).Float32())
		}
		sameBits(t, "out", out, want)
	}
	q, rs, out := make([]int8, m*k), make([]float32, m), make([]F16, m*n)
	_, err := Int8LinearOutliers(ctx, m, n, k, a, 6, w, scb, nil, q, rs, make([]int32, m*n), make([]int32, k-1), out)
	wantMessage(t, err, "columns has 95 elements, needs 96")
}

func TestPagedBuffersHoldOptimizerState(t *testing.T) {
	ctx := newTestContext(t)
	n := 3000
	pb, err := NewPagedBuffer[float32](ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	for i, x := range pb.Slice() {
		if x != 0 {
			t.Fatalf("element %d is %g, want 0", i, x)
		}
	}
	copy(pb.Slice(), signal(n, 6))
	if err := pb.PrefetchToDevice(); err != nil {
		t.Fatal(err)
	}
	if err := pb.PrefetchToHost(); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "after prefetches", bitsOf(pb.Slice()), bitsOf(signal(n, 6)))

	mb, _ := NewPagedBuffer[float32](ctx, n)
	vb, err := NewPagedBuffer[float32](ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	g := scaled(signal(n, 8), 0.2)
	params := NewOptimizerParams(Adam)
	err = OptimizerUpdate(ctx, params, OptimizerTensors[float32]{P: pb.Slice(), G: g,
		State: &State32{State1: mb.Slice(), State2: vb.Slice()}})
	if err != nil {
		t.Fatal(err)
	}
	p, m, v := signal(n, 6), make([]float32, n), make([]float32, n)
	if err := OptimizerUpdate(ctx, params, OptimizerTensors[float32]{P: p, G: g, State: &State32{m, v}}); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "p", bitsOf(pb.Slice()), bitsOf(p))
	sameBits(t, "m", bitsOf(mb.Slice()), bitsOf(m))
	sameBits(t, "v", bitsOf(vb.Slice()), bitsOf(v))
	// A second step through the multi-tensor call, state still paged.
	params.Step = 2
	err = OptimizerUpdateMulti(ctx, params, []OptimizerTensors[float32]{{P: pb.Slice(), G: g,
		State: &State32{State1: mb.Slice(), State2: vb.Slice()}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := OptimizerUpdate(ctx, params, OptimizerTensors[float32]{P: p, G: g, State: &State32{m, v}}); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "p (multi)", bitsOf(pb.Slice()), bitsOf(p))
	sameBits(t, "v (multi)", bitsOf(vb.Slice()), bitsOf(v))

	// Slices of the context's paged buffers need no staging; Go memory does (asked as a GPU
	// backend would ask).
	ctx.mu.RLock()
	s := &stager{raw: ctx.raw, ctx: ctx}
	inside, past, goMem := s.inPlace(unsafe.Pointer(&vb.Slice()[10]), 40), s.inPlace(unsafe.Pointer(&vb.Slice()[10]), 4*n),
		s.inPlace(unsafe.Pointer(&p[0]), 40)
	ctx.mu.RUnlock()
	if !inside || past || goMem {
		t.Fatalf("inPlace: inside %v, past the end %v, Go memory %v", inside, past, goMem)
	}

	if err := mb.Close(); err != nil {
		t.Fatal(err)
	}
	if mb.Slice() != nil || mb.Close() != nil {
		t.Fatal("a closed buffer has no view and closes again harmlessly")
	}
	wantMessage(t, mb.PrefetchToDevice(), "closed")

	codes, err := NewPagedBuffer[uint8](ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	sameBits(t, "codes", codes.Slice(), make([]uint8, 5))
	if _, err := NewPagedBuffer[int32](ctx, 0); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("n = 0: %v", err)
	}
	// The context's Close frees what is still open.
	other, _ := NewContext(nil)
	if _, err := NewPagedBuffer[float32](other, 10); err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestEveryExportedFunctionIsWrapped fails when src/core/symbols.txt lists a function that this
// package never calls (from Go, or from shims.c on its behalf).
func TestEveryExportedFunctionIsWrapped(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("..", "..", "..", "src", "core", "symbols.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var symbols []string
	for _, line := range strings.Split(string(text), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			symbols = append(symbols, line)
		}
	}
	if len(symbols) < 37 {
		t.Fatalf("symbols.txt lists only %d functions", len(symbols))
	}
	if missing := uncalled(t, symbols); len(missing) > 0 {
		t.Fatalf("exported by libbnb but not called by the Go package: %v", missing)
	}
	// The check itself: a name that nothing calls is reported.
	if missing := uncalled(t, []string{"bnb_version_string", "bnb_not_a_function"}); len(missing) != 1 ||
		missing[0] != "bnb_not_a_function" {
		t.Fatalf("uncalled reports %v", missing)
	}
}

// uncalled lists the functions that no non-test source of the package calls.
func uncalled(t *testing.T, symbols []string) []string {
	var source strings.Builder
	files, _ := filepath.Glob("*.go")
	cfiles, _ := filepath.Glob("*.c")
	for _, f := range append(files, cfiles...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		source.Write(b)
	}
	// Calls only: C.name( from Go, name( from C, not a mention in a comment (the cgo preamble
	// holds only includes).
	code := regexp.MustCompile(`(?s)/\*.*?\*/|//[^\n]*`).ReplaceAllString(source.String(), "")
	var missing []string
	for _, s := range symbols {
		if !regexp.MustCompile(`(^|[^A-Za-z0-9_])` + regexp.QuoteMeta(s) + `\(`).MatchString(code) {
			missing = append(missing, s)
		}
	}
	return missing
}
