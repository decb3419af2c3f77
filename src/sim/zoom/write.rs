//! The simulator's write endpoints (Zoom as a sink), with the shapes, status codes and
//! limits of Zoom's OpenAPI specs: meetings (create under a host, get, update, delete,
//! upcoming listings), webinars, meeting and webinar registrants (create, list with
//! `status=pending`, status updates) and users. Zoom's per-resource daily limits are
//! enforced: 100 meeting or webinar creates and updates per host per UTC day (answered in
//! either of Zoom's two forms, see [`LimitForm`]) and 3 registrations per registrant per
//! meeting or webinar per day. Fault switches perform a create and then answer 5xx or drop
//! the connection, as a real outage after the work is done would.

use super::{Route, SimState, error, iso, validation_failed};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How the simulator answers a host's 101st meeting create or update of the day. Zoom
/// documents both: HTTP 300 "A maximum of {n} meetings can be created/updated for a single
/// user in one day" in the OpenAPI spec, and a 429 "You have exceeded the daily rate limit
/// (100) of Meeting Create/Update API requests permitted for this particular user" seen in
/// practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitForm {
    #[default]
    Http429,
    Http300,
}

/// What happens to a create after the simulator has done it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFault {
    /// The object is created, the answer is a 503.
    Error5xx,
    /// The object is created, the connection drops before the answer.
    Reset,
}

/// Meetings or webinars a host may create or update per UTC day.
pub const HOST_DAILY_WRITES: u64 = 100;
/// Registrations per registrant per meeting or webinar per UTC day.
pub const REGISTRATIONS_PER_DAY: u64 = 3;

#[derive(Debug, Clone)]
pub(super) struct SimObject {
    pub id: u64,
    pub uuid: String,
    pub host: usize,
    pub webinar: bool,
    pub body: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub password: String,
    pub ended: bool,
    pub in_progress: bool,
    pub deleted: bool,
}

#[derive(Debug, Clone)]
pub(super) struct SimRegistrant {
    pub id: String,
    pub email: String,
    pub body: Map<String, Value>,
    pub status: String,
    pub created: DateTime<Utc>,
}

/// The writes the simulator has taken (the world itself is read-only).
#[derive(Debug, Default)]
pub(super) struct Writes {
    pub objects: BTreeMap<u64, SimObject>,
    /// (meeting or webinar id) → registrants added through the API.
    pub registrants: BTreeMap<u64, Vec<SimRegistrant>>,
    pub users: Vec<Value>,
    pub next: u64,
    /// (host index, day) → meeting and webinar creates and updates.
    pub host_writes: BTreeMap<(usize, NaiveDate), u64>,
    /// (meeting or webinar id, email, day) → registrations.
    pub registrations: BTreeMap<(u64, String, NaiveDate), u64>,
    pub limit_form: LimitForm,
    pub create_faults: VecDeque<CreateFault>,
    /// World webinars whose registration is switched off.
    pub registration_off: BTreeSet<u64>,
    /// Creates Zoom performed (whatever was answered), for tests.
    pub creates: u64,
}

/// The simulator's answer to a write request.
pub(super) struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: BTreeMap<String, String>,
    /// Drop the connection instead of answering (after the work is done).
    pub reset: bool,
}

impl From<(u16, Value)> for Answer {
    fn from((status, body): (u16, Value)) -> Self {
        Answer {
            status,
            body,
            headers: BTreeMap::new(),
            reset: false,
        }
    }
}

