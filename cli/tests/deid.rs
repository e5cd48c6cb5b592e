//! Safe Harbor end to end: fake patients carrying every identifier class of 45 CFR
//! 164.514(b)(2), sent through HL7 v2, FHIR and event envelopes; none of their values may reach
//! any output file, and the de-identification report counts every class.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    PhiScan, key_file, output_files, python, python_check, root, run_job, scannable_text,
};

/// Writes the fake corpus (`tests/python/phi_corpus.py`, standard library only) into
/// `dir/corpus` and returns its folder and manifest.
fn corpus(dir: &Path) -> (PathBuf, serde_json::Value) {
    let out = dir.join("corpus");
    let python = python().unwrap_or_else(|| "python3".to_owned());
    let o = Command::new(python)
        .arg(root().join("tests/python/phi_corpus.py"))
        .args([out.to_str().unwrap(), "--patients", "12", "--self-check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    (out, serde_json::from_str(&manifest).unwrap())
}

fn job(corpus: &Path, key: &Path, sources: &[&str], actions: &str) -> String {
    let mut text = format!(
        r#"
[job]
name = "deid"
workers = 2

[sources.hl7]
kind = "file"
path = "{c}/hl7v2"
format = "hl7v2"

[sources.fhir]
kind = "file"
path = "{c}/fhir"
format = "fhir"

[sources.events]
kind = "file"
path = "{c}/envelope.ndjson"
format = "envelope"

[operators.ingest]
kind = "ingest"
inputs = [{inputs}]
codes = {{ "99LOCAL^HR" = "heart-rate" }}
units = {{ "bpm" = "/min" }}

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "file:{k}"
dates = "year"
{actions}

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[operators.audit]
kind = "audit"
inputs = ["ingest.events", "anonymize.events", "canonize.events"]

[sinks.tables]
kind = "parquet"
inputs = ["canonize"]

[sinks.resources]
kind = "jsonl"
inputs = ["canonize"]
path = "resources"

[sinks.audit-log]
kind = "jsonl"
inputs = ["audit"]
path = "audit"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["ingest.dead-letter", "anonymize.dead-letter", "canonize.dead-letter"]
"#,
        c = corpus.display(),
        k = key.display(),
        inputs = sources
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
    // Sources the job does not read are left out.
    for unused in ["hl7", "fhir", "events"] {
        if !sources.contains(&unused) {
            let start = text.find(&format!("[sources.{unused}]")).unwrap();
            let end = start + text[start..].find("\n\n").unwrap() + 2;
            text.replace_range(start..end, "");
        }
    }
    text
}

/// The summed de-identification reports of every `EventoAnonimizacionFinalizada`.
fn deid_report(out: &Path) -> BTreeMap<String, u64> {
    let mut report = BTreeMap::new();
    for f in output_files(&out.join("audit")) {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            if r["event"]["metadata"]["eventType"] == "EventoAnonimizacionFinalizada" {
                for (k, v) in r["event"]["payload"]["detail"].as_object().unwrap() {
                    *report.entry(k.clone()).or_default() += v.as_u64().unwrap();
                }
            }
        }
    }
    report
}

/// The report counts `phi_corpus.py` worked out for the inputs of `sources` (`hl7`, `fhir`,
/// `events`), with the job's date action.
fn expected_report(corpus: &Path, sources: &[&str], date_action: &str) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(corpus.join("expected_report.json")).unwrap();
    let per_input: BTreeMap<String, BTreeMap<String, u64>> = serde_json::from_str(&text).unwrap();
    let mut report = BTreeMap::new();
    for (input, counts) in per_input {
        let source = match input.split('/').next() {
            Some("hl7v2") => "hl7",
            Some("fhir") => "fhir",
            _ => "events",
        };
        if !sources.contains(&source) {
            continue;
        }
        for (key, n) in counts {
            let key = key.replace("date:*", &format!("date:{date_action}"));
            *report.entry(key).or_default() += n;
        }
    }
    report
}

/// Scans every output file but `dead-letter/` for every value of `phi.txt`: every decoded Parquet
/// value (other files' bytes) here, again with FHIR R4 validation in `check_output.py`.
fn assert_no_phi(corpus: &Path, out: &Path) -> Option<serde_json::Value> {
    let phi = std::fs::read_to_string(corpus.join("phi.txt")).unwrap();
    let values: Vec<&str> = phi.lines().filter(|l| !l.is_empty()).collect();
    assert!(values.len() > 500, "{} PHI values", values.len());
    let files = output_files(out);
    assert!(files.len() > 5, "{files:?}");
    let scan = PhiScan::new(&values);
    for file in &files {
        let found = scan.found(&scannable_text(file));
        assert!(
            found.is_empty(),
            "{} holds PHI values of phi.txt, from line {}",
            file.display(),
            found.first().map_or(0, |n| n + 1)
        );
    }
    let python = python()?;
    let summary = python_check(
        &python,
        "check_output.py",
        &[
            out.to_str().unwrap(),
            "--phi",
            corpus.join("phi.txt").to_str().unwrap(),
        ],
    );
    assert_eq!(summary["phi_hits"], 0, "{summary}");
    assert_eq!(summary["fhir_invalid"], 0, "{summary}");
    Some(summary)
}

#[test]
fn every_identifier_class_through_hl7_fhir_and_envelopes_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, manifest) = corpus(dir.path());
    for class in [
        "name",
        "geography",
        "date",
        "phone",
        "fax",
        "email",
        "ssn",
        "mrn",
        "health-plan",
        "account",
        "licence",
        "vehicle",
        "device",
        "url",
        "ip",
        "biometric",
        "photo",
        "other-id",
    ] {
        assert!(
            manifest["classes"][class].as_u64().unwrap() >= 12,
            "{class}: {manifest}"
        );
    }
    let key = key_file(dir.path());
    let (out, o) = run_job(
        dir.path(),
        &job(&corpus, &key, &["hl7", "fhir", "events"], ""),
        &[],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!stdout.is_empty());

    // Every class was met and removed or generalized, never kept.
    let report = deid_report(&out);
    for class in [
        "name",
        "address",
        "zip",
        "birth-date",
        "phone",
        "fax",
        "email",
        "url",
        "ip",
        "mrn",
        "ssn",
        "health-plan",
        "account",
        "licence",
        "vehicle",
        "device",
        "biometric",
        "other-id",
        "photo",
        "free-text",
        "date",
        "patient-id",
    ] {
        assert!(
            report
                .iter()
                .any(|(k, n)| k.starts_with(&format!("{class}:")) && *n > 0),
            "no {class} in {report:?}"
        );
    }
    assert!(report.keys().all(|k| !k.ends_with(":keep")), "{report:?}");
    assert!(report["zip:restrict-000"] > 0, "{report:?}");
    // Every count is the one recomputed from the inputs, key by key.
    let expected = expected_report(&corpus, &["hl7", "fhir", "events"], "generalize");
    for key in expected.keys().chain(report.keys()) {
        assert_eq!(
            report.get(key),
            expected.get(key),
            "de-identification report `{key}`: the run's, then the inputs'"
        );
    }
    assert!(report["age-over-89:generalize"] > 0, "{report:?}");

    let Some(summary) = assert_no_phi(&corpus, &out) else {
        return;
    };
    // 12 patients: 3 ADT each (A01, A08, A03) plus a FHIR Patient and an envelope.
    assert_eq!(summary["patients"], 12 * 5, "{summary}");
    assert_eq!(summary["encounters"], 12 * 3, "{summary}");
    // Every Observation's subject is a Patient of the output: HL7 v2 ids, FHIR fullUrl
    // references and envelope ids all resolve to the same pseudonyms.
    assert_eq!(
        summary["observation_patients_without_patient"], 0,
        "{summary}"
    );
    let by_code = &summary["by_code"];
    for code in [
        "8867-4", "9279-1", "59408-5", "8310-5", "85354-9", "29463-7",
    ] {
        assert!(
            by_code[code].as_u64().unwrap_or(0) >= 12,
            "{code}: {summary}"
        );
    }
}

