//! A batch: the records that walk the stages together (lookups cost one query per rule
//! per batch, writes one call per 200 records), with what is known about each of them and
//! what the batch will commit.

use super::error::RecordError;
use super::render::{self, RecordState};
use super::report::{RecordReport, SourceRef};
use super::{Cx, record_key};
use crate::state::BatchCommit;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The records of a batch, in cursor order, each with its state, its report and why it
/// will not be written (if it will not); and the ledger rows and dead letters the batch
/// commits together with its checkpoints.
pub struct Batch {
    pub states: Vec<RecordState>,
    pub reports: Vec<RecordReport>,
    pub failed: Vec<Option<RecordError>>,
    pub commit: BatchCommit,
}

impl Batch {
    /// A batch of enriched records (each with the error that keeps it from being written,
    /// if any).
    pub fn new(cx: &Cx<'_>, records: Vec<(Value, Option<RecordError>)>) -> Batch {
        let source = cx.engine.source;
        let stream = cx.stream();
        let pk = source.primary_key(stream);
        // A batch holds pages of several partitions: put its records in cursor order, so
        // that where two records write one sink record the later one wins.
        let mut records = records;
        if let Some(cf) = source.cursor_field(stream) {
            records.sort_by(|(a, _), (b, _)| {
                let k = |r: &Value| r.get(&cf).map(render::scalar_string).unwrap_or_default();
                k(a).cmp(&k(b))
            });
        }
        // Reports name the stream with its source's kind (`zoom.past_meetings`).
        let kind = source.kind();
        let stream_ref = match stream.strip_prefix(kind).and_then(|s| s.strip_prefix('.')) {
            Some(_) => stream.to_string(),
            None => format!("{kind}.{stream}"),
        };
        let mut batch = Batch {
            states: Vec::with_capacity(records.len()),
            reports: Vec::with_capacity(records.len()),
            failed: Vec::with_capacity(records.len()),
            commit: BatchCommit {
                pipeline: cx.p.name.clone(),
                ..BatchCommit::default()
            },
        };
        for (rec, err) in records {
            batch.reports.push(RecordReport {
                source: SourceRef {
                    stream: stream_ref.clone(),
                    key: record_key(&rec, pk.as_deref()),
                },
                title: record_title(&rec),
                writes: Vec::new(),
                unmatched: Vec::new(),
                ambiguous: Vec::new(),
                looked_up: 0,
                unlookable: Vec::new(),
                skipped: Vec::new(),
                errors: Vec::new(),
            });
            batch.states.push(RecordState::new(rec));
            batch.failed.push(err);
        }
        batch
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
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
