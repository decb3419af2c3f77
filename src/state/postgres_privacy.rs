//! The PostgreSQL side of Zoom sinks' state (the Zoom ledger and deferrals, see
//! [`super::super::zoom`]) and of privacy requests (the subject index, what the state holds
//! about one address and forgetting it, see [`super::super::subjects`]), with the SQLite
//! backend's semantics: the same rows, orders (byte order: `COLLATE "C"`), redactions and
//! keyed hash. Forgetting runs in one transaction, then rewrites the tables it touched
//! (`VACUUM (FULL)`) so no dead row version keeps the address in the table files.

use super::super::subjects::{
    AUDIT_PIPELINE, ForgetReport, HANDLED, IndexedRecord, LEDGER_KEY_KEPT, SubjectEntry,
    SubjectHit, ZoomSubjectRow, holds_others, redact, subject_hash,
};
use super::super::zoom::{
    Deferral, DeferralSummary, ZoomLedgerRow, ZoomRowState, obj, summarize_deferrals, to_json,
};
use super::{PostgresState, Result, StateError, count_u64, last_per_key, pg};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};

/// How long `forget`'s table rewrite waits for a lock another daemon holds before it gives
/// up (the rows are forgotten already; only the compaction is left undone).
const VACUUM_LOCK_TIMEOUT: &str = "30s";

/// Where the Zoom ledger's copies of an address can be (PostgreSQL's form of
/// `subjects::ZOOM_LEDGER_MENTIONS`).
const ZOOM_LEDGER_MENTIONS: &str = "strpos(lower(fields), $1) > 0 OR strpos(lower(vals), $1) > 0 \
     OR strpos(lower(params), $1) > 0";

/// A deferral that holds the address anywhere.
const DEFERRAL_MENTIONS: &str = "strpos(lower(record), $1) > 0 OR strpos(lower(key), $1) > 0 \
     OR strpos(lower(resource), $1) > 0 OR strpos(lower(reason), $1) > 0";

fn corrupt_state(state: &str) -> StateError {
    StateError::Corrupt(format!("unknown Zoom ledger state {state:?}"))
}

// ---- the subject index, written with a batch ------------------------------------------

/// Saves a batch's subject index rows (inside the batch's transaction, fenced or not).
pub(super) async fn insert_subjects<C: GenericClient>(
    tx: &C,
    pipeline: &str,
    records: &[IndexedRecord],
    now: DateTime<Utc>,
) -> Result<()> {
    if records.iter().all(|r| r.subjects.is_empty()) {
        return Ok(());
    }
    let ctx = "write the subject index";
    // A record without an address is nobody's: its writes are not needed.
    let indexed = || records.iter().filter(|r| !r.subjects.is_empty());
    // One statement per table for the whole batch, a row once (see `last_per_key`).
    let subjects = last_per_key(
        indexed().flat_map(|r| {
            r.subjects
                .iter()
                .map(move |(hash, role)| (hash.as_str(), r, role.as_str()))
        }),
        |(hash, r, _)| (*hash, r.stream.as_str(), r.record_key.as_str()),
        |_, later| later,
    );
    let (mut hashes, mut streams, mut keys, mut roles, mut times) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (hash, r, role) in &subjects {
        hashes.push(*hash);
        streams.push(r.stream.as_str());
        keys.push(r.record_key.as_str());
        roles.push(*role);
        times.push(r.record_time.as_str());
    }
    tx.execute(
        "INSERT INTO subject_index (hash, pipeline, stream, record_key, role, record_time,
                                    updated_at)
         SELECT u.hash, $1, u.stream, u.record_key, u.role, u.record_time, $7
         FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[])
              AS u(hash, stream, record_key, role, record_time)
         ON CONFLICT (hash, pipeline, stream, record_key) DO UPDATE SET
           role = excluded.role, record_time = excluded.record_time,
           updated_at = excluded.updated_at",
        &[&pipeline, &hashes, &streams, &keys, &roles, &times, &now],
    )
    .await
    .map_err(pg(ctx))?;
    // (stream, record key, sink, ledger key, sObject, id); a write seen twice keeps the
    // later sObject and the id either carried, as two statements would.
    type Write<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);
    let writes: Vec<Write<'_>> = last_per_key(
        indexed().flat_map(|r| {
            r.writes.iter().map(move |w| {
                (
                    r.stream.as_str(),
                    r.record_key.as_str(),
                    w.sink.as_str(),
                    w.ledger_key.as_str(),
                    w.sobject.as_str(),
                    w.sf_id.as_str(),
                )
            })
        }),
        |w| (w.0, w.1, w.2, w.3),
        |earlier, later| {
            let id = if later.5.is_empty() {
                earlier.5
            } else {
                later.5
            };
            (later.0, later.1, later.2, later.3, later.4, id)
        },
    );
    if writes.is_empty() {
        return Ok(());
    }
    let mut cols: [Vec<&str>; 6] = Default::default();
    for w in &writes {
        for (col, v) in cols.iter_mut().zip([w.0, w.1, w.2, w.3, w.4, w.5]) {
            col.push(v);
        }
    }
    let [streams, keys, sinks, ledger_keys, sobjects, ids] = &cols;
    tx.execute(
        "INSERT INTO synced_writes (pipeline, stream, record_key, sink, ledger_key, sobject,
                                    sf_id, updated_at)
         SELECT $1, u.stream, u.record_key, u.sink, u.ledger_key, u.sobject, u.sf_id, $8
         FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[])
              AS u(stream, record_key, sink, ledger_key, sobject, sf_id)
         ON CONFLICT (pipeline, stream, record_key, sink, ledger_key) DO UPDATE SET
           sobject = excluded.sobject,
           sf_id = CASE WHEN excluded.sf_id <> '' THEN excluded.sf_id
                        ELSE synced_writes.sf_id END,
           updated_at = excluded.updated_at",
        &[
            &pipeline,
            streams,
            keys,
            sinks,
            ledger_keys,
            sobjects,
            ids,
            &now,
        ],
    )
    .await
    .map_err(pg(ctx))?;
    Ok(())
}

