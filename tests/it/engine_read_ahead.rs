//! The engine reads and enriches the next batch while the current one is looked up and
//! written, so Zoom is not left idle between batches; and it reads at most one batch ahead,
//! so memory stays bounded however long the backfill.

use crate::support;

use chrono::{TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::{
    ConnectorError, Engine, FetchError, Mode, ObjectSink, Page, ReadSpec, RunOptions, Source,
    WriteOp, WriteOutcome,
};
use futures::stream::BoxStream;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Env;

const BATCH: usize = 10;
const CONCURRENCY: usize = 4;

fn clock() -> SharedClock {
    ManualClock::auto(
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .expect("time"),
    )
}

/// The Zoom source, noting which meetings have been enriched.
struct Watched<'a> {
    inner: &'a dyn Source,
    enriched: Arc<Mutex<BTreeSet<String>>>,
}

#[async_trait::async_trait]
impl Source for Watched<'_> {
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn read(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
        window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, ConnectorError>> {
        self.inner.read(stream, params, window)
    }
    async fn fetch(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
    ) -> Result<Value, FetchError> {
        if let Some(Value::String(uuid)) = params.get("meeting_uuid") {
            if let Ok(mut seen) = self.enriched.lock() {
                seen.insert(uuid.clone());
            }
        }
        self.inner.fetch(stream, params).await
    }
    fn primary_key(&self, stream: &str) -> Option<String> {
        self.inner.primary_key(stream)
    }
    fn cursor_field(&self, stream: &str) -> Option<String> {
        self.inner.cursor_field(stream)
    }
    fn calls(&self) -> u64 {
        self.inner.calls()
    }
}

/// The Salesforce writer, whose first write waits until reading ahead has settled and
/// notes how many meetings had been enriched by then.
struct Held<'a> {
    inner: &'a dyn ObjectSink,
    enriched: Arc<Mutex<BTreeSet<String>>>,
    first: AtomicBool,
    during_first_write: Mutex<Option<usize>>,
}

impl Held<'_> {
    fn enriched(&self) -> usize {
        self.enriched.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl ObjectSink for Held<'_> {
    async fn write(
        &self,
        sobject: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<WriteOutcome>, ConnectorError> {
        if !self.first.swap(true, Ordering::SeqCst) {
            // Wait for the count to stop moving (or for a generous while, so a missing
            // read-ahead fails the assertion below rather than hanging the test).
            let mut last = self.enriched();
            let mut still = 0;
            for _ in 0..400 {
                tokio::time::sleep(Duration::from_millis(25)).await;
                let now = self.enriched();
                still = if now == last { still + 1 } else { 0 };
                last = now;
                if still >= 20 {
                    break;
                }
            }
            if let Ok(mut d) = self.during_first_write.lock() {
                *d = Some(last);
            }
        }
        self.inner.write(sobject, op, records).await
    }
    async fn find(
        &self,
        sobject: &str,
        field: &str,
        values: &[String],
        select: &[String],
    ) -> Result<Vec<Map<String, Value>>, ConnectorError> {
        self.inner.find(sobject, field, values, select).await
    }
    fn calls(&self) -> u64 {
        self.inner.calls()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_enriched_while_one_is_written_and_no_further() {
    let env = Env::start(clock(), 80, |_| {}).await;
    let project = env.project();
    let conns = env.connect(&project).await;
    let settings = Value::Object(project.config.settings.clone());
    let p = project
        .pipeline("meetings-to-events")
        .expect("pipeline exists");
    let enriched = Arc::new(Mutex::new(BTreeSet::new()));
    let source = Watched {
        inner: &conns.zoom,
        enriched: enriched.clone(),
    };
    let writer = Held {
        inner: &conns.salesforce,
        enriched: enriched.clone(),
        first: AtomicBool::new(false),
        during_first_write: Mutex::new(None),
    };
    let engine = Engine {
        store: &conns.store,
        source: &source,
        matcher: &conns.salesforce,
        sink: &writer,
        zoom: None,
        settings: &settings,
        now: env.clock.now(),
    };
    let mut opts = RunOptions::new(Mode::Run);
    opts.batch_size = BATCH;
    opts.enrich_concurrency = CONCURRENCY;
    // Records read by the first batch, noted when it is committed.
    let first_batch = Arc::new(Mutex::new(None::<u64>));
    let fb = first_batch.clone();
    opts.progress = Some(Arc::new(move |r| {
        if let Ok(mut f) = fb.lock() {
            f.get_or_insert(r.records_read);
        }
    }));
    let report = engine.run(p, &opts).await;
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    let total = enriched.lock().map(|s| s.len()).unwrap_or(0);
    assert!(
        report.records_read as usize > 3 * BATCH,
        "enough records for several batches: {}",
        report.records_read
    );
    assert_eq!(
        total, report.records_read as usize,
        "every record enriched once"
    );

    let during = writer
        .during_first_write
        .lock()
        .ok()
        .and_then(|d| *d)
        .expect("the run wrote");
    let first = first_batch
        .lock()
        .ok()
        .and_then(|f| *f)
        .expect("a batch was committed") as usize;
    assert!(
        first <= BATCH,
        "batches of {BATCH} records, the first had {first}"
    );
    // Records of the next batch were enriched while the first was being written...
    assert!(
        during > first,
        "{during} meetings enriched while the first batch of {first} was written"
    );
    // ...but no more than half a batch ahead: the records read ahead, the enrichments in
    // flight and one waiting to be handed over.
    assert!(
        during <= first + ferry::engine::read_ahead(BATCH) + CONCURRENCY + 1,
        "{during} meetings enriched while the first batch of {first} was written"
    );
}
