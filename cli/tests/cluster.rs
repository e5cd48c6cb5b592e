//! Cluster mode: a job run as two processes (`--spawn 2`, or `--process I --hosts FILE` started
//! by hand) writes what it writes as one process, and a cluster whose processes disagree or
//! lose one fails, naming the other process.
//!
//! Outputs are compared with `tests/python/output_digest.py` (each sink's row count and an
//! order-independent digest of all its rows and columns, the per-run fields left out), alert
//! events as sets (the wall-clock fields left out), and the summary process 0 prints with the
//! single process's (every node's records in, out, rejected and dropped: files are written per
//! worker, so their number follows the workers).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::audit::checked_chain;
use crate::support::{job_variant, key_file, python, python_check, read_jsonl, root, show};

/// Runs `job` into `out` with one worker a process: as one process, or (`spawn`) as that many
/// processes on loopback ports. What it printed, and how long it took (s).
fn run(job: &Path, out: &Path, spawn: Option<usize>, envs: &[(&str, String)]) -> (Output, f64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vitalflow"));
    cmd.args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--workers", "1", "--no-progress"])
        .current_dir(root());
    if let Some(n) = spawn {
        cmd.args(["--spawn", &n.to_string()]);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let o = cmd.output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "{} ({spawn:?} processes) failed: {}",
        job.display(),
        show(&o)
    );
    (o, seconds)
}

/// The summary's node table: each node's name, kind, records in, out, rejected and dropped (the
/// files column left out).
fn node_counts(o: &Output) -> Vec<Vec<String>> {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("node "));
    assert!(lines.next().is_some(), "no summary table: {}", show(o));
    let rows: Vec<Vec<String>> = lines
        .take_while(|l| !l.starts_with("in = out"))
        .map(|l| l.split_whitespace().take(6).map(str::to_owned).collect())
        .collect();
    assert!(!rows.is_empty(), "an empty summary table: {}", show(o));
    rows
}

/// Every sink's `{rows, digest}`.
fn digests(python: &str, out: &Path) -> Value {
    let digest = python_check(python, "output_digest.py", &[out.to_str().unwrap()]);
    digest["sinks"].clone()
}

/// The single process's run and the cluster's write the same rows, and process 0's summary
/// counts what the single process's does. The sinks' digests.
fn same_outputs(python: &str, one: (&Path, &Output), two: (&Path, &Output)) -> Value {
    let (single, cluster) = (digests(python, one.0), digests(python, two.0));
    assert_eq!(
        cluster, single,
        "two processes wrote other rows than one (left: two processes, right: one)"
    );
    assert_eq!(
        node_counts(two.1),
        node_counts(one.1),
        "process 0's summary counts other records than the single process's (left: two \
         processes, right: one):\n{}",
        String::from_utf8_lossy(&two.1.stdout)
    );
    single
}

/// The clinical pipeline on the generator (ingest, anonymize, canonize, Parquet, the audit
/// chain): records cross processes as raw records (to ingestion's worker), parsed clinical
/// records (by patient, to anonymization), stage stats and sink commits (to worker 0).
#[test]
fn generator_pipeline_on_two_processes_writes_what_one_does() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = job_variant(
        "dataflows/quickstart.toml",
        dir.path(),
        &[
            ("count = 200000", "count = 30000"),
            ("patients = 500", "patients = 200"),
            ("batch-size = 25000", "batch-size = 4000"),
        ],
    );
    let key = key_file(dir.path());
    let envs = [("VITALFLOW_KEY_SOURCE", format!("file:{}", key.display()))];
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (single, t1) = run(&job, &one, None, &envs);
    let (cluster, t2) = run(&job, &two, Some(2), &envs);
    let sinks = same_outputs(&python, (&one, &single), (&two, &cluster));
    let names: Vec<&String> = sinks.as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [
            "audit",
            "canonical/Observation",
            "canonical/Patient",
            "dead-letter"
        ]
    );
    assert_eq!(sinks["canonical/Patient"]["rows"], 200);
    let header = String::from_utf8_lossy(&cluster.stdout);
    assert!(
        header.contains(" · 2 processes × 1 worker(s) · "),
        "the summary does not say the run's processes: {}",
        show(&cluster)
    );
    // Process 0 holds the audit chain: one sequence, every hash over what it follows.
    let chain = checked_chain(&two);
    assert_eq!(chain.len() as u64, sinks["audit"]["rows"].as_u64().unwrap());
    // Each worker wrote its own files, named by its index over all processes.
    let tagged = |tag: &str| {
        crate::support::output_files(&two.join("canonical"))
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(&format!("-{tag}.parquet")))
            .count()
    };
    assert!(
        tagged("w0") > 0 && tagged("w1") > 0,
        "the workers' files: {} of w0, {} of w1",
        tagged("w0"),
        tagged("w1")
    );
    eprintln!(
        "quickstart (30000 events): one process {t1:.1} s, two {t2:.1} s; {} audit records; \
         sinks {sinks}",
        chain.len()
    );
}

