//! The `ferry` command line. Raw arguments become validated settings here; each command's
//! body lives in its own file. `anyhow` is used only at this edge.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

mod auth;
mod daemon;
mod deadletters;
#[cfg(feature = "sandbox")]
mod demo;
mod inbox;
mod plan;
mod read;
mod run;
mod schema;
mod sinks;
mod state;
mod streams;
mod subject;
mod test;
mod validate;

/// Exit codes of the spec: 0 success, 1 a run failed, 2 invalid configuration or usage.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    disable_help_subcommand = true,
    about = "Keep Salesforce in step with Zoom, declaratively",
    long_about = "ferry reads Zoom (REST endpoints and webhooks), matches people to Salesforce \
records and writes Salesforce objects, incrementally, as the pipelines in pipelines/*.yaml describe."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Path to ferry.yaml (default: ./ferry.yaml)
    #[arg(
        long,
        global = true,
        env = "FERRY_CONFIG",
        default_value = "ferry.yaml"
    )]
    pub config: PathBuf,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More detail in logs (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check ferry.yaml and every pipeline; report every problem at once
    Validate(validate::ValidateArgs),
    /// Dry run: show what a run would write, field by field; writes nothing
    Plan(plan::PlanArgs),
    /// One incremental run of the pipelines
    Run(run::RunArgs),
    /// Run the pipelines' offline tests
    Test(test::TestArgs),
    /// List the stream catalog, or describe one stream
    Streams(streams::StreamsArgs),
    /// Privacy requests: export what Zoom and ferry hold about an email address, or forget
    /// it in ferry's own state
    Subject(subject::SubjectArgs),
    /// List the Zoom sink catalog (`zoom:` sinks), or describe one object
    Sinks(sinks::SinksArgs),
    /// Print a stream's records as JSON lines, exactly as a pipeline's `record` sees them
    Read(read::ReadArgs),
    /// Show, rewind or reset checkpoints
    State(state::StateArgs),
    /// List, retry or drop dead letters
    Deadletters(deadletters::DeadlettersArgs),
    /// List, show or retry the daemon's webhook events (dead letters included)
    Inbox(inbox::InboxArgs),
    /// Authorization-code flows that store a refresh token
    Auth(auth::AuthArgs),
    /// Run on schedules and webhooks, reload changed files, serve /healthz, /metrics and a status page
    Daemon(daemon::DaemonArgs),
    /// Run the example pipelines end to end against the built-in simulators
    #[cfg(feature = "sandbox")]
    Demo(demo::DemoArgs),
    /// Serve the Zoom and Salesforce simulators for trying pipelines by hand
    #[cfg(feature = "sandbox")]
    Sandbox(demo::SandboxArgs),
    /// Print the JSON Schema of ferry.yaml and pipeline files
    Schema(schema::SchemaArgs),
    /// Help on a command (`ferry help plan`) or a topic (`ferry help filters`: every
    /// template filter with an example)
    Help { topic: Vec<String> },
    /// Long-form help topics (the older spelling of `ferry help filters`)
    #[command(name = "help-topic", hide = true)]
    HelpTopic { topic: String },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                EXIT_INVALID
            } else {
                EXIT_OK
            });
        }
    };
    init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match &cli.command {
        Command::Validate(a) => validate::run(g, a).await,
        Command::Plan(a) => plan::run(g, a).await,
        Command::Run(a) => run::run(g, a).await,
        Command::Test(a) => test::run(g, a).await,
        Command::Streams(a) => streams::run(g, a).await,
        Command::Sinks(a) => sinks::run(g, a).await,
        Command::Read(a) => read::run(g, a).await,
        Command::Subject(a) => subject::run(g, a).await,
        Command::State(a) => state::run(g, a).await,
        Command::Deadletters(a) => deadletters::run(g, a).await,
        Command::Inbox(a) => inbox::run(g, a).await,
        Command::Auth(a) => auth::run(g, a).await,
        Command::Daemon(a) => daemon::run(g, a).await,
        #[cfg(feature = "sandbox")]
        Command::Demo(a) => demo::run(g, a).await,
        #[cfg(feature = "sandbox")]
        Command::Sandbox(a) => demo::sandbox(g, a).await,
        Command::Schema(a) => schema::run(g, a).await,
        Command::Help { topic } => Ok(help(topic)),
        Command::HelpTopic { topic } => Ok(help(std::slice::from_ref(topic))),
    }
}

