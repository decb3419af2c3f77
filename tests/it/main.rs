//! The integration tests, one binary (one link on two cores instead of one per file): each
//! module speaks to ferry through its public surface (a pipeline file, the CLI binary, a
//! simulator); `support` is the one tree of shared setups.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

// The benchmark machinery, shared with `cargo bench --bench sync` (some of it is only read there).
#[path = "../../benches/support/mod.rs"]
#[allow(dead_code)]
mod bench;
mod support;

mod bench_smoke;
mod both_ways;
mod cli_pipeline_tests;
mod config_broken;
mod config_docs;
mod config_fuzz;
mod config_writers;
mod daemon_cli;
mod daemon_outage;
mod daemon_pg;
mod daemon_reload;
mod daemon_run_endpoint;
mod daemon_schedule;
mod daemon_shutdown;
mod daemon_status;
mod daemon_webhook;
mod engine_crash;
mod engine_deadletters;
mod engine_plan_golden;
mod engine_projection;
mod engine_read_ahead;
mod engine_run;
mod hostile_server;
mod http_layer;
mod lease_runs;
mod privacy;
mod salesforce_connector;
mod salesforce_limits_run;
mod salesforce_match_rule;
mod salesforce_sim;
mod salesforce_sim_strict;
mod salesforce_simple_salesforce;
mod salesforce_source;
mod state_cli;
mod state_contract;
mod state_lease;
mod state_pg_cli;
mod state_pg_tls;
mod state_store;
mod template_filters;
mod template_native;
mod template_semantics;
mod template_throughput;
mod validate_online;
mod value_checks;
mod zoom_auth;
mod zoom_cli;
mod zoom_openapi;
mod zoom_paging;
mod zoom_peer;
mod zoom_read;
mod zoom_sim_faults;
mod zoom_sim_strict;
mod zoom_sink;
mod zoom_tokens;
mod zoom_tokens_pg;
mod zoom_webhook;
