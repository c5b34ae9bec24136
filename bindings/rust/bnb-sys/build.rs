// Build script of bnb-sys. Two jobs:
//
// 1. Linking. `BNB_LIB_DIR` names the directory holding libbnb.so (a CMake build's `lib/`, or an
//    install prefix's lib dir). Without it, the `pkg-config` program is asked where an installed
//    libbnb is (`pkg-config --libs-only-L bnb`, so `PKG_CONFIG_PATH` applies; the program is run
//    rather than the pkg-config crate, as the build fetches no crates). Either directory becomes
//    a link search path and an rpath, so tests and examples run without LD_LIBRARY_PATH.
//    Dependent crates get it as `DEP_BNB_LIB_DIR` (we declare `links = "bnb"`) and add the rpath
//    to their own executables. When neither names a directory, the system linker paths are used.
//
// 2. The layout probe. A small C program that includes bnb.h and prints sizeof/alignof of every
//    public struct and the offset and size of each field is compiled with the system C compiler and run; its answers are
//    written to $OUT_DIR/c_layout.rs, which tests/layout.rs compares with Rust's view. If the
//    probe cannot be built, the file records why and the layout test fails with that reason.
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

// Every struct of bnb.h and its fields, in declaration order.
const STRUCTS: &[(&str, &[&str])] = &[
    (
        "bnb_backend_info_t",
        &[
            "struct_size",
            "kind",
            "name",
            "available",
            "device_count",
            "detail",
        ],
    ),
    (
        "bnb_backend_capabilities_t",
        &[
            "struct_size",
            "kind",
            "ops",
            "float_dtypes",
            "quant_types",
            "optimizers",
            "device_count",
            "optimizer_state_bits",
            "max_elements",
            "blocksize_8bit_min",
            "blocksize_8bit_max",
            "blocksize_4bit_min",
            "blocksize_4bit_max",
            "int8_max_k",
            "optimizer_block",
            "optimizer_max_step",
        ],
    ),
    (
        "bnb_context_options_t",
        &["struct_size", "backend", "device", "num_threads", "check_finite"],
    ),
    (
        "bnb_scales_t",
        &[
            "struct_size",
            "absmax",
            "absmax_q",
            "absmax2",
            "code2",
            "offset",
            "blocksize2",
        ],
    ),
    (
        "bnb_optimizer_params_t",
        &[
            "struct_size",
            "optimizer",
            "state_bits",
            "param_dtype",
            "n",
            "lr",
            "beta1",
            "beta2",
            "beta3",
            "alpha",
            "eps",
            "weight_decay",
            "gnorm_scale",
            "max_unorm",
            "param_norm",
            "step",
            "skip_zeros",
        ],
    ),
    (
        "bnb_optimizer_tensors_t",
        &[
            "struct_size",
            "p",
            "g",
            "state1",
            "state2",
            "absmax1",
            "absmax2",
            "qmap1",
            "qmap2",
            "unorm_vec",
        ],
    ),
];

// The enum types, which the Rust side declares as i32.
const ENUMS: &[&str] = &[
    "bnb_status_t",
    "bnb_dtype_t",
    "bnb_quant4_t",
    "bnb_code_table_t",
    "bnb_backend_kind_t",
    "bnb_optimizer_t",
    "bnb_op_t",
    "bnb_memcpy_kind_t",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BNB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=BNB_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");

    let pkg = if env::var_os("BNB_LIB_DIR").is_none() {
        pkg_config()
    } else {
        None
    };
    emit_link_flags(pkg.as_ref());

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let include_dir = include_dir(pkg.as_ref());
    println!("cargo:rerun-if-changed={}", include_dir.join("bnb.h").display());
    println!("cargo:include={}", include_dir.display());
    let generated = match probe_layout(&include_dir, &out_dir) {
        Ok(entries) => render_layout(&entries, None),
        Err(why) => {
            println!("cargo:warning=bnb-sys: C layout probe failed: {why}");
            render_layout(&[], Some(&why))
        }
    };
    fs::write(out_dir.join("c_layout.rs"), generated).expect("write c_layout.rs");
}

/// Where libbnb and bnb.h are, as `pkg-config bnb` reports them; `None` when the program or the
/// package is missing (said in a build warning).
struct PkgConfig {
    lib_dirs: Vec<PathBuf>,
    include_dirs: Vec<PathBuf>,
}

fn pkg_config_flags(flag: &str, prefix: &str) -> Result<Vec<PathBuf>, String> {
    let program = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let ran = Command::new(&program)
        .args([flag, "bnb"])
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if !ran.status.success() {
        return Err(format!(
            "{program} {flag} bnb failed: {}",
            String::from_utf8_lossy(&ran.stderr).trim()
        ));
    }
    let text = String::from_utf8(ran.stdout).map_err(|e| format!("{program} output: {e}"))?;
    Ok(text
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(prefix))
        .map(PathBuf::from)
        .collect())
}

