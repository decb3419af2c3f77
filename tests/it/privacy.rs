//! Privacy requests against the sandbox: `ferry subject export` for a Zoom user and for a
//! person who only ever joined meetings, and `ferry subject forget` with and without --apply.

use super::support::Env;
use ferry::engine::Mode;
use ferry::sim::world::{Attendee, World};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn ferry(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn section<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["section"] == name)
        .unwrap_or_else(|| panic!("no section {name} in {doc:#}"))
}

/// The busiest user: most calls with voicemails and recordings, and recorded meetings.
fn busy_user(w: &World) -> usize {
    (0..w.users.len())
        .max_by_key(|&u| {
            let calls = w.calls.iter().filter(|c| c.user == u).count();
            let recs = w
                .meetings
                .iter()
                .filter(|m| m.host == u && m.recording.is_some())
                .count();
            calls + recs
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_a_zoom_user_holds_all_of_theirs_and_none_of_anyone_elses() {
    let env = Env::start(ferry::clock::system(), 60, |_| {}).await;
    let w = env.sandbox.world.clone();
    let u = busy_user(&w);
    let email = w.users[u].email.to_uppercase(); // any case finds the user
    let (code, out, err) = ferry(&env.config, &["subject", "export", &email]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["zoom_user"], true);
    for s in doc["sections"].as_array().unwrap() {
        assert!(s["error"].is_null(), "section failed: {s:#}");
    }
    let now = chrono::Utc::now();
    let horizon = ferry::engine::connect::zoom_horizon(now);
    // Every meeting in Zoom's report, recording, call, voicemail and phone recording of theirs.
    let mut theirs = Vec::new();
    for m in w.meetings.iter().filter(|m| m.host == u && m.end <= now) {
        if m.start < horizon + chrono::Duration::days(1) {
            continue;
        }
        if m.in_reports() || m.recording.is_some() {
            theirs.push(m.uuid.clone());
        }
    }
    let mut calls = 0;
    let mut voicemails = 0;
    for c in w.calls.iter().filter(|c| c.user == u && c.end <= now) {
        if c.start < horizon + chrono::Duration::days(1) {
            continue;
        }
        theirs.push(c.id.clone());
        calls += 1;
        if let Some(v) = &c.voicemail {
            theirs.push(v.id.clone());
            voicemails += 1;
        }
        if let Some(r) = &c.recording {
            theirs.push(r.id.clone());
        }
    }
    assert!(
        calls > 0 && voicemails > 0,
        "the seeded user has calls and voicemails"
    );
    for id in &theirs {
        assert!(
            out.contains(&id.replace('/', "\\/")) || out.contains(id.as_str()),
            "missing {id}"
        );
    }
    assert_eq!(
        section(&doc, "phone call history")["count"]
            .as_u64()
            .unwrap() as usize,
        calls
    );
    // Nobody else's meetings or calls.
    for m in w.meetings.iter().filter(|m| m.host != u) {
        assert!(
            !out.contains(m.uuid.as_str()),
            "another host's meeting {}",
            m.uuid
        );
    }
    for c in w.calls.iter().filter(|c| c.user != u) {
        assert!(!out.contains(c.id.as_str()), "another user's call {}", c.id);
    }
    // No secret or token in the output or the logs.
    let sim = &env.sandbox.zoom;
    for secret in [sim.client_secret.as_str(), "access_token="] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked"
        );
    }
    for m in w.meetings.iter().filter(|m| m.host == u) {
        if let Some(r) = &m.recording
            && !r.password.is_empty()
        {
            assert!(
                !out.contains(&format!("\"{}\"", r.password)),
                "recording password leaked"
            );
        }
    }
    assert!(!out.contains("\"start_url\": \"http"));
    // Paced: the simulator's rate limits (on in the sandbox) were hardly ever hit.
    let stats = sim.stats();
    assert!(
        stats.responses_429 <= 2,
        "429 storm: {}",
        stats.responses_429
    );
    // The text summary names the sections.
    let (code, text, _) = ferry(
        &env.config,
        &["subject", "export", &email, "--format", "text"],
    );
    assert_eq!(code, 0);
    assert!(text.contains("Zoom: a user of this account") && text.contains("voicemails"));
}

fn state_files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let db = std::fs::read(dir.join(".ferry/state.db")).unwrap();
    let wal = std::fs::read(dir.join(".ferry/state.db-wal")).unwrap_or_default();
    (db, wal)
}

