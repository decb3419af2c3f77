//! Checkpoints: per (pipeline, stream, partition), the cursor up to which every sink has
//! acknowledged the stream's records.

use super::{Context, Result, SqliteState, fmt_ts, ts_col};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub cursor: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointRow {
    pub pipeline: String,
    pub stream: String,
    /// `""` for a stream without partitions.
    pub partition: String,
    pub cursor: String,
    pub updated_at: DateTime<Utc>,
}

/// Reads a cursor as a time, when it is one (RFC 3339 or a bare date).
pub(crate) fn cursor_time(cursor: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(cursor.trim()) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(cursor.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

impl SqliteState {
    pub fn checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>> {
        let conn = self.conn();
        conn.prepare_cached(
            "SELECT cursor, updated_at FROM checkpoints
             WHERE pipeline = ?1 AND stream = ?2 AND partition = ?3",
        )
        .and_then(|mut st| {
            st.query_row(params![pipeline, stream, partition], |r| {
                Ok(Checkpoint {
                    cursor: r.get(0)?,
                    updated_at: ts_col(r, 1)?,
                })
            })
            .optional()
        })
        .context("read a checkpoint")
    }

    /// Every checkpoint, or those of one pipeline, ordered by pipeline, stream, partition.
    pub fn checkpoints(&self, pipeline: Option<&str>) -> Result<Vec<CheckpointRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT pipeline, stream, partition, cursor, updated_at FROM checkpoints
                 WHERE ?1 IS NULL OR pipeline = ?1
                 ORDER BY pipeline, stream, partition",
            )
            .context("list checkpoints")?;
        let rows = st
            .query_map([pipeline], |r| {
                Ok(CheckpointRow {
                    pipeline: r.get(0)?,
                    stream: r.get(1)?,
                    partition: r.get(2)?,
                    cursor: r.get(3)?,
                    updated_at: ts_col(r, 4)?,
                })
            })
            .context("list checkpoints")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("list checkpoints")?;
        Ok(rows)
    }

    /// Sets one checkpoint on its own (a batch's checkpoints go through `commit_batch`).
    pub fn set_checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
        cursor: &str,
    ) -> Result<()> {
        let now = fmt_ts(self.now());
        self.write("set a checkpoint", |tx| {
            upsert_checkpoint(tx, pipeline, stream, partition, cursor, &now)
        })
    }

    /// Moves every checkpoint of `pipeline` that is later than `to` back to `to`, so the
    /// next run re-reads from there (the ledger keeps the re-read from writing twice).
    /// A cursor that is not a time cannot be compared; it is removed, so its stream
    /// re-reads from its `since`. Returns how many checkpoints changed.
    pub fn rewind(&self, pipeline: &str, to: DateTime<Utc>) -> Result<usize> {
        let now = fmt_ts(self.now());
        let to_text = to.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        self.write("rewind checkpoints", |tx| {
            let rows: Vec<(String, String, String)> = {
                let mut st = tx
                    .prepare(
                        "SELECT stream, partition, cursor FROM checkpoints WHERE pipeline = ?1",
                    )
                    .context("read checkpoints to rewind")?;
                st.query_map([pipeline], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .context("read checkpoints to rewind")?
                    .collect::<rusqlite::Result<_>>()
                    .context("read checkpoints to rewind")?
            };
            let mut changed = 0;
            for (stream, partition, cursor) in rows {
                match cursor_time(&cursor) {
                    Some(t) if t <= to => continue,
                    Some(_) => {
                        upsert_checkpoint(tx, pipeline, &stream, &partition, &to_text, &now)?;
                    }
                    None => {
                        tx.execute(
                            "DELETE FROM checkpoints
                             WHERE pipeline = ?1 AND stream = ?2 AND partition = ?3",
                            params![pipeline, stream, partition],
                        )
                        .context("remove a checkpoint")?;
                    }
                }
                changed += 1;
            }
            Ok(changed)
        })
    }

    /// Deletes the pipeline's checkpoints; its next run starts from `since`. The ledger is
    /// kept, so records already written are not written again.
    pub fn reset(&self, pipeline: &str) -> Result<usize> {
        self.write("reset checkpoints", |tx| {
            tx.execute("DELETE FROM checkpoints WHERE pipeline = ?1", [pipeline])
                .context("reset checkpoints")
        })
    }

    /// Deletes the pipeline's ledger: the next run treats every record as never written
    /// (inserts may then create duplicates in Salesforce).
    pub fn reset_ledger(&self, pipeline: &str) -> Result<usize> {
        self.write("reset the ledger", |tx| {
            tx.execute("DELETE FROM ledger WHERE pipeline = ?1", [pipeline])
                .context("reset the ledger")
        })
    }
}

pub(super) fn upsert_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    stream: &str,
    partition: &str,
    cursor: &str,
    now: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO checkpoints (pipeline, stream, partition, cursor, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (pipeline, stream, partition)
         DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
    )
    .and_then(|mut st| st.execute(params![pipeline, stream, partition, cursor, now]))
    .context(format!("save the checkpoint of {pipeline}/{stream}"))?;
    Ok(())
}
