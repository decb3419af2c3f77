//! Salesforce as a source: the `salesforce.records` stream. One SOQL query per run, read in
//! `SystemModstamp, Id` order from the partition's checkpoint (less `lookback`), page by page
//! through `nextRecordsUrl`; each page's last `SystemModstamp` is the checkpoint it lets the
//! run move to. A large first read (no checkpoint, more than `bulk_threshold` rows) goes
//! through a Bulk API 2.0 query job instead, whose rows come unordered: its checkpoint moves
//! only once every row is read.

use super::{QueryPage, SalesforceConnector, SfError, csv, enc_query, strip_attributes};
use crate::engine::{Page, ReadSpec};
use crate::http::Method;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The stream's name (without the connection).
pub const STREAM: &str = "records";
/// The parameters `salesforce.records` takes.
pub const PARAMS: [&str; 6] = [
    "sobject",
    "select",
    "where",
    "deleted",
    "bulk",
    "bulk_threshold",
];
/// Rows above which a first read goes through a Bulk API 2.0 query (Salesforce designs
/// Bulk queries for results of 10,000 records and more).
pub const DEFAULT_BULK_THRESHOLD: u64 = 10_000;
/// Rows asked for per Bulk results page (`maxRecords`).
const BULK_RESULT_ROWS: usize = 10_000;
/// The most Bulk result pages or REST query pages one read follows.
const MAX_PAGES: u32 = 10_000;
/// The partition of a records read: one per stream.
pub const PARTITION: &str = "";

/// When a read uses a Bulk API 2.0 query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMode {
    /// On a first read (no checkpoint) of more than `bulk_threshold` rows.
    Auto,
    /// Always on a first read.
    Always,
    Never,
}

/// A `salesforce.records` read, from its params.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsQuery {
    pub sobject: String,
    /// As selected, with `Id`, `SystemModstamp` (and `IsDeleted` with `deleted`) added.
    pub fields: Vec<String>,
    pub where_: Option<String>,
    pub deleted: bool,
    pub bulk: BulkMode,
    pub bulk_threshold: u64,
}

/// Whether `s` is an API name (`Event`, `Zoom_Meeting_Id__c`).
pub fn is_api_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why a `select` entry is not a field ferry can read: own fields (`Subject`) and parent
/// fields one relationship up (`Owner.Email`) are.
pub fn field_path_problem(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 2 {
        return Some(format!(
            "`{s}` goes more than one relationship up; ferry reads parent fields one level up, like `Owner.Email`"
        ));
    }
    if parts.iter().any(|p| !is_api_name(p)) {
        return Some(format!(
            "`{s}` is not a field name (letters, digits and `_`, a parent field as `Owner.Email`)"
        ));
    }
    None
}

/// The `select` param as field names: a list, or one comma-separated text (as
/// `ferry read --param select=Id,Subject` gives it).
pub fn select_list(v: &Value) -> Result<Vec<String>, String> {
    let items: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.trim().to_string()),
                _ => Err("`select` lists field names as text".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Value::String(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        _ => return Err("`select` is a list of field names".into()),
    };
    let items: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err("`select` names no field".into());
    }
    for f in &items {
        if let Some(p) = field_path_problem(f) {
            return Err(p);
        }
    }
    Ok(items)
}

fn truthy(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        Value::Null => Ok(false),
        _ => Err("is true or false".into()),
    }
}

