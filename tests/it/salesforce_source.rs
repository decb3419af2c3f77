//! Salesforce as a source (`salesforce.records`) end to end against the simulators: an
//! incremental read by SystemModstamp with checkpoints (a second run reads only what
//! changed, the lookback overlap costs no write), deleted rows through queryAll, parent
//! fields nested as Salesforce returns them and usable by lookups, paging across
//! nextRecordsUrl, a Bulk API 2.0 query for a large first read, and the simulator refusing
//! what Salesforce refuses.

use crate::support::{self, Env};

use chrono::{TimeZone, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::engine::Mode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Flagged Events become Tasks (keyed by the Event's Id), owned by the Event owner's User
/// found by email through a lookup; a deleted Event marks its Task.
const PIPELINE: &str = r#"
pipeline: flagged-events-to-tasks
description: A follow-up Task for every flagged Event.
source:
  stream: salesforce.records
  params:
    sobject: Event
    select: [Subject, StartDateTime, Owner.Email]
    where: "Zoom_Meeting__c = true"
    deleted: true
    __BULK__
  since: 2026-01-01T00:00:00Z
  lookback: 5m
lookups:
  owner:
    match:
      - sobject: User
        where: { Email: "{{ record.Owner.Email }}" }
        select: [Id]
sinks:
  task:
    sobject: Task
    action: upsert
    key: Zoom_Action_Item_Key__c
    fields:
      Zoom_Action_Item_Key__c: "{{ record.Id }}"
      Subject: "Follow up: {{ record.Subject }}"
      Description: "{{ 'Event deleted' if record.IsDeleted else 'Owner ' ~ record.Owner.Email }}"
      OwnerId: "{{ lookups.owner.Id }}"
      Status: Not Started
      Priority: Normal
"#;

const NAME: &str = "flagged-events-to-tasks";

struct T {
    env: Env,
    clock: Arc<ManualClock>,
}

async fn start(page_size: usize, bulk: &str) -> T {
    let clock = ManualClock::auto(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
            .single()
            .expect("time"),
    );
    let shared: SharedClock = clock.clone();
    let env = Env::start(shared, 0, |o| o.sf_query_page_size = page_size).await;
    std::fs::write(
        env.dir.path().join("pipelines").join("flagged.yaml"),
        PIPELINE.replace("__BULK__", bulk),
    )
    .expect("pipeline written");
    T { env, clock }
}

impl T {
    fn users(&self) -> Vec<(String, String)> {
        self.env
            .sandbox
            .salesforce
            .records("User")
            .iter()
            .map(|u| {
                (
                    u["Id"].as_str().unwrap_or("").to_string(),
                    u["Email"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// `n` flagged Events (and one unflagged), owned round-robin by the org's Users.
    fn seed_events(&self, n: usize) -> Vec<String> {
        let users = self.users();
        let rows: Vec<Value> = (0..=n)
            .map(|i| {
                let (owner, _) = &users[i % users.len()];
                json!({"Subject": format!("Meeting {i}"), "OwnerId": owner,
                       "StartDateTime": "2026-03-10T15:00:00.000+0000",
                       "EndDateTime": "2026-03-10T15:30:00.000+0000",
                       "DurationInMinutes": 30,
                       "Zoom_Meeting__c": i < n})
            })
            .collect();
        let mut ids = self.env.sandbox.salesforce.seed("Event", rows);
        ids.pop();
        ids
    }

    fn tasks(&self) -> Vec<Value> {
        self.env.sandbox.salesforce.records("Task")
    }

    async fn run(&self) -> ferry::engine::report::PipelineReport {
        let r = self.env.run_one(NAME, Mode::Run).await;
        assert!(r.stopped.is_none(), "run stopped: {:?}", r.stopped);
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_read_rereads_only_changes_and_sees_deletes() {
    let t = start(2000, "").await;
    let ids = t.seed_events(6);
    t.clock.advance(Duration::from_secs(60));

    let first = t.run().await;
    assert_eq!(first.summary.create, 6, "one Task per flagged Event");
    let tasks = t.tasks();
    assert_eq!(tasks.len(), 6);
    let users = t.users();
    for task in &tasks {
        let owner = task["OwnerId"].as_str().unwrap_or("");
        let email = users
            .iter()
            .find(|(id, _)| id == owner)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        assert_eq!(
            task["Description"],
            json!(format!("Owner {email}")),
            "Owner.Email arrives nested and the lookup by it finds the owner"
        );
    }
    let conns = t.env.connect(&t.env.project()).await;
    let cps = conns
        .store
        .checkpoints(Some(NAME))
        .await
        .expect("checkpoints");
    assert_eq!(cps.len(), 1, "one checkpoint for the stream: {cps:?}");
    assert_eq!(cps[0].stream, "records");

    // Within the lookback: the overlap is read again and costs no write.
    t.clock.advance(Duration::from_secs(60));
    let again = t.run().await;
    assert_eq!(again.summary.create + again.summary.update, 0);
    assert_eq!(
        again.summary.unchanged, 6,
        "the overlap is re-read: {:?}",
        again.summary
    );

    // An hour on, one Event changes: it is written; the others, at the checkpoint, are
    // read again within the lookback and cost nothing.
    t.clock.advance(Duration::from_secs(3600));
    assert!(
        t.env
            .sandbox
            .salesforce
            .update("Event", &ids[2], json!({"Subject": "Moved"}))
    );
    t.clock.advance(Duration::from_secs(60));
    let changed = t.run().await;
    assert_eq!(changed.summary.update, 1);
    assert_eq!(changed.summary.create, 0, "{:?}", changed.summary);
    assert!(
        t.tasks()
            .iter()
            .any(|x| x["Subject"] == json!("Follow up: Moved"))
    );

    // A deleted Event is read through queryAll with IsDeleted; the checkpoint is now past
    // the four untouched Events, so only the moved one (at the checkpoint) is read again.
    t.clock.advance(Duration::from_secs(3600));
    assert!(t.env.sandbox.salesforce.delete("Event", &ids[4]));
    t.clock.advance(Duration::from_secs(60));
    let deleted = t.run().await;
    assert_eq!(deleted.summary.update, 1, "{:?}", deleted.summary);
    assert_eq!(
        deleted.summary.unchanged, 1,
        "only the rows from the checkpoint on are read: {:?}",
        deleted.summary
    );
    let marked: Vec<Value> = t
        .tasks()
        .into_iter()
        .filter(|x| x["Description"] == json!("Event deleted"))
        .collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["Zoom_Action_Item_Key__c"], json!(ids[4]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_next_records_url_and_a_large_first_read_goes_through_bulk() {
    // REST paging: 25 rows at 10 a page is three query pages after the COUNT().
    let t = start(10, "bulk: false").await;
    t.seed_events(25);
    t.clock.advance(Duration::from_secs(60));
    let before = t.env.sandbox.salesforce.calls();
    let r = t.run().await;
    let after = t.env.sandbox.salesforce.calls();
    assert_eq!(r.summary.create, 25);
    assert_eq!(after.bulk, before.bulk, "no Bulk job when bulk is off");
    // Queries: 3 pages of Events, plus the lookups of owners (one batch).
    assert!(
        after.query >= before.query + 3,
        "three pages: {} → {}",
        before.query,
        after.query
    );

    // Bulk: 25 rows over a threshold of 10 on a first read: COUNT(), one job, polls, one
    // results page; no REST pages of Events.
    let t = start(10, "bulk_threshold: 10").await;
    t.seed_events(25);
    t.clock.advance(Duration::from_secs(60));
    let before = t.env.sandbox.salesforce.calls();
    let r = t.run().await;
    let after = t.env.sandbox.salesforce.calls();
    assert_eq!(r.summary.create, 25, "{:?}", r.summary);
    let bulk_calls = after.bulk - before.bulk;
    assert!(
        (3..=5).contains(&bulk_calls),
        "create, polls until JobComplete, one results page: {bulk_calls}"
    );
    assert_eq!(t.tasks().len(), 25);
    for task in t.tasks() {
        assert!(
            task["Description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Owner ") && d.contains('@')),
            "Owner.Email columns are nested back: {task}"
        );
    }
    // The checkpoint moved to the newest row: the next run is incremental, over REST, reads
    // the rows at the checkpoint again (lookback) and writes nothing.
    t.clock.advance(Duration::from_secs(3600));
    let before = t.env.sandbox.salesforce.calls();
    let r = t.run().await;
    let after = t.env.sandbox.salesforce.calls();
    assert_eq!(
        after.bulk, before.bulk,
        "a checkpointed read does not use Bulk"
    );
    assert_eq!(r.summary.create + r.summary.update, 0, "{:?}", r.summary);
    assert_eq!(r.summary.unchanged, 25);
    let cps = t
        .env
        .connect(&t.env.project())
        .await
        .store
        .checkpoints(Some(NAME))
        .await
        .expect("checkpoints");
    assert_eq!(cps.len(), 1);
    assert!(cps[0].cursor.starts_with("2026-03-02T09:00:00"), "{cps:?}");
}

/// A REST client on the sim for the strictness checks.
async fn api(t: &T) -> (reqwest::Client, String, String) {
    let sf = &t.env.sandbox.salesforce;
    let http = reqwest::Client::new();
    let resp: Value = http
        .post(format!("{}/services/oauth2/token", sf.login_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", sf.client_id.as_str()),
            ("refresh_token", sf.refresh_token.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let base = format!(
        "{}/services/data/v{}",
        resp["instance_url"].as_str().unwrap_or(""),
        sf.api_version
    );
    (
        http,
        base,
        resp["access_token"].as_str().unwrap_or("").to_string(),
    )
}

async fn get(t: &T, path: &str, q: &str) -> (u16, Value) {
    let (http, base, token) = api(t).await;
    let resp = http
        .get(format!("{base}{path}"))
        .query(&[("q", q)])
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_answers_parent_fields_deleted_rows_and_dates_as_salesforce_does() {
    let t = start(2000, "").await;
    let ids = t.seed_events(3);
    let sf = &t.env.sandbox.salesforce;
    assert!(sf.delete("Event", &ids[0]));

    let (s, v) = get(&t, "/query", "SELECT Id, Owner.Email, IsDeleted FROM Event WHERE Zoom_Meeting__c = true ORDER BY SystemModstamp, Id").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totalSize"], json!(2), "a deleted row is not in /query");
    let owner = &v["records"][0]["Owner"];
    assert_eq!(owner["attributes"]["type"], json!("User"), "{v}");
    assert!(owner["Email"].as_str().is_some_and(|e| e.contains('@')));

    let (s, v) = get(
        &t,
        "/queryAll",
        "SELECT Id, IsDeleted, SystemModstamp FROM Event WHERE IsDeleted = true",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totalSize"], json!(1), "queryAll sees the Recycle Bin");
    assert_eq!(v["records"][0]["Id"], json!(ids[0]));

    // A WHERE on a parent field, TODAY on a datetime, and != null.
    let users = t.users();
    let email = &users[1].1;
    let (s, v) = get(&t, "/query", &format!("SELECT Id FROM Event WHERE Owner.Email = '{email}' AND Subject != null AND CreatedDate = TODAY")).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["totalSize"].as_u64().is_some_and(|n| n >= 1), "{v}");
    let (_, v) = get(
        &t,
        "/query",
        "SELECT Id FROM Event WHERE CreatedDate > TODAY",
    )
    .await;
    assert_eq!(v["totalSize"], json!(0));

    // Refusals: an unknown field, an unknown relationship, two levels up.
    for (q, needle) in [
        (
            "SELECT Id, Bogus__c FROM Event",
            "No such column 'Bogus__c'",
        ),
        (
            "SELECT Id, Owner.Bogus FROM Event",
            "No such column 'Bogus' on entity 'User'",
        ),
        (
            "SELECT Id, Ownr.Email FROM Event",
            "Didn't understand relationship 'Ownr'",
        ),
        (
            "SELECT Id FROM Event WHERE Owner.Manager.Email = 'x'",
            "more than one relationship",
        ),
    ] {
        let (s, v) = get(&t, "/query", q).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v[0]["errorCode"], json!("INVALID_FIELD"), "{q}");
        assert!(
            v[0]["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{q}: {v}"
        );
    }

    // A Bulk query with ORDER BY or COUNT() is refused when the job is created.
    let (http, base, token) = api(&t).await;
    for q in [
        "SELECT Id FROM Event ORDER BY Id",
        "SELECT COUNT() FROM Event",
    ] {
        let resp = http
            .post(format!("{base}/jobs/query"))
            .bearer_auth(&token)
            .json(&json!({"operation": "query", "query": q}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 400, "{q}");
    }
    // Results of a job that is not complete yet are refused.
    let job: Value = http
        .post(format!("{base}/jobs/query"))
        .bearer_auth(&token)
        .json(&json!({"operation": "queryAll", "query": "SELECT Id, Owner.Email FROM Event"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = job["id"].as_str().unwrap_or("");
    let early = http
        .get(format!("{base}/jobs/query/{id}/results"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(early.status().as_u16(), 400);
    for _ in 0..2 {
        http.get(format!("{base}/jobs/query/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("poll");
    }
    let page = http
        .get(format!("{base}/jobs/query/{id}/results?maxRecords=2"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(page.status().as_u16(), 200);
    let locator = page
        .headers()
        .get("sforce-locator")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = page.text().await.unwrap_or_default();
    assert!(text.starts_with("Id,Owner.Email\n"), "{text}");
    assert_eq!(text.lines().count(), 3, "header and two rows");
    assert_ne!(
        locator, "null",
        "four rows (one deleted) do not fit two a page"
    );
    let last = http
        .get(format!(
            "{base}/jobs/query/{id}/results?maxRecords=2&locator={locator}"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(
        last.headers()
            .get("sforce-locator")
            .and_then(|v| v.to_str().ok()),
        Some("null")
    );
    let _ = support::writes;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_read_prints_salesforce_records_with_parent_fields_nested() {
    // The binary runs on the system clock: the org's records are stamped an hour ago.
    let clock = ManualClock::auto(Utc::now() - chrono::Duration::hours(1));
    let shared: SharedClock = clock.clone();
    let env = Env::start(shared, 0, |_| {}).await;
    let owner = env.sandbox.salesforce.records("User")[0]["Id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    env.sandbox.salesforce.seed(
        "Event",
        (0..3)
            .map(|i| json!({"Subject": format!("E{i}"), "OwnerId": owner, "Zoom_Meeting__c": i != 1}))
            .collect(),
    );
    let cfg = env.config.clone();
    let since = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let run = |args: Vec<String>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .arg("--config")
                .arg(&cfg)
                .args(args)
                .output()
                .expect("runs")
        })
    };
    let out = run([
        "read",
        "salesforce.records",
        "--param",
        "sobject=Event",
        "--param",
        "select=Subject,Owner.Email",
        "--param",
        "where=Zoom_Meeting__c = true",
        "--since",
        &since,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await
    .expect("joins");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2, "the where applies");
    for r in &rows {
        assert!(
            r["Owner"]["Email"]
                .as_str()
                .is_some_and(|e| e.contains('@')),
            "{r}"
        );
        assert!(r.get("attributes").is_none() && r["Owner"].get("attributes").is_none());
        assert!(r["SystemModstamp"].is_string() && r["Id"].is_string());
    }
    // An unknown param is refused before any call, with the params it takes.
    let out = run([
        "read",
        "salesforce.records",
        "--param",
        "sobject=Event",
        "--param",
        "selct=Id",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await
    .expect("joins");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no param `selct`"));
}

const BAD_SOURCE: &str = r#"pipeline: bad-source
source:
  stream: salesforce.records
  params:
    sobject: Event
    select: [Subject, Subjct, Ownr.Email, Owner.Emial]
    where: "Zoom_Meetng__c = true AND Owner.Email != null"
sinks:
  task:
    sobject: Task
    action: upsert
    key: Zoom_Action_Item_Key__c
    fields:
      Zoom_Action_Item_Key__c: "{{ record.Id }}"
      Subject: "{{ record.Subject }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_online_checks_select_and_where_fields_at_their_lines() {
    let env = Env::start(ferry::clock::system(), 0, |_| {}).await;
    let dir = env.dir.path();
    std::fs::write(dir.join("pipelines/bad-source.yaml"), BAD_SOURCE).expect("write");
    let config = env.config.clone();
    let validate = move |online: bool| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
            c.arg("--config")
                .arg(&config)
                .arg("validate")
                .env("NO_COLOR", "1");
            if online {
                c.arg("--online");
            }
            c.output().expect("ferry runs")
        })
    };
    // Offline the file is well formed (its fields are only known to the org).
    let out = validate(false).await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = validate(true).await.expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    for needle in [
        "bad-source.yaml:6:5",
        "`select` names `Subjct`",
        "did you mean `Subject`?",
        "no relationship `Ownr`",
        "did you mean `Owner.Email`?",
        "`select` names `Owner.Emial`",
        "bad-source.yaml:7:5",
        "`where` names `Zoom_Meetng__c`",
        "did you mean `Zoom_Meeting__c`?",
    ] {
        assert!(text.contains(needle), "{needle}:\n{text}");
    }
    assert!(
        !text.contains("`Subject`:") && !text.contains("names `Owner.Email`"),
        "{text}"
    );

    // A `select` that is not a list, or a path two levels up, fails offline already.
    std::fs::write(
        dir.join("pipelines/bad-source.yaml"),
        BAD_SOURCE.replace(
            "select: [Subject, Subjct, Ownr.Email, Owner.Emial]",
            "select: [Subject, Owner.Manager.Email]",
        ),
    )
    .expect("write");
    let out = validate(false).await.expect("join");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("more than one relationship up"), "{text}");
}
