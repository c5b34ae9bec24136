package bnb

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// adamF64 is Adam as docs/OPS.md §6.3 states it, in float64: bias-corrected, decoupled weight
// decay after the step.
func adamF64(params OptimizerParams, p, m, v []float64, g []float32) {
	b1, b2 := float64(params.Beta1), float64(params.Beta2)
	lr, eps, wd := float64(params.LR), float64(params.Eps), float64(params.WeightDecay)
	t := float64(params.Step)
	c1, c2 := 1-math.Pow(b1, t), 1-math.Pow(b2, t)
	for i := range p {
		gi := float64(g[i])
		m[i] = b1*m[i] + (1-b1)*gi
		v[i] = b2*v[i] + (1-b2)*gi*gi
		p[i] -= lr * (m[i] / c1) / (math.Sqrt(v[i]/c2) + eps)
		if wd > 0 {
			p[i] *= 1 - lr*wd
		}
	}
}

func scaled(v []float32, s float32) []float32 {
	for i := range v {
		v[i] *= s
	}
	return v
}

func TestAdam32BitMatchesFloat64Adam(t *testing.T) {
	ctx := newTestContext(t)
	for _, wd := range []float32{0, 0.01} {
		n := 1000
		params := NewOptimizerParams(Adam)
		params.WeightDecay = wd
		p := signal(n, 11)
		m, v := make([]float32, n), make([]float32, n)
		p64, m64, v64 := make([]float64, n), make([]float64, n), make([]float64, n)
		for i, x := range p {
			p64[i] = float64(x)
		}
		for step := int64(1); step <= 5; step++ {
			params.Step = step
			g := scaled(signal(n, uint64(100+step)), 0.3)
			err := OptimizerUpdate(ctx, params, OptimizerTensors[float32]{P: p, G: g, State: &State32{State1: m, State2: v}})
			if err != nil {
				t.Fatal(err)
			}
			adamF64(params, p64, m64, v64, g)
			for i := 0; i < n; i++ {
				// binary32 arithmetic. On CUDA β^t is a few ulps off and divisions use a reciprocal
				// (OPS.md §6.1): ~3e-5 of an update, which is up to a few lr early on; so each
				// step may add up to 2e-4 lr.
				tolP := 4*float64(step)*1.2e-7*math.Abs(p64[i]) + 2e-4*float64(step)*float64(params.LR)
				if d := math.Abs(float64(p[i]) - p64[i]); d > tolP {
					t.Fatalf("wd %g step %d p[%d]: %g vs float64 %g", wd, step, i, p[i], p64[i])
				}
				if d := math.Abs(float64(m[i]) - m64[i]); d > 1e-6*float64(step) { // m may cancel: absolute
					t.Fatalf("wd %g step %d m[%d]: %g vs %g", wd, step, i, m[i], m64[i])
				}
				if d := math.Abs(float64(v[i]) - v64[i]); d > 1e-6*v64[i]+1e-12 {
					t.Fatalf("wd %g step %d v[%d]: %g vs %g", wd, step, i, v[i], v64[i])
				}
			}
		}
	}
}

// decode8 is the 8-bit state as the kernels decode it: qmap[code] * absmax[block].
func decode8(codes []uint8, absmax, qmap []float32) []float32 {
	out := make([]float32, len(codes))
	for i, c := range codes {
		out[i] = qmap[c] * absmax[i/OptimizerBlocksize]
	}
	return out
}

// codeGap is how far an encoding of x may land from it: the gap between the table entries
// around x/absmax (past the table's end, the distance to the last entry), scaled back.
func codeGap(x, absmax float32, qmap []float32) float32 {
	if absmax == 0 {
		return 0
	}
	r := x / absmax
	lo, hi := r, r
	below, above := float32(math.Inf(-1)), float32(math.Inf(1))
	for _, q := range qmap {
		if q <= r && q > below {
			below = q
		}
		if q >= r && q < above {
			above = q
		}
	}
	if !math.IsInf(float64(below), 0) {
		lo = below
	}
	if !math.IsInf(float64(above), 0) {
		hi = above
	}
	return (hi-lo)*absmax*1.001 + 1.2e-7*absmax
}

