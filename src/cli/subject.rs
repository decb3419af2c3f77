//! `ferry subject export EMAIL` and `ferry subject forget EMAIL [--apply]`: privacy requests
//! (see docs/privacy.md).

use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::connectors::zoom::{StoreTokens, ZoomConnector};
use crate::privacy::export::{self, Export};
use crate::state::looks_like_email;
use std::io::IsTerminal;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct SubjectArgs {
    #[command(subcommand)]
    pub command: SubjectCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Json,
    Text,
}

#[derive(Debug, clap::Subcommand)]
pub enum SubjectCommand {
    /// Everything Zoom and ferry hold about one email address, as one JSON document
    Export {
        email: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// Write the export to this file (readable by its owner only) instead of stdout
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// How far back to read dated Zoom data (recordings, calls, voicemails, past
        /// meetings): a date or RFC 3339 time; default Zoom's own horizon (about six months)
        #[arg(long)]
        since: Option<String>,
        /// The Zoom connection of ferry.yaml to read
        #[arg(long, default_value = "zoom")]
        connection: String,
    },
    /// Remove an email address from ferry's own state (never from Zoom or Salesforce);
    /// lists what it would remove unless --apply
    Forget {
        email: String,
        /// Remove it (without this, nothing changes)
        #[arg(long)]
        apply: bool,
    },
}

pub async fn run(g: &Global, a: &SubjectArgs) -> anyhow::Result<u8> {
    match &a.command {
        SubjectCommand::Export {
            email,
            format,
            out,
            since,
            connection,
        } => {
            export_cmd(
                g,
                email,
                *format,
                out.as_deref(),
                since.as_deref(),
                connection,
            )
            .await
        }
        SubjectCommand::Forget { email, apply } => forget_cmd(g, email, *apply).await,
    }
}

fn check_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    if looks_like_email(&e) {
        Some(e)
    } else {
        eprintln!("error: `{email}` is not an email address");
        None
    }
}

async fn export_cmd(
    g: &Global,
    email: &str,
    format: ExportFormat,
    out: Option<&std::path::Path>,
    since: Option<&str>,
    connection: &str,
) -> anyhow::Result<u8> {
    let Some(email) = check_email(email) else {
        return Ok(EXIT_INVALID);
    };
    let clock = crate::clock::system();
    let now = clock.now();
    let since = match since.map(|s| (s, crate::config::parse_since(s))) {
        Some((_, Some(t))) => t,
        Some((s, None)) => {
            eprintln!("error: --since `{s}` is not a time; write a date like 2026-01-01");
            return Ok(EXIT_INVALID);
        }
        None => crate::engine::connect::zoom_horizon(now),
    };
    let store = super::read::open_state(g)?;
    let conn = match super::read::connection_settings(g, connection) {
        Ok((cfg, max_wait)) => {
            let http = crate::http::HttpClient::new(clock.clone());
            http.set_max_wait(crate::http::Service::Zoom, max_wait);
            Ok(ZoomConnector::new(
                cfg,
                http,
                Arc::new(StoreTokens::new(store.clone())),
            ))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = |s: &str| bar.set_message(format!("reading {s}"));
    let zoom = Some(conn.as_ref().map_err(Clone::clone));
    let doc: Export = export::export(&email, zoom, &store, since, now, &progress).await;
    bar.finish_and_clear();
    let body = match format {
        ExportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&doc)?),
        ExportFormat::Text => export::text(&doc),
    };
    match out {
        None => print!("{body}"),
        Some(path) => {
            write_private(path, body.as_bytes())?;
            eprintln!("wrote the export to {}", path.display());
        }
    }
    Ok(EXIT_OK)
}

/// Writes `bytes` to a new or truncated file readable by its owner only (it holds personal
/// data).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

async fn forget_cmd(g: &Global, email: &str, apply: bool) -> anyhow::Result<u8> {
    let Some(email) = check_email(email) else {
        return Ok(EXIT_INVALID);
    };
    let store = super::read::open_state(g)?;
    let hash = store.subject_hash(&email);
    let hits = store.subject_scan(&email, &hash).await?;
    let prefix: String = hash.chars().take(12).collect();
    if hits.is_empty() {
        println!("ferry's state holds nothing about this address (subject hash {prefix}…).");
    } else {
        println!(
            "ferry's state holds this address in {} place(s):",
            hits.len()
        );
        for h in &hits {
            println!("  {:<16} {:<40} {}", h.area, h.row, h.action);
        }
    }
    println!(
        "ferry never deletes in Zoom or Salesforce: what it wrote there (Events, Tasks, \
         CampaignMembers, Zoom registrations and meetings, ...) stays; `ferry subject export` \
         lists it."
    );
    if !apply {
        println!("nothing changed; run again with --apply to remove it from ferry's state.");
        return Ok(EXIT_OK);
    }
    let r = store.subject_forget(&email, &hash).await?;
    println!(
        "forgotten: {} row(s) deleted, {} redacted; audit line written to the run history \
         (subject hash {}…).",
        r.deleted, r.redacted, r.hash_prefix
    );
    if store.path().is_none() {
        // PostgreSQL: the tables forgetting changed were rewritten.
        if r.compacted {
            println!(
                "the tables it changed were rewritten (VACUUM FULL): no old row version keeps \
                 the address in them. PostgreSQL's WAL, WAL archives, base backups and replicas \
                 are the database operator's to expire (see docs/privacy.md)."
            );
        } else {
            println!(
                "warning: a table could not be rewritten in time, or another session's open \
                 transaction could still see the old rows; run `ferry subject forget` again \
                 when the daemons are idle."
            );
        }
    } else if r.compacted {
        println!("free pages and the write-ahead log were cleared (secure delete, VACUUM).");
    } else {
        println!(
            "warning: another process held the state file, so its write-ahead log could not \
             be truncated; run `ferry subject forget` again when it is idle."
        );
    }
    for left in &r.remaining {
        println!("still holds the address: {left}");
    }
    Ok(EXIT_OK)
}
