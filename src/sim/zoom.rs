//! The Zoom simulator: an axum server on 127.0.0.1 that serves a [`World`] with Zoom's
//! shapes, paging, window limits, UUID double-encoding, OAuth and per-category rate limits,
//! on an injected clock, with deterministic fault switches.

use crate::clock::SharedClock;
use crate::connectors::zoom::ZoomPlan;
use crate::connectors::zoom::limits::published;
use crate::connectors::zoom::webhook::sign;
use crate::sim::world::{Attendee, Meeting, Participant, World};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Months, NaiveDate, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

mod peer;
mod subject;
pub(crate) mod write;

pub use write::{CreateFault, LimitForm};

/// Fault switches; all off by default. Probabilities are drawn from a RNG seeded by `seed`.
#[derive(Debug, Clone)]
pub struct Faults {
    pub seed: u64,
    /// Share of API requests answered 500/502/503.
    pub error_5xx: f64,
    /// Share of API requests whose connection drops mid-body.
    pub reset: f64,
    /// Share of API requests answered 200 with a truncated JSON body.
    pub malformed: f64,
    /// Share of API requests answered with a per-second 429 (a "storm").
    pub storm_429: f64,
    /// Added to every API request, on the simulator's clock.
    pub latency_ms: u64,
    /// Enforce the plan's per-second and daily limits.
    pub enforce_rate_limits: bool,
    /// Emit X-RateLimit-* headers.
    pub rate_limit_headers: bool,
    pub token_ttl_secs: i64,
    pub page_token_ttl_secs: i64,
    /// The authorize endpoint redirects back with `error=access_denied`.
    pub deny_authorization: bool,
    /// When not empty, the random HTTP faults above (5xx, reset, malformed, 429 storm) hit
    /// only these endpoints (patterns as logged, e.g. `GET /report/users/{userId}/meetings`).
    pub only_endpoints: Vec<String>,
    /// Scopes the app's tokens lack: endpoints needing one answer 400 code 4711.
    pub removed_scopes: Vec<String>,
    /// How long a rotated (spent) refresh token still works; 0 = strictly single use.
    pub refresh_grace_secs: i64,
    /// A meeting's AI summary is ready this long after its `created` time (404 3322 before).
    pub summary_delay_secs: i64,
    /// The webhook sender delivers every event twice, with the same `x-zm-request-id`.
    pub webhook_duplicate: bool,
    /// The webhook sender swaps each pair of consecutive events.
    pub webhook_reorder: bool,
    /// A delivery not answered within this long failed (Zoom: 3 s) and is retried.
    pub webhook_timeout_ms: u64,
}

impl Faults {
    fn scoped(&self, endpoint: &str) -> bool {
        self.only_endpoints.is_empty() || self.only_endpoints.iter().any(|e| e == endpoint)
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: 1,
            error_5xx: 0.0,
            reset: 0.0,
            malformed: 0.0,
            storm_429: 0.0,
            latency_ms: 0,
            enforce_rate_limits: true,
            rate_limit_headers: true,
            token_ttl_secs: 3600,
            page_token_ttl_secs: 900,
            deny_authorization: false,
            only_endpoints: Vec::new(),
            removed_scopes: Vec::new(),
            refresh_grace_secs: 0,
            summary_delay_secs: 0,
            webhook_duplicate: false,
            webhook_reorder: false,
            webhook_timeout_ms: 3000,
        }
    }
}

pub struct SimOptions {
    pub world: Arc<World>,
    pub clock: SharedClock,
    pub plan: ZoomPlan,
    pub faults: Faults,
}

pub const CLIENT_ID: &str = "sim-client-id";
pub const CLIENT_SECRET: &str = "sim-client-secret";
/// Authorization codes live five minutes, as Zoom's do.
const AUTH_CODE_TTL_SECS: i64 = 300;

/// One request the simulator served.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub at: DateTime<Utc>,
    pub method: String,
    /// Endpoint pattern, e.g. `GET /report/users/{userId}/meetings`.
    pub endpoint: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub status: u16,
    pub category: Option<String>,
    /// For a 429: the earliest instant the client may retry.
    pub retry_at: Option<DateTime<Utc>>,
}

/// Counters of what the simulator served.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub per_endpoint: BTreeMap<String, u64>,
    pub responses_429: u64,
    pub responses_5xx: u64,
    pub resets: u64,
    pub malformed: u64,
    pub tokens_issued: u64,
}

/// An authorization code: five minutes, single use, bound to its redirect URL.
struct AuthCode {
    redirect_uri: String,
    created: DateTime<Utc>,
    challenge: Option<String>,
}

struct PageCursor {
    signature: String,
    offset: usize,
    created: DateTime<Utc>,
}

struct SimState {
    world: Arc<World>,
    /// The world's meetings by UUID and by numeric id (a recurring id has several), so a
    /// detail request does not scan every meeting.
    meetings_by_uuid: HashMap<String, usize>,
    meetings_by_id: HashMap<u64, Vec<usize>>,
    clock: SharedClock,
    plan: ZoomPlan,
    inner: Mutex<Mutable>,
}

struct Mutable {
    faults: Faults,
    rng: StdRng,
    access_tokens: BTreeMap<String, DateTime<Utc>>,
    /// Refresh token → when it was spent (None: live).
    refresh_tokens: BTreeMap<String, Option<DateTime<Utc>>>,
    /// Page tokens still to be refused as expired, whatever their age.
    expire_page_tokens: u32,
    /// Meetings deleted after they were listed: detail endpoints answer 3001.
    deleted_meetings: std::collections::BTreeSet<String>,
    auth_codes: BTreeMap<String, AuthCode>,
    page_tokens: BTreeMap<String, PageCursor>,
    /// (category, epoch second) → count.
    second_counts: BTreeMap<(String, i64), u64>,
    /// (daily key, day) → count.
    day_counts: BTreeMap<(String, NaiveDate), u64>,
    log: Vec<LoggedRequest>,
    stats: SimStats,
    counter: u64,
    /// What the write endpoints have taken.
    writes: write::Writes,
    /// Meetings created through the API that have since taken place (ended instances).
    ended_written: Vec<Meeting>,
}

/// A running simulator; dropping it stops the server.
pub struct ZoomSimHandle {
    pub base_url: String,
    pub token_url: String,
    /// The authorization-code flow's authorize endpoint (redirects back with a code).
    pub authorize_url: String,
    pub account_id: String,
    pub client_id: String,
    pub client_secret: String,
    state: Arc<SimState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ZoomSimHandle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub struct ZoomSim;

impl ZoomSim {
    pub async fn start(opts: SimOptions) -> std::io::Result<ZoomSimHandle> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut meetings_by_uuid = HashMap::new();
        let mut meetings_by_id: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, m) in opts.world.meetings.iter().enumerate() {
            meetings_by_uuid.entry(m.uuid.clone()).or_insert(i);
            meetings_by_id.entry(m.id).or_default().push(i);
        }
        let state = Arc::new(SimState {
            world: opts.world.clone(),
            meetings_by_uuid,
            meetings_by_id,
            clock: opts.clock,
            plan: opts.plan,
            inner: Mutex::new(Mutable {
                rng: StdRng::seed_from_u64(opts.faults.seed),
                faults: opts.faults,
                access_tokens: BTreeMap::new(),
                refresh_tokens: BTreeMap::new(),
                auth_codes: BTreeMap::new(),
                expire_page_tokens: 0,
                deleted_meetings: Default::default(),
                page_tokens: BTreeMap::new(),
                second_counts: BTreeMap::new(),
                day_counts: BTreeMap::new(),
                log: Vec::new(),
                stats: SimStats::default(),
                counter: 0,
                writes: write::Writes::default(),
                ended_written: Vec::new(),
            }),
        });
        let s2 = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s2.clone();
                async move { s.handle(method, uri, headers, body).await }
            },
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ZoomSimHandle {
            base_url: format!("http://{addr}/v2"),
            token_url: format!("http://{addr}/oauth/token"),
            authorize_url: format!("http://{addr}/oauth/authorize"),
            account_id: opts.world.account_id.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            state,
            server,
        })
    }
}

