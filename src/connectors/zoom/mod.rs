//! The Zoom connector: auth, the stream catalog (data), paging, windows, webhooks.
//!
//! The engine calls [`ZoomConnector::read`] for a pipeline's source, [`ZoomConnector::fetch_all`]
//! for enrich child reads and [`ZoomConnector::fetch_one`] for webhook-triggered single records.
//! It never needs to know Zoom's paths, paging or error codes: those live in `catalog.yaml`.

pub mod auth;
pub mod authorize;
pub(crate) mod catalog;
pub mod limits;
mod read;
pub(crate) mod sink;
pub(crate) mod subject;
pub mod webhook;

pub use crate::connectors::tokens::StoreTokens;
pub use auth::{MemoryTokenStore, Secret, TokenStore, TokenStoreError, ZoomAuth};
pub use authorize::{AuthorizeError, AuthorizeSettings, PendingAuthorization};
pub use catalog::{StreamDef, ZoomCatalog, catalog};
pub use limits::{ZoomPlan, rate_limits};
pub use webhook::{Event, WebhookError, url_validation_response, verify_webhook};

use crate::http::{HttpClient, HttpError, Method, Request, Service};
use chrono::{DateTime, Utc};
use futures::Stream;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use read::{Listing, ReadState};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Settings of one Zoom connection.
#[derive(Debug, Clone)]
pub struct ZoomSettings {
    /// `https://api.zoom.us/v2` unless a region or the simulator says otherwise.
    pub base_url: String,
    /// `https://zoom.us/oauth/token`.
    pub token_url: String,
    pub auth: ZoomAuth,
    pub plan: ZoomPlan,
    /// Share of the plan's published limits ferry allows itself (0 < headroom ≤ 1).
    pub headroom: f64,
    pub webhook_secret: Option<Secret>,
}

pub const DEFAULT_BASE_URL: &str = "https://api.zoom.us/v2";
pub const DEFAULT_TOKEN_URL: &str = "https://zoom.us/oauth/token";

/// A batch of records from one partition.
///
/// A read yields its partitions one after another; a partition's pages are consecutive and
/// its last page has `partition_done`. Streams without a cursor yield one page per API page
/// (possibly empty). Incremental streams yield records in cursor order (ties broken by
/// primary key) across all pages of a partition, at most a few hundred records per page
/// (records sharing one cursor value are never split across pages).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The partition key (`user_id` for fanned-out streams), "" for unpartitioned streams.
    pub partition: String,
    pub records: Vec<Value>,
    /// Incremental streams only (None otherwise): the checkpoint the partition may advance
    /// to once this page's records and every earlier page's are acknowledged. Exactly:
    /// every record of this read whose cursor value is before `cursor` is on this page or
    /// an earlier one, and no later page of the partition carries a smaller `cursor`.
    /// It is never before the partition's checkpoint (a lookback re-read does not move it
    /// back), never after the window's `until`, and never after `now - settle` for streams
    /// whose records can appear late. The last page of a partition whose window completed
    /// carries the window end (`until`, or `now - settle`), even with no records, so a
    /// quiet partition still advances. A record whose cursor equals `cursor` may come again
    /// on the next read; the ledger makes that free. RFC 3339 UTC, whole seconds.
    pub cursor: Option<String>,
    /// No more pages follow for this partition in this read.
    pub partition_done: bool,
}

/// A partition's checkpoint, if it has one.
pub type CheckpointFn = Arc<dyn Fn(&str) -> Option<DateTime<Utc>> + Send + Sync>;

/// Where an incremental read starts (per partition) and ends.
#[derive(Clone)]
pub struct ReadWindow {
    /// The checkpoint of a partition, or None for a partition never read.
    pub since: CheckpointFn,
    /// Start for partitions with no checkpoint.
    pub default_since: DateTime<Utc>,
    /// Re-read this much before each checkpoint.
    pub lookback: chrono::Duration,
    pub until: DateTime<Utc>,
}

