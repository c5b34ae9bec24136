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
    let (undeclared, unwrapped) = gaps(&symbols);
    assert!(
        undeclared.is_empty() && unwrapped.is_empty(),
        "exported by libbnb but not declared in bnb-sys: {undeclared:?}; not called by the bnb crate: {unwrapped:?}"
    );
    // The check itself: a name that nothing declares or calls is reported.
    let probe = ["bnb_version_string".to_string(), "bnb_not_a_function".to_string()];
    assert_eq!(
        gaps(&probe),
        (vec!["bnb_not_a_function".to_string()], vec!["bnb_not_a_function".to_string()])
    );
}

/// The symbols bnb-sys does not declare, and those the safe crate does not call.
fn gaps(symbols: &[String]) -> (Vec<String>, Vec<String>) {
    let sys = read(&repo().join("bindings/rust/bnb-sys/src/lib.rs"));
    let safe = sources(&repo().join("bindings/rust/bnb/src"));
    let missing = |text: &str, pattern: &dyn Fn(&str) -> String| -> Vec<String> {
        symbols.iter().filter(|s| !text.contains(&pattern(s))).cloned().collect()
    };
    (
        missing(&sys, &|s| format!("pub fn {s}(")),
        missing(&safe, &|s| format!("sys::{s}(")),
    )
}
