//! The one table of filters. Each row gives a filter's name, its minijinja function (for
//! ferry's own filters and the builtins ferry changes), how the native evaluator computes it,
//! how many positional arguments it takes, and its help text with an example. The template
//! environment, the native evaluator, the load-time filter checks and `ferry help filters`
//! all read this table; adding a filter is one row here and its function.

use super::filters;
use super::native::{Lower, lower};
use minijinja::Environment;

/// One filter templates may use.
pub struct FilterDef {
    pub name: &'static str,
    /// ferry's own (or a minijinja builtin whose behaviour ferry changes): registered into
    /// the environment by `register`. Otherwise a minijinja builtin, as minijinja has it.
    pub(super) register: Option<fn(&mut Environment<'static>, &'static str)>,
    /// How the native evaluator computes it.
    pub(super) native: Lower,
    /// Positional arguments it takes (at least, at most), checked when a file loads; None
    /// for minijinja's builtins, which minijinja checks when rendering.
    pub arity: Option<(usize, usize)>,
    /// The call as `ferry help filters` shows it (`truncate(n)`), and what it does.
    pub usage: &'static str,
    pub help: &'static str,
    /// Examples, one a line: a template, then optionally `  input -> output`.
    pub example: &'static str,
}

impl FilterDef {
    /// True for the filters ferry adds or changes (those `ferry help filters` documents).
    pub fn is_ferry(&self) -> bool {
        self.register.is_some()
    }
}

const fn builtin(name: &'static str, native: Lower) -> FilterDef {
    FilterDef {
        name,
        register: None,
        native,
        arity: None,
        usage: "",
        help: "",
        example: "",
    }
}

