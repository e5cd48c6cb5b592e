//! A laboratory's feed: one `lab_result_available` envelope per result.
//!
//! ```json
//! {"metadata": {"eventType": "lab_result_available", …},
//!  "payload": {"patientId": "P000000123", "resultId": "…", "code": "2823-3",
//!   "display": "Potassium", "value": 4.2, "unit": "mmol/L", "status": "final",
//!   "effectiveAt": "2026-01-01T00:00:07Z"}}
//! ```
//!
//! Result `i` is patient `i % patients` at tick `i / patients`; the analyte rotates through
//! [`LABS`]. About 1 in 50 results is critical (beyond a default critical limit of
//! `docs/laboratory.md`, low or high), the rest within the analyte's reference range. Every
//! value is a pure function of the seed, the patient and the tick.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;
use serde_json::Number;
use vitalflow_model::envelope::Envelope;
use vitalflow_model::ids::uuid_from;

use super::Generator;
use super::physiology::{HashRng, stream};

/// `eventType` of the laboratory results.
pub const LAB_RESULT_AVAILABLE: &str = "lab_result_available";

/// One analyte of the feed: LOINC code, display, UCUM unit, the normal range, and a critical low
/// and high value (`None`: the analyte has no critical low).
pub type Analyte = (
    &'static str,
    &'static str,
    &'static str,
    (f64, f64),
    (Option<f64>, f64),
);

/// The analytes results rotate through.
pub const LABS: [Analyte; 8] = [
    (
        "2823-3",
        "Potassium",
        "mmol/L",
        (3.5, 5.1),
        (Some(2.5), 6.8),
    ),
    (
        "2951-2",
        "Sodium",
        "mmol/L",
        (135.0, 145.0),
        (Some(118.0), 165.0),
    ),
    (
        "2345-7",
        "Glucose",
        "mg/dL",
        (70.0, 110.0),
        (Some(35.0), 520.0),
    ),
    (
        "718-7",
        "Hemoglobin",
        "g/dL",
        (12.0, 17.0),
        (Some(5.9), 21.0),
    ),
    (
        "777-3",
        "Platelets",
        "10*3/uL",
        (150.0, 400.0),
        (Some(20.0), 1200.0),
    ),
    ("10839-9", "Troponin I", "ng/mL", (0.0, 0.04), (None, 1.2)),
    ("2524-7", "Lactate", "mmol/L", (0.5, 2.0), (None, 6.5)),
    ("6301-6", "INR", "{INR}", (0.9, 1.2), (None, 7.5)),
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LabPayload<'a> {
    patient_id: &'a str,
    result_id: String,
    code: &'static str,
    display: &'static str,
    value: Number,
    unit: &'static str,
    status: &'static str,
    effective_at: String,
}

impl Generator {
    /// Result `i` (0-based) as `lab_result_available` envelope JSON, observed at `effective`
    /// (epoch ms; `None`: its simulated time).
    #[must_use]
    pub fn lab_event(&self, i: u64, effective: Option<i64>) -> Vec<u8> {
        let (p, tick) = (i % self.patients, i / self.patients);
        let at = effective
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or_else(|| self.reading_time(p, tick));
        self.with_constants(p, |c| self.lab_event_of(i, p, tick, at, &c.patient_id))
    }

    /// Whether result `i` is critical (beyond a default limit).
    #[must_use]
    pub fn lab_is_critical(&self, i: u64) -> bool {
        let (p, tick) = (i % self.patients, i / self.patients);
        HashRng::new(self.cfg.seed, stream::NOISE, p, tick.wrapping_add(1 << 40)).below(50) == 0
    }

    fn lab_event_of(
        &self,
        i: u64,
        p: u64,
        tick: u64,
        at: DateTime<Utc>,
        patient_id: &str,
    ) -> Vec<u8> {
        let which = usize::try_from((p + tick) % LABS.len() as u64).unwrap_or(0);
        let (code, display, unit, (lo, hi), (crit_low, crit_high)) = LABS[which];
        let mut rng = HashRng::new(self.cfg.seed, stream::NOISE, p, tick.wrapping_add(2 << 40));
        let value = if self.lab_is_critical(i) {
            match crit_low {
                Some(low) if rng.below(2) == 0 => low,
                _ => crit_high,
            }
        } else {
            rng.range(lo, hi)
        };
        // Two decimals, as analysers report.
        let value = (value * 100.0).round() / 100.0;
        let payload = LabPayload {
            patient_id,
            result_id: uuid_from(&[b"lab", &self.seed_bytes, &i.to_le_bytes()]),
            code,
            display,
            value: Number::from_f64(value).unwrap_or_else(|| Number::from(0)),
            unit,
            status: "final",
            effective_at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        let metadata = self.metadata(i, LAB_RESULT_AVAILABLE, at, self.correlation_id(p), None);
        vitalflow_model::json::to_vec(&Envelope { metadata, payload }).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::generator::GeneratorConfig;

    #[test]
    fn results_are_deterministic_and_some_are_critical() {
        let g = Generator::new(GeneratorConfig {
            patients: 100,
            count: 10_000,
            ..GeneratorConfig::default()
        });
        assert_eq!(g.lab_event(5, None), g.lab_event(5, None));
        let critical = (0..10_000).filter(|&i| g.lab_is_critical(i)).count();
        assert!((100..=300).contains(&critical), "{critical}");
        let v: serde_json::Value = serde_json::from_slice(&g.lab_event(7, Some(0))).unwrap();
        assert_eq!(v["metadata"]["eventType"], LAB_RESULT_AVAILABLE);
        assert_eq!(v["payload"]["effectiveAt"], "1970-01-01T00:00:00.000Z");
        assert!(v["payload"]["value"].is_number());
    }
}