/// Routes the write endpoints and the reads that see written objects.
pub(super) fn route<'a>(method: &str, seg: &[&'a str]) -> Option<(Route, Vec<&'a str>)> {
    let r = |endpoint, category| Route {
        endpoint,
        category,
        phone: false,
    };
    Some(match (method, seg) {
        ("POST", ["users", id, "meetings"]) => {
            (r("POST /users/{userId}/meetings", "medium"), vec![*id])
        }
        ("GET", ["users", id, "meetings"]) => {
            (r("GET /users/{userId}/meetings", "medium"), vec![*id])
        }
        ("GET", ["meetings", id]) => (r("GET /meetings/{meetingId}", "light"), vec![*id]),
        ("PATCH", ["meetings", id]) => (r("PATCH /meetings/{meetingId}", "light"), vec![*id]),
        ("DELETE", ["meetings", id]) => (r("DELETE /meetings/{meetingId}", "light"), vec![*id]),
        ("POST", ["meetings", id, "registrants"]) => (
            r("POST /meetings/{meetingId}/registrants", "light"),
            vec![*id],
        ),
        ("GET", ["meetings", id, "registrants"]) => (
            r("GET /meetings/{meetingId}/registrants", "medium"),
            vec![*id],
        ),
        ("DELETE", ["meetings", id, "registrants", rid]) => (
            r(
                "DELETE /meetings/{meetingId}/registrants/{registrantId}",
                "light",
            ),
            vec![*id, *rid],
        ),
        ("PUT", ["meetings", id, "registrants", "status"]) => (
            r("PUT /meetings/{meetingId}/registrants/status", "light"),
            vec![*id],
        ),
        ("POST", ["users", id, "webinars"]) => {
            (r("POST /users/{userId}/webinars", "light"), vec![*id])
        }
        ("GET", ["webinars", id]) => (r("GET /webinars/{webinarId}", "light"), vec![*id]),
        ("PATCH", ["webinars", id]) => (r("PATCH /webinars/{webinarId}", "light"), vec![*id]),
        ("DELETE", ["webinars", id]) => (r("DELETE /webinars/{webinarId}", "light"), vec![*id]),
        ("POST", ["webinars", id, "registrants"]) => (
            r("POST /webinars/{webinarId}/registrants", "light"),
            vec![*id],
        ),
        ("GET", ["webinars", id, "registrants"]) => (
            r("GET /webinars/{webinarId}/registrants", "medium"),
            vec![*id],
        ),
        ("DELETE", ["webinars", id, "registrants", rid]) => (
            r(
                "DELETE /webinars/{webinarId}/registrants/{registrantId}",
                "light",
            ),
            vec![*id, *rid],
        ),
        ("PUT", ["webinars", id, "registrants", "status"]) => (
            r("PUT /webinars/{webinarId}/registrants/status", "light"),
            vec![*id],
        ),
        ("POST", ["users"]) => (r("POST /users", "light"), vec![]),
        _ => return None,
    })
}

/// Whether an endpoint is served here.
pub(super) fn is_write_endpoint(endpoint: &str) -> bool {
    matches!(
        endpoint,
        "POST /users/{userId}/meetings"
            | "GET /users/{userId}/meetings"
            | "GET /meetings/{meetingId}"
            | "PATCH /meetings/{meetingId}"
            | "DELETE /meetings/{meetingId}"
            | "POST /meetings/{meetingId}/registrants"
            | "GET /meetings/{meetingId}/registrants"
            | "DELETE /meetings/{meetingId}/registrants/{registrantId}"
            | "PUT /meetings/{meetingId}/registrants/status"
            | "POST /users/{userId}/webinars"
            | "PATCH /webinars/{webinarId}"
            | "DELETE /webinars/{webinarId}"
            | "POST /webinars/{webinarId}/registrants"
            | "DELETE /webinars/{webinarId}/registrants/{registrantId}"
            | "PUT /webinars/{webinarId}/registrants/status"
            | "POST /users"
    ) || endpoint == "GET /webinars/{webinarId}/registrants"
        || endpoint == "GET /webinars/{webinarId}"
}

/// Top-level fields a meeting create or update takes (Zoom's spec); others are refused
/// (Zoom may ignore some; the sim is the stricter choice).
const MEETING_FIELDS: &[&str] = &[
    "topic",
    "type",
    "start_time",
    "duration",
    "timezone",
    "schedule_for",
    "password",
    "default_password",
    "pre_schedule",
    "agenda",
    "template_id",
    "tracking_fields",
    "recurrence",
    "settings",
];
const WEBINAR_FIELDS: &[&str] = &[
    "topic",
    "type",
    "start_time",
    "duration",
    "timezone",
    "schedule_for",
    "password",
    "default_passcode",
    "agenda",
    "template_id",
    "is_simulive",
    "record_file_id",
    "recurrence",
    "tracking_fields",
    "settings",
];
const REGISTRANT_FIELDS: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "phone",
    "comments",
    "industry",
    "job_title",
    "org",
    "no_of_employees",
    "purchasing_time_frame",
    "role_in_purchase_process",
    "language",
    "auto_approve",
    "source_id",
    "custom_questions",
];

