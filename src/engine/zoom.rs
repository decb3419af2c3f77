//! What the engine needs of Zoom to write to it (`zoom:` sinks): one call at a time, each
//! answered with Zoom's body or with what the engine must do about its failure. The Zoom
//! connector implements it (src/connectors/zoom/sink.rs); the write stage for Zoom sinks is
//! [`super::stage::zoom`].

use chrono::{DateTime, Utc};
use serde_json::Value;

/// How one Zoom write or read failed, as the engine acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoomWriteError {
    /// Zoom refused this record (a 4xx other than a limit): the record is dead-lettered
    /// with the message.
    Refused {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    /// The request may have reached Zoom but its answer was lost (a 5xx, a dropped
    /// connection): a create stays pending in the ledger and is looked up before it is
    /// sent again.
    Unknown(String),
    /// A per-resource daily limit (a host's 100 meeting creates and updates, a registrant's
    /// 3 registrations): the record waits until `until`; other records go on.
    Limit {
        until: DateTime<Utc>,
        message: String,
    },
    /// Nothing more can be written now (credentials, the account's daily cap, an open
    /// circuit): the run stops and the checkpoint stays.
    Stop(String),
}

impl std::fmt::Display for ZoomWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZoomWriteError::Refused {
                status,
                code,
                message,
            } => {
                write!(f, "Zoom refused it (HTTP {status}")?;
                if let Some(c) = code {
                    write!(f, ", code {c}")?;
                }
                write!(f, "): {message}")
            }
            ZoomWriteError::Unknown(m) => write!(f, "Zoom's answer was lost: {m}"),
            ZoomWriteError::Limit { until, message } => write!(
                f,
                "{message} (waits until {})",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            ZoomWriteError::Stop(m) => f.write_str(m),
        }
    }
}

/// One Zoom call: the method, the path with its parameters filled in (and encoded), the
/// query, the rate category and the JSON body.
#[derive(Debug, Clone)]
pub struct ZoomCall {
    pub method: &'static str,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub category: String,
    pub body: Option<Value>,
}

/// Zoom as the engine writes to it.
#[async_trait::async_trait]
pub trait ZoomWriter: Send + Sync {
    /// Sends one call; Zoom's JSON answer (`Null` for a 204).
    async fn call(&self, call: ZoomCall) -> Result<Value, ZoomWriteError>;
    /// Requests spent so far (reads and writes).
    fn calls(&self) -> u64;
}
