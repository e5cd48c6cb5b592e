//! Anonymization: HIPAA Safe Harbor de-identification of clinical records.
//!
//! [`Anonymizer::apply`] turns an [`Ingested`] clinical record into a [`DeidRecord`]:
//!
//! * the source patient id becomes a keyed pseudonym ([`Anonymizer::pseudonym`]);
//! * each identifier class gets the action of the [`Policy`]; by default (Safe Harbor): names,
//!   street, city and county, telecom (phone, fax, email, URL, IP), every identifying number
//!   (SSN, MRN, health plan, account, licence, vehicle, device, biometric, other) and photos are
//!   removed; free text is dropped (or scrubbed, [`scrub`]); relatives' and other contacts'
//!   identifiers are always removed;
//! * the birth date becomes the birth year, or nothing with the age group `90 or older` for
//!   patients older than 89 at `recorded_at` (or at death, if later); the date of death likewise;
//! * the ZIP code becomes its first three digits, `000` for the sparsely populated ZIP3s of
//!   [`AnonymizeConfig::restricted_zip3`]; state and country are kept;
//! * every other date tied to the patient (measurement times, encounter periods, `recorded_at`)
//!   follows the [`DatePolicy`]: a per-patient shift by whole days, or the year only;
//! * measurement, encounter and visit ids become keyed hashes that do not reveal the source id.
//!
//! Records of a declared schema are de-identified field by field with
//! [`Anonymizer::apply_row`]: each field marked PHI in the schema gets its action (keyed hash,
//! date policy, redaction, ZIP3, age over 89), with the same key and policy.
//!
//! Every action is counted in a [`DeidReport`].

mod key;
mod policy;
mod report;
mod rows;
pub mod scrub;

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc};
use thiserror::Error;
use vitalflow_model::clinical::{
    Address, ClinicalRecord, EncounterRecord, IdClass, Ingested, LabRecord, PatientRecord,
    VitalRecord,
};
use vitalflow_model::deid::{
    AGE_90_OR_OLDER, DeidEncounter, DeidIdentifier, DeidLab, DeidPatient, DeidRecord, DeidVital,
    KeptPhi,
};
use vitalflow_model::ids::hex;
use vitalflow_model::lab::LabValue;

pub use self::key::{KeyError, PseudonymKey};
pub use self::policy::{Action, PhiClass, Policy, PolicyError};
pub use self::report::DeidReport;
pub use self::rows::{RowPlan, identifier_text};
use crate::ingest::DECEASED_DATE_UNKNOWN;

/// What happens to the dates tied to a patient (other than birth and death, which keep only
/// their year).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePolicy {
    /// Shift every date of a patient by the same number of whole days, 1 to `max_days` earlier
    /// or later (never 0), derived from the key and the patient id. Intervals between a
    /// patient's measurements are preserved.
    Shift {
        /// The largest shift, in days.
        max_days: u32,
    },
    /// Keep only the year: every date becomes January 1st, 00:00:00 UTC of its year.
    Year,
}

/// The anonymizer's configuration.
#[derive(Clone, Debug)]
pub struct AnonymizeConfig {
    /// The pseudonymization key.
    pub key: PseudonymKey,
    /// The date policy.
    pub dates: DatePolicy,
    /// ZIP3s reported as `000` (see [`Self::default_restricted_zip3`]).
    pub restricted_zip3: Vec<String>,
    /// The action of every identifier class.
    pub policy: Policy,
}

impl AnonymizeConfig {
    /// The 3-digit ZIP codes whose population is 20,000 or fewer (2010 census), which Safe
    /// Harbor requires to be reported as `000`.
    #[must_use]
    pub fn default_restricted_zip3() -> Vec<String> {
        [
            "036", "059", "102", "202", "203", "204", "205", "369", "556", "692", "753", "772",
            "821", "823", "878", "879", "884", "893",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    }
}

/// A record that cannot be anonymized. Messages never contain PHI.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AnonymizeError {
    /// The record has no patient id to pseudonymize.
    #[error("{record} record: patient id is empty")]
    EmptyPatientId {
        /// `patient` or `vital`.
        record: &'static str,
    },
    /// A date falls outside the representable range once the date policy is applied.
    #[error("{field}: date out of range once the date policy is applied")]
    DateOutOfRange {
        /// The field.
        field: &'static str,
    },
}

