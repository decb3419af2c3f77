//! The webhook inbox's two ends: storing a verified delivery (before answering Zoom), and the
//! processor that hands each stored event to the pipelines it triggers.

use super::{Shared, Trigger};
use crate::connectors::zoom::{ZoomError, catalog};
use crate::state::InboxEvent;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Events taken from the inbox per pass.
const BATCH: usize = 50;

/// The identity of a delivery: Zoom's request id, or (without it) a hash of what makes the
/// event itself, so a resent body is still recognised.
pub fn delivery_id(request_id: Option<&str>, body: &Value) -> String {
    if let Some(id) = request_id.map(str::trim).filter(|s| !s.is_empty()) {
        return format!("zm:{id}");
    }
    let object = &body["payload"]["object"];
    let key = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut h = Sha256::new();
    h.update(key(&body["event"]).as_bytes());
    h.update([0]);
    h.update(key(&object["uuid"]).as_bytes());
    h.update([0]);
    h.update(key(&object["id"]).as_bytes());
    h.update([0]);
    h.update(key(&body["event_ts"]).as_bytes());
    format!("h:{}", hex::encode(h.finalize()))
}

/// Why an event could not be processed (it is retried later).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("pipeline {pipeline}: stream {stream} has no single-record fetch")]
    NoSingleFetch { pipeline: String, stream: String },
    #[error("pipeline {pipeline}: the event has no `{param}` for {stream}")]
    MissingParam {
        pipeline: String,
        stream: String,
        param: String,
    },
    #[error("pipeline {pipeline}: fetching the record: {source}")]
    Fetch { pipeline: String, source: ZoomError },
    #[error("pipeline {pipeline}: {message}")]
    Run { pipeline: String, message: String },
    #[error("the daemon is stopping")]
    Stopping,
}

/// A value of the event's object for a parameter of the single-record fetch: the field of
/// that name, else the object's `uuid` for a `…uuid` parameter (Zoom's meeting instance),
/// else its `id` for an `…id` parameter.
fn param_from_event(object: &Value, name: &str) -> Option<Value> {
    let present = |v: &Value| !v.is_null() && v.as_str().is_none_or(|s| !s.is_empty());
    if let Some(v) = object.get(name).filter(|v| present(v)) {
        return Some(v.clone());
    }
    let fallback = if name == "uuid" || name.ends_with("_uuid") {
        ["uuid", "meeting_uuid"].as_slice()
    } else if name == "id" || name.ends_with("_id") {
        ["id"].as_slice()
    } else {
        [].as_slice()
    };
    fallback
        .iter()
        .find_map(|f| object.get(*f).filter(|v| present(v)).cloned())
}

/// Runs every pipeline triggered by one event for the record it names.
async fn process(shared: &Arc<Shared>, ev: &InboxEvent) -> Result<(), ProcessError> {
    let project = shared.project();
    let object = &ev.payload["payload"]["object"];
    let targets: Vec<_> = project
        .pipelines
        .iter()
        .filter(|p| p.triggers.contains(&ev.event))
        .map(|p| (p.name.clone(), p.source.stream.clone()))
        .collect();
    if targets.is_empty() {
        tracing::debug!(event = %ev.event, "no pipeline is triggered by this event");
    }
    for (pipeline, stream) in targets {
        if shared.shutdown().is_triggered() {
            return Err(ProcessError::Stopping);
        }
        let stream = stream.strip_prefix("zoom.").unwrap_or(&stream).to_string();
        let single = catalog::catalog()
            .get(&stream)
            .and_then(|d| d.single.clone())
            .ok_or_else(|| ProcessError::NoSingleFetch {
                pipeline: pipeline.clone(),
                stream: stream.clone(),
            })?;
        let mut params = BTreeMap::new();
        for name in &single.params {
            let v = param_from_event(object, name).ok_or_else(|| ProcessError::MissingParam {
                pipeline: pipeline.clone(),
                stream: stream.clone(),
                param: name.clone(),
            })?;
            params.insert(name.clone(), v);
        }
        let record = shared
            .conns()
            .zoom
            .conn
            .fetch_one(&stream, &params)
            .await
            .map_err(|source| ProcessError::Fetch {
                pipeline: pipeline.clone(),
                source,
            })?;
        let Some(record) = record else {
            tracing::info!(pipeline, event = %ev.event, "Zoom has no such record (any more); nothing to do");
            continue;
        };
        let Some(report) = shared
            .run_pipeline(&pipeline, Some(vec![record]), Trigger::Webhook)
            .await
        else {
            if shared.shutdown().is_triggered() {
                return Err(ProcessError::Stopping);
            }
            // The pipeline is gone since the event arrived.
            continue;
        };
        if let Some(why) = report.stopped {
            if shared.shutdown().is_triggered() {
                // Left pending, not counted as a failure: the next start processes it again
                // (the ledger keeps that from writing twice).
                return Err(ProcessError::Stopping);
            }
            return Err(ProcessError::Run {
                pipeline,
                message: why,
            });
        }
    }
    Ok(())
}

