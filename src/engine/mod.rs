//! Run and plan: read → enrich → lookup → render → write, then ledger and checkpoint committed
//! together. `plan` is `run` with the writer replaced by a differ: one path, two endings.

pub mod connect;
pub mod lookup;
pub mod render;
pub mod report;
pub mod testing;

use crate::config::{Pipeline, SinkAction as Action};
use crate::state::{BatchCommit, LedgerEntry, LedgerState, LedgerWrite, NewDeadLetter, Store};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use lookup::{LookupCache, LookupNotes, LookupSource, Matcher};
use render::{Globals, RecordState, SinkDecision, WriteIntent};
use report::{PipelineReport, RecordReport, SourceRef, WriteAction, WriteReport};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One page of source records from one partition, in cursor order.
#[derive(Debug, Clone)]
pub struct Page {
    pub partition: String,
    pub records: Vec<Value>,
    /// The checkpoint this page lets the partition advance to once every record of it is
    /// acknowledged (None: no cursor, read whole each run).
    pub cursor: Option<String>,
}

/// Why a fetch found nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// Where an incremental read starts and ends: each partition from its checkpoint minus
/// `lookback`, partitions never read from `default_since`, all up to `until`.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub checkpoints: BTreeMap<String, DateTime<Utc>>,
    pub default_since: DateTime<Utc>,
    pub lookback: chrono::Duration,
    pub until: DateTime<Utc>,
}

/// A connector that yields records.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// Pages of a stream, each partition in cursor order.
    fn read(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
        window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, String>>;
    /// A child read for `enrich`: a list for list streams, an object for single-object ones.
    async fn fetch(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
    ) -> Result<Value, FetchError>;
    /// The stream's primary key field, for reports.
    fn primary_key(&self, stream: &str) -> Option<String>;
    /// The stream's cursor field, if it has one.
    fn cursor_field(&self, _stream: &str) -> Option<String> {
        None
    }
    /// Requests spent so far.
    fn calls(&self) -> u64;
}

/// How a batch of records is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Insert,
    Update,
    Upsert { external_id_field: String },
    Publish,
}

/// Salesforce's answer for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub id: Option<String>,
    pub created: bool,
    /// A rejection of this record alone (already retried where retrying helps).
    pub error: Option<String>,
}

/// A connector that takes batches of records.
#[async_trait::async_trait]
pub trait Writer: Send + Sync {
    /// Writes records; one outcome per record, in order. `Err` is a failure that would fail
    /// every record (credentials, a missing field, the budget): the run stops.
    async fn write(
        &self,
        sobject: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<WriteOutcome>, String>;
    /// As [`Writer::write`]; a failure part-way also answers the outcomes of the records
    /// Salesforce already acknowledged (the first ones of `records`, in order), so the
    /// engine keeps them in the ledger.
    async fn write_partial(
        &self,
        sobject: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<WriteOutcome>, (String, Vec<WriteOutcome>)> {
        self.write(sobject, op, records)
            .await
            .map_err(|e| (e, Vec::new()))
    }
    /// Records whose `field` is one of `values`, with the `select`ed fields (for plans and for
    /// checks before re-inserting).
    async fn find(
        &self,
        sobject: &str,
        field: &str,
        values: &[String],
        select: &[String],
    ) -> Result<Vec<Map<String, Value>>, String>;
    /// Requests spent so far.
    fn calls(&self) -> u64;
}

/// Called with the report so far after each batch.
pub type ProgressFn = Arc<dyn Fn(&PipelineReport) + Send + Sync>;

/// Run for real or only plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Plan,
}

/// Options of one run or plan.
#[derive(Clone)]
pub struct RunOptions {
    pub mode: Mode,
    /// Stop after this many source records (plan --limit).
    pub limit: Option<usize>,
    /// Only this source record (plan --record KEY).
    pub record: Option<String>,
    /// Keep per-record detail in the report (plans; runs keep only summaries when false).
    pub detail: bool,
    pub enrich_concurrency: usize,
    /// Source records gathered before lookups and writes run (pages are combined).
    pub batch_size: usize,
    pub run_id: String,
    /// Set to stop after the batch in flight (SIGTERM in the daemon).
    pub shutdown: Option<Arc<AtomicBool>>,
    /// Called after each committed batch (progress bars, metrics).
    pub progress: Option<ProgressFn>,
    /// For webhook triggers: read exactly these records instead of the stream.
    pub records: Option<Vec<Value>>,
}

impl RunOptions {
    pub fn new(mode: Mode) -> Self {
        RunOptions {
            mode,
            limit: None,
            record: None,
            detail: mode == Mode::Plan,
            enrich_concurrency: 8,
            batch_size: 500,
            run_id: format!("{:016x}", rand::random::<u64>()),
            shutdown: None,
            progress: None,
            records: None,
        }
    }
}

/// What the engine needs around it.
pub struct Engine<'a> {
    pub store: &'a Store,
    pub source: &'a dyn Source,
    pub matcher: &'a dyn Matcher,
    pub writer: &'a dyn Writer,
    pub settings: &'a Value,
    pub now: DateTime<Utc>,
}

/// How far back a stream with no checkpoint and no `since` starts.
const DEFAULT_START_DAYS: i64 = 30;

