//! `POST /runs/{pipeline}`: a run started over HTTP with the daemon's bearer token, and
//! refused (nothing run) without it.

use crate::support::daemon as daemon_support;

use daemon_support::*;
use std::time::Duration;

const P: &str = "meetings-to-events";

async fn post_run(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starts_over_http_only_with_the_token() {
    let pipeline = meetings_webhook_only();
    let env = Env::new(20, &[("meetings-to-events.yaml", &pipeline)]).await;

    // Off unless ferry.yaml sets a token.
    let h = env.start().await;
    let (status, body) = post_run(&format!("{}/runs/{P}", h.url()), Some("guess")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("daemon.api_token"), "{body}");
    assert!(h.shutdown().await.clean);

    // The token comes from a file, like every secret.
    std::fs::write(env.dir.path().join("secrets/api_token"), "t0ken-for-runs").unwrap();
    let yaml = std::fs::read_to_string(&env.config).unwrap();
    let with_token = yaml.replace(
        "daemon:\n",
        "daemon:\n  api_token: ${file:secrets/api_token}\n",
    );
    assert_ne!(yaml, with_token);
    std::fs::write(&env.config, with_token).unwrap();

    let h = env.start().await;
    let url = format!("{}/runs/{P}", h.url());
    for token in [None, Some("t0ken-for-run"), Some("t0ken-for-runs-and-more")] {
        let (status, body) = post_run(&url, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    let (status, body) =
        post_run(&format!("{}/runs/no-such", h.url()), Some("t0ken-for-runs")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(P), "the known pipelines are named: {body}");
    // A run, had one been started, is marked running under its lock before any request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = h.status();
    assert_eq!(
        s.pipelines[P].last_started, None,
        "a refused request runs nothing"
    );
    assert_eq!(env.count("Event"), 0);

    let (status, body) = post_run(&url, Some("t0ken-for-runs")).await;
    assert_eq!(status, 202, "{body}");
    let s = wait(&h, "the requested run", |s| runs(s, P) >= 1 && idle(s)).await;
    assert_eq!(
        s.pipelines[P].last_trigger,
        Some(ferry::daemon::Trigger::Manual)
    );
    assert!(env.count("Event") > 0, "the run wrote the meetings' Events");
    assert!(h.shutdown().await.clean);
}
