//! The PostgreSQL backend of the state (`state: postgres://...`): several daemons share one
//! database, so checkpoints, the ledger, the webhook inbox, tokens, dead letters and pipeline
//! leases are the same for all of them.
//!
//! - Driver: tokio-postgres behind a deadpool pool (no TLS: reach the server on a private
//!   network or a Unix socket). Every operation is one statement or one transaction.
//! - Schema: numbered migrations recorded in `ferry_schema_version`, applied on first use
//!   under a transaction-scoped advisory lock, so two daemons starting at once do not race.
//!   The first use also checks the state key (`FERRY_STATE_KEY`, required here: a URL has no
//!   key file beside it) against a value encrypted with it (`key_check`).
//! - Time: every timestamp, lease expiries included, comes from the clock the store was given
//!   (the injected clock; the system clock in production), never from the database's `now()`,
//!   exactly as with SQLite. Daemons sharing a database keep their clocks in sync (NTP); a
//!   skew is tolerated up to a fraction of the lease length.
//! - Leases: the lease row is read `FOR UPDATE` in every lease transaction and in a fenced
//!   batch commit, so a takeover waits for a commit in flight and a commit after a takeover
//!   sees the new fencing number.
//! - Inbox: [`StateBackend::inbox_due`] claims the events it returns (`FOR UPDATE SKIP
//!   LOCKED`, then a claim time of [`INBOX_CLAIM`]), so each delivery is handed to one daemon
//!   (the same handle may be handed its own claims again, as SQLite hands every due event);
//!   a daemon that dies leaves its claims to expire and another takes the events.
//! - Tokens: sealed as in SQLite ([`super::tokens`]); [`StateBackend::token_lock`] takes a
//!   session advisory lock on a connection of its own, so one daemon at a time refreshes a
//!   rotating refresh token.
//!
//! The URL is a secret: only [`redact_url`]'s form of it reaches messages and logs.

use super::Context as _;
use super::backend::StateBackend;
use super::lease::{expiry, process_holder_id};
use super::sqlite::SqliteState;
use super::tokens::{KEY_CHECK_AAD, KEY_CHECK_TEXT, open as open_sealed, seal};
use super::{
    BatchCommit, Checkpoint, CheckpointRow, DeadLetter, DeadLetterCount, Deferral, DeferralSummary,
    ForgetReport, Held, InboxCounts, InboxEntry, InboxEvent, InboxFailure, Lease, LedgerCount,
    LedgerEntry, LedgerState, NewDeadLetter, Result, RunRow, STATE_KEY_ENV, StateError, StateKey,
    StoredToken, SubjectEntry, SubjectHit, TokenLock, ZoomLedgerRow, ZoomSubjectRow, cursor_time,
    inbox_retry_delay,
};
use crate::clock::{SharedClock, SystemClock};
use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

#[path = "postgres_privacy.rs"]
mod privacy;

/// How long an inbox event handed to one daemon stays its own before another may take it
/// (the daemon died, or is stuck).
pub const INBOX_CLAIM: Duration = Duration::from_secs(300);
/// The most inbox events one daemon claims at once, so several daemons share a burst.
const INBOX_CLAIM_MAX: usize = 10;
/// Connections per daemon.
const POOL_SIZE: usize = 8;
/// How long a call waits for a connection (a new one or a free one from the pool).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refresh waits for another daemon's refresh of the same token.
const TOKEN_LOCK_TIMEOUT: &str = "60s";
/// The advisory lock key (any constant) that serializes migrations.
const MIGRATION_LOCK: i64 = 0x6665_7272_795f_6d67; // "ferry_mg"

