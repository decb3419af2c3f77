//! The Salesforce connector's stream catalog: `salesforce.records`, whose record shape
//! follows its `select` (see [`sample_for`]).

use super::source::{PARAMS, STREAM};
use crate::config::catalog::{StreamCatalog, StreamInfo};
use serde_json::{Map, Value, json};

/// The Salesforce streams.
#[derive(Debug)]
pub struct SalesforceCatalog;

/// The built-in catalog.
pub fn catalog() -> &'static SalesforceCatalog {
    static CATALOG: SalesforceCatalog = SalesforceCatalog;
    &CATALOG
}

/// What `ferry streams` says about `records`.
pub const DESCRIPTION: &str = "Records of one sObject by SOQL (sobject, select with parent fields like Owner.Email, optional where, deleted: true for queryAll), incremental by SystemModstamp";

/// A record as a `select` list returns it: the selected fields (parent fields nested),
/// `Id`, `SystemModstamp` and, with `deleted`, `IsDeleted`. Values are placeholders of the
/// right kind where the name tells it.
pub fn sample_for(select: &[String], deleted: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Id".into(), json!("00UAk00000AbCdEFGH"));
    m.insert(
        "SystemModstamp".into(),
        json!("2026-01-05T10:00:00.000+0000"),
    );
    if deleted {
        m.insert("IsDeleted".into(), json!(false));
    }
    for f in select {
        let placeholder = |name: &str| -> Value {
            let lower = name.to_ascii_lowercase();
            if lower == "id" || lower.ends_with("id") && !lower.ends_with("__c") {
                json!("005Ak00000AbCdEFGH")
            } else if lower.contains("email") {
                json!("rep@acme.com")
            } else if lower.contains("date") || lower.contains("modstamp") {
                json!("2026-01-05T10:00:00.000+0000")
            } else if lower.starts_with("is") {
                json!(false)
            } else {
                json!("text")
            }
        };
        match f.split_once('.') {
            None => {
                if !m.keys().any(|k| k.eq_ignore_ascii_case(f)) {
                    m.insert(f.clone(), placeholder(f));
                }
            }
            Some((rel, child)) => {
                let e = m
                    .entry(rel.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(p) = e {
                    p.insert(child.to_string(), placeholder(child));
                }
            }
        }
    }
    m
}

impl StreamCatalog for SalesforceCatalog {
    fn kind(&self) -> &str {
        "salesforce"
    }

    fn stream(&self, name: &str) -> Option<StreamInfo> {
        (name == STREAM).then(|| StreamInfo {
            name: STREAM.to_string(),
            params: PARAMS.iter().map(|p| p.to_string()).collect(),
            required_params: vec!["sobject".into()],
            sample: Value::Object(sample_for(&[], false)),
            incremental: true,
            single_fetch: false,
            triggers: Vec::new(),
        })
    }

    fn names(&self) -> Vec<String> {
        vec![STREAM.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_follows_the_select() {
        let s = sample_for(
            &["Subject".into(), "Owner.Email".into(), "Owner.Name".into()],
            true,
        );
        assert_eq!(s["Owner"]["Email"], json!("rep@acme.com"));
        assert!(s["Owner"].get("Name").is_some());
        assert_eq!(s["IsDeleted"], json!(false));
        assert!(s.contains_key("Subject") && s.contains_key("SystemModstamp"));
        let info = catalog().stream("records").unwrap();
        assert_eq!(info.required_params, vec!["sobject".to_string()]);
        assert!(info.incremental);
        assert!(catalog().stream("record").is_none());
    }
}
