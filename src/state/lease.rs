//! One pipeline, one runner: a lease row per pipeline in the state file.
//!
//! Whoever runs a pipeline (`ferry run`, or the daemon for a scheduled, webhook-triggered or
//! manual run) first takes the pipeline's lease in an IMMEDIATE transaction. A lease names
//! its holder (host, process id and a random part), expires by the injected clock unless it
//! is renewed (a background task renews it every third of its length), and carries a fencing
//! number that grows by one every time the lease changes hands. A batch commit run under a
//! lease checks that number inside the commit transaction: a holder whose lease was taken over
//! still records what Salesforce acknowledged (its ledger rows), but does not move the
//! checkpoint, and its run stops.
//!
//! The lease operations of [`StateBackend`](super::StateBackend) are the whole interface, so
//! another state backend (PostgreSQL) can offer the same guarantee with a row lock or an
//! advisory lock and the same fencing check in its batch commit.

use super::{Context, Result, SqliteState, StateError, Store, fmt_ts, ts_col};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a lease lasts without renewal: a holder that dies frees its pipelines after this.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// A lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub pipeline: String,
    pub holder: String,
    /// Grows by one each time the lease changes hands; a commit checks it.
    pub fence: i64,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A lease another holder has (or had: it may have expired without being taken over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    pub pipeline: String,
    pub holder: String,
    pub fence: i64,
    pub since: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pipeline `{}` is being run by {} (holder {}) since {}; its lease expires at {} \
             unless that process renews it",
            self.pipeline,
            describe_holder(&self.holder),
            self.holder,
            self.since.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
    }
}

/// A lease row as stored. `holder` is empty once released.
struct Row {
    holder: String,
    fence: i64,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

fn read_row(conn: &rusqlite::Connection, pipeline: &str) -> Result<Option<Row>> {
    conn.query_row(
        "SELECT holder, fence, acquired_at, expires_at FROM leases WHERE pipeline = ?1",
        [pipeline],
        |r| {
            Ok(Row {
                holder: r.get(0)?,
                fence: r.get(1)?,
                acquired_at: ts_col(r, 2)?,
                expires_at: ts_col(r, 3)?,
            })
        },
    )
    .optional()
    .context(format!("read the lease of {pipeline}"))
}

fn held(pipeline: &str, row: &Row) -> Held {
    Held {
        pipeline: pipeline.to_string(),
        holder: row.holder.clone(),
        fence: row.fence,
        since: row.acquired_at,
        expires_at: row.expires_at,
    }
}

pub(super) fn expiry(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| StateError::Corrupt(format!("a lease of {ttl:?} is too long")))
}

