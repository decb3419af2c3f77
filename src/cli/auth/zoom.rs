//! `ferry auth zoom`: authorize a user-managed Zoom app and keep its refresh token in the
//! state file, where `ferry run` and `ferry read` find it.

use crate::cli::{EXIT_INVALID, EXIT_OK, Global};
use crate::connectors::zoom::authorize::{AuthorizeSettings, authorize_url_for, begin};
use crate::connectors::zoom::{StoreTokens, ZoomAuth};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[derive(Debug, clap::Args)]
pub struct ZoomAuthArgs {
    /// The Zoom connection of ferry.yaml (its auth type must be oauth)
    #[arg(long, default_value = "zoom")]
    pub connection: String,
    /// Port of the local callback server on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 8789)]
    pub port: u16,
    /// The redirect URL registered with the app, if not http://127.0.0.1:PORT/callback
    #[arg(long)]
    pub redirect_uri: Option<String>,
    /// The authorize URL (default: beside the connection's token_url)
    #[arg(long)]
    pub authorize_url: Option<String>,
    /// Give up after this many seconds without a callback
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub async fn run(g: &Global, a: &ZoomAuthArgs) -> anyhow::Result<u8> {
    let cfg = crate::cli::read::settings(g, &a.connection)?;
    let ZoomAuth::OAuth {
        client_id,
        client_secret,
        ..
    } = &cfg.auth
    else {
        eprintln!(
            "error: connection `{}` uses server-to-server auth, which needs no authorization; \
             set `auth.type: oauth` for a user-managed app",
            a.connection
        );
        return Ok(EXIT_INVALID);
    };
    let store = crate::cli::read::open_state(g)?;
    let pending = begin(AuthorizeSettings {
        authorize_url: a
            .authorize_url
            .clone()
            .unwrap_or_else(|| authorize_url_for(&cfg.token_url)),
        token_url: cfg.token_url.clone(),
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port),
        redirect_uri: a.redirect_uri.clone(),
    })
    .await?;
    println!("Open this URL in a browser and approve ferry:");
    println!("{}", pending.url());
    println!(
        "(waiting for Zoom to call back on {})",
        pending.redirect_uri()
    );
    let http = crate::http::HttpClient::new(crate::clock::system());
    let tokens = StoreTokens::new(store.clone());
    let key = tokio::time::timeout(
        std::time::Duration::from_secs(a.timeout),
        pending.finish(&http, &tokens),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no callback from Zoom within {} s", a.timeout))??;
    let at = store
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("Stored the Zoom refresh token ({key}) in {at}");
    Ok(EXIT_OK)
}