#[test]
fn scrubbed_notes_keep_their_text_but_lose_the_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, _) = corpus(dir.path());
    let key = key_file(dir.path());
    // Envelope readings name no patient in their message, so the scrubber cannot know the names
    // their notes repeat: they are left to `drop` (the default) in the other test.
    let (out, _) = run_job(
        dir.path(),
        &job(
            &corpus,
            &key,
            &["hl7", "fhir"],
            r#"actions = { free-text = "scrub", mrn = "crypto-hash", device = "crypto-hash" }"#,
        ),
        &[],
    );
    let report = deid_report(&out);
    assert!(report["free-text:scrub"] >= 24, "{report:?}");
    assert!(
        report["free-text-identifier:redact"] >= 24 * 6,
        "{report:?}"
    );
    assert!(report["mrn:crypto-hash"] > 0, "{report:?}");
    let mut notes = Vec::new();
    let mut hashed = 0;
    for f in output_files(&out.join("resources")) {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let resource: serde_json::Value = serde_json::from_str(line).unwrap();
            for n in resource["note"].as_array().into_iter().flatten() {
                notes.push(n["text"].as_str().unwrap().to_owned());
            }
            if resource["device"]["identifier"]["system"] == "urn:vitalflow:hashed:device" {
                hashed += 1;
            }
        }
    }
    assert!(notes.len() >= 24, "{notes:?}");
    for n in &notes {
        for label in ["[URL]", "[IP]", "[DATE]", "[REDACTED]"] {
            assert!(n.contains(label), "{label} missing in a scrubbed note: {n}");
        }
    }
    assert!(hashed > 0);
    assert_no_phi(&corpus, &out);
}

