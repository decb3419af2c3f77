//! The render stage: from a source record with its enrichments and lookup results to the
//! writes each sink asks for. Shared by `run`, `plan` and the offline `ferry test`.

use crate::config::{Expr, LocatedExpr, OnUpdate, Pipeline, Sink, SinkAction as Action, SinkKey};
use crate::template::{self, TemplateError};
use minijinja::Value as Jv;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// What templates see besides the record: `settings` and `run`.
#[derive(Debug, Clone)]
pub struct Globals {
    pub settings: Value,
    pub run: Value,
    /// The same as template values, made once for the rare template minijinja evaluates.
    settings_jv: Jv,
    run_jv: Jv,
}

impl Globals {
    pub fn new(
        settings: &Value,
        run_id: &str,
        pipeline: &str,
        started_at: &str,
        dry_run: bool,
    ) -> Self {
        let run = serde_json::json!({
            "id": run_id,
            "pipeline": pipeline,
            "started_at": started_at,
            "dry_run": dry_run,
        });
        Globals {
            settings_jv: template::from_json(settings),
            run_jv: template::from_json(&run),
            settings: settings.clone(),
            run,
        }
    }
}

/// Everything known about one source record as it moves through the stages.
///
/// Values are kept as JSON, which templates read directly (see [`template::Scope`]); the
/// template-value form minijinja needs is made only when a template falls back to it, once
/// per stage until the stage changes.
#[derive(Debug)]
pub struct RecordState {
    /// The source record plus each `enrich` result under its name.
    pub record: Value,
    record_jv: OnceLock<Jv>,
    lookups: Stage,
    vars: Vars,
    sinks: Stage,
}

/// `vars`, in declaration order. A var whose value is a part of the lookups (or a list of
/// such parts, as `selectattr | list` makes) is kept as their positions there rather than a
/// copy; the lookups do not change once vars exist (see [`RecordState::set_lookup`]). The
/// whole object is made only when a template reads `vars` as a whole (or by minijinja).
#[derive(Debug, Default)]
struct Vars {
    slots: Vec<(String, Slot)>,
    full: OnceLock<Value>,
    jv: OnceLock<Jv>,
}

#[derive(Debug)]
enum Slot {
    Owned(Value),
    Shared(template::Shared),
}

impl Vars {
    fn set(&mut self, name: &str, slot: Slot) {
        match self.slots.iter_mut().find(|(n, _)| n == name) {
            Some((_, s)) => *s = slot,
            None => self.slots.push((name.to_string(), slot)),
        }
        self.full = OnceLock::new();
        self.jv = OnceLock::new();
    }
    fn full(&self, lookups: &Value) -> &Value {
        self.full.get_or_init(|| {
            Value::Object(
                self.slots
                    .iter()
                    .map(|(n, s)| {
                        let v = match s {
                            Slot::Owned(v) => v.clone(),
                            Slot::Shared(sh) => sh.to_json(lookups),
                        };
                        (n.clone(), v)
                    })
                    .collect(),
            )
        })
    }
    fn value(&self, lookups: &Value) -> Jv {
        self.jv
            .get_or_init(|| template::from_json(self.full(lookups)))
            .clone()
    }
    /// Copies shared vars out of the lookups, before the lookups change.
    fn own(&mut self, lookups: &Value) {
        for (_, s) in &mut self.slots {
            if let Slot::Shared(sh) = s {
                *s = Slot::Owned(sh.to_json(lookups));
            }
        }
    }
}

/// One context name's entries (`lookups.NAME`, `vars.NAME`, `sinks.NAME`) as one JSON
/// object.
#[derive(Debug)]
struct Stage {
    json: Value,
    jv: OnceLock<Jv>,
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            json: Value::Object(Map::new()),
            jv: OnceLock::new(),
        }
    }
}

impl Stage {
    fn set(&mut self, name: &str, v: Value) {
        if let Value::Object(m) = &mut self.json {
            m.insert(name.to_string(), v);
        }
        self.jv = OnceLock::new();
    }
    fn value(&self) -> Jv {
        self.jv
            .get_or_init(|| template::from_json(&self.json))
            .clone()
    }
    fn map(&self) -> &Map<String, Value> {
        static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
        match &self.json {
            Value::Object(m) => m,
            _ => EMPTY.get_or_init(Map::new),
        }
    }
}

