//! Loading and checking ferry.yaml and pipeline files, with diagnostics.
//!
//! Two layers: [`spec`] holds the raw file types (serde, unknown keys denied, positions
//! kept); [`model`] holds the resolved pipeline the engine runs. [`load_project`] reads,
//! resolves and checks everything, collecting every problem before it reports.

pub(crate) mod at;
pub(crate) mod catalog;
pub(crate) mod diagnostic;
pub(crate) mod events;
mod ferry_file;
pub(crate) mod model;
mod pipeline;
pub(crate) mod spec;
mod yaml;

pub use catalog::{StreamCatalog, StreamInfo};
pub use diagnostic::{Code, Diagnostics, Problem, Severity, SourceFile};
pub use ferry_file::EnvLookup;
pub use model::*;

pub use pipeline::insert_dotted;
use pipeline::{ConfigFacts, PipelineResolver};
use std::path::{Path, PathBuf};

/// The stream catalogs compiled into this binary; `ferry validate` checks streams against
/// them. A connector registers its catalog here.
pub fn builtin_catalogs() -> Vec<Box<dyn StreamCatalog>> {
    vec![
        Box::new(Builtin(crate::connectors::zoom::catalog::catalog())),
        Box::new(Builtin(crate::connectors::salesforce::catalog::catalog())),
    ]
}

/// A catalog compiled into the binary.
struct Builtin(&'static dyn StreamCatalog);

impl StreamCatalog for Builtin {
    fn kind(&self) -> &str {
        self.0.kind()
    }
    fn stream(&self, name: &str) -> Option<catalog::StreamInfo> {
        self.0.stream(name)
    }
    fn names(&self) -> Vec<String> {
        self.0.names()
    }
    fn single_record(&self, stream: &str) -> bool {
        self.0.single_record(stream)
    }
}

/// How strictly to load.
#[derive(Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// Reads `${NAME}`; default: the process environment.
    pub env: Option<EnvLookup<'a>>,
    /// Report record fields the stream's sample record lacks (`ferry validate` does; a run
    /// does not, because samples do not show every optional field).
    pub strict_fields: bool,
    /// Load these pipeline files instead of the ones ferry.yaml names (`ferry validate FILE`).
    pub pipelines: Option<&'a [PathBuf]>,
}

impl LoadOptions<'_> {
    /// The checks of `ferry validate`.
    pub fn validate() -> Self {
        LoadOptions {
            env: None,
            strict_fields: true,
            pipelines: None,
        }
    }
}

/// Loads ferry.yaml and every pipeline it names, resolved and checked.
pub fn load_project(
    config_path: &Path,
    catalogs: &[&dyn StreamCatalog],
) -> Result<Project, Diagnostics> {
    load_project_with(config_path, catalogs, LoadOptions::default())
}

