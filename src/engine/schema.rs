//! Field schemas of sink objects, and the value checks made against them before a write.
//!
//! This lives in the engine, not in the Salesforce connector, because the checks are the
//! same whatever the sink: `ferry validate --online`, a plan and a run ask "would the sink
//! refuse this value?" of any [`super::ObjectSink`]. Each sink kind turns its own metadata
//! into an [`ObjectSchema`] (Salesforce: the describe, in `engine::connect`; the Zoom sinks
//! of a later issue: Zoom's documented field limits), a plain data struct, so a new kind
//! needs no new check code.

use serde_json::{Map, Value};

/// What kind of value a field holds, as far as checking a value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// Free text (Salesforce string, textarea, phone, url, combobox, encryptedstring).
    Text,
    /// Text that must be an email address.
    Email,
    /// A whole number of at most `digits` digits.
    Int {
        digits: Option<u32>,
    },
    /// A decimal number of at most `precision` digits, `scale` of them after the point.
    Number {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// An ISO 8601 date and time with an offset or `Z`.
    DateTime,
    /// A record id of the object itself (`Id`).
    Id,
    /// An id of one of `to`: (object, its id prefix when known).
    Reference {
        to: Vec<(String, Option<String>)>,
    },
    /// One value of a list; `allowed` is `Some` when the list is restricted.
    Picklist {
        allowed: Option<Vec<String>>,
    },
    /// Values of a list separated by `;`; `allowed` as for [`FieldKind::Picklist`].
    MultiPicklist {
        allowed: Option<Vec<String>>,
    },
    /// Anything the checks do not know (the sink decides).
    Other,
}

/// One field of a sink object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSchema {
    pub name: String,
    pub kind: FieldKind,
    /// The longest text the field takes (in UTF-16 units, as Salesforce counts), if limited.
    pub max_length: Option<u64>,
    /// A create without this field is refused.
    pub required_on_create: bool,
    /// The field may be set to null (cleared).
    pub nillable: bool,
}

impl FieldSchema {
    pub fn new(name: &str, kind: FieldKind) -> Self {
        FieldSchema {
            name: name.to_string(),
            kind,
            max_length: None,
            required_on_create: false,
            nillable: true,
        }
    }
}

/// The fields of one sink object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectSchema {
    pub object: String,
    pub fields: Vec<FieldSchema>,
}

/// Why the sink would refuse a value, and the filter or change that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field ("" for the record as a whole).
    pub field: String,
    pub reason: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// Text shown of a refused value: at most 40 characters.
fn shown(s: &str) -> String {
    let head: String = s.chars().take(40).collect();
    if head.len() < s.len() {
        format!("\"{head}…\"")
    } else {
        format!("\"{head}\"")
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => shown(s),
        other => shown(&other.to_string()),
    }
}

