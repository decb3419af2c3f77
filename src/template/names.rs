//! What a template reads and calls, found by walking minijinja's parsed template (not its
//! text): the names it reads from its context with where each is written, and the filters it
//! applies. The load-time checks (unknown names, references to lookups/vars/sinks, record
//! fields, unknown filters and their arguments) read this.

use minijinja::machinery::{Span, ast};
use std::collections::BTreeMap;
use std::ops::Range;

/// A name the template reads from its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUse {
    /// The path as written: the root name and the attributes after it (`lookups.owner.Id`
    /// gives `["lookups", "owner", "Id"]`).
    pub path: Vec<String>,
    /// Where its first two parts (`lookups.owner`, or the root alone) are written, as byte
    /// offsets into the template source.
    pub span: Range<usize>,
}

/// A filter the template applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterUse {
    pub name: String,
    /// Where the filter's name is written.
    pub span: Range<usize>,
    /// Its positional arguments.
    pub positional: usize,
    /// The attribute names it reads from its input's items, with where each is written:
    /// an `attribute='x'` argument, or the first argument of `selectattr`, `rejectattr`
    /// and `groupby`, when written as a literal string.
    pub attributes: Vec<(String, Range<usize>)>,
    /// Where the filter's input is written (`record.participants` in
    /// `record.participants | unique(attribute='email')`), when it has one.
    pub input: Option<Range<usize>>,
}

/// Everything [`uses`] finds.
#[derive(Debug, Clone, Default)]
pub struct Uses {
    /// Each distinct path the template reads (not counting names it sets itself, like a
    /// `{% for %}` variable), ordered by path, with where it is first written.
    pub names: Vec<NameUse>,
    /// Every filter applied, in the order written.
    pub filters: Vec<FilterUse>,
}

/// Walks a template (full template syntax: text, `{{ }}` and `{% %}`). None when it does
/// not parse (compiling it reports why).
pub fn uses(source: &str) -> Option<Uses> {
    let syntax = minijinja::syntax::SyntaxConfig::default();
    let tree = minijinja::machinery::parse(source, "t", syntax).ok()?;
    let mut w = Walker::default();
    w.stmt(&tree);
    Some(Uses {
        names: w
            .names
            .into_iter()
            .map(|(path, span)| NameUse { path, span })
            .collect(),
        filters: w.filters,
    })
}

fn range(s: Span) -> Range<usize> {
    let start = s.start_offset as usize;
    start..(s.end_offset as usize).max(start)
}

/// Where an expression's text starts: a filter's or test's span starts at its name, after
/// its input.
fn leftmost(e: &ast::Expr<'_>) -> usize {
    match e {
        ast::Expr::Filter(f) => match &f.expr {
            Some(input) => leftmost(input),
            None => f.span().start_offset as usize,
        },
        ast::Expr::Test(t) => leftmost(&t.expr),
        other => other.span().start_offset as usize,
    }
}

#[derive(Default)]
struct Walker<'a> {
    /// Names the template declares itself, innermost last.
    declared: Vec<&'a str>,
    names: BTreeMap<Vec<String>, Range<usize>>,
    filters: Vec<FilterUse>,
}

