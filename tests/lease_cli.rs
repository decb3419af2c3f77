//! One pipeline, one runner across processes: `ferry run` (a real second process) started
//! while a daemon runs the same pipeline on the same state file is refused with a clear
//! message, or waits with `--wait`, and the org never gets a record twice.

mod support;

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
