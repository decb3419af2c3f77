//! The sim's in-memory org: records per object, and the write rules Salesforce applies
//! (field-level access, types, lengths, required fields, picklists, references, uniqueness,
//! and the activity, attendee and campaign-member rules).

use super::ids;
use super::schema::{FieldMeta, ObjectMeta, Schema};
use super::soql::parse_datetime;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// A per-record error, in the `statusCode` shape Collections and SaveResults use.
#[derive(Debug, Clone, PartialEq)]
pub struct RecErr {
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecErr {
    pub fn new(code: &str, message: impl Into<String>, fields: &[&str]) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            fields: fields.iter().map(|s| s.to_string()).collect(),
        }
    }
    pub fn to_json(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

/// A request-level error: the whole request fails with this HTTP status and `errorCode`.
#[derive(Debug, Clone)]
pub struct ApiErr {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub fields: Option<Vec<String>>,
}

impl ApiErr {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            fields: None,
        }
    }
    pub fn body(&self) -> Value {
        let mut e = json!({"message": self.message, "errorCode": self.code});
        if let Some(f) = &self.fields {
            e["fields"] = json!(f);
        }
        json!([e])
    }
}

pub type Records = BTreeMap<String, Vec<Map<String, Value>>>;

/// Faults that act on individual record writes.
#[derive(Debug, Clone, Default)]
pub struct WriteFaults {
    /// Every Nth record write fails with UNABLE_TO_LOCK_ROW (0 = never).
    pub lock_row_every: u32,
    /// At most this many lock failures in total.
    pub lock_row_max: u32,
    /// (object, field, substring): a record whose field contains the substring fails a
    /// validation rule.
    pub validation_rule: Option<(String, String, String)>,
    /// The first upsert that would create each new external-id value loses a race with a
    /// concurrent writer and fails with DUPLICATE_VALUE (once per value).
    pub duplicate_race: bool,
}

/// (EventId, RelationId) as 15-character ids → the EventRelation's Id.
type RelationIndex = HashMap<(String, String), String>;

pub struct Org {
    pub schema: Schema,
    pub records: Records,
    /// Deleted records (the Recycle Bin), with `IsDeleted = true` and the delete's
    /// `SystemModstamp`: only `queryAll` sees them.
    pub recycled: Records,
    next_id: u64,
    pub integration_user_id: String,
    pub write_faults: WriteFaults,
    write_attempts: u64,
    pub lock_failures: u32,
    raced_keys: std::collections::HashSet<String>,
    /// EventRelations by (EventId, RelationId) as 15-character ids, for the duplicate check
    /// (a scan per create is quadratic in a backfill), with the number of rows it was made
    /// from: rebuilt when that differs (rows changed other than by `insert`).
    relations: RefCell<(usize, RelationIndex)>,
}

pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

pub enum WriteMode<'a> {
    Create,
    Update(&'a Map<String, Value>),
}

impl Org {
    pub fn new(now: DateTime<Utc>, username: &str) -> Self {
        let mut org = Self {
            schema: Schema::default(),
            records: Records::new(),
            recycled: Records::new(),
            next_id: 1,
            integration_user_id: String::new(),
            write_faults: WriteFaults::default(),
            write_attempts: 0,
            lock_failures: 0,
            raced_keys: Default::default(),
            relations: RefCell::new((usize::MAX, HashMap::new())),
        };
        let id = org.new_id("005");
        org.integration_user_id = id.clone();
        let mut user = Map::new();
        for (k, v) in [
            ("Id", json!(id)),
            ("Username", json!(username)),
            ("Email", json!(username)),
            ("FirstName", json!("Integration")),
            ("LastName", json!("User")),
            ("Name", json!("Integration User")),
            ("Alias", json!("integ")),
            ("IsActive", json!(true)),
        ] {
            user.insert(k.to_string(), v);
        }
        org.stamp(&mut user, now, true);
        org.records.insert("User".into(), vec![user]);
        org
    }

