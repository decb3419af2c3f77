//! The Salesforce connector: auth flows, describe, SOQL lookups, Collections/Bulk writes, limits.
//!
//! Every call goes through [`crate::http::HttpClient`] to the `instance_url` the token
//! response named. A call answered 401 `INVALID_SESSION_ID` re-authenticates once and is
//! sent again. Before each call the connector checks its API budget (ferry's own rolling
//! 24 h count against `daily_budget`, and the org's allowance from `Sforce-Limit-Info`).

pub mod auth;
mod budget;
pub mod catalog;
pub(crate) mod csv;
mod lookup;
pub(crate) mod source;
mod write;

pub use auth::{
    AuthorizeRequest, MemoryTokenStore, Secret, SfAuth, TokenResponse, TokenStore, TokenStoreError,
    authorize_interactively, jwt_audience, token_key,
};
pub use budget::{Budget, BudgetScope, parse_limit_info};
pub use lookup::{MatchOutcome, escape_soql, soql_literal, value_problem};
pub use write::{RecordError, RecordResult, WriteOp};

use crate::clock::SharedClock;
use crate::http::{HttpClient, HttpError, Method, Request, Response, Service};
use budget::BudgetState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Salesforce's limit on the URI plus headers of a REST call, in bytes.
pub const REQUEST_BYTES_LIMIT: usize = 16_384;
/// The default of `max_request_bytes`: the limit less 1 KiB of margin.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = REQUEST_BYTES_LIMIT - 1024;
/// The longest SOQL statement Salesforce accepts, in characters.
pub const MAX_SOQL_CHARS: usize = 100_000;
/// Query subrequests one Composite call may carry.
const COMPOSITE_QUERIES: usize = 5;
/// Header bytes the HTTP stack adds beyond ferry's own (Host, Accept, Accept-Encoding,
/// Content-Length, User-Agent), counted generously.
const STACK_HEADER_BYTES: usize = 256;

/// Connector settings (from ferry.yaml's `salesforce:` block).
#[derive(Clone, Debug)]
pub struct SalesforceSettings {
    pub auth: SfAuth,
    /// e.g. "61.0" (v46+ upsert semantics are assumed).
    pub api_version: String,
    /// ferry's own cap on API calls per rolling 24 h.
    pub daily_budget: Option<u64>,
    /// Writes of at least this many records go through Bulk API 2.0.
    pub bulk_threshold: usize,
    /// The largest request ferry builds for a query, in bytes of URI plus headers as sent.
    /// Salesforce refuses more than 16,384 (414 / 431); the default leaves a margin for
    /// headers ferry cannot see. Lookups longer than this are split (and the parts sent
    /// together through Composite).
    pub max_request_bytes: usize,
    /// How often records refused with UNABLE_TO_LOCK_ROW are sent again.
    pub lock_retries: u32,
}

impl SalesforceSettings {
    pub fn new(auth: SfAuth) -> Self {
        Self {
            auth,
            api_version: "61.0".into(),
            daily_budget: None,
            bulk_threshold: 2000,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            lock_retries: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SfError {
    #[error("Salesforce authentication failed: {message}")]
    Auth { message: String },
    #[error(
        "Salesforce no longer accepts ferry's stored authorization ({reason}); re-authorize ferry with `ferry auth salesforce`"
    )]
    Reauthorize { reason: String },
    #[error("{}", budget_message(.scope, *.used, *.limit))]
    BudgetExhausted {
        scope: BudgetScope,
        used: u64,
        limit: u64,
    },
    #[error(
        "Salesforce refused the call because the org's API request limit is exceeded ({message}); resume in a later 24-hour window"
    )]
    RequestLimitExceeded { message: String },
    #[error("Salesforce rejected the request ({code}, HTTP {status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("Salesforce rejected a freshly issued session (INVALID_SESSION_ID)")]
    SessionInvalid,
    #[error("Bulk API job {job_id} failed: {message}")]
    Bulk { job_id: String, message: String },
    #[error("unexpected answer from Salesforce: {what}")]
    Malformed { what: String },
    #[error("Salesforce configuration: {message}")]
    Config { message: String },
    #[error(transparent)]
    Http(#[from] HttpError),
}

