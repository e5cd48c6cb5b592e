//! Every parser on random and mutated input: the envelope, FHIR, vitals CSV and HL7 v2
//! ingestion, the declared-schema JSON and CSV decoders, the job file parser and the expression
//! compiler. Seeds are real inputs (generated envelopes, FHIR resources, CSV rows, the HL7 v2
//! samples when the sample data is there, the shipped job files, expressions of the docs); each
//! is mutated thousands of times (bytes flipped, inserted, deleted, ranges duplicated, cut,
//! spliced with another seed) from a fixed seed. Each input must be answered, never with a
//! panic: ingestion accepts it or dead-letters it with a reason, a decoder returns a row or an
//! error, the job parser a job or diagnostics, the compiler an expression or errors.
#![allow(clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use vitalflow_connectors::{Generator, GeneratorConfig};
use vitalflow_engine::Job;
use vitalflow_model::row::{Field, Schema, Type};
use vitalflow_model::{RawFormat, RawRecord};
use vitalflow_operators::decode::{Decoder, FieldSpec};
use vitalflow_operators::expression;
use vitalflow_operators::ingest::ingest;

/// Mutated inputs per parser.
const MUTATIONS: usize = 3_000;

/// A small xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes the parsers treat specially: delimiters, quotes, escapes, digits, line breaks.
const INTERESTING: &[u8] = b"{}[]\":,\\|^~&\r\n\t 0123456789-.eE+TZ\x0b\x1c\x00\xff\xc3";

/// One mutation of a seed (or, now and then, bytes at random).
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    if rng.below(20) == 0 {
        return (0..rng.below(64))
            .map(|_| rng.next().to_le_bytes()[0])
            .collect();
    }
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] ^= 1 << rng.below(8);
            }
            1 => b.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < b.len() => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            3 if at < b.len() => {
                let end = (at + 1 + rng.below(32)).min(b.len());
                let copy = b[at..end].to_vec();
                let to = rng.below(b.len() + 1);
                b.splice(to..to, copy);
            }
            4 => b.truncate(at),
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            _ => {
                if let Some(i) = (at < b.len()).then_some(at) {
                    b[i] = INTERESTING[rng.below(INTERESTING.len())];
                }
            }
        }
    }
    b
}

/// Runs `check` on every mutation of `seeds`; a panic fails the test naming the input
/// (escaped) so that it can be replayed.
fn each_mutation(what: &str, seeds: &[Vec<u8>], seed: u64, mut check: impl FnMut(&[u8])) {
    assert!(!seeds.is_empty(), "{what}: no seeds");
    let mut rng = Rng(seed);
    for s in seeds {
        run(what, s, &mut check);
    }
    for _ in 0..MUTATIONS {
        let input = mutate(&mut rng, seeds);
        run(what, &input, &mut check);
    }
}

fn run(what: &str, input: &[u8], check: &mut impl FnMut(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
        panic!(
            "{what} panicked on {} bytes: {:?}",
            input.len(),
            String::from_utf8_lossy(input)
        );
    }
}

fn raw(format: RawFormat, bytes: &[u8], header: Option<Vec<String>>) -> RawRecord {
    RawRecord {
        source: "mutated".into(),
        location: "mutated#0".into(),
        sequence: 0,
        format,
        header,
        context: Some("P1".into()),
        bytes: bytes.to_vec(),
        arrival_us: 0,
    }
}

/// Ingestion of `format`: every input is accepted or dead-lettered with a reason (`skips`:
/// but a vitals CSV row without any value, which gives nothing).
fn ingests(
    what: &str,
    format: RawFormat,
    seeds: &[Vec<u8>],
    header: Option<Vec<String>>,
    skips: fn(&[u8]) -> bool,
) {
    each_mutation(what, seeds, 0x9e37_79b9_7f4a_7c15, |bytes| {
        let (mut ok, mut dead) = (Vec::new(), Vec::new());
        ingest(
            &raw(format, bytes, header.clone()),
            "ingest",
            &mut ok,
            &mut dead,
        );
        assert!(
            !ok.is_empty() || !dead.is_empty() || skips(bytes),
            "neither accepted nor dead-lettered"
        );
        assert!(
            dead.iter().all(|d| !d.reason.is_empty()),
            "a dead letter without a reason"
        );
    });
}

/// Nothing is skipped.
fn never(_: &[u8]) -> bool {
    false
}

/// A CSV row whose cells after the first (the time) are all empty or blank.
fn no_values(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).split(',').skip(1).all(|c| {
        c.trim_matches(|ch: char| ch.is_whitespace() || ch == '"')
            .is_empty()
    })
}

fn sample_data() -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("VITALFLOW_SAMPLE_DATA").unwrap_or_else(|_| "../../shared/data".into()),
    );
    if dir.join("hl7v2").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("VITALFLOW_REQUIRE_SAMPLE_DATA").is_err(),
        "VITALFLOW_REQUIRE_SAMPLE_DATA is set but {} has no hl7v2 folder",
        dir.display()
    );
    eprintln!(
        "!!! SKIPPED in part: no sample data at {} (VITALFLOW_SAMPLE_DATA): HL7 v2 is seeded \
         from one message only",
        dir.display()
    );
    None
}