/// Flat readings from files through an as-of join, windows (with late rows), anonymization and
/// NEWS2 alerts: rows cross processes to the join's and windows' workers by key (with the join's
/// table), and readings to the alert monitor by patient. The inputs are generated (20,000
/// readings of 200 patients, their context table) and read by both processes, each its share.
#[test]
fn file_job_with_windows_join_and_alerts_on_two_processes_writes_what_one_does() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (readings, context) = (
        dir.path().join("flat.jsonl"),
        dir.path().join("context.jsonl"),
    );
    for (what, path) in [("vitals-flat", &readings), ("patient-context", &context)] {
        let o = crate::support::vitalflow(
            &[
                "generate",
                what,
                "-n",
                "20000",
                "-p",
                "200",
                "-o",
                path.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "generate {what}: {}", show(&o));
    }
    let job = job_variant(
        "dataflows/ward-vitals.toml",
        dir.path(),
        &[(
            "[sinks.vitals-5m]",
            r#"[operators.ward-alerts]
kind = "alert"
inputs = ["context-at-reading"]
ward = "coalesce(adt_ward, ward)"
freshness = "15m"
resolve-after = "10m"
suppress-for = "30m"
key = "${VITALFLOW_KEY_SOURCE:-ephemeral}"

[operators.ward-alerts.news2]
respiration-rate = "rr"
spo2 = "spo2"
oxygen = "adt_on_oxygen"
scale2 = "adt_spo2_scale = 2"
systolic = "sbp"
pulse = "hr"
temperature = "temp"
raise-at = "low-medium"

[operators.ward-alerts.rules.desaturation]
when = "spo2 < 90"
for = "2m"
level = "high"

[operators.ward-alerts.rules.falling-sbp]
when = "sbp_peak - sbp > 30"
window = "15m"
aggregates = { sbp_peak = "max(sbp)" }
level = "medium"

[sinks.alerts]
kind = "jsonl"
inputs = ["ward-alerts"]
path = "alerts"

[sinks.vitals-5m]"#,
        )],
    );
    let key = key_file(dir.path());
    let envs = [
        ("VITALFLOW_KEY_SOURCE", format!("file:{}", key.display())),
        ("VITALFLOW_FLAT_VITALS", readings.display().to_string()),
        ("VITALFLOW_PATIENT_CONTEXT", context.display().to_string()),
    ];
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (single, t1) = run(&job, &one, None, &envs);
    let (cluster, t2) = run(&job, &two, Some(2), &envs);
    let sinks = same_outputs(&python, (&one, &single), (&two, &cluster));
    for sink in ["vitals-5m", "ward-load", "alerts"] {
        assert!(
            sinks[sink]["rows"].as_u64().unwrap() > 0,
            "`{sink}` wrote nothing: {sinks}"
        );
    }
    let (a1, a2) = (alert_events(&one), alert_events(&two));
    assert_eq!(a1.len(), sinks["alerts"]["rows"].as_u64().unwrap() as usize);
    let only_one: Vec<&String> = a1.difference(&a2).collect();
    let only_two: Vec<&String> = a2.difference(&a1).collect();
    assert!(
        only_one.is_empty() && only_two.is_empty(),
        "alert events of one process only: {only_one:#?}\nof two processes only: {only_two:#?}"
    );
    eprintln!(
        "ward-vitals with alerts (20000 readings): one process {t1:.1} s, two {t2:.1} s; {} \
         alert events; sinks {sinks}",
        a1.len()
    );
}

/// The alert events under `out/alerts`, as JSON texts without their wall-clock fields
/// (emission time, envelope timestamp, latency).
fn alert_events(out: &Path) -> BTreeSet<String> {
    read_jsonl(&out.join("alerts"))
        .into_iter()
        .map(|mut e| {
            e["metadata"].as_object_mut().unwrap().remove("timestamp");
            let payload = e["payload"].as_object_mut().unwrap();
            payload.remove("emittedAt");
            payload.remove("latencyMs");
            e.to_string()
        })
        .collect()
}

