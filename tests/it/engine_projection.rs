//! Records keep only the enrichment fields the pipeline's templates can read
//! (`ferry::engine::projection`): what a template names is kept, what it could see whole is
//! kept whole, and a template that could read the record dynamically turns it off.

use ferry::config::{LoadOptions, StreamCatalog, builtin_catalogs, load_project_with};
use ferry::engine::projection::Projection;
use serde_json::{Value, json};

fn no_env(_: &str) -> Option<String> {
    None
}

/// The projection of a pipeline written in `text`, loaded against the built-in catalogs.
fn projection_of(text: &str) -> Option<Projection> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, text).unwrap();
    let owned = builtin_catalogs();
    let catalogs: Vec<&dyn StreamCatalog> = owned.iter().map(|c| c.as_ref()).collect();
    let files = [file];
    let options = LoadOptions {
        env: Some(&no_env),
        pipelines: Some(&files),
        ..LoadOptions::default()
    };
    let project = match load_project_with(
        std::path::Path::new("tests/broken/ferry.yaml"),
        &catalogs,
        options,
    ) {
        Ok(p) => p,
        Err(d) => panic!("{}", d.render()),
    };
    Projection::of(&project.pipelines[0], &["uuid".to_string()])
}

fn participants() -> Value {
    json!([
        { "id": "p1", "name": "Pat", "user_email": "pat@contoso.com", "join_time": "2026-01-05T10:00:00Z",
          "leave_time": "2026-01-05T10:30:00Z", "duration": 1800, "status": "in_meeting",
          "registrant_id": "r1", "internal_user": false },
        { "id": "p2", "name": "Rep", "user_email": "", "join_time": "2026-01-05T10:00:00Z",
          "leave_time": "2026-01-05T10:31:00Z", "duration": 1860, "status": "in_meeting" }
    ])
}

fn summary() -> Value {
    json!({
        "meeting_host_email": "rep@acme.com",
        "summary_start_time": "2026-01-05T10:00:00Z",
        "summary_overview": "Agreed on a pilot.",
        "summary_details": [ { "label": "Pilot", "summary": "Scope and dates." } ],
        "next_steps": ["Send pilot plan"]
    })
}

fn project(p: &Projection, name: &str, v: Value) -> Value {
    let mut v = v;
    p.apply(name, &mut v);
    v
}

fn reference() -> String {
    std::fs::read_to_string("pipelines/meetings-to-events.yaml").unwrap()
}

#[test]
fn the_reference_pipeline_keeps_what_its_templates_read_and_drops_the_rest() {
    let p = projection_of(&reference()).expect("the reference pipeline reads no field dynamically");
    // Participants: the templates read `name` and `user_email` (unique/map attributes,
    // item.user_email); `duration` and `id` are kept because `record.duration` and
    // `record.id` (the origin lookup) name them (a name is kept wherever it appears).
    assert_eq!(
        project(&p, "participants", participants()),
        json!([
            { "id": "p1", "name": "Pat", "user_email": "pat@contoso.com", "duration": 1800 },
            { "id": "p2", "name": "Rep", "user_email": "", "duration": 1860 }
        ])
    );
    // Summary: summary_overview and next_steps are read; an address is always kept.
    assert_eq!(
        project(&p, "summary", summary()),
        json!({
            "meeting_host_email": "rep@acme.com",
            "summary_overview": "Agreed on a pilot.",
            "next_steps": ["Send pilot plan"]
        })
    );
    // Recordings: only share_url.
    let rec = json!({ "uuid": "abc==", "share_url": "https://zoom.us/rec/share/x", "total_size": 1234,
                      "recording_files": [ { "id": "f1", "file_type": "MP4", "download_url": "https://x" } ] });
    assert_eq!(
        project(&p, "recordings", rec),
        json!({ "uuid": "abc==", "share_url": "https://zoom.us/rec/share/x" })
    );
    // An object whose fields no template reads stays an object that is not empty (its
    // truthiness is read), and nulls, scalars and list lengths are untouched.
    let odd = project(
        &p,
        "summary",
        json!({ "unknown_a": 1, "unknown_b": { "c": 2 } }),
    );
    assert_eq!(odd, json!({ "unknown_a": null }));
    assert_eq!(project(&p, "summary", Value::Null), Value::Null);
    assert_eq!(
        project(&p, "participants", json!([{}, {}])),
        json!([{}, {}])
    );
}