impl RecordState {
    pub fn new(record: Value) -> Self {
        RecordState {
            record,
            record_jv: OnceLock::new(),
            lookups: Stage::default(),
            vars: Vars::default(),
            sinks: Stage::default(),
        }
    }

    pub fn lookups(&self) -> &Map<String, Value> {
        self.lookups.map()
    }
    pub fn vars(&self) -> &Map<String, Value> {
        static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
        match self.vars.full(&self.lookups.json) {
            Value::Object(m) => m,
            _ => EMPTY.get_or_init(Map::new),
        }
    }
    pub fn sinks(&self) -> &Map<String, Value> {
        self.sinks.map()
    }
    pub fn set_lookup(&mut self, name: &str, v: Value) {
        self.vars.own(&self.lookups.json);
        self.lookups.set(name, v);
    }
    pub fn set_var(&mut self, name: &str, v: Value) {
        self.vars.set(name, Slot::Owned(v));
    }
    /// A var that is a part of the lookups (or a list of parts), by position there; see
    /// [`template::Template::eval_shared`].
    pub fn set_var_shared(&mut self, name: &str, v: template::Shared) {
        self.vars.set(name, Slot::Shared(v));
    }
    pub fn set_sink(&mut self, name: &str, v: Value) {
        self.sinks.set(name, v);
    }

    /// The template scope at this point of the stages, with a `for_each` item and its
    /// position when there is one.
    pub fn scope<'a>(&'a self, g: &'a Globals, item: Option<(&'a Value, usize, usize)>) -> Ctx<'a> {
        Ctx { st: self, g, item }
    }
}

/// The names a template sees for one record (and item): `record`, `lookups`, `vars`,
/// `sinks`, `settings`, `run`, `item`, `loop`.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    st: &'a RecordState,
    g: &'a Globals,
    item: Option<(&'a Value, usize, usize)>,
}

impl template::Scope for Ctx<'_> {
    fn root(&self, name: &str) -> Option<&Value> {
        let v = match name {
            "record" => &self.st.record,
            "lookups" => &self.st.lookups.json,
            "vars" => self.st.vars.full(&self.st.lookups.json),
            "sinks" => &self.st.sinks.json,
            "settings" => &self.g.settings,
            "run" => &self.g.run,
            "item" => self.item?.0,
            _ => return None,
        };
        (!v.is_null()).then_some(v)
    }

    fn loop_position(&self) -> Option<(usize, usize)> {
        self.item.map(|(_, i, n)| (i, n))
    }

    fn var(&self, name: &str) -> Option<template::VarRef<'_>> {
        let (_, slot) = self.st.vars.slots.iter().find(|(n, _)| n == name)?;
        match slot {
            Slot::Owned(v) => Some(template::VarRef::Value(v)),
            Slot::Shared(sh) => sh.resolve(&self.st.lookups.json),
        }
    }

    fn to_value(&self) -> Jv {
        let st = self.st;
        let mut ctx: BTreeMap<&str, Jv> = BTreeMap::new();
        ctx.insert(
            "record",
            st.record_jv
                .get_or_init(|| template::from_json(&st.record))
                .clone(),
        );
        ctx.insert("lookups", st.lookups.value());
        ctx.insert("vars", st.vars.value(&st.lookups.json));
        ctx.insert("sinks", st.sinks.value());
        ctx.insert("settings", self.g.settings_jv.clone());
        ctx.insert("run", self.g.run_jv.clone());
        if let Some((item, i, n)) = self.item {
            ctx.insert("item", template::from_json(item));
            ctx.insert("loop", loop_value(i, n));
        }
        Jv::from(ctx)
    }
}

/// The scope before lookups: only the record (and `settings`, `run`), borrowed.
#[derive(Clone, Copy)]
pub struct RecordOnly<'a> {
    pub record: &'a Value,
    pub g: &'a Globals,
}