fn next_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// Zoom's date-time forms: `yyyy-MM-ddTHH:mm:ssZ` (UTC) or without `Z` (in `timezone`).
fn zoom_time(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").is_ok()
            || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok()
    })
}

fn check_meeting_body(b: &Map<String, Value>, webinar: bool) -> Option<(u16, Value)> {
    let allowed = if webinar {
        WEBINAR_FIELDS
    } else {
        MEETING_FIELDS
    };
    if let Some(k) = b.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Some(validation_failed(k, "Invalid field."));
    }
    if b.get("topic")
        .is_some_and(|t| !t.is_string() || chars(t) > 200)
    {
        return Some(validation_failed(
            "topic",
            "Topic must be at most 200 characters.",
        ));
    }
    if b.get("agenda")
        .is_some_and(|t| !t.is_string() || chars(t) > 2000)
    {
        return Some(validation_failed(
            "agenda",
            "Agenda must be at most 2000 characters.",
        ));
    }
    if let Some(p) = b.get("password") {
        let ok = p.as_str().is_some_and(|s| {
            s.chars().count() <= 10
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@-_*".contains(c))
        });
        if !ok {
            return Some(validation_failed(
                "password",
                "Password must be at most 10 characters: letters, digits and @ - _ *.",
            ));
        }
    }
    let types: &[i64] = if webinar { &[5, 6, 9] } else { &[1, 2, 3, 8] };
    if let Some(t) = b.get("type") {
        if !t.as_i64().is_some_and(|t| types.contains(&t)) {
            return Some(validation_failed("type", "Invalid field."));
        }
    }
    if b.get("start_time").is_some_and(|t| !zoom_time(t)) {
        return Some(validation_failed("start_time", "Invalid field."));
    }
    if b.get("duration")
        .is_some_and(|d| d.as_i64().is_none_or(|d| d < 0))
    {
        return Some(validation_failed("duration", "Invalid field."));
    }
    if b.get("settings").is_some_and(|s| !s.is_object()) {
        return Some(validation_failed("settings", "Invalid field."));
    }
    None
}

fn registration_on(body: &Map<String, Value>) -> bool {
    body.get("settings")
        .and_then(|s| s.get("approval_type"))
        .and_then(Value::as_i64)
        .is_some_and(|a| a == 0 || a == 1)
}

impl SimState {
    /// A host by id or email, among the world's users.
    fn host(&self, id: &str) -> Option<usize> {
        if id == "me" {
            return Some(0);
        }
        self.world.user_by_id(id).map(|(i, _)| i)
    }

    fn object_json(&self, o: &SimObject, with_secret: bool) -> Value {
        let u = &self.world.users[o.host];
        let mut v = Map::new();
        v.insert("uuid".into(), json!(o.uuid));
        v.insert("id".into(), json!(o.id));
        v.insert("host_id".into(), json!(u.id));
        v.insert("host_email".into(), json!(u.email));
        v.insert("type".into(), json!(if o.webinar { 5 } else { 2 }));
        v.insert(
            "status".into(),
            json!(if o.in_progress { "started" } else { "waiting" }),
        );
        for (k, val) in &o.body {
            v.insert(k.clone(), val.clone());
        }
        v.entry("topic").or_insert(json!(if o.webinar {
            "Zoom Webinar"
        } else {
            "Zoom Meeting"
        }));
        v.entry("timezone").or_insert(json!("UTC"));
        v.entry("duration").or_insert(json!(60));
        v.entry("agenda").or_insert(json!(""));
        v.entry("settings").or_insert(json!({}));
        v.insert("created_at".into(), json!(iso(o.created_at)));
        let kind = if o.webinar { "w" } else { "j" };
        v.insert(
            "join_url".into(),
            json!(format!(
                "https://zoom.us/{kind}/{}?pwd={}",
                o.id, o.password
            )),
        );
        v.insert("password".into(), json!(o.password));
        v.insert(
            "encrypted_password".into(),
            json!(format!("enc{}", o.password)),
        );
        v.insert("pre_schedule".into(), json!(false));
        if registration_on(&o.body) {
            v.insert(
                "registration_url".into(),
                json!(format!("https://zoom.us/meeting/register/{}", o.uuid)),
            );
        }
        if with_secret {
            v.insert(
                "start_url".into(),
                json!(format!(
                    "https://zoom.us/s/{}?zak=sim-host-credential-{}",
                    o.id, o.id
                )),
            );
        }
        Value::Object(v)
    }