impl ObjectSchema {
    /// A field by name, case-insensitively (as Salesforce matches names).
    pub fn field(&self, name: &str) -> Option<&FieldSchema> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Fields a create must set, among those `named` does not set.
    pub fn missing_on_create<'a>(&'a self, named: &[&str]) -> Vec<&'a FieldSchema> {
        self.fields
            .iter()
            .filter(|f| f.required_on_create)
            .filter(|f| !named.iter().any(|n| n.eq_ignore_ascii_case(&f.name)))
            .collect()
    }

    /// Everything the sink would refuse in one write: each value, and on create the
    /// required fields left out. Fields the schema does not know are not judged here (the
    /// name checks of `validate --online` report them).
    pub fn check_write(&self, fields: &Map<String, Value>, creating: bool) -> Vec<Refusal> {
        let mut out: Vec<Refusal> = fields
            .iter()
            .filter_map(|(name, v)| self.check_value(name, v, creating))
            .collect();
        if creating {
            let named: Vec<&str> = fields.keys().map(String::as_str).collect();
            for f in self.missing_on_create(&named) {
                out.push(Refusal {
                    field: f.name.clone(),
                    reason: format!("{} requires {} on create", self.object, f.name),
                    hint: Some(format!("set `{}` in the sink's fields", f.name)),
                });
            }
        }
        out
    }

    /// Whether the sink would refuse `v` in `field`, and why.
    pub fn check_value(&self, field: &str, v: &Value, creating: bool) -> Option<Refusal> {
        let f = self.field(field)?;
        let null = match v {
            Value::Null => true,
            // Salesforce stores an empty text as null; other kinds refuse "" below.
            Value::String(s) => s.is_empty() && matches!(f.kind, FieldKind::Text),
            _ => false,
        };
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let c = Check {
            object: &self.object,
            f,
            v,
            text,
        };
        if null {
            return c.null(creating);
        }
        if matches!(v, Value::Array(_) | Value::Object(_)) {
            return c.refuse(
                format!(
                    "{}.{} takes a single value, not a {}",
                    self.object,
                    f.name,
                    if v.is_array() { "list" } else { "object" }
                ),
                Some("pick one value (`first`, `.field`) or join a list (`join(', ')`)".into()),
            );
        }
        c.kind().or_else(|| c.length()).or_else(|| c.email())
    }
}

/// One value checked against one field: the checks of [`ObjectSchema::check_value`], one
/// method per family of field kinds.
struct Check<'a> {
    object: &'a str,
    f: &'a FieldSchema,
    v: &'a Value,
    /// The value as text (a string as is, anything else as JSON).
    text: String,
}

