//! The state: checkpoints, the write ledger, the lookup cache, dead letters, encrypted
//! tokens, the webhook inbox, run history and pipeline leases.
//!
//! Everything outside this folder holds a [`Store`] (cheap to clone) and calls the async
//! operations of [`StateBackend`] on it. The one backend today is SQLite ([`sqlite`]: one
//! file, each call run on tokio's blocking pool); a new backend implements [`StateBackend`]
//! in a file of its own here and gets a `Store` constructor.

mod backend;
mod cache;
mod checkpoints;
mod deadletters;
mod inbox;
mod key;
mod labels;
mod lease;
mod ledger;
mod postgres;
mod runs;
mod schema;
mod sqlite;
mod subjects;
mod tokens;
mod zoom;

pub use backend::StateBackend;
pub use cache::CACHE_MISS_NONE;
pub(crate) use checkpoints::cursor_time;
pub use checkpoints::{Checkpoint, CheckpointRow};
pub use deadletters::{DeadLetter, DeadLetterCount, NewDeadLetter};
pub use inbox::{
    INBOX_KEEP_DONE_DAYS, INBOX_KEEP_FAILED_DAYS, INBOX_RETRY_HOURS, InboxCounts, InboxEntry,
    InboxEvent, InboxFailure, inbox_retry_delay,
};
pub use key::{StateKey, key_file_path, load_or_create_key_file};
pub use labels::{MAX_LABEL_CHARS, MAX_LABELS_PER_SCOPE};
pub use lease::{
    DEFAULT_LEASE_TTL, Held, Lease, LeaseGuard, LeaseKeeper, Renewal, acquire_now, acquire_waiting,
    describe_holder, holder_is_dead, process_holder_id,
};
pub use ledger::{BatchCommit, LedgerCount, LedgerEntry, LedgerState, LedgerWrite};
pub use postgres::{CopyReport, INBOX_CLAIM, PG_SCHEMA_VERSION, is_postgres_url, redact_url};
pub use runs::RunRow;
pub use subjects::{
    AUDIT_PIPELINE, FORGOTTEN, ForgetReport, IndexedRecord, SubjectEntry, SubjectHit, SyncedWrite,
    ZoomSubjectRow, looks_like_email, mentions, redact,
};
pub use tokens::StoredToken;
pub use zoom::{
    Deferral, DeferralSummary, LOST_ANSWER, ZoomLedgerRow, ZoomRowState, summarize_deferrals,
};

use crate::clock::{SharedClock, SystemClock};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlite::SqliteState;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable holding the state key (64 hex characters or base64 of 32 bytes).
pub const STATE_KEY_ENV: &str = "FERRY_STATE_KEY";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The SQLite file refused or failed a statement. The driver's error is kept as text, as
    /// PostgreSQL's is, so that no backend's driver types show in the public error.
    #[error("state file: {context}: {message}")]
    Sqlite { context: String, message: String },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the key file {path} can be read by other users (mode {mode:o}); \
         run `chmod 600 {path}` and try again"
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    #[error("{0}")]
    InvalidKey(String),
    #[error(
        "the state key does not match the one {path} was created with \
         (check {env} or the key file {key_path})",
        env = STATE_KEY_ENV
    )]
    WrongKey { path: PathBuf, key_path: PathBuf },
    #[error(
        "{path} holds encrypted data but its key is missing: set {env} or restore {key_path}",
        env = STATE_KEY_ENV
    )]
    MissingKey { path: PathBuf, key_path: PathBuf },
    #[error("the stored token `{name}` cannot be decrypted with this state key")]
    Decrypt { name: String },
    #[error(
        "the state file was written by a newer ferry (schema version {found}; this build \
         knows up to {known}); upgrade ferry"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("state file: {context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file: {0}")]
    Corrupt(String),
    /// The batch's ledger rows and dead letters were saved; its checkpoints were not.
    #[error(
        "another runner took over pipeline `{pipeline}` while this run held its lease (it is now \
         held by {now}): what Salesforce acknowledged is saved in the ledger, but the checkpoint \
         did not move; this run stops here",
        now = describe_holder(&.now.holder)
    )]
    LeaseLost { pipeline: String, now: Box<Held> },
    #[error("state database: {context}: {message}")]
    Postgres { context: String, message: String },
    #[error("state file: could not {what}: the state task ended early ({why})")]
    Blocking { what: &'static str, why: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Attaches what the store was doing to a SQLite error.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| StateError::Sqlite {
            context: what.into(),
            message: e.to_string(),
        })
    }
}

