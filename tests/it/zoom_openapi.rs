//! The simulator's responses against Zoom's OpenAPI response schemas: required properties are
//! present and every property the sim sends has the spec's type. The fixture holds the
//! response schemas of the served endpoints, extracted from Zoom's public specs.

use ferry::clock::{ManualClock, SharedClock};
use ferry::connectors::zoom::{ZoomPlan, encode_path_value};
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{CLIENT_ID, CLIENT_SECRET, Faults, SimOptions, ZoomSim};
use serde_json::Value;
use std::sync::Arc;

pub(crate) fn check(schema: &Value, v: &Value, at: &str, problems: &mut Vec<String>) {
    let ty = schema["type"].as_str();
    let ok = match (ty, v) {
        (None, _) => true,
        (Some("string"), Value::String(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        (Some("boolean"), Value::Bool(_)) => true,
        (Some("array"), Value::Array(_)) => true,
        (Some("object"), Value::Object(_)) => true,
        _ => false,
    };
    if !ok {
        problems.push(format!("{at}: expected {ty:?}, got {v}"));
        return;
    }
    if let (Some(req), Value::Object(o)) = (schema["required"].as_array(), v) {
        for r in req.iter().filter_map(Value::as_str) {
            if !o.contains_key(r) {
                problems.push(format!("{at}: missing required `{r}`"));
            }
        }
    }
    if let (Some(props), Value::Object(o)) = (schema["properties"].as_object(), v) {
        for (k, sub) in o {
            if let Some(s) = props.get(k) {
                check(s, sub, &format!("{at}.{k}"), problems);
            }
        }
    }
    if let (Some(items), Value::Array(a)) = (schema.get("items"), v) {
        for (i, x) in a.iter().enumerate().take(5) {
            check(items, x, &format!("{at}[{i}]"), problems);
        }
    }
}

#[tokio::test]
async fn sim_responses_match_zoom_openapi_schemas() {
    let schemas: Value =
        serde_json::from_str(include_str!("../fixtures/zoom-openapi-responses.json")).unwrap();
    let world = Arc::new(World::generate(8, Scale::default()));
    let clock: SharedClock = ManualClock::auto(world.scale.end);
    let sim = ZoomSim::start(SimOptions {
        world: world.clone(),
        clock,
        plan: ZoomPlan::Business,
        faults: Faults::default(),
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
    let user = &world.users[0].id;
    let m = world
        .meetings
        .iter()
        .find(|m| m.recording.is_some() && m.in_reports() && m.uuid.starts_with('/'))
        .unwrap();
    let mu = encode_path_value(&m.uuid);
    // A scheduled (not instant) meeting recent enough that its ID has not expired.
    let listed = world
        .meetings
        .iter()
        .rev()
        .find(|x| x.meeting_type == 2)
        .unwrap();
    let wb = &world.webinars[0];
    let end = world.scale.end.date_naive();
    let from = end - chrono::Duration::days(25);
    let window = format!("from={from}&to={end}");
    // The user of the latest call in the window that `f` accepts: the listing is not empty.
    let caller = |f: &dyn Fn(&ferry::sim::world::Call) -> bool| {
        let c = world
            .calls
            .iter()
            .rev()
            .find(|c| c.start.date_naive() >= from && c.end <= world.scale.end && f(c))
            .expect("a call in the window");
        world.users[c.user].id.clone()
    };
    let cases = [
        ("/users", "/users".to_string()),
        ("/users/{userId}", format!("/users/{user}")),
        (
            "/report/users/{userId}/meetings",
            format!("/report/users/{}/meetings?{window}", m_host(&world, m)),
        ),
        ("/past_meetings/{meetingId}", format!("/past_meetings/{mu}")),
        (
            "/past_meetings/{meetingId}/participants",
            format!("/past_meetings/{mu}/participants"),
        ),
        (
            "/meetings/{meetingId}/recordings",
            format!("/meetings/{mu}/recordings"),
        ),
        (
            "/users/{userId}/recordings",
            format!("/users/{}/recordings?{window}", m_host(&world, m)),
        ),
        (
            "/users/{userId}/webinars",
            format!("/users/{}/webinars", world.users[wb.host].id),
        ),
        (
            "/webinars/{webinarId}/registrants",
            format!("/webinars/{}/registrants", wb.id),
        ),
        (
            "/past_webinars/{webinarId}/participants",
            format!("/past_webinars/{}/participants", wb.id),
        ),
        ("/webinars/{webinarId}", format!("/webinars/{}", wb.id)),
        (
            "/webinars/{webinarId}/panelists",
            format!("/webinars/{}/panelists", wb.id),
        ),
        (
            "/past_webinars/{WebinarUUID}/absentees",
            format!("/past_webinars/{}/absentees", encode_path_value(&wb.uuid)),
        ),
        (
            "/phone/call_history",
            format!("/phone/call_history?{window}"),
        ),
        ("/phone/recordings", format!("/phone/recordings?{window}")),
        ("/phone/voice_mails", format!("/phone/voice_mails?{window}")),
        // What peer connectors read (Airbyte source-zoom, the Singer and Meltano taps).
        (
            "/users/{userId}/meetings",
            format!("/users/{}/meetings", m_host(&world, listed)),
        ),
        ("/meetings/{meetingId}", format!("/meetings/{}", listed.id)),
        (
            "/meetings/{meetingId}/polls",
            format!("/meetings/{}/polls", listed.id),
        ),
        (
            "/meetings/{meetingId}/registrants/questions",
            format!("/meetings/{}/registrants/questions", listed.id),
        ),
        (
            "/past_meetings/{meetingId}/polls",
            format!("/past_meetings/{mu}/polls"),
        ),
        (
            "/past_meetings/{meetingId}/instances",
            format!("/past_meetings/{}/instances", m.id),
        ),
        (
            "/report/meetings/{meetingId}",
            format!("/report/meetings/{mu}"),
        ),
        (
            "/report/meetings/{meetingId}/participants",
            format!("/report/meetings/{mu}/participants"),
        ),
        ("/webinars/{webinarId}", format!("/webinars/{}", wb.id)),
        (
            "/webinars/{webinarId}/polls",
            format!("/webinars/{}/polls", wb.id),
        ),
        (
            "/webinars/{webinarId}/registrants/questions",
            format!("/webinars/{}/registrants/questions", wb.id),
        ),
        (
            "/webinars/{webinarId}/tracking_sources",
            format!("/webinars/{}/tracking_sources", wb.id),
        ),
        (
            "/past_webinars/{webinarId}/polls",
            format!("/past_webinars/{}/polls", encode_path_value(&wb.uuid)),
        ),
        (
            "/past_webinars/{webinarId}/qa",
            format!("/past_webinars/{}/qa", encode_path_value(&wb.uuid)),
        ),
        (
            "/report/webinars/{webinarId}",
            format!("/report/webinars/{}", encode_path_value(&wb.uuid)),
        ),
        (
            "/report/webinars/{webinarId}/participants",
            format!(
                "/report/webinars/{}/participants",
                encode_path_value(&wb.uuid)
            ),
        ),
        ("/phone/users", "/phone/users".to_string()),
        // Per-user endpoints of privacy requests (`ferry subject export`).
        (
            "/users/{userId}/settings",
            format!("/users/{user}/settings"),
        ),
        ("/phone/users/{userId}", format!("/phone/users/{user}")),
        (
            "/phone/users/{userId}/settings",
            format!("/phone/users/{}/settings", world.users[0].email),
        ),
        (
            "/phone/users/{userId}/call_history",
            format!(
                "/phone/users/{}/call_history?{window}",
                caller(&|c| c.voicemail.is_some() || c.recording.is_some())
            ),
        ),
        (
            "/phone/users/{userId}/voice_mails",
            format!(
                "/phone/users/{}/voice_mails?{window}",
                caller(&|c| c.voicemail.is_some())
            ),
        ),
        (
            "/phone/users/{userId}/recordings",
            format!(
                "/phone/users/{}/recordings?{window}",
                caller(&|c| c.recording.is_some())
            ),
        ),
    ];
    let mut problems = Vec::new();
    for (spec_path, path) in cases {
        let resp = http
            .get(format!("{}{path}", sim.base_url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let body: Value = resp.json().await.unwrap();
        for list in ["call_logs", "voice_mails", "recordings"] {
            if spec_path.starts_with("/phone/users/") && body.get(list).is_some() {
                assert!(
                    body[list].as_array().is_some_and(|a| !a.is_empty()),
                    "{path}: empty"
                );
            }
        }
        assert!(schemas[spec_path].is_object(), "no schema for {spec_path}");
        check(&schemas[spec_path], &body, spec_path, &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // A slash UUID encoded only once is not found, as on the real API.
    let single = percent_encoding::utf8_percent_encode(&m.uuid, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let resp = http
        .get(format!("{}/past_meetings/{single}", sim.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // Report windows over a month are refused.
    let resp = http
        .get(format!(
            "{}/report/users/{user}/meetings?from={}&to={end}",
            sim.base_url,
            end - chrono::Duration::days(40)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 300);
}

fn m_host(w: &World, m: &ferry::sim::world::Meeting) -> String {
    w.users[m.host].id.clone()
}
