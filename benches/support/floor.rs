//! The floor: the fewest Salesforce calls that could do what a backfill did. Each sObject's
//! writes at 200 records a call (sObject Collections), plus each lookup rule's distinct keys
//! at as many a query as ferry's query length limit allows (60,000 URL-encoded characters).
//! It assumes one client that sees the whole backfill at once; describes and token requests
//! are left out.

use super::Writes;
use chrono::{DateTime, Utc};
use ferry::sim::world::{Attendee, CrmRole, INTERNAL_DOMAIN, World};
use std::collections::{BTreeMap, BTreeSet};

/// Encoded characters of one lookup query ferry allows itself, less the SELECT ... WHERE
/// around the list.
const SOQL_ROOM: usize = 60_000 - 400;

#[derive(Debug, Clone, Default)]
pub struct Floor {
    /// Distinct keys each lookup rule needs, by rule.
    pub lookup_keys: BTreeMap<&'static str, usize>,
    pub lookup_calls: u64,
    pub write_calls: u64,
}

impl Floor {
    pub fn total(&self) -> u64 {
        self.lookup_calls + self.write_calls
    }
}

fn queries_for(keys: &BTreeSet<String>) -> u64 {
    if keys.is_empty() {
        return 0;
    }
    // 'value' plus ", " per key, percent-encoded as in the GET /query URL
    let chars: usize = keys
        .iter()
        .map(|k| ferry::connectors::salesforce::enc(&format!("'{k}', ")).len())
        .sum();
    chars.div_ceil(SOQL_ROOM).max(1) as u64
}

/// The floor for the reference meetings pipeline over the world's meetings since `since`.
pub fn floor(world: &World, since: DateTime<Utc>, writes: &Writes) -> Floor {
    let by_email: BTreeMap<String, usize> = world
        .people
        .iter()
        .enumerate()
        .map(|(i, p)| (p.email.to_ascii_lowercase(), i))
        .collect();
    let mut contact = BTreeSet::new();
    let mut lead = BTreeSet::new();
    let mut account = BTreeSet::new();
    let mut user = BTreeSet::new();
    let mut opportunity = BTreeSet::new();
    for m in &world.meetings {
        if m.start < since || !m.in_reports() {
            continue;
        }
        user.insert(world.users[m.host].email.to_ascii_lowercase());
        let mut first_account = None;
        for p in &m.participants {
            let email = p.email.to_ascii_lowercase();
            if email.is_empty() || !matches!(p.attendee, Attendee::External(_)) {
                continue;
            }
            let domain = email.rsplit_once('@').map(|(_, d)| d.to_string());
            if domain.as_deref() == Some(INTERNAL_DOMAIN) {
                continue;
            }
            contact.insert(email.clone());
            let Some(&person) = by_email.get(&email) else {
                continue;
            };
            match world.people[person].role {
                CrmRole::Contact => {
                    first_account.get_or_insert(world.people[person].company);
                }
                CrmRole::Lead => {
                    lead.insert(email.clone());
                }
                CrmRole::Unknown => {
                    lead.insert(email.clone());
                    if let Some(d) = domain {
                        account.insert(d);
                    }
                }
            }
        }
        if let Some(c) = first_account {
            // An Id is 18 characters whatever the company.
            opportunity.insert(format!("{c:018}"));
        }
    }
    let rules: [(&'static str, &BTreeSet<String>); 5] = [
        ("Contact by Email", &contact),
        ("Lead by Email", &lead),
        ("Account by domain", &account),
        ("User by Email", &user),
        ("Opportunity by AccountId", &opportunity),
    ];
    let mut f = Floor::default();
    for (name, keys) in rules {
        f.lookup_keys.insert(name, keys.len());
        f.lookup_calls += queries_for(keys);
    }
    f.write_calls = [
        writes.events,
        writes.event_relations,
        writes.tasks,
        writes.opportunities,
    ]
    .iter()
    .map(|n| n.div_ceil(200))
    .sum();
    f
}
