//! The SOQL subset the sim answers: SELECT fields or COUNT(), FROM one object, WHERE with
//! comparisons, IN / NOT IN, LIKE, AND / OR / NOT and parentheses, ORDER BY, LIMIT, OFFSET.
//! Keywords and field names are case-insensitive; so is string equality, as in Salesforce.

use super::schema::FieldMeta;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    /// An unquoted date or datetime literal, kept as written.
    Temporal(String),
    /// A relative date literal (`TODAY`, `YESTERDAY`, `TOMORROW`), upper case; the query
    /// resolves it to a [`Literal::Day`] with the server's clock before it runs.
    Relative(String),
    /// One calendar day (UTC, the sim's user time zone): a datetime equals it when it falls
    /// within the day, is greater when after its end, less when before its start.
    Day(NaiveDate),
}

/// The relative date literals the sim knows (Salesforce has many more, like `LAST_N_DAYS:n`;
/// the sim refuses those as a malformed query rather than guess at them).
pub const RELATIVE_DATES: [&str; 3] = ["TODAY", "YESTERDAY", "TOMORROW"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

#[derive(Debug, Clone)]
pub enum Cond {
    Cmp(String, CmpOp, Literal),
    In(String, InList, bool),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

/// The literals of an `IN (...)`, with their strings as sets made on first use, so a
/// long list costs one lookup per record instead of one comparison per literal.
#[derive(Debug, Clone)]
pub struct InList {
    pub items: Vec<Literal>,
    /// Lowercased: text equality is case-insensitive.
    text: OnceLock<HashSet<String>>,
    /// As written, and by their first 15 characters (15- or 18-character ids).
    ids: OnceLock<(HashSet<String>, HashSet<String>)>,
}

impl InList {
    pub fn new(items: Vec<Literal>) -> Self {
        InList {
            items,
            text: OnceLock::new(),
            ids: OnceLock::new(),
        }
    }

    fn strings(&self) -> impl Iterator<Item = &String> {
        self.items.iter().filter_map(|l| match l {
            Literal::Str(s) => Some(s),
            _ => None,
        })
    }

    /// Whether a stored value equals one of the literals, as `compare` decides.
    fn contains(&self, meta: &FieldMeta, v: &Value) -> bool {
        match v {
            Value::String(s) if meta.is_id_like() => {
                let (exact, by15) = self.ids.get_or_init(|| {
                    let exact = self.strings().cloned().collect();
                    let by15 = self
                        .strings()
                        .filter(|l| l.len() == 15 || l.len() == 18)
                        .map(|l| id15(l).to_string())
                        .collect();
                    (exact, by15)
                });
                exact.contains(s) || ((s.len() == 15 || s.len() == 18) && by15.contains(id15(s)))
            }
            Value::String(s) if !matches!(meta.ftype, "date" | "datetime") => self
                .text
                .get_or_init(|| self.strings().map(|l| l.to_lowercase()).collect())
                .contains(&s.to_lowercase()),
            _ => self
                .items
                .iter()
                .any(|l| compare(meta, v, l) == Some(Ordering::Equal)),
        }
    }
}

fn id15(s: &str) -> &str {
    s.get(..15).unwrap_or(s)
}

#[derive(Debug, Clone)]
pub struct OrderKey {
    pub field: String,
    pub desc: bool,
    pub nulls_last: bool,
}

#[derive(Debug, Clone)]
pub struct Query {
    /// Empty with `count` set for `SELECT COUNT()`.
    pub fields: Vec<String>,
    pub count: bool,
    pub object: String,
    pub filter: Option<Cond>,
    pub order: Vec<OrderKey>,
    pub limit: Option<usize>,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Temporal(String),
    Sym(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            i += 1;
            let mut v = String::new();
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\\') => {
                        let e = chars.get(i + 1).ok_or("dangling escape")?;
                        v.push(match e {
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            'b' => '\u{8}',
                            'f' => '\u{c}',
                            '\'' | '"' | '\\' | '%' | '_' => *e,
                            other => return Err(format!("invalid escape sequence \\{other}")),
                        });
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        v.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], ':' | '.' | '+' | '-'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word[1..].contains('-') || word.contains('T') {
                out.push(Tok::Temporal(word));
            } else {
                out.push(Tok::Num(
                    word.parse().map_err(|_| format!("bad number {word}"))?,
                ));
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.')) {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match two.as_str() {
                "!=" => Some("!="),
                "<>" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push(Tok::Sym(s));
                i += 2;
                continue;
            }
            let one = match c {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                _ => return Err(format!("unexpected character '{c}'")),
            };
            out.push(Tok::Sym(one));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if let Some(Tok::Ident(w)) = self.peek()
            && w.eq_ignore_ascii_case(kw)
        {
            self.pos += 1;
            return true;
        }
        false
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), String> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(format!("expecting keyword {kw}, found {:?}", self.peek()))
        }
    }
    fn sym(&mut self, s: &str) -> bool {
        if let Some(Tok::Sym(x)) = self.peek()
            && *x == s
        {
            self.pos += 1;
            return true;
        }
        false
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(w)) => Ok(w),
            other => Err(format!("expecting a field or object name, found {other:?}")),
        }
    }
    fn literal(&mut self) -> Result<Literal, String> {
        match self.next() {
            // Salesforce: "Strings in WHERE clauses can't exceed 4,000 characters" (each
            // string, as its limits cheatsheet puts it). Whether the whole clause is also held
            // to 4,000 is read differently by some clients; the documented reading is enforced.
            // The error code is not documented: the parser's MALFORMED_QUERY is answered.
            Some(Tok::Str(s)) if s.chars().count() > MAX_WHERE_STRING_CHARS => Err(format!(
                "a string in the WHERE clause is {} characters long; the limit is {MAX_WHERE_STRING_CHARS}",
                s.chars().count()
            )),
            Some(Tok::Str(s)) => Ok(Literal::Str(s)),
            Some(Tok::Num(n)) => Ok(Literal::Num(n)),
            Some(Tok::Temporal(t)) => Ok(Literal::Temporal(t)),
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Tok::Ident(w)) if RELATIVE_DATES.iter().any(|d| d.eq_ignore_ascii_case(&w)) => {
                Ok(Literal::Relative(w.to_ascii_uppercase()))
            }
            other => Err(format!("expecting a value, found {other:?}")),
        }
    }
    fn or_expr(&mut self) -> Result<Cond, String> {
        let mut left = self.and_expr()?;
        while self.keyword("OR") {
            let right = self.and_expr()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn and_expr(&mut self) -> Result<Cond, String> {
        let mut left = self.not_expr()?;
        while self.keyword("AND") {
            let right = self.not_expr()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn not_expr(&mut self) -> Result<Cond, String> {
        if self.keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.not_expr()?)));
        }
        if self.sym("(") {
            let c = self.or_expr()?;
            if !self.sym(")") {
                return Err("expecting ')'".into());
            }
            return Ok(c);
        }
        let field = self.ident()?;
        if self.keyword("NOT") {
            self.expect_kw("IN")?;
            return Ok(Cond::In(field, InList::new(self.list()?), true));
        }
        if self.keyword("IN") {
            return Ok(Cond::In(field, InList::new(self.list()?), false));
        }
        if self.keyword("LIKE") {
            return Ok(Cond::Cmp(field, CmpOp::Like, self.literal()?));
        }
        let op = match self.next() {
            Some(Tok::Sym("=")) => CmpOp::Eq,
            Some(Tok::Sym("!=")) => CmpOp::Ne,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            other => return Err(format!("expecting an operator, found {other:?}")),
        };
        Ok(Cond::Cmp(field, op, self.literal()?))
    }
    fn list(&mut self) -> Result<Vec<Literal>, String> {
        if !self.sym("(") {
            return Err("expecting '(' after IN".into());
        }
        let mut v = vec![self.literal()?];
        while self.sym(",") {
            v.push(self.literal()?);
        }
        if !self.sym(")") {
            return Err("expecting ')' after IN list".into());
        }
        Ok(v)
    }
}

