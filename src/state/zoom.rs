//! Zoom sinks' state: the Zoom ledger and deferrals.
//!
//! Zoom has no external ids, so the ledger is the identity: (pipeline, Zoom object, key) →
//! the Zoom id, what Zoom returned (secrets such as a meeting's start_url are never kept),
//! a hash of the fields last written (so an unchanged record costs no write) and the params
//! the object was created under (to find a create whose answer was lost). A row is
//! `pending` from just before a create is sent until its answer is kept.
//!
//! A deferral is a source record a daily limit kept from being written today: it waits in
//! the state with its reason and is written first once `not_before` has passed.

use super::{Context, Result, SqliteState, fmt_ts, ts_col};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoomRowState {
    /// Zoom acknowledged the write; `zoom_id` names the object.
    Written,
    /// A create was about to be sent: it may or may not exist in Zoom.
    Pending,
    /// The object was deleted (or was already gone).
    Deleted,
}

impl ZoomRowState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ZoomRowState::Written => "written",
            ZoomRowState::Pending => "pending",
            ZoomRowState::Deleted => "deleted",
        }
    }
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "written" => Some(ZoomRowState::Written),
            "pending" => Some(ZoomRowState::Pending),
            "deleted" => Some(ZoomRowState::Deleted),
            _ => None,
        }
    }
}

/// One Zoom ledger row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoomLedgerRow {
    pub key: String,
    pub zoom_id: Option<String>,
    /// What Zoom returned (id, join_url, registrant_id, ...), secrets left out.
    pub values: serde_json::Map<String, Value>,
    /// The fields last written, hashed.
    pub hash: String,
    /// The fields last written (to diff a later change against), secrets left out.
    pub fields: serde_json::Map<String, Value>,
    /// The path params the object was written under (`user_id`, `webinar_id`).
    pub params: serde_json::Map<String, Value>,
    pub state: ZoomRowState,
    pub updated_at: DateTime<Utc>,
}

/// A record held back by a daily limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deferral {
    pub pipeline: String,
    pub sink: String,
    pub key: String,
    /// The source record (with its enrichments), to go through the stages again.
    pub record: Value,
    pub reason: String,
    /// The limited resource (a host, a registrant), in words.
    pub resource: String,
    pub not_before: DateTime<Utc>,
    pub deferred_at: DateTime<Utc>,
}

/// The most a deferral or ledger row keeps of a JSON text, in bytes; larger is refused.
const MAX_JSON_BYTES: usize = 256 * 1024;

pub(super) fn to_json(v: &impl Serialize) -> Result<String> {
    let s = serde_json::to_string(v)
        .map_err(|e| super::StateError::Corrupt(format!("cannot encode a Zoom row: {e}")))?;
    if s.len() > MAX_JSON_BYTES {
        return Err(super::StateError::Corrupt(format!(
            "a Zoom row of {} bytes is larger than the {MAX_JSON_BYTES} kept",
            s.len()
        )));
    }
    Ok(s)
}

pub(super) fn obj(s: &str) -> serde_json::Map<String, Value> {
    serde_json::from_str(s).unwrap_or_default()
}

