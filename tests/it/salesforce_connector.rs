//! The Salesforce connector against the sim: auth, session renewal, lookups, writes,
//! retries, budget and describe checks.

use crate::support::salesforce as salesforce_common;

use ferry::clock::Clock;
use ferry::connectors::salesforce::{
    BudgetScope, FieldAction, FieldProblemKind, MemoryTokenStore, SalesforceConnector, SfError,
    TokenStore, WriteOp, token_key,
};
use salesforce_common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

fn event(i: usize) -> serde_json::Map<String, Value> {
    obj(json!({
        "Subject": format!("Zoom meeting {i}"),
        "ActivityDateTime": "2026-03-01T15:00:00Z",
        "EndDateTime": "2026-03-01T15:45:00+00:00",
        "Zoom_Meeting_UUID__c": format!("uuid-{i}=="),
    }))
}

#[tokio::test]
async fn jwt_login_uses_the_instance_url() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    assert_eq!(sf.instance_url().await, env.sim.instance_url);
    assert_ne!(env.sim.instance_url, env.sim.login_url);
    let rows = sf.query_all("SELECT Id, Username FROM User").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Username"], json!(env.sim.username));
    assert_eq!(env.sim.calls().auth, 1);
}

#[tokio::test]
async fn jwt_signed_with_the_wrong_key_is_rejected() {
    let env = Env::start(|_| {}).await;
    let mut s = env.settings();
    s.auth = env.jwt_auth(WRONG_KEY);
    let err = SalesforceConnector::connect(s, env.http())
        .await
        .unwrap_err();
    assert!(matches!(err, SfError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("JWT"), "{msg}");
    assert!(msg.contains("certificate"), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
}

#[tokio::test]
async fn jwt_for_an_unapproved_user_says_so() {
    let env = Env::start(|_| {}).await;
    let mut s = env.settings();
    s.auth = ferry::connectors::salesforce::SfAuth::JwtBearer {
        login_url: env.sim.login_url.clone(),
        client_id: env.sim.client_id.clone(),
        username: "someone.else@ferry.example".into(),
        private_key_pem: PRIVATE_KEY.into(),
    };
    let err = SalesforceConnector::connect(s, env.http())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pre-authorize"), "{err}");
}

#[tokio::test]
async fn settings_debug_hides_secrets() {
    let env = Env::start(|_| {}).await;
    let s = env.settings();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
    let r = format!("{:?}", env.refresh_auth());
    assert!(
        !r.contains(&env.sim.refresh_token) && !r.contains(&env.sim.client_secret),
        "{r}"
    );
}

#[tokio::test]
async fn expired_session_reauthenticates_once_and_retries() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    env.sim.expire_sessions();
    let rows = sf.query_all("SELECT Id FROM User").await.unwrap();
    assert_eq!(rows.len(), 1);
    let calls = env.sim.calls();
    assert_eq!(calls.auth, 2, "one login and one re-authentication");
    assert_eq!(calls.unauthorized, 1);
    assert_eq!(calls.query, 1);
}

#[tokio::test]
async fn session_ttl_on_the_virtual_clock_triggers_reauth() {
    let env =
        Env::start(|o| o.faults.session_ttl = Some(std::time::Duration::from_secs(7200))).await;
    let sf = env.connect().await;
    env.clock.advance(std::time::Duration::from_secs(3 * 3600));
    sf.describe("Contact").await.unwrap();
    assert_eq!(env.sim.calls().auth, 2);
}

#[tokio::test]
async fn revoked_refresh_token_asks_to_reauthorize() {
    let env = Env::start(|o| o.faults.revoke_refresh = true).await;
    let mut s = env.settings();
    s.auth = env.refresh_auth();
    let err = SalesforceConnector::connect(s, env.http())
        .await
        .unwrap_err();
    assert!(matches!(err, SfError::Reauthorize { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("re-authorize ferry with `ferry auth salesforce`"),
        "{msg}"
    );
    assert!(msg.contains("expired access/refresh token"), "{msg}");
    assert!(!msg.contains(&env.sim.refresh_token), "{msg}");
}

#[tokio::test]
async fn refresh_revoked_mid_run_stops_with_reauthorize() {
    let env = Env::start(|_| {}).await;
    let mut s = env.settings();
    s.auth = env.refresh_auth();
    let sf = env.connect_with(s).await;
    env.sim.set_faults(|f| f.revoke_refresh = true);
    env.sim.expire_sessions();
    let err = sf.query_all("SELECT Id FROM User").await.unwrap_err();
    assert!(matches!(err, SfError::Reauthorize { .. }), "{err:?}");
}

#[tokio::test]
async fn rotated_refresh_token_is_stored() {
    let env = Env::start(|o| o.faults.rotate_refresh = true).await;
    let store = Arc::new(MemoryTokenStore::default());
    let mut s = env.settings();
    s.auth = env.refresh_auth();
    let dyn_store: Arc<dyn TokenStore> = store.clone();
    let sf = SalesforceConnector::connect_with_store(s, env.http(), Some(dyn_store))
        .await
        .unwrap();
    let key = token_key(&env.sim.login_url, &env.sim.client_id);
    let first = store.get(&key).await.unwrap().unwrap();
    assert_ne!(first.expose(), env.sim.refresh_token);
    // The original token is retired; re-authentication must use the stored one.
    env.sim.expire_sessions();
    sf.query_all("SELECT Id FROM User").await.unwrap();
    let second = store.get(&key).await.unwrap().unwrap();
    assert_ne!(first, second);
}

#[tokio::test]
async fn client_credentials_need_the_my_domain_host() {
    let env = Env::start(|_| {}).await;
    let mut s = env.settings();
    s.auth = ferry::connectors::salesforce::SfAuth::ClientCredentials {
        login_url: env.sim.login_url.clone(),
        client_id: env.sim.client_id.clone(),
        client_secret: env.sim.client_secret.as_str().into(),
    };
    let err = SalesforceConnector::connect(s.clone(), env.http())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not supported on this domain"),
        "{err}"
    );
    s.auth = ferry::connectors::salesforce::SfAuth::ClientCredentials {
        login_url: env.sim.instance_url.clone(),
        client_id: env.sim.client_id.clone(),
        client_secret: env.sim.client_secret.as_str().into(),
    };
    let sf = env.connect_with(s).await;
    assert_eq!(sf.query_all("SELECT Id FROM User").await.unwrap().len(), 1);
}

#[tokio::test]
async fn writing_1000_events_costs_one_call_per_200() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let records: Vec<_> = (0..1000).map(event).collect();
    let results = sf.write("Event", WriteOp::Insert, records).await.unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| {
        r.is_success()
            && r.created
            && r.id
                .as_deref()
                .is_some_and(|id| id.starts_with("00U") && id.len() == 18)
    }));
    assert_eq!(env.sim.calls().collections, 5);
    let stored = env.sim.records("Event");
    assert_eq!(stored.len(), 1000);
    assert_eq!(stored[0]["DurationInMinutes"], json!(45));
    assert_eq!(
        stored[0]["EndDateTime"],
        json!("2026-03-01T15:45:00.000+0000")
    );
    assert_eq!(sf.calls_made(), 5);
}

