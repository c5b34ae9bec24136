package bnb

import (
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// The golden vectors of tests/data/golden: manifest.json names each case's arrays, each stored
// gzip-compressed beside the name it gives (README.md there).
type goldenArray struct {
	File  string `json:"file"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
}

type goldenCase struct {
	Op      string                 `json:"op"`
	Backend string                 `json:"backend"`
	Params  map[string]any         `json:"params"`
	Inputs  map[string]goldenArray `json:"inputs"`
	Outputs map[string]goldenArray `json:"outputs"`
}

// goldenDir is $BNB_GOLDEN_DIR, else the repository's tests/data/golden.
func goldenDir() string {
	if d := os.Getenv("BNB_GOLDEN_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "..", "tests", "data", "golden")
}

func loadManifest(t *testing.T) []goldenCase {
	t.Helper()
	path := filepath.Join(goldenDir(), "manifest.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no golden vectors: reading %s: %v (BNB_GOLDEN_DIR overrides the directory)", path, err)
	}
	var m struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	return m.Cases
}

// findCase is the first cuda case of op whose params (compared as text) and input dtype match.
func findCase(t *testing.T, op, dtype string, params map[string]string) goldenCase {
	t.Helper()
	for _, c := range loadManifest(t) {
		if c.Op != op || c.Backend != "cuda" || c.Inputs["A"].DType != dtype {
			continue
		}
		match := true
		for k, want := range params {
			if fmt.Sprint(c.Params[k]) != want {
				match = false
			}
		}
		if match {
			return c
		}
	}
	t.Fatalf("no cuda %s case with %v and %s", op, params, dtype)
	return goldenCase{}
}

// goldenDTypeSize is the bytes per element of a manifest dtype.
var goldenDTypeSize = map[string]int{"float32": 4, "int32": 4, "float16": 2, "bfloat16": 2, "uint8": 1, "int8": 1, "int64": 8}

// readBytes is an array's raw contents. gzip's reader checks the CRC-32 and length at the end of
// the file, and the size must match the manifest's shape and dtype, so a damaged file fails.
func readBytes(t *testing.T, a goldenArray) []byte {
	t.Helper()
	path := filepath.Join(goldenDir(), a.File+".gz")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	want, ok := goldenDTypeSize[a.DType]
	if !ok {
		t.Fatalf("%s: unknown dtype %s", path, a.DType)
	}
	for _, d := range a.Shape {
		want *= d
	}
	if len(b) != want {
		t.Fatalf("%s: %d bytes, its shape and dtype need %d", path, len(b), want)
	}
	return b
}

func readF32(t *testing.T, a goldenArray) []float32 {
	t.Helper()
	if a.DType != "float32" {
		t.Fatalf("%s is %s, not float32", a.File, a.DType)
	}
	b := readBytes(t, a)
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func readU16(t *testing.T, a goldenArray) []uint16 {
	t.Helper()
	b := readBytes(t, a)
	v := make([]uint16, len(b)/2)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return v
}

// loadAs reads an array as the element type T, checking the dtype agrees.
func loadAs[T Float](t *testing.T, a goldenArray) []T {
	t.Helper()
	want := map[DType]string{F32DType: "float32", F16DType: "float16", BF16DType: "bfloat16"}[dtypeOf[T]()]
	if a.DType != want {
		t.Fatalf("%s is %s, want %s", a.File, a.DType, want)
	}
	out := make([]T, 0)
	switch p := any(&out).(type) {
	case *[]float32:
		*p = readF32(t, a)
	case *[]F16:
		for _, u := range readU16(t, a) {
			*p = append(*p, F16(u))
		}
	case *[]BF16:
		for _, u := range readU16(t, a) {
			*p = append(*p, BF16(u))
		}
	}
	return out
}

// bitsOf is the raw bit pattern of each element, so NaN and -0.0 compare exactly.
func bitsOf[T Float](v []T) []uint32 {
	b := make([]uint32, len(v))
	for i, x := range v {
		switch x := any(x).(type) {
		case float32:
			b[i] = math.Float32bits(x)
		case F16:
			b[i] = uint32(x)
		case BF16:
			b[i] = uint32(x)
		}
	}
	return b
}

func sameBits[E comparable](t *testing.T, what string, got, want []E) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	bad, first := 0, -1
	for i := range got {
		if got[i] != want[i] {
			if first < 0 {
				first = i
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d differ; first at %d: got %v, want %v", what, bad, len(got), first, got[first], want[first])
	}
}

func newTestContext(t *testing.T) *Context {
	t.Helper()
	ctx, err := NewContext(nil)
	if err != nil {
		t.Fatalf("NewContext: %v", err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

func checkBlockwise[T Float](t *testing.T, blocksize int, dtype string) {
	c := findCase(t, "quantize_blockwise", dtype, map[string]string{"blocksize": fmt.Sprint(blocksize), "code": "dynamic_signed"})
	a := loadAs[T](t, c.Inputs["A"])
	wantQ := readBytes(t, c.Outputs["q"])
	wantAbsmax := readF32(t, c.Outputs["absmax"])
	ctx := newTestContext(t)

	q := make([]uint8, len(a))
	for i := range q {
		q[i] = 0xa5 // poison: every code must be written
	}
	absmax := make([]float32, NumBlocks(len(a), blocksize))
	for i := range absmax {
		absmax[i] = float32(math.NaN())
	}
	if err := QuantizeBlockwise(ctx, a, blocksize, nil, q, absmax); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "absmax", bitsOf(absmax), bitsOf(wantAbsmax))
	sameBits(t, "q", q, wantQ)

	want := loadAs[T](t, c.Outputs["dequant"])
	got := make([]T, len(a))
	if err := DequantizeBlockwise(ctx, wantQ, wantAbsmax, nil, blocksize, got); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "dequant", bitsOf(got), bitsOf(want))
}

func check4Bit[T Float](t *testing.T, quant Quant4, blocksize int, dtype string) {
	name := map[Quant4]string{NF4: "nf4", FP4: "fp4"}[quant]
	c := findCase(t, "quantize_4bit", dtype, map[string]string{"blocksize": fmt.Sprint(blocksize), "quant_type": name})
	a := loadAs[T](t, c.Inputs["A"])
	wantPacked := readBytes(t, c.Outputs["packed"])
	wantAbsmax := readF32(t, c.Outputs["absmax"])
	ctx := newTestContext(t)

	packed := make([]uint8, PackedLen(len(a)))
	for i := range packed {
		packed[i] = 0x5a
	}
	absmax := make([]float32, NumBlocks(len(a), blocksize))
	if err := Quantize4Bit(ctx, quant, a, blocksize, packed, absmax); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "absmax", bitsOf(absmax), bitsOf(wantAbsmax))
	sameBits(t, "packed", packed, wantPacked)

	want := loadAs[T](t, c.Outputs["dequant"])
	got := make([]T, len(a))
	if err := Dequantize4Bit(ctx, quant, wantPacked, PlainScales(wantAbsmax), blocksize, got); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "dequant", bitsOf(got), bitsOf(want))
}

func TestGoldenBlockwiseF32Blocksize64(t *testing.T)   { checkBlockwise[float32](t, 64, "float32") }
func TestGoldenBlockwiseBF16Blocksize512(t *testing.T) { checkBlockwise[BF16](t, 512, "bfloat16") }
func TestGoldenNF4F32Blocksize64(t *testing.T)         { check4Bit[float32](t, NF4, 64, "float32") }
func TestGoldenFP4F16Blocksize256(t *testing.T)        { check4Bit[F16](t, FP4, 256, "float16") }

func TestGoldenNestedFP4Dequantize(t *testing.T) {
	c := findCase(t, "quantize_4bit_nested", "float32", map[string]string{"blocksize": "128", "quant_type": "fp4"})
	packed := readBytes(t, c.Outputs["packed"])
	scales := NestedScales(readBytes(t, c.Outputs["absmax_q"]), readF32(t, c.Outputs["absmax_absmax"]),
		readF32(t, c.Outputs["absmax_offset"])[0])
	want := readF32(t, c.Outputs["dequant"])
	got := make([]float32, len(want))
	if err := Dequantize4Bit(newTestContext(t), FP4, packed, scales, 128, got); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "dequant", bitsOf(got), bitsOf(want))
}

func TestGoldenCodeTables(t *testing.T) {
	var c goldenCase
	for _, k := range loadManifest(t) {
		if k.Op == "code_tables" {
			c = k
		}
	}
	for which, name := range map[CodeTable]string{CodeDynamicSigned: "dynamic_signed",
		CodeDynamicUnsigned: "dynamic_unsigned", CodeNF4: "nf4", CodeFP4: "fp4"} {
		got, err := GetCodeTable(which)
		if err != nil {
			t.Fatal(err)
		}
		sameBits(t, name, bitsOf(got), bitsOf(readF32(t, c.Outputs[name])))
	}
}
