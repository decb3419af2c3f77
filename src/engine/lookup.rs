//! The lookup stage: match rules, batched. For a batch of source records each rule costs one
//! call to the [`Matcher`] (one SOQL query with `IN (...)`, split only where SOQL's length
//! limit forces it) over every key still unmatched, never one query per person.

use super::error::ConnectorError;
use super::render::{self, Globals, RecordState, RenderError};
use super::report::Unmatched;
use crate::config::{Lookup, Pipeline};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// One where-map's answer: its matches, most recently modified first, or why it cannot be
/// looked up at all (a value of the wrong type for its field, or too long for any query).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleMatch {
    pub records: Vec<Value>,
    pub unmatchable: Option<String>,
}

/// Finds Salesforce records by field values. One call answers many where-maps: the result
/// has one entry per input.
#[async_trait::async_trait]
pub trait Matcher: Send + Sync {
    async fn match_rule(
        &self,
        sobject: &str,
        select: &[String],
        wheres: &[Map<String, Value>],
    ) -> Result<Vec<RuleMatch>, ConnectorError>;
}

/// Cached rule results, so a person seen often costs one query per `cache` period.
#[async_trait::async_trait]
pub trait LookupCache: Send + Sync {
    async fn get_many(&self, scope: &str, keys: &[String]) -> HashMap<String, Value>;
    async fn put_many(&self, scope: &str, entries: &[(String, Value)], ttl: std::time::Duration);
}

/// Where lookup results come from.
pub enum LookupSource<'a> {
    Live {
        matcher: &'a dyn Matcher,
        cache: Option<&'a dyn LookupCache>,
        pipeline: &'a str,
    },
    /// `ferry test`: canned results keyed by lookup name, then by match value.
    Canned(&'a Map<String, Value>),
}

/// Facts worth reporting about one record's lookups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LookupNotes {
    /// Match values (e.g. emails) no rule found, with the lookup and what it looked for.
    pub unmatched: Vec<Unmatched>,
    /// "2 Contact records match pat@contoso.com; took 003…, the most recently modified".
    pub ambiguous: Vec<String>,
    /// People (or records) looked up, over all lookups; a hand-written integration spends
    /// one query on each.
    pub looked_up: usize,
    /// Unmatched values that could not be looked up at all, each with the reason
    /// ("12ab: Contact.Employees__c: '12ab' is not a number (double field)"). Each is in
    /// `unmatched` too.
    pub unlookable: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("lookup `{lookup}` ({sobject}): {error}")]
    Query {
        lookup: String,
        sobject: String,
        error: ConnectorError,
    },
}

struct Pending {
    record: usize,
    /// Position within the for_each items, or None for a lookup without for_each.
    item: Option<usize>,
    display: String,
}

/// A pending entry still open to the next match rule, with its position in the pending list.
type Open<'p> = (usize, &'p Pending);

/// Resolves every lookup of the pipeline for a batch of records, in declaration order (a
/// lookup may use the ones above it). Fills `lookups.NAME` in each record's state.
pub async fn resolve(
    p: &Pipeline,
    states: &mut [RecordState],
    g: &Globals,
    source: &LookupSource<'_>,
    notes: &mut [LookupNotes],
    queries: &mut u64,
) -> Result<(), LookupError> {
    for lookup in &p.lookups {
        resolve_one(lookup, states, g, source, notes, queries).await?;
    }
    Ok(())
}

/// Per record, the scope a template sees for one of its items (or for the record alone).
#[derive(Clone, Copy)]
struct Scopes<'b> {
    states: &'b [RecordState],
    /// Per record: the for_each items (empty for a lookup without for_each).
    items: &'b [Vec<Value>],
    g: &'b Globals,
}

impl<'b> Scopes<'b> {
    fn of(&self, record: usize, item: Option<usize>) -> render::Ctx<'b> {
        let items = &self.items[record];
        let n = items.len();
        self.states[record].scope(self.g, item.map(|j| (&items[j], j, n)))
    }
}

/// What one live rule needs besides the entries it is asked about.
struct LiveRule<'a> {
    lookup: &'a Lookup,
    index: usize,
    rule: &'a crate::config::MatchRule,
    matcher: &'a dyn Matcher,
    cache: Option<&'a dyn LookupCache>,
    /// The cache scope: pipeline, lookup, rule position, sobject and selected fields.
    scope: String,
}

