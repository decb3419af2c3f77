//! The webhook inbox's two ends: storing a verified delivery (before answering Zoom), and the
//! processor that hands each stored event to the pipelines it triggers.

use super::{Shared, Trigger};
use crate::connectors::zoom::{ZoomError, catalog};
use crate::state::InboxEvent;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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

/// A delivery's body fit to show an admin: values of keys that name secrets (passwords,
/// passcodes, tokens, secrets) and the query part of URLs (Zoom puts passcodes and tokens
/// there: `?pwd=`, `?tk=`, `access_token=`) are replaced by `[redacted]`.
pub fn redact_payload(v: &Value) -> Value {
    fn secret_key(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        [
            "password",
            "passcode",
            "token",
            "secret",
            "pwd",
            "signature",
        ]
        .iter()
        .any(|s| k.contains(s))
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if secret_key(k) && !v.is_null() && v.as_str() != Some("") {
                        Value::String("[redacted]".into())
                    } else {
                        redact_payload(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact_payload).collect()),
        Value::String(s) if s.contains("://") && s.contains('?') => {
            let base = s.split('?').next().unwrap_or_default();
            Value::String(format!("{base}?[redacted]"))
        }
        other => other.clone(),
    }
}

/// Why an event could not be processed (it is retried later).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("pipeline {pipeline}: stream {stream} has no single-record fetch")]
    NoSingleFetch { pipeline: String, stream: String },
    #[error("pipeline {pipeline}: the event has no (usable) `{param}` for {stream}")]
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
        let def = catalog::catalog().get(&stream).cloned();
        if let Some(field) = def.as_ref().and_then(|d| d.event_records.clone()) {
            // The event carries the records (Zoom Phone): run on them, no fetch.
            let records =
                event_records(object, &field).ok_or_else(|| ProcessError::MissingParam {
                    pipeline: pipeline.clone(),
                    stream: stream.clone(),
                    param: field.clone(),
                })?;
            run_triggered(shared, &pipeline, records).await?;
            continue;
        }
        let single =
            def.and_then(|d| d.single.clone())
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
        run_triggered(shared, &pipeline, vec![record]).await?;
    }
    Ok(())
}

/// Most records one event may carry (Zoom sends a call or two per call-history event).
const MAX_EVENT_RECORDS: usize = 1000;

/// The records an event carries in `payload.object.<field>` (an array of objects).
fn event_records(object: &Value, field: &str) -> Option<Vec<Value>> {
    let items = object.get(field)?.as_array()?;
    if items.is_empty() || items.len() > MAX_EVENT_RECORDS || !items.iter().all(Value::is_object) {
        return None;
    }
    Some(items.clone())
}

/// Runs a pipeline on the records an event named; a run that stops is a failure (retried).
async fn run_triggered(
    shared: &Arc<Shared>,
    pipeline: &str,
    records: Vec<Value>,
) -> Result<(), ProcessError> {
    let Some(report) = shared
        .run_pipeline(pipeline, Some(records), Trigger::Webhook)
        .await
    else {
        if shared.shutdown().is_triggered() {
            return Err(ProcessError::Stopping);
        }
        // The pipeline is gone since the event arrived.
        return Ok(());
    };
    if let Some(why) = report.stopped {
        if shared.shutdown().is_triggered() {
            // Left pending, not counted as a failure: the next start processes it again
            // (the ledger keeps that from writing twice).
            return Err(ProcessError::Stopping);
        }
        return Err(ProcessError::Run {
            pipeline: pipeline.to_string(),
            message: why,
        });
    }
    Ok(())
}

/// Forgets the events that are over (see [`crate::state::Store::inbox_purge`]).
async fn purge(shared: &Shared, now: DateTime<Utc>) {
    use crate::state::{INBOX_KEEP_DONE_DAYS, INBOX_KEEP_FAILED_DAYS};
    match shared
        .store
        .inbox_purge(
            now - chrono::Duration::days(INBOX_KEEP_DONE_DAYS),
            now - chrono::Duration::days(INBOX_KEEP_FAILED_DAYS),
        )
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "forgot finished webhook events"),
        Err(e) => tracing::warn!("cannot purge the webhook inbox: {e}"),
    }
}

