//! The state-file token store keeps rotated Zoom refresh tokens across restarts, encrypted.

use ferry::clock::{ManualClock, SharedClock};
use ferry::connectors::zoom::auth::TokenCache;
use ferry::connectors::zoom::{
    Secret, StoreTokens, TokenStore, ZoomAuth, ZoomConnector, ZoomPlan, ZoomSettings,
};
use ferry::http::HttpClient;
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{Faults, SimOptions, ZoomSim, ZoomSimHandle};
use ferry::state::Store;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const KEY: [u8; 32] = [7u8; 32];

fn connector(
    sim: &ZoomSimHandle,
    clock: SharedClock,
    store: Store,
    initial: Option<&str>,
) -> ZoomConnector {
    ZoomConnector::new(
        ZoomSettings {
            base_url: sim.base_url.clone(),
            token_url: sim.token_url.clone(),
            auth: ZoomAuth::OAuth {
                client_id: sim.client_id.clone(),
                client_secret: Secret::new(sim.client_secret.clone()),
                refresh_token: initial.map(Secret::new),
            },
            plan: ZoomPlan::Pro,
            headroom: 0.8,
            webhook_secret: None,
        },
        HttpClient::new(clock),
        Arc::new(StoreTokens::new(store)),
    )
}

/// Every byte of the state file and its WAL.
fn file_bytes(path: &Path) -> Vec<u8> {
    let mut all = std::fs::read(path).unwrap();
    let wal = path.with_extension("db-wal");
    if let Ok(more) = std::fs::read(wal) {
        all.extend(more);
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn rotated_refresh_token_survives_a_reopen_and_is_encrypted() {
    let world = Arc::new(World::generate(2, Scale::small()));
    let clock: SharedClock = ManualClock::auto(world.scale.end);
    let sim = ZoomSim::start(SimOptions {
        world: world.clone(),
        clock: clock.clone(),
        plan: ZoomPlan::Pro,
        faults: Faults::default(),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let key_name = TokenCache::refresh_token_key(&sim.client_id);
    let initial = sim.issue_refresh_token();

    let store = Store::open_with_key(&path, KEY).unwrap();
    let conn = connector(&sim, clock.clone(), store.clone(), Some(&initial));
    let users = conn.fetch_all("users", &BTreeMap::new()).await.unwrap();
    assert_eq!(users.len(), world.users.len());
    let rotated = StoreTokens::new(store.clone())
        .get(&key_name)
        .await
        .unwrap()
        .expect("the rotated token is stored");
    assert_ne!(rotated.expose(), initial);
    drop(conn);
    drop(store);

    // Not in the file in clear text (the file and its WAL both checked).
    let bytes = file_bytes(&path);
    assert!(!bytes.is_empty());
    assert!(!contains(&bytes, rotated.expose()));
    assert!(!contains(&bytes, &initial));

    // A new process: no refresh token in the config, only the state file. The first
    // request refreshes with the stored token, which the sim accepts only if it is the
    // current one (the initial token is spent).
    let store = Store::open_with_key(&path, KEY).unwrap();
    let conn = connector(&sim, clock.clone(), store.clone(), None);
    let again = conn.fetch_all("users", &BTreeMap::new()).await.unwrap();
    assert_eq!(again.len(), world.users.len());
    let newest = store.token_get(&key_name).await.unwrap().unwrap();
    assert_ne!(newest.value, rotated.expose(), "rotated again on refresh");
    assert_eq!(sim.stats().tokens_issued, 2);

    // With the wrong key the file refuses to open rather than handing out garbage.
    drop(conn);
    drop(store);
    assert!(Store::open_with_key(&path, [8u8; 32]).is_err());
}
