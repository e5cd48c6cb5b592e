//! Identified clinical notifications: an alert event for the care team, with the patient as
//! the source named them (medical record number, name, location) and real event times.
//!
//! A notification carries PHI. In a job it travels on its own port kind, which only clinical
//! delivery sinks take; each delivery is recorded in the audit as a PHI-disclosure event that
//! names the alert and the patient's pseudonym, never the PHI itself.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One identified notification: the alert event it stands for, and who and where the patient
/// is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClinicalNotification {
    /// Stable id (the alert event's `eventId`): a receiver drops a second delivery by it.
    pub notification_id: String,
    /// The alert (shared by its raised … resolved events).
    pub alert_id: String,
    /// The alert event's type (`clinical.alert.raised`, `.escalated`, `.repeated`,
    /// `.resolved`).
    pub event_type: String,
    /// The job and node that raised it (`vitalflow/JOB/NODE`).
    pub event_source: String,
    /// `news2`, or the name of a rule of the job file.
    pub rule: String,
    /// The alert's level now (`low`, `low-medium`, `medium`, `high`, or `none` once resolved).
    pub level: String,
    /// The level before this event.
    pub previous_level: String,
    /// NEWS2: the aggregate score.
    pub score: Option<u8>,
    /// NEWS2: each parameter's sub-score.
    pub sub_scores: BTreeMap<String, u8>,
    /// A rule: its condition, as written in the job file.
    pub condition: Option<String>,
    /// The ids of the triggering observations.
    pub observations: Vec<String>,
    /// The patient's pseudonym, as the pseudonymous alert event shows it.
    pub patient_pseudonym: String,
    /// The patient: identifiers and location as the source had them.
    pub patient: IdentifiedPatient,
    /// Event time of the triggering reading (not shifted).
    pub event_time: DateTime<Utc>,
    /// Event time the alert was raised at (not shifted).
    pub raised_at: DateTime<Utc>,
    /// When vitalflow emitted the alert event (wall clock).
    pub emitted_at: DateTime<Utc>,
}

/// Who and where the patient is, as the source had it (PHI).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentifiedPatient {
    /// The medical record number.
    pub mrn: String,
    /// Family name.
    pub family_name: Option<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// Ward (point of care).
    pub ward: Option<String>,
    /// Room.
    pub room: Option<String>,
    /// Bed.
    pub bed: Option<String>,
}
