//! The StateBackend contract, run over both backends: the SQLite file and a real PostgreSQL
//! (a throwaway cluster, see support/pg.rs). Each check gets a fresh state (a new file, a new
//! database) and may open several handles onto it, as several processes would. Time is a
//! manual clock. Then PostgreSQL's own guarantees for several daemons: leases and inbox
//! claims under contention, serialized token refreshes, concurrent migrations, a missing key.

use crate::support::pg::PgCluster;
use chrono::{DateTime, Duration, Utc};
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::state::{
    BatchCommit, Deferral, FORGOTTEN, INBOX_RETRY_HOURS, InboxFailure, IndexedRecord, LedgerState,
    LedgerWrite, NewDeadLetter, StateError, Store, SyncedWrite, ZoomLedgerRow, ZoomRowState,
    inbox_retry_delay,
};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const KEY: [u8; 32] = [7u8; 32];
const TTL: std::time::Duration = std::time::Duration::from_secs(30);

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

/// A synced record holding `emails` (by the store's keyed hash) and the (sink, ledger key)
/// writes made for it.
fn indexed(s: &Store, record: &str, emails: &[&str], writes: &[(&str, &str)]) -> IndexedRecord {
    IndexedRecord {
        stream: "zoom.past_meetings".into(),
        record_key: record.into(),
        record_time: "2026-03-01T10:00:00Z".into(),
        subjects: emails
            .iter()
            .map(|e| (s.subject_hash(e), "participants.user_email".to_string()))
            .collect(),
        writes: writes
            .iter()
            .map(|(sink, key)| SyncedWrite {
                sink: sink.to_string(),
                sobject: "Event".into(),
                sf_id: format!("00U{}", key.replace('@', "-at-")),
                ledger_key: key.to_string(),
            })
            .collect(),
    }
}

fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn zoom_row(
    key: &str,
    id: Option<&str>,
    email: &str,
    state: ZoomRowState,
    at: DateTime<Utc>,
) -> ZoomLedgerRow {
    ZoomLedgerRow {
        key: key.into(),
        zoom_id: id.map(str::to_string),
        values: object(
            json!({ "id": 811, "registrant_id": id, "join_url": "https://zoom.us/w/811" }),
        ),
        hash: format!("hash-{key}"),
        fields: object(json!({ "email": email, "first_name": "Pat" })),
        params: object(json!({ "webinar_id": "811" })),
        state,
        updated_at: at,
    }
}

fn deferral(
    pipeline: &str,
    key: &str,
    resource: &str,
    deferred: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Deferral {
    Deferral {
        pipeline: pipeline.into(),
        sink: "registrant".into(),
        key: key.into(),
        record: json!({ "Id": key, "Email": format!("{key}@contoso.com"), "n": [1, 2] }),
        reason: "daily limit".into(),
        resource: resource.into(),
        not_before: until,
        deferred_at: deferred,
    }
}

/// Where one check's state lives; `open` gives a new handle (a new connection or pool) onto
/// it, on the check's clock.
pub enum Place {
    Sqlite(PathBuf),
    Postgres(String),
}

pub struct Fresh {
    pub place: Place,
    pub clock: Arc<ManualClock>,
}

impl Fresh {
    pub fn open_with(&self, key: [u8; 32]) -> Result<Store, StateError> {
        let s = match &self.place {
            Place::Sqlite(p) => Store::open_with_key(p, key)?,
            Place::Postgres(url) => Store::open_postgres_with_key(url, key)?,
        };
        let clock: SharedClock = self.clock.clone();
        Ok(s.with_clock(clock))
    }

    pub fn open(&self) -> Store {
        self.open_with(KEY).unwrap()
    }
}

type Check = fn(Fresh) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |f| Box::pin($name(f)) as Pin<Box<dyn Future<Output = ()> + Send>>)),*]
    };
}

const CHECKS: &[(&str, Check)] = checks![
    schema_is_current,
    commit_batch_is_all_or_nothing,
    a_batch_may_name_one_row_twice,
    pending_then_written_keeps_the_id_and_clears_dead_letters,
    rewind_moves_only_later_cursors_and_reset_keeps_the_ledger,
    cache_entries_expire_at_the_injected_now,
    inbox_drops_duplicates_and_retries_with_backoff_then_dead,
    dead_letters_list_retry_and_drop,
    run_history_keeps_the_last_run_per_pipeline,
    labels_are_kept_per_scope,
    tokens_round_trip_and_a_wrong_key_is_refused,
    leases_have_one_holder_and_a_growing_fence,
    a_stale_holder_cannot_move_the_checkpoint,
    zoom_ledger_and_deferrals_round_trip,
    the_subject_index_joins_records_and_writes,
    forget_removes_one_address_everywhere,
];

static SEQ: AtomicUsize = AtomicUsize::new(0);

