//! What a run tells its user and what it refuses: the summary's counts per node (and that they
//! add up), rejected records (warnings, `max-rejected`), output folders of other runs, whose
//! fault a failed run was, progress and logs when standard error is not a terminal.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use vitalflow_connectors::generator::{Generator, GeneratorConfig};

use crate::support::{key_file, read_jsonl, run_job, show, vitalflow};

const FLAT_FIELDS: &str = r#"fields = [
  { name = "patient_id", type = "string" },
  { name = "ts", type = "timestamp", format = "epoch-ms" },
  { name = "ward", type = "string" },
  { name = "hr", type = "integer" },
  { name = "spo2", type = "integer" },
  { name = "rr", type = "integer" },
  { name = "temp", type = "float", nullable = true },
  { name = "sbp", type = "integer" },
  { name = "dbp", type = "integer" },
]"#;

/// `count` of the generator's flat readings, in order, with a line that is not JSON after every
/// `bad_every` readings (0: none); returns the readings.
fn write_readings(path: &Path, count: u64, bad_every: u64) -> Vec<serde_json::Value> {
    let g = Generator::new(GeneratorConfig {
        seed: 5,
        patients: 40,
        count,
        deteriorating_percent: 30,
        ..GeneratorConfig::default()
    });
    let mut text = String::new();
    let mut readings = Vec::new();
    for i in 0..count {
        let line = g.flat_line(i);
        readings.push(serde_json::from_str(&line).unwrap());
        let _ = writeln!(text, "{line}");
        if bad_every > 0 && i % bad_every == bad_every - 1 {
            let _ = writeln!(text, "not a reading {i}");
        }
    }
    std::fs::write(path, text).unwrap();
    readings
}

/// The summary's table: node → column → value (`-` and missing columns read as 0).
fn table(stdout: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("node "));
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let mut nodes = BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() != header.len() {
            break;
        }
        let row = header
            .iter()
            .zip(&cells)
            .skip(2)
            .map(|(h, c)| ((*h).to_owned(), c.parse().unwrap_or(0)))
            .collect();
        nodes.insert(cells[0].to_owned(), row);
    }
    nodes
}

fn get(t: &BTreeMap<String, BTreeMap<String, u64>>, node: &str, column: &str) -> u64 {
    t.get(node)
        .and_then(|r| r.get(column))
        .copied()
        .unwrap_or(0)
}

#[test]
fn the_summary_counts_add_up_and_windows_and_alerts_show_what_they_emitted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flat.jsonl");
    let readings = write_readings(&input, 2_000, 250);
    let bad = 8;
    let key = key_file(dir.path());
    let (out, o) = run_job(
        dir.path(),
        &format!(
            r#"[job]
workers = 2
batch-size = 300

[sources.m]
kind = "file"
path = "{input}"
format = "json"
event-time = "ts"
key = "patient_id"
{FLAT_FIELDS}

[operators.fast]
kind = "filter"
inputs = ["m"]
condition = "hr > 100"

[operators.w]
kind = "window"
inputs = ["m"]
window = "tumbling"
key = "patient_id"
size = "30m"
aggregates = {{ n = "count()" }}

[operators.a]
kind = "alert"
inputs = ["m"]
key = "file:{key}"

[operators.a.rules.tachycardia]
when = "hr > 130"
level = "medium"

[sinks.fast-rows]
kind = "jsonl"
inputs = ["fast"]
path = "fast"

[sinks.windows]
kind = "jsonl"
inputs = ["w"]
path = "windows"

[sinks.alert-log]
kind = "jsonl"
inputs = ["a"]
path = "alerts"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["m.dead-letter", "fast.dead-letter", "w.dead-letter", "a.dead-letter"]
"#,
            input = input.display(),
            key = key.display(),
        ),
        &[],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let t = table(&stdout);
    let n = readings.len() as u64;
    let fast = readings
        .iter()
        .filter(|r| r["hr"].as_i64() > Some(100))
        .count() as u64;
    let windows = read_jsonl(&out.join("windows")).len() as u64;
    let alerts = read_jsonl(&out.join("alerts")).len() as u64;
    let dead = read_jsonl(&out.join("dead-letter")).len() as u64;
    assert!(
        fast > 0 && fast < n && windows > 0 && alerts > 0,
        "{stdout}"
    );

    // The source: every line read, the bad ones rejected.
    assert_eq!(get(&t, "m", "in"), n + bad, "{stdout}");
    assert_eq!(get(&t, "m", "rejected"), bad, "{stdout}");
    assert_eq!(get(&t, "m", "out"), n, "{stdout}");
    // The filter: what did not match is dropped, and in = out + rejected + dropped.
    assert_eq!(get(&t, "fast", "in"), n, "{stdout}");
    assert_eq!(get(&t, "fast", "out"), fast, "{stdout}");
    assert_eq!(get(&t, "fast", "dropped"), n - fast, "{stdout}");
    // The window and the alert node: out is what they emitted, as their sinks read it back.
    assert_eq!(get(&t, "w", "in"), n, "{stdout}");
    assert_eq!(get(&t, "w", "out"), windows, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "window w: 0 late record(s) beyond the allowed lateness (to `w.late`); {n} row(s) \
             went into windows"
        )),
        "{stdout}"
    );
    assert_eq!(get(&t, "a", "in"), n, "{stdout}");
    assert_eq!(get(&t, "a", "out"), alerts, "{stdout}");
    assert!(
        stdout.contains(&format!("alert a: {n} reading(s) evaluated")),
        "{stdout}"
    );
    // Sinks write what they receive.
    for (sink, rows) in [
        ("fast-rows", fast),
        ("windows", windows),
        ("alert-log", alerts),
    ] {
        assert_eq!(get(&t, sink, "in"), rows, "{sink}: {stdout}");
        assert_eq!(get(&t, sink, "out"), rows, "{sink}: {stdout}");
    }
    assert_eq!(get(&t, "dead-letter", "out"), dead, "{stdout}");
    // Every node: in = out + rejected + dropped, except those whose output is made (a note
    // says so); and every rejected record reached the dead-letter sink.
    for (node, row) in &t {
        if ["w", "a"].contains(&node.as_str()) {
            continue;
        }
        assert_eq!(
            row["in"],
            row["out"] + row["rejected"] + row.get("dropped").copied().unwrap_or(0),
            "{node}: {stdout}"
        );
    }
    let rejected: u64 = t.values().map(|r| r["rejected"]).sum();
    assert_eq!(rejected, dead, "{stdout}");
}

