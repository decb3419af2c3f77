//! How a read pages: one page per API page for streams without a cursor, cursor order and
//! safe cursors for incremental streams, and meetings that span a checkpoint.

use crate::support::zoom as zoom_support;

use chrono::{Duration, SecondsFormat};
use ferry::clock::Clock;
use ferry::connectors::zoom::{Page, ReadWindow};
use ferry::sim::world::{Scale, World};
use ferry::sim::zoom::Faults;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use zoom_support::{collect, params, rig, rig_at, time};

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The partition's pages are consecutive and only the last one is marked done.
fn assert_partitions_well_formed(pages: &[Page]) {
    let mut finished = BTreeSet::new();
    for (i, p) in pages.iter().enumerate() {
        assert!(
            !finished.contains(&p.partition),
            "partition {} resumed after done",
            p.partition
        );
        if p.partition_done {
            finished.insert(p.partition.clone());
        } else {
            assert_eq!(
                pages[i + 1].partition,
                p.partition,
                "pages of a partition are consecutive"
            );
        }
    }
}

#[tokio::test]
async fn a_stream_without_cursor_yields_one_page_per_api_page() {
    let w = Arc::new(World::generate(
        3,
        Scale {
            users: 650,
            meetings: 5,
            calls: 0,
            webinars: 0,
            ..Scale::small()
        },
    ));
    let r = rig(w.clone(), Faults::default()).await;
    let now = r.clock.now();
    let pages = collect(
        &r.conn,
        "users",
        &BTreeMap::new(),
        ReadWindow::fixed(now, now),
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.records.len()).collect();
    assert_eq!(sizes, vec![300, 300, 50]);
    assert_eq!(
        pages.iter().map(|p| p.partition_done).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert!(pages.iter().all(|p| p.cursor.is_none()));
    let ids: BTreeSet<&str> = pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 650);
    let requests = r
        .sim
        .requests()
        .iter()
        .filter(|q| q.endpoint == "GET /users")
        .count();
    assert_eq!(requests, 3, "each page went out as soon as it arrived");
}

