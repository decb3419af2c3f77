//! A direct evaluator for the templates pipelines are made of, working on the JSON the
//! engine already holds: no conversion of the record into template values, no VM state per
//! evaluation.
//!
//! It covers the common part of the language (paths, literals, `and`/`or`/`not`,
//! comparisons, `in`, `~`, `+ - *`, conditional expressions, slices, `{% if %}` blocks,
//! ferry's filters and the list filters pipelines use). A template using anything else is
//! compiled to no program; and while evaluating, any case whose answer is not certain
//! (mixed types in a comparison, a `none` printed into text, a filter error...) answers
//! [`Fallback`]. Either way the caller evaluates the template with minijinja instead, so
//! the two can never disagree: this module only answers where its answer is minijinja's.
//! `tests/it/template_native.rs` compares both over every shipped template.

use super::{OMIT_MARKER, filters};
use minijinja::machinery::ast;
use minijinja::value::ValueKind;
use serde_json::{Map, Value as Json};
use std::borrow::Cow;

/// This case is left to minijinja.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback;

type R<T> = Result<T, Fallback>;

/// What a template reads its names from. Implemented by the engine's per-record scope, by a
/// JSON object of root names, and by a minijinja value (which takes the minijinja path).
pub trait Scope {
    /// The value of a root name (`record`, `lookups`, `item`...); None when absent.
    fn root(&self, name: &str) -> Option<&Json>;
    /// `loop.index0` and `loop.length` inside a `for_each`, when the scope has no `loop`
    /// value of its own.
    fn loop_position(&self) -> Option<(usize, usize)> {
        None
    }
    /// The whole context as a template value, for minijinja.
    fn to_value(&self) -> minijinja::Value;
    /// False when [`Scope::root`] cannot answer (the scope is only a template value).
    fn native(&self) -> bool {
        true
    }
    /// `vars.NAME` answered without going through the whole `vars` object (which a scope
    /// may hold as parts of other values, see [`Shared`]); None: read it from `vars`.
    fn var(&self, _name: &str) -> Option<VarRef<'_>> {
        None
    }
}

/// A `vars` entry as a scope answers it.
pub enum VarRef<'a> {
    /// The value (JSON null: undefined).
    Value(&'a Json),
    /// A list of these values, as a filter over a list made it (`selectattr | list`).
    Parts(Vec<&'a Json>),
}

/// A value that is a part of a JSON tree, or a list of such parts, kept as their positions
/// in the tree instead of a copy: child positions from the root (object entries in order,
/// list items by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    One(Vec<usize>),
    Many(Vec<Vec<usize>>),
}

impl Shared {
    /// The value in `tree` (None if the tree no longer has it).
    pub fn resolve<'t>(&self, tree: &'t Json) -> Option<VarRef<'t>> {
        Some(match self {
            Shared::One(p) => VarRef::Value(at_path(tree, p)?),
            Shared::Many(ps) => VarRef::Parts(
                ps.iter()
                    .map(|p| at_path(tree, p))
                    .collect::<Option<Vec<_>>>()?,
            ),
        })
    }

    /// A copy of the value, as [`Program::eval`] would have given it.
    pub fn to_json(&self, tree: &Json) -> Json {
        match self.resolve(tree) {
            Some(VarRef::Value(j)) => j.clone(),
            Some(VarRef::Parts(ps)) => Json::Array(ps.into_iter().cloned().collect()),
            None => Json::Null,
        }
    }
}

