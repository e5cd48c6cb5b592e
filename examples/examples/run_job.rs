//! Loads a job file, runs it, and prints its summary.
//!
//! ```sh
//! cargo run --example run_job                                  # dataflows/quickstart.toml
//! cargo run --example run_job -- dataflows/vitals-flat.toml    # any job file
//! cargo run --example run_job -- JOB OUT                       # and an output folder
//! ```
//!
//! The output goes to `OUT`, or to `vitalflow-examples/<job>` under the system's temporary
//! folder, replacing the previous run's there. `Job::load` reports every problem of the file at its line and
//! column; `run` blocks until the job is done and returns the counts of every node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use vitalflow_engine::{Job, RunOptions, run};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let path = args.next().map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataflows/quickstart.toml"),
        PathBuf::from,
    );
    let job = Job::load(&path).with_context(|| format!("loading {}", path.display()))?;
    // A folder given is written only if it is empty or holds an earlier run of this job; the
    // default folder holds this example's previous run, which is replaced.
    let (out, overwrite) = match args.next() {
        Some(out) => (PathBuf::from(out), false),
        None => (vitalflow_examples::temp_out(&job.name), true),
    };

    let options = RunOptions {
        out: Some(out),
        overwrite,
        // What a user should know as the run starts (for example, the embedded broker's
        // address), on standard error.
        observer: Some(Arc::new(vitalflow_examples::Messages)),
        ..RunOptions::default()
    };
    let summary = run(&job, &options).with_context(|| format!("running job {}", job.name))?;
    vitalflow_examples::print_summary(&summary);
    Ok(())
}
