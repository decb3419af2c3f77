//! The resolved, typed model the engine runs: connections resolved, templates compiled,
//! durations parsed, references checked. Every item keeps where it was written.

use crate::template::{Template, TemplateError};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use super::diagnostic::{Problem, Severity};
pub use super::spec::{AuthType, ConnectionKind, ZoomPlan};

/// Where an item was written: for run-time errors that cite the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePos {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

pub use crate::secret::Secret;

/// A loaded project: ferry.yaml and its pipelines, ready to run.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory that holds ferry.yaml; relative paths resolve against it.
    pub root: PathBuf,
    pub config: FerryConfig,
    pub pipelines: Vec<Pipeline>,
    /// Problems that do not stop a run (an inline secret).
    pub warnings: Vec<Problem>,
    /// Every file read (ferry.yaml first), for hot reload and diagnostics.
    pub files: Vec<PathBuf>,
    /// The files `${file:...}` values in ferry.yaml were read from: the daemon watches them
    /// too, so a rotated secret is picked up.
    pub secret_files: Vec<PathBuf>,
}

impl Project {
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == name)
    }
    pub fn connection(&self, name: &str) -> Option<&Connection> {
        self.config.connections.iter().find(|c| c.name == name)
    }
}

/// ferry.yaml, resolved.
#[derive(Debug, Clone)]
pub struct FerryConfig {
    pub file: PathBuf,
    /// Absolute (or root-relative) path of the SQLite state file, or a PostgreSQL URL
    /// (`postgres://...`, a secret: show it with `state::describe_location`).
    pub state: PathBuf,
    pub connections: Vec<Connection>,
    /// Free-form values templates see as `settings`.
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub daemon: Daemon,
}

