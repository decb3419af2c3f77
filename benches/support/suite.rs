//! The whole benchmark: backfills at the Pro plan's limits and with them lifted, the
//! hand-written baseline, second runs, render throughput; printed as markdown tables.

use super::render::{self, RenderFigures};
use super::{Bench, BenchError, PIPELINE, RunFigures, Setup, floor::Floor};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The `ferry` binary to run as the child.
    pub ferry: PathBuf,
    /// Scratch directory for the projects and state files.
    pub dir: PathBuf,
    /// Meetings of the backfill under the Pro plan's limits.
    pub limited_meetings: usize,
    /// Backfill sizes with the limits lifted (peak memory at each shows flatness).
    pub unlimited_meetings: Vec<usize>,
    /// Latency of every simulated request in the rate-limited backfill.
    pub latency_ms: u64,
    /// Latency with the limits lifted (0: measure CPU, not waiting).
    pub unlimited_latency_ms: u64,
    /// Meetings the baseline works on at once.
    pub baseline_workers: usize,
    pub render_records: usize,
    pub seed: u64,
    /// The Zoom connection's `headroom` in the benchmark's project (ferry's default is 0.8).
    pub headroom: f64,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl SuiteOptions {
    pub fn new(ferry: PathBuf, dir: PathBuf) -> Self {
        SuiteOptions {
            ferry,
            dir,
            limited_meetings: 2_000,
            unlimited_meetings: vec![5_000, 20_000],
            latency_ms: 40,
            unlimited_latency_ms: 0,
            baseline_workers: 16,
            render_records: 50_000,
            seed: 7,
            headroom: 0.9,
            verbose: true,
        }
    }
}

/// One backfill size: ferry's first and second run, the baseline, the floor.
#[derive(Debug, Clone)]
pub struct Backfill {
    pub setup: Setup,
    pub first: RunFigures,
    pub second: RunFigures,
    pub floor: Floor,
    pub baseline: Option<RunFigures>,
}

#[derive(Debug, Clone)]
pub struct SuiteReport {
    pub limited: Backfill,
    pub unlimited: Vec<Backfill>,
    pub render: RenderFigures,
}

fn note(opts: &SuiteOptions, s: &str) {
    if opts.verbose {
        eprintln!("[bench] {s}");
    }
}

async fn backfill(
    opts: &SuiteOptions,
    setup: Setup,
    with_baseline: bool,
) -> Result<(Backfill, Bench), BenchError> {
    let tag = format!(
        "{}-{}",
        setup.meetings,
        if setup.rate_limited {
            "limited"
        } else {
            "lifted"
        }
    );
    let baseline = if with_baseline {
        note(
            opts,
            &format!("{tag}: hand-written baseline ({} meetings)", setup.meetings),
        );
        let b = Bench::start(setup.clone(), &opts.dir.join(format!("{tag}-baseline"))).await?;
        Some(b.run_baseline(opts.baseline_workers).await?)
    } else {
        None
    };
    note(
        opts,
        &format!("{tag}: ferry run ({} meetings)", setup.meetings),
    );
    let bench = Bench::start(setup.clone(), &opts.dir.join(&tag)).await?;
    let first = bench.run_ferry(&opts.ferry, "first run").await?;
    note(opts, &format!("{tag}: ferry run again (nothing new)"));
    let second = bench.run_ferry(&opts.ferry, "second run").await?;
    let floor = bench.floor(&first);
    Ok((
        Backfill {
            setup,
            first,
            second,
            floor,
            baseline,
        },
        bench,
    ))
}

/// Runs everything and returns the figures.
pub async fn run(opts: &SuiteOptions) -> Result<SuiteReport, BenchError> {
    let (limited, bench) = backfill(
        opts,
        Setup {
            meetings: opts.limited_meetings,
            rate_limited: true,
            latency_ms: opts.latency_ms,
            seed: opts.seed,
            headroom: opts.headroom,
        },
        true,
    )
    .await?;
    note(opts, "render throughput");
    let render = render_figures(&bench, opts.render_records)?;
    drop(bench);
    let mut unlimited = Vec::new();
    for &n in &opts.unlimited_meetings {
        let (b, _) = backfill(
            opts,
            Setup {
                meetings: n,
                rate_limited: false,
                latency_ms: opts.unlimited_latency_ms,
                seed: opts.seed,
                headroom: opts.headroom,
            },
            false,
        )
        .await?;
        unlimited.push(b);
    }
    Ok(SuiteReport {
        limited,
        unlimited,
        render,
    })
}

