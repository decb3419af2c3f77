//! Numbered migrations. Each runs once, in its own transaction, and bumps
//! `PRAGMA user_version`; a file newer than this build is refused rather than guessed at.

use super::{Context, Result, StateError};
use rusqlite::{Connection, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE checkpoints (
        pipeline   TEXT NOT NULL,
        stream     TEXT NOT NULL,
        partition  TEXT NOT NULL DEFAULT '',
        cursor     TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (pipeline, stream, partition)
    ) WITHOUT ROWID;

    -- An empty key would make every record of a sink the same record.
    CREATE TABLE ledger (
        pipeline   TEXT NOT NULL,
        sink       TEXT NOT NULL CHECK (length(sink) > 0),
        key        TEXT NOT NULL CHECK (length(key) > 0),
        sf_id      TEXT,
        hash       TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('written', 'pending')),
        updated_at TEXT NOT NULL,
        PRIMARY KEY (pipeline, sink, key)
    ) WITHOUT ROWID;

    CREATE TABLE lookup_cache (
        scope      TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
    CREATE INDEX lookup_cache_expiry ON lookup_cache (expires_ms);

    CREATE TABLE dead_letters (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline        TEXT NOT NULL,
        sink            TEXT NOT NULL,
        key             TEXT NOT NULL,
        payload         TEXT NOT NULL,
        error           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 1,
        retry_requested INTEGER NOT NULL DEFAULT 0,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    );
    -- One letter per failing record: a record that fails again updates its letter.
    CREATE UNIQUE INDEX dead_letters_record ON dead_letters (pipeline, sink, key) WHERE key <> '';
    CREATE INDEX dead_letters_pipeline ON dead_letters (pipeline, id);

    CREATE TABLE tokens (
        name       TEXT PRIMARY KEY,
        nonce      BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        expires_at TEXT,
        updated_at TEXT NOT NULL
    );

    -- A value encrypted with the file's key, to tell a wrong key from a damaged token.
    CREATE TABLE key_check (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        nonce      BLOB NOT NULL,
        ciphertext BLOB NOT NULL
    );

    CREATE TABLE inbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL UNIQUE,
        event       TEXT NOT NULL,
        payload     TEXT NOT NULL,
        received_at TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        finished_at TEXT
    );
    CREATE INDEX inbox_pending ON inbox (status, id);

    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        pipeline    TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        ok          INTEGER,
        summary     TEXT
    );
    CREATE INDEX runs_pipeline ON runs (pipeline, started_at);
    "#,
    // 2: one runner per pipeline (see lease.rs). `holder` is empty once released; the row
    // stays, so the fencing number only ever grows.
    r#"
    CREATE TABLE leases (
        pipeline    TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        fence       INTEGER NOT NULL CHECK (fence > 0),
        acquired_at TEXT NOT NULL,
        expires_at  TEXT NOT NULL
    );
    "#,
    // 3: what started a run and why it stopped (the status page shows both, for the
    // daemon's runs and `ferry run`'s alike), and labels for partition ids (a Zoom user id →
    // the user's email), learned when a run lists the partitions.
    r#"
    ALTER TABLE runs ADD COLUMN trigger TEXT;
    ALTER TABLE runs ADD COLUMN stopped TEXT;
    CREATE TABLE labels (
        scope      TEXT NOT NULL,
        id         TEXT NOT NULL,
        label      TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (scope, id)
    ) WITHOUT ROWID;
    "#,
    // 4: privacy requests (see subjects.rs): which synced records an address appeared in,
    // keyed by a keyed hash of the address (never the address), one row per (address,
    // record); and, once per record whatever its number of addresses, what ferry wrote for
    // it. The export joins the two on (pipeline, stream, record_key).
    r#"
    CREATE TABLE subject_index (
        hash        TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        record_key  TEXT NOT NULL,
        role        TEXT NOT NULL,
        record_time TEXT NOT NULL DEFAULT '',
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (hash, pipeline, stream, record_key)
    ) WITHOUT ROWID;
    -- Forgetting one address finds whether anybody else is still indexed in its records.
    CREATE INDEX subject_index_record ON subject_index (pipeline, stream, record_key);
    CREATE TABLE synced_writes (
        pipeline    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        record_key  TEXT NOT NULL,
        sink        TEXT NOT NULL,
        ledger_key  TEXT NOT NULL,
        sobject     TEXT NOT NULL DEFAULT '',
        sf_id       TEXT NOT NULL DEFAULT '',
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (pipeline, stream, record_key, sink, ledger_key)
    ) WITHOUT ROWID;
    "#,
    // 5: Zoom sinks: the Zoom ledger (key → Zoom id and what Zoom returned, secrets never
    // kept) and records a daily limit holds back until it resets.
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
        updated_at TEXT NOT NULL,
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
        not_before  TEXT NOT NULL,
        deferred_at TEXT NOT NULL,
        PRIMARY KEY (pipeline, sink, key)
    ) WITHOUT ROWID;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .context("read the schema version")?;
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("begin a migration")?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .context("read the schema version")?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)
            .context(format!("apply migration {version}"))?;
        tx.pragma_update(None, "user_version", version)
            .context("record the schema version")?;
        tx.commit().context(format!("commit migration {version}"))?;
    }
    Ok(())
}

/// True when the file already has a key check (so it was used with some key before).
pub(super) fn has_key_check(conn: &Connection) -> Result<bool> {
    let table: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'key_check'",
            [],
            |r| r.get(0),
        )
        .context("inspect the schema")?;
    if table == 0 {
        return Ok(false);
    }
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM key_check", [], |r| r.get(0))
        .context("read the key check")?;
    Ok(rows > 0)
}
