//! Faults a hospital's operations team causes: a Kafka broker that stops answering for 30 s in
//! the middle of a job, and one that does not come back within the sink's `retry-for`. The
//! broker is a standalone one (tansu) started by the test itself, so that it can be stopped
//! (SIGSTOP: it keeps its connections and its data, and answers nothing) and continued.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::get;
use crate::support::{free_port, key_file, python, python_check, root, send_signal_to, show};

/// A tansu broker of this test (memory storage), killed when dropped.
struct Tansu {
    child: Child,
    address: String,
}

impl Tansu {
    /// Starts one, or `None` (loudly) when there is no `tansu` command and the run does not
    /// require the standalone broker.
    fn start(dir: &Path) -> Option<Self> {
        let tansu = std::env::var("VITALFLOW_TANSU").unwrap_or_else(|_| "tansu".to_owned());
        if Command::new(&tansu).arg("--version").output().is_err() {
            assert!(
                std::env::var("VITALFLOW_REQUIRE_KAFKA").is_err(),
                "VITALFLOW_REQUIRE_KAFKA is set but there is no `{tansu}` command (scripts/test \
                 installs it)"
            );
            eprintln!("!!! SKIPPED: no `tansu` command: the broker-outage tests need one");
            return None;
        }
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let log = dir.join("tansu.log");
        let url = format!("tcp://{address}");
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready in")
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { child, address })
    }

    fn signal(&self, signal: &str) {
        send_signal_to(self.child.id(), signal);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flat vital-sign readings into topic `in` (2 partitions) of `broker`; `out` created too.
fn feed(python: &str, dir: &Path, broker: &str, readings: u64) {
    let file = dir.join("vitals.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_vitalflow"))
        .args([
            "generate",
            "vitals-flat",
            "-n",
            &readings.to_string(),
            "-p",
            "300",
        ])
        .args(["-o", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    for topic in ["in", "out"] {
        python_check(python, "kafka_check.py", &["create", broker, topic, "2"]);
    }
    let fed = python_check(
        python,
        "kafka_check.py",
        &["produce", broker, "in", file.to_str().unwrap()],
    );
    assert_eq!(fed["produced"], readings, "{fed}");
}

/// Kafka readings → anonymize → Kafka, with `sink` settings added to the sink.
fn write_job(dir: &Path, broker: &str, sink: &str) -> PathBuf {
    let key = key_file(dir);
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "outage"

[sources.vitals]
kind = "kafka"
brokers = "{broker}"
topic = "in"
format = "json"
event-time = "ts"
key = "patient_id"
stop = "end"
idle-timeout = "1s"
fields = [
  {{ name = "patient_id", type = "string", phi = "hash" }},
  {{ name = "ts", type = "timestamp", format = "epoch-ms", phi = "date" }},
  {{ name = "ward", type = "string" }},
  {{ name = "hr", type = "integer" }},
  {{ name = "spo2", type = "integer" }},
  {{ name = "rr", type = "integer" }},
  {{ name = "temp", type = "float", nullable = true }},
  {{ name = "sbp", type = "integer" }},
  {{ name = "dbp", type = "integer" }},
]

[operators.anonymize]
kind = "anonymize"
inputs = ["vitals"]
key = "file:{}"

[sinks.readings-out]
kind = "kafka"
inputs = ["anonymize"]
brokers = "{broker}"
topic = "out"
{sink}

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["vitals.dead-letter", "anonymize.dead-letter"]
"#,
            key.display()
        ),
    )
    .unwrap();
    job
}

