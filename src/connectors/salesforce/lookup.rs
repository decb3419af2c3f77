//! Batched lookups ("match rules"): one SOQL query answers a whole batch of where-maps.
//! Fields equal across the batch become `AND f = v`; the varying field becomes `IN (...)`,
//! or an OR of AND-groups when several vary. Results come back per input, newest first.

use super::{Describe, MAX_SOQL_CHARS, SalesforceConnector, SfError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Escapes a string for a SOQL single-quoted literal.
pub fn escape_soql(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out
}

/// A value as a SOQL literal, typed by the field: dates, datetimes, numbers and booleans are
/// unquoted; everything else is a quoted, escaped string.
pub fn soql_literal(field_type: Option<&str>, v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match field_type {
            Some(
                "string" | "email" | "url" | "phone" | "picklist" | "textarea" | "id" | "reference"
                | "combobox",
            ) => {
                format!("'{}'", escape_soql(&n.to_string()))
            }
            _ => n.to_string(),
        },
        Value::String(s) => match field_type {
            Some("date" | "datetime" | "int" | "double" | "currency" | "percent" | "boolean")
                if !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-:.+".contains(c)) =>
            {
                s.clone()
            }
            _ => format!("'{}'", escape_soql(s)),
        },
        other => format!("'{}'", escape_soql(&other.to_string())),
    }
}

fn parse_datetime(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    // Salesforce answers `+0000` (no colon); RFC 3339 covers `Z` and `+00:00`.
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// A comparable form of a value: strings compare case-insensitively (as Salesforce's `=`
/// does), ids by their first 15 characters, numbers numerically.
fn norm(field_type: Option<&str>, v: &Value) -> String {
    match v {
        Value::Null => "\u{0}null".into(),
        Value::String(s) if matches!(field_type, Some("id" | "reference")) => {
            format!("s:{}", s.get(..15).unwrap_or(s))
        }
        Value::String(s)
            if matches!(field_type, Some("int" | "double" | "currency" | "percent")) =>
        {
            s.parse::<f64>()
                .map(|x| format!("n:{x}"))
                .unwrap_or_else(|_| format!("s:{}", s.to_lowercase()))
        }
        Value::String(s) => format!("s:{}", s.to_lowercase()),
        // A number compared with a text field (a Zoom webinar id in a string field) is
        // compared as the text Salesforce stores.
        Value::Number(n)
            if field_type.is_some_and(|t| {
                !matches!(t, "int" | "double" | "currency" | "percent" | "boolean")
            }) =>
        {
            format!("s:{n}")
        }
        Value::Number(n) => format!("n:{}", n.as_f64().unwrap_or_default()),
        Value::Bool(b) => format!("b:{b}"),
        other => format!("j:{other}"),
    }
}

fn norm_record_value(field_type: Option<&str>, v: &Value) -> String {
    // Salesforce returns datetimes as `.000+0000`; compare instants when both parse.
    if matches!(field_type, Some("datetime"))
        && let Value::String(s) = v
        && let Some(t) = parse_datetime(s)
    {
        return format!("t:{}", t.timestamp_millis());
    }
    norm(field_type, v)
}

fn norm_input(field_type: Option<&str>, v: &Value) -> String {
    norm_record_value(field_type, v)
}

/// One input's answer: the matching records, newest first, or why the input cannot be
/// looked up at all (its value does not fit its field's type, or no query can carry it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchOutcome {
    pub records: Vec<Value>,
    pub unmatchable: Option<String>,
}

/// Why `v` cannot be compared with a field of `field_type`, if it cannot. Salesforce would
/// answer such a query with MALFORMED_QUERY or INVALID_QUERY_FILTER_OPERATOR and fail the
/// whole batch, so the one input is left out instead.
/// The longest string Salesforce compares in a WHERE clause (its SOQL limits).
pub const MAX_WHERE_STRING_CHARS: usize = 4000;

