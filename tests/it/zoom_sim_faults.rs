//! The simulator's fault switches (reference checklist §11) and how the connector copes.

use crate::support::zoom as zoom_support;

use chrono::Duration;
use ferry::clock::Clock;
use ferry::connectors::zoom::{ReadWindow, ZoomError, optional};
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{CLIENT_ID, CLIENT_SECRET, Faults};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use zoom_support::{collect, params, rig, rig_at};

fn small(seed: u64) -> Arc<World> {
    Arc::new(World::generate(seed, Scale::small()))
}

async fn token_call(token_url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_missing_scope_answers_4711_until_granted() {
    let w = small(1);
    let r = rig(
        w.clone(),
        Faults {
            removed_scopes: vec!["report:read:admin".into()],
            ..Faults::default()
        },
    )
    .await;
    let now = r.clock.now();
    let host = w.users[0].id.clone();
    let mut read = Box::pin(r.conn.read(
        "past_meetings",
        &params(&[("user_id", &host)]),
        ReadWindow::fixed(now - Duration::days(20), now),
    ));
    let err = read.next().await.unwrap().unwrap_err();
    assert!(err.is_missing_scope(), "{err}");
    assert!(err.to_string().contains("report:read:admin"), "{err}");
    // Other scopes still work, and the failure was not retried.
    let users = r.conn.fetch_all("users", &BTreeMap::new()).await.unwrap();
    assert_eq!(users.len(), w.users.len());
    let reports = r
        .sim
        .requests()
        .iter()
        .filter(|q| q.endpoint.contains("/report/"))
        .count();
    assert_eq!(reports, 1);
    // The admin adds the scope.
    r.sim.set_faults(Faults::default());
    let pages = collect(
        &r.conn,
        "past_meetings",
        &params(&[("user_id", &host)]),
        ReadWindow::fixed(now - Duration::days(20), now),
    )
    .await;
    assert!(pages.last().unwrap().partition_done);
}

#[tokio::test]
async fn revoke_and_refresh_token_grace() {
    let w = small(2);
    let r = rig(
        w,
        Faults {
            refresh_grace_secs: 60,
            ..Faults::default()
        },
    )
    .await;
    let url = r.sim.token_url.replace("/token", "/revoke");
    // Grace: the spent token still works for a minute after rotation, then never.
    let rt1 = r.sim.issue_refresh_token();
    let (s, b) = token_call(
        &r.sim.token_url,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
    )
    .await;
    assert_eq!(s, 200);
    let rt2 = b["refresh_token"].as_str().unwrap().to_string();
    r.clock.advance(std::time::Duration::from_secs(59));
    let (s, _) = token_call(
        &r.sim.token_url,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
    )
    .await;
    assert_eq!(s, 200, "inside the grace period");
    r.clock.advance(std::time::Duration::from_secs(2));
    let (s, b) = token_call(
        &r.sim.token_url,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    // Revoke: a revoked refresh token is refused at once.
    let (s, b) = token_call(&url, &[("token", &rt2)]).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("success")));
    let (s, b) = token_call(
        &r.sim.token_url,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt2)],
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = token_call(&url, &[("token", &rt2)]).await;
    assert_eq!(s, 400, "revoking twice");
    // A revoked access token gets 401 code 124 on the API.
    let (_, b) = token_call(
        &r.sim.token_url,
        &[
            ("grant_type", "account_credentials"),
            ("account_id", &r.sim.account_id),
        ],
    )
    .await;
    let access = b["access_token"].as_str().unwrap().to_string();
    let users_url = format!("{}/users", r.sim.base_url);
    let ok = reqwest::Client::new()
        .get(&users_url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(token_call(&url, &[("token", &access)]).await.0, 200);
    let refused = reqwest::Client::new()
        .get(&users_url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], 124);
}

