//! Connectors: one folder per service. A source yields pages of records; a sink takes
//! batches and answers per record.

pub mod salesforce;
pub(crate) mod tokens;
pub mod zoom;
