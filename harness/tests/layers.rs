//! The layer table in `src/lib.rs` is the architecture: this test holds the
//! code to it. Every top-level module of the library must have a row, every
//! row must name a module that exists, and a module may use only modules of
//! lower rows (modules sharing a row are peers and use neither each other).
//! A `crate::` path that goes upward or sideways fails the test with the file
//! and line, so a layering leak is caught when it is written, not in review.
//!
//! What counts as a use: any `crate::NAME` in code (a `use` line or a path
//! inside an expression), outside comments and outside the `#[cfg(test)]`
//! module at the end of a file (a unit test may build what it needs from
//! anywhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The table's rows, bottom first: each row's module names.
fn layer_table(lib_rs: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in lib_rs.lines() {
        let Some(row) = line.strip_prefix("//! |") else { continue };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | layer | modules | knows about |: the modules cell holds [`name`] links.
        let Some(cell) = cells.get(1) else { continue };
        let names: Vec<String> = cell
            .split("[`")
            .skip(1)
            .filter_map(|s| s.split("`]").next())
            .map(str::to_owned)
            .collect();
        if !names.is_empty() {
            rows.push(names);
        }
    }
    rows
}

/// `pub mod NAME;` lines of lib.rs.
fn declared_modules(lib_rs: &str) -> Vec<String> {
    lib_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").and_then(|r| r.strip_suffix(';')).map(str::to_owned))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/engine/steps/send.rs` →
/// `engine`), or None for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// `(line number, module)` for every `crate::module` used in code.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push((i + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b::{c, d}}`: the first name of each item at the
        // top level of the braces.
        if let Some(at) = code.find("crate::{") {
            let (mut depth, mut item_start) = (1, true);
            let mut name = String::new();
            for c in code[at + "crate::{".len()..].chars() {
                if item_start && (c.is_ascii_alphanumeric() || c == '_') {
                    name.push(c);
                    continue;
                }
                if item_start && !name.is_empty() {
                    found.push((i + 1, std::mem::take(&mut name)));
                    item_start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    _ => {}
                }
            }
            if item_start && !name.is_empty() {
                found.push((i + 1, name));
            }
        }
    }
    found
}

#[test]
fn modules_use_only_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let rows = layer_table(&lib_rs);
    assert!(!rows.is_empty(), "src/lib.rs has no layer table");
    let mut rank: BTreeMap<String, usize> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        for name in row {
            assert!(rank.insert(name.clone(), i).is_none(), "{name} has two rows in the layer table");
        }
    }
    let declared = declared_modules(&lib_rs);
    for m in &declared {
        assert!(rank.contains_key(m), "module {m} is declared in lib.rs but has no row in its layer table");
    }
    for m in rank.keys() {
        assert!(declared.contains(m), "the layer table names {m}, which lib.rs does not declare");
    }

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let Some(&own) = rank.get(&module) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in uses(&text) {
            if used == module {
                continue;
            }
            match rank.get(&used) {
                Some(&r) if r < own => {}
                Some(&r) => wrong.push(format!(
                    "{}:{line}: {module} (layer {own}) uses {used} (layer {r}): {}",
                    file.strip_prefix(root).unwrap().display(),
                    if r == own { "a peer on the same layer" } else { "a higher layer" }
                )),
                None => {}
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layer table in src/lib.rs:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_upward_uses() {
    // The scanner itself: a use in braces, a path in an expression, and
    // nothing from comments or the test module.
    let text = "use crate::{wire, transport::{Duplex, vm}};\nfn f() { crate::engine::run(); } // crate::report\n#[cfg(test)]\nmod tests { use crate::gate; }\n";
    let names: Vec<String> = uses(text).into_iter().map(|(_, n)| n).collect();
    assert!(names.contains(&"wire".to_owned()));
    assert!(names.contains(&"transport".to_owned()));
    assert!(names.contains(&"engine".to_owned()));
    assert!(!names.contains(&"vm".to_owned()), "a name inside nested braces is not a module");
    assert!(!names.contains(&"report".to_owned()));
    assert!(!names.contains(&"gate".to_owned()));
    let table = layer_table("//! | layer | module | knows |\n//! |---|---|---|\n//! | wire | [`wire`] | bytes |\n//! | peers | [`case`], [`schema`] | data |\n");
    assert_eq!(table, vec![vec!["wire".to_owned()], vec!["case".to_owned(), "schema".to_owned()]]);
}