impl FerryConfig {
    /// The only connection of a kind, if there is exactly one.
    pub fn only_connection(&self, kind: ConnectionKind) -> Option<&Connection> {
        let mut it = self.connections.iter().filter(|c| c.kind() == kind);
        match (it.next(), it.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub listen: String,
    /// The bearer token of `POST /runs/{pipeline}` (None: the endpoint is off).
    pub api_token: Option<Secret>,
    /// `daemon.public_host`: host names (lowercase, maybe with `:port`) the daemon answers
    /// for besides its listen address.
    pub public_host: Vec<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_STATE: &str = ".ferry/state.db";
pub const DEFAULT_ZOOM_BASE_URL: &str = "https://api.zoom.us/v2";
pub const DEFAULT_ZOOM_TOKEN_URL: &str = "https://zoom.us/oauth/token";
pub const DEFAULT_SF_LOGIN_URL: &str = "https://login.salesforce.com";
pub const DEFAULT_SF_API_VERSION: &str = "62.0";

#[derive(Debug, Clone)]
pub struct Connection {
    pub name: String,
    pub settings: ConnectionSettings,
    pub pos: SourcePos,
}

impl Connection {
    pub fn kind(&self) -> ConnectionKind {
        match self.settings {
            ConnectionSettings::Zoom(_) => ConnectionKind::Zoom,
            ConnectionSettings::Salesforce(_) => ConnectionKind::Salesforce,
        }
    }
    pub fn as_zoom(&self) -> Option<&ZoomConnection> {
        match &self.settings {
            ConnectionSettings::Zoom(z) => Some(z),
            ConnectionSettings::Salesforce(_) => None,
        }
    }
    pub fn as_salesforce(&self) -> Option<&SalesforceConnection> {
        match &self.settings {
            ConnectionSettings::Salesforce(s) => Some(s),
            ConnectionSettings::Zoom(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionSettings {
    Zoom(ZoomConnection),
    Salesforce(SalesforceConnection),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZoomConnection {
    pub auth: ZoomAuth,
    pub plan: ZoomPlan,
    /// Share of the published limits ferry may spend, in (0, 1].
    pub headroom: f64,
    pub webhook_secret: Option<Secret>,
    pub base_url: String,
    pub token_url: String,
    /// The longest server-requested wait ferry sleeps through (`max_wait`, default 5m).
    pub max_wait: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ZoomAuth {
    ServerToServer {
        account_id: Secret,
        client_id: Secret,
        client_secret: Secret,
    },
    /// Authorization code with a rotating refresh token; `refresh_token` seeds the state
    /// file when given, otherwise `ferry auth zoom` obtains one.
    OAuth {
        client_id: Secret,
        client_secret: Secret,
        refresh_token: Option<Secret>,
        redirect_uri: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceConnection {
    pub auth: SalesforceAuth,
    pub login_url: String,
    pub api_version: String,
    /// API calls ferry may spend per rolling 24 hours (None: no budget of its own).
    pub daily_budget: Option<u64>,
    /// The longest server-requested wait ferry sleeps through (`max_wait`, default 5m).
    pub max_wait: Duration,
    /// The largest query request, in bytes of URI plus headers (None: the default).
    pub max_request_bytes: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SalesforceAuth {
    JwtBearer {
        client_id: Secret,
        username: String,
        private_key: Secret,
    },
    RefreshToken {
        client_id: Secret,
        client_secret: Option<Secret>,
        refresh_token: Option<Secret>,
        redirect_uri: Option<String>,
    },
    ClientCredentials {
        client_id: Secret,
        client_secret: Secret,
    },
}

/// A value in a pipeline: a literal, or a compiled template evaluated per record.
#[derive(Debug, Clone)]
pub enum Expr {
    Literal(serde_json::Value),
    Template(Template),
}

impl Expr {
    /// A literal stays as written; a template is evaluated (typed for `{{ expr }}`).
    pub fn eval(
        &self,
        ctx: &dyn crate::template::Scope,
    ) -> Result<serde_json::Value, TemplateError> {
        match self {
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Template(t) => t.eval(ctx),
        }
    }

    /// Evaluates a `for_each`: null gives no items, a list its items, any other value one.
    pub fn eval_items<'a>(
        &'a self,
        ctx: &'a dyn crate::template::Scope,
    ) -> Result<Vec<std::borrow::Cow<'a, serde_json::Value>>, TemplateError> {
        match self {
            Expr::Literal(serde_json::Value::Array(a)) => {
                Ok(a.iter().map(std::borrow::Cow::Borrowed).collect())
            }
            Expr::Literal(serde_json::Value::Null) => Ok(Vec::new()),
            Expr::Literal(v) => Ok(vec![std::borrow::Cow::Borrowed(v)]),
            Expr::Template(t) => t.eval_items(ctx),
        }
    }

    /// Evaluates as a condition. A literal is true unless false, null, 0 or empty.
    pub fn truthy(&self, ctx: &dyn crate::template::Scope) -> Result<bool, TemplateError> {
        match self {
            Expr::Literal(v) => Ok(json_truthy(v)),
            Expr::Template(t) => t.truthy(ctx),
        }
    }

    pub fn as_template(&self) -> Option<&Template> {
        match self {
            Expr::Template(t) => Some(t),
            Expr::Literal(_) => None,
        }
    }

    pub fn as_literal(&self) -> Option<&serde_json::Value> {
        match self {
            Expr::Literal(v) => Some(v),
            Expr::Template(_) => None,
        }
    }
}

pub fn json_truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
    }
}

/// An expression with the place it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub pos: SourcePos,
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

pub type LocatedExpr = Located<Expr>;

#[derive(Debug, Clone)]
pub enum Schedule {
    Interval(Duration),
    Cron(Box<cron::Schedule>),
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    pub pos: SourcePos,
    pub schedule: Option<Schedule>,
    /// Webhook events (`meeting.ended`) that run this pipeline for one record.
    pub triggers: Vec<String>,
    pub source: Source,
    pub enrich: Vec<Enrich>,
    pub lookups: Vec<Lookup>,
    pub vars: Vec<(String, LocatedExpr)>,
    pub sinks: Vec<Sink>,
    pub tests: Vec<PipelineTest>,
}

impl Sink {
    /// Every template of the sink.
    pub fn templates(&self) -> impl Iterator<Item = &crate::template::Template> {
        let key = match &self.key {
            Some(SinkKey::Template(e)) => Some(e),
            _ => None,
        };
        [&self.when, &self.for_each, &self.id]
            .into_iter()
            .flatten()
            .chain(key)
            .chain(self.fields.iter().map(|f| &f.value))
            .filter_map(|e| e.value.as_template())
    }
}

/// Sets [`Sink::read_later`] on each sink from what the sinks' templates read.
pub fn mark_sinks_read_later(sinks: &mut [Sink]) {
    let mut read: Vec<String> = Vec::new();
    let mut all = false;
    for s in sinks.iter() {
        for t in s.templates() {
            for path in t.undeclared_variables() {
                let mut segs = path.split('.');
                if segs.next() != Some("sinks") {
                    continue;
                }
                match segs.next() {
                    Some(n) => read.push(n.to_string()),
                    None => all = true,
                }
            }
        }
    }
    for s in sinks.iter_mut() {
        s.read_later = all || read.contains(&s.name);
    }
}

impl Pipeline {
    pub fn sink(&self, name: &str) -> Option<&Sink> {
        self.sinks.iter().find(|s| s.name == name)
    }
    pub fn lookup(&self, name: &str) -> Option<&Lookup> {
        self.lookups.iter().find(|l| l.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    /// The Zoom connection's name.
    pub connection: String,
    /// The stream's name without the connection (`past_meetings`).
    pub stream: String,
    pub params: Vec<(String, LocatedExpr)>,
    pub since: Option<DateTime<Utc>>,
    pub lookback: Option<Duration>,
    pub where_: Option<LocatedExpr>,
    pub pos: SourcePos,
}

#[derive(Debug, Clone)]
pub struct Enrich {
    pub name: String,
    pub connection: String,
    pub stream: String,
    pub params: Vec<(String, LocatedExpr)>,
    pub when: Option<LocatedExpr>,
    pub optional: bool,
    pub pos: SourcePos,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub name: String,
    /// The Salesforce connection's name.
    pub connection: String,
    pub for_each: Option<LocatedExpr>,
    pub skip: Option<LocatedExpr>,
    pub rules: Vec<MatchRule>,
    pub cache: Option<Duration>,
    pub pos: SourcePos,
}

#[derive(Debug, Clone)]
pub struct MatchRule {
    pub sobject: String,
    /// Field = value conditions, all of which must hold.
    pub where_: Vec<(String, LocatedExpr)>,
    /// Fields to read; always includes `Id`.
    pub select: Vec<String>,
    pub pos: SourcePos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkAction {
    Insert,
    Update,
    Upsert,
    Publish,
}

impl SinkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkAction::Insert => "insert",
            SinkAction::Update => "update",
            SinkAction::Upsert => "upsert",
            SinkAction::Publish => "publish",
        }
    }
}

#[derive(Debug, Clone)]
pub enum SinkKey {
    /// upsert: the external-id field whose value identifies the record.
    ExternalIdField(String),
    /// insert (and publish): an idempotency key rendered per record.
    Template(LocatedExpr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUpdate {
    /// Set on create and every update.
    #[default]
    Overwrite,
    /// Set on create only.
    Keep,
}

#[derive(Debug, Clone)]
pub struct FieldMapping {
    pub name: String,
    pub value: LocatedExpr,
    pub on_update: OnUpdate,
}

#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub connection: String,
    pub sobject: String,
    pub action: SinkAction,
    pub key: Option<SinkKey>,
    pub id: Option<LocatedExpr>,
    /// Evaluated once per source record, before `for_each`.
    pub when: Option<LocatedExpr>,
    pub for_each: Option<LocatedExpr>,
    pub fields: Vec<FieldMapping>,
    pub search_by: Option<String>,
    /// Earlier sinks this one reads through `sinks.NAME` (written before it).
    pub depends_on: Vec<String>,
    /// Whether any sink template can read `sinks.NAME` of this sink (by name, or through
    /// `sinks` as a whole); when not, its result is not kept for later sinks.
    pub read_later: bool,
    /// A Zoom sink (`zoom: NAME`): what it writes and how. Its `fields` are the body's
    /// leaves by dotted path (`settings.waiting_room`).
    pub zoom: Option<ZoomSink>,
    pub pos: SourcePos,
}

/// What a `zoom:` sink does to its Zoom object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoomAction {
    Create,
    Update,
    Upsert,
    Delete,
}

impl ZoomAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoomAction::Create => "create",
            ZoomAction::Update => "update",
            ZoomAction::Upsert => "upsert",
            ZoomAction::Delete => "delete",
        }
    }
}

/// A Zoom sink's object (an entry of the sink catalog), action and path parameters.
#[derive(Debug, Clone)]
pub struct ZoomSink {
    pub object: String,
    pub action: ZoomAction,
    pub params: Vec<(String, LocatedExpr)>,
}

#[derive(Debug, Clone)]
pub struct PipelineTest {
    pub name: String,
    pub record: serde_json::Value,
    pub lookups: serde_json::Map<String, serde_json::Value>,
    pub expect: BTreeMap<String, Vec<serde_json::Value>>,
    pub pos: SourcePos,
}

// ---------------------------------------------------------------------------------------------
// Durations and schedules

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration; write a number and a unit: 30s, 15m, 2h, 1d")]
    Malformed(String),
    #[error("a duration must be longer than zero")]
    Zero,
}

/// Parses `30s`, `15m`, `2h`, `24h`, `1d`, `1w`, and sums like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    let bad = || DurationError::Malformed(text.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(secs)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(DurationError::Zero);
    }
    Ok(Duration::from_secs(total))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{text}` is not a valid cron schedule: {reason}")]
    Cron { text: String, reason: String },
    #[error("`{0}` is neither an interval (15m) nor a 5-field cron schedule (*/15 * * * *)")]
    Neither(String),
    #[error(transparent)]
    Duration(#[from] DurationError),
}

/// A schedule string: an interval (`15m`) or a 5-field cron (`*/15 * * * *`; a 6- or
/// 7-field form with seconds is accepted too).
pub fn parse_schedule(text: &str) -> Result<Schedule, ScheduleError> {
    let t = text.trim();
    let fields = t.split_whitespace().count();
    if fields == 1 {
        return match parse_duration(t) {
            Ok(d) => Ok(Schedule::Interval(d)),
            Err(DurationError::Zero) => Err(DurationError::Zero.into()),
            Err(_) => Err(ScheduleError::Neither(text.to_string())),
        };
    }
    parse_cron(t)
}

/// A cron expression; 5 fields (minute first) get a leading `0` seconds field.
pub fn parse_cron(text: &str) -> Result<Schedule, ScheduleError> {
    let t = text.trim();
    let full = match t.split_whitespace().count() {
        5 => format!("0 {t}"),
        6 | 7 => t.to_string(),
        _ => {
            return Err(ScheduleError::Cron {
                text: text.to_string(),
                reason: "expected 5 fields: minute hour day-of-month month day-of-week".into(),
            });
        }
    };
    full.parse::<cron::Schedule>()
        .map(|s| Schedule::Cron(Box::new(s)))
        .map_err(|e| ScheduleError::Cron {
            text: text.to_string(),
            reason: e.to_string(),
        })
}

/// `since:` accepts RFC 3339 (`2026-01-01T00:00:00Z`) or a date (`2026-01-01`, midnight UTC).
pub fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("m15").is_err());
        assert!(parse_duration("15 minutes").is_err());
        assert_eq!(parse_duration("0s"), Err(DurationError::Zero));
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn schedules() {
        assert!(matches!(
            parse_schedule("15m").unwrap(),
            Schedule::Interval(d) if d == Duration::from_secs(900)
        ));
        assert!(matches!(
            parse_schedule("*/15 * * * *").unwrap(),
            Schedule::Cron(_)
        ));
        assert!(parse_schedule("*/15 * * *").is_err());
        assert!(parse_schedule("every hour").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn since_forms() {
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z").unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-01-02").unwrap().to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        assert!(parse_since("yesterday").is_none());
    }
}