impl ZoomSimHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.state.lock()
    }
    pub fn set_faults(&self, faults: Faults) {
        let mut m = self.lock();
        m.rng = StdRng::seed_from_u64(faults.seed);
        m.faults = faults;
    }
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }
    /// Expires every access token now (the next API call answers 401 code 124).
    pub fn expire_tokens(&self) {
        let now = self.state.clock.now();
        for v in self.lock().access_tokens.values_mut() {
            *v = now;
        }
    }
    /// Issues a refresh token as an authorization-code exchange would.
    pub fn issue_refresh_token(&self) -> String {
        let mut m = self.lock();
        let t = random_token(&mut m.rng, "rt");
        m.refresh_tokens.insert(t.clone(), None);
        t
    }
    /// The next `n` page tokens presented are refused as expired (a restarted listing).
    pub fn expire_next_page_tokens(&self, n: u32) {
        self.lock().expire_page_tokens = n;
    }
    /// Deletes a meeting instance after it was listed: reports still show it, but its
    /// detail, participants, recordings and summary answer 404 code 3001.
    pub fn delete_meeting(&self, uuid: &str) {
        self.lock().deleted_meetings.insert(uuid.to_string());
    }
    /// How a host's meeting create or update over the daily limit is answered.
    pub fn set_limit_form(&self, form: LimitForm) {
        self.lock().writes.limit_form = form;
    }
    /// The next creates (one per fault, in order) are done and then answered badly.
    pub fn fault_next_creates(&self, faults: &[CreateFault]) {
        self.lock()
            .writes
            .create_faults
            .extend(faults.iter().copied());
    }
    /// Creates Zoom performed through the write endpoints, whatever it answered.
    pub fn creates(&self) -> u64 {
        self.lock().writes.creates
    }
    /// Meetings and webinars created through the API and not deleted, as Zoom holds
    /// them: (id, host email, body as last written).
    pub fn written_meetings(&self) -> Vec<(u64, String, serde_json::Map<String, Value>)> {
        let m = self.lock();
        m.writes
            .objects
            .values()
            .filter(|o| !o.deleted)
            .map(|o| {
                (
                    o.id,
                    self.state.world.users[o.host].email.clone(),
                    o.body.clone(),
                )
            })
            .collect()
    }
    /// Registrants added through the API to a meeting or webinar: (registrant id, email,
    /// status).
    pub fn written_registrants(&self, id: u64) -> Vec<(String, String, String)> {
        let m = self.lock();
        m.writes
            .registrants
            .get(&id)
            .map(|rs| {
                rs.iter()
                    .map(|r| (r.id.clone(), r.email.clone(), r.status.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Marks a written meeting ended (or in progress): a delete is refused with 3007 (3002).
    pub fn set_meeting_phase(&self, id: u64, ended: bool, in_progress: bool) {
        if let Some(o) = self.lock().writes.objects.get_mut(&id) {
            o.ended = ended;
            o.in_progress = in_progress;
        }
    }
    /// A meeting created through the API takes place: it is held at its scheduled start
    /// for its duration, by its host and the given external people (indices into the
    /// world's people), and then is among the host's past meetings (reports, past meeting
    /// detail and participants) once the clock passes its end, as Zoom shows a meeting
    /// that has ended. It can no longer be updated or deleted (codes 3000, 3007). Returns
    /// the ended instance's UUID; None for an unknown, deleted or already ended meeting, or
    /// one without a valid start time.
    pub fn end_written_meeting(&self, id: u64, people: &[usize]) -> Option<String> {
        let mut m = self.lock();
        let o = m.writes.objects.get(&id)?;
        if o.deleted || o.ended || o.webinar {
            return None;
        }
        let start = o
            .body
            .get("start_time")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())?
            .with_timezone(&Utc);
        let minutes = o
            .body
            .get("duration")
            .and_then(Value::as_i64)
            .unwrap_or(60)
            .clamp(1, 24 * 60);
        let end = start + chrono::Duration::minutes(minutes);
        let topic = o
            .body
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or("Zoom Meeting")
            .to_string();
        let (host, uuid) = (o.host, o.uuid.clone());
        let w = &self.state.world;
        let h = &w.users[host];
        let mut participants = vec![Participant {
            attendee: Attendee::Internal(host),
            id: h.id.clone(),
            user_id: "16778240".into(),
            participant_uuid: format!("{uuid}-host"),
            name: h.display_name(),
            email: h.email.clone(),
            join_time: start,
            leave_time: end,
            registrant_id: String::new(),
        }];
        for (n, &i) in people.iter().enumerate() {
            let Some(p) = w.people.get(i) else { continue };
            participants.push(Participant {
                attendee: Attendee::External(i),
                id: String::new(),
                user_id: (16_778_241 + n).to_string(),
                participant_uuid: format!("{uuid}-{n}"),
                name: p.name(),
                email: p.email.clone(),
                join_time: start,
                leave_time: end,
                registrant_id: String::new(),
            });
        }
        if let Some(o) = m.writes.objects.get_mut(&id) {
            o.ended = true;
        }
        m.ended_written.push(Meeting {
            uuid: uuid.clone(),
            id,
            host,
            topic,
            meeting_type: 2,
            start,
            end,
            timezone: "UTC".into(),
            participants,
            recording: None,
            summary: None,
        });
        Some(uuid)
    }
    /// Switches registration off for a world webinar.
    pub fn disable_registration(&self, webinar_id: u64) {
        self.lock().writes.registration_off.insert(webinar_id);
    }
    pub fn world(&self) -> &Arc<World> {
        &self.state.world
    }
    /// Sends a signed webhook the way Zoom does (compact JSON, signature over the exact bytes).
    /// One attempt, no retries; [`ZoomSimHandle::deliver_webhooks`] behaves like Zoom's sender.
    pub async fn send_webhook(
        &self,
        url: &str,
        secret: &str,
        event: &Value,
    ) -> Result<u16, String> {
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let request_id = {
            let mut m = self.lock();
            random_token(&mut m.rng, "req")
        };
        self.post_webhook(url, secret, &body, &request_id).await
    }

    async fn post_webhook(
        &self,
        url: &str,
        secret: &str,
        body: &[u8],
        request_id: &str,
    ) -> Result<u16, String> {
        let ts = self.state.clock.now().timestamp();
        let timeout = std::time::Duration::from_millis(self.lock().faults.webhook_timeout_ms);
        let resp = reqwest::Client::new()
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", "Zoom Marketplace/1.0a")
            .header("x-zm-request-timestamp", ts.to_string())
            .header("x-zm-signature", sign(secret, ts, body))
            .header("x-zm-request-id", request_id)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.to_string()
                }
            })?;
        Ok(resp.status().as_u16())
    }

    /// Delivers events as Zoom's sender does: each signed at its send time; a failure
    /// (HTTP ≥ 500, a timeout after `webhook_timeout_ms`, a refused connection) is retried
    /// 5, 20 and 60 minutes later on the simulator's clock, and then dropped; any other
    /// answer (2xx, 3xx, 4xx) ends the delivery. The `webhook_duplicate` switch delivers
    /// each event twice under one request id; `webhook_reorder` swaps consecutive events.
    /// Events go one after another (a retry holds back the events behind it).
    pub async fn deliver_webhooks(
        &self,
        url: &str,
        secret: &str,
        events: &[Value],
    ) -> Vec<DeliveryAttempt> {
        let faults = self.faults();
        let mut order: Vec<&Value> = events.iter().collect();
        if faults.webhook_reorder {
            for pair in order.chunks_mut(2) {
                pair.reverse();
            }
        }
        let mut log = Vec::new();
        for event in order {
            let name = event["event"].as_str().unwrap_or("").to_string();
            let Ok(body) = serde_json::to_vec(event) else {
                continue;
            };
            let request_id = {
                let mut m = self.lock();
                random_token(&mut m.rng, "req")
            };
            let copies = if faults.webhook_duplicate { 2 } else { 1 };
            for _ in 0..copies {
                for (attempt, delay_min) in [0u64, 5, 20, 60].into_iter().enumerate() {
                    if delay_min > 0 {
                        self.state
                            .clock
                            .sleep(std::time::Duration::from_secs(delay_min * 60))
                            .await;
                    }
                    let at = self.state.clock.now();
                    let outcome = self.post_webhook(url, secret, &body, &request_id).await;
                    let retry = match &outcome {
                        Ok(status) => *status >= 500,
                        Err(_) => true,
                    };
                    log.push(DeliveryAttempt {
                        at,
                        event: name.clone(),
                        request_id: request_id.clone(),
                        attempt: attempt as u32 + 1,
                        outcome,
                    });
                    if !retry {
                        break;
                    }
                }
            }
        }
        log
    }
}

