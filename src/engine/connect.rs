//! From a loaded project to live connectors: one HTTP client (so rate limits and metrics are
//! shared), the Zoom source, the Salesforce matcher and writer, tokens kept in the state file.

use super::error::{ConnectorError, ErrorKind};
use super::schema::{FieldKind, FieldSchema, ObjectSchema};
use super::{FetchError, Matcher, ObjectSink, Page, ReadSpec, Source, WriteOp, WriteOutcome};
use crate::clock::SharedClock;
use crate::config::{self, ConnectionKind, Project};
use crate::connectors::salesforce::{self as sf, SalesforceConnector, SalesforceSettings, SfAuth};
use crate::connectors::tokens::StoreTokens;
use crate::connectors::zoom::{self, ReadWindow, ZoomConnector, ZoomSettings};
use crate::http::{HttpClient, HttpError, Service};
use crate::state::Store;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Live connections of a project.
pub struct Connections {
    pub http: HttpClient,
    pub store: Store,
    pub zoom: ZoomSource,
    pub salesforce: SalesforceSink,
    /// Every source kind behind one [`Source`]: what the engine reads pipelines from.
    pub source: Sources,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("ferry.yaml has no {0} connection")]
    Missing(&'static str),
    #[error("opening the state {path}: {message}")]
    State { path: String, message: String },
    #[error("connecting to Salesforce: {0}")]
    Salesforce(String),
}

/// Opens the state file ferry.yaml names.
pub fn open_store(project: &Project, clock: &SharedClock) -> Result<Store, ConnectError> {
    Store::open(&project.config.state)
        .map(|s| s.with_clock(clock.clone()))
        .map_err(|e| ConnectError::State {
            path: crate::state::describe_location(&project.config.state),
            message: e.to_string(),
        })
}

/// Builds the Zoom connector of the project's zoom connection (tokens in `store`).
pub fn zoom_connector(
    project: &Project,
    http: &HttpClient,
    store: &Store,
) -> Result<ZoomConnector, ConnectError> {
    let conn = project
        .config
        .only_connection(ConnectionKind::Zoom)
        .and_then(|c| c.as_zoom())
        .ok_or(ConnectError::Missing("zoom"))?;
    Ok(ZoomConnector::new(
        zoom_settings(conn),
        http.clone(),
        Arc::new(StoreTokens(store.clone())),
    ))
}

/// The connector's settings for a Zoom connection of ferry.yaml.
pub fn zoom_settings(conn: &config::ZoomConnection) -> ZoomSettings {
    let auth = match &conn.auth {
        config::ZoomAuth::ServerToServer {
            account_id,
            client_id,
            client_secret,
        } => zoom::auth::ZoomAuth::ServerToServer {
            account_id: account_id.expose().to_string(),
            client_id: client_id.expose().to_string(),
            client_secret: client_secret.clone(),
        },
        config::ZoomAuth::OAuth {
            client_id,
            client_secret,
            refresh_token,
            ..
        } => zoom::auth::ZoomAuth::OAuth {
            client_id: client_id.expose().to_string(),
            client_secret: client_secret.clone(),
            refresh_token: refresh_token.as_ref().cloned(),
        },
    };
    ZoomSettings {
        base_url: conn.base_url.clone(),
        token_url: conn.token_url.clone(),
        auth,
        plan: match conn.plan {
            config::ZoomPlan::Free => zoom::limits::ZoomPlan::Free,
            config::ZoomPlan::Pro => zoom::limits::ZoomPlan::Pro,
            config::ZoomPlan::Business => zoom::limits::ZoomPlan::Business,
        },
        headroom: conn.headroom,
        webhook_secret: conn.webhook_secret.as_ref().cloned(),
    }
}

/// Each connection's `max_wait`: the longest Retry-After its service may ask for that ferry
/// sleeps through (longer ones end the batch at once).
pub fn set_max_waits(project: &Project, http: &HttpClient) {
    if let Some(z) = project
        .config
        .only_connection(ConnectionKind::Zoom)
        .and_then(|c| c.as_zoom())
    {
        http.set_max_wait(Service::Zoom, z.max_wait);
    }
    if let Some(s) = project
        .config
        .only_connection(ConnectionKind::Salesforce)
        .and_then(|c| c.as_salesforce())
    {
        http.set_max_wait(Service::Salesforce, s.max_wait);
    }
}