impl Engine<'_> {
    /// Runs (or plans) one pipeline to the end of its source.
    pub async fn run(&self, p: &Pipeline, opts: &RunOptions) -> PipelineReport {
        let dry = opts.mode == Mode::Plan;
        let mut report = PipelineReport::new(&p.name, dry);
        let zoom_before = self.source.calls();
        let sf_before = self.writer.calls();
        let mut planned_sf_writes = 0u64;
        let g = Globals::new(
            self.settings,
            &opts.run_id,
            &p.name,
            &self.now.to_rfc3339(),
            dry,
        );
        let stream = p.source.stream.clone();
        let params = match self.source_params(p, &g) {
            Ok(v) => v,
            Err(e) => {
                report.stopped = Some(e);
                return report;
            }
        };

        let pages: BoxStream<'static, Result<Page, String>> = match &opts.records {
            Some(recs) => futures::stream::iter(vec![Ok(Page {
                partition: String::new(),
                records: recs.clone(),
                cursor: None,
            })])
            .boxed(),
            None => {
                let window = self.read_spec(p);
                self.source.read(&stream, params, window)
            }
        };

        let mut planned: HashMap<(String, String), LedgerEntry> = HashMap::new();
        if !dry && opts.records.is_none() {
            self.retry_dead_letters(p, &g, opts, &stream, &mut report, &mut planned)
                .await;
        }
        // Reading and enriching run ahead of lookups and writes by at most one batch, so
        // Zoom is not left idle while a batch is looked up and written, and memory stays
        // bounded. Nothing read ahead is committed: checkpoints move only with a batch.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Fed>(opts.batch_size.max(1));
        let feed = self.feed(p, &g, opts, pages, tx);
        let batches = async {
            let mut ended = false;
            while !ended {
                // Gather records (of any partitions) up to a batch: lookups cost one query
                // per rule per batch and writes one call per 200 records, so bigger batches
                // cost fewer calls.
                let mut records: Vec<(Value, Option<String>)> = Vec::new();
                let mut cursors: Vec<(String, String)> = Vec::new();
                let mut halt: Option<String> = None;
                while records.len() < opts.batch_size.max(1) {
                    match rx.recv().await {
                        None => {
                            ended = true;
                            break;
                        }
                        Some(Fed::Record(r, err)) => records.push((r, err)),
                        Some(Fed::PageEnd { partition, cursor }) => {
                            // Pages of a partition arrive in order: the last cursor wins.
                            // Every record of the page came before its end: it is in this
                            // batch or an earlier one.
                            cursors.retain(|(part, _)| *part != partition);
                            cursors.push((partition, cursor));
                        }
                        Some(Fed::ReadFailed(e)) => {
                            report.stopped = Some(format!("reading {stream}: {e}"));
                            ended = true;
                            break;
                        }
                        Some(Fed::EnrichFailed(e)) => {
                            halt = Some(e);
                            ended = true;
                            break;
                        }
                    }
                }
                if records.is_empty() && cursors.is_empty() && halt.is_none() {
                    break;
                }
                let mut commit = BatchCommit {
                    pipeline: p.name.clone(),
                    ledger: Vec::new(),
                    dead_letters: Vec::new(),
                    checkpoints: Vec::new(),
                };
                let mut outcome = self
                    .process_records(
                        p,
                        &g,
                        opts,
                        &stream,
                        records,
                        &mut report,
                        &mut commit,
                        &mut planned,
                        &mut planned_sf_writes,
                    )
                    .await;
                // Checkpoints move only past records every sink has acknowledged: a whole
                // batch, and not for partial reads (--record, --limit, webhook records).
                if outcome.is_ok()
                    && opts.records.is_none()
                    && opts.record.is_none()
                    && opts.limit.is_none()
                {
                    for (partition, cursor) in cursors {
                        commit.checkpoints.push((stream.clone(), partition, cursor));
                    }
                }
                // A record that could not be enriched stops the run after the records
                // before it are written.
                if let (Ok(()), Some(e)) = (&outcome, halt) {
                    outcome = Err(e);
                }
                if let Err(e) = &outcome {
                    report.stopped = Some(e.clone());
                }
                // The ledger rows of what was written and the checkpoint commit together.
                if !dry {
                    if let Err(e) = self.store.commit_batch(&commit) {
                        report.stopped = Some(format!("saving state: {e}"));
                    }
                }
                if let Some(cb) = &opts.progress {
                    cb(&report);
                }
                if report.stopped.is_some() {
                    break;
                }
                // A shutdown after the last batch has nothing left to stop.
                if !ended
                    && opts
                        .shutdown
                        .as_ref()
                        .is_some_and(|s| s.load(Ordering::SeqCst))
                {
                    report.stopped = Some("shutting down; the next run continues here".into());
                    break;
                }
            }
        };
        // The batches decide when the run ends; whatever was read ahead is then dropped.
        {
            tokio::pin!(feed);
            tokio::pin!(batches);
            let mut fed = false;
            loop {
                tokio::select! {
                    () = &mut batches => break,
                    () = &mut feed, if !fed => fed = true,
                }
            }
        }
        report.finish();
        report.summary.api_calls.zoom = self.source.calls() - zoom_before;
        // A plan spends the run's reads (lookups, checks of existing records) for real and
        // counts the writes it would make, 200 records a call.
        report.summary.api_calls.salesforce =
            self.writer.calls() - sf_before + if dry { planned_sf_writes } else { 0 };
        report
    }

    fn source_params(&self, p: &Pipeline, g: &Globals) -> Result<BTreeMap<String, Value>, String> {
        let ctx = render::RecordOnly {
            record: &Value::Null,
            g,
        };
        let mut out = BTreeMap::new();
        for (k, e) in &p.source.params {
            let v = e
                .eval(&ctx)
                .map_err(|e| format!("source.params.{k}: {e}"))?;
            out.insert(k.clone(), v);
        }
        Ok(out)
    }

    /// Dead letters an admin marked for retry (`ferry deadletters retry`): rejected writes
    /// are sent again as they were rendered; records that failed to render go through the
    /// stages again. A letter that fails again stays, with the new error.
    async fn retry_dead_letters(
        &self,
        p: &Pipeline,
        g: &Globals,
        opts: &RunOptions,
        stream: &str,
        report: &mut PipelineReport,
        planned: &mut HashMap<(String, String), LedgerEntry>,
    ) {
        let due = match self.store.deadletters_due(&p.name) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot read dead letters of {}: {e}", p.name);
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        let (writes, records): (Vec<_>, Vec<_>) = due.into_iter().partition(|d| !d.sink.is_empty());
        for letter in writes {
            let Some(sink) = p.sink(&letter.sink) else {
                let _ = self.store.deadletter_retry_failed(
                    letter.id,
                    &format!("the pipeline has no sink `{}` any more", letter.sink),
                );
                continue;
            };
            let pl = &letter.payload;
            let fields = |k: &str| {
                pl.get(k)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            let id = pl.get("id").and_then(Value::as_str).map(str::to_string);
            let (op, mut rec) = match (&sink.action, &sink.key) {
                (Action::Upsert, Some(crate::config::SinkKey::ExternalIdField(f))) => (
                    WriteOp::Upsert {
                        external_id_field: f.clone(),
                    },
                    fields("fields"),
                ),
                (Action::Update, _) => (WriteOp::Update, fields("update_fields")),
                (Action::Publish, _) => (WriteOp::Publish, fields("fields")),
                _ => (WriteOp::Insert, fields("fields")),
            };
            if op == WriteOp::Update {
                rec.insert(
                    "Id".into(),
                    id.clone().map(Value::String).unwrap_or(Value::Null),
                );
            }
            match self.writer.write(&sink.sobject, op, vec![rec]).await {
                Ok(outs) => match outs.into_iter().next() {
                    Some(WriteOutcome {
                        error: None,
                        id: new_id,
                        ..
                    }) => {
                        let commit = BatchCommit {
                            pipeline: p.name.clone(),
                            ledger: vec![LedgerWrite {
                                sink: sink.name.clone(),
                                key: letter.key.clone(),
                                sf_id: new_id.or(id),
                                hash: pl
                                    .get("hash")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_string(),
                                state: LedgerState::Written,
                            }],
                            dead_letters: Vec::new(),
                            checkpoints: Vec::new(),
                        };
                        match self.store.commit_batch(&commit) {
                            Ok(()) => {
                                let _ = self.store.deadletters_drop(&[letter.id]);
                                report.summary.retried += 1;
                            }
                            Err(e) => tracing::warn!("saving a retried dead letter: {e}"),
                        }
                    }
                    Some(WriteOutcome { error: Some(e), .. }) => {
                        let _ = self.store.deadletter_retry_failed(letter.id, &e);
                    }
                    None => {}
                },
                Err(e) => {
                    let _ = self.store.deadletter_retry_failed(letter.id, &e);
                }
            }
        }
        if !records.is_empty() {
            let recs: Vec<Value> = records.iter().map(|d| d.payload.clone()).collect();
            let mut commit = BatchCommit {
                pipeline: p.name.clone(),
                ledger: Vec::new(),
                dead_letters: Vec::new(),
                checkpoints: Vec::new(),
            };
            let errors_before = report.summary.error;
            // Only plans count planned writes; a retry is a run.
            let mut planned_writes = 0;
            let outcome = self
                .process_batch(
                    p,
                    g,
                    opts,
                    stream,
                    recs,
                    report,
                    &mut commit,
                    planned,
                    &mut planned_writes,
                )
                .await;
            let ok = outcome.is_ok() && report.summary.error == errors_before;
            if self.store.commit_batch(&commit).is_ok() && ok {
                let ids: Vec<i64> = records.iter().map(|d| d.id).collect();
                let _ = self.store.deadletters_drop(&ids);
                report.summary.retried += ids.len() as u64;
            } else {
                for d in &records {
                    let _ = self
                        .store
                        .deadletter_retry_failed(d.id, "failed again; see the newer dead letter");
                }
            }
        }
    }

    fn read_spec(&self, p: &Pipeline) -> ReadSpec {
        let mut checkpoints = BTreeMap::new();
        if let Ok(rows) = self.store.checkpoints(Some(&p.name)) {
            for r in rows {
                if r.stream == p.source.stream {
                    if let Ok(t) = DateTime::parse_from_rfc3339(&r.cursor) {
                        checkpoints.insert(r.partition.clone(), t.with_timezone(&Utc));
                    }
                }
            }
        }
        ReadSpec {
            checkpoints,
            default_since: p
                .source
                .since
                .unwrap_or(self.now - chrono::Duration::days(DEFAULT_START_DAYS)),
            lookback: p
                .source
                .lookback
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .unwrap_or_else(chrono::Duration::zero),
            until: self.now,
        }
    }

    /// The reading side of a run: pages in source order, filtered (`--record`, `--limit`,
    /// `where`) and enriched `enrich_concurrency` records at a time, continuously across
    /// pages and batches, into `tx`. Stops after a failure or when `tx` is closed.
    async fn feed(
        &self,
        p: &Pipeline,
        g: &Globals,
        opts: &RunOptions,
        pages: BoxStream<'static, Result<Page, String>>,
        tx: tokio::sync::mpsc::Sender<Fed>,
    ) {
        let pk = self.source.primary_key(&p.source.stream);
        let concurrency = opts.enrich_concurrency.max(1);
        let (mut step_tx, step_rx) = futures::channel::mpsc::channel::<Step>(concurrency);
        let read = async move {
            let mut pages = pages;
            let mut seen = 0usize;
            while let Some(page) = pages.next().await {
                let mut out: Vec<Step> = Vec::new();
                let done = match page {
                    Err(e) => {
                        out.push(Step::Ready(Fed::ReadFailed(e)));
                        true
                    }
                    Ok(page) => {
                        let mut recs = page.records;
                        if let Some(want) = &opts.record {
                            recs.retain(|r| record_key(r, pk.as_deref()) == *want);
                        }
                        if let Some(limit) = opts.limit {
                            recs.truncate(limit.saturating_sub(seen));
                        }
                        seen += recs.len();
                        out.extend(recs.into_iter().filter_map(|r| {
                            self.sift(p, g, r)
                                .map(|(r, err)| Step::Enrich(Box::new(r), err))
                        }));
                        if let Some(cursor) = page.cursor {
                            out.push(Step::Ready(Fed::PageEnd {
                                partition: page.partition,
                                cursor,
                            }));
                        }
                        opts.limit.is_some_and(|l| seen >= l)
                    }
                };
                for step in out {
                    if step_tx.send(step).await.is_err() {
                        return;
                    }
                }
                if done {
                    break;
                }
            }
        };
        let enrich = async {
            let fed = step_rx
                .map(|step| async move {
                    match step {
                        Step::Ready(f) => f,
                        Step::Enrich(rec, where_err) => match self.enrich_one(p, g, *rec).await {
                            Ok((rec, err)) => Fed::Record(rec, where_err.or(err)),
                            Err(e) => Fed::EnrichFailed(e),
                        },
                    }
                })
                .buffered(concurrency);
            tokio::pin!(fed);
            while let Some(f) = fed.next().await {
                let last = matches!(f, Fed::ReadFailed(_) | Fed::EnrichFailed(_));
                if tx.send(f).await.is_err() || last {
                    break;
                }
            }
        };
        // Reading stops when enrichment does (a failure, or the batches are done).
        tokio::pin!(read);
        tokio::pin!(enrich);
        let mut read_done = false;
        loop {
            tokio::select! {
                () = &mut enrich => break,
                () = &mut read, if !read_done => read_done = true,
            }
        }
    }

    /// `where`: None drops the record; an error keeps it, to be reported.
    fn sift(&self, p: &Pipeline, g: &Globals, r: Value) -> Option<(Value, Option<String>)> {
        let Some(w) = &p.source.where_ else {
            return Some((r, None));
        };
        match w.truthy(&render::RecordOnly { record: &r, g }) {
            Ok(true) => Some((r, None)),
            Ok(false) => None,
            Err(e) => Some((r, Some(format!("source.where: {e}")))),
        }
    }

    /// Source records outside a run's read (retried dead letters): where, enrich, then the
    /// rest of the stages.
    #[allow(clippy::too_many_arguments)]
    async fn process_batch(
        &self,
        p: &Pipeline,
        g: &Globals,
        opts: &RunOptions,
        stream: &str,
        records: Vec<Value>,
        report: &mut PipelineReport,
        commit: &mut BatchCommit,
        planned: &mut HashMap<(String, String), LedgerEntry>,
        planned_sf_writes: &mut u64,
    ) -> Result<(), String> {
        let kept: Vec<(Value, Option<String>)> = records
            .into_iter()
            .filter_map(|r| self.sift(p, g, r))
            .collect();
        let enriched: Vec<Result<(Value, Option<String>), String>> =
            futures::stream::iter(kept.into_iter().map(|(rec, where_err)| async move {
                let (rec, err) = self.enrich_one(p, g, rec).await?;
                Ok((rec, where_err.or(err)))
            }))
            .buffered(opts.enrich_concurrency.max(1))
            .collect()
            .await;
        let enriched = enriched.into_iter().collect::<Result<Vec<_>, String>>()?;
        self.process_records(
            p,
            g,
            opts,
            stream,
            enriched,
            report,
            commit,
            planned,
            planned_sf_writes,
        )
        .await
    }

    /// Lookups, vars, sinks and writes of a batch of enriched records (each with the error
    /// that keeps it from being written, if any).
    #[allow(clippy::too_many_arguments)]
    async fn process_records(
        &self,
        p: &Pipeline,
        g: &Globals,
        opts: &RunOptions,
        stream: &str,
        records: Vec<(Value, Option<String>)>,
        report: &mut PipelineReport,
        commit: &mut BatchCommit,
        planned: &mut HashMap<(String, String), LedgerEntry>,
        planned_sf_writes: &mut u64,
    ) -> Result<(), String> {
        let dry = opts.mode == Mode::Plan;
        let pk = self.source.primary_key(stream);
        // A batch holds pages of several partitions: put its records in cursor order, so that
        // where two records write one Salesforce record the later one wins.
        let mut enriched = records;
        if let Some(cf) = self.source.cursor_field(stream) {
            enriched.sort_by(|(a, _), (b, _)| {
                let k = |r: &Value| r.get(&cf).map(render::scalar_string).unwrap_or_default();
                k(a).cmp(&k(b))
            });
        }
        report.records_read += enriched.len() as u64;
        if enriched.is_empty() {
            return Ok(());
        }
        let mut reports: Vec<RecordReport> = Vec::new();
        let mut states: Vec<RecordState> = Vec::new();
        let mut failed: Vec<Option<String>> = Vec::new();
        for (rec, err) in enriched {
            let key = record_key(&rec, pk.as_deref());
            reports.push(RecordReport {
                source: SourceRef {
                    stream: format!("zoom.{}", stream.trim_start_matches("zoom.")),
                    key,
                },
                title: record_title(&rec),
                writes: Vec::new(),
                unmatched: Vec::new(),
                unlookable: Vec::new(),
                ambiguous: Vec::new(),
                looked_up: 0,
                skipped: Vec::new(),
                errors: Vec::new(),
            });
            states.push(RecordState::new(rec));
            failed.push(err);
        }

        // lookups, batched across the page
        let mut notes = vec![LookupNotes::default(); states.len()];
        let cache = StoreCache {
            store: self.store,
            now: self.now,
        };
        let source = LookupSource::Live {
            matcher: self.matcher,
            cache: Some(&cache),
            pipeline: &p.name,
        };
        lookup::resolve(p, &mut states, g, &source, &mut notes, &mut 0)
            .await
            .map_err(|e| e.to_string())?;
        for (r, n) in reports.iter_mut().zip(&notes) {
            r.unmatched = n.unmatched.clone();
            r.unlookable = n.unlookable.clone();
            r.ambiguous = n.ambiguous.clone();
            r.looked_up = n.looked_up;
        }
        // vars
        for (i, st) in states.iter_mut().enumerate() {
            yield_every_few(i).await;
            if failed[i].is_none() {
                if let Err(e) = render::eval_vars(p, st, g) {
                    failed[i] = Some(e.to_string());
                }
            }
        }

        let mut stop: Option<String> = None;

        // sinks, in order; later sinks see what earlier ones wrote
        for sink in &p.sinks {
            let mut intents: Vec<(usize, WriteIntent)> = Vec::new();
            let mut has_for_each: Vec<bool> = vec![sink.for_each.is_some(); states.len()];
            for (i, st) in states.iter_mut().enumerate() {
                yield_every_few(i).await;
                if failed[i].is_some() {
                    continue;
                }
                match render::render_sink(sink, st, g) {
                    Ok(SinkDecision::Skipped { reason }) => {
                        reports[i].skipped.push(format!("{}: {reason}", sink.name));
                    }
                    Ok(SinkDecision::Writes(ws)) => {
                        for w in ws {
                            if w.action == Action::Update && w.id.is_none() {
                                reports[i]
                                    .skipped
                                    .push(format!("{}: no Id to update", sink.name));
                                continue;
                            }
                            intents.push((i, w));
                        }
                    }
                    Err(e) => {
                        failed[i] = Some(e.to_string());
                    }
                }
                has_for_each[i] = sink.for_each.is_some();
            }
            // One write per key per batch: a later record wins (cursor order).
            let mut last_of_key: HashMap<String, usize> = HashMap::new();
            for (n, (_, w)) in intents.iter().enumerate() {
                last_of_key.insert(w.key.clone(), n);
            }
            let keys: Vec<String> = last_of_key.keys().cloned().collect();
            let mut ledger = self
                .store
                .ledger_get_many(&p.name, &sink.name, &keys)
                .map_err(|e| format!("reading the ledger: {e}"))?;
            // A plan keeps what it would have written, as the run's ledger would.
            for k in &keys {
                if let Some(e) = planned.get(&(sink.name.clone(), k.clone())) {
                    ledger.insert(k.clone(), e.clone());
                }
            }

            // Decide per intent.
            let mut to_create: Vec<usize> = Vec::new();
            let mut to_update: Vec<(usize, String)> = Vec::new();
            let mut results: HashMap<usize, (Option<String>, bool, WriteAction)> = HashMap::new();
            for (n, (_, w)) in intents.iter().enumerate() {
                if last_of_key.get(&w.key) != Some(&n) {
                    continue;
                }
                match ledger.get(&w.key) {
                    Some(e) if e.state == LedgerState::Written && e.hash == w.hash() => {
                        results.insert(n, (e.sf_id.clone(), false, WriteAction::Unchanged));
                    }
                    Some(e) if e.state == LedgerState::Written && e.sf_id.is_some() => {
                        to_update.push((n, e.sf_id.clone().unwrap_or_default()));
                    }
                    Some(e) if e.state == LedgerState::Written => {
                        // Written before but Salesforce gave no Id (an existing relation).
                        results.insert(n, (None, false, WriteAction::Unchanged));
                    }
                    _ => to_create.push(n),
                }
            }
            // Updates by Id for update sinks that had no ledger row yet.
            if sink.action == Action::Update {
                let mut keep = Vec::new();
                for n in to_create.drain(..) {
                    let id = intents[n].1.id.clone().unwrap_or_default();
                    keep.push((n, id));
                }
                to_update.extend(keep);
            }

            // Inserts interrupted by a crash: adopt what Salesforce already has.
            if sink.action == Action::Insert && !to_create.is_empty() {
                if let Some(field) = &sink.search_by {
                    let pending: Vec<usize> = to_create
                        .iter()
                        .copied()
                        .filter(|n| {
                            ledger
                                .get(&intents[*n].1.key)
                                .is_some_and(|e| e.state == LedgerState::Pending)
                        })
                        .collect();
                    if !pending.is_empty() {
                        let values: Vec<String> = pending
                            .iter()
                            .filter_map(|n| {
                                intents[*n].1.fields.get(field).map(render::scalar_string)
                            })
                            .collect();
                        let found = self
                            .writer
                            .find(
                                &sink.sobject,
                                field,
                                &values,
                                &["Id".to_string(), field.clone()],
                            )
                            .await?;
                        for n in pending {
                            let v = intents[n].1.fields.get(field).map(render::scalar_string);
                            if let Some(rec) = found.iter().find(|r| {
                                r.get(field).map(render::scalar_string) == v && v.is_some()
                            }) {
                                let id = rec.get("Id").and_then(Value::as_str).map(str::to_string);
                                to_create.retain(|x| *x != n);
                                if !dry {
                                    commit.ledger.push(LedgerWrite {
                                        sink: sink.name.clone(),
                                        key: intents[n].1.key.clone(),
                                        sf_id: id.clone(),
                                        hash: intents[n].1.hash(),
                                        state: LedgerState::Written,
                                    });
                                }
                                results.insert(n, (id, false, WriteAction::Unchanged));
                            }
                        }
                    }
                }
            }

            let mut diffs: HashMap<usize, BTreeMap<String, (Value, Value)>> = HashMap::new();
            // Records ferry has not written before may already be in Salesforce as they
            // should be: read them (one query per sink per batch) so neither a plan nor a run
            // reports, or makes, a write that changes nothing.
            let first_sight: std::collections::HashSet<usize> = to_create
                .iter()
                .copied()
                .chain(
                    to_update
                        .iter()
                        .filter(|(n, _)| !ledger.contains_key(&intents[*n].1.key))
                        .map(|(n, _)| *n),
                )
                .collect();
            {
                let fields: Vec<String> = sink.fields.iter().map(|f| f.name.clone()).collect();
                let mut sel = fields.clone();
                sel.push("Id".into());
                let mut by_id: Vec<String> = to_update
                    .iter()
                    .filter(|(n, _)| dry || first_sight.contains(n))
                    .map(|(_, id)| id.clone())
                    .collect();
                by_id.retain(|s| !s.is_empty());
                let mut current: HashMap<String, Map<String, Value>> = HashMap::new();
                if !by_id.is_empty() {
                    for r in self.writer.find(&sink.sobject, "Id", &by_id, &sel).await? {
                        if let Some(id) = r.get("Id").and_then(Value::as_str) {
                            current.insert(id.to_string(), r.clone());
                        }
                    }
                }
                if let Some(crate::config::SinkKey::ExternalIdField(ext)) = &sink.key {
                    let vals: Vec<String> = to_create
                        .iter()
                        .map(|n| intents[*n].1.key.clone())
                        .collect();
                    if !vals.is_empty() {
                        let found = self.writer.find(&sink.sobject, ext, &vals, &sel).await?;
                        let mut moved = Vec::new();
                        for n in &to_create {
                            let key = &intents[*n].1.key;
                            if let Some(r) = found.iter().find(|r| {
                                r.get(ext).map(render::scalar_string).as_deref()
                                    == Some(key.as_str())
                            }) {
                                let id = r
                                    .get("Id")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string();
                                current.insert(id.clone(), r.clone());
                                moved.push((*n, id));
                            }
                        }
                        to_create.retain(|n| !moved.iter().any(|(m, _)| m == n));
                        to_update.extend(moved);
                    }
                }
                let mut still_update = Vec::new();
                for (n, id) in to_update.drain(..) {
                    let w = &intents[n].1;
                    let diff = match current.get(&id) {
                        Some(cur) => field_diff(cur, &w.update_fields()),
                        None => w
                            .update_fields()
                            .into_iter()
                            .map(|(k, v)| (k, (Value::Null, v)))
                            .collect(),
                    };
                    if diff.is_empty() && first_sight.contains(&n) && current.contains_key(&id) {
                        if !dry {
                            commit.ledger.push(LedgerWrite {
                                sink: sink.name.clone(),
                                key: w.key.clone(),
                                sf_id: Some(id.clone()),
                                hash: w.hash(),
                                state: LedgerState::Written,
                            });
                        } else {
                            planned.insert(
                                (sink.name.clone(), w.key.clone()),
                                planned_entry(Some(id.clone()), w.hash(), self.now),
                            );
                        }
                        results.insert(n, (Some(id), false, WriteAction::Unchanged));
                    } else {
                        if dry {
                            diffs.insert(n, diff);
                        }
                        still_update.push((n, id));
                    }
                }
                to_update = still_update;
            }
            if dry {
                let writes = (to_create.len() + to_update.len()) as u64;
                *planned_sf_writes += writes.div_ceil(200);
                for n in &to_create {
                    let placeholder = format!("(new {} {})", sink.sobject, intents[*n].1.key);
                    planned.insert(
                        (sink.name.clone(), intents[*n].1.key.clone()),
                        planned_entry(Some(placeholder.clone()), intents[*n].1.hash(), self.now),
                    );
                    results.insert(*n, (Some(placeholder), true, WriteAction::Create));
                }
                for (n, id) in &to_update {
                    planned.insert(
                        (sink.name.clone(), intents[*n].1.key.clone()),
                        planned_entry(Some(id.clone()), intents[*n].1.hash(), self.now),
                    );
                    results.insert(*n, (Some(id.clone()), false, WriteAction::Update));
                }
            } else {
                let op = match (&sink.action, &sink.key) {
                    (Action::Upsert, Some(crate::config::SinkKey::ExternalIdField(f))) => {
                        WriteOp::Upsert {
                            external_id_field: f.clone(),
                        }
                    }
                    (Action::Publish, _) => WriteOp::Publish,
                    (Action::Update, _) => WriteOp::Update,
                    _ => WriteOp::Insert,
                };
                // Creates (inserts: record the intent first, so a crash cannot duplicate).
                if !to_create.is_empty() {
                    if op == WriteOp::Insert {
                        let marks: Vec<(String, String)> = to_create
                            .iter()
                            .map(|n| (intents[*n].1.key.clone(), intents[*n].1.hash()))
                            .collect();
                        self.store
                            .ledger_mark_pending(&p.name, &sink.name, &marks)
                            .map_err(|e| format!("saving state: {e}"))?;
                    }
                    let recs: Vec<Map<String, Value>> = to_create
                        .iter()
                        .map(|n| intents[*n].1.fields.clone())
                        .collect();
                    // A failure part-way keeps what Salesforce acknowledged before it.
                    let outs = match self
                        .writer
                        .write_partial(&sink.sobject, op.clone(), recs)
                        .await
                    {
                        Ok(outs) => outs,
                        Err((e, done)) => {
                            stop = Some(e);
                            done
                        }
                    };
                    {
                        {
                            for (n, o) in to_create.iter().zip(outs) {
                                self.record_outcome(
                                    commit,
                                    sink,
                                    &intents[*n].1,
                                    *n,
                                    o,
                                    true,
                                    &mut results,
                                );
                            }
                        }
                    }
                }
                if stop.is_none() && !to_update.is_empty() {
                    let recs: Vec<Map<String, Value>> = to_update
                        .iter()
                        .map(|(n, id)| {
                            let w = &intents[*n].1;
                            let mut f = w.update_fields();
                            match &op {
                                WriteOp::Upsert { .. } => {}
                                _ => {
                                    f.insert("Id".into(), Value::String(id.clone()));
                                }
                            }
                            f
                        })
                        .collect();
                    let uop = match &op {
                        WriteOp::Upsert { .. } => op.clone(),
                        _ => WriteOp::Update,
                    };
                    let outs = match self.writer.write_partial(&sink.sobject, uop, recs).await {
                        Ok(outs) => outs,
                        Err((e, done)) => {
                            stop = Some(e);
                            done
                        }
                    };
                    {
                        {
                            for ((n, id), mut o) in to_update.iter().zip(outs) {
                                if o.id.is_none() {
                                    o.id = Some(id.clone());
                                }
                                self.record_outcome(
                                    commit,
                                    sink,
                                    &intents[*n].1,
                                    *n,
                                    o,
                                    false,
                                    &mut results,
                                );
                            }
                        }
                    }
                }
            }

            // Report per intent and fill sinks.NAME for later sinks.
            let mut per_record: BTreeMap<usize, Vec<(WriteIntent, Option<String>, bool)>> =
                BTreeMap::new();
            for (n, (i, w)) in intents.iter().enumerate() {
                let rep_n = last_of_key.get(&w.key).copied().unwrap_or(n);
                let Some((id, created, action)) = results.get(&rep_n).cloned() else {
                    if stop.is_some() {
                        continue;
                    }
                    continue;
                };
                if action == WriteAction::Error {
                    reports[*i].writes.push(WriteReport {
                        sink: sink.name.clone(),
                        sobject: sink.sobject.clone(),
                        action,
                        key: w.key.clone(),
                        id: None,
                        fields: None,
                        diff: None,
                        reason: None,
                        message: id.clone(),
                    });
                    continue;
                }
                let shown = if rep_n != n {
                    WriteAction::Unchanged
                } else {
                    action
                };
                reports[*i].writes.push(WriteReport {
                    sink: sink.name.clone(),
                    sobject: sink.sobject.clone(),
                    action: shown,
                    key: w.key.clone(),
                    id: id.clone().filter(|s| !s.starts_with("(new")),
                    fields: (shown == WriteAction::Create).then(|| w.fields.clone()),
                    diff: if shown == WriteAction::Update {
                        diffs.get(&n).cloned()
                    } else {
                        None
                    },
                    reason: None,
                    message: None,
                });
                if sink.read_later {
                    per_record
                        .entry(*i)
                        .or_default()
                        .push((w.clone(), id, created));
                }
            }
            // No template reads this sink's result: nothing to keep.
            for (i, st) in states.iter_mut().enumerate().filter(|_| sink.read_later) {
                let v = per_record
                    .get(&i)
                    .map(|ws| render::sink_result_value(ws, has_for_each[i]))
                    .unwrap_or(Value::Null);
                st.set_sink(&sink.name, v);
            }
            if stop.is_some() {
                break;
            }
        }

        // Records that failed to render go to dead letters with the reason.
        for (i, f) in failed.iter().enumerate() {
            if let Some(msg) = f {
                reports[i].errors.push(msg.clone());
                if !dry {
                    commit.dead_letters.push(NewDeadLetter {
                        sink: String::new(),
                        key: reports[i].source.key.clone(),
                        payload: states[i].record.clone(),
                        error: msg.clone(),
                    });
                }
            }
        }
        for r in reports {
            report.push(r, opts.detail);
        }
        match stop {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_outcome(
        &self,
        commit: &mut BatchCommit,
        sink: &crate::config::Sink,
        w: &WriteIntent,
        n: usize,
        o: WriteOutcome,
        create: bool,
        results: &mut HashMap<usize, (Option<String>, bool, WriteAction)>,
    ) {
        match o.error {
            None => {
                commit.ledger.push(LedgerWrite {
                    sink: sink.name.clone(),
                    key: w.key.clone(),
                    sf_id: o.id.clone(),
                    hash: w.hash(),
                    state: LedgerState::Written,
                });
                let action = if create && (o.created || sink.action == Action::Insert) {
                    WriteAction::Create
                } else {
                    WriteAction::Update
                };
                results.insert(n, (o.id, o.created || create, action));
            }
            Some(err) => {
                commit.dead_letters.push(NewDeadLetter {
                    sink: sink.name.clone(),
                    key: w.key.clone(),
                    payload: serde_json::json!({
                        "sobject": w.sobject,
                        "fields": w.fields,
                        "id": w.id,
                        "update_fields": w.update_fields(),
                        "hash": w.hash(),
                    }),
                    error: err.clone(),
                });
                results.insert(n, (Some(err), false, WriteAction::Error));
            }
        }
    }

    /// One record's `enrich` reads, in order. `Err` is a failure that would fail every
    /// record (the run stops); a missing child read of one record is that record's error.
    async fn enrich_one(
        &self,
        p: &Pipeline,
        g: &Globals,
        rec: Value,
    ) -> Result<(Value, Option<String>), String> {
        let mut rec = rec;
        let mut err: Option<String> = None;
        for e in &p.enrich {
            let ctx = render::RecordOnly { record: &rec, g };
            if let Some(w) = &e.when {
                match w.truthy(&ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        set_field(&mut rec, &e.name, Value::Null);
                        continue;
                    }
                    Err(x) => {
                        err = Some(format!("enrich.{}.when: {x}", e.name));
                        break;
                    }
                }
            }
            let mut params = BTreeMap::new();
            for (k, ex) in &e.params {
                match ex.eval(&ctx) {
                    Ok(v) => {
                        params.insert(k.clone(), v);
                    }
                    Err(x) => err = Some(format!("enrich.{}.params.{k}: {x}", e.name)),
                }
            }
            if err.is_some() {
                break;
            }
            match self.source.fetch(&e.stream, params).await {
                Ok(v) => set_field(&mut rec, &e.name, v),
                Err(FetchError::NotFound(_)) if e.optional => {
                    set_field(&mut rec, &e.name, Value::Null)
                }
                Err(FetchError::NotFound(m)) => {
                    err = Some(format!("enrich.{}: {m}", e.name));
                    break;
                }
                Err(FetchError::Failed(m)) => return Err(format!("enrich.{}: {m}", e.name)),
            }
        }
        Ok((rec, err))
    }
}

/// What the reading side of a run hands to the batches, in source order.
enum Fed {
    /// An enriched record, with the error that keeps it from being written, if any.
    Record(Value, Option<String>),
    /// The end of a page: once every record before it is committed, the partition may
    /// advance to `cursor`.
    PageEnd { partition: String, cursor: String },
    /// Reading the source failed: no more records.
    ReadFailed(String),
    /// An enrichment failed in a way that would fail every record: no more records.
    EnrichFailed(String),
}

/// A record waiting for its enrichment, or something to pass on as it is.
enum Step {
    Enrich(Box<Value>, Option<String>),
    Ready(Fed),
}

/// Rendering a batch is CPU work between awaits: every few records, let the reading side
/// (polled by the same task) send the Zoom requests whose turn has come.
async fn yield_every_few(i: usize) {
    if i % 16 == 15 {
        tokio::task::yield_now().await;
    }
}

fn planned_entry(sf_id: Option<String>, hash: String, now: DateTime<Utc>) -> LedgerEntry {
    LedgerEntry {
        sf_id,
        hash,
        state: LedgerState::Written,
        updated_at: now,
    }
}

fn set_field(rec: &mut Value, name: &str, v: Value) {
    if let Value::Object(m) = rec {
        m.insert(name.to_string(), v);
    }
}

/// The source record's identity in reports and `--record`.
pub fn record_key(r: &Value, pk: Option<&str>) -> String {
    let fields = [pk.unwrap_or("uuid"), "uuid", "id", "call_id", "email"];
    for f in fields {
        if let Some(v) = r.get(f) {
            let s = render::scalar_string(v);
            if !s.is_empty() {
                return s;
            }
        }
    }
    String::new()
}

fn record_title(r: &Value) -> String {
    let name = ["topic", "name", "display_name", "email", "caller_name"]
        .iter()
        .find_map(|f| r.get(*f).and_then(Value::as_str))
        .unwrap_or("");
    let when = ["start_time", "date_time", "created_at"]
        .iter()
        .find_map(|f| r.get(*f).and_then(Value::as_str))
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| format!(" ({} UTC)", t.with_timezone(&Utc).format("%Y-%m-%d %H:%M")))
        .unwrap_or_default();
    if name.is_empty() {
        when.trim().to_string()
    } else {
        format!("{name:?}{when}")
    }
}

