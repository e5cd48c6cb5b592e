//! Declared schemas and expressions: the shipped `vitals-flat` job against an independent
//! reference, validation errors at their line and column, and dead letters naming the field.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;

use vitalflow_connectors::generator::{Generator, GeneratorConfig};

use crate::support::{job_variant, key_file, python, python_check, show, vitalflow};

/// Lines that do not match the declared schema, each with the field its dead letter must name.
const BAD_LINES: &[(&str, &str)] = &[
    // `hr` missing.
    (
        r#"{"patient_id":"P9","ts":1767225600000,"ward":"ICU","spo2":97,"rr":16,"temp":36.8,"sbp":121,"dbp":78}"#,
        "hr",
    ),
    // `spo2` as text.
    (
        r#"{"patient_id":"P9","ts":1767225600000,"ward":"ICU","hr":88,"spo2":"97","rr":16,"temp":36.8,"sbp":121,"dbp":78}"#,
        "spo2",
    ),
    // `ts` as text, but the field is epoch milliseconds.
    (
        r#"{"patient_id":"P9","ts":"yesterday","ward":"ICU","hr":88,"spo2":97,"rr":16,"temp":36.8,"sbp":121,"dbp":78}"#,
        "ts",
    ),
    // `patient_id` null, not nullable.
    (
        r#"{"patient_id":null,"ts":1767225600000,"ward":"ICU","hr":88,"spo2":97,"rr":16,"temp":36.8,"sbp":121,"dbp":78}"#,
        "patient_id",
    ),
    // `rr` with a fraction.
    (
        r#"{"patient_id":"P9","ts":1767225600000,"ward":"ICU","hr":88,"spo2":97,"rr":16.5,"temp":36.8,"sbp":121,"dbp":78}"#,
        "rr",
    ),
];

/// The generator's flat readings with the bad lines and a line that is not JSON mixed in.
fn write_input(path: &Path, count: u64) {
    let g = Generator::new(GeneratorConfig {
        seed: 11,
        patients: 40,
        count,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    });
    let mut text = String::new();
    for i in 0..count {
        let _ = writeln!(text, "{}", g.flat_line(i));
        if i % 500 == 250 {
            let (line, _) = BAD_LINES[usize::try_from(i / 500).unwrap() % BAD_LINES.len()];
            let _ = writeln!(text, "{line}");
        }
    }
    // Severe bradycardia, which NEWS2 scores 3: kept by the SpO2 condition, and kept only by
    // the score (pulse 3 + respiration 3).
    for (n, (hr, spo2, rr)) in [(38, 88, 16), (40, 97, 25), (41, 97, 25)]
        .into_iter()
        .enumerate()
    {
        let _ = writeln!(
            text,
            r#"{{"patient_id":"{}","ts":{},"ward":"ICU","hr":{hr},"spo2":{spo2},"rr":{rr},"temp":36.8,"sbp":121,"dbp":78}}"#,
            g.patient_id(1),
            1_767_225_600_000 + 60_000 * n as i64
        );
    }
    text.push_str("this is not JSON\n");
    std::fs::write(path, text).unwrap();
}

