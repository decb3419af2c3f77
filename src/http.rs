//! The one HTTP layer every connector uses: retries with backoff and jitter, Retry-After,
//! per-category rate limiting, a circuit breaker and request metrics.
//!
//! Connectors build a [`Request`], say which rate-limit category it spends and whether it is
//! safe to resend, and get back a [`Response`] whose body is fully read. Authentication stays
//! in the connector (it knows its token endpoint); this layer knows only about HTTP.

use crate::clock::SharedClock;
use bytes::Bytes;
use chrono::{DateTime, Utc};
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
    /// The server asked for a wait longer than the connection's `max_wait`: ferry ends the
    /// batch at once instead of sleeping (the next run tries again).
    #[error(
        "{service} asked ferry to wait {asked} before its next {category} request, longer than the connection's max_wait of {max}; stopping this batch now (run again later, or raise max_wait)"
    )]
    WaitTooLong {
        service: &'static str,
        category: String,
        /// The wait as asked: its length, when it ends, and the header that asked for it.
        asked: String,
        max: String,
    },
    /// A response body larger than the cap ferry reads ([`DEFAULT_MAX_BODY`] unless set).
    #[error("response from {url} is larger than the {limit} ferry reads{}; refusing it", .size.map(|s| format!(" (it announced {s} bytes)")).unwrap_or_default())]
    BodyTooLarge {
        url: String,
        limit: String,
        /// The Content-Length the server announced, when it did.
        size: Option<u64>,
    },
}

/// The longest wait a server may ask for before ferry gives up on the batch instead of
/// sleeping (a connection's `max_wait` replaces it).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// The largest response body ferry reads (64 MiB); a longer one is an error, not memory.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024 * 1024;

/// Request counters, per (service, category).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CallStats {
    pub requests: u64,
    pub responses_429: u64,
    pub responses_5xx: u64,
    pub transport_errors: u64,
    pub retries: u64,
    /// Time spent waiting before sends: rate-limit pacing, Retry-After and backoff.
    pub wait_ms: u64,
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
        self.total(service).requests
    }
    /// All counters of one service, summed over categories.
    pub fn total(&self, service: Service) -> CallStats {
        let mut t = CallStats::default();
        for ((s, _), c) in self.snapshot() {
            if s == service {
                t.requests += c.requests;
                t.responses_429 += c.responses_429;
                t.responses_5xx += c.responses_5xx;
                t.transport_errors += c.transport_errors;
                t.retries += c.retries;
                t.wait_ms += c.wait_ms;
            }
        }
        t
    }
    /// Total time waited, over every service and category.
    pub fn total_wait(&self) -> Duration {
        Duration::from_millis(self.snapshot().values().map(|c| c.wait_ms).sum())
    }
}

/// Today's use of one daily cap (see [`HttpClient::daily_usage`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DailyUse {
    /// The rate-limit category, or the key of a cap several categories share.
    pub name: String,
    pub used: u64,
    pub limit: u64,
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

/// The budget of one rate-limit category.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryLimit {
    /// Requests per second this client allows itself (already scaled by headroom).
    pub per_second: f64,
    /// Requests per UTC day, when the service has a daily cap.
    pub per_day: Option<u64>,
    /// Requests that may go at once after an idle spell (None: one second's worth). A
    /// service that counts requests per second sees at most `burst + per_second` in any one
    /// second, so a burst of `published - per_second` never passes the published limit.
    pub burst: Option<f64>,
}

/// Per-category budgets of one service; the connector builds it from the plan's table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    pub categories: BTreeMap<String, CategoryLimit>,
    /// Categories that draw on one shared daily cap, named by the cap's key.
    pub shared_daily: BTreeMap<String, String>,
    /// Requests in flight at once for the service.
    pub max_concurrency: usize,
}

impl RateLimits {
    pub fn category(mut self, name: &str, per_second: f64, per_day: Option<u64>) -> Self {
        self.categories.insert(
            name.to_string(),
            CategoryLimit {
                per_second,
                per_day,
                burst: None,
            },
        );
        self
    }

    /// Sets the burst of a category added before (see [`CategoryLimit::burst`]).
    pub fn burst(mut self, name: &str, burst: f64) -> Self {
        if let Some(c) = self.categories.get_mut(name) {
            c.burst = Some(burst);
        }
        self
    }
}

