//! Windows and joins end to end: validation at line and column, lateness and the late output,
//! a tumbling window against the same GROUP BY in DuckDB, and the as-of join against DuckDB's
//! ASOF JOIN, over the same input files.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;

use vitalflow_connectors::generator::{Generator, GeneratorConfig};

use crate::support::{
    job_variant, key_file, output_files, python, python_check, read_jsonl, run_job, scannable_text,
    show, vitalflow,
};

const FLAT_FIELDS: &str = r#"fields = [
  { name = "patient_id", type = "string" },
  { name = "ts", type = "timestamp", format = "epoch-ms" },
  { name = "ward", type = "string" },
  { name = "hr", type = "integer" },
  { name = "spo2", type = "integer" },
  { name = "rr", type = "integer" },
  { name = "temp", type = "float", nullable = true },
  { name = "sbp", type = "integer" },
  { name = "dbp", type = "integer" },
]"#;

#[test]
fn window_and_join_mistakes_are_reported_at_their_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.toml");
    let text = format!(
        r#"[sources.m]
kind = "file"
path = "m.jsonl"
format = "json"
event-time = "ts"
{FLAT_FIELDS}

[operators.no-key]
kind = "window"
inputs = ["m"]
window = "tumbling"
size = "5m"
aggregates = {{ n = "count()" }}

[operators.no-size]
kind = "window"
inputs = ["m"]
window = "sliding"
key = "patient_id"
slide = "1m"
aggregates = {{ n = "count()", hr = "median(hr)", w = "mean(ward)", x = "max(hrr)" }}

[operators.no-table]
kind = "join"
inputs = ["m"]
key = "patient_id"

[sinks.out]
kind = "jsonl"
inputs = ["no-key", "no-size", "no-table"]
path = "out"
"#
    );
    std::fs::write(&job, &text).unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let col_of = |needle: &str, sub: &str| {
        let l = text.lines().find(|l| l.contains(needle)).unwrap();
        l.find(sub).unwrap() + 1
    };
    let p = job.display();
    let expected = [
        format!(
            "{p}:{}:{}: `operators.no-key`: a window needs a `key`",
            line_of("[operators.no-key]"),
            col_of("[operators.no-key]", "no-key")
        ),
        format!(
            "{p}:{}:{}: `operators.no-size`: this window needs `size`",
            line_of("[operators.no-size]"),
            col_of("[operators.no-size]", "no-size")
        ),
        format!(
            "{p}:{}:{}: `operators.no-size.aggregates.hr`: unknown aggregate function `median`",
            line_of("median"),
            col_of("median", "median")
        ),
        format!(
            "{p}:{}:{}: `operators.no-size.aggregates.w`: `mean(ward)` takes an integer or float argument, not string",
            line_of("median"),
            col_of("median", "mean(ward)")
        ),
        format!(
            "{p}:{}:{}: `operators.no-size.aggregates.x`: unknown field `hrr`",
            line_of("median"),
            col_of("median", "hrr")
        ),
        format!(
            "{p}:{}:{}: `operators.no-table`: a join needs a `table`",
            line_of("[operators.no-table]"),
            col_of("[operators.no-table]", "no-table")
        ),
    ];
    for e in &expected {
        assert!(err.contains(e.as_str()), "missing `{e}` in:\n{err}");
    }
}

