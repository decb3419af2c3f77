//! The state store through its public API, on real files in a temporary directory: what
//! only the SQLite file has (its key file, reopening, encryption at rest, clones across
//! threads). The behaviour both backends share is checked once, on both, in
//! state_contract.rs.

use chrono::{DateTime, Utc};
use ferry::clock::ManualClock;
use ferry::state::{
    BatchCommit, LedgerState, LedgerWrite, StateError, Store, key_file_path,
    load_or_create_key_file,
};
use serde_json::json;

const KEY: [u8; 32] = [7u8; 32];

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn written(sink: &str, key: &str, id: &str, hash: &str) -> LedgerWrite {
    LedgerWrite {
        sink: sink.into(),
        key: key.into(),
        sf_id: Some(id.into()),
        hash: hash.into(),
        state: LedgerState::Written,
    }
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn migrates_from_empty_and_reopening_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/state.db");
    {
        let s = Store::open_with_key(&path, KEY).unwrap();
        assert!(s.schema_version().await.unwrap() >= 1);
        s.set_checkpoint("p", "zoom.past_meetings", "u1", "2026-03-01T00:00:00Z")
            .await
            .unwrap();
        s.commit_batch(&BatchCommit {
            pipeline: "p".into(),
            ledger: vec![written("event", "abc==", "00U1", "h1")],
            ..Default::default()
        })
        .await
        .unwrap();
        s.token_put("zoom.access", "tok-123", None).await.unwrap();
    }
    assert!(path.exists());
    let s = Store::open_with_key(&path, KEY).unwrap();
    assert_eq!(
        s.checkpoint("p", "zoom.past_meetings", "u1")
            .await
            .unwrap()
            .unwrap()
            .cursor,
        "2026-03-01T00:00:00Z"
    );
    let l = s
        .ledger_get_many("p", "event", &keys(&["abc==", "nope"]))
        .await
        .unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l["abc=="].sf_id.as_deref(), Some("00U1"));
    assert_eq!(l["abc=="].state, LedgerState::Written);
    assert_eq!(
        s.token_get("zoom.access").await.unwrap().unwrap().value,
        "tok-123"
    );
}

#[tokio::test]
async fn a_failing_inbox_event_is_retried_with_backoff_for_a_day_then_is_dead_until_retried() {
    use ferry::clock::Clock;
    use ferry::state::{INBOX_RETRY_HOURS, InboxFailure, inbox_retry_delay};
    let at = t("2026-03-15T14:40:00Z");
    let clock = ManualClock::new(at);
    let s = Store::in_memory().unwrap().with_clock(clock.clone());
    let payload = json!({ "event": "meeting.ended", "payload": { "object": { "uuid": "abc==" } } });
    assert!(
        s.inbox_put("d-1", "meeting.ended", &payload, at)
            .await
            .unwrap()
    );
    let id = s.inbox_due(at, 10).await.unwrap()[0].id;
    let mut attempts = 0;
    let mut waits = Vec::new();
    loop {
        let now = clock.now();
        assert_eq!(
            s.inbox_due(now, 10).await.unwrap().len(),
            1,
            "due at attempt {attempts}"
        );
        match s.inbox_failed(id, "Salesforce down").await.unwrap() {
            InboxFailure::Retry(next) => {
                attempts += 1;
                assert_eq!(next - now, inbox_retry_delay(attempts - 1));
                waits.push((next - now).num_seconds());
                // Not due before its time; still pending (it counts in the depth).
                assert!(
                    s.inbox_due(next - chrono::Duration::seconds(1), 10)
                        .await
                        .unwrap()
                        .is_empty()
                );
                assert_eq!(s.inbox_depth().await.unwrap(), 1);
                let c = s.inbox_counts().await.unwrap();
                assert_eq!((c.pending, c.retrying, c.dead), (0, 1, 0));
                clock.set(next);
            }
            InboxFailure::Dead => break,
        }
        assert!(attempts < 1000, "never gave up");
    }
    // Retried for the whole day, with waits that grow and are capped.
    assert!(clock.now() - at >= chrono::Duration::hours(INBOX_RETRY_HOURS));
    assert!(clock.now() - at < chrono::Duration::hours(INBOX_RETRY_HOURS + 2));
    assert_eq!(waits[0], 30);
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
    assert_eq!(*waits.last().unwrap(), 3600);
    assert!(attempts > 20, "about hourly attempts for a day: {attempts}");
    assert_eq!(s.inbox_depth().await.unwrap(), 0);
    assert!(s.inbox_due(clock.now(), 10).await.unwrap().is_empty());
    let c = s.inbox_counts().await.unwrap();
    assert_eq!((c.pending, c.retrying, c.dead), (0, 0, 1));
    let dead = s.inbox_list(true, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].state, "dead");
    assert_eq!(dead[0].last_error.as_deref(), Some("Salesforce down"));
    assert_eq!(dead[0].payload, payload);
    // An admin re-queues it: due now, with a new day of retries.
    assert!(s.inbox_retry(id).await.unwrap());
    assert!(!s.inbox_retry(id + 100).await.unwrap());
    let due = s.inbox_due(clock.now(), 10).await.unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 0));
    assert!(matches!(
        s.inbox_failed(id, "still down").await.unwrap(),
        InboxFailure::Retry(_)
    ));
    s.inbox_done(id).await.unwrap();
    assert!(
        !s.inbox_retry(id).await.unwrap(),
        "a done event is not re-queued"
    );
    assert_eq!(s.inbox_entry(id).await.unwrap().unwrap().state, "done");
}