/// Forgets the events that are over (see [`crate::state::Store::inbox_purge`]).
fn purge(shared: &Shared, now: DateTime<Utc>) {
    use crate::state::{INBOX_KEEP_DONE_DAYS, INBOX_KEEP_FAILED_DAYS};
    match shared.store.inbox_purge(
        now - chrono::Duration::days(INBOX_KEEP_DONE_DAYS),
        now - chrono::Duration::days(INBOX_KEEP_FAILED_DAYS),
    ) {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "forgot finished webhook events"),
        Err(e) => tracing::warn!("cannot purge the webhook inbox: {e}"),
    }
}

/// How long a failed event waits before its next attempt (doubling per attempt).
fn retry_delay(attempts: i64) -> chrono::Duration {
    let exp = attempts.clamp(0, 6) as u32;
    chrono::Duration::seconds(30 * 2i64.pow(exp))
}

/// Takes pending events (oldest first), processes them, and marks each done or failed.
/// Events stored before a restart are pending and are processed after it.
pub(crate) async fn run_processor(shared: Arc<Shared>) {
    let mut not_before: HashMap<i64, DateTime<Utc>> = HashMap::new();
    // Finished events are purged at start and then hourly, so the state file does not grow
    // with every delivery ever received.
    let mut next_purge = shared.clock.now();
    loop {
        if shared.shutdown().is_triggered() {
            break;
        }
        let wake = shared.inbox_wake.notified();
        let pending = match shared.store.inbox_pending(BATCH) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot read the webhook inbox: {e}");
                Vec::new()
            }
        };
        let now = shared.clock.now();
        let mut did = 0usize;
        for ev in &pending {
            if shared.shutdown().is_triggered() {
                break;
            }
            if not_before.get(&ev.id).is_some_and(|t| *t > now) {
                continue;
            }
            did += 1;
            match process(&shared, ev).await {
                Ok(()) => {
                    not_before.remove(&ev.id);
                    if let Err(e) = shared.store.inbox_done(ev.id) {
                        tracing::error!(inbox_id = ev.id, "cannot mark a webhook event done: {e}");
                    }
                }
                Err(ProcessError::Stopping) => break,
                Err(e) => {
                    tracing::warn!(inbox_id = ev.id, event = %ev.event, "webhook event failed: {e}");
                    not_before.insert(ev.id, shared.clock.now() + retry_delay(ev.attempts));
                    if let Err(e2) = shared.store.inbox_failed(ev.id, &e.to_string()) {
                        tracing::error!(
                            inbox_id = ev.id,
                            "cannot record a failed webhook event: {e2}"
                        );
                    }
                }
            }
            shared.update_status(|s| s.webhooks_processed += 1);
        }
        if did > 0 {
            // More may wait behind this batch.
            continue;
        }
        if now >= next_purge {
            purge(&shared, now);
            next_purge = now + chrono::Duration::hours(1);
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(shared.options.tick) => {}
            _ = shared.shutdown().wait() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delivery_ids_prefer_zooms_request_id() {
        let body = json!({"event": "meeting.ended", "event_ts": 1, "payload": {"object": {"uuid": "u==", "id": 5}}});
        assert_eq!(delivery_id(Some("abc"), &body), "zm:abc");
        let a = delivery_id(None, &body);
        assert!(a.starts_with("h:"));
        assert_eq!(a, delivery_id(Some("  "), &body));
        let mut later = body.clone();
        later["event_ts"] = json!(2);
        assert_ne!(a, delivery_id(None, &later));
    }

    #[test]
    fn fetch_params_come_from_the_event_object() {
        let object = json!({"uuid": "/ab==", "id": 85012345678u64, "host_id": "h"});
        assert_eq!(param_from_event(&object, "uuid"), Some(json!("/ab==")));
        assert_eq!(
            param_from_event(&object, "meeting_uuid"),
            Some(json!("/ab=="))
        );
        assert_eq!(param_from_event(&object, "host_id"), Some(json!("h")));
        assert_eq!(
            param_from_event(&object, "webinar_id"),
            Some(json!(85012345678u64))
        );
        assert_eq!(param_from_event(&object, "call_path"), None);
    }
}
