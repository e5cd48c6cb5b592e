//! Every shipped job (`dataflows/*.toml`) writes the rows recorded in
//! `cli/tests/golden/shipped-outputs.json`: each job runs with its shipped settings on its shipped
//! inputs (the sample data for the jobs that read it, the embedded broker and its generator for
//! the Kafka jobs) and a fixed pseudonym key, and `tests/python/output_digest.py` digests every
//! sink it wrote: the row count and an order-independent digest of all rows and columns, the
//! per-run fields (wall-clock times and what follows from them, run ids, file names) left out.
//! A job whose rows differ from the golden file's fails, naming the job and the sinks. Sinks that
//! write no files are not compared here: the Kafka topics of the embedded broker (it ends with
//! the job; `alerts.rs` reads the alert topic back) and standard output.
//!
//! The golden file is written by the release build of the commit whose rows it records, with
//! `scripts/shipped-outputs BINARY`: these tests, run with `VITALFLOW_SHIPPED_OUTPUTS_BINARY`
//! set to a `vitalflow` binary, run each job with it and record what it wrote instead of
//! comparing. Run as tests (a debug build, two test threads) the jobs take about 2 minutes:
//! quickstart's 200,000 events about 75 s, clinical-pipeline's 100,000 about 45 s, icu-alerting's
//! live feed about 12 s, the others a few seconds each.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use crate::support::{self, key_file, python, python_check, root, show};

/// The golden file, from the workspace root.
const GOLDEN: &str = "cli/tests/golden/shipped-outputs.json";

/// Set to a `vitalflow` binary: the tests record what it writes in the golden file.
const BINARY_VAR: &str = "VITALFLOW_SHIPPED_OUTPUTS_BINARY";

/// Serializes the writes of the golden file while it is recorded.
static GOLDEN_LOCK: Mutex<()> = Mutex::new(());

macro_rules! shipped_jobs {
    ($($test:ident => $job:literal,)*) => {
        /// The shipped jobs, each with the test of its name.
        const JOBS: &[&str] = &[$($job),*];
        $(
            #[test]
            fn $test() {
                check($job);
            }
        )*
    };
}

/// Shipped jobs run by another test module (job, module), with no golden outputs.
const RUN_ELSEWHERE: &[(&str, &str)] = &[("bedside-alerting", "notify")];

shipped_jobs! {
    clinical_pipeline => "clinical-pipeline",
    icu_alerting => "icu-alerting",
    icu_replay => "icu-replay",
    quickstart => "quickstart",
    sample_data => "sample-data",
    vitals_flat => "vitals-flat",
    ward_vitals => "ward-vitals",
}