// ---- the Zoom ledger and deferrals ------------------------------------------------------

pub(super) async fn zoom_ledger_get(
    s: &PostgresState,
    pipeline: &str,
    object: &str,
    keys: &[String],
) -> Result<HashMap<String, ZoomLedgerRow>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT key, zoom_id, vals, hash, fields, params, state, updated_at FROM zoom_ledger
             WHERE pipeline = $1 AND object = $2 AND key = ANY($3)",
            &[&pipeline, &object, &keys],
        )
        .await
        .map_err(pg("read the Zoom ledger"))?;
    let mut out = HashMap::new();
    for r in rows {
        let state: String = r.get(6);
        let state = ZoomRowState::parse(&state).ok_or_else(|| corrupt_state(&state))?;
        let key: String = r.get(0);
        let vals: String = r.get(2);
        let fields: String = r.get(4);
        let params: String = r.get(5);
        out.insert(
            key.clone(),
            ZoomLedgerRow {
                key,
                zoom_id: r.get(1),
                values: obj(&vals),
                hash: r.get(3),
                fields: obj(&fields),
                params: obj(&params),
                state,
                updated_at: r.get(7),
            },
        );
    }
    Ok(out)
}

pub(super) async fn zoom_ledger_put(
    s: &PostgresState,
    pipeline: &str,
    object: &str,
    rows: &[ZoomLedgerRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ctx = "save Zoom ledger rows";
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(pg(ctx))?;
    let st = tx
        .prepare_cached(
            "INSERT INTO zoom_ledger (pipeline, object, key, zoom_id, vals, hash, fields, params,
                                      state, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (pipeline, object, key) DO UPDATE SET
               zoom_id = excluded.zoom_id, vals = excluded.vals, hash = excluded.hash,
               fields = excluded.fields, params = excluded.params, state = excluded.state,
               updated_at = excluded.updated_at",
        )
        .await
        .map_err(pg(ctx))?;
    for r in rows {
        tx.execute(
            &st,
            &[
                &pipeline,
                &object,
                &r.key,
                &r.zoom_id,
                &to_json(&r.values)?,
                &r.hash,
                &to_json(&r.fields)?,
                &to_json(&r.params)?,
                &r.state.as_str(),
                &r.updated_at,
            ],
        )
        .await
        .map_err(pg(ctx))?;
    }
    tx.commit().await.map_err(pg(ctx))?;
    Ok(())
}

pub(super) async fn zoom_ledger_owners(
    s: &PostgresState,
    object: &str,
    ids: &[String],
) -> Result<HashMap<String, (String, String)>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let c = s.client().await?;
    // One owner per id (SQLite takes any one; this takes the first in byte order).
    let rows = c
        .query(
            r#"SELECT DISTINCT ON (zoom_id) zoom_id, pipeline, key FROM zoom_ledger
               WHERE object = $1 AND zoom_id = ANY($2)
               ORDER BY zoom_id, pipeline COLLATE "C", key COLLATE "C""#,
            &[&object, &ids],
        )
        .await
        .map_err(pg("read the Zoom ledger"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

pub(super) async fn zoom_defer(s: &PostgresState, rows: &[Deferral]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ctx = "save deferrals";
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(pg(ctx))?;
    let st = tx
        .prepare_cached(
            "INSERT INTO zoom_deferrals (pipeline, sink, key, record, reason, resource,
                                         not_before, deferred_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (pipeline, sink, key) DO UPDATE SET
               record = excluded.record, reason = excluded.reason,
               resource = excluded.resource, not_before = excluded.not_before",
        )
        .await
        .map_err(pg(ctx))?;
    for d in rows {
        tx.execute(
            &st,
            &[
                &d.pipeline,
                &d.sink,
                &d.key,
                &to_json(&d.record)?,
                &d.reason,
                &d.resource,
                &d.not_before,
                &d.deferred_at,
            ],
        )
        .await
        .map_err(pg(ctx))?;
    }
    tx.commit().await.map_err(pg(ctx))?;
    Ok(())
}

pub(super) async fn zoom_deferrals(
    s: &PostgresState,
    pipeline: Option<&str>,
) -> Result<Vec<Deferral>> {
    let c = s.client().await?;
    let rows = c
        .query(
            r#"SELECT pipeline, sink, key, record, reason, resource, not_before, deferred_at
               FROM zoom_deferrals WHERE $1::TEXT IS NULL OR pipeline = $1
               ORDER BY deferred_at, pipeline COLLATE "C", sink COLLATE "C", key COLLATE "C""#,
            &[&pipeline],
        )
        .await
        .map_err(pg("read deferrals"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let rec: String = r.get(3);
            Deferral {
                pipeline: r.get(0),
                sink: r.get(1),
                key: r.get(2),
                record: serde_json::from_str(&rec).unwrap_or(Value::Null),
                reason: r.get(4),
                resource: r.get(5),
                not_before: r.get(6),
                deferred_at: r.get(7),
            }
        })
        .collect())
}

pub(super) async fn zoom_undefer(
    s: &PostgresState,
    pipeline: &str,
    sink: &str,
    keys: &[String],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let c = s.client().await?;
    c.execute(
        "DELETE FROM zoom_deferrals WHERE pipeline = $1 AND sink = $2 AND key = ANY($3)",
        &[&pipeline, &sink, &keys],
    )
    .await
    .map_err(pg("drop deferrals"))?;
    Ok(())
}

pub(super) async fn zoom_deferral_summary(
    s: &PostgresState,
    pipeline: Option<&str>,
) -> Result<Vec<DeferralSummary>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT pipeline, sink, resource, count(*), min(not_before), max(not_before)
             FROM zoom_deferrals WHERE $1::TEXT IS NULL OR pipeline = $1
             GROUP BY pipeline, sink, resource",
            &[&pipeline],
        )
        .await
        .map_err(pg("count deferrals"))?;
    Ok(summarize_deferrals(rows.iter().map(|r| {
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            count_u64(r.get(3)),
            r.get::<_, DateTime<Utc>>(4),
            r.get::<_, DateTime<Utc>>(5),
        )
    })))
}

