//! The per-user endpoints a privacy request reads (`ferry subject export`) that the rest of
//! the simulator does not serve: a user's meeting settings, Zoom Phone profile and settings,
//! call history, voicemails and phone recordings, in the shapes of Zoom's OpenAPI specs
//! (tests/it/zoom_openapi.rs checks them). They serve the same world as the account-level
//! endpoints: a user's calls are the world's calls with that user.
//!
//! A phone user is found by Zoom user id, email or phone user id (Zoom documents "the user
//! ID or email address"; the phone user id is accepted too, the looser reading, because the
//! account-level listings hand it out as `owner.id`). Rate-limit labels are the specs':
//! profile and settings LIGHT, call history HEAVY, voicemails and recordings MEDIUM; user
//! settings MEDIUM. Date windows follow the account-level listings (one month at most,
//! within the last 6 months).

use super::{Route, SimState, error, iso, parties};
use crate::sim::world::{Call, World};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Matches the per-user endpoints; the caller tries its own routes first.
pub(super) fn route<'a>(seg: &[&'a str]) -> Option<(Route, Vec<&'a str>)> {
    let p = |endpoint, category| Route {
        endpoint,
        category,
        phone: true,
    };
    Some(match seg {
        ["users", id, "settings"] => (
            Route {
                endpoint: "GET /users/{userId}/settings",
                category: "medium",
                phone: false,
            },
            vec![*id],
        ),
        ["phone", "users", id] => (p("GET /phone/users/{userId}", "light"), vec![*id]),
        ["phone", "users", id, "settings"] => {
            (p("GET /phone/users/{userId}/settings", "light"), vec![*id])
        }
        ["phone", "users", id, "call_history"] => (
            p("GET /phone/users/{userId}/call_history", "heavy"),
            vec![*id],
        ),
        ["phone", "users", id, "voice_mails"] => (
            p("GET /phone/users/{userId}/voice_mails", "medium"),
            vec![*id],
        ),
        ["phone", "users", id, "recordings"] => (
            p("GET /phone/users/{userId}/recordings", "medium"),
            vec![*id],
        ),
        _ => return None,
    })
}

fn phone_user(w: &World, id: &str) -> Option<usize> {
    w.users.iter().position(|u| {
        u.id == id || u.phone_user_id == id || (!id.is_empty() && u.email.eq_ignore_ascii_case(id))
    })
}

fn owner(w: &World, u: usize) -> Value {
    let user = &w.users[u];
    json!({"type": "user", "id": user.phone_user_id, "name": user.display_name(),
        "extension_number": user.phone_extension.parse::<u64>().unwrap_or(0)})
}

impl SimState {
    /// The ended calls of a Zoom Phone user (`id0`: id or email) that started within the
    /// request's `from`/`to` window (`datetimes`: whether the endpoint takes date-times), with
    /// the user and the window as the answer echoes it; 404 for an unknown user, 400 for a
    /// bad window.
    fn ended_calls(
        &self,
        id0: &str,
        q: &BTreeMap<String, String>,
        now: DateTime<Utc>,
        datetimes: bool,
    ) -> Result<(usize, Vec<&Call>, Value), (u16, Value)> {
        let w = &self.world;
        let Some(u) = phone_user(w, id0) else {
            return Err(error(404, 1001, &format!("User does not exist: {id0}.")));
        };
        let (from, to) = self.window(q, now, false, datetimes)?;
        let calls = w
            .calls
            .iter()
            .filter(|c| c.user == u && c.end <= now)
            .filter(|c| c.start.date_naive() >= from && c.start.date_naive() <= to)
            .collect();
        Ok((
            u,
            calls,
            json!({"from": from.to_string(), "to": to.to_string()}),
        ))
    }

