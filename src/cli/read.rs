use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::connectors::zoom::{
    DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, ReadWindow, Secret, StoreTokens, ZoomAuth, ZoomConnector,
    ZoomPlan, ZoomSettings, catalog,
};
use anyhow::Context;
use futures::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// The stream, e.g. `zoom.past_meetings`
    pub stream: String,
    /// A stream parameter, `k=v` (repeatable)
    #[arg(long = "param", value_name = "K=V")]
    pub params: Vec<String>,
    /// Start of the window for incremental streams (RFC 3339; default 30 days ago)
    #[arg(long)]
    pub since: Option<String>,
    /// Stop after this many records
    #[arg(long)]
    pub limit: Option<usize>,
}

// TODO(config): swap this private reader for the typed ferry.yaml loader in `crate::config`
// once it lands (connections.<name> of kind zoom → ZoomSettings).
#[derive(Debug, Deserialize)]
struct FerryFile {
    #[serde(default)]
    connections: BTreeMap<String, Connection>,
}

#[derive(Debug, Deserialize)]
struct Connection {
    kind: String,
    #[serde(default)]
    auth: BTreeMap<String, String>,
    base_url: Option<String>,
    token_url: Option<String>,
    plan: Option<String>,
    headroom: Option<f64>,
    webhook_secret: Option<String>,
}

/// `${NAME}` → the environment variable's value.
fn expand(s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .map(|e| i + e)
            .context("unterminated ${ in ferry.yaml")?;
        let name = &rest[i + 2..end];
        out.push_str(
            &std::env::var(name)
                .with_context(|| format!("environment variable {name} is not set"))?,
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The state file named by ferry.yaml (`state:`, default `.ferry/state.db` beside it).
pub(super) fn open_state(g: &Global) -> anyhow::Result<crate::state::Store> {
    let path = super::state::state_path(&g.config)?;
    crate::state::Store::open(&path)
        .with_context(|| format!("cannot open the state file {}", path.display()))
}

pub(super) fn settings(g: &Global, connection: &str) -> anyhow::Result<ZoomSettings> {
    let text = std::fs::read_to_string(&g.config)
        .with_context(|| format!("cannot read {}", g.config.display()))?;
    let file: FerryFile = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", g.config.display()))?;
    let c = file
        .connections
        .get(connection)
        .with_context(|| format!("ferry.yaml has no connection `{connection}`"))?;
    anyhow::ensure!(
        c.kind == "zoom",
        "connection `{connection}` is not of kind zoom"
    );
    let get = |k: &str| -> anyhow::Result<String> {
        expand(
            c.auth
                .get(k)
                .with_context(|| format!("connections.{connection}.auth.{k} is missing"))?,
        )
    };
    let auth = match c.auth.get("type").map(String::as_str) {
        Some("server_to_server") | None => ZoomAuth::ServerToServer {
            account_id: get("account_id")?,
            client_id: get("client_id")?,
            client_secret: Secret::new(get("client_secret")?),
        },
        Some("oauth") => ZoomAuth::OAuth {
            client_id: get("client_id")?,
            client_secret: Secret::new(get("client_secret")?),
            refresh_token: get("refresh_token").ok().map(Secret::new),
        },
        Some(other) => anyhow::bail!("unknown Zoom auth type `{other}`"),
    };
    Ok(ZoomSettings {
        base_url: expand(c.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))?,
        token_url: expand(c.token_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL))?,
        auth,
        plan: c
            .plan
            .as_deref()
            .unwrap_or("pro")
            .parse::<ZoomPlan>()
            .map_err(anyhow::Error::msg)?,
        headroom: c.headroom.unwrap_or(0.8),
        webhook_secret: c
            .webhook_secret
            .as_deref()
            .map(expand)
            .transpose()?
            .map(Secret::new),
    })
}

pub async fn run(g: &Global, a: &ReadArgs) -> anyhow::Result<u8> {
    let (connection, stream) = a.stream.split_once('.').unwrap_or(("zoom", &a.stream));
    if catalog().get(stream).is_none() {
        eprintln!(
            "error: no stream `{}`; `ferry streams` lists them",
            a.stream
        );
        return Ok(EXIT_INVALID);
    }
    let mut params = BTreeMap::new();
    for p in &a.params {
        let Some((k, v)) = p.split_once('=') else {
            eprintln!("error: --param wants k=v, got `{p}`");
            return Ok(EXIT_INVALID);
        };
        let value = serde_json::from_str::<serde_json::Value>(v)
            .ok()
            .filter(|j| j.is_number() || j.is_boolean())
            .unwrap_or_else(|| serde_json::Value::String(v.to_string()));
        params.insert(k.to_string(), value);
    }
    let cfg = settings(g, connection)?;
    let clock = crate::clock::system();
    let now = clock.now();
    let since = match &a.since {
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--since {s} is not an RFC 3339 time"))?
            .with_timezone(&chrono::Utc),
        None => now - chrono::Duration::days(30),
    };
    // Tokens go to the state file: an oauth refresh rotates the refresh token, and losing
    // the new one would need a human to re-authorize.
    let store = open_state(g)?;
    let conn = ZoomConnector::new(
        cfg,
        crate::http::HttpClient::new(clock),
        Arc::new(StoreTokens::new(store)),
    );
    let mut pages = Box::pin(conn.read(stream, &params, ReadWindow::fixed(since, now)));
    let mut printed = 0usize;
    while let Some(page) = pages.next().await {
        for r in page?.records {
            if a.limit.is_some_and(|l| printed >= l) {
                return Ok(EXIT_OK);
            }
            println!("{}", serde_json::to_string(&r)?);
            printed += 1;
        }
    }
    Ok(EXIT_OK)
}
