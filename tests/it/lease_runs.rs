//! One pipeline, one runner across processes: `ferry run` (a real second process) started
//! while a daemon runs the same pipeline on the same state file is refused with a clear
//! message, or waits with `--wait`, and the org never gets a record twice.

use crate::support;

use ferry::daemon::{Daemon, DaemonHandle, DaemonOptions};
use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Env;

const PIPELINE: &str = "meetings-to-events";
const WAIT: Duration = Duration::from_secs(90);

async fn ferry_run(config: &std::path::Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.arg("--config")
        .arg(config)
        .arg("run")
        .arg(PIPELINE)
        .args(extra)
        .env("FERRY_LOG", "error");
    tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("join")
        .expect("ferry starts")
}

/// A daemon whose run of the pipeline stops after its first batch until `release` is sent
/// (the batch hook blocks), and tells `started` when it got there.
async fn daemon_paused_mid_run(env: &Env) -> (DaemonHandle, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((started_tx, release_rx))));
    let mut o = DaemonOptions::new(env.clock.clone());
    o.listen_override = Some("127.0.0.1:0".into());
    o.watch = false;
    o.tick = Duration::from_millis(20);
    o.batch_size = Some(5);
    o.on_batch = Some(Arc::new(move |pipeline: &str, _r| {
        if pipeline != PIPELINE {
            return;
        }
        // Only the first batch waits.
        let taken = gate.lock().unwrap().take();
        if let Some((started, release)) = taken {
            let _ = started.send(());
            let _ = release.recv_timeout(WAIT);
        }
    }));
    let h = Daemon::start(&env.config, o).await.expect("daemon starts");
    (h, started_rx, release_tx)
}

async fn wait_started(rx: mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT))
        .await
        .expect("join")
        .expect("the daemon's run reached its first batch");
}

