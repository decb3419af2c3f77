//! The stages, in the order a record walks them:
//!
//! - [`feed`]: pages of the source, `--record`/`--limit`, `where`; gathered into batches
//! - [`enrich`]: each record's child reads (run ahead of the batch, `enrich_concurrency`
//!   at a time)
//! - [`lookup`]: match rules, one query per rule per batch
//! - [`render`]: `vars`, then each sink's templates into write intents
//! - [`write`]: per sink, decides create / update / unchanged from the ledger and the
//!   sink's current records, then hands the writes to the [`Ending`]
//! - [`commit`]: ledger rows, dead letters and checkpoints of the batch, together
//!
//! A stage reads the run ([`Cx`]) and changes the [`Batch`]; none knows whether it is a
//! run or a plan.

pub(crate) mod commit;
pub(crate) mod enrich;
pub(crate) mod feed;
pub(crate) mod lookup;
pub mod render;
pub(crate) mod write;
pub mod zoom;

use super::report::PipelineReport;
use super::{Batch, Cx, Ending, Mode, StageError};
use crate::state::NewDeadLetter;

/// Lookups, vars, sinks and writes of a batch of enriched records. Every record's report
/// is added to `report`, unless the batch stopped before its writes were known.
pub async fn process(
    cx: &Cx<'_>,
    batch: &mut Batch,
    ending: &mut dyn Ending,
    report: &mut PipelineReport,
) -> Result<(), StageError> {
    report.records_read += batch.len() as u64;
    if batch.is_empty() {
        return Ok(());
    }
    lookup::resolve(cx, batch).await?;
    render::vars(cx, batch).await;
    let mut stop = None;
    // Sinks in order; later sinks see what earlier ones wrote.
    for sink in &cx.p.sinks {
        stop = if sink.zoom.is_some() {
            zoom::write(cx, sink, batch, ending).await?
        } else {
            let intents = render::sink_intents(cx, sink, batch).await;
            write::write(cx, sink, intents, batch, ending).await?
        };
        if stop.is_some() {
            break;
        }
    }
    let store = cx.engine.store;
    let hash = |e: &str| store.subject_hash(e);
    // Only a run commits: a plan computes no index rows.
    let index = (cx.opts.mode == Mode::Run).then_some(&hash as &dyn Fn(&str) -> String);
    finish(batch, ending, report, cx.opts.detail, index);
    match stop {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Records that failed before their writes go to dead letters with the reason; every
/// record's report joins the run's.
fn finish(
    batch: &mut Batch,
    ending: &mut dyn Ending,
    report: &mut PipelineReport,
    detail: bool,
    index: Option<&dyn Fn(&str) -> String>,
) {
    let reports = std::mem::take(&mut batch.reports);
    let mut hasher = index.map(crate::privacy::index::BatchHasher::new);
    for (i, mut r) in reports.into_iter().enumerate() {
        // The subject index (privacy requests): committed with the batch's ledger rows.
        if let Some(h) = hasher.as_mut()
            && let Some(rows) = crate::privacy::index::rows_for(&batch.states[i].record, &r, h)
        {
            batch.commit.subjects.push(rows);
        }
        if let Some(err) = &batch.failed[i] {
            let msg = err.to_string();
            ending.dead_letter(
                &mut batch.commit,
                NewDeadLetter {
                    sink: String::new(),
                    key: r.source.key.clone(),
                    payload: batch.states[i].record.clone(),
                    error: msg.clone(),
                },
            );
            r.errors.push(msg);
        }
        report.push(r, detail);
    }
}
