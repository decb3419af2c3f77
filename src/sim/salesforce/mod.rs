//! The Salesforce simulator: an in-memory org behind the real REST shapes. Two listeners on
//! 127.0.0.1 stand for the login host (`login_url`: OAuth) and the org's My Domain
//! (`instance_url`: data API, and the client-credentials token endpoint). Time comes from
//! the injected clock, so session expiry, the rolling 24 h API allowance and Bulk job
//! progress are virtual.

mod bulk_query;
pub mod ids;
mod oauth;
pub(crate) mod org;
mod rest;
pub(crate) mod schema;
pub(crate) mod soql;

use crate::clock::SharedClock;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jsonwebtoken::DecodingKey;
use org::{Org, WriteFaults};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Switches that make the sim misbehave the way real orgs do. Change them on a running sim
/// with [`SfSimHandle::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct SfFaults {
    /// Sessions older than this answer 401 INVALID_SESSION_ID.
    pub session_ttl: Option<Duration>,
    /// The refresh grant fails with `invalid_grant` / `expired access/refresh token`.
    pub revoke_refresh: bool,
    /// Every refresh returns a new refresh token and retires the old one.
    pub rotate_refresh: bool,
    /// Every Nth record write fails with UNABLE_TO_LOCK_ROW (0 = never) ...
    pub lock_row_every: u32,
    /// ... at most this many times in total.
    pub lock_row_max: u32,
    /// (object, field, substring) that trips a validation rule (FIELD_CUSTOM_VALIDATION_EXCEPTION).
    pub validation_rule: Option<(String, String, String)>,
    /// The first upsert of each new external-id value fails once with DUPLICATE_VALUE, as
    /// when two writers race to create the same key.
    pub duplicate_race: bool,
    /// The next N data requests answer 503.
    pub http_5xx_next: u32,
    /// Every data request waits this long on the sim's clock.
    pub latency: Option<Duration>,
    /// Bulk jobs fail as a whole with this `errorMessage`.
    pub bulk_fail_job: Option<String>,
    /// How long (virtual time) a Bulk job stays InProgress after UploadComplete.
    pub bulk_processing: Duration,
    /// Composite subrequest urls are not held to the 16,384-byte URI limit (whether real
    /// Salesforce holds them to it is undocumented; by default the sim does).
    pub lenient_subrequest_urls: bool,
    /// Let this many sObject Collections requests through untouched ...
    pub collections_5xx_skip: u32,
    /// ... then answer the next N Collections requests 500 (a chunk failing as a whole).
    pub collections_5xx_next: u32,
}

/// Salesforce's cap on the request URI plus the request headers of any REST call, in bytes
/// (knowledge article 000386264): a longer URI gets 414, longer headers 431.
pub const MAX_REQUEST_BYTES: usize = 16_384;
/// The longest SOQL statement Salesforce accepts, in characters.
pub const MAX_SOQL_CHARS: usize = 100_000;
/// The most raw CSV one Bulk API 2.0 upload may carry (150 MB once base64-encoded).
pub const MAX_BULK_UPLOAD_BYTES: usize = 100 * 1024 * 1024;
/// Salesforce's default session timeout (Setup > Session Settings: two hours). The real
/// timeout counts from the last activity; the sim counts from issue, the stricter reading.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(2 * 60 * 60);

/// The size of one request as the limit counts it: the URI (path and query, as sent) and
/// every header line (`name: value` plus CRLF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSize {
    pub uri: usize,
    pub headers: usize,
}

impl RequestSize {
    pub fn total(&self) -> usize {
        self.uri.saturating_add(self.headers)
    }
}

/// How to start a sim.
#[derive(Clone)]
pub struct SfSimOptions {
    pub clock: SharedClock,
    /// e.g. "61.0"; switches the v45/v46 upsert and platform-event response forms.
    pub api_version: String,
    /// The org's rolling 24 h API allowance (`Sforce-Limit-Info` max).
    pub daily_limit: u64,
    pub faults: SfFaults,
    /// The connected app's certificate (or public key) that JWT assertions must verify against.
    pub jwt_certificate_pem: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    /// The integration user (the JWT `sub`).
    pub username: String,
    /// A refresh token the org has already issued.
    pub refresh_token: String,
    /// Records per SOQL page (Salesforce: up to 2,000).
    pub query_page_size: usize,
}

