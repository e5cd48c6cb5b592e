//! `vitalflow validate` and `vitalflow graph`, usage errors, and how the process starts.
#![allow(clippy::unwrap_used)]

use crate::support::{root, show, vitalflow};

#[test]
fn validate_accepts_every_shipped_job() {
    let mut jobs = 0;
    for entry in std::fs::read_dir(root().join("dataflows")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        jobs += 1;
        let o = vitalflow(&["validate", path.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", path.display(), show(&o));
    }
    assert!(jobs >= 3, "{jobs} job files in dataflows/");
}

#[test]
fn validate_reports_every_mistake_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("broken.toml");
    // Three distinct mistakes: an unknown field (line 5), an edge to a missing node (line 9) and
    // alerts-like mismatched ports: audit records wired into a Parquet sink (line 17).
    std::fs::write(
        &job,
        r#"[sources.gen]
kind = "generator"
seed = 7
count = 100
colour = "blue"

[operators.ingest]
kind = "ingest"
inputs = ["genn"]

[operators.audit]
kind = "audit"
inputs = ["ingest.events"]

[sinks.fhir]
kind = "parquet"
inputs = ["audit"]
"#,
    )
    .unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(job.to_str().unwrap()))
        .filter(|l| !l.ends_with("problem(s)"))
        .collect();
    assert_eq!(errors.len(), 3, "{}", show(&o));
    let at = |line: usize, col: usize, needle: &str| {
        let prefix = format!("{}:{line}:{col}: ", job.display());
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&prefix) && e.contains(needle)),
            "no `{needle}` at {line}:{col} in:\n{stderr}"
        );
    };
    at(5, 1, "unknown field `colour`");
    at(9, 11, "no node named `genn`");
    at(
        17,
        11,
        "carries audit records, but a parquet node takes FHIR resources",
    );
}

#[test]
fn validate_reports_a_kafka_max_drift_that_is_not_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("drift.toml");
    let source = |drift: &str| {
        format!(
            r#"[sources.vitals]
kind = "kafka"
topic = "vitals"
format = "envelope"
max-drift = "{drift}"

[sinks.discard]
kind = "blackhole"
inputs = ["vitals"]
"#
        )
    };
    std::fs::write(&job, source("soon")).unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let wanted = format!(
        "{}:5:13: `sources.vitals.max-drift`: `soon` is neither a duration (e.g. `30s`, `1m`) nor `off`",
        job.display()
    );
    assert!(stderr.contains(&wanted), "{}", show(&o));
    for good in ["off", "30s", "5m"] {
        std::fs::write(&job, source(good)).unwrap();
        let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(0), "max-drift {good}: {}", show(&o));
    }
}

#[test]
fn validate_reports_unknown_kinds_cycles_and_unset_variables() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("cycle.toml");
    std::fs::write(
        &job,
        r#"[sources.gen]
kind = "generatr"

[operators.a]
kind = "canonize"
inputs = ["b"]

[operators.b]
kind = "canonize"
inputs = ["a"]

[sinks.out]
kind = "jsonl"
inputs = ["a"]
path = "${VITALFLOW_TEST_UNSET_VARIABLE}"
"#,
    )
    .unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(":2:8: unknown source kind `generatr`"),
        "{stderr}"
    );
    assert!(stderr.contains("cycle"), "{stderr}");
    assert!(
        stderr.contains(":15:9: environment variable `VITALFLOW_TEST_UNSET_VARIABLE` is not set"),
        "{stderr}"
    );
}

#[test]
fn graph_prints_a_mermaid_flowchart_naming_every_node() {
    let o = vitalflow(&["graph", "dataflows/quickstart.toml"], &[]);
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("flowchart LR\n"), "{out}");
    for node in [
        "generator",
        "ingest",
        "anonymize",
        "canonize",
        "audit",
        "fhir",
        "audit_log",
        "dead_letter",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(node)),
            "{node} missing:\n{out}"
        );
    }
    assert!(out.contains("ingest -.->|events| audit"), "{out}");
    let dot = vitalflow(
        &["graph", "--format", "dot", "dataflows/quickstart.toml"],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&dot.stdout).contains("\"canonize\" -> \"fhir\""),
        "{}",
        show(&dot)
    );
}

