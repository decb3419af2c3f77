//! Both directions end to end against the simulators, with Zoom's limits on: the
//! Salesforce → Zoom examples (flagged Events → meetings, flagged Campaigns → webinars,
//! Campaign Members → registrants, links written back) give every flagged Event exactly
//! one meeting and every eligible member one registration; moved, renamed and deleted
//! Events reach their meeting; a rerun writes nothing to either service and a plan never
//! writes; a meeting created from an Event and then held comes back through
//! meetings-to-events onto that same Event, never a second one; and the real `ferry run`,
//! killed with SIGKILL at random moments while creates are answered 5xx or dropped after
//! Zoom did them, leaves no duplicate meeting or registrant and every flagged Event linked.

use crate::support::{self, Env};
use chrono::{DateTime, TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::Mode;
use ferry::engine::report::PipelineReport;
use ferry::sim::sandbox::REVERSE_PIPELINES;
use ferry::sim::world::CrmRole;
use ferry::sim::zoom::CreateFault;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: &str = "events-to-zoom-meetings";
const WEBINARS: &str = "campaigns-to-zoom-webinars";
const MEMBERS: &str = "campaign-members-to-webinar-registrants";
/// In the order they depend on each other (the webinar id before its registrants).
const REVERSE: [&str; 3] = [WEBINARS, MEMBERS, EVENTS];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("time")
}

async fn env(clock: SharedClock, meetings: usize) -> Env {
    let env = Env::start(clock, meetings, |o| o.reverse = true).await;
    for (name, text) in REVERSE_PIPELINES {
        std::fs::write(env.dir.path().join("pipelines").join(name), text).expect("pipeline");
    }
    env
}

async fn run(env: &Env, name: &str) -> PipelineReport {
    let r = env.run_one(name, Mode::Run).await;
    assert!(r.stopped.is_none(), "{name} stopped: {:?}", r.stopped);
    assert_eq!(r.summary.error, 0, "{name}: {r:#?}");
    r
}

async fn run_reverse(env: &Env) -> Vec<PipelineReport> {
    let mut out = Vec::new();
    for name in REVERSE {
        out.push(run(env, name).await);
    }
    out
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Zoom requests that write (not GETs, not tokens) since the log was cleared.
fn zoom_writes(env: &Env) -> usize {
    env.sandbox
        .zoom
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.endpoint.contains("oauth"))
        .count()
}

/// Every record of the objects either direction writes, timestamps included: equal
/// before and after means Salesforce was not written.
fn sf_state(env: &Env) -> String {
    let sf = &env.sandbox.salesforce;
    [
        "Event",
        "Campaign",
        "CampaignMember",
        "Task",
        "EventRelation",
        "Opportunity",
    ]
    .iter()
    .map(|o| serde_json::to_string(&sf.records(o)).expect("json"))
    .collect::<Vec<_>>()
    .join("\n")
}

fn flagged_events(env: &Env) -> Vec<Value> {
    env.sandbox
        .salesforce
        .records("Event")
        .into_iter()
        .filter(|e| e.get("Zoom_Meeting__c") == Some(&json!(true)))
        .collect()
}

/// Every flagged (live) Event has exactly one Zoom meeting, with its id and join URL
/// written back, and Zoom holds no meeting that no Event links.
fn assert_one_meeting_per_event(env: &Env) {
    let meetings: BTreeMap<String, Value> = env
        .sandbox
        .zoom
        .written_meetings()
        .into_iter()
        .filter(|(_, _, b)| b.get("type") == Some(&json!(2)))
        .map(|(id, _, b)| (id.to_string(), Value::Object(b)))
        .collect();
    let events = flagged_events(env);
    assert!(!events.is_empty(), "the sandbox seeds flagged Events");
    let linked: BTreeSet<String> = events.iter().map(|e| s(e, "Zoom_Meeting_Id__c")).collect();
    assert_eq!(linked.len(), events.len(), "no two Events share a meeting");
    for e in &events {
        let id = s(e, "Zoom_Meeting_Id__c");
        let m = meetings
            .get(&id)
            .unwrap_or_else(|| panic!("Event {} has no live meeting ({id:?})", s(e, "Id")));
        assert_eq!(m["topic"], json!(s(e, "Subject")));
        let url = s(e, "Zoom_Join_URL__c");
        assert!(url.starts_with(&format!("https://zoom.us/j/{id}")), "{url}");
    }
    assert_eq!(
        meetings.len(),
        events.len(),
        "one meeting per Event, no more"
    );
}