fn budget_message(scope: &BudgetScope, used: u64, limit: u64) -> String {
    match scope {
        BudgetScope::Ferry => format!(
            "Salesforce API budget reached: ferry has made {used} of the {limit} calls its daily_budget allows in the last 24 hours; stopping until the window frees calls"
        ),
        BudgetScope::Org => format!(
            "Salesforce API budget reached: the org has used {used} of its {limit} daily API calls; stopping until the rolling 24-hour window frees calls"
        ),
    }
}

impl SfError {
    /// The Salesforce error code, when the error carries one.
    pub fn code(&self) -> Option<&str> {
        match self {
            SfError::Api { code, .. } => Some(code),
            SfError::RequestLimitExceeded { .. } => Some("REQUEST_LIMIT_EXCEEDED"),
            _ => None,
        }
    }
}

/// One field of a describe result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldDescribe {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub length: u64,
    #[serde(default)]
    pub createable: bool,
    #[serde(default)]
    pub updateable: bool,
    #[serde(default)]
    pub nillable: bool,
    #[serde(default)]
    pub defaulted_on_create: bool,
    #[serde(default)]
    pub external_id: bool,
    #[serde(default)]
    pub id_lookup: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub picklist_values: Vec<PicklistValue>,
    #[serde(default)]
    pub restricted_picklist: bool,
    /// Whole numbers (int): the most digits.
    #[serde(default)]
    pub digits: u32,
    /// Decimals (double, currency, percent): all digits, and those after the point.
    #[serde(default)]
    pub precision: u32,
    #[serde(default)]
    pub scale: u32,
    #[serde(default)]
    pub reference_to: Vec<String>,
    #[serde(default)]
    pub relationship_name: Option<String>,
}

impl FieldDescribe {
    /// Required on create: createable, not nillable, not filled in by the server.
    pub fn required_on_create(&self) -> bool {
        self.createable && !self.nillable && !self.defaulted_on_create
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PicklistValue {
    pub value: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub default_value: bool,
}

/// An sObject's describe result (the parts ferry uses).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Describe {
    pub name: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default)]
    pub createable: bool,
    #[serde(default)]
    pub updateable: bool,
    #[serde(default)]
    pub queryable: bool,
    #[serde(default)]
    pub custom: bool,
    pub fields: Vec<FieldDescribe>,
}

impl Describe {
    /// A field by name, case-insensitively (as Salesforce matches names).
    pub fn field(&self, name: &str) -> Option<&FieldDescribe> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
    /// Platform events (`__e`) are publish-only.
    pub fn is_platform_event(&self) -> bool {
        self.name.ends_with("__e")
    }
}

/// What a pipeline does with an object's fields, for `ferry validate --online`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldAction {
    Insert,
    Update,
    Upsert,
    Publish,
    Query,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblemKind {
    /// The object itself is missing or describe failed.
    UnknownObject,
    UnknownField {
        suggestion: Option<String>,
    },
    NotCreateable,
    NotUpdateable,
    NotExternalId,
    DescribeFailed,
}

/// One problem with a field a pipeline names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub sobject: String,
    pub field: String,
    pub kind: FieldProblemKind,
    pub message: String,
}

struct Session {
    access_token: Secret,
    instance_url: String,
    generation: u64,
}

pub(crate) enum Body {
    Json(Value),
    Csv(String),
}

/// A connected Salesforce org.
pub struct SalesforceConnector {
    http: HttpClient,
    clock: SharedClock,
    settings: SalesforceSettings,
    session: tokio::sync::Mutex<Session>,
    token_store: Option<Arc<dyn TokenStore>>,
    describes: Mutex<HashMap<String, Arc<Describe>>>,
    /// Object name (lower case) → id prefix, from the global describe.
    key_prefixes: Mutex<Option<Arc<HashMap<String, String>>>>,
    budget: Mutex<BudgetState>,
}

