//! The API budget: ferry's own calls over a rolling 24 h, and the org's usage as the
//! `Sforce-Limit-Info` header reports it on every response.

use super::SfError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::VecDeque;

/// Whose allowance ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BudgetScope {
    /// ferry's own `daily_budget`.
    Ferry,
    /// The org's daily API allocation.
    Org,
}

/// The budget as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub used_by_ferry: u64,
    pub org_used: Option<u64>,
    pub org_max: Option<u64>,
    pub daily_budget: Option<u64>,
}

/// How long an org reading that shows the allowance spent is believed. Salesforce counts the
/// org's calls over a rolling 24 h and says nothing of when they free up, so after this one
/// call is let through to read `Sforce-Limit-Info` again: a daemon stopped at the org's limit
/// resumes by itself once the window frees calls.
pub const ORG_RECHECK: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Debug, Default)]
pub(crate) struct BudgetState {
    pub(crate) calls: VecDeque<DateTime<Utc>>,
    pub(crate) org_used: Option<u64>,
    pub(crate) org_max: Option<u64>,
    /// When the org's usage was last read (or a recheck was let through).
    pub(crate) org_seen: Option<DateTime<Utc>>,
}

impl BudgetState {
    pub(crate) fn used(&mut self, now: DateTime<Utc>) -> u64 {
        let cutoff = now - chrono::Duration::hours(24);
        while self.calls.front().is_some_and(|t| *t <= cutoff) {
            self.calls.pop_front();
        }
        self.calls.len() as u64
    }

    pub(crate) fn record(&mut self, now: DateTime<Utc>) {
        self.calls.push_back(now);
    }

    /// The org's usage as a response's `Sforce-Limit-Info` reported it at `now`.
    pub(crate) fn org_reading(&mut self, used: u64, max: u64, now: DateTime<Utc>) {
        self.org_used = Some(used);
        self.org_max = Some(max);
        self.org_seen = Some(now);
    }

    /// True while the org's last reading shows its allowance spent and is recent.
    fn org_spent(&self, now: DateTime<Utc>) -> bool {
        matches!((self.org_used, self.org_max), (Some(u), Some(m)) if u >= m)
            && self.org_seen.is_none_or(|t| now < t + ORG_RECHECK)
    }

    /// When a call may go again, while the budget refuses calls (None: calls may go now):
    /// for ferry's budget, when enough of its calls leave the rolling 24 h; for the org's,
    /// when its reading is rechecked.
    pub(crate) fn reopens_at(
        &mut self,
        now: DateTime<Utc>,
        daily_budget: Option<u64>,
    ) -> Option<DateTime<Utc>> {
        let used = self.used(now);
        let ferry = daily_budget.filter(|l| used >= *l).map(|limit| {
            // The call whose leaving brings the count below the limit.
            let i = usize::try_from(used - limit).unwrap_or(usize::MAX);
            self.calls
                .get(i)
                .map_or(now, |t| *t + chrono::Duration::hours(24))
        });
        let org = self
            .org_spent(now)
            .then(|| self.org_seen.map_or(now, |t| t + ORG_RECHECK));
        ferry.into_iter().chain(org).max()
    }

    /// Refuses a call that would pass ferry's budget or the org's remaining allowance.
    pub(crate) fn check(
        &mut self,
        now: DateTime<Utc>,
        daily_budget: Option<u64>,
    ) -> Result<(), SfError> {
        let used = self.used(now);
        if let Some(limit) = daily_budget
            && used >= limit
        {
            return Err(SfError::BudgetExhausted {
                scope: BudgetScope::Ferry,
                used,
                limit,
            });
        }
        if let (Some(used), Some(max)) = (self.org_used, self.org_max)
            && used >= max
        {
            if self.org_spent(now) {
                return Err(SfError::BudgetExhausted {
                    scope: BudgetScope::Org,
                    used,
                    limit: max,
                });
            }
            // The reading is old: let this call through to read the usage again, and hold
            // the others back until its answer comes.
            self.org_seen = Some(now);
        }
        Ok(())
    }
}

/// Reads `api-usage=N/M` from a `Sforce-Limit-Info` header (ignoring `per-app-api-usage`).
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header.split([',', ';']).map(str::trim).find_map(|part| {
        let v = part.strip_prefix("api-usage=")?;
        let (used, max) = v.split_once('/')?;
        Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
    })
}

impl super::SalesforceConnector {
    /// While the budget (ferry's `daily_budget` or the org's allowance) refuses calls: when
    /// it lets them go again. None when calls may go now.
    pub fn budget_reopens_at(&self) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        super::lock(&self.budget).reopens_at(now, self.settings.daily_budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limit_info_forms() {
        assert_eq!(parse_limit_info("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=sample)"),
            Some((25, 5000))
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=x)"),
            None
        );
        assert_eq!(parse_limit_info("garbage"), None);
    }

    #[test]
    fn rolling_window_frees_old_calls() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut b = BudgetState::default();
        b.record(t0);
        b.record(t0 + chrono::Duration::hours(1));
        assert!(b.check(t0 + chrono::Duration::hours(2), Some(2)).is_err());
        assert_eq!(b.used(t0 + chrono::Duration::hours(24)), 1);
        assert!(b.check(t0 + chrono::Duration::hours(24), Some(2)).is_ok());
    }

    #[test]
    fn the_budget_says_when_it_reopens() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = chrono::Duration::hours;
        let mut b = BudgetState::default();
        for i in 0..3 {
            b.record(t0 + h(i));
        }
        assert_eq!(b.reopens_at(t0 + h(3), Some(4)), None);
        // Full at 3 of 3: the first call leaves the window at t0 + 24 h.
        assert_eq!(b.reopens_at(t0 + h(3), Some(3)), Some(t0 + h(24)));
        // Over the limit (it was lowered): two calls must leave.
        assert_eq!(b.reopens_at(t0 + h(3), Some(2)), Some(t0 + h(25)));
        assert!(
            b.check(t0 + h(24) - chrono::Duration::seconds(1), Some(3))
                .is_err()
        );
        assert!(b.check(t0 + h(24), Some(3)).is_ok());
    }

    #[test]
    fn a_spent_org_allowance_is_rechecked_not_believed_forever() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut b = BudgetState::default();
        b.org_reading(5000, 5000, t0);
        assert!(matches!(
            b.check(t0 + chrono::Duration::minutes(1), None),
            Err(SfError::BudgetExhausted {
                scope: BudgetScope::Org,
                ..
            })
        ));
        assert_eq!(b.reopens_at(t0, None), Some(t0 + ORG_RECHECK));
        // After the recheck time one call goes (to read the usage again); the next waits
        // for its answer.
        let later = t0 + ORG_RECHECK;
        assert!(b.check(later, None).is_ok());
        assert!(b.check(later, None).is_err());
        // The answer says the window freed calls: calls go.
        b.org_reading(4990, 5000, later);
        assert!(b.check(later, None).is_ok());
        assert_eq!(b.reopens_at(later, None), None);
    }
}
