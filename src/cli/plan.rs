use super::{EXIT_FAILED, EXIT_OK, Global, OutputFormat};
use crate::engine::{Engine, Mode, RunOptions};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Only this pipeline (default: all)
    pub pipeline: Option<String>,
    /// text for people, json for scripts and CI, markdown for a pull request
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Look at no more than this many source records
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only the source record with this key (e.g. a meeting UUID)
    #[arg(long)]
    pub record: Option<String>,
}

pub async fn run(g: &Global, a: &PlanArgs) -> anyhow::Result<u8> {
    let (project, conns, clock) = match super::open_project(g, a.pipeline.as_deref()).await? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let pipelines = super::select_pipelines(&project, a.pipeline.as_deref()).unwrap_or_default();
    let settings = serde_json::Value::Object(project.config.settings.clone());
    let engine = Engine {
        store: &conns.store,
        source: &conns.source,
        matcher: &conns.salesforce,
        sink: &conns.salesforce,
        zoom: Some(&conns.zoom.conn),
        settings: &settings,
        now: clock.now(),
    };
    let mut failed = false;
    let mut docs = Vec::new();
    for p in pipelines {
        let mut opts = RunOptions::new(Mode::Plan);
        opts.limit = a.limit;
        opts.record = a.record.clone();
        let report = engine.run(p, &opts).await;
        failed |= report.failed();
        // Records held back for a daily limit whose time has not come are not walked by
        // the plan (those due are, first): say they wait.
        let waiting = match a.format {
            OutputFormat::Json => String::new(),
            _ => waiting_line(&conns.store, &p.name, engine.now).await,
        };
        match a.format {
            OutputFormat::Text => print!("{}{waiting}", report.render_text()),
            OutputFormat::Markdown => print!("{}{waiting}", report.render_markdown()),
            OutputFormat::Json => docs.push(report.to_json()),
        }
    }
    if a.format == OutputFormat::Json {
        let doc = if docs.len() == 1 {
            docs.pop().unwrap_or_default()
        } else {
            serde_json::Value::Array(docs)
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// "N record(s) wait ... until T", for the deferrals of `pipeline` not due at `now`; empty
/// when none wait (or the state cannot say).
async fn waiting_line(
    store: &crate::state::Store,
    pipeline: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let Ok(rows) = store.zoom_deferral_summary(Some(pipeline)).await else {
        return String::new();
    };
    let later: Vec<_> = rows.iter().filter(|d| d.last_until > now).collect();
    let n: u64 = later.iter().map(|d| d.records).sum();
    match later.iter().map(|d| d.last_until).max() {
        Some(until) if n > 0 => format!(
            "{n} record(s) held back by a Zoom daily limit wait in the state until {} at the \
             latest; the first run after that writes them first (`ferry state show` lists them).\n",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        _ => String::new(),
    }
}