/// Events per meeting UUID: each meeting is one Event, never two.
fn assert_no_duplicate_events(env: &Env) -> usize {
    let events = env.sandbox.salesforce.records("Event");
    let uuids: Vec<String> = events
        .iter()
        .filter_map(|e| e.get("Zoom_Meeting_UUID__c")?.as_str().map(str::to_string))
        .collect();
    let distinct: BTreeSet<&String> = uuids.iter().collect();
    assert_eq!(
        distinct.len(),
        uuids.len(),
        "an Event was written twice for one meeting"
    );
    assert_eq!(
        uuids.len(),
        events.len(),
        "every Event has its meeting UUID"
    );
    events.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn ferry_run_is_refused_while_the_daemon_runs_the_pipeline() {
    // Both processes read the system clock, as the lease's expiry does.
    let env = Env::start(ferry::clock::system(), 40, |o| o.scale.users = 4).await;
    let (h, started, release) = daemon_paused_mid_run(&env).await;
    wait_started(started).await;

    let out = ferry_run(&env.config, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "pipeline `{PIPELINE}` is being run by process {}",
            std::process::id()
        )),
        "says who holds it: {stderr}"
    );
    assert!(stderr.contains("since "), "{stderr}");
    assert!(stderr.contains("lease expires at"), "{stderr}");
    assert!(stderr.contains("--wait"), "{stderr}");
    assert!(!stderr.contains("Some("), "{stderr}");
    // It wrote nothing: the Events so far are the daemon's first batch at most.
    let during = assert_no_duplicate_events(&env);

    let _ = release.send(());
    let status = h
        .wait_until(WAIT, |s| {
            s.pipelines
                .get(PIPELINE)
                .is_some_and(|p| p.runs_finished >= 1)
        })
        .await
        .expect("the daemon's run finished");
    let report = status.pipelines[PIPELINE].last_report.clone().unwrap();
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    let after_daemon = assert_no_duplicate_events(&env);
    assert!(after_daemon >= during && after_daemon > 0);
    assert!(h.shutdown().await.clean);

    // With the daemon gone, `ferry run` takes the released lease and finds nothing new.
    let out = ferry_run(&env.config, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(assert_no_duplicate_events(&env), after_daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn ferry_run_with_wait_runs_once_the_daemon_is_done() {
    let env = Env::start(ferry::clock::system(), 20, |o| o.scale.users = 3).await;
    let (h, started, release) = daemon_paused_mid_run(&env).await;
    wait_started(started).await;

    let config = env.config.clone();
    let waiting = tokio::spawn(async move { ferry_run(&config, &["--wait", "60"]).await });
    // Let it find the lease held, then let the daemon finish.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "ferry run --wait did not wait");
    let _ = release.send(());
    let out = waiting.await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(assert_no_duplicate_events(&env) > 0);
    assert!(h.shutdown().await.clean);
}

fn auto_clock() -> Arc<ferry::clock::ManualClock> {
    use chrono::TimeZone;
    ferry::clock::ManualClock::auto(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
            .single()
            .expect("time"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_taken_over_stops_without_moving_the_checkpoint() {
    use ferry::engine::{Engine, Mode, RunOptions};
    let env = Env::start(auto_clock(), 40, |o| o.scale.users = 4).await;
    let project = env.project();
    let conns = env.connect(&project).await;
    let store = conns.store.clone();
    let ttl = ferry::state::DEFAULT_LEASE_TTL;
    let lease = store
        .try_acquire(PIPELINE, "runner-a:1:1:aa", ttl)
        .await
        .unwrap()
        .unwrap();

    // After the first batch, another runner takes the pipeline over (as if this one had
    // stalled past its lease).
    type Seen = (Vec<ferry::state::CheckpointRow>, u64);
    let seen: Arc<Mutex<Option<Seen>>> = Arc::new(Mutex::new(None));
    let mut opts = RunOptions::new(Mode::Run);
    opts.batch_size = 5;
    opts.lease = Some(lease.clone());
    {
        let store = store.clone();
        let seen = seen.clone();
        let lease = lease.clone();
        opts.progress = Some(Arc::new(move |_r| {
            let mut s = seen.lock().unwrap();
            if s.is_some() {
                return;
            }
            // The progress callback is synchronous: wait for the store on this worker.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let cps = store.checkpoints(Some(PIPELINE)).await.unwrap();
                    let written: u64 = store
                        .ledger_counts(Some(PIPELINE))
                        .await
                        .unwrap()
                        .iter()
                        .map(|c| c.written)
                        .sum();
                    *s = Some((cps, written));
                    let held = store.lease_holder(PIPELINE).await.unwrap().expect("held");
                    assert_eq!(held.fence, lease.fence);
                    store
                        .take_over(&held, "runner-b:2:2:bb", ttl)
                        .await
                        .unwrap()
                        .expect("taken over");
                })
            });
        }));
    }
    let settings = serde_json::Value::Object(project.config.settings.clone());
    let engine = Engine {
        store: &conns.store,
        source: &conns.zoom,
        matcher: &conns.salesforce,
        sink: &conns.salesforce,
        zoom: Some(&conns.zoom.conn),
        settings: &settings,
        now: env.clock.now(),
    };
    let p = project.pipeline(PIPELINE).unwrap();
    let report = engine.run(p, &opts).await;

    let stopped = report.stopped.clone().expect("the run stopped");
    assert!(
        stopped.contains("another runner took over pipeline `meetings-to-events`")
            && stopped.contains("process 2 on host runner-b")
            && stopped.contains("checkpoint did not move"),
        "{stopped}"
    );
    let (cps_after_first, written_after_first) = seen.lock().unwrap().clone().unwrap();
    // The checkpoint is where the first batch (under the lease) left it ...
    assert_eq!(
        store.checkpoints(Some(PIPELINE)).await.unwrap(),
        cps_after_first
    );
    // ... while what the second batch wrote is in the ledger (so no run writes it again).
    let written: u64 = store
        .ledger_counts(Some(PIPELINE))
        .await
        .unwrap()
        .iter()
        .map(|c| c.written)
        .sum();
    assert!(
        written > written_after_first,
        "the second batch's writes are in the ledger ({written} vs {written_after_first})"
    );
    // The new holder keeps its lease.
    assert_eq!(
        store
            .lease_holder(PIPELINE)
            .await
            .unwrap()
            .map(|h| h.holder),
        Some("runner-b:2:2:bb".to_string())
    );

    // Once the other runner is done, a full run from the kept checkpoint writes no duplicate.
    let l = store.lease_holder(PIPELINE).await.unwrap().unwrap();
    store
        .release(&ferry::state::Lease {
            pipeline: l.pipeline,
            holder: l.holder,
            fence: l.fence,
            acquired_at: l.since,
            expires_at: l.expires_at,
        })
        .await
        .unwrap();
    let report = env.run_one(PIPELINE, Mode::Run).await;
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    assert_no_duplicate_events(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_skips_a_scheduled_run_another_process_holds() {
    let env = Env::start(auto_clock(), 10, |o| o.scale.users = 2).await;
    // Another process (on another host: never taken for dead) holds the pipeline.
    let project = env.project();
    let other = ferry::state::Store::open(&project.config.state)
        .unwrap()
        .with_clock(env.clock.clone());
    let theirs = other
        .try_acquire(
            PIPELINE,
            "elsewhere:77:1:00",
            ferry::state::DEFAULT_LEASE_TTL,
        )
        .await
        .unwrap()
        .unwrap();

    let mut o = DaemonOptions::new(env.clock.clone());
    o.listen_override = Some("127.0.0.1:0".into());
    o.watch = false;
    o.tick = Duration::from_millis(10);
    let h = Daemon::start(&env.config, o).await.expect("daemon starts");
    // The scheduler passes over the due pipeline several times; it never runs it.
    let from = h.status().scheduler_passes;
    h.wait_until(WAIT, |s| s.scheduler_passes >= from + 5)
        .await
        .expect("scheduler passes");
    let s = h.status();
    let ps = s.pipelines.get(PIPELINE).cloned().unwrap_or_default();
    assert_eq!(ps.runs_finished, 0);
    assert!(!ps.running);
    assert_eq!(env.sandbox.salesforce.records("Event").len(), 0);

    // A manual run says who holds it.
    let report = h.run_now(PIPELINE).await.expect("a report");
    let why = report.stopped.expect("refused");
    assert!(why.contains("process 77 on host elsewhere"), "{why}");

    // Released: the manual run goes ahead.
    other.release(&theirs).await.unwrap();
    let report = h.run_now(PIPELINE).await.expect("a report");
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    assert!(assert_no_duplicate_events(&env) > 0);
    assert!(h.shutdown().await.clean);
}