pub fn value_problem(field_type: Option<&str>, v: &Value) -> Option<String> {
    let ty = field_type.unwrap_or("string");
    let text = match v {
        Value::Null => return None,
        Value::Array(_) | Value::Object(_) => {
            return Some("a list or an object cannot be compared with a field".into());
        }
        Value::String(s) => s.as_str(),
        Value::Number(_) | Value::Bool(_) => "",
    };
    let shown = || {
        let mut t: String = text.chars().take(40).collect();
        if text.chars().count() > 40 {
            t.push('…');
        }
        t
    };
    // Salesforce refuses a string of more than 4,000 characters in a WHERE clause.
    if text.chars().count() > MAX_WHERE_STRING_CHARS {
        return Some(format!(
            "'{}' is too long to look up: {} characters, and Salesforce compares at most {MAX_WHERE_STRING_CHARS} in a query",
            shown(),
            text.chars().count()
        ));
    }
    match (ty, v) {
        ("int" | "double" | "currency" | "percent", Value::Number(_)) => None,
        ("int" | "double" | "currency" | "percent", Value::String(_)) => {
            let ok = text.parse::<f64>().is_ok_and(f64::is_finite)
                && text
                    .chars()
                    .all(|c| c.is_ascii_digit() || "-+.eE".contains(c));
            (!ok).then(|| format!("'{}' is not a number ({ty} field)", shown()))
        }
        ("int" | "double" | "currency" | "percent", _) => {
            Some(format!("{v} is not a number ({ty} field)"))
        }
        ("boolean", Value::Bool(_)) => None,
        ("boolean", Value::String(_))
            if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") =>
        {
            None
        }
        ("boolean", _) => Some(format!(
            "'{}' is not true or false (boolean field)",
            if text.is_empty() {
                v.to_string()
            } else {
                shown()
            }
        )),
        ("date", Value::String(_)) => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .is_err()
            .then(|| format!("'{}' is not a date (YYYY-MM-DD)", shown())),
        ("date", _) => Some(format!("{v} is not a date (YYYY-MM-DD)")),
        ("datetime", Value::String(_)) => chrono::DateTime::parse_from_rfc3339(text)
            .is_err()
            .then(|| format!("'{}' is not a datetime (YYYY-MM-DDThh:mm:ssZ)", shown())),
        ("datetime", _) => Some(format!("{v} is not a datetime (YYYY-MM-DDThh:mm:ssZ)")),
        ("id" | "reference", Value::String(_)) => {
            let ok =
                matches!(text.len(), 15 | 18) && text.chars().all(|c| c.is_ascii_alphanumeric());
            (!ok).then(|| format!("'{}' is not a Salesforce record id", shown()))
        }
        ("id" | "reference", _) => Some(format!("{v} is not a Salesforce record id")),
        _ => None,
    }
}

impl SalesforceConnector {
    /// Finds the records matching each where-map with as few queries as the request-size
    /// limit allows (one per batch normally). Each result list is ordered by
    /// LastModifiedDate descending, so `[0]` is the most recently modified match. An input
    /// that cannot be looked up has no matches (see [`Self::match_rule_detailed`]).
    pub async fn match_rule(
        &self,
        sobject: &str,
        select: &[String],
        wheres: &[BTreeMap<String, Value>],
    ) -> Result<Vec<Vec<Value>>, SfError> {
        Ok(self
            .match_rule_detailed(sobject, select, wheres)
            .await?
            .into_iter()
            .map(|o| o.records)
            .collect())
    }

    /// As [`Self::match_rule`], with the reason for each input that cannot be looked up (a
    /// value of the wrong type for its field, or too long for any query). Such an input
    /// never fails the others. The split queries of a batch travel together through
    /// Composite, five to a call.
    pub async fn match_rule_detailed(
        &self,
        sobject: &str,
        select: &[String],
        wheres: &[BTreeMap<String, Value>],
    ) -> Result<Vec<MatchOutcome>, SfError> {
        let mut results: Vec<MatchOutcome> = vec![MatchOutcome::default(); wheres.len()];
        if wheres.is_empty() {
            return Ok(results);
        }
        let d = self.describe(sobject).await?;
        // Inputs that name the same set of fields share a query.
        let mut groups: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
        for (i, w) in wheres.iter().enumerate() {
            let key: Vec<String> = w.keys().map(|k| k.to_ascii_lowercase()).collect();
            groups.entry(key).or_default().push(i);
        }
        let mut plans = Vec::new();
        for (_, members) in groups {
            if let Some(plan) = self
                .plan_group(&d, select, wheres, &members, &mut results)
                .await?
            {
                plans.push(plan);
            }
        }
        // Every query of every group in one go: Composite rounds of five.
        let all: Vec<String> = plans.iter().flat_map(|p| p.queries.clone()).collect();
        let mut answers = self.query_many(&all).await?.into_iter();
        for plan in plans {
            let mut rows = Vec::new();
            for _ in 0..plan.queries.len() {
                rows.extend(answers.next().unwrap_or_default());
            }
            plan.assign(rows, wheres, &mut results);
        }
        Ok(results)
    }

