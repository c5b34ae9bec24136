//! The prepared 4-bit matmul, the one-call int8 layer and paged memory, each against the calls
//! it stands for.
use bnb::{Context, Optimizer, OptimizerParams, OptimizerState, OptimizerTensors, Quant4, Scales, Status, F16};

fn ctx() -> Context {
    Context::new().expect("create a context")
}

fn data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + seed as f32 * 0.61) * 0.731).sin() * scale)
        .collect()
}

fn bits<T: Copy>(v: &[T], f: impl Fn(T) -> u32) -> Vec<u32> {
    v.iter().map(|&x| f(x)).collect()
}

/// Ok(true) = the call ran; Ok(false) = the backend does not offer the op (skipped, with a note).
fn ran(result: bnb::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) if e.status() == Status::NotSupported => {
            eprintln!("skipped: {e}");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn gemm_4bit_transposed_is_the_other_orientation() {
    let ctx = ctx();
    let (m, n, k, bs) = (3, 40, 128, 64);
    let w = data(n * k, 4, 1.0);
    let mut packed = vec![0u8; bnb::packed_len(n * k)];
    let mut absmax = vec![0f32; bnb::num_blocks(n * k, bs)];
    ctx.quantize_4bit(Quant4::Fp4, &w, bs, &mut packed, &mut absmax).unwrap();
    let mut wdq = vec![0f32; n * k];
    ctx.dequantize_4bit(Quant4::Fp4, &packed, &Scales::Plain(&absmax), bs, &mut wdq).unwrap();
    let a = data(m * n, 5, 1.0);
    let mut out = vec![f32::NAN; m * k];
    if !ran(ctx.gemm_4bit_transposed(m, n, k, &a, &packed, &Scales::Plain(&absmax), Quant4::Fp4, bs, &mut out)) {
        return;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..m {
        for j in 0..k {
            let want: f64 = (0..n).map(|r| a[i * n + r] as f64 * wdq[r * k + j] as f64).sum();
            num += (out[i * k + j] as f64 - want).powi(2);
            den += want * want;
        }
    }
    assert!((num / den).sqrt() < 1e-5, "relative error {}", (num / den).sqrt());
    // a too-short output is refused by name before the library runs
    let err = ctx
        .gemm_4bit_transposed(m, n, k, &a, &packed, &Scales::Plain(&absmax), Quant4::Fp4, bs, &mut out[1..])
        .unwrap_err();
    assert!(err.to_string().contains("out"), "{err}");
}

#[test]
fn plan_runs_equal_direct_gemm_4bit_bit_for_bit() {
    let ctx = ctx();
    let (n, k, bs) = (48, 256, 64);
    let w = data(n * k, 1, 1.0);
    let mut packed = vec![0u8; bnb::packed_len(n * k)];
    let mut absmax = vec![0f32; bnb::num_blocks(n * k, bs)];
    ctx.quantize_4bit(Quant4::Nf4, &w, bs, &mut packed, &mut absmax).unwrap();
    let mut absmax_q = vec![0u8; absmax.len()];
    let mut absmax2 = vec![0f32; bnb::num_blocks(absmax.len(), 256)];
    let offset = ctx.compress_absmax(&absmax, &mut absmax_q, &mut absmax2).unwrap();
    let bias = data(n, 2, 0.5);
    let plain = Scales::Plain(&absmax);
    let nested = Scales::Nested {
        absmax_q: &absmax_q,
        absmax2: &absmax2,
        code2: None,
        offset,
        blocksize2: 256,
    };
    for (scales, with_bias) in [(&plain, false), (&plain, true), (&nested, true)] {
        let bias = with_bias.then_some(&bias[..]);
        let plan = {
            // The Scales value itself may go away: the plan keeps what it points to.
            let scales = *scales;
            ctx.gemm_4bit_plan(n, k, &packed, &scales, Quant4::Nf4, bs, bias).unwrap()
        };
        for m in [1, 3, 17] {
            let a = data(m * k, m as u32, 1.0);
            let mut direct = vec![f32::NAN; m * n];
            if !ran(ctx.gemm_4bit(m, n, k, &a, &packed, scales, Quant4::Nf4, bs, bias, &mut direct)) {
                return;
            }
            let mut planned = vec![f32::NAN; m * n];
            plan.run(m, &a, &mut planned).unwrap();
            assert_eq!(bits(&planned, f32::to_bits), bits(&direct, f32::to_bits), "m {m}, bias {with_bias}");
        }
    }

    // fp16 activations, and the plan's own checks of what a run passes.
    let plan = ctx
        .gemm_4bit_plan::<F16>(n, k, &packed, &plain, Quant4::Nf4, bs, None)
        .unwrap();
    let a: Vec<F16> = data(2 * k, 9, 1.0).into_iter().map(F16::from_f32).collect();
    let (mut direct, mut planned) = (vec![F16(0); 2 * n], vec![F16(0); 2 * n]);
    ctx.gemm_4bit(2, n, k, &a, &packed, &plain, Quant4::Nf4, bs, None, &mut direct)
        .unwrap();
    plan.run(2, &a, &mut planned).unwrap();
    assert_eq!(planned, direct);
    let err = plan.run(3, &a, &mut planned).unwrap_err();
    assert!(err.message().contains("a has 512 elements, needs 768"), "{err}");
    let err = ctx
        .gemm_4bit_plan::<f32>(n, k, &packed[..10], &plain, Quant4::Nf4, bs, None)
        .unwrap_err();
    assert!(err.message().starts_with("w has 10"), "{err}");
    // The library's own checks: blocksize.
    let err = ctx
        .gemm_4bit_plan::<f32>(n, k, &packed, &plain, Quant4::Nf4, 48, None)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
}

fn int8_weight(n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let w: Vec<i8> = (0..n * k).map(|i| ((i * 37 + 11) % 255) as i8).collect();
    let scb = (0..n).map(|r| 0.5 + r as f32 * 0.01).collect();
    (w, scb)
}

#[test]
fn int8_linear_equals_the_three_calls_bit_for_bit() {
    let ctx = ctx();
    let (m, n, k) = (5, 40, 96);
    let (w, scb) = int8_weight(n, k);
    let mut a: Vec<F16> = data(m * k, 4, 2.0).into_iter().map(F16::from_f32).collect();
    a[7] = F16::from_f32(9.0); // an outlier column for threshold 6
    let bias: Vec<F16> = data(n, 5, 0.25).into_iter().map(F16::from_f32).collect();
    for (threshold, with_bias) in [(0.0, false), (0.0, true), (6.0, true)] {
        let bias = with_bias.then_some(&bias[..]);
        // The three calls.
        let (mut q3, mut rs3, mut c3) = (vec![0i8; m * k], vec![0f32; m], vec![0i32; m * n]);
        let mut out3 = vec![F16(0); m * n];
        if !ran(ctx.int8_vectorwise_quant(m, k, &a, threshold, &mut q3, &mut rs3)) {
            return;
        }
        ctx.int8_matmul(m, n, k, &q3, &w, &mut c3).unwrap();
        ctx.int8_mm_dequant(m, n, &c3, &rs3, &scb, bias, &mut out3).unwrap();
        // The one call.
        let (mut q, mut rs, mut c) = (vec![1i8; m * k], vec![f32::NAN; m], vec![0i32; m * n]);
        let mut out = vec![F16(0x7e00); m * n];
        ctx.int8_linear(m, n, k, &a, threshold, &w, &scb, bias, &mut q, &mut rs, &mut c, &mut out)
            .unwrap();
        assert_eq!(q, q3, "q, threshold {threshold}");
        assert_eq!(bits(&rs, f32::to_bits), bits(&rs3, f32::to_bits), "row_stats");
        assert_eq!(out, out3, "out, threshold {threshold}, bias {with_bias}");
    }
    let (mut q, mut rs, mut c, mut out) = (vec![0i8; m * k], vec![0f32; m], vec![0i32; m * n - 1], vec![F16(0); m * n]);
    let err = ctx
        .int8_linear(m, n, k, &a, 0.0, &w, &scb, None, &mut q, &mut rs, &mut c, &mut out)
        .unwrap_err();
    assert!(err.message().starts_with("c has 199 elements, needs 200"), "{err}");
    let err = ctx
        .int8_linear(m, n, k, &a, 0.0, &w, &scb[..3], None, &mut q, &mut rs, &mut c, &mut out)
        .unwrap_err();
    assert!(err.message().starts_with("scb has 3"), "{err}");
}

#[test]
fn int8_linear_outliers_adds_the_outlier_product_to_int8_linear() {
    let ctx = ctx();
    let (m, n, k) = (5, 40, 96);
    let (w, scb) = int8_weight(n, k);
    let mut a: Vec<F16> = data(m * k, 4, 2.0).into_iter().map(F16::from_f32).collect();
    a[7] = F16::from_f32(9.0); // outlier columns 7 and 50 at threshold 6
    a[2 * k + 50] = F16::from_f32(-12.5);
    let bias: Vec<F16> = data(n, 5, 0.25).into_iter().map(F16::from_f32).collect();
    for threshold in [0.0f32, 6.0] {
        let (mut q1, mut rs1, mut c1, mut out1) = (vec![0i8; m * k], vec![0f32; m], vec![0i32; m * n], vec![F16(0); m * n]);
        if !ran(ctx.int8_linear(m, n, k, &a, threshold, &w, &scb, Some(&bias), &mut q1, &mut rs1, &mut c1, &mut out1)) {
            return;
        }
        let (mut q, mut rs, mut c, mut cols) = (vec![0i8; m * k], vec![0f32; m], vec![0i32; m * n], vec![-1i32; k]);
        let mut out = vec![F16(0x7e00); m * n];
        let count = match ctx.int8_linear_outliers(
            m, n, k, &a, threshold, &w, &scb, Some(&bias), &mut q, &mut rs, &mut c, &mut cols, &mut out,
        ) {
            Ok(count) => count,
            Err(e) if e.status() == Status::NotSupported => return eprintln!("skipped: {e}"),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(q, q1);
        if threshold == 0.0 {
            assert_eq!(count, 0);
            assert_eq!(out, out1);
            continue;
        }
        assert_eq!(cols[..count], [7, 50]);
        assert_eq!(cols[..count], ctx.int8_outlier_columns(m, k, &a, threshold).unwrap()[..]);
        // docs/OPS.md §5.10 (no subnormals here, so no flushing).
        let mut want = out1.clone();
        for (i, o) in want.iter_mut().enumerate() {
            let (row, col) = (i / n, i % n);
            let mut s = 0f32;
            for &cc in &cols[..count] {
                let cc = cc as usize;
                let wc = F16::from_f32(w[col * k + cc] as f32 * scb[col] * (1.0f32 / 127.0)).to_f32();
                s = a[row * k + cc].to_f32().mul_add(wc, s);
            }
            *o = F16::from_f32(o.to_f32() + F16::from_f32(s).to_f32());
        }
        assert_eq!(out, want);
    }
    let (mut q, mut rs, mut c, mut cols, mut out) =
        (vec![0i8; m * k], vec![0f32; m], vec![0i32; m * n], vec![0i32; k - 1], vec![F16(0); m * n]);
    let err = ctx
        .int8_linear_outliers(m, n, k, &a, 6.0, &w, &scb, None, &mut q, &mut rs, &mut c, &mut cols, &mut out)
        .unwrap_err();
    assert!(err.message().starts_with("columns has 95 elements, needs 96"), "{err}");
}

#[test]
fn paged_buffers_read_write_prefetch_and_hold_optimizer_state() {
    let ctx = ctx();
    let n = 3000;
    let mut p_buf = ctx.paged_alloc::<f32>(n).unwrap();
    assert_eq!(p_buf.len(), n);
    assert!(p_buf.iter().all(|&x| x == 0.0), "zero-filled");
    p_buf.copy_from_slice(&data(n, 6, 1.0));
    p_buf.prefetch_to_device().unwrap();
    p_buf.prefetch_to_host().unwrap();
    assert_eq!(p_buf[..], data(n, 6, 1.0)[..]);

    // The same Adam step on paged and on ordinary memory.
    let g = data(n, 8, 0.2);
    let params = OptimizerParams::new(Optimizer::Adam);
    let (mut m_buf, mut v_buf) = (ctx.paged_alloc::<f32>(n).unwrap(), ctx.paged_alloc::<f32>(n).unwrap());
    m_buf.prefetch_to_device().unwrap();
    ctx.optimizer_update(
        &params,
        &mut OptimizerTensors {
            p: &mut p_buf,
            g: &g,
            state: OptimizerState::Bits32 {
                state1: &mut m_buf,
                state2: Some(&mut v_buf),
            },
            unorm_vec: None,
        },
    )
    .unwrap();
    let (mut p, mut m, mut v) = (data(n, 6, 1.0), vec![0f32; n], vec![0f32; n]);
    ctx.optimizer_update(
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
    .unwrap();
    assert_eq!(bits(&p_buf, f32::to_bits), bits(&p, f32::to_bits));
    assert_eq!(bits(&m_buf, f32::to_bits), bits(&m, f32::to_bits));
    assert_eq!(bits(&v_buf, f32::to_bits), bits(&v, f32::to_bits));

    // A second step through the multi-tensor call, state still paged.
    let mut params = params;
    params.step = 2;
    ctx.optimizer_update_multi(
        &params,
        &mut [OptimizerTensors {
            p: &mut p_buf,
            g: &g,
            state: OptimizerState::Bits32 {
                state1: &mut m_buf,
                state2: Some(&mut v_buf),
            },
            unorm_vec: None,
        }],
    )
    .unwrap();
    ctx.optimizer_update(
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
    .unwrap();
    assert_eq!(bits(&p_buf, f32::to_bits), bits(&p, f32::to_bits), "p after the multi step");
    assert_eq!(bits(&v_buf, f32::to_bits), bits(&v, f32::to_bits), "v after the multi step");

    let codes = ctx.paged_alloc::<u8>(5).unwrap();
    assert_eq!(&codes[..], &[0u8; 5]);
    drop(codes);
    let err = ctx.paged_alloc::<i32>(0).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    let err = ctx.paged_alloc::<f32>(usize::MAX / 2).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
}