/// A hosts file in `dir` with two free loopback addresses.
fn hosts_file(dir: &Path) -> PathBuf {
    let listeners: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let text: String = listeners
        .iter()
        .map(|l| format!("{}\n", l.local_addr().unwrap()))
        .collect();
    let path = dir.join("hosts");
    std::fs::write(&path, text).unwrap();
    path
}

/// The processes of a cluster started by hand; those still running when it is dropped are
/// killed.
struct Processes(Vec<Option<Child>>);

impl Processes {
    /// Starts process 0 and 1 of the cluster in `hosts`, process `i` on `jobs[i]`, each writing
    /// into `out`.
    fn start(jobs: [&Path; 2], hosts: &Path, out: &Path, key: &Path) -> Self {
        let children = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                Command::new(env!("CARGO_BIN_EXE_vitalflow"))
                    .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
                    .args([
                        "--workers",
                        "1",
                        "--no-progress",
                        "--process",
                        &i.to_string(),
                    ])
                    .args(["--hosts", hosts.to_str().unwrap()])
                    .env("VITALFLOW_KEY_SOURCE", format!("file:{}", key.display()))
                    .current_dir(root())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .ok()
            })
            .collect();
        Self(children)
    }

    /// Waits (at most `deadline` from now) for process `i` to exit: what it printed, or `None`
    /// if it did not exit in time.
    fn wait(&mut self, i: usize, deadline: Duration) -> Option<Output> {
        let until = Instant::now() + deadline;
        let child = self.0[i].as_mut().expect("the process was started");
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.0[i].take().map(|c| c.wait_with_output().unwrap())
    }

    /// Whether process `i` is running.
    fn running(&mut self, i: usize) -> bool {
        self.0[i]
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Kills process `i` (SIGKILL).
    fn kill(&mut self, i: usize) {
        if let Some(c) = self.0[i].as_mut() {
            c.kill().unwrap();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A paced generator job (1,000 events/s: about 500 s of input), so that it is still running
/// when one of its processes is killed.
fn long_job(dir: &Path) -> PathBuf {
    job_variant(
        "dataflows/quickstart.toml",
        dir,
        &[
            ("count = 200000", "count = 500000\nrate = 1000"),
            ("batch-size = 25000", "batch-size = 1000"),
        ],
    )
}

/// Killing one process (SIGKILL: it says nothing) mid-run: the other stops, fails naming it, and
/// exits 1 well before its input would have ended. Each of the two processes in turn.
#[test]
fn a_killed_process_fails_the_other_naming_it() {
    for victim in [1, 0] {
        let survivor = 1 - victim;
        let dir = tempfile::tempdir().unwrap();
        let (job, hosts, key) = (
            long_job(dir.path()),
            hosts_file(dir.path()),
            key_file(dir.path()),
        );
        let out = dir.path().join("out");
        let mut processes = Processes::start([&job, &job], &hosts, &out, &key);
        // Process 0 records the run once every process has joined; the run is going a moment
        // later.
        let joined = Instant::now() + Duration::from_secs(60);
        while !out.join("_vitalflow/run.json").exists() {
            assert!(Instant::now() < joined, "the cluster did not start in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(2));
        for i in 0..2 {
            assert!(
                processes.running(i),
                "process {i} ended before process {victim} was killed"
            );
        }
        processes.kill(victim);
        let killed = Instant::now();
        let Some(o) = processes.wait(survivor, Duration::from_secs(60)) else {
            panic!("process {survivor} still ran 60 s after process {victim} was killed");
        };
        let seconds = killed.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "process {survivor}: {}", show(&o));
        let named = format!("process {victim} (");
        assert!(
            stderr.contains(&named) && stderr.contains("is gone"),
            "process {survivor} does not say process {victim} went away: {}",
            show(&o)
        );
        assert!(
            !stderr.contains("panicked"),
            "process {survivor} shows a panic: {}",
            show(&o)
        );
        eprintln!(
            "process {victim} killed: process {survivor} exited 1 after {seconds:.2} s: {}",
            stderr.lines().last().unwrap_or_default()
        );
    }
}

/// Two processes started on different job files: each refuses the other, by its number, and
/// neither runs.
#[test]
fn processes_of_different_jobs_refuse_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let a = job_variant(
        "dataflows/quickstart.toml",
        dir.path(),
        &[("count = 200000", "count = 1000")],
    );
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let b = job_variant(
        "dataflows/quickstart.toml",
        &other,
        &[("count = 200000", "count = 2000")],
    );
    let (hosts, key) = (hosts_file(dir.path()), key_file(dir.path()));
    let out = dir.path().join("out");
    let started = Instant::now();
    let mut processes = Processes::start([&a, &b], &hosts, &out, &key);
    for (me, them) in [(0, 1), (1, 0)] {
        let Some(o) = processes.wait(me, Duration::from_secs(60)) else {
            panic!("process {me} still ran after 60 s");
        };
        assert!(!o.status.success(), "process {me} ran: {}", show(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(&format!("process {them} runs another job"))
                && stderr.contains(&format!("this one (process {me}:")),
            "process {me} does not name process {them}'s other job: {}",
            show(&o)
        );
        eprintln!(
            "process {me}: exit {:?} after {:.2} s: {}",
            o.status.code(),
            started.elapsed().as_secs_f64(),
            stderr.lines().last().unwrap_or_default()
        );
    }
    assert!(
        !out.join("canonical").exists(),
        "a refused cluster wrote outputs"
    );
}

/// The per-worker line of a run's summary for the file source `node`: how many records each
/// worker read, by worker (`None` without one).
fn read_by_worker(o: &Output, node: &str) -> Option<Vec<u64>> {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let prefix = format!("file {node}: records read by each worker: ");
    let line = stdout.lines().find_map(|l| l.strip_prefix(&prefix))?;
    Some(
        line.split(", ")
            .enumerate()
            .map(|(i, w)| {
                let (name, n) = w.split_once(' ').unwrap();
                assert_eq!(name, format!("w{i}"), "{line}");
                n.parse().unwrap()
            })
            .collect(),
    )
}

/// The files column of the summary's row for `node`.
fn files_of(o: &Output, node: &str) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("no row for `{node}`: {}", show(o)));
    row.split_whitespace().nth(6).unwrap().to_owned()
}

/// `vitalflow run` of the `vitals-flat` job `job` on the folder `input` into `out`, with
/// `workers` workers a process, as one process or (`spawn`) that many.
fn run_flat(
    job: &Path,
    input: &Path,
    key: &Path,
    out: &Path,
    workers: &str,
    spawn: Option<&str>,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vitalflow"));
    cmd.args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--workers", workers, "--no-progress"])
        .env("VITALFLOW_KEY_SOURCE", format!("file:{}", key.display()))
        .env("VITALFLOW_FLAT_VITALS", input)
        .current_dir(root());
    if let Some(n) = spawn {
        cmd.args(["--spawn", n]);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{workers} worker(s), {spawn:?}: {}",
        show(&o)
    );
    o
}

/// Writes `n` generated flat readings of 300 patients to `path`.
fn generate_flat(path: &Path, n: &str) {
    let o = crate::support::vitalflow(
        &[
            "generate",
            "vitals-flat",
            "-n",
            n,
            "-p",
            "300",
            "-o",
            path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "generate: {}", show(&o));
}

/// Three records: one that does not match the schema, one that is not JSON (a CRLF line),
/// one without its line break, and a blank line between.
const ODD_RECORDS: &str =
    "{\"patient_id\":\"P1\",\"ts\":\"not a time\"}\n\nnot json\r\n{\"patient_id\":\"P2\"}";

/// A file source is split over the workers, of one process or of two: a folder of three JSON
/// lines files (one with records that do not match the schema) read by one worker, by two
/// workers of one process and by two processes of one worker writes the same rows, dead letters
/// and audit chain, counts the same records and files, and each worker of the two-worker runs
/// read the files it was given (the first and the third, or the second).
#[test]
fn a_file_source_is_split_over_the_workers_of_every_process() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    generate_flat(&input.join("a.jsonl"), "7000");
    generate_flat(&input.join("b.jsonl"), "5000");
    std::fs::write(input.join("c.jsonl"), ODD_RECORDS).unwrap();
    let records = 7000 + 5000 + 3;
    let job = job_variant(
        "dataflows/vitals-flat.toml",
        dir.path(),
        &[("batch-size = 50000", "batch-size = 1000")],
    );
    let key = key_file(dir.path());
    let run_with = |out: &Path, workers: &str, spawn: Option<&str>| {
        run_flat(&job, &input, &key, out, workers, spawn)
    };
    let (one, two, cluster) = (
        dir.path().join("one"),
        dir.path().join("two"),
        dir.path().join("cluster"),
    );
    let single = run_with(&one, "1", None);
    let workers = run_with(&two, "2", None);
    let processes = run_with(&cluster, "1", Some("2"));
    let sinks = same_outputs(&python, (&one, &single), (&two, &workers));
    same_outputs(&python, (&one, &single), (&cluster, &processes));
    assert!(
        String::from_utf8_lossy(&processes.stdout).contains(" · 2 processes × 1 worker(s) · "),
        "{}",
        show(&processes)
    );
    assert!(
        sinks["dead-letter"]["rows"].as_u64().unwrap() >= 3,
        "{sinks}"
    );
    for o in [&single, &workers, &processes] {
        assert_eq!(files_of(o, "monitors"), "3", "{}", show(o));
    }
    assert_eq!(
        read_by_worker(&single, "monitors"),
        None,
        "{}",
        show(&single)
    );
    for o in [&workers, &processes] {
        let each = read_by_worker(o, "monitors")
            .unwrap_or_else(|| panic!("no per-worker line: {}", show(o)));
        assert_eq!(each.len(), 2, "{}", show(o));
        assert_eq!(each.iter().sum::<u64>(), records, "{}", show(o));
        assert_eq!(each, [7000 + 3, 5000], "{}", show(o));
    }
    checked_chain(&cluster);
}

/// A large JSON lines file is cut into byte ranges read by different workers: a folder of two
/// small files and one of 20,000 readings (with blank lines and CRLF line breaks spread
/// through it), cut into chunks of 64 KiB, read by three workers of one process and by two
/// processes of two workers, writes the same rows, dead letters (located by line) and audit
/// chain as one worker, counts the same files, and every worker read part of the records.
#[test]
fn a_large_file_is_cut_into_ranges_read_by_every_worker() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    generate_flat(&input.join("a.jsonl"), "1500");
    let big = input.join("b-big.jsonl");
    generate_flat(&big, "20000");
    // Every 97th line break a CRLF followed by a blank line, every 89th record not JSON.
    let text = std::fs::read_to_string(&big).unwrap();
    let mut odd = String::with_capacity(text.len() + text.len() / 50);
    for (i, line) in text.lines().enumerate() {
        if i % 89 == 88 {
            odd.push_str("not json\n");
        }
        odd.push_str(line);
        odd.push_str(if i % 97 == 96 { "\r\n\n" } else { "\n" });
    }
    std::fs::write(&big, &odd).unwrap();
    let big_records = 20000 + 20000 / 89;
    std::fs::write(input.join("c.jsonl"), ODD_RECORDS).unwrap();
    let records = 1500 + big_records + 3;
    let chunk_bytes = 64 << 10;
    assert!(
        odd.len() > 10 * chunk_bytes,
        "the large file has {} bytes",
        odd.len()
    );
    let job = job_variant(
        "dataflows/vitals-flat.toml",
        dir.path(),
        &[
            ("batch-size = 50000", "batch-size = 1000"),
            (
                "key = \"patient_id\"",
                &format!("key = \"patient_id\"\nchunk-bytes = {chunk_bytes}"),
            ),
        ],
    );
    let key = key_file(dir.path());
    let (one, three, cluster) = (
        dir.path().join("one"),
        dir.path().join("three"),
        dir.path().join("cluster"),
    );
    let single = run_flat(&job, &input, &key, &one, "1", None);
    let workers = run_flat(&job, &input, &key, &three, "3", None);
    let processes = run_flat(&job, &input, &key, &cluster, "2", Some("2"));
    let sinks = same_outputs(&python, (&one, &single), (&three, &workers));
    same_outputs(&python, (&one, &single), (&cluster, &processes));
    assert!(
        sinks["dead-letter"]["rows"].as_u64().unwrap() >= 3 + 20000 / 89,
        "{sinks}"
    );
    for o in [&single, &workers, &processes] {
        assert_eq!(files_of(o, "monitors"), "3", "{}", show(o));
    }
    for (o, n) in [(&workers, 3), (&processes, 4)] {
        let each = read_by_worker(o, "monitors")
            .unwrap_or_else(|| panic!("no per-worker line: {}", show(o)));
        assert_eq!(each.len(), n, "{}", show(o));
        assert_eq!(each.iter().sum::<u64>(), records, "{}", show(o));
        // Every worker read a part of the large file: at least a chunk's records.
        assert!(
            each.iter().all(|&r| r > 200 && r < records / 2),
            "records read by each worker: {each:?}"
        );
        eprintln!("{n} workers: records read by each: {each:?} of {records}");
    }
    checked_chain(&three);
    checked_chain(&cluster);
}