/// The render throughput alone, over the world of the rate-limited backfill's size.
pub async fn render_only(opts: &SuiteOptions) -> Result<RenderFigures, BenchError> {
    let setup = Setup {
        meetings: opts.limited_meetings,
        rate_limited: false,
        latency_ms: 0,
        seed: opts.seed,
        headroom: opts.headroom,
    };
    let bench = Bench::start(setup, &opts.dir.join("render")).await?;
    render_figures(&bench, opts.render_records)
}

/// Render throughput over the bench world's meetings, through the project's pipeline.
pub fn render_figures(bench: &Bench, n: usize) -> Result<RenderFigures, BenchError> {
    let owned = ferry::config::builtin_catalogs();
    let catalogs: Vec<&dyn ferry::config::StreamCatalog> =
        owned.iter().map(|c| c.as_ref()).collect();
    let project = ferry::config::load_project(&bench.config, &catalogs)
        .map_err(|d| BenchError::Project(d.render()))?;
    let p = project
        .pipeline(PIPELINE)
        .ok_or_else(|| BenchError::Project(format!("no pipeline {PIPELINE}")))?;
    let settings = serde_json::Value::Object(project.config.settings.clone());
    let cases = render::synthetic_cases(&bench.sandbox.world);
    render::throughput(p, &settings, &cases, n).map_err(BenchError::Project)
}

/// The machine the figures came from.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown memory".into());
    format!("{model}; {cpus} CPUs available (nproc); {mem} memory")
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "–".into()
    } else {
        format!("{:.3}×", a / b)
    }
}

