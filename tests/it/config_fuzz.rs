//! The loader never panics: arbitrary bytes, and valid files mutated at random, give either
//! a project or diagnostics.

use crate::support::config as config_support;

use config_support::{TestCatalog, no_env};
use ferry::config::{LoadOptions, StreamCatalog, load_project_with};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const CONFIG: &str = "tests/broken/ferry.yaml";
const VALID: &str = include_str!("../../docs/reference/pipeline.yaml");

fn load_pipeline_text(dir: &Path, bytes: &[u8]) -> bool {
    let path = dir.join("p.yaml");
    std::fs::write(&path, bytes).unwrap();
    let files: Vec<PathBuf> = vec![path];
    let catalog = TestCatalog;
    let catalogs: [&dyn StreamCatalog; 1] = [&catalog];
    let result = load_project_with(
        Path::new(CONFIG),
        &catalogs,
        LoadOptions {
            env: Some(&no_env),
            pipelines: Some(&files),
            ..LoadOptions::validate()
        },
    );
    match result {
        Ok(_) => true,
        Err(d) => {
            // Rendering must not panic either, and every problem must have a position
            // inside the file.
            let _ = d.render();
            for p in &d.problems {
                assert!(p.offset + p.len <= bytes.len(), "{p:?}");
            }
            false
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), "[ -~\n\t{}\\[\\]:#|>-]{0,12}").prop_map(|(a, s)| Mutation::Insert(a, s)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Indent),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::Delete(at, len) => {
            let b = text.as_bytes();
            let at = at % b.len().max(1);
            let end = (at + len).min(b.len());
            let mut v = b[..at].to_vec();
            v.extend_from_slice(&b[end..]);
            return String::from_utf8_lossy(&v).into_owned();
        }
        Mutation::Insert(at, s) => {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return format!("{}{}{}", &text[..at], s, &text[at..]);
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        Mutation::Indent(i) => {
            let i = i % n;
            lines[i] = format!("  {}", lines[i]);
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        load_pipeline_text(dir.path(), &bytes);
    }

    #[test]
    fn mutated_valid_files_never_panic(ms in proptest::collection::vec(mutation(), 1..4)) {
        let mut text = VALID.to_string();
        for m in &ms {
            text = apply(&text, m);
        }
        let dir = tempfile::tempdir().unwrap();
        load_pipeline_text(dir.path(), text.as_bytes());
    }
}

#[test]
fn the_unmutated_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_pipeline_text(dir.path(), VALID.as_bytes()));
}
