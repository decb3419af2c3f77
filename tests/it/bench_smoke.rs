//! The benchmark machinery at a tiny scale: its figures must agree with each other (ferry's
//! own counts with the simulators', the baseline spending more than ferry, a second run
//! writing nothing). No timing is asserted.

use crate::bench;

use bench::{Bench, Setup, suite};
use std::path::PathBuf;

fn setup(meetings: usize) -> Setup {
    Setup {
        meetings,
        rate_limited: false,
        latency_ms: 0,
        seed: 11,
        headroom: 0.8,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_are_consistent_at_a_tiny_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let ferry = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));

    let base = Bench::start(setup(40), &tmp.path().join("baseline"))
        .await
        .unwrap();
    let baseline = base.run_baseline(4).await.unwrap();

    let bench = Bench::start(setup(40), &tmp.path().join("ferry"))
        .await
        .unwrap();
    let first = bench.run_ferry(&ferry, "first run").await.unwrap();
    let second = bench.run_ferry(&ferry, "second run").await.unwrap();
    let child = first.ferry.clone().unwrap();

    // ferry counted what the simulators answered. Its Salesforce count starts after the
    // login at connect time; its Zoom count includes the token request (made on first use).
    let sf = &first.salesforce_by_kind;
    assert_eq!(sf.auth, 1, "{sf:?}");
    assert_eq!(child.log.salesforce_calls, sf.api_total(), "{sf:?}");
    assert_eq!(
        child.log.zoom_calls,
        first.zoom.requests + first.zoom.token_requests,
        "{:?}",
        first.zoom
    );
    assert_eq!(child.log.zoom_429, first.zoom.responses_429);
    assert_eq!(child.exit_code, 0, "{:?}", child.log);
    assert!(child.peak_rss_kib > 0 && child.cpu().as_nanos() > 0);

    // Both did the same job on the same world.
    assert!(first.writes.events > 0, "{:?}", first.writes);
    assert_eq!(first.writes.events, baseline.writes.events);
    assert_eq!(first.meetings_read, baseline.meetings_read);
    // The baseline pays per person and per record; ferry per batch.
    assert!(
        baseline.salesforce_calls > 3 * first.salesforce_calls,
        "baseline {} vs ferry {}",
        baseline.salesforce_calls,
        first.salesforce_calls
    );
    assert!(baseline.zoom.requests > first.zoom.requests);

    // The org is what the independent oracle derives from the world, and no request passed
    // Salesforce's limit.
    let oracle = first.oracle.clone().unwrap();
    assert!(oracle.holds(), "{oracle:?}");
    assert!(oracle.expected_events > 0, "{oracle:?}");
    assert!(
        first.longest_request > 0 && first.longest_request <= 16_384,
        "{}",
        first.longest_request
    );

    // The floor is a floor.
    let floor = bench.floor(&first);
    assert!(floor.total() > 0 && floor.total() <= first.salesforce_calls);

    // Nothing new: nothing written, every lookup answered from the cache.
    let s = &second.salesforce_by_kind;
    assert_eq!(s.collections + s.bulk + s.sobject + s.composite, 0, "{s:?}");
    assert_eq!(second.writes, bench::Writes::default());

    // Rendering works on the bench world and the report renders.
    let render = suite::render_figures(&bench, 200).unwrap();
    assert_eq!(render.records, 200);
    assert!(render.sink_records >= 200);
    let report = suite::SuiteReport {
        limited: suite::Backfill {
            setup: bench.setup.clone(),
            first,
            second,
            floor,
            baseline: Some(baseline),
        },
        unlimited: Vec::new(),
        render,
    };
    let md = suite::render_markdown(&report, "test");
    assert!(md.contains("hand-written baseline") && md.contains("Targets"));
}

/// The engine gathers pages into batches: fewer Salesforce calls for the
/// same writes and the same checkpoints as a page at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_pages_spend_fewer_calls_for_the_same_writes() {
    use ferry::clock::Clock;
    use ferry::engine::{Engine, Mode, RunOptions, connect};
    use ferry::sim::sandbox::{Sandbox, SandboxOptions};

    let mut outcomes = Vec::new();
    for batch_records in [1, 2_000] {
        let start = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let clock = ferry::clock::ManualClock::auto(start);
        let mut opts = SandboxOptions::new(clock.clone());
        opts.scale = bench::scale_for(120, start);
        let sandbox = Sandbox::start(opts).await.unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let since = start - chrono::Duration::days(40);
        let text = ferry::sim::sandbox::EXAMPLE_PIPELINES[0].1.replace(
            "since: 2026-01-01T00:00:00Z",
            &format!("since: {}", since.to_rfc3339()),
        );
        let config = sandbox
            .write_project(tmp.path(), &[("meetings-to-events.yaml", &text)])
            .unwrap();
        let owned = ferry::config::builtin_catalogs();
        let catalogs: Vec<&dyn ferry::config::StreamCatalog> =
            owned.iter().map(|c| c.as_ref()).collect();
        let project = ferry::config::load_project(&config, &catalogs).unwrap();
        let conns = connect::connect(&project, clock.clone()).await.unwrap();
        let settings = serde_json::Value::Object(project.config.settings.clone());
        let engine = Engine {
            store: &conns.store,
            source: &conns.zoom,
            matcher: &conns.salesforce,
            sink: &conns.salesforce,
            zoom: Some(&conns.zoom.conn),
            settings: &settings,
            now: clock.now(),
        };
        let mut run = RunOptions::new(Mode::Run);
        run.batch_size = batch_records;
        let report = engine.run(&project.pipelines[0], &run).await;
        assert!(report.stopped.is_none(), "{:?}", report.stopped);
        let checkpoints: Vec<(String, String)> = conns
            .store
            .checkpoints(None)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.partition, c.cursor))
            .collect();
        outcomes.push((
            report.summary.api_calls.salesforce,
            report.per_sink.clone(),
            sandbox.salesforce.records("Event").len(),
            checkpoints,
        ));
    }
    let (paged, batched) = (&outcomes[0], &outcomes[1]);
    assert!(batched.2 > 0);
    // The same records either way; an Opportunity several meetings touch is updated once a
    // batch instead of once a page.
    for sink in ["event", "attendees", "follow_ups"] {
        assert_eq!(paged.1.get(sink), batched.1.get(sink), "{sink}");
    }
    assert!(batched.1.get("opportunity") <= paged.1.get("opportunity"));
    assert_eq!(paged.2, batched.2);
    assert_eq!(paged.3, batched.3, "the same checkpoints either way");
    assert!(
        batched.0 * 4 < paged.0 * 3,
        "batched {} vs a page at a time {}",
        batched.0,
        paged.0
    );
}
