//! Daemon mode: scheduler, webhook server, file watcher, metrics, status page.
//!
//! One process runs every pipeline on its `schedule`, takes Zoom webhooks into the durable
//! inbox and runs the pipelines they trigger for that one record, reloads changed files, and
//! serves `/healthz`, `/metrics` and a status page. Everything that reads the time uses the
//! injected clock, so tests step through schedules with a `ManualClock`.
//!
//! [`Daemon::start`] starts it in-process and gives a [`DaemonHandle`]; `ferry daemon` wraps
//! it with signal handling.

pub(crate) mod inbox;
pub(crate) mod metrics;
pub(crate) mod reload;
pub(crate) mod schedule;
pub(crate) mod server;
pub(crate) mod status;

use crate::clock::SharedClock;
use crate::config::{Diagnostics, Problem, Project};
use crate::engine::connect::{self, Connections};
use crate::engine::report::PipelineReport;
use crate::engine::{Engine, Mode, RunOptions};
use chrono::{DateTime, Utc};
use metrics::DaemonMetrics;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How the daemon is started. Real-time durations (`debounce`, `shutdown_grace`, `tick`)
/// concern the file system and the process; schedules follow `clock`.
#[derive(Clone)]
pub struct DaemonOptions {
    pub clock: SharedClock,
    /// Listen here instead of ferry.yaml's `daemon.listen` (tests use 127.0.0.1:0).
    pub listen_override: Option<String>,
    /// Quiet time after a file change before reloading (editors write in several steps).
    pub debounce: Duration,
    /// How long a shutdown waits for the batch in flight before giving up on it.
    pub shutdown_grace: Duration,
    /// How often the scheduler and the inbox look at the clock when nothing wakes them.
    pub tick: Duration,
    /// How far a webhook's timestamp may be from now (replay window).
    pub webhook_window: Duration,
    /// Pending inbox events beyond which deliveries are refused with 500 (Zoom retries).
    pub inbox_capacity: u64,
    /// Watch ferry.yaml and the pipeline files for changes.
    pub watch: bool,
    /// Set from outside to stop the daemon (shared with [`DaemonHandle::shutdown`]).
    pub shutdown: ShutdownSignal,
    /// Called after each committed batch of every run (progress, tests).
    pub on_batch: Option<BatchHook>,
    /// Source records per batch (None: the engine's default).
    pub batch_size: Option<usize>,
}

/// A callback after each committed batch: the pipeline and its report so far.
pub type BatchHook = Arc<dyn Fn(&str, &PipelineReport) + Send + Sync>;

impl DaemonOptions {
    pub fn new(clock: SharedClock) -> Self {
        DaemonOptions {
            clock,
            listen_override: None,
            debounce: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            tick: Duration::from_secs(1),
            webhook_window: Duration::from_secs(300),
            inbox_capacity: 10_000,
            watch: true,
            shutdown: ShutdownSignal::new(),
            on_batch: None,
            batch_size: None,
        }
    }
}

/// A one-way stop signal: a flag the engine checks between batches, and a wake-up for the
/// daemon's loops.
#[derive(Clone, Default)]
pub struct ShutdownSignal {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl ShutdownSignal {
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks everything to stop: runs stop after the batch in flight.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    /// The flag the engine reads.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
    /// Resolves once the signal is triggered.
    pub async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            if self.is_triggered() {
                return;
            }
            n.await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the project is invalid:\n{}", .0.render())]
    Invalid(Diagnostics),
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("`{addr}` is not an address to listen on")]
    BadAddress { addr: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot watch {path} for changes: {message}")]
    Watch { path: String, message: String },
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Webhook,
    Manual,
}

impl Trigger {
    /// What started a run, in the words of the status page and the run history.
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Webhook => "webhook",
            Trigger::Manual => "manual API",
        }
    }
}

/// A file the last reload could not use, with the problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub code: String,
    pub message: String,
}

impl From<&Problem> for FileProblem {
    fn from(p: &Problem) -> Self {
        FileProblem {
            file: p.file.clone(),
            line: p.line,
            column: p.column,
            code: p.code.to_string(),
            message: p.message.clone(),
        }
    }
}

