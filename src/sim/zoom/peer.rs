//! The endpoints that peer Zoom connectors read and ferry does not: the meetings a user has
//! scheduled, meeting and webinar definitions, their registrants, polls, registration
//! questions and tracking sources, past poll and Q&A results, meeting and webinar reports,
//! past-meeting instances and phone users (Airbyte `source-zoom`, the Singer and Meltano
//! taps, a dlt `rest_api` source). They serve the same world as the rest of the simulator,
//! so a peer's record counts can be set beside ferry's.
//!
//! What the world holds and these answers follow from it:
//! - Meetings are ended instances; a meeting *ID* (a series) is the instances sharing it.
//!   `/users/{id}/meetings` lists series that are not instant (type 1) and not expired: a
//!   non-recurring meeting ID expires 30 days after its last start, a recurring one (type 8)
//!   does not within the world's span. Instant or expired IDs answer 404 code 3001 on
//!   `/meetings/{id}` and its children, as Zoom does.
//! - Meetings take no registration (`approval_type` 2): their registrant list answers
//!   400 code 300 "has not set registration as required"; webinars do (`approval_type` 0).
//! - Polls, Q&A and tracking sources are enabled but empty.
//! - Reports (Heavy, paid plans only) cover instances with at least two participants, as
//!   the user-meetings report does; others answer 404 code 3001.

use super::{Route, SimState, error, iso};
use crate::connectors::zoom::ZoomPlan;
use crate::sim::world::{Attendee, Meeting, Participant, Webinar, World};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A non-recurring meeting ID expires this long after its last start.
const MEETING_ID_EXPIRY_DAYS: i64 = 30;

/// Matches the peer endpoints; the caller tries its own routes first.
pub(super) fn route<'a>(seg: &[&'a str]) -> Option<(Route, Vec<&'a str>)> {
    let r = |endpoint, category| Route {
        endpoint,
        category,
        phone: false,
    };
    Some(match seg {
        ["users", id, "meetings"] => (r("GET /users/{userId}/meetings", "medium"), vec![*id]),
        ["meetings", id] => (r("GET /meetings/{meetingId}", "light"), vec![*id]),
        ["meetings", id, "registrants"] => (
            r("GET /meetings/{meetingId}/registrants", "medium"),
            vec![*id],
        ),
        ["meetings", id, "registrants", "questions"] => (
            r("GET /meetings/{meetingId}/registrants/questions", "light"),
            vec![*id],
        ),
        ["meetings", id, "polls"] => (r("GET /meetings/{meetingId}/polls", "light"), vec![*id]),
        ["past_meetings", id, "polls"] => (
            r("GET /past_meetings/{meetingId}/polls", "medium"),
            vec![*id],
        ),
        ["past_meetings", id, "instances"] => (
            r("GET /past_meetings/{meetingId}/instances", "medium"),
            vec![*id],
        ),
        ["report", "meetings", id] => (r("GET /report/meetings/{meetingId}", "heavy"), vec![*id]),
        ["report", "meetings", id, "participants"] => (
            r("GET /report/meetings/{meetingId}/participants", "heavy"),
            vec![*id],
        ),
        ["webinars", id] => (r("GET /webinars/{webinarId}", "light"), vec![*id]),
        ["webinars", id, "polls"] => (r("GET /webinars/{webinarId}/polls", "light"), vec![*id]),
        ["webinars", id, "registrants", "questions"] => (
            r("GET /webinars/{webinarId}/registrants/questions", "light"),
            vec![*id],
        ),
        ["webinars", id, "tracking_sources"] => (
            r("GET /webinars/{webinarId}/tracking_sources", "light"),
            vec![*id],
        ),
        ["past_webinars", id, "polls"] => (
            r("GET /past_webinars/{webinarId}/polls", "medium"),
            vec![*id],
        ),
        ["past_webinars", id, "qa"] => {
            (r("GET /past_webinars/{webinarId}/qa", "medium"), vec![*id])
        }
        ["report", "webinars", id] => (r("GET /report/webinars/{webinarId}", "heavy"), vec![*id]),
        ["report", "webinars", id, "participants"] => (
            r("GET /report/webinars/{webinarId}/participants", "heavy"),
            vec![*id],
        ),
        ["phone", "users"] => (
            Route {
                endpoint: "GET /phone/users",
                category: "medium",
                phone: true,
            },
            vec![],
        ),
        _ => return None,
    })
}