/// The Salesforce settings of the project's salesforce connection.
pub fn salesforce_settings(project: &Project) -> Result<SalesforceSettings, ConnectError> {
    let conn = project
        .config
        .only_connection(ConnectionKind::Salesforce)
        .and_then(|c| c.as_salesforce())
        .ok_or(ConnectError::Missing("salesforce"))?;
    let login_url = conn.login_url.clone();
    let auth = match &conn.auth {
        config::SalesforceAuth::JwtBearer {
            client_id,
            username,
            private_key,
        } => SfAuth::JwtBearer {
            login_url,
            client_id: client_id.expose().to_string(),
            username: username.clone(),
            private_key_pem: private_key.clone(),
        },
        config::SalesforceAuth::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
            ..
        } => SfAuth::RefreshToken {
            login_url,
            client_id: client_id.expose().to_string(),
            client_secret: client_secret.as_ref().cloned(),
            refresh_token: sf::auth::Secret::new(
                refresh_token.as_ref().map(|t| t.expose()).unwrap_or(""),
            ),
        },
        config::SalesforceAuth::ClientCredentials {
            client_id,
            client_secret,
        } => SfAuth::ClientCredentials {
            login_url,
            client_id: client_id.expose().to_string(),
            client_secret: client_secret.clone(),
        },
    };
    let mut s = SalesforceSettings::new(auth);
    s.api_version = conn.api_version.clone();
    s.daily_budget = conn.daily_budget;
    if let Some(n) = conn.max_request_bytes {
        s.max_request_bytes = n;
    }
    Ok(s)
}

/// Connects everything the project's pipelines need.
pub async fn connect(project: &Project, clock: SharedClock) -> Result<Connections, ConnectError> {
    let store = open_store(project, &clock)?;
    let http = HttpClient::new(clock);
    connect_with(project, http, store).await
}

/// Connects the project's Zoom and Salesforce connections over an existing HTTP client (its
/// metrics continue; its Zoom pacing is set anew from the plan and headroom) and state file.
/// The daemon uses it when ferry.yaml's connections change.
pub async fn connect_with(
    project: &Project,
    http: HttpClient,
    store: Store,
) -> Result<Connections, ConnectError> {
    let zoom = zoom_connector(project, &http, &store)?;
    set_max_waits(project, &http);
    if std::env::var_os(UNPACED_ENV).is_some_and(|v| v == "1") {
        // Only for simulators whose limits are lifted (the benchmarks' CPU and memory runs):
        // ferry keeps its concurrency and still honours 429s, but stops pacing to the plan.
        tracing::warn!("{UNPACED_ENV}=1: Zoom requests are not paced to the plan's limits");
        http.set_rate_limits(
            Service::Zoom,
            crate::http::RateLimits {
                max_concurrency: 8,
                ..Default::default()
            },
        );
    }
    let settings = salesforce_settings(project)?;
    let sfc = SalesforceConnector::connect_with_store(
        settings,
        http.clone(),
        Some(Arc::new(StoreTokens(store.clone()))),
    )
    .await
    .map_err(|e| ConnectError::Salesforce(e.to_string()))?;
    // ferry's Salesforce spending survives restarts, so daily_budget holds across runs.
    match store.token_get(CALL_LOG).await {
        Ok(Some(t)) => match serde_json::from_str::<Vec<chrono::DateTime<chrono::Utc>>>(&t.value) {
            Ok(calls) => sfc.restore_call_log(calls),
            Err(e) => tracing::warn!(
                "the saved Salesforce call log is unreadable; the daily budget counts from \
                     now: {e}"
            ),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "could not read the saved Salesforce call log; the daily budget counts from now: {e}"
        ),
    }
    let sfc = Arc::new(sfc);
    let zoom = ZoomSource { conn: zoom };
    Ok(Connections {
        http: http.clone(),
        store,
        zoom: zoom.clone(),
        salesforce: SalesforceSink {
            conn: sfc.clone(),
            http: http.clone(),
        },
        source: Sources {
            zoom,
            salesforce: SalesforceSource { conn: sfc, http },
        },
    })
}

const CALL_LOG: &str = "salesforce:call_log";

/// Set to `1` to stop pacing Zoom requests to the plan's published limits. For simulators
/// only: a real account answers the excess with 429s.
pub const UNPACED_ENV: &str = "FERRY_ZOOM_UNPACED";

impl Connections {
    /// Saves ferry's Salesforce call log (for the rolling daily budget).
    pub async fn save_budget(&self) {
        let calls = self.salesforce.conn.call_log();
        if let Ok(text) = serde_json::to_string(&calls) {
            if let Err(e) = self.store.token_put(CALL_LOG, &text, None).await {
                tracing::warn!("could not save the Salesforce call log: {e}");
            }
        }
    }

