//! The binding's own behaviour: errors carry the library's status and message, contexts,
//! backend listing, and a round trip through double quantization.
use bnb::{Backend, Context, Quant4, Scales, Status};

#[test]
fn version_matches_the_header() {
    assert_eq!(bnb::version_number(), bnb::bnb_sys::BNB_VERSION_NUMBER);
    let v = bnb::version_string();
    assert!(v.starts_with("0.1"), "version string {v:?}");
}

#[test]
fn cpu_backend_is_listed_and_available() {
    let all = bnb::backends().expect("backends");
    let cpu = all
        .iter()
        .find(|b| b.kind == Backend::Cpu)
        .expect("cpu backend listed");
    assert_eq!(cpu.name, "cpu");
    assert!(cpu.available, "cpu backend not available: {}", cpu.detail);
    let ctx = Context::with_backend(Backend::Cpu).expect("cpu context");
    assert_eq!(ctx.backend(), Backend::Cpu);
}

#[test]
fn cpu_capabilities_list_every_op_and_the_core_limits() {
    let all = bnb::backends().expect("backends");
    let index = all.iter().position(|b| b.kind == Backend::Cpu).expect("cpu listed") as i32;
    let caps = bnb::backend_capabilities(index).expect("cpu capabilities");
    assert_eq!(caps.kind, Backend::Cpu);
    assert!(caps.offers(bnb::Op::QuantizeBlockwise) && caps.offers(bnb::Op::CheckFinite));
    assert!(caps.offers(bnb::Op::OptimizerUpdate) && caps.offers(bnb::Op::PagedMemory));
    assert_eq!(caps.optimizers, 0x1fe);
    assert_eq!(caps.optimizer_state_bits, 1 << 8 | 1 << 32);
    assert_eq!((caps.blocksize_8bit_min, caps.blocksize_8bit_max), (64, 4096));
    assert_eq!((caps.blocksize_4bit_min, caps.blocksize_4bit_max), (32, 4096));
    assert_eq!(caps.optimizer_block, bnb::OPTIMIZER_BLOCKSIZE as i64);
    assert_eq!(caps.optimizer_max_step, i64::MAX);
    // A backend that did not load, or an index past the list, is an error.
    for (i, b) in all.iter().enumerate() {
        if !b.available {
            let err = bnb::backend_capabilities(i as i32).unwrap_err();
            assert_eq!(err.status(), Status::BackendUnavailable, "{err}");
        }
    }
    let err = bnb::backend_capabilities(all.len() as i32).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
}

#[test]
fn unsupported_blocksize_is_an_error_with_the_library_message() {
    let ctx = Context::new().unwrap();
    let a = vec![1.0f32; 480];
    let mut q = vec![0u8; 480];
    let mut absmax = vec![0f32; 10];
    let err = ctx
        .quantize_blockwise(&a, 48, None, &mut q, &mut absmax)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert!(
        err.message().contains("blocksize"),
        "message: {:?}",
        err.message()
    );
    assert!(err.to_string().contains(err.message()));
    // The status name comes from bnb_status_string, not from this crate.
    assert!(!err.status().name().is_empty());
}

#[test]
fn unknown_quant_type_and_code_table_are_errors() {
    let err = bnb::code_table(bnb::CodeTable::Fp4).map(|t| t.len());
    assert_eq!(err, Ok(16));
    // A raw value outside the enum must be rejected by the library, through the sys crate.
    let mut table = [0f32; 256];
    let mut count = 0i64;
    let status = unsafe { bnb::bnb_sys::bnb_get_code_table(99, table.as_mut_ptr(), &mut count) };
    assert_eq!(Status::from_raw(status), Some(Status::InvalidArgument));
}

#[test]
fn short_output_slice_is_rejected_before_the_call() {
    let ctx = Context::new().unwrap();
    let a = vec![0.5f32; 1000];
    let mut q = vec![0u8; 999];
    let mut absmax = vec![0f32; 16];
    let err = ctx
        .quantize_blockwise(&a, 64, None, &mut q, &mut absmax)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert!(
        err.message().starts_with("out has 999 elements"),
        "{}",
        err.message()
    );
    let mut absmax = vec![0f32; 15];
    let mut q = vec![0u8; 1000];
    let err = ctx
        .quantize_blockwise(&a, 64, None, &mut q, &mut absmax)
        .unwrap_err();
    assert!(
        err.message().starts_with("absmax has 15 elements, needs 16"),
        "{}",
        err.message()
    );
}

#[test]
fn unavailable_backend_is_an_error_not_a_fallback() {
    let all = bnb::backends().unwrap();
    let hip_available = all.iter().any(|b| b.kind == Backend::Hip && b.available);
    if hip_available {
        return; // nothing to show on a machine that has it
    }
    let err = Context::with_backend(Backend::Hip).unwrap_err();
    assert!(!err.message().is_empty());
    assert_ne!(err.status(), Status::Internal);
}

/// A deterministic pseudo-random vector (xorshift), roughly normal via a sum of uniforms.
fn signal(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut uniform = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n).map(|_| (0..4).map(|_| uniform()).sum::<f32>()).collect()
}