async fn run_all(mut fresh: impl FnMut() -> Fresh) {
    for (name, check) in CHECKS {
        eprintln!("contract: {name}");
        check(fresh()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_all(|| Fresh {
        place: Place::Sqlite(
            dir.path()
                .join(format!("s{}.db", SEQ.fetch_add(1, Ordering::SeqCst))),
        ),
        clock: ManualClock::new(t("2026-03-15T10:00:00Z")),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_on_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    run_all(|| Fresh {
        place: Place::Postgres(pg.create_db(&format!("c{}", SEQ.fetch_add(1, Ordering::SeqCst)))),
        clock: ManualClock::new(t("2026-03-15T10:00:00Z")),
    })
    .await;
}

// ---- the checks ------------------------------------------------------------------------

async fn schema_is_current(f: Fresh) {
    let s = f.open();
    assert!(s.schema_version().await.unwrap() >= 1);
    let shown = s.location();
    assert!(!shown.contains("pg-secret-pw"), "{shown}");
}

async fn commit_batch_is_all_or_nothing(f: Fresh) {
    let s = f.open();
    s.set_checkpoint("p", "st", "", "2026-03-01T00:00:00Z")
        .await
        .unwrap();
    // The second ledger row has an empty key, which the schema refuses: the first row,
    // the dead letter and the checkpoint must not be saved either.
    let batch = BatchCommit {
        pipeline: "p".into(),
        ledger: vec![
            written("event", "k1", "00U1", "h1"),
            written("event", "", "00U2", "h2"),
            written("event", "k3", "00U3", "h3"),
        ],
        dead_letters: vec![NewDeadLetter {
            sink: "event".into(),
            key: "k9".into(),
            payload: json!({ "Subject": "x" }),
            error: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
        }],
        checkpoints: vec![("st".into(), "".into(), "2026-03-02T00:00:00Z".into())],
        subjects: vec![indexed(&s, "m1", &["pat@contoso.com"], &[("event", "k1")])],
    };
    let err = s.commit_batch(&batch).await.unwrap_err();
    assert!(
        matches!(err, StateError::Sqlite { .. } | StateError::Postgres { .. }),
        "{err}"
    );
    assert!(
        s.ledger_get_many("p", "event", &keys(&["k1", "k3"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.deadletters(None).await.unwrap().is_empty());
    let pat = s.subject_hash("pat@contoso.com");
    assert!(s.subject_index_find(&pat).await.unwrap().is_empty());
    assert_eq!(
        s.checkpoint("p", "st", "").await.unwrap().unwrap().cursor,
        "2026-03-01T00:00:00Z"
    );
    let mut good = batch.clone();
    good.ledger.remove(1);
    s.commit_batch(&good).await.unwrap();
    let got = s
        .ledger_get_many("p", "event", &keys(&["k1", "k3", "nope"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got["k3"].sf_id.as_deref(), Some("00U3"));
    assert_eq!(s.deadletters(Some("p")).await.unwrap().len(), 1);
    assert_eq!(s.subject_index_find(&pat).await.unwrap().len(), 1);
    assert_eq!(
        s.checkpoint("p", "st", "").await.unwrap().unwrap().cursor,
        "2026-03-02T00:00:00Z"
    );
    let counts = s.ledger_counts(None).await.unwrap();
    assert_eq!(
        (counts.len(), counts[0].written, counts[0].pending),
        (1, 2, 0)
    );
}

/// A batch (and a cache fill, and a pending list) may name one ledger key, one address of
/// a record or one write twice: saved as if row by row, the later wins and an id either
/// carried is kept. On PostgreSQL each of these is one statement for the whole list, where
/// a row named twice would be refused ("ON CONFLICT DO UPDATE command cannot affect row a
/// second time") unless the rows are merged first.
async fn a_batch_may_name_one_row_twice(f: Fresh) {
    let s = f.open();
    s.deadletters_add(
        "p",
        &[NewDeadLetter {
            sink: "event".into(),
            key: "k1".into(),
            payload: json!({}),
            error: "UNABLE_TO_LOCK_ROW".into(),
        }],
    )
    .await
    .unwrap();
    let mut again = written("event", "k1", "ignored", "h2");
    again.sf_id = None;
    again.state = LedgerState::Pending;
    let mut twice = indexed(
        &s,
        "m1",
        &["pat@contoso.com", "pat@contoso.com"],
        &[("event", "k1")],
    );
    let mut later_write = twice.writes[0].clone();
    later_write.sf_id = String::new();
    later_write.sobject = "Event2".into();
    twice.writes.push(later_write);
    s.commit_batch(&BatchCommit {
        pipeline: "p".into(),
        ledger: vec![
            written("event", "k1", "00U1", "h1"),
            written("event", "k2", "00U2", "h1"),
            again,
        ],
        subjects: vec![twice.clone(), twice],
        checkpoints: vec![("st".into(), "".into(), "2026-03-02T00:00:00Z".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let got = s
        .ledger_get_many("p", "event", &keys(&["k1", "k2"]))
        .await
        .unwrap();
    let k1 = &got["k1"];
    assert_eq!(
        (k1.state, k1.sf_id.as_deref(), k1.hash.as_str()),
        (LedgerState::Pending, Some("00U1"), "h2")
    );
    assert_eq!(got["k2"].sf_id.as_deref(), Some("00U2"));
    // k1 was written once in the batch: its dead letter is resolved.
    assert!(s.deadletters(Some("p")).await.unwrap().is_empty());
    let pat = s.subject_hash("pat@contoso.com");
    let found = s.subject_index_find(&pat).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    // The write named twice: the later sObject, the id only the earlier carried.
    assert_eq!(
        (found[0].sobject.as_str(), found[0].sf_id.as_str()),
        ("Event2", "00Uk1")
    );
    s.ledger_mark_pending(
        "p",
        "rel",
        &[("r1".into(), "a".into()), ("r1".into(), "b".into())],
    )
    .await
    .unwrap();
    assert_eq!(
        s.ledger_get_many("p", "rel", &keys(&["r1"])).await.unwrap()["r1"].hash,
        "b"
    );
    let until = f.clock.now() + chrono::Duration::hours(1);
    s.cache_put_many(
        "contact",
        &[
            ("pat@contoso.com".into(), json!({ "Id": "003A" })),
            ("pat@contoso.com".into(), json!({ "Id": "003B" })),
        ],
        until,
    )
    .await
    .unwrap();
    let cached = s
        .cache_get_many("contact", &keys(&["pat@contoso.com"]), f.clock.now())
        .await
        .unwrap();
    assert_eq!(cached["pat@contoso.com"]["Id"], "003B");
}

async fn pending_then_written_keeps_the_id_and_clears_dead_letters(f: Fresh) {
    let s = f.open();
    s.ledger_mark_pending("p", "rel", &[("k1".into(), "h1".into())])
        .await
        .unwrap();
    let e = &s.ledger_get_many("p", "rel", &keys(&["k1"])).await.unwrap()["k1"];
    assert_eq!((e.state, e.sf_id.as_deref()), (LedgerState::Pending, None));
    s.deadletters_add(
        "p",
        &[NewDeadLetter {
            sink: "rel".into(),
            key: "k1".into(),
            payload: json!({}),
            error: "UNABLE_TO_LOCK_ROW".into(),
        }],
    )
    .await
    .unwrap();
    s.commit_batch(&BatchCommit {
        pipeline: "p".into(),
        ledger: vec![written("rel", "k1", "0RE1", "h1")],
        ..Default::default()
    })
    .await
    .unwrap();
    let e = &s.ledger_get_many("p", "rel", &keys(&["k1"])).await.unwrap()["k1"];
    assert_eq!(
        (e.state, e.sf_id.as_deref()),
        (LedgerState::Written, Some("0RE1"))
    );
    assert!(s.deadletters(Some("p")).await.unwrap().is_empty());
    s.ledger_mark_pending("p", "rel", &[("k1".into(), "h2".into())])
        .await
        .unwrap();
    let e = &s.ledger_get_many("p", "rel", &keys(&["k1"])).await.unwrap()["k1"];
    assert_eq!(
        (e.state, e.sf_id.as_deref(), e.hash.as_str()),
        (LedgerState::Pending, Some("0RE1"), "h2")
    );
}

async fn rewind_moves_only_later_cursors_and_reset_keeps_the_ledger(f: Fresh) {
    let s = f.open();
    for (p, st, part, c) in [
        ("p", "a", "u1", "2026-03-10T00:00:00Z"),
        ("p", "a", "u2", "2026-02-01T00:00:00Z"),
        ("p", "b", "", "2026-03-12T08:00:00+02:00"),
        ("p", "c", "", "not-a-time"),
        ("other", "a", "", "2026-03-10T00:00:00Z"),
    ] {
        s.set_checkpoint(p, st, part, c).await.unwrap();
    }
    assert_eq!(s.rewind("p", t("2026-03-01T00:00:00Z")).await.unwrap(), 3);
    let cur = async |p: &str, st: &str, part: &str| {
        s.checkpoint(p, st, part).await.unwrap().map(|c| c.cursor)
    };
    assert_eq!(
        t(&cur("p", "a", "u1").await.unwrap()),
        t("2026-03-01T00:00:00Z")
    );
    assert_eq!(
        cur("p", "a", "u2").await.as_deref(),
        Some("2026-02-01T00:00:00Z")
    );
    assert_eq!(
        cur("p", "c", "").await,
        None,
        "a non-time cursor is removed"
    );
    assert_eq!(
        cur("other", "a", "").await.as_deref(),
        Some("2026-03-10T00:00:00Z")
    );
    let all = s.checkpoints(Some("p")).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|c| (c.stream.as_str(), c.partition.as_str()))
            .collect::<Vec<_>>(),
        [("a", "u1"), ("a", "u2"), ("b", "")]
    );
    s.commit_batch(&BatchCommit {
        pipeline: "p".into(),
        ledger: vec![written("event", "k", "00U", "h")],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.reset("p").await.unwrap(), 3);
    assert!(s.checkpoints(Some("p")).await.unwrap().is_empty());
    assert_eq!(s.checkpoints(None).await.unwrap().len(), 1);
    assert_eq!(s.reset_ledger("p").await.unwrap(), 1);
}

async fn cache_entries_expire_at_the_injected_now(f: Fresh) {
    let s = f.open();
    let now = t("2026-03-15T12:00:00Z");
    s.cache_put_many(
        "scope",
        &[
            ("pat@contoso.com".into(), json!({ "Id": "003A" })),
            ("sam@x.com".into(), json!({ "none": true })),
        ],
        now + Duration::hours(24),
    )
    .await
    .unwrap();
    let k = keys(&["pat@contoso.com", "sam@x.com", "unknown@x.com"]);
    let hit = s.cache_get_many("scope", &k, now).await.unwrap();
    assert_eq!(hit.len(), 2);
    assert_eq!(hit["pat@contoso.com"]["Id"], "003A");
    assert!(s.cache_get_many("other", &k, now).await.unwrap().is_empty());
    let later = now + Duration::hours(24);
    assert!(
        s.cache_get_many("scope", &k, later)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.cache_purge(now).await.unwrap(), 0);
    assert_eq!(s.cache_purge(later).await.unwrap(), 2);
    s.cache_put_many("x", &[("a".into(), json!(1))], later)
        .await
        .unwrap();
    assert_eq!(s.cache_clear_scope("x").await.unwrap(), 1);
}

async fn inbox_drops_duplicates_and_retries_with_backoff_then_dead(f: Fresh) {
    let s = f.open();
    let clock = f.clock.clone();
    let at = clock.now();
    let payload = json!({ "event": "meeting.ended", "payload": { "object": { "uuid": "abc==" } } });
    assert!(
        s.inbox_put("d-1", "meeting.ended", &payload, at)
            .await
            .unwrap()
    );
    assert!(
        !s.inbox_put("d-1", "meeting.ended", &payload, at)
            .await
            .unwrap()
    );
    assert!(
        s.inbox_put("d-2", "meeting.ended", &payload, at)
            .await
            .unwrap()
    );
    assert_eq!(s.inbox_depth().await.unwrap(), 2);
    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].payload, payload);
    s.inbox_done(pending[1].id).await.unwrap();
    assert!(
        !s.inbox_put("d-2", "meeting.ended", &payload, at)
            .await
            .unwrap()
    );

    let id = s.inbox_due(at, 10).await.unwrap()[0].id;
    let mut attempts = 0;
    loop {
        let now = clock.now();
        assert_eq!(
            s.inbox_due(now, 10).await.unwrap().len(),
            1,
            "attempt {attempts}"
        );
        match s.inbox_failed(id, "Salesforce down").await.unwrap() {
            InboxFailure::Retry(next) => {
                assert_eq!(next - now, inbox_retry_delay(attempts));
                attempts += 1;
                assert!(
                    s.inbox_due(next - Duration::seconds(1), 10)
                        .await
                        .unwrap()
                        .is_empty()
                );
                let c = s.inbox_counts().await.unwrap();
                assert_eq!((c.pending, c.retrying, c.dead), (0, 1, 0));
                clock.set(next);
            }
            InboxFailure::Dead => break,
        }
        assert!(attempts < 1000, "never gave up");
    }
    assert!(clock.now() - at >= Duration::hours(INBOX_RETRY_HOURS));
    let c = s.inbox_counts().await.unwrap();
    assert_eq!((c.pending, c.retrying, c.dead), (0, 0, 1));
    let dead = s.inbox_list(true, 10).await.unwrap();
    assert_eq!((dead.len(), dead[0].state.as_str()), (1, "dead"));
    assert_eq!(dead[0].last_error.as_deref(), Some("Salesforce down"));
    assert_eq!(s.inbox_list(false, 10).await.unwrap().len(), 2);
    assert!(s.inbox_retry(id).await.unwrap());
    assert!(!s.inbox_retry(id + 100).await.unwrap());
    let due = s.inbox_due(clock.now(), 10).await.unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 0));
    s.inbox_done(id).await.unwrap();
    assert!(!s.inbox_retry(id).await.unwrap());
    assert_eq!(s.inbox_entry(id).await.unwrap().unwrap().state, "done");
    let purged = s
        .inbox_purge(clock.now() + Duration::days(1), clock.now())
        .await
        .unwrap();
    assert_eq!(purged, 2);
}

async fn dead_letters_list_retry_and_drop(f: Fresh) {
    let s = f.open();
    let start = f.clock.now();
    let letter = |key: &str, err: &str| NewDeadLetter {
        sink: "event".into(),
        key: key.into(),
        payload: json!({ "Subject": key }),
        error: err.into(),
    };
    s.deadletters_add("p", &[letter("k1", "too long"), letter("k2", "locked")])
        .await
        .unwrap();
    s.deadletters_add("q", &[letter("k1", "other pipeline")])
        .await
        .unwrap();
    f.clock.advance(std::time::Duration::from_secs(60));
    s.deadletters_add("p", &[letter("k1", "too long again")])
        .await
        .unwrap();
    let p = s.deadletters(Some("p")).await.unwrap();
    assert_eq!(p.len(), 2, "same record updates its letter");
    let k1 = p.iter().find(|d| d.key == "k1").unwrap();
    assert_eq!((k1.attempts, k1.error.as_str()), (2, "too long again"));
    assert_eq!(k1.created_at, start);
    assert_eq!(k1.updated_at, start + Duration::seconds(60));
    assert_eq!(
        s.deadletter(k1.id).await.unwrap().unwrap().payload,
        json!({ "Subject": "k1" })
    );
    assert_eq!(s.deadletters_mark_retry(&[k1.id, 9999]).await.unwrap(), 1);
    let due = s.deadletters_due("p").await.unwrap();
    assert!(due.len() == 1 && due[0].retry_requested);
    s.deadletter_retry_failed(k1.id, "still too long")
        .await
        .unwrap();
    assert!(s.deadletters_due("p").await.unwrap().is_empty());
    assert_eq!(s.deadletter(k1.id).await.unwrap().unwrap().attempts, 3);
    assert_eq!(s.deadletters_mark_retry_all(Some("q")).await.unwrap(), 1);
    let counts = s.deadletter_counts().await.unwrap();
    assert_eq!(
        counts
            .iter()
            .map(|c| (c.pipeline.as_str(), c.count, c.retry_requested))
            .collect::<Vec<_>>(),
        [("p", 2, 0), ("q", 1, 1)]
    );
    assert_eq!(s.deadletters_drop(&[k1.id]).await.unwrap(), 1);
    assert_eq!(s.deadletters_drop_all(Some("p")).await.unwrap(), 1);
    assert_eq!(s.deadletters(None).await.unwrap().len(), 1);
}

async fn run_history_keeps_the_last_run_per_pipeline(f: Fresh) {
    let s = f.open();
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
    s.run_trigger("r2", "webhook").await.unwrap();
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
    s.run_stopped("r3", "the daily API budget is spent")
        .await
        .unwrap();
    let last = s.last_runs().await.unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!((last[0].run_id.as_str(), last[0].ok), ("r2", None));
    assert_eq!(last[0].trigger.as_deref(), Some("webhook"));
    assert_eq!((last[1].run_id.as_str(), last[1].ok), ("r3", Some(false)));
    assert_eq!(last[1].summary, Some(json!({ "error": "budget" })));
    assert_eq!(
        last[1].stopped.as_deref(),
        Some("the daily API budget is spent")
    );
    let runs = s.runs(Some("p"), 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["r2", "r1"]
    );
    assert_eq!(s.runs(None, 1).await.unwrap().len(), 1);
}

async fn labels_are_kept_per_scope(f: Fresh) {
    let s = f.open();
    let now = f.clock.now();
    s.set_labels(
        "zoom.users",
        &[
            ("u1".into(), "pat@example.com".into()),
            ("u2".into(), "x".repeat(400)),
            ("".into(), "nobody@example.com".into()),
        ],
        now,
    )
    .await
    .unwrap();
    s.set_labels(
        "zoom.users",
        &[("u1".into(), "pat.new@example.com".into())],
        now,
    )
    .await
    .unwrap();
    let l = s.labels("zoom.users").await.unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l["u1"], "pat.new@example.com");
    assert_eq!(l["u2"].chars().count(), ferry::state::MAX_LABEL_CHARS);
    assert!(s.labels("other").await.unwrap().is_empty());
}

async fn tokens_round_trip_and_a_wrong_key_is_refused(f: Fresh) {
    let s = f.open();
    let exp = t("2026-03-15T11:00:00Z");
    s.token_put("zoom:abc:refresh_token", "rt-secret-1", Some(exp))
        .await
        .unwrap();
    let got = s
        .token_get("zoom:abc:refresh_token")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.value.as_str(), got.expires_at),
        ("rt-secret-1", Some(exp))
    );
    assert!(!format!("{got:?}").contains("rt-secret-1"));
    s.token_put("zoom:abc:refresh_token", "rt-secret-2", None)
        .await
        .unwrap();
    let other = f.open();
    assert_eq!(
        other
            .token_get("zoom:abc:refresh_token")
            .await
            .unwrap()
            .unwrap()
            .value,
        "rt-secret-2",
        "another handle (another daemon) reads what this one stored"
    );
    assert!(s.token_delete("zoom:abc:refresh_token").await.unwrap());
    assert!(!s.token_delete("zoom:abc:refresh_token").await.unwrap());
    assert!(
        s.token_get("zoom:abc:refresh_token")
            .await
            .unwrap()
            .is_none()
    );
    // A handle with another key is refused (at open for a file, at first use for a database).
    let wrong = match f.open_with([9u8; 32]) {
        Err(e) => e.to_string(),
        Ok(w) => w.token_get("x").await.unwrap_err().to_string(),
    };
    assert!(wrong.contains("key"), "{wrong}");
    assert!(!wrong.contains("pg-secret-pw"), "{wrong}");
}

async fn leases_have_one_holder_and_a_growing_fence(f: Fresh) {
    let (a, b) = (f.open(), f.open());
    let t0 = f.clock.now();
    let la = a
        .try_acquire("p", "host-a:1:0:aa", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((la.fence, la.expires_at), (1, t0 + Duration::seconds(30)));
    let held = b
        .try_acquire("p", "host-b:2:0:bb", TTL)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((held.holder.as_str(), held.since), ("host-a:1:0:aa", t0));
    assert_eq!(b.lease_holder("p").await.unwrap(), Some(held.clone()));
    assert!(
        b.try_acquire("q", "host-b:2:0:bb", TTL)
            .await
            .unwrap()
            .is_ok()
    );
    // Renewed by its holder; then it lapses when not renewed.
    f.clock.advance(std::time::Duration::from_secs(20));
    let la = a.renew(&la, TTL).await.unwrap().unwrap();
    assert_eq!(la.expires_at, t0 + Duration::seconds(50));
    f.clock.advance(std::time::Duration::from_secs(29));
    assert!(
        b.try_acquire("p", "host-b:2:0:bb", TTL)
            .await
            .unwrap()
            .is_err()
    );
    f.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(b.lease_holder("p").await.unwrap(), None, "expired");
    let lb = b
        .try_acquire("p", "host-b:2:0:bb", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lb.fence, 2);
    // The old holder cannot renew or release the new holder's lease.
    assert!(a.renew(&la, TTL).await.unwrap().is_err());
    a.release(&la).await.unwrap();
    assert_eq!(
        a.lease_holder("p").await.unwrap().map(|h| h.holder),
        Some("host-b:2:0:bb".to_string())
    );
    // Taken over from a holder known to be gone: only while it is still that holder's.
    let was = a.lease_holder("p").await.unwrap().unwrap();
    let lc = a
        .take_over(&was, "host-a:3:0:cc", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lc.fence, 3);
    assert!(
        b.take_over(&was, "host-b:4:0:dd", TTL)
            .await
            .unwrap()
            .is_err()
    );
    a.release(&lc).await.unwrap();
    assert_eq!(b.lease_holder("p").await.unwrap(), None);
    assert_eq!(
        b.try_acquire("p", "host-b:2:0:bb", TTL)
            .await
            .unwrap()
            .unwrap()
            .fence,
        4,
        "the fencing number survives a release"
    );
}

async fn a_stale_holder_cannot_move_the_checkpoint(f: Fresh) {
    let (a, b) = (f.open(), f.open());
    let la = a
        .try_acquire("p", "host-a:1:0:aa", TTL)
        .await
        .unwrap()
        .unwrap();
    let batch = |k: &str, c: &str| BatchCommit {
        pipeline: "p".into(),
        ledger: vec![written("event", k, &format!("00U{k}"), "h")],
        dead_letters: Vec::new(),
        checkpoints: vec![("st".into(), String::new(), c.into())],
        subjects: vec![indexed(
            &a,
            k,
            &[&format!("{k}@contoso.com")],
            &[("event", k)],
        )],
    };
    a.commit_batch_fenced(&batch("k1", "c1"), Some(&la))
        .await
        .unwrap();
    // A pauses past its lease; B takes the pipeline over and commits.
    f.clock.advance(std::time::Duration::from_secs(31));
    let lb = b
        .try_acquire("p", "host-b:2:0:bb", TTL)
        .await
        .unwrap()
        .unwrap();
    b.commit_batch_fenced(&batch("k2", "c2"), Some(&lb))
        .await
        .unwrap();
    // A wakes up and commits its stale batch: the ledger row is kept, the checkpoint is not.
    let err = a
        .commit_batch_fenced(&batch("k3", "c3"), Some(&la))
        .await
        .unwrap_err();
    match &err {
        StateError::LeaseLost { pipeline, now } => {
            assert_eq!(
                (pipeline.as_str(), now.holder.as_str()),
                ("p", "host-b:2:0:bb")
            );
        }
        other => panic!("expected LeaseLost, got {other}"),
    }
    assert_eq!(
        b.checkpoint("p", "st", "").await.unwrap().unwrap().cursor,
        "c2"
    );
    let got = b
        .ledger_get_many("p", "event", &keys(&["k1", "k2", "k3"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 3, "what the services acknowledged is recorded");
    // So is the subject index of what was written: a privacy request still finds it.
    let k3 = b
        .subject_index_find(&b.subject_hash("k3@contoso.com"))
        .await
        .unwrap();
    assert_eq!(k3.len(), 1, "{k3:?}");
    assert_eq!(
        (k3[0].sink.as_str(), k3[0].ledger_key.as_str()),
        ("event", "k3")
    );
}

/// The Zoom ledger keeps a key's Zoom id and what was written, upserts, names each id's
/// owner; deferrals wait in order, are replaced per key, counted per limit and dropped.
async fn zoom_ledger_and_deferrals_round_trip(f: Fresh) {
    let (s, other) = (f.open(), f.open());
    let now = f.clock.now();
    let obj = "webinar_registrant";
    s.zoom_ledger_put(
        "p",
        obj,
        &[
            zoom_row(
                "k1",
                Some("r1"),
                "pat@contoso.com",
                ZoomRowState::Written,
                now,
            ),
            zoom_row("k2", None, "sam@contoso.com", ZoomRowState::Pending, now),
        ],
    )
    .await
    .unwrap();
    let got = other
        .zoom_ledger_get("p", obj, &keys(&["k1", "k2", "k3"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got["k1"],
        zoom_row(
            "k1",
            Some("r1"),
            "pat@contoso.com",
            ZoomRowState::Written,
            now
        )
    );
    assert_eq!(got["k2"].state, ZoomRowState::Pending);
    assert!(
        other
            .zoom_ledger_get("q", obj, &keys(&["k1"]))
            .await
            .unwrap()
            .is_empty()
    );
    // The create's answer arrives: the pending row becomes written with its id.
    f.clock.advance(std::time::Duration::from_secs(60));
    let later = f.clock.now();
    s.zoom_ledger_put(
        "p",
        obj,
        &[zoom_row(
            "k2",
            Some("r2"),
            "sam@contoso.com",
            ZoomRowState::Written,
            later,
        )],
    )
    .await
    .unwrap();
    let got = other
        .zoom_ledger_get("p", obj, &keys(&["k2"]))
        .await
        .unwrap();
    assert_eq!(
        (
            got["k2"].zoom_id.as_deref(),
            got["k2"].state,
            got["k2"].updated_at
        ),
        (Some("r2"), ZoomRowState::Written, later)
    );
    let owners = other
        .zoom_ledger_owners(obj, &keys(&["r1", "r2", "r9"]))
        .await
        .unwrap();
    assert_eq!(owners.len(), 2);
    assert_eq!(owners["r1"], ("p".to_string(), "k1".to_string()));
    assert!(
        other
            .zoom_ledger_owners("meeting", &keys(&["r1"]))
            .await
            .unwrap()
            .is_empty()
    );
    // A row larger than the state keeps is refused, and nothing of it is saved.
    let mut big = zoom_row(
        "k4",
        Some("r4"),
        "x@contoso.com",
        ZoomRowState::Written,
        now,
    );
    big.fields
        .insert("notes".into(), json!("x".repeat(300 * 1024)));
    assert!(s.zoom_ledger_put("p", obj, &[big]).await.is_err());
    assert!(
        s.zoom_ledger_get("p", obj, &keys(&["k4"]))
            .await
            .unwrap()
            .is_empty()
    );

    let h = |n: i64| now + Duration::hours(n);
    s.zoom_defer(&[
        deferral("p", "a", "host:h1@acme.com", h(-2), h(10)),
        deferral("p", "b", "registrant:811:b@contoso.com", h(-1), h(12)),
        deferral("q", "c", "host:h1@acme.com", h(-3), h(10)),
    ])
    .await
    .unwrap();
    let all = other.zoom_deferrals(None).await.unwrap();
    let order: Vec<&str> = all.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(order, ["c", "a", "b"], "oldest first");
    assert_eq!(all[1], deferral("p", "a", "host:h1@acme.com", h(-2), h(10)));
    // Deferred again: the record and its time are replaced, when it was first held is kept.
    s.zoom_defer(&[deferral("p", "a", "host:h1@acme.com", h(5), h(34))])
        .await
        .unwrap();
    let p = other.zoom_deferrals(Some("p")).await.unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].key.as_str(), p[0].deferred_at, p[0].not_before),
        ("a", h(-2), h(34))
    );
    let summary = other.zoom_deferral_summary(None).await.unwrap();
    assert_eq!(summary.len(), 3, "{summary:?}");
    assert!(
        !serde_json::to_string(&summary)
            .unwrap()
            .contains("b@contoso.com")
    );
    let reg = summary.iter().find(|d| d.limit == "registrant").unwrap();
    assert_eq!(
        (reg.pipeline.as_str(), reg.records, reg.host.as_str()),
        ("p", 1, "")
    );
    assert_eq!(
        other.zoom_deferral_summary(Some("q")).await.unwrap()[0].host,
        "h1@acme.com"
    );
    s.zoom_undefer("p", "registrant", &keys(&["a", "nope"]))
        .await
        .unwrap();
    let left: Vec<String> = other
        .zoom_deferrals(None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(left, ["c", "b"]);
}

/// The subject index keeps one row per address and one per write of a record, joined on
/// read; a rerun adds nothing; the keyed hash ignores case and blanks.
async fn the_subject_index_joins_records_and_writes(f: Fresh) {
    let (s, other) = (f.open(), f.open());
    let h = s.subject_hash(" Pat@Contoso.COM");
    assert_eq!(h, other.subject_hash("pat@contoso.com"));
    assert_eq!(h.len(), 64);
    assert_ne!(h, s.subject_hash("sam@contoso.com"));
    let mut early = indexed(&s, "m0", &["pat@contoso.com"], &[]);
    early.record_time = "2026-02-01T09:00:00Z".into();
    let batch = BatchCommit {
        pipeline: "meetings".into(),
        subjects: vec![
            indexed(
                &s,
                "m1",
                &["pat@contoso.com", "sam@contoso.com"],
                &[("relation", "m1|pat"), ("event", "m1")],
            ),
            early,
            indexed(&s, "m2", &["sam@contoso.com"], &[("event", "m2")]),
            // Nobody's record: nothing is kept for it.
            indexed(&s, "m3", &[], &[("event", "m3")]),
        ],
        ..BatchCommit::default()
    };
    s.commit_batch(&batch).await.unwrap();
    s.commit_batch(&batch).await.unwrap();
    let pat = other.subject_index_find(&h).await.unwrap();
    let rows: Vec<(&str, &str, &str)> = pat
        .iter()
        .map(|e| {
            (
                e.record_key.as_str(),
                e.sink.as_str(),
                e.ledger_key.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("m0", "", ""),
            ("m1", "event", "m1"),
            ("m1", "relation", "m1|pat")
        ]
    );
    assert!(
        pat.iter().all(|e| e.hash == h
            && e.pipeline == "meetings"
            && e.role == "participants.user_email")
    );
    assert_eq!(pat[1].sf_id, "00Um1");
    let sam = other
        .subject_index_find(&other.subject_hash("sam@contoso.com"))
        .await
        .unwrap();
    assert_eq!(sam.len(), 3, "{sam:?}");
    // A later write without an id keeps the id an earlier one recorded.
    let mut again = indexed(&s, "m2", &["sam@contoso.com"], &[("event", "m2")]);
    again.writes[0].sf_id = String::new();
    s.commit_batch(&BatchCommit {
        pipeline: "meetings".into(),
        subjects: vec![again],
        ..BatchCommit::default()
    })
    .await
    .unwrap();
    let sam = other
        .subject_index_find(&other.subject_hash("sam@contoso.com"))
        .await
        .unwrap();
    assert!(
        sam.iter()
            .any(|e| e.record_key == "m2" && e.sf_id == "00Um2"),
        "{sam:?}"
    );
}

const PAT: &str = "pat@contoso.com";

/// One person (and a colleague) in every place of the state an address can reach.
async fn seed_one_person(s: &Store, now: DateTime<Utc>) {
    s.commit_batch(&BatchCommit {
        pipeline: "meetings".into(),
        subjects: vec![
            indexed(
                s,
                "m1",
                &[PAT, "sam@acme.com"],
                &[("event", "m1"), ("relation", "m1|pat@contoso.com")],
            ),
            indexed(s, "m2", &[PAT], &[("event", "m2")]),
            indexed(s, "Pat@Contoso.com|811", &["sam@acme.com"], &[]),
        ],
        ..BatchCommit::default()
    })
    .await
    .unwrap();
    s.cache_put_many(
        "contact",
        &[
            (PAT.into(), json!({ "Id": "003A" })),
            ("sam@acme.com".into(), json!({ "Id": "003B" })),
        ],
        now + Duration::days(1),
    )
    .await
    .unwrap();
    s.set_labels(
        "zoom_user",
        &[
            ("u1".into(), "Pat@Contoso.com".into()),
            ("u2".into(), "sam@acme.com".into()),
        ],
        now,
    )
    .await
    .unwrap();
    s.inbox_put("d1", "meeting.ended", &json!({ "host": PAT }), now)
        .await
        .unwrap();
    for e in s.inbox_due(now, 10).await.unwrap() {
        s.inbox_done(e.id).await.unwrap();
    }
    s.inbox_put(
        "d2",
        "meeting.ended",
        &json!({ "host": "PAT@contoso.com" }),
        now,
    )
    .await
    .unwrap();
    s.deadletters_add(
        "meetings",
        &[
            NewDeadLetter {
                sink: "contact".into(),
                key: "k-pat".into(),
                payload: json!({ "Email": PAT }),
                error: "DUPLICATE_VALUE".into(),
            },
            NewDeadLetter {
                sink: "event".into(),
                key: "k-both".into(),
                payload: json!({ "To": PAT, "Cc": "sam@acme.com" }),
                error: "INVALID_EMAIL_ADDRESS".into(),
            },
        ],
    )
    .await
    .unwrap();
    s.run_started("meetings", "r1", now).await.unwrap();
    s.run_finished(
        "r1",
        now,
        false,
        &json!({ "error": format!("bad address {PAT}") }),
    )
    .await
    .unwrap();
    s.zoom_ledger_put(
        "cm",
        "webinar_registrant",
        &[zoom_row(
            "00v1",
            Some("reg1"),
            PAT,
            ZoomRowState::Written,
            now,
        )],
    )
    .await
    .unwrap();
    s.zoom_defer(&[deferral(
        "cm",
        "pat",
        &format!("registrant:811:{PAT}"),
        now,
        now + Duration::hours(8),
    )])
    .await
    .unwrap();
}

/// Forgetting finds the address in every place, deletes or redacts it there, leaves others'
/// rows joined and the Zoom ledger's identity kept, and writes an audit line without it.
async fn forget_removes_one_address_everywhere(f: Fresh) {
    let s = f.open();
    let now = f.clock.now();
    seed_one_person(&s, now).await;
    let h = s.subject_hash(PAT);
    let scan = s.subject_scan(PAT, &h).await.unwrap();
    let mut areas: Vec<&str> = scan.iter().map(|h| h.area.as_str()).collect();
    areas.dedup();
    assert_eq!(
        areas,
        [
            "subject index",
            "synced writes",
            "lookup cache",
            "webhook inbox",
            "dead letters",
            "run history",
            "labels",
            "Zoom ledger",
            "Zoom deferrals"
        ],
        "{scan:?}"
    );
    assert!(scan.iter().all(|h| !h.row.contains(PAT)), "{scan:?}");
    assert_eq!(s.subject_zoom(PAT).await.unwrap().len(), 2);

    let report = s.subject_forget(PAT, &h).await.unwrap();
    assert!(report.remaining.is_empty(), "{:?}", report.remaining);
    // Deleted: 2 index rows, m2's write, a cache entry, a label, one person's dead letter,
    // the deferral (a finished event's payload is emptied when it is done). Redacted: sam's
    // record key, the relation's ledger key, the pending event, the shared dead letter, the
    // run, the Zoom ledger row.
    assert_eq!((report.deleted, report.redacted), (7, 6), "{report:?}");
    assert_eq!(report.hash_prefix, h[..12]);
    assert!(s.subject_scan(PAT, &h).await.unwrap().is_empty());
    assert!(s.subject_zoom(PAT).await.unwrap().is_empty());
    assert!(s.subject_index_find(&h).await.unwrap().is_empty());
    let sam = s
        .subject_index_find(&s.subject_hash("sam@acme.com"))
        .await
        .unwrap();
    let rows: Vec<(&str, &str)> = sam
        .iter()
        .map(|e| (e.record_key.as_str(), e.ledger_key.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("[forgotten]|811", ""),
            ("m1", "m1"),
            ("m1", "m1|[forgotten]")
        ]
    );
    // The pending event still runs, without the address; the shared letter stays redacted.
    let events = s.inbox_list(false, 10).await.unwrap();
    let pending = events.iter().find(|e| e.delivery_id == "d2").unwrap();
    assert_eq!(pending.state, "pending");
    assert_eq!(pending.payload, json!({ "host": FORGOTTEN }));
    let letters = s.deadletters(None).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].payload,
        json!({ "To": FORGOTTEN, "Cc": "sam@acme.com" })
    );
    assert_eq!(s.labels("zoom_user").await.unwrap().len(), 1);
    let zoom = s
        .zoom_ledger_get("cm", "webinar_registrant", &keys(&["00v1"]))
        .await
        .unwrap();
    assert_eq!(
        (zoom["00v1"].zoom_id.as_deref(), zoom["00v1"].hash.as_str()),
        (Some("reg1"), "hash-00v1")
    );
    assert!(zoom["00v1"].fields.values().all(|v| v == FORGOTTEN));
    assert!(s.zoom_deferrals(None).await.unwrap().is_empty());
    let audit = s.runs(Some(ferry::state::AUDIT_PIPELINE), 5).await.unwrap();
    assert_eq!(audit.len(), 1);
    let text = serde_json::to_string(&audit[0]).unwrap();
    assert!(
        text.contains(&h[..12]) && !text.to_lowercase().contains(PAT),
        "{text}"
    );
}

// ---- PostgreSQL with several daemons ---------------------------------------------------

/// The files of every table, index and TOAST table of the state (`public` schema) of `db`.
fn table_files(pg: &PgCluster, db: &str) -> Vec<PathBuf> {
    pg.psql(
        db,
        "SELECT pg_relation_filepath(oid) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'i')
         UNION SELECT pg_relation_filepath(reltoastrelid) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND reltoastrelid <> 0",
    )
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| pg.data_dir().join(l.trim()))
    .collect()
}

/// Which of `files` hold `needle` (lowercase), ignoring ASCII case.
fn files_holding(files: &[PathBuf], needle: &str) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_default().to_ascii_lowercase();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .cloned()
        .collect()
}

/// On PostgreSQL, after a forget no row of any table holds the address, and neither do the
/// table files on disk (dead row versions included: the touched tables were rewritten). The
/// keyed hash is SQLite's for the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_forget_leaves_the_address_in_no_row_and_no_table_file() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("forget");
    let clock = ManualClock::new(t("2026-03-15T10:00:00Z"));
    let shared: SharedClock = clock.clone();
    let s = Store::open_postgres_with_key(&url, KEY)
        .unwrap()
        .with_clock(shared);
    let dir = tempfile::tempdir().unwrap();
    let file = Store::open_with_key(&dir.path().join("s.db"), KEY).unwrap();
    assert_eq!(file.subject_hash(PAT), s.subject_hash(PAT));
    let other = Store::open_postgres_with_key(&url, [8u8; 32]).unwrap();
    assert_ne!(other.subject_hash(PAT), s.subject_hash(PAT));

    seed_one_person(&s, clock.now()).await;
    pg.psql("forget", "CHECKPOINT");
    let before = files_holding(&table_files(&pg, "forget"), PAT);
    assert!(
        before.len() >= 5,
        "the address is on disk before (the check can fail): {before:?}"
    );
    let report = s.subject_forget(PAT, &s.subject_hash(PAT)).await.unwrap();
    assert!(report.remaining.is_empty(), "{report:?}");
    assert!(report.compacted, "{report:?}");
    pg.psql("forget", "CHECKPOINT");
    let columns = pg.psql(
        "forget",
        "SELECT table_name || '.' || column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type IN ('text', 'character varying')",
    );
    let mut searched = 0;
    for col in columns.lines().filter(|l| !l.trim().is_empty()) {
        let (table, column) = col.trim().split_once('.').unwrap();
        let n = pg.psql(
            "forget",
            &format!(
                "SELECT count(*) FROM \"{table}\" WHERE strpos(lower(\"{column}\"), '{PAT}') > 0"
            ),
        );
        assert_eq!(n.trim(), "0", "{table}.{column} still holds the address");
        searched += 1;
    }
    assert!(searched > 40, "{searched} columns searched");
    let after = files_holding(&table_files(&pg, "forget"), PAT);
    assert!(
        after.is_empty(),
        "table files still hold the address: {after:?}"
    );
}

/// Several handles race for one lease many times: exactly one wins each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_leases_under_contention_have_exactly_one_winner() {
    let Some(pg) = PgCluster::start() else { return };
    let f = Fresh {
        place: Place::Postgres(pg.create_db("race")),
        clock: ManualClock::new(t("2026-03-15T10:00:00Z")),
    };
    let stores: Vec<Store> = (0..4).map(|_| f.open()).collect();
    for round in 0..10 {
        let pipeline = format!("p{round}");
        let mut tasks = Vec::new();
        for (i, s) in stores.iter().enumerate() {
            let s = s.clone();
            let pipeline = pipeline.clone();
            tasks.push(tokio::spawn(async move {
                s.try_acquire(&pipeline, &format!("h{i}:1:0:aa"), TTL)
                    .await
                    .unwrap()
                    .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

/// Two daemons claim from one inbox at once: every event is handed out exactly once, and an
/// event claimed by a daemon that died goes to the other once the claim runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_inbox_claims_hand_each_delivery_to_one_daemon() {
    let Some(pg) = PgCluster::start() else { return };
    let f = Fresh {
        place: Place::Postgres(pg.create_db("inbox")),
        clock: ManualClock::new(t("2026-03-15T10:00:00Z")),
    };
    let (a, b) = (f.open(), f.open());
    let now = f.clock.now();
    for i in 0..40 {
        a.inbox_put(&format!("d{i}"), "meeting.ended", &json!({ "i": i }), now)
            .await
            .unwrap();
    }
    let worker = |s: Store| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let due = s.inbox_due(now, 50).await.unwrap();
                if due.is_empty() {
                    break;
                }
                for ev in due {
                    got.push(ev.payload["i"].as_i64().unwrap());
                    s.inbox_done(ev.id).await.unwrap();
                }
            }
            got
        })
    };
    let (ga, gb) = (worker(a.clone()), worker(b.clone()));
    let (mut ga, gb) = (ga.await.unwrap(), gb.await.unwrap());
    ga.extend(gb);
    ga.sort();
    assert_eq!(ga, (0..40).collect::<Vec<_>>(), "each exactly once");

    // A claims one event and dies (never finishes it): B cannot take it until the claim
    // runs out, then it can.
    a.inbox_put("late", "meeting.ended", &json!({ "i": 99 }), now)
        .await
        .unwrap();
    assert_eq!(a.inbox_due(now, 50).await.unwrap().len(), 1);
    assert!(b.inbox_due(now, 50).await.unwrap().is_empty());
    let later = now + chrono::Duration::from_std(ferry::state::INBOX_CLAIM).unwrap();
    let taken = b.inbox_due(later, 50).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].payload["i"], 99);
}

/// One daemon at a time refreshes a shared token: the second waits for the first's lock and
/// then reads the token the first stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_token_refreshes_are_serialized_across_daemons() {
    let Some(pg) = PgCluster::start() else { return };
    let f = Fresh {
        place: Place::Postgres(pg.create_db("tokens")),
        clock: ManualClock::new(t("2026-03-15T10:00:00Z")),
    };
    let (a, b) = (f.open(), f.open());
    a.token_put("rt", "r1", None).await.unwrap();
    let lock_a = a.token_lock("rt").await.unwrap();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move {
        let _lock = b2.token_lock("rt").await.unwrap();
        let seen = b2.token_get("rt").await.unwrap().unwrap().value;
        let _ = tx.send(seen);
    });
    // A refreshes under its lock while B waits; another token's lock is free meanwhile.
    let _other = b.token_lock("other").await.unwrap();
    a.token_put("rt", "r2", None).await.unwrap();
    assert!(rx.try_recv().is_err(), "B got the lock while A held it");
    drop(lock_a);
    waiter.await.unwrap();
    assert_eq!(rx.await.unwrap(), "r2", "B re-reads after taking the lock");
}

