//! Keeping only the enrichment fields a pipeline can read.
//!
//! A record waits in the read-ahead and travels through a batch with its enrichment (a
//! meeting's participants, summary, recordings) as JSON, most of whose fields no template
//! reads. [`Projection::of`] walks every template of a pipeline (minijinja's parsed
//! template, not its text) and finds:
//!
//! - every attribute name any template writes (`item.user_email`, `attribute='name'`, a
//!   literal subscript `x['name']`; every string literal counts too);
//! - the names whose values a template may see whole (printed, compared, passed to a filter
//!   that reads more than one attribute, iterated with `{% for %}`): these are kept with
//!   everything below them.
//!
//! Inside each enrich result, [`Projection::apply`] then drops object keys never named,
//! keeps the names a template reads whole as they are, and keeps any key ending in `email`
//! (the privacy index reads every address in a record) and the stream's primary key and
//! cursor field. An object is never left empty (its truthiness is what `{% if record.summary
//! %}` reads); lists keep every element. Aliases are followed: a lookup's or sink's `item`
//! is what its `for_each` yields, `lookups.NAME.matched` / `unmatched` / `skipped` hold those
//! items, `vars.NAME` is what its template gave.
//!
//! When any template could see the whole record (`{{ record }}`, `record | tojson`,
//! `record[name]`) or uses a statement this walk does not follow (include, import), there is
//! no projection for the pipeline at all: when in doubt, keep everything.

use crate::config::{Expr, Pipeline};
use minijinja::machinery::ast;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What a pipeline's templates read of the enrichment; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// Names read as attributes: kept, and projected below.
    named: BTreeSet<String>,
    /// Names whose values may be seen whole: kept as they are.
    whole: BTreeSet<String>,
}

impl Projection {
    /// The projection for `p`; None when a template could read fields dynamically (then
    /// records keep everything). `keep` names fields the engine itself reads (the stream's
    /// primary key and cursor field).
    pub fn of(p: &Pipeline, keep: &[String]) -> Option<Projection> {
        let mut a = Analysis::default();
        let conditions = |a: &mut Analysis, e: &Option<crate::config::LocatedExpr>| {
            if let Some(e) = e {
                a.template(&e.value, Role::Condition);
            }
        };
        for (_, e) in &p.source.params {
            a.template(&e.value, Role::Value);
        }
        conditions(&mut a, &p.source.where_);
        for e in &p.enrich {
            conditions(&mut a, &e.when);
            for (_, x) in &e.params {
                a.template(&x.value, Role::Value);
            }
        }
        for l in &p.lookups {
            a.item = match &l.for_each {
                Some(f) => a.template(&f.value, Role::Items),
                None => Prov::default(),
            };
            conditions(&mut a, &l.skip);
            for r in &l.rules {
                for (_, x) in &r.where_ {
                    a.template(&x.value, Role::Value);
                }
            }
            let items = std::mem::take(&mut a.item);
            a.lookups.insert(l.name.clone(), items.listed());
        }
        for (name, e) in &p.vars {
            let v = a.template(&e.value, Role::Kept);
            a.vars.insert(name.clone(), v);
        }
        for s in &p.sinks {
            conditions(&mut a, &s.when);
            a.item = match &s.for_each {
                Some(f) => a.template(&f.value, Role::Items),
                None => Prov::default(),
            };
            if let Some(crate::config::SinkKey::Template(k)) = &s.key {
                a.template(&k.value, Role::Value);
            }
            if let Some(id) = &s.id {
                a.template(&id.value, Role::Value);
            }
            for f in &s.fields {
                a.template(&f.value.value, Role::Value);
            }
            a.item = Prov::default();
        }
        for t in &p.tests {
            names_in(&t.record, &mut a.named);
        }
        if a.dynamic {
            return None;
        }
        a.named.extend(keep.iter().cloned());
        Some(Projection {
            named: a.named,
            whole: a.whole,
        })
    }

    /// Drops what no template reads from the enrich result `name`.
    pub fn apply(&self, name: &str, v: &mut Value) {
        if !self.whole.contains(name) {
            self.project(v);
        }
    }

    fn keeps(&self, key: &str) -> bool {
        self.named.contains(key)
            || self.whole.contains(key)
            || key
                .len()
                .checked_sub(5)
                .and_then(|at| key.get(at..))
                .is_some_and(|end| end.eq_ignore_ascii_case("email"))
    }