/// One webhook delivery attempt of [`ZoomSimHandle::deliver_webhooks`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// Simulator time of the attempt.
    pub at: DateTime<Utc>,
    pub event: String,
    pub request_id: String,
    /// 1 for the first try, up to 4.
    pub attempt: u32,
    /// The receiver's status, or why there was none (timeout, refused connection).
    pub outcome: Result<u16, String>,
}

fn random_token(rng: &mut StdRng, prefix: &str) -> String {
    let bytes: [u8; 18] = rng.random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Zoom's answer to a query parameter that fails validation: 400, code 300, with the
/// field named in `errors` (the shape Zoom's validation errors take).
fn validation_failed(field: &str, why: &str) -> (u16, Value) {
    (
        400,
        json!({"code": 300, "message": "Validation Failed.",
               "errors": [{"field": field, "message": why}]}),
    )
}

fn error(status: u16, code: i64, message: &str) -> (u16, Value) {
    (status, json!({"code": code, "message": message}))
}

/// What a route resolved to.
struct Route {
    endpoint: &'static str,
    category: &'static str,
    /// Daily cap key, when Heavy and Resource-intensive share one.
    phone: bool,
}

fn basic_ok(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|b| b == format!("{CLIENT_ID}:{CLIENT_SECRET}"))
}

/// The scope an endpoint needs (granular scopes are not modelled).
fn scope_for(endpoint: &str) -> &'static str {
    let path = endpoint.split(' ').nth(1).unwrap_or("");
    if path.starts_with("/report/") {
        "report:read:admin"
    } else if path.starts_with("/phone/") {
        "phone:read:admin"
    } else if path.contains("recordings") {
        "cloud_recording:read:admin"
    } else if path.contains("meeting_summary") {
        "meeting_summary:read:admin"
    } else if path.contains("webinar") {
        "webinar:read:admin"
    } else if path.starts_with("/users/") && path.ends_with("/meetings") {
        "meeting:read:admin"
    } else if path.starts_with("/users") {
        "user:read:admin"
    } else {
        "meeting:read:admin"
    }
}

fn decode_segment(raw: &str) -> Option<String> {
    let once = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?
        .into_owned();
    let has_escape = once
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    if has_escape {
        return Some(
            percent_encoding::percent_decode_str(&once)
                .decode_utf8()
                .ok()?
                .into_owned(),
        );
    }
    // Zoom's router sees a single-encoded "/" as a path separator: such UUIDs are not found.
    if once.starts_with('/') || once.contains("//") {
        return None;
    }
    Some(once)
}