/// What the daemon knows of one pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineStatus {
    pub runs_finished: u64,
    pub running: bool,
    pub last_trigger: Option<Trigger>,
    pub last_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    /// The last run stopped at a daily limit (Salesforce's, ferry's `daily_budget` or
    /// Zoom's): the scheduler runs the pipeline again at this time, when the limit lets calls
    /// go, without waiting for its next scheduled time.
    pub resume_at: Option<DateTime<Utc>>,
    /// A scheduled run was skipped because another process holds the pipeline's lease (or
    /// the state could not be reached): the scheduler tries again at this time (when that
    /// lease expires unless renewed), so a daemon that dies is taken over within the lease
    /// time rather than at the next scheduled time.
    pub lease_retry_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub last_report: Option<Arc<PipelineReport>>,
}

/// How long the scheduler waits before trying a pipeline again when its lease could not be
/// read (the state database is unreachable).
const LEASE_RETRY_AFTER_ERROR_SECS: i64 = 10;
/// How long a webhook's run waits for a pipeline another process is running (a webhook run
/// there takes well under a second) before its event goes back to the inbox to be retried
/// later, and how often it looks. Real time: the other process's run is.
const WEBHOOK_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const WEBHOOK_LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// A snapshot of the daemon's state, for tests and the status page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonStatus {
    pub pipelines: BTreeMap<String, PipelineStatus>,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Reloads refused because a file was invalid.
    pub reload_failures: u64,
    pub files_in_error: Vec<FileProblem>,
    /// Webhook events taken from the inbox (done or failed).
    pub webhooks_processed: u64,
    /// Passes of the scheduler over the pipelines.
    pub scheduler_passes: u64,
    /// Times changed connections were connected and put in place without a restart.
    pub connection_reloads: u64,
    /// Changed connections that could not connect (the previous ones kept running).
    pub connection_reload_failures: u64,
    /// Why the last changed connections could not connect; None once a change connects.
    pub connection_error: Option<String>,
}

/// What every task of the daemon shares.
pub(crate) struct Shared {
    pub(crate) config_path: PathBuf,
    pub(crate) clock: SharedClock,
    /// The state file (it does not change while the daemon runs).
    pub(crate) store: crate::state::Store,
    /// The live connections; replaced when ferry.yaml's connections change (a run keeps the
    /// ones it started with).
    conns: RwLock<Arc<Connections>>,
    /// Counts reconnects begun, so that of two quick edits the later one's connections win.
    pub(crate) conns_wanted: std::sync::atomic::AtomicU64,
    project: RwLock<Arc<Project>>,
    pub(crate) options: DaemonOptions,
    pub(crate) metrics: DaemonMetrics,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    status: Mutex<DaemonStatus>,
    changed: watch::Sender<u64>,
    /// Wakes the inbox processor (a delivery was stored).
    pub(crate) inbox_wake: Notify,
    /// Wakes the scheduler (a reload or a finished run changed what is due).
    pub(crate) schedule_wake: Notify,
    runs_in_flight: AtomicUsize,
    runs_idle: Notify,
    /// Scheduled runs, to abort what is left when a shutdown's grace period passes.
    pub(crate) spawned: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Shared {
    pub(crate) fn conns(&self) -> Arc<Connections> {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts connections in place unless a later reconnect has begun since `generation`
    /// (checked under the lock, so an earlier edit's connections never replace a later one's).
    pub(crate) fn set_conns_if_latest(&self, generation: u64, c: Connections) -> bool {
        let mut live = self.conns.write().unwrap_or_else(|e| e.into_inner());
        if self.conns_wanted.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return false;
        }
        *live = Arc::new(c);
        true
    }

    pub(crate) fn project(&self) -> Arc<Project> {
        self.project
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_project(&self, p: Project) {
        *self.project.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    pub(crate) fn shutdown(&self) -> &ShutdownSignal {
        &self.options.shutdown
    }

    /// Changes the status and tells whoever waits on it.
    pub(crate) fn update_status<R>(&self, f: impl FnOnce(&mut DaemonStatus) -> R) -> R {
        let r = f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n += 1);
        r
    }

    pub(crate) fn status(&self) -> DaemonStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_for(&self, pipeline: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(pipeline.to_string())
            .or_default()
            .clone()
    }

    /// Starts [`Shared::run_pipeline`] as a task of its own, registered so that a shutdown
    /// whose grace period passes can stop it.
    pub(crate) fn spawn_run(self: &Arc<Self>, name: &str, trigger: Trigger) -> JoinHandle<()> {
        let s = self.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            s.run_pipeline(&name, None, trigger).await;
        });
        let mut spawned = self.spawned.lock().unwrap_or_else(|e| e.into_inner());
        spawned.retain(|h| !h.is_finished());
        spawned.push(task.abort_handle());
        task
    }