    fn project(&self, v: &mut Value) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| self.project(i)),
            Value::Object(m) => {
                if m.is_empty() {
                    return;
                }
                let mut kept = Map::with_capacity(m.len().min(8));
                let mut first = None;
                for (k, mut child) in std::mem::take(m) {
                    if self.keeps(&k) {
                        if !self.whole.contains(&k) {
                            self.project(&mut child);
                        }
                        kept.insert(k, child);
                    } else if first.is_none() {
                        first = Some(k);
                    }
                }
                // `{% if record.summary %}` must stay true: a key, its value no one reads.
                if kept.is_empty()
                    && let Some(k) = first
                {
                    kept.insert(k, Value::Null);
                }
                *m = kept;
            }
            _ => {}
        }
    }
}

/// Every object key in a test's record (they name fields the pipeline expects).
fn names_in(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                out.insert(k.clone());
                names_in(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| names_in(i, out)),
        _ => {}
    }
}

/// What a template's result is used for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Rendered, sent or written: seen whole.
    Value,
    /// Only its truthiness is read.
    Condition,
    /// A `for_each`: its items become `item`.
    Items,
    /// A var: kept, and followed wherever `vars.NAME` is read.
    Kept,
}

/// Where a value may come from: enrichment subtrees found under these names, or the whole
/// record. Empty: nothing from the enrichment (a literal, a setting, a Salesforce field).
#[derive(Debug, Clone, Default)]
struct Prov {
    names: BTreeSet<String>,
    record: bool,
    /// Known to be a list (so `first`, `length`, `list` read no keys).
    list: bool,
}

impl Prov {
    fn name(n: &str) -> Prov {
        Prov {
            names: BTreeSet::from([n.to_string()]),
            ..Prov::default()
        }
    }
    fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.record
    }
    fn union(mut self, other: Prov) -> Prov {
        self.names.extend(other.names);
        self.record |= other.record;
        self.list = self.list && other.list;
        self
    }
    fn listed(mut self) -> Prov {
        self.list = true;
        self
    }
    fn single(mut self) -> Prov {
        self.list = false;
        self
    }
    /// An attribute of this value: the subtree under `attr`. A matched lookup result keeps
    /// its `item` under that name, so `item` stays what it was.
    fn attr(self, attr: &str) -> Prov {
        if self.is_empty() {
            Prov::default()
        } else if attr == "item" {
            self.single()
        } else {
            Prov::name(attr)
        }
    }
}

#[derive(Default)]
struct Analysis {
    named: BTreeSet<String>,
    whole: BTreeSet<String>,
    dynamic: bool,
    /// What each lookup's items (for_each) are.
    lookups: BTreeMap<String, Prov>,
    vars: BTreeMap<String, Prov>,
    /// What `item` is in the lookup or sink being walked.
    item: Prov,
    /// Names the template declares itself (`{% for %}`, `{% set %}`).
    declared: Vec<String>,
}

impl Analysis {
    /// Walks one template; returns what its result may hold (for `Items` and `Kept`).
    fn template(&mut self, e: &Expr, role: Role) -> Prov {
        let Expr::Template(t) = e else {
            return Prov::default();
        };
        let source = t.source().to_string();
        let syntax = minijinja::syntax::SyntaxConfig::default();
        let Ok(tree) = minijinja::machinery::parse(&source, "t", syntax) else {
            self.dynamic = true;
            return Prov::default();
        };
        let single = crate::template::single_expression(&source).is_some();
        if single
            && role != Role::Value
            && let ast::Stmt::Template(t) = &tree
            && let [ast::Stmt::EmitExpr(x)] = t.children.as_slice()
        {
            return self.expr(&x.expr);
        }
        self.stmt(&tree);
        Prov::default()
    }

    /// The value is seen whole.
    fn see(&mut self, p: Prov) {
        if p.record {
            self.dynamic = true;
        }
        self.whole.extend(p.names);
    }

    fn see_expr(&mut self, e: &ast::Expr<'_>) {
        let p = self.expr(e);
        self.see(p);
    }

