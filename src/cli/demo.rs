//! `ferry demo` and `ferry sandbox`: the built-in simulators, end to end or served by hand.

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, Global};
use crate::engine::report::PipelineReport;
use crate::engine::{Engine, Mode, RunOptions, connect};
use crate::sim::sandbox::{Sandbox, SandboxOptions, all_example_pipelines};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the demo project (ferry.yaml, pipelines, state); default: a new
    /// directory under the system's temp directory
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many meetings the simulated Zoom account holds
    #[arg(long, default_value_t = 120)]
    pub meetings: usize,
}

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Where to write a ferry.yaml and the example pipelines that point at the simulators
    #[arg(long, default_value = "sandbox")]
    pub dir: PathBuf,
    /// How many meetings the simulated Zoom account holds
    #[arg(long, default_value_t = 120)]
    pub meetings: usize,
    /// Delay added to every Zoom API answer, as a network would (a client that waits for
    /// each answer then stays nearer the per-second limits' intent)
    #[arg(long, default_value_t = 0)]
    pub zoom_latency_ms: u64,
}

fn demo_dir(arg: &Option<PathBuf>) -> PathBuf {
    arg.clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id())))
}

pub async fn run(_g: &Global, a: &DemoArgs) -> anyhow::Result<u8> {
    let clock = crate::clock::system();
    let mut opts = SandboxOptions::new(clock.clone());
    opts.scale.meetings = a.meetings;
    opts.reverse = true;
    println!("Starting the simulated Zoom account and Salesforce org on 127.0.0.1 …");
    let sandbox = Sandbox::start(opts).await?;
    let w = &sandbox.world;
    let s = &sandbox.seeded;
    println!(
        "  Zoom: {} hosts, {} meetings, {} webinars, {} phone calls over the last {} days",
        w.users.len(),
        w.meetings.len(),
        w.webinars.len(),
        w.calls.len(),
        w.scale.days
    );
    println!(
        "  Salesforce: {} Users, {} Accounts, {} Contacts, {} Leads, {} open Opportunities, {} Campaigns",
        s.users, s.accounts, s.contacts, s.leads, s.opportunities, s.campaigns
    );
    println!(
        "            {} Events flagged for a Zoom meeting, a webinar Campaign with {} members to register",
        s.flagged_events, s.webinar_members
    );
    let dir = demo_dir(&a.dir);
    let config = sandbox.write_project(&dir, &all_example_pipelines())?;
    println!("  Project: {}", dir.display());

    let owned = crate::config::builtin_catalogs();
    let catalogs: Vec<&dyn crate::config::StreamCatalog> =
        owned.iter().map(|c| c.as_ref()).collect();
    let project = match crate::config::load_project(&config, &catalogs) {
        Ok(p) => p,
        Err(d) => {
            eprint!("{}", d.render());
            return Ok(EXIT_INVALID);
        }
    };
    let conns = match connect::connect(&project, clock.clone()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_FAILED);
        }
    };
    let settings = serde_json::Value::Object(project.config.settings.clone());

    // 1. Plan: what the meetings pipeline would write, before anything is written.
    println!("\n== 1. ferry plan meetings-to-events  (a dry run: nothing is written) ==\n");
    let Some(meetings) = project.pipeline("meetings-to-events") else {
        eprintln!("error: the demo project has no meetings-to-events pipeline");
        return Ok(EXIT_FAILED);
    };
    let engine = |now| Engine {
        store: &conns.store,
        source: &conns.source,
        matcher: &conns.salesforce,
        sink: &conns.salesforce,
        zoom: Some(&conns.zoom.conn),
        settings: &settings,
        now,
    };
    let plan = engine(clock.now())
        .run(meetings, &RunOptions::new(Mode::Plan))
        .await;
    print_plan_excerpt(&plan, 3);

    // 2. Run every pipeline: Salesforce → Zoom first (the webinar before its registrants),
    // then Zoom → Salesforce.
    println!("\n== 2. ferry run  (every example pipeline, both directions) ==\n");
    let events_before = sandbox.salesforce.records("Event").len();
    let mut pipelines: Vec<&crate::config::Pipeline> = project.pipelines.iter().collect();
    pipelines.sort_by_key(|p| {
        REVERSE_ORDER
            .iter()
            .position(|n| *n == p.name)
            .unwrap_or(REVERSE_ORDER.len())
    });
    let mut first: Vec<PipelineReport> = Vec::new();
    for p in &pipelines {
        let report = engine(clock.now())
            .run(p, &RunOptions::new(Mode::Run))
            .await;
        print_run(&report);
        first.push(report);
    }
    conns.save_budget().await;

    // 3. Run again: nothing new on either side, so nothing is written.
    println!("\n== 3. ferry run again  (nothing new in Zoom or Salesforce) ==\n");
    let zoom_requests_before = sandbox.zoom.requests().len();
    let mut second: Vec<PipelineReport> = Vec::new();
    for p in &pipelines {
        let report = engine(clock.now())
            .run(p, &RunOptions::new(Mode::Run))
            .await;
        print_run(&report);
        second.push(report);
    }
    conns.save_budget().await;

    // 4. What happened, in a minute.
    println!("\n== What ferry did ==\n");
    let second_zoom_writes = sandbox
        .zoom
        .requests()
        .iter()
        .skip(zoom_requests_before)
        .filter(|r| r.method != "GET" && !r.endpoint.contains("/oauth/"))
        .count();
    print_reverse(&sandbox, &first);
    println!("  Zoom → Salesforce:");
    let sf = &sandbox.salesforce;
    let created = |o: &str| sf.records(o).len();
    println!(
        "  Salesforce now holds {} Events ({} before), {} EventRelations, {} Tasks, {} CampaignMembers.",
        created("Event"),
        events_before,
        created("EventRelation"),
        created("Task"),
        created("CampaignMember")
    );
    let opp_touched = sf
        .records("Opportunity")
        .iter()
        .filter(|o| o.get("Last_Zoom_Meeting__c").is_some_and(|v| !v.is_null()))
        .count();
    println!("  {opp_touched} open Opportunities carry their account's last meeting and summary.");
    let unmatched: u64 = first.iter().map(|r| r.summary.unmatched).sum();
    let looked_up: u64 = first.iter().map(|r| r.summary.looked_up).sum();
    println!(
        "  People and records looked up: {looked_up}; not in Salesforce: {unmatched} (reported, never guessed)."
    );
    let sf_calls: u64 = first.iter().map(|r| r.summary.api_calls.salesforce).sum();
    let zoom_calls: u64 = first.iter().map(|r| r.summary.api_calls.zoom).sum();
    let writes: u64 = first
        .iter()
        .map(|r| r.summary.create + r.summary.update)
        .sum();
    let naive = looked_up + writes;
    println!(
        "  First run: {writes} records written with {sf_calls} Salesforce API calls ({zoom_calls} Zoom requests)."
    );
    if sf_calls > 0 {
        println!(
            "  One query per person and one call per record would have spent about {naive} calls: {:.0}× more.",
            naive as f64 / sf_calls as f64
        );
    }
    let second_writes: u64 = second
        .iter()
        .map(|r| r.summary.create + r.summary.update)
        .sum();
    let second_sf: u64 = second.iter().map(|r| r.summary.api_calls.salesforce).sum();
    println!(
        "  Second run: {second_writes} records written ({second_zoom_writes} Zoom writes), {second_sf} Salesforce calls (reads and lookups only; the ledger knew the rest)."
    );
    let failed: Vec<&PipelineReport> = first.iter().chain(&second).filter(|r| r.failed()).collect();
    for r in &failed {
        println!(
            "  {} stopped: {}",
            r.pipeline,
            r.stopped.as_deref().unwrap_or("")
        );
    }
    println!(
        "\nTry it yourself: ferry --config {} plan --format markdown",
        config.display()
    );
    println!("(or `ferry sandbox` to keep the simulators running)");
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// The Salesforce → Zoom pipelines, in the order they depend on each other.
const REVERSE_ORDER: &[&str] = &[
    "campaigns-to-zoom-webinars",
    "campaign-members-to-webinar-registrants",
    "events-to-zoom-meetings",
];

