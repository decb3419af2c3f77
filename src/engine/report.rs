//! What a run or a plan did, per record and in sum, and its three renderings (text, JSON,
//! markdown). The JSON form is stable for scripts and CI.

use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteAction {
    Create,
    Update,
    Unchanged,
    Skip,
    Error,
    /// A Zoom object deleted (or already gone).
    Delete,
    /// Held back by a daily limit until it resets (kept in the state, retried first).
    Waiting,
}

impl WriteAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteAction::Create => "create",
            WriteAction::Update => "update",
            WriteAction::Unchanged => "unchanged",
            WriteAction::Skip => "skip",
            WriteAction::Error => "error",
            WriteAction::Delete => "delete",
            WriteAction::Waiting => "waiting",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WriteReport {
    pub sink: String,
    pub sobject: String,
    pub action: WriteAction,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For a create: every field written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
    /// For an update: field → [before, after].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<BTreeMap<String, (Value, Value)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceRef {
    pub stream: String,
    pub key: String,
}

/// A value a lookup did not find in Salesforce, and what the lookup was looking for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unmatched {
    /// The lookup's name (`lookups.NAME`).
    pub lookup: String,
    /// What was looked for, in words: "a person", "a Salesforce user", "an Opportunity by
    /// AccountId".
    pub what: String,
    /// True when the lookup finds people (Contact, Lead or User by an email or phone field):
    /// only these count as people not in Salesforce.
    pub person: bool,
    /// The value looked for (the first match rule's first `where` value).
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    pub source: SourceRef,
    #[serde(skip)]
    pub title: String,
    pub writes: Vec<WriteReport>,
    pub unmatched: Vec<Unmatched>,
    /// Unmatched values no query could look up, with the reason (also in `unmatched`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unlookable: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ambiguous: Vec<String>,
    #[serde(skip)]
    pub looked_up: usize,
    pub skipped: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiCalls {
    pub zoom: u64,
    pub salesforce: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub create: u64,
    pub update: u64,
    pub unchanged: u64,
    pub skip: u64,
    /// People not in Salesforce (lookups of people only).
    pub unmatched: u64,
    /// Of `unmatched`: values that could not be looked up at all (wrong type for the
    /// field, or too long for any query).
    #[serde(skip_serializing_if = "is_zero")]
    pub unlookable: u64,
    /// Other records a lookup did not find (an Account's Opportunity, a meeting's Event).
    pub not_found: u64,
    pub error: u64,
    /// Zoom objects deleted.
    #[serde(skip_serializing_if = "is_zero")]
    pub delete: u64,
    /// Records held back by a daily limit (Zoom sinks), written after it resets.
    #[serde(skip_serializing_if = "is_zero")]
    pub waiting: u64,
    /// Dead letters retried successfully at the start of the run.
    #[serde(skip_serializing_if = "is_zero")]
    pub retried: u64,
    /// Records kept as dead letters by this run (a plan keeps none).
    #[serde(skip_serializing_if = "is_zero")]
    pub dead_lettered: u64,
    pub api_calls: ApiCalls,
    /// People and records looked up in Salesforce (before batching and caching).
    #[serde(skip)]
    pub looked_up: u64,
}

/// A (sink, key) pair as 64 bits, the same in every process.
fn fingerprint(sink: &str, key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (sink, key).hash(&mut h);
    h.finish()
}

/// Everything one pipeline's run or plan produced.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    pub pipeline: String,
    pub dry_run: bool,
    pub summary: Summary,
    /// Records read from the source (after `where`).
    pub records_read: u64,
    /// Per sink: creates + updates done (or planned).
    pub per_sink: BTreeMap<String, u64>,
    pub records: Vec<RecordReport>,
    /// Set when the run stopped early (an org-wide failure, the budget, a shutdown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// (sink, key) already counted as created or updated: a record written twice in one run
    /// counts once, so a plan's counts and its run's agree. Kept as 64-bit fingerprints
    /// (a backfill writes hundreds of thousands of records; a collision is about as likely
    /// as one in 10^7 at a million) and dropped when the run ends.
    #[serde(skip)]
    counted: std::collections::HashSet<u64>,
}

