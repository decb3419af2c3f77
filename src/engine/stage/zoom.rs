//! The write stage of a Zoom sink (`zoom: NAME`). Zoom has no external ids, so ferry's Zoom
//! ledger is the identity: (pipeline, Zoom object, key) → the Zoom id and what Zoom
//! returned. Per intent, against the ledger:
//!
//! - create / upsert without a row: the row is marked pending, then the create is sent;
//!   Zoom's answer (secrets such as start_url left out) is kept at once;
//! - a pending row (a create whose answer was lost: a crash, a reset, a 5xx after Zoom did
//!   the work) is looked up in Zoom before anything is sent again (a meeting among its
//!   host's upcoming meetings by topic and start time, never one another key owns; a
//!   registrant among the registrants by email, pending ones included);
//! - upsert / update of a written row: sent only when the fields differ from the ones last
//!   written; create of a written row: unchanged;
//! - delete: of the row's Zoom id; Zoom's "already gone / ended" codes count as done.
//!
//! A daily limit of a resource (a host's meeting creates, a registrant's registrations)
//! defers the record: it is kept in the state with its reason and retried first after the
//! reset, and the rest of the resource's records wait without being sent (one 429 per
//! resource), while other resources go on and the checkpoint moves. A lost answer defers
//! the record too, to be looked up on the next run.

use crate::config::{Sink, ZoomAction};
use crate::connectors::zoom::sink::{FindEarlierDef, SinkDef, fill_path, sink_catalog};
use crate::engine::render::{self, SinkDecision};
use crate::engine::report::{WriteAction, WriteReport};
use crate::engine::zoom::{ZoomCall, ZoomWriteError, ZoomWriter};
use crate::engine::{Batch, Cx, Ending, RecordError, StageError};
use crate::state::{Deferral, NewDeadLetter, ZoomLedgerRow, ZoomRowState};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One write a Zoom sink wants for a record.
struct Intent {
    /// The record's index in the batch.
    i: usize,
    key: String,
    id: Option<String>,
    params: BTreeMap<String, String>,
    /// The body, nested (`settings: {...}`).
    body: Map<String, Value>,
    /// The body's leaves by dotted path, as rendered (for diffs).
    flat: Map<String, Value>,
    hash: String,
}

/// What became of an intent.
struct Done {
    action: WriteAction,
    id: Option<String>,
    values: Option<Map<String, Value>>,
    created: bool,
    diff: Option<BTreeMap<String, (Value, Value)>>,
    reason: Option<String>,
    message: Option<String>,
}

impl Done {
    fn new(action: WriteAction) -> Self {
        Done {
            action,
            id: None,
            values: None,
            created: false,
            diff: None,
            reason: None,
            message: None,
        }
    }
    fn from_row(action: WriteAction, row: &ZoomLedgerRow) -> Self {
        Done {
            id: row.zoom_id.clone(),
            values: Some(row.values.clone()),
            ..Done::new(action)
        }
    }
}

/// The longest a listing is followed when looking for an earlier create, in pages.
const MAX_LOOKUP_PAGES: usize = 20;

