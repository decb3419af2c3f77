//! Privacy requests: the subject index (which synced records an email address appeared in,
//! keyed by a keyed hash of the address, never the address itself), what the state holds
//! about one address, and forgetting it.
//!
//! The hash is HMAC-SHA256 of the lowercased address under a key derived from the state's
//! encryption key: whoever reads the file without the key cannot test an address against it.

use super::{Context, Result, SqliteState, StateKey, fmt_ts};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What replaces the address where a row is kept but the address must go.
pub const FORGOTTEN: &str = "[forgotten]";

/// The pipeline name the audit lines of `ferry subject forget` carry in the run history.
pub const AUDIT_PIPELINE: &str = "(privacy)";

/// What the export reads back: an address (by hash) appeared in a synced record, and one
/// Salesforce record ferry wrote for that record (`sink` empty when nothing was written).
/// The state stores the two halves apart (see [`IndexedRecord`]) and joins them on read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectEntry {
    #[serde(skip)]
    pub hash: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    pub stream: String,
    pub record_key: String,
    /// Where in the record the address was (`participants.user_email`, `email`).
    pub role: String,
    /// The record's time (start, date or creation), when it has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub record_time: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sink: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sobject: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sf_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ledger_key: String,
}

/// What a batch adds to the subject index for one synced source record: one row per
/// address (`subject_index`) and, apart, one row per Salesforce record written for it
/// (`synced_writes`), so a meeting with N participants and N EventRelations stores about
/// 2N rows, not N².
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexedRecord {
    pub stream: String,
    pub record_key: String,
    /// The record's time (start, date or creation), or empty.
    pub record_time: String,
    /// (keyed hash of the address, where in the record it was).
    pub subjects: Vec<(String, String)>,
    pub writes: Vec<SyncedWrite>,
}

/// One Salesforce record written (or found as it should be) for a synced source record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncedWrite {
    pub sink: String,
    pub sobject: String,
    pub sf_id: String,
    pub ledger_key: String,
}

/// One place of the state that holds the address, and what `forget` does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectHit {
    /// `lookup cache`, `subject index`, `webhook inbox`, `dead letters`, `run history`,
    /// `labels`, `ledger keys`, or `table.column` for anything else.
    pub area: String,
    /// Which row (an id, a scope, a pipeline/sink), without the address.
    pub row: String,
    /// `delete`, `redact` (the row stays, the address is replaced) or `keep` (with why).
    pub action: String,
}

/// What `forget` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    pub deleted: u64,
    pub redacted: u64,
    /// Rows that still hold the address afterwards, as `table.column: count` (with why).
    pub remaining: Vec<String>,
    /// Free pages and the WAL were cleared (secure delete, VACUUM, WAL truncated). False when
    /// another process held the file and the WAL could not be truncated.
    pub compacted: bool,
    /// The first 12 hex digits of the address's hash (the audit line names only these).
    pub hash_prefix: String,
}

