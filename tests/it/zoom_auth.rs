//! `ferry auth zoom` and the authorization-code flow, driven without a browser: the test
//! opens the authorize URL itself and follows the simulator's redirect to the callback.

use ferry::clock::{ManualClock, SharedClock};
use ferry::connectors::zoom::auth::TokenCache;
use ferry::connectors::zoom::{
    AuthorizeError, AuthorizeSettings, Secret, StoreTokens, TokenStore, ZoomAuth, ZoomConnector,
    ZoomPlan, ZoomSettings, authorize,
};
use ferry::http::HttpClient;
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::{Faults, SimOptions, ZoomSim, ZoomSimHandle};
use ferry::state::Store;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

async fn sim(clock: SharedClock, faults: Faults) -> (ZoomSimHandle, Arc<World>) {
    let world = Arc::new(World::generate(6, Scale::small()));
    let sim = ZoomSim::start(SimOptions {
        world: world.clone(),
        clock,
        plan: ZoomPlan::Pro,
        faults,
    })
    .await
    .unwrap();
    (sim, world)
}

fn settings(sim: &ZoomSimHandle) -> AuthorizeSettings {
    AuthorizeSettings {
        authorize_url: sim.authorize_url.clone(),
        token_url: sim.token_url.clone(),
        client_id: sim.client_id.clone(),
        client_secret: Secret::new(sim.client_secret.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        redirect_uri: None,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn authorization_code_flow_stores_a_working_refresh_token() {
    let clock: SharedClock = ManualClock::auto(World::generate(6, Scale::small()).scale.end);
    let (sim, world) = sim(clock.clone(), Faults::default()).await;
    let store = Store::in_memory().unwrap();
    let pending = authorize::begin(settings(&sim)).await.unwrap();
    let url = pending.url().to_string();
    assert!(url.starts_with(&sim.authorize_url));
    assert!(url.contains("code_challenge_method=S256") && url.contains("state="));
    let http = HttpClient::new(clock.clone());
    let tokens = StoreTokens::new(store.clone());
    let (finished, code) = tokio::join!(pending.finish(&http, &tokens), async {
        // The "browser": the sim redirects to the callback with a code.
        let to_sim = no_redirects().get(&url).send().await.unwrap();
        assert_eq!(to_sim.status().as_u16(), 302);
        let location = to_sim.headers()["location"].to_str().unwrap().to_string();
        let page = reqwest::get(&location).await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        assert!(page.text().await.unwrap().contains("close this tab"));
        url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    });
    let key = finished.unwrap();
    assert_eq!(key, TokenCache::refresh_token_key(&sim.client_id));
    let stored = tokens
        .get(&key)
        .await
        .unwrap()
        .expect("refresh token stored");

    // The connector picks the token up from the store (nothing in the config) and works.
    let conn = ZoomConnector::new(
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
        http.clone(),
        Arc::new(tokens.clone()),
    );
    let users = conn.fetch_all("users", &BTreeMap::new()).await.unwrap();
    assert_eq!(users.len(), world.users.len());
    assert_ne!(
        tokens.get(&key).await.unwrap().unwrap(),
        stored,
        "rotated on first use"
    );

    assert!(!code.is_empty());
}

/// One authorize round trip without PKCE; returns the code.
async fn code_for(sim: &ZoomSimHandle, redirect: &str) -> String {
    let mut url = url::Url::parse(&sim.authorize_url).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &sim.client_id)
        .append_pair("redirect_uri", redirect);
    let r = no_redirects().get(url.as_str()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(redirect));
    location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

async fn exchange(sim: &ZoomSimHandle, code: &str, redirect: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(&sim.token_url)
        .basic_auth(&sim.client_id, Some(&sim.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn sim_codes_are_single_use_bound_to_the_redirect_and_expire() {
    let clock = ManualClock::auto(World::generate(6, Scale::small()).scale.end);
    let (sim, _) = sim(clock.clone(), Faults::default()).await;
    let cb = "http://127.0.0.1:1/callback";
    let code = code_for(&sim, cb).await;
    let (status, body) = exchange(&sim, &code, cb).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("rt"));
    assert!(body["access_token"].is_string() && body["api_url"].is_string());
    let (status, body) = exchange(&sim, &code, cb).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Another redirect than the one authorized.
    let code = code_for(&sim, cb).await;
    let (status, _) = exchange(&sim, &code, "http://127.0.0.1:2/callback").await;
    assert_eq!(status, 400);
    // Five minutes and a second later the code is dead.
    let code = code_for(&sim, cb).await;
    clock.advance(std::time::Duration::from_secs(301));
    let (status, _) = exchange(&sim, &code, cb).await;
    assert_eq!(status, 400);
    let code = code_for(&sim, cb).await;
    clock.advance(std::time::Duration::from_secs(299));
    let (status, _) = exchange(&sim, &code, cb).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn denied_and_forged_callbacks_store_nothing() {
    let clock: SharedClock = ManualClock::auto(World::generate(6, Scale::small()).scale.end);
    let (sim, _) = sim(
        clock.clone(),
        Faults {
            deny_authorization: true,
            ..Faults::default()
        },
    )
    .await;
    let http = HttpClient::new(clock.clone());
    let store = Store::in_memory().unwrap();
    let tokens = StoreTokens::new(store.clone());
    let key = TokenCache::refresh_token_key(&sim.client_id);

    let pending = authorize::begin(settings(&sim)).await.unwrap();
    let url = pending.url().to_string();
    let (r, _) = tokio::join!(pending.finish(&http, &tokens), reqwest::get(&url));
    assert!(
        matches!(r, Err(AuthorizeError::Denied(ref m)) if m.contains("access_denied")),
        "{r:?}"
    );

    // A callback that did not come from this authorization (wrong state) is refused.
    let pending = authorize::begin(settings(&sim)).await.unwrap();
    let forged = format!("{}?code=abc&state=forged", pending.redirect_uri());
    let (r, _) = tokio::join!(pending.finish(&http, &tokens), reqwest::get(&forged));
    assert!(matches!(r, Err(AuthorizeError::StateMismatch)), "{r:?}");
    assert_eq!(tokens.get(&key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_auth_zoom_stores_the_token_in_the_state_file() {
    let (sim, _) = sim(ferry::clock::system(), Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ferry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state: state/ferry.db\nconnections:\n  zoom:\n    kind: zoom\n    auth:\n      type: oauth\n      client_id: {}\n      client_secret: ${{SIM_SECRET}}\n    base_url: {}\n    token_url: {}\n",
            sim.client_id, sim.base_url, sim.token_url
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .env("SIM_SECRET", ferry::sim::zoom::CLIENT_SECRET)
        .env_remove("FERRY_STATE_KEY")
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "auth",
            "zoom",
            "--port",
            "0",
            "--timeout",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url_tx, url_rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut url_tx = Some(url_tx);
        let mut rest = Vec::new();
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("http") {
                if let Some(tx) = url_tx.take() {
                    let _ = tx.send(line.clone());
                }
            }
            rest.push(line);
        }
        rest
    });
    let url = url_rx.await.expect("ferry printed the authorize URL");
    assert!(url.starts_with(&sim.authorize_url));
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = reader.join().unwrap().join("\n");
    assert!(
        printed.contains("Stored the Zoom refresh token"),
        "{printed}"
    );

    let path = dir.path().join("state/ferry.db");
    let store = Store::open(&path).unwrap();
    let key = TokenCache::refresh_token_key(&sim.client_id);
    let token = store.token_get(&key).await.unwrap().expect("stored");
    assert!(token.value.starts_with("rt"));
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(dir.path().join("state/ferry.db-wal")).unwrap_or_default());
    assert!(
        !bytes
            .windows(token.value.len())
            .any(|w| w == token.value.as_bytes())
    );
    assert!(
        !printed.contains(&token.value),
        "the token is never printed"
    );
}