/// `vitalflow` runs with its allocator keeping freed memory for 10 s (the binary's
/// `ALLOCATOR_PURGE_DELAY_MS`) unless the environment sets the delay, which is kept: the
/// environment of the process that serves shows which.
#[cfg(target_os = "linux")]
#[test]
fn the_allocator_keeps_freed_memory_10_s_unless_the_environment_says_otherwise() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    for (set, expected) in [(None, "10000"), (Some("250"), "250")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vitalflow"));
        command
            .arg("broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(v) = set {
            command.env("MIMALLOC_PURGE_DELAY", v);
        }
        let mut child = command.spawn().unwrap();
        // The broker's first line comes from the process image that serves.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(line.starts_with("bootstrap: "), "{line}");
        let wanted = format!("MIMALLOC_PURGE_DELAY={expected}");
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MIMALLOC_"))
            .collect();
        assert_eq!(vars, [wanted], "set: {set:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = vitalflow(&["run"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = vitalflow(&["run", "does-not-exist.toml"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn a_missing_key_refuses_to_start_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let o = vitalflow(
        &[
            "run",
            "dataflows/quickstart.toml",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        &[("VITALFLOW_KEY_SOURCE", "env:VITALFLOW_TEST_NO_SUCH_KEY")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("quickstart.toml:") && stderr.contains("operators.anonymize.key"),
        "{stderr}"
    );
}

/// The diagnostics `validate` printed for `job` (one per line, the count line left out).
fn diagnostics<'a>(stderr: &'a str, job: &std::path::Path) -> Vec<&'a str> {
    let prefix = job.to_str().unwrap();
    stderr
        .lines()
        .filter(|l| l.starts_with(prefix) && !l.ends_with("problem(s)"))
        .collect()
}

/// The 1-based line and column of the first `needle` after `after` in `text`.
fn line_col(text: &str, after: &str, needle: &str) -> (usize, usize) {
    let start = text.find(after).unwrap();
    let at = start + text[start..].find(needle).unwrap();
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

#[test]
fn validate_reports_mistakes_of_four_kinds_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("four.toml");
    // A structural mistake (a wrong type, in the sink the PHI reaches), an unknown node, an
    // expression type error (in the node upstream of the sink) and PHI wired into a sink.
    let text = r#"[sources.monitors]
kind = "file"
path = "flat.jsonl"
format = "json"
fields = [
  { name = "patient_id", type = "string", phi = "hash" },
  { name = "hr", type = "integer" },
]

[operators.score]
kind = "map"
inputs = ["monitors"]
[operators.score.fields]
label = "patient_id > 3"
tachy = "hr > 120"

[operators.fast]
kind = "filter"
inputs = ["scores"]
condition = "tachy"

[sinks.rows]
kind = "parquet"
inputs = ["score"]
path = "rows"
roll-rows = "lots"
"#;
    std::fs::write(&job, text).unwrap();
    std::fs::write(dir.path().join("flat.jsonl"), "").unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors = diagnostics(&stderr, &job);
    let at = |(line, col): (usize, usize), needles: &[&str]| {
        let prefix = format!("{}:{line}:{col}: ", job.display());
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&prefix) && needles.iter().all(|n| e.contains(n))),
            "no {needles:?} at {line}:{col} in:\n{stderr}"
        );
    };
    at(
        line_col(text, "roll-rows = ", "\"lots\""),
        &["`sinks.rows.roll-rows`", "expected a whole number"],
    );
    at(
        line_col(text, "[operators.fast]", "\"scores\""),
        &["no node named `scores`", "did you mean `score`?"],
    );
    at(
        line_col(text, "label = ", "patient_id"),
        &["`operators.score.fields.label`", "string", "integer"],
    );
    at(
        line_col(text, "[sinks.rows]", "\"score\""),
        &["PHI", "`patient_id`", "anonymize"],
    );
    assert_eq!(errors.len(), 4, "{stderr}");
    assert!(!stderr.contains("usize"), "{stderr}");
}

