use super::Global;

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub async fn run(_g: &Global, _a: &RunArgs) -> anyhow::Result<u8> {
    super::not_yet("run")
}
