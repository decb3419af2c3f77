//! A deterministic, seeded "world" that both simulators serve: one internal company (acme.com)
//! with its Zoom users, external companies and their people, and the meetings, webinars and
//! phone calls between them. The Zoom simulator serves the activity; the Salesforce simulator
//! is seeded from [`World::accounts`], [`World::contacts`], [`World::leads`] and
//! [`World::internal_users`], so matching people to records works end to end.
//!
//! The same seed and scale always give the same world.

use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// The internal company's email domain.
pub const INTERNAL_DOMAIN: &str = "acme.com";
/// The Zoom account id the simulator reports.
pub const ACCOUNT_ID: &str = "AcmeAcct0000000000000A";

/// How big a world to make.
#[derive(Debug, Clone)]
pub struct Scale {
    pub users: usize,
    pub meetings: usize,
    /// Average participants per meeting (host included); actual counts vary around it.
    pub participants_per_meeting: usize,
    pub companies: usize,
    pub people_per_company: usize,
    pub webinars: usize,
    pub registrants_per_webinar: usize,
    pub calls: usize,
    /// Meetings, webinars and calls fall in `[end - days, end)`.
    pub days: i64,
    pub end: DateTime<Utc>,
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            users: 8,
            meetings: 120,
            participants_per_meeting: 4,
            companies: 12,
            people_per_company: 6,
            webinars: 4,
            registrants_per_webinar: 20,
            calls: 60,
            days: 60,
            end: Utc
                .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
                .single()
                .unwrap_or_else(Utc::now),
        }
    }
}

impl Scale {
    /// A small world for fast tests.
    pub fn small() -> Self {
        Self {
            users: 4,
            meetings: 30,
            participants_per_meeting: 3,
            companies: 5,
            people_per_company: 4,
            webinars: 2,
            registrants_per_webinar: 8,
            calls: 15,
            days: 45,
            ..Self::default()
        }
    }
}

/// A Zoom user of the internal company (also a Salesforce User).
#[derive(Debug, Clone)]
pub struct ZoomUser {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub dept: String,
    pub pmi: u64,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
    pub phone_extension: String,
    pub phone_user_id: String,
}

impl ZoomUser {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// An external company (a Salesforce Account).
#[derive(Debug, Clone)]
pub struct Company {
    pub name: String,
    pub domain: String,
    pub industry: String,
}

/// How Salesforce knows an external person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmRole {
    Contact,
    Lead,
    Unknown,
}

/// An external person.
#[derive(Debug, Clone)]
pub struct Person {
    pub first_name: String,
    pub last_name: String,
    /// The canonical (lower-case) email.
    pub email: String,
    pub company: usize,
    pub role: CrmRole,
    pub phone: String,
    pub title: String,
}

impl Person {
    pub fn name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// Who a participant row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attendee {
    Internal(usize),
    External(usize),
}

/// One participant row (a rejoin gives two rows for one attendee).
#[derive(Debug, Clone)]
pub struct Participant {
    pub attendee: Attendee,
    /// Zoom user id for signed-in account users, "" otherwise.
    pub id: String,
    /// Per-meeting numeric string.
    pub user_id: String,
    pub participant_uuid: String,
    pub name: String,
    /// As Zoom shows it: may be "" (external, not registered) or mixed case.
    pub email: String,
    pub join_time: DateTime<Utc>,
    pub leave_time: DateTime<Utc>,
    pub registrant_id: String,
}

impl Participant {
    pub fn duration_secs(&self) -> i64 {
        (self.leave_time - self.join_time).num_seconds()
    }
}

#[derive(Debug, Clone)]
pub struct RecordingFile {
    pub id: String,
    pub file_type: String,
    pub file_extension: String,
    pub file_size: u64,
    pub recording_type: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Recording {
    pub files: Vec<RecordingFile>,
    pub share_url: String,
    pub password: String,
}

impl Recording {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.file_size).sum()
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub title: String,
    pub overview: String,
    pub details: Vec<(String, String)>,
    pub next_steps: Vec<String>,
    pub created: DateTime<Utc>,
}

