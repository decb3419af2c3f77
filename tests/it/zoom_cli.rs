//! `ferry streams` and `ferry read` against the simulator.

use ferry::connectors::zoom::ZoomPlan;
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{Faults, SimOptions, ZoomSim};
use std::process::Command;
use std::sync::Arc;

#[test]
fn streams_lists_and_describes() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("streams")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("zoom.past_meetings") && text.contains("incremental"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["streams", "zoom.past_meetings"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("/report/users/{user_id}/meetings") && text.contains("heavy"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["streams", "past_meeting_participant"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_prints_json_lines() {
    let world = Arc::new(World::generate(
        5,
        Scale {
            end: chrono::Utc::now(),
            ..Scale::small()
        },
    ));
    let sim = ZoomSim::start(SimOptions {
        world: world.clone(),
        clock: ferry::clock::system(),
        plan: ZoomPlan::Pro,
        faults: Faults::default(),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ferry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "connections:\n  zoom:\n    kind: zoom\n    auth:\n      type: server_to_server\n      account_id: {}\n      client_id: {}\n      client_secret: ${{file:zoom_secret}}\n    base_url: {}\n    token_url: {}\n    plan: pro\n    headroom: 0.8\n",
            sim.account_id, sim.client_id, sim.base_url, sim.token_url
        ),
    )
    .unwrap();
    // A secret in a file, as `ferry sandbox` writes them: `read` resolves ferry.yaml as
    // every other command does.
    std::fs::write(
        dir.path().join("zoom_secret"),
        ferry::sim::zoom::CLIENT_SECRET,
    )
    .unwrap();
    let since = (chrono::Utc::now() - chrono::Duration::days(20)).to_rfc3339();
    let cfg_for_since = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "read",
                "zoom.past_meetings",
                "--param",
                "user_id=all",
                "--since",
                &since,
                "--limit",
                "3",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|r| r["uuid"].is_string() && r["participants_count"].as_u64().unwrap() >= 2)
    );

    // `--since` takes a pipeline's forms; a start beyond Zoom's six months begins at the
    // horizon (the simulator refuses such a window, as Zoom does); a bad value is a usage
    // error (exit 2) in plain words.
    let date = (chrono::Utc::now() - chrono::Duration::days(20))
        .format("%Y-%m-%d")
        .to_string();
    let read_since = move |since: String| {
        let cfg = cfg_for_since.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args([
                    "--config",
                    cfg.to_str().unwrap(),
                    "read",
                    "zoom.past_meetings",
                    "--param",
                    "user_id=all",
                    "--since",
                    &since,
                    "--limit",
                    "2",
                ])
                .output()
                .unwrap()
        }
    };
    let out = tokio::task::spawn_blocking(read_since(date)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let out = tokio::task::spawn_blocking(read_since("2020-01-01".into()))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("six months"), "{err}");
    assert!(!err.contains("Some("), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let out = tokio::task::spawn_blocking(read_since("last tuesday".into()))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`last tuesday` is not a time"), "{err}");
}