/// When to stop calling a failing service for a while.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    /// Consecutive failed attempts (5xx, transport errors) that open the circuit.
    pub failures: u32,
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 12,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// A token bucket on the injected clock. Callers reserve a slot (the next instant the
/// bucket has a token) and wait until it, so concurrent callers queue fairly.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: DateTime<Utc>,
    daily_limit: Option<u64>,
    /// (UTC day, requests counted) for the daily cap.
    day: (chrono::NaiveDate, u64),
    /// Set by a daily-limit 429 or an exhausted daily budget.
    blocked_until: Option<DateTime<Utc>>,
}

impl Bucket {
    fn new(limit: &CategoryLimit, now: DateTime<Utc>) -> Self {
        let rate = limit.per_second.max(0.001);
        // A one-second burst unless the limit says otherwise, never less than one request.
        let capacity = limit
            .burst
            .filter(|b| b.is_finite())
            .unwrap_or(rate)
            .max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            updated: now,
            daily_limit: limit.per_day,
            day: (now.date_naive(), 0),
            blocked_until: None,
        }
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        let elapsed = (now - self.updated)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        if elapsed > 0.0 {
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
            self.updated = now;
        }
    }

    /// Reserves one request and says how long to wait before sending it.
    fn reserve(&mut self, now: DateTime<Utc>) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
        }
    }

    /// After a per-second 429: nobody sends on this category before `wait` has passed.
    fn drain_for(&mut self, now: DateTime<Utc>, wait: Duration) {
        self.refill(now);
        let debt = -(wait.as_secs_f64() * self.rate);
        self.tokens = self.tokens.min(debt);
    }
}