    /// Keeps in the state the partition labels the run's reads learned (a Zoom user id →
    /// the user's email), for the status page.
    pub async fn save_labels(&self) {
        let now = self.http.clock().now();
        for (scope, labels) in self.zoom.conn.take_partition_labels() {
            if let Err(e) = self.store.set_labels(&scope, &labels, now).await {
                tracing::warn!("could not save the partition labels: {e}");
            }
        }
    }
}

/// The Zoom connector as the engine's [`Source`].
#[derive(Clone)]
pub struct ZoomSource {
    pub conn: ZoomConnector,
}

/// How far back Zoom's report and history endpoints reach: six months, less a margin for
/// the windows' lead (a report lists a meeting by its start, the cursor is its end).
pub const ZOOM_HISTORY_DAYS: i64 = 177;

/// The earliest start Zoom serves for a read ending at `until` (see [`ZOOM_HISTORY_DAYS`]).
pub fn zoom_horizon(until: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    until - chrono::Duration::days(ZOOM_HISTORY_DAYS)
}

fn stream_name(s: &str) -> &str {
    s.strip_prefix("zoom.").unwrap_or(s)
}

#[async_trait::async_trait]
impl Source for ZoomSource {
    fn kind(&self) -> &str {
        "zoom"
    }

    fn read(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
        window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, ConnectorError>> {
        // Zoom serves reports and call history for the last six months only; a start
        // further back is answered with an error, so reads begin at that horizon.
        let horizon = zoom_horizon(window.until);
        let floor = horizon + window.lookback;
        let checkpoints = window
            .checkpoints
            .into_iter()
            .map(|(k, v)| (k, v.max(floor)))
            .collect();
        let w = ReadWindow::checkpoints(
            checkpoints,
            window.default_since.max(horizon),
            window.lookback,
            window.until,
        );
        self.conn
            .read(stream_name(stream), &params, w)
            .map(|r| {
                r.map(|p| Page {
                    partition: p.partition,
                    records: p.records,
                    cursor: p.cursor,
                })
                .map_err(|e| zoom_error(&e))
            })
            .boxed()
    }

    async fn fetch(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
    ) -> Result<Value, FetchError> {
        let name = stream_name(stream);
        // One record when the selector is the whole body; `zoom.request` with a
        // `record_selector` gives every record it selects.
        let single = ZoomConnector::single_record(name, &params);
        match self.conn.fetch_all(name, &params).await {
            Ok(list) if single => Ok(list.into_iter().next().unwrap_or(Value::Null)),
            Ok(list) => Ok(Value::Array(list)),
            Err(zoom::ZoomError::NotFound { message, .. }) => Err(FetchError::NotFound(message)),
            Err(e) => Err(FetchError::Failed(zoom_error(&e))),
        }
    }

    fn primary_key(&self, stream: &str) -> Option<String> {
        zoom::catalog::catalog()
            .get(stream_name(stream))
            .map(|d| d.primary_key.clone())
    }

    fn cursor_field(&self, stream: &str) -> Option<String> {
        zoom::catalog::catalog()
            .get(stream_name(stream))
            .and_then(|d| d.cursor.clone())
    }

    fn calls(&self) -> u64 {
        self.conn.http().metrics().requests(Service::Zoom)
    }
}

/// Salesforce as the engine's [`Source`]: the `salesforce.records` stream.
#[derive(Clone)]
pub struct SalesforceSource {
    pub conn: Arc<SalesforceConnector>,
    pub http: HttpClient,
}

#[async_trait::async_trait]
impl Source for SalesforceSource {
    fn kind(&self) -> &str {
        "salesforce"
    }

