//! What hand-written middleware does with the same job, for comparison: list the meetings,
//! then per meeting fetch participants, recordings and summary (whether or not the meeting
//! has them), one SOQL query per participant and rule, one create per Event, per
//! EventRelation and per Task, one update per Opportunity. Concurrent over meetings, no
//! client-side pacing; 429s are retried after the time the server names.

use super::BenchError;
use base64::Engine as _;
use ferry::connectors::zoom::encode_path_value;
use ferry::http::{HttpClient, Method, Request, Response, Service};
use ferry::sim::sandbox::Sandbox;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// What the baseline did, as it saw it.
#[derive(Debug, Clone, Default)]
pub struct BaselineRun {
    pub wall: Duration,
    pub meetings_listed: u64,
    pub events_created: u64,
    pub zoom_requests: u64,
    pub zoom_429: u64,
    pub salesforce_requests: u64,
}

struct Ctx {
    http: HttpClient,
    zoom_base: String,
    zoom_token: String,
    sf_data: String,
    sf_token: String,
    internal_domains: Vec<String>,
}

fn fail(what: &str, r: &Response) -> BenchError {
    BenchError::Baseline(format!("{what}: HTTP {} {}", r.status, r.text()))
}

impl Ctx {
    async fn zoom_get(&self, path: &str, category: &str) -> Result<Option<Value>, BenchError> {
        let req = Request::new(
            Service::Zoom,
            Method::GET,
            format!("{}{path}", self.zoom_base),
        )
        .bearer(&self.zoom_token)
        .category(category);
        let r = self
            .http
            .send(req)
            .await
            .map_err(|e| BenchError::Baseline(e.to_string()))?;
        match r.status {
            200 => r
                .json()
                .map(Some)
                .map_err(|e| BenchError::Baseline(e.to_string())),
            404 | 400 => Ok(None),
            _ => Err(fail(path, &r)),
        }
    }

    /// Every record of a paged Zoom listing.
    async fn zoom_list(
        &self,
        path: &str,
        field: &str,
        category: &str,
    ) -> Result<Vec<Value>, BenchError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut p = format!("{path}{sep}page_size=300");
            if !token.is_empty() {
                p.push_str(&format!("&next_page_token={token}"));
            }
            let Some(body) = self.zoom_get(&p, category).await? else {
                return Ok(out);
            };
            if let Some(a) = body.get(field).and_then(Value::as_array) {
                out.extend(a.iter().cloned());
            }
            token = body
                .get("next_page_token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if token.is_empty() {
                return Ok(out);
            }
        }
    }

    async fn sf(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response, BenchError> {
        let mut req = Request::new(
            Service::Salesforce,
            method,
            format!("{}{path}", self.sf_data),
        )
        .bearer(&self.sf_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.http
            .send(req)
            .await
            .map_err(|e| BenchError::Baseline(e.to_string()))
    }

    /// The first record a SOQL query returns.
    async fn first(&self, soql: &str) -> Result<Option<Map<String, Value>>, BenchError> {
        let q = url::form_urlencoded::byte_serialize(soql.as_bytes()).collect::<String>();
        let r = self.sf(Method::GET, &format!("/query?q={q}"), None).await?;
        if r.status != 200 {
            return Err(fail("query", &r));
        }
        let v: Value = r.json().map_err(|e| BenchError::Baseline(e.to_string()))?;
        Ok(v.get("records")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_object)
            .cloned())
    }

    async fn create(&self, sobject: &str, fields: Value) -> Result<Option<String>, BenchError> {
        let r = self
            .sf(Method::POST, &format!("/sobjects/{sobject}"), Some(fields))
            .await?;
        let v: Value = r.json().unwrap_or(Value::Null);
        Ok(v.get("id").and_then(Value::as_str).map(str::to_string))
    }
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn sf_datetime(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S.000Z")
                .to_string()
        })
        .unwrap_or_else(|_| s.to_string())
}