/// [`load_project`] with options. On success the warnings are in `Project::warnings`; on
/// failure every problem (errors and warnings), sorted by file and position.
pub fn load_project_with(
    config_path: &Path,
    catalogs: &[&dyn StreamCatalog],
    options: LoadOptions<'_>,
) -> Result<Project, Diagnostics> {
    let process_env = |name: &str| std::env::var(name).ok();
    let env: EnvLookup<'_> = options.env.unwrap_or(&process_env);
    let mut diags = Diagnostics::default();
    let root_shown = config_path.parent().unwrap_or(Path::new("")).to_path_buf();
    let root = if root_shown.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root_shown.clone()
    };
    let config_display = config_path.display().to_string();
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(
                Problem::without_source(
                    &config_display,
                    Code::Unreadable,
                    format!("cannot read {config_display}: {e}"),
                )
                .help("run ferry where ferry.yaml is, or pass --config PATH"),
            );
            return Err(diags);
        }
    };
    let config_file = SourceFile::new(config_path, config_display, text);
    let spec: Option<spec::FerryConfigSpec> = yaml::parse(&config_file, &mut diags);
    let mut config = None;
    let mut files = vec![config_path.to_path_buf()];
    let mut secret_files = Vec::new();
    let mut pipeline_paths: Vec<(PathBuf, Option<(at::Pos, String)>)> = Vec::new();
    if let Some(spec) = &spec {
        let mut r = ferry_file::FerryFileResolver {
            file: &config_file,
            root: &root,
            env,
            diags: &mut diags,
            read: Vec::new(),
        };
        config = r.resolve(spec);
        secret_files = std::mem::take(&mut r.read);
        match &spec.pipelines {
            _ if options.pipelines.is_some() => {
                let list = options.pipelines.unwrap_or_default();
                pipeline_paths.extend(list.iter().map(|p| (p.clone(), None)));
            }
            Some(list) => {
                for p in list {
                    let full = root.join(&p.value);
                    if full.is_dir() {
                        pipeline_paths.extend(yaml_files_in(&full).into_iter().map(|f| (f, None)));
                    } else if full.is_file() {
                        pipeline_paths.push((full, None));
                    } else {
                        diags.push(
                            Problem::at_pos(
                                &config_file,
                                Code::MissingFile,
                                p.pos,
                                format!("no pipeline file or directory `{}`", p.value),
                            )
                            .label("not found")
                            .help("paths under `pipelines:` are relative to ferry.yaml"),
                        );
                    }
                }
            }
            None => {
                pipeline_paths.extend(
                    yaml_files_in(&root.join("pipelines"))
                        .into_iter()
                        .map(|f| (f, None)),
                );
            }
        }
    }
    let facts = ConfigFacts {
        connections: spec
            .as_ref()
            .map(|s| {
                s.connections
                    .iter()
                    .map(|(n, c)| (n.value.clone(), c.kind.value))
                    .collect()
            })
            .unwrap_or_default(),
        settings: spec.as_ref().map(|s| {
            s.settings
                .as_ref()
                .map(|s| s.value.clone())
                .unwrap_or_default()
        }),
        known: spec.is_some(),
        catalogs,
        strict_fields: options.strict_fields,
    };
    let mut pipelines: Vec<Pipeline> = Vec::new();
    let mut names: Vec<(String, String, usize)> = Vec::new();
    let mut sources: Vec<SourceFile> = Vec::new();
    for (path, _) in &pipeline_paths {
        files.push(path.clone());
        let display = shown_path(&root_shown, &root, path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Problem::without_source(
                    &display,
                    Code::Unreadable,
                    format!("cannot read {display}: {e}"),
                ));
                continue;
            }
        };
        let file = SourceFile::new(path, display, text);
        let Some(pspec) = yaml::parse_recovering::<spec::PipelineSpec>(&file, &mut diags, true)
        else {
            continue;
        };
        let name = pspec.pipeline.value.clone();
        if let Some((_, other, line)) = names.iter().find(|(n, _, _)| *n == name) {
            diags.push(
                Problem::at_pos(
                    &file,
                    Code::DuplicatePipeline,
                    pspec.pipeline.pos,
                    format!("another pipeline is already named `{name}`"),
                )
                .label("duplicate name")
                .help(format!(
                    "first named in {other}:{line}; names key checkpoints and the ledger, so each must be unique"
                )),
            );
        } else {
            names.push((name, file.display.clone(), pspec.pipeline.pos.line));
        }
        let resolver = PipelineResolver::new(&file, &facts, &mut diags);
        if let Some(p) = resolver.resolve(&pspec) {
            pipelines.push(p);
        }
        sources.push(file);
    }
    pipeline::conflicting_writers(&pipelines, &sources, &mut diags);
    diags.sort();
    match config {
        Some(config) if !diags.has_errors() => Ok(Project {
            root,
            config,
            pipelines,
            warnings: diags.problems,
            files,
            secret_files,
        }),
        _ => Err(diags),
    }
}

/// `*.yaml` and `*.yml` files directly in a directory, sorted.
fn yaml_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// A pipeline path as the user would write it: relative to where they pointed ferry.
fn shown_path(root_shown: &Path, root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => root_shown.join(rel).display().to_string(),
        Err(_) => path.display().to_string(),
    }
}