/// Where-maps keyed by their cache key, with the entries that asked for them.
type Keyed<'p> = Vec<(Open<'p>, String, Map<String, Value>)>;

async fn resolve_one(
    lookup: &Lookup,
    states: &mut [RecordState],
    g: &Globals,
    source: &LookupSource<'_>,
    notes: &mut [LookupNotes],
    queries: &mut u64,
) -> Result<(), LookupError> {
    let mut items = for_each_items(lookup, states, g)?;
    let scopes = Scopes {
        states,
        items: &items,
        g,
    };
    let (pending, skipped) = gather_pending(lookup, scopes)?;
    for pd in &pending {
        notes[pd.record].looked_up += 1;
    }
    // Matches per pending entry (canned ones borrowed from the table until placed).
    let mut found: Vec<Option<Cow<'_, Value>>> = vec![None; pending.len()];
    // Why an entry could not be looked up (kept if no later rule matches it).
    let mut why_not: Vec<Option<String>> = vec![None; pending.len()];
    match source {
        LookupSource::Canned(canned) => {
            canned_matches(canned.get(&lookup.name), &pending, &mut found);
        }
        LookupSource::Live {
            matcher,
            cache,
            pipeline,
        } => {
            let mut open: Vec<Open<'_>> = pending.iter().enumerate().collect();
            for (ri, rule) in lookup.rules.iter().enumerate() {
                if open.is_empty() {
                    break;
                }
                let live = LiveRule {
                    lookup,
                    index: ri,
                    rule,
                    matcher: *matcher,
                    cache: *cache,
                    scope: format!(
                        "{pipeline}/{}/{ri}/{}/{}",
                        lookup.name,
                        rule.sobject,
                        rule.select.join(",")
                    ),
                };
                let (f, w) = (&mut found[..], &mut why_not[..]);
                open = apply_rule(&live, scopes, open, f, w, notes, queries).await?;
            }
        }
    }
    note_unmatched(lookup, &pending, &found, &why_not, notes);
    place_results(lookup, states, &mut items, &skipped, &pending, found);
    Ok(())
}

/// Per record, the lookup's for_each items (none without for_each).
fn for_each_items(
    lookup: &Lookup,
    states: &[RecordState],
    g: &Globals,
) -> Result<Vec<Vec<Value>>, LookupError> {
    let mut items: Vec<Vec<Value>> = vec![Vec::new(); states.len()];
    if let Some(fe) = &lookup.for_each {
        let name = &lookup.name;
        for (i, st) in states.iter().enumerate() {
            let scope = st.scope(g, None);
            items[i] = render::items(fe, &scope, || format!("lookups.{name}.for_each"))?
                .into_iter()
                .map(Cow::into_owned)
                .collect();
        }
    }
    Ok(items)
}

/// The entries to look up, in record then item order, and per record the positions of the
/// items `skip` left out.
fn gather_pending(
    lookup: &Lookup,
    scopes: Scopes<'_>,
) -> Result<(Vec<Pending>, Vec<Vec<usize>>), LookupError> {
    let mut skipped: Vec<Vec<usize>> = vec![Vec::new(); scopes.states.len()];
    let mut pending: Vec<Pending> = Vec::new();
    for (i, skipped_here) in skipped.iter_mut().enumerate() {
        let positions: Vec<Option<usize>> = match &lookup.for_each {
            Some(_) => (0..scopes.items[i].len()).map(Some).collect(),
            None => vec![None],
        };
        for item in positions {
            let ctx = scopes.of(i, item);
            if is_skipped(lookup, &ctx)? {
                if let Some(j) = item {
                    skipped_here.push(j);
                }
                continue;
            }
            let display = display_key(lookup, &ctx)?;
            pending.push(Pending {
                record: i,
                item,
                display,
            });
        }
    }
    Ok((pending, skipped))
}