/// Writes `holder`'s lease with the next fencing number after `prev` (none: the first).
fn take(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    holder: &str,
    prev: Option<i64>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Lease> {
    let fence = match prev {
        None => 1,
        Some(f) => f.checked_add(1).ok_or_else(|| {
            StateError::Corrupt(format!("the fencing number of {pipeline} overflowed"))
        })?,
    };
    let expires_at = expiry(now, ttl)?;
    tx.execute(
        "INSERT INTO leases (pipeline, holder, fence, acquired_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (pipeline) DO UPDATE SET holder = excluded.holder, fence = excluded.fence,
           acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
        params![pipeline, holder, fence, fmt_ts(now), fmt_ts(expires_at)],
    )
    .context(format!("take the lease of {pipeline}"))?;
    Ok(Lease {
        pipeline: pipeline.to_string(),
        holder: holder.to_string(),
        fence,
        acquired_at: now,
        expires_at,
    })
}

/// The SQLite side of the lease operations (each one IMMEDIATE transaction); the fencing
/// check is [`SqliteState::commit_batch_fenced`].
impl SqliteState {
    pub fn try_acquire(
        &self,
        pipeline: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let now = self.now();
        self.write("take a pipeline lease", |tx| {
            match read_row(tx, pipeline)? {
                None => take(tx, pipeline, holder, None, now, ttl).map(Ok),
                Some(row) if row.holder.is_empty() || row.expires_at <= now => {
                    take(tx, pipeline, holder, Some(row.fence), now, ttl).map(Ok)
                }
                // Held and not expired, by another holder or by this one (a second run in
                // the same process waits like any other).
                Some(row) => Ok(Err(held(pipeline, &row))),
            }
        })
    }

    pub fn take_over(
        &self,
        was: &Held,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let now = self.now();
        self.write("take over a pipeline lease", |tx| {
            match read_row(tx, &was.pipeline)? {
                Some(row) if row.holder == was.holder && row.fence == was.fence => {
                    take(tx, &was.pipeline, holder, Some(row.fence), now, ttl).map(Ok)
                }
                None => take(tx, &was.pipeline, holder, None, now, ttl).map(Ok),
                Some(row) if row.holder.is_empty() || row.expires_at <= now => {
                    take(tx, &was.pipeline, holder, Some(row.fence), now, ttl).map(Ok)
                }
                Some(row) => Ok(Err(held(&was.pipeline, &row))),
            }
        })
    }

    pub fn renew(&self, lease: &Lease, ttl: Duration) -> Result<std::result::Result<Lease, Held>> {
        let now = self.now();
        self.write("renew a pipeline lease", |tx| {
            let row = read_row(tx, &lease.pipeline)?;
            match row {
                // Still ours (even if it expired meanwhile: nobody took it, so the fencing
                // number still stands).
                Some(row) if row.holder == lease.holder && row.fence == lease.fence => {
                    let expires_at = expiry(now, ttl)?;
                    tx.execute(
                        "UPDATE leases SET expires_at = ?2 WHERE pipeline = ?1",
                        params![lease.pipeline, fmt_ts(expires_at)],
                    )
                    .context("renew a pipeline lease")?;
                    Ok(Ok(Lease {
                        expires_at,
                        ..lease.clone()
                    }))
                }
                Some(row) => Ok(Err(held(&lease.pipeline, &row))),
                None => Ok(Err(Held {
                    pipeline: lease.pipeline.clone(),
                    holder: String::new(),
                    fence: 0,
                    since: now,
                    expires_at: now,
                })),
            }
        })
    }

    pub fn release(&self, lease: &Lease) -> Result<()> {
        let now = fmt_ts(self.now());
        self.write("release a pipeline lease", |tx| {
            tx.execute(
                "UPDATE leases SET holder = '', expires_at = ?4
                 WHERE pipeline = ?1 AND holder = ?2 AND fence = ?3",
                params![lease.pipeline, lease.holder, lease.fence, now],
            )
            .context("release a pipeline lease")?;
            Ok(())
        })
    }

    pub fn lease_holder(&self, pipeline: &str) -> Result<Option<Held>> {
        let now = self.now();
        let conn = self.conn();
        Ok(read_row(&conn, pipeline)?
            .filter(|r| !r.holder.is_empty() && r.expires_at > now)
            .map(|r| held(pipeline, &r)))
    }
}

/// Checks, inside a batch commit's transaction, that `lease` still holds: the same holder and
/// fencing number. `Some(row)` (the lease as it is now; empty holder when released) when not.
pub(super) fn fence_lost(tx: &rusqlite::Transaction<'_>, lease: &Lease) -> Result<Option<Held>> {
    match read_row(tx, &lease.pipeline)? {
        Some(row) if row.holder == lease.holder && row.fence == lease.fence => Ok(None),
        Some(row) => Ok(Some(held(&lease.pipeline, &row))),
        None => Ok(Some(Held {
            pipeline: lease.pipeline.clone(),
            holder: String::new(),
            fence: 0,
            since: lease.acquired_at,
            expires_at: lease.acquired_at,
        })),
    }
}

// ---- holder identity -------------------------------------------------------------------

/// This process's holder id: `host:pid:pid-namespace:random`. The random part tells apart two
/// processes that had the same pid; the namespace tells apart containers sharing a host name.
pub fn process_holder_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        format!(
            "{}:{}:{}:{:08x}",
            hostname(),
            std::process::id(),
            pid_namespace(),
            rand::random::<u32>()
        )
    })
}

struct HolderParts<'a> {
    host: &'a str,
    pid: u32,
    ns: &'a str,
}