    /// Takes the pipeline's lease in the state file for a run. When another process holds
    /// it, a scheduled run is skipped (`Err(None)`: the next due time tries again) and a
    /// webhook or manual run ends at once with a report saying who runs the pipeline (`Err(Some
    /// (why))`; the inbox keeps the event and retries it).
    async fn take_lease(
        &self,
        name: &str,
        trigger: Trigger,
    ) -> Result<crate::state::LeaseGuard, Option<String>> {
        let ttl = crate::state::DEFAULT_LEASE_TTL;
        // Another daemon on a shared state may be running the pipeline for another webhook:
        // a webhook's run waits a little for it rather than send its event into the inbox's
        // growing retry waits at once.
        let mut acquired = crate::state::acquire_now(&self.store, name, ttl).await;
        if trigger == Trigger::Webhook {
            let deadline = std::time::Instant::now() + WEBHOOK_LEASE_WAIT;
            while matches!(acquired, Ok(Err(_)))
                && std::time::Instant::now() < deadline
                && !self.shutdown().is_triggered()
            {
                tokio::time::sleep(WEBHOOK_LEASE_POLL).await;
                acquired = crate::state::acquire_now(&self.store, name, ttl).await;
            }
        }
        let now = self.clock.now();
        let (why, retry_at) = match acquired {
            Ok(Ok(lease)) => {
                self.update_status(|s| {
                    if let Some(ps) = s.pipelines.get_mut(name) {
                        ps.lease_retry_at = None;
                    }
                });
                return Ok(crate::state::LeaseGuard::hold(&self.store, lease, ttl));
            }
            // Tried again just after the lease expires (a holder that died is taken over).
            Ok(Err(held)) => (
                held.to_string(),
                held.expires_at.max(now) + chrono::Duration::seconds(1),
            ),
            Err(e) => (
                format!("cannot take the lease of pipeline `{name}`: {e}"),
                now + chrono::Duration::seconds(LEASE_RETRY_AFTER_ERROR_SECS),
            ),
        };
        if trigger == Trigger::Schedule {
            self.update_status(|s| {
                s.pipelines
                    .entry(name.to_string())
                    .or_default()
                    .lease_retry_at = Some(retry_at);
            });
        }
        tracing::warn!(pipeline = name, ?trigger, "run skipped: {why}");
        if trigger == Trigger::Schedule {
            return Err(None);
        }
        Err(Some(why))
    }

