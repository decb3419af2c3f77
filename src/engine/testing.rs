//! `ferry test`: a pipeline's offline tests. Each gives a source record (with its
//! enrichments), canned lookup results keyed by match value, and the records each sink must
//! produce (a subset match per record; `[]` means none). No network, milliseconds each.

use super::lookup::{self, LookupError, LookupNotes, LookupSource};
use super::render::{self, Globals, RecordState, RenderError, SinkDecision};
use crate::config::{Pipeline, PipelineTest};
use crate::template::TemplateError;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Why a test's record could not be rendered (a test failure, not a mismatch).
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("source.where: {0}")]
    Where(TemplateError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// The outcome of one pipeline test.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub pipeline: String,
    pub name: String,
    /// Empty when the test passed; otherwise one readable paragraph per mismatch.
    pub failures: Vec<String>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one test of a pipeline and compares what each sink produced with `expect`.
pub async fn run_test(p: &Pipeline, t: &PipelineTest, settings: &Value) -> TestOutcome {
    let mut out = TestOutcome {
        pipeline: p.name.clone(),
        name: t.name.clone(),
        failures: Vec::new(),
    };
    let produced = match produce(p, t, settings).await {
        Ok(v) => v,
        Err(e) => {
            out.failures.push(e.to_string());
            return out;
        }
    };
    for (sink, expected) in &t.expect {
        let Some(got) = produced.iter().find(|(n, _)| n == sink).map(|(_, v)| v) else {
            out.failures
                .push(format!("sink `{sink}` is not declared in the pipeline"));
            continue;
        };
        if let Some(msg) = compare(sink, expected, got) {
            out.failures.push(msg);
        }
    }
    out
}

/// Renders every sink for the test's record, in order, with fake Ids standing in for what
/// Salesforce would return.
pub async fn produce(
    p: &Pipeline,
    t: &PipelineTest,
    settings: &Value,
) -> Result<Vec<(String, Vec<Map<String, Value>>)>, ProduceError> {
    let g = test_globals(p, settings);
    produce_with(p, t.record.clone(), &t.lookups, &g).await
}

/// The `settings` and `run` a test sees.
pub fn test_globals(p: &Pipeline, settings: &Value) -> Globals {
    Globals::new(settings, "test", &p.name, "2026-01-01T00:00:00Z", true)
}

/// [`produce`] for one record with canned lookup results, under the given globals.
pub async fn produce_with(
    p: &Pipeline,
    record: Value,
    canned: &Map<String, Value>,
    g: &Globals,
) -> Result<Vec<(String, Vec<Map<String, Value>>)>, ProduceError> {
    let mut states = vec![RecordState::new(record)];
    if let Some(w) = &p.source.where_ {
        let keep = w
            .truthy(&states[0].scope(g, None))
            .map_err(ProduceError::Where)?;
        if !keep {
            return Ok(p
                .sinks
                .iter()
                .map(|s| (s.name.clone(), Vec::new()))
                .collect());
        }
    }
    let mut notes = vec![LookupNotes::default()];
    let mut queries = 0;
    lookup::resolve(
        p,
        &mut states,
        g,
        &LookupSource::Canned(canned),
        &mut notes,
        &mut queries,
    )
    .await?;
    let st = &mut states[0];
    render::eval_vars(p, st, g)?;
    let mut out = Vec::new();
    for (si, sink) in p.sinks.iter().enumerate() {
        let decision = render::render_sink(sink, st, g)?;
        let writes = match decision {
            SinkDecision::Skipped { .. } => Vec::new(),
            SinkDecision::Writes(w) => w,
        };
        // Only a result some template reads is kept for later sinks.
        if sink.read_later {
            let results: Vec<_> = writes
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let fake =
                        w.id.clone()
                            .unwrap_or_else(|| format!("TEST{}{:03}", si, i + 1));
                    (w, Some(fake), true)
                })
                .collect();
            st.set_sink(
                &sink.name,
                render::sink_result_value(&results, sink.for_each.is_some()),
            );
        }
        out.push((
            sink.name.clone(),
            writes.into_iter().map(|w| w.fields).collect(),
        ));
    }
    Ok(out)
}

