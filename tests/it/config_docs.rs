//! The documentation cannot rot: the reference files, the pipeline-format document's
//! examples and the sandbox config all load; the committed schemas are current.

use crate::support::config as config_support;

use config_support::TestCatalog;
use ferry::config::*;
use std::path::Path;
use std::process::Command;

/// Filters the pipeline format documents that src/template.rs may not register yet. An
/// unknown-filter problem naming one of them is tolerated; any other problem fails.
const DOCUMENTED_FILTERS: &[&str] = &[
    "sf_datetime",
    "sf_date",
    "email_domain",
    "truncate",
    "minutes",
    "unique",
    "sha256",
    "json",
];

fn env(name: &str) -> Option<String> {
    match name {
        "FERRY_SANDBOX_ZOOM_URL" => Some("http://127.0.0.1:9101/v2".into()),
        "FERRY_SANDBOX_ZOOM_TOKEN_URL" => Some("http://127.0.0.1:9101/oauth/token".into()),
        "FERRY_SANDBOX_SALESFORCE_URL" => Some("http://127.0.0.1:9102".into()),
        n if n.starts_with("ZOOM_") || n.starts_with("SF_") => Some(format!("value-of-{n}")),
        _ => None,
    }
}

fn load(config: &Path) -> Result<Project, Diagnostics> {
    let catalog = TestCatalog;
    let catalogs: [&dyn StreamCatalog; 2] =
        [&catalog, ferry::connectors::salesforce::catalog::catalog()];
    load_project_with(
        config,
        &catalogs,
        LoadOptions {
            env: Some(&env),
            ..LoadOptions::validate()
        },
    )
}

/// Loads, tolerating only unknown documented filters; returns the project when it loaded.
fn load_tolerating_pending_filters(config: &Path) -> Option<Project> {
    match load(config) {
        Ok(p) => Some(p),
        Err(d) => {
            let real: Vec<_> = d
                .errors()
                .filter(|p| {
                    !(p.code == "ferry::unknown_filter"
                        && DOCUMENTED_FILTERS
                            .iter()
                            .any(|f| p.message == format!("unknown filter `{f}`")))
                })
                .collect();
            assert!(real.is_empty(), "{}", d.render());
            None
        }
    }
}

/// Copies the reference files into a temp dir with the key file they read.
fn reference_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ferry.yaml", "pipeline.yaml"] {
        std::fs::copy(Path::new("docs/reference").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/sf.pem"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("secrets/api_token"), "run-token").unwrap();
    dir
}