impl SqliteState {
    pub fn zoom_ledger_get(
        &self,
        pipeline: &str,
        object: &str,
        keys: &[String],
    ) -> Result<HashMap<String, ZoomLedgerRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT zoom_id, vals, hash, fields, params, state, updated_at FROM zoom_ledger
                 WHERE pipeline = ?1 AND object = ?2 AND key = ?3",
            )
            .context("read the Zoom ledger")?;
        let mut out = HashMap::new();
        for key in keys {
            let row = st
                .query_row(params![pipeline, object, key], |r| {
                    let vals: String = r.get(1)?;
                    let fields: String = r.get(3)?;
                    let ps: String = r.get(4)?;
                    let state: String = r.get(5)?;
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        vals,
                        r.get::<_, String>(2)?,
                        fields,
                        ps,
                        state,
                        ts_col(r, 6)?,
                    ))
                })
                .optional()
                .context("read the Zoom ledger")?;
            if let Some((zoom_id, vals, hash, fields, ps, state, updated_at)) = row {
                let state = ZoomRowState::parse(&state).ok_or_else(|| {
                    super::StateError::Corrupt(format!("unknown Zoom ledger state {state:?}"))
                })?;
                out.insert(
                    key.clone(),
                    ZoomLedgerRow {
                        key: key.clone(),
                        zoom_id,
                        values: obj(&vals),
                        hash,
                        fields: obj(&fields),
                        params: obj(&ps),
                        state,
                        updated_at,
                    },
                );
            }
        }
        Ok(out)
    }

    pub fn zoom_ledger_put(
        &self,
        pipeline: &str,
        object: &str,
        rows: &[ZoomLedgerRow],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write("save Zoom ledger rows", |tx| {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO zoom_ledger (pipeline, object, key, zoom_id, vals, hash, fields, params, state, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (pipeline, object, key) DO UPDATE SET
                       zoom_id = excluded.zoom_id, vals = excluded.vals, hash = excluded.hash,
                       fields = excluded.fields, params = excluded.params, state = excluded.state,
                       updated_at = excluded.updated_at",
                )
                .context("save Zoom ledger rows")?;
            for r in rows {
                st.execute(params![
                    pipeline,
                    object,
                    r.key,
                    r.zoom_id,
                    to_json(&r.values)?,
                    r.hash,
                    to_json(&r.fields)?,
                    to_json(&r.params)?,
                    r.state.as_str(),
                    fmt_ts(r.updated_at),
                ])
                .context("save Zoom ledger rows")?;
            }
            Ok(())
        })
    }

    /// Which of `ids` some key already owns (any pipeline), as (pipeline, key).
    pub fn zoom_ledger_owners(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<HashMap<String, (String, String)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT pipeline, key FROM zoom_ledger WHERE object = ?1 AND zoom_id = ?2 LIMIT 1",
            )
            .context("read the Zoom ledger")?;
        let mut out = HashMap::new();
        for id in ids {
            if let Some(owner) = st
                .query_row(params![object, id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .context("read the Zoom ledger")?
            {
                out.insert(id.clone(), owner);
            }
        }
        Ok(out)
    }

    pub fn zoom_defer(&self, rows: &[Deferral]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write("save deferrals", |tx| {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO zoom_deferrals (pipeline, sink, key, record, reason, resource, not_before, deferred_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (pipeline, sink, key) DO UPDATE SET
                       record = excluded.record, reason = excluded.reason,
                       resource = excluded.resource, not_before = excluded.not_before",
                )
                .context("save deferrals")?;
            for d in rows {
                st.execute(params![
                    d.pipeline,
                    d.sink,
                    d.key,
                    to_json(&d.record)?,
                    d.reason,
                    d.resource,
                    fmt_ts(d.not_before),
                    fmt_ts(d.deferred_at),
                ])
                .context("save deferrals")?;
            }
            Ok(())
        })
    }

    /// Deferrals of one pipeline or all, oldest first.
    pub fn zoom_deferrals(&self, pipeline: Option<&str>) -> Result<Vec<Deferral>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT pipeline, sink, key, record, reason, resource, not_before, deferred_at
                 FROM zoom_deferrals WHERE ?1 IS NULL OR pipeline = ?1
                 ORDER BY deferred_at, pipeline, sink, key",
            )
            .context("read deferrals")?;
        st.query_map(params![pipeline], |r| {
            let rec: String = r.get(3)?;
            Ok(Deferral {
                pipeline: r.get(0)?,
                sink: r.get(1)?,
                key: r.get(2)?,
                record: serde_json::from_str(&rec).unwrap_or(Value::Null),
                reason: r.get(4)?,
                resource: r.get(5)?,
                not_before: ts_col(r, 6)?,
                deferred_at: ts_col(r, 7)?,
            })
        })
        .context("read deferrals")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("read deferrals")
    }

    pub fn zoom_undefer(&self, pipeline: &str, sink: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write("drop deferrals", |tx| {
            let mut st = tx
                .prepare_cached(
                    "DELETE FROM zoom_deferrals WHERE pipeline = ?1 AND sink = ?2 AND key = ?3",
                )
                .context("drop deferrals")?;
            for k in keys {
                st.execute(params![pipeline, sink, k])
                    .context("drop deferrals")?;
            }
            Ok(())
        })
    }
}

/// Deferrals of one pipeline's sink that wait for the same limit (and, for a host's limit,
/// the same host): what the status page, `/metrics` and `ferry state show` tell. Registrants
/// are counted, never named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeferralSummary {
    pub pipeline: String,
    pub sink: String,
    /// The limit's scope (`host`, `registrant`), or `lost answer` for a create whose answer
    /// was lost (looked up on the next run).
    pub limit: String,
    /// The host a host's limit holds back (the `user_id` the meetings are written under, as
    /// the pipeline names it); empty for other limits.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub records: u64,
    /// The earliest and the latest time one of them may be written again.
    pub first_until: DateTime<Utc>,
    pub last_until: DateTime<Utc>,
}

