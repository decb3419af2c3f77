//! Daemon mode: scheduler, webhook server, file watcher, metrics, status page.

pub mod metrics;
pub mod schedule;
