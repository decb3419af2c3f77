//! Values Salesforce would refuse are caught before a run: `ferry validate --online` reports
//! each at its template's line with the filter that fixes it, `ferry plan` shows the record
//! as an error, and a run sends none of them (the org stays without those records).

use crate::support;

use chrono::{TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::Mode;
use ferry::engine::report::WriteAction;
use std::process::Command;
use support::Env;

/// A datetime into a date field, text into a number, 300 characters into Subject (255), a
/// value outside a restricted picklist, each in its own sink; and one sink that is right.
const BAD: &str = r#"pipeline: bad-values
source:
  stream: zoom.phone_call_history
  since: 2026-01-01T00:00:00Z
sinks:
  date:
    sobject: Task
    action: upsert
    key: Zoom_Call_Id__c
    fields:
      Zoom_Call_Id__c: "d-{{ record.call_id }}"
      ActivityDate: "{{ record.start_time }}"
  number:
    sobject: Task
    action: upsert
    key: Zoom_Call_Id__c
    fields:
      Zoom_Call_Id__c: "n-{{ record.call_id }}"
      CallDurationInSeconds: "{{ record.direction }}"
  long:
    sobject: Task
    action: upsert
    key: Zoom_Call_Id__c
    fields:
      Zoom_Call_Id__c: "l-{{ record.call_id }}"
      Subject: "{{ record.direction }} LONG"
  picklist:
    sobject: Task
    action: upsert
    key: Zoom_Call_Id__c
    fields:
      Zoom_Call_Id__c: "p-{{ record.call_id }}"
      CallType: "{{ record.direction }}"
  good:
    sobject: Task
    action: upsert
    key: Zoom_Call_Id__c
    fields:
      Zoom_Call_Id__c: "g-{{ record.call_id }}"
      Subject: "Call {{ record.direction }}"
      ActivityDate: "{{ record.start_time | sf_date }}"
      CallDurationInSeconds: "{{ record.talk_time or 0 }}"
      CallType: "{{ 'Outbound' if record.direction == 'outbound' else 'Inbound' }}"
"#;

/// A CampaignMember insert without CampaignId, which Salesforce requires on create.
const MISSING: &str = r#"pipeline: missing-required
source:
  stream: zoom.phone_call_history
sinks:
  member:
    sobject: CampaignMember
    action: insert
    key: "{{ record.call_id }}"
    fields:
      Status: Sent
"#;

fn bad() -> String {
    BAD.replace("LONG", &"x".repeat(292))
}

fn manual_clock() -> SharedClock {
    ManualClock::auto(
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .expect("time"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_online_reports_each_refused_value_at_its_line_with_the_filter_that_fixes_it() {
    let env = Env::start(ferry::clock::system(), 5, |_| {}).await;
    let dir = env.dir.path();
    std::fs::write(dir.join("pipelines/bad-values.yaml"), bad()).expect("write");
    std::fs::write(dir.join("pipelines/missing-required.yaml"), MISSING).expect("write");
    let config = env.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&config)
            .args(["validate", "--online"])
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .expect("join")
    .expect("ferry runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "exit 2 on problems:\n{text}");
    let at = |place: &str, words: &[&str]| {
        // One diagnostic: its message (after `×`) comes before its place, its hint after.
        let here = text
            .find(place)
            .unwrap_or_else(|| panic!("a finding at {place}:\n{text}"));
        let start = text[..here].rfind('×').unwrap_or(0);
        let end = text[here..]
            .find("ferry::")
            .map(|i| here + i)
            .unwrap_or(text.len());
        let part = &text[start..end];
        for w in words {
            assert!(part.contains(w), "{place} says {w:?}:\n{part}\n---\n{text}");
        }
    };
    // Each value at its field's key (line:column of `Name:`).
    at(
        "bad-values.yaml:12:7",
        &[
            "ActivityDate",
            "date and time into the date field",
            "sf_date",
        ],
    );
    at(
        "bad-values.yaml:19:7",
        &["CallDurationInSeconds", "not a whole number"],
    );
    at(
        "bad-values.yaml:26:7",
        &[
            "Subject",
            "300 characters into Task.Subject, which holds 255",
            "truncate(255)",
        ],
    );
    at(
        "bad-values.yaml:33:7",
        &["CallType", "restricted picklist", "`Inbound`"],
    );
    // The sink that is right has no value finding (the warnings that these test sinks and
    // the example phone pipeline both write Task by Zoom_Call_Id__c are another check's).
    let value_findings: Vec<&str> = text
        .split("ferry::")
        .filter(|d| d.starts_with("online_value"))
        .collect();
    for line in 34..=45 {
        assert!(
            !value_findings
                .iter()
                .any(|d| d.contains(&format!("bad-values.yaml:{line}:"))),
            "nothing at line {line}:\n{text}"
        );
    }
    // A required field the sink leaves out, at the sink.
    assert!(text.contains("missing-required.yaml:"), "{text}");
    assert!(text.contains("without CampaignId"), "{text}");
    assert!(text.contains("ferry::online_value"), "{text}");
    assert!(text.contains("set `CampaignId`"), "{text}");
    // The example pipelines hold no value Salesforce would refuse.
    std::fs::remove_file(dir.join("pipelines/bad-values.yaml")).expect("remove");
    std::fs::remove_file(dir.join("pipelines/missing-required.yaml")).expect("remove");
    let config = env.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&config)
            .args(["validate", "--online"])
            .output()
    })
    .await
    .expect("join")
    .expect("ferry runs");
    assert!(
        out.status.success(),
        "the example pipelines pass:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_refused_values_as_errors_and_a_run_sends_none_of_them() {
    let env = Env::start(manual_clock(), 5, |_| {}).await;
    std::fs::write(env.dir.path().join("pipelines/bad-values.yaml"), bad()).expect("write");
    let plan = env.run_one("bad-values", Mode::Plan).await;
    assert!(plan.stopped.is_none(), "{:?}", plan.stopped);
    let calls = plan.records.len();
    assert!(calls > 0, "the sim has phone calls");
    let writes = |r: &ferry::engine::report::PipelineReport, sink: &str| {
        r.records
            .iter()
            .flat_map(|rec| rec.writes.iter())
            .filter(|w| w.sink == sink)
            .cloned()
            .collect::<Vec<_>>()
    };
    let expect = [
        ("date", "sf_date"),
        ("number", "not a whole number"),
        ("long", "truncate(255)"),
        ("picklist", "restricted picklist"),
    ];
    for (sink, words) in expect {
        let ws = writes(&plan, sink);
        assert_eq!(ws.len(), calls, "one write per call for {sink}");
        for w in &ws {
            assert_eq!(w.action, WriteAction::Error, "{sink}: {w:?}");
            let m = w.message.clone().unwrap_or_default();
            assert!(m.contains(words), "{sink}: {m}");
        }
    }
    assert!(
        writes(&plan, "good")
            .iter()
            .all(|w| w.action == WriteAction::Create),
        "the right sink plans creates"
    );
    assert_eq!(plan.summary.error, 4 * calls as u64, "{:?}", plan.summary);

    let before = env.sandbox.salesforce.records("Task").len();
    let run = env.run_one("bad-values", Mode::Run).await;
    assert!(run.stopped.is_none(), "{:?}", run.stopped);
    assert_eq!(run.summary.error, 4 * calls as u64, "{:?}", run.summary);
    let tasks = env.sandbox.salesforce.records("Task");
    let key = |t: &serde_json::Value| {
        t.get("Zoom_Call_Id__c")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        tasks.iter().filter(|t| key(t).starts_with("g-")).count(),
        calls,
        "the right sink's records were written"
    );
    for prefix in ["d-", "n-", "l-", "p-"] {
        assert!(
            !tasks.iter().any(|t| key(t).starts_with(prefix)),
            "no {prefix} record reached the org"
        );
    }
    assert_eq!(tasks.len(), before + calls);
    // The refused records wait as dead letters with the reason.
    let project = env.project();
    let conns = env.connect(&project).await;
    let letters = conns
        .store
        .deadletters(Some("bad-values"))
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 4 * calls, "{letters:?}");
    assert!(letters.iter().all(|l| l.error.starts_with("not sent: ")));
}
