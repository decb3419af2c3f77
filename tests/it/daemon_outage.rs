//! The daemon through long outages, on the driven clock: webhook events are retried for a
//! day and then kept as dead letters an admin can retry; a pipeline stopped at the daily
//! budget resumes when the rolling window frees calls; only known Host names are answered.

use crate::support::daemon as daemon_support;

use daemon_support::*;
use ferry::clock::Clock;
use ferry::state::{InboxEntry, Store};
use std::process::Command;
use std::time::Duration;

const P: &str = "meetings-to-events";

/// The only event in the inbox.
async fn entry(h: &ferry::daemon::DaemonHandle) -> InboxEntry {
    let all = h.store().inbox_list(false, 10).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].clone()
}

/// Waits (real time) until the inbox event satisfies `cond`.
async fn event_becomes(
    h: &ferry::daemon::DaemonHandle,
    what: &str,
    cond: impl Fn(&InboxEntry) -> bool,
) -> InboxEntry {
    for _ in 0..3000 {
        let e = entry(h).await;
        if cond(&e) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}: {:?}", entry(h).await);
}

fn salesforce_down(env: &Env, down: bool) {
    env.sandbox
        .salesforce
        .set_faults(|f| f.http_5xx_next = if down { u32::MAX } else { 0 });
}

/// Moves the driven clock past the event's next attempt and waits for that attempt.
async fn next_attempt(env: &Env, h: &ferry::daemon::DaemonHandle) -> InboxEntry {
    let e = entry(h).await;
    let at = e.next_attempt.expect("a retry time");
    let now = env.clock.now();
    if at > now {
        env.clock
            .advance((at - now).to_std().unwrap() + Duration::from_secs(1));
    }
    let tries = e.attempts;
    event_becomes(h, "the next attempt", move |e| {
        e.attempts > tries || e.state != "retrying"
    })
    .await
}

