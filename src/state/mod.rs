//! The SQLite state store: checkpoints, the write ledger, the lookup cache, dead letters,
//! encrypted tokens, the webhook inbox and run history, in one file.
//!
//! One [`Store`] handle (cheap to clone) wraps one connection behind a mutex. The file runs
//! in WAL mode with `synchronous=FULL`, so a committed batch survives a power cut, and every
//! read-modify-write runs in an IMMEDIATE transaction, so two ferry processes sharing a file
//! queue up instead of failing half way. Schema changes are numbered migrations recorded in
//! `PRAGMA user_version`.

mod cache;
mod checkpoints;
mod deadletters;
mod inbox;
mod key;
mod labels;
mod lease;
mod ledger;
mod runs;
mod schema;
mod tokens;

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
    DEFAULT_LEASE_TTL, Held, Lease, LeaseBackend, LeaseGuard, LeaseKeeper, Renewal, acquire_now,
    acquire_waiting, describe_holder, holder_is_dead, process_holder_id,
};
pub use ledger::{BatchCommit, LedgerCount, LedgerEntry, LedgerState, LedgerWrite};
pub use runs::RunRow;
pub use tokens::StoredToken;

use crate::clock::{SharedClock, SystemClock};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Environment variable holding the state key (64 hex characters or base64 of 32 bytes).
pub const STATE_KEY_ENV: &str = "FERRY_STATE_KEY";

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file: {context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
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
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Attaches what the store was doing to a SQLite error.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| StateError::Sqlite {
            context: what.into(),
            source,
        })
    }
}

/// The state store. Clone it freely: clones share one connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    clock: SharedClock,
}

struct Inner {
    conn: Mutex<Connection>,
    key: StateKey,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the state file at `path`. The key comes from
    /// `FERRY_STATE_KEY`, else from `<path>.key`, which is created (mode 0600) on first use.
    pub fn open(path: &Path) -> Result<Store> {
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
    pub fn open_with_key(path: &Path, key: [u8; 32]) -> Result<Store> {
        let conn = open_connection(path)?;
        Self::finish_open(conn, StateKey::from_bytes(key), Some(path.to_path_buf()))
    }

    /// A private in-memory store with a random key (tests, `ferry test`, dry runs).
    pub fn in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().context("open an in-memory database")?;
        configure(&conn, false)?;
        Self::finish_open(conn, StateKey::random(), None)
    }

    fn finish_open(mut conn: Connection, key: StateKey, path: Option<PathBuf>) -> Result<Store> {
        schema::migrate(&mut conn)?;
        if !tokens::verify_or_record_key_check(&mut conn, &key)? {
            let p = path.clone().unwrap_or_default();
            return Err(StateError::WrongKey {
                key_path: key_file_path(&p),
                path: p,
            });
        }
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                key,
                path,
            }),
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for the timestamps the store records (tests drive time with it).
    pub fn with_clock(mut self, clock: SharedClock) -> Store {
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