/// The keyed hash of an address (trimmed, lowercased).
pub fn subject_hash(key: &StateKey, email: &str) -> String {
    // A key derived for this purpose only, so the index never reuses the token key as is.
    let derived = match HmacSha256::new_from_slice(key.bytes()) {
        Ok(mut m) => {
            m.update(b"ferry subject index v1");
            m.finalize().into_bytes()
        }
        // HMAC takes keys of any length; this branch cannot run.
        Err(_) => return String::new(),
    };
    match HmacSha256::new_from_slice(&derived) {
        Ok(mut m) => {
            m.update(email.trim().to_lowercase().as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Byte ranges of `needle` (lowercase ASCII-folded) in `hay`, case-insensitively.
fn find_all(hay: &str, needle: &str) -> Vec<usize> {
    if needle.is_empty() {
        return Vec::new();
    }
    let lower = hay.to_ascii_lowercase();
    lower.match_indices(needle).map(|(i, _)| i).collect()
}

/// `hay` holds `needle` (already lowercase), ignoring ASCII case.
pub fn mentions(hay: &str, needle: &str) -> bool {
    !needle.is_empty() && hay.to_ascii_lowercase().contains(needle)
}

/// A Zoom ledger row's written values (`fields`), returned values (`vals`) and path
/// parameters (`params`), as JSON text, after forgetting `email`: the same on every backend.
pub struct ForgottenZoomRow {
    pub fields: String,
    pub vals: String,
    pub params: String,
}

/// Forgets `email` in one Zoom ledger row. A written row loses every written value (what
/// was sent is only kept to tell a change) and any parameter or returned value holding the
/// address; a pending row (a create whose answer was lost) keeps the values without the
/// address, so the next run can still find the earlier create. Its identity (key, Zoom id,
/// state) is not touched.
pub fn forget_in_zoom_row(
    state: &str,
    fields: &str,
    vals: &str,
    params: &str,
    email: &str,
) -> ForgottenZoomRow {
    use serde_json::{Map, Value};
    let parse = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap_or_default();
    let holds = |v: &Value| mentions(&v.to_string(), email);
    let forgotten = || Value::String(FORGOTTEN.into());
    let pending = state == "pending";
    let mut fields = parse(fields);
    let mut params = parse(params);
    if pending {
        fields.retain(|_, v| !holds(v));
        params.retain(|_, v| !holds(v));
    } else {
        fields.values_mut().for_each(|v| *v = forgotten());
        params
            .values_mut()
            .filter(|v| holds(v))
            .for_each(|v| *v = forgotten());
    }
    let mut vals = parse(vals);
    vals.values_mut()
        .filter(|v| holds(v))
        .for_each(|v| *v = forgotten());
    // Anything left (a value that could not be read as an object) goes as text.
    let enc = |m: Map<String, Value>| redact(&Value::Object(m).to_string(), email);
    ForgottenZoomRow {
        fields: enc(fields),
        vals: enc(vals),
        params: enc(params),
    }
}

/// `hay` with every occurrence of `needle` (any ASCII case) replaced by [`FORGOTTEN`].
pub fn redact(hay: &str, needle: &str) -> String {
    let hits = find_all(hay, needle);
    if hits.is_empty() {
        return hay.to_string();
    }
    let mut out = String::with_capacity(hay.len());
    let mut at = 0;
    for i in hits {
        if i < at {
            continue;
        }
        out.push_str(&hay[at..i]);
        out.push_str(FORGOTTEN);
        at = i + needle.len();
    }
    out.push_str(&hay[at..]);
    out
}

/// Whether `s` looks like an email address (one `@`, a dotted domain, no spaces or quotes,
/// at most 254 characters). Deliberately loose: the index errs towards recording.
pub fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    if s.len() < 3 || s.len() > 254 {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '<' || c == '>')
}

/// Other email addresses than `subject` in `text` (to tell a dead letter of one person from
/// one of several).
pub(super) fn holds_others(text: &str, subject: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || matches!(c, '"' | ',' | '[' | ']' | '{' | '}'))
        .map(|t| t.trim_matches(|c: char| c == ':' || c == ';' || c == '\''))
        .filter(|t| looks_like_email(t))
        .any(|t| !t.eq_ignore_ascii_case(subject))
}

pub(super) fn insert_subjects(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    records: &[IndexedRecord],
    now: &str,
) -> Result<()> {
    if records.iter().all(|r| r.subjects.is_empty()) {
        return Ok(());
    }
    let ctx = "write the subject index";
    let mut subject = tx
        .prepare_cached(
            "INSERT INTO subject_index (hash, pipeline, stream, record_key, role, record_time,
                                        updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (hash, pipeline, stream, record_key) DO UPDATE SET
               role = excluded.role, record_time = excluded.record_time,
               updated_at = excluded.updated_at",
        )
        .context(ctx)?;
    let mut write = tx
        .prepare_cached(
            "INSERT INTO synced_writes (pipeline, stream, record_key, sink, ledger_key, sobject,
                                        sf_id, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (pipeline, stream, record_key, sink, ledger_key) DO UPDATE SET
               sobject = excluded.sobject,
               sf_id = CASE WHEN excluded.sf_id <> '' THEN excluded.sf_id
                            ELSE synced_writes.sf_id END,
               updated_at = excluded.updated_at",
        )
        .context(ctx)?;
    for r in records {
        // A record without an address is nobody's: its writes are not needed.
        if r.subjects.is_empty() {
            continue;
        }
        for (hash, role) in &r.subjects {
            subject
                .execute(params![
                    hash,
                    pipeline,
                    r.stream,
                    r.record_key,
                    role,
                    r.record_time,
                    now
                ])
                .context(ctx)?;
        }
        for w in &r.writes {
            write
                .execute(params![
                    pipeline,
                    r.stream,
                    r.record_key,
                    w.sink,
                    w.ledger_key,
                    w.sobject,
                    w.sf_id,
                    now
                ])
                .context(ctx)?;
        }
    }
    Ok(())
}

/// Text columns of every table, as (table, column, without_rowid).
fn text_columns(conn: &rusqlite::Connection) -> Result<Vec<(String, String)>> {
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .context("list tables")?
        .query_map([], |r| r.get(0))
        .context("list tables")?
        .collect::<rusqlite::Result<_>>()
        .context("list tables")?;
    tables.sort();
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<(String, String)> = conn
            .prepare(&format!(
                "PRAGMA table_info(\"{}\")",
                t.replace('"', "\"\"")
            ))
            .context("list columns")?
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .context("list columns")?
            .collect::<rusqlite::Result<_>>()
            .context("list columns")?;
        for (c, ty) in cols {
            // Encrypted tokens (BLOB) cannot hold the address in clear text.
            if !ty.eq_ignore_ascii_case("BLOB") {
                out.push((t.clone(), c));
            }
        }
    }
    Ok(out)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Rows of every text column that still mention `email`, as `table.column: n`.
fn remaining(conn: &rusqlite::Connection, email: &str) -> Result<Vec<(String, String, u64)>> {
    let mut out = Vec::new();
    for (t, c) in text_columns(conn)? {
        let n: i64 = conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE instr(lower(CAST({} AS TEXT)), ?1) > 0",
                    quote(&t),
                    quote(&c)
                ),
                [email],
                |r| r.get(0),
            )
            .context(format!("search {t}.{c}"))?;
        if n > 0 {
            out.push((t, c, n.max(0) as u64));
        }
    }
    Ok(out)
}

/// Areas the scan and `forget` handle themselves (anything else found is reported as is).
pub(super) const HANDLED: &[(&str, &str)] = &[
    ("lookup_cache", "key"),
    ("lookup_cache", "value"),
    ("inbox", "payload"),
    ("inbox", "last_error"),
    ("dead_letters", "payload"),
    ("dead_letters", "error"),
    ("dead_letters", "key"),
    ("runs", "summary"),
    ("runs", "stopped"),
    ("labels", "label"),
    ("subject_index", "record_key"),
    ("synced_writes", "record_key"),
    ("synced_writes", "ledger_key"),
    ("zoom_ledger", "fields"),
    ("zoom_ledger", "vals"),
    ("zoom_ledger", "params"),
    ("zoom_deferrals", "key"),
    ("zoom_deferrals", "record"),
    ("zoom_deferrals", "reason"),
    ("zoom_deferrals", "resource"),
];

