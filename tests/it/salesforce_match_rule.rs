//! Batched lookups: resolving the participants of 1,000 meetings costs one SOQL query per
//! rule per batch, matches case-insensitively, and orders ambiguous matches newest first.

use crate::support::salesforce as salesforce_common;

use ferry::sim::salesforce::SimCalls;
use salesforce_common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

const CONTACTS: usize = 3000;
const LEADS: usize = 1000;
const DOMAINS: usize = 200;

fn contact_email(i: usize) -> String {
    format!("person{i}@company{}.example", i % DOMAINS)
}

fn lead_email(i: usize) -> String {
    format!("lead{i}@prospect{}.example", i % 50)
}

fn where1(field: &str, v: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([(field.to_string(), json!(v))])
}

/// The email of participant `k` of meeting `m`: a Contact, a Lead or nobody known.
fn participant(m: usize, k: usize) -> String {
    let n = (m * 8 + k) * 7 % 5000;
    if n < CONTACTS {
        contact_email(n)
    } else if n < CONTACTS + LEADS {
        lead_email(n - CONTACTS)
    } else {
        format!("guest{n}@gmail.com")
    }
}

#[tokio::test]
async fn participants_of_1000_meetings_cost_one_query_per_rule_per_batch() {
    let env = Env::start(|_| {}).await;
    // Stored with capitals; Zoom reports lower case. Salesforce's `=` ignores case.
    let contacts: Vec<Value> = (0..CONTACTS)
        .map(|i| json!({"LastName": format!("C{i}"), "Email": contact_email(i).replacen('p', "P", 1)}))
        .collect();
    let contact_ids = env.sim.seed("Contact", contacts);
    let leads: Vec<Value> = (0..LEADS)
        .map(
            |i| json!({"LastName": format!("L{i}"), "Company": "Prospect", "Email": lead_email(i)}),
        )
        .collect();
    let lead_ids = env.sim.seed("Lead", leads);
    let accounts: Vec<Value> = (0..DOMAINS)
        .map(|j| json!({"Name": format!("Company {j}"), "Website_Domain__c": format!("company{j}.example")}))
        .collect();
    let account_ids = env.sim.seed("Account", accounts);
    let contact_by_email: HashMap<String, &String> = (0..CONTACTS)
        .map(|i| (contact_email(i), &contact_ids[i]))
        .collect();
    let lead_by_email: HashMap<String, &String> =
        (0..LEADS).map(|i| (lead_email(i), &lead_ids[i])).collect();

    let sf = env.connect().await;
    sf.describe("Contact").await.unwrap();
    sf.describe("Lead").await.unwrap();
    sf.describe("Account").await.unwrap();
    let lookup_calls = |c: &SimCalls| c.query + c.composite;
    let before = lookup_calls(&env.sim.calls());
    let select = vec![
        "Id".to_string(),
        "Email".to_string(),
        "AccountId".to_string(),
    ];
    let mut batches = 0;
    let (mut contacts_found, mut leads_found, mut accounts_found) = (0, 0, 0);
    for batch in (0..1000).collect::<Vec<_>>().chunks(100) {
        batches += 1;
        let emails: Vec<String> = batch
            .iter()
            .flat_map(|&m| (0..8).map(move |k| participant(m, k)))
            .collect();
        let by_email: Vec<_> = emails.iter().map(|e| where1("Email", e)).collect();
        let hits = sf.match_rule("Contact", &select, &by_email).await.unwrap();
        assert_eq!(hits.len(), emails.len());
        for (e, h) in emails.iter().zip(&hits) {
            match contact_by_email.get(e) {
                Some(id) => {
                    assert_eq!(h.len(), 1, "{e}");
                    assert_eq!(h[0]["Id"].as_str(), Some(id.as_str()));
                    contacts_found += 1;
                }
                None => assert!(h.is_empty(), "{e} matched {h:?}"),
            }
        }
        let lead_hits = sf
            .match_rule("Lead", &["Id".to_string()], &by_email)
            .await
            .unwrap();
        for (e, h) in emails.iter().zip(&lead_hits) {
            if let Some(id) = lead_by_email.get(e) {
                assert_eq!(h[0]["Id"].as_str(), Some(id.as_str()));
                leads_found += 1;
            } else {
                assert!(h.is_empty());
            }
        }
        let domains: Vec<_> = emails
            .iter()
            .map(|e| where1("website_domain__c", e.split('@').nth(1).unwrap()))
            .collect();
        let account_hits = sf
            .match_rule("Account", &["Name".to_string()], &domains)
            .await
            .unwrap();
        for (d, h) in domains.iter().zip(&account_hits) {
            let domain = d["website_domain__c"].as_str().unwrap();
            if let Some(j) = domain
                .strip_prefix("company")
                .and_then(|r| r.strip_suffix(".example"))
            {
                let j: usize = j.parse().unwrap();
                assert_eq!(h[0]["Id"].as_str(), Some(account_ids[j].as_str()));
                accounts_found += 1;
            } else {
                assert!(h.is_empty());
            }
        }
    }
    assert_eq!(batches, 10);
    assert!(contacts_found > 3000 && leads_found > 1000 && accounts_found > 3000);
    // The split queries of a rule's batch travel in one Composite call (one API call).
    assert_eq!(
        lookup_calls(&env.sim.calls()) - before,
        3 * batches,
        "one call per rule per batch"
    );
    assert!(
        env.sim.calls().composite > 0,
        "the batches needed splitting"
    );
    assert!(env.sim.longest_request().total() <= 16_384);
    assert!(env.sim.longest_subrequest_url() <= 16_384);
    assert_eq!(env.sim.oversize_refused(), 0);
}