#[test]
fn vitals_flat_selects_exactly_the_rows_of_an_independent_reference() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flat.jsonl");
    write_input(&input, 6000);
    let job = job_variant(
        "dataflows/vitals-flat.toml",
        dir.path(),
        &[("batch-size = 50000", "batch-size = 1000")],
    );
    let out = dir.path().join("out");
    let key = key_file(dir.path());
    let o = vitalflow(
        &["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[
            ("VITALFLOW_FLAT_VITALS", input.to_str().unwrap()),
            ("VITALFLOW_KEY_SOURCE", &format!("file:{}", key.display())),
        ],
    );
    assert!(o.status.success(), "{}", show(&o));

    let summary = python_check(
        &python,
        "flat_reference.py",
        &[
            input.to_str().unwrap(),
            key.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let n = |k: &str| summary[k].as_u64().unwrap();
    assert_eq!(
        n("invalid"),
        13,
        "12 bad lines and one non-JSON line: {summary}"
    );
    assert!(
        n("expected") > 100 && n("expected") < n("valid") / 2,
        "the filter should keep some rows and drop most: {summary}"
    );
    assert_eq!(n("jsonl"), n("expected"), "{summary}");
    assert_eq!(n("parquet"), n("expected"), "{summary}");
    assert_eq!(n("duckdb_count"), n("expected"), "{summary}");
    assert_eq!(summary["jsonl_matches"], true, "{summary}");
    assert_eq!(summary["parquet_matches"], true, "{summary}");
    assert_eq!(summary["duckdb_histogram_matches"], true, "{summary}");
    let types = &summary["parquet_types"];
    assert_eq!(types["ts"], "timestamp[ms, tz=UTC]", "{summary}");
    assert_eq!(types["score"], "int64", "{summary}");
    assert_eq!(types["temp"], "double", "{summary}");

    // No source patient id reaches the output.
    let patient = |i: u64| {
        Generator::new(GeneratorConfig {
            seed: 11,
            patients: 40,
            count: 6000,
            ..GeneratorConfig::default()
        })
        .patient_id(i)
    };
    for file in crate::support::output_files(&out) {
        let text = crate::support::scannable_text(&file);
        for i in 0..40 {
            assert!(
                !text.contains(&patient(i)),
                "{} holds a source patient id",
                file.display()
            );
        }
    }

    // Every bad line is dead-lettered with the field it got wrong.
    let mut reasons = Vec::new();
    for f in std::fs::read_dir(out.join("dead-letter")).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            reasons.push(v["reason"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(reasons.len(), 13, "{reasons:#?}");
    for (_, field) in BAD_LINES {
        let naming = reasons
            .iter()
            .filter(|r| r.contains(&format!("`{field}`")))
            .count();
        assert!(
            naming >= 2,
            "field `{field}` named in {naming} reasons: {reasons:#?}"
        );
    }
    for r in &reasons {
        assert!(
            !r.contains("yesterday") && !r.contains("P9"),
            "a reason holds a value: {r}"
        );
    }
}

/// The position (1-based line and column) of the first `needle` after `after` in `text`.
fn position(text: &str, after: &str, needle: &str) -> (usize, usize) {
    let start = text.find(after).unwrap();
    let at = start + text[start..].find(needle).unwrap();
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

#[test]
fn validate_reports_expression_errors_at_their_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad-expressions.toml");
    let text = r#"[sources.monitors]
kind = "file"
path = "flat.jsonl"
format = "json"
fields = [
  { name = "patient_id", type = "string" },
  { name = "hr", type = "integer" },
  { name = "spo2", type = "integer" },
]

[operators.score]
kind = "map"
inputs = ["monitors"]
[operators.score.fields]
score = "(if hrr > 130 then 3 else 0) + (if spo2 <= 91 then 3 else 0)"
label = "patient_id > 3"

[operators.keep]
kind = "filter"
inputs = ["monitors"]
condition = "spo2 < < 90"

[sinks.out]
kind = "jsonl"
inputs = ["keep"]
path = "out"
"#;
    std::fs::write(&job, text).unwrap();
    std::fs::write(dir.path().join("flat.jsonl"), "").unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let at = |(line, col): (usize, usize)| format!("{}:{line}:{col}: ", job.display());

    // Unknown field: at `hrr`, underlined, with a suggestion.
    let unknown = at(position(text, "score = ", "hrr"));
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&unknown))
        .unwrap_or_else(|| panic!("no diagnostic at {unknown}: {stderr}"));
    assert!(
        line.contains("unknown field `hrr`") && line.contains("(did you mean `hr`?)"),
        "{line}"
    );
    assert!(
        stderr.contains("^^^\n") || stderr.ends_with("^^^"),
        "`hrr` underlined: {stderr}"
    );

    // Type error: a string compared with a number.
    let type_error = at(position(text, "label = ", "patient_id"));
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&type_error) || l.contains(&format!("{}:16:", job.display())))
        .unwrap_or_else(|| panic!("no type error on line 16: {stderr}"));
    assert!(
        line.contains("string") && line.contains("integer"),
        "{line}"
    );

    // Syntax error: at the second `<`.
    let (l, c) = position(text, "condition = ", "< <");
    let syntax = at((l, c + 2));
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&syntax))
        .unwrap_or_else(|| panic!("no syntax error at {syntax}: {stderr}"));
    assert!(line.contains('<'), "{line}");
}

#[test]
fn a_sink_refuses_rows_that_still_hold_phi() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("leak.toml");
    let text = r#"[sources.monitors]
kind = "file"
path = "flat.jsonl"
format = "json"
fields = [
  { name = "patient_id", type = "string", phi = "hash" },
  { name = "hr", type = "integer" },
]