impl SimState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path().to_string();
        let mut query: BTreeMap<String, String> = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        if path == "/oauth/authorize" && method == Method::GET {
            return self.authorize(&query);
        }
        let oauth = match path.as_str() {
            "/oauth/token" => Some("POST /oauth/token"),
            "/oauth/revoke" => Some("POST /oauth/revoke"),
            _ => None,
        };
        if let (Some(route), true) = (oauth, method == Method::POST) {
            // The token endpoint answers no faster than the API (two clients refreshing at
            // once overlap, as they do against Zoom).
            let latency = self.lock().faults.latency_ms;
            if latency > 0 {
                self.clock
                    .sleep(std::time::Duration::from_millis(latency))
                    .await;
            }
            // Peers send the grant in the query string, ferry in a form body: both count.
            for (k, v) in url::form_urlencoded::parse(&body).into_owned() {
                query.insert(k, v);
            }
            let (status, v) = if path == "/oauth/token" {
                self.token(&headers, &query)
            } else {
                self.revoke(&headers, &query)
            };
            return self.finish(route, &path, query, status, None, None, v, BTreeMap::new());
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return self.finish(
                "unknown",
                &path,
                query,
                404,
                None,
                None,
                json!({"code":404,"message":"Not found"}),
                BTreeMap::new(),
            );
        };
        let raw: Vec<&str> = rest.split('/').collect();
        let Some((route, ids)) = write::route(method.as_str(), &raw).or_else(|| route(&raw)) else {
            let (s, v) = error(404, 404, "Not found");
            return self.finish("unknown", &path, query, s, None, None, v, BTreeMap::new());
        };
        let endpoint = route.endpoint;
        let category = route.category;
        // Auth.
        if query.contains_key("access_token") {
            let (s, v) = error(
                401,
                124,
                "Invalid access token, this access token is not supported as query parameter string.",
            );
            return self.finish(
                endpoint,
                &path,
                query,
                s,
                Some(category),
                None,
                v,
                BTreeMap::new(),
            );
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let now = self.clock.now();
        let auth = {
            let m = self.lock();
            match bearer.as_ref().and_then(|b| m.access_tokens.get(b)) {
                None => Err("Invalid access token."),
                Some(exp) if *exp <= now => Err("Access token is expired."),
                Some(_) => Ok(()),
            }
        };
        if let Err(msg) = auth {
            let (s, v) = error(401, 124, msg);
            return self.finish(
                endpoint,
                &path,
                query,
                s,
                Some(category),
                None,
                v,
                BTreeMap::new(),
            );
        }
        let scope = scope_for(endpoint);
        if self.lock().faults.removed_scopes.iter().any(|s| s == scope) {
            let (s, v) = error(
                400,
                4711,
                &format!("Invalid access token, does not contain scopes:[{scope}]."),
            );
            return self.finish(
                endpoint,
                &path,
                query,
                s,
                Some(category),
                None,
                v,
                BTreeMap::new(),
            );
        }
        // Rate limits and faults.
        let latency = self.lock().faults.latency_ms;
        if latency > 0 {
            self.clock
                .sleep(std::time::Duration::from_millis(latency))
                .await;
        }
        let now = self.clock.now();
        let mut rl_headers = BTreeMap::new();
        if let Some(resp) = self.rate_limit(&route, now, &path, &query, &mut rl_headers) {
            return resp;
        }
        enum Fault {
            None,
            Error,
            Reset,
            Malformed,
        }
        let fault = {
            let mut m = self.lock();
            let f = m.faults.clone();
            let roll: f64 = m.rng.random();
            if !f.scoped(endpoint) {
                Fault::None
            } else if roll < f.error_5xx {
                Fault::Error
            } else if roll < f.error_5xx + f.reset {
                Fault::Reset
            } else if roll < f.error_5xx + f.reset + f.malformed {
                Fault::Malformed
            } else {
                Fault::None
            }
        };
        match fault {
            Fault::Error => {
                self.lock().stats.responses_5xx += 1;
                return self.finish(
                    endpoint,
                    &path,
                    query,
                    503,
                    Some(category),
                    None,
                    json!({"code":503,"message":"Service Unavailable"}),
                    rl_headers,
                );
            }
            Fault::Reset => {
                self.lock().stats.resets += 1;
                self.log(endpoint, &path, query, 200, Some(category), None);
                let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(Bytes::from_static(b"{\"partial\":")),
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "reset",
                    )),
                ];
                return Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            Fault::Malformed => {
                self.lock().stats.malformed += 1;
                self.log(endpoint, &path, query, 200, Some(category), None);
                return (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    "{\"page_size\":30,\"meetings\":[{\"uuid\":",
                )
                    .into_response();
            }
            Fault::None => {}
        }
        let mut decoded = Vec::new();
        for raw_id in &ids {
            match decode_segment(raw_id) {
                Some(d) => decoded.push(d),
                None => {
                    let (s, v) = error(404, 3001, "Meeting does not exist.");
                    return self.finish(
                        endpoint,
                        &path,
                        query,
                        s,
                        Some(category),
                        None,
                        v,
                        rl_headers,
                    );
                }
            }
        }
        if write::is_write_endpoint(endpoint) {
            let a = self.serve_write(endpoint, &decoded, &query, &body, now);
            if a.reset {
                // The work is done; the answer never arrives.
                self.log(endpoint, &path, query, a.status, Some(category), None);
                let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset",
                ))];
                return Response::builder()
                    .status(a.status)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            let mut headers = rl_headers;
            headers.extend(a.headers);
            if a.status == 204 {
                self.log(endpoint, &path, query, 204, Some(category), None);
                let mut resp = StatusCode::NO_CONTENT.into_response();
                for (k, v) in headers {
                    if let (Ok(name), Ok(val)) = (
                        axum::http::HeaderName::from_bytes(k.as_bytes()),
                        HeaderValue::from_str(&v),
                    ) {
                        resp.headers_mut().insert(name, val);
                    }
                }
                return resp;
            }
            return self.finish(
                endpoint,
                &path,
                query,
                a.status,
                Some(category),
                None,
                a.body,
                headers,
            );
        }
        let (status, v) = self.serve(endpoint, &decoded, &query, now);
        self.finish(
            endpoint,
            &path,
            query,
            status,
            Some(category),
            None,
            v,
            rl_headers,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        endpoint: &str,
        path: &str,
        query: BTreeMap<String, String>,
        status: u16,
        category: Option<&str>,
        retry_at: Option<DateTime<Utc>>,
        body: Value,
        headers: BTreeMap<String, String>,
    ) -> Response {
        self.log(endpoint, path, query, status, category, retry_at);
        let tracking = {
            let mut m = self.lock();
            m.counter += 1;
            format!("sim-{}", m.counter)
        };
        let mut resp = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
            .into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&tracking) {
            h.insert("x-zm-trackingid", v);
        }
        for (k, v) in headers {
            if let (Ok(name), Ok(val)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                h.insert(name, val);
            }
        }
        resp
    }

    fn log(
        &self,
        endpoint: &str,
        path: &str,
        query: BTreeMap<String, String>,
        status: u16,
        category: Option<&str>,
        retry_at: Option<DateTime<Utc>>,
    ) {
        let at = self.clock.now();
        let mut m = self.lock();
        *m.stats
            .per_endpoint
            .entry(endpoint.to_string())
            .or_default() += 1;
        if status == 429 {
            m.stats.responses_429 += 1;
        }
        m.log.push(LoggedRequest {
            at,
            method: endpoint.split(' ').next().unwrap_or("GET").to_string(),
            endpoint: endpoint.to_string(),
            path: path.to_string(),
            query,
            status,
            category: category.map(str::to_string),
            retry_at,
        });
    }

    fn rate_limit(
        &self,
        route: &Route,
        now: DateTime<Utc>,
        path: &str,
        query: &BTreeMap<String, String>,
        headers: &mut BTreeMap<String, String>,
    ) -> Option<Response> {
        let bucket = if route.phone {
            format!("phone_{}", route.category)
        } else {
            route.category.to_string()
        };
        let (qps, daily) = published(self.plan, &bucket);
        let label = match route.category {
            "light" => "Light",
            "medium" => "Medium",
            "heavy" => "Heavy",
            _ => "Resource-intensive",
        };
        let (enforce, emit, storm, roll) = {
            let mut m = self.lock();
            let roll: f64 = m.rng.random();
            let storm = if m.faults.scoped(route.endpoint) {
                m.faults.storm_429
            } else {
                0.0
            };
            (
                m.faults.enforce_rate_limits,
                m.faults.rate_limit_headers,
                storm,
                roll,
            )
        };
        if emit {
            headers.insert("X-RateLimit-Category".into(), label.into());
            headers.insert("X-RateLimit-Type".into(), "QPS".into());
        }
        let day_key = if matches!(route.category, "heavy" | "resource_intensive")
            && self.plan != ZoomPlan::Free
        {
            format!("{}heavy_ri", if route.phone { "phone_" } else { "" })
        } else {
            bucket.clone()
        };
        let (sec_count, day_count) = {
            let mut m = self.lock();
            // Resource-intensive limits are per minute; others per second.
            let (window, limit_per_window) = if route.category == "resource_intensive" {
                (now.timestamp() / 60, (qps * 60.0).round() as u64)
            } else {
                (now.timestamp(), qps.round().max(1.0) as u64)
            };
            let sc = m.second_counts.entry((bucket.clone(), window)).or_default();
            *sc += 1;
            let sec = (*sc, limit_per_window);
            let dc = m.day_counts.entry((day_key, now.date_naive())).or_default();
            *dc += 1;
            let day = *dc;
            // Forget old windows (seconds, or minutes for resource-intensive) so runs stay small.
            let ts = now.timestamp();
            m.second_counts
                .retain(|(_, w), _| *w >= ts - 120 || (*w < ts / 30 && *w >= ts / 60 - 2));
            (sec, day)
        };
        if let Some(cap) = daily.filter(|_| enforce) {
            if emit {
                headers.insert("X-RateLimit-Limit".into(), cap.to_string());
                headers.insert(
                    "X-RateLimit-Remaining".into(),
                    cap.saturating_sub(day_count).to_string(),
                );
            }
            if day_count > cap {
                let until = now
                    .date_naive()
                    .succ_opt()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc())
                    .unwrap_or(now);
                let mut h = BTreeMap::new();
                h.insert("X-RateLimit-Category".to_string(), label.to_string());
                h.insert("X-RateLimit-Type".to_string(), "Daily-limit".to_string());
                h.insert("X-RateLimit-Limit".to_string(), cap.to_string());
                h.insert("X-RateLimit-Remaining".to_string(), "0".to_string());
                h.insert("Retry-After".to_string(), iso(until));
                return Some(self.finish(
                    "rate limited", path, query.clone(), 429, Some(route.category), Some(until),
                    json!({"code":429,"message":"You have reached the maximum daily rate limit for this API. Refer to the response header for details on when you can make another request."}),
                    h,
                ));
            }
        }
        let over = enforce && sec_count.0 > sec_count.1;
        if over || roll < storm {
            let reset = if route.category == "resource_intensive" {
                DateTime::from_timestamp((now.timestamp() / 60 + 1) * 60, 0).unwrap_or(now)
            } else {
                DateTime::from_timestamp(now.timestamp() + 1, 0).unwrap_or(now)
            };
            let mut h = BTreeMap::new();
            h.insert("X-RateLimit-Category".to_string(), label.to_string());
            h.insert("X-RateLimit-Type".to_string(), "QPS".to_string());
            h.insert(
                "X-RateLimit-Reset".to_string(),
                reset.timestamp().to_string(),
            );
            return Some(self.finish(
                route.endpoint, path, query.clone(), 429, Some(route.category), Some(reset),
                json!({"code":429,"message":"You have reached the maximum per-second rate limit for this API. Try again later."}),
                h,
            ));
        }
        None
    }

    /// The user approved at once: redirect back with a code (or `access_denied` when the
    /// switch says so). A bad client or redirect is shown to the user, not redirected.
    fn authorize(&self, q: &BTreeMap<String, String>) -> Response {
        let now = self.clock.now();
        let query = q.clone();
        let bad = |msg: &str| {
            self.log(
                "GET /oauth/authorize",
                "/oauth/authorize",
                query.clone(),
                400,
                None,
                None,
            );
            (StatusCode::BAD_REQUEST, msg.to_string()).into_response()
        };
        if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
            return bad("Invalid client_id");
        }
        if q.get("response_type").map(String::as_str) != Some("code") {
            return bad("Invalid response_type");
        }
        let Some(redirect) = q.get("redirect_uri").and_then(|r| url::Url::parse(r).ok()) else {
            return bad("Invalid redirect_uri");
        };
        let mut m = self.lock();
        let mut target = redirect.clone();
        if m.faults.deny_authorization {
            target
                .query_pairs_mut()
                .append_pair("error", "access_denied");
        } else {
            let code = random_token(&mut m.rng, "code");
            let challenge = match q.get("code_challenge_method").map(String::as_str) {
                None | Some("S256") => q.get("code_challenge").cloned(),
                Some(_) => {
                    drop(m);
                    return bad("Invalid code_challenge_method");
                }
            };
            m.auth_codes.insert(
                code.clone(),
                AuthCode {
                    redirect_uri: redirect.to_string(),
                    created: now,
                    challenge,
                },
            );
            target.query_pairs_mut().append_pair("code", &code);
        }
        if let Some(state) = q.get("state") {
            target.query_pairs_mut().append_pair("state", state);
        }
        drop(m);
        self.log(
            "GET /oauth/authorize",
            "/oauth/authorize",
            query,
            302,
            None,
            None,
        );
        Response::builder()
            .status(StatusCode::FOUND)
            .header("location", target.to_string())
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }

    /// `POST /oauth/revoke` with `token=`: a refresh or access token stops working.
    fn revoke(&self, headers: &HeaderMap, q: &BTreeMap<String, String>) -> (u16, Value) {
        if !basic_ok(headers) {
            return (
                400,
                json!({"reason":"Invalid client_id or client_secret","error":"invalid_client"}),
            );
        }
        let Some(token) = q.get("token").filter(|t| !t.is_empty()) else {
            return (
                400,
                json!({"reason":"Invalid Token!","error":"invalid_request"}),
            );
        };
        let mut m = self.lock();
        let known =
            m.refresh_tokens.remove(token).is_some() | m.access_tokens.remove(token).is_some();
        if !known {
            return (
                400,
                json!({"reason":"Invalid Token!","error":"invalid_grant"}),
            );
        }
        (200, json!({"status":"success"}))
    }

    fn token(&self, headers: &HeaderMap, q: &BTreeMap<String, String>) -> (u16, Value) {
        let basic = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        if basic.as_deref() != Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}")) {
            return (
                400,
                json!({"reason":"Invalid client_id or client_secret","error":"invalid_client"}),
            );
        }
        let now = self.clock.now();
        let mut m = self.lock();
        let ttl = m.faults.token_ttl_secs;
        let mut body = match q.get("grant_type").map(String::as_str) {
            Some("account_credentials") => {
                if q.get("account_id") != Some(&self.world.account_id) {
                    return (
                        400,
                        json!({"reason":"Invalid account_id","error":"invalid_request"}),
                    );
                }
                json!({"token_type":"bearer","expires_in":ttl,"scope":"meeting:read:admin report:read:admin user:read:admin cloud_recording:read:admin webinar:read:admin phone:read:admin"})
            }
            Some("authorization_code") => {
                let given = q.get("code").cloned().unwrap_or_default();
                let invalid = (
                    400,
                    json!({"reason":"Invalid authorization code","error":"invalid_grant"}),
                );
                // Single use: the code is gone whatever the outcome.
                let Some(code) = m.auth_codes.remove(&given) else {
                    return invalid;
                };
                let fresh = (now - code.created).num_seconds() <= AUTH_CODE_TTL_SECS;
                let same_redirect = q
                    .get("redirect_uri")
                    .and_then(|r| url::Url::parse(r).ok())
                    .is_some_and(|r| r.to_string() == code.redirect_uri);
                let verified = match &code.challenge {
                    None => true,
                    Some(c) => q.get("code_verifier").is_some_and(|v| {
                        &crate::connectors::zoom::authorize::pkce_challenge(v) == c
                    }),
                };
                if !fresh || !same_redirect || !verified {
                    return invalid;
                }
                let refresh = random_token(&mut m.rng, "rt");
                m.refresh_tokens.insert(refresh.clone(), None);
                json!({"token_type":"bearer","expires_in":ttl,"scope":"meeting:read report:read:admin","refresh_token":refresh})
            }
            Some("refresh_token") => {
                let given = q.get("refresh_token").cloned().unwrap_or_default();
                let grace = m.faults.refresh_grace_secs;
                let usable = match m.refresh_tokens.get(&given) {
                    Some(None) => true,
                    // A rotated token may still work for a grace period.
                    Some(Some(spent)) => (now - *spent).num_seconds() < grace,
                    None => false,
                };
                if !usable {
                    return (
                        400,
                        json!({"reason":"Invalid Token!","error":"invalid_grant"}),
                    );
                }
                if m.refresh_tokens.get(&given) == Some(&None) {
                    m.refresh_tokens.insert(given, Some(now));
                }
                let rotated = random_token(&mut m.rng, "rt");
                m.refresh_tokens.insert(rotated.clone(), None);
                json!({"token_type":"bearer","expires_in":ttl,"scope":"meeting:read report:read:admin","refresh_token":rotated})
            }
            _ => {
                return (
                    400,
                    json!({"reason":"unsupported grant type","error":"unsupported_grant_type"}),
                );
            }
        };
        let access = random_token(&mut m.rng, "at");
        m.access_tokens
            .insert(access.clone(), now + chrono::Duration::seconds(ttl));
        m.stats.tokens_issued += 1;
        body["access_token"] = json!(access);
        body["api_url"] = json!("https://api.zoom.us");
        (200, body)
    }

    /// Pages `items` with an opaque token bound to the query; `extra` is merged into the body.
    fn page(
        &self,
        key: &str,
        items: Vec<Value>,
        q: &BTreeMap<String, String>,
        max: usize,
        mut extra: Value,
        now: DateTime<Utc>,
    ) -> (u16, Value) {
        // Zoom caps a page_size over the endpoint's maximum (the answer's `page_size` says
        // what was used, and clients must follow it), but a page_size that is not a positive
        // integer fails validation. Whether Zoom refuses 0 rather than using its default is
        // not documented; the sim takes the stricter reading and refuses it.
        let size = match q.get("page_size") {
            None => 30.min(max),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(max),
                _ => return validation_failed("page_size", "must be an integer of at least 1"),
            },
        };
        let mut sig_q = q.clone();
        sig_q.remove("next_page_token");
        let signature = format!("{key}:{sig_q:?}");
        let mut m = self.lock();
        let ttl = m.faults.page_token_ttl_secs;
        // The deprecated `page_number` (Singer's tap-zoom pages with it) still works.
        let page_number = q
            .get("page_number")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1);
        if let (Some(n), Some(o)) = (page_number, extra.as_object_mut()) {
            if o.contains_key("page_number") {
                o.insert("page_number".into(), json!(n));
            }
        }
        let offset = match q.get("next_page_token").filter(|t| !t.is_empty()) {
            None => page_number.map_or(0, |n| (n - 1).saturating_mul(size)),
            Some(_) if m.expire_page_tokens > 0 => {
                m.expire_page_tokens -= 1;
                return error(400, 300, "The next page token is invalid or expired.");
            }
            Some(t) => match m.page_tokens.get(t) {
                Some(c) if c.signature == signature && (now - c.created).num_seconds() <= ttl => {
                    c.offset
                }
                _ => return error(400, 300, "The next page token is invalid or expired."),
            },
        };
        let total = items.len();
        let end = offset.saturating_add(size).min(total);
        let next = if end < total {
            let t = random_token(&mut m.rng, "");
            m.page_tokens.insert(
                t.clone(),
                PageCursor {
                    signature,
                    offset: end,
                    created: now,
                },
            );
            t
        } else {
            String::new()
        };
        let slice: Vec<Value> = items.into_iter().skip(offset).take(size).collect();
        let obj = extra.as_object_mut();
        if let Some(o) = obj {
            o.insert("page_size".into(), json!(size));
            o.insert("page_count".into(), json!(total.div_ceil(size)));
            o.insert("total_records".into(), json!(total));
            o.insert("next_page_token".into(), json!(next));
            o.insert(key.into(), Value::Array(slice));
        }
        (200, extra)
    }

    /// The `from`/`to` window of a date-windowed list. Zoom's specs give the formats:
    /// `yyyy-mm-dd` everywhere, and on `/phone/call_history` also `yyyy-MM-dd'T'HH:mm:ss'Z'`
    /// ("the same format as the `from` parameter"); anything else fails validation (the
    /// sim no longer reads the first ten characters of whatever it is sent). `to` is
    /// required once `from` is given (documented for Phone call history; for the other
    /// lists Zoom does not say, and the sim takes the stricter reading), and a `to` without
    /// a `from` is refused likewise.
    fn window(
        &self,
        q: &BTreeMap<String, String>,
        now: DateTime<Utc>,
        required: bool,
        datetimes: bool,
    ) -> Result<(NaiveDate, NaiveDate), (u16, Value)> {
        // (date, whether it was given as a datetime)
        let parse = |k: &str| -> Result<Option<(NaiveDate, bool)>, (u16, Value)> {
            let Some(s) = q.get(k) else { return Ok(None) };
            if s.len() == 10
                && let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
            {
                return Ok(Some((d, false)));
            }
            if datetimes
                && s.len() == 20
                && let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
            {
                return Ok(Some((t.date(), true)));
            }
            let formats = if datetimes {
                "yyyy-mm-dd or yyyy-MM-dd'T'HH:mm:ss'Z'"
            } else {
                "yyyy-mm-dd"
            };
            Err(validation_failed(
                k,
                &format!("must be a date in {formats} format"),
            ))
        };
        let today = now.date_naive();
        let (from, to) = match (parse("from")?, parse("to")?) {
            (Some((f, fdt)), Some((t, tdt))) => {
                if fdt != tdt {
                    return Err(validation_failed(
                        "to",
                        "must have the same format as the from parameter",
                    ));
                }
                (f, t)
            }
            (None, None) if !required => (today - chrono::Duration::days(1), today),
            (Some(_), None) => {
                return Err(validation_failed("to", "is required when from is given"));
            }
            (None, Some(_)) => {
                return Err(validation_failed("from", "is required when to is given"));
            }
            (None, None) => return Err(validation_failed("from", "is required")),
        };
        if from > to
            || from
                .checked_add_months(Months::new(1))
                .is_none_or(|limit| to > limit)
        {
            return Err(error(
                400,
                300,
                "The date range can only be within one month.",
            ));
        }
        if today
            .checked_sub_months(Months::new(6))
            .is_some_and(|oldest| from < oldest)
        {
            return Err(error(
                400,
                300,
                "The date range must be within the last 6 months.",
            ));
        }
        Ok((from, to))
    }

    fn user(&self, id: &str) -> Option<usize> {
        if id == "me" {
            return Some(0);
        }
        self.world.user_by_id(id).map(|(i, _)| i)
    }

    /// An ended meeting instance by number (the latest) or UUID: the world's, or one
    /// created through the API and ended since ([`ZoomSimHandle::end_written_meeting`]).
    fn meeting(&self, id: &str, now: DateTime<Utc>) -> Option<Cow<'_, Meeting>> {
        let w = &self.world;
        let ended = |inner: &Mutable| {
            inner
                .ended_written
                .iter()
                .find(|m| (m.uuid == id || m.id.to_string() == id) && m.end <= now)
                .cloned()
        };
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = id.parse().ok()?;
            let inner = self.lock();
            if let Some(m) = ended(&inner) {
                return Some(Cow::Owned(m));
            }
            self.meetings_by_id
                .get(&n)?
                .iter()
                .filter_map(|&i| w.meetings.get(i))
                .filter(|m| m.end <= now && !inner.deleted_meetings.contains(&m.uuid))
                .max_by_key(|m| m.start)
                .map(Cow::Borrowed)
        } else {
            if let Some(m) = ended(&self.lock()) {
                return Some(Cow::Owned(m));
            }
            w.meetings
                .get(*self.meetings_by_uuid.get(id)?)
                .filter(|m| m.end <= now && !self.lock().deleted_meetings.contains(&m.uuid))
                .map(Cow::Borrowed)
        }
    }

    fn serve(
        &self,
        endpoint: &str,
        ids: &[String],
        q: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> (u16, Value) {
        let w = &self.world;
        let id0 = ids.first().map(String::as_str).unwrap_or("");
        let no_user = || error(404, 1001, &format!("User does not exist: {id0}."));
        let no_meeting = || error(404, 3001, &format!("Meeting does not exist: {id0}."));
        let paid = self.plan != ZoomPlan::Free;
        let paid_only = || {
            error(
                400,
                200,
                &format!("Only available for paid account: {}", w.account_id),
            )
        };
        match endpoint {
            "GET /users" => {
                let users = w.users.iter().map(user_json).collect();
                self.page("users", users, q, 2000, json!({"page_number":1}), now)
            }
            "GET /users/{userId}" => match self.user(id0) {
                Some(i) => (200, user_json(&w.users[i])),
                None => no_user(),
            },
            "GET /report/users/{userId}/meetings" => {
                let Some(u) = self.user(id0) else {
                    return no_user();
                };
                if !paid {
                    return paid_only();
                }
                let (from, to) = match self.window(q, now, true, false) {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let ended = self.lock().ended_written.clone();
                let items = w
                    .meetings
                    .iter()
                    .chain(ended.iter())
                    .filter(|m| {
                        m.host == u
                            && m.in_reports()
                            && m.end <= now
                            && m.start.date_naive() >= from
                            && m.start.date_naive() <= to
                    })
                    .map(|m| report_meeting_json(w, m))
                    .collect();
                self.page(
                    "meetings",
                    items,
                    q,
                    300,
                    json!({"from": from.to_string(), "to": to.to_string(), "page_number": 1}),
                    now,
                )
            }
            "GET /past_meetings/{meetingId}" => {
                if !paid {
                    return paid_only();
                }
                match self.meeting(id0, now) {
                    Some(m) => (200, past_meeting_json(w, &m)),
                    None => no_meeting(),
                }
            }
            "GET /past_meetings/{meetingId}/participants" => {
                if !paid {
                    return paid_only();
                }
                let Some(m) = self.meeting(id0, now) else {
                    return no_meeting();
                };
                let rows = if m.in_reports() {
                    m.participants
                        .iter()
                        .map(|p| participant_json(p, false))
                        .collect()
                } else {
                    Vec::new()
                };
                self.page("participants", rows, q, 300, json!({}), now)
            }
            "GET /meetings/{meetingId}/recordings" => {
                let Some(m) = self.meeting(id0, now) else {
                    return no_meeting();
                };
                match recording_json(w, &m, true) {
                    Some(r) => (200, r),
                    None => error(404, 3301, "There is no recording for this meeting."),
                }
            }
            "GET /users/{userId}/recordings" => {
                let Some(u) = self.user(id0) else {
                    return no_user();
                };
                let (from, to) = match self.window(q, now, false, false) {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let items = w
                    .meetings
                    .iter()
                    .filter(|m| {
                        m.host == u
                            && m.end <= now
                            && m.start.date_naive() >= from
                            && m.start.date_naive() <= to
                    })
                    .filter_map(|m| recording_json(w, m, false))
                    .collect();
                self.page(
                    "meetings",
                    items,
                    q,
                    300,
                    json!({"from": from.to_string(), "to": to.to_string()}),
                    now,
                )
            }
            "GET /meetings/{meetingId}/meeting_summary" => {
                if !paid {
                    return paid_only();
                }
                let Some(m) = self.meeting(id0, now) else {
                    return no_meeting();
                };
                match &m.summary {
                    Some(s)
                        if s.created
                            + chrono::Duration::seconds(self.lock().faults.summary_delay_secs)
                            <= now =>
                    {
                        (200, summary_json(w, &m, s))
                    }
                    _ => error(404, 3322, "Meeting summary does not exist."),
                }
            }
            "GET /users/{userId}/webinars" => {
                let Some(u) = self.user(id0) else {
                    return no_user();
                };
                let items = w.webinars.iter().filter(|x| x.host == u).map(|x| json!({
                    "uuid": x.uuid, "id": x.id, "host_id": w.users[x.host].id, "topic": x.topic, "type": 5,
                    "start_time": iso(x.start), "duration": (x.end - x.start).num_minutes(), "timezone": "UTC",
                    "created_at": iso(x.created_at), "join_url": format!("https://zoom.us/j/{}", x.id), "agenda": "", "is_simulive": false,
                })).collect();
                self.page("webinars", items, q, 300, json!({"page_number": 1}), now)
            }
            "GET /webinars/{webinarId}" => {
                // "Get a webinar": by numeric id (the spec's webinarId); a UUID is refused
                // as Zoom does for an id it does not know.
                let Some(x) = w.webinars.iter().find(|x| x.id.to_string() == id0) else {
                    return error(404, 3001, &format!("Webinar does not exist: {id0}."));
                };
                let host = &w.users[x.host];
                (
                    200,
                    json!({
                        "uuid": x.uuid, "id": x.id, "host_id": host.id, "host_email": host.email,
                        "topic": x.topic, "type": 5, "start_time": iso(x.start),
                        "duration": (x.end - x.start).num_minutes(), "timezone": "UTC", "agenda": "",
                        "created_at": iso(x.created_at), "join_url": format!("https://zoom.us/j/{}", x.id),
                        "start_url": format!("https://zoom.us/s/{}", x.id), "password": "",
                        "is_simulive": false, "record_file_id": "", "settings": {}, "tracking_fields": [],
                    }),
                )
            }
            "GET /webinars/{webinarId}/registrants"
            | "GET /past_webinars/{webinarId}/absentees" => {
                let absentees = endpoint.contains("absentees");
                let Some(x) = w
                    .webinars
                    .iter()
                    .find(|x| x.id.to_string() == id0 || x.uuid == id0)
                else {
                    return error(
                        404,
                        3001,
                        &format!("Webinar {id0} not found or has expired."),
                    );
                };
                if absentees && x.end > now {
                    return error(404, 3001, "Webinar does not exist.");
                }
                let items = x.registrants.iter().filter(|r| !absentees || !r.attended).map(|r| {
                    let p = &w.people[r.person];
                    json!({"id": r.id, "email": r.email, "first_name": p.first_name, "last_name": p.last_name,
                        "status": r.status, "create_time": iso(r.create_time), "join_url": format!("https://zoom.us/w/{}?tk={}", x.id, r.id),
                        "org": w.companies[p.company].name, "job_title": p.title, "industry": w.companies[p.company].industry,
                        "phone": p.phone, "address": "", "city": "", "state": "", "zip": "", "country": "US", "comments": "",
                        "no_of_employees": "", "purchasing_time_frame": "", "role_in_purchase_process": "", "custom_questions": []})
                }).collect();
                self.page("registrants", items, q, 300, json!({"page_number": 1}), now)
            }
            "GET /webinars/{webinarId}/panelists" => {
                let Some(x) = w.webinars.iter().find(|x| x.id.to_string() == id0) else {
                    return error(
                        404,
                        3001,
                        &format!("Webinar {id0} not found or has expired."),
                    );
                };
                let items: Vec<Value> = x.panelists.iter().map(|p| {
                    let u = &w.users[p.user];
                    json!({"id": p.id, "email": u.email, "name": u.display_name(), "join_url": format!("https://zoom.us/w/{}?tk={}", x.id, p.id),
                        "virtual_background_id": "", "name_tag_id": "", "name_tag_name": "", "name_tag_pronouns": "", "name_tag_description": ""})
                }).collect();
                (
                    200,
                    json!({"total_records": items.len(), "panelists": items}),
                )
            }
            "GET /past_webinars/{webinarId}/participants" => {
                let Some(x) = w
                    .webinars
                    .iter()
                    .find(|x| (x.id.to_string() == id0 || x.uuid == id0) && x.end <= now)
                else {
                    return error(404, 3001, "Webinar does not exist.");
                };
                let rows = x
                    .attendees
                    .iter()
                    .map(|p| participant_json(p, false))
                    .collect();
                self.page("participants", rows, q, 300, json!({}), now)
            }
            "GET /phone/call_history" => {
                let (from, to) = match self.window(q, now, false, true) {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let items = w
                    .calls
                    .iter()
                    .filter(|c| {
                        c.end <= now && c.start.date_naive() >= from && c.start.date_naive() <= to
                    })
                    .filter(|c| match q.get("recording_status").map(String::as_str) {
                        Some("recorded") => c.recording.is_some(),
                        Some("non_recorded") => c.recording.is_none(),
                        _ => true,
                    })
                    .map(|c| call_json(w, c))
                    .collect();
                self.page(
                    "call_logs",
                    items,
                    q,
                    300,
                    json!({"from": from.to_string(), "to": to.to_string()}),
                    now,
                )
            }
            "GET /phone/recordings" => {
                let (from, to) = match self.window(q, now, false, false) {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let items = w.calls.iter().filter(|c| c.end <= now && c.start.date_naive() >= from && c.start.date_naive() <= to)
                    .filter_map(|c| c.recording.as_ref().map(|r| (c, r))).map(|(c, r)| {
                        let (caller, callee) = parties(w, c);
                        json!({"id": r.id, "call_id": c.call_id, "call_log_id": c.id, "caller_name": caller.0, "caller_number": caller.1,
                            "caller_number_type": 2, "callee_name": callee.0, "callee_number": callee.1, "callee_number_type": 1,
                            "date_time": iso(c.answer.unwrap_or(c.start)), "end_time": iso(c.end), "direction": c.direction, "duration": r.duration,
                            "download_url": format!("https://zoom.us/v2/phone/recording/download/{}", r.id), "recording_type": "Automatic",
                            "owner": {"type": "user", "id": w.users[c.user].phone_user_id, "name": w.users[c.user].display_name(), "extension_number": w.users[c.user].phone_extension.parse::<u64>().unwrap_or(0)}})
                    }).collect();
                self.page(
                    "recordings",
                    items,
                    q,
                    300,
                    json!({"from": from.to_string(), "to": to.to_string()}),
                    now,
                )
            }
            "GET /phone/voice_mails" => {
                let (from, to) = match self.window(q, now, false, false) {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let items = w.calls.iter().filter(|c| c.end <= now && c.start.date_naive() >= from && c.start.date_naive() <= to)
                    .filter_map(|c| c.voicemail.as_ref().map(|v| (c, v))).map(|(c, v)| {
                        let p = &w.people[c.person];
                        let u = &w.users[c.user];
                        json!({"id": v.id, "call_id": c.call_id, "call_log_id": c.id, "caller_name": p.name(), "caller_number": p.phone, "caller_number_type": 2,
                            "callee_name": u.display_name(), "callee_number": u.phone_extension, "callee_number_type": 1, "date_time": iso(c.start),
                            "duration": v.duration, "status": "unread", "download_url": format!("https://zoom.us/v2/phone/voice_mails/download/{}", v.id),
                            "owner": {"type": "user", "id": u.phone_user_id, "name": u.display_name(), "extension_number": u.phone_extension.parse::<u64>().unwrap_or(0)}})
                    }).collect();
                self.page(
                    "voice_mails",
                    items,
                    q,
                    300,
                    json!({"from": from.to_string(), "to": to.to_string()}),
                    now,
                )
            }
            _ => match self.serve_subject(endpoint, ids, q, now) {
                Some(answer) => answer,
                None => self.serve_peer(endpoint, ids, q, now),
            },
        }
    }
}

/// Matches a raw (still encoded) path to an endpoint; returns the raw id segments.
fn route<'a>(seg: &[&'a str]) -> Option<(Route, Vec<&'a str>)> {
    let r = |endpoint, category| Route {
        endpoint,
        category,
        phone: false,
    };
    let p = |endpoint, category| Route {
        endpoint,
        category,
        phone: true,
    };
    Some(match seg {
        ["users"] => (r("GET /users", "medium"), vec![]),
        ["users", id] => (r("GET /users/{userId}", "light"), vec![*id]),
        ["report", "users", id, "meetings"] => {
            (r("GET /report/users/{userId}/meetings", "heavy"), vec![*id])
        }
        ["past_meetings", id] => (r("GET /past_meetings/{meetingId}", "light"), vec![*id]),
        ["past_meetings", id, "participants"] => (
            r("GET /past_meetings/{meetingId}/participants", "medium"),
            vec![*id],
        ),
        ["meetings", id, "recordings"] => (
            r("GET /meetings/{meetingId}/recordings", "light"),
            vec![*id],
        ),
        ["meetings", id, "meeting_summary"] => (
            r("GET /meetings/{meetingId}/meeting_summary", "light"),
            vec![*id],
        ),
        ["users", id, "recordings"] => (r("GET /users/{userId}/recordings", "medium"), vec![*id]),
        ["users", id, "webinars"] => (r("GET /users/{userId}/webinars", "medium"), vec![*id]),
        ["webinars", id] => (r("GET /webinars/{webinarId}", "light"), vec![*id]),
        ["webinars", id, "registrants"] => (
            r("GET /webinars/{webinarId}/registrants", "medium"),
            vec![*id],
        ),
        ["webinars", id, "panelists"] => (
            r("GET /webinars/{webinarId}/panelists", "medium"),
            vec![*id],
        ),
        ["past_webinars", id, "participants"] => (
            r("GET /past_webinars/{webinarId}/participants", "medium"),
            vec![*id],
        ),
        ["past_webinars", id, "absentees"] => (
            r("GET /past_webinars/{webinarId}/absentees", "heavy"),
            vec![*id],
        ),
        ["phone", "call_history"] => (p("GET /phone/call_history", "heavy"), vec![]),
        ["phone", "recordings"] => (p("GET /phone/recordings", "medium"), vec![]),
        ["phone", "voice_mails"] => (p("GET /phone/voice_mails", "medium"), vec![]),
        _ => return peer::route(seg).or_else(|| subject::route(seg)),
    })
}

fn user_json(u: &crate::sim::world::ZoomUser) -> Value {
    json!({"id": u.id, "email": u.email, "first_name": u.first_name, "last_name": u.last_name,
        "display_name": u.display_name(), "type": 2, "status": "active", "role_id": "2", "pmi": u.pmi,
        "timezone": u.timezone, "dept": u.dept, "verified": 1, "created_at": iso(u.created_at),
        "user_created_at": iso(u.created_at), "group_ids": [], "language": "en-US"})
}

fn report_meeting_json(w: &World, m: &Meeting) -> Value {
    let host = &w.users[m.host];
    let mine = m
        .participants
        .iter()
        .filter(|p| matches!(p.attendee, Attendee::Internal(_)))
        .count();
    let total: i64 = m.participants.iter().map(Participant::duration_secs).sum();
    json!({"uuid": m.uuid, "id": m.id, "type": m.meeting_type, "topic": m.topic, "user_name": host.display_name(),
        "user_email": host.email, "start_time": iso(m.start), "end_time": iso(m.end), "duration": m.duration_minutes(),
        "total_minutes": total / 60, "participants_count": m.participants.len(), "participants_count_my_account": mine,
        "source": "Zoom", "session_key": "", "custom_keys": [],
        "schedule_time": m.start.format("%m/%d/%Y %H:%M").to_string(), "join_time": m.start.format("%m/%d/%Y %H:%M").to_string(),
        "leave_time": m.end.format("%m/%d/%Y %H:%M").to_string(), "host_name": host.display_name(), "host_organization": "Acme",
        "has_screen_share": m.recording.is_some(), "has_recording": m.recording.is_some(), "has_chat": false,
        "has_meeting_summary": m.summary.is_some(), "meeting_encryption_status": 1})
}

fn past_meeting_json(w: &World, m: &Meeting) -> Value {
    let host = &w.users[m.host];
    let total: i64 = m.participants.iter().map(Participant::duration_secs).sum();
    json!({"id": m.id, "uuid": m.uuid, "host_id": host.id, "topic": m.topic, "type": m.meeting_type,
        "start_time": iso(m.start), "end_time": iso(m.end), "duration": m.duration_minutes(), "total_minutes": total / 60,
        "participants_count": m.participants.len(), "user_email": host.email, "user_name": host.display_name(),
        "dept": host.dept, "source": "Zoom", "has_meeting_summary": m.summary.is_some()})
}

fn participant_json(p: &Participant, _report: bool) -> Value {
    json!({"id": p.id, "name": p.name, "user_id": p.user_id, "registrant_id": p.registrant_id,
        "participant_uuid": p.participant_uuid, "user_email": p.email, "join_time": iso(p.join_time),
        "leave_time": iso(p.leave_time), "duration": p.duration_secs(), "failover": false, "status": "in_meeting",
        "internal_user": matches!(p.attendee, Attendee::Internal(_))})
}

fn recording_json(w: &World, m: &Meeting, single: bool) -> Option<Value> {
    let r = m.recording.as_ref()?;
    let files: Vec<Value> = r.files.iter().map(|f| json!({"id": f.id, "meeting_id": m.uuid,
        "recording_start": iso(f.start), "recording_end": iso(f.end), "file_type": f.file_type,
        "file_extension": f.file_extension, "file_size": f.file_size,
        "play_url": format!("https://zoom.us/rec/play/{}", f.id), "download_url": format!("https://zoom.us/rec/download/{}", f.id),
        "status": "completed", "recording_type": f.recording_type})).collect();
    let mut v = json!({"uuid": m.uuid, "id": m.id, "account_id": w.account_id, "host_id": w.users[m.host].id,
        "topic": m.topic, "type": m.meeting_type.to_string(), "start_time": iso(m.start), "duration": m.duration_minutes(),
        "total_size": r.total_size(), "recording_count": r.files.len(), "share_url": r.share_url, "recording_files": files});
    if single {
        v["password"] = json!(r.password);
        v["recording_play_passcode"] = json!("");
    }
    Some(v)
}

fn summary_json(w: &World, m: &Meeting, s: &crate::sim::world::Summary) -> Value {
    let host = &w.users[m.host];
    json!({"meeting_host_id": host.id, "meeting_host_email": host.email, "meeting_uuid": m.uuid, "meeting_id": m.id,
        "meeting_topic": m.topic, "meeting_start_time": iso(m.start), "meeting_end_time": iso(m.end),
        "summary_start_time": iso(m.start), "summary_end_time": iso(m.end), "summary_created_time": iso(s.created),
        "summary_last_modified_time": iso(s.created), "summary_title": s.title, "summary_overview": s.overview,
        "summary_details": s.details.iter().map(|(l, t)| json!({"label": l, "summary": t})).collect::<Vec<_>>(),
        "next_steps": s.next_steps, "summary_content": format!("## Quick recap\n{}", s.overview),
        "summary_doc_url": format!("https://docs.zoom.us/doc/{}", m.id)})
}

/// ((caller name, number), (callee name, number)).
fn parties(w: &World, c: &crate::sim::world::Call) -> ((String, String), (String, String)) {
    let p = &w.people[c.person];
    let u = &w.users[c.user];
    let ext = (p.name(), p.phone.clone());
    let int = (u.display_name(), u.phone_extension.clone());
    if c.direction == "inbound" {
        (ext, int)
    } else {
        (int, ext)
    }
}

fn call_json(w: &World, c: &crate::sim::world::Call) -> Value {
    let p = &w.people[c.person];
    let u = &w.users[c.user];
    let inbound = c.direction == "inbound";
    let (caller_email, callee_email) = if inbound {
        ("".to_string(), u.email.clone())
    } else {
        (u.email.clone(), "".to_string())
    };
    let ((caller_name, caller_number), (callee_name, callee_number)) = parties(w, c);
    json!({"id": c.id, "call_id": c.call_id, "direction": c.direction, "international": false,
        "start_time": iso(c.start), "answer_time": c.answer.map(iso).unwrap_or_default(), "end_time": iso(c.end),
        "duration": c.talk_time(), "connect_type": "external", "call_type": "general", "call_result": c.result, "result": c.result,
        "caller_name": caller_name, "caller_email": caller_email,
        "caller_did_number": if inbound { caller_number.clone() } else { String::new() },
        "caller_ext_number": if inbound { String::new() } else { caller_number.clone() },
        "caller_number_type": if inbound { "external_pstn" } else { "internal" },
        "caller_ext_type": if inbound { "" } else { "user" },
        "callee_name": callee_name, "callee_email": callee_email,
        "callee_did_number": if inbound { String::new() } else { callee_number.clone() },
        "callee_ext_number": if inbound { callee_number.clone() } else { String::new() },
        "callee_number_type": if inbound { "internal" } else { "external_pstn" },
        "callee_ext_type": if inbound { "user" } else { "" },
        "recording_id": c.recording.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
        "voicemail_id": c.voicemail.as_ref().map(|v| v.id.clone()).unwrap_or_default(),
        "talk_time": c.talk_time(), "hold_time": 0, "wait_time": 0, "department": "", "cost_center": "",
        "site_id": "", "group_id": "", "caller_country_iso_code": "US", "callee_country_iso_code": "US",
        "caller_country_code": "1", "callee_country_code": "1", "external_email": p.email,
        "recording_status": if c.recording.is_some() { "recorded" } else { "non_recorded" }})
}