func TestAdam8BitMatchesThe32BitStepFromTheSameState(t *testing.T) {
	ctx := newTestContext(t)
	signed, err := GetCodeTable(CodeDynamicSigned)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := GetCodeTable(CodeDynamicUnsigned)
	if err != nil {
		t.Fatal(err)
	}
	n := 1000
	nblocks := NumBlocks(n, OptimizerBlocksize)
	params := NewOptimizerParams(Adam)
	params.WeightDecay = 0.01
	p8 := signal(n, 5)
	st := &State8{State1: make([]uint8, n), State2: make([]uint8, n),
		Absmax1: make([]float32, nblocks), Absmax2: make([]float32, nblocks)}
	for step := int64(1); step <= 4; step++ {
		params.Step = step
		g := scaled(signal(n, uint64(200+step)), 0.3)
		// The 32-bit step starts from what the 8-bit state holds now.
		p32 := append([]float32(nil), p8...)
		m32, v32 := decode8(st.State1, st.Absmax1, signed), decode8(st.State2, st.Absmax2, unsigned)
		if err := OptimizerUpdate(ctx, params, OptimizerTensors[float32]{P: p32, G: g, State: &State32{m32, v32}}); err != nil {
			t.Fatal(err)
		}
		if err := OptimizerUpdate(ctx, params, OptimizerTensors[float32]{P: p8, G: g, State: st}); err != nil {
			t.Fatal(err)
		}
		m8, v8 := decode8(st.State1, st.Absmax1, signed), decode8(st.State2, st.Absmax2, unsigned)
		for i := 0; i < n; i++ {
			// The parameter comes from the unquantized new state: the 32-bit result to rounding.
			tol := 8*1.2e-7*float32(math.Abs(float64(p32[i]))) + 1e-5*params.LR
			if d := float32(math.Abs(float64(p8[i] - p32[i]))); d > tol {
				t.Fatalf("step %d p[%d]: 8-bit %g vs 32-bit %g", step, i, p8[i], p32[i])
			}
			// The new state is the 32-bit one, encoded: within a code step of it.
			b := i / OptimizerBlocksize
			if d, gap := float32(math.Abs(float64(m8[i]-m32[i]))), codeGap(m32[i], st.Absmax1[b], signed); d > gap {
				t.Fatalf("step %d m[%d]: %g vs %g (gap %g)", step, i, m8[i], m32[i], gap)
			}
			if d, gap := float32(math.Abs(float64(v8[i]-v32[i]))), codeGap(v32[i], st.Absmax2[b], unsigned); d > gap {
				t.Fatalf("step %d v[%d]: %g vs %g (gap %g)", step, i, v8[i], v32[i], gap)
			}
		}
	}
}

// model is several tensors of different sizes with 32-bit and 8-bit state.
type model struct {
	p, g, f1, f2, a1, a2 [][]float32
	c1, c2               [][]uint8
}

func newModel(sizes []int, parts int) *model {
	m := &model{}
	for i, n := range sizes {
		nb := NumBlocks(n, OptimizerBlocksize)
		m.p = append(m.p, signal(n, uint64(i+1)))
		m.g = append(m.g, scaled(signal(n, uint64(i+50)), 0.3))
		m.f1, m.f2 = append(m.f1, make([]float32, parts*n)), append(m.f2, make([]float32, n))
		m.c1, m.c2 = append(m.c1, make([]uint8, parts*n)), append(m.c2, make([]uint8, n))
		m.a1, m.a2 = append(m.a1, make([]float32, parts*nb)), append(m.a2, make([]float32, nb))
	}
	return m
}

func (m *model) tensors(bits8 bool) []OptimizerTensors[float32] {
	var ts []OptimizerTensors[float32]
	for i := range m.p {
		var st OptimizerState = &State32{State1: m.f1[i], State2: m.f2[i]}
		if bits8 {
			st = &State8{State1: m.c1[i], State2: m.c2[i], Absmax1: m.a1[i], Absmax2: m.a2[i]}
		}
		ts = append(ts, OptimizerTensors[float32]{P: m.p[i], G: m.g[i], State: st})
	}
	return ts
}

func TestOptimizerUpdateMultiEqualsSingleUpdates(t *testing.T) {
	ctx := newTestContext(t)
	sizes := []int{1000, 256, 3, 4097}
	for _, opt := range []Optimizer{Adam, AdEMAMix, Lion, Momentum} {
		for _, bits8 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/8bit=%v", opt, bits8), func(t *testing.T) {
				one, many := newModel(sizes, opt.State1Parts()), newModel(sizes, opt.State1Parts())
				params := NewOptimizerParams(opt)
				params.WeightDecay = 0.01
				for step := int64(1); step <= 3; step++ {
					params.Step = step
					for _, ts := range one.tensors(bits8) {
						if err := OptimizerUpdate(ctx, params, ts); err != nil {
							t.Fatal(err)
						}
					}
					if err := OptimizerUpdateMulti(ctx, params, many.tensors(bits8)); err != nil {
						t.Fatal(err)
					}
				}
				for i := range sizes {
					sameBits(t, "p", bitsOf(many.p[i]), bitsOf(one.p[i]))
					sameBits(t, "state1 (32)", bitsOf(many.f1[i]), bitsOf(one.f1[i]))
					sameBits(t, "state2 (32)", bitsOf(many.f2[i]), bitsOf(one.f2[i]))
					sameBits(t, "state1 (8)", many.c1[i], one.c1[i])
					sameBits(t, "state2 (8)", many.c2[i], one.c2[i])
					sameBits(t, "absmax1", bitsOf(many.a1[i]), bitsOf(one.a1[i]))
					sameBits(t, "absmax2", bitsOf(many.a2[i]), bitsOf(one.a2[i]))
				}
			})
		}
	}
}