// ---- privacy requests -------------------------------------------------------------------

pub(super) fn hash(s: &PostgresState, email: &str) -> String {
    subject_hash(&s.inner.key, email)
}

pub(super) async fn subject_index_find(s: &PostgresState, hash: &str) -> Result<Vec<SubjectEntry>> {
    let c = s.client().await?;
    let rows = c
        .query(
            r#"SELECT s.hash, s.pipeline, s.stream, s.record_key, s.role, s.record_time,
                      coalesce(w.sink, ''), coalesce(w.sobject, ''), coalesce(w.sf_id, ''),
                      coalesce(w.ledger_key, '')
               FROM subject_index s
               LEFT JOIN synced_writes w ON w.pipeline = s.pipeline AND w.stream = s.stream
                                        AND w.record_key = s.record_key
               WHERE s.hash = $1
               ORDER BY s.record_time COLLATE "C", s.pipeline COLLATE "C",
                        s.stream COLLATE "C", s.record_key COLLATE "C",
                        w.sink COLLATE "C" NULLS FIRST, w.ledger_key COLLATE "C" NULLS FIRST"#,
            &[&hash],
        )
        .await
        .map_err(pg("read the subject index"))?;
    Ok(rows
        .iter()
        .map(|r| SubjectEntry {
            hash: r.get(0),
            pipeline: r.get(1),
            stream: r.get(2),
            record_key: r.get(3),
            role: r.get(4),
            record_time: r.get(5),
            sink: r.get(6),
            sobject: r.get(7),
            sf_id: r.get(8),
            ledger_key: r.get(9),
        })
        .collect())
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Rows of every text column of the state's tables that still mention `email`, as
/// (table, column, rows).
async fn remaining<C: GenericClient>(c: &C, email: &str) -> Result<Vec<(String, String, u64)>> {
    let cols = c
        .query(
            r#"SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns
               WHERE table_schema = current_schema()
                 AND data_type IN ('text', 'character varying', 'character')
               ORDER BY table_name COLLATE "C", ordinal_position"#,
            &[],
        )
        .await
        .map_err(pg("list the state's columns"))?;
    let mut out = Vec::new();
    for col in cols {
        let (t, c_name): (String, String) = (col.get(0), col.get(1));
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE strpos(lower({}), $1) > 0",
                    quote(&t),
                    quote(&c_name)
                ),
                &[&email],
            )
            .await
            .map_err(pg(format!("search {t}.{c_name}")))?
            .get(0);
        if n > 0 {
            out.push((t, c_name, count_u64(n)));
        }
    }
    Ok(out)
}

