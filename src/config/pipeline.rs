//! Pipeline files: resolving the raw spec into the typed [`Pipeline`], and every check that
//! needs the pipeline's structure: connections and streams, template names and filters
//! (rendered against a sample context), JSONPaths, sink order and keys, tests.

use super::at::{At, OrderedMap, Pos};
use super::catalog::{StreamCatalog, StreamInfo};
use super::diagnostic::Code;
use super::diagnostic::{Diagnostics, Problem, SourceFile, did_you_mean};
use super::events::{KNOWN_EVENTS, is_known_event};
use super::ferry_file::content_offset;
use super::model::*;
use super::spec::*;
use crate::template::names::{FilterUse, NameUse, Uses};
use crate::template::{FILTERS, ROOT_NAMES, Template, from_json, is_template};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Global functions minijinja provides; a template may call them without declaring them.
const BUILTIN_FUNCTIONS: &[&str] = &["range", "dict", "namespace", "debug", "cycler", "joiner"];

/// What the rest of ferry.yaml tells a pipeline.
pub(crate) struct ConfigFacts<'a> {
    pub connections: Vec<(String, ConnectionKind)>,
    /// None when ferry.yaml could not be read (its names are then not checked).
    pub settings: Option<Map<String, Value>>,
    pub known: bool,
    pub catalogs: &'a [&'a dyn StreamCatalog],
    /// Also report record fields that the stream's sample record lacks (`ferry validate`).
    pub strict_fields: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Source,
    Enrich,
    Lookup,
    Var,
    Sink,
}

/// Which names a template may use.
#[derive(Debug, Clone, Copy)]
struct Scope {
    stage: Stage,
    /// Index of the current item in its section (earlier ones are visible).
    upto: usize,
    item: bool,
}

pub(crate) struct PipelineResolver<'a> {
    file: &'a SourceFile,
    display: Arc<str>,
    facts: &'a ConfigFacts<'a>,
    diags: &'a mut Diagnostics,
    pipeline_name: String,
    /// The source stream's sample, when a catalog knows the stream.
    record_sample: Option<Map<String, Value>>,
    enrich_names: Vec<String>,
    enrich_samples: Map<String, Value>,
    lookup_names: Vec<String>,
    lookup_samples: Map<String, Value>,
    var_names: Vec<String>,
    var_samples: Map<String, Value>,
    sink_names: Vec<String>,
    sink_samples: Map<String, Value>,
    item_sample: Value,
}

impl<'a> PipelineResolver<'a> {
    pub fn new(
        file: &'a SourceFile,
        facts: &'a ConfigFacts<'a>,
        diags: &'a mut Diagnostics,
    ) -> Self {
        PipelineResolver {
            display: file.display.as_str().into(),
            file,
            facts,
            diags,
            pipeline_name: String::new(),
            record_sample: None,
            enrich_names: Vec::new(),
            enrich_samples: Map::new(),
            lookup_names: Vec::new(),
            lookup_samples: Map::new(),
            var_names: Vec::new(),
            var_samples: Map::new(),
            sink_names: Vec::new(),
            sink_samples: Map::new(),
            item_sample: Value::Null,
        }
    }

    fn pos(&self, p: Pos) -> SourcePos {
        SourcePos {
            file: self.display.clone(),
            line: p.line,
            column: p.column,
        }
    }

    fn problem(&mut self, code: Code, pos: Pos, message: impl Into<String>) -> &mut Problem {
        self.diags
            .push(Problem::at_pos(self.file, code, pos, message));
        let n = self.diags.problems.len() - 1;
        &mut self.diags.problems[n]
    }

    /// A `for_each` written as a literal must be a list (or null, no items); only a template
    /// may give a single value. `for_each: 42` or `for_each: participants` (a word without
    /// `{{ }}`) is a mistake that would otherwise run once with that value as the item.
    fn for_each_is_a_list(&mut self, f: &At<AnyValue>) -> bool {
        let what = match &f.value {
            Value::Array(_) | Value::Null => return true,
            Value::String(s) if is_template(s) => return true,
            Value::String(_) => "a text without `{{ }}`",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Object(_) => "a mapping",
        };
        let p = self.problem(
            Code::ForEachNotList,
            f.pos,
            format!("`for_each` must be a list or a template that gives one; this is {what}"),
        );
        p.label = Some("not a list".into());
        p.help = Some(match &f.value {
            Value::String(s) => {
                let s = s.trim();
                let rooted = ROOT_NAMES.iter().any(|r| s.starts_with(&format!("{r}.")));
                let path = if rooted {
                    s.to_string()
                } else {
                    format!("record.{s}")
                };
                format!("did you mean `\"{{{{ {path} }}}}\"`?")
            }
            _ => "write a template like `\"{{ record.participants }}\"` or a list `[a, b]`".into(),
        });
        false
    }

    fn errors(&self) -> usize {
        self.diags.errors().count()
    }

    pub fn resolve(mut self, spec: &PipelineSpec) -> Option<Pipeline> {
        let before = self.errors();
        self.pipeline_name = spec.pipeline.value.clone();
        if spec.pipeline.value.trim().is_empty()
            || spec
                .pipeline
                .value
                .chars()
                .any(|c| c.is_whitespace() || c == '/')
        {
            self.problem(
                Code::BadName,
                spec.pipeline.pos,
                format!("`{}` is not a pipeline name", spec.pipeline.value),
            )
            .help = Some("use letters, digits, `-` and `_`, like meetings-to-events".into());
        }
        let schedule = spec.schedule.as_ref().and_then(|s| self.schedule(s));
        let source = self.source(&spec.source);
        let triggers = self.triggers(&spec.triggers, source.as_ref());
        let all_enrich: Vec<String> = spec.enrich.iter().map(|(k, _)| k.value.clone()).collect();
        let mut enrich = Vec::new();
        for (i, (name, e)) in spec.enrich.iter().enumerate() {
            if let Some(e) = self.enrich(i, name, e) {
                enrich.push(e);
            }
        }
        self.enrich_names = all_enrich;
        let mut lookups = Vec::new();
        for (i, (name, l)) in spec.lookups.iter().enumerate() {
            if let Some(l) = self.lookup(i, name, l, &spec.lookups) {
                lookups.push(l);
            }
            self.lookup_names.push(name.value.clone());
        }
        let mut vars = Vec::new();
        for (i, (name, v)) in spec.vars.iter().enumerate() {
            let scope = Scope {
                stage: Stage::Var,
                upto: i,
                item: false,
            };
            if let Some(e) = self.expr(v, scope) {
                let sample = self.sample_eval(&e.value, scope);
                self.var_samples.insert(name.value.clone(), sample);
                vars.push((name.value.clone(), e));
            }
            self.var_names.push(name.value.clone());
        }
        let mut sinks = Vec::new();
        for (i, (name, s)) in spec.sinks.iter().enumerate() {
            if let Some(s) = self.sink(i, name, s) {
                sinks.push(s);
            }
            self.sink_names.push(name.value.clone());
        }
        crate::config::mark_sinks_read_later(&mut sinks);
        // A pipeline with lookups and no sinks is a report (people not in Salesforce).
        if spec.sinks.is_empty() && spec.lookups.is_empty() {
            let end = self.file.text.len();
            self.diags.push(
                Problem::at(
                    self.file,
                    Code::NoSinks,
                    end,
                    0,
                    "the pipeline has no `sinks`",
                )
                .warning()
                .label("nothing is written")
                .help("add a `sinks:` section, or `lookups:` to report who is not in Salesforce"),
            );
        }
        let tests = self.tests(&spec.tests, spec);
        if self.errors() > before {
            return None;
        }
        Some(Pipeline {
            name: spec.pipeline.value.clone(),
            description: spec.description.clone(),
            file: self.file.path.clone(),
            pos: self.pos(spec.pipeline.pos),
            schedule: schedule.flatten(),
            triggers,
            source: source?.0,
            enrich,
            lookups,
            vars,
            sinks,
            tests,
        })
    }

    // -----------------------------------------------------------------------------------
    // schedule, triggers

    fn schedule(&mut self, s: &At<ScheduleSpec>) -> Option<Option<Schedule>> {
        let (text, pos, cron_only) = match &s.value {
            ScheduleSpec::Text(t) => (t.clone(), s.pos, false),
            ScheduleSpec::Cron(c) => (c.value.clone(), c.pos, true),
        };
        let parsed = if cron_only {
            parse_cron(&text)
        } else {
            parse_schedule(&text)
        };
        match parsed {
            Ok(s) => Some(Some(s)),
            Err(e) => {
                self.problem(Code::BadSchedule, pos, e.to_string()).label =
                    Some("invalid schedule".into());
                let p = self.diags.problems.last_mut()?;
                p.help = Some(
                    "write an interval (30s, 15m, 2h, 1d) or 5 cron fields: minute hour day month weekday"
                        .into(),
                );
                None
            }
        }
    }