/// Runs the baseline over the sandbox's meetings from `since` to now, `workers` meetings at
/// a time.
pub async fn run(
    sandbox: &Sandbox,
    since: chrono::DateTime<chrono::Utc>,
    workers: usize,
) -> Result<BaselineRun, BenchError> {
    let started = Instant::now();
    let http = HttpClient::new(ferry::clock::system());
    // Zoom token (server-to-server)
    let z = &sandbox.zoom;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", z.client_id, z.client_secret));
    let req = Request::new(Service::Zoom, Method::POST, &z.token_url)
        .header("Authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "account_credentials"),
            ("account_id", z.account_id.as_str()),
        ])
        .category("oauth");
    let r = http
        .send(req)
        .await
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let v: Value = r.json().map_err(|_| fail("Zoom token", &r))?;
    let zoom_token = v["access_token"].as_str().unwrap_or_default().to_string();
    // Salesforce token (client credentials)
    let s = &sandbox.salesforce;
    let req = Request::new(
        Service::Salesforce,
        Method::POST,
        format!("{}/services/oauth2/token", s.instance_url),
    )
    .form(&[
        ("grant_type", "client_credentials"),
        ("client_id", s.client_id.as_str()),
        ("client_secret", s.client_secret.as_str()),
    ]);
    let r = http
        .send(req)
        .await
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let v: Value = r.json().map_err(|_| fail("Salesforce token", &r))?;
    let sf_token = v["access_token"].as_str().unwrap_or_default().to_string();
    let instance = v["instance_url"].as_str().unwrap_or(&s.instance_url);
    let ctx = Ctx {
        http: http.clone(),
        zoom_base: z.base_url.trim_end_matches('/').to_string(),
        zoom_token,
        sf_data: format!("{instance}/services/data/v{}", s.api_version),
        sf_token,
        internal_domains: vec!["acme.com".into(), "acme.zoom.us".into()],
    };

    // List every user's meetings, 30 days at a time.
    let users = ctx.zoom_list("/users", "users", "medium").await?;
    let now = chrono::Utc::now();
    let mut meetings = Vec::new();
    for u in &users {
        let Some(id) = u.get("id").and_then(Value::as_str) else {
            continue;
        };
        let mut from = since.date_naive();
        while from <= now.date_naive() {
            let to = (from + chrono::Duration::days(29)).min(now.date_naive());
            let path = format!("/report/users/{id}/meetings?from={from}&to={to}");
            meetings.extend(ctx.zoom_list(&path, "meetings", "heavy").await?);
            from = to + chrono::Duration::days(1);
        }
    }
    meetings.retain(|m| {
        m.get("participants_count")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            >= 2
    });
    let listed = meetings.len() as u64;

    let ctx = &ctx;
    let results: Vec<Result<bool, BenchError>> = futures::stream::iter(meetings)
        .map(|m| async move { one_meeting(ctx, &m).await })
        .buffer_unordered(workers.max(1))
        .collect()
        .await;
    let mut events = 0;
    for r in results {
        if r? {
            events += 1;
        }
    }
    let zoom = http.metrics().total(Service::Zoom);
    let sf = http.metrics().total(Service::Salesforce);
    Ok(BaselineRun {
        wall: started.elapsed(),
        meetings_listed: listed,
        events_created: events,
        zoom_requests: zoom.requests,
        zoom_429: zoom.responses_429,
        salesforce_requests: sf.requests,
    })
}

