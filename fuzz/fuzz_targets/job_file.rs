//! Fuzz target: the job file parser.
//!
//! Feeds arbitrary bytes, as UTF-8 text (invalid sequences replaced, as a job file read from disk
//! would be rejected before parsing), to [`Job::parse`]: TOML with `${NAME:-default}`
//! substitutions (no variable is set), every node kind's settings, declared schemas and the
//! expressions in them, and the checks of the graph as a whole. The parser must never panic: it
//! returns a job or diagnostics. Diagnostics are at least one, each at a 1-based line and column
//! with a message, and render as `vitalflow validate` prints them; a job's warnings render too.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vitalflow_engine::{Diagnostic, Job};

/// What `vitalflow validate` does with a diagnostic: print it, and name its key.
fn render(d: &Diagnostic) {
    assert!(
        d.line >= 1 && d.col >= 1,
        "a diagnostic at line 0 or column 0"
    );
    assert!(!d.message.is_empty(), "a diagnostic without a message");
    let _ = d.to_string();
    let _ = d.key();
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    match Job::parse(Path::new("fuzz/job.toml"), text, &|_| None) {
        Ok(job) => job.warnings().iter().for_each(render),
        Err(problems) => {
            assert!(
                !problems.0.is_empty(),
                "a job rejected without a diagnostic"
            );
            problems.0.iter().for_each(render);
        }
    }
});