/// One ended meeting instance.
#[derive(Debug, Clone)]
pub struct Meeting {
    pub uuid: String,
    /// The meeting number; recurring meetings share it across instances.
    pub id: u64,
    pub host: usize,
    pub topic: String,
    /// 1 instant, 2 scheduled, 8 recurring with fixed time.
    pub meeting_type: u8,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub timezone: String,
    pub participants: Vec<Participant>,
    pub recording: Option<Recording>,
    pub summary: Option<Summary>,
}

impl Meeting {
    pub fn duration_minutes(&self) -> i64 {
        (self.end - self.start).num_minutes()
    }
    /// Zoom's reports and participant lists skip single-participant meetings.
    pub fn in_reports(&self) -> bool {
        self.participants.len() >= 2
    }
}

#[derive(Debug, Clone)]
pub struct Registrant {
    pub id: String,
    pub person: usize,
    /// As typed at registration (may be mixed case).
    pub email: String,
    pub status: String,
    pub create_time: DateTime<Utc>,
    pub attended: bool,
}

#[derive(Debug, Clone)]
pub struct Panelist {
    pub id: String,
    pub user: usize,
}

#[derive(Debug, Clone)]
pub struct Webinar {
    pub id: u64,
    pub uuid: String,
    pub host: usize,
    pub topic: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub registrants: Vec<Registrant>,
    pub panelists: Vec<Panelist>,
    /// Attendee rows (registrants who came, and panelists).
    pub attendees: Vec<Participant>,
}

#[derive(Debug, Clone)]
pub struct PhoneRecording {
    pub id: String,
    pub duration: i64,
}

#[derive(Debug, Clone)]
pub struct Voicemail {
    pub id: String,
    pub duration: i64,
}

/// One Zoom Phone call between an internal user and an external person.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub call_id: String,
    pub user: usize,
    pub person: usize,
    /// "inbound" (the person called) or "outbound".
    pub direction: String,
    pub start: DateTime<Utc>,
    pub answer: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    /// "answered", "voicemail", "no_answer".
    pub result: String,
    pub recording: Option<PhoneRecording>,
    pub voicemail: Option<Voicemail>,
}

impl Call {
    pub fn talk_time(&self) -> i64 {
        self.answer
            .map(|a| (self.end - a).num_seconds())
            .unwrap_or(0)
    }
}