/// Why a ledger key made from the address stays (Salesforce's ledger or Zoom's).
pub(super) const LEDGER_KEY_KEPT: &str = "a ledger key made from the address: the pipeline's `key` \
     template uses it; removing it would make the next run write a duplicate";

/// Where the Zoom ledger's copies of an address can be (its key is the identity: kept).
const ZOOM_LEDGER_MENTIONS: &str = "instr(lower(fields), ?1) > 0 OR instr(lower(vals), ?1) > 0 \
     OR instr(lower(params), ?1) > 0";

/// A deferral that holds the address anywhere.
const DEFERRAL_MENTIONS: &str = "instr(lower(record), ?1) > 0 OR instr(lower(key), ?1) > 0 \
     OR instr(lower(resource), ?1) > 0 OR instr(lower(reason), ?1) > 0";

/// A Zoom object ferry made (or holds back) for an address, for the export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoomSubjectRow {
    pub pipeline: String,
    /// The Zoom object (`webinar_registrant`, `meeting`), or the sink of a deferral.
    pub object: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zoom_id: Option<String>,
    /// `written`, `pending`, `deleted`, or `waiting` for a deferral.
    pub state: String,
    /// What Zoom returned (ids, join link, topic, start), secrets never kept.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// The time of the row, or until when a deferral waits.
    pub at: DateTime<Utc>,
}

impl SqliteState {
    pub fn subject_hash(&self, email: &str) -> String {
        subject_hash(self.key(), email)
    }

    pub fn subject_index_find(&self, hash: &str) -> Result<Vec<SubjectEntry>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT s.hash, s.pipeline, s.stream, s.record_key, s.role, s.record_time,
                        coalesce(w.sink, ''), coalesce(w.sobject, ''), coalesce(w.sf_id, ''),
                        coalesce(w.ledger_key, '')
                 FROM subject_index s
                 LEFT JOIN synced_writes w ON w.pipeline = s.pipeline AND w.stream = s.stream
                                          AND w.record_key = s.record_key
                 WHERE s.hash = ?1
                 ORDER BY s.record_time, s.pipeline, s.stream, s.record_key, w.sink,
                          w.ledger_key",
            )
            .context("read the subject index")?;
        st.query_map([hash], |r| {
            Ok(SubjectEntry {
                hash: r.get(0)?,
                pipeline: r.get(1)?,
                stream: r.get(2)?,
                record_key: r.get(3)?,
                role: r.get(4)?,
                record_time: r.get(5)?,
                sink: r.get(6)?,
                sobject: r.get(7)?,
                sf_id: r.get(8)?,
                ledger_key: r.get(9)?,
            })
        })
        .context("read the subject index")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("read the subject index")
    }

    /// Every place of the state that holds `email` (lowercase) or its index `hash`, with what
    /// `forget` does there. Reads only.
    pub fn subject_scan(&self, email: &str, hash: &str) -> Result<Vec<SubjectHit>> {
        let conn = self.conn();
        scan(&conn, email, hash)
    }

    /// Removes `email` from the state (see [`ForgetReport`]), then clears free pages and the
    /// WAL, and writes an audit line (hash prefix and counts only) to the run history.
    pub fn subject_forget(&self, email: &str, hash: &str) -> Result<ForgetReport> {
        let now = self.now();
        let mut conn = self.conn();
        conn.pragma_update(None, "secure_delete", "ON")
            .context("turn on secure delete")?;
        let mut report = ForgetReport {
            hash_prefix: hash.chars().take(12).collect(),
            ..ForgetReport::default()
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context("begin forgetting")?;
        forget_in(&tx, email, hash, &mut report)?;
        let left = remaining(&tx, email)?;
        report.remaining = left
            .iter()
            .map(|(t, c, n)| {
                if t == "ledger" || t == "zoom_ledger" {
                    format!("{t}.{c}: {n} ({LEDGER_KEY_KEPT})")
                } else {
                    format!("{t}.{c}: {n}")
                }
            })
            .collect();
        audit(&tx, &report, now)?;
        tx.commit().context("commit forgetting")?;
        report.compacted = compact(&conn)?;
        Ok(report)
    }
}

