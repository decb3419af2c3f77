//! The Zoom simulator.