fn pkg_config() -> Option<PkgConfig> {
    let found = pkg_config_flags("--libs-only-L", "-L").and_then(|lib_dirs| {
        Ok(PkgConfig {
            lib_dirs,
            // Not --cflags-only-I: pkg-config drops system directories such as /usr/include.
            include_dirs: pkg_config_flags("--variable=includedir", "")?,
        })
    });
    match found {
        Ok(found) => Some(found),
        Err(why) => {
            println!(
                "cargo:warning=bnb-sys: BNB_LIB_DIR is unset and pkg-config found no bnb ({why}); \
                 linking with the system paths"
            );
            None
        }
    }
}

fn emit_link_flags(pkg: Option<&PkgConfig>) {
    let dirs: Vec<PathBuf> = match env::var_os("BNB_LIB_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => pkg.map(|p| p.lib_dirs.clone()).unwrap_or_default(),
    };
    for dir in &dirs {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    if let Some(first) = dirs.first() {
        let first = first.canonicalize().unwrap_or_else(|_| first.clone());
        println!("cargo:lib_dir={}", first.display());
    }
    println!("cargo:rustc-link-lib=dylib=bnb");
}

fn include_dir(pkg: Option<&PkgConfig>) -> PathBuf {
    if let Some(dir) = env::var_os("BNB_INCLUDE_DIR") {
        return PathBuf::from(dir);
    }
    // The installed header belongs with the installed library.
    if let Some(dir) = pkg.and_then(|p| p.include_dirs.iter().find(|d| d.join("bnb.h").is_file())) {
        return dir.clone();
    }
    // bindings/rust/bnb-sys -> the repository's include/
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    manifest.join("../../../include")
}

fn probe_source() -> String {
    let mut c = String::from(
        "#include <stdalign.h>\n#include <stddef.h>\n#include <stdio.h>\n#include \"bnb.h\"\n\
         int main(void) {\n",
    );
    for (name, fields) in STRUCTS {
        let _ = writeln!(c, "  printf(\"{name}::size %zu\\n\", sizeof({name}));");
        let _ = writeln!(c, "  printf(\"{name}::align %zu\\n\", alignof({name}));");
        for field in *fields {
            let _ = writeln!(
                c,
                "  printf(\"{name}.{field} %zu\\n\", offsetof({name}, {field}));"
            );
            let _ = writeln!(
                c,
                "  printf(\"{name}.{field}::size %zu\\n\", sizeof((({name}*)0)->{field}));"
            );
        }
    }
    for name in ENUMS {
        let _ = writeln!(c, "  printf(\"{name}::size %zu\\n\", sizeof({name}));");
    }
    c.push_str("  return 0;\n}\n");
    c
}

fn probe_layout(include_dir: &Path, out_dir: &Path) -> Result<Vec<(String, usize)>, String> {
    if !include_dir.join("bnb.h").is_file() {
        return Err(format!(
            "bnb.h not found in {} (set BNB_INCLUDE_DIR)",
            include_dir.display()
        ));
    }
    let src = out_dir.join("bnb_layout_probe.c");
    let exe = out_dir.join("bnb_layout_probe");
    fs::write(&src, probe_source()).map_err(|e| format!("writing {}: {e}", src.display()))?;
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let compiled = Command::new(&cc)
        .arg("-std=c11")
        .arg("-I")
        .arg(include_dir)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .map_err(|e| format!("running {cc}: {e}"))?;
    if !compiled.status.success() {
        return Err(format!(
            "{cc} failed: {}",
            String::from_utf8_lossy(&compiled.stderr).trim()
        ));
    }
    let ran = Command::new(&exe)
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if !ran.status.success() {
        return Err(format!("{} exited with {}", exe.display(), ran.status));
    }
    let text = String::from_utf8(ran.stdout).map_err(|e| format!("probe output: {e}"))?;
    text.lines()
        .map(|line| {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("bad probe line {line:?}"))?;
            let value = value
                .parse::<usize>()
                .map_err(|e| format!("bad probe line {line:?}: {e}"))?;
            Ok((key.to_string(), value))
        })
        .collect()
}

fn render_layout(entries: &[(String, usize)], error: Option<&str>) -> String {
    let mut rs = String::from("// Generated by bnb-sys/build.rs from the C compiler's view of bnb.h.\n");
    let _ = writeln!(rs, "pub const C_LAYOUT_ERROR: Option<&str> = {error:?};");
    rs.push_str("pub const C_LAYOUT: &[(&str, usize)] = &[\n");
    for (key, value) in entries {
        let _ = writeln!(rs, "    ({key:?}, {value}),");
    }
    rs.push_str("];\n");
    rs
}
