//! Raw declarations of libbnb's C API, transcribed by hand from `include/bnb.h`.
//!
//! Everything here is `unsafe` and mirrors the header one to one; the safe interface is the
//! `bnb` crate. C enums cross the ABI as 32-bit integers (the header keeps every enum 32 bits
//! wide and passes them as `int32_t`), so they are plain `i32` aliases with constants here:
//! a value a newer library returns can never be an invalid Rust enum.
//!
//! The struct layouts are checked against the C compiler's view of the header by
//! `tests/layout.rs` (the build script compiles a probe program with the system `cc`).
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};
use std::marker::{PhantomData, PhantomPinned};

// ------------------------------------------------------------------ version, status, errors
pub const BNB_VERSION_MAJOR: i32 = 0;
pub const BNB_VERSION_MINOR: i32 = 1;
pub const BNB_VERSION_PATCH: i32 = 0;
pub const BNB_VERSION_NUMBER: i32 = BNB_VERSION_MAJOR * 10000 + BNB_VERSION_MINOR * 100 + BNB_VERSION_PATCH;

pub type bnb_status_t = i32;
pub const BNB_SUCCESS: bnb_status_t = 0;
pub const BNB_ERR_INVALID_ARGUMENT: bnb_status_t = 1;
pub const BNB_ERR_NOT_SUPPORTED: bnb_status_t = 2;
pub const BNB_ERR_OUT_OF_MEMORY: bnb_status_t = 3;
pub const BNB_ERR_BACKEND_UNAVAILABLE: bnb_status_t = 4;
pub const BNB_ERR_DEVICE: bnb_status_t = 5;
pub const BNB_ERR_INTERNAL: bnb_status_t = 6;
pub const BNB_STATUS_FORCE_32BIT: bnb_status_t = 0x7fff_ffff;

// ------------------------------------------------------------------ types
pub type bnb_dtype_t = i32;
pub const BNB_F32: bnb_dtype_t = 0;
pub const BNB_F16: bnb_dtype_t = 1;
pub const BNB_BF16: bnb_dtype_t = 2;
pub const BNB_U8: bnb_dtype_t = 3;
pub const BNB_I8: bnb_dtype_t = 4;
pub const BNB_I32: bnb_dtype_t = 5;

pub type bnb_quant4_t = i32;
pub const BNB_FP4: bnb_quant4_t = 1;
pub const BNB_NF4: bnb_quant4_t = 2;

pub type bnb_code_table_t = i32;
pub const BNB_CODE_DYNAMIC_SIGNED: bnb_code_table_t = 0;
pub const BNB_CODE_DYNAMIC_UNSIGNED: bnb_code_table_t = 1;
pub const BNB_CODE_NF4: bnb_code_table_t = 2;
pub const BNB_CODE_FP4: bnb_code_table_t = 3;

pub type bnb_backend_kind_t = i32;
pub const BNB_BACKEND_AUTO: bnb_backend_kind_t = 0;
pub const BNB_BACKEND_CPU: bnb_backend_kind_t = 1;
pub const BNB_BACKEND_CUDA: bnb_backend_kind_t = 2;
pub const BNB_BACKEND_HIP: bnb_backend_kind_t = 3;

pub type bnb_optimizer_t = i32;
pub const BNB_OPT_ADAM: bnb_optimizer_t = 1;
pub const BNB_OPT_MOMENTUM: bnb_optimizer_t = 2;
pub const BNB_OPT_RMSPROP: bnb_optimizer_t = 3;
pub const BNB_OPT_LION: bnb_optimizer_t = 4;
pub const BNB_OPT_ADAGRAD: bnb_optimizer_t = 5;
pub const BNB_OPT_ADEMAMIX: bnb_optimizer_t = 6;
pub const BNB_OPT_LAMB: bnb_optimizer_t = 7;
pub const BNB_OPT_LARS: bnb_optimizer_t = 8;

