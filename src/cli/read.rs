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
    /// Start of the window for incremental streams, as a pipeline's `since`: a date
    /// (2026-07-01) or an RFC 3339 time; default 30 days ago. Zoom serves about six months:
    /// an earlier start begins at that horizon, as runs do
    #[arg(long)]
    pub since: Option<String>,
    /// Stop after this many records
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The state file named by ferry.yaml (`state:`, default `.ferry/state.db` beside it).
pub(super) fn open_state(g: &Global) -> anyhow::Result<crate::state::Store> {
    let path = super::state::state_path(&g.config)?;
    crate::state::Store::open(&path).with_context(|| {
        format!(
            "cannot open the state {}",
            crate::state::describe_location(&path)
        )
    })
}

/// The Zoom connection `connection` of ferry.yaml, resolved as every command resolves it
/// (`${NAME}`, `${NAME:-default}`, `${file:PATH}`); pipelines are not loaded.
pub(super) fn settings(g: &Global, connection: &str) -> anyhow::Result<ZoomSettings> {
    Ok(connection_settings(g, connection)?.0)
}

/// The connector's settings and the connection's `max_wait`.
pub(super) fn connection_settings(
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

/// Where a read starts: `--since` (default 30 days ago), never before Zoom's history
/// horizon, so an old `--since` reads what Zoom still has instead of failing (as runs do).
fn read_start(
    since: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    let horizon = crate::engine::connect::zoom_horizon(now);
    match since {
        Some(s) if s < horizon => {
            eprintln!(
                "note: Zoom keeps about six months of history; reading from {} instead of {}",
                horizon.format("%Y-%m-%d %H:%M UTC"),
                s.format("%Y-%m-%d %H:%M UTC")
            );
            horizon
        }
        Some(s) => s,
        None => (now - chrono::Duration::days(30)).max(horizon),
    }
}

/// Whether `connection` is a Salesforce connection of ferry.yaml.
fn is_salesforce(g: &Global, connection: &str) -> bool {
    let no_pipelines: &[std::path::PathBuf] = &[];
    crate::config::load_project_with(
        &g.config,
        &[],
        crate::config::LoadOptions {
            pipelines: Some(no_pipelines),
            ..Default::default()
        },
    )
    .ok()
    .and_then(|p| {
        p.connection(connection)
            .map(|c| c.as_salesforce().is_some())
    })
    .unwrap_or(false)
}

/// `ferry read salesforce.records --param sobject=Event --param select=Id,Subject`: the
/// stream's records from `--since`, as a first run would read them (Bulk included).
async fn read_salesforce(
    g: &Global,
    a: &ReadArgs,
    stream: &str,
    params: BTreeMap<String, serde_json::Value>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<u8> {
    use crate::connectors::salesforce::{SalesforceConnector, source};
    if stream != source::STREAM {
        eprintln!(
            "error: Salesforce has no stream `{stream}`; it has `{}`",
            source::STREAM
        );
        return Ok(EXIT_INVALID);
    }
    let q = match source::RecordsQuery::from_params(&params) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_INVALID);
        }
    };
    let no_pipelines: &[std::path::PathBuf] = &[];
    let project = match crate::config::load_project_with(
        &g.config,
        &[],
        crate::config::LoadOptions {
            pipelines: Some(no_pipelines),
            ..Default::default()
        },
    ) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{}", d.render());
            return Ok(EXIT_INVALID);
        }
    };
    let settings = match crate::engine::connect::salesforce_settings(&project) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_INVALID);
        }
    };
    let clock = crate::clock::system();
    let now = clock.now();
    let store = open_state(g)?;
    let http = crate::http::HttpClient::new(clock);
    crate::engine::connect::set_max_waits(&project, &http);
    let conn = Arc::new(
        SalesforceConnector::connect_with_store(
            settings,
            http,
            Some(Arc::new(StoreTokens::new(store))),
        )
        .await
        .context("connecting to Salesforce")?,
    );
    let window = crate::engine::ReadSpec {
        checkpoints: BTreeMap::new(),
        default_since: since.unwrap_or(now - chrono::Duration::days(30)),
        lookback: chrono::Duration::zero(),
        until: now,
    };
    let mut pages = conn.read_records(q, window);
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

pub async fn run(g: &Global, a: &ReadArgs) -> anyhow::Result<u8> {
    let (connection, stream) = a.stream.split_once('.').unwrap_or(("zoom", &a.stream));
    let salesforce = is_salesforce(g, connection);
    if !salesforce && catalog().get(stream).is_none() {
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
    let since = match a
        .since
        .as_deref()
        .map(|s| (s, crate::config::parse_since(s)))
    {
        Some((_, Some(t))) => Some(t),
        Some((s, None)) => {
            eprintln!(
                "error: --since `{s}` is not a time; write a date like 2026-07-01 or a time like 2026-07-01T09:00:00Z"
            );
            return Ok(EXIT_INVALID);
        }
        None => None,
    };
    if salesforce {
        return read_salesforce(g, a, stream, params, since).await;
    }
    // ferry.yaml unreadable, or no such Zoom connection: the arguments or the file are
    // wrong, not the service (exit 2).
    let (cfg, max_wait) = match connection_settings(g, connection) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_INVALID);
        }
    };
    let clock = crate::clock::system();
    let now = clock.now();
    let since = read_start(since, now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_start_before_zoom_history_begins_at_the_horizon() {
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .unwrap_or_default();
        let horizon = crate::engine::connect::zoom_horizon(now);
        let old = crate::config::parse_since("2025-01-01");
        assert_eq!(read_start(old, now), horizon);
        let recent = crate::config::parse_since("2026-10-01");
        assert_eq!(read_start(recent, now), recent.unwrap_or_default());
        assert_eq!(read_start(None, now), now - chrono::Duration::days(30));
    }
}
