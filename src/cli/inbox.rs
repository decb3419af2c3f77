//! `ferry inbox list|show|retry`: the daemon's webhook inbox, and its dead letters (events
//! whose processing failed for a day).

use super::state::{TableFormat, fmt_time, open_existing, print_table};
use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::daemon::inbox::redact_payload;
use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    #[command(subcommand)]
    pub command: InboxCommand,
}

#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// Webhook events waiting, being retried or dead, newest first
    List {
        /// Only the dead letters
        #[arg(long)]
        dead: bool,
        /// At most this many events
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = TableFormat::Text)]
        format: TableFormat,
    },
    /// One event in full, its payload with secrets redacted
    Show { id: i64 },
    /// Put events back in the queue: the running daemon tries them at once
    Retry {
        ids: Vec<i64>,
        /// Every dead letter
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
    },
}

pub async fn run(g: &Global, a: &InboxArgs) -> anyhow::Result<u8> {
    let Some(store) = open_existing(g)? else {
        return Ok(EXIT_OK);
    };
    match &a.command {
        InboxCommand::List {
            dead,
            limit,
            format,
        } => {
            let entries = store.inbox_list(*dead, *limit).await?;
            match format {
                TableFormat::Json => {
                    let shown: Vec<serde_json::Value> = entries
                        .iter()
                        .map(|e| {
                            let mut v = serde_json::to_value(e).unwrap_or_default();
                            if let Some(o) = v.as_object_mut() {
                                o.remove("payload");
                            }
                            v
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&shown)?);
                }
                TableFormat::Text => {
                    let rows: Vec<Vec<String>> = entries
                        .iter()
                        .map(|e| {
                            vec![
                                e.id.to_string(),
                                e.event.clone(),
                                e.state.clone(),
                                fmt_time(e.received_at),
                                e.attempts.to_string(),
                                e.next_attempt.map(fmt_time).unwrap_or_default(),
                                one_line(e.last_error.as_deref().unwrap_or(""), 80),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "ID",
                            "EVENT",
                            "STATE",
                            "RECEIVED",
                            "TRIES",
                            "NEXT TRY",
                            "LAST ERROR",
                        ],
                        &rows,
                    );
                }
            }
            Ok(EXIT_OK)
        }
        InboxCommand::Show { id } => match store.inbox_entry(*id).await? {
            Some(mut e) => {
                e.payload = redact_payload(&e.payload);
                println!("{}", serde_json::to_string_pretty(&e)?);
                Ok(EXIT_OK)
            }
            None => {
                eprintln!("error: no webhook event with id {id} (see `ferry inbox list`)");
                Ok(EXIT_INVALID)
            }
        },
        InboxCommand::Retry { ids, all_dead } => {
            let ids: Vec<i64> = if *all_dead {
                store
                    .inbox_list(true, usize::MAX)
                    .await?
                    .iter()
                    .map(|e| e.id)
                    .collect()
            } else if ids.is_empty() {
                eprintln!(
                    "error: name the events to retry (ids from `ferry inbox list`) or pass --all-dead"
                );
                return Ok(EXIT_INVALID);
            } else {
                ids.clone()
            };
            let mut n = 0usize;
            for id in &ids {
                if store.inbox_retry(*id).await? {
                    n += 1;
                }
            }
            println!(
                "{n} webhook event(s) re-queued; a running daemon processes them now, with a new day of retries"
            );
            if !*all_dead && n < ids.len() {
                eprintln!(
                    "warning: {} of the given ids are not in the inbox or are already done",
                    ids.len() - n
                );
                return Ok(EXIT_INVALID);
            }
            Ok(EXIT_OK)
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
