//! Embeds the catalogue (../cases/*.toml) in the binary, so `qga-harness run`
//! works from anywhere without the source tree. `--cases DIR` overrides it.
//!
//! Also builds the VM guests' init (../guest-init) as a static executable
//! and embeds it: a guest image needs it wherever the harness runs, and a
//! static init needs nothing from the guest's C library. One rustc call,
//! not cargo: it has no dependencies, and crt-static must apply to it alone.

use std::fmt::Write;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect())
        .unwrap_or_default();
    files.sort();
    let mut code = String::from("/// (file name, contents) of every embedded case file.\npub static EMBEDDED_CASES: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().unwrap().to_string_lossy();
        writeln!(code, "    ({name:?}, include_str!({:?})),", f.canonicalize().unwrap().display().to_string()).unwrap();
    }
    code.push_str("];\n");
    std::fs::write(std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded_cases.rs"), code).unwrap();
    build_guest_init();
}

fn build_guest_init() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-init/src");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("qga-guest-init");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = std::process::Command::new(rustc)
        .args(["--edition", "2021", "--crate-name", "qga_guest_init", "-O", "-C", "target-feature=+crt-static", "-C", "panic=abort", "-C", "strip=symbols"])
        .arg(src.join("main.rs"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run rustc for the guest init");
    assert!(status.success(), "building the static guest init (guest-init/src/main.rs) failed");
}