/// Applies Safe Harbor de-identification with a key and a date policy.
#[derive(Clone, Debug)]
pub struct Anonymizer {
    key: PseudonymKey,
    dates: DatePolicy,
    restricted: BTreeSet<String>,
    policy: Policy,
}

impl Anonymizer {
    /// An anonymizer with `cfg`.
    #[must_use]
    pub fn new(cfg: AnonymizeConfig) -> Self {
        Self {
            key: cfg.key,
            dates: cfg.dates,
            restricted: cfg
                .restricted_zip3
                .into_iter()
                .map(|z| z.trim().to_owned())
                .collect(),
            policy: cfg.policy,
        }
    }

    /// The pseudonym of a source patient id: the first 32 hex digits of
    /// HMAC-SHA256(key, `"patient\0"` + id).
    #[must_use]
    pub fn pseudonym(&self, source_patient_id: &str) -> String {
        let mac = self.key.mac(&[b"patient\0", source_patient_id.as_bytes()]);
        hex(&mac[..16])
    }

    /// The date shift of a patient under [`DatePolicy::Shift`]: whole days in
    /// `[-max_days, -1]` or `[1, max_days]`, never 0 (a patient shifted by 0 would keep its
    /// true dates), from HMAC-SHA256(key, `"shift\0"` + id): its first 8 bytes, little-endian,
    /// modulo `2 × max_days`. A `max_days` of 0 counts as 1.
    #[must_use]
    pub fn shift_days(&self, source_patient_id: &str, max_days: u32) -> i64 {
        let mac = self.key.mac(&[b"shift\0", source_patient_id.as_bytes()]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&mac[..8]);
        let max = i64::from(max_days.max(1));
        let span = 2 * u64::from(max_days.max(1));
        // r < span <= 2^33: the conversion is exact.
        let r = i64::try_from(u64::from_le_bytes(first) % span).unwrap_or(0);
        // 0 .. max-1 → -max .. -1; max .. 2max-1 → 1 .. max.
        if r < max { r - max } else { r - max + 1 }
    }

    /// De-identifies one record, counting what was done in `report` (only on success).
    ///
    /// # Errors
    /// [`AnonymizeError::EmptyPatientId`] for a record without patient id,
    /// [`AnonymizeError::DateOutOfRange`] when the date policy overflows.
    pub fn apply(
        &self,
        rec: &Ingested,
        report: &mut DeidReport,
    ) -> Result<DeidRecord, AnonymizeError> {
        let mut local = DeidReport::default();
        let out = match &rec.record {
            ClinicalRecord::Patient(p) => self.patient(p, &mut local).map(DeidRecord::Patient),
            ClinicalRecord::Vital(v) => self.vital(v, &mut local).map(DeidRecord::Vital),
            ClinicalRecord::Encounter(e) => {
                self.encounter(e, &mut local).map(DeidRecord::Encounter)
            }
            ClinicalRecord::Lab(l) => self
                .lab(l, &mut local)
                .map(|l| DeidRecord::Lab(Box::new(l))),
        }?;
        report.merge(&local);
        Ok(out)
    }