[operators.tag]
kind = "map"
inputs = ["monitors"]
[operators.tag.fields]
tag = "concat(upper(patient_id), '-', hr)"

[sinks.out]
kind = "jsonl"
inputs = ["tag"]
path = "out"
"#;
    std::fs::write(&job, text).unwrap();
    std::fs::write(dir.path().join("flat.jsonl"), "").unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let (line, col) = position(text, "[sinks.out]", "\"tag\"");
    let expected = format!("{}:{line}:{col}: ", job.display());
    let diag = stderr
        .lines()
        .find(|l| l.starts_with(&expected))
        .unwrap_or_else(|| panic!("no diagnostic at {expected}: {stderr}"));
    assert!(
        diag.contains("`patient_id`") && diag.contains("`tag`") && diag.contains("anonymize"),
        "the copied and the computed PHI field are both named: {diag}"
    );
}

#[test]
fn validate_refuses_phi_in_alert_fields_and_kafka_rows_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("alert-leak.toml");
    let text = r#"[sources.monitors]
kind = "file"
path = "flat.jsonl"
format = "json"
event-time = "ts"
key = "patient_id"
fields = [
  { name = "patient_id", type = "string", phi = "hash" },
  { name = "mrn", type = "string", phi = "hash" },
  { name = "name", type = "string", phi = "redact" },
  { name = "ts", type = "timestamp", format = "epoch-ms", phi = "date" },
  { name = "unit", type = "string" },
  { name = "hr", type = "integer" },
]

[operators.alerts]
kind = "alert"
inputs = ["monitors"]
key = "ephemeral"
ward = "concat(unit, '/', name)"
observation-id = "mrn"
[operators.alerts.news2]
pulse = "hr"

[sinks.topic]
kind = "kafka"
inputs = ["monitors"]
topic = "readings"

[sinks.console]
kind = "console"
inputs = ["alerts"]
"#;
    std::fs::write(&job, text).unwrap();
    std::fs::write(dir.path().join("flat.jsonl"), "").unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let at = |(line, col): (usize, usize), needles: &[&str]| {
        let prefix = format!("{}:{line}:{col}: ", job.display());
        let diag = stderr
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no diagnostic at {prefix}: {stderr}"));
        for n in needles {
            assert!(diag.contains(n), "no `{n}` in: {diag}");
        }
    };
    // The expressions, at the fields they read.
    at(
        position(text, "ward = ", "concat"),
        &["`operators.alerts.ward`", "`name`", "PHI"],
    );
    at(
        position(text, "observation-id = ", "mrn"),
        &["`operators.alerts.observation-id`", "`mrn`", "PHI"],
    );
    // Rows with PHI wired into a Kafka sink, at the input.
    at(
        position(text, "[sinks.topic]", "\"monitors\""),
        &["`sinks.topic`", "`patient_id`", "anonymize"],
    );
}

/// Clinical records (PHI) go only to `anonymize` and `tabulate`; `tabulate`'s tables keep their
/// PHI fields marked, so a sink refuses them as it refuses any row with PHI. Each wrong wiring
/// is named at its place.
#[test]
fn sinks_refuse_clinical_records_and_the_tables_made_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("clinical.toml");
    let text = r#"[sources.hl7]
kind = "file"
path = "in"
format = "hl7v2"

[operators.ingest]
kind = "ingest"
inputs = ["hl7"]

[operators.tabulate]
kind = "tabulate"
inputs = ["ingest"]

[sinks.raw]
kind = "parquet"
inputs = ["ingest"]
path = "raw"

[sinks.events]
kind = "kafka"
inputs = ["ingest"]
topic = "clinical"

[sinks.context]
kind = "jsonl"
inputs = ["tabulate.context"]
path = "context"

[sinks.readings]
kind = "parquet"
inputs = ["tabulate"]
path = "readings"
"#;
    std::fs::write(&job, text).unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    for (sink, input) in [
        ("[sinks.raw]", "\"ingest\""),
        ("[sinks.events]", "\"ingest\""),
        ("[sinks.context]", "\"tabulate.context\""),
        ("[sinks.readings]", "\"tabulate\""),
    ] {
        let (line, col) = position(text, sink, input);
        let at = format!("{}:{line}:{col}: ", job.display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&at)),
            "no diagnostic for {sink} at {at}: {stderr}"
        );
    }
}
