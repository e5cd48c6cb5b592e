//! `dedupe`: a feed that sends readings twice, through two workers, keeps each reading once, as
//! a reference reading of the rule over the input decides, and counts the rest as dropped.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{read_jsonl, run_job};

/// The readings: 40 devices, one reading a second in all (event times never go back), a tenth
/// of them sent again 0 to 12 s later, some twice.
fn readings() -> Vec<(String, i64, i64)> {
    let mut seed: u64 = 7;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut out = Vec::new();
    let mut ts = 1_767_225_600_000_i64;
    for i in 0..3_000 {
        let device = format!("dev-{}", next(40));
        ts += 1_000;
        out.push((device.clone(), ts, 60 + i % 50));
        if next(10) == 0 {
            // The same reading again, a little later in the feed.
            for _ in 0..=next(2) {
                ts += i64::try_from(next(12_000)).unwrap();
                out.push((device.clone(), ts, 60 + i % 50));
            }
        }
    }
    out
}

/// The rule, read plainly: a reading is dropped when a kept reading of its device is at most
/// `within` apart from it in event time.
fn reference(readings: &[(String, i64, i64)], within: i64) -> Vec<(String, i64, i64)> {
    let mut kept_times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut kept = Vec::new();
    for r in readings {
        let times = kept_times.entry(&r.0).or_default();
        if times.iter().all(|t| (t - r.1).abs() > within) {
            times.push(r.1);
            kept.push(r.clone());
        }
    }
    kept
}

#[test]
fn dedupe_keeps_each_reading_once_within_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let readings = readings();
    let lines: Vec<String> = readings
        .iter()
        .map(|(d, ts, hr)| format!(r#"{{"device":"{d}","ts":{ts},"hr":{hr}}}"#))
        .collect();
    std::fs::write(dir.path().join("readings.jsonl"), lines.join("\n") + "\n").unwrap();
    let job = r#"
[job]
name = "dedupe"
workers = 2
batch-size = 500

[sources.readings]
kind = "file"
path = "readings.jsonl"
format = "json"
event-time = "ts"
key = "device"
fields = [
  { name = "device", type = "string" },
  { name = "ts", type = "timestamp", format = "epoch-ms" },
  { name = "hr", type = "integer" },
]

[operators.once]
kind = "dedupe"
inputs = ["readings"]
key = "device"
within = "10s"

[sinks.kept]
kind = "jsonl"
inputs = ["once"]
path = "kept"
"#;
    let (out, o) = run_job(dir.path(), job, &[]);
    let expected = reference(&readings, 10_000);
    let duplicates = readings.len() - expected.len();
    assert!(
        duplicates > 100,
        "{duplicates} duplicates: the input tests little"
    );
    let wanted: BTreeSet<(String, String, i64)> = expected
        .iter()
        .map(|(d, ts, hr)| {
            let t = chrono::DateTime::from_timestamp_millis(*ts).unwrap();
            (
                d.clone(),
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                *hr,
            )
        })
        .collect();
    let got: Vec<(String, String, i64)> = read_jsonl(&out.join("kept"))
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap().to_owned(),
                r["ts"].as_str().unwrap().to_owned(),
                r["hr"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "rows kept");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), wanted);
    // The summary: every reading in, the kept ones out, the duplicates dropped.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let row: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&"once"))
        .unwrap_or_else(|| panic!("no summary row for `once`:\n{stdout}"));
    let n = |i: usize| row[i].parse::<usize>().unwrap();
    assert_eq!(row[1], "dedupe", "{stdout}");
    assert_eq!(
        (n(2), n(3), n(4), n(5)),
        (readings.len(), expected.len(), 0, duplicates),
        "in, out, rejected, dropped:\n{stdout}"
    );
}