    /// Runs one pipeline under its lock (scheduled and webhook runs never overlap), on the
    /// project version current when the run starts, holding the pipeline's lease in the
    /// state file (so no other process runs it meanwhile). None when the pipeline no longer
    /// exists, the daemon is stopping, or a scheduled run found another process running it.
    pub(crate) async fn run_pipeline(
        self: &Arc<Self>,
        name: &str,
        records: Option<Vec<serde_json::Value>>,
        trigger: Trigger,
    ) -> Option<PipelineReport> {
        let _in_flight = InFlight::enter(self);
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        if self.shutdown().is_triggered() {
            return None;
        }
        // The version of this run: a reload during it changes the next run, not this one.
        let project = self.project();
        let p = project.pipeline(name)?;
        // Another process on this state file (a `ferry run`, another daemon) may be running
        // the pipeline: then this run does not happen.
        let lease = match self.take_lease(name, trigger).await {
            Ok(lease) => lease,
            Err(None) => return None,
            Err(Some(why)) => {
                let mut report = PipelineReport::new(name, false);
                report.stopped = Some(why);
                return Some(report);
            }
        };
        let settings = serde_json::Value::Object(project.config.settings.clone());
        let started = self.clock.now();
        let mut opts = RunOptions::new(Mode::Run);
        opts.lease = Some(lease.lease());
        opts.shutdown = Some(self.shutdown().flag());
        opts.records = records;
        if let Some(n) = self.options.batch_size {
            opts.batch_size = n;
        }
        if let Some(hook) = &self.options.on_batch {
            let hook = hook.clone();
            let name = name.to_string();
            opts.progress = Some(Arc::new(move |r: &PipelineReport| hook(&name, r)));
        }
        self.update_status(|s| {
            let ps = s.pipelines.entry(name.to_string()).or_default();
            ps.running = true;
            ps.last_trigger = Some(trigger);
            ps.last_started = Some(started);
        });
        let conns = self.conns();
        if let Err(e) = self.store.run_started(name, &opts.run_id, started).await {
            tracing::warn!(pipeline = name, "could not record the run's start: {e}");
        }
        if let Err(e) = self.store.run_trigger(&opts.run_id, trigger.label()).await {
            tracing::warn!(pipeline = name, "could not record the run's start: {e}");
        }
        tracing::info!(pipeline = name, run_id = %opts.run_id, ?trigger, "run started");
        let engine = Engine {
            store: &self.store,
            source: &conns.source,
            matcher: &conns.salesforce,
            sink: &conns.salesforce,
            zoom: Some(&conns.zoom.conn),
            settings: &settings,
            now: started,
        };
        let report = engine.run(p, &opts).await;
        let finished = self.clock.now();
        if let Err(e) = self
            .store
            .run_finished(
                &opts.run_id,
                finished,
                !report.failed(),
                &report.to_json()["summary"],
            )
            .await
        {
            tracing::warn!(pipeline = name, "could not record the run's end: {e}");
        }
        if let Some(why) = &report.stopped {
            let shown = status::sanitize_error(why);
            if let Err(e) = self.store.run_stopped(&opts.run_id, &shown).await {
                tracing::warn!(pipeline = name, "could not record why the run stopped: {e}");
            }
        }
        lease.release().await;
        conns.save_budget().await;
        conns.save_labels().await;
        let seconds = (finished - started)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        self.metrics.record_run(&report, seconds);
        match &report.stopped {
            Some(why) => {
                tracing::warn!(pipeline = name, run_id = %opts.run_id, "run stopped: {why}")
            }
            None => tracing::info!(
                pipeline = name,
                run_id = %opts.run_id,
                read = report.records_read,
                created = report.summary.create,
                updated = report.summary.update,
                unchanged = report.summary.unchanged,
                errors = report.summary.error,
                "run finished"
            ),
        }
        // Shown on the status page: the reason a run stopped carries no URLs, SOQL or emails.
        let mut shown = report.clone();
        shown.stopped = shown.stopped.as_deref().map(status::sanitize_error);
        let shared_report = Arc::new(shown);
        let resume_at = if report.stopped.is_some() {
            limit_lifts_at(&conns)
        } else {
            None
        };
        if let Some(t) = resume_at {
            tracing::info!(pipeline = name, resume_at = %t, "stopped at a daily limit; resuming when it lets calls go");
        }
        self.update_status(|s| {
            let ps = s.pipelines.entry(name.to_string()).or_default();
            ps.resume_at = resume_at;
            ps.running = false;
            ps.runs_finished += 1;
            ps.last_finished = Some(finished);
            ps.last_report = Some(shared_report);
        });
        self.schedule_wake.notify_one();
        Some(report)
    }
}

/// While a daily limit stops calls (ferry's Salesforce budget, the org's allowance, Zoom's
/// daily caps): when all of them let calls go again.
fn limit_lifts_at(conns: &Connections) -> Option<DateTime<Utc>> {
    let sf = conns.salesforce.conn.budget_reopens_at();
    let zoom = conns.http.daily_limit_until(crate::http::Service::Zoom);
    sf.into_iter().chain(zoom).max()
}

/// Counts a run in flight, so a shutdown can wait for it.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(s: &'a Shared) -> Self {
        s.runs_in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.runs_in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.runs_idle.notify_waiters();
        }
    }
}

/// Loads ferry.yaml and its pipelines with the built-in catalogs.
pub(crate) fn load(config_path: &Path) -> Result<Project, Diagnostics> {
    let owned = crate::config::builtin_catalogs();
    let catalogs: Vec<&dyn crate::config::StreamCatalog> =
        owned.iter().map(|c| c.as_ref()).collect();
    crate::config::load_project(config_path, &catalogs)
}

/// The daemon.
pub struct Daemon;

