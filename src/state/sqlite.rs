//! The SQLite backend of the state: one file in WAL mode with `synchronous=FULL` (a committed
//! batch survives a power cut), every read-modify-write in an IMMEDIATE transaction (two ferry
//! processes sharing a file queue up instead of failing half way), schema changes as numbered
//! migrations in `PRAGMA user_version`.
//!
//! [`SqliteState`]'s operations are synchronous (they live in the area files: `checkpoints.rs`,
//! `ledger.rs`, ...); its [`StateBackend`] implementation below runs each one on tokio's
//! blocking pool, so SQLite never blocks an async worker thread.

use super::backend::StateBackend;
use super::{
    BatchCommit, Checkpoint, CheckpointRow, Context, DeadLetter, DeadLetterCount, ForgetReport,
    Held, InboxCounts, InboxEntry, InboxEvent, InboxFailure, Lease, LedgerCount, LedgerEntry,
    NewDeadLetter, Result, RunRow, STATE_KEY_ENV, StateError, StateKey, StoredToken, SubjectEntry,
    SubjectHit, key_file_path, load_or_create_key_file, schema, tokens,
};
use crate::clock::{SharedClock, SystemClock};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite backend: one connection behind a mutex, shared by clones. Its inherent methods
/// (in the area files of this folder) are synchronous; [`StateBackend`] runs each on tokio's
/// blocking pool.
#[derive(Clone)]
pub(crate) struct SqliteState {
    inner: Arc<Inner>,
    clock: SharedClock,
}

struct Inner {
    conn: Mutex<Connection>,
    key: StateKey,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteState")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteState {
    /// Opens (creating if needed) the state file at `path`. The key comes from
    /// `FERRY_STATE_KEY`, else from `<path>.key`, which is created (mode 0600) on first use.
    pub fn open(path: &Path) -> Result<SqliteState> {
        let env_key = std::env::var(STATE_KEY_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty());
        let existed = path.exists();
        let conn = open_connection(path)?;
        let key = match env_key {
            Some(k) => StateKey::parse(&k)?,
            None => {
                let key_path = key_file_path(path);
                if existed && !key_path.exists() && schema::has_key_check(&conn)? {
                    return Err(StateError::MissingKey {
                        path: path.to_path_buf(),
                        key_path,
                    });
                }
                load_or_create_key_file(&key_path)?
            }
        };
        Self::finish_open(conn, key, Some(path.to_path_buf()))
    }

    /// Opens the state file at `path` with an explicit key.
    pub fn open_with_key(path: &Path, key: [u8; 32]) -> Result<SqliteState> {
        let conn = open_connection(path)?;
        Self::finish_open(conn, StateKey::from_bytes(key), Some(path.to_path_buf()))
    }

    /// A private in-memory store with a random key (tests, `ferry test`, dry runs).
    pub fn in_memory() -> Result<SqliteState> {
        let conn = Connection::open_in_memory().context("open an in-memory database")?;
        configure(&conn, false)?;
        Self::finish_open(conn, StateKey::random(), None)
    }

