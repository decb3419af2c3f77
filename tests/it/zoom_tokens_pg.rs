//! Two daemons on one PostgreSQL state share a Zoom app's rotating refresh token: their
//! refreshes take turns under the state's token lock, each reading the token the other
//! stored, so neither spends a token already spent (which Zoom answers with invalid_grant).
//! In one test process the two connectors' token requests are also spaced by the HTTP
//! layer, so the lock's own exclusion is shown by
//! state_contract::postgres_token_refreshes_are_serialized_across_daemons; this test shows
//! the whole refresh path on a shared database: every refresh reads the token the other
//! daemon stored last, and the simulator (no grace for a spent token) accepts all of them.

use crate::support::pg::PgCluster;
use ferry::clock::SharedClock;
use ferry::connectors::zoom::auth::TokenCache;
use ferry::connectors::zoom::{
    Secret, StoreTokens, ZoomAuth, ZoomConnector, ZoomPlan, ZoomSettings,
};
use ferry::http::HttpClient;
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{Faults, SimOptions, ZoomSim, ZoomSimHandle};
use ferry::state::Store;
use std::collections::BTreeMap;
use std::sync::Arc;

const KEY: [u8; 32] = [7u8; 32];

fn connector(sim: &ZoomSimHandle, clock: SharedClock, store: Store) -> ZoomConnector {
    ZoomConnector::new(
        ZoomSettings {
            base_url: sim.base_url.clone(),
            token_url: sim.token_url.clone(),
            auth: ZoomAuth::OAuth {
                client_id: sim.client_id.clone(),
                client_secret: Secret::new(sim.client_secret.clone()),
                refresh_token: None,
            },
            plan: ZoomPlan::Pro,
            headroom: 0.8,
            webhook_secret: None,
        },
        HttpClient::new(clock),
        Arc::new(StoreTokens::new(store)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_refresh_one_rotating_token_without_spending_it_twice() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("zoomtokens");
    let world = Arc::new(World::generate(2, Scale::small()));
    // Real time and a slow token endpoint, so the two refreshes overlap unless they take
    // turns.
    let shared: SharedClock = ferry::clock::system();
    let sim = ZoomSim::start(SimOptions {
        world: world.clone(),
        clock: shared.clone(),
        plan: ZoomPlan::Pro,
        // No grace for a spent refresh token: the strict choice (Zoom documents none to
        // rely on), so a second refresh with the same token fails.
        faults: Faults {
            refresh_grace_secs: 0,
            latency_ms: 150,
            ..Faults::default()
        },
    })
    .await
    .unwrap();
    // `ferry auth zoom` stored the first refresh token in the shared state.
    let seed = Store::open_postgres_with_key(&url, KEY).unwrap();
    seed.token_put(
        &TokenCache::refresh_token_key(&sim.client_id),
        &sim.issue_refresh_token(),
        None,
    )
    .await
    .unwrap();
    let a = connector(
        &sim,
        shared.clone(),
        Store::open_postgres_with_key(&url, KEY)
            .unwrap()
            .with_clock(shared.clone()),
    );
    let b = connector(
        &sim,
        shared.clone(),
        Store::open_postgres_with_key(&url, KEY)
            .unwrap()
            .with_clock(shared.clone()),
    );
    let before = sim.stats().tokens_issued;
    let none = BTreeMap::new();
    for round in 0..3 {
        // Both daemons need a token at the same moment (their access tokens expired).
        sim.expire_tokens();
        let (ra, rb) = tokio::join!(a.fetch_all("users", &none), b.fetch_all("users", &none));
        assert_eq!(ra.unwrap().len(), world.users.len(), "round {round}");
        assert_eq!(rb.unwrap().len(), world.users.len(), "round {round}");
    }
    // Each daemon refreshed once per round, one after the other, every refresh accepted.
    assert_eq!(sim.stats().tokens_issued - before, 6);
}