/// A job reading `input` into a JSON-lines sink, without a dead-letter sink.
fn no_dead_letter_job(input: &Path, extra: &str) -> String {
    format!(
        r#"[job]
name = "lossy"
{extra}

[sources.m]
kind = "file"
path = "{}"
format = "json"
event-time = "ts"
{FLAT_FIELDS}

[sinks.rows]
kind = "jsonl"
inputs = ["m"]
path = "rows"
"#,
        input.display()
    )
}

#[test]
fn rejected_records_are_reported_loudly_and_max_rejected_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flat.jsonl");
    // 6 readings and 4 lines that are not JSON: 40 % rejected.
    write_readings(&input, 6, 2);
    std::fs::write(&input, std::fs::read_to_string(&input).unwrap() + "nope\n").unwrap();
    let job = dir.path().join("lossy.toml");
    std::fs::write(&job, no_dead_letter_job(&input, "")).unwrap();
    let job = job.to_str().unwrap();

    // Validation passes, with a warning at the node whose rejections nothing reads.
    let o = vitalflow(&["validate", job], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "lossy.toml:5:10: warning: `m` can reject records and no node reads `m.dead-letter`"
        ),
        "{}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ok (2 nodes, 1 warning(s))"),
        "{}",
        show(&o)
    );

    // The run succeeds and says, loudly, what was rejected and that it was discarded.
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let o = vitalflow(&["run", job, "--out", out], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: 4 record(s) rejected (40.0% of 10 read): m 4"),
        "{}",
        show(&o)
    );
    assert!(
        stderr.contains("warning: 4 rejected record(s) were discarded"),
        "{}",
        show(&o)
    );

    // Over `--max-rejected`: exit 1 after the summary.
    let o = vitalflow(
        &[
            "run",
            job,
            "--out",
            out,
            "--overwrite",
            "--max-rejected",
            "30%",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("error (configuration or input): 4 record(s) rejected (40.0% of 10 read), more than max-rejected 30%"),
        "{}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("node "),
        "{}",
        show(&o)
    );

    // The job's own `max-rejected`, and the option over it.
    let limited = dir.path().join("limited.toml");
    std::fs::write(&limited, no_dead_letter_job(&input, "max-rejected = \"3\"")).unwrap();
    let limited = limited.to_str().unwrap();
    let o = vitalflow(&["run", limited, "--out", out, "--overwrite"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("more than max-rejected 3"),
        "{}",
        show(&o)
    );
    let o = vitalflow(
        &[
            "run",
            limited,
            "--out",
            out,
            "--overwrite",
            "--max-rejected",
            "50%",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    // A limit that is neither a count nor a percentage is refused at its place.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, no_dead_letter_job(&input, "max-rejected = \"lots\"")).unwrap();
    let o = vitalflow(&["validate", bad.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("bad.toml:3:16: `job.max-rejected`: `lots` is not a count or a percentage"),
        "{}",
        show(&o)
    );
}

#[test]
fn a_run_refuses_another_jobs_output_or_a_finished_run_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flat.jsonl");
    write_readings(&input, 20, 0);
    let job_a = dir.path().join("a.toml");
    std::fs::write(
        &job_a,
        no_dead_letter_job(&input, "").replace("name = \"lossy\"", "name = \"a\""),
    )
    .unwrap();
    let job_b = dir.path().join("b.toml");
    std::fs::write(
        &job_b,
        no_dead_letter_job(&input, "").replace("name = \"lossy\"", "name = \"b\""),
    )
    .unwrap();
    let (a, b) = (job_a.to_str().unwrap(), job_b.to_str().unwrap());
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();

    let o = vitalflow(&["run", a, "--out", out_s], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let rows = read_jsonl(&out.join("rows"));
    assert_eq!(rows.len(), 20);

    // The same job again: the finished run is kept.
    let o = vitalflow(&["run", a, "--out", out_s], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "error (configuration or input): the output folder {out_s} holds the output of a finished run of `a`"
        )) && stderr.contains("pass --overwrite to replace it"),
        "{}",
        show(&o)
    );
    assert_eq!(read_jsonl(&out.join("rows")), rows);

    // Another job: refused, naming the job whose output it is.
    let o = vitalflow(&["run", b, "--out", out_s], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "error (configuration or input): the output folder {out_s} holds the output of job `a`, not `b`"
        )),
        "{}",
        show(&o)
    );

    // With --overwrite, the other job replaces it.
    let o = vitalflow(&["run", b, "--out", out_s, "--overwrite"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(read_jsonl(&out.join("rows")).len(), 20);

    // A folder that holds something else.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let o = vitalflow(&["run", a, "--out", other.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not empty and holds no vitalflow run"),
        "{}",
        show(&o)
    );
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "mine"
    );
}

