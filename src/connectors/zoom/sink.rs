//! Zoom as a sink: the catalog of objects a pipeline writes with `zoom: NAME` (`sinks.yaml`,
//! compiled in and parsed once, printed by `ferry sinks`), the value checks of their fields,
//! and the connector's write calls ([`crate::engine::zoom::ZoomWriter`]).

use super::ZoomConnector;
use crate::engine::schema::Refusal;
use crate::engine::zoom::{ZoomCall, ZoomWriteError, ZoomWriter};
use crate::http::{HttpError, Method, Request, Service};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

const SINKS_YAML: &str = include_str!("sinks.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinksFile {
    sinks: BTreeMap<String, SinkDef>,
}

/// One HTTP call of a sink object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallDef {
    #[serde(default = "get_method")]
    pub method: String,
    pub path: String,
    pub category: String,
    /// The body's fields go under this key (a user's `user_info`).
    #[serde(default)]
    pub wrap: Option<String>,
    /// Fixed fields of the body (a user create's `action: create`).
    #[serde(default)]
    pub extra: Map<String, Value>,
}

fn get_method() -> String {
    "GET".into()
}

/// Zoom's per-resource daily limit of a sink object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyLimitDef {
    /// Zoom's number (100 a host, 3 a registrant): documentation the catalog carries and
    /// `about` states. ferry does not count against it; it defers on Zoom's own answer (429
    /// or HTTP 300), which also covers writes made by other apps on the account.
    #[allow(dead_code)]
    pub count: u64,
    /// The params (or fields) whose values name the limited resource.
    pub per: OneOrMany,
    /// The actions that count (create, update).
    pub counts: Vec<String>,
    /// What the limit is per, in words (host, registrant).
    pub scope: String,
    pub about: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// How a create whose outcome is unknown is found before it is repeated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindEarlierDef {
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Each of these `status` values is listed too (registrants: pending ones).
    #[serde(default)]
    pub statuses: Vec<String>,
    /// The list's key in the answer (absent with `single`).
    #[serde(default)]
    pub list: Option<String>,
    /// The path names one object (a user by email).
    #[serde(default)]
    pub single: bool,
    /// Fields that must be equal for an object to be the earlier create.
    #[serde(rename = "match")]
    pub match_fields: Vec<String>,
    pub category: String,
}

/// The type of a field Zoom accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Boolean,
    Datetime,
    Object,
    Array,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::Datetime => "datetime",
            FieldType::Object => "object",
            FieldType::Array => "array",
        }
    }
}

/// A field Zoom accepts: its type and limits; an object may list its own fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Longest text, in characters.
    #[serde(default)]
    pub max: Option<usize>,
    /// Smallest number.
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub one_of: Vec<Value>,
    /// A create must set it.
    #[serde(default)]
    pub required: bool,
    /// An object's fields (when listed, others are refused).
    #[serde(default)]
    pub fields: Option<BTreeMap<String, FieldDef>>,
}

/// One object a pipeline can write to Zoom.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkDef {
    #[serde(skip)]
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub create: Option<CallDef>,
    #[serde(default)]
    pub update: Option<CallDef>,
    #[serde(default)]
    pub delete: Option<CallDef>,
    #[serde(default)]
    pub get: Option<CallDef>,
    #[serde(default)]
    pub gone_codes: Vec<i64>,
    /// The field of a create's answer that is the object's id (`registrant_id` for a
    /// registrant: its `id` is the meeting's or webinar's).
    #[serde(default)]
    pub id_field: Option<String>,
    pub returns: Vec<String>,
    /// Returned fields that are credentials: never kept, shown or logged.
    #[serde(default)]
    pub secret: Vec<String>,
    #[serde(default)]
    pub daily_limit: Option<DailyLimitDef>,
    #[serde(default)]
    pub find_earlier: Option<FindEarlierDef>,
    pub fields: BTreeMap<String, FieldDef>,
}