    fn read(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
        window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, ConnectorError>> {
        if stream != sf::source::STREAM {
            let e = ConnectorError {
                kind: ErrorKind::Fatal,
                message: format!("Salesforce has no stream `{stream}`; it has `records`"),
            };
            return futures::stream::iter([Err(e)]).boxed();
        }
        match sf::source::RecordsQuery::from_params(&params) {
            Ok(q) => self
                .conn
                .read_records(q, window)
                .map(|r| r.map_err(|e| sf_error(&e)))
                .boxed(),
            Err(message) => futures::stream::iter([Err(ConnectorError {
                kind: ErrorKind::Fatal,
                message,
            })])
            .boxed(),
        }
    }

    async fn fetch(
        &self,
        stream: &str,
        _params: BTreeMap<String, Value>,
    ) -> Result<Value, FetchError> {
        Err(FetchError::Failed(ConnectorError {
            kind: ErrorKind::Fatal,
            message: format!("salesforce.{stream} cannot be used to enrich a record"),
        }))
    }

    fn primary_key(&self, _stream: &str) -> Option<String> {
        Some("Id".into())
    }

    fn cursor_field(&self, _stream: &str) -> Option<String> {
        Some("SystemModstamp".into())
    }

    /// Salesforce reads count with the Salesforce calls (the sink's counter).
    fn calls(&self) -> u64 {
        0
    }
}

/// Zoom and Salesforce sources behind one [`Source`], by stream: `records` (the one
/// Salesforce stream, a name no Zoom stream has) reads Salesforce, every other stream Zoom.
/// `calls` counts Zoom's requests; Salesforce reads count with the Salesforce calls.
#[derive(Clone)]
pub struct Sources {
    pub zoom: ZoomSource,
    pub salesforce: SalesforceSource,
}

impl Sources {
    fn of(&self, stream: &str) -> &dyn Source {
        if stream == sf::source::STREAM || stream == "salesforce.records" {
            &self.salesforce
        } else {
            &self.zoom
        }
    }
}

#[async_trait::async_trait]
impl Source for Sources {
    fn kind(&self) -> &str {
        "zoom"
    }