    fn patient(
        &self,
        p: &PatientRecord,
        r: &mut DeidReport,
    ) -> Result<DeidPatient, AnonymizeError> {
        if p.patient_id.trim().is_empty() {
            return Err(AnonymizeError::EmptyPatientId { record: "patient" });
        }
        let pol = &self.policy;
        let pseudonym = self.pseudonym(&p.patient_id);
        r.record("patient-id", "crypto-hash");
        let mut kept = KeptPhi::default();

        let names = count(p.given.len()) + u64::from(p.family.is_some());
        match pol.action(PhiClass::Name) {
            Action::Keep if names > 0 => {
                kept.names.push((p.family.clone(), p.given.clone()));
                r.add("name", "keep", names);
            }
            _ => r.add("name", "redact", names),
        }

        let mut identifiers = Vec::new();
        let all_ids = p
            .mrn
            .iter()
            .map(|v| (IdClass::Mrn, v))
            .chain(p.ssn.iter().map(|v| (IdClass::Ssn, v)))
            .chain(p.identifiers.iter().map(|i| (i.class, &i.value)));
        for (class, value) in all_ids {
            identifiers.extend(self.identifier(class, value, r));
        }

        let telecom = [
            (PhiClass::Phone, "phone", &p.phones),
            (PhiClass::Fax, "fax", &p.faxes),
            (PhiClass::Email, "email", &p.emails),
            (PhiClass::Url, "url", &p.urls),
            (PhiClass::Ip, "other", &p.ip_addresses),
        ];
        for (class, system, values) in telecom {
            match pol.action(class) {
                Action::Keep => {
                    kept.telecom
                        .extend(values.iter().map(|v| (system.to_owned(), v.clone())));
                    r.add(class.as_str(), "keep", count(values.len()));
                }
                _ => r.add(class.as_str(), "redact", count(values.len())),
            }
        }
        r.add("photo", "redact", u64::from(p.photos));
        r.add("free-text", "drop", count(p.notes.len()));

        // Age at the latest date the record speaks for.
        let death = p.deceased.filter(|d| *d != DECEASED_DATE_UNKNOWN);
        let reference = death.map_or(p.recorded_at.date_naive(), |d| {
            d.max(p.recorded_at.date_naive())
        });
        let over_89 = p.birth_date.is_some_and(|b| age_at(b, reference) > 89);
        let birth_action = pol.action(PhiClass::BirthDate);
        let (birth_year, age_group) = match p.birth_date {
            Some(b) if birth_action == Action::Keep => {
                r.record("birth-date", "keep");
                kept.birth_date = Some(b);
                (Some(b.year()), None)
            }
            Some(_) if over_89 => {
                r.record("age-over-89", "generalize");
                r.record("birth-date", "redact");
                (None, Some(AGE_90_OR_OLDER.to_owned()))
            }
            Some(_) if birth_action == Action::Redact => {
                r.record("birth-date", "redact");
                (None, None)
            }
            Some(b) => {
                r.record("birth-date", "generalize");
                (Some(b.year()), None)
            }
            None => (None, None),
        };
        let deceased_year = match death {
            Some(_) if over_89 => {
                r.record("death-date", "redact");
                None
            }
            Some(d) => {
                r.record("death-date", "generalize");
                Some(d.year())
            }
            None => None,
        };

        let (mut state, mut zip3, mut country) = (None, None, None);
        if let Some(a) = p.addresses.first() {
            state = a.state.clone();
            country = a.country.clone();
            let parts = count(a.lines.len())
                + u64::from(a.city.is_some())
                + u64::from(a.district.is_some());
            if pol.action(PhiClass::Address) == Action::Keep {
                kept.lines.clone_from(&a.lines);
                kept.city.clone_from(&a.city);
                kept.district.clone_from(&a.district);
                r.add("address", "keep", parts);
            } else {
                r.add("address", "redact", parts);
            }
            if let Some(zip) = &a.postal_code {
                match pol.action(PhiClass::Zip) {
                    Action::Keep => {
                        r.record("zip", "keep");
                        kept.postal_code = Some(zip.clone());
                    }
                    Action::Redact => r.record("zip", "redact"),
                    _ => {
                        zip3 = zip3_of(zip);
                        match &zip3 {
                            None => r.record("zip", "redact"),
                            Some(z) if self.restricted.contains(z) => {
                                r.record("zip", "restrict-000");
                                zip3 = Some("000".to_owned());
                            }
                            Some(_) => r.record("zip", "generalize"),
                        }
                    }
                }
            }
        }
        for a in p.addresses.iter().skip(1) {
            r.add("address", "redact", address_parts(a));
            r.add("zip", "redact", u64::from(a.postal_code.is_some()));
        }
        for c in &p.contacts {
            r.add("name", "redact", count(c.names.len()));
            r.add("phone", "redact", count(c.telecom.len()));
            for a in &c.addresses {
                r.add("address", "redact", address_parts(a));
                r.add("zip", "redact", u64::from(a.postal_code.is_some()));
            }
        }

        Ok(DeidPatient {
            pseudonym,
            birth_year,
            age_group,
            deceased_year,
            deceased: p.deceased.is_some(),
            gender: p.gender,
            state,
            zip3,
            country,
            recorded_at: self.date(&p.patient_id, p.recorded_at, "recorded_at", r)?,
            identifiers,
            kept,
        })
    }