#[tokio::test]
async fn a_rejected_record_keeps_its_error_and_the_rest_are_written() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let mut records: Vec<_> = (0..10).map(event).collect();
    records[3].insert("Subject".into(), json!("x".repeat(300)));
    records[6].remove("EndDateTime");
    let results = sf.write("Event", WriteOp::Insert, records).await.unwrap();
    assert_eq!(results[3].errors[0].status_code, "STRING_TOO_LONG");
    assert_eq!(results[3].errors[0].fields, vec!["Subject"]);
    assert!(results[3].id.is_none());
    assert_eq!(results[6].errors[0].status_code, "REQUIRED_FIELD_MISSING");
    assert_eq!(results.iter().filter(|r| r.is_success()).count(), 8);
    assert_eq!(env.sim.records("Event").len(), 8);
}

#[tokio::test]
async fn unknown_field_fails_the_whole_write_with_one_error() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let mut records: Vec<_> = (0..3).map(event).collect();
    records[1].insert("Zoom_Bogus__c".into(), json!("x"));
    let err = sf
        .write("Event", WriteOp::Insert, records)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("INVALID_FIELD"));
    assert!(err.to_string().contains("Zoom_Bogus__c"), "{err}");
    assert!(env.sim.records("Event").is_empty());
}

#[tokio::test]
async fn unable_to_lock_row_is_retried_for_just_those_records() {
    let env = Env::start(|o| {
        o.faults.lock_row_every = 7;
        o.faults.lock_row_max = 40;
    })
    .await;
    let sf = env.connect().await;
    let start = env.clock.now();
    let records: Vec<_> = (0..400).map(event).collect();
    let results = sf.write("Event", WriteOp::Insert, records).await.unwrap();
    assert!(
        results.iter().all(|r| r.is_success()),
        "{:?}",
        results.iter().find(|r| !r.is_success())
    );
    assert!(env.sim.lock_failures() > 0);
    assert_eq!(env.sim.records("Event").len(), 400);
    let calls = env.sim.calls().collections;
    assert!(calls > 2 && calls < 20, "{calls}");
    assert!(
        env.clock.now() > start,
        "backoff waited on the virtual clock"
    );
}

