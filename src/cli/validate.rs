//! `ferry validate`: load and check everything, report every problem at once.

use super::{EXIT_INVALID, EXIT_OK, Global};
use crate::config::{self, Diagnostics, LoadOptions, StreamCatalog};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Check only these pipeline files (default: the ones ferry.yaml names)
    pub files: Vec<std::path::PathBuf>,
    /// Output format: text for people, json for editors and CI
    #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
    pub format: ValidateFormat,
    /// Also check each sink field against the Salesforce org's describe (needs credentials)
    #[arg(long)]
    pub online: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

pub async fn run(g: &Global, a: &ValidateArgs) -> anyhow::Result<u8> {
    let owned = config::builtin_catalogs();
    let catalogs: Vec<&dyn StreamCatalog> = owned.iter().map(|c| c.as_ref()).collect();
    let options = LoadOptions {
        pipelines: (!a.files.is_empty()).then_some(a.files.as_slice()),
        ..LoadOptions::validate()
    };
    let result = config::load_project_with(&g.config, &catalogs, options);
    let (mut ok, pipelines, files, mut diags, project) = match result {
        Ok(p) => (
            true,
            p.pipelines.len(),
            p.files.len(),
            Diagnostics {
                problems: p.warnings.clone(),
            },
            Some(p),
        ),
        Err(d) => (false, 0, 0, d, None),
    };
    if let (true, Some(project)) = (a.online, &project) {
        match online::check(project).await {
            Ok(found) => {
                ok &= !found.has_errors();
                diags.extend(found);
                diags.sort();
            }
            Err(e) => {
                eprintln!("error: --online could not reach Salesforce: {e}");
                return Ok(super::EXIT_FAILED);
            }
        }
    }
    match a.format {
        ValidateFormat::Json => {
            let doc = serde_json::json!({
                "ok": ok,
                "pipelines": pipelines,
                "files": files,
                "problems": diags.to_json(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ValidateFormat::Text => {
            if !diags.is_empty() {
                let color = super::color_stderr();
                eprint!("{}", diags.render_with(color));
            }
            if ok {
                println!(
                    "ok: {pipelines} {} in {files} {}",
                    if pipelines == 1 {
                        "pipeline"
                    } else {
                        "pipelines"
                    },
                    if files == 1 { "file" } else { "files" }
                );
            }
            if ok && a.online {
                println!("ok: every sink and lookup field exists in the org as its action needs");
            }
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_INVALID })
}

/// `--online`: each sink field and lookup field against the org's describe.
mod online {
    use crate::config::at::Pos;
    use crate::config::diagnostic::SourceFile;
    use crate::config::{Code, Diagnostics, Problem, Project, SinkAction, SinkKey, SourcePos};
    use crate::connectors::salesforce::{FieldAction, FieldProblemKind, SalesforceConnector};
    use crate::engine::ObjectSink;
    use crate::engine::connect::{SalesforceSink, salesforce_settings};
    use crate::http::HttpClient;
    use std::collections::HashMap;

    pub async fn check(project: &Project) -> Result<Diagnostics, String> {
        let settings = salesforce_settings(project).map_err(|e| e.to_string())?;
        let http = HttpClient::new(crate::clock::system());
        let sf = SalesforceConnector::connect(settings, http.clone())
            .await
            .map_err(|e| e.to_string())?;
        let sf_sink = SalesforceSink {
            conn: std::sync::Arc::new(sf),
            http,
        };
        let sf = &*sf_sink.conn;
        let mut files: HashMap<String, Option<SourceFile>> = HashMap::new();
        let mut diags = Diagnostics::default();
        let samples = super::values::Samples::new(project);
        for p in &project.pipelines {
            source_fields(project, p, sf, &mut files, &mut diags).await;
            let record = samples.record(p);
            // Zoom sinks are checked against the sink catalog when files load.
            for sink in p.sinks.iter().filter(|s| s.zoom.is_none()) {
                let action = match sink.action {
                    SinkAction::Insert => FieldAction::Insert,
                    SinkAction::Update => FieldAction::Update,
                    SinkAction::Upsert => FieldAction::Upsert,
                    SinkAction::Publish => FieldAction::Publish,
                };
                // A field kept on update is only ever set on create.
                let (kept, rest): (Vec<_>, Vec<_>) = sink
                    .fields
                    .iter()
                    .partition(|f| f.on_update == crate::config::OnUpdate::Keep);
                let names: Vec<&str> = rest.iter().map(|f| f.name.as_str()).collect();
                let kept: Vec<&str> = kept.iter().map(|f| f.name.as_str()).collect();
                let key = match &sink.key {
                    Some(SinkKey::ExternalIdField(k)) => Some(k.as_str()),
                    _ => None,
                };
                let mut found = sf.check_fields(&sink.sobject, action, &names, key).await;
                if !kept.is_empty() && sink.action != SinkAction::Update {
                    found.extend(
                        sf.check_fields(&sink.sobject, FieldAction::Insert, &kept, None)
                            .await
                            .into_iter()
                            .filter(|p| !p.field.is_empty()),
                    );
                }
                let object_missing = found.iter().any(|fp| fp.field.is_empty());
                for fp in found {
                    let at = sink
                        .fields
                        .iter()
                        .find(|f| f.name == fp.field)
                        .map(|f| (f.value.pos.clone(), f.name.clone()))
                        .unwrap_or((sink.pos.clone(), sink.sobject.clone()));
                    let (label, help) = kind_words(&fp.kind);
                    diags.push(problem(&mut files, &at.0, &at.1, label, help, fp.message));
                }
                if !object_missing {
                    // A describe that fails here was reported by the name checks above.
                    let schema = sf_sink.field_schema(&sink.sobject).await.ok().flatten();
                    super::values::check_sink(
                        &samples,
                        record.as_ref(),
                        p,
                        schema.as_ref(),
                        sink,
                        &mut |pos, name, label, r| {
                            let mut p = problem(
                                &mut files,
                                pos,
                                name,
                                label,
                                r.hint.clone(),
                                r.reason.clone(),
                            );
                            p.code = Code::OnlineValue;
                            diags.push(p);
                        },
                    )
                    .await;
                }
            }
            for lookup in &p.lookups {
                for rule in &lookup.rules {
                    let mut names: Vec<&str> =
                        rule.where_.iter().map(|(f, _)| f.as_str()).collect();
                    names.extend(rule.select.iter().map(String::as_str));
                    for fp in sf
                        .check_fields(&rule.sobject, FieldAction::Query, &names, None)
                        .await
                    {
                        let at = rule
                            .where_
                            .iter()
                            .find(|(f, _)| *f == fp.field)
                            .map(|(f, e)| (e.pos.clone(), f.clone()))
                            .unwrap_or((rule.pos.clone(), fp.field.clone()));
                        let (label, help) = kind_words(&fp.kind);
                        diags.push(problem(&mut files, &at.0, &at.1, label, help, fp.message));
                    }
                }
            }
        }
        Ok(diags)
    }

    /// A `salesforce.records` source: its `select` and `where` fields (parent fields too)
    /// against the org's describe, reported at the param.
    async fn source_fields(
        project: &Project,
        p: &crate::config::Pipeline,
        sf: &SalesforceConnector,
        files: &mut HashMap<String, Option<SourceFile>>,
        diags: &mut Diagnostics,
    ) {
        use crate::config::Expr;
        use crate::connectors::salesforce::source;
        let is_sf = project
            .connection(&p.source.connection)
            .is_some_and(|c| c.as_salesforce().is_some());
        if !is_sf || p.source.stream != source::STREAM {
            return;
        }
        let param = |k: &str| p.source.params.iter().find(|(name, _)| name == k);
        let literal = |k: &str| match param(k).map(|(_, e)| &e.value) {
            Some(Expr::Literal(v)) => Some(v.clone()),
            _ => None,
        };
        let Some(serde_json::Value::String(sobject)) = literal("sobject") else {
            return;
        };
        let mut checks: Vec<(&str, Vec<String>)> = Vec::new();
        if let Some(select) = literal("select")
            && let Ok(fields) = source::select_list(&select)
        {
            checks.push(("select", fields));
        }
        if let Some(serde_json::Value::String(w)) = literal("where") {
            checks.push(("where", source::where_fields(&w)));
        }
        for (key, fields) in checks {
            let pos = param(key).map_or(p.source.pos.clone(), |(_, e)| e.pos.clone());
            for fp in sf.check_query_fields(&sobject, &fields).await {
                let (label, help) = kind_words(&fp.kind);
                let message = if fp.field.is_empty() {
                    fp.message
                } else {
                    format!("`{key}` names `{}`: {}", fp.field, fp.message)
                };
                diags.push(problem(files, &pos, key, label, help, message));
            }
        }
    }

    /// A diagnostic at the field's key on the line of its value.
    fn problem(
        files: &mut HashMap<String, Option<SourceFile>>,
        pos: &SourcePos,
        name: &str,
        label: &str,
        help: Option<String>,
        message: String,
    ) -> Problem {
        let file = files.entry(pos.file.to_string()).or_insert_with(|| {
            let path = std::path::Path::new(&*pos.file);
            std::fs::read_to_string(path)
                .ok()
                .map(|text| SourceFile::new(path, pos.file.to_string(), text))
        });
        match file {
            Some(f) => {
                // Point at the field's name where the line has it, else at the value.
                let line_text = f.line(pos.line).to_string();
                let column = line_text
                    .find(&format!("{name}:"))
                    .map(|i| i + 1)
                    .unwrap_or(pos.column);
                let at = Pos {
                    line: pos.line,
                    column,
                    offset: 0,
                    len: if line_text.contains(&format!("{name}:")) {
                        name.len()
                    } else {
                        0
                    },
                };
                Problem::at_pos(f, Code::OnlineField, at, message)
                    .label(label)
                    .maybe_help(help)
            }
            None => Problem::without_source(&pos.file, Code::OnlineField, message),
        }
    }

    /// What the name checks' findings say at their place.
    fn kind_words(kind: &FieldProblemKind) -> (&'static str, Option<String>) {
        match kind {
            FieldProblemKind::UnknownField { suggestion } => (
                "not a field of this object in the org",
                suggestion.as_ref().map(|s| format!("did you mean `{s}`?")),
            ),
            FieldProblemKind::NotCreateable => (
                "Salesforce does not let this field be set on create",
                Some("remove it, or ask the org admin for create access".to_string()),
            ),
            FieldProblemKind::NotUpdateable => (
                "Salesforce does not let this field be updated",
                Some("use `on_update: keep` to set it on create only".to_string()),
            ),
            FieldProblemKind::NotExternalId => (
                "not an external-id field",
                Some("an upsert `key` must be a field marked External ID in the org".to_string()),
            ),
            FieldProblemKind::UnknownObject => ("no such object in the org", None),
            FieldProblemKind::DescribeFailed => ("describe failed", None),
        }
    }
}

/// `--online` value checks: each sink field rendered against the stream's sample record
/// (with its enrichments' samples) and checked against the sink's field schema, as a plan
/// checks real records. Values that depend on lookups render empty here and are not judged.
mod values {
    use crate::config::{Pipeline, Project, Sink, SinkAction, SourcePos, StreamCatalog};
    use crate::engine::render::{self, Globals, RecordState};
    use crate::engine::schema::{ObjectSchema, Refusal};
    use serde_json::Value;

    pub struct Samples {
        catalogs: Vec<Box<dyn StreamCatalog>>,
        settings: Value,
    }

    impl Samples {
        pub fn new(project: &Project) -> Self {
            Samples {
                catalogs: crate::config::builtin_catalogs(),
                settings: Value::Object(project.config.settings.clone()),
            }
        }

        fn sample(&self, stream: &str) -> Option<(Value, bool)> {
            self.catalogs.iter().find_map(|c| {
                c.stream(stream)
                    .map(|info| (info.sample, c.single_record(stream)))
            })
        }

        /// The pipeline's source sample with each enrichment's sample under its name (a
        /// list for list streams). None when the stream has no sample.
        pub fn record(&self, p: &Pipeline) -> Option<Value> {
            let (mut record, _) = self.sample(&p.source.stream)?;
            if let Value::Object(m) = &mut record {
                for e in &p.enrich {
                    if let Some((sample, single)) = self.sample(&e.stream) {
                        let v = if single {
                            sample
                        } else {
                            Value::Array(vec![sample])
                        };
                        m.insert(e.name.clone(), v);
                    }
                }
            }
            Some(record)
        }
    }

    /// Reports each value of `sink` the sink would refuse for the sample record, at the
    /// field's place, and the fields a create needs that the sink does not set, at the sink.
    pub async fn check_sink(
        samples: &Samples,
        record: Option<&Value>,
        p: &Pipeline,
        schema: Option<&ObjectSchema>,
        sink: &Sink,
        report: &mut dyn FnMut(&SourcePos, &str, &str, &Refusal),
    ) {
        let Some(schema) = schema else { return };
        if matches!(
            sink.action,
            SinkAction::Insert | SinkAction::Upsert | SinkAction::Publish
        ) {
            let named: Vec<&str> = sink.fields.iter().map(|f| f.name.as_str()).collect();
            for f in schema.missing_on_create(&named) {
                report(
                    &sink.pos,
                    &sink.name,
                    "a create needs more fields",
                    &Refusal {
                        field: f.name.clone(),
                        reason: format!(
                            "sink {} creates {} records without {}, which Salesforce requires on create",
                            sink.name, schema.object, f.name
                        ),
                        hint: Some(format!("set `{}` in the sink's fields", f.name)),
                    },
                );
            }
        }
        let Some(record) = record else { return };
        let g = Globals::new(&samples.settings, "validate", &p.name, "", true);
        let mut st = RecordState::new(record.clone());
        // A var that needs lookups fails on a sample; the fields that read it are skipped.
        let _ = render::eval_vars(p, &mut st, &g);
        let item: Option<(Value, usize)> = match &sink.for_each {
            Some(fe) => {
                let base = st.scope(&g, None);
                match render::items(fe, &base, String::new) {
                    Ok(list) => list.first().map(|v| (v.clone().into_owned(), list.len())),
                    Err(_) => None,
                }
            }
            None => None,
        };
        let ctx = st.scope(&g, item.as_ref().map(|(v, n)| (v, 0, *n)));
        for f in &sink.fields {
            let Ok(v) = f.value.eval(&ctx) else { continue };
            // Empty: a lookup or an optional field the sample lacks; nothing to judge.
            if v.is_null() || crate::template::is_omit(&v) {
                continue;
            }
            if let Some(r) = schema.check_value(&f.name, &v, false) {
                report(
                    &f.value.pos,
                    &f.name,
                    "Salesforce would refuse this value",
                    &r,
                );
            }
        }
    }
}