/// True when a `state:` value names a PostgreSQL database rather than a file.
pub fn is_postgres_url(s: &str) -> bool {
    let s = s.trim_start();
    ["postgres://", "postgresql://"].iter().any(|p| {
        s.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// The URL with its password (and any `password=` query parameter) replaced by `***`.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s.trim()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "a PostgreSQL URL (not shown: it does not parse)".to_string(),
    }
}

/// ferry's defaults for what the URL does not set: its name in `pg_stat_activity`, a 10 s
/// connect timeout, and dead connections noticed within about a minute. A database host that
/// vanishes without closing its connections (a crash, a network that drops packets) would
/// otherwise hold a state call for Linux's 15 minutes of retransmissions, or 2 hours of idle
/// keepalive while a call waits for its answer; a live server answers keepalive probes
/// however long a statement runs.
fn connection_defaults(config: &mut tokio_postgres::Config, url: &str) {
    if config.get_application_name().is_none() {
        config.application_name("ferry");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if !sets(url, "keepalives_idle") {
        config.keepalives_idle(Duration::from_secs(30));
    }
    if !sets(url, "keepalives_interval") {
        config.keepalives_interval(Duration::from_secs(10));
    }
    if !sets(url, "keepalives_retries") {
        config.keepalives_retries(3);
    }
    if !sets(url, "tcp_user_timeout") {
        config.tcp_user_timeout(Duration::from_secs(60));
    }
}

/// Whether the state URL sets option `key`: a query parameter of a `postgres://` URL, or a
/// `key=value` word of a connection string (not any text that happens to hold the name,
/// such as a password).
fn sets(url: &str, key: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => u.query_pairs().any(|(k, _)| k == key),
        Err(_) => url
            .split_whitespace()
            .any(|w| w.split_once('=').is_some_and(|(k, _)| k.trim() == key)),
    }
}

/// The TLS options of a state URL that the driver does not read itself: `sslrootcert=PATH`
/// (the PEM file of the certificate authorities to trust, instead of the public ones) is
/// taken out, and libpq's `sslmode=verify-full` / `verify-ca` become `require` (ferry
/// verifies the server's certificate and name in every TLS mode). A URL that does not parse
/// as one (a `key=value` string) is left to the driver.
fn tls_options(url: &str) -> (String, Option<PathBuf>) {
    let Ok(mut u) = url::Url::parse(url) else {
        return (url.to_string(), None);
    };
    let mut root = None;
    let mut changed = false;
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter_map(|(k, v)| match (k.as_ref(), v.as_ref()) {
            ("sslrootcert", path) => {
                root = Some(PathBuf::from(path));
                changed = true;
                None
            }
            ("sslmode", "verify-full" | "verify-ca") => {
                changed = true;
                Some((k.into_owned(), "require".to_string()))
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    if !changed {
        return (url.to_string(), None);
    }
    if pairs.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    (u.to_string(), root)
}

/// The TLS connector of the state's connections: rustls (the TLS stack ferry's HTTP client
/// already uses), trusting the public certificate authorities or only those of
/// `sslrootcert`. It is used only when the URL's `sslmode` asks for TLS.
fn tls_connector(root_file: Option<&Path>, shown: &str) -> Result<MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match root_file {
        Some(path) => {
            let failed = |message: String| StateError::Postgres {
                context: format!("read sslrootcert {} of {shown}", path.display()),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| failed(e.to_string()))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| failed(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(failed("it holds no usable PEM certificate".to_string()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StateError::Postgres {
            context: format!("set up TLS for {shown}"),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite schema has at its version 3, plus the inbox claims and a
    // sequence for runs (SQLite's rowid).
    r#"
    CREATE TABLE checkpoints (
        pipeline   TEXT NOT NULL,
        stream     TEXT NOT NULL,
        partition  TEXT NOT NULL DEFAULT '',
        cursor     TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (pipeline, stream, partition)
    );
    CREATE TABLE ledger (
        pipeline   TEXT NOT NULL,
        sink       TEXT NOT NULL CHECK (length(sink) > 0),
        key        TEXT NOT NULL CHECK (length(key) > 0),
        sf_id      TEXT,
        hash       TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('written', 'pending')),
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (pipeline, sink, key)
    );
    CREATE TABLE lookup_cache (
        scope      TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        expires_ms BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX lookup_cache_expiry ON lookup_cache (expires_ms);
    CREATE TABLE dead_letters (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        pipeline        TEXT NOT NULL,
        sink            TEXT NOT NULL,
        key             TEXT NOT NULL,
        payload         TEXT NOT NULL,
        error           TEXT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 1,
        retry_requested BOOLEAN NOT NULL DEFAULT FALSE,
        created_at      TIMESTAMPTZ NOT NULL,
        updated_at      TIMESTAMPTZ NOT NULL
    );
    CREATE UNIQUE INDEX dead_letters_record ON dead_letters (pipeline, sink, key) WHERE key <> '';
    CREATE INDEX dead_letters_pipeline ON dead_letters (pipeline, id);
    CREATE TABLE tokens (
        name       TEXT PRIMARY KEY,
        nonce      BYTEA NOT NULL,
        ciphertext BYTEA NOT NULL,
        expires_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE key_check (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        nonce      BYTEA NOT NULL,
        ciphertext BYTEA NOT NULL
    );
    CREATE TABLE inbox (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id   TEXT NOT NULL UNIQUE,
        event         TEXT NOT NULL,
        payload       TEXT NOT NULL,
        received_at   TIMESTAMPTZ NOT NULL,
        status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
        attempts      BIGINT NOT NULL DEFAULT 0,
        last_error    TEXT,
        finished_at   TIMESTAMPTZ,
        claimed_by    TEXT,
        claimed_until TIMESTAMPTZ
    );
    CREATE INDEX inbox_pending ON inbox (status, id);
    CREATE TABLE runs (
        seq         BIGINT GENERATED ALWAYS AS IDENTITY,
        run_id      TEXT PRIMARY KEY,
        pipeline    TEXT NOT NULL,
        started_at  TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        ok          BOOLEAN,
        summary     TEXT,
        trigger     TEXT,
        stopped     TEXT
    );
    CREATE INDEX runs_pipeline ON runs (pipeline, started_at);
    CREATE TABLE labels (
        scope      TEXT NOT NULL,
        id         TEXT NOT NULL,
        label      TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (scope, id)
    );
    -- `holder` is empty once released; the row stays, so the fencing number only grows.
    CREATE TABLE leases (
        pipeline    TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        fence       BIGINT NOT NULL CHECK (fence >= 0),
        acquired_at TIMESTAMPTZ NOT NULL,
        expires_at  TIMESTAMPTZ NOT NULL
    );
    "#,
    // 2: privacy requests (SQLite's migration 4, see subjects.rs): which synced records an
    // address appeared in, by keyed hash, and, once per record, what ferry wrote for it.
    r#"
    CREATE TABLE subject_index (
        hash        TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        record_key  TEXT NOT NULL,
        role        TEXT NOT NULL,
        record_time TEXT NOT NULL DEFAULT '',
        updated_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (hash, pipeline, stream, record_key)
    );
    CREATE INDEX subject_index_record ON subject_index (pipeline, stream, record_key);
    CREATE TABLE synced_writes (
        pipeline    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        record_key  TEXT NOT NULL,
        sink        TEXT NOT NULL,
        ledger_key  TEXT NOT NULL,
        sobject     TEXT NOT NULL DEFAULT '',
        sf_id       TEXT NOT NULL DEFAULT '',
        updated_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (pipeline, stream, record_key, sink, ledger_key)
    );
    "#,
    // 3: Zoom sinks (SQLite's migration 5, see zoom.rs): the Zoom ledger and deferrals.
    r#"
    CREATE TABLE zoom_ledger (
        pipeline   TEXT NOT NULL,
        object     TEXT NOT NULL,
        key        TEXT NOT NULL CHECK (length(key) > 0),
        zoom_id    TEXT,
        vals       TEXT NOT NULL DEFAULT '{}',
        hash       TEXT NOT NULL,
        fields     TEXT NOT NULL DEFAULT '{}',
        params     TEXT NOT NULL DEFAULT '{}',
        state      TEXT NOT NULL CHECK (state IN ('written', 'pending', 'deleted')),
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (pipeline, object, key)
    );
    CREATE INDEX zoom_ledger_id ON zoom_ledger (object, zoom_id);
    CREATE TABLE zoom_deferrals (
        pipeline    TEXT NOT NULL,
        sink        TEXT NOT NULL,
        key         TEXT NOT NULL,
        record      TEXT NOT NULL,
        reason      TEXT NOT NULL,
        resource    TEXT NOT NULL,
        not_before  TIMESTAMPTZ NOT NULL,
        deferred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (pipeline, sink, key)
    );
    "#,
];

/// The schema version this build writes to PostgreSQL.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The PostgreSQL backend: a connection pool shared by clones.
#[derive(Clone)]
pub(crate) struct PostgresState {
    inner: Arc<Inner>,
    clock: SharedClock,
}

struct Inner {
    pool: Pool,
    key: StateKey,
    /// The URL without its password, for messages.
    shown: String,
    /// Who claims inbox events through this handle: the process's holder id and a random
    /// part (two handles in one process claim apart, as two daemons would).
    claimer: String,
    /// Set once the schema is migrated and the key checked (on first use; retried after a
    /// failure, so a daemon started while the database is down comes up when it is back).
    ready: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for PostgresState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresState")
            .field("url", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

/// A database error with what the store was doing. The driver's messages never hold the URL.
fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StateError {
    let context = what.into();
    move |e| StateError::Postgres {
        context,
        message: describe_pg_error(&e),
    }
}

fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn json_text(s: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|source| StateError::Json {
        context: what.to_string(),
        source,
    })
}

impl PostgresState {
    /// Opens the state database at `url` with the key from `FERRY_STATE_KEY` (required).
    /// Nothing is sent to the server yet: the first call connects, migrates and checks the key.
    pub fn open(url: &str) -> Result<PostgresState> {
        let shown = redact_url(url);
        let key = match std::env::var(STATE_KEY_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty())
        {
            Some(k) => StateKey::parse(&k)?,
            None => {
                return Err(StateError::InvalidKey(format!(
                    "a PostgreSQL state ({shown}) needs the state key in {STATE_KEY_ENV}, the \
                     same for every daemon sharing it (64 hex characters; e.g. `openssl rand \
                     -hex 32`): there is no key file beside a URL"
                )));
            }
        };
        Self::open_with_key(url, key)
    }

    pub fn open_with_key(url: &str, key: StateKey) -> Result<PostgresState> {
        let shown = redact_url(url);
        let (url, root_file) = tls_options(url.trim());
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StateError::Postgres {
                    context: format!("read the state URL {shown}"),
                    message: e.to_string(),
                })?;
        // Without an sslmode in the URL, no TLS, as before TLS was supported (libpq's default,
        // `prefer`, would take an unverified certificate; ferry verifies every certificate).
        if !sets(&url, "sslmode") {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        let tls = tls_connector(root_file.as_deref(), &shown)?;
        connection_defaults(&mut config, &url);
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StateError::Postgres {
                context: format!("set up connections to {shown}"),
                message: e.to_string(),
            })?;
        Ok(PostgresState {
            inner: Arc::new(Inner {
                pool,
                key,
                shown,
                claimer: format!("{}#{:08x}", process_holder_id(), rand::random::<u32>()),
                ready: tokio::sync::OnceCell::new(),
            }),
            clock: Arc::new(SystemClock),
        })
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn raw_client(&self) -> Result<Object> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| StateError::Postgres {
                context: format!("connect to the state database {}", self.inner.shown),
                message: match e {
                    deadpool_postgres::PoolError::Backend(e) => describe_pg_error(&e),
                    deadpool_postgres::PoolError::Timeout(_) => {
                        "no answer in time (is PostgreSQL running and reachable?)".to_string()
                    }
                    other => other.to_string(),
                },
            })
    }

    /// A connection to a migrated database whose key matches.
    async fn client(&self) -> Result<Object> {
        self.inner.ready.get_or_try_init(|| self.prepare()).await?;
        self.raw_client().await
    }

    /// Applies the migrations this database lacks and checks the key, in one transaction
    /// under an advisory lock (two daemons starting at once take turns).
    async fn prepare(&self) -> Result<()> {
        let mut c = self.raw_client().await?;
        let tx = c.transaction().await.map_err(pg("begin the migrations"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("wait for other daemons' migrations"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS ferry_schema_version (
                 id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
        )
        .await
        .map_err(pg("create the schema version table"))?;
        let found: i64 = tx
            .query_opt("SELECT version FROM ferry_schema_version WHERE id = 1", &[])
            .await
            .map_err(pg("read the schema version"))?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if found > PG_SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                found,
                known: PG_SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            tx.batch_execute(sql)
                .await
                .map_err(pg(format!("apply migration {}", i + 1)))?;
        }
        tx.execute(
            "INSERT INTO ferry_schema_version (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[&PG_SCHEMA_VERSION],
        )
        .await
        .map_err(pg("record the schema version"))?;
        let row = tx
            .query_opt("SELECT nonce, ciphertext FROM key_check WHERE id = 1", &[])
            .await
            .map_err(pg("read the key check"))?;
        match row {
            Some(r) => {
                let nonce: Vec<u8> = r.get(0);
                let ct: Vec<u8> = r.get(1);
                if open_sealed(&self.inner.key, KEY_CHECK_AAD, &nonce, &ct).as_deref()
                    != Some(KEY_CHECK_TEXT)
                {
                    return Err(StateError::InvalidKey(format!(
                        "the state key in {STATE_KEY_ENV} does not match the one the state \
                         database {} was set up with (every daemon sharing it needs the same key)",
                        self.inner.shown
                    )));
                }
            }
            None => {
                let (nonce, ct) = seal(&self.inner.key, KEY_CHECK_AAD, KEY_CHECK_TEXT)?;
                tx.execute(
                    "INSERT INTO key_check (id, nonce, ciphertext) VALUES (1, $1, $2)",
                    &[&nonce.as_slice(), &ct],
                )
                .await
                .map_err(pg("record the key check"))?;
            }
        }
        tx.commit().await.map_err(pg("commit the migrations"))?;
        Ok(())
    }
}

// ---- statements shared by several operations --------------------------------------------

async fn upsert_checkpoint<C: GenericClient>(
    c: &C,
    pipeline: &str,
    stream: &str,
    partition: &str,
    cursor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    c.execute(
        "INSERT INTO checkpoints (pipeline, stream, partition, cursor, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (pipeline, stream, partition)
         DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        &[&pipeline, &stream, &partition, &cursor, &now],
    )
    .await
    .map_err(pg(format!("save the checkpoint of {pipeline}/{stream}")))?;
    Ok(())
}

/// The rows of `items` one per key, in first-seen order: a later row with a key seen before
/// replaces it through `merge(earlier, later)`. A statement that inserts many rows with ON
/// CONFLICT DO UPDATE may not touch one row twice, where a loop of single-row statements
/// let the later win; `merge` keeps that outcome.
pub(super) fn last_per_key<T, K: std::hash::Hash + Eq>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    merge: impl Fn(T, T) -> T,
) -> Vec<T> {
    let mut at: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<Option<T>> = Vec::new();
    for item in items {
        match at.get(&key(&item)) {
            Some(&i) => {
                if let Some(slot) = out.get_mut(i)
                    && let Some(earlier) = slot.take()
                {
                    *slot = Some(merge(earlier, item));
                }
            }
            None => {
                at.insert(key(&item), out.len());
                out.push(Some(item));
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// A batch's ledger rows in two statements, whatever their number (one round trip each,
/// not two per row): the rows upserted (an id already known is kept when a row carries
/// none), then the dead letters of the rows now written cleared.
async fn write_ledger_rows<C: GenericClient>(
    tx: &C,
    pipeline: &str,
    ledger: &[super::LedgerWrite],
    now: DateTime<Utc>,
) -> Result<()> {
    // (sink, key, id, hash, state), one per ledger key.
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, &'static str);
    let rows: Vec<Row<'_>> = last_per_key(
        ledger.iter().map(|w| {
            let state = match w.state {
                LedgerState::Written => "written",
                LedgerState::Pending => "pending",
            };
            (
                w.sink.as_str(),
                w.key.as_str(),
                w.sf_id.as_deref(),
                w.hash.as_str(),
                state,
            )
        }),
        |r| (r.0, r.1),
        // Two statements would leave the later row's fields and the id either one carried.
        |earlier, later| (later.0, later.1, later.2.or(earlier.2), later.3, later.4),
    );
    let mut sinks = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    let mut states = Vec::with_capacity(rows.len());
    for &(sink, key, id, hash, state) in &rows {
        sinks.push(sink);
        keys.push(key);
        ids.push(id);
        hashes.push(hash);
        states.push(state);
    }
    // Every row written clears its dead letter, as each did when it was saved alone.
    let (done_sinks, done_keys): (Vec<&str>, Vec<&str>) = ledger
        .iter()
        .filter(|w| w.state == LedgerState::Written)
        .map(|w| (w.sink.as_str(), w.key.as_str()))
        .unzip();
    tx.execute(
        "INSERT INTO ledger (pipeline, sink, key, sf_id, hash, state, updated_at)
         SELECT $1, u.sink, u.key, u.sf_id, u.hash, u.state, $7
         FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[])
              AS u(sink, key, sf_id, hash, state)
         ON CONFLICT (pipeline, sink, key) DO UPDATE SET
           sf_id = coalesce(excluded.sf_id, ledger.sf_id), hash = excluded.hash,
           state = excluded.state, updated_at = excluded.updated_at",
        &[&pipeline, &sinks, &keys, &ids, &hashes, &states, &now],
    )
    .await
    .map_err(pg(format!(
        "write {} ledger rows of {pipeline}",
        rows.len()
    )))?;
    if !done_keys.is_empty() {
        tx.execute(
            "DELETE FROM dead_letters d USING unnest($2::TEXT[], $3::TEXT[]) AS u(sink, key)
             WHERE d.pipeline = $1 AND d.sink = u.sink AND d.key = u.key",
            &[&pipeline, &done_sinks, &done_keys],
        )
        .await
        .map_err(pg("clear resolved dead letters"))?;
    }
    Ok(())
}

async fn insert_dead_letter<C: GenericClient>(
    c: &C,
    pipeline: &str,
    d: &NewDeadLetter,
    now: DateTime<Utc>,
) -> Result<()> {
    let payload = d.payload.to_string();
    c.execute(
        "INSERT INTO dead_letters (pipeline, sink, key, payload, error, attempts,
                                   retry_requested, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 1, FALSE, $6, $6)
         ON CONFLICT (pipeline, sink, key) WHERE key <> '' DO UPDATE SET
           payload = excluded.payload, error = excluded.error,
           attempts = dead_letters.attempts + 1, retry_requested = FALSE,
           updated_at = excluded.updated_at",
        &[&pipeline, &d.sink, &d.key, &payload, &d.error, &now],
    )
    .await
    .map_err(pg(format!(
        "save the dead letter of {pipeline}/{} key {:?}",
        d.sink, d.key
    )))?;
    Ok(())
}

const LETTER_COLUMNS: &str = "id, pipeline, sink, key, payload, error, attempts, \
                              retry_requested, created_at, updated_at";

fn row_to_letter(r: &Row) -> Result<DeadLetter> {
    let payload: String = r.get(4);
    Ok(DeadLetter {
        id: r.get(0),
        pipeline: r.get(1),
        sink: r.get(2),
        key: r.get(3),
        payload: json_text(&payload, "read a dead letter's payload")?,
        error: r.get(5),
        attempts: r.get(6),
        retry_requested: r.get(7),
        created_at: r.get(8),
        updated_at: r.get(9),
    })
}

const RUN_COLUMNS: &str =
    "run_id, pipeline, started_at, finished_at, ok, summary, trigger, stopped";

fn row_to_run(r: &Row) -> RunRow {
    let summary: Option<String> = r.get(5);
    RunRow {
        run_id: r.get(0),
        pipeline: r.get(1),
        started_at: r.get(2),
        finished_at: r.get(3),
        ok: r.get(4),
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        trigger: r.get(6),
        stopped: r.get(7),
    }
}

const ENTRY_COLUMNS: &str = "id, delivery_id, event, status, received_at, attempts, \
                             last_error, finished_at, payload";

fn row_to_entry(r: &Row) -> Result<InboxEntry> {
    let status: String = r.get(3);
    let attempts: i64 = r.get(5);
    let at: Option<DateTime<Utc>> = r.get(7);
    let (state, next_attempt, finished_at) = match status.as_str() {
        "pending" if attempts > 0 => ("retrying", at, None),
        "pending" => ("pending", at, None),
        "failed" => ("dead", None, at),
        other => (other, None, at),
    };
    let payload: String = r.get(8);
    Ok(InboxEntry {
        id: r.get(0),
        delivery_id: r.get(1),
        event: r.get(2),
        state: state.to_string(),
        received_at: r.get(4),
        attempts,
        last_error: r.get(6),
        next_attempt,
        finished_at,
        payload: json_text(&payload, "read a webhook event")?,
    })
}

fn row_to_event(r: &Row) -> Result<InboxEvent> {
    let payload: String = r.get(2);
    Ok(InboxEvent {
        id: r.get(0),
        event: r.get(1),
        payload: json_text(&payload, "read a webhook event")?,
        received_at: r.get(3),
        attempts: r.get(4),
    })
}

/// A lease row as stored (`holder` empty once released; fence 0: never held).
struct LeaseRow {
    holder: String,
    fence: i64,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl LeaseRow {
    fn held(&self, pipeline: &str) -> Held {
        Held {
            pipeline: pipeline.to_string(),
            holder: self.holder.clone(),
            fence: self.fence,
            since: self.acquired_at,
            expires_at: self.expires_at,
        }
    }
}

/// The pipeline's lease row, locked for this transaction (created empty when missing, so
/// there is always a row to lock).
async fn lock_lease<C: GenericClient>(
    c: &C,
    pipeline: &str,
    now: DateTime<Utc>,
) -> Result<LeaseRow> {
    c.execute(
        "INSERT INTO leases (pipeline, holder, fence, acquired_at, expires_at)
         VALUES ($1, '', 0, $2, $2) ON CONFLICT (pipeline) DO NOTHING",
        &[&pipeline, &now],
    )
    .await
    .map_err(pg(format!("read the lease of {pipeline}")))?;
    let r = c
        .query_one(
            "SELECT holder, fence, acquired_at, expires_at FROM leases
             WHERE pipeline = $1 FOR UPDATE",
            &[&pipeline],
        )
        .await
        .map_err(pg(format!("read the lease of {pipeline}")))?;
    Ok(LeaseRow {
        holder: r.get(0),
        fence: r.get(1),
        acquired_at: r.get(2),
        expires_at: r.get(3),
    })
}

async fn take_lease<C: GenericClient>(
    c: &C,
    pipeline: &str,
    holder: &str,
    prev: i64,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Lease> {
    let fence = prev.checked_add(1).ok_or_else(|| {
        StateError::Corrupt(format!("the fencing number of {pipeline} overflowed"))
    })?;
    let expires_at = expiry(now, ttl)?;
    c.execute(
        "UPDATE leases SET holder = $2, fence = $3, acquired_at = $4, expires_at = $5
         WHERE pipeline = $1",
        &[&pipeline, &holder, &fence, &now, &expires_at],
    )
    .await
    .map_err(pg(format!("take the lease of {pipeline}")))?;
    Ok(Lease {
        pipeline: pipeline.to_string(),
        holder: holder.to_string(),
        fence,
        acquired_at: now,
        expires_at,
    })
}

fn free_or_expired(row: &LeaseRow, now: DateTime<Utc>) -> bool {
    row.holder.is_empty() || row.expires_at <= now
}

#[async_trait::async_trait]
impl StateBackend for PostgresState {
    fn with_clock(&self, clock: SharedClock) -> Arc<dyn StateBackend> {
        Arc::new(PostgresState {
            inner: self.inner.clone(),
            clock,
        })
    }

    fn path(&self) -> Option<&Path> {
        None
    }

    fn location(&self) -> String {
        format!("the PostgreSQL database {}", self.inner.shown)
    }

    async fn schema_version(&self) -> Result<i64> {
        let c = self.client().await?;
        let r = c
            .query_one("SELECT version FROM ferry_schema_version WHERE id = 1", &[])
            .await
            .map_err(pg("read the schema version"))?;
        Ok(r.get(0))
    }

    // ---- checkpoints ----------------------------------------------------------------

    async fn checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT cursor, updated_at FROM checkpoints
                 WHERE pipeline = $1 AND stream = $2 AND partition = $3",
                &[&pipeline, &stream, &partition],
            )
            .await
            .map_err(pg("read a checkpoint"))?;
        Ok(r.map(|r| Checkpoint {
            cursor: r.get(0),
            updated_at: r.get(1),
        }))
    }

    async fn checkpoints(&self, pipeline: Option<&str>) -> Result<Vec<CheckpointRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT pipeline, stream, partition, cursor, updated_at FROM checkpoints
                 WHERE $1::TEXT IS NULL OR pipeline = $1
                 ORDER BY pipeline, stream, partition",
                &[&pipeline],
            )
            .await
            .map_err(pg("list checkpoints"))?;
        Ok(rows
            .iter()
            .map(|r| CheckpointRow {
                pipeline: r.get(0),
                stream: r.get(1),
                partition: r.get(2),
                cursor: r.get(3),
                updated_at: r.get(4),
            })
            .collect())
    }

    async fn set_checkpoint(
        &self,
        pipeline: &str,
        stream: &str,
        partition: &str,
        cursor: &str,
    ) -> Result<()> {
        let c = self.client().await?;
        upsert_checkpoint(&c, pipeline, stream, partition, cursor, self.now()).await
    }

    async fn rewind(&self, pipeline: &str, to: DateTime<Utc>) -> Result<usize> {
        let now = self.now();
        let to_text = to.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg("rewind checkpoints"))?;
        let rows = tx
            .query(
                "SELECT stream, partition, cursor FROM checkpoints WHERE pipeline = $1 FOR UPDATE",
                &[&pipeline],
            )
            .await
            .map_err(pg("read checkpoints to rewind"))?;
        let mut changed = 0;
        for r in rows {
            let (stream, partition, cursor): (String, String, String) =
                (r.get(0), r.get(1), r.get(2));
            match cursor_time(&cursor) {
                Some(t) if t <= to => continue,
                Some(_) => {
                    upsert_checkpoint(&tx, pipeline, &stream, &partition, &to_text, now).await?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM checkpoints
                         WHERE pipeline = $1 AND stream = $2 AND partition = $3",
                        &[&pipeline, &stream, &partition],
                    )
                    .await
                    .map_err(pg("remove a checkpoint"))?;
                }
            }
            changed += 1;
        }
        tx.commit().await.map_err(pg("rewind checkpoints"))?;
        Ok(changed)
    }

    async fn reset(&self, pipeline: &str) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM checkpoints WHERE pipeline = $1", &[&pipeline])
            .await
            .map_err(pg("reset checkpoints"))?;
        Ok(n as usize)
    }

    // ---- the write ledger -----------------------------------------------------------

    async fn reset_ledger(&self, pipeline: &str) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM ledger WHERE pipeline = $1", &[&pipeline])
            .await
            .map_err(pg("reset the ledger"))?;
        Ok(n as usize)
    }

    async fn ledger_get_many(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerEntry>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT key, sf_id, hash, state, updated_at FROM ledger
                 WHERE pipeline = $1 AND sink = $2 AND key = ANY($3)",
                &[&pipeline, &sink, &keys],
            )
            .await
            .map_err(pg("read the ledger"))?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let state: String = r.get(3);
            let state = match state.as_str() {
                "written" => LedgerState::Written,
                "pending" => LedgerState::Pending,
                other => {
                    return Err(StateError::Corrupt(format!(
                        "unknown ledger state {other:?}"
                    )));
                }
            };
            out.insert(
                r.get(0),
                LedgerEntry {
                    sf_id: r.get(1),
                    hash: r.get(2),
                    state,
                    updated_at: r.get(4),
                },
            );
        }
        Ok(out)
    }

    async fn ledger_mark_pending(
        &self,
        pipeline: &str,
        sink: &str,
        keys: &[(String, String)],
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = self.now();
        // One statement for the whole list (a key listed twice keeps its last hash: ON
        // CONFLICT cannot touch one row twice in a statement).
        let rows = last_per_key(keys.iter(), |(key, _)| key.as_str(), |_, new| new);
        let (keys, hashes): (Vec<&String>, Vec<&String>) =
            rows.into_iter().map(|(k, h)| (k, h)).unzip();
        let c = self.client().await?;
        c.execute(
            "INSERT INTO ledger (pipeline, sink, key, sf_id, hash, state, updated_at)
             SELECT $1, $2, u.key, NULL, u.hash, 'pending', $5
             FROM unnest($3::TEXT[], $4::TEXT[]) AS u(key, hash)
             ON CONFLICT (pipeline, sink, key) DO UPDATE SET
               hash = excluded.hash, state = 'pending', updated_at = excluded.updated_at",
            &[&pipeline, &sink, &keys, &hashes, &now],
        )
        .await
        .map_err(pg(format!(
            "record {} pending writes for {sink}",
            keys.len()
        )))?;
        Ok(())
    }

    async fn commit_batch_fenced(&self, batch: &BatchCommit, lease: Option<&Lease>) -> Result<()> {
        let now = self.now();
        let pipeline = batch.pipeline.as_str();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg("commit a batch"))?;
        // The lease row stays locked until this transaction ends: a takeover waits for it.
        let lost = match lease {
            Some(l) => {
                let row = lock_lease(&tx, &l.pipeline, now).await?;
                if row.holder == l.holder && row.fence == l.fence {
                    None
                } else {
                    Some(row.held(&l.pipeline))
                }
            }
            None => None,
        };
        if !batch.ledger.is_empty() {
            write_ledger_rows(&tx, pipeline, &batch.ledger, now).await?;
        }
        for d in &batch.dead_letters {
            insert_dead_letter(&tx, pipeline, d, now).await?;
        }
        privacy::insert_subjects(&tx, pipeline, &batch.subjects, now).await?;
        if lost.is_none() {
            for (stream, partition, cursor) in &batch.checkpoints {
                upsert_checkpoint(&tx, pipeline, stream, partition, cursor, now).await?;
            }
        }
        tx.commit().await.map_err(pg("commit a batch"))?;
        match lost {
            None => Ok(()),
            Some(now) => Err(StateError::LeaseLost {
                pipeline: pipeline.to_string(),
                now: Box::new(now),
            }),
        }
    }

    async fn ledger_counts(&self, pipeline: Option<&str>) -> Result<Vec<LedgerCount>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT pipeline, sink,
                        count(*) FILTER (WHERE state = 'written'),
                        count(*) FILTER (WHERE state = 'pending')
                 FROM ledger WHERE $1::TEXT IS NULL OR pipeline = $1
                 GROUP BY pipeline, sink ORDER BY pipeline, sink",
                &[&pipeline],
            )
            .await
            .map_err(pg("count the ledger"))?;
        Ok(rows
            .iter()
            .map(|r| LedgerCount {
                pipeline: r.get(0),
                sink: r.get(1),
                written: count_u64(r.get(2)),
                pending: count_u64(r.get(3)),
            })
            .collect())
    }

    // ---- the lookup cache -----------------------------------------------------------

    async fn cache_get_many(
        &self,
        scope: &str,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, serde_json::Value>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT key, value FROM lookup_cache
                 WHERE scope = $1 AND key = ANY($2) AND expires_ms > $3",
                &[&scope, &keys, &now.timestamp_millis()],
            )
            .await
            .map_err(pg("read the lookup cache"))?;
        let mut out = HashMap::new();
        for r in rows {
            let text: String = r.get(1);
            // A damaged entry is only a cache miss: the lookup runs again and rewrites it.
            if let Ok(v) = serde_json::from_str(&text) {
                out.insert(r.get(0), v);
            }
        }
        Ok(out)
    }

    async fn cache_put_many(
        &self,
        scope: &str,
        entries: &[(String, serde_json::Value)],
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let exp = expires_at.timestamp_millis();
        let rows = last_per_key(entries.iter(), |(key, _)| key.as_str(), |_, new| new);
        let keys: Vec<&String> = rows.iter().map(|(k, _)| k).collect();
        let values: Vec<String> = rows.iter().map(|(_, v)| v.to_string()).collect();
        let c = self.client().await?;
        c.execute(
            "INSERT INTO lookup_cache (scope, key, value, expires_ms)
             SELECT $1, u.key, u.value, $4 FROM unnest($2::TEXT[], $3::TEXT[]) AS u(key, value)
             ON CONFLICT (scope, key) DO UPDATE SET
               value = excluded.value, expires_ms = excluded.expires_ms",
            &[&scope, &keys, &values, &exp],
        )
        .await
        .map_err(pg("fill the lookup cache"))?;
        Ok(())
    }

    async fn cache_purge(&self, now: DateTime<Utc>) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM lookup_cache WHERE expires_ms <= $1",
                &[&now.timestamp_millis()],
            )
            .await
            .map_err(pg("purge the lookup cache"))?;
        Ok(n as usize)
    }

    async fn cache_clear_scope(&self, scope: &str) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM lookup_cache WHERE scope = $1", &[&scope])
            .await
            .map_err(pg("clear the lookup cache"))?;
        Ok(n as usize)
    }

    // ---- dead letters ---------------------------------------------------------------

    async fn deadletters_add(&self, pipeline: &str, letters: &[NewDeadLetter]) -> Result<()> {
        let now = self.now();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg("save dead letters"))?;
        for d in letters {
            insert_dead_letter(&tx, pipeline, d, now).await?;
        }
        tx.commit().await.map_err(pg("save dead letters"))?;
        Ok(())
    }

    async fn deadletters(&self, pipeline: Option<&str>) -> Result<Vec<DeadLetter>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {LETTER_COLUMNS} FROM dead_letters
                     WHERE $1::TEXT IS NULL OR pipeline = $1 ORDER BY id"
                ),
                &[&pipeline],
            )
            .await
            .map_err(pg("list dead letters"))?;
        rows.iter().map(row_to_letter).collect()
    }

    async fn deadletter(&self, id: i64) -> Result<Option<DeadLetter>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg("read a dead letter"))?;
        r.as_ref().map(row_to_letter).transpose()
    }

    async fn deadletters_drop(&self, ids: &[i64]) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM dead_letters WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(pg("drop dead letters"))?;
        Ok(n as usize)
    }

    async fn deadletters_drop_all(&self, pipeline: Option<&str>) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM dead_letters WHERE $1::TEXT IS NULL OR pipeline = $1",
                &[&pipeline],
            )
            .await
            .map_err(pg("drop dead letters"))?;
        Ok(n as usize)
    }

    async fn deadletters_mark_retry(&self, ids: &[i64]) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE dead_letters SET retry_requested = TRUE, updated_at = $2
                 WHERE id = ANY($1)",
                &[&ids, &self.now()],
            )
            .await
            .map_err(pg("mark dead letters for retry"))?;
        Ok(n as usize)
    }

    async fn deadletters_mark_retry_all(&self, pipeline: Option<&str>) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE dead_letters SET retry_requested = TRUE, updated_at = $2
                 WHERE $1::TEXT IS NULL OR pipeline = $1",
                &[&pipeline, &self.now()],
            )
            .await
            .map_err(pg("mark dead letters for retry"))?;
        Ok(n as usize)
    }

    async fn deadletters_due(&self, pipeline: &str) -> Result<Vec<DeadLetter>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {LETTER_COLUMNS} FROM dead_letters
                     WHERE pipeline = $1 AND retry_requested ORDER BY id"
                ),
                &[&pipeline],
            )
            .await
            .map_err(pg("list dead letters to retry"))?;
        rows.iter().map(row_to_letter).collect()
    }

    async fn deadletter_retry_failed(&self, id: i64, error: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE dead_letters SET attempts = attempts + 1, error = $2,
               retry_requested = FALSE, updated_at = $3 WHERE id = $1",
            &[&id, &error, &self.now()],
        )
        .await
        .map_err(pg("record a failed retry"))?;
        Ok(())
    }

    async fn deadletter_counts(&self) -> Result<Vec<DeadLetterCount>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT pipeline, count(*), count(*) FILTER (WHERE retry_requested)
                 FROM dead_letters GROUP BY pipeline ORDER BY pipeline",
                &[],
            )
            .await
            .map_err(pg("count dead letters"))?;
        Ok(rows
            .iter()
            .map(|r| DeadLetterCount {
                pipeline: r.get(0),
                count: count_u64(r.get(1)),
                retry_requested: count_u64(r.get(2)),
            })
            .collect())
    }

    // ---- tokens ---------------------------------------------------------------------

    async fn token_put(
        &self,
        name: &str,
        value: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let (nonce, ct) = seal(&self.inner.key, name.as_bytes(), value.as_bytes())?;
        let c = self.client().await?;
        c.execute(
            "INSERT INTO tokens (name, nonce, ciphertext, expires_at, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce,
               ciphertext = excluded.ciphertext, expires_at = excluded.expires_at,
               updated_at = excluded.updated_at",
            &[&name, &nonce.as_slice(), &ct, &expires_at, &self.now()],
        )
        .await
        .map_err(pg(format!("store the token `{name}`")))?;
        Ok(())
    }

    async fn token_get(&self, name: &str) -> Result<Option<StoredToken>> {
        let c = self.client().await?;
        let Some(r) = c
            .query_opt(
                "SELECT nonce, ciphertext, expires_at FROM tokens WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg(format!("read the token `{name}`")))?
        else {
            return Ok(None);
        };
        let nonce: Vec<u8> = r.get(0);
        let ct: Vec<u8> = r.get(1);
        let plain =
            open_sealed(&self.inner.key, name.as_bytes(), &nonce, &ct).ok_or_else(|| {
                StateError::Decrypt {
                    name: name.to_string(),
                }
            })?;
        let value = String::from_utf8(plain).map_err(|_| StateError::Decrypt {
            name: name.to_string(),
        })?;
        Ok(Some(StoredToken {
            value,
            expires_at: r.get(2),
        }))
    }

    async fn token_delete(&self, name: &str) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM tokens WHERE name = $1", &[&name])
            .await
            .map_err(pg(format!("delete the token `{name}`")))?;
        Ok(n > 0)
    }

    async fn token_lock(&self, name: &str) -> Result<TokenLock> {
        self.client().await.map(drop)?;
        let c = self.raw_client().await?;
        c.batch_execute(&format!("SET lock_timeout = '{TOKEN_LOCK_TIMEOUT}'"))
            .await
            .map_err(pg("prepare a token lock"))?;
        let key = format!("ferry token {name}");
        if let Err(e) = c
            .execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
            .await
        {
            // The session may hold nothing, but do not give it back to the pool anyway.
            drop(Object::take(c));
            return Err(pg(format!(
                "wait for another daemon's refresh of the token `{name}`"
            ))(e));
        }
        Ok(TokenLock::held(SessionLock(Some(c))))
    }

    // ---- the webhook inbox ----------------------------------------------------------

    async fn inbox_put(
        &self,
        delivery_id: &str,
        event: &str,
        payload: &serde_json::Value,
        received_at: DateTime<Utc>,
    ) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO inbox (delivery_id, event, payload, received_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (delivery_id) DO NOTHING",
                &[&delivery_id, &event, &payload.to_string(), &received_at],
            )
            .await
            .map_err(pg("store a webhook event"))?;
        Ok(n == 1)
    }

    async fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxEvent>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, event, payload, received_at, attempts FROM inbox
                 WHERE status = 'pending' ORDER BY id LIMIT $1",
                &[&limit_i64(limit)],
            )
            .await
            .map_err(pg("read the webhook inbox"))?;
        rows.iter().map(row_to_event).collect()
    }

    /// Claims the due events for this process (see the module docs): another daemon's
    /// call skips them until they are done, failed, or their claim ran out.
    async fn inbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>> {
        let until = expiry(now, INBOX_CLAIM)?;
        let c = self.client().await?;
        let rows = c
            .query(
                "UPDATE inbox SET claimed_by = $3, claimed_until = $4
                 FROM (SELECT id FROM inbox
                       WHERE status = 'pending'
                         AND (finished_at IS NULL OR finished_at <= $1)
                         AND (claimed_until IS NULL OR claimed_until <= $1
                              OR claimed_by = $3)
                       ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) due
                 WHERE inbox.id = due.id
                 RETURNING inbox.id, inbox.event, inbox.payload, inbox.received_at,
                           inbox.attempts",
                &[
                    &now,
                    &limit_i64(limit.min(INBOX_CLAIM_MAX)),
                    &self.inner.claimer,
                    &until,
                ],
            )
            .await
            .map_err(pg("claim webhook events"))?;
        let mut events = rows.iter().map(row_to_event).collect::<Result<Vec<_>>>()?;
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    async fn inbox_done(&self, id: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE inbox SET status = 'done', finished_at = $2, payload = '{}',
               claimed_by = NULL, claimed_until = NULL WHERE id = $1",
            &[&id, &self.now()],
        )
        .await
        .map_err(pg("finish a webhook event"))?;
        Ok(())
    }

    async fn inbox_failed(&self, id: i64, error: &str) -> Result<InboxFailure> {
        let now = self.now();
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg("record a failed webhook event"))?;
        let Some(r) = tx
            .query_opt(
                "SELECT attempts, received_at FROM inbox
                 WHERE id = $1 AND status = 'pending' FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(pg("record a failed webhook event"))?
        else {
            return Ok(InboxFailure::Dead);
        };
        let attempts: i64 = r.get(0);
        let received: DateTime<Utc> = r.get(1);
        let dead = now - received >= chrono::Duration::hours(super::INBOX_RETRY_HOURS);
        let outcome = if dead {
            InboxFailure::Dead
        } else {
            InboxFailure::Retry(now + inbox_retry_delay(attempts))
        };
        let (status, at) = match outcome {
            InboxFailure::Dead => ("failed", now),
            InboxFailure::Retry(t) => ("pending", t),
        };
        tx.execute(
            "UPDATE inbox SET attempts = attempts + 1, last_error = $2, status = $3,
               finished_at = $4, claimed_by = NULL, claimed_until = NULL WHERE id = $1",
            &[&id, &error, &status, &at],
        )
        .await
        .map_err(pg("record a failed webhook event"))?;
        tx.commit()
            .await
            .map_err(pg("record a failed webhook event"))?;
        Ok(outcome)
    }

    async fn inbox_retry(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE inbox SET status = 'pending', attempts = 0, finished_at = NULL,
                   received_at = $2, claimed_by = NULL, claimed_until = NULL
                 WHERE id = $1 AND status IN ('pending', 'failed')",
                &[&id, &self.now()],
            )
            .await
            .map_err(pg("re-queue a webhook event"))?;
        Ok(n == 1)
    }

    async fn inbox_list(&self, dead_only: bool, limit: usize) -> Result<Vec<InboxEntry>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM inbox
                     WHERE (NOT $1 OR status = 'failed') ORDER BY id DESC LIMIT $2"
                ),
                &[&dead_only, &limit_i64(limit)],
            )
            .await
            .map_err(pg("read the webhook inbox"))?;
        rows.iter().map(row_to_entry).collect()
    }

    async fn inbox_entry(&self, id: i64) -> Result<Option<InboxEntry>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {ENTRY_COLUMNS} FROM inbox WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg("read the webhook inbox"))?;
        r.as_ref().map(row_to_entry).transpose()
    }

    async fn inbox_counts(&self) -> Result<InboxCounts> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'pending' AND attempts = 0),
                        count(*) FILTER (WHERE status = 'pending' AND attempts > 0),
                        count(*) FILTER (WHERE status = 'failed') FROM inbox",
                &[],
            )
            .await
            .map_err(pg("count the webhook inbox"))?;
        Ok(InboxCounts {
            pending: count_u64(r.get(0)),
            retrying: count_u64(r.get(1)),
            dead: count_u64(r.get(2)),
        })
    }

    async fn inbox_depth(&self) -> Result<u64> {
        let c = self.client().await?;
        let r = c
            .query_one("SELECT count(*) FROM inbox WHERE status = 'pending'", &[])
            .await
            .map_err(pg("count the webhook inbox"))?;
        Ok(count_u64(r.get(0)))
    }

    async fn inbox_purge(
        &self,
        done_before: DateTime<Utc>,
        failed_before: DateTime<Utc>,
    ) -> Result<usize> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM inbox WHERE (status = 'done' AND received_at < $1)
                                      OR (status = 'failed' AND received_at < $2)",
                &[&done_before, &failed_before],
            )
            .await
            .map_err(pg("purge the webhook inbox"))?;
        Ok(n as usize)
    }

    // ---- run history ----------------------------------------------------------------

    async fn run_started(
        &self,
        pipeline: &str,
        run_id: &str,
        started_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg("record a run"))?;
        tx.execute(
            "INSERT INTO runs (run_id, pipeline, started_at) VALUES ($1, $2, $3)
             ON CONFLICT (run_id) DO UPDATE SET started_at = excluded.started_at",
            &[&run_id, &pipeline, &started_at],
        )
        .await
        .map_err(pg("record a run"))?;
        tx.execute(
            "DELETE FROM runs WHERE pipeline = $1 AND run_id NOT IN (
               SELECT run_id FROM runs WHERE pipeline = $1
               ORDER BY started_at DESC LIMIT $2)",
            &[&pipeline, &super::runs::RUNS_KEPT],
        )
        .await
        .map_err(pg("prune old runs"))?;
        tx.commit().await.map_err(pg("record a run"))?;
        Ok(())
    }

    async fn run_finished(
        &self,
        run_id: &str,
        finished_at: DateTime<Utc>,
        ok: bool,
        summary: &serde_json::Value,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE runs SET finished_at = $2, ok = $3, summary = $4 WHERE run_id = $1",
            &[&run_id, &finished_at, &ok, &summary.to_string()],
        )
        .await
        .map_err(pg("record the end of a run"))?;
        Ok(())
    }

    async fn run_trigger(&self, run_id: &str, trigger: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE runs SET trigger = $2 WHERE run_id = $1",
            &[&run_id, &super::runs::bounded(trigger)],
        )
        .await
        .map_err(pg("record what started a run"))?;
        Ok(())
    }

    async fn run_stopped(&self, run_id: &str, why: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE runs SET stopped = $2 WHERE run_id = $1",
            &[&run_id, &super::runs::bounded(why)],
        )
        .await
        .map_err(pg("record why a run stopped"))?;
        Ok(())
    }

    async fn last_runs(&self) -> Result<Vec<RunRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT DISTINCT ON (pipeline) {RUN_COLUMNS} FROM runs
                     ORDER BY pipeline, started_at DESC, seq DESC"
                ),
                &[],
            )
            .await
            .map_err(pg("read the last runs"))?;
        Ok(rows.iter().map(row_to_run).collect())
    }

    async fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE $1::TEXT IS NULL OR pipeline = $1
                     ORDER BY started_at DESC, seq DESC LIMIT $2"
                ),
                &[&pipeline, &limit_i64(limit)],
            )
            .await
            .map_err(pg("read runs"))?;
        Ok(rows.iter().map(row_to_run).collect())
    }

    // ---- labels ---------------------------------------------------------------------

    async fn set_labels(
        &self,
        scope: &str,
        labels: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        use super::{MAX_LABEL_CHARS, MAX_LABELS_PER_SCOPE};
        if labels.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg("store labels"))?;
        // One writer per scope at a time, so the bound holds with several daemons.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("ferry labels {scope}")],
        )
        .await
        .map_err(pg("store labels"))?;
        let have: i64 = tx
            .query_one("SELECT count(*) FROM labels WHERE scope = $1", &[&scope])
            .await
            .map_err(pg("count labels"))?
            .get(0);
        let mut room = MAX_LABELS_PER_SCOPE.saturating_sub(usize::try_from(have).unwrap_or(0));
        let known = tx
            .prepare_cached("SELECT 1 FROM labels WHERE scope = $1 AND id = $2")
            .await
            .map_err(pg("store labels"))?;
        let put = tx
            .prepare_cached(
                "INSERT INTO labels (scope, id, label, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scope, id) DO UPDATE
                 SET label = excluded.label, updated_at = excluded.updated_at",
            )
            .await
            .map_err(pg("store labels"))?;
        for (id, label) in labels {
            let label = label.trim();
            if id.is_empty() || label.is_empty() || id.len() > MAX_LABEL_CHARS {
                continue;
            }
            let exists = tx
                .query_opt(&known, &[&scope, id])
                .await
                .map_err(pg("store labels"))?
                .is_some();
            if !exists {
                if room == 0 {
                    continue;
                }
                room -= 1;
            }
            let label: String = label.chars().take(MAX_LABEL_CHARS).collect();
            tx.execute(&put, &[&scope, id, &label, &now])
                .await
                .map_err(pg("store labels"))?;
        }
        tx.commit().await.map_err(pg("store labels"))?;
        Ok(())
    }

    async fn labels(&self, scope: &str) -> Result<BTreeMap<String, String>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT id, label FROM labels WHERE scope = $1", &[&scope])
            .await
            .map_err(pg("read labels"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    // ---- pipeline leases ------------------------------------------------------------

    // ---- Zoom sinks and privacy requests (see postgres_privacy.rs) ------------------

    async fn zoom_ledger_get(
        &self,
        pipeline: &str,
        object: &str,
        keys: &[String],
    ) -> Result<HashMap<String, ZoomLedgerRow>> {
        privacy::zoom_ledger_get(self, pipeline, object, keys).await
    }

    async fn zoom_ledger_put(
        &self,
        pipeline: &str,
        object: &str,
        rows: &[ZoomLedgerRow],
    ) -> Result<()> {
        privacy::zoom_ledger_put(self, pipeline, object, rows).await
    }

    async fn zoom_ledger_owners(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<HashMap<String, (String, String)>> {
        privacy::zoom_ledger_owners(self, object, ids).await
    }

    async fn zoom_defer(&self, rows: &[Deferral]) -> Result<()> {
        privacy::zoom_defer(self, rows).await
    }

    async fn zoom_deferrals(&self, pipeline: Option<&str>) -> Result<Vec<Deferral>> {
        privacy::zoom_deferrals(self, pipeline).await
    }

    async fn zoom_undefer(&self, pipeline: &str, sink: &str, keys: &[String]) -> Result<()> {
        privacy::zoom_undefer(self, pipeline, sink, keys).await
    }

    async fn zoom_deferral_summary(&self, pipeline: Option<&str>) -> Result<Vec<DeferralSummary>> {
        privacy::zoom_deferral_summary(self, pipeline).await
    }

    fn subject_hash(&self, email: &str) -> String {
        privacy::hash(self, email)
    }

    async fn subject_index_find(&self, hash: &str) -> Result<Vec<SubjectEntry>> {
        privacy::subject_index_find(self, hash).await
    }

    async fn subject_scan(&self, email: &str, hash: &str) -> Result<Vec<SubjectHit>> {
        privacy::subject_scan(self, email, hash).await
    }

    async fn subject_zoom(&self, email: &str) -> Result<Vec<ZoomSubjectRow>> {
        privacy::subject_zoom(self, email).await
    }

    async fn subject_forget(&self, email: &str, hash: &str) -> Result<ForgetReport> {
        privacy::subject_forget(self, email, hash).await
    }

    async fn try_acquire(
        &self,
        pipeline: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let now = self.now();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg("take a pipeline lease"))?;
        let row = lock_lease(&tx, pipeline, now).await?;
        let out = if free_or_expired(&row, now) {
            Ok(take_lease(&tx, pipeline, holder, row.fence, now, ttl).await?)
        } else {
            Err(row.held(pipeline))
        };
        tx.commit().await.map_err(pg("take a pipeline lease"))?;
        Ok(out)
    }

    async fn take_over(
        &self,
        was: &Held,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let now = self.now();
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg("take over a pipeline lease"))?;
        let row = lock_lease(&tx, &was.pipeline, now).await?;
        let same = row.holder == was.holder && row.fence == was.fence;
        let out = if same || free_or_expired(&row, now) {
            Ok(take_lease(&tx, &was.pipeline, holder, row.fence, now, ttl).await?)
        } else {
            Err(row.held(&was.pipeline))
        };
        tx.commit()
            .await
            .map_err(pg("take over a pipeline lease"))?;
        Ok(out)
    }

    async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Held>> {
        let now = self.now();
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg("renew a pipeline lease"))?;
        let row = lock_lease(&tx, &lease.pipeline, now).await?;
        // Still ours (even if it expired meanwhile: nobody took it, so the fencing number
        // still stands).
        let out = if row.holder == lease.holder && row.fence == lease.fence {
            let expires_at = expiry(now, ttl)?;
            tx.execute(
                "UPDATE leases SET expires_at = $2 WHERE pipeline = $1",
                &[&lease.pipeline, &expires_at],
            )
            .await
            .map_err(pg("renew a pipeline lease"))?;
            Ok(Lease {
                expires_at,
                ..lease.clone()
            })
        } else {
            Err(row.held(&lease.pipeline))
        };
        tx.commit().await.map_err(pg("renew a pipeline lease"))?;
        Ok(out)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE leases SET holder = '', expires_at = $4
             WHERE pipeline = $1 AND holder = $2 AND fence = $3",
            &[&lease.pipeline, &lease.holder, &lease.fence, &self.now()],
        )
        .await
        .map_err(pg("release a pipeline lease"))?;
        Ok(())
    }

    async fn lease_holder(&self, pipeline: &str) -> Result<Option<Held>> {
        let now = self.now();
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT holder, fence, acquired_at, expires_at FROM leases WHERE pipeline = $1",
                &[&pipeline],
            )
            .await
            .map_err(pg(format!("read the lease of {pipeline}")))?;
        Ok(r.map(|r| LeaseRow {
            holder: r.get(0),
            fence: r.get(1),
            acquired_at: r.get(2),
            expires_at: r.get(3),
        })
        .filter(|r| !r.holder.is_empty() && r.expires_at > now)
        .map(|r| r.held(pipeline)))
    }
}

