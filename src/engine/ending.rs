//! How a batch ends: the few operations where a run and a plan differ. A run's
//! [`Applier`] writes to the sink and commits ledger rows, dead letters and checkpoints;
//! a plan's [`Differ`] keeps what it would have written in memory (so later batches see
//! it as a run's ledger would), counts the calls the writes would take, and commits
//! nothing.

use super::error::StageError;
use super::render::WriteIntent;
use super::report::WriteAction;
use super::zoom::{ZoomCall, ZoomWriteError, ZoomWriter};
use super::{ObjectSink, WriteOp, WriteOutcome};
use crate::config::{Sink, SinkAction, SinkKey};
use crate::state::{
    BatchCommit, Deferral, LedgerEntry, LedgerState, LedgerWrite, NewDeadLetter, StateError, Store,
    ZoomLedgerRow,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// What a write would change: field → (current, wanted).
pub type Diff = BTreeMap<String, (Value, Value)>;

/// One intent's result once its sink's writes are done (or planned).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: WriteAction,
    /// The sink record's Id (a placeholder for a planned create).
    pub id: Option<String>,
    pub created: bool,
    /// Why the sink rejected the record (action `Error`).
    pub message: Option<String>,
    /// What the update changes (plans).
    pub diff: Option<Diff>,
}

impl Outcome {
    pub fn unchanged(id: Option<String>) -> Self {
        Outcome {
            action: WriteAction::Unchanged,
            id,
            created: false,
            message: None,
            diff: None,
        }
    }
}

/// A record to update: intent `n` (an index into [`Writes::intents`]), the sink record's
/// Id and what changes.
#[derive(Debug)]
pub struct Update {
    pub n: usize,
    pub id: String,
    pub diff: Diff,
}

/// One sink's writes of a batch: which intents to create and which to update.
pub struct Writes<'a> {
    /// (record index, intent) of every intent of the sink.
    pub intents: &'a [(usize, WriteIntent)],
    pub create: Vec<usize>,
    pub update: Vec<Update>,
}

/// Where the stages end. Chosen once per run in [`super::Engine::run`].
#[async_trait::async_trait]
pub trait Ending: Send + Sync {
    /// Lays the rows this run has already decided on over the stored ledger of `sink`
    /// (a plan's own planned writes, as a run's ledger would have them).
    fn overlay(&self, sink: &str, keys: &[String], ledger: &mut HashMap<String, LedgerEntry>);
    /// Whether the current values of a record about to be updated are read first. Records
    /// seen for the first time always are (a write that changes nothing is not made).
    fn reads_before_update(&self, first_sight: bool) -> bool;
    /// A record found already as it should be: it counts as written.
    fn keep(&mut self, commit: &mut BatchCommit, row: LedgerWrite);
    /// Creates and updates one sink's records, filling `results` per intent. Returns what
    /// stops the run, if anything; results of the writes made before it are kept.
    async fn apply(
        &mut self,
        sink: &Sink,
        writes: Writes<'_>,
        commit: &mut BatchCommit,
        results: &mut HashMap<usize, Outcome>,
    ) -> Option<StageError>;
    /// A record that could not be written, kept for `ferry deadletters`.
    fn dead_letter(&mut self, commit: &mut BatchCommit, letter: NewDeadLetter);
    /// The batch is done: ledger rows, dead letters and checkpoints together.
    async fn commit(&mut self, commit: &BatchCommit) -> Result<(), StateError>;

    // ---- Zoom sinks (see `stage::zoom`) ---------------------------------------------------

    /// What Zoom calls go through: Zoom itself (a run), or Zoom for reads with the writes
    /// counted and answered with placeholders (a plan).
    fn zoom_writer<'a>(&self, real: &'a dyn ZoomWriter) -> Box<dyn ZoomWriter + 'a>;
    /// Lays this run's decided Zoom ledger rows over the stored ones (a plan's own).
    fn zoom_overlay(
        &self,
        object: &str,
        keys: &[String],
        rows: &mut HashMap<String, ZoomLedgerRow>,
    );
    /// Keeps Zoom ledger rows: at once in the state (a run; a create's pending mark must be
    /// saved before the create is sent), or in memory (a plan).
    async fn zoom_keep(
        &mut self,
        store: &Store,
        pipeline: &str,
        object: &str,
        rows: Vec<ZoomLedgerRow>,
    ) -> Result<(), StateError>;
    /// Keeps records a daily limit holds back (a plan keeps none).
    async fn zoom_defer(&mut self, store: &Store, rows: Vec<Deferral>) -> Result<(), StateError>;
    /// Forgets deferrals whose records are written (a plan forgets none).
    async fn zoom_undefer(
        &mut self,
        store: &Store,
        pipeline: &str,
        sink: &str,
        keys: Vec<String>,
    ) -> Result<(), StateError>;
}