impl PipelineReport {
    pub fn new(pipeline: &str, dry_run: bool) -> Self {
        PipelineReport {
            pipeline: pipeline.to_string(),
            dry_run,
            summary: Summary::default(),
            records_read: 0,
            per_sink: BTreeMap::new(),
            records: Vec::new(),
            stopped: None,
            counted: Default::default(),
        }
    }

    /// Adds a record's outcome to the totals.
    pub fn push(&mut self, r: RecordReport, keep_detail: bool) {
        for w in &r.writes {
            let first_time = !matches!(w.action, WriteAction::Create | WriteAction::Update)
                || w.key.is_empty()
                || self.counted.insert(fingerprint(&w.sink, &w.key));
            if !first_time {
                continue;
            }
            match w.action {
                WriteAction::Create => self.summary.create += 1,
                WriteAction::Update => self.summary.update += 1,
                WriteAction::Unchanged => self.summary.unchanged += 1,
                WriteAction::Skip => self.summary.skip += 1,
                WriteAction::Error => self.summary.error += 1,
                WriteAction::Delete => self.summary.delete += 1,
                WriteAction::Waiting => self.summary.waiting += 1,
            }
            if matches!(
                w.action,
                WriteAction::Create | WriteAction::Update | WriteAction::Delete
            ) {
                *self.per_sink.entry(w.sink.clone()).or_default() += 1;
            }
        }
        self.summary.skip += r.skipped.len() as u64;
        let people = r.unmatched.iter().filter(|u| u.person).count() as u64;
        self.summary.unmatched += people;
        self.summary.not_found += r.unmatched.len() as u64 - people;
        self.summary.unlookable += r.unlookable.len() as u64;
        self.summary.looked_up += r.looked_up as u64;
        self.summary.error += r.errors.len() as u64;
        if keep_detail {
            self.records.push(r);
        }
    }

    /// The run is over: what was only needed to count its writes once goes.
    pub fn finish(&mut self) {
        self.counted = Default::default();
    }

    pub fn failed(&self) -> bool {
        self.stopped.is_some()
    }

    /// The run stops early for `why` (an org-wide failure, the budget, a state error): the
    /// batch it stopped in, or the run itself, counts as one error, so a summary never says
    /// `0 errors` about a run that did not finish. Only the first reason is kept. A
    /// shutdown is not an error: set `stopped` directly for it.
    pub fn stop(&mut self, why: String) {
        if self.stopped.is_none() {
            self.summary.error += 1;
            self.stopped = Some(why);
        }
    }