impl Daemon {
    /// Loads the project, connects, binds the listener and starts the scheduler, the inbox
    /// processor, the file watcher and the HTTP server.
    pub async fn start(
        config_path: &Path,
        options: DaemonOptions,
    ) -> Result<DaemonHandle, DaemonError> {
        let project = load(config_path).map_err(DaemonError::Invalid)?;
        for w in &project.warnings {
            tracing::warn!("{}", w.short());
        }
        let conns = connect::connect(&project, options.clock.clone()).await?;
        let listen = options
            .listen_override
            .clone()
            .unwrap_or_else(|| project.config.daemon.listen.clone());
        let addr: SocketAddr = listen.parse().map_err(|_| DaemonError::BadAddress {
            addr: listen.clone(),
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: listen.clone(),
            source,
        })?;
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            config_path: config_path.to_path_buf(),
            clock: options.clock.clone(),
            store: conns.store.clone(),
            conns: RwLock::new(Arc::new(conns)),
            conns_wanted: std::sync::atomic::AtomicU64::new(0),
            project: RwLock::new(Arc::new(project)),
            options: options.clone(),
            metrics: DaemonMetrics::default(),
            locks: Mutex::new(HashMap::new()),
            status: Mutex::new(DaemonStatus::default()),
            changed,
            inbox_wake: Notify::new(),
            schedule_wake: Notify::new(),
            runs_in_flight: AtomicUsize::new(0),
            runs_idle: Notify::new(),
            spawned: Mutex::new(Vec::new()),
        });
        shared.update_status(|s| {
            for p in &shared.project().pipelines {
                s.pipelines.entry(p.name.clone()).or_default();
            }
        });
        let watcher = if options.watch {
            Some(reload::Watcher::start(&shared)?)
        } else {
            None
        };
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(server::serve(shared.clone(), listener)));
        let last_starts = schedule::last_starts(&shared).await;
        tasks.push(tokio::spawn(schedule::run_scheduler(
            shared.clone(),
            last_starts,
        )));
        tasks.push(tokio::spawn(inbox::run_processor(shared.clone())));
        if let Some(w) = watcher {
            tasks.push(tokio::spawn(w.run(shared.clone())));
        }
        tracing::info!("ferry daemon listening on http://{addr}");
        Ok(DaemonHandle {
            addr,
            shared,
            tasks,
        })
    }
}

/// A running daemon.
pub struct DaemonHandle {
    /// Where the HTTP server listens (the port chosen when 0 was asked).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownOutcome {
    /// Every task and run stopped within the grace period.
    pub clean: bool,
}

impl DaemonHandle {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The webhook endpoint to give Zoom.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/zoom/webhook", self.addr)
    }

    pub fn status(&self) -> DaemonStatus {
        self.shared.status()
    }

    /// The project version runs use now.
    pub fn project(&self) -> Arc<Project> {
        self.shared.project()
    }

    /// The state file the daemon writes.
    pub fn store(&self) -> &crate::state::Store {
        &self.shared.store
    }

    /// The stop signal (trigger it to begin a shutdown without waiting for it).
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shared.options.shutdown.clone()
    }

    /// Runs a pipeline now, through the same lock as scheduled and webhook runs.
    pub async fn run_now(&self, pipeline: &str) -> Option<PipelineReport> {
        self.shared
            .run_pipeline(pipeline, None, Trigger::Manual)
            .await
    }

    /// Waits (up to `timeout` of real time) until `cond` holds for the status; gives the
    /// last status either way.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        cond: impl Fn(&DaemonStatus) -> bool,
    ) -> Result<DaemonStatus, DaemonStatus> {
        let mut rx = self.shared.changed.subscribe();
        let fut = async {
            loop {
                let s = self.shared.status();
                if cond(&s) {
                    return s;
                }
                if rx.changed().await.is_err() {
                    return s;
                }
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(s) if cond(&s) => Ok(s),
            Ok(s) => Err(s),
            Err(_) => Err(self.shared.status()),
        }
    }

    /// Stops taking work, lets runs finish the batch in flight, and waits for everything to
    /// stop, at most the grace period.
    pub async fn shutdown(self) -> ShutdownOutcome {
        let shared = self.shared.clone();
        shared.shutdown().trigger();
        shared.inbox_wake.notify_waiters();
        shared.schedule_wake.notify_waiters();
        let grace = shared.options.shutdown_grace;
        let mut tasks = self.tasks;
        let all = async {
            for t in tasks.iter_mut() {
                let _ = t.await;
            }
            loop {
                let idle = shared.runs_idle.notified();
                if shared.runs_in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        };
        let clean = tokio::time::timeout(grace, all).await.is_ok();
        if !clean {
            tracing::warn!("shutdown grace period passed; stopping what is left");
            for t in &tasks {
                t.abort();
            }
            for r in shared
                .spawned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                r.abort();
            }
        }
        shared.conns().save_budget().await;
        tracing::info!("ferry daemon stopped");
        ShutdownOutcome { clean }
    }
}
