//! Both simulators started over one seeded world, with Salesforce seeded from it, and a
//! project directory (ferry.yaml + the example pipelines) pointing at them. Used by
//! `ferry demo`, `ferry sandbox`, the integration tests and the benchmarks.

use super::salesforce::{SalesforceSim, SfFaults, SfSimHandle, SfSimOptions};
use super::world::{Scale, World};
use super::zoom::{Faults, SimOptions, ZoomSim, ZoomSimHandle};
use crate::clock::SharedClock;
use crate::connectors::zoom::limits::ZoomPlan;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The example pipelines, compiled in so `ferry demo` works from any directory.
pub const EXAMPLE_PIPELINES: &[(&str, &str)] = &[
    (
        "meetings-to-events.yaml",
        include_str!("../../pipelines/meetings-to-events.yaml"),
    ),
    (
        "recordings-to-events.yaml",
        include_str!("../../pipelines/recordings-to-events.yaml"),
    ),
    (
        "webinar-attendance.yaml",
        include_str!("../../pipelines/webinar-attendance.yaml"),
    ),
    (
        "phone-calls-to-tasks.yaml",
        include_str!("../../pipelines/phone-calls-to-tasks.yaml"),
    ),
    (
        "zoom-hosts-report.yaml",
        include_str!("../../pipelines/zoom-hosts-report.yaml"),
    ),
];

/// The webhook secret the sandbox's ferry.yaml and the simulator's sender share.
pub const WEBHOOK_SECRET: &str = "sandbox-webhook-secret";

pub struct SandboxOptions {
    pub seed: u64,
    pub scale: Scale,
    pub clock: SharedClock,
    pub zoom_faults: Faults,
    pub sf_faults: SfFaults,
    pub plan: ZoomPlan,
    /// Salesforce's daily allowance for the org.
    pub sf_daily_limit: u64,
    /// Records per Salesforce query page (Salesforce's default: 2,000).
    pub sf_query_page_size: usize,
}

impl SandboxOptions {
    /// A small, fault-free world ending at the clock's now.
    pub fn new(clock: SharedClock) -> Self {
        let scale = Scale {
            end: clock.now(),
            ..Scale::default()
        };
        SandboxOptions {
            seed: 7,
            scale,
            clock,
            zoom_faults: Faults {
                enforce_rate_limits: true,
                ..Faults::default()
            },
            sf_faults: SfFaults::default(),
            plan: ZoomPlan::Pro,
            sf_daily_limit: 100_000,
            sf_query_page_size: 2000,
        }
    }
}

/// Running simulators and what Salesforce was seeded with.
pub struct Sandbox {
    pub world: Arc<World>,
    pub zoom: ZoomSimHandle,
    pub salesforce: SfSimHandle,
    pub seeded: Seeded,
}