/// The sink catalog.
#[derive(Debug)]
pub struct SinkCatalog {
    pub sinks: BTreeMap<String, SinkDef>,
}

/// The built-in sink catalog (`sinks.yaml`). A unit test proves the embedded YAML parses.
// Compiled in, not user input: like the stream catalog, a parse failure is a build defect.
#[allow(clippy::panic)]
pub fn sink_catalog() -> &'static SinkCatalog {
    static CAT: OnceLock<SinkCatalog> = OnceLock::new();
    CAT.get_or_init(|| {
        // The YAML is part of the binary and checked by a test: an error here is a bug in
        // the build, not in a user's input.
        let file: SinksFile = match serde_saphyr::from_str(SINKS_YAML) {
            Ok(f) => f,
            Err(e) => panic!("the built-in Zoom sink catalog does not parse: {e}"),
        };
        let sinks = file
            .sinks
            .into_iter()
            .map(|(k, mut v)| {
                v.name = k.clone();
                (k, v)
            })
            .collect();
        SinkCatalog { sinks }
    })
}

impl SinkCatalog {
    pub fn get(&self, name: &str) -> Option<&SinkDef> {
        self.sinks.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }
}

/// The path parameters a path names (`{user_id}` → `user_id`), `{id}` excepted.
pub fn path_params(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if name != "id" {
            out.push(name.to_string());
        }
        rest = &after[end + 1..];
    }
    out
}

/// Fills `{name}` in `path` from `values` (each encoded as one path segment). `None` names
/// the first parameter without a value.
pub fn fill_path(path: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match values.get(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&super::encode_path_value(v)),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl SinkDef {
    /// The actions this object takes (`create`, `update`, `upsert`, `delete`).
    pub fn actions(&self) -> Vec<&'static str> {
        let mut a = Vec::new();
        if self.create.is_some() {
            a.push("create");
        }
        if self.update.is_some() {
            a.push("update");
        }
        if self.create.is_some() && self.update.is_some() {
            a.push("upsert");
        }
        if self.delete.is_some() {
            a.push("delete");
        }
        a
    }

    /// Every parameter a path of this object can use (beyond the Zoom id).
    pub fn all_params(&self) -> Vec<String> {
        let mut names: Vec<String> = self.params.keys().cloned().collect();
        for c in [&self.create, &self.update, &self.delete, &self.get]
            .into_iter()
            .flatten()
        {
            for p in path_params(&c.path) {
                if !names.contains(&p) {
                    names.push(p);
                }
            }
        }
        names
    }

    /// A field by dotted path (`settings.waiting_room`).
    pub fn field(&self, path: &[&str]) -> Option<&FieldDef> {
        let (first, rest) = path.split_first()?;
        let mut f = self.fields.get(*first)?;
        for p in rest {
            f = f.fields.as_ref()?.get(*p)?;
        }
        Some(f)
    }

    /// Whether a returned field is a credential that is never kept or shown.
    pub fn is_secret(&self, field: &str) -> bool {
        self.secret.iter().any(|s| s == field)
    }

    /// What Zoom answered, without its secrets and bounded: the values ferry keeps in its
    /// ledger and shows as `sinks.NAME.*`.
    pub fn kept_values(&self, answer: &Value) -> Map<String, Value> {
        let mut out = Map::new();
        for f in &self.returns {
            if self.is_secret(f) {
                continue;
            }
            if let Some(v) = answer.get(f) {
                let v = match v {
                    Value::String(s) if s.len() > MAX_KEPT_CHARS => {
                        Value::String(s.chars().take(MAX_KEPT_CHARS).collect())
                    }
                    Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => v.clone(),
                    // Only scalars are kept.
                    _ => continue,
                };
                out.insert(f.clone(), v);
            }
        }
        out
    }

    /// Every value Zoom would refuse in a write of `fields` (create: required fields too).
    pub fn check_fields(&self, fields: &Map<String, Value>, creating: bool) -> Vec<Refusal> {
        let mut out = Vec::new();
        check_map(&self.name, "", &self.fields, fields, creating, &mut out);
        out
    }

    /// `ferry sinks NAME`: the object in words.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "zoom: {}\n  {}", self.name, self.description);
        let _ = writeln!(s, "  actions: {}", self.actions().join(", "));
        if !self.params.is_empty() {
            let _ = writeln!(s, "  params:");
            for (k, v) in &self.params {
                let _ = writeln!(s, "    {k}: {v}");
            }
        }
        for (what, c) in [
            ("create", &self.create),
            ("update", &self.update),
            ("delete", &self.delete),
            ("read", &self.get),
        ] {
            if let Some(c) = c {
                let _ = writeln!(
                    s,
                    "  {what}: {} {} ({} rate category)",
                    c.method, c.path, c.category
                );
            }
        }
        if !self.gone_codes.is_empty() {
            let codes: Vec<String> = self.gone_codes.iter().map(i64::to_string).collect();
            let _ = writeln!(
                s,
                "  a delete answered with code {} is done (already gone or ended)",
                codes.join(", ")
            );
        }
        if let Some(d) = &self.daily_limit {
            let _ = writeln!(
                s,
                "  daily limit: {} (records over it wait for 00:00 UTC)",
                d.about
            );
        }
        if let Some(f) = &self.find_earlier {
            let _ = writeln!(
                s,
                "  an unfinished create is found by {} among GET {}",
                f.match_fields.join(" and "),
                f.path
            );
        }
        let shown: Vec<&str> = self
            .returns
            .iter()
            .filter(|r| !self.is_secret(r))
            .map(String::as_str)
            .collect();
        if !shown.is_empty() {
            let _ = writeln!(s, "  returns (sinks.NAME.*): {}", shown.join(", "));
        }
        if !self.secret.is_empty() {
            let _ = writeln!(
                s,
                "  never kept or shown (credentials): {}",
                self.secret.join(", ")
            );
        }
        let _ = writeln!(s, "  fields:");
        describe_fields(&mut s, &self.fields, 4);
        s
    }
}