/// Salesforce seeds derived from the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfAccount {
    /// Index into [`World::companies`]; stable across runs with the same seed.
    pub company: usize,
    pub name: String,
    pub website_domain: String,
    pub industry: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfContact {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub title: String,
    pub phone: String,
    /// Index into [`World::accounts`] order (= company index).
    pub company: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfLead {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub company: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfUser {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub username: String,
}

/// The seeded world.
#[derive(Debug, Clone)]
pub struct World {
    pub seed: u64,
    pub scale: Scale,
    pub account_id: String,
    pub users: Vec<ZoomUser>,
    pub companies: Vec<Company>,
    pub people: Vec<Person>,
    pub meetings: Vec<Meeting>,
    pub webinars: Vec<Webinar>,
    pub calls: Vec<Call>,
}

const FIRST: &[&str] = &[
    "Pat", "Jill", "Sam", "Alex", "Robin", "Morgan", "Casey", "Jordan", "Taylor", "Avery", "Riley",
    "Quinn", "Jamie", "Dana", "Lee", "Noor", "Ana", "Kenji", "Priya", "Omar", "Lena", "Mateo",
    "Ines", "Yuki", "Farah", "Tomas", "Mira", "Ravi", "Elif", "Chen",
];
const LAST: &[&str] = &[
    "Buyer", "Chill", "Nguyen", "Garcia", "Smith", "Okafor", "Muller", "Rossi", "Tanaka", "Khan",
    "Silva", "Cohen", "Novak", "Larsen", "Dubois", "Park", "Haddad", "Ivanova", "Moreau", "Costa",
];
const COMPANY_A: &[&str] = &[
    "Contoso",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Cyberdyne",
    "Vandelay",
    "Wonka",
    "Oscorp",
    "Massive",
    "Aperture",
    "Gringotts",
    "Monarch",
    "Nakatomi",
    "Pied",
    "Dunder",
];
const COMPANY_B: &[&str] = &[
    "Systems",
    "Labs",
    "Logistics",
    "Foods",
    "Health",
    "Energy",
    "Media",
    "Capital",
    "Robotics",
];
const INDUSTRIES: &[&str] = &[
    "Technology",
    "Manufacturing",
    "Healthcare",
    "Finance",
    "Retail",
];
const DEPTS: &[&str] = &["Sales", "Customer Success", "Solutions", "Marketing"];
const TIMEZONES: &[&str] = &[
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "UTC",
];
const TOPICS: &[&str] = &[
    "discovery",
    "demo",
    "pricing review",
    "quarterly business review",
    "onboarding",
    "renewal check-in",
    "technical deep dive",
];

impl World {
    /// Makes the world for `seed` and `scale`; the same inputs always give the same world.
    pub fn generate(seed: u64, scale: Scale) -> World {
        let mut g = Gen {
            rng: StdRng::seed_from_u64(seed),
            uuids: BTreeSet::new(),
        };
        let users = (0..scale.users.max(1))
            .map(|i| {
                let first = FIRST[(i * 7 + 3) % FIRST.len()].to_string();
                let last = LAST[(i * 3 + 1) % LAST.len()].to_string();
                ZoomUser {
                    id: g.zoom_id(),
                    email: format!(
                        "{}.{}{}@{INTERNAL_DOMAIN}",
                        first.to_lowercase(),
                        last.to_lowercase(),
                        i
                    ),
                    first_name: first,
                    last_name: last,
                    dept: DEPTS[i % DEPTS.len()].to_string(),
                    pmi: 6_000_000_000 + g.rng.random_range(0..999_999_999u64),
                    timezone: TIMEZONES[i % TIMEZONES.len()].to_string(),
                    created_at: scale.end - Duration::days(400 + i as i64),
                    phone_extension: format!("{}", 101 + i),
                    phone_user_id: g.zoom_id(),
                }
            })
            .collect::<Vec<_>>();

        let mut used_domains = BTreeSet::new();
        let companies = (0..scale.companies.max(1))
            .map(|i| {
                let mut name = format!(
                    "{} {}",
                    COMPANY_A[i % COMPANY_A.len()],
                    COMPANY_B[(i / COMPANY_A.len() + i) % COMPANY_B.len()]
                );
                let mut domain = format!("{}.com", COMPANY_A[i % COMPANY_A.len()].to_lowercase());
                if !used_domains.insert(domain.clone()) {
                    name = format!("{name} {i}");
                    domain = format!("{}{}.com", COMPANY_A[i % COMPANY_A.len()].to_lowercase(), i);
                    used_domains.insert(domain.clone());
                }
                Company {
                    name,
                    domain,
                    industry: INDUSTRIES[i % INDUSTRIES.len()].to_string(),
                }
            })
            .collect::<Vec<_>>();

        let mut people = Vec::new();
        let mut emails = BTreeSet::new();
        for (c, company) in companies.iter().enumerate() {
            for j in 0..scale.people_per_company.max(1) {
                let first = FIRST[g.rng.random_range(0..FIRST.len())].to_string();
                let last = LAST[g.rng.random_range(0..LAST.len())].to_string();
                let mut email = format!(
                    "{}.{}@{}",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    company.domain
                );
                if !emails.insert(email.clone()) {
                    email = format!(
                        "{}.{}{}@{}",
                        first.to_lowercase(),
                        last.to_lowercase(),
                        j,
                        company.domain
                    );
                    emails.insert(email.clone());
                }
                // 50% Contacts, 20% Leads, 30% unknown to Salesforce.
                let roll = g.rng.random_range(0..10);
                let role = match roll {
                    0..=4 => CrmRole::Contact,
                    5..=6 => CrmRole::Lead,
                    _ => CrmRole::Unknown,
                };
                people.push(Person {
                    first_name: first,
                    last_name: last,
                    email,
                    company: c,
                    role,
                    phone: format!("+1205{:07}", g.rng.random_range(0..10_000_000u32)),
                    title: ["VP Sales", "CTO", "Buyer", "Engineer", "Director IT"]
                        [g.rng.random_range(0..5)]
                    .to_string(),
                });
            }
        }

        let start = scale.end - Duration::days(scale.days.max(1));
        let span_secs = (scale.end - start).num_seconds().max(3600) - 3 * 3600;
        let mut meetings: Vec<Meeting> = Vec::new();
        for i in 0..scale.meetings {
            let host = g.rng.random_range(0..users.len());
            let begin = start + Duration::seconds(g.rng.random_range(0..span_secs));
            let minutes = g.rng.random_range(10..90);
            let end = begin + Duration::minutes(minutes);
            let company = g.rng.random_range(0..companies.len());
            // A tenth are later instances of a recurring meeting of the same host.
            let previous = meetings.iter().rev().find(|m| m.host == host).map(|m| m.id);
            let (id, meeting_type) = match previous {
                Some(id) if g.rng.random_bool(0.1) => (id, 8),
                _ => (
                    80_000_000_000 + g.rng.random_range(0..9_999_999_999u64),
                    if g.rng.random_bool(0.2) { 1 } else { 2 },
                ),
            };
            let uuid = g.meeting_uuid(i);
            let participants = g.participants(
                &users,
                &people,
                host,
                company,
                begin,
                end,
                scale.participants_per_meeting,
            );
            let recording = g.rng.random_bool(0.4).then(|| g.recording(begin, end));
            let topic = format!(
                "Acme <> {} {}",
                COMPANY_A[company % COMPANY_A.len()],
                TOPICS[g.rng.random_range(0..TOPICS.len())]
            );
            let summary = g.rng.random_bool(0.3).then(|| g.summary(&topic, end));
            meetings.push(Meeting {
                uuid,
                id,
                host,
                topic,
                meeting_type,
                start: begin,
                end,
                timezone: users[host].timezone.clone(),
                participants,
                recording,
                summary,
            });
        }
        meetings.sort_by(|a, b| a.start.cmp(&b.start).then(a.uuid.cmp(&b.uuid)));

        let webinars = (0..scale.webinars)
            .map(|i| g.webinar(i, &users, &people, start, span_secs, &scale))
            .collect();

        let calls = (0..scale.calls)
            .map(|_| {
                let user = g.rng.random_range(0..users.len());
                let person = g.rng.random_range(0..people.len());
                let begin = start + Duration::seconds(g.rng.random_range(0..span_secs));
                let roll = g.rng.random_range(0..100);
                let (result, answer, end) = if roll < 70 {
                    let a = begin + Duration::seconds(g.rng.random_range(2..20));
                    (
                        "answered",
                        Some(a),
                        a + Duration::seconds(g.rng.random_range(30..1800)),
                    )
                } else if roll < 85 {
                    ("voicemail", None, begin + Duration::seconds(60))
                } else {
                    ("no_answer", None, begin + Duration::seconds(30))
                };
                let recording =
                    (result == "answered" && g.rng.random_bool(0.4)).then(|| PhoneRecording {
                        id: g.hex(32),
                        duration: answer.map(|a| (end - a).num_seconds()).unwrap_or(0),
                    });
                let voicemail = (result == "voicemail").then(|| Voicemail {
                    id: g.hex(32),
                    duration: g.rng.random_range(5..55),
                });
                Call {
                    id: format!("{}-{}", begin.format("%Y%m%d"), g.uuid_v4()),
                    call_id: format!(
                        "{}",
                        7_000_000_000_000_000_000u64 + g.rng.random_range(0..999_999_999_999u64)
                    ),
                    user,
                    person,
                    direction: if g.rng.random_bool(0.5) {
                        "inbound"
                    } else {
                        "outbound"
                    }
                    .into(),
                    start: begin,
                    answer,
                    end,
                    result: result.into(),
                    recording,
                    voicemail,
                }
            })
            .collect::<Vec<_>>();
        let mut calls = calls;
        calls.sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));

        World {
            seed,
            scale,
            account_id: ACCOUNT_ID.into(),
            users,
            companies,
            people,
            meetings,
            webinars,
            calls,
        }
    }

    pub fn user_by_id(&self, id: &str) -> Option<(usize, &ZoomUser)> {
        self.users
            .iter()
            .enumerate()
            .find(|(_, u)| u.id == id || u.email.eq_ignore_ascii_case(id))
    }

    /// External companies as Salesforce Accounts (Website_Domain__c = domain).
    pub fn accounts(&self) -> Vec<SfAccount> {
        self.companies
            .iter()
            .enumerate()
            .map(|(i, c)| SfAccount {
                company: i,
                name: c.name.clone(),
                website_domain: c.domain.clone(),
                industry: c.industry.clone(),
            })
            .collect()
    }

    /// About half of the external people, as Contacts of their company's Account.
    pub fn contacts(&self) -> Vec<SfContact> {
        self.people
            .iter()
            .filter(|p| p.role == CrmRole::Contact)
            .map(|p| SfContact {
                first_name: p.first_name.clone(),
                last_name: p.last_name.clone(),
                email: p.email.clone(),
                title: p.title.clone(),
                phone: p.phone.clone(),
                company: p.company,
            })
            .collect()
    }

    /// About a fifth of the external people, as unconverted Leads.
    pub fn leads(&self) -> Vec<SfLead> {
        self.people
            .iter()
            .filter(|p| p.role == CrmRole::Lead)
            .map(|p| SfLead {
                first_name: p.first_name.clone(),
                last_name: p.last_name.clone(),
                email: p.email.clone(),
                company: self.companies[p.company].name.clone(),
                title: p.title.clone(),
            })
            .collect()
    }

    /// The internal Zoom users, as Salesforce Users (meeting owners).
    pub fn internal_users(&self) -> Vec<SfUser> {
        self.users
            .iter()
            .map(|u| SfUser {
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
                email: u.email.clone(),
                username: format!("{}.sf", u.email),
            })
            .collect()
    }
}

