//! `ferry subject export`: everything Zoom and ferry hold about one email address, as one
//! JSON document (a section per source, with counts, the dates covered and any failure with
//! its reason), with the credentials inside Zoom's data redacted.

use crate::connectors::zoom::subject::subject_streams;
use crate::connectors::zoom::{ZoomConnector, ZoomError};
use crate::state::{Store, SubjectEntry, SubjectHit, ZoomSubjectRow};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// What replaces a credential in the export.
pub const REDACTED: &str = "[redacted]";

/// One section of the export.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub section: String,
    pub source: String,
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why the section could not be read (the rest of the export stands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub records: Vec<Value>,
}

/// The whole export.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    pub subject: String,
    pub generated_at: String,
    /// Whether the address is a Zoom user of the connected account (None: Zoom not asked or
    /// the lookup failed).
    pub zoom_user: Option<bool>,
    pub sections: Vec<Section>,
    pub notes: Vec<String>,
}

/// Removes credentials from Zoom's data: passwords and passcodes, `start_url`, tokens, and
/// `access_token`/`pwd`/`tk` parameters of URLs (download links, join links).
pub fn redact_credentials(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                let key = k.to_ascii_lowercase();
                let secret = key.contains("password")
                    || key.contains("passcode")
                    || key == "pwd"
                    || key.contains("token")
                    || key == "start_url"
                    || key.ends_with("_secret");
                if secret && !matches!(x, Value::Null | Value::Bool(_) | Value::Object(_)) {
                    if x.as_str().is_some_and(str::is_empty) {
                        continue;
                    }
                    *x = Value::String(REDACTED.into());
                } else {
                    redact_credentials(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_credentials),
        Value::String(s)
            if s.contains('?') && (s.starts_with("https://") || s.starts_with("http://")) =>
        {
            *s = strip_url_secrets(s);
        }
        _ => {}
    }
}

fn strip_url_secrets(s: &str) -> String {
    let Ok(mut u) = url::Url::parse(s) else {
        return s.to_string();
    };
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            if lower.contains("token") || lower == "pwd" || lower == "tk" || lower.contains("pass")
            {
                (k.into_owned(), REDACTED.to_string())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// Reads Zoom's per-user streams for `email` (when a connector is given) and ferry's own
/// records. `progress` is told each section's name as it starts.
pub async fn export(
    email: &str,
    zoom: Option<Result<&ZoomConnector, String>>,
    store: &Store,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    progress: &dyn Fn(&str),
) -> Export {
    let email = email.trim().to_lowercase();
    let mut out = Export {
        subject: email.clone(),
        generated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        zoom_user: None,
        sections: Vec::new(),
        notes: vec![
            "ferry never deletes or changes anything in Zoom or Salesforce; this export only reads.".into(),
            "Zoom cannot search for a participant across meetings: the `synced records` section \
             lists the records ferry synced in which the address appeared."
                .into(),
        ],
    };
    match zoom {
        None => out
            .notes
            .push("no Zoom connection: Zoom was not asked".into()),
        Some(Err(why)) => out.sections.push(failed("Zoom user", "zoom.users", why)),
        Some(Ok(conn)) => zoom_sections(&mut out, conn, &email, since, now, progress).await,
    }
    progress("ferry's records");
    ferry_sections(&mut out, store, &email).await;
    out
}

fn failed(section: &str, source: &str, why: String) -> Section {
    Section {
        section: section.into(),
        source: source.into(),
        count: 0,
        from: None,
        to: None,
        note: None,
        error: Some(why),
        records: Vec::new(),
    }
}

async fn zoom_sections(
    out: &mut Export,
    conn: &ZoomConnector,
    email: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    progress: &dyn Fn(&str),
) {
    progress("Zoom user");
    let user = match conn.find_user(email).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            out.zoom_user = Some(false);
            out.notes.push(
                "not a Zoom user of this account: Zoom holds no profile, settings, meetings, \
                 recordings or calls of theirs that the account can list; where they joined \
                 meetings as a participant, see `synced records`."
                    .into(),
            );
            return;
        }
        Err(e) => {
            out.sections
                .push(failed("Zoom user", "zoom.users", zoom_reason(&e)));
            return;
        }
    };
    out.zoom_user = Some(true);
    let Some(user_id) = user.get("id").and_then(Value::as_str).map(str::to_string) else {
        out.sections.push(failed(
            "Zoom user",
            "zoom.users",
            "Zoom's answer for the user has no id".into(),
        ));
        return;
    };
    for (def, sub) in subject_streams() {
        progress(&sub.section);
        let source = format!("zoom.{}", def.name);
        match conn.read_for_subject(&def.name, &user_id, since, now).await {
            Ok(r) => {
                let mut records = r.records;
                records.iter_mut().for_each(redact_credentials);
                let mut note = Vec::new();
                if r.clamped {
                    note.push(format!(
                        "Zoom answers this back {} days only; earlier ones cannot be read",
                        sub.horizon_days.unwrap_or_default()
                    ));
                }
                if r.no_data {
                    note.push("Zoom has no data of this kind for the user".to_string());
                }
                out.sections.push(Section {
                    section: sub.section.clone(),
                    source,
                    count: records.len(),
                    from: r.from.map(|d| d.to_string()),
                    to: r.to.map(|d| d.to_string()),
                    note: (!note.is_empty()).then(|| note.join("; ")),
                    error: None,
                    records,
                });
            }
            Err(e) => out
                .sections
                .push(failed(&sub.section, &source, zoom_reason(&e))),
        }
    }
}

