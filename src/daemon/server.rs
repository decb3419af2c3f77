//! The daemon's HTTP server: the Zoom webhook receiver, `/healthz`, `/metrics` and the status
//! page. It stops accepting connections when the daemon shuts down.

use super::{Shared, inbox, status};
use crate::connectors::zoom::{WebhookError, url_validation_response, verify_webhook};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

pub(crate) async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("the HTTP server cannot read its address: {e}");
            return;
        }
    };
    let hosts = Arc::new(HostCheck { local });
    let app = axum::Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/deadletters/{pipeline}", get(deadletters_page))
        .route("/metrics", get(metrics))
        .route("/zoom/webhook", post(zoom_webhook))
        .route("/runs/{pipeline}", post(run_now))
        .with_state(shared.clone())
        .layer(axum::middleware::from_fn_with_state(
            (shared.clone(), hosts),
            check_host,
        ));
    let stop = shared.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.shutdown().wait().await })
        .await;
    if let Err(e) = result {
        tracing::error!("the HTTP server stopped: {e}");
    }
}

/// Which Host headers the daemon answers: its listen address (the IP and port it is bound
/// to; any IP literal with that port when it listens on all addresses), `localhost` and the
/// loopback addresses with that port when it listens on loopback (or on all addresses), and
/// the names in `daemon.public_host`. A browser page on another name that resolves to this
/// machine (DNS rebinding) sends its own name as Host, and is refused.
struct HostCheck {
    local: std::net::SocketAddr,
}

/// How a request reached the daemon, by its Host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The daemon's own address or a loopback name: someone on its machine or network.
    Local,
    /// A name of `daemon.public_host`: possibly anyone, through a load balancer.
    Public,
}

impl HostCheck {
    /// Whether the daemon answers for `host`, and how it was reached.
    fn reach(&self, host: &str, public: &[String]) -> Option<Reach> {
        let host = host.trim().to_ascii_lowercase();
        let (name, port) = split_host(&host);
        let name = name.strip_suffix('.').unwrap_or(name);
        if self.is_local(name, port) {
            return Some(Reach::Local);
        }
        // A configured public name: with its port if one is configured, else with any.
        public
            .iter()
            .any(|p| {
                let (pn, pp) = split_host(p);
                pn == name && (pp.is_none() || pp == port)
            })
            .then_some(Reach::Public)
    }

    fn is_local(&self, name: &str, port: Option<&str>) -> bool {
        let Some(port) = port else {
            return false;
        };
        if port.parse::<u16>().ok() != Some(self.local.port()) {
            return false;
        }
        let ip = self.local.ip();
        let literal: Option<std::net::IpAddr> = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name)
            .parse()
            .ok();
        if ip.is_unspecified() {
            // Listening everywhere: an address literal is this machine's (a rebinding
            // attack needs a name); names need daemon.public_host.
            return literal.is_some() || name == "localhost";
        }
        if literal == Some(ip) {
            return true;
        }
        ip.is_loopback() && (name == "localhost" || literal.is_some_and(|l| l.is_loopback()))
    }
}

/// `name:port` → (name, Some(port)); `[v6]:port` too; a bare name → (name, None).
fn split_host(h: &str) -> (&str, Option<&str>) {
    if h.starts_with('[') {
        return match h.rsplit_once("]:") {
            Some((n, p)) => (&h[..n.len() + 1], Some(p)),
            None => (h, None),
        };
    }
    match h.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') => (n, Some(p)),
        _ => (h, None),
    }
}

/// Refuses, with 421, a request whose Host the daemon does not answer for (see
/// [`HostCheck`]); a request without Host gets 400.
async fn check_host(
    State((shared, hosts)): State<(Arc<Shared>, Arc<HostCheck>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return text(StatusCode::BAD_REQUEST, "a Host header is required");
    };
    let project = shared.project();
    let Some(reach) = hosts.reach(&host, &project.config.daemon.public_host) else {
        tracing::warn!("refused a request for a host this daemon does not answer for");
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            "this ferry daemon does not answer for that host name; add it to daemon.public_host in ferry.yaml",
        );
    };
    if reach == Reach::Public && shows_people(req.uri().path()) {
        let given = bearer(req.headers());
        match project.config.daemon.api_token.as_ref() {
            None => {
                tracing::warn!("refused a page on a public host name: no daemon.api_token");
                return text(
                    StatusCode::FORBIDDEN,
                    "the status page, dead letters and metrics are not served on a public host \
                     name without daemon.api_token: open them on the daemon's own address (an \
                     SSH tunnel, for example), or set daemon.api_token in ferry.yaml and send it \
                     as a bearer token",
                );
            }
            Some(token) if !same_secret(given, token.expose()) => {
                tracing::warn!("refused a page on a public host name: missing or wrong token");
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "missing or wrong bearer token (daemon.api_token)",
                )
                    .into_response();
            }
            Some(_) => {}
        }
    }
    drop(project);
    next.run(req).await
}