#[tokio::test]
async fn persistent_lock_errors_end_up_on_the_record() {
    let env = Env::start(|o| {
        o.faults.lock_row_every = 1;
        o.faults.lock_row_max = 1000;
    })
    .await;
    let mut s = env.settings();
    s.lock_retries = 2;
    let sf = env.connect_with(s).await;
    let results = sf
        .write("Event", WriteOp::Insert, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(results[0].errors[0].status_code, "UNABLE_TO_LOCK_ROW");
    assert_eq!(env.sim.calls().collections, 3);
}

#[tokio::test]
async fn upsert_reports_created_then_updated() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let op = WriteOp::Upsert {
        external_id_field: "Zoom_Meeting_UUID__c".into(),
    };
    let first = sf
        .write("Event", op.clone(), vec![event(1), event(2)])
        .await
        .unwrap();
    assert!(first.iter().all(|r| r.created && r.is_success()));
    let mut again = vec![event(1), event(2)];
    again[0].insert("Subject".into(), json!("Renamed"));
    let second = sf.write("Event", op, again).await.unwrap();
    assert!(second.iter().all(|r| !r.created && r.is_success()));
    assert_eq!(first[0].id, second[0].id);
    let stored = env.sim.records("Event");
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().any(|r| r["Subject"] == json!("Renamed")));
}

#[tokio::test]
async fn lead_activities_take_no_what_id_and_duplicate_relations_count_as_written() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let lead = env.sim.seed(
        "Lead",
        vec![json!({"LastName": "Lee", "Company": "Acme", "Email": "lee@acme.example"})],
    );
    let contact = env.sim.seed(
        "Contact",
        vec![json!({"LastName": "Cho", "Email": "cho@acme.example"})],
    );
    let account = env.sim.seed("Account", vec![json!({"Name": "Acme"})]);
    let mut with_lead = event(1);
    with_lead.insert("WhoId".into(), json!(lead[0]));
    with_lead.insert("WhatId".into(), json!(account[0]));
    let mut with_contact = event(2);
    with_contact.insert("WhoId".into(), json!(contact[0]));
    with_contact.insert("WhatId".into(), json!(account[0]));
    let r = sf
        .write("Event", WriteOp::Insert, vec![with_lead, with_contact])
        .await
        .unwrap();
    assert_eq!(r[0].errors[0].status_code, "FIELD_INTEGRITY_EXCEPTION");
    assert!(r[1].is_success());
    let event_id = r[1].id.clone().unwrap();
    let rel = |who: &str| obj(json!({"EventId": event_id, "RelationId": who}));
    let first = sf
        .write("EventRelation", WriteOp::Insert, vec![rel(&lead[0])])
        .await
        .unwrap();
    assert!(first[0].is_success() && !first[0].already_existed);
    let second = sf
        .write(
            "EventRelation",
            WriteOp::Insert,
            vec![rel(&lead[0]), rel(&contact[0])],
        )
        .await
        .unwrap();
    assert!(second[0].is_success() && second[0].already_existed);
    assert!(second[1].is_success() && !second[1].already_existed);
    assert_eq!(env.sim.records("EventRelation").len(), 2);
}

