//! The webhook inbox: verified deliveries are stored before the receiver answers 200, then
//! processed by the engine. A delivery id seen before is a retry from Zoom and is dropped.

use super::{Context, Result, SqliteState, fmt_ts, json_col, opt_ts_col, ts_col};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// A delivery whose processing fails is retried (with growing waits) for this many hours from
/// when it was received (or re-queued by an admin); a failure after that makes it a dead letter
/// (status `failed`), kept for an admin to read and retry (`ferry inbox`).
pub const INBOX_RETRY_HOURS: i64 = 24;

/// How long the daemon keeps a processed event (its delivery id recognises late retries).
pub const INBOX_KEEP_DONE_DAYS: i64 = 7;
/// How long the daemon keeps an event that failed for good.
pub const INBOX_KEEP_FAILED_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxEvent {
    pub id: i64,
    pub event: String,
    pub payload: serde_json::Value,
    pub received_at: DateTime<Utc>,
    pub attempts: i64,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxFailure {
    /// Retried at this time.
    Retry(DateTime<Utc>),
    /// Past [`INBOX_RETRY_HOURS`]: a dead letter now.
    Dead,
}

/// One row of the inbox as `ferry inbox` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxEntry {
    pub id: i64,
    pub delivery_id: String,
    pub event: String,
    /// `pending` (never tried), `retrying` (failed, tried again at `next_attempt`), `dead`
    /// (retried for [`INBOX_RETRY_HOURS`] without success) or `done`.
    pub state: String,
    pub received_at: DateTime<Utc>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The delivery's body (empty once done).
    pub payload: serde_json::Value,
}

/// How many events are in each state (for /metrics and the status page).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InboxCounts {
    /// Stored and never tried yet.
    pub pending: u64,
    /// Failed at least once, tried again later.
    pub retrying: u64,
    /// Dead letters.
    pub dead: u64,
}

/// How long a failed event waits before its next attempt: 30 s doubling per attempt, at
/// most an hour (so an outage of a day is retried about 30 times).
pub fn inbox_retry_delay(attempts: i64) -> chrono::Duration {
    let exp = attempts.clamp(0, 7) as u32;
    chrono::Duration::seconds((30 * 2i64.pow(exp)).min(3600))
}

impl SqliteState {
    /// Stores a delivery; false when this delivery id was stored before.
    pub fn inbox_put(
        &self,
        delivery_id: &str,
        event: &str,
        payload: &serde_json::Value,
        received_at: DateTime<Utc>,
    ) -> Result<bool> {
        let payload = payload.to_string();
        self.write("store a webhook event", |tx| {
            let n = tx
                .prepare_cached(
                    "INSERT INTO inbox (delivery_id, event, payload, received_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (delivery_id) DO NOTHING",
                )
                .and_then(|mut st| {
                    st.execute(params![delivery_id, event, payload, fmt_ts(received_at)])
                })
                .context("store a webhook event")?;
            Ok(n == 1)
        })
    }

    /// Events waiting to be processed, oldest first (whether due or waiting to be retried).
    pub fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxEvent>> {
        self.inbox_select(None, limit)
    }

    /// Events due now: never tried, or failed and past their retry time; oldest first.
    pub fn inbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>> {
        self.inbox_select(Some(now), limit)
    }

