//! Vital-sign alerting: the NEWS2 early warning score.

pub mod news2;
