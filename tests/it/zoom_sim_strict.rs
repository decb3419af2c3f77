//! The Zoom simulator refuses what Zoom's specs say Zoom refuses: date windows in another
//! format than the endpoint documents, a `from` without its `to`, and a `page_size` that
//! is not a positive integer. Each answer is Zoom's validation error: 400, code 300.

use ferry::clock::{ManualClock, SharedClock};
use ferry::connectors::zoom::ZoomPlan;
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{CLIENT_ID, CLIENT_SECRET, Faults, SimOptions, ZoomSim, ZoomSimHandle};
use serde_json::Value;
use std::sync::Arc;

struct Rig {
    sim: ZoomSimHandle,
    http: reqwest::Client,
    token: String,
    world: Arc<World>,
}

async fn rig() -> Rig {
    let world = Arc::new(World::generate(5, Scale::small()));
    let clock: SharedClock = ManualClock::auto(world.scale.end);
    let sim = ZoomSim::start(SimOptions {
        world: world.clone(),
        clock,
        plan: ZoomPlan::Business,
        faults: Faults {
            enforce_rate_limits: false,
            ..Faults::default()
        },
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let tok: Value = http
        .post(format!(
            "{}?grant_type=account_credentials&account_id={}",
            sim.token_url, sim.account_id
        ))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"].as_str().unwrap().to_string();
    Rig {
        sim,
        http,
        token,
        world,
    }
}

impl Rig {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.sim.base_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn refused(&self, path: &str, field: &str) {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], 300, "{path}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
    }
}

#[tokio::test]
async fn date_windows_take_only_the_documented_formats() {
    let r = rig().await;
    let user = r.world.users[0].id.clone();
    let end = r.world.scale.end.date_naive();
    let from = end - chrono::Duration::days(10);
    let report = format!("/report/users/{user}/meetings");
    // The documented form works.
    let (s, body) = r.get(&format!("{report}?from={from}&to={end}")).await;
    assert_eq!(s, 200, "{body}");
    // Report dates are yyyy-mm-dd only: no datetime, no trailing text, no other layout.
    for bad in [
        format!("{from}T00:00:00Z"),
        format!("{from}junk"),
        from.format("%m/%d/%Y").to_string(),
        // Ten bytes that end inside a multi-byte character: refused, not a crash.
        "2024-01-0\u{e9}".to_string(),
    ] {
        let q = percent_encoding::utf8_percent_encode(&bad, percent_encoding::NON_ALPHANUMERIC);
        r.refused(&format!("{report}?from={q}&to={end}"), "from")
            .await;
    }
    // Required on the report.
    r.refused(&format!("{report}?to={end}"), "from").await;
    r.refused(&report, "from").await;
    // Phone call history also takes yyyy-MM-dd'T'HH:mm:ss'Z', the same form on both ends.
    let (s, body) = r
        .get(&format!(
            "/phone/call_history?from={from}T00:00:00Z&to={end}T23:59:59Z"
        ))
        .await;
    assert_eq!(s, 200, "{body}");
    r.refused(
        &format!("/phone/call_history?from={from}T00:00:00Z&to={end}"),
        "to",
    )
    .await;
    // The datetime form is Phone's alone.
    r.refused(
        &format!("/users/{user}/recordings?from={from}T00:00:00Z&to={end}T00:00:00Z"),
        "from",
    )
    .await;
}

#[tokio::test]
async fn a_from_needs_its_to() {
    let r = rig().await;
    let user = r.world.users[0].id.clone();
    let end = r.world.scale.end.date_naive();
    let from = end - chrono::Duration::days(3);
    // "to: Required only when the from parameter is specified" (Phone call history).
    r.refused(&format!("/phone/call_history?from={from}"), "to")
        .await;
    r.refused(&format!("/users/{user}/recordings?from={from}"), "to")
        .await;
    r.refused(&format!("/phone/call_history?to={end}"), "from")
        .await;
    // Without either, the documented default window applies.
    let (s, body) = r.get("/phone/call_history").await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn page_size_must_be_a_positive_integer_and_is_capped_at_the_maximum() {
    let r = rig().await;
    for bad in ["0", "-5", "abc", "1.5", ""] {
        r.refused(&format!("/users?page_size={bad}"), "page_size")
            .await;
    }
    // Over the maximum, Zoom uses its maximum and says so in the answer.
    let (s, body) = r.get("/users?page_size=5000").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["page_size"], 2000);
    let uuid = r
        .world
        .meetings
        .iter()
        .find(|m| m.in_reports())
        .map(|m| ferry::connectors::zoom::encode_path_value(&m.uuid))
        .unwrap();
    let (s, body) = r
        .get(&format!("/past_meetings/{uuid}/participants?page_size=301"))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["page_size"], 300);
}
