//! CSV rows of vital-sign numerics ([`vitalflow_model::RawFormat::VitalsCsv`]).
//!
//! The raw record is one CSV row; `header` holds the file's column names and `context` the
//! patient id of the whole file (both required). Columns, matched case-insensitively:
//!
//! | column | kind | unit |
//! | --- | --- | --- |
//! | `time` or `timestamp` | when it was measured (RFC 3339; without offset = UTC) | |
//! | `HR` | heart rate | `/min` |
//! | `RESP` | respiratory rate | `/min` |
//! | `SpO2` | oxygen saturation | `%` |
//! | `TEMP`, `Temperature` | body temperature | `Cel` |
//! | `ABPSys` + `ABPDias`, `NBPSys` + `NBPDias` | blood pressure (both sides needed) | `mm[Hg]` |
//! | `ABPMean`, `NBPMean` | mean arterial pressure | `mm[Hg]` |
//!
//! Other columns (`minute`, `PULSE`, which duplicates `HR`, ...) are ignored. An empty cell is a
//! missing value and `0` a sensor that is not connected: both are skipped. A non-numeric or
//! negative cell is dead-lettered naming its column; the row's other values are kept. A row with
//! no usable value yields nothing. Each record's `source_id` is `<column>@<time>`.

use chrono::{DateTime, SecondsFormat, Utc};
use vitalflow_model::clinical::{ClinicalRecord, VitalRecord};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::{Sink, safe_code, time};

/// Single-value columns (lower-case name) and their kinds.
const SINGLE: [(&str, VitalKind); 7] = [
    ("hr", VitalKind::HeartRate),
    ("resp", VitalKind::RespiratoryRate),
    ("spo2", VitalKind::Spo2),
    ("temp", VitalKind::BodyTemperature),
    ("temperature", VitalKind::BodyTemperature),
    ("abpmean", VitalKind::MeanArterialPressure),
    ("nbpmean", VitalKind::MeanArterialPressure),
];

/// Blood-pressure column pairs (lower-case systolic, diastolic names).
const PAIRS: [(&str, &str); 2] = [("abpsys", "abpdias"), ("nbpsys", "nbpdias")];

/// Names of the time column (lower case).
const TIME: [&str; 2] = ["time", "timestamp"];

/// One cell's content.
enum Cell {
    /// Empty or `0`: nothing to record.
    Skip,
    /// A positive value.
    Value(f64),
    /// Unusable, with why.
    Bad(&'static str),
}

/// Parses the raw record as one CSV row.
pub(crate) fn parse(sink: &mut Sink<'_>) {
    let raw = sink.raw();
    let Some(header) = raw.header.clone() else {
        return sink.reject_raw("header: missing (CSV vitals need the file's column names)");
    };
    let patient_id = match raw.context.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => return sink.reject_raw("context: missing (the patient id of the CSV file)"),
    };
    if let Some(open) = crate::decode::open_quote(&raw.bytes) {
        return sink.reject_raw(format!(
            "CSV row: {}",
            crate::decode::open_quote_reason(open, Some(&header))
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(raw.bytes.as_slice());
    let mut row = csv::StringRecord::new();
    match reader.read_record(&mut row) {
        Ok(true) => {}
        Ok(false) => return, // a blank line: no values
        Err(e) => return sink.reject_raw(csv_reason(&e)),
    }
    if !matches!(reader.read_record(&mut csv::StringRecord::new()), Ok(false)) {
        return sink.reject_raw("CSV row: the record holds more than one row");
    }
    if row.len() != header.len() {
        return sink.reject_raw(format!(
            "CSV row: {} fields, but the header has {} columns",
            row.len(),
            header.len()
        ));
    }
    let names: Vec<String> = header
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let find = |name: &str| names.iter().position(|n| n == name);
    let label = |i: usize| safe_code(header[i].trim().trim_start_matches('\u{feff}')).to_owned();
    let cell = |i: usize| -> Cell {
        let s = row.get(i).unwrap_or_default().trim();
        if s.is_empty() {
            return Cell::Skip;
        }
        match s.parse::<f64>() {
            Ok(v) if !v.is_finite() => Cell::Bad("not a finite number"),
            Ok(v) if v < 0.0 => Cell::Bad("negative value"),
            Ok(0.0) => Cell::Skip,
            Ok(v) => Cell::Value(v),
            Err(_) => Cell::Bad("not a number"),
        }
    };

    // (column label, kind, value)
    let mut values: Vec<(String, VitalKind, VitalValue)> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    for (name, kind) in SINGLE {
        let Some(i) = find(name) else { continue };
        match cell(i) {
            Cell::Skip => {}
            Cell::Bad(why) => bad.push(format!("column {}: {why}", label(i))),
            Cell::Value(v) => match kind.normalize(v, kind.code().ucum) {
                Ok(value) => values.push((label(i), kind, VitalValue::Quantity { value })),
                Err(e) => bad.push(super::unit_reason(&format!("column {}", label(i)), &e)),
            },
        }
    }
    for (sys, dia) in PAIRS {
        let (Some(s), Some(d)) = (find(sys), find(dia)) else {
            continue;
        };
        match (cell(s), cell(d)) {
            (Cell::Value(systolic), Cell::Value(diastolic)) => values.push((
                label(s),
                VitalKind::BloodPressure,
                VitalValue::BloodPressure {
                    systolic,
                    diastolic,
                },
            )),
            (Cell::Bad(why), _) => bad.push(format!("column {}: {why}", label(s))),
            (_, Cell::Bad(why)) => bad.push(format!("column {}: {why}", label(d))),
            _ => {}
        }
    }
    for reason in bad {
        sink.reject_raw(reason);
    }
    if values.is_empty() {
        return;
    }
    let effective = match TIME.iter().find_map(|t| find(t)) {
        None => return sink.reject_raw("header: no time column (time or timestamp)"),
        Some(i) => match row.get(i).map(str::trim).filter(|s| !s.is_empty()) {
            None => return sink.reject_raw(format!("column {}: empty", label(i))),
            Some(s) => match time::instant(s) {
                Some(t) => t,
                None => {
                    return sink
                        .reject_raw(format!("column {}: not an RFC 3339 date-time", label(i)));
                }
            },
        },
    };
    emit(sink, &patient_id, effective, values);
}

fn emit(
    sink: &mut Sink<'_>,
    patient_id: &str,
    effective: DateTime<Utc>,
    values: Vec<(String, VitalKind, VitalValue)>,
) {
    let at = effective.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    for (index, (column, kind, value)) in (0u32..).zip(values) {
        sink.accept(
            index,
            ClinicalRecord::Vital(VitalRecord {
                source_id: Some(format!("{column}@{at}")),
                patient_id: patient_id.to_owned(),
                kind,
                value,
                effective,
                device: None,
                notes: Vec::new(),
                mentioned: Vec::new(),
            }),
        );
    }
}

/// A reason for a row the CSV reader rejects (never echoing the row).
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("CSV row: field {} is not valid UTF-8", err.field() + 1)
        }
        _ => "CSV row: not a valid CSV record".to_owned(),
    }
}

#[cfg(test)]
mod tests;
