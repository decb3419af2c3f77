//! The webhook inbox: verified deliveries are stored before the receiver answers 200, then
//! processed by the engine. A delivery id seen before is a retry from Zoom and is dropped.

use super::{Context, Result, Store, fmt_ts, json_col, ts_col};
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

/// After this many failed attempts an event stops being retried (it stays in the table,
/// marked failed, for an admin to inspect).
pub const MAX_INBOX_ATTEMPTS: i64 = 5;

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

impl Store {
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

    /// Events waiting to be processed, oldest first.
    pub fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxEvent>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, event, payload, received_at, attempts FROM inbox
                 WHERE status = 'pending' ORDER BY id LIMIT ?1",
            )
            .context("read the webhook inbox")?;
        st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
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

    /// Processing failed: count the attempt; after [`MAX_INBOX_ATTEMPTS`] the event is
    /// marked failed and no longer returned by `inbox_pending`.
    pub fn inbox_failed(&self, id: i64, error: &str) -> Result<()> {
        let now = fmt_ts(self.now());
        self.write("record a failed webhook event", |tx| {
            tx.execute(
                "UPDATE inbox SET attempts = attempts + 1, last_error = ?2,
                   status = CASE WHEN attempts + 1 >= ?3 THEN 'failed' ELSE status END,
                   finished_at = CASE WHEN attempts + 1 >= ?3 THEN ?4 ELSE finished_at END
                 WHERE id = ?1",
                params![id, error, MAX_INBOX_ATTEMPTS, now],
            )
            .context("record a failed webhook event")?;
            Ok(())
        })
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