// ---- `ferry state migrate --to postgres://...` ------------------------------------------

/// What [`copy_from_sqlite`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub checkpoints: u64,
    pub ledger: u64,
    pub dead_letters: u64,
    pub tokens: u64,
    pub inbox: u64,
    pub runs: u64,
    pub labels: u64,
    pub subject_index: u64,
    pub synced_writes: u64,
    pub zoom_ledger: u64,
    pub zoom_deferrals: u64,
}

type Cells = Vec<Option<String>>;

/// Every row of `table` (the listed columns) as text, read from the SQLite file.
fn sqlite_rows(src: &SqliteState, table: &str, cols: &[&str]) -> Result<Vec<Cells>> {
    let conn = src.conn();
    let sql = format!("SELECT {} FROM {table}", cols.join(", "));
    let mut st = conn.prepare(&sql).context(format!("read {table}"))?;
    let n = cols.len();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => None,
                    rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                    rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                    rusqlite::types::ValueRef::Text(t) => {
                        Some(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Blob(b) => Some(hex::encode(b)),
                })
            })
            .collect::<rusqlite::Result<Cells>>()
    })
    .context(format!("read {table}"))?
    .collect::<rusqlite::Result<Vec<_>>>()
    .context(format!("read {table}"))
}

fn cell(row: &Cells, i: usize) -> Option<&str> {
    row.get(i).and_then(|c| c.as_deref())
}

