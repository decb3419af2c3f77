use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::connectors::zoom::{ReadWindow, StoreTokens, ZoomConnector, ZoomSettings, catalog};
use anyhow::Context;
use futures::StreamExt;
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

/// The state file named by ferry.yaml (`state:`, default `.ferry/state.db` beside it).
pub(super) fn open_state(g: &Global) -> anyhow::Result<crate::state::Store> {
    let path = super::state::state_path(&g.config)?;
    crate::state::Store::open(&path)
        .with_context(|| format!("cannot open the state file {}", path.display()))
}

/// The Zoom connection `connection` of ferry.yaml, resolved as every command resolves it
/// (`${NAME}`, `${NAME:-default}`, `${file:PATH}`); pipelines are not loaded.
pub(super) fn settings(g: &Global, connection: &str) -> anyhow::Result<ZoomSettings> {
    Ok(connection_settings(g, connection)?.0)
}

/// The connector's settings and the connection's `max_wait`.
fn connection_settings(
    g: &Global,
    connection: &str,
) -> anyhow::Result<(ZoomSettings, std::time::Duration)> {
    let owned = crate::config::builtin_catalogs();
    let catalogs: Vec<&dyn crate::config::StreamCatalog> =
        owned.iter().map(|c| c.as_ref()).collect();
    let no_pipelines: &[std::path::PathBuf] = &[];
    let project = crate::config::load_project_with(
        &g.config,
        &catalogs,
        crate::config::LoadOptions {
            pipelines: Some(no_pipelines),
            ..Default::default()
        },
    )
    .map_err(|d| anyhow::anyhow!("{}", d.render()))?;
    let c = project
        .connection(connection)
        .with_context(|| format!("ferry.yaml has no connection `{connection}`"))?;
    let z = c
        .as_zoom()
        .with_context(|| format!("connection `{connection}` is not of kind zoom"))?;
    Ok((crate::engine::connect::zoom_settings(z), z.max_wait))
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
    let (cfg, max_wait) = connection_settings(g, connection)?;
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
    let http = crate::http::HttpClient::new(clock);
    http.set_max_wait(crate::http::Service::Zoom, max_wait);
    let conn = ZoomConnector::new(cfg, http, Arc::new(StoreTokens::new(store)));
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
