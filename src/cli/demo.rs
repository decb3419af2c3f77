use super::Global;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {}

pub async fn run(_g: &Global, _a: &DemoArgs) -> anyhow::Result<u8> {
    super::not_yet("demo")
}

pub async fn sandbox(_g: &Global, _a: &SandboxArgs) -> anyhow::Result<u8> {
    super::not_yet("sandbox")
}
