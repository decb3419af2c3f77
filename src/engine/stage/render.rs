//! The render stage: `vars`, then one sink's templates for every record of the batch (see
//! [`crate::engine::render`]). A template that fails keeps its record from being written.

use crate::config::{Sink, SinkAction};
use crate::engine::render::{self, SinkDecision, WriteIntent};
use crate::engine::{Batch, Cx, RecordError};

/// Evaluates `vars` for every record that has not failed.
pub async fn vars(cx: &Cx<'_>, batch: &mut Batch) {
    for (i, st) in batch.states.iter_mut().enumerate() {
        yield_every_few(i).await;
        if batch.failed[i].is_none() {
            if let Err(e) = render::eval_vars(cx.p, st, cx.g) {
                batch.failed[i] = Some(RecordError::Render(e));
            }
        }
    }
}

/// What `sink` wants written for each record of the batch: (record index, intent), in
/// record order. Skips are noted in the records' reports.
pub async fn sink_intents(
    cx: &Cx<'_>,
    sink: &Sink,
    batch: &mut Batch,
) -> Vec<(usize, WriteIntent)> {
    let mut intents = Vec::new();
    for (i, st) in batch.states.iter_mut().enumerate() {
        yield_every_few(i).await;
        if batch.failed[i].is_some() {
            continue;
        }
        match render::render_sink(sink, st, cx.g) {
            Ok(SinkDecision::Skipped { reason }) => {
                batch.reports[i]
                    .skipped
                    .push(format!("{}: {reason}", sink.name));
            }
            Ok(SinkDecision::Writes(ws)) => {
                for w in ws {
                    if w.action == SinkAction::Update && w.id.is_none() {
                        batch.reports[i]
                            .skipped
                            .push(format!("{}: no Id to update", sink.name));
                        continue;
                    }
                    intents.push((i, w));
                }
            }
            Err(e) => batch.failed[i] = Some(RecordError::Render(e)),
        }
    }
    intents
}

/// Rendering a batch is CPU work between awaits: every few records, let the reading side
/// (polled by the same task) send the source requests whose turn has come.
async fn yield_every_few(i: usize) {
    if i % 16 == 15 {
        tokio::task::yield_now().await;
    }
}
