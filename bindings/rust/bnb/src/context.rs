use std::ffi::c_void;
use std::mem::size_of;
use std::ptr;
use std::sync::Mutex;

use bnb_sys as sys;

use crate::error::{check, Error, Result};
use crate::types::{Backend, Float, Quant4};

/// How a context is created; `Default` = the library's defaults (`bnb_context_options_init`:
/// backend from `$BNB_BACKEND`, else the best available; device 0; all cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextOptions {
    pub backend: Backend,
    pub device: i32,
    /// CPU threads; 0 = `$BNB_NUM_THREADS`, else all cores.
    pub num_threads: i32,
    /// 1 = scan the float inputs of the quantizers, products and optimizers for NaN and infinity
    /// before each op (the first fails it with an error naming the argument and index); -1 =
    /// never; 0 = `$BNB_CHECK_FINITE`, off when unset.
    pub check_finite: i32,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            backend: Backend::Auto,
            device: 0,
            num_threads: 0,
            check_finite: 0,
        }
    }
}

/// The per-block scales of a 4-bit tensor: one float per block, or double-quantized.
#[derive(Clone, Copy, Debug)]
pub enum Scales<'a> {
    Plain(&'a [f32]),
    Nested {
        /// One 8-bit code per block.
        absmax_q: &'a [u8],
        /// One float per `blocksize2` codes.
        absmax2: &'a [f32],
        /// The 256-entry table of the codes; `None` = the signed dynamic map.
        code2: Option<&'a [f32]>,
        /// The mean that was subtracted before the codes were made.
        offset: f32,
        /// 256 for what `compress_absmax` makes.
        blocksize2: usize,
    },
}

/// A bnb context: one backend and device. Freed on drop. Host slices go in and come out of
/// every call; on a GPU backend they are copied to and from device memory around the call,
/// except slices of a `PagedBuffer` of this context, which the device reads where they are.
pub struct Context {
    raw: sys::bnb_context_t,
    backend: Backend,
    device: i32,
    /// The live paged allocations (address, bytes).
    paged: Mutex<Vec<(usize, usize)>>,
}

// The C API makes a context immutable after creation and safe to use from many threads.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `raw` came from bnb_context_create and is destroyed once, here.
        unsafe {
            sys::bnb_context_destroy(self.raw);
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backend", &self.backend)
            .field("device", &self.device)
            .finish()
    }
}

pub(crate) fn to_i64(what: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(format!("{what} {v} does not fit in int64")))
}

pub(crate) fn blocks(n: usize, blocksize: usize) -> usize {
    // A zero blocksize is the library's to reject; needing no scale storage keeps us honest.
    if blocksize == 0 {
        0
    } else {
        n.div_ceil(blocksize)
    }
}

/// Number of per-block scales for `n` elements (`ceil(n / blocksize)`).
pub fn num_blocks(n: usize, blocksize: usize) -> usize {
    blocks(n, blocksize)
}

/// Bytes of packed 4-bit codes for `n` elements (two per byte).
pub fn packed_len(n: usize) -> usize {
    n.div_ceil(2)
}

pub(crate) fn need(name: &str, have: usize, want: usize, what: &str) -> Result<()> {
    if have < want {
        return Err(Error::invalid(format!(
            "{name} has {have} elements, needs {want} ({what})"
        )));
    }
    Ok(())
}

pub(crate) fn product(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::invalid(format!("{what}: {a} x {b} overflows")))
}

/// An argument in the context's backend memory: the host slice itself on CPU, a device copy
/// on GPU backends (freed on drop).
///
/// Internal and borrow-unchecked: a host-case pointer aliases the slice it came from, so each op
/// keeps its slices alive and untouched until `finish` has run.
pub(crate) struct Staged<'c> {
    ctx: &'c Context,
    ptr: *mut c_void,
    owned: bool,
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: allocated by bnb_malloc on this context.
            unsafe {
                sys::bnb_free(self.ctx.raw, self.ptr);
            }
        }
    }
}

impl Staged<'_> {
    pub(crate) fn ptr<T>(&self) -> *mut T {
        self.ptr.cast()
    }
}

impl Context {
    /// A context with the library's defaults.
    pub fn new() -> Result<Context> {
        Context::with_options(&ContextOptions::default())
    }

