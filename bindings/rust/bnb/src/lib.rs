//! Safe Rust interface to libbnb: bitsandbytes-compatible 8-bit blockwise and NF4/FP4 4-bit
//! quantization, double-quantized statistics, 4-bit and int8 matmuls (and their prepared and
//! one-call forms), 32-bit and 8-bit optimizer steps, paged memory.
//!
//! Everything goes through libbnb (never a plugin directly), so `BNB_BACKEND=cpu|cuda|hip`
//! picks the backend the same way as from C or Python. Data is passed as host slices; on a GPU
//! backend each call copies its arguments to the device and its results back.
//!
//! ```no_run
//! use bnb::{Context, Quant4};
//! let ctx = Context::new()?;
//! let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut packed = vec![0u8; bnb::packed_len(x.len())];
//! let mut absmax = vec![0f32; bnb::num_blocks(x.len(), 64)];
//! ctx.quantize_4bit(Quant4::Nf4, &x, 64, &mut packed, &mut absmax)?;
//! let mut y = vec![0f32; x.len()];
//! ctx.dequantize_4bit(Quant4::Nf4, &packed, &bnb::Scales::Plain(&absmax), 64, &mut y)?;
//! # Ok::<(), bnb::Error>(())
//! ```
mod context;
mod error;
mod optim;
mod paged;
mod plan;
mod types;

use bnb_sys as sys;

pub use bnb_sys;
pub use context::{num_blocks, packed_len, Context, ContextOptions, Scales};
pub use error::{Error, Result, Status};
pub use optim::{Optimizer, OptimizerParams, OptimizerState, OptimizerTensors, OPTIMIZER_BLOCKSIZE};
pub use paged::PagedBuffer;
pub use plan::Gemm4Plan;
pub use types::{Backend, CodeTable, DType, Element, Float, Quant4, BF16, F16};

use error::{c_text, check};

/// The library's version as `MAJOR * 10000 + MINOR * 100 + PATCH`.
pub fn version_number() -> i32 {
    // SAFETY: no arguments.
    unsafe { sys::bnb_version_number() }
}

/// The library's version string, e.g. "0.1.0".
pub fn version_string() -> String {
    // SAFETY: returns a static string.
    unsafe { c_text(sys::bnb_version_string()) }
}

/// One backend as the library sees it (`bnb_backend_info_t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    pub kind: Backend,
    pub name: String,
    pub available: bool,
    pub device_count: i32,
    /// Why it is not available, or what was found.
    pub detail: String,
}

fn fixed_text(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every backend the library knows, loaded or not.
pub fn backends() -> Result<Vec<BackendInfo>> {
    let mut count = 0i32;
    // SAFETY: out-parameter.
    unsafe { check(sys::bnb_backend_count(&mut count))? };
    (0..count)
        .map(|i| {
            // SAFETY: an all-zero bnb_backend_info_t is valid; struct_size tells the library
            // how much it may write.
            let mut info: sys::bnb_backend_info_t = unsafe { std::mem::zeroed() };
            info.struct_size = std::mem::size_of::<sys::bnb_backend_info_t>() as u32;
            unsafe { check(sys::bnb_backend_get_info(i, &mut info))? };
            Ok(BackendInfo {
                kind: Backend::from_raw(info.kind),
                name: fixed_text(&info.name),
                available: info.available != 0,
                device_count: info.device_count,
                detail: fixed_text(&info.detail),
            })
        })
        .collect()
}

/// An operation a backend may run (`bnb_op_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    QuantizeBlockwise = sys::BNB_OP_QUANTIZE_BLOCKWISE as isize,
    DequantizeBlockwise = sys::BNB_OP_DEQUANTIZE_BLOCKWISE as isize,
    Quantize4bit = sys::BNB_OP_QUANTIZE_4BIT as isize,
    Dequantize4bit = sys::BNB_OP_DEQUANTIZE_4BIT as isize,
    CompressAbsmax = sys::BNB_OP_COMPRESS_ABSMAX as isize,
    Gemm4bit = sys::BNB_OP_GEMM_4BIT as isize,
    Int8VectorwiseQuant = sys::BNB_OP_INT8_VECTORWISE_QUANT as isize,
    Int8OutlierColumns = sys::BNB_OP_INT8_OUTLIER_COLUMNS as isize,
    Int8Matmul = sys::BNB_OP_INT8_MATMUL as isize,
    Int8MmDequant = sys::BNB_OP_INT8_MM_DEQUANT as isize,
    Int8Linear = sys::BNB_OP_INT8_LINEAR as isize,
    OptimizerUpdate = sys::BNB_OP_OPTIMIZER_UPDATE as isize,
    PagedMemory = sys::BNB_OP_PAGED_MEMORY as isize,
    CheckFinite = sys::BNB_OP_CHECK_FINITE as isize,
    Gemm4bitTransposed = sys::BNB_OP_GEMM_4BIT_TRANSPOSED as isize,
}