#[test]
fn shifted_dates_hide_every_reading_time_and_move_each_patient_by_one_offset() {
    // Clinical records (patients and readings as platform envelopes) under the default
    // `dates = "shift"`: enough patients that every shift of the range is likely to occur.
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let generator = vitalflow_connectors::generator::Generator::new(
        vitalflow_connectors::generator::GeneratorConfig {
            seed: 5,
            patients: 3000,
            count: 9000,
            ..Default::default()
        },
    );
    let mut events = Vec::new();
    for i in 0..generator.count() {
        events.extend_from_slice(&generator.event(i));
        events.push(b'\n');
    }
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, events).unwrap();
    let key = key_file(dir.path());
    let job = format!(
        r#"[job]
name = "shift"
workers = 2

[sources.events]
kind = "file"
path = "{input}"
format = "envelope"

[operators.ingest]
kind = "ingest"
inputs = ["events"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "file:{key}"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[operators.audit]
kind = "audit"
inputs = ["ingest.events", "anonymize.events", "canonize.events"]

[sinks.tables]
kind = "parquet"
inputs = ["canonize"]
path = "canonical"

[sinks.resources]
kind = "jsonl"
inputs = ["canonize"]
path = "resources"

[sinks.audit-log]
kind = "jsonl"
inputs = ["audit"]
path = "audit"
"#,
        input = input.display(),
        key = key.display(),
    );
    let (out, _) = run_job(dir.path(), &job, &[]);
    let summary = python_check(
        &python,
        "shift_check.py",
        &[
            input.to_str().unwrap(),
            key.to_str().unwrap(),
            out.to_str().unwrap(),
            "365",
        ],
    );
    let n = |k: &str| summary[k].as_u64().unwrap();
    assert_eq!(n("patients"), 3000, "{summary}");
    assert_eq!(n("observations"), n("readings"), "{summary}");
    assert!(n("output_instants") >= 2 * n("readings"), "{summary}");
    assert_eq!(
        n("zero_shift"),
        0,
        "a patient kept its true dates: {summary}"
    );
    assert_eq!(
        n("leaked"),
        0,
        "input reading times in the output: {summary}"
    );
    assert_eq!(n("leaked_text"), 0, "{summary}");
    assert_eq!(n("inconsistent"), 0, "{summary}");
    assert_eq!(n("out_of_range"), 0, "{summary}");
    assert!(n("distinct_shifts") > 600, "{summary}");
    let (min, max) = (
        summary["min_shift"].as_i64().unwrap(),
        summary["max_shift"].as_i64().unwrap(),
    );
    assert!(
        (-365..=-300).contains(&min) && (300..=365).contains(&max),
        "{summary}"
    );

    // A range of 0 days would keep every true date: refused at validation.
    let zero = dir.path().join("zero.toml");
    std::fs::write(
        &zero,
        job.replace("key = \"file:", "max-shift-days = 0\nkey = \"file:"),
    )
    .unwrap();
    let o = crate::support::vitalflow(&["validate", zero.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`operators.anonymize.max-shift-days` must be at least 1"),
        "{stderr}"
    );
}
