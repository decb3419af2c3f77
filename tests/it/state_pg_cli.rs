//! `ferry state migrate --to postgres://...` and `ferry state show` on a PostgreSQL state,
//! through the real binary against a throwaway cluster.

use crate::support::pg::PgCluster;
use ferry::state::{BatchCommit, LedgerState, LedgerWrite, NewDeadLetter, Store};
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// The key of the daemons (FERRY_STATE_KEY); the SQLite file has a key file with another.
const KEY: [u8; 32] = [3u8; 32];
const FILE_KEY: [u8; 32] = [5u8; 32];

fn ferry(config: &Path, args: &[&str], env: &[(&str, &str)], key: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("FERRY_STATE_KEY");
    if key {
        cmd.env("FERRY_STATE_KEY", hex::encode(KEY));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write_key_file(path: &Path, key: [u8; 32]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{}", hex::encode(key)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_state_file_to_postgres_and_show_reads_it() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("moved");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(&config, "state: st/state.db\n").unwrap();
    let file = dir.path().join("st/state.db");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    write_key_file(&ferry::state::key_file_path(&file), FILE_KEY);
    {
        let s = Store::open_with_key(&file, FILE_KEY).unwrap();
        s.commit_batch(&BatchCommit {
            pipeline: "meetings-to-events".into(),
            ledger: vec![LedgerWrite {
                sink: "event".into(),
                key: "abc==".into(),
                sf_id: Some("00U1".into()),
                hash: "h".into(),
                state: LedgerState::Written,
            }],
            dead_letters: vec![NewDeadLetter {
                sink: "event".into(),
                key: "bad==".into(),
                payload: json!({ "Subject": "x" }),
                error: "STRING_TOO_LONG: Subject".into(),
            }],
            checkpoints: vec![(
                "zoom.past_meetings".into(),
                "u1".into(),
                "2026-03-10T00:00:00Z".into(),
            )],
            subjects: Vec::new(),
        })
        .await
        .unwrap();
        // Another sink's rows, more than one statement of the copy holds (2,000), pending
        // every third (a missing id copied as NULL).
        s.commit_batch(&BatchCommit {
            pipeline: "meetings-to-events".into(),
            ledger: (0..4_500)
                .map(|i| LedgerWrite {
                    sink: "relation".into(),
                    key: format!("rel-{i}"),
                    sf_id: (i % 3 != 0).then(|| format!("0RE{i}")),
                    hash: format!("h{i}"),
                    state: if i % 3 == 0 {
                        LedgerState::Pending
                    } else {
                        LedgerState::Written
                    },
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        s.token_put("zoom:abc:refresh_token", "rt-carried-over", None)
            .await
            .unwrap();
        let now = chrono::Utc::now();
        s.inbox_put(
            "zm:1",
            "meeting.ended",
            &json!({ "event": "meeting.ended" }),
            now,
        )
        .await
        .unwrap();
        s.run_started("meetings-to-events", "r1", now)
            .await
            .unwrap();
        s.run_finished("r1", now, true, &json!({ "create": 1 }))
            .await
            .unwrap();
    }
    let env = [("PGURL", url.as_str())];

    // Without the key, the database is refused with a clear message, and no password shows.
    let (code, out) = ferry(
        &config,
        &["state", "migrate", "--to", "${PGURL}"],
        &env,
        false,
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("FERRY_STATE_KEY"), "{out}");
    assert!(!out.contains("pg-secret-pw"), "{out}");

    let (code, out) = ferry(
        &config,
        &["state", "migrate", "--to", "${PGURL}"],
        &env,
        true,
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("pg-secret-pw"), "{out}");
    assert!(
        out.contains("1 checkpoint(s), 4501 ledger row(s), 1 dead letter(s), 1 token(s)"),
        "{out}"
    );
    // A second copy into the now used database is refused.
    let (code, out) = ferry(
        &config,
        &["state", "migrate", "--to", "${PGURL}"],
        &env,
        true,
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("empty database"), "{out}");

    // ferry.yaml now names the database; `state show` reads the same state from it.
    std::fs::write(&config, "state: ${PGURL}\n").unwrap();
    let (code, out) = ferry(&config, &["state", "show", "--format", "json"], &env, true);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("pg-secret-pw"), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["checkpoints"][0]["cursor"], "2026-03-10T00:00:00Z");
    assert_eq!(doc["ledger"][0]["written"], 1);
    assert_eq!(
        (
            &doc["ledger"][1]["sink"],
            &doc["ledger"][1]["written"],
            &doc["ledger"][1]["pending"]
        ),
        (&json!("relation"), &json!(3_000), &json!(1_500))
    );
    assert_eq!(doc["dead_letters"][0]["count"], 1);
    assert_eq!(doc["inbox_depth"], 1);
    assert_eq!(doc["last_runs"][0]["run_id"], "r1");
    // The token was sealed again with the daemons' key.
    let s = Store::open_postgres_with_key(&url, KEY).unwrap();
    assert_eq!(
        s.token_get("zoom:abc:refresh_token")
            .await
            .unwrap()
            .unwrap()
            .value,
        "rt-carried-over"
    );
    // Who runs a pipeline shows in `state show`.
    s.try_acquire(
        "meetings-to-events",
        "web-2:4242:0:abcd",
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    let (code, out) = ferry(&config, &["state", "show"], &env, true);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Running now"), "{out}");
    assert!(out.contains("process 4242 on host web-2"), "{out}");
    assert!(
        out.contains("the PostgreSQL database postgres://ferry:***@"),
        "{out}"
    );
    assert!(!out.contains("pg-secret-pw"), "{out}");

    // The database gone: a clear error, still without the password.
    pg.stop_server();
    let (code, out) = ferry(&config, &["state", "show"], &env, true);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("state database"), "{out}");
    assert!(!out.contains("pg-secret-pw"), "{out}");
}

/// The subject index, its synced writes, the Zoom ledger and deferrals are copied too. The
/// index holds hashes keyed by the file's key, so a database with another key is refused
/// (nothing copied) with how to fix it; with the file's key the copy answers as the file did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_the_subject_index_and_the_zoom_state() {
    use ferry::state::{Deferral, IndexedRecord, SyncedWrite, ZoomLedgerRow, ZoomRowState};
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("moved");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(&config, "state: state.db\n").unwrap();
    let file = dir.path().join("state.db");
    write_key_file(&ferry::state::key_file_path(&file), FILE_KEY);
    let now = chrono::Utc::now();
    let pat = "pat@contoso.com";
    let s = Store::open_with_key(&file, FILE_KEY).unwrap();
    s.commit_batch(&BatchCommit {
        pipeline: "meetings".into(),
        subjects: vec![IndexedRecord {
            stream: "zoom.past_meetings".into(),
            record_key: "m1".into(),
            record_time: "2026-03-01T10:00:00Z".into(),
            subjects: vec![(s.subject_hash(pat), "participants.user_email".into())],
            writes: vec![SyncedWrite {
                sink: "event".into(),
                sobject: "Event".into(),
                sf_id: "00U1".into(),
                ledger_key: "m1".into(),
            }],
        }],
        ..BatchCommit::default()
    })
    .await
    .unwrap();
    let row = ZoomLedgerRow {
        key: "00v1".into(),
        zoom_id: Some("reg1".into()),
        values: json!({ "registrant_id": "reg1" })
            .as_object()
            .unwrap()
            .clone(),
        hash: "h1".into(),
        fields: json!({ "email": pat }).as_object().unwrap().clone(),
        params: json!({ "webinar_id": "811" }).as_object().unwrap().clone(),
        state: ZoomRowState::Written,
        updated_at: now,
    };
    s.zoom_ledger_put("cm", "webinar_registrant", std::slice::from_ref(&row))
        .await
        .unwrap();
    let wait = Deferral {
        pipeline: "cm".into(),
        sink: "registrant".into(),
        key: "00v2".into(),
        record: json!({ "Email": "sam@contoso.com" }),
        reason: "daily limit".into(),
        resource: "registrant:811:sam@contoso.com".into(),
        not_before: now + chrono::Duration::hours(8),
        deferred_at: now,
    };
    s.zoom_defer(std::slice::from_ref(&wait)).await.unwrap();
    let index = s.subject_index_find(&s.subject_hash(pat)).await.unwrap();
    assert_eq!(index.len(), 1);
    drop(s);
    let env = [("PGURL", url.as_str())];

    let (code, out) = ferry(
        &config,
        &["state", "migrate", "--to", "${PGURL}"],
        &env,
        true,
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("subject index") && out.contains("key file"),
        "{out}"
    );
    let file_key = hex::encode(FILE_KEY);
    let env = [
        ("PGURL", url.as_str()),
        ("FERRY_STATE_KEY", file_key.as_str()),
    ];
    let (code, out) = ferry(
        &config,
        &["state", "migrate", "--to", "${PGURL}"],
        &env,
        true,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "1 subject index row(s) and 1 synced write(s) (privacy requests), 1 Zoom ledger \
             row(s), 1 deferral(s)"
        ),
        "{out}"
    );
    let p = Store::open_postgres_with_key(&url, FILE_KEY).unwrap();
    assert_eq!(
        p.subject_index_find(&p.subject_hash(pat)).await.unwrap(),
        index
    );
    let got = p
        .zoom_ledger_get("cm", "webinar_registrant", &["00v1".to_string()])
        .await
        .unwrap();
    // Times go through PostgreSQL's microseconds.
    let mut expected = row.clone();
    expected.updated_at = got["00v1"].updated_at;
    assert_eq!(got["00v1"], expected);
    assert!(
        (got["00v1"].updated_at - row.updated_at)
            .num_milliseconds()
            .abs()
            < 1
    );
    let waits = p.zoom_deferrals(None).await.unwrap();
    assert_eq!(waits.len(), 1);
    assert_eq!((&waits[0].key, &waits[0].record), (&wait.key, &wait.record));
    assert_eq!(p.subject_zoom(pat).await.unwrap().len(), 1);
}
