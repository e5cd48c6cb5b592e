//! vitalflow's data model.
//!
//! Every stage of a vitalflow job exchanges the types defined here:
//!
//! * [`RawRecord`]: bytes as a source read them, with where they came from;
//! * [`clinical`]: records parsed by ingestion. They **hold PHI** and never leave the engine;
//! * [`deid`]: records after anonymization. They hold no direct identifiers;
//! * [`canonical`]: FHIR R4 resources with typed columns, ready for sinks;
//! * [`envelope`]: the platform event envelope and the stages' domain events;
//! * [`row`]: records of a shape declared in the job file, as typed values;
//! * [`DeadLetter`]: input a stage could not process, with the reason.
//!
//! The split between `clinical` and `deid` is the type-level guarantee that PHI stays inside the
//! anonymization stage: no sink accepts a `clinical` record.
#![forbid(unsafe_code)]

pub mod alert;
pub mod canonical;
pub mod clinical;
pub mod deid;
pub mod envelope;
pub mod ids;
pub mod json;
pub mod lab;
pub mod notification;
pub mod raw;
pub mod row;
pub mod vitals;
pub mod wire;

pub use raw::{DeadLetter, RawFormat, RawRecord, now_us};

/// A dataflow timestamp: the epoch (batch number) a record belongs to.
///
/// Sources assign epochs; every stage reports its domain events per batch, where the batch of a
/// timestamp is given by [`batch_of`].
pub type Time = u64;

/// The batch (correlation unit of the domain events) a timestamp belongs to.
#[must_use]
pub const fn batch_of(time: Time) -> u64 {
    time
}
