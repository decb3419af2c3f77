//! A deliberately hostile Zoom on 127.0.0.1: absurd Retry-After values, a page token that
//! repeats forever, a body that never ends, a token that lives forever. ferry must end each
//! read with a clear error (or read on, for a legal but odd value): no panic, no hang, no
//! sleeping through a wait it was not meant to wait, all on a virtual clock.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::connectors::zoom::{
    MemoryTokenStore, ReadWindow, Secret, ZoomAuth, ZoomConnector, ZoomError, ZoomPlan,
    ZoomSettings,
};
use ferry::http::{HttpClient, HttpError, Service};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// What the hostile server does on `GET /v2/users` (and other API paths).
#[derive(Clone)]
enum Mode {
    /// A per-second 429 with these headers, `then` answers once after it.
    TooMany(Vec<(&'static str, String)>),
    /// 429 on the first request, users after it.
    TooManyOnce(Vec<(&'static str, String)>),
    /// Every page hands out the same `next_page_token`.
    RepeatingToken,
    /// A body of `size` bytes, streamed lazily; with Content-Length or chunked.
    Endless { size: u64, announce: bool },
    /// One page of users.
    Users,
    /// Users on two pages (`next_page_token` "p2" leads to the second).
    TwoPages,
}

struct Hostile {
    mode: Mutex<Mode>,
    expires_in: Mutex<Value>,
    api_hits: AtomicUsize,
    token_hits: AtomicUsize,
}

async fn serve(mode: Mode) -> (String, Arc<Hostile>) {
    let state = Arc::new(Hostile {
        mode: Mutex::new(mode),
        expires_in: Mutex::new(json!(3599)),
        api_hits: AtomicUsize::new(0),
        token_hits: AtomicUsize::new(0),
    });
    let app =
        axum::Router::new()
            .route(
                "/oauth/token",
                axum::routing::post(|State(s): State<Arc<Hostile>>| async move {
                    s.token_hits.fetch_add(1, Ordering::SeqCst);
                    let n = s.token_hits.load(Ordering::SeqCst);
                    let expires_in = s.expires_in.lock().unwrap().clone();
                    axum::Json(json!({
                        "access_token": format!("tok-{n}"),
                        "token_type": "bearer",
                        "expires_in": expires_in,
                        "scope": "user:read:admin",
                    }))
                }),
            )
            .fallback(
                |State(s): State<Arc<Hostile>>,
                 q: axum::extract::Query<BTreeMap<String, String>>| async move {
                    api(&s, &q.0)
                },
            )
            .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, state)
}

fn users_page(token: &str) -> Value {
    json!({
        "page_size": 300,
        "total_records": 2,
        "next_page_token": token,
        "users": [{"id": "u1", "email": "a@acme.com"}, {"id": "u2", "email": "b@acme.com"}],
    })
}

fn too_many(headers: &[(&'static str, String)]) -> Response {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    let body = json!({"code": 429, "message": "You have reached the maximum per-second rate limit for this API. Try again later."});
    (StatusCode::TOO_MANY_REQUESTS, h, axum::Json(body)).into_response()
}

fn api(s: &Hostile, q: &BTreeMap<String, String>) -> Response {
    let n = s.api_hits.fetch_add(1, Ordering::SeqCst);
    let mode = s.mode.lock().unwrap().clone();
    match mode {
        Mode::TooMany(h) => too_many(&h),
        Mode::TooManyOnce(h) if n == 0 => too_many(&h),
        Mode::TooManyOnce(_) | Mode::Users => axum::Json(users_page("")).into_response(),
        Mode::RepeatingToken => axum::Json(users_page("again")).into_response(),
        Mode::TwoPages => match q.get("next_page_token").map(String::as_str) {
            None => axum::Json(users_page("p2")).into_response(),
            Some("p2") => axum::Json(json!({
                "next_page_token": "",
                "users": [{"id": "u3", "email": "c@acme.com"}, {"id": "u4", "email": "d@acme.com"}],
            }))
            .into_response(),
            Some(_) => StatusCode::BAD_REQUEST.into_response(),
        },
        Mode::Endless { size, announce } => {
            // 64 KiB chunks made on demand: the server never holds the body.
            const CHUNK: u64 = 64 * 1024;
            let chunks = size.div_ceil(CHUNK);
            let stream = futures::stream::iter(0..chunks).map(move |i| {
                let len = CHUNK.min(size - i * CHUNK) as usize;
                Ok::<_, std::io::Error>(Bytes::from(vec![b' '; len]))
            });
            let mut resp = Response::new(Body::from_stream(stream));
            if announce {
                resp.headers_mut()
                    .insert("content-length", HeaderValue::from(size));
            }
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            resp
        }
    }
}

struct Rig {
    conn: ZoomConnector,
    clock: Arc<ManualClock>,
    server: Arc<Hostile>,
}

async fn rig(mode: Mode) -> Rig {
    rig_with(mode, |h| h).await
}

async fn rig_with(mode: Mode, tune: impl FnOnce(HttpClient) -> HttpClient) -> Rig {
    let (url, server) = serve(mode).await;
    let clock = ManualClock::auto(t0());
    let shared: SharedClock = clock.clone();
    let conn = ZoomConnector::new(
        ZoomSettings {
            base_url: format!("{url}/v2"),
            token_url: format!("{url}/oauth/token"),
            auth: ZoomAuth::ServerToServer {
                account_id: "acct".into(),
                client_id: "cid".into(),
                client_secret: Secret::new("csecret"),
            },
            plan: ZoomPlan::Pro,
            headroom: 0.8,
            webhook_secret: None,
        },
        tune(HttpClient::new(shared)),
        Arc::new(MemoryTokenStore::default()),
    );
    Rig {
        conn,
        clock,
        server,
    }
}

/// Reads `zoom.users` to the end: the records, or the first error.
async fn read_users(conn: &ZoomConnector) -> Result<Vec<Value>, ZoomError> {
    let now = conn.http().clock().now();
    let mut pages = Box::pin(conn.read(
        "users",
        &BTreeMap::new(),
        ReadWindow::fixed(now - chrono::Duration::days(1), now),
    ));
    let mut out = Vec::new();
    while let Some(p) = pages.next().await {
        out.extend(p?.records);
    }
    Ok(out)
}

/// A 429 asking for `value` ends the read at once: a `WaitTooLong` naming the service, the
/// category and the wait, one request sent, and no time slept.
async fn refuses_to_wait(header: &'static str, value: &str, expect_in_message: &str) {
    let r = rig(Mode::TooMany(vec![(header, value.to_string())])).await;
    let before = r.clock.now();
    let err = tokio::time::timeout(Duration::from_secs(20), read_users(&r.conn))
        .await
        .expect("the read ends without hanging")
        .expect_err("a wait past max_wait is an error");
    match &err {
        ZoomError::Http(HttpError::WaitTooLong {
            service,
            category,
            asked,
            max,
        }) => {
            assert_eq!(*service, "zoom");
            assert_eq!(category, "medium");
            assert!(
                asked.to_lowercase().contains(&format!("({header}: ")),
                "{asked}"
            );
            assert_eq!(max, "5 min");
        }
        other => panic!("expected WaitTooLong, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("zoom asked ferry to wait"), "{text}");
    assert!(text.contains("medium"), "{text}");
    assert!(text.contains(expect_in_message), "{text}");
    assert!(text.contains("max_wait"), "{text}");
    assert_eq!(r.server.api_hits.load(Ordering::SeqCst), 1, "no retry");
    assert_eq!(r.clock.now(), before, "nothing slept on the virtual clock");
}

#[tokio::test]
async fn retry_after_1e20_ends_the_read_without_panic() {
    refuses_to_wait("retry-after", "1e20", "more than 1000 years").await;
}

#[tokio::test]
async fn retry_after_999999999_seconds_is_not_slept_through() {
    // 31 years and change, until 2057.
    refuses_to_wait("retry-after", "999999999", "31 years").await;
    refuses_to_wait("retry-after", "999999999", "until 2057-").await;
}

#[tokio::test]
async fn a_retry_after_date_in_year_9999_is_not_slept_through() {
    refuses_to_wait(
        "retry-after",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "until 9999-12-31T23:59:59Z",
    )
    .await;
}

#[tokio::test]
async fn a_far_rate_limit_reset_is_not_slept_through() {
    refuses_to_wait("x-ratelimit-reset", "253402300799", "X-RateLimit-Reset").await;
    // Past what chrono represents at all: still an error, not a panic.
    refuses_to_wait(
        "x-ratelimit-reset",
        "99999999999999999",
        "X-RateLimit-Reset",
    )
    .await;
}

#[tokio::test]
async fn a_short_retry_after_is_still_waited_on_the_clock() {
    let r = rig(Mode::TooManyOnce(vec![("retry-after", "30".into())])).await;
    let before = r.clock.now();
    let users = read_users(&r.conn).await.expect("read after the wait");
    assert_eq!(users.len(), 2);
    assert!(r.clock.now() - before >= chrono::Duration::seconds(30));
    assert_eq!(r.server.api_hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn max_wait_is_the_connections_choice() {
    // An hour is fine for a connection that allows two.
    let r = rig_with(
        Mode::TooManyOnce(vec![("retry-after", "3600".into())]),
        |h| {
            h.set_max_wait(Service::Zoom, Duration::from_secs(7200));
            h
        },
    )
    .await;
    let before = r.clock.now();
    assert_eq!(read_users(&r.conn).await.unwrap().len(), 2);
    assert!(r.clock.now() - before >= chrono::Duration::hours(1));
    // The same hour is too long for one that allows a minute.
    let r = rig_with(
        Mode::TooManyOnce(vec![("retry-after", "3600".into())]),
        |h| {
            h.set_max_wait(Service::Zoom, Duration::from_secs(60));
            h
        },
    )
    .await;
    let err = read_users(&r.conn).await.unwrap_err().to_string();
    assert!(
        err.contains("1 h") && err.contains("max_wait of 1 min"),
        "{err}"
    );
}

#[tokio::test]
async fn a_repeating_page_token_stops_the_listing() {
    let r = rig(Mode::RepeatingToken).await;
    let err = tokio::time::timeout(Duration::from_secs(20), read_users(&r.conn))
        .await
        .expect("no endless paging")
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ZoomError::Malformed { .. }), "{text}");
    assert!(text.contains("next_page_token repeats"), "{text}");
    // The first page gives the token, the second repeats it: two requests, not hundreds.
    assert_eq!(r.server.api_hits.load(Ordering::SeqCst), 2);
    // Enrich reads (fetch_all) stop the same way.
    let err = r
        .conn
        .fetch_all("users", &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("next_page_token repeats"), "{err}");
}

/// A 1 GB body: refused before reading when announced, cut at the cap when chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gigabyte_body_is_refused_not_read() {
    const GB: u64 = 1 << 30;
    for announce in [true, false] {
        let r = rig(Mode::Endless { size: GB, announce }).await;
        let err = tokio::time::timeout(Duration::from_secs(60), read_users(&r.conn))
            .await
            .expect("the read ends")
            .unwrap_err();
        let text = err.to_string();
        match &err {
            ZoomError::Http(HttpError::BodyTooLarge { size, .. }) => {
                assert_eq!(*size, announce.then_some(GB), "{text}");
            }
            other => panic!("expected BodyTooLarge, got {other}"),
        }
        assert!(text.contains("larger than the 64 MiB"), "{text}");
        // Not retried: one request.
        assert_eq!(r.server.api_hits.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn the_body_cap_is_configurable() {
    let r = rig_with(
        Mode::Endless {
            size: 10_000,
            announce: false,
        },
        |h| h.with_max_body(4096),
    )
    .await;
    let err = read_users(&r.conn).await.unwrap_err().to_string();
    assert!(err.contains("larger than the 4096 bytes"), "{err}");
}

#[tokio::test]
async fn an_expires_in_of_1e18_is_clamped_and_read_goes_on() {
    for expires_in in [
        json!(1_000_000_000_000_000_000u64),
        json!(1e18),
        json!("1e300"),
    ] {
        let r = rig(Mode::Users).await;
        *r.server.expires_in.lock().unwrap() = expires_in.clone();
        assert_eq!(read_users(&r.conn).await.unwrap().len(), 2, "{expires_in}");
        assert_eq!(r.server.token_hits.load(Ordering::SeqCst), 1);
        // Within the day the token is reused...
        r.clock.advance(Duration::from_secs(23 * 3600));
        assert_eq!(read_users(&r.conn).await.unwrap().len(), 2);
        assert_eq!(r.server.token_hits.load(Ordering::SeqCst), 1);
        // ...and renewed after it: a "forever" token is held a day at most.
        r.clock.advance(Duration::from_secs(2 * 3600));
        assert_eq!(read_users(&r.conn).await.unwrap().len(), 2);
        assert_eq!(
            r.server.token_hits.load(Ordering::SeqCst),
            2,
            "{expires_in}"
        );
    }
}

/// `ferry read zoom.users` against the server asking for `Retry-After: 1e20`: exit 1 (not a
/// panic's 101) at once, with the message on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_read_ends_cleanly_on_an_absurd_retry_after() {
    let (url, server) = serve(Mode::TooMany(vec![("retry-after", "1e20".into())])).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ferry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "connections:\n  zoom:\n    kind: zoom\n    auth:\n      type: server_to_server\n      account_id: acct\n      client_id: cid\n      client_secret: ${{file:zoom_secret}}\n    base_url: {url}/v2\n    token_url: {url}/oauth/token\n    max_wait: 2m\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("zoom_secret"), "csecret").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["--config", cfg.to_str().unwrap(), "read", "zoom.users"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("zoom asked ferry to wait more than 1000 years")
            && stderr.contains("medium")
            && stderr.contains("max_wait of 2 min"),
        "{stderr}"
    );
    assert_eq!(server.api_hits.load(Ordering::SeqCst), 1);
}

fn request_params(selector: Option<&str>) -> BTreeMap<String, Value> {
    let mut p = BTreeMap::from([("path".to_string(), json!("/users"))]);
    if let Some(sel) = selector {
        p.insert("record_selector".into(), json!(sel));
    }
    p
}

/// `zoom.request` as a pipeline source and in `ferry read` (both go through `read`): the
/// `record_selector` picks the records, on every page.
#[tokio::test]
async fn request_as_a_source_honours_record_selector_and_paging() {
    let r = rig(Mode::TwoPages).await;
    let now = r.clock.now();
    let window = ReadWindow::fixed(now - chrono::Duration::days(1), now);
    let mut pages = Box::pin(r.conn.read(
        "request",
        &request_params(Some("$.users[*].email")),
        window.clone(),
    ));
    let mut emails = Vec::new();
    while let Some(p) = pages.next().await {
        emails.extend(p.unwrap().records);
    }
    assert_eq!(
        emails,
        vec![
            json!("a@acme.com"),
            json!("b@acme.com"),
            json!("c@acme.com"),
            json!("d@acme.com")
        ]
    );
    // Without a selector, each page's whole body is one record.
    let mut pages = Box::pin(r.conn.read("request", &request_params(None), window));
    let mut bodies = Vec::new();
    while let Some(p) = pages.next().await {
        bodies.extend(p.unwrap().records);
    }
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["next_page_token"], "p2");
}

/// `zoom.request` in an enrich (the engine's `Source::fetch`): a `record_selector` gives the
/// list of every selected record across pages, not only the first one.
#[tokio::test]
async fn request_in_an_enrich_gives_every_selected_record() {
    use ferry::engine::Source;
    let r = rig(Mode::TwoPages).await;
    let source = ferry::engine::connect::ZoomSource {
        conn: r.conn.clone(),
    };
    let users = source
        .fetch("zoom.request", request_params(Some("$.users[*]")))
        .await
        .unwrap();
    let ids: Vec<&str> = users
        .as_array()
        .expect("a list")
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["u1", "u2", "u3", "u4"]);
    // No selector: the whole (first) body, one record.
    let body = source
        .fetch("zoom.request", request_params(None))
        .await
        .unwrap();
    assert_eq!(body["users"][0]["id"], "u1");
    // A method other than GET is refused on every path.
    let mut p = request_params(Some("$.users[*]"));
    p.insert("method".into(), json!("DELETE"));
    let err = source.fetch("zoom.request", p.clone()).await.unwrap_err();
    assert!(err.to_string().contains("GET only"), "{err}");
    let now = r.clock.now();
    let mut pages = Box::pin(r.conn.read(
        "request",
        &p,
        ReadWindow::fixed(now - chrono::Duration::days(1), now),
    ));
    let err = pages.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("GET only"), "{err}");
}

/// A Salesforce whose query pages point back at a page already read: `query_all` stops with
/// an error after two requests instead of following the loop.
#[tokio::test]
async fn a_repeating_next_records_url_stops_query_all() {
    use ferry::connectors::salesforce::{SalesforceConnector, SalesforceSettings, SfAuth};
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let instance = url.clone();
    let h2 = hits.clone();
    let app = axum::Router::new()
        .route(
            "/services/oauth2/token",
            axum::routing::post(move || {
                let instance = instance.clone();
                async move {
                    axum::Json(json!({
                        "access_token": "00Dxx!session",
                        "instance_url": instance,
                        "token_type": "Bearer",
                        "id": "https://login.salesforce.com/id/00D/005",
                    }))
                }
            }),
        )
        .fallback(move || {
            let h = h2.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({
                    "totalSize": 4000,
                    "done": false,
                    "nextRecordsUrl": "/services/data/v61.0/query/01gxx-2000",
                    "records": [{"attributes": {"type": "Contact"}, "Id": "003xx1"}],
                }))
            }
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let clock: SharedClock = ManualClock::auto(t0());
    let sf = SalesforceConnector::connect(
        SalesforceSettings::new(SfAuth::ClientCredentials {
            login_url: url.clone(),
            client_id: "cid".into(),
            client_secret: ferry::connectors::salesforce::auth::Secret::new("cs"),
        }),
        HttpClient::new(clock),
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        sf.query_all("SELECT Id FROM Contact"),
    )
    .await
    .expect("no endless paging")
    .unwrap_err()
    .to_string();
    assert!(err.contains("nextRecordsUrl repeats"), "{err}");
    // The first page and the one it points to; the third would repeat it.
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}
