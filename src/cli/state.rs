//! `ferry state show|rewind|reset`.

use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::state::Store;
use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TableFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Checkpoints, ledger sizes, dead letters, records waiting for a Zoom daily limit and
    /// the last run of each pipeline
    Show {
        /// Only this pipeline
        pipeline: Option<String>,
        #[arg(long, value_enum, default_value_t = TableFormat::Text)]
        format: TableFormat,
    },
    /// Move a pipeline's checkpoints back so the next run re-reads from there
    Rewind {
        pipeline: String,
        /// A time (2026-03-01T00:00:00Z), a date (2026-03-01, midnight UTC) or how long
        /// ago (2h, 3d)
        #[arg(long)]
        to: String,
    },
    /// Copy the state file into an empty PostgreSQL database, for several daemons to share
    /// (then set `state:` to the URL). Stop the daemon first.
    Migrate {
        /// The database URL, postgres://user:password@host:port/database. Write
        /// '${NAME}' (in single quotes) to take it from the environment, so the password is
        /// not on the command line
        #[arg(long)]
        to: String,
    },
    /// Forget a pipeline's checkpoints: the next run starts from its `since`
    Reset {
        pipeline: String,
        /// Also forget what was written (the next run may create duplicates in Salesforce)
        #[arg(long)]
        ledger: bool,
    },
}

/// The one key of ferry.yaml these commands need. The full config loader replaces this.
#[derive(Debug, serde::Deserialize)]
struct StateLocation {
    state: Option<String>,
}

/// The state file named by ferry.yaml (`state:`, default `.ferry/state.db` next to it).
pub(super) fn state_path(config: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let loc: StateLocation =
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let dir = config.parent().unwrap_or(Path::new(""));
    let rel = loc.state.unwrap_or_else(|| ".ferry/state.db".to_string());
    let rel = expand_env(&rel)?;
    if crate::state::is_postgres_url(&rel) {
        return Ok(PathBuf::from(rel.trim()));
    }
    Ok(dir.join(rel))
}

