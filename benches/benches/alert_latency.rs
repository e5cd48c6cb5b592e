//! Alert latency under load: the shipped `dataflows/icu-alerting.toml` (its join to the patient
//! context, NEWS2 and the critical-value rules, unchanged) fed by the generator's flat readings
//! at a paced rate (each reading's event time is the wall clock as it is made, its arrival the
//! moment it was due), over 100,000 patients; the context table (133,000 versions) from a file.
//! Every alert records emission minus the triggering reading's arrival.
//!
//! Two runs in one process: the baseline at 10,000 readings/s, then 100,000 readings/s, 10 s
//! each. Printed per run: the rate achieved, the alert events, and arrival → alert p50 / p99 /
//! p99.9 / max over every alert, and again without the alerts of the first second (while the
//! table is still being read, readings wait for it); then the 100k/10k ratios. The figures are
//! also written to `target/bench-results/alert_latency.json`.
//!
//! `cargo bench -p vitalflow-benches --bench alert_latency` (`-- --rate N --seconds S` for
//! another load).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use vitalflow_connectors::generator::{Generator, GeneratorConfig};

#[path = "support/latency.rs"]
mod latency;
use latency::{Figures, alert_lines, figures, rate_and_seconds, run_job};

const PATIENTS: u64 = 100_000;
const JOB: &str = include_str!("../../dataflows/icu-alerting.toml");

/// The shipped job's join and alert node, fed by the paced generator and a context file.
fn job_text(dir: &Path, rate: u64, seconds: u64) -> String {
    let start = JOB.find("[operators.context-at-reading]").unwrap();
    let end = JOB.find("[sinks.alert-events]").unwrap();
    let operators = JOB[start..end].replace("${VITALFLOW_KEY_SOURCE:-ephemeral}", "ephemeral");
    format!(
        r#"[job]
name = "alert-latency"
workers = 2
batch-size = 1000
out = "{out}"

[sources.vitals]
kind = "generator"
format = "flat"
patients = {PATIENTS}
count = {count}
rate = {rate}

[sources.patient-context]
kind = "file"
path = "{context}"
format = "json"
event-time = "since"
key = "patient_id"
fields = [
  {{ name = "patient_id", type = "string", phi = "hash" }},
  {{ name = "since", type = "timestamp", format = "epoch-ms", phi = "date" }},
  {{ name = "ward", type = "string" }},
  {{ name = "on_oxygen", type = "boolean" }},
  {{ name = "spo2_scale", type = "integer" }},
]

{operators}
[sinks.alerts]
kind = "jsonl"
inputs = ["icu-alerts"]
path = "alerts"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["vitals.dead-letter", "patient-context.dead-letter", "context-at-reading.dead-letter", "icu-alerts.dead-letter"]
"#,
        out = dir.join(format!("out-{rate}")).display(),
        count = rate * seconds,
        context = dir.join("context.jsonl").display(),
    )
}

struct Run {
    rate: u64,
    achieved: f64,
    events: u64,
    all: Figures,
    steady: Figures,
}

fn run_at(dir: &Path, rate: u64, seconds: u64) -> Run {
    let path = dir.join(format!("alert-latency-{rate}.toml"));
    let text = job_text(dir, rate, seconds);
    let summary = run_job(&path, text);
    let readings = summary
        .nodes
        .iter()
        .find(|n| n.name == "vitals")
        .map_or(0, |n| n.records_in);
    let events = summary.alerts.iter().flat_map(|a| a.events.values()).sum();
    // Every alert event's latency and emission time, from the JSON-lines output.
    let mut alerts: Vec<(String, f64)> = Vec::new();
    let out = dir.join(format!("out-{rate}")).join("alerts");
    for v in alert_lines(&out) {
        let emitted = v["payload"]["emittedAt"].as_str().unwrap().to_owned();
        alerts.push((emitted, v["payload"]["latencyMs"].as_f64().unwrap()));
    }
    alerts.sort_by(|a, b| a.0.cmp(&b.0));
    let first = alerts
        .first()
        .and_then(|(t, _)| chrono::DateTime::parse_from_rfc3339(t).ok());
    let steady: Vec<f64> = alerts
        .iter()
        .filter(|(t, _)| {
            let t = chrono::DateTime::parse_from_rfc3339(t).ok();
            matches!((first, t), (Some(f), Some(t)) if t - f >= chrono::Duration::seconds(1))
        })
        .map(|(_, l)| *l)
        .collect();
    Run {
        rate,
        achieved: readings as f64 / summary.elapsed.as_secs_f64(),
        events,
        all: figures(alerts.iter().map(|(_, l)| *l).collect()),
        steady: figures(steady),
    }
}

fn show(what: &str, f: &Figures) {
    println!(
        "  {what:<22} p50 {:>8.3} ms · p99 {:>8.3} ms · p99.9 {:>8.3} ms · max {:>8.3} ms ({} alerts)",
        f.p50, f.p99, f.p999, f.max, f.count
    );
}

fn main() {
    let (rate, seconds) = rate_and_seconds(100_000u64);
    let dir = tempfile::tempdir().unwrap();
    // The patients' context: every patient's admission, a third moving to the ICU on oxygen.
    let generator = Generator::new(GeneratorConfig {
        patients: PATIENTS,
        count: PATIENTS * 10,
        ..GeneratorConfig::default()
    });
    let mut context = generator.context_lines().join("\n");
    context.push('\n');
    std::fs::write(dir.path().join("context.jsonl"), context).unwrap();

    let baseline_rate = (rate / 10).max(1);
    let mut runs = Vec::new();
    for r in [baseline_rate, rate] {
        println!("alert latency at {r} readings/s for {seconds} s ({PATIENTS} patients)…");
        let run = run_at(dir.path(), r, seconds);
        println!(
            "  achieved {:.0} readings/s, {} alert events",
            run.achieved, run.events
        );
        show("arrival → alert", &run.all);
        show("after the first second", &run.steady);
        runs.push(run);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (base, load) = (&runs[0], &runs[1]);
    println!(
        "ratios {}/{} readings/s: p50 {:.2}×, p99 {:.2}× (after the first second: p50 {:.2}×, p99 {:.2}×)",
        load.rate,
        base.rate,
        load.all.p50 / base.all.p50,
        load.all.p99 / base.all.p99,
        load.steady.p50 / base.steady.p50,
        load.steady.p99 / base.steady.p99,
    );
    let json = serde_json::json!({
        "bench": "alert_latency",
        "patients": PATIENTS,
        "seconds": seconds,
        "runs": runs.iter().map(|r| serde_json::json!({
            "rate": r.rate,
            "achieved": r.achieved,
            "alert_events": r.events,
            "arrival_to_alert_ms": {"p50": r.all.p50, "p99": r.all.p99, "p999": r.all.p999, "max": r.all.max, "count": r.all.count},
            "after_first_second_ms": {"p50": r.steady.p50, "p99": r.steady.p99, "p999": r.steady.p999, "max": r.steady.max, "count": r.steady.count},
        })).collect::<Vec<_>>(),
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    let results = Path::new(&target).join("bench-results");
    let _ = std::fs::create_dir_all(&results);
    let file = results.join("alert_latency.json");
    std::fs::write(&file, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("figures: {}", file.display());
}