    // For a pending event, `finished_at` holds when its next attempt is due (NULL: now).
    fn inbox_select(&self, due: Option<DateTime<Utc>>, limit: usize) -> Result<Vec<InboxEvent>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, event, payload, received_at, attempts FROM inbox
                 WHERE status = 'pending' AND (?2 IS NULL OR finished_at IS NULL OR finished_at <= ?2)
                 ORDER BY id LIMIT ?1",
            )
            .context("read the webhook inbox")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        st.query_map(params![limit, due.map(fmt_ts)], |r| {
            Ok(InboxEvent {
                id: r.get(0)?,
                event: r.get(1)?,
                payload: json_col(r, 2)?,
                received_at: ts_col(r, 3)?,
                attempts: r.get(4)?,
            })
        })
        .context("read the webhook inbox")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("read the webhook inbox")
    }

    /// The event was processed. Its row stays (as done) so a late retry is still a duplicate.
    pub fn inbox_done(&self, id: i64) -> Result<()> {
        let now = fmt_ts(self.now());
        self.write("finish a webhook event", |tx| {
            tx.execute(
                "UPDATE inbox SET status = 'done', finished_at = ?2, payload = '{}' WHERE id = ?1",
                params![id, now],
            )
            .context("finish a webhook event")?;
            Ok(())
        })
    }

    /// Processing failed (now, on the store's clock): count the attempt and set when it is
    /// tried again ([`inbox_retry_delay`]); an event received more than
    /// [`INBOX_RETRY_HOURS`] ago becomes a dead letter instead. `error` is kept for `ferry
    /// inbox` and should already be fit to show.
    pub fn inbox_failed(&self, id: i64, error: &str) -> Result<InboxFailure> {
        let now = self.now();
        self.write("record a failed webhook event", |tx| {
            let row: Option<(i64, String)> = tx
                .query_row(
                    "SELECT attempts, received_at FROM inbox WHERE id = ?1 AND status = 'pending'",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .context("record a failed webhook event")?;
            let Some((attempts, received)) = row else {
                return Ok(InboxFailure::Dead);
            };
            let received = super::parse_ts(&received)?;
            let dead = now - received >= chrono::Duration::hours(INBOX_RETRY_HOURS);
            let outcome = if dead {
                InboxFailure::Dead
            } else {
                InboxFailure::Retry(now + inbox_retry_delay(attempts))
            };
            let (status, at) = match outcome {
                InboxFailure::Dead => ("failed", now),
                InboxFailure::Retry(t) => ("pending", t),
            };
            tx.execute(
                "UPDATE inbox SET attempts = attempts + 1, last_error = ?2, status = ?3,
                   finished_at = ?4 WHERE id = ?1",
                params![id, error, status, fmt_ts(at)],
            )
            .context("record a failed webhook event")?;
            Ok(outcome)
        })
    }

    /// Puts a dead letter (or a retrying event) back in the queue to be tried at once; its
    /// retry window of [`INBOX_RETRY_HOURS`] starts again now. False when there is no such
    /// event, or it is done.
    pub fn inbox_retry(&self, id: i64) -> Result<bool> {
        let now = fmt_ts(self.now());
        self.write("re-queue a webhook event", |tx| {
            let n = tx
                .execute(
                    "UPDATE inbox SET status = 'pending', attempts = 0, finished_at = NULL,
                       received_at = ?2 WHERE id = ?1 AND status IN ('pending', 'failed')",
                    params![id, now],
                )
                .context("re-queue a webhook event")?;
            Ok(n == 1)
        })
    }

    /// Events in the inbox, newest first; `dead_only` keeps the dead letters only.
    pub fn inbox_list(&self, dead_only: bool, limit: usize) -> Result<Vec<InboxEntry>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, delivery_id, event, status, received_at, attempts, last_error,
                        finished_at, payload FROM inbox
                 WHERE (?1 = 0 OR status = 'failed') ORDER BY id DESC LIMIT ?2",
            )
            .context("read the webhook inbox")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        st.query_map(params![dead_only as i64, limit], entry_row)
            .context("read the webhook inbox")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("read the webhook inbox")
    }

    /// One event of the inbox.
    pub fn inbox_entry(&self, id: i64) -> Result<Option<InboxEntry>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT id, delivery_id, event, status, received_at, attempts, last_error,
                    finished_at, payload FROM inbox WHERE id = ?1",
            [id],
            entry_row,
        )
        .optional()
        .context("read the webhook inbox")
    }

    /// How many events are pending, retrying and dead.
    pub fn inbox_counts(&self) -> Result<InboxCounts> {
        let conn = self.conn();
        conn.query_row(
            "SELECT coalesce(sum(status = 'pending' AND attempts = 0), 0),
                    coalesce(sum(status = 'pending' AND attempts > 0), 0),
                    coalesce(sum(status = 'failed'), 0) FROM inbox",
            [],
            |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(InboxCounts {
                    pending: n(0)?,
                    retrying: n(1)?,
                    dead: n(2)?,
                })
            },
        )
        .context("count the webhook inbox")
    }

    /// How many events wait to be processed.
    pub fn inbox_depth(&self) -> Result<u64> {
        let conn = self.conn();
        conn.query_row(
            "SELECT count(*) FROM inbox WHERE status = 'pending'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n.max(0) as u64)
        .context("count the webhook inbox")
    }

    /// Forgets events that are over: done ones received before `done_before` (a late retry
    /// of them can no longer come: Zoom retries a delivery for a few hours at most) and
    /// failed ones received before `failed_before` (kept longer, for an admin to read).
    /// Pending events are never purged. Returns how many rows went.
    pub fn inbox_purge(
        &self,
        done_before: DateTime<Utc>,
        failed_before: DateTime<Utc>,
    ) -> Result<usize> {
        self.write("purge the webhook inbox", |tx| {
            tx.execute(
                "DELETE FROM inbox WHERE (status = 'done' AND received_at < ?1)
                                      OR (status = 'failed' AND received_at < ?2)",
                [fmt_ts(done_before), fmt_ts(failed_before)],
            )
            .context("purge the webhook inbox")
        })
    }
}

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboxEntry> {
    let status: String = r.get(3)?;
    let attempts: i64 = r.get(5)?;
    let at = opt_ts_col(r, 7)?;
    let (state, next_attempt, finished_at) = match status.as_str() {
        "pending" if attempts > 0 => ("retrying", at, None),
        "pending" => ("pending", at, None),
        "failed" => ("dead", None, at),
        other => (other, None, at),
    };
    Ok(InboxEntry {
        id: r.get(0)?,
        delivery_id: r.get(1)?,
        event: r.get(2)?,
        state: state.to_string(),
        received_at: ts_col(r, 4)?,
        attempts,
        last_error: r.get(6)?,
        next_attempt,
        finished_at,
        payload: json_col(r, 8)?,
    })
}
