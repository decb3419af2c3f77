//! Webhook signing (sim) and verification (connector) agree, over real HTTP.

use axum::body::Bytes;
use axum::http::HeaderMap;
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::connectors::zoom::{WebhookError, ZoomPlan, url_validation_response, verify_webhook};
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{Faults, SimOptions, ZoomSim};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn sim_signed_webhooks_verify_and_forgeries_do_not() {
    let world = Arc::new(World::generate(1, Scale::small()));
    let clock = ManualClock::auto(world.scale.end);
    let shared: SharedClock = clock.clone();
    let sim = ZoomSim::start(SimOptions {
        world,
        clock: shared.clone(),
        plan: ZoomPlan::Pro,
        faults: Faults::default(),
    })
    .await
    .unwrap();
    let seen: Arc<Mutex<Vec<Result<String, WebhookError>>>> = Arc::default();
    let seen2 = seen.clone();
    let c2 = shared.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen2.clone();
            let clock = c2.clone();
            async move {
                let hs: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let r = verify_webhook("s3cret", &hs, &body, clock.now(), Duration::from_secs(300));
                let status = if r.is_ok() { 200 } else { 401 };
                seen.lock().unwrap().push(r.map(|e| e.event));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let event = serde_json::json!({"event":"meeting.ended","event_ts":clock.now().timestamp_millis(),
        "payload":{"account_id":"A","object":{"id":"1","uuid":"/ab//c==","host_id":"h","topic":"t","type":2}}});
    assert_eq!(sim.send_webhook(&url, "s3cret", &event).await.unwrap(), 200);
    assert_eq!(sim.send_webhook(&url, "wrong", &event).await.unwrap(), 401);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], Ok("meeting.ended".to_string()));
    assert_eq!(seen[1], Err(WebhookError::BadSignature));
    let crc = url_validation_response("s3cret", "abc");
    assert_eq!(crc["plainToken"], "abc");
    assert_eq!(crc["encryptedToken"].as_str().unwrap().len(), 64);
    server.abort();
}
