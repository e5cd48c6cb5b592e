//! Helpers shared by the end-to-end tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs the `vitalflow` binary.
pub fn vitalflow(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vitalflow"));
    cmd.args(args).current_dir(root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// stdout and stderr of a run, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The Python with the test dependencies, or `None` (after a loud message) when it is missing
/// and not required.
pub fn python() -> Option<String> {
    let python = std::env::var("VITALFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import pyarrow, duckdb, fhir.resources"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("VITALFLOW_REQUIRE_PYTHON").is_err(),
        "VITALFLOW_REQUIRE_PYTHON is set but {python} lacks pyarrow/duckdb/fhir.resources"
    );
    eprintln!("!!! SKIPPED: {python} lacks pyarrow, duckdb or fhir.resources; run scripts/test");
    None
}

/// The shared sample data, or `None` (after a loud message) when it is absent.
pub fn sample_data() -> Option<PathBuf> {
    let dir = std::env::var("VITALFLOW_SAMPLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/data"));
    if dir.join("fhir-r4").is_dir() {
        return Some(dir.canonicalize().unwrap());
    }
    assert!(
        std::env::var("VITALFLOW_REQUIRE_SAMPLE_DATA").is_err(),
        "VITALFLOW_REQUIRE_SAMPLE_DATA is set but {} is missing",
        dir.display()
    );
    eprintln!("!!! SKIPPED: sample data not found at {}", dir.display());
    None
}

/// Runs `tests/python/<script>` and returns its stdout as JSON; panics with its output on failure.
pub fn python_check(python: &str, script: &str, args: &[&str]) -> serde_json::Value {
    let o = Command::new(python)
        .arg(root().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script} failed: {}", show(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", show(&o)))
}

/// A copy of a shipped job file with `replacements` applied, written into `dir`.
pub fn job_variant(shipped: &str, dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join(shipped)).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{shipped} no longer contains `{from}`");
        text = text.replace(from, to);
    }
    let path = dir.join(Path::new(shipped).file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

/// A pseudonymization key file.
pub fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("pseudonym.key");
    std::fs::write(&path, "test-key-0123456789abcdef-not-a-secret\n").unwrap();
    path
}

/// Every file below `dir`, except those under `dead-letter/`.
pub fn output_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "dead-letter") {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Writes `text` as a job file in `dir`, runs it into `dir/out` with `envs`, and returns the
/// output folder and what the run printed; panics (with the output) if the run fails.
pub fn run_job(dir: &Path, text: &str, envs: &[(&str, &str)]) -> (PathBuf, Output) {
    let job = dir.join("job.toml");
    std::fs::write(&job, text).unwrap();
    let out = dir.join("out");
    let o = vitalflow(
        &["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()],
        envs,
    );
    assert!(o.status.success(), "{}", show(&o));
    (out, o)
}

/// Every JSON line of every file below `dir`.
pub fn read_jsonl(dir: &Path) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for f in output_files(dir) {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            rows.push(serde_json::from_str(line).unwrap());
        }
    }
    rows
}