#[test]
fn double_quantized_scales_round_trip() {
    let ctx = Context::new().unwrap();
    let x = signal(64 * 700 + 3, 7);
    let bs = 64;
    let mut packed = vec![0u8; bnb::packed_len(x.len())];
    let mut absmax = vec![0f32; bnb::num_blocks(x.len(), bs)];
    ctx.quantize_4bit(Quant4::Nf4, &x, bs, &mut packed, &mut absmax)
        .unwrap();

    let mut absmax_q = vec![0u8; absmax.len()];
    let mut absmax2 = vec![0f32; bnb::num_blocks(absmax.len(), 256)];
    let offset = ctx.compress_absmax(&absmax, &mut absmax_q, &mut absmax2).unwrap();
    let mean = absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len() as f64;
    assert!(
        (offset as f64 - mean).abs() <= 1e-5 * mean.abs(),
        "offset {offset}, mean {mean}"
    );

    let mut plain = vec![0f32; x.len()];
    ctx.dequantize_4bit(Quant4::Nf4, &packed, &Scales::Plain(&absmax), bs, &mut plain)
        .unwrap();
    let mut nested = vec![0f32; x.len()];
    let scales = Scales::Nested {
        absmax_q: &absmax_q,
        absmax2: &absmax2,
        code2: None,
        offset,
        blocksize2: 256,
    };
    ctx.dequantize_4bit(Quant4::Nf4, &packed, &scales, bs, &mut nested)
        .unwrap();

    // 8-bit scales are within ~1% of the plain ones, so the values are too.
    let worst = plain
        .iter()
        .zip(&nested)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    let peak = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(worst <= 0.02 * peak, "nested vs plain: {worst} (peak {peak})");
    // And the 4-bit values are near the input: NF4's coarsest step is ~0.28 of the block absmax.
    for (i, (&xi, &yi)) in x.iter().zip(&plain).enumerate() {
        let scale = absmax[i / bs];
        assert!(
            (xi - yi).abs() <= 0.17 * scale,
            "element {i}: {xi} -> {yi} (absmax {scale})"
        );
    }
}

#[test]
fn a_context_is_shared_across_threads() {
    let ctx = Context::new().unwrap();
    let x = signal(4096, 11);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut q = vec![0u8; x.len()];
                    let mut absmax = vec![0f32; 16];
                    ctx.quantize_blockwise(&x, 256, None, &mut q, &mut absmax)
                        .unwrap();
                    (q, absmax)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    });
}

#[test]
fn errors_are_per_thread() {
    // A failure on another thread must not change what this thread reads.
    let ctx = Context::new().unwrap();
    let err = ctx
        .quantize_blockwise(&[1.0f32; 64], 48, None, &mut [0u8; 64], &mut [0f32; 2])
        .unwrap_err();
    std::thread::scope(|s| {
        s.spawn(|| {
            let e = ctx
                .quantize_4bit(Quant4::Nf4, &[1.0f32; 64], 3, &mut [0u8; 32], &mut [0f32; 22])
                .unwrap_err();
            assert!(e.message().contains("blocksize"), "{}", e.message());
        })
        .join()
        .unwrap();
    });
    assert!(err.message().contains("48"), "{}", err.message());
}

#[test]
fn check_finite_option_names_the_first_non_finite_element() {
    let options = |check_finite| bnb::ContextOptions {
        backend: Backend::Cpu,
        check_finite,
        ..Default::default()
    };
    let checked = Context::with_options(&options(1)).unwrap();
    let unchecked = Context::with_options(&options(-1)).unwrap();
    let mut a = signal(3000, 11);
    a[2100] = f32::INFINITY;
    a[1234] = f32::NAN;
    let mut q = vec![0xA5u8; 3000];
    let mut absmax = vec![0f32; 12];
    let err = checked
        .quantize_blockwise(&a, 256, None, &mut q, &mut absmax)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert!(
        err.message().contains("A[1234] is not finite"),
        "{}",
        err.message()
    );
    assert!(q.iter().all(|&b| b == 0xA5), "q was written");
    unchecked
        .quantize_blockwise(&a, 256, None, &mut q, &mut absmax)
        .unwrap();
    let err = Context::with_options(&options(2)).unwrap_err();
    assert!(err.message().contains("check_finite"), "{}", err.message());
}

#[test]
fn declared_buffer_lengths_are_checked_on_this_thread() {
    let ctx = Context::with_backend(Backend::Cpu).unwrap();
    let a = signal(2048, 5);
    let mut q = vec![0u8; 2048];
    let mut absmax = vec![0f32; 8];
    let start = a.as_ptr().cast();
    // Declared shorter than the slice: the library refuses to read past the declared end.
    bnb::declare_buffer(start, 1000 * 4).unwrap();
    let err = ctx
        .quantize_blockwise(&a, 256, None, &mut q, &mut absmax)
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert!(
        err.message().contains("A needs 8192 bytes") && err.message().contains("has 4000 bytes"),
        "{}",
        err.message()
    );
    // Another thread has no declarations.
    std::thread::scope(|s| {
        s.spawn(|| {
            let (mut q, mut absmax) = (vec![0u8; 2048], vec![0f32; 8]);
            ctx.quantize_blockwise(&a, 256, None, &mut q, &mut absmax)
                .unwrap();
        });
    });
    bnb::forget_buffer(start).unwrap();
    ctx.quantize_blockwise(&a, 256, None, &mut q, &mut absmax)
        .unwrap();
    let err = bnb::forget_buffer(start).unwrap_err();
    assert!(err.message().contains("not the start"), "{}", err.message());
    assert!(bnb::declare_buffer(std::ptr::null(), 10).is_err());
}
