//! The raw file types: exactly what an admin writes in ferry.yaml and a pipeline file,
//! with positions kept. Nothing here is checked beyond its shape; `resolve` turns these into
//! the typed model and reports every problem.

use super::at::{At, OrderedMap};
use schemars::{JsonSchema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Any YAML value: templates (strings with `{{ }}`), literals, lists, objects.
pub type AnyValue = serde_json::Value;

// ---------------------------------------------------------------------------------------------
// ferry.yaml

/// ferry.yaml: connections, state location, settings, daemon.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ferry.yaml")]
pub struct FerryConfigSpec {
    /// SQLite state file, relative to ferry.yaml (default `.ferry/state.db`).
    #[serde(default)]
    pub state: Option<At<String>>,
    /// Named connections; a pipeline refers to them as `<connection>.<stream>`.
    #[serde(default)]
    pub connections: OrderedMap<At<String>, ConnectionSpec>,
    /// Free-form values that templates see as `settings`.
    #[serde(default)]
    pub settings: Option<At<serde_json::Map<String, serde_json::Value>>>,
    /// The webhook receiver, health, metrics and status page.
    #[serde(default)]
    pub daemon: Option<DaemonSpec>,
    /// Pipeline files, relative to ferry.yaml (default: every `*.yaml` under `pipelines/`).
    #[serde(default)]
    pub pipelines: Option<Vec<At<String>>>,
}

/// One connection. Options that belong to the other kind are reported by the checks (one
/// struct keeps every position exact, which a `kind`-tagged enum would lose).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// `zoom` or `salesforce`.
    pub kind: At<ConnectionKind>,
    pub auth: Option<At<AuthSpec>>,
    /// Zoom: `free`, `pro` or `business`: which published rate limits apply.
    pub plan: Option<At<ZoomPlan>>,
    /// Zoom: the share of those limits ferry may spend (0 < headroom <= 1).
    pub headroom: Option<At<f64>>,
    /// Zoom: the secret token that verifies webhooks.
    pub webhook_secret: Option<At<String>>,
    /// Zoom: API base (default `https://api.zoom.us/v2`).
    pub base_url: Option<At<String>>,
    /// Zoom: token endpoint (default `https://zoom.us/oauth/token`).
    pub token_url: Option<At<String>>,
    /// Salesforce: REST API version, like `"62.0"`.
    pub api_version: Option<At<LooseString>>,
    /// Salesforce: API calls ferry may spend per rolling 24 hours.
    pub daily_budget: Option<At<u64>>,
    /// The longest wait the service may ask for (Retry-After, X-RateLimit-Reset) that ferry
    /// sleeps through, like `5m` (the default); a longer one ends the batch at once.
    pub max_wait: Option<At<String>>,
    /// Salesforce: the largest request ferry builds for a query, in bytes of URI plus
    /// headers (1,024 to 16,384; default 15,360). Longer lookups are split.
    pub max_request_bytes: Option<At<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    Zoom,
    Salesforce,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Zoom => "zoom",
            ConnectionKind::Salesforce => "salesforce",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ZoomPlan {
    Free,
    Pro,
    Business,
}

/// How ferry authenticates. Which keys are required depends on `type`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// Zoom: `server_to_server` or `oauth`. Salesforce: `jwt_bearer`, `refresh_token` or
    /// `client_credentials`.
    #[serde(rename = "type")]
    pub type_: At<AuthType>,
    /// Zoom server-to-server: the account id.
    pub account_id: Option<At<String>>,
    pub client_id: Option<At<String>>,
    pub client_secret: Option<At<String>>,
    /// Zoom oauth / Salesforce refresh_token: the initial refresh token (`ferry auth` stores
    /// and rotates it in the state file).
    pub refresh_token: Option<At<String>>,
    /// oauth flows: where the provider sends the browser back (`ferry auth`).
    pub redirect_uri: Option<At<String>>,
    /// Salesforce: login host or My Domain (default `https://login.salesforce.com`).
    pub login_url: Option<At<String>>,
    /// Salesforce jwt_bearer: the integration user.
    pub username: Option<At<String>>,
    /// Salesforce jwt_bearer: the PEM private key that signs the assertion.
    pub private_key: Option<At<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    ServerToServer,
    Oauth,
    JwtBearer,
    RefreshToken,
    ClientCredentials,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::ServerToServer => "server_to_server",
            AuthType::Oauth => "oauth",
            AuthType::JwtBearer => "jwt_bearer",
            AuthType::RefreshToken => "refresh_token",
            AuthType::ClientCredentials => "client_credentials",
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    /// Address the webhook receiver listens on (default `127.0.0.1:8787`).
    pub listen: Option<At<String>>,
    /// Bearer token that `POST /runs/{pipeline}` must carry to start a run; without it that
    /// endpoint is off. A secret: `${NAME}` or `${file:PATH}`.
    pub api_token: Option<At<String>>,
    /// Host names (one, or a list) the daemon answers for besides its listen address, e.g.
    /// the name a proxy forwards or Zoom calls (`ferry.example.com`, optionally with
    /// `:port`). Requests for any other Host are refused (defeats DNS rebinding). Needed when
    /// listening on 0.0.0.0 or behind a proxy.
    pub public_host: Option<At<OneOrMany>>,
}