/// How a sink's records are written.
pub fn write_op(sink: &Sink) -> WriteOp {
    match (&sink.action, &sink.key) {
        (SinkAction::Upsert, Some(SinkKey::ExternalIdField(f))) => WriteOp::Upsert {
            external_id_field: f.clone(),
        },
        (SinkAction::Publish, _) => WriteOp::Publish,
        (SinkAction::Update, _) => WriteOp::Update,
        _ => WriteOp::Insert,
    }
}

/// The Id a plan gives a record it would create, for the sinks after it to read.
pub fn planned_id(sobject: &str, key: &str) -> String {
    format!("(new {sobject} {key})")
}

/// Whether a value is such a planned Id (it is not checked as an Id: the run has a real one).
pub fn is_planned_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("(new "))
}

/// What a dead letter of a write keeps, for `ferry deadletters` and retries.
pub fn dead_letter_payload(w: &WriteIntent) -> Value {
    serde_json::json!({
        "sobject": w.sobject,
        "fields": w.fields,
        "id": w.id,
        "update_fields": w.update_fields(),
        "hash": w.hash(),
    })
}

/// A run's ending: writes go to the sink, the batch is committed to the state store.
pub struct Applier<'a> {
    store: &'a Store,
    sink: &'a dyn ObjectSink,
    pipeline: &'a str,
    /// The run's pipeline lease: commits check its fencing number.
    lease: Option<&'a crate::state::Lease>,
}

impl<'a> Applier<'a> {
    pub fn new(
        store: &'a Store,
        sink: &'a dyn ObjectSink,
        pipeline: &'a str,
        lease: Option<&'a crate::state::Lease>,
    ) -> Self {
        Applier {
            store,
            sink,
            pipeline,
            lease,
        }
    }

    /// One record's answer: a ledger row, or a dead letter with the sink's reason.
    fn outcome(
        &self,
        commit: &mut BatchCommit,
        sink: &Sink,
        w: &WriteIntent,
        o: WriteOutcome,
        create: bool,
    ) -> Outcome {
        match o.error {
            None => {
                commit.ledger.push(LedgerWrite {
                    sink: sink.name.clone(),
                    key: w.key.clone(),
                    sf_id: o.id.clone(),
                    hash: w.hash(),
                    state: LedgerState::Written,
                });
                let action = if create && (o.created || sink.action == SinkAction::Insert) {
                    WriteAction::Create
                } else {
                    WriteAction::Update
                };
                Outcome {
                    action,
                    id: o.id,
                    created: o.created || create,
                    message: None,
                    diff: None,
                }
            }
            Some(err) => {
                commit.dead_letters.push(NewDeadLetter {
                    sink: sink.name.clone(),
                    key: w.key.clone(),
                    payload: dead_letter_payload(w),
                    error: err.clone(),
                });
                Outcome {
                    action: WriteAction::Error,
                    id: None,
                    created: false,
                    message: Some(err),
                    diff: None,
                }
            }
        }
    }

    /// Writes records; a failure part-way still answers the outcomes of the records the sink
    /// acknowledged before it (the first ones, in order), so they reach the ledger and are
    /// never written again.
    async fn write(
        &self,
        sink: &Sink,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> (Vec<WriteOutcome>, Option<StageError>) {
        match self.sink.write_partial(&sink.sobject, op, records).await {
            Ok(outs) => (outs, None),
            Err((error, done)) => (
                done,
                Some(StageError::Sink {
                    sink: sink.name.clone(),
                    error,
                }),
            ),
        }
    }
}

#[async_trait::async_trait]
impl Ending for Applier<'_> {
    fn overlay(&self, _: &str, _: &[String], _: &mut HashMap<String, LedgerEntry>) {}

    fn reads_before_update(&self, first_sight: bool) -> bool {
        first_sight
    }

    fn keep(&mut self, commit: &mut BatchCommit, row: LedgerWrite) {
        commit.ledger.push(row);
    }

