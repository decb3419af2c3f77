//! `ferry daemon`: schedules, webhook triggers, hot reload, /healthz, /metrics and a status
//! page, until SIGTERM or SIGINT.

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, Global};
use crate::daemon::{Daemon, DaemonError, DaemonOptions};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Listen on this address instead of ferry.yaml's `daemon.listen`
    #[arg(long)]
    pub listen: Option<String>,
    /// Seconds a shutdown waits for the batch in flight
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Milliseconds of quiet after a file change before reloading
    #[arg(long, default_value_t = 1000)]
    pub debounce_ms: u64,
    /// Do not watch the files for changes
    #[arg(long)]
    pub no_watch: bool,
}

pub async fn run(g: &Global, a: &DaemonArgs) -> anyhow::Result<u8> {
    let mut opts = DaemonOptions::new(crate::clock::system());
    opts.listen_override = a.listen.clone();
    opts.shutdown_grace = Duration::from_secs(a.shutdown_grace);
    opts.debounce = Duration::from_millis(a.debounce_ms);
    opts.watch = !a.no_watch;
    let handle = match Daemon::start(&g.config, opts).await {
        Ok(h) => h,
        Err(DaemonError::Invalid(d)) => {
            eprint!("{}", d.render_with(super::color_stderr()));
            return Ok(EXIT_INVALID);
        }
        Err(e @ (DaemonError::BadAddress { .. } | DaemonError::Bind { .. })) => {
            eprintln!("error: {e}");
            return Ok(EXIT_INVALID);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_FAILED);
        }
    };
    println!("ferry daemon listening on {}", handle.url());
    wait_for_signal().await?;
    eprintln!("stopping: finishing the batch in flight");
    let outcome = handle.shutdown().await;
    Ok(if outcome.clean { EXIT_OK } else { EXIT_FAILED })
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