    fn triggers(
        &mut self,
        triggers: &[At<String>],
        source: Option<&(Source, Option<StreamInfo>)>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for t in triggers {
            if !is_known_event(&t.value) {
                let help = did_you_mean(&t.value, KNOWN_EVENTS.iter().copied())
                    .unwrap_or_else(|| "known events include meeting.ended, recording.completed, webinar.ended, phone.callee_ended".into());
                let p = self.problem(
                    Code::UnknownEvent,
                    t.pos,
                    format!("`{}` is not a Zoom webhook event ferry knows", t.value),
                );
                p.label = Some("unknown event".into());
                p.help = Some(help);
                continue;
            }
            if let Some((src, Some(info))) = source
                && !info.triggers.is_empty()
                && !info.triggers.contains(&t.value)
            {
                let p = self.problem(
                    Code::TriggerForStream,
                    t.pos,
                    format!(
                        "`{}` cannot trigger a pipeline reading `{}`",
                        t.value, src.stream
                    ),
                );
                p.label = Some("not an event of this stream".into());
                p.help = Some(format!(
                    "events for this stream: {}",
                    info.triggers.join(", ")
                ));
                continue;
            }
            if let Some((src, Some(info))) = source
                && !info.single_fetch
            {
                let p = self.problem(
                    Code::NotTriggerable,
                    t.pos,
                    format!(
                        "`{}` cannot trigger a pipeline reading `{}`: that stream has no single-record fetch",
                        t.value, src.stream
                    ),
                );
                p.label = Some("nothing to fetch for one event".into());
                p.help = Some(
                    "remove `triggers:` and run it on a `schedule:`, or read a stream the event names one record of (see `ferry streams`)"
                        .into(),
                );
                continue;
            }
            out.push(t.value.clone());
        }
        out
    }

    // -----------------------------------------------------------------------------------
    // connections and streams

