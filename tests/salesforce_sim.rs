//! Wire shapes of the Salesforce sim, checked with a plain HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod salesforce_common;

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
        assert!(resp.get("expires_in").is_none());
        assert!(resp["issued_at"].as_str().unwrap().parse::<i64>().is_ok());
        assert!(resp["signature"].is_string());
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

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, v)
    }
}

use reqwest::Method as M;

#[tokio::test]
async fn limit_header_401_shape_and_daily_limit() {
    let env = Env::start(|o| o.daily_limit = 3).await;
    let api = Api::login(&env).await;
    let (s, h, _) = api.call(M::GET, "/limits", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["sforce-limit-info"], "api-usage=1/3");
    env.sim.expire_sessions();
    let (s, _, body) = api.call(M::GET, "/limits", None).await;
    assert_eq!(s, 401);
    assert_eq!(
        body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    let api = Api::login(&env).await;
    api.call(M::GET, "/limits", None).await;
    api.call(M::GET, "/limits", None).await;
    let (s, h, body) = api.call(M::GET, "/limits", None).await;
    assert_eq!(s, 403);
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(body[0]["message"], "TotalRequests Limit exceeded.");
    assert_eq!(h["sforce-limit-info"], "api-usage=3/3");
}

#[tokio::test]
async fn upsert_status_codes_and_multiple_matches() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let ev = json!({"Subject": "S", "ActivityDateTime": "2026-03-01T15:00:00+0100", "DurationInMinutes": 15});
    let (s, _, b) = api
        .call(
            M::PATCH,
            "/sobjects/Event/Zoom_Meeting_UUID__c/u%2F1",
            Some(ev.clone()),
        )
        .await;
    assert_eq!((s, &b["created"]), (201, &json!(true)));
    let (s, _, b2) = api
        .call(
            M::PATCH,
            "/sobjects/Event/zoom_meeting_uuid__c/U%2F1",
            Some(ev.clone()),
        )
        .await;
    assert_eq!(
        (s, &b2["created"]),
        (200, &json!(false)),
        "external ids match case-insensitively"
    );
    assert_eq!(b["id"], b2["id"]);
    let stored = &env.sim.records("Event")[0];
    assert_eq!(stored["Zoom_Meeting_UUID__c"], "u/1");
    assert_eq!(stored["ActivityDateTime"], "2026-03-01T14:00:00.000+0000");
    // Email is an idLookup field but not unique: two matches → 300 with URLs.
    env.sim.seed(
        "Contact",
        vec![
            json!({"LastName": "A", "Email": "x@y.example"}),
            json!({"LastName": "B", "Email": "x@y.example"}),
        ],
    );
    let (s, _, b) = api
        .call(
            M::PATCH,
            "/sobjects/Contact/Email/x%40y.example",
            Some(json!({"Title": "T"})),
        )
        .await;
    assert_eq!(s, 300);
    assert_eq!(b.as_array().unwrap().len(), 2);
    assert!(
        b[0].as_str()
            .unwrap()
            .starts_with("/services/data/v61.0/sobjects/Contact/003")
    );
    let (s, _, b) = api
        .call(M::PATCH, "/sobjects/Contact/Title/x", Some(json!({})))
        .await;
    assert_eq!((s, b[0]["errorCode"].as_str()), (404, Some("NOT_FOUND")));
    let (s, _, b) = api
        .call(
            M::POST,
            "/sobjects/Contact",
            Some(json!({"Id": "003", "LastName": "X"})),
        )
        .await;
    assert_eq!(
        (s, b[0]["message"].as_str()),
        (
            400,
            Some("The Id field should not be specified in the sobject data.")
        )
    );
}

#[tokio::test]
async fn old_api_versions_answer_upsert_updates_with_204() {
    let env = Env::start(|o| o.api_version = "45.0".into()).await;
    let api = Api::login(&env).await;
    let ev = json!({"Subject": "S", "ActivityDateTime": "2026-03-01T15:00:00Z", "DurationInMinutes": 15});
    assert_eq!(
        api.call(
            M::PATCH,
            "/sobjects/Event/Zoom_Meeting_UUID__c/a",
            Some(ev.clone())
        )
        .await
        .0,
        201
    );
    let (s, _, b) = api
        .call(M::PATCH, "/sobjects/Event/Zoom_Meeting_UUID__c/a", Some(ev))
        .await;
    assert_eq!((s, b), (204, Value::Null));
}

