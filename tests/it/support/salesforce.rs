//! Shared setup for the Salesforce tests: a sim on an auto-advancing virtual clock and a
//! connector logged in with the JWT bearer flow.

use chrono::{DateTime, Utc};
use ferry::clock::{ManualClock, SharedClock};
use ferry::connectors::salesforce::{SalesforceConnector, SalesforceSettings, SfAuth};
use ferry::http::HttpClient;
use ferry::sim::salesforce::{SalesforceSim, SfSimHandle, SfSimOptions};
use std::sync::Arc;

pub const PRIVATE_KEY: &str = include_str!("../../fixtures/sf/jwt_private_key.pem");
pub const WRONG_KEY: &str = include_str!("../../fixtures/sf/wrong_private_key.pem");
pub const CERTIFICATE: &str = include_str!("../../fixtures/sf/jwt_certificate.pem");

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub struct Env {
    pub clock: Arc<ManualClock>,
    pub sim: SfSimHandle,
}

impl Env {
    pub async fn start(tune: impl FnOnce(&mut SfSimOptions)) -> Env {
        let clock = ManualClock::auto(t0());
        let shared: SharedClock = clock.clone();
        let mut opts = SfSimOptions::new(shared);
        opts.jwt_certificate_pem = Some(CERTIFICATE.to_string());
        tune(&mut opts);
        let sim = SalesforceSim::start(opts).await.unwrap();
        Env { clock, sim }
    }

    pub fn http(&self) -> HttpClient {
        let shared: SharedClock = self.clock.clone();
        HttpClient::new(shared)
    }

    pub fn jwt_auth(&self, key: &str) -> SfAuth {
        SfAuth::JwtBearer {
            login_url: self.sim.login_url.clone(),
            client_id: self.sim.client_id.clone(),
            username: self.sim.username.clone(),
            private_key_pem: key.into(),
        }
    }

    pub fn refresh_auth(&self) -> SfAuth {
        SfAuth::RefreshToken {
            login_url: self.sim.login_url.clone(),
            client_id: self.sim.client_id.clone(),
            client_secret: Some(self.sim.client_secret.as_str().into()),
            refresh_token: self.sim.refresh_token.as_str().into(),
        }
    }

    pub fn settings(&self) -> SalesforceSettings {
        SalesforceSettings::new(self.jwt_auth(PRIVATE_KEY))
    }

    pub async fn connect(&self) -> SalesforceConnector {
        self.connect_with(self.settings()).await
    }

    pub async fn connect_with(&self, s: SalesforceSettings) -> SalesforceConnector {
        SalesforceConnector::connect(s, self.http()).await.unwrap()
    }
}

pub fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}
