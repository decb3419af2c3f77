//! The enrich stage: each record's child reads (`enrich`), in declaration order.

use crate::config::Pipeline;
use crate::engine::error::{FetchError, RecordError, StageError};
use crate::engine::projection::Projection;
use crate::engine::render::{Globals, RecordOnly};
use crate::engine::{Cx, Source, record_key};
use serde_json::Value;
use std::collections::BTreeMap;

/// Enriches the records of one run.
pub struct Enricher<'a> {
    source: &'a dyn Source,
    p: &'a Pipeline,
    g: &'a Globals,
    /// The stream's primary key, to name a record in an error.
    pk: Option<String>,
    /// What the templates read of each enrich result (None: everything is kept).
    projection: Option<Projection>,
}

impl<'a> Enricher<'a> {
    pub fn new(cx: &Cx<'a>) -> Self {
        let source = cx.engine.source;
        let pk = source.primary_key(cx.stream());
        let keep: Vec<String> = [pk.clone(), source.cursor_field(cx.stream())]
            .into_iter()
            .flatten()
            .collect();
        Enricher {
            source,
            p: cx.p,
            g: cx.g,
            pk,
            projection: Projection::of(cx.p, &keep),
        }
    }

    /// One record's `enrich` reads, in order. `Err` is a failure that would fail every
    /// record (the run stops); a missing child read of one record is that record's error.
    pub async fn enrich(&self, rec: Value) -> Result<(Value, Option<RecordError>), StageError> {
        let mut rec = rec;
        for e in &self.p.enrich {
            let ctx = RecordOnly {
                record: &rec,
                g: self.g,
            };
            if let Some(w) = &e.when {
                match w.truthy(&ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        set_field(&mut rec, &e.name, Value::Null);
                        continue;
                    }
                    Err(error) => {
                        let name = e.name.clone();
                        return Ok((rec, Some(RecordError::EnrichWhen { name, error })));
                    }
                }
            }
            let mut params = BTreeMap::new();
            // Every param is rendered; the last that fails is reported.
            let mut failed = None;
            for (k, ex) in &e.params {
                match ex.eval(&ctx) {
                    Ok(v) => {
                        params.insert(k.clone(), v);
                    }
                    Err(error) => {
                        failed = Some(RecordError::EnrichParam {
                            name: e.name.clone(),
                            param: k.clone(),
                            error,
                        })
                    }
                }
            }
            if failed.is_some() {
                return Ok((rec, failed));
            }
            match self.source.fetch(&e.stream, params).await {
                Ok(mut v) => {
                    // Fields no template reads are dropped before the record waits.
                    if let Some(projection) = &self.projection {
                        projection.apply(&e.name, &mut v);
                    }
                    set_field(&mut rec, &e.name, v)
                }
                Err(FetchError::NotFound(_)) if e.optional => {
                    set_field(&mut rec, &e.name, Value::Null)
                }
                Err(FetchError::NotFound(message)) => {
                    let name = e.name.clone();
                    return Ok((rec, Some(RecordError::EnrichNotFound { name, message })));
                }
                Err(FetchError::Failed(error)) => {
                    return Err(StageError::Enrich {
                        record: record_key(&rec, self.pk.as_deref()),
                        name: e.name.clone(),
                        error,
                    });
                }
            }
        }
        Ok((rec, None))
    }
}

fn set_field(rec: &mut Value, name: &str, v: Value) {
    if let Value::Object(m) = rec {
        m.insert(name.to_string(), v);
    }
}