impl template::Scope for RecordOnly<'_> {
    fn root(&self, name: &str) -> Option<&Value> {
        let v = match name {
            "record" => self.record,
            "settings" => &self.g.settings,
            "run" => &self.g.run,
            _ => return None,
        };
        (!v.is_null()).then_some(v)
    }

    fn to_value(&self) -> Jv {
        let empty = || Jv::from(BTreeMap::<String, Jv>::new());
        let mut ctx: BTreeMap<&str, Jv> = BTreeMap::new();
        ctx.insert("record", template::from_json(self.record));
        ctx.insert("lookups", empty());
        ctx.insert("vars", empty());
        ctx.insert("sinks", empty());
        ctx.insert("settings", self.g.settings_jv.clone());
        ctx.insert("run", self.g.run_jv.clone());
        Jv::from(ctx)
    }
}

/// A template failed on one record: where, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{place}: {error}")]
pub struct RenderError {
    pub place: String,
    pub error: TemplateError,
}

fn at(place: impl FnOnce() -> String) -> impl FnOnce(TemplateError) -> RenderError {
    move |error| RenderError {
        place: place(),
        error,
    }
}

/// The `loop` object inside a `for_each`.
pub fn loop_value(index0: usize, length: usize) -> Jv {
    template::from_json(&serde_json::json!({
        "index": index0 + 1,
        "index0": index0,
        "first": index0 == 0,
        "last": index0 + 1 == length,
        "length": length,
    }))
}

/// Evaluates a `for_each` expression to its items (borrowed from the scope where they can
/// be). Null means no items; a single value is one item.
pub fn items<'a>(
    expr: &'a Expr,
    ctx: &'a dyn template::Scope,
    place: impl FnOnce() -> String,
) -> Result<Vec<std::borrow::Cow<'a, Value>>, RenderError> {
    expr.eval_items(ctx).map_err(at(place))
}

/// Evaluates `vars` in order; each may use the ones above it.
pub fn eval_vars(p: &Pipeline, st: &mut RecordState, g: &Globals) -> Result<(), RenderError> {
    for (name, expr) in &p.vars {
        let scope = st.scope(g, None);
        let v = match expr.as_template() {
            // A part of the lookups (the matched records `selectattr` picks) is not copied.
            Some(t) => t.eval_shared(&scope, &st.lookups.json),
            None => expr.eval(&scope).map(Err),
        }
        .map_err(at(|| format!("vars.{name}")))?;
        match v {
            Ok(shared) => st.set_var_shared(name, shared),
            Err(v) => st.set_var(name, v),
        }
    }
    Ok(())
}

/// One record a sink wants written.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteIntent {
    pub sink: String,
    pub sobject: String,
    pub action: Action,
    /// The ledger key: the external-id value (upsert), the rendered key (insert), the Id
    /// (update), or a hash of the fields (publish).
    pub key: String,
    /// Salesforce Id for updates.
    pub id: Option<String>,
    /// Every field, as rendered (omitted fields are absent).
    pub fields: Map<String, Value>,
    /// Fields that are set on create only.
    pub keep_on_update: Vec<String>,
    /// Index of the item within the sink's `for_each` (0 without one).
    pub item_index: usize,
}

impl WriteIntent {
    /// The fields to send when the record already exists.
    pub fn update_fields(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|(k, _)| !self.keep_on_update.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The content hash kept in the ledger: fields that a later run may overwrite.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let canon = serde_json::to_string(&canonical(&Value::Object(self.update_fields())))
            .unwrap_or_default();
        hex::encode(sha2::Sha256::digest(canon.as_bytes()))
    }
}

/// JSON with object keys sorted, so equal content hashes equally.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// What a sink decided for one source record.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkDecision {
    /// `when` was false (or the sink's for_each was empty).
    Skipped {
        reason: String,
    },
    Writes(Vec<WriteIntent>),
}

