//! Zoom webhook events a pipeline may name in `triggers:`.

/// Events ferry's webhook receiver understands. A connector's stream catalog may narrow
/// which of them can trigger a pipeline reading a given stream.
pub const KNOWN_EVENTS: &[&str] = &[
    "meeting.created",
    "meeting.updated",
    "meeting.deleted",
    "meeting.started",
    "meeting.ended",
    "meeting.participant_joined",
    "meeting.participant_left",
    "meeting.summary_completed",
    "meeting.summary_updated",
    "recording.completed",
    "recording.transcript_completed",
    "recording.deleted",
    "recording.trashed",
    "webinar.created",
    "webinar.updated",
    "webinar.deleted",
    "webinar.started",
    "webinar.ended",
    "webinar.registration_created",
    "webinar.registration_approved",
    "webinar.registration_cancelled",
    "webinar.participant_joined",
    "webinar.participant_left",
    "phone.callee_ended",
    "phone.caller_ended",
    "phone.callee_missed",
    "phone.caller_call_log_completed",
    "phone.callee_call_log_completed",
    "phone.caller_call_history_completed",
    "phone.callee_call_history_completed",
    "phone.recording_completed",
    "phone.voicemail_received",
    "user.created",
    "user.updated",
    "user.deactivated",
];

pub fn is_known_event(name: &str) -> bool {
    KNOWN_EVENTS.contains(&name)
}
