//! `ferry validate --online` checks sink and lookup fields against the org's describe and
//! reports each problem at its place in the file.

use crate::support;

use ferry::clock::SharedClock;
use std::process::Command;
use support::Env;

const BAD: &str = r#"pipeline: bad-fields
source:
  stream: zoom.past_meetings
  params: { user_id: all }
lookups:
  who:
    match:
      - sobject: Contact
        where: { Emial: "{{ record.user_email }}" }
        select: [Id]
sinks:
  event:
    sobject: Event
    action: upsert
    key: Zoom_Meeting_UUID__c
    fields:
      Zoom_Meeting_UUID__c: "{{ record.uuid }}"
      Subjct: "{{ record.topic }}"
      StartDateTime: "{{ record.start_time | sf_datetime }}"
      EndDateTime: "{{ record.end_time | sf_datetime }}"
  member:
    sobject: CampaignMember
    action: update
    id: "{{ record.id }}"
    fields:
      CampaignId: "701000000000001AAA"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_validation_names_missing_and_read_only_fields_with_their_positions() {
    let clock: SharedClock = ferry::clock::system();
    let env = Env::start(clock, 5, |_| {}).await;
    let dir = env.dir.path();
    std::fs::write(dir.join("pipelines/bad-fields.yaml"), BAD).expect("write");
    let config = env.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&config)
            .args(["validate", "--online"])
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .expect("join")
    .expect("ferry runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "exit 2 on problems:\n{text}");
    // the misspelled sink field, at its key
    assert!(
        text.contains("bad-fields.yaml:18:7"),
        "Subjct at 18:7:\n{text}"
    );
    assert!(text.contains("Subjct"), "{text}");
    assert!(text.contains("did you mean `Subject`?"), "{text}");
    // the lookup field
    assert!(
        text.contains("bad-fields.yaml:9:18"),
        "Emial at 9:18:\n{text}"
    );
    // a field Salesforce sets on create only, in an update sink
    assert!(
        text.contains("bad-fields.yaml:26:7"),
        "CampaignId at 26:7:\n{text}"
    );
    assert!(text.to_lowercase().contains("updat"), "{text}");
    // the example pipelines themselves are clean against the org
    std::fs::remove_file(dir.join("pipelines/bad-fields.yaml")).expect("remove");
    let config = env.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&config)
            .args(["validate", "--online"])
            .output()
    })
    .await
    .expect("join")
    .expect("ferry runs");
    assert!(
        out.status.success(),
        "the example pipelines match the org:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