impl ReadWindow {
    /// One start for every partition.
    pub fn fixed(since: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        Self {
            since: Arc::new(|_| None),
            default_since: since,
            lookback: chrono::Duration::zero(),
            until,
        }
    }
    /// Per-partition checkpoints from a map.
    pub fn checkpoints(
        map: BTreeMap<String, DateTime<Utc>>,
        default_since: DateTime<Utc>,
        lookback: chrono::Duration,
        until: DateTime<Utc>,
    ) -> Self {
        Self {
            since: Arc::new(move |p| map.get(p).copied()),
            default_since,
            lookback,
            until,
        }
    }
    pub(crate) fn start_for(&self, partition: &str) -> DateTime<Utc> {
        match (self.since)(partition) {
            Some(checkpoint) => checkpoint - self.lookback,
            None => self.default_since,
        }
    }
}

impl std::fmt::Debug for ReadWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadWindow")
            .field("default_since", &self.default_since)
            .field("lookback", &self.lookback)
            .field("until", &self.until)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZoomError {
    #[error("no Zoom stream named `{0}`; `ferry streams` lists them")]
    UnknownStream(String),
    #[error("stream `{stream}` needs the parameter `{param}`")]
    MissingParam { stream: String, param: String },
    #[error("stream `{stream}`: {message}")]
    BadParam { stream: String, message: String },
    #[error("Zoom authentication failed: {0}")]
    Auth(#[from] auth::AuthError),
    #[error(
        "Zoom answered HTTP {status}{} on {path}: {message}{}",
        code_words(*code),
        tracking_words(tracking_id.as_deref())
    )]
    Api {
        status: u16,
        code: Option<i64>,
        message: String,
        path: String,
        tracking_id: Option<String>,
    },
    #[error("not found on {path}{}: {message}", code_words(*code))]
    NotFound {
        code: Option<i64>,
        message: String,
        path: String,
    },
    #[error("Zoom response on {path} is malformed: {message}")]
    Malformed { path: String, message: String },
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// " (code 300)", or nothing when Zoom sent no code.
fn code_words(code: Option<i64>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

/// " (tracking id X)", or nothing when Zoom sent none.
fn tracking_words(id: Option<&str>) -> String {
    id.map(|t| format!(" (tracking id {t})"))
        .unwrap_or_default()
}

impl ZoomError {
    /// The rate-limit daily cap is spent: checkpoint and stop, resume after it resets.
    pub fn is_daily_limit(&self) -> bool {
        matches!(self, ZoomError::Http(HttpError::DailyLimit { .. }))
    }
    /// The app's token lacks a scope the endpoint needs (code 4711 or 4700): a
    /// configuration error, fatal for the stream, never retried.
    pub fn is_missing_scope(&self) -> bool {
        matches!(
            self,
            ZoomError::Api {
                code: Some(4711 | 4700),
                ..
            }
        )
    }
}

/// `optional: true` in an enrich: the API's "not found" becomes None.
pub fn optional<T>(r: Result<T, ZoomError>) -> Result<Option<T>, ZoomError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ZoomError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Everything but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes one path segment; a UUID that starts with '/' or contains '//' is encoded twice,
/// as Zoom requires (a single-encoded one answers 404).
pub fn encode_path_value(v: &str) -> String {
    let once = utf8_percent_encode(v, SEGMENT).to_string();
    if v.starts_with('/') || v.contains("//") {
        utf8_percent_encode(&once, SEGMENT).to_string()
    } else {
        once
    }
}

fn param_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Params the `request` stream uses itself rather than sending as query parameters.
const REQUEST_CONTROL: &[&str] = &["path", "method", "record_selector"];

/// The JSONPath to a stream's records: the catalog's, or for `request` its
/// `record_selector` param (and only GET reads).
pub(crate) fn selector_for(
    def: &StreamDef,
    params: &BTreeMap<String, Value>,
) -> Result<String, ZoomError> {
    if def.name != "request" {
        return Ok(def.selector.clone());
    }
    if let Some(m) = params.get("method").map(param_text) {
        if !m.eq_ignore_ascii_case("GET") {
            return Err(ZoomError::BadParam {
                stream: def.name.clone(),
                message: format!("method {m} is not supported for reads (GET only)"),
            });
        }
    }
    Ok(params
        .get("record_selector")
        .map(param_text)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| def.selector.clone()))
}

