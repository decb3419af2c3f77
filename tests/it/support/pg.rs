//! A throwaway PostgreSQL cluster for the tests: `initdb` in a temporary directory (as the
//! `postgres` user when the tests run as root: initdb refuses root), listening on 127.0.0.1
//! on a free port and on a Unix socket in that directory, stopped when the guard drops (also
//! on a panic) and, should the test process be killed, by a watchdog that outlives it.
//! It runs with `fsync=off` for speed (only an OS crash could lose data, and the tests stop
//! the server, not the OS) but with synchronous commits, so a server stopped with
//! `-m immediate` keeps every committed transaction.
//!
//! PostgreSQL's binaries are found with `pg_config --bindir` or under
//! /usr/lib/postgresql/*/bin. Without them a test is skipped with a message, except under
//! `CI=true`, where a missing PostgreSQL is a failure (.ci/install installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct PgCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// The user the server runs as when the tests run as root.
    run_as: Option<String>,
    watchdog: Option<Child>,
}

fn bindir() -> Option<PathBuf> {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists());
    if from_config.is_some() {
        return from_config;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// Starts a cluster, or `None` (with a message) when PostgreSQL is not installed and
    /// this is not CI.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = bindir() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "PostgreSQL is not installed (no pg_config --bindir, nothing under \
                     /usr/lib/postgresql): .ci/install must install it"
                );
            }
            eprintln!("skipping: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let run_as = is_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            let ok = Command::new("chown")
                .args(["-R", &format!("{user}:"), &dir.path().to_string_lossy()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot give the temp dir to the {user} user");
        }
        let mut c = PgCluster {
            _dir: dir,
            data,
            bin,
            port: free_port(),
            run_as,
            watchdog: None,
        };
        let out = c
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "ferry",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&c.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c.start_server();
        c.watchdog = Some(c.spawn_watchdog());
        Some(c)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(exe);
                cmd
            }
            None => Command::new(exe),
        }
    }

    /// The cluster's data directory (to look at what the server wrote to disk).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    fn socket_dir(&self) -> &Path {
        self.data.parent().unwrap()
    }

    /// Starts the server (again, after [`Self::stop_server`]) on the same port and data.
    pub fn start_server(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            self.socket_dir().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.socket_dir().join("server.log"))
            .args(["-o", &opts, "-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.socket_dir().join("server.log")).unwrap_or_default()
        );
    }

    /// Turns TLS on with this certificate and key (PEM files), restarting the server.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        for (from, name) in [(cert, "server.pem"), (key, "server.key")] {
            let to = self.data.join(name);
            std::fs::copy(from, &to).unwrap();
            if let Some(user) = &self.run_as {
                let ok = Command::new("chown")
                    .args([&format!("{user}:"), &*to.to_string_lossy()])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "cannot give {name} to the {user} user");
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl_cert_file = 'server.pem'");
        self.psql("postgres", "ALTER SYSTEM SET ssl_key_file = 'server.key'");
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.stop_server();
        self.start_server();
    }

    /// Stops the server at once (connections are cut, as when the database host goes away).
    pub fn stop_server(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
    }

    /// A watchdog that stops the server once this test process is gone, however it ended.
    fn spawn_watchdog(&self) -> Child {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match &self.run_as {
            Some(u) => format!(
                "runuser -u {u} -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            ),
            None => format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            ),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1",
            pid = std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The URL of database `db` (with a password, which trust authentication ignores: the
    /// tests check it never shows).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://ferry:pg-secret-pw@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs one SQL command with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "ferry",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_server();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