/// Writes (or plans) one Zoom sink's intents of a batch. `Ok(Some(e))`: stop the run after
/// this batch; `Err`: the batch stopped before its writes.
pub async fn write(
    cx: &Cx<'_>,
    sink: &Sink,
    batch: &mut Batch,
    ending: &mut dyn Ending,
) -> Result<Option<StageError>, StageError> {
    let Some(z) = &sink.zoom else {
        return Ok(None);
    };
    let Some(def) = sink_catalog().get(&z.object) else {
        return Err(StageError::Sink {
            sink: sink.name.clone(),
            error: crate::engine::ConnectorError::fatal(format!(
                "Zoom has no sink object `{}`",
                z.object
            )),
        });
    };
    let Some(real) = cx.engine.zoom else {
        return Err(StageError::Sink {
            sink: sink.name.clone(),
            error: crate::engine::ConnectorError::fatal(
                "this pipeline writes to Zoom but ferry has no Zoom connection for it; add one to ferry.yaml".to_string(),
            ),
        });
    };
    let zoom = ending.zoom_writer(real);
    let intents = render_intents(cx, sink, batch);
    // One write per key per batch: a later record wins.
    let mut last: HashMap<String, usize> = HashMap::new();
    for (n, w) in intents.iter().enumerate() {
        last.insert(w.key.clone(), n);
    }
    let keys: Vec<String> = last.keys().cloned().collect();
    let mut ledger = cx
        .engine
        .store
        .zoom_ledger_get(&cx.p.name, &def.name, &keys)
        .await
        .map_err(StageError::ReadLedger)?;
    ending.zoom_overlay(&def.name, &keys, &mut ledger);
    let (blocked, was_deferred) = deferred_now(cx, sink).await?;
    let site = Site { cx, sink, def };
    let mut out = Outcomes {
        results: HashMap::new(),
        defer: Vec::new(),
        undefer: Vec::new(),
        blocked,
    };
    let mut stop = None;
    for (n, w) in intents.iter().enumerate() {
        if last.get(&w.key) != Some(&n) {
            continue;
        }
        if stop.is_some() {
            break;
        }
        let resource = resource_of(def, z.action, w);
        // Only a write that would be sent waits: a record as Zoom already has it does not.
        let settled = ledger.get(&w.key).is_some_and(|r| {
            r.state == ZoomRowState::Written
                && r.zoom_id.is_some()
                && (z.action == ZoomAction::Create || r.hash == w.hash)
        });
        if !settled
            && let Some(res) = &resource
            && let Some((until, reason)) = out.blocked.get(res)
        {
            out.defer
                .push(deferral(cx, sink, w, batch, reason, res, *until));
            let mut d = Done::new(WriteAction::Waiting);
            d.reason = Some(format!("{reason}; waits until {}", short_time(*until)));
            out.results.insert(n, d);
            continue;
        }
        let row = ledger.get(&w.key).cloned();
        let done = match one(cx, sink, def, z.action, w, row, zoom.as_ref(), ending).await {
            Ok(done) => {
                if matches!(
                    done.action,
                    WriteAction::Create
                        | WriteAction::Update
                        | WriteAction::Unchanged
                        | WriteAction::Delete
                ) && was_deferred.contains(&w.key)
                {
                    out.undefer.push(w.key.clone());
                }
                done
            }
            Err(f) => match out.failed(&site, w, resource, batch, ending, f) {
                Ok(done) => done,
                Err(message) => {
                    stop = Some(message);
                    continue;
                }
            },
        };
        out.results.insert(n, done);
    }
    if let Err(e) = ending.zoom_defer(cx.engine.store, out.defer).await {
        return Err(StageError::SaveState(e));
    }
    if let Err(e) = ending
        .zoom_undefer(cx.engine.store, &cx.p.name, &sink.name, out.undefer)
        .await
    {
        return Err(StageError::SaveState(e));
    }
    report(sink, def, &intents, &last, &out.results, batch);
    Ok(stop.map(|message| StageError::Sink {
        sink: sink.name.clone(),
        error: crate::engine::ConnectorError::fatal(message),
    }))
}

/// The resources a daily limit holds back now (resource → until when, and why), and the
/// keys of this sink deferred by earlier runs.
async fn deferred_now(
    cx: &Cx<'_>,
    sink: &Sink,
) -> Result<(HashMap<String, (DateTime<Utc>, String)>, HashSet<String>), StageError> {
    let now = cx.engine.now;
    let deferred = cx
        .engine
        .store
        .zoom_deferrals(Some(&cx.p.name))
        .await
        .map_err(StageError::ReadLedger)?;
    let mut blocked: HashMap<String, (DateTime<Utc>, String)> = HashMap::new();
    let mut was_deferred: HashSet<String> = HashSet::new();
    for d in &deferred {
        if d.sink == sink.name {
            was_deferred.insert(d.key.clone());
        }
        if d.not_before > now && !d.resource.is_empty() {
            blocked.insert(d.resource.clone(), (d.not_before, d.reason.clone()));
        }
    }
    Ok((blocked, was_deferred))
}

/// The sink a batch's intents are written to.
struct Site<'a, 'c> {
    cx: &'a Cx<'c>,
    sink: &'a Sink,
    def: &'a SinkDef,
}

/// What a batch's writes leave besides the batch: per intent what became of it, the
/// deferrals to save and to clear, and the resources a daily limit holds back (from earlier
/// runs, and this one's).
struct Outcomes {
    results: HashMap<usize, Done>,
    defer: Vec<Deferral>,
    undefer: Vec<String>,
    blocked: HashMap<String, (DateTime<Utc>, String)>,
}