pub(super) async fn subject_scan(
    s: &PostgresState,
    email: &str,
    hash: &str,
) -> Result<Vec<SubjectHit>> {
    let c = s.client().await?;
    let mut hits = Vec::new();
    let n_index: i64 = c
        .query_one(
            "SELECT count(*) FROM subject_index WHERE hash = $1",
            &[&hash],
        )
        .await
        .map_err(pg("read the subject index"))?
        .get(0);
    if n_index > 0 {
        hits.push(SubjectHit {
            area: "subject index".into(),
            row: format!("{n_index} row(s)"),
            action: "delete".into(),
        });
    }
    if email.is_empty() {
        return Ok(hits);
    }
    for (table, area, sql) in [
        (
            "subject_index",
            "subject index",
            "SELECT count(*) FROM subject_index WHERE strpos(lower(record_key), $1) > 0",
        ),
        (
            "synced_writes",
            "synced writes",
            "SELECT count(*) FROM synced_writes
             WHERE strpos(lower(record_key), $1) > 0 OR strpos(lower(ledger_key), $1) > 0",
        ),
    ] {
        let n: i64 = c
            .query_one(sql, &[&email])
            .await
            .map_err(pg(format!("search {table}")))?
            .get(0);
        if n > 0 {
            hits.push(SubjectHit {
                area: area.into(),
                row: format!("{n} row(s) with a record or ledger key made from the address"),
                action: "redact".into(),
            });
        }
    }
    let rows = c
        .query(
            r#"SELECT scope, count(*) FROM lookup_cache
               WHERE strpos(lower(key), $1) > 0 OR strpos(lower(value), $1) > 0
               GROUP BY scope ORDER BY scope COLLATE "C""#,
            &[&email],
        )
        .await
        .map_err(pg("search the lookup cache"))?;
    for r in rows {
        let (scope, n): (String, i64) = (r.get(0), r.get(1));
        hits.push(SubjectHit {
            area: "lookup cache".into(),
            row: format!("{scope}: {n} entr{}", if n == 1 { "y" } else { "ies" }),
            action: "delete".into(),
        });
    }
    let rows = c
        .query(
            "SELECT id, event, status FROM inbox
             WHERE strpos(lower(payload), $1) > 0
                OR strpos(lower(coalesce(last_error, '')), $1) > 0
             ORDER BY id",
            &[&email],
        )
        .await
        .map_err(pg("search the webhook inbox"))?;
    for r in rows {
        let (id, event, status): (i64, String, String) = (r.get(0), r.get(1), r.get(2));
        // A pending event still has to run: its payload is redacted, not deleted.
        let action = if status == "pending" {
            "redact"
        } else {
            "delete"
        };
        hits.push(SubjectHit {
            area: "webhook inbox".into(),
            row: format!("#{id} {event} ({status})"),
            action: action.into(),
        });
    }
    let rows = c
        .query(
            "SELECT id, pipeline, sink, payload, error FROM dead_letters
             WHERE strpos(lower(payload), $1) > 0 OR strpos(lower(error), $1) > 0
                OR strpos(lower(key), $1) > 0
             ORDER BY id",
            &[&email],
        )
        .await
        .map_err(pg("search the dead letters"))?;
    for r in rows {
        let (id, pipeline, sink, payload, error): (i64, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let others = holds_others(&payload, email) || holds_others(&error, email);
        hits.push(SubjectHit {
            area: "dead letters".into(),
            row: format!("#{id} {pipeline}/{sink}"),
            action: if others {
                "redact (it holds other people too)".into()
            } else {
                "delete".into()
            },
        });
    }
    let rows = c
        .query(
            "SELECT run_id, pipeline FROM runs
             WHERE strpos(lower(coalesce(summary, '')), $1) > 0
                OR strpos(lower(coalesce(stopped, '')), $1) > 0
             ORDER BY started_at, seq",
            &[&email],
        )
        .await
        .map_err(pg("search the run history"))?;
    for r in rows {
        let (run, pipeline): (String, String) = (r.get(0), r.get(1));
        hits.push(SubjectHit {
            area: "run history".into(),
            row: format!("{pipeline} run {run}"),
            action: "redact".into(),
        });
    }
    let rows = c
        .query(
            r#"SELECT scope, id FROM labels WHERE strpos(lower(label), $1) > 0
               ORDER BY scope COLLATE "C", id COLLATE "C""#,
            &[&email],
        )
        .await
        .map_err(pg("search the labels"))?;
    for r in rows {
        let (scope, id): (String, String) = (r.get(0), r.get(1));
        hits.push(SubjectHit {
            area: "labels".into(),
            row: format!("{scope} {id}"),
            action: "delete".into(),
        });
    }
    let rows = c
        .query(
            &format!(
                r#"SELECT pipeline, object, count(*) FROM zoom_ledger WHERE {ZOOM_LEDGER_MENTIONS}
                   GROUP BY pipeline, object ORDER BY pipeline COLLATE "C", object COLLATE "C""#
            ),
            &[&email],
        )
        .await
        .map_err(pg("search the Zoom ledger"))?;
    for r in rows {
        let (pipeline, object, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        hits.push(SubjectHit {
            area: "Zoom ledger".into(),
            row: format!("{pipeline}/{object}: {n} row(s)"),
            action: "redact (the values written to Zoom; the Zoom id stays, so the next run \
                     writes no duplicate)"
                .into(),
        });
    }
    let rows = c
        .query(
            &format!(
                r#"SELECT pipeline, sink, key, record FROM zoom_deferrals WHERE {DEFERRAL_MENTIONS}
                   ORDER BY pipeline COLLATE "C", sink COLLATE "C", key COLLATE "C""#
            ),
            &[&email],
        )
        .await
        .map_err(pg("search the deferrals"))?;
    for r in rows {
        let (pipeline, sink, key, record): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let action = if holds_others(&record, email) {
            "delete (it will not be written to Zoom; it holds other people too, whose \
             writes come back when the source record is read again)"
        } else {
            "delete (it will not be written to Zoom)"
        };
        hits.push(SubjectHit {
            area: "Zoom deferrals".into(),
            row: format!("{pipeline}/{sink} {}", redact(&key, email)),
            action: action.into(),
        });
    }
    for (t, col, n) in remaining(&c, email).await? {
        if HANDLED.contains(&(t.as_str(), col.as_str())) {
            continue;
        }
        let action = if t == "ledger" || t == "zoom_ledger" {
            format!("keep ({LEDGER_KEY_KEPT})")
        } else {
            "keep (not a place ferry forgets in)".to_string()
        };
        hits.push(SubjectHit {
            area: format!("{t}.{col}"),
            row: format!("{n} row(s)"),
            action,
        });
    }
    Ok(hits)
}

pub(super) async fn subject_zoom(s: &PostgresState, email: &str) -> Result<Vec<ZoomSubjectRow>> {
    if email.is_empty() {
        return Ok(Vec::new());
    }
    let c = s.client().await?;
    let rows = c
        .query(
            &format!(
                r#"SELECT pipeline, object, key, zoom_id, state, vals, updated_at FROM zoom_ledger
                   WHERE {ZOOM_LEDGER_MENTIONS}
                   ORDER BY pipeline COLLATE "C", object COLLATE "C", key COLLATE "C""#
            ),
            &[&email],
        )
        .await
        .map_err(pg("read the Zoom ledger"))?;
    let mut out: Vec<ZoomSubjectRow> = rows
        .iter()
        .map(|r| {
            let vals: String = r.get(5);
            ZoomSubjectRow {
                pipeline: r.get(0),
                object: r.get(1),
                key: r.get(2),
                zoom_id: r.get(3),
                state: r.get(4),
                values: serde_json::from_str(&vals).unwrap_or_default(),
                at: r.get(6),
            }
        })
        .collect();
    let rows = c
        .query(
            &format!(
                r#"SELECT pipeline, sink, key, not_before FROM zoom_deferrals
                   WHERE {DEFERRAL_MENTIONS}
                   ORDER BY pipeline COLLATE "C", sink COLLATE "C", key COLLATE "C""#
            ),
            &[&email],
        )
        .await
        .map_err(pg("read the deferrals"))?;
    out.extend(rows.iter().map(|r| ZoomSubjectRow {
        pipeline: r.get(0),
        object: r.get(1),
        key: r.get(2),
        zoom_id: None,
        state: "waiting".into(),
        values: Map::new(),
        at: r.get(3),
    }));
    Ok(out)
}

/// Removes `email` and the index rows of `hash` (see `StateBackend::subject_forget`) in one
/// transaction, writes the audit line in it, then rewrites every table it changed.
pub(super) async fn subject_forget(
    s: &PostgresState,
    email: &str,
    hash: &str,
) -> Result<ForgetReport> {
    let now = s.now();
    let mut report = ForgetReport {
        hash_prefix: hash.chars().take(12).collect(),
        ..ForgetReport::default()
    };
    let mut touched = BTreeSet::new();
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(pg("begin forgetting"))?;
    // This transaction's id: a session whose snapshot is older may still see the old rows,
    // and keeps VACUUM from removing them.
    let xid: i64 = tx
        .query_one("SELECT txid_current()", &[])
        .await
        .map_err(pg("begin forgetting"))?
        .get(0);
    forget_in(&tx, email, hash, &mut report, &mut touched).await?;
    let left = remaining(&tx, email).await?;
    report.remaining = left
        .iter()
        .map(|(t, c, n)| {
            if t == "ledger" || t == "zoom_ledger" {
                format!("{t}.{c}: {n} ({LEDGER_KEY_KEPT})")
            } else {
                format!("{t}.{c}: {n}")
            }
        })
        .collect();
    audit(&tx, &report, now).await?;
    tx.commit().await.map_err(pg("commit forgetting"))?;
    drop(c);
    report.compacted = compact(s, &touched, xid).await?;
    Ok(report)
}

/// `UPDATE OR REPLACE` of SQLite: the row renamed to a key another row already has replaces
/// that row.
async fn forget_in<C: GenericClient>(
    tx: &C,
    email: &str,
    hash: &str,
    report: &mut ForgetReport,
    touched: &mut BTreeSet<&'static str>,
) -> Result<()> {
    let ctx = "forget an address";
    let mut count = |report: &mut ForgetReport, table: &'static str, n: u64, deleted: bool| {
        if n > 0 {
            touched.insert(table);
        }
        if deleted {
            report.deleted += n;
        } else {
            report.redacted += n;
        }
    };
    let records: Vec<(String, String, String)> = tx
        .query(
            "SELECT pipeline, stream, record_key FROM subject_index WHERE hash = $1",
            &[&hash],
        )
        .await
        .map_err(pg(ctx))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let n = tx
        .execute("DELETE FROM subject_index WHERE hash = $1", &[&hash])
        .await
        .map_err(pg(ctx))?;
    count(report, "subject_index", n, true);
    for (pipeline, stream, key) in &records {
        let n = tx
            .execute(
                "DELETE FROM synced_writes
                 WHERE pipeline = $1 AND stream = $2 AND record_key = $3
                   AND NOT EXISTS (SELECT 1 FROM subject_index
                                   WHERE pipeline = $1 AND stream = $2 AND record_key = $3)",
                &[pipeline, stream, key],
            )
            .await
            .map_err(pg(ctx))?;
        count(report, "synced_writes", n, true);
    }
    if email.is_empty() {
        return Ok(());
    }
    // Others' index rows whose record key is made from the address keep their record under
    // a redacted key (the same in both tables, so they still join).
    let rows = tx
        .query(
            "SELECT hash, pipeline, stream, record_key FROM subject_index
             WHERE strpos(lower(record_key), $1) > 0",
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    for r in rows {
        let (h, pipeline, stream, key): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let new_key = redact(&key, email);
        tx.execute(
            "DELETE FROM subject_index
             WHERE hash = $1 AND pipeline = $2 AND stream = $3 AND record_key = $4",
            &[&h, &pipeline, &stream, &new_key],
        )
        .await
        .map_err(pg(ctx))?;
        tx.execute(
            "UPDATE subject_index SET record_key = $5
             WHERE hash = $1 AND pipeline = $2 AND stream = $3 AND record_key = $4",
            &[&h, &pipeline, &stream, &key, &new_key],
        )
        .await
        .map_err(pg(ctx))?;
        count(report, "subject_index", 1, false);
    }
    let rows = tx
        .query(
            "SELECT pipeline, stream, record_key, sink, ledger_key FROM synced_writes
             WHERE strpos(lower(record_key), $1) > 0 OR strpos(lower(ledger_key), $1) > 0",
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    for r in rows {
        let (pipeline, stream, key, sink, ledger_key): (String, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let (new_key, new_ledger_key) = (redact(&key, email), redact(&ledger_key, email));
        tx.execute(
            "DELETE FROM synced_writes
             WHERE pipeline = $1 AND stream = $2 AND record_key = $3 AND sink = $4
               AND ledger_key = $5",
            &[&pipeline, &stream, &new_key, &sink, &new_ledger_key],
        )
        .await
        .map_err(pg(ctx))?;
        tx.execute(
            "UPDATE synced_writes SET record_key = $6, ledger_key = $7
             WHERE pipeline = $1 AND stream = $2 AND record_key = $3 AND sink = $4
               AND ledger_key = $5",
            &[
                &pipeline,
                &stream,
                &key,
                &sink,
                &ledger_key,
                &new_key,
                &new_ledger_key,
            ],
        )
        .await
        .map_err(pg(ctx))?;
        count(report, "synced_writes", 1, false);
    }
    let n = tx
        .execute(
            "DELETE FROM lookup_cache
             WHERE strpos(lower(key), $1) > 0 OR strpos(lower(value), $1) > 0",
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    count(report, "lookup_cache", n, true);
    let n = tx
        .execute(
            "DELETE FROM labels WHERE strpos(lower(label), $1) > 0",
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    count(report, "labels", n, true);
    // Webhook inbox: finished events go; pending ones keep running without the address.
    let rows = tx
        .query(
            "SELECT id, status, payload, last_error FROM inbox
             WHERE strpos(lower(payload), $1) > 0
                OR strpos(lower(coalesce(last_error, '')), $1) > 0",
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    for r in rows {
        let (id, status, payload, last_error): (i64, String, String, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if status == "pending" {
            tx.execute(
                "UPDATE inbox SET payload = $2, last_error = $3 WHERE id = $1",
                &[
                    &id,
                    &redact(&payload, email),
                    &last_error.map(|e| redact(&e, email)),
                ],
            )
            .await
            .map_err(pg(ctx))?;
            count(report, "inbox", 1, false);
        } else {
            tx.execute("DELETE FROM inbox WHERE id = $1", &[&id])
                .await
                .map_err(pg(ctx))?;
            count(report, "inbox", 1, true);
        }
    }
    // Dead letters: one person's go, several people's are redacted.
    let rows = tx
        .query(
            "SELECT id, payload, error, key FROM dead_letters
             WHERE strpos(lower(payload), $1) > 0 OR strpos(lower(error), $1) > 0
                OR strpos(lower(key), $1) > 0",
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    for r in rows {
        let (id, payload, error, key): (i64, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if holds_others(&payload, email) || holds_others(&error, email) {
            tx.execute(
                "UPDATE dead_letters SET payload = $2, error = $3, key = $4 WHERE id = $1",
                &[
                    &id,
                    &redact(&payload, email),
                    &redact(&error, email),
                    &redact(&key, email),
                ],
            )
            .await
            .map_err(pg(ctx))?;
            count(report, "dead_letters", 1, false);
        } else {
            tx.execute("DELETE FROM dead_letters WHERE id = $1", &[&id])
                .await
                .map_err(pg(ctx))?;
            count(report, "dead_letters", 1, true);
        }
    }
    // Run history: the runs stay, the address goes from their text.
    let rows = tx
        .query(
            "SELECT run_id, summary, stopped FROM runs
             WHERE strpos(lower(coalesce(summary, '')), $1) > 0
                OR strpos(lower(coalesce(stopped, '')), $1) > 0",
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    for r in rows {
        let (run, summary, stopped): (String, Option<String>, Option<String>) =
            (r.get(0), r.get(1), r.get(2));
        tx.execute(
            "UPDATE runs SET summary = $2, stopped = $3 WHERE run_id = $1",
            &[
                &run,
                &summary.map(|s| redact(&s, email)),
                &stopped.map(|s| redact(&s, email)),
            ],
        )
        .await
        .map_err(pg(ctx))?;
        count(report, "runs", 1, false);
    }
    // The Zoom sinks' state (see `subjects::forget_zoom`): a ledger row keeps its identity
    // and loses its copies of the address; a deferral that holds it is deleted.
    let ctx = "forget an address in the Zoom ledger";
    let rows = tx
        .query(
            &format!(
                "SELECT pipeline, object, key, state, fields, vals, params FROM zoom_ledger
                 WHERE {ZOOM_LEDGER_MENTIONS}"
            ),
            &[&email],
        )
        .await
        .map_err(pg(ctx))?;
    for r in rows {
        let (pipeline, object, key, state): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (fields, vals, params): (String, String, String) = (r.get(4), r.get(5), r.get(6));
        let f = super::super::subjects::forget_in_zoom_row(&state, &fields, &vals, &params, email);
        tx.execute(
            "UPDATE zoom_ledger SET fields = $4, vals = $5, params = $6
             WHERE pipeline = $1 AND object = $2 AND key = $3",
            &[&pipeline, &object, &key, &f.fields, &f.vals, &f.params],
        )
        .await
        .map_err(pg(ctx))?;
        count(report, "zoom_ledger", 1, false);
    }
    let n = tx
        .execute(
            &format!("DELETE FROM zoom_deferrals WHERE {DEFERRAL_MENTIONS}"),
            &[&email],
        )
        .await
        .map_err(pg("forget an address in the deferrals"))?;
    count(report, "zoom_deferrals", n, true);
    Ok(())
}

/// The audit line: a run of [`AUDIT_PIPELINE`] naming the hash prefix and the counts.
async fn audit<C: GenericClient>(tx: &C, report: &ForgetReport, now: DateTime<Utc>) -> Result<()> {
    let ctx = "write the audit line";
    let mut run_id = format!("forget-{}-{}", now.timestamp_millis(), report.hash_prefix);
    let taken = tx
        .query_opt("SELECT 1 FROM runs WHERE run_id = $1", &[&run_id])
        .await
        .map_err(pg(ctx))?;
    if taken.is_some() {
        run_id.push_str(&format!("-{}", rand::random::<u32>()));
    }
    let summary = serde_json::json!({
        "audit": format!(
            "ferry subject forget: subject hash {}…: {} row(s) deleted, {} redacted, {} left",
            report.hash_prefix, report.deleted, report.redacted, report.remaining.len()
        ),
        "subject_hash_prefix": report.hash_prefix,
        "deleted": report.deleted,
        "redacted": report.redacted,
        "remaining": report.remaining.len(),
    });
    tx.execute(
        "INSERT INTO runs (run_id, pipeline, started_at, finished_at, ok, summary, trigger)
         VALUES ($1, $2, $3, $3, TRUE, $4, 'ferry subject forget')",
        &[&run_id, &AUDIT_PIPELINE, &now, &summary.to_string()],
    )
    .await
    .map_err(pg(ctx))?;
    Ok(())
}

/// Rewrites the tables `forget` changed (`VACUUM (FULL)`: new table and index files, the old
/// ones and their dead row versions dropped), waiting at most [`VACUUM_LOCK_TIMEOUT`] for
/// each table's lock. True when every table was rewritten and no session the database role
/// can see held a snapshot older than the forget (such a snapshot keeps the old rows alive
/// through VACUUM). What PostgreSQL keeps elsewhere (WAL, archives, backups, replicas) is the
/// database operator's: see docs/privacy.md.
async fn compact(s: &PostgresState, touched: &BTreeSet<&'static str>, xid: i64) -> Result<bool> {
    // Nothing changed this time (a rerun after a rewrite that could not be done): every
    // table forgetting changes is rewritten.
    let all_tables: BTreeSet<&'static str> = [
        "subject_index",
        "synced_writes",
        "lookup_cache",
        "labels",
        "inbox",
        "dead_letters",
        "runs",
        "zoom_ledger",
        "zoom_deferrals",
    ]
    .into_iter()
    .collect();
    let touched = if touched.is_empty() {
        &all_tables
    } else {
        touched
    };
    let c = s.client().await?;
    // Sessions (and replication slots) whose oldest snapshot is no newer than the forget.
    let older: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity
                     WHERE pid <> pg_backend_pid() AND backend_xmin IS NOT NULL
                       AND age(backend_xmin) >= age(($1::BIGINT % 4294967296)::TEXT::xid))
                  + (SELECT count(*) FROM pg_replication_slots
                     WHERE xmin IS NOT NULL
                       AND age(xmin) >= age(($1::BIGINT % 4294967296)::TEXT::xid))",
            &[&xid],
        )
        .await
        .map_err(pg("look for older snapshots"))?
        .get(0);
    c.batch_execute(&format!("SET lock_timeout = '{VACUUM_LOCK_TIMEOUT}'"))
        .await
        .map_err(pg("prepare the table rewrite"))?;
    let mut all = true;
    for table in touched {
        if let Err(e) = c
            .batch_execute(&format!("VACUUM (FULL, ANALYZE) {}", quote(table)))
            .await
        {
            all = false;
            tracing::warn!(
                table = *table,
                error = %super::describe_pg_error(&e),
                "after forgetting an address, a table could not be rewritten (run VACUUM FULL \
                 on it when the daemons are idle)"
            );
        }
    }
    let _ = c.batch_execute("RESET lock_timeout").await;
    Ok(all && older == 0)
}