func wantMessage(t *testing.T, err error, part string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), part) {
		t.Fatalf("got %v, want an error containing %q", err, part)
	}
}

func TestOptimizerShortOrMissingStateIsAnErrorNamingIt(t *testing.T) {
	ctx := newTestContext(t)
	adam := NewOptimizerParams(Adam)
	p, g := make([]float32, 300), make([]float32, 300)
	err := OptimizerUpdate(ctx, adam, OptimizerTensors[float32]{P: p, G: g,
		State: &State32{State1: make([]float32, 300), State2: make([]float32, 299)}})
	wantMessage(t, err, "tensors.State2 has 299 elements, needs 300")
	err = OptimizerUpdate(ctx, adam, OptimizerTensors[float32]{P: p, G: g, State: &State32{State1: make([]float32, 300)}})
	wantMessage(t, err, "tensors.State2 is required by Adam")
	err = OptimizerUpdate(ctx, NewOptimizerParams(AdEMAMix), OptimizerTensors[float32]{P: p, G: g,
		State: &State32{State1: make([]float32, 300), State2: make([]float32, 300)}})
	wantMessage(t, err, "tensors.State1 has 300 elements, needs 600")
	err = OptimizerUpdate(ctx, adam, OptimizerTensors[float32]{P: p, G: g, State: &State8{State1: make([]uint8, 300),
		State2: make([]uint8, 300), Absmax1: make([]float32, 1), Absmax2: make([]float32, 2)}})
	wantMessage(t, err, "tensors.Absmax1 has 1 elements, needs 2")
	err = OptimizerUpdate(ctx, adam, OptimizerTensors[float32]{P: p, G: g})
	wantMessage(t, err, "tensors.State is <nil>")
	lamb := NewOptimizerParams(LAMB)
	lamb.MaxUnorm = 1
	err = OptimizerUpdate(ctx, lamb, OptimizerTensors[float32]{P: p, G: g,
		State: &State32{State1: make([]float32, 300), State2: make([]float32, 300)}})
	wantMessage(t, err, "tensors.UnormVec is required")
	// The library's own checks speak too.
	adam.Step = 0
	err = OptimizerUpdate(ctx, adam, OptimizerTensors[float32]{P: p, G: g,
		State: &State32{State1: make([]float32, 300), State2: make([]float32, 300)}})
	wantMessage(t, err, "step")

	mom := NewOptimizerParams(Momentum)
	ts := newModel([]int{100, 200}, 1).tensors(false)
	ts[1].State = &State32{State1: make([]float32, 10)}
	wantMessage(t, OptimizerUpdateMulti(ctx, mom, ts), "tensors[1].State1 has 10")
	ts = newModel([]int{100, 200}, 1).tensors(false)
	ts[1] = newModel([]int{200}, 1).tensors(true)[0]
	wantMessage(t, OptimizerUpdateMulti(ctx, mom, ts), "tensors[1] has 8-bit state")
}

func TestLAMBClippingReportsTheUpdateNorm(t *testing.T) {
	ctx := newTestContext(t)
	n := 500
	params := NewOptimizerParams(LAMB)
	params.MaxUnorm = 1
	p := signal(n, 3)
	var norm float64
	for _, x := range p {
		norm += float64(x) * float64(x)
	}
	params.ParamNorm = float32(math.Sqrt(norm))
	g := scaled(signal(n, 4), 0.3)
	unorm := []float32{float32(math.NaN())}
	err := OptimizerUpdate(ctx, params, OptimizerTensors[float32]{P: p, G: g,
		State: &State32{State1: make([]float32, n), State2: make([]float32, n)}, UnormVec: unorm})
	if err != nil {
		t.Fatal(err)
	}
	// OPS.md §6.4: the sum of squares of the bias-corrected update; at step 1 each term is
	// (g / (|g| + eps))^2.
	var want float64
	for _, x := range g {
		u := float64(x) / (math.Abs(float64(x)) + float64(params.Eps))
		want += u * u
	}
	if math.Abs(float64(unorm[0])-want) > 1e-4*want {
		t.Fatalf("unorm %g, want %g", unorm[0], want)
	}
}