/// Pages that show hosts' and attendees' addresses, payloads of dead letters or lease
/// holders: the status page, the dead-letter pages and the metrics. On a public host name
/// they need the daemon's API token; `/healthz`, `/readyz` (for load balancers) and the
/// webhook (signed by Zoom) do not, and `/runs` checks the token itself.
fn shows_people(path: &str) -> bool {
    path == "/" || path == "/metrics" || path.starts_with("/deadletters/")
}

/// The token of an `Authorization: Bearer ...` header, or "".
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// Verifies the signature over the raw body and the timestamp window, stores the event in
/// the inbox, and answers 200 before any processing. 401 for a delivery that does not
/// verify (nothing stored); 500 when the inbox cannot take it (Zoom retries).
async fn zoom_webhook(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let project = shared.project();
    let secret = project
        .config
        .connections
        .iter()
        .find_map(|c| c.as_zoom().and_then(|z| z.webhook_secret.clone()));
    let Some(secret) = secret else {
        tracing::error!("a webhook arrived but the zoom connection has no webhook_secret");
        shared.metrics.record_webhook("rejected");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks are not configured (no webhook_secret)",
        );
    };
    let hs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.to_string(), v.to_string())))
        .collect();
    let event = match verify_webhook(
        secret.expose(),
        &hs,
        &body,
        shared.clock.now(),
        shared.options.webhook_window,
    ) {
        Ok(e) => e,
        Err(e) => {
            let status = match e {
                WebhookError::BadBody(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::UNAUTHORIZED,
            };
            tracing::warn!("refused a webhook delivery: {e}");
            shared.metrics.record_webhook("rejected");
            return text(status, &e.to_string());
        }
    };
    if event.event == "endpoint.url_validation" {
        let Some(plain) = event.payload["plainToken"].as_str() else {
            shared.metrics.record_webhook("rejected");
            return text(StatusCode::BAD_REQUEST, "no plainToken");
        };
        shared.metrics.record_webhook("validation");
        return axum::Json(url_validation_response(secret.expose(), plain)).into_response();
    }
    let request_id = headers.get("x-zm-request-id").and_then(|v| v.to_str().ok());
    let id = inbox::delivery_id(request_id, &event.body);
    let store = &shared.store;
    match store.inbox_depth().await {
        Ok(n) if n >= shared.options.inbox_capacity => {
            tracing::error!(depth = n, "the webhook inbox is full; refusing a delivery");
            shared.metrics.record_webhook("refused");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "inbox full");
        }
        Ok(_) => {}
        Err(e) => {
            // The state (a PostgreSQL server, say) cannot be reached: 503, and Zoom delivers
            // again later (for about 85 minutes); nothing is accepted that is not stored.
            tracing::error!("cannot read the webhook inbox: {e}");
            shared.metrics.record_webhook("refused");
            return text(StatusCode::SERVICE_UNAVAILABLE, "inbox unavailable");
        }
    }
    match store
        .inbox_put(&id, &event.event, &event.body, shared.clock.now())
        .await
    {
        Ok(true) => {
            tracing::info!(event = %event.event, "webhook stored");
            shared.metrics.record_webhook("accepted");
            shared.inbox_wake.notify_one();
            text(StatusCode::OK, "stored")
        }
        Ok(false) => {
            tracing::debug!(event = %event.event, "duplicate webhook delivery");
            shared.metrics.record_webhook("duplicate");
            text(StatusCode::OK, "duplicate")
        }
        Err(e) => {
            tracing::error!("cannot store a webhook event: {e}");
            shared.metrics.record_webhook("refused");
            text(StatusCode::SERVICE_UNAVAILABLE, "cannot store the event")
        }
    }
}

/// `POST /runs/{pipeline}` with `Authorization: Bearer <daemon.api_token>`: starts a run of
/// the pipeline now (as `ferry run` would, through the daemon's lock, so never beside a
/// scheduled or webhook run of it) and answers 202 without waiting for it. 404 while no
/// token is configured or for an unknown pipeline, 401 for a missing or wrong token, 409 while
/// a run of the pipeline is in progress, 503 during shutdown.
async fn run_now(
    State(shared): State<Arc<Shared>>,
    Path(pipeline): Path<String>,
    headers: HeaderMap,
) -> Response {
    let project = shared.project();
    let Some(token) = project.config.daemon.api_token.clone() else {
        return text(
            StatusCode::NOT_FOUND,
            "the run endpoint is off: set daemon.api_token in ferry.yaml to turn it on",
        );
    };
    if !same_secret(bearer(&headers), token.expose()) {
        tracing::warn!(pipeline, "refused a run request: missing or wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token",
        )
            .into_response();
    }
    if project.pipeline(&pipeline).is_none() {
        let names: Vec<&str> = project.pipelines.iter().map(|p| p.name.as_str()).collect();
        return text(
            StatusCode::NOT_FOUND,
            &format!("no pipeline `{pipeline}`; there are: {}", names.join(", ")),
        );
    }
    if shared.shutdown().is_triggered() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "ferry daemon is stopping");
    }
    if shared
        .status()
        .pipelines
        .get(&pipeline)
        .is_some_and(|p| p.running)
    {
        return text(
            StatusCode::CONFLICT,
            &format!("a run of `{pipeline}` is in progress"),
        );
    }
    tracing::info!(pipeline, "run requested over HTTP");
    shared.spawn_run(&pipeline, super::Trigger::Manual);
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"pipeline": pipeline, "started": true})),
    )
        .into_response()
}

