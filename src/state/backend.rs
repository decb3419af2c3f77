//! The state interface: every read and write the engine, the daemon and the CLI make to the
//! state goes through [`StateBackend`], reached through a [`Store`](super::Store) handle.
//!
//! A backend implements each operation as one atomic step (a transaction where it writes), and
//! keeps these guarantees:
//! - a [`BatchCommit`]'s ledger rows, dead letters and checkpoints are applied in one
//!   transaction; under a lease, the lease's fencing number is checked inside it
//!   ([`StateBackend::commit_batch_fenced`]): a lost lease still saves the ledger rows and
//!   dead letters but not the checkpoints, and answers [`StateError::LeaseLost`](super::StateError::LeaseLost);
//! - a stored token is encrypted at rest and durable when `token_put` returns;
//! - a lease has one holder at a time and a fencing number that grows each time it changes
//!   hands.
//!
//! The SQLite backend ([`super::sqlite`]) runs every call on tokio's blocking pool, so no
//! call blocks an async worker thread. Calls need a tokio runtime (either flavour).

use super::{
    BatchCommit, Checkpoint, CheckpointRow, DeadLetter, DeadLetterCount, ForgetReport, Held,
    InboxCounts, InboxEntry, InboxEvent, InboxFailure, Lease, LedgerCount, LedgerEntry,
    NewDeadLetter, Result, RunRow, StoredToken, SubjectEntry, SubjectHit, TokenLock,
};
use crate::clock::SharedClock;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A state backend: checkpoints, the ledger, the lookup cache, dead letters, tokens, the
/// webhook inbox, run history and pipeline leases. Timestamps a backend records itself
/// (`updated_at`, lease times, ...) come from the clock it was given ([`Self::with_clock`]).
#[async_trait::async_trait]
pub trait StateBackend: std::fmt::Debug + Send + Sync {
    // ---- the backend itself -----------------------------------------------------------

    /// The same state (shared connection or pool) recording time from `clock`.
    fn with_clock(&self, clock: SharedClock) -> Arc<dyn StateBackend>;
    /// Where the state lives, when it is a local file (`None` in memory or on a server).
    fn path(&self) -> Option<&Path>;
    /// Where the state lives, fit to show (a file's path; a database URL without its
    /// password).
    fn location(&self) -> String {
        match self.path() {
            Some(p) => format!("the state file {}", p.display()),
            None => "an in-memory state".to_string(),
        }
    }
    /// The schema version of the state.
    async fn schema_version(&self) -> Result<i64>;

    // ---- checkpoints --------------------------------------------------------------------

