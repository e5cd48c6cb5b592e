//! Input edge cases end to end: CSV quotes that never close, HL7 v2 messages cut short, files
//! without records, and the dead-letter folder's permissions.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use crate::support::{read_jsonl, run_job};

/// A job reading `rows.csv` of `dir` with a declared schema into `kept/`, with dead letters.
fn csv_job(dir: &Path) -> String {
    format!(
        r#"
[job]
name = "inputs-csv"
workers = 1

[sources.rows]
kind = "file"
path = "{d}/rows.csv"
format = "csv"
fields = [
  {{ name = "id", type = "integer" }},
  {{ name = "note", type = "string", nullable = true }},
  {{ name = "hr", type = "integer" }},
]

[sinks.kept]
kind = "jsonl"
inputs = ["rows"]
path = "kept"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["rows.dead-letter"]
"#,
        d = dir.display()
    )
}

#[cfg(unix)]
#[test]
fn the_dead_letter_folder_is_private_when_nothing_is_rejected() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rows.csv"),
        "id,note,hr\n1,calm,72\n2,,80\n",
    )
    .unwrap();
    let (out, _) = run_job(dir.path(), &csv_job(dir.path()), &[]);
    assert_eq!(read_jsonl(&out.join("kept")).len(), 2);
    let dead = out.join("dead-letter");
    let mode = std::fs::metadata(&dead).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "dead-letter/ is {mode:o}");
    assert_eq!(std::fs::read_dir(&dead).unwrap().count(), 0);
}

#[test]
fn an_unterminated_csv_quote_is_dead_lettered_and_the_rows_after_it_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = "id,note,hr\n1,\"two\nlines\",70\n2,\"never closed,71\n".to_owned();
    for i in 3..=150 {
        csv.push_str(&format!("{i},fine,{}\n", 60 + i % 40));
    }
    std::fs::write(dir.path().join("rows.csv"), csv).unwrap();
    let (out, _) = run_job(dir.path(), &csv_job(dir.path()), &[]);

    let kept = read_jsonl(&out.join("kept"));
    let mut ids: Vec<i64> = kept.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    let want: Vec<i64> = std::iter::once(1).chain(3..=150).collect();
    assert_eq!(ids, want);
    let two_lines = kept.iter().find(|r| r["id"] == 1).unwrap();
    assert_eq!(two_lines["note"], "two\nlines");

    let dead = read_jsonl_any(&out.join("dead-letter"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let location = dead[0]["location"].as_str().unwrap();
    assert!(location.ends_with("rows.csv:4"), "{location}");
    assert_eq!(
        dead[0]["reason"],
        "unterminated quote: the quoted field of column 2 (`note`), opened on the record's first \
         line, is never closed"
    );
    assert_eq!(dead[0]["raw"], "2,\"never closed,71");
}

#[test]
fn hl7_messages_cut_short_are_dead_lettered_and_every_file_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let hl7 = dir.path().join("hl7");
    std::fs::create_dir(&hl7).unwrap();
    let msh = |id: &str| {
        format!("MSH|^~\\&|ADT|HOSP|VF|HUB|20260301101500+0100||ADT^A01^ADT_A01|{id}|P|2.5.1\r")
    };
    let complete = format!(
        "{}EVN|A01|20260301101400+0100\rPID|1||P0000001^^^HOSP^PI||Doe^Jane||19480312|F\r\
         PV1|1|I|ICU^101^A^HOSP\r",
        msh("CTL1")
    );
    // Cut inside PID: no PV1, no terminator.
    let cut = format!(
        "{}EVN|A01|20260301101400+0100\rPID|1||P0000002^^^HOSP^PI||Do",
        msh("CTL2")
    );
    std::fs::write(hl7.join("a.hl7"), &complete).unwrap();
    std::fs::write(hl7.join("b.hl7"), "").unwrap();
    std::fs::write(hl7.join("c.hl7"), &cut).unwrap();
    let key = crate::support::key_file(dir.path());
    let job = format!(
        r#"
[job]
name = "inputs-hl7"
workers = 1

[sources.hl7]
kind = "file"
path = "{h}"
format = "hl7v2"

[operators.ingest]
kind = "ingest"
inputs = ["hl7"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "file:{k}"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[sinks.resources]
kind = "jsonl"
inputs = ["canonize"]
path = "resources"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["ingest.dead-letter", "anonymize.dead-letter", "canonize.dead-letter"]
"#,
        h = hl7.display(),
        k = key.display()
    );
    let (out, o) = run_job(dir.path(), &job, &[]);

    let types: Vec<String> = read_jsonl(&out.join("resources"))
        .iter()
        .map(|r| r["resourceType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "Patient").count(),
        1,
        "{types:?}"
    );
    let dead = read_jsonl_any(&out.join("dead-letter"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["location"].as_str().unwrap().ends_with("c.hl7:1"),
        "{dead:?}"
    );
    assert_eq!(
        dead[0]["reason"],
        "ADT^A01 PV1: segment missing (required; the message may have been cut short)"
    );

    // The source's row of the run summary counts its three files, the empty one too.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let row: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&"hl7"))
        .unwrap_or_else(|| panic!("no row for the source:\n{stdout}"));
    assert_eq!(row.last(), Some(&"3"), "{stdout}");
}

/// Every JSON line of every file directly in `dir` (dead letters included).
fn read_jsonl_any(dir: &Path) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            rows.push(serde_json::from_str(line).unwrap());
        }
    }
    rows
}