/// A Zoom failure in words (the error texts carry no credentials: tokens never reach them).
fn zoom_reason(e: &ZoomError) -> String {
    e.to_string()
}

async fn ferry_sections(out: &mut Export, store: &Store, email: &str) {
    let hash = store.subject_hash(email);
    let indexed = match store.subject_index_find(&hash).await {
        Ok(rows) => {
            out.sections.push(synced_section(&rows));
            out.sections.push(salesforce_section(&rows));
            rows
        }
        Err(e) => {
            out.sections.push(failed(
                "synced records",
                "ferry subject index",
                e.to_string(),
            ));
            Vec::new()
        }
    };
    match store.subject_zoom(email).await {
        Ok(rows) => out.sections.push(zoom_made_section(&rows, &indexed)),
        Err(e) => out
            .sections
            .push(failed(ZOOM_MADE, "ferry Zoom ledger", e.to_string())),
    }
    match store.subject_scan(email, &hash).await {
        Ok(hits) => out.sections.push(state_section(&hits)),
        Err(e) => out
            .sections
            .push(failed("ferry's own state", "ferry state", e.to_string())),
    }
}

fn synced_section(rows: &[SubjectEntry]) -> Section {
    // One record per synced source record: where the address was, and when.
    let mut records: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        if seen.insert((r.pipeline.clone(), r.stream.clone(), r.record_key.clone())) {
            records.push(
                json!({"pipeline": r.pipeline, "stream": r.stream, "record_key": r.record_key,
                "as": r.role, "time": r.record_time}),
            );
        }
    }
    let times: Vec<&str> = rows
        .iter()
        .map(|r| r.record_time.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    Section {
        section: "synced records".into(),
        source: "ferry subject index".into(),
        count: records.len(),
        from: times.iter().min().map(|t| t.to_string()),
        to: times.iter().max().map(|t| t.to_string()),
        note: Some(
            "records ferry synced (since the index began) in which the address appeared: as a \
             participant, registrant, host or lookup key"
                .into(),
        ),
        error: None,
        records,
    }
}

fn salesforce_section(rows: &[SubjectEntry]) -> Section {
    let mut records: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // Zoom sinks' writes (`zoom:OBJECT`) have their own section.
    for r in rows
        .iter()
        .filter(|r| !r.sf_id.is_empty() && !r.sobject.starts_with("zoom:"))
    {
        if seen.insert((r.sobject.clone(), r.sf_id.clone())) {
            let mut m = Map::new();
            m.insert("sobject".into(), json!(r.sobject));
            m.insert("id".into(), json!(r.sf_id));
            m.insert("pipeline".into(), json!(r.pipeline));
            m.insert("sink".into(), json!(r.sink));
            m.insert(
                "for_record".into(),
                json!(format!("{} {}", r.stream, r.record_key)),
            );
            records.push(Value::Object(m));
        }
    }
    Section {
        section: "Salesforce records ferry wrote".into(),
        source: "ferry ledger (via the subject index)".into(),
        count: records.len(),
        from: None,
        to: None,
        note: Some(
            "Events, EventRelations, Tasks, CampaignMembers and other records ferry wrote for \
             the synced records above; their content lives in Salesforce"
                .into(),
        ),
        error: None,
        records,
    }
}

/// The name of the section of Zoom objects ferry made.
pub const ZOOM_MADE: &str = "Zoom records ferry made";