#[tokio::test]
async fn incremental_pages_are_in_cursor_order_and_cursors_never_pass_unread_records() {
    // One busy host: ~400 meetings per 30-day chunk, so chunks split into several pages and
    // meetings run over midnight at chunk boundaries.
    let w = Arc::new(World::generate(
        8,
        Scale {
            users: 1,
            meetings: 800,
            days: 60,
            ..Scale::small()
        },
    ));
    let r = rig(w.clone(), Faults::default()).await;
    let until = r.clock.now();
    let since = until - Duration::days(61);
    let host = w.users[0].id.clone();
    let pages = collect(
        &r.conn,
        "past_meetings",
        &params(&[("user_id", &host)]),
        ReadWindow::fixed(since, until),
    )
    .await;
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert_partitions_well_formed(&pages);
    assert!(pages.iter().all(|p| p.partition == host));
    let ends: Vec<String> = pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|m| m["end_time"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = ends.clone();
    sorted.sort();
    assert_eq!(ends, sorted, "records in cursor order across the partition");
    let mut last_cursor = String::new();
    for (i, p) in pages.iter().enumerate() {
        let c = p.cursor.clone().expect("incremental pages carry a cursor");
        assert!(c >= last_cursor, "cursors never go back");
        last_cursor = c.clone();
        for later in pages[i + 1..].iter().flat_map(|q| &q.records) {
            assert!(
                later["end_time"].as_str().unwrap() >= c.as_str(),
                "page {i} cursor passed a later record"
            );
        }
    }
    assert_eq!(
        pages.last().unwrap().cursor.as_deref(),
        Some(iso(until).as_str())
    );
    let uuids: BTreeSet<&str> = pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|m| m["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids.len(), ends.len(), "no meeting twice");
    let expected: BTreeSet<&str> = w
        .meetings
        .iter()
        .filter(|m| m.in_reports() && m.end <= until)
        .map(|m| m.uuid.as_str())
        .collect();
    assert_eq!(uuids, expected);
}

#[tokio::test]
async fn a_quiet_partition_still_advances_to_the_window_end() {
    let w = Arc::new(World::generate(9, Scale::small()));
    let r = rig(w.clone(), Faults::default()).await;
    let until = r.clock.now();
    // Meetings of the world all end more than 90 minutes before its end.
    let checkpoint = until - Duration::hours(1);
    let cps: BTreeMap<String, _> = w.users.iter().map(|u| (u.id.clone(), checkpoint)).collect();
    let pages = collect(
        &r.conn,
        "past_meetings",
        &params(&[("user_id", "all")]),
        ReadWindow::checkpoints(cps, until - Duration::days(30), Duration::zero(), until),
    )
    .await;
    assert_eq!(pages.len(), w.users.len());
    for p in &pages {
        assert!(p.records.is_empty() && p.partition_done);
        assert_eq!(p.cursor.as_deref(), Some(iso(until).as_str()));
    }

    // A lookback re-read never moves a cursor before the checkpoint.
    let host = w.users[0].id.clone();
    let checkpoint = until - Duration::days(5);
    let pages = collect(
        &r.conn,
        "past_meetings",
        &params(&[("user_id", &host)]),
        ReadWindow::checkpoints(
            BTreeMap::from([(host.clone(), checkpoint)]),
            until - Duration::days(30),
            Duration::days(3),
            until,
        ),
    )
    .await;
    assert!(pages.iter().any(|p| !p.records.is_empty()));
    for p in &pages {
        assert!(time(p.cursor.as_deref().unwrap()) >= checkpoint);
    }

    // Recordings appear late: their cursor stays `settle` (48 h) behind the window end.
    let pages = collect(
        &r.conn,
        "user_recordings",
        &params(&[("user_id", &host)]),
        ReadWindow::fixed(until - Duration::days(10), until),
    )
    .await;
    let last = pages.last().unwrap();
    assert!(last.partition_done);
    assert_eq!(
        last.cursor.as_deref(),
        Some(iso(until - Duration::hours(48)).as_str())
    );
    assert!(
        pages
            .iter()
            .all(|p| time(p.cursor.as_deref().unwrap()) <= until - Duration::hours(48))
    );
}

#[tokio::test]
async fn a_meeting_running_across_the_checkpoint_is_read_next_time() {
    let w = Arc::new(World::generate(12, Scale::small()));
    let m = w
        .meetings
        .iter()
        .filter(|m| m.in_reports() && m.duration_minutes() >= 30)
        .max_by_key(|m| m.start)
        .unwrap()
        .clone();
    let host = w.users[m.host].id.clone();
    let p = params(&[("user_id", &host)]);
    // First read while the meeting runs: it is not in the report yet.
    let during = m.start + Duration::minutes(10);
    let r = rig_at(w.clone(), Faults::default(), during).await;
    let first = collect(
        &r.conn,
        "past_meetings",
        &p,
        ReadWindow::fixed(during - Duration::days(20), during),
    )
    .await;
    let seen_first: BTreeSet<String> = first
        .iter()
        .flat_map(|p| &p.records)
        .map(|r| r["uuid"].as_str().unwrap().to_string())
        .collect();
    assert!(!seen_first.contains(&m.uuid));
    let checkpoint = time(first.last().unwrap().cursor.as_deref().unwrap());
    assert_eq!(
        checkpoint, during,
        "the completed window advances to its end"
    );
    assert!(m.start < checkpoint && m.end > checkpoint);

    // After it ended, a read from the checkpoint with no lookback at all finds it.
    r.clock.set(m.end + Duration::minutes(5));
    let now = r.clock.now();
    let second = collect(
        &r.conn,
        "past_meetings",
        &p,
        ReadWindow::checkpoints(
            BTreeMap::from([(host.clone(), checkpoint)]),
            during - Duration::days(20),
            Duration::zero(),
            now,
        ),
    )
    .await;
    let seen_second: Vec<String> = second
        .iter()
        .flat_map(|p| &p.records)
        .map(|r| r["uuid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        seen_second.contains(&m.uuid),
        "the meeting spanning the checkpoint is read"
    );
    assert!(
        seen_second.iter().all(|u| !seen_first.contains(u)),
        "nothing read before is read again"
    );
    // It asked for the day the meeting started, though that is before the checkpoint.
    let froms: Vec<String> = r
        .sim
        .requests()
        .iter()
        .filter(|q| {
            q.endpoint.contains("/report/users/") && q.at >= checkpoint + Duration::minutes(1)
        })
        .filter_map(|q| q.query.get("from").cloned())
        .collect();
    assert!(
        froms
            .iter()
            .any(|f| f.as_str() <= m.start.date_naive().to_string().as_str())
    );
}
