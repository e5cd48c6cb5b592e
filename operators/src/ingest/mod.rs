//! Ingestion: raw bytes to [`Ingested`] clinical records.
//!
//! [`ingest`] parses one [`RawRecord`] according to its [`RawFormat`]:
//!
//! * [`RawFormat::Envelope`]: one platform event envelope, see [`envelope`] for the payloads;
//! * [`RawFormat::Fhir`]: one FHIR R4 JSON document (a Bundle or a single resource), see [`fhir`];
//! * [`RawFormat::VitalsCsv`]: one CSV row of vital-sign numerics, see [`vitals_csv`];
//! * [`RawFormat::Hl7v2`]: one HL7 v2.x message (ADT and ORU), see [`hl7v2`];
//! * [`RawFormat::Unknown`]: dead-lettered with a reason.
//!
//! Every part of the input that cannot be used becomes one [`DeadLetter`] whose reason names the
//! field at fault but never echoes a value from the input (the reasons are logged and counted;
//! values may be PHI).

pub mod envelope;
pub mod fhir;
pub mod hl7v2;
mod json;
mod time;
pub mod vitals_csv;

use std::collections::HashMap;

use chrono::NaiveDate;
use vitalflow_model::clinical::{Address, ClinicalRecord, Ingested, PatientRecord};
use vitalflow_model::vitals::UnitError;
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};

pub use self::hl7v2::CodeTarget;

/// The date of death ingestion records for a patient known to be deceased without a known date
/// (FHIR `deceasedBoolean: true`).
///
/// [`vitalflow_model::clinical::PatientRecord::deceased`] can only hold a date; anonymization
/// recognises this sentinel and reports the patient as deceased without a year.
pub const DECEASED_DATE_UNKNOWN: NaiveDate = NaiveDate::MIN;

/// The ingest node's settings.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Local observation codes (HL7 v2 OBX-3), keyed `SYSTEM^CODE` or `CODE` (any system), and
    /// what they stand for.
    pub codes: HashMap<String, CodeTarget>,
    /// Local unit spellings (HL7 v2 OBX-6) and the UCUM unit each stands for.
    pub units: HashMap<String, String>,
}

/// Parses one raw record with the default [`IngestOptions`]; see [`ingest_with`].
pub fn ingest(raw: &RawRecord, stage: &str, ok: &mut Vec<Ingested>, dead: &mut Vec<DeadLetter>) {
    ingest_with(raw, stage, &IngestOptions::default(), ok, dead);
}

/// Parses one raw record.
///
/// Good records are pushed to `ok`, with `sequence = (raw.sequence, index within the raw
/// record)`. Every part that cannot be used is pushed to `dead`: one [`DeadLetter`] per rejected
/// part, with `stage`, the raw record's source, location and format, a reason naming the field,
/// and the bytes of the rejected part (the whole raw bytes, or one Bundle entry's resource JSON).
///
/// Never panics, whatever the bytes.
pub fn ingest_with(
    raw: &RawRecord,
    stage: &str,
    opts: &IngestOptions,
    ok: &mut Vec<Ingested>,
    dead: &mut Vec<DeadLetter>,
) {
    let mut sink = Sink {
        raw,
        stage,
        ok,
        dead,
    };
    match raw.format {
        RawFormat::Envelope => envelope::parse(&mut sink),
        RawFormat::Fhir => fhir::parse(&mut sink),
        RawFormat::VitalsCsv => vitals_csv::parse(&mut sink),
        RawFormat::Hl7v2 => hl7v2::parse(&mut sink, opts),
        RawFormat::Json | RawFormat::Csv => sink.reject_raw(
            "records of a declared schema are decoded by their source, not by ingestion",
        ),
        RawFormat::Unknown => sink.reject_raw("unrecognised input format"),
    }
}

/// Where the parsers put their output for one raw record.
pub(crate) struct Sink<'a> {
    raw: &'a RawRecord,
    stage: &'a str,
    ok: &'a mut Vec<Ingested>,
    dead: &'a mut Vec<DeadLetter>,
}

