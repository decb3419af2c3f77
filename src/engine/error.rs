//! What can go wrong in the engine, how bad it is, and what it concerns.
//!
//! Three levels: a [`ConnectorError`] is what a source or sink answered; a [`RecordError`]
//! keeps one source record from being written (it becomes a dead letter, the run goes on);
//! a [`StageError`] stops the batch in flight and the run (its checkpoint does not move, so
//! the next run reads the batch again). Messages are the text users see in plans and
//! reports: keep them stable.

use super::lookup::LookupError;
use super::render::RenderError;
use crate::state::StateError;
use crate::template::TemplateError;

/// Whether trying again later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The service was unreachable, throttled or out of its allowance, or the state file
    /// was busy: a later run may succeed without anyone acting.
    Retryable,
    /// Configuration, credentials or data: trying again changes nothing until someone acts.
    Fatal,
}

/// A source's or sink's failure (a read, an enrichment fetch, a match query, a write).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ConnectorError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ConnectorError {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        ConnectorError {
            kind: ErrorKind::Fatal,
            message: message.into(),
        }
    }
}

/// Why a fetch found nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The child object does not exist (an `optional` enrichment is then null).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(ConnectorError),
}

/// Why one source record is not written. It is reported on the record and kept as a dead
/// letter; the other records of the batch go on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    #[error("source.where: {0}")]
    Where(TemplateError),
    #[error("enrich.{name}.when: {error}")]
    EnrichWhen { name: String, error: TemplateError },
    #[error("enrich.{name}.params.{param}: {error}")]
    EnrichParam {
        name: String,
        param: String,
        error: TemplateError,
    },
    /// A child read (not `optional`) found nothing.
    #[error("enrich.{name}: {message}")]
    EnrichNotFound { name: String, message: String },
    /// A template of `vars` or of a sink failed.
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// What stops the batch in flight and the run: nothing after it is written and its
/// checkpoint does not move.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("source.params.{param}: {error}")]
    SourceParams { param: String, error: TemplateError },
    #[error("reading {stream}: {error}")]
    Read {
        stream: String,
        error: ConnectorError,
    },
    /// An enrichment failed in a way that would fail every record (it concerns the record
    /// `record`, the first to meet it).
    #[error("enrich.{name}: {error}")]
    Enrich {
        record: String,
        name: String,
        error: ConnectorError,
    },
    /// A lookup's template or query failed for the batch.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The sink refused a whole call (credentials, a missing field, the budget).
    #[error("{error}")]
    Sink { sink: String, error: ConnectorError },
    #[error("reading the ledger: {0}")]
    ReadLedger(StateError),
    #[error("saving state: {0}")]
    SaveState(StateError),
}

impl StageError {
    /// Whether a later run may get past this without anyone acting.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StageError::SourceParams { .. } => ErrorKind::Fatal,
            StageError::Read { error, .. }
            | StageError::Enrich { error, .. }
            | StageError::Sink { error, .. } => error.kind,
            StageError::Lookup(LookupError::Query { error, .. }) => error.kind,
            StageError::Lookup(LookupError::Render(_)) => ErrorKind::Fatal,
            // A busy or briefly unwritable state file; the batch is read again next run.
            StageError::ReadLedger(_) | StageError::SaveState(_) => ErrorKind::Retryable,
        }
    }

    /// The source record the error concerns, when it is one record's (otherwise the batch).
    pub fn record(&self) -> Option<&str> {
        match self {
            StageError::Enrich { record, .. } => Some(record),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_error_takes_its_kind_from_the_connector_and_keeps_the_message() {
        let e = StageError::Read {
            stream: "zoom.past_meetings".into(),
            error: ConnectorError::retryable("could not reach zoom"),
        };
        assert_eq!(e.kind(), ErrorKind::Retryable);
        assert_eq!(
            e.to_string(),
            "reading zoom.past_meetings: could not reach zoom"
        );
        assert_eq!(e.record(), None);

        let e = StageError::Enrich {
            record: "abc==".into(),
            name: "participants".into(),
            error: ConnectorError::fatal("Zoom authentication failed: bad secret"),
        };
        assert_eq!(e.kind(), ErrorKind::Fatal);
        assert_eq!(e.record(), Some("abc=="));
        assert_eq!(
            e.to_string(),
            "enrich.participants: Zoom authentication failed: bad secret"
        );
        let e = StageError::Sink {
            sink: "event".into(),
            error: ConnectorError::retryable("budget"),
        };
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            (ErrorKind::Retryable, "budget")
        );
    }

    #[test]
    fn fetch_and_record_errors_read_as_before() {
        assert_eq!(
            FetchError::Failed(ConnectorError::fatal("boom")).to_string(),
            "boom"
        );
        let e = RecordError::EnrichNotFound {
            name: "summary".into(),
            message: "no summary".into(),
        };
        assert_eq!(e.to_string(), "enrich.summary: no summary");
    }
}