#[tokio::test]
async fn platform_events_publish() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let r = sf
        .write(
            "Zoom_Meeting_Ended__e",
            WriteOp::Publish,
            vec![obj(json!({"Meeting_UUID__c": "abc==", "Topic__c": "Weekly", "Ended_At__c": "2026-03-01T16:00:00Z"}))],
        )
        .await
        .unwrap();
    assert!(r[0].is_success(), "{r:?}");
    let events = env.sim.published_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["Topic__c"], json!("Weekly"));
}

#[tokio::test]
async fn bulk_ingest_above_the_threshold_maps_results_back() {
    let env = Env::start(|_| {}).await;
    let mut s = env.settings();
    s.bulk_threshold = 50;
    let sf = env.connect_with(s).await;
    let mut records: Vec<_> = (0..120)
        .map(|i| obj(json!({"Subject": format!("Call {i}"), "Zoom_Call_Id__c": format!("call-{i}"),
                             "Zoom_Action_Item_Key__c": format!("key-{i}"), "Description": "line one\nline, \"two\"",
                             "ActivityDate": "2026-03-01", "CallDurationInSeconds": i})))
        .collect();
    records[17].insert("Status".into(), json!("Bogus"));
    records[90].insert("Subject".into(), json!("y".repeat(256)));
    let op = WriteOp::Upsert {
        external_id_field: "Zoom_Action_Item_Key__c".into(),
    };
    let results = sf.write("Task", op.clone(), records.clone()).await.unwrap();
    assert_eq!(results.len(), 120);
    assert_eq!(
        results[17].errors[0].status_code,
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    assert_eq!(results[90].errors[0].status_code, "STRING_TOO_LONG");
    assert!(
        results
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 17 && *i != 90)
            .all(|(_, r)| r.is_success() && r.created)
    );
    let stored = env.sim.records("Task");
    assert_eq!(stored.len(), 118);
    let t5 = stored
        .iter()
        .find(|t| t["Zoom_Action_Item_Key__c"] == json!("key-5"))
        .unwrap();
    assert_eq!(t5["Description"], json!("line one\nline, \"two\""));
    assert_eq!(t5["CallDurationInSeconds"], json!(5));
    assert_eq!(results[5].id.as_deref(), t5["Id"].as_str());
    assert_eq!(env.sim.calls().collections, 0);
    assert!(env.sim.calls().bulk >= 6);
    // Again: every record now updates.
    let again = sf.write("Task", op, records).await.unwrap();
    assert!(again[5].is_success() && !again[5].created);
}

#[tokio::test]
async fn bulk_job_failure_is_one_error() {
    let env = Env::start(|o| {
        o.faults.bulk_fail_job = Some("InvalidBatch : Failed to process query".into())
    })
    .await;
    let mut s = env.settings();
    s.bulk_threshold = 5;
    let sf = env.connect_with(s).await;
    let err = sf
        .write("Event", WriteOp::Insert, (0..6).map(event).collect())
        .await
        .unwrap_err();
    assert!(matches!(err, SfError::Bulk { .. }), "{err:?}");
    assert!(err.to_string().contains("InvalidBatch"));
}

