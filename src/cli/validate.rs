use super::Global;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {}

pub async fn run(_g: &Global, _a: &ValidateArgs) -> anyhow::Result<u8> {
    super::not_yet("validate")
}
