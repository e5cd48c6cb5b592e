//! The four stages end to end into Parquet: FHIR validity, no PHI, worker-count independence,
//! and the shared sample data.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use vitalflow_connectors::generator::{Generator, GeneratorConfig};

use crate::support::{
    PhiScan, job_variant, key_file, output_files, python, python_check, sample_data,
    scannable_text, show, vitalflow,
};

/// The quickstart job, smaller: 20,000 events of 200 patients in 4 batches.
const SMALL: &[(&str, &str)] = &[
    ("count = 200000", "count = 20000"),
    ("patients = 500", "patients = 200"),
    ("batch-size = 25000", "batch-size = 5000"),
];

fn run_quickstart(dir: &Path, out: &Path, workers: &str) {
    let job = job_variant("dataflows/quickstart.toml", dir, SMALL);
    let key = format!("file:{}", key_file(dir).display());
    let o = vitalflow(
        &[
            "run",
            job.to_str().unwrap(),
            "--workers",
            workers,
            "--out",
            out.to_str().unwrap(),
        ],
        &[("VITALFLOW_KEY_SOURCE", &key)],
    );
    assert!(o.status.success(), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("20000 source records"), "{stdout}");
}

#[test]
fn quickstart_writes_fhir_r4_parquet_without_any_generator_phi() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_quickstart(dir.path(), &out, "2");

    // Every PHI value the generator produced for these events.
    let generator = Generator::new(GeneratorConfig {
        seed: 42,
        patients: 200,
        count: 20_000,
        ..GeneratorConfig::default()
    });
    let phi = generator.phi_values();
    assert!(
        phi.len() > 1000,
        "the generator should report its PHI values ({})",
        phi.len()
    );

    let files = output_files(&out);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parquet")),
        "no parquet in {files:?}"
    );
    // The input, for the checker to recompute every canonical value from.
    let inputs = dir.path().join("inputs.ndjson");
    let mut text = Vec::new();
    for i in 0..generator.count() {
        text.extend(generator.event(i));
        text.push(b'\n');
    }
    std::fs::write(&inputs, text).unwrap();
    let Some(summary) = scan_for_phi(
        dir.path(),
        &out,
        &phi,
        &["--inputs", inputs.to_str().unwrap()],
    ) else {
        return;
    };
    assert_eq!(summary["patients"], 200, "{summary}");
    assert_eq!(summary["observations"], 20_000 - 200, "{summary}");
    assert_eq!(summary["fhir_invalid"], 0, "{summary}");
    assert_eq!(summary["phi_hits"], 0, "{summary}");
    // One value a reading, two for a blood pressure: each equals the one recomputed from its input.
    assert!(
        summary["input_values"].as_u64().unwrap() > 20_000 - 200,
        "{summary}"
    );
    assert_eq!(summary["input_mismatches"], 0, "{summary}");
}

#[test]
fn one_and_two_workers_write_the_same_rows() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    run_quickstart(dir.path(), &one, "1");
    run_quickstart(dir.path(), &two, "2");
    let a = python_check(&python, "rows.py", &[one.to_str().unwrap()]);
    let b = python_check(&python, "rows.py", &[two.to_str().unwrap()]);
    assert_eq!(a["Observation"]["rows"], 19_800, "{a}");
    assert_eq!(a["Observation"]["distinct_ids"], 19_800, "{a}");
    assert_eq!(a["Patient"]["rows"], 200, "{a}");
    assert_eq!(a, b, "1 worker and 2 workers differ");
}