fn parse_holder(holder: &str) -> Option<HolderParts<'_>> {
    let mut it = holder.split(':');
    let host = it.next()?;
    let pid = it.next()?.parse().ok()?;
    let ns = it.next()?;
    let _rand = it.next()?;
    if it.next().is_some() || host.is_empty() {
        return None;
    }
    Some(HolderParts { host, pid, ns })
}

/// "process 1234 on host web-1" for a holder id ferry made, else the id itself.
pub fn describe_holder(holder: &str) -> String {
    match parse_holder(holder) {
        Some(p) => format!("process {} on host {}", p.pid, p.host),
        None if holder.is_empty() => "nobody".to_string(),
        None => holder.to_string(),
    }
}

/// True only when `holder` was a process of this host and this pid namespace that no longer
/// exists, so its lease can be taken over before it expires (a `ferry run` killed with
/// SIGKILL). Anything uncertain (another host, another container, a pid that exists, even a
/// reused one) is not dead: that lease is waited out.
pub fn holder_is_dead(holder: &str) -> bool {
    let Some(p) = parse_holder(holder) else {
        return false;
    };
    if p.host != hostname() || p.ns != pid_namespace() || p.ns.is_empty() {
        return false;
    }
    if holder == process_holder_id() {
        return false;
    }
    if p.pid == std::process::id() {
        // Same pid, another random part: an earlier process that had this pid.
        return true;
    }
    process_gone(p.pid)
}

/// Whether a process of this pid namespace has ended: its `/proc` entry is gone. Where there
/// is no `/proc` (pid_namespace is then empty and this is never asked), nobody is presumed dead.
fn process_gone(pid: u32) -> bool {
    pid != 0
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn hostname() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let name: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != ':' && !c.is_control() && !c.is_whitespace())
            .take(255)
            .collect();
        if name.is_empty() {
            "localhost".to_string()
        } else {
            name
        }
    })
    .clone()
}

/// The pid namespace's inode on Linux (`pid:[4026531836]` → `4026531836`), else empty.
fn pid_namespace() -> String {
    static NS: OnceLock<String> = OnceLock::new();
    NS.get_or_init(|| {
        std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|p| {
                let s = p.to_string_lossy().to_string();
                let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
                (!digits.is_empty()).then_some(digits)
            })
            .unwrap_or_default()
    })
    .clone()
}

// ---- holding a lease while a run goes on -----------------------------------------------

/// Takes the pipeline's lease for this process: at once when free or expired, or from a
/// holder that is gone (see [`holder_is_dead`]). `Err(Held)` when another process has it.
pub async fn acquire_now(
    store: &Store,
    pipeline: &str,
    ttl: Duration,
) -> Result<std::result::Result<Lease, Held>> {
    let me = process_holder_id();
    match store.try_acquire(pipeline, me, ttl).await? {
        Ok(l) => Ok(Ok(l)),
        Err(h) if holder_is_dead(&h.holder) => {
            tracing::info!(
                pipeline,
                "taking over the lease of {}, which no longer runs",
                describe_holder(&h.holder)
            );
            store.take_over(&h, me, ttl).await
        }
        Err(h) => Ok(Err(h)),
    }
}

/// Like [`acquire_now`], trying again every second (on `store`'s clock) for up to `wait`.
pub async fn acquire_waiting(
    store: &Store,
    pipeline: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<std::result::Result<Lease, Held>> {
    let deadline = expiry(store.now(), wait)?;
    loop {
        match acquire_now(store, pipeline, ttl).await? {
            Ok(l) => return Ok(Ok(l)),
            Err(h) => {
                let now = store.now();
                if now >= deadline {
                    return Ok(Err(h));
                }
                let left = (deadline - now).to_std().unwrap_or_default();
                store.clock().sleep(left.min(Duration::from_secs(1))).await;
            }
        }
    }
}

/// Renews a lease when a third of its length has passed on the store's clock since the last
/// renewal. [`LeaseGuard`] calls it from a background task; tests call it directly.
pub struct LeaseKeeper {
    store: Store,
    ttl: Duration,
    lease: Mutex<Lease>,
    last_renewed: Mutex<DateTime<Utc>>,
    lost: AtomicBool,
}

/// What one [`LeaseKeeper::renew_if_due`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    NotDue,
    Renewed(DateTime<Utc>),
    /// The lease changed hands; the run's next commit will not move the checkpoint.
    Lost(Held),
}

