//! The commit stage: the batch's ledger rows, dead letters and checkpoints, together, so a
//! checkpoint never moves past a record whose write is not remembered.

use crate::engine::report::PipelineReport;
use crate::engine::{Batch, Cx, Ending, StageError};

/// Ends a processed batch: checkpoints move only past records every sink has
/// acknowledged (a whole batch, and not for partial reads: `--record`, `--limit`, webhook
/// records). `outcome` is the batch's own; `halt` what stopped the reading side after the
/// batch's records (it stops the run unless the batch already did).
pub async fn commit(
    cx: &Cx<'_>,
    mut batch: Batch,
    cursors: Vec<(String, String)>,
    outcome: Result<(), StageError>,
    halt: Option<StageError>,
    ending: &mut dyn Ending,
    report: &mut PipelineReport,
) {
    if outcome.is_ok() && cx.opts.reads_everything() {
        let stream = cx.stream();
        for (partition, cursor) in cursors {
            batch
                .commit
                .checkpoints
                .push((stream.to_string(), partition, cursor));
        }
    }
    if let Some(e) = outcome.err().or(halt) {
        report.stop(e.to_string());
    }
    match ending.commit(&batch.commit).await {
        Ok(()) => report.summary.dead_lettered += batch.commit.dead_letters.len() as u64,
        // Another process runs the pipeline now: say who, not "saving state".
        Err(e @ crate::state::StateError::LeaseLost { .. }) => report.stop(e.to_string()),
        Err(e) => report.stop(StageError::SaveState(e).to_string()),
    }
}
