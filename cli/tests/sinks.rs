//! Sink settings seen in the files a run writes.
#![allow(clippy::unwrap_used)]

use crate::support::{output_files, read_jsonl, run_job};

fn job(roll_rows: &str) -> String {
    format!(
        r#"
[job]
name = "rolls"
workers = 2
batch-size = 500

[sources.monitors]
kind = "generator"
format = "flat"
count = 6000
patients = 50

[operators.anonymize]
kind = "anonymize"
inputs = ["monitors"]
key = "ephemeral"

[sinks.lines]
kind = "jsonl"
inputs = ["anonymize"]
path = "lines"
roll-interval = "1h"
{roll_rows}
"#
    )
}

#[test]
fn jsonl_roll_rows_writes_a_file_each_time_that_many_lines_are_complete() {
    let files_and_rows = |roll_rows: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (out, _) = run_job(dir.path(), &job(roll_rows), &[]);
        (
            output_files(&out.join("lines")).len(),
            read_jsonl(&out.join("lines")).len(),
        )
    };
    // Without a row limit each worker writes once, at the end (the interval is an hour).
    let (files, rows) = files_and_rows("");
    assert_eq!((files, rows), (2, 6000));
    // With one, each worker writes whenever 1,000 completed lines are buffered: at least two
    // files for its 3,000 lines or so.
    let (files, rows) = files_and_rows("roll-rows = 1000");
    assert_eq!(rows, 6000);
    assert!(files >= 4, "{files} files");
}
