//! `ferry daemon` as a process: it serves, and SIGTERM stops it cleanly (exit 0).

use ferry::sim::sandbox::{EXAMPLE_PIPELINES, Sandbox, SandboxOptions};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(unix)]
async fn sigterm_stops_the_daemon_cleanly() {
    // The process uses the system clock, so the simulators do too.
    let mut opts = SandboxOptions::new(ferry::clock::system());
    opts.scale.meetings = 30;
    let sandbox = Sandbox::start(opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox
        .write_project(dir.path(), EXAMPLE_PIPELINES)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&config)
        .args([
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "20",
        ])
        .env("FERRY_LOG", "ferry=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(60), url)
        .await
        .expect("the daemon printed its address")
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("ferry daemon listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["pipelines"].as_array().unwrap().len(),
        EXAMPLE_PIPELINES.len()
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("ferry daemon stopped"), "{stderr}");
    // It stopped taking work: nothing listens any more.
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());
}