/// The longest string literal a WHERE clause may hold.
pub const MAX_WHERE_STRING_CHARS: usize = 4000;

pub fn parse(soql: &str) -> Result<Query, String> {
    let mut p = Parser {
        toks: tokenize(soql)?,
        pos: 0,
    };
    p.expect_kw("SELECT")?;
    let mut fields = Vec::new();
    let mut count = false;
    if let Some(Tok::Ident(w)) = p.peek()
        && w.eq_ignore_ascii_case("COUNT")
        && p.toks.get(p.pos + 1) == Some(&Tok::Sym("("))
    {
        p.pos += 2;
        if !p.sym(")") {
            return Err("only COUNT() is supported".into());
        }
        count = true;
    } else {
        fields.push(p.ident()?);
        while p.sym(",") {
            fields.push(p.ident()?);
        }
    }
    p.expect_kw("FROM")?;
    let object = p.ident()?;
    let filter = if p.keyword("WHERE") {
        Some(p.or_expr()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.keyword("ORDER") {
        p.expect_kw("BY")?;
        loop {
            let field = p.ident()?;
            let desc = if p.keyword("DESC") {
                true
            } else {
                p.keyword("ASC");
                false
            };
            let mut nulls_last = desc;
            if p.keyword("NULLS") {
                nulls_last = if p.keyword("LAST") {
                    true
                } else {
                    p.expect_kw("FIRST")?;
                    false
                };
            }
            order.push(OrderKey {
                field,
                desc,
                nulls_last,
            });
            if !p.sym(",") {
                break;
            }
        }
    }
    let mut limit = None;
    let mut offset = 0;
    loop {
        if p.keyword("LIMIT") {
            match p.next() {
                Some(Tok::Num(n)) if n >= 0.0 => limit = Some(n as usize),
                other => return Err(format!("expecting a number after LIMIT, found {other:?}")),
            }
        } else if p.keyword("OFFSET") {
            match p.next() {
                Some(Tok::Num(n)) if n >= 0.0 => offset = n as usize,
                other => return Err(format!("expecting a number after OFFSET, found {other:?}")),
            }
        } else {
            break;
        }
    }
    if let Some(t) = p.peek() {
        return Err(format!("unexpected token: {t:?}"));
    }
    Ok(Query {
        fields,
        count,
        object,
        filter,
        order,
        limit,
        offset,
    })
}

impl Cond {
    /// Every field the condition names, for validation against describe.
    pub fn fields(&self, out: &mut Vec<String>) {
        match self {
            Cond::Cmp(f, _, _) | Cond::In(f, _, _) => out.push(f.clone()),
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Cond::Not(a) => a.fields(out),
        }
    }

    /// Resolves relative date literals (`TODAY`) against `today`.
    pub fn resolve_dates(&mut self, today: NaiveDate) {
        let day = |lit: &mut Literal| {
            if let Literal::Relative(r) = lit {
                let d = match r.as_str() {
                    "YESTERDAY" => today.pred_opt(),
                    "TOMORROW" => today.succ_opt(),
                    _ => Some(today),
                };
                if let Some(d) = d {
                    *lit = Literal::Day(d);
                }
            }
        };
        match self {
            Cond::Cmp(_, _, l) => day(l),
            Cond::In(_, list, _) => {
                list.items.iter_mut().for_each(day);
                list.text = OnceLock::new();
                list.ids = OnceLock::new();
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.resolve_dates(today);
                b.resolve_dates(today);
            }
            Cond::Not(a) => a.resolve_dates(today),
        }
    }

    /// As [`Cond::eval`], with each field name (parent fields like `Owner.Email`
    /// included) resolved by `field` to its describe and value.
    pub fn eval_by<'a>(&self, field: &dyn Fn(&str) -> Option<(&'a FieldMeta, &'a Value)>) -> bool {
        match self {
            Cond::And(a, b) => a.eval_by(field) && b.eval_by(field),
            Cond::Or(a, b) => a.eval_by(field) || b.eval_by(field),
            Cond::Not(a) => !a.eval_by(field),
            Cond::In(f, list, negated) => {
                let Some((meta, v)) = field(f) else {
                    return false;
                };
                list.contains(meta, v) != *negated
            }
            Cond::Cmp(f, op, lit) => {
                let Some((meta, v)) = field(f) else {
                    return false;
                };
                if *op == CmpOp::Like {
                    return match (v, lit) {
                        (Value::String(s), Literal::Str(p)) => like(s, p),
                        _ => false,
                    };
                }
                if matches!(lit, Literal::Null) || v.is_null() {
                    let both_null = v.is_null() && matches!(lit, Literal::Null);
                    return match op {
                        CmpOp::Eq => both_null,
                        CmpOp::Ne => !both_null,
                        _ => false,
                    };
                }
                match compare(meta, v, lit) {
                    None => false,
                    Some(ord) => match op {
                        CmpOp::Eq => ord == Ordering::Equal,
                        CmpOp::Ne => ord != Ordering::Equal,
                        CmpOp::Lt => ord == Ordering::Less,
                        CmpOp::Le => ord != Ordering::Greater,
                        CmpOp::Gt => ord == Ordering::Greater,
                        CmpOp::Ge => ord != Ordering::Less,
                        CmpOp::Like => false,
                    },
                }
            }
        }
    }
}

/// `%` matches any run, `_` one character; case-insensitive.
fn like(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    fn go(s: &[char], p: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|k| go(&s[k..], &p[1..])),
            Some('_') => !s.is_empty() && go(&s[1..], &p[1..]),
            Some(c) => s.first() == Some(c) && go(&s[1..], &p[1..]),
        }
    }
    go(&s, &p)
}

pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// Compares a stored value with a literal by the field's type. `None` when they cannot be
/// compared (a type mismatch), which makes the condition false.
pub fn compare(meta: &FieldMeta, v: &Value, lit: &Literal) -> Option<Ordering> {
    match (v, lit) {
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Literal::Null) => None,
        (Value::String(s), Literal::Str(l)) if meta.is_id_like() => {
            if super::ids::same_id(s, l) {
                Some(Ordering::Equal)
            } else {
                Some(s.cmp(l))
            }
        }
        (Value::String(s), Literal::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Value::Bool(b), Literal::Bool(l)) => Some(b.cmp(l)),
        (Value::Number(n), Literal::Num(l)) => n.as_f64()?.partial_cmp(l),
        (Value::String(s), Literal::Temporal(l)) if meta.ftype == "datetime" => {
            Some(parse_datetime(s)?.cmp(&parse_datetime(l)?))
        }
        (Value::String(s), Literal::Day(d)) if meta.ftype == "datetime" => {
            // Within the day is equal; before its start less; from the next day on greater.
            let t = parse_datetime(s)?;
            let start = d.and_hms_opt(0, 0, 0)?.and_utc();
            let end = d.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
            Some(if t < start {
                Ordering::Less
            } else if t >= end {
                Ordering::Greater
            } else {
                Ordering::Equal
            })
        }
        (Value::String(s), Literal::Day(d)) if meta.ftype == "date" => {
            Some(NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?.cmp(d))
        }
        (Value::String(s), Literal::Temporal(l)) if meta.ftype == "date" => Some(
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()?
                .cmp(&NaiveDate::parse_from_str(l, "%Y-%m-%d").ok()?),
        ),
        _ => None,
    }
}

