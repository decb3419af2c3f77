//! The Salesforce simulator.
