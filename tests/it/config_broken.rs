//! The corpus of broken files under tests/broken/: every rendered diagnostic is locked by a
//! snapshot, and the real binary exits 2 citing the expected line:column for each.

use crate::support::config as config_support;

use config_support::{TestCatalog, broken_cases, expected_positions, no_env};
use ferry::config::{LoadOptions, StreamCatalog, load_project_with};
use std::process::Command;

fn render(config: &std::path::Path, files: &[std::path::PathBuf]) -> String {
    let catalog = TestCatalog;
    let catalogs: [&dyn StreamCatalog; 1] = [&catalog];
    let options = LoadOptions {
        env: Some(&no_env),
        pipelines: (!files.is_empty()).then_some(files),
        ..LoadOptions::validate()
    };
    match load_project_with(config, &catalogs, options) {
        Ok(p) => format!("loaded {} pipelines (expected errors)", p.pipelines.len()),
        Err(d) => d.render(),
    }
}

#[test]
fn the_corpus_is_large_enough() {
    assert!(broken_cases().len() >= 30, "{}", broken_cases().len());
}

#[test]
fn every_broken_file_renders_its_diagnostics() {
    for (name, config, files) in broken_cases() {
        let out = render(&config, &files);
        assert!(out.contains("error"), "{name} produced no error:\n{out}");
        insta::assert_snapshot!(name.as_str(), out);
    }
}

#[test]
fn every_broken_file_exits_2_through_the_binary_and_cites_its_position() {
    let zoom_catalog_registered = ferry::config::builtin_catalogs()
        .iter()
        .any(|c| c.kind() == "zoom");
    for (name, config, files) in broken_cases() {
        // The files that carry `[expect L:C]` notes: the pipeline checked, or any file of
        // the project.
        let noted: Vec<std::path::PathBuf> = if files.is_empty() {
            let dir = config.parent().unwrap();
            let mut all = vec![config.clone()];
            if let Ok(rd) = std::fs::read_dir(dir.join("pipelines")) {
                all.extend(rd.map(|e| e.unwrap().path()));
            }
            all
        } else {
            files.clone()
        };
        let text = std::fs::read_to_string(&noted[0]).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&config)
            .arg("validate")
            .args(&files)
            .env_remove("FERRY_TEST_UNSET_ACCOUNT_ID")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let needs_catalog = text
            .lines()
            .next()
            .unwrap_or("")
            .contains("needs the catalog");
        if needs_catalog && !zoom_catalog_registered {
            // Unknown streams are not reported when no catalog for the kind is registered.
            assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let mut checked = 0;
        for file in &noted {
            let text = std::fs::read_to_string(file).unwrap();
            for pos in expected_positions(&text) {
                let cited = format!("{}:{pos}]", file.display());
                assert!(
                    stderr.contains(&cited),
                    "{name}: expected {cited} in\n{stderr}"
                );
                checked += 1;
            }
        }
        assert!(checked > 0, "{name} has no [expect L:C] note");
    }
}

#[test]
fn json_output_lists_problems_for_editors() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "--config",
            "tests/broken/ferry.yaml",
            "validate",
            "--format",
            "json",
        ])
        .arg("tests/broken/pipelines/many_problems.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    let problems = doc["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{doc:#}");
    assert_eq!(problems[0]["line"], 3);
    assert_eq!(problems[0]["column"], 1);
    assert_eq!(problems[0]["code"], "ferry::unknown_key");
    assert_eq!(problems[0]["help"], "did you mean `source`?");
    assert_eq!(problems[1]["line"], 8);
}

#[test]
fn secrets_written_inline_never_reach_a_diagnostic() {
    let config = std::path::Path::new("tests/broken/projects/inline_secrets_masked/ferry.yaml");
    let out = render(config, &[]);
    assert!(out.contains("is written inline"), "{out}");
    assert!(out.contains("wrong_kind_option"), "{out}");
    for secret in [
        "s3cr3t-zoom",
        "whsec-plain-123",
        "BEGIN PRIVATE KEY",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
    // What is not a secret is still quoted as written.
    assert!(out.contains("client_id: cid"), "{out}");
}
