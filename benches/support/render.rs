//! Offline render throughput: synthetic meetings through the reference pipeline's `where`,
//! lookups (canned), vars and every sink's templates, on the calling thread.

use ferry::config::{Pipeline, PipelineTest};
use ferry::engine::testing;
use ferry::sim::world::{Attendee, World};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct RenderFigures {
    pub records: usize,
    /// Records rendered in all (created, related, tasks, opportunity updates).
    pub sink_records: usize,
    pub elapsed: Duration,
    /// Template evaluations during the measurement: answered directly over JSON, and left
    /// to minijinja.
    pub direct: u64,
    pub by_minijinja: u64,
}

impl RenderFigures {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Records the sinks produced (Events, EventRelations, Tasks, Opportunity updates) per
    /// second.
    pub fn sink_records_per_second(&self) -> f64 {
        self.sink_records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One test case per meeting of the world: the record as the source and enrichments give it,
/// with every external attendee found as a Contact (or a Lead), the owner and an opportunity.
pub fn synthetic_cases(world: &World) -> Vec<PipelineTest> {
    let mut out = Vec::new();
    for (i, m) in world.meetings.iter().enumerate() {
        let host = &world.users[m.host];
        let participants: Vec<Value> = m
            .participants
            .iter()
            .map(|p| {
                json!({"name": p.name, "user_email": p.email, "id": p.id,
                             "join_time": iso(p.join_time), "leave_time": iso(p.leave_time),
                             "duration": p.duration_secs()})
            })
            .collect();
        let mut attendees = Map::new();
        for p in &m.participants {
            if let Attendee::External(x) = p.attendee {
                if p.email.is_empty() {
                    continue;
                }
                let hit = if world.people[x].role == ferry::sim::world::CrmRole::Lead {
                    json!({"sobject": "Lead", "Id": format!("00Q{x:012}"), "Company": "X"})
                } else {
                    json!({"sobject": "Contact", "Id": format!("003{x:012}"),
                           "AccountId": format!("001{:012}", world.people[x].company),
                           "Name": world.people[x].name()})
                };
                attendees.insert(p.email.to_ascii_lowercase(), hit);
            }
        }
        let record = json!({
            "uuid": m.uuid, "id": m.id, "topic": m.topic, "user_email": host.email,
            "start_time": iso(m.start), "end_time": iso(m.end), "duration": m.duration_minutes(),
            "participants_count": m.participants.len(), "has_recording": m.recording.is_some(),
            "participants": participants,
            "recordings": m.recording.as_ref().map(|r| json!({"share_url": r.share_url})),
            "summary": m.summary.as_ref().map(|s| json!({"summary_overview": s.overview,
                                                         "next_steps": s.next_steps})),
        });
        let mut lookups = Map::new();
        lookups.insert("attendees".into(), Value::Object(attendees));
        lookups.insert("owner".into(), json!({"Id": format!("005{:012}", m.host)}));
        lookups.insert(
            "opportunity".into(),
            json!({"sobject": "Opportunity", "Id": format!("006{i:012}"),
                   "Last_Zoom_Meeting__c": null}),
        );
        out.push(PipelineTest {
            name: m.uuid.clone(),
            record,
            lookups,
            expect: Default::default(),
            pos: ferry::config::SourcePos {
                file: "bench".into(),
                line: 0,
                column: 0,
            },
        });
    }
    out
}

/// Renders `n` records (cycling over the cases) on one thread of its own.
pub fn throughput(
    p: &Pipeline,
    settings: &Value,
    cases: &[PipelineTest],
    n: usize,
) -> Result<RenderFigures, String> {
    if cases.is_empty() {
        return Err("no synthetic records".into());
    }
    std::thread::scope(|s| {
        s.spawn(|| on_this_thread(p, settings, cases, n))
            .join()
            .unwrap_or_else(|_| Err("the render thread panicked".into()))
    })
}

fn on_this_thread(
    p: &Pipeline,
    settings: &Value,
    cases: &[PipelineTest],
    n: usize,
) -> Result<RenderFigures, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let g = testing::test_globals(p, settings);
        // Warm up (template compilation caches, allocator).
        for c in cases.iter().take(200) {
            testing::produce_with(p, c.record.clone(), &c.lookups, &g)
                .await
                .map_err(|e| e.to_string())?;
        }
        // The engine receives each record owned, as read; copies are made before the clock
        // starts, a block at a time so that they do not weigh on memory.
        let mut sink_records = 0;
        let mut elapsed = Duration::ZERO;
        let (direct0, slow0) = ferry::template::evaluation_counts();
        let mut k = 0;
        while k < n {
            let block: Vec<(serde_json::Value, &PipelineTest)> = (k..n.min(k + 1000))
                .map(|i| {
                    let c = &cases[i % cases.len()];
                    (c.record.clone(), c)
                })
                .collect();
            k += block.len();
            let started = Instant::now();
            for (record, c) in block {
                let out = testing::produce_with(p, record, &c.lookups, &g)
                    .await
                    .map_err(|e| e.to_string())?;
                sink_records += out.iter().map(|(_, recs)| recs.len()).sum::<usize>();
            }
            elapsed += started.elapsed();
        }
        Ok(RenderFigures {
            records: n,
            sink_records,
            elapsed,
            direct: ferry::template::evaluation_counts().0 - direct0,
            by_minijinja: ferry::template::evaluation_counts().1 - slow0,
        })
    })
}
