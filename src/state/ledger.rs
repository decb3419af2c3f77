//! The write ledger: for each (pipeline, sink, key), the Salesforce Id written and a hash of
//! the fields, so an unchanged record is not written again and an insert is never repeated.

use super::checkpoints::upsert_checkpoint;
use super::deadletters::{NewDeadLetter, insert_dead_letter};
use super::lease::{Lease, fence_lost};
use super::{Context, Result, SqliteState, StateError, fmt_ts, ts_col};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerState {
    /// Salesforce acknowledged the write; `sf_id` is the record's Id.
    Written,
    /// ferry was about to write: after a crash the write may or may not have happened,
    /// so the engine checks Salesforce before inserting again.
    Pending,
}

impl LedgerState {
    fn as_str(self) -> &'static str {
        match self {
            LedgerState::Written => "written",
            LedgerState::Pending => "pending",
        }
    }

    fn parse(s: &str) -> Option<LedgerState> {
        match s {
            "written" => Some(LedgerState::Written),
            "pending" => Some(LedgerState::Pending),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub sf_id: Option<String>,
    pub hash: String,
    pub state: LedgerState,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerWrite {
    pub sink: String,
    pub key: String,
    pub sf_id: Option<String>,
    pub hash: String,
    pub state: LedgerState,
}

/// Everything one batch changes, committed together: a checkpoint never moves past a
/// record whose ledger row or dead letter is not saved.
#[derive(Debug, Clone, Default)]
pub struct BatchCommit {
    pub pipeline: String,
    pub ledger: Vec<LedgerWrite>,
    pub dead_letters: Vec<NewDeadLetter>,
    /// (stream, partition, cursor)
    pub checkpoints: Vec<(String, String, String)>,
    /// The subject index (privacy requests), per synced record: which addresses it held
    /// (by keyed hash) and what was written for it. Saved with the ledger rows, fenced or
    /// not. Empty in a plan.
    pub subjects: Vec<super::IndexedRecord>,
}

/// Ledger size per (pipeline, sink), for `ferry state show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerCount {
    pub pipeline: String,
    pub sink: String,
    pub written: u64,
    pub pending: u64,
}

impl SqliteState {
    /// The ledger entries of `keys` that exist.
    pub fn ledger_get_many(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerEntry>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT sf_id, hash, state, updated_at FROM ledger
                 WHERE pipeline = ?1 AND sink = ?2 AND key = ?3",
            )
            .context("read the ledger")?;
        let mut out = HashMap::with_capacity(keys.len());
        for key in keys {
            let row = st
                .query_row(params![pipeline, sink, key], |r| {
                    let state: String = r.get(2)?;
                    Ok((r.get(0)?, r.get(1)?, state, ts_col(r, 3)?))
                })
                .optional()
                .context("read the ledger")?;
            if let Some((sf_id, hash, state, updated_at)) = row {
                let state = LedgerState::parse(&state).ok_or_else(|| {
                    super::StateError::Corrupt(format!("unknown ledger state {state:?}"))
                })?;
                out.insert(
                    key.clone(),
                    LedgerEntry {
                        sf_id,
                        hash,
                        state,
                        updated_at,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Records the intent to write `keys` (with the hash about to be written) before the
    /// write is sent, in its own transaction. An existing Id is kept.
    pub fn ledger_mark_pending(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[(String, String)],
    ) -> Result<()> {
        let now = fmt_ts(self.now());
        self.write("record pending writes", |tx| {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO ledger (pipeline, sink, key, sf_id, hash, state, updated_at)
                     VALUES (?1, ?2, ?3, NULL, ?4, 'pending', ?5)
                     ON CONFLICT (pipeline, sink, key) DO UPDATE SET
                       hash = excluded.hash, state = 'pending', updated_at = excluded.updated_at",
                )
                .context("record pending writes")?;
            for (key, hash) in keys {
                st.execute(params![pipeline, sink, key, hash, now])
                    .context(format!("record a pending write for {sink} key {key:?}"))?;
            }
            Ok(())
        })
    }

    /// Commits a batch's ledger rows, dead letters and checkpoints in one IMMEDIATE
    /// transaction: all or nothing. A written record clears any dead letter it had. Under a
    /// pipeline lease, inside the same transaction, the lease must still be `lease` (same
    /// holder and fencing number). When it changed hands, the
    /// ledger rows and dead letters are still committed (the services acknowledged those
    /// writes) but the checkpoints are not, and [`StateError::LeaseLost`] tells the run to stop.
    pub fn commit_batch_fenced(&self, batch: &BatchCommit, lease: Option<&Lease>) -> Result<()> {
        let now = fmt_ts(self.now());
        let pipeline = batch.pipeline.as_str();
        let lost = self.write("commit a batch", |tx| {
            let lost = match lease {
                Some(l) => fence_lost(tx, l)?,
                None => None,
            };
            {
                let mut put = tx
                    .prepare_cached(
                        "INSERT INTO ledger (pipeline, sink, key, sf_id, hash, state, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (pipeline, sink, key) DO UPDATE SET
                           sf_id = coalesce(excluded.sf_id, ledger.sf_id), hash = excluded.hash,
                           state = excluded.state, updated_at = excluded.updated_at",
                    )
                    .context("write the ledger")?;
                let mut clear = tx
                    .prepare_cached(
                        "DELETE FROM dead_letters WHERE pipeline = ?1 AND sink = ?2 AND key = ?3",
                    )
                    .context("write the ledger")?;
                for w in &batch.ledger {
                    put.execute(params![
                        pipeline,
                        w.sink,
                        w.key,
                        w.sf_id,
                        w.hash,
                        w.state.as_str(),
                        now
                    ])
                    .context(format!(
                        "write the ledger row of {}/{} key {:?}",
                        pipeline, w.sink, w.key
                    ))?;
                    if w.state == LedgerState::Written {
                        clear
                            .execute(params![pipeline, w.sink, w.key])
                            .context("clear a resolved dead letter")?;
                    }
                }
            }
            for d in &batch.dead_letters {
                insert_dead_letter(tx, pipeline, d, &now)?;
            }
            super::subjects::insert_subjects(tx, pipeline, &batch.subjects, &now)?;
            if lost.is_none() {
                for (stream, partition, cursor) in &batch.checkpoints {
                    upsert_checkpoint(tx, pipeline, stream, partition, cursor, &now)?;
                }
            }
            Ok(lost)
        })?;
        match lost {
            None => Ok(()),
            Some(now) => Err(StateError::LeaseLost {
                pipeline: pipeline.to_string(),
                now: Box::new(now),
            }),
        }
    }

    /// Ledger sizes per (pipeline, sink).
    pub fn ledger_counts(&self, pipeline: Option<&str>) -> Result<Vec<LedgerCount>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT pipeline, sink,
                        sum(state = 'written'), sum(state = 'pending')
                 FROM ledger WHERE ?1 IS NULL OR pipeline = ?1
                 GROUP BY pipeline, sink ORDER BY pipeline, sink",
            )
            .context("count the ledger")?;
        st.query_map([pipeline], |r| {
            Ok(LedgerCount {
                pipeline: r.get(0)?,
                sink: r.get(1)?,
                written: r.get::<_, i64>(2)?.max(0) as u64,
                pending: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })
        .context("count the ledger")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("count the ledger")
    }
}