/// The expected value of a field the sink must not write at all. `null` means "written as
/// null" (Salesforce clears the field), which is a different outcome from leaving it alone.
pub const ABSENT: &str = "<absent>";

/// Compares expected (subset) records with produced ones; None when they agree.
fn compare(sink: &str, expected: &[Value], got: &[Map<String, Value>]) -> Option<String> {
    let mut msg = String::new();
    if expected.len() != got.len() {
        let _ = writeln!(
            msg,
            "sink `{sink}`: expected {} record(s), the pipeline produced {}",
            expected.len(),
            got.len()
        );
        for (i, g) in got.iter().enumerate() {
            let _ = writeln!(msg, "    produced[{i}]: {}", Value::Object(g.clone()));
        }
        return Some(msg.trim_end().to_string());
    }
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        let Value::Object(e) = e else {
            let _ = writeln!(
                msg,
                "sink `{sink}` record {i}: an expectation must be a map of field: value"
            );
            continue;
        };
        for (field, want) in e {
            let agree = match (want.as_str() == Some(ABSENT), g.get(field)) {
                // `<absent>`: the sink must leave the field alone (not in what it writes).
                (true, have) => have.is_none(),
                // `null` expects the field written as null (cleared), not left out.
                (false, None) => false,
                (false, Some(have)) => loosely_equal(want, have),
            };
            if !agree {
                let expected = if want.as_str() == Some(ABSENT) {
                    "(not set)".to_string()
                } else {
                    want.to_string()
                };
                let produced = g
                    .get(field)
                    .map_or_else(|| "(not set)".to_string(), Value::to_string);
                let hint = if want.is_null() && !g.contains_key(field) {
                    format!(
                        "\n    hint: `null` expects the field cleared; write `{field}: {ABSENT}` to expect it left out"
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    msg,
                    "sink `{sink}` record {i}, field `{field}`:\n    expected: {expected}\n    produced: {produced}{hint}"
                );
            }
        }
    }
    (!msg.is_empty()).then(|| msg.trim_end().to_string())
}

/// YAML writes `003A` and `42` without quotes; compare a number and its text as equal.
fn loosely_equal(want: &Value, have: &Value) -> bool {
    if want == have {
        return true;
    }
    match (want, have) {
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
            a.to_string() == *b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn produced(v: Value) -> Vec<Map<String, Value>> {
        match v {
            Value::Object(m) => vec![m],
            _ => Vec::new(),
        }
    }

    #[test]
    fn null_expects_the_field_cleared_and_absent_expects_it_left_out() {
        let cleared = produced(json!({"Subject": "Demo", "ContactId": null}));
        let left_out = produced(json!({"Subject": "Demo"}));
        let set = produced(json!({"Subject": "Demo", "ContactId": "003A"}));
        let want_null = [json!({"ContactId": null})];
        let want_absent = [json!({"ContactId": ABSENT})];

        assert_eq!(compare("s", &want_null, &cleared), None);
        let msg = compare("s", &want_null, &left_out).unwrap_or_default();
        assert!(msg.contains("expected: null"), "{msg}");
        assert!(msg.contains("produced: (not set)"), "{msg}");
        assert!(msg.contains("`ContactId: <absent>`"), "{msg}");
        assert!(compare("s", &want_null, &set).is_some());

        assert_eq!(compare("s", &want_absent, &left_out), None);
        let msg = compare("s", &want_absent, &cleared).unwrap_or_default();
        assert!(msg.contains("expected: (not set)"), "{msg}");
        assert!(msg.contains("produced: null"), "{msg}");
        assert!(compare("s", &want_absent, &set).is_some());
    }
}