fn yes(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Salesforce, Zoom, time and memory of one run as table rows.
fn run_rows(out: &mut String, r: &RunFigures) {
    let sf = &r.salesforce_by_kind;
    let _ = writeln!(
        out,
        "| {} | {} | {} | {:.4} | {} q / {} composite / {} coll / {} bulk / {} sobject / {} describe | {} | {} | {} |",
        r.label,
        r.meetings_read,
        r.writes.events,
        r.salesforce_per_meeting(),
        sf.query,
        sf.composite,
        sf.collections,
        sf.bulk,
        sf.sobject,
        sf.describe,
        r.salesforce_calls,
        r.zoom.requests,
        r.zoom.responses_429,
    );
}

/// The org against the oracle and the longest request, after a backfill's first run.
fn oracle_line(out: &mut String, r: &RunFigures) {
    let _ = writeln!(
        out,
        "\nLongest Salesforce request: {} bytes of URI + headers (limit 16,384: {}).",
        r.longest_request,
        yes(r.longest_request <= 16_384)
    );
    if let Some(o) = &r.oracle {
        let _ = writeln!(
            out,
            "The org against the oracle: {} Events of {} expected ({} missing, {} unexpected), {} EventRelations of {}, {} Tasks of {}: {}.",
            o.events,
            o.expected_events,
            o.missing,
            o.unexpected,
            o.relations,
            o.expected_relations,
            o.tasks,
            o.expected_tasks,
            if o.holds() { "equal" } else { "DIFFERENT" }
        );
    }
}

/// The report as markdown.
pub fn render_markdown(rep: &SuiteReport, command: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Machine: {}  ", machine());
    let _ = writeln!(o, "Command: `{command}`\n");

    let l = &rep.limited;
    let _ = writeln!(
        o,
        "### Backfill of {} meetings at the Zoom Pro plan's limits ({} ms per request)\n",
        l.setup.meetings, l.setup.latency_ms
    );
    let _ = writeln!(
        o,
        "| run | meetings read | Events | SF calls / meeting | SF calls by kind | SF calls | Zoom requests | Zoom 429s |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---|---:|---:|---:|");
    for r in [Some(&l.first), Some(&l.second), l.baseline.as_ref()]
        .into_iter()
        .flatten()
    {
        run_rows(&mut o, r);
    }
    oracle_line(&mut o, &l.first);
    let _ = writeln!(
        o,
        "\nFloor for what the first run wrote: {} calls ({} writes at 200 a call for {} Events, {} EventRelations, {} Tasks, {} Opportunities; {} lookup calls carrying {} queries within the 16,384-byte request limit, five to a Composite, for {} distinct keys over {} rules) = {:.4} per meeting; ferry spent {:.2}× the floor.\n",
        l.floor.total(),
        l.floor.write_calls,
        l.first.writes.events,
        l.first.writes.event_relations,
        l.first.writes.tasks,
        l.first.writes.opportunities,
        l.floor.lookup_calls,
        l.floor.lookup_queries,
        l.floor.lookup_keys.values().sum::<usize>(),
        l.floor.lookup_keys.len(),
        l.floor.total() as f64 / l.first.writes.events.max(1) as f64,
        l.first.salesforce_calls as f64 / l.floor.total().max(1) as f64,
    );
    zoom_table(&mut o, &l.first, l.setup.headroom);
    time_table(&mut o, std::slice::from_ref(l));
    if let Some(b) = &l.baseline {
        let f = &l.first;
        let _ = writeln!(
            o,
            "\nferry as a ratio of the hand-written baseline (same world, same simulators):\n"
        );
        let _ = writeln!(o, "| figure | ferry | baseline | ferry / baseline |");
        let _ = writeln!(o, "|---|---:|---:|---:|");
        let rows: [(&str, f64, f64); 6] = [
            (
                "Salesforce calls",
                f.salesforce_calls as f64,
                b.salesforce_calls as f64,
            ),
            (
                "Salesforce calls per meeting",
                f.salesforce_per_meeting(),
                b.salesforce_per_meeting(),
            ),
            (
                "Zoom requests",
                f.zoom.requests as f64,
                b.zoom.requests as f64,
            ),
            (
                "Zoom 429s",
                f.zoom.responses_429 as f64,
                b.zoom.responses_429 as f64,
            ),
            ("wall time (s)", f.wall.as_secs_f64(), b.wall.as_secs_f64()),
            (
                "Events written",
                f.writes.events as f64,
                b.writes.events as f64,
            ),
        ];
        for (name, a, c) in rows {
            let _ = writeln!(o, "| {name} | {a:.3} | {c:.3} | {} |", ratio(a, c));
        }
    }

    for u in &rep.unlimited {
        let _ = writeln!(
            o,
            "\n### Backfill of {} meetings with the limits lifted ({} ms per request)\n",
            u.setup.meetings, u.setup.latency_ms
        );
        let _ = writeln!(
            o,
            "| run | meetings read | Events | SF calls / meeting | SF calls by kind | SF calls | Zoom requests | Zoom 429s |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---|---:|---:|---:|");
        run_rows(&mut o, &u.first);
        run_rows(&mut o, &u.second);
        oracle_line(&mut o, &u.first);
        let _ = writeln!(
            o,
            "\nFloor: {} calls ({:.4} per meeting); ferry spent {:.2}× the floor.",
            u.floor.total(),
            u.floor.total() as f64 / u.first.writes.events.max(1) as f64,
            u.first.salesforce_calls as f64 / u.floor.total().max(1) as f64,
        );
    }
    if !rep.unlimited.is_empty() {
        let _ = writeln!(o, "\n### ferry's time and memory\n");
        let mut all = vec![rep.limited.clone()];
        all.extend(rep.unlimited.iter().cloned());
        time_table(&mut o, &all);
    }

    let r = &rep.render;
    let _ = writeln!(
        o,
        "\n### Offline render throughput\n\n{} meetings through `{PIPELINE}`'s where, lookups (canned), vars and every sink on one thread: {} ({:.0} meetings/s; {} sink records, {:.0}/s; {:.1} template evaluations per meeting, {} of {} left to minijinja).",
        r.records,
        secs(r.elapsed),
        r.per_second(),
        r.sink_records,
        r.sink_records_per_second(),
        (r.direct + r.by_minijinja) as f64 / r.records.max(1) as f64,
        r.by_minijinja,
        r.direct + r.by_minijinja
    );

    // Targets
    let big = rep
        .unlimited
        .iter()
        .max_by_key(|b| b.setup.meetings)
        .unwrap_or(&rep.limited);
    let sf_per = big.first.salesforce_per_meeting();
    let (share, share_cat) = binding_share(&rep.limited.first);
    let z = &rep.limited.first.zoom;
    let pct429 = z.responses_429 as f64 / z.requests.max(1) as f64 * 100.0;
    let peak = big
        .first
        .ferry
        .as_ref()
        .map(|c| c.peak_rss_mib())
        .unwrap_or(0.0);
    let _ = writeln!(o, "\n### Targets\n");
    let _ = writeln!(o, "| target | figure | |");
    let _ = writeln!(o, "|---|---:|---|");
    let _ = writeln!(
        o,
        "| ≤ 0.05 Salesforce calls per meeting ({} meetings) | {sf_per:.4} | {} |",
        big.setup.meetings,
        yes(sf_per <= 0.05)
    );
    let _ = writeln!(
        o,
        "| Zoom at ≥ 80% of the allowed rate ({share_cat}, the binding category; `headroom: {}`) | {:.1}% | {} |",
        rep.limited.setup.headroom,
        share * 100.0,
        yes(share >= 0.8)
    );
    let _ = writeln!(
        o,
        "| < 1% of Zoom requests answered 429 | {pct429:.2}% | {} |",
        yes(pct429 < 1.0)
    );
    let _ = writeln!(
        o,
        "| peak memory < 100 MiB ({} meetings) | {peak:.1} MiB | {} |",
        big.setup.meetings,
        yes(peak < 100.0)
    );
    let _ = writeln!(
        o,
        "| ≥ 100,000 records/s through the templates (Salesforce records rendered; the source meetings they came from in brackets) | {:.0} ({:.0} meetings/s) | {} |",
        r.sink_records_per_second(),
        r.per_second(),
        yes(r.sink_records_per_second() >= 100_000.0)
    );
    o
}

/// The binding category (the highest share of its published rate, among categories with a
/// steady stream of requests) and that share.
pub fn binding_share(r: &RunFigures) -> (f64, String) {
    r.zoom
        .per_category
        .iter()
        .filter(|(_, c)| c.requests >= 10)
        .map(|(name, c)| (c.share_of_published(), name.clone()))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, "none".into()))
}

