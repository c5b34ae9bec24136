//! Bit-exact agreement with the reference's golden vectors (tests/data/golden), through the
//! safe binding. Cases are picked from manifest.json by op, params and input dtype.
mod common;

use bnb::{Context, Float, Quant4, Scales, BF16, F16};
use common::*;

fn ctx() -> Context {
    Context::new().expect("create a context (is BNB_BACKEND a loadable backend?)")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same<T: PartialEq + Copy + std::fmt::Debug>(what: &str, got: &[T], want: &[T]) {
    if let Some(diff) = first_mismatch(got, want) {
        panic!("{what}: {diff}");
    }
}

/// Input `A` of a case as the element type its dtype names.
trait FromBits: Float {
    fn load(case: &Json, side: &str, name: &str) -> Vec<Self>;
    fn raw_bits(v: &[Self]) -> Vec<u32>;
}
impl FromBits for f32 {
    fn load(case: &Json, side: &str, name: &str) -> Vec<f32> {
        read_f32(case, side, name)
    }
    fn raw_bits(v: &[f32]) -> Vec<u32> {
        bits(v)
    }
}
impl FromBits for F16 {
    fn load(case: &Json, side: &str, name: &str) -> Vec<F16> {
        assert_eq!(case.path_str(&[side, name, "dtype"]), "float16");
        read_u16(case, side, name).into_iter().map(F16).collect()
    }
    fn raw_bits(v: &[F16]) -> Vec<u32> {
        v.iter().map(|x| x.0 as u32).collect()
    }
}
impl FromBits for BF16 {
    fn load(case: &Json, side: &str, name: &str) -> Vec<BF16> {
        assert_eq!(case.path_str(&[side, name, "dtype"]), "bfloat16");
        read_u16(case, side, name).into_iter().map(BF16).collect()
    }
    fn raw_bits(v: &[BF16]) -> Vec<u32> {
        v.iter().map(|x| x.0 as u32).collect()
    }
}

fn check_blockwise<T: FromBits>(blocksize: usize, dtype: &str) {
    let m = manifest();
    let bs = blocksize.to_string();
    let case = find_case(
        &m,
        "quantize_blockwise",
        &[("blocksize", &bs), ("code", "dynamic_signed")],
        dtype,
    );
    let a = T::load(case, "inputs", "A");
    let want_q = read_bytes(case, "outputs", "q");
    let want_absmax = read_f32(case, "outputs", "absmax");
    let ctx = ctx();

    // Poisoned outputs: every element must be written.
    let mut q = vec![0xa5u8; a.len()];
    let mut absmax = vec![f32::NAN; bnb::num_blocks(a.len(), blocksize)];
    ctx.quantize_blockwise(&a, blocksize, None, &mut q, &mut absmax)
        .expect("quantize_blockwise");
    assert_same("absmax", &bits(&absmax), &bits(&want_absmax));
    assert_same("q", &q, &want_q);

    let want = T::load(case, "outputs", "dequant");
    let mut out = vec![T::default(); a.len()];
    ctx.dequantize_blockwise(&want_q, &want_absmax, None, blocksize, &mut out)
        .expect("dequantize_blockwise");
    assert_same("dequant", &T::raw_bits(&out), &T::raw_bits(&want));
}

fn check_4bit<T: FromBits>(quant: Quant4, blocksize: usize, dtype: &str) {
    let m = manifest();
    let bs = blocksize.to_string();
    let qname = match quant {
        Quant4::Nf4 => "nf4",
        Quant4::Fp4 => "fp4",
    };
    let case = find_case(
        &m,
        "quantize_4bit",
        &[("blocksize", &bs), ("quant_type", qname)],
        dtype,
    );
    let a = T::load(case, "inputs", "A");
    let want_packed = read_bytes(case, "outputs", "packed");
    let want_absmax = read_f32(case, "outputs", "absmax");
    let ctx = ctx();

    let mut packed = vec![0x5au8; bnb::packed_len(a.len())];
    let mut absmax = vec![f32::NAN; bnb::num_blocks(a.len(), blocksize)];
    ctx.quantize_4bit(quant, &a, blocksize, &mut packed, &mut absmax)
        .expect("quantize_4bit");
    assert_same("absmax", &bits(&absmax), &bits(&want_absmax));
    assert_same("packed", &packed, &want_packed);

    let want = T::load(case, "outputs", "dequant");
    let mut out = vec![T::default(); a.len()];
    ctx.dequantize_4bit(
        quant,
        &want_packed,
        &Scales::Plain(&want_absmax),
        blocksize,
        &mut out,
    )
    .expect("dequantize_4bit");
    assert_same("dequant", &T::raw_bits(&out), &T::raw_bits(&want));
}

#[test]
fn blockwise_f32_blocksize_64() {
    check_blockwise::<f32>(64, "float32");
}

#[test]
fn blockwise_f16_blocksize_256() {
    check_blockwise::<F16>(256, "float16");
}

#[test]
fn nf4_f32_blocksize_64() {
    check_4bit::<f32>(Quant4::Nf4, 64, "float32");
}

#[test]
fn fp4_bf16_blocksize_128() {
    check_4bit::<BF16>(Quant4::Fp4, 128, "bfloat16");
}

#[test]
fn nested_nf4_dequantizes_like_the_reference() {
    let m = manifest();
    let case = find_case(
        &m,
        "quantize_4bit_nested",
        &[("blocksize", "64"), ("quant_type", "nf4")],
        "float32",
    );
    let packed = read_bytes(case, "outputs", "packed");
    let absmax_q = read_bytes(case, "outputs", "absmax_q");
    let offset = read_f32(case, "outputs", "absmax_offset")[0];
    let absmax2 = read_f32(case, "outputs", "absmax_absmax");
    let want = read_f32(case, "outputs", "dequant");
    let scales = Scales::Nested {
        absmax_q: &absmax_q,
        absmax2: &absmax2,
        code2: None,
        offset,
        blocksize2: 256,
    };
    let mut out = vec![f32::NAN; want.len()];
    ctx()
        .dequantize_4bit(Quant4::Nf4, &packed, &scales, 64, &mut out)
        .expect("dequantize_4bit nested");
    assert_same("dequant", &bits(&out), &bits(&want));
}

#[test]
fn code_tables_match_the_reference() {
    let m = manifest();
    let case = m
        .get("cases")
        .unwrap()
        .arr()
        .iter()
        .find(|c| c.path_str(&["op"]) == "code_tables")
        .unwrap();
    for (which, name) in [
        (bnb::CodeTable::DynamicSigned, "dynamic_signed"),
        (bnb::CodeTable::DynamicUnsigned, "dynamic_unsigned"),
        (bnb::CodeTable::Nf4, "nf4"),
        (bnb::CodeTable::Fp4, "fp4"),
    ] {
        let got = bnb::code_table(which).expect("code_table");
        assert_same(name, &bits(&got), &bits(&read_f32(case, "outputs", name)));
    }
}