#[test]
fn every_shipped_job_is_tested_against_golden_outputs() {
    let mut shipped: Vec<String> = std::fs::read_dir(root().join("dataflows"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    shipped.sort();
    // Jobs that listen and deliver (MLLP in, clinical receivers out) never end on their own:
    // they run in the test of their module, against receivers of that test.
    let shipped: Vec<String> = shipped
        .into_iter()
        .filter(|j| !RUN_ELSEWHERE.iter().any(|(job, _)| job == j))
        .collect();
    let untested: Vec<&String> = shipped
        .iter()
        .filter(|j| !JOBS.contains(&j.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "shipped jobs without a test in cli/tests/shipped.rs (add them to `shipped_jobs!`): \
         {untested:?}"
    );
    let gone: Vec<&&str> = JOBS
        .iter()
        .filter(|j| !shipped.iter().any(|s| s == *j))
        .collect();
    assert!(gone.is_empty(), "tested jobs not in dataflows/: {gone:?}");
    if std::env::var_os(BINARY_VAR).is_some() {
        return;
    }
    let golden = golden();
    let missing: Vec<&String> = shipped
        .iter()
        .filter(|j| !golden.contains_key(j.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "shipped jobs without golden outputs in {GOLDEN}: {missing:?} (record them with \
         scripts/shipped-outputs and the release build of the commit that ships them)"
    );
    let stale: Vec<&String> = golden.keys().filter(|j| !shipped.contains(j)).collect();
    assert!(stale.is_empty(), "{GOLDEN} has jobs not shipped: {stale:?}");
}

/// The golden file: job → sink → `{rows, digest}`.
fn golden() -> BTreeMap<String, Value> {
    let path = root().join(GOLDEN);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {GOLDEN}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{GOLDEN} is not JSON: {e}"))
}

/// Runs the shipped job `job` and compares what every sink holds with the golden file (or, with
/// `VITALFLOW_SHIPPED_OUTPUTS_BINARY`, records it there).
fn check(job: &str) {
    let recording = std::env::var_os(BINARY_VAR).map(PathBuf::from);
    let file = format!("dataflows/{job}.toml");
    let text = std::fs::read_to_string(root().join(&file)).unwrap();
    let parts = sample_data_parts(&text);
    let data = if parts.is_empty() {
        None
    } else {
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match support::sample_data(&parts) {
            Some(dir) => Some(dir),
            None if recording.is_some() => panic!("{job} needs the sample data"),
            None => return,
        }
    };
    let Some(python) = python() else {
        assert!(recording.is_none(), "recording needs the test Python");
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let key_text = std::fs::read_to_string(&key).unwrap();
    let out = dir.path().join("out");
    let binary = recording
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vitalflow")));
    let mut cmd = Command::new(&binary);
    cmd.args(["run", &file, "--out", out.to_str().unwrap()])
        .args(["--overwrite", "--no-progress"])
        .current_dir(root());
    // Every variable the job substitutes takes its default (the embedded broker, the shipped
    // inputs, counts and rates), except the sample data's folder and the pseudonym key.
    for var in substituted(&text) {
        cmd.env_remove(var);
    }
    if let Some(data) = &data {
        cmd.env("VITALFLOW_SAMPLE_DATA", data);
    }
    for spec in key_specs(&text) {
        if let Some(var) = spec
            .strip_prefix("${")
            .and_then(|s| s.split([':', '}']).next())
        {
            cmd.env(var, format!("file:{}", key.display()));
        } else if let Some(var) = spec.strip_prefix("env:") {
            cmd.env(var, &key_text);
        } else {
            panic!(
                "{file}: the pseudonym key `{spec}` is fixed in the job file: pseudonyms cannot be \
                 compared between runs (route it through `${{VITALFLOW_KEY_SOURCE:-ephemeral}}`)"
            );
        }
    }
    let started = Instant::now();
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{file} failed: {}", show(&o));
    let seconds = started.elapsed().as_secs_f64();

    let mut args = vec![out.to_str().unwrap().to_owned()];
    if let Some(data) = &data {
        args.push(format!("--root=$VITALFLOW_SAMPLE_DATA={}", data.display()));
    }
    let dataflows = root().join("dataflows").canonicalize().unwrap();
    args.push(format!("--root=$DATAFLOWS={}", dataflows.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let digest = python_check(&python, "output_digest.py", &args);
    assert_eq!(digest["job"], job, "{file} names another job");
    let sinks = digest["sinks"].as_object().unwrap().clone();
    eprintln!(
        "{job}: ran in {seconds:.1} s with {}, {} sinks",
        binary.display(),
        sinks.len()
    );

    if recording.is_some() {
        let _lock = GOLDEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let path = root().join(GOLDEN);
        let mut all: BTreeMap<String, Value> = std::fs::read_to_string(&path)
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or_default();
        let sinks: BTreeMap<String, Value> = sinks.into_iter().collect();
        all.insert(job.to_owned(), serde_json::to_value(sinks).unwrap());
        let text = serde_json::to_string_pretty(&all).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }

    let golden = golden();
    let Some(expected) = golden.get(job).and_then(Value::as_object) else {
        panic!(
            "the shipped job {job} has no golden outputs in {GOLDEN}: record them with \
             scripts/shipped-outputs and the release build of the commit that ships it"
        );
    };
    let mut problems = String::new();
    for (sink, want) in expected {
        match sinks.get(sink) {
            None => {
                let _ = writeln!(
                    problems,
                    "  sink `{sink}`: not written (golden: {})",
                    describe(want)
                );
            }
            Some(got) if got != want => {
                let _ = writeln!(
                    problems,
                    "  sink `{sink}`: {} (golden: {})",
                    describe(got),
                    describe(want)
                );
            }
            Some(_) => {}
        }
    }
    for (sink, got) in &sinks {
        if !expected.contains_key(sink) {
            let _ = writeln!(
                problems,
                "  sink `{sink}`: {} (not in the golden file)",
                describe(got)
            );
        }
    }
    assert!(
        problems.is_empty(),
        "the shipped job {job} no longer writes the rows recorded in {GOLDEN}:\n{problems}\
         (a sink's digest covers all its rows and columns but the per-run fields; see \
         tests/python/output_digest.py)"
    );
}

/// `N rows, digest XXXXXXXXXXXX` of a sink's `{rows, digest}`.
fn describe(sink: &Value) -> String {
    let digest = sink["digest"].as_str().unwrap_or("?");
    format!(
        "{} rows, digest {}",
        sink["rows"],
        digest.get(..16).unwrap_or(digest)
    )
}

/// The variables a job file substitutes (`${NAME}`, `${NAME:-default}`).
fn substituted(text: &str) -> Vec<&str> {
    let mut vars: Vec<&str> = text
        .split("${")
        .skip(1)
        .filter_map(|s| s.split([':', '}']).next())
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    vars.sort_unstable();
    vars.dedup();
    vars
}

/// What the job reads below the sample data: `PART` of each `${VITALFLOW_SAMPLE_DATA...}/PART"`.
fn sample_data_parts(text: &str) -> Vec<String> {
    text.split("${VITALFLOW_SAMPLE_DATA")
        .skip(1)
        .filter_map(|s| {
            let rest = s.split_once('}')?.1.strip_prefix('/')?;
            Some(rest.split('"').next()?.to_owned())
        })
        .collect()
}

/// The pseudonym keys of the job's nodes: the value of every `key = "..."` line that names a key
/// (`ephemeral`, `env:`, `file:`, or a substitution), not a field.
fn key_specs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("key = \""))
        .filter_map(|v| v.split('"').next())
        .filter(|v| {
            *v == "ephemeral" || v.starts_with("env:") || v.starts_with("file:") || v.contains("${")
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_job_file_scan_finds_variables_sample_data_and_keys() {
    let text = r#"path = "${VITALFLOW_SAMPLE_DATA:-../../shared/data}/vitals/s1.csv"
brokers = "${KAFKA_BROKERS:-embedded}"
count = ${VITALFLOW_FEED_COUNT:-100000}
key = "patient_id"
key = "${VITALFLOW_KEY_SOURCE:-ephemeral}"
key = "env:VITALFLOW_PSEUDONYM_KEY"
"#;
    assert_eq!(
        substituted(text),
        [
            "KAFKA_BROKERS",
            "VITALFLOW_FEED_COUNT",
            "VITALFLOW_KEY_SOURCE",
            "VITALFLOW_SAMPLE_DATA"
        ]
    );
    assert_eq!(sample_data_parts(text), ["vitals/s1.csv"]);
    assert_eq!(
        key_specs(text),
        [
            "${VITALFLOW_KEY_SOURCE:-ephemeral}",
            "env:VITALFLOW_PSEUDONYM_KEY"
        ]
    );
}
