//! One pipeline, one runner: the lease rows of the state file, with two stores on one file
//! standing for two processes, and time driven by a manual clock. Also: the state file and
//! its companions are private to their owner.

use chrono::{DateTime, Utc};
use ferry::clock::{Clock, ManualClock, SharedClock};
use ferry::state::{
    BatchCommit, LeaseKeeper, LedgerState, LedgerWrite, Renewal, StateError, Store, acquire_now,
    holder_is_dead, process_holder_id,
};
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);
const KEY: [u8; 32] = [7u8; 32];

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Two stores (two connections, as two processes have) on one file, on one manual clock.
fn two_stores() -> (tempfile::TempDir, Arc<ManualClock>, Store, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".ferry/state.db");
    let clock = ManualClock::new(t0());
    let shared: SharedClock = clock.clone();
    let a = Store::open_with_key(&path, KEY)
        .unwrap()
        .with_clock(shared.clone());
    let b = Store::open_with_key(&path, KEY).unwrap().with_clock(shared);
    (dir, clock, a, b)
}

fn batch(keys: &[&str], cursor: &str) -> BatchCommit {
    BatchCommit {
        pipeline: "p".into(),
        ledger: keys
            .iter()
            .map(|k| LedgerWrite {
                sink: "event".into(),
                key: k.to_string(),
                sf_id: Some(format!("00U{k}")),
                hash: "h".into(),
                state: LedgerState::Written,
            })
            .collect(),
        dead_letters: Vec::new(),
        checkpoints: vec![("zoom.past_meetings".into(), String::new(), cursor.into())],
        subjects: Vec::new(),
    }
}

async fn cursor(s: &Store) -> Option<String> {
    s.checkpoint("p", "zoom.past_meetings", "")
        .await
        .unwrap()
        .map(|c| c.cursor)
}