fn field_diff(
    cur: &Map<String, Value>,
    want: &Map<String, Value>,
) -> BTreeMap<String, (Value, Value)> {
    let mut d = BTreeMap::new();
    for (k, v) in want {
        let before = cur.get(k).cloned().unwrap_or(Value::Null);
        if !same_value(&before, v) {
            d.insert(k.clone(), (before, v.clone()));
        }
    }
    d
}

/// Salesforce echoes values in its own forms (numbers as numbers, datetimes with +0000);
/// compare loosely so a plan does not show changes that are not.
fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let (sa, sb) = (render::scalar_string(a), render::scalar_string(b));
    if sa == sb {
        return true;
    }
    if let (Ok(x), Ok(y)) = (
        DateTime::parse_from_rfc3339(&sa.replace("+0000", "Z")),
        DateTime::parse_from_rfc3339(&sb.replace("+0000", "Z")),
    ) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (sa.parse::<f64>(), sb.parse::<f64>()) {
        return x == y;
    }
    false
}

/// The lookup cache, kept in the state file.
struct StoreCache<'a> {
    store: &'a Store,
    now: DateTime<Utc>,
}

impl LookupCache for StoreCache<'_> {
    fn get_many(&self, scope: &str, keys: &[String]) -> HashMap<String, Value> {
        // An unreadable cache costs queries, not correctness: ask Salesforce instead.
        self.store
            .cache_get_many(scope, keys, self.now)
            .unwrap_or_else(|e| {
                tracing::warn!("lookup cache unreadable, querying Salesforce: {e}");
                HashMap::new()
            })
    }
    fn put_many(&self, scope: &str, entries: &[(String, Value)], ttl: std::time::Duration) {
        let exp = self.now
            + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::days(1));
        if let Err(e) = self.store.cache_put_many(scope, entries, exp) {
            tracing::warn!("could not cache lookup results: {e}");
        }
    }
}