#[test]
fn envelope_ingestion_takes_or_dead_letters_any_input() {
    let g = Generator::new(GeneratorConfig {
        patients: 3,
        count: 12,
        ..GeneratorConfig::default()
    });
    let seeds: Vec<Vec<u8>> = (0..12).map(|i| g.event(i)).collect();
    ingests(
        "envelope ingestion",
        RawFormat::Envelope,
        &seeds,
        None,
        never,
    );
}

#[test]
fn fhir_ingestion_takes_or_dead_letters_any_input() {
    let seeds = vec![
        br#"{"resourceType":"Observation","id":"o1","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}"#.to_vec(),
        br#"{"resourceType":"Patient","id":"p1","identifier":[{"type":{"coding":[{"code":"MR"}]},"value":"MRN1"}],"name":[{"family":"Doe","given":["Jane"]}],"birthDate":"1960-01-01","gender":"female","address":[{"line":["1 Main St"],"city":"Springfield","postalCode":"62701"}],"telecom":[{"system":"phone","value":"555-0100"}]}"#.to_vec(),
        br#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"IMP"},"subject":{"reference":"Patient/p1"},"period":{"start":"2026-01-01T08:00:00Z"}}}]}"#.to_vec(),
    ];
    ingests("FHIR ingestion", RawFormat::Fhir, &seeds, None, never);
}

#[test]
fn vitals_csv_ingestion_takes_or_dead_letters_any_input() {
    let header: Vec<String> = ["time", "hr", "spo2", "rr", "temp", "sbp", "dbp"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let seeds = vec![
        b"2026-01-01T10:00:00Z,72,97,16,37.0,120,80".to_vec(),
        b"2026-01-01 10:01:00,,95,,36.8,\"118\",79\r\n".to_vec(),
    ];
    ingests(
        "vitals CSV ingestion",
        RawFormat::VitalsCsv,
        &seeds,
        Some(header),
        no_values,
    );
}

#[test]
fn hl7v2_ingestion_takes_or_dead_letters_any_input() {
    let mut seeds = vec![
        b"MSH|^~\\&|MONITOR|ICU|VITALFLOW|HOSP|20260101120000||ORU^R01^ORU_R01|C1|P|2.5.1\rPID|1||P1^^^HOSP^MR||Doe^Jane\rOBR|1|||8716-3^Vital signs^LN|||20260101120000\rOBX|1|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F|||20260101120000\r".to_vec(),
    ];
    if let Some(data) = sample_data() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("hl7v2"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
            .collect();
        files.sort();
        seeds.extend(files.iter().step_by(7).map(|p| std::fs::read(p).unwrap()));
    }
    ingests("HL7 v2 ingestion", RawFormat::Hl7v2, &seeds, None, never);
}

fn vitals_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::new("patient_id", Type::String, false),
        FieldSpec::new("ts", Type::Timestamp, false),
        FieldSpec::new("hr", Type::Int, true),
        FieldSpec::new("temp", Type::Float, true),
        FieldSpec::new("on_oxygen", Type::Bool, true),
    ]
}

#[test]
fn the_json_and_csv_decoders_answer_any_input() {
    let decoder = Decoder::new(vitals_fields());
    let json = vec![
        br#"{"patient_id":"P1","ts":"2026-01-01T10:00:00Z","hr":72,"temp":37.1,"on_oxygen":false}"#
            .to_vec(),
        br#"{"patient_id":"P2","ts":"2026-01-01T10:00:00.250+01:00","hr":null,"extra":{"a":[1,2,{"b":"\u00e9"}]}}"#.to_vec(),
    ];
    each_mutation("the JSON decoder", &json, 7, |bytes| {
        let _ = decoder.decode_json(bytes, 1);
    });
    let header: Vec<String> = ["patient_id", "ts", "hr", "temp", "on_oxygen"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let csv = vec![
        b"P1,2026-01-01T10:00:00Z,72,37.1,false".to_vec(),
        b"\"P,2\",\"2026-01-01 10:00:00\",,\"36.9\",true\r\n".to_vec(),
    ];
    each_mutation("the CSV decoder", &csv, 11, |bytes| {
        let _ = decoder.decode_csv(Some(&header), bytes, 1);
        let _ = decoder.decode_csv(None, bytes, 1);
    });
}

#[test]
fn the_job_file_parser_answers_any_input() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let at = root.join("mutated.toml");
    each_mutation("the job file parser", &seeds, 13, |bytes| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let _ = Job::parse(&at, text, &|_| None);
    });
}

#[test]
fn the_expression_compiler_answers_any_input() {
    let field = |name: &str, ty| Field {
        name: name.to_owned(),
        ty,
        nullable: true,
        phi: None,
    };
    let schema = Schema {
        fields: vec![
            field("patient_id", Type::String),
            field("ts", Type::Timestamp),
            field("hr", Type::Int),
            field("temp", Type::Float),
            field("on_oxygen", Type::Bool),
        ],
        time: Some(1),
        key: Some(0),
    };
    let seeds: Vec<Vec<u8>> = [
        "hr > 130 and temp >= 38.5",
        "coalesce(temp, 37.0) * 9 / 5 + 32",
        "case when on_oxygen then 2 else 0 end",
        "lower(patient_id) like 'p%' or hr between 40 and 50",
        "not (hr is null) and `ts` > timestamp '2026-01-01T00:00:00Z'",
        "round(temp, 1) <> 37.0 or abs(hr - 60) > 30",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    each_mutation("the expression compiler", &seeds, 17, |bytes| {
        let _ = expression::compile(&String::from_utf8_lossy(bytes), &schema);
    });
}
