//! The Salesforce connector: auth flows, describe, SOQL lookups, Collections/Bulk writes, limits.

pub mod csv;
