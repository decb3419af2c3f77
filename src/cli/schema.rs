use super::Global;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub async fn run(_g: &Global, _a: &SchemaArgs) -> anyhow::Result<u8> {
    super::not_yet("schema")
}
