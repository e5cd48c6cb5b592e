//! The examples, built as `cargo run --example NAME` builds them and run from the repository
//! root; their output is checked against what their jobs must produce.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The examples' executables by name, built once, as `cargo run --example` builds them.
fn executables() -> &'static BTreeMap<String, PathBuf> {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args([
            "build",
            "--quiet",
            "--package",
            "vitalflow-examples",
            "--examples",
            "--message-format=json-render-diagnostics",
        ]);
        // The profile the tests were built with (`cargo test --release` or not).
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let output = cargo
            .current_dir(root())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "building the examples failed");
        let mut built = BTreeMap::new();
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let is_example = message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "example"));
            if message["reason"] == "compiler-artifact"
                && is_example
                && let (Some(name), Some(exe)) = (
                    message["target"]["name"].as_str(),
                    message["executable"].as_str(),
                )
            {
                built.insert(name.to_owned(), PathBuf::from(exe));
            }
        }
        built
    })
}

/// Runs an example from the repository root; fails unless it succeeds within `limit`. Returns
/// its standard output and how long it ran.
fn run_example(name: &str, args: &[&str], limit: Duration) -> (String, Duration) {
    let exe = executables()
        .get(name)
        .unwrap_or_else(|| panic!("no example `{name}` was built: {:?}", executables()));
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while waiting, so that a full pipe does not hold the example up.
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read_out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let read_err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("example `{name}` did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let (stdout, stderr) = (read_out.join().unwrap(), read_err.join().unwrap());
    assert!(
        status.success(),
        "example `{name}` failed ({status})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, elapsed)
}

/// One row of the summary's node table.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    kind: String,
    records_in: u64,
    records_out: u64,
    rejected: u64,
    dropped: u64,
    files: u64,
}

/// The summary's node table, by node name.
fn summary_rows(stdout: &str) -> BTreeMap<String, Row> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("node "));
    assert!(lines.next().is_some(), "no summary table in:\n{stdout}");
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .take_while(|words| words.len() == 7 && words[2].parse::<u64>().is_ok())
        .map(|w| {
            let n = |i: usize| w[i].parse::<u64>().unwrap();
            let row = Row {
                kind: w[1].to_owned(),
                records_in: n(2),
                records_out: n(3),
                rejected: n(4),
                dropped: n(5),
                files: n(6),
            };
            (w[0].to_owned(), row)
        })
        .collect()
}

/// Checks a node's kind and counts (in, out), with nothing rejected or dropped.
fn assert_node(rows: &BTreeMap<String, Row>, name: &str, kind: &str, records: (u64, u64)) {
    let row = rows
        .get(name)
        .unwrap_or_else(|| panic!("no node `{name}` in the summary: {rows:#?}"));
    assert_eq!(row.kind, kind, "node `{name}`");
    assert_eq!((row.records_in, row.records_out), records, "node `{name}`");
    assert_eq!((row.rejected, row.dropped), (0, 0), "node `{name}`");
}

/// The folder the summary's `output:` line names, which must hold the run's record.
fn output_folder(stdout: &str) -> PathBuf {
    let out = stdout
        .lines()
        .find_map(|l| l.strip_prefix("output: "))
        .unwrap_or_else(|| panic!("no `output:` line in:\n{stdout}"));
    let out = PathBuf::from(out);
    assert!(
        out.join("_vitalflow/run.json").is_file(),
        "{} holds no run",
        out.display()
    );
    out
}

