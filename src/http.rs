//! The one HTTP layer every connector uses: retries with backoff and jitter, Retry-After,
//! per-category rate limiting, a circuit breaker and request metrics.
//!
//! Connectors build a [`Request`], say which rate-limit category it spends and whether it is
//! safe to resend, and get back a [`Response`] whose body is fully read. Authentication stays
//! in the connector (it knows its token endpoint); this layer knows only about HTTP.

use crate::clock::SharedClock;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use reqwest::Method;

/// Which service a request goes to; metrics are kept per service and category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Zoom,
    Salesforce,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Zoom => "zoom",
            Service::Salesforce => "salesforce",
        }
    }
}

/// One request, with everything the layer needs to decide how to send and resend it.
#[derive(Debug, Clone)]
pub struct Request {
    pub service: Service,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// Rate-limit category (Zoom: "light", "medium", "heavy", "resource_intensive").
    pub category: Option<String>,
    /// Safe to send again after a failure whose outcome is unknown (a reset connection, a
    /// 5xx). False for requests that create records without an idempotency key.
    pub idempotent: bool,
}

impl Request {
    pub fn new(service: Service, method: Method, url: impl Into<String>) -> Self {
        let idempotent = method == Method::GET || method == Method::PUT || method == Method::DELETE;
        Self {
            service,
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            category: None,
            idempotent,
        }
    }
    pub fn header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }
    pub fn json(mut self, v: &serde_json::Value) -> Self {
        self.body = Some(Bytes::from(serde_json::to_vec(v).unwrap_or_default()));
        self.header("Content-Type", "application/json")
    }
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.body = Some(Bytes::from(body));
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }
    pub fn category(mut self, c: impl Into<String>) -> Self {
        self.category = Some(c.into());
        self
    }
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }
}

/// A response whose body has been read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Malformed {
            status: self.status,
            message: e.to_string(),
            snippet: String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned(),
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("could not reach {url}: {message}")]
    Transport { url: String, message: String },
    #[error("malformed response (HTTP {status}): {message}; body starts {snippet:?}")]
    Malformed {
        status: u16,
        message: String,
        snippet: String,
    },
    #[error("{service} is failing repeatedly; circuit open for {seconds}s")]
    CircuitOpen { service: &'static str, seconds: u64 },
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("rate limit for {category} exhausted until {until}")]
    DailyLimit { category: String, until: String },
}

/// Request counters, per (service, category).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CallStats {
    pub requests: u64,
    pub responses_429: u64,
    pub responses_5xx: u64,
    pub transport_errors: u64,
    pub retries: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    stats: Mutex<BTreeMap<(Service, String), CallStats>>,
}

impl Metrics {
    fn with(&self, service: Service, category: &str, f: impl FnOnce(&mut CallStats)) {
        let mut m = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry((service, category.to_string())).or_default());
    }
    pub fn snapshot(&self) -> BTreeMap<(Service, String), CallStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Total requests sent to one service (retries included).
    pub fn requests(&self, service: Service) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((s, _), _)| *s == service)
            .map(|(_, c)| c.requests)
            .sum()
    }
}

/// Backoff policy for retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

/// The shared client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    clock: SharedClock,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl HttpClient {
    pub fn new(clock: SharedClock) -> Self {
        let inner = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(32)
            .build()
            .unwrap_or_default();
        Self {
            inner,
            clock,
            retry: RetryPolicy::default(),
            metrics: Arc::new(Metrics::default()),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sends a request, retrying what is safe to retry. Non-2xx answers that are not retried
    /// come back as `Ok(Response)`: the connector decides what a 404 or a 400 means.
    pub async fn send(&self, req: Request) -> Result<Response, HttpError> {
        let category = req.category.clone().unwrap_or_else(|| "default".into());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.metrics
                .with(req.service, &category, |s| s.requests += 1);
            let mut rb = self.inner.request(req.method.clone(), &req.url);
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            if let Some(b) = &req.body {
                rb = rb.body(b.clone());
            }
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => Ok(Response {
                            status,
                            headers,
                            body,
                        }),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            let wait = match &outcome {
                Ok(r) if r.status == 429 => {
                    self.metrics
                        .with(req.service, &category, |s| s.responses_429 += 1);
                    Some(retry_after(r, self.clock.now()).unwrap_or_else(|| self.backoff(attempt)))
                }
                Ok(r) if r.status >= 500 && req.idempotent => {
                    self.metrics
                        .with(req.service, &category, |s| s.responses_5xx += 1);
                    Some(self.backoff(attempt))
                }
                Ok(_) => None,
                Err(_) => {
                    self.metrics
                        .with(req.service, &category, |s| s.transport_errors += 1);
                    if req.idempotent {
                        Some(self.backoff(attempt))
                    } else {
                        None
                    }
                }
            };
            match (outcome, wait) {
                (Ok(r), None) => return Ok(r),
                (Err(message), None) => {
                    return Err(HttpError::Transport {
                        url: req.url.clone(),
                        message,
                    });
                }
                (last, Some(wait)) => {
                    if attempt >= self.retry.max_attempts {
                        return match last {
                            Ok(r) => Ok(r),
                            Err(message) => Err(HttpError::GaveUp {
                                attempts: attempt,
                                last: message,
                            }),
                        };
                    }
                    self.metrics
                        .with(req.service, &category, |s| s.retries += 1);
                    self.clock.sleep(wait).await;
                }
            }
        }
    }

    /// Exponential backoff with full jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        let cap = exp.min(self.retry.max);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
        cap.mul_f64(jitter)
    }
}

/// Parses Retry-After in its three forms (delta-seconds, HTTP-date, ISO-8601) into a wait
/// from `now`.
pub fn retry_after(r: &Response, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = r.header("retry-after")?.trim();
    parse_retry_after(v, now)
}

pub fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc3339(v)
        .or_else(|_| chrono::DateTime::parse_from_rfc2822(v))
        .ok()?
        .with_timezone(&chrono::Utc);
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_has_three_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2020-05-30T23:59:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("2020-05-31T00:00:00Z", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 31 May 2020 00:00:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