/// The Zoom registrations, meetings and other objects ferry's Zoom sinks made for the
/// address (ledger rows that hold it, and those written for a synced record it appeared in),
/// with their Zoom ids and what Zoom returned (credentials redacted), and the writes for it
/// that wait for a daily limit.
fn zoom_made_section(rows: &[ZoomSubjectRow], indexed: &[SubjectEntry]) -> Section {
    let mut records: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        if let Some(id) = &r.zoom_id {
            seen.insert((r.object.clone(), id.clone()));
        }
        let mut values = Value::Object(r.values.clone());
        redact_credentials(&mut values);
        let mut m = Map::new();
        m.insert("object".into(), json!(r.object));
        m.insert("pipeline".into(), json!(r.pipeline));
        m.insert("key".into(), json!(r.key));
        if let Some(id) = &r.zoom_id {
            m.insert("zoom_id".into(), json!(id));
        }
        m.insert("state".into(), json!(r.state));
        let at = r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if r.state == "waiting" {
            m.insert("waits_until".into(), json!(at));
        } else {
            m.insert("updated_at".into(), json!(at));
            m.insert("values".into(), values);
        }
        records.push(Value::Object(m));
    }
    for r in indexed.iter().filter(|r| !r.sf_id.is_empty()) {
        let Some(object) = r.sobject.strip_prefix("zoom:") else {
            continue;
        };
        if seen.insert((object.to_string(), r.sf_id.clone())) {
            records.push(
                json!({"object": object, "pipeline": r.pipeline, "key": r.ledger_key,
                "zoom_id": r.sf_id, "state": "written",
                "for_record": format!("{} {}", r.stream, r.record_key)}),
            );
        }
    }
    Section {
        section: ZOOM_MADE.into(),
        source: "ferry Zoom ledger and deferrals".into(),
        count: records.len(),
        from: None,
        to: None,
        note: Some(
            "registrations, meetings and other Zoom objects ferry's Zoom sinks made for the \
             address (by Zoom id; start links and passcodes are never kept), and writes that \
             wait for a Zoom daily limit; their content lives in Zoom"
                .into(),
        ),
        error: None,
        records,
    }
}

fn state_section(hits: &[SubjectHit]) -> Section {
    Section {
        section: "ferry's own state".into(),
        source: "ferry state".into(),
        count: hits.len(),
        from: None,
        to: None,
        note: Some(
            "where ferry's state file holds the address (lookup cache, webhook inbox, dead \
             letters, run history, labels, Zoom ledger and deferrals); `ferry subject forget` \
             removes it"
                .into(),
        ),
        error: None,
        records: hits
            .iter()
            .map(|h| json!({"area": h.area, "row": h.row}))
            .collect(),
    }
}

/// The export as a readable summary.
pub fn text(e: &Export) -> String {
    let mut s = format!("Privacy export for {} ({})\n", e.subject, e.generated_at);
    match e.zoom_user {
        Some(true) => s.push_str("Zoom: a user of this account\n"),
        Some(false) => s.push_str("Zoom: not a user of this account\n"),
        None => s.push_str("Zoom: not asked or not reachable\n"),
    }
    for sec in &e.sections {
        let span = match (&sec.from, &sec.to) {
            (Some(f), Some(t)) => format!(" ({f} to {t})"),
            _ => String::new(),
        };
        match &sec.error {
            Some(err) => s.push_str(&format!("  {:<32} FAILED: {err}\n", sec.section)),
            None => s.push_str(&format!("  {:<32} {:>5}{span}\n", sec.section, sec.count)),
        }
        if let Some(n) = &sec.note
            && sec.error.is_none()
            && sec.count == 0
        {
            s.push_str(&format!("  {:<32}       {n}\n", ""));
        }
    }
    for n in &e.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let mut v = json!({"password": "abc123", "start_url": "https://zoom.us/s/1?zak=x",
            "recording_play_passcode": "p", "empty_password": "",
            "files": [{"download_url": "https://zoom.us/rec/download/x?access_token=SECRET&x=1"}],
            "join_url": "https://zoom.us/j/1?pwd=PWD", "topic": "t"});
        redact_credentials(&mut v);
        let s = v.to_string();
        for secret in ["abc123", "zak=x", "SECRET", "PWD", "\"p\""] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert_eq!(v["topic"], "t");
        assert_eq!(v["empty_password"], "");
        assert!(s.contains("x=1"));
    }
}