fn ferry_cli(env: &Env, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_during_a_two_hour_salesforce_outage_is_written_when_it_comes_back() {
    let pipeline = meetings_webhook_only();
    let env = Env::new(20, &[("meetings-to-events.yaml", &pipeline)]).await;
    let h = env.start().await;
    let m = env.meetings_with_a_contact()[0].clone();
    salesforce_down(&env, true);
    let t_down = env.clock.now();
    let event = meeting_ended(&m, env.world(), env.clock.now());
    assert_eq!(deliver(&env, &h, &event).await, 200);
    let e = event_becomes(&h, "the first failure", |e| e.attempts >= 1).await;
    assert_eq!(e.state, "retrying", "{e:?}");
    assert!(e.last_error.is_some());
    // Retried while Salesforce stays down for two hours.
    while env.clock.now() - t_down < chrono::Duration::hours(2) {
        let e = next_attempt(&env, &h).await;
        assert_eq!(e.state, "retrying", "{e:?}");
    }
    let last = entry(&h).await;
    assert!(last.attempts >= 5, "{last:?}");
    let (_, metrics) = get(&format!("{}/metrics", h.url())).await;
    assert!(
        metrics.contains("ferry_inbox_events{state=\"retrying\"} 1"),
        "{metrics}"
    );
    assert!(
        env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid)
            .is_empty()
    );
    // Salesforce is back: the next attempt writes the meeting's Event.
    salesforce_down(&env, false);
    let e = next_attempt(&env, &h).await;
    assert_eq!(e.state, "done", "{e:?}");
    assert_eq!(
        env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid).len(),
        1
    );
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_succeeds_is_a_dead_letter_after_a_day_and_an_admin_retries_it() {
    let pipeline = meetings_webhook_only();
    let env = Env::new(20, &[("meetings-to-events.yaml", &pipeline)]).await;
    let h = env.start().await;
    let m = env.meetings_with_a_contact()[0].clone();
    salesforce_down(&env, true);
    let received = env.clock.now();
    let event = meeting_ended(&m, env.world(), env.clock.now());
    assert_eq!(deliver(&env, &h, &event).await, 200);
    event_becomes(&h, "the first failure", |e| e.attempts >= 1).await;
    let dead = loop {
        let e = next_attempt(&env, &h).await;
        if e.state == "dead" {
            break e;
        }
        assert_eq!(e.state, "retrying");
        assert!(env.clock.now() - received < chrono::Duration::hours(26));
    };
    // Retried for at least a day from receipt, then given up.
    assert!(env.clock.now() - received >= chrono::Duration::hours(24));
    assert!(dead.attempts > 20, "{dead:?}");
    let (_, metrics) = get(&format!("{}/metrics", h.url())).await;
    assert!(
        metrics.contains("ferry_inbox_events{state=\"dead\"} 1"),
        "{metrics}"
    );
    let (_, page) = get(&h.url()).await;
    assert!(page.contains("1 dead"), "{page}");
    let (_, health) = get(&format!("{}/healthz", h.url())).await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["inbox"]["dead"], 1);

    // The admin sees it, reads it (no secrets, no emails), and re-queues it.
    let (code, list) = ferry_cli(&env, &["inbox", "list", "--dead"]);
    assert_eq!(code, 0, "{list}");
    assert!(
        list.contains("meeting.ended") && list.contains("dead"),
        "{list}"
    );
    let (code, shown) = ferry_cli(&env, &["inbox", "show", &dead.id.to_string()]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains(&m.uuid), "{shown}");
    assert!(
        !shown.contains("http://127.0.0.1"),
        "no request URLs: {shown}"
    );
    salesforce_down(&env, false);
    // The admin takes a few minutes (Salesforce's circuit, opened by the failures, cools down).
    env.clock.advance(Duration::from_secs(300));
    let (code, out) = ferry_cli(&env, &["inbox", "retry", &dead.id.to_string()]);
    assert_eq!(code, 0, "{out}");
    // The running daemon picks it up and writes it.
    let e = event_becomes(&h, "the retried event's run", |e| e.state == "done").await;
    assert_eq!(e.id, dead.id);
    assert_eq!(
        env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid).len(),
        1
    );
    let (code, out) = ferry_cli(&env, &["inbox", "retry", "999999"]);
    assert_ne!(code, 0, "{out}");
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_stopped_at_the_daily_budget_resumes_when_the_window_frees_calls() {
    let daily = MEETINGS.replace("schedule: 15m", "schedule: 1d");
    assert_ne!(daily, MEETINGS);
    let env = Env::new(20, &[("meetings-to-events.yaml", &daily)]).await;
    // ferry spent its whole daily_budget (5000) 23 hours ago.
    std::fs::create_dir_all(env.state_path().parent().unwrap()).unwrap();
    {
        let store = Store::open(&env.state_path()).unwrap();
        let at = env.clock.now() - chrono::Duration::hours(23);
        let calls = vec![at; 5000];
        store
            .token_put(
                "salesforce:call_log",
                &serde_json::to_string(&calls).unwrap(),
                None,
            )
            .await
            .unwrap();
    }
    let t0 = env.clock.now();
    let h = env.start().await;
    let s = wait(&h, "the first run", |s| runs(s, P) >= 1 && idle(s)).await;
    let ps = &s.pipelines[P];
    let stopped = ps.last_report.as_ref().unwrap().stopped.clone();
    assert!(
        stopped.as_deref().is_some_and(|w| w.contains("budget")),
        "{stopped:?}"
    );
    assert_eq!(env.count("Event"), 0);
    let resume = ps.resume_at.expect("a time to resume");
    assert_eq!(resume, t0 + chrono::Duration::hours(1));
    // Well before the next scheduled run (a day later): the status shows the resume time.
    let s = scheduler_passes(&h, 2).await;
    assert_eq!(s.pipelines[P].next_run, Some(resume));
    // Nothing starts before the window frees calls.
    env.clock.advance(Duration::from_secs(1800));
    scheduler_passes(&h, 3).await;
    assert_eq!(runs(&h.status(), P), 1);
    // An hour on, the 23-hour-old calls leave the window: the run resumes without a restart.
    env.clock.advance(Duration::from_secs(1801));
    let s = wait(&h, "the resumed run", |s| runs(s, P) >= 2 && idle(s)).await;
    let report = s.pipelines[P].last_report.clone().unwrap();
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    assert!(env.count("Event") > 0);
    assert_eq!(s.pipelines[P].resume_at, None);
    assert!(h.shutdown().await.clean);
}

/// A raw HTTP/1.1 GET with the given Host; the status code.
async fn get_with_host(addr: std::net::SocketAddr, path: &str, host: &str) -> (u16, String) {
    get_with(addr, path, host, "").await
}