#[tokio::test]
async fn ferry_budget_stops_before_spending_more() {
    let env = Env::start(|_| {}).await;
    let mut s = env.settings();
    s.daily_budget = Some(3);
    let sf = env.connect_with(s).await;
    for _ in 0..3 {
        sf.query_all("SELECT Id FROM User").await.unwrap();
    }
    let err = sf.query_all("SELECT Id FROM User").await.unwrap_err();
    match &err {
        SfError::BudgetExhausted { scope, used, limit } => {
            assert_eq!((*scope, *used, *limit), (BudgetScope::Ferry, 3, 3));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("daily_budget"));
    assert_eq!(env.sim.api_usage(), 3);
    let b = sf.budget();
    assert_eq!(
        (b.used_by_ferry, b.org_used, b.org_max, b.daily_budget),
        (3, Some(3), Some(100_000), Some(3))
    );
    // A day later the window has room again.
    env.clock
        .advance(std::time::Duration::from_secs(24 * 3600 + 1));
    assert_eq!(sf.calls_made(), 0);
    sf.query_all("SELECT Id FROM User").await.unwrap();
}

#[tokio::test]
async fn org_allowance_from_the_limit_header_stops_ferry() {
    let env = Env::start(|o| o.daily_limit = 4).await;
    env.sim.seed("Contact", vec![json!({"LastName": "A"})]);
    let sf = env.connect().await;
    for _ in 0..4 {
        sf.query_all("SELECT Id FROM Contact").await.unwrap();
    }
    let err = sf.query_all("SELECT Id FROM Contact").await.unwrap_err();
    assert!(
        matches!(
            err,
            SfError::BudgetExhausted {
                scope: BudgetScope::Org,
                used: 4,
                limit: 4
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        env.sim.calls().limit_refused,
        0,
        "ferry did not spend a refused call"
    );
}

#[tokio::test]
async fn request_limit_exceeded_is_an_org_wide_error() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    sf.query_all("SELECT Id FROM User").await.unwrap();
    // Other integrations spent the rest of the allowance since ferry's last call.
    env.sim.set_daily_limit(1);
    let err = sf
        .write("Event", WriteOp::Insert, vec![event(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SfError::RequestLimitExceeded { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("TotalRequests Limit exceeded."));
}

#[tokio::test]
async fn describe_checks_name_missing_and_read_only_fields() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let problems = sf
        .check_fields(
            "Event",
            FieldAction::Update,
            &["Subject", "Zoom_Meting_UUID__c", "CreatedDate"],
            None,
        )
        .await;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].field, "Zoom_Meting_UUID__c");
    assert_eq!(
        problems[0].kind,
        FieldProblemKind::UnknownField {
            suggestion: Some("Zoom_Meeting_UUID__c".into())
        }
    );
    assert_eq!(problems[1].field, "CreatedDate");
    assert_eq!(problems[1].kind, FieldProblemKind::NotUpdateable);
    assert!(problems[1].message.contains("not updateable"));

    let upsert = sf
        .check_fields("Contact", FieldAction::Upsert, &["LastName"], Some("Email"))
        .await;
    assert_eq!(upsert.len(), 1, "{upsert:?}");
    assert_eq!(upsert[0].kind, FieldProblemKind::NotExternalId);
    assert!(
        sf.check_fields(
            "Event",
            FieldAction::Upsert,
            &["Subject"],
            Some("Zoom_Meeting_UUID__c")
        )
        .await
        .is_empty()
    );
    let insert = sf
        .check_fields(
            "CampaignMember",
            FieldAction::Update,
            &["CampaignId", "Status"],
            None,
        )
        .await;
    assert_eq!(insert[0].kind, FieldProblemKind::NotUpdateable);
    let missing = sf
        .check_fields("Meeting__c", FieldAction::Insert, &["Name"], None)
        .await;
    assert_eq!(missing[0].kind, FieldProblemKind::UnknownObject);

    let d = sf.describe("event").await.unwrap();
    let f = d.field("zoom_meeting_uuid__c").unwrap();
    assert!(f.external_id && f.id_lookup && f.createable && f.updateable);
    let who = d.field("WhoId").unwrap();
    assert_eq!(who.reference_to, vec!["Contact", "Lead"]);
    // Cached: the second describe costs nothing.
    let before = env.sim.calls().describe;
    sf.describe("Event").await.unwrap();
    assert_eq!(env.sim.calls().describe, before);
}

#[tokio::test]
async fn query_all_follows_next_records_url() {
    let env = Env::start(|o| o.query_page_size = 50).await;
    let rows: Vec<Value> = (0..120)
        .map(|i| json!({"LastName": format!("P{i:03}")}))
        .collect();
    env.sim.seed("Contact", rows);
    let sf = env.connect().await;
    let got = sf
        .query_all("SELECT Id, LastName FROM Contact ORDER BY LastName")
        .await
        .unwrap();
    assert_eq!(got.len(), 120);
    assert_eq!(got[119]["LastName"], json!("P119"));
    assert!(got[0].get("attributes").is_none());
    assert_eq!(env.sim.calls().query, 3);
}

#[tokio::test]
async fn malformed_soql_is_an_error() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let err = sf
        .query_all("SELECT Id FROM Contact WHERE")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("MALFORMED_QUERY"));
    let err = sf.query_all("SELECT Nope FROM Contact").await.unwrap_err();
    assert_eq!(err.code(), Some("INVALID_FIELD"));
}