    pub fn new_id(&mut self, prefix: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        ids::make_id(prefix, n)
    }

    fn stamp(&self, rec: &mut Map<String, Value>, now: DateTime<Utc>, create: bool) {
        let ts = json!(format_datetime(now));
        let user = json!(self.integration_user_id);
        if create {
            rec.entry("CreatedDate").or_insert(ts.clone());
            rec.entry("CreatedById").or_insert(user.clone());
            rec.entry("IsDeleted").or_insert(json!(false));
        }
        rec.insert("LastModifiedDate".into(), ts.clone());
        rec.insert("SystemModstamp".into(), ts);
        rec.insert("LastModifiedById".into(), user);
    }

    pub fn find(&self, id: &str) -> Option<(&'static str, &Map<String, Value>)> {
        let obj = self.schema.object_for_id(id)?;
        let rec = self.records.get(obj.name)?.iter().find(|r| {
            r.get("Id")
                .and_then(Value::as_str)
                .is_some_and(|x| ids::same_id(x, id))
        })?;
        Some((obj.name, rec))
    }

    fn find_index(&self, object: &str, id: &str) -> Option<usize> {
        self.records.get(object)?.iter().position(|r| {
            r.get("Id")
                .and_then(Value::as_str)
                .is_some_and(|x| ids::same_id(x, id))
        })
    }

    /// Records whose `field` equals `value` (case-insensitively for text, as external-id
    /// matching does by default).
    pub fn matching(&self, object: &str, field: &FieldMeta, value: &Value) -> Vec<String> {
        let Some(rows) = self.records.get(object) else {
            return Vec::new();
        };
        rows.iter()
            .filter(|r| values_equal(field, r.get(field.name).unwrap_or(&Value::Null), value))
            .filter_map(|r| r.get("Id").and_then(Value::as_str).map(String::from))
            .collect()
    }

    /// Inserts records without validation, filling system fields; tests use it to seed.
    pub fn seed(&mut self, object: &str, rows: Vec<Value>, now: DateTime<Utc>) -> Vec<String> {
        let Some(meta) = self.schema.object(object).cloned() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for row in rows {
            let mut rec = Map::new();
            if let Value::Object(m) = row {
                for (k, v) in m {
                    let name = meta.field(&k).map(|f| f.name.to_string()).unwrap_or(k);
                    rec.insert(name, v);
                }
            }
            let id = match rec.get("Id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => self.new_id(meta.key_prefix),
            };
            rec.insert("Id".into(), json!(id));
            let modified = rec.get("LastModifiedDate").cloned();
            self.apply_defaults(&meta, &mut rec);
            derive_fields(&meta, &mut rec);
            self.stamp(&mut rec, now, true);
            if let Some(m) = modified {
                rec.insert("LastModifiedDate".into(), m.clone());
                rec.insert("SystemModstamp".into(), m);
            }
            out.push(id);
            self.records
                .entry(meta.name.to_string())
                .or_default()
                .push(rec);
        }
        out
    }

    fn apply_defaults(&self, meta: &ObjectMeta, rec: &mut Map<String, Value>) {
        for f in &meta.fields {
            if rec.contains_key(f.name) {
                continue;
            }
            if f.name == "OwnerId" {
                rec.insert("OwnerId".into(), json!(self.integration_user_id));
            } else if f.ftype == "boolean" {
                rec.insert(f.name.into(), json!(false));
            } else if f.ftype == "picklist" && f.defaulted_on_create && !f.picklist.is_empty() {
                rec.insert(f.name.into(), json!(f.picklist[0]));
            } else if f.createable || !f.defaulted_on_create {
                rec.insert(f.name.into(), Value::Null);
            }
        }
    }

