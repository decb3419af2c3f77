//! ferry's template layer: minijinja with ferry's filters, typed evaluation of
//! single-expression fields, `omit`, and the spec's rules for missing values.
//!
//! A [`Template`] is compiled once when a file loads and evaluated per record against a
//! context built once per record (see [`Context`]).

use minijinja::value::ValueKind;
use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

mod native;
pub use native::{Scope, Shared, VarRef};

pub(crate) mod names;
mod registry;
pub use registry::{FILTERS, FilterDef, find as find_filter};

/// Tests and debug builds: evaluate every template both ways (directly and by minijinja)
/// and turn any difference into an error naming both results. Release builds have no
/// switch: the check is compiled out of the hot path.
#[cfg(debug_assertions)]
static CROSS_CHECK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(debug_assertions)]
pub fn cross_check(on: bool) {
    CROSS_CHECK.store(on, std::sync::atomic::Ordering::Relaxed);
}

#[inline]
fn cross_checking() -> bool {
    #[cfg(debug_assertions)]
    {
        CROSS_CHECK.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

thread_local! {
    /// Evaluations on this thread: (answered directly, answered by minijinja). Per thread,
    /// so counting costs no shared memory traffic and one thread's measurement (the render
    /// benchmark) is not mixed with others'.
    static COUNTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

fn count(direct: bool) {
    COUNTS.with(|c| {
        let (d, m) = c.get();
        c.set(if direct {
            (d.wrapping_add(1), m)
        } else {
            (d, m.wrapping_add(1))
        });
    });
}

/// Evaluations so far on this thread: (answered directly, answered by minijinja).
pub fn evaluation_counts() -> (u64, u64) {
    COUNTS.with(std::cell::Cell::get)
}

/// The marker value `{{ omit }}` evaluates to: the field is left out of the write.
pub const OMIT_MARKER: &str = "\u{0}ferry-omit\u{0}";

/// Names a template may start from. Anything else is a typo caught at load time.
pub const ROOT_NAMES: &[&str] = &[
    "record", "lookups", "vars", "sinks", "item", "loop", "settings", "run", "omit", "none",
    "true", "false",
];

const NAME: &str = "t";
const CAPTURE: &str = "__ferry_value";

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    /// minijinja's description alone, without the kind of error before it.
    pub detail: Option<String>,
    /// Byte range inside the template source, when minijinja knows it.
    pub range: Option<std::ops::Range<usize>>,
    /// 1-based line inside the template source.
    pub line: Option<usize>,
    pub kind: TemplateErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateErrorKind {
    Syntax,
    UnknownFilter,
    UnknownFunction,
    Undefined,
    Other,
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let kind = match e.kind() {
            minijinja::ErrorKind::SyntaxError => TemplateErrorKind::Syntax,
            minijinja::ErrorKind::UnknownFilter => TemplateErrorKind::UnknownFilter,
            minijinja::ErrorKind::UnknownFunction => TemplateErrorKind::UnknownFunction,
            minijinja::ErrorKind::UndefinedError => TemplateErrorKind::Undefined,
            _ => TemplateErrorKind::Other,
        };
        let mut message = e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        if let Some(detail) = e.detail() {
            message = format!("{}: {}", e.kind(), detail);
        }
        TemplateError {
            message,
            detail: e.detail().map(str::to_string),
            range: e.range(),
            line: e.line(),
            kind,
        }
    }
}

/// How a compiled value is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// The whole value is one `{{ expression }}`: yields the expression's typed value.
    Expression,
    /// Text with placeholders or blocks: renders to a string.
    Text,
}

/// A compiled template. Cheap to clone; safe to share between tasks.
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    kind: TemplateKind,
    /// Offset of the expression inside `source` (for `Expression`), so error ranges from the
    /// wrapped form can be mapped back.
    expr_offset: usize,
    wrapper_offset: usize,
    /// The same template for direct evaluation over JSON, when every part of it is covered
    /// (see [`native`]); minijinja answers the rest.
    native: Option<Arc<native::Program>>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Builds the environment every template runs in: ferry's filters and the undefined rules.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_formatter(text_formatter);
    env.add_global("omit", Value::from(OMIT_MARKER));
    // A missing value is null and null is missing: `x is none` holds for both.
    env.add_test("none", |v: &Value| v.is_none() || v.is_undefined());
    register_filters(&mut env);
    env
}