/// A raw HTTP/1.1 GET with the given Host and extra header lines (each ending in CRLF).
async fn get_with(
    addr: std::net::SocketAddr,
    path: &str,
    host: &str,
    headers: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_answers_only_its_own_host_names() {
    let env = Env::new(5, &[("zoom-hosts-report.yaml", HOSTS)]).await;
    let yaml = std::fs::read_to_string(&env.config).unwrap();
    let yaml = yaml.replace(
        "daemon:\n  listen: 127.0.0.1:8787\n",
        "daemon:\n  listen: 127.0.0.1:8787\n  public_host: [ferry.example.com]\n",
    );
    assert!(yaml.contains("public_host"));
    std::fs::write(&env.config, yaml).unwrap();
    let h = env.start().await;
    let port = h.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "ferry.example.com".to_string(),
    ] {
        let (code, _) = get_with_host(h.addr, "/healthz", &host).await;
        assert_eq!(code, 200, "{host}");
    }
    // A page on another name that resolves here (DNS rebinding) is refused, on every path.
    for path in ["/healthz", "/", "/metrics"] {
        let (code, body) =
            get_with_host(h.addr, path, &format!("rebind.attacker.example:{port}")).await;
        assert_eq!(code, 421, "{path}: {body}");
        assert!(body.contains("daemon.public_host"), "{body}");
    }
    let (code, _) = get_with_host(h.addr, "/healthz", "localhost:1").await;
    assert_eq!(code, 421);
    // On the public name, pages that show people need the API token, which is not set:
    // refused, and the way in is named. The daemon's own address still shows them.
    let people = ["/", "/metrics", "/deadletters/zoom-hosts-report"];
    for path in people {
        let (code, body) = get_with_host(h.addr, path, "ferry.example.com").await;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(body.contains("daemon.api_token"), "{body}");
        let (code, body) = get_with_host(h.addr, path, &format!("127.0.0.1:{port}")).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(
        get_with_host(h.addr, "/readyz", "ferry.example.com")
            .await
            .0,
        200
    );
    assert!(h.shutdown().await.clean);

    // With a token: the public name shows them to its bearer only.
    let dir = env.config.parent().unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/api_token"), "page-token-1\n").unwrap();
    let yaml = std::fs::read_to_string(&env.config).unwrap().replace(
        "  public_host: [ferry.example.com]\n",
        "  public_host: [ferry.example.com]\n  api_token: ${file:secrets/api_token}\n",
    );
    std::fs::write(&env.config, yaml).unwrap();
    let h = env.start().await;
    for path in people {
        let (code, _) = get_with_host(h.addr, path, "ferry.example.com").await;
        assert_eq!(code, 401, "{path}");
        let wrong = "Authorization: Bearer page-token-2\r\n";
        let (code, _) = get_with(h.addr, path, "ferry.example.com", wrong).await;
        assert_eq!(code, 401, "{path}");
        let right = "Authorization: Bearer page-token-1\r\n";
        let (code, body) = get_with(h.addr, path, "ferry.example.com", right).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(!body.contains("page-token-1"), "{path}");
    }
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_on_a_stream_without_a_single_record_fetch_is_refused_at_its_line() {
    let broken = "pipeline: attendees\nschedule: 1h\ntriggers: [webinar.ended]\n\nsource:\n  stream: zoom.past_webinar_participants\n  params: { webinar_uuid: abc }\n\nsinks: {}\n";
    let env = Env::new(5, &[("attendees.yaml", broken)]).await;
    let err = match ferry::daemon::Daemon::start(&env.config, env.options()).await {
        Ok(_) => panic!("a pipeline that cannot be triggered loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("ferry::not_triggerable"), "{err}");
    assert!(err.contains("attendees.yaml:3:"), "file:line:column: {err}");
    assert!(err.contains("schedule"), "the hint: {err}");
    // Every example pipeline that declares triggers loads (webinars gained a fetch, phone
    // call history takes its records from the event).
    let all = ferry::sim::sandbox::EXAMPLE_PIPELINES;
    let env = Env::new(5, all).await;
    let h = env.start().await;
    assert!(
        h.project()
            .pipelines
            .iter()
            .any(|p| p.triggers.iter().any(|t| t == "webinar.ended"))
    );
    assert!(h.shutdown().await.clean);
}
