//! Benchmarks against the built-in simulators (`cargo bench --bench sync`): a backfill of
//! the reference meetings pipeline by the real `ferry run` binary as a child process, the
//! same job done the hand-written way, a second run with nothing new, and offline render
//! throughput. Figures come from three independent places: the simulators' own counters,
//! ferry's log line and the kernel's accounting of the child.

pub mod baseline;
pub mod child;
pub mod floor;
pub mod oracle;
pub mod render;
pub mod suite;

use child::ChildRun;
use chrono::{DateTime, Utc};
use ferry::connectors::zoom::limits::{ZoomPlan, published};
use ferry::sim::salesforce::{SfFaults, SimCalls};
use ferry::sim::sandbox::{EXAMPLE_PIPELINES, Sandbox, SandboxError, SandboxOptions};
use ferry::sim::world::Scale;
use floor::Floor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The reference pipeline every figure is about.
pub const PIPELINE: &str = "meetings-to-events";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("running ferry: {0}")]
    Child(String),
    #[error("the hand-written baseline: {0}")]
    Baseline(String),
    #[error("the benchmark project: {0}")]
    Project(String),
}

/// One simulated account and org for one backfill.
#[derive(Debug, Clone)]
pub struct Setup {
    pub meetings: usize,
    /// The Pro plan's limits, enforced by the Zoom simulator and paced to by ferry; false
    /// lifts both (CPU and memory runs).
    pub rate_limited: bool,
    /// Added to every simulated request, Zoom and Salesforce.
    pub latency_ms: u64,
    pub seed: u64,
    /// The share of the published Zoom limits ferry paces to (the connection's `headroom`).
    pub headroom: f64,
}

/// A Pro account (at most 9 licensed users: 8 here) whose reps hold about four external
/// meetings a day each, so a bigger backfill reaches further back, up to the 170 days that
/// Zoom's reports still cover (six months), beyond which the meetings only get denser; about
/// 8 participants a meeting; 40% recorded and 30% summarized (the world's shares).
pub fn scale_for(meetings: usize, end: DateTime<Utc>) -> Scale {
    Scale {
        users: 8,
        meetings,
        participants_per_meeting: 8,
        companies: (meetings / 10).max(12),
        people_per_company: 8,
        webinars: 0,
        registrants_per_webinar: 0,
        calls: 0,
        days: ((meetings as i64) / 32).clamp(30, 170),
        end,
    }
}

/// The simulators, the project ferry runs against, and where the backfill starts.
pub struct Bench {
    pub setup: Setup,
    pub sandbox: Sandbox,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub since: DateTime<Utc>,
}

/// Zoom requests of one category, as the simulator saw them.
#[derive(Debug, Clone, Default)]
pub struct CategoryFigures {
    pub requests: u64,
    pub responses_429: u64,
    /// From the category's first request to its last.
    pub span: Duration,
    /// The Pro plan's published requests per second.
    pub published_per_second: f64,
}

impl CategoryFigures {
    pub fn rate(&self) -> f64 {
        if self.requests < 2 {
            return 0.0;
        }
        (self.requests - 1) as f64 / self.span.as_secs_f64().max(1e-3)
    }
    pub fn share_of_published(&self) -> f64 {
        self.rate() / self.published_per_second
    }
}

/// Zoom, from the simulator's log.
#[derive(Debug, Clone, Default)]
pub struct ZoomFigures {
    pub requests: u64,
    pub token_requests: u64,
    pub responses_429: u64,
    pub per_category: BTreeMap<String, CategoryFigures>,
    pub per_endpoint: BTreeMap<String, u64>,
}

/// What Salesforce holds afterwards that it did not before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    pub events: u64,
    pub event_relations: u64,
    pub tasks: u64,
    /// Opportunities carrying a last meeting date.
    pub opportunities: u64,
}

/// One measured run, by ferry or by the baseline.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub label: String,
    pub wall: Duration,
    /// Salesforce calls that count against the org's allowance (the simulator's count).
    pub salesforce_calls: u64,
    pub salesforce_by_kind: SimCalls,
    pub zoom: ZoomFigures,
    pub writes: Writes,
    /// Meetings listed by the source (after `where`).
    pub meetings_read: u64,
    /// ferry only: the child process.
    pub ferry: Option<ChildRun>,
    /// The baseline only.
    pub baseline: Option<baseline::BaselineRun>,
    /// The longest Salesforce request (URI + headers, bytes) the simulator saw in the run.
    pub longest_request: usize,
    /// The org against the independent oracle, after a ferry run.
    pub oracle: Option<oracle::OracleCheck>,
}

impl RunFigures {
    /// Salesforce calls per meeting that became an Event.
    pub fn salesforce_per_meeting(&self) -> f64 {
        self.salesforce_calls as f64 / (self.writes.events.max(1)) as f64
    }
}

