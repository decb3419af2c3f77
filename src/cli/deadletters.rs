//! `ferry deadletters list|show|retry|drop`.

use super::state::{TableFormat, fmt_time, open_existing, print_table};
use super::{EXIT_INVALID, EXIT_OK, Global};
use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub struct DeadlettersArgs {
    #[command(subcommand)]
    pub command: DeadlettersCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeadlettersCommand {
    /// Records Salesforce rejected, with the error
    List {
        /// Only this pipeline
        pipeline: Option<String>,
        #[arg(long, value_enum, default_value_t = TableFormat::Text)]
        format: TableFormat,
    },
    /// One letter in full, with the record that was sent
    Show { id: i64 },
    /// Ask the next run to write these records again
    Retry {
        ids: Vec<i64>,
        /// Every letter (of --pipeline, if given)
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, requires = "all")]
        pipeline: Option<String>,
    },
    /// Delete letters without retrying them
    Drop {
        ids: Vec<i64>,
        /// Every letter (of --pipeline, if given)
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, requires = "all")]
        pipeline: Option<String>,
    },
}

pub async fn run(g: &Global, a: &DeadlettersArgs) -> anyhow::Result<u8> {
    let Some(store) = open_existing(g)? else {
        return Ok(EXIT_OK);
    };
    match &a.command {
        DeadlettersCommand::List { pipeline, format } => {
            let letters = store.deadletters(pipeline.as_deref()).await?;
            match format {
                TableFormat::Json => println!("{}", serde_json::to_string_pretty(&letters)?),
                TableFormat::Text => {
                    let rows: Vec<Vec<String>> = letters
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.to_string(),
                                d.pipeline.clone(),
                                d.sink.clone(),
                                if d.key.is_empty() {
                                    "-".into()
                                } else {
                                    d.key.clone()
                                },
                                d.attempts.to_string(),
                                if d.retry_requested {
                                    "yes".into()
                                } else {
                                    "".into()
                                },
                                fmt_time(d.updated_at),
                                one_line(&d.error, 80),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "ID",
                            "PIPELINE",
                            "SINK",
                            "KEY",
                            "FAILS",
                            "RETRY",
                            "LAST FAILED",
                            "ERROR",
                        ],
                        &rows,
                    );
                }
            }
            Ok(EXIT_OK)
        }
        DeadlettersCommand::Show { id } => match store.deadletter(*id).await? {
            Some(d) => {
                println!("{}", serde_json::to_string_pretty(&d)?);
                Ok(EXIT_OK)
            }
            None => {
                eprintln!("error: no dead letter with id {id}");
                Ok(EXIT_INVALID)
            }
        },
        DeadlettersCommand::Retry { ids, all, pipeline } => {
            let n = if *all {
                store
                    .deadletters_mark_retry_all(pipeline.as_deref())
                    .await?
            } else if ids.is_empty() {
                eprintln!(
                    "error: name the letters to retry (ids from `ferry deadletters list`) or pass --all"
                );
                return Ok(EXIT_INVALID);
            } else {
                store.deadletters_mark_retry(ids).await?
            };
            println!("{n} dead letter(s) marked; the next run of their pipeline retries them");
            Ok(if !*all && n < ids.len() {
                missing(ids.len() - n)
            } else {
                EXIT_OK
            })
        }
        DeadlettersCommand::Drop { ids, all, pipeline } => {
            let n = if *all {
                store.deadletters_drop_all(pipeline.as_deref()).await?
            } else if ids.is_empty() {
                eprintln!(
                    "error: name the letters to drop (ids from `ferry deadletters list`) or pass --all"
                );
                return Ok(EXIT_INVALID);
            } else {
                store.deadletters_drop(ids).await?
            };
            println!("{n} dead letter(s) dropped");
            Ok(if !*all && n < ids.len() {
                missing(ids.len() - n)
            } else {
                EXIT_OK
            })
        }
    }
}

fn missing(n: usize) -> u8 {
    eprintln!("warning: {n} of the given ids did not exist");
    EXIT_INVALID
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}
