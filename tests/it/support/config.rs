//! A small Zoom stream catalog for the config tests (the real one lives with the Zoom
//! connector), and helpers.

use ferry::config::{StreamCatalog, StreamInfo};
use serde_json::json;

pub struct TestCatalog;

fn info(
    name: &str,
    params: &[&str],
    required: &[&str],
    sample: serde_json::Value,
    incremental: bool,
    triggers: &[&str],
) -> StreamInfo {
    StreamInfo {
        name: name.into(),
        params: params.iter().map(|s| s.to_string()).collect(),
        required_params: required.iter().map(|s| s.to_string()).collect(),
        sample,
        incremental,
        single_fetch: !triggers.is_empty(),
        triggers: triggers.iter().map(|s| s.to_string()).collect(),
    }
}

impl StreamCatalog for TestCatalog {
    fn kind(&self) -> &str {
        "zoom"
    }

    fn stream(&self, name: &str) -> Option<StreamInfo> {
        Some(match name {
            "past_meetings" => info(
                name,
                &["user_id", "type"],
                &[],
                json!({
                    "uuid": "/ajXp112QmuoKj4854875==", "id": 85012345678u64,
                    "host_id": "z8yAAAAA8bbbQ", "topic": "Acme <> Contoso discovery",
                    "start_time": "2026-03-15T14:00:00Z", "end_time": "2026-03-15T14:33:00Z",
                    "duration": 33, "user_email": "rep@acme.com", "participants_count": 2,
                    "has_recording": true
                }),
                true,
                &["meeting.ended"],
            ),
            "past_meeting_participants" => info(
                name,
                &["meeting_uuid"],
                &["meeting_uuid"],
                json!({"id": "p1", "name": "Pat Buyer", "user_email": "pat@contoso.com",
                       "join_time": "2026-03-15T14:01:00Z", "duration": 1900}),
                false,
                &[],
            ),
            "meeting_recordings" => info(
                name,
                &["meeting_uuid"],
                &["meeting_uuid"],
                json!({"share_url": "https://zoom.us/rec/share/abc", "recording_files": []}),
                false,
                &["recording.completed"],
            ),
            "meeting_summary" => info(
                name,
                &["meeting_uuid"],
                &["meeting_uuid"],
                json!({"summary_title": "Discovery", "summary_overview": "We met.",
                       "next_steps": ["Send proposal"]}),
                false,
                &["meeting.summary_completed"],
            ),
            "users" => info(
                name,
                &["status"],
                &[],
                json!({"id": "u1", "email": "rep@acme.com", "type": 2}),
                false,
                &[],
            ),
            "request" => info(
                name,
                &["path", "record_selector", "method", "query"],
                &["path"],
                json!({}),
                false,
                &[],
            ),
            _ => return None,
        })
    }

    fn names(&self) -> Vec<String> {
        [
            "past_meetings",
            "past_meeting_participants",
            "meeting_recordings",
            "meeting_summary",
            "users",
            "request",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn single_record(&self, stream: &str) -> bool {
        matches!(stream, "meeting_recordings" | "meeting_summary")
    }
}

/// An environment with nothing in it, so tests never depend on the process env.
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// The `[expect L:C ...]` positions written on a broken file's first line.
pub fn expected_positions(text: &str) -> Vec<String> {
    let first = text.lines().next().unwrap_or("");
    let Some(i) = first.find("[expect ") else {
        return Vec::new();
    };
    first[i + 8..]
        .trim_end_matches(']')
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Every case in the corpus: (name, config path, pipeline files to check).
pub fn broken_cases() -> Vec<(String, std::path::PathBuf, Vec<std::path::PathBuf>)> {
    let mut out = Vec::new();
    let base = std::path::Path::new("tests/broken");
    let mut pipes: Vec<_> = std::fs::read_dir(base.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pipes.sort();
    for p in pipes {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        out.push((name, base.join("ferry.yaml"), vec![p]));
    }
    let mut projects: Vec<_> = std::fs::read_dir(base.join("projects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    projects.sort();
    for d in projects {
        let name = format!("project_{}", d.file_name().unwrap().to_string_lossy());
        out.push((name, d.join("ferry.yaml"), Vec::new()));
    }
    out
}
