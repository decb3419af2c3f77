//! `/healthz` (liveness, JSON), `/readyz` (readiness), the status page (server-rendered HTML,
//! no scripts) and the read-only dead letters page of a pipeline.

use super::Shared;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use std::fmt::Write as _;

/// A state read for the status surfaces: an error is logged (the page shows what it has)
/// and becomes `None`.
pub(crate) fn logged<T>(what: &str, r: crate::state::Result<T>) -> Option<T> {
    r.map_err(|e| tracing::warn!("status: could not read {what} from the state: {e}"))
        .ok()
}

/// Why the daemon is not ready (files in error, changed connections that cannot connect);
/// empty when it is. A degraded daemon keeps running the previous version of the project.
pub(crate) fn not_ready(shared: &Shared) -> Vec<String> {
    let st = shared.status();
    let mut why = Vec::new();
    let mut files: Vec<&str> = st.files_in_error.iter().map(|p| p.file.as_str()).collect();
    files.dedup();
    for f in files {
        why.push(format!(
            "{f} is in error; the previous version keeps running"
        ));
    }
    if let Some(e) = &st.connection_error {
        why.push(format!("a changed connection cannot connect: {e}"));
    }
    why
}

/// `/healthz`: liveness. Answered with 200 while the process lives; readiness is in the body
/// (`"status": "degraded"`, `"ready": false` and why) and on `/readyz`.
pub(crate) async fn health_json(shared: &Shared) -> serde_json::Value {
    let st = shared.status();
    let mut files: Vec<&str> = st.files_in_error.iter().map(|p| p.file.as_str()).collect();
    files.dedup();
    let why = not_ready(shared);
    json!({
        "status": if why.is_empty() { "ok" } else { "degraded" },
        "live": true,
        "ready": why.is_empty(),
        "not_ready": why,
        "files_in_error": files,
        "problems": st.files_in_error,
        "connection_error": st.connection_error,
        "pipelines": shared.project().pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "inbox_depth": logged("the inbox depth", shared.store.inbox_depth().await),
        "inbox": logged("the inbox counts", shared.store.inbox_counts().await),
        "shutting_down": shared.shutdown().is_triggered(),
    })
}

/// `/readyz`: (ready, body). Not ready while a file is in error or a changed connection
/// cannot connect, and while the daemon shuts down.
pub(crate) fn ready_json(shared: &Shared) -> (bool, serde_json::Value) {
    let mut why = not_ready(shared);
    if shared.shutdown().is_triggered() {
        why.push("ferry daemon is stopping".into());
    }
    let ready = why.is_empty();
    (
        ready,
        json!({
            "status": if ready { "ready" } else { "not ready" },
            "ready": ready,
            "not_ready": why,
        }),
    )
}

/// The most of an error kept for display.
const MAX_SHOWN_ERROR: usize = 2000;

/// An error message made fit to show on `/healthz`, the status page and `ferry inbox`:
/// request URLs (which carry ids, tokens and queries), SOQL statements and email addresses
/// are replaced by `[url]`, `[query]` and `[email]`, and the text is bounded. Applied where
/// such errors are stored for display, so no later reader sees the original.
pub fn sanitize_error(s: &str) -> String {
    let mut out = String::new();
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&sanitize_line(line));
    }
    if out.chars().count() > MAX_SHOWN_ERROR {
        let cut: String = out.chars().take(MAX_SHOWN_ERROR - 1).collect();
        return format!("{cut}…");
    }
    out
}

fn bare(w: &str) -> &str {
    w.trim_matches(|c: char| !c.is_alphanumeric())
}

fn sanitize_line(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut o: Vec<String> = Vec::with_capacity(words.len());
    for (k, w) in words.iter().enumerate() {
        // A SOQL statement runs to the end of the line: its WHERE clause holds the data.
        if bare(w).eq_ignore_ascii_case("select")
            && words[k + 1..]
                .iter()
                .any(|x| bare(x).eq_ignore_ascii_case("from"))
        {
            let lead: String = w.chars().take_while(|c| !c.is_alphanumeric()).collect();
            o.push(format!("{lead}[query]"));
            break;
        }
        o.push(sanitize_word(w));
    }
    o.join(" ")
}