/// Compares a presented token with the configured one in time that does not depend on where
/// they differ (both are hashed first, so their lengths do not show either).
fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::Digest;
    let a = sha2::Sha256::digest(given.as_bytes());
    let b = sha2::Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
        && !expected.is_empty()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(status::health_json(&shared).await).into_response()
}

/// 200 while ready, 503 while degraded (a file in error, a changed connection that cannot
/// connect, a shutdown under way); the body says why.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let (ready, body) = status::ready_json(&shared);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn deadletters_page(
    State(shared): State<Arc<Shared>>,
    Path(pipeline): Path<String>,
) -> Response {
    match status::deadletters_html(&shared, &pipeline).await {
        Some(html) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        None => text(StatusCode::NOT_FOUND, "no such pipeline"),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let inbox =
        status::logged("the inbox counts", shared.store.inbox_counts().await).unwrap_or_default();
    let conns = shared.conns();
    let b = conns.salesforce.conn.budget();
    let budget = b
        .daily_budget
        .or(b.org_max)
        .map(|limit| (b.used_by_ferry, limit));
    // Every pipeline of the project, 0 when nothing waits.
    let mut deferred: std::collections::BTreeMap<String, u64> = shared
        .project()
        .pipelines
        .iter()
        .map(|p| (p.name.clone(), 0))
        .collect();
    for d in status::logged("deferrals", shared.store.zoom_deferral_summary(None).await)
        .unwrap_or_default()
    {
        let n = deferred.entry(d.pipeline).or_default();
        *n = n.saturating_add(d.records);
    }
    let mut body = shared
        .metrics
        .render(conns.http.metrics(), inbox, budget, &deferred);
    body.push_str(&status::lease_metrics(&shared).await);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn status_page(State(shared): State<Arc<Shared>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        status::render_html(&shared).await,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl HostCheck {
        fn reach_any(&self, host: &str, public: &[String]) -> bool {
            self.reach(host, public).is_some()
        }
    }

    #[test]
    fn public_names_are_told_from_the_daemons_own() {
        let lo = check("127.0.0.1:8787");
        let public = vec!["ferry.example.com".to_string()];
        assert_eq!(lo.reach("127.0.0.1:8787", &public), Some(Reach::Local));
        assert_eq!(lo.reach("localhost:8787", &public), Some(Reach::Local));
        assert_eq!(lo.reach("ferry.example.com", &public), Some(Reach::Public));
        assert_eq!(
            lo.reach("FERRY.example.com.:443", &public),
            Some(Reach::Public)
        );
        assert_eq!(lo.reach("other.example.com", &public), None);
        for path in ["/", "/metrics", "/deadletters/p"] {
            assert!(shows_people(path), "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/zoom/webhook",
            "/runs/p",
            "/deadletters",
        ] {
            assert!(!shows_people(path), "{path}");
        }
    }

    fn check(local: &str) -> HostCheck {
        HostCheck {
            local: local.parse().unwrap(),
        }
    }

    #[test]
    fn only_the_listen_address_loopback_names_and_public_hosts_are_answered() {
        let public = vec![
            "ferry.example.com".to_string(),
            "hooks.example.com:8443".to_string(),
        ];
        let lo = check("127.0.0.1:8787");
        for ok in [
            "127.0.0.1:8787",
            "localhost:8787",
            "LOCALHOST:8787",
            "[::1]:8787",
            "ferry.example.com",
            "ferry.example.com:443",
            "Ferry.Example.Com.",
            "hooks.example.com:8443",
        ] {
            assert!(lo.reach_any(ok, &public), "{ok}");
        }
        for bad in [
            "attacker.example:8787",
            "localhost:9999",
            "127.0.0.1",
            "10.0.0.5:8787",
            "hooks.example.com",
            "hooks.example.com:443",
            "ferry.example.com.evil.net",
            "",
        ] {
            assert!(!lo.reach_any(bad, &public), "{bad}");
        }
        assert!(!lo.reach_any("ferry.example.com", &[]));
        let any = check("0.0.0.0:8787");
        assert!(any.reach_any("10.0.0.5:8787", &[]));
        assert!(any.reach_any("localhost:8787", &[]));
        assert!(!any.reach_any("ferry.example.com:8787", &[]));
        assert!(any.reach_any("ferry.example.com", &public));
        let lan = check("10.0.0.5:8787");
        assert!(lan.reach_any("10.0.0.5:8787", &[]));
        assert!(
            !lan.reach_any("localhost:8787", &[]),
            "not listening on loopback"
        );
    }
}