    fn finish_open(
        mut conn: Connection,
        key: StateKey,
        path: Option<PathBuf>,
    ) -> Result<SqliteState> {
        schema::migrate(&mut conn)?;
        if !tokens::verify_or_record_key_check(&mut conn, &key)? {
            let p = path.clone().unwrap_or_default();
            return Err(StateError::WrongKey {
                key_path: key_file_path(&p),
                path: p,
            });
        }
        Ok(SqliteState {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                key,
                path,
            }),
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for the timestamps the store records (tests drive time with it).
    pub fn with_clock(mut self, clock: SharedClock) -> SqliteState {
        self.clock = clock;
        self
    }

    /// Where the state lives (`None` for an in-memory store).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64> {
        let conn = self.conn();
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .context("read the schema version")
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: an open
        // transaction is rolled back when its guard drops. The connection stays usable.
        self.inner.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` inside one IMMEDIATE transaction: all of it commits or none of it does.
    pub(crate) fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(format!("begin a transaction to {what}"))?;
        let out = f(&tx)?;
        tx.commit().context(format!("commit ({what})"))?;
        Ok(out)
    }

    pub(crate) fn key(&self) -> &StateKey {
        &self.inner.key
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            // Only directories created here; an existing one keeps its mode.
            builder.mode(0o700);
        }
        builder.create(dir).map_err(|source| StateError::Io {
            context: "cannot create the state directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    create_private(path)?;
    let conn = Connection::open(path).context(format!("open {}", path.display()))?;
    configure(&conn, true)?;
    Ok(conn)
}

/// Creates the state file empty and readable only by its owner before SQLite opens it:
/// SQLite gives its -wal and -shm files the mode of the database file, so they are private
/// too. An existing file keeps its mode.
fn create_private(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StateError::Io {
            context: "cannot create the state file",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn configure(conn: &Connection, wal: bool) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .context("set busy_timeout")?;
    if wal {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .context("switch to WAL mode")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Corrupt(format!(
                "cannot use WAL mode (got {mode}); is the file on a network drive?"
            )));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .context("set synchronous=FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .context("enable foreign keys")?;
    Ok(())
}

impl SqliteState {
    /// Runs `f` on tokio's blocking pool with a clone of this handle (the connection is
    /// shared): SQLite waits (fsync, another process's lock) never hold an async worker.
    async fn blocking<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&SqliteState) -> Result<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StateError::Blocking {
                what,
                why: if e.is_panic() {
                    "it panicked".to_string()
                } else {
                    "it was cancelled".to_string()
                },
            })?
    }
}

fn owned(s: &str) -> String {
    s.to_string()
}

fn owned_opt(s: Option<&str>) -> Option<String> {
    s.map(str::to_string)
}

#[async_trait::async_trait]
impl StateBackend for SqliteState {
    fn with_clock(&self, clock: SharedClock) -> Arc<dyn StateBackend> {
        Arc::new(self.clone().with_clock(clock))
    }

    fn path(&self) -> Option<&Path> {
        SqliteState::path(self)
    }

    async fn schema_version(&self) -> Result<i64> {
        self.blocking("read the schema version", |s| s.schema_version())
            .await
    }

    async fn checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>> {
        let (p, st, pa) = (owned(pipeline), owned(stream), owned(partition));
        self.blocking("read a checkpoint", move |s| s.checkpoint(&p, &st, &pa))
            .await
    }

    async fn checkpoints(&self, pipeline: Option<&str>) -> Result<Vec<CheckpointRow>> {
        let p = owned_opt(pipeline);
        self.blocking("list checkpoints", move |s| s.checkpoints(p.as_deref()))
            .await
    }

    async fn set_checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
        cursor: &str,
    ) -> Result<()> {
        let (p, st, pa, c) = (
            owned(pipeline),
            owned(stream),
            owned(partition),
            owned(cursor),
        );
        self.blocking("save a checkpoint", move |s| {
            s.set_checkpoint(&p, &st, &pa, &c)
        })
        .await
    }

    async fn rewind(&self, pipeline: &str, to: DateTime<Utc>) -> Result<usize> {
        let p = owned(pipeline);
        self.blocking("rewind checkpoints", move |s| s.rewind(&p, to))
            .await
    }

    async fn reset(&self, pipeline: &str) -> Result<usize> {
        let p = owned(pipeline);
        self.blocking("reset checkpoints", move |s| s.reset(&p))
            .await
    }

    async fn reset_ledger(&self, pipeline: &str) -> Result<usize> {
        let p = owned(pipeline);
        self.blocking("reset the ledger", move |s| s.reset_ledger(&p))
            .await
    }

    async fn ledger_get_many(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerEntry>> {
        let (p, sk, k) = (owned(pipeline), owned(sink), keys.to_vec());
        self.blocking("read the ledger", move |s| s.ledger_get_many(&p, &sk, &k))
            .await
    }

    async fn ledger_mark_pending(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[(String, String)],
    ) -> Result<()> {
        let (p, sk, k) = (owned(pipeline), owned(sink), keys.to_vec());
        self.blocking("mark ledger rows pending", move |s| {
            s.ledger_mark_pending(&p, &sk, &k)
        })
        .await
    }

    async fn commit_batch_fenced(&self, batch: &BatchCommit, lease: Option<&Lease>) -> Result<()> {
        let (b, l) = (batch.clone(), lease.cloned());
        self.blocking("commit a batch", move |s| {
            s.commit_batch_fenced(&b, l.as_ref())
        })
        .await
    }

    async fn ledger_counts(&self, pipeline: Option<&str>) -> Result<Vec<LedgerCount>> {
        let p = owned_opt(pipeline);
        self.blocking("count ledger rows", move |s| s.ledger_counts(p.as_deref()))
            .await
    }

    async fn cache_get_many(
        &self,
        scope: &str,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, serde_json::Value>> {
        let (sc, k) = (owned(scope), keys.to_vec());
        self.blocking("read the lookup cache", move |s| {
            s.cache_get_many(&sc, &k, now)
        })
        .await
    }

    async fn cache_put_many(
        &self,
        scope: &str,
        entries: &[(String, serde_json::Value)],
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let (sc, e) = (owned(scope), entries.to_vec());
        self.blocking("write the lookup cache", move |s| {
            s.cache_put_many(&sc, &e, expires_at)
        })
        .await
    }

    async fn cache_purge(&self, now: DateTime<Utc>) -> Result<usize> {
        self.blocking("purge the lookup cache", move |s| s.cache_purge(now))
            .await
    }

    async fn cache_clear_scope(&self, scope: &str) -> Result<usize> {
        let sc = owned(scope);
        self.blocking("clear the lookup cache", move |s| s.cache_clear_scope(&sc))
            .await
    }

    async fn deadletters_add(&self, pipeline: &str, letters: &[NewDeadLetter]) -> Result<()> {
        let (p, l) = (owned(pipeline), letters.to_vec());
        self.blocking("add dead letters", move |s| s.deadletters_add(&p, &l))
            .await
    }

    async fn deadletters(&self, pipeline: Option<&str>) -> Result<Vec<DeadLetter>> {
        let p = owned_opt(pipeline);
        self.blocking("list dead letters", move |s| s.deadletters(p.as_deref()))
            .await
    }

    async fn deadletter(&self, id: i64) -> Result<Option<DeadLetter>> {
        self.blocking("read a dead letter", move |s| s.deadletter(id))
            .await
    }

    async fn deadletters_drop(&self, ids: &[i64]) -> Result<usize> {
        let i = ids.to_vec();
        self.blocking("drop dead letters", move |s| s.deadletters_drop(&i))
            .await
    }

    async fn deadletters_drop_all(&self, pipeline: Option<&str>) -> Result<usize> {
        let p = owned_opt(pipeline);
        self.blocking("drop dead letters", move |s| {
            s.deadletters_drop_all(p.as_deref())
        })
        .await
    }

    async fn deadletters_mark_retry(&self, ids: &[i64]) -> Result<usize> {
        let i = ids.to_vec();
        self.blocking("mark dead letters for retry", move |s| {
            s.deadletters_mark_retry(&i)
        })
        .await
    }

    async fn deadletters_mark_retry_all(&self, pipeline: Option<&str>) -> Result<usize> {
        let p = owned_opt(pipeline);
        self.blocking("mark dead letters for retry", move |s| {
            s.deadletters_mark_retry_all(p.as_deref())
        })
        .await
    }

    async fn deadletters_due(&self, pipeline: &str) -> Result<Vec<DeadLetter>> {
        let p = owned(pipeline);
        self.blocking("list dead letters to retry", move |s| s.deadletters_due(&p))
            .await
    }

    async fn deadletter_retry_failed(&self, id: i64, error: &str) -> Result<()> {
        let e = owned(error);
        self.blocking("record a failed retry", move |s| {
            s.deadletter_retry_failed(id, &e)
        })
        .await
    }

    async fn deadletter_counts(&self) -> Result<Vec<DeadLetterCount>> {
        self.blocking("count dead letters", |s| s.deadletter_counts())
            .await
    }

    async fn token_put(
        &self,
        name: &str,
        value: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let (n, v) = (owned(name), owned(value));
        self.blocking("store a token", move |s| s.token_put(&n, &v, expires_at))
            .await
    }

    async fn token_get(&self, name: &str) -> Result<Option<StoredToken>> {
        let n = owned(name);
        self.blocking("read a token", move |s| s.token_get(&n))
            .await
    }

    async fn token_delete(&self, name: &str) -> Result<bool> {
        let n = owned(name);
        self.blocking("delete a token", move |s| s.token_delete(&n))
            .await
    }

    async fn inbox_put(
        &self,
        delivery_id: &str,
        event: &str,
        payload: &serde_json::Value,
        received_at: DateTime<Utc>,
    ) -> Result<bool> {
        let (d, e, p) = (owned(delivery_id), owned(event), payload.clone());
        self.blocking("keep a webhook event", move |s| {
            s.inbox_put(&d, &e, &p, received_at)
        })
        .await
    }

    async fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxEvent>> {
        self.blocking("list pending webhook events", move |s| {
            s.inbox_pending(limit)
        })
        .await
    }

    async fn inbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>> {
        self.blocking("list due webhook events", move |s| s.inbox_due(now, limit))
            .await
    }

    async fn inbox_done(&self, id: i64) -> Result<()> {
        self.blocking("finish a webhook event", move |s| s.inbox_done(id))
            .await
    }

    async fn inbox_failed(&self, id: i64, error: &str) -> Result<InboxFailure> {
        let e = owned(error);
        self.blocking("record a failed webhook event", move |s| {
            s.inbox_failed(id, &e)
        })
        .await
    }

    async fn inbox_retry(&self, id: i64) -> Result<bool> {
        self.blocking("retry a webhook event", move |s| s.inbox_retry(id))
            .await
    }

    async fn inbox_list(&self, dead_only: bool, limit: usize) -> Result<Vec<InboxEntry>> {
        self.blocking("list webhook events", move |s| {
            s.inbox_list(dead_only, limit)
        })
        .await
    }

    async fn inbox_entry(&self, id: i64) -> Result<Option<InboxEntry>> {
        self.blocking("read a webhook event", move |s| s.inbox_entry(id))
            .await
    }

    async fn inbox_counts(&self) -> Result<InboxCounts> {
        self.blocking("count webhook events", |s| s.inbox_counts())
            .await
    }

    async fn inbox_depth(&self) -> Result<u64> {
        self.blocking("count pending webhook events", |s| s.inbox_depth())
            .await
    }

    async fn inbox_purge(
        &self,
        done_before: DateTime<Utc>,
        failed_before: DateTime<Utc>,
    ) -> Result<usize> {
        self.blocking("purge webhook events", move |s| {
            s.inbox_purge(done_before, failed_before)
        })
        .await
    }

    async fn run_started(
        &self,
        pipeline: &str,
        run_id: &str,
        started_at: DateTime<Utc>,
    ) -> Result<()> {
        let (p, r) = (owned(pipeline), owned(run_id));
        self.blocking("record a run", move |s| s.run_started(&p, &r, started_at))
            .await
    }

    async fn run_finished(
        &self,
        run_id: &str,
        finished_at: DateTime<Utc>,
        ok: bool,
        summary: &serde_json::Value,
    ) -> Result<()> {
        let (r, sm) = (owned(run_id), summary.clone());
        self.blocking("record a run's end", move |s| {
            s.run_finished(&r, finished_at, ok, &sm)
        })
        .await
    }

    async fn run_trigger(&self, run_id: &str, trigger: &str) -> Result<()> {
        let (r, t) = (owned(run_id), owned(trigger));
        self.blocking("record what started a run", move |s| s.run_trigger(&r, &t))
            .await
    }

    async fn run_stopped(&self, run_id: &str, why: &str) -> Result<()> {
        let (r, w) = (owned(run_id), owned(why));
        self.blocking("record why a run stopped", move |s| s.run_stopped(&r, &w))
            .await
    }

    async fn set_labels(
        &self,
        scope: &str,
        labels: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (sc, l) = (owned(scope), labels.to_vec());
        self.blocking("store labels", move |s| s.set_labels(&sc, &l, now))
            .await
    }

    async fn labels(&self, scope: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let sc = owned(scope);
        self.blocking("read labels", move |s| s.labels(&sc)).await
    }

    async fn zoom_ledger_get(
        &self,
        pipeline: &str,
        object: &str,
        keys: &[String],
    ) -> Result<HashMap<String, super::ZoomLedgerRow>> {
        let (p, o, k) = (owned(pipeline), owned(object), keys.to_vec());
        self.blocking("read the Zoom ledger", move |s| {
            s.zoom_ledger_get(&p, &o, &k)
        })
        .await
    }

    async fn zoom_ledger_put(
        &self,
        pipeline: &str,
        object: &str,
        rows: &[super::ZoomLedgerRow],
    ) -> Result<()> {
        let (p, o, r) = (owned(pipeline), owned(object), rows.to_vec());
        self.blocking("save Zoom ledger rows", move |s| {
            s.zoom_ledger_put(&p, &o, &r)
        })
        .await
    }

    async fn zoom_ledger_owners(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<HashMap<String, (String, String)>> {
        let (o, i) = (owned(object), ids.to_vec());
        self.blocking("read the Zoom ledger", move |s| {
            s.zoom_ledger_owners(&o, &i)
        })
        .await
    }

    async fn zoom_defer(&self, rows: &[super::Deferral]) -> Result<()> {
        let r = rows.to_vec();
        self.blocking("save deferrals", move |s| s.zoom_defer(&r))
            .await
    }

    async fn zoom_deferrals(&self, pipeline: Option<&str>) -> Result<Vec<super::Deferral>> {
        let p = owned_opt(pipeline);
        self.blocking("read deferrals", move |s| s.zoom_deferrals(p.as_deref()))
            .await
    }

    async fn zoom_undefer(&self, pipeline: &str, sink: &str, keys: &[String]) -> Result<()> {
        let (p, sk, k) = (owned(pipeline), owned(sink), keys.to_vec());
        self.blocking("drop deferrals", move |s| s.zoom_undefer(&p, &sk, &k))
            .await
    }

    async fn zoom_deferral_summary(
        &self,
        pipeline: Option<&str>,
    ) -> Result<Vec<super::DeferralSummary>> {
        let p = owned_opt(pipeline);
        self.blocking("count deferrals", move |s| {
            s.zoom_deferral_summary(p.as_deref())
        })
        .await
    }

    async fn last_runs(&self) -> Result<Vec<RunRow>> {
        self.blocking("list the last runs", |s| s.last_runs()).await
    }

    async fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRow>> {
        let p = owned_opt(pipeline);
        self.blocking("list runs", move |s| s.runs(p.as_deref(), limit))
            .await
    }

    fn subject_hash(&self, email: &str) -> String {
        SqliteState::subject_hash(self, email)
    }

    async fn subject_index_find(&self, hash: &str) -> Result<Vec<SubjectEntry>> {
        let h = owned(hash);
        self.blocking("read the subject index", move |s| s.subject_index_find(&h))
            .await
    }

    async fn subject_scan(&self, email: &str, hash: &str) -> Result<Vec<SubjectHit>> {
        let (e, h) = (owned(email), owned(hash));
        self.blocking("search the state for an address", move |s| {
            s.subject_scan(&e, &h)
        })
        .await
    }

    async fn subject_zoom(&self, email: &str) -> Result<Vec<super::ZoomSubjectRow>> {
        let e = owned(email);
        self.blocking("read the Zoom ledger for an address", move |s| {
            s.subject_zoom(&e)
        })
        .await
    }

    async fn subject_forget(&self, email: &str, hash: &str) -> Result<ForgetReport> {
        let (e, h) = (owned(email), owned(hash));
        self.blocking("forget an address", move |s| s.subject_forget(&e, &h))
            .await
    }

    async fn try_acquire(
        &self,
        pipeline: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let (p, h) = (owned(pipeline), owned(holder));
        self.blocking("take a pipeline lease", move |s| s.try_acquire(&p, &h, ttl))
            .await
    }

    async fn take_over(
        &self,
        held: &Held,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let (was, h) = (held.clone(), owned(holder));
        self.blocking("take over a pipeline lease", move |s| {
            s.take_over(&was, &h, ttl)
        })
        .await
    }

    async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let l = lease.clone();
        self.blocking("renew a pipeline lease", move |s| s.renew(&l, ttl))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let l = lease.clone();
        self.blocking("release a pipeline lease", move |s| s.release(&l))
            .await
    }

    async fn lease_holder(&self, pipeline: &str) -> Result<Option<Held>> {
        let p = owned(pipeline);
        self.blocking("read a pipeline lease", move |s| s.lease_holder(&p))
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// On a single-threaded runtime, a state call waiting on SQLite (here: on the connection,
    /// held by the test) does not hold the runtime's only worker: other tasks go on, and the
    /// call finishes once the connection is free. Were the call run on the worker, the test
    /// would never get past its first `yield_now`.
    #[tokio::test(flavor = "current_thread")]
    #[allow(clippy::await_holding_lock)] // holding the connection is the point
    async fn a_waiting_call_does_not_block_the_async_worker() {
        let state = SqliteState::in_memory().unwrap();
        let backend: Arc<dyn StateBackend> = Arc::new(state.clone());
        let held = state.conn();
        let call = tokio::spawn(async move { backend.inbox_depth().await });
        let ticker = tokio::spawn(async {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            "ticked"
        });
        // A safeguard against a hang, not a timing assertion.
        let ticked = tokio::time::timeout(Duration::from_secs(30), ticker)
            .await
            .expect("the worker was blocked")
            .unwrap();
        assert_eq!(ticked, "ticked");
        assert!(!call.is_finished(), "the call could not have read yet");
        drop(held);
        assert_eq!(call.await.unwrap().unwrap(), 0);
    }

    /// The SQLite work runs on another thread than the runtime's worker.
    #[tokio::test(flavor = "current_thread")]
    async fn calls_run_on_the_blocking_pool() {
        let state = SqliteState::in_memory().unwrap();
        let worker = std::thread::current().id();
        let ran_on = state
            .blocking("test", |_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran_on, worker);
    }
}
