//! `ferry plan` is pinned byte for byte: every example pipeline is planned against the
//! built-in simulators with a fixed seed and a fixed clock, and its JSON and Markdown output
//! compared with snapshots. Two worlds: an empty org (everything is a create), and an org a
//! partial run has written to before the pipelines changed (creates, updates with their
//! diffs, unchanged records), so both endings of the engine and every decision of the write
//! stage show in the output.

use crate::support;

use chrono::{TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::report::PipelineReport;
use ferry::engine::{Engine, Mode, RunOptions};
use ferry::sim::sandbox::EXAMPLE_PIPELINES;
use serde_json::Value;
use support::Env;

fn clock() -> SharedClock {
    ManualClock::auto(
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .expect("time"),
    )
}

/// Plans (or runs, with a record limit) one pipeline with a fixed run id.
async fn go(env: &Env, name: &str, mode: Mode, limit: Option<usize>) -> PipelineReport {
    let project = env.project();
    let conns = env.connect(&project).await;
    let settings = Value::Object(project.config.settings.clone());
    let p = project.pipeline(name).expect("pipeline exists");
    let engine = Engine {
        store: &conns.store,
        source: &conns.zoom,
        matcher: &conns.salesforce,
        sink: &conns.salesforce,
        zoom: Some(&conns.zoom.conn),
        settings: &settings,
        now: env.clock.now(),
    };
    let mut opts = RunOptions::new(mode);
    opts.run_id = "golden".into();
    opts.detail = true;
    opts.limit = limit;
    engine.run(p, &opts).await
}

fn names() -> Vec<String> {
    EXAMPLE_PIPELINES
        .iter()
        .map(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix("pipeline: "))
                .expect("a pipeline name")
                .trim()
                .to_string()
        })
        .collect()
}

fn snapshot(kind: &str, name: &str, plan: &PipelineReport) {
    let json = serde_json::to_string_pretty(&plan.to_json()).expect("json");
    insta::assert_snapshot!(format!("{kind}__{name}__json"), json);
    insta::assert_snapshot!(format!("{kind}__{name}__markdown"), plan.render_markdown());
}

async fn start() -> Env {
    // Zoom's rate limits are off so the number of calls a plan reports is the same on
    // every run of the test (a 429 retried on the fast clock would count one more).
    Env::start(clock(), 24, |o| o.zoom_faults.enforce_rate_limits = false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_of_the_example_pipelines_on_an_empty_org_are_unchanged() {
    let env = start().await;
    let names = names();
    assert_eq!(names.len(), EXAMPLE_PIPELINES.len());
    for name in &names {
        let plan = go(&env, name, Mode::Plan, None).await;
        assert!(plan.stopped.is_none(), "{name}: {:?}", plan.stopped);
        snapshot("fresh", name, &plan);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_after_a_partial_run_and_a_changed_pipeline_are_unchanged() {
    let env = start().await;
    let names = names();
    // A run of the first few records of each pipeline (a limit moves no checkpoint).
    for name in &names {
        let run = go(&env, name, Mode::Run, Some(4)).await;
        assert!(run.stopped.is_none(), "{name}: {:?}", run.stopped);
    }
    // Then the pipelines change what they write: written records now differ.
    let changed: Vec<(&str, String)> = EXAMPLE_PIPELINES
        .iter()
        .map(|(file, text)| {
            (
                *file,
                text.replace("Subject: \"Zoom: ", "Subject: \"Zoom meeting: ")
                    .replace("Status: Not Started", "Status: In Progress"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = changed.iter().map(|(f, t)| (*f, t.as_str())).collect();
    env.sandbox
        .write_project(env.dir.path(), &refs)
        .expect("project rewritten");
    let mut any_update = false;
    let mut any_unchanged = false;
    for name in &names {
        let plan = go(&env, name, Mode::Plan, None).await;
        assert!(plan.stopped.is_none(), "{name}: {:?}", plan.stopped);
        any_update |= plan.summary.update > 0;
        any_unchanged |= plan.summary.unchanged > 0;
        snapshot("after_run", name, &plan);
    }
    assert!(any_update, "the changed pipelines plan updates");
    assert!(any_unchanged, "records written before show unchanged");
}