/// Counts of what Salesforce holds before ferry writes anything.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    pub users: usize,
    pub accounts: usize,
    pub contacts: usize,
    pub leads: usize,
    pub opportunities: usize,
    pub campaigns: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("starting the Zoom simulator: {0}")]
    Zoom(std::io::Error),
    #[error("starting the Salesforce simulator: {0}")]
    Salesforce(String),
    #[error("writing the sandbox project in {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl Sandbox {
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let world = Arc::new(World::generate(opts.seed, opts.scale.clone()));
        let zoom = ZoomSim::start(SimOptions {
            world: world.clone(),
            clock: opts.clock.clone(),
            plan: opts.plan,
            faults: opts.zoom_faults,
        })
        .await
        .map_err(SandboxError::Zoom)?;
        let mut sf_opts = SfSimOptions::new(opts.clock.clone());
        sf_opts.faults = SfFaults {
            bulk_processing: std::time::Duration::from_millis(0),
            ..opts.sf_faults
        };
        sf_opts.daily_limit = opts.sf_daily_limit;
        sf_opts.query_page_size = opts.sf_query_page_size;
        let salesforce = SalesforceSim::start(sf_opts)
            .await
            .map_err(|e| SandboxError::Salesforce(e.to_string()))?;
        let seeded = seed_salesforce(&salesforce, &world);
        Ok(Sandbox {
            world,
            zoom,
            salesforce,
            seeded,
        })
    }

    /// The ferry.yaml that points at these simulators, with its state file in `dir`.
    pub fn ferry_yaml(&self) -> String {
        format!(
            r#"# Written by ferry for its built-in simulators.
state: .ferry/state.db

connections:
  zoom:
    kind: zoom
    auth:
      type: server_to_server
      account_id: {account}
      client_id: {zoom_client}
      client_secret: ${{file:secrets/zoom_client_secret}}
    plan: pro
    headroom: 0.8
    webhook_secret: ${{file:secrets/zoom_webhook_secret}}
    base_url: {zoom_base}
    token_url: {zoom_token}

  salesforce:
    kind: salesforce
    auth:
      type: client_credentials
      login_url: {sf_login}
      client_id: {sf_client}
      client_secret: ${{file:secrets/salesforce_client_secret}}
    api_version: "{api}"
    daily_budget: 5000

settings:
  internal_domains: [acme.com, acme.zoom.us]

daemon:
  listen: 127.0.0.1:8787
"#,
            account = self.zoom.account_id,
            zoom_client = self.zoom.client_id,
            zoom_base = self.zoom.base_url,
            zoom_token = self.zoom.token_url,
            // client credentials go to the org's own (My Domain) host
            sf_login = self.salesforce.instance_url,
            sf_client = self.salesforce.client_id,
            api = self.salesforce.api_version,
        )
    }

    /// Writes ferry.yaml, its secrets and the given pipelines into `dir`.
    pub fn write_project(
        &self,
        dir: &Path,
        pipelines: &[(&str, &str)],
    ) -> Result<PathBuf, SandboxError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SandboxError::Write { path, source }
        };
        std::fs::create_dir_all(dir.join("secrets")).map_err(io(dir))?;
        std::fs::create_dir_all(dir.join("pipelines")).map_err(io(dir))?;
        let files = [
            (
                "secrets/zoom_client_secret",
                self.zoom.client_secret.clone(),
            ),
            ("secrets/zoom_webhook_secret", WEBHOOK_SECRET.to_string()),
            (
                "secrets/salesforce_client_secret",
                self.salesforce.client_secret.clone(),
            ),
            ("ferry.yaml", self.ferry_yaml()),
        ];
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(io(&p))?;
        }
        for (name, text) in pipelines {
            let p = dir.join("pipelines").join(name);
            std::fs::write(&p, text).map_err(io(&p))?;
        }
        Ok(dir.join("ferry.yaml"))
    }
}

/// Seeds Users, Accounts, Contacts, Leads, open Opportunities (one for every other Account)
/// and a Campaign per webinar, from the same world the Zoom simulator serves.
pub fn seed_salesforce(sf: &SfSimHandle, world: &World) -> Seeded {
    let users: Vec<_> = world
        .internal_users()
        .into_iter()
        .map(|u| {
            json!({"FirstName": u.first_name, "LastName": u.last_name, "Email": u.email,
                   "Username": u.username, "IsActive": true})
        })
        .collect();
    let n_users = sf.seed("User", users).len();
    let accounts = world.accounts();
    let account_ids = sf.seed(
        "Account",
        accounts
            .iter()
            .map(|a| {
                json!({"Name": a.name, "Website_Domain__c": a.website_domain,
                       "Industry": a.industry})
            })
            .collect(),
    );
    let contacts: Vec<_> = world
        .contacts()
        .into_iter()
        .map(|c| {
            json!({"FirstName": c.first_name, "LastName": c.last_name, "Email": c.email,
                   "Title": c.title, "Phone": c.phone,
                   "AccountId": account_ids.get(c.company).cloned()})
        })
        .collect();
    let n_contacts = sf.seed("Contact", contacts).len();
    let leads: Vec<_> = world
        .leads()
        .into_iter()
        .map(|l| {
            json!({"FirstName": l.first_name, "LastName": l.last_name, "Email": l.email,
                   "Company": l.company, "Title": l.title, "IsConverted": false,
                   "Status": "Open - Not Contacted"})
        })
        .collect();
    let n_leads = sf.seed("Lead", leads).len();
    let opportunities: Vec<_> = account_ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(i, id)| {
            json!({"Name": format!("{} expansion", accounts[i].name), "AccountId": id,
                   "StageName": "Prospecting", "CloseDate": "2026-12-31"})
        })
        .collect();
    let n_opps = sf.seed("Opportunity", opportunities).len();
    let campaigns: Vec<_> = world
        .webinars
        .iter()
        .map(|w| {
            json!({"Name": w.topic, "Type": "Webinar", "Status": "Planned",
                   "Zoom_Webinar_Id__c": w.id.to_string(), "IsActive": true})
        })
        .collect();
    let n_campaigns = sf.seed("Campaign", campaigns).len();
    Seeded {
        users: n_users,
        accounts: account_ids.len(),
        contacts: n_contacts,
        leads: n_leads,
        opportunities: n_opps,
        campaigns: n_campaigns,
    }
}
