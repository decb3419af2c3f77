//! Prints how many records per second go through the reference pipeline's templates.
//! Informational only: no timing is asserted (debug builds are far slower than release).

use ferry::template::{Template, from_json};
use serde_json::json;
use std::time::Instant;

#[test]
fn reference_templates_throughput() {
    let sources = [
        "{{ record.uuid }}",
        "Zoom: {{ record.topic | truncate(240) }}",
        "{{ record.start_time | sf_datetime }}",
        "{{ record.end_time | sf_datetime }}",
        "{{ lookups.owner.Id }}",
        "{{ vars.who.Id }}",
        "{{ vars.what }}",
        "{{ record.recordings.share_url }}",
        "{{ lookups.attendees.matched | length > 0 }}",
        "{{ record.participants_count >= 2 }}",
    ];
    let templates: Vec<Template> = sources
        .iter()
        .map(|s| Template::compile(s).unwrap())
        .collect();
    let record = json!({
        "uuid": "abc==", "topic": "Acme <> Contoso discovery", "participants_count": 2,
        "start_time": "2026-03-15T14:00:00Z", "end_time": "2026-03-15T14:33:00Z",
        "participants": [{ "name": "Pat", "user_email": "pat@contoso.com" },
                         { "name": "Rep", "user_email": "rep@acme.com" }],
        "recordings": null
    });
    let root = json!({
        "record": record,
        "lookups": { "owner": { "Id": "005R" }, "attendees": { "matched": [{ "sobject": "Contact", "Id": "003A" }] } },
        "vars": { "who": { "Id": "003A", "sobject": "Contact" }, "what": "001A" }
    });
    let n = 5_000;
    let start = Instant::now();
    let mut produced = 0usize;
    for _ in 0..n {
        let ctx = from_json(&root);
        for t in &templates {
            let v = t.eval(&ctx).unwrap();
            produced += usize::from(!v.is_null());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(produced, n * (templates.len() - 1));
    println!(
        "{n} records × {} templates in {secs:.3}s: {:.0} records/s (context built per record)",
        templates.len(),
        n as f64 / secs
    );
}