fn sanitize_word(w: &str) -> String {
    let keep = |c: char| c.is_alphanumeric() || c == '/';
    let (Some(start), Some(last)) = (w.find(keep), w.rfind(keep)) else {
        return w.to_string();
    };
    let end = last + w[last..].chars().next().map_or(1, char::len_utf8);
    let core = &w[start..end];
    let url = core.contains("://")
        || (core.starts_with('/') && (core.contains('?') || core.contains("/services/")))
        || core.contains("%40");
    let email = core.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
    });
    let replaced = if url {
        "[url]"
    } else if email {
        "[email]"
    } else {
        return w.to_string();
    };
    format!("{}{replaced}{}", &w[..start], &w[end..])
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "—".into())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5rem}\
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.ok{color:#176d2c}.bad{color:#a31515}code{font-size:.9em}";

/// Runs shown per pipeline on the status page.
const RUNS_SHOWN: usize = 10;

pub(crate) async fn render_html(shared: &Shared) -> String {
    let st = shared.status();
    let project = shared.project();
    let store = &shared.store;
    let now = shared.clock.now();
    let checkpoints = logged("checkpoints", store.checkpoints(None).await).unwrap_or_default();
    let dead = logged("dead letter counts", store.deadletter_counts().await).unwrap_or_default();
    let inbox = logged("the inbox counts", store.inbox_counts().await).unwrap_or_default();
    let deferred = logged("deferrals", store.zoom_deferral_summary(None).await).unwrap_or_default();
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ferry daemon</title><style>{STYLE}</style></head><body>\n\
         <h1>ferry daemon</h1>\n<p>Now: {} · webhook inbox: <span id=\"inbox\">{} pending, \
         {} retrying, <span class=\"{}\">{} dead</span></span> · \
         <a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">healthz</a> · \
         <a href=\"/readyz\">readyz</a></p>\n",
        when(Some(now)),
        inbox.pending,
        inbox.retrying,
        if inbox.dead > 0 { "bad" } else { "ok" },
        inbox.dead,
    );
    if inbox.dead > 0 {
        o.push_str(
            "<p class=\"bad\">Webhook events failed for a day and are kept as dead letters: \
             <code>ferry inbox list --dead</code> shows them, <code>ferry inbox retry ID</code> \
             re-queues one.</p>\n",
        );
    }
    if !st.files_in_error.is_empty() {
        o.push_str(
            "<h2 class=\"bad\">Files in error</h2>\n<p>The previous version keeps running until these are fixed.</p>\n\
             <table id=\"files-in-error\"><tr><th>File</th><th>Line</th><th>Problem</th></tr>\n",
        );
        for p in &st.files_in_error {
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td>{}:{}</td><td>{}</td></tr>",
                esc(&p.file),
                p.line,
                p.column,
                esc(&p.message)
            );
        }
        o.push_str("</table>\n");
    }
    if let Some(e) = &st.connection_error {
        let _ = writeln!(
            o,
            "<h2 class=\"bad\">Connections</h2>\n<p id=\"connection-error\">ferry.yaml's changed connections could not connect; the previous ones keep running: {}</p>",
            esc(e)
        );
    }
    o.push_str(&runners_html(shared).await);
    o.push_str(
        "<h2>Pipelines</h2>\n<table id=\"pipelines\"><tr><th>Pipeline</th><th>Schedule</th>\
         <th>Triggers</th><th>Last run</th><th>Result</th><th>Synced</th><th>Next run</th>\
         <th>Dead letters</th><th>Waiting</th></tr>\n",
    );
    let mut details = String::new();
    for p in &project.pipelines {
        let ps = st.pipelines.get(&p.name).cloned().unwrap_or_default();
        // The run history of the state file: the daemon's runs and `ferry run`'s alike.
        let (runs, runs_error) = match store.runs(Some(&p.name), RUNS_SHOWN).await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let schedule = match &p.schedule {
            Some(crate::config::Schedule::Interval(d)) => format!("every {}", human(*d)),
            Some(crate::config::Schedule::Cron(c)) => format!("cron {c}"),
            None => "—".into(),
        };
        let (last, result) = match runs.first() {
            _ if ps.running => (
                format!("{} ({})", when(ps.last_started), trigger_of(&ps)),
                "<span>running</span>".to_string(),
            ),
            Some(r) => (
                format!(
                    "{} ({})",
                    when(Some(r.started_at)),
                    esc(r.trigger.as_deref().unwrap_or("unknown"))
                ),
                run_result(r),
            ),
            None => ("—".into(), "—".into()),
        };
        let cps: Vec<&crate::state::CheckpointRow> = checkpoints
            .iter()
            .filter(|c| c.pipeline == p.name)
            .collect();
        let def = crate::connectors::zoom::catalog().get(&p.source.stream);
        let synced = synced_words(def, &cps, now);
        let (dl, waiting) = dead
            .iter()
            .find(|d| d.pipeline == p.name)
            .map(|d| (d.count, d.retry_requested))
            .unwrap_or((0, 0));
        let anchor = anchor(&p.name);
        let waits: Vec<&crate::state::DeferralSummary> =
            deferred.iter().filter(|d| d.pipeline == p.name).collect();
        let n_waiting: u64 = waits.iter().map(|d| d.records).sum();
        let _ = writeln!(
            o,
            "<tr><td><strong>{}</strong><br><small>{}</small><br><a href=\"#{anchor}\">details</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"synced\">{}</td><td>{}</td>\
             <td class=\"{}\">{}</td><td class=\"waiting\">{}</td></tr>",
            esc(&p.name),
            esc(&p.file.display().to_string()),
            esc(&schedule),
            esc(&p.triggers.join(", ")),
            last,
            result,
            esc(&synced),
            next_run(&ps),
            if dl > 0 { "bad" } else { "ok" },
            dl,
            n_waiting,
        );
        pipeline_details(
            &mut details,
            p,
            &anchor,
            &runs,
            runs_error,
            &cps,
            def,
            store,
            (dl, waiting),
            &synced,
            &waits,
        )
        .await;
    }
    o.push_str("</table>\n");
    api_spend(&mut o, shared);
    o.push_str(&details);
    o.push_str("</body></html>\n");
    o
}