/// The state store: a cheap handle (clone it freely) over one [`StateBackend`]. Every
/// operation of the backend is called on it directly (`store.checkpoint(..).await`); nothing
/// outside `state` knows which backend it talks to.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn StateBackend>,
    clock: SharedClock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.backend.fmt(f)
    }
}

impl std::ops::Deref for Store {
    type Target = dyn StateBackend;
    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl Store {
    /// Opens the state ferry.yaml's `state:` names: a PostgreSQL URL (`postgres://` or
    /// `postgresql://`; the key must be in `FERRY_STATE_KEY`; the database is reached on
    /// first use), else the state file at `path`, created if needed, whose key comes from
    /// `FERRY_STATE_KEY`, else from `<path>.key`, created (mode 0600) on first use.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(url) = path.to_str().filter(|s| is_postgres_url(s)) {
            return Store::open_postgres(url);
        }
        Ok(Store::from_backend(Arc::new(SqliteState::open(path)?)))
    }

    /// Opens a PostgreSQL state with the key from `FERRY_STATE_KEY` (required).
    pub fn open_postgres(url: &str) -> Result<Store> {
        Ok(Store::from_backend(Arc::new(
            postgres::PostgresState::open(url)?,
        )))
    }

    /// Opens a PostgreSQL state with an explicit key (tests, `ferry state migrate`).
    pub fn open_postgres_with_key(url: &str, key: [u8; 32]) -> Result<Store> {
        Ok(Store::from_backend(Arc::new(
            postgres::PostgresState::open_with_key(url, StateKey::from_bytes(key))?,
        )))
    }

    /// Opens the state file at `path` with an explicit key.
    pub fn open_with_key(path: &Path, key: [u8; 32]) -> Result<Store> {
        Ok(Store::from_backend(Arc::new(SqliteState::open_with_key(
            path, key,
        )?)))
    }

    /// A private in-memory store with a random key (tests, `ferry test`, dry runs).
    pub fn in_memory() -> Result<Store> {
        Ok(Store::from_backend(Arc::new(SqliteState::in_memory()?)))
    }

    /// A store over any backend (the system clock until [`Store::with_clock`]).
    pub fn from_backend(backend: Arc<dyn StateBackend>) -> Store {
        Store {
            backend,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for the timestamps the store records (tests drive time with it).
    pub fn with_clock(self, clock: SharedClock) -> Store {
        Store {
            backend: self.backend.with_clock(clock.clone()),
            clock,
        }
    }

    /// Where the state lives (`None` for an in-memory store).
    pub fn path(&self) -> Option<&Path> {
        self.backend.path()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.clock
    }
}

/// Copies the SQLite state file at `path` into the empty PostgreSQL state at `url` (see
/// [`postgres::copy_from_sqlite`]). The file is read with its key file when it has one, else
/// with `FERRY_STATE_KEY`; the database's key is `FERRY_STATE_KEY` (required), so tokens are
/// sealed again with it.
pub async fn migrate_sqlite_to_postgres(path: &Path, url: &str) -> Result<CopyReport> {
    if !path.exists() {
        return Err(StateError::Io {
            context: "there is no state file to migrate at",
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let key_path = key_file_path(path);
    let src = if key_path.exists() {
        let key = load_or_create_key_file(&key_path)?;
        SqliteState::open_with_key(path, *key.bytes())?
    } else {
        SqliteState::open(path)?
    };
    let dst = postgres::PostgresState::open(url)?;
    postgres::copy_from_sqlite(&src, &dst).await
}

/// `state:` fit to show: a path as it is, a database URL without its password.
pub fn describe_location(path: &Path) -> String {
    let s = path.to_string_lossy();
    if is_postgres_url(&s) {
        redact_url(&s)
    } else {
        path.display().to_string()
    }
}

/// Held while a process refreshes a token that other processes share (see
/// [`StateBackend::token_lock`]); dropping it lets the next one in.
pub struct TokenLock(Option<Box<dyn Send>>);

impl TokenLock {
    /// A lock that holds nothing (a backend used by one process).
    pub fn none() -> TokenLock {
        TokenLock(None)
    }

    pub(crate) fn held(guard: impl Send + 'static) -> TokenLock {
        TokenLock(Some(Box::new(guard)))
    }
}

impl std::fmt::Debug for TokenLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TokenLock(held)"
        } else {
            "TokenLock(none)"
        })
    }
}

/// Timestamps are stored as fixed-width RFC 3339 UTC text, so text order is time order.
pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StateError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

/// Reads a column holding a timestamp written by [`fmt_ts`].
pub(crate) fn ts_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = row.get(idx)?;
    parse_ts(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn opt_ts_col(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| {
        parse_ts(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

pub(crate) fn json_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}
