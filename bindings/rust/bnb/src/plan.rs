//! A prepared 4-bit matmul (`bnb_gemm_4bit_plan_*`): the arguments that stay fixed across calls
//! with one weight, checked once.
use std::marker::PhantomData;
use std::ptr;

use bnb_sys as sys;

use crate::context::{blocks, need, packed_len, product, to_i64, Context, Scales, Staged, StagedScales};
use crate::error::{check, Result};
use crate::types::{Float, Quant4};

/// A plan for `out[m,n] = a[m,k] @ dequant(w)[n,k]^T (+ bias)` with a fixed weight. The library
/// keeps pointers to the weight, its scales and the bias, so the plan borrows them (and the
/// context) for as long as it lives; on a GPU backend it holds device copies of them. Destroyed
/// on drop.
///
/// A plan cannot outlive its weight:
///
/// ```compile_fail,E0597
/// let ctx = bnb::Context::new().unwrap();
/// let absmax = vec![1f32; 1];
/// let plan = {
///     let w = vec![0u8; 8];
///     ctx.gemm_4bit_plan::<f32>(4, 4, &w, &bnb::Scales::Plain(&absmax), bnb::Quant4::Nf4, 64, None)
///         .unwrap()
/// }; // `w` dropped here while the plan still borrows it
/// # drop(plan);
/// ```
pub struct Gemm4Plan<'a, T: Float> {
    ctx: &'a Context,
    raw: sys::bnb_gemm4_plan_t,
    n: usize,
    k: usize,
    // What the plan points into; freed after the plan is destroyed (Drop runs first).
    _scales: StagedScales<'a>,
    _keep: Vec<Staged<'a>>,
    _borrows: PhantomData<(&'a [u8], &'a [T])>,
}

impl Context {
    /// Checks the fixed arguments of `gemm_4bit` once and keeps them for `Gemm4Plan::run`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_4bit_plan<'a, T: Float>(
        &'a self,
        n: usize,
        k: usize,
        w: &'a [u8],
        scales: &Scales<'a>,
        quant: Quant4,
        blocksize: usize,
        bias: Option<&'a [T]>,
    ) -> Result<Gemm4Plan<'a, T>> {
        let weights = product("n*k", n, k)?;
        need("w", w.len(), packed_len(weights), "n*k packed 4-bit codes")?;
        if let Some(bias) = bias {
            need("bias", bias.len(), n, "one per output column")?;
        }
        let mut keep = Vec::new();
        let w_s = self.input(&w[..packed_len(weights)])?;
        let bias_s = self.input_opt(bias.map(|b| &b[..n]))?;
        let mut scales_s = self.stage_scales(scales, blocks(weights, blocksize))?;
        if let Scales::Nested { offset, .. } = scales {
            // The nested offset is a value inside `scales`, which may not outlive the plan: the
            // plan points at its own copy.
            let offset_s = self.copy_in(std::slice::from_ref(offset))?;
            scales_s.raw.offset = offset_s.ptr();
            keep.push(offset_s);
        }
        let mut raw = ptr::null_mut();
        // SAFETY: every array was checked against n, k and blocksize; they stay alive and
        // borrowed (or copied into `keep`/`scales_s`) for the plan's life.
        unsafe {
            check(sys::bnb_gemm_4bit_plan_create(
                self.as_raw(),
                T::DTYPE.raw(),
                to_i64("n", n)?,
                to_i64("k", k)?,
                w_s.ptr(),
                &scales_s.raw,
                quant.raw(),
                to_i64("blocksize", blocksize)?,
                bias_s.as_ref().map_or(ptr::null(), |b| b.ptr()),
                &mut raw,
            ))?;
        }
        keep.push(w_s);
        keep.extend(bias_s);
        Ok(Gemm4Plan {
            ctx: self,
            raw,
            n,
            k,
            _scales: scales_s,
            _keep: keep,
            _borrows: PhantomData,
        })
    }
}

impl<T: Float> Gemm4Plan<'_, T> {
    /// `out[m,n] = a[m,k] @ dequant(w)^T (+ bias)`: what `Context::gemm_4bit` gives with the
    /// plan's arguments, bit for bit.
    pub fn run(&self, m: usize, a: &[T], out: &mut [T]) -> Result<()> {
        let (mk, mn) = (product("m*k", m, self.k)?, product("m*n", m, self.n)?);
        need("a", a.len(), mk, "m rows of k")?;
        need("out", out.len(), mn, "m rows of n")?;
        let out = &mut out[..mn];
        let a_s = self.ctx.input(&a[..mk])?;
        let out_s = self.ctx.output(out)?;
        // SAFETY: a live plan; a and out checked above.
        unsafe {
            check(sys::bnb_gemm_4bit_plan_run(
                self.raw,
                to_i64("m", m)?,
                a_s.ptr(),
                out_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.ctx.finish(&mut [(&out_s, out)])
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }
}

impl<T: Float> Drop for Gemm4Plan<'_, T> {
    fn drop(&mut self) {
        // SAFETY: created by bnb_gemm_4bit_plan_create, destroyed once, before what it points at.
        unsafe {
            sys::bnb_gemm_4bit_plan_destroy(self.raw);
        }
    }
}

impl<T: Float> std::fmt::Debug for Gemm4Plan<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemm4Plan").field("n", &self.n).field("k", &self.k).finish()
    }
}
