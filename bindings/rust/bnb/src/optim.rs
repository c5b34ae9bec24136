//! Optimizer steps (`bnb_optimizer_update`, `bnb_optimizer_update_multi`): the update rules are
//! docs/OPS.md §6, the state layout docs/FORMATS.md §5.6.
use std::ptr;

use bnb_sys as sys;

use crate::context::{blocks, need, to_i64, Context, Staged};
use crate::error::{check, Error, Result};
use crate::types::Float;

/// The 8-bit state's block: one absmax per 256 elements.
pub const OPTIMIZER_BLOCKSIZE: usize = 256;

/// The update rules (`bnb_optimizer_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Optimizer {
    /// Adam and AdamW (decoupled weight decay).
    Adam,
    /// SGD with momentum.
    Momentum,
    RmsProp,
    Lion,
    Adagrad,
    AdEMAMix,
    Lamb,
    Lars,
}

impl Optimizer {
    pub fn raw(self) -> i32 {
        match self {
            Optimizer::Adam => sys::BNB_OPT_ADAM,
            Optimizer::Momentum => sys::BNB_OPT_MOMENTUM,
            Optimizer::RmsProp => sys::BNB_OPT_RMSPROP,
            Optimizer::Lion => sys::BNB_OPT_LION,
            Optimizer::Adagrad => sys::BNB_OPT_ADAGRAD,
            Optimizer::AdEMAMix => sys::BNB_OPT_ADEMAMIX,
            Optimizer::Lamb => sys::BNB_OPT_LAMB,
            Optimizer::Lars => sys::BNB_OPT_LARS,
        }
    }

    /// Whether the rule keeps a second state (`state2`, and `absmax2` at 8 bits).
    pub fn has_state2(self) -> bool {
        matches!(self, Optimizer::Adam | Optimizer::AdEMAMix | Optimizer::Lamb)
    }

    /// How many `n`-element parts `state1` (and `absmax1`) hold: AdEMAMix keeps its fast and its
    /// slow EMA there, one after the other.
    pub fn state1_parts(self) -> usize {
        if self == Optimizer::AdEMAMix {
            2
        } else {
            1
        }
    }
}

/// The hyper-parameters of one step. `new` takes the library's defaults
/// (`bnb_optimizer_params_init`); the state width, the parameter dtype and `n` come from the
/// tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerParams {
    pub optimizer: Optimizer,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub beta3: f32,
    pub alpha: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub gnorm_scale: f32,
    /// Update-norm clipping (> 0: LAMB, LARS); needs `param_norm` and `unorm_vec`.
    pub max_unorm: f32,
    pub param_norm: f32,
    /// 1-based; the caller counts it up before each step.
    pub step: u64,
    pub skip_zeros: bool,
}

impl OptimizerParams {
    pub fn new(optimizer: Optimizer) -> OptimizerParams {
        let raw = raw_params_init();
        OptimizerParams {
            optimizer,
            lr: raw.lr,
            beta1: raw.beta1,
            beta2: raw.beta2,
            beta3: raw.beta3,
            alpha: raw.alpha,
            eps: raw.eps,
            weight_decay: raw.weight_decay,
            gnorm_scale: raw.gnorm_scale,
            max_unorm: raw.max_unorm,
            param_norm: raw.param_norm,
            step: u64::try_from(raw.step).unwrap_or(1),
            skip_zeros: raw.skip_zeros != 0,
        }
    }

    fn raw_for<T: Float>(&self, bits: i32, n: usize) -> Result<sys::bnb_optimizer_params_t> {
        let mut raw = raw_params_init();
        raw.optimizer = self.optimizer.raw();
        raw.state_bits = bits;
        raw.param_dtype = T::DTYPE.raw();
        raw.n = to_i64("n", n)?;
        raw.lr = self.lr;
        raw.beta1 = self.beta1;
        raw.beta2 = self.beta2;
        raw.beta3 = self.beta3;
        raw.alpha = self.alpha;
        raw.eps = self.eps;
        raw.weight_decay = self.weight_decay;
        raw.gnorm_scale = self.gnorm_scale;
        raw.max_unorm = self.max_unorm;
        raw.param_norm = self.param_norm;
        raw.step = i64::try_from(self.step)
            .map_err(|_| Error::invalid(format!("step {} does not fit in int64", self.step)))?;
        raw.skip_zeros = i32::from(self.skip_zeros);
        Ok(raw)
    }
}

fn raw_params_init() -> sys::bnb_optimizer_params_t {
    let mut raw = sys::bnb_optimizer_params_t::default();
    // SAFETY: a valid out-parameter; the call fails only for NULL.
    let status = unsafe { sys::bnb_optimizer_params_init(&mut raw) };
    assert_eq!(status, sys::BNB_SUCCESS, "bnb_optimizer_params_init");
    raw
}

