//! What the latency benchmarks (`alert_latency`, `lab_alert_latency`) share: their arguments,
//! running a job file's text, reading the alert lines it wrote, and the percentiles they print.

use std::path::Path;

use vitalflow_engine::job::Job;
use vitalflow_engine::runtime::{RunOptions, RunSummary, run};

/// Percentiles of a set of latencies (milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The percentiles of `v` (nearest rank); `NaN` for an empty set.
pub fn figures(mut v: Vec<f64>) -> Figures {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    Figures {
        count: v.len(),
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// `--rate N --seconds S` from the command line, else `rate` and 10 s.
pub fn rate_and_seconds(mut rate: u64) -> (u64, u64) {
    let mut seconds = 10u64;
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2) {
        match w[0].as_str() {
            "--rate" => rate = w[1].parse().unwrap(),
            "--seconds" => seconds = w[1].parse().unwrap(),
            _ => {}
        }
    }
    (rate, seconds)
}

/// Writes `text` to `path` and runs it on 2 workers.
pub fn run_job(path: &Path, text: String) -> RunSummary {
    std::fs::write(path, &text).unwrap();
    let job = Job::parse(path, text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    run(
        &job,
        &RunOptions {
            workers: Some(2),
            overwrite: true,
            ..RunOptions::default()
        },
    )
    .unwrap()
}

/// Every JSON line of the files in `dir` (an alert sink's folder).
pub fn alert_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            lines.push(serde_json::from_str(line).unwrap());
        }
    }
    lines
}