/// The reference pipeline with one more sink field (or var) appended to the event sink.
fn with_field(field: &str) -> String {
    reference().replace(
        "      Zoom_Recording_URL__c: \"{{ record.recordings.share_url }}\"\n",
        &format!("      Zoom_Recording_URL__c: \"{{{{ record.recordings.share_url }}}}\"\n      {field}\n"),
    )
}

#[test]
fn a_value_a_template_can_see_whole_is_kept_whole() {
    let base = projection_of(&reference()).unwrap();
    // A summary printed as JSON keeps every field below it.
    let p = projection_of(&with_field("Location: \"{{ record.summary | tojson }}\"")).unwrap();
    assert_ne!(p, base);
    assert_eq!(project(&p, "summary", summary()), summary());
    // ...but participants are still projected.
    assert_eq!(
        project(&p, "participants", participants())[0]
            .as_object()
            .unwrap()
            .len(),
        4
    );

    // A `{% for %}` over participants may read any field of each.
    let p = projection_of(&with_field(
        "Location: \"{% for x in record.participants %}{{ x.name }}{% endfor %}\"",
    ))
    .unwrap();
    assert_eq!(project(&p, "participants", participants()), participants());

    // Participants reaching a field through `lookups.attendees.unmatched` (the lookup's
    // items), unchanged.
    let p = projection_of(&with_field(
        "Location: \"{{ lookups.attendees.unmatched | first }}\"",
    ))
    .unwrap();
    assert_eq!(project(&p, "participants", participants()), participants());

    // A computed subscript of a participant reads any of its fields.
    let p = projection_of(&with_field(
        "Location: \"{{ record.participants[0][settings.internal_domains[0]] }}\"",
    ))
    .unwrap();
    assert_eq!(project(&p, "participants", participants()), participants());

    // A literal subscript is a name like any other.
    let p = projection_of(&with_field(
        "Location: \"{{ record.participants[0]['join_time'] }}\"",
    ))
    .unwrap();
    let got = project(&p, "participants", participants());
    assert_eq!(got[0]["join_time"], json!("2026-01-05T10:00:00Z"));
    assert!(got[0].get("status").is_none());
}

#[test]
fn a_var_or_item_holding_participants_is_followed() {
    // A var holds the participants; a sink's for_each over it writes each item whole.
    let text = reference()
        .replace(
            "vars:\n",
            "vars:\n  everyone: \"{{ record.participants }}\"\n",
        )
        .replace(
            "  follow_ups:\n",
            "  raw:\n    sobject: Task\n    action: insert\n    for_each: \"{{ vars.everyone }}\"\n    key: \"{{ record.uuid }}#{{ loop.index }}\"\n    fields:\n      Description: \"{{ item }}\"\n\n  follow_ups:\n",
        );
    let p = projection_of(&text).unwrap();
    assert_eq!(project(&p, "participants", participants()), participants());

    // The same var read only by attribute keeps the projection.
    let text = reference()
        .replace("vars:\n", "vars:\n  everyone: \"{{ record.participants }}\"\n")
        .replace(
            "      Zoom_Recording_URL__c:",
            "      Location: \"{{ vars.everyone | map(attribute='name') | join(', ') }}\"\n      Zoom_Recording_URL__c:",
        );
    let p = projection_of(&text).unwrap();
    assert_eq!(
        project(&p, "participants", participants())[0],
        json!({ "id": "p1", "name": "Pat", "user_email": "pat@contoso.com", "duration": 1800 })
    );
    // `first` of a var that may be a mapping reads its keys: kept whole.
    let text = reference()
        .replace(
            "vars:\n",
            "vars:\n  everyone: \"{{ record.participants }}\"\n",
        )
        .replace(
            "      Zoom_Recording_URL__c:",
            "      Location: \"{{ (vars.everyone | first).name }}\"\n      Zoom_Recording_URL__c:",
        );
    let p = projection_of(&text).unwrap();
    assert_eq!(project(&p, "participants", participants()), participants());
}

#[test]
fn a_template_that_could_read_the_whole_record_turns_the_projection_off() {
    assert!(projection_of(&with_field("Location: \"{{ record | tojson }}\"")).is_none());
    assert!(
        projection_of(&with_field(
            "Location: \"{{ record[settings.internal_domains[0]] }}\""
        ))
        .is_none()
    );
    assert!(
        projection_of(&with_field(
            "Location: \"{% for k, v in record | items %}{{ k }}{% endfor %}\""
        ))
        .is_none()
    );
    assert!(projection_of(&with_field("Location: \"{{ record }}\"")).is_none());
}