/// Every filter a template may use, ferry's first.
pub static FILTERS: &[FilterDef] = &[
    FilterDef {
        name: "sf_datetime",
        register: Some(|env, name| env.add_filter(name, filters::sf_datetime)),
        native: Lower::Custom(lower::sf_datetime),
        arity: Some((0, 0)),
        usage: "sf_datetime",
        help: "a date/time as Salesforce wants it: ISO-8601, UTC, milliseconds. Reads RFC 3339 \
               with any offset or Z, \"2026-03-15 14:00:00\" (taken as UTC), \"2026-03-15\" \
               (midnight UTC), epoch seconds or epoch milliseconds (numbers or digits)",
        example: "{{ record.start_time | sf_datetime }}  \"2026-03-15T09:00:00-05:00\" -> \"2026-03-15T14:00:00.000Z\"",
    },
    FilterDef {
        name: "sf_date",
        register: Some(|env, name| env.add_filter(name, filters::sf_date)),
        native: Lower::Custom(lower::sf_date),
        arity: Some((0, 1)),
        usage: "sf_date(offset)",
        help: "the date part, YYYY-MM-DD, in UTC or at a fixed offset like '-05:00'",
        example: "{{ record.start_time | sf_date }}  \"2026-03-15T23:30:00Z\" -> \"2026-03-15\"\n\
                  {{ record.start_time | sf_date('-05:00') }}  \"2026-03-16T02:00:00Z\" -> \"2026-03-15\"",
    },
    FilterDef {
        name: "zoom_datetime",
        register: Some(|env, name| env.add_filter(name, filters::zoom_datetime)),
        native: Lower::Scalar(filters::zoom_datetime),
        arity: Some((0, 0)),
        usage: "zoom_datetime",
        help: "a date/time as Zoom's meeting create `start_time` takes it: yyyy-MM-ddTHH:mm:ssZ \
               in UTC (whole seconds); reads what sf_datetime reads",
        example: "{{ record.start_time | zoom_datetime }}  \"2026-03-15T09:00:00.250-05:00\" -> \"2026-03-15T14:00:00Z\"",
    },
    FilterDef {
        name: "email_domain",
        register: Some(|env, name| env.add_filter(name, filters::email_domain)),
        native: Lower::Custom(lower::email_domain),
        arity: Some((0, 0)),
        usage: "email_domain",
        help: "the lower-cased domain of an email address; null when blank or invalid",
        example: "{{ item.user_email | email_domain }}  \"Pat@Contoso.COM\" -> \"contoso.com\"",
    },
    FilterDef {
        name: "truncate",
        register: Some(|env, name| env.add_filter(name, filters::truncate)),
        native: Lower::Custom(lower::truncate),
        arity: Some((0, 2)),
        usage: "truncate(n, end='')",
        help: "at most n characters (255 by default); never cuts inside a character, an emoji \
               or an accented letter; `end` is appended within the limit. Note: Salesforce \
               counts an emoji as two characters of a field's length",
        example: "{{ record.topic | truncate(240) }}\n\
                  {{ record.topic | truncate(10, end='…') }}  \"Quarterly business review\" -> \"Quarterly…\"",
    },
    FilterDef {
        name: "minutes",
        register: Some(|env, name| env.add_filter(name, filters::minutes)),
        native: Lower::No,
        arity: Some((0, 0)),
        usage: "minutes",
        help: "seconds to whole minutes, rounded",
        example: "{{ record.duration_seconds | minutes }}  90 -> 2",
    },
    FilterDef {
        name: "unique",
        register: Some(|env, name| env.add_filter(name, filters::unique)),
        native: Lower::Custom(lower::unique),
        arity: Some((0, 0)),
        usage: "unique(attribute=..., case_sensitive=false)",
        help: "drops repeated items, keeping the first; text compares case-insensitively; with \
               attribute=, compares that field (items without it are all kept); null gives an \
               empty list",
        example: "{{ record.participants | unique(attribute='user_email') }}\n\
                  {{ ['a@x.com', 'A@X.com', 'b@x.com'] | unique }}  -> ['a@x.com', 'b@x.com']",
    },
    FilterDef {
        name: "sha256",
        register: Some(|env, name| env.add_filter(name, filters::sha256)),
        native: Lower::No,
        arity: Some((0, 0)),
        usage: "sha256",
        help: "hex SHA-256 of the text (lists and objects: of their compact JSON)",
        example: "{{ record.uuid | sha256 }}",
    },
    FilterDef {
        name: "json",
        register: Some(|env, name| env.add_filter(name, filters::json)),
        native: Lower::No,
        arity: Some((0, 0)),
        usage: "json",
        help: "compact JSON, nothing escaped for HTML",
        example: "{{ record.settings | json }}  -> {\"a\":1,\"b\":\"<x>\"}",
    },
    FilterDef {
        name: "length",
        register: Some(|env, name| env.add_filter(name, filters::length)),
        native: Lower::Custom(lower::length),
        arity: Some((0, 0)),
        usage: "length",
        help: "the number of items or characters; null counts as empty (0)",
        example: "{{ record.participants | length }}",
    },
    FilterDef {
        name: "count",
        register: Some(|env, name| env.add_filter(name, filters::length)),
        native: Lower::Custom(lower::length),
        arity: Some((0, 0)),
        usage: "count",
        help: "the same as length",
        example: "{{ record.participants | count }}",
    },
    FilterDef {
        name: "first",
        register: Some(|env, name| env.add_filter(name, filters::first)),
        native: Lower::Custom(lower::first),
        arity: Some((0, 0)),
        usage: "first",
        help: "the first item; null for an empty list or null",
        example: "{{ lookups.contact | first }}",
    },
    FilterDef {
        name: "last",
        register: Some(|env, name| env.add_filter(name, filters::last)),
        native: Lower::Custom(lower::last),
        arity: Some((0, 0)),
        usage: "last",
        help: "the last item; null for an empty list or null",
        example: "{{ record.participants | last }}",
    },
    // minijinja's own filters, unchanged.
    builtin("abs", Lower::No),
    builtin("attr", Lower::No),
    builtin("batch", Lower::No),
    builtin("bool", Lower::No),
    builtin("capitalize", Lower::No),
    builtin("chain", Lower::No),
    builtin("d", Lower::Custom(lower::default)),
    builtin("default", Lower::Custom(lower::default)),
    builtin("dictsort", Lower::No),
    builtin("e", Lower::No),
    builtin("escape", Lower::No),
    builtin("float", Lower::No),
    builtin("format", Lower::No),
    builtin("groupby", Lower::No),
    builtin("indent", Lower::No),
    builtin("int", Lower::No),
    builtin("items", Lower::No),
    builtin("join", Lower::Custom(lower::join)),
    builtin("lines", Lower::No),
    builtin("list", Lower::Custom(lower::list)),
    builtin("lower", Lower::Custom(lower::lower)),
    builtin("map", Lower::Custom(lower::map)),
    builtin("max", Lower::No),
    builtin("min", Lower::No),
    builtin("pprint", Lower::No),
    builtin("reject", Lower::No),
    builtin("rejectattr", Lower::Custom(lower::rejectattr)),
    builtin("replace", Lower::No),
    builtin("reverse", Lower::No),
    builtin("round", Lower::No),
    builtin("safe", Lower::No),
    builtin("select", Lower::No),
    builtin("selectattr", Lower::Custom(lower::selectattr)),
    builtin("slice", Lower::No),
    builtin("sort", Lower::No),
    builtin("split", Lower::No),
    builtin("string", Lower::No),
    builtin("sum", Lower::No),
    builtin("title", Lower::No),
    builtin("tojson", Lower::No),
    builtin("trim", Lower::Custom(lower::trim)),
    builtin("upper", Lower::Custom(lower::upper)),
    builtin("zip", Lower::No),
];

