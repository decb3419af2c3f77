//! The built-in stream catalog: `catalog.yaml` compiled into the binary and parsed once.

use crate::config::catalog::{StreamCatalog, StreamInfo};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const CATALOG_YAML: &str = include_str!("catalog.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    streams: BTreeMap<String, StreamDef>,
}

/// A date window: incremental reads go in chunks of at most `max_days`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    pub max_days: i64,
    /// How far the field the API filters the window on (e.g. a meeting's start date) can
    /// precede the cursor (its end): a checkpointed read asks for this much more, so a
    /// meeting that started before the checkpoint and ended after it is still listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<String>,
    /// How long after its cursor value a record can first appear in the listing (e.g. a
    /// recording after processing): cursors stay this far behind now, so the next read
    /// re-reads that stretch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
}

impl WindowDef {
    pub fn lead(&self) -> chrono::Duration {
        self.lead
            .as_deref()
            .and_then(parse_span)
            .unwrap_or_default()
    }
    pub fn settle(&self) -> chrono::Duration {
        self.settle
            .as_deref()
            .and_then(parse_span)
            .unwrap_or_default()
    }
}

/// "30h", "2d", "15m", "90s" → a duration.
pub fn parse_span(s: &str) -> Option<chrono::Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].trim().parse().ok()?;
    match unit {
        's' => Some(chrono::Duration::seconds(n)),
        'm' => Some(chrono::Duration::minutes(n)),
        'h' => Some(chrono::Duration::hours(n)),
        'd' => Some(chrono::Duration::days(n)),
        _ => None,
    }
}

/// `user_id: all` fans out over another stream's records.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionDef {
    pub param: String,
    pub over: String,
    pub field: String,
    /// The field of `over`'s records that names a partition for a person (a user's email):
    /// the status page shows it instead of the id.
    #[serde(default)]
    pub label: Option<String>,
}

/// How to read a stream for one Zoom user (privacy requests: `ferry subject export`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectDef {
    /// The export's section for this stream ("cloud recordings").
    pub section: String,
    /// The per-user path (`{user_id}` is the user's id); the stream's own path if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// JSONPath of the records; the stream's selector if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Rate-limit category of the per-user path; the stream's if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Read in date windows (`from`/`to`) of the stream's `max_days` back to the horizon.
    #[serde(default)]
    pub windowed: bool,
    /// How many days back Zoom answers at most (its reports: 6 months); none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_days: Option<i64>,
}

/// A single-record fetch.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SingleDef {
    pub path: String,
    pub params: Vec<String>,
    pub category: String,
}

/// One stream of the catalog.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    #[serde(skip_deserializing)]
    pub name: String,
    pub description: String,
    /// What one record is, in words ("meeting", "recording", "registrant"): reports label
    /// records with it.
    pub noun: String,
    pub path: String,
    /// Fixed query parameters (overridable by params of the same name).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub required: Vec<String>,
    /// JSONPath to the records in a response body.
    pub selector: String,
    /// Page size to ask for (the endpoint's maximum); none means the endpoint does not page.
    #[serde(default)]
    pub page_size: Option<u32>,
    pub primary_key: String,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub window: Option<WindowDef>,
    #[serde(default)]
    pub partition: Option<PartitionDef>,
    /// Rate-limit category: light, medium, heavy, resource_intensive.
    pub category: String,
    /// "meetings" (default) or "phone": which rate table applies.
    #[serde(default)]
    pub api: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Zoom error codes that mean "there is no data here".
    #[serde(default)]
    pub no_data: Vec<i64>,
    #[serde(default)]
    pub single: Option<SingleDef>,
    /// For events whose payload carries the records themselves (Zoom Phone's call history
    /// and recordings): the array field of the event's `payload.object` holding them. A
    /// trigger then runs the pipeline on those records without a fetch.
    #[serde(default)]
    pub event_records: Option<String>,
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Read for one user in privacy requests (`ferry subject export`), and how.
    #[serde(default)]
    pub subject: Option<SubjectDef>,
    pub sample: serde_json::Value,
}

impl StreamDef {
    pub fn incremental(&self) -> bool {
        self.cursor.is_some()
    }
    /// The rate-limit bucket key: category, prefixed for the Phone API's own table.
    pub fn bucket(&self, category: &str) -> String {
        match self.api.as_deref() {
            Some("phone") => format!("phone_{category}"),
            _ => category.to_string(),
        }
    }
}

