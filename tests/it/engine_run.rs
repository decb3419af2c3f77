//! `ferry run` and `ferry plan` end to end against the simulators: the org ends holding
//! exactly what the pipelines define, a rerun writes nothing, a plan writes nothing and
//! predicts the run.

use crate::support;

use chrono::{TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::Mode;
use ferry::sim::world::Attendee;
use std::collections::{BTreeMap, BTreeSet};
use support::{Env, writes};

fn clock() -> SharedClock {
    ManualClock::auto(
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .expect("time"),
    )
}

fn domain(email: &str) -> String {
    email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_exactly_what_the_pipelines_define_and_a_rerun_writes_nothing() {
    let env = Env::start(clock(), 60, |_| {}).await;
    let first = env.run_all(Mode::Run).await;
    for r in &first {
        assert!(
            r.stopped.is_none(),
            "{} stopped: {:?}",
            r.pipeline,
            r.stopped
        );
    }

    // The oracle: which meetings must have an Event, from the world and the seeded org.
    let sf = &env.sandbox.salesforce;
    let lower = |v: &serde_json::Value, f: &str| {
        v.get(f)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let id = |v: &serde_json::Value| {
        v.get("Id")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    let contacts: BTreeMap<String, String> = sf
        .records("Contact")
        .iter()
        .map(|c| (lower(c, "Email"), id(c)))
        .collect();
    let leads: BTreeMap<String, String> = sf
        .records("Lead")
        .iter()
        .map(|c| (lower(c, "Email"), id(c)))
        .collect();
    let domains: BTreeSet<String> = sf
        .records("Account")
        .iter()
        .map(|a| lower(a, "Website_Domain__c"))
        .collect();
    let world = &env.sandbox.world;
    let mut expected_events = BTreeSet::new();
    let mut expected_relations = 0usize;
    let mut expected_follow_ups = 0usize;
    for m in &world.meetings {
        if !m.in_reports() {
            continue;
        }
        let mut people = BTreeSet::new();
        let mut any = false;
        for p in &m.participants {
            let email = p.email.trim().to_ascii_lowercase();
            if email.is_empty() || matches!(p.attendee, Attendee::Internal(_)) {
                continue;
            }
            if let Some(i) = contacts.get(&email).or_else(|| leads.get(&email)) {
                people.insert(i.clone());
                any = true;
            } else if domains.contains(&domain(&email)) {
                any = true;
            }
        }
        if any {
            expected_events.insert(m.uuid.clone());
            expected_relations += people.len();
            expected_follow_ups += m.summary.as_ref().map(|s| s.next_steps.len()).unwrap_or(0);
        }
    }
    let events: BTreeSet<String> = sf
        .records("Event")
        .iter()
        .map(|e| {
            e.get("Zoom_Meeting_UUID__c")
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        !expected_events.is_empty(),
        "the world has meetings with customers"
    );
    assert_eq!(
        events, expected_events,
        "one Event per meeting with a known outside attendee"
    );
    assert_eq!(sf.records("EventRelation").len(), expected_relations);
    let follow_ups = sf
        .records("Task")
        .iter()
        .filter(|t| {
            t.get("Zoom_Action_Item_Key__c")
                .is_some_and(|v| !v.is_null())
        })
        .count();
    assert_eq!(follow_ups, expected_follow_ups, "one Task per AI next step");
    assert!(
        events
            .iter()
            .any(|u| u.starts_with('/') || u.contains("//")),
        "slash UUIDs are synced too"
    );

    // A second run: nothing new, nothing written.
    let calls_before = sf.calls();
    let org_before = env.org();
    let second = env.run_all(Mode::Run).await;
    assert_eq!(
        writes(&second),
        0,
        "a rerun writes nothing: {:#?}",
        second.iter().map(|r| &r.per_sink).collect::<Vec<_>>()
    );
    let calls_after = sf.calls();
    assert_eq!(calls_after.collections, calls_before.collections);
    assert_eq!(calls_after.composite, calls_before.composite);
    assert_eq!(calls_after.bulk, calls_before.bulk);
    assert_eq!(env.org(), org_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_writes_nothing_moves_no_checkpoint_and_predicts_the_run() {
    let env = Env::start(clock(), 40, |_| {}).await;
    let project = env.project();
    let store = ferry::state::Store::open(&project.config.state).expect("state opens");
    // Pipeline by pipeline, in file order: a later pipeline may read what an earlier one wrote
    // (recordings land on the meetings' Events), so each plan is checked against its own run.
    let names: Vec<String> = project.pipelines.iter().map(|p| p.name.clone()).collect();
    let mut planned_creates = 0;
    for name in &names {
        let org_before = env.org();
        let checkpoints_before = store.checkpoints(None).await.expect("checkpoints");
        let plan = env.run_one(name, Mode::Plan).await;
        assert!(plan.stopped.is_none(), "{name}: {:?}", plan.stopped);
        assert_eq!(
            env.org(),
            org_before,
            "a plan of {name} writes nothing to Salesforce"
        );
        assert_eq!(
            store.checkpoints(None).await.expect("checkpoints"),
            checkpoints_before,
            "a plan of {name} moves no checkpoint"
        );
        planned_creates += plan.summary.create;

        let run = env.run_one(name, Mode::Run).await;
        // Skips are not compared: a sink whose `when` reads a Salesforce value that an
        // earlier batch of the same run changed (the Opportunity's last meeting date) skips
        // more in the run than the plan, which cannot see its own writes in later lookups.
        assert_eq!(
            (
                plan.summary.create,
                plan.summary.update,
                plan.summary.unchanged,
                plan.summary.unmatched
            ),
            (
                run.summary.create,
                run.summary.update,
                run.summary.unchanged,
                run.summary.unmatched
            ),
            "the plan of {name} predicts its run"
        );
        assert_eq!(plan.per_sink, run.per_sink, "per sink, {name}");
        // The plan fills the lookup cache, so the run after it may spend fewer queries.
        assert!(
            plan.summary.api_calls.salesforce >= run.summary.api_calls.salesforce,
            "the plan of {name} does not understate the run's Salesforce calls ({} < {})",
            plan.summary.api_calls.salesforce,
            run.summary.api_calls.salesforce
        );
        // Equal reads, give or take a token renewal or a request retried after a 429 on the
        // test's fast clock (reading ahead keeps more requests in flight, so a second's limit
        // is met at slightly different moments in the two).
        let (pz, rz) = (plan.summary.api_calls.zoom, run.summary.api_calls.zoom);
        assert!(
            pz.abs_diff(rz) <= 4.max(rz / 20),
            "the plan of {name} says how many Zoom calls the run spends ({pz} vs {rz})"
        );
        // After the run, a plan finds nothing to do.
        let again = env.run_one(name, Mode::Plan).await;
        assert_eq!(writes(&[again]), 0, "{name} has nothing left to do");
    }
    assert!(planned_creates > 0, "the plans had work to show");
}