/// Orders two stored values of one field (nulls handled by the caller).
pub fn order_values(meta: &FieldMeta, a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if meta.ftype == "datetime"
                && let (Some(p), Some(q)) = (parse_datetime(x), parse_datetime(y))
            {
                return p.cmp(&q);
            }
            if meta.is_id_like() {
                x.cmp(y)
            } else {
                x.to_lowercase().cmp(&y.to_lowercase())
            }
        }
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_where_in_order_limit() {
        let q = parse(
            "select Id, Email from Contact where (Email IN ('a@x.com', 'it\\'s') and IsDeleted = false) \
             or LastName != null order by LastModifiedDate desc limit 5",
        )
        .unwrap();
        assert_eq!(q.fields, vec!["Id", "Email"]);
        assert_eq!(q.object, "Contact");
        assert_eq!(q.limit, Some(5));
        assert!(q.order[0].desc);
        let mut f = Vec::new();
        q.filter.unwrap().fields(&mut f);
        assert_eq!(f, vec!["Email", "IsDeleted", "LastName"]);
    }

    #[test]
    fn count_and_temporal_literals() {
        let q = parse("SELECT COUNT() FROM Event WHERE ActivityDateTime > 2024-01-01T00:00:00Z")
            .unwrap();
        assert!(q.count);
        match q.filter.unwrap() {
            Cond::Cmp(_, CmpOp::Gt, Literal::Temporal(t)) => assert_eq!(t, "2024-01-01T00:00:00Z"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(parse("SELECT FROM Contact").is_err());
        assert!(parse("SELECT Id FROM Contact WHERE Email = 'x").is_err());
        assert!(parse("SELECT Id FROM Contact WHERE").is_err());
    }

    #[test]
    fn like_is_case_insensitive() {
        assert!(like("Hello World", "hello%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_d"));
    }
}