fn sub_calls(a: &SimCalls, b: &SimCalls) -> SimCalls {
    SimCalls {
        auth: a.auth - b.auth,
        query: a.query - b.query,
        sobject: a.sobject - b.sobject,
        collections: a.collections - b.collections,
        composite: a.composite - b.composite,
        bulk: a.bulk - b.bulk,
        describe: a.describe - b.describe,
        limits: a.limits - b.limits,
        other: a.other - b.other,
        unauthorized: a.unauthorized - b.unauthorized,
        limit_refused: a.limit_refused - b.limit_refused,
    }
}

/// `from` replaced by `to` in the sandbox's ferry.yaml, which must hold it exactly once.
fn replace_setting(yaml: &str, from: &str, to: &str) -> Result<String, BenchError> {
    match yaml.matches(from).count() {
        1 => Ok(yaml.replacen(from, to, 1)),
        n => Err(BenchError::Project(format!(
            "the sandbox's ferry.yaml holds `{from}` {n} times, not once"
        ))),
    }
}

/// `FERRY_BENCH_STATE=postgres://user:password@host:port/db` (with `FERRY_STATE_KEY` set):
/// every project of the benchmark keeps its state in a fresh schema of that database instead
/// of a SQLite file, so the figures compare the two backends.
pub const STATE_ENV: &str = "FERRY_BENCH_STATE";

/// Creates a schema of its own for the project in `dir` and returns the state URL using it.
async fn postgres_state(url: &str, dir: &Path) -> Result<String, BenchError> {
    if std::env::var("FERRY_STATE_KEY").map_or(true, |k| k.trim().is_empty()) {
        return Err(BenchError::Project(format!(
            "{STATE_ENV} needs FERRY_STATE_KEY too (e.g. `openssl rand -hex 32`)"
        )));
    }
    let tag: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let schema = format!("ferry_bench_{}_{tag}", std::process::id());
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| BenchError::Project(format!("{STATE_ENV}: cannot connect: {e}")))?;
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .map_err(|e| BenchError::Project(format!("{STATE_ENV}: cannot create {schema}: {e}")))?;
    drop(client);
    let _ = task.await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}options=-csearch_path%3D{schema}"))
}

