//! Embeds the catalogue (../cases/*.toml) in the binary, so `qga-harness run`
//! works from anywhere without the source tree. `--cases DIR` overrides it.

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
}