    async fn apply(
        &mut self,
        sink: &Sink,
        writes: Writes<'_>,
        commit: &mut BatchCommit,
        results: &mut HashMap<usize, Outcome>,
    ) -> Option<StageError> {
        let intents = writes.intents;
        let op = write_op(sink);
        if !writes.create.is_empty() {
            // Inserts: record the intent first, so a crash cannot duplicate.
            if op == WriteOp::Insert {
                let marks: Vec<(String, String)> = writes
                    .create
                    .iter()
                    .map(|n| (intents[*n].1.key.clone(), intents[*n].1.hash()))
                    .collect();
                if let Err(e) = self
                    .store
                    .ledger_mark_pending(self.pipeline, &sink.name, &marks)
                    .await
                {
                    return Some(StageError::SaveState(e));
                }
            }
            let recs: Vec<Map<String, Value>> = writes
                .create
                .iter()
                .map(|n| intents[*n].1.fields.clone())
                .collect();
            let (outs, failed) = self.write(sink, op.clone(), recs).await;
            for (n, o) in writes.create.iter().zip(outs) {
                let out = self.outcome(commit, sink, &intents[*n].1, o, true);
                results.insert(*n, out);
            }
            if failed.is_some() {
                return failed;
            }
        }
        if writes.update.is_empty() {
            return None;
        }
        let upsert = matches!(op, WriteOp::Upsert { .. });
        let recs: Vec<Map<String, Value>> = writes
            .update
            .iter()
            .map(|u| {
                let mut f = intents[u.n].1.update_fields();
                if !upsert {
                    f.insert("Id".into(), Value::String(u.id.clone()));
                }
                f
            })
            .collect();
        let uop = if upsert { op } else { WriteOp::Update };
        let (outs, failed) = self.write(sink, uop, recs).await;
        for (u, mut o) in writes.update.into_iter().zip(outs) {
            if o.id.is_none() {
                o.id = Some(u.id);
            }
            let out = self.outcome(commit, sink, &intents[u.n].1, o, false);
            results.insert(u.n, out);
        }
        failed
    }

    fn dead_letter(&mut self, commit: &mut BatchCommit, letter: NewDeadLetter) {
        commit.dead_letters.push(letter);
    }

    async fn commit(&mut self, commit: &BatchCommit) -> Result<(), StateError> {
        self.store.commit_batch_fenced(commit, self.lease).await
    }

    fn zoom_writer<'a>(&self, real: &'a dyn ZoomWriter) -> Box<dyn ZoomWriter + 'a> {
        Box::new(Direct(real))
    }

    fn zoom_overlay(&self, _: &str, _: &[String], _: &mut HashMap<String, ZoomLedgerRow>) {}

    async fn zoom_keep(
        &mut self,
        store: &Store,
        pipeline: &str,
        object: &str,
        rows: Vec<ZoomLedgerRow>,
    ) -> Result<(), StateError> {
        store.zoom_ledger_put(pipeline, object, &rows).await
    }

    async fn zoom_defer(&mut self, store: &Store, rows: Vec<Deferral>) -> Result<(), StateError> {
        store.zoom_defer(&rows).await
    }

    async fn zoom_undefer(
        &mut self,
        store: &Store,
        pipeline: &str,
        sink: &str,
        keys: Vec<String>,
    ) -> Result<(), StateError> {
        store.zoom_undefer(pipeline, sink, &keys).await
    }
}

/// Zoom as it is (a run's writes).
struct Direct<'a>(&'a dyn ZoomWriter);

#[async_trait::async_trait]
impl ZoomWriter for Direct<'_> {
    async fn call(&self, call: ZoomCall) -> Result<Value, ZoomWriteError> {
        self.0.call(call).await
    }
    fn calls(&self) -> u64 {
        self.0.calls()
    }
}

/// Zoom in a plan: reads go to Zoom, writes are counted and answered with placeholders.
struct Planned<'a> {
    real: &'a dyn ZoomWriter,
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl ZoomWriter for Planned<'_> {
    async fn call(&self, call: ZoomCall) -> Result<Value, ZoomWriteError> {
        if call.method == "GET" {
            return self.real.call(call).await;
        }
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if call.method != "POST" {
            return Ok(Value::Null);
        }
        // A planned create: placeholders later sinks can read (never sent anywhere).
        let what = call
            .path
            .rsplit('/')
            .next()
            .unwrap_or("object")
            .trim_end_matches('s');
        // Named by what it is, not by the call's path (which may hold a host's address).
        Ok(serde_json::json!({
            "id": format!("(new {what}: the id Zoom gives it)"),
            "registrant_id": format!("(new {what}: the id Zoom gives it)"),
            "join_url": format!("(join_url of the {what} to create)"),
            "password": format!("(passcode of the {what} to create)"),
        }))
    }
    fn calls(&self) -> u64 {
        self.real.calls()
    }
}

/// How many records one write call takes.
const RECORDS_PER_CALL: u64 = 200;