    /// Request-level checks: every field exists and every value has the field's JSON type.
    /// Salesforce fails the whole request on these, before looking at any record.
    pub fn check_shape(&self, meta: &ObjectMeta, rec: &Map<String, Value>) -> Result<(), ApiErr> {
        for (k, v) in rec {
            if k == "attributes" {
                continue;
            }
            if let Some(f) = meta.field(k) {
                coerce(f, v).map_err(|m| ApiErr::new(400, "JSON_PARSER_ERROR", m))?;
                continue;
            }
            if relationship_field(meta, k).is_some() && v.is_object() {
                continue;
            }
            let mut e = ApiErr::new(
                400,
                "INVALID_FIELD",
                format!("No such column '{k}' on sobject of type {}", meta.name),
            );
            e.fields = Some(vec![]);
            return Err(e);
        }
        Ok(())
    }

    /// Validates one record write and returns the record as it would be stored. Runs the
    /// per-record rules after `check_shape` passed for the request.
    pub fn prepare(
        &mut self,
        meta: &ObjectMeta,
        input: &Map<String, Value>,
        mode: WriteMode<'_>,
        now: DateTime<Utc>,
    ) -> Result<Map<String, Value>, Vec<RecErr>> {
        self.write_attempts += 1;
        let wf = &self.write_faults;
        if wf.lock_row_every > 0
            && self.write_attempts % u64::from(wf.lock_row_every) == 0
            && self.lock_failures < wf.lock_row_max
        {
            self.lock_failures += 1;
            return Err(vec![RecErr::new(
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record",
                &[],
            )]);
        }
        let creating = matches!(mode, WriteMode::Create);
        let mut errors = Vec::new();
        let mut rec = match &mode {
            WriteMode::Create => Map::new(),
            WriteMode::Update(existing) => (*existing).clone(),
        };
        if let WriteMode::Update(existing) = &mode
            && meta.name == "Lead"
            && existing.get("IsConverted") == Some(&json!(true))
        {
            return Err(vec![RecErr::new(
                "CANNOT_UPDATE_CONVERTED_LEAD",
                "cannot reference converted lead",
                &[],
            )]);
        }
        let mut not_writable = Vec::new();
        for (k, v) in input {
            if k == "attributes" || k.eq_ignore_ascii_case("Id") {
                continue;
            }
            // A parent named by external id: {"Account": {"Ext__c": "v"}}.
            if let Some(rf) = relationship_field(meta, k)
                && let Value::Object(key) = v
            {
                match self.resolve_parent(rf, key) {
                    Ok(id) => {
                        rec.insert(rf.name.to_string(), json!(id));
                    }
                    Err(e) => errors.push(e),
                }
                continue;
            }
            let Some(f) = meta.field(k) else { continue };
            if (creating && !f.createable) || (!creating && !f.updateable) {
                not_writable.push(f.name);
                continue;
            }
            let v = match coerce(f, v) {
                Ok(v) => v,
                Err(m) => {
                    errors.push(RecErr::new("JSON_PARSER_ERROR", m, &[f.name]));
                    continue;
                }
            };
            if let Err(e) = self.check_value(f, &v) {
                errors.push(e);
                continue;
            }
            rec.insert(f.name.to_string(), v);
        }
        if !not_writable.is_empty() {
            errors.push(RecErr::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to {} fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    if creating { "create" } else { "update" },
                    not_writable.join(", ")
                ),
                &not_writable,
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if creating {
            self.apply_defaults(meta, &mut rec);
        }
        let missing: Vec<&str> = meta
            .fields
            .iter()
            .filter(|f| f.createable && !f.nillable && rec.get(f.name).is_none_or(Value::is_null))
            .map(|f| f.name)
            .collect();
        if !missing.is_empty() {
            return Err(vec![RecErr::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            )]);
        }
        if let Some((obj, field, needle)) = &self.write_faults.validation_rule
            && obj.eq_ignore_ascii_case(meta.name)
            && rec
                .get(field.as_str())
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains(needle.as_str()))
        {
            return Err(vec![RecErr::new(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                format!("{field} may not contain \"{needle}\""),
                &[],
            )]);
        }
        self.object_rules(meta, &mut rec, creating)?;
        derive_fields(meta, &mut rec);
        self.stamp(&mut rec, now, creating);
        Ok(rec)
    }

    fn resolve_parent(&self, rf: &FieldMeta, key: &Map<String, Value>) -> Result<String, RecErr> {
        let target = rf.reference_to.first().copied().unwrap_or_default();
        let bad = |m: String| RecErr::new("INVALID_FIELD", m, &[rf.name]);
        let (kf, kv) = key
            .iter()
            .find(|(k, _)| *k != "attributes")
            .ok_or_else(|| bad(format!("No external id given for {target}")))?;
        let tmeta = self
            .schema
            .object(target)
            .ok_or_else(|| bad(format!("Unknown object {target}")))?;
        let f = tmeta
            .field(kf)
            .filter(|f| f.external_id || f.id_lookup)
            .ok_or_else(|| bad(format!("{kf} is not an external id field on {target}")))?;
        let hits = self.matching(tmeta.name, f, kv);
        match hits.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(bad(format!(
                "Foreign key external ID: {} not found for field {} in entity {target}",
                display(kv),
                f.name
            ))),
            _ => Err(bad(format!(
                "Foreign key external ID: {} matches more than one {target}",
                display(kv)
            ))),
        }
    }

    fn check_value(&self, f: &FieldMeta, v: &Value) -> Result<(), RecErr> {
        let Value::String(s) = v else { return Ok(()) };
        if f.is_string_like() && s.chars().count() as u64 > f.length {
            let head: String = s.chars().take(20).collect();
            return Err(RecErr::new(
                "STRING_TOO_LONG",
                format!(
                    "{}: data value too large: {head} (max length={})",
                    f.label, f.length
                ),
                &[f.name],
            ));
        }
        if f.ftype == "email" && !valid_email(s) {
            return Err(RecErr::new(
                "INVALID_EMAIL_ADDRESS",
                format!("{}: invalid email address: {s}", f.label),
                &[f.name],
            ));
        }
        if f.ftype == "picklist" && f.restricted_picklist && !f.picklist.contains(&s.as_str()) {
            return Err(RecErr::new(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                format!("{}: bad value for restricted picklist field: {s}", f.label),
                &[f.name],
            ));
        }
        if f.ftype == "reference" {
            if s.len() != 15 && s.len() != 18 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(RecErr::new(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {s}", f.label),
                    &[f.name],
                ));
            }
            match self.find(s) {
                None => {
                    return Err(RecErr::new(
                        "INVALID_CROSS_REFERENCE_KEY",
                        "invalid cross reference id",
                        &[f.name],
                    ));
                }
                Some((obj, _)) if !f.reference_to.contains(&obj) => {
                    return Err(RecErr::new(
                        "FIELD_INTEGRITY_EXCEPTION",
                        format!("{}: id value of incorrect type: {s}", f.label),
                        &[f.name],
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Rules particular to one object that describe alone does not express.
    fn object_rules(
        &self,
        meta: &ObjectMeta,
        rec: &mut Map<String, Value>,
        creating: bool,
    ) -> Result<(), Vec<RecErr>> {
        let own_id = rec.get("Id").and_then(Value::as_str).map(String::from);
        let get_str =
            |r: &Map<String, Value>, k: &str| r.get(k).and_then(Value::as_str).map(String::from);
        // Unique fields (external ids marked Unique).
        for f in meta.fields.iter().filter(|f| f.unique) {
            let Some(v) = rec.get(f.name).filter(|v| !v.is_null()) else {
                continue;
            };
            if let Some(other) = self
                .matching(meta.name, f, v)
                .into_iter()
                .find(|id| Some(id) != own_id.as_ref())
            {
                return Err(vec![RecErr::new(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {other}",
                        f.name
                    ),
                    &[f.name],
                )]);
            }
        }
        match meta.name {
            "Event" | "Task" => {
                if let (Some(who), Some(_)) = (get_str(rec, "WhoId"), get_str(rec, "WhatId"))
                    && who.starts_with("00Q")
                {
                    // Salesforce does not let an activity about a Lead be related to an
                    // account, opportunity or other object (exact wording unverified).
                    return Err(vec![RecErr::new(
                        "FIELD_INTEGRITY_EXCEPTION",
                        "Only a contact can be related to an account, opportunity or other object; remove the Related To (WhatId) when the Name (WhoId) is a lead.",
                        &["WhatId"],
                    )]);
                }
                if meta.name == "Event" {
                    event_times(rec)?;
                }
            }
            "EventRelation" if creating => {
                let event = get_str(rec, "EventId").unwrap_or_default();
                let relation = get_str(rec, "RelationId").unwrap_or_default();
                let dup = self.relation(&event, &relation);
                if let Some(other) = dup {
                    return Err(vec![RecErr::new(
                        "DUPLICATE_VALUE",
                        format!(
                            "duplicate value found: RelationId duplicates value on record with id: {other}"
                        ),
                        &["RelationId"],
                    )]);
                }
                if relation.starts_with("005") {
                    rec.insert("IsInvitee".into(), json!(true));
                }
            }
            "CampaignMember" if creating => {
                let campaign = get_str(rec, "CampaignId").unwrap_or_default();
                let person = match (get_str(rec, "ContactId"), get_str(rec, "LeadId")) {
                    (Some(c), None) => ("ContactId", c),
                    (None, Some(l)) => ("LeadId", l),
                    (Some(_), Some(_)) => {
                        return Err(vec![RecErr::new(
                            "FIELD_INTEGRITY_EXCEPTION",
                            "A campaign member is either a contact or a lead, not both",
                            &["ContactId", "LeadId"],
                        )]);
                    }
                    (None, None) => {
                        return Err(vec![RecErr::new(
                            "REQUIRED_FIELD_MISSING",
                            "Required fields are missing: [ContactId, LeadId]",
                            &["ContactId", "LeadId"],
                        )]);
                    }
                };
                let dup = self.records.get("CampaignMember").is_some_and(|rows| {
                    rows.iter().any(|r| {
                        get_str(r, "CampaignId").is_some_and(|c| ids::same_id(&c, &campaign))
                            && get_str(r, person.0).is_some_and(|p| ids::same_id(&p, &person.1))
                    })
                });
                if dup {
                    return Err(vec![RecErr::new(
                        "DUPLICATE_VALUE",
                        "Already a campaign member.",
                        &[],
                    )]);
                }
                if rec.get("Status").is_none_or(Value::is_null) {
                    rec.insert("Status".into(), json!("Sent"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The Id of the EventRelation between these two records, if there is one.
    fn relation(&self, event: &str, relation: &str) -> Option<String> {
        let rows = self.records.get("EventRelation");
        let mut index = self.relations.borrow_mut();
        if index.0 != rows.map_or(0, Vec::len) {
            let mut map = HashMap::new();
            for r in rows.into_iter().flatten() {
                if let Some(k) = relation_key(r) {
                    let id = r.get("Id").and_then(Value::as_str).unwrap_or_default();
                    map.entry(k).or_insert_with(|| id.to_string());
                }
            }
            *index = (rows.map_or(0, Vec::len), map);
        }
        if !valid_id(event) || !valid_id(relation) {
            return None;
        }
        index
            .1
            .get(&(id15(event).to_string(), id15(relation).to_string()))
            .cloned()
    }

    pub fn insert(&mut self, meta: &ObjectMeta, mut rec: Map<String, Value>) -> String {
        let id = self.new_id(meta.key_prefix);
        let mut ordered = Map::new();
        ordered.insert("Id".into(), json!(id));
        ordered.append(&mut rec);
        if meta.name == "EventRelation" {
            let rows = self.records.get("EventRelation").map_or(0, Vec::len);
            let index = self.relations.get_mut();
            if index.0 == rows {
                if let Some(k) = relation_key(&ordered) {
                    index.1.entry(k).or_insert_with(|| id.clone());
                }
                index.0 += 1;
            }
        }
        self.records
            .entry(meta.name.to_string())
            .or_default()
            .push(ordered);
        id
    }

    pub fn replace(&mut self, meta: &ObjectMeta, rec: Map<String, Value>) {
        let id = rec
            .get("Id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(i) = self.find_index(meta.name, &id)
            && let Some(rows) = self.records.get_mut(meta.name)
        {
            rows[i] = rec;
        }
    }

    pub fn get(&self, object: &str, id: &str) -> Option<&Map<String, Value>> {
        let i = self.find_index(object, id)?;
        self.records.get(object)?.get(i)
    }

    /// Sets fields of a live record without validation and stamps it modified now.
    pub fn touch(&mut self, object: &str, id: &str, fields: Value, now: DateTime<Utc>) -> bool {
        let Some(meta) = self.schema.object(object).cloned() else {
            return false;
        };
        let Some(i) = self.find_index(meta.name, id) else {
            return false;
        };
        let mut rec = match self.records.get(meta.name).and_then(|r| r.get(i)) {
            Some(r) => r.clone(),
            None => return false,
        };
        if let Value::Object(m) = fields {
            for (k, v) in m {
                let name = meta.field(&k).map(|f| f.name.to_string()).unwrap_or(k);
                rec.insert(name, v);
            }
        }
        self.stamp(&mut rec, now, false);
        if let Some(slot) = self.records.get_mut(meta.name).and_then(|r| r.get_mut(i)) {
            *slot = rec;
        }
        true
    }

    /// Deletes a record: it moves to the Recycle Bin with `IsDeleted = true` and a new
    /// `SystemModstamp` (as Salesforce does), where only `queryAll` finds it.
    pub fn delete(&mut self, object: &str, id: &str, now: DateTime<Utc>) -> bool {
        match self.find_index(object, id) {
            Some(i) => {
                let removed = self.records.get_mut(object).map(|rows| rows.remove(i));
                if let Some(mut rec) = removed {
                    rec.insert("IsDeleted".into(), json!(true));
                    self.stamp(&mut rec, now, false);
                    self.recycled
                        .entry(object.to_string())
                        .or_default()
                        .push(rec);
                }
                true
            }
            None => false,
        }
    }

    /// Creates, or updates the one record matched by `field = value`. `Ok((id, created))`;
    /// `Err(Ok(ids))` when several match; `Err(Err(errors))` when the write is rejected.
    #[allow(clippy::type_complexity)]
    pub fn upsert(
        &mut self,
        meta: &ObjectMeta,
        field: &FieldMeta,
        value: &Value,
        body: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<(String, bool), Result<Vec<String>, Vec<RecErr>>> {
        let hits = self.matching(meta.name, field, value);
        match hits.len() {
            0 if self.write_faults.duplicate_race
                && self.raced_keys.insert(format!(
                    "{}.{}={}",
                    meta.name,
                    field.name,
                    display(value).to_lowercase()
                )) =>
            {
                Err(Err(vec![RecErr::new(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {}",
                        field.name,
                        ids::make_id(meta.key_prefix, 0)
                    ),
                    &[field.name],
                )]))
            }
            0 => {
                let mut input = body.clone();
                input.retain(|k, _| !k.eq_ignore_ascii_case(field.name));
                if field.name != "Id" {
                    input.insert(field.name.to_string(), value.clone());
                }
                let rec = self
                    .prepare(meta, &input, WriteMode::Create, now)
                    .map_err(Err)?;
                Ok((self.insert(meta, rec), true))
            }
            1 => {
                let id = hits[0].clone();
                let existing = self.get(meta.name, &id).cloned().unwrap_or_default();
                let mut input = body.clone();
                input.retain(|k, _| !k.eq_ignore_ascii_case(field.name));
                let rec = self
                    .prepare(meta, &input, WriteMode::Update(&existing), now)
                    .map_err(Err)?;
                self.replace(meta, rec);
                Ok((id, false))
            }
            _ => Err(Ok(hits)),
        }
    }
}

fn relationship_field<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a FieldMeta> {
    meta.fields.iter().find(|f| {
        f.ftype == "reference"
            && f.createable
            && f.relationship_name
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(key))
    })
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

fn valid_id(s: &str) -> bool {
    s.len() == 15 || s.len() == 18
}

fn id15(s: &str) -> &str {
    s.get(..15).unwrap_or(s)
}

/// An EventRelation's (EventId, RelationId) as 15-character ids, when both are ids.
fn relation_key(r: &Map<String, Value>) -> Option<(String, String)> {
    let e = r.get("EventId").and_then(Value::as_str)?;
    let x = r.get("RelationId").and_then(Value::as_str)?;
    (valid_id(e) && valid_id(x)).then(|| (id15(e).to_string(), id15(x).to_string()))
}

/// Case-insensitive equality; without allocating for ASCII text (most of it), since
/// uniqueness checks and upserts compare a value with every record of the object.
fn same_text(x: &str, y: &str) -> bool {
    if x.is_ascii() && y.is_ascii() {
        x.eq_ignore_ascii_case(y)
    } else {
        x.to_lowercase() == y.to_lowercase()
    }
}

pub fn values_equal(f: &FieldMeta, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if f.is_id_like() => ids::same_id(x, y),
        (Value::String(x), Value::String(y)) => same_text(x, y),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::Number(y)) | (Value::Number(y), Value::String(x)) => {
            x.parse::<f64>().ok() == y.as_f64()
        }
        (Value::Null, _) | (_, Value::Null) => false,
        _ => a == b,
    }
}

/// Converts a JSON value to the field's stored form, or says why it cannot be.
pub fn coerce(f: &FieldMeta, v: &Value) -> Result<Value, String> {
    let cannot = |what: &str| {
        format!(
            "Cannot deserialize instance of {what} from {} value {} for field {}",
            json_kind(v),
            v,
            f.name
        )
    };
    if v.is_null() {
        return Ok(Value::Null);
    }
    match f.ftype {
        "boolean" => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(json!(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(json!(false)),
            _ => Err(cannot("boolean")),
        },
        "int" => match v {
            Value::Number(n) if n.as_i64().is_some() => Ok(v.clone()),
            Value::Number(n) if n.as_f64().is_some_and(|x| x.fract() == 0.0) => {
                Ok(json!(n.as_f64().unwrap_or_default() as i64))
            }
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(|n| json!(n))
                .map_err(|_| cannot("int")),
            _ => Err(cannot("int")),
        },
        "double" | "currency" | "percent" => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map(|n| json!(n))
                .map_err(|_| cannot("double")),
            _ => Err(cannot("double")),
        },
        "datetime" => match v {
            Value::String(s) => parse_datetime(s)
                .map(|t| json!(format_datetime(t)))
                .ok_or_else(|| cannot("datetime")),
            _ => Err(cannot("datetime")),
        },
        "date" => match v {
            Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| json!(d.format("%Y-%m-%d").to_string()))
                .map_err(|_| cannot("date")),
            _ => Err(cannot("date")),
        },
        _ => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(json!(n.to_string())),
            Value::Bool(b) => Ok(json!(b.to_string())),
            _ => Err(cannot("string")),
        },
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "VALUE_NULL",
        Value::Bool(_) => "VALUE_TRUE",
        Value::Number(_) => "VALUE_NUMBER",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

/// Fields the server computes from others.
fn derive_fields(meta: &ObjectMeta, rec: &mut Map<String, Value>) {
    if matches!(meta.name, "Contact" | "Lead" | "User") {
        let first = rec.get("FirstName").and_then(Value::as_str).unwrap_or("");
        let last = rec.get("LastName").and_then(Value::as_str).unwrap_or("");
        let name = format!("{first} {last}").trim().to_string();
        rec.insert("Name".into(), json!(name));
    }
    if meta.name == "CampaignMember" {
        let responded = matches!(
            rec.get("Status").and_then(Value::as_str),
            Some("Responded" | "Registered" | "Attended")
        );
        rec.insert("HasResponded".into(), json!(responded));
    }
    if meta.name == "Task" {
        let closed = rec.get("Status").and_then(Value::as_str) == Some("Completed");
        rec.insert("IsClosed".into(), json!(closed));
    }
}

/// An Event needs a start and either a duration or an end (they must agree), or is all-day
/// with a date; it may not span more than 14 days.
fn event_times(rec: &mut Map<String, Value>) -> Result<(), Vec<RecErr>> {
    let dt =
        |r: &Map<String, Value>, k: &str| r.get(k).and_then(Value::as_str).and_then(parse_datetime);
    let all_day = rec.get("IsAllDayEvent") == Some(&json!(true));
    if all_day {
        if rec.get("ActivityDate").is_none_or(Value::is_null) {
            match dt(rec, "ActivityDateTime") {
                Some(t) => {
                    rec.insert(
                        "ActivityDate".into(),
                        json!(t.format("%Y-%m-%d").to_string()),
                    );
                }
                None => {
                    return Err(vec![RecErr::new(
                        "REQUIRED_FIELD_MISSING",
                        "Required fields are missing: [ActivityDate]",
                        &["ActivityDate"],
                    )]);
                }
            }
        }
        rec.entry("DurationInMinutes").or_insert(json!(1440));
        return Ok(());
    }
    let start = dt(rec, "ActivityDateTime").or_else(|| dt(rec, "StartDateTime"));
    let Some(start) = start else {
        return Err(vec![RecErr::new(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [ActivityDateTime]",
            &["ActivityDateTime"],
        )]);
    };
    let duration = rec.get("DurationInMinutes").and_then(Value::as_i64);
    let end = dt(rec, "EndDateTime");
    let end = match (duration, end) {
        (Some(d), None) => start + chrono::Duration::minutes(d),
        (None, Some(e)) => e,
        (Some(d), Some(e)) => {
            if start + chrono::Duration::minutes(d) != e {
                return Err(vec![RecErr::new(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "Event duration does not match the difference between EndDateTime and ActivityDateTime",
                    &["DurationInMinutes", "EndDateTime"],
                )]);
            }
            e
        }
        (None, None) => {
            return Err(vec![RecErr::new(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [DurationInMinutes]",
                &["DurationInMinutes"],
            )]);
        }
    };
    if end < start {
        return Err(vec![RecErr::new(
            "FIELD_INTEGRITY_EXCEPTION",
            "End Date Time cannot be earlier than Start Date Time",
            &["EndDateTime"],
        )]);
    }
    if end - start > chrono::Duration::days(14) {
        return Err(vec![RecErr::new(
            "FIELD_INTEGRITY_EXCEPTION",
            "Event duration cannot exceed 14 days",
            &["EndDateTime"],
        )]);
    }
    rec.insert("ActivityDateTime".into(), json!(format_datetime(start)));
    rec.insert("StartDateTime".into(), json!(format_datetime(start)));
    rec.insert("EndDateTime".into(), json!(format_datetime(end)));
    rec.insert(
        "DurationInMinutes".into(),
        json!((end - start).num_minutes()),
    );
    rec.insert(
        "ActivityDate".into(),
        json!(start.format("%Y-%m-%d").to_string()),
    );
    Ok(())
}