pub type bnb_op_t = i32;
pub const BNB_OP_QUANTIZE_BLOCKWISE: bnb_op_t = 0;
pub const BNB_OP_DEQUANTIZE_BLOCKWISE: bnb_op_t = 1;
pub const BNB_OP_QUANTIZE_4BIT: bnb_op_t = 2;
pub const BNB_OP_DEQUANTIZE_4BIT: bnb_op_t = 3;
pub const BNB_OP_COMPRESS_ABSMAX: bnb_op_t = 4;
pub const BNB_OP_GEMM_4BIT: bnb_op_t = 5;
pub const BNB_OP_INT8_VECTORWISE_QUANT: bnb_op_t = 6;
pub const BNB_OP_INT8_OUTLIER_COLUMNS: bnb_op_t = 7;
pub const BNB_OP_INT8_MATMUL: bnb_op_t = 8;
pub const BNB_OP_INT8_MM_DEQUANT: bnb_op_t = 9;
pub const BNB_OP_INT8_LINEAR: bnb_op_t = 10;
pub const BNB_OP_OPTIMIZER_UPDATE: bnb_op_t = 11;
pub const BNB_OP_PAGED_MEMORY: bnb_op_t = 12;
pub const BNB_OP_CHECK_FINITE: bnb_op_t = 13;
pub const BNB_OP_GEMM_4BIT_TRANSPOSED: bnb_op_t = 14;
pub const BNB_OP_INT8_LINEAR_OUTLIERS: bnb_op_t = 15;

pub type bnb_memcpy_kind_t = i32;
pub const BNB_MEMCPY_HOST_TO_HOST: bnb_memcpy_kind_t = 0;
pub const BNB_MEMCPY_HOST_TO_BACKEND: bnb_memcpy_kind_t = 1;
pub const BNB_MEMCPY_BACKEND_TO_HOST: bnb_memcpy_kind_t = 2;
pub const BNB_MEMCPY_BACKEND_TO_BACKEND: bnb_memcpy_kind_t = 3;

