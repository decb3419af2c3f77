use super::Global;

#[derive(Debug, clap::Args)]
pub struct StreamsArgs {}

pub async fn run(_g: &Global, _a: &StreamsArgs) -> anyhow::Result<u8> {
    super::not_yet("streams")
}