/// `ferry help [COMMAND...|filters]`: a command's help, or a help topic.
fn help(topic: &[String]) -> u8 {
    if let [t] = topic
        && t == "filters"
    {
        print!("{}", crate::template::filter_help());
        return EXIT_OK;
    }
    // The command's own `--help`, as clap prints it.
    let args = std::iter::once("ferry")
        .chain(topic.iter().map(String::as_str))
        .chain(std::iter::once("--help"));
    match Cli::try_parse_from(args) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            let _ = e.print();
            EXIT_OK
        }
        _ => {
            eprintln!(
                "no command or help topic named `{}` (topics: filters)",
                topic.join(" ")
            );
            EXIT_INVALID
        }
    }
}

/// Whether stderr takes colour: a terminal, and `NO_COLOR` not set (no-color.org).
pub(crate) fn color_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(g: &Global) {
    let default = match g.verbose {
        0 => "ferry=info,warn",
        1 => "ferry=debug,info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: logs redirected to a file (or a journal) carry no ANSI codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color_stderr())
        .with_writer(std::io::stderr);
    let _ = match g.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// Loads ferry.yaml and its pipelines for a command that runs them; on failure prints every
/// problem and gives the exit code.
pub(crate) fn load_project(g: &Global) -> anyhow::Result<Result<crate::config::Project, u8>> {
    let owned = crate::config::builtin_catalogs();
    let catalogs: Vec<&dyn crate::config::StreamCatalog> =
        owned.iter().map(|c| c.as_ref()).collect();
    match crate::config::load_project(&g.config, &catalogs) {
        Ok(p) => {
            if !p.warnings.is_empty() {
                let d = crate::config::Diagnostics {
                    problems: p.warnings.clone(),
                };
                eprint!("{}", d.render_with(color_stderr()));
            }
            Ok(Ok(p))
        }
        Err(d) => {
            eprint!("{}", d.render_with(color_stderr()));
            Ok(Err(EXIT_INVALID))
        }
    }
}

/// The pipelines a command acts on: one by name, or all.
pub(crate) fn select_pipelines<'a>(
    project: &'a crate::config::Project,
    name: Option<&str>,
) -> Result<Vec<&'a crate::config::Pipeline>, ()> {
    match name {
        None => Ok(project.pipelines.iter().collect()),
        Some(n) => match project.pipeline(n) {
            Some(p) => Ok(vec![p]),
            None => {
                let names: Vec<&str> = project.pipelines.iter().map(|p| p.name.as_str()).collect();
                eprintln!(
                    "error: no pipeline named `{n}`; the pipelines are: {}",
                    names.join(", ")
                );
                Err(())
            }
        },
    }
}

/// Loads the project, checks the pipeline name and connects: what `plan` and `run` need.
pub(crate) async fn open_project(
    g: &Global,
    pipeline: Option<&str>,
) -> anyhow::Result<
    Result<
        (
            crate::config::Project,
            crate::engine::connect::Connections,
            crate::clock::SharedClock,
        ),
        u8,
    >,
> {
    let project = match load_project(g)? {
        Ok(p) => p,
        Err(code) => return Ok(Err(code)),
    };
    if select_pipelines(&project, pipeline).is_err() {
        return Ok(Err(EXIT_INVALID));
    }
    let clock = crate::clock::system();
    match crate::engine::connect::connect(&project, clock.clone()).await {
        Ok(conns) => Ok(Ok((project, conns, clock))),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Err(EXIT_FAILED))
        }
    }
}
