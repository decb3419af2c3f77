//! `ferry run` as a child process, so its CPU time and peak memory are measured alone.

use super::BenchError;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the kernel and ferry's own log say about one `ferry run`.
#[derive(Debug, Clone, Default)]
pub struct ChildRun {
    pub wall: Duration,
    pub user_cpu: Duration,
    pub system_cpu: Duration,
    /// Peak resident set size (VmHWM, sampled every 5 ms until exit), in KiB.
    pub peak_rss_kib: u64,
    pub exit_code: i32,
    pub log: RunLog,
}

impl ChildRun {
    pub fn cpu(&self) -> Duration {
        self.user_cpu + self.system_cpu
    }
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

/// The fields of the "run finished" line `ferry --log-format json run` writes per pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLog {
    pub pipeline: String,
    pub records_read: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub unmatched: u64,
    pub errors: u64,
    pub zoom_calls: u64,
    pub salesforce_calls: u64,
    pub zoom_429: u64,
    pub zoom_wait_ms: u64,
    pub salesforce_429: u64,
    pub stopped: String,
}

impl RunLog {
    /// Reads one JSON log line; None unless it is a "run finished" line.
    pub fn parse(line: &str) -> Option<RunLog> {
        let v: Value = serde_json::from_str(line).ok()?;
        let f = v.get("fields")?;
        if f.get("message")?.as_str()? != "run finished" {
            return None;
        }
        let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
        let s = |k: &str| {
            f.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(RunLog {
            pipeline: s("pipeline"),
            records_read: n("records_read"),
            created: n("created"),
            updated: n("updated"),
            unchanged: n("unchanged"),
            unmatched: n("unmatched"),
            errors: n("errors"),
            zoom_calls: n("zoom_calls"),
            salesforce_calls: n("salesforce_calls"),
            zoom_429: n("zoom_429"),
            zoom_wait_ms: n("zoom_wait_ms"),
            salesforce_429: n("salesforce_429"),
            stopped: s("stopped"),
        })
    }
}

/// Runs `ferry --config CONFIG --log-format json run PIPELINE` and waits for it with
/// `wait4`, which hands back the child's own resource usage.
pub fn run_ferry(
    ferry: &Path,
    config: &Path,
    pipeline: &str,
    unpaced: bool,
) -> Result<ChildRun, BenchError> {
    let started = Instant::now();
    let mut child = Command::new(ferry)
        .arg("--config")
        .arg(config)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg(pipeline)
        .env(
            ferry::engine::connect::UNPACED_ENV,
            if unpaced { "1" } else { "0" },
        )
        .env("FERRY_LOG", "ferry=info,warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Child(format!("starting {}: {e}", ferry.display())))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| BenchError::Child("no stderr pipe".into()))?;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.push(line);
        }
        lines
    });
    let pid = child.id() as libc::pid_t;
    // The kernel's ru_maxrss would also count the spawning process's memory (the child
    // shares it until exec), so the peak is read from the child's own VmHWM while it runs.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(Ordering::SeqCst) {
                match vm_hwm_kib(pid) {
                    Some(kib) => peak = peak.max(kib),
                    None if peak > 0 => break,
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let waited = wait_with_usage(pid);
    done.store(true, Ordering::SeqCst);
    let peak_rss_kib = sampler.join().unwrap_or(0);
    let (status, usage) = waited?;
    let wall = started.elapsed();
    // The child is reaped: `child` must not be waited on again (dropping it does not).
    drop(child);
    let lines = reader.join().unwrap_or_default();
    let log = lines.iter().find_map(|l| RunLog::parse(l));
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let Some(log) = log else {
        let tail: Vec<&String> = lines.iter().rev().take(10).collect();
        return Err(BenchError::Child(format!(
            "ferry run exited with {exit_code} without a \"run finished\" line; last output:\n{}",
            tail.into_iter()
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        )));
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(ChildRun {
        wall,
        user_cpu: tv(usage.ru_utime),
        system_cpu: tv(usage.ru_stime),
        peak_rss_kib,
        exit_code,
        log,
    })
}

/// The peak resident set size of a live process, from /proc.
fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// The benchmark's only unsafe code (the product denies it): the kernel's own accounting of
// the child, which std does not expose.
#[allow(unsafe_code)]
fn wait_with_usage(pid: libc::pid_t) -> Result<(i32, libc::rusage), BenchError> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child, not yet reaped; both pointers are to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(BenchError::Child(format!("waiting for ferry: {err}")));
        }
    }
}