/// Closed (counting consecutive failures), open (refusing until `open_until`), then
/// half-open: one probe goes through; its success closes the circuit, its failure reopens it.
#[derive(Debug, Default)]
struct Breaker {
    consecutive: u32,
    open_until: Option<DateTime<Utc>>,
    /// When the half-open probe was let through. A probe whose caller gave up never
    /// reports back, so after another cool-down a new probe is allowed.
    probe_since: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Limiter {
    buckets: BTreeMap<(Service, String), Bucket>,
    /// Shared daily caps: (service, cap key) → (day, count).
    shared_days: BTreeMap<(Service, String), (chrono::NaiveDate, u64)>,
    limits: BTreeMap<Service, RateLimits>,
    breakers: BTreeMap<Service, Breaker>,
}

/// The shared client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    clock: SharedClock,
    retry: RetryPolicy,
    breaker: BreakerPolicy,
    metrics: Arc<Metrics>,
    limiter: Arc<Mutex<Limiter>>,
    permits: Arc<Mutex<BTreeMap<Service, Arc<tokio::sync::Semaphore>>>>,
    jitter_seed: Arc<std::sync::atomic::AtomicU64>,
    /// Per service: the longest server-requested wait ferry sleeps through.
    max_wait: Arc<Mutex<BTreeMap<Service, Duration>>>,
    max_body: u64,
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
            breaker: BreakerPolicy::default(),
            metrics: Arc::new(Metrics::default()),
            limiter: Arc::new(Mutex::new(Limiter::default())),
            permits: Arc::new(Mutex::new(BTreeMap::new())),
            jitter_seed: Arc::new(std::sync::atomic::AtomicU64::new(0x9E37_79B9_7F4A_7C15)),
            max_wait: Arc::new(Mutex::new(BTreeMap::new())),
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The largest response body this client reads (default [`DEFAULT_MAX_BODY`]).
    pub fn with_max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// The longest wait a server of `service` may ask for (Retry-After, X-RateLimit-Reset)
    /// that ferry sleeps through; a longer one ends the request with
    /// [`HttpError::WaitTooLong`] at once. Shared by every clone of this client.
    pub fn set_max_wait(&self, service: Service, max: Duration) {
        self.max_wait
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service, max);
    }

    /// See [`HttpClient::set_max_wait`]; [`DEFAULT_MAX_WAIT`] unless set.
    pub fn max_wait(&self, service: Service) -> Duration {
        self.max_wait
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&service)
            .copied()
            .unwrap_or(DEFAULT_MAX_WAIT)
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_breaker(mut self, breaker: BreakerPolicy) -> Self {
        self.breaker = breaker;
        self
    }

    /// Installs (or replaces) a service's rate limits. Every clone of this client shares
    /// them, so all pipelines on one account draw from the same buckets.
    pub fn set_rate_limits(&self, service: Service, limits: RateLimits) {
        let concurrency = limits.max_concurrency.max(1);
        let mut l = self.lock_limiter();
        l.buckets.retain(|(s, _), _| *s != service);
        l.limits.insert(service, limits);
        drop(l);
        self.permits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service, Arc::new(tokio::sync::Semaphore::new(concurrency)));
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn lock_limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While a daily limit of the service blocks one of its categories: when the last such
    /// block lifts (the daemon resumes a stopped pipeline then). None when nothing is blocked.
    pub fn daily_limit_until(&self, service: Service) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        self.lock_limiter()
            .buckets
            .iter()
            .filter(|((s, _), _)| *s == service)
            .filter_map(|(_, b)| b.blocked_until)
            .filter(|t| *t > now)
            .max()
    }

    /// Today's (UTC) use of the service's daily caps, as this process counted it: one entry
    /// per capped category, or per shared cap (named by its key) for categories that share
    /// one. Categories never called today count 0.
    pub fn daily_usage(&self, service: Service) -> Vec<DailyUse> {
        let today = self.clock.now().date_naive();
        let l = self.lock_limiter();
        let Some(limits) = l.limits.get(&service) else {
            return Vec::new();
        };
        let mut out: BTreeMap<String, DailyUse> = BTreeMap::new();
        for (category, limit) in &limits.categories {
            let Some(cap) = limit.per_day else {
                continue;
            };
            let (name, counter) = match limits.shared_daily.get(category) {
                Some(key) => (
                    key.clone(),
                    l.shared_days.get(&(service, key.clone())).copied(),
                ),
                None => (
                    category.clone(),
                    l.buckets.get(&(service, category.clone())).map(|b| b.day),
                ),
            };
            let used = counter.filter(|(d, _)| *d == today).map_or(0, |(_, n)| n);
            out.insert(
                name.clone(),
                DailyUse {
                    name,
                    used,
                    limit: cap,
                },
            );
        }
        out.into_values().collect()
    }

    /// Checks the circuit and the daily caps, then reserves a slot in the category's bucket.
    fn admit(&self, service: Service, category: &str) -> Result<Duration, HttpError> {
        let now = self.clock.now();
        let mut guard = self.lock_limiter();
        let l = &mut *guard;
        let breaker = l.breakers.entry(service).or_default();
        if let Some(until) = breaker.open_until {
            if until > now {
                return Err(HttpError::CircuitOpen {
                    service: service.as_str(),
                    seconds: (until - now).num_seconds().max(1) as u64,
                });
            }
            let cool_down = chrono::Duration::from_std(self.breaker.cool_down)
                .unwrap_or(chrono::Duration::seconds(30));
            match breaker.probe_since {
                Some(since) if since + cool_down > now => {
                    return Err(HttpError::CircuitOpen {
                        service: service.as_str(),
                        seconds: (since + cool_down - now).num_seconds().max(1) as u64,
                    });
                }
                _ => breaker.probe_since = Some(now),
            }
        }
        // A daily-limit 429 blocks its category even when no limits are configured for it.
        if let Some(bucket) = l.buckets.get_mut(&(service, category.to_string())) {
            if let Some(until) = bucket.blocked_until {
                if until > now {
                    return Err(HttpError::DailyLimit {
                        category: category.to_string(),
                        until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    });
                }
                bucket.blocked_until = None;
            }
        }
        let Some(limits) = l.limits.get(&service) else {
            return Ok(Duration::ZERO);
        };
        let Some(limit) = limits.categories.get(category).cloned() else {
            return Ok(Duration::ZERO);
        };
        let shared = limits.shared_daily.get(category).cloned();
        let bucket = l
            .buckets
            .entry((service, category.to_string()))
            .or_insert_with(|| Bucket::new(&limit, now));
        if let Some(until) = bucket.blocked_until {
            if until > now {
                return Err(HttpError::DailyLimit {
                    category: category.to_string(),
                    until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                });
            }
            bucket.blocked_until = None;
        }
        if let Some(cap) = bucket.daily_limit {
            let today = now.date_naive();
            let counter = match &shared {
                Some(key) => l
                    .shared_days
                    .entry((service, key.clone()))
                    .or_insert((today, 0)),
                None => &mut bucket.day,
            };
            if counter.0 != today {
                *counter = (today, 0);
            }
            if counter.1 >= cap {
                let until = next_utc_midnight(now);
                bucket.blocked_until = Some(until);
                return Err(HttpError::DailyLimit {
                    category: category.to_string(),
                    until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                });
            }
            counter.1 += 1;
        }
        Ok(bucket.reserve(now))
    }

    fn semaphore(&self, service: Service) -> Option<Arc<tokio::sync::Semaphore>> {
        self.permits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&service)
            .cloned()
    }

    async fn wait(&self, service: Service, category: &str, d: Duration) {
        if d.is_zero() {
            return;
        }
        self.metrics.with(service, category, |s| {
            s.wait_ms += d.as_millis().min(u128::from(u64::MAX)) as u64
        });
        self.clock.sleep(d).await;
    }

    fn record_outcome(&self, service: Service, failed: bool) {
        let now = self.clock.now();
        let mut l = self.lock_limiter();
        let b = l.breakers.entry(service).or_default();
        b.probe_since = None;
        if failed {
            b.consecutive += 1;
            if b.consecutive >= self.breaker.failures {
                b.open_until = Some(
                    now + chrono::Duration::from_std(self.breaker.cool_down)
                        .unwrap_or(chrono::Duration::seconds(30)),
                );
                // Half-open after the cool-down: one more failure reopens it.
                b.consecutive = self.breaker.failures.saturating_sub(1);
            }
        } else {
            b.consecutive = 0;
            b.open_until = None;
        }
    }

    /// A per-second 429 slows every request of the category, not only the one that got it.
    /// Returns false when the category has no bucket (the caller then waits itself).
    fn throttle(&self, service: Service, category: &str, wait: Duration) -> bool {
        let now = self.clock.now();
        let mut l = self.lock_limiter();
        match l.buckets.get_mut(&(service, category.to_string())) {
            Some(b) => {
                b.drain_for(now, wait);
                true
            }
            None => false,
        }
    }

    fn block_category(&self, service: Service, category: &str, until: DateTime<Utc>) {
        let now = self.clock.now();
        let mut guard = self.lock_limiter();
        let l = &mut *guard;
        let limit = l
            .limits
            .get(&service)
            .and_then(|r| r.categories.get(category).cloned())
            .unwrap_or(CategoryLimit {
                per_second: 1000.0,
                per_day: None,
                burst: None,
            });
        l.buckets
            .entry((service, category.to_string()))
            .or_insert_with(|| Bucket::new(&limit, now))
            .blocked_until = Some(until);
    }

    /// Sends a request, retrying what is safe to retry. Non-2xx answers that are not retried
    /// come back as `Ok(Response)`: the connector decides what a 404 or a 400 means.
    pub async fn send(&self, req: Request) -> Result<Response, HttpError> {
        let category = req.category.clone().unwrap_or_else(|| "default".into());
        let service = req.service;
        let _permit = match self.semaphore(service) {
            Some(s) => s.acquire_owned().await.ok(),
            None => None,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let pace = self.admit(service, &category)?;
            self.wait(service, &category, pace).await;
            self.metrics.with(service, &category, |s| s.requests += 1);
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
                    match read_body(resp, self.max_body).await {
                        Ok(body) => Ok(Response {
                            status,
                            headers,
                            body,
                        }),
                        Err(BodyError::TooLarge(size)) => {
                            self.record_outcome(service, false);
                            return Err(HttpError::BodyTooLarge {
                                url: req.url.clone(),
                                limit: human_bytes(self.max_body),
                                size,
                            });
                        }
                        Err(BodyError::Transport(e)) => Err(e),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            let now = self.clock.now();
            let wait = match &outcome {
                // A limit of one resource (Zoom: a host's meeting creates, a registrant's
                // registrations) holds back neither the category nor other requests, and
                // waiting does not help today: the caller decides.
                Ok(r) if r.status == 429 && is_resource_limit(r) => {
                    self.metrics
                        .with(service, &category, |s| s.responses_429 += 1);
                    self.record_outcome(service, false);
                    None
                }
                Ok(r) if r.status == 429 => {
                    self.metrics
                        .with(service, &category, |s| s.responses_429 += 1);
                    self.record_outcome(service, false);
                    if is_daily_limit(r) {
                        // Ends the batch without sleeping whatever the wait; the next run
                        // (or the daemon's next schedule) tries again after `until`.
                        let until = retry_after(r, now)
                            .and_then(|d| later(now, d))
                            .unwrap_or_else(|| next_utc_midnight(now));
                        self.block_category(service, &category, until);
                        return Err(HttpError::DailyLimit {
                            category: category.clone(),
                            until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        });
                    }
                    let asked = retry_after(r, now)
                        .map(|d| (d, "Retry-After"))
                        .or_else(|| rate_limit_reset(r, now).map(|d| (d, "X-RateLimit-Reset")));
                    if let Some((d, header)) = asked {
                        let max = self.max_wait(service);
                        if d > max {
                            return Err(HttpError::WaitTooLong {
                                service: service.as_str(),
                                category: category.clone(),
                                asked: describe_wait(now, d, header, r.header(header)),
                                max: human_duration(max),
                            });
                        }
                    }
                    let wait = asked
                        .map(|(d, _)| d)
                        .unwrap_or_else(|| self.backoff(attempt));
                    // With a bucket, the bucket holds the wait and the next admit pays it.
                    if self.throttle(service, &category, wait) {
                        Some(Duration::ZERO)
                    } else {
                        Some(wait)
                    }
                }
                Ok(r) if r.status >= 500 => {
                    self.metrics
                        .with(service, &category, |s| s.responses_5xx += 1);
                    self.record_outcome(service, true);
                    // A 503 may say when to come back; otherwise back off.
                    req.idempotent.then(|| {
                        retry_after(r, now)
                            .filter(|d| *d <= MAX_RETRY_AFTER_5XX)
                            .unwrap_or_else(|| self.backoff(attempt))
                    })
                }
                Ok(r) => {
                    self.record_outcome(service, false);
                    if r.is_success() && daily_quota_spent(r) {
                        self.block_category(service, &category, next_utc_midnight(now));
                    }
                    None
                }
                Err(_) => {
                    self.metrics
                        .with(service, &category, |s| s.transport_errors += 1);
                    self.record_outcome(service, true);
                    req.idempotent.then(|| self.backoff(attempt))
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
                    self.metrics.with(service, &category, |s| s.retries += 1);
                    self.wait(service, &category, wait).await;
                }
            }
        }
    }

    /// Exponential backoff with jitter (half to full of the capped exponential step).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        let cap = exp.min(self.retry.max);
        // splitmix64: cheap, and no global RNG state shared with tests.
        let mut z = self
            .jitter_seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let jitter = (z >> 11) as f64 / (1u64 << 53) as f64 * 0.5 + 0.5;
        cap.mul_f64(jitter)
    }
}