    /// The summary line of the spec.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let verb = if self.dry_run { "Plan" } else { "Run" };
        let (c, u) = if self.dry_run {
            ("to create", "to update")
        } else {
            ("created", "updated")
        };
        let unlookable = if s.unlookable > 0 {
            format!(" ({} values could not be looked up)", s.unlookable)
        } else {
            String::new()
        };
        let others = if s.not_found > 0 {
            format!(", {} other records not found", s.not_found)
        } else {
            String::new()
        };
        format!(
            "{verb}: {} {c}, {} {u}, {} unchanged, {} skipped, {} people not in Salesforce{others}{unlookable}, {} errors.",
            s.create, s.update, s.unchanged, s.skip, s.unmatched, s.error
        )
    }

    pub fn calls_line(&self) -> String {
        let a = &self.summary.api_calls;
        if self.dry_run {
            format!(
                "A run would spend about {} Zoom and {} Salesforce API calls.",
                a.zoom, a.salesforce
            )
        } else {
            format!(
                "Spent {} Zoom and {} Salesforce API calls.",
                a.zoom, a.salesforce
            )
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "pipeline": self.pipeline,
            "summary": self.summary,
            "records": self.records,
            "stopped": self.stopped,
        })
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "pipeline {}", self.pipeline);
        for r in &self.records {
            let _ = writeln!(
                out,
                "{} {} {}",
                noun(&r.source.stream),
                r.source.key,
                r.title
            );
            // Group repeated writes of one sink (for_each) into one line with a count.
            let mut i = 0;
            while i < r.writes.len() {
                let w = &r.writes[i];
                let mut n = 1;
                while i + n < r.writes.len()
                    && r.writes[i + n].sink == w.sink
                    && r.writes[i + n].action == w.action
                    && matches!(w.action, WriteAction::Create | WriteAction::Unchanged)
                {
                    n += 1;
                }
                let detail = if n > 1 {
                    format!("×{n}")
                } else {
                    write_detail(w)
                };
                let _ = writeln!(
                    out,
                    "  {:<12} {:<14} {:<9} {}",
                    w.sink,
                    w.sobject,
                    w.action.as_str(),
                    detail
                );
                i += n;
            }
            for s in &r.skipped {
                let _ = writeln!(out, "  skipped: {s}");
            }
            for (head, values) in unmatched_groups(&r.unmatched) {
                let _ = writeln!(out, "  not in Salesforce ({head}): {values}");
            }
            for u in &r.unlookable {
                let _ = writeln!(out, "  could not be looked up: {u}");
            }
            for a in &r.ambiguous {
                let _ = writeln!(out, "  ambiguous: {a}");
            }
            for e in &r.errors {
                let _ = writeln!(out, "  error: {e}");
            }
        }
        let _ = writeln!(out, "{}", self.summary_line());
        let _ = writeln!(out, "{}", self.calls_line());
        if let Some(s) = &self.stopped {
            let _ = writeln!(out, "Stopped: {s}");
        }
        out
    }

    pub fn render_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### `{}`\n", self.pipeline);
        let _ = writeln!(out, "| source | sink | object | action | detail |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for r in &self.records {
            let src = format!("{} {}", r.source.key, r.title).replace('|', "\\|");
            for w in &r.writes {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    src,
                    w.sink,
                    w.sobject,
                    w.action.as_str(),
                    write_detail(w).replace('|', "\\|")
                );
            }
            for (head, values) in unmatched_groups(&r.unmatched) {
                let _ = writeln!(
                    out,
                    "| {} | | | not in Salesforce | {}: {} |",
                    src,
                    head,
                    values.replace('|', "\\|")
                );
            }
            for u in &r.unlookable {
                let _ = writeln!(
                    out,
                    "| {} | | | could not be looked up | {} |",
                    src,
                    u.replace('|', "\\|")
                );
            }
            for e in &r.errors {
                let _ = writeln!(out, "| {} | | | error | {} |", src, e.replace('|', "\\|"));
            }
        }
        let _ = writeln!(out, "\n{}\n{}", self.summary_line(), self.calls_line());
        out
    }
}

/// Per lookup, in order of first appearance: "lookups.NAME, what" and the values not found.
fn unmatched_groups(list: &[Unmatched]) -> Vec<(String, String)> {
    let mut groups: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for u in list {
        match groups.iter_mut().find(|(l, _, _)| *l == u.lookup) {
            Some((_, _, values)) => values.push(&u.value),
            None => groups.push((&u.lookup, &u.what, vec![&u.value])),
        }
    }
    groups
        .into_iter()
        .map(|(l, what, values)| (format!("lookups.{l}, {what}"), values.join(", ")))
        .collect()
}

/// What one record of a stream is, in words (the catalog's `noun`; "record" when unknown).
fn noun(stream: &str) -> &'static str {
    let s = stream.rsplit('.').next().unwrap_or(stream);
    crate::connectors::zoom::catalog::catalog()
        .get(s)
        .map_or("record", |d| d.noun.as_str())
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}…")
    } else {
        s
    }
}

