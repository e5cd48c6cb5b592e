//! Runnable examples of embedding vitalflow in a Rust program, in `examples/`:
//!
//! * `run_job`: load a job file, run it, print its summary
//!   (`cargo run --example run_job [JOB] [OUT]`);
//! * `job_from_string`: build a job from TOML in code, see its diagnostics, run it
//!   (`cargo run --example job_from_string`);
//! * `consume_alerts`: run an alerting job into a Kafka topic and consume its alert events
//!   (`cargo run --example consume_alerts [-- --brokers HOST:PORT]`).
//!
//! This library holds what they share: where they write, and how they print a run's summary.

use std::path::PathBuf;

use vitalflow_engine::{RunObserver, RunSummary};

/// The output folder of an example's run of `job`: `vitalflow-examples/<job>` under the
/// system's temporary folder. Each run replaces the previous one's output there.
#[must_use]
pub fn temp_out(job: &str) -> PathBuf {
    std::env::temp_dir().join("vitalflow-examples").join(job)
}

/// A run observer that shows what the engine has for the user (the embedded broker's address,
/// the checkpoint a run resumes from) on standard error, and ignores the progress snapshots.
pub struct Messages;

impl RunObserver for Messages {
    fn message(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// Prints a run's summary on standard output: the run, one row per node (records in, out,
/// rejected, dropped, files written), the records read and where the output went.
pub fn print_summary(summary: &RunSummary) {
    println!(
        "job {} · run {} · {} worker(s) · {:.2} s",
        summary.job,
        summary.run_id,
        summary.workers,
        summary.elapsed.as_secs_f64()
    );
    println!(
        "{:<16} {:<12} {:>10} {:>10} {:>9} {:>8} {:>6}",
        "node", "kind", "in", "out", "rejected", "dropped", "files"
    );
    for n in &summary.nodes {
        println!(
            "{:<16} {:<12} {:>10} {:>10} {:>9} {:>8} {:>6}",
            n.name, n.kind, n.records_in, n.records_out, n.rejected, n.dropped, n.files
        );
    }
    for a in &summary.alerts {
        let events: Vec<String> = a
            .events
            .iter()
            .map(|(kind, n)| format!("{n} {}", kind.rsplit('.').next().unwrap_or(kind)))
            .collect();
        println!("{} · rule {}: {}", a.node, a.rule, events.join(", "));
    }
    println!("source records: {}", summary.source_records());
    println!("output: {}", summary.out.display());
}