fn scan(conn: &rusqlite::Connection, email: &str, hash: &str) -> Result<Vec<SubjectHit>> {
    let mut hits = Vec::new();
    let n_index: i64 = conn
        .query_row(
            "SELECT count(*) FROM subject_index WHERE hash = ?1",
            [hash],
            |r| r.get(0),
        )
        .context("read the subject index")?;
    if n_index > 0 {
        hits.push(SubjectHit {
            area: "subject index".into(),
            row: format!("{n_index} row(s)"),
            action: "delete".into(),
        });
    }
    if email.is_empty() {
        return Ok(hits);
    }
    // Record keys and ledger keys of the index that are made from the address.
    for (table, area, sql) in [
        (
            "subject_index",
            "subject index",
            "SELECT count(*) FROM subject_index WHERE instr(lower(record_key), ?1) > 0",
        ),
        (
            "synced_writes",
            "synced writes",
            "SELECT count(*) FROM synced_writes
             WHERE instr(lower(record_key), ?1) > 0 OR instr(lower(ledger_key), ?1) > 0",
        ),
    ] {
        let n: i64 = conn
            .query_row(sql, [email], |r| r.get(0))
            .context(format!("search {table}"))?;
        if n > 0 {
            hits.push(SubjectHit {
                area: area.into(),
                row: format!("{n} row(s) with a record or ledger key made from the address"),
                action: "redact".into(),
            });
        }
    }
    // Lookup cache: scope and how many entries (the key is the address itself).
    let mut st = conn
        .prepare(
            "SELECT scope, count(*) FROM lookup_cache
             WHERE instr(lower(key), ?1) > 0 OR instr(lower(value), ?1) > 0 GROUP BY scope",
        )
        .context("search the lookup cache")?;
    for row in st
        .query_map([email], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .context("search the lookup cache")?
    {
        let (scope, n) = row.context("search the lookup cache")?;
        hits.push(SubjectHit {
            area: "lookup cache".into(),
            row: format!("{scope}: {n} entr{}", if n == 1 { "y" } else { "ies" }),
            action: "delete".into(),
        });
    }
    let mut st = conn
        .prepare(
            "SELECT id, event, status, payload FROM inbox
             WHERE instr(lower(payload), ?1) > 0 OR instr(lower(coalesce(last_error, '')), ?1) > 0
             ORDER BY id",
        )
        .context("search the webhook inbox")?;
    for row in st
        .query_map([email], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .context("search the webhook inbox")?
    {
        let (id, event, status) = row.context("search the webhook inbox")?;
        // A pending event still has to run: its payload is redacted, not deleted.
        let action = if status == "pending" {
            "redact"
        } else {
            "delete"
        };
        hits.push(SubjectHit {
            area: "webhook inbox".into(),
            row: format!("#{id} {event} ({status})"),
            action: action.into(),
        });
    }
    let mut st = conn
        .prepare(
            "SELECT id, pipeline, sink, payload, error, key FROM dead_letters
             WHERE instr(lower(payload), ?1) > 0 OR instr(lower(error), ?1) > 0
                OR instr(lower(key), ?1) > 0
             ORDER BY id",
        )
        .context("search the dead letters")?;
    for row in st
        .query_map([email], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .context("search the dead letters")?
    {
        let (id, pipeline, sink, payload, error) = row.context("search the dead letters")?;
        let others = holds_others(&payload, email) || holds_others(&error, email);
        hits.push(SubjectHit {
            area: "dead letters".into(),
            row: format!("#{id} {pipeline}/{sink}"),
            action: if others {
                "redact (it holds other people too)".into()
            } else {
                "delete".into()
            },
        });
    }
    let mut st = conn
        .prepare(
            "SELECT run_id, pipeline FROM runs
             WHERE instr(lower(coalesce(summary, '')), ?1) > 0
                OR instr(lower(coalesce(stopped, '')), ?1) > 0
             ORDER BY started_at",
        )
        .context("search the run history")?;
    for row in st
        .query_map([email], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .context("search the run history")?
    {
        let (run, pipeline) = row.context("search the run history")?;
        hits.push(SubjectHit {
            area: "run history".into(),
            row: format!("{pipeline} run {run}"),
            action: "redact".into(),
        });
    }
    let mut st = conn
        .prepare(
            "SELECT scope, id FROM labels WHERE instr(lower(label), ?1) > 0 ORDER BY scope, id",
        )
        .context("search the labels")?;
    for row in st
        .query_map([email], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .context("search the labels")?
    {
        let (scope, id) = row.context("search the labels")?;
        hits.push(SubjectHit {
            area: "labels".into(),
            row: format!("{scope} {id}"),
            action: "delete".into(),
        });
    }
    // Zoom sinks' ledger: the written values go, the identity (key, Zoom id) stays.
    let mut st = conn
        .prepare(&format!(
            "SELECT pipeline, object, count(*) FROM zoom_ledger WHERE {ZOOM_LEDGER_MENTIONS}
             GROUP BY pipeline, object ORDER BY pipeline, object"
        ))
        .context("search the Zoom ledger")?;
    for row in st
        .query_map([email], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .context("search the Zoom ledger")?
    {
        let (pipeline, object, n) = row.context("search the Zoom ledger")?;
        hits.push(SubjectHit {
            area: "Zoom ledger".into(),
            row: format!("{pipeline}/{object}: {n} row(s)"),
            action: "redact (the values written to Zoom; the Zoom id stays, so the next run \
                     writes no duplicate)"
                .into(),
        });
    }
    let mut st = conn
        .prepare(&format!(
            "SELECT pipeline, sink, key, record FROM zoom_deferrals WHERE {DEFERRAL_MENTIONS}
             ORDER BY pipeline, sink, key"
        ))
        .context("search the deferrals")?;
    for row in st
        .query_map([email], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .context("search the deferrals")?
    {
        let (pipeline, sink, key, record) = row.context("search the deferrals")?;
        let action = if holds_others(&record, email) {
            "delete (it will not be written to Zoom; it holds other people too, whose \
             writes come back when the source record is read again)"
        } else {
            "delete (it will not be written to Zoom)"
        };
        hits.push(SubjectHit {
            area: "Zoom deferrals".into(),
            row: format!("{pipeline}/{sink} {}", redact(&key, email)),
            action: action.into(),
        });
    }
    for (t, c, n) in remaining(conn, email)? {
        if HANDLED.contains(&(t.as_str(), c.as_str())) {
            continue;
        }
        let action = if t == "ledger" || t == "zoom_ledger" {
            format!("keep ({LEDGER_KEY_KEPT})")
        } else {
            "keep (not a place ferry forgets in)".to_string()
        };
        hits.push(SubjectHit {
            area: format!("{t}.{c}"),
            row: format!("{n} row(s)"),
            action,
        });
    }
    Ok(hits)
}

fn forget_in(
    tx: &rusqlite::Transaction<'_>,
    email: &str,
    hash: &str,
    report: &mut ForgetReport,
) -> Result<()> {
    let ctx = "forget an address";
    // The records the address appeared in: once nobody else is indexed in one, the writes
    // kept for it go too.
    let records: Vec<(String, String, String)> = tx
        .prepare("SELECT pipeline, stream, record_key FROM subject_index WHERE hash = ?1")
        .context(ctx)?
        .query_map([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .context(ctx)?
        .collect::<rusqlite::Result<_>>()
        .context(ctx)?;
    let n = tx
        .execute("DELETE FROM subject_index WHERE hash = ?1", [hash])
        .context(ctx)?;
    report.deleted += n as u64;
    {
        let mut orphan = tx
            .prepare_cached(
                "DELETE FROM synced_writes
                 WHERE pipeline = ?1 AND stream = ?2 AND record_key = ?3
                   AND NOT EXISTS (SELECT 1 FROM subject_index
                                   WHERE pipeline = ?1 AND stream = ?2 AND record_key = ?3)",
            )
            .context(ctx)?;
        for (pipeline, stream, key) in &records {
            let n = orphan
                .execute(params![pipeline, stream, key])
                .context(ctx)?;
            report.deleted += n as u64;
        }
    }
    if email.is_empty() {
        return Ok(());
    }
    // Others' index rows whose record key is made from the address keep their record under
    // a redacted key (the same in both tables, so they still join).
    let rows: Vec<(String, String, String, String)> = tx
        .prepare(
            "SELECT hash, pipeline, stream, record_key FROM subject_index
             WHERE instr(lower(record_key), ?1) > 0",
        )
        .context(ctx)?
        .query_map([email], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .context(ctx)?
        .collect::<rusqlite::Result<_>>()
        .context(ctx)?;
    for (h, pipeline, stream, key) in rows {
        tx.execute(
            "UPDATE OR REPLACE subject_index SET record_key = ?5
             WHERE hash = ?1 AND pipeline = ?2 AND stream = ?3 AND record_key = ?4",
            params![h, pipeline, stream, key, redact(&key, email)],
        )
        .context(ctx)?;
        report.redacted += 1;
    }
    let rows: Vec<(String, String, String, String, String)> = tx
        .prepare(
            "SELECT pipeline, stream, record_key, sink, ledger_key FROM synced_writes
             WHERE instr(lower(record_key), ?1) > 0 OR instr(lower(ledger_key), ?1) > 0",
        )
        .context(ctx)?
        .query_map([email], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .context(ctx)?
        .collect::<rusqlite::Result<_>>()
        .context(ctx)?;
    for (pipeline, stream, key, sink, ledger_key) in rows {
        tx.execute(
            "UPDATE OR REPLACE synced_writes SET record_key = ?6, ledger_key = ?7
             WHERE pipeline = ?1 AND stream = ?2 AND record_key = ?3 AND sink = ?4
               AND ledger_key = ?5",
            params![
                pipeline,
                stream,
                key,
                sink,
                ledger_key,
                redact(&key, email),
                redact(&ledger_key, email)
            ],
        )
        .context(ctx)?;
        report.redacted += 1;
    }
    let n = tx
        .execute(
            "DELETE FROM lookup_cache WHERE instr(lower(key), ?1) > 0 OR instr(lower(value), ?1) > 0",
            [email],
        )
        .context(ctx)?;
    report.deleted += n as u64;
    let n = tx
        .execute(
            "DELETE FROM labels WHERE instr(lower(label), ?1) > 0",
            [email],
        )
        .context(ctx)?;
    report.deleted += n as u64;
    // Webhook inbox: finished events go; pending ones keep running without the address.
    let rows: Vec<(i64, String, String, Option<String>)> = tx
        .prepare(
            "SELECT id, status, payload, last_error FROM inbox
             WHERE instr(lower(payload), ?1) > 0 OR instr(lower(coalesce(last_error, '')), ?1) > 0",
        )
        .context(ctx)?
        .query_map([email], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .context(ctx)?
        .collect::<rusqlite::Result<_>>()
        .context(ctx)?;
    for (id, status, payload, last_error) in rows {
        if status == "pending" {
            tx.execute(
                "UPDATE inbox SET payload = ?2, last_error = ?3 WHERE id = ?1",
                params![
                    id,
                    redact(&payload, email),
                    last_error.map(|e| redact(&e, email))
                ],
            )
            .context(ctx)?;
            report.redacted += 1;
        } else {
            tx.execute("DELETE FROM inbox WHERE id = ?1", [id])
                .context(ctx)?;
            report.deleted += 1;
        }
    }
    // Dead letters: one person's go, several people's are redacted.
    let rows: Vec<(i64, String, String, String)> = tx
        .prepare(
            "SELECT id, payload, error, key FROM dead_letters
             WHERE instr(lower(payload), ?1) > 0 OR instr(lower(error), ?1) > 0
                OR instr(lower(key), ?1) > 0",
        )
        .context(ctx)?
        .query_map([email], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .context(ctx)?
        .collect::<rusqlite::Result<_>>()
        .context(ctx)?;
    for (id, payload, error, key) in rows {
        if holds_others(&payload, email) || holds_others(&error, email) {
            tx.execute(
                "UPDATE dead_letters SET payload = ?2, error = ?3, key = ?4 WHERE id = ?1",
                params![
                    id,
                    redact(&payload, email),
                    redact(&error, email),
                    redact(&key, email)
                ],
            )
            .context(ctx)?;
            report.redacted += 1;
        } else {
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])
                .context(ctx)?;
            report.deleted += 1;
        }
    }
    // Run history: the runs stay, the address goes from their text.
    let rows: Vec<(String, Option<String>, Option<String>)> = tx
        .prepare(
            "SELECT run_id, summary, stopped FROM runs
             WHERE instr(lower(coalesce(summary, '')), ?1) > 0
                OR instr(lower(coalesce(stopped, '')), ?1) > 0",
        )
        .context(ctx)?
        .query_map([email], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .context(ctx)?
        .collect::<rusqlite::Result<_>>()
        .context(ctx)?;
    for (run, summary, stopped) in rows {
        tx.execute(
            "UPDATE runs SET summary = ?2, stopped = ?3 WHERE run_id = ?1",
            params![
                run,
                summary.map(|s| redact(&s, email)),
                stopped.map(|s| redact(&s, email))
            ],
        )
        .context(ctx)?;
        report.redacted += 1;
    }
    forget_zoom(tx, email, report)
}

/// The Zoom sinks' state: a ledger row that holds the address keeps its identity (pipeline,
/// object, key, Zoom id, state and the hash of what was written, so the next run sees the
/// object as written and writes no duplicate) and loses its copies: every value written is
/// replaced by [`FORGOTTEN`], the address in what Zoom returned and in the params too. A
/// pending row's values and params that held the address are removed instead, so the
/// lookup of its lost create uses the source record's values. A deferral that holds the
/// address is deleted: it is not written to Zoom.
fn forget_zoom(
    tx: &rusqlite::Transaction<'_>,
    email: &str,
    report: &mut ForgetReport,
) -> Result<()> {
    let ctx = "forget an address in the Zoom ledger";
    let rows: Vec<(String, String, String, String, String, String, String)> = tx
        .prepare(&format!(
            "SELECT pipeline, object, key, state, fields, vals, params FROM zoom_ledger
             WHERE {ZOOM_LEDGER_MENTIONS}"
        ))
        .context(ctx)?
        .query_map([email], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .context(ctx)?
        .collect::<rusqlite::Result<_>>()
        .context(ctx)?;
    for (pipeline, object, key, state, fields, vals, params) in rows {
        let f = forget_in_zoom_row(&state, &fields, &vals, &params, email);
        tx.execute(
            "UPDATE zoom_ledger SET fields = ?4, vals = ?5, params = ?6
             WHERE pipeline = ?1 AND object = ?2 AND key = ?3",
            params![pipeline, object, key, f.fields, f.vals, f.params],
        )
        .context(ctx)?;
        report.redacted += 1;
    }
    let n = tx
        .execute(
            &format!("DELETE FROM zoom_deferrals WHERE {DEFERRAL_MENTIONS}"),
            [email],
        )
        .context("forget an address in the deferrals")?;
    report.deleted += n as u64;
    Ok(())
}

impl SqliteState {
    /// The Zoom objects ferry made for `email` (Zoom ledger rows that hold it) and the
    /// writes that wait for a daily limit (deferrals that hold it). Reads only.
    pub fn subject_zoom(&self, email: &str) -> Result<Vec<ZoomSubjectRow>> {
        use super::ts_col;
        if email.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        let ctx = "read the Zoom ledger";
        let mut out: Vec<ZoomSubjectRow> = conn
            .prepare(&format!(
                "SELECT pipeline, object, key, zoom_id, state, vals, updated_at FROM zoom_ledger
                 WHERE {ZOOM_LEDGER_MENTIONS} ORDER BY pipeline, object, key"
            ))
            .context(ctx)?
            .query_map([email], |r| {
                let vals: String = r.get(5)?;
                Ok(ZoomSubjectRow {
                    pipeline: r.get(0)?,
                    object: r.get(1)?,
                    key: r.get(2)?,
                    zoom_id: r.get(3)?,
                    state: r.get(4)?,
                    values: serde_json::from_str(&vals).unwrap_or_default(),
                    at: ts_col(r, 6)?,
                })
            })
            .context(ctx)?
            .collect::<rusqlite::Result<_>>()
            .context(ctx)?;
        let ctx = "read the deferrals";
        let waiting: Vec<ZoomSubjectRow> = conn
            .prepare(&format!(
                "SELECT pipeline, sink, key, not_before FROM zoom_deferrals
                 WHERE {DEFERRAL_MENTIONS} ORDER BY pipeline, sink, key"
            ))
            .context(ctx)?
            .query_map([email], |r| {
                Ok(ZoomSubjectRow {
                    pipeline: r.get(0)?,
                    object: r.get(1)?,
                    key: r.get(2)?,
                    zoom_id: None,
                    state: "waiting".into(),
                    values: serde_json::Map::new(),
                    at: ts_col(r, 3)?,
                })
            })
            .context(ctx)?
            .collect::<rusqlite::Result<_>>()
            .context(ctx)?;
        out.extend(waiting);
        Ok(out)
    }
}

/// The audit line: a run of [`AUDIT_PIPELINE`] whose summary names the hash prefix and the
/// counts, never the address.
fn audit(tx: &rusqlite::Transaction<'_>, report: &ForgetReport, now: DateTime<Utc>) -> Result<()> {
    let at = fmt_ts(now);
    let mut run_id = format!("forget-{}-{}", now.timestamp_millis(), report.hash_prefix);
    // Two forgets of one address in one millisecond get distinct ids.
    let taken: Option<i64> = tx
        .query_row("SELECT 1 FROM runs WHERE run_id = ?1", [&run_id], |r| {
            r.get(0)
        })
        .optional()
        .context("write the audit line")?;
    if taken.is_some() {
        run_id.push_str(&format!("-{}", rand::random::<u32>()));
    }
    let summary = serde_json::json!({
        "audit": format!(
            "ferry subject forget: subject hash {}…: {} row(s) deleted, {} redacted, {} left",
            report.hash_prefix, report.deleted, report.redacted, report.remaining.len()
        ),
        "subject_hash_prefix": report.hash_prefix,
        "deleted": report.deleted,
        "redacted": report.redacted,
        "remaining": report.remaining.len(),
    });
    tx.execute(
        "INSERT INTO runs (run_id, pipeline, started_at, finished_at, ok, summary, trigger)
         VALUES (?1, ?2, ?3, ?3, 1, ?4, 'ferry subject forget')",
        params![run_id, AUDIT_PIPELINE, at, summary.to_string()],
    )
    .context("write the audit line")?;
    Ok(())
}

/// Clears what deleted rows leave behind: the WAL is checkpointed and truncated, the file
/// rebuilt (VACUUM, with secure delete on), and the WAL truncated again. False when another
/// process's open read kept the WAL from being truncated.
fn compact(conn: &rusqlite::Connection) -> Result<bool> {
    let checkpoint = |conn: &rusqlite::Connection| -> Result<bool> {
        let row: Option<(i64, i64, i64)> = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .context("checkpoint the WAL")?;
        // (busy, frames in the WAL, frames checkpointed); busy = 1 when a reader blocked it.
        Ok(row.is_none_or(|(busy, _, _)| busy == 0))
    };
    let first = checkpoint(conn)?;
    conn.execute_batch("VACUUM")
        .context("vacuum the state file")?;
    let second = checkpoint(conn)?;
    Ok(first && second)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::report::{RecordReport, WriteAction};
    use crate::privacy::index::testing::meeting;
    use crate::privacy::index::{BatchHasher, rows_for};
    use crate::state::BatchCommit;
    use serde_json::{Value, json};

    fn count(state: &SqliteState, table: &str) -> i64 {
        state
            .conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn commit(state: &SqliteState, records: &[(Value, RecordReport)]) {
        let hash = |e: &str| state.subject_hash(e);
        let mut hasher = BatchHasher::new(&hash);
        let batch = BatchCommit {
            pipeline: "meetings".into(),
            subjects: records
                .iter()
                .filter_map(|(v, r)| rows_for(v, r, &mut hasher))
                .collect(),
            ..BatchCommit::default()
        };
        state.commit_batch_fenced(&batch, None).unwrap();
    }

    #[test]
    fn a_meeting_of_50_stores_rows_linear_in_its_participants() {
        let state = SqliteState::in_memory().unwrap();
        let (v, r) = meeting("m1", "host@acme.com", 50);
        commit(&state, &[(v.clone(), r.clone())]);
        let index = count(&state, "subject_index");
        let writes = count(&state, "synced_writes");
        // 51 addresses (host + 50), 51 writes (Event + 50 EventRelations): 102 rows, where
        // one row per (address, write) would be 51 × 51 = 2,601.
        assert_eq!(index, 51);
        assert_eq!(writes, 51);
        assert!(index + writes <= 2 * 50 + 50 + 3, "{index} + {writes}");
        // Committing the same record again (a rerun) adds nothing.
        commit(&state, &[(v, r)]);
        assert_eq!(
            count(&state, "subject_index") + count(&state, "synced_writes"),
            102
        );
        // The export's join still gives a participant the Event and every relation.
        let rows = state
            .subject_index_find(&state.subject_hash("P7@Contoso.com"))
            .unwrap();
        assert_eq!(rows.len(), 51);
        assert!(rows.iter().all(|e| e.record_key == "m1"
            && e.role == "participants.user_email"
            && e.record_time == "2024-05-01T10:00:00Z"));
        assert!(
            rows.iter()
                .any(|e| e.sobject == "Event" && e.sf_id == "00Um1")
        );
    }

    #[test]
    fn records_without_addresses_or_writes_store_nothing_extra() {
        let state = SqliteState::in_memory().unwrap();
        let hash = |e: &str| state.subject_hash(e);
        let mut hasher = BatchHasher::new(&hash);
        let (mut v, r) = meeting("m1", "host@acme.com", 3);
        v["participants"] = json!([]);
        v["host_email"] = json!("nobody");
        assert!(rows_for(&v, &r, &mut hasher).is_none());
        // Skipped and failed writes (or writes without an Id) are not recorded.
        let (v, mut r) = meeting("m2", "host@acme.com", 2);
        r.writes[1].action = WriteAction::Skip;
        r.writes[2].id = None;
        let rec = rows_for(&v, &r, &mut hasher).unwrap();
        assert_eq!(rec.writes.len(), 1);
        assert_eq!(rec.subjects.len(), 3);
    }

    #[test]
    fn forget_removes_the_address_from_both_tables_and_keeps_others_joined() {
        let state = SqliteState::in_memory().unwrap();
        // m1: host + p0, p1; m2: only p1 (as host).
        let m1 = meeting("m1", "host@acme.com", 2);
        let (mut v2, mut r2) = meeting("m2", "p1@contoso.com", 0);
        v2["participants"] = json!([]);
        r2.writes.truncate(1);
        commit(&state, &[m1, (v2, r2)]);
        assert_eq!(count(&state, "synced_writes"), 4);
        let email = "p1@contoso.com";
        let h = state.subject_hash(email);
        let scan = state.subject_scan(email, &h).unwrap();
        assert!(
            scan.iter()
                .any(|s| s.area == "synced writes" && s.action == "redact"),
            "{scan:?}"
        );
        let report = state.subject_forget(email, &h).unwrap();
        assert!(report.remaining.is_empty(), "{:?}", report.remaining);
        // Their rows and m2's write (nobody else is indexed there) are gone; m1's relation
        // key made from the address is redacted.
        assert!(state.subject_index_find(&h).unwrap().is_empty());
        assert_eq!(count(&state, "synced_writes"), 3);
        let n: i64 = state
            .conn()
            .query_row(
                "SELECT count(*) FROM synced_writes WHERE instr(lower(ledger_key), ?1) > 0
                 OR instr(lower(record_key), ?1) > 0",
                [email],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
        // The others still see m1's Event and all three relations (one redacted).
        let rows = state
            .subject_index_find(&state.subject_hash("p0@contoso.com"))
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().any(|e| e.ledger_key == "m1|[forgotten]"));
    }

    #[test]
    fn forget_redacts_the_zoom_ledger_keeps_its_identity_and_drops_deferrals() {
        use crate::state::{Deferral, ZoomLedgerRow, ZoomRowState};
        let state = SqliteState::in_memory().unwrap();
        let now = state.now();
        let obj = |v: Value| v.as_object().unwrap().clone();
        let row = |key: &str, email: &str, st: ZoomRowState| ZoomLedgerRow {
            key: key.into(),
            zoom_id: (st != ZoomRowState::Pending).then(|| format!("reg-{key}")),
            values: obj(json!({"id": 811, "registrant_id": format!("reg-{key}"),
                "join_url": format!("https://zoom.us/w/811?tk={key}")})),
            hash: format!("hash-{key}"),
            fields: obj(json!({"email": email, "first_name": "Pat", "last_name": "Lee"})),
            params: obj(json!({"webinar_id": "811"})),
            state: st,
            updated_at: now,
        };
        state
            .zoom_ledger_put(
                "cm-to-webinar",
                "webinar_registrant",
                &[
                    row("00v1", "Pat@Contoso.com", ZoomRowState::Written),
                    row("00v2", "pat@contoso.com", ZoomRowState::Pending),
                    row("00v3", "sam@contoso.com", ZoomRowState::Written),
                ],
            )
            .unwrap();
        let d = |key: &str, email: &str| Deferral {
            pipeline: "cm-to-webinar".into(),
            sink: "registrant".into(),
            key: key.into(),
            record: json!({"Id": key, "Email": email}),
            reason: "daily limit".into(),
            resource: format!("registrant:811:{email}"),
            not_before: now,
            deferred_at: now,
        };
        state
            .zoom_defer(&[d("00v4", "pat@contoso.com"), d("00v5", "sam@contoso.com")])
            .unwrap();
        let email = "pat@contoso.com";
        let found = state.subject_zoom(email).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found
                .iter()
                .any(|r| r.zoom_id.as_deref() == Some("reg-00v1"))
        );
        assert!(
            found
                .iter()
                .any(|r| r.state == "waiting" && r.key == "00v4")
        );
        let h = state.subject_hash(email);
        let scan = state.subject_scan(email, &h).unwrap();
        assert!(scan.iter().any(|s| s.area == "Zoom ledger"), "{scan:?}");
        assert!(scan.iter().any(|s| s.area == "Zoom deferrals"), "{scan:?}");
        assert!(
            !scan.iter().any(|s| s.action.starts_with("keep")),
            "{scan:?}"
        );
        let report = state.subject_forget(email, &h).unwrap();
        assert!(report.remaining.is_empty(), "{:?}", report.remaining);
        assert!(state.subject_zoom(email).unwrap().is_empty());
        // The identity stays: the next run sees each registrant as written (or pending).
        let keys: Vec<String> = ["00v1", "00v2", "00v3"].map(String::from).to_vec();
        let rows = state
            .zoom_ledger_get("cm-to-webinar", "webinar_registrant", &keys)
            .unwrap();
        let r1 = &rows["00v1"];
        assert_eq!(r1.zoom_id.as_deref(), Some("reg-00v1"));
        assert_eq!(r1.hash, "hash-00v1");
        assert_eq!(r1.state, ZoomRowState::Written);
        assert!(r1.fields.values().all(|v| v == FORGOTTEN), "{r1:?}");
        assert_eq!(r1.values["registrant_id"], "reg-00v1");
        // A pending row loses the address (its lookup uses the record's), keeps the rest.
        let r2 = &rows["00v2"];
        assert_eq!(r2.state, ZoomRowState::Pending);
        assert!(!r2.fields.contains_key("email"));
        assert_eq!(r2.fields["first_name"], "Pat");
        // Someone else's row and deferral are untouched.
        assert_eq!(rows["00v3"].fields["email"], "sam@contoso.com");
        let left = state.zoom_deferrals(None).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].key, "00v5");
    }

    #[test]
    fn redaction_is_case_insensitive_and_total() {
        let t = r#"{"a":"Pat@Contoso.com","b":["x pat@contoso.COM y"]}"#;
        let r = redact(t, "pat@contoso.com");
        assert!(!mentions(&r, "pat@contoso.com"));
        assert_eq!(r.matches(FORGOTTEN).count(), 2);
        assert!(serde_json::from_str::<serde_json::Value>(&r).is_ok());
    }

    #[test]
    fn others_are_told_apart() {
        assert!(!holds_others(
            r#"{"e":"pat@contoso.com"}"#,
            "pat@contoso.com"
        ));
        assert!(holds_others(
            r#"{"e":"pat@contoso.com","f":"sam@acme.com"}"#,
            "pat@contoso.com"
        ));
    }

    #[test]
    fn the_hash_is_keyed_and_ignores_case() {
        let k1 = StateKey::from_bytes([1; 32]);
        let k2 = StateKey::from_bytes([2; 32]);
        let h = subject_hash(&k1, "Pat@Contoso.com ");
        assert_eq!(h, subject_hash(&k1, "pat@contoso.com"));
        assert_ne!(h, subject_hash(&k2, "pat@contoso.com"));
        assert_eq!(h.len(), 64);
        assert!(!h.contains("pat"));
    }
}