/// `ferry test`: each entry's canned result, by its display value (exact, then ignoring
/// ASCII case) for a for_each lookup, or the lookup's one value otherwise.
fn canned_matches<'t>(
    table: Option<&'t Value>,
    pending: &[Pending],
    found: &mut [Option<Cow<'t, Value>>],
) {
    for (pi, pd) in pending.iter().enumerate() {
        found[pi] = match (table, pd.item) {
            // Small tables are searched without hashing the key.
            (Some(Value::Object(m)), Some(_)) => (if m.len() <= 16 {
                m.iter().find(|(k, _)| **k == pd.display).map(|(_, v)| v)
            } else {
                m.get(&pd.display)
            })
            .or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&pd.display))
                    .map(|(_, v)| v)
            })
            .map(Cow::Borrowed),
            (Some(v), None) if !v.is_null() => Some(Cow::Borrowed(v)),
            _ => None,
        };
    }
}

/// Applies one match rule to the entries still open: one matcher call over every distinct
/// where-map the cache does not know. Fills `found` (and `why_not`) and returns the entries
/// still open for the next rule.
async fn apply_rule<'p, 't>(
    live: &LiveRule<'_>,
    scopes: Scopes<'_>,
    open: Vec<Open<'p>>,
    found: &mut [Option<Cow<'t, Value>>],
    why_not: &mut [Option<String>],
    notes: &mut [LookupNotes],
    queries: &mut u64,
) -> Result<Vec<Open<'p>>, LookupError> {
    let (keyed, mut still_open) = render_wheres(live, scopes, open)?;
    let (answers, unlookable) = answer_keys(live, &keyed, queries).await?;
    for ((pi, pd), k, _) in keyed {
        match answers.get(&k).and_then(Value::as_array) {
            Some(recs) if !recs.is_empty() => {
                if recs.len() > 1 {
                    let id = recs[0].get("Id").and_then(Value::as_str).unwrap_or("?");
                    notes[pd.record].ambiguous.push(format!(
                        "{} {} records match {}; took {id}, the most recently modified",
                        recs.len(),
                        live.rule.sobject,
                        pd.display
                    ));
                }
                found[pi] = Some(Cow::Owned(recs[0].clone()));
            }
            _ => {
                if let Some(why) = unlookable.get(&k) {
                    why_not[pi] = Some(why.clone());
                }
                still_open.push((pi, pd));
            }
        }
    }
    Ok(still_open)
}

/// Renders each open entry's where-map for the rule, with its cache key. Entries with a
/// blank value cannot match by this rule (Email = null would match the wrong people): they
/// come back as still open.
fn render_wheres<'p>(
    live: &LiveRule<'_>,
    scopes: Scopes<'_>,
    open: Vec<Open<'p>>,
) -> Result<(Keyed<'p>, Vec<Open<'p>>), LookupError> {
    let mut keyed: Keyed<'p> = Vec::new();
    let mut still_open: Vec<Open<'p>> = Vec::new();
    for (pi, pd) in open {
        let mut w = Map::new();
        let mut blank = false;
        for (field, expr) in &live.rule.where_ {
            let v = expr
                .eval(&scopes.of(pd.record, pd.item))
                .map_err(|error| RenderError {
                    place: format!(
                        "lookups.{}.match[{}].where.{field}",
                        live.lookup.name, live.index
                    ),
                    error,
                })?;
            if v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()) {
                blank = true;
            }
            w.insert(field.clone(), v);
        }
        if blank {
            still_open.push((pi, pd));
        } else {
            let key = cache_key(&w);
            keyed.push(((pi, pd), key, w));
        }
    }
    Ok((keyed, still_open))
}

