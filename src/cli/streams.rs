use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::connectors::salesforce as sf;
use crate::connectors::zoom::catalog;

#[derive(Debug, clap::Args)]
pub struct StreamsArgs {
    /// A stream to describe (`past_meetings` or `zoom.past_meetings`); all when absent
    pub name: Option<String>,
}

pub async fn run(_g: &Global, a: &StreamsArgs) -> anyhow::Result<u8> {
    let c = catalog();
    let Some(name) = &a.name else {
        for d in c.all() {
            let mode = if d.incremental() {
                "incremental"
            } else {
                "full"
            };
            // `subject`: read for one person in privacy requests (`ferry subject export`).
            let subject = if d.subject.is_some() { "subject" } else { "" };
            println!(
                "zoom.{:<28} {:<12} {:<8} {}",
                d.name, mode, subject, d.description
            );
        }
        println!(
            "salesforce.{:<22} {:<12} {}",
            sf::source::STREAM,
            "incremental",
            sf::catalog::DESCRIPTION
        );
        return Ok(EXIT_OK);
    };
    if name == "salesforce.records" || name == sf::source::STREAM {
        println!("stream: salesforce.records");
        println!("description: {}", sf::catalog::DESCRIPTION);
        println!("params: [{}]", sf::source::PARAMS.join(", "));
        println!("required: [sobject]");
        println!("primary_key: Id");
        println!("cursor: SystemModstamp");
        println!(
            "bulk: a first read of more than bulk_threshold rows (default {}) uses a Bulk API 2.0 query; bulk: true or false forces it",
            sf::source::DEFAULT_BULK_THRESHOLD
        );
        return Ok(EXIT_OK);
    }
    let short = name.strip_prefix("zoom.").unwrap_or(name);
    let Some(d) = c.get(short) else {
        let names: Vec<&str> = c.all().map(|d| d.name.as_str()).collect();
        let near = names
            .iter()
            .min_by_key(|n| strsim::levenshtein(n, short))
            .copied()
            .unwrap_or("");
        eprintln!("error: no stream `{name}`; did you mean `zoom.{near}`?");
        return Ok(EXIT_INVALID);
    };
    // The entry as data: path, params, paging, cursor, windows, category, scopes, sample.
    print!("{}", serde_saphyr::to_string(d)?);
    Ok(EXIT_OK)
}
