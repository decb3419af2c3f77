//! Reading Zoom through the connector against the simulator.

use chrono::{DateTime, Duration, Utc};
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::connectors::zoom::{
    MemoryTokenStore, Page, ReadWindow, Secret, TokenStore, ZoomAuth, ZoomConnector, ZoomPlan,
    ZoomSettings,
};
use ferry::http::HttpClient;
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{Faults, SimOptions, ZoomSim, ZoomSimHandle};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn world(seed: u64) -> Arc<World> {
    Arc::new(World::generate(seed, Scale::default()))
}

async fn setup(
    world: Arc<World>,
    faults: Faults,
    plan: ZoomPlan,
    headroom: f64,
) -> (ZoomSimHandle, ZoomConnector, Arc<ManualClock>) {
    let clock = ManualClock::auto(world.scale.end);
    let shared: SharedClock = clock.clone();
    let sim = ZoomSim::start(SimOptions {
        world: world.clone(),
        clock: shared.clone(),
        plan,
        faults,
    })
    .await
    .expect("sim starts");
    let conn = ZoomConnector::new(
        ZoomSettings {
            base_url: sim.base_url.clone(),
            token_url: sim.token_url.clone(),
            auth: ZoomAuth::ServerToServer {
                account_id: sim.account_id.clone(),
                client_id: sim.client_id.clone(),
                client_secret: Secret::new(sim.client_secret.clone()),
            },
            plan,
            headroom,
            webhook_secret: None,
        },
        HttpClient::new(shared),
        Arc::new(MemoryTokenStore::default()),
    );
    (sim, conn, clock)
}

fn all_users() -> BTreeMap<String, Value> {
    BTreeMap::from([("user_id".to_string(), Value::String("all".into()))])
}

async fn collect(
    conn: &ZoomConnector,
    stream: &str,
    params: &BTreeMap<String, Value>,
    window: ReadWindow,
) -> Vec<Page> {
    let mut s = Box::pin(conn.read(stream, params, window));
    let mut pages = Vec::new();
    while let Some(p) = s.next().await {
        pages.push(p.expect("page"));
    }
    pages
}

fn expected_uuids(w: &World, since: DateTime<Utc>, until: DateTime<Utc>) -> BTreeSet<String> {
    w.meetings
        .iter()
        .filter(|m| m.in_reports() && m.start >= since && m.start <= until && m.end <= until)
        .map(|m| m.uuid.clone())
        .collect()
}

