//! Laboratory results end to end: crafted HL7 v2 `ORU^R01` results at and around every
//! default critical limit, through `ingest` → `tabulate.labs` → an `alert` node with
//! `[critical-values]`, and exactly the expected `critical_value_detected` events out.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::support::{PhiScan, key_file, read_jsonl, run_job, show};

/// A critical limit: name, LOINC codes, the unit written in the messages, low, high.
type Limit = (
    &'static str,
    &'static [&'static str],
    &'static str,
    Option<f64>,
    Option<f64>,
);

/// The default critical limits as docs/laboratory.md states them: the specification the
/// engine's table is tested against here.
const LIMITS: &[Limit] = &[
    (
        "potassium",
        &["2823-3", "6298-4"],
        "mEq/L",
        Some(2.8),
        Some(6.0),
    ),
    (
        "sodium",
        &["2951-2", "2947-0"],
        "mmol/L",
        Some(125.0),
        Some(160.0),
    ),
    (
        "glucose",
        &["2345-7", "2339-0"],
        "mg/dL",
        Some(50.0),
        Some(450.0),
    ),
    (
        "glucose-si",
        &["2345-7", "2339-0", "15074-8"],
        "mmol/L",
        Some(2.8),
        Some(25.0),
    ),
    ("haemoglobin", &["718-7"], "g/dL", Some(7.0), Some(20.0)),
    ("haemoglobin-si", &["718-7"], "g/L", Some(70.0), Some(200.0)),
    (
        "platelets",
        &["777-3", "26515-7"],
        "K/uL",
        Some(50.0),
        Some(1000.0),
    ),
    ("troponin-i", &["10839-9"], "ng/mL", None, Some(0.4)),
    ("troponin-i-hs", &["89579-7"], "ng/L", None, Some(400.0)),
    ("troponin-t", &["6598-7"], "ng/mL", None, Some(0.1)),
    ("lactate", &["2524-7", "32693-4"], "mmol/L", None, Some(3.5)),
    ("inr", &["6301-6"], "INR", None, Some(6.0)),
];

/// One crafted result: a patient of its own, so that every critical one raises its own alert.
struct Case {
    patient: String,
    code: &'static str,
    value: String,
    unit: &'static str,
    obx2: &'static str,
    status: &'static str,
    /// The expected event: (parameter, direction, threshold).
    expect: Option<(&'static str, &'static str, f64)>,
}

fn message(i: usize, c: &Case) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|VF|HUB|20260301120000||ORU^R01^ORU_R01|CTL{i:04}|P|2.5.1\r\
         PID|1||{patient}^^^HOSP^MR||Testpatient{i}^Ann||19700101|F\r\
         OBR|1||ACC{i:04}^LAB|24323-8^Panel^LN|||20260301110000\r\
         OBX|1|{obx2}|{code}^Result^LN||{value}|{unit}|||||{status}|||2026030111{m:02}00\r",
        patient = c.patient,
        obx2 = c.obx2,
        code = c.code,
        value = c.value,
        unit = c.unit,
        status = c.status,
        m = i % 60,
    )
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |code, value: f64, unit, expect| {
        let n = cases.len();
        cases.push(Case {
            patient: format!("LABPAT{n:04}"),
            code,
            value: format!("{value}"),
            unit,
            obx2: "NM",
            status: "F",
            expect,
        });
    };
    for (k, (name, codes, unit, low, high)) in LIMITS.iter().enumerate() {
        // A step of 1 % of the limit: well above rounding, well below the next limit.
        if let Some(l) = *low {
            let d = l / 100.0;
            let code = codes[k % codes.len()];
            add(code, l, *unit, Some((*name, "low", l)));
            add(code, l + d, *unit, None);
            add(
                codes[(k + 1) % codes.len()],
                l - d,
                *unit,
                Some((*name, "low", l)),
            );
        }
        if let Some(h) = *high {
            let d = h / 100.0;
            let code = codes[k % codes.len()];
            add(code, h, *unit, Some((*name, "high", h)));
            add(code, h - d, *unit, None);
            add(
                codes[(k + 1) % codes.len()],
                h + d,
                *unit,
                Some((*name, "high", h)),
            );
        }
    }
    // Not critical: a potassium of 9 in a unit no limit has, a result below the limit of
    // detection (`<2.0`: a comparator), one withdrawn as entered in error, and a preliminary
    // normal one.
    add("2823-3", 9.0, "mg/dL", None);
    let n = cases.len();
    cases.push(Case {
        patient: format!("LABPAT{n:04}"),
        code: "2823-3",
        value: "<^2.0".to_owned(),
        unit: "mmol/L",
        obx2: "SN",
        status: "F",
        expect: None,
    });
    for (status, value) in [("W", "9.0"), ("P", "4.1")] {
        let n = cases.len();
        cases.push(Case {
            patient: format!("LABPAT{n:04}"),
            code: "2823-3",
            value: value.to_owned(),
            unit: "mmol/L",
            obx2: "NM",
            status,
            expect: None,
        });
    }
    cases
}

