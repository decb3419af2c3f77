//! Counters the daemon exposes at /metrics in Prometheus' text format.

use crate::engine::report::PipelineReport;
use crate::http::Metrics as HttpMetrics;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Totals per pipeline and sink, fed from each run's report.
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    inner: Mutex<Totals>,
}

#[derive(Debug, Default, Clone)]
struct Totals {
    /// (pipeline) → records read
    read: BTreeMap<String, u64>,
    /// (pipeline, sink) → records written
    written: BTreeMap<(String, String), u64>,
    skipped: BTreeMap<String, u64>,
    unchanged: BTreeMap<String, u64>,
    dead_lettered: BTreeMap<String, u64>,
    runs: BTreeMap<(String, &'static str), u64>,
    /// (pipeline) → (sum of seconds, count) of run durations
    durations: BTreeMap<String, (f64, u64)>,
    webhooks: BTreeMap<&'static str, u64>,
}

impl DaemonMetrics {
    fn with<R>(&self, f: impl FnOnce(&mut Totals) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adds a finished run.
    pub fn record_run(&self, r: &PipelineReport, seconds: f64) {
        self.with(|t| {
            *t.read.entry(r.pipeline.clone()).or_default() += r.records_read;
            for (sink, n) in &r.per_sink {
                *t.written
                    .entry((r.pipeline.clone(), sink.clone()))
                    .or_default() += n;
            }
            *t.skipped.entry(r.pipeline.clone()).or_default() += r.summary.skip;
            *t.unchanged.entry(r.pipeline.clone()).or_default() += r.summary.unchanged;
            *t.dead_lettered.entry(r.pipeline.clone()).or_default() += r.summary.dead_lettered;
            let outcome = if r.failed() { "failed" } else { "ok" };
            *t.runs.entry((r.pipeline.clone(), outcome)).or_default() += 1;
            let d = t.durations.entry(r.pipeline.clone()).or_default();
            d.0 += seconds;
            d.1 += 1;
        });
    }

    /// Counts a webhook delivery by what became of it: accepted, duplicate, rejected.
    pub fn record_webhook(&self, outcome: &'static str) {
        self.with(|t| *t.webhooks.entry(outcome).or_default() += 1);
    }

    /// The Prometheus text exposition.
    pub fn render(
        &self,
        http: &HttpMetrics,
        inbox: crate::state::InboxCounts,
        budget: Option<(u64, u64)>,
        deferred: &BTreeMap<String, u64>,
    ) -> String {
        let t = self.with(|t| t.clone());
        let mut o = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            for (labels, v) in rows {
                if labels.is_empty() {
                    let _ = writeln!(o, "{name} {v}");
                } else {
                    let _ = writeln!(o, "{name}{{{labels}}} {v}");
                }
            }
        };
        family(
            "ferry_records_read_total",
            "Source records read, per pipeline.",
            "counter",
            t.read
                .iter()
                .map(|(p, v)| (format!("pipeline=\"{}\"", esc(p)), v.to_string()))
                .collect(),
        );
        family(
            "ferry_records_written_total",
            "Salesforce records created or updated, per pipeline and sink.",
            "counter",
            t.written
                .iter()
                .map(|((p, s), v)| {
                    (
                        format!("pipeline=\"{}\",sink=\"{}\"", esc(p), esc(s)),
                        v.to_string(),
                    )
                })
                .collect(),
        );
        for (name, help, map) in [
            (
                "ferry_records_skipped_total",
                "Writes skipped by `when` or an empty `for_each`.",
                &t.skipped,
            ),
            (
                "ferry_records_unchanged_total",
                "Writes not sent because the ledger showed no change.",
                &t.unchanged,
            ),
            (
                "ferry_records_dead_lettered_total",
                "Records rejected and kept as dead letters.",
                &t.dead_lettered,
            ),
        ] {
            family(
                name,
                help,
                "counter",
                map.iter()
                    .map(|(p, v)| (format!("pipeline=\"{}\"", esc(p)), v.to_string()))
                    .collect(),
            );
        }
        family(
            "ferry_runs_total",
            "Finished runs, per pipeline and outcome.",
            "counter",
            t.runs
                .iter()
                .map(|((p, r), v)| {
                    (
                        format!("pipeline=\"{}\",outcome=\"{r}\"", esc(p)),
                        v.to_string(),
                    )
                })
                .collect(),
        );
        let mut rows = Vec::new();
        for (p, (sum, n)) in &t.durations {
            rows.push((format!("pipeline=\"{}\"", esc(p)), format!("{sum:.3}")));
            let _ = n;
        }
        family(
            "ferry_run_duration_seconds_sum",
            "Total seconds spent in runs, per pipeline.",
            "counter",
            rows,
        );
        family(
            "ferry_run_duration_seconds_count",
            "Number of timed runs, per pipeline.",
            "counter",
            t.durations
                .iter()
                .map(|(p, (_, n))| (format!("pipeline=\"{}\"", esc(p)), n.to_string()))
                .collect(),
        );
        let snap = http.snapshot();
        family(
            "ferry_api_requests_total",
            "HTTP requests sent, per service and rate-limit category (retries included).",
            "counter",
            snap.iter()
                .map(|((s, c), v)| {
                    (
                        format!("service=\"{}\",category=\"{}\"", s.as_str(), esc(c)),
                        v.requests.to_string(),
                    )
                })
                .collect(),
        );
        family(
            "ferry_api_429_total",
            "Responses with HTTP 429, per service and category.",
            "counter",
            snap.iter()
                .map(|((s, c), v)| {
                    (
                        format!("service=\"{}\",category=\"{}\"", s.as_str(), esc(c)),
                        v.responses_429.to_string(),
                    )
                })
                .collect(),
        );
        family(
            "ferry_webhooks_total",
            "Webhook deliveries, by outcome.",
            "counter",
            t.webhooks
                .iter()
                .map(|(k, v)| (format!("outcome=\"{k}\""), v.to_string()))
                .collect(),
        );
        family(
            "ferry_inbox_depth",
            "Webhook events stored and not yet processed.",
            "gauge",
            vec![(String::new(), (inbox.pending + inbox.retrying).to_string())],
        );
        family(
            "ferry_inbox_events",
            "Webhook events in the inbox by state: pending (not tried yet), retrying (failed, tried again later), dead (failed for a day; see `ferry inbox`).",
            "gauge",
            [
                ("pending", inbox.pending),
                ("retrying", inbox.retrying),
                ("dead", inbox.dead),
            ]
            .into_iter()
            .map(|(k, v)| (format!("state=\"{k}\""), v.to_string()))
            .collect(),
        );
        family(
            "ferry_deferred_records",
            "Records a Zoom daily limit (or a lost answer) holds back, waiting in the state, per pipeline.",
            "gauge",
            deferred
                .iter()
                .map(|(p, v)| (format!("pipeline=\"{}\"", esc(p)), v.to_string()))
                .collect(),
        );
        if let Some((used, max)) = budget {
            family(
                "ferry_salesforce_budget_used",
                "Salesforce API calls ferry spent in the rolling day.",
                "gauge",
                vec![(String::new(), used.to_string())],
            );
            family(
                "ferry_salesforce_budget_limit",
                "Salesforce API calls ferry may spend per rolling day (daily_budget).",
                "gauge",
                vec![(String::new(), max.to_string())],
            );
        }
        o
    }
}
