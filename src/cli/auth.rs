use super::Global;

mod zoom;

#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub service: Option<AuthService>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthService {
    /// Authorize a Zoom user-managed app (auth type oauth) and store its refresh token
    Zoom(zoom::ZoomAuthArgs),
}

pub async fn run(g: &Global, a: &AuthArgs) -> anyhow::Result<u8> {
    match &a.service {
        Some(AuthService::Zoom(z)) => zoom::run(g, z).await,
        None => super::not_yet("auth"),
    }
}