/// What went from Salesforce to Zoom: what Zoom now holds (from the simulator) and the
/// links the first run wrote back.
fn print_reverse(sandbox: &Sandbox, first: &[PipelineReport]) {
    let written = sandbox.zoom.written_meetings();
    let is_webinar = |b: &serde_json::Map<String, serde_json::Value>| {
        b.get("type").and_then(serde_json::Value::as_i64) == Some(5)
    };
    let meetings = written.iter().filter(|(_, _, b)| !is_webinar(b)).count();
    let webinars: Vec<u64> = written
        .iter()
        .filter(|(_, _, b)| is_webinar(b))
        .map(|(id, _, _)| *id)
        .collect();
    let registrants: usize = webinars
        .iter()
        .map(|id| sandbox.zoom.written_registrants(*id).len())
        .sum();
    let links = |pipeline: &str| -> u64 {
        first
            .iter()
            .filter(|r| r.pipeline == pipeline)
            .filter_map(|r| r.per_sink.get("link"))
            .sum()
    };
    // "1 webinar", "2 webinars": the counts come from the simulators, any of them may be 1.
    let n = |count: u64, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    let count = |c: usize| u64::try_from(c).unwrap_or(u64::MAX);
    println!("  Salesforce → Zoom:");
    println!(
        "  {} created from flagged Events (join link and meeting id written back to {});",
        n(count(meetings), "meeting", "meetings"),
        n(links("events-to-zoom-meetings"), "Event", "Events")
    );
    println!(
        "  {} from flagged Campaigns (webinar id written back to {}); {} from their Campaign Members (join links written back to {}).",
        n(count(webinars.len()), "webinar", "webinars"),
        n(links("campaigns-to-zoom-webinars"), "Campaign", "Campaigns"),
        n(count(registrants), "registrant", "registrants"),
        n(
            links("campaign-members-to-webinar-registrants"),
            "member",
            "members"
        )
    );
}

