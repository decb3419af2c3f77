//! Zoom as a sink, end to end against the simulators: a rerun writes nothing; creates whose
//! answer was lost (5xx or a dropped connection after Zoom did the work) are found, never
//! repeated; a host over Zoom's 100 daily meeting writes waits for the reset without a
//! 429 storm while other hosts go on, and the plan says who waits and why; what Zoom
//! returned is written back on a later run; deletes of ended or gone meetings are done;
//! files that ask Zoom for what it refuses do not load.

use crate::support::{self, Env};
use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::config::Project;
use ferry::engine::report::{PipelineReport, WriteAction};
use ferry::engine::{ConnectorError, Engine, FetchError, Mode, Page, ReadSpec, RunOptions, Source};
use ferry::sim::zoom::{CreateFault, LimitForm};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("time")
}

/// Salesforce Events as a source would give them (the Salesforce source is built
/// elsewhere): a fixed list, no cursor.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Value>>>);

impl Events {
    fn set(&self, v: Vec<Value>) {
        *self.0.lock().expect("lock") = v;
    }
}

#[async_trait::async_trait]
impl Source for Events {
    fn kind(&self) -> &str {
        "salesforce"
    }
    fn read(
        &self,
        _stream: &str,
        _params: BTreeMap<String, Value>,
        _window: ReadSpec,
    ) -> BoxStream<'static, Result<Page, ConnectorError>> {
        let page = Page {
            partition: String::new(),
            records: self.0.lock().expect("lock").clone(),
            cursor: None,
        };
        futures::stream::iter(vec![Ok(page)]).boxed()
    }
    async fn fetch(&self, _: &str, _: BTreeMap<String, Value>) -> Result<Value, FetchError> {
        Ok(Value::Null)
    }
    fn primary_key(&self, _: &str) -> Option<String> {
        Some("Id".into())
    }
    fn calls(&self) -> u64 {
        0
    }
}

fn event(id: &str, host: &str, subject: &str, day: u32, deleted: bool) -> Value {
    json!({
        "Id": id, "Subject": subject, "Owner": {"Email": host}, "IsDeleted": deleted,
        "StartDateTime": format!("2026-12-{day:02}T15:00:00.000+0000"), "DurationInMinutes": 30,
    })
}

const MEETINGS: &str = r#"pipeline: events-to-zoom-meetings
source:
  stream: zoom.users
sinks:
  meeting:
    zoom: meeting
    action: upsert
    params: { user_id: "{{ record.Owner.Email }}" }
    key: "{{ record.Id }}"
    when: "{{ not record.IsDeleted }}"
    fields:
      topic: "{{ record.Subject | truncate(200) }}"
      type: 2
      start_time: "{{ record.StartDateTime | replace('.000+0000', 'Z') }}"
      duration: "{{ record.DurationInMinutes }}"
      settings: { waiting_room: true, join_before_host: false }
  cancel:
    zoom: meeting
    action: delete
    key: "{{ record.Id }}"
    when: "{{ record.IsDeleted }}"
"#;

const LINK: &str = r#"
  link:
    sobject: Task
    action: insert
    key: "{{ record.Id }}"
    when: "{{ sinks.meeting }}"
    fields:
      Subject: "{{ 'Zoom ' ~ (sinks.meeting.id | string) }}"
      Description: "{{ sinks.meeting.join_url }}"
"#;

struct Harness {
    env: Env,
    events: Events,
    clock: Arc<ManualClock>,
}

impl Harness {
    async fn start(pipeline: &str) -> Harness {
        let clock = ManualClock::auto(start());
        let shared: SharedClock = clock.clone();
        let env = Env::start(shared, 5, |_| {}).await;
        let h = Harness {
            env,
            events: Events::default(),
            clock,
        };
        h.write(pipeline);
        h
    }

    fn write(&self, pipeline: &str) {
        let dir = self.env.config.parent().expect("dir").join("pipelines");
        for e in std::fs::read_dir(&dir).expect("pipelines") {
            std::fs::remove_file(e.expect("entry").path()).expect("rm");
        }
        std::fs::write(dir.join("zoom.yaml"), pipeline).expect("write");
    }

    fn host(&self, n: usize) -> String {
        self.env.sandbox.zoom.world().users[n].email.clone()
    }

