//! TLS to a PostgreSQL state: a real server with TLS on (a throwaway cluster with a test
//! certificate authority made by `openssl`), reached with `sslmode=require` and the
//! authority in `sslrootcert`; certificates that do not verify, a server without TLS and a
//! missing authority file are refused with a clear error; a URL without `sslmode` stays
//! without TLS, as documented.

use crate::support::pg::PgCluster;
use ferry::state::Store;
use std::path::Path;
use std::process::Command;

const KEY: [u8; 32] = [9u8; 32];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority `NAME-ca.pem` and, when `server`, a server certificate it signs
/// for 127.0.0.1 and localhost (`NAME-server.pem`, `NAME-server.key`).
fn authority(dir: &Path, name: &str, server: bool) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN=ferry test CA {name}"),
        ],
    );
    if !server {
        return;
    }
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let key = format!("{name}-server.key");
    let csr = format!("{name}-server.csr");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &format!("{name}-server.pem"),
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// Opens the state at `url` and makes it connect (a checkpoint written and read back).
async fn use_state(url: &str) -> Result<Store, String> {
    let s = Store::open_postgres_with_key(url, KEY).map_err(|e| e.to_string())?;
    s.set_checkpoint("p", "st", "", "2026-03-01T00:00:00Z")
        .await
        .map_err(|e| e.to_string())?;
    let back = s
        .checkpoint("p", "st", "")
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        back.map(|c| c.cursor).as_deref(),
        Some("2026-03-01T00:00:00Z")
    );
    Ok(s)
}

/// How many of ferry's open connections use TLS, and how many do not.
fn ferry_connections(pg: &PgCluster) -> (u32, u32) {
    let out = pg.psql(
        "postgres",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'ferry'",
    );
    let mut it = out.trim().split('|').map(|n| n.parse::<u32>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_reaches_postgres_over_verified_tls() {
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    authority(dir.path(), "good", true);
    authority(dir.path(), "other", false);
    let ca = dir.path().join("good-ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    let db = pg.create_db("tls");

    // A server without TLS: `require` is refused, not quietly sent in clear text.
    let url = format!("{db}?sslmode=require&sslrootcert={}", ca.display());
    let Err(err) = use_state(&url).await else {
        panic!("TLS required, none offered, and yet it connected")
    };
    assert!(err.contains("TLS"), "{err}");

    pg.enable_tls(
        &dir.path().join("good-server.pem"),
        &dir.path().join("good-server.key"),
    );

    // Verified with the authority the admin names; libpq's verify-full is accepted.
    for mode in ["require", "verify-full", "verify-ca"] {
        let url = format!("{db}?sslmode={mode}&sslrootcert={}", ca.display());
        let s = use_state(&url)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let (tls, clear) = ferry_connections(&pg);
        assert!(
            tls >= 1 && clear == 0,
            "{mode}: {tls} over TLS, {clear} in clear"
        );
        drop(s);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    // The server's certificate is not signed by a public authority, nor by another one.
    let err = use_state(&format!("{db}?sslmode=require"))
        .await
        .err()
        .unwrap();
    assert!(err.contains("certificate"), "{err}");
    let url = format!("{db}?sslmode=require&sslrootcert={}", other_ca.display());
    let err = use_state(&url).await.err().unwrap();
    assert!(err.contains("certificate"), "{err}");
    // A missing or empty authority file is named, and nothing connects.
    let missing = dir.path().join("nope.pem");
    let url = format!("{db}?sslmode=require&sslrootcert={}", missing.display());
    let err = use_state(&url).await.err().unwrap();
    assert!(
        err.contains("nope.pem") && err.contains("sslrootcert"),
        "{err}"
    );
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let url = format!(
        "{db}?sslmode=require&sslrootcert={}",
        dir.path().join("empty.pem").display()
    );
    let err = use_state(&url).await.err().unwrap();
    assert!(err.contains("no usable PEM certificate"), "{err}");
    assert!(!err.contains("pg-secret-pw"), "{err}");

    // Without sslmode: no TLS, as before TLS was supported (documented). The TLS
    // connections of the states dropped above close as their pools go.
    let s = use_state(&db).await.unwrap();
    let mut seen = ferry_connections(&pg);
    for _ in 0..50 {
        if seen.0 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        seen = ferry_connections(&pg);
    }
    assert!(
        seen.0 == 0 && seen.1 >= 1,
        "{} over TLS, {} in clear",
        seen.0,
        seen.1
    );
    drop(s);
}
