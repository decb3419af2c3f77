use super::Global;

#[derive(Debug, clap::Args)]
pub struct DeadlettersArgs {}

pub async fn run(_g: &Global, _a: &DeadlettersArgs) -> anyhow::Result<u8> {
    super::not_yet("deadletters")
}