    /// A context on `backend` (device 0); an unavailable backend is an error, never a fallback.
    pub fn with_backend(backend: Backend) -> Result<Context> {
        Context::with_options(&ContextOptions {
            backend,
            ..ContextOptions::default()
        })
    }

    pub fn with_options(options: &ContextOptions) -> Result<Context> {
        let mut raw_options = sys::bnb_context_options_t::default();
        let mut raw = ptr::null_mut();
        let (mut kind, mut device) = (0, 0);
        // SAFETY: plain out-parameters; the options struct is initialised by the library first.
        unsafe {
            check(sys::bnb_context_options_init(&mut raw_options))?;
            raw_options.backend = options.backend.raw();
            raw_options.device = options.device;
            raw_options.num_threads = options.num_threads;
            raw_options.check_finite = options.check_finite;
            check(sys::bnb_context_create(&raw_options, &mut raw))?;
        }
        // Owned from here on, so an error below still destroys it.
        let mut ctx = Context {
            raw,
            backend: Backend::Auto,
            device: 0,
            paged: Mutex::new(Vec::new()),
        };
        // SAFETY: `raw` is a live context.
        unsafe { check(sys::bnb_context_get_backend(ctx.raw, &mut kind, &mut device))? };
        ctx.backend = Backend::from_raw(kind);
        ctx.device = device;
        Ok(ctx)
    }

