use super::Global;

#[derive(Debug, clap::Args)]
pub struct ReadArgs {}

pub async fn run(_g: &Global, _a: &ReadArgs) -> anyhow::Result<u8> {
    super::not_yet("read")
}
