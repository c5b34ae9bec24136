//! LLM.int8() ops and the 4-bit matmul through the binding, against the golden vectors.
mod common;

use bnb::{Context, Quant4, Scales, F16};
use common::*;

fn ctx() -> Context {
    Context::new().expect("create a context")
}

/// Ok(true) = the call ran; Ok(false) = the backend does not offer the op (the test is skipped
/// with a note: which backend offers what is the consistency suite's business, not the binding's).
fn ran(result: bnb::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) if e.status() == bnb::Status::NotSupported => {
            eprintln!("skipped: {e}");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn int8_vectorwise_quant_and_outliers_match_the_reference() {
    let m = manifest();
    let case = find_case_by(&m, "int8_vectorwise_quant", |c| {
        c.get("outputs").unwrap().get("outlier_cols").is_some()
    });
    let dims = shape(case, "inputs", "A");
    let (rows, cols) = (dims[0], dims[1]);
    let a: Vec<F16> = read_u16(case, "inputs", "A").into_iter().map(F16).collect();
    let threshold = case
        .get("params")
        .unwrap()
        .get("threshold")
        .unwrap()
        .num()
        .unwrap() as f32;
    let ctx = ctx();

    let mut q = vec![i8::MIN; rows * cols];
    let mut row_stats = vec![f32::NAN; rows];
    if !ran(ctx.int8_vectorwise_quant(rows, cols, &a, threshold, &mut q, &mut row_stats)) {
        return;
    }
    assert_eq!(first_mismatch(&q, &read_i8(case, "outputs", "q")), None, "q");
    let want_stats: Vec<u32> = read_f32(case, "outputs", "row_stats")
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let got_stats: Vec<u32> = row_stats.iter().map(|v| v.to_bits()).collect();
    assert_eq!(first_mismatch(&got_stats, &want_stats), None, "row_stats");

    let cols_found = ctx.int8_outlier_columns(rows, cols, &a, threshold).unwrap();
    assert_eq!(cols_found, read_i32(case, "outputs", "outlier_cols"));
}

#[test]
fn int8_matmul_and_dequant_match_the_reference() {
    let m = manifest();
    let mm = find_case_by(&m, "int8_linear_matmul", |_| true);
    let (a_dims, b_dims) = (shape(mm, "inputs", "A"), shape(mm, "inputs", "B"));
    let (rows, k, n) = (a_dims[0], a_dims[1], b_dims[0]);
    let mut c = vec![i32::MIN; rows * n];
    let ctx = ctx();
    if !ran(ctx.int8_matmul(
        rows,
        n,
        k,
        &read_i8(mm, "inputs", "A"),
        &read_i8(mm, "inputs", "B"),
        &mut c,
    )) {
        return;
    }
    assert_eq!(first_mismatch(&c, &read_i32(mm, "outputs", "C")), None, "C");

    let dq = find_case_by(&m, "int8_mm_dequant", |c| {
        c.get("inputs").unwrap().get("bias").is_some()
    });
    let bias: Vec<F16> = read_u16(dq, "inputs", "bias").into_iter().map(F16).collect();
    let mut out = vec![F16(0x7e00); rows * n];
    let dequant = ctx.int8_mm_dequant(
        rows,
        n,
        &read_i32(dq, "inputs", "C"),
        &read_f32(dq, "inputs", "row_stats"),
        &read_f32(dq, "inputs", "col_stats"),
        Some(&bias),
        &mut out,
    );
    if !ran(dequant) {
        return;
    }
    // Tolerance of one fp16 ulp (README of the golden vectors).
    let want = read_u16(dq, "outputs", "out");
    for (i, (g, w)) in out.iter().zip(&want).enumerate() {
        let ulp = (F16(*w).to_f32() - F16(w ^ 1).to_f32()).abs();
        let diff = (g.to_f32() - F16(*w).to_f32()).abs();
        assert!(
            diff <= ulp,
            "element {i}: got {}, want {}",
            g.to_f32(),
            F16(*w).to_f32()
        );
    }
}

#[test]
fn gemm_4bit_matches_the_reference_within_tolerance() {
    let m = manifest();
    let case = find_case_by(&m, "matmul_4bit", |c| {
        let p = c.get("params").unwrap();
        p.get("M").and_then(|v| v.num()) == Some(4.0) && p.get("nested") == Some(&Json::Bool(false))
    });
    let p = case.get("params").unwrap();
    let dim = |k: &str| p.get(k).unwrap().num().unwrap() as usize;
    let (mm, n, k, bs) = (dim("M"), dim("N"), dim("K"), dim("blocksize"));
    let quant = if p.get("quant_type").unwrap().str() == Some("nf4") {
        Quant4::Nf4
    } else {
        Quant4::Fp4
    };
    let a = read_f32(case, "inputs", "A");
    let w = read_bytes(case, "inputs", "B_packed");
    let absmax = read_f32(case, "inputs", "absmax");
    let want = read_f32(case, "outputs", "out");
    let mut out = vec![f32::NAN; mm * n];
    let result = ctx().gemm_4bit(
        mm,
        n,
        k,
        &a,
        &w,
        &Scales::Plain(&absmax),
        quant,
        bs,
        None,
        &mut out,
    );
    if !ran(result) {
        return;
    }
    // Reduction order is not specified: compare relative to the size of the row's terms.
    let scale = want.iter().fold(0f32, |acc, v| acc.max(v.abs())).max(1.0);
    for (i, (g, w)) in out.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale * (k as f32).sqrt(),
            "element {i}: got {g}, want {w}"
        );
    }
}
