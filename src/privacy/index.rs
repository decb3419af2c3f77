//! Filling the subject index while a batch commits: every email address in a synced record
//! (its fields, its enrich results, so participants, registrants and lookup keys alike) is
//! recorded by keyed hash with the record and the Salesforce records written for it.

use crate::engine::report::{RecordReport, WriteAction};
use crate::state::{SubjectEntry, looks_like_email};
use serde_json::Value;
use std::collections::BTreeMap;

/// The most addresses recorded per record (a record is bounded by the source's page size,
/// but an enrich can attach thousands of participants).
pub const MAX_ADDRESSES_PER_RECORD: usize = 5_000;
/// How deep the walk goes into a record.
const MAX_DEPTH: usize = 16;

/// Addresses (lowercased) in `record`, each with where it was first seen
/// (`participants.user_email`).
pub fn addresses(record: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(record, &mut String::new(), 0, &mut out);
    out
}

fn walk(v: &Value, path: &mut String, depth: usize, out: &mut BTreeMap<String, String>) {
    if depth > MAX_DEPTH || out.len() >= MAX_ADDRESSES_PER_RECORD {
        return;
    }
    match v {
        Value::String(s) if looks_like_email(s) => {
            out.entry(s.trim().to_lowercase())
                .or_insert_with(|| path.clone());
        }
        Value::Array(a) => {
            for x in a {
                walk(x, path, depth + 1, out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(x, path, depth + 1, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The record's time, as the reports show it: its start, date or creation.
fn record_time(r: &Value) -> String {
    ["start_time", "date_time", "created_at", "create_time"]
        .iter()
        .find_map(|f| r.get(*f).and_then(Value::as_str))
        .unwrap_or("")
        .chars()
        .take(40)
        .collect()
}

/// The index rows of one record: one per (address, written sink record), or one per address
/// when nothing was written. `hash` is the state's keyed hash.
pub fn rows_for(
    record: &Value,
    report: &RecordReport,
    hash: &dyn Fn(&str) -> String,
) -> Vec<SubjectEntry> {
    let found = addresses(record);
    if found.is_empty() {
        return Vec::new();
    }
    let written: Vec<_> = report
        .writes
        .iter()
        .filter(|w| {
            matches!(
                w.action,
                WriteAction::Create | WriteAction::Update | WriteAction::Unchanged
            ) && w.id.is_some()
        })
        .collect();
    let when = record_time(record);
    let mut rows = Vec::new();
    for (email, role) in found {
        let h = hash(&email);
        let base = SubjectEntry {
            hash: h,
            pipeline: String::new(),
            stream: report.source.stream.clone(),
            record_key: report.source.key.clone(),
            role,
            record_time: when.clone(),
            sink: String::new(),
            sobject: String::new(),
            sf_id: String::new(),
            ledger_key: String::new(),
        };
        if written.is_empty() {
            rows.push(base);
            continue;
        }
        for w in &written {
            rows.push(SubjectEntry {
                sink: w.sink.clone(),
                sobject: w.sobject.clone(),
                sf_id: w.id.clone().unwrap_or_default(),
                ledger_key: w.key.clone(),
                ..base.clone()
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_addresses_in_nested_enrich_results() {
        let r = json!({"user_email": "Rep@Acme.com", "topic": "x@y",
            "participants": [{"user_email": "pat@contoso.com"}, {"user_email": "PAT@contoso.com"}]});
        let a = addresses(&r);
        assert_eq!(a.len(), 2);
        assert_eq!(a["pat@contoso.com"], "participants.user_email");
        assert_eq!(a["rep@acme.com"], "user_email");
    }
}