    /// The backend this context runs on (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn device(&self) -> i32 {
        self.device
    }

    /// The raw handle, for calls this crate does not wrap (it stays owned by `self`).
    pub fn as_raw(&self) -> sys::bnb_context_t {
        self.raw
    }

    fn host_addressable(&self) -> bool {
        self.backend == Backend::Cpu
    }

    /// Whether `bytes` bytes at `p` need no staging: host memory on the CPU backend, or inside
    /// one of this context's paged allocations (which the device addresses too).
    fn backend_addressable<T>(&self, p: *const T, bytes: usize) -> bool {
        self.host_addressable() || bytes == 0 || self.in_paged(p, bytes)
    }

    /// Whether `bytes` bytes at `p` lie inside one of this context's paged allocations.
    pub(crate) fn in_paged<T>(&self, p: *const T, bytes: usize) -> bool {
        let (start, end) = (p as usize, p as usize + bytes);
        let paged = self.paged.lock().unwrap_or_else(|e| e.into_inner());
        paged.iter().any(|&(at, len)| at <= start && end <= at + len)
    }

    pub(crate) fn register_paged(&self, at: usize, bytes: usize) {
        self.paged.lock().unwrap_or_else(|e| e.into_inner()).push((at, bytes));
    }

    pub(crate) fn unregister_paged(&self, at: usize) {
        self.paged.lock().unwrap_or_else(|e| e.into_inner()).retain(|&(a, _)| a != at);
    }

    pub(crate) fn alloc(&self, bytes: usize) -> Result<Staged<'_>> {
        let mut p = ptr::null_mut();
        // SAFETY: out-parameter; freed by Staged's drop.
        unsafe { check(sys::bnb_malloc(self.raw, to_i64("bytes", bytes)?, &mut p))? };
        Ok(Staged {
            ctx: self,
            ptr: p,
            owned: true,
        })
    }

    /// An input slice where the backend can read it.
    pub(crate) fn input<T: Copy>(&self, s: &[T]) -> Result<Staged<'_>> {
        let bytes = std::mem::size_of_val(s);
        if self.backend_addressable(s.as_ptr(), bytes) {
            return Ok(Staged {
                ctx: self,
                ptr: s.as_ptr() as *mut c_void,
                owned: false,
            });
        }
        let staged = self.alloc(bytes)?;
        // SAFETY: `staged` has `bytes` bytes of backend memory; `s` has `bytes` bytes.
        unsafe {
            check(sys::bnb_memcpy(
                self.raw,
                staged.ptr,
                s.as_ptr().cast(),
                bytes as i64,
                sys::BNB_MEMCPY_HOST_TO_BACKEND,
                ptr::null_mut(),
            ))?;
        }
        Ok(staged)
    }

    pub(crate) fn input_opt<T: Copy>(&self, s: Option<&[T]>) -> Result<Option<Staged<'_>>> {
        s.map(|s| self.input(s)).transpose()
    }

    /// A copy of `s` in memory allocated by the library, on every backend: for arguments the
    /// library keeps after the call returns (a plan), which must not point into a caller's value
    /// that may move.
    pub(crate) fn copy_in<T: Copy>(&self, s: &[T]) -> Result<Staged<'_>> {
        let bytes = std::mem::size_of_val(s);
        let staged = self.alloc(bytes.max(1))?;
        // SAFETY: `staged` has at least `bytes` bytes of backend memory; `s` has `bytes` bytes.
        unsafe {
            check(sys::bnb_memcpy(
                self.raw,
                staged.ptr,
                s.as_ptr().cast(),
                bytes as i64,
                sys::BNB_MEMCPY_HOST_TO_BACKEND,
                ptr::null_mut(),
            ))?;
        }
        Ok(staged)
    }

    /// A slice the call reads and writes: where the backend can use it, its contents there;
    /// `finish` brings it back.
    pub(crate) fn inout<T: Copy>(&self, s: &mut [T]) -> Result<Staged<'_>> {
        if self.backend_addressable(s.as_ptr(), std::mem::size_of_val(s)) {
            return Ok(Staged {
                ctx: self,
                ptr: s.as_mut_ptr().cast(),
                owned: false,
            });
        }
        self.copy_in(s)
    }

    /// An output slice where the backend can write it; `finish` brings it back.
    pub(crate) fn output<T: Copy>(&self, s: &mut [T]) -> Result<Staged<'_>> {
        let bytes = std::mem::size_of_val(s);
        if self.backend_addressable(s.as_ptr(), bytes) {
            return Ok(Staged {
                ctx: self,
                ptr: s.as_mut_ptr().cast(),
                owned: false,
            });
        }
        self.alloc(bytes)
    }

    /// Waits for the backend, then copies staged outputs back into their host slices.
    pub(crate) fn finish<T: Copy>(&self, outputs: &mut [(&Staged<'_>, &mut [T])]) -> Result<()> {
        self.sync()?;
        for (staged, host) in outputs.iter_mut() {
            self.copy_back(staged, host)?;
        }
        self.sync()
    }

    /// Waits for the work queued on the default stream.
    pub(crate) fn sync(&self) -> Result<()> {
        // SAFETY: a live context.
        unsafe { check(sys::bnb_synchronize(self.raw, ptr::null_mut())) }
    }

    /// Copies a staged output back into its host slice (nothing to do when it was the slice);
    /// call `sync` before and after.
    pub(crate) fn copy_back<T: Copy>(&self, staged: &Staged<'_>, host: &mut [T]) -> Result<()> {
        if !staged.owned {
            return Ok(());
        }
        // SAFETY: `staged` is a live staging buffer made for a slice of this size.
        unsafe {
            check(sys::bnb_memcpy(
                self.raw,
                host.as_mut_ptr().cast(),
                staged.ptr,
                std::mem::size_of_val(host) as i64,
                sys::BNB_MEMCPY_BACKEND_TO_HOST,
                ptr::null_mut(),
            ))
        }
    }

    /// 8-bit blockwise quantization of `a` (`a.len()` elements): one code per element into
    /// `out`, one absmax per block into `absmax`. `code`: a 256-entry table, or `None` for the
    /// signed dynamic map.
    pub fn quantize_blockwise<T: Float>(
        &self,
        a: &[T],
        blocksize: usize,
        code: Option<&[f32]>,
        out: &mut [u8],
        absmax: &mut [f32],
    ) -> Result<()> {
        let n = a.len();
        need("out", out.len(), n, "one code per input element")?;
        need(
            "absmax",
            absmax.len(),
            blocks(n, blocksize),
            "one float per block",
        )?;
        if let Some(code) = code {
            need("code", code.len(), 256, "a 256-entry table")?;
        }
        let (a_s, code_s) = (self.input(a)?, self.input_opt(code)?);
        let (out_s, absmax_s) = (self.output(out)?, self.output(absmax)?);
        // SAFETY: every buffer was checked above to hold what the call reads or writes.
        unsafe {
            check(sys::bnb_quantize_blockwise(
                self.raw,
                T::DTYPE.raw(),
                a_s.ptr(),
                to_i64("n", n)?,
                to_i64("blocksize", blocksize)?,
                code_s.as_ref().map_or(ptr::null(), |c| c.ptr()),
                out_s.ptr(),
                absmax_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&out_s, &mut out[..n])])?;
        self.finish(&mut [(&absmax_s, &mut absmax[..])])
    }

    /// Inverse of `quantize_blockwise`: fills all of `out` (its length is n).
    pub fn dequantize_blockwise<T: Float>(
        &self,
        q: &[u8],
        absmax: &[f32],
        code: Option<&[f32]>,
        blocksize: usize,
        out: &mut [T],
    ) -> Result<()> {
        let n = out.len();
        need("q", q.len(), n, "one code per output element")?;
        need(
            "absmax",
            absmax.len(),
            blocks(n, blocksize),
            "one float per block",
        )?;
        if let Some(code) = code {
            need("code", code.len(), 256, "a 256-entry table")?;
        }
        let (q_s, absmax_s, code_s) = (self.input(q)?, self.input(absmax)?, self.input_opt(code)?);
        let out_s = self.output(out)?;
        // SAFETY: buffers checked above.
        unsafe {
            check(sys::bnb_dequantize_blockwise(
                self.raw,
                q_s.ptr(),
                absmax_s.ptr(),
                code_s.as_ref().map_or(ptr::null(), |c| c.ptr()),
                to_i64("n", n)?,
                to_i64("blocksize", blocksize)?,
                T::DTYPE.raw(),
                out_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&out_s, out)])
    }

    /// NF4/FP4 quantization: `packed` gets `packed_len(a.len())` bytes (even element in the
    /// high nibble), `absmax` one float per block.
    pub fn quantize_4bit<T: Float>(
        &self,
        quant: Quant4,
        a: &[T],
        blocksize: usize,
        packed: &mut [u8],
        absmax: &mut [f32],
    ) -> Result<()> {
        let n = a.len();
        let packed_bytes = packed_len(n);
        need("packed", packed.len(), packed_bytes, "two codes per byte")?;
        need(
            "absmax",
            absmax.len(),
            blocks(n, blocksize),
            "one float per block",
        )?;
        let a_s = self.input(a)?;
        let (packed_s, absmax_s) = (self.output(packed)?, self.output(absmax)?);
        // SAFETY: buffers checked above.
        unsafe {
            check(sys::bnb_quantize_4bit(
                self.raw,
                quant.raw(),
                T::DTYPE.raw(),
                a_s.ptr(),
                to_i64("n", n)?,
                to_i64("blocksize", blocksize)?,
                packed_s.ptr(),
                absmax_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&packed_s, &mut packed[..packed_bytes])])?;
        self.finish(&mut [(&absmax_s, &mut absmax[..])])
    }

    /// Inverse of `quantize_4bit`: fills all of `out` (its length is n).
    pub fn dequantize_4bit<T: Float>(
        &self,
        quant: Quant4,
        packed: &[u8],
        scales: &Scales<'_>,
        blocksize: usize,
        out: &mut [T],
    ) -> Result<()> {
        let n = out.len();
        need("packed", packed.len(), packed_len(n), "two codes per byte")?;
        let packed_s = self.input(packed)?;
        let scales_s = self.stage_scales(scales, blocks(n, blocksize))?;
        let out_s = self.output(out)?;
        // SAFETY: buffers checked above and in stage_scales.
        unsafe {
            check(sys::bnb_dequantize_4bit(
                self.raw,
                quant.raw(),
                packed_s.ptr(),
                &scales_s.raw,
                to_i64("n", n)?,
                to_i64("blocksize", blocksize)?,
                T::DTYPE.raw(),
                out_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&out_s, out)])
    }

    /// Double quantization of per-block scales: `absmax_q` gets one code per entry of
    /// `absmax`, `absmax2` one float per 256 of them; returns the offset (their mean).
    pub fn compress_absmax(&self, absmax: &[f32], absmax_q: &mut [u8], absmax2: &mut [f32]) -> Result<f32> {
        let nblocks = absmax.len();
        need("absmax_q", absmax_q.len(), nblocks, "one code per block")?;
        need(
            "absmax2",
            absmax2.len(),
            blocks(nblocks, 256),
            "one float per 256 blocks",
        )?;
        let mut offset = [0f32; 1];
        let absmax_s = self.input(absmax)?;
        let (q_s, a2_s, off_s) = (
            self.output(absmax_q)?,
            self.output(absmax2)?,
            self.output(&mut offset)?,
        );
        // SAFETY: buffers checked above.
        unsafe {
            check(sys::bnb_compress_absmax(
                self.raw,
                absmax_s.ptr(),
                to_i64("nblocks", nblocks)?,
                q_s.ptr(),
                a2_s.ptr(),
                off_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&q_s, &mut absmax_q[..nblocks])])?;
        self.finish(&mut [(&a2_s, &mut absmax2[..]), (&off_s, &mut offset[..])])?;
        Ok(offset[0])
    }

    /// `out[m,n] = a[m,k] @ dequant(w)[n,k]^T (+ bias[n])`, `w` quantized from its `[n,k]`
    /// row-major form by `quantize_4bit`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_4bit<T: Float>(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        w: &[u8],
        scales: &Scales<'_>,
        quant: Quant4,
        blocksize: usize,
        bias: Option<&[T]>,
        out: &mut [T],
    ) -> Result<()> {
        let weights = product("n*k", n, k)?;
        need("a", a.len(), product("m*k", m, k)?, "m rows of k")?;
        need("w", w.len(), packed_len(weights), "n*k packed 4-bit codes")?;
        need("out", out.len(), product("m*n", m, n)?, "m rows of n")?;
        if let Some(bias) = bias {
            need("bias", bias.len(), n, "one per output column")?;
        }
        let (m, n, k) = (to_i64("m", m)?, to_i64("n", n)?, to_i64("k", k)?);
        let bs = to_i64("blocksize", blocksize)?;
        self.gemm4_call(a, w, scales, blocks(weights, blocksize), bias, out, |g| {
            // SAFETY: the staged buffers were checked by the caller and in stage_scales.
            unsafe {
                sys::bnb_gemm_4bit(
                    self.raw, T::DTYPE.raw(), m, n, k, g.a, g.w, g.scales, quant.raw(), bs, g.bias, g.out,
                    ptr::null_mut(),
                )
            }
        })
    }

    /// Stages a 4-bit product's arrays (`a`, the packed `w` with its scales of `nblocks` blocks,
    /// `bias` when given, `out`), makes the library call `run` with them and copies `out` back.
    #[allow(clippy::too_many_arguments)]
    fn gemm4_call<T: Float>(
        &self,
        a: &[T],
        w: &[u8],
        scales: &Scales<'_>,
        nblocks: usize,
        bias: Option<&[T]>,
        out: &mut [T],
        run: impl FnOnce(&Gemm4Args) -> sys::bnb_status_t,
    ) -> Result<()> {
        let (a_s, w_s, bias_s) = (self.input(a)?, self.input(w)?, self.input_opt(bias)?);
        let scales_s = self.stage_scales(scales, nblocks)?;
        let out_s = self.output(out)?;
        check(run(&Gemm4Args {
            a: a_s.ptr::<c_void>(),
            w: w_s.ptr::<u8>(),
            scales: &scales_s.raw,
            bias: bias_s.as_ref().map_or(ptr::null(), |b| b.ptr::<c_void>()),
            out: out_s.ptr::<c_void>(),
        }))?;
        self.finish(&mut [(&out_s, out)])
    }

    /// `out[m,k] = a[m,n] @ dequant(w)[n,k]`: the other orientation of `gemm_4bit`'s weight (the
    /// same packed `w` and scales; the input gradient of `a @ w^T`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_4bit_transposed<T: Float>(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        w: &[u8],
        scales: &Scales<'_>,
        quant: Quant4,
        blocksize: usize,
        out: &mut [T],
    ) -> Result<()> {
        let weights = product("n*k", n, k)?;
        need("a", a.len(), product("m*n", m, n)?, "m rows of n")?;
        need("w", w.len(), packed_len(weights), "n*k packed 4-bit codes")?;
        need("out", out.len(), product("m*k", m, k)?, "m rows of k")?;
        let (m, n, k) = (to_i64("m", m)?, to_i64("n", n)?, to_i64("k", k)?);
        let bs = to_i64("blocksize", blocksize)?;
        self.gemm4_call(a, w, scales, blocks(weights, blocksize), None, out, |g| {
            // SAFETY: the staged buffers were checked by the caller and in stage_scales.
            unsafe {
                sys::bnb_gemm_4bit_transposed(
                    self.raw, T::DTYPE.raw(), m, n, k, g.a, g.w, g.scales, quant.raw(), bs, g.out, ptr::null_mut(),
                )
            }
        })
    }

    /// LLM.int8() row-wise quantization of `a[rows, cols]`; entries with `|x| >= threshold`
    /// become 0 (threshold 0 = none).
    pub fn int8_vectorwise_quant<T: Float>(
        &self,
        rows: usize,
        cols: usize,
        a: &[T],
        threshold: f32,
        q: &mut [i8],
        row_stats: &mut [f32],
    ) -> Result<()> {
        let total = product("rows*cols", rows, cols)?;
        need("a", a.len(), total, "rows*cols")?;
        need("q", q.len(), total, "rows*cols")?;
        need("row_stats", row_stats.len(), rows, "one per row")?;
        let a_s = self.input(a)?;
        let (q_s, rs_s) = (self.output(q)?, self.output(row_stats)?);
        // SAFETY: buffers checked above.
        unsafe {
            check(sys::bnb_int8_vectorwise_quant(
                self.raw,
                T::DTYPE.raw(),
                to_i64("rows", rows)?,
                to_i64("cols", cols)?,
                a_s.ptr(),
                threshold,
                q_s.ptr(),
                rs_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&q_s, q)])?;
        self.finish(&mut [(&rs_s, row_stats)])
    }

    /// The columns of `a[rows, cols]` holding any `|x| >= threshold`, ascending.
    pub fn int8_outlier_columns<T: Float>(
        &self,
        rows: usize,
        cols: usize,
        a: &[T],
        threshold: f32,
    ) -> Result<Vec<i32>> {
        need("a", a.len(), product("rows*cols", rows, cols)?, "rows*cols")?;
        let mut columns = vec![0i32; cols];
        let mut count: i64 = 0;
        let a_s = self.input(a)?;
        let cols_s = self.output(&mut columns)?;
        // SAFETY: `columns` has room for every column; count is a host out-parameter.
        unsafe {
            check(sys::bnb_int8_outlier_columns(
                self.raw,
                T::DTYPE.raw(),
                to_i64("rows", rows)?,
                to_i64("cols", cols)?,
                a_s.ptr(),
                threshold,
                cols_s.ptr(),
                to_i64("cols", cols)?,
                &mut count,
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&cols_s, &mut columns[..])])?;
        drop(cols_s);
        columns.truncate(usize::try_from(count).unwrap_or(0).min(cols));
        Ok(columns)
    }

    /// `c[m,n] (i32) = a[m,k] (i8) @ b[n,k]^T (i8)`.
    pub fn int8_matmul(&self, m: usize, n: usize, k: usize, a: &[i8], b: &[i8], c: &mut [i32]) -> Result<()> {
        need("a", a.len(), product("m*k", m, k)?, "m rows of k")?;
        need("b", b.len(), product("n*k", n, k)?, "n rows of k")?;
        need("c", c.len(), product("m*n", m, n)?, "m rows of n")?;
        let (a_s, b_s) = (self.input(a)?, self.input(b)?);
        let c_s = self.output(c)?;
        // SAFETY: buffers checked above.
        unsafe {
            check(sys::bnb_int8_matmul(
                self.raw,
                to_i64("m", m)?,
                to_i64("n", n)?,
                to_i64("k", k)?,
                a_s.ptr(),
                b_s.ptr(),
                c_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&c_s, c)])
    }

    /// `out[m,n] = c * row_stats[m] * col_stats[n] / (127*127) (+ bias[n])`.
    #[allow(clippy::too_many_arguments)]
    pub fn int8_mm_dequant<T: Float>(
        &self,
        m: usize,
        n: usize,
        c: &[i32],
        row_stats: &[f32],
        col_stats: &[f32],
        bias: Option<&[T]>,
        out: &mut [T],
    ) -> Result<()> {
        let total = product("m*n", m, n)?;
        need("c", c.len(), total, "m rows of n")?;
        need("row_stats", row_stats.len(), m, "one per row")?;
        need("col_stats", col_stats.len(), n, "one per column")?;
        need("out", out.len(), total, "m rows of n")?;
        if let Some(bias) = bias {
            need("bias", bias.len(), n, "one per column")?;
        }
        let (c_s, rs_s, cs_s, bias_s) = (
            self.input(c)?,
            self.input(row_stats)?,
            self.input(col_stats)?,
            self.input_opt(bias)?,
        );
        let out_s = self.output(out)?;
        // SAFETY: buffers checked above.
        unsafe {
            check(sys::bnb_int8_mm_dequant(
                self.raw,
                to_i64("m", m)?,
                to_i64("n", n)?,
                c_s.ptr(),
                rs_s.ptr(),
                cs_s.ptr(),
                bias_s.as_ref().map_or(ptr::null(), |b| b.ptr()),
                T::DTYPE.raw(),
                out_s.ptr(),
                ptr::null_mut(),
            ))?;
        }
        self.finish(&mut [(&out_s, out)])
    }

    /// The LLM.int8() layer without its outlier product, in one call (`bnb_int8_linear`):
    /// `out[m,n] = dequant(int8(a) @ w^T) (+ bias)`, bit for bit what `int8_vectorwise_quant`
    /// (into `q`, `row_stats`), `int8_matmul` (into `c`) and `int8_mm_dequant` (with `scb` as the
    /// column statistics) give. `w` is `[n,k]` int8 with its row absmax `scb`; `c` (`m*n`) is
    /// scratch whose contents are unspecified afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn int8_linear<T: Float>(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        threshold: f32,
        w: &[i8],
        scb: &[f32],
        bias: Option<&[T]>,
        q: &mut [i8],
        row_stats: &mut [f32],
        c: &mut [i32],
        out: &mut [T],
    ) -> Result<()> {
        self.int8_layer(m, n, k, a, threshold, w, scb, bias, q, row_stats, c, None, out)
            .map(|_| ())
    }

    /// The LLM.int8() layer with its outlier product (`bnb_int8_linear_outliers`, docs/OPS.md
    /// §5.10): `out` is what `int8_linear` gives, plus the product of the outlier columns of `a`
    /// (any `|x| >= threshold`) with the dequantized columns of `w`, summed in a fixed order.
    /// The outlier columns go, ascending, to `columns[..count]` (`columns` holds `k`); returns
    /// `count` (0 at threshold 0, where `out` equals `int8_linear`'s).
    #[allow(clippy::too_many_arguments)]
    pub fn int8_linear_outliers<T: Float>(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        threshold: f32,
        w: &[i8],
        scb: &[f32],
        bias: Option<&[T]>,
        q: &mut [i8],
        row_stats: &mut [f32],
        c: &mut [i32],
        columns: &mut [i32],
        out: &mut [T],
    ) -> Result<usize> {
        self.int8_layer(m, n, k, a, threshold, w, scb, bias, q, row_stats, c, Some(columns), out)
    }

    /// `int8_linear` (columns None) or `int8_linear_outliers`; the outlier count (0 for the first).
    #[allow(clippy::too_many_arguments)]
    fn int8_layer<T: Float>(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        threshold: f32,
        w: &[i8],
        scb: &[f32],
        bias: Option<&[T]>,
        q: &mut [i8],
        row_stats: &mut [f32],
        c: &mut [i32],
        columns: Option<&mut [i32]>,
        out: &mut [T],
    ) -> Result<usize> {
        let (mk, mn) = (product("m*k", m, k)?, product("m*n", m, n)?);
        need("a", a.len(), mk, "m rows of k")?;
        need("w", w.len(), product("n*k", n, k)?, "n rows of k")?;
        need("scb", scb.len(), n, "one per row of w")?;
        if let Some(bias) = bias {
            need("bias", bias.len(), n, "one per output column")?;
        }
        need("q", q.len(), mk, "m rows of k")?;
        need("row_stats", row_stats.len(), m, "one per row of a")?;
        need("c", c.len(), mn, "m rows of n")?;
        if let Some(columns) = &columns {
            need("columns", columns.len(), k, "one per column of a")?;
        }
        need("out", out.len(), mn, "m rows of n")?;
        // Only what the call writes comes back (a longer slice keeps its tail).
        let (q, row_stats, c, out) = (&mut q[..mk], &mut row_stats[..m], &mut c[..mn], &mut out[..mn]);
        let (a_s, w_s, scb_s, bias_s) = (
            self.input(a)?,
            self.input(w)?,
            self.input(scb)?,
            self.input_opt(bias)?,
        );
        let (q_s, rs_s, c_s, out_s) = (
            self.output(q)?,
            self.output(row_stats)?,
            self.output(c)?,
            self.output(out)?,
        );
        let dims = (to_i64("m", m)?, to_i64("n", n)?, to_i64("k", k)?);
        let bias_p = bias_s.as_ref().map_or(ptr::null(), |b| b.ptr());
        let mut count = [0i64; 1];
        match columns {
            None => {
                // SAFETY: buffers checked above.
                unsafe {
                    check(sys::bnb_int8_linear(
                        self.raw,
                        T::DTYPE.raw(),
                        dims.0,
                        dims.1,
                        dims.2,
                        a_s.ptr(),
                        threshold,
                        w_s.ptr(),
                        scb_s.ptr(),
                        bias_p,
                        q_s.ptr(),
                        rs_s.ptr(),
                        c_s.ptr(),
                        out_s.ptr(),
                        ptr::null_mut(),
                    ))?;
                }
            }
            Some(columns) => {
                let columns = &mut columns[..k];
                let (cols_s, count_s) = (self.output(columns)?, self.output(&mut count[..])?);
                // SAFETY: buffers checked above; columns holds k, count one.
                unsafe {
                    check(sys::bnb_int8_linear_outliers(
                        self.raw,
                        T::DTYPE.raw(),
                        dims.0,
                        dims.1,
                        dims.2,
                        a_s.ptr(),
                        threshold,
                        w_s.ptr(),
                        scb_s.ptr(),
                        bias_p,
                        q_s.ptr(),
                        rs_s.ptr(),
                        c_s.ptr(),
                        cols_s.ptr(),
                        count_s.ptr(),
                        out_s.ptr(),
                        ptr::null_mut(),
                    ))?;
                }
                self.finish(&mut [(&cols_s, columns)])?;
                self.finish(&mut [(&count_s, &mut count[..])])?;
            }
        }
        self.finish(&mut [(&q_s, q)])?;
        self.finish(&mut [(&rs_s, row_stats)])?;
        self.finish(&mut [(&out_s, out)])?;
        Ok(count[0] as usize)
    }

    /// A `bnb_scales_t` whose arrays live in backend memory, checked against `nblocks`.
    pub(crate) fn stage_scales(&self, scales: &Scales<'_>, nblocks: usize) -> Result<StagedScales<'_>> {
        let mut raw = sys::bnb_scales_t {
            struct_size: 0,
            absmax: ptr::null(),
            absmax_q: ptr::null(),
            absmax2: ptr::null(),
            code2: ptr::null(),
            offset: ptr::null(),
            blocksize2: 0,
        };
        // SAFETY: out-parameter.
        unsafe { check(sys::bnb_scales_init(&mut raw))? };
        raw.struct_size = size_of::<sys::bnb_scales_t>() as u32;
        let mut keep = Vec::new();
        match scales {
            Scales::Plain(absmax) => {
                need("absmax", absmax.len(), nblocks, "one float per block")?;
                let s = self.input(absmax)?;
                raw.absmax = s.ptr();
                keep.push(s);
            }
            Scales::Nested {
                absmax_q,
                absmax2,
                code2,
                offset,
                blocksize2,
            } => {
                need("absmax_q", absmax_q.len(), nblocks, "one code per block")?;
                need(
                    "absmax2",
                    absmax2.len(),
                    blocks(nblocks, *blocksize2),
                    "one float per blocksize2 codes",
                )?;
                if let Some(code2) = code2 {
                    need("code2", code2.len(), 256, "a 256-entry table")?;
                }
                let q = self.input(absmax_q)?;
                let a2 = self.input(absmax2)?;
                raw.absmax_q = q.ptr();
                raw.absmax2 = a2.ptr();
                raw.blocksize2 = to_i64("blocksize2", *blocksize2)?;
                keep.push(q);
                keep.push(a2);
                if let Some(code2) = code2 {
                    let c = self.input(code2)?;
                    raw.code2 = c.ptr();
                    keep.push(c);
                }
                let off = self.input(std::slice::from_ref(offset))?;
                raw.offset = off.ptr();
                keep.push(off);
            }
        }
        Ok(StagedScales { raw, _keep: keep })
    }
}

/// The staged pointers of a 4-bit product (Context::gemm4_call).
struct Gemm4Args {
    a: *const c_void,
    w: *const u8,
    scales: *const sys::bnb_scales_t,
    bias: *const c_void,
    out: *mut c_void,
}

pub(crate) struct StagedScales<'a> {
    pub(crate) raw: sys::bnb_scales_t,
    _keep: Vec<Staged<'a>>,
}