#[tokio::test]
async fn authorization_code_flow_stores_the_refresh_token() {
    let env = Env::start(|_| {}).await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::default());
    let req = ferry::connectors::salesforce::AuthorizeRequest {
        login_url: env.sim.login_url.clone(),
        client_id: env.sim.client_id.clone(),
        client_secret: Some(env.sim.client_secret.as_str().into()),
        port: 0,
        scope: "api refresh_token".into(),
    };
    // Play the browser: follow the authorize redirect to the local callback.
    let tokens = ferry::connectors::salesforce::authorize_interactively(
        &env.http(),
        &req,
        Some(&store),
        |url| {
            let url = url.to_string();
            tokio::spawn(async move {
                let resp = reqwest::get(&url).await.unwrap();
                assert!(resp.status().is_success());
            });
        },
    )
    .await
    .unwrap();
    assert_eq!(tokens.instance_url, env.sim.instance_url);
    let saved = store
        .get(&token_key(&env.sim.login_url, &env.sim.client_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(saved.expose()), tokens.refresh_token.as_deref());
    // The new refresh token works for unattended runs.
    let mut s = env.settings();
    s.auth = ferry::connectors::salesforce::SfAuth::RefreshToken {
        login_url: env.sim.login_url.clone(),
        client_id: env.sim.client_id.clone(),
        client_secret: None,
        refresh_token: saved,
    };
    let sf = env.connect_with(s).await;
    assert_eq!(sf.query_all("SELECT Id FROM User").await.unwrap().len(), 1);
}

#[tokio::test]
async fn match_rule_with_no_inputs_costs_nothing() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let r = sf.match_rule("Contact", &["Id".into()], &[]).await.unwrap();
    assert!(r.is_empty());
    let empty: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    let r = sf
        .match_rule("Contact", &["Id".into()], &empty)
        .await
        .unwrap();
    assert_eq!(r, vec![Vec::<Value>::new()]);
    assert_eq!(env.sim.calls().query, 0);
}

#[tokio::test]
async fn server_errors_on_reads_are_retried_by_the_http_layer() {
    let env = Env::start(|o| {
        o.faults.http_5xx_next = 2;
        o.faults.latency = Some(std::time::Duration::from_millis(300));
    })
    .await;
    let sf = env.connect().await;
    let start = env.clock.now();
    let rows = sf.query_all("SELECT Id FROM User").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        env.sim.calls().query,
        1,
        "the two 503s did not count as answered queries"
    );
    assert!(
        env.clock.now() - start >= chrono::Duration::milliseconds(900),
        "latency and backoff ran on the virtual clock"
    );
}

