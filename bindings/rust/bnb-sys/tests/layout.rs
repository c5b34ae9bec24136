//! The hand-written struct declarations must match what the C compiler makes of bnb.h: every
//! struct's size and alignment and every field's offset and size are compared with a probe program built by build.rs.
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};

use bnb_sys::*;

include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));

macro_rules! rust_layout {
    ($map:ident, $ty:ident { $($field:ident),* $(,)? }) => {{
        $map.insert(concat!(stringify!($ty), "::size").to_string(), size_of::<$ty>());
        $map.insert(concat!(stringify!($ty), "::align").to_string(), align_of::<$ty>());
        $(
            $map.insert(
                concat!(stringify!($ty), ".", stringify!($field)).to_string(),
                offset_of!($ty, $field),
            );
            $map.insert(
                concat!(stringify!($ty), ".", stringify!($field), "::size").to_string(),
                field_size(|s: &$ty| &s.$field),
            );
        )*
    }};
}

fn field_size<S, F>(_: impl Fn(&S) -> &F) -> usize {
    size_of::<F>()
}

fn rust_side() -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    rust_layout!(
        m,
        bnb_backend_info_t {
            struct_size,
            kind,
            name,
            available,
            device_count,
            detail
        }
    );
    rust_layout!(
        m,
        bnb_backend_capabilities_t {
            struct_size,
            kind,
            ops,
            float_dtypes,
            quant_types,
            optimizers,
            device_count,
            optimizer_state_bits,
            max_elements,
            blocksize_8bit_min,
            blocksize_8bit_max,
            blocksize_4bit_min,
            blocksize_4bit_max,
            int8_max_k,
            optimizer_block,
            optimizer_max_step,
        }
    );
    rust_layout!(
        m,
        bnb_context_options_t {
            struct_size,
            backend,
            device,
            num_threads,
            check_finite
        }
    );
    rust_layout!(
        m,
        bnb_scales_t {
            struct_size,
            absmax,
            absmax_q,
            absmax2,
            code2,
            offset,
            blocksize2
        }
    );
    rust_layout!(
        m,
        bnb_optimizer_params_t {
            struct_size,
            optimizer,
            state_bits,
            param_dtype,
            n,
            lr,
            beta1,
            beta2,
            beta3,
            alpha,
            eps,
            weight_decay,
            gnorm_scale,
            max_unorm,
            param_norm,
            step,
            skip_zeros,
        }
    );
    rust_layout!(
        m,
        bnb_optimizer_tensors_t {
            struct_size,
            p,
            g,
            state1,
            state2,
            absmax1,
            absmax2,
            qmap1,
            qmap2,
            unorm_vec,
        }
    );
    for name in [
        "bnb_status_t",
        "bnb_dtype_t",
        "bnb_quant4_t",
        "bnb_code_table_t",
        "bnb_backend_kind_t",
        "bnb_optimizer_t",
        "bnb_op_t",
        "bnb_memcpy_kind_t",
    ] {
        m.insert(format!("{name}::size"), size_of::<i32>());
    }
    m
}

#[test]
fn struct_layouts_match_the_c_header() {
    if let Some(why) = C_LAYOUT_ERROR {
        panic!("the C layout probe could not run: {why}");
    }
    let c_side: BTreeMap<String, usize> = C_LAYOUT.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let rust = rust_side();
    assert!(c_side.len() > 40, "probe reported only {} entries", c_side.len());
    let mut mismatches = Vec::new();
    for key in c_side.keys().chain(rust.keys()) {
        let (c, r) = (c_side.get(key), rust.get(key));
        if c != r {
            mismatches.push(format!("{key}: C {c:?}, Rust {r:?}"));
        }
    }
    mismatches.dedup();
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn version_constants_match_the_header_macros() {
    // The header's version macros are the other thing the sys crate copies by hand; the probe
    // does not print them, so compare with the text of bnb.h itself.
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../include/bnb.h"))
        .or_else(|_| std::fs::read_to_string(std::env::var("BNB_INCLUDE_DIR").unwrap_or_default() + "/bnb.h"))
        .expect("read bnb.h");
    for (name, value) in [
        ("BNB_VERSION_MAJOR", BNB_VERSION_MAJOR),
        ("BNB_VERSION_MINOR", BNB_VERSION_MINOR),
        ("BNB_VERSION_PATCH", BNB_VERSION_PATCH),
    ] {
        let line = header
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} not in bnb.h"));
        let in_header: i32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(in_header, value, "{name}");
    }
}