/// Renders one sink for one record. `sinks.*` of earlier sinks must already be in `st`.
pub fn render_sink(
    sink: &Sink,
    st: &mut RecordState,
    g: &Globals,
) -> Result<SinkDecision, RenderError> {
    let st = &*st;
    let base = st.scope(g, None);
    if let Some(when) = &sink.when {
        if !when
            .truthy(&base)
            .map_err(at(|| format!("sinks.{}.when", sink.name)))?
        {
            return Ok(SinkDecision::Skipped {
                reason: "`when` is false".into(),
            });
        }
    }
    let mut out = Vec::new();
    match &sink.for_each {
        None => out.push(render_one(sink, &base, 0)?),
        Some(fe) => {
            let list = items(fe, &base, || format!("sinks.{}.for_each", sink.name))?;
            if list.is_empty() {
                return Ok(SinkDecision::Skipped {
                    reason: empty_for_each_reason(fe, st.lookups()),
                });
            }
            let n = list.len();
            for (i, item) in list.iter().enumerate() {
                let ctx = st.scope(g, Some((item, i, n)));
                out.push(render_one(sink, &ctx, i)?);
            }
        }
    }
    Ok(SinkDecision::Writes(out))
}

/// Why a sink's `for_each` has no items, in words: for each `for_each` lookup it reads,
/// how many of its items were skipped by its `skip`, not found, or matched.
fn empty_for_each_reason(fe: &LocatedExpr, lookups: &Map<String, Value>) -> String {
    let mut why = Vec::new();
    if let Some(t) = fe.value.as_template() {
        let mut seen: Vec<String> = Vec::new();
        for path in t.undeclared_variables() {
            let mut segs = path.split('.');
            let (Some("lookups"), Some(name)) = (segs.next(), segs.next()) else {
                continue;
            };
            if seen.iter().any(|s| s == name) {
                continue;
            }
            seen.push(name.to_string());
            let Some(Value::Object(m)) = lookups.get(name) else {
                continue;
            };
            let count = |k: &str| m.get(k).and_then(Value::as_array).map_or(0, Vec::len);
            let (matched, unmatched, skipped) =
                (count("matched"), count("unmatched"), count("skipped"));
            let total = matched + unmatched + skipped;
            if !m.contains_key("matched") {
                continue;
            }
            let mut parts = Vec::new();
            if skipped > 0 {
                parts.push(format!(
                    "{skipped} of {total} items skipped by lookups.{name}.skip"
                ));
            }
            if unmatched > 0 {
                parts.push(format!(
                    "{unmatched} of {total} not found by lookups.{name}"
                ));
            }
            if matched > 0 {
                parts.push(format!("{matched} of {total} matched"));
            }
            if total == 0 {
                parts.push(format!("lookups.{name} had no items to look up"));
            }
            why.push(parts.join(", "));
        }
    }
    if why.is_empty() {
        "`for_each` has no items".into()
    } else {
        format!("`for_each` has no items: {}", why.join("; "))
    }
}

fn render_one(
    sink: &Sink,
    ctx: &dyn template::Scope,
    item_index: usize,
) -> Result<WriteIntent, RenderError> {
    let mut fields = Map::with_capacity(sink.fields.len());
    let mut keep = Vec::new();
    for f in &sink.fields {
        let v = f
            .value
            .eval(ctx)
            .map_err(at(|| format!("sinks.{}.fields.{}", sink.name, f.name)))?;
        if template::is_omit(&v) {
            continue;
        }
        if f.on_update == OnUpdate::Keep {
            keep.push(f.name.clone());
        }
        fields.insert(f.name.clone(), v);
    }
    let render_str = |e: &Expr, what: &str| -> Result<String, RenderError> {
        let v = e
            .eval(ctx)
            .map_err(at(|| format!("sinks.{}.{what}", sink.name)))?;
        Ok(scalar_string(&v))
    };
    let id = match &sink.id {
        Some(e) => Some(render_str(e, "id")?).filter(|s| !s.is_empty()),
        None => None,
    };
    let key = match (&sink.key, sink.action) {
        (Some(SinkKey::ExternalIdField(field)), _) => {
            fields.get(field).map(scalar_string).unwrap_or_default()
        }
        (Some(SinkKey::Template(e)), _) => render_str(e, "key")?,
        (None, Action::Update) => id.clone().unwrap_or_default(),
        (None, _) => {
            // publish: events are keyed by content, so a rerun does not publish twice.
            use sha2::Digest;
            let canon = serde_json::to_string(&canonical(&Value::Object(fields.clone())))
                .unwrap_or_default();
            hex::encode(sha2::Sha256::digest(canon.as_bytes()))
        }
    };
    Ok(WriteIntent {
        sink: sink.name.clone(),
        sobject: sink.sobject.clone(),
        action: sink.action,
        key,
        id,
        fields,
        keep_on_update: keep,
        item_index,
    })
}

