//! `cargo bench --bench sync`: the reference meetings pipeline against the simulators, by the
//! real `ferry run` binary, beside a hand-written baseline. See docs/benchmarks.md.
//!
//! Sizes can be changed for a quick look:
//! `FERRY_BENCH_MEETINGS=300 FERRY_BENCH_LIFTED=500,1000 cargo bench --bench sync`;
//! `FERRY_BENCH_ONLY=render cargo bench --bench sync` measures the render throughput alone;
//! `FERRY_BENCH_HEADROOM=0.8` runs the Zoom connection at another `headroom` (default 0.9);
//! `FERRY_BENCH_STATE=postgres://user:password@host:port/db FERRY_STATE_KEY=<64 hex>` keeps
//! every run's state in PostgreSQL (a fresh schema per project) instead of a SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

// The machinery is shared with tests/it/bench_smoke.rs, which reads fields this report does not.
#[path = "support/mod.rs"]
#[allow(dead_code)]
mod bench;

use bench::suite::{self, SuiteOptions};
use std::path::PathBuf;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn main() {
    // `cargo bench` passes --bench; any other argument is a filter we do not use.
    let ferry = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let dir = std::env::temp_dir().join(format!("ferry-bench-{}", std::process::id()));
    let mut opts = SuiteOptions::new(ferry, dir.clone());
    if let Some(n) = env_usize("FERRY_BENCH_MEETINGS") {
        opts.limited_meetings = n;
    }
    if let Ok(v) = std::env::var("FERRY_BENCH_LIFTED") {
        opts.unlimited_meetings = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    }
    if let Some(n) = env_usize("FERRY_BENCH_RENDER") {
        opts.render_records = n;
    }
    if let Some(h) = std::env::var("FERRY_BENCH_HEADROOM")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|h| *h > 0.0 && *h <= 1.0)
    {
        opts.headroom = h;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let command = "cargo bench --bench sync";
    // `FERRY_BENCH_ONLY=render`: the offline render throughput alone (seconds, not minutes).
    if std::env::var("FERRY_BENCH_ONLY").as_deref() == Ok("render") {
        match runtime.block_on(suite::render_only(&opts)) {
            Ok(r) => println!(
                "render: {} meetings in {:.2} s = {:.0} meetings/s ({} sink records, {:.0}/s; \
                 template evaluations: {} direct, {} by minijinja)",
                r.records,
                r.elapsed.as_secs_f64(),
                r.per_second(),
                r.sink_records,
                r.sink_records_per_second(),
                r.direct,
                r.by_minijinja
            ),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    match runtime.block_on(suite::run(&opts)) {
        Ok(report) => {
            println!("{}", suite::render_markdown(&report, command));
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("(projects and state files kept in {})", dir.display());
            std::process::exit(1);
        }
    }
}