/// One meeting, the way a per-meeting job does it. True when an Event was created.
async fn one_meeting(ctx: &Ctx, m: &Value) -> Result<bool, BenchError> {
    let uuid = m["uuid"].as_str().unwrap_or_default();
    let enc = encode_path_value(uuid);
    let participants = ctx
        .zoom_list(
            &format!("/past_meetings/{enc}/participants"),
            "participants",
            "medium",
        )
        .await?;
    let recording = ctx
        .zoom_get(&format!("/meetings/{enc}/recordings"), "light")
        .await?;
    let summary = ctx
        .zoom_get(&format!("/meetings/{enc}/meeting_summary"), "light")
        .await?;

    // One query per participant per rule until one matches.
    let mut people: Vec<(String, Option<String>)> = Vec::new(); // (Id, AccountId) of Contacts and Leads
    let mut account: Option<String> = None;
    for p in &participants {
        let email = p["user_email"].as_str().unwrap_or_default();
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        let Some(domain) = domain else { continue };
        if ctx.internal_domains.contains(&domain) {
            continue;
        }
        let e = lit(email);
        if let Some(c) = ctx
            .first(&format!(
                "SELECT Id, AccountId, Name FROM Contact WHERE Email = {e}"
            ))
            .await?
        {
            let id = c["Id"].as_str().unwrap_or_default().to_string();
            let acc = c
                .get("AccountId")
                .and_then(Value::as_str)
                .map(str::to_string);
            if !people.iter().any(|(i, _)| *i == id) {
                people.push((id, acc));
            }
            continue;
        }
        if let Some(l) = ctx
            .first(&format!(
                "SELECT Id, Company FROM Lead WHERE Email = {e} AND IsConverted = false"
            ))
            .await?
        {
            let id = l["Id"].as_str().unwrap_or_default().to_string();
            if !people.iter().any(|(i, _)| *i == id) {
                people.push((id, None));
            }
            continue;
        }
        if let Some(a) = ctx
            .first(&format!(
                "SELECT Id, Name FROM Account WHERE Website_Domain__c = {}",
                lit(&domain)
            ))
            .await?
        {
            account = a["Id"].as_str().map(str::to_string);
        }
    }
    if people.is_empty() && account.is_none() {
        return Ok(false);
    }
    let host = m["user_email"].as_str().unwrap_or_default();
    let owner = ctx
        .first(&format!("SELECT Id FROM User WHERE Email = {}", lit(host)))
        .await?
        .and_then(|u| u["Id"].as_str().map(str::to_string));
    let first_account = people.iter().find_map(|(_, a)| a.clone());
    let opportunity = match &first_account {
        Some(a) => {
            ctx.first(&format!(
                "SELECT Id, Name, Last_Zoom_Meeting__c FROM Opportunity WHERE AccountId = {} AND IsClosed = false",
                lit(a)
            ))
            .await?
        }
        None => None,
    };
    let who = people.first().map(|(id, _)| id.clone());
    let who_is_lead = who.as_deref().is_some_and(|w| w.starts_with("00Q"));
    let what = if who_is_lead {
        None
    } else {
        first_account.clone().or(account.clone())
    };
    let end = sf_datetime(m["end_time"].as_str().unwrap_or_default());
    let mut event = json!({
        "Zoom_Meeting_UUID__c": uuid,
        "Subject": format!("Zoom: {}", m["topic"].as_str().unwrap_or_default()),
        "StartDateTime": sf_datetime(m["start_time"].as_str().unwrap_or_default()),
        "EndDateTime": end,
        "OwnerId": owner,
        "WhoId": who,
        "WhatId": what,
        "Description": format!("Participants: {}", participants.len()),
    });
    if let Some(r) = &recording {
        event["Zoom_Recording_URL__c"] = r["share_url"].clone();
    }
    let Some(event_id) = ctx.create("Event", event).await? else {
        return Ok(false);
    };
    for (id, _) in &people {
        ctx.create(
            "EventRelation",
            json!({"EventId": event_id, "RelationId": id}),
        )
        .await?;
    }
    if let Some(s) = &summary {
        let steps = s["next_steps"].as_array().cloned().unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            ctx.create(
                "Task",
                json!({"Zoom_Action_Item_Key__c": format!("{uuid}#{}", i + 1),
                       "Subject": step, "WhoId": who, "WhatId": what, "OwnerId": owner,
                       "ActivityDate": &end[..10.min(end.len())], "Status": "Not Started",
                       "Priority": "Normal"}),
            )
            .await?;
        }
    }
    if let Some(o) = opportunity {
        let last = o
            .get("Last_Zoom_Meeting__c")
            .and_then(Value::as_str)
            .unwrap_or("");
        if end.get(..19) > last.get(..19) {
            let id = o["Id"].as_str().unwrap_or_default();
            let mut f = json!({"Last_Zoom_Meeting__c": end});
            if let Some(s) = &summary {
                f["Zoom_Summary__c"] = s["summary_overview"].clone();
            }
            ctx.sf(
                Method::PATCH,
                &format!("/sobjects/Opportunity/{id}"),
                Some(f),
            )
            .await?;
        }
    }
    Ok(true)
}