#[test]
fn sample_data_vitals_are_canonized_without_their_phi() {
    let Some(data) = sample_data(&["fhir-r4", "vitals/s00001-numerics.csv", "hl7v2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = vitalflow(
        &[
            "run",
            "dataflows/sample-data.toml",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("VITALFLOW_SAMPLE_DATA", data.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", show(&o));

    // PHI of the Synthea patients: names, street lines, phone numbers, identifiers, birth dates.
    let mut phi = Vec::new();
    for entry in std::fs::read_dir(data.join("fhir-r4")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for e in bundle["entry"].as_array().unwrap() {
            let r = &e["resource"];
            if r["resourceType"] != "Patient" {
                continue;
            }
            for name in r["name"].as_array().into_iter().flatten() {
                phi.extend(
                    name["given"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|g| g.as_str())
                        .map(str::to_owned),
                );
                phi.extend(name["family"].as_str().map(str::to_owned));
            }
            for a in r["address"].as_array().into_iter().flatten() {
                phi.extend(
                    a["line"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l.as_str())
                        .map(str::to_owned),
                );
                phi.extend(a["city"].as_str().map(str::to_owned));
            }
            for t in r["telecom"].as_array().into_iter().flatten() {
                phi.extend(t["value"].as_str().map(str::to_owned));
            }
            for i in r["identifier"].as_array().into_iter().flatten() {
                phi.extend(i["value"].as_str().map(str::to_owned));
            }
            phi.extend(r["birthDate"].as_str().map(str::to_owned));
            phi.extend(r["id"].as_str().map(str::to_owned));
        }
    }
    assert!(
        phi.len() >= 4 * 6,
        "expected the PHI of 4 patients, got {}",
        phi.len()
    );
    let fhir_phi = phi.len();
    phi.extend(hl7_phi(&data.join("hl7v2")));
    assert!(
        phi.len() > fhir_phi + 16 * 4,
        "{} HL7 v2 values",
        phi.len() - fhir_phi
    );

    let Some(summary) = scan_for_phi(dir.path(), &out, &phi, &[]) else {
        return;
    };
    // 4 Synthea patients, and a Patient and an Encounter from each of the 16 convertible ADT
    // messages (A01, A02, A03, A04, A08; the ORU messages give Observations only).
    assert_eq!(summary["patients"], 4 + 16, "{summary}");
    assert_eq!(summary["encounters"], 16, "{summary}");
    assert_eq!(summary["fhir_invalid"], 0, "{summary}");
    assert_eq!(summary["phi_hits"], 0, "{summary}");
    // Issue 37: laboratory results, each a valid FHIR R4 Observation (checked above): the 101
    // laboratory Observations of the Synthea bundles and the 48 OBX results of the ORU^R01
    // messages that carry one (of 54; the rest are dead-lettered below).
    let labs = &summary["laboratory"];
    assert_eq!(labs["laboratory"], 101 + 48, "{summary}");
    assert_eq!(labs["status:preliminary"], 8, "{summary}");
    assert_eq!(labs["unit_not_ucum"], 1, "{summary}");
    assert_eq!(
        labs["absent"], 3,
        "text results dropped with free text: {summary}"
    );

    // Dead-letter reasons name fields and codes, never PHI; no OBX is refused as "not a vital
    // sign" any more.
    let scan = PhiScan::new(&phi);
    let mut oru_reasons = 0;
    for file in std::fs::read_dir(out.join("dead-letter")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let reason = v["reason"].as_str().unwrap();
            assert!(scan.found(reason).is_empty(), "PHI in a dead-letter reason");
            assert!(!reason.contains("not a vital sign"), "{reason}");
            oru_reasons += usize::from(reason.starts_with("ORU^R01 OBX["));
        }
    }
    assert_eq!(oru_reasons, 54 - 48);
    let by_code = &summary["by_code"];
    // Synthea: weight, height, BMI, blood pressure, oral temperature; the ICU record: heart rate,
    // respiratory rate, SpO2, blood pressure, mean arterial pressure.
    for code in [
        "29463-7", "8302-2", "39156-5", "85354-9", "8310-5", "8867-4", "9279-1", "59408-5",
        "8478-0",
    ] {
        assert!(
            by_code[code].as_u64().unwrap_or(0) > 0,
            "no {code} in {summary}"
        );
    }
    // The ICU record alone has 1,936 minutes of heart rate (0 = not connected is skipped).
    assert!(by_code["8867-4"].as_u64().unwrap() > 1500, "{summary}");
}

/// Identifying values of the patients of the convertible HL7 v2 sample messages (ADT and ORU),
/// read with a plain split of the PID segment: identifiers (PID-2, PID-3), names (PID-5), street
/// and city (PID-11) and SSN (PID-19), those of 5 characters or more.
fn hl7_phi(dir: &Path) -> Vec<String> {
    let mut phi = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "hl7") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let segments: Vec<&str> = text.split(['\r', '\n']).collect();
        let msh: Vec<&str> = segments[0].split('|').collect();
        let adt = [
            "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A08", "ORU^R01",
        ]
        .iter()
        .any(|t| msh.get(8).is_some_and(|m| m.starts_with(t)));
        let Some(pid) = segments
            .iter()
            .find(|s| s.starts_with("PID|"))
            .filter(|_| adt)
        else {
            continue;
        };
        let fields: Vec<&str> = pid.split('|').collect();
        let field = |n: usize| fields.get(n).copied().unwrap_or_default();
        let first = |s: &str| s.split(['^', '&']).next().unwrap_or_default().to_owned();
        for rep in field(3).split('~').chain(field(2).split('~')) {
            phi.push(first(rep));
        }
        for rep in field(5).split('~') {
            phi.extend(rep.split(['^', '&']).take(3).map(str::to_owned));
        }
        for rep in field(11).split('~') {
            let parts: Vec<&str> = rep.split('^').collect();
            phi.push(first(parts[0]));
            phi.extend(parts.get(2).map(|c| (*c).to_owned()));
        }
        phi.push(field(19).to_owned());
    }
    // (Mostly-zero ids like `0000000001` also number the output's file parts.)
    phi.retain(|v| v.trim().len() >= 5 && v.matches('0').count() * 2 < v.len());
    phi
}

/// Scans every output file except `dead-letter/` for each PHI value: every decoded Parquet value
/// (other files' bytes) here, then again with the independent reader, given `args` too. Returns
/// the reader's summary (`None` when Python is missing and not required).
fn scan_for_phi(
    dir: &Path,
    out: &Path,
    phi: &[String],
    args: &[&str],
) -> Option<serde_json::Value> {
    let scan = PhiScan::new(phi);
    for file in &output_files(out) {
        let found = scan.found(&scannable_text(file));
        assert!(
            found.is_empty(),
            "{} contains PHI values #{found:?}",
            file.display()
        );
    }
    let python = python()?;
    let phi_file = dir.join("phi.txt");
    std::fs::write(&phi_file, phi.join("\n")).unwrap();
    Some(python_check(
        &python,
        "check_output.py",
        &[
            &[out.to_str().unwrap(), "--phi", phi_file.to_str().unwrap()],
            args,
        ]
        .concat(),
    ))
}
