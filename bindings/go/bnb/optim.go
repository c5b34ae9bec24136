package bnb

/*
#include "shims.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// OptimizerBlocksize is the 8-bit state's block: one absmax per 256 elements.
const OptimizerBlocksize = 256

// Optimizer is an update rule (bnb_optimizer_t); docs/OPS.md §6 gives the rules.
type Optimizer int32

const (
	Adam     Optimizer = C.BNB_OPT_ADAM // Adam and AdamW (decoupled weight decay)
	Momentum Optimizer = C.BNB_OPT_MOMENTUM
	RMSprop  Optimizer = C.BNB_OPT_RMSPROP
	Lion     Optimizer = C.BNB_OPT_LION
	Adagrad  Optimizer = C.BNB_OPT_ADAGRAD
	AdEMAMix Optimizer = C.BNB_OPT_ADEMAMIX
	LAMB     Optimizer = C.BNB_OPT_LAMB
	LARS     Optimizer = C.BNB_OPT_LARS
)

func (o Optimizer) String() string {
	names := map[Optimizer]string{Adam: "Adam", Momentum: "Momentum", RMSprop: "RMSprop", Lion: "Lion",
		Adagrad: "Adagrad", AdEMAMix: "AdEMAMix", LAMB: "LAMB", LARS: "LARS"}
	if name, ok := names[o]; ok {
		return name
	}
	return fmt.Sprintf("optimizer(%d)", int32(o))
}

// HasState2 says whether the rule keeps a second state (State2, and Absmax2 at 8 bits).
func (o Optimizer) HasState2() bool { return o == Adam || o == AdEMAMix || o == LAMB }

// State1Parts is how many n-element parts State1 (and Absmax1) hold: AdEMAMix keeps its fast and
// its slow EMA there, one after the other.
func (o Optimizer) State1Parts() int {
	if o == AdEMAMix {
		return 2
	}
	return 1
}

// OptimizerParams are the hyper-parameters of one step. NewOptimizerParams fills the library's
// defaults; the state width, the parameter dtype and n come from the tensors.
type OptimizerParams struct {
	Optimizer               Optimizer
	LR, Beta1, Beta2, Beta3 float32
	Alpha, Eps, WeightDecay float32
	GnormScale              float32
	MaxUnorm, ParamNorm     float32 // update-norm clipping (MaxUnorm > 0: LAMB, LARS) needs UnormVec
	Step                    int64   // 1-based; counted up by the caller before each step
	SkipZeros               bool
}

// NewOptimizerParams gives the library's defaults (bnb_optimizer_params_init) for o.
func NewOptimizerParams(o Optimizer) OptimizerParams {
	var raw C.bnb_optimizer_params_t
	C.bnb_optimizer_params_init(&raw) // fails only for NULL
	return OptimizerParams{
		Optimizer: o, LR: float32(raw.lr), Beta1: float32(raw.beta1), Beta2: float32(raw.beta2),
		Beta3: float32(raw.beta3), Alpha: float32(raw.alpha), Eps: float32(raw.eps),
		WeightDecay: float32(raw.weight_decay), GnormScale: float32(raw.gnorm_scale),
		MaxUnorm: float32(raw.max_unorm), ParamNorm: float32(raw.param_norm), Step: int64(raw.step),
		SkipZeros: raw.skip_zeros != 0,
	}
}

func (p *OptimizerParams) raw(bits int, dtype DType, n int) C.bnb_optimizer_params_t {
	var raw C.bnb_optimizer_params_t
	C.bnb_optimizer_params_init(&raw)
	raw.optimizer = C.int32_t(p.Optimizer)
	raw.state_bits = C.int32_t(bits)
	raw.param_dtype = C.int32_t(dtype)
	raw.n = C.int64_t(n)
	raw.lr, raw.beta1, raw.beta2, raw.beta3 = C.float(p.LR), C.float(p.Beta1), C.float(p.Beta2), C.float(p.Beta3)
	raw.alpha, raw.eps, raw.weight_decay = C.float(p.Alpha), C.float(p.Eps), C.float(p.WeightDecay)
	raw.gnorm_scale, raw.max_unorm, raw.param_norm = C.float(p.GnormScale), C.float(p.MaxUnorm), C.float(p.ParamNorm)
	raw.step = C.int64_t(p.Step)
	if p.SkipZeros {
		raw.skip_zeros = 1
	}
	return raw
}

// OptimizerState is one parameter's state (docs/FORMATS.md §5.6): *State32 or *State8. With n
// parameters and parts = Optimizer.State1Parts(), State1 holds parts*n values and State2 n
// (two-state rules only); at 8 bits Absmax1 holds parts*ceil(n/256) floats, Absmax2 ceil(n/256).
// A fresh state is all zeros.
type OptimizerState interface {
	bits() int
}

// State32 is 32-bit state.
type State32 struct {
	State1, State2 []float32
}

// State8 is 8-bit blockwise state; nil Qmap1/Qmap2 = the signed/unsigned dynamic maps.
type State8 struct {
	State1, State2   []uint8
	Absmax1, Absmax2 []float32
	Qmap1, Qmap2     []float32
}

func (*State32) bits() int { return 32 }
func (*State8) bits() int  { return 8 }

// OptimizerTensors are one parameter's step: P (len(P) = n) is updated in place from G.
type OptimizerTensors[T Float] struct {
	P, G     []T
	State    OptimizerState
	UnormVec []float32 // one float: clipping's sum of squares (MaxUnorm > 0 only)
}

// stagedTensors are one tensor set's arrays where the backend reads them.
type stagedTensors struct {
	p, g, state1, state2, absmax1, absmax2, qmap1, qmap2, unorm unsafe.Pointer
}

// check compares every array with what len(P) implies; messages name what.Field.
func (t *OptimizerTensors[T]) check(params *OptimizerParams, what string) error {
	opt := params.Optimizer
	n := len(t.P)
	parts := opt.State1Parts()
	field := func(name string) string { return what + "." + name }
	missing := func(name string) error {
		return invalid("%s is required by %v (it keeps two states)", field(name), opt)
	}
	if err := need(field("G"), len(t.G), n, "one gradient per parameter"); err != nil {
		return err
	}
	stateWhat := "one state value per parameter"
	switch s := t.State.(type) {
	case *State32:
		if err := need(field("State1"), len(s.State1), parts*n, stateWhat); err != nil {
			return err
		}
		if opt.HasState2() {
			if s.State2 == nil {
				return missing("State2")
			}
			if err := need(field("State2"), len(s.State2), n, stateWhat); err != nil {
				return err
			}
		}
	case *State8:
		nblocks := NumBlocks(n, OptimizerBlocksize)
		blockWhat := "one float per 256 parameters"
		if err := need(field("State1"), len(s.State1), parts*n, stateWhat); err != nil {
			return err
		}
		if err := need(field("Absmax1"), len(s.Absmax1), parts*nblocks, blockWhat); err != nil {
			return err
		}
		if opt.HasState2() {
			if s.State2 == nil {
				return missing("State2")
			}
			if s.Absmax2 == nil {
				return missing("Absmax2")
			}
			if err := need(field("State2"), len(s.State2), n, stateWhat); err != nil {
				return err
			}
			if err := need(field("Absmax2"), len(s.Absmax2), nblocks, blockWhat); err != nil {
				return err
			}
		}
		if err := needCode(field("Qmap1"), s.Qmap1); err != nil {
			return err
		}
		if err := needCode(field("Qmap2"), s.Qmap2); err != nil {
			return err
		}
	default:
		return invalid("%s is %T: use *State32 or *State8", field("State"), t.State)
	}
	if params.MaxUnorm > 0 {
		if t.UnormVec == nil {
			return invalid("%s is required when MaxUnorm > 0", field("UnormVec"))
		}
		if err := need(field("UnormVec"), len(t.UnormVec), 1, "one float"); err != nil {
			return err
		}
	}
	return nil
}

// stage places a checked tensor set; only the arrays the rule uses, and only what n implies.
func (t *OptimizerTensors[T]) stage(s *stager, opt Optimizer) (st stagedTensors, err error) {
	n := len(t.P)
	parts := opt.State1Parts()
	nblocks := NumBlocks(n, OptimizerBlocksize)
	steps := []func() error{
		func() (e error) { st.p, e = inout(s, t.P); return },
		func() (e error) { st.g, e = in(s, t.G[:n]); return },
	}
	switch state := t.State.(type) {
	case *State32:
		steps = append(steps, func() (e error) { st.state1, e = inout(s, state.State1[:parts*n]); return })
		if opt.HasState2() {
			steps = append(steps, func() (e error) { st.state2, e = inout(s, state.State2[:n]); return })
		}
	case *State8:
		steps = append(steps,
			func() (e error) { st.state1, e = inout(s, state.State1[:parts*n]); return },
			func() (e error) { st.absmax1, e = inout(s, state.Absmax1[:parts*nblocks]); return },
			func() (e error) { st.qmap1, e = in(s, state.Qmap1); return },
			func() (e error) { st.qmap2, e = in(s, state.Qmap2); return })
		if opt.HasState2() {
			steps = append(steps,
				func() (e error) { st.state2, e = inout(s, state.State2[:n]); return },
				func() (e error) { st.absmax2, e = inout(s, state.Absmax2[:nblocks]); return })
		}
	}
	if len(t.UnormVec) > 0 {
		steps = append(steps, func() (e error) { st.unorm, e = inout(s, t.UnormVec[:1]); return })
	}
	for _, step := range steps {
		if err = step(); err != nil {
			return st, err
		}
	}
	return st, nil
}

// OptimizerUpdate is one optimizer step of one parameter (bnb_optimizer_update); the state
// width follows t.State.
func OptimizerUpdate[T Float](c *Context, params OptimizerParams, t OptimizerTensors[T]) error {
	if err := t.check(&params, "tensors"); err != nil {
		return err
	}
	raw := params.raw(t.State.bits(), dtypeOf[T](), len(t.P))
	return c.use(func(ctx C.bnb_context_t) error {
		s := c.stager(ctx)
		defer s.free()
		st, err := t.stage(s, params.Optimizer)
		if err != nil {
			return err
		}
		err = call(func() C.bnb_status_t {
			return C.go_bnb_optimizer_update(ctx, &raw, st.p, st.g, st.state1, st.state2, (*C.float)(st.absmax1),
				(*C.float)(st.absmax2), (*C.float)(st.qmap1), (*C.float)(st.qmap2), (*C.float)(st.unorm))
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}

// OptimizerUpdateMulti is one step of many parameters that share params
// (bnb_optimizer_update_multi): the result equals one OptimizerUpdate per tensor, in fewer
// launches. Every tensor needs the same state width; clipping (MaxUnorm > 0) is not offered.
// Go arrays travel through library-allocated memory on every backend (cgo lets no Go pointer
// sit inside the array of tensor structs), so on the CPU this call copies what it touches;
// slices of the context's paged buffers stay in place.
func OptimizerUpdateMulti[T Float](c *Context, params OptimizerParams, tensors []OptimizerTensors[T]) error {
	if len(tensors) == 0 || len(tensors) > 1<<31-1 {
		return invalid("%d tensors: need 1 to 2^31-1", len(tensors))
	}
	bits := tensors[0].State.bits()
	n := make([]int64, len(tensors))
	for i := range tensors {
		if err := tensors[i].check(&params, fmt.Sprintf("tensors[%d]", i)); err != nil {
			return err
		}
		if b := tensors[i].State.bits(); b != bits {
			return invalid("tensors[%d] has %d-bit state, tensors[0] %d-bit: one call shares one width", i, b, bits)
		}
		n[i] = int64(len(tensors[i].P))
	}
	raw := params.raw(bits, dtypeOf[T](), 0) // n comes per tensor
	return c.use(func(ctx C.bnb_context_t) error {
		s := c.copyingStager(ctx, true)
		defer s.free()
		sets := make([]C.bnb_optimizer_tensors_t, len(tensors))
		for i := range tensors {
			st, err := tensors[i].stage(s, params.Optimizer)
			if err != nil {
				return err
			}
			t := &sets[i]
			C.bnb_optimizer_tensors_init(t)
			t.p, t.g, t.state1, t.state2 = st.p, st.g, st.state1, st.state2
			t.absmax1, t.absmax2 = (*C.float)(st.absmax1), (*C.float)(st.absmax2)
			t.qmap1, t.qmap2, t.unorm_vec = (*C.float)(st.qmap1), (*C.float)(st.qmap2), (*C.float)(st.unorm)
		}
		err := call(func() C.bnb_status_t {
			return C.bnb_optimizer_update_multi(ctx, &raw, C.int32_t(len(sets)), &sets[0],
				(*C.int64_t)(unsafe.Pointer(&n[0])), nil)
		})
		if err != nil {
			return err
		}
		return s.finish()
	})
}