    /// Records whose `field` is one of `values` (compared as text), with `fields` selected:
    /// as few queries as the request-size limit allows, sent together through Composite.
    /// A value too long for any query cannot be found and is left out.
    pub async fn find_in(
        &self,
        sobject: &str,
        field: &str,
        values: &[String],
        fields: &[String],
    ) -> Result<Vec<Value>, SfError> {
        let mut distinct: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
        distinct.sort();
        distinct.dedup();
        if distinct.is_empty() {
            return Ok(Vec::new());
        }
        let head = format!(
            "SELECT {} FROM {sobject} WHERE {field} IN (",
            fields.join(", ")
        );
        let limit = self.settings.max_request_bytes;
        let overhead = self
            .get_request_bytes(&format!(
                "/query?q={}",
                super::enc_query(&format!("{head})"))
            ))
            .await;
        let sep = super::enc_query(", ").len();
        let mut queries = Vec::new();
        let mut chunk: Vec<String> = Vec::new();
        let (mut len, mut chars) = (overhead, head.len() + 1);
        for v in distinct {
            let t = format!("'{}'", escape_soql(v));
            let (t_len, t_chars) = (super::enc_query(&t).len(), t.chars().count() + 2);
            // A value no query may hold (over the request limit, or over the 4,000 characters
            // Salesforce compares in a WHERE clause) cannot be searched for: it is left out of
            // the queries (an external-id or key field holds far less anyway), and the write
            // decides without it.
            if overhead + t_len > limit
                || head.len() + 1 + t_chars > MAX_SOQL_CHARS
                || v.chars().count() > MAX_WHERE_STRING_CHARS
            {
                tracing::debug!(
                    sobject,
                    field,
                    "a value too long for any query is not searched"
                );
                continue;
            }
            if !chunk.is_empty() && (len + t_len + sep > limit || chars + t_chars > MAX_SOQL_CHARS)
            {
                queries.push(format!("{head}{})", chunk.join(", ")));
                chunk.clear();
                len = overhead;
                chars = head.len() + 1;
            }
            len += t_len + sep;
            chars += t_chars;
            chunk.push(t);
        }
        if !chunk.is_empty() {
            queries.push(format!("{head}{})", chunk.join(", ")));
        }
        Ok(self
            .query_many(&queries)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Builds the queries of one group of inputs (those naming the same fields), split so
    /// that each fits one request. Inputs that cannot be looked up get their reason in
    /// `results` and are left out.
    async fn plan_group(
        &self,
        d: &Describe,
        select: &[String],
        wheres: &[BTreeMap<String, Value>],
        members: &[usize],
        results: &mut [MatchOutcome],
    ) -> Result<Option<GroupPlan>, SfError> {
        let first = &wheres[members[0]];
        if first.is_empty() {
            // An empty where-map matches nothing rather than the whole object.
            return Ok(None);
        }
        // Canonical field names from describe; unknown ones fail the whole rule.
        let mut fields: Vec<(String, String, Option<String>)> = Vec::new(); // (input key, api name, type)
        for k in first.keys() {
            let f = d.field(k).ok_or_else(|| SfError::Api {
                status: 400,
                code: "INVALID_FIELD".into(),
                message: format!("No such column '{k}' on entity '{}'", d.name),
            })?;
            fields.push((k.clone(), f.name.clone(), Some(f.field_type.clone())));
        }
        let plan_fields = fields.clone();
        let ty = |i: usize| fields[i].2.as_deref();
        let value_of = |input: usize, fi: usize| -> &Value {
            wheres[input]
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&fields[fi].0))
                .map(|(_, v)| v)
                .unwrap_or(&Value::Null)
        };
        // Values that do not fit their field leave their input out, with the reason.
        let mut members: Vec<usize> = members.to_vec();
        members.retain(|&m| {
            for (fi, f) in fields.iter().enumerate() {
                if let Some(why) = value_problem(ty(fi), value_of(m, fi)) {
                    results[m].unmatchable = Some(format!("{}.{}: {why}", d.name, f.1));
                    return false;
                }
            }
            true
        });
        if members.is_empty() {
            return Ok(None);
        }
        let mut constant = Vec::new();
        let mut varying = Vec::new();
        for fi in 0..fields.len() {
            let n0 = norm_input(ty(fi), value_of(members[0], fi));
            if members
                .iter()
                .all(|&m| norm_input(ty(fi), value_of(m, fi)) == n0)
            {
                constant.push(fi);
            } else {
                varying.push(fi);
            }
        }
        // SELECT list: Id, LastModifiedDate, the requested fields, and the where fields (to
        // match rows back to inputs), each once.
        let mut cols: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        let names = ["Id".to_string(), "LastModifiedDate".to_string()]
            .into_iter()
            .chain(select.iter().cloned())
            .chain(fields.iter().map(|f| f.1.clone()));
        for c in names {
            if seen.insert(c.to_ascii_lowercase()) {
                cols.push(c);
            }
        }
        let mut base = format!("SELECT {} FROM {} WHERE ", cols.join(", "), d.name);
        let consts: Vec<String> = constant
            .iter()
            .map(|&fi| {
                let v = value_of(members[0], fi);
                format!("{} = {}", fields[fi].1, soql_literal(ty(fi), v))
            })
            .collect();
        base.push_str(&consts.join(" AND "));
        let tail = " ORDER BY LastModifiedDate DESC, Id DESC";
        // One clause term per distinct combination of the varying values.
        let mut terms: Vec<(usize, String)> = Vec::new();
        let mut seen_terms = BTreeSet::new();
        for &m in &members {
            let key: Vec<String> = varying
                .iter()
                .map(|&fi| norm_input(ty(fi), value_of(m, fi)))
                .collect();
            if !seen_terms.insert(key) {
                continue;
            }
            let term = if varying.len() == 1 {
                soql_literal(ty(varying[0]), value_of(m, varying[0]))
            } else {
                let parts: Vec<String> = varying
                    .iter()
                    .map(|&fi| {
                        format!(
                            "{} = {}",
                            fields[fi].1,
                            soql_literal(ty(fi), value_of(m, fi))
                        )
                    })
                    .collect();
                format!("({})", parts.join(" AND "))
            };
            terms.push((m, term));
        }
        let joiner = if consts.is_empty() { "" } else { " AND " };
        let wrap = |chunk: &[&str]| -> String {
            if varying.is_empty() {
                format!("{base}{tail}")
            } else if varying.len() == 1 {
                format!(
                    "{base}{joiner}{} IN ({}){tail}",
                    fields[varying[0]].1,
                    chunk.join(", ")
                )
            } else {
                format!("{base}{joiner}({}){tail}", chunk.join(" OR "))
            }
        };
        // Split the terms so that each query, sent as a GET, stays within the request-size
        // limit (URI plus headers, as encoded) and SOQL's statement length.
        let limit = self.settings.max_request_bytes;
        let mut queries = Vec::new();
        let empty = wrap(&[]);
        let overhead = self
            .get_request_bytes(&format!("/query?q={}", super::enc_query(&empty)))
            .await;
        if varying.is_empty() {
            if overhead > limit {
                for &m in &members {
                    results[m].unmatchable = Some(too_long(d, overhead, limit));
                }
                return Ok(None);
            }
            queries.push(empty);
        } else {
            let sep_text = if varying.len() == 1 { ", " } else { " OR " };
            let sep = super::enc_query(sep_text).len();
            let mut chunk: Vec<&str> = Vec::new();
            let (mut len, mut chars) = (overhead, empty.chars().count());
            let mut dropped: BTreeSet<usize> = BTreeSet::new();
            for (m, t) in &terms {
                let t_len = super::enc_query(t).len();
                let t_chars = t.chars().count() + sep_text.len();
                if overhead + t_len > limit || empty.chars().count() + t_chars > MAX_SOQL_CHARS {
                    // No query can carry this value: this input alone goes unmatched.
                    results[*m].unmatchable = Some(too_long(d, overhead + t_len, limit));
                    dropped.insert(*m);
                    continue;
                }
                if !chunk.is_empty()
                    && (len + t_len + sep > limit || chars + t_chars > MAX_SOQL_CHARS)
                {
                    queries.push(wrap(&chunk));
                    chunk.clear();
                    len = overhead;
                    chars = empty.chars().count();
                }
                len += t_len + sep;
                chars += t_chars;
                chunk.push(t);
            }
            if !chunk.is_empty() {
                queries.push(wrap(&chunk));
            }
            // Inputs sharing a dropped input's values are as unmatchable as it is.
            if !dropped.is_empty() {
                let bad: BTreeSet<Vec<String>> = dropped
                    .iter()
                    .map(|&m| {
                        varying
                            .iter()
                            .map(|&fi| norm_input(ty(fi), value_of(m, fi)))
                            .collect()
                    })
                    .collect();
                let reason = dropped
                    .iter()
                    .next()
                    .and_then(|&m| results[m].unmatchable.clone());
                for &m in &members {
                    let key: Vec<String> = varying
                        .iter()
                        .map(|&fi| norm_input(ty(fi), value_of(m, fi)))
                        .collect();
                    if bad.contains(&key) && results[m].unmatchable.is_none() {
                        results[m].unmatchable = reason.clone();
                    }
                }
                members.retain(|m| results[*m].unmatchable.is_none());
            }
        }
        Ok(Some(GroupPlan {
            fields: plan_fields,
            members,
            queries,
        }))
    }
}