#[tokio::test]
async fn collections_all_or_none_rolls_back() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let recs = json!([
        {"attributes": {"type": "Account"}, "Name": "Good"},
        {"attributes": {"type": "Account"}, "Name": "x".repeat(256)},
    ]);
    let (s, _, b) = api
        .call(
            M::POST,
            "/composite/sobjects",
            Some(json!({"allOrNone": true, "records": recs})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(b[1]["errors"][0]["statusCode"], "STRING_TOO_LONG");
    assert!(b[1].get("id").is_none());
    assert!(env.sim.records("Account").is_empty());
    let too_many: Vec<Value> = (0..201)
        .map(|i| json!({"attributes": {"type": "Account"}, "Name": format!("A{i}")}))
        .collect();
    let (s, _, _) = api
        .call(
            M::POST,
            "/composite/sobjects",
            Some(json!({"records": too_many})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _, b) = api
        .call(
            M::POST,
            "/composite/sobjects",
            Some(json!({"records": [{"Name": "no type"}]})),
        )
        .await;
    assert_eq!((s, b[0]["errorCode"].as_str()), (400, Some("INVALID_TYPE")));
}

#[tokio::test]
async fn composite_references_and_rollback() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let v = "/services/data/v61.0";
    let req = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": format!("{v}/sobjects/Account"), "referenceId": "acc", "body": {"Name": "Acme"}},
        {"method": "POST", "url": format!("{v}/sobjects/Contact"), "referenceId": "con",
         "body": {"LastName": "Lee", "AccountId": "@{acc.id}"}},
        {"method": "GET", "url": format!("{v}/query?q=SELECT+Id+FROM+Contact+WHERE+AccountId='@{{acc.id}}'"), "referenceId": "q"},
        {"method": "PATCH", "url": format!("{v}/sobjects/Contact/@{{q.records[0].Id}}"), "referenceId": "upd", "body": {"Title": "CTO"}}
    ]});
    let (s, _, b) = api.call(M::POST, "/composite", Some(req)).await;
    assert_eq!(s, 200);
    let r = b["compositeResponse"].as_array().unwrap();
    assert_eq!(
        r.iter()
            .map(|x| x["httpStatusCode"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![201, 201, 200, 204]
    );
    let contacts = env.sim.records("Contact");
    assert_eq!(contacts[0]["AccountId"], r[0]["body"]["id"]);
    assert_eq!(contacts[0]["Title"], "CTO");
    assert_eq!(env.sim.calls().composite, 1);
    let bad = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": format!("{v}/sobjects/Account"), "referenceId": "a2", "body": {"Name": "Beta"}},
        {"method": "POST", "url": format!("{v}/sobjects/Contact"), "referenceId": "c2", "body": {"FirstName": "NoLast"}}
    ]});
    let (_, _, b) = api.call(M::POST, "/composite", Some(bad)).await;
    let r = b["compositeResponse"].as_array().unwrap();
    assert_eq!(r[0]["httpStatusCode"], 400);
    assert_eq!(r[0]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert_eq!(r[1]["body"][0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(env.sim.records("Account").len(), 1, "Beta rolled back");
}

#[tokio::test]
async fn object_rules_campaign_members_converted_leads_picklists() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let camp = env.sim.seed("Campaign", vec![json!({"Name": "Webinar"})]);
    let lead = env
        .sim
        .seed("Lead", vec![json!({"LastName": "L", "Company": "C"})]);
    let contact = env.sim.seed("Contact", vec![json!({"LastName": "C"})]);
    let cm = json!({"CampaignId": camp[0], "LeadId": lead[0], "Zoom_Registrant_Key__c": "k1"});
    assert_eq!(
        api.call(M::POST, "/sobjects/CampaignMember", Some(cm.clone()))
            .await
            .0,
        201
    );
    let mut dup = cm.clone();
    dup["Zoom_Registrant_Key__c"] = json!("k2");
    let (s, _, b) = api
        .call(M::POST, "/sobjects/CampaignMember", Some(dup))
        .await;
    assert_eq!(
        (s, b[0]["message"].as_str()),
        (400, Some("Already a campaign member."))
    );
    assert_eq!(env.sim.records("CampaignMember")[0]["Status"], "Sent");
    env.sim.convert_lead(&lead[0], &contact[0]);
    let (s, _, b) = api
        .call(
            M::PATCH,
            &format!("/sobjects/Lead/{}", lead[0]),
            Some(json!({"Title": "X"})),
        )
        .await;
    assert_eq!(
        (s, b[0]["errorCode"].as_str()),
        (400, Some("CANNOT_UPDATE_CONVERTED_LEAD"))
    );
    let (s, _, b) = api
        .call(
            M::POST,
            "/sobjects/Task",
            Some(json!({"Subject": "Call", "Priority": "Urgent"})),
        )
        .await;
    assert_eq!(
        (s, b[0]["errorCode"].as_str()),
        (400, Some("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"))
    );
    let (s, _, b) = api
        .call(
            M::POST,
            "/sobjects/Task",
            Some(json!({"Subject": "Call", "WhoId": "003000000000000AAA"})),
        )
        .await;
    assert_eq!(
        (s, b[0]["errorCode"].as_str()),
        (400, Some("INVALID_CROSS_REFERENCE_KEY"))
    );
    let (s, _, b) = api.call(M::POST, "/sobjects/Event", Some(json!({"Subject": "Long", "ActivityDateTime": "2026-03-01T00:00:00Z", "DurationInMinutes": 21000}))).await;
    assert_eq!(
        (s, b[0]["errorCode"].as_str()),
        (400, Some("FIELD_INTEGRITY_EXCEPTION"))
    );
    let (s, _, b) = api
        .call(
            M::POST,
            "/sobjects/Task",
            Some(json!({"Subject": "Call", "ActivityDate": "2026-03-01T10:00:00Z"})),
        )
        .await;
    assert_eq!(
        (s, b[0]["errorCode"].as_str()),
        (400, Some("JSON_PARSER_ERROR")),
        "a date takes no time or offset"
    );
    let (s, _, b) = api
        .call(M::POST, "/sobjects/Task", Some(json!({"Subject": "Call"})))
        .await;
    assert_eq!(s, 201);
    let task = &env.sim.records("Task")[0];
    assert_eq!(task["Status"], "Not Started");
    assert_eq!(task["Id"], b["id"]);
    assert_eq!(task["CreatedDate"], "2026-03-02T09:00:00.000+0000");
}

#[tokio::test]
async fn platform_event_publish_acknowledges_with_operation_enqueued() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let (s, _, b) = api
        .call(
            M::POST,
            "/sobjects/Zoom_Meeting_Ended__e",
            Some(json!({"Meeting_UUID__c": "m1"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(b["success"], true);
    assert_eq!(b["errors"][0]["statusCode"], "OPERATION_ENQUEUED");
    assert_eq!(
        b["errors"][0]["message"],
        env.sim.published_events()[0].1["EventUuid"]
    );
    assert!(b["id"].as_str().unwrap().starts_with("e00"));
}

#[tokio::test]
async fn query_subset_case_rules_and_count() {
    let env = Env::start(|o| o.query_page_size = 2).await;
    env.sim.seed(
        "Contact",
        vec![
            json!({"LastName": "Able", "Email": "A@X.example"}),
            json!({"LastName": "Baker", "Email": "b@x.example", "Title": "CEO"}),
            json!({"LastName": "Cole", "Email": null}),
        ],
    );
    let api = Api::login(&env).await;
    let q = |soql: &str| {
        format!(
            "/query?q={}",
            soql.replace(' ', "+")
                .replace('\'', "%27")
                .replace('=', "%3D")
        )
    };
    let (_, _, b) = api
        .call(
            M::GET,
            &q("SELECT Id FROM Contact WHERE Email IN ('a@x.example', 'B@X.EXAMPLE')"),
            None,
        )
        .await;
    assert_eq!(b["totalSize"], 2);
    let (_, _, b) = api.call(M::GET, &q("SELECT LastName FROM Contact WHERE Email != null AND (Title = 'ceo' OR NOT LastName LIKE 'b%') ORDER BY LastName DESC"), None).await;
    assert_eq!(
        b["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["LastName"].clone())
            .collect::<Vec<_>>(),
        vec![json!("Baker"), json!("Able")]
    );
    let (_, _, b) = api
        .call(
            M::GET,
            &q("SELECT COUNT() FROM Contact WHERE Email = null"),
            None,
        )
        .await;
    assert_eq!(
        (
            b["totalSize"].as_u64(),
            b["records"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0))
    );
    let (_, _, b) = api
        .call(M::GET, &q("SELECT Id FROM Contact ORDER BY LastName"), None)
        .await;
    assert_eq!(b["done"], false);
    let next = b["nextRecordsUrl"]
        .as_str()
        .unwrap()
        .trim_start_matches("/services/data/v61.0")
        .to_string();
    let (_, _, b2) = api.call(M::GET, &next, None).await;
    assert_eq!(
        (b2["done"].as_bool(), b2["records"].as_array().map(Vec::len)),
        (Some(true), Some(1))
    );
    assert!(b2.get("nextRecordsUrl").is_none());
    let (s, _, b) = api
        .call(M::GET, &q("SELECT Id FROM Meeting__c"), None)
        .await;
    assert_eq!((s, b[0]["errorCode"].as_str()), (400, Some("INVALID_TYPE")));
}

#[tokio::test]
async fn bulk_jobs_need_upload_complete() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let (_, _, job) = api
        .call(
            M::POST,
            "/jobs/ingest",
            Some(json!({"object": "Account", "operation": "insert"})),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750"));
    assert_eq!(job["state"], "Open");
    let resp = api
        .http
        .put(format!("{}/jobs/ingest/{id}/batches", api.base))
        .bearer_auth(&api.token)
        .header("Content-Type", "text/csv")
        .body("Name,NumberOfEmployees\nAcme,10\n,5\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    env.clock.advance(std::time::Duration::from_secs(60));
    let (_, _, info) = api.call(M::GET, &format!("/jobs/ingest/{id}"), None).await;
    assert_eq!(info["state"], "Open", "nothing runs before UploadComplete");
    api.call(
        M::PATCH,
        &format!("/jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    let (_, _, info) = api.call(M::GET, &format!("/jobs/ingest/{id}"), None).await;
    assert_eq!(info["state"], "InProgress");
    env.clock.advance(std::time::Duration::from_secs(60));
    let (_, _, info) = api.call(M::GET, &format!("/jobs/ingest/{id}"), None).await;
    assert_eq!(
        (info["state"].as_str(), info["numberRecordsFailed"].as_u64()),
        (Some("JobComplete"), Some(1))
    );
    let ok = api
        .http
        .get(format!("{}/jobs/ingest/{id}/successfulResults/", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ok.starts_with("sf__Id,sf__Created,Name,NumberOfEmployees\n001"),
        "{ok}"
    );
    let failed = api
        .http
        .get(format!("{}/jobs/ingest/{id}/failedResults/", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(failed.contains("REQUIRED_FIELD_MISSING"), "{failed}");
    assert_eq!(env.sim.records("Account")[0]["NumberOfEmployees"], 10);
}

#[tokio::test]
async fn record_ids_have_prefixes_and_checksums() {
    use ferry::sim::salesforce::ids;
    let env = Env::start(|_| {}).await;
    let ids_ = env
        .sim
        .seed("Lead", vec![json!({"LastName": "A", "Company": "C"})]);
    let id = &ids_[0];
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("00Q"));
    assert_eq!(ids::to18(&id[..15]), *id);
    assert_eq!(ids::to18("001D000000IqhSL"), "001D000000IqhSLIAZ");
}

#[tokio::test]
async fn an_event_relation_is_refused_twice_whether_seeded_or_created() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    let contacts = env.sim.seed(
        "Contact",
        vec![json!({"LastName": "A"}), json!({"LastName": "B"})],
    );
    let event = env.sim.seed(
        "Event",
        vec![json!({
            "Subject": "Call",
            "StartDateTime": "2026-03-01T10:00:00.000+0000",
            "EndDateTime": "2026-03-01T10:30:00.000+0000",
        })],
    );
    // One relation seeded (not through the API), one created through it.
    env.sim.seed(
        "EventRelation",
        vec![json!({"EventId": event[0], "RelationId": contacts[0]})],
    );
    let second = json!({"EventId": event[0], "RelationId": contacts[1]});
    let (s, _, _) = api
        .call(M::POST, "/sobjects/EventRelation", Some(second.clone()))
        .await;
    assert_eq!(s, 201);
    for (rel, as_15) in [(&contacts[0], false), (&contacts[1], true)] {
        // Ids match by their first 15 characters too.
        let id = if as_15 { &rel[..15] } else { rel.as_str() };
        let (s, _, b) = api
            .call(
                M::POST,
                "/sobjects/EventRelation",
                Some(json!({"EventId": event[0], "RelationId": id})),
            )
            .await;
        assert_eq!(
            (s, b[0]["errorCode"].as_str()),
            (400, Some("DUPLICATE_VALUE")),
            "{b}"
        );
    }
    assert_eq!(env.sim.records("EventRelation").len(), 2);
}

/// Salesforce's request limits: URI plus headers at most 16,384 bytes (414 for the URI, 431
/// for the headers), SOQL at most 100,000 characters, Composite at most 25 subrequests of
/// which 5 queries or Collections, no Accept/Authorization/Content-Type on subrequests.
#[tokio::test]
async fn request_size_soql_length_and_composite_limits() {
    let env = Env::start(|_| {}).await;
    let api = Api::login(&env).await;
    env.sim.seed(
        "Contact",
        vec![json!({"LastName": "A", "Email": "a@x.example"})],
    );
    let in_list = |n: usize, width: usize| {
        (0..n)
            .map(|i| format!("'{i:0width$}@x.example'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    // A GET whose URI is just over the limit: 414, in the REST error envelope.
    let q = format!(
        "SELECT Id FROM Contact WHERE Email IN ({})",
        in_list(700, 12)
    );
    let path = format!("/query?q={}", q.replace(' ', "+"));
    let uri_len = format!("/services/data/v{}{path}", env.sim.api_version).len();
    assert!(uri_len > 16_384, "{uri_len}");
    let before = env.sim.calls();
    let (status, _, body) = api.call(M::GET, &path, None).await;
    assert_eq!(status, 414);
    assert_eq!(body[0]["errorCode"], "URI_TOO_LONG");
    assert_eq!(env.sim.oversize_refused(), 1);
    assert_eq!(
        env.sim.calls(),
        before,
        "a refused request is not an API call"
    );
    assert!(env.sim.longest_request().uri >= uri_len);
    // A URI under the limit whose headers take it over: 431.
    let q = format!(
        "SELECT Id FROM Contact WHERE Email IN ({})",
        in_list(400, 12)
    );
    let path = format!("/query?q={}", q.replace(' ', "+"));
    let resp = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("X-Padding", "p".repeat(16_384 - path.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 431);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "REQUEST_HEADER_FIELDS_TOO_LARGE");
    // The same query without the padding is answered.
    let (status, _, body) = api.call(M::GET, &path, None).await;
    assert_eq!(status, 200, "{body}");

    let sub = |url: String, r: &str| json!({"method": "GET", "url": url, "referenceId": r});
    let qurl = |q: &str| {
        format!(
            "/services/data/v{}/query?q={}",
            env.sim.api_version,
            q.replace(' ', "+")
        )
    };
    // A SOQL statement over 100,000 characters (in a Composite body): MALFORMED_QUERY.
    let long = format!(
        "SELECT Id FROM Contact WHERE Email IN ({})",
        in_list(5_000, 12)
    );
    assert!(long.len() > 100_000);
    let (status, _, body) = api
        .call(
            M::POST,
            "/composite",
            Some(json!({"compositeRequest": [sub(qurl(&long), "big")]})),
        )
        .await;
    // The subrequest url is over 16,384 bytes too: the sim's stricter reading refuses the
    // whole composite before it runs the query.
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "URI_TOO_LONG");
    assert!(env.sim.longest_subrequest_url() > 100_000);
    // With subrequest urls unbounded (the lenient reading), 100,001 characters of SOQL
    // reach the query handler and get MALFORMED_QUERY; 100,000 pass.
    env.sim.set_faults(|f| f.lenient_subrequest_urls = true);
    for (n, want) in [(100_001, 400), (100_000, 200)] {
        let q = soql_of_len(n);
        assert_eq!(q.len(), n);
        let (status, _, body) = api
            .call(
                M::POST,
                "/composite",
                Some(json!({"compositeRequest": [sub(qurl(&q), "q")]})),
            )
            .await;
        assert_eq!(status, 200);
        let r = &body["compositeResponse"][0];
        assert_eq!(r["httpStatusCode"], want, "{} chars", q.len());
        if want == 400 {
            assert_eq!(r["body"][0]["errorCode"], "MALFORMED_QUERY");
        }
    }
    env.sim.set_faults(|f| f.lenient_subrequest_urls = false);

    // Six query subrequests: 400; five: answered.
    let q = "SELECT Id FROM Contact";
    let six: Vec<Value> = (0..6).map(|i| sub(qurl(q), &format!("r{i}"))).collect();
    let (status, _, body) = api
        .call(
            M::POST,
            "/composite",
            Some(json!({"compositeRequest": six})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_BATCH_REQUEST");
    let five: Vec<Value> = (0..5).map(|i| sub(qurl(q), &format!("r{i}"))).collect();
    let before = env.sim.calls();
    let (status, _, body) = api
        .call(
            M::POST,
            "/composite",
            Some(json!({"compositeRequest": five})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["compositeResponse"].as_array().unwrap().len(), 5);
    assert_eq!(body["compositeResponse"][4]["httpStatusCode"], 200);
    let after = env.sim.calls();
    assert_eq!(after.api_total() - before.api_total(), 1, "one API call");
    // 26 subrequests: 400.
    let many: Vec<Value> = (0..26)
        .map(|i| {
            sub(
                format!("/services/data/v{}/limits", env.sim.api_version),
                &format!("r{i}"),
            )
        })
        .collect();
    let (status, _, _) = api
        .call(
            M::POST,
            "/composite",
            Some(json!({"compositeRequest": many})),
        )
        .await;
    assert_eq!(status, 400);
    // A subrequest setting Authorization (any case): 400.
    for h in ["Authorization", "accept", "Content-Type"] {
        let mut s = sub(qurl(q), "r0");
        s["httpHeaders"] = json!({h: "x"});
        let (status, _, body) = api
            .call(
                M::POST,
                "/composite",
                Some(json!({"compositeRequest": [s]})),
            )
            .await;
        assert_eq!(status, 400, "{h}");
        assert_eq!(body[0]["errorCode"], "INVALID_BATCH_REQUEST");
    }
    // Other headers are allowed.
    let mut s = sub(qurl(q), "r0");
    s["httpHeaders"] = json!({"Sforce-Query-Options": "batchSize=200"});
    let (status, _, body) = api
        .call(
            M::POST,
            "/composite",
            Some(json!({"compositeRequest": [s]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["compositeResponse"][0]["httpStatusCode"], 200);
}

/// A SOQL statement of exactly `n` characters whose WHERE strings stay under Salesforce's
/// 4,000-character limit on one string (the statement's own limit is what is under test).
fn soql_of_len(n: usize) -> String {
    let mut q = String::from("SELECT Id FROM Contact WHERE LastName IN (");
    let mut first = true;
    // Room left before the closing parenthesis.
    while n - q.len() - 1 > 1003 {
        if !first {
            q.push(',');
        }
        q.push('\'');
        q.push_str(&"x".repeat(998));
        q.push('\'');
        first = false;
    }
    let sep = usize::from(!first);
    let k = n - q.len() - 1 - sep - 2;
    if !first {
        q.push(',');
    }
    q.push('\'');
    q.push_str(&"x".repeat(k));
    q.push('\'');
    q.push(')');
    q
}
