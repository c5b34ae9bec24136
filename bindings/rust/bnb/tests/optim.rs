//! Optimizer steps through the binding, against references written here: an f64 Adam/AdamW
//! (docs/OPS.md §6.3), the 32-bit step for the 8-bit one, single steps for the multi-tensor call.
#![allow(clippy::needless_range_loop)] // indices name the element in failure messages
use bnb::{
    CodeTable, Context, Optimizer, OptimizerParams, OptimizerState, OptimizerTensors, Status, OPTIMIZER_BLOCKSIZE,
};

fn ctx() -> Context {
    Context::new().expect("create a context")
}

/// xorshift64*: reproducible data without crates.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// One parameter's 32-bit state, owned.
struct State32 {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

fn step32(ctx: &Context, params: &OptimizerParams, s: &mut State32, g: &[f32]) {
    let mut t = OptimizerTensors {
        p: &mut s.p,
        g,
        state: OptimizerState::Bits32 {
            state1: &mut s.m,
            state2: Some(&mut s.v),
        },
        unorm_vec: None,
    };
    ctx.optimizer_update(params, &mut t).expect("32-bit step");
}

/// Adam as docs/OPS.md §6.3 states it, in f64: bias-corrected, decoupled weight decay after.
fn adam_f64(params: &OptimizerParams, p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f32]) {
    let (b1, b2) = (params.beta1 as f64, params.beta2 as f64);
    let (lr, eps, wd) = (params.lr as f64, params.eps as f64, params.weight_decay as f64);
    let t = params.step as i32;
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    for i in 0..p.len() {
        let g = g[i] as f64;
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        p[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
        if wd > 0.0 {
            p[i] *= 1.0 - lr * wd;
        }
    }
}

fn adam_32bit_matches_f64(weight_decay: f32) {
    let ctx = ctx();
    let n = 1000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut params = OptimizerParams::new(Optimizer::Adam);
    params.weight_decay = weight_decay;
    let p0 = rng.vec(n, 1.0);
    let mut s = State32 {
        p: p0.clone(),
        m: vec![0.0; n],
        v: vec![0.0; n],
    };
    let mut p64: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let (mut m64, mut v64) = (vec![0f64; n], vec![0f64; n]);
    for step in 1..=5u64 {
        params.step = step;
        let g = rng.vec(n, 0.5);
        step32(&ctx, &params, &mut s, &g);
        adam_f64(&params, &mut p64, &mut m64, &mut v64, &g);
        // binary32 state and parameter. On CUDA β^t is a few ulps off and divisions use a
        // reciprocal (OPS.md §6.1): ~3e-5 of an update, which is up to a few lr early on; so
        // each step may add up to 2e-4 lr.
        for i in 0..n {
            let tol_p = 4.0 * step as f64 * (f32::EPSILON as f64) * p64[i].abs() + 2e-4 * step as f64 * params.lr as f64;
            assert!(
                (s.p[i] as f64 - p64[i]).abs() <= tol_p,
                "step {step} p[{i}]: {} vs f64 {}",
                s.p[i],
                p64[i]
            );
            // m can cancel towards 0: its error is relative to the terms (|g| <= 0.5), not to m.
            let tol_m = 1e-6 * step as f64 * 0.5;
            assert!((s.m[i] as f64 - m64[i]).abs() <= tol_m, "step {step} m[{i}]: {} vs {}", s.m[i], m64[i]);
            assert!((s.v[i] as f64 - v64[i]).abs() <= 1e-6 * v64[i].abs() + 1e-12, "step {step} v[{i}]");
        }
    }
}

#[test]
fn adam_32bit_step_matches_an_f64_adam() {
    adam_32bit_matches_f64(0.0);
}

#[test]
fn adamw_32bit_step_matches_an_f64_adamw() {
    adam_32bit_matches_f64(0.01);
}

/// The 8-bit state decoded: `qmap[code] * absmax[block]`, as the kernels decode it.
fn decode(codes: &[u8], absmax: &[f32], qmap: &[f32]) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &c)| qmap[c as usize] * absmax[i / OPTIMIZER_BLOCKSIZE])
        .collect()
}

/// How far an encoding of `x` may land from it: the gap between the two table entries around
/// `x / absmax`, scaled back.
fn code_gap(x: f32, absmax: f32, qmap: &[f32]) -> f32 {
    if absmax == 0.0 {
        return 0.0;
    }
    let r = x / absmax;
    let below = qmap.iter().copied().filter(|&q| q <= r).fold(f32::NEG_INFINITY, f32::max);
    let above = qmap.iter().copied().filter(|&q| q >= r).fold(f32::INFINITY, f32::min);
    // Past the table's end (the signed map stops at -0.99297) the nearest entry is the last one.
    let (lo, hi) = (if below.is_finite() { below } else { r }, if above.is_finite() { above } else { r });
    let gap = hi - lo;
    gap * absmax * 1.001 + f32::EPSILON * absmax
}

