//! The sim's org metadata: describe results for the objects ferry writes, with the custom
//! fields a Zoom integration adds. Field entries carry the flags the real describe carries
//! (createable, updateable, nillable, defaultedOnCreate, externalId, idLookup, unique,
//! length, picklistValues, referenceTo), because the sim validates writes from them.

use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct FieldMeta {
    pub name: &'static str,
    pub label: String,
    pub ftype: &'static str,
    pub length: u64,
    pub createable: bool,
    pub updateable: bool,
    pub nillable: bool,
    pub defaulted_on_create: bool,
    pub external_id: bool,
    pub id_lookup: bool,
    pub unique: bool,
    pub custom: bool,
    pub picklist: Vec<&'static str>,
    pub restricted_picklist: bool,
    pub default_value: Option<Value>,
    pub reference_to: Vec<&'static str>,
    pub relationship_name: Option<String>,
}

impl FieldMeta {
    fn new(name: &'static str, ftype: &'static str) -> Self {
        let length = match ftype {
            "string" | "url" | "phone" | "combobox" | "picklist" => 255,
            "email" => 80,
            "textarea" => 32000,
            "id" | "reference" => 18,
            _ => 0,
        };
        let label = name.trim_end_matches("__c").replace('_', " ");
        Self {
            name,
            label,
            ftype,
            length,
            createable: true,
            updateable: true,
            nillable: ftype != "boolean",
            defaulted_on_create: ftype == "boolean",
            external_id: false,
            id_lookup: false,
            unique: false,
            custom: name.ends_with("__c"),
            picklist: Vec::new(),
            restricted_picklist: false,
            default_value: if ftype == "boolean" {
                Some(json!(false))
            } else {
                None
            },
            reference_to: Vec::new(),
            relationship_name: None,
        }
    }

    pub fn is_string_like(&self) -> bool {
        matches!(
            self.ftype,
            "string" | "url" | "phone" | "combobox" | "picklist" | "email" | "textarea"
        )
    }

    pub fn is_id_like(&self) -> bool {
        matches!(self.ftype, "id" | "reference")
    }

