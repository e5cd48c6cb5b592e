//! Critical laboratory values under load: the generator's laboratory feed (`format = "labs"`:
//! `lab_result_available` envelopes, about 1 in 50 critical) at a paced rate, through
//! `ingest` → `tabulate` (its `labs` port) → an `alert` node with the default
//! `[critical-values]` → JSON lines, over 100,000 patients. Every alert records emission minus
//! its result's arrival (for a paced generator, the moment the result was due).
//!
//! Two runs in one process: the baseline at a tenth of the rate, then the rate (10,000
//! results/s by default), 10 s each. Printed per run: the rate achieved, the
//! `critical_value_detected` events against the critical results generated, and arrival →
//! alert p50 / p99 / p99.9 / max; then the load/baseline ratios. The figures are also written to
//! `target/bench-results/lab_alert_latency.json`.
//!
//! `cargo bench -p vitalflow-benches --bench lab_alert_latency` (`-- --rate N --seconds S` for
//! another load).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use vitalflow_connectors::generator::{Generator, GeneratorConfig};

#[path = "support/latency.rs"]
mod latency;
use latency::{Figures, alert_lines, figures, rate_and_seconds, run_job};

const PATIENTS: u64 = 100_000;

fn job_text(dir: &Path, rate: u64, seconds: u64) -> String {
    format!(
        r#"[job]
name = "lab-alert-latency"
workers = 2
batch-size = 1000
out = "{out}"

[sources.lab]
kind = "generator"
format = "labs"
patients = {PATIENTS}
count = {count}
rate = {rate}

[operators.ingest]
kind = "ingest"
inputs = ["lab"]

[operators.tabulate]
kind = "tabulate"
inputs = ["ingest"]

[operators.lab-alerts]
kind = "alert"
inputs = ["tabulate.labs"]
key = "ephemeral"

[operators.lab-alerts.critical-values]

[sinks.alerts]
kind = "jsonl"
inputs = ["lab-alerts"]
path = "alerts"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["ingest.dead-letter", "lab-alerts.dead-letter"]
"#,
        out = dir.join(format!("out-{rate}")).display(),
        count = rate * seconds,
    )
}

struct Run {
    rate: u64,
    achieved: f64,
    critical: usize,
    events: usize,
    all: Figures,
}

fn run_at(dir: &Path, rate: u64, seconds: u64) -> Run {
    let path = dir.join(format!("lab-alert-latency-{rate}.toml"));
    let text = job_text(dir, rate, seconds);
    let summary = run_job(&path, text);
    let results = summary
        .nodes
        .iter()
        .find(|n| n.name == "lab")
        .map_or(0, |n| n.records_in);
    let generator = Generator::new(GeneratorConfig {
        patients: PATIENTS,
        count: rate * seconds,
        labs: true,
        ..GeneratorConfig::default()
    });
    let critical = (0..rate * seconds)
        .filter(|&i| generator.lab_is_critical(i))
        .count();
    let mut latencies = Vec::new();
    let mut events = 0;
    let out = dir.join(format!("out-{rate}")).join("alerts");
    for v in alert_lines(&out) {
        if v["metadata"]["eventType"] == "critical_value_detected" {
            events += 1;
            latencies.push(v["payload"]["latencyMs"].as_f64().unwrap());
        }
    }
    Run {
        rate,
        achieved: results as f64 / summary.elapsed.as_secs_f64(),
        critical,
        events,
        all: figures(latencies),
    }
}

fn main() {
    let (rate, seconds) = rate_and_seconds(10_000u64);
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for r in [(rate / 10).max(1), rate] {
        println!("critical lab values at {r} results/s for {seconds} s ({PATIENTS} patients)…");
        let run = run_at(dir.path(), r, seconds);
        println!(
            "  achieved {:.0} results/s; {} critical results, {} critical_value_detected events",
            run.achieved, run.critical, run.events
        );
        let f = &run.all;
        println!(
            "  arrival → alert p50 {:.3} ms · p99 {:.3} ms · p99.9 {:.3} ms · max {:.3} ms ({} alerts)",
            f.p50, f.p99, f.p999, f.max, f.count
        );
        runs.push(run);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (base, load) = (&runs[0], &runs[1]);
    println!(
        "ratios {}/{} results/s: p50 {:.2}×, p99 {:.2}×",
        load.rate,
        base.rate,
        load.all.p50 / base.all.p50,
        load.all.p99 / base.all.p99,
    );
    let json = serde_json::json!({
        "bench": "lab_alert_latency",
        "patients": PATIENTS,
        "seconds": seconds,
        "runs": runs.iter().map(|r| serde_json::json!({
            "rate": r.rate,
            "achieved": r.achieved,
            "critical_results": r.critical,
            "critical_value_detected": r.events,
            "arrival_to_alert_ms": {"p50": r.all.p50, "p99": r.all.p99, "p999": r.all.p999, "max": r.all.max, "count": r.all.count},
        })).collect::<Vec<_>>(),
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    let results = Path::new(&target).join("bench-results");
    let _ = std::fs::create_dir_all(&results);
    let file = results.join("lab_alert_latency.json");
    std::fs::write(&file, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("figures: {}", file.display());
}
