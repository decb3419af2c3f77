//! ferry: a declarative sync engine that keeps Salesforce in step with Zoom.
//!
//! The binary's commands live in [`cli`]; everything else is the library that tests and
//! benchmarks drive. Data flows config → engine (read → enrich → lookup → render → write)
//! → connectors, with the state store underneath; see `docs/architecture.md`.

pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod daemon;
pub mod engine;
pub mod http;
pub(crate) mod privacy;
pub(crate) mod secret;
/// The Zoom and Salesforce simulators: demo, sandbox, tests and benchmarks (feature `sandbox`,
/// on by default; `cargo build --no-default-features` builds the product without them).
#[cfg(feature = "sandbox")]
pub mod sim;
pub mod state;
pub mod template;
