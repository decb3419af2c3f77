//! Writes: sObject Collections in chunks of 200 (allOrNone=false) for incremental runs,
//! Bulk API 2.0 ingest for backfills, with one result per input record either way.
//! Per-record rejections stay on their record; UNABLE_TO_LOCK_ROW is retried for just the
//! records it hit; request-wide failures end the write with one `SfError`.

use super::{Body, SalesforceConnector, SfError, api_error, csv, enc};
use crate::http::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// How records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Insert,
    /// Records carry `Id`.
    Update,
    /// Records carry the external-id field.
    Upsert {
        external_id_field: String,
    },
    /// Platform event publish (insert-only).
    Publish,
}

/// One record's error as Salesforce reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    pub status_code: String,
    pub message: String,
    pub fields: Vec<String>,
}

/// The outcome for one input record, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RecordResult {
    pub id: Option<String>,
    pub created: bool,
    /// The record already existed and counts as written (a duplicate EventRelation).
    pub already_existed: bool,
    pub errors: Vec<RecordError>,
}

impl RecordResult {
    pub fn is_success(&self) -> bool {
        self.errors.is_empty()
    }
}

const CHUNK: usize = 200;
const LOCK_ERROR: &str = "UNABLE_TO_LOCK_ROW";

fn parse_errors(v: Option<&Value>) -> Vec<RecordError> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| RecordError {
                    status_code: e
                        .get("statusCode")
                        .or_else(|| e.get("errorCode"))
                        .and_then(Value::as_str)
                        .unwrap_or("UNKNOWN")
                        .to_string(),
                    message: e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    fields: e
                        .get("fields")
                        .and_then(Value::as_array)
                        .map(|f| {
                            f.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads one Collections/SaveResult entry.
fn parse_result(v: &Value, op: &WriteOp, sobject: &str) -> RecordResult {
    let success = v.get("success").and_then(Value::as_bool).unwrap_or(false);
    let mut errors = parse_errors(v.get("errors"));
    let id = v.get("id").and_then(Value::as_str).map(String::from);
    if success {
        // Publish acknowledgements arrive as an OPERATION_ENQUEUED "error": success wins.
        errors.clear();
        let created = match op {
            WriteOp::Insert | WriteOp::Publish => true,
            WriteOp::Update => false,
            WriteOp::Upsert { .. } => v.get("created").and_then(Value::as_bool).unwrap_or(false),
        };
        return RecordResult {
            id,
            created,
            already_existed: false,
            errors,
        };
    }
    errors.retain(|e| e.status_code != "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    if sobject.eq_ignore_ascii_case("EventRelation")
        && errors.iter().any(|e| e.status_code == "DUPLICATE_VALUE")
    {
        // The attendee is already on the event: what the write wanted is true.
        return RecordResult {
            id,
            created: false,
            already_existed: true,
            errors: Vec::new(),
        };
    }
    if errors.is_empty() {
        errors.push(RecordError {
            status_code: "UNKNOWN".into(),
            message: "Salesforce reported a failure without an error".into(),
            fields: Vec::new(),
        });
    }
    RecordResult {
        id,
        created: false,
        already_existed: false,
        errors,
    }
}

/// Transient per-record failures worth sending again: a row lock, or (for upserts) a lost
/// race to create the same new key, which matches the winner's record on the next try.
fn is_retryable(r: &RecordResult, op: &WriteOp) -> bool {
    r.errors.iter().any(|e| {
        e.status_code == LOCK_ERROR
            || (e.status_code == "DUPLICATE_VALUE" && matches!(op, WriteOp::Upsert { .. }))
    })
}

impl SalesforceConnector {
    /// Writes records and answers one [`RecordResult`] per record, in order.
    pub async fn write(
        &self,
        sobject: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<RecordResult>, SfError> {
        self.write_partial(sobject, op, records)
            .await
            .map_err(|(e, _)| e)
    }

    /// As [`Self::write`]; when a request fails as a whole part-way (one Collections chunk
    /// after its retries), the error comes with the results of the chunks Salesforce
    /// already answered: one per record of that prefix of `records`, so what was written
    /// is never forgotten (and never written again).
    pub async fn write_partial(
        &self,
        sobject: &str,
        op: WriteOp,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<RecordResult>, (SfError, Vec<RecordResult>)> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if records.len() >= self.settings.bulk_threshold && op != WriteOp::Publish {
            return self
                .write_bulk(sobject, &op, &records)
                .await
                .map_err(|e| (e, Vec::new()));
        }
        let mut results: Vec<RecordResult> = vec![RecordResult::default(); records.len()];
        let indices: Vec<usize> = (0..records.len()).collect();
        let mut done = 0usize;
        for chunk in indices.chunks(CHUNK) {
            if let Err(e) = self
                .write_chunk_with_retries(sobject, &op, &records, chunk, &mut results)
                .await
            {
                results.truncate(done);
                return Err((e, results));
            }
            done += chunk.len();
        }
        Ok(results)
    }

    async fn write_chunk_with_retries(
        &self,
        sobject: &str,
        op: &WriteOp,
        records: &[Map<String, Value>],
        chunk: &[usize],
        results: &mut [RecordResult],
    ) -> Result<(), SfError> {
        let mut pending: Vec<usize> = chunk.to_vec();
        let mut attempt = 0u32;
        loop {
            let answered = self.send_collection(sobject, op, records, &pending).await?;
            let mut locked = Vec::new();
            for (&i, r) in pending.iter().zip(answered) {
                if is_retryable(&r, op) {
                    locked.push(i);
                }
                results[i] = r;
            }
            if locked.is_empty() || attempt >= self.settings.lock_retries {
                return Ok(());
            }
            attempt += 1;
            tracing::debug!(
                records = locked.len(),
                attempt,
                "retrying records locked by another transaction"
            );
            let base = Duration::from_millis(500u64 << attempt.min(6));
            let jitter = 0.5 + rand::random::<f64>() * 0.5;
            self.clock.sleep(base.mul_f64(jitter)).await;
            pending = locked;
        }
    }

    async fn send_collection(
        &self,
        sobject: &str,
        op: &WriteOp,
        records: &[Map<String, Value>],
        pending: &[usize],
    ) -> Result<Vec<RecordResult>, SfError> {
        let mut body_records = Vec::with_capacity(pending.len());
        for &i in pending {
            let mut rec = Map::new();
            rec.insert("attributes".into(), json!({"type": sobject}));
            for (k, v) in &records[i] {
                if k == "attributes" {
                    continue;
                }
                if k.eq_ignore_ascii_case("Id") && !matches!(op, WriteOp::Update) {
                    continue;
                }
                rec.insert(k.clone(), v.clone());
            }
            body_records.push(Value::Object(rec));
        }
        let body = Body::Json(json!({"allOrNone": false, "records": body_records}));
        let (method, path, idempotent) = match op {
            WriteOp::Insert | WriteOp::Publish => {
                (Method::POST, "/composite/sobjects".to_string(), false)
            }
            WriteOp::Update => (Method::PATCH, "/composite/sobjects".to_string(), true),
            WriteOp::Upsert { external_id_field } => (
                Method::PATCH,
                format!(
                    "/composite/sobjects/{}/{}",
                    enc(sobject),
                    enc(external_id_field)
                ),
                true,
            ),
        };
        let resp = self.send(method, &path, Some(&body), idempotent).await?;
        if resp.status != 200 {
            let e = api_error(&resp);
            if matches!(
                e.code(),
                Some("INVALID_FIELD" | "INVALID_TYPE" | "NOT_FOUND")
            ) {
                self.invalidate_describe(sobject);
            }
            return Err(e);
        }
        let arr: Vec<Value> = resp.json().map_err(|_| SfError::Malformed {
            what: "the Collections response (expected an array)".into(),
        })?;
        if arr.len() != pending.len() {
            return Err(SfError::Malformed {
                what: format!(
                    "the Collections response has {} results for {} records",
                    arr.len(),
                    pending.len()
                ),
            });
        }
        Ok(arr.iter().map(|v| parse_result(v, op, sobject)).collect())
    }

    /// Bulk API 2.0 ingest: create the job, upload one CSV, close it, poll on the clock,
    /// then map the success and failure CSVs back to the input records.
    async fn write_bulk(
        &self,
        sobject: &str,
        op: &WriteOp,
        records: &[Map<String, Value>],
    ) -> Result<Vec<RecordResult>, SfError> {
        let (operation, ext) = match op {
            WriteOp::Insert => ("insert", None),
            WriteOp::Update => ("update", None),
            WriteOp::Upsert { external_id_field } => ("upsert", Some(external_id_field.clone())),
            WriteOp::Publish => ("insert", None),
        };
        // Columns: every key any record has, nested parent references as `Rel.Field`.
        let flat: Vec<Vec<(String, Value)>> = records
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                for (k, v) in r {
                    if k == "attributes" || (k.eq_ignore_ascii_case("Id") && *op != WriteOp::Update)
                    {
                        continue;
                    }
                    match v {
                        Value::Object(m) => {
                            for (sub, sv) in m.iter().filter(|(s, _)| *s != "attributes") {
                                out.push((format!("{k}.{sub}"), sv.clone()));
                            }
                        }
                        other => out.push((k.clone(), other.clone())),
                    }
                }
                out
            })
            .collect();
        let mut columns: Vec<String> = Vec::new();
        for row in &flat {
            for (k, _) in row {
                if !columns.iter().any(|c| c == k) {
                    columns.push(k.clone());
                }
            }
        }
        let mut text = String::new();
        csv::write_row(
            &mut text,
            &columns.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut row_keys: HashMap<Vec<String>, VecDeque<usize>> = HashMap::new();
        for (i, row) in flat.iter().enumerate() {
            let map: BTreeMap<&str, &Value> = row.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match map.get(c.as_str()) {
                    None => String::new(),
                    Some(Value::Null) => "#N/A".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                })
                .collect();
            csv::write_row(
                &mut text,
                &cells.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            row_keys.entry(cells).or_default().push_back(i);
        }

        let mut job = json!({"object": sobject, "operation": operation, "contentType": "CSV",
                             "lineEnding": "LF", "columnDelimiter": "COMMA"});
        if let Some(f) = &ext {
            job["externalIdFieldName"] = json!(f);
        }
        let resp = self
            .send(Method::POST, "/jobs/ingest", Some(&Body::Json(job)), false)
            .await?;
        if !resp.is_success() {
            return Err(api_error(&resp));
        }
        let info: Value = resp.json().map_err(|_| SfError::Malformed {
            what: "the Bulk job info".into(),
        })?;
        let job_id = info
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| SfError::Malformed {
                what: "a Bulk job without an id".into(),
            })?
            .to_string();
        let bulk_err = |message: String| SfError::Bulk {
            job_id: job_id.clone(),
            message,
        };
        let base = format!("/jobs/ingest/{job_id}");
        let resp = self
            .send(
                Method::PUT,
                &format!("{base}/batches"),
                Some(&Body::Csv(text)),
                true,
            )
            .await?;
        if !resp.is_success() {
            return Err(bulk_err(api_error(&resp).to_string()));
        }
        let close = Body::Json(json!({"state": "UploadComplete"}));
        let resp = self.send(Method::PATCH, &base, Some(&close), true).await?;
        if !resp.is_success() {
            return Err(bulk_err(api_error(&resp).to_string()));
        }
        let started = self.clock.now();
        let mut wait = Duration::from_secs(1);
        loop {
            self.clock.sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
            let resp = self.send(Method::GET, &base, None, true).await?;
            if !resp.is_success() {
                return Err(bulk_err(api_error(&resp).to_string()));
            }
            let info: Value = resp.json().map_err(|_| SfError::Malformed {
                what: "the Bulk job info".into(),
            })?;
            match info.get("state").and_then(Value::as_str).unwrap_or("") {
                "JobComplete" => break,
                "Failed" | "Aborted" => {
                    let msg = info
                        .get("errorMessage")
                        .and_then(Value::as_str)
                        .unwrap_or("the job was aborted");
                    return Err(bulk_err(msg.to_string()));
                }
                _ => {}
            }
            if self.clock.now() - started > chrono::Duration::hours(2) {
                return Err(bulk_err("still not complete after 2 hours; check it in Salesforce's Bulk Data Load Jobs page".into()));
            }
        }
        let mut results: Vec<Option<RecordResult>> = vec![None; records.len()];
        for kind in ["successfulResults", "failedResults"] {
            let resp = self
                .send(Method::GET, &format!("{base}/{kind}/"), None, true)
                .await?;
            if !resp.is_success() {
                return Err(bulk_err(api_error(&resp).to_string()));
            }
            let rows = csv::parse(&resp.text()).map_err(|e| SfError::Malformed {
                what: format!("the Bulk {kind} CSV: {e}"),
            })?;
            let Some((header, data)) = rows.split_first() else {
                continue;
            };
            let skip = header.iter().take_while(|h| h.starts_with("sf__")).count();
            let positions: Vec<Option<usize>> = columns
                .iter()
                .map(|c| {
                    header
                        .iter()
                        .skip(skip)
                        .position(|h| h == c)
                        .map(|p| p + skip)
                })
                .collect();
            for row in data {
                let key: Vec<String> = positions
                    .iter()
                    .map(|p| p.and_then(|p| row.get(p).cloned()).unwrap_or_default())
                    .collect();
                let Some(i) = row_keys.get_mut(&key).and_then(VecDeque::pop_front) else {
                    continue;
                };
                let id = row.first().filter(|s| !s.is_empty()).cloned();
                let r = if kind == "successfulResults" {
                    let created = row.get(1).is_some_and(|s| s.eq_ignore_ascii_case("true"));
                    RecordResult {
                        id,
                        created,
                        already_existed: false,
                        errors: Vec::new(),
                    }
                } else {
                    let errors = parse_bulk_error(row.get(1).map(String::as_str).unwrap_or(""));
                    let as_value = json!({"success": false, "id": id, "errors": errors.iter().map(|e| json!({"statusCode": e.status_code, "message": e.message, "fields": e.fields})).collect::<Vec<_>>()});
                    parse_result(&as_value, op, sobject)
                };
                results[i] = Some(r);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| RecordResult {
                    errors: vec![RecordError {
                        status_code: "BULK_UNPROCESSED".into(),
                        message: format!("Bulk job {job_id} did not process this record"),
                        fields: Vec::new(),
                    }],
                    ..RecordResult::default()
                })
            })
            .collect())
    }
}

/// Reads `sf__Error`: `CODE:message:fields --`, possibly several joined by spaces.
fn parse_bulk_error(s: &str) -> Vec<RecordError> {
    let mut out = Vec::new();
    for part in s.split(" --").map(str::trim).filter(|p| !p.is_empty()) {
        let (code, rest) = part.split_once(':').unwrap_or((part, ""));
        let (message, fields) = match rest.rsplit_once(':') {
            Some((m, f)) if !f.contains(' ') => (m, f),
            _ => (rest, ""),
        };
        out.push(RecordError {
            status_code: code.to_string(),
            message: message.to_string(),
            fields: fields
                .split(',')
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect(),
        });
    }
    if out.is_empty() {
        out.push(RecordError {
            status_code: "UNKNOWN".into(),
            message: s.to_string(),
            fields: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_errors_parse() {
        let e = parse_bulk_error(
            "STRING_TOO_LONG:Subject: data value too large: x (max length=255):Subject --",
        );
        assert_eq!(e[0].status_code, "STRING_TOO_LONG");
        assert_eq!(e[0].fields, vec!["Subject"]);
        assert!(e[0].message.starts_with("Subject: data value too large"));
    }

    #[test]
    fn publish_ack_and_duplicate_relation_are_success() {
        let ack = json!({"id": "e00x", "success": true, "errors": [{"statusCode": "OPERATION_ENQUEUED", "message": "uuid", "fields": []}]});
        assert!(parse_result(&ack, &WriteOp::Publish, "X__e").is_success());
        let dup = json!({"success": false, "errors": [{"statusCode": "DUPLICATE_VALUE", "message": "duplicate value found", "fields": []}]});
        let r = parse_result(&dup, &WriteOp::Insert, "EventRelation");
        assert!(r.is_success() && r.already_existed);
        let r = parse_result(&dup, &WriteOp::Insert, "Contact");
        assert!(!r.is_success());
    }
}