    /// Counts one meeting or webinar create or update of a host; the answer when it is over
    /// the day's limit.
    fn host_write(&self, host: usize, webinar: bool, now: DateTime<Utc>) -> Option<Answer> {
        let mut m = self.lock();
        let form = m.writes.limit_form;
        let n = m
            .writes
            .host_writes
            .entry((host, now.date_naive()))
            .or_default();
        if *n >= HOST_DAILY_WRITES {
            let what = if webinar { "webinars" } else { "meetings" };
            return Some(match form {
                LimitForm::Http300 => error(
                    300,
                    300,
                    &format!(
                        "A maximum of {HOST_DAILY_WRITES} {what} can be created/updated for a single user in one day."
                    ),
                )
                .into(),
                LimitForm::Http429 => {
                    let mut a: Answer = error(
                        429,
                        429,
                        &format!(
                            "You have exceeded the daily rate limit ({HOST_DAILY_WRITES}) of Meeting Create/Update API requests permitted for this particular user. You may resume these requests at GMT 00:00:00."
                        ),
                    )
                    .into();
                    a.headers
                        .insert("Retry-After".into(), iso(next_midnight(now)));
                    a
                }
            });
        }
        *n += 1;
        None
    }

    /// The next create's fault, if one is queued: the work is done first.
    fn created(&self, a: (u16, Value)) -> Answer {
        let mut m = self.lock();
        m.writes.creates += 1;
        match m.writes.create_faults.pop_front() {
            None => a.into(),
            Some(CreateFault::Error5xx) => {
                m.stats.responses_5xx += 1;
                (503, json!({"code": 503, "message": "Service Unavailable"})).into()
            }
            Some(CreateFault::Reset) => {
                m.stats.resets += 1;
                Answer {
                    status: a.0,
                    body: a.1,
                    headers: BTreeMap::new(),
                    reset: true,
                }
            }
        }
    }

    fn next_id(&self, base: u64) -> u64 {
        let mut m = self.lock();
        m.writes.next += 1;
        base + m.writes.next
    }

    /// An object written through the API, or a world meeting/webinar by number.
    fn find_object(&self, id: &str) -> Option<SimObject> {
        let n: u64 = id.parse().ok()?;
        self.lock().writes.objects.get(&n).cloned()
    }

