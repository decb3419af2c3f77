//! Schedules on the injected clock: a 15m pipeline runs once per 15 minutes of clock time, a
//! cron pipeline at its minute, and never two runs of one pipeline at once.

use crate::support::daemon as daemon_support;

use chrono::{Duration as ChronoDuration, Timelike};
use daemon_support::*;
use ferry::clock::Clock;
use std::time::Duration;

const P: &str = "meetings-to-events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_fifteen_minutes_runs_a_15m_pipeline_exactly_once() {
    let env = Env::new(20, &[("meetings-to-events.yaml", MEETINGS)]).await;
    let h = env.start().await;
    // Never run before: it runs at start.
    let s = wait(&h, "the first run", |s| runs(s, P) == 1 && idle(s)).await;
    let first = s.pipelines[P].last_started.unwrap();
    assert_eq!(
        s.pipelines[P].last_trigger,
        Some(ferry::daemon::Trigger::Schedule)
    );
    assert_eq!(
        s.pipelines[P].next_run,
        Some(first + ChronoDuration::minutes(15))
    );
    assert!(env.count("Event") > 0, "the first run wrote Events");

    // Nothing more while the clock stands still.
    let s = scheduler_passes(&h, 5).await;
    assert_eq!(runs(&s, P), 1);

    // 14 minutes: not yet.
    env.clock.advance(Duration::from_secs(14 * 60));
    let s = scheduler_passes(&h, 5).await;
    assert_eq!(runs(&s, P), 1, "not due before 15 minutes");

    // One more minute: exactly one run.
    env.clock.advance(Duration::from_secs(60));
    let s = wait(&h, "the second run", |s| runs(s, P) == 2 && idle(s)).await;
    let second = s.pipelines[P].last_started.unwrap();
    assert!(second >= first + ChronoDuration::minutes(15));
    let s2 = scheduler_passes(&h, 5).await;
    assert_eq!(runs(&s2, P), 2, "one run per 15 minutes, not more");
    assert_eq!(
        s2.pipelines[P].next_run,
        Some(second + ChronoDuration::minutes(15))
    );
    // Nothing new in Zoom: the second run wrote nothing.
    let r = s.pipelines[P].last_report.clone().unwrap();
    assert_eq!(r.summary.create + r.summary.update, 0, "{r:?}");

    // Run history is in the state file.
    let history = h.store().runs(Some(P), 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|r| r.ok == Some(true)));
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_fires_at_its_minute() {
    let hosts = HOSTS.replace("schedule: 1d", "schedule: \"40 * * * *\"");
    assert_ne!(hosts, HOSTS);
    let env = Env::new(10, &[("zoom-hosts-report.yaml", &hosts)]).await;
    let name = "zoom-hosts-report";
    let h = env.start().await;
    let start = env.clock.now();
    let due = start
        .with_minute(40)
        .and_then(|t| t.with_second(0))
        .unwrap();
    assert!(due > start);
    let s = wait(&h, "the first pass", |s| s.scheduler_passes >= 1).await;
    assert_eq!(s.pipelines[name].next_run, Some(due));
    assert_eq!(runs(&s, name), 0, "a cron pipeline waits for its minute");

    env.clock.set(due - ChronoDuration::seconds(1));
    let s = scheduler_passes(&h, 5).await;
    assert_eq!(runs(&s, name), 0, "not a second early");

    env.clock.set(due);
    let s = wait(&h, "the cron run", |s| runs(s, name) == 1 && idle(s)).await;
    let started = s.pipelines[name].last_started.unwrap();
    assert_eq!(started, due);
    assert_eq!(
        s.pipelines[name].next_run,
        Some(due + ChronoDuration::hours(1))
    );
    let r = s.pipelines[name].last_report.clone().unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    assert!(r.records_read > 0);
    let s = scheduler_passes(&h, 5).await;
    assert_eq!(runs(&s, name), 1);
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_waits_for_the_scheduled_one() {
    let env = Env::new(20, &[("meetings-to-events.yaml", MEETINGS)]).await;
    let h = env.start().await;
    // The scheduled run at start and this manual one share the pipeline's lock.
    let report = h.run_now(P).await.unwrap();
    assert!(report.stopped.is_none(), "{report:?}");
    wait(&h, "both runs", |s| runs(s, P) == 2 && idle(s)).await;
    let history = h.store().runs(Some(P), 10).await.unwrap();
    assert_eq!(history.len(), 2);
    let (newer, older) = (&history[0], &history[1]);
    assert!(
        older.finished_at.unwrap() <= newer.started_at,
        "runs overlapped: {history:?}"
    );
    // One of them wrote the Events, the other found them written.
    let reports: Vec<_> = history.iter().map(|r| r.summary.clone().unwrap()).collect();
    let created: Vec<u64> = reports
        .iter()
        .map(|s| s["create"].as_u64().unwrap())
        .collect();
    assert!(
        created.contains(&0) && created.iter().any(|c| *c > 0),
        "{reports:?}"
    );
    assert!(h.shutdown().await.clean);
}
