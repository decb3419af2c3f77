//! Dead letters: records Salesforce rejected, kept with the error for an admin to retry
//! or drop. One letter per (pipeline, sink, key): failing again updates it.

use super::{Context, Result, SqliteState, fmt_ts, json_col, ts_col};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub sink: String,
    /// The record's ledger key; `""` when it had none (e.g. its key did not render).
    pub key: String,
    pub payload: serde_json::Value,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub pipeline: String,
    pub sink: String,
    pub key: String,
    pub payload: serde_json::Value,
    pub error: String,
    /// How many times the record failed.
    pub attempts: i64,
    /// An admin asked (`ferry deadletters retry`) for the next run to try it again.
    pub retry_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterCount {
    pub pipeline: String,
    pub count: u64,
    pub retry_requested: u64,
}

const COLUMNS: &str = "id, pipeline, sink, key, payload, error, attempts, retry_requested, \
                       created_at, updated_at";

fn row_to_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        sink: r.get(2)?,
        key: r.get(3)?,
        payload: json_col(r, 4)?,
        error: r.get(5)?,
        attempts: r.get(6)?,
        retry_requested: r.get::<_, i64>(7)? != 0,
        created_at: ts_col(r, 8)?,
        updated_at: ts_col(r, 9)?,
    })
}

pub(super) fn insert_dead_letter(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    d: &NewDeadLetter,
    now: &str,
) -> Result<()> {
    let payload = d.payload.to_string();
    tx.prepare_cached(
        "INSERT INTO dead_letters (pipeline, sink, key, payload, error, attempts,
                                   retry_requested, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, ?6, ?6)
         ON CONFLICT (pipeline, sink, key) WHERE key <> '' DO UPDATE SET
           payload = excluded.payload, error = excluded.error,
           attempts = dead_letters.attempts + 1, retry_requested = 0,
           updated_at = excluded.updated_at",
    )
    .and_then(|mut st| st.execute(params![pipeline, d.sink, d.key, payload, d.error, now]))
    .context(format!(
        "save the dead letter of {pipeline}/{} key {:?}",
        d.sink, d.key
    ))?;
    Ok(())
}

impl SqliteState {
    /// Adds dead letters outside a batch (a batch adds them through `commit_batch`).
    pub fn deadletters_add(&self, pipeline: &str, letters: &[NewDeadLetter]) -> Result<()> {
        let now = fmt_ts(self.now());
        self.write("save dead letters", |tx| {
            for d in letters {
                insert_dead_letter(tx, pipeline, d, &now)?;
            }
            Ok(())
        })
    }

    /// Dead letters, oldest first, of every pipeline or one.
    pub fn deadletters(&self, pipeline: Option<&str>) -> Result<Vec<DeadLetter>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY id"
            ))
            .context("list dead letters")?;
        st.query_map([pipeline], row_to_letter)
            .context("list dead letters")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("list dead letters")
    }

    pub fn deadletter(&self, id: i64) -> Result<Option<DeadLetter>> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"),
            [id],
            row_to_letter,
        )
        .optional()
        .context("read a dead letter")
    }

    /// Deletes the given letters; returns how many existed.
    pub fn deadletters_drop(&self, ids: &[i64]) -> Result<usize> {
        self.write("drop dead letters", |tx| {
            let mut st = tx
                .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")
                .context("drop dead letters")?;
            let mut n = 0;
            for id in ids {
                n += st.execute([id]).context("drop a dead letter")?;
            }
            Ok(n)
        })
    }

    /// Deletes every letter of a pipeline (or all); returns how many.
    pub fn deadletters_drop_all(&self, pipeline: Option<&str>) -> Result<usize> {
        self.write("drop dead letters", |tx| {
            tx.execute(
                "DELETE FROM dead_letters WHERE ?1 IS NULL OR pipeline = ?1",
                [pipeline],
            )
            .context("drop dead letters")
        })
    }

    /// Flags letters for the next run to retry; returns how many exist.
    pub fn deadletters_mark_retry(&self, ids: &[i64]) -> Result<usize> {
        let now = fmt_ts(self.now());
        self.write("mark dead letters for retry", |tx| {
            let mut st = tx
                .prepare_cached(
                    "UPDATE dead_letters SET retry_requested = 1, updated_at = ?2 WHERE id = ?1",
                )
                .context("mark dead letters for retry")?;
            let mut n = 0;
            for id in ids {
                n += st.execute(params![id, now]).context("mark a dead letter")?;
            }
            Ok(n)
        })
    }

    /// Flags every letter of a pipeline (or all) for retry; returns how many.
    pub fn deadletters_mark_retry_all(&self, pipeline: Option<&str>) -> Result<usize> {
        let now = fmt_ts(self.now());
        self.write("mark dead letters for retry", |tx| {
            tx.execute(
                "UPDATE dead_letters SET retry_requested = 1, updated_at = ?2
                 WHERE ?1 IS NULL OR pipeline = ?1",
                params![pipeline, now],
            )
            .context("mark dead letters for retry")
        })
    }

    /// The letters of `pipeline` that an admin asked to retry, oldest first.
    pub fn deadletters_due(&self, pipeline: &str) -> Result<Vec<DeadLetter>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM dead_letters
                 WHERE pipeline = ?1 AND retry_requested = 1 ORDER BY id"
            ))
            .context("list dead letters to retry")?;
        st.query_map([pipeline], row_to_letter)
            .context("list dead letters to retry")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("list dead letters to retry")
    }

    /// A retry failed again: count the attempt, keep the new error, clear the retry flag.
    pub fn deadletter_retry_failed(&self, id: i64, error: &str) -> Result<()> {
        let now = fmt_ts(self.now());
        self.write("record a failed retry", |tx| {
            tx.execute(
                "UPDATE dead_letters SET attempts = attempts + 1, error = ?2,
                   retry_requested = 0, updated_at = ?3 WHERE id = ?1",
                params![id, error, now],
            )
            .context("record a failed retry")?;
            Ok(())
        })
    }

    /// Letters per pipeline.
    pub fn deadletter_counts(&self) -> Result<Vec<DeadLetterCount>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT pipeline, count(*), sum(retry_requested) FROM dead_letters
                 GROUP BY pipeline ORDER BY pipeline",
            )
            .context("count dead letters")?;
        st.query_map([], |r| {
            Ok(DeadLetterCount {
                pipeline: r.get(0)?,
                count: r.get::<_, i64>(1)?.max(0) as u64,
                retry_requested: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })
        .context("count dead letters")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("count dead letters")
    }
}