fn raw_tensors_init() -> sys::bnb_optimizer_tensors_t {
    // SAFETY: all-null pointers and zeros are a valid value, which the library then fills.
    let mut raw: sys::bnb_optimizer_tensors_t = unsafe { std::mem::zeroed() };
    let status = unsafe { sys::bnb_optimizer_tensors_init(&mut raw) };
    assert_eq!(status, sys::BNB_SUCCESS, "bnb_optimizer_tensors_init");
    raw
}

/// One parameter's optimizer state (docs/FORMATS.md §5.6). With `n` parameters and `parts =
/// optimizer.state1_parts()`: `state1` holds `parts * n` values, `state2` `n` (two-state rules
/// only); at 8 bits `absmax1` holds `parts * ceil(n / 256)` floats, `absmax2` `ceil(n / 256)`.
/// A fresh state is all zeros.
#[derive(Debug)]
pub enum OptimizerState<'a> {
    Bits32 {
        state1: &'a mut [f32],
        state2: Option<&'a mut [f32]>,
    },
    Bits8 {
        state1: &'a mut [u8],
        state2: Option<&'a mut [u8]>,
        absmax1: &'a mut [f32],
        absmax2: Option<&'a mut [f32]>,
        /// 256-entry code table of `state1`; `None` = the signed dynamic map.
        qmap1: Option<&'a [f32]>,
        /// 256-entry code table of `state2`; `None` = the unsigned dynamic map.
        qmap2: Option<&'a [f32]>,
    },
}

impl OptimizerState<'_> {
    fn bits(&self) -> i32 {
        match self {
            OptimizerState::Bits32 { .. } => 32,
            OptimizerState::Bits8 { .. } => 8,
        }
    }
}

/// The tensors of one parameter's step: `p` is updated in place from the gradient `g`
/// (`p.len()` elements).
#[derive(Debug)]
pub struct OptimizerTensors<'a, T: Float> {
    pub p: &'a mut [T],
    pub g: &'a [T],
    pub state: OptimizerState<'a>,
    /// Clipping's sum of squares (`max_unorm > 0` only).
    pub unorm_vec: Option<&'a mut f32>,
}

/// A slot of `bnb_optimizer_tensors_t` that the call writes: its staging and the host bytes it
/// goes back to.
struct Back<'c> {
    staged: Staged<'c>,
    host: *mut u8,
    bytes: usize,
}

/// Checks a slot the call writes against `want` elements, stages it and remembers the way back.
fn written_slot<'c, E: Copy>(
    ctx: &'c Context,
    s: &mut [E],
    want: usize,
    name: &str,
    what: &str,
    written: &mut Vec<Back<'c>>,
) -> Result<*mut E> {
    need(name, s.len(), want, what)?;
    let host = s.as_mut_ptr();
    // SAFETY: `want <= s.len()`; the staging and the way back both derive from `host`, which
    // stays valid while the caller's mutable borrow of `s` lasts (the whole step).
    let staged = ctx.inout(unsafe { std::slice::from_raw_parts_mut(host, want) })?;
    let p = staged.ptr();
    written.push(Back {
        staged,
        host: host.cast(),
        bytes: std::mem::size_of_val(&s[..want]),
    });
    Ok(p)
}

/// One tensor set in backend memory.
struct StagedTensors<'c> {
    raw: sys::bnb_optimizer_tensors_t,
    written: Vec<Back<'c>>,
    _read: Vec<Staged<'c>>,
}

impl Context {
    /// One optimizer step of one parameter (`bnb_optimizer_update`); the state width follows
    /// `tensors.state`.
    pub fn optimizer_update<T: Float>(
        &self,
        params: &OptimizerParams,
        tensors: &mut OptimizerTensors<'_, T>,
    ) -> Result<()> {
        let n = tensors.p.len();
        let raw_params = params.raw_for::<T>(tensors.state.bits(), n)?;
        let staged = self.stage_tensors(params, tensors, "tensors")?;
        // SAFETY: every array was checked against n and staged in backend memory.
        unsafe {
            check(sys::bnb_optimizer_update(
                self.as_raw(),
                &raw_params,
                &staged.raw,
                ptr::null_mut(),
            ))?;
        }
        self.sync()?;
        self.unstage_tensors(&staged)?;
        self.sync()
    }

