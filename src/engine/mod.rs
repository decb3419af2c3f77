//! Run and plan, stage by stage, in the order a record walks (see docs/architecture.md):
//!
//! ```text
//! feed (read, --record/--limit, where) → enrich → lookup → vars → render → write → commit
//! ```
//!
//! Each stage is a module of [`stage`] working on a [`Batch`] passed along as a value. A run
//! and a plan walk the same path; only the [`Ending`] differs: an [`Applier`] writes to the
//! sink and commits ledger rows, dead letters and checkpoints together, a [`Differ`]
//! compares with what the sink holds and counts the calls a run would spend. The ending is
//! chosen once, in [`Engine::run`]; no stage asks which one it has. Dead letters an admin
//! marked for retry go through the same stages first ([`retry`]).

pub(crate) mod batch;
pub mod connect;
pub(crate) mod ending;
pub(crate) mod error;
pub(crate) mod lookup;
pub mod projection;
pub mod render;
pub mod report;
pub(crate) mod retry;
pub(crate) mod schema;
pub(crate) mod stage;
pub mod testing;
pub mod zoom;

pub use batch::Batch;
pub use ending::{Applier, Differ, Ending};
pub use error::{ConnectorError, ErrorKind, FetchError, RecordError, StageError};

use crate::config::Pipeline;
use crate::state::Store;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
pub use lookup::Matcher;
use render::Globals;
use report::PipelineReport;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
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

/// Where an incremental read starts and ends: each partition from its checkpoint minus
/// `lookback`, partitions never read from `default_since`, all up to `until`.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub checkpoints: BTreeMap<String, DateTime<Utc>>,
    pub default_since: DateTime<Utc>,
    pub lookback: chrono::Duration,
    pub until: DateTime<Utc>,
}

/// A connector that yields records (the source of a pipeline).
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// The connection kind streams are named after (`zoom` in `zoom.past_meetings`).
    fn kind(&self) -> &str;
    /// Pages of a stream, each partition in cursor order.
    fn read(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
        window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, ConnectorError>>;
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

/// The sink's answer for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub id: Option<String>,
    pub created: bool,
    /// A rejection of this record alone (already retried where retrying helps).
    pub error: Option<String>,
}

/// The sink side of a pipeline: records kept in objects named by the pipeline's sinks
/// (`sobject`), each record with an Id (Salesforce's sObjects).
#[async_trait::async_trait]
pub trait ObjectSink: Send + Sync {
    /// Writes records; one outcome per record, in order. `Err` is a failure that would fail
    /// every record (credentials, a missing field, the budget): the run stops.
    async fn write(
        &self,
        object: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<WriteOutcome>, ConnectorError>;
    /// As [`ObjectSink::write`]; a failure part-way also answers the outcomes of the records
    /// the sink already acknowledged (the first ones of `records`, in order), so the engine
    /// keeps them in the ledger.
    async fn write_partial(
        &self,
        object: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<WriteOutcome>, (ConnectorError, Vec<WriteOutcome>)> {
        self.write(object, op, records)
            .await
            .map_err(|e| (e, Vec::new()))
    }
    /// Records whose `field` is one of `values`, with the `select`ed fields (for plans and for
    /// checks before re-inserting).
    async fn find(
        &self,
        object: &str,
        field: &str,
        values: &[String],
        select: &[String],
    ) -> Result<Vec<Map<String, Value>>, ConnectorError>;
    /// Requests spent so far.
    fn calls(&self) -> u64;
    /// The fields of `object` as the sink checks values (types, lengths, restricted
    /// picklists, required fields), so a value it would refuse is reported before it is
    /// sent. `None`: the sink kind has no schema to check against.
    async fn field_schema(
        &self,
        _object: &str,
    ) -> Result<Option<schema::ObjectSchema>, ConnectorError> {
        Ok(None)
    }
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
    /// The pipeline lease the run holds: every batch commit checks its fencing number, and
    /// a run whose lease changed hands stops without moving the checkpoint.
    pub lease: Option<crate::state::Lease>,
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
            lease: None,
        }
    }

    /// Whether the read covers the whole source, so checkpoints may move (not `--record`,
    /// `--limit` or webhook records).
    fn reads_everything(&self) -> bool {
        self.records.is_none() && self.record.is_none() && self.limit.is_none()
    }

