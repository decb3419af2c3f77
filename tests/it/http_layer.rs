//! The HTTP layer against a tiny local server, on a virtual clock: the circuit breaker,
//! the concurrency limit, daily-limit 429s and Retry-After.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::http::{
    BreakerPolicy, HttpClient, HttpError, Method, RateLimits, Request, RetryPolicy, Service,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// One scripted answer: status and headers.
type Answer = (u16, Vec<(&'static str, String)>);

/// A server that answers from a script (then `fallback`) and logs each arrival's clock time.
struct Scripted {
    script: Mutex<VecDeque<Answer>>,
    fallback: Mutex<Answer>,
    arrivals: Mutex<Vec<(DateTime<Utc>, String)>>,
    clock: SharedClock,
}

impl Scripted {
    fn hits(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }
    fn arrivals(&self) -> Vec<(DateTime<Utc>, String)> {
        self.arrivals.lock().unwrap().clone()
    }
    fn set_fallback(&self, a: Answer) {
        *self.fallback.lock().unwrap() = a;
    }
}

async fn serve_scripted(
    clock: SharedClock,
    script: Vec<Answer>,
    fallback: Answer,
) -> (String, Arc<Scripted>) {
    let state = Arc::new(Scripted {
        script: Mutex::new(script.into()),
        fallback: Mutex::new(fallback),
        arrivals: Mutex::default(),
        clock,
    });
    let s2 = state.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let s = s2.clone();
        async move {
            s.arrivals
                .lock()
                .unwrap()
                .push((s.clock.now(), uri.path().to_string()));
            let next = s.script.lock().unwrap().pop_front();
            let (status, headers) = next.unwrap_or_else(|| s.fallback.lock().unwrap().clone());
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(k, HeaderValue::from_str(&v).unwrap());
            }
            (StatusCode::from_u16(status).unwrap(), h, "{}").into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, state)
}

fn get(url: &str, category: &str) -> Request {
    Request::new(Service::Zoom, Method::GET, url).category(category)
}

#[tokio::test]
async fn circuit_opens_after_repeated_failures_and_half_opens_later() {
    let clock = ManualClock::auto(t0());
    let (url, server) = serve_scripted(clock.clone(), vec![], (503, vec![])).await;
    let http = HttpClient::new(clock.clone())
        .with_retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .with_breaker(BreakerPolicy {
            failures: 3,
            cool_down: Duration::from_secs(30),
        });
    for _ in 0..3 {
        let r = http.send(get(&url, "light")).await.unwrap();
        assert_eq!(r.status, 503);
    }
    // Open: refused without reaching the server.
    match http.send(get(&url, "light")).await {
        Err(HttpError::CircuitOpen { seconds, .. }) => assert!(seconds <= 30 && seconds > 0),
        other => panic!("expected an open circuit, got {other:?}"),
    }
    assert_eq!(server.hits(), 3);
    // Still open just before the cool-down ends.
    clock.advance(Duration::from_secs(29));
    assert!(matches!(
        http.send(get(&url, "light")).await,
        Err(HttpError::CircuitOpen { .. })
    ));
    assert_eq!(server.hits(), 3);
    // Half-open: one probe goes through; it fails, so the circuit reopens at once.
    clock.advance(Duration::from_secs(2));
    assert_eq!(http.send(get(&url, "light")).await.unwrap().status, 503);
    assert_eq!(server.hits(), 4);
    assert!(matches!(
        http.send(get(&url, "light")).await,
        Err(HttpError::CircuitOpen { .. })
    ));
    assert_eq!(server.hits(), 4);
    // The next probe succeeds and closes it: failures must build up again to reopen.
    server.set_fallback((200, vec![]));
    clock.advance(Duration::from_secs(31));
    assert_eq!(http.send(get(&url, "light")).await.unwrap().status, 200);
    server.set_fallback((503, vec![]));
    for _ in 0..2 {
        assert_eq!(http.send(get(&url, "light")).await.unwrap().status, 503);
    }
    assert_eq!(http.send(get(&url, "light")).await.unwrap().status, 503);
    assert_eq!(server.hits(), 8);
    assert!(matches!(
        http.send(get(&url, "light")).await,
        Err(HttpError::CircuitOpen { .. })
    ));
}

#[tokio::test]
async fn half_open_lets_only_one_probe_through() {
    let clock = ManualClock::new(t0());
    let (url, server) = serve_scripted(clock.clone(), vec![], (503, vec![])).await;
    let http = HttpClient::new(clock.clone())
        .with_retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .with_breaker(BreakerPolicy {
            failures: 1,
            cool_down: Duration::from_secs(10),
        });
    assert_eq!(http.send(get(&url, "x")).await.unwrap().status, 503);
    clock.advance(Duration::from_secs(11));
    let first = http.send(get(&url, "x")).await;
    assert_eq!(first.unwrap().status, 503, "the first probe went through");
    clock.advance(Duration::from_secs(11));
    let (a, b) = tokio::join!(http.send(get(&url, "x")), http.send(get(&url, "x")));
    let through = [&a, &b].iter().filter(|r| r.is_ok()).count();
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(HttpError::CircuitOpen { .. })))
        .count();
    assert_eq!((through, refused), (1, 1), "{a:?} {b:?}");
    assert_eq!(server.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (f, m, g) = (in_flight.clone(), max_seen.clone(), gate.clone());
    let app = axum::Router::new().fallback(move || {
        let (f, m, g, tx) = (f.clone(), m.clone(), g.clone(), arrived_tx.clone());
        async move {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let _ = tx.send(());
            // Held until the test lets one request finish.
            g.acquire().await.unwrap().forget();
            f.fetch_sub(1, Ordering::SeqCst);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let clock = ManualClock::auto(t0());
    let http = HttpClient::new(clock);
    http.set_rate_limits(
        Service::Zoom,
        RateLimits {
            max_concurrency: 3,
            ..RateLimits::default()
        },
    );
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (h, u) = (http.clone(), url.clone());
            tokio::spawn(async move { h.send(get(&u, "medium")).await })
        })
        .collect();
    for i in 0..10 {
        arrived.recv().await.unwrap();
        if i >= 2 {
            // Three are held in the server; give a fourth every chance to sneak in.
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            assert!(in_flight.load(Ordering::SeqCst) <= 3);
            gate.add_permits(1);
        }
    }
    gate.add_permits(3);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status, 200);
    }
    assert_eq!(max_seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn daily_limit_429_blocks_the_category_until_retry_after() {
    let clock = ManualClock::auto(t0());
    let reset = DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let daily: Answer = (
        429,
        vec![
            ("x-ratelimit-category", "Heavy".into()),
            ("x-ratelimit-type", "Daily-limit".into()),
            ("x-ratelimit-limit", "30000".into()),
            ("x-ratelimit-remaining", "0".into()),
            (
                "retry-after",
                reset.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ],
    );
    let (url, server) = serve_scripted(clock.clone(), vec![daily], (200, vec![])).await;
    let http = HttpClient::new(clock.clone());
    let expect_blocked = |r: Result<ferry::http::Response, HttpError>| match r {
        Err(HttpError::DailyLimit { category, until }) => {
            assert_eq!(category, "heavy");
            assert_eq!(until, "2026-03-02T00:00:00Z");
        }
        other => panic!("expected the daily limit, got {other:?}"),
    };
    expect_blocked(http.send(get(&url, "heavy")).await);
    assert_eq!(server.hits(), 1, "a daily limit is not retried");
    // Later calls of the category fail at once, without a request.
    expect_blocked(http.send(get(&url, "heavy")).await);
    clock.advance(Duration::from_secs(3600));
    expect_blocked(http.send(get(&url, "heavy")).await);
    assert_eq!(server.hits(), 1);
    // Other categories are not blocked.
    assert_eq!(http.send(get(&url, "light")).await.unwrap().status, 200);
    assert_eq!(server.hits(), 2);
    // At the instant of Retry-After the category opens again.
    clock.set(reset);
    assert_eq!(http.send(get(&url, "heavy")).await.unwrap().status, 200);
    assert_eq!(server.hits(), 3);
    let stats = http.metrics().total(Service::Zoom);
    assert_eq!((stats.requests, stats.responses_429), (3, 1));
}

#[tokio::test]
async fn retry_after_in_seconds_and_as_http_date_is_honoured() {
    let clock = ManualClock::auto(t0());
    let start = clock.now();
    let http_date = (start + Span::seconds(7 + 90))
        .to_rfc2822()
        .replace("+0000", "GMT");
    let script = vec![
        (429, vec![("retry-after", "7".to_string())]),
        (503, vec![("retry-after", http_date)]),
    ];
    let (url, server) = serve_scripted(clock.clone(), script, (200, vec![])).await;
    let http = HttpClient::new(clock.clone());
    let r = http.send(get(&url, "light")).await.unwrap();
    assert_eq!(r.status, 200);
    let at: Vec<DateTime<Utc>> = server.arrivals().into_iter().map(|(t, _)| t).collect();
    assert_eq!(at.len(), 3);
    assert_eq!(at[0], start);
    assert_eq!(
        at[1],
        start + Span::seconds(7),
        "waited exactly the 7 seconds"
    );
    assert_eq!(
        at[2],
        start + Span::seconds(97),
        "waited until the HTTP date"
    );
    assert_eq!(http.metrics().total(Service::Zoom).wait_ms, 97_000);
    assert_eq!(clock.now(), start + Span::seconds(97));
}