/// The id of a pipeline's section (names are letters, digits, `-` and `_`; anything else
/// becomes `-`).
fn anchor(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("pipeline-{n}")
}

/// Who holds each pipeline's lease now: this daemon, another process (several daemons share a
/// PostgreSQL state), or nobody between runs.
async fn leases(shared: &Shared) -> Vec<(String, Option<crate::state::Held>)> {
    let project = shared.project();
    let mut out = Vec::new();
    for p in &project.pipelines {
        let held = logged("a pipeline lease", shared.store.lease_holder(&p.name).await)
            .unwrap_or_default();
        out.push((p.name.clone(), held));
    }
    out
}

async fn runners_html(shared: &Shared) -> String {
    let me = crate::state::process_holder_id();
    let mut o = format!(
        "<h2>Runners</h2>\n<p>This daemon: <code id=\"holder-id\">{}</code> ({}); state: {}</p>\n\
         <table id=\"leases\"><tr><th>Pipeline</th><th>Run by</th><th>Lease until</th></tr>\n",
        esc(me),
        esc(&crate::state::describe_holder(me)),
        esc(&shared.store.location()),
    );
    for (name, held) in leases(shared).await {
        let (who, until) = match &held {
            Some(h) if h.holder == me => ("this daemon".to_string(), when(Some(h.expires_at))),
            Some(h) => (
                crate::state::describe_holder(&h.holder),
                when(Some(h.expires_at)),
            ),
            None => ("nobody right now".to_string(), "-".to_string()),
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&name),
            esc(&who),
            esc(&until)
        );
    }
    o.push_str("</table>\n");
    o
}

