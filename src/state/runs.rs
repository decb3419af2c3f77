//! Run history for the status page and `ferry state show`.

use super::{Context, Result, SqliteState, fmt_ts, opt_ts_col, ts_col};
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

/// Runs kept per pipeline; older ones are pruned when a run starts.
const RUNS_KEPT: i64 = 200;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub pipeline: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `None` while running (or when the process died mid-run).
    pub ok: Option<bool>,
    pub summary: Option<serde_json::Value>,
}

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let summary: Option<String> = r.get(5)?;
    Ok(RunRow {
        run_id: r.get(0)?,
        pipeline: r.get(1)?,
        started_at: ts_col(r, 2)?,
        finished_at: opt_ts_col(r, 3)?,
        ok: r.get::<_, Option<i64>>(4)?.map(|v| v != 0),
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

impl SqliteState {
    pub fn run_started(
        &self,
        pipeline: &str,
        run_id: &str,
        started_at: DateTime<Utc>,
    ) -> Result<()> {
        self.write("record a run", |tx| {
            tx.execute(
                "INSERT INTO runs (run_id, pipeline, started_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id) DO UPDATE SET started_at = excluded.started_at",
                params![run_id, pipeline, fmt_ts(started_at)],
            )
            .context("record a run")?;
            tx.execute(
                "DELETE FROM runs WHERE pipeline = ?1 AND run_id NOT IN (
                   SELECT run_id FROM runs WHERE pipeline = ?1
                   ORDER BY started_at DESC LIMIT ?2)",
                params![pipeline, RUNS_KEPT],
            )
            .context("prune old runs")?;
            Ok(())
        })
    }

    pub fn run_finished(
        &self,
        run_id: &str,
        finished_at: DateTime<Utc>,
        ok: bool,
        summary: &serde_json::Value,
    ) -> Result<()> {
        self.write("record the end of a run", |tx| {
            tx.execute(
                "UPDATE runs SET finished_at = ?2, ok = ?3, summary = ?4 WHERE run_id = ?1",
                params![run_id, fmt_ts(finished_at), ok, summary.to_string()],
            )
            .context("record the end of a run")?;
            Ok(())
        })
    }

    /// The latest run of each pipeline, by pipeline name.
    pub fn last_runs(&self) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT r.run_id, r.pipeline, r.started_at, r.finished_at, r.ok, r.summary
                 FROM runs r
                 WHERE r.run_id = (SELECT run_id FROM runs x WHERE x.pipeline = r.pipeline
                                   ORDER BY x.started_at DESC, x.rowid DESC LIMIT 1)
                 ORDER BY r.pipeline",
            )
            .context("read the last runs")?;
        st.query_map([], row_to_run)
            .context("read the last runs")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("read the last runs")
    }

    /// Recent runs, newest first, of every pipeline or one.
    pub fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT run_id, pipeline, started_at, finished_at, ok, summary FROM runs
                 WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY started_at DESC, rowid DESC LIMIT ?2",
            )
            .context("read runs")?;
        st.query_map(
            params![pipeline, i64::try_from(limit).unwrap_or(i64::MAX)],
            row_to_run,
        )
        .context("read runs")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("read runs")
    }
}
