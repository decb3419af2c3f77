//! Simulators of Zoom and Salesforce for tests, the demo and benchmarks. They listen on
//! 127.0.0.1 only and reproduce the real services' shapes, limits and faults.

pub mod salesforce;
pub mod sandbox;
pub mod world;
pub mod zoom;
