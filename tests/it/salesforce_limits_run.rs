//! Salesforce's request limits end to end: a run at a few thousand meetings' worth of
//! distinct attendee emails never sends a request over 16,384 bytes and spends about one
//! call per match rule per batch; a Collections chunk that fails as a whole does not make
//! the next run write the chunks before it again.

use crate::support;

use chrono::{TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::Mode;
use support::Env;

fn clock() -> SharedClock {
    ManualClock::auto(
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .expect("time"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_distinct_attendees_stay_within_the_request_limit() {
    let env = Env::start(clock(), 2000, |o| {
        o.scale.companies = 500;
        o.scale.people_per_company = 12;
    })
    .await;
    let sf = &env.sandbox.salesforce;
    let before = sf.calls();
    let r = env.run_one("meetings-to-events", Mode::Run).await;
    assert!(r.stopped.is_none(), "stopped: {:?}", r.stopped);
    let after = sf.calls();
    let longest = sf.longest_request();
    let lookups = (after.query - before.query) + (after.composite - before.composite);
    let batches = r.records_read.div_ceil(500);
    println!(
        "records {} looked_up {} batches {batches}: longest request {} bytes (uri {}), longest subrequest url {} bytes, query calls {}, composite calls {}, collections {}, total {}",
        r.records_read,
        r.summary.looked_up,
        longest.total(),
        longest.uri,
        sf.longest_subrequest_url(),
        after.query - before.query,
        after.composite - before.composite,
        after.collections - before.collections,
        after.api_total() - before.api_total(),
    );
    assert!(r.summary.create > 500, "{:?}", r.summary);
    assert_eq!(sf.oversize_refused(), 0);
    assert!(longest.total() <= 16_384);
    assert!(sf.longest_subrequest_url() <= 16_384);
    // Split lookups went through Composite: one query would have been far over the limit.
    assert!(sf.longest_subrequest_url() > 8_000);
    assert!(after.composite > before.composite);
    // Five match rules (Contact, Lead, Account, User, Opportunity) plus the sinks' reads of
    // existing records: about one call each per batch, a few more where a batch needs more
    // than five queries for one rule.
    assert!(
        lookups <= batches * 12,
        "{lookups} lookup calls for {batches} batches"
    );
}

const TASKS: &str = r#"
pipeline: meeting-tasks
source:
  stream: zoom.past_meetings
  params: { user_id: all }
  since: 2026-01-01T00:00:00Z
sinks:
  task:
    sobject: Task
    action: insert
    key: "{{ record.uuid }}"
    fields:
      Subject: "Zoom {{ record.uuid }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_collections_chunk_keeps_the_chunks_written_before_it() {
    let env = Env::start(clock(), 450, |_| {}).await;
    std::fs::write(env.dir.path().join("pipelines/meeting-tasks.yaml"), TASKS).unwrap();
    let sf = &env.sandbox.salesforce;
    // The first Collections request (200 Tasks) succeeds; the second fails as a whole, 500,
    // however often it is sent.
    sf.set_faults(|f| {
        f.collections_5xx_skip = 1;
        f.collections_5xx_next = 1_000;
    });
    let first = env.run_one("meeting-tasks", Mode::Run).await;
    assert!(first.stopped.is_some(), "the failed chunk stops the run");
    let written = sf.records("Task").len();
    assert_eq!(written, 200, "the first chunk was written");
    assert_eq!(first.summary.create, 200, "{:?}", first.summary);
    sf.set_faults(|f| {
        f.collections_5xx_skip = 0;
        f.collections_5xx_next = 0;
    });
    let second = env.run_one("meeting-tasks", Mode::Run).await;
    assert!(second.stopped.is_none(), "{:?}", second.stopped);
    let tasks = sf.records("Task");
    let mut subjects: Vec<&str> = tasks
        .iter()
        .filter_map(|t| t.get("Subject").and_then(|s| s.as_str()))
        .collect();
    let n = subjects.len();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), n, "no Task was written twice");
    assert_eq!(n as u64, second.records_read, "one Task per meeting");
    assert_eq!(second.summary.create as usize, n - 200);
}