impl Sink<'_> {
    /// The raw record being parsed.
    pub(crate) const fn raw(&self) -> &RawRecord {
        self.raw
    }

    /// Emits a parsed record, `index` being its position within the raw record.
    pub(crate) fn accept(&mut self, index: u32, record: ClinicalRecord) {
        self.ok.push(Ingested {
            source: self.raw.source.clone(),
            location: self.raw.location.clone(),
            sequence: (self.raw.sequence, index),
            record,
            arrival_us: self.raw.arrival_us,
        });
    }

    /// Dead-letters a part of the raw record.
    pub(crate) fn reject(&mut self, reason: impl Into<String>, bytes: Vec<u8>) {
        self.dead.push(DeadLetter {
            stage: self.stage.to_owned(),
            source: self.raw.source.clone(),
            location: self.raw.location.clone(),
            format: self.raw.format,
            reason: reason.into(),
            bytes,
        });
    }

    /// Lists the identifying values of the Patient records accepted since `first` in the
    /// `mentioned` of the Vital and Lab records with free text accepted since then (one message or Bundle speaks of one
    /// patient: the free-text scrubber removes these values from the notes).
    pub(crate) fn mention_patients(&mut self, first: usize) {
        let added = self.ok.get(first..).unwrap_or_default();
        let values: Vec<String> = added
            .iter()
            .filter_map(|i| match &i.record {
                ClinicalRecord::Patient(p) => Some(identifying_values(p)),
                _ => None,
            })
            .flatten()
            .collect();
        if values.is_empty() {
            return;
        }
        for i in self.ok.get_mut(first..).unwrap_or_default() {
            match &mut i.record {
                ClinicalRecord::Vital(v) if !v.notes.is_empty() => {
                    v.mentioned.extend(values.iter().cloned());
                }
                ClinicalRecord::Lab(l)
                    if !l.notes.is_empty()
                        || matches!(l.value, vitalflow_model::lab::LabValue::Text(_)) =>
                {
                    l.mentioned.extend(values.iter().cloned());
                }
                _ => {}
            }
        }
    }

    /// Dead-letters the whole raw record.
    pub(crate) fn reject_raw(&mut self, reason: impl Into<String>) {
        let bytes = self.raw.bytes.clone();
        self.reject(reason, bytes);
    }
}

/// Phone numbers, emails, faxes and URLs of a patient or contact, as a parser files them.
#[derive(Default)]
pub(crate) struct Telecom {
    pub(crate) phones: Vec<String>,
    pub(crate) emails: Vec<String>,
    pub(crate) faxes: Vec<String>,
    pub(crate) urls: Vec<String>,
}

impl Telecom {
    /// Every value, for a contact (whose telecom is one list).
    pub(crate) fn all(self) -> Vec<String> {
        [self.phones, self.emails, self.faxes, self.urls].concat()
    }
}

/// The identifying values of a patient record that free text may repeat: names, identifiers,
/// street lines, city, telecom, and those of its contacts.
#[must_use]
pub fn identifying_values(p: &PatientRecord) -> Vec<String> {
    let address = |a: &Address| {
        a.lines
            .iter()
            .chain(&a.city)
            .chain(&a.district)
            .chain(&a.postal_code)
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut out: Vec<String> = std::iter::once(&p.patient_id)
        .chain(&p.mrn)
        .chain(&p.ssn)
        .chain(p.identifiers.iter().map(|i| &i.value))
        .chain(&p.given)
        .chain(&p.family)
        .chain(&p.phones)
        .chain(&p.emails)
        .chain(&p.faxes)
        .chain(&p.urls)
        .chain(&p.ip_addresses)
        .cloned()
        .collect();
    out.extend(p.addresses.iter().flat_map(address));
    for c in &p.contacts {
        out.extend(c.names.iter().chain(&c.telecom).cloned());
        out.extend(c.addresses.iter().flat_map(address));
    }
    out.retain(|v| !v.trim().is_empty());
    out
}

/// `s` if it looks like a code (letters, digits, `-`, `.`, `_`; at most 64 characters), else a
/// placeholder: input codes are named in reasons only when they cannot smuggle free text.
pub(crate) fn safe_code(s: &str) -> &str {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok { s } else { "(invalid code)" }
}

/// A reason for a value whose unit cannot be normalized; the unit is named only when it looks
/// like a unit.
pub(crate) fn unit_reason(field: &str, err: &UnitError) -> String {
    match err {
        UnitError::Unsupported { kind, unit } => {
            let looks_like_unit = unit.chars().count() <= 24
                && unit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "[]{}/%_.-^*° ²".contains(c));
            let unit = if looks_like_unit {
                unit.as_str()
            } else {
                "(invalid unit)"
            };
            format!("{field}: unit `{unit}` is not a unit of {}", kind.as_str())
        }
        UnitError::NotFinite { kind } => {
            format!("{field}: value of {} is not a finite number", kind.as_str())
        }
    }
}

#[cfg(test)]
mod tests;
