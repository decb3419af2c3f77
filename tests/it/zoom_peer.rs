//! A peer Zoom connector's requests against the simulator: Airbyte `source-zoom` 1.1.22's
//! manifest replayed by hand (its query-string token grant with Basic auth and no body, its
//! paginator: `page_size=30`, then `next_page_token` until `""`, its 19 streams' paths with raw
//! ids), plus what the Singer and Meltano taps and the newer manifest add. Every request must
//! succeed or get the error Zoom would give, and the counts must agree with the world that
//! ferry reads. `bench/peer/run.sh` runs the real package the same way, by hand.

use chrono::{DateTime, Duration, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::connectors::zoom::{ZoomPlan, encode_path_value};
use ferry::sim::world::{Meeting, Scale, World};
use ferry::sim::zoom::{CLIENT_ID, CLIENT_SECRET, Faults, SimOptions, ZoomSim, ZoomSimHandle};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

struct Peer {
    sim: ZoomSimHandle,
    http: reqwest::Client,
    token: String,
}

async fn start(world: Arc<World>, plan: ZoomPlan, faults: Faults) -> Peer {
    let clock: SharedClock = ManualClock::auto(world.scale.end);
    let sim = ZoomSim::start(SimOptions {
        world,
        clock,
        plan,
        faults: Faults {
            // The replay sends as fast as loopback allows; limits are tested elsewhere.
            enforce_rate_limits: false,
            ..faults
        },
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    // Airbyte's ServerToServerOauthAuthenticator: grant in the query string, Basic auth,
    // a JSON content type and no body.
    let resp = http
        .post(format!(
            "{}?grant_type=account_credentials&account_id={}",
            sim.token_url, sim.account_id
        ))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header("Content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    Peer { sim, http, token }
}

impl Peer {
    /// One GET on `path` (below /v2, sent as given: Airbyte 1.1.22 does not encode ids).
    async fn get(&self, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = self
            .http
            .get(format!("{}{path}", self.sim.base_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.json().await.unwrap_or(Value::Null), headers)
    }

    /// Airbyte's paginator: `page_size=30`, then the returned `next_page_token` until it is "".
    /// Returns the records under `key`, or the first error answer.
    async fn pages(&self, path: &str, key: &str) -> Result<Vec<Value>, (u16, Value)> {
        let mut out = Vec::new();
        let mut token = String::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        for _ in 0..1000 {
            let url = if token.is_empty() {
                format!("{path}{sep}page_size=30")
            } else {
                format!("{path}{sep}next_page_token={token}&page_size=30")
            };
            let (status, body, _) = self.get(&url).await;
            if status != 200 {
                return Err((status, body));
            }
            let rows = body[key].as_array().unwrap();
            assert!(rows.len() <= 30, "{url}: {} rows", rows.len());
            assert_eq!(body["page_size"], 30, "{url}");
            out.extend(rows.iter().cloned());
            token = body["next_page_token"].as_str().unwrap().to_string();
            if token.is_empty() {
                assert_eq!(body["total_records"], out.len(), "{url}");
                return Ok(out);
            }
        }
        panic!("{path}: paging did not end");
    }
}

fn code(body: &Value) -> i64 {
    body["code"].as_i64().unwrap_or(-1)
}

/// The meeting IDs `/users/{id}/meetings` lists by default: by ID, the instances that started,
/// kept when the series is not instant and its ID has not expired (30 days after the last
/// start of a non-recurring meeting).
fn scheduled_ids(w: &World, now: DateTime<Utc>) -> BTreeMap<u64, Vec<&Meeting>> {
    let mut by_id: BTreeMap<u64, Vec<&Meeting>> = BTreeMap::new();
    for m in w.meetings.iter().filter(|m| m.start <= now) {
        by_id.entry(m.id).or_default().push(m);
    }
    by_id.retain(|_, ms| {
        ms.sort_by_key(|m| m.start);
        let recurring = ms.iter().any(|m| m.meeting_type == 8);
        let last = ms[ms.len() - 1];
        recurring || (ms[0].meeting_type == 2 && last.start + Duration::days(30) > now)
    });
    by_id
}

#[tokio::test]
async fn airbyte_source_zoom_streams_read_the_same_world() {
    let world = Arc::new(World::generate(7, Scale::default()));
    let now = world.scale.end;
    let p = start(world.clone(), ZoomPlan::Pro, Faults::default()).await;
    let w = &world;

    // users (also the connection check).
    let users = p.pages("/users", "users").await.unwrap();
    assert_eq!(users.len(), w.users.len());

    // meetings_list_tmp → meetings and their children.
    let expected = scheduled_ids(w, now);
    let all_ids: BTreeSet<u64> = w.meetings.iter().map(|m| m.id).collect();
    assert!(
        !expected.is_empty() && expected.len() < all_ids.len(),
        "the world should hold both listed and instant or expired meeting IDs"
    );
    let mut listed = Vec::new();
    for u in &users {
        let uid = u["id"].as_str().unwrap();
        let rows = p
            .pages(&format!("/users/{uid}/meetings"), "meetings")
            .await
            .unwrap();
        for r in &rows {
            assert_eq!(r["host_id"], uid);
            assert_ne!(r["type"], 1, "instant meetings are never listed");
        }
        listed.extend(rows);
    }
    let listed_ids: BTreeSet<u64> = listed.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(listed_ids.len(), listed.len(), "one row per meeting ID");
    assert_eq!(listed_ids, expected.keys().copied().collect());

    let (mut reports, mut report_rows) = (0, 0);
    for (id, instances) in &expected {
        let latest = instances[instances.len() - 1];
        let (s, body, _) = p.get(&format!("/meetings/{id}")).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["id"], *id);
        assert_eq!(body["uuid"], latest.uuid);
        // No meeting takes registration: Zoom's code 300, which Airbyte ignores.
        let err = p
            .pages(&format!("/meetings/{id}/registrants"), "registrants")
            .await
            .unwrap_err();
        assert_eq!((err.0, code(&err.1)), (400, 300), "{}", err.1);
        for child in ["polls", "registrants/questions"] {
            let (s, body, _) = p.get(&format!("/meetings/{id}/{child}")).await;
            assert_eq!(s, 200, "{child}: {body}");
        }
        let (s, body, _) = p.get(&format!("/past_meetings/{id}/polls")).await;
        assert_eq!(
            (s, body["questions"].as_array().map(Vec::len)),
            (200, Some(0))
        );
        // Reports of a numeric ID describe its latest instance, when it had two people.
        let (s, body, _) = p.get(&format!("/report/meetings/{id}")).await;
        let part = p
            .pages(
                &format!("/report/meetings/{id}/participants"),
                "participants",
            )
            .await;
        if latest.in_reports() {
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["participants_count"], latest.participants.len());
            assert_eq!(part.unwrap().len(), latest.participants.len());
            reports += 1;
            report_rows += latest.participants.len();
        } else {
            assert_eq!((s, code(&body)), (404, 3001));
            assert_eq!(part.unwrap_err().0, 404);
        }
    }
    assert!(reports > 0 && report_rows > reports);

    // webinars_list_tmp → webinars and their children.
    let mut webinars = Vec::new();
    for u in &users {
        let uid = u["id"].as_str().unwrap();
        webinars.extend(
            p.pages(&format!("/users/{uid}/webinars"), "webinars")
                .await
                .unwrap(),
        );
    }
    assert_eq!(webinars.len(), w.webinars.len());
    let mut raw_uuid_misses = 0;
    for x in &w.webinars {
        let id = x.id;
        let (s, body, _) = p.get(&format!("/webinars/{id}")).await;
        assert_eq!((s, body["uuid"].as_str()), (200, Some(x.uuid.as_str())));
        let (s, body, _) = p.get(&format!("/webinars/{id}/panelists")).await;
        assert_eq!(s, 200);
        assert_eq!(
            body["panelists"].as_array().unwrap().len(),
            x.panelists.len()
        );
        let regs = p
            .pages(&format!("/webinars/{id}/registrants"), "registrants")
            .await
            .unwrap();
        assert_eq!(regs.len(), x.registrants.len());
        for child in ["polls", "registrants/questions", "tracking_sources"] {
            let (s, body, _) = p.get(&format!("/webinars/{id}/{child}")).await;
            assert_eq!(s, 200, "{child}: {body}");
        }
        // Children by UUID, double-encoded as the newer manifest sends them.
        let u = encode_path_value(&x.uuid);
        let absent = p
            .pages(&format!("/past_webinars/{u}/absentees"), "registrants")
            .await
            .unwrap();
        assert_eq!(
            absent.len(),
            x.registrants.iter().filter(|r| !r.attended).count()
        );
        for child in ["polls", "qa"] {
            let (s, body, _) = p.get(&format!("/past_webinars/{u}/{child}")).await;
            assert_eq!((s, body["uuid"].as_str()), (200, Some(x.uuid.as_str())));
        }
        let (s, body, _) = p.get(&format!("/report/webinars/{u}")).await;
        assert_eq!(
            (s, body["participants_count"].as_u64()),
            (200, Some(x.attendees.len() as u64))
        );
        let rows = p
            .pages(
                &format!("/report/webinars/{u}/participants"),
                "participants",
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), x.attendees.len());
        // 1.1.22 puts the UUID in the path as it is: one with a "/" is not found.
        let (s, _, _) = p.get(&format!("/report/webinars/{}", x.uuid)).await;
        if x.uuid.contains('/') {
            assert_eq!(s, 404);
            raw_uuid_misses += 1;
        } else {
            assert_eq!(s, 200);
        }
    }
    assert!(
        raw_uuid_misses > 0,
        "the world should hold a UUID with a slash"
    );

    // Nothing the peer asked for was unknown to the simulator, except the raw-UUID probes.
    let unknown = p
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "unknown")
        .count();
    assert_eq!(unknown, raw_uuid_misses);
}

#[tokio::test]
async fn meeting_ids_that_are_instant_expired_unknown_or_deleted_are_not_found() {
    let world = Arc::new(World::generate(7, Scale::default()));
    let now = world.scale.end;
    let p = start(world.clone(), ZoomPlan::Pro, Faults::default()).await;
    let expected = scheduled_ids(&world, now);
    let gone: Vec<u64> = world
        .meetings
        .iter()
        .map(|m| m.id)
        .filter(|id| !expected.contains_key(id))
        .collect();
    assert!(!gone.is_empty());
    for id in gone.iter().take(5).chain([&1u64]) {
        for path in [
            format!("/meetings/{id}"),
            format!("/meetings/{id}/registrants"),
            format!("/meetings/{id}/polls"),
        ] {
            let (s, body, _) = p.get(&path).await;
            assert_eq!((s, code(&body)), (404, 3001), "{path}: {body}");
        }
    }
    // A listed meeting whose instances are all deleted is gone too.
    let (id, instances) = expected.iter().next().unwrap();
    for m in instances {
        p.sim.delete_meeting(&m.uuid);
    }
    let (s, body, _) = p.get(&format!("/meetings/{id}")).await;
    assert_eq!((s, code(&body)), (404, 3001));
    // An unknown user is Zoom's 1001; an unknown list type a validation error.
    let (s, body, _) = p.get("/users/nobody/meetings").await;
    assert_eq!((s, code(&body)), (404, 1001));
    let host = &world.users[0].id;
    let (s, body, _) = p.get(&format!("/users/{host}/meetings?type=bogus")).await;
    assert_eq!((s, code(&body)), (400, 300));
    // The world holds no meeting yet to start; ended ones are the previous meetings.
    let (s, body, _) = p
        .get(&format!("/users/{host}/meetings?type=upcoming"))
        .await;
    assert_eq!((s, body["total_records"].as_u64()), (200, Some(0)));
    let (_, sched, _) = p
        .get(&format!("/users/{host}/meetings?page_size=300"))
        .await;
    let (_, prev, _) = p
        .get(&format!(
            "/users/{host}/meetings?type=previous_meetings&page_size=300"
        ))
        .await;
    assert!(sched["total_records"].as_u64().unwrap() > 0);
    assert_eq!(sched["total_records"], prev["total_records"]);
}

#[tokio::test]
async fn peer_endpoints_keep_zoom_categories_scopes_plans_and_page_limits() {
    let world = Arc::new(World::generate(7, Scale::default()));
    let now = world.scale.end;
    let p = start(world.clone(), ZoomPlan::Pro, Faults::default()).await;
    let (id, instances) = scheduled_ids(&world, now)
        .into_iter()
        .find(|(_, ms)| ms[ms.len() - 1].in_reports())
        .unwrap();
    let host = &world.users[instances[0].host].id;
    for (path, category) in [
        (format!("/meetings/{id}"), "Light"),
        (format!("/users/{host}/meetings"), "Medium"),
        (format!("/past_meetings/{id}/polls"), "Medium"),
        (format!("/report/meetings/{id}"), "Heavy"),
        ("/phone/users".to_string(), "Medium"),
    ] {
        let (s, _, h) = p.get(&path).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(h["x-ratelimit-category"], category, "{path}");
    }
    // Phone users: at most 100 a page (the spec's maximum), every user once.
    let (s, body, _) = p.get("/phone/users?page_size=300").await;
    assert_eq!((s, body["page_size"].as_u64()), (200, Some(100)));
    assert_eq!(body["users"].as_array().unwrap().len(), world.users.len());
    // The newer manifest splits call history by recording status: the halves make the whole.
    let to = now.date_naive();
    let from = to - Duration::days(20);
    let mut counts = Vec::new();
    for status in [
        "",
        "&recording_status=recorded",
        "&recording_status=non_recorded",
    ] {
        let (s, body, _) = p
            .get(&format!(
                "/phone/call_history?from={from}&to={to}&page_size=300{status}"
            ))
            .await;
        assert_eq!(s, 200);
        counts.push(body["total_records"].as_u64().unwrap());
    }
    assert!(counts[1] > 0 && counts[2] > 0);
    assert_eq!(counts[0], counts[1] + counts[2]);

    // A missing scope is Zoom's 4711, and reports need a paid plan (code 200).
    let scoped = start(
        world.clone(),
        ZoomPlan::Pro,
        Faults {
            removed_scopes: vec!["report:read:admin".into(), "meeting:read:admin".into()],
            ..Faults::default()
        },
    )
    .await;
    for path in [
        format!("/report/meetings/{id}"),
        format!("/meetings/{id}"),
        format!("/users/{host}/meetings"),
    ] {
        let (s, body, _) = scoped.get(&path).await;
        assert_eq!((s, code(&body)), (400, 4711), "{path}: {body}");
    }
    let free = start(world.clone(), ZoomPlan::Free, Faults::default()).await;
    let (s, body, _) = free.get(&format!("/report/meetings/{id}")).await;
    assert_eq!((s, code(&body)), (400, 200));
}

#[tokio::test]
async fn singer_tap_zoom_pages_by_the_deprecated_page_number() {
    // tap-zoom asks for page_size=1000, takes the page_size the server returns, and asks for
    // page_number 2, 3, … while it is below page_count.
    let world = Arc::new(World::generate(7, Scale::default()));
    let p = start(world.clone(), ZoomPlan::Pro, Faults::default()).await;
    let (s, first, _) = p.get("/users?page_size=3&page_number=1").await;
    assert_eq!((s, first["page_count"].as_u64()), (200, Some(3)));
    let mut ids = BTreeSet::new();
    for n in 1..=3 {
        let (s, body, _) = p.get(&format!("/users?page_size=3&page_number={n}")).await;
        assert_eq!((s, body["page_number"].as_u64()), (200, Some(n)));
        for u in body["users"].as_array().unwrap() {
            assert!(ids.insert(u["id"].as_str().unwrap().to_string()), "{u}");
        }
    }
    assert_eq!(ids.len(), world.users.len());
    // Past the last page: empty, not an error.
    let (s, body, _) = p.get("/users?page_size=3&page_number=9").await;
    assert_eq!((s, body["users"].as_array().map(Vec::len)), (200, Some(0)));
}