    pub(super) fn serve_write(
        &self,
        endpoint: &str,
        ids: &[String],
        q: &BTreeMap<String, String>,
        raw_body: &[u8],
        now: DateTime<Utc>,
    ) -> Answer {
        let id0 = ids.first().map(String::as_str).unwrap_or("");
        let body: Option<Map<String, Value>> = if raw_body.is_empty() {
            None
        } else {
            match serde_json::from_slice::<Value>(raw_body) {
                Ok(Value::Object(m)) => Some(m),
                _ => return error(400, 300, "Request Body should be a valid JSON object.").into(),
            }
        };
        let needs_body = endpoint.starts_with("POST")
            || endpoint.starts_with("PATCH")
            || endpoint.starts_with("PUT");
        if needs_body && body.is_none() {
            return error(400, 300, "Request Body should be a valid JSON object.").into();
        }
        let b = body.unwrap_or_default();
        let no_user = || error(404, 1001, &format!("User does not exist: {id0}.")).into();
        match endpoint {
            "POST /users/{userId}/meetings" | "POST /users/{userId}/webinars" => {
                let webinar = endpoint.ends_with("webinars");
                let Some(host) = self.host(id0) else {
                    return no_user();
                };
                if let Some(bad) = check_meeting_body(&b, webinar) {
                    return bad.into();
                }
                if let Some(limit) = self.host_write(host, webinar, now) {
                    return limit;
                }
                let id = self.next_id(if webinar {
                    91_000_000_000
                } else {
                    85_000_000_000
                });
                let password: String = b
                    .get("password")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("p{}", id % 100_000));
                let o = SimObject {
                    id,
                    uuid: format!("sim{id}w=="),
                    host,
                    webinar,
                    body: b,
                    created_at: now,
                    password,
                    ended: false,
                    in_progress: false,
                    deleted: false,
                };
                let answer = self.object_json(&o, true);
                self.lock().writes.objects.insert(id, o);
                self.created((201, answer))
            }
            "GET /users/{userId}/meetings" => {
                let Some(host) = self.host(id0) else {
                    return no_user();
                };
                let mine = self
                    .lock()
                    .writes
                    .objects
                    .values()
                    .any(|o| o.host == host && !o.webinar);
                if !mine {
                    // Nothing written for this host: the world's meetings (the read endpoint).
                    return self.serve(endpoint, ids, q, now).into();
                }
                let kind = q.get("type").map(String::as_str).unwrap_or("scheduled");
                if ![
                    "scheduled",
                    "live",
                    "upcoming",
                    "upcoming_meetings",
                    "previous_meetings",
                ]
                .contains(&kind)
                {
                    return validation_failed("type", "Invalid field.").into();
                }
                let items: Vec<Value> = {
                    let m = self.lock();
                    m.writes
                        .objects
                        .values()
                        .filter(|o| o.host == host && !o.webinar && !o.deleted && !o.ended)
                        .filter(|o| {
                            // Upcoming: not started yet (a meeting without a start time
                            // counts as upcoming).
                            !kind.starts_with("upcoming")
                                || o.body
                                    .get("start_time")
                                    .and_then(Value::as_str)
                                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                                    .is_none_or(|t| t >= now)
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                }
                .into_iter()
                .map(|o| {
                    let mut v = self.object_json(&o, false);
                    if let Some(m) = v.as_object_mut() {
                        m.remove("settings");
                        m.remove("password");
                        m.remove("encrypted_password");
                    }
                    v
                })
                .collect();
                self.page("meetings", items, q, 300, json!({}), now).into()
            }
            "GET /meetings/{meetingId}" | "GET /webinars/{webinarId}" => {
                let webinar = endpoint.contains("webinars");
                match self.find_object(id0) {
                    Some(o) if !o.deleted && o.webinar == webinar => {
                        (200, self.object_json(&o, true)).into()
                    }
                    Some(_) => gone(webinar, id0).into(),
                    // Not written through the API: the world's (the read endpoints).
                    None => self.serve(endpoint, ids, q, now).into(),
                }
            }
            "PATCH /meetings/{meetingId}" | "PATCH /webinars/{webinarId}" => {
                let webinar = endpoint.contains("webinars");
                let Some(o) = self
                    .find_object(id0)
                    .filter(|o| !o.deleted && o.webinar == webinar)
                else {
                    return gone(webinar, id0).into();
                };
                if let Some(bad) = check_meeting_body(&b, webinar) {
                    return bad.into();
                }
                if o.ended {
                    return error(400, 3000, "Cannot access meeting information.").into();
                }
                if let Some(limit) = self.host_write(o.host, webinar, now) {
                    return limit;
                }
                let mut m = self.lock();
                if let Some(obj) = m.writes.objects.get_mut(&o.id) {
                    for (k, v) in b {
                        if k == "settings" {
                            let s = obj.body.entry("settings").or_insert(json!({}));
                            if let (Some(have), Value::Object(new)) = (s.as_object_mut(), v) {
                                have.extend(new);
                            }
                        } else {
                            obj.body.insert(k, v);
                        }
                    }
                }
                (204, Value::Null).into()
            }
            "DELETE /meetings/{meetingId}" | "DELETE /webinars/{webinarId}" => {
                let webinar = endpoint.contains("webinars");
                let Some(o) = self.find_object(id0).filter(|o| o.webinar == webinar) else {
                    // A world meeting by number has ended (the world holds past ones).
                    if !webinar
                        && id0
                            .parse::<u64>()
                            .ok()
                            .is_some_and(|n| self.meetings_by_id.contains_key(&n))
                    {
                        return error(
                            400,
                            3007,
                            "Sorry, you cannot delete this meeting since it has ended.",
                        )
                        .into();
                    }
                    return gone(webinar, id0).into();
                };
                if o.deleted {
                    return gone(webinar, id0).into();
                }
                if o.in_progress {
                    return error(
                        400,
                        3002,
                        "Sorry, you cannot delete this meeting since it is in progress.",
                    )
                    .into();
                }
                if o.ended {
                    return error(
                        400,
                        3007,
                        "Sorry, you cannot delete this meeting since it has ended.",
                    )
                    .into();
                }
                if let Some(obj) = self.lock().writes.objects.get_mut(&o.id) {
                    obj.deleted = true;
                }
                (204, Value::Null).into()
            }
            "POST /meetings/{meetingId}/registrants" | "POST /webinars/{webinarId}/registrants" => {
                let webinar = endpoint.contains("webinars");
                let Some((num, topic, start, manual)) = self.registrable(webinar, id0) else {
                    return gone(webinar, id0).into();
                };
                if num == 0 {
                    // Registration is off.
                    return if webinar {
                        error(
                            400,
                            3000,
                            &format!("This webinar does not have registration as required: {id0}."),
                        )
                        .into()
                    } else {
                        // Zoom's spec lists this under 404 without a code; 3000 is the
                        // sim's guess for the body's code.
                        error(
                            404,
                            3000,
                            &format!("Registration has not been enabled for this meeting: {id0}."),
                        )
                        .into()
                    };
                }
                if let Some(k) = b.keys().find(|k| !REGISTRANT_FIELDS.contains(&k.as_str())) {
                    return validation_failed(k, "Invalid field.").into();
                }
                let email = b
                    .get("email")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if email.is_empty() || !email.contains('@') || email.chars().count() > 128 {
                    return validation_failed("email", "Invalid field.").into();
                }
                let first_ok = b
                    .get("first_name")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.trim().is_empty() && s.chars().count() <= 64);
                if !first_ok {
                    return validation_failed("first_name", "Invalid field.").into();
                }
                if b.get("last_name")
                    .is_some_and(|l| !l.is_string() || chars(l) > 64)
                {
                    return validation_failed("last_name", "Invalid field.").into();
                }
                let lower = email.to_ascii_lowercase();
                {
                    let mut m = self.lock();
                    let n = m
                        .writes
                        .registrations
                        .entry((num, lower.clone(), now.date_naive()))
                        .or_default();
                    if *n >= REGISTRATIONS_PER_DAY {
                        let what = if webinar {
                            "Add a webinar registrant"
                        } else {
                            "Add meeting registrant"
                        };
                        let mut a: Answer = error(429, 429, &format!(
                            "You have exceeded the daily rate limit of \"{REGISTRATIONS_PER_DAY}\" for {what} API requests for the registrant \"{email}\". You can resume these API requests at GMT 00:00:00."
                        )).into();
                        a.headers
                            .insert("Retry-After".into(), iso(next_midnight(now)));
                        return a;
                    }
                    *n += 1;
                }
                // Zoom may answer a repeated registration with the registrant it has; the
                // sim is the stricter choice and registers again, so a client that repeats
                // a create is seen doing it.
                let rid = format!("simreg{}", self.next_id(0));
                let r = SimRegistrant {
                    id: rid,
                    email: email.clone(),
                    body: b,
                    status: if manual {
                        "pending".into()
                    } else {
                        "approved".into()
                    },
                    created: now,
                };
                self.lock()
                    .writes
                    .registrants
                    .entry(num)
                    .or_default()
                    .push(r.clone());
                let kind = if webinar { "w" } else { "j" };
                // Zoom's spec: a webinar registrant's answer gives the webinar id as a
                // string, a meeting registrant's as a number.
                let parent = if webinar {
                    json!(num.to_string())
                } else {
                    json!(num)
                };
                let mut answer = json!({
                    "id": parent, "registrant_id": r.id, "topic": topic, "start_time": start,
                    "join_url": format!("https://zoom.us/{kind}/{num}?tk={}", r.id), "occurrences": [],
                });
                if !webinar && let Some(o) = answer.as_object_mut() {
                    o.insert("participant_pin_code".into(), json!(380_000 + num % 1000));
                }
                self.created((201, answer))
            }
            "GET /meetings/{meetingId}/registrants" | "GET /webinars/{webinarId}/registrants" => {
                let webinar = endpoint.contains("webinars");
                let written_object = self.find_object(id0).is_some();
                let added = id0
                    .parse::<u64>()
                    .ok()
                    .is_some_and(|n| self.lock().writes.registrants.contains_key(&n));
                if !written_object && !added {
                    // Nothing written here: the world's registrants (the read endpoints).
                    return self.serve(endpoint, ids, q, now).into();
                }
                let status = q.get("status").map(String::as_str).unwrap_or("approved");
                if !["approved", "pending", "denied"].contains(&status) {
                    return validation_failed("status", "Invalid field.").into();
                }
                let Some((num, _, _, _)) = self.registrable(webinar, id0) else {
                    return gone(webinar, id0).into();
                };
                if num == 0 {
                    return error(
                        300,
                        300,
                        &format!("This meeting has not set registration as required: {id0}."),
                    )
                    .into();
                }
                // The world's webinar registrants first (as the read endpoint serves them).
                let mut items: Vec<Value> = Vec::new();
                if webinar && status == "approved" {
                    if let (200, v) = self.serve(
                        "GET /webinars/{webinarId}/registrants",
                        ids,
                        &BTreeMap::from([("page_size".to_string(), "300".to_string())]),
                        now,
                    ) {
                        if let Some(list) = v.get("registrants").and_then(Value::as_array) {
                            items.extend(list.iter().cloned());
                        }
                    }
                }
                let kind = if webinar { "w" } else { "j" };
                let m = self.lock();
                for r in m.writes.registrants.get(&num).into_iter().flatten() {
                    if r.status != status {
                        continue;
                    }
                    let mut v = r.body.clone();
                    v.insert("id".into(), json!(r.id));
                    v.insert("status".into(), json!(r.status));
                    v.insert("create_time".into(), json!(iso(r.created)));
                    v.insert(
                        "join_url".into(),
                        json!(format!("https://zoom.us/{kind}/{num}?tk={}", r.id)),
                    );
                    items.push(Value::Object(v));
                }
                drop(m);
                self.page("registrants", items, q, 300, json!({"page_number": 1}), now)
                    .into()
            }
            "DELETE /meetings/{meetingId}/registrants/{registrantId}"
            | "DELETE /webinars/{webinarId}/registrants/{registrantId}" => {
                let webinar = endpoint.contains("webinars");
                let rid = ids.get(1).map(String::as_str).unwrap_or("");
                let Some((num, _, _, _)) = self.registrable(webinar, id0) else {
                    return gone(webinar, id0).into();
                };
                let mut m = self.lock();
                let list = m.writes.registrants.entry(num).or_default();
                let before = list.len();
                list.retain(|r| r.id != rid);
                if list.len() == before {
                    return error(404, 3063, "Registrant not found.").into();
                }
                (204, Value::Null).into()
            }
            "PUT /meetings/{meetingId}/registrants/status"
            | "PUT /webinars/{webinarId}/registrants/status" => {
                let webinar = endpoint.contains("webinars");
                let Some((num, _, _, _)) = self.registrable(webinar, id0) else {
                    return gone(webinar, id0).into();
                };
                let to = match b.get("action").and_then(Value::as_str) {
                    Some("approve") => "approved",
                    Some("deny") => "denied",
                    Some("cancel") => "cancelled",
                    _ => return validation_failed("action", "Invalid field.").into(),
                };
                let Some(list) = b
                    .get("registrants")
                    .and_then(Value::as_array)
                    .filter(|l| !l.is_empty() && l.len() <= 30)
                else {
                    return validation_failed("registrants", "Invalid field.").into();
                };
                let mut m = self.lock();
                let rs = m.writes.registrants.entry(num).or_default();
                for want in list {
                    let id = want.get("id").and_then(Value::as_str);
                    let email = want.get("email").and_then(Value::as_str);
                    for r in rs.iter_mut() {
                        if Some(r.id.as_str()) == id
                            || email.is_some_and(|e| r.email.eq_ignore_ascii_case(e))
                        {
                            r.status = to.to_string();
                        }
                    }
                }
                (204, Value::Null).into()
            }
            "POST /users" => {
                let action = b.get("action").and_then(Value::as_str);
                if !matches!(
                    action,
                    Some("create" | "autoCreate" | "custCreate" | "ssoCreate")
                ) {
                    return validation_failed("action", "Invalid field.").into();
                }
                let Some(info) = b.get("user_info").and_then(Value::as_object) else {
                    return validation_failed("user_info", "Invalid field.").into();
                };
                let email = info.get("email").and_then(Value::as_str).unwrap_or("");
                if !email.contains('@') || email.chars().count() > 128 {
                    return validation_failed("user_info.email", "Invalid field.").into();
                }
                if !info
                    .get("type")
                    .and_then(Value::as_i64)
                    .is_some_and(|t| [1, 2, 4, 99].contains(&t))
                {
                    return validation_failed("user_info.type", "Invalid field.").into();
                }
                for f in ["first_name", "last_name"] {
                    if info.get(f).is_some_and(|v| !v.is_string() || chars(v) > 64) {
                        return validation_failed(&format!("user_info.{f}"), "Invalid field.")
                            .into();
                    }
                }
                let taken = self.world.user_by_id(email).is_some()
                    || self.lock().writes.users.iter().any(|u| {
                        u.get("email")
                            .and_then(Value::as_str)
                            .is_some_and(|e| e.eq_ignore_ascii_case(email))
                    });
                if taken {
                    return error(409, 1005, &format!("User already in the account: {email}"))
                        .into();
                }
                let id = format!("simuser{}", self.next_id(0));
                let user = json!({
                    "id": id, "email": email, "type": info.get("type"),
                    "first_name": info.get("first_name").cloned().unwrap_or(json!("")),
                    "last_name": info.get("last_name").cloned().unwrap_or(json!("")),
                });
                self.lock().writes.users.push(user.clone());
                self.created((201, user))
            }
            _ => error(404, 404, "Not found").into(),
        }
    }

