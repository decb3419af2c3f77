//! Reading the catalog's per-user streams for one person (privacy requests): find the Zoom
//! user by email, then read each stream marked `subject:` with that user's id, windowed
//! streams window by window back to a horizon. Every request goes through the same HTTP
//! client as runs: paced at the connection's headroom, backing off on 429.

use super::catalog::{StreamDef, SubjectDef};
use super::{ZoomConnector, ZoomError, catalog, param_text};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The records of one per-user stream and the dates they cover.
#[derive(Debug, Clone)]
pub struct SubjectRead {
    pub records: Vec<Value>,
    /// First and last day asked for (windowed streams), else None.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// The horizon asked for reached further back than Zoom answers for this stream.
    pub clamped: bool,
    /// The stream has no data for this user (not a Zoom Phone user, no recordings).
    pub no_data: bool,
}

/// The catalog's streams that take part in privacy requests, in catalog order.
pub fn subject_streams() -> Vec<(&'static StreamDef, &'static SubjectDef)> {
    catalog()
        .all()
        .filter_map(|d| d.subject.as_ref().map(|s| (d, s)))
        .collect()
}

impl ZoomConnector {
    /// The Zoom user with this email (GET /users/{email}), or None when there is none.
    pub async fn find_user(&self, email: &str) -> Result<Option<Value>, ZoomError> {
        let def = self.def("users")?;
        let params = BTreeMap::from([("id".to_string(), Value::String(email.to_string()))]);
        let path = self.fill_path(def, "/users/{id}", &params)?;
        match self
            .get_json(&def.bucket("light"), &path, &[], &[1001, 1120])
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(ZoomError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One per-user stream's records for `user_id`, from `since` (clamped to the stream's
    /// horizon) to `until`.
    pub async fn read_for_subject(
        &self,
        stream: &str,
        user_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<SubjectRead, ZoomError> {
        let def = self.def(stream)?;
        let Some(sub) = &def.subject else {
            return Err(ZoomError::BadParam {
                stream: stream.into(),
                message: "this stream is not read for one user".into(),
            });
        };
        let params = BTreeMap::from([("user_id".to_string(), Value::String(user_id.to_string()))]);
        let path = self.fill_path(def, sub.path.as_deref().unwrap_or(&def.path), &params)?;
        let category = sub.category.as_deref().unwrap_or(&def.category);
        let selector = sub.selector.as_deref().unwrap_or(&def.selector);
        let base_query: Vec<(String, String)> = def.query.clone().into_iter().collect();
        let mut out = SubjectRead {
            records: Vec::new(),
            from: None,
            to: None,
            clamped: false,
            no_data: false,
        };
        if selector.trim() == "$" {
            match self
                .get_json(&def.bucket(category), &path, &base_query, &def.no_data)
                .await
            {
                Ok(v) => out.records.push(v),
                Err(ZoomError::NotFound { .. }) => out.no_data = true,
                Err(e) => return Err(e),
            }
            return Ok(out);
        }
        if !sub.windowed {
            match self.list(def, &path, &base_query, category, selector).await {
                Ok(r) => out.records = r,
                Err(ZoomError::NotFound { .. }) => out.no_data = true,
                Err(e) => return Err(e),
            }
            return Ok(out);
        }
        let mut start = since;
        if let Some(days) = sub.horizon_days {
            let floor = until - Duration::days(days.max(1));
            if start < floor {
                start = floor;
                out.clamped = true;
            }
        }
        let max_days = def
            .window
            .as_ref()
            .map(|w| w.max_days)
            .unwrap_or(30)
            .clamp(1, 30);
        let (first, last) = (start.date_naive(), until.date_naive());
        out.from = Some(first);
        out.to = Some(last);
        let mut seen = BTreeSet::new();
        let mut day = first;
        while day <= last {
            let end = (day + Duration::days(max_days - 1)).min(last);
            let mut q = base_query.clone();
            q.push(("from".into(), day.to_string()));
            q.push(("to".into(), end.to_string()));
            match self.list(def, &path, &q, category, selector).await {
                Ok(records) => {
                    for r in records {
                        let key = r.get(&def.primary_key).map(param_text).unwrap_or_default();
                        if key.is_empty() || seen.insert(key) {
                            out.records.push(r);
                        }
                    }
                }
                Err(ZoomError::NotFound { .. }) => {
                    out.no_data = out.records.is_empty();
                    break;
                }
                Err(e) => return Err(e),
            }
            day = end + Duration::days(1);
        }
        Ok(out)
    }
}