#[tokio::test]
async fn past_meetings_returns_every_meeting_once_despite_faults() {
    let w = world(11);
    let faults = Faults {
        seed: 5,
        error_5xx: 0.08,
        reset: 0.05,
        malformed: 0.03,
        storm_429: 0.05,
        ..Faults::default()
    };
    let (sim, conn, clock) = setup(w.clone(), faults, ZoomPlan::Pro, 0.8).await;
    let until = clock.now();
    let since = until - Duration::days(w.scale.days + 1);
    let pages = collect(
        &conn,
        "past_meetings",
        &all_users(),
        ReadWindow::fixed(since, until),
    )
    .await;
    let mut seen = Vec::new();
    for p in &pages {
        // Records of a page are in cursor order (the meeting's end).
        let starts: Vec<&str> = p
            .records
            .iter()
            .map(|r| r["end_time"].as_str().unwrap())
            .collect();
        let mut sorted = starts.clone();
        sorted.sort();
        assert_eq!(starts, sorted);
        seen.extend(
            p.records
                .iter()
                .map(|r| r["uuid"].as_str().unwrap().to_string()),
        );
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no meeting twice");
    assert_eq!(unique, expected_uuids(&w, since, until));
    assert!(
        unique.iter().any(|u| u.starts_with('/')),
        "slash UUIDs included"
    );
    assert!(unique.iter().any(|u| u.contains("//")));
    // Every user partition ends.
    let done: BTreeSet<&str> = pages
        .iter()
        .filter(|p| p.partition_done)
        .map(|p| p.partition.as_str())
        .collect();
    assert_eq!(done.len(), w.users.len());
    let stats = sim.stats();
    assert!(
        stats.responses_5xx > 0 && stats.resets > 0 && stats.responses_429 > 0,
        "{stats:?}"
    );

    // Child reads on slash UUIDs work (double encoding) and absent summaries are None.
    let slashy = w
        .meetings
        .iter()
        .find(|m| m.uuid.starts_with('/') && m.in_reports())
        .unwrap();
    let params = BTreeMap::from([(
        "meeting_uuid".to_string(),
        Value::String(slashy.uuid.clone()),
    )]);
    let parts = conn
        .fetch_all("past_meeting_participants", &params)
        .await
        .expect("participants");
    assert_eq!(parts.len(), slashy.participants.len());
    let one = conn
        .fetch_one(
            "past_meeting",
            &BTreeMap::from([("uuid".to_string(), Value::String(slashy.uuid.clone()))]),
        )
        .await
        .expect("fetch");
    assert_eq!(one.unwrap()["uuid"], slashy.uuid.as_str());
    let no_summary = w.meetings.iter().find(|m| m.summary.is_none()).unwrap();
    let p = BTreeMap::from([(
        "meeting_uuid".to_string(),
        Value::String(no_summary.uuid.clone()),
    )]);
    assert_eq!(
        conn.fetch_one("meeting_summary", &p).await.expect("fetch"),
        None
    );
}

#[tokio::test]
async fn sustained_read_stays_under_the_plan_and_honours_retry_after() {
    // A big world so the read lasts many seconds of sim time.
    let w = Arc::new(World::generate(
        3,
        Scale {
            users: 40,
            meetings: 400,
            days: 150,
            ..Scale::default()
        },
    ));
    let faults = Faults {
        seed: 9,
        storm_429: 0.03,
        ..Faults::default()
    };
    let (sim, conn, clock) = setup(w.clone(), faults, ZoomPlan::Pro, 0.8).await;
    let until = clock.now();
    let since = until - Duration::days(150);
    let pages = collect(
        &conn,
        "past_meetings",
        &all_users(),
        ReadWindow::fixed(since, until),
    )
    .await;
    assert!(!pages.is_empty());
    let log = sim.requests();
    let heavy: Vec<_> = log
        .iter()
        .filter(|r| r.category.as_deref() == Some("heavy"))
        .collect();
    assert!(heavy.len() > 100, "{} heavy requests", heavy.len());
    let first = heavy.first().unwrap().at;
    let last = heavy.last().unwrap().at;
    let secs = (last - first).num_milliseconds() as f64 / 1000.0;
    let achieved = heavy.len() as f64 / secs.max(1.0);
    let share = achieved / 10.0; // Pro heavy: 10 per second
    assert!(share > 0.6, "achieved {achieved:.2}/s");
    assert!(share <= 1.0, "achieved {achieved:.2}/s");
    let r429: Vec<_> = heavy.iter().filter(|r| r.status == 429).collect();
    // Only the injected storm, no 429s from our own pacing.
    assert!(
        (r429.len() as f64) < heavy.len() as f64 * 0.08,
        "{} 429s",
        r429.len()
    );
    for (i, r) in heavy.iter().enumerate() {
        if r.status == 429 {
            let next = heavy.get(i + 1).expect("a retry follows");
            assert!(next.at >= r.retry_at.unwrap(), "retried before Retry-After");
        }
    }
}

#[tokio::test]
async fn incremental_read_asks_only_for_the_lookback_window() {
    let w = world(21);
    let (sim, conn, clock) = setup(w.clone(), Faults::default(), ZoomPlan::Pro, 0.8).await;
    let until = clock.now() - Duration::days(10);
    let since = until - Duration::days(40);
    let user = w.users[0].id.clone();
    let params = BTreeMap::from([("user_id".to_string(), Value::String(user.clone()))]);
    let first = collect(
        &conn,
        "past_meetings",
        &params,
        ReadWindow::fixed(since, until),
    )
    .await;
    let checkpoint: DateTime<Utc> = first
        .iter()
        .filter_map(|p| p.cursor.as_deref())
        .map(|c| DateTime::parse_from_rfc3339(c).unwrap().with_timezone(&Utc))
        .max()
        .expect("a checkpoint");
    sim.clear_log();
    let now = clock.now();
    let window = ReadWindow::checkpoints(
        BTreeMap::from([(user.clone(), checkpoint)]),
        since,
        Duration::hours(2),
        now,
    );
    let second = collect(&conn, "past_meetings", &params, window).await;
    let reports: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.endpoint.contains("/report/users/"))
        .collect();
    // Lookback, plus the 30 h lead for meetings that started before the checkpoint.
    let expected_from = (checkpoint - Duration::hours(2) - Duration::hours(30))
        .date_naive()
        .to_string();
    assert!(!reports.is_empty());
    assert_eq!(reports[0].query.get("from"), Some(&expected_from));
    assert!(reports.iter().all(|r| r.query["from"] >= expected_from));
    // Nothing before checkpoint - lookback comes back.
    for p in &second {
        for r in &p.records {
            let at = DateTime::parse_from_rfc3339(r["end_time"].as_str().unwrap()).unwrap();
            assert!(at >= checkpoint - Duration::hours(2));
        }
    }
}

