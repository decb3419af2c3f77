//! Batched lookups ("match rules"): one SOQL query answers a whole batch of where-maps.
//! Fields equal across the batch become `AND f = v`; the varying field becomes `IN (...)`,
//! or an OR of AND-groups when several vary. Results come back per input, newest first.

use super::{Describe, SalesforceConnector, SfError};
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

impl SalesforceConnector {
    /// Finds the records matching each where-map with as few queries as the SOQL length
    /// limit allows (one per batch normally). Each result list is ordered by
    /// LastModifiedDate descending, so `[0]` is the most recently modified match.
    pub async fn match_rule(
        &self,
        sobject: &str,
        select: &[String],
        wheres: &[BTreeMap<String, Value>],
    ) -> Result<Vec<Vec<Value>>, SfError> {
        let mut results: Vec<Vec<Value>> = vec![Vec::new(); wheres.len()];
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
        for (_, members) in groups {
            self.match_group(&d, select, wheres, &members, &mut results)
                .await?;
        }
        Ok(results)
    }

    async fn match_group(
        &self,
        d: &Describe,
        select: &[String],
        wheres: &[BTreeMap<String, Value>],
        members: &[usize],
        results: &mut [Vec<Value>],
    ) -> Result<(), SfError> {
        let first = &wheres[members[0]];
        if first.is_empty() {
            // An empty where-map matches nothing rather than the whole object.
            return Ok(());
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
        let ty = |i: usize| fields[i].2.as_deref();
        let value_of = |input: usize, fi: usize| -> &Value {
            wheres[input]
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&fields[fi].0))
                .map(|(_, v)| v)
                .unwrap_or(&Value::Null)
        };
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
        let mut terms: Vec<String> = Vec::new();
        let mut seen_terms = BTreeSet::new();
        for &m in members {
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
            terms.push(term);
        }
        let joiner = if consts.is_empty() { "" } else { " AND " };
        let wrap = |chunk: &[String]| -> String {
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
        // Split the terms so that no query text passes the limit.
        let limit = self.settings.max_soql_chars;
        let mut queries = Vec::new();
        if varying.is_empty() {
            queries.push(wrap(&[]));
        } else {
            // Measured as sent: percent-encoded in the GET /query URL.
            let overhead = super::enc(&wrap(&[])).len() + 8;
            let sep = super::enc(if varying.len() == 1 { ", " } else { " OR " }).len();
            let mut chunk: Vec<String> = Vec::new();
            let mut len = overhead;
            for t in terms {
                let t_len = super::enc(&t).len();
                if !chunk.is_empty() && len + t_len + sep > limit {
                    queries.push(wrap(&chunk));
                    chunk.clear();
                    len = overhead;
                }
                if overhead + t_len > limit {
                    return Err(SfError::Config {
                        message: format!(
                            "a single lookup value makes the {} query longer than {limit} characters",
                            d.name
                        ),
                    });
                }
                len += t_len + sep;
                chunk.push(t);
            }
            if !chunk.is_empty() {
                queries.push(wrap(&chunk));
            }
        }
        let mut rows = Vec::new();
        for q in queries {
            rows.extend(self.query_all(&q).await?);
        }
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
        for &m in members {
            let key: Vec<String> = (0..fields.len())
                .map(|fi| norm_input(ty(fi), value_of(m, fi)))
                .collect();
            if let Some(hits) = index.get(&key) {
                results[m] = hits.iter().map(|&ri| rows[ri].clone()).collect();
            }
        }
        Ok(())
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
