//! De-identification of records of a declared schema: each field marked with a [`Phi`] action
//! in the schema gets that action, with the same key and date policy as clinical records, so a
//! patient id hashed here gets the same pseudonym as in the FHIR output.

use chrono::{Datelike, TimeZone, Utc};
use vitalflow_model::row::{Phi, Row, Schema, Value};

use super::{AnonymizeError, Anonymizer, DatePolicy, DeidReport, zip3_of};

/// What to do with each PHI field of a schema, resolved once per job.
#[derive(Clone, Debug)]
pub struct RowPlan {
    actions: Vec<(usize, Phi, &'static str)>,
    patient: Option<usize>,
}

impl RowPlan {
    /// The plan for rows of `schema`; `patient` is the field whose value identifies the patient
    /// (for date shifts).
    #[must_use]
    pub fn new(schema: &Schema, patient: Option<usize>) -> Self {
        let actions = schema
            .fields
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.phi.map(|p| (i, p, class_of(p))))
            .collect();
        Self { actions, patient }
    }
}

/// The identifier class a field's action is counted under in the de-identification report.
const fn class_of(phi: Phi) -> &'static str {
    match phi {
        Phi::Hash => "identifier",
        Phi::Date => "date",
        Phi::Redact => "redacted-field",
        Phi::Zip3 => "zip",
        Phi::Age => "age",
    }
}

impl Anonymizer {
    /// De-identifies one row in place, counting what was done in `report` (only on success).
    ///
    /// # Errors
    /// [`AnonymizeError::EmptyPatientId`] when dates must be shifted and the row's patient id
    /// is null or empty; [`AnonymizeError::DateOutOfRange`] when the shift overflows.
    pub fn apply_row(
        &self,
        plan: &RowPlan,
        row: &mut Row,
        report: &mut DeidReport,
    ) -> Result<(), AnonymizeError> {
        let mut local = DeidReport::default();
        // The patient's shift, computed from the source id before the id is hashed.
        let shift = match self.dates {
            DatePolicy::Shift { .. } if plan.actions.iter().any(|a| a.1 == Phi::Date) => {
                let id = plan
                    .patient
                    .and_then(|p| row.values.get(p))
                    .and_then(identifier_text);
                match id {
                    Some(id) if !id.trim().is_empty() => self.date_shift(&id),
                    _ => return Err(AnonymizeError::EmptyPatientId { record: "row" }),
                }
            }
            _ => None,
        };
        for &(i, phi, class) in &plan.actions {
            let Some(v) = row.values.get_mut(i) else {
                continue;
            };
            if v.is_null() {
                continue;
            }
            let (new, action) = match (phi, &*v) {
                (Phi::Hash, v) => (
                    identifier_text(v).map_or(Value::Null, |s| Value::str(&self.pseudonym(&s))),
                    "crypto-hash",
                ),
                (Phi::Date, Value::Timestamp(ms)) => (
                    Value::Timestamp(self.instant(*ms, shift)?),
                    if shift.is_some() {
                        "shift"
                    } else {
                        "generalize"
                    },
                ),
                (Phi::Zip3, v) => match identifier_text(v).as_deref().and_then(zip3_of) {
                    Some(z) if self.restricted.contains(&z) => (Value::str("000"), "restrict-000"),
                    Some(z) => (Value::str(&z), "generalize"),
                    None => (Value::Null, "redact"),
                },
                (Phi::Age, Value::Int(a)) if *a > 89 => (Value::Int(90), "generalize"),
                (Phi::Age, Value::Float(a)) if *a > 89.0 => (Value::Float(90.0), "generalize"),
                (Phi::Age, _) => continue,
                (Phi::Redact | Phi::Date, _) => (Value::Null, "redact"),
            };
            *v = new;
            local.record(class, action);
        }
        report.merge(&local);
        Ok(())
    }
}

impl Anonymizer {
    /// A patient's date shift in days, from the source patient id; `None` when the policy
    /// generalizes dates to their year.
    #[must_use]
    pub fn date_shift(&self, source_patient_id: &str) -> Option<i64> {
        match self.dates {
            DatePolicy::Shift { max_days } => Some(self.shift_days(source_patient_id, max_days)),
            DatePolicy::Year => None,
        }
    }

    /// An instant of a patient (ms) as the date policy makes it: moved by the patient's
    /// `shift` ([`Self::date_shift`]), or, without one, January 1st of its year.
    ///
    /// # Errors
    /// [`AnonymizeError::DateOutOfRange`] when the result is not representable.
    pub fn instant(&self, ms: i64, shift: Option<i64>) -> Result<i64, AnonymizeError> {
        match shift {
            Some(days) => days
                .checked_mul(86_400_000)
                .and_then(|d| ms.checked_add(d))
                .ok_or(AnonymizeError::DateOutOfRange { field: "timestamp" }),
            None => year_start(ms),
        }
    }
}

