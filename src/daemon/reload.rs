//! Hot reload: watch the directories of ferry.yaml and the pipeline files (not recursively:
//! editors save by writing a new file and renaming it over the old one), wait for the
//! changes to settle, and load the project again. A valid project replaces the running one
//! for each pipeline's next run; an invalid one is refused with its full diagnostics and the
//! previous version keeps running.

use super::{DaemonError, FileProblem, Shared};
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The file watcher and the channel its events arrive on.
pub(crate) struct Watcher {
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    dirs: BTreeSet<PathBuf>,
}

/// The directories to watch for a project.
fn dirs_of(shared: &Shared) -> BTreeSet<PathBuf> {
    let project = shared.project();
    let mut dirs = BTreeSet::new();
    let mut add = |f: &Path| {
        let d = match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        dirs.insert(d);
    };
    add(&shared.config_path);
    for f in project.files.iter().chain(&project.secret_files) {
        add(f);
    }
    // The pipelines directory itself, so a new file there is noticed.
    let default_dir = project.root.join("pipelines");
    if default_dir.is_dir() {
        dirs.insert(default_dir);
    }
    dirs
}

/// Whether an event may change the project: a write, create, remove or rename of a YAML file
/// or of a file the project read. Reads (and our own loading) are ignored.
fn relevant(ev: &notify::Event, known: &BTreeSet<PathBuf>) -> bool {
    let kind_ok = match ev.kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Other => true,
    };
    kind_ok
        && ev
            .paths
            .iter()
            .any(|p| known.contains(p) || p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
}