/// `ferry_pipeline_lease{pipeline, holder, this_daemon}`: 1 per pipeline whose lease is held,
/// naming the holder (hostname:pid:...), so a dashboard shows which daemon runs what.
pub(crate) async fn lease_metrics(shared: &Shared) -> String {
    let me = crate::state::process_holder_id();
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut o = String::from(
        "# HELP ferry_pipeline_lease Pipelines whose lease is held, by holder (hostname:pid:...).\n\
         # TYPE ferry_pipeline_lease gauge\n",
    );
    for (name, held) in leases(shared).await {
        if let Some(h) = held {
            let _ = writeln!(
                o,
                "ferry_pipeline_lease{{pipeline=\"{}\",holder=\"{}\",this_daemon=\"{}\"}} 1",
                q(&name),
                q(&h.holder),
                h.holder == me
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP ferry_daemon_holder_id This daemon's holder id in pipeline leases.\n\
         # TYPE ferry_daemon_holder_id gauge\nferry_daemon_holder_id{{holder=\"{}\"}} 1",
        q(me)
    );
    o
}

fn trigger_of(ps: &super::PipelineStatus) -> &'static str {
    ps.last_trigger.map_or("unknown", super::Trigger::label)
}

fn next_run(ps: &super::PipelineStatus) -> String {
    match (ps.resume_at, ps.next_run) {
        (Some(r), _) => format!("{} (when the daily limit lifts)", when(Some(r))),
        (None, t) => when(t),
    }
}

/// A count of a stored run summary (0 when absent).
fn count(summary: Option<&serde_json::Value>, key: &str) -> u64 {
    summary
        .and_then(|s| s.get(key))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

fn counts_line(r: &crate::state::RunRow) -> String {
    let s = r.summary.as_ref();
    let mut line = format!(
        "created {}, updated {}, unchanged {}, skipped {}, errors {}",
        count(s, "create"),
        count(s, "update"),
        count(s, "unchanged"),
        count(s, "skip"),
        count(s, "error"),
    );
    let dead = count(s, "dead_lettered");
    if dead > 0 {
        let _ = write!(line, ", dead letters {dead}");
    }
    line
}

/// A stored run's outcome: ok, stopped (with why) or unfinished, and its counts.
fn run_result(r: &crate::state::RunRow) -> String {
    match (r.finished_at, &r.stopped, r.ok) {
        (None, _, _) => "<span>running, or ended without recording its end</span>".into(),
        (Some(_), Some(why), _) => format!(
            "<span class=\"bad\">stopped: {}</span><br>{}",
            esc(why),
            esc(&counts_line(r))
        ),
        (Some(_), None, Some(false)) => format!(
            "<span class=\"bad\">failed</span><br>{}",
            esc(&counts_line(r))
        ),
        (Some(_), None, _) => format!("<span class=\"ok\">ok</span><br>{}", esc(&counts_line(r))),
    }
}

fn duration_words(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// How long ago `t` was, in words: "less than a minute", "3 min", "2 h 5 min", "4 days".
fn ago_words(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    if s < 60 {
        return "less than a minute".into();
    }
    let m = s / 60;
    if m < 60 {
        return format!("{m} min");
    }
    let h = m / 60;
    if h < 48 {
        return match m % 60 {
            0 => format!("{h} h"),
            r => format!("{h} h {r} min"),
        };
    }
    format!("{} days", h / 24)
}

/// How far behind its source a pipeline is, from its checkpoints: the oldest partition's
/// cursor ("synced to 3 min ago"), as the next run starts from there.
fn synced_words(
    def: Option<&crate::connectors::zoom::catalog::StreamDef>,
    cps: &[&crate::state::CheckpointRow],
    now: DateTime<Utc>,
) -> String {
    let oldest = cps
        .iter()
        .filter_map(|c| crate::state::cursor_time(&c.cursor))
        .min();
    match oldest {
        Some(t) if t >= now => "synced to now".into(),
        Some(t) => format!("synced to {} ago", ago_words(t, now)),
        None if def.is_some_and(|d| !d.incremental()) => {
            "reads the whole stream each run (no checkpoint)".into()
        }
        None => "not synced yet".into(),
    }
}

/// The scope of the labels of a stream's partitions (`zoom.users` for per-user streams).
fn label_scope(def: Option<&crate::connectors::zoom::catalog::StreamDef>) -> Option<String> {
    def.and_then(|d| d.partition.as_ref())
        .map(|p| format!("zoom.{}", p.over))
}

#[allow(clippy::too_many_arguments)]
async fn pipeline_details(
    o: &mut String,
    p: &crate::config::Pipeline,
    anchor: &str,
    runs: &[crate::state::RunRow],
    runs_error: Option<String>,
    cps: &[&crate::state::CheckpointRow],
    def: Option<&crate::connectors::zoom::catalog::StreamDef>,
    store: &crate::state::Store,
    (dead, waiting): (u64, u64),
    synced: &str,
    deferred: &[&crate::state::DeferralSummary],
) {
    let _ = writeln!(
        o,
        "<section id=\"{anchor}\">\n<h2>{}</h2>\n<p>{} · source <code>zoom.{}</code></p>",
        esc(&p.name),
        esc(synced),
        esc(&p.source.stream)
    );
    o.push_str("<h3>Recent runs</h3>\n");
    if let Some(e) = runs_error {
        let _ = writeln!(
            o,
            "<p class=\"bad\">The run history cannot be read: {}</p>",
            esc(&sanitize_error(&e))
        );
    } else if runs.is_empty() {
        o.push_str("<p>No runs recorded in this state file yet.</p>\n");
    } else {
        o.push_str(
            "<table class=\"runs\"><tr><th>Started</th><th>Duration</th><th>Started by</th>\
             <th>Result</th></tr>\n",
        );
        for r in runs {
            let duration = r
                .finished_at
                .map(|f| duration_words(f - r.started_at))
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(Some(r.started_at)),
                esc(&duration),
                esc(r.trigger.as_deref().unwrap_or("unknown")),
                run_result(r)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<h3>Checkpoints</h3>\n");
    if cps.is_empty() {
        o.push_str("<p>—</p>\n");
    } else {
        let labels = match label_scope(def) {
            Some(scope) => logged("labels", store.labels(&scope).await).unwrap_or_default(),
            None => Default::default(),
        };
        let what = def
            .and_then(|d| d.partition.as_ref())
            .map(|p| p.over.trim_end_matches('s'))
            .unwrap_or("partition");
        let _ = writeln!(
            o,
            "<table class=\"checkpoints\"><tr><th>{}</th><th>Synced to</th><th>Updated</th></tr>",
            esc(&capitalized(what))
        );
        for c in cps {
            let part = if c.partition.is_empty() {
                "(whole stream)".to_string()
            } else {
                match labels.get(&c.partition) {
                    Some(l) => l.clone(),
                    None => format!("id {}", c.partition),
                }
            };
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&part),
                esc(&c.cursor),
                when(Some(c.updated_at))
            );
        }
        o.push_str("</table>\n");
    }
    let _ = writeln!(
        o,
        "<h3>Dead letters</h3>\n<p class=\"{}\">{dead} dead letter(s), {waiting} of them waiting \
         to be retried by the next run.{}</p>",
        if dead > 0 { "bad" } else { "ok" },
        if dead > 0 {
            format!(
                " Read them on <a href=\"/deadletters/{}\">the dead letters page</a> or with \
                 <code>ferry deadletters list {}</code>; <code>ferry deadletters retry --all \
                 --pipeline {}</code> retries them.",
                esc(&url_segment(&p.name)),
                esc(&p.name),
                esc(&p.name)
            )
        } else {
            String::new()
        }
    );
    deferrals_html(o, store, deferred).await;
    o.push_str("</section>\n");
}

/// The records a daily limit (or a lost answer) holds back: how many, for which limit and
/// host, until when. Hosts are shown as the checkpoints show Zoom users (their label when
/// ferry has one); registrants are only counted.
async fn deferrals_html(
    o: &mut String,
    store: &crate::state::Store,
    deferred: &[&crate::state::DeferralSummary],
) {
    o.push_str("<h3>Waiting records</h3>\n");
    if deferred.is_empty() {
        o.push_str("<p class=\"ok\" id=\"waiting\">No record waits for a daily limit.</p>\n");
        return;
    }
    let labels = if deferred.iter().any(|d| !d.host.is_empty()) {
        logged("labels", store.labels("zoom.users").await).unwrap_or_default()
    } else {
        Default::default()
    };
    let total: u64 = deferred.iter().map(|d| d.records).sum();
    let _ = writeln!(
        o,
        "<p id=\"waiting\">{total} record(s) could not be written today and wait in the state; \
         the first run after their time writes them first.</p>\n\
         <table class=\"deferrals\"><tr><th>Sink</th><th>Limit</th><th>Host</th><th>Records</th>\
         <th>Until</th></tr>"
    );
    for d in deferred {
        let limit = match d.limit.as_str() {
            "host" => "the host's daily meeting writes".to_string(),
            "registrant" => "a registrant's daily registrations".to_string(),
            crate::state::LOST_ANSWER => "Zoom's answer was lost (looked up next run)".to_string(),
            other => other.to_string(),
        };
        let host = if d.host.is_empty() {
            "—".to_string()
        } else {
            labels
                .get(&d.host)
                .cloned()
                .unwrap_or_else(|| d.host.clone())
        };
        let until = if d.first_until == d.last_until {
            when(Some(d.last_until))
        } else {
            format!(
                "{} to {}",
                when(Some(d.first_until)),
                when(Some(d.last_until))
            )
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.sink),
            esc(&limit),
            esc(&host),
            d.records,
            esc(&until)
        );
    }
    o.push_str("</table>\n");
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A pipeline name as one URL path segment.
fn url_segment(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            o.push(char::from(b));
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// Today's API spend: Zoom's daily caps (as this daemon counted them today) and Salesforce's
/// calls over the last 24 h against ferry's `daily_budget` and the org's allowance.
fn api_spend(o: &mut String, shared: &Shared) {
    let conns = shared.conns();
    let http = conns.http.metrics();
    o.push_str("<h2>API spend today</h2>\n<table id=\"api-spend\"><tr><th>Service</th><th>Limit</th><th>Used</th></tr>\n");
    let _ = writeln!(
        o,
        "<tr><td>Zoom</td><td>requests since the daemon started</td><td>{}</td></tr>",
        http.requests(crate::http::Service::Zoom)
    );
    for u in conns.http.daily_usage(crate::http::Service::Zoom) {
        let name = match u.name.as_str() {
            "heavy_ri" => "heavy and resource-intensive (one daily cap)".to_string(),
            "phone_heavy_ri" => "Phone heavy and resource-intensive (one daily cap)".to_string(),
            n => n.replace('_', " "),
        };
        let _ = writeln!(
            o,
            "<tr><td>Zoom</td><td>{} APIs: {} a day (Zoom's cap less the headroom)</td>\
             <td class=\"{}\">{} ({}%)</td></tr>",
            esc(&name),
            u.limit,
            if u.used >= u.limit { "bad" } else { "ok" },
            u.used,
            percent(u.used, u.limit)
        );
    }
    let b = conns.salesforce.conn.budget();
    let _ = writeln!(
        o,
        "<tr><td>Salesforce</td><td>{}</td><td class=\"{}\">{}{}</td></tr>",
        match b.daily_budget {
            Some(n) => format!("ferry's daily_budget: {n} calls in 24 h"),
            None => "calls by ferry in the last 24 h (no daily_budget set)".into(),
        },
        if b.daily_budget.is_some_and(|n| b.used_by_ferry >= n) {
            "bad"
        } else {
            "ok"
        },
        b.used_by_ferry,
        b.daily_budget
            .map(|n| format!(" ({}%)", percent(b.used_by_ferry, n)))
            .unwrap_or_default()
    );
    if let Some(max) = b.org_max {
        let used = b.org_used.unwrap_or(0);
        let _ = writeln!(
            o,
            "<tr><td>Salesforce</td><td>the org's daily API allowance: {max} (every client's \
             calls, as Salesforce last reported them)</td><td class=\"{}\">{used} ({}%)</td></tr>",
            if used >= max { "bad" } else { "ok" },
            percent(used, max)
        );
    }
    o.push_str("</table>\n");
}

fn percent(used: u64, limit: u64) -> u64 {
    if limit == 0 {
        return 100;
    }
    used.saturating_mul(100) / limit
}

/// `/deadletters/{pipeline}`: the pipeline's dead letters, read-only, payloads redacted as
/// `ferry inbox show` redacts them and errors as the status page shows them. None for an
/// unknown pipeline.
pub(crate) async fn deadletters_html(shared: &Shared, pipeline: &str) -> Option<String> {
    let project = shared.project();
    let p = project.pipeline(pipeline)?;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ferry: dead letters of {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>Dead letters of {name}</h1>\n<p><a href=\"/\">status</a> · read-only: \
         <code>ferry deadletters retry ID</code> asks the next run to write a record again, \
         <code>ferry deadletters drop ID</code> forgets it.</p>\n",
        name = esc(&p.name)
    );
    match shared.store.deadletters(Some(&p.name)).await {
        Err(e) => {
            let _ = writeln!(
                o,
                "<p class=\"bad\">The dead letters cannot be read: {}</p>",
                esc(&sanitize_error(&e.to_string()))
            );
        }
        Ok(letters) if letters.is_empty() => o.push_str("<p>No dead letters.</p>\n"),
        Ok(letters) => {
            o.push_str(
                "<table id=\"deadletters\"><tr><th>ID</th><th>Sink</th><th>Key</th>\
                 <th>Attempts</th><th>Waiting for a retry</th><th>Updated</th><th>Error</th>\
                 <th>Payload (secrets redacted)</th></tr>\n",
            );
            for d in letters.iter().take(MAX_LETTERS_SHOWN) {
                let payload =
                    serde_json::to_string_pretty(&super::inbox::redact_payload(&d.payload))
                        .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                    d.id,
                    esc(&d.sink),
                    esc(&d.key),
                    d.attempts,
                    if d.retry_requested { "yes" } else { "no" },
                    when(Some(d.updated_at)),
                    esc(&sanitize_error(&d.error)),
                    esc(&bounded_text(&payload, MAX_PAYLOAD_SHOWN)),
                );
            }
            o.push_str("</table>\n");
            if letters.len() > MAX_LETTERS_SHOWN {
                let _ = writeln!(
                    o,
                    "<p>{} more: <code>ferry deadletters list {}</code> lists them all.</p>",
                    letters.len() - MAX_LETTERS_SHOWN,
                    esc(&p.name)
                );
            }
        }
    }
    o.push_str("</body></html>\n");
    Some(o)
}

/// Letters shown on the dead letters page (the CLI lists them all).
const MAX_LETTERS_SHOWN: usize = 500;
/// The most of one payload shown.
const MAX_PAYLOAD_SHOWN: usize = 20_000;

fn bounded_text(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_shown_carry_no_urls_queries_or_emails() {
        let e = "fetching the record: GET https://api.zoom.us/v2/past_meetings/abc%3D%3D?x=1 answered 503 (for pat.buyer@contoso.com)";
        let s = sanitize_error(e);
        assert_eq!(
            s,
            "fetching the record: GET [url] answered 503 (for [email])"
        );
        let q = "MALFORMED_QUERY: \"SELECT Id FROM Contact WHERE Email IN ('a@b.com')\" ^ ERROR\nnext line kept";
        assert_eq!(
            sanitize_error(q),
            "MALFORMED_QUERY: \"[query]\nnext line kept"
        );
        assert_eq!(
            sanitize_error("GET /services/data/v61.0/query?q=SELECT+Id failed"),
            "GET [url] failed"
        );
        // Ordinary text is kept.
        let plain = "Salesforce API budget reached: ferry has made 10 of the 10 calls; select a smaller batch";
        assert_eq!(sanitize_error(plain), plain);
        assert!(sanitize_error(&"x".repeat(5000)).chars().count() <= MAX_SHOWN_ERROR);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cp(partition: &str, cursor: &str) -> crate::state::CheckpointRow {
        crate::state::CheckpointRow {
            pipeline: "p".into(),
            stream: "past_meetings".into(),
            partition: partition.into(),
            cursor: cursor.into(),
            updated_at: at("2026-09-15T12:00:00Z"),
        }
    }

    #[test]
    fn how_far_behind_reads_in_words_from_the_oldest_checkpoint() {
        let now = at("2026-09-15T12:00:00Z");
        let meetings = crate::connectors::zoom::catalog().get("past_meetings");
        let users = crate::connectors::zoom::catalog().get("users");
        let a = cp("u1", "2026-09-15T11:57:00Z");
        let b = cp("u2", "2026-09-15T09:55:00Z");
        assert_eq!(synced_words(meetings, &[&a], now), "synced to 3 min ago");
        assert_eq!(
            synced_words(meetings, &[&a, &b], now),
            "synced to 2 h 5 min ago",
            "the oldest partition is how far behind the pipeline is"
        );
        let old = cp("u3", "2026-09-10T12:00:00Z");
        assert_eq!(synced_words(meetings, &[&old], now), "synced to 5 days ago");
        let fresh = cp("u4", "2026-09-15T11:59:30Z");
        assert_eq!(
            synced_words(meetings, &[&fresh], now),
            "synced to less than a minute ago"
        );
        assert_eq!(synced_words(meetings, &[], now), "not synced yet");
        assert_eq!(
            synced_words(users, &[], now),
            "reads the whole stream each run (no checkpoint)"
        );
        assert_eq!(label_scope(meetings).as_deref(), Some("zoom.users"));
        assert_eq!(label_scope(users), None);
        assert_eq!(percent(50, 200), 25);
        assert_eq!(percent(u64::MAX, 10), u64::MAX / 10, "no overflow");
        assert_eq!(percent(1, 0), 100);
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(anchor("x<y"), "pipeline-x-y");
    }

    #[test]
    fn html_is_escaped_and_durations_read_well() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(human(std::time::Duration::from_secs(900)), "15m");
        assert_eq!(human(std::time::Duration::from_secs(86_400)), "1d");
        assert_eq!(human(std::time::Duration::from_secs(7200)), "2h");
        assert_eq!(human(std::time::Duration::from_secs(90)), "90s");
    }
}