#[tokio::test]
async fn long_batches_split_by_soql_length_with_the_same_results() {
    let env = Env::start(|_| {}).await;
    let contacts: Vec<Value> = (0..500)
        .map(|i| json!({"LastName": format!("C{i}"), "Email": contact_email(i)}))
        .collect();
    env.sim.seed("Contact", contacts);
    let wheres: Vec<_> = (0..500)
        .map(|i| where1("Email", &contact_email(i * 3 % 600)))
        .collect();
    let sf = env.connect().await;
    let whole = sf
        .match_rule("Contact", &["Id".to_string()], &wheres)
        .await
        .unwrap();
    let c1 = env.sim.calls();
    assert_eq!(c1.query + c1.composite, 1);
    let mut s = env.settings();
    s.max_request_bytes = 2_000;
    let small = env.connect_with(s).await;
    let split = small
        .match_rule("Contact", &["Id".to_string()], &wheres)
        .await
        .unwrap();
    let c2 = env.sim.calls();
    // Queries of at most 2,000 bytes: several, five to a Composite call.
    assert_eq!(c2.query, c1.query, "split queries go through Composite");
    assert!(c2.composite > c1.composite, "split into several queries");
    assert!(
        env.sim.longest_subrequest_url() <= 2_000,
        "{}",
        env.sim.longest_subrequest_url()
    );
    assert_eq!(whole, split);
    assert_eq!(
        whole.iter().filter(|h| !h.is_empty()).count(),
        (0..500).filter(|i| i * 3 % 600 < 500).count()
    );
}

#[tokio::test]
async fn several_varying_fields_escaping_and_ambiguity() {
    let env = Env::start(|_| {}).await;
    let acc = env.sim.seed(
        "Account",
        vec![json!({"Name": "Acme"}), json!({"Name": "Other"})],
    );
    env.sim.seed(
        "Contact",
        vec![
            json!({"FirstName": "Ann", "LastName": "O'Brien", "AccountId": acc[0], "Email": "ann@acme.example",
                   "LastModifiedDate": "2026-01-01T00:00:00.000+0000"}),
            json!({"FirstName": "ANN", "LastName": "o'brien", "AccountId": acc[0], "Email": "ann2@acme.example",
                   "LastModifiedDate": "2026-02-01T00:00:00.000+0000"}),
            json!({"FirstName": "Bob", "LastName": "Back\\slash", "AccountId": acc[0]}),
            json!({"FirstName": "Ann", "LastName": "O'Brien", "AccountId": acc[1]}),
            json!({"FirstName": "Bob", "LastName": "O'Brien", "AccountId": acc[0]}),
        ],
    );
    let sf = env.connect().await;
    let w = |first: &str, last: &str| {
        BTreeMap::from([
            ("FirstName".to_string(), json!(first)),
            ("LastName".to_string(), json!(last)),
            ("AccountId".to_string(), json!(acc[0])),
        ])
    };
    let wheres = vec![
        w("ann", "O'BRIEN"),
        w("Bob", "Back\\slash"),
        w("Cy", "Nobody' OR Name != '"),
    ];
    let hits = sf
        .match_rule("Contact", &["Email".to_string()], &wheres)
        .await
        .unwrap();
    assert_eq!(env.sim.calls().query, 1);
    assert_eq!(hits[0].len(), 2, "{hits:?}");
    // Ambiguous: the most recently modified comes first.
    assert_eq!(hits[0][0]["Email"], json!("ann2@acme.example"));
    assert_eq!(hits[0][1]["Email"], json!("ann@acme.example"));
    assert!(hits[0][0].get("LastModifiedDate").is_some());
    assert_eq!(hits[1].len(), 1);
    assert_eq!(hits[1][0]["LastName"], json!("Back\\slash"));
    assert!(
        hits[2].is_empty(),
        "quotes in values cannot widen the query"
    );
}

#[tokio::test]
async fn unknown_where_field_is_an_error() {
    let env = Env::start(|_| {}).await;
    let sf = env.connect().await;
    let err = sf
        .match_rule(
            "Contact",
            &["Id".to_string()],
            &[where1("Emial", "x@y.example")],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("INVALID_FIELD"));
}