/// How values print inside text: nothing for null (admins never see "none"), `true` and
/// `false` in lower case as in JSON and Salesforce, everything else as minijinja prints it.
fn text_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Undefined => Ok(()),
        ValueKind::Bool => out
            .write_str(if value.is_true() { "true" } else { "false" })
            .map_err(minijinja::Error::from),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// ferry's filters beyond minijinja's own, plus the builtins whose behaviour ferry changes
/// (`truncate`, `unique`, and `length`/`first`/`last`, which treat null as empty), as the
/// filter table ([`FILTERS`]) lists them.
pub fn register_filters(env: &mut Environment<'static>) {
    registry::register(env);
}

/// `ferry help filters`: each ferry filter with an example (made from [`FILTERS`]).
pub fn filter_help() -> String {
    registry::help()
}

mod filters {
    use super::{Value, to_json};
    use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
    use minijinja::value::{Kwargs, ValueKind};
    use minijinja::{Error, ErrorKind, State};
    use sha2::Digest;

    fn invalid(msg: String) -> Error {
        Error::new(ErrorKind::InvalidOperation, msg)
    }

    fn is_null(v: &Value) -> bool {
        v.is_none() || v.is_undefined()
    }

    /// Reads the many shapes of time that Zoom and admins hand us.
    pub(super) fn parse_time(filter: &str, v: &Value) -> Result<Option<DateTime<Utc>>, Error> {
        if is_null(v) {
            return Ok(None);
        }
        if v.is_number() {
            let n = f64::try_from(v.clone())
                .map_err(|_| invalid(format!("{filter}: {v} is not a usable number")))?;
            return from_epoch(filter, n).map(Some);
        }
        let Some(s) = v.as_str() else {
            return Err(invalid(format!(
                "{filter}: expected a date/time text or epoch number, got {}",
                v.kind()
            )));
        };
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
            if let Ok(t) = DateTime::parse_from_str(s, f) {
                return Ok(Some(t.with_timezone(&Utc)));
            }
        }
        for f in [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                return Ok(Some(Utc.from_utc_datetime(&t)));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(d.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t)));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = s.parse::<f64>() {
                return from_epoch(filter, n).map(Some);
            }
        }
        let shown: String = s.chars().take(60).collect();
        Err(invalid(format!(
            "{filter}: cannot read {shown:?} as a date/time (expected e.g. \
             2026-03-15T14:00:00Z, 2026-03-15 14:00:00, 2026-03-15 or epoch seconds)"
        )))
    }

    /// Epoch seconds or milliseconds: values beyond 1e11 (the year 5138 in seconds) are
    /// milliseconds, which every real Zoom value is when it is that large.
    fn from_epoch(filter: &str, n: f64) -> Result<DateTime<Utc>, Error> {
        let ms = if n.abs() >= 1e11 { n } else { n * 1000.0 };
        if !ms.is_finite() || ms.abs() > 8.0e15 {
            return Err(invalid(format!("{filter}: {n} is out of range for a time")));
        }
        Utc.timestamp_millis_opt(ms.round() as i64)
            .single()
            .ok_or_else(|| invalid(format!("{filter}: {n} is out of range for a time")))
    }

    pub fn sf_datetime(v: &Value) -> Result<Value, Error> {
        Ok(match parse_time("sf_datetime", v)? {
            Some(t) => Value::from(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
            None => Value::from(()),
        })
    }

    /// Zoom's `yyyy-MM-ddTHH:mm:ssZ` (meeting create `start_time`): UTC, whole seconds.
    pub fn zoom_datetime(v: &Value) -> Result<Value, Error> {
        Ok(match parse_time("zoom_datetime", v)? {
            Some(t) => Value::from(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            None => Value::from(()),
        })
    }

    pub fn sf_date(v: &Value, offset: Option<&str>) -> Result<Value, Error> {
        // A date alone names a calendar day already; shifting it by an offset would move it.
        if let Some(s) = v.as_str() {
            if let Ok(d) = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
                return Ok(Value::from(d.format("%Y-%m-%d").to_string()));
            }
        }
        let Some(t) = parse_time("sf_date", v)? else {
            return Ok(Value::from(()));
        };
        let day = match offset.map(str::trim) {
            None | Some("UTC" | "utc" | "Z" | "z" | "") => t.date_naive(),
            Some(o) => t.with_timezone(&parse_offset(o)?).date_naive(),
        };
        Ok(Value::from(day.format("%Y-%m-%d").to_string()))
    }

    fn parse_offset(o: &str) -> Result<FixedOffset, Error> {
        let bad = || {
            invalid(format!(
                "sf_date: {o:?} is not an offset like -05:00 or +01:00 (time zone names are \
                 not supported)"
            ))
        };
        let (sign, rest) = match o.as_bytes().first() {
            Some(b'+') => (1, &o[1..]),
            Some(b'-') => (-1, &o[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
    }

    pub fn email_domain(v: &Value) -> Value {
        v.as_str()
            .and_then(domain_of)
            .map_or(Value::from(()), Value::from)
    }

    pub(super) fn domain_of(s: &str) -> Option<String> {
        let s = s.trim();
        let (local, domain) = s.rsplit_once('@')?;
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        let valid_label = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if local.is_empty()
            || local.chars().any(char::is_whitespace)
            || !domain.contains('.')
            || !domain.split('.').all(valid_label)
        {
            return None;
        }
        Some(domain.to_lowercase())
    }

    pub fn truncate(
        v: &Value,
        length: Option<usize>,
        end: Option<Value>,
        kwargs: Kwargs,
    ) -> Result<Value, Error> {
        let length = length.unwrap_or(255);
        let kw_end: Option<String> = kwargs.get("end")?;
        // Jinja's second positional argument is `killwords` (a boolean); a text there is `end`.
        let end = kw_end
            .or_else(|| end.as_ref().and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_default();
        kwargs.assert_all_used()?;
        if is_null(v) {
            return Ok(Value::from(()));
        }
        let owned;
        let s = match v.as_str() {
            Some(s) => s,
            None => {
                owned = v.to_string();
                &owned
            }
        };
        Ok(match truncate_text(s, length, &end) {
            std::borrow::Cow::Borrowed(b) if b.len() == s.len() && v.as_str().is_some() => {
                v.clone()
            }
            other => Value::from(other.into_owned()),
        })
    }

    /// At most `length` characters of `s`, `end` appended within the limit.
    pub fn truncate_text<'s>(s: &'s str, length: usize, end: &str) -> std::borrow::Cow<'s, str> {
        // Fast path: short text (byte length bounds the character count) is returned as is.
        if s.len() <= length || s.chars().count() <= length {
            return std::borrow::Cow::Borrowed(s);
        }
        let end_len = end.chars().count();
        if end_len >= length {
            return std::borrow::Cow::Owned(cut_chars(end, length).to_string());
        }
        let mut kept = cut_chars(s, length - end_len);
        if !end.is_empty() {
            kept = kept.trim_end();
        }
        let mut out = String::with_capacity(kept.len() + end.len());
        out.push_str(kept);
        out.push_str(end);
        std::borrow::Cow::Owned(out)
    }

    /// The longest prefix of at most `n` characters that does not end inside a cluster a
    /// reader sees as one character (a letter with combining marks, an emoji with modifiers
    /// or joiners, a flag).
    pub(super) fn cut_chars(s: &str, n: usize) -> &str {
        let mut idx = match s.char_indices().nth(n) {
            Some((i, _)) => i,
            None => return s,
        };
        loop {
            let before = s[..idx].chars().next_back();
            let at = s[idx..].chars().next();
            let (Some(b), Some(a)) = (before, at) else {
                break;
            };
            let mid_cluster = extends_cluster(a)
                || b == '\u{200D}'
                || (is_regional_indicator(a)
                    && is_regional_indicator(b)
                    && s[..idx]
                        .chars()
                        .rev()
                        .take_while(|c| is_regional_indicator(*c))
                        .count()
                        % 2
                        == 1);
            if !mid_cluster {
                break;
            }
            idx -= b.len_utf8();
        }
        &s[..idx]
    }

    fn extends_cluster(c: char) -> bool {
        matches!(c,
            '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FE20}'..='\u{FE2F}'
            | '\u{200D}'
            | '\u{1F3FB}'..='\u{1F3FF}'
            | '\u{E0020}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}')
    }

    fn is_regional_indicator(c: char) -> bool {
        ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
    }

    pub fn minutes(v: &Value) -> Result<Value, Error> {
        if is_null(v) {
            return Ok(Value::from(()));
        }
        let secs = if v.is_number() {
            f64::try_from(v.clone()).ok()
        } else if let Some(s) = v.as_str() {
            let s = s.trim();
            if s.is_empty() {
                return Ok(Value::from(()));
            }
            s.parse::<f64>().ok()
        } else {
            None
        };
        match secs {
            Some(x) if x.is_finite() => Ok(Value::from((x / 60.0).round() as i64)),
            _ => Err(invalid(format!(
                "minutes: expected a number of seconds, got {}",
                v.kind()
            ))),
        }
    }

    pub fn unique(state: &State, values: Value, kwargs: Kwargs) -> Result<Value, Error> {
        let attribute: Option<String> = kwargs.get("attribute")?;
        let case_sensitive: Option<bool> = kwargs.get("case_sensitive")?;
        kwargs.assert_all_used()?;
        let case_sensitive = case_sensitive.unwrap_or(false);
        if is_null(&values) {
            return Ok(Value::from(Vec::<Value>::new()));
        }
        if values.kind() == ValueKind::String {
            return Err(invalid("unique: expected a list, got a text".into()));
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for item in values.try_iter()? {
            state.consume_fuel(1)?;
            let compared = match &attribute {
                Some(a) => {
                    let v = super::lookup_path(&item, a.split('.'));
                    // Items without the field are different things (dial-in callers without
                    // an email): keep them all rather than fold them into one.
                    if is_null(&v) {
                        out.push(item);
                        continue;
                    }
                    v
                }
                None => item.clone(),
            };
            let key = match compared.as_str() {
                Some(s) if !case_sensitive => Value::from(s.to_lowercase()),
                _ => compared,
            };
            if seen.insert(key) {
                out.push(item);
            }
        }
        Ok(Value::from(out))
    }

    pub fn sha256(v: &Value) -> Value {
        if is_null(v) {
            return Value::from(());
        }
        let text = match v.kind() {
            ValueKind::String => v.as_str().unwrap_or_default().to_string(),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => to_json(v).to_string(),
            _ => v.to_string(),
        };
        Value::from(hex::encode(sha2::Sha256::digest(text.as_bytes())))
    }

    pub fn json(v: &Value) -> Value {
        Value::from(to_json(v).to_string())
    }

    pub fn length(v: &Value) -> Result<usize, Error> {
        if is_null(v) {
            return Ok(0);
        }
        minijinja::filters::length(v)
    }

    pub fn first(v: &Value) -> Result<Value, Error> {
        if is_null(v) {
            return Ok(Value::UNDEFINED);
        }
        minijinja::filters::first(v)
    }

    pub fn last(v: Value) -> Result<Value, Error> {
        if is_null(&v) {
            return Ok(Value::UNDEFINED);
        }
        minijinja::filters::last(v)
    }
}

/// If `source` is exactly one `{{ expression }}` (surrounding whitespace allowed), returns
/// the expression's byte range.
pub fn single_expression(source: &str) -> Option<std::ops::Range<usize>> {
    let start = source.len() - source.trim_start().len();
    let trimmed = source.trim();
    let inner = trimmed.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    let offset = start + 2 + (trimmed[2..].len() - trimmed[2..].trim_start_matches('-').len());
    Some(offset..offset + inner.len())
}

/// True when the string contains template syntax at all.
pub fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

impl Template {
    /// Compiles a template with the standard environment.
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        Self::compile_in(source, environment())
    }

    pub fn compile_in(
        source: &str,
        mut env: Environment<'static>,
    ) -> Result<Template, TemplateError> {
        let (kind, wrapped, expr_offset, wrapper_offset) = match single_expression(source) {
            Some(range) => {
                let prefix = format!("{{% set {CAPTURE} = (");
                let wrapped = format!("{prefix}{}) %}}", &source[range.clone()]);
                (TemplateKind::Expression, wrapped, range.start, prefix.len())
            }
            None => (TemplateKind::Text, source.to_string(), 0, 0),
        };
        env.add_template_owned(NAME, wrapped).map_err(|e| {
            let mut err = TemplateError::from(e);
            err.range = err
                .range
                .map(|r| shift(r, expr_offset, wrapper_offset, source.len()));
            err
        })?;
        let native = match kind {
            TemplateKind::Expression => {
                single_expression(source).and_then(|r| native::Program::expression(&source[r]))
            }
            TemplateKind::Text => native::Program::text(source),
        };
        Ok(Template {
            env: Arc::new(env),
            source: source.into(),
            kind,
            expr_offset,
            wrapper_offset,
            native: native.map(Arc::new),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// True when the template is evaluated directly over JSON (no minijinja run), where
    /// the values allow.
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// The direct answer, when this template has a direct program and the scope can answer
    /// it (None: minijinja answers). With the cross-check on (debug builds), the answer is compared with
    /// minijinja's (`as_json` shows the direct answer as minijinja's value would be, after
    /// `normalize`), and a difference is an error.
    fn direct<'a, T>(
        &'a self,
        ctx: &'a dyn Scope,
        run: impl FnOnce(&'a native::Program) -> Result<T, native::Fallback>,
        as_json: impl FnOnce(&T) -> serde_json::Value,
        normalize: impl FnOnce(serde_json::Value) -> serde_json::Value,
    ) -> Option<Result<T, TemplateError>> {
        let p = self.native.as_deref().filter(|_| ctx.native())?;
        let r = run(p).ok()?;
        count(true);
        if cross_checking() {
            let got = as_json(&r);
            let slow = self.eval_minijinja(ctx).map(normalize);
            if slow.as_ref().ok() != Some(&got) {
                return Some(Err(TemplateError {
                    message: format!(
                        "`{}`: direct evaluation gave {got}, minijinja {slow:?}",
                        self.source
                    ),
                    detail: None,
                    range: None,
                    line: None,
                    kind: TemplateErrorKind::Other,
                }));
            }
        }
        Some(Ok(r))
    }

    /// minijinja's answer, counted.
    fn by_minijinja(&self, ctx: &dyn Scope) -> Result<serde_json::Value, TemplateError> {
        count(false);
        self.eval_minijinja(ctx)
    }

    /// Evaluates to a typed JSON value: the expression's value for a single expression,
    /// a string otherwise. Undefined becomes null; `{{ omit }}` becomes [`OMIT_MARKER`].
    pub fn eval(&self, ctx: &dyn Scope) -> Result<serde_json::Value, TemplateError> {
        match self.direct(ctx, |p| p.eval(ctx), Clone::clone, |v| v) {
            Some(r) => r,
            None => self.by_minijinja(ctx),
        }
    }

    /// [`Template::eval`], except that a value which is a part of `tree` (or a list of such
    /// parts) is given as their positions there instead of a copy ([`Shared`]).
    pub fn eval_shared(
        &self,
        ctx: &dyn Scope,
        tree: &serde_json::Value,
    ) -> Result<Result<Shared, serde_json::Value>, TemplateError> {
        let as_json = |r: &Result<Shared, serde_json::Value>| match r {
            Ok(sh) => sh.to_json(tree),
            Err(v) => v.clone(),
        };
        match self.direct(ctx, |p| p.eval_shared(ctx, tree), as_json, |v| v) {
            Some(r) => r,
            None => self.by_minijinja(ctx).map(Err),
        }
    }

    /// Evaluates a `for_each`: null gives no items, a list its items, any other value is
    /// one item. Items are borrowed from the scope where the direct path allows.
    pub fn eval_items<'a>(
        &'a self,
        ctx: &'a dyn Scope,
    ) -> Result<Vec<std::borrow::Cow<'a, serde_json::Value>>, TemplateError> {
        let as_json = |items: &Vec<std::borrow::Cow<'a, serde_json::Value>>| {
            serde_json::Value::Array(items.iter().map(|i| i.clone().into_owned()).collect())
        };
        let normalize = |v| serde_json::Value::Array(items_of(v));
        match self.direct(ctx, |p| p.items(ctx), as_json, normalize) {
            Some(r) => r,
            None => Ok(items_of(self.by_minijinja(ctx)?)
                .into_iter()
                .map(std::borrow::Cow::Owned)
                .collect()),
        }
    }

    /// Evaluates with minijinja only (tests compare it with [`Template::eval`]).
    pub fn eval_minijinja(&self, ctx: &dyn Scope) -> Result<serde_json::Value, TemplateError> {
        let v = self.eval_value(&ctx.to_value())?;
        Ok(to_json(&v))
    }

    /// Evaluates to a minijinja value (used where the result feeds another template).
    /// A null result is returned as undefined, so it chains like any missing value.
    pub fn eval_value(&self, ctx: &Value) -> Result<Value, TemplateError> {
        let t = self.env.get_template(NAME).map_err(TemplateError::from)?;
        match self.kind {
            TemplateKind::Text => {
                let mut text = t.render(ctx).map_err(|e| self.map_err(e))?;
                if text.contains(OMIT_MARKER) {
                    if text.trim() == OMIT_MARKER {
                        return Ok(Value::from(OMIT_MARKER));
                    }
                    text = text.replace(OMIT_MARKER, "");
                }
                Ok(Value::from(text))
            }
            TemplateKind::Expression => {
                let captured = t.render_captured(ctx).map_err(|e| self.map_err(e))?;
                let v = captured.state().lookup(CAPTURE).unwrap_or(Value::UNDEFINED);
                Ok(if v.is_none() { Value::UNDEFINED } else { v })
            }
        }
    }

    /// Evaluates and reads the result as a condition (`when`, `skip`, `where`).
    pub fn truthy(&self, ctx: &dyn Scope) -> Result<bool, TemplateError> {
        // The direct answer without the value's JSON copy (a `when: "{{ sinks.event }}"`
        // would copy the whole record); under cross-checking the value path compares both.
        if let (Some(p), true, false) = (&self.native, ctx.native(), cross_checking()) {
            if let Some(Ok(b)) = p.truthy(ctx) {
                count(true);
                return Ok(b);
            }
        }
        let v = self.eval(ctx)?;
        Ok(match self.kind {
            TemplateKind::Expression => crate::config::json_truthy(&v),
            TemplateKind::Text => {
                let s = v.as_str().unwrap_or_default();
                let s = s.trim();
                !(s.is_empty()
                    || s.eq_ignore_ascii_case("false")
                    || s == "0"
                    || s.eq_ignore_ascii_case("none"))
            }
        })
    }

    /// Dotted variable paths the template reads but does not define itself.
    pub fn undeclared_variables(&self) -> BTreeSet<String> {
        match self.env.get_template(NAME) {
            Ok(t) => t
                .undeclared_variables(true)
                .into_iter()
                .filter(|v| v != CAPTURE)
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    fn map_err(&self, e: minijinja::Error) -> TemplateError {
        let mut err = TemplateError::from(e);
        err.range = err
            .range
            .map(|r| shift(r, self.expr_offset, self.wrapper_offset, self.source.len()));
        err
    }
}

fn shift(
    r: std::ops::Range<usize>,
    expr_offset: usize,
    wrapper_offset: usize,
    len: usize,
) -> std::ops::Range<usize> {
    if wrapper_offset == 0 {
        return r;
    }
    let f = |x: usize| (x.saturating_sub(wrapper_offset) + expr_offset).min(len);
    f(r.start)..f(r.end)
}

/// Follows a dotted path the way templates do: a missing or null step gives undefined, and
/// a number indexes a list.
fn lookup_path<'a>(root: &Value, path: impl IntoIterator<Item = &'a str>) -> Value {
    let mut cur = root.clone();
    for seg in path {
        if cur.is_undefined() || cur.is_none() {
            return Value::UNDEFINED;
        }
        let next = match (cur.kind(), seg.parse::<usize>()) {
            (ValueKind::Seq, Ok(i)) => cur.get_item_by_index(i),
            _ => cur.get_attr(seg),
        };
        cur = next.unwrap_or(Value::UNDEFINED);
    }
    cur
}

/// Converts a minijinja value to JSON; undefined and none become null.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => J::Null,
        ValueKind::Bool => J::Bool(v.is_true()),
        ValueKind::String => J::String(v.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => match v.as_i64() {
            Some(i) if v.is_integer() => J::from(i),
            _ => serde_json::to_value(v).unwrap_or(J::Null),
        },
        ValueKind::Seq => match v.try_iter() {
            Ok(it) => J::Array(it.map(|x| to_json(&x)).collect()),
            Err(_) => J::Null,
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => J::Object(
                keys.map(|k| {
                    let val = v.get_item(&k).unwrap_or(Value::UNDEFINED);
                    let key = match k.as_str() {
                        Some(s) => s.to_string(),
                        None => k.to_string(),
                    };
                    (key, to_json(&val))
                })
                .collect(),
            ),
            Err(_) => J::Null,
        },
        _ => serde_json::to_value(v).unwrap_or(J::Null),
    }
}

/// Wraps JSON as a template value. JSON null becomes undefined, so a null field behaves
/// exactly like a missing one: it chains (`x.y`), counts as empty, and `default` replaces it.
pub fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::UNDEFINED,
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::from(items.iter().map(from_json).collect::<Vec<_>>()),
        J::Object(map) => Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), from_json(v)))),
    }
}