/// The `error (FAULT): MESSAGE` line of a failed run, with its exit code.
fn error_line(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .find(|l| l.starts_with("error ("))
        .unwrap_or_else(|| panic!("no error line: {}", show(o)))
        .to_owned()
}

/// A failed run says whose fault it was and which node failed: a Kafka source whose broker
/// cannot be reached is the broker's (exit code 1), an output folder that cannot be written the
/// file system's (exit code 1), an `--out` that is a file the user's (exit code 2).
#[test]
fn a_failed_run_says_whose_fault_it_was_and_which_node_failed() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = dir.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        format!(
            r#"[job]
name = "unreachable"

[sources.vitals]
kind = "kafka"
brokers = "127.0.0.1:{port}"
topic = "vitals"
format = "envelope"
stop = "end"

[sinks.none]
kind = "blackhole"
inputs = ["vitals"]
"#
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = vitalflow(
        &[
            "run",
            unreachable.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let line = error_line(&o);
    assert!(
        line.starts_with(
            "error (external system: Kafka broker): running job `unreachable`: the job failed: \
             source `vitals`: "
        ) && line.contains("topic `vitals`"),
        "{line}"
    );

    let job = dir.path().join("quick.toml");
    std::fs::write(
        &job,
        "[sources.g]\nkind = \"generator\"\ncount = 50\n\n\
         [sinks.none]\nkind = \"blackhole\"\ninputs = [\"g\"]\n",
    )
    .unwrap();
    let job = job.to_str().unwrap();

    // A folder that cannot be made: the run file is the first thing written there.
    if cfg!(target_os = "linux") {
        let o = vitalflow(&["run", job, "--out", "/proc/vitalflow-out"], &[]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        let line = error_line(&o);
        assert!(
            line.starts_with(
                "error (external system: file system): running job `quick`: the job failed: \
                 cannot write /proc/vitalflow-out/_vitalflow/run.json: "
            ),
            "{line}"
        );
    }

    // `--out` names a file.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let o = vitalflow(&["run", job, "--out", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let line = error_line(&o);
    assert!(
        line.starts_with(&format!(
            "error (configuration or input): cannot read the output folder {}: ",
            file.display()
        )),
        "{line}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[test]
fn progress_lines_and_plain_logs_when_standard_error_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // 400 events at 1,000 a second: the run lasts at least 0.4 s, eight progress intervals.
    let job = paced_job(dir.path(), 400, 1000);
    let job = job.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let o = vitalflow(
        &["run", job, "--out", out, "--progress-interval", "50ms"],
        &[("VITALFLOW_LOG", "info")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress "))
        .collect();
    assert!(!progress.is_empty(), "no progress line: {}", show(&o));
    for line in &progress {
        // `progress 0.1s: g 120 | none 120 -> 0 | 1.2k records/s`
        let (head, rest) = line.split_once(": ").unwrap();
        let secs = head.trim_start_matches("progress ").trim_end_matches('s');
        assert!(secs.parse::<f64>().is_ok(), "{line}");
        let parts: Vec<&str> = rest.split(" | ").collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(parts[0].starts_with("g "), "{line}");
        assert!(
            parts[1].starts_with("none ") && parts[1].contains(" -> "),
            "{line}"
        );
        assert!(parts[2].ends_with(" records/s"), "{line}");
    }
    // Logs without colour codes, and the log lines are there.
    assert!(stderr.contains("starting"), "{}", show(&o));
    assert!(!stderr.contains('\x1b'), "colour codes in: {stderr:?}");

    // --no-progress: none.
    let o = vitalflow(
        &[
            "run",
            job,
            "--out",
            out,
            "--overwrite",
            "--progress-interval",
            "50ms",
            "--no-progress",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("progress "),
        "{}",
        show(&o)
    );
}

#[test]
fn the_summary_says_how_many_records_ingest_made_of_its_messages() {
    let Some(data) = crate::support::sample_data(&["fhir-r4", "hl7v2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, o) = run_job(
        dir.path(),
        &format!(
            r#"[sources.bundles]
kind = "file"
path = "{data}/fhir-r4"
format = "fhir"

[sources.hl7]
kind = "file"
path = "{data}/hl7v2"
format = "hl7v2"

[operators.ingest]
kind = "ingest"
inputs = ["bundles", "hl7"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "ephemeral"

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
            data = data.display()
        ),
        &[],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let t = table(&stdout);
    let read = get(&t, "bundles", "out") + get(&t, "hl7", "out");
    let (made, rejected) = (get(&t, "ingest", "out"), get(&t, "ingest", "rejected"));
    assert_eq!(get(&t, "ingest", "in"), read, "{stdout}");
    // A bundle holds many resources, an HL7 message several segments' worth.
    assert!(made > read, "{stdout}");
    let accepted = read - rejected - get(&t, "ingest", "dropped");
    assert!(
        stdout.contains(&format!(
            "ingest ingest: in counts messages, out the clinical records made of them: \
             {accepted} message(s) accepted made {made} record(s)"
        )),
        "{stdout}"
    );
    // Downstream of ingest, the counts add up again, and the sinks hold what they say.
    assert_eq!(get(&t, "anonymize", "in"), made, "{stdout}");
    let resources = read_jsonl(&out.join("resources")).len() as u64;
    assert_eq!(get(&t, "canonize", "out"), resources, "{stdout}");
    // Only ingest rejects here; a bundle or message can have several bad parts, each its own
    // dead letter, and the summary says how many there were.
    let dead = read_jsonl(&out.join("dead-letter")).len() as u64;
    let rejected_all: u64 = t.values().map(|r| r["rejected"]).sum();
    assert_eq!(rejected_all, rejected, "{stdout}");
    assert!(rejected > 0 && dead >= rejected, "{stdout}");
    if dead > rejected {
        assert!(
            stdout.contains(&format!(
                "ingest ingest: {rejected} record(s) rejected with {dead} dead letter(s)"
            )),
            "{stdout}"
        );
    }
    assert_eq!(get(&t, "dead-letter", "in"), dead, "{stdout}");
}

/// A graceful stop of a job reading a generator: SIGTERM mid-run, and the run ends as if its
/// input had ended there: exit code 0, the summary, every record read written to the sink, no
/// partial file.
#[test]
fn sigterm_stops_the_sources_and_writes_what_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("endless.toml");
    std::fs::write(
        &job,
        r#"[job]
name = "endless"
workers = 2
batch-size = 2000

[sources.gen]
kind = "generator"
count = 100000000
patients = 500

[operators.ingest]
kind = "ingest"
inputs = ["gen"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "ephemeral"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[sinks.fhir]
kind = "parquet"
inputs = ["canonize"]
roll-interval = "1s"
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vitalflow"))
        .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the sink has written files the job is well under way.
    let started = std::time::Instant::now();
    let canonical = out.join("canonical");
    while !canonical.exists() || crate::support::output_files(&canonical).is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no file written in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    crate::support::send_signal(&child, "TERM");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("stopped on request"), "{stdout}");
    let t = table(&stdout);
    let read = get(&t, "gen", "out");
    assert!(read > 0 && read < 100_000_000, "{stdout}");
    // Everything read went through to the sink, and the sink's files hold it all.
    assert_eq!(
        get(&t, "canonize", "out"),
        get(&t, "fhir", "in"),
        "{stdout}"
    );
    let rows = crate::support::parquet_rows(&out.join("canonical"));
    assert_eq!(
        u64::try_from(rows).unwrap(),
        get(&t, "fhir", "in"),
        "{stdout}"
    );
    let partial: Vec<_> = crate::support::output_files(&out)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(".inprogress"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

/// A job of two workers reading the embedded broker's flat feed (`feed`: its settings after
/// `feed = "flat"`) into a JSON-lines sink `rows`.
fn embedded_rows_job(name: &str, feed: &str) -> String {
    format!(
        r#"[job]
name = "{name}"
workers = 2

[embedded]
feed = "flat"
{feed}

[sources.vitals]
kind = "kafka"
brokers = "embedded"
topic = "vitals"
format = "json"
event-time = "ts"
key = "patient_id"
partitions = 4
granularity = "1ms"
out-of-orderness = "1s"
stop = "end"
{FLAT_FIELDS}

[sinks.rows]
kind = "jsonl"
inputs = ["vitals"]
path = "rows"
"#
    )
}

/// A run whose standard error is read line by line as it comes, to be sent SIGTERM.
struct Signalled {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    seen: Vec<String>,
}

impl Signalled {
    /// `vitalflow run JOB --out OUT` with `args`.
    fn start(job: &Path, out: &Path, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vitalflow"))
            .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let _ = lines_tx.send(line.unwrap());
            }
        });
        Self {
            child,
            lines,
            reader,
            seen: Vec::new(),
        }
    }

    /// Reads standard error until a line passes `wanted` (at most 120 s).
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no {what} in 120 s: {:?}", self.seen));
            let found = wanted(&line);
            self.seen.push(line);
            if found {
                return;
            }
        }
    }

    /// Sends SIGTERM and waits for the process to end (at most 60 s): its output, every line
    /// of standard error, and how long it took to end.
    fn terminate(mut self) -> (std::process::Output, Vec<String>, Duration) {
        crate::support::send_signal(&self.child, "TERM");
        let signalled = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if signalled.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("still running 60 s after SIGTERM: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let waited = signalled.elapsed();
        let o = self.child.wait_with_output().unwrap();
        self.reader.join().unwrap();
        self.seen.extend(self.lines.try_iter());
        (o, self.seen, waited)
    }
}

/// A graceful stop of a job on the embedded broker's live feed (one that would go on for hours):
/// SIGTERM once the source has read some readings, and the feed stops with the sources: exit
/// code 0 well within `--stop-timeout`, the summary, every reading read in the sink's files.
#[test]
fn sigterm_stops_an_embedded_live_feed() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("live.toml");
    // 10,000,000 readings at 500 a second: hours of feed.
    std::fs::write(
        &job,
        embedded_rows_job(
            "live",
            "patients = 50\ncount = 10000000\nrate = 500\nstart-after = \"0s\"",
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut run = Signalled::start(&job, &out, &["--progress-interval", "200ms"]);
    // A progress line with readings read: `progress 1.2s: vitals 300 | rows 300 -> 300 | …`.
    run.wait_for("a reading read", |line| {
        line.strip_prefix("progress ")
            .and_then(|l| l.split(": vitals ").nth(1))
            .is_some_and(|l| !l.starts_with("0 "))
    });
    // The feed would go on for hours, and the stop must not wait for it.
    let (o, seen, _) = run.terminate();
    assert!(o.status.success(), "{}\n{}", show(&o), seen.join("\n"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("stopped on request"), "{stdout}");
    let t = table(&stdout);
    let read = get(&t, "vitals", "out");
    assert!(read > 0 && read < 10_000_000, "{stdout}");
    assert_eq!(get(&t, "rows", "in"), read, "{stdout}");
    assert_eq!(get(&t, "rows", "out"), read, "{stdout}");
    let rows = read_jsonl(&out.join("rows"));
    assert_eq!(u64::try_from(rows.len()).unwrap(), read, "{stdout}");
    let partial: Vec<_> = crate::support::output_files(&out)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(".inprogress"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

/// A job on the embedded broker never resumes: its broker's records died with the process, so
/// a second run over the same output folder is refused as over any finished run, and with
/// `--overwrite` reads its feed again from the start.
#[test]
fn a_job_on_the_embedded_broker_starts_afresh_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("embedded.toml");
    std::fs::write(
        &job,
        embedded_rows_job("embedded-again", "patients = 10\ncount = 500"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run_args = ["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()];
    for (run, extra) in [("first", None), ("second", Some("--overwrite"))] {
        if extra.is_some() {
            let o = vitalflow(&run_args, &[]);
            assert_eq!(o.status.code(), Some(2), "{}", show(&o));
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("holds the output of a finished run"),
                "{}",
                show(&o)
            );
        }
        let args: Vec<&str> = run_args.iter().copied().chain(extra).collect();
        let o = vitalflow(&args, &[]);
        assert!(o.status.success(), "{run} run: {}", show(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        let t = table(&stdout);
        assert_eq!(get(&t, "vitals", "out"), 500, "{run} run: {stdout}");
        assert_eq!(
            read_jsonl(&out.join("rows")).len(),
            500,
            "{run} run: {stdout}"
        );
    }
}

/// A graceful stop that cannot finish (its Kafka sink's broker never answers, so what the
/// source read cannot be written): `--stop-timeout` passing exits at once with 143, long before
/// the sink would give up (`retry-for`, 5 minutes), saying so.
#[test]
fn a_stop_outlasting_stop_timeout_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let readings: String = (0..2_000)
        .map(|i| format!("{{\"device\":\"d{}\",\"hr\":{}}}\n", i % 10, 60 + i % 40))
        .collect();
    std::fs::write(dir.path().join("flat.jsonl"), readings).unwrap();
    // Nothing listens on port 1 (a privileged port no test binds).
    let job = dir.path().join("unreachable.toml");
    std::fs::write(
        &job,
        r#"[job]
name = "unreachable"

[sources.readings]
kind = "file"
path = "flat.jsonl"
format = "json"
fields = [
  { name = "device", type = "string" },
  { name = "hr", type = "integer" },
]

[sinks.out]
kind = "kafka"
inputs = ["readings"]
brokers = "127.0.0.1:1"
topic = "readings"
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut run = Signalled::start(&job, &out, &["--stop-timeout", "2s"]);
    // The sink has the records and cannot deliver them.
    run.wait_for("failing deliveries", |line| {
        line.contains("Kafka deliveries are failing")
    });
    let (o, seen, waited) = run.terminate();
    assert_eq!(
        o.status.code(),
        Some(143),
        "{}\n{}",
        show(&o),
        seen.join("\n")
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("the stop took longer than --stop-timeout (2s)")),
        "{seen:?}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(30),
        "exited {waited:?} after SIGTERM"
    );
    // No summary: the run did not finish.
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("source records in"),
        "{}",
        show(&o)
    );
}

/// SIGTERM while a Kafka source is still looking for its brokers (they never answer): the
/// source stops looking, and the run stops gracefully (exit 0, its summary, nothing read)
/// instead of failing when the look-up gives up.
#[test]
fn sigterm_while_the_brokers_are_looked_for_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("away.toml");
    std::fs::write(
        &job,
        r#"[job]
name = "away"

[sources.vitals]
kind = "kafka"
brokers = "127.0.0.1:1"
topic = "vitals"
format = "json"
fields = [
  { name = "device", type = "string" },
  { name = "hr", type = "integer" },
]

[sinks.rows]
kind = "jsonl"
inputs = ["vitals"]
path = "rows"
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut run = Signalled::start(&job, &out, &["--progress-interval", "100ms"]);
    run.wait_for("a progress line", |line| line.starts_with("progress "));
    let (o, seen, _) = run.terminate();
    assert!(o.status.success(), "{}\n{}", show(&o), seen.join("\n"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("stopped on request"), "{stdout}");
    assert!(stdout.contains("0 source records in"), "{stdout}");
}

/// Every line of standard error parsed as JSON, with `ts` (RFC 3339, UTC), `level` and `msg`
/// checked; the exit code only on the last line, which must hold `code`.
fn json_lines(o: &std::process::Output, code: i64) -> Vec<serde_json::Value> {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", show(o)))
        })
        .collect();
    assert!(!lines.is_empty(), "{}", show(o));
    for (i, l) in lines.iter().enumerate() {
        let ts = l["ts"].as_str().unwrap_or_else(|| panic!("no ts: {l}"));
        assert!(
            ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "{l}"
        );
        assert!(
            ["info", "warn", "error"].contains(&l["level"].as_str().unwrap_or_default()),
            "{l}"
        );
        assert!(l["msg"].is_string(), "{l}");
        let last = i + 1 == lines.len();
        assert_eq!(l.get("exit_code").is_some(), last, "{l}");
    }
    let end = &lines[lines.len() - 1];
    assert_eq!(end["exit_code"], code, "{}", show(o));
    assert_eq!(
        end["level"],
        if code == 0 { "info" } else { "error" },
        "{end}"
    );
    lines
}

/// `--log-format json`: standard error is JSON lines (the engine's logs too), progress lines
/// carry their figures, which grow, and the summary's line carries the counts of the summary
/// on standard output (which is unchanged); rejections are warnings with their counts, and
/// failures errors with their fault and the exit code.
#[test]
fn json_logs_carry_progress_the_summary_and_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    // 800 events at 1,000 a second: the run lasts at least 0.8 s, eight progress intervals.
    let job = dir.path().join("paced.toml");
    std::fs::write(
        &job,
        r#"[job]
name = "paced"
workers = 2

[sources.g]
kind = "generator"
patients = 10
count = 800
rate = 1000

[operators.ingest]
kind = "ingest"
inputs = ["g"]

[operators.anon]
kind = "anonymize"
inputs = ["ingest"]
key = "ephemeral"

[sinks.none]
kind = "blackhole"
inputs = ["anon"]
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = vitalflow(
        &[
            "run",
            job.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--log-format",
            "json",
            "--progress-interval",
            "100ms",
        ],
        &[("VITALFLOW_LOG", "info")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let lines = json_lines(&o, 0);
    // Standard output is the summary, as ever.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("job paced · run "), "{stdout}");
    assert!(!stdout.contains('{'), "{stdout}");
    let t = table(&stdout);
    assert_eq!(get(&t, "g", "out"), 800, "{stdout}");

    // The engine's own log line.
    assert!(
        lines
            .iter()
            .any(|l| l["msg"] == "starting" && l["job"] == "paced" && l["workers"] == 2),
        "{}",
        show(&o)
    );

    let names = ["g", "ingest", "anon", "none"];
    let progress: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("progress "))
        })
        .collect();
    assert!(progress.len() >= 2, "{}", show(&o));
    let summary = lines
        .iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("job paced finished"))
        })
        .unwrap_or_else(|| panic!("no summary line: {}", show(&o)));
    // Per node: name, in, out, rejected.
    type Counts = Vec<(String, u64, u64, u64)>;
    let counts = |l: &serde_json::Value| -> Counts {
        l["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("no nodes: {l}"))
            .iter()
            .map(|n| {
                let count = |k: &str| n[k].as_u64().unwrap_or_else(|| panic!("no {k}: {n}"));
                (
                    n["name"].as_str().unwrap().to_owned(),
                    count("in"),
                    count("out"),
                    count("rejected"),
                )
            })
            .collect()
    };
    let last = counts(summary);
    for (name, node) in names.iter().zip(&last) {
        assert_eq!(node.0, *name, "{summary}");
        assert_eq!(node.1, get(&t, name, "in"), "{name}: {summary}\n{stdout}");
        assert_eq!(node.2, get(&t, name, "out"), "{name}: {summary}\n{stdout}");
        assert_eq!(
            node.3,
            get(&t, name, "rejected"),
            "{name}: {summary}\n{stdout}"
        );
    }
    assert_eq!(last.len(), names.len(), "{summary}");
    assert_eq!(summary["records_read"], 800, "{summary}");
    assert_eq!(summary["stopped"], false, "{summary}");
    assert_eq!(summary["job"], "paced", "{summary}");
    assert_eq!(summary["workers"], 2, "{summary}");
    let mut before: Option<(f64, u64, Counts)> = None;
    for p in &progress {
        let elapsed = p["elapsed_s"].as_f64().unwrap_or_else(|| panic!("{p}"));
        let read = p["records_read"].as_u64().unwrap_or_else(|| panic!("{p}"));
        assert!(p["rate"].as_f64().is_some_and(|r| r >= 0.0), "{p}");
        let now = counts(p);
        let seen: Vec<&str> = now.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(seen, names, "{p}");
        assert_eq!(
            read, now[0].2,
            "the source's count is the records read: {p}"
        );
        for (n, end) in now.iter().zip(&last) {
            assert!(
                n.1 <= end.1 && n.2 <= end.2,
                "{p} passes the summary {summary}"
            );
        }
        if let Some((e, r, c)) = &before {
            assert!(elapsed >= *e && read >= *r, "{p}");
            for (n, b) in now.iter().zip(c) {
                assert!(n.1 >= b.1 && n.2 >= b.2, "{p} went back");
            }
        }
        before = Some((elapsed, read, now));
    }
    let first = progress[0]["records_read"].as_u64().unwrap();
    let latest = progress[progress.len() - 1]["records_read"]
        .as_u64()
        .unwrap();
    assert!(
        first < latest,
        "the progress lines did not grow: {}",
        show(&o)
    );

    // Rejections: warnings with their counts; over `--max-rejected`, an error and exit 1.
    let input = dir.path().join("flat.jsonl");
    write_readings(&input, 6, 2);
    std::fs::write(&input, std::fs::read_to_string(&input).unwrap() + "nope\n").unwrap();
    let lossy = dir.path().join("lossy.toml");
    std::fs::write(&lossy, no_dead_letter_job(&input, "")).unwrap();
    let o = vitalflow(
        &[
            "run",
            lossy.to_str().unwrap(),
            "--out",
            dir.path().join("lossy").to_str().unwrap(),
            "--log-format=json",
            "--max-rejected",
            "30%",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let lines = json_lines(&o, 1);
    let warning = lines
        .iter()
        .find(|l| l["level"] == "warn" && l.get("by_node").is_some() && l.get("rejected").is_some())
        .unwrap_or_else(|| panic!("no rejection warning: {}", show(&o)));
    assert_eq!(warning["rejected"], 4, "{warning}");
    assert_eq!(warning["records_read"], 10, "{warning}");
    assert_eq!(warning["by_node"]["m"], 4, "{warning}");
    let error = lines
        .iter()
        .find(|l| l["level"] == "error" && l.get("exit_code").is_none())
        .unwrap_or_else(|| panic!("no error line: {}", show(&o)));
    assert_eq!(error["fault"], "configuration or input", "{error}");
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("more than max-rejected 30%")),
        "{error}"
    );
}

/// `--log-format json` on a job file with a bad value, and with an unknown option: an error line
/// naming the file, line, column and key, then the exit code 2.
#[test]
fn json_logs_name_the_file_line_and_field_of_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.toml");
    std::fs::write(
        &job,
        "[sources.g]\nkind = \"generator\"\ncount = \"many\"\n\n\
         [sinks.none]\nkind = \"blackhole\"\ninputs = [\"g\"]\n",
    )
    .unwrap();
    let o = vitalflow(&["run", job.to_str().unwrap(), "--log-format", "json"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let lines = json_lines(&o, 2);
    assert_eq!(lines.len(), 2, "{}", show(&o));
    let problem = &lines[0];
    assert_eq!(problem["level"], "error", "{problem}");
    assert_eq!(problem["file"], job.to_str().unwrap(), "{problem}");
    assert_eq!(problem["line"], 3, "{problem}");
    assert_eq!(problem["column"], 9, "{problem}");
    assert_eq!(problem["field"], "sources.g.count", "{problem}");
    assert_eq!(problem["fault"], "configuration or input", "{problem}");
    assert!(
        problem["msg"]
            .as_str()
            .is_some_and(|m| m.contains("expected a whole number")),
        "{problem}"
    );

    let o = vitalflow(
        &[
            "run",
            job.to_str().unwrap(),
            "--log-format",
            "json",
            "--bogus",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let lines = json_lines(&o, 2);
    assert_eq!(lines.len(), 2, "{}", show(&o));
    assert!(
        lines[0]["msg"]
            .as_str()
            .is_some_and(|m| m.contains("--bogus")),
        "{}",
        show(&o)
    );
}

/// Kafka secrets, written in the job file, taken from the environment or from a file, appear
/// nowhere in what a run prints: not in its debug logs (text or JSON) nor in the failure that
/// ends it (the broker cannot be reached), nor in `validate` or `graph`; `validate` warns about
/// the one written in the job file, by name.
#[test]
fn kafka_secrets_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = ["literal-Secret-4711", "env-Secret-0815", "file-Secret-2342"];
    std::fs::write(dir.path().join("jaas.txt"), secrets[2]).unwrap();
    let job = dir.path().join("secrets.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "secrets"

[sources.vitals]
kind = "kafka"
brokers = "127.0.0.1:1"
topic = "vitals"
format = "json"
stop = "end"
fields = [
  {{ name = "device", type = "string" }},
  {{ name = "hr", type = "integer" }},
]
[sources.vitals.properties]
"security.protocol" = "sasl_plaintext"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "vitalflow"
"sasl.password" = "{}"
"ssl.key.password" = {{ env = "VITALFLOW_TEST_KEY_PASSWORD" }}
"sasl.oauthbearer.config" = {{ file = "jaas.txt" }}

[sinks.out]
kind = "jsonl"
inputs = ["vitals"]
path = "out"
"#,
            secrets[0]
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let env = [
        ("VITALFLOW_TEST_KEY_PASSWORD", secrets[1]),
        ("VITALFLOW_LOG", "debug"),
    ];
    let job_arg = job.to_str().unwrap();
    let runs = [
        vec!["run", job_arg, "--out", out.to_str().unwrap()],
        vec![
            "run",
            job_arg,
            "--out",
            out.to_str().unwrap(),
            "--overwrite",
            "--log-format",
            "json",
        ],
        vec!["validate", job_arg],
        vec!["graph", job_arg],
    ];
    for args in runs {
        let o = vitalflow(&args, &env);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if args[0] == "run" {
            // It ran as far as the broker, and says why it failed.
            assert_eq!(o.status.code(), Some(1), "{}", show(&o));
            assert!(
                printed.contains("127.0.0.1:1") || printed.contains("vitals"),
                "{printed}"
            );
        } else {
            assert!(o.status.success(), "{args:?}: {}", show(&o));
        }
        if args[0] == "validate" {
            // A warning for the secret written in the file, none for those taken from
            // elsewhere.
            let warned: Vec<&str> = printed
                .lines()
                .filter(|l| l.contains("the secret property"))
                .collect();
            assert_eq!(warned.len(), 1, "{printed}");
            assert!(
                warned[0].contains("`sources.vitals`") && warned[0].contains("`sasl.password`"),
                "{printed}"
            );
        }
        for secret in secrets {
            assert!(
                !printed.contains(secret),
                "{args:?} printed {secret}: {printed}"
            );
        }
    }
}

/// `run --profile`: after the summary, each operator's activations, busy time, share and
/// longest activation; the shares of the operators shown add up to (nearly) all of it.
#[test]
fn run_profile_prints_each_operators_busy_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = vitalflow(
        &[
            "run",
            "dataflows/vitals-flat.toml",
            "--out",
            out.to_str().unwrap(),
            "--profile",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("operator "));
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no profile: {stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        header[..5],
        ["operator", "activations", "busy", "(ms)", "share"],
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = lines
        .map_while(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells.len() >= 6 && cells[cells.len() - 3].ends_with('%')).then_some(cells)
        })
        .collect();
    assert!(rows.len() >= 3, "{stdout}");
    let share: f64 = rows
        .iter()
        .map(|r| r[r.len() - 3].trim_end_matches('%').parse::<f64>().unwrap())
        .sum();
    assert!(
        (90.0..=100.5).contains(&share),
        "shares add up to {share}: {stdout}"
    );
    assert!(
        rows.iter()
            .all(|r| r[r.len() - 5].replace(',', "").parse::<u64>().unwrap() > 0),
        "{stdout}"
    );
}

/// On a terminal (a pseudo-terminal made by `script`), progress is one live line redrawn in
/// place and logs are coloured (through a pipe: the test above).
#[test]
fn progress_is_a_live_line_on_a_terminal() {
    let Ok(script) = which_script() else {
        eprintln!("!!! SKIPPED: `script` (util-linux) is not installed; it makes the terminal");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 6,000 events at 3,000 a second: 2 s.
    let job = paced_job(dir.path(), 6000, 3000);
    let run = format!(
        "{} run {} --out {} --progress-interval 200ms",
        env!("CARGO_BIN_EXE_vitalflow"),
        job.display(),
        dir.path().join("out").display()
    );
    let escape = "\x1b[";
    // On a terminal: standard output and error both go to it.
    let o = std::process::Command::new(&script)
        .args(["-qefc", &run, "/dev/null"])
        .env("VITALFLOW_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains("\r\x1b[2K") && shown.contains("g "),
        "no live line: {shown:?}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("progress ")),
        "plain progress lines on a terminal: {shown:?}"
    );
    // Escape codes besides the live line's own (clear the line): the logs' colours.
    assert!(
        shown.matches(escape).count() > shown.matches("\r\x1b[2K").count(),
        "no colour in the logs: {shown:?}"
    );
}

/// A job of a generator of `count` events at `rate` a second (its source `g`) into a blackhole
/// (`none`), written in `dir`.
fn paced_job(dir: &Path, count: u64, rate: u64) -> std::path::PathBuf {
    let job = dir.join("paced.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "paced"

[sources.g]
kind = "generator"
patients = 10
count = {count}
rate = {rate}

[sinks.none]
kind = "blackhole"
inputs = ["g"]
"#
        ),
    )
    .unwrap();
    job
}

/// The `script` program, if it is on the path.
fn which_script() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("script"))
        .find(|p| p.is_file())
        .ok_or(())
}