impl Outcomes {
    /// What became of an intent whose write failed: a daily limit defers it and holds its
    /// resource back, a lost answer defers it to be looked up on the next run, a refusal
    /// dead-letters it. `Err`: the run stops, with this message.
    fn failed(
        &mut self,
        site: &Site<'_, '_>,
        w: &Intent,
        resource: Option<String>,
        batch: &mut Batch,
        ending: &mut dyn Ending,
        failure: Failure,
    ) -> Result<Done, String> {
        let Site { cx, sink, def } = *site;
        match failure {
            Failure::Limit { until, message } => {
                let res = resource.unwrap_or_default();
                if !res.is_empty() {
                    self.blocked.insert(res.clone(), (until, message.clone()));
                }
                self.defer
                    .push(deferral(cx, sink, w, batch, &message, &res, until));
                let mut d = Done::new(WriteAction::Waiting);
                d.reason = Some(format!("{message} (waits until {})", short_time(until)));
                Ok(d)
            }
            Failure::Lost(message) => {
                // Looked up first on the next run (it is pending in the ledger).
                self.defer.push(deferral(
                    cx,
                    sink,
                    w,
                    batch,
                    &format!("Zoom's answer was lost ({message}); it is looked up before anything is sent again"),
                    "",
                    cx.engine.now,
                ));
                let mut d = Done::new(WriteAction::Waiting);
                d.reason = Some(format!(
                    "Zoom's answer was lost ({message}); looked up on the next run"
                ));
                Ok(d)
            }
            Failure::Refused(message) => {
                ending.dead_letter(
                    &mut batch.commit,
                    NewDeadLetter {
                        sink: sink.name.clone(),
                        key: w.key.clone(),
                        payload: json!({"zoom": def.name, "params": w.params, "fields": w.body, "id": w.id}),
                        error: message.clone(),
                    },
                );
                let mut d = Done::new(WriteAction::Error);
                d.message = Some(message);
                Ok(d)
            }
            Failure::Stop(e) => Err(e),
        }
    }
}

enum Failure {
    Limit {
        until: DateTime<Utc>,
        message: String,
    },
    Lost(String),
    Refused(String),
    Stop(String),
}

fn failure(e: ZoomWriteError) -> Failure {
    match e {
        ZoomWriteError::Limit { until, message } => Failure::Limit { until, message },
        ZoomWriteError::Unknown(m) => Failure::Lost(m),
        ZoomWriteError::Refused { .. } => Failure::Refused(e.to_string()),
        ZoomWriteError::Stop(m) => Failure::Stop(m),
    }
}

fn short_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn deferral(
    cx: &Cx<'_>,
    sink: &Sink,
    w: &Intent,
    batch: &Batch,
    reason: &str,
    resource: &str,
    until: DateTime<Utc>,
) -> Deferral {
    Deferral {
        pipeline: cx.p.name.clone(),
        sink: sink.name.clone(),
        key: w.key.clone(),
        record: batch.states[w.i].record.clone(),
        reason: reason.to_string(),
        resource: resource.to_string(),
        not_before: until,
        deferred_at: cx.engine.now,
    }
}