impl Check<'_> {
    fn refuse(&self, reason: String, hint: Option<String>) -> Option<Refusal> {
        Some(Refusal {
            field: self.f.name.clone(),
            reason,
            hint,
        })
    }

    /// "VALUE into the KIND field OBJECT.FIELD".
    fn what(&self, kind: &str) -> String {
        format!(
            "{} into the {kind} field {}.{}",
            value_text(self.v),
            self.object,
            self.f.name
        )
    }

    /// A null (or, for text, empty) value: refused where the field cannot be empty, and on
    /// create where the server would fill the field in.
    fn null(&self, creating: bool) -> Option<Refusal> {
        let f = self.f;
        if !f.nillable && (!creating || f.required_on_create) {
            return self.refuse(
                format!("{}.{} cannot be empty", self.object, f.name),
                Some("give it a value, or a `when:` that skips records without one".to_string()),
            );
        }
        // On create, a field the server fills in is better left out than sent as null.
        if !f.nillable && creating {
            return self.refuse(
                format!(
                    "{}.{} cannot be null (the server fills it in when left out)",
                    self.object, f.name
                ),
                Some("render `omit` instead of nothing, e.g. `{{ x if x else omit }}`".into()),
            );
        }
        None
    }

    /// The check of the field's kind (none for text, email and unknown kinds here).
    fn kind(&self) -> Option<Refusal> {
        match &self.f.kind {
            FieldKind::Text | FieldKind::Email | FieldKind::Other => None,
            FieldKind::Int { digits } => self.int(*digits),
            FieldKind::Number { precision, scale } => self.number(*precision, *scale),
            FieldKind::Boolean => self.boolean(),
            FieldKind::Date => self.date(),
            FieldKind::DateTime => self.datetime(),
            FieldKind::Id => self.id(),
            FieldKind::Reference { to } => self.id().or_else(|| self.reference(to)),
            FieldKind::Picklist { allowed } | FieldKind::MultiPicklist { allowed } => {
                allowed.as_deref().and_then(|a| self.picklist(a))
            }
        }
    }

    fn int(&self, digits: Option<u32>) -> Option<Refusal> {
        let n = match self.v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                    .map(|x| x as i64)
            }),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            let hint = if self.text.trim().parse::<f64>().is_ok() {
                "round it: `| round | int`"
            } else {
                "render a whole number (a numeric field of the record, or `| int` of digits in text)"
            };
            return self.refuse(
                format!("not a whole number: {}", self.what("number")),
                Some(hint.into()),
            );
        };
        if let Some(d) = digits
            && digit_count(n.unsigned_abs()) > d
        {
            return self.refuse(
                format!(
                    "{} has more than the {d} digits it allows",
                    self.what("number")
                ),
                None,
            );
        }
        None
    }

    fn number(&self, precision: Option<u32>, scale: Option<u32>) -> Option<Refusal> {
        let x = match self.v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
            _ => None,
        };
        let Some(x) = x else {
            return self.refuse(
                format!("not a number: {}", self.what("number")),
                Some("render a number (a numeric field of the record, or `| float` of digits in text)".into()),
            );
        };
        if let Some(p) = precision {
            let whole = p.saturating_sub(scale.unwrap_or(0));
            if x.abs().trunc() >= 10f64.powi(whole.min(300) as i32) {
                return self.refuse(
                    format!(
                        "{} has more than the {whole} digits before the decimal point it allows",
                        self.what("number")
                    ),
                    None,
                );
            }
        }
        None
    }

    fn boolean(&self) -> Option<Refusal> {
        let ok = matches!(self.v, Value::Bool(_))
            || matches!(self.v, Value::String(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false"));
        if ok {
            return None;
        }
        self.refuse(
            format!("not true or false: {}", self.what("checkbox")),
            Some("render a condition, e.g. `{{ record.x == 'yes' }}`".into()),
        )
    }

    fn date(&self) -> Option<Refusal> {
        let text = &self.text;
        if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() && text.len() == 10 {
            return None;
        }
        let reason = if parse_datetime(text).is_some() {
            format!(
                "a date and time into the date field {}.{}: {}",
                self.object,
                self.f.name,
                value_text(self.v)
            )
        } else {
            format!("not a date (YYYY-MM-DD): {}", self.what("date"))
        };
        self.refuse(
            reason,
            Some("add the `sf_date` filter: `{{ … | sf_date }}`".into()),
        )
    }

    fn datetime(&self) -> Option<Refusal> {
        if parse_datetime(&self.text).is_some() {
            return None;
        }
        self.refuse(
            format!("not a date and time: {}", self.what("date/time")),
            Some("add the `sf_datetime` filter: `{{ … | sf_datetime }}`".into()),
        )
    }

    /// The shape of a record id: 15 or 18 letters and digits.
    fn id(&self) -> Option<Refusal> {
        let text = &self.text;
        if (text.len() == 15 || text.len() == 18) && text.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return None;
        }
        self.refuse(
            format!(
                "not a record Id (15 or 18 letters and digits): {}",
                self.what("reference")
            ),
            Some("use the `Id` of a lookup's match, e.g. `{{ lookups.NAME.Id }}`".into()),
        )
    }

    /// A reference's id prefix, checked only when every object it may point to has a known
    /// prefix; otherwise the shape check of [`Check::id`] is all that is known.
    fn reference(&self, to: &[(String, Option<String>)]) -> Option<Refusal> {
        let prefixes: Option<Vec<&str>> = to.iter().map(|(_, p)| p.as_deref()).collect();
        let prefixes = prefixes?;
        if prefixes.is_empty() || prefixes.iter().any(|p| self.text.get(..3) == Some(*p)) {
            return None;
        }
        let names: Vec<&str> = to.iter().map(|(o, _)| o.as_str()).collect();
        self.refuse(
            format!(
                "{}.{} points to {}, and {} is not the Id of one",
                self.object,
                self.f.name,
                names.join(" or "),
                value_text(self.v)
            ),
            Some(format!("look up a {} and use its `Id`", names.join(" or "))),
        )
    }

    /// A restricted picklist (or multi-select picklist, values separated by `;`).
    fn picklist(&self, allowed: &[String]) -> Option<Refusal> {
        let multi = matches!(self.f.kind, FieldKind::MultiPicklist { .. });
        let values: Vec<&str> = if multi {
            self.text.split(';').map(str::trim).collect()
        } else {
            vec![self.text.as_str()]
        };
        let bad = values.iter().find(|x| !allowed.iter().any(|a| a == *x))?;
        let list: Vec<String> = allowed.iter().take(12).map(|a| format!("`{a}`")).collect();
        self.refuse(
            format!(
                "{} is not a value of the restricted picklist {}.{}",
                shown(bad),
                self.object,
                self.f.name
            ),
            Some(format!("use one of {}", list.join(", "))),
        )
    }

    /// The field's length limit, for the kinds that hold text.
    fn length(&self) -> Option<Refusal> {
        let f = self.f;
        let max = f.max_length?;
        if !matches!(
            f.kind,
            FieldKind::Text
                | FieldKind::Email
                | FieldKind::Picklist { .. }
                | FieldKind::MultiPicklist { .. }
                | FieldKind::Other
        ) {
            return None;
        }
        // UTF-16 units: Salesforce counts an emoji as two characters.
        let len = self.text.encode_utf16().count() as u64;
        if len <= max {
            return None;
        }
        self.refuse(
            format!(
                "{len} characters into {}.{}, which holds {max}",
                self.object, f.name
            ),
            Some(format!("add the `truncate({max})` filter")),
        )
    }

    fn email(&self) -> Option<Refusal> {
        if self.f.kind != FieldKind::Email || valid_email(&self.text) {
            return None;
        }
        self.refuse(
            format!("not an email address: {}", self.what("email")),
            Some("leave it out when it is not one: `{{ x if '@' in x else omit }}`".into()),
        )
    }
}

