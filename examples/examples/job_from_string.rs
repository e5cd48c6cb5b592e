//! Builds a job from a TOML string in code, validates it, and runs it.
//!
//! ```sh
//! cargo run --example job_from_string
//! ```
//!
//! The job: the built-in generator (1,000 events, full synthetic PHI) → ingest → anonymize (a
//! random pseudonym key per run) → canonize (FHIR R4) → Parquet, with the stages' domain events
//! audited into JSON lines. `Job::parse` takes the text, a path to report problems at, and how to
//! look up `${VAR}` substitutions. A deliberately broken copy of the job shows what it reports:
//! every problem at once, each at its line and column. The good job then runs into
//! `vitalflow-examples/job-from-string` under the system's temporary folder.

use std::path::Path;

use anyhow::Context as _;
use vitalflow_engine::{Job, RunOptions, run};

/// 1,000 events in batches of 250: 4 batches, each stage publishing its domain events per batch.
const JOB: &str = r#"
[job]
name = "job-from-string"
workers = 2
batch-size = 250

[sources.generator]
kind = "generator"
seed = 7
patients = 50
count = 1000

[operators.ingest]
kind = "ingest"
inputs = ["generator"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "${PSEUDONYM_KEY:-ephemeral}"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[operators.audit]
kind = "audit"
inputs = ["ingest.events", "anonymize.events", "canonize.events"]

[sinks.fhir]
kind = "parquet"
inputs = ["canonize"]
path = "canonical"

[sinks.audit-log]
kind = "jsonl"
inputs = ["audit"]
path = "audit"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["ingest.dead-letter", "anonymize.dead-letter", "canonize.dead-letter"]
"#;

fn main() -> anyhow::Result<()> {
    // `${VAR}` lookups: none set here, so the key falls back to its default, `ephemeral`. A
    // program would pass `|name| std::env::var(name).ok()` to read the environment.
    let no_variables = |_: &str| None;

    // A broken variant: a misspelt kind, and parsed records (with PHI) wired straight into a
    // sink. Both are reported, with the line, the column and what to do.
    let broken = JOB
        .replace(r#"kind = "canonize""#, r#"kind = "canonise""#)
        .replace(r#"inputs = ["audit"]"#, r#"inputs = ["ingest"]"#);
    match Job::parse(Path::new("broken.toml"), broken, &no_variables) {
        Ok(_) => anyhow::bail!("the broken job was accepted"),
        Err(diagnostics) => {
            println!("broken.toml: {} problem(s)", diagnostics.0.len());
            println!("{diagnostics}");
        }
    }

    let job = Job::parse(
        Path::new("job-from-string.toml"),
        JOB.to_owned(),
        &no_variables,
    )
    .context("parsing the job")?;
    println!("job-from-string.toml: ok ({} nodes)", job.nodes.len());

    let options = RunOptions {
        out: Some(vitalflow_examples::temp_out(&job.name)),
        // The folder holds this example's previous run: replace it.
        overwrite: true,
        ..RunOptions::default()
    };
    let summary = run(&job, &options).context("running the job")?;
    vitalflow_examples::print_summary(&summary);
    Ok(())
}