fn at_path<'t>(tree: &'t Json, path: &[usize]) -> Option<&'t Json> {
    let mut cur = tree;
    for &i in path {
        cur = match cur {
            Json::Object(m) => m.values().nth(i)?,
            Json::Array(a) => a.get(i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The position of `target` (the very node, not an equal one) inside `tree`.
fn find_path(tree: &Json, target: &Json, path: &mut Vec<usize>) -> bool {
    if std::ptr::eq(tree, target) {
        return true;
    }
    let search = |i: usize, v: &Json, path: &mut Vec<usize>| {
        if !matches!(v, Json::Object(_) | Json::Array(_)) && !std::ptr::eq(v, target) {
            return false;
        }
        path.push(i);
        if find_path(v, target, path) {
            return true;
        }
        path.pop();
        false
    };
    match tree {
        Json::Object(m) => m.values().enumerate().any(|(i, v)| search(i, v, path)),
        Json::Array(a) => a.iter().enumerate().any(|(i, v)| search(i, v, path)),
        _ => false,
    }
}

impl Scope for minijinja::Value {
    fn root(&self, _: &str) -> Option<&Json> {
        None
    }
    fn to_value(&self) -> minijinja::Value {
        self.clone()
    }
    fn native(&self) -> bool {
        false
    }
}

/// A JSON object whose keys are the root names.
impl Scope for Json {
    fn root(&self, name: &str) -> Option<&Json> {
        self.get(name).filter(|v| !v.is_null())
    }
    fn to_value(&self) -> minijinja::Value {
        super::from_json(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TestKind {
    None,
    Defined,
    Undefined,
}

#[derive(Debug, Clone)]
pub(super) enum SelTest {
    Truthy,
    Eq(Node),
    Ne(Node),
    In(Node),
    Defined,
    Undefined,
    None,
}

#[derive(Debug, Clone)]
pub(super) enum Filter {
    SfDatetime,
    /// A scalar filter computed by its minijinja function (see [`Lower::Scalar`]).
    Scalar(fn(&minijinja::Value) -> Result<minijinja::Value, minijinja::Error>),
    SfDate(Option<Node>),
    EmailDomain,
    Truncate {
        length: Option<Node>,
        end: Option<Node>,
    },
    Unique {
        attribute: Option<String>,
        case_sensitive: bool,
    },
    Length,
    First,
    Last,
    List,
    Join(Option<Node>),
    MapAttr(String),
    Select {
        attr: String,
        test: SelTest,
        reject: bool,
    },
    Lower,
    Upper,
    Trim,
    Default(Box<Node>),
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    Const(Json),
    NoneLit,
    Omit,
    Root(&'static str),
    /// A root name and attributes after it (`record.summary.summary_overview`), walked in
    /// one loop over the JSON. Never `loop`.
    Path(&'static str, Box<[Box<str>]>),
    Attr(Box<Node>, Box<str>),
    Item(Box<Node>, Box<Node>),
    Slice(Box<Node>, Option<Box<Node>>, Option<Box<Node>>),
    List(Vec<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Compare(Box<Node>, Vec<(Cmp, Node)>),
    Arith(Arith, Box<Node>, Box<Node>),
    Concat(Box<Node>, Box<Node>),
    If(Box<Node>, Box<Node>, Option<Box<Node>>),
    Filter(Box<Node>, Box<Filter>),
    Test(Box<Node>, TestKind, bool),
}

#[derive(Debug, Clone)]
enum Stmt {
    Raw(String),
    Emit(Node),
    If(Node, Vec<Stmt>, Vec<Stmt>),
}

/// A template compiled for direct evaluation.
#[derive(Debug, Clone)]
pub struct Program(Prog);

#[derive(Debug, Clone)]
enum Prog {
    Expression(Node),
    Text(Vec<Stmt>),
}

const ROOTS: &[&str] = &[
    "record", "lookups", "vars", "sinks", "item", "loop", "settings", "run",
];

impl Program {
    /// The program for a single expression, if every part of it is covered.
    pub fn expression(source: &str) -> Option<Program> {
        let expr = minijinja::machinery::parse_expr(source).ok()?;
        Some(Program(Prog::Expression(node(&expr).ok()?)))
    }

    /// The program for text with placeholders and `if` blocks, if every part is covered.
    pub fn text(source: &str) -> Option<Program> {
        let syntax = minijinja::syntax::SyntaxConfig::default();
        let ast::Stmt::Template(t) = minijinja::machinery::parse(source, "t", syntax).ok()? else {
            return None;
        };
        Some(Program(Prog::Text(stmts(&t.children).ok()?)))
    }

    /// The value of an expression program, or the text of a text program (with `omit` handled
    /// as [`super::Template::eval`] does).
    pub fn eval(&self, scope: &dyn Scope) -> R<Json> {
        match &self.0 {
            Prog::Expression(n) => Ok(eval(n, scope)?.into_json()),
            Prog::Text(body) => {
                let mut out = String::new();
                render(body, scope, &mut out)?;
                if out.contains(OMIT_MARKER) {
                    if out.trim() == OMIT_MARKER {
                        return Ok(Json::String(OMIT_MARKER.into()));
                    }
                    out = out.replace(OMIT_MARKER, "");
                }
                Ok(Json::String(out))
            }
        }
    }
}

impl Program {
    /// An expression program read as a condition, without making its value into JSON;
    /// None for a text program.
    pub fn truthy(&self, scope: &dyn Scope) -> Option<R<bool>> {
        match &self.0 {
            Prog::Expression(n) => Some(eval(n, scope).map(|v| v.truthy())),
            Prog::Text(_) => None,
        }
    }

    /// An expression's value as the positions of its parts in `tree` when it is a part of
    /// it (or a list of parts), instead of a copy; otherwise the value (Err), as
    /// [`Program::eval`] gives it.
    pub fn eval_shared(&self, scope: &dyn Scope, tree: &Json) -> R<Result<Shared, Json>> {
        let Prog::Expression(n) = &self.0 else {
            return self.eval(scope).map(Err);
        };
        let v = eval(n, scope)?;
        let found = |j: &Json| {
            let mut p = Vec::new();
            find_path(tree, j, &mut p).then_some(p)
        };
        match &v {
            V::R(j) => {
                if let Some(p) = found(j) {
                    return Ok(Ok(Shared::One(p)));
                }
            }
            V::Seq(items) if !items.is_empty() => {
                let paths: Option<Vec<_>> = items
                    .iter()
                    .map(|it| match it {
                        V::R(j) => found(j),
                        _ => None,
                    })
                    .collect();
                if let Some(paths) = paths {
                    return Ok(Ok(Shared::Many(paths)));
                }
            }
            _ => {}
        }
        Ok(Err(v.into_json()))
    }

    /// The items of a `for_each` expression, borrowed from the scope where they are in it:
    /// null gives none, a list its items, any other value is one item.
    pub fn items<'a>(&'a self, scope: &'a dyn Scope) -> R<Vec<Cow<'a, Json>>> {
        let Prog::Expression(n) = &self.0 else {
            return Err(Fallback);
        };
        let item = |v: V<'a>| match v {
            V::R(j) => Cow::Borrowed(j),
            other => Cow::Owned(other.into_json()),
        };
        Ok(match eval(n, scope)? {
            V::Undef | V::None => Vec::new(),
            V::Seq(items) => items.into_iter().map(item).collect(),
            V::R(Json::Array(a)) => a.iter().map(Cow::Borrowed).collect(),
            V::O(Json::Array(a)) => a.into_iter().map(Cow::Owned).collect(),
            other => vec![item(other)],
        })
    }
}

// ---------------------------------------------------------------------------------------
// From minijinja's syntax tree to ours.

fn stmts(list: &[ast::Stmt<'_>]) -> R<Vec<Stmt>> {
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        out.push(match s {
            ast::Stmt::EmitRaw(r) => Stmt::Raw(r.raw.to_string()),
            ast::Stmt::EmitExpr(e) => Stmt::Emit(node(&e.expr)?),
            ast::Stmt::IfCond(c) => {
                Stmt::If(node(&c.expr)?, stmts(&c.true_body)?, stmts(&c.false_body)?)
            }
            _ => return Err(Fallback),
        });
    }
    Ok(out)
}

fn boxed(e: &ast::Expr<'_>) -> R<Box<Node>> {
    node(e).map(Box::new)
}

fn constant(v: &minijinja::Value) -> R<Node> {
    Ok(match v.kind() {
        ValueKind::None => Node::NoneLit,
        ValueKind::Bool => Node::Const(Json::Bool(v.is_true())),
        ValueKind::String => Node::Const(Json::String(v.as_str().ok_or(Fallback)?.into())),
        ValueKind::Number => match v.as_i64() {
            Some(i) if v.is_integer() => Node::Const(Json::from(i)),
            _ => {
                let f = f64::try_from(v.clone()).map_err(|_| Fallback)?;
                Node::Const(
                    serde_json::Number::from_f64(f)
                        .map(Json::Number)
                        .ok_or(Fallback)?,
                )
            }
        },
        ValueKind::Seq => {
            let mut items = Vec::new();
            for x in v.try_iter().map_err(|_| Fallback)? {
                items.push(constant(&x)?);
            }
            Node::List(items)
        }
        _ => return Err(Fallback),
    })
}

fn node(e: &ast::Expr<'_>) -> R<Node> {
    Ok(match e {
        ast::Expr::Var(v) => match v.id {
            "omit" => Node::Omit,
            id => Node::Root(ROOTS.iter().find(|r| **r == id).copied().ok_or(Fallback)?),
        },
        ast::Expr::Const(c) => constant(&c.value)?,
        ast::Expr::GetAttr(a) => match node(&a.expr)? {
            Node::Root(r) if r != "loop" => Node::Path(r, Box::new([a.name.into()])),
            Node::Path(r, attrs) => {
                let mut attrs = attrs.into_vec();
                attrs.push(a.name.into());
                Node::Path(r, attrs.into_boxed_slice())
            }
            base => Node::Attr(Box::new(base), a.name.into()),
        },
        ast::Expr::GetItem(i) => Node::Item(boxed(&i.expr)?, boxed(&i.subscript_expr)?),
        ast::Expr::Slice(s) => {
            if s.step.is_some() {
                return Err(Fallback);
            }
            Node::Slice(
                boxed(&s.expr)?,
                s.start.as_ref().map(boxed).transpose()?,
                s.stop.as_ref().map(boxed).transpose()?,
            )
        }
        ast::Expr::List(l) => Node::List(l.items.iter().map(node).collect::<R<_>>()?),
        ast::Expr::UnaryOp(u) => match u.op {
            ast::UnaryOpKind::Not => Node::Not(boxed(&u.expr)?),
            ast::UnaryOpKind::Neg => Node::Neg(boxed(&u.expr)?),
        },
        ast::Expr::BinOp(b) => {
            let (l, r) = (boxed(&b.left)?, boxed(&b.right)?);
            use ast::BinOpKind as K;
            match b.op {
                K::ScAnd => Node::And(l, r),
                K::ScOr => Node::Or(l, r),
                K::Add => Node::Arith(Arith::Add, l, r),
                K::Sub => Node::Arith(Arith::Sub, l, r),
                K::Mul => Node::Arith(Arith::Mul, l, r),
                K::Concat => Node::Concat(l, r),
                K::Eq => Node::Compare(l, vec![(Cmp::Eq, *r)]),
                K::Ne => Node::Compare(l, vec![(Cmp::Ne, *r)]),
                K::Lt => Node::Compare(l, vec![(Cmp::Lt, *r)]),
                K::Lte => Node::Compare(l, vec![(Cmp::Le, *r)]),
                K::Gt => Node::Compare(l, vec![(Cmp::Gt, *r)]),
                K::Gte => Node::Compare(l, vec![(Cmp::Ge, *r)]),
                K::In => Node::Compare(l, vec![(Cmp::In, *r)]),
                _ => return Err(Fallback),
            }
        }
        ast::Expr::Compare(c) => {
            let mut ops = Vec::with_capacity(c.ops.len());
            for op in &c.ops {
                use ast::CompareOpKind as K;
                let k = match op.op {
                    K::Eq => Cmp::Eq,
                    K::Ne => Cmp::Ne,
                    K::Lt => Cmp::Lt,
                    K::Lte => Cmp::Le,
                    K::Gt => Cmp::Gt,
                    K::Gte => Cmp::Ge,
                    K::In => Cmp::In,
                    K::NotIn => Cmp::NotIn,
                };
                ops.push((k, node(&op.expr)?));
            }
            Node::Compare(boxed(&c.expr)?, ops)
        }
        ast::Expr::IfExpr(i) => Node::If(
            boxed(&i.test_expr)?,
            boxed(&i.true_expr)?,
            i.false_expr.as_ref().map(boxed).transpose()?,
        ),
        ast::Expr::Test(t) => {
            if !t.args.is_empty() {
                return Err(Fallback);
            }
            let (kind, negated) = match t.name {
                "none" => (TestKind::None, false),
                "defined" => (TestKind::Defined, false),
                "undefined" => (TestKind::Undefined, false),
                _ => return Err(Fallback),
            };
            Node::Test(boxed(&t.expr)?, kind, negated)
        }
        ast::Expr::Filter(f) => {
            let input = boxed(f.expr.as_ref().ok_or(Fallback)?)?;
            Node::Filter(input, Box::new(filter(f.name, &f.args)?))
        }
        _ => return Err(Fallback),
    })
}

/// A filter call's arguments, split into positional and keyword ones (splats are not
/// covered), as the registry's native lowerings read them.
pub(super) struct CallArgs<'a, 'b> {
    pub pos: Vec<&'b ast::Expr<'a>>,
    pub kw: Vec<(&'a str, &'b ast::Expr<'a>)>,
}

impl CallArgs<'_, '_> {
    /// No arguments at all.
    pub fn none(&self) -> bool {
        self.pos.is_empty() && self.kw.is_empty()
    }
}

/// How the registry turns one of its filters into this evaluator's form.
#[derive(Clone, Copy)]
pub(super) enum Lower {
    /// Not covered: templates using it are left to minijinja.
    No,
    /// A filter without arguments on a scalar, computed by its minijinja function (the
    /// function's answer for text and numbers; anything else is left to minijinja).
    Scalar(fn(&minijinja::Value) -> Result<minijinja::Value, minijinja::Error>),
    /// A lowering of its own.
    Custom(fn(&CallArgs<'_, '_>) -> R<Filter>),
}

fn args<'a, 'b>(list: &'b [ast::CallArg<'a>]) -> R<CallArgs<'a, 'b>> {
    let mut pos = Vec::new();
    let mut kw = Vec::new();
    for a in list {
        match a {
            ast::CallArg::Pos(e) if kw.is_empty() => pos.push(e),
            ast::CallArg::Kwarg(k, e) => kw.push((*k, e)),
            _ => return Err(Fallback),
        }
    }
    Ok(CallArgs { pos, kw })
}

fn const_str(e: &ast::Expr<'_>) -> R<String> {
    match e {
        ast::Expr::Const(c) => c.value.as_str().map(str::to_string).ok_or(Fallback),
        _ => Err(Fallback),
    }
}

fn filter(name: &str, list: &[ast::CallArg<'_>]) -> R<Filter> {
    let def = super::registry::find(name).ok_or(Fallback)?;
    match def.native {
        Lower::No => Err(Fallback),
        Lower::Scalar(f) if list.is_empty() => Ok(Filter::Scalar(f)),
        Lower::Scalar(_) => Err(Fallback),
        Lower::Custom(lower) => lower(&args(list)?),
    }
}

/// The lowerings the registry names (`Lower::Custom`), one per filter.
pub(super) mod lower {
    use super::*;

    type L = R<Filter>;

    fn opt_node(e: Option<&&ast::Expr<'_>>) -> R<Option<Node>> {
        e.map(|e| node(e)).transpose()
    }

    pub fn sf_datetime(c: &CallArgs<'_, '_>) -> L {
        if c.none() {
            Ok(Filter::SfDatetime)
        } else {
            Err(Fallback)
        }
    }

    pub fn sf_date(c: &CallArgs<'_, '_>) -> L {
        if !c.kw.is_empty() || c.pos.len() > 1 {
            return Err(Fallback);
        }
        Ok(Filter::SfDate(opt_node(c.pos.first())?))
    }

    pub fn email_domain(c: &CallArgs<'_, '_>) -> L {
        if c.none() {
            Ok(Filter::EmailDomain)
        } else {
            Err(Fallback)
        }
    }

    pub fn truncate(c: &CallArgs<'_, '_>) -> L {
        if c.pos.len() > 1 || !c.kw.iter().all(|(k, _)| *k == "end") {
            return Err(Fallback);
        }
        Ok(Filter::Truncate {
            length: opt_node(c.pos.first())?,
            end: c.kw.first().map(|(_, e)| node(e)).transpose()?,
        })
    }

    pub fn unique(c: &CallArgs<'_, '_>) -> L {
        if !c.pos.is_empty() {
            return Err(Fallback);
        }
        let mut attribute = None;
        let mut case_sensitive = false;
        for (k, e) in &c.kw {
            match *k {
                "attribute" => attribute = Some(const_str(e)?),
                "case_sensitive" => match e {
                    ast::Expr::Const(c) if c.value.kind() == ValueKind::Bool => {
                        case_sensitive = c.value.is_true()
                    }
                    _ => return Err(Fallback),
                },
                _ => return Err(Fallback),
            }
        }
        Ok(Filter::Unique {
            attribute,
            case_sensitive,
        })
    }

    fn plain(c: &CallArgs<'_, '_>, f: Filter) -> L {
        if c.none() { Ok(f) } else { Err(Fallback) }
    }

    pub fn length(c: &CallArgs<'_, '_>) -> L {
        plain(c, Filter::Length)
    }

    pub fn first(c: &CallArgs<'_, '_>) -> L {
        plain(c, Filter::First)
    }

    pub fn last(c: &CallArgs<'_, '_>) -> L {
        plain(c, Filter::Last)
    }

    pub fn list(c: &CallArgs<'_, '_>) -> L {
        plain(c, Filter::List)
    }

    pub fn lower(c: &CallArgs<'_, '_>) -> L {
        plain(c, Filter::Lower)
    }

    pub fn upper(c: &CallArgs<'_, '_>) -> L {
        plain(c, Filter::Upper)
    }

    pub fn trim(c: &CallArgs<'_, '_>) -> L {
        plain(c, Filter::Trim)
    }

    pub fn join(c: &CallArgs<'_, '_>) -> L {
        if !c.kw.is_empty() || c.pos.len() > 1 {
            return Err(Fallback);
        }
        Ok(Filter::Join(opt_node(c.pos.first())?))
    }

    pub fn map(c: &CallArgs<'_, '_>) -> L {
        match (c.pos.as_slice(), c.kw.as_slice()) {
            ([], [("attribute", e)]) => Ok(Filter::MapAttr(const_str(e)?)),
            _ => Err(Fallback),
        }
    }

    fn select(c: &CallArgs<'_, '_>, reject: bool) -> L {
        let pos = &c.pos;
        if !c.kw.is_empty() || pos.is_empty() || pos.len() > 3 {
            return Err(Fallback);
        }
        let attr = const_str(pos[0])?;
        let test = match (pos.get(1).map(|e| const_str(e)).transpose()?, pos.get(2)) {
            (None, None) => SelTest::Truthy,
            (Some(t), arg) => match (t.as_str(), arg) {
                ("eq" | "equalto" | "==", Some(a)) => SelTest::Eq(node(a)?),
                ("ne" | "!=", Some(a)) => SelTest::Ne(node(a)?),
                ("in", Some(a)) => SelTest::In(node(a)?),
                ("defined", None) => SelTest::Defined,
                ("undefined", None) => SelTest::Undefined,
                ("none", None) => SelTest::None,
                _ => return Err(Fallback),
            },
            (None, Some(_)) => return Err(Fallback),
        };
        Ok(Filter::Select { attr, test, reject })
    }

    pub fn selectattr(c: &CallArgs<'_, '_>) -> L {
        select(c, false)
    }

    pub fn rejectattr(c: &CallArgs<'_, '_>) -> L {
        select(c, true)
    }

    pub fn default(c: &CallArgs<'_, '_>) -> L {
        match (c.pos.as_slice(), c.kw.is_empty()) {
            ([d], true) => Ok(Filter::Default(Box::new(node(d)?))),
            _ => Err(Fallback),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Values while evaluating.

/// A value as minijinja would hold it. JSON null is undefined, as [`super::from_json`]
/// makes it.
#[derive(Debug, Clone)]
enum V<'a> {
    Undef,
    None,
    Omit,
    /// Borrowed from the scope or the program; never JSON null.
    R(&'a Json),
    /// Made while evaluating; never JSON null.
    O(Json),
    /// A list made while evaluating.
    Seq(Vec<V<'a>>),
    /// `loop` inside a `for_each`: index0 and length.
    Loop(usize, usize),
}

/// A key of a JSON object. Records and lookup results are small objects, where comparing
/// the keys in order beats hashing the name.
fn get<'m>(m: &'m Map<String, Json>, name: &str) -> Option<&'m Json> {
    if m.len() <= 16 {
        m.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
    } else {
        m.get(name)
    }
}

fn of(j: &Json) -> V<'_> {
    if j.is_null() { V::Undef } else { V::R(j) }
}

fn owned<'a>(j: Json) -> V<'a> {
    if j.is_null() { V::Undef } else { V::O(j) }
}

fn text<'a>(s: impl Into<String>) -> V<'a> {
    V::O(Json::String(s.into()))
}

#[derive(Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

impl<'a> V<'a> {
    fn json(&self) -> Option<&Json> {
        match self {
            V::R(j) => Some(j),
            V::O(j) => Some(j),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            V::Omit => Some(OMIT_MARKER),
            _ => self.json().and_then(Json::as_str),
        }
    }

    fn num(&self) -> Option<Num> {
        let n = match self.json()? {
            Json::Number(n) => n,
            _ => return None,
        };
        if let Some(i) = n.as_i64() {
            Some(Num::I(i))
        } else if n.is_u64() {
            None
        } else {
            n.as_f64().map(Num::F)
        }
    }

    fn is_undef_or_none(&self) -> bool {
        matches!(self, V::Undef | V::None)
    }

    fn truthy(&self) -> bool {
        match self {
            V::Undef | V::None => false,
            V::Omit | V::Loop(..) => true,
            V::Seq(s) => !s.is_empty(),
            V::R(j) => crate::config::json_truthy(j),
            V::O(j) => crate::config::json_truthy(j),
        }
    }

    fn is_seq(&self) -> bool {
        matches!(self, V::Seq(_)) || matches!(self.json(), Some(Json::Array(_)))
    }

    /// The items of a list; None for anything else.
    fn items(self) -> Option<Vec<V<'a>>> {
        match self {
            V::Seq(s) => Some(s),
            V::R(Json::Array(a)) => Some(a.iter().map(of).collect()),
            V::O(Json::Array(a)) => Some(a.into_iter().map(owned).collect()),
            _ => None,
        }
    }

    /// The items of a list, or none for undefined (which iterates as empty).
    fn items_or_empty(self) -> R<Vec<V<'a>>> {
        match self {
            V::Undef => Ok(Vec::new()),
            other => other.items().ok_or(Fallback),
        }
    }

    /// Attribute access: maps give their key (missing: undefined), undefined chains.
    fn attr(self, name: &str) -> R<V<'a>> {
        match self {
            V::Undef => Ok(V::Undef),
            V::R(Json::Object(m)) => Ok(get(m, name).map_or(V::Undef, of)),
            V::O(Json::Object(mut m)) => Ok(m.remove(name).map_or(V::Undef, owned)),
            V::Loop(i, n) => Ok(match name {
                "index" => V::O(Json::from(i + 1)),
                "index0" => V::O(Json::from(i)),
                "first" => V::O(Json::Bool(i == 0)),
                "last" => V::O(Json::Bool(i + 1 == n)),
                "length" => V::O(Json::from(n)),
                "revindex" => V::O(Json::from(n - i)),
                "revindex0" => V::O(Json::from(n - i - 1)),
                _ => return Err(Fallback),
            }),
            _ => Err(Fallback),
        }
    }

    fn into_json(self) -> Json {
        match self {
            V::Undef | V::None => Json::Null,
            V::Omit => Json::String(OMIT_MARKER.into()),
            V::R(j) => j.clone(),
            V::O(j) => j,
            V::Seq(s) => Json::Array(s.into_iter().map(V::into_json).collect()),
            V::Loop(i, n) => serde_json::json!({
                "index": i + 1, "index0": i, "first": i == 0, "last": i + 1 == n, "length": n,
                "revindex": n - i, "revindex0": n - i - 1,
            }),
        }
    }

    /// As minijinja prints the value (`~`, `join`); None where that is not covered.
    fn display(&self) -> R<Cow<'_, str>> {
        Ok(match self {
            V::Undef => Cow::Borrowed(""),
            V::None => Cow::Borrowed("none"),
            V::Omit => Cow::Borrowed(OMIT_MARKER),
            _ => match self.json().ok_or(Fallback)? {
                Json::String(s) => Cow::Borrowed(s.as_str()),
                // minijinja prints booleans as Python does; text output is lower case
                Json::Bool(b) => Cow::Borrowed(if *b { "True" } else { "False" }),
                Json::Number(_) => match self.num().ok_or(Fallback)? {
                    Num::I(i) => Cow::Owned(i.to_string()),
                    Num::F(f) => Cow::Owned(float_text(f)),
                },
                _ => return Err(Fallback),
            },
        })
    }

    /// As text output prints the value: nothing for null, like [`super::text_formatter`].
    fn print(&self, out: &mut String) -> R<()> {
        match self.json() {
            _ if self.is_undef_or_none() => {}
            Some(Json::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            _ => out.push_str(&self.display()?),
        }
        Ok(())
    }
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf" } else { "inf" }.into();
    }
    let mut s = f.to_string();
    if !s.contains('.') {
        s.push_str(".0");
    }
    s
}

/// Equality as minijinja decides it, where that is plain.
fn equal(a: &V<'_>, b: &V<'_>) -> R<bool> {
    match (a, b) {
        (V::Undef, V::Undef) | (V::None, V::None) => return Ok(true),
        (V::Undef | V::None, _) | (_, V::Undef | V::None) => {
            // undefined against a value is unequal; undefined against none is left alone
            if a.is_undef_or_none() && b.is_undef_or_none() {
                return Err(Fallback);
            }
            return Ok(false);
        }
        _ => {}
    }
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return Ok(x == y);
    }
    if let (Some(x), Some(y)) = (a.num(), b.num()) {
        return Ok(match (x, y) {
            (Num::I(x), Num::I(y)) => x == y,
            (Num::I(x), Num::F(y)) => (x as f64) == y,
            (Num::F(x), Num::I(y)) => x == (y as f64),
            (Num::F(x), Num::F(y)) => x == y,
        });
    }
    match (a.json(), b.json()) {
        (Some(Json::Bool(x)), Some(Json::Bool(y))) => Ok(x == y),
        (Some(Json::String(_)), Some(Json::Bool(_)))
        | (Some(Json::Bool(_)), Some(Json::String(_))) => Ok(false),
        (Some(Json::String(_)), Some(Json::Number(_)))
        | (Some(Json::Number(_)), Some(Json::String(_))) => Ok(false),
        _ => Err(Fallback),
    }
}

fn order(a: &V<'_>, b: &V<'_>) -> R<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return Ok(x.cmp(y));
    }
    match (a.num(), b.num()) {
        (Some(Num::I(x)), Some(Num::I(y))) => Ok(x.cmp(&y)),
        (Some(x), Some(y)) => {
            let f = |n: Num| match n {
                Num::I(i) => i as f64,
                Num::F(f) => f,
            };
            f(x).partial_cmp(&f(y)).ok_or(Fallback)
        }
        _ => Err(Fallback),
    }
}

fn contains(container: &V<'_>, x: &V<'_>) -> R<bool> {
    if let Some(hay) = container.as_str() {
        return x.as_str().map(|n| hay.contains(n)).ok_or(Fallback);
    }
    match container {
        V::Seq(items) => {
            for it in items {
                if equal(it, x)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        _ => match container.json() {
            Some(Json::Array(items)) => {
                for it in items {
                    if equal(&of(it), x)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Some(Json::Object(m)) => x.as_str().map(|k| m.contains_key(k)).ok_or(Fallback),
            _ => Err(Fallback),
        },
    }
}

fn arith<'a>(op: Arith, a: &V<'a>, b: &V<'a>) -> R<V<'a>> {
    match (a.num(), b.num()) {
        (Some(Num::I(x)), Some(Num::I(y))) => {
            let r = match op {
                Arith::Add => x.checked_add(y),
                Arith::Sub => x.checked_sub(y),
                Arith::Mul => x.checked_mul(y),
            };
            r.map(|i| V::O(Json::from(i))).ok_or(Fallback)
        }
        (Some(x), Some(y)) => {
            let f = |n: Num| match n {
                Num::I(i) => i as f64,
                Num::F(f) => f,
            };
            let r = match op {
                Arith::Add => f(x) + f(y),
                Arith::Sub => f(x) - f(y),
                Arith::Mul => f(x) * f(y),
            };
            serde_json::Number::from_f64(r)
                .map(|n| V::O(Json::Number(n)))
                .ok_or(Fallback)
        }
        _ => match (op, a.as_str(), b.as_str()) {
            (Arith::Add, Some(x), Some(y)) if !matches!(a, V::Omit) && !matches!(b, V::Omit) => {
                Ok(text(format!("{x}{y}")))
            }
            _ => Err(Fallback),
        },
    }
}

fn index(len: usize, i: i64) -> Option<usize> {
    if i < 0 {
        let back = usize::try_from(i.unsigned_abs()).ok()?;
        len.checked_sub(back)
    } else {
        usize::try_from(i).ok().filter(|&i| i < len)
    }
}

/// Python's clamped slice bounds.
fn bounds(len: usize, start: Option<i64>, stop: Option<i64>) -> (usize, usize) {
    let clamp = |i: i64| -> usize {
        if i < 0 {
            len.saturating_sub(usize::try_from(i.unsigned_abs()).unwrap_or(usize::MAX))
        } else {
            usize::try_from(i).unwrap_or(usize::MAX).min(len)
        }
    };
    let s = start.map_or(0, clamp);
    let e = stop.map_or(len, clamp);
    (s, e.max(s))
}

fn int_arg(v: &V<'_>) -> R<Option<i64>> {
    match v {
        V::Undef | V::None => Ok(None),
        _ => match v.num() {
            Some(Num::I(i)) => Ok(Some(i)),
            _ => Err(Fallback),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation.

fn eval<'a>(n: &'a Node, s: &'a dyn Scope) -> R<V<'a>> {
    Ok(match n {
        Node::Const(j) => of(j),
        Node::NoneLit => V::None,
        Node::Omit => V::Omit,
        Node::Root(name) => match s.root(name) {
            Some(j) => of(j),
            None if *name == "loop" => match s.loop_position() {
                Some((i, len)) => V::Loop(i, len),
                None => V::Undef,
            },
            None => V::Undef,
        },
        Node::Path(root, attrs) => {
            let (mut cur, rest) = match (*root, attrs.split_first()) {
                ("vars", Some((first, rest))) => match s.var(first) {
                    Some(VarRef::Value(j)) => (j, rest),
                    Some(VarRef::Parts(ps)) => {
                        let mut v = V::Seq(ps.into_iter().map(of).collect());
                        for a in rest {
                            v = v.attr(a)?;
                        }
                        return Ok(v);
                    }
                    None => match s.root(root) {
                        Some(j) => (j, &attrs[..]),
                        None => return Ok(V::Undef),
                    },
                },
                _ => match s.root(root) {
                    Some(j) => (j, &attrs[..]),
                    None => return Ok(V::Undef),
                },
            };
            // As `attr` one step at a time: a missing key or null is undefined, and so is
            // everything after it; an attribute of anything but a map is minijinja's to answer.
            for a in rest {
                match cur {
                    Json::Object(m) => match get(m, a) {
                        Some(j) if !j.is_null() => cur = j,
                        _ => return Ok(V::Undef),
                    },
                    Json::Null => return Ok(V::Undef),
                    _ => return Err(Fallback),
                }
            }
            of(cur)
        }
        // (A root name's attributes are a `Path`, which reads `vars.NAME` through the scope.)
        Node::Attr(base, name) => eval(base, s)?.attr(name)?,
        Node::Item(base, sub) => {
            let b = eval(base, s)?;
            let k = eval(sub, s)?;
            if let Some(key) = k.as_str() {
                if matches!(k, V::Omit) {
                    return Err(Fallback);
                }
                let key = key.to_string();
                return b.attr(&key);
            }
            let Some(Num::I(i)) = k.num() else {
                return Err(Fallback);
            };
            match b {
                V::Undef => V::Undef,
                other => {
                    let items = other.items().ok_or(Fallback)?;
                    let len = items.len();
                    match index(len, i) {
                        Some(ix) => items.into_iter().nth(ix).unwrap_or(V::Undef),
                        None => V::Undef,
                    }
                }
            }
        }
        Node::Slice(base, start, stop) => {
            let b = eval(base, s)?;
            let start = match start {
                Some(e) => int_arg(&eval(e, s)?)?,
                None => None,
            };
            let stop = match stop {
                Some(e) => int_arg(&eval(e, s)?)?,
                None => None,
            };
            if matches!(b, V::Omit) {
                return Err(Fallback);
            }
            if let Some(st) = b.as_str() {
                let chars: Vec<char> = st.chars().collect();
                let (a, e) = bounds(chars.len(), start, stop);
                return Ok(text(chars[a..e].iter().collect::<String>()));
            }
            let items = b.items().ok_or(Fallback)?;
            let (a, e) = bounds(items.len(), start, stop);
            V::Seq(items.into_iter().skip(a).take(e - a).collect())
        }
        Node::List(items) => V::Seq(items.iter().map(|i| eval(i, s)).collect::<R<_>>()?),
        Node::Not(x) => V::O(Json::Bool(!eval(x, s)?.truthy())),
        Node::Neg(x) => match eval(x, s)?.num() {
            Some(Num::I(i)) => V::O(Json::from(i.checked_neg().ok_or(Fallback)?)),
            Some(Num::F(f)) => V::O(
                serde_json::Number::from_f64(-f)
                    .map(Json::Number)
                    .ok_or(Fallback)?,
            ),
            None => return Err(Fallback),
        },
        Node::And(a, b) => {
            let l = eval(a, s)?;
            if l.truthy() { eval(b, s)? } else { l }
        }
        Node::Or(a, b) => {
            let l = eval(a, s)?;
            if l.truthy() { l } else { eval(b, s)? }
        }
        Node::Compare(first, ops) => {
            let mut left = eval(first, s)?;
            for (op, e) in ops {
                let right = eval(e, s)?;
                let ok = match op {
                    Cmp::Eq => equal(&left, &right)?,
                    Cmp::Ne => !equal(&left, &right)?,
                    Cmp::Lt => order(&left, &right)?.is_lt(),
                    Cmp::Le => order(&left, &right)?.is_le(),
                    Cmp::Gt => order(&left, &right)?.is_gt(),
                    Cmp::Ge => order(&left, &right)?.is_ge(),
                    Cmp::In => contains(&right, &left)?,
                    Cmp::NotIn => !contains(&right, &left)?,
                };
                if !ok {
                    return Ok(V::O(Json::Bool(false)));
                }
                if ops.len() > 1 {
                    // chained comparisons are rare; their exact rules are minijinja's
                    return Err(Fallback);
                }
                left = right;
            }
            V::O(Json::Bool(true))
        }
        Node::Arith(op, a, b) => arith(*op, &eval(a, s)?, &eval(b, s)?)?,
        Node::Concat(a, b) => {
            let (l, r) = (eval(a, s)?, eval(b, s)?);
            let mut out = l.display()?.into_owned();
            out.push_str(&r.display()?);
            text(out)
        }
        Node::If(c, t, f) => {
            if eval(c, s)?.truthy() {
                eval(t, s)?
            } else {
                match f {
                    Some(f) => eval(f, s)?,
                    None => V::Undef,
                }
            }
        }
        Node::Test(x, kind, negated) => {
            let v = eval(x, s)?;
            let r = match kind {
                TestKind::None => v.is_undef_or_none(),
                TestKind::Defined => !matches!(v, V::Undef),
                TestKind::Undefined => matches!(v, V::Undef),
            };
            V::O(Json::Bool(r != *negated))
        }
        Node::Filter(x, f) => apply(f, eval(x, s)?, s)?,
    })
}

/// Calls one of ferry's filters (written for minijinja values) on a scalar.
fn call_scalar<'a>(
    v: &V<'a>,
    f: impl FnOnce(&minijinja::Value) -> Result<minijinja::Value, minijinja::Error>,
) -> R<V<'a>> {
    let mv = match v {
        V::Undef => minijinja::Value::UNDEFINED,
        V::None => minijinja::Value::from(()),
        V::Omit => return Err(Fallback),
        _ => match v.json().ok_or(Fallback)? {
            Json::String(s) => minijinja::Value::from(s.as_str()),
            j @ Json::Number(_) => super::from_json(j),
            _ => return Err(Fallback),
        },
    };
    let out = f(&mv).map_err(|_| Fallback)?;
    Ok(match out.kind() {
        ValueKind::None => V::None,
        ValueKind::Undefined => V::Undef,
        ValueKind::String => text(out.as_str().ok_or(Fallback)?),
        _ => return Err(Fallback),
    })
}

/// Follows a dotted attribute path inside an item, as `selectattr`/`map` do.
fn path<'a>(item: &V<'a>, attr: &str) -> R<V<'a>> {
    let mut cur = item.clone();
    for part in attr.split('.') {
        if part.parse::<usize>().is_ok() {
            return Err(Fallback);
        }
        cur = match cur {
            V::Undef => return Err(Fallback),
            other => other.attr(part)?,
        };
    }
    Ok(cur)
}

/// ferry's `unique`: what an item is compared by. Text compares case-insensitively unless
/// asked otherwise.
#[derive(Clone, Copy)]
enum Key<'k> {
    Text(&'k str),
    Bool(bool),
    Int(i64),
}

fn unique_key<'k>(v: &'k V<'_>) -> R<Key<'k>> {
    if let Some(s) = v.as_str() {
        return Ok(Key::Text(s));
    }
    match v.json() {
        Some(Json::Bool(b)) => Ok(Key::Bool(*b)),
        Some(Json::Number(n)) => n.as_i64().map(Key::Int).ok_or(Fallback),
        _ => Err(Fallback),
    }
}

fn same_key(a: Key<'_>, b: Key<'_>, case_sensitive: bool) -> R<bool> {
    Ok(match (a, b) {
        (Key::Text(x), Key::Text(y)) if case_sensitive => x == y,
        (Key::Text(x), Key::Text(y)) if x.is_ascii() && y.is_ascii() => x.eq_ignore_ascii_case(y),
        (Key::Text(x), Key::Text(y)) => x.to_lowercase() == y.to_lowercase(),
        (Key::Bool(x), Key::Bool(y)) => x == y,
        (Key::Int(x), Key::Int(y)) => x == y,
        // minijinja may count true and 1 as equal: left to it
        (Key::Bool(_), Key::Int(_)) | (Key::Int(_), Key::Bool(_)) => return Err(Fallback),
        _ => false,
    })
}

fn apply<'a>(f: &'a Filter, v: V<'a>, s: &'a dyn Scope) -> R<V<'a>> {
    Ok(match f {
        Filter::Scalar(f) => call_scalar(&v, f)?,
        Filter::SfDatetime => match v.as_str().filter(|_| !matches!(v, V::Omit)) {
            // The common case, an RFC 3339 time, without the detour through template values.
            Some(st) => match chrono::DateTime::parse_from_rfc3339(st.trim()) {
                Ok(t) if (1000..=9999).contains(&chrono::Datelike::year(&t.naive_utc())) => text(
                    t.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
                _ => call_scalar(&v, filters::sf_datetime)?,
            },
            None => call_scalar(&v, filters::sf_datetime)?,
        },
        Filter::EmailDomain => match (&v, v.as_str()) {
            (V::Omit, _) => return Err(Fallback),
            (_, Some(st)) => match filters::domain_of(st) {
                Some(d) => text(d),
                None => V::None,
            },
            _ => call_scalar(&v, |x| Ok(filters::email_domain(x)))?,
        },
        Filter::SfDate(offset) => {
            let o = match offset {
                Some(e) => Some(eval(e, s)?),
                None => None,
            };
            let o = match &o {
                Some(x) => Some(x.as_str().ok_or(Fallback)?.to_string()),
                None => None,
            };
            call_scalar(&v, |x| filters::sf_date(x, o.as_deref()))?
        }
        Filter::Truncate { length, end } => {
            let length = match length {
                Some(e) => match eval(e, s)?.num() {
                    Some(Num::I(i)) if i >= 0 => usize::try_from(i).map_err(|_| Fallback)?,
                    _ => return Err(Fallback),
                },
                None => 255,
            };
            let end = match end {
                Some(e) => eval(e, s)?.as_str().ok_or(Fallback)?.to_string(),
                None => String::new(),
            };
            match &v {
                V::Undef | V::None => V::None,
                V::Omit => return Err(Fallback),
                _ => {
                    let st = v.as_str().ok_or(Fallback)?;
                    match filters::truncate_text(st, length, &end) {
                        Cow::Borrowed(b) if b.len() == st.len() => v,
                        other => text(other.into_owned()),
                    }
                }
            }
        }
        Filter::Unique {
            attribute,
            case_sensitive,
        } => {
            if matches!(v, V::Undef | V::None) {
                return Ok(V::Seq(Vec::new()));
            }
            let items = v.items().ok_or(Fallback)?;
            // Which items are kept, and the value each is compared by.
            let mut compared: Vec<Option<V<'a>>> = Vec::with_capacity(items.len());
            for item in &items {
                let c = match attribute {
                    Some(a) => {
                        let mut cur = item.clone();
                        for seg in a.split('.') {
                            if seg.parse::<usize>().is_ok() {
                                return Err(Fallback);
                            }
                            cur = match cur {
                                V::Undef => V::Undef,
                                V::R(Json::Object(_)) | V::O(Json::Object(_)) => cur.attr(seg)?,
                                _ => return Err(Fallback),
                            };
                        }
                        // Items without the field are different things (dial-in callers
                        // without an email): all kept.
                        if cur.is_undef_or_none() {
                            None
                        } else {
                            Some(cur)
                        }
                    }
                    None => Some(item.clone()),
                };
                compared.push(c);
            }
            if items.len() > 64 {
                return Err(Fallback);
            }
            let mut kept_keys: Vec<Key<'_>> = Vec::with_capacity(items.len());
            let mut keep = Vec::with_capacity(items.len());
            for c in &compared {
                match c {
                    None => keep.push(true),
                    Some(v) => {
                        let k = unique_key(v)?;
                        let mut dup = false;
                        for x in &kept_keys {
                            if same_key(*x, k, *case_sensitive)? {
                                dup = true;
                                break;
                            }
                        }
                        if dup {
                            keep.push(false);
                        } else {
                            kept_keys.push(k);
                            keep.push(true);
                        }
                    }
                }
            }
            V::Seq(
                items
                    .into_iter()
                    .zip(keep)
                    .filter_map(|(it, k)| k.then_some(it))
                    .collect(),
            )
        }
        Filter::Length => match &v {
            V::Undef | V::None => V::O(Json::from(0)),
            V::Seq(x) => V::O(Json::from(x.len())),
            _ => match v.json().ok_or(Fallback)? {
                Json::Array(a) => V::O(Json::from(a.len())),
                Json::Object(m) => V::O(Json::from(m.len())),
                Json::String(st) => V::O(Json::from(st.chars().count())),
                _ => return Err(Fallback),
            },
        },
        Filter::First | Filter::Last => match v {
            V::Undef | V::None => V::Undef,
            other => {
                let items = other.items().ok_or(Fallback)?;
                let pick = if matches!(f, Filter::First) {
                    items.into_iter().next()
                } else {
                    items.into_iter().last()
                };
                pick.unwrap_or(V::Undef)
            }
        },
        Filter::List => match v {
            V::Undef => V::Seq(Vec::new()),
            other if other.is_seq() => V::Seq(other.items().ok_or(Fallback)?),
            _ => return Err(Fallback),
        },
        Filter::Join(sep) => {
            let sep = match sep {
                Some(e) => {
                    let x = eval(e, s)?;
                    if matches!(x, V::Omit) {
                        return Err(Fallback);
                    }
                    x.as_str().ok_or(Fallback)?.to_string()
                }
                None => String::new(),
            };
            if v.as_str().is_some() {
                return Err(Fallback);
            }
            let items = v.items_or_empty()?;
            let mut out = String::new();
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                out.push_str(&it.display()?);
            }
            text(out)
        }
        Filter::MapAttr(attr) => {
            let items = v.items_or_empty()?;
            let mut out = Vec::with_capacity(items.len());
            for it in &items {
                out.push(path(it, attr)?);
            }
            V::Seq(out)
        }
        Filter::Select { attr, test, reject } => {
            let arg = match test {
                SelTest::Eq(e) | SelTest::Ne(e) | SelTest::In(e) => Some(eval(e, s)?),
                _ => None,
            };
            let items = v.items_or_empty()?;
            let mut out = Vec::new();
            for it in items {
                let tv = path(&it, attr)?;
                let passed = match (test, &arg) {
                    (SelTest::Truthy, _) => tv.truthy(),
                    (SelTest::Eq(_), Some(a)) => equal(&tv, a)?,
                    (SelTest::Ne(_), Some(a)) => !equal(&tv, a)?,
                    (SelTest::In(_), Some(a)) => contains(a, &tv)?,
                    (SelTest::Defined, _) => !matches!(tv, V::Undef),
                    (SelTest::Undefined, _) => matches!(tv, V::Undef),
                    (SelTest::None, _) => matches!(tv, V::None),
                    _ => return Err(Fallback),
                };
                if passed != *reject {
                    out.push(it);
                }
            }
            V::Seq(out)
        }
        Filter::Lower | Filter::Upper | Filter::Trim => {
            if matches!(v, V::Omit) {
                return Err(Fallback);
            }
            let st = v.as_str().ok_or(Fallback)?;
            text(match f {
                Filter::Lower => st.to_lowercase(),
                Filter::Upper => st.to_uppercase(),
                _ => st.trim().to_string(),
            })
        }
        Filter::Default(d) => match v {
            V::Undef => eval(d, s)?,
            other => other,
        },
    })
}

fn render(body: &[Stmt], s: &dyn Scope, out: &mut String) -> R<()> {
    for st in body {
        match st {
            Stmt::Raw(t) => out.push_str(t),
            Stmt::Emit(n) => eval(n, s)?.print(out)?,
            Stmt::If(c, t, f) => {
                if eval(c, s)?.truthy() {
                    render(t, s, out)?;
                } else {
                    render(f, s, out)?;
                }
            }
        }
    }
    Ok(())
}