    /// An identifier after its class's action (`None`: redacted), counted in `r`.
    fn identifier(
        &self,
        class: IdClass,
        value: &str,
        r: &mut DeidReport,
    ) -> Option<DeidIdentifier> {
        let action = self.policy.action(PhiClass::Id(class));
        r.record(class.as_str(), action.as_str());
        match action {
            Action::CryptoHash => {
                let mac =
                    self.key
                        .mac(&[b"id\0", class.as_str().as_bytes(), b"\0", value.as_bytes()]);
                Some(DeidIdentifier {
                    class,
                    value: hex(&mac[..16]),
                    hashed: true,
                })
            }
            Action::Keep => Some(DeidIdentifier {
                class,
                value: value.to_owned(),
                hashed: false,
            }),
            _ => None,
        }
    }

    fn vital(&self, v: &VitalRecord, r: &mut DeidReport) -> Result<DeidVital, AnonymizeError> {
        if v.patient_id.trim().is_empty() {
            return Err(AnonymizeError::EmptyPatientId { record: "vital" });
        }
        let pseudonym = self.pseudonym(&v.patient_id);
        r.record("patient-id", "crypto-hash");
        let identity = match &v.source_id {
            Some(id) => {
                r.record("measurement-id", "crypto-hash");
                id.clone()
            }
            None => v.effective.to_rfc3339(),
        };
        let mac = self.key.mac(&[
            b"obs\0",
            v.patient_id.as_bytes(),
            b"\0",
            v.kind.as_str().as_bytes(),
            b"\0",
            identity.as_bytes(),
        ]);
        let device = v
            .device
            .as_deref()
            .and_then(|d| self.identifier(IdClass::Device, d, r));
        let notes = self.notes(&v.notes, &v.mentioned, r);
        Ok(DeidVital {
            id: hex(&mac[..16]),
            pseudonym,
            kind: v.kind,
            value: v.value,
            effective: self.date(&v.patient_id, v.effective, "effective", r)?,
            device,
            notes,
        })
    }

    /// Free-text notes after the free-text action: scrubbed, or dropped.
    fn notes(&self, notes: &[String], mentioned: &[String], r: &mut DeidReport) -> Vec<String> {
        match self.policy.action(PhiClass::FreeText) {
            Action::Scrub => notes
                .iter()
                .map(|n| {
                    let (text, replaced) = scrub::scrub(n, mentioned);
                    r.record("free-text", "scrub");
                    r.add("free-text-identifier", "redact", replaced);
                    text
                })
                .collect(),
            _ => {
                r.add("free-text", "drop", count(notes.len()));
                Vec::new()
            }
        }
    }

    /// A laboratory result: the id is a keyed hash of the source's identity of the result (a
    /// correction keeps the id of what it corrects); a text value is free text, scrubbed or
    /// dropped as notes are.
    fn lab(&self, l: &LabRecord, r: &mut DeidReport) -> Result<DeidLab, AnonymizeError> {
        if l.patient_id.trim().is_empty() {
            return Err(AnonymizeError::EmptyPatientId { record: "lab" });
        }
        let pseudonym = self.pseudonym(&l.patient_id);
        r.record("patient-id", "crypto-hash");
        let identity = match &l.source_id {
            Some(id) => {
                r.record("result-id", "crypto-hash");
                id.clone()
            }
            None => l.effective.to_rfc3339(),
        };
        let mac = self.key.mac(&[
            b"lab\0",
            l.patient_id.as_bytes(),
            b"\0",
            l.code.as_bytes(),
            b"\0",
            identity.as_bytes(),
        ]);
        let (value, value_masked) = match &l.value {
            LabValue::Text(text) => match self.policy.action(PhiClass::FreeText) {
                Action::Scrub => {
                    let (text, replaced) = scrub::scrub(text, &l.mentioned);
                    r.record("free-text", "scrub");
                    r.add("free-text-identifier", "redact", replaced);
                    (LabValue::Text(text), false)
                }
                _ => {
                    r.record("free-text", "drop");
                    (LabValue::Absent, true)
                }
            },
            other => (other.clone(), false),
        };
        let notes = self.notes(&l.notes, &l.mentioned, r);
        Ok(DeidLab {
            id: hex(&mac[..16]),
            pseudonym,
            code: l.code.clone(),
            display: l.display.clone(),
            value,
            value_masked,
            reference_range: l.reference_range.clone(),
            interpretation: l.interpretation.clone(),
            status: l.status,
            effective: self.date(&l.patient_id, l.effective, "effective", r)?,
            issued: l
                .issued
                .map(|t| self.date(&l.patient_id, t, "issued", r))
                .transpose()?,
            notes,
        })
    }