/// Issue 37: results at a critical limit and just beyond it raise one `critical_value_detected`
/// each, results just inside it none; the events carry the platform's fields and no PHI.
#[test]
fn critical_lab_values_raise_exactly_the_expected_events() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let cases = cases();
    let mut hl7 = String::new();
    for (i, c) in cases.iter().enumerate() {
        hl7.push_str(&message(i, c));
    }
    std::fs::write(dir.path().join("results.hl7"), &hl7).unwrap();
    let job = format!(
        r#"
[job]
name = "lab-critical"
workers = 2
batch-size = 16

[sources.lab]
kind = "file"
path = "results.hl7"
format = "hl7v2"

[operators.ingest]
kind = "ingest"
inputs = ["lab"]

[operators.tabulate]
kind = "tabulate"
inputs = ["ingest"]

[operators.lab-alerts]
kind = "alert"
inputs = ["tabulate.labs"]
key = "file:{key}"

[operators.lab-alerts.critical-values]

[sinks.alerts]
kind = "jsonl"
inputs = ["lab-alerts"]
path = "alerts"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["ingest.dead-letter", "lab-alerts.dead-letter"]
"#,
        key = key.display()
    );
    let (out, o) = run_job(dir.path(), &job, &[]);
    let dead = read_jsonl(&out.join("dead-letter"));
    assert!(dead.is_empty(), "{dead:?}\n{}", show(&o));
    let events = read_jsonl(&out.join("alerts"));

    // Expected: (parameter, direction, threshold, value) with a count.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for c in &cases {
        if let Some((name, direction, threshold)) = c.expect {
            *expected
                .entry(format!("{name} {direction} {threshold} {}", c.value))
                .or_default() += 1;
        }
    }
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let mut report = String::new();
    for e in &events {
        let (m, p) = (&e["metadata"], &e["payload"]);
        let _ = writeln!(report, "{m} {p}");
        assert_eq!(m["eventType"], "critical_value_detected", "{e}");
        assert_eq!(m["correlationId"], p["alertId"], "{e}");
        assert_eq!(p["severity"], "critical", "{e}");
        assert_eq!(p["level"], "high", "{e}");
        assert!(p["detectedAt"].is_string(), "{e}");
        assert!(
            p["rule"].as_str().unwrap().starts_with("critical-value/"),
            "{e}"
        );
        assert!(!p["patient"].as_str().unwrap().starts_with("LABPAT"), "{e}");
        let value = p["value"].as_f64().unwrap();
        *got.entry(format!(
            "{} {} {} {value}",
            p["parameter"].as_str().unwrap(),
            p["direction"].as_str().unwrap(),
            p["threshold"].as_f64().unwrap()
        ))
        .or_default() += 1;
    }
    let alerting = cases.iter().filter(|c| c.expect.is_some()).count();
    eprintln!(
        "{} crafted results, {alerting} critical: {} critical_value_detected events",
        cases.len(),
        events.len()
    );
    assert_eq!(got, expected, "events:\n{report}");
    assert_eq!(events.len(), alerting);
    // 12 limits, 19 limit sides: at and beyond each alert, just inside none.
    assert_eq!(alerting, 2 * 19);

    // No PHI of the messages in the events: patient ids and names.
    let phi: Vec<String> = cases
        .iter()
        .enumerate()
        .flat_map(|(i, c)| [c.patient.clone(), format!("Testpatient{i}")])
        .collect();
    let scan = PhiScan::new(&phi);
    let text = std::fs::read_dir(out.join("alerts"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(scan.found(&text).is_empty(), "PHI in the alert events");
}

/// The engine's default limits are the documented ones (the test above reads them from
/// docs/laboratory.md's table, here checked against the engine's).
#[test]
fn the_default_limits_are_the_documented_ones() {
    use vitalflow_operators::alert::critical::default_limits;
    let limits = default_limits();
    assert_eq!(limits.len(), LIMITS.len());
    for (l, (name, codes, _, low, high)) in limits.iter().zip(LIMITS) {
        assert_eq!(
            (l.name.as_str(), l.low, l.high),
            (*name, *low, *high),
            "{l:?}"
        );
        let codes: Vec<String> = codes.iter().map(|c| (*c).to_owned()).collect();
        assert_eq!(l.codes, codes);
    }
    let docs = std::fs::read_to_string(crate::support::root().join("docs/laboratory.md")).unwrap();
    for l in &limits {
        let row = docs
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", l.name)))
            .unwrap_or_else(|| panic!("docs/laboratory.md has no row for `{}`", l.name));
        for v in [l.low, l.high].into_iter().flatten() {
            assert!(row.contains(&format!("{v}")), "{row}");
        }
        for c in &l.codes {
            assert!(row.contains(c.as_str()), "{row}");
        }
    }
}

/// Issue 37: the generator's laboratory feed through the whole pipeline: every result a valid
/// FHIR R4 laboratory Observation without PHI, and one `critical_value_detected` event for each
/// critical result the generator made, none for the others.
#[test]
fn a_generated_lab_stream_raises_one_event_per_critical_result() {
    use vitalflow_connectors::generator::{Generator, GeneratorConfig};
    let Some(python) = crate::support::python() else {
        return;
    };
    let (patients, count) = (1000u64, 5000u64);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let job = format!(
        r#"
[job]
name = "lab-stream"
workers = 2
batch-size = 1000

[sources.lab]
kind = "generator"
format = "labs"
patients = {patients}
count = {count}

[operators.ingest]
kind = "ingest"
inputs = ["lab"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "file:{key}"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[operators.tabulate]
kind = "tabulate"
inputs = ["ingest"]

[operators.lab-alerts]
kind = "alert"
inputs = ["tabulate.labs"]
key = "file:{key}"

[operators.lab-alerts.critical-values]

[sinks.fhir]
kind = "parquet"
inputs = ["canonize"]

[sinks.alerts]
kind = "jsonl"
inputs = ["lab-alerts"]
path = "alerts"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["ingest.dead-letter", "anonymize.dead-letter", "canonize.dead-letter", "lab-alerts.dead-letter"]
"#,
        key = key.display()
    );
    let (out, o) = run_job(dir.path(), &job, &[]);
    assert!(
        read_jsonl(&out.join("dead-letter")).is_empty(),
        "{}",
        show(&o)
    );

    let generator = Generator::new(GeneratorConfig {
        patients,
        count,
        labs: true,
        ..GeneratorConfig::default()
    });
    // What each critical result says, from the generator's own events.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut phi = Vec::new();
    for i in 0..count {
        let v: serde_json::Value = serde_json::from_slice(&generator.lab_event(i, None)).unwrap();
        phi.push(v["payload"]["patientId"].as_str().unwrap().to_owned());
        if generator.lab_is_critical(i) {
            let code = v["payload"]["code"].as_str().unwrap().to_owned();
            let value = v["payload"]["value"].as_f64().unwrap();
            *expected.entry(format!("{code} {value}")).or_default() += 1;
        }
    }
    let code_of = |parameter: &str| {
        LIMITS
            .iter()
            .find(|l| l.0 == parameter)
            .map(|l| l.1)
            .unwrap()
    };
    let events = read_jsonl(&out.join("alerts"));
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        assert_eq!(e["metadata"]["eventType"], "critical_value_detected", "{e}");
        let p = &e["payload"];
        let codes = code_of(p["parameter"].as_str().unwrap());
        // The generator uses each analyte's first code.
        *got.entry(format!("{} {}", codes[0], p["value"].as_f64().unwrap()))
            .or_default() += 1;
    }
    let critical: usize = expected.values().sum();
    eprintln!(
        "{count} generated results, {critical} critical: {} critical_value_detected events",
        events.len()
    );
    assert!(critical > 50, "{critical}");
    assert_eq!(got, expected);

    // Every result is a valid FHIR R4 laboratory Observation, and no patient id leaked.
    let phi_file = dir.path().join("phi.txt");
    phi.sort();
    phi.dedup();
    std::fs::write(&phi_file, phi.join("\n")).unwrap();
    let summary = crate::support::python_check(
        &python,
        "check_output.py",
        &[out.to_str().unwrap(), "--phi", phi_file.to_str().unwrap()],
    );
    assert_eq!(summary["laboratory"]["laboratory"], count, "{summary}");
    assert_eq!(summary["fhir_invalid"], 0, "{summary}");
    assert_eq!(summary["phi_hits"], 0, "{summary}");
}
