//! `ferry schema`: JSON Schema of ferry.yaml and pipeline files, for editor completion.

use super::{EXIT_OK, Global};
use crate::config::spec::{FerryConfigSpec, PipelineSpec};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Which file kind to print (both when --out is given)
    #[arg(value_enum)]
    pub kind: Option<SchemaKind>,
    /// Write ferry.schema.json and pipeline.schema.json into this directory
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    Ferry,
    Pipeline,
}

/// The schema of one file kind, as pretty JSON with a trailing newline.
pub fn schema_json(kind: SchemaKind) -> String {
    let schema = match kind {
        SchemaKind::Ferry => schemars::schema_for!(FerryConfigSpec),
        SchemaKind::Pipeline => schemars::schema_for!(PipelineSpec),
    };
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

/// File names under schemas/.
pub fn schema_file_name(kind: SchemaKind) -> &'static str {
    match kind {
        SchemaKind::Ferry => "ferry.schema.json",
        SchemaKind::Pipeline => "pipeline.schema.json",
    }
}

pub async fn run(_g: &Global, a: &SchemaArgs) -> anyhow::Result<u8> {
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)?;
        let kinds = match a.kind {
            Some(k) => vec![k],
            None => vec![SchemaKind::Ferry, SchemaKind::Pipeline],
        };
        for k in kinds {
            let path = dir.join(schema_file_name(k));
            std::fs::write(&path, schema_json(k))?;
            println!("wrote {}", path.display());
        }
        return Ok(EXIT_OK);
    }
    match a.kind {
        Some(k) => print!("{}", schema_json(k)),
        None => {
            let doc = serde_json::json!({
                "ferry": serde_json::from_str::<serde_json::Value>(&schema_json(SchemaKind::Ferry))?,
                "pipeline": serde_json::from_str::<serde_json::Value>(&schema_json(SchemaKind::Pipeline))?,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(EXIT_OK)
}
