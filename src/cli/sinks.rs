//! `ferry sinks [NAME]`: the Zoom objects a pipeline can write (`zoom: NAME`).

use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::connectors::zoom::sink::sink_catalog;

#[derive(Debug, clap::Args)]
pub struct SinksArgs {
    /// A Zoom sink object to describe (`meeting` or `zoom.meeting`); all when absent
    pub name: Option<String>,
}

pub async fn run(_g: &Global, a: &SinksArgs) -> anyhow::Result<u8> {
    let c = sink_catalog();
    let Some(name) = &a.name else {
        for d in c.sinks.values() {
            println!(
                "zoom: {:<20} {:<28} {}",
                d.name,
                d.actions().join(", "),
                d.description
            );
        }
        return Ok(EXIT_OK);
    };
    let short = name.strip_prefix("zoom.").unwrap_or(name);
    let Some(d) = c.get(short) else {
        let hint = crate::config::diagnostic::did_you_mean(short, c.names())
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        eprintln!("error: no Zoom sink `{name}`{hint} (`ferry sinks` lists them)");
        return Ok(EXIT_INVALID);
    };
    print!("{}", d.describe());
    Ok(EXIT_OK)
}