/// A Zoom sink's path params for one of its writes (`item_index` within its `for_each`).
pub fn render_zoom_params(
    sink: &Sink,
    st: &RecordState,
    g: &Globals,
    item_index: usize,
) -> Result<BTreeMap<String, String>, RenderError> {
    let Some(z) = &sink.zoom else {
        return Ok(BTreeMap::new());
    };
    let base = st.scope(g, None);
    let list = match &sink.for_each {
        Some(fe) => items(fe, &base, || format!("sinks.{}.for_each", sink.name))?,
        None => Vec::new(),
    };
    let n = list.len();
    let ctx = match list.get(item_index) {
        Some(item) => st.scope(g, Some((item, item_index, n))),
        None => st.scope(g, None),
    };
    let mut out = BTreeMap::new();
    for (k, e) in &z.params {
        let v = e
            .eval(&ctx)
            .map_err(at(|| format!("sinks.{}.params.{k}", sink.name)))?;
        out.insert(k.clone(), scalar_string(&v));
    }
    Ok(out)
}

/// A JSON value as the string a key or Id is made of.
pub fn scalar_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What `sinks.NAME` holds for later sinks: the written fields plus `Id` and `created`.
pub fn sink_result_value<W: std::borrow::Borrow<WriteIntent>>(
    writes: &[(W, Option<String>, bool)],
    for_each: bool,
) -> Value {
    let one = |(w, id, created): &(W, Option<String>, bool)| {
        let mut m = w.borrow().fields.clone();
        m.insert(
            "Id".into(),
            id.clone().map(Value::String).unwrap_or(Value::Null),
        );
        m.insert("created".into(), Value::Bool(*created));
        Value::Object(m)
    };
    if for_each {
        Value::Array(writes.iter().map(one).collect())
    } else {
        writes.first().map(one).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod empty_for_each_tests {
    use super::*;
    use crate::config::{Located, SourcePos};
    use serde_json::json;

    fn fe(src: &str) -> LocatedExpr {
        Located {
            value: Expr::Template(template::Template::compile(src).unwrap()),
            pos: SourcePos {
                file: "p.yaml".into(),
                line: 1,
                column: 1,
            },
        }
    }

    #[test]
    fn an_empty_for_each_over_a_lookup_says_why() {
        let items: Vec<Value> = (0..17).map(|i| json!({ "email": i })).collect();
        let mut lookups = Map::new();
        lookups.insert(
            "people".into(),
            json!({ "matched": [], "unmatched": [], "skipped": items }),
        );
        let why = empty_for_each_reason(&fe("{{ lookups.people.matched }}"), &lookups);
        assert_eq!(
            why,
            "`for_each` has no items: 17 of 17 items skipped by lookups.people.skip"
        );
        lookups.insert(
            "people".into(),
            json!({ "matched": [], "unmatched": [{}, {}], "skipped": [{}] }),
        );
        let why = empty_for_each_reason(
            &fe("{{ lookups.people.matched | selectattr('AccountId') }}"),
            &lookups,
        );
        assert_eq!(
            why,
            "`for_each` has no items: 1 of 3 items skipped by lookups.people.skip, 2 of 3 not found by lookups.people"
        );
        // Not over a lookup: the plain words.
        let why = empty_for_each_reason(&fe("{{ record.participants }}"), &lookups);
        assert_eq!(why, "`for_each` has no items");
    }
}
