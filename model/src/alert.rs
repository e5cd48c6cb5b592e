//! Alert events: what the `alert` operator publishes when a patient's alert is raised,
//! escalated, repeated or resolved, in the platform envelope.
//!
//! An alert event holds no PHI: the patient is the keyed pseudonym every other output uses,
//! and event times are moved by the patient's date shift (the same one the `anonymize` stage
//! applies). The emission time is the wall clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::EventMetadata;

/// One alert event: envelope metadata and the alert.
///
/// `metadata.correlationId` is the alert's id (every event of one alert shares it);
/// `metadata.causationId` is the first triggering observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Envelope metadata; `eventType` is `clinical.alert.raised`, `.escalated`, `.repeated` or
    /// `.resolved`; for a critical laboratory value, `critical_value_detected` (raised or
    /// repeated) and `clinical.alert.resolved`.
    pub metadata: EventMetadata,
    /// The alert.
    pub payload: AlertPayload,
}

/// What an alert event says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct AlertPayload {
    /// The alert (shared by its raised … resolved events).
    pub alert_id: String,
    /// `news2`, or the name of a rule of the job file.
    pub rule: String,
    /// The patient's pseudonym.
    pub patient: String,
    /// The ward the patient was in at the reading, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// The alert's level now: `low`, `low-medium`, `medium`, `high`, or `none` once resolved.
    pub level: String,
    /// The level before this event (`none` when raised).
    pub previous_level: String,
    /// NEWS2: the aggregate score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// NEWS2: each parameter's sub-score (parameters that did not count are absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sub_scores: BTreeMap<String, u8>,
    /// NEWS2: the SpO2 scale used (1 or 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spo2_scale: Option<u8>,
    /// NEWS2: parameters never read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// NEWS2: parameters whose latest reading is older than the freshness window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
    /// A rule: its condition, as written in the job file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The ids of the observations that triggered the event (the readings the score or the
    /// rule used).
    pub observations: Vec<String>,
    /// Event time of the triggering reading (date-shifted).
    pub event_time: DateTime<Utc>,
    /// Event time the alert was raised at (date-shifted).
    pub raised_at: DateTime<Utc>,
    /// When vitalflow emitted the event (wall clock).
    pub emitted_at: DateTime<Utc>,
    /// Emission minus the triggering reading's arrival, in milliseconds (when the arrival is
    /// known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// A critical laboratory value: the analyte (`potassium`, `sodium`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// A critical laboratory value: the result's value, in `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// A critical laboratory value: the result's unit (UCUM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// A critical laboratory value: the critical limit the value is at or beyond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// A critical laboratory value: `low` (at or below the low limit) or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// A critical laboratory value: `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// A critical laboratory value: when vitalflow detected it (wall clock, as `emittedAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<DateTime<Utc>>,
}

// JSON leaves the fields that do not apply out; binary formats write every field.
crate::wire::every_field!(AlertPayload {
    alert_id,
    rule,
    patient,
    ward,
    level,
    previous_level,
    score,
    sub_scores,
    spo2_scale,
    missing,
    stale,
    condition,
    observations,
    event_time,
    raised_at,
    emitted_at,
    latency_ms,
    parameter,
    value,
    unit,
    threshold,
    direction,
    severity,
    detected_at
});

impl AlertEvent {
    /// A one-line, human-readable summary (the live console output).
    #[must_use]
    pub fn line(&self) -> String {
        let p = &self.payload;
        let what = self
            .metadata
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let mut line = format!(
            "{} {what:<9} {:<10} {:<11} patient {}",
            p.event_time.format("%Y-%m-%dT%H:%M:%SZ"),
            p.level,
            p.rule,
            &p.patient[..p.patient.len().min(12)],
        );
        if let Some(w) = &p.ward {
            line.push_str(&format!(" ward {w}"));
        }
        if let Some(s) = p.score {
            line.push_str(&format!(" NEWS2 {s}"));
            if !p.sub_scores.is_empty() {
                let subs: Vec<String> = p
                    .sub_scores
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                if !subs.is_empty() {
                    line.push_str(&format!(" ({})", subs.join(", ")));
                }
            }
        }
        if let Some(c) = &p.condition {
            line.push_str(&format!(" [{c}]"));
        }
        if let (Some(param), Some(v), Some(t)) = (&p.parameter, p.value, p.threshold) {
            let unit = p.unit.as_deref().unwrap_or_default();
            line.push_str(&format!(" {param} {v} {unit} (limit {t})"));
        }
        if !p.missing.is_empty() {
            line.push_str(&format!(" missing: {}", p.missing.join(", ")));
        }
        if !p.stale.is_empty() {
            line.push_str(&format!(" stale: {}", p.stale.join(", ")));
        }
        if let Some(ms) = p.latency_ms {
            line.push_str(&format!(" +{ms:.1} ms"));
        }
        line
    }
}
