//! When each pipeline runs next. Pure functions over the clock's time, so tests can step
//! through a day of schedules without waiting.

use crate::config::Schedule;
use chrono::{DateTime, Utc};

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