fn text(row: &Cells, i: usize) -> String {
    cell(row, i).unwrap_or_default().to_string()
}

fn ts(row: &Cells, i: usize) -> Result<Option<DateTime<Utc>>> {
    cell(row, i).map(super::parse_ts).transpose()
}

fn ts_req(row: &Cells, i: usize) -> Result<DateTime<Utc>> {
    ts(row, i)?.ok_or_else(|| StateError::Corrupt("a required time is missing".into()))
}

fn int(row: &Cells, i: usize) -> i64 {
    cell(row, i).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A column of a set-based copy, as SQLite holds it: text (a missing value copied as ""),
/// text that may be NULL, a required or optional time, an integer, a 0/1 flag (optional or
/// not).
#[derive(Clone, Copy)]
enum Col {
    Text,
    NullText,
    Time,
    NullTime,
    Int,
    Flag,
    NullFlag,
}

/// Rows copied per statement: one round trip for many rows, within PostgreSQL's limits on a
/// statement's parameters' size.
const COPY_CHUNK: usize = 2_000;

/// Inserts `rows` into `target` ("table (columns)", a constant of this file), `COPY_CHUNK`
/// rows a statement (`INSERT ... SELECT * FROM unnest(...)`), not a round trip per row: a
/// state of a few hundred thousand ledger rows copies in seconds over a network. The number
/// of rows copied.
async fn copy_rows<C: GenericClient>(
    tx: &C,
    target: &str,
    kinds: &[Col],
    rows: &[Cells],
    what: &str,
) -> Result<u64> {
    let casts: Vec<String> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| match k {
            Col::Text | Col::NullText => format!("${}::TEXT[]", i + 1),
            Col::Time | Col::NullTime => format!("${}::TIMESTAMPTZ[]", i + 1),
            Col::Int => format!("${}::BIGINT[]", i + 1),
            Col::Flag | Col::NullFlag => format!("${}::BOOLEAN[]", i + 1),
        })
        .collect();
    let sql = format!(
        "INSERT INTO {target} SELECT * FROM unnest({})",
        casts.join(", ")
    );
    let mut copied = 0u64;
    for chunk in rows.chunks(COPY_CHUNK) {
        let mut columns: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            columns.push(match kind {
                Col::Text => Box::new(chunk.iter().map(|r| text(r, i)).collect::<Vec<_>>()),
                Col::NullText => Box::new(
                    chunk
                        .iter()
                        .map(|r| cell(r, i).map(str::to_string))
                        .collect::<Vec<_>>(),
                ),
                Col::Time => Box::new(
                    chunk
                        .iter()
                        .map(|r| ts_req(r, i))
                        .collect::<Result<Vec<_>>>()?,
                ),
                Col::NullTime => {
                    Box::new(chunk.iter().map(|r| ts(r, i)).collect::<Result<Vec<_>>>()?)
                }
                Col::Int => Box::new(chunk.iter().map(|r| int(r, i)).collect::<Vec<_>>()),
                Col::Flag => Box::new(chunk.iter().map(|r| int(r, i) != 0).collect::<Vec<_>>()),
                Col::NullFlag => Box::new(
                    chunk
                        .iter()
                        .map(|r| cell(r, i).map(|v| v != "0"))
                        .collect::<Vec<_>>(),
                ),
            });
        }
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        tx.execute(&sql, &params).await.map_err(pg(what))?;
        copied = copied.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
    }
    Ok(copied)
}

