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
        match a.format {
            OutputFormat::Text => print!("{}", report.render_text()),
            OutputFormat::Markdown => print!("{}", report.render_markdown()),
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