impl RecordsQuery {
    /// Reads the stream's params (rendered). Errors name the param.
    pub fn from_params(params: &BTreeMap<String, Value>) -> Result<Self, String> {
        for k in params.keys() {
            if !PARAMS.contains(&k.as_str()) {
                return Err(format!(
                    "salesforce.records has no param `{k}`; it takes {}",
                    PARAMS.join(", ")
                ));
            }
        }
        let sobject = match params.get("sobject") {
            Some(Value::String(s)) if is_api_name(s.trim()) => s.trim().to_string(),
            Some(Value::String(s)) => {
                return Err(format!("`sobject` `{s}` is not an object name"));
            }
            _ => return Err("salesforce.records needs `sobject` (like Event)".into()),
        };
        let mut fields = match params.get("select") {
            Some(v) => select_list(v)?,
            None => Vec::new(),
        };
        let deleted = match params.get("deleted") {
            Some(v) => truthy(v).map_err(|e| format!("`deleted` {e}"))?,
            None => false,
        };
        let mut must = vec!["Id", "SystemModstamp"];
        if deleted {
            must.push("IsDeleted");
        }
        for (i, m) in must.into_iter().enumerate() {
            if !fields.iter().any(|f| f.eq_ignore_ascii_case(m)) {
                fields.insert(i.min(fields.len()), m.to_string());
            }
        }
        let where_ = match params.get("where") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(_) => return Err("`where` is a SOQL condition, as text".into()),
        };
        let bulk = match params.get("bulk") {
            None | Some(Value::Null) => BulkMode::Auto,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("auto") => BulkMode::Auto,
            Some(v) => match truthy(v) {
                Ok(true) => BulkMode::Always,
                Ok(false) => BulkMode::Never,
                Err(_) => return Err("`bulk` is auto, true or false".into()),
            },
        };
        let bulk_threshold = match params.get("bulk_threshold") {
            None | Some(Value::Null) => DEFAULT_BULK_THRESHOLD,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or("`bulk_threshold` is a whole number of rows")?,
        };
        Ok(RecordsQuery {
            sobject,
            fields,
            where_,
            deleted,
            bulk,
            bulk_threshold,
        })
    }

    /// The WHERE clause: the user's condition in parentheses, then ferry's window.
    fn condition(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
        // SOQL datetimes to the second; the start rounds down (a re-read costs no write),
        // the end too (what is later is read next run).
        let lit = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let window = format!(
            "SystemModstamp >= {} AND SystemModstamp <= {}",
            lit(since),
            lit(until)
        );
        match &self.where_ {
            Some(w) => format!("({w}) AND {window}"),
            None => window,
        }
    }

    /// The REST query, in cursor order.
    pub fn soql(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
        format!(
            "SELECT {} FROM {} WHERE {} ORDER BY SystemModstamp, Id",
            self.fields.join(", "),
            self.sobject,
            self.condition(since, until)
        )
    }

    /// The Bulk API 2.0 query: no ORDER BY (Bulk queries refuse it).
    pub fn bulk_soql(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
        format!(
            "SELECT {} FROM {} WHERE {}",
            self.fields.join(", "),
            self.sobject,
            self.condition(since, until)
        )
    }

    fn count_soql(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
        format!(
            "SELECT COUNT() FROM {} WHERE {}",
            self.sobject,
            self.condition(since, until)
        )
    }
}

/// A Salesforce datetime (`2026-01-01T10:00:00.000+0000`) as an RFC 3339 checkpoint.
pub fn cursor_of(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    let t = DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()?;
    Some(
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// Removes `attributes` from a row and its nested parents.
fn clean(v: Value) -> Value {
    match strip_attributes(v) {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| match v {
                    Value::Object(_) => (k, strip_attributes(v)),
                    other => (k, other),
                })
                .collect(),
        ),
        other => other,
    }
}

/// How a CSV cell of a field becomes JSON, by its describe type.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Text,
    Bool,
    Number,
}

fn cell_kind(field_type: &str) -> Cell {
    match field_type {
        "boolean" => Cell::Bool,
        "int" | "double" | "currency" | "percent" | "long" => Cell::Number,
        _ => Cell::Text,
    }
}

fn cell_value(kind: Cell, s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    match kind {
        Cell::Bool => json!(s.eq_ignore_ascii_case("true")),
        Cell::Number => s
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            })
            .unwrap_or_else(|| json!(s)),
        Cell::Text => json!(s),
    }
}

/// A Bulk results row as REST would return it: `Owner.Email` nested under `Owner` (null
/// when every field of the parent is empty), values typed by the describe.
fn nest(columns: &[(String, Cell)], row: &[String]) -> Value {
    let mut out = Map::new();
    for ((name, kind), cell) in columns.iter().zip(row) {
        let v = cell_value(*kind, cell);
        match name.split_once('.') {
            None => {
                out.insert(name.clone(), v);
            }
            Some((rel, child)) => {
                let entry = out
                    .entry(rel.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(child.to_string(), v);
                }
            }
        }
    }
    for v in out.values_mut() {
        if let Value::Object(m) = v
            && m.values().all(Value::is_null)
        {
            *v = Value::Null;
        }
    }
    Value::Object(out)
}

/// Where a read is.
enum Step {
    Start,
    Rest {
        next: String,
        followed: BTreeSet<String>,
        pages: u32,
    },
    Bulk {
        job: String,
        columns: Vec<(String, Cell)>,
        locator: Option<String>,
        followed: BTreeSet<String>,
        pages: u32,
        last: Option<String>,
    },
    Done,
}

