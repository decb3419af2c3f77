//! The floor: the fewest Salesforce calls that could do what a backfill did. Each sObject's
//! writes at 200 records a call (sObject Collections), plus each lookup rule's distinct keys
//! in as few queries as Salesforce's request limit allows (16,384 bytes of URI and headers,
//! less the room the query's head and the headers take), five queries to a Composite call
//! (one API call). It assumes one client that sees the whole backfill at once and packs the
//! queries of every rule together; describes and token requests are left out.

use super::Writes;
use chrono::{DateTime, Utc};
use ferry::sim::world::{Attendee, CrmRole, INTERNAL_DOMAIN, World};
use std::collections::{BTreeMap, BTreeSet};

/// Encoded characters of the value list one lookup query may carry: 16,384 bytes of request,
/// less the path, the SELECT ... WHERE around the list and the headers (about 1 KiB).
const SOQL_ROOM: usize = 16_384 - 1_024;

/// Queries (or query pages) one Composite call may carry.
const QUERIES_PER_CALL: u64 = 5;

#[derive(Debug, Clone, Default)]
pub struct Floor {
    /// Distinct keys each lookup rule needs, by rule.
    pub lookup_keys: BTreeMap<&'static str, usize>,
    /// Queries the lookups need, and the calls that carry them (five to a Composite).
    pub lookup_queries: u64,
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
    // 'value' plus ", " per key, encoded as the query travels in a URL
    let chars: usize = keys
        .iter()
        .map(|k| ferry::connectors::salesforce::enc_query(&format!("'{k}', ")).len())
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
    let mut queries = 0u64;
    for (name, keys) in rules {
        f.lookup_keys.insert(name, keys.len());
        queries += queries_for(keys);
    }
    f.lookup_queries = queries;
    f.lookup_calls = queries.div_ceil(QUERIES_PER_CALL);
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
