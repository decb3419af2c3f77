use super::Global;

#[derive(Debug, clap::Args)]
pub struct StateArgs {}

pub async fn run(_g: &Global, _a: &StateArgs) -> anyhow::Result<u8> {
    super::not_yet("state")
}
