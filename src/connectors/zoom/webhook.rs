//! Verifying Zoom webhook deliveries (x-zm-signature over the raw body) and answering the
//! endpoint.url_validation challenge.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// A verified webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `meeting.ended`, `endpoint.url_validation`, ...
    pub event: String,
    /// Epoch milliseconds.
    pub event_ts: i64,
    pub payload: serde_json::Value,
    /// The whole parsed body (top-level extras such as `download_token` included).
    pub body: serde_json::Value,
    pub request_timestamp: i64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("x-zm-request-timestamp is not epoch seconds")]
    BadTimestamp,
    #[error("request timestamp is {age_secs}s away from now, outside the replay window")]
    Stale { age_secs: i64 },
    #[error("signature does not match")]
    BadSignature,
    #[error("body is not a Zoom event: {0}")]
    BadBody(String),
}

/// `v0=` + hex HMAC-SHA256(secret, "v0:{timestamp}:{body}").
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Verifies a delivery: signature over the raw bytes (constant-time), then the replay window.
pub fn verify_webhook(
    secret: &str,
    headers: &[(String, String)],
    raw_body: &[u8],
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Event, WebhookError> {
    let ts_text = header(headers, "x-zm-request-timestamp")
        .ok_or(WebhookError::MissingHeader("x-zm-request-timestamp"))?;
    let signature =
        header(headers, "x-zm-signature").ok_or(WebhookError::MissingHeader("x-zm-signature"))?;
    let timestamp: i64 = ts_text.parse().map_err(|_| WebhookError::BadTimestamp)?;
    let hex_sig = signature
        .strip_prefix("v0=")
        .ok_or(WebhookError::BadSignature)?;
    let given = hex::decode(hex_sig).map_err(|_| WebhookError::BadSignature)?;
    let mut m = mac(secret);
    m.update(format!("v0:{timestamp}:").as_bytes());
    m.update(raw_body);
    m.verify_slice(&given)
        .map_err(|_| WebhookError::BadSignature)?;
    let age = now.timestamp() - timestamp;
    if age.unsigned_abs() > window.as_secs() {
        return Err(WebhookError::Stale { age_secs: age });
    }
    let body: serde_json::Value =
        serde_json::from_slice(raw_body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    let event = body["event"]
        .as_str()
        .ok_or_else(|| WebhookError::BadBody("no `event`".into()))?
        .to_string();
    Ok(Event {
        event,
        event_ts: body["event_ts"].as_i64().unwrap_or(0),
        payload: body["payload"].clone(),
        body,
        request_timestamp: timestamp,
    })
}

/// The answer to `endpoint.url_validation`: `{"plainToken", "encryptedToken"}`.
pub fn url_validation_response(secret: &str, plain_token: &str) -> serde_json::Value {
    let mut m = mac(secret);
    m.update(plain_token.as_bytes());
    serde_json::json!({
        "plainToken": plain_token,
        "encryptedToken": hex::encode(m.finalize().into_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SECRET: &str = "test_secret_token_123";
    pub(crate) const ENDED: &str = r#"{"event":"meeting.ended","event_ts":1739923528123,"payload":{"account_id":"AAAAAAAAAAAAAAAAAAAAAA","object":{"id":"85012345678","uuid":"/ajXp112QmuoKj4854875==","host_id":"z8yAAAAA8bbbQ","topic":"Acme <> Contoso discovery","type":2,"start_time":"2025-02-18T23:00:05Z","timezone":"America/Los_Angeles","duration":30,"end_time":"2025-02-18T23:45:20Z"}}}"#;
    const CRC: &str = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;

    fn headers(ts: &str, sig: &str) -> Vec<(String, String)> {
        vec![
            ("X-Zm-Request-Timestamp".into(), ts.into()),
            ("x-zm-signature".into(), sig.into()),
        ]
    }

    fn at(ts: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(ts, 0).expect("time")
    }

    #[test]
    fn reference_vectors() {
        assert_eq!(ENDED.len(), 351);
        let sig = "v0=4d7a4711c2451d24bb5b9657caeb4a1cbddbafe16fc9b3434a65a4c01e4aab88";
        assert_eq!(sign(SECRET, 1739923528, ENDED.as_bytes()), sig);
        let ev = verify_webhook(
            SECRET,
            &headers("1739923528", sig),
            ENDED.as_bytes(),
            at(1739923528 + 10),
            Duration::from_secs(300),
        )
        .expect("valid");
        assert_eq!(ev.event, "meeting.ended");
        assert_eq!(ev.payload["object"]["uuid"], "/ajXp112QmuoKj4854875==");
        let crc_sig = "v0=b23a1e6f0cc08362503153edd1394f4ecae31d79ceb5f36d1cbba6d8f4ad6e85";
        assert_eq!(sign(SECRET, 1739923528, CRC.as_bytes()), crc_sig);
        assert_eq!(
            url_validation_response(SECRET, "qgg8vlvZRS6UYooatFL8Aw")["encryptedToken"],
            "2b5cfb77819cee95afa1a1521bcd4b88c3aacdd939430efc23bc041cbecf816e"
        );
    }

    #[test]
    fn tampering_and_replays_are_refused() {
        let sig = sign(SECRET, 1739923528, ENDED.as_bytes());
        let tampered = ENDED.replace("85012345678", "85012345679");
        let win = Duration::from_secs(300);
        assert_eq!(
            verify_webhook(
                SECRET,
                &headers("1739923528", &sig),
                tampered.as_bytes(),
                at(1739923528),
                win
            ),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_webhook(
                "other",
                &headers("1739923528", &sig),
                ENDED.as_bytes(),
                at(1739923528),
                win
            ),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_webhook(
                SECRET,
                &headers("1739923528", &sig),
                ENDED.as_bytes(),
                at(1739923528 + 301),
                win
            ),
            Err(WebhookError::Stale { age_secs: 301 })
        );
        // Pretty-printed JSON is a different byte string: verification is over raw bytes.
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(ENDED).expect("json"),
        )
        .expect("json");
        assert!(
            verify_webhook(
                SECRET,
                &headers("1739923528", &sig),
                pretty.as_bytes(),
                at(1739923528),
                win
            )
            .is_err()
        );
        assert_eq!(
            verify_webhook(SECRET, &[], ENDED.as_bytes(), at(1739923528), win),
            Err(WebhookError::MissingHeader("x-zm-request-timestamp"))
        );
    }
}