impl std::fmt::Debug for SalesforceConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceConnector")
            .field("api_version", &self.settings.api_version)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means another task panicked; the counters stay meaningful.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SalesforceConnector {
    /// Authenticates and returns a connector bound to the org's `instance_url`.
    pub async fn connect(settings: SalesforceSettings, http: HttpClient) -> Result<Self, SfError> {
        Self::connect_with_store(settings, http, None).await
    }

    /// As [`connect`](Self::connect), reading a rotated refresh token from `store` (it wins
    /// over the configured one) and saving any new refresh token Salesforce hands out.
    pub async fn connect_with_store(
        settings: SalesforceSettings,
        http: HttpClient,
        store: Option<Arc<dyn TokenStore>>,
    ) -> Result<Self, SfError> {
        let clock = http.clock().clone();
        let tokens = Self::login(&http, &clock, &settings.auth, store.as_ref()).await?;
        Ok(Self {
            http,
            clock,
            settings,
            session: tokio::sync::Mutex::new(Session {
                access_token: Secret::new(tokens.access_token),
                instance_url: tokens.instance_url.trim_end_matches('/').to_string(),
                generation: 0,
            }),
            token_store: store,
            describes: Mutex::new(HashMap::new()),
            key_prefixes: Mutex::new(None),
            budget: Mutex::new(BudgetState::default()),
        })
    }

    async fn login(
        http: &HttpClient,
        clock: &SharedClock,
        auth: &SfAuth,
        store: Option<&Arc<dyn TokenStore>>,
    ) -> Result<TokenResponse, SfError> {
        let key = match auth {
            SfAuth::RefreshToken { client_id, .. } => Some(token_key(auth.login_url(), client_id)),
            _ => None,
        };
        let stored = match (store, &key) {
            (Some(s), Some(k)) => s.get(k).await.map_err(|e| SfError::Config {
                message: e.to_string(),
            })?,
            _ => None,
        };
        let tokens = auth::fetch_token(http, clock, auth, stored.as_ref()).await?;
        if let (Some(s), Some(k), Some(rt)) = (store, &key, &tokens.refresh_token) {
            s.put(k, &Secret::new(rt.clone()))
                .await
                .map_err(|e| SfError::Config {
                    message: e.to_string(),
                })?;
        }
        Ok(tokens)
    }

    pub fn settings(&self) -> &SalesforceSettings {
        &self.settings
    }

    pub async fn instance_url(&self) -> String {
        self.session.lock().await.instance_url.clone()
    }

    /// Re-authenticates unless another task already did since `generation`.
    async fn reauthenticate(&self, generation: u64) -> Result<(), SfError> {
        let mut s = self.session.lock().await;
        if s.generation != generation {
            return Ok(());
        }
        tracing::info!("Salesforce session expired; re-authenticating");
        let tokens = Self::login(
            &self.http,
            &self.clock,
            &self.settings.auth,
            self.token_store.as_ref(),
        )
        .await?;
        s.access_token = Secret::new(tokens.access_token);
        s.instance_url = tokens.instance_url.trim_end_matches('/').to_string();
        s.generation += 1;
        Ok(())
    }

    /// The budget as of now.
    pub fn budget(&self) -> Budget {
        let now = self.clock.now();
        let mut b = lock(&self.budget);
        Budget {
            used_by_ferry: b.used(now),
            org_used: b.org_used,
            org_max: b.org_max,
            daily_budget: self.settings.daily_budget,
        }
    }

    /// Calls ferry made in the rolling 24 h window.
    pub fn calls_made(&self) -> u64 {
        lock(&self.budget).used(self.clock.now())
    }

    /// When ferry's calls in the window were made, for the engine to persist.
    pub fn call_log(&self) -> Vec<DateTime<Utc>> {
        lock(&self.budget).calls.iter().copied().collect()
    }

    /// Restores calls made by earlier runs (from the state store).
    pub fn restore_call_log(&self, calls: impl IntoIterator<Item = DateTime<Utc>>) {
        let mut b = lock(&self.budget);
        b.calls.extend(calls);
        b.calls.make_contiguous().sort();
    }

    fn url_for(&self, instance: &str, path: &str) -> String {
        if path.starts_with("/services/") {
            format!("{instance}{path}")
        } else {
            format!(
                "{instance}/services/data/v{}{path}",
                self.settings.api_version
            )
        }
    }

    /// Sends one API call: budget check, bearer token, limit-header bookkeeping, and one
    /// re-authentication on INVALID_SESSION_ID. `path` is relative to the versioned data
    /// root, or absolute from `/services/`.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Body>,
        idempotent: bool,
    ) -> Result<Response, SfError> {
        let mut reauthed = false;
        loop {
            {
                let now = self.clock.now();
                lock(&self.budget).check(now, self.settings.daily_budget)?;
            }
            let (token, instance, generation) = {
                let s = self.session.lock().await;
                (s.access_token.clone(), s.instance_url.clone(), s.generation)
            };
            let mut req = Request::new(
                Service::Salesforce,
                method.clone(),
                self.url_for(&instance, path),
            )
            .bearer(token.expose())
            .idempotent(idempotent);
            match body {
                Some(Body::Json(v)) => req = req.json(v),
                Some(Body::Csv(text)) => {
                    req.body = Some(bytes::Bytes::from(text.clone()));
                    req = req.header("Content-Type", "text/csv");
                }
                None => {}
            }
            let resp = self.http.send(req).await?;
            {
                let now = self.clock.now();
                let mut b = lock(&self.budget);
                b.record(now);
                if let Some((used, max)) =
                    resp.header("sforce-limit-info").and_then(parse_limit_info)
                {
                    b.org_reading(used, max, now);
                }
            }
            if resp.status == 401 {
                let e = api_error(&resp);
                if e.code() == Some("INVALID_SESSION_ID") || e.code().is_none() {
                    if reauthed {
                        return Err(SfError::SessionInvalid);
                    }
                    self.reauthenticate(generation).await?;
                    reauthed = true;
                    continue;
                }
                return Err(e);
            }
            if resp.status == 403 {
                let e = api_error(&resp);
                if let SfError::Api { code, message, .. } = &e
                    && code == "REQUEST_LIMIT_EXCEEDED"
                {
                    return Err(SfError::RequestLimitExceeded {
                        message: message.clone(),
                    });
                }
                return Err(e);
            }
            return Ok(resp);
        }
    }

    /// An sObject's describe, cached for the connector's life.
    pub async fn describe(&self, sobject: &str) -> Result<Arc<Describe>, SfError> {
        let key = sobject.to_ascii_lowercase();
        if let Some(d) = lock(&self.describes).get(&key) {
            return Ok(d.clone());
        }
        let path = format!("/sobjects/{}/describe", enc(sobject));
        let resp = self.send(Method::GET, &path, None, true).await?;
        if resp.status == 404 {
            return Err(SfError::Api {
                status: 404,
                code: "NOT_FOUND".into(),
                message: format!("this org has no sObject named {sobject}"),
            });
        }
        if !resp.is_success() {
            return Err(api_error(&resp));
        }
        let d: Describe = resp.json().map_err(|_| SfError::Malformed {
            what: format!("the describe of {sobject}"),
        })?;
        let d = Arc::new(d);
        lock(&self.describes).insert(key, d.clone());
        Ok(d)
    }

    /// The id prefix (`keyPrefix`) of every object of the org, by lower-case object name,
    /// from one global describe (`GET /sobjects`), cached for the connector's life.
    pub async fn key_prefixes(&self) -> Result<Arc<HashMap<String, String>>, SfError> {
        if let Some(p) = lock(&self.key_prefixes).as_ref() {
            return Ok(p.clone());
        }
        let resp = self.send(Method::GET, "/sobjects", None, true).await?;
        if !resp.is_success() {
            return Err(api_error(&resp));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Global {
            #[serde(default)]
            sobjects: Vec<Basic>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Basic {
            name: String,
            #[serde(default)]
            key_prefix: Option<String>,
        }
        let g: Global = resp.json().map_err(|_| SfError::Malformed {
            what: "the global describe (the org's object list)".into(),
        })?;
        let map: HashMap<String, String> = g
            .sobjects
            .into_iter()
            // A prefix is three characters; anything else the server says is not used.
            .filter_map(|o| {
                o.key_prefix
                    .filter(|p| p.len() == 3 && p.chars().all(|c| c.is_ascii_alphanumeric()))
                    .map(|p| (o.name.to_ascii_lowercase(), p))
            })
            .collect();
        let map = Arc::new(map);
        *lock(&self.key_prefixes) = Some(map.clone());
        Ok(map)
    }

    /// Forgets a cached describe (after INVALID_FIELD errors, or on reload).
    pub fn invalidate_describe(&self, sobject: &str) {
        lock(&self.describes).remove(&sobject.to_ascii_lowercase());
    }

    /// Checks the fields a pipeline names against describe: each exists, is writable as the
    /// action needs, and an upsert key is an external id.
    pub async fn check_fields(
        &self,
        sobject: &str,
        action: FieldAction,
        fields: &[&str],
        key: Option<&str>,
    ) -> Vec<FieldProblem> {
        let problem = |field: &str, kind: FieldProblemKind, message: String| FieldProblem {
            sobject: sobject.to_string(),
            field: field.to_string(),
            kind,
            message,
        };
        let d = match self.describe(sobject).await {
            Ok(d) => d,
            Err(SfError::Api { status: 404, .. }) => {
                return vec![problem(
                    "",
                    FieldProblemKind::UnknownObject,
                    format!("Salesforce has no object named {sobject}"),
                )];
            }
            Err(e) => {
                return vec![problem(
                    "",
                    FieldProblemKind::DescribeFailed,
                    format!("cannot describe {sobject}: {e}"),
                )];
            }
        };
        let mut out = Vec::new();
        let mut names: Vec<&str> = fields.to_vec();
        if let Some(k) = key
            && !names.iter().any(|n| n.eq_ignore_ascii_case(k))
        {
            names.push(k);
        }
        for name in names {
            let Some(f) = d.field(name) else {
                let suggestion = d
                    .fields
                    .iter()
                    .map(|f| {
                        (
                            strsim::jaro_winkler(&f.name.to_lowercase(), &name.to_lowercase()),
                            &f.name,
                        )
                    })
                    .filter(|(s, _)| *s > 0.85)
                    .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
                    .map(|(_, n)| n.clone());
                let hint = suggestion
                    .as_ref()
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_default();
                out.push(problem(
                    name,
                    FieldProblemKind::UnknownField { suggestion },
                    format!("{} has no field {name}{hint}", d.name),
                ));
                continue;
            };
            let is_key = key.is_some_and(|k| k.eq_ignore_ascii_case(name));
            let needs_create = matches!(
                action,
                FieldAction::Insert | FieldAction::Upsert | FieldAction::Publish
            );
            let needs_update =
                matches!(action, FieldAction::Update | FieldAction::Upsert) && !is_key;
            if needs_create && !f.createable && !(is_key && f.name == "Id") {
                out.push(problem(
                    &f.name,
                    FieldProblemKind::NotCreateable,
                    format!(
                        "{}.{} cannot be set when creating a record (not createable)",
                        d.name, f.name
                    ),
                ));
            }
            if needs_update && !f.updateable && !(f.name == "Id" && action == FieldAction::Update) {
                out.push(problem(
                    &f.name,
                    FieldProblemKind::NotUpdateable,
                    format!(
                        "{}.{} cannot be changed on an existing record (not updateable)",
                        d.name, f.name
                    ),
                ));
            }
            if is_key && action == FieldAction::Upsert && !f.external_id && f.name != "Id" {
                let why = if f.id_lookup {
                    " (it is an idLookup field but not a unique external id; matching can return several records)"
                } else {
                    ""
                };
                out.push(problem(
                    &f.name,
                    FieldProblemKind::NotExternalId,
                    format!(
                        "{}.{} is not marked External ID, so it cannot be an upsert key{why}",
                        d.name, f.name
                    ),
                ));
            }
        }
        out
    }

    /// Runs a SOQL query and follows `nextRecordsUrl` to the end. Records lose their
    /// `attributes` envelope.
    pub async fn query_all(&self, soql: &str) -> Result<Vec<Value>, SfError> {
        let mut all = self.query_many(&[soql.to_string()]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// The URI path a data call uses for `path` (relative to the versioned root, or
    /// absolute from `/services/`).
    fn data_path(&self, path: &str) -> String {
        if path.starts_with("/services/") {
            path.to_string()
        } else {
            format!("/services/data/v{}{path}", self.settings.api_version)
        }
    }

    /// The bytes of a GET of `path` as the request-size limit counts them: URI, ferry's
    /// Authorization header, and what the HTTP stack adds.
    pub(crate) async fn get_request_bytes(&self, path: &str) -> usize {
        let token = self.session.lock().await.access_token.expose().len();
        self.data_path(path)
            .len()
            .saturating_add("authorization: Bearer \r\n".len() + token)
            .saturating_add(STACK_HEADER_BYTES)
    }

    /// Runs several SOQL queries, following `nextRecordsUrl` to the end of each; answers
    /// the rows of each query, in order. Rounds of up to five pending pages travel in one
    /// Composite call (one API call); a round of one is a plain GET. Each query must fit a
    /// GET within `max_request_bytes` (see [`Self::get_request_bytes`]): that keeps every
    /// subrequest url within Salesforce's URI limit too.
    pub async fn query_many(&self, queries: &[String]) -> Result<Vec<Vec<Value>>, SfError> {
        let mut out: Vec<Vec<Value>> = vec![Vec::new(); queries.len()];
        for q in queries {
            let chars = q.chars().count();
            if chars > MAX_SOQL_CHARS {
                return Err(SfError::Config {
                    message: format!(
                        "a SOQL query of {chars} characters is longer than Salesforce's {MAX_SOQL_CHARS}"
                    ),
                });
            }
        }
        let mut pending: Vec<(usize, String)> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| (i, format!("/query?q={}", enc_query(q))))
            .collect();
        // nextRecordsUrl values already followed: one that comes again would loop forever.
        let mut followed = std::collections::BTreeSet::new();
        let mut pages_read = 0u32;
        while !pending.is_empty() {
            pages_read =
                pages_read.saturating_add(u32::try_from(pending.len()).unwrap_or(u32::MAX));
            if pages_read > MAX_QUERY_PAGES {
                return Err(SfError::Malformed {
                    what: format!(
                        "a query that did not end after {MAX_QUERY_PAGES} pages (nextRecordsUrl never runs out)"
                    ),
                });
            }
            let mut next = Vec::new();
            for round in pending.chunks(COMPOSITE_QUERIES) {
                let pages = if let [(_, path)] = round {
                    vec![self.get_page(path).await?]
                } else {
                    let paths: Vec<&str> = round.iter().map(|(_, p)| p.as_str()).collect();
                    self.composite_pages(&paths).await?
                };
                for ((i, _), page) in round.iter().zip(pages) {
                    if let Some(rows) = out.get_mut(*i) {
                        rows.extend(page.records.into_iter().map(strip_attributes));
                    }
                    if let Some(url) = page.next_records_url.filter(|_| !page.done) {
                        if !followed.insert(url.clone()) {
                            return Err(SfError::Malformed {
                                what: format!(
                                    "a query result page whose nextRecordsUrl repeats one already followed (after {pages_read} pages)"
                                ),
                            });
                        }
                        next.push((*i, url));
                    }
                }
            }
            pending = next;
        }
        Ok(out)
    }

    async fn get_page(&self, path: &str) -> Result<QueryPage, SfError> {
        let resp = self.send(Method::GET, path, None, true).await?;
        if !resp.is_success() {
            return Err(api_error(&resp));
        }
        resp.json().map_err(|_| SfError::Malformed {
            what: "a query result page".into(),
        })
    }

    /// GETs of query pages as the subrequests of one Composite call, answered in order.
    async fn composite_pages(&self, paths: &[&str]) -> Result<Vec<QueryPage>, SfError> {
        let subs: Vec<Value> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::json!({"method": "GET", "url": self.data_path(p), "referenceId": format!("q{i}")})
            })
            .collect();
        let body = Body::Json(serde_json::json!({"allOrNone": false, "compositeRequest": subs}));
        // Only reads: sending it again is safe.
        let resp = self
            .send(Method::POST, "/composite", Some(&body), true)
            .await?;
        if !resp.is_success() {
            return Err(api_error(&resp));
        }
        let answer: CompositeAnswer = resp.json().map_err(|_| SfError::Malformed {
            what: "the Composite response".into(),
        })?;
        let mut pages = Vec::with_capacity(paths.len());
        for i in 0..paths.len() {
            let reference = format!("q{i}");
            let sub = answer
                .composite_response
                .iter()
                .find(|s| s.reference_id == reference)
                .ok_or_else(|| SfError::Malformed {
                    what: format!("a Composite response without subrequest {reference}"),
                })?;
            if !(200..300).contains(&sub.http_status_code) {
                return Err(error_from_body(sub.http_status_code, &sub.body));
            }
            let page: QueryPage =
                serde_json::from_value(sub.body.clone()).map_err(|_| SfError::Malformed {
                    what: "a query result page in a Composite response".into(),
                })?;
            pages.push(page);
        }
        Ok(pages)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompositeAnswer {
    #[serde(default)]
    composite_response: Vec<CompositeSub>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompositeSub {
    #[serde(default)]
    body: Value,
    #[serde(default)]
    http_status_code: u16,
    #[serde(default)]
    reference_id: String,
}

/// The most pages one `query_all` follows (20,000,000 records at 2,000 a page).
const MAX_QUERY_PAGES: u32 = 10_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage {
    #[serde(default)]
    done: bool,
    #[serde(default)]
    next_records_url: Option<String>,
    #[serde(default)]
    records: Vec<Value>,
}

fn strip_attributes(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("attributes");
    }
    v
}

/// Percent-encoding for path segments and query values: everything but unreserved
/// characters, so `/`, `+`, `@` and spaces in external-id values survive.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one URL component as ferry sends it (the benchmark measures queries with it).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// Encoding for a query-string value (SOQL in `?q=`), as short as is safe: a space is `+`,
/// and the characters a query component may carry as they are (`@`, `,`, `(`, `)`, `=`,
/// `:`, `/`, `!`, `*`, `;`, `$`) stay; `'` is encoded, as HTTP stacks do for http(s) URLs
/// anyway, so the length measured is the length sent.
pub fn enc_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'@'
            | b','
            | b'('
            | b')'
            | b'='
            | b':'
            | b'/'
            | b'!'
            | b'*'
            | b';'
            | b'$' => out.push(char::from(b)),
            other => {
                out.push('%');
                out.push_str(&format!("{other:02X}"));
            }
        }
    }
    out
}