/// The answers for the distinct keys: from the cache where it knows them, the rest from one
/// matcher call (then cached). Also returns, per key, why a value could not be looked up.
async fn answer_keys(
    live: &LiveRule<'_>,
    keyed: &Keyed<'_>,
    queries: &mut u64,
) -> Result<(HashMap<String, Value>, HashMap<String, String>), LookupError> {
    let (lookup, rule) = (live.lookup, live.rule);
    // Distinct keys, minus what the cache knows.
    let mut distinct: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (_, k, w) in keyed {
        distinct.entry(k.clone()).or_insert_with(|| w.clone());
    }
    let keys: Vec<String> = distinct.keys().cloned().collect();
    let mut answers: HashMap<String, Value> = match live.cache {
        Some(c) if lookup.cache.is_some() => c.get_many(&live.scope, &keys).await,
        _ => HashMap::new(),
    };
    let mut unlookable: HashMap<String, String> = HashMap::new();
    let missing: Vec<(String, Map<String, Value>)> = distinct
        .into_iter()
        .filter(|(k, _)| !answers.contains_key(k))
        .collect();
    if !missing.is_empty() {
        let wheres: Vec<Map<String, Value>> = missing.iter().map(|(_, w)| w.clone()).collect();
        *queries += 1;
        let results = live
            .matcher
            .match_rule(&rule.sobject, &rule.select, &wheres)
            .await
            .map_err(|error| LookupError::Query {
                lookup: lookup.name.clone(),
                sobject: rule.sobject.clone(),
                error,
            })?;
        let mut fresh = Vec::new();
        for ((k, _), rm) in missing.iter().zip(results) {
            if let Some(why) = rm.unmatchable {
                // Not cached: the reason is about the value, not Salesforce.
                unlookable.insert(k.clone(), why);
                continue;
            }
            let v = Value::Array(
                rm.records
                    .into_iter()
                    .map(|r| clean(r, &rule.sobject))
                    .collect(),
            );
            fresh.push((k.clone(), v.clone()));
            answers.insert(k.clone(), v);
        }
        if let (Some(c), Some(ttl)) = (live.cache, lookup.cache) {
            c.put_many(&live.scope, &fresh, ttl).await;
        }
    }
    Ok((answers, unlookable))
}

/// Notes each entry no rule matched (once per record and value), with why it could not be
/// looked up where that is known.
fn note_unmatched(
    lookup: &Lookup,
    pending: &[Pending],
    found: &[Option<Cow<'_, Value>>],
    why_not: &[Option<String>],
    notes: &mut [LookupNotes],
) {
    let name = &lookup.name;
    let (what, person) = sought(lookup);
    for ((pd, hit), why) in pending.iter().zip(found).zip(why_not) {
        if hit.is_none() && !pd.display.is_empty() {
            let n = &mut notes[pd.record];
            if !n
                .unmatched
                .iter()
                .any(|u| u.lookup == *name && u.value == pd.display)
            {
                n.unmatched.push(Unmatched {
                    lookup: name.clone(),
                    what: what.clone(),
                    person,
                    value: pd.display.clone(),
                });
                if let Some(why) = why {
                    n.unlookable.push(format!("{}: {why}", pd.display));
                }
            }
        }
    }
}

/// Shapes the results as templates see them, into `lookups.NAME` of each record (moving,
/// not copying, items and live matches). Pending entries are in record, then item, order.
fn place_results(
    lookup: &Lookup,
    states: &mut [RecordState],
    items: &mut [Vec<Value>],
    skipped: &[Vec<usize>],
    pending: &[Pending],
    found: Vec<Option<Cow<'_, Value>>>,
) {
    let mut hits = pending.iter().zip(found).peekable();
    for (i, st) in states.iter_mut().enumerate() {
        let mut hit_of = |item: Option<usize>| {
            hits.next_if(|(pd, _)| pd.record == i && pd.item == item)
                .and_then(|(_, hit)| hit)
        };
        let value = match &lookup.for_each {
            Some(_) => {
                let mut matched = Vec::new();
                let mut unmatched = Vec::new();
                let mut skipped_items = Vec::new();
                for (j, item) in std::mem::take(&mut items[i]).into_iter().enumerate() {
                    if skipped[i].contains(&j) {
                        skipped_items.push(item);
                        continue;
                    }
                    match hit_of(Some(j)) {
                        Some(Cow::Owned(Value::Object(mut m))) => {
                            m.insert("item".into(), item);
                            matched.push(Value::Object(m));
                        }
                        Some(Cow::Borrowed(Value::Object(c))) => {
                            let mut m = Map::with_capacity(c.len() + 1);
                            m.extend(c.iter().map(|(k, v)| (k.clone(), v.clone())));
                            m.insert("item".into(), item);
                            matched.push(Value::Object(m));
                        }
                        _ => unmatched.push(item),
                    }
                }
                let mut m = Map::with_capacity(3);
                m.insert("matched".into(), Value::Array(matched));
                m.insert("unmatched".into(), Value::Array(unmatched));
                m.insert("skipped".into(), Value::Array(skipped_items));
                Value::Object(m)
            }
            None => hit_of(None).map_or(Value::Null, Cow::into_owned),
        };
        st.set_lookup(&lookup.name, value);
    }
}

fn is_skipped(lookup: &Lookup, ctx: &dyn crate::template::Scope) -> Result<bool, RenderError> {
    match &lookup.skip {
        Some(s) => s.truthy(ctx).map_err(|error| RenderError {
            place: format!("lookups.{}.skip", lookup.name),
            error,
        }),
        None => Ok(false),
    }
}

/// What a lookup looks for, in words, and whether that is a person: a rule matching a
/// Contact, Lead or User on an email or phone field finds people; anything else (an
/// Opportunity by AccountId, an Event by a meeting's UUID) finds records.
pub fn sought(lookup: &Lookup) -> (String, bool) {
    let by_contact_field = |r: &crate::config::MatchRule| {
        r.where_.iter().any(|(f, _)| {
            let f = f.to_ascii_lowercase();
            f.contains("email") || f.contains("phone")
        })
    };
    let people = lookup
        .rules
        .iter()
        .find(|r| matches!(r.sobject.as_str(), "Contact" | "Lead" | "User") && by_contact_field(r));
    if let Some(rule) = people {
        let all_users = lookup.rules.iter().all(|r| r.sobject == "User");
        let what = if all_users && rule.sobject == "User" {
            "a Salesforce user"
        } else {
            "a person"
        };
        return (what.to_string(), true);
    }
    let Some(first) = lookup.rules.first() else {
        return ("a record".to_string(), false);
    };
    let sobject = &first.sobject;
    let article = match sobject.chars().next() {
        Some(c) if "AEIOUaeiou".contains(c) => "an",
        _ => "a",
    };
    match first.where_.first() {
        Some((field, _)) => (format!("{article} {sobject} by {field}"), false),
        None => (format!("{article} {sobject}"), false),
    }
}

/// The value people are known by in reports: the first rule's first `where` value.
fn display_key(lookup: &Lookup, ctx: &dyn crate::template::Scope) -> Result<String, RenderError> {
    let Some((field, expr)) = lookup.rules.first().and_then(|r| r.where_.first()) else {
        return Ok(String::new());
    };
    let v = expr.eval(ctx).map_err(|error| RenderError {
        place: format!("lookups.{}.match[0].where.{field}", lookup.name),
        error,
    })?;
    Ok(match v {
        Value::String(s) => s,
        other => render::scalar_string(&other),
    })
}

/// Salesforce compares strings case-insensitively, so the cache does too.
fn cache_key(w: &Map<String, Value>) -> String {
    let norm: BTreeMap<&String, Value> = w
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(s.trim().to_lowercase()),
                other => other.clone(),
            };
            (k, v)
        })
        .collect();
    serde_json::to_string(&norm).unwrap_or_default()
}

