//! Enlists the conformance tests: every `pub async fn NAME(` at the start of a line of
//! `src/suite.rs` is one test, written into the suite's list here, so a test is written
//! once and cannot be left out of the list (a `pub async fn` there that does not take a
//! `Subject` fails to compile instead).

use std::fmt::Write as _;

fn main() {
    println!("cargo::rerun-if-changed=src/suite.rs");
    let source = std::fs::read_to_string("src/suite.rs").expect("read src/suite.rs");
    let mut list = String::from("vec![\n");
    for line in source.lines() {
        let Some(rest) = line.strip_prefix("pub async fn ") else {
            continue;
        };
        let name = rest.split('(').next().unwrap_or_default().trim();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "src/suite.rs: cannot read a test name from {line:?}"
        );
        writeln!(
            list,
            "    ({name:?}, |s| Box::pin(crate::suite::{name}(s)) as TestRun),"
        )
        .expect("write to a string");
    }
    list.push(']');
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("suite_list.rs"), list).expect("write suite_list.rs");
}