impl SfSimOptions {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            api_version: "61.0".into(),
            daily_limit: 100_000,
            faults: SfFaults {
                bulk_processing: Duration::from_secs(5),
                session_ttl: Some(DEFAULT_SESSION_TTL),
                ..SfFaults::default()
            },
            jwt_certificate_pem: None,
            client_id: "3MVG9sim.consumer.key".into(),
            client_secret: "sim-consumer-secret".into(),
            username: "integration@ferry.example".into(),
            refresh_token: "5Aep861sim.refresh.token".into(),
            query_page_size: 2000,
        }
    }
}

/// API calls the sim answered, by kind. Token requests are `auth` and do not count against
/// the org's allowance; everything else does (a Collections or Composite request once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimCalls {
    pub auth: u64,
    pub query: u64,
    pub sobject: u64,
    pub collections: u64,
    pub composite: u64,
    pub bulk: u64,
    pub describe: u64,
    pub limits: u64,
    pub other: u64,
    /// Requests refused with 401 INVALID_SESSION_ID.
    pub unauthorized: u64,
    /// Requests refused with 403 REQUEST_LIMIT_EXCEEDED.
    pub limit_refused: u64,
}

impl SimCalls {
    /// Calls that counted against the org's allowance.
    pub fn api_total(&self) -> u64 {
        self.query
            + self.sobject
            + self.collections
            + self.composite
            + self.bulk
            + self.describe
            + self.limits
            + self.other
    }
}

pub(crate) struct Session {
    issued: DateTime<Utc>,
}

pub(crate) struct QueryCursor {
    object: String,
    rows: Vec<Value>,
    total: usize,
}

pub(crate) struct BulkJob {
    info: Map<String, Value>,
    object: String,
    operation: String,
    external_id: Option<String>,
    csv: String,
    closed_at: Option<DateTime<Utc>>,
    successes: Vec<Vec<String>>,
    failures: Vec<Vec<String>>,
    header: Vec<String>,
}

pub(crate) struct SimState {
    pub(crate) clock: SharedClock,
    pub(crate) version: String,
    pub(crate) daily_limit: u64,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) username: String,
    pub(crate) org_id: String,
    pub(crate) login_url: String,
    pub(crate) instance_url: String,
    pub(crate) jwt_key: Option<DecodingKey>,
    pub(crate) page_size: usize,
    pub(crate) faults: SfFaults,
    pub(crate) org: Org,
    pub(crate) sessions: HashMap<String, Session>,
    pub(crate) refresh_tokens: HashSet<String>,
    pub(crate) auth_codes: HashMap<String, (String, Option<String>)>,
    pub(crate) calls: SimCalls,
    pub(crate) usage: VecDeque<DateTime<Utc>>,
    pub(crate) cursors: HashMap<String, QueryCursor>,
    pub(crate) jobs: BTreeMap<String, BulkJob>,
    /// Bulk API 2.0 query jobs.
    pub(crate) query_jobs: BTreeMap<String, bulk_query::QueryJob>,
    pub(crate) published: Vec<(String, Value)>,
    pub(crate) seq: u64,
    /// The largest request (URI plus headers) the data host received, refused ones included.
    pub(crate) longest_request: RequestSize,
    /// The longest Composite subrequest `url` received.
    pub(crate) longest_subrequest_url: usize,
    /// Requests refused with 414 or 431 for their size.
    pub(crate) oversize_refused: u64,
}

impl SimState {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn next_token(&mut self, prefix: &str) -> String {
        self.seq += 1;
        let r: u64 = rand::random();
        format!("{prefix}{:06}{r:016x}", self.seq)
    }

    /// API calls in the rolling 24 h window.
    pub(crate) fn usage_now(&mut self) -> u64 {
        let cutoff = self.now() - chrono::Duration::hours(24);
        while self.usage.front().is_some_and(|t| *t <= cutoff) {
            self.usage.pop_front();
        }
        self.usage.len() as u64
    }

    fn sync_write_faults(&mut self) {
        self.org.write_faults = WriteFaults {
            lock_row_every: self.faults.lock_row_every,
            lock_row_max: self.faults.lock_row_max,
            validation_rule: self.faults.validation_rule.clone(),
            duplicate_race: self.faults.duplicate_race,
        };
    }
}

