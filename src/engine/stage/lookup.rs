//! The lookup stage: the pipeline's match rules for the whole batch (see
//! [`crate::engine::lookup`]), with the results cached in the state store.

use crate::engine::lookup::{self, LookupCache, LookupNotes, LookupSource};
use crate::engine::{Batch, Cx, StageError};
use crate::state::Store;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;

/// Fills `lookups.NAME` of every record and notes who was not found in its report.
pub async fn resolve(cx: &Cx<'_>, batch: &mut Batch) -> Result<(), StageError> {
    let mut notes = vec![LookupNotes::default(); batch.len()];
    let cache = StoreCache {
        store: cx.engine.store,
        now: cx.engine.now,
    };
    let source = LookupSource::Live {
        matcher: cx.engine.matcher,
        cache: Some(&cache),
        pipeline: &cx.p.name,
    };
    lookup::resolve(cx.p, &mut batch.states, cx.g, &source, &mut notes, &mut 0).await?;
    for (r, n) in batch.reports.iter_mut().zip(notes) {
        r.unmatched = n.unmatched;
        r.ambiguous = n.ambiguous;
        r.looked_up = n.looked_up;
        r.unlookable = n.unlookable.clone();
    }
    Ok(())
}

/// The lookup cache, kept in the state store.
struct StoreCache<'a> {
    store: &'a Store,
    now: DateTime<Utc>,
}

#[async_trait::async_trait]
impl LookupCache for StoreCache<'_> {
    async fn get_many(&self, scope: &str, keys: &[String]) -> HashMap<String, Value> {
        // An unreadable cache costs queries, not correctness: ask the sink instead.
        self.store
            .cache_get_many(scope, keys, self.now)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("lookup cache unreadable, querying Salesforce: {e}");
                HashMap::new()
            })
    }
    async fn put_many(&self, scope: &str, entries: &[(String, Value)], ttl: std::time::Duration) {
        let exp = self.now
            + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::days(1));
        if let Err(e) = self.store.cache_put_many(scope, entries, exp).await {
            tracing::warn!("could not cache lookup results: {e}");
        }
    }
}