/// A backfill batch can hold thousands of distinct emails: the query is split before its
/// URL-encoded form grows past what a GET can carry, and every email still finds its record.
#[tokio::test]
async fn thousands_of_long_emails_split_by_their_encoded_length() {
    let env = Env::start(|_| {}).await;
    let email = |i: usize| {
        format!(
            "first.last.{i}@a-rather-long-company-name-{}.example",
            i % 97
        )
    };
    let contacts: Vec<_> = (0..3_000)
        .map(|i| json!({"LastName": format!("C{i}"), "Email": email(i)}))
        .collect();
    env.sim.seed("Contact", contacts);
    let wheres: Vec<_> = (0..3_000).map(|i| where1("Email", &email(i))).collect();
    let sf = env.connect().await;
    let found = sf
        .match_rule("Contact", &["Id".to_string()], &wheres)
        .await
        .unwrap();
    assert!(found.iter().all(|h| h.len() == 1));
    // ~190 KB of encoded emails: a dozen queries of under 16 KB, five to a Composite call.
    let c = env.sim.calls();
    assert_eq!(c.query, 0);
    assert!(
        (2..=4).contains(&c.composite),
        "{} composite calls",
        c.composite
    );
    assert!(env.sim.longest_subrequest_url() <= 16_384);
    assert!(env.sim.longest_subrequest_url() > 10_000);
    assert!(env.sim.longest_request().total() <= 16_384);
}

#[tokio::test]
async fn a_value_of_the_wrong_type_or_too_long_leaves_only_its_input_unmatched() {
    let env = Env::start(|_| {}).await;
    let acc = env.sim.seed(
        "Account",
        vec![
            json!({"Name": "Big", "NumberOfEmployees": 500}),
            json!({"Name": "Small", "NumberOfEmployees": 12}),
        ],
    );
    let sf = env.connect().await;
    let wheres = vec![
        where1("NumberOfEmployees", "500"),
        where1("NumberOfEmployees", "five hundred"),
        BTreeMap::from([("NumberOfEmployees".to_string(), json!(12))]),
        BTreeMap::from([("NumberOfEmployees".to_string(), json!(["12"]))]),
    ];
    let out = sf
        .match_rule_detailed("Account", &["Name".to_string()], &wheres)
        .await
        .unwrap();
    assert_eq!(out[0].records[0]["Id"].as_str(), Some(acc[0].as_str()));
    assert!(out[0].unmatchable.is_none());
    assert!(out[1].records.is_empty());
    let why = out[1].unmatchable.as_deref().unwrap();
    assert!(
        why.contains("Account.NumberOfEmployees") && why.contains("not a number"),
        "{why}"
    );
    assert_eq!(out[2].records[0]["Id"].as_str(), Some(acc[1].as_str()));
    assert!(out[3].unmatchable.is_some());
    // Ids and dates are checked too.
    let out = sf
        .match_rule_detailed(
            "Contact",
            &["Id".to_string()],
            &[
                where1("AccountId", "not-an-id"),
                where1("AccountId", &acc[0]),
            ],
        )
        .await
        .unwrap();
    assert!(out[0].unmatchable.as_deref().unwrap().contains("record id"));
    assert!(out[1].unmatchable.is_none());

    // A value too long for any query: that input alone is unmatched, the rest are found.
    env.sim.seed(
        "Contact",
        vec![json!({"LastName": "A", "Email": "a@x.example"})],
    );
    let huge = format!("{}@x.example", "y".repeat(20_000));
    let out = sf
        .match_rule_detailed(
            "Contact",
            &["Id".to_string()],
            &[where1("Email", &huge), where1("Email", "A@x.example")],
        )
        .await
        .unwrap();
    assert!(out[0].records.is_empty());
    let why = out[0].unmatchable.as_deref().unwrap();
    assert!(why.contains("too long"), "{why}");
    assert_eq!(out[1].records.len(), 1);
    assert_eq!(env.sim.oversize_refused(), 0);

    // A value that fits in a request but not in a WHERE clause (over 4,000 characters): the
    // simulator refuses such a query as Salesforce does, and ferry never sends it.
    let long = format!("{}@x.example", "z".repeat(4_000));
    let before = env.sim.calls();
    let out = sf
        .match_rule_detailed(
            "Contact",
            &["Id".to_string()],
            &[where1("Email", &long), where1("Email", "A@x.example")],
        )
        .await
        .unwrap();
    let why = out[0].unmatchable.as_deref().unwrap();
    assert!(why.contains("4000"), "{why}");
    assert_eq!(out[1].records.len(), 1);
    let after = env.sim.calls();
    assert_eq!(
        after.query + after.composite,
        before.query + before.composite + 1
    );
    let q = format!("SELECT Id FROM Contact WHERE Email = '{long}'");
    let err = sf.query_all(&q).await.unwrap_err().to_string();
    assert!(
        err.contains("MALFORMED_QUERY") && err.contains("4000"),
        "{err}"
    );
}
