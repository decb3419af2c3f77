//! Loading and checking ferry.yaml and pipeline files, with diagnostics.

pub mod catalog;
