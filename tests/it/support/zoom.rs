//! Shared set-up for the Zoom tests: a simulator on a virtual clock and a connector to it.

use ferry::clock::{ManualClock, SharedClock};
use ferry::connectors::zoom::{
    MemoryTokenStore, Page, ReadWindow, Secret, ZoomAuth, ZoomConnector, ZoomPlan, ZoomSettings,
};
use ferry::http::HttpClient;
use ferry::sim::world::World;
use ferry::sim::zoom::{Faults, SimOptions, ZoomSim, ZoomSimHandle};
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Rig {
    pub sim: ZoomSimHandle,
    pub conn: ZoomConnector,
    pub clock: Arc<ManualClock>,
}

pub async fn rig_at(
    world: Arc<World>,
    faults: Faults,
    start: chrono::DateTime<chrono::Utc>,
) -> Rig {
    let clock = ManualClock::auto(start);
    let shared: SharedClock = clock.clone();
    let sim = ZoomSim::start(SimOptions {
        world,
        clock: shared.clone(),
        plan: ZoomPlan::Pro,
        faults,
    })
    .await
    .expect("sim starts");
    let conn = connector(&sim, shared);
    Rig { sim, conn, clock }
}

pub async fn rig(world: Arc<World>, faults: Faults) -> Rig {
    let end = world.scale.end;
    rig_at(world, faults, end).await
}

pub fn connector(sim: &ZoomSimHandle, clock: SharedClock) -> ZoomConnector {
    ZoomConnector::new(
        ZoomSettings {
            base_url: sim.base_url.clone(),
            token_url: sim.token_url.clone(),
            auth: ZoomAuth::ServerToServer {
                account_id: sim.account_id.clone(),
                client_id: sim.client_id.clone(),
                client_secret: Secret::new(sim.client_secret.clone()),
            },
            plan: ZoomPlan::Pro,
            headroom: 0.8,
            webhook_secret: None,
        },
        HttpClient::new(clock),
        Arc::new(MemoryTokenStore::default()),
    )
}

pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

pub async fn collect(
    conn: &ZoomConnector,
    stream: &str,
    params: &BTreeMap<String, Value>,
    window: ReadWindow,
) -> Vec<Page> {
    let mut s = Box::pin(conn.read(stream, params, window));
    let mut pages = Vec::new();
    while let Some(p) = s.next().await {
        pages.push(p.expect("page"));
    }
    pages
}

pub fn time(v: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v)
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}
