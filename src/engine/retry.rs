//! Dead letters an admin marked for retry (`ferry deadletters retry`), before a run reads
//! its source: rejected writes are sent again as they were rendered; records that failed
//! before their writes go through the stages again. A letter that fails again stays, with
//! the new error. Only runs retry (the [`Applier`] is their ending).

use super::ending::write_op;
use super::report::PipelineReport;
use super::stage::{self, enrich::Enricher, feed};
use super::{Applier, Batch, Cx, Ending, StageError, WriteOp, WriteOutcome};
use crate::state::{BatchCommit, DeadLetter, LedgerState, LedgerWrite};
use futures::StreamExt;
use serde_json::Value;

pub async fn retry_dead_letters(
    cx: &Cx<'_>,
    applier: &mut Applier<'_>,
    report: &mut PipelineReport,
) {
    let store = cx.engine.store;
    let due = match store.deadletters_due(&cx.p.name).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("cannot read dead letters of {}: {e}", cx.p.name);
            return;
        }
    };
    let (writes, records): (Vec<_>, Vec<_>) = due.into_iter().partition(|d| !d.sink.is_empty());
    for letter in writes {
        let before = report.summary.retried;
        retry_write(cx, &letter, report).await;
        if report.summary.retried == before {
            // Still a dead letter after this run (records retried through the stages are
            // counted by the commit that keeps their new letters).
            report.summary.dead_lettered += 1;
        }
    }
    if !records.is_empty() {
        retry_records(cx, records, applier, report).await;
    }
}

/// Notes that a letter failed again; a state store that cannot take the note is logged
/// (the letter is retried again next run).
async fn failed_again(cx: &Cx<'_>, letter: i64, error: &str) {
    if let Err(e) = cx.engine.store.deadletter_retry_failed(letter, error).await {
        tracing::warn!(
            "could not note that dead letter {letter} of {} failed again: {e}",
            cx.p.name
        );
    }
}

async fn drop_letters(cx: &Cx<'_>, ids: &[i64]) {
    if let Err(e) = cx.engine.store.deadletters_drop(ids).await {
        tracing::warn!(
            "could not drop {} retried dead letter(s) of {}: {e}",
            ids.len(),
            cx.p.name
        );
    }
}

/// A rejected write, sent again as it was rendered.
async fn retry_write(cx: &Cx<'_>, letter: &DeadLetter, report: &mut PipelineReport) {
    let Some(sink) = cx.p.sink(&letter.sink) else {
        let msg = format!("the pipeline has no sink `{}` any more", letter.sink);
        failed_again(cx, letter.id, &msg).await;
        return;
    };
    let pl = &letter.payload;
    let fields = |k: &str| {
        pl.get(k)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let id = pl.get("id").and_then(Value::as_str).map(str::to_string);
    let op = write_op(sink);
    let mut rec = fields(if op == WriteOp::Update {
        "update_fields"
    } else {
        "fields"
    });
    if op == WriteOp::Update {
        rec.insert(
            "Id".into(),
            id.clone().map(Value::String).unwrap_or(Value::Null),
        );
    }
    let outs = match cx.engine.sink.write(&sink.sobject, op, vec![rec]).await {
        Ok(outs) => outs,
        Err(e) => return failed_again(cx, letter.id, &e.to_string()).await,
    };
    match outs.into_iter().next() {
        Some(WriteOutcome {
            error: None,
            id: new_id,
            ..
        }) => {
            let commit = BatchCommit {
                pipeline: cx.p.name.clone(),
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
                subjects: Vec::new(),
            };
            match cx
                .engine
                .store
                .commit_batch_fenced(&commit, cx.opts.lease.as_ref())
                .await
            {
                Ok(()) => {
                    drop_letters(cx, &[letter.id]).await;
                    report.summary.retried += 1;
                }
                Err(e) => tracing::warn!("saving a retried dead letter: {e}"),
            }
        }
        Some(WriteOutcome { error: Some(e), .. }) => failed_again(cx, letter.id, &e).await,
        None => {}
    }
}

/// Records that failed before their writes: where, enrich, then the rest of the stages.
async fn retry_records(
    cx: &Cx<'_>,
    letters: Vec<DeadLetter>,
    applier: &mut Applier<'_>,
    report: &mut PipelineReport,
) {
    let errors_before = report.summary.error;
    let recs: Vec<Value> = letters.iter().map(|d| d.payload.clone()).collect();
    let enricher = Enricher::new(cx);
    let kept: Vec<_> = recs.into_iter().filter_map(|r| feed::sift(cx, r)).collect();
    let enriched: Vec<Result<_, StageError>> =
        futures::stream::iter(kept.into_iter().map(|(rec, where_err)| {
            let enricher = &enricher;
            async move {
                let (rec, err) = enricher.enrich(rec).await?;
                Ok((rec, where_err.or(err)))
            }
        }))
        .buffered(cx.opts.enrich_concurrency.max(1))
        .collect()
        .await;
    let (ok, commit) = match enriched.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(records) => {
            let mut batch = Batch::new(cx, records);
            let outcome = stage::process(cx, &mut batch, applier, report).await;
            (outcome.is_ok(), batch.commit)
        }
        Err(e) => {
            tracing::warn!("retrying dead letters of {}: {e}", cx.p.name);
            (
                false,
                BatchCommit {
                    pipeline: cx.p.name.clone(),
                    ..BatchCommit::default()
                },
            )
        }
    };
    let ok = ok && report.summary.error == errors_before;
    let saved = match applier.commit(&commit).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("saving retried dead letters of {}: {e}", cx.p.name);
            false
        }
    };
    if saved && ok {
        let ids: Vec<i64> = letters.iter().map(|d| d.id).collect();
        drop_letters(cx, &ids).await;
        report.summary.retried += ids.len() as u64;
    } else {
        for d in &letters {
            failed_again(cx, d.id, "failed again; see the newer dead letter").await;
        }
    }
}