    /// Answers a per-user endpoint, or None when `endpoint` is not one.
    pub(super) fn serve_subject(
        &self,
        endpoint: &str,
        ids: &[String],
        q: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Option<(u16, Value)> {
        let w = &self.world;
        let id0 = ids.first().map(String::as_str).unwrap_or("");
        let no_user = || error(404, 1001, &format!("User does not exist: {id0}."));
        Some(match endpoint {
            "GET /users/{userId}/settings" => {
                let Some(u) = self.user(id0) else {
                    return Some(no_user());
                };
                let user = &w.users[u];
                (
                    200,
                    json!({
                        "schedule_meeting": {"host_video": true, "participants_video": false,
                            "join_before_host": false, "require_password_for_scheduling_new_meetings": true,
                            "audio_type": "both"},
                        "in_meeting": {"chat": true, "private_chat": true, "auto_saving_chat": false,
                            "waiting_room": true, "file_transfer": true},
                        "email_notification": {"cloud_recording_available_reminder": true,
                            "jbh_reminder": true, "cancel_meeting_reminder": true},
                        "recording": {"local_recording": true, "cloud_recording": true,
                            "auto_recording": "none", "recording_password_requirement": {"length": 8}},
                        "telephony": {"third_party_audio": false, "audio_conference_info": ""},
                        "feature": {"meeting_capacity": 300, "large_meeting": false, "webinar": true,
                            "zoom_phone": true},
                        "profile": {"recording_storage_location": {"allowed_values": ["US"], "value": "US"}},
                        "tsp": {"call_out": false, "show_international_numbers_link": false},
                        "audio_conferencing": {"toll_free_and_fee_based_toll_call": {"enable": false}},
                        // The user's time zone, so settings differ per user as Zoom's do.
                        "schedule_meeting_timezone": user.timezone,
                    }),
                )
            }
            "GET /phone/users/{userId}" => {
                let Some(u) = phone_user(w, id0) else {
                    return Some(no_user());
                };
                let user = &w.users[u];
                (
                    200,
                    json!({"id": user.phone_user_id, "phone_user_id": user.phone_user_id, "email": user.email,
                        "extension_id": user.phone_user_id,
                        "extension_number": user.phone_extension.parse::<u64>().unwrap_or(0),
                        "status": "activate", "department": user.dept, "cost_center": "",
                        "site_id": "8f71O6rWT8KFUGQmJIFAdQ", "site_admin": false,
                        "phone_numbers": [], "calling_plans": [{"type": 200, "billing_account_id": "", "billing_account_name": ""}],
                        "policy": {}, "emergency_address": {"country": "US"}}),
                )
            }
            "GET /phone/users/{userId}/settings" => {
                let Some(u) = phone_user(w, id0) else {
                    return Some(no_user());
                };
                let user = &w.users[u];
                (
                    200,
                    json!({"area_code": "415", "company_number": "+14155550100",
                        "country": {"code": "1", "country_code": "US", "name": "United States"},
                        "extension_number": user.phone_extension.parse::<u64>().unwrap_or(0),
                        "outbound_caller": {"number": "+14155550100"}, "status": "activate",
                        "audio_prompt_language": "en-US", "music_on_hold_id": "",
                        "voice_mail": [{"access_user_id": user.phone_user_id, "delete": true, "download": true, "shared_id": ""}],
                        "outbound_caller_ids": [{"is_default": true, "name": "Main", "number": "+14155550100"}],
                        "delegation": {"assistants": [], "privacy": false, "privileges": [], "locked": false},
                        "desk_phone": {"devices": [], "pc_setting": false},
                        "intercom": {"audio_intercoms": []},
                        "auto_call_recording_access_members": [], "ad_hoc_call_recording_access_members": []}),
                )
            }
            "GET /phone/users/{userId}/call_history" => {
                let (_, calls, window) = match self.ended_calls(id0, q, now, true) {
                    Ok(x) => x,
                    Err(e) => return Some(e),
                };
                let items = calls.into_iter().map(|c| super::call_json(w, c)).collect();
                self.page("call_logs", items, q, 300, window, now)
            }
            "GET /phone/users/{userId}/voice_mails" => {
                let (u, calls, window) = match self.ended_calls(id0, q, now, false) {
                    Ok(x) => x,
                    Err(e) => return Some(e),
                };
                let items = calls
                    .into_iter()
                    .filter_map(|c| c.voicemail.as_ref().map(|v| (c, v)))
                    .map(|(c, v)| {
                        let ((caller_name, caller_number), (callee_name, callee_number)) =
                            parties(w, c);
                        json!({"id": v.id, "call_id": c.call_id, "call_log_id": c.id, "call_history_id": c.id,
                            "caller_name": caller_name, "caller_number": caller_number, "caller_number_type": 2,
                            "callee_name": callee_name, "callee_number": callee_number, "callee_number_type": 1,
                            "date_time": iso(c.start), "duration": v.duration, "status": "unread",
                            "download_url": format!("https://zoom.us/v2/phone/voice_mails/download/{}", v.id),
                            "owner": owner(w, u)})
                    })
                    .collect();
                self.page("voice_mails", items, q, 300, window, now)
            }
            "GET /phone/users/{userId}/recordings" => {
                let (u, calls, window) = match self.ended_calls(id0, q, now, false) {
                    Ok(x) => x,
                    Err(e) => return Some(e),
                };
                let items = calls
                    .into_iter()
                    .filter_map(|c| c.recording.as_ref().map(|r| (c, r)))
                    .map(|(c, r)| {
                        let ((caller_name, caller_number), (callee_name, callee_number)) =
                            parties(w, c);
                        json!({"id": r.id, "call_id": c.call_id, "call_log_id": c.id, "call_history_id": c.id,
                            "caller_name": caller_name, "caller_number": caller_number, "caller_number_type": 2,
                            "callee_name": callee_name, "callee_number": callee_number, "callee_number_type": 1,
                            "date_time": iso(c.answer.unwrap_or(c.start)), "end_time": iso(c.end),
                            "direction": c.direction, "duration": r.duration, "recording_type": "Automatic",
                            "download_url": format!("https://zoom.us/v2/phone/recording/download/{}", r.id),
                            "transcript_download_url": "", "meeting_uuid": "",
                            "owner": owner(w, u)})
                    })
                    .collect();
                self.page("recordings", items, q, 300, window, now)
            }
            _ => return None,
        })
    }
}
