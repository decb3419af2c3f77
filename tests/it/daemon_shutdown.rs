//! Graceful shutdown: stopping during a run ends it after the batch in flight, and the next
//! start continues so that Salesforce ends exactly as one clean run leaves it.

use crate::support::daemon as daemon_support;

use daemon_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const P: &str = "meetings-to-events";
const MEETING_COUNT: usize = 40;

/// What a pipeline leaves in Salesforce, without the Ids the org assigned.
fn org_state(env: &Env) -> BTreeMap<&'static str, Vec<String>> {
    let sf = &env.sandbox.salesforce;
    let events = sf.records("Event");
    let uuid_of: BTreeMap<String, String> = events
        .iter()
        .map(|e| {
            (
                e["Id"].as_str().unwrap().to_string(),
                e["Zoom_Meeting_UUID__c"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let pick = |r: &Value, fields: &[&str]| -> String {
        fields
            .iter()
            .map(|f| format!("{f}={}", r[*f]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = BTreeMap::new();
    let mut ev: Vec<String> = events
        .iter()
        .map(|e| {
            pick(
                e,
                &[
                    "Zoom_Meeting_UUID__c",
                    "Subject",
                    "StartDateTime",
                    "EndDateTime",
                    "OwnerId",
                    "WhoId",
                    "WhatId",
                    "Description",
                    "Zoom_Recording_URL__c",
                ],
            )
        })
        .collect();
    ev.sort();
    out.insert("Event", ev);
    let mut rel: Vec<String> = sf
        .records("EventRelation")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                uuid_of
                    .get(r["EventId"].as_str().unwrap_or_default())
                    .cloned()
                    .unwrap_or_default(),
                r["RelationId"]
            )
        })
        .collect();
    rel.sort();
    out.insert("EventRelation", rel);
    let mut tasks: Vec<String> = sf
        .records("Task")
        .iter()
        .map(|t| {
            pick(
                t,
                &["Zoom_Action_Item_Key__c", "Subject", "WhoId", "OwnerId"],
            )
        })
        .collect();
    tasks.sort();
    out.insert("Task", tasks);
    let mut opps: Vec<String> = sf
        .records("Opportunity")
        .iter()
        .map(|o| pick(o, &["Name", "Last_Zoom_Meeting__c", "Zoom_Summary__c"]))
        .collect();
    opps.sort();
    out.insert("Opportunity", opps);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_mid_run_loses_nothing_after_a_restart() {
    // The reference: one clean run.
    let clean = Env::new(MEETING_COUNT, &[("meetings-to-events.yaml", MEETINGS)]).await;
    let h = clean.start().await;
    let s = wait(&h, "the clean run", |s| runs(s, P) == 1 && idle(s)).await;
    let r = s.pipelines[P].last_report.clone().unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    assert!(h.shutdown().await.clean);
    let expected = org_state(&clean);
    assert!(expected["Event"].len() > 3, "{expected:?}");

    // The same world, stopped after the first committed batch.
    let env = Env::new(MEETING_COUNT, &[("meetings-to-events.yaml", MEETINGS)]).await;
    let mut o = env.options();
    // Small batches, so the run has several and the stop lands between two of them.
    o.batch_size = Some(10);
    let stop = o.shutdown.clone();
    let batches = Arc::new(AtomicUsize::new(0));
    let b2 = batches.clone();
    o.on_batch = Some(Arc::new(
        move |_: &str, r: &ferry::engine::report::PipelineReport| {
            // The first batch that wrote something: SIGTERM arrives now.
            b2.fetch_add(1, Ordering::SeqCst);
            if r.summary.create > 0 {
                stop.trigger();
            }
        },
    ));
    let h = env.start_with(o).await;
    let s = wait(&h, "the interrupted run", |s| runs(s, P) == 1 && idle(s)).await;
    let r = s.pipelines[P].last_report.clone().unwrap();
    assert!(
        r.stopped
            .as_deref()
            .is_some_and(|w| w.contains("shutting down")),
        "{r:?}"
    );
    assert!(h.shutdown().await.clean, "stopped within the grace period");
    let partial = org_state(&env);
    assert!(
        partial["Event"].len() < expected["Event"].len(),
        "the run stopped early: {} of {} Events",
        partial["Event"].len(),
        expected["Event"].len()
    );
    assert!(!partial["Event"].is_empty());

    // Restart: the interval continues from the recorded start; 15 minutes later it runs.
    let h = env.start().await;
    let s = scheduler_passes(&h, 3).await;
    assert_eq!(runs(&s, P), 0, "not due yet after a restart");
    env.clock.advance(Duration::from_secs(15 * 60));
    let s = wait(&h, "the resumed run", |s| runs(s, P) == 1 && idle(s)).await;
    let r = s.pipelines[P].last_report.clone().unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    assert!(h.shutdown().await.clean);
    assert_eq!(
        org_state(&env),
        expected,
        "the org ends as one clean run leaves it"
    );
}