/// The longest returned text kept in the ledger.
const MAX_KEPT_CHARS: usize = 2048;

fn describe_fields(s: &mut String, fields: &BTreeMap<String, FieldDef>, indent: usize) {
    for (k, f) in fields {
        let mut notes = vec![f.kind.as_str().to_string()];
        if let Some(m) = f.max {
            notes.push(format!("at most {m} characters"));
        }
        if let Some(m) = f.min {
            notes.push(format!("at least {m}"));
        }
        if !f.one_of.is_empty() {
            let vals: Vec<String> = f.one_of.iter().map(scalar).collect();
            notes.push(format!("one of {}", vals.join(", ")));
        }
        if f.required {
            notes.push("required on create".into());
        }
        let _ = writeln!(s, "{:indent$}{k}: {}", "", notes.join("; "));
        if let Some(sub) = &f.fields {
            describe_fields(s, sub, indent + 2);
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn shown(v: &Value) -> String {
    let s = scalar(v);
    let head: String = s.chars().take(40).collect();
    if head.len() < s.len() {
        format!("\"{head}…\"")
    } else {
        format!("\"{head}\"")
    }
}

fn check_map(
    object: &str,
    prefix: &str,
    defs: &BTreeMap<String, FieldDef>,
    fields: &Map<String, Value>,
    creating: bool,
    out: &mut Vec<Refusal>,
) {
    for (name, v) in fields {
        let path = format!("{prefix}{name}");
        let Some(def) = defs.get(name) else {
            out.push(Refusal {
                field: path.clone(),
                reason: format!("Zoom's {object} has no field `{path}`"),
                hint: crate::config::diagnostic::did_you_mean(
                    name,
                    defs.keys().map(String::as_str),
                ),
            });
            continue;
        };
        if let Some(r) = check_value(object, &path, def, v, creating, out) {
            out.push(r);
        }
    }
    if creating {
        for (name, def) in defs {
            if def.required && !fields.contains_key(name) {
                out.push(Refusal {
                    field: format!("{prefix}{name}"),
                    reason: format!("Zoom's {object} requires {prefix}{name} on create"),
                    hint: Some(format!("set `{prefix}{name}` in the sink's fields")),
                });
            }
        }
    }
}

fn check_value(
    object: &str,
    path: &str,
    def: &FieldDef,
    v: &Value,
    creating: bool,
    out: &mut Vec<Refusal>,
) -> Option<Refusal> {
    let refuse = |reason: String, hint: Option<&str>| {
        Some(Refusal {
            field: path.to_string(),
            reason,
            hint: hint.map(str::to_string),
        })
    };
    if v.is_null() {
        if def.required {
            return refuse(
                format!("Zoom's {object}.{path} cannot be empty"),
                Some("give it a value, or a `when:` that skips records without one"),
            );
        }
        return None;
    }
    match def.kind {
        FieldType::String => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return refuse(
                        format!("Zoom's {object}.{path} takes text, not {}", kind_of(v)),
                        None,
                    );
                }
            };
            if let Some(max) = def.max {
                let n = text.chars().count();
                if n > max {
                    return refuse(
                        format!(
                            "{} is {n} characters; Zoom's {object}.{path} takes at most {max}",
                            shown(v)
                        ),
                        Some(&format!("shorten it: `| truncate({max})`")),
                    );
                }
            }
            if def.required && text.trim().is_empty() {
                return refuse(
                    format!("Zoom's {object}.{path} cannot be empty"),
                    Some("give it a value, or a `when:` that skips records without one"),
                );
            }
        }
        FieldType::Integer => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            let Some(n) = n else {
                return refuse(
                    format!(
                        "not a whole number: {} for Zoom's {object}.{path}",
                        shown(v)
                    ),
                    Some("render a whole number (`| int`)"),
                );
            };
            if let Some(min) = def.min
                && n < min
            {
                return refuse(
                    format!("{n} is below {min}, the least Zoom's {object}.{path} takes"),
                    None,
                );
            }
        }
        FieldType::Boolean => {
            if !v.is_boolean() {
                return refuse(
                    format!(
                        "Zoom's {object}.{path} takes true or false, not {}",
                        shown(v)
                    ),
                    None,
                );
            }
        }
        FieldType::Datetime => {
            let ok = v.as_str().is_some_and(|s| {
                DateTime::parse_from_rfc3339(s).is_ok()
                    || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok()
            });
            if !ok {
                return refuse(
                    format!(
                        "{} is not a date and time Zoom's {object}.{path} takes",
                        shown(v)
                    ),
                    Some("render it with `| zoom_datetime` (yyyy-MM-ddTHH:mm:ssZ)"),
                );
            }
        }
        FieldType::Object => {
            let Value::Object(m) = v else {
                return refuse(
                    format!("Zoom's {object}.{path} takes an object, not {}", kind_of(v)),
                    None,
                );
            };
            if let Some(sub) = &def.fields {
                check_map(object, &format!("{path}."), sub, m, false, out);
            }
            return None;
        }
        FieldType::Array => {
            if !v.is_array() {
                return refuse(
                    format!("Zoom's {object}.{path} takes a list, not {}", kind_of(v)),
                    None,
                );
            }
        }
    }
    if !def.one_of.is_empty() && !def.one_of.iter().any(|o| scalar(o) == scalar(v)) {
        let vals: Vec<String> = def.one_of.iter().map(scalar).collect();
        let _ = creating;
        return refuse(
            format!(
                "{} is not one of the values Zoom's {object}.{path} takes: {}",
                shown(v),
                vals.join(", ")
            ),
            None,
        );
    }
    None
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// The connector's write calls

