//! Shared by the engine tests: a sandbox (both simulators over one seeded world), a project
//! directory pointing at it, and the Salesforce org reduced to a comparable form.

pub mod config;
pub mod daemon;
pub mod pg;
pub mod salesforce;
pub mod zoom;

use ferry::clock::SharedClock;
use ferry::config::{Project, StreamCatalog, builtin_catalogs, load_project};
use ferry::engine::connect::{Connections, connect};
use ferry::engine::report::PipelineReport;
use ferry::engine::{Engine, Mode, RunOptions};
use ferry::sim::sandbox::{EXAMPLE_PIPELINES, Sandbox, SandboxOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct Env {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub clock: SharedClock,
}

impl Env {
    pub async fn start(
        clock: SharedClock,
        meetings: usize,
        tweak: impl FnOnce(&mut SandboxOptions),
    ) -> Env {
        let mut opts = SandboxOptions::new(clock.clone());
        opts.scale.meetings = meetings;
        tweak(&mut opts);
        let sandbox = Sandbox::start(opts).await.expect("sandbox starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = sandbox
            .write_project(dir.path(), EXAMPLE_PIPELINES)
            .expect("project written");
        Env {
            sandbox,
            dir,
            config,
            clock,
        }
    }

    pub fn project(&self) -> Project {
        load(&self.config)
    }

    pub async fn connect(&self, project: &Project) -> Connections {
        connect(project, self.clock.clone())
            .await
            .expect("connects")
    }

    /// Runs (or plans) one pipeline.
    pub async fn run_one(&self, name: &str, mode: Mode) -> PipelineReport {
        let project = self.project();
        let conns = self.connect(&project).await;
        let settings = Value::Object(project.config.settings.clone());
        let p = project.pipeline(name).expect("pipeline exists");
        let engine = Engine {
            store: &conns.store,
            source: &conns.source,
            matcher: &conns.salesforce,
            sink: &conns.salesforce,
            zoom: Some(&conns.zoom.conn),
            settings: &settings,
            now: self.clock.now(),
        };
        engine.run(p, &RunOptions::new(mode)).await
    }

    /// Runs (or plans) every pipeline once, in file order.
    pub async fn run_all(&self, mode: Mode) -> Vec<PipelineReport> {
        let names: Vec<String> = self
            .project()
            .pipelines
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let mut out = Vec::new();
        for name in &names {
            out.push(self.run_one(name, mode).await);
        }
        out
    }

    /// The org's records that ferry writes, without Salesforce Ids or timestamps, so two
    /// orgs compare equal when they hold the same data.
    pub fn org(&self) -> BTreeMap<String, Vec<String>> {
        org_snapshot(&self.sandbox)
    }
}

pub fn load(config: &Path) -> Project {
    let owned = builtin_catalogs();
    let catalogs: Vec<&dyn StreamCatalog> = owned.iter().map(|c| c.as_ref()).collect();
    match load_project(config, &catalogs) {
        Ok(p) => p,
        Err(d) => panic!("project loads:\n{}", d.render()),
    }
}

/// Each written object as sorted lines of its ferry-owned fields, with references to
/// records ferry created replaced by their external keys.
pub fn org_snapshot(sb: &Sandbox) -> BTreeMap<String, Vec<String>> {
    let sf = &sb.salesforce;
    let events = sf.records("Event");
    let event_key: BTreeMap<String, String> = events
        .iter()
        .filter_map(|e| {
            Some((
                e.get("Id")?.as_str()?.to_string(),
                e.get("Zoom_Meeting_UUID__c")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let s = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let mut out = BTreeMap::new();
    let mut lines = |name: &str, f: &dyn Fn(&Value) -> String| {
        let mut v: Vec<String> = sf.records(name).iter().map(f).collect();
        v.sort();
        out.insert(name.to_string(), v);
    };
    lines("Event", &|e| {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            s(e.get("Zoom_Meeting_UUID__c")),
            s(e.get("Subject")),
            s(e.get("StartDateTime")),
            s(e.get("EndDateTime")),
            s(e.get("WhoId")),
            s(e.get("WhatId")),
            s(e.get("OwnerId")),
            s(e.get("Zoom_Recording_URL__c")),
        )
    });
    lines("EventRelation", &|r| {
        let ev = s(r.get("EventId"));
        format!(
            "{}|{}",
            event_key.get(&ev).cloned().unwrap_or(ev),
            s(r.get("RelationId"))
        )
    });
    lines("Task", &|t| {
        format!(
            "{}|{}|{}|{}|{}|{}",
            s(t.get("Zoom_Action_Item_Key__c")),
            s(t.get("Zoom_Call_Id__c")),
            s(t.get("Subject")),
            s(t.get("WhoId")),
            s(t.get("WhatId")),
            s(t.get("Status")),
        )
    });
    lines("CampaignMember", &|m| {
        format!(
            "{}|{}|{}|{}|{}",
            s(m.get("Zoom_Registrant_Key__c")),
            s(m.get("CampaignId")),
            s(m.get("ContactId")),
            s(m.get("LeadId")),
            s(m.get("Status")),
        )
    });
    lines("Opportunity", &|o| {
        format!(
            "{}|{}|{}",
            s(o.get("Name")),
            s(o.get("Last_Zoom_Meeting__c")),
            s(o.get("Zoom_Summary__c")).len(),
        )
    });
    out
}

pub fn writes(reports: &[PipelineReport]) -> u64 {
    reports
        .iter()
        .map(|r| r.summary.create + r.summary.update)
        .sum()
}