impl LeaseKeeper {
    pub fn new(store: Store, lease: Lease, ttl: Duration) -> Self {
        let now = store.now();
        LeaseKeeper {
            store,
            ttl,
            lease: Mutex::new(lease),
            last_renewed: Mutex::new(now),
            lost: AtomicBool::new(false),
        }
    }

    pub fn lease(&self) -> Lease {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub async fn renew_if_due(&self) -> Result<Renewal> {
        if self.is_lost() {
            return Ok(Renewal::NotDue);
        }
        let now = self.store.now();
        let last = *self.last_renewed.lock().unwrap_or_else(|e| e.into_inner());
        let third = chrono::Duration::from_std(self.ttl / 3).unwrap_or(chrono::Duration::MAX);
        if now.signed_duration_since(last) < third {
            return Ok(Renewal::NotDue);
        }
        let lease = self.lease();
        match self.store.renew(&lease, self.ttl).await? {
            Ok(l) => {
                let exp = l.expires_at;
                *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = l;
                *self.last_renewed.lock().unwrap_or_else(|e| e.into_inner()) = now;
                Ok(Renewal::Renewed(exp))
            }
            Err(h) => {
                self.lost.store(true, Ordering::SeqCst);
                Ok(Renewal::Lost(h))
            }
        }
    }
}

/// A lease held for a run: renewed in the background, given up by [`LeaseGuard::release`]
/// (or, as a fallback, in the background when dropped).
pub struct LeaseGuard {
    keeper: Arc<LeaseKeeper>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

impl LeaseGuard {
    /// Starts renewing `lease`: the store's clock is looked at every second of real time (or
    /// a third of the lease when shorter), and the lease renewed once a third of it passed.
    /// Needs a tokio runtime.
    pub fn hold(store: &Store, lease: Lease, ttl: Duration) -> LeaseGuard {
        let keeper = Arc::new(LeaseKeeper::new(store.clone(), lease, ttl));
        let poll = (ttl / 3).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let k = keeper.clone();
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                match k.renew_if_due().await {
                    Ok(Renewal::Lost(h)) => {
                        tracing::warn!(
                            pipeline = %h.pipeline,
                            "lost the pipeline's lease to {}; this run will stop at its next batch",
                            describe_holder(&h.holder)
                        );
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("could not renew a pipeline lease: {e}"),
                }
            }
        });
        LeaseGuard {
            keeper,
            renewer: Some(renewer),
            released: false,
        }
    }

    /// The lease as first taken (its fencing number is what commits check).
    pub fn lease(&self) -> Lease {
        self.keeper.lease()
    }

    /// Stops renewing and gives the lease up; the state has recorded it when this returns.
    /// A failure is logged: the lease then expires after its length.
    pub async fn release(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        self.released = true;
        let lease = self.keeper.lease();
        if let Err(e) = self.keeper.store.release(&lease).await {
            tracing::warn!(
                pipeline = %lease.pipeline,
                "could not release a pipeline lease (it expires on its own): {e}"
            );
        }
    }
}

impl Drop for LeaseGuard {
    /// A guard dropped without [`LeaseGuard::release`] (an early return, a panic) gives its
    /// lease up in the background when a tokio runtime is there; otherwise the lease expires
    /// after its length.
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if self.released {
            return;
        }
        let store = self.keeper.store.clone();
        let lease = self.keeper.lease();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = store.release(&lease).await {
                        tracing::warn!(
                            pipeline = %lease.pipeline,
                            "could not release a pipeline lease (it expires on its own): {e}"
                        );
                    }
                });
            }
            Err(_) => tracing::warn!(
                pipeline = %lease.pipeline,
                "a pipeline lease was dropped outside a runtime; it expires on its own"
            ),
        }
    }
}
