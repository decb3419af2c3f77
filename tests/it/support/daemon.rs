//! Helpers for the daemon tests: a sandbox (both simulators) on a manual clock, a project
//! written for it, and the daemon started in-process.

use chrono::{DateTime, Utc};
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::daemon::{Daemon, DaemonHandle, DaemonOptions, DaemonStatus};
use ferry::sim::sandbox::{Sandbox, SandboxOptions};
use ferry::sim::world::{Attendee, CrmRole, Meeting, World};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Real-time bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

pub const MEETINGS: &str = include_str!("../../../pipelines/meetings-to-events.yaml");
pub const HOSTS: &str = include_str!("../../../pipelines/zoom-hosts-report.yaml");

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-09-15T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub struct Env {
    /// Auto mode: the HTTP layer's waits jump time; tests move it further with `advance`.
    pub clock: Arc<ManualClock>,
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    pub async fn new(meetings: usize, pipelines: &[(&str, &str)]) -> Env {
        let clock = ManualClock::auto(t0());
        let shared: SharedClock = clock.clone();
        let mut opts = SandboxOptions::new(shared);
        opts.scale.meetings = meetings;
        let sandbox = Sandbox::start(opts).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = sandbox.write_project(dir.path(), pipelines).unwrap();
        Env {
            clock,
            sandbox,
            dir,
            config,
        }
    }

    pub fn options(&self) -> DaemonOptions {
        let mut o = DaemonOptions::new(self.clock.clone());
        o.listen_override = Some("127.0.0.1:0".into());
        o.debounce = Duration::from_millis(100);
        o.tick = Duration::from_millis(10);
        o.shutdown_grace = Duration::from_secs(20);
        o
    }

    pub async fn start(&self) -> DaemonHandle {
        self.start_with(self.options()).await
    }

    pub async fn start_with(&self, o: DaemonOptions) -> DaemonHandle {
        Daemon::start(&self.config, o).await.unwrap()
    }

    pub fn pipeline_path(&self, file: &str) -> PathBuf {
        self.dir.path().join("pipelines").join(file)
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join(".ferry/state.db")
    }

    pub fn world(&self) -> &World {
        &self.sandbox.world
    }

    /// Salesforce records of an object whose `field` equals `value`.
    pub fn sf_where(&self, sobject: &str, field: &str, value: &str) -> Vec<Value> {
        self.sandbox
            .salesforce
            .records(sobject)
            .into_iter()
            .filter(|r| r[field].as_str() == Some(value))
            .collect()
    }

    pub fn count(&self, sobject: &str) -> usize {
        self.sandbox.salesforce.records(sobject).len()
    }

    /// Ended meetings (in reports) that have a participant who is a Salesforce Contact.
    pub fn meetings_with_a_contact(&self) -> Vec<&Meeting> {
        let w = self.world();
        let now = self.clock.now();
        w.meetings
            .iter()
            .filter(|m| m.in_reports() && m.end <= now)
            .filter(|m| {
                m.participants.iter().any(|p| match p.attendee {
                    Attendee::External(i) => {
                        w.people[i].role == CrmRole::Contact && !p.email.is_empty()
                    }
                    Attendee::Internal(_) => false,
                })
            })
            .collect()
    }

    /// A total count of rows in the inbox table (pending, done or failed).
    pub fn inbox_rows(&self) -> i64 {
        let c = rusqlite::Connection::open(self.state_path()).unwrap();
        c.query_row("SELECT count(*) FROM inbox", [], |r| r.get(0))
            .unwrap()
    }
}

/// The body of a meeting.ended delivery for a meeting, as Zoom sends it.
pub fn meeting_ended(m: &Meeting, world: &World, now: DateTime<Utc>) -> Value {
    let host = &world.users[m.host];
    json!({
        "event": "meeting.ended",
        "event_ts": now.timestamp_millis(),
        "payload": {
            "account_id": world.account_id,
            "object": {
                "id": m.id.to_string(),
                "uuid": m.uuid,
                "host_id": host.id,
                "topic": m.topic,
                "type": m.meeting_type,
                "start_time": m.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "end_time": m.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "duration": m.duration_minutes(),
                "timezone": m.timezone,
            }
        }
    })
}

/// The simulator's delivery of `event`, signed with the sandbox's webhook secret; the
/// daemon's answer.
pub async fn deliver(env: &Env, h: &DaemonHandle, event: &Value) -> u16 {
    env.sandbox
        .zoom
        .send_webhook(&h.webhook_url(), ferry::sim::sandbox::WEBHOOK_SECRET, event)
        .await
        .unwrap()
}

/// Posts a delivery signed with `secret` at `ts` (epoch seconds); gives status and body.
pub async fn post_signed(
    url: &str,
    secret: &str,
    ts: i64,
    body: &Value,
    request_id: Option<&str>,
) -> (u16, String) {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut req = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .header("x-zm-request-timestamp", ts.to_string())
        .header(
            "x-zm-signature",
            ferry::connectors::zoom::webhook::sign(secret, ts, &bytes),
        );
    if let Some(id) = request_id {
        req = req.header("x-zm-request-id", id);
    }
    let resp = req.body(bytes).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

pub async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Waits until `cond` holds, panicking with the last status after [`WAIT`].
pub async fn wait(
    h: &DaemonHandle,
    what: &str,
    cond: impl Fn(&DaemonStatus) -> bool,
) -> DaemonStatus {
    match h.wait_until(WAIT, cond).await {
        Ok(s) => s,
        Err(s) => panic!("timed out waiting for {what}; status: {s:#?}"),
    }
}

pub fn runs(s: &DaemonStatus, pipeline: &str) -> u64 {
    s.pipelines
        .get(pipeline)
        .map(|p| p.runs_finished)
        .unwrap_or(0)
}

/// Idle: nothing running.
pub fn idle(s: &DaemonStatus) -> bool {
    s.pipelines.values().all(|p| !p.running)
}

/// Waits for `n` more passes of the scheduler: enough for it to have started anything due.
pub async fn scheduler_passes(h: &DaemonHandle, n: u64) -> DaemonStatus {
    let from = h.status().scheduler_passes;
    wait(h, "scheduler passes", move |s| {
        s.scheduler_passes >= from + n
    })
    .await
}

/// The meetings pipeline with its schedule removed (webhooks only).
pub fn meetings_webhook_only() -> String {
    let s = MEETINGS.replace("schedule: 15m\n", "");
    assert_ne!(s, MEETINGS);
    s
}