#[test]
fn run_job_runs_the_quickstart() {
    let (stdout, _) = run_example("run_job", &[], Duration::from_secs(600));
    let rows = summary_rows(&stdout);
    assert_eq!(rows.len(), 8, "{rows:#?}");
    for (name, kind) in [
        ("generator", "generator"),
        ("ingest", "ingest"),
        ("anonymize", "anonymize"),
        ("canonize", "canonize"),
        ("fhir", "parquet"),
    ] {
        assert_node(&rows, name, kind, (200_000, 200_000));
    }
    // 8 batches of 25,000 records, 8 domain events each.
    assert_node(&rows, "audit", "audit", (64, 64));
    assert_node(&rows, "audit-log", "jsonl", (64, 64));
    assert_node(&rows, "dead-letter", "dead-letter", (0, 0));
    assert!(rows["fhir"].files > 0 && rows["audit-log"].files > 0);
    assert!(stdout.contains("\nsource records: 200000\n"), "{stdout}");
    let out = output_folder(&stdout);
    assert!(out.join("canonical/Observation").is_dir());
}

#[test]
fn job_from_string_reports_the_broken_job_and_runs_the_good_one() {
    let (stdout, _) = run_example("job_from_string", &[], Duration::from_secs(600));
    assert!(stdout.contains("broken.toml: 2 problem(s)\n"), "{stdout}");
    assert!(
        stdout.contains("unknown operator kind `canonise` (did you mean `canonize`?)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("`ingest.out` carries parsed clinical records (with PHI)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("job-from-string.toml: ok (8 nodes)\n"),
        "{stdout}"
    );
    let rows = summary_rows(&stdout);
    assert_eq!(rows.len(), 8, "{rows:#?}");
    for (name, kind) in [
        ("generator", "generator"),
        ("ingest", "ingest"),
        ("anonymize", "anonymize"),
        ("canonize", "canonize"),
        ("fhir", "parquet"),
    ] {
        assert_node(&rows, name, kind, (1000, 1000));
    }
    // 4 batches of 250 records, 8 domain events each.
    assert_node(&rows, "audit", "audit", (32, 32));
    assert_node(&rows, "audit-log", "jsonl", (32, 32));
    assert_node(&rows, "dead-letter", "dead-letter", (0, 0));
    assert!(rows["fhir"].files > 0 && rows["audit-log"].files > 0);
    output_folder(&stdout);
}

#[test]
fn consume_alerts_reads_every_alert_the_job_sent() {
    let (stdout, elapsed) = run_example("consume_alerts", &[], Duration::from_secs(120));
    let alerts: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("alert "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(!alerts.is_empty(), "no alert consumed:\n{stdout}");
    for alert in &alerts {
        let [event, rule, level, "patient", patient] = alert.as_slice() else {
            panic!("not an alert line: {alert:?}");
        };
        assert!(
            ["raised", "escalated", "repeated", "resolved"].contains(event),
            "{alert:?}"
        );
        assert!(
            ["news2", "desaturation", "tachycardia"].contains(rule),
            "{alert:?}"
        );
        assert!(
            ["none", "low", "low-medium", "medium", "high"].contains(level),
            "{alert:?}"
        );
        // A keyed pseudonym, not the generator's patient id.
        assert!(
            patient.len() >= 16 && patient.chars().all(|c| c.is_ascii_hexdigit()),
            "{alert:?}"
        );
    }
    let rows = summary_rows(&stdout);
    let sent = rows["alert-events"].records_out;
    assert_node(&rows, "monitors", "generator", (20_000, 20_000));
    assert_node(&rows, "icu-alerts", "alert", (20_000, sent));
    assert_node(&rows, "alert-events", "kafka", (sent, sent));
    assert_eq!(alerts.len() as u64, sent, "{stdout}");
    let consumed = format!("consumed {sent} alert event(s) from `alert-events` at ");
    assert!(stdout.contains(&consumed), "{stdout}");
    assert!(
        stdout.contains(&format!("; the job sent {sent}\n")),
        "{stdout}"
    );
    // The alerts per rule in the summary add up to those consumed.
    let per_rule: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("icu-alerts · rule "))
        .flat_map(|l| l.split_once(": ").map(|(_, events)| events.split(", ")))
        .flatten()
        .map(|e| e.split_once(' ').unwrap().0.parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_rule, sent, "{stdout}");
    // It ends by itself, in seconds (a generous bound for a busy machine).
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
