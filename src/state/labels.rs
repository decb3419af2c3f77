//! Labels for ids a person does not read well: a Zoom user id (a checkpoint's partition) →
//! the user's email. A run learns them when it lists the partitions it reads (the per-user
//! streams list the users first, so the labels cost no extra call) and keeps them here, so
//! the status page shows them whichever process ran the pipeline.

use super::{Context, Result, SqliteState, fmt_ts};
use chrono::{DateTime, Utc};
use rusqlite::params;
use std::collections::BTreeMap;

/// The longest label kept (an email is at most 254 characters); longer ones are cut.
pub const MAX_LABEL_CHARS: usize = 254;
/// The most labels kept per scope; beyond it new ids go unlabelled (their id is shown).
pub const MAX_LABELS_PER_SCOPE: usize = 100_000;

impl SqliteState {
    /// Stores labels of one scope (e.g. `zoom.users`), replacing earlier labels of the same
    /// ids. Empty ids and labels are skipped; labels are cut to [`MAX_LABEL_CHARS`].
    pub fn set_labels(
        &self,
        scope: &str,
        labels: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        self.write("store labels", |tx| {
            let have: i64 = tx
                .query_row(
                    "SELECT count(*) FROM labels WHERE scope = ?1",
                    params![scope],
                    |r| r.get(0),
                )
                .context("count labels")?;
            let mut room = MAX_LABELS_PER_SCOPE.saturating_sub(usize::try_from(have).unwrap_or(0));
            let mut known = tx
                .prepare_cached("SELECT 1 FROM labels WHERE scope = ?1 AND id = ?2")
                .context("store labels")?;
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO labels (scope, id, label, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (scope, id) DO UPDATE
                     SET label = excluded.label, updated_at = excluded.updated_at",
                )
                .context("store labels")?;
            let ts = fmt_ts(now);
            for (id, label) in labels {
                let label = label.trim();
                if id.is_empty() || label.is_empty() || id.len() > MAX_LABEL_CHARS {
                    continue;
                }
                let exists = known.exists(params![scope, id]).context("store labels")?;
                if !exists {
                    if room == 0 {
                        continue;
                    }
                    room -= 1;
                }
                let label: String = label.chars().take(MAX_LABEL_CHARS).collect();
                put.execute(params![scope, id, label, ts])
                    .context("store labels")?;
            }
            Ok(())
        })
    }

    /// Every label of one scope, by id.
    pub fn labels(&self, scope: &str) -> Result<BTreeMap<String, String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT id, label FROM labels WHERE scope = ?1")
            .context("read labels")?;
        st.query_map(params![scope], |r| Ok((r.get(0)?, r.get(1)?)))
            .context("read labels")?
            .collect::<rusqlite::Result<BTreeMap<String, String>>>()
            .context("read labels")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;

    #[tokio::test]
    async fn labels_are_kept_per_scope_replaced_and_bounded() {
        let store = Store::in_memory().unwrap();
        let now = Utc::now();
        store
            .set_labels(
                "zoom.users",
                &[
                    ("u1".into(), "pat@example.com".into()),
                    ("u2".into(), "x".repeat(400)),
                    ("".into(), "nobody@example.com".into()),
                    ("u3".into(), "  ".into()),
                ],
                now,
            )
            .await
            .unwrap();
        store
            .set_labels(
                "zoom.users",
                &[("u1".into(), "pat.new@example.com".into())],
                now,
            )
            .await
            .unwrap();
        store
            .set_labels("other", &[("u1".into(), "other label".into())], now)
            .await
            .unwrap();
        let l = store.labels("zoom.users").await.unwrap();
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l["u1"], "pat.new@example.com");
        assert_eq!(l["u2"].chars().count(), MAX_LABEL_CHARS);
        assert_eq!(store.labels("other").await.unwrap()["u1"], "other label");
        assert!(store.labels("none").await.unwrap().is_empty());
    }
}
