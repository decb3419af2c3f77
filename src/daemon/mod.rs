//! Daemon mode: scheduler, webhook server, file watcher, metrics, status page.