    fn shutting_down(&self) -> bool {
        self.shutdown
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// What the engine needs around it.
pub struct Engine<'a> {
    pub store: &'a Store,
    pub source: &'a dyn Source,
    pub matcher: &'a dyn Matcher,
    pub sink: &'a dyn ObjectSink,
    /// Zoom, for `zoom:` sinks (None: the project has no Zoom connection to write to).
    pub zoom: Option<&'a dyn zoom::ZoomWriter>,
    pub settings: &'a Value,
    pub now: DateTime<Utc>,
}

/// How far back a stream with no checkpoint and no `since` starts.
const DEFAULT_START_DAYS: i64 = 30;

/// Why a run stopped when it was asked to.
const SHUTTING_DOWN: &str = "shutting down; the next run continues here";

/// One run or plan of one pipeline: what every stage reads.
pub struct Cx<'a> {
    pub engine: &'a Engine<'a>,
    pub p: &'a Pipeline,
    pub g: &'a Globals,
    pub opts: &'a RunOptions,
}

impl Engine<'_> {
    /// Runs (or plans) one pipeline to the end of its source. The only place that looks
    /// at the mode: it chooses the ending.
    pub async fn run(&self, p: &Pipeline, opts: &RunOptions) -> PipelineReport {
        let dry = opts.mode == Mode::Plan;
        let mut report = PipelineReport::new(&p.name, dry);
        let source_before = self.source.calls();
        let sink_before = self.sink.calls();
        let now = self.now.to_rfc3339();
        let g = Globals::new(self.settings, &opts.run_id, &p.name, &now, dry);
        let cx = Cx {
            engine: self,
            p,
            g: &g,
            opts,
        };
        let pages = match cx.pages().await {
            Ok(pages) => pages,
            Err(e) => {
                report.stop(e.to_string());
                return report;
            }
        };
        let zoom_before = self.zoom.map_or(0, |z| z.calls());
        // Records a daily limit held back walk first, once their limit has reset.
        let deferred = cx.deferred_pages().await;
        let (planned_calls, planned_zoom) = match opts.mode {
            Mode::Plan => {
                let mut differ = Differ::new(self.now);
                if let Some(d) = deferred {
                    cx.walk(d, &mut differ, &mut report).await;
                }
                cx.walk(pages, &mut differ, &mut report).await;
                (differ.planned_calls(), differ.planned_zoom_calls())
            }
            Mode::Run => {
                let mut applier = Applier::new(self.store, self.sink, &p.name, opts.lease.as_ref());
                if opts.records.is_none() {
                    retry::retry_dead_letters(&cx, &mut applier, &mut report).await;
                }
                if let Some(d) = deferred {
                    cx.walk(d, &mut applier, &mut report).await;
                }
                if report.stopped.is_none() {
                    cx.walk(pages, &mut applier, &mut report).await;
                }
                (0, 0)
            }
        };
        report.finish();
        report.summary.api_calls.zoom = self.source.calls() - source_before;
        if let Some(z) = self.zoom {
            // A Zoom source and a Zoom sink share one client: count its calls once.
            let sink_calls = z.calls().saturating_sub(zoom_before);
            if self.source.kind() != "zoom" {
                report.summary.api_calls.zoom += sink_calls;
            }
            report.summary.api_calls.zoom += planned_zoom;
        }
        // A plan spends the run's reads (lookups, checks of existing records) for real and
        // counts the writes it would make.
        report.summary.api_calls.salesforce = self.sink.calls() - sink_before + planned_calls;
        report
    }

    async fn read_spec(&self, p: &Pipeline) -> ReadSpec {
        let mut checkpoints = BTreeMap::new();
        match self.store.checkpoints(Some(&p.name)).await {
            Ok(rows) => {
                for r in rows {
                    if r.stream == p.source.stream {
                        if let Ok(t) = DateTime::parse_from_rfc3339(&r.cursor) {
                            checkpoints.insert(r.partition.clone(), t.with_timezone(&Utc));
                        }
                    }
                }
            }
            // Reading from the start again costs calls, not correctness (the ledger keeps
            // what was written).
            Err(e) => tracing::warn!(
                "cannot read the checkpoints of {}, reading from the start: {e}",
                p.name
            ),
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
}

impl Cx<'_> {
    fn stream(&self) -> &str {
        &self.p.source.stream
    }

    /// The source's pages: the stream from its checkpoints, or the webhook's records.
    async fn pages(&self) -> Result<BoxStream<'static, Result<Page, ConnectorError>>, StageError> {
        let params = stage::feed::source_params(self)?;
        if let Some(recs) = &self.opts.records {
            let page = Page {
                partition: String::new(),
                records: recs.clone(),
                cursor: None,
            };
            return Ok(futures::stream::iter(vec![Ok(page)]).boxed());
        }
        let window = self.engine.read_spec(self.p).await;
        Ok(self.engine.source.read(self.stream(), params, window))
    }

    /// The records of deferrals whose limit has reset (or whose answer was lost), as one
    /// page without a cursor: they go through the stages before the source's pages.
    async fn deferred_pages(&self) -> Option<BoxStream<'static, Result<Page, ConnectorError>>> {
        if self.opts.records.is_some() || self.opts.record.is_some() {
            return None;
        }
        let due = match self.engine.store.zoom_deferrals(Some(&self.p.name)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot read the deferrals of {}: {e}", self.p.name);
                return None;
            }
        };
        let mut seen = std::collections::HashSet::new();
        let records: Vec<Value> = due
            .into_iter()
            .filter(|d| d.not_before <= self.engine.now)
            .filter(|d| seen.insert(d.record.to_string()))
            .map(|d| d.record)
            .collect();
        if records.is_empty() {
            return None;
        }
        let page = Page {
            partition: String::new(),
            records,
            cursor: None,
        };
        Some(futures::stream::iter(vec![Ok(page)]).boxed())
    }

    /// Every batch of the source through the stages to `ending`. Reading and enriching
    /// run ahead of lookups and writes by at most half a batch ([`read_ahead`]), so the
    /// source is not left idle while a batch is looked up and written, and memory stays
    /// bounded. Nothing read ahead is committed: checkpoints move only with a batch.
    async fn walk(
        &self,
        pages: BoxStream<'static, Result<Page, ConnectorError>>,
        ending: &mut dyn Ending,
        report: &mut PipelineReport,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(read_ahead(self.opts.batch_size));
        let feed = stage::feed::feed(self, pages, tx);
        let batches = async {
            loop {
                let gathered = stage::feed::gather(&mut rx, self.opts.batch_size).await;
                if gathered.is_empty() {
                    if let Some(e) = gathered.stop {
                        report.stop(e.to_string());
                    }
                    break;
                }
                let ended = gathered.ended;
                if !self.one_batch(gathered, ending, report).await {
                    break;
                }
                // A shutdown after the last batch has nothing left to stop.
                if ended {
                    break;
                }
                if self.opts.shutting_down() {
                    report.stopped = Some(SHUTTING_DOWN.into());
                    break;
                }
            }
        };
        // The batches decide when the run ends; whatever was read ahead is then dropped.
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

    /// One gathered batch through the stages and its commit. False when the run stops.
    async fn one_batch(
        &self,
        gathered: stage::feed::Gathered,
        ending: &mut dyn Ending,
        report: &mut PipelineReport,
    ) -> bool {
        let mut batch = Batch::new(self, gathered.records);
        let outcome = stage::process(self, &mut batch, ending, report).await;
        stage::commit::commit(
            self,
            batch,
            gathered.cursors,
            outcome,
            gathered.stop,
            ending,
            report,
        )
        .await;
        if let Some(cb) = &self.opts.progress {
            cb(report);
        }
        report.stopped.is_none()
    }
}

/// Enriched records that may wait for the batch in flight: half a batch. A batch's lookups
/// and writes take a few requests, far less time than enriching half a batch takes under
/// Zoom's limits (250 meetings at 18 a second), so the source never waits for them; each
/// record waiting holds its enrichment (a meeting's participants, summary and recordings),
/// so a whole batch waiting cost peak memory for no gain.
pub fn read_ahead(batch_size: usize) -> usize {
    (batch_size / 2).max(1)
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