    fn describe_json(&self) -> Value {
        let soap_type = match self.ftype {
            "id" | "reference" => "tns:ID",
            "boolean" => "xsd:boolean",
            "int" => "xsd:int",
            "double" | "currency" | "percent" => "xsd:double",
            "date" => "xsd:date",
            "datetime" => "xsd:dateTime",
            _ => "xsd:string",
        };
        let picklist: Vec<Value> = self
            .picklist
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({"active": true, "defaultValue": i == 0 && self.defaulted_on_create,
                       "label": v, "validFor": null, "value": v})
            })
            .collect();
        // Number sizes as a standard org has them: whole numbers of up to 9 digits, decimals
        // of 18 digits with 2 after the point (Amount's currency(16, 2) allows 16 before).
        let (digits, precision, scale) = match self.ftype {
            "int" => (9, 0, 0),
            "double" | "currency" | "percent" => (0, 18, 2),
            _ => (0, 0, 0),
        };
        json!({
            "aggregatable": self.ftype != "textarea",
            "autoNumber": false,
            "byteLength": self.length * 3,
            "calculated": false,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default_value,
            "defaultedOnCreate": self.defaulted_on_create,
            "digits": digits,
            "externalId": self.external_id,
            "filterable": self.ftype != "textarea",
            "idLookup": self.id_lookup,
            "label": self.label,
            "length": self.length,
            "name": self.name,
            "nillable": self.nillable,
            "picklistValues": picklist,
            "precision": precision,
            "referenceTo": self.reference_to,
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted_picklist,
            "scale": scale,
            "soapType": soap_type,
            "sortable": self.ftype != "textarea",
            "type": self.ftype,
            "unique": self.unique,
            "updateable": self.updateable,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub name: &'static str,
    pub label: &'static str,
    pub key_prefix: &'static str,
    pub custom: bool,
    pub platform_event: bool,
    pub fields: Vec<FieldMeta>,
}

impl ObjectMeta {
    pub fn field(&self, name: &str) -> Option<&FieldMeta> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    pub fn describe_json(&self, version: &str) -> Value {
        let fields: Vec<Value> = self.fields.iter().map(FieldMeta::describe_json).collect();
        let base = format!("/services/data/v{version}/sobjects/{}", self.name);
        json!({
            "activateable": false,
            "createable": true,
            "custom": self.custom,
            "customSetting": false,
            "deletable": !self.platform_event,
            "fields": fields,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": format!("{}s", self.label),
            "name": self.name,
            "queryable": !self.platform_event,
            "recordTypeInfos": [],
            "childRelationships": [],
            "searchable": !self.platform_event,
            "triggerable": true,
            "undeletable": !self.platform_event,
            "updateable": !self.platform_event,
            "urls": {
                "describe": format!("{base}/describe"),
                "rowTemplate": format!("{base}/{{ID}}"),
                "sobject": base,
            },
        })
    }

    pub fn basic_json(&self, version: &str) -> Value {
        let base = format!("/services/data/v{version}/sobjects/{}", self.name);
        json!({
            "name": self.name, "label": self.label, "keyPrefix": self.key_prefix,
            "custom": self.custom, "createable": true, "updateable": !self.platform_event,
            "queryable": !self.platform_event,
            "urls": {"sobject": base, "describe": format!("{base}/describe"), "rowTemplate": format!("{base}/{{ID}}")},
        })
    }
}

/// Builder helpers keep the object table below readable.
fn f(name: &'static str, ftype: &'static str) -> FieldMeta {
    FieldMeta::new(name, ftype)
}

trait FieldExt {
    fn len(self, n: u64) -> Self;
    fn required(self) -> Self;
    fn defaulted(self) -> Self;
    fn read_only(self) -> Self;
    fn create_only(self) -> Self;
    fn ext_id(self) -> Self;
    fn unique(self) -> Self;
    fn lookup(self) -> Self;
    fn picklist(self, values: &[&'static str], restricted: bool) -> Self;
    fn refs(self, to: &[&'static str], rel: &str) -> Self;
}

impl FieldExt for FieldMeta {
    fn len(mut self, n: u64) -> Self {
        self.length = n;
        self
    }
    fn required(mut self) -> Self {
        self.nillable = false;
        self.defaulted_on_create = false;
        self
    }
    fn defaulted(mut self) -> Self {
        self.nillable = false;
        self.defaulted_on_create = true;
        self
    }
    fn read_only(mut self) -> Self {
        self.createable = false;
        self.updateable = false;
        self
    }
    fn create_only(mut self) -> Self {
        self.updateable = false;
        self
    }
    fn ext_id(mut self) -> Self {
        self.external_id = true;
        self.id_lookup = true;
        self
    }
    fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    fn lookup(mut self) -> Self {
        self.id_lookup = true;
        self
    }
    fn picklist(mut self, values: &[&'static str], restricted: bool) -> Self {
        self.picklist = values.to_vec();
        self.restricted_picklist = restricted;
        self
    }
    fn refs(mut self, to: &[&'static str], rel: &str) -> Self {
        self.reference_to = to.to_vec();
        self.relationship_name = Some(rel.to_string());
        self
    }
}

/// Fields every queryable object has, maintained by the server.
fn system_fields(owner: bool) -> Vec<FieldMeta> {
    let mut v = vec![
        f("Id", "id").read_only().defaulted().lookup(),
        f("IsDeleted", "boolean").read_only(),
        f("CreatedDate", "datetime").read_only().defaulted(),
        f("CreatedById", "reference")
            .read_only()
            .defaulted()
            .refs(&["User"], "CreatedBy"),
        f("LastModifiedDate", "datetime").read_only().defaulted(),
        f("LastModifiedById", "reference")
            .read_only()
            .defaulted()
            .refs(&["User"], "LastModifiedBy"),
        f("SystemModstamp", "datetime").read_only().defaulted(),
    ];
    if owner {
        v.push(
            f("OwnerId", "reference")
                .defaulted()
                .refs(&["User"], "Owner"),
        );
    }
    v
}

/// Custom fields defined once on Activity, so Event and Task both carry them.
fn activity_custom_fields() -> Vec<FieldMeta> {
    vec![
        f("Zoom_Meeting_UUID__c", "string").ext_id().unique(),
        f("Zoom_Action_Item_Key__c", "string").ext_id().unique(),
        f("Zoom_Recording_URL__c", "url"),
        f("Zoom_Call_Id__c", "string").len(64).ext_id().unique(),
    ]
}

fn activity_common() -> Vec<FieldMeta> {
    vec![
        f("Subject", "combobox").picklist(
            &["Call", "Email", "Meeting", "Send Letter/Quote", "Other"],
            false,
        ),
        f("Description", "textarea"),
        f("WhoId", "reference").refs(&["Contact", "Lead"], "Who"),
        f("WhatId", "reference").refs(&["Account", "Opportunity", "Campaign"], "What"),
        f("ActivityDate", "date"),
        f("AccountId", "reference")
            .read_only()
            .refs(&["Account"], "Account"),
    ]
}

fn objects() -> Vec<ObjectMeta> {
    let mut out = Vec::new();

    let mut account = system_fields(true);
    account.extend([
        f("Name", "string").required(),
        f("Type", "picklist").picklist(&["Prospect", "Customer", "Partner", "Other"], false),
        f("Industry", "picklist").picklist(
            &["Technology", "Finance", "Healthcare", "Education", "Other"],
            false,
        ),
        f("Website", "url"),
        f("Phone", "phone").len(40),
        f("BillingCountry", "string").len(80),
        f("NumberOfEmployees", "int"),
        f("Description", "textarea"),
        f("Website_Domain__c", "string").len(255),
    ]);
    out.push(obj("Account", "Account", "001", account));

    let mut contact = system_fields(true);
    contact.extend([
        f("FirstName", "string").len(40),
        f("LastName", "string").len(80).required(),
        f("Name", "string").len(121).read_only(),
        f("Email", "email").lookup(),
        f("Title", "string").len(128),
        f("Phone", "phone").len(40),
        f("AccountId", "reference").refs(&["Account"], "Account"),
        f("LeadSource", "picklist").picklist(&["Web", "Webinar", "Partner", "Other"], false),
        f("Description", "textarea"),
    ]);
    out.push(obj("Contact", "Contact", "003", contact));

    let mut lead = system_fields(true);
    lead.extend([
        f("FirstName", "string").len(40),
        f("LastName", "string").len(80).required(),
        f("Name", "string").len(121).read_only(),
        f("Company", "string").required(),
        f("Email", "email").lookup(),
        f("Title", "string").len(128),
        f("Phone", "phone").len(40),
        f("Status", "picklist")
            .picklist(
                &[
                    "Open - Not Contacted",
                    "Working - Contacted",
                    "Closed - Converted",
                    "Closed - Not Converted",
                ],
                true,
            )
            .defaulted(),
        f("LeadSource", "picklist").picklist(&["Web", "Webinar", "Partner", "Other"], false),
        f("IsConverted", "boolean").create_only(),
        f("ConvertedContactId", "reference")
            .read_only()
            .refs(&["Contact"], "ConvertedContact"),
        f("Description", "textarea"),
    ]);
    out.push(obj("Lead", "Lead", "00Q", lead));

    let mut user = system_fields(false);
    user.extend([
        f("Username", "string").len(80).required().unique().lookup(),
        f("Email", "email").required(),
        f("FirstName", "string").len(40),
        f("LastName", "string").len(80).required(),
        f("Name", "string").len(121).read_only(),
        f("Alias", "string").len(8).required(),
        f("IsActive", "boolean"),
    ]);
    out.push(obj("User", "User", "005", user));

    let mut opp = system_fields(true);
    opp.extend([
        f("Name", "string").len(120).required(),
        f("StageName", "picklist")
            .picklist(
                &[
                    "Prospecting",
                    "Qualification",
                    "Proposal",
                    "Negotiation",
                    "Closed Won",
                    "Closed Lost",
                ],
                true,
            )
            .required(),
        f("CloseDate", "date").required(),
        f("Amount", "currency"),
        f("AccountId", "reference").refs(&["Account"], "Account"),
        f("Description", "textarea"),
        f("IsClosed", "boolean").read_only(),
        f("Last_Zoom_Meeting__c", "datetime"),
        f("Zoom_Summary__c", "textarea").len(131072),
    ]);
    out.push(obj("Opportunity", "Opportunity", "006", opp));

    let mut campaign = system_fields(true);
    campaign.extend([
        f("Name", "string").len(80).required(),
        f("Type", "picklist").picklist(&["Webinar", "Conference", "Email", "Other"], false),
        f("Status", "picklist")
            .picklist(&["Planned", "In Progress", "Completed", "Aborted"], false),
        f("IsActive", "boolean"),
        f("StartDate", "date"),
        f("EndDate", "date"),
        f("Zoom_Webinar_Id__c", "string").len(32).ext_id().unique(),
        // Flag of the Salesforce → Zoom example: a marketer asks for a Zoom webinar.
        f("Zoom_Webinar__c", "boolean"),
    ]);
    out.push(obj("Campaign", "Campaign", "701", campaign));

    let mut member = system_fields(false);
    member.extend([
        f("CampaignId", "reference")
            .required()
            .create_only()
            .refs(&["Campaign"], "Campaign"),
        f("ContactId", "reference")
            .create_only()
            .refs(&["Contact"], "Contact"),
        f("LeadId", "reference")
            .create_only()
            .refs(&["Lead"], "Lead"),
        f("Status", "picklist").picklist(
            &[
                "Sent",
                "Responded",
                "Registered",
                "Attended",
                "No Show",
                "Panelist",
            ],
            false,
        ),
        f("HasResponded", "boolean").read_only(),
        // The member's Contact or Lead details, as Salesforce shows them on the member.
        f("Email", "email").read_only(),
        f("FirstName", "string").len(40).read_only(),
        f("LastName", "string").len(80).read_only(),
        f("Zoom_Registrant_Key__c", "string").ext_id().unique(),
        f("Zoom_Join_URL__c", "url"),
        f("Zoom_Registrant_Id__c", "string").len(64),
    ]);
    out.push(obj("CampaignMember", "Campaign Member", "00v", member));

    let mut event = system_fields(true);
    event.extend(activity_common());
    event.extend([
        f("ActivityDateTime", "datetime"),
        f("StartDateTime", "datetime"),
        f("EndDateTime", "datetime"),
        f("DurationInMinutes", "int"),
        f("IsAllDayEvent", "boolean"),
        f("Location", "string"),
        f("ShowAs", "picklist").picklist(&["Busy", "OutOfOffice", "Free"], false),
        // Fields of the Salesforce → Zoom examples: a rep flags the Event, ferry writes the
        // meeting's id and join link back.
        f("Zoom_Meeting__c", "boolean"),
        f("Zoom_Meeting_Id__c", "string").len(32).ext_id(),
        f("Zoom_Join_URL__c", "url"),
    ]);
    event.extend(activity_custom_fields());
    out.push(obj("Event", "Event", "00U", event));

    let mut task = system_fields(true);
    task.extend(activity_common());
    task.extend([
        f("Status", "picklist")
            .picklist(
                &["Not Started", "In Progress", "Completed", "Deferred"],
                true,
            )
            .defaulted(),
        f("Priority", "picklist")
            .picklist(&["Normal", "High", "Low"], true)
            .defaulted(),
        f("TaskSubtype", "picklist")
            .picklist(&["Task", "Email", "Call"], true)
            .create_only(),
        f("CallType", "picklist").picklist(&["Inbound", "Outbound", "Internal"], true),
        f("CallDurationInSeconds", "int"),
        f("CallObject", "string"),
        f("CallDisposition", "string"),
        f("IsClosed", "boolean").read_only(),
    ]);
    task.extend(activity_custom_fields());
    out.push(obj("Task", "Task", "00T", task));

    let mut relation = system_fields(false);
    relation.extend([
        f("EventId", "reference")
            .required()
            .create_only()
            .refs(&["Event"], "Event"),
        f("RelationId", "reference")
            .required()
            .create_only()
            .refs(&["Contact", "Lead", "User"], "Relation"),
        f("IsInvitee", "boolean"),
        f("IsParent", "boolean"),
        f("IsWhat", "boolean").create_only(),
        f("Status", "picklist").picklist(&["New", "Accepted", "Declined"], true),
        f("RespondedDate", "datetime"),
        f("Response", "string"),
    ]);
    out.push(obj("EventRelation", "Event Relation", "0RE", relation));

    let event_fields = vec![
        f("ReplayId", "string").read_only(),
        f("CreatedDate", "datetime").read_only().defaulted(),
        f("CreatedById", "reference")
            .read_only()
            .defaulted()
            .refs(&["User"], "CreatedBy"),
        f("EventUuid", "string").len(36).read_only(),
        f("Meeting_UUID__c", "string").required(),
        f("Topic__c", "string"),
        f("Host_Email__c", "email"),
        f("Ended_At__c", "datetime"),
        f("Duration_Minutes__c", "double"),
    ];
    let mut pe = obj(
        "Zoom_Meeting_Ended__e",
        "Zoom Meeting Ended",
        "e00",
        event_fields,
    );
    pe.custom = true;
    pe.platform_event = true;
    out.push(pe);

    out
}

fn obj(
    name: &'static str,
    label: &'static str,
    key_prefix: &'static str,
    fields: Vec<FieldMeta>,
) -> ObjectMeta {
    ObjectMeta {
        name,
        label,
        key_prefix,
        custom: false,
        platform_event: false,
        fields,
    }
}

/// The org's schema, looked up case-insensitively as Salesforce does.
#[derive(Debug, Clone)]
pub struct Schema {
    pub objects: Vec<ObjectMeta>,
}

impl Default for Schema {
    fn default() -> Self {
        Self { objects: objects() }
    }
}

impl Schema {
    pub fn object(&self, name: &str) -> Option<&ObjectMeta> {
        self.objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// Which object an id belongs to, from its key prefix.
    pub fn object_for_id(&self, id: &str) -> Option<&ObjectMeta> {
        let prefix = id.get(..3)?;
        self.objects
            .iter()
            .find(|o| o.key_prefix == prefix && !o.platform_event)
    }
}