/// The row of a filter name.
pub fn find(name: &str) -> Option<&'static FilterDef> {
    FILTERS.iter().find(|f| f.name == name)
}

/// Registers ferry's filters (and its versions of builtins) into an environment.
pub fn register(env: &mut Environment<'static>) {
    for f in FILTERS {
        if let Some(register) = f.register {
            register(env, f.name);
        }
    }
}

/// `ferry help filters`: each of ferry's filters with an example, then minijinja's own.
pub fn help() -> String {
    let mut out = String::from(
        "Filters ferry adds to minijinja's own\n\
         =====================================\n\n\
         A missing value is null: `x.y` on a null `x` is null, `first` of an empty list is null,\n\
         and every filter below turns null into null (or an empty list for `unique`).\n\n",
    );
    for f in FILTERS.iter().filter(|f| f.is_ferry()) {
        out.push_str(f.usage);
        out.push('\n');
        out.push_str(&wrap(f.help, 4, 90));
        for line in f.example.lines() {
            out.push_str("    ");
            out.push_str(line.trim());
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(
        "Special values\n    {{ omit }}                     leave this field out of the write\n    \
         {{ x if y else omit }}         ... only when y is false\n    \
         {{ none }}                     set the field to null\n\n\
         minijinja's own filters (https://docs.rs/minijinja/latest/minijinja/filters/)\n",
    );
    let builtins: Vec<&str> = FILTERS
        .iter()
        .filter(|f| !f.is_ferry())
        .map(|f| f.name)
        .collect();
    out.push_str(&wrap(&builtins.join(", "), 4, 90));
    out
}

/// Words of `text` in lines of at most `width` characters, each indented by `indent`.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&" ".repeat(indent));
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&" ".repeat(indent));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Template, TemplateErrorKind};

    #[test]
    fn every_row_is_a_filter_of_the_environment_once() {
        for (i, f) in FILTERS.iter().enumerate() {
            assert!(
                FILTERS[..i].iter().all(|g| g.name != f.name),
                "{} twice",
                f.name
            );
            let t = Template::compile(&format!("{{{{ none | {} }}}}", f.name)).unwrap();
            let r = t.eval(&minijinja::Value::UNDEFINED);
            assert!(
                !matches!(&r, Err(e) if e.kind == TemplateErrorKind::UnknownFilter),
                "{} is in the table but not in the environment",
                f.name
            );
            if f.is_ferry() {
                assert!(!f.help.is_empty() && !f.example.is_empty(), "{}", f.name);
                assert!(f.example.contains(&format!("| {}", f.name)), "{}", f.name);
                assert!(f.arity.is_some(), "{}", f.name);
            }
        }
    }

    #[test]
    fn a_name_outside_the_table_is_not_a_filter() {
        assert!(find("sf_datetiem").is_none());
        let t = Template::compile("{{ none | sf_datetiem }}").unwrap();
        let r = t.eval(&minijinja::Value::UNDEFINED);
        assert!(matches!(r, Err(e) if e.kind == TemplateErrorKind::UnknownFilter));
    }

    #[test]
    fn help_lists_every_ferry_filter_with_its_example() {
        let h = help();
        for f in FILTERS.iter().filter(|f| f.is_ferry()) {
            assert!(h.contains(f.usage), "{}", f.name);
            for line in f.example.lines() {
                assert!(h.contains(line.trim()), "{}: {line}", f.name);
            }
        }
        assert!(h.contains("selectattr"), "{h}");
    }
}
