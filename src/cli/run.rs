use super::{EXIT_FAILED, EXIT_OK, Global, LogFormat};
use crate::engine::report::PipelineReport;
use crate::engine::{Engine, Mode, RunOptions};
use crate::http::Service;
use std::io::IsTerminal;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Only this pipeline (default: all, in file order)
    pub pipeline: Option<String>,
    /// Print the per-record detail of what was written
    #[arg(long)]
    pub detail: bool,
    /// When another process is running a pipeline, wait up to this many seconds for it to
    /// finish (0: report who runs it and fail at once)
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
    /// Exit 0 even when records went to dead letters (a run that stopped still exits 1).
    /// Without it, any dead letter makes the run exit 1, so a scheduler notices
    #[arg(long)]
    pub allow_dead_letters: bool,
}

pub async fn run(g: &Global, a: &RunArgs) -> anyhow::Result<u8> {
    let (project, conns, clock) = match super::open_project(g, a.pipeline.as_deref()).await? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let pipelines = super::select_pipelines(&project, a.pipeline.as_deref()).unwrap_or_default();
    let settings = serde_json::Value::Object(project.config.settings.clone());
    let mut failed = false;
    for p in pipelines {
        let engine = Engine {
            store: &conns.store,
            source: &conns.source,
            matcher: &conns.salesforce,
            sink: &conns.salesforce,
            zoom: Some(&conns.zoom.conn),
            settings: &settings,
            now: clock.now(),
        };
        // One pipeline, one runner: another process (a daemon, another `ferry run`) may
        // be running it on this state file.
        let wait = std::time::Duration::from_secs(a.wait);
        let ttl = crate::state::DEFAULT_LEASE_TTL;
        let lease = match crate::state::acquire_waiting(&conns.store, &p.name, ttl, wait).await {
            Ok(Ok(lease)) => crate::state::LeaseGuard::hold(&conns.store, lease, ttl),
            Ok(Err(held)) => {
                eprintln!(
                    "error: {held}.\n  Not running `{}` twice at once: try again later, or \
                     wait for it with `ferry run --wait SECONDS`.",
                    p.name
                );
                failed = true;
                continue;
            }
            Err(e) => {
                eprintln!("error: cannot take the lease of pipeline `{}`: {e}", p.name);
                failed = true;
                continue;
            }
        };
        let mut opts = RunOptions::new(Mode::Run);
        opts.detail = a.detail;
        opts.lease = Some(lease.lease());
        let bar = (std::io::stderr().is_terminal() && g.log_format == LogFormat::Text)
            .then(|| progress_bar(&p.name));
        if let Some(b) = &bar {
            let b = b.clone();
            opts.progress = Some(Arc::new(move |r: &PipelineReport| {
                b.set_message(progress_text(r));
                b.tick();
            }));
        }
        let started = std::time::Instant::now();
        let http_before = (
            conns.http.metrics().total(Service::Zoom),
            conns.http.metrics().total(Service::Salesforce),
        );
        if let Err(e) = conns
            .store
            .run_started(&p.name, &opts.run_id, clock.now())
            .await
        {
            tracing::warn!(pipeline = %p.name, "could not record the run's start: {e}");
        }
        if let Err(e) = conns.store.run_trigger(&opts.run_id, "ferry run").await {
            tracing::warn!(pipeline = %p.name, "could not record what started the run: {e}");
        }
        let report = engine.run(p, &opts).await;
        if let Err(e) = conns
            .store
            .run_finished(
                &opts.run_id,
                clock.now(),
                !report.failed(),
                &report.to_json()["summary"],
            )
            .await
        {
            tracing::warn!(pipeline = %p.name, "could not record the run's end: {e}");
        }
        if let Some(why) = &report.stopped {
            let shown = crate::daemon::status::sanitize_error(why);
            if let Err(e) = conns.store.run_stopped(&opts.run_id, &shown).await {
                tracing::warn!(pipeline = %p.name, "could not record why the run stopped: {e}");
            }
        }
        lease.release().await;
        conns.save_budget().await;
        conns.save_labels().await;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        failed |= report.failed() || (report.summary.dead_lettered > 0 && !a.allow_dead_letters);
        if g.log_format == LogFormat::Json {
            let zoom_http = conns.http.metrics().total(Service::Zoom);
            let sf_http = conns.http.metrics().total(Service::Salesforce);
            tracing::info!(
                pipeline = %p.name,
                records_read = report.records_read,
                created = report.summary.create,
                updated = report.summary.update,
                unchanged = report.summary.unchanged,
                skipped = report.summary.skip,
                unmatched = report.summary.unmatched,
                errors = report.summary.error,
                dead_lettered = report.summary.dead_lettered,
                zoom_calls = report.summary.api_calls.zoom,
                salesforce_calls = report.summary.api_calls.salesforce,
                zoom_429 = zoom_http.responses_429.saturating_sub(http_before.0.responses_429),
                zoom_wait_ms = zoom_http.wait_ms.saturating_sub(http_before.0.wait_ms),
                salesforce_429 = sf_http.responses_429.saturating_sub(http_before.1.responses_429),
                stopped = report.stopped.as_deref().unwrap_or(""),
                seconds = started.elapsed().as_secs_f64(),
                "run finished"
            );
        }
        if a.detail {
            print!("{}", report.render_text());
        } else {
            println!("{}: {} records read", p.name, report.records_read);
            for (sink, n) in &report.per_sink {
                println!("  {sink:<14} {n} written");
            }
            println!("  {}", report.summary_line());
            println!("  {}", report.calls_line());
            if let Some(s) = &report.stopped {
                println!("  Stopped: {s}");
            }
        }
        if report.summary.dead_lettered > 0 {
            println!(
                "  {} record(s) went to dead letters: `ferry deadletters list {}` shows why; \
                 the next run retries them",
                report.summary.dead_lettered, p.name
            );
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

fn progress_bar(name: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b.set_prefix(name.to_string());
    b.enable_steady_tick(std::time::Duration::from_millis(120));
    b
}

fn progress_text(r: &PipelineReport) -> String {
    let sinks: Vec<String> = r.per_sink.iter().map(|(s, n)| format!("{s} {n}")).collect();
    format!(
        "read {} · written {} · unchanged {} · {}",
        r.records_read,
        r.summary.create + r.summary.update,
        r.summary.unchanged,
        sinks.join(" · ")
    )
}
