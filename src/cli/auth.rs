//! `ferry auth`: authorization-code flows that obtain a refresh token. The Salesforce half
//! listens on 127.0.0.1 for the OAuth callback; the Zoom half belongs to the Zoom connector.

use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::connectors::salesforce::{AuthorizeRequest, Secret, authorize_interactively};
use crate::http::HttpClient;

mod zoom;

#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub service: AuthService,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthService {
    /// Authorize ferry with a Salesforce connected app (authorization code + PKCE)
    Salesforce(SalesforceAuthArgs),
    /// Authorize a Zoom user-managed app (auth type oauth) and store its refresh token
    Zoom(zoom::ZoomAuthArgs),
}

#[derive(Debug, clap::Args)]
pub struct SalesforceAuthArgs {
    /// Login host: https://login.salesforce.com, https://test.salesforce.com or your My Domain
    #[arg(long, default_value = "https://login.salesforce.com")]
    pub login_url: String,
    /// The connected app's consumer key
    #[arg(long, env = "SALESFORCE_CLIENT_ID")]
    pub client_id: String,
    /// Name of the environment variable holding the consumer secret, if the app requires one
    #[arg(long)]
    pub client_secret_env: Option<String>,
    /// Port for the local callback (the app's callback URL must be http://127.0.0.1:PORT/callback)
    #[arg(long, default_value_t = 1717)]
    pub port: u16,
    /// Print the refresh token on stdout (for storing it in a secret manager yourself)
    #[arg(long)]
    pub print_refresh_token: bool,
}

pub async fn run(g: &Global, a: &AuthArgs) -> anyhow::Result<u8> {
    match &a.service {
        AuthService::Salesforce(s) => salesforce(s).await,
        AuthService::Zoom(z) => zoom::run(g, z).await,
    }
}

async fn salesforce(a: &SalesforceAuthArgs) -> anyhow::Result<u8> {
    let client_secret = match &a.client_secret_env {
        Some(var) => match std::env::var(var) {
            Ok(v) => Some(Secret::new(v)),
            Err(_) => {
                eprintln!("error: environment variable {var} is not set");
                return Ok(EXIT_INVALID);
            }
        },
        None => None,
    };
    let req = AuthorizeRequest {
        login_url: a.login_url.clone(),
        client_id: a.client_id.clone(),
        client_secret,
        port: a.port,
        scope: "api refresh_token offline_access".into(),
    };
    let http = HttpClient::new(crate::clock::system());
    // The state store wiring (an encrypted TokenStore) is added by the engine; until then
    // the token can be printed for the user to store.
    let tokens = authorize_interactively(&http, &req, None, |url| {
        eprintln!("Open this URL in a browser and approve ferry:\n\n  {url}\n");
        eprintln!(
            "Waiting for Salesforce to redirect to http://127.0.0.1:{}/callback ...",
            a.port
        );
    })
    .await?;
    eprintln!("Authorized. Instance: {}", tokens.instance_url);
    match (&tokens.refresh_token, a.print_refresh_token) {
        (Some(rt), true) => println!("{rt}"),
        (Some(_), false) => eprintln!(
            "A refresh token was issued. Re-run with --print-refresh-token to print it, and keep it secret."
        ),
        (None, _) => {
            eprintln!(
                "Salesforce issued no refresh token: add the `refresh_token` scope to the connected app."
            );
            return Ok(super::EXIT_FAILED);
        }
    }
    Ok(EXIT_OK)
}
