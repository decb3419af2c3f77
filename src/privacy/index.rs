//! Filling the subject index while a batch commits: every email address in a synced record
//! (its fields, its enrich results, so participants, registrants and lookup keys alike) is
//! recorded by keyed hash with the record, and the Salesforce records written for the record
//! once, apart: the rows of a record grow with its addresses plus its writes, never with
//! their product.

use crate::engine::report::{RecordReport, WriteAction};
use crate::state::{IndexedRecord, SyncedWrite, looks_like_email};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

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

/// Keyed hashes of the addresses of one batch, each computed once however many records
/// name it (the host of a batch's meetings, a frequent participant).
pub struct BatchHasher<'a> {
    hash: &'a dyn Fn(&str) -> String,
    seen: HashMap<String, String>,
}

impl<'a> BatchHasher<'a> {
    pub fn new(hash: &'a dyn Fn(&str) -> String) -> Self {
        BatchHasher {
            hash,
            seen: HashMap::new(),
        }
    }

    fn get(&mut self, email: &str) -> String {
        if let Some(h) = self.seen.get(email) {
            return h.clone();
        }
        let h = (self.hash)(email);
        self.seen.insert(email.to_string(), h.clone());
        h
    }
}

/// What the index keeps of one record: its addresses (at most
/// [`MAX_ADDRESSES_PER_RECORD`]) by keyed hash, and the Salesforce records written or kept
/// for it. `None` when the record holds no address.
pub fn rows_for(
    record: &Value,
    report: &RecordReport,
    hasher: &mut BatchHasher<'_>,
) -> Option<IndexedRecord> {
    let found = addresses(record);
    if found.is_empty() {
        return None;
    }
    let writes = report
        .writes
        .iter()
        .filter(|w| {
            matches!(
                w.action,
                WriteAction::Create | WriteAction::Update | WriteAction::Unchanged
            )
        })
        .filter_map(|w| {
            w.id.as_ref().map(|id| SyncedWrite {
                sink: w.sink.clone(),
                sobject: w.sobject.clone(),
                sf_id: id.clone(),
                ledger_key: w.key.clone(),
            })
        })
        .collect();
    let subjects = found
        .into_iter()
        .map(|(email, role)| (hasher.get(&email), role))
        .collect();
    Some(IndexedRecord {
        stream: report.source.stream.clone(),
        record_key: report.source.key.clone(),
        record_time: record_time(record),
        subjects,
        writes,
    })
}

/// A synced meeting for tests: see [`testing::meeting`].
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::engine::report::{SourceRef, WriteReport};
    use serde_json::json;

    pub fn write(sink: &str, sobject: &str, key: &str, id: &str) -> WriteReport {
        WriteReport {
            sink: sink.into(),
            sobject: sobject.into(),
            action: WriteAction::Create,
            key: key.into(),
            id: Some(id.into()),
            fields: None,
            diff: None,
            reason: None,
            message: None,
        }
    }

    /// A meeting hosted by `host` with `n` participants `p{i}@contoso.com`, written as one
    /// Event and one EventRelation per participant (the relation keys name the participant,
    /// as a `key` template made from the address would).
    pub fn meeting(uuid: &str, host: &str, n: usize) -> (Value, RecordReport) {
        let participants: Vec<Value> = (0..n)
            .map(|i| json!({"user_email": format!("p{i}@contoso.com"), "name": format!("P {i}")}))
            .collect();
        let record = json!({"uuid": uuid, "host_email": host, "start_time": "2024-05-01T10:00:00Z",
            "participants": participants});
        let mut writes = vec![write("events", "Event", uuid, &format!("00U{uuid}"))];
        for i in 0..n {
            writes.push(write(
                "relations",
                "EventRelation",
                &format!("{uuid}|p{i}@contoso.com"),
                &format!("0RE{uuid}{i}"),
            ));
        }
        let report = RecordReport {
            source: SourceRef {
                stream: "past_meetings".into(),
                key: uuid.into(),
            },
            title: String::new(),
            writes,
            unmatched: Vec::new(),
            unlookable: Vec::new(),
            ambiguous: Vec::new(),
            looked_up: 0,
            skipped: Vec::new(),
            errors: Vec::new(),
        };
        (record, report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::testing::meeting;
    use super::*;
    use serde_json::json;
    use std::cell::Cell;

    #[test]
    fn each_address_is_hashed_once_per_batch() {
        let calls = Cell::new(0usize);
        let hash = |e: &str| {
            calls.set(calls.get() + 1);
            format!("h:{e}")
        };
        let mut hasher = BatchHasher::new(&hash);
        // Ten meetings of one host with the same 20 participants: 21 distinct addresses.
        let mut rows = 0;
        for m in 0..10 {
            let (v, r) = meeting(&format!("m{m}"), "host@acme.com", 20);
            rows += rows_for(&v, &r, &mut hasher).unwrap().subjects.len();
        }
        assert_eq!(rows, 210);
        assert_eq!(calls.get(), 21);
    }

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