/// The generator's flat readings, shuffled within blocks of 50 lines (out of order by up to
/// about 50 readings).
fn write_flat(path: &Path, count: u64, patients: u64) {
    let g = Generator::new(GeneratorConfig {
        seed: 5,
        patients,
        count,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    });
    let mut lines: Vec<String> = (0..count).map(|i| g.flat_line(i)).collect();
    for block in lines.chunks_mut(50) {
        block.reverse();
        let n = block.len();
        block.swap(0, n / 2);
    }
    let mut text = String::new();
    for l in lines {
        let _ = writeln!(text, "{l}");
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_tumbling_window_equals_the_same_group_by_in_duckdb() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flat.jsonl");
    write_flat(&input, 8_000, 40);
    let (out, o) = run_job(
        dir.path(),
        &format!(
            r#"[job]
workers = 2
batch-size = 700

[sources.m]
kind = "file"
path = "{}"
format = "json"
event-time = "ts"
{FLAT_FIELDS}

[operators.w]
kind = "window"
inputs = ["m"]
window = "tumbling"
key = "patient_id"
size = "5m"
watermark-delay = "2m"
allowed-lateness = "10m"

[operators.w.aggregates]
readings = "count()"
hr_sum = "sum(hr)"
spo2_min = "min(spo2)"
temp_max = "max(temp)"
hr_mean = "mean(hr)"
hr_sd = "stddev(hr)"
rr_first = "first(rr)"
rr_last = "last(rr)"
wards = "count_distinct(ward)"

[sinks.windows]
kind = "parquet"
inputs = ["w"]
path = "windows"
"#,
            input.display()
        ),
        &[],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("window w: 0 late record(s)"), "{stdout}");
    let r = python_check(
        &python,
        "window_check.py",
        &[
            "window",
            input.to_str().unwrap(),
            out.join("windows").to_str().unwrap(),
            "5",
        ],
    );
    assert!(r["expected"].as_u64().unwrap() > 500, "{r}");
    assert_eq!(r["expected"], r["got"], "{r}");
    // One live row a window: a revision whose retraction is missing would be a second one.
    assert_eq!(r["got_rows"], r["expected"], "{r}");
    assert_eq!(r["live_duplicates"], 0, "{r}");
    assert_eq!(r["differ_count"], 0, "{r}");
    assert_eq!(r["bad_diff_sums"], 0, "{r}");
    assert!(r["missing"].as_array().unwrap().is_empty(), "{r}");
}

/// Writes a JSON-lines file of `(key, seconds after 2026-01-01T00:00:00Z, v)` readings.
fn write_points(path: &Path, points: &[(&str, i64, i64)]) {
    let mut text = String::new();
    for (k, s, v) in points {
        let _ = writeln!(
            text,
            r#"{{"k":"{k}","ts":{},"v":{v}}}"#,
            1_767_225_600_000 + s * 1000
        );
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn late_records_within_lateness_correct_the_window_and_later_ones_go_to_the_late_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("points.jsonl");
    // One record per batch, so the watermark moves with every record.
    write_points(
        &input,
        &[
            ("a", 10, 1),  // window [0, 60)
            ("a", 65, 2),  // watermark 65: [0, 60) is emitted (1 reading, sum 1)
            ("a", 20, 4),  // late, within 30 s of lateness: [0, 60) is corrected (2, 5)
            ("a", 100, 8), // watermark 100 passes 60 + 30: [0, 60) is final
            ("a", 30, 16), // beyond lateness: to the late output
        ],
    );
    let (out, o) = run_job(
        dir.path(),
        &format!(
            r#"[job]
workers = 2
batch-size = 1

[sources.p]
kind = "file"
path = "{}"
format = "json"
event-time = "ts"
fields = [
  {{ name = "k", type = "string" }},
  {{ name = "ts", type = "timestamp" }},
  {{ name = "v", type = "integer" }},
]

[operators.w]
kind = "window"
inputs = ["p"]
window = "tumbling"
key = "k"
size = "1m"
allowed-lateness = "30s"
aggregates = {{ n = "count()", total = "sum(v)" }}

[sinks.changes]
kind = "jsonl"
inputs = ["w"]
path = "changes"

[sinks.late]
kind = "jsonl"
inputs = ["w.late"]
path = "late"
"#,
            input.display()
        ),
        &[],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("window w: 1 late record(s) beyond the allowed lateness (to `w.late`)"),
        "{stdout}"
    );
    let mut changes: Vec<(String, i64, i64, i64, i64)> = read_jsonl(&out.join("changes"))
        .iter()
        .map(|r| {
            (
                r["window_start"].as_str().unwrap().to_owned(),
                r["n"].as_i64().unwrap(),
                r["total"].as_i64().unwrap(),
                r["revision"].as_i64().unwrap(),
                r["diff"].as_i64().unwrap(),
            )
        })
        .collect();
    changes.sort();
    let w0 = "2026-01-01T00:00:00.000Z".to_owned();
    let w1 = "2026-01-01T00:01:00.000Z".to_owned();
    assert_eq!(
        changes,
        vec![
            (w0.clone(), 1, 1, 0, -1),
            (w0.clone(), 1, 1, 0, 1),
            (w0, 2, 5, 1, 1),
            (w1, 2, 10, 0, 1),
        ]
    );
    let late = read_jsonl(&out.join("late"));
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["v"], 16);
}

#[test]
fn the_as_of_join_equals_duckdbs_asof_join_and_the_shipped_job_runs() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("flat.jsonl");
    write_flat(&stream, 3_000, 60);
    let g = Generator::new(GeneratorConfig {
        seed: 5,
        patients: 60,
        count: 3_000,
        ..GeneratorConfig::default()
    });
    let table = dir.path().join("context.jsonl");
    std::fs::write(&table, g.context_lines().join("\n") + "\n").unwrap();
    let (out, _) = run_job(
        dir.path(),
        &format!(
            r#"[job]
workers = 3
batch-size = 100

[sources.m]
kind = "file"
path = "{}"
format = "json"
event-time = "ts"
key = "patient_id"
{FLAT_FIELDS}

[sources.context]
kind = "file"
path = "{}"
format = "json"
event-time = "since"
key = "patient_id"
fields = [
  {{ name = "patient_id", type = "string" }},
  {{ name = "since", type = "timestamp" }},
  {{ name = "ward", type = "string" }},
  {{ name = "on_oxygen", type = "boolean" }},
  {{ name = "spo2_scale", type = "integer" }},
]

[operators.j]
kind = "join"
inputs = ["m"]
table = "context"
type = "left"
prefix = "adt_"

[sinks.joined]
kind = "parquet"
inputs = ["j"]
path = "joined"
"#,
            stream.display(),
            table.display()
        ),
        &[],
    );
    let r = python_check(
        &python,
        "window_check.py",
        &[
            "asof",
            stream.to_str().unwrap(),
            table.to_str().unwrap(),
            out.join("joined").to_str().unwrap(),
        ],
    );
    assert_eq!(r["expected"], 3000, "{r}");
    assert_eq!(r["got_rows"], 3000, "{r}");
    assert_eq!(r["differ_count"], 0, "{r}");
    assert!(r["missing"].as_array().unwrap().is_empty(), "{r}");

    // The shipped job: de-identified windows, no raw patient id anywhere in its output.
    let key = key_file(dir.path());
    let shipped = job_variant("dataflows/ward-vitals.toml", dir.path(), &[]);
    let out = dir.path().join("shipped");
    let o = vitalflow(
        &[
            "run",
            shipped.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[
            ("VITALFLOW_FLAT_VITALS", stream.to_str().unwrap()),
            ("VITALFLOW_PATIENT_CONTEXT", table.to_str().unwrap()),
            ("VITALFLOW_KEY_SOURCE", &format!("file:{}", key.display())),
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    let files = output_files(&out);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("vitals-5m")),
        "{files:?}"
    );
    for f in files {
        let text = scannable_text(&f);
        for p in 0..60 {
            let id = g.patient_id(p);
            assert!(!text.contains(&id), "{id} in {}", f.display());
        }
    }
}
