//! Vital-sign alerting: the NEWS2 early warning score, critical-value and trend rules, and the
//! life of an alert; critical laboratory values ([`critical`]).

pub mod critical;
pub mod latest;
pub mod lifecycle;
pub mod monitor;
pub mod news2;