fn start(job: &Path, out: &Path, listen: u16, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vitalflow"))
        .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--no-progress", "--listen", &format!("127.0.0.1:{listen}")])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until the job's source has read something, so that what follows happens mid-run.
fn reading(child: &mut Child, listen: u16, log: &Path) {
    let started = Instant::now();
    loop {
        if let Some((200, body)) = get(listen, "/api/job") {
            let job: serde_json::Value = serde_json::from_str(&body).unwrap();
            let read = job["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == "vitals")
                .map_or(0, |n| n["records_out"].as_u64().unwrap_or(0));
            if read > 0 {
                return;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it read: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing read in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the job to end, at most `limit` (then fails with its log, `log`).
fn wait(child: &mut Child, limit: Duration, log: &Path) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            panic!(
                "the job did not end within {limit:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Acceptance (broker outage): the standalone broker stops answering for 30 s while a Kafka
/// job (source and sink) runs. The job waits: no crash, one log line saying its deliveries
/// fail and are kept, `/health/ready` answering 503 naming the sink; once the broker answers
/// again it goes on and ends (exit 0), and the output topic holds every reading exactly once.
#[test]
fn a_broker_that_stops_answering_for_30_s_is_waited_for() {
    const READINGS: u64 = 60_000;
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Tansu::start(dir.path()) else {
        return;
    };
    feed(&python, dir.path(), &broker.address, READINGS);
    let job = write_job(dir.path(), &broker.address, "");
    let (listen, log) = (free_port(), dir.path().join("run.log"));
    let mut child = start(&job, &dir.path().join("out"), listen, &log);
    reading(&mut child, listen, &log);
    broker.signal("STOP");
    let stopped = Instant::now();
    let mut not_ready = None;
    while stopped.elapsed() < Duration::from_secs(30) {
        if let Some((503, body)) = get(listen, "/health/ready")
            && body.contains("deliveries have been failing")
        {
            not_ready.get_or_insert(body);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended while its broker was away: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    broker.signal("CONT");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the job did not end within 180 s of the broker's return: {:?}\n{}",
            get(listen, "/api/job"),
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    let not_ready = not_ready.unwrap_or_else(|| panic!("/health/ready never said 503: {stderr}"));
    assert!(
        not_ready.contains("`readings-out`: its deliveries have been failing"),
        "{not_ready}"
    );
    assert_eq!(
        stderr.matches("Kafka deliveries are failing").count(),
        1,
        "{stderr}"
    );
    let out = python_check(
        &python,
        "kafka_check.py",
        &["pairs", &broker.address, "out", "patient_id", "ts"],
    );
    assert_eq!(out["records"], READINGS, "{out}");
    assert_eq!(out["distinct"], READINGS, "{out}");
    eprintln!("outage of 30 s: {out}; /health/ready said {not_ready}");
}

/// A broker that does not come back: the job fails once its sink's `retry-for` (5 s here) has
/// passed, exit 1, naming the sink, the topic and the broker. Started again once the broker answers, the job ends and every reading is in the
/// output topic (at least once: Kafka sinks are not transactional).
#[test]
fn a_broker_that_does_not_come_back_fails_the_job_and_a_restart_recovers() {
    const READINGS: u64 = 20_000;
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Tansu::start(dir.path()) else {
        return;
    };
    feed(&python, dir.path(), &broker.address, READINGS);
    let job = write_job(dir.path(), &broker.address, r#"retry-for = "5s""#);
    let out = dir.path().join("out");
    let (listen, log) = (free_port(), dir.path().join("run.log"));
    let mut child = start(&job, &out, listen, &log);
    reading(&mut child, listen, &log);
    broker.signal("STOP");
    let stopped = Instant::now();
    let status = wait(&mut child, Duration::from_secs(120), &log);
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(90), "{took:?}");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sink `readings-out`: Kafka delivery to topic `out` at {}",
            broker.address
        )) && stderr.contains("retry-for"),
        "{stderr}"
    );
    broker.signal("CONT");
    let (listen, log) = (free_port(), dir.path().join("run-2.log"));
    let mut child = start(&job, &out, listen, &log);
    let status = wait(&mut child, Duration::from_secs(180), &log);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let counts = python_check(
        &python,
        "kafka_check.py",
        &["pairs", &broker.address, "out", "patient_id", "ts"],
    );
    assert_eq!(counts["distinct"], READINGS, "{counts}");
    eprintln!("failed {took:?} after the broker stopped; after a restart: {counts}");
}

/// Corrupted state: a checkpoint cut short, one edited into another job's, one that lists a
/// file no longer in the output folder, and one edited to nonsense are each refused with exit 2
/// and a message naming the checkpoint and what to do; never a panic, never a silent start from
/// zero. `--fresh` then starts over.
#[test]
fn a_damaged_or_foreign_checkpoint_is_refused_with_exit_2() {
    use crate::mllp::{Client, Job};
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let port = free_port();
    let job = adt_job(dir.path(), port, &key);
    let out = dir.path().join("out");
    let running = Job::start(&job, &out, port, 0, "warn");
    let mut client = Client::connect(port).unwrap();
    let adt = "MSH|^~\\&|ADT|HOSP|VITALFLOW|HOSP|20260301080000||ADT^A01^ADT_A01|ADT1|P|2.5.1\r\
               EVN|A01|20260301080000\r\
               PID|1||MRN1^^^HOSP^MR||Doe^Jane||19600101|F\r\
               PV1|1|I|W1^R1^B1||||||||||||||||V1|||||||||||||||||||||||||20260301080000\r";
    assert_eq!(client.call(adt.as_bytes()).unwrap().code, "AA");
    let (status, stdout) = running.stop();
    assert!(status.success(), "{stdout}");
    let checkpoint = out.join("_vitalflow/checkpoint.json");
    let good = std::fs::read_to_string(&checkpoint).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&good).unwrap();
    let file = listed["files"][0].as_str().unwrap().to_owned();

    let run = |extra: &[&str]| {
        crate::support::vitalflow(
            &[
                &["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()][..],
                extra,
            ]
            .concat(),
            &[],
        )
    };
    let refused = |what: &str, expected: &str| {
        let o = run(&[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", show(&o));
        assert!(
            stderr.contains(&checkpoint.display().to_string()) && stderr.contains(expected),
            "{what}: expected `{expected}` in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    };
    std::fs::write(&checkpoint, &good[..good.len() / 2]).unwrap();
    refused("cut short", "cannot read the checkpoint");
    std::fs::write(&checkpoint, "{\"job\": 12}").unwrap();
    refused("edited", "cannot read the checkpoint");
    std::fs::write(&checkpoint, good.replace("\"adt-feed\"", "\"other-job\"")).unwrap();
    refused(
        "another job's",
        "is the checkpoint of job `other-job`, not of `adt-feed`",
    );
    std::fs::write(&checkpoint, &good).unwrap();
    let moved = dir.path().join("moved");
    std::fs::rename(out.join(&file), &moved).unwrap();
    refused("a file missing", &format!("the first `{file}`"));
    // The output untouched by the refused runs: the checkpoint is as it was.
    assert_eq!(std::fs::read_to_string(&checkpoint).unwrap(), good);
    // `--fresh` (with `--overwrite`: the output is a finished run's) starts over: it does not
    // read the checkpoint.
    let mut fresh = Command::new(env!("CARGO_BIN_EXE_vitalflow"))
        .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--fresh", "--overwrite", "--no-progress"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("fresh.err")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            fresh.try_wait().unwrap().is_none(),
            "--fresh ended: {}",
            std::fs::read_to_string(dir.path().join("fresh.err")).unwrap()
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal_to(fresh.id(), "TERM");
    assert!(fresh.wait().unwrap().success());
}

/// An MLLP source → ingest → anonymize → canonize → Parquet job listening on `port`.
fn adt_job(dir: &Path, port: u16, key: &Path) -> PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "adt-feed"

[sources.adt]
kind = "mllp"
listen = "127.0.0.1:{port}"

[operators.ingest]
kind = "ingest"
inputs = ["adt"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "file:{}"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[sinks.fhir]
kind = "parquet"
inputs = ["canonize"]

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["adt.dead-letter", "ingest.dead-letter", "anonymize.dead-letter", "canonize.dead-letter"]
"#,
            key.display()
        ),
    )
    .unwrap();
    job
}

/// A tmpfs mounted on a folder of the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one of `size` (`1m`), or `None` (loudly) where mounting is not allowed.
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("!!! SKIPPED: cannot mount a tmpfs here (it needs root): no disk-full test");
            return None;
        }
        Some(Self(at.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Disk full: the output folder is a 1 MiB tmpfs. ADT messages are sent over MLLP until the
/// Parquet sink (or the source's log) cannot write: the run fails (exit 1) naming the node and
/// the file, the checkpoint stays readable, and once the space is there again a restart writes every message
/// acknowledged exactly once (DuckDB: rows and distinct ids of Patient and Encounter).
#[test]
fn a_full_disk_fails_the_run_naming_the_file_and_a_restart_loses_nothing() {
    use crate::mllp::{Client, Job};
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "1m") else {
        return;
    };
    let key = key_file(dir.path());
    let port = free_port();
    let job = adt_job(dir.path(), port, &key);
    let out = disk.0.join("out");
    let running = Job::start(&job, &out, port, 0, "warn");
    let mut client = Client::connect(port).unwrap();
    let mut acknowledged = 0;
    for i in 0..20_000 {
        let m = format!(
            "MSH|^~\\&|ADT|HOSP|VITALFLOW|HOSP|20260301080000||ADT^A01^ADT_A01|ADT{i:06}|P|2.5.1\r\
             EVN|A01|20260301080000\r\
             PID|1||MRN{i:06}^^^HOSP^MR||Doe{i}^Jane||19600101|F\r\
             PV1|1|I|W1^R1^B1||||||||||||||||V{i:06}|||||||||||||||||||||||||20260301080000\r"
        );
        match client.call(m.as_bytes()) {
            Ok(ack) if ack.code == "AA" => acknowledged += 1,
            _ => break,
        }
    }
    let (status, _) = running.finish();
    let stderr = std::fs::read_to_string(dir.path().join("run-0.err")).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    // Whichever fills the disk first names itself and the file: the Parquet sink, or the
    // MLLP source's log (which then answers `AE`: those messages are not acknowledged).
    let sink = format!(
        "sink `fhir`: writing Parquet {}",
        out.join("canonical").display()
    );
    let log = format!(
        "source `adt`: its log: write {}",
        out.join("_vitalflow").display()
    );
    assert!(
        (stderr.contains(&sink) || stderr.contains(&log))
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let checkpoint = out.join("_vitalflow/checkpoint.json");
    if checkpoint.exists() {
        let text = std::fs::read_to_string(&checkpoint).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }
    disk.resize("64m");
    let running = Job::start(&job, &out, port, 1, "warn");
    std::thread::sleep(Duration::from_secs(3));
    let (status, stdout) = running.stop();
    assert!(status.success(), "{stdout}");
    let counts = python_check(&python, "mllp_check.py", &["count", out.to_str().unwrap()]);
    for table in ["Patient", "Encounter"] {
        assert_eq!(counts[table]["rows"], acknowledged, "{counts}");
        assert_eq!(counts[table]["distinct_ids"], acknowledged, "{counts}");
    }
    eprintln!(
        "{acknowledged} messages acknowledged before the disk was full; after a restart: {counts}"
    );
}

/// [`adt_job`] with every stage's events recorded in a hash-chained audit trail (`audit/`).
fn audited_adt_job(dir: &Path, port: u16, key: &Path) -> PathBuf {
    let job = adt_job(dir, port, key);
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str(
        r#"
[operators.audit]
kind = "audit"
inputs = ["ingest.events", "anonymize.events", "canonize.events"]

[sinks.audit-log]
kind = "jsonl"
inputs = ["audit"]
path = "audit"
"#,
    );
    std::fs::write(&job, text).unwrap();
    job
}

/// An ADT^A01 message of patient `i`.
fn admission(i: u64) -> Vec<u8> {
    format!(
        "MSH|^~\\&|ADT|HOSP|VITALFLOW|HOSP|20260301080000||ADT^A01^ADT_A01|ADT{i:06}|P|2.5.1\r\
         EVN|A01|20260301080000\r\
         PID|1||MRN{i:06}^^^HOSP^MR||Doe{i}^Jane||19600101|F\r\
         PV1|1|I|W1^R1^B1||||||||||||||||V{i:06}|||||||||||||||||||||||||20260301080000\r"
    )
    .into_bytes()
}

/// A sink that cannot write fails the run, which first compensates what it had begun: the
/// audit trail ends with a `BatchCompensated` event per unfinished batch, naming the sink and
/// what was undone (the input offsets past the checkpoint, not committed), chained to the
/// last record the checkpoint keeps; `audit verify` accepts the trail, and after a restart
/// the trail goes on from the compensation and every acknowledged message is in the output
/// exactly once.
#[test]
fn a_failed_run_compensates_its_unfinished_batches_in_the_audit_trail() {
    use crate::mllp::{Client, Job};
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let port = free_port();
    let job = audited_adt_job(dir.path(), port, &key);
    let out = dir.path().join("out");
    let running = Job::start(&job, &out, port, 0, "warn");
    let mut client = Client::connect(port).unwrap();
    let mut acknowledged = 0;
    let mut send = |client: &mut Client, i: u64| match client.call(&admission(i)) {
        Ok(ack) if ack.code == "AA" => {
            acknowledged += 1;
            true
        }
        _ => false,
    };
    for i in 0..50 {
        assert!(send(&mut client, i), "{}", running.stderr());
    }
    // Once a checkpoint keeps Parquet files, the sink's folder is replaced by a file.
    let checkpoint = out.join("_vitalflow/checkpoint.json");
    let started = Instant::now();
    loop {
        let kept = std::fs::read_to_string(&checkpoint).unwrap_or_default();
        if kept.contains("canonical/") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint with Parquet files after 60 s: {}",
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let canonical = out.join("canonical");
    let saved = out.join("canonical.saved");
    std::fs::rename(&canonical, &saved).unwrap();
    std::fs::write(&canonical, b"not a folder").unwrap();
    for i in 50..2_000 {
        if !send(&mut client, i) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, stdout) = running.finish();
    let stderr = std::fs::read_to_string(dir.path().join("run-0.err")).unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("sink `fhir`"), "{stderr}");
    assert!(stderr.contains("compensated "), "{stderr}");

    // The compensation records: one per unfinished batch, naming the sink and the offsets.
    let written: Vec<PathBuf> = std::fs::read_dir(out.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("compensation-"))
        })
        .collect();
    assert_eq!(written.len(), 1, "{written:?}\n{stderr}");
    let text = std::fs::read_to_string(&written[0]).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!records.is_empty(), "{stderr}");
    let mut batches = Vec::new();
    for r in &records {
        let event = &r["event"];
        assert_eq!(event["metadata"]["eventType"], "BatchCompensated", "{r}");
        assert_eq!(event["payload"]["stage"], "fhir", "{r}");
        let detail = &event["payload"]["detail"];
        assert_eq!(detail["failedNode"], "fhir", "{r}");
        let offsets = detail["undone"]["offsetsNotCommitted"].as_array().unwrap();
        assert!(
            offsets
                .iter()
                .any(|o| o["source"] == "adt"
                    && o["to"].as_i64().unwrap() > o["from"].as_i64().unwrap()),
            "{r}"
        );
        let stages: Vec<&str> = detail["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert!(stages.contains(&"ingest"), "{r}");
        batches.push(event["payload"]["batch"].as_u64().unwrap());
    }
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_vitalflow"))
            .args(["audit", "verify", out.join("audit").to_str().unwrap()])
            .output()
            .unwrap()
    };
    // The sink's folder as it was: the files the checkpoint lists are there again.
    std::fs::remove_file(&canonical).unwrap();
    std::fs::rename(&saved, &canonical).unwrap();
    let o = verify();
    assert!(o.status.success(), "{}", show(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!("{} compensated batches", records.len())),
        "{said}"
    );

    // A restart goes on after the compensation and writes what was acknowledged, once.
    let running = Job::start(&job, &out, port, 1, "warn");
    std::thread::sleep(Duration::from_secs(3));
    let (status, stdout) = running.stop();
    assert!(status.success(), "{stdout}");
    let o = verify();
    assert!(o.status.success(), "{}", show(&o));
    let counts = python_check(&python, "mllp_check.py", &["count", out.to_str().unwrap()]);
    for table in ["Patient", "Encounter"] {
        assert_eq!(counts[table]["rows"], acknowledged, "{counts}");
        assert_eq!(counts[table]["distinct_ids"], acknowledged, "{counts}");
    }
    eprintln!(
        "{acknowledged} messages acknowledged; batches {batches:?} compensated; after a \
         restart: {}",
        String::from_utf8_lossy(&o.stdout).trim()
    );
}