#[tokio::test]
async fn run_history_keeps_the_last_run_per_pipeline() {
    let s = Store::in_memory().unwrap();
    s.run_started("p", "r1", t("2026-03-15T10:00:00Z"))
        .await
        .unwrap();
    s.run_finished(
        "r1",
        t("2026-03-15T10:01:00Z"),
        true,
        &json!({ "create": 3 }),
    )
    .await
    .unwrap();
    s.run_started("p", "r2", t("2026-03-15T10:15:00Z"))
        .await
        .unwrap();
    s.run_started("q", "r3", t("2026-03-15T10:16:00Z"))
        .await
        .unwrap();
    s.run_finished(
        "r3",
        t("2026-03-15T10:17:00Z"),
        false,
        &json!({ "error": "budget" }),
    )
    .await
    .unwrap();
    let last = s.last_runs().await.unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!((last[0].run_id.as_str(), last[0].ok), ("r2", None));
    assert_eq!((last[1].run_id.as_str(), last[1].ok), ("r3", Some(false)));
    assert_eq!(last[1].summary, Some(json!({ "error": "budget" })));
    assert_eq!(s.runs(Some("p"), 10).await.unwrap().len(), 2);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn tokens_are_encrypted_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let secret = "refresh-SECRET-value-4242-do-not-leak";
    let s = Store::open_with_key(&path, KEY).unwrap();
    let exp = t("2026-03-15T13:00:00Z");
    s.token_put("zoom.refresh", secret, Some(exp))
        .await
        .unwrap();
    s.token_put("zoom.refresh", &format!("{secret}-rotated"), Some(exp))
        .await
        .unwrap();
    let got = s.token_get("zoom.refresh").await.unwrap().unwrap();
    assert_eq!(got.value, format!("{secret}-rotated"));
    assert_eq!(got.expires_at, Some(exp));
    assert!(
        !format!("{got:?}").contains(secret),
        "Debug hides the value"
    );
    assert!(s.token_get("missing").await.unwrap().is_none());

    // Copy the file and its WAL while the store is open, then grep the raw bytes.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let mut raw = std::fs::read(&copy).unwrap();
    let wal = dir.path().join("state.db-wal");
    if wal.exists() {
        raw.extend(std::fs::read(&wal).unwrap());
    }
    assert!(!raw.is_empty());
    assert!(
        !contains(&raw, secret.as_bytes()),
        "token in clear text in the state file"
    );
    assert!(!contains(&raw, b"do-not-leak"));
    drop(s);
    let raw = std::fs::read(&path).unwrap();
    assert!(!contains(&raw, secret.as_bytes()));
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    Store::open_with_key(&path, KEY)
        .unwrap()
        .token_put("sf.access", "abc", None)
        .await
        .unwrap();
    let err = Store::open_with_key(&path, [9u8; 32]).unwrap_err();
    assert!(matches!(err, StateError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(!err.to_string().contains("abc"));
}

#[cfg(unix)]
#[test]
fn the_key_file_is_created_private_and_refused_when_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".ferry/state.db");
    let key_path = key_file_path(&state);
    assert_eq!(key_path, dir.path().join(".ferry/state.db.key"));
    let k1 = load_or_create_key_file(&key_path).unwrap();
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(text.trim().len(), 64);
    let k2 = load_or_create_key_file(&key_path).unwrap();
    assert_eq!(format!("{k1:?}"), "StateKey(<redacted>)");
    assert_eq!(format!("{k2:?}"), "StateKey(<redacted>)");
    // Loading again reads the same key rather than making a new one.
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), text);
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_or_create_key_file(&key_path).unwrap_err();
    assert!(matches!(err, StateError::KeyFileTooOpen { .. }), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn open_uses_the_key_file_next_to_the_state() {
    if std::env::var_os(ferry::state::STATE_KEY_ENV).is_some() {
        // The environment's key wins; the key-file path is covered by the test above.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".ferry/state.db");
    Store::open(&state)
        .unwrap()
        .token_put("t", "v", None)
        .await
        .unwrap();
    assert!(key_file_path(&state).exists());
    assert_eq!(
        Store::open(&state)
            .unwrap()
            .token_get("t")
            .await
            .unwrap()
            .unwrap()
            .value,
        "v"
    );
    std::fs::remove_file(key_file_path(&state)).unwrap();
    let err = Store::open(&state).unwrap_err();
    assert!(matches!(err, StateError::MissingKey { .. }), "{err}");
}

#[test]
fn state_keys_parse_from_hex_or_base64_and_never_echo() {
    use ferry::state::StateKey;
    assert!(StateKey::parse(&"ab".repeat(32)).is_ok());
    assert!(StateKey::parse("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").is_ok());
    let err = StateKey::parse("hunter2-not-a-key").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_share_one_store_across_threads() {
    let s = Store::in_memory().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                for j in 0..25 {
                    s.commit_batch(&BatchCommit {
                        pipeline: "p".into(),
                        ledger: vec![written("e", &format!("{i}-{j}"), "00U", "h")],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let counts = s.ledger_counts(Some("p")).await.unwrap();
    assert_eq!(counts[0].written, 100);
}