/// A 5xx's Retry-After longer than this is ignored in favour of backoff (a misconfigured
/// server should not park a run for hours; the circuit breaker handles long outages).
const MAX_RETRY_AFTER_5XX: Duration = Duration::from_secs(300);

/// A 429 for one resource's daily limit rather than the category's (see
/// `connectors::zoom::sink::is_resource_daily_limit`).
fn is_resource_limit(r: &Response) -> bool {
    let text = r.text();
    text.contains("permitted for this particular user")
        || (text.contains("daily rate limit") && text.contains("for the registrant"))
}

fn is_daily_limit(r: &Response) -> bool {
    r.header("x-ratelimit-type")
        .is_some_and(|t| t.eq_ignore_ascii_case("daily-limit"))
        || r.text().contains("maximum daily rate limit")
}

/// A success that reports a daily quota with nothing left.
fn daily_quota_spent(r: &Response) -> bool {
    r.header("x-ratelimit-type")
        .is_some_and(|t| t.eq_ignore_ascii_case("daily-limit"))
        && r.header("x-ratelimit-remaining").map(str::trim) == Some("0")
}

/// `X-RateLimit-Reset` as a unix timestamp, turned into a wait from `now`.
/// A timestamp past chrono's calendar is a wait longer than any `max_wait`.
fn rate_limit_reset(r: &Response, now: DateTime<Utc>) -> Option<Duration> {
    let ts: i64 = r.header("x-ratelimit-reset")?.trim().parse().ok()?;
    match DateTime::<Utc>::from_timestamp(ts, 0) {
        Some(at) => Some((at - now).to_std().unwrap_or_default()),
        None => (ts > 0).then_some(Duration::MAX),
    }
}

