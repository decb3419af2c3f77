//! ferry's template layer: minijinja with ferry's filters, typed evaluation of
//! single-expression fields, `omit`, and the spec's rules for missing values.
//!
//! A [`Template`] is compiled once when a file loads and evaluated per record against a
//! context built once per record (see [`Context`]).

use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

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
    env.add_global("omit", Value::from(OMIT_MARKER));
    register_filters(&mut env);
    env
}

/// ferry's filters beyond minijinja's own. Each is documented in `ferry help filters`.
pub fn register_filters(env: &mut Environment<'static>) {
    env.add_filter("email_domain", |s: Option<String>| -> Option<String> {
        let s = s?;
        let (_, d) = s.trim().rsplit_once('@')?;
        (!d.is_empty()).then(|| d.to_ascii_lowercase())
    });
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
        Ok(Template {
            env: Arc::new(env),
            source: source.into(),
            kind,
            expr_offset,
            wrapper_offset,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// Evaluates to a typed JSON value: the expression's value for a single expression,
    /// a string otherwise. Undefined becomes null.
    pub fn eval(&self, ctx: &Value) -> Result<serde_json::Value, TemplateError> {
        let v = self.eval_value(ctx)?;
        Ok(to_json(&v))
    }

    /// Evaluates to a minijinja value (used where the result feeds another template).
    pub fn eval_value(&self, ctx: &Value) -> Result<Value, TemplateError> {
        let t = self.env.get_template(NAME).map_err(TemplateError::from)?;
        match self.kind {
            TemplateKind::Text => Ok(Value::from(t.render(ctx).map_err(|e| self.map_err(e))?)),
            TemplateKind::Expression => {
                let captured = t.render_captured(ctx).map_err(|e| self.map_err(e))?;
                Ok(captured.state().lookup(CAPTURE).unwrap_or(Value::UNDEFINED))
            }
        }
    }

    /// Evaluates and reads the result as a condition (`when`, `skip`, `where`).
    pub fn truthy(&self, ctx: &Value) -> Result<bool, TemplateError> {
        let v = self.eval_value(ctx)?;
        Ok(match self.kind {
            TemplateKind::Expression => v.is_true(),
            TemplateKind::Text => {
                let s = v.to_string();
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

/// Converts a minijinja value to JSON; undefined and none become null.
pub fn to_json(v: &Value) -> serde_json::Value {
    if v.is_undefined() || v.is_none() {
        return serde_json::Value::Null;
    }
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Wraps JSON as a template value.
pub fn from_json(v: &serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(v))
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
