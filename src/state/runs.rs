//! Run history for the status page and `ferry state show`.

use super::{Context, Result, SqliteState, fmt_ts, opt_ts_col, ts_col};
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

/// Runs kept per pipeline; older ones are pruned when a run starts.
pub(super) const RUNS_KEPT: i64 = 200;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub pipeline: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `None` while running (or when the process died mid-run).
    pub ok: Option<bool>,
    pub summary: Option<serde_json::Value>,
    /// What started the run (`schedule`, `webhook`, `manual API`, `ferry run`), when known.
    pub trigger: Option<String>,
    /// Why the run stopped before its end (already fit to show), when it did.
    pub stopped: Option<String>,
}

/// The columns [`row_to_run`] reads, in its order.
const RUN_COLUMNS: &str =
    "run_id, pipeline, started_at, finished_at, ok, summary, trigger, stopped";

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let summary: Option<String> = r.get(5)?;
    Ok(RunRow {
        run_id: r.get(0)?,
        pipeline: r.get(1)?,
        started_at: ts_col(r, 2)?,
        finished_at: opt_ts_col(r, 3)?,
        ok: r.get::<_, Option<i64>>(4)?.map(|v| v != 0),
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        trigger: r.get(6)?,
        stopped: r.get(7)?,
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

    /// Records what started a run (after [`Store::run_started`]).
    pub fn run_trigger(&self, run_id: &str, trigger: &str) -> Result<()> {
        self.write("record what started a run", |tx| {
            tx.execute(
                "UPDATE runs SET trigger = ?2 WHERE run_id = ?1",
                params![run_id, bounded(trigger)],
            )
            .context("record what started a run")?;
            Ok(())
        })
    }

    /// Records why a run stopped before its end (after [`Store::run_finished`]); the text
    /// is shown on the status page, so the caller passes it sanitized.
    pub fn run_stopped(&self, run_id: &str, why: &str) -> Result<()> {
        self.write("record why a run stopped", |tx| {
            tx.execute(
                "UPDATE runs SET stopped = ?2 WHERE run_id = ?1",
                params![run_id, bounded(why)],
            )
            .context("record why a run stopped")?;
            Ok(())
        })
    }

    /// The latest run of each pipeline, by pipeline name.
    pub fn last_runs(&self) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT r.run_id, r.pipeline, r.started_at, r.finished_at, r.ok, r.summary,
                        r.trigger, r.stopped
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
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY started_at DESC, rowid DESC LIMIT ?2"
            ))
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

/// The most of a trigger or a stop reason kept (a reason can quote a server's answer).
const MAX_NOTE_CHARS: usize = 2000;

pub(super) fn bounded(s: &str) -> String {
    if s.chars().count() <= MAX_NOTE_CHARS {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(MAX_NOTE_CHARS - 1).collect();
    cut.push('…');
    cut
}
