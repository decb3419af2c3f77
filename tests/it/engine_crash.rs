//! Crash safety: `ferry run` killed with SIGKILL at random moments, then run to completion,
//! leaves the Salesforce org exactly as one clean run does: no duplicates, no gaps.

use crate::support;

use chrono::{DurationRound, Utc};
use ferry::clock::SharedClock;
use rand::{Rng, SeedableRng};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::Env;

const MEETINGS: usize = 40;

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

async fn sandbox(end: chrono::DateTime<Utc>) -> Env {
    let clock: SharedClock = ferry::clock::system();
    Env::start(clock, MEETINGS, |o| {
        o.scale.end = end;
        o.scale.users = 4;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_the_org_ends_as_after_one_clean_run() {
    // Both orgs see the same world: one end time for both.
    let end = Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap_or_else(|_| Utc::now());

    // The reference: one clean run.
    let clean = sandbox(end).await;
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let mut cmd = ferry_run(&clean.config);
        move || cmd.output()
    })
    .await
    .expect("join")
    .expect("ferry runs");
    assert!(
        out.status.success(),
        "clean run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean_duration = started.elapsed();
    let expected = clean.org();
    assert!(!expected["Event"].is_empty(), "the clean run wrote Events");

    // The same world, killed ten times at random moments within a run's duration.
    let crashed = sandbox(end).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    let mut killed_mid_run = 0;
    for _ in 0..10 {
        let mut child = ferry_run(&crashed.config).spawn().expect("ferry starts");
        // Early in a run is where most of its writes happen; later runs have less left to do.
        let wait = rng.random_range(0..(clean_duration.as_millis() as u64 / 2).max(1));
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if child.try_wait().expect("child status").is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    assert!(
        killed_mid_run >= 5,
        "most kills must land while a run is in flight (only {killed_mid_run} did)"
    );
    let out = tokio::task::spawn_blocking({
        let mut cmd = ferry_run(&crashed.config);
        move || cmd.output()
    })
    .await
    .expect("join")
    .expect("ferry runs");
    assert!(
        out.status.success(),
        "the final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = crashed.org();
    for (object, want) in &expected {
        let have = &got[object];
        let missing: Vec<_> = want.iter().filter(|r| !have.contains(r)).take(3).collect();
        let extra: Vec<_> = have.iter().filter(|r| !want.contains(r)).take(3).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && have.len() == want.len(),
            "{object}: {} records after crashes, {} after a clean run; missing {missing:?}, extra {extra:?}",
            have.len(),
            want.len()
        );
    }
}