/// One meeting ID and its instances that have started and were not deleted, oldest first.
struct Series<'a> {
    id: u64,
    instances: Vec<&'a Meeting>,
}

impl Series<'_> {
    fn latest(&self) -> &Meeting {
        // Never empty: a series is made from at least one instance.
        self.instances[self.instances.len() - 1]
    }
    fn first(&self) -> &Meeting {
        self.instances[0]
    }
    /// 8 when any instance recurs, else the meeting's own type.
    fn meeting_type(&self) -> u8 {
        if self.instances.iter().any(|m| m.meeting_type == 8) {
            8
        } else {
            self.first().meeting_type
        }
    }
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.instances.iter().any(|m| m.start <= now && now < m.end)
    }
    /// The ID still resolves on `/meetings/{id}`: instant meetings are gone once ended,
    /// non-recurring ones 30 days after their last start.
    fn valid(&self, now: DateTime<Utc>) -> bool {
        match self.meeting_type() {
            8 => true,
            1 => self.live(now),
            _ => self.latest().start + Duration::days(MEETING_ID_EXPIRY_DAYS) > now,
        }
    }
}

fn meeting_list_item(w: &World, s: &Series) -> Value {
    let m = s.latest();
    json!({"uuid": m.uuid, "id": s.id, "host_id": w.users[m.host].id, "topic": m.topic,
        "type": s.meeting_type(), "start_time": iso(m.start), "duration": m.duration_minutes(),
        "timezone": m.timezone, "created_at": iso(s.first().start - Duration::days(2)),
        "join_url": format!("https://zoom.us/j/{}", s.id), "agenda": ""})
}

fn meeting_json(w: &World, s: &Series, now: DateTime<Utc>) -> Value {
    let m = s.latest();
    let host = &w.users[m.host];
    let recorded = s.instances.iter().any(|i| i.recording.is_some());
    let settings = json!({"host_video": false, "participant_video": false, "join_before_host": false,
            "jbh_time": 0, "mute_upon_entry": false, "watermark": false, "use_pmi": false,
            "approval_type": 2, "registration_type": 1, "audio": "both",
            "auto_recording": if recorded { "cloud" } else { "none" }, "enforce_login": false,
            "enforce_login_domains": "", "alternative_hosts": "", "waiting_room": true,
            "meeting_authentication": false, "email_notification": true, "private_meeting": false,
            "registrants_confirmation_email": true, "registrants_email_notification": true,
            "close_registration": false, "show_share_button": false, "allow_multiple_devices": false,
            "encryption_type": "enhanced_encryption", "focus_mode": false, "host_save_video_order": false});
    let mut v = json!({"uuid": m.uuid, "id": s.id, "host_id": host.id, "host_email": host.email,
        "assistant_id": "", "topic": m.topic, "type": s.meeting_type(),
        "status": if s.live(now) { "started" } else { "waiting" },
        "start_time": iso(m.start), "duration": m.duration_minutes(), "timezone": m.timezone,
        "agenda": "", "created_at": iso(s.first().start - Duration::days(2)),
        "start_url": format!("https://zoom.us/s/{}", s.id), "join_url": format!("https://zoom.us/j/{}", s.id),
        "password": "", "h323_password": "", "encrypted_password": "", "pre_schedule": false,
        "settings": settings, "tracking_fields": []});
    if s.meeting_type() == 8 {
        v["recurrence"] = json!({"type": 2, "repeat_interval": 1, "end_times": s.instances.len()});
    }
    v
}