/// The resource a write counts against for its object's daily limit (`host:a@b.c`).
fn resource_of(def: &SinkDef, action: ZoomAction, w: &Intent) -> Option<String> {
    let d = def.daily_limit.as_ref()?;
    let counts = match action {
        ZoomAction::Create => d.counts.iter().any(|c| c == "create"),
        ZoomAction::Update => d.counts.iter().any(|c| c == "update"),
        ZoomAction::Upsert => true,
        ZoomAction::Delete => false,
    };
    if !counts {
        return None;
    }
    let parts: Vec<String> = d
        .per
        .names()
        .iter()
        .map(|n| {
            w.params
                .get(*n)
                .cloned()
                .or_else(|| w.flat.get(*n).map(render::scalar_string))
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .collect();
    Some(format!("{}:{}", d.scope, parts.join(":")))
}

/// Renders the sink for every record of the batch that has not failed.
fn render_intents(cx: &Cx<'_>, sink: &Sink, batch: &mut Batch) -> Vec<Intent> {
    let mut out = Vec::new();
    for i in 0..batch.states.len() {
        if batch.failed[i].is_some() {
            continue;
        }
        let decision = render::render_sink(sink, &mut batch.states[i], cx.g);
        let writes = match decision {
            Ok(SinkDecision::Skipped { reason }) => {
                batch.reports[i]
                    .skipped
                    .push(format!("{}: {reason}", sink.name));
                continue;
            }
            Ok(SinkDecision::Writes(ws)) => ws,
            Err(e) => {
                batch.failed[i] = Some(RecordError::Render(e));
                continue;
            }
        };
        for w in writes {
            let params =
                match render::render_zoom_params(sink, &batch.states[i], cx.g, w.item_index) {
                    Ok(p) => p,
                    Err(e) => {
                        batch.failed[i] = Some(RecordError::Render(e));
                        break;
                    }
                };
            if w.key.is_empty() && w.id.is_none() {
                batch.reports[i]
                    .skipped
                    .push(format!("{}: its key is empty", sink.name));
                continue;
            }
            let mut body = Map::new();
            for (k, v) in &w.fields {
                let path: Vec<&str> = k.split('.').collect();
                crate::config::insert_dotted(&mut body, &path, v.clone());
            }
            out.push(Intent {
                i,
                key: if w.key.is_empty() {
                    w.id.clone().unwrap_or_default()
                } else {
                    w.key.clone()
                },
                id: w.id.clone(),
                params,
                hash: w.hash(),
                flat: w.fields.clone(),
                body,
            });
        }
    }
    out
}

/// Fills a call's path from the intent's params and the Zoom id.
fn path(template: &str, w: &Intent, id: Option<&str>) -> Result<String, String> {
    let mut values = w.params.clone();
    if let Some(id) = id {
        values.insert("id".into(), id.to_string());
    }
    fill_path(template, &values).map_err(|missing| {
        if missing == "id" {
            "no Zoom id to write to".to_string()
        } else {
            format!("the param `{missing}` is empty")
        }
    })
}

#[allow(clippy::too_many_arguments)]
async fn one(
    cx: &Cx<'_>,
    sink: &Sink,
    def: &SinkDef,
    action: ZoomAction,
    w: &Intent,
    row: Option<ZoomLedgerRow>,
    zoom: &dyn ZoomWriter,
    ending: &mut dyn Ending,
) -> Result<Done, Failure> {
    let now = cx.engine.now;
    // A create whose answer was lost: find it before anything is sent again.
    let row = match row {
        Some(r) if r.state == ZoomRowState::Pending => {
            match find_earlier(cx, def, w, &r, zoom).await? {
                Some(found) => {
                    let adopted = ZoomLedgerRow {
                        zoom_id: Some(found.0.clone()),
                        values: found.1,
                        state: ZoomRowState::Written,
                        updated_at: now,
                        ..r
                    };
                    keep(cx, def, ending, adopted.clone()).await?;
                    Some(adopted)
                }
                None => None,
            }
        }
        other => other,
    };
    let written = row
        .as_ref()
        .filter(|r| r.state == ZoomRowState::Written && r.zoom_id.is_some());
    match action {
        ZoomAction::Delete => delete(cx, def, w, row, zoom, ending).await,
        ZoomAction::Create | ZoomAction::Upsert | ZoomAction::Update => {
            if let Some(r) = written {
                if action == ZoomAction::Create || r.hash == w.hash {
                    return Ok(Done::from_row(WriteAction::Unchanged, r));
                }
                return update(cx, sink, def, w, r, zoom, ending).await;
            }
            if action == ZoomAction::Update {
                if let Some(id) = &w.id {
                    let r = ZoomLedgerRow {
                        key: w.key.clone(),
                        zoom_id: Some(id.clone()),
                        values: Map::new(),
                        hash: String::new(),
                        fields: Map::new(),
                        params: Map::new(),
                        state: ZoomRowState::Written,
                        updated_at: now,
                    };
                    return update(cx, sink, def, w, &r, zoom, ending).await;
                }
                if def
                    .update
                    .as_ref()
                    .is_some_and(|c| !c.path.contains("{id}"))
                {
                    // An update addressed by params alone (registrant_status).
                    let r = ZoomLedgerRow {
                        key: w.key.clone(),
                        zoom_id: None,
                        values: Map::new(),
                        hash: String::new(),
                        fields: Map::new(),
                        params: Map::new(),
                        state: ZoomRowState::Written,
                        updated_at: now,
                    };
                    return update(cx, sink, def, w, &r, zoom, ending).await;
                }
                let mut d = Done::new(WriteAction::Skip);
                d.reason = Some("no Zoom object for this key yet (and no `id:`)".into());
                return Ok(d);
            }
            create(cx, def, w, row, zoom, ending).await
        }
    }
}

/// Deletes the row's Zoom object (or the intent's `id:`); Zoom's "already gone / ended"
/// codes count as done. The row is kept as deleted.
async fn delete(
    cx: &Cx<'_>,
    def: &SinkDef,
    w: &Intent,
    row: Option<ZoomLedgerRow>,
    zoom: &dyn ZoomWriter,
    ending: &mut dyn Ending,
) -> Result<Done, Failure> {
    let now = cx.engine.now;
    let written = row
        .as_ref()
        .filter(|r| r.state == ZoomRowState::Written && r.zoom_id.is_some());
    let id = written
        .and_then(|r| r.zoom_id.clone())
        .or_else(|| w.id.clone());
    let Some(id) = id else {
        let mut d = Done::new(WriteAction::Skip);
        d.reason = Some(match &row {
            Some(r) if r.state == ZoomRowState::Deleted => {
                return Ok(Done::from_row(WriteAction::Unchanged, r));
            }
            _ => "nothing this key created in Zoom".into(),
        });
        return Ok(d);
    };
    let Some(call) = &def.delete else {
        return Err(Failure::Refused(format!(
            "Zoom's {} cannot be deleted",
            def.name
        )));
    };
    let p = path(&call.path, w, Some(&id)).map_err(Failure::Refused)?;
    let gone = match zoom
        .call(ZoomCall {
            method: "DELETE",
            path: p,
            query: Vec::new(),
            category: call.category.clone(),
            body: None,
        })
        .await
    {
        Ok(_) => false,
        Err(ZoomWriteError::Refused { code: Some(c), .. }) if def.gone_codes.contains(&c) => true,
        Err(e) => return Err(failure(e)),
    };
    let base = row.clone().unwrap_or(ZoomLedgerRow {
        key: w.key.clone(),
        zoom_id: Some(id.clone()),
        values: Map::new(),
        hash: String::new(),
        fields: Map::new(),
        params: Map::new(),
        state: ZoomRowState::Deleted,
        updated_at: now,
    });
    let gone_row = ZoomLedgerRow {
        state: ZoomRowState::Deleted,
        updated_at: now,
        ..base
    };
    keep(cx, def, ending, gone_row).await?;
    let mut d = Done::new(WriteAction::Delete);
    d.id = Some(id);
    if gone {
        d.reason = Some("already gone or ended in Zoom".into());
    }
    Ok(d)
}

/// Keeps a ledger row (a run: in the state at once; a plan: in memory).
async fn keep(
    cx: &Cx<'_>,
    def: &SinkDef,
    ending: &mut dyn Ending,
    row: ZoomLedgerRow,
) -> Result<(), Failure> {
    ending
        .zoom_keep(cx.engine.store, &cx.p.name, &def.name, vec![row])
        .await
        .map_err(|e| Failure::Stop(format!("saving the Zoom ledger: {e}")))
}

fn params_json(w: &Intent) -> Map<String, Value> {
    w.params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

fn body_for(call: &crate::connectors::zoom::sink::CallDef, body: &Map<String, Value>) -> Value {
    let mut out = call.extra.clone();
    match &call.wrap {
        Some(k) => {
            out.insert(k.clone(), Value::Object(body.clone()));
        }
        None => out.extend(body.clone()),
    }
    Value::Object(out)
}

async fn create(
    cx: &Cx<'_>,
    def: &SinkDef,
    w: &Intent,
    before: Option<ZoomLedgerRow>,
    zoom: &dyn ZoomWriter,
    ending: &mut dyn Ending,
) -> Result<Done, Failure> {
    let now = cx.engine.now;
    let Some(call) = &def.create else {
        return Err(Failure::Refused(format!(
            "Zoom's {} cannot be created",
            def.name
        )));
    };
    let refused = def.check_fields(&w.body, true);
    if !refused.is_empty() {
        let each: Vec<String> = refused.iter().map(ToString::to_string).collect();
        return Err(Failure::Refused(format!("not sent: {}", each.join("; "))));
    }
    let p = path(&call.path, w, None).map_err(Failure::Refused)?;
    let pending = ZoomLedgerRow {
        key: w.key.clone(),
        zoom_id: None,
        values: Map::new(),
        hash: w.hash.clone(),
        fields: w.flat.clone(),
        params: params_json(w),
        state: ZoomRowState::Pending,
        updated_at: now,
    };
    keep(cx, def, ending, pending.clone()).await?;
    let answer = zoom
        .call(ZoomCall {
            method: "POST",
            path: p,
            query: Vec::new(),
            category: call.category.clone(),
            body: Some(body_for(call, &w.body)),
        })
        .await;
    match answer {
        Ok(v) => {
            let id = def
                .id_field
                .as_deref()
                .and_then(|f| v.get(f))
                .map(render::scalar_string)
                .filter(|s| !s.is_empty());
            let row = ZoomLedgerRow {
                zoom_id: id.clone(),
                values: def.kept_values(&v),
                state: ZoomRowState::Written,
                updated_at: now,
                ..pending
            };
            keep(cx, def, ending, row.clone()).await?;
            let mut d = Done::from_row(WriteAction::Create, &row);
            d.created = true;
            Ok(d)
        }
        Err(e @ ZoomWriteError::Unknown(_)) => Err(failure(e)),
        Err(e) => {
            // Zoom did not create it: the row goes back to what it was.
            let back = before.unwrap_or(ZoomLedgerRow {
                state: ZoomRowState::Deleted,
                ..pending
            });
            keep(cx, def, ending, back).await?;
            Err(failure(e))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn update(
    cx: &Cx<'_>,
    sink: &Sink,
    def: &SinkDef,
    w: &Intent,
    r: &ZoomLedgerRow,
    zoom: &dyn ZoomWriter,
    ending: &mut dyn Ending,
) -> Result<Done, Failure> {
    let now = cx.engine.now;
    let Some(call) = &def.update else {
        // Zoom cannot change it (a registrant): what was written stays.
        let mut d = Done::from_row(WriteAction::Skip, r);
        d.reason = Some(format!(
            "Zoom's {} cannot be updated; its fields changed since it was created",
            def.name
        ));
        return Ok(d);
    };
    let refused = def.check_fields(&w.body, false);
    if !refused.is_empty() {
        let each: Vec<String> = refused.iter().map(ToString::to_string).collect();
        return Err(Failure::Refused(format!("not sent: {}", each.join("; "))));
    }
    // What changes: against what Zoom holds now when it can be read (plans always read),
    // else against the fields last written.
    let current = match (&def.get, &r.zoom_id, ending.reads_before_update(false)) {
        (Some(get), Some(id), true) if !crate::engine::ending::is_planned_id(&json!(id)) => {
            let p = path(&get.path, w, Some(id)).map_err(Failure::Refused)?;
            match zoom
                .call(ZoomCall {
                    method: "GET",
                    path: p,
                    query: Vec::new(),
                    category: get.category.clone(),
                    body: None,
                })
                .await
            {
                Ok(v) => flatten(&v),
                Err(ZoomWriteError::Refused { .. }) => r.fields.clone(),
                Err(e) => return Err(failure(e)),
            }
        }
        _ => r.fields.clone(),
    };
    let diff = diff(&current, &w.flat);
    if diff.is_empty() && !r.fields.is_empty() {
        let row = ZoomLedgerRow {
            hash: w.hash.clone(),
            fields: w.flat.clone(),
            updated_at: now,
            ..r.clone()
        };
        keep(cx, def, ending, row.clone()).await?;
        return Ok(Done::from_row(WriteAction::Unchanged, &row));
    }
    let p = path(&call.path, w, r.zoom_id.as_deref()).map_err(Failure::Refused)?;
    let method = match call.method.as_str() {
        "PUT" => "PUT",
        _ => "PATCH",
    };
    let _ = sink;
    zoom.call(ZoomCall {
        method,
        path: p,
        query: Vec::new(),
        category: call.category.clone(),
        body: Some(body_for(call, &w.body)),
    })
    .await
    .map_err(failure)?;
    let mut values = r.values.clone();
    for f in &def.returns {
        if def.is_secret(f) {
            continue;
        }
        if let Some(v) = w.body.get(f).filter(|v| !v.is_object() && !v.is_array()) {
            values.insert(f.clone(), v.clone());
        }
    }
    let row = ZoomLedgerRow {
        hash: w.hash.clone(),
        fields: w.flat.clone(),
        values,
        updated_at: now,
        ..r.clone()
    };
    keep(cx, def, ending, row.clone()).await?;
    let mut d = Done::from_row(WriteAction::Update, &row);
    d.diff = Some(diff);
    Ok(d)
}

/// A JSON object's leaves by dotted path.
fn flatten(v: &Value) -> Map<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    walk(&format!("{prefix}{k}."), x, out);
                }
            }
            other => {
                out.insert(prefix.trim_end_matches('.').to_string(), other.clone());
            }
        }
    }
    let mut out = Map::new();
    walk("", v, &mut out);
    out
}

fn same(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let (sa, sb) = (render::scalar_string(a), render::scalar_string(b));
    if sa == sb {
        return true;
    }
    match (
        DateTime::parse_from_rfc3339(&sa.replace("+0000", "Z")),
        DateTime::parse_from_rfc3339(&sb.replace("+0000", "Z")),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn diff(
    current: &Map<String, Value>,
    want: &Map<String, Value>,
) -> BTreeMap<String, (Value, Value)> {
    let mut d = BTreeMap::new();
    for (k, v) in want {
        let before = current.get(k).cloned().unwrap_or(Value::Null);
        if !same(&before, v) {
            d.insert(k.clone(), (before, v.clone()));
        }
    }
    d
}

/// Looks for the object a pending create may have made: (Zoom id, values to keep).
async fn find_earlier(
    cx: &Cx<'_>,
    def: &SinkDef,
    w: &Intent,
    pending: &ZoomLedgerRow,
    zoom: &dyn ZoomWriter,
) -> Result<Option<(String, Map<String, Value>)>, Failure> {
    let Some(f) = &def.find_earlier else {
        return Ok(None);
    };
    let params = earlier_params(f, w, pending);
    let Ok(p) = fill_path(&f.path, &params) else {
        return Ok(None);
    };
    let want: Vec<(String, Value)> = f
        .match_fields
        .iter()
        .map(|m| {
            (
                m.clone(),
                pending
                    .fields
                    .get(m)
                    .or_else(|| w.flat.get(m))
                    .cloned()
                    .unwrap_or(Value::Null),
            )
        })
        .collect();
    let candidates = earlier_candidates(f, &p, &want, zoom).await?;
    pick_earlier(cx, def, f, w, &params, candidates, zoom).await
}

/// The params of the listing that may hold an earlier create: the create was sent with the
/// pending row's params and fields, then the intent's.
fn earlier_params(
    f: &FindEarlierDef,
    w: &Intent,
    pending: &ZoomLedgerRow,
) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = pending
        .params
        .iter()
        .map(|(k, v)| (k.clone(), render::scalar_string(v)))
        .collect();
    for (k, v) in &w.params {
        params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for m in &f.match_fields {
        if let Some(v) = pending.fields.get(m).or_else(|| w.flat.get(m)) {
            params
                .entry(m.clone())
                .or_insert_with(|| render::scalar_string(v));
        }
    }
    params
}

/// The objects at `p` (per status, at most [`MAX_LOOKUP_PAGES`] pages each) whose fields
/// match `want` (as JSON, or as text ignoring ASCII case).
async fn earlier_candidates(
    f: &FindEarlierDef,
    p: &str,
    want: &[(String, Value)],
    zoom: &dyn ZoomWriter,
) -> Result<Vec<Value>, Failure> {
    let matches = |item: &Value| {
        want.iter().all(|(k, v)| {
            let got = item.get(k).cloned().unwrap_or(Value::Null);
            same(&got, v)
                || render::scalar_string(&got).eq_ignore_ascii_case(&render::scalar_string(v))
        })
    };
    let mut candidates: Vec<Value> = Vec::new();
    let statuses: Vec<Option<&str>> = if f.statuses.is_empty() {
        vec![None]
    } else {
        f.statuses.iter().map(|s| Some(s.as_str())).collect()
    };
    for status in statuses {
        let mut token = String::new();
        for _ in 0..MAX_LOOKUP_PAGES {
            let mut query: Vec<(String, String)> = f
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(s) = status {
                query.push(("status".into(), s.into()));
            }
            if !token.is_empty() {
                query.push(("next_page_token".into(), token.clone()));
            }
            let v = match zoom
                .call(ZoomCall {
                    method: "GET",
                    path: p.to_string(),
                    query,
                    category: f.category.clone(),
                    body: None,
                })
                .await
            {
                Ok(v) => v,
                // Nothing there (a user not found): no earlier create.
                Err(ZoomWriteError::Refused { status: 404, .. }) => break,
                Err(e) => return Err(failure(e)),
            };
            if f.single {
                if matches(&v) {
                    candidates.push(v);
                }
                break;
            }
            let list = f
                .list
                .as_deref()
                .and_then(|l| v.get(l))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            candidates.extend(list.into_iter().filter(|x| matches(x)));
            token = v
                .get("next_page_token")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(512)
                .collect();
            if token.is_empty() {
                break;
            }
        }
    }
    Ok(candidates)
}

/// The first candidate no other key owns, as (Zoom id, values to keep): a registrant as a
/// create answers it, anything else read in full where the listing leaves fields out.
async fn pick_earlier(
    cx: &Cx<'_>,
    def: &SinkDef,
    f: &FindEarlierDef,
    w: &Intent,
    params: &BTreeMap<String, String>,
    candidates: Vec<Value>,
    zoom: &dyn ZoomWriter,
) -> Result<Option<(String, Map<String, Value>)>, Failure> {
    // A listing names registrants by `id`; a create answers `registrant_id`.
    let registrant = def.id_field.as_deref() == Some("registrant_id");
    let ids: Vec<String> = candidates
        .iter()
        .filter_map(|c| c.get("id").map(render::scalar_string))
        .collect();
    let owners = cx
        .engine
        .store
        .zoom_ledger_owners(&def.name, &ids)
        .await
        .map_err(|e| Failure::Stop(format!("reading the Zoom ledger: {e}")))?;
    for c in candidates {
        let id = c.get("id").map(render::scalar_string).unwrap_or_default();
        if id.is_empty() {
            continue;
        }
        // Never one that another key already owns.
        if let Some((pl, k)) = owners.get(&id)
            && !(pl == &cx.p.name && k == &w.key)
        {
            continue;
        }
        let mut answer = c.clone();
        if registrant {
            if let Some(o) = answer.as_object_mut() {
                o.insert("registrant_id".into(), Value::String(id.clone()));
                let parent = params
                    .get("webinar_id")
                    .or_else(|| params.get("meeting_id"))
                    .cloned()
                    .unwrap_or_default();
                o.insert("id".into(), Value::String(parent));
            }
        } else if let (Some(get), false) = (&def.get, f.single) {
            // The listing leaves some returned fields out (a meeting's password): read it.
            if let Ok(p) = path(&get.path, w, Some(&id))
                && let Ok(full) = zoom
                    .call(ZoomCall {
                        method: "GET",
                        path: p,
                        query: Vec::new(),
                        category: get.category.clone(),
                        body: None,
                    })
                    .await
            {
                answer = full;
            }
        }
        return Ok(Some((id, def.kept_values(&answer))));
    }
    Ok(None)
}

/// Reports each intent on its record and fills `sinks.NAME` for the sinks after it.
fn report(
    sink: &Sink,
    def: &SinkDef,
    intents: &[Intent],
    last: &HashMap<String, usize>,
    results: &HashMap<usize, Done>,
    batch: &mut Batch,
) {
    let mut per_record: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    for (n, w) in intents.iter().enumerate() {
        let rep = last.get(&w.key).copied().unwrap_or(n);
        let Some(d) = results.get(&rep) else {
            continue;
        };
        let shown = if rep != n && d.action != WriteAction::Error {
            WriteAction::Unchanged
        } else {
            d.action
        };
        let fields = (shown == WriteAction::Create).then(|| {
            let mut f = w.flat.clone();
            f.retain(|k, _| !def.is_secret(k));
            f
        });
        batch.reports[w.i].writes.push(WriteReport {
            sink: sink.name.clone(),
            sobject: format!("zoom:{}", def.name),
            action: shown,
            key: w.key.clone(),
            id: d.id.clone().filter(|s| !s.starts_with("(new")),
            fields,
            diff: if shown == WriteAction::Update {
                d.diff.clone()
            } else {
                None
            },
            reason: d.reason.clone(),
            message: d.message.clone(),
        });
        if let Some(values) = &d.values
            && matches!(
                d.action,
                WriteAction::Create | WriteAction::Update | WriteAction::Unchanged
            )
        {
            let mut v = values.clone();
            v.insert("created".into(), Value::Bool(d.created));
            per_record.entry(w.i).or_default().push(Value::Object(v));
        }
    }
    if !sink.read_later {
        return;
    }
    let for_each = sink.for_each.is_some();
    for (i, st) in batch.states.iter_mut().enumerate() {
        let v = match per_record.remove(&i) {
            Some(list) if for_each => Value::Array(list),
            Some(list) => list.into_iter().next().unwrap_or(Value::Null),
            None if for_each => Value::Array(Vec::new()),
            None => Value::Null,
        };
        st.set_sink(&sink.name, v);
    }
}
