//! The feed: pages of the source in order, filtered (`--record`, `--limit`, `where`) and
//! enriched ahead of the batches, then gathered into batches.

use super::enrich::Enricher;
use crate::engine::error::{ConnectorError, RecordError, StageError};
use crate::engine::render::RecordOnly;
use crate::engine::{Cx, Page, record_key};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// What the reading side of a run hands to the batches, in source order.
pub enum Fed {
    /// An enriched record, with the error that keeps it from being written, if any.
    Record(Value, Option<RecordError>),
    /// The end of a page: once every record before it is committed, the partition may
    /// advance to `cursor`.
    PageEnd { partition: String, cursor: String },
    /// Reading the source failed, or an enrichment failed in a way that would fail every
    /// record: no more records.
    Failed(StageError),
}

/// A record waiting for its enrichment, or something to pass on as it is.
enum Step {
    Enrich(Box<Value>, Option<RecordError>),
    Ready(Fed),
}

/// The source's `params`, rendered once per run.
pub fn source_params(cx: &Cx<'_>) -> Result<BTreeMap<String, Value>, StageError> {
    let ctx = RecordOnly {
        record: &Value::Null,
        g: cx.g,
    };
    let mut out = BTreeMap::new();
    for (k, e) in &cx.p.source.params {
        let v = e.eval(&ctx).map_err(|error| StageError::SourceParams {
            param: k.clone(),
            error,
        })?;
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// `where`: None drops the record; an error keeps it, to be reported.
pub fn sift(cx: &Cx<'_>, r: Value) -> Option<(Value, Option<RecordError>)> {
    let Some(w) = &cx.p.source.where_ else {
        return Some((r, None));
    };
    match w.truthy(&RecordOnly {
        record: &r,
        g: cx.g,
    }) {
        Ok(true) => Some((r, None)),
        Ok(false) => None,
        Err(e) => Some((r, Some(RecordError::Where(e)))),
    }
}

/// The reading side of a run: pages in source order, filtered and enriched
/// `enrich_concurrency` records at a time, continuously across pages and batches, into
/// `tx`. Stops after a failure or when `tx` is closed.
pub async fn feed(
    cx: &Cx<'_>,
    pages: BoxStream<'static, Result<Page, ConnectorError>>,
    tx: mpsc::Sender<Fed>,
) {
    let opts = cx.opts;
    let stream = cx.stream();
    let pk = cx.engine.source.primary_key(stream);
    let enricher = Enricher::new(cx);
    let concurrency = opts.enrich_concurrency.max(1);
    let (mut step_tx, step_rx) = futures::channel::mpsc::channel::<Step>(concurrency);
    let read = async move {
        let mut pages = pages;
        let mut seen = 0usize;
        while let Some(page) = pages.next().await {
            let mut out: Vec<Step> = Vec::new();
            let done = match page {
                Err(error) => {
                    out.push(Step::Ready(Fed::Failed(StageError::Read {
                        stream: stream.to_string(),
                        error,
                    })));
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
                        sift(cx, r).map(|(r, err)| Step::Enrich(Box::new(r), err))
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
        let enricher = &enricher;
        let fed = step_rx
            .map(|step| async move {
                match step {
                    Step::Ready(f) => f,
                    Step::Enrich(rec, where_err) => match enricher.enrich(*rec).await {
                        Ok((rec, err)) => Fed::Record(rec, where_err.or(err)),
                        Err(e) => Fed::Failed(e),
                    },
                }
            })
            .buffered(concurrency);
        tokio::pin!(fed);
        while let Some(f) = fed.next().await {
            let last = matches!(f, Fed::Failed(_));
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

/// Records (of any partitions) gathered up to a batch, with the checkpoints they let
/// partitions move to.
pub struct Gathered {
    pub records: Vec<(Value, Option<RecordError>)>,
    /// (partition, cursor): pages whose every record is in this batch or an earlier one.
    pub cursors: Vec<(String, String)>,
    /// The reading side failed: the run stops after this batch.
    pub stop: Option<StageError>,
    /// Nothing more will come.
    pub ended: bool,
}

impl Gathered {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.cursors.is_empty()
    }
}

/// Gathers up to `batch_size` records from the feed: lookups cost one query per rule per
/// batch and writes one call per 200 records, so bigger batches cost fewer calls.
pub async fn gather(rx: &mut mpsc::Receiver<Fed>, batch_size: usize) -> Gathered {
    let mut g = Gathered {
        records: Vec::new(),
        cursors: Vec::new(),
        stop: None,
        ended: false,
    };
    while g.records.len() < batch_size.max(1) {
        match rx.recv().await {
            None => {
                g.ended = true;
                break;
            }
            Some(Fed::Record(r, err)) => g.records.push((r, err)),
            Some(Fed::PageEnd { partition, cursor }) => {
                // Pages of a partition arrive in order: the last cursor wins.
                g.cursors.retain(|(part, _)| *part != partition);
                g.cursors.push((partition, cursor));
            }
            Some(Fed::Failed(e)) => {
                g.stop = Some(e);
                g.ended = true;
                break;
            }
        }
    }
    g
}
