//! Every function that libbnb exports (src/core/symbols.txt) is declared by bnb-sys and called
//! by the safe crate, so the binding cannot silently fall behind the ABI.
use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn sources(dir: &Path) -> String {
    let mut text = String::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text += &sources(&path);
        } else if path.extension().is_some_and(|e| e == "rs") {
            text += &read(&path);
        }
    }
    text
}

#[test]
fn every_exported_function_is_declared_and_wrapped() {
    let symbols: Vec<String> = read(&repo().join("src/core/symbols.txt"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert!(symbols.len() >= 37, "symbols.txt lists only {}", symbols.len());
    let sys = read(&repo().join("bindings/rust/bnb-sys/src/lib.rs"));
    let safe = sources(&repo().join("bindings/rust/bnb/src"));
    let undeclared: Vec<&str> = symbols
        .iter()
        .filter(|s| !sys.contains(&format!("pub fn {s}(")))
        .map(String::as_str)
        .collect();
    let unwrapped: Vec<&str> = symbols
        .iter()
        .filter(|s| !safe.contains(&format!("sys::{s}(")))
        .map(String::as_str)
        .collect();
    assert!(
        undeclared.is_empty() && unwrapped.is_empty(),
        "exported by libbnb but not declared in bnb-sys: {undeclared:?}; not called by the bnb crate: {unwrapped:?}"
    );
}
