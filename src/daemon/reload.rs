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
    for f in &project.files {
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
        let mut s: BTreeSet<PathBuf> = shared.project().files.iter().cloned().collect();
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

/// Loads the project again; keeps the running version when the new one is invalid.
pub(crate) fn reload(shared: &Shared) {
    match super::load(&shared.config_path) {
        Ok(p) => {
            let old = shared.project();
            if format!("{:?}", old.config.connections) != format!("{:?}", p.config.connections)
                || old.config.state != p.config.state
                || old.config.daemon.listen != p.config.daemon.listen
            {
                tracing::warn!(
                    "ferry.yaml's connections, state or daemon.listen changed: restart ferry daemon to apply them (pipelines and settings are reloaded)"
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