#[test]
fn validate_reports_a_reused_node_name_without_a_false_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("reused.toml");
    let text = r#"[sources.feed]
kind = "generator"

[operators.ingest]
kind = "ingest"
inputs = ["feed"]

[operators.anon]
kind = "anonymize"
inputs = ["ingest"]
key = "ephemeral"

[operators.feed]
kind = "canonize"
inputs = ["anon"]

[sinks.events]
kind = "jsonl"
inputs = ["ingest.events"]
path = "events"
"#;
    std::fs::write(&job, text).unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors = diagnostics(&stderr, &job);
    let (line, col) = line_col(text, "[operators.feed]", "feed");
    let prefix = format!("{}:{line}:{col}: ", job.display());
    assert!(
        errors.len() == 1
            && errors[0].starts_with(&prefix)
            && errors[0].contains("`feed` is already used by `sources.feed`"),
        "one diagnostic, at the second `feed`:\n{stderr}"
    );
    assert!(!stderr.contains("cycle"), "{stderr}");
}

#[test]
fn validate_suggests_the_closest_table_key_kind_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("typos.toml");
    let text = r#"[job]
workers = "two"

[sources.gen]
kind = "generator"
cuont = 100

[operators.ingest]
kind = "injest"
inputs = ["gen"]

[operators.anon]
kind = "anonymize"
inputs = ["gen.outt"]
key = "ephemeral"

[sink.out]
kind = "jsonl"
"#;
    std::fs::write(&job, text).unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors = diagnostics(&stderr, &job);
    let at = |(line, col): (usize, usize), needles: &[&str]| {
        let prefix = format!("{}:{line}:{col}: ", job.display());
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&prefix) && needles.iter().all(|n| e.contains(n))),
            "no {needles:?} at {line}:{col} in:\n{stderr}"
        );
    };
    at(
        line_col(text, "workers = ", "\"two\""),
        &["`job.workers`", "expected a whole number"],
    );
    at(
        line_col(text, "[sources.gen]", "cuont"),
        &["unknown field `cuont`", "did you mean `count`?"],
    );
    at(
        line_col(text, "[operators.ingest]", "\"injest\""),
        &["unknown operator kind `injest`", "did you mean `ingest`?"],
    );
    at(
        line_col(text, "[operators.anon]", "\"gen.outt\""),
        &["no port `outt`", "did you mean `out`?"],
    );
    at(
        line_col(text, "[sink.out]", "sink"),
        &["unknown table `sink`", "did you mean `sinks`?"],
    );
    assert!(!stderr.contains("usize"), "{stderr}");
}

/// The commands in the comments of the job files over the sample data work as written: run from
/// the repository's folder, with the sample data in `shared/data` beside it.
#[test]
fn the_sample_data_commands_in_job_comments_work_as_written() {
    let Some(data) =
        crate::support::sample_data(&["fhir-r4", "vitals/s00001-numerics.csv", "hl7v2"])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("vitalflow");
    std::fs::create_dir_all(checkout.join("dataflows")).unwrap();
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    std::os::unix::fs::symlink(&data, dir.path().join("shared/data")).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_vitalflow"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (job, name) in [
        ("sample-data.toml", "sample-data"),
        ("icu-replay.toml", "icu-replay"),
    ] {
        let text =
            std::fs::read_to_string(crate::support::root().join("dataflows").join(job)).unwrap();
        std::fs::write(checkout.join("dataflows").join(job), &text).unwrap();
        let command = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .map(str::trim)
            .find(|l| l.contains("vitalflow run"))
            .unwrap_or_else(|| panic!("{job}: no `vitalflow run` in its comment"));
        let o = std::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(&checkout)
            .env("PATH", &path)
            .env_remove("VITALFLOW_SAMPLE_DATA")
            .output()
            .unwrap();
        assert!(o.status.success(), "{job}: `{command}`: {}", show(&o));
        let out = checkout.join("out").join(name);
        let written = std::fs::read_dir(&out).map_or(0, Iterator::count);
        assert!(
            written > 0,
            "{job}: nothing in {}: {}",
            out.display(),
            show(&o)
        );
    }
}