/// What a loaded backend runs and the limits its calls are checked against
/// (`bnb_backend_capabilities_t`). Masks hold bit `1 << value` per supported value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendCapabilities {
    pub kind: Backend,
    /// [`Op`]s the backend runs (see [`BackendCapabilities::offers`]).
    pub ops: u64,
    /// `bnb_dtype_t` of float data.
    pub float_dtypes: u32,
    /// `bnb_quant4_t`.
    pub quant_types: u32,
    /// `bnb_optimizer_t`.
    pub optimizers: u32,
    pub device_count: i32,
    /// Optimizer state widths in bits (`1 << 8 | 1 << 32`).
    pub optimizer_state_bits: u64,
    pub max_elements: i64,
    /// Blockwise 8-bit and nested scales: powers of two in `[min, max]`.
    pub blocksize_8bit_min: i64,
    pub blocksize_8bit_max: i64,
    /// 4-bit quantization and matmul: powers of two in `[min, max]`.
    pub blocksize_4bit_min: i64,
    pub blocksize_4bit_max: i64,
    pub int8_max_k: i64,
    /// Elements per 8-bit optimizer state block.
    pub optimizer_block: i64,
    /// Largest optimizer step.
    pub optimizer_max_step: i64,
}

impl BackendCapabilities {
    /// The backend runs `op` (the call does not fail with [`Status::NotSupported`] for want of it).
    pub fn offers(&self, op: Op) -> bool {
        (self.ops >> (op as u32)) & 1 != 0
    }
}

/// The capabilities of backend `index` (its position in [`backends`]); an error with the reason
/// when that backend did not load.
pub fn backend_capabilities(index: i32) -> Result<BackendCapabilities> {
    // SAFETY: an all-zero bnb_backend_capabilities_t is valid; struct_size tells the library how
    // much it may write.
    let mut c: sys::bnb_backend_capabilities_t = unsafe { std::mem::zeroed() };
    c.struct_size = std::mem::size_of::<sys::bnb_backend_capabilities_t>() as u32;
    unsafe { check(sys::bnb_backend_get_capabilities(index, &mut c))? };
    Ok(BackendCapabilities {
        kind: Backend::from_raw(c.kind),
        ops: c.ops,
        float_dtypes: c.float_dtypes,
        quant_types: c.quant_types,
        optimizers: c.optimizers,
        device_count: c.device_count,
        optimizer_state_bits: c.optimizer_state_bits,
        max_elements: c.max_elements,
        blocksize_8bit_min: c.blocksize_8bit_min,
        blocksize_8bit_max: c.blocksize_8bit_max,
        blocksize_4bit_min: c.blocksize_4bit_min,
        blocksize_4bit_max: c.blocksize_4bit_max,
        int8_max_k: c.int8_max_k,
        optimizer_block: c.optimizer_block,
        optimizer_max_step: c.optimizer_max_step,
    })
}

/// Declares that the buffer at `ptr` has `bytes` bytes (`bnb_buffer_declare`): on this thread,
/// a libbnb call that receives a pointer inside it fails, naming the argument, instead of going
/// past its end. The crate's own calls check slice lengths already; this protects pointers passed
/// to `bnb_sys` directly. The library never dereferences `ptr` here.
pub fn declare_buffer(ptr: *const std::ffi::c_void, bytes: usize) -> Result<()> {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX); // the library refuses what is too large
    // SAFETY: the library only records the address range.
    unsafe { check(sys::bnb_buffer_declare(ptr, bytes)) }
}

/// Forgets this thread's declaration of the buffer starting at `ptr` (`bnb_buffer_forget`).
pub fn forget_buffer(ptr: *const std::ffi::c_void) -> Result<()> {
    // SAFETY: the library only drops the recorded range.
    unsafe { check(sys::bnb_buffer_forget(ptr)) }
}

/// One of the built-in code tables: 256 entries (8-bit maps) or 16 (NF4, FP4).
pub fn code_table(which: CodeTable) -> Result<Vec<f32>> {
    let mut table = vec![0f32; 256];
    let mut count = 0i64;
    // SAFETY: `table` has room for 256 floats, as the call requires.
    unsafe {
        check(sys::bnb_get_code_table(
            which.raw(),
            table.as_mut_ptr(),
            &mut count,
        ))?
    };
    table.truncate(usize::try_from(count).unwrap_or(0).min(256));
    Ok(table)
}