/// Copies a SQLite state into an empty PostgreSQL state, in one transaction: checkpoints,
/// the ledger, dead letters, tokens (decrypted with the file's key and sealed again with the
/// database's key), the webhook inbox (pending events and the delivery ids that recognise
/// Zoom's retries), run history, labels, the subject index with its synced writes (only
/// when the database's key is the file's: the index is keyed by it), the Zoom ledger and
/// deferrals. Not copied: the lookup cache (refilled by the
/// next runs) and leases (they name processes of the old state; a held one refuses the copy).
pub(crate) async fn copy_from_sqlite(src: &SqliteState, dst: &PostgresState) -> Result<CopyReport> {
    let now = dst.now();
    let src2 = src.clone();
    let live: i64 = {
        let conn = src2.conn();
        conn.query_row(
            "SELECT count(*) FROM leases WHERE holder <> '' AND expires_at > ?1",
            [super::fmt_ts(now)],
            |r| r.get(0),
        )
        .context("read the leases")?
    };
    if live > 0 {
        return Err(StateError::Corrupt(format!(
            "{live} pipeline(s) are being run on the state file right now (a daemon or `ferry \
             run` holds their lease): stop it, then migrate"
        )));
    }
    let checkpoints = sqlite_rows(
        src,
        "checkpoints",
        &["pipeline", "stream", "partition", "cursor", "updated_at"],
    )?;
    let ledger = sqlite_rows(
        src,
        "ledger",
        &[
            "pipeline",
            "sink",
            "key",
            "sf_id",
            "hash",
            "state",
            "updated_at",
        ],
    )?;
    let letters = sqlite_rows(
        src,
        "dead_letters",
        &[
            "pipeline",
            "sink",
            "key",
            "payload",
            "error",
            "attempts",
            "retry_requested",
            "created_at",
            "updated_at",
        ],
    )?;
    let token_names: Vec<(String, Option<String>)> =
        sqlite_rows(src, "tokens", &["name", "expires_at"])?
            .iter()
            .map(|r| (text(r, 0), cell(r, 1).map(str::to_string)))
            .collect();
    let mut tokens = Vec::new();
    for (name, _) in &token_names {
        if let Some(t) = src.token_get(name)? {
            tokens.push((name.clone(), t));
        }
    }
    let inbox = sqlite_rows(
        src,
        "inbox",
        &[
            "delivery_id",
            "event",
            "payload",
            "received_at",
            "status",
            "attempts",
            "last_error",
            "finished_at",
        ],
    )?;
    let runs = sqlite_rows(
        src,
        "runs",
        &[
            "run_id",
            "pipeline",
            "started_at",
            "finished_at",
            "ok",
            "summary",
            "trigger",
            "stopped",
        ],
    )?;
    let labels = sqlite_rows(src, "labels", &["scope", "id", "label", "updated_at"])?;
    let subjects = sqlite_rows(
        src,
        "subject_index",
        &[
            "hash",
            "pipeline",
            "stream",
            "record_key",
            "role",
            "record_time",
            "updated_at",
        ],
    )?;
    // The index holds keyed hashes, not addresses: it cannot be keyed again, so it is only
    // searchable after the copy when the database's key is the file's.
    let probe = "ferry key probe";
    if !subjects.is_empty() && src.subject_hash(probe) != privacy::hash(dst, probe) {
        return Err(StateError::InvalidKey(format!(
            "the state file's subject index (for privacy requests) is keyed with the file's \
             own key, not the one in {STATE_KEY_ENV}, and could not be searched after the \
             copy: set {STATE_KEY_ENV} to the contents of the key file beside the state file \
             (its `.key` file, 64 hex characters) and migrate again"
        )));
    }
    let writes = sqlite_rows(
        src,
        "synced_writes",
        &[
            "pipeline",
            "stream",
            "record_key",
            "sink",
            "ledger_key",
            "sobject",
            "sf_id",
            "updated_at",
        ],
    )?;
    let zoom_ledger = sqlite_rows(
        src,
        "zoom_ledger",
        &[
            "pipeline",
            "object",
            "key",
            "zoom_id",
            "vals",
            "hash",
            "fields",
            "params",
            "state",
            "updated_at",
        ],
    )?;
    let deferrals = sqlite_rows(
        src,
        "zoom_deferrals",
        &[
            "pipeline",
            "sink",
            "key",
            "record",
            "reason",
            "resource",
            "not_before",
            "deferred_at",
        ],
    )?;

    let mut c = dst.client().await?;
    let tx = c.transaction().await.map_err(pg("begin the copy"))?;
    let used: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM checkpoints) + (SELECT count(*) FROM ledger)
                  + (SELECT count(*) FROM tokens) + (SELECT count(*) FROM inbox)
                  + (SELECT count(*) FROM zoom_ledger) + (SELECT count(*) FROM subject_index)",
            &[],
        )
        .await
        .map_err(pg("look at the target database"))?
        .get(0);
    if used > 0 {
        return Err(StateError::Corrupt(format!(
            "the state database {} already holds a state (checkpoints, ledger, tokens, \
             webhook events, Zoom ledger or subject index): migrate into an empty database",
            dst.inner.shown
        )));
    }
    let mut report = CopyReport::default();
    use Col::{Flag, Int, NullFlag, NullText, NullTime, Text, Time};
    report.checkpoints = copy_rows(
        &tx,
        "checkpoints (pipeline, stream, partition, cursor, updated_at)",
        &[Text, Text, Text, Text, Time],
        &checkpoints,
        "copy the checkpoints",
    )
    .await?;
    report.ledger = copy_rows(
        &tx,
        "ledger (pipeline, sink, key, sf_id, hash, state, updated_at)",
        &[Text, Text, Text, NullText, Text, Text, Time],
        &ledger,
        "copy the ledger",
    )
    .await?;
    report.dead_letters = copy_rows(
        &tx,
        "dead_letters (pipeline, sink, key, payload, error, attempts, retry_requested, \
         created_at, updated_at)",
        &[Text, Text, Text, Text, Text, Int, Flag, Time, Time],
        &letters,
        "copy the dead letters",
    )
    .await?;
    for (name, t) in &tokens {
        let (nonce, ct) = seal(&dst.inner.key, name.as_bytes(), t.value.as_bytes())?;
        tx.execute(
            "INSERT INTO tokens (name, nonce, ciphertext, expires_at, updated_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[name, &nonce.as_slice(), &ct, &t.expires_at, &now],
        )
        .await
        .map_err(pg(format!("copy the token `{name}`")))?;
        report.tokens += 1;
    }
    report.inbox = copy_rows(
        &tx,
        "inbox (delivery_id, event, payload, received_at, status, attempts, last_error, \
         finished_at)",
        &[Text, Text, Text, Time, Text, Int, NullText, NullTime],
        &inbox,
        "copy the webhook inbox",
    )
    .await?;
    report.runs = copy_rows(
        &tx,
        "runs (run_id, pipeline, started_at, finished_at, ok, summary, trigger, stopped)",
        &[
            Text, Text, Time, NullTime, NullFlag, NullText, NullText, NullText,
        ],
        &runs,
        "copy the run history",
    )
    .await?;
    report.labels = copy_rows(
        &tx,
        "labels (scope, id, label, updated_at)",
        &[Text, Text, Text, Time],
        &labels,
        "copy the labels",
    )
    .await?;
    report.subject_index = copy_rows(
        &tx,
        "subject_index (hash, pipeline, stream, record_key, role, record_time, updated_at)",
        &[Text, Text, Text, Text, Text, Text, Time],
        &subjects,
        "copy the subject index",
    )
    .await?;
    report.synced_writes = copy_rows(
        &tx,
        "synced_writes (pipeline, stream, record_key, sink, ledger_key, sobject, sf_id, \
         updated_at)",
        &[Text, Text, Text, Text, Text, Text, Text, Time],
        &writes,
        "copy the synced writes",
    )
    .await?;
    report.zoom_ledger = copy_rows(
        &tx,
        "zoom_ledger (pipeline, object, key, zoom_id, vals, hash, fields, params, state, \
         updated_at)",
        &[
            Text, Text, Text, NullText, Text, Text, Text, Text, Text, Time,
        ],
        &zoom_ledger,
        "copy the Zoom ledger",
    )
    .await?;
    report.zoom_deferrals = copy_rows(
        &tx,
        "zoom_deferrals (pipeline, sink, key, record, reason, resource, not_before, \
         deferred_at)",
        &[Text, Text, Text, Text, Text, Text, Time, Time],
        &deferrals,
        "copy the deferrals",
    )
    .await?;
    tx.commit().await.map_err(pg("commit the copy"))?;
    Ok(report)
}

