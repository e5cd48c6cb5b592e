//! Fuzz target: CSV rows, read by the declared-schema CSV decoder and by vital-signs CSV
//! ingestion.
//!
//! Feeds arbitrary bytes, as one CSV row, to [`Decoder::decode_csv`] under two declared schemas
//! (the ICU numerics of `dataflows/icu-replay.toml` and the flat vital signs of
//! `dataflows/vitals-flat.toml`), each with its file's header and without one, and to ingestion
//! as a [`RawFormat::VitalsCsv`] row under two headers (the ICU numerics file's and a short
//! one). Nothing may panic.
//!
//! * A decoder returns a row or an error. A row has one value per declared field, each null only
//!   where the field is nullable and otherwise of the declared type; an error has a reason.
//! * Ingestion accepts the row or dead-letters it, each dead letter with a reason. It may stay
//!   silent only on a row without a usable value: one where every vital-sign cell is empty or
//!   `0` (a sensor not connected), counting a blood pressure only with both of its cells.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vitalflow_model::row::Type;
use vitalflow_model::{RawFormat, RawRecord};
use vitalflow_operators::decode::{Decoder, TimeFormat};

#[path = "support/decode.rs"]
mod support;
use support::{check, field};

/// The header of the ICU numerics CSV file.
const NUMERICS: [&str; 12] = [
    "minute", "time", "HR", "ABPSys", "ABPDias", "ABPMean", "PULSE", "RESP", "SpO2", "NBPSys",
    "NBPDias", "NBPMean",
];
/// A short vitals header, with a temperature and another spelling of the time column.
const SHORT: [&str; 7] = [
    "timestamp",
    "hr",
    "spo2",
    "resp",
    "temp",
    "nbpsys",
    "nbpdias",
];
/// The columns of flat vital signs.
const FLAT: [&str; 9] = [
    "patient_id",
    "ts",
    "ward",
    "hr",
    "spo2",
    "rr",
    "temp",
    "sbp",
    "dbp",
];

/// Vital-sign columns of vitals CSV ingestion (lower case): one value each.
const SINGLE: [&str; 7] = [
    "hr",
    "resp",
    "spo2",
    "temp",
    "temperature",
    "abpmean",
    "nbpmean",
];
/// Blood-pressure column pairs: both are needed.
const PAIRS: [(&str, &str); 2] = [("abpsys", "abpdias"), ("nbpsys", "nbpdias")];

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Each decoder with the header of the file it reads.
static DECODERS: LazyLock<Vec<(Decoder, Vec<String>)>> = LazyLock::new(|| {
    use TimeFormat::{Auto, EpochMillis, Iso8601};
    use Type::{Float, Int, String, Timestamp};
    vec![
        // dataflows/icu-replay.toml
        (
            Decoder::new(vec![
                field("minute", Int, false, Auto),
                field("time", Timestamp, false, Iso8601),
                field("HR", Float, true, Auto),
                field("ABPSys", Float, true, Auto),
                field("NBPSys", Float, true, Auto),
                field("RESP", Float, true, Auto),
                field("SpO2", Float, true, Auto),
            ]),
            strings(&NUMERICS),
        ),
        // dataflows/vitals-flat.toml, as CSV
        (
            Decoder::new(vec![
                field("patient_id", String, false, Auto),
                field("ts", Timestamp, false, EpochMillis),
                field("ward", String, false, Auto),
                field("hr", Int, false, Auto),
                field("spo2", Int, false, Auto),
                field("rr", Int, false, Auto),
                field("temp", Float, true, Auto),
                field("sbp", Int, false, Auto),
                field("dbp", Int, false, Auto),
            ]),
            strings(&FLAT),
        ),
    ]
});

static HEADERS: LazyLock<[Vec<String>; 2]> =
    LazyLock::new(|| [strings(&NUMERICS), strings(&SHORT)]);

/// Whether a vitals CSV row has nothing to record: read as one CSV record whose width is the
/// header's, every vital-sign cell is empty or zero (a blood pressure counts only with both
/// cells). Anything else (a non-number, a row that is not one record of that width) must be
/// answered.
fn no_values(header: &[String], bytes: &[u8]) -> bool {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut row = csv::StringRecord::new();
    match reader.read_record(&mut row) {
        Ok(true) => {}
        Ok(false) => return true, // a blank line
        Err(_) => return false,
    }
    if row.len() != header.len() {
        return false;
    }
    let names: Vec<String> = header.iter().map(|h| h.to_ascii_lowercase()).collect();
    let cell = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .and_then(|i| row.get(i))
            .map(str::trim)
    };
    // Empty or zero: nothing; anything else is a value or a mistake, which must be answered.
    let nothing = |c: Option<&str>| c.is_none_or(|c| c.is_empty() || c.parse() == Ok(0.0_f64));
    SINGLE.iter().all(|n| nothing(cell(n)))
        && PAIRS.iter().all(|(s, d)| {
            let (s, d) = (cell(s), cell(d));
            (nothing(s) || nothing(d)) && (s.is_none_or(is_number) && d.is_none_or(is_number))
        })
}

/// An empty cell or a finite, non-negative number.
fn is_number(c: &str) -> bool {
    c.is_empty() || c.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0)
}

fuzz_target!(|data: &[u8]| {
    for (decoder, header) in DECODERS.iter() {
        check(decoder, decoder.decode_csv(Some(header), data, 3), 3);
        check(decoder, decoder.decode_csv(None, data, 3), 3);
    }
    for header in HEADERS.iter() {
        let raw = RawRecord {
            source: "fuzz".into(),
            location: "fuzz".into(),
            sequence: 0,
            format: RawFormat::VitalsCsv,
            header: Some(header.clone()),
            context: Some("P1".into()),
            bytes: data.to_vec(),
            arrival_us: 0,
        };
        let mut ok = Vec::new();
        let mut dead = Vec::new();
        vitalflow_operators::ingest::ingest(&raw, "ingest", &mut ok, &mut dead);
        assert!(
            !ok.is_empty() || !dead.is_empty() || no_values(header, data),
            "ingestion neither accepted nor dead-lettered a vitals CSV row with a value"
        );
        assert!(
            dead.iter().all(|d| !d.reason.is_empty()),
            "a dead letter without a reason"
        );
    }
});