/// Every text value of every table, lowercased.
fn every_row(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join(".ferry/state.db")).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type='table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut st = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let mut line = format!("{t}:");
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i).unwrap();
                match v {
                    rusqlite::types::Value::Text(s) => line.push_str(&s.to_lowercase()),
                    rusqlite::types::Value::Blob(b) => {
                        line.push_str(&String::from_utf8_lossy(&b).to_lowercase())
                    }
                    other => line.push_str(&format!("{other:?}")),
                }
                line.push('|');
            }
            out.push(line);
        }
    }
    out.sort();
    out
}

/// Rows of the subject index and of the synced writes.
fn index_rows(dir: &Path) -> (u64, u64) {
    let conn = rusqlite::Connection::open(dir.join(".ferry/state.db")).unwrap();
    let n = |t: &str| -> u64 {
        conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    (n("subject_index"), n("synced_writes"))
}

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let hay = hay.to_ascii_lowercase();
    let n = needle.to_ascii_lowercase();
    hay.windows(n.len()).any(|w| w == n.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_is_exported_from_ferrys_records_then_forgotten() {
    let env = Env::start(ferry::clock::system(), 60, |_| {}).await;
    // A plan commits nothing, so it indexes nothing.
    let plan = env.run_one("meetings-to-events", Mode::Plan).await;
    assert!(plan.summary.create > 0, "{plan:?}");
    assert_eq!(
        index_rows(env.dir.path()),
        (0, 0),
        "a plan wrote index rows"
    );
    let report = env.run_one("meetings-to-events", Mode::Run).await;
    assert!(report.summary.create > 0, "{report:?}");
    // Each write is kept once for its record, not once per address of the record.
    let (subjects, writes) = index_rows(env.dir.path());
    assert!(subjects > 0);
    let s = &report.summary;
    assert!(
        writes > 0 && writes <= s.create + s.update + s.unchanged,
        "{writes} write rows for {s:?}"
    );
    let w = env.sandbox.world.clone();
    // An external participant of a meeting that got an Event.
    let events = env.sandbox.salesforce.records("Event");
    let (meeting, email) = w
        .meetings
        .iter()
        .filter(|m| {
            events
                .iter()
                .any(|e| e["Zoom_Meeting_UUID__c"].as_str() == Some(m.uuid.as_str()))
        })
        .find_map(|m| {
            m.participants.iter().find_map(|p| match p.attendee {
                Attendee::External(_) if !p.email.is_empty() => Some((m, p.email.clone())),
                _ => None,
            })
        })
        .expect("a meeting with an external participant was synced");
    let event_id = events
        .iter()
        .find(|e| e["Zoom_Meeting_UUID__c"].as_str() == Some(meeting.uuid.as_str()))
        .and_then(|e| e["Id"].as_str())
        .unwrap()
        .to_string();
    let (code, out, err) = ferry(&env.config, &["subject", "export", &email]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["zoom_user"], false, "{doc:#}");
    let synced = section(&doc, "synced records");
    assert!(
        synced["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record_key"] == meeting.uuid.as_str()),
        "{synced:#}"
    );
    let sf = section(&doc, "Salesforce records ferry wrote");
    assert!(
        sf["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == event_id.as_str()),
        "{sf:#}"
    );

    // forget without --apply changes nothing.
    let dir = env.dir.path();
    let before_files = state_files(dir);
    let before_rows = every_row(dir);
    assert!(contains_ci(&before_files.0, &email) || contains_ci(&before_files.1, &email));
    let (code, out, _) = ferry(&env.config, &["subject", "forget", &email]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing changed") && out.contains("never deletes in Zoom or Salesforce"));
    assert_eq!(state_files(dir), before_files, "the state file changed");
    assert_eq!(every_row(dir), before_rows);

    // With --apply the address is nowhere in the file, its WAL or any table.
    let (code, out, err) = ferry(&env.config, &["subject", "forget", &email, "--apply"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("forgotten"), "{out}");
    let (db, wal) = state_files(dir);
    assert!(
        !contains_ci(&db, &email),
        "the address survives in the state file"
    );
    assert!(
        !contains_ci(&wal, &email),
        "the address survives in the WAL"
    );
    let rows = every_row(dir);
    let needle = email.to_lowercase();
    assert!(
        !rows.iter().any(|r| r.contains(&needle)),
        "a table still holds it"
    );
    // The audit line names no address.
    assert!(
        rows.iter()
            .any(|r| r.starts_with("runs:") && r.contains("ferry subject forget"))
    );
    // The index is empty for them now.
    let (_, out, _) = ferry(&env.config, &["subject", "export", &email]);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(section(&doc, "synced records")["count"], 0);

    // The next run, from the beginning again, writes no duplicate.
    let org_before = env.org();
    let events_before = env.sandbox.salesforce.records("Event").len();
    {
        let project = env.project();
        let conns = env.connect(&project).await;
        conns.store.reset("meetings-to-events").await.unwrap();
    }
    let again = env.run_one("meetings-to-events", Mode::Run).await;
    assert_eq!(again.summary.create, 0, "{:?}", again.summary);
    assert_eq!(env.sandbox.salesforce.records("Event").len(), events_before);
    assert_eq!(env.org(), org_before);
}

/// Campaign members read from Salesforce and registered for a webinar by a Zoom sink.
const REGISTRANTS: &str = r#"pipeline: campaign-members-to-webinar
source:
  stream: salesforce.records
  params:
    sobject: CampaignMember
    select: [Email, FirstName, LastName]
    where: "CampaignId = 'CAMPAIGN'"
  since: 2020-01-01T00:00:00Z
sinks:
  registrant:
    zoom: webinar_registrant
    action: create
    params: { webinar_id: "WEBINAR" }
    key: "{{ record.Id }}"
    fields:
      email: "{{ record.Email }}"
      first_name: "{{ record.FirstName }}"
      last_name: "{{ record.LastName }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webinar_registrant_from_salesforce_is_exported_then_forgotten_without_a_duplicate() {
    let env = Env::start(ferry::clock::system(), 5, |_| {}).await;
    let zoom = &env.sandbox.zoom;
    let webinar = zoom.world().webinars[0].id;
    let sf = &env.sandbox.salesforce;
    let campaign = sf.seed(
        "Campaign",
        vec![serde_json::json!({"Name": "Privacy webinar", "IsActive": true})],
    )[0]
    .clone();
    // Mixed case in Salesforce; the request comes in lowercase.
    let email = "pat.lee@registrants.example.com";
    let members = sf.seed(
        "CampaignMember",
        vec![
            serde_json::json!({"CampaignId": campaign, "Status": "Registered",
                "Email": "Pat.Lee@Registrants.Example.com", "FirstName": "Pat", "LastName": "Lee"}),
            serde_json::json!({"CampaignId": campaign, "Status": "Registered",
                "Email": "sam.roe@registrants.example.com", "FirstName": "Sam", "LastName": "Roe"}),
        ],
    );
    let pipeline = REGISTRANTS
        .replace("CAMPAIGN", &campaign)
        .replace("WEBINAR", &webinar.to_string());
    std::fs::write(
        env.dir
            .path()
            .join("pipelines/campaign-members-to-webinar.yaml"),
        pipeline,
    )
    .unwrap();
    let name = "campaign-members-to-webinar";
    // A run reads Salesforce up to the current second (SOQL times are whole seconds):
    // records stamped within it are read by the next run. Let that second pass.
    let stamped = chrono::Utc::now();
    while chrono::Utc::now().timestamp() <= stamped.timestamp() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let report = env.run_one(name, Mode::Run).await;
    assert_eq!(report.summary.create, 2, "{report:?}");
    let registered = zoom.written_registrants(webinar);
    assert_eq!(registered.len(), 2, "{registered:?}");
    let pat_id = registered
        .iter()
        .find(|(_, e, _)| e.eq_ignore_ascii_case(email))
        .map(|(id, _, _)| id.clone())
        .unwrap();

    // The export lists the registration ferry made (its registrant id) and the Salesforce
    // record the address was synced from (the index covers a Salesforce source).
    let (code, out, err) = ferry(&env.config, &["subject", "export", email]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let made = section(&doc, "Zoom records ferry made");
    let rows = made["records"].as_array().unwrap();
    let pat = rows
        .iter()
        .find(|r| r["zoom_id"] == pat_id.as_str())
        .unwrap_or_else(|| panic!("{pat_id} not exported: {made:#}"));
    assert_eq!(pat["object"], "webinar_registrant");
    assert_eq!(pat["key"], members[0].as_str());
    assert_eq!(pat["values"]["registrant_id"], pat_id.as_str());
    assert_eq!(made["count"], 1, "only Pat's registration: {made:#}");
    assert!(
        !out.contains("sam.roe"),
        "someone else's data in the export"
    );
    assert!(!out.contains("start_url"));
    let synced = section(&doc, "synced records");
    assert!(
        synced["records"].as_array().unwrap().iter().any(|r| {
            r["record_key"] == members[0].as_str() && r["pipeline"] == name && r["as"] == "Email"
        }),
        "{synced:#}"
    );
    // Zoom objects are not listed as Salesforce records.
    let sf_section = section(&doc, "Salesforce records ferry wrote");
    assert!(!sf_section.to_string().contains(&pat_id), "{sf_section:#}");

    // forget --apply: the address is nowhere in the state file, its WAL or any table.
    let dir = env.dir.path();
    let (db, wal) = state_files(dir);
    assert!(contains_ci(&db, email) || contains_ci(&wal, email));
    let (code, out, err) = ferry(&env.config, &["subject", "forget", email]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Zoom ledger"), "{out}");
    let (code, out, err) = ferry(&env.config, &["subject", "forget", email, "--apply"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("still holds the address"), "{out}");
    let (db, wal) = state_files(dir);
    assert!(
        !contains_ci(&db, email),
        "the address survives in the state file"
    );
    assert!(!contains_ci(&wal, email), "the address survives in the WAL");
    let rows = every_row(dir);
    assert!(
        !rows.iter().any(|r| r.contains(email)),
        "a table still holds it"
    );
    // The registration's identity stays, and the other registrant is untouched.
    assert!(
        rows.iter()
            .any(|r| r.starts_with("zoom_ledger:") && r.contains(&pat_id.to_lowercase())),
        "the Zoom id was dropped"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("sam.roe@registrants.example.com"))
    );
    let (_, out, _) = ferry(&env.config, &["subject", "export", email]);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(section(&doc, "Zoom records ferry made")["count"], 0);

    // A rerun from the beginning registers nobody again.
    {
        let project = env.project();
        let conns = env.connect(&project).await;
        conns.store.reset(name).await.unwrap();
    }
    let again = env.run_one(name, Mode::Run).await;
    assert_eq!(again.records_read, 2, "{again:?}");
    assert_eq!(again.summary.create, 0, "{:?}", again.summary);
    assert_eq!(zoom.written_registrants(webinar).len(), 2);
}