/// One string, or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A string that may be written without quotes even when it looks like a number
/// (`api_version: 62.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseString(pub String);

impl<'de> Deserialize<'de> for LooseString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LooseString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LooseString, E> {
                Ok(LooseString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LooseString, E> {
                Ok(LooseString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LooseString, E> {
                Ok(LooseString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LooseString, E> {
                // 62.0 must stay "62.0", not "62".
                let s = v.to_string();
                Ok(LooseString(if s.contains('.') {
                    s
                } else {
                    format!("{s}.0")
                }))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for LooseString {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "LooseString".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number"] })
    }
}

/// One of a fixed set of words (an enum), read without stopping the file's checking: a
/// word that is not one of them is kept with the parser's reason, and the checks report it
/// at its line next to every other problem of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice<T> {
    Known(T),
    /// What was written (as text) and why it is not one of the words.
    Unknown {
        written: String,
        reason: String,
    },
}

impl<T: Copy> Choice<T> {}

impl<'de, T: de::DeserializeOwned> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match T::deserialize(&v) {
            Ok(t) => Ok(Choice::Known(t)),
            Err(e) => Ok(Choice::Unknown {
                written: match &v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                reason: e.to_string(),
            }),
        }
    }
}

impl<T: JsonSchema> JsonSchema for Choice<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

// ---------------------------------------------------------------------------------------------
// pipeline files

/// One pipeline file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ferry pipeline")]
pub struct PipelineSpec {
    /// Unique name; it names the pipeline's checkpoints and ledger.
    pub pipeline: At<String>,
    pub description: Option<String>,
    /// Daemon: `15m` (an interval), a 5-field cron string, or `{cron: "..."}`.
    pub schedule: Option<At<ScheduleSpec>>,
    /// Daemon: webhook events that run the pipeline for one record.
    #[serde(default)]
    pub triggers: Vec<At<String>>,
    pub source: SourceSpec,
    /// Child reads per record, attached as `record.<name>`.
    #[serde(default)]
    pub enrich: OrderedMap<At<String>, EnrichSpec>,
    /// Match rules that find the Salesforce records a source record belongs to.
    #[serde(default)]
    pub lookups: OrderedMap<At<String>, LookupSpec>,
    /// Named values per record, computed in order after the lookups.
    #[serde(default)]
    pub vars: OrderedMap<At<String>, At<AnyValue>>,
    /// Salesforce writes, in order, for each source record.
    #[serde(default)]
    pub sinks: OrderedMap<At<String>, SinkSpec>,
    /// Offline tests that `ferry test` runs.
    #[serde(default)]
    pub tests: Vec<At<TestSpec>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleSpec {
    /// `15m` or `*/15 * * * *`.
    Text(String),
    /// `{cron: "*/15 * * * *"}`.
    Cron(At<String>),
}

impl<'de> Deserialize<'de> for ScheduleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CronForm {
            cron: At<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScheduleSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an interval like `15m`, a cron string, or `{cron: \"...\"}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScheduleSpec, E> {
                Ok(ScheduleSpec::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ScheduleSpec, A::Error> {
                let c = CronForm::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ScheduleSpec::Cron(c.cron))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ScheduleSpec {
    fn schema_name() -> Cow<'static, str> {
        "Schedule".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An interval (`30s`, `15m`, `2h`, `1d`), a 5-field cron string, or {cron: \"...\"}",
            "anyOf": [
                { "type": "string" },
                { "type": "object", "properties": { "cron": { "type": "string" } },
                  "required": ["cron"], "additionalProperties": false }
            ]
        })
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `<connection>.<stream>`, or just the stream when there is one Zoom connection.
    pub stream: At<String>,
    #[serde(default)]
    pub params: OrderedMap<At<String>, At<AnyValue>>,
    /// Where the first run starts when there is no checkpoint (RFC 3339 or a date).
    pub since: Option<At<String>>,
    /// How much each run re-reads before the checkpoint (`2h`).
    pub lookback: Option<At<String>>,
    /// A condition: records for which it is false are skipped.
    #[serde(rename = "where")]
    pub where_: Option<At<AnyValue>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrichSpec {
    pub stream: At<String>,
    #[serde(default)]
    pub params: OrderedMap<At<String>, At<AnyValue>>,
    /// Fetch only when true (no request at all otherwise).
    pub when: Option<At<AnyValue>>,
    /// The API's "not found" gives null instead of an error.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupSpec {
    /// Salesforce connection (default: the only one).
    pub connection: Option<At<String>>,
    /// Look up each item of this list; results are `.matched`, `.unmatched`, `.skipped`.
    pub for_each: Option<At<AnyValue>>,
    /// Items (or the record) for which this is true are not looked up.
    pub skip: Option<At<AnyValue>>,
    /// Rules tried in order; the first that finds a record wins.
    #[serde(rename = "match")]
    pub match_: At<Vec<MatchRuleSpec>>,
    /// How long results stay in the state file's cache (`24h`).
    pub cache: Option<At<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchRuleSpec {
    pub sobject: At<String>,
    #[serde(rename = "where")]
    pub where_: OrderedMap<At<String>, At<AnyValue>>,
    /// Fields to read from the matched record (`Id` is always read).
    #[serde(default)]
    pub select: Vec<At<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Salesforce connection (default: the only one).
    pub connection: Option<At<String>>,
    /// The Salesforce object written (a Salesforce sink).
    #[serde(default)]
    pub sobject: Option<At<String>>,
    /// The Zoom object written (a Zoom sink: an entry of `ferry sinks`), instead of `sobject`.
    #[serde(default)]
    pub zoom: Option<At<String>>,
    /// Zoom sinks: the path parameters (`user_id`, `webinar_id`), templates.
    #[serde(default)]
    pub params: OrderedMap<At<String>, At<AnyValue>>,
    pub action: At<Choice<SinkActionSpec>>,
    /// upsert: the external-id field; insert: a template that identifies the record in the
    /// ledger (required); publish: optional idempotency key.
    pub key: Option<At<AnyValue>>,
    /// update: the Salesforce Id of the record to update.
    pub id: Option<At<AnyValue>>,
    /// Skip this sink for the record when false.
    pub when: Option<At<AnyValue>>,
    /// Write one Salesforce record per item.
    pub for_each: Option<At<AnyValue>>,
    #[serde(default)]
    pub fields: OrderedMap<At<String>, At<FieldSpec>>,
    /// update: find the record by this field instead of `id`.
    pub search_by: Option<At<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkActionSpec {
    Insert,
    Update,
    Upsert,
    Publish,
    /// Zoom sinks: create the object once per key.
    Create,
    /// Zoom sinks: delete the object this key created.
    Delete,
}

impl SinkActionSpec {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkActionSpec::Insert => "insert",
            SinkActionSpec::Update => "update",
            SinkActionSpec::Upsert => "upsert",
            SinkActionSpec::Publish => "publish",
            SinkActionSpec::Create => "create",
            SinkActionSpec::Delete => "delete",
        }
    }
}

/// A field's value: a scalar (template or literal) or `{value: ..., on_update: keep}`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldSpec {
    Plain(AnyValue),
    Detailed(FieldDetailSpec),
    /// A nested object (Zoom's `settings:`): a mapping without a `value` key.
    Nested(OrderedMap<At<String>, At<FieldSpec>>),
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDetailSpec {
    pub value: At<AnyValue>,
    #[serde(default)]
    pub on_update: Option<At<Choice<OnUpdateSpec>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUpdateSpec {
    /// Set on create; never overwrite what a person edited.
    Keep,
    /// Set on create and on every update (the default).
    Overwrite,
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or {value: ..., on_update: keep|overwrite}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Plain(AnyValue::String(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Plain(AnyValue::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Plain(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Plain(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Plain(
                    serde_json::Number::from_f64(v)
                        .map(AnyValue::Number)
                        .unwrap_or(AnyValue::Null),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Plain(AnyValue::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Plain(AnyValue::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<FieldSpec, A::Error> {
                let v = Vec::<AnyValue>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(FieldSpec::Plain(AnyValue::Array(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                // A mapping is the value/on_update form only when it has a `value` key;
                // otherwise it is a nested object whose leaves are values.
                let m = OrderedMap::<At<String>, At<FieldSpec>>::deserialize(
                    de::value::MapAccessDeserializer::new(map),
                )?;
                if !m.0.iter().any(|(k, _)| k.value == "value") {
                    return Ok(FieldSpec::Nested(m));
                }
                let mut value = None;
                let mut on_update = None;
                for (k, v) in m.0 {
                    match (k.value.as_str(), v.value) {
                        ("value", FieldSpec::Plain(p)) => value = Some(At::new(p, v.pos)),
                        ("value", _) => {
                            return Err(de::Error::custom(
                                "`value` takes a template or a literal, not a mapping",
                            ));
                        }
                        ("on_update", FieldSpec::Plain(p)) => {
                            let c = Choice::<OnUpdateSpec>::deserialize(&p)
                                .map_err(de::Error::custom)?;
                            on_update = Some(At::new(c, v.pos));
                        }
                        (other, _) => {
                            return Err(de::Error::custom(format!(
                                "unknown field `{other}`, expected `value` or `on_update`"
                            )));
                        }
                    }
                }
                let Some(value) = value else {
                    return Err(de::Error::custom("missing `value`"));
                };
                Ok(FieldSpec::Detailed(FieldDetailSpec { value, on_update }))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for FieldSpec {
    fn schema_name() -> Cow<'static, str> {
        "FieldValue".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> schemars::Schema {
        let detailed = generator.subschema_for::<FieldDetailSpec>();
        let nested = generator.subschema_for::<FieldSpec>();
        schemars::json_schema!({
            "description": "A template, a literal, {value: ..., on_update: keep|overwrite}, or (Zoom sinks) a nested object of such values",
            "anyOf": [
                { "type": ["string", "number", "boolean", "null", "array"] },
                detailed,
                { "type": "object", "additionalProperties": nested }
            ]
        })
    }
}

/// An offline test: a source record, canned lookup results, and what each sink must write.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    pub name: At<String>,
    /// The source record, with its enrichments under their names.
    #[serde(default)]
    pub record: AnyValue,
    /// Per lookup: for `for_each` lookups a map from match value to record, otherwise the
    /// matched record.
    #[serde(default)]
    pub lookups: OrderedMap<At<String>, AnyValue>,
    /// Per sink: the records it must produce (a subset match each; `[]` means none). A field
    /// expected `null` must be written as null; `<absent>` expects it not written at all.
    #[serde(default)]
    pub expect: OrderedMap<At<String>, Vec<AnyValue>>,
}