struct Gen {
    rng: StdRng,
    uuids: BTreeSet<String>,
}

impl Gen {
    fn zoom_id(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(bytes)
            .chars()
            .take(22)
            .collect()
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.rng.random_range(0..16)]))
            .collect()
    }

    fn uuid_v4(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// A meeting-instance UUID: base64 of 16 bytes (24 chars, ends "=="). Every 9th starts with
    /// '/' and every 13th contains "//", since those need double encoding in paths.
    fn meeting_uuid(&mut self, i: usize) -> String {
        loop {
            let bytes: [u8; 16] = self.rng.random();
            let mut u = base64::engine::general_purpose::STANDARD.encode(bytes);
            if i % 9 == 4 {
                u.replace_range(0..1, "/");
            } else if i % 13 == 6 {
                u.replace_range(5..7, "//");
            }
            if self.uuids.insert(u.clone()) {
                return u;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn participants(
        &mut self,
        users: &[ZoomUser],
        people: &[Person],
        host: usize,
        company: usize,
        begin: DateTime<Utc>,
        end: DateTime<Utc>,
        average: usize,
    ) -> Vec<Participant> {
        let mut rows = Vec::new();
        let mut next_user_id = 16_778_240u64 + self.rng.random_range(0..1000u64);
        let mut push = |g: &mut Gen, attendee: Attendee, join: DateTime<Utc>, leave| {
            let (id, name, email) = match attendee {
                Attendee::Internal(u) => (
                    users[u].id.clone(),
                    users[u].display_name(),
                    users[u].email.clone(),
                ),
                Attendee::External(p) => {
                    let person = &people[p];
                    // Externals show "" unless an exception applies; some typed mixed case.
                    let shown = match g.rng.random_range(0..10) {
                        0..=2 => String::new(),
                        3..=4 => mixed_case(&person.email),
                        _ => person.email.clone(),
                    };
                    (String::new(), person.name(), shown)
                }
            };
            next_user_id += 1;
            rows.push(Participant {
                attendee,
                id,
                user_id: next_user_id.to_string(),
                participant_uuid: g.zoom_id(),
                name,
                email,
                join_time: join,
                leave_time: leave,
                registrant_id: String::new(),
            });
        };
        push(self, Attendee::Internal(host), begin, end);
        // One meeting in eight is the host alone (absent from reports and participant lists).
        if self.rng.random_bool(0.125) {
            return rows;
        }
        let extra = self
            .rng
            .random_range(1..=average.max(2) * 2 - 2)
            .min(people.len());
        let company_people: Vec<usize> = (0..people.len())
            .filter(|&p| people[p].company == company)
            .collect();
        let mut chosen = BTreeSet::new();
        for _ in 0..extra {
            let attendee = if self.rng.random_bool(0.2) && users.len() > 1 {
                let u = self.rng.random_range(0..users.len());
                if u == host {
                    continue;
                }
                Attendee::Internal(u)
            } else if !company_people.is_empty() && self.rng.random_bool(0.85) {
                Attendee::External(company_people[self.rng.random_range(0..company_people.len())])
            } else {
                Attendee::External(self.rng.random_range(0..people.len()))
            };
            if !chosen.insert(format!("{attendee:?}")) {
                continue;
            }
            let total = (end - begin).num_seconds().max(120);
            let join = begin + Duration::seconds(self.rng.random_range(0..total / 4));
            let leave = end - Duration::seconds(self.rng.random_range(0..total / 4));
            if self.rng.random_bool(0.15) {
                // Dropped and rejoined: two rows.
                let mid = join + (leave - join) / 2;
                push(self, attendee, join, mid);
                push(self, attendee, mid + Duration::seconds(20), leave);
            } else {
                push(self, attendee, join, leave);
            }
        }
        rows
    }

    fn recording(&mut self, begin: DateTime<Utc>, end: DateTime<Utc>) -> Recording {
        let s = begin + Duration::seconds(5);
        let e = end - Duration::seconds(5);
        let mins = (end - begin).num_minutes().max(1) as u64;
        let mut files = vec![
            RecordingFile {
                id: self.uuid_v4(),
                file_type: "MP4".into(),
                file_extension: "MP4".into(),
                file_size: mins * 1_100_000,
                recording_type: "shared_screen_with_speaker_view".into(),
                start: s,
                end: e,
            },
            RecordingFile {
                id: self.uuid_v4(),
                file_type: "M4A".into(),
                file_extension: "M4A".into(),
                file_size: mins * 120_000,
                recording_type: "audio_only".into(),
                start: s,
                end: e,
            },
        ];
        if self.rng.random_bool(0.7) {
            files.push(RecordingFile {
                id: self.uuid_v4(),
                file_type: "TRANSCRIPT".into(),
                file_extension: "VTT".into(),
                file_size: mins * 9_000,
                recording_type: "audio_transcript".into(),
                start: s,
                end: e,
            });
        }
        Recording {
            files,
            share_url: format!("https://zoom.us/rec/share/{}", self.zoom_id()),
            password: String::new(),
        }
    }

    fn summary(&mut self, topic: &str, end: DateTime<Utc>) -> Summary {
        let steps = [
            "Send proposal by Friday",
            "Schedule a technical deep dive",
            "Share security questionnaire",
            "Loop in procurement",
            "Follow up on pricing tiers",
        ];
        let n = self.rng.random_range(1..=3);
        let first = self.rng.random_range(0..steps.len());
        Summary {
            title: format!("Summary: {topic}"),
            overview: format!(
                "The team discussed {topic}, current priorities and a timeline for next steps."
            ),
            details: vec![
                (
                    "Goals".into(),
                    "Reviewed the customer's goals for the quarter.".into(),
                ),
                (
                    "Pricing".into(),
                    "Discussed options and volume tiers.".into(),
                ),
            ],
            next_steps: (0..n)
                .map(|k| steps[(first + k) % steps.len()].to_string())
                .collect(),
            created: end + Duration::minutes(2),
        }
    }

    fn webinar(
        &mut self,
        i: usize,
        users: &[ZoomUser],
        people: &[Person],
        start: DateTime<Utc>,
        span_secs: i64,
        scale: &Scale,
    ) -> Webinar {
        let host = i % users.len();
        let begin = start + Duration::seconds(self.rng.random_range(0..span_secs));
        let end = begin + Duration::minutes(60);
        let mut registrants = Vec::new();
        let mut attendees = Vec::new();
        let mut picked = BTreeSet::new();
        for _ in 0..scale.registrants_per_webinar.min(people.len()) {
            let p = self.rng.random_range(0..people.len());
            if !picked.insert(p) {
                continue;
            }
            let email = if self.rng.random_bool(0.2) {
                mixed_case(&people[p].email)
            } else {
                people[p].email.clone()
            };
            let attended = self.rng.random_bool(0.6);
            let id = self.zoom_id();
            if attended {
                let join = begin + Duration::seconds(self.rng.random_range(0..600));
                attendees.push(Participant {
                    attendee: Attendee::External(p),
                    id: self.zoom_id(),
                    user_id: format!("{}", 16_800_000 + attendees.len()),
                    participant_uuid: self.zoom_id(),
                    name: people[p].name(),
                    email: email.clone(),
                    join_time: join,
                    leave_time: end - Duration::seconds(self.rng.random_range(0..600)),
                    registrant_id: id.clone(),
                });
            }
            registrants.push(Registrant {
                id,
                person: p,
                email,
                status: "approved".into(),
                create_time: begin - Duration::days(self.rng.random_range(1..20)),
                attended,
            });
        }
        let panelists = (0..users.len().min(2))
            .map(|k| Panelist {
                id: self.zoom_id(),
                user: (host + k + 1) % users.len(),
            })
            .collect();
        Webinar {
            id: 91_000_000_000 + self.rng.random_range(0..999_999_999u64),
            uuid: self.meeting_uuid(i + 1),
            host,
            topic: format!("Acme product webinar #{}", i + 1),
            start: begin,
            end,
            created_at: begin - Duration::days(30),
            registrants,
            panelists,
            attendees,
        }
    }
}

/// "pat.buyer@contoso.com" → "Pat.Buyer@Contoso.com".
fn mixed_case(email: &str) -> String {
    let mut out = String::with_capacity(email.len());
    let mut upper = true;
    for c in email.chars() {
        if upper && c.is_ascii_alphabetic() {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
        if matches!(c, '.' | '@') {
            upper = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_world() {
        let a = World::generate(7, Scale::small());
        let b = World::generate(7, Scale::small());
        let c = World::generate(8, Scale::small());
        let uuids = |w: &World| {
            w.meetings
                .iter()
                .map(|m| m.uuid.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(uuids(&a), uuids(&b));
        assert_ne!(uuids(&a), uuids(&c));
        assert_eq!(a.contacts(), b.contacts());
    }

    #[test]
    fn world_has_the_awkward_cases() {
        let w = World::generate(42, Scale::default());
        assert!(w.meetings.iter().any(|m| m.uuid.starts_with('/')));
        assert!(w.meetings.iter().any(|m| m.uuid.contains("//")));
        let uuids: BTreeSet<_> = w.meetings.iter().map(|m| &m.uuid).collect();
        assert_eq!(uuids.len(), w.meetings.len(), "uuids are unique");
        let rows = w.meetings.iter().flat_map(|m| &m.participants);
        let (mut blank, mut mixed) = (0, 0);
        for p in rows {
            blank += usize::from(p.email.is_empty());
            mixed += usize::from(p.email.chars().any(|c| c.is_ascii_uppercase()));
        }
        assert!(blank > 0 && mixed > 0);
        let rejoined = w.meetings.iter().any(|m| {
            let mut seen = BTreeSet::new();
            m.participants
                .iter()
                .any(|p| !seen.insert(format!("{:?}", p.attendee)))
        });
        assert!(rejoined);
        let rec = w.meetings.iter().filter(|m| m.recording.is_some()).count() as f64;
        let share = rec / w.meetings.len() as f64;
        assert!((0.25..0.55).contains(&share), "recording share {share}");
        assert!(w.meetings.iter().any(|m| !m.in_reports()));
        let people = w.people.len() as f64;
        let contacts = w.contacts().len() as f64 / people;
        let leads = w.leads().len() as f64 / people;
        assert!((0.35..0.65).contains(&contacts) && (0.08..0.32).contains(&leads));
        assert!(w.accounts().iter().all(|a| a.website_domain.contains('.')));
        assert!(
            w.internal_users()
                .iter()
                .all(|u| u.email.ends_with("@acme.com"))
        );
    }
}
