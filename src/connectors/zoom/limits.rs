//! Zoom's published rate limits per plan, as budgets for the HTTP layer.

use crate::http::RateLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoomPlan {
    Free,
    Pro,
    Business,
}

impl std::str::FromStr for ZoomPlan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "free" | "basic" => Ok(Self::Free),
            "pro" => Ok(Self::Pro),
            "business" | "enterprise" | "education" => Ok(Self::Business),
            other => Err(format!(
                "unknown Zoom plan `{other}` (free, pro or business)"
            )),
        }
    }
}

/// Published per-second (and daily) limits of one category: (per second, per day).
pub fn published(plan: ZoomPlan, bucket: &str) -> (f64, Option<u64>) {
    use ZoomPlan::*;
    match (plan, bucket) {
        (Free, "light") => (4.0, Some(6_000)),
        (Free, "medium") => (2.0, Some(2_000)),
        (Free, "heavy") => (1.0, Some(1_000)),
        (Free, "resource_intensive") => (10.0 / 60.0, Some(30_000)),
        (Pro, "light") => (30.0, None),
        (Pro, "medium") => (20.0, None),
        (Pro, "heavy") => (10.0, Some(30_000)),
        (Pro, "resource_intensive") => (10.0 / 60.0, Some(30_000)),
        (Business, "light") => (80.0, None),
        (Business, "medium") => (60.0, None),
        (Business, "heavy") => (40.0, Some(60_000)),
        (Business, "resource_intensive") => (20.0 / 60.0, Some(60_000)),
        // Zoom Phone's own table (Free accounts have no Phone; use Pro's).
        (Free | Pro, "phone_light") => (20.0, None),
        (Free | Pro, "phone_medium") => (10.0, None),
        (Free | Pro, "phone_heavy") => (5.0, Some(15_000)),
        (Free | Pro, "phone_resource_intensive") => (5.0 / 60.0, Some(15_000)),
        (Business, "phone_light") => (40.0, None),
        (Business, "phone_medium") => (20.0, None),
        (Business, "phone_heavy") => (10.0, Some(30_000)),
        (Business, "phone_resource_intensive") => (10.0 / 60.0, Some(30_000)),
        // The token endpoint: not in Zoom's tables; keep it gentle.
        _ => (5.0, None),
    }
}

pub const BUCKETS: &[&str] = &[
    "light",
    "medium",
    "heavy",
    "resource_intensive",
    "phone_light",
    "phone_medium",
    "phone_heavy",
    "phone_resource_intensive",
];

/// The budgets ferry allows itself: the plan's table times `headroom`.
pub fn rate_limits(plan: ZoomPlan, headroom: f64) -> RateLimits {
    let h = if headroom.is_finite() && headroom > 0.0 {
        headroom.min(1.0)
    } else {
        0.8
    };
    let mut limits = RateLimits {
        max_concurrency: 8,
        ..Default::default()
    };
    for b in BUCKETS {
        let (qps, day) = published(plan, b);
        // Zoom counts requests per second: after an idle spell, a burst of what the headroom
        // leaves, plus a second of pacing, stays within the published limit.
        limits = limits
            .category(b, qps * h, day.map(|d| (d as f64 * h) as u64))
            .burst(b, qps - qps * h);
    }
    // Heavy and resource-intensive share one daily cap (separately for Phone).
    for (b, key) in [
        ("heavy", "heavy_ri"),
        ("resource_intensive", "heavy_ri"),
        ("phone_heavy", "phone_heavy_ri"),
        ("phone_resource_intensive", "phone_heavy_ri"),
    ] {
        if plan != ZoomPlan::Free || b.starts_with("phone") {
            limits.shared_daily.insert(b.to_string(), key.to_string());
        }
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_and_a_second_of_pacing_stay_within_the_published_limit() {
        for plan in [ZoomPlan::Free, ZoomPlan::Pro, ZoomPlan::Business] {
            for h in [0.5, 0.8, 0.9, 1.0] {
                let limits = rate_limits(plan, h);
                for b in BUCKETS {
                    let c = &limits.categories[*b];
                    let (published_qps, _) = published(plan, b);
                    let burst = c.burst.unwrap_or(c.per_second).max(1.0);
                    assert!(
                        burst + c.per_second <= published_qps.max(1.0) + 1.0 + 1e-9,
                        "{plan:?} {b} at {h}: burst {burst} + {} per second",
                        c.per_second
                    );
                    if published_qps * (1.0 - h) >= 1.0 {
                        assert!(burst + c.per_second <= published_qps + 1e-9);
                    }
                }
            }
        }
    }
}
