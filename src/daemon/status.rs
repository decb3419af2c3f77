//! `/healthz` (JSON) and the status page (server-rendered HTML, no scripts): pipelines, last
//! and next run, last result, checkpoints, dead letters, files in error.

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

/// `{"status": "ok", "files_in_error": [...], ...}`. The daemon answers while it runs; a file
/// in error means the previous version of the project is still the one running.
pub(crate) async fn health_json(shared: &Shared) -> serde_json::Value {
    let st = shared.status();
    let mut files: Vec<&str> = st.files_in_error.iter().map(|p| p.file.as_str()).collect();
    files.dedup();
    json!({
        "status": "ok",
        "files_in_error": files,
        "problems": st.files_in_error,
        "connection_error": st.connection_error,
        "pipelines": shared.project().pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "inbox_depth": logged("the inbox depth", shared.store.inbox_depth().await),
        "inbox": logged("the inbox counts", shared.store.inbox_counts().await),
        "shutting_down": shared.shutdown().is_triggered(),
    })
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

pub(crate) async fn render_html(shared: &Shared) -> String {
    let st = shared.status();
    let project = shared.project();
    let store = &shared.store;
    let checkpoints = logged("checkpoints", store.checkpoints(None).await).unwrap_or_default();
    let dead = logged("dead letter counts", store.deadletter_counts().await).unwrap_or_default();
    let inbox = logged("the inbox counts", store.inbox_counts().await).unwrap_or_default();
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ferry daemon</title><style>{STYLE}</style></head><body>\n\
         <h1>ferry daemon</h1>\n<p>Now: {} · webhook inbox: <span id=\"inbox\">{} pending, \
         {} retrying, <span class=\"{}\">{} dead</span></span> · \
         <a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">healthz</a></p>\n",
        when(Some(shared.clock.now())),
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
    o.push_str(
        "<h2>Pipelines</h2>\n<table id=\"pipelines\"><tr><th>Pipeline</th><th>Schedule</th>\
         <th>Triggers</th><th>Last run</th><th>Result</th><th>Next run</th>\
         <th>Checkpoints</th><th>Dead letters</th></tr>\n",
    );
    for p in &project.pipelines {
        let ps = st.pipelines.get(&p.name).cloned().unwrap_or_default();
        let schedule = match &p.schedule {
            Some(crate::config::Schedule::Interval(d)) => format!("every {}", human(*d)),
            Some(crate::config::Schedule::Cron(c)) => format!("cron {c}"),
            None => "—".into(),
        };
        let result = if ps.running {
            "<span>running</span>".to_string()
        } else {
            match &ps.last_report {
                None => "—".into(),
                Some(r) => {
                    let s = &r.summary;
                    let line = format!(
                        "read {}, created {}, updated {}, unchanged {}, errors {}",
                        r.records_read, s.create, s.update, s.unchanged, s.error
                    );
                    match &r.stopped {
                        Some(why) => format!(
                            "<span class=\"bad\">stopped: {}</span><br>{}",
                            esc(why),
                            esc(&line)
                        ),
                        None => format!("<span class=\"ok\">ok</span><br>{}", esc(&line)),
                    }
                }
            }
        };
        let cps: Vec<String> = checkpoints
            .iter()
            .filter(|c| c.pipeline == p.name)
            .map(|c| {
                let part = if c.partition.is_empty() {
                    String::new()
                } else {
                    format!("{} ", c.partition)
                };
                format!("<code>{}{}</code>", esc(&part), esc(&c.cursor))
            })
            .collect();
        let dl = dead
            .iter()
            .find(|d| d.pipeline == p.name)
            .map(|d| d.count)
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "<tr><td><strong>{}</strong><br><small>{}</small></td><td>{}</td><td>{}</td>\
             <td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.file.display().to_string()),
            esc(&schedule),
            esc(&p.triggers.join(", ")),
            when(ps.last_started),
            ps.last_trigger
                .map(|t| format!(
                    " ({})",
                    serde_json::to_value(t)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ))
                .unwrap_or_default(),
            result,
            when(ps.next_run),
            if cps.is_empty() {
                "—".into()
            } else {
                cps.join("<br>")
            },
            dl
        );
    }
    o.push_str("</table>\n</body></html>\n");
    o
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
