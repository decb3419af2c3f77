//! When each pipeline runs next, and the scheduler that starts the runs. The due times are
//! computed on the injected clock, so tests step through a day of schedules without waiting.

use super::{Shared, Trigger};
use crate::config::Schedule;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The first run time strictly after `after`. An interval counts from the last start; a cron
/// expression is evaluated in UTC.
pub fn next_run(
    schedule: &Schedule,
    last_start: Option<DateTime<Utc>>,
    after: DateTime<Utc>,
) -> DateTime<Utc> {
    match schedule {
        Schedule::Interval(d) => {
            let step =
                chrono::Duration::from_std(*d).unwrap_or_else(|_| chrono::Duration::hours(1));
            match last_start {
                Some(t) if t + step > after => t + step,
                // Never run yet, or overdue: now.
                _ => after,
            }
        }
        Schedule::Cron(c) => c
            .after(&after)
            .next()
            .unwrap_or(after + chrono::Duration::days(365)),
    }
}

/// When each pipeline last started, from the state file: interval schedules continue from
/// there, so a restart does not run everything at once. Read before anything else can run.
pub(crate) async fn last_starts(shared: &Shared) -> BTreeMap<String, DateTime<Utc>> {
    match shared.store.last_runs().await {
        Ok(rows) => rows
            .into_iter()
            .map(|r| (r.pipeline, r.started_at))
            .collect(),
        Err(e) => {
            tracing::warn!("could not read the run history: {e}");
            BTreeMap::new()
        }
    }
}

/// True when the pipeline's last run stopped at a daily limit that lets calls go by now.
fn resume_due(shared: &Shared, pipeline: &str, now: DateTime<Utc>) -> bool {
    shared
        .status()
        .pipelines
        .get(pipeline)
        .and_then(|p| p.resume_at)
        .is_some_and(|t| now >= t)
}

/// True when a scheduled run was skipped for a lease held elsewhere (or a state that could not
/// be reached) and the time to try again has come.
fn lease_retry_due(shared: &Shared, pipeline: &str, now: DateTime<Utc>) -> bool {
    shared
        .status()
        .pipelines
        .get(pipeline)
        .and_then(|p| p.lease_retry_at)
        .is_some_and(|t| now >= t)
}

/// How often (on the daemon's clock) the scheduler looks for a run that died holding its
/// pipeline (another daemon killed mid-run, on a shared state) to take it over.
const ORPHAN_CHECK_SECS: i64 = 5;

/// Scheduled pipelines whose latest run never finished and whose lease is free, expired or
/// held by a process known to be gone: their runner died mid-run. Taking them over at once
/// (rather than at the next scheduled time) resumes them from their last checkpoint within
/// the lease time.
async fn orphaned(
    shared: &Shared,
    running: &BTreeMap<String, tokio::task::JoinHandle<()>>,
) -> Vec<String> {
    let project = shared.project();
    let Ok(rows) = shared.store.last_runs().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in rows {
        if r.finished_at.is_some()
            || running.contains_key(&r.pipeline)
            || project
                .pipeline(&r.pipeline)
                .is_none_or(|p| p.schedule.is_none())
            || shared
                .status()
                .pipelines
                .get(&r.pipeline)
                .is_some_and(|p| p.running)
        {
            continue;
        }
        match shared.store.lease_holder(&r.pipeline).await {
            Ok(None) => out.push(r.pipeline),
            Ok(Some(h)) if crate::state::holder_is_dead(&h.holder) => out.push(r.pipeline),
            _ => {}
        }
    }
    out
}

/// A schedule's identity, to notice when a reload changed it.
fn fingerprint(s: &Schedule) -> String {
    match s {
        Schedule::Interval(d) => format!("every {}s", d.as_secs()),
        Schedule::Cron(c) => format!("cron {c}"),
    }
}

/// Per pipeline: the schedule it was computed for, and when it is due.
struct Due {
    fingerprint: String,
    at: DateTime<Utc>,
}