#[tokio::test]
async fn two_processes_contend_and_only_one_holds_the_lease() {
    let (_dir, clock, a, b) = two_stores();
    let la = a
        .try_acquire("p", "host-a:1:0:aa", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(la.fence, 1);
    assert_eq!(la.expires_at, t0() + chrono::Duration::seconds(30));

    // The other process is told who holds it, since when and until when.
    let held = b
        .try_acquire("p", "host-b:2:0:bb", TTL)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(held.holder, "host-a:1:0:aa");
    assert_eq!(held.since, t0());
    assert_eq!(held.expires_at, la.expires_at);
    let text = held.to_string();
    assert!(text.contains("process 1 on host host-a"), "{text}");
    assert!(text.contains("2026-03-01T10:00:30Z"), "{text}");
    assert_eq!(b.lease_holder("p").await.unwrap(), Some(held.clone()));
    // The same holder does not get it twice either (a second run in one process waits).
    assert!(
        a.try_acquire("p", "host-a:1:0:aa", TTL)
            .await
            .unwrap()
            .is_err()
    );
    // Another pipeline is free.
    assert!(
        b.try_acquire("q", "host-b:2:0:bb", TTL)
            .await
            .unwrap()
            .is_ok()
    );

    // Released: the other process gets it at once, with the next fencing number.
    clock.advance(Duration::from_secs(5));
    a.release(&la).await.unwrap();
    assert_eq!(b.lease_holder("p").await.unwrap(), None);
    let lb = b
        .try_acquire("p", "host-b:2:0:bb", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lb.fence, 2);
    // A late release by the old holder does not free the new holder's lease.
    a.release(&la).await.unwrap();
    assert_eq!(
        a.lease_holder("p").await.unwrap().map(|h| h.holder),
        Some(lb.holder)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_from_threads_gives_exactly_one_winner() {
    let (_dir, _clock, a, b) = two_stores();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                s.try_acquire("p", &format!("h{i}:{i}:0:00"), TTL)
                    .await
                    .unwrap()
                    .is_ok()
            })
        })
        .collect();
    let mut winners = 0;
    for h in handles {
        if h.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn a_stale_holder_keeps_its_ledger_rows_but_cannot_move_the_checkpoint() {
    let (_dir, clock, a, b) = two_stores();
    let la = a
        .try_acquire("p", "host-a:1:0:aa", TTL)
        .await
        .unwrap()
        .unwrap();
    a.commit_batch_fenced(&batch(&["k1"], "2026-03-01T09:00:00Z"), Some(&la))
        .await
        .unwrap();
    assert_eq!(cursor(&a).await.as_deref(), Some("2026-03-01T09:00:00Z"));

    // A's process stalls past its lease; B takes over.
    clock.advance(Duration::from_secs(31));
    let lb = b
        .try_acquire("p", "host-b:2:0:bb", TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lb.fence, la.fence + 1);

    // A wakes up with a batch Salesforce acknowledged: the ledger keeps it, the checkpoint
    // does not move, and the error says so.
    let err = a
        .commit_batch_fenced(&batch(&["k2"], "2026-03-01T09:30:00Z"), Some(&la))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::LeaseLost { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("process 2 on host host-b"), "{msg}");
    assert!(msg.contains("checkpoint did not move"), "{msg}");
    assert_eq!(cursor(&b).await.as_deref(), Some("2026-03-01T09:00:00Z"));
    let ledger = b
        .ledger_get_many("p", "event", &["k1".into(), "k2".into()])
        .await
        .unwrap();
    assert_eq!(ledger["k2"].sf_id.as_deref(), Some("00Uk2"));
    assert_eq!(ledger["k2"].state, LedgerState::Written);

    // The new holder moves it.
    b.commit_batch_fenced(&batch(&["k3"], "2026-03-01T09:45:00Z"), Some(&lb))
        .await
        .unwrap();
    assert_eq!(cursor(&b).await.as_deref(), Some("2026-03-01T09:45:00Z"));
    // And A cannot renew its way back.
    assert!(a.renew(&la, TTL).await.unwrap().is_err());
}

#[tokio::test]
async fn an_expired_lease_nobody_took_still_fences_correctly() {
    let (_dir, clock, a, b) = two_stores();
    let la = a
        .try_acquire("p", "host-a:1:0:aa", TTL)
        .await
        .unwrap()
        .unwrap();
    clock.advance(Duration::from_secs(120));
    // Expired but not taken over: the fencing number still stands, so the commit is safe.
    a.commit_batch_fenced(&batch(&["k1"], "c1"), Some(&la))
        .await
        .unwrap();
    assert_eq!(cursor(&a).await.as_deref(), Some("c1"));
    // It no longer shows as held, and renewing brings it back.
    assert_eq!(b.lease_holder("p").await.unwrap(), None);
    let renewed = a.renew(&la, TTL).await.unwrap().unwrap();
    assert_eq!(
        renewed.expires_at,
        clock.now() + chrono::Duration::seconds(30)
    );
    assert!(
        b.try_acquire("p", "host-b:2:0:bb", TTL)
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn the_keeper_renews_every_third_of_the_lease_and_notices_a_loss() {
    let (_dir, clock, a, b) = two_stores();
    let la = a
        .try_acquire("p", "host-a:1:0:aa", TTL)
        .await
        .unwrap()
        .unwrap();
    let keeper = LeaseKeeper::new(a.clone(), la.clone(), TTL);
    clock.advance(Duration::from_secs(5));
    assert_eq!(keeper.renew_if_due().await.unwrap(), Renewal::NotDue);
    clock.advance(Duration::from_secs(6)); // 11 s: more than 30 / 3
    let expires = t0() + chrono::Duration::seconds(41);
    assert_eq!(
        keeper.renew_if_due().await.unwrap(),
        Renewal::Renewed(expires)
    );
    // Past the first expiry, the renewed lease still keeps B out.
    clock.advance(Duration::from_secs(25)); // 36 s
    assert!(
        b.try_acquire("p", "host-b:2:0:bb", TTL)
            .await
            .unwrap()
            .is_err()
    );
    // Renewals stop (the holder hangs): B takes over once it expires, and the keeper sees it.
    clock.advance(Duration::from_secs(10)); // 46 s > 41 s
    let lb = b
        .try_acquire("p", "host-b:2:0:bb", TTL)
        .await
        .unwrap()
        .unwrap();
    match keeper.renew_if_due().await.unwrap() {
        Renewal::Lost(h) => assert_eq!(h.holder, lb.holder),
        other => panic!("expected a lost lease, got {other:?}"),
    }
    assert!(keeper.is_lost());
    // The keeper did not steal it back.
    assert_eq!(
        b.lease_holder("p").await.unwrap().map(|h| h.fence),
        Some(lb.fence)
    );
}

#[tokio::test]
async fn a_dead_local_holder_is_taken_over_before_expiry() {
    let (_dir, _clock, a, b) = two_stores();
    // A process of this host that has exited: its id with this process's parts and its pid.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let me = process_holder_id();
    let parts: Vec<&str> = me.split(':').collect();
    assert_eq!(parts.len(), 4, "{me}");
    let dead = format!("{}:{}:{}:deadbeef", parts[0], dead_pid, parts[2]);
    assert!(!holder_is_dead(me));
    assert!(!holder_is_dead("other-host:1:1:00"));
    assert!(!holder_is_dead("not an id"));
    if parts[2].is_empty() {
        // Without /proc (not Linux), only expiry frees a lease.
        return;
    }
    assert!(holder_is_dead(&dead));
    // A live process of this host (the parent of this test) is not dead.
    let parent = format!(
        "{}:{}:{}:00",
        parts[0],
        std::os::unix::process::parent_id(),
        parts[2]
    );
    assert!(!holder_is_dead(&parent));

    let l = b.try_acquire("p", &dead, TTL).await.unwrap().unwrap();
    let taken = acquire_now(&a, "p", TTL).await.unwrap().unwrap();
    assert_eq!(taken.holder, me);
    assert_eq!(taken.fence, l.fence + 1);
    // A live holder is waited for.
    let q = b.try_acquire("q", &parent, TTL).await.unwrap().unwrap();
    let held = acquire_now(&a, "q", TTL).await.unwrap().unwrap_err();
    assert_eq!(held.fence, q.fence);
}

#[cfg(unix)]
#[tokio::test]
async fn the_state_file_its_wal_shm_and_key_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".ferry/state.db");
    // The env key is not set in tests that use the key file; open() creates <path>.key.
    let s = Store::open(&path).unwrap();
    s.commit_batch(&batch(&["k1"], "c1")).await.unwrap();
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let with = |suffix: &str| {
        let mut s = path.clone().into_os_string();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    assert_eq!(mode(&path), 0o600, "state file");
    assert_eq!(mode(&with("-wal")), 0o600, "WAL file");
    assert_eq!(mode(&with("-shm")), 0o600, "shared-memory file");
    if std::env::var_os(ferry::state::STATE_KEY_ENV).is_none() {
        assert_eq!(mode(&with(".key")), 0o600, "key file");
    }
    assert_eq!(mode(path.parent().unwrap()), 0o700, "state directory");
}

#[tokio::test]
async fn a_guard_released_gives_the_lease_up_before_it_returns() {
    let (_dir, _clock, a, b) = two_stores();
    let lease = a.try_acquire("p", "a:1:0:00", TTL).await.unwrap().unwrap();
    let guard = ferry::state::LeaseGuard::hold(&a, lease, TTL);
    assert!(b.lease_holder("p").await.unwrap().is_some());
    guard.release().await;
    // No waiting: the release is recorded when `release` returns.
    assert_eq!(b.lease_holder("p").await.unwrap(), None);
    assert!(b.try_acquire("p", "b:2:0:00", TTL).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_guard_dropped_without_release_still_gives_the_lease_up() {
    let (_dir, _clock, a, b) = two_stores();
    let lease = a.try_acquire("p", "a:1:0:00", TTL).await.unwrap().unwrap();
    drop(ferry::state::LeaseGuard::hold(&a, lease, TTL));
    // The drop releases in the background; the driven clock never moves, so only that
    // release (not an expiry) can free the lease.
    let mut freed = false;
    for _ in 0..2000 {
        if b.lease_holder("p").await.unwrap().is_none() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(freed, "the dropped guard never released its lease");
}