impl<'a> Walker<'a> {
    fn stmts(&mut self, list: &[ast::Stmt<'a>]) {
        let depth = self.declared.len();
        for s in list {
            self.stmt(s);
        }
        self.declared.truncate(depth);
    }

    fn declare(&mut self, target: &ast::Expr<'a>) {
        match target {
            ast::Expr::Var(v) => self.declared.push(v.id),
            ast::Expr::List(l) => l.items.iter().for_each(|i| self.declare(i)),
            ast::Expr::Tuple(t) => t.items.iter().for_each(|i| self.declare(i)),
            _ => {}
        }
    }

    fn stmt(&mut self, s: &ast::Stmt<'a>) {
        match s {
            ast::Stmt::Template(t) => self.stmts(&t.children),
            ast::Stmt::EmitExpr(e) => self.expr(&e.expr),
            ast::Stmt::EmitRaw(_) => {}
            ast::Stmt::ForLoop(f) => {
                self.expr(&f.iter);
                let depth = self.declared.len();
                self.declare(&f.target);
                self.declared.push("loop");
                if let Some(filter) = &f.filter_expr {
                    self.expr(filter);
                }
                self.stmts(&f.body);
                self.declared.truncate(depth);
                self.stmts(&f.else_body);
            }
            ast::Stmt::IfCond(c) => {
                self.expr(&c.expr);
                self.stmts(&c.true_body);
                self.stmts(&c.false_body);
            }
            ast::Stmt::WithBlock(w) => {
                let depth = self.declared.len();
                for (target, value) in &w.assignments {
                    self.expr(value);
                    self.declare(target);
                }
                self.stmts(&w.body);
                self.declared.truncate(depth);
            }
            ast::Stmt::Set(set) => {
                self.expr(&set.expr);
                self.declare(&set.target);
            }
            ast::Stmt::SetBlock(set) => {
                if let Some(f) = &set.filter {
                    self.expr(f);
                }
                self.stmts(&set.body);
                self.declare(&set.target);
            }
            ast::Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.stmts(&a.body);
            }
            ast::Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.stmts(&f.body);
            }
            ast::Stmt::Macro(m) => {
                let depth = self.declared.len();
                self.declared.push(m.name);
                m.defaults.iter().for_each(|d| self.expr(d));
                m.args.iter().for_each(|a| self.declare(a));
                self.declared.extend(["caller", "varargs", "kwargs"]);
                self.stmts(&m.body);
                self.declared.truncate(depth);
                self.declared.push(m.name);
            }
            ast::Stmt::CallBlock(c) => {
                self.call_args(&c.call.args);
                self.expr(&c.call.expr);
            }
            ast::Stmt::Do(d) => {
                self.call_args(&d.call.args);
                self.expr(&d.call.expr);
            }
            // Blocks, imports and includes: pipelines have a single template each, where
            // these find nothing to load; minijinja reports them when rendering.
            _ => {}
        }
    }

    fn call_args(&mut self, args: &[ast::CallArg<'a>]) {
        for a in args {
            match a {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    /// A chain of attributes over a name: the name, its attributes and the span of its first
    /// two parts. None when the chain starts anywhere else (`(x or y).z`, `a[0].b`).
    fn chain(e: &ast::Expr<'a>) -> Option<(&'a str, Vec<&'a str>, Range<usize>)> {
        match e {
            ast::Expr::Var(v) => Some((v.id, Vec::new(), range(v.span()))),
            ast::Expr::GetAttr(a) => {
                let (root, mut attrs, span) = Self::chain(&a.expr)?;
                let span = if attrs.is_empty() {
                    range(a.span())
                } else {
                    span
                };
                attrs.push(a.name);
                Some((root, attrs, span))
            }
            _ => None,
        }
    }

    fn expr(&mut self, e: &ast::Expr<'a>) {
        if let Some((root, attrs, span)) = Self::chain(e) {
            if !self.declared.contains(&root) {
                let mut path = Vec::with_capacity(attrs.len() + 1);
                path.push(root.to_string());
                path.extend(attrs.iter().map(|a| a.to_string()));
                self.names.entry(path).or_insert(span);
            }
            return;
        }
        match e {
            ast::Expr::Var(_) | ast::Expr::Const(_) => {}
            ast::Expr::Slice(s) => {
                self.expr(&s.expr);
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part);
                }
            }
            ast::Expr::UnaryOp(u) => self.expr(&u.expr),
            ast::Expr::BinOp(b) => {
                self.expr(&b.left);
                self.expr(&b.right);
            }
            ast::Expr::Compare(c) => {
                self.expr(&c.expr);
                c.ops.iter().for_each(|op| self.expr(&op.expr));
            }
            ast::Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                self.expr(&i.true_expr);
                if let Some(f) = &i.false_expr {
                    self.expr(f);
                }
            }
            ast::Expr::Filter(f) => {
                if let Some(input) = &f.expr {
                    self.expr(input);
                }
                let start = f.span().start_offset as usize;
                let mut attributes = Vec::new();
                let first_is_attribute = matches!(f.name, "selectattr" | "rejectattr" | "groupby");
                for (i, a) in f.args.iter().enumerate() {
                    let e = match a {
                        ast::CallArg::Kwarg("attribute", e) => e,
                        ast::CallArg::Pos(e) if i == 0 && first_is_attribute => e,
                        _ => continue,
                    };
                    if let ast::Expr::Const(c) = e
                        && let Some(name) = c.value.as_str()
                    {
                        attributes.push((name.to_string(), range(c.span())));
                    }
                }
                self.filters.push(FilterUse {
                    name: f.name.to_string(),
                    span: start..start + f.name.len(),
                    positional: f
                        .args
                        .iter()
                        .filter(|a| matches!(a, ast::CallArg::Pos(_)))
                        .count(),
                    attributes,
                    input: f.expr.as_ref().map(|e| {
                        let end = e.span().end_offset as usize;
                        let begin = leftmost(e);
                        begin..end.max(begin)
                    }),
                });
                self.call_args(&f.args);
            }
            ast::Expr::Test(t) => {
                self.expr(&t.expr);
                self.call_args(&t.args);
            }
            ast::Expr::GetAttr(a) => self.expr(&a.expr),
            ast::Expr::GetItem(i) => {
                self.expr(&i.expr);
                self.expr(&i.subscript_expr);
            }
            ast::Expr::Call(c) => {
                self.expr(&c.expr);
                self.call_args(&c.args);
            }
            ast::Expr::List(l) => l.items.iter().for_each(|i| self.expr(i)),
            ast::Expr::Tuple(t) => t.items.iter().for_each(|i| self.expr(i)),
            ast::Expr::Map(m) => {
                m.keys.iter().for_each(|k| self.expr(k));
                m.values.iter().for_each(|v| self.expr(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<(String, &str)> {
        uses(src)
            .unwrap()
            .names
            .iter()
            .map(|n| (n.path.join("."), &src[n.span.clone()]))
            .collect()
    }

    #[test]
    fn paths_are_found_with_where_they_are_written() {
        let src = "{{ lookups.owner.Id ~ record.topic }} {{ sinks . event . Id }}";
        assert_eq!(
            names(src),
            vec![
                ("lookups.owner.Id".to_string(), "lookups.owner"),
                ("record.topic".to_string(), "record.topic"),
                ("sinks.event.Id".to_string(), "sinks . event"),
            ]
        );
    }

    #[test]
    fn a_word_inside_text_or_a_string_is_not_a_name() {
        // The text scan this replaces found `record` in the literal and the raw text first.
        let src = "record: {{ 'record.x' ~ vars.record }}";
        let got = names(src);
        assert_eq!(got, vec![("vars.record".to_string(), "vars.record")]);
        assert_eq!(
            uses(src).unwrap().names[0].span.start,
            src.find("vars").unwrap()
        );
    }

    #[test]
    fn names_the_template_declares_are_not_reads() {
        let src = "{% for p in record.participants %}{{ p.name }}{{ loop.index }}{% endfor %}\
                   {% set x = vars.a %}{{ x.b }}";
        assert_eq!(
            names(src),
            vec![
                ("record.participants".to_string(), "record.participants"),
                ("vars.a".to_string(), "vars.a"),
            ]
        );
    }

    #[test]
    fn filters_are_found_by_name_with_their_arguments() {
        let src = "{{ record.start_time | sf_datetiem }} {{ x | truncate(10, 'end') | upper }}";
        let u = uses(src).unwrap();
        let got: Vec<(&str, &str, usize)> = u
            .filters
            .iter()
            .map(|f| (f.name.as_str(), &src[f.span.clone()], f.positional))
            .collect();
        assert_eq!(
            got,
            vec![
                ("sf_datetiem", "sf_datetiem", 0),
                ("truncate", "truncate", 2),
                ("upper", "upper", 0)
            ]
        );
    }

    #[test]
    fn attribute_arguments_are_found_with_the_filter_input() {
        let src = "{{ record.participants | selectattr('user_email') | unique(attribute='emial') | map(attribute=\"name\") | first }}";
        let u = uses(src).unwrap();
        let got: Vec<(&str, Vec<&str>, &str)> = u
            .filters
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.attributes.iter().map(|(_, r)| &src[r.clone()]).collect(),
                    f.input.clone().map(|r| &src[r]).unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            got[0],
            ("selectattr", vec!["'user_email'"], "record.participants")
        );
        assert_eq!(
            got[1],
            (
                "unique",
                vec!["'emial'"],
                "record.participants | selectattr('user_email')"
            )
        );
        assert_eq!(got[2].1, vec!["\"name\""]);
        assert_eq!(u.filters[1].attributes[0].0, "emial");
        // `map('upper')` names a filter, not an attribute.
        assert!(
            uses("{{ x | map('upper') }}").unwrap().filters[0]
                .attributes
                .is_empty()
        );
    }

    #[test]
    fn a_template_that_does_not_parse_has_no_uses() {
        assert!(uses("{{ record. }}").is_none());
    }
}