fn zoom_table(o: &mut String, r: &RunFigures, headroom: f64) {
    let _ = writeln!(
        o,
        "Zoom by category ({}; allowed = the Pro plan's published rate; ferry paces to {:.0}% of it, its `headroom`):\n",
        r.label,
        headroom * 100.0
    );
    let _ = writeln!(
        o,
        "| category | requests | 429s | active for | achieved rate | allowed rate | share of allowed |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, c) in &r.zoom.per_category {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {:.2}/s | {:.2}/s | {:.1}% |",
            c.requests,
            c.responses_429,
            secs(c.span),
            c.rate(),
            c.published_per_second,
            c.share_of_published() * 100.0
        );
    }
    let _ = writeln!(o, "\nZoom by endpoint: {}", {
        let v: Vec<String> = r
            .zoom
            .per_endpoint
            .iter()
            .map(|(e, n)| format!("`{e}` {n}"))
            .collect();
        v.join(", ")
    });
    if let Some(c) = &r.ferry {
        let _ = writeln!(
            o,
            "\nferry's own count: {} Zoom requests (token included), {} answered 429, {:.1} s spent pacing; {} Salesforce requests (token included), {} answered 429.\n",
            c.log.zoom_calls,
            c.log.zoom_429,
            c.log.zoom_wait_ms as f64 / 1000.0,
            c.log.salesforce_calls,
            c.log.salesforce_429
        );
    }
}

fn time_table(o: &mut String, all: &[Backfill]) {
    let _ = writeln!(
        o,
        "| backfill | run | wall | CPU (user + sys) | peak RSS | meetings/s |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|");
    for b in all {
        for r in [&b.first, &b.second] {
            if let Some(c) = &r.ferry {
                let _ = writeln!(
                    o,
                    "| {} meetings, {} | {} | {} | {} | {:.1} MiB | {:.0} |",
                    b.setup.meetings,
                    if b.setup.rate_limited {
                        "Pro limits"
                    } else {
                        "limits lifted"
                    },
                    r.label,
                    secs(c.wall),
                    secs(c.cpu()),
                    c.peak_rss_mib(),
                    r.meetings_read as f64 / c.wall.as_secs_f64().max(1e-3)
                );
            }
        }
    }
}
