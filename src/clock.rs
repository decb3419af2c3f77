//! Time as a dependency. Everything that waits or reads the time (the HTTP layer's rate
//! limits and backoff, token expiry, the scheduler, the simulators) takes a [`SharedClock`],
//! so tests can drive time instead of waiting for it.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A source of "now" and a way to wait.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time and tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that tests move. In `auto` mode a `sleep` advances the clock by its duration and
/// returns at once (virtual time: backoff and rate limits are honoured, nothing waits). In
/// manual mode a `sleep` resolves when `advance` carries the clock past its deadline.
pub struct ManualClock {
    inner: Mutex<ManualInner>,
    auto: bool,
}

struct ManualInner {
    now: DateTime<Utc>,
    waiters: Vec<(DateTime<Utc>, tokio::sync::oneshot::Sender<()>)>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(ManualInner {
                now: start,
                waiters: Vec::new(),
            }),
            auto: false,
        })
    }

    /// A clock whose `sleep` jumps time forward instead of waiting.
    pub fn auto(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(ManualInner {
                now: start,
                waiters: Vec::new(),
            }),
            auto: true,
        })
    }

    /// Moves the clock forward and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, d: Duration) {
        let mut inner = self.lock();
        // A wait past the end of chrono's calendar parks the clock there instead of panicking.
        inner.now = far(inner.now, d);
        let now = inner.now;
        let waiters = std::mem::take(&mut inner.waiters);
        for (deadline, tx) in waiters {
            if deadline <= now {
                let _ = tx.send(());
            } else {
                inner.waiters.push((deadline, tx));
            }
        }
    }

    /// Sets the clock (forward only) and wakes sleepers as `advance` does.
    pub fn set(&self, t: DateTime<Utc>) {
        let now = self.now();
        if t > now {
            self.advance((t - now).to_std().unwrap_or_default());
        }
    }

    /// How many tasks are waiting on this clock.
    pub fn sleepers(&self) -> usize {
        self.lock().waiters.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        // A poisoned clock only means a test panicked elsewhere; the time itself is still valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `t + d`, saturating at the last instant chrono can represent.
fn far(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        if self.auto {
            self.advance(d);
            return Box::pin(async {});
        }
        let mut inner = self.lock();
        let deadline = far(inner.now, d);
        if deadline <= inner.now {
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        inner.waiters.push((deadline, tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid time")
    }

    #[tokio::test]
    async fn auto_clock_jumps_instead_of_waiting() {
        let c = ManualClock::auto(t0());
        c.sleep(Duration::from_secs(3600)).await;
        assert_eq!(c.now(), t0() + chrono::Duration::hours(1));
    }

    #[tokio::test]
    async fn a_wait_past_the_calendar_saturates() {
        let c = ManualClock::auto(t0());
        c.sleep(Duration::MAX).await;
        assert_eq!(c.now(), DateTime::<Utc>::MAX_UTC);
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_on_advance() {
        let c = ManualClock::new(t0());
        let c2 = c.clone();
        let h = tokio::spawn(async move { c2.sleep(Duration::from_secs(10)).await });
        while c.sleepers() == 0 {
            tokio::task::yield_now().await;
        }
        c.advance(Duration::from_secs(5));
        assert_eq!(c.sleepers(), 1);
        c.advance(Duration::from_secs(5));
        h.await.expect("sleeper finished");
        assert_eq!(c.sleepers(), 0);
    }
}