impl Bench {
    /// Starts both simulators over a seeded world ending now and writes the project (ferry.yaml
    /// and the reference pipeline, starting where the world starts) into `dir`.
    pub async fn start(setup: Setup, dir: &Path) -> Result<Bench, BenchError> {
        let clock = ferry::clock::system();
        let mut opts = SandboxOptions::new(clock.clone());
        opts.seed = setup.seed;
        opts.scale = scale_for(setup.meetings, clock.now());
        opts.plan = ZoomPlan::Pro;
        opts.zoom_faults.enforce_rate_limits = setup.rate_limited;
        opts.zoom_faults.latency_ms = setup.latency_ms;
        opts.sf_faults = SfFaults {
            latency: (setup.latency_ms > 0).then(|| Duration::from_millis(setup.latency_ms)),
            ..SfFaults::default()
        };
        // The baseline spends an org's worth of calls; the benchmark measures, not refuses.
        opts.sf_daily_limit = 100_000_000;
        let since = opts.scale.end - chrono::Duration::days(opts.scale.days + 1);
        let sandbox = Sandbox::start(opts).await?;
        let (_, text) = EXAMPLE_PIPELINES
            .iter()
            .find(|(n, _)| n.starts_with(PIPELINE))
            .ok_or_else(|| BenchError::Project(format!("no {PIPELINE} pipeline built in")))?;
        let since_line = format!(
            "since: {}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let text = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("since:") {
                    format!("  {since_line}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let _ = std::fs::remove_dir_all(dir);
        let config = sandbox.write_project(dir, &[(&format!("{PIPELINE}.yaml"), &text)])?;
        // ferry's own daily Salesforce budget is sized for a live org, not a backfill test.
        // The figures name the headroom, so a setting that was not applied is an error.
        let yaml =
            std::fs::read_to_string(&config).map_err(|e| BenchError::Project(e.to_string()))?;
        let yaml = replace_setting(&yaml, "daily_budget: 5000", "daily_budget: 1000000")?;
        let yaml = replace_setting(
            &yaml,
            "headroom: 0.8",
            &format!("headroom: {}", setup.headroom),
        )?;
        let yaml = match std::env::var(STATE_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            Some(url) => {
                let state = postgres_state(&url, dir).await?;
                replace_setting(&yaml, "state: .ferry/state.db", &format!("state: {state}"))?
            }
            None => yaml,
        };
        std::fs::write(&config, yaml).map_err(|e| BenchError::Project(e.to_string()))?;
        Ok(Bench {
            setup,
            sandbox,
            dir: dir.to_path_buf(),
            config,
            since,
        })
    }

    fn snapshot(&self) -> (SimCalls, Writes) {
        let sf = &self.sandbox.salesforce;
        let opps = sf
            .records("Opportunity")
            .iter()
            .filter(|o| o.get("Last_Zoom_Meeting__c").is_some_and(|v| !v.is_null()))
            .count() as u64;
        (
            sf.calls(),
            Writes {
                events: sf.records("Event").len() as u64,
                event_relations: sf.records("EventRelation").len() as u64,
                tasks: sf.records("Task").len() as u64,
                opportunities: opps,
            },
        )
    }

    fn zoom_figures(&self) -> ZoomFigures {
        let log = self.sandbox.zoom.requests();
        let mut z = ZoomFigures::default();
        let mut spans: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
        for r in &log {
            *z.per_endpoint.entry(r.endpoint.clone()).or_default() += 1;
            if r.status == 429 {
                z.responses_429 += 1;
            }
            let Some(cat) = &r.category else {
                z.token_requests += 1;
                continue;
            };
            z.requests += 1;
            let c = z.per_category.entry(cat.clone()).or_default();
            c.requests += 1;
            if r.status == 429 {
                c.responses_429 += 1;
            }
            let s = spans.entry(cat.clone()).or_insert((r.at, r.at));
            s.0 = s.0.min(r.at);
            s.1 = s.1.max(r.at);
        }
        for (cat, c) in z.per_category.iter_mut() {
            if let Some((a, b)) = spans.get(cat) {
                c.span = (*b - *a).to_std().unwrap_or_default();
            }
            c.published_per_second = published(ZoomPlan::Pro, cat).0;
        }
        z
    }

    /// One `ferry run` of the reference pipeline, measured on both sides.
    pub async fn run_ferry(&self, ferry: &Path, label: &str) -> Result<RunFigures, BenchError> {
        self.sandbox.zoom.clear_log();
        let (calls0, writes0) = self.snapshot();
        let ferry = ferry.to_path_buf();
        let config = self.config.clone();
        let unpaced = !self.setup.rate_limited;
        let run = tokio::task::spawn_blocking(move || {
            child::run_ferry(&ferry, &config, PIPELINE, unpaced)
        })
        .await
        .map_err(|e| BenchError::Child(e.to_string()))??;
        if run.exit_code != 0 || !run.log.stopped.is_empty() {
            return Err(BenchError::Child(format!(
                "ferry run exited with {} ({})",
                run.exit_code, run.log.stopped
            )));
        }
        let (calls1, writes1) = self.snapshot();
        let by_kind = sub_calls(&calls1, &calls0);
        Ok(RunFigures {
            label: label.to_string(),
            wall: run.wall,
            salesforce_calls: by_kind.api_total(),
            salesforce_by_kind: by_kind,
            zoom: self.zoom_figures(),
            writes: Writes {
                events: writes1.events - writes0.events,
                event_relations: writes1.event_relations - writes0.event_relations,
                tasks: writes1.tasks - writes0.tasks,
                opportunities: writes1.opportunities.saturating_sub(writes0.opportunities),
            },
            meetings_read: run.log.records_read,
            ferry: Some(run),
            baseline: None,
            longest_request: self.sandbox.salesforce.longest_request().total(),
            oracle: Some(oracle::check(&self.sandbox, self.since)),
        })
    }

    /// The hand-written way, against these simulators (use a fresh [`Bench`]: it writes the
    /// same Events ferry would).
    pub async fn run_baseline(&self, workers: usize) -> Result<RunFigures, BenchError> {
        self.sandbox.zoom.clear_log();
        let (calls0, writes0) = self.snapshot();
        let b = baseline::run(&self.sandbox, self.since, workers).await?;
        let (calls1, writes1) = self.snapshot();
        let by_kind = sub_calls(&calls1, &calls0);
        Ok(RunFigures {
            label: "hand-written baseline".into(),
            wall: b.wall,
            salesforce_calls: by_kind.api_total(),
            salesforce_by_kind: by_kind,
            zoom: self.zoom_figures(),
            writes: Writes {
                events: writes1.events - writes0.events,
                event_relations: writes1.event_relations - writes0.event_relations,
                tasks: writes1.tasks - writes0.tasks,
                opportunities: writes1.opportunities.saturating_sub(writes0.opportunities),
            },
            meetings_read: b.meetings_listed,
            ferry: None,
            baseline: Some(b),
            longest_request: self.sandbox.salesforce.longest_request().total(),
            oracle: None,
        })
    }

    /// The fewest Salesforce calls that could have done what `run` did.
    pub fn floor(&self, run: &RunFigures) -> Floor {
        floor::floor(&self.sandbox.world, self.since, &run.writes)
    }
}
