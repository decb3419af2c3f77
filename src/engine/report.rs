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
}

impl WriteAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteAction::Create => "create",
            WriteAction::Update => "update",
            WriteAction::Unchanged => "unchanged",
            WriteAction::Skip => "skip",
            WriteAction::Error => "error",
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

#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    pub source: SourceRef,
    #[serde(skip)]
    pub title: String,
    pub writes: Vec<WriteReport>,
    pub unmatched: Vec<String>,
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
    pub unmatched: u64,
    /// Of `unmatched`: values that could not be looked up at all (wrong type for the
    /// field, or too long for any query).
    #[serde(skip_serializing_if = "is_zero")]
    pub unlookable: u64,
    pub error: u64,
    /// Dead letters retried successfully at the start of the run.
    #[serde(skip_serializing_if = "is_zero")]
    pub retried: u64,
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
            }
            if matches!(w.action, WriteAction::Create | WriteAction::Update) {
                *self.per_sink.entry(w.sink.clone()).or_default() += 1;
            }
        }
        self.summary.skip += r.skipped.len() as u64;
        self.summary.unmatched += r.unmatched.len() as u64;
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
            format!(" ({} of them could not be looked up)", s.unlookable)
        } else {
            String::new()
        };
        format!(
            "{verb}: {} {c}, {} {u}, {} unchanged, {} skipped, {} people not in Salesforce{unlookable}, {} errors.",
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
            if !r.unmatched.is_empty() {
                let _ = writeln!(out, "  not in Salesforce: {}", r.unmatched.join(", "));
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
            if !r.unmatched.is_empty() {
                let _ = writeln!(
                    out,
                    "| {} | | | not in Salesforce | {} |",
                    src,
                    r.unmatched.join(", ")
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

fn noun(stream: &str) -> &str {
    let s = stream.rsplit('.').next().unwrap_or(stream);
    if s.contains("meeting") {
        "meeting"
    } else if s.contains("webinar") {
        "webinar"
    } else if s.contains("call") || s.contains("phone") {
        "call"
    } else if s.contains("user") {
        "user"
    } else if s.contains("recording") {
        "recording"
    } else {
        "record"
    }
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
        WriteAction::Skip => w.reason.clone().unwrap_or_default(),
        WriteAction::Error => w.message.clone().unwrap_or_default(),
    }
}