#[tokio::test]
async fn expired_token_is_renewed_once() {
    let w = world(4);
    let (sim, conn, _clock) = setup(w.clone(), Faults::default(), ZoomPlan::Pro, 0.8).await;
    let users = conn
        .fetch_all("users", &BTreeMap::new())
        .await
        .expect("users");
    assert_eq!(users.len(), w.users.len());
    assert_eq!(sim.stats().tokens_issued, 1);
    // Expiry by the clock: an hour later the cached token is renewed before use.
    sim.expire_tokens();
    let again = conn
        .fetch_all("users", &BTreeMap::new())
        .await
        .expect("users after 401");
    assert_eq!(again.len(), users.len());
    assert_eq!(sim.stats().tokens_issued, 2);
    let unauthorized = sim.requests().iter().filter(|r| r.status == 401).count();
    assert_eq!(unauthorized, 1);
}

#[tokio::test]
async fn token_is_renewed_before_expiry_on_the_clock() {
    let w = world(4);
    let (sim, conn, clock) = setup(w, Faults::default(), ZoomPlan::Pro, 0.8).await;
    conn.fetch_all("users", &BTreeMap::new())
        .await
        .expect("users");
    clock.advance(std::time::Duration::from_secs(3590));
    conn.fetch_all("users", &BTreeMap::new())
        .await
        .expect("users");
    assert_eq!(sim.stats().tokens_issued, 2);
    assert!(sim.requests().iter().all(|r| r.status != 401));
}

/// A store that records whether each rotated token was stored before the API saw its
/// access token.
struct WatchingStore {
    inner: MemoryTokenStore,
    sim_requests_at_put: std::sync::Mutex<Vec<usize>>,
    sim: std::sync::Mutex<Option<Arc<dyn Fn() -> usize + Send + Sync>>>,
}

#[async_trait::async_trait]
impl TokenStore for WatchingStore {
    async fn get(
        &self,
        name: &str,
    ) -> Result<Option<Secret>, ferry::connectors::zoom::TokenStoreError> {
        self.inner.get(name).await
    }
    async fn put(
        &self,
        name: &str,
        value: &Secret,
    ) -> Result<(), ferry::connectors::zoom::TokenStoreError> {
        if let Some(f) = self.sim.lock().unwrap().as_ref() {
            self.sim_requests_at_put.lock().unwrap().push(f());
        }
        self.inner.put(name, value).await
    }
}