fn print_plan_excerpt(plan: &PipelineReport, n: usize) {
    let mut shown = plan.clone();
    let interesting: Vec<_> = plan
        .records
        .iter()
        .filter(|r| !r.writes.is_empty())
        .take(n)
        .cloned()
        .collect();
    let more = plan.records.len().saturating_sub(interesting.len());
    shown.records = interesting;
    for line in shown.render_text().lines().skip(1) {
        println!("  {line}");
    }
    if more > 0 {
        println!("  ({more} more meetings in the full plan)");
    }
}

fn print_run(r: &PipelineReport) {
    let written: Vec<String> = r.per_sink.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "  {:<40} read {:>4}   written {:>4} {}   unchanged {:>4}   not in Salesforce {:>3}   calls: Zoom {:>4}, Salesforce {:>3}{}",
        r.pipeline,
        r.records_read,
        r.summary.create + r.summary.update,
        if written.is_empty() {
            String::new()
        } else {
            format!("({})", written.join(", "))
        },
        r.summary.unchanged,
        r.summary.unmatched,
        r.summary.api_calls.zoom,
        r.summary.api_calls.salesforce,
        r.stopped
            .as_ref()
            .map(|s| format!("   STOPPED: {s}"))
            .unwrap_or_default()
    );
}

pub async fn sandbox(_g: &Global, a: &SandboxArgs) -> anyhow::Result<u8> {
    let clock = crate::clock::system();
    let mut opts = SandboxOptions::new(clock);
    opts.scale.meetings = a.meetings;
    opts.reverse = true;
    opts.zoom_faults.latency_ms = a.zoom_latency_ms;
    let sandbox = Sandbox::start(opts).await?;
    let config = sandbox.write_project(&a.dir, &all_example_pipelines())?;
    let z = &sandbox.zoom;
    println!("Zoom simulator:       {}", z.base_url);
    println!("  token URL:          {}", z.token_url);
    println!("  account_id:         {}", z.account_id);
    println!("  client_id:          {}", z.client_id);
    println!("  client_secret:      {}", z.client_secret);
    let w = &sandbox.world;
    println!(
        "  world:              {} users, {} meetings, {} webinars, {} phone calls over {} days",
        w.users.len(),
        w.meetings.len(),
        w.webinars.len(),
        w.calls.len(),
        w.scale.days
    );
    println!("Salesforce simulator: {}", sandbox.salesforce.instance_url);
    println!(
        "Project written to {} (edit its pipelines and try):",
        a.dir.display()
    );
    println!("  ferry --config {} validate", config.display());
    println!("  ferry --config {} plan", config.display());
    println!("  ferry --config {} run", config.display());
    println!("Press Ctrl-C to stop (a summary of the Zoom requests served follows).");
    stopped().await?;
    print_zoom_requests(&sandbox.zoom);
    Ok(EXIT_OK)
}

/// Ctrl-C, or SIGTERM where there is one (a script stopping a background sandbox).
async fn stopped() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// What the Zoom simulator served: by rate-limit category and by endpoint, with the
/// 429s and tokens, so a peer connector's run can be set beside ferry's.
fn print_zoom_requests(zoom: &crate::sim::zoom::ZoomSimHandle) {
    use std::collections::BTreeMap;
    let log = zoom.requests();
    let stats = zoom.stats();
    println!(
        "\nZoom simulator served {} requests ({} answered 429, {} tokens issued).",
        log.len(),
        stats.responses_429,
        stats.tokens_issued
    );
    // category → (requests, 429s, other errors)
    let mut by_category: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    // endpoint → (requests, 429s, other errors)
    let mut by_endpoint: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in &log {
        let category = match &r.category {
            Some(c) => c.clone(),
            None if r.endpoint.contains("/oauth/") => "oauth".into(),
            None => "(no such endpoint: 404)".into(),
        };
        for e in [
            by_category.entry(category).or_default(),
            by_endpoint.entry(r.endpoint.clone()).or_default(),
        ] {
            e.0 += 1;
            if r.status == 429 {
                e.1 += 1;
            } else if r.status >= 400 {
                e.2 += 1;
            }
        }
    }
    println!(
        "  {:<52} {:>8} {:>6} {:>6}",
        "category", "requests", "429", "4xx/5xx"
    );
    for (k, (n, limited, failed)) in &by_category {
        println!("  {k:<52} {n:>8} {limited:>6} {failed:>6}");
    }
    println!(
        "  {:<52} {:>8} {:>6} {:>6}",
        "endpoint", "requests", "429", "4xx/5xx"
    );
    for (k, (n, limited, failed)) in &by_endpoint {
        println!("  {k:<52} {n:>8} {limited:>6} {failed:>6}");
    }
}