/// Starts each scheduled pipeline when it is due, on the project version of that moment. A
/// pipeline whose run is still going is not started again: the next due time counts from the
/// start of the run that happens, so a slow run delays, never doubles, the next one.
pub(crate) async fn run_scheduler(
    shared: Arc<Shared>,
    mut last_start: BTreeMap<String, DateTime<Utc>>,
) {
    let mut due: BTreeMap<String, Due> = BTreeMap::new();
    let mut running: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let mut next_orphan_check = shared.clock.now();
    loop {
        if shared.shutdown().is_triggered() {
            break;
        }
        running.retain(|_, h| !h.is_finished());
        let project = shared.project();
        let now = shared.clock.now();
        due.retain(|name, _| project.pipeline(name).is_some_and(|p| p.schedule.is_some()));
        for p in &project.pipelines {
            let Some(schedule) = &p.schedule else {
                continue;
            };
            let fp = fingerprint(schedule);
            let entry = due.entry(p.name.clone()).or_insert_with(|| Due {
                fingerprint: fp.clone(),
                at: next_run(schedule, last_start.get(&p.name).copied(), now),
            });
            if entry.fingerprint != fp {
                // A reload changed the schedule: the new one applies from now on.
                entry.fingerprint = fp;
                entry.at = next_run(schedule, last_start.get(&p.name).copied(), now);
            }
            if now >= entry.at && !running.contains_key(&p.name) {
                last_start.insert(p.name.clone(), now);
                entry.at = next_run(schedule, Some(now), now);
                let task = shared.spawn_run(&p.name, Trigger::Schedule);
                running.insert(p.name.clone(), task);
            } else if !running.contains_key(&p.name) && resume_due(&shared, &p.name, now) {
                // The last run stopped at a daily limit that now lets calls go: go on from
                // its checkpoint now rather than at the next scheduled time.
                shared.update_status(|s| {
                    if let Some(ps) = s.pipelines.get_mut(&p.name) {
                        ps.resume_at = None;
                    }
                });
                tracing::info!(pipeline = %p.name, "the daily limit lets calls go again; resuming");
                let task = shared.spawn_run(&p.name, Trigger::Schedule);
                running.insert(p.name.clone(), task);
            } else if !running.contains_key(&p.name) && lease_retry_due(&shared, &p.name, now) {
                // Another process held the pipeline when it was due: its lease has run out
                // now (it may have died), so try to take the pipeline over.
                shared.update_status(|s| {
                    if let Some(ps) = s.pipelines.get_mut(&p.name) {
                        ps.lease_retry_at = None;
                    }
                });
                let task = shared.spawn_run(&p.name, Trigger::Schedule);
                running.insert(p.name.clone(), task);
            }
        }
        if now >= next_orphan_check {
            next_orphan_check = now + chrono::Duration::seconds(ORPHAN_CHECK_SECS);
            for name in orphaned(&shared, &running).await {
                tracing::info!(pipeline = %name, "its last run never finished and nobody holds it; taking it over");
                last_start.insert(name.clone(), now);
                let task = shared.spawn_run(&name, Trigger::Schedule);
                running.insert(name, task);
            }
        }
        shared.update_status(|s| {
            for (name, d) in &due {
                let ps = s.pipelines.entry(name.clone()).or_default();
                ps.next_run = Some(ps.resume_at.map_or(d.at, |r| r.min(d.at)));
            }
            for (name, ps) in s.pipelines.iter_mut() {
                if !due.contains_key(name) {
                    ps.next_run = None;
                }
            }
            s.scheduler_passes += 1;
        });
        // Look at the clock again after a tick of real time, or sooner when woken.
        let wake = shared.schedule_wake.notified();
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(shared.options.tick) => {}
            _ = shared.shutdown().wait() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn interval_counts_from_the_last_start() {
        let s = Schedule::Interval(std::time::Duration::from_secs(900));
        assert_eq!(
            next_run(&s, None, t("2026-03-01T10:00:00Z")),
            t("2026-03-01T10:00:00Z")
        );
        assert_eq!(
            next_run(
                &s,
                Some(t("2026-03-01T10:00:00Z")),
                t("2026-03-01T10:01:00Z")
            ),
            t("2026-03-01T10:15:00Z")
        );
        // Overdue (the daemon was down): run at once, not a burst of missed runs.
        assert_eq!(
            next_run(
                &s,
                Some(t("2026-03-01T08:00:00Z")),
                t("2026-03-01T10:01:00Z")
            ),
            t("2026-03-01T10:01:00Z")
        );
    }

    #[test]
    fn cron_is_evaluated_in_utc() {
        // the cron crate takes seconds first
        let c = cron::Schedule::from_str("0 */15 * * * *").expect("cron");
        let s = Schedule::Cron(Box::new(c));
        assert_eq!(
            next_run(&s, None, t("2026-03-01T10:01:00Z")),
            t("2026-03-01T10:15:00Z")
        );
    }
}