    /// The cursor of one stream partition of a pipeline.
    async fn checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>>;
    /// Every checkpoint, of one pipeline or all.
    async fn checkpoints(&self, pipeline: Option<&str>) -> Result<Vec<CheckpointRow>>;
    async fn set_checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
        cursor: &str,
    ) -> Result<()>;
    /// Moves the time cursors of a pipeline back to `to` (never forward); how many moved.
    async fn rewind(&self, pipeline: &str, to: DateTime<Utc>) -> Result<usize>;
    /// Forgets a pipeline's checkpoints; how many.
    async fn reset(&self, pipeline: &str) -> Result<usize>;

    // ---- the write ledger ---------------------------------------------------------------

    /// Forgets a pipeline's ledger rows; how many.
    async fn reset_ledger(&self, pipeline: &str) -> Result<usize>;
    /// The ledger rows of `keys` in one sink.
    async fn ledger_get_many(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerEntry>>;
    /// Records (key, hash) creates as pending before they are sent.
    async fn ledger_mark_pending(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[(String, String)],
    ) -> Result<()>;
    /// Applies a batch's ledger rows, dead letters and checkpoints in one transaction.
    async fn commit_batch(&self, batch: &BatchCommit) -> Result<()> {
        self.commit_batch_fenced(batch, None).await
    }
    /// [`Self::commit_batch`] under `lease`: the fencing number is checked inside the
    /// transaction (see the module docs).
    async fn commit_batch_fenced(&self, batch: &BatchCommit, lease: Option<&Lease>) -> Result<()>;
    /// Written and pending ledger rows per pipeline and sink.
    async fn ledger_counts(&self, pipeline: Option<&str>) -> Result<Vec<LedgerCount>>;

    // ---- the lookup cache ---------------------------------------------------------------

    /// The cached answers of `keys` in `scope` not expired at `now`.
    async fn cache_get_many(
        &self,
        scope: &str,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, serde_json::Value>>;
    async fn cache_put_many(
        &self,
        scope: &str,
        entries: &[(String, serde_json::Value)],
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Forgets the entries expired at `now`; how many.
    async fn cache_purge(&self, now: DateTime<Utc>) -> Result<usize>;
    /// Forgets every entry of `scope`; how many.
    async fn cache_clear_scope(&self, scope: &str) -> Result<usize>;

    // ---- dead letters -------------------------------------------------------------------

    async fn deadletters_add(&self, pipeline: &str, letters: &[NewDeadLetter]) -> Result<()>;
    async fn deadletters(&self, pipeline: Option<&str>) -> Result<Vec<DeadLetter>>;
    async fn deadletter(&self, id: i64) -> Result<Option<DeadLetter>>;
    async fn deadletters_drop(&self, ids: &[i64]) -> Result<usize>;
    async fn deadletters_drop_all(&self, pipeline: Option<&str>) -> Result<usize>;
    /// Marks letters for the next run to retry; how many.
    async fn deadletters_mark_retry(&self, ids: &[i64]) -> Result<usize>;
    async fn deadletters_mark_retry_all(&self, pipeline: Option<&str>) -> Result<usize>;
    /// The letters of `pipeline` marked for retry.
    async fn deadletters_due(&self, pipeline: &str) -> Result<Vec<DeadLetter>>;
    /// A retry failed again: one more attempt, the new error, no longer marked.
    async fn deadletter_retry_failed(&self, id: i64, error: &str) -> Result<()>;
    async fn deadletter_counts(&self) -> Result<Vec<DeadLetterCount>>;

    // ---- tokens (encrypted at rest) -----------------------------------------------------

    /// Stores a secret by name; durable when it returns.
    async fn token_put(
        &self,
        name: &str,
        value: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()>;
    async fn token_get(&self, name: &str) -> Result<Option<StoredToken>>;
    async fn token_delete(&self, name: &str) -> Result<bool>;
    /// Serializes the refresh of the token `name` across processes sharing the state: held
    /// until the returned guard drops. A rotating refresh token is read again after taking
    /// it. The default holds nothing (one process per SQLite file refreshes under its own
    /// in-process lock).
    async fn token_lock(&self, _name: &str) -> Result<TokenLock> {
        Ok(TokenLock::none())
    }

    // ---- the webhook inbox --------------------------------------------------------------

    /// Keeps a delivery; `false` when that delivery id was already kept.
    async fn inbox_put(
        &self,
        delivery_id: &str,
        event: &str,
        payload: &serde_json::Value,
        received_at: DateTime<Utc>,
    ) -> Result<bool>;
    async fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxEvent>>;
    /// Pending events whose next attempt is due at `now`, oldest first.
    async fn inbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>>;
    async fn inbox_done(&self, id: i64) -> Result<()>;
    async fn inbox_failed(&self, id: i64, error: &str) -> Result<InboxFailure>;
    async fn inbox_retry(&self, id: i64) -> Result<bool>;
    async fn inbox_list(&self, dead_only: bool, limit: usize) -> Result<Vec<InboxEntry>>;
    async fn inbox_entry(&self, id: i64) -> Result<Option<InboxEntry>>;
    async fn inbox_counts(&self) -> Result<InboxCounts>;
    async fn inbox_depth(&self) -> Result<u64>;
    async fn inbox_purge(
        &self,
        done_before: DateTime<Utc>,
        failed_before: DateTime<Utc>,
    ) -> Result<usize>;

    // ---- run history --------------------------------------------------------------------

    async fn run_started(
        &self,
        pipeline: &str,
        run_id: &str,
        started_at: DateTime<Utc>,
    ) -> Result<()>;
    async fn run_finished(
        &self,
        run_id: &str,
        finished_at: DateTime<Utc>,
        ok: bool,
        summary: &serde_json::Value,
    ) -> Result<()>;
    /// What started a run (`schedule`, `webhook`, `manual API`, `ferry run`).
    async fn run_trigger(&self, run_id: &str, trigger: &str) -> Result<()>;
    /// Why a run stopped, already made fit for display.
    async fn run_stopped(&self, run_id: &str, why: &str) -> Result<()>;
    /// The latest run of each pipeline.
    async fn last_runs(&self) -> Result<Vec<RunRow>>;

    // ---- labels: what an id stands for (a Zoom user id's email), for the status page ----
    /// Stores labels of one scope, replacing earlier labels of the same ids.
    async fn set_labels(
        &self,
        scope: &str,
        labels: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Every label of one scope, by id.
    async fn labels(&self, scope: &str) -> Result<std::collections::BTreeMap<String, String>>;

    // ---- Zoom sinks: the Zoom ledger and deferrals (see `state::zoom`) -------------------
    /// The Zoom ledger rows of `keys` of one Zoom object of a pipeline.
    async fn zoom_ledger_get(
        &self,
        pipeline: &str,
        object: &str,
        keys: &[String],
    ) -> Result<HashMap<String, super::ZoomLedgerRow>>;
    /// Saves Zoom ledger rows at once (a create's pending mark, Zoom's answer).
    async fn zoom_ledger_put(
        &self,
        pipeline: &str,
        object: &str,
        rows: &[super::ZoomLedgerRow],
    ) -> Result<()>;
    /// Which of `ids` a key already owns, any pipeline: id → (pipeline, key).
    async fn zoom_ledger_owners(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<HashMap<String, (String, String)>>;
    /// Keeps records a daily limit holds back (replacing earlier ones of the same key).
    async fn zoom_defer(&self, rows: &[super::Deferral]) -> Result<()>;
    /// Deferrals of one pipeline or all, oldest first.
    async fn zoom_deferrals(&self, pipeline: Option<&str>) -> Result<Vec<super::Deferral>>;
    /// Forgets deferrals that were written (or are no longer wanted).
    async fn zoom_undefer(&self, pipeline: &str, sink: &str, keys: &[String]) -> Result<()>;
    /// How many records wait, per pipeline, sink, limit and host (registrants unnamed).
    async fn zoom_deferral_summary(
        &self,
        pipeline: Option<&str>,
    ) -> Result<Vec<super::DeferralSummary>>;
    /// The latest `limit` runs, of one pipeline or all, newest first.
    async fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRow>>;

    // ---- privacy requests: the subject index and forgetting one address -----------------
    // Index rows are written with a batch (`BatchCommit::subjects`, in its transaction): per
    // synced record, one row per address (by keyed hash) and, apart, one row per Salesforce
    // record written for it, stored once whatever the number of addresses (upserts, keyed by
    // (hash, pipeline, stream, record key) and (pipeline, stream, record key, sink, ledger
    // key)). A backend keeps the two apart so a record's rows grow as addresses + writes.

    /// The keyed hash of an address (trimmed, lowercased): HMAC-SHA256 under a key derived
    /// from the state's encryption key. Every backend sharing a state key gives the same.
    fn subject_hash(&self, email: &str) -> String;
    /// The index rows of one hashed address, joined with the writes of each record: one
    /// entry per (record, write), or one with an empty `sink` for a record nothing was
    /// written for. Ordered by record time, pipeline, stream, record key, sink, ledger key.
    async fn subject_index_find(&self, hash: &str) -> Result<Vec<SubjectEntry>>;
    /// Every place of the state holding `email` (lowercase) or the index rows of `hash`,
    /// with what [`Self::subject_forget`] would do there. Reads only.
    async fn subject_scan(&self, email: &str, hash: &str) -> Result<Vec<SubjectHit>>;
    /// The Zoom objects ferry made for an address (lowercase) and the writes for it that
    /// wait for a daily limit. Reads only.
    async fn subject_zoom(&self, email: &str) -> Result<Vec<super::ZoomSubjectRow>>;
    /// Removes `email` (lowercase) and the index rows of `hash` from the state: the index
    /// rows of `hash`, the written-record rows of records nobody else is indexed in, lookup
    /// cache entries, labels, finished webhook events and one person's dead letters are
    /// deleted; record and ledger keys of the index made from the address, pending webhook
    /// events, several people's dead letters and run history text are redacted; the ledger
    /// is not touched. Then no copy may survive in free space or logs
    /// (SQLite: secure delete, VACUUM, WAL truncated). One audit run (hash prefix and counts,
    /// no address) is added to the run history. In one transaction.
    async fn subject_forget(&self, email: &str, hash: &str) -> Result<ForgetReport>;

    // ---- pipeline leases: one pipeline, one runner ---------------------------------------

    /// Takes the pipeline's lease for `ttl` when nobody holds it or its lease has expired.
    async fn try_acquire(
        &self,
        pipeline: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>>;
    /// Takes over `held` although it has not expired, because its holder is known to be gone
    /// (see [`super::holder_is_dead`]); only when the lease is still exactly that holder's.
    async fn take_over(
        &self,
        held: &Held,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>>;
    /// Extends `lease` to now + `ttl`; `Err(Held)` when it changed hands meanwhile.
    async fn renew(&self, lease: &Lease, ttl: Duration)
    -> Result<std::result::Result<Lease, Held>>;
    /// Gives the lease up (only when it is still `lease`); the fencing number is kept.
    async fn release(&self, lease: &Lease) -> Result<()>;
    /// The pipeline's current lease, if one is held and not expired.
    async fn lease_holder(&self, pipeline: &str) -> Result<Option<Held>>;
}