    async fn go(&self, mode: Mode) -> PipelineReport {
        let project: Project = self.env.project();
        let conns = self.env.connect(&project).await;
        let settings = Value::Object(project.config.settings.clone());
        let p = project
            .pipeline("events-to-zoom-meetings")
            .expect("pipeline");
        let engine = Engine {
            store: &conns.store,
            source: &self.events,
            matcher: &conns.salesforce,
            sink: &conns.salesforce,
            zoom: Some(&conns.zoom.conn),
            settings: &settings,
            now: self.clock.now(),
        };
        let mut opts = RunOptions::new(mode);
        opts.detail = true;
        engine.run(p, &opts).await
    }

    /// Zoom write requests (not GETs) the simulator served since the log was cleared.
    fn zoom_writes(&self) -> usize {
        self.env
            .sandbox
            .zoom
            .requests()
            .iter()
            .filter(|r| r.method != "GET" && !r.endpoint.contains("oauth"))
            .count()
    }
}

fn count(r: &PipelineReport, a: WriteAction) -> usize {
    r.records
        .iter()
        .flat_map(|x| &x.writes)
        .filter(|w| w.action == a)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_writes_nothing_and_lost_answers_never_make_a_second_meeting() {
    let h = Harness::start(MEETINGS).await;
    let (a, b) = (h.host(0), h.host(1));
    h.events.set(
        (0..6)
            .map(|i| {
                let host = if i % 2 == 0 { &a } else { &b };
                event(
                    &format!("00U{i}"),
                    host,
                    &format!("Demo {i}"),
                    1 + i as u32,
                    false,
                )
            })
            .collect(),
    );
    let zoom = &h.env.sandbox.zoom;
    // The first create is done and answered 503; the second is done and its connection drops.
    zoom.fault_next_creates(&[CreateFault::Error5xx, CreateFault::Reset]);
    let first = h.go(Mode::Run).await;
    assert!(first.stopped.is_none(), "{:?}", first.stopped);
    assert_eq!(count(&first, WriteAction::Create), 4, "{first:#?}");
    assert_eq!(count(&first, WriteAction::Waiting), 2);
    assert_eq!(zoom.creates(), 6, "Zoom did all six creates");

    let second = h.go(Mode::Run).await;
    assert!(second.stopped.is_none(), "{:?}", second.stopped);
    assert_eq!(
        zoom.creates(),
        6,
        "the lost ones were found, not created again"
    );
    let meetings = zoom.written_meetings();
    assert_eq!(meetings.len(), 6);
    let mut topics: Vec<String> = meetings
        .iter()
        .map(|(_, _, b)| b["topic"].as_str().unwrap_or("").to_string())
        .collect();
    topics.sort();
    topics.dedup();
    assert_eq!(topics.len(), 6, "one meeting per Event");

    zoom.clear_log();
    let third = h.go(Mode::Run).await;
    assert_eq!(h.zoom_writes(), 0, "a rerun writes nothing to Zoom");
    assert_eq!(count(&third, WriteAction::Unchanged), 6);

    // A renamed Event updates its meeting (once), the others stay.
    let mut evs: Vec<Value> = h.events.0.lock().expect("lock").clone();
    evs[0]["Subject"] = json!("Demo 0, moved");
    h.events.set(evs);
    let plan = h.go(Mode::Plan).await;
    let upd: Vec<_> = plan
        .records
        .iter()
        .flat_map(|r| &r.writes)
        .filter(|w| w.action == WriteAction::Update)
        .collect();
    assert_eq!(upd.len(), 1);
    let diff = upd[0].diff.as_ref().expect("diff");
    assert_eq!(
        diff.get("topic").map(|(a, b)| (a.clone(), b.clone())),
        Some((json!("Demo 0"), json!("Demo 0, moved"))),
        "the plan diffs against what Zoom holds"
    );
    zoom.clear_log();
    let run = h.go(Mode::Run).await;
    assert_eq!(count(&run, WriteAction::Update), 1);
    assert_eq!(h.zoom_writes(), 1);
    assert!(
        zoom.written_meetings()
            .iter()
            .any(|(_, _, b)| b["topic"] == json!("Demo 0, moved"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_over_the_daily_limit_waits_for_the_reset_and_others_go_on() {
    for form in [LimitForm::Http429, LimitForm::Http300] {
        let h = Harness::start(MEETINGS).await;
        let zoom = &h.env.sandbox.zoom;
        zoom.set_limit_form(form);
        let (busy, other) = (h.host(0), h.host(1));
        let mut evs: Vec<Value> = (0..150)
            .map(|i| {
                event(
                    &format!("00UA{i:03}"),
                    &busy,
                    &format!("Call {i}"),
                    1 + (i % 28) as u32,
                    false,
                )
            })
            .collect();
        evs.extend(
            (0..5).map(|i| event(&format!("00UB{i}"), &other, &format!("Other {i}"), 2, false)),
        );
        h.events.set(evs);
        let first = h.go(Mode::Run).await;
        assert!(first.stopped.is_none(), "{form:?}: {:?}", first.stopped);
        assert_eq!(count(&first, WriteAction::Create), 105, "{form:?}");
        assert_eq!(count(&first, WriteAction::Waiting), 50, "{form:?}");
        assert_eq!(first.summary.waiting, 50);
        assert_eq!(
            first.summary.dead_lettered, 0,
            "never dead-lettered for a limit"
        );
        let by_host = |email: &str| {
            zoom.written_meetings()
                .iter()
                .filter(|(_, h, _)| h.eq_ignore_ascii_case(email))
                .count()
        };
        assert_eq!(by_host(&busy), 100);
        assert_eq!(by_host(&other), 5, "another host is not held back");
        let limited = |zoom: &ferry::sim::zoom::ZoomSimHandle| {
            zoom.requests()
                .iter()
                .filter(|r| {
                    r.endpoint == "POST /users/{userId}/meetings"
                        && (r.status == 429 || r.status == 300)
                })
                .count()
        };
        assert_eq!(
            limited(zoom),
            1,
            "{form:?}: one limit answer for the host, no storm"
        );

        // Later the same day: the plan says who waits and why, a run sends nothing for them.
        h.clock.advance(std::time::Duration::from_secs(3600));
        let plan = h.go(Mode::Plan).await;
        let waiting: Vec<_> = plan
            .records
            .iter()
            .flat_map(|r| &r.writes)
            .filter(|w| w.action == WriteAction::Waiting)
            .collect();
        assert_eq!(waiting.len(), 50, "{form:?}");
        let why = waiting[0].reason.clone().unwrap_or_default();
        assert!(why.contains("waits until 2026-11-21T00:00:00Z"), "{why}");
        assert!(
            why.contains("single user in one day") || why.contains("particular user"),
            "{why}"
        );
        let again = h.go(Mode::Run).await;
        assert_eq!(count(&again, WriteAction::Waiting), 50);
        assert_eq!(
            limited(zoom),
            1,
            "{form:?}: no second limit answer the same day"
        );

        // After the reset the deferred ones go first.
        h.clock.set(
            Utc.with_ymd_and_hms(2026, 11, 21, 0, 5, 0)
                .single()
                .expect("time"),
        );
        let next = h.go(Mode::Run).await;
        assert!(next.stopped.is_none(), "{:?}", next.stopped);
        assert_eq!(by_host(&busy), 150, "{form:?}");
        assert_eq!(limited(zoom), 1);
        assert_eq!(next.summary.waiting, 0);
        assert_eq!(zoom.creates(), 155, "never two meetings for an Event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_zoom_returned_is_written_back_on_a_later_run() {
    let h = Harness::start(MEETINGS).await;
    let a = h.host(0);
    h.events
        .set(vec![event("00UW1", &a, "Write back", 3, false)]);
    // The run that created the meeting ended before the write-back (as a crash would).
    let first = h.go(Mode::Run).await;
    assert_eq!(count(&first, WriteAction::Create), 1);
    let tasks = || h.env.sandbox.salesforce.records("Task");
    let before = tasks().len();
    // The next run has the write-back: Zoom is not asked again, the values come from the
    // ledger.
    h.write(&format!("{MEETINGS}{LINK}"));
    h.env.sandbox.zoom.clear_log();
    let second = h.go(Mode::Run).await;
    assert!(second.stopped.is_none(), "{:?}", second.stopped);
    assert_eq!(h.zoom_writes(), 0);
    let all = tasks();
    assert_eq!(all.len(), before + 1, "{second:#?}");
    let (id, _, _) = h.env.sandbox.zoom.written_meetings()[0].clone();
    let t = all
        .iter()
        .find(|t| t["Subject"] == json!(format!("Zoom {id}")))
        .expect("the task names the meeting");
    let url = t["Description"].as_str().unwrap_or("");
    assert!(url.starts_with(&format!("https://zoom.us/j/{id}")), "{url}");
    // start_url is a host credential: not in the ledger, the report or the plan.
    let plan = h.go(Mode::Plan).await;
    let text = serde_json::to_string(&plan).unwrap_or_default();
    assert!(!text.contains("zak="), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_ended_or_gone_meeting_is_done() {
    let h = Harness::start(MEETINGS).await;
    let a = h.host(0);
    let evs: Vec<Value> = (0..3)
        .map(|i| event(&format!("00UD{i}"), &a, &format!("Gone {i}"), 5, false))
        .collect();
    h.events.set(evs.clone());
    let first = h.go(Mode::Run).await;
    assert_eq!(count(&first, WriteAction::Create), 3);
    let zoom = &h.env.sandbox.zoom;
    let ids: Vec<u64> = zoom.written_meetings().iter().map(|m| m.0).collect();
    zoom.set_meeting_phase(ids[0], true, false); // ended: 3007
    zoom.set_meeting_phase(ids[1], false, true); // in progress: 3002
    h.events.set(
        evs.iter()
            .map(|e| {
                let mut e = e.clone();
                e["IsDeleted"] = json!(true);
                e
            })
            .collect(),
    );
    let run = h.go(Mode::Run).await;
    assert!(run.stopped.is_none(), "{:?}", run.stopped);
    assert_eq!(count(&run, WriteAction::Delete), 3, "{run:#?}");
    assert_eq!(run.summary.error, 0);
    // Deleted once: a rerun sends nothing, and the third (really deleted) is gone: 3001.
    zoom.clear_log();
    let again = h.go(Mode::Run).await;
    assert_eq!(h.zoom_writes(), 0);
    assert_eq!(count(&again, WriteAction::Unchanged), 3);
}

#[test]
fn files_that_ask_zoom_for_what_it_refuses_do_not_load() {
    let bad = r#"pipeline: events-to-zoom-meetings
source:
  stream: zoom.users
sinks:
  meeting:
    zoom: meeting
    action: upsert
    params: { user_idd: "{{ record.email }}" }
    key: "{{ record.id }}"
    fields:
      topc: "{{ record.email }}"
      password: "far-too-long-password"
      settings: { waiting_rom: true }
  reg:
    zoom: webinar_registrnt
    action: create
    key: "{{ record.id }}"
  cancel:
    zoom: webinar_registrant
    action: upsert
    key: "{{ record.id }}"
    params: { webinar_id: "1" }
    fields:
      email: "{{ record.email }}"
"#;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("zoom.yaml");
    std::fs::write(&file, bad).expect("write");
    let catalog = support::config::TestCatalog;
    let catalogs: [&dyn ferry::config::StreamCatalog; 1] = [&catalog];
    let files = vec![file];
    let options = ferry::config::LoadOptions {
        env: Some(&support::config::no_env),
        pipelines: Some(&files),
        ..ferry::config::LoadOptions::validate()
    };
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ferry.yaml");
    let text = match ferry::config::load_project_with(&config, &catalogs, options) {
        Ok(_) => "loaded".to_string(),
        Err(d) => d.render(),
    };
    for want in [
        "zoom.yaml:8:",
        "has no param `user_idd`",
        "did you mean `user_id`?",
        "has no field `topc`",
        "did you mean `topic`?",
        "21 characters; Zoom's meeting.password takes at most 10",
        "has no field `settings.waiting_rom`",
        "did you mean `waiting_room`?",
        "Zoom has no sink object `webinar_registrnt`",
        "takes create, delete, not `upsert`",
        "needs the param `user_id`",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let _ = Duration::zero();
}

/// The write endpoints' answers against Zoom's OpenAPI response schemas (the fixture holds
/// them, extracted from Zoom's public specs), and their refusals as the specs state them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_endpoints_answer_as_zoom_s_specs_say() {
    let schemas: Value = serde_json::from_str(include_str!(
        "../fixtures/zoom-openapi-write-responses.json"
    ))
    .expect("fixture");
    let h = Harness::start(MEETINGS).await;
    let zoom = &h.env.sandbox.zoom;
    let tok: Value = reqwest::Client::new()
        .post(format!(
            "{}?grant_type=account_credentials&account_id={}",
            zoom.token_url, zoom.account_id
        ))
        .basic_auth(&zoom.client_id, Some(&zoom.client_secret))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = tok["access_token"].as_str().unwrap_or("").to_string();
    let http = reqwest::Client::new();
    let base = zoom.base_url.clone();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut rb = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        async move {
            let r = rb.send().await.expect("send");
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, v)
        }
    };
    let host = h.host(0);
    let mut problems = Vec::new();
    use reqwest::Method;
    // Each answer is checked against the spec's response schema of its operation.
    let mut step =
        async |method: Method, path: String, body: Option<Value>, want: u16, op: &str| {
            let (s, v) = call(method, path, body).await;
            assert_eq!(s, want, "{op}: {v}");
            crate::zoom_openapi::check(&schemas[op], &v, op, &mut problems);
            v
        };
    let meeting = json!({"topic": "Spec", "type": 2, "start_time": "2026-12-01T10:00:00Z",
        "duration": 30, "settings": {"approval_type": 0}});
    let path = format!("/users/{host}/meetings");
    let m = step(
        Method::POST,
        path,
        Some(meeting),
        201,
        "POST /users/{userId}/meetings",
    )
    .await;
    let id = m["id"].as_u64().expect("numeric id");
    let wb = zoom.world().webinars[0].id;
    let registrant =
        |email: &str| Some(json!({"email": email, "first_name": "Pat", "last_name": "L"}));
    for (method, path, body, want, op) in [
        (
            Method::GET,
            format!("/meetings/{id}"),
            None,
            200,
            "GET /meetings/{meetingId}",
        ),
        (
            Method::GET,
            format!("/users/{host}/meetings?type=upcoming"),
            None,
            200,
            "GET /users/{userId}/meetings",
        ),
        (
            Method::POST,
            format!("/meetings/{id}/registrants"),
            registrant("pat@example.com"),
            201,
            "POST /meetings/{meetingId}/registrants",
        ),
        (
            Method::POST,
            format!("/webinars/{wb}/registrants"),
            registrant("sam@example.com"),
            201,
            "POST /webinars/{webinarId}/registrants",
        ),
        (
            Method::GET,
            format!("/webinars/{wb}/registrants?status=approved"),
            None,
            200,
            "GET /webinars/{webinarId}/registrants",
        ),
    ] {
        step(method, path, body, want, op).await;
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // Refusals as the specs state them.
    let (s, e) = call(
        reqwest::Method::POST,
        "/users/nobody@nowhere.test/meetings".into(),
        Some(json!({"topic": "x"})),
    )
    .await;
    assert_eq!((s, e["code"].as_i64()), (404, Some(1001)));
    let (s, e) = call(
        reqwest::Method::POST,
        format!("/users/{host}/meetings"),
        Some(json!({"password": "far-too-long-pw"})),
    )
    .await;
    assert_eq!((s, e["code"].as_i64()), (400, Some(300)), "{e}");
    zoom.disable_registration(wb);
    let (s, e) = call(
        reqwest::Method::POST,
        format!("/webinars/{wb}/registrants"),
        Some(json!({"email": "a@b.co", "first_name": "A"})),
    )
    .await;
    assert_eq!((s, e["code"].as_i64()), (400, Some(3000)));
    let (s, plain) = call(
        reqwest::Method::POST,
        format!("/users/{host}/meetings"),
        Some(json!({"topic": "No registration"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, e) = call(
        reqwest::Method::POST,
        format!("/meetings/{}/registrants", plain["id"]),
        Some(json!({"email": "a@b.co", "first_name": "A"})),
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("Registration has not been enabled"),
        "{e}"
    );
    // 3 registrations per registrant per meeting per day; the fourth is a 429.
    for n in 0..4 {
        let (s, _) = call(
            reqwest::Method::POST,
            format!("/meetings/{id}/registrants"),
            Some(json!({"email": "rep@example.com", "first_name": "R"})),
        )
        .await;
        assert_eq!(s, if n < 3 { 201 } else { 429 }, "registration {n}");
    }
    let (s, _) = call(reqwest::Method::DELETE, format!("/meetings/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, e) = call(reqwest::Method::DELETE, format!("/meetings/{id}"), None).await;
    assert_eq!((s, e["code"].as_i64()), (404, Some(3001)));
}