struct Reader {
    conn: Arc<SalesforceConnector>,
    q: RecordsQuery,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    first: bool,
    step: Step,
}

impl SalesforceConnector {
    /// Reads `salesforce.records` from `window`'s checkpoint: pages in cursor order.
    pub fn read_records(
        self: &Arc<Self>,
        q: RecordsQuery,
        window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, SfError>> {
        let checkpoint = window.checkpoints.get(PARTITION).copied();
        let since = checkpoint.map_or(window.default_since, |c| c - window.lookback);
        let reader = Reader {
            conn: self.clone(),
            q,
            since,
            until: window.until,
            first: checkpoint.is_none(),
            step: Step::Start,
        };
        futures::stream::unfold(reader, |mut r| async move {
            match r.next_page().await {
                Ok(Some(p)) => Some((Ok(p), r)),
                Ok(None) => None,
                Err(e) => {
                    r.step = Step::Done;
                    Some((Err(e), r))
                }
            }
        })
        .boxed()
    }

    /// The path of a GET query, checked against `max_request_bytes` and the SOQL limit.
    async fn query_path(&self, soql: &str) -> Result<String, SfError> {
        let chars = soql.chars().count();
        if chars > super::MAX_SOQL_CHARS {
            return Err(SfError::Config {
                message: format!(
                    "the salesforce.records query is {chars} characters, more than Salesforce's {}; select fewer fields or shorten `where`",
                    super::MAX_SOQL_CHARS
                ),
            });
        }
        let path = format!("/query?q={}", enc_query(soql));
        let bytes = self.get_request_bytes(&path).await;
        if bytes > self.settings.max_request_bytes {
            return Err(SfError::Config {
                message: format!(
                    "the salesforce.records query needs a request of {bytes} bytes, more than max_request_bytes ({}); select fewer fields or shorten `where`",
                    self.settings.max_request_bytes
                ),
            });
        }
        Ok(path)
    }

    /// Rows a query would read (`SELECT COUNT()`).
    async fn count(&self, soql: &str) -> Result<u64, SfError> {
        let path = self.query_path(soql).await?;
        let resp = self.send(Method::GET, &path, None, true).await?;
        if !resp.is_success() {
            return Err(super::api_error(&resp));
        }
        let v: Value = resp.json().map_err(|_| SfError::Malformed {
            what: "a COUNT() answer".into(),
        })?;
        v.get("totalSize")
            .and_then(Value::as_u64)
            .ok_or_else(|| SfError::Malformed {
                what: "a COUNT() answer without totalSize".into(),
            })
    }

    /// The CSV columns of a Bulk query with how each is typed, from the describes.
    async fn bulk_columns(&self, q: &RecordsQuery) -> Result<Vec<(String, Cell)>, SfError> {
        let d = self.describe(&q.sobject).await?;
        let mut out = Vec::new();
        for f in &q.fields {
            let kind = match f.split_once('.') {
                None => d.field(f).map_or(Cell::Text, |x| cell_kind(&x.field_type)),
                Some((rel, child)) => {
                    let parent = d
                        .fields
                        .iter()
                        .find(|x| {
                            x.relationship_name
                                .as_deref()
                                .is_some_and(|r| r.eq_ignore_ascii_case(rel))
                        })
                        .and_then(|x| x.reference_to.first().cloned());
                    match parent {
                        Some(p) => self
                            .describe(&p)
                            .await?
                            .field(child)
                            .map_or(Cell::Text, |x| cell_kind(&x.field_type)),
                        None => Cell::Text,
                    }
                }
            };
            out.push((f.clone(), kind));
        }
        Ok(out)
    }

    /// Creates a Bulk API 2.0 query job and waits (on the clock) until it is complete.
    async fn bulk_query_job(&self, soql: &str, all: bool) -> Result<String, SfError> {
        let body = super::Body::Json(json!({
            "operation": if all { "queryAll" } else { "query" },
            "query": soql,
            "contentType": "CSV",
        }));
        let resp = self
            .send(Method::POST, "/jobs/query", Some(&body), false)
            .await?;
        if !resp.is_success() {
            return Err(super::api_error(&resp));
        }
        let info: Value = resp.json().map_err(|_| SfError::Malformed {
            what: "the Bulk query job".into(),
        })?;
        let job = info
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| SfError::Malformed {
                what: "a Bulk query job without a usable id".into(),
            })?
            .to_string();
        let started = self.clock.now();
        let mut wait = Duration::from_secs(1);
        loop {
            self.clock.sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
            let resp = self
                .send(Method::GET, &format!("/jobs/query/{job}"), None, true)
                .await?;
            if !resp.is_success() {
                return Err(super::api_error(&resp));
            }
            let info: Value = resp.json().map_err(|_| SfError::Malformed {
                what: "the Bulk query job info".into(),
            })?;
            match info.get("state").and_then(Value::as_str).unwrap_or("") {
                "JobComplete" => return Ok(job),
                "Failed" | "Aborted" => {
                    let message = info
                        .get("errorMessage")
                        .and_then(Value::as_str)
                        .unwrap_or("the job was aborted")
                        .chars()
                        .take(500)
                        .collect();
                    return Err(SfError::Bulk {
                        job_id: job,
                        message,
                    });
                }
                _ => {}
            }
            if self.clock.now() - started > chrono::Duration::hours(2) {
                return Err(SfError::Bulk {
                    job_id: job,
                    message: "still not complete after 2 hours; check it in Salesforce's Bulk Data Load Jobs page".into(),
                });
            }
        }
    }
}

