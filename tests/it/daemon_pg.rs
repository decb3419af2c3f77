//! Several `ferry daemon` processes (the real binary) on one PostgreSQL state, against the
//! built-in simulators, both receiving webhooks and both scheduling the pipeline:
//! - together they leave the org exactly as a single run does (no duplicate, nothing missing);
//! - the one running the pipeline killed with SIGKILL mid-batch (twice, at different moments):
//!   another takes over once the lease runs out, and the org is still the clean result;
//! - the one running it paused (SIGSTOP) past its lease, then resumed (SIGCONT): its stale
//!   batch does not move the checkpoint, and the org is still the clean result;
//! - PostgreSQL stopped: webhooks are answered 503 (Zoom delivers again), nothing is lost
//!   once it is back, and runs resume.
//!
//! The processes use the system clock (so do the simulators), and the lease is the default
//! 30 s: the takeover tests wait for it in real time.

use crate::support::org_snapshot;
use crate::support::pg::PgCluster;
use chrono::{DateTime, Duration as CDuration, Timelike, Utc};
use ferry::sim::sandbox::{Sandbox, SandboxOptions, WEBHOOK_SECRET};
use ferry::sim::world::{Attendee, CrmRole};
use ferry::state::Store;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: [u8; 32] = [11u8; 32];
const PIPELINE: &str = "meetings-to-events";
const MEETINGS: &str = include_str!("../../pipelines/meetings-to-events.yaml");
/// Real-time bound of every wait here (a takeover needs the 30 s lease to run out).
const WAIT: Duration = Duration::from_secs(180);

/// A world that ends at a fixed minute, so two sandboxes (the daemons' and the reference's)
/// hold the same meetings.
fn options(end: DateTime<Utc>, sf_latency: Option<Duration>) -> SandboxOptions {
    let mut o = SandboxOptions::new(ferry::clock::system());
    o.scale.meetings = 60;
    o.scale.users = 4;
    o.scale.days = 5;
    o.scale.end = end;
    o.sf_faults.latency = sf_latency;
    o
}

fn end_of_world() -> DateTime<Utc> {
    let now = Utc::now() - CDuration::minutes(2);
    now.with_second(0).unwrap().with_nanosecond(0).unwrap()
}

struct Setup {
    pg: PgCluster,
    url: String,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    config: PathBuf,
    end: DateTime<Utc>,
}