fn too_long(d: &Describe, bytes: usize, limit: usize) -> String {
    format!(
        "the value is too long to look up in {}: its query would take {bytes} bytes, over the {limit}-byte request limit",
        d.name
    )
}

/// The queries of one group of inputs, and how to hand their rows back.
struct GroupPlan {
    /// (input key, api name, type)
    fields: Vec<(String, String, Option<String>)>,
    members: Vec<usize>,
    queries: Vec<String>,
}

impl GroupPlan {
    fn assign(
        self,
        mut rows: Vec<Value>,
        wheres: &[BTreeMap<String, Value>],
        results: &mut [MatchOutcome],
    ) {
        let fields = &self.fields;
        let ty = |i: usize| fields[i].2.as_deref();
        let value_of = |input: usize, fi: usize| -> &Value {
            wheres[input]
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&fields[fi].0))
                .map(|(_, v)| v)
                .unwrap_or(&Value::Null)
        };
        // All rows, newest first, across split queries too.
        rows.sort_by(|a, b| {
            let ka = a
                .get("LastModifiedDate")
                .and_then(Value::as_str)
                .and_then(parse_datetime);
            let kb = b
                .get("LastModifiedDate")
                .and_then(Value::as_str)
                .and_then(parse_datetime);
            kb.cmp(&ka)
        });
        // Index rows by their where-field values, then hand each input its rows.
        let mut index: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
        for (ri, row) in rows.iter().enumerate() {
            let key: Vec<String> = fields
                .iter()
                .enumerate()
                .map(|(fi, f)| norm_record_value(ty(fi), row.get(&f.1).unwrap_or(&Value::Null)))
                .collect();
            index.entry(key).or_default().push(ri);
        }
        for &m in &self.members {
            let key: Vec<String> = (0..fields.len())
                .map(|fi| norm_input(ty(fi), value_of(m, fi)))
                .collect();
            if let Some(hits) = index.get(&key) {
                results[m].records = hits.iter().map(|&ri| rows[ri].clone()).collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_quotes_and_backslashes() {
        assert_eq!(escape_soql(r"O'Brien \ co"), r"O\'Brien \\ co");
        assert_eq!(
            soql_literal(Some("email"), &json!("a'b@x.com")),
            r"'a\'b@x.com'"
        );
        assert_eq!(
            soql_literal(Some("datetime"), &json!("2024-01-01T00:00:00Z")),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            soql_literal(Some("datetime"), &json!("x' OR Id != '")),
            r"'x\' OR Id != \''"
        );
        assert_eq!(soql_literal(Some("boolean"), &json!(true)), "true");
        assert_eq!(soql_literal(None, &Value::Null), "null");
    }
}

#[cfg(test)]
mod value_tests {
    use super::value_problem;
    use serde_json::json;

    #[test]
    fn values_are_checked_against_their_field_type() {
        for (ty, v) in [
            ("int", json!(5)),
            ("double", json!("5.5")),
            ("boolean", json!("TRUE")),
            ("boolean", json!(false)),
            ("date", json!("2026-01-31")),
            ("datetime", json!("2026-01-31T10:00:00Z")),
            ("id", json!("001000000000001AAA")),
            ("email", json!(5)),
            ("string", json!("anything ' goes")),
        ] {
            assert_eq!(value_problem(Some(ty), &v), None, "{ty} {v}");
        }
        for (ty, v) in [
            ("int", json!("12abc")),
            ("double", json!("NaN")),
            ("currency", json!(true)),
            ("boolean", json!("yes")),
            ("date", json!("31/01/2026")),
            ("date", json!("2026-02-30")),
            ("datetime", json!("2026-01-31")),
            ("reference", json!("0010000000000")),
            ("id", json!("001000000000001AA'")),
            ("string", json!({"a": 1})),
        ] {
            assert!(value_problem(Some(ty), &v).is_some(), "{ty} {v}");
        }
    }
}