/// Daemons starting together migrate once; a database with a newer schema is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_migrations_run_once_when_daemons_start_together() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("mig");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = Store::open_postgres_with_key(&url, KEY).unwrap();
        tasks.push(tokio::spawn(async move { s.schema_version().await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), ferry::state::PG_SCHEMA_VERSION);
    }
    pg.psql("mig", "UPDATE ferry_schema_version SET version = 999");
    let err = Store::open_postgres_with_key(&url, KEY)
        .unwrap()
        .checkpoints(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer ferry"), "{err}");
}

/// Tokens are sealed in the database: the plaintext is nowhere in the table.
#[tokio::test]
async fn postgres_tokens_are_encrypted_at_rest() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("seal");
    let s = Store::open_postgres_with_key(&url, KEY).unwrap();
    s.token_put("zoom:refresh", "plain-token-value", None)
        .await
        .unwrap();
    let dump = pg.psql(
        "seal",
        "SELECT name, encode(nonce, 'escape'), encode(ciphertext, 'escape') FROM tokens",
    );
    assert!(dump.contains("zoom:refresh"), "{dump}");
    assert!(!dump.contains("plain-token-value"), "{dump}");
}

/// A database that is down is an error naming the database without its password; once it
/// is back the same handle works again (nothing to restart).
#[tokio::test]
async fn postgres_down_is_a_clear_error_and_the_handle_recovers() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("down");
    let s = Store::open_postgres_with_key(&url, KEY).unwrap();
    s.set_checkpoint("p", "st", "", "c1").await.unwrap();
    pg.stop_server();
    let err = s.checkpoint("p", "st", "").await.unwrap_err().to_string();
    assert!(err.contains("state database"), "{err}");
    assert!(!err.contains("pg-secret-pw"), "{err}");
    pg.start_server();
    let mut back = None;
    for _ in 0..50 {
        match s.checkpoint("p", "st", "").await {
            Ok(c) => {
                back = c;
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(back.map(|c| c.cursor).as_deref(), Some("c1"));
}