impl Watcher {
    pub(crate) fn start(shared: &Shared) -> Result<Watcher, DaemonError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })
        .map_err(|e| DaemonError::Watch {
            path: shared.config_path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut w = Watcher {
            watcher,
            events: rx,
            dirs: BTreeSet::new(),
        };
        w.rewatch(shared)?;
        Ok(w)
    }

    /// Watches the directories the current project needs, and no others.
    fn rewatch(&mut self, shared: &Shared) -> Result<(), DaemonError> {
        let want = dirs_of(shared);
        for gone in self.dirs.difference(&want) {
            let _ = self.watcher.unwatch(gone);
        }
        for d in want.difference(&self.dirs) {
            self.watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(|e| DaemonError::Watch {
                    path: d.display().to_string(),
                    message: e.to_string(),
                })?;
        }
        self.dirs = want;
        Ok(())
    }

    fn known_files(shared: &Shared) -> BTreeSet<PathBuf> {
        let project = shared.project();
        let mut s: BTreeSet<PathBuf> = project
            .files
            .iter()
            .chain(&project.secret_files)
            .cloned()
            .collect();
        s.insert(shared.config_path.clone());
        s
    }

    pub(crate) async fn run(mut self, shared: Arc<Shared>) {
        loop {
            let known = Self::known_files(&shared);
            // Wait for a relevant change.
            let first = tokio::select! {
                ev = self.events.recv() => ev,
                _ = shared.shutdown().wait() => return,
            };
            match first {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!("file watcher: {e}");
                    continue;
                }
                Some(Ok(ev)) if !relevant(&ev, &known) => continue,
                Some(Ok(_)) => {}
            }
            // Debounce: reload once the files have been quiet for a while.
            loop {
                let next = tokio::select! {
                    ev = tokio::time::timeout(shared.options.debounce, self.events.recv()) => ev,
                    _ = shared.shutdown().wait() => return,
                };
                match next {
                    Err(_) => break,
                    Ok(None) => return,
                    Ok(Some(_)) => continue,
                }
            }
            reload(&shared);
            if let Err(e) = self.rewatch(&shared) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// What changed in ferry.yaml besides pipelines and settings. Where a connection's text
/// merely moved is not a change.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ConfigChanges {
    /// Connections whose settings changed, were added or removed (secrets compared by value,
    /// so a rotated secret counts; the webhook secret is read per delivery and does not):
    /// the daemon connects again.
    pub connections: Vec<String>,
    /// `state`, `daemon.listen`: these need a restart.
    pub restart: Vec<&'static str>,
}

pub(crate) fn config_changes(
    old: &crate::config::FerryConfig,
    new: &crate::config::FerryConfig,
) -> ConfigChanges {
    let settings = |c: &crate::config::Connection| {
        let mut s = c.settings.clone();
        if let crate::config::ConnectionSettings::Zoom(z) = &mut s {
            z.webhook_secret = None;
        }
        s
    };
    let mut out = ConfigChanges::default();
    for c in &old.connections {
        match new.connections.iter().find(|n| n.name == c.name) {
            None => out.connections.push(format!("`{}` (removed)", c.name)),
            Some(n) if settings(n) != settings(c) => {
                out.connections.push(format!("`{}`", c.name));
            }
            Some(_) => {}
        }
    }
    for n in &new.connections {
        if !old.connections.iter().any(|c| c.name == n.name) {
            out.connections.push(format!("`{}` (added)", n.name));
        }
    }
    if old.state != new.state {
        out.restart.push("state");
    }
    if old.daemon.listen != new.daemon.listen {
        out.restart.push("daemon.listen");
    }
    out
}

/// Connects the changed connections of `project` over the daemon's HTTP client and state
/// file and puts them in place for the next runs; when they cannot connect (a wrong secret,
/// an unreachable login host) the previous ones keep running and the error is logged.
async fn reconnect_to(shared: Arc<Shared>, project: Arc<crate::config::Project>) {
    use std::sync::atomic::Ordering;
    let generation = shared.conns_wanted.fetch_add(1, Ordering::SeqCst) + 1;
    let old = shared.conns();
    // ferry's Salesforce spending carries over (the new connection reads it back).
    old.save_budget().await;
    let result =
        crate::engine::connect::connect_with(&project, old.http.clone(), shared.store.clone())
            .await;
    match result {
        Ok(c) => {
            if !shared.set_conns_if_latest(generation, c) {
                // A later edit is connecting; its connections are the ones to keep.
                return;
            }
            tracing::info!("connections reloaded");
            shared.update_status(|s| {
                s.connection_reloads += 1;
                s.connection_error = None;
            });
        }
        Err(_) if shared.conns_wanted.load(Ordering::SeqCst) != generation => {
            // A later edit is connecting; its outcome is the one to report.
        }
        Err(e) => {
            tracing::error!(
                "the changed connections cannot connect; the previous ones keep running: {e}"
            );
            shared.update_status(|s| {
                s.connection_reload_failures += 1;
                s.connection_error = Some(super::status::sanitize_error(&e.to_string()));
            });
        }
    }
}

/// Loads the project again; keeps the running version when the new one is invalid.
pub(crate) fn reload(shared: &Arc<Shared>) {
    match super::load(&shared.config_path) {
        Ok(p) => {
            let old = shared.project();
            let changed = config_changes(&old.config, &p.config);
            if !changed.restart.is_empty() {
                tracing::warn!(
                    "ferry.yaml's {} changed: restart ferry daemon to apply {} (pipelines, settings, connections and the webhook secret are reloaded)",
                    changed.restart.join(", "),
                    if changed.restart.len() == 1 {
                        "it"
                    } else {
                        "them"
                    }
                );
            }
            for w in &p.warnings {
                tracing::warn!("{}", w.short());
            }
            let names: Vec<String> = p.pipelines.iter().map(|p| p.name.clone()).collect();
            shared.set_project(p);
            tracing::info!(pipelines = %names.join(", "), "configuration reloaded");
            shared.update_status(|s| {
                s.reloads += 1;
                s.files_in_error.clear();
                for n in &names {
                    s.pipelines.entry(n.clone()).or_default();
                }
                s.pipelines.retain(|k, _| names.contains(k));
            });
            shared.schedule_wake.notify_one();
            if !changed.connections.is_empty() {
                tracing::info!(
                    "ferry.yaml's connections {} changed: connecting again (runs in flight finish on the previous connections)",
                    changed.connections.join(", ")
                );
                tokio::spawn(reconnect_to(shared.clone(), shared.project()));
            }
        }
        Err(diags) => {
            tracing::error!(
                "the changed configuration is invalid; the previous version keeps running:\n{}",
                diags.render()
            );
            shared.update_status(|s| {
                s.reload_failures += 1;
                s.files_in_error = diags.errors().map(FileProblem::from).collect();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::config_changes;
    use std::path::Path;

    fn project(
        dir: &Path,
        secret: &str,
        webhook: &str,
        comment: &str,
    ) -> crate::config::FerryConfig {
        std::fs::create_dir_all(dir.join("secrets")).unwrap();
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        std::fs::write(dir.join("secrets/sf"), secret).unwrap();
        std::fs::write(dir.join("secrets/hook"), webhook).unwrap();
        let yaml = format!(
            r#"{comment}
connections:
  zoom:
    kind: zoom
    auth:
      type: server_to_server
      account_id: acct
      client_id: zc
      client_secret: zs
    webhook_secret: ${{file:secrets/hook}}
  salesforce:
    kind: salesforce
    auth:
      type: client_credentials
      login_url: https://example.my.salesforce.com
      client_id: sc
      client_secret: ${{file:secrets/sf}}
"#
        );
        let path = dir.join("ferry.yaml");
        std::fs::write(&path, yaml).unwrap();
        match super::super::load(&path) {
            Ok(p) => p.config,
            Err(d) => panic!("{}", d.render()),
        }
    }

    #[test]
    fn a_rotated_secret_is_a_change_and_a_moved_line_or_webhook_secret_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let base = project(dir, "one", "hook1", "");
        // Lines moved (a comment on top): the same connections.
        let moved = project(dir, "one", "hook1", "# a comment\n# and another");
        assert_eq!(config_changes(&base, &moved), Default::default());
        // The webhook secret is read for each delivery.
        let hook = project(dir, "one", "hook2", "");
        assert_eq!(config_changes(&base, &hook), Default::default());
        // A rotated Salesforce secret: the running connection still holds the old one.
        let rotated = project(dir, "two", "hook1", "");
        assert_eq!(
            config_changes(&base, &rotated).connections,
            vec!["`salesforce`".to_string()]
        );
        assert!(config_changes(&base, &rotated).restart.is_empty());
        // and the message never shows it
        assert!(!format!("{:?}", rotated.connections).contains("two"));
    }
}
