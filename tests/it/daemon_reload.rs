//! Hot reload: a valid edit of a pipeline file changes the next run's output; a broken edit
//! keeps the previous version running and /healthz names the file in error.

use crate::support::daemon as daemon_support;

use daemon_support::*;

const P: &str = "meetings-to-events";

/// Replaces a file the way editors save: write a new file, rename it over the old one.
fn save(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("yaml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn subjects(env: &Env) -> Vec<String> {
    env.sandbox
        .salesforce
        .records("Event")
        .iter()
        .map(|e| e["Subject"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_to_the_next_run_and_broken_files_keep_the_old_version() {
    // No schedule (runs are triggered by hand), and a lookback that re-reads every meeting.
    let v1 = MEETINGS
        .replace("schedule: 15m\n", "")
        .replace("lookback: 2h", "lookback: 90d");
    assert!(v1.contains("lookback: 90d"));
    let env = Env::new(20, &[("meetings-to-events.yaml", &v1)]).await;
    let file = env.pipeline_path("meetings-to-events.yaml");
    let h = env.start().await;

    let r = h.run_now(P).await.unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    let before = subjects(&env);
    assert!(!before.is_empty());
    assert!(before.iter().all(|s| s.starts_with("Zoom: ")), "{before:?}");

    // A valid edit: the Subject template changes.
    let v2 = v1.replace("Subject: \"Zoom: {{", "Subject: \"Call: {{");
    assert_ne!(v2, v1);
    save(&file, &v2);
    wait(&h, "the reload", |s| s.reloads >= 1).await;
    let r = h.run_now(P).await.unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    assert_eq!(
        r.per_sink.get("event").copied().unwrap_or(0) as usize,
        before.len(),
        "{r:?}"
    );
    let after = subjects(&env);
    assert_eq!(after.len(), before.len(), "updated, not duplicated");
    assert!(after.iter().all(|s| s.starts_with("Call: ")), "{after:?}");

    // A broken edit: a YAML typo. The previous version keeps running.
    let broken = v2.replace("sinks:\n  event:\n", "sinks:\n  event\n    - [\n");
    assert_ne!(broken, v2);
    save(&file, &broken);
    let s = wait(&h, "the refused reload", |s| s.reload_failures >= 1).await;
    assert!(!s.files_in_error.is_empty());
    let (status, body) = get(&format!("{}/healthz", h.url())).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Alive (200), but not ready: the body says so, and /readyz answers 503.
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["ready"], false);
    let files: Vec<&str> = health["files_in_error"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("meetings-to-events.yaml")),
        "{health}"
    );
    assert!(
        health["problems"][0]["line"].as_u64().unwrap() > 0,
        "{health}"
    );
    assert_eq!(health["pipelines"], serde_json::json!([P]));
    let (_, page) = get(&h.url()).await;
    assert!(page.contains("Files in error") && page.contains("meetings-to-events.yaml"));

    let r = h.run_now(P).await.unwrap();
    assert!(
        r.stopped.is_none(),
        "the previous version still runs: {r:?}"
    );
    assert!(r.records_read > 0);
    assert_eq!(
        r.summary.create + r.summary.update,
        0,
        "still the Call: version"
    );
    assert!(subjects(&env).iter().all(|s| s.starts_with("Call: ")));

    // Fixed again: the error clears and the new version runs.
    let v3 = v1.replace("Subject: \"Zoom: {{", "Subject: \"Meeting: {{");
    save(&file, &v3);
    let s = wait(&h, "the second reload", |s| s.reloads >= 2).await;
    assert!(s.files_in_error.is_empty());
    let (_, body) = get(&format!("{}/healthz", h.url())).await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["files_in_error"], serde_json::json!([]));
    let r = h.run_now(P).await.unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    assert!(subjects(&env).iter().all(|s| s.starts_with("Meeting: ")));
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_edit_moves_the_next_run() {
    let env = Env::new(20, &[("meetings-to-events.yaml", MEETINGS)]).await;
    let file = env.pipeline_path("meetings-to-events.yaml");
    let h = env.start().await;
    let s = wait(&h, "the first run", |s| runs(s, P) == 1 && idle(s)).await;
    let first = s.pipelines[P].last_started.unwrap();
    assert_eq!(
        s.pipelines[P].next_run,
        Some(first + chrono::Duration::minutes(15))
    );
    save(&file, &MEETINGS.replace("schedule: 15m", "schedule: 1h"));
    let s = wait(&h, "the new schedule", |s| {
        s.reloads >= 1 && s.pipelines[P].next_run == Some(first + chrono::Duration::hours(1))
    })
    .await;
    assert_eq!(runs(&s, P), 1);
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_keeps_the_version_it_started_with() {
    let v1 = MEETINGS.replace("lookback: 2h", "lookback: 90d");
    let env = Env::new(30, &[("meetings-to-events.yaml", &v1)]).await;
    let file = env.pipeline_path("meetings-to-events.yaml");
    // The first batch of the first run pauses until the test has reloaded the file.
    let (reached_tx, reached_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(Some((reached_tx, go_rx)));
    let mut o = env.options();
    o.on_batch = Some(std::sync::Arc::new(
        move |_: &str, _: &ferry::engine::report::PipelineReport| {
            if let Some((reached, go)) = gate.lock().unwrap().take() {
                reached.send(()).unwrap();
                go.recv_timeout(WAIT).unwrap();
            }
        },
    ));
    let h = env.start_with(o).await;
    tokio::task::spawn_blocking(move || reached_rx.recv_timeout(WAIT).unwrap())
        .await
        .unwrap();
    save(
        &file,
        &v1.replace("Subject: \"Zoom: {{", "Subject: \"Call: {{"),
    );
    wait(&h, "the reload", |s| s.reloads >= 1).await;
    go_tx.send(()).unwrap();
    let s = wait(&h, "the first run", |s| runs(s, P) == 1 && idle(s)).await;
    let r = s.pipelines[P].last_report.clone().unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    let first = subjects(&env);
    assert!(first.len() > 1);
    assert!(
        first.iter().all(|s| s.starts_with("Zoom: ")),
        "batches after the reload still used the run's version: {first:?}"
    );
    let r = h.run_now(P).await.unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    let next = subjects(&env);
    assert_eq!(next.len(), first.len());
    assert!(next.iter().all(|s| s.starts_with("Call: ")), "{next:?}");
    assert!(h.shutdown().await.clean);
}

/// The `ferry_salesforce_budget_limit` line of /metrics.
async fn budget_limit(h: &ferry::daemon::DaemonHandle) -> Option<String> {
    let (_, m) = get(&format!("{}/metrics", h.url())).await;
    m.lines()
        .find(|l| l.starts_with("ferry_salesforce_budget_limit "))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_connections_connect_again_without_a_restart_and_bad_ones_are_refused() {
    let env = Env::new(10, &[("meetings-to-events.yaml", &meetings_webhook_only())]).await;
    let h = env.start().await;
    assert_eq!(
        budget_limit(&h).await.as_deref(),
        Some("ferry_salesforce_budget_limit 5000")
    );

    // A changed connection setting takes effect without a restart.
    let yaml = std::fs::read_to_string(&env.config).unwrap();
    let v2 = yaml.replace("daily_budget: 5000", "daily_budget: 4242");
    assert_ne!(yaml, v2);
    save(&env.config, &v2);
    wait(&h, "the connections' reload", |s| s.connection_reloads >= 1).await;
    assert_eq!(
        budget_limit(&h).await.as_deref(),
        Some("ferry_salesforce_budget_limit 4242")
    );

    // A secret Salesforce refuses: the new connection cannot log in, so the working one
    // stays and runs go on with it.
    let secret = env.dir.path().join("secrets/salesforce_client_secret");
    let good = std::fs::read_to_string(&secret).unwrap();
    std::fs::write(&secret, "not-the-secret").unwrap();
    save(
        &env.config,
        &v2.replace("daily_budget: 4242", "daily_budget: 4243"),
    );
    let s = wait(&h, "the refused reload", |s| {
        s.connection_reload_failures >= 1
    })
    .await;
    assert_eq!(s.connection_reloads, 1);
    let (_, health) = get(&format!("{}/healthz", h.url())).await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let why = health["connection_error"].as_str().unwrap_or_default();
    assert!(why.contains("Salesforce"), "{health}");
    assert!(
        !why.contains("not-the-secret"),
        "no secret in the error: {why}"
    );
    let (_, page) = get(&h.url()).await;
    assert!(page.contains("id=\"connection-error\""), "{page}");
    assert_eq!(
        budget_limit(&h).await.as_deref(),
        Some("ferry_salesforce_budget_limit 4242")
    );
    let r = h.run_now(P).await.unwrap();
    assert!(r.stopped.is_none(), "{r:?}");
    assert!(env.count("Event") > 0);

    // The secret file put right (ferry.yaml untouched): the daemon watches the files
    // `${file:...}` reads, and connects.
    std::fs::write(&secret, good).unwrap();
    let s = wait(&h, "the second reload", |s| s.connection_reloads >= 2).await;
    assert_eq!(s.connection_error, None);
    assert_eq!(
        budget_limit(&h).await.as_deref(),
        Some("ferry_salesforce_budget_limit 4243")
    );
    assert!(h.shutdown().await.clean);
}