/// Zoom's per-resource daily limit, in either of its forms: a 429 "You have exceeded the
/// daily rate limit (100) of Meeting Create/Update API requests permitted for this
/// particular user" / "... for the registrant", or an HTTP 300 "A maximum of 100 meetings
/// can be created/updated for a single user in one day".
pub fn is_resource_daily_limit(status: u16, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (status == 429 || status == 300)
        && (m.contains("for a single user in one day")
            || m.contains("permitted for this particular user")
            || (m.contains("daily rate limit") && m.contains("for the registrant")))
}

fn next_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

/// The longest error message kept from Zoom (its messages are short; a proxy's page is not).
const MAX_MESSAGE_CHARS: usize = 300;

#[async_trait::async_trait]
impl ZoomWriter for ZoomConnector {
    async fn call(&self, call: ZoomCall) -> Result<Value, ZoomWriteError> {
        let base = self.inner.settings.base_url.trim_end_matches('/');
        let mut url = format!("{base}{}", call.path);
        if !call.query.is_empty() {
            let qs = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&call.query)
                .finish();
            url.push('?');
            url.push_str(&qs);
        }
        let method = match call.method {
            "POST" => Method::POST,
            "PATCH" => Method::PATCH,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            _ => Method::GET,
        };
        let mut renewed = false;
        loop {
            let token =
                self.inner.tokens.token().await.map_err(|e| {
                    ZoomWriteError::Stop(format!("Zoom authentication failed: {e}"))
                })?;
            let mut req = Request::new(Service::Zoom, method.clone(), &url)
                .bearer(token.expose())
                .category(&call.category);
            // An update sends the same values again: safe to resend. A create is not.
            if method == Method::PATCH {
                req = req.idempotent(true);
            }
            if let Some(b) = &call.body {
                req = req.json(b);
            }
            let now = self.inner.http.clock().now();
            let resp = match self.inner.http.send(req).await {
                Ok(r) => r,
                Err(HttpError::Transport { message, .. })
                | Err(HttpError::GaveUp { last: message, .. })
                    if method != Method::GET =>
                {
                    return Err(ZoomWriteError::Unknown(message));
                }
                Err(e) => return Err(ZoomWriteError::Stop(format!("Zoom: {e}"))),
            };
            if resp.is_success() {
                if resp.body.is_empty() {
                    return Ok(Value::Null);
                }
                return match resp.json::<Value>() {
                    Ok(v) => Ok(v),
                    // The write happened; its answer is unreadable.
                    Err(e) if method != Method::GET => Err(ZoomWriteError::Unknown(e.to_string())),
                    Err(e) => Err(ZoomWriteError::Stop(format!(
                        "Zoom's answer on {} is malformed: {e}",
                        call.path
                    ))),
                };
            }
            let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
            let code = body.get("code").and_then(Value::as_i64);
            let message: String = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect();
            if resp.status == 401 && code == Some(124) && !renewed {
                renewed = true;
                self.inner.tokens.invalidate(&token).await;
                continue;
            }
            if is_resource_daily_limit(resp.status, &message) {
                let until = crate::http::retry_after(&resp, now)
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| now + d)
                    .filter(|t| *t > now && *t <= now + chrono::Duration::days(2))
                    .unwrap_or_else(|| next_midnight(now));
                return Err(ZoomWriteError::Limit { until, message });
            }
            if resp.status >= 500 {
                return Err(ZoomWriteError::Unknown(format!(
                    "HTTP {}: {message}",
                    resp.status
                )));
            }
            if resp.status == 401 || resp.status == 429 {
                return Err(ZoomWriteError::Stop(format!(
                    "Zoom answered HTTP {} on {}: {message}",
                    resp.status, call.path
                )));
            }
            return Err(ZoomWriteError::Refused {
                status: resp.status,
                code,
                message,
            });
        }
    }

    fn calls(&self) -> u64 {
        self.inner.http.metrics().requests(Service::Zoom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_names_what_the_issue_asks_for() {
        let c = sink_catalog();
        for name in [
            "meeting",
            "webinar",
            "meeting_registrant",
            "webinar_registrant",
            "registrant_status",
            "user",
        ] {
            assert!(c.get(name).is_some(), "{name} missing");
        }
        let m = c.get("meeting").unwrap();
        assert_eq!(m.actions(), vec!["create", "update", "upsert", "delete"]);
        assert_eq!(m.field(&["topic"]).and_then(|f| f.max), Some(200));
        assert_eq!(m.field(&["agenda"]).and_then(|f| f.max), Some(2000));
        assert_eq!(m.field(&["password"]).and_then(|f| f.max), Some(10));
        assert!(m.field(&["settings", "waiting_room"]).is_some());
        assert!(m.is_secret("start_url"));
        let r = c.get("webinar_registrant").unwrap();
        assert_eq!(r.field(&["last_name"]).and_then(|f| f.max), Some(64));
        assert_eq!(r.id_field.as_deref(), Some("registrant_id"));
        assert_eq!(r.all_params(), vec!["webinar_id".to_string()]);
    }

    #[test]
    fn values_are_checked_against_the_catalog_nested_ones_too() {
        let m = sink_catalog().get("meeting").unwrap();
        let fields: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "topic": "x".repeat(201),
            "type": 7,
            "start_time": "tomorrow",
            "settings": {"waiting_room": "yes", "waitng": true},
        }))
        .unwrap();
        let found = m.check_fields(&fields, true);
        let text: Vec<String> = found.iter().map(|r| r.to_string()).collect();
        let all = text.join("\n");
        assert!(
            all.contains("201 characters") && all.contains("truncate(200)"),
            "{all}"
        );
        assert!(all.contains("not one of the values"), "{all}");
        assert!(all.contains("zoom_datetime"), "{all}");
        assert!(
            all.contains("settings.waiting_room takes true or false"),
            "{all}"
        );
        assert!(all.contains("no field `settings.waitng`"), "{all}");
        assert_eq!(found.len(), 5, "{all}");
        let ok: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "topic": "Demo", "type": 2, "start_time": "2026-03-01T10:00:00Z",
            "settings": {"waiting_room": true}
        }))
        .unwrap();
        assert!(m.check_fields(&ok, true).is_empty());
    }

    #[test]
    fn start_url_is_never_kept() {
        let m = sink_catalog().get("meeting").unwrap();
        let kept = m.kept_values(&serde_json::json!({
            "id": 85012345678u64, "join_url": "https://zoom.us/j/1", "start_url": "https://zoom.us/s/1?zak=secret",
            "password": "abc"
        }));
        assert!(kept.get("start_url").is_none());
        assert_eq!(
            kept.get("join_url").and_then(Value::as_str),
            Some("https://zoom.us/j/1")
        );
    }

    #[test]
    fn both_forms_of_the_per_host_limit_are_recognised() {
        assert!(is_resource_daily_limit(
            300,
            "A maximum of 100 meetings can be created/updated for a single user in one day."
        ));
        assert!(is_resource_daily_limit(
            429,
            "You have exceeded the daily rate limit (100) of Meeting Create/Update API requests permitted for this particular user. You may resume these requests at GMT 00:00:00."
        ));
        assert!(is_resource_daily_limit(
            429,
            "You have exceeded the daily rate limit of \"3\" for Add a webinar registrant API requests for the registrant \"a@b.c\". You can resume these API requests at GMT 00:00:00."
        ));
        assert!(!is_resource_daily_limit(
            429,
            "You have reached the maximum per-second rate limit for this API. Try again later."
        ));
        assert!(!is_resource_daily_limit(300, "Invalid webinar ID."));
    }
}