// ------------------------------------------------------------------ structs
#[repr(C)]
#[derive(Clone, Copy)]
pub struct bnb_backend_info_t {
    pub struct_size: u32,
    pub kind: i32,
    pub name: [c_char; 32],
    pub available: i32,
    pub device_count: i32,
    pub detail: [c_char; 256],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bnb_backend_capabilities_t {
    pub struct_size: u32,
    pub kind: i32,
    pub ops: u64,
    pub float_dtypes: u32,
    pub quant_types: u32,
    pub optimizers: u32,
    pub device_count: i32,
    pub optimizer_state_bits: u64,
    pub max_elements: i64,
    pub blocksize_8bit_min: i64,
    pub blocksize_8bit_max: i64,
    pub blocksize_4bit_min: i64,
    pub blocksize_4bit_max: i64,
    pub int8_max_k: i64,
    pub optimizer_block: i64,
    pub optimizer_max_step: i64,
}

/// The opaque object behind `bnb_context_t`.
#[repr(C)]
pub struct bnb_context {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}
pub type bnb_context_t = *mut bnb_context;

/// The opaque object behind `bnb_gemm4_plan_t`.
#[repr(C)]
pub struct bnb_gemm4_plan {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}
pub type bnb_gemm4_plan_t = *mut bnb_gemm4_plan;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct bnb_context_options_t {
    pub struct_size: u32,
    pub backend: i32,
    pub device: i32,
    pub num_threads: i32,
    pub check_finite: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bnb_scales_t {
    pub struct_size: u32,
    pub absmax: *const f32,
    pub absmax_q: *const u8,
    pub absmax2: *const f32,
    pub code2: *const f32,
    pub offset: *const f32,
    pub blocksize2: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct bnb_optimizer_params_t {
    pub struct_size: u32,
    pub optimizer: i32,
    pub state_bits: i32,
    pub param_dtype: i32,
    pub n: i64,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub beta3: f32,
    pub alpha: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub gnorm_scale: f32,
    pub max_unorm: f32,
    pub param_norm: f32,
    pub step: i64,
    pub skip_zeros: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bnb_optimizer_tensors_t {
    pub struct_size: u32,
    pub p: *mut c_void,
    pub g: *const c_void,
    pub state1: *mut c_void,
    pub state2: *mut c_void,
    pub absmax1: *mut f32,
    pub absmax2: *mut f32,
    pub qmap1: *const f32,
    pub qmap2: *const f32,
    pub unorm_vec: *mut f32,
}

// ------------------------------------------------------------------ functions
extern "C" {
    pub fn bnb_version_number() -> i32;
    pub fn bnb_version_string() -> *const c_char;
    pub fn bnb_status_string(status: bnb_status_t) -> *const c_char;
    pub fn bnb_last_error_message() -> *const c_char;

    pub fn bnb_backend_count(count: *mut i32) -> bnb_status_t;
    pub fn bnb_backend_get_info(index: i32, info: *mut bnb_backend_info_t) -> bnb_status_t;
    pub fn bnb_backend_get_capabilities(index: i32, caps: *mut bnb_backend_capabilities_t) -> bnb_status_t;

    pub fn bnb_context_options_init(options: *mut bnb_context_options_t) -> bnb_status_t;
    pub fn bnb_context_create(options: *const bnb_context_options_t, ctx: *mut bnb_context_t)
        -> bnb_status_t;
    pub fn bnb_context_destroy(ctx: bnb_context_t) -> bnb_status_t;
    pub fn bnb_context_get_backend(ctx: bnb_context_t, kind: *mut i32, device: *mut i32) -> bnb_status_t;

    pub fn bnb_get_code_table(which: i32, out: *mut f32, count: *mut i64) -> bnb_status_t;

    pub fn bnb_quantize_blockwise(
        ctx: bnb_context_t,
        dtype: i32,
        a: *const c_void,
        n: i64,
        blocksize: i64,
        code: *const f32,
        out: *mut u8,
        absmax: *mut f32,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_dequantize_blockwise(
        ctx: bnb_context_t,
        q: *const u8,
        absmax: *const f32,
        code: *const f32,
        n: i64,
        blocksize: i64,
        out_dtype: i32,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_scales_init(scales: *mut bnb_scales_t) -> bnb_status_t;
    pub fn bnb_quantize_4bit(
        ctx: bnb_context_t,
        quant_type: i32,
        dtype: i32,
        a: *const c_void,
        n: i64,
        blocksize: i64,
        packed: *mut u8,
        absmax: *mut f32,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_dequantize_4bit(
        ctx: bnb_context_t,
        quant_type: i32,
        packed: *const u8,
        scales: *const bnb_scales_t,
        n: i64,
        blocksize: i64,
        out_dtype: i32,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_compress_absmax(
        ctx: bnb_context_t,
        absmax: *const f32,
        nblocks: i64,
        absmax_q: *mut u8,
        absmax2: *mut f32,
        offset: *mut f32,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_gemm_4bit(
        ctx: bnb_context_t,
        dtype: i32,
        m: i64,
        n: i64,
        k: i64,
        a: *const c_void,
        w: *const u8,
        scales: *const bnb_scales_t,
        quant_type: i32,
        blocksize: i64,
        bias: *const c_void,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_gemm_4bit_transposed(
        ctx: bnb_context_t,
        dtype: i32,
        m: i64,
        n: i64,
        k: i64,
        a: *const c_void,
        w: *const u8,
        scales: *const bnb_scales_t,
        quant_type: i32,
        blocksize: i64,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_gemm_4bit_plan_create(
        ctx: bnb_context_t,
        dtype: i32,
        n: i64,
        k: i64,
        w: *const u8,
        scales: *const bnb_scales_t,
        quant_type: i32,
        blocksize: i64,
        bias: *const c_void,
        plan: *mut bnb_gemm4_plan_t,
    ) -> bnb_status_t;
    pub fn bnb_gemm_4bit_plan_run(
        plan: bnb_gemm4_plan_t,
        m: i64,
        a: *const c_void,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_gemm_4bit_plan_destroy(plan: bnb_gemm4_plan_t) -> bnb_status_t;

    pub fn bnb_int8_vectorwise_quant(
        ctx: bnb_context_t,
        dtype: i32,
        rows: i64,
        cols: i64,
        a: *const c_void,
        threshold: f32,
        q: *mut i8,
        row_stats: *mut f32,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_int8_outlier_columns(
        ctx: bnb_context_t,
        dtype: i32,
        rows: i64,
        cols: i64,
        a: *const c_void,
        threshold: f32,
        columns: *mut i32,
        capacity: i64,
        count: *mut i64,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_int8_matmul(
        ctx: bnb_context_t,
        m: i64,
        n: i64,
        k: i64,
        a: *const i8,
        b: *const i8,
        c: *mut i32,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_int8_mm_dequant(
        ctx: bnb_context_t,
        m: i64,
        n: i64,
        c: *const i32,
        row_stats: *const f32,
        col_stats: *const f32,
        bias: *const c_void,
        out_dtype: i32,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_int8_linear(
        ctx: bnb_context_t,
        dtype: i32,
        m: i64,
        n: i64,
        k: i64,
        a: *const c_void,
        threshold: f32,
        w: *const i8,
        scb: *const f32,
        bias: *const c_void,
        q: *mut i8,
        row_stats: *mut f32,
        c: *mut i32,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_int8_linear_outliers(
        ctx: bnb_context_t,
        dtype: i32,
        m: i64,
        n: i64,
        k: i64,
        a: *const c_void,
        threshold: f32,
        w: *const i8,
        scb: *const f32,
        bias: *const c_void,
        q: *mut i8,
        row_stats: *mut f32,
        c: *mut i32,
        columns: *mut i32,
        count: *mut i64,
        out: *mut c_void,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_optimizer_params_init(params: *mut bnb_optimizer_params_t) -> bnb_status_t;
    pub fn bnb_optimizer_tensors_init(tensors: *mut bnb_optimizer_tensors_t) -> bnb_status_t;
    pub fn bnb_optimizer_update(
        ctx: bnb_context_t,
        params: *const bnb_optimizer_params_t,
        tensors: *const bnb_optimizer_tensors_t,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_optimizer_update_multi(
        ctx: bnb_context_t,
        params: *const bnb_optimizer_params_t,
        count: i32,
        tensors: *const bnb_optimizer_tensors_t,
        n: *const i64,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_paged_alloc(ctx: bnb_context_t, bytes: i64, ptr: *mut *mut c_void) -> bnb_status_t;
    pub fn bnb_paged_free(ctx: bnb_context_t, ptr: *mut c_void) -> bnb_status_t;
    pub fn bnb_paged_prefetch(
        ctx: bnb_context_t,
        ptr: *mut c_void,
        bytes: i64,
        to_device: i32,
        stream: *mut c_void,
    ) -> bnb_status_t;

    pub fn bnb_malloc(ctx: bnb_context_t, bytes: i64, ptr: *mut *mut c_void) -> bnb_status_t;
    pub fn bnb_free(ctx: bnb_context_t, ptr: *mut c_void) -> bnb_status_t;
    pub fn bnb_memcpy(
        ctx: bnb_context_t,
        dst: *mut c_void,
        src: *const c_void,
        bytes: i64,
        kind: i32,
        stream: *mut c_void,
    ) -> bnb_status_t;
    pub fn bnb_synchronize(ctx: bnb_context_t, stream: *mut c_void) -> bnb_status_t;

    pub fn bnb_buffer_declare(ptr: *const c_void, bytes: i64) -> bnb_status_t;
    pub fn bnb_buffer_forget(ptr: *const c_void) -> bnb_status_t;
}