/// A value as the text an identifier is hashed from (strings as they are, integers in decimal;
/// other types are not identifiers).
#[must_use]
pub fn identifier_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// January 1st, 00:00 UTC of the instant's year.
fn year_start(ms: i64) -> Result<i64, AnonymizeError> {
    chrono::DateTime::from_timestamp_millis(ms)
        .and_then(|t| Utc.with_ymd_and_hms(t.year(), 1, 1, 0, 0, 0).single())
        .map(|t| t.timestamp_millis())
        .ok_or(AnonymizeError::DateOutOfRange { field: "timestamp" })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vitalflow_model::row::{Field, Type};

    use super::*;
    use crate::anonymize::{AnonymizeConfig, PseudonymKey};

    fn schema() -> Schema {
        let f = |name: &str, ty, phi| Field {
            name: name.into(),
            ty,
            nullable: true,
            phi,
        };
        Schema {
            fields: vec![
                f("patient_id", Type::String, Some(Phi::Hash)),
                f("ts", Type::Timestamp, Some(Phi::Date)),
                f("hr", Type::Int, None),
                f("zip", Type::String, Some(Phi::Zip3)),
                f("age", Type::Int, Some(Phi::Age)),
                f("note", Type::String, Some(Phi::Redact)),
            ],
            time: Some(1),
            key: Some(0),
        }
    }

    fn anonymizer(dates: DatePolicy) -> Anonymizer {
        Anonymizer::new(AnonymizeConfig {
            key: PseudonymKey::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap(),
            dates,
            restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
            policy: super::super::Policy::default(),
        })
    }

    fn row(id: &str, zip: &str, age: i64) -> Row {
        Row {
            values: vec![
                Value::str(id),
                Value::Timestamp(1_767_225_600_000),
                Value::Int(88),
                Value::str(zip),
                Value::Int(age),
                Value::str("Called Mrs Smith at home"),
            ],
            sequence: 0,
            tombstone: false,
            arrival_us: 0,
        }
    }

    #[test]
    fn every_action_applies_and_is_counted() {
        let a = anonymizer(DatePolicy::Shift { max_days: 365 });
        let s = schema();
        let plan = RowPlan::new(&s, Some(0));
        let mut r = row("P000123", "02139", 93);
        let mut report = DeidReport::default();
        a.apply_row(&plan, &mut r, &mut report).unwrap();
        assert_eq!(r.values[0], Value::str(&a.pseudonym("P000123")));
        let days = a.shift_days("P000123", 365);
        assert_eq!(
            r.values[1],
            Value::Timestamp(1_767_225_600_000 + days * 86_400_000)
        );
        assert_eq!(r.values[2], Value::Int(88), "non-PHI fields are kept");
        assert_eq!(r.values[3], Value::str("021"));
        assert_eq!(r.values[4], Value::Int(90));
        assert_eq!(r.values[5], Value::Null);
        for (class, action) in [
            ("identifier", "crypto-hash"),
            ("date", "shift"),
            ("zip", "generalize"),
            ("age", "generalize"),
            ("redacted-field", "redact"),
        ] {
            assert_eq!(report.count(class, action), 1, "{class}:{action}");
        }
    }

    #[test]
    fn pseudonyms_match_the_clinical_path_and_restricted_zip3_is_000() {
        let a = anonymizer(DatePolicy::Year);
        let s = schema();
        let mut r = row("P7", "03601", 40);
        a.apply_row(
            &RowPlan::new(&s, Some(0)),
            &mut r,
            &mut DeidReport::default(),
        )
        .unwrap();
        assert_eq!(r.values[0], Value::str(&a.pseudonym("P7")));
        assert_eq!(
            r.values[1],
            Value::Timestamp(1_767_225_600_000),
            "2026-01-01 stays"
        );
        assert_eq!(r.values[3], Value::str("000"));
        assert_eq!(r.values[4], Value::Int(40));
    }

    #[test]
    fn a_row_without_patient_id_is_rejected_when_dates_shift() {
        let a = anonymizer(DatePolicy::Shift { max_days: 30 });
        let s = schema();
        let mut r = row("  ", "02139", 40);
        let err = a
            .apply_row(
                &RowPlan::new(&s, Some(0)),
                &mut r,
                &mut DeidReport::default(),
            )
            .unwrap_err();
        assert_eq!(err, AnonymizeError::EmptyPatientId { record: "row" });
    }
}
