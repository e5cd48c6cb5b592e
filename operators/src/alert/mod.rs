//! Vital-sign alerting: the NEWS2 early warning score and the life of an alert.

pub mod latest;
pub mod lifecycle;
pub mod news2;