impl Reader {
    async fn next_page(&mut self) -> Result<Option<Page>, SfError> {
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::Done => Ok(None),
            Step::Start => {
                let bulk = self.first
                    && match self.q.bulk {
                        BulkMode::Never => false,
                        BulkMode::Always => true,
                        BulkMode::Auto => {
                            let n = self
                                .conn
                                .count(&self.q.count_soql(self.since, self.until))
                                .await?;
                            n > self.q.bulk_threshold
                        }
                    };
                if bulk {
                    let columns = self.conn.bulk_columns(&self.q).await?;
                    let soql = self.q.bulk_soql(self.since, self.until);
                    let job = self.conn.bulk_query_job(&soql, self.q.deleted).await?;
                    self.step = Step::Bulk {
                        job,
                        columns,
                        locator: None,
                        followed: BTreeSet::new(),
                        pages: 0,
                        last: None,
                    };
                } else {
                    let mut path = self
                        .conn
                        .query_path(&self.q.soql(self.since, self.until))
                        .await?;
                    if self.q.deleted {
                        path = path.replacen("/query?", "/queryAll?", 1);
                    }
                    self.step = Step::Rest {
                        next: path,
                        followed: BTreeSet::new(),
                        pages: 0,
                    };
                }
                Box::pin(self.next_page()).await
            }
            Step::Rest {
                next,
                mut followed,
                pages,
            } => {
                let pages = pages.saturating_add(1);
                if pages > MAX_PAGES {
                    return Err(SfError::Malformed {
                        what: format!(
                            "a query that did not end after {MAX_PAGES} pages (nextRecordsUrl never runs out)"
                        ),
                    });
                }
                let page: QueryPage = self.conn.get_page(&next).await?;
                let records: Vec<Value> = page.records.into_iter().map(clean).collect();
                let cursor = records
                    .last()
                    .and_then(|r| r.get("SystemModstamp"))
                    .and_then(cursor_of);
                if let Some(url) = page.next_records_url.filter(|_| !page.done) {
                    if !followed.insert(url.clone()) {
                        return Err(SfError::Malformed {
                            what: format!(
                                "a query result page whose nextRecordsUrl repeats one already followed (after {pages} pages)"
                            ),
                        });
                    }
                    self.step = Step::Rest {
                        next: url,
                        followed,
                        pages,
                    };
                }
                Ok(Some(Page {
                    partition: PARTITION.to_string(),
                    records,
                    cursor,
                }))
            }
            Step::Bulk {
                job,
                columns,
                locator,
                mut followed,
                pages,
                mut last,
            } => {
                let pages = pages.saturating_add(1);
                if pages > MAX_PAGES {
                    return Err(SfError::Bulk {
                        job_id: job,
                        message: format!("results did not end after {MAX_PAGES} pages"),
                    });
                }
                let mut path = format!("/jobs/query/{job}/results?maxRecords={BULK_RESULT_ROWS}");
                if let Some(l) = &locator {
                    path.push_str("&locator=");
                    path.push_str(&super::enc(l));
                }
                let resp = self.conn.send(Method::GET, &path, None, true).await?;
                if !resp.is_success() {
                    return Err(super::api_error(&resp));
                }
                let next = resp
                    .header("sforce-locator")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty() && s != "null");
                let rows = csv::parse(&resp.text()).map_err(|e| SfError::Malformed {
                    what: format!("the Bulk query results CSV: {e}"),
                })?;
                let mut rows = rows.into_iter();
                let header = rows.next().unwrap_or_default();
                if header.len() != columns.len()
                    || header
                        .iter()
                        .zip(&columns)
                        .any(|(h, (c, _))| !h.eq_ignore_ascii_case(c))
                {
                    return Err(SfError::Malformed {
                        what: format!(
                            "Bulk query results with columns {} instead of {}",
                            header.join(","),
                            columns
                                .iter()
                                .map(|c| c.0.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                    });
                }
                let records: Vec<Value> = rows.map(|r| nest(&columns, &r)).collect();
                for r in &records {
                    if let Some(c) = r.get("SystemModstamp").and_then(cursor_of)
                        && last.as_ref().is_none_or(|l| c > *l)
                    {
                        last = Some(c);
                    }
                }
                // Bulk rows come in no order: the checkpoint moves once all are read.
                let cursor = match next {
                    Some(l) => {
                        if !followed.insert(l.clone()) {
                            return Err(SfError::Bulk {
                                job_id: job,
                                message: format!(
                                    "the results locator repeats one already followed (after {pages} pages)"
                                ),
                            });
                        }
                        self.step = Step::Bulk {
                            job,
                            columns,
                            locator: Some(l),
                            followed,
                            pages,
                            last,
                        };
                        None
                    }
                    None => last,
                };
                Ok(Some(Page {
                    partition: PARTITION.to_string(),
                    records,
                    cursor,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn params(v: Value) -> BTreeMap<String, Value> {
        match v {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    #[test]
    fn the_query_adds_the_cursor_fields_wraps_where_and_orders_by_the_cursor() {
        let q = RecordsQuery::from_params(&params(json!({
            "sobject": "Event",
            "select": ["Subject", "Owner.Email"],
            "where": "Zoom_Meeting__c = true OR Subject = 'x'",
            "deleted": true,
        })))
        .unwrap();
        assert_eq!(
            q.fields,
            vec![
                "Id",
                "SystemModstamp",
                "IsDeleted",
                "Subject",
                "Owner.Email"
            ]
        );
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let t1 = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            q.soql(t0, t1),
            "SELECT Id, SystemModstamp, IsDeleted, Subject, Owner.Email FROM Event WHERE \
             (Zoom_Meeting__c = true OR Subject = 'x') AND SystemModstamp >= 2026-01-01T00:00:00Z \
             AND SystemModstamp <= 2026-01-02T03:04:05Z ORDER BY SystemModstamp, Id"
        );
        assert!(!q.bulk_soql(t0, t1).contains("ORDER BY"));
    }

    #[test]
    fn params_are_checked() {
        let bad = |v: Value| RecordsQuery::from_params(&params(v)).unwrap_err();
        assert!(bad(json!({"select": ["Id"]})).contains("needs `sobject`"));
        assert!(bad(json!({"sobject": "Event", "select": ["A.B.C"]})).contains("more than one"));
        assert!(bad(json!({"sobject": "Event", "select": ["Id; DROP"]})).contains("not a field"));
        assert!(bad(json!({"sobject": "Event", "selct": ["Id"]})).contains("no param `selct`"));
        let q = RecordsQuery::from_params(&params(
            json!({"sobject": "Event", "select": "Id, Subject"}),
        ))
        .unwrap();
        assert_eq!(q.fields, vec!["Id", "SystemModstamp", "Subject"]);
        assert_eq!(q.bulk, BulkMode::Auto);
    }

    #[test]
    fn bulk_rows_are_nested_and_typed() {
        let cols = vec![
            ("Id".to_string(), Cell::Text),
            ("IsDeleted".to_string(), Cell::Bool),
            ("DurationInMinutes".to_string(), Cell::Number),
            ("Owner.Email".to_string(), Cell::Text),
            ("What.Name".to_string(), Cell::Text),
        ];
        let row: Vec<String> = ["00U1", "false", "30", "a@x.com", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            nest(&cols, &row),
            json!({"Id": "00U1", "IsDeleted": false, "DurationInMinutes": 30,
                   "Owner": {"Email": "a@x.com"}, "What": null})
        );
        assert_eq!(
            cursor_of(&json!("2026-01-01T10:00:00.000+0000")).as_deref(),
            Some("2026-01-01T10:00:00.000Z")
        );
    }
}

/// SOQL words that are not field names, for picking the fields out of a `where`.
const SOQL_WORDS: [&str; 12] = [
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "INCLUDES",
    "EXCLUDES",
    "NULL",
    "TRUE",
    "FALSE",
    "TODAY",
    "YESTERDAY",
];

/// The field names a SOQL condition uses (outside quoted text), for `validate --online`.
/// Date literals (`TOMORROW`, `LAST_N_DAYS:7`, `2026-01-01T00:00:00Z`) and keywords are
/// left out.
pub fn where_fields(cond: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let chars: Vec<char> = cond.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars.get(i).copied().unwrap_or(' ');
        if c == '\'' {
            i += 1;
            while i < chars.len() {
                match chars.get(i) {
                    Some('\\') => i += 2,
                    Some('\'') => break,
                    _ => i += 1,
                }
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
            {
                i += 1;
            }
            let word: String = chars.get(start..i).unwrap_or_default().iter().collect();
            let upper = word.to_ascii_uppercase();
            let literal = SOQL_WORDS.contains(&upper.as_str())
                || upper == "TOMORROW"
                || (word == upper && word.contains('_'))
                || chars.get(i) == Some(&':');
            if !literal && !out.contains(&word) {
                out.push(word);
            }
        } else if c.is_ascii_digit() {
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '+' | '-'))
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

impl SalesforceConnector {
    /// Checks fields a query names against the describes: own fields of `sobject`, and
    /// parent fields one relationship up (`Owner.Email`: `Owner` a relationship of
    /// `sobject`, `Email` a field of the object it points to). Problems name the path.
    pub async fn check_query_fields(
        &self,
        sobject: &str,
        fields: &[String],
    ) -> Vec<super::FieldProblem> {
        use super::{FieldAction, FieldProblem, FieldProblemKind};
        let own: Vec<&str> = fields
            .iter()
            .filter(|f| !f.contains('.'))
            .map(String::as_str)
            .collect();
        let mut out = self
            .check_fields(sobject, FieldAction::Query, &own, None)
            .await;
        if out.iter().any(|p| p.field.is_empty()) {
            return out;
        }
        let Ok(d) = self.describe(sobject).await else {
            return out;
        };
        for f in fields {
            let Some((rel, child)) = f.split_once('.') else {
                continue;
            };
            let Some(r) = d.fields.iter().find(|x| {
                x.relationship_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(rel))
            }) else {
                let names = d
                    .fields
                    .iter()
                    .filter_map(|x| x.relationship_name.as_deref());
                let suggestion = names
                    .min_by_key(|n| {
                        strsim::levenshtein(&n.to_ascii_lowercase(), &rel.to_ascii_lowercase())
                    })
                    .filter(|n| {
                        strsim::levenshtein(&n.to_ascii_lowercase(), &rel.to_ascii_lowercase()) <= 3
                    })
                    .map(|n| format!("{n}.{child}"));
                out.push(FieldProblem {
                    sobject: sobject.to_string(),
                    field: f.clone(),
                    kind: FieldProblemKind::UnknownField { suggestion },
                    message: format!(
                        "{sobject} has no relationship `{rel}` (a parent field is named by its relationship, like Owner.Email)"
                    ),
                });
                continue;
            };
            let [parent] = r.reference_to.as_slice() else {
                out.push(FieldProblem {
                    sobject: sobject.to_string(),
                    field: f.clone(),
                    kind: FieldProblemKind::UnknownField { suggestion: None },
                    message: format!(
                        "`{rel}` of {sobject} points to several objects ({}); ferry reads parent fields of single-object relationships",
                        r.reference_to.join(", ")
                    ),
                });
                continue;
            };
            for mut p in self
                .check_fields(parent, FieldAction::Query, &[child], None)
                .await
            {
                p.message = format!("{f}: {}", p.message);
                if let FieldProblemKind::UnknownField { suggestion } = &mut p.kind {
                    *suggestion = suggestion.take().map(|s| format!("{rel}.{s}"));
                }
                p.field = f.clone();
                p.sobject = sobject.to_string();
                out.push(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod where_tests {
    use super::where_fields;

    #[test]
    fn the_fields_of_a_condition_are_picked_out() {
        assert_eq!(
            where_fields(
                "Campaign.Zoom_Webinar_Id__c != null AND (Name LIKE 'a AND b%' OR Status IN ('x')) \
                 AND StartDateTime >= TODAY AND CreatedDate = LAST_N_DAYS:7 AND X__c > 2026-01-01T00:00:00Z \
                 AND IsActive = true"
            ),
            vec![
                "Campaign.Zoom_Webinar_Id__c",
                "Name",
                "Status",
                "StartDateTime",
                "CreatedDate",
                "X__c",
                "IsActive"
            ]
        );
    }
}