    fn stmts(&mut self, list: &[ast::Stmt<'_>]) {
        let depth = self.declared.len();
        for s in list {
            self.stmt(s);
        }
        self.declared.truncate(depth);
    }

    fn declare(&mut self, target: &ast::Expr<'_>) {
        match target {
            ast::Expr::Var(v) => self.declared.push(v.id.to_string()),
            ast::Expr::List(l) => l.items.iter().for_each(|i| self.declare(i)),
            ast::Expr::Tuple(t) => t.items.iter().for_each(|i| self.declare(i)),
            _ => {}
        }
    }

    fn call_args(&mut self, args: &[ast::CallArg<'_>]) {
        for a in args {
            match a {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => self.see_expr(e),
            }
        }
    }

    fn stmt(&mut self, s: &ast::Stmt<'_>) {
        match s {
            ast::Stmt::Template(t) => self.stmts(&t.children),
            ast::Stmt::EmitExpr(e) => self.see_expr(&e.expr),
            ast::Stmt::EmitRaw(_) => {}
            ast::Stmt::ForLoop(f) => {
                // Iterating a mapping reads its keys: the iterable is seen whole, and what
                // the loop binds then holds nothing projected.
                self.see_expr(&f.iter);
                let depth = self.declared.len();
                self.declare(&f.target);
                self.declared.push("loop".into());
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
                    self.see_expr(value);
                    self.declare(target);
                }
                self.stmts(&w.body);
                self.declared.truncate(depth);
            }
            ast::Stmt::Set(set) => {
                self.see_expr(&set.expr);
                self.declare(&set.target);
            }
            ast::Stmt::SetBlock(set) => {
                if let Some(f) = &set.filter {
                    self.see_expr(f);
                }
                self.stmts(&set.body);
                self.declare(&set.target);
            }
            ast::Stmt::AutoEscape(a) => {
                self.see_expr(&a.enabled);
                self.stmts(&a.body);
            }
            ast::Stmt::FilterBlock(f) => {
                self.see_expr(&f.filter);
                self.stmts(&f.body);
            }
            ast::Stmt::Macro(m) => {
                let depth = self.declared.len();
                self.declared.push(m.name.to_string());
                m.defaults.iter().for_each(|d| self.see_expr(d));
                m.args.iter().for_each(|a| self.declare(a));
                self.declared
                    .extend(["caller", "varargs", "kwargs"].map(String::from));
                self.stmts(&m.body);
                self.declared.truncate(depth);
                self.declared.push(m.name.to_string());
            }
            ast::Stmt::CallBlock(c) => {
                self.call_args(&c.call.args);
                self.see_expr(&c.call.expr);
            }
            ast::Stmt::Do(d) => {
                self.call_args(&d.call.args);
                self.see_expr(&d.call.expr);
            }
            ast::Stmt::Continue(_) | ast::Stmt::Break(_) => {}
            // Blocks, imports and includes: not followed, so no projection.
            #[allow(unreachable_patterns)]
            _ => self.dynamic = true,
        }
    }

    fn var(&self, id: &str) -> Prov {
        if self.declared.iter().any(|d| d == id) {
            // Bound by the template to a value it saw whole.
            return Prov::default();
        }
        match id {
            "record" => Prov {
                record: true,
                ..Prov::default()
            },
            "item" => self.item.clone(),
            "lookups" => self
                .lookups
                .values()
                .cloned()
                .fold(Prov::default(), Prov::union),
            "vars" => self
                .vars
                .values()
                .cloned()
                .fold(Prov::default(), Prov::union),
            _ => Prov::default(),
        }
    }

    /// What `e` may hold, without seeing it whole.
    fn expr(&mut self, e: &ast::Expr<'_>) -> Prov {
        match e {
            ast::Expr::Var(v) => self.var(v.id),
            ast::Expr::Const(c) => {
                if let Some(s) = c.value.as_str() {
                    self.named.insert(s.to_string());
                }
                Prov::default()
            }
            ast::Expr::GetAttr(a) => {
                self.named.insert(a.name.to_string());
                if let ast::Expr::Var(v) = &a.expr
                    && !self.declared.iter().any(|d| d == v.id)
                {
                    match v.id {
                        // `lookups.NAME` and what it holds: that lookup's items.
                        "lookups" => {
                            return self.lookups.get(a.name).cloned().unwrap_or_default();
                        }
                        "vars" => return self.vars.get(a.name).cloned().unwrap_or_default(),
                        _ => {}
                    }
                }
                if let ast::Expr::GetAttr(inner) = &a.expr
                    && let ast::Expr::Var(v) = &inner.expr
                    && v.id == "lookups"
                    && !self.declared.iter().any(|d| d == v.id)
                {
                    self.named.insert(inner.name.to_string());
                    let items = self.lookups.get(inner.name).cloned().unwrap_or_default();
                    return match a.name {
                        "matched" | "unmatched" | "skipped" => items.listed(),
                        _ => items.attr(a.name),
                    };
                }
                let base = self.expr(&a.expr);
                base.attr(a.name)
            }
            ast::Expr::GetItem(i) => {
                let base = self.expr(&i.expr);
                match &i.subscript_expr {
                    ast::Expr::Const(c) if c.value.as_str().is_some() => {
                        let name = c.value.as_str().unwrap_or_default();
                        self.named.insert(name.to_string());
                        base.attr(name)
                    }
                    ast::Expr::Const(c) if c.value.is_number() => base.single(),
                    other => {
                        // A computed subscript may read any key: the value is seen whole.
                        self.see(base);
                        self.see_expr(other);
                        Prov::default()
                    }
                }
            }
            ast::Expr::Slice(s) => {
                self.see_expr(&s.expr);
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.see_expr(part);
                }
                Prov::default()
            }
            ast::Expr::UnaryOp(u) => {
                match u.op {
                    // Truthiness: a projected object is never empty.
                    ast::UnaryOpKind::Not => {
                        self.expr(&u.expr);
                    }
                    ast::UnaryOpKind::Neg => self.see_expr(&u.expr),
                }
                Prov::default()
            }
            ast::Expr::BinOp(b) => match b.op {
                // `a or b` is one of them.
                ast::BinOpKind::ScAnd | ast::BinOpKind::ScOr => {
                    let l = self.expr(&b.left);
                    let r = self.expr(&b.right);
                    l.union(r)
                }
                _ => {
                    self.see_expr(&b.left);
                    self.see_expr(&b.right);
                    Prov::default()
                }
            },
            ast::Expr::Compare(c) => {
                self.see_expr(&c.expr);
                for op in &c.ops {
                    self.see_expr(&op.expr);
                }
                Prov::default()
            }
            ast::Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                let t = self.expr(&i.true_expr);
                match &i.false_expr {
                    Some(f) => {
                        let f = self.expr(f);
                        t.union(f)
                    }
                    None => t,
                }
            }
            ast::Expr::Filter(f) => self.filter(f),
            ast::Expr::Test(t) => {
                self.see_expr(&t.expr);
                self.call_args(&t.args);
                Prov::default()
            }
            ast::Expr::Call(c) => {
                // A method (`x.items()`) reads the object it is called on.
                match &c.expr {
                    ast::Expr::GetAttr(a) => {
                        self.see_expr(&a.expr);
                        self.named.insert(a.name.to_string());
                    }
                    other => self.see_expr(other),
                }
                self.call_args(&c.args);
                Prov::default()
            }
            ast::Expr::List(l) => l.items.iter().fold(Prov::default().listed(), |acc, i| {
                let p = self.expr(i);
                acc.union(p.single()).listed()
            }),
            ast::Expr::Tuple(t) => t.items.iter().fold(Prov::default().listed(), |acc, i| {
                let p = self.expr(i);
                acc.union(p.single()).listed()
            }),
            ast::Expr::Map(m) => {
                m.keys.iter().for_each(|k| self.see_expr(k));
                m.values.iter().fold(Prov::default(), |acc, v| {
                    let p = self.expr(v);
                    acc.union(p)
                })
            }
        }
    }

    fn filter(&mut self, f: &ast::Filter<'_>) -> Prov {
        let input = match &f.expr {
            Some(e) => self.expr(e),
            None => Prov::default(),
        };
        let attribute = f.args.iter().enumerate().find_map(|(i, a)| match a {
            ast::CallArg::Kwarg("attribute", ast::Expr::Const(c)) => c.value.as_str(),
            ast::CallArg::Pos(ast::Expr::Const(c))
                if i == 0 && matches!(f.name, "selectattr" | "rejectattr") =>
            {
                c.value.as_str()
            }
            _ => None,
        });
        self.call_args(&f.args);
        match f.name {
            // Select items by a named attribute (or a test of the item): the items as they
            // are. Without an attribute, `unique` and `sort` compare whole items.
            "selectattr" | "rejectattr" => input.listed(),
            "unique" | "sort" if attribute.is_some() => input.listed(),
            "select" | "reject" | "unique" | "sort" => {
                self.see(input.clone());
                input.listed()
            }
            "map" => match attribute {
                Some(a) => input.attr(a).listed(),
                None => {
                    self.see(input);
                    Prov::default().listed()
                }
            },
            // An item of a list; of a mapping they read its keys.
            "first" | "last" => {
                if !input.list {
                    self.see(input.clone());
                }
                input.single()
            }
            "list" | "reverse" => {
                if !input.list {
                    self.see(input.clone());
                }
                input.listed()
            }
            "length" | "count" => {
                if !input.list {
                    self.see(input);
                }
                Prov::default()
            }
            "default" | "d" => input,
            // Anything else (truncate, join, tojson, items, string...) may read the whole
            // value; once it is kept whole, what it gives holds nothing projected.
            _ => {
                self.see(input);
                Prov::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_are_kept_under_any_name_ending_in_email() {
        let p = Projection::default();
        let mut v = json!([{ "user_email": "a@x.com", "HOST_EMAIL": "b@x.com", "emailed": true,
                             "é": 1, "ée": 2, "id": 3 }]);
        p.apply("participants", &mut v);
        assert_eq!(
            v,
            json!([{ "user_email": "a@x.com", "HOST_EMAIL": "b@x.com" }])
        );
    }
}