/// Takes the events that are due (never tried, or failed and past their retry time; oldest
/// first), processes them, and marks each done or failed. A failure is retried with growing
/// waits for [`crate::state::INBOX_RETRY_HOURS`] from receipt, then kept as a dead letter for
/// `ferry inbox`. Events stored before a restart are processed after it; their retry times
/// live in the state file, so a restart neither forgets nor hurries them.
pub(crate) async fn run_processor(shared: Arc<Shared>) {
    // Finished events are purged at start and then hourly, so the state file does not grow
    // with every delivery ever received.
    let mut next_purge = shared.clock.now();
    loop {
        if shared.shutdown().is_triggered() {
            break;
        }
        let wake = shared.inbox_wake.notified();
        let now = shared.clock.now();
        let due = match shared.store.inbox_due(now, BATCH).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot read the webhook inbox: {e}");
                Vec::new()
            }
        };
        let mut did = 0usize;
        for ev in &due {
            if shared.shutdown().is_triggered() {
                break;
            }
            did += 1;
            match process(&shared, ev).await {
                Ok(()) => {
                    if let Err(e) = shared.store.inbox_done(ev.id).await {
                        tracing::error!(inbox_id = ev.id, "cannot mark a webhook event done: {e}");
                    }
                }
                Err(ProcessError::Stopping) => break,
                Err(e) => {
                    // Kept for `ferry inbox` and shown to admins: no URLs, queries or emails.
                    let why = super::status::sanitize_error(&e.to_string());
                    match shared.store.inbox_failed(ev.id, &why).await {
                        Ok(crate::state::InboxFailure::Retry(at)) => tracing::warn!(
                            inbox_id = ev.id,
                            event = %ev.event,
                            attempt = ev.attempts + 1,
                            next_attempt = %at,
                            "webhook event failed; retrying later: {why}"
                        ),
                        Ok(crate::state::InboxFailure::Dead) => tracing::error!(
                            inbox_id = ev.id,
                            event = %ev.event,
                            "webhook event failed for a day; kept as a dead letter (ferry inbox list): {why}"
                        ),
                        Err(e2) => tracing::error!(
                            inbox_id = ev.id,
                            "cannot record a failed webhook event: {e2}"
                        ),
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
            purge(&shared, now).await;
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
    fn phone_events_carry_their_records() {
        let object = json!({"user_id": "u", "call_logs": [{"id": "a"}, {"id": "b"}]});
        assert_eq!(
            event_records(&object, "call_logs").map(|r| r.len()),
            Some(2)
        );
        assert_eq!(event_records(&object, "recordings"), None);
        assert_eq!(event_records(&json!({"call_logs": []}), "call_logs"), None);
        assert_eq!(event_records(&json!({"call_logs": [1]}), "call_logs"), None);
    }

    #[test]
    fn shown_payloads_hide_secrets() {
        let body = json!({"event": "recording.completed", "download_token": "abc.def",
            "payload": {"plainToken": "p", "object": {"uuid": "u==", "password": "123456",
            "recording_play_passcode": "x", "share_url": "https://zoom.us/rec/share/a?pwd=secret",
            "recording_files": [{"download_url": "https://zoom.us/rec/download/x?access_token=t"}],
            "topic": "kept", "encrypted_password": ""}}});
        let r = redact_payload(&body);
        let text = r.to_string();
        for secret in [
            "abc.def",
            "123456",
            "pwd=secret",
            "access_token=t",
            "\"x\"",
            "\"p\"",
        ] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert_eq!(r["payload"]["object"]["topic"], "kept");
        assert_eq!(r["payload"]["object"]["uuid"], "u==");
        assert_eq!(
            r["payload"]["object"]["share_url"],
            "https://zoom.us/rec/share/a?[redacted]"
        );
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