/// Every member of the webinar Campaign with an email is registered exactly once, with
/// the join URL and registrant id written back; the one without an email is not.
fn assert_one_registration_per_member(env: &Env) -> usize {
    let sf = &env.sandbox.salesforce;
    let campaign = sf
        .records("Campaign")
        .into_iter()
        .find(|c| c.get("Zoom_Webinar__c") == Some(&json!(true)))
        .expect("a flagged Campaign");
    let webinar: u64 = s(&campaign, "Zoom_Webinar_Id__c")
        .parse()
        .expect("the webinar id written back");
    let regs = env.sandbox.zoom.written_registrants(webinar);
    let members: Vec<Value> = sf
        .records("CampaignMember")
        .into_iter()
        .filter(|m| s(m, "CampaignId") == s(&campaign, "Id"))
        .collect();
    let mut registered = 0;
    for m in &members {
        let email = s(m, "Email");
        let mine: Vec<_> = regs
            .iter()
            .filter(|(_, e, _)| e.eq_ignore_ascii_case(&email))
            .collect();
        if email.is_empty() {
            assert!(s(m, "Zoom_Join_URL__c").is_empty());
            continue;
        }
        assert_eq!(mine.len(), 1, "{email} registered once: {regs:?}");
        assert_eq!(s(m, "Zoom_Registrant_Id__c"), mine[0].0);
        assert!(
            s(m, "Zoom_Join_URL__c").contains(&mine[0].0),
            "{}",
            s(m, "Zoom_Join_URL__c")
        );
        assert_eq!(s(m, "Status"), "Registered");
        registered += 1;
    }
    assert_eq!(regs.len(), registered, "no registrant without a member");
    registered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_to_zoom_links_every_event_and_member_once_and_a_rerun_writes_nothing() {
    let clock = ManualClock::auto(start());
    let env = env(clock.clone(), 6).await;
    let seeded = env.sandbox.seeded.clone();

    // A plan of a reverse pipeline writes nothing to either service.
    let before = sf_state(&env);
    env.sandbox.zoom.clear_log();
    for name in REVERSE {
        let plan = env.run_one(name, Mode::Plan).await;
        assert!(plan.stopped.is_none(), "{:?}", plan.stopped);
    }
    let plan = env.run_one(EVENTS, Mode::Plan).await;
    assert_eq!(
        plan.summary.create as usize, seeded.flagged_events,
        "{plan:#?}"
    );
    assert_eq!(zoom_writes(&env), 0, "a plan writes nothing to Zoom");
    assert_eq!(
        sf_state(&env),
        before,
        "a plan writes nothing to Salesforce"
    );

    let first = run_reverse(&env).await;
    assert_eq!(
        first[2].per_sink.get("meeting"),
        Some(&(seeded.flagged_events as u64))
    );
    assert_one_meeting_per_event(&env);
    assert_eq!(
        assert_one_registration_per_member(&env),
        seeded.webinar_members
    );

    // Then Zoom → Salesforce, and everything again: nothing new on either side. The
    // write-backs moved SystemModstamp, so the Events and members are read again.
    for p in env.run_all(Mode::Run).await {
        assert!(p.stopped.is_none(), "{}: {:?}", p.pipeline, p.stopped);
    }
    clock.advance(Duration::from_secs(60));
    let before = sf_state(&env);
    env.sandbox.zoom.clear_log();
    let mut again = run_reverse(&env).await;
    again.extend(env.run_all(Mode::Run).await);
    assert_eq!(support::writes(&again), 0, "{again:#?}");
    assert_eq!(
        again[2].records_read as usize, seeded.flagged_events,
        "re-read, not re-written"
    );
    assert_eq!(zoom_writes(&env), 0, "a rerun writes nothing to Zoom");
    assert_eq!(
        sf_state(&env),
        before,
        "a rerun writes nothing to Salesforce"
    );

    // Moved, renamed and deleted Events.
    let events = flagged_events(&env);
    let sf = &env.sandbox.salesforce;
    let (moved, renamed, deleted) = (&events[0], &events[1], &events[2]);
    assert!(sf.update(
        "Event",
        &s(moved, "Id"),
        json!({"StartDateTime": "2026-11-28T09:00:00.000+0000",
               "EndDateTime": "2026-11-28T10:00:00.000+0000", "DurationInMinutes": 60})
    ));
    assert!(sf.update(
        "Event",
        &s(renamed, "Id"),
        json!({"Subject": "Renamed: pricing"})
    ));
    assert!(sf.delete("Event", &s(deleted, "Id")));
    clock.advance(Duration::from_secs(60));

    let before = sf_state(&env);
    env.sandbox.zoom.clear_log();
    let plan = env.run_one(EVENTS, Mode::Plan).await;
    assert_eq!(
        (plan.summary.update, plan.summary.delete),
        (2, 1),
        "{plan:#?}"
    );
    assert_eq!(zoom_writes(&env), 0);
    assert_eq!(sf_state(&env), before);

    let r = run(&env, EVENTS).await;
    assert_eq!((r.summary.update, r.summary.delete), (2, 1), "{r:#?}");
    let zoom = env.sandbox.zoom.written_meetings();
    let body = |e: &Value| {
        zoom.iter()
            .find(|(id, _, _)| id.to_string() == s(e, "Zoom_Meeting_Id__c"))
            .map(|(_, _, b)| b.clone())
    };
    let m = body(moved).expect("moved meeting");
    assert_eq!(m["start_time"], json!("2026-11-28T09:00:00Z"));
    assert_eq!(m["duration"], json!(60));
    assert_eq!(
        body(renamed).expect("renamed")["topic"],
        json!("Renamed: pricing")
    );
    assert!(
        body(deleted).is_none(),
        "the deleted Event's meeting is gone"
    );
    assert_one_meeting_per_event(&env);

    env.sandbox.zoom.clear_log();
    clock.advance(Duration::from_secs(60));
    let r = run(&env, EVENTS).await;
    assert_eq!(support::writes(&[r]), 0);
    assert_eq!(zoom_writes(&env), 0, "the write-backs cost no Zoom write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_created_from_an_event_and_held_updates_that_event_never_a_second() {
    let clock = ManualClock::auto(start());
    let env = env(clock.clone(), 4).await;
    run_reverse(&env).await;
    let events = flagged_events(&env);
    let event = events
        .iter()
        .min_by_key(|e| s(e, "StartDateTime"))
        .expect("an Event")
        .clone();
    let meeting: u64 = s(&event, "Zoom_Meeting_Id__c").parse().expect("meeting id");
    let world = env.sandbox.zoom.world().clone();
    let contact = world
        .people
        .iter()
        .position(|p| p.role == CrmRole::Contact)
        .expect("a Contact");
    let uuid = env
        .sandbox
        .zoom
        .end_written_meeting(meeting, &[contact])
        .expect("the meeting ends");
    // The clock passes the meeting's end (the same day, so the Event is still read).
    let end = DateTime::parse_from_str(&s(&event, "EndDateTime"), "%Y-%m-%dT%H:%M:%S%.3f%z")
        .expect("end")
        .with_timezone(&Utc);
    clock.set(end + chrono::Duration::minutes(5));
    let events_before = env.sandbox.salesforce.records("Event").len();

    let r = run(&env, "meetings-to-events").await;
    assert_eq!(r.per_sink.get("scheduled_event"), Some(&1), "{r:#?}");
    let all = env.sandbox.salesforce.records("Event");
    let with_uuid: Vec<&Value> = all
        .iter()
        .filter(|e| s(e, "Zoom_Meeting_UUID__c") == uuid)
        .collect();
    assert_eq!(with_uuid.len(), 1, "one Event for the meeting");
    assert_eq!(
        s(with_uuid[0], "Id"),
        s(&event, "Id"),
        "the Event it came from"
    );
    assert_eq!(
        s(with_uuid[0], "Subject"),
        s(&event, "Subject"),
        "the rep's Subject kept"
    );
    let relations = env.sandbox.salesforce.records("EventRelation");
    assert!(
        relations.iter().any(|x| s(x, "EventId") == s(&event, "Id")),
        "the attendee is related to that Event"
    );
    assert_eq!(
        all.len(),
        events_before + r.per_sink.get("event").copied().unwrap_or(0) as usize,
        "no Event for the Salesforce-born meeting was created"
    );

    // Both directions again: the write-back on the Event costs neither service a write.
    clock.advance(Duration::from_secs(60));
    env.sandbox.zoom.clear_log();
    let mut again = run_reverse(&env).await;
    again.push(run(&env, "meetings-to-events").await);
    assert!(again[2].records_read > 0, "the Event was read again");
    assert_eq!(support::writes(&again), 0, "{again:#?}");
    assert_eq!(zoom_writes(&env), 0);
    let count = env
        .sandbox
        .salesforce
        .records("Event")
        .iter()
        .filter(|e| s(e, "Zoom_Meeting_UUID__c") == uuid)
        .count();
    assert_eq!(count, 1, "never a second Event");
}

fn ferry_run(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.arg("--config")
        .arg(config)
        .arg("run")
        .env("FERRY_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_with_lost_create_answers_never_duplicate_a_meeting_or_registrant() {
    for seed in [1_u64, 2, 3] {
        let clock: SharedClock = ferry::clock::system();
        let env = env(clock, 0).await;
        // Only the reverse pipelines: the Zoom → Salesforce ones have their own crash test.
        let dir = env.dir.path().join("pipelines");
        for (name, _) in ferry::sim::sandbox::EXAMPLE_PIPELINES {
            std::fs::remove_file(dir.join(name)).expect("rm");
        }
        let zoom = &env.sandbox.zoom;
        zoom.fault_next_creates(&[
            CreateFault::Error5xx,
            CreateFault::Reset,
            CreateFault::Reset,
            CreateFault::Error5xx,
            CreateFault::Reset,
        ]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut kills = 0;
        let mut done = false;
        let mut window_ms = 400_u64;
        for attempt in 0..40 {
            let mut child = ferry_run(&env.config).spawn().expect("ferry starts");
            let began = Instant::now();
            // Kill the first attempts at random moments; then let runs finish.
            let kill_at = (attempt < 8).then(|| rng.random_range(0..window_ms));
            let status = loop {
                if let Some(st) = child.try_wait().expect("status") {
                    break Some(st);
                }
                if kill_at.is_some_and(|k| began.elapsed() >= Duration::from_millis(k)) {
                    let _ = child.kill(); // SIGKILL
                    let _ = child.wait();
                    kills += 1;
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            if let Some(st) = status {
                window_ms = window_ms.min((began.elapsed().as_millis() as u64).max(20));
                let members_linked = env
                    .sandbox
                    .salesforce
                    .records("CampaignMember")
                    .iter()
                    .filter(|m| !s(m, "Email").is_empty())
                    .all(|m| !s(m, "Zoom_Join_URL__c").is_empty());
                let linked = members_linked
                    && flagged_events(&env)
                        .iter()
                        .all(|e| !s(e, "Zoom_Meeting_Id__c").is_empty());
                if st.success() && linked && attempt >= 8 {
                    done = true;
                    break;
                }
            }
        }
        assert!(done, "seed {seed}: the runs never finished");
        assert!(kills > 0, "seed {seed}: no run was killed");
        assert!(zoom.creates() > 0);
        assert_one_meeting_per_event(&env);
        assert_one_registration_per_member(&env);
    }
}