/// The scope a lost answer's deferral is shown under.
pub const LOST_ANSWER: &str = "lost answer";

/// Groups `(pipeline, sink, resource, count, first, last)` rows into summaries: one per
/// pipeline, sink, limit and host. A resource is `scope:part:part`; only a host's part is
/// kept (a registrant's holds their address).
pub fn summarize_deferrals(
    rows: impl IntoIterator<Item = (String, String, String, u64, DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<DeferralSummary> {
    let mut out: std::collections::BTreeMap<(String, String, String, String), DeferralSummary> =
        std::collections::BTreeMap::new();
    for (pipeline, sink, resource, n, first, last) in rows {
        let (limit, host) = match resource.split_once(':') {
            _ if resource.is_empty() => (LOST_ANSWER.to_string(), String::new()),
            Some(("host", h)) => ("host".to_string(), h.to_string()),
            Some((scope, _)) => (scope.to_string(), String::new()),
            None => (resource.clone(), String::new()),
        };
        let e = out
            .entry((pipeline.clone(), sink.clone(), limit.clone(), host.clone()))
            .or_insert_with(|| DeferralSummary {
                pipeline,
                sink,
                limit,
                host,
                records: 0,
                first_until: first,
                last_until: last,
            });
        e.records = e.records.saturating_add(n);
        e.first_until = e.first_until.min(first);
        e.last_until = e.last_until.max(last);
    }
    out.into_values().collect()
}

impl SqliteState {
    /// How many records wait, per pipeline, sink, limit and host (see [`DeferralSummary`]).
    pub fn zoom_deferral_summary(&self, pipeline: Option<&str>) -> Result<Vec<DeferralSummary>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT pipeline, sink, resource, count(*), min(not_before), max(not_before)
                 FROM zoom_deferrals WHERE ?1 IS NULL OR pipeline = ?1
                 GROUP BY pipeline, sink, resource",
            )
            .context("count deferrals")?;
        let rows = st
            .query_map(params![pipeline], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?.max(0) as u64,
                    ts_col(r, 4)?,
                    ts_col(r, 5)?,
                ))
            })
            .context("count deferrals")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("count deferrals")?;
        Ok(summarize_deferrals(rows))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn d(pipeline: &str, key: &str, resource: &str, hour: u32) -> Deferral {
        let t = Utc.with_ymd_and_hms(2026, 11, 21, hour, 0, 0).unwrap();
        Deferral {
            pipeline: pipeline.into(),
            sink: "s".into(),
            key: key.into(),
            record: serde_json::json!({"Email": format!("{key}@contoso.com")}),
            reason: "daily limit".into(),
            resource: resource.into(),
            not_before: t,
            deferred_at: t - chrono::Duration::hours(12),
        }
    }

    #[test]
    fn deferrals_are_counted_per_limit_and_host_and_registrants_are_not_named() {
        let state = SqliteState::in_memory().unwrap();
        state
            .zoom_defer(&[
                d("a", "1", "host:h1@acme.com", 0),
                d("a", "2", "host:h1@acme.com", 0),
                d("a", "3", "host:h2@acme.com", 0),
                d("a", "4", "registrant:77:pat@contoso.com", 0),
                d("a", "5", "registrant:77:sam@contoso.com", 1),
                d("a", "6", "", 2),
                d("b", "7", "host:h1@acme.com", 0),
            ])
            .unwrap();
        let all = state.zoom_deferral_summary(None).unwrap();
        let a: Vec<_> = all.iter().filter(|s| s.pipeline == "a").collect();
        assert_eq!(a.len(), 4, "{a:?}");
        let h1 = a.iter().find(|s| s.host == "h1@acme.com").unwrap();
        assert_eq!((h1.limit.as_str(), h1.records), ("host", 2));
        let reg = a.iter().find(|s| s.limit == "registrant").unwrap();
        assert_eq!(reg.records, 2);
        assert!(reg.host.is_empty());
        assert!(reg.last_until > reg.first_until);
        let lost = a.iter().find(|s| s.limit == LOST_ANSWER).unwrap();
        assert_eq!(lost.records, 1);
        let shown = serde_json::to_string(&all).unwrap();
        assert!(!shown.contains("contoso"), "{shown}");
        assert_eq!(state.zoom_deferral_summary(Some("b")).unwrap().len(), 1);
    }
}