#[tokio::test]
async fn updates_carry_ids_and_report_not_created() {
    let env = Env::start(|_| {}).await;
    let opp = env.sim.seed(
        "Opportunity",
        vec![json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2026-06-30"})],
    );
    let sf = env.connect().await;
    let rec = obj(
        json!({"Id": opp[0], "Last_Zoom_Meeting__c": "2026-03-01T15:00:00+0000",
                         "Zoom_Summary__c": "Discussed pricing"}),
    );
    let missing = obj(json!({"Zoom_Summary__c": "no id"}));
    let r = sf
        .write("Opportunity", WriteOp::Update, vec![rec, missing])
        .await
        .unwrap();
    assert!(r[0].is_success() && !r[0].created);
    assert_eq!(r[0].id.as_deref(), Some(opp[0].as_str()));
    assert!(!r[1].is_success());
    let stored = &env.sim.records("Opportunity")[0];
    assert_eq!(
        stored["Last_Zoom_Meeting__c"],
        json!("2026-03-01T15:00:00.000+0000")
    );
    assert_eq!(stored["Zoom_Summary__c"], json!("Discussed pricing"));
}

#[tokio::test]
async fn an_upsert_that_loses_a_create_race_is_retried_and_updates() {
    let env = Env::start(|o| o.faults.duplicate_race = true).await;
    let sf = env.connect().await;
    let op = WriteOp::Upsert {
        external_id_field: "Zoom_Meeting_UUID__c".into(),
    };
    let r = sf
        .write("Event", op, vec![event(1), event(2)])
        .await
        .unwrap();
    assert!(r.iter().all(|x| x.is_success() && x.created), "{r:?}");
    assert_eq!(env.sim.calls().collections, 2);
    assert_eq!(env.sim.records("Event").len(), 2);
}

#[tokio::test]
async fn validation_rule_failures_stay_on_their_record() {
    let env = Env::start(|o| {
        o.faults.validation_rule = Some(("Event".into(), "Subject".into(), "CONFIDENTIAL".into()))
    })
    .await;
    let sf = env.connect().await;
    let mut records = vec![event(1), event(2)];
    records[1].insert("Subject".into(), json!("CONFIDENTIAL board meeting"));
    let r = sf.write("Event", WriteOp::Insert, records).await.unwrap();
    assert!(r[0].is_success());
    assert_eq!(
        r[1].errors[0].status_code,
        "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    );
    assert_eq!(
        env.sim.calls().collections,
        1,
        "validation errors are not retried"
    );
}

#[tokio::test]
async fn describe_covers_the_objects_ferry_writes() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let expect: &[(&str, &str, &[&str])] = &[
        (
            "Event",
            "00U",
            &[
                "Zoom_Meeting_UUID__c",
                "Zoom_Recording_URL__c",
                "ActivityDateTime",
                "EndDateTime",
                "WhoId",
                "WhatId",
            ],
        ),
        (
            "Task",
            "00T",
            &[
                "Zoom_Action_Item_Key__c",
                "Zoom_Call_Id__c",
                "CallDurationInSeconds",
                "ActivityDate",
                "Status",
            ],
        ),
        (
            "EventRelation",
            "0RE",
            &["EventId", "RelationId", "IsInvitee", "IsParent"],
        ),
        ("Contact", "003", &["Email", "AccountId"]),
        ("Lead", "00Q", &["Email", "Company", "IsConverted"]),
        ("Account", "001", &["Website_Domain__c", "Name"]),
        ("User", "005", &["Username", "Email"]),
        (
            "Opportunity",
            "006",
            &["Last_Zoom_Meeting__c", "Zoom_Summary__c", "StageName"],
        ),
        ("Campaign", "701", &["Name", "Status"]),
        (
            "CampaignMember",
            "00v",
            &[
                "Zoom_Registrant_Key__c",
                "CampaignId",
                "ContactId",
                "LeadId",
            ],
        ),
        (
            "Zoom_Meeting_Ended__e",
            "e00",
            &["Meeting_UUID__c", "Topic__c"],
        ),
    ];
    for (name, prefix, fields) in expect {
        let d = sf.describe(name).await.unwrap();
        assert_eq!(d.key_prefix.as_deref(), Some(*prefix), "{name}");
        for f in *fields {
            assert!(d.field(f).is_some(), "{name}.{f}");
        }
    }
    let cm = sf.describe("CampaignMember").await.unwrap();
    assert!(cm.field("Zoom_Registrant_Key__c").unwrap().external_id);
    let task = sf.describe("Task").await.unwrap();
    assert!(task.field("Zoom_Action_Item_Key__c").unwrap().external_id);
    let status = task.field("Status").unwrap();
    assert!(
        status.restricted_picklist
            && status
                .picklist_values
                .iter()
                .any(|p| p.value == "Completed")
    );
    let opp = sf.describe("Opportunity").await.unwrap();
    assert!(opp.field("StageName").unwrap().required_on_create());
    assert!(
        sf.describe("Zoom_Meeting_Ended__e")
            .await
            .unwrap()
            .is_platform_event()
    );
}