/// A `for_each` value as items: null is none, a list its items, anything else one item.
pub fn items_of(v: serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(a) => a,
        other => vec![other],
    }
}

/// True when an evaluated field means "leave this field out".
pub fn is_omit(v: &serde_json::Value) -> bool {
    v.as_str() == Some(OMIT_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_expression_keeps_its_type() {
        let ctx = minijinja::context! { record => from_json(&serde_json::json!({"n": 3, "ok": true, "l": [1,2]})) };
        assert_eq!(
            Template::compile("{{ record.n }}")
                .unwrap()
                .eval(&ctx)
                .unwrap(),
            serde_json::json!(3)
        );
        assert_eq!(
            Template::compile(" {{ record.ok }} ")
                .unwrap()
                .eval(&ctx)
                .unwrap(),
            serde_json::json!(true)
        );
        assert_eq!(
            Template::compile("{{ record.l }}")
                .unwrap()
                .eval(&ctx)
                .unwrap(),
            serde_json::json!([1, 2])
        );
        assert_eq!(
            Template::compile("n={{ record.n }}")
                .unwrap()
                .eval(&ctx)
                .unwrap(),
            serde_json::json!("n=3")
        );
        assert_eq!(
            Template::compile("{{ record.missing.deeper }}")
                .unwrap()
                .eval(&ctx)
                .unwrap(),
            serde_json::Value::Null
        );
    }

    #[test]
    fn syntax_errors_point_into_the_source() {
        let e = Template::compile("{{ record.a + }}").unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::Syntax);
        let r = e.range.expect("range");
        assert!(r.end <= "{{ record.a + }}".len());
    }
}
