//! Zoom webhooks through `ferry daemon`: verified, stored in the inbox, processed into
//! Salesforce through the engine; forgeries and replays refused with nothing stored.

use crate::support::daemon as daemon_support;

use daemon_support::*;
use ferry::clock::Clock;
use ferry::sim::sandbox::WEBHOOK_SECRET;
use ferry::state::Store;

const P: &str = "meetings-to-events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_meeting_ended_becomes_its_event_once() {
    let pipeline = meetings_webhook_only();
    let env = Env::new(30, &[("meetings-to-events.yaml", &pipeline)]).await;
    let h = env.start().await;
    let m = env.meetings_with_a_contact()[0].clone();
    assert!(
        env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid)
            .is_empty()
    );
    assert_eq!(
        env.count("Event"),
        0,
        "no schedule: nothing runs before the webhook"
    );

    // Zoom's endpoint check answers with the HMAC of the token.
    let now = env.clock.now();
    let crc = serde_json::json!({"event": "endpoint.url_validation", "event_ts": now.timestamp_millis(),
        "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}});
    let (status, body) = post_signed(
        &h.webhook_url(),
        WEBHOOK_SECRET,
        now.timestamp(),
        &crc,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        ferry::connectors::zoom::url_validation_response(WEBHOOK_SECRET, "qgg8vlvZRS6UYooatFL8Aw")
    );

    // The simulator's signed delivery.
    let event = meeting_ended(&m, env.world(), env.clock.now());
    assert_eq!(deliver(&env, &h, &event).await, 200);
    let s = wait(&h, "the webhook's run", |s| {
        s.webhooks_processed >= 1 && runs(s, P) >= 1 && idle(s)
    })
    .await;
    assert_eq!(
        s.pipelines[P].last_trigger,
        Some(ferry::daemon::Trigger::Webhook)
    );
    let events = env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid);
    assert_eq!(events.len(), 1, "the meeting's Event");
    assert_eq!(events[0]["Subject"], format!("Zoom: {}", m.topic));
    assert_eq!(env.count("Event"), 1, "only the meeting the webhook named");
    let relations = env.count("EventRelation");
    assert!(relations >= 1, "the matched contact is related");
    let tasks = env.count("Task");
    assert_eq!(h.store().inbox_depth().await.unwrap(), 0);

    // A second delivery of the same event (Zoom retries with a new request id): processed,
    // and the ledger writes nothing new.
    assert_eq!(deliver(&env, &h, &event).await, 200);
    let s = wait(&h, "the duplicate's run", |s| {
        s.webhooks_processed >= 2 && runs(s, P) >= 2 && idle(s)
    })
    .await;
    let report = s.pipelines[P].last_report.clone().unwrap();
    assert_eq!(
        report.summary.create + report.summary.update,
        0,
        "{report:?}"
    );
    assert_eq!(env.count("Event"), 1);
    assert_eq!(env.count("EventRelation"), relations);
    assert_eq!(env.count("Task"), tasks);

    // The same request id twice: the second is not even stored.
    let rows = env.inbox_rows();
    let ts = env.clock.now().timestamp();
    assert_eq!(
        post_signed(&h.webhook_url(), WEBHOOK_SECRET, ts, &event, Some("req-1"))
            .await
            .0,
        200
    );
    assert_eq!(env.inbox_rows(), rows + 1);
    assert_eq!(
        post_signed(&h.webhook_url(), WEBHOOK_SECRET, ts, &event, Some("req-1"))
            .await
            .0,
        200
    );
    assert_eq!(
        env.inbox_rows(),
        rows + 1,
        "a repeated request id is a duplicate"
    );
    wait(&h, "the stored event's run", |s| {
        s.webhooks_processed >= 3 && idle(s)
    })
    .await;

    // Forged and stale deliveries: 401, nothing stored, nothing run.
    let rows = env.inbox_rows();
    let depth = h.store().inbox_depth().await.unwrap();
    let status = env
        .sandbox
        .zoom
        .send_webhook(&h.webhook_url(), "not-the-secret", &event)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let stale = env.clock.now().timestamp() - 3600;
    let (status, _) = post_signed(
        &h.webhook_url(),
        WEBHOOK_SECRET,
        stale,
        &event,
        Some("req-2"),
    )
    .await;
    assert_eq!(status, 401);
    // A body changed after signing.
    let mut tampered = event.clone();
    tampered["payload"]["object"]["uuid"] = serde_json::json!("someone-else==");
    let ts = env.clock.now().timestamp();
    let bytes = serde_json::to_vec(&tampered).unwrap();
    let sig = ferry::connectors::zoom::webhook::sign(
        WEBHOOK_SECRET,
        ts,
        &serde_json::to_vec(&event).unwrap(),
    );
    let resp = reqwest::Client::new()
        .post(h.webhook_url())
        .header("x-zm-request-timestamp", ts.to_string())
        .header("x-zm-signature", sig)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(env.inbox_rows(), rows, "refused deliveries store nothing");
    assert_eq!(h.store().inbox_depth().await.unwrap(), depth);

    let (_, metrics) = get(&format!("{}/metrics", h.url())).await;
    assert!(
        metrics.contains("ferry_webhooks_total{outcome=\"rejected\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhooks_total{outcome=\"duplicate\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhooks_total{outcome=\"accepted\"} 3"),
        "{metrics}"
    );
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_before_a_restart_are_processed_after_it() {
    let pipeline = meetings_webhook_only();
    let env = Env::new(30, &[("meetings-to-events.yaml", &pipeline)]).await;
    let m = env.meetings_with_a_contact()[1].clone();
    // The receiver stored the delivery, then the process died before processing it.
    {
        std::fs::create_dir_all(env.state_path().parent().unwrap()).unwrap();
        let store = Store::open(&env.state_path()).unwrap();
        let body = meeting_ended(&m, env.world(), env.clock.now());
        assert!(
            store
                .inbox_put("zm:before-crash", "meeting.ended", &body, env.clock.now())
                .await
                .unwrap()
        );
        assert_eq!(store.inbox_depth().await.unwrap(), 1);
    }
    let h = env.start().await;
    wait(&h, "the stored event's run", |s| {
        s.webhooks_processed >= 1 && runs(s, P) >= 1 && idle(s)
    })
    .await;
    assert_eq!(
        env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid).len(),
        1
    );
    assert_eq!(h.store().inbox_depth().await.unwrap(), 0);
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_request_id_the_content_identifies_a_delivery_and_a_full_inbox_refuses() {
    let pipeline = meetings_webhook_only();
    let env = Env::new(20, &[("meetings-to-events.yaml", &pipeline)]).await;
    let m = env.meetings_with_a_contact()[0].clone();
    let event = meeting_ended(&m, env.world(), env.clock.now());

    // A full inbox answers 500 (Zoom retries later) and stores nothing.
    let mut o = env.options();
    o.inbox_capacity = 0;
    let h = env.start_with(o).await;
    let ts = env.clock.now().timestamp();
    let (status, _) = post_signed(&h.webhook_url(), WEBHOOK_SECRET, ts, &event, None).await;
    assert_eq!(status, 500);
    assert_eq!(env.inbox_rows(), 0);
    assert!(h.shutdown().await.clean);

    let h = env.start().await;
    let (status, _) = post_signed(&h.webhook_url(), WEBHOOK_SECRET, ts, &event, None).await;
    assert_eq!(status, 200);
    let (status, body) = post_signed(&h.webhook_url(), WEBHOOK_SECRET, ts, &event, None).await;
    assert_eq!((status, body.as_str()), (200, "duplicate"));
    assert_eq!(env.inbox_rows(), 1);
    wait(&h, "the event's run", |s| {
        s.webhooks_processed >= 1 && runs(s, P) >= 1 && idle(s)
    })
    .await;
    assert_eq!(
        env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid).len(),
        1
    );
    assert!(h.shutdown().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_events_are_forgotten_after_their_retention_and_pending_ones_never() {
    use ferry::state::{INBOX_KEEP_DONE_DAYS, INBOX_KEEP_FAILED_DAYS};
    let pipeline = meetings_webhook_only();
    let env = Env::new(20, &[("meetings-to-events.yaml", &pipeline)]).await;
    let now = env.clock.now();
    let days = |d: i64| now - chrono::Duration::days(d);
    std::fs::create_dir_all(env.state_path().parent().unwrap()).unwrap();
    {
        let store = Store::open(&env.state_path())
            .unwrap()
            .with_clock(env.clock.clone());
        let body = serde_json::json!({"event": "meeting.ended", "event_ts": 1,
            "payload": {"object": {"uuid": "gone==", "id": 1}}});
        for (id, age) in [
            ("zm:done-old", INBOX_KEEP_DONE_DAYS + 1),
            ("zm:done-recent", 1),
            ("zm:failed-old", INBOX_KEEP_DONE_DAYS + 1),
            ("zm:failed-older", INBOX_KEEP_FAILED_DAYS + 1),
        ] {
            assert!(
                store
                    .inbox_put(id, "meeting.ended", &body, days(age))
                    .await
                    .unwrap()
            );
        }
        let ids: Vec<i64> = store
            .inbox_pending(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        store.inbox_done(ids[0]).await.unwrap();
        store.inbox_done(ids[1]).await.unwrap();
        // Received more than a day ago: one failure makes them dead letters.
        store.inbox_failed(ids[2], "boom").await.unwrap();
        store.inbox_failed(ids[3], "boom").await.unwrap();
        assert_eq!(store.inbox_depth().await.unwrap(), 0);
    }
    let rows_become = |n: i64, what: &'static str| {
        let env = &env;
        async move {
            for _ in 0..2000 {
                if env.inbox_rows() == n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("{what}: the inbox kept {} rows, not {n}", env.inbox_rows());
        }
    };

    // When the daemon starts: the old done event and the failed one past 30 days go; the
    // recent done event (a late retry of it is still recognised) and the failed one an admin
    // may still read stay.
    let h = env.start().await;
    rows_become(2, "at start").await;

    // A pending delivery is never purged, however old it gets; it is processed.
    let m = env.meetings_with_a_contact()[0].clone();
    let event = meeting_ended(&m, env.world(), env.clock.now());
    assert_eq!(deliver(&env, &h, &event).await, 200);
    wait(&h, "the webhook's run", |s| {
        s.webhooks_processed >= 1 && runs(s, P) >= 1 && idle(s)
    })
    .await;
    assert_eq!(env.inbox_rows(), 3);

    // A week and an hour later the hourly purge takes the two done events; the failed one
    // stays until its 30 days are up.
    env.clock.advance(std::time::Duration::from_secs(
        3600 * 24 * INBOX_KEEP_DONE_DAYS as u64 + 3600,
    ));
    rows_become(1, "a week later").await;
    env.clock.advance(std::time::Duration::from_secs(
        3600 * 24 * INBOX_KEEP_FAILED_DAYS as u64,
    ));
    rows_become(0, "a month later").await;
    assert_eq!(
        env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid).len(),
        1
    );
    assert!(h.shutdown().await.clean);
}

/// A meeting fetched alone (the webhook's run) does not say whether it was recorded, as the
/// report listing does; the recordings are asked for then, so the Event a webhook writes has
/// the recording link a backfill would write, and a later backfill does not change it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_event_keeps_the_recording_link() {
    let pipeline = meetings_webhook_only();
    let env = Env::new(30, &[("meetings-to-events.yaml", &pipeline)]).await;
    let h = env.start().await;
    let m = env
        .meetings_with_a_contact()
        .into_iter()
        .find(|m| m.recording.is_some())
        .expect("a recorded meeting with a contact")
        .clone();
    let event = meeting_ended(&m, env.world(), env.clock.now());
    assert_eq!(deliver(&env, &h, &event).await, 200);
    wait(&h, "the webhook's run", |s| {
        s.webhooks_processed >= 1 && runs(s, P) >= 1 && idle(s)
    })
    .await;
    let events = env.sf_where("Event", "Zoom_Meeting_UUID__c", &m.uuid);
    assert_eq!(events.len(), 1, "the meeting's Event");
    let link = events[0]["Zoom_Recording_URL__c"].as_str().unwrap_or("");
    assert!(
        link.starts_with("https://"),
        "the recording link is written by the webhook's run: {:?}",
        events[0]["Zoom_Recording_URL__c"]
    );
}