    /// One step of many parameters that share `params` (`bnb_optimizer_update_multi`): the
    /// result equals one `optimizer_update` per tensor, in fewer launches. Every tensor needs the
    /// same state width; clipping (`max_unorm > 0`) is not offered here.
    pub fn optimizer_update_multi<T: Float>(
        &self,
        params: &OptimizerParams,
        tensors: &mut [OptimizerTensors<'_, T>],
    ) -> Result<()> {
        let count = i32::try_from(tensors.len())
            .map_err(|_| Error::invalid(format!("{} tensors do not fit in int32", tensors.len())))?;
        let bits = tensors.first().map_or(32, |t| t.state.bits());
        for (i, t) in tensors.iter().enumerate() {
            if t.state.bits() != bits {
                return Err(Error::invalid(format!(
                    "tensors[{i}] has {}-bit state, tensors[0] {bits}-bit: one call shares one width",
                    t.state.bits()
                )));
            }
        }
        // params.n is ignored by the call; each tensor brings its own.
        let raw_params = params.raw_for::<T>(bits, 0)?;
        let mut n = Vec::with_capacity(tensors.len());
        let mut staged = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter_mut().enumerate() {
            n.push(to_i64("n", t.p.len())?);
            staged.push(self.stage_tensors(params, t, &format!("tensors[{i}]"))?);
        }
        let raws: Vec<sys::bnb_optimizer_tensors_t> = staged.iter().map(|s| s.raw).collect();
        // SAFETY: `count` tensor sets, each checked against its n[i] and staged.
        unsafe {
            check(sys::bnb_optimizer_update_multi(
                self.as_raw(),
                &raw_params,
                count,
                raws.as_ptr(),
                n.as_ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.sync()?;
        for s in &staged {
            self.unstage_tensors(s)?;
        }
        self.sync()
    }

    /// Checks every array of `t` against what `p.len()` implies (messages name `what.field`)
    /// and places them where the backend reads them.
    fn stage_tensors<'c, T: Float>(
        &'c self,
        params: &OptimizerParams,
        t: &mut OptimizerTensors<'_, T>,
        what: &str,
    ) -> Result<StagedTensors<'c>> {
        let opt = params.optimizer;
        let n = t.p.len();
        let parts = opt.state1_parts();
        let field = |name: &str| format!("{what}.{name}");
        let state1_len = n * parts;
        need(&field("g"), t.g.len(), n, "one gradient per parameter")?;
        let mut raw = raw_tensors_init();
        let mut written = Vec::new();
        let mut read = Vec::new();

        let g = self.input(&t.g[..n])?;
        raw.g = g.ptr();
        read.push(g);
        raw.p = written_slot(self, t.p, n, &field("p"), "", &mut written)?.cast();

        let missing = |name: &str| {
            Error::invalid(format!(
                "{} is required by {opt:?} (it keeps two states)",
                field(name)
            ))
        };
        let state_what = "one state value per parameter";
        match &mut t.state {
            OptimizerState::Bits32 { state1, state2 } => {
                raw.state1 = written_slot(self, state1, state1_len, &field("state1"), state_what, &mut written)?
                    .cast();
                if opt.has_state2() {
                    let s2 = state2.as_deref_mut().ok_or_else(|| missing("state2"))?;
                    raw.state2 = written_slot(self, s2, n, &field("state2"), state_what, &mut written)?.cast();
                }
            }
            OptimizerState::Bits8 {
                state1,
                state2,
                absmax1,
                absmax2,
                qmap1,
                qmap2,
            } => {
                let nblocks = blocks(n, OPTIMIZER_BLOCKSIZE);
                let block_what = "one float per 256 parameters";
                raw.state1 = written_slot(self, state1, state1_len, &field("state1"), state_what, &mut written)?
                    .cast();
                raw.absmax1 = written_slot(
                    self,
                    absmax1,
                    nblocks * parts,
                    &field("absmax1"),
                    block_what,
                    &mut written,
                )?;
                if opt.has_state2() {
                    let s2 = state2.as_deref_mut().ok_or_else(|| missing("state2"))?;
                    raw.state2 = written_slot(self, s2, n, &field("state2"), state_what, &mut written)?.cast();
                    let a2 = absmax2.as_deref_mut().ok_or_else(|| missing("absmax2"))?;
                    raw.absmax2 = written_slot(self, a2, nblocks, &field("absmax2"), block_what, &mut written)?;
                }
                for (table, slot, name) in [(qmap1, &mut raw.qmap1, "qmap1"), (qmap2, &mut raw.qmap2, "qmap2")] {
                    if let Some(table) = table {
                        need(&field(name), table.len(), 256, "a 256-entry table")?;
                        let staged = self.input(&table[..256])?;
                        *slot = staged.ptr();
                        read.push(staged);
                    }
                }
            }
        }
        if params.max_unorm > 0.0 {
            let u = t.unorm_vec.as_deref_mut().ok_or_else(|| {
                Error::invalid(format!("{} is required when max_unorm > 0", field("unorm_vec")))
            })?;
            raw.unorm_vec = written_slot(
                self,
                std::slice::from_mut(u),
                1,
                &field("unorm_vec"),
                "one float",
                &mut written,
            )?;
        }
        Ok(StagedTensors {
            raw,
            written,
            _read: read,
        })
    }

    /// Brings back what the call wrote (nothing to copy on the CPU); between `sync`s.
    fn unstage_tensors(&self, staged: &StagedTensors<'_>) -> Result<()> {
        for back in &staged.written {
            // SAFETY: `host` and `bytes` describe a slice the caller still borrows mutably.
            let host = unsafe { std::slice::from_raw_parts_mut(back.host, back.bytes) };
            self.copy_back(&back.staged, host)?;
        }
        Ok(())
    }
}