fn empty_results(id: u64, uuid: &str, start: DateTime<Utc>) -> Value {
    json!({"id": id, "uuid": uuid, "start_time": iso(start), "questions": []})
}

fn report_participant_json(p: &Participant) -> Value {
    let internal = matches!(p.attendee, Attendee::Internal(_));
    json!({"id": p.id, "user_id": p.user_id, "participant_user_id": if internal { p.id.as_str() } else { "" },
        "name": p.name, "user_email": p.email, "registrant_id": p.registrant_id, "customer_key": "",
        "bo_mtg_id": "", "join_time": iso(p.join_time), "leave_time": iso(p.leave_time),
        "duration": p.duration_secs(), "failover": false, "status": "in_meeting"})
}

fn report_json(
    w: &World,
    (uuid, id, kind, topic): (&str, u64, u8, &str),
    host: usize,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    participants: &[Participant],
) -> Value {
    let h = &w.users[host];
    let total: i64 = participants.iter().map(Participant::duration_secs).sum();
    json!({"uuid": uuid, "id": id, "type": kind, "topic": topic, "user_name": h.display_name(),
        "user_email": h.email, "dept": h.dept, "start_time": iso(start), "end_time": iso(end),
        "duration": (end - start).num_minutes(), "total_minutes": total / 60,
        "participants_count": participants.len(), "custom_keys": [], "tracking_fields": []})
}