/// A query row as templates see it: the selected fields plus `sobject`.
fn clean(r: Value, sobject: &str) -> Value {
    match r {
        Value::Object(mut m) => {
            m.remove("attributes");
            m.insert("sobject".into(), Value::String(sobject.to_string()));
            Value::Object(m)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_lookups_say_what_they_look_for() {
        let owned = crate::config::builtin_catalogs();
        let catalogs: Vec<&dyn crate::config::StreamCatalog> =
            owned.iter().map(|c| c.as_ref()).collect();
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ferry.yaml");
        let project = crate::config::load_project(&config, &catalogs).expect("example project");
        let sought_by = |pipeline: &str, lookup: &str| {
            let p = project.pipeline(pipeline).expect("pipeline");
            let l = p.lookups.iter().find(|l| l.name == lookup).expect("lookup");
            sought(l)
        };
        assert_eq!(
            sought_by("meetings-to-events", "attendees"),
            ("a person".to_string(), true)
        );
        assert_eq!(
            sought_by("meetings-to-events", "owner"),
            ("a Salesforce user".to_string(), true)
        );
        assert_eq!(
            sought_by("meetings-to-events", "opportunity"),
            ("an Opportunity by AccountId".to_string(), false)
        );
        assert_eq!(
            sought_by("recordings-to-events", "event"),
            ("an Event by Zoom_Meeting_UUID__c".to_string(), false)
        );
        assert_eq!(
            sought_by("phone-calls-to-tasks", "person"),
            ("a person".to_string(), true)
        );
    }
}
