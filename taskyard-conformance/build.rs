//! Enlists the conformance tests: every `pub async fn NAME(` at the start of a line of a
//! file under `src/suite/` is one test, written into the suite's list here with its module
//! path (`crate::suite::leases::NAME`) and its bare name, so a test is written once and
//! cannot be left out of the list (a `pub async fn` there that does not take a `Subject`
//! fails to compile instead). Names are unique across the suite: a test is selected by its
//! bare name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const SUITE: &str = "src/suite";

fn main() {
    // A directory: cargo reruns this script when any file under it changes.
    println!("cargo::rerun-if-changed={SUITE}");
    let mut files = Vec::new();
    rust_files(Path::new(SUITE), &mut files);
    files.sort();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut list = String::from("vec![\n");
    for file in &files {
        let module = module_path(file);
        let source = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for line in source.lines() {
            let Some(rest) = line.strip_prefix("pub async fn ") else {
                continue;
            };
            let name = rest.split('(').next().unwrap_or_default().trim();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{}: cannot read a test name from {line:?}",
                file.display()
            );
            if let Some(other) = seen.insert(name.to_string(), file.clone()) {
                panic!(
                    "test {name} is in both {} and {}: test names must be unique",
                    other.display(),
                    file.display()
                );
            }
            writeln!(
                list,
                "    ({name:?}, |s| Box::pin({module}::{name}(s)) as TestRun),"
            )
            .expect("write to a string");
        }
    }
    list.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("suite_list.rs"), list).expect("write suite_list.rs");
}

/// The `.rs` files under `dir`, at any depth.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module a file of `src/suite/` is: `src/suite/mod.rs` is `crate::suite`,
/// `src/suite/leases.rs` is `crate::suite::leases`, `src/suite/a/mod.rs` is
/// `crate::suite::a`.
fn module_path(file: &Path) -> String {
    let relative = file.strip_prefix("src").expect("a file under src/");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    format!("crate::{}", parts.join("::"))
}
