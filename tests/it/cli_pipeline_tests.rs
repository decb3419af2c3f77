//! `ferry test` runs the pipelines' offline tests and fails with a readable diff when an
//! expectation is wrong; `ferry validate` on the example project is clean.

use std::path::Path;
use std::process::Command;

fn ferry(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("ferry runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_project_validates_and_its_tests_pass() {
    let (code, out) = ferry(repo(), &["validate"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 8 pipelines"), "{out}");
    let (code, out) = ferry(repo(), &["test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

/// A copy of the example project with one pipeline file: meetings-to-events, edited.
fn project_with(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("examples/sandbox/secrets")).expect("mkdir");
    for f in [
        "zoom_client_secret",
        "zoom_webhook_secret",
        "salesforce_client_secret",
    ] {
        std::fs::copy(
            repo().join("examples/sandbox/secrets").join(f),
            dir.path().join("examples/sandbox/secrets").join(f),
        )
        .expect("copy secret");
    }
    std::fs::copy(repo().join("ferry.yaml"), dir.path().join("ferry.yaml")).expect("copy");
    let original =
        std::fs::read_to_string(repo().join("pipelines/meetings-to-events.yaml")).expect("read");
    let pipeline = edit(original.clone());
    assert_ne!(pipeline, original, "the edit changed nothing");
    std::fs::write(dir.path().join("pipelines/meetings.yaml"), pipeline).expect("write");
    dir
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let dir = project_with(|p| {
        p.replace(
            r#"event: [ { Subject: "Zoom: Demo","#,
            r#"event: [ { Subject: "Zoom: Demo call","#,
        )
    });
    let (code, out) = ferry(dir.path(), &["test"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  meetings-to-events › an external participant"),
        "{out}"
    );
    assert!(out.contains("field `Subject`"), "{out}");
    assert!(out.contains(r#"expected: "Zoom: Demo call""#), "{out}");
    assert!(out.contains(r#"produced: "Zoom: Demo""#), "{out}");
    assert!(out.contains("3 passed, 1 failed"), "{out}");
}

/// `WhatId: null` expects the field cleared (the Lead test's Event writes WhatId as null);
/// `<absent>` expects a field left out (the Event sink has no `Location`), and fails when
/// the sink writes it, even as null.
#[test]
fn tests_tell_a_field_set_to_null_from_a_field_left_out() {
    let lead_expect = "event: [ { WhoId: 00QL, WhatId: null } ]";
    let dir = project_with(|p| {
        p.replace(
            lead_expect,
            "event: [ { WhoId: 00QL, WhatId: null, Location: <absent> } ]",
        )
    });
    let (code, out) = ferry(dir.path(), &["test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 passed, 0 failed"), "{out}");

    let dir =
        project_with(|p| p.replace(lead_expect, "event: [ { WhoId: 00QL, WhatId: <absent> } ]"));
    let (code, out) = ferry(dir.path(), &["test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("field `WhatId`"), "{out}");
    assert!(out.contains("expected: (not set)"), "{out}");
    assert!(out.contains("produced: null"), "{out}");
}

#[test]
fn help_filters_lists_every_filter_with_an_example() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["help", "filters"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for f in ferry::template::FILTERS.iter().filter(|f| f.is_ferry()) {
        assert!(text.contains(f.usage), "{} missing:\n{text}", f.name);
    }
    assert!(
        text.contains("{{ record.start_time | zoom_datetime }}"),
        "{text}"
    );
    // `ferry help <command>` still shows that command's help.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["help", "validate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: ferry validate"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["help", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
