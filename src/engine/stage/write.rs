//! The write stage, per sink: one write per key per batch (a later record wins), decided
//! against the ledger (unchanged, update, create) and against the sink's current records
//! (records ferry never wrote may already be as they should be; inserts a crash cut short
//! are adopted), then handed to the [`Ending`]. The results go into each record's report
//! and into `sinks.NAME` for the sinks after this one.

use crate::config::{Sink, SinkAction, SinkKey};
use crate::engine::ending::{self, Diff, Outcome, Update, Writes};
use crate::engine::render::{self, WriteIntent};
use crate::engine::report::{WriteAction, WriteReport};
use crate::engine::{Batch, Cx, Ending, StageError};
use crate::state::{LedgerEntry, LedgerState, LedgerWrite};
use chrono::DateTime;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Writes (or plans) one sink's intents of a batch. `Ok(Some(e))`: the sink stopped the
/// run after the records reported so far; `Err`: the batch stopped before its writes.
pub async fn write(
    cx: &Cx<'_>,
    sink: &Sink,
    intents: Vec<(usize, WriteIntent)>,
    batch: &mut Batch,
    ending: &mut dyn Ending,
) -> Result<Option<StageError>, StageError> {
    let mut d = decide(cx, sink, &intents, ending).await?;
    if sink.action == SinkAction::Insert && !d.create.is_empty() {
        adopt(cx, sink, &intents, &mut d, batch, ending).await?;
    }
    let mut update = read_current(cx, sink, &intents, &mut d, batch, ending).await?;
    refuse(cx, sink, &intents, &mut d, &mut update, batch, ending).await?;
    let writes = Writes {
        intents: &intents,
        create: std::mem::take(&mut d.create),
        update,
    };
    let stop = ending
        .apply(sink, writes, &mut batch.commit, &mut d.results)
        .await;
    report(sink, &intents, &d, batch);
    Ok(stop)
}

/// What is known of a sink's intents before writing.
struct Decided {
    /// The last intent of each key: the one written.
    last_of_key: HashMap<String, usize>,
    ledger: HashMap<String, LedgerEntry>,
    create: Vec<usize>,
    /// (intent, sink record Id)
    update: Vec<(usize, String)>,
    results: HashMap<usize, Outcome>,
}

/// Decides per intent from the ledger: unchanged, update, or create.
async fn decide(
    cx: &Cx<'_>,
    sink: &Sink,
    intents: &[(usize, WriteIntent)],
    ending: &dyn Ending,
) -> Result<Decided, StageError> {
    // One write per key per batch: a later record wins (cursor order).
    let mut last_of_key: HashMap<String, usize> = HashMap::new();
    for (n, (_, w)) in intents.iter().enumerate() {
        last_of_key.insert(w.key.clone(), n);
    }
    let keys: Vec<String> = last_of_key.keys().cloned().collect();
    let mut ledger = cx
        .engine
        .store
        .ledger_get_many(&cx.p.name, &sink.name, &keys)
        .await
        .map_err(StageError::ReadLedger)?;
    ending.overlay(&sink.name, &keys, &mut ledger);

    let mut d = Decided {
        last_of_key,
        ledger,
        create: Vec::new(),
        update: Vec::new(),
        results: HashMap::new(),
    };
    for (n, (_, w)) in intents.iter().enumerate() {
        if d.last_of_key.get(&w.key) != Some(&n) {
            continue;
        }
        match d.ledger.get(&w.key) {
            Some(e) if e.state == LedgerState::Written && e.hash == w.hash() => {
                d.results.insert(n, Outcome::unchanged(e.sf_id.clone()));
            }
            Some(e) if e.state == LedgerState::Written && e.sf_id.is_some() => {
                d.update.push((n, e.sf_id.clone().unwrap_or_default()));
            }
            Some(e) if e.state == LedgerState::Written => {
                // Written before but the sink gave no Id (an existing relation).
                d.results.insert(n, Outcome::unchanged(None));
            }
            _ => d.create.push(n),
        }
    }
    // Updates by Id for update sinks that had no ledger row yet.
    if sink.action == SinkAction::Update {
        for n in std::mem::take(&mut d.create) {
            let id = intents[n].1.id.clone().unwrap_or_default();
            d.update.push((n, id));
        }
    }
    Ok(d)
}