/// `now + d`, or None when that is past the calendar chrono can represent.
fn later(now: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    now.checked_add_signed(chrono::Duration::from_std(d).ok()?)
}

/// "31 years 251 days", "2 h 5 min", "45 s": the two largest units of a wait.
pub fn human_duration(d: Duration) -> String {
    const YEAR: u64 = 365 * 86_400;
    let secs = d.as_secs();
    if secs >= 1000 * YEAR {
        return "more than 1000 years".into();
    }
    if secs == 0 {
        return format!("{} ms", d.subsec_millis());
    }
    let units = [
        (YEAR, "years"),
        (86_400, "days"),
        (3600, "h"),
        (60, "min"),
        (1, "s"),
    ];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 || !parts.is_empty() {
            parts.push(format!("{n} {name}"));
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.retain(|p| !p.starts_with("0 "));
    parts.join(" ")
}

/// How long, until when, and the header (its value bounded) that asked for a wait.
fn describe_wait(now: DateTime<Utc>, d: Duration, header: &str, value: Option<&str>) -> String {
    let until = later(now, d)
        .map(|t| {
            format!(
                ", until {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    let value: String = value
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    format!("{}{until} ({header}: {value})", human_duration(d))
}

fn human_bytes(n: u64) -> String {
    if n >= 1024 * 1024 && n % (1024 * 1024) == 0 {
        format!("{} MiB", n / (1024 * 1024))
    } else {
        format!("{n} bytes")
    }
}

enum BodyError {
    /// Larger than the cap; the announced Content-Length when that alone said so.
    TooLarge(Option<u64>),
    Transport(String),
}

/// Reads a body chunk by chunk and stops past `limit`: a body that never ends is an error,
/// not memory. A Content-Length above the limit is refused before reading anything.
async fn read_body(mut resp: reqwest::Response, limit: u64) -> Result<Bytes, BodyError> {
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(BodyError::TooLarge(Some(len)));
        }
    }
    // The announced length is the server's word: reserve at most 1 MiB up front.
    let hint = resp.content_length().unwrap_or(0).min(1024 * 1024);
    let mut body = bytes::BytesMut::with_capacity(usize::try_from(hint).unwrap_or(0));
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let total = (body.len() as u64).saturating_add(chunk.len() as u64);
                if total > limit {
                    return Err(BodyError::TooLarge(None));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err(BodyError::Transport(e.to_string())),
        }
    }
}

fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    tomorrow
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

/// Parses Retry-After in its three forms (delta-seconds, HTTP-date, ISO-8601) into a wait
/// from `now`.
pub fn retry_after(r: &Response, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = r.header("retry-after")?.trim();
    parse_retry_after(v, now)
}

///
/// Any value parses without panicking: a wait too long for [`Duration`] saturates to
/// `Duration::MAX` (the caller compares it with its `max_wait`).
pub fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
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

    #[test]
    fn retry_after_of_any_size_parses_without_panic() {
        let now = at("2026-03-01T00:00:00Z");
        assert_eq!(parse_retry_after("1e20", now), Some(Duration::MAX));
        assert_eq!(parse_retry_after("1e400", now), None, "inf is no wait");
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(
            parse_retry_after("999999999", now),
            Some(Duration::from_secs(999_999_999))
        );
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).expect("a date");
        assert!(far > Duration::from_secs(7900 * 365 * 86_400), "{far:?}");
        // Past dates are no wait at all.
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // The extremes of the wait can be described and never overflow the calendar.
        assert_eq!(later(now, Duration::MAX), None);
        assert!(
            describe_wait(now, Duration::MAX, "Retry-After", Some("1e20"))
                .starts_with("more than 1000 years (Retry-After: 1e20)")
        );
    }

    #[test]
    fn waits_read_as_their_two_largest_units() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5 min");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 h");
        assert_eq!(human_duration(Duration::from_secs(3725)), "1 h 2 min");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(
            human_duration(Duration::from_secs(999_999_999)),
            "31 years 259 days"
        );
        assert_eq!(human_duration(Duration::MAX), "more than 1000 years");
    }

    #[test]
    fn a_bucket_drained_for_ages_never_panics() {
        let t0 = at("2026-03-01T00:00:00Z");
        let mut b = Bucket::new(
            &CategoryLimit {
                per_second: 0.001,
                per_day: None,
                burst: None,
            },
            t0,
        );
        b.drain_for(t0, Duration::MAX);
        assert_eq!(b.reserve(t0), Duration::MAX);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn bucket_paces_at_its_rate() {
        let t0 = at("2026-03-01T00:00:00Z");
        let mut b = Bucket::new(
            &CategoryLimit {
                per_second: 8.0,
                per_day: None,
                burst: None,
            },
            t0,
        );
        // The burst is one second's worth; then one slot every 1/8 s.
        for _ in 0..8 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        let w = b.reserve(t0);
        assert!((w.as_secs_f64() - 0.125).abs() < 1e-9, "{w:?}");
        b.drain_for(t0, Duration::from_secs(2));
        assert!(b.reserve(t0) >= Duration::from_secs(2));
    }

    #[test]
    fn a_set_burst_bounds_any_one_second_window() {
        let t0 = at("2026-03-01T00:00:00Z");
        let limit = CategoryLimit {
            per_second: 16.0,
            per_day: None,
            burst: Some(4.0),
        };
        let mut b = Bucket::new(&limit, t0);
        // Callers that always want more: each sends at its reserved instant.
        let mut sends = Vec::new();
        let mut now = t0;
        for _ in 0..200 {
            let wait = b.reserve(now);
            let at = now + chrono::Duration::from_std(wait).expect("wait");
            sends.push(at);
            // The next caller asks a moment later (callers queue, the clock moves on).
            now += chrono::Duration::milliseconds(3);
        }
        for (i, start) in sends.iter().enumerate() {
            let end = *start + chrono::Duration::seconds(1);
            let n = sends[i..].iter().take_while(|t| **t < end).count();
            assert!(n <= 20, "{n} sends in the second from {start}");
        }
        // A long idle spell refills only up to the burst.
        let later = now + chrono::Duration::seconds(60);
        let at_once = (0..10).take_while(|_| b.reserve(later).is_zero()).count();
        assert_eq!(at_once, 4);
    }

    #[tokio::test]
    async fn daily_cap_stops_the_category_without_sending() {
        let clock = crate::clock::ManualClock::auto(at("2026-03-01T10:00:00Z"));
        let http = HttpClient::new(clock.clone());
        http.set_rate_limits(
            Service::Zoom,
            RateLimits {
                max_concurrency: 2,
                ..Default::default()
            }
            .category("heavy", 10.0, Some(0)),
        );
        let req =
            Request::new(Service::Zoom, Method::GET, "http://127.0.0.1:9/x").category("heavy");
        match http.send(req).await {
            Err(HttpError::DailyLimit { category, until }) => {
                assert_eq!(category, "heavy");
                assert_eq!(until, "2026-03-02T00:00:00Z");
            }
            other => panic!("expected a daily limit, got {other:?}"),
        }
        assert_eq!(http.metrics().requests(Service::Zoom), 0);
    }

    #[test]
    fn daily_usage_counts_today_per_cap_and_starts_again_at_midnight() {
        let clock = crate::clock::ManualClock::auto(at("2026-03-01T10:00:00Z"));
        let http = HttpClient::new(clock.clone());
        let mut limits = RateLimits {
            max_concurrency: 2,
            ..Default::default()
        }
        .category("heavy", 10.0, Some(100))
        .category("resource_intensive", 10.0, Some(100))
        .category("light", 10.0, None)
        .category("medium", 10.0, Some(50));
        for c in ["heavy", "resource_intensive"] {
            limits.shared_daily.insert(c.into(), "heavy_ri".into());
        }
        http.set_rate_limits(Service::Zoom, limits);
        for c in ["heavy", "heavy", "resource_intensive", "light"] {
            http.admit(Service::Zoom, c).unwrap();
        }
        let used = http.daily_usage(Service::Zoom);
        let get = |n: &str| used.iter().find(|u| u.name == n).cloned();
        assert_eq!(used.len(), 2, "{used:?}");
        assert_eq!(
            get("heavy_ri"),
            Some(DailyUse {
                name: "heavy_ri".into(),
                used: 3,
                limit: 100
            })
        );
        assert_eq!(get("medium").map(|u| (u.used, u.limit)), Some((0, 50)));
        assert!(http.daily_usage(Service::Salesforce).is_empty());
        clock.advance(Duration::from_secs(15 * 3600));
        assert_eq!(
            http.daily_usage(Service::Zoom)
                .iter()
                .map(|u| u.used)
                .sum::<u64>(),
            0,
            "a new UTC day"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let http = HttpClient::new(crate::clock::system());
        let first = http.backoff(1);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        let late = http.backoff(20);
        assert!(late <= Duration::from_secs(60) && late >= Duration::from_secs(30));
    }
}
