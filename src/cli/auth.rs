use super::Global;

#[derive(Debug, clap::Args)]
pub struct AuthArgs {}

pub async fn run(_g: &Global, _a: &AuthArgs) -> anyhow::Result<u8> {
    super::not_yet("auth")
}