/// Inserts interrupted by a crash (pending in the ledger): adopt what the sink already has,
/// found by the sink's `search_by` field.
async fn adopt(
    cx: &Cx<'_>,
    sink: &Sink,
    intents: &[(usize, WriteIntent)],
    d: &mut Decided,
    batch: &mut Batch,
    ending: &mut dyn Ending,
) -> Result<(), StageError> {
    let Some(field) = &sink.search_by else {
        return Ok(());
    };
    let pending: Vec<usize> = d
        .create
        .iter()
        .copied()
        .filter(|n| {
            d.ledger
                .get(&intents[*n].1.key)
                .is_some_and(|e| e.state == LedgerState::Pending)
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = pending
        .iter()
        .filter_map(|n| intents[*n].1.fields.get(field).map(render::scalar_string))
        .collect();
    let select = ["Id".to_string(), field.clone()];
    let found = find(cx, sink, field, &values, &select).await?;
    for n in pending {
        let w = &intents[n].1;
        let v = w.fields.get(field).map(render::scalar_string);
        if let Some(rec) = found
            .iter()
            .find(|r| r.get(field).map(render::scalar_string) == v && v.is_some())
        {
            let id = rec.get("Id").and_then(Value::as_str).map(str::to_string);
            d.create.retain(|x| *x != n);
            ending.keep(
                &mut batch.commit,
                LedgerWrite {
                    sink: sink.name.clone(),
                    key: w.key.clone(),
                    sf_id: id.clone(),
                    hash: w.hash(),
                    state: LedgerState::Written,
                },
            );
            d.results.insert(n, Outcome::unchanged(id));
        }
    }
    Ok(())
}

/// Records ferry has not written before may already be in the sink as they should be:
/// read them (one query per sink per batch) so neither a plan nor a run reports, or makes,
/// a write that changes nothing. Upserts whose key the sink already holds become updates.
/// Returns the updates still to make, each with what it changes.
async fn read_current(
    cx: &Cx<'_>,
    sink: &Sink,
    intents: &[(usize, WriteIntent)],
    d: &mut Decided,
    batch: &mut Batch,
    ending: &mut dyn Ending,
) -> Result<Vec<Update>, StageError> {
    let first_sight: HashSet<usize> = d
        .create
        .iter()
        .copied()
        .chain(
            d.update
                .iter()
                .filter(|(n, _)| !d.ledger.contains_key(&intents[*n].1.key))
                .map(|(n, _)| *n),
        )
        .collect();
    let mut select: Vec<String> = sink.fields.iter().map(|f| f.name.clone()).collect();
    select.push("Id".into());
    let by_id: Vec<String> = d
        .update
        .iter()
        .filter(|(n, _)| ending.reads_before_update(first_sight.contains(n)))
        .map(|(_, id)| id.clone())
        .filter(|s| !s.is_empty())
        .collect();
    let mut current: HashMap<String, Map<String, Value>> = HashMap::new();
    if !by_id.is_empty() {
        for r in find(cx, sink, "Id", &by_id, &select).await? {
            if let Some(id) = r.get("Id").and_then(Value::as_str) {
                current.insert(id.to_string(), r.clone());
            }
        }
    }
    if let Some(SinkKey::ExternalIdField(ext)) = &sink.key {
        let vals: Vec<String> = d.create.iter().map(|n| intents[*n].1.key.clone()).collect();
        if !vals.is_empty() {
            let found = find(cx, sink, ext, &vals, &select).await?;
            let mut moved = Vec::new();
            for n in &d.create {
                let key = &intents[*n].1.key;
                if let Some(r) = found.iter().find(|r| {
                    r.get(ext).map(render::scalar_string).as_deref() == Some(key.as_str())
                }) {
                    let id = r
                        .get("Id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    current.insert(id.clone(), r.clone());
                    moved.push((*n, id));
                }
            }
            d.create.retain(|n| !moved.iter().any(|(m, _)| m == n));
            d.update.extend(moved);
        }
    }
    let mut update = Vec::new();
    for (n, id) in std::mem::take(&mut d.update) {
        let w = &intents[n].1;
        let diff: Diff = match current.get(&id) {
            Some(cur) => field_diff(cur, &w.update_fields()),
            None => w
                .update_fields()
                .into_iter()
                .map(|(k, v)| (k, (Value::Null, v)))
                .collect(),
        };
        if diff.is_empty() && first_sight.contains(&n) && current.contains_key(&id) {
            ending.keep(
                &mut batch.commit,
                LedgerWrite {
                    sink: sink.name.clone(),
                    key: w.key.clone(),
                    sf_id: Some(id.clone()),
                    hash: w.hash(),
                    state: LedgerState::Written,
                },
            );
            d.results.insert(n, Outcome::unchanged(Some(id)));
        } else {
            update.push(Update { n, id, diff });
        }
    }
    Ok(update)
}

/// Values the sink would refuse (checked against its field schema) are not sent: the
/// record is reported as an error with the reason and the filter that fixes it, and a run
/// dead-letters it. A plan shows the same, before anything is written.
async fn refuse(
    cx: &Cx<'_>,
    sink: &Sink,
    intents: &[(usize, WriteIntent)],
    d: &mut Decided,
    update: &mut Vec<Update>,
    batch: &mut Batch,
    ending: &mut dyn Ending,
) -> Result<(), StageError> {
    if d.create.is_empty() && update.is_empty() {
        return Ok(());
    }
    let schema = cx
        .engine
        .sink
        .field_schema(&sink.sobject)
        .await
        .map_err(|error| StageError::Sink {
            sink: sink.name.clone(),
            error,
        })?;
    let Some(schema) = schema else {
        return Ok(());
    };
    // A plan's Ids of records it would create are placeholders: not judged.
    let check = |fields: &Map<String, Value>, creating: bool| {
        let mut found = schema.check_write(fields, creating);
        found.retain(|r| {
            !fields
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(&r.field) && ending::is_planned_id(v))
        });
        found
    };
    let mut refused: Vec<(usize, String)> = Vec::new();
    d.create.retain(|n| {
        let found = check(&intents[*n].1.fields, true);
        if found.is_empty() {
            return true;
        }
        refused.push((*n, refusal_message(&found)));
        false
    });
    update.retain(|u| {
        let found = check(&intents[u.n].1.update_fields(), false);
        if found.is_empty() {
            return true;
        }
        refused.push((u.n, refusal_message(&found)));
        false
    });
    for (n, message) in refused {
        let w = &intents[n].1;
        ending.dead_letter(
            &mut batch.commit,
            crate::state::NewDeadLetter {
                sink: sink.name.clone(),
                key: w.key.clone(),
                payload: crate::engine::ending::dead_letter_payload(w),
                error: message.clone(),
            },
        );
        d.results.insert(
            n,
            Outcome {
                action: WriteAction::Error,
                id: None,
                created: false,
                message: Some(message),
                diff: None,
            },
        );
    }
    Ok(())
}

fn refusal_message(found: &[crate::engine::schema::Refusal]) -> String {
    let each: Vec<String> = found.iter().map(ToString::to_string).collect();
    format!("not sent: {}", each.join("; "))
}

async fn find(
    cx: &Cx<'_>,
    sink: &Sink,
    field: &str,
    values: &[String],
    select: &[String],
) -> Result<Vec<Map<String, Value>>, StageError> {
    cx.engine
        .sink
        .find(&sink.sobject, field, values, select)
        .await
        .map_err(|error| StageError::Sink {
            sink: sink.name.clone(),
            error,
        })
}

/// One written record as `sinks.NAME` shows it: the intent, its Id, whether it was created.
type SinkResult<'a> = (&'a WriteIntent, Option<String>, bool);

/// Reports each intent on its record and fills `sinks.NAME` for later sinks.
fn report(sink: &Sink, intents: &[(usize, WriteIntent)], d: &Decided, batch: &mut Batch) {
    let mut per_record: BTreeMap<usize, Vec<SinkResult<'_>>> = BTreeMap::new();
    for (n, (i, w)) in intents.iter().enumerate() {
        let rep_n = d.last_of_key.get(&w.key).copied().unwrap_or(n);
        // No result: the run stopped before this intent's write.
        let Some(out) = d.results.get(&rep_n) else {
            continue;
        };
        if out.action == WriteAction::Error {
            batch.reports[*i].writes.push(WriteReport {
                sink: sink.name.clone(),
                sobject: sink.sobject.clone(),
                action: WriteAction::Error,
                key: w.key.clone(),
                id: None,
                fields: None,
                diff: None,
                reason: None,
                message: out.message.clone(),
            });
            continue;
        }
        // An earlier intent of a key written later in the batch changes nothing itself.
        let shown = if rep_n != n {
            WriteAction::Unchanged
        } else {
            out.action
        };
        batch.reports[*i].writes.push(WriteReport {
            sink: sink.name.clone(),
            sobject: sink.sobject.clone(),
            action: shown,
            key: w.key.clone(),
            id: out.id.clone().filter(|s| !s.starts_with("(new")),
            fields: (shown == WriteAction::Create).then(|| w.fields.clone()),
            diff: if shown == WriteAction::Update {
                out.diff.clone()
            } else {
                None
            },
            reason: None,
            message: None,
        });
        if sink.read_later {
            per_record
                .entry(*i)
                .or_default()
                .push((w, out.id.clone(), out.created));
        }
    }
    // No template reads this sink's result: nothing to keep.
    if !sink.read_later {
        return;
    }
    let for_each = sink.for_each.is_some();
    for (i, st) in batch.states.iter_mut().enumerate() {
        let v = per_record
            .get(&i)
            .map(|ws| render::sink_result_value(ws, for_each))
            .unwrap_or(Value::Null);
        st.set_sink(&sink.name, v);
    }
}

fn field_diff(cur: &Map<String, Value>, want: &Map<String, Value>) -> Diff {
    let mut d = BTreeMap::new();
    for (k, v) in want {
        let before = cur.get(k).cloned().unwrap_or(Value::Null);
        if !same_value(&before, v) {
            d.insert(k.clone(), (before, v.clone()));
        }
    }
    d
}

/// Salesforce echoes values in its own forms (numbers as numbers, datetimes with +0000);
/// compare loosely so a plan does not show changes that are not.
fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let (sa, sb) = (render::scalar_string(a), render::scalar_string(b));
    if sa == sb {
        return true;
    }
    if let (Ok(x), Ok(y)) = (
        DateTime::parse_from_rfc3339(&sa.replace("+0000", "Z")),
        DateTime::parse_from_rfc3339(&sb.replace("+0000", "Z")),
    ) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (sa.parse::<f64>(), sb.parse::<f64>()) {
        return x == y;
    }
    false
}
