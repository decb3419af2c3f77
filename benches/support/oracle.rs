//! The org a backfill must leave, derived independently of ferry: from the simulated world
//! (which meetings ended, who attended, their AI next steps) and the records the org was
//! seeded with (who is a Contact or Lead, which domains have an Account), by the rules of
//! the reference pipeline: an Event for each meeting with a known outside attendee, an
//! EventRelation for each matched person, a Task for each next step.

use chrono::{DateTime, Utc};
use ferry::sim::sandbox::Sandbox;
use ferry::sim::world::Attendee;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What the org holds against what the oracle expects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OracleCheck {
    pub expected_events: usize,
    pub events: usize,
    /// Events the org has that the oracle does not expect, and the other way round.
    pub unexpected: usize,
    pub missing: usize,
    pub expected_relations: usize,
    pub relations: usize,
    pub expected_tasks: usize,
    pub tasks: usize,
}

impl OracleCheck {
    pub fn holds(&self) -> bool {
        self.unexpected == 0
            && self.missing == 0
            && self.relations == self.expected_relations
            && self.tasks == self.expected_tasks
    }
}

fn lower(v: &Value, f: &str) -> String {
    v.get(f)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn id(v: &Value) -> String {
    v.get("Id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Compares the org with the oracle for meetings that started at `since` or later.
pub fn check(sandbox: &Sandbox, since: DateTime<Utc>) -> OracleCheck {
    let sf = &sandbox.salesforce;
    let contacts: BTreeMap<String, String> = sf
        .records("Contact")
        .iter()
        .map(|c| (lower(c, "Email"), id(c)))
        .collect();
    let leads: BTreeMap<String, String> = sf
        .records("Lead")
        .iter()
        .map(|c| (lower(c, "Email"), id(c)))
        .collect();
    let domains: BTreeSet<String> = sf
        .records("Account")
        .iter()
        .map(|a| lower(a, "Website_Domain__c"))
        .collect();
    let mut expected = BTreeSet::new();
    let (mut expected_relations, mut expected_tasks) = (0usize, 0usize);
    for m in &sandbox.world.meetings {
        if m.start < since || !m.in_reports() {
            continue;
        }
        let mut people = BTreeSet::new();
        let mut any = false;
        for p in &m.participants {
            let email = p.email.trim().to_ascii_lowercase();
            if email.is_empty() || matches!(p.attendee, Attendee::Internal(_)) {
                continue;
            }
            let domain = email
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default();
            if let Some(i) = contacts.get(&email).or_else(|| leads.get(&email)) {
                people.insert(i.clone());
                any = true;
            } else if domains.contains(&domain) {
                any = true;
            }
        }
        if any {
            expected.insert(m.uuid.clone());
            expected_relations += people.len();
            expected_tasks += m.summary.as_ref().map_or(0, |s| s.next_steps.len());
        }
    }
    let events: BTreeSet<String> = sf
        .records("Event")
        .iter()
        .map(|e| {
            e.get("Zoom_Meeting_UUID__c")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let tasks = sf
        .records("Task")
        .iter()
        .filter(|t| {
            t.get("Zoom_Action_Item_Key__c")
                .is_some_and(|v| !v.is_null())
        })
        .count();
    OracleCheck {
        expected_events: expected.len(),
        events: events.len(),
        unexpected: events.difference(&expected).count(),
        missing: expected.difference(&events).count(),
        expected_relations,
        relations: sf.records("EventRelation").len(),
        expected_tasks,
        tasks,
    }
}