#[test]
fn adam_8bit_step_matches_the_32bit_step_from_the_same_state() {
    let ctx = ctx();
    let n: usize = 1000; // four blocks of 256, the last one short
    let nblocks = n.div_ceil(OPTIMIZER_BLOCKSIZE);
    let signed = bnb::code_table(CodeTable::DynamicSigned).unwrap();
    let unsigned = bnb::code_table(CodeTable::DynamicUnsigned).unwrap();
    let mut rng = Rng(42);
    let mut params = OptimizerParams::new(Optimizer::Adam);
    params.weight_decay = 0.01;
    let mut p8 = rng.vec(n, 1.0);
    let (mut c1, mut c2) = (vec![0u8; n], vec![0u8; n]);
    let (mut a1, mut a2) = (vec![0f32; nblocks], vec![0f32; nblocks]);
    for step in 1..=4u64 {
        params.step = step;
        let g = rng.vec(n, 0.5);
        // The 32-bit step starts from what the 8-bit state holds now.
        let mut s = State32 {
            p: p8.clone(),
            m: decode(&c1, &a1, &signed),
            v: decode(&c2, &a2, &unsigned),
        };
        if step == 1 {
            assert!(s.m.iter().chain(&s.v).all(|&x| x == 0.0), "a fresh 8-bit state decodes to 0");
        }
        step32(&ctx, &params, &mut s, &g);
        let mut t = OptimizerTensors {
            p: &mut p8,
            g: &g,
            state: OptimizerState::Bits8 {
                state1: &mut c1,
                state2: Some(&mut c2),
                absmax1: &mut a1,
                absmax2: Some(&mut a2),
                qmap1: None,
                qmap2: None,
            },
            unorm_vec: None,
        };
        ctx.optimizer_update(&params, &mut t).expect("8-bit step");
        // The parameter comes from the unquantized new state: the 32-bit result to rounding.
        for i in 0..n {
            let tol = 8.0 * f32::EPSILON * s.p[i].abs() + 1e-5 * params.lr;
            assert!((p8[i] - s.p[i]).abs() <= tol, "step {step} p[{i}]: 8-bit {} vs 32-bit {}", p8[i], s.p[i]);
        }
        // The new state is the 32-bit one, encoded: within a code step of it.
        let (m8, v8) = (decode(&c1, &a1, &signed), decode(&c2, &a2, &unsigned));
        for i in 0..n {
            let b = i / OPTIMIZER_BLOCKSIZE;
            let (tm, tv) = (code_gap(s.m[i], a1[b], &signed), code_gap(s.v[i], a2[b], &unsigned));
            assert!((m8[i] - s.m[i]).abs() <= tm, "step {step} m[{i}]: {} vs {} (gap {tm})", m8[i], s.m[i]);
            assert!((v8[i] - s.v[i]).abs() <= tv, "step {step} v[{i}]: {} vs {} (gap {tv})", v8[i], s.v[i]);
        }
        // Each block's scale is the largest magnitude of its new 32-bit state.
        for b in 0..nblocks {
            let block = b * OPTIMIZER_BLOCKSIZE..((b + 1) * OPTIMIZER_BLOCKSIZE).min(n);
            let max_m = s.m[block.clone()].iter().fold(0f32, |a, x| a.max(x.abs()));
            let max_v = s.v[block].iter().fold(0f32, |a, x| a.max(x.abs()));
            assert!((a1[b] - max_m).abs() <= 1e-6 * max_m, "step {step} absmax1[{b}]");
            assert!((a2[b] - max_v).abs() <= 1e-6 * max_v, "step {step} absmax2[{b}]");
        }
    }
}

/// Several tensors of different sizes, their state and their data.
struct Model {
    p: Vec<Vec<f32>>,
    g: Vec<Vec<f32>>,
    s1: Vec<Vec<u8>>,
    s2: Vec<Vec<u8>>,
    a1: Vec<Vec<f32>>,
    a2: Vec<Vec<f32>>,
    f1: Vec<Vec<f32>>,
    f2: Vec<Vec<f32>>,
}