#[test]
fn the_reference_files_load_and_cover_the_model() {
    let dir = reference_project();
    let project = load(&dir.path().join("ferry.yaml")).unwrap_or_else(|d| panic!("{}", d.render()));
    assert!(project.warnings.is_empty(), "{:?}", project.warnings);
    let zoom = project.connection("zoom").unwrap().as_zoom().unwrap();
    assert_eq!(zoom.plan, ZoomPlan::Pro);
    assert_eq!(zoom.headroom, 0.8);
    assert_eq!(zoom.max_wait.as_secs(), 300);
    assert_eq!(
        project.config.daemon.api_token.as_ref().map(|t| t.expose()),
        Some("run-token")
    );
    assert!(
        matches!(&zoom.auth, ZoomAuth::ServerToServer { client_secret, .. }
        if client_secret.expose() == "value-of-ZOOM_CLIENT_SECRET")
    );
    let sf = project
        .connection("salesforce")
        .unwrap()
        .as_salesforce()
        .unwrap();
    assert_eq!(sf.api_version, "62.0");
    assert_eq!(sf.daily_budget, Some(5000));
    assert_eq!(sf.max_wait.as_secs(), 600);
    assert!(
        matches!(&sf.auth, SalesforceAuth::JwtBearer { private_key, username, .. }
        if private_key.expose().starts_with("-----BEGIN") && username == "integration@acme.com")
    );
    assert_eq!(project.config.daemon.listen, "127.0.0.1:8787");
    assert_eq!(project.config.settings["internal_domains"][0], "acme.com");

    let p = project.pipeline("reference").unwrap();
    assert!(matches!(p.schedule, Some(Schedule::Interval(d)) if d.as_secs() == 900));
    assert_eq!(p.triggers, vec!["meeting.ended"]);
    assert_eq!(p.source.connection, "zoom");
    assert_eq!(p.source.stream, "past_meetings");
    assert_eq!(p.source.lookback.map(|d| d.as_secs()), Some(7200));
    assert_eq!(
        p.source.since.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    assert_eq!(p.source.params[0].0, "user_id");
    assert_eq!(
        p.enrich.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["participants", "summary"]
    );
    assert!(p.enrich[1].optional && p.enrich[1].when.is_some());
    let attendees = p.lookup("attendees").unwrap();
    assert_eq!(attendees.connection, "salesforce");
    assert_eq!(attendees.rules.len(), 2);
    assert_eq!(attendees.rules[1].where_[1].0, "IsConverted");
    assert_eq!(
        attendees.rules[1].where_[1].1.as_literal(),
        Some(&serde_json::json!(false))
    );
    assert_eq!(attendees.cache.map(|d| d.as_secs()), Some(86_400));
    assert_eq!(
        p.vars.iter().map(|v| v.0.as_str()).collect::<Vec<_>>(),
        ["people", "who"]
    );
    let sinks: Vec<_> = p
        .sinks
        .iter()
        .map(|s| (s.name.as_str(), s.action))
        .collect();
    assert_eq!(
        sinks,
        [
            ("event", SinkAction::Upsert),
            ("attendees", SinkAction::Insert),
            ("contact", SinkAction::Update),
            ("ended", SinkAction::Publish),
            ("follow_up", SinkAction::Upsert),
        ]
    );
    let z = p.sink("follow_up").unwrap().zoom.as_ref().unwrap();
    assert_eq!(
        (z.object.as_str(), z.action),
        ("meeting", ferry::config::ZoomAction::Upsert)
    );
    assert_eq!(z.params[0].0, "user_id");
    let event = p.sink("event").unwrap();
    assert!(matches!(&event.key, Some(SinkKey::ExternalIdField(f)) if f == "Zoom_Meeting_UUID__c"));
    let desc = event
        .fields
        .iter()
        .find(|f| f.name == "Description")
        .unwrap();
    assert_eq!(desc.on_update, OnUpdate::Keep);
    let subject = event.fields.iter().find(|f| f.name == "Subject").unwrap();
    assert_eq!(subject.on_update, OnUpdate::Overwrite);
    assert_eq!((subject.value.pos.line, subject.value.pos.column), (62, 16));
    assert!(event.depends_on.is_empty());
    let att = p.sink("attendees").unwrap();
    assert_eq!(att.depends_on, ["event"]);
    assert!(matches!(&att.key, Some(SinkKey::Template(_))));
    assert!(att.for_each.is_some());
    assert!(p.sink("contact").unwrap().id.is_some());
    assert_eq!(p.tests.len(), 1);
    assert_eq!(p.tests[0].expect["attendees"][0]["RelationId"], "003A");
    assert_eq!(p.tests[0].lookups["owner"]["Id"], "005R");
}

#[test]
fn expressions_evaluate_typed_against_a_record() {
    let dir = reference_project();
    let project = load(&dir.path().join("ferry.yaml")).unwrap();
    let p = project.pipeline("reference").unwrap();
    let ctx = ferry::template::from_json(&serde_json::json!({
        "record": {"uuid": "u-1", "topic": "Demo", "duration": 30, "participants_count": 1}
    }));
    let event = p.sink("event").unwrap();
    let field = |n: &str| event.fields.iter().find(|f| f.name == n).unwrap();
    assert_eq!(
        field("DurationInMinutes").value.eval(&ctx).unwrap(),
        serde_json::json!(30)
    );
    assert_eq!(
        field("Subject").value.eval(&ctx).unwrap(),
        serde_json::json!("Zoom: Demo")
    );
    assert_eq!(
        field("IsPrivate").value.eval(&ctx).unwrap(),
        serde_json::json!(false)
    );
    assert!(!p.source.where_.as_ref().unwrap().truthy(&ctx).unwrap());
}

#[test]
fn the_pipeline_format_document_examples_load() {
    let doc = std::fs::read_to_string("docs/pipeline-format.md").unwrap();
    let blocks: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(
        blocks.len(),
        4,
        "a ferry.yaml, a pipeline, a Salesforce-source pipeline and a pipeline with a Zoom sink"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ferry.yaml"), blocks[0]).unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(dir.path().join("pipelines/meetings.yaml"), blocks[1]).unwrap();
    std::fs::write(dir.path().join("pipelines/sf-source.yaml"), blocks[2]).unwrap();
    std::fs::write(dir.path().join("pipelines/onboarding.yaml"), blocks[3]).unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/sf.pem"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();
    if let Some(project) = load_tolerating_pending_filters(&dir.path().join("ferry.yaml")) {
        let p = project.pipeline("meetings-to-events").unwrap();
        assert_eq!(p.sinks.len(), 3);
        assert_eq!(p.sink("follow_ups").unwrap().depends_on, ["event"]);
        let sf = project.pipeline("flagged-events-to-follow-ups").unwrap();
        assert_eq!(sf.source.connection, "salesforce");
        assert_eq!(sf.source.stream, "records");
        let z = project.pipeline("users-to-onboarding-meetings").unwrap();
        let meeting = z.sink("meeting").unwrap();
        assert_eq!(meeting.zoom.as_ref().unwrap().object, "meeting");
        assert!(
            meeting
                .fields
                .iter()
                .any(|f| f.name == "settings.waiting_room")
        );
        assert_eq!(z.sink("link").unwrap().depends_on, ["meeting"]);
    }
}

#[test]
fn the_project_copy_of_the_format_document_matches_its_examples() {
    // docs/pipeline-format.md is the project's copy of the design contract; its examples
    // are what admins copy, so they must be the ones the loader accepts (tested above).
    let doc = std::fs::read_to_string("docs/pipeline-format.md").unwrap();
    assert!(doc.contains("pipeline: meetings-to-events"));
    assert!(doc.contains("kind: salesforce"));
}

#[test]
fn the_sandbox_config_loads() {
    let project =
        load(Path::new("examples/sandbox/ferry.yaml")).unwrap_or_else(|d| panic!("{}", d.render()));
    let zoom = project.connection("zoom").unwrap().as_zoom().unwrap();
    assert_eq!(zoom.base_url, "http://127.0.0.1:9101/v2");
    assert_eq!(
        zoom.webhook_secret.as_ref().unwrap().expose(),
        "sandbox-webhook-secret"
    );
    let sf = project
        .connection("salesforce")
        .unwrap()
        .as_salesforce()
        .unwrap();
    assert_eq!(sf.login_url, "http://127.0.0.1:9102");
    assert!(project.warnings.is_empty(), "{:?}", project.warnings);
}

#[test]
fn committed_schemas_are_current() {
    for kind in ["ferry", "pipeline"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["schema", kind])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let committed = std::fs::read_to_string(format!("schemas/{kind}.schema.json")).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            committed,
            "schemas/ is stale: run `ferry schema --out schemas`"
        );
    }
}

#[test]
fn validate_prints_ok_with_counts() {
    let dir = reference_project();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(dir.path().join("ferry.yaml"))
        .arg("validate")
        .env("ZOOM_ACCOUNT_ID", "a")
        .env("ZOOM_CLIENT_ID", "b")
        .env("ZOOM_CLIENT_SECRET", "c")
        .env("ZOOM_WEBHOOK_SECRET", "d")
        .env("SF_CLIENT_ID", "e")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "ok: 1 pipeline in 2 files");
}

#[test]
fn an_empty_api_token_is_an_error_at_its_line() {
    let dir = reference_project();
    std::fs::write(dir.path().join("secrets/api_token"), "\n").unwrap();
    let d = match load(&dir.path().join("ferry.yaml")) {
        Ok(_) => panic!("an empty api_token loaded"),
        Err(d) => d,
    };
    let text = d.render();
    assert!(text.contains("ferry::empty_secret"), "{text}");
    assert!(text.contains("api_token"), "{text}");
}