    /// A meeting or webinar one can register for: (number, topic, start, manual approval);
    /// number 0 when registration is off. None when there is no such meeting or webinar.
    fn registrable(&self, webinar: bool, id: &str) -> Option<(u64, String, String, bool)> {
        if let Some(o) = self.find_object(id).filter(|o| o.webinar == webinar) {
            if o.deleted || o.ended {
                return None;
            }
            let topic = o
                .body
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let start = o
                .body
                .get("start_time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let manual = o
                .body
                .get("settings")
                .and_then(|s| s.get("approval_type"))
                .and_then(Value::as_i64)
                == Some(1);
            let num = if registration_on(&o.body) { o.id } else { 0 };
            return Some((num, topic, start, manual));
        }
        if webinar {
            let x = self
                .world
                .webinars
                .iter()
                .find(|x| x.id.to_string() == id)?;
            let off = self.lock().writes.registration_off.contains(&x.id);
            return Some((
                if off { 0 } else { x.id },
                x.topic.clone(),
                iso(x.start),
                false,
            ));
        }
        None
    }
}

fn gone(webinar: bool, id: &str) -> (u16, Value) {
    if webinar {
        error(
            404,
            3001,
            &format!("Webinar {id} not found or has expired."),
        )
    } else {
        error(
            404,
            3001,
            &format!("Meeting {id} is not found or has expired."),
        )
    }
}