type Shared = Arc<Mutex<SimState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, SimState> {
    // A poisoned lock means a handler panicked; the org data is still usable for tests.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running sim. Dropping it stops the listeners.
pub struct SfSimHandle {
    pub login_url: String,
    pub instance_url: String,
    pub api_version: String,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub refresh_token: String,
    state: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SfSimHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    #[error("the JWT certificate is not a usable RSA certificate or public key: {0}")]
    Certificate(String),
}

pub struct SalesforceSim;

impl SalesforceSim {
    pub async fn start(opts: SfSimOptions) -> Result<SfSimHandle, SimError> {
        let login = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SimError::Bind)?;
        let instance = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SimError::Bind)?;
        let login_url = format!("http://{}", login.local_addr().map_err(SimError::Bind)?);
        let instance_url = format!("http://{}", instance.local_addr().map_err(SimError::Bind)?);
        let jwt_key = match &opts.jwt_certificate_pem {
            Some(pem) => Some(
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| SimError::Certificate(e.to_string()))?,
            ),
            None => None,
        };
        let now = opts.clock.now();
        let mut st = SimState {
            clock: opts.clock.clone(),
            version: opts.api_version.clone(),
            daily_limit: opts.daily_limit,
            client_id: opts.client_id.clone(),
            client_secret: opts.client_secret.clone(),
            username: opts.username.clone(),
            org_id: "00DAk0000001SimAAA".into(),
            login_url: login_url.clone(),
            instance_url: instance_url.clone(),
            jwt_key,
            page_size: opts.query_page_size.clamp(1, 2000),
            faults: opts.faults.clone(),
            org: Org::new(now, &opts.username),
            sessions: HashMap::new(),
            refresh_tokens: HashSet::from([opts.refresh_token.clone()]),
            auth_codes: HashMap::new(),
            calls: SimCalls::default(),
            usage: VecDeque::new(),
            cursors: HashMap::new(),
            jobs: BTreeMap::new(),
            query_jobs: BTreeMap::new(),
            published: Vec::new(),
            seq: 0,
            longest_request: RequestSize::default(),
            longest_subrequest_url: 0,
            oversize_refused: 0,
        };
        st.sync_write_faults();
        let state: Shared = Arc::new(Mutex::new(st));
        let login_app = Router::new()
            .fallback(login_handler)
            .with_state(state.clone());
        // axum's default 2 MB body cap would refuse Bulk uploads Salesforce takes; the
        // sim's own limits (MAX_BULK_UPLOAD_BYTES) answer instead, with a little room so
        // an oversize upload reaches them.
        let instance_app = Router::new()
            .fallback(instance_handler)
            .layer(axum::extract::DefaultBodyLimit::max(
                MAX_BULK_UPLOAD_BYTES + 1024 * 1024,
            ))
            .with_state(state.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(login, login_app).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(instance, instance_app).await;
            }),
        ];
        Ok(SfSimHandle {
            login_url,
            instance_url,
            api_version: opts.api_version,
            client_id: opts.client_id,
            client_secret: opts.client_secret,
            username: opts.username,
            refresh_token: opts.refresh_token,
            state,
            tasks,
        })
    }
}

impl SfSimHandle {
    /// Inserts records as they are (no validation), filling Id and system fields; returns
    /// their ids. `LastModifiedDate` may be given to order matches.
    pub fn seed(&self, sobject: &str, records: Vec<Value>) -> Vec<String> {
        let mut st = lock(&self.state);
        let now = st.now();
        st.org.seed(sobject, records, now)
    }

    /// Every stored record of one object.
    pub fn records(&self, sobject: &str) -> Vec<Value> {
        let st = lock(&self.state);
        let name = st
            .org
            .schema
            .object(sobject)
            .map(|o| o.name.to_string())
            .unwrap_or_else(|| sobject.to_string());
        st.org
            .records
            .get(&name)
            .map(|rows| rows.iter().cloned().map(Value::Object).collect())
            .unwrap_or_default()
    }

    /// Changes fields of a record as a user would (no validation): `LastModifiedDate` and
    /// `SystemModstamp` move to now. False when there is no such live record.
    pub fn update(&self, sobject: &str, id: &str, fields: Value) -> bool {
        let mut st = lock(&self.state);
        let now = st.now();
        st.org.touch(sobject, id, fields, now)
    }

    /// Deletes a record as a user would: it goes to the Recycle Bin (`IsDeleted`, a new
    /// `SystemModstamp`), seen only by queryAll.
    pub fn delete(&self, sobject: &str, id: &str) -> bool {
        let mut st = lock(&self.state);
        let now = st.now();
        let name = st.org.schema.object(sobject).map(|o| o.name);
        name.is_some_and(|n| st.org.delete(n, id, now))
    }

    /// API calls answered so far, by kind.
    pub fn calls(&self) -> SimCalls {
        lock(&self.state).calls.clone()
    }

    /// The largest request (URI plus header bytes) the sim received so far.
    pub fn longest_request(&self) -> RequestSize {
        lock(&self.state).longest_request
    }

