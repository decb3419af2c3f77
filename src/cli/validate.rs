//! `ferry validate`: load and check everything, report every problem at once.

use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::config::{self, Diagnostics, LoadOptions, StreamCatalog};
use std::io::IsTerminal;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Check only these pipeline files (default: the ones ferry.yaml names)
    pub files: Vec<std::path::PathBuf>,
    /// Output format: text for people, json for editors and CI
    #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
    pub format: ValidateFormat,
    /// Also check each sink field against the Salesforce org's describe (needs credentials)
    #[arg(long)]
    pub online: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

pub async fn run(g: &Global, a: &ValidateArgs) -> anyhow::Result<u8> {
    let owned = config::builtin_catalogs();
    let catalogs: Vec<&dyn StreamCatalog> = owned.iter().map(|c| c.as_ref()).collect();
    let options = LoadOptions {
        pipelines: (!a.files.is_empty()).then_some(a.files.as_slice()),
        ..LoadOptions::validate()
    };
    let result = config::load_project_with(&g.config, &catalogs, options);
    let (ok, pipelines, files, diags) = match result {
        Ok(p) => (
            true,
            p.pipelines.len(),
            p.files.len(),
            Diagnostics {
                problems: p.warnings,
            },
        ),
        Err(d) => (false, 0, 0, d),
    };
    match a.format {
        ValidateFormat::Json => {
            let doc = serde_json::json!({
                "ok": ok,
                "pipelines": pipelines,
                "files": files,
                "problems": diags.to_json(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ValidateFormat::Text => {
            if !diags.is_empty() {
                let color = std::io::stderr().is_terminal();
                eprint!("{}", diags.render_with(color));
            }
            if ok {
                println!(
                    "ok: {pipelines} {} in {files} {}",
                    if pipelines == 1 {
                        "pipeline"
                    } else {
                        "pipelines"
                    },
                    if files == 1 { "file" } else { "files" }
                );
            }
            if ok && a.online {
                eprintln!(
                    "note: --online (checking sink fields against the org's describe) is not available in this build yet; the offline checks passed"
                );
            }
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_INVALID })
}
