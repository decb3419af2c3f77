//! Limits of Salesforce's documentation that the sim enforces: Collections' 10 chunks of
//! mixed types, `attributes.type` on every record of an upsert, Collections upsert from
//! v46 only, the 200-record floor of `Sforce-Query-Options: batchSize`, unknown fields on a
//! Collections GET, the Bulk API 2.0 job states for results and deletes and its upload
//! size, and the default two-hour session.

use crate::support::salesforce as salesforce_common;

use reqwest::Method as M;
use salesforce_common::*;
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(env: &Env) -> Api {
        let http = reqwest::Client::new();
        let resp: Value = http
            .post(format!("{}/services/oauth2/token", env.sim.login_url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", env.sim.client_id.as_str()),
                ("refresh_token", env.sim.refresh_token.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let base = format!(
            "{}/services/data/v{}",
            resp["instance_url"].as_str().unwrap(),
            env.sim.api_version
        );
        Api {
            http,
            base,
            token: resp["access_token"].as_str().unwrap().to_string(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = rb.bearer_auth(&self.token).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    async fn call(&self, method: M, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        self.send(rb).await
    }
}

fn account(n: usize) -> Value {
    json!({"attributes": {"type": "Account"}, "Name": format!("Acme {n}")})
}

fn contact(n: usize) -> Value {
    json!({"attributes": {"type": "Contact"}, "LastName": format!("Buyer {n}")})
}

#[tokio::test]
async fn collections_take_at_most_ten_chunks_of_mixed_types() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    // Account, Contact, Account, ... : every record starts a new chunk. Ten is fine.
    let ten: Vec<Value> = (0..10)
        .map(|i| if i % 2 == 0 { account(i) } else { contact(i) })
        .collect();
    let (s, body) = api
        .call(
            M::POST,
            "/composite/sobjects",
            Some(json!({"records": ten})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .all(|r| r["success"] == true)
    );
    // Eleven chunks: the whole request is refused and nothing is written.
    let before = env.sim.records("Account").len();
    let eleven: Vec<Value> = (0..11)
        .map(|i| if i % 2 == 0 { account(i) } else { contact(i) })
        .collect();
    let (s, body) = api
        .call(
            M::POST,
            "/composite/sobjects",
            Some(json!({"records": eleven})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_BATCH_REQUEST");
    assert_eq!(env.sim.records("Account").len(), before);
    // The same 22 records grouped by type are two chunks.
    let mut grouped: Vec<Value> = (0..11).map(account).collect();
    grouped.extend((0..11).map(contact));
    let (s, body) = api
        .call(
            M::POST,
            "/composite/sobjects",
            Some(json!({"records": grouped})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn collections_upsert_needs_attributes_type_and_v46() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let path = "/composite/sobjects/Event/Zoom_Meeting_UUID__c";
    let rec = json!({"Zoom_Meeting_UUID__c": "u1", "Subject": "Call",
        "ActivityDateTime": "2026-03-01T10:00:00Z", "DurationInMinutes": 30});
    let (s, body) = api
        .call(M::PATCH, path, Some(json!({"records": [rec.clone()]})))
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_TYPE");
    let mut typed = rec.clone();
    typed["attributes"] = json!({"type": "Event"});
    let (s, body) = api
        .call(M::PATCH, path, Some(json!({"records": [typed.clone()]})))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body[0]["success"], true, "{body}");
    assert_eq!(body[0]["created"], true, "{body}");

    // Collections upsert arrived in API v46.0.
    let old = Env::start(|o| o.api_version = "45.0".into()).await;
    let api = Api::login(&old).await;
    let (s, _) = api
        .call(M::PATCH, path, Some(json!({"records": [typed]})))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn query_batch_size_has_a_floor_of_200() {
    let env = Env::start(|_| {}).await;
    let rows: Vec<Value> = (0..450)
        .map(|i| json!({"LastName": format!("Buyer {i}")}))
        .collect();
    env.sim.seed("Contact", rows);
    let api = Api::login(&env).await;
    let q = "/query?q=SELECT+Id+FROM+Contact";
    let page = |batch: &'static str| {
        api.http
            .get(format!("{}{q}", api.base))
            .header("Sforce-Query-Options", batch)
    };
    // Asked for 50: Salesforce's minimum is 200.
    let (s, body) = api.send(page("batchSize=50")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["records"].as_array().unwrap().len(), 200);
    assert_eq!(body["done"], false);
    assert_eq!(body["totalSize"], 450);
    // Within the bounds it is honoured; above them, 2,000 at most.
    let (_, body) = api.send(page("batchSize=300")).await;
    assert_eq!(body["records"].as_array().unwrap().len(), 300);
    let (_, body) = api.send(page("batchSize=100000")).await;
    assert_eq!(body["records"].as_array().unwrap().len(), 450);
    assert_eq!(body["done"], true);
}

#[tokio::test]
async fn collections_get_refuses_an_unknown_field() {
    let env = Env::start(|_| {}).await;
    let ids = env.sim.seed("Contact", vec![json!({"LastName": "Buyer"})]);
    let api = Api::login(&env).await;
    let (s, body) = api
        .call(
            M::GET,
            &format!("/composite/sobjects/Contact?ids={}&fields=LastName", ids[0]),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body[0]["LastName"], "Buyer");
    let (s, body) = api
        .call(
            M::GET,
            &format!(
                "/composite/sobjects/Contact?ids={}&fields=LastName,Nope__c",
                ids[0]
            ),
            None,
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
}

#[tokio::test]
async fn bulk_results_and_deletes_follow_the_job_state_and_uploads_are_bounded() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let job_spec = json!({"object": "Contact", "operation": "insert", "contentType": "CSV",
                          "lineEnding": "LF", "columnDelimiter": "COMMA"});
    let (s, job) = api
        .call(M::POST, "/jobs/ingest", Some(job_spec.clone()))
        .await;
    assert_eq!(s, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let base = format!("/jobs/ingest/{id}");
    // Open: no results, no delete.
    let (s, body) = api
        .call(M::GET, &format!("{base}/successfulResults/"), None)
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALIDJOBSTATE");
    let (s, _) = api.call(M::DELETE, &base, None).await;
    assert_eq!(s, 400);
    // An upload over axum's default 2 MB body cap is still taken (Salesforce takes 100 MB).
    let mut csv = String::from("LastName\n");
    while csv.len() < 3 * 1024 * 1024 {
        csv.push_str("Buyer with a fairly long last name to fill the upload\n");
    }
    let rows = csv.lines().count() - 1;
    let (s, body) = api
        .send(
            api.http
                .put(format!("{}{base}/batches", api.base))
                .header("Content-Type", "text/csv")
                .body(csv),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, _) = api
        .call(M::PATCH, &base, Some(json!({"state": "UploadComplete"})))
        .await;
    assert_eq!(s, 200);
    // The first poll moves it to InProgress: still no results.
    let (_, info) = api.call(M::GET, &base, None).await;
    assert_eq!(info["state"], "InProgress");
    let (s, _) = api
        .call(M::GET, &format!("{base}/failedResults/"), None)
        .await;
    assert_eq!(s, 400);
    let (s, _) = api.call(M::DELETE, &base, None).await;
    assert_eq!(s, 400);
    env.clock.advance(std::time::Duration::from_secs(60));
    let (_, info) = api.call(M::GET, &base, None).await;
    assert_eq!(info["state"], "JobComplete", "{info}");
    assert_eq!(info["numberRecordsProcessed"], rows);
    let (s, body) = api
        .call(M::GET, &format!("{base}/successfulResults/"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(body.as_str().unwrap().lines().count(), rows + 1);
    let (s, _) = api.call(M::DELETE, &base, None).await;
    assert_eq!(s, 204);

    // Over 100 MB of CSV: refused.
    let (_, job) = api.call(M::POST, "/jobs/ingest", Some(job_spec)).await;
    let id = job["id"].as_str().unwrap().to_string();
    let big = vec![b'x'; ferry::sim::salesforce::MAX_BULK_UPLOAD_BYTES + 1];
    let (s, body) = api
        .send(
            api.http
                .put(format!("{}/jobs/ingest/{id}/batches", api.base))
                .header("Content-Type", "text/csv")
                .body(big),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALIDBATCH");
}

#[tokio::test]
async fn sessions_expire_after_two_hours_by_default() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let (s, _) = api.call(M::GET, "/limits", None).await;
    assert_eq!(s, 200);
    env.clock
        .advance(ferry::sim::salesforce::DEFAULT_SESSION_TTL - std::time::Duration::from_secs(5));
    let (s, _) = api.call(M::GET, "/limits", None).await;
    assert_eq!(s, 200);
    env.clock.advance(std::time::Duration::from_secs(10));
    let (s, body) = api.call(M::GET, "/limits", None).await;
    assert_eq!(s, 401);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
}