    /// The longest Composite subrequest `url` received so far, in bytes.
    pub fn longest_subrequest_url(&self) -> usize {
        lock(&self.state).longest_subrequest_url
    }

    /// Requests refused with 414 URI_TOO_LONG or 431 for their size.
    pub fn oversize_refused(&self) -> u64 {
        lock(&self.state).oversize_refused
    }

    /// The org's API usage in the rolling 24 h window.
    pub fn api_usage(&self) -> u64 {
        lock(&self.state).usage_now()
    }

    /// Ends every open session: the next call with an old token gets INVALID_SESSION_ID.
    pub fn expire_sessions(&self) {
        lock(&self.state).sessions.clear();
    }

    pub fn set_faults(&self, f: impl FnOnce(&mut SfFaults)) {
        let mut st = lock(&self.state);
        f(&mut st.faults);
        st.sync_write_faults();
    }

    pub fn set_daily_limit(&self, max: u64) {
        lock(&self.state).daily_limit = max;
    }

    /// UNABLE_TO_LOCK_ROW failures handed out so far.
    pub fn lock_failures(&self) -> u32 {
        lock(&self.state).org.lock_failures
    }

    /// Platform events published, as (event object, payload with EventUuid and ReplayId).
    pub fn published_events(&self) -> Vec<(String, Value)> {
        lock(&self.state).published.clone()
    }

    /// The integration user's id (owner of records written through the API).
    pub fn integration_user_id(&self) -> String {
        lock(&self.state).org.integration_user_id.clone()
    }

    /// Marks a Lead converted (to the given Contact): later writes to it are rejected.
    pub fn convert_lead(&self, lead_id: &str, contact_id: &str) {
        let mut st = lock(&self.state);
        if let Some(rows) = st.org.records.get_mut("Lead") {
            for r in rows.iter_mut() {
                if r.get("Id")
                    .and_then(Value::as_str)
                    .is_some_and(|x| ids::same_id(x, lead_id))
                {
                    r.insert("IsConverted".into(), Value::Bool(true));
                    r.insert(
                        "ConvertedContactId".into(),
                        Value::String(contact_id.into()),
                    );
                    r.insert("Status".into(), Value::String("Closed - Converted".into()));
                }
            }
        }
    }
}

async fn login_handler(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/');
    let mut st = lock(&state);
    match (method.as_str(), path) {
        ("POST", "/services/oauth2/token") => st.token(false, &headers, &body).into_response(),
        ("GET", "/services/oauth2/authorize") => st.authorize(uri.query().unwrap_or("")),
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

async fn instance_handler(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = lock(&state).faults.latency;
    if let Some(d) = latency {
        let clock = lock(&state).clock.clone();
        clock.sleep(d).await;
    }
    let mut st = lock(&state);
    // The request-size limit comes first: Salesforce's front end refuses an oversize
    // request before it authenticates or counts it.
    let size = RequestSize {
        uri: uri.path_and_query().map_or(0, |pq| pq.as_str().len()),
        headers: headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum(),
    };
    if size.total() > st.longest_request.total() {
        st.longest_request = size;
    }
    if let Some(refused) = oversize_reply(size) {
        st.oversize_refused += 1;
        return refused;
    }
    let path = uri.path().trim_end_matches('/').to_string();
    if method == Method::POST && path == "/services/oauth2/token" {
        return st.token(true, &headers, &body).into_response();
    }
    st.serve_api(&method, &path, uri.query().unwrap_or(""), &headers, &body)
}

/// 414 for a URI over the limit, 431 for a URI plus headers over it. The body follows the
/// REST error envelope; the real answer comes from Salesforce's front end and its exact body
/// is unverified (it may be an HTML page): the JSON form is the one ferry must read anyway.
fn oversize_reply(size: RequestSize) -> Option<Response> {
    let (status, code, message) = if size.uri > MAX_REQUEST_BYTES {
        (
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!(
                "The request URI is {} bytes; Salesforce accepts at most {MAX_REQUEST_BYTES} bytes of URI and headers",
                size.uri
            ),
        )
    } else if size.total() > MAX_REQUEST_BYTES {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
            format!(
                "The request URI and headers are {} bytes; Salesforce accepts at most {MAX_REQUEST_BYTES}",
                size.total()
            ),
        )
    } else {
        return None;
    };
    Some(
        (
            status,
            axum::Json(serde_json::json!([{"errorCode": code, "message": message}])),
        )
            .into_response(),
    )
}
