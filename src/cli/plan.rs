use super::Global;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {}

pub async fn run(_g: &Global, _a: &PlanArgs) -> anyhow::Result<u8> {
    super::not_yet("plan")
}
