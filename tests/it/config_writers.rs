//! `validate` warns when two pipelines write the same field of the same record.

use crate::support::config as config_support;

use config_support::{TestCatalog, no_env};
use ferry::config::{LoadOptions, StreamCatalog, load_project_with};
use std::path::{Path, PathBuf};
use std::process::Command;

fn files(names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| Path::new("tests/fixtures/conflicting_writers").join(n))
        .collect()
}

#[test]
fn two_pipelines_upserting_one_object_by_one_key_are_warned_at_each_sink() {
    let catalog = TestCatalog;
    let catalogs: [&dyn StreamCatalog; 1] = [&catalog];
    let list = files(&["meetings.yaml", "recordings.yaml", "other_key.yaml"]);
    let options = LoadOptions {
        env: Some(&no_env),
        pipelines: Some(&list),
        ..LoadOptions::validate()
    };
    let project = load_project_with(Path::new("tests/broken/ferry.yaml"), &catalogs, options)
        .unwrap_or_else(|d| panic!("{}", d.render()));
    let got: Vec<(String, usize, String)> = project
        .warnings
        .iter()
        .filter(|w| w.code == "ferry::conflicting_writers")
        .map(|w| (w.file.clone(), w.line, w.message.clone()))
        .collect();
    // One warning at each of the two Event sinks upserting by Zoom_Meeting_UUID__c, each
    // naming the other; not the Task sink (another object), not the Event sink keyed by
    // another field, and only the field both write (Subject), not the key itself.
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].0.ends_with("meetings.yaml") && got[0].1 == 6,
        "{got:#?}"
    );
    assert!(
        got[0]
            .2
            .contains("pipeline `recordings-to-events` (sink `meeting_event`")
    );
    assert!(
        got[1].0.ends_with("recordings.yaml") && got[1].1 == 6,
        "{got:#?}"
    );
    assert!(
        got[1]
            .2
            .contains("pipeline `meetings-to-events` (sink `event`")
    );
    for (_, _, m) in &got {
        assert!(m.contains("`Subject`"), "{m}");
        assert!(
            !m.contains("Zoom_Meeting_UUID__c`,") && !m.contains("Description"),
            "{m}"
        );
    }
}

#[test]
fn one_pipeline_alone_is_not_warned() {
    let catalog = TestCatalog;
    let catalogs: [&dyn StreamCatalog; 1] = [&catalog];
    let list = files(&["meetings.yaml", "other_key.yaml"]);
    let options = LoadOptions {
        env: Some(&no_env),
        pipelines: Some(&list),
        ..LoadOptions::validate()
    };
    let project =
        load_project_with(Path::new("tests/broken/ferry.yaml"), &catalogs, options).unwrap();
    assert!(
        project
            .warnings
            .iter()
            .all(|w| w.code != "ferry::conflicting_writers"),
        "{:#?}",
        project.warnings
    );
}

#[test]
fn validate_prints_the_warning_and_still_passes() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--config", "tests/broken/ferry.yaml", "validate"])
        .args(files(&["meetings.yaml", "recordings.yaml"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}{stdout}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("conflicting_writers"), "{all}");
    assert!(all.contains("meetings.yaml:6:"), "{all}");
    assert!(all.contains("recordings.yaml:6:"), "{all}");
}