/// The Zoom source connector. Cheap to clone.
#[derive(Clone)]
pub struct ZoomConnector {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ZoomSettings,
    http: HttpClient,
    tokens: auth::TokenCache,
    /// Partition labels learned by reads (scope, id) → label, until taken to the state.
    labels: std::sync::Mutex<BTreeMap<(String, String), String>>,
}

impl ZoomConnector {
    pub fn new(cfg: ZoomSettings, http: HttpClient, tokens: Arc<dyn TokenStore>) -> Self {
        http.set_rate_limits(Service::Zoom, rate_limits(cfg.plan, cfg.headroom));
        let cache = auth::TokenCache::new(
            cfg.auth.clone(),
            cfg.token_url.clone(),
            http.clone(),
            tokens,
        );
        Self {
            inner: Arc::new(Inner {
                settings: cfg,
                http,
                tokens: cache,
                labels: std::sync::Mutex::new(BTreeMap::new()),
            }),
        }
    }

    pub fn catalog(&self) -> &'static ZoomCatalog {
        catalog()
    }

    /// The partition labels reads learned since the last call (scope `zoom.<stream>`, id,
    /// label), for the caller to keep in the state; the status page shows them in place of
    /// bare ids.
    pub fn take_partition_labels(&self) -> BTreeMap<String, Vec<(String, String)>> {
        let taken =
            std::mem::take(&mut *self.inner.labels.lock().unwrap_or_else(|e| e.into_inner()));
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for ((scope, id), label) in taken {
            out.entry(scope).or_default().push((id, label));
        }
        out
    }

    /// Remembers `label_field` of each parent record under its `id_field` (both bounded: a
    /// label is at most [`crate::state::MAX_LABEL_CHARS`] characters, at most
    /// [`crate::state::MAX_LABELS_PER_SCOPE`] are held).
    fn learn_labels(&self, over: &str, id_field: &str, label_field: &str, parent: &[Value]) {
        let scope = format!("zoom.{over}");
        let mut held = self.inner.labels.lock().unwrap_or_else(|e| e.into_inner());
        for r in parent {
            if held.len() >= crate::state::MAX_LABELS_PER_SCOPE {
                break;
            }
            let (Some(id), Some(label)) = (
                r.get(id_field).map(param_text),
                r.get(label_field).and_then(Value::as_str),
            ) else {
                continue;
            };
            if id.is_empty() || label.trim().is_empty() {
                continue;
            }
            let label: String = label
                .trim()
                .chars()
                .take(crate::state::MAX_LABEL_CHARS)
                .collect();
            held.insert((scope.clone(), id), label);
        }
    }

    pub fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    pub fn settings(&self) -> &ZoomSettings {
        &self.inner.settings
    }

    fn def(&self, stream: &str) -> Result<&'static StreamDef, ZoomError> {
        catalog()
            .get(stream)
            .ok_or_else(|| ZoomError::UnknownStream(stream.to_string()))
    }

    /// Reads a stream: partitions one after another, each in cursor order, incremental
    /// streams window by window from the partition's checkpoint minus lookback to `until`.
    pub fn read(
        &self,
        stream: &str,
        params: &BTreeMap<String, Value>,
        window: ReadWindow,
    ) -> impl Stream<Item = Result<Page, ZoomError>> + Send + 'static {
        let state = ReadState::new(self.clone(), stream, params, window);
        futures::stream::unfold(state, |mut st| async move {
            st.next().await.map(|page| (page, st))
        })
    }

    /// Every record of a stream for these params, all pages (enrich child reads). The API's
    /// "no data" codes give `ZoomError::NotFound` (see [`optional`]).
    pub async fn fetch_all(
        &self,
        stream: &str,
        params: &BTreeMap<String, Value>,
    ) -> Result<Vec<Value>, ZoomError> {
        let def = self.def(stream)?;
        let path = self.fill_path(def, &def.path, params)?;
        let query = self.query_for(def, params);
        let selector = selector_for(def, params)?;
        self.list(def, &path, &query, &def.category, &selector)
            .await
    }

    /// Whether an enrich of `stream` with these params gives one record (the whole body)
    /// rather than a list: `zoom.request` with a `record_selector` gives a list.
    pub fn single_record(stream: &str, params: &BTreeMap<String, Value>) -> bool {
        catalog().get(stream).is_some_and(|d| {
            selector_for(d, params)
                .map(|s| s.trim() == "$")
                .unwrap_or(false)
        })
    }

    /// One record by its key (webhook triggers). "No data" codes give None.
    pub async fn fetch_one(
        &self,
        stream: &str,
        params: &BTreeMap<String, Value>,
    ) -> Result<Option<Value>, ZoomError> {
        let def = self.def(stream)?;
        let Some(single) = &def.single else {
            return Err(ZoomError::BadParam {
                stream: stream.into(),
                message: "this stream has no single-record fetch".into(),
            });
        };
        let path = self.fill_path(def, &single.path, params)?;
        match self
            .get_json(&def.bucket(&single.category), &path, &[], &def.no_data)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(ZoomError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn fill_path(
        &self,
        def: &StreamDef,
        template: &str,
        params: &BTreeMap<String, Value>,
    ) -> Result<String, ZoomError> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close =
                rest[open..]
                    .find('}')
                    .map(|c| open + c)
                    .ok_or_else(|| ZoomError::BadParam {
                        stream: def.name.clone(),
                        message: format!("bad path template {template}"),
                    })?;
            let name = &rest[open + 1..close];
            let value = params
                .get(name)
                .map(param_text)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ZoomError::MissingParam {
                    stream: def.name.clone(),
                    param: name.to_string(),
                })?;
            if def.name == "request" && name == "path" {
                if !value.starts_with('/') || value.contains("://") {
                    return Err(ZoomError::BadParam {
                        stream: def.name.clone(),
                        message: "path must be an API path starting with '/'".into(),
                    });
                }
                out.push_str(&value);
            } else {
                out.push_str(&encode_path_value(&value));
            }
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn query_for(
        &self,
        def: &StreamDef,
        params: &BTreeMap<String, Value>,
    ) -> Vec<(String, String)> {
        let mut q: BTreeMap<String, String> = def.query.clone();
        for (k, v) in params {
            let in_path = def.path.contains(&format!("{{{k}}}"));
            let control = def.name == "request" && REQUEST_CONTROL.contains(&k.as_str());
            if in_path || control {
                continue;
            }
            if def.params.contains(k) || def.name == "request" || k == "from" || k == "to" {
                q.insert(k.clone(), param_text(v));
            }
        }
        q.into_iter().collect()
    }

    /// All pages of a listing. An expired page token restarts the listing once; records are
    /// deduplicated by primary key.
    async fn list(
        &self,
        def: &'static StreamDef,
        path: &str,
        query: &[(String, String)],
        category: &str,
        sel: &str,
    ) -> Result<Vec<Value>, ZoomError> {
        let mut listing = Listing::new(
            def,
            path.to_string(),
            query.to_vec(),
            category,
            sel.to_string(),
        );
        let mut records = Vec::new();
        while let Some(page) = listing.next_page(self).await? {
            records.extend(page);
        }
        Ok(records)
    }

    /// One GET with the bearer token; a 401 code 124 renews the token once.
    async fn get_json(
        &self,
        bucket: &str,
        path: &str,
        query: &[(String, String)],
        no_data: &[i64],
    ) -> Result<Value, ZoomError> {
        let base = self.inner.settings.base_url.trim_end_matches('/');
        let mut url = format!("{base}{path}");
        if !query.is_empty() {
            let qs = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            url.push('?');
            url.push_str(&qs);
        }
        let mut renewed = false;
        let mut malformed = 0;
        loop {
            let token = self.inner.tokens.token().await?;
            let req = Request::new(Service::Zoom, Method::GET, &url)
                .bearer(token.expose())
                .category(bucket);
            let resp = self.inner.http.send(req).await?;
            if resp.is_success() {
                match resp.json() {
                    Ok(v) => return Ok(v),
                    // A truncated body is a transient fault of a GET: ask again a few times.
                    Err(_) if malformed < 3 => {
                        malformed += 1;
                        continue;
                    }
                    Err(e) => {
                        return Err(ZoomError::Malformed {
                            path: path.to_string(),
                            message: e.to_string(),
                        });
                    }
                }
            }
            let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
            let code = body.get("code").and_then(Value::as_i64);
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if resp.status == 401 && code == Some(124) && !renewed {
                renewed = true;
                self.inner.tokens.invalidate(&token).await;
                continue;
            }
            let is_no_data = code.is_some_and(|c| no_data.contains(&c))
                || (resp.status == 404 && code.is_none());
            if is_no_data {
                return Err(ZoomError::NotFound {
                    code,
                    message,
                    path: path.to_string(),
                });
            }
            return Err(ZoomError::Api {
                status: resp.status,
                code,
                message,
                path: path.to_string(),
                tracking_id: resp.header("x-zm-trackingid").map(str::to_string),
            });
        }
    }

    async fn partitions(
        &self,
        def: &StreamDef,
        params: &BTreeMap<String, Value>,
    ) -> Result<Vec<String>, ZoomError> {
        let Some(p) = &def.partition else {
            return Ok(vec![String::new()]);
        };
        match params.get(&p.param).map(param_text) {
            Some(v) if v != "all" => Ok(vec![v]),
            _ => {
                let parent = self.fetch_all(&p.over, &BTreeMap::new()).await?;
                if let Some(label) = &p.label {
                    self.learn_labels(&p.over, &p.field, label, &parent);
                }
                Ok(parent
                    .iter()
                    .filter_map(|r| r.get(&p.field).map(param_text))
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_carry_no_debug_formatting() {
        let e = ZoomError::Api {
            status: 400,
            code: Some(300),
            message: "The next page token is invalid or expired.".into(),
            path: "/report/meetings".into(),
            tracking_id: Some("sim-18".into()),
        };
        assert_eq!(
            e.to_string(),
            "Zoom answered HTTP 400 (code 300) on /report/meetings: The next page token is \
             invalid or expired. (tracking id sim-18)"
        );
        let bare = ZoomError::Api {
            status: 502,
            code: None,
            message: "bad gateway".into(),
            path: "/users".into(),
            tracking_id: None,
        };
        assert_eq!(
            bare.to_string(),
            "Zoom answered HTTP 502 on /users: bad gateway"
        );
        let nf = ZoomError::NotFound {
            code: Some(3001),
            message: "Meeting does not exist".into(),
            path: "/meetings/1".into(),
        };
        assert_eq!(
            nf.to_string(),
            "not found on /meetings/1 (code 3001): Meeting does not exist"
        );
        for text in [e.to_string(), bare.to_string(), nf.to_string()] {
            assert!(!text.contains("Some(") && !text.contains("None"), "{text}");
        }
    }

    #[test]
    fn uuids_are_double_encoded_only_when_zoom_needs_it() {
        assert_eq!(
            encode_path_value("/ajXp112QmuoKj4854875=="),
            "%252FajXp112QmuoKj4854875%253D%253D"
        );
        assert_eq!(
            encode_path_value("wPUYIy/pR2mPs5r9no2GmA=="),
            "wPUYIy%2FpR2mPs5r9no2GmA%3D%3D"
        );
        assert_eq!(
            encode_path_value("/abc//d=="),
            "%252Fabc%252F%252Fd%253D%253D"
        );
        assert_eq!(encode_path_value("ab//c=="), "ab%252F%252Fc%253D%253D");
        assert_eq!(encode_path_value("85012345678"), "85012345678");
    }
}