#[tokio::test]
async fn rotated_refresh_token_is_stored_before_use() {
    let w = world(4);
    let clock = ManualClock::auto(w.scale.end);
    let shared: SharedClock = clock.clone();
    let sim = Arc::new(
        ZoomSim::start(SimOptions {
            world: w.clone(),
            clock: shared.clone(),
            plan: ZoomPlan::Pro,
            faults: Faults::default(),
        })
        .await
        .unwrap(),
    );
    let initial = sim.issue_refresh_token();
    let store = Arc::new(WatchingStore {
        inner: MemoryTokenStore::default(),
        sim_requests_at_put: Default::default(),
        sim: Default::default(),
    });
    let s2 = sim.clone();
    *store.sim.lock().unwrap() = Some(Arc::new(move || {
        s2.requests()
            .iter()
            .filter(|r| r.endpoint.starts_with("GET"))
            .count()
    }));
    let conn = ZoomConnector::new(
        ZoomSettings {
            base_url: sim.base_url.clone(),
            token_url: sim.token_url.clone(),
            auth: ZoomAuth::OAuth {
                client_id: sim.client_id.clone(),
                client_secret: Secret::new(sim.client_secret.clone()),
                refresh_token: Some(Secret::new(initial.clone())),
            },
            plan: ZoomPlan::Pro,
            headroom: 0.8,
            webhook_secret: None,
        },
        HttpClient::new(shared),
        store.clone(),
    );
    conn.fetch_all("users", &BTreeMap::new())
        .await
        .expect("first");
    sim.expire_tokens();
    conn.fetch_all("users", &BTreeMap::new())
        .await
        .expect("second");
    let puts = store.inner.puts();
    assert_eq!(puts.len(), 2, "each refresh stored its rotated token");
    assert_ne!(puts[0].1.expose(), initial);
    assert_ne!(puts[0].1, puts[1].1);
    // Stored before any API call used the new access token.
    assert_eq!(*store.sim_requests_at_put.lock().unwrap(), vec![0, 2]);
    // The spent refresh token is refused by the sim (single use).
    let refused = reqwest::Client::new()
        .post(&sim.token_url)
        .basic_auth(&sim.client_id, Some(&sim.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", initial.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let _ = clock;
}

#[tokio::test]
async fn request_stream_reaches_any_path_with_a_selector() {
    let w = world(4);
    let (_sim, conn, _clock) = setup(w.clone(), Faults::default(), ZoomPlan::Pro, 0.8).await;
    let params = BTreeMap::from([
        ("path".to_string(), Value::String("/users".into())),
        (
            "record_selector".to_string(),
            Value::String("$.users[*].email".into()),
        ),
    ]);
    let emails = conn.fetch_all("request", &params).await.expect("request");
    assert_eq!(emails.len(), w.users.len());
    assert!(
        emails
            .iter()
            .all(|e| e.as_str().unwrap().ends_with("@acme.com"))
    );
}

#[tokio::test]
async fn windows_fit_a_calendar_month_across_february() {
    // A world in early spring, read from the start of the year: a 30-day window starting
    // on 31 January would reach 1 March, which Zoom refuses.
    let scale = Scale {
        end: DateTime::parse_from_rfc3339("2026-03-20T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc),
        days: 80,
        ..Scale::default()
    };
    let world = Arc::new(World::generate(11, scale));
    let (sim, conn, clock) = setup(world.clone(), Faults::default(), ZoomPlan::Pro, 0.8).await;
    let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let pages: Vec<Page> = conn
        .read(
            "past_meetings",
            &all_users(),
            ReadWindow::fixed(since, clock.now()),
        )
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every window is accepted");
    let n: usize = pages.iter().map(|p| p.records.len()).sum();
    assert!(n > 0);
    let refused: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.status == 400)
        .map(|r| r.query)
        .collect();
    assert!(refused.is_empty(), "windows refused: {refused:?}");
}
