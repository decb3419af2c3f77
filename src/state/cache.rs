//! The lookup cache: match results per (scope, key) with an expiry, so a participant seen
//! in every meeting costs one SOQL query per `cache` period, not one per run.

use super::{Context, Result, SqliteState};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

/// The value cached for a key that matched nothing (a miss is worth remembering too).
pub const CACHE_MISS_NONE: &str = r#"{"none":true}"#;

impl SqliteState {
    /// The unexpired cached values of `keys` (a match, or `{"none": true}` for a cached miss).
    pub fn cache_get_many(
        &self,
        scope: &str,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, serde_json::Value>> {
        let now_ms = now.timestamp_millis();
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT value FROM lookup_cache WHERE scope = ?1 AND key = ?2 AND expires_ms > ?3",
            )
            .context("read the lookup cache")?;
        let mut out = HashMap::new();
        for key in keys {
            let text: Option<String> = st
                .query_row(params![scope, key, now_ms], |r| r.get(0))
                .optional()
                .context("read the lookup cache")?;
            // A damaged entry is only a cache miss: the lookup runs again and rewrites it.
            if let Some(v) = text.and_then(|t| serde_json::from_str(&t).ok()) {
                out.insert(key.clone(), v);
            }
        }
        Ok(out)
    }

    pub fn cache_put_many(
        &self,
        scope: &str,
        entries: &[(String, serde_json::Value)],
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let exp = expires_at.timestamp_millis();
        self.write("fill the lookup cache", |tx| {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO lookup_cache (scope, key, value, expires_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (scope, key) DO UPDATE SET
                       value = excluded.value, expires_ms = excluded.expires_ms",
                )
                .context("fill the lookup cache")?;
            for (key, value) in entries {
                st.execute(params![scope, key, value.to_string(), exp])
                    .context("fill the lookup cache")?;
            }
            Ok(())
        })
    }

    /// Removes expired entries; returns how many.
    pub fn cache_purge(&self, now: DateTime<Utc>) -> Result<usize> {
        self.write("purge the lookup cache", |tx| {
            tx.execute(
                "DELETE FROM lookup_cache WHERE expires_ms <= ?1",
                [now.timestamp_millis()],
            )
            .context("purge the lookup cache")
        })
    }

    /// Forgets every cached result of a scope (e.g. after a match rule changed).
    pub fn cache_clear_scope(&self, scope: &str) -> Result<usize> {
        self.write("clear the lookup cache", |tx| {
            tx.execute("DELETE FROM lookup_cache WHERE scope = ?1", [scope])
                .context("clear the lookup cache")
        })
    }
}