/// A connection holding a session advisory lock. It never goes back to the pool: dropping it
/// closes the connection, and the server releases the lock with the session.
struct SessionLock(Option<Object>);

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            drop(Object::take(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_recognised_and_their_passwords_hidden() {
        assert!(is_postgres_url("postgres://u:p@h/db"));
        assert!(is_postgres_url("PostgreSQL://h/db"));
        assert!(!is_postgres_url(".ferry/state.db"));
        assert!(!is_postgres_url("postgres"));
        let shown = redact_url("postgres://ferry:s3cret@db.internal:5432/ferry?password=x2&x=1");
        assert!(
            !shown.contains("s3cret") && !shown.contains("x2"),
            "{shown}"
        );
        assert!(
            shown.contains("ferry:***@db.internal:5432/ferry"),
            "{shown}"
        );
        assert!(shown.contains("x=1"), "{shown}");
        let bad = redact_url("postgres://u:p@[bad");
        assert!(!bad.contains(":p@"), "{bad}");
    }

    #[test]
    fn a_url_that_does_not_parse_is_refused_without_showing_it() {
        let err =
            PostgresState::open_with_key("postgres://u:s3cret@h:notaport/db", StateKey::random())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(err.contains("read the state URL"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}

#[cfg(test)]
mod connection_tests {
    use super::*;

    #[test]
    fn a_vanished_database_host_is_noticed_within_a_minute_unless_the_url_says_otherwise() {
        let url = "postgres://ferry@db.internal/ferry";
        let mut c: tokio_postgres::Config = url.parse().unwrap();
        connection_defaults(&mut c, url);
        assert!(c.get_keepalives());
        let noticed = c.get_keepalives_idle()
            + c.get_keepalives_interval().unwrap() * c.get_keepalives_retries().unwrap();
        assert!(noticed <= Duration::from_secs(60), "{noticed:?}");
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(60)));
        assert_eq!(c.get_application_name(), Some("ferry"));
        let url = "postgres://ferry@db.internal/ferry?keepalives_idle=300&tcp_user_timeout=5&application_name=x";
        let mut c: tokio_postgres::Config = url.parse().unwrap();
        connection_defaults(&mut c, url);
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(300));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(c.get_application_name(), Some("x"));
        // A password that holds an option's name sets nothing.
        let url = "postgres://ferry:tcp_user_timeout@db.internal/ferry";
        let mut c: tokio_postgres::Config = url.parse().unwrap();
        connection_defaults(&mut c, url);
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(60)));
        assert!(sets("host=db sslmode=require", "sslmode"));
        assert!(!sets("host=db password=sslmode", "sslmode"));
        assert!(!sets("postgres://u:sslmode@h/db", "sslmode"));
    }

    #[test]
    fn tls_options_leave_the_driver_what_it_reads() {
        let (url, root) =
            tls_options("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(root.as_deref(), Some(Path::new("/etc/ca.pem")));
        let c: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let plain = "postgres://u:p@h/db?application_name=x";
        assert_eq!(tls_options(plain), (plain.to_string(), None));
    }
}