impl Model {
    fn new(sizes: &[usize], parts: usize) -> Model {
        let mut rng = Rng(7);
        let blocks = |n: usize| n.div_ceil(OPTIMIZER_BLOCKSIZE);
        Model {
            p: sizes.iter().map(|&n| rng.vec(n, 1.0)).collect(),
            g: sizes.iter().map(|&n| rng.vec(n, 0.3)).collect(),
            s1: sizes.iter().map(|&n| vec![0; n * parts]).collect(),
            s2: sizes.iter().map(|&n| vec![0; n]).collect(),
            a1: sizes.iter().map(|&n| vec![0.0; blocks(n) * parts]).collect(),
            a2: sizes.iter().map(|&n| vec![0.0; blocks(n)]).collect(),
            f1: sizes.iter().map(|&n| vec![0.0; n * parts]).collect(),
            f2: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    fn tensors(&mut self, bits8: bool) -> Vec<OptimizerTensors<'_, f32>> {
        let mut out = Vec::new();
        let it = self
            .p
            .iter_mut()
            .zip(&self.g)
            .zip(self.s1.iter_mut().zip(self.s2.iter_mut()))
            .zip(self.a1.iter_mut().zip(self.a2.iter_mut()))
            .zip(self.f1.iter_mut().zip(self.f2.iter_mut()));
        for ((((p, g), (s1, s2)), (a1, a2)), (f1, f2)) in it {
            let state = if bits8 {
                OptimizerState::Bits8 {
                    state1: s1,
                    state2: Some(s2),
                    absmax1: a1,
                    absmax2: Some(a2),
                    qmap1: None,
                    qmap2: None,
                }
            } else {
                OptimizerState::Bits32 {
                    state1: f1,
                    state2: Some(f2),
                }
            };
            out.push(OptimizerTensors {
                p,
                g,
                state,
                unorm_vec: None,
            });
        }
        out
    }
}

fn multi_equals_single(optimizer: Optimizer, bits8: bool) {
    let ctx = ctx();
    let sizes = [1000, 256, 3, 4097];
    let parts = optimizer.state1_parts();
    let (mut one, mut many) = (Model::new(&sizes, parts), Model::new(&sizes, parts));
    let mut params = OptimizerParams::new(optimizer);
    params.weight_decay = 0.01;
    for step in 1..=3 {
        params.step = step;
        for t in one.tensors(bits8).iter_mut() {
            ctx.optimizer_update(&params, t).unwrap();
        }
        ctx.optimizer_update_multi(&params, &mut many.tensors(bits8)).unwrap();
    }
    let bits = |v: &[Vec<f32>]| -> Vec<Vec<u32>> { v.iter().map(|x| x.iter().map(|f| f.to_bits()).collect()).collect() };
    assert_eq!(bits(&one.p), bits(&many.p), "{optimizer:?} p");
    if bits8 {
        assert_eq!(one.s1, many.s1, "{optimizer:?} state1");
        assert_eq!(one.s2, many.s2, "{optimizer:?} state2");
        assert_eq!(bits(&one.a1), bits(&many.a1), "{optimizer:?} absmax1");
        assert_eq!(bits(&one.a2), bits(&many.a2), "{optimizer:?} absmax2");
    } else {
        assert_eq!(bits(&one.f1), bits(&many.f1), "{optimizer:?} state1");
        assert_eq!(bits(&one.f2), bits(&many.f2), "{optimizer:?} state2");
    }
}

#[test]
fn update_multi_equals_single_updates_bit_for_bit() {
    for optimizer in [Optimizer::Adam, Optimizer::AdEMAMix, Optimizer::Lion, Optimizer::Momentum] {
        multi_equals_single(optimizer, false);
        multi_equals_single(optimizer, true);
    }
}

#[test]
fn short_or_missing_state_is_an_error_naming_it() {
    let ctx = ctx();
    let params = OptimizerParams::new(Optimizer::Adam);
    let (mut p, g) = (vec![0.5f32; 300], vec![0.1f32; 300]);
    let (mut m, mut v) = (vec![0f32; 300], vec![0f32; 299]);
    let err = ctx
        .optimizer_update(
            &params,
            &mut OptimizerTensors {
                p: &mut p,
                g: &g,
                state: OptimizerState::Bits32 {
                    state1: &mut m,
                    state2: Some(&mut v),
                },
                unorm_vec: None,
            },
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert!(err.message().contains("tensors.state2 has 299"), "{err}");

    let err = ctx
        .optimizer_update(
            &params,
            &mut OptimizerTensors {
                p: &mut p,
                g: &g,
                state: OptimizerState::Bits32 {
                    state1: &mut m,
                    state2: None,
                },
                unorm_vec: None,
            },
        )
        .unwrap_err();
    assert!(err.message().contains("tensors.state2 is required by Adam"), "{err}");

    // AdEMAMix keeps two EMAs in state1.
    let mut ademamix = OptimizerParams::new(Optimizer::AdEMAMix);
    ademamix.step = 1;
    let mut v = vec![0f32; 300];
    let err = ctx
        .optimizer_update(
            &ademamix,
            &mut OptimizerTensors {
                p: &mut p,
                g: &g,
                state: OptimizerState::Bits32 {
                    state1: &mut m,
                    state2: Some(&mut v),
                },
                unorm_vec: None,
            },
        )
        .unwrap_err();
    assert!(err.message().contains("tensors.state1 has 300 elements, needs 600"), "{err}");

    // 8-bit: the block scales.
    let (mut c1, mut c2, mut a1, mut a2) = (vec![0u8; 300], vec![0u8; 300], vec![0f32; 1], vec![0f32; 2]);
    let err = ctx
        .optimizer_update(
            &params,
            &mut OptimizerTensors {
                p: &mut p,
                g: &g,
                state: OptimizerState::Bits8 {
                    state1: &mut c1,
                    state2: Some(&mut c2),
                    absmax1: &mut a1,
                    absmax2: Some(&mut a2),
                    qmap1: None,
                    qmap2: None,
                },
                unorm_vec: None,
            },
        )
        .unwrap_err();
    assert!(err.message().contains("tensors.absmax1 has 1 elements, needs 2"), "{err}");

    // Clipping needs unorm_vec; the library's own checks still speak (here: its step rule).
    let mut lamb = OptimizerParams::new(Optimizer::Lamb);
    lamb.max_unorm = 1.0;
    let err = ctx
        .optimizer_update(
            &lamb,
            &mut OptimizerTensors {
                p: &mut p,
                g: &g,
                state: OptimizerState::Bits32 {
                    state1: &mut m,
                    state2: Some(&mut v),
                },
                unorm_vec: None,
            },
        )
        .unwrap_err();
    assert!(err.message().contains("tensors.unorm_vec is required"), "{err}");
    let mut zero_step = OptimizerParams::new(Optimizer::Adam);
    zero_step.step = 0;
    let err = ctx
        .optimizer_update(
            &zero_step,
            &mut OptimizerTensors {
                p: &mut p,
                g: &g,
                state: OptimizerState::Bits32 {
                    state1: &mut m,
                    state2: Some(&mut v),
                },
                unorm_vec: None,
            },
        )
        .unwrap_err();
    assert!(err.message().contains("step"), "{err}");
}

#[test]
fn update_multi_names_the_bad_tensor_and_refuses_mixed_widths() {
    let ctx = ctx();
    let params = OptimizerParams::new(Optimizer::Momentum);
    let mut model = Model::new(&[100, 200], 1);
    let mut tensors = model.tensors(false);
    let mut short = vec![0f32; 10];
    tensors[1].state = OptimizerState::Bits32 {
        state1: &mut short,
        state2: None,
    };
    let err = ctx.optimizer_update_multi(&params, &mut tensors).unwrap_err();
    assert!(err.message().contains("tensors[1].state1 has 10"), "{err}");

    let mut model = Model::new(&[100, 200], 1);
    let mut model8 = Model::new(&[100, 200], 1);
    let mut tensors = model.tensors(false);
    tensors[1] = model8.tensors(true).pop().unwrap();
    let err = ctx.optimizer_update_multi(&params, &mut tensors).unwrap_err();
    assert!(err.message().contains("tensors[1] has 8-bit state"), "{err}");
}

#[test]
fn lamb_with_clipping_reports_the_update_norm() {
    let ctx = ctx();
    let n = 500;
    let mut rng = Rng(3);
    let mut params = OptimizerParams::new(Optimizer::Lamb);
    params.max_unorm = 1.0;
    let mut p = rng.vec(n, 1.0);
    params.param_norm = p.iter().map(|x| x * x).sum::<f32>().sqrt();
    let g = rng.vec(n, 0.5);
    let (mut m, mut v, mut unorm) = (vec![0f32; n], vec![0f32; n], f32::NAN);
    ctx.optimizer_update(
        &params,
        &mut OptimizerTensors {
            p: &mut p,
            g: &g,
            state: OptimizerState::Bits32 {
                state1: &mut m,
                state2: Some(&mut v),
            },
            unorm_vec: Some(&mut unorm),
        },
    )
    .unwrap();
    // OPS.md §6.4: the sum of squares of the bias-corrected update, before clipping. At step 1
    // m/c1 = g and sqrt(v/c2) = |g|, so each term is (g / (|g| + eps))^2, about 1.
    let want: f64 = g
        .iter()
        .map(|&x| {
            let u = x as f64 / (x.abs() as f64 + params.eps as f64);
            u * u
        })
        .sum();
    assert!((unorm as f64 - want).abs() <= 1e-4 * want, "unorm {unorm} vs {want}");
}