    fn encounter(
        &self,
        e: &EncounterRecord,
        r: &mut DeidReport,
    ) -> Result<DeidEncounter, AnonymizeError> {
        if e.patient_id.trim().is_empty() {
            return Err(AnonymizeError::EmptyPatientId {
                record: "encounter",
            });
        }
        let pseudonym = self.pseudonym(&e.patient_id);
        r.record("patient-id", "crypto-hash");
        let identity = match (&e.source_id, e.start) {
            (Some(visit), _) => {
                r.record("visit-number", "crypto-hash");
                visit.clone()
            }
            (None, Some(start)) => start.to_rfc3339(),
            (None, None) => e.recorded_at.to_rfc3339(),
        };
        let mac = self.key.mac(&[
            b"encounter\0",
            e.patient_id.as_bytes(),
            b"\0",
            identity.as_bytes(),
        ]);
        let date = |t: Option<DateTime<Utc>>, field, r: &mut DeidReport| {
            t.map(|t| self.date(&e.patient_id, t, field, r)).transpose()
        };
        Ok(DeidEncounter {
            id: hex(&mac[..16]),
            pseudonym,
            event: e.event,
            class: e.class.clone(),
            start: date(e.start, "start", r)?,
            end: date(e.end, "end", r)?,
            ward: e.ward.clone(),
            recorded_at: self.date(&e.patient_id, e.recorded_at, "recorded_at", r)?,
        })
    }

    /// Applies the date policy to a date-time of patient `patient_id`.
    fn date(
        &self,
        patient_id: &str,
        t: DateTime<Utc>,
        field: &'static str,
        r: &mut DeidReport,
    ) -> Result<DateTime<Utc>, AnonymizeError> {
        let out = match self.dates {
            DatePolicy::Shift { max_days } => {
                r.record("date", "shift");
                TimeDelta::try_days(self.shift_days(patient_id, max_days))
                    .and_then(|d| t.checked_add_signed(d))
            }
            DatePolicy::Year => {
                r.record("date", "generalize");
                Utc.with_ymd_and_hms(t.year(), 1, 1, 0, 0, 0).single()
            }
        };
        out.ok_or(AnonymizeError::DateOutOfRange { field })
    }
}

/// Completed years between `birth` and `at`.
fn age_at(birth: NaiveDate, at: NaiveDate) -> i32 {
    let mut age = at.year() - birth.year();
    if (at.month(), at.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

/// The first three digits of a 5- or 9-digit US ZIP code (`12345`, `123456789`, `12345-6789`).
fn zip3_of(zip: &str) -> Option<String> {
    let zip = zip.trim();
    let digits: String = zip.chars().filter(|c| *c != '-').collect();
    let dashes_ok = match zip.find('-') {
        None => true,
        Some(at) => at == 5 && zip.len() == 10,
    };
    let ok = dashes_ok
        && (digits.len() == 5 || digits.len() == 9)
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| digits[..3].to_owned())
}

/// Street lines, city and county of an address.
fn address_parts(a: &Address) -> u64 {
    count(a.lines.len()) + u64::from(a.city.is_some()) + u64::from(a.district.is_some())
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests;