/// A plan's ending: nothing is written or committed; what a run would write is kept in
/// memory and the write calls it would take are counted.
pub struct Differ {
    now: DateTime<Utc>,
    /// (sink, key) → the ledger row a run would have written.
    planned: HashMap<(String, String), LedgerEntry>,
    calls: u64,
    /// (Zoom object, key) → the Zoom ledger row a run would have kept.
    zoom_planned: HashMap<(String, String), ZoomLedgerRow>,
    /// Zoom writes the plan would make.
    zoom_writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Differ {
    pub fn new(now: DateTime<Utc>) -> Self {
        Differ {
            now,
            planned: HashMap::new(),
            calls: 0,
            zoom_planned: HashMap::new(),
            zoom_writes: Default::default(),
        }
    }

    /// The write calls the plan's writes would take.
    pub fn planned_calls(&self) -> u64 {
        self.calls
    }

    /// The Zoom write calls the plan's Zoom writes would take.
    pub fn planned_zoom_calls(&self) -> u64 {
        self.zoom_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn plan(&mut self, sink: &str, key: &str, sf_id: Option<String>, hash: String) {
        self.planned.insert(
            (sink.to_string(), key.to_string()),
            LedgerEntry {
                sf_id,
                hash,
                state: LedgerState::Written,
                updated_at: self.now,
            },
        );
    }
}

#[async_trait::async_trait]
impl Ending for Differ {
    fn overlay(&self, sink: &str, keys: &[String], ledger: &mut HashMap<String, LedgerEntry>) {
        for k in keys {
            if let Some(e) = self.planned.get(&(sink.to_string(), k.clone())) {
                ledger.insert(k.clone(), e.clone());
            }
        }
    }

    /// Every update is read, for its diff.
    fn reads_before_update(&self, _first_sight: bool) -> bool {
        true
    }

    fn keep(&mut self, _commit: &mut BatchCommit, row: LedgerWrite) {
        self.plan(&row.sink, &row.key, row.sf_id, row.hash);
    }

    async fn apply(
        &mut self,
        sink: &Sink,
        writes: Writes<'_>,
        _commit: &mut BatchCommit,
        results: &mut HashMap<usize, Outcome>,
    ) -> Option<StageError> {
        let intents = writes.intents;
        let n_writes = (writes.create.len() + writes.update.len()) as u64;
        self.calls += n_writes.div_ceil(RECORDS_PER_CALL);
        for n in writes.create {
            let w = &intents[n].1;
            let placeholder = planned_id(&sink.sobject, &w.key);
            self.plan(&sink.name, &w.key, Some(placeholder.clone()), w.hash());
            results.insert(
                n,
                Outcome {
                    action: WriteAction::Create,
                    id: Some(placeholder),
                    created: true,
                    message: None,
                    diff: None,
                },
            );
        }
        for u in writes.update {
            let w = &intents[u.n].1;
            self.plan(&sink.name, &w.key, Some(u.id.clone()), w.hash());
            results.insert(
                u.n,
                Outcome {
                    action: WriteAction::Update,
                    id: Some(u.id),
                    created: false,
                    message: None,
                    diff: Some(u.diff),
                },
            );
        }
        None
    }

    fn dead_letter(&mut self, _commit: &mut BatchCommit, _letter: NewDeadLetter) {}

    async fn commit(&mut self, _commit: &BatchCommit) -> Result<(), StateError> {
        Ok(())
    }

    fn zoom_writer<'a>(&self, real: &'a dyn ZoomWriter) -> Box<dyn ZoomWriter + 'a> {
        Box::new(Planned {
            real,
            writes: self.zoom_writes.clone(),
        })
    }

    fn zoom_overlay(
        &self,
        object: &str,
        keys: &[String],
        rows: &mut HashMap<String, ZoomLedgerRow>,
    ) {
        for k in keys {
            if let Some(r) = self.zoom_planned.get(&(object.to_string(), k.clone())) {
                rows.insert(k.clone(), r.clone());
            }
        }
    }

    async fn zoom_keep(
        &mut self,
        _store: &Store,
        _pipeline: &str,
        object: &str,
        rows: Vec<ZoomLedgerRow>,
    ) -> Result<(), StateError> {
        for r in rows {
            self.zoom_planned
                .insert((object.to_string(), r.key.clone()), r);
        }
        Ok(())
    }

    async fn zoom_defer(&mut self, _: &Store, _: Vec<Deferral>) -> Result<(), StateError> {
        Ok(())
    }

    async fn zoom_undefer(
        &mut self,
        _: &Store,
        _: &str,
        _: &str,
        _: Vec<String>,
    ) -> Result<(), StateError> {
        Ok(())
    }
}
