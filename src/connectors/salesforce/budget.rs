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

#[derive(Debug, Default)]
pub(crate) struct BudgetState {
    pub(crate) calls: VecDeque<DateTime<Utc>>,
    pub(crate) org_used: Option<u64>,
    pub(crate) org_max: Option<u64>,
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
            return Err(SfError::BudgetExhausted {
                scope: BudgetScope::Org,
                used,
                limit: max,
            });
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
}