fn digit_count(mut n: u64) -> u32 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// An ISO 8601 date and time with an offset or `Z` (what Salesforce reads).
fn parse_datetime(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok())
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> ObjectSchema {
        let mut subject = FieldSchema::new("Subject", FieldKind::Text);
        subject.max_length = Some(255);
        let mut status = FieldSchema::new(
            "Status",
            FieldKind::Picklist {
                allowed: Some(vec!["Not Started".into(), "Completed".into()]),
            },
        );
        status.nillable = false;
        let mut campaign = FieldSchema::new(
            "CampaignId",
            FieldKind::Reference {
                to: vec![("Campaign".into(), Some("701".into()))],
            },
        );
        campaign.required_on_create = true;
        campaign.nillable = false;
        ObjectSchema {
            object: "Task".into(),
            fields: vec![
                subject,
                status,
                campaign,
                FieldSchema::new("ActivityDate", FieldKind::Date),
                FieldSchema::new("StartDateTime", FieldKind::DateTime),
                FieldSchema::new("CallDurationInSeconds", FieldKind::Int { digits: Some(8) }),
                FieldSchema::new(
                    "Amount",
                    FieldKind::Number {
                        precision: Some(5),
                        scale: Some(2),
                    },
                ),
                FieldSchema::new("IsAllDayEvent", FieldKind::Boolean),
                FieldSchema::new("Email__c", FieldKind::Email),
                FieldSchema::new(
                    "WhoId",
                    FieldKind::Reference {
                        to: vec![
                            ("Contact".into(), Some("003".into())),
                            ("Lead".into(), None),
                        ],
                    },
                ),
            ],
        }
    }

    fn refused(field: &str, v: Value) -> Option<Refusal> {
        task().check_value(field, &v, false)
    }

    #[test]
    fn a_datetime_into_a_date_field_is_refused_with_sf_date() {
        let r = refused("ActivityDate", json!("2026-10-31T20:00:59Z")).unwrap();
        assert!(
            r.reason.contains("date and time into the date field"),
            "{r}"
        );
        assert!(r.hint.unwrap().contains("sf_date"));
        assert!(refused("activitydate", json!("2026-10-31")).is_none());
        assert!(refused("ActivityDate", json!("31/10/2026")).is_some());
    }

    #[test]
    fn datetimes_need_an_offset() {
        assert!(refused("StartDateTime", json!("2026-10-31T20:00:59.000Z")).is_none());
        assert!(refused("StartDateTime", json!("2026-10-31T20:00:59+02:00")).is_none());
        let r = refused("StartDateTime", json!("2026-10-31")).unwrap();
        assert!(r.hint.unwrap().contains("sf_datetime"));
    }

    #[test]
    fn text_into_numbers_is_refused_and_numbers_into_text_are_fine() {
        let r = refused("CallDurationInSeconds", json!("outbound")).unwrap();
        assert!(r.reason.contains("not a whole number"), "{r}");
        assert!(refused("CallDurationInSeconds", json!("31")).is_none());
        assert!(refused("CallDurationInSeconds", json!(31)).is_none());
        assert!(refused("CallDurationInSeconds", json!(31.5)).is_some());
        assert!(refused("CallDurationInSeconds", json!(123_456_789)).is_some());
        assert!(refused("Amount", json!("12.5")).is_none());
        assert!(refused("Amount", json!(1000)).is_some(), "5,2 holds 999.99");
        assert!(refused("Amount", json!("lots")).is_some());
        assert!(refused("Subject", json!(42)).is_none());
        assert!(refused("Subject", json!(true)).is_none());
    }

    #[test]
    fn long_text_is_refused_with_truncate_counting_emoji_twice() {
        let r = refused("Subject", json!("x".repeat(300))).unwrap();
        assert!(r.reason.contains("300 characters"), "{r}");
        assert_eq!(r.hint.as_deref(), Some("add the `truncate(255)` filter"));
        assert!(refused("Subject", json!("x".repeat(255))).is_none());
        let emoji = format!("{}😀", "x".repeat(254));
        assert!(refused("Subject", json!(emoji)).is_some());
    }

    #[test]
    fn restricted_picklists_take_only_their_values() {
        let r = refused("Status", json!("Done")).unwrap();
        assert!(r.reason.contains("restricted picklist"), "{r}");
        assert!(r.hint.unwrap().contains("`Completed`"));
        assert!(refused("Status", json!("Completed")).is_none());
        assert!(refused("Status", json!("completed")).is_some());
    }

    #[test]
    fn references_check_shape_and_known_prefixes() {
        assert!(refused("CampaignId", json!("701000000000001AAA")).is_none());
        let r = refused("CampaignId", json!("003000000000001AAA")).unwrap();
        assert!(r.reason.contains("points to Campaign"), "{r}");
        assert!(refused("CampaignId", json!("someone@x.com")).is_some());
        // A prefix unknown for one of the objects: only the shape is checked.
        assert!(refused("WhoId", json!("00Q000000000001AAA")).is_none());
        assert!(refused("WhoId", json!("00Q0000")).is_some());
    }

    #[test]
    fn booleans_emails_lists_and_nulls() {
        assert!(refused("IsAllDayEvent", json!("TRUE")).is_none());
        assert!(refused("IsAllDayEvent", json!("yes")).is_some());
        assert!(refused("Email__c", json!("pat@contoso.com")).is_none());
        assert!(refused("Email__c", json!("pat at contoso")).is_some());
        assert!(refused("Subject", json!(["a", "b"])).is_some());
        assert!(refused("Subject", Value::Null).is_none());
        assert!(refused("Status", Value::Null).is_some(), "not nillable");
        assert!(refused("Unknown__c", json!("x")).is_none());
    }

    #[test]
    fn creates_need_their_required_fields() {
        let s = task();
        let mut fields = Map::new();
        fields.insert("Subject".into(), json!("Call"));
        let r = s.check_write(&fields, true);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].field, "CampaignId");
        assert!(r[0].reason.contains("requires CampaignId"));
        assert!(s.check_write(&fields, false).is_empty(), "updates need not");
        fields.insert("CampaignId".into(), Value::Null);
        assert_eq!(s.check_write(&fields, true).len(), 1);
    }
}
