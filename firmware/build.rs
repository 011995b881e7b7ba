//! Puts the board's memory layout where cortex-m-rt's linker script finds it.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("OUT_DIR is writable");
    // cortex-m-rt's `device` feature includes device.x; the interrupt handlers all default
    // to DefaultHandler, so it names none.
    std::fs::write(out.join("device.x"), b"/* mps2-an386: every interrupt goes to DefaultHandler. */\n")
        .expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    if std::env::var_os("CARGO_FEATURE_MPS2").is_some() {
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        if std::env::var_os("CARGO_FEATURE_DEFMT").is_some() {
            println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        }
    }
}