fn write_detail(w: &WriteReport) -> String {
    match w.action {
        WriteAction::Create => w
            .fields
            .as_ref()
            .map(|f| {
                f.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| format!("{k}={}", short(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        WriteAction::Update => w
            .diff
            .as_ref()
            .map(|d| {
                d.iter()
                    .map(|(k, (a, b))| format!("{k}: {} → {}", short(a), short(b)))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default(),
        WriteAction::Unchanged => w.id.clone().unwrap_or_default(),
        WriteAction::Skip | WriteAction::Waiting => w.reason.clone().unwrap_or_default(),
        WriteAction::Error => w.message.clone().unwrap_or_default(),
        WriteAction::Delete => w.id.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmatched(lookup: &str, what: &str, person: bool, value: &str) -> Unmatched {
        Unmatched {
            lookup: lookup.into(),
            what: what.into(),
            person,
            value: value.into(),
        }
    }

    fn record(stream: &str, unmatched: Vec<Unmatched>) -> RecordReport {
        RecordReport {
            source: SourceRef {
                stream: stream.into(),
                key: "k1".into(),
            },
            title: "\"Demo\"".into(),
            writes: Vec::new(),
            unmatched,
            unlookable: Vec::new(),
            ambiguous: Vec::new(),
            looked_up: 0,
            skipped: Vec::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn only_people_count_as_people_not_in_salesforce_and_each_names_its_lookup() {
        let mut rep = PipelineReport::new("p", true);
        rep.push(
            record(
                "zoom.past_meetings",
                vec![
                    unmatched("attendees", "a person", true, "pat@contoso.com"),
                    unmatched("attendees", "a person", true, "lee@fabrikam.example"),
                    unmatched("opportunity", "an Opportunity by AccountId", false, "001A"),
                ],
            ),
            true,
        );
        assert_eq!(rep.summary.unmatched, 2);
        assert_eq!(rep.summary.not_found, 1);
        let line = rep.summary_line();
        assert!(
            line.contains("2 people not in Salesforce, 1 other records not found"),
            "{line}"
        );
        let text = rep.render_text();
        assert!(text.contains("meeting k1 \"Demo\""), "{text}");
        assert!(
            text.contains(
                "not in Salesforce (lookups.attendees, a person): pat@contoso.com, lee@fabrikam.example"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "not in Salesforce (lookups.opportunity, an Opportunity by AccountId): 001A"
            ),
            "{text}"
        );
        let md = rep.render_markdown();
        assert!(
            md.contains(
                "| not in Salesforce | lookups.opportunity, an Opportunity by AccountId: 001A |"
            ),
            "{md}"
        );
        let json = rep.to_json();
        assert_eq!(json["summary"]["unmatched"], 2);
        assert_eq!(json["summary"]["not_found"], 1);
        assert_eq!(json["records"][0]["unmatched"][2]["lookup"], "opportunity");
        assert_eq!(json["records"][0]["unmatched"][2]["person"], false);
    }

    #[test]
    fn a_summary_without_other_records_keeps_its_words() {
        let rep = PipelineReport::new("p", false);
        assert_eq!(
            rep.summary_line(),
            "Run: 0 created, 0 updated, 0 unchanged, 0 skipped, 0 people not in Salesforce, 0 errors."
        );
    }

    #[test]
    fn records_are_labelled_by_what_their_stream_yields() {
        assert_eq!(noun("zoom.user_recordings"), "recording");
        assert_eq!(noun("zoom.past_meetings"), "meeting");
        assert_eq!(noun("zoom.webinar_registrants"), "registrant");
        assert_eq!(noun("zoom.phone_call_history"), "call");
        assert_eq!(noun("zoom.users"), "user");
        assert_eq!(noun("other.unknown_stream"), "record");
    }
}