impl SimState {
    /// Every meeting ID's started, undeleted instances, by ID.
    fn series(&self, now: DateTime<Utc>) -> BTreeMap<u64, Series<'_>> {
        let deleted = self.lock().deleted_meetings.clone();
        let mut out: BTreeMap<u64, Series<'_>> = BTreeMap::new();
        for m in self
            .world
            .meetings
            .iter()
            .filter(|m| m.start <= now && !deleted.contains(&m.uuid))
        {
            out.entry(m.id)
                .or_insert_with(|| Series {
                    id: m.id,
                    instances: Vec::new(),
                })
                .instances
                .push(m);
        }
        out
    }

    /// A meeting ID that still resolves (see [`Series::valid`]).
    fn valid_series(&self, id: &str, now: DateTime<Utc>) -> Option<Series<'_>> {
        let n: u64 = id.parse().ok()?;
        self.series(now).remove(&n).filter(|s| s.valid(now))
    }

    fn webinar_by(&self, id: &str) -> Option<&Webinar> {
        self.world
            .webinars
            .iter()
            .find(|x| x.id.to_string() == id || x.uuid == id)
    }

    /// Serves the endpoints of [`route`]; anything else is Zoom's plain 404.
    pub(super) fn serve_peer(
        &self,
        endpoint: &str,
        ids: &[String],
        q: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> (u16, Value) {
        let w = &self.world;
        let id0 = ids.first().map(String::as_str).unwrap_or("");
        let paid = self.plan != ZoomPlan::Free;
        let paid_only = || {
            error(
                400,
                200,
                &format!("Only available for paid account: {}", w.account_id),
            )
        };
        let gone = || {
            error(
                404,
                3001,
                &format!("Meeting {id0} is not found or has expired."),
            )
        };
        let no_webinar = || {
            error(
                404,
                3001,
                &format!("Webinar {id0} not found or has expired."),
            )
        };
        let not_ended = || error(404, 3001, "Webinar ID is invalid or not end.");
        match endpoint {
            "GET /users/{userId}/meetings" => {
                let Some(u) = self.user(id0) else {
                    return error(404, 1001, &format!("User does not exist: {id0}."));
                };
                let kind = q.get("type").map(String::as_str).unwrap_or("scheduled");
                let all = self.series(now);
                let mine = all.values().filter(|s| s.latest().host == u);
                let listed: Vec<&Series> = match kind {
                    "scheduled" | "previous_meetings" => mine
                        .filter(|s| s.meeting_type() != 1 && s.valid(now))
                        .filter(|s| kind == "scheduled" || s.latest().end <= now)
                        .collect(),
                    "live" => mine.filter(|s| s.live(now)).collect(),
                    // The world holds no meeting that starts after now.
                    "upcoming" | "upcoming_meetings" => Vec::new(),
                    _ => {
                        return (
                            400,
                            json!({"code": 300, "message": "Validation Failed.",
                                "errors": [{"field": "type", "message": "Invalid field."}]}),
                        );
                    }
                };
                let mut listed = listed;
                listed.sort_by_key(|s| (s.latest().start, s.id));
                let items = listed.iter().map(|s| meeting_list_item(w, s)).collect();
                self.page("meetings", items, q, 300, json!({"page_number": 1}), now)
            }
            "GET /meetings/{meetingId}" => match self.valid_series(id0, now) {
                Some(s) => (200, meeting_json(w, &s, now)),
                None => gone(),
            },
            "GET /meetings/{meetingId}/registrants" => match self.valid_series(id0, now) {
                Some(_) => error(
                    400,
                    300,
                    &format!("This meeting has not set registration as required: {id0}."),
                ),
                None => gone(),
            },
            "GET /meetings/{meetingId}/registrants/questions" => {
                match self.valid_series(id0, now) {
                    Some(_) => (200, json!({"questions": [], "custom_questions": []})),
                    None => gone(),
                }
            }
            "GET /meetings/{meetingId}/polls" => match self.valid_series(id0, now) {
                Some(_) => (200, json!({"total_records": 0, "polls": []})),
                None => gone(),
            },
            "GET /past_meetings/{meetingId}/polls" => {
                if !paid {
                    return paid_only();
                }
                match self.meeting(id0, now) {
                    Some(m) => (200, empty_results(m.id, &m.uuid, m.start)),
                    None => error(404, 3001, &format!("Meeting does not exist: {id0}.")),
                }
            }
            "GET /past_meetings/{meetingId}/instances" => {
                let ended: Vec<Value> = id0
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| self.series(now).remove(&n))
                    .map(|s| {
                        s.instances
                            .iter()
                            .filter(|m| m.end <= now)
                            .map(|m| json!({"uuid": m.uuid, "start_time": iso(m.start)}))
                            .collect()
                    })
                    .unwrap_or_default();
                if ended.is_empty() {
                    return error(404, 3001, &format!("Meeting does not exist: {id0}."));
                }
                (200, json!({"meetings": ended}))
            }
            "GET /report/meetings/{meetingId}"
            | "GET /report/meetings/{meetingId}/participants" => {
                if !paid {
                    return paid_only();
                }
                let Some(m) = self.meeting(id0, now).filter(|m| m.in_reports()) else {
                    return error(
                        404,
                        3001,
                        &format!("Meeting {id0} not found or has expired."),
                    );
                };
                if endpoint.ends_with("/participants") {
                    let rows = m.participants.iter().map(report_participant_json).collect();
                    return self.page("participants", rows, q, 300, json!({}), now);
                }
                let meta = (m.uuid.as_str(), m.id, m.meeting_type, m.topic.as_str());
                (
                    200,
                    report_json(w, meta, m.host, (m.start, m.end), &m.participants),
                )
            }
            "GET /webinars/{webinarId}" => {
                let Some(x) = w.webinars.iter().find(|x| x.id.to_string() == id0) else {
                    return no_webinar();
                };
                let host = &w.users[x.host];
                let settings = json!({"host_video": true, "panelists_video": true, "approval_type": 0,
                        "registration_type": 1, "audio": "both", "auto_recording": "none",
                        "enforce_login": false, "enforce_login_domains": "", "alternative_hosts": "",
                        "close_registration": false, "show_share_button": true, "allow_multiple_devices": true,
                        "practice_session": false, "hd_video": false, "hd_video_for_attendees": false,
                        "send_1080p_video_to_attendees": false, "on_demand": false, "post_webinar_survey": false,
                        "registrants_confirmation_email": true, "registrants_email_notification": true,
                        "registrants_restrict_number": 0, "notify_registrants": true,
                        "panelists_invitation_email_notification": true, "meeting_authentication": false,
                        "add_watermark": false, "add_audio_watermark": false, "email_language": "en-US",
                        "contact_name": host.display_name(), "contact_email": host.email});
                (
                    200,
                    json!({"uuid": x.uuid, "id": x.id, "host_id": host.id, "host_email": host.email,
                    "topic": x.topic, "type": 5, "start_time": iso(x.start), "duration": (x.end - x.start).num_minutes(),
                    "timezone": "UTC", "agenda": "", "created_at": iso(x.created_at),
                    "start_url": format!("https://zoom.us/s/{}", x.id), "join_url": format!("https://zoom.us/j/{}", x.id),
                    "registration_url": format!("https://zoom.us/webinar/register/{}", x.id), "password": "",
                    "is_simulive": false, "record_file_id": "",
                    "settings": settings, "tracking_fields": []}),
                )
            }
            "GET /webinars/{webinarId}/polls" => match self.webinar_by(id0) {
                Some(_) => (200, json!({"total_records": 0, "polls": []})),
                None => no_webinar(),
            },
            "GET /webinars/{webinarId}/registrants/questions" => match self.webinar_by(id0) {
                Some(_) => (
                    200,
                    json!({"questions": [
                        {"field_name": "last_name", "required": true},
                        {"field_name": "org", "required": false},
                        {"field_name": "job_title", "required": false},
                        {"field_name": "industry", "required": false},
                        {"field_name": "phone", "required": false}],
                    "custom_questions": []}),
                ),
                None => no_webinar(),
            },
            "GET /webinars/{webinarId}/tracking_sources" => match self.webinar_by(id0) {
                Some(_) => (200, json!({"total_records": 0, "tracking_sources": []})),
                None => no_webinar(),
            },
            "GET /past_webinars/{webinarId}/polls" | "GET /past_webinars/{webinarId}/qa" => {
                if !paid {
                    return paid_only();
                }
                match self.webinar_by(id0).filter(|x| x.end <= now) {
                    Some(x) => (200, empty_results(x.id, &x.uuid, x.start)),
                    None => not_ended(),
                }
            }
            "GET /report/webinars/{webinarId}"
            | "GET /report/webinars/{webinarId}/participants" => {
                if !paid {
                    return paid_only();
                }
                let Some(x) = self.webinar_by(id0).filter(|x| x.end <= now) else {
                    return no_webinar();
                };
                if endpoint.ends_with("/participants") {
                    let rows = x.attendees.iter().map(report_participant_json).collect();
                    return self.page("participants", rows, q, 300, json!({}), now);
                }
                let meta = (x.uuid.as_str(), x.id, 5, x.topic.as_str());
                (
                    200,
                    report_json(w, meta, x.host, (x.start, x.end), &x.attendees),
                )
            }
            "GET /phone/users" => {
                let items = w
                    .users
                    .iter()
                    .map(|u| {
                        json!({"id": u.id, "phone_user_id": u.phone_user_id, "name": u.display_name(),
                            "email": u.email, "extension_number": u.phone_extension.parse::<u64>().unwrap_or(0),
                            "extension_id": u.phone_user_id.chars().rev().collect::<String>(),
                            "status": "activate", "department": u.dept, "cost_center": "",
                            "site": {"id": "SiteMain00000000000000", "name": "Main Site"},
                            "calling_plans": [{"name": "US/CA Unlimited Calling Plan", "type": 200}],
                            "phone_numbers": []})
                    })
                    .collect();
                self.page("users", items, q, 100, json!({}), now)
            }
            _ => error(404, 404, "Not found"),
        }
    }
}