/// The Zoom connector's stream catalog.
#[derive(Debug)]
pub struct ZoomCatalog {
    streams: BTreeMap<String, StreamDef>,
}

impl ZoomCatalog {
    pub fn get(&self, name: &str) -> Option<&StreamDef> {
        self.streams.get(name)
    }
    pub fn all(&self) -> impl Iterator<Item = &StreamDef> {
        self.streams.values()
    }
}

/// The built-in catalog. Parsed on first use; a unit test proves the embedded YAML parses.
// The only panic outside tests: the catalog is compiled in, not user input.
#[allow(clippy::panic)]
pub fn catalog() -> &'static ZoomCatalog {
    static CATALOG: OnceLock<ZoomCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let file: CatalogFile = match serde_saphyr::from_str(CATALOG_YAML) {
            Ok(f) => f,
            // The YAML is compiled in and tested; failing here is a build defect.
            Err(e) => panic!("built-in Zoom catalog is invalid: {e}"),
        };
        let streams = file
            .streams
            .into_iter()
            .map(|(name, mut def)| {
                def.name = name.clone();
                (name, def)
            })
            .collect();
        ZoomCatalog { streams }
    })
}

impl StreamCatalog for ZoomCatalog {
    fn kind(&self) -> &str {
        "zoom"
    }

    fn stream(&self, name: &str) -> Option<StreamInfo> {
        let d = self.streams.get(name)?;
        Some(StreamInfo {
            name: d.name.clone(),
            params: d.params.clone(),
            required_params: d.required.clone(),
            sample: d.sample.clone(),
            incremental: d.incremental(),
            single_fetch: d.single.is_some() || d.event_records.is_some(),
            triggers: d.triggers.clone(),
        })
    }

    fn names(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }

    fn single_record(&self, stream: &str) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|d| d.selector.trim() == "$")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_is_consistent() {
        let c = catalog();
        for name in [
            "users",
            "past_meetings",
            "past_meeting",
            "past_meeting_participants",
            "meeting_recordings",
            "user_recordings",
            "meeting_summary",
            "webinars",
            "webinar_registrants",
            "past_webinar_participants",
            "webinar_panelists",
            "webinar_absentees",
            "phone_call_history",
            "phone_recordings",
            "voicemails",
            "user_settings",
            "user_meetings",
            "phone_user",
            "phone_user_settings",
            "request",
        ] {
            let d = c.get(name).unwrap_or_else(|| panic!("missing {name}"));
            for r in &d.required {
                assert!(d.params.contains(r), "{name}: required {r} not a param");
            }
            if let Some(p) = &d.partition {
                assert!(
                    c.get(&p.over).is_some(),
                    "{name}: partition over unknown stream"
                );
            }
            assert!(d.sample.is_object(), "{name}: sample must be an object");
            if let Some(cursor) = &d.cursor {
                assert!(
                    d.sample.get(cursor).is_some(),
                    "{name}: sample lacks cursor"
                );
                let w = d
                    .window
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: incremental streams need a window"));
                for span in [&w.lead, &w.settle].into_iter().flatten() {
                    assert!(parse_span(span).is_some(), "{name}: bad duration {span}");
                }
            }
        }
        // Every per-user stream of a privacy request is in the catalog, with {user_id}.
        let sections: Vec<&str> = c
            .all()
            .filter_map(|d| d.subject.as_ref().map(|s| (d, s)))
            .map(|(d, s)| {
                let path = s.path.as_deref().unwrap_or(&d.path);
                assert!(
                    path.contains("{user_id}"),
                    "{}: subject path needs {{user_id}}",
                    d.name
                );
                s.section.as_str()
            })
            .collect();
        assert_eq!(sections.len(), 11, "{sections:?}");
        let pm = c.get("past_meetings").expect("past_meetings");
        assert_eq!(pm.cursor.as_deref(), Some("end_time"));
        assert_eq!(
            pm.window.as_ref().map(WindowDef::lead),
            Some(chrono::Duration::hours(30))
        );
        assert_eq!(parse_span("2d"), Some(chrono::Duration::days(2)));
        assert_eq!(parse_span("2x"), None);
        let info = c.stream("past_meetings").expect("info");
        assert!(info.incremental && info.single_fetch);
        assert_eq!(info.triggers, vec!["meeting.ended".to_string()]);
        assert_eq!(c.kind(), "zoom");
    }
}
