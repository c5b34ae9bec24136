package bnb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
)

// ran reports whether an op ran; a backend that does not offer it skips the test (which
// backend offers what is the consistency suite's business, not the binding's).
func ran(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, StatusNotSupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func caseBy(t *testing.T, op string, pred func(goldenCase) bool) goldenCase {
	t.Helper()
	for _, c := range loadManifest(t) {
		if c.Op == op && c.Backend == "cuda" && pred(c) {
			return c
		}
	}
	t.Fatalf("no cuda %s case", op)
	return goldenCase{}
}

func readI8(t *testing.T, a goldenArray) []int8 {
	b := readBytes(t, a)
	v := make([]int8, len(b))
	for i, x := range b {
		v[i] = int8(x)
	}
	return v
}

func readI32(t *testing.T, a goldenArray) []int32 {
	b := readBytes(t, a)
	v := make([]int32, len(b)/4)
	for i := range v {
		v[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func TestGoldenInt8VectorwiseQuantAndOutliers(t *testing.T) {
	c := caseBy(t, "int8_vectorwise_quant", func(c goldenCase) bool { _, ok := c.Outputs["outlier_cols"]; return ok })
	rows, cols := c.Inputs["A"].Shape[0], c.Inputs["A"].Shape[1]
	a := loadAs[F16](t, c.Inputs["A"])
	threshold := float32(c.Params["threshold"].(float64))
	ctx := newTestContext(t)
	q := make([]int8, rows*cols)
	rowStats := make([]float32, rows)
	ran(t, Int8VectorwiseQuant(ctx, rows, cols, a, threshold, q, rowStats))
	sameBits(t, "q", q, readI8(t, c.Outputs["q"]))
	sameBits(t, "row_stats", bitsOf(rowStats), bitsOf(readF32(t, c.Outputs["row_stats"])))
	got, err := Int8OutlierColumns(ctx, rows, cols, a, threshold)
	ran(t, err)
	sameBits(t, "outlier_cols", got, readI32(t, c.Outputs["outlier_cols"]))
}

func TestGoldenInt8MatmulAndDequant(t *testing.T) {
	mm := caseBy(t, "int8_linear_matmul", func(goldenCase) bool { return true })
	m, k, n := mm.Inputs["A"].Shape[0], mm.Inputs["A"].Shape[1], mm.Inputs["B"].Shape[0]
	ctx := newTestContext(t)
	acc := make([]int32, m*n)
	ran(t, ctx.Int8Matmul(m, n, k, readI8(t, mm.Inputs["A"]), readI8(t, mm.Inputs["B"]), acc))
	sameBits(t, "C", acc, readI32(t, mm.Outputs["C"]))

	dq := caseBy(t, "int8_mm_dequant", func(c goldenCase) bool { _, ok := c.Inputs["bias"]; return ok })
	out := make([]F16, m*n)
	ran(t, Int8MmDequant(ctx, m, n, readI32(t, dq.Inputs["C"]), readF32(t, dq.Inputs["row_stats"]),
		readF32(t, dq.Inputs["col_stats"]), loadAs[F16](t, dq.Inputs["bias"]), out))
	want := readU16(t, dq.Outputs["out"])
	for i := range out { // one fp16 ulp, as the golden README allows
		w := F16(want[i])
		ulp := math.Abs(float64(w.Float32() - (w ^ 1).Float32()))
		if d := math.Abs(float64(out[i].Float32() - w.Float32())); d > ulp {
			t.Fatalf("element %d: got %v, want %v", i, out[i].Float32(), w.Float32())
		}
	}
}

func TestGoldenGemm4Bit(t *testing.T) {
	c := caseBy(t, "matmul_4bit", func(c goldenCase) bool {
		return fmt.Sprint(c.Params["M"]) == "4" && c.Params["nested"] == false
	})
	m, n, k := int(c.Params["M"].(float64)), int(c.Params["N"].(float64)), int(c.Params["K"].(float64))
	bs := int(c.Params["blocksize"].(float64))
	quant := FP4
	if c.Params["quant_type"] == "nf4" {
		quant = NF4
	}
	want := readF32(t, c.Outputs["out"])
	out := make([]float32, m*n)
	ran(t, Gemm4Bit(newTestContext(t), m, n, k, readF32(t, c.Inputs["A"]), readBytes(t, c.Inputs["B_packed"]),
		PlainScales(readF32(t, c.Inputs["absmax"])), quant, bs, nil, out))
	scale := 1.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	for i := range out { // reduction order is not specified
		if d := math.Abs(float64(out[i] - want[i])); d > 1e-4*scale*math.Sqrt(float64(k)) {
			t.Fatalf("element %d: got %v, want %v", i, out[i], want[i])
		}
	}
}
