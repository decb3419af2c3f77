//! `ferry state …` and `ferry deadletters …` against a seeded state file.

use chrono::{DateTime, Utc};
use ferry::state::{BatchCommit, LedgerState, LedgerWrite, NewDeadLetter, Store};
use serde_json::json;
use std::path::Path;
use std::process::Command;

const KEY: [u8; 32] = [3u8; 32];

fn ferry(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("FERRY_STATE_KEY", hex::encode(KEY))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn seeded() -> (tempfile::TempDir, std::path::PathBuf, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(
        &config,
        "settings:\n  internal_domains: [acme.com]\nstate: st/state.db\n",
    )
    .unwrap();
    let s = Store::open_with_key(&dir.path().join("st/state.db"), KEY).unwrap();
    s.commit_batch(&BatchCommit {
        pipeline: "meetings-to-events".into(),
        ledger: vec![LedgerWrite {
            sink: "event".into(),
            key: "abc==".into(),
            sf_id: Some("00U1".into()),
            hash: "h".into(),
            state: LedgerState::Written,
        }],
        dead_letters: vec![
            NewDeadLetter {
                sink: "event".into(),
                key: "bad==".into(),
                payload: json!({ "Subject": "x" }),
                error: "STRING_TOO_LONG: Subject".into(),
            },
            NewDeadLetter {
                sink: "event".into(),
                key: "worse==".into(),
                payload: json!({}),
                error: "UNABLE_TO_LOCK_ROW".into(),
            },
        ],
        checkpoints: vec![(
            "zoom.past_meetings".into(),
            "u1".into(),
            "2026-03-10T00:00:00Z".into(),
        )],
        subjects: Vec::new(),
    })
    .await
    .unwrap();
    let ids = s
        .deadletters(None)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    (dir, config, ids)
}

#[tokio::test]
async fn state_show_rewind_reset() {
    let (dir, config, _) = seeded().await;
    let (code, out, err) = ferry(&config, &["state", "show"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("meetings-to-events") && out.contains("zoom.past_meetings"),
        "{out}"
    );
    assert!(out.contains("2026-03-10T00:00:00Z"), "{out}");
    assert!(out.contains("Dead letters: 2"), "{out}");

    let (code, out, err) = ferry(
        &config,
        &[
            "state",
            "rewind",
            "meetings-to-events",
            "--to",
            "2026-03-01",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 checkpoint(s) moved back"), "{out}");
    let (_, out, _) = ferry(&config, &["state", "show", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cursor = doc["checkpoints"][0]["cursor"].as_str().unwrap();
    assert_eq!(
        DateTime::parse_from_rfc3339(cursor)
            .unwrap()
            .with_timezone(&Utc),
        DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").unwrap()
    );
    assert_eq!(doc["ledger"][0]["written"], 1);

    let (code, _, _) = ferry(
        &config,
        &["state", "rewind", "meetings-to-events", "--to", "someday"],
    );
    assert_eq!(code, 2);

    let (code, out, _) = ferry(&config, &["state", "reset", "meetings-to-events"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 checkpoint(s) removed"), "{out}");
    let s = Store::open_with_key(&dir.path().join("st/state.db"), KEY).unwrap();
    assert!(s.checkpoints(None).await.unwrap().is_empty());
    assert_eq!(
        s.ledger_counts(None).await.unwrap()[0].written,
        1,
        "ledger kept"
    );
}

#[tokio::test]
async fn deadletters_list_retry_drop() {
    let (dir, config, ids) = seeded().await;
    let (code, out, err) = ferry(&config, &["deadletters", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("STRING_TOO_LONG") && out.contains("bad=="),
        "{out}"
    );
    let (_, out, _) = ferry(&config, &["deadletters", "list", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 2);

    let (code, out, _) = ferry(&config, &["deadletters", "retry", &ids[0].to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains("next run"), "{out}");
    let (code, out, _) = ferry(&config, &["deadletters", "drop", &ids[1].to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains("1 dead letter(s) dropped"), "{out}");
    let (code, _, _) = ferry(&config, &["deadletters", "drop", "424242"]);
    assert_eq!(code, 2);

    let s = Store::open_with_key(&dir.path().join("st/state.db"), KEY).unwrap();
    let left = s.deadletters(None).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].retry_requested);
}

#[test]
fn commands_say_when_there_is_no_state_yet() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(&config, "settings: {}\n").unwrap();
    let (code, out, _) = ferry(&config, &["deadletters", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("no state yet"), "{out}");
    assert!(
        !dir.path().join(".ferry/state.db").exists(),
        "show creates nothing"
    );
}

/// `ferry state show` lists the records a Zoom daily limit holds back: per pipeline, sink,
/// limit and host, how many and until when; registrants are counted, never named.
#[tokio::test]
async fn state_show_lists_deferrals() {
    let (dir, config, _) = seeded().await;
    let (_, out, _) = ferry(&config, &["state", "show"]);
    assert!(
        out.contains("Waiting for a Zoom daily limit: 0 record(s)"),
        "{out}"
    );
    let s = Store::open_with_key(&dir.path().join("st/state.db"), KEY).unwrap();
    let until = DateTime::parse_from_rfc3339("2026-03-11T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let d = |key: &str, resource: &str| ferry::state::Deferral {
        pipeline: "campaign-to-webinar".into(),
        sink: "registrant".into(),
        key: key.into(),
        record: json!({"Email": format!("{key}@contoso.com")}),
        reason: "daily limit".into(),
        resource: resource.into(),
        not_before: until,
        deferred_at: until - chrono::Duration::hours(3),
    };
    s.zoom_defer(&[
        d("m1", "registrant:81:m1@contoso.com"),
        d("m2", "registrant:81:m2@contoso.com"),
        d("m3", "host:host@acme.com"),
    ])
    .await
    .unwrap();
    drop(s);
    let (code, out, err) = ferry(&config, &["state", "show", "campaign-to-webinar"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Waiting for a Zoom daily limit: 3 record(s)"),
        "{out}"
    );
    let rows: Vec<String> = out
        .lines()
        .filter(|l| l.contains("campaign-to-webinar"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        [
            "campaign-to-webinar registrant host host@acme.com 1 2026-03-11 00:00:00 UTC",
            "campaign-to-webinar registrant registrant - 2 2026-03-11 00:00:00 UTC",
        ],
        "{out}"
    );
    assert!(!out.contains("contoso"), "a registrant is named: {out}");
    let (_, out, _) = ferry(&config, &["state", "show", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total: u64 = doc["deferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["records"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3);
    assert!(!out.contains("contoso"));
}