    /// Splits `<connection>.<stream>` and resolves the connection of the wanted kind.
    fn stream_ref(&mut self, s: &At<String>, kind: ConnectionKind) -> Option<(String, String)> {
        let text = s.value.trim();
        let of_kind: Vec<&str> = self
            .facts
            .connections
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(n, _)| n.as_str())
            .collect();
        if let Some((conn, stream)) = text.split_once('.') {
            match self.facts.connections.iter().find(|(n, _)| n == conn) {
                Some((_, k)) if *k == kind => return Some((conn.to_string(), stream.to_string())),
                Some((_, k)) => {
                    let p = self.problem(
                        Code::WrongConnectionKind,
                        s.pos,
                        format!(
                            "connection `{conn}` is {}, not {}",
                            k.as_str(),
                            kind.as_str()
                        ),
                    );
                    p.label = Some("wrong kind of connection".into());
                    p.help = Some(match of_kind.as_slice() {
                        [] => format!("add a `kind: {}` connection to ferry.yaml", kind.as_str()),
                        names => format!("{} connections: {}", kind.as_str(), names.join(", ")),
                    });
                    return None;
                }
                None if !self.facts.known => return Some((conn.to_string(), stream.to_string())),
                None => {
                    let names: Vec<&str> = self
                        .facts
                        .connections
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect();
                    let help = did_you_mean(conn, names.iter().copied()).unwrap_or_else(|| {
                        if names.is_empty() {
                            "ferry.yaml has no connections".into()
                        } else {
                            format!("connections in ferry.yaml: {}", names.join(", "))
                        }
                    });
                    let p = self.problem(
                        Code::UnknownConnection,
                        s.pos,
                        format!("no connection named `{conn}` in ferry.yaml"),
                    );
                    p.label = Some("unknown connection".into());
                    p.help = Some(help);
                    return None;
                }
            }
        }
        if !self.facts.known {
            return Some((String::new(), text.to_string()));
        }
        match of_kind.as_slice() {
            [one] => Some((one.to_string(), text.to_string())),
            [] => {
                let p = self.problem(
                    Code::UnknownConnection,
                    s.pos,
                    format!("ferry.yaml has no {} connection", kind.as_str()),
                );
                p.label = Some("no connection to read this from".into());
                p.help = Some(format!("add a connection with `kind: {}`", kind.as_str()));
                None
            }
            many => {
                let p = self.problem(
                    Code::AmbiguousConnection,
                    s.pos,
                    format!("ferry.yaml has several {} connections", kind.as_str()),
                );
                p.label = Some("which one?".into());
                p.help = Some(format!(
                    "write `<connection>.{text}`, one of: {}",
                    many.join(", ")
                ));
                None
            }
        }
    }

    fn catalog(&self, kind: ConnectionKind) -> Option<&'a dyn StreamCatalog> {
        self.facts
            .catalogs
            .iter()
            .copied()
            .find(|c| c.kind() == kind.as_str())
    }

    /// Looks the stream up in the catalog for its kind; unknown streams are reported only
    /// when a catalog for that kind is registered.
    fn stream_info(&mut self, s: &At<String>, stream: &str) -> Option<StreamInfo> {
        self.stream_info_of(ConnectionKind::Zoom, s, stream)
    }

    fn stream_info_of(
        &mut self,
        kind: ConnectionKind,
        s: &At<String>,
        stream: &str,
    ) -> Option<StreamInfo> {
        let catalog = self.catalog(kind)?;
        if let Some(info) = catalog.stream(stream) {
            return Some(info);
        }
        if stream == "request" {
            return None;
        }
        let names = catalog.names();
        let help = did_you_mean(stream, names.iter().map(String::as_str))
            .unwrap_or_else(|| "`ferry streams` lists them".into());
        let p = self.problem(
            Code::UnknownStream,
            s.pos,
            format!("no stream named `{stream}`"),
        );
        p.label = Some("unknown stream".into());
        p.help = Some(help);
        None
    }

    fn params(
        &mut self,
        params: &OrderedMap<At<String>, At<AnyValue>>,
        stream: &str,
        info: Option<&StreamInfo>,
        stream_pos: Pos,
        scope: Scope,
    ) -> Vec<(String, LocatedExpr)> {
        let mut out = Vec::new();
        for (k, v) in params.iter() {
            if let Some(info) = info
                && !info.params.contains(&k.value)
            {
                let help = did_you_mean(&k.value, info.params.iter().map(String::as_str))
                    .unwrap_or_else(|| {
                        if info.params.is_empty() {
                            "this stream takes no parameters".into()
                        } else {
                            format!("parameters: {}", info.params.join(", "))
                        }
                    });
                let p = self.problem(
                    Code::UnknownParam,
                    k.pos,
                    format!("stream `{stream}` has no parameter `{}`", k.value),
                );
                p.label = Some("unknown parameter".into());
                p.help = Some(help);
            }
            if stream == "request" && k.value == "record_selector" {
                self.jsonpath(v);
            }
            if let Some(e) = self.expr(v, scope) {
                out.push((k.value.clone(), e));
            }
        }
        if let Some(info) = info {
            for r in &info.required_params {
                if !params.iter().any(|(k, _)| &k.value == r) {
                    let p = self.problem(
                        Code::MissingParam,
                        stream_pos,
                        format!("stream `{stream}` needs the parameter `{r}`"),
                    );
                    p.label = Some("missing parameter".into());
                    p.help = Some(format!("add `params: {{ {r}: ... }}`"));
                }
            }
        }
        if stream == "request" && !params.iter().any(|(k, _)| k.value == "path") {
            let p = self.problem(
                Code::MissingParam,
                stream_pos,
                "`request` needs a `path` parameter",
            );
            p.label = Some("no path".into());
            p.help =
                Some("add `params: { path: \"/users/{{ record.host_id }}/settings\" }`".into());
        }
        out
    }

    fn jsonpath(&mut self, v: &At<AnyValue>) {
        let Some(path) = v.value.as_str() else {
            let p = self.problem(
                Code::WrongType,
                v.pos,
                "`record_selector` must be a JSONPath string",
            );
            p.label = Some("not a string".into());
            return;
        };
        if let Err(e) = jsonpath_rust::parser::parse_json_path(path) {
            let reason = e.to_string();
            // pest reports ` --> 1:COL`; place the caret there.
            let col = reason
                .split("1:")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(1);
            let off = content_offset(self.file, v.pos) + col.saturating_sub(1).min(path.len());
            let short = reason
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with('='))
                .map(|l| l.trim_start().trim_start_matches('=').trim().to_string())
                .unwrap_or_else(|| reason.lines().next().unwrap_or("").to_string());
            self.diags.push(
                Problem::at(
                    self.file,
                    Code::Jsonpath,
                    off,
                    1,
                    format!("`{path}` is not a valid JSONPath: {short}"),
                )
                .label("here")
                .help("JSONPath as in RFC 9535, like `$.users[*]`"),
            );
        }
    }

    /// The kind of connection a source reads: Salesforce when the stream names a
    /// Salesforce connection (`salesforce.records`), else Zoom.
    fn source_kind(&self, s: &At<String>) -> ConnectionKind {
        let Some((conn, _)) = s.value.trim().split_once('.') else {
            return ConnectionKind::Zoom;
        };
        match self.facts.connections.iter().find(|(n, _)| n == conn) {
            Some((_, k)) => *k,
            None if !self.facts.known && conn == "salesforce" => ConnectionKind::Salesforce,
            None => ConnectionKind::Zoom,
        }
    }

    /// Checks a Salesforce source's `sobject` and `select` where they are literals, and
    /// answers the record sample its `select` gives.
    fn salesforce_params(&mut self, s: &SourceSpec) -> Map<String, Value> {
        use crate::connectors::salesforce::source::{field_path_problem, is_api_name};
        let get = |k: &str| {
            s.params
                .iter()
                .find(|(key, _)| key.value == k)
                .map(|(_, v)| v)
        };
        if let Some(v) = get("sobject")
            && let Value::String(name) = &v.value
            && !is_template(name)
            && !is_api_name(name.trim())
        {
            let p = self.problem(
                Code::WrongType,
                v.pos,
                format!("`{name}` is not an sObject name"),
            );
            p.label = Some("not an object name".into());
            p.help = Some("an API name like Event, CampaignMember or Zoom_Call__c".into());
        }
        let mut select = Vec::new();
        if let Some(v) = get("select") {
            match &v.value {
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(f) => {
                                if let Some(why) = field_path_problem(f.trim()) {
                                    let p = self.problem(Code::WrongType, v.pos, why);
                                    p.label = Some("not a field this source reads".into());
                                    p.help = Some(
                                        "list field API names; parent fields one level up, like Owner.Email".into(),
                                    );
                                } else {
                                    select.push(f.trim().to_string());
                                }
                            }
                            other => {
                                let p = self.problem(
                                    Code::WrongType,
                                    v.pos,
                                    format!("`select` lists field names; `{other}` is not one"),
                                );
                                p.label = Some("not a field name".into());
                            }
                        }
                    }
                }
                other => {
                    let p = self.problem(
                        Code::WrongType,
                        v.pos,
                        format!("`select` is a list of field names, not `{other}`"),
                    );
                    p.label = Some("not a list".into());
                    p.help = Some("write it like `select: [Id, Subject, Owner.Email]`".into());
                }
            }
        }
        let deleted = get("deleted").is_some_and(|v| v.value == Value::Bool(true));
        crate::connectors::salesforce::catalog::sample_for(&select, deleted)
    }

    fn source(&mut self, s: &SourceSpec) -> Option<(Source, Option<StreamInfo>)> {
        let scope = Scope {
            stage: Stage::Source,
            upto: 0,
            item: false,
        };
        let kind = self.source_kind(&s.stream);
        let resolved = self.stream_ref(&s.stream, kind);
        let info = match &resolved {
            Some((_, stream)) => self.stream_info_of(kind, &s.stream, stream),
            None => None,
        };
        if let Some(info) = &info {
            self.record_sample = Some(match &info.sample {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            });
        }
        if kind == ConnectionKind::Salesforce && info.is_some() {
            let sample = self.salesforce_params(s);
            self.record_sample = Some(sample);
        }
        let stream_name = resolved.as_ref().map(|r| r.1.clone()).unwrap_or_default();
        let params = self.params(&s.params, &stream_name, info.as_ref(), s.stream.pos, scope);
        let since = s.since.as_ref().and_then(|t| {
            let parsed = parse_since(&t.value);
            if parsed.is_none() {
                let p = self.problem(Code::BadTime, t.pos, format!("`{}` is not a time", t.value));
                p.label = Some("not RFC 3339".into());
                p.help = Some("write it like 2026-01-01T00:00:00Z".into());
            }
            parsed
        });
        let lookback = s.lookback.as_ref().and_then(|d| self.duration(d));
        if let Some(info) = &info
            && !info.incremental
        {
            for (key, at) in [
                ("since", s.since.as_ref()),
                ("lookback", s.lookback.as_ref()),
            ] {
                if let Some(at) = at {
                    let p = self.problem(
                        Code::NotIncremental,
                        at.pos,
                        format!("`{key}` applies to incremental streams; `{stream_name}` is read whole each run"),
                    );
                    p.label = Some("has no effect".into());
                    p.help = Some(format!("remove `{key}`"));
                }
            }
        }
        let where_ = s.where_.as_ref().and_then(|w| self.expr(w, scope));
        let (connection, stream) = resolved?;
        Some((
            Source {
                connection,
                stream,
                params,
                since,
                lookback,
                where_,
                pos: self.pos(s.stream.pos),
            },
            info,
        ))
    }

    fn duration(&mut self, d: &At<String>) -> Option<std::time::Duration> {
        match parse_duration(&d.value) {
            Ok(v) => Some(v),
            Err(e) => {
                let p = self.problem(Code::BadDuration, d.pos, e.to_string());
                p.label = Some("not a duration".into());
                p.help = Some("durations look like 30s, 15m, 2h, 24h, 1d".into());
                None
            }
        }
    }

    fn enrich(&mut self, i: usize, name: &At<String>, e: &EnrichSpec) -> Option<Enrich> {
        let scope = Scope {
            stage: Stage::Enrich,
            upto: i,
            item: false,
        };
        self.check_name(name, "enrich");
        let resolved = self.stream_ref(&e.stream, ConnectionKind::Zoom);
        let info = match &resolved {
            Some((_, stream)) => self.stream_info(&e.stream, stream),
            None => None,
        };
        let stream_name = resolved.as_ref().map(|r| r.1.clone()).unwrap_or_default();
        let single = self
            .catalog(ConnectionKind::Zoom)
            .is_some_and(|c| c.single_record(&stream_name));
        let sample = match &info {
            Some(info) if single => info.sample.clone(),
            Some(info) => Value::Array(vec![info.sample.clone()]),
            None => Value::Null,
        };
        self.enrich_samples.insert(name.value.clone(), sample);
        if let Some(rs) = &self.record_sample
            && rs.contains_key(&name.value)
        {
            let p = self.problem(
                Code::ShadowedField,
                name.pos,
                format!(
                    "`{}` is already a field of the source record; this enrich would replace it",
                    name.value
                ),
            );
            p.severity = Severity::Warning;
            p.label = Some("replaces record field".into());
        }
        let params = self.params(&e.params, &stream_name, info.as_ref(), e.stream.pos, scope);
        let when = e.when.as_ref().and_then(|w| self.expr(w, scope));
        let (connection, stream) = resolved?;
        Some(Enrich {
            name: name.value.clone(),
            connection,
            stream,
            params,
            when,
            optional: e.optional,
            pos: self.pos(name.pos),
        })
    }

    /// The word a [`Choice`] holds; one that is not one of its words is reported here.
    fn choice<T: Copy>(&mut self, c: &At<Choice<T>>) -> Option<T> {
        match &c.value {
            Choice::Known(t) => Some(*t),
            Choice::Unknown { reason, .. } => {
                self.diags
                    .push(super::yaml::choice_problem(self.file, c.pos, reason));
                None
            }
        }
    }

    fn check_name(&mut self, name: &At<String>, what: &str) {
        let ok = !name.value.is_empty()
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.value.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            let p = self.problem(
                Code::BadName,
                name.pos,
                format!(
                    "`{}` cannot be used as a {what} name in templates",
                    name.value
                ),
            );
            p.label = Some("not an identifier".into());
            p.help = Some("use letters, digits and `_`, starting with a letter".into());
        }
    }

    fn salesforce_connection(&mut self, c: &Option<At<String>>, at: Pos) -> Option<String> {
        if !self.facts.known {
            return Some(c.as_ref().map(|c| c.value.clone()).unwrap_or_default());
        }
        match c {
            Some(c) => {
                let name = c.value.clone();
                let r = self.stream_ref(
                    &At::new(format!("{name}.x"), c.pos),
                    ConnectionKind::Salesforce,
                );
                r.map(|r| r.0)
            }
            None => self
                .stream_ref(&At::new("x".into(), at), ConnectionKind::Salesforce)
                .map(|r| r.0),
        }
    }

    fn lookup(
        &mut self,
        i: usize,
        name: &At<String>,
        l: &LookupSpec,
        all: &OrderedMap<At<String>, LookupSpec>,
    ) -> Option<Lookup> {
        let _ = all;
        self.check_name(name, "lookup");
        let before = self.errors();
        let connection = self.salesforce_connection(&l.connection, name.pos);
        let base = Scope {
            stage: Stage::Lookup,
            upto: i,
            item: false,
        };
        let for_each = l
            .for_each
            .as_ref()
            .filter(|f| self.for_each_is_a_list(f))
            .and_then(|f| self.expr(f, base));
        let item_scope = Scope {
            item: l.for_each.is_some(),
            ..base
        };
        self.item_sample = match &for_each {
            Some(f) => first_item(&self.sample_eval(&f.value, base)),
            None => Value::Null,
        };
        let skip = l.skip.as_ref().and_then(|s| self.expr(s, item_scope));
        if l.match_.value.is_empty() {
            let p = self.problem(
                Code::EmptyMatch,
                l.match_.pos,
                format!("lookup `{}` has no match rules", name.value),
            );
            p.label = Some("empty".into());
            p.help =
                Some("add `- sobject: Contact\n  where: { Email: \"{{ item.email }}\" }`".into());
        }
        let mut rules = Vec::new();
        let mut fields = Map::new();
        for r in &l.match_.value {
            if r.where_.is_empty() {
                let p = self.problem(
                    Code::EmptyMatch,
                    r.sobject.pos,
                    format!("the `{}` rule has no `where` conditions", r.sobject.value),
                );
                p.label = Some("would match every record".into());
                p.help = Some("add `where: { Field: \"{{ ... }}\" }`".into());
            }
            let mut where_ = Vec::new();
            for (k, v) in r.where_.iter() {
                if let Some(e) = self.expr(v, item_scope) {
                    where_.push((k.value.clone(), e));
                }
            }
            let mut select: Vec<String> = r.select.iter().map(|s| s.value.clone()).collect();
            if !select.iter().any(|s| s == "Id") {
                select.insert(0, "Id".into());
            }
            for f in &select {
                let leaf = f.rsplit('.').next().unwrap_or(f);
                insert_path(&mut fields, f, sample_sf_value(leaf, &r.sobject.value));
            }
            rules.push(MatchRule {
                sobject: r.sobject.value.clone(),
                where_,
                select,
                pos: self.pos(r.sobject.pos),
            });
        }
        fields.insert(
            "sobject".into(),
            Value::String(
                l.match_
                    .value
                    .first()
                    .map(|r| r.sobject.value.clone())
                    .unwrap_or_default(),
            ),
        );
        let sample = if for_each.is_some() {
            let mut matched = fields.clone();
            matched.insert("item".into(), self.item_sample.clone());
            json!({
                "matched": [Value::Object(matched)],
                "unmatched": [self.item_sample.clone()],
                "skipped": [self.item_sample.clone()],
            })
        } else {
            Value::Object(fields)
        };
        self.lookup_samples.insert(name.value.clone(), sample);
        self.item_sample = Value::Null;
        let cache = l.cache.as_ref().and_then(|c| self.duration(c));
        if self.errors() > before {
            return None;
        }
        Some(Lookup {
            name: name.value.clone(),
            connection: connection?,
            for_each,
            skip,
            rules,
            cache,
            pos: self.pos(name.pos),
        })
    }

    fn sink(&mut self, i: usize, name: &At<String>, s: &SinkSpec) -> Option<Sink> {
        self.check_name(name, "sink");
        let before = self.errors();
        let is_zoom = s.zoom.is_some();
        let connection = if is_zoom {
            Some(
                s.connection
                    .as_ref()
                    .map(|c| c.value.clone())
                    .unwrap_or_else(|| "zoom".into()),
            )
        } else {
            self.salesforce_connection(&s.connection, name.pos)
        };
        let sobject = self.sink_object(name, s);
        let base = Scope {
            stage: Stage::Sink,
            upto: i,
            item: false,
        };
        let mut depends_on: Vec<String> = Vec::new();
        let mut note = |deps: Vec<String>| {
            for d in deps {
                if !depends_on.contains(&d) {
                    depends_on.push(d);
                }
            }
        };
        let mut compile = |this: &mut Self, v: &At<AnyValue>, scope: Scope| {
            let e = this.expr(v, scope);
            if let Some(t) = e.as_ref().and_then(|e| e.value.as_template()) {
                note(referenced(t, "sinks"));
            }
            e
        };
        let when = s.when.as_ref().and_then(|w| compile(self, w, base));
        let for_each = s
            .for_each
            .as_ref()
            .filter(|f| self.for_each_is_a_list(f))
            .and_then(|f| compile(self, f, base));
        let item_scope = Scope {
            item: s.for_each.is_some(),
            ..base
        };
        self.item_sample = match &for_each {
            Some(f) => first_item(&self.sample_eval(&f.value, base)),
            None => Value::Null,
        };
        let id = s.id.as_ref().and_then(|v| compile(self, v, item_scope));
        let mut fields = Vec::new();
        let mut sample = Map::new();
        sample.insert("Id".into(), Value::String(format!("a0{}SAMPLE", i)));
        sample.insert("created".into(), Value::Bool(true));
        let mut leaves: Vec<(At<String>, At<FieldSpec>)> = Vec::new();
        flatten_fields("", &s.fields, &mut leaves);
        if !is_zoom {
            for (k, v) in &leaves {
                if k.value.contains('.') && !s.fields.iter().any(|(n, _)| n.value == k.value) {
                    let p = self.problem(
                        Code::WrongType,
                        v.pos,
                        format!(
                            "`{}`: a Salesforce field takes a value, not a mapping",
                            k.value
                        ),
                    );
                    p.help = Some("write `{value: ..., on_update: keep}` or a single value".into());
                }
            }
        }
        for (k, v) in leaves.iter() {
            let (value, on_update) = match &v.value {
                FieldSpec::Plain(p) => (At::new(p.clone(), v.pos), OnUpdate::Overwrite),
                FieldSpec::Nested(_) => continue,
                FieldSpec::Detailed(d) => (
                    d.value.clone(),
                    match d.on_update.as_ref().and_then(|o| self.choice(o)) {
                        Some(OnUpdateSpec::Keep) => OnUpdate::Keep,
                        _ => OnUpdate::Overwrite,
                    },
                ),
            };
            if let Some(e) = compile(self, &value, item_scope) {
                let sv = self.sample_eval(&e.value, item_scope);
                sample.insert(k.value.clone(), sv);
                fields.push(FieldMapping {
                    name: k.value.clone(),
                    value: e,
                    on_update,
                });
            }
        }
        let action = self.choice(&s.action);
        let zoom = if is_zoom {
            let params: Vec<(String, LocatedExpr)> = s
                .params
                .iter()
                .filter_map(|(k, v)| compile(self, v, item_scope).map(|e| (k.value.clone(), e)))
                .collect();
            self.zoom_sink(name, s, action, params)
        } else {
            if let Some(a @ (SinkActionSpec::Create | SinkActionSpec::Delete)) = action {
                let p = self.problem(
                    Code::UnknownValue,
                    s.action.pos,
                    format!("`{}` is an action of Zoom sinks; a Salesforce sink takes insert, update, upsert or publish", a.as_str()),
                );
                p.label = Some("not a Salesforce action".into());
            }
            None
        };
        if let Some(z) = &zoom {
            for f in self.zoom_returns(&z.object) {
                sample.insert(f, Value::String("SAMPLE".into()));
            }
        }
        let key = match action {
            Some(_) if is_zoom => match &s.key {
                Some(k) => compile(self, k, item_scope).map(SinkKey::Template),
                None => {
                    if !(action == Some(SinkActionSpec::Update)
                        || (action == Some(SinkActionSpec::Delete) && s.id.is_some()))
                    {
                        let p = self.problem(
                            Code::MissingKey,
                            s.action.pos,
                            format!("Zoom sink `{}` has no `key`", name.value),
                        );
                        p.label = Some("the ledger needs a key".into());
                        p.help = Some("add `key: \"{{ record.Id }}\"`: a value that names the Zoom object this record owns".into());
                    }
                    None
                }
            },
            Some(action) => self.sink_key(action, s, name, item_scope, &mut compile),
            // The action is reported; a key written as a template is still checked.
            None => s
                .key
                .as_ref()
                .filter(|k| k.value.as_str().is_some_and(is_template))
                .and_then(|k| compile(self, k, item_scope))
                .map(SinkKey::Template),
        };
        self.item_sample = Value::Null;
        match action {
            _ if is_zoom => {}
            Some(SinkActionSpec::Update) if s.id.is_none() && s.search_by.is_none() => {
                let p = self.problem(
                    Code::MissingId,
                    s.action.pos,
                    format!("sink `{}` updates records but has no `id`", name.value),
                );
                p.label = Some("update needs `id`".into());
                p.help = Some("add `id: \"{{ lookups.NAME.Id }}\"` (or use `action: upsert` with an external-id `key`)".into());
            }
            Some(SinkActionSpec::Publish) if !sobject.value.ends_with("__e") => {
                let p = self.problem(
                    Code::PublishSobject,
                    sobject.pos,
                    format!(
                        "`publish` writes Platform Events; `{}` is not one",
                        sobject.value
                    ),
                );
                p.label = Some("not a Platform Event".into());
                p.help = Some("Platform Event names end in `__e`".into());
            }
            _ => {}
        }
        if let Some(sb) = &s.search_by
            && action.is_some_and(|a| a != SinkActionSpec::Update)
        {
            let p = self.problem(
                Code::SearchBy,
                sb.pos,
                "`search_by` applies to `action: update` only",
            );
            p.label = Some("ignored for this action".into());
        }
        if let Some(action) = action
            && action != SinkActionSpec::Update
            && !(is_zoom && action == SinkActionSpec::Delete)
            && let Some(idv) = &s.id
        {
            let p = self.problem(
                Code::IdNotUpdate,
                idv.pos,
                format!(
                    "`id` applies to `action: update`; this sink is `{}`",
                    action.as_str()
                ),
            );
            p.label = Some("not used".into());
            p.help = Some("remove `id`, or change the action to update".into());
        }
        self.sink_samples
            .insert(name.value.clone(), Value::Object(sample));
        if self.errors() > before {
            return None;
        }
        Some(Sink {
            name: name.value.clone(),
            connection: connection?,
            sobject: sobject.value.clone(),
            action: match action? {
                SinkActionSpec::Insert | SinkActionSpec::Create => SinkAction::Insert,
                SinkActionSpec::Update | SinkActionSpec::Delete => SinkAction::Update,
                SinkActionSpec::Upsert => SinkAction::Upsert,
                SinkActionSpec::Publish => SinkAction::Publish,
            },
            key,
            id,
            when,
            for_each,
            fields,
            search_by: s.search_by.as_ref().map(|s| s.value.clone()),
            depends_on,
            read_later: true,
            zoom,
            pos: self.pos(name.pos),
        })
    }

    /// The object a sink writes: `sobject`, or `zoom:NAME` for a Zoom sink; exactly one.
    fn sink_object(&mut self, name: &At<String>, s: &SinkSpec) -> At<String> {
        match (&s.sobject, &s.zoom) {
            (Some(o), None) => o.clone(),
            (None, Some(z)) => At::new(format!("zoom:{}", z.value), z.pos),
            (Some(o), Some(_)) => {
                let p = self.problem(
                    Code::WrongType,
                    o.pos,
                    format!("sink `{}` names both `sobject` and `zoom`", name.value),
                );
                p.help = Some("a sink writes either a Salesforce object or a Zoom object".into());
                o.clone()
            }
            (None, None) => {
                let p = self.problem(
                    Code::MissingKey,
                    name.pos,
                    format!("sink `{}` names no object", name.value),
                );
                p.help = Some("add `sobject: Event` (Salesforce) or `zoom: meeting` (`ferry sinks` lists them)".into());
                At::new(String::new(), name.pos)
            }
        }
    }

    /// The fields a Zoom object returns (for `sinks.NAME.*`), secrets left out.
    fn zoom_returns(&self, object: &str) -> Vec<String> {
        crate::connectors::zoom::sink::sink_catalog()
            .get(object)
            .map(|d| {
                d.returns
                    .iter()
                    .filter(|f| !d.is_secret(f))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks a Zoom sink against the sink catalog: the object, the action it takes, its
    /// params, its fields (nested ones too) and literal values.
    fn zoom_sink(
        &mut self,
        name: &At<String>,
        s: &SinkSpec,
        action: Option<SinkActionSpec>,
        params: Vec<(String, LocatedExpr)>,
    ) -> Option<ZoomSink> {
        let z = s.zoom.as_ref()?;
        let cat = crate::connectors::zoom::sink::sink_catalog();
        let Some(def) = cat.get(&z.value) else {
            let p = self.problem(
                Code::UnknownSink,
                z.pos,
                format!("Zoom has no sink object `{}`", z.value),
            );
            p.label = Some("not in `ferry sinks`".into());
            p.help = did_you_mean(&z.value, cat.names());
            return None;
        };
        let za = match action? {
            SinkActionSpec::Create => ZoomAction::Create,
            SinkActionSpec::Update => ZoomAction::Update,
            SinkActionSpec::Upsert => ZoomAction::Upsert,
            SinkActionSpec::Delete => ZoomAction::Delete,
            other => {
                let p = self.problem(
                    Code::UnknownValue,
                    s.action.pos,
                    format!(
                        "a Zoom sink takes create, update, upsert or delete, not `{}`",
                        other.as_str()
                    ),
                );
                p.label = Some("not a Zoom action".into());
                return None;
            }
        };
        if !def.actions().contains(&za.as_str()) {
            let p = self.problem(
                Code::UnknownValue,
                s.action.pos,
                format!(
                    "Zoom's {} takes {}, not `{}`",
                    def.name,
                    def.actions().join(", "),
                    za.as_str()
                ),
            );
            p.label = Some("not an action of this object".into());
            return None;
        }
        let known = def.all_params();
        for (k, _) in s.params.iter() {
            if !known.contains(&k.value) {
                let p = self.problem(
                    Code::UnknownParam,
                    k.pos,
                    format!("Zoom's {} has no param `{}`", def.name, k.value),
                );
                p.label = Some("unknown param".into());
                p.help = did_you_mean(&k.value, known.iter().map(String::as_str)).or_else(|| {
                    Some(if known.is_empty() {
                        format!("Zoom's {} takes no params", def.name)
                    } else {
                        format!("it takes: {}", known.join(", "))
                    })
                });
            }
        }
        // The params the action's path needs.
        let call = match za {
            ZoomAction::Create | ZoomAction::Upsert => def.create.as_ref(),
            ZoomAction::Update => def.update.as_ref(),
            ZoomAction::Delete => def.delete.as_ref(),
        };
        if let Some(c) = call {
            for need in crate::connectors::zoom::sink::path_params(&c.path) {
                if !s.params.iter().any(|(k, _)| k.value == need) {
                    let p = self.problem(
                        Code::MissingParam,
                        s.zoom.as_ref().map_or(name.pos, |z| z.pos),
                        format!(
                            "Zoom's {} {} needs the param `{need}`",
                            def.name,
                            za.as_str()
                        ),
                    );
                    p.help = Some(format!("add `params: {{ {need}: \"{{{{ ... }}}}\" }}`"));
                }
            }
        }
        if za == ZoomAction::Delete {
            return Some(ZoomSink {
                object: def.name.clone(),
                action: za,
                params,
            });
        }
        let mut leaves: Vec<(At<String>, At<FieldSpec>)> = Vec::new();
        flatten_fields("", &s.fields, &mut leaves);
        let mut literal = serde_json::Map::new();
        for (k, v) in &leaves {
            let path: Vec<&str> = k.value.split('.').collect();
            if def.field(&path).is_none() {
                let (parent, leaf) = match path.split_last() {
                    Some((leaf, parent)) => (parent, *leaf),
                    None => (&[][..], k.value.as_str()),
                };
                let siblings: Vec<String> = if parent.is_empty() {
                    def.fields.keys().cloned().collect()
                } else {
                    def.field(parent)
                        .and_then(|f| f.fields.as_ref())
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default()
                };
                let p = self.problem(
                    Code::UnknownField,
                    k.pos,
                    format!("Zoom's {} has no field `{}`", def.name, k.value),
                );
                p.label = Some("unknown field".into());
                p.help = did_you_mean(leaf, siblings.iter().map(String::as_str))
                    .or_else(|| Some(format!("`ferry sinks {}` lists its fields", def.name)));
                continue;
            }
            let lit = match &v.value {
                FieldSpec::Plain(p) => Some(p),
                FieldSpec::Detailed(d) => Some(&d.value.value),
                FieldSpec::Nested(_) => None,
            };
            if let Some(val) = lit.filter(|val| !val.as_str().is_some_and(is_template)) {
                let mut one = serde_json::Map::new();
                insert_dotted(&mut one, &path, val.clone());
                for r in def.check_fields(&one, false) {
                    let p = self.problem(Code::OutOfRange, v.pos, r.reason.clone());
                    p.label = Some("Zoom would refuse it".into());
                    p.help = r.hint.clone();
                }
                insert_dotted(&mut literal, &path, val.clone());
            }
        }
        if matches!(za, ZoomAction::Create | ZoomAction::Upsert) {
            for (fname, f) in &def.fields {
                if f.required && !leaves.iter().any(|(k, _)| &k.value == fname) {
                    let p = self.problem(
                        Code::MissingKey,
                        s.zoom.as_ref().map_or(name.pos, |z| z.pos),
                        format!("Zoom's {} needs `{fname}` to create", def.name),
                    );
                    p.help = Some(format!("add `{fname}:` under `fields`"));
                }
            }
        }
        Some(ZoomSink {
            object: def.name.clone(),
            action: za,
            params,
        })
    }

    fn sink_key(
        &mut self,
        action: SinkActionSpec,
        s: &SinkSpec,
        name: &At<String>,
        scope: Scope,
        compile: &mut impl FnMut(&mut Self, &At<AnyValue>, Scope) -> Option<LocatedExpr>,
    ) -> Option<SinkKey> {
        match (action, &s.key) {
            (SinkActionSpec::Upsert, None) => {
                let p = self.problem(
                    Code::MissingKeyField,
                    s.action.pos,
                    format!("sink `{}` upserts but has no `key`", name.value),
                );
                p.label = Some("upsert needs an external-id `key`".into());
                p.help = Some(
                    "add `key: Your_External_Id__c`, a field marked External ID on the object"
                        .into(),
                );
                None
            }
            (SinkActionSpec::Upsert, Some(k)) => match k.value.as_str() {
                Some(f) if !is_template(f) && is_field_name(f) => {
                    if !s.fields.iter().any(|(n, _)| n.value == f) {
                        let p = self.problem(
                            Code::KeyWithoutValue,
                            k.pos,
                            format!("the external-id field `{f}` has no value in `fields`"),
                        );
                        p.label = Some("no value to upsert by".into());
                        p.help = Some(format!("add `{f}: \"{{{{ ... }}}}\"` under `fields`"));
                        return None;
                    }
                    Some(SinkKey::ExternalIdField(f.to_string()))
                }
                _ => {
                    let p = self.problem(
                        Code::KeyNotField,
                        k.pos,
                        "an upsert `key` names the external-id field, not a value",
                    );
                    p.label = Some("not a field name".into());
                    p.help = Some("write the field's API name, like `Zoom_Meeting_UUID__c`, and give its value under `fields`".into());
                    None
                }
            },
            (SinkActionSpec::Insert, None) => {
                let p = self.problem(
                    Code::MissingKeyField,
                    s.action.pos,
                    format!("sink `{}` inserts but has no `key`", name.value),
                );
                p.label = Some("insert needs a `key`".into());
                p.help = Some("add `key: \"{{ record.uuid }}\"`: a value that identifies the record, so a re-run does not insert it twice".into());
                None
            }
            (_, Some(k)) => compile(self, k, scope).map(SinkKey::Template),
            (_, None) => None,
        }
    }

    fn tests(&mut self, tests: &[At<TestSpec>], spec: &PipelineSpec) -> Vec<PipelineTest> {
        let mut out = Vec::new();
        for t in tests {
            let t_pos = t.pos;
            let t = &t.value;
            let mut ok = true;
            if !t.record.is_object() && !t.record.is_null() {
                let p = self.problem(
                    Code::WrongType,
                    t.name.pos,
                    format!("test `{}`: `record` must be a mapping", t.name.value),
                );
                p.label = Some("in this test".into());
                ok = false;
            }
            for (k, _) in t.lookups.iter() {
                if !spec.lookups.iter().any(|(n, _)| n.value == k.value) {
                    let names: Vec<&str> =
                        spec.lookups.iter().map(|(n, _)| n.value.as_str()).collect();
                    let p = self.problem(
                        Code::UnknownLookup,
                        k.pos,
                        format!("the pipeline has no lookup named `{}`", k.value),
                    );
                    p.label = Some("unknown lookup".into());
                    p.help = did_you_mean(&k.value, names.iter().copied());
                    ok = false;
                }
            }
            let mut expect = BTreeMap::new();
            for (k, v) in t.expect.iter() {
                if !spec.sinks.iter().any(|(n, _)| n.value == k.value) {
                    let names: Vec<&str> =
                        spec.sinks.iter().map(|(n, _)| n.value.as_str()).collect();
                    let p = self.problem(
                        Code::UnknownSink,
                        k.pos,
                        format!("the pipeline has no sink named `{}`", k.value),
                    );
                    p.label = Some("unknown sink".into());
                    p.help = did_you_mean(&k.value, names.iter().copied());
                    ok = false;
                }
                expect.insert(k.value.clone(), v.clone());
            }
            if ok {
                out.push(PipelineTest {
                    name: t.name.value.clone(),
                    record: if t.record.is_null() {
                        json!({})
                    } else {
                        t.record.clone()
                    },
                    lookups: t
                        .lookups
                        .iter()
                        .map(|(k, v)| (k.value.clone(), v.clone()))
                        .collect(),
                    expect,
                    pos: self.pos(t_pos),
                });
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------
    // templates

    /// Compiles a value: strings with template syntax become templates (checked against the
    /// scope and rendered against the sample context), everything else stays a literal.
    fn expr(&mut self, v: &At<AnyValue>, scope: Scope) -> Option<LocatedExpr> {
        let pos = self.pos(v.pos);
        let src = match &v.value {
            Value::String(s) if is_template(s) => s.clone(),
            other => {
                return Some(Located {
                    value: Expr::Literal(other.clone()),
                    pos,
                });
            }
        };
        let t = match Template::compile(&src) {
            Ok(t) => t,
            Err(e) => {
                // The wrapped single-expression form can blame its own wrapper (`unexpected
                // `)``); the plain form gives the admin's view of the same mistake.
                let plain = minijinja::Environment::new()
                    .template_from_str(&src)
                    .err()
                    .map(crate::template::TemplateError::from);
                let e = plain.filter(|p| p.range.is_some()).unwrap_or(e);
                let range = e.range.clone().unwrap_or(0..src.len());
                let start = self.anchor(v.pos, &src, range.start);
                let end = self.anchor(v.pos, &src, range.end.max(range.start));
                let message = e.detail.clone().unwrap_or_else(|| e.message.clone());
                self.diags.push(
                    Problem::at(
                        self.file,
                        Code::TemplateSyntax,
                        start,
                        end.saturating_sub(start).max(1),
                        format!("template syntax: {}", message.trim()),
                    )
                    .label("here")
                    .help("templates use minijinja (Jinja2) syntax: `{{ record.field }}`, `{% if ... %}`"),
                );
                return None;
            }
        };
        let before = self.errors();
        let uses = crate::template::names::uses(&src).unwrap_or_default();
        self.check_names(&uses, v.pos, &src, scope);
        if self.errors() == before {
            self.check_filters(&uses.filters, v.pos, &src, scope);
        }
        if self.errors() > before {
            return None;
        }
        Some(Located {
            value: Expr::Template(t),
            pos,
        })
    }

    /// File offset of a byte offset inside a scalar's template source.
    fn anchor(&self, pos: Pos, src: &str, off: usize) -> usize {
        let off = super::diagnostic::floor_char_boundary(src, off.min(src.len()));
        let base = content_offset(self.file, pos);
        let before = &src[..off];
        match before.rfind('\n') {
            None => base + off,
            Some(nl) => {
                let k = before.matches('\n').count();
                let col = before[nl + 1..].chars().count();
                self.file.offset_of(pos.line + k, pos.column + col)
            }
        }
    }

    /// The file range of a byte range inside a scalar's template source.
    fn span_in(&self, pos: Pos, src: &str, r: &std::ops::Range<usize>) -> (usize, usize) {
        let start = self.anchor(pos, src, r.start);
        let end = self.anchor(pos, src, r.end.max(r.start));
        (start, end.saturating_sub(start).max(1))
    }

    fn check_names(&mut self, uses: &Uses, pos: Pos, src: &str, scope: Scope) {
        for NameUse { path, span } in &uses.names {
            let Some(root) = path.first().map(String::as_str) else {
                continue;
            };
            let second = path.get(1).map(String::as_str);
            let report =
                |this: &mut Self, code: Code, msg: String, label: &str, help: Option<String>| {
                    let (off, len) = this.span_in(pos, src, span);
                    this.diags.push(
                        Problem::at(this.file, code, off, len, msg)
                            .label(label)
                            .maybe_help(help),
                    );
                };
            if !ROOT_NAMES.contains(&root) {
                if BUILTIN_FUNCTIONS.contains(&root) {
                    continue;
                }
                let help = did_you_mean(root, ROOT_NAMES.iter().copied()).or_else(|| {
                    Some(
                        "templates see: record, lookups, vars, sinks, item, loop, settings, run"
                            .into(),
                    )
                });
                report(
                    self,
                    Code::UnknownName,
                    format!("unknown name `{root}`"),
                    "not defined",
                    help,
                );
                continue;
            }
            match root {
                "item" | "loop" if !scope.item => {
                    report(
                        self,
                        Code::ItemOutsideForEach,
                        format!("`{root}` exists only inside `for_each`"),
                        "no for_each here",
                        Some("add `for_each:` to this lookup or sink, or refer to `record`".into()),
                    );
                }
                "lookups" | "vars" | "sinks" => {
                    let Some(name) = second else { continue };
                    self.check_section_ref(root, name, scope, span, pos, src);
                }
                "item" => {
                    let Some(field) = second else { continue };
                    if !self.facts.strict_fields {
                        continue;
                    }
                    let Some(keys) = known_fields(&self.item_sample) else {
                        continue;
                    };
                    if has_field(&keys, field) {
                        continue;
                    }
                    let help = did_you_mean(field, keys.iter().map(String::as_str))
                        .or_else(|| Some(format!("the items have: {}", keys.join(", "))));
                    report(
                        self,
                        Code::UnknownField,
                        format!("the items of this `for_each` have no field `{field}`"),
                        "not in the item's sample",
                        help,
                    );
                }
                "record" => {
                    let Some(field) = second else { continue };
                    if !self.facts.strict_fields {
                        continue;
                    }
                    let Some(sample) = &self.record_sample else {
                        continue;
                    };
                    let enrich_visible = !matches!(scope.stage, Stage::Source | Stage::Enrich);
                    if sample.contains_key(field)
                        || (enrich_visible && self.enrich_names.iter().any(|e| e == field))
                    {
                        continue;
                    }
                    let mut candidates: Vec<&str> = sample.keys().map(String::as_str).collect();
                    if enrich_visible {
                        candidates.extend(self.enrich_names.iter().map(String::as_str));
                    }
                    let help = did_you_mean(field, candidates.iter().copied());
                    let msg = if !enrich_visible && self.enrich_names.iter().any(|e| e == field) {
                        format!(
                            "`record.{field}` is an enrichment; it is not available until every enrich has run"
                        )
                    } else {
                        format!("the stream's records have no field `{field}`")
                    };
                    report(
                        self,
                        Code::UnknownField,
                        msg,
                        "not in the stream's sample record",
                        help,
                    );
                }
                "settings" => {
                    let Some(key) = second else { continue };
                    let Some(settings) = &self.facts.settings else {
                        continue;
                    };
                    if !settings.contains_key(key) {
                        let help = did_you_mean(key, settings.keys().map(String::as_str))
                            .or_else(|| Some("add it under `settings:` in ferry.yaml".into()));
                        report(
                            self,
                            Code::UnknownSetting,
                            format!("ferry.yaml's settings have no `{key}`"),
                            "not in settings",
                            help,
                        );
                    }
                }
                _ => {}
            }
        }
    }

    fn check_section_ref(
        &mut self,
        section: &str,
        name: &str,
        scope: Scope,
        span: &std::ops::Range<usize>,
        pos: Pos,
        src: &str,
    ) {
        let (declared, visible_count, stage_of, singular): (&[String], usize, Stage, &str) =
            match section {
                "lookups" => (&self.lookup_names, 0, Stage::Lookup, "lookup"),
                "vars" => (&self.var_names, 0, Stage::Var, "var"),
                _ => (&self.sink_names, 0, Stage::Sink, "sink"),
            };
        let _ = visible_count;
        let order = |s: Stage| match s {
            Stage::Source => 0,
            Stage::Enrich => 1,
            Stage::Lookup => 2,
            Stage::Var => 3,
            Stage::Sink => 4,
        };
        // Names declared so far are exactly the visible ones when in the same section;
        // a later section sees them all.
        let visible = if order(scope.stage) > order(stage_of) {
            declared.iter().any(|d| d == name)
        } else if scope.stage == stage_of {
            declared.iter().take(scope.upto).any(|d| d == name)
        } else {
            false
        };
        if visible {
            return;
        }
        let declared_list: Vec<String> = declared.to_vec();
        let (code, msg, label, help) = if order(scope.stage) < order(stage_of) {
            (
                Code::NotAvailableYet,
                format!(
                    "`{section}.{name}` is not available here: {section} are computed after {}",
                    stage_name(scope.stage)
                ),
                "not available at this stage",
                Some("order per record: source → enrich → lookups → vars → sinks".to_string()),
            )
        } else if let Some(later) = self.declared_later(section, name) {
            (
                Code::DeclaredLater,
                format!("{singular} `{name}` is declared later (line {later})"),
                "declared below this use",
                Some(format!("move `{name}` above the {singular} that uses it")),
            )
        } else {
            let help = did_you_mean(name, declared_list.iter().map(String::as_str));
            (
                Code::UnknownReference,
                format!("no {singular} named `{name}`"),
                "not declared",
                help.or_else(|| Some(format!("declare it under `{section}:`"))),
            )
        };
        let (off, len) = self.span_in(pos, src, span);
        self.diags.push(
            Problem::at(self.file, code, off, len, msg)
                .label(label)
                .maybe_help(help),
        );
    }

    /// The line where a name is declared further down the file, if it is.
    fn declared_later(&self, section: &str, name: &str) -> Option<usize> {
        // The section's own header, then an indented `name:` under it.
        let text = &self.file.text;
        let mut in_section = false;
        for (i, line) in text.lines().enumerate() {
            if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
                in_section = line.trim_end().trim_end_matches(':') == section
                    || line.starts_with(&format!("{section}:"));
                continue;
            }
            if in_section {
                let t = line.trim_start();
                let indent = line.len() - t.len();
                if indent > 0 && indent <= 4 && (t.starts_with(&format!("{name}:"))) {
                    return Some(i + 1);
                }
            }
        }
        None
    }

    fn sample_context(&self, scope: Scope) -> Value {
        let mut record = self.record_sample.clone().unwrap_or_default();
        if !matches!(scope.stage, Stage::Source | Stage::Enrich) {
            for (k, v) in &self.enrich_samples {
                record.insert(k.clone(), v.clone());
            }
        }
        let mut ctx = json!({
            "record": Value::Object(record),
            "lookups": Value::Object(self.lookup_samples.clone()),
            "vars": Value::Object(self.var_samples.clone()),
            "sinks": Value::Object(self.sink_samples.clone()),
            "settings": Value::Object(self.facts.settings.clone().unwrap_or_default()),
            "run": {
                "id": "run-sample",
                "started_at": "2026-01-01T00:00:00Z",
                "pipeline": self.pipeline_name,
                "dry_run": true,
            },
        });
        if scope.item
            && let Value::Object(m) = &mut ctx
        {
            m.insert("item".into(), self.item_sample.clone());
            m.insert(
                "loop".into(),
                json!({"index": 1, "index0": 0, "first": true, "last": true, "length": 1,
                       "revindex": 1, "revindex0": 0}),
            );
        }
        ctx
    }

    fn sample_eval(&self, e: &Expr, scope: Scope) -> Value {
        let ctx = from_json(&self.sample_context(scope));
        e.eval(&ctx).unwrap_or(Value::Null)
    }

    /// Filters the template applies: each must exist, and ferry's take the arguments
    /// they take.
    fn check_filters(&mut self, filters: &[FilterUse], pos: Pos, src: &str, scope: Scope) {
        for f in filters {
            if self.facts.strict_fields && !f.attributes.is_empty() {
                self.check_attributes(f, pos, src, scope);
            }
            let (start, len) = self.span_in(pos, src, &f.span);
            let Some(def) = crate::template::find_filter(&f.name) else {
                let help = did_you_mean(&f.name, FILTERS.iter().map(|d| d.name))
                    .or_else(|| Some("`ferry help filters` lists the filters".into()));
                self.diags.push(
                    Problem::at(
                        self.file,
                        Code::UnknownFilter,
                        start,
                        len,
                        format!("unknown filter `{}`", f.name),
                    )
                    .label("no such filter")
                    .maybe_help(help),
                );
                continue;
            };
            if let Some((min, max)) = def.arity
                && !(min..=max).contains(&f.positional)
            {
                let takes = match (min, max) {
                    (0, 0) => "no arguments".to_string(),
                    (a, b) if a == b => format!("{a} argument(s)"),
                    (a, b) => format!("{a} to {b} arguments"),
                };
                self.diags.push(
                    Problem::at(
                        self.file,
                        Code::FilterArguments,
                        start,
                        len,
                        format!("`{}` takes {takes}, not {}", f.name, f.positional),
                    )
                    .label("wrong number of arguments")
                    .help(format!("write it as `{}`", def.usage)),
                );
            }
        }
    }
}

impl PipelineResolver<'_> {
    /// The attributes a filter reads from its input's items (`unique(attribute='email')`)
    /// must be fields of those items, where the sample shows what they are.
    fn check_attributes(&mut self, f: &FilterUse, pos: Pos, src: &str, scope: Scope) {
        let Some(input) = f.input.clone().and_then(|r| src.get(r)) else {
            return;
        };
        let Ok(t) = Template::compile(&format!("{{{{ {input} }}}}")) else {
            return;
        };
        let ctx = from_json(&self.sample_context(scope));
        let items = match t.eval(&ctx) {
            Ok(Value::Array(a)) => a,
            _ => return,
        };
        let Some(keys) = items.first().and_then(known_fields) else {
            return;
        };
        for (attr, span) in &f.attributes {
            let field = attr.split('.').next().unwrap_or(attr);
            if has_field(&keys, field) {
                continue;
            }
            let help = did_you_mean(field, keys.iter().map(String::as_str))
                .or_else(|| Some(format!("the items have: {}", keys.join(", "))));
            let (off, len) = self.span_in(pos, src, span);
            self.diags.push(
                Problem::at(
                    self.file,
                    Code::UnknownField,
                    off,
                    len,
                    format!("the items of `{}` have no field `{field}`", input.trim()),
                )
                .label("not in the items' sample")
                .maybe_help(help),
            );
        }
    }
}

/// The field names of a sample item, when the sample shows them (a mapping with fields);
/// None where the shape is unknown, so nothing is guessed.
fn known_fields(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Object(m) if !m.is_empty() => Some(m.keys().cloned().collect()),
        _ => None,
    }
}

/// Whether `field` is one of `keys`. A name that differs only in case is let through:
/// Salesforce answers with its own spelling of a selected field, which the sample cannot
/// know.
fn has_field(keys: &[String], field: &str) -> bool {
    keys.iter()
        .any(|k| k == field || k.eq_ignore_ascii_case(field))
}

/// Sets `path` (`Account.Name`) in a sample record: a relationship field is read as a
/// nested record, as Salesforce answers it.
fn insert_path(m: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            m.entry(path.to_string()).or_insert(value);
        }
        Some((head, rest)) => {
            let slot = m
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = slot {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Warns where two pipelines write the same field of the same Salesforce record: the same
/// object through the same connection, found the same way (upsert by the same external-id
/// field, update by the same `id` template or the same `search_by` field). Each would
/// overwrite the other's value on every run. Inserts create new records and are left out.
pub(crate) fn conflicting_writers(
    pipelines: &[Pipeline],
    files: &[SourceFile],
    diags: &mut Diagnostics,
) {
    // (pipeline, sink, how the record is found)
    let mut writers: Vec<(&Pipeline, &Sink, String)> = Vec::new();
    for p in pipelines {
        for s in &p.sinks {
            let by = match (s.action, &s.key, &s.id, &s.search_by) {
                (SinkAction::Upsert, Some(SinkKey::ExternalIdField(f)), _, _) => {
                    format!("upsert by {f}")
                }
                (SinkAction::Update, _, _, Some(f)) => format!("update by {f}"),
                (SinkAction::Update, _, Some(id), None) => match &id.value {
                    Expr::Template(t) => format!(
                        "update by id {}",
                        t.source().split_whitespace().collect::<String>()
                    ),
                    Expr::Literal(v) => format!("update by id {v}"),
                },
                _ => continue,
            };
            writers.push((p, s, by));
        }
    }
    for (i, (p, s, by)) in writers.iter().enumerate() {
        for (j, (q, t, by2)) in writers.iter().enumerate() {
            if i == j || p.name == q.name || by != by2 {
                continue;
            }
            if s.connection != t.connection || !s.sobject.eq_ignore_ascii_case(&t.sobject) {
                continue;
            }
            let key_field = by.strip_prefix("upsert by ").unwrap_or("");
            let both: Vec<&str> = s
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .filter(|f| !f.eq_ignore_ascii_case(key_field))
                .filter(|f| t.fields.iter().any(|g| g.name.eq_ignore_ascii_case(f)))
                .collect();
            if both.is_empty() {
                continue;
            }
            let Some(file) = files.iter().find(|f| *f.display == *s.pos.file) else {
                continue;
            };
            let listed = both
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let pos = Pos {
                line: s.pos.line,
                column: s.pos.column,
                offset: 0,
                len: s.name.len(),
            };
            diags.push(
                Problem::at_pos(
                    file,
                    Code::ConflictingWriters,
                    pos,
                    format!(
                        "pipeline `{}` (sink `{}`, {}:{}) also writes {listed} of the same {} records ({by})",
                        q.name, t.name, t.pos.file, t.pos.line, s.sobject
                    ),
                )
                .warning()
                .label("two pipelines write these fields")
                .help("each run would overwrite the other pipeline's values; let one pipeline own each field, or give one of them `on_update: keep`"),
            );
        }
    }
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Source => "the source is read",
        Stage::Enrich => "enrich",
        Stage::Lookup => "lookups",
        Stage::Var => "vars",
        Stage::Sink => "sinks",
    }
}

/// Names of a section (`sinks`) a template reads: `sinks.event.Id` gives `event`.
fn referenced(t: &Template, section: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in t.undeclared_variables() {
        let mut segs = p.split('.');
        if segs.next() == Some(section)
            && let Some(n) = segs.next()
            && !out.iter().any(|o: &String| o == n)
        {
            out.push(n.to_string());
        }
    }
    out
}

fn first_item(v: &Value) -> Value {
    match v {
        Value::Array(a) => a.first().cloned().unwrap_or(json!({})),
        _ => json!({}),
    }
}

fn sample_sf_value(field: &str, sobject: &str) -> Value {
    match field {
        "Id" => Value::String(format!("{}SAMPLE", &sobject.get(..3).unwrap_or("001"))),
        f if f.ends_with("Id") => Value::String("001SAMPLE".into()),
        _ => Value::String(format!("sample {field}")),
    }
}

fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// A sink's fields as leaves by dotted path: nested objects (Zoom's `settings:`) opened up.
fn flatten_fields(
    prefix: &str,
    fields: &OrderedMap<At<String>, At<FieldSpec>>,
    out: &mut Vec<(At<String>, At<FieldSpec>)>,
) {
    for (k, v) in fields.iter() {
        let name = format!("{prefix}{}", k.value);
        match &v.value {
            FieldSpec::Nested(m) => flatten_fields(&format!("{name}."), m, out),
            _ => out.push((At::new(name, k.pos), v.clone())),
        }
    }
}

/// Sets `path` (`settings.waiting_room`) in a JSON object, making the objects on the way.
pub fn insert_dotted(m: &mut serde_json::Map<String, Value>, path: &[&str], v: Value) {
    match path {
        [] => {}
        [leaf] => {
            m.insert((*leaf).to_string(), v);
        }
        [first, rest @ ..] => {
            let e = m
                .entry((*first).to_string())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !e.is_object() {
                *e = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(inner) = e {
                insert_dotted(inner, rest, v);
            }
        }
    }
}
