use super::Global;

#[derive(Debug, clap::Args)]
pub struct TestArgs {}

pub async fn run(_g: &Global, _a: &TestArgs) -> anyhow::Result<u8> {
    super::not_yet("test")
}