    fn read(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
        window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, ConnectorError>> {
        let s = self.of(stream);
        s.read(
            stream.strip_prefix("salesforce.").unwrap_or(stream),
            params,
            window,
        )
    }

    async fn fetch(
        &self,
        stream: &str,
        params: BTreeMap<String, Value>,
    ) -> Result<Value, FetchError> {
        self.of(stream).fetch(stream, params).await
    }

    fn primary_key(&self, stream: &str) -> Option<String> {
        self.of(stream).primary_key(stream)
    }

    fn cursor_field(&self, stream: &str) -> Option<String> {
        self.of(stream).cursor_field(stream)
    }

    fn calls(&self) -> u64 {
        self.zoom.calls()
    }
}

/// The Salesforce connector as the engine's [`Matcher`] and [`ObjectSink`].
#[derive(Clone)]
pub struct SalesforceSink {
    pub conn: Arc<SalesforceConnector>,
    pub http: HttpClient,
}

#[async_trait::async_trait]
impl Matcher for SalesforceSink {
    async fn match_rule(
        &self,
        sobject: &str,
        select: &[String],
        wheres: &[Map<String, Value>],
    ) -> Result<Vec<super::lookup::RuleMatch>, ConnectorError> {
        let ws: Vec<BTreeMap<String, Value>> = wheres
            .iter()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .collect();
        Ok(self
            .conn
            .match_rule_detailed(sobject, select, &ws)
            .await
            .map_err(|e| sf_error(&e))?
            .into_iter()
            .map(|o| super::lookup::RuleMatch {
                records: o.records,
                unmatchable: o.unmatchable,
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl ObjectSink for SalesforceSink {
    async fn write(
        &self,
        sobject: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<WriteOutcome>, ConnectorError> {
        self.write_partial(sobject, op, records)
            .await
            .map_err(|(e, _)| e)
    }

    async fn write_partial(
        &self,
        sobject: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<WriteOutcome>, (ConnectorError, Vec<WriteOutcome>)> {
        let op = match op {
            WriteOp::Insert => sf::WriteOp::Insert,
            WriteOp::Update => sf::WriteOp::Update,
            WriteOp::Upsert { external_id_field } => sf::WriteOp::Upsert { external_id_field },
            WriteOp::Publish => sf::WriteOp::Publish,
        };
        match self.conn.write_partial(sobject, op, records).await {
            Ok(results) => Ok(outcomes(results)),
            Err((e, done)) => Err((sf_error(&e), outcomes(done))),
        }
    }

    async fn find(
        &self,
        sobject: &str,
        field: &str,
        values: &[String],
        select: &[String],
    ) -> Result<Vec<Map<String, Value>>, ConnectorError> {
        let mut fields: Vec<String> = select.to_vec();
        for must in ["Id", field] {
            if !fields.iter().any(|f| f.eq_ignore_ascii_case(must)) {
                fields.push(must.to_string());
            }
        }
        // Split by the request-size limit and sent together through Composite.
        let rows = self
            .conn
            .find_in(sobject, field, values, &fields)
            .await
            .map_err(|e| sf_error(&e))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r {
                Value::Object(mut m) => {
                    m.remove("attributes");
                    Some(m)
                }
                _ => None,
            })
            .collect())
    }

    fn calls(&self) -> u64 {
        self.http.metrics().requests(Service::Salesforce)
    }

    async fn field_schema(&self, sobject: &str) -> Result<Option<ObjectSchema>, ConnectorError> {
        let d = self
            .conn
            .describe(sobject)
            .await
            .map_err(|e| sf_error(&e))?;
        // Without the org's object list, references are checked for an Id's shape only.
        let prefixes = match self.conn.key_prefixes().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    "cannot read the org's object list ({e}); Id prefixes are not checked"
                );
                Arc::new(std::collections::HashMap::new())
            }
        };
        Ok(Some(salesforce_schema(&d, &prefixes)))
    }
}

/// An sObject's describe as the engine's field schema. `prefixes`: object name (lower
/// case) → id prefix, from the global describe.
pub fn salesforce_schema(
    d: &sf::Describe,
    prefixes: &std::collections::HashMap<String, String>,
) -> ObjectSchema {
    let fields = d
        .fields
        .iter()
        .map(|f| {
            let allowed = || {
                f.restricted_picklist.then(|| {
                    f.picklist_values
                        .iter()
                        .filter(|v| v.active)
                        .map(|v| v.value.clone())
                        .collect()
                })
            };
            let kind = match f.field_type.as_str() {
                "string" | "textarea" | "phone" | "url" | "combobox" | "encryptedstring" => {
                    FieldKind::Text
                }
                "email" => FieldKind::Email,
                "int" => FieldKind::Int {
                    digits: (f.digits > 0).then_some(f.digits),
                },
                "double" | "currency" | "percent" => FieldKind::Number {
                    precision: (f.precision > 0).then_some(f.precision),
                    scale: (f.precision > 0).then_some(f.scale),
                },
                "boolean" => FieldKind::Boolean,
                "date" => FieldKind::Date,
                "datetime" => FieldKind::DateTime,
                "id" => FieldKind::Id,
                "reference" => FieldKind::Reference {
                    to: f
                        .reference_to
                        .iter()
                        .map(|o| (o.clone(), prefixes.get(&o.to_ascii_lowercase()).cloned()))
                        .collect(),
                },
                "picklist" => FieldKind::Picklist { allowed: allowed() },
                "multipicklist" => FieldKind::MultiPicklist { allowed: allowed() },
                _ => FieldKind::Other,
            };
            let texty = matches!(
                kind,
                FieldKind::Text
                    | FieldKind::Email
                    | FieldKind::Picklist { .. }
                    | FieldKind::MultiPicklist { .. }
            );
            FieldSchema {
                name: f.name.clone(),
                kind,
                max_length: (texty && f.length > 0).then_some(f.length),
                required_on_create: f.required_on_create(),
                nillable: f.nillable,
            }
        })
        .collect();
    ObjectSchema {
        object: d.name.clone(),
        fields,
    }
}

/// The connector's per-record results as the engine's outcomes.
fn outcomes(results: Vec<sf::RecordResult>) -> Vec<WriteOutcome> {
    results
        .into_iter()
        .map(|r| WriteOutcome {
            id: r.id.clone(),
            created: r.created,
            error: (!r.errors.is_empty()).then(|| {
                r.errors
                    .iter()
                    .map(|e| {
                        if e.fields.is_empty() {
                            format!("{}: {}", e.status_code, e.message)
                        } else {
                            format!("{}: {} ({})", e.status_code, e.message, e.fields.join(", "))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        })
        .collect()
}

/// Whether an HTTP failure may pass: the service unreachable, throttled, out of its
/// allowance or failing for now.
fn http_kind(e: &HttpError) -> ErrorKind {
    match e {
        HttpError::Malformed { .. } => ErrorKind::Fatal,
        _ => ErrorKind::Retryable,
    }
}

fn status_kind(status: u16) -> ErrorKind {
    if status == 429 || status >= 500 {
        ErrorKind::Retryable
    } else {
        ErrorKind::Fatal
    }
}

/// A Zoom failure as the engine sees it, with the same message.
fn zoom_error(e: &zoom::ZoomError) -> ConnectorError {
    use zoom::ZoomError as Z;
    use zoom::auth::AuthError as A;
    let kind = match e {
        Z::Http(h) | Z::Auth(A::Http(h)) => http_kind(h),
        Z::Api { status, .. } | Z::Auth(A::Status { status }) => status_kind(*status),
        _ => ErrorKind::Fatal,
    };
    ConnectorError {
        kind,
        message: e.to_string(),
    }
}

/// A Salesforce failure as the engine sees it, with the same message.
fn sf_error(e: &sf::SfError) -> ConnectorError {
    use sf::SfError as S;
    let kind = match e {
        // The allowance frees up as the 24-hour window rolls.
        S::BudgetExhausted { .. } | S::RequestLimitExceeded { .. } => ErrorKind::Retryable,
        S::Api { status, .. } => status_kind(*status),
        S::Http(h) => http_kind(h),
        _ => ErrorKind::Fatal,
    };
    ConnectorError {
        kind,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod error_kind_tests {
    use super::*;

    #[test]
    fn throttling_outages_and_budgets_are_retryable_and_credentials_are_not() {
        let gave_up = HttpError::GaveUp {
            attempts: 5,
            last: "HTTP 503".into(),
        };
        let z = zoom_error(&zoom::ZoomError::Http(gave_up));
        assert_eq!(z.kind, ErrorKind::Retryable);
        assert_eq!(z.message, "gave up after 5 attempts: HTTP 503");
        let z = zoom_error(&zoom::ZoomError::Api {
            status: 400,
            code: Some(300),
            message: "bad".into(),
            path: "/x".into(),
            tracking_id: None,
        });
        assert_eq!(z.kind, ErrorKind::Fatal);
        let s = sf_error(&sf::SfError::RequestLimitExceeded {
            message: "TotalRequests".into(),
        });
        assert_eq!(s.kind, ErrorKind::Retryable);
        let s = sf_error(&sf::SfError::Auth {
            message: "invalid_grant".into(),
        });
        assert_eq!(s.kind, ErrorKind::Fatal);
        assert_eq!(s.message, "Salesforce authentication failed: invalid_grant");
        let s = sf_error(&sf::SfError::Api {
            status: 503,
            code: "SERVER_UNAVAILABLE".into(),
            message: "down".into(),
        });
        assert_eq!(s.kind, ErrorKind::Retryable);
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    #[test]
    fn a_describe_becomes_the_field_schema_the_checks_use() {
        let d: sf::Describe = serde_json::from_value(serde_json::json!({
            "name": "Task",
            "fields": [
                {"name": "Subject", "type": "combobox", "length": 255, "nillable": true,
                 "createable": true},
                {"name": "Status", "type": "picklist", "length": 40, "restrictedPicklist": true,
                 "createable": true, "nillable": false, "defaultedOnCreate": true,
                 "picklistValues": [{"value": "Open", "active": true},
                                    {"value": "Old", "active": false}]},
                {"name": "CallDurationInSeconds", "type": "int", "digits": 8, "nillable": true},
                {"name": "Amount__c", "type": "currency", "precision": 18, "scale": 2},
                {"name": "WhoId", "type": "reference", "referenceTo": ["Contact", "Lead"],
                 "nillable": true},
                {"name": "Campaign__c", "type": "reference", "referenceTo": ["Campaign"],
                 "createable": true, "nillable": false}
            ]
        }))
        .unwrap();
        let prefixes: std::collections::HashMap<String, String> =
            [("contact", "003"), ("lead", "00Q")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let s = salesforce_schema(&d, &prefixes);
        let subject = s.field("subject").unwrap();
        assert_eq!(subject.kind, FieldKind::Text);
        assert_eq!(subject.max_length, Some(255));
        let status = s.field("Status").unwrap();
        assert_eq!(
            status.kind,
            FieldKind::Picklist {
                allowed: Some(vec!["Open".into()])
            },
            "inactive values are not allowed"
        );
        assert!(!status.required_on_create, "defaulted on create");
        assert_eq!(
            s.field("CallDurationInSeconds").unwrap().kind,
            FieldKind::Int { digits: Some(8) }
        );
        assert_eq!(
            s.field("Amount__c").unwrap().kind,
            FieldKind::Number {
                precision: Some(18),
                scale: Some(2)
            }
        );
        assert_eq!(
            s.field("WhoId").unwrap().kind,
            FieldKind::Reference {
                to: vec![
                    ("Contact".into(), Some("003".into())),
                    ("Lead".into(), Some("00Q".into()))
                ]
            }
        );
        let campaign = s.field("Campaign__c").unwrap();
        assert!(campaign.required_on_create);
        assert_eq!(
            campaign.kind,
            FieldKind::Reference {
                to: vec![("Campaign".into(), None)]
            },
            "an unknown prefix leaves the shape check only"
        );
    }
}