/// Expands `${NAME}` and `${NAME:-default}` in `state:` (as ferry.yaml's loader does), so a
/// database URL can come from the environment. The values are never shown.
fn expand_env(text: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(close) = after.find('}') else {
            anyhow::bail!("`state:` has `${{` without a closing `}}`");
        };
        let inner = &after[..close];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner.trim(), None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                anyhow::bail!("`state:` names the environment variable {name}, which is not set")
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Opens the state file, or says there is none yet (without creating one).
pub(super) fn open_existing(g: &Global) -> anyhow::Result<Option<Store>> {
    let path = state_path(&g.config)?;
    if path.to_str().is_some_and(crate::state::is_postgres_url) {
        return Ok(Some(Store::open(&path)?));
    }
    if !path.exists() {
        println!(
            "no state yet at {} (a first run creates it)",
            path.display()
        );
        return Ok(None);
    }
    let store = Store::open(&path)?;
    Ok(Some(store))
}

pub async fn run(g: &Global, a: &StateArgs) -> anyhow::Result<u8> {
    match &a.command {
        StateCommand::Show { pipeline, format } => show(g, pipeline.as_deref(), *format).await,
        StateCommand::Rewind { pipeline, to } => {
            let Some(to) = parse_when(to, Utc::now()) else {
                eprintln!(
                    "error: --to {to:?} is not a time (2026-03-01T00:00:00Z), a date \
                     (2026-03-01) or a duration ago (2h, 3d)"
                );
                return Ok(EXIT_INVALID);
            };
            let Some(store) = open_existing(g)? else {
                return Ok(EXIT_OK);
            };
            let n = store.rewind(pipeline, to).await?;
            println!(
                "{pipeline}: {n} checkpoint(s) moved back to {}; the next run re-reads from there",
                to.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
            Ok(EXIT_OK)
        }
        StateCommand::Migrate { to } => migrate(g, to).await,
        StateCommand::Reset { pipeline, ledger } => {
            let Some(store) = open_existing(g)? else {
                return Ok(EXIT_OK);
            };
            let n = store.reset(pipeline).await?;
            println!("{pipeline}: {n} checkpoint(s) removed; the next run starts from `since`");
            if *ledger {
                let m = store.reset_ledger(pipeline).await?;
                println!("{pipeline}: {m} ledger entr(ies) removed");
            }
            Ok(EXIT_OK)
        }
    }
}

async fn migrate(g: &Global, to: &str) -> anyhow::Result<u8> {
    let url = expand_env(to)?;
    if !crate::state::is_postgres_url(&url) {
        eprintln!(
            "error: --to must be a PostgreSQL URL (postgres://user:password@host:port/database)"
        );
        return Ok(EXIT_INVALID);
    }
    let path = state_path(&g.config)?;
    if path.to_str().is_some_and(crate::state::is_postgres_url) {
        eprintln!("error: ferry.yaml's state is already a PostgreSQL database");
        return Ok(EXIT_INVALID);
    }
    let shown = crate::state::redact_url(&url);
    let report = crate::state::migrate_sqlite_to_postgres(&path, &url)
        .await
        .with_context(|| format!("cannot migrate {} to {shown}", path.display()))?;
    println!(
        "copied {} to {shown}: {} checkpoint(s), {} ledger row(s), {} dead letter(s), \
         {} token(s) (sealed again with FERRY_STATE_KEY), {} webhook event(s), {} run(s), \
         {} label(s), {} subject index row(s) and {} synced write(s) (privacy requests), \
         {} Zoom ledger row(s), {} deferral(s); the lookup cache is not copied (the next \
         runs refill it)",
        path.display(),
        report.checkpoints,
        report.ledger,
        report.dead_letters,
        report.tokens,
        report.inbox,
        report.runs,
        report.labels,
        report.subject_index,
        report.synced_writes,
        report.zoom_ledger,
        report.zoom_deferrals
    );
    println!(
        "next: set `state:` in ferry.yaml to the URL (e.g. state: ${{FERRY_STATE_URL}}) and start the daemons with the same FERRY_STATE_KEY"
    );
    Ok(EXIT_OK)
}

async fn show(g: &Global, pipeline: Option<&str>, format: TableFormat) -> anyhow::Result<u8> {
    let Some(store) = open_existing(g)? else {
        return Ok(EXIT_OK);
    };
    let checkpoints = store.checkpoints(pipeline).await?;
    let ledger = store.ledger_counts(pipeline).await?;
    let letters: Vec<_> = store
        .deadletter_counts()
        .await?
        .into_iter()
        .filter(|c| pipeline.is_none_or(|p| p == c.pipeline))
        .collect();
    let runs: Vec<_> = store
        .last_runs()
        .await?
        .into_iter()
        .filter(|r| pipeline.is_none_or(|p| p == r.pipeline))
        .collect();
    // Who runs each known pipeline now (a lease held and not expired).
    let mut names: std::collections::BTreeSet<String> = checkpoints
        .iter()
        .map(|c| c.pipeline.clone())
        .chain(runs.iter().map(|r| r.pipeline.clone()))
        .chain(ledger.iter().map(|l| l.pipeline.clone()))
        .collect();
    names.extend(pipeline.map(str::to_string));
    let mut leases = Vec::new();
    for name in &names {
        if let Some(h) = store.lease_holder(name).await? {
            leases.push(h);
        }
    }
    let deferred = store.zoom_deferral_summary(pipeline).await?;
    match format {
        TableFormat::Json => {
            let doc = serde_json::json!({
                "state": store.location(),
                "leases": leases,
                "checkpoints": checkpoints,
                "ledger": ledger,
                "dead_letters": letters,
                "deferred": deferred,
                "last_runs": runs,
                "inbox_depth": store.inbox_depth().await?,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        TableFormat::Text => {
            println!("State: {}", store.location());
            println!();
            if !leases.is_empty() {
                println!("Running now");
                let rows: Vec<Vec<String>> = leases
                    .iter()
                    .map(|h| {
                        vec![
                            h.pipeline.clone(),
                            crate::state::describe_holder(&h.holder),
                            h.fence.to_string(),
                            fmt_time(h.expires_at),
                        ]
                    })
                    .collect();
                print_table(&["PIPELINE", "HELD BY", "FENCE", "LEASE UNTIL"], &rows);
                println!();
            }
            println!("Checkpoints");
            let rows: Vec<Vec<String>> = checkpoints
                .iter()
                .map(|c| {
                    vec![
                        c.pipeline.clone(),
                        c.stream.clone(),
                        if c.partition.is_empty() {
                            "-".into()
                        } else {
                            c.partition.clone()
                        },
                        c.cursor.clone(),
                        fmt_time(c.updated_at),
                    ]
                })
                .collect();
            print_table(
                &["PIPELINE", "STREAM", "PARTITION", "CURSOR", "UPDATED"],
                &rows,
            );
            println!();
            println!("Ledger");
            let rows: Vec<Vec<String>> = ledger
                .iter()
                .map(|l| {
                    vec![
                        l.pipeline.clone(),
                        l.sink.clone(),
                        l.written.to_string(),
                        l.pending.to_string(),
                    ]
                })
                .collect();
            print_table(&["PIPELINE", "SINK", "WRITTEN", "PENDING"], &rows);
            println!();
            let total: u64 = letters.iter().map(|c| c.count).sum();
            println!("Dead letters: {total} (`ferry deadletters list` shows them)");
            println!();
            let waiting: u64 = deferred.iter().map(|d| d.records).sum();
            println!(
                "Waiting for a Zoom daily limit: {waiting} record(s) (written first by the \
                 first run after their time)"
            );
            let rows: Vec<Vec<String>> = deferred
                .iter()
                .map(|d| {
                    let until = if d.first_until == d.last_until {
                        fmt_time(d.last_until)
                    } else {
                        format!("{} to {}", fmt_time(d.first_until), fmt_time(d.last_until))
                    };
                    vec![
                        d.pipeline.clone(),
                        d.sink.clone(),
                        d.limit.clone(),
                        if d.host.is_empty() {
                            "-".into()
                        } else {
                            d.host.clone()
                        },
                        d.records.to_string(),
                        until,
                    ]
                })
                .collect();
            if !rows.is_empty() {
                print_table(
                    &["PIPELINE", "SINK", "LIMIT", "HOST", "RECORDS", "UNTIL"],
                    &rows,
                );
            }
            if !runs.is_empty() {
                println!();
                println!("Last runs");
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|r| {
                        vec![
                            r.pipeline.clone(),
                            fmt_time(r.started_at),
                            match r.ok {
                                Some(true) => "ok".into(),
                                Some(false) => "failed".into(),
                                None => "running".into(),
                            },
                            r.run_id.clone(),
                        ]
                    })
                    .collect();
                print_table(&["PIPELINE", "STARTED", "RESULT", "RUN"], &rows);
            }
        }
    }
    Ok(EXIT_OK)
}

pub(super) fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A plain aligned table; `(none)` when there are no rows.
pub(super) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        println!("  (none)");
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `--to`: RFC 3339, a date (midnight UTC), or a duration before `now` (`90m`, `2h`, `3d`).
pub(super) fn parse_when(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].trim().parse().ok()?;
    let d = match unit {
        's' => chrono::Duration::try_seconds(n)?,
        'm' => chrono::Duration::try_minutes(n)?,
        'h' => chrono::Duration::try_hours(n)?,
        'd' => chrono::Duration::try_days(n)?,
        'w' => chrono::Duration::try_weeks(n)?,
        _ => return None,
    };
    now.checked_sub_signed(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_reads_times_dates_and_durations() {
        let now = DateTime::parse_from_rfc3339("2026-03-15T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_when("2h", now).unwrap(),
            now - chrono::Duration::hours(2)
        );
        assert_eq!(
            parse_when("2026-03-01", now).unwrap().to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_when("2026-03-01T10:00:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-03-01T09:00:00+00:00"
        );
        assert!(parse_when("yesterday", now).is_none());
    }

    #[test]
    fn state_path_defaults_next_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ferry.yaml");
        std::fs::write(&cfg, "settings: { a: 1 }\nconnections: {}\n").unwrap();
        assert_eq!(
            state_path(&cfg).unwrap(),
            dir.path().join(".ferry/state.db")
        );
        std::fs::write(&cfg, "state: data/s.db\nsettings: { a: 1 }\n").unwrap();
        assert_eq!(state_path(&cfg).unwrap(), dir.path().join("data/s.db"));
    }
}