async fn setup(pipeline: &str, sf_latency: Option<Duration>) -> Option<Setup> {
    let pg = PgCluster::start()?;
    let url = pg.create_db("ferry");
    let end = end_of_world();
    let sandbox = Sandbox::start(options(end, sf_latency)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox
        .write_project(dir.path(), &[("meetings-to-events.yaml", pipeline)])
        .unwrap();
    let yaml = std::fs::read_to_string(&config).unwrap();
    let yaml = yaml.replace("state: .ferry/state.db", "state: ${FERRY_TEST_STATE_URL}");
    assert!(yaml.contains("FERRY_TEST_STATE_URL"));
    std::fs::write(&config, yaml).unwrap();
    Some(Setup {
        pg,
        url,
        sandbox,
        dir,
        config,
        end,
    })
}

/// A `ferry daemon` process; killed (it is our child) when dropped.
struct DaemonProc {
    child: Child,
    url: String,
    log: PathBuf,
}

impl DaemonProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn webhook_url(&self) -> String {
        format!("{}/zoom/webhook", self.url)
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Setup {
    fn store(&self) -> Store {
        Store::open_postgres_with_key(&self.url, KEY).unwrap()
    }

    async fn daemon(&self, n: usize) -> DaemonProc {
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&self.config)
            .args(["daemon", "--listen", "127.0.0.1:0", "--shutdown-grace", "5"])
            .env("FERRY_STATE_KEY", hex::encode(KEY))
            .env("FERRY_TEST_STATE_URL", &self.url)
            .env("FERRY_LOG", "ferry=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let first = tokio::task::spawn_blocking(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            // Keep draining, so the daemon never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            line
        });
        let line = tokio::time::timeout(Duration::from_secs(60), first)
            .await
            .expect("the daemon printed its address")
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("ferry daemon listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        assert!(!url.contains("pg-secret-pw"));
        DaemonProc { child, url, log }
    }

    /// Meetings whose end a webhook announces and which have a Contact (they become Events).
    fn meetings_with_a_contact(&self) -> Vec<Value> {
        let w = &self.sandbox.world;
        w.meetings
            .iter()
            .filter(|m| m.in_reports() && m.end <= self.end)
            .filter(|m| {
                m.participants.iter().any(|p| match p.attendee {
                    Attendee::External(i) => {
                        w.people[i].role == CrmRole::Contact && !p.email.is_empty()
                    }
                    Attendee::Internal(_) => false,
                })
            })
            .map(|m| {
                let host = &w.users[m.host];
                json!({
                    "event": "meeting.ended",
                    "event_ts": m.end.timestamp_millis(),
                    "payload": {
                        "account_id": w.account_id,
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
            })
            .collect()
    }

    async fn deliver(&self, d: &DaemonProc, event: &Value) -> u16 {
        self.sandbox
            .zoom
            .send_webhook(&d.webhook_url(), WEBHOOK_SECRET, event)
            .await
            .unwrap()
    }

    fn event_uuids(&self) -> Vec<String> {
        self.sandbox
            .salesforce
            .records("Event")
            .iter()
            .filter_map(|e| e.get("Zoom_Meeting_UUID__c")?.as_str().map(str::to_string))
            .collect()
    }

    fn assert_no_duplicate_events(&self) {
        let uuids = self.event_uuids();
        let distinct: BTreeSet<&String> = uuids.iter().collect();
        assert_eq!(distinct.len(), uuids.len(), "an Event was written twice");
    }

    /// The org a single run leaves: the same world in a sandbox of its own, synced by one
    /// `ferry run` on a state file.
    async fn reference_org(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let sb = Sandbox::start(options(self.end, None)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = sb
            .write_project(dir.path(), &[("meetings-to-events.yaml", MEETINGS)])
            .unwrap();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .arg("--config")
                .arg(&config)
                .args(["run", PIPELINE])
                .env("FERRY_STATE_KEY", hex::encode(KEY))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "reference run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        org_snapshot(&sb)
    }

    /// Waits until `cond` holds on the shared state, or fails with the daemons' logs.
    async fn wait_for<F>(&self, what: &str, daemons: &[&DaemonProc], mut cond: F)
    where
        F: AsyncFnMut(&Store) -> bool,
    {
        let store = self.store();
        let deadline = Instant::now() + WAIT;
        loop {
            if cond(&store).await {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = daemons.iter().map(|d| d.log()).collect();
                panic!(
                    "timed out waiting for {what}; logs:\n{}",
                    logs.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Records ferry has created in the org so far (the simulator's count, ahead of the
/// ledger, which a batch commits at its end).
fn org_records(st: &Setup) -> usize {
    ["Event", "EventRelation", "Task", "Opportunity"]
        .iter()
        .map(|o| st.sandbox.salesforce.records(o).len())
        .sum()
}

async fn holder_pid(s: &Store) -> Option<u32> {
    let h = s.lease_holder(PIPELINE).await.ok()??;
    h.holder.split(':').nth(1)?.parse().ok()
}

/// Done: every webhook processed, nobody running the pipeline, the last run finished.
async fn settled(s: &Store) -> bool {
    let depth = s.inbox_depth().await.unwrap_or(1);
    let free = matches!(s.lease_holder(PIPELINE).await, Ok(None));
    let finished = s
        .last_runs()
        .await
        .ok()
        .and_then(|r| r.into_iter().find(|r| r.pipeline == PIPELINE))
        .is_some_and(|r| r.finished_at.is_some());
    depth == 0 && free && finished
}

async fn wait_settled_and_compare(st: &Setup, daemons: &[&DaemonProc]) {
    st.wait_for("all work done", daemons, async |s| settled(s).await)
        .await;
    // And still settled a moment later (a webhook run may start right after a scheduled one).
    tokio::time::sleep(Duration::from_millis(500)).await;
    st.wait_for("all work done", daemons, async |s| settled(s).await)
        .await;
    st.assert_no_duplicate_events();
    let reference = comparable(st.reference_org().await);
    assert!(!reference.is_empty());
    assert_eq!(
        comparable(org_snapshot(&st.sandbox)),
        reference,
        "the org differs from a single run's"
    );
}

/// The org without an Event's recording link (its last field): a meeting.ended webhook run
/// fetches the one meeting, which carries no recording, and whether it or the backfill wrote
/// an Event last depends on timing, with one daemon as with two. Everything else must match.
fn comparable(
    mut org: std::collections::BTreeMap<String, Vec<String>>,
) -> std::collections::BTreeMap<String, Vec<String>> {
    if let Some(events) = org.get_mut("Event") {
        for e in events.iter_mut() {
            if let Some(i) = e.rfind('|') {
                e.truncate(i);
            }
        }
        events.sort();
    }
    org
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_with_webhooks_and_schedules_leave_the_org_as_one_run_does() {
    let Some(st) = setup(MEETINGS, None).await else {
        return;
    };
    let (a, b) = (st.daemon(1).await, st.daemon(2).await);
    // Both schedule the backfill at start; meanwhile Zoom delivers every meeting's end,
    // to either daemon (a load balancer), some of them twice (Zoom's retries).
    let events = st.meetings_with_a_contact();
    assert!(events.len() >= 5, "{}", events.len());
    for (i, e) in events.iter().enumerate() {
        let d = if i % 2 == 0 { &a } else { &b };
        assert_eq!(st.deliver(d, e).await, 200);
        if i % 5 == 0 {
            let other = if i % 2 == 0 { &b } else { &a };
            assert_eq!(st.deliver(other, e).await, 200);
        }
    }
    wait_settled_and_compare(&st, &[&a, &b]).await;
    // Every stored delivery was processed, none failed for good.
    let counts = st.store().inbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.retrying, counts.dead), (0, 0, 0));
    // Both daemons' status pages and metrics show who runs the pipeline (nobody, now).
    let metrics = reqwest::get(format!("{}/metrics", a.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ferry_daemon_holder_id{holder=\""),
        "{metrics}"
    );
    let page = reqwest::get(&a.url).await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"leases\""), "{page}");
    assert!(!page.contains("pg-secret-pw"));
}

/// Kills whoever runs the pipeline once the org holds `at_least` records (mid-batch: the
/// batch's writes are acknowledged, its commit has not happened); another daemon must take
/// over and go on.
async fn kill_the_runner_after(st: &Setup, daemons: &mut Vec<DaemonProc>, at_least: usize) {
    let pids: Vec<u32> = daemons.iter().map(|d| d.pid()).collect();
    let refs: Vec<&DaemonProc> = daemons.iter().collect();
    st.wait_for("a daemon mid-run", &refs, async |s| {
        org_records(st) >= at_least && holder_pid(s).await.is_some_and(|p| pids.contains(&p))
    })
    .await;
    let store = st.store();
    let pid = holder_pid(&store).await.unwrap();
    let i = daemons.iter().position(|d| d.pid() == pid).unwrap();
    daemons[i].signal("-KILL");
    let mut dead = daemons.remove(i);
    let _ = dead.child.wait();
    // The survivor takes the pipeline over once the dead one's lease runs out.
    let killed_at = Instant::now();
    let refs: Vec<&DaemonProc> = daemons.iter().collect();
    let survivors: Vec<u32> = daemons.iter().map(|d| d.pid()).collect();
    st.wait_for("a takeover", &refs, async |s| {
        holder_pid(s).await.is_some_and(|p| survivors.contains(&p)) || settled(s).await
    })
    .await;
    assert!(
        killed_at.elapsed() < ferry::state::DEFAULT_LEASE_TTL + Duration::from_secs(15),
        "taken over within the lease time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runner_killed_mid_batch_is_taken_over_and_the_org_is_clean() {
    // Salesforce answers slowly, so a backfill takes long enough to be killed in.
    let Some(st) = setup(MEETINGS, Some(Duration::from_millis(250))).await else {
        return;
    };
    let mut daemons = vec![st.daemon(1).await, st.daemon(2).await];
    // Early in the backfill.
    kill_the_runner_after(&st, &mut daemons, 1).await;
    // A replacement comes up; later in the backfill, the runner is killed again.
    daemons.push(st.daemon(3).await);
    let now = org_records(&st);
    kill_the_runner_after(&st, &mut daemons, now + 10).await;
    let refs: Vec<&DaemonProc> = daemons.iter().collect();
    wait_settled_and_compare(&st, &refs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_paused_past_its_lease_cannot_commit_its_stale_batch() {
    let Some(st) = setup(MEETINGS, Some(Duration::from_millis(250))).await else {
        return;
    };
    let a = st.daemon(1).await;
    let b = st.daemon(2).await;
    let pids = [a.pid(), b.pid()];
    st.wait_for("a daemon mid-run", &[&a, &b], async |s| {
        org_records(&st) >= 1 && holder_pid(s).await.is_some_and(|p| pids.contains(&p))
    })
    .await;
    let store = st.store();
    let held = store.lease_holder(PIPELINE).await.unwrap().unwrap();
    let paused = if holder_pid(&store).await == Some(a.pid()) {
        &a
    } else {
        &b
    };
    paused.signal("-STOP");
    // The other takes over once the lease runs out, and finishes the backfill.
    st.wait_for("a takeover", &[&a, &b], async |s| {
        s.lease_holder(PIPELINE)
            .await
            .ok()
            .flatten()
            .is_some_and(|h| h.fence > held.fence)
    })
    .await;
    st.wait_for("the taker's run to finish", &[&a, &b], async |s| {
        s.lease_holder(PIPELINE).await.ok().flatten().is_none()
    })
    .await;
    let before = store.checkpoints(Some(PIPELINE)).await.unwrap();
    paused.signal("-CONT");
    // The paused daemon's run stops at its next commit or renewal without moving the
    // checkpoint: its run is recorded as stopped for a lost lease.
    st.wait_for("the stale run to stop", &[&a, &b], async |s| {
        s.runs(Some(PIPELINE), 50).await.is_ok_and(|runs| {
            runs.iter().any(|r| {
                r.stopped
                    .as_deref()
                    .is_some_and(|w| w.contains("took over") || w.contains("lease"))
            })
        })
    })
    .await;
    let after = store.checkpoints(Some(PIPELINE)).await.unwrap();
    assert_eq!(
        after, before,
        "the stale batch moved no checkpoint (the taker had finished: nothing else runs)"
    );
    wait_settled_and_compare(&st, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_then_up_loses_nothing_and_runs_resume() {
    let webhook_only = MEETINGS.replace("schedule: 15m\n", "");
    assert_ne!(webhook_only, MEETINGS);
    let Some(st) = setup(&webhook_only, None).await else {
        return;
    };
    let (a, b) = (st.daemon(1).await, st.daemon(2).await);
    let events = st.meetings_with_a_contact();
    let half = events.len() / 2;
    for (i, e) in events[..half].iter().enumerate() {
        assert_eq!(st.deliver(if i % 2 == 0 { &a } else { &b }, e).await, 200);
    }
    st.wait_for("the first half processed", &[&a, &b], async |s| {
        s.inbox_depth().await.is_ok_and(|d| d == 0)
    })
    .await;
    st.pg.stop_server();
    // While the database is down a delivery is refused with 503, so Zoom delivers it again;
    // nothing is acknowledged that is not stored.
    let mut refused = Vec::new();
    for (i, e) in events[half..].iter().enumerate() {
        let status = st.deliver(if i % 2 == 0 { &a } else { &b }, e).await;
        assert_eq!(status, 503, "{}", a.log());
        refused.push(e.clone());
    }
    let (code, health) = crate::support::daemon::get(&format!("{}/healthz", a.url)).await;
    assert!(!health.contains("pg-secret-pw"), "{code} {health}");
    st.pg.start_server();
    // Zoom's retries arrive, to either daemon.
    for (i, e) in refused.iter().enumerate() {
        let d = if i % 2 == 0 { &b } else { &a };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = st.deliver(d, e).await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "still refused: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    st.wait_for("everything processed", &[&a, &b], async |s| {
        s.inbox_depth().await.is_ok_and(|d| d == 0)
    })
    .await;
    st.assert_no_duplicate_events();
    let want: BTreeSet<String> = events
        .iter()
        .map(|e| e["payload"]["object"]["uuid"].as_str().unwrap().to_string())
        .collect();
    let got: BTreeSet<String> = st.event_uuids().into_iter().collect();
    assert_eq!(got, want, "every announced meeting is in Salesforce, once");
}
