// bnb-sys (links = "bnb") passes the directory of libbnb.so on as DEP_BNB_LIB_DIR; an rpath to it
// lets this crate's tests, examples and doctests run without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_BNB_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_BNB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
