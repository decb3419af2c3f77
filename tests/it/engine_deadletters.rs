//! Records Salesforce rejects land in dead letters with its error while the rest of the
//! batch is written; `ferry deadletters retry` sends them again on the next run; a spent
//! daily budget stops the run cleanly and the next run finishes the job.

use crate::support;

use chrono::{TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::Mode;
use ferry::sim::salesforce::SfFaults;
use support::{Env, writes};

fn clock() -> SharedClock {
    ManualClock::auto(
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .expect("time"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_is_dead_lettered_and_the_rest_is_written_then_retried() {
    let env = Env::start(clock(), 60, |o| {
        o.sf_faults = SfFaults {
            validation_rule: Some(("Event".into(), "Subject".into(), "pricing".into())),
            ..SfFaults::default()
        };
    })
    .await;
    let report = env.run_one("meetings-to-events", Mode::Run).await;
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    assert!(report.summary.error > 0, "some Events were rejected");
    let events = env.sandbox.salesforce.records("Event");
    assert!(!events.is_empty(), "the rest of the batch was written");
    assert!(
        events
            .iter()
            .all(|e| !e["Subject"].as_str().unwrap_or("").contains("pricing"))
    );

    let project = env.project();
    let store = ferry::state::Store::open(&project.config.state).expect("state");
    let letters = store
        .deadletters(Some("meetings-to-events"))
        .await
        .expect("letters");
    assert_eq!(letters.len() as u64, report.summary.error);
    assert_eq!(letters.len() as u64, report.summary.dead_lettered);
    assert_eq!(report.to_json()["summary"]["dead_lettered"], letters.len());
    assert!(letters.iter().all(|l| l.sink == "event"));
    assert!(
        letters
            .iter()
            .all(|l| l.error.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION")),
        "the Salesforce error is kept: {:?}",
        letters.first().map(|l| &l.error)
    );
    // Their meetings' later sinks did not run: no relations point at a missing Event.
    let event_ids: std::collections::BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["Id"].as_str().map(str::to_string))
        .collect();
    for r in env.sandbox.salesforce.records("EventRelation") {
        assert!(event_ids.contains(r["EventId"].as_str().unwrap_or("")));
    }

    // The admin fixes the org (the rule is lifted) and asks for a retry.
    env.sandbox
        .salesforce
        .set_faults(|f| f.validation_rule = None);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&env.config)
        .args(["deadletters", "retry", "--all"])
        .output()
        .expect("ferry runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = env.run_one("meetings-to-events", Mode::Run).await;
    assert_eq!(again.summary.retried, letters.len() as u64);
    assert!(
        store
            .deadletters(Some("meetings-to-events"))
            .await
            .expect("letters")
            .is_empty()
    );
    let now_events = env.sandbox.salesforce.records("Event");
    assert_eq!(now_events.len(), events.len() + letters.len());
    assert!(
        now_events
            .iter()
            .any(|e| e["Subject"].as_str().unwrap_or("").contains("pricing"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_stops_the_run_and_the_next_run_finishes_the_job() {
    let env = Env::start(clock(), 60, |_| {}).await;
    // A budget too small for one run.
    let config = std::fs::read_to_string(&env.config).expect("read");
    std::fs::write(
        &env.config,
        config.replace("daily_budget: 5000", "daily_budget: 4"),
    )
    .expect("write");
    let first = env.run_one("meetings-to-events", Mode::Run).await;
    let stopped = first.stopped.clone().unwrap_or_default();
    assert!(
        stopped.to_lowercase().contains("budget"),
        "stops with a clear message: {stopped}"
    );
    assert!(env.sandbox.salesforce.calls().collections + env.sandbox.salesforce.calls().query <= 4);
    // The stopped batch counts as an error: the summary never says `0 errors` of it.
    assert_eq!(first.summary.error, 1, "{}", first.summary_line());
    assert!(
        first.summary_line().contains("1 errors"),
        "{}",
        first.summary_line()
    );
    assert_eq!(first.summary.dead_lettered, 0);

    // More budget: the next run picks up where the first stopped, and the org ends as a
    // clean run's would.
    std::fs::write(&env.config, config).expect("write");
    let second = env.run_one("meetings-to-events", Mode::Run).await;
    assert!(second.stopped.is_none(), "{:?}", second.stopped);
    let clean = Env::start(clock(), 60, |_| {}).await;
    clean.run_one("meetings-to-events", Mode::Run).await;
    assert_eq!(env.org(), clean.org());
    let third = env.run_one("meetings-to-events", Mode::Run).await;
    assert_eq!(writes(&[third]), 0);
}

/// `ferry run` exits 1 when records went to dead letters (a scheduler notices), and 0 with
/// `--allow-dead-letters`, the choice of an admin who reads them on their own schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_dead_letters_exits_1_unless_allowed() {
    let rejecting = |o: &mut ferry::sim::sandbox::SandboxOptions| {
        o.sf_faults = SfFaults {
            validation_rule: Some(("Event".into(), "Subject".into(), "pricing".into())),
            ..SfFaults::default()
        };
    };
    for (extra, code) in [(None, 1), (Some("--allow-dead-letters"), 0)] {
        // The process reads the system clock: the world is generated around it.
        let env = Env::start(ferry::clock::system(), 60, rejecting).await;
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.arg("--config")
            .arg(&env.config)
            .args(["run", "meetings-to-events"])
            .args(extra)
            .env("FERRY_LOG", "error");
        let out = tokio::task::spawn_blocking(move || c.output())
            .await
            .expect("join")
            .expect("ferry starts");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {text}");
        assert!(text.contains("went to dead letters"), "{text}");
        assert!(!text.contains(" 0 errors"), "{text}");
    }
}