#[tokio::test]
async fn expired_page_tokens_restart_the_listing_once() {
    let w = Arc::new(World::generate(
        3,
        Scale {
            users: 650,
            meetings: 5,
            calls: 0,
            webinars: 0,
            ..Scale::small()
        },
    ));
    let r = rig(w.clone(), Faults::default()).await;
    let now = r.clock.now();
    r.sim.expire_next_page_tokens(1);
    let pages = collect(
        &r.conn,
        "users",
        &BTreeMap::new(),
        ReadWindow::fixed(now, now),
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.records.len()).collect();
    assert_eq!(
        sizes,
        vec![300, 300, 50],
        "no empty or repeated page after the restart"
    );
    let ids: BTreeSet<&str> = pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 650);
    let log = r.sim.requests();
    let users: Vec<_> = log.iter().filter(|q| q.endpoint == "GET /users").collect();
    assert_eq!(users.iter().filter(|q| q.status == 400).count(), 1);
    assert_eq!(
        users.len(),
        5,
        "page 1, expired page 2, page 1 again, pages 2 and 3"
    );
    // Two expiries in one listing: the second is an error, not an endless loop.
    r.sim.expire_next_page_tokens(2);
    let err = r
        .conn
        .fetch_all("users", &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ZoomError::Api {
                code: Some(300),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn faults_can_be_scoped_to_one_endpoint() {
    let w = small(4);
    let r = rig(
        w.clone(),
        Faults {
            error_5xx: 1.0,
            only_endpoints: vec!["GET /past_meetings/{meetingId}/participants".into()],
            ..Faults::default()
        },
    )
    .await;
    let users = r.conn.fetch_all("users", &BTreeMap::new()).await.unwrap();
    assert_eq!(users.len(), w.users.len());
    let m = w.meetings.iter().find(|m| m.in_reports()).unwrap();
    let one = r
        .conn
        .fetch_one("past_meeting", &params(&[("uuid", &m.uuid)]))
        .await
        .unwrap();
    assert!(one.is_some());
    let err = r
        .conn
        .fetch_all(
            "past_meeting_participants",
            &params(&[("meeting_uuid", &m.uuid)]),
        )
        .await;
    assert!(err.is_err());
    let log = r.sim.requests();
    let failed: BTreeSet<&str> = log
        .iter()
        .filter(|q| q.status >= 500)
        .map(|q| q.endpoint.as_str())
        .collect();
    assert_eq!(
        failed,
        BTreeSet::from(["GET /past_meetings/{meetingId}/participants"])
    );
}

#[tokio::test]
async fn deleted_meetings_and_late_summaries_are_not_found() {
    let w = small(5);
    let m = w
        .meetings
        .iter()
        .filter(|m| m.in_reports() && m.summary.is_some())
        .max_by_key(|m| m.end)
        .unwrap()
        .clone();
    let created = m.summary.as_ref().unwrap().created;
    let r = rig_at(
        w.clone(),
        Faults {
            summary_delay_secs: 3600,
            ..Faults::default()
        },
        created + Duration::minutes(10),
    )
    .await;
    let by_uuid = params(&[("meeting_uuid", &m.uuid)]);
    // The summary is not ready yet: not found (optional → None), then there.
    assert_eq!(
        r.conn.fetch_one("meeting_summary", &by_uuid).await.unwrap(),
        None
    );
    let not_ready = r.sim.requests().last().unwrap().status;
    assert_eq!(not_ready, 404);
    r.clock.advance(std::time::Duration::from_secs(3600));
    let summary = r
        .conn
        .fetch_one("meeting_summary", &by_uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary["meeting_uuid"], m.uuid.as_str());

    // Listed, then deleted before the detail reads.
    let now = r.clock.now();
    let host = w.users[m.host].id.clone();
    let listed = collect(
        &r.conn,
        "past_meetings",
        &params(&[("user_id", &host)]),
        ReadWindow::fixed(now - Duration::days(10), now),
    )
    .await;
    assert!(
        listed
            .iter()
            .flat_map(|p| &p.records)
            .any(|x| x["uuid"] == m.uuid.as_str())
    );
    r.sim.delete_meeting(&m.uuid);
    let gone = r
        .conn
        .fetch_one("past_meeting", &params(&[("uuid", &m.uuid)]))
        .await
        .unwrap();
    assert_eq!(gone, None);
    let parts = r
        .conn
        .fetch_all("past_meeting_participants", &by_uuid)
        .await;
    assert!(
        matches!(
            &parts,
            Err(ZoomError::NotFound {
                code: Some(3001),
                ..
            })
        ),
        "{parts:?}"
    );
    assert_eq!(optional(parts).unwrap(), None);
    let last = r.sim.requests().last().unwrap().clone();
    assert_eq!(last.status, 404);
}

/// (arrival time on the sim clock, x-zm-request-id, event name).
type Arrival = (chrono::DateTime<chrono::Utc>, String, String);

/// A webhook receiver answering from a script: Some(status), or None to never answer.
struct Receiver {
    url: String,
    script: Arc<Mutex<VecDeque<Option<u16>>>>,
    seen: Arc<Mutex<Vec<Arrival>>>,
}

async fn receiver(clock: ferry::clock::SharedClock, script: Vec<Option<u16>>) -> Receiver {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let (s2, seen2) = (script.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (script, seen, clock) = (s2.clone(), seen2.clone(), clock.clone());
                async move {
                    let id = headers["x-zm-request-id"].to_str().unwrap().to_string();
                    let event: Value = serde_json::from_slice(&body).unwrap();
                    seen.lock().unwrap().push((
                        clock.now(),
                        id,
                        event["event"].as_str().unwrap().to_string(),
                    ));
                    let next = script.lock().unwrap().pop_front().unwrap_or(Some(200));
                    match next {
                        Some(code) => axum::http::StatusCode::from_u16(code).unwrap(),
                        None => futures::future::pending().await,
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, script, seen }
}

fn event(name: &str) -> Value {
    json!({"event": name, "event_ts": 1, "payload": {"account_id": "A", "object": {"uuid": name}}})
}

#[tokio::test]
async fn webhooks_arrive_twice_or_out_of_order_when_switched_on() {
    let r = rig(small(6), Faults::default()).await;
    let rx = receiver(r.clock.clone(), vec![]).await;
    let events = [event("a"), event("b"), event("c")];
    r.sim.set_faults(Faults {
        webhook_duplicate: true,
        ..Faults::default()
    });
    let log = r.sim.deliver_webhooks(&rx.url, "s", &events).await;
    assert_eq!(log.len(), 6);
    let seen = rx.seen.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(names, ["a", "a", "b", "b", "c", "c"]);
    assert_eq!(
        seen[0].1, seen[1].1,
        "a duplicate carries the same request id"
    );
    assert_ne!(seen[1].1, seen[2].1);
    rx.seen.lock().unwrap().clear();
    r.sim.set_faults(Faults {
        webhook_reorder: true,
        ..Faults::default()
    });
    r.sim.deliver_webhooks(&rx.url, "s", &events).await;
    let names: Vec<String> = rx
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.2.clone())
        .collect();
    assert_eq!(names, ["b", "a", "c"]);
    assert!(rx.script.lock().unwrap().is_empty());
}

#[tokio::test]
async fn webhook_retries_follow_zooms_schedule_on_the_sim_clock() {
    let r = rig(
        small(7),
        Faults {
            webhook_timeout_ms: 150,
            ..Faults::default()
        },
    )
    .await;
    // "a": three 5xx then dropped after the fourth; "b": 404, never retried;
    // "c": a timeout, then accepted.
    let rx = receiver(
        r.clock.clone(),
        vec![
            Some(500),
            Some(503),
            Some(502),
            Some(500),
            Some(404),
            None,
            Some(200),
        ],
    )
    .await;
    let t0 = r.clock.now();
    let log = r
        .sim
        .deliver_webhooks(&rx.url, "s", &[event("a"), event("b"), event("c")])
        .await;
    let a: Vec<_> = log.iter().filter(|x| x.event == "a").collect();
    let offsets: Vec<i64> = a.iter().map(|x| (x.at - t0).num_minutes()).collect();
    assert_eq!(offsets, [0, 5, 25, 85]);
    assert_eq!(
        a.iter().map(|x| x.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(a.iter().all(|x| x.request_id == a[0].request_id));
    let b: Vec<_> = log.iter().filter(|x| x.event == "b").collect();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].outcome, Ok(404));
    let c: Vec<_> = log.iter().filter(|x| x.event == "c").collect();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].outcome, Err("timed out".to_string()));
    assert_eq!(c[1].outcome, Ok(200));
    assert_eq!((c[1].at - c[0].at).num_minutes(), 5);
    // The receiver saw exactly those attempts.
    assert_eq!(rx.seen.lock().unwrap().len(), 7);

    // Nobody listening: refused connections are retried too, then dropped.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let log = r.sim.deliver_webhooks(&closed, "s", &[event("d")]).await;
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|x| x.outcome.is_err()));
}