/// Turns a top-level REST error (an array of `{message, errorCode, fields}`) into an
/// [`SfError`]; accepts `statusCode` too, as per-record bodies use it.
pub(crate) fn api_error(resp: &Response) -> SfError {
    let first = resp
        .json::<Value>()
        .ok()
        .and_then(|v| match v {
            Value::Array(mut a) if !a.is_empty() => Some(a.swap_remove(0)),
            Value::Object(m) => Some(Value::Object(m)),
            _ => None,
        })
        .unwrap_or(Value::Null);
    let code = first
        .get("errorCode")
        .or_else(|| first.get("statusCode"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let message = first
        .get("message")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| format!("HTTP {} with body {:?}", resp.status, snippet(&resp.text())));
    if code.is_empty() && resp.status == 401 {
        return SfError::Api {
            status: 401,
            code: String::new(),
            message,
        };
    }
    SfError::Api {
        status: resp.status,
        code: if code.is_empty() {
            format!("HTTP_{}", resp.status)
        } else {
            code
        },
        message,
    }
}

/// An error from a Composite subrequest's body (the REST error envelope).
fn error_from_body(status: u16, body: &Value) -> SfError {
    let first = match body {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let code = first
        .get("errorCode")
        .or_else(|| first.get("statusCode"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("HTTP_{status}"), String::from);
    let message = first
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| format!("HTTP {status}"), snippet);
    SfError::Api {
        status,
        code,
        message,
    }
}

fn snippet(s: &str) -> String {
    s.chars().take(200).collect()
}
