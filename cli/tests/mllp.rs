//! The `mllp` source end to end: the real binary listening, clients written here on raw sockets
//! (and the `hl7` package's MLLPClient), outputs read back with DuckDB.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{
    PhiScan, free_port, key_file, python, python_check, python_with, read_jsonl, root, sample_data,
    send_signal, show,
};

const START: u8 = 0x0B;
const END: u8 = 0x1C;
const CR: u8 = 0x0D;

/// The pipeline every test runs: an `mllp` source (with `settings`) → ingest → anonymize →
/// canonize → Parquet, and every dead-letter port into the dead-letter sink.
fn write_job(dir: &Path, port: u16, settings: &str) -> PathBuf {
    let key = key_file(dir);
    let text = format!(
        r#"
[job]
name = "mllp-test"
workers = 2

[sources.hl7]
kind = "mllp"
listen = "127.0.0.1:{port}"
{settings}

[operators.ingest]
kind = "ingest"
inputs = ["hl7"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "file:{key}"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[sinks.fhir]
kind = "parquet"
inputs = ["canonize"]
roll-interval = "300ms"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["hl7.dead-letter", "ingest.dead-letter", "anonymize.dead-letter", "canonize.dead-letter"]
"#,
        key = key.display()
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A run of the job in the background, its standard output and error in files.
pub(crate) struct Job {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Job {
    /// Starts `job` into `out` (the `n`th run: its output files are numbered) and waits until it
    /// listens on `port`.
    pub(crate) fn start(job: &Path, out: &Path, port: u16, n: usize, log: &str) -> Self {
        Self::start_with(job, out, port, n, log, &[])
    }

    /// [`Job::start`] with environment variables set for the run.
    pub(crate) fn start_with(
        job: &Path,
        out: &Path,
        port: u16,
        n: usize,
        log: &str,
        envs: &[(&str, &str)],
    ) -> Self {
        let dir = job.parent().unwrap();
        let stdout = dir.join(format!("run-{n}.out"));
        let stderr = dir.join(format!("run-{n}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_vitalflow"))
            .args(["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(["--no-progress"])
            .current_dir(root())
            .env("VITALFLOW_LOG", log)
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut job = Self {
            child,
            stdout,
            stderr,
        };
        job.wait_listening(port);
        job
    }

    fn wait_listening(&mut self, port: u16) {
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the job ended ({status}) before listening: {}",
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not listening after 120 s: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops it gracefully (SIGTERM); its exit status and standard output.
    pub(crate) fn stop(self) -> (std::process::ExitStatus, String) {
        send_signal(&self.child, "TERM");
        self.finish()
    }

    /// Waits for it to end; its exit status and standard output.
    pub(crate) fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        (status, std::fs::read_to_string(&self.stdout).unwrap())
    }

    /// Kills it (SIGKILL).
    fn kill(mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }
}

/// An acknowledgement as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// MSA-1.
    pub(crate) code: String,
    /// MSA-2: the control id acknowledged.
    control_id: String,
    /// The whole acknowledgement, segments joined by `\n`.
    pub(crate) text: String,
}

fn parse_ack(bytes: &[u8]) -> Ack {
    let text = String::from_utf8_lossy(bytes).into_owned();
    assert!(text.starts_with("MSH"), "not an acknowledgement: {text:?}");
    let sep = text.chars().nth(3).unwrap();
    let msa = text
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .unwrap_or_else(|| panic!("no MSA: {text:?}"));
    let fields: Vec<&str> = msa.split(sep).collect();
    Ack {
        code: fields.get(1).copied().unwrap_or_default().to_owned(),
        control_id: fields.get(2).copied().unwrap_or_default().to_owned(),
        text: text.trim_end().replace('\r', "\n"),
    }
}

/// A raw-socket MLLP client.
pub(crate) struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub(crate) fn connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, message: &[u8]) -> std::io::Result<()> {
        let framed = [&[START][..], message, &[END, CR]].concat();
        self.stream.write_all(&framed)
    }

    /// The next acknowledgement.
    fn ack(&mut self) -> std::io::Result<Ack> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == [END, CR]) {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                let start = frame.iter().position(|b| *b == START).map_or(0, |s| s + 1);
                return Ok(parse_ack(&frame[start..end]));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub(crate) fn call(&mut self, message: &[u8]) -> std::io::Result<Ack> {
        self.send(message)?;
        self.ack()
    }

    /// Whether the server sends nothing more within `wait` (and keeps the connection).
    fn silent_for(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 64];
        let silent = matches!(
            self.stream.read(&mut chunk),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        self.stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        silent && self.buf.is_empty()
    }
}

/// MSH-10 of a message.
fn control_id(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let text = text.trim_start_matches('\u{feff}');
    let msh = text.split(['\r', '\n']).next().unwrap();
    let sep = msh.chars().nth(3).unwrap();
    msh.split(sep).nth(9).unwrap_or_default().to_owned()
}

/// An `ADT^A01` that converts into a Patient and an Encounter.
fn adt(i: usize) -> Vec<u8> {
    format!(
        "MSH|^~\\&|TESTSEND|TESTFAC|VITALFLOW|HOSP|20260101120000||ADT^A01^ADT_A01|ADT{i:06}|P|2.5.1\r\
         EVN|A01|20260101120000\r\
         PID|1||MRN{i:06}^^^HOSP^MR||Doe{i}^John||19700101|M|||1 Main St^^Springfield^IL^62701^USA\r\
         PV1|1|I|ICU^1^1||||||||||||||||V{i:06}|||||||||||||||||||||||||20260101120000\r"
    )
    .into_bytes()
}

/// An `ORU^R01` with one heart rate, which converts into one Observation: its control id is
/// `<prefix><i>`, its patient one of 40, its time a second of its own.
fn oru(prefix: &str, i: usize) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(1_767_225_600 + i as i64, 0).unwrap();
    let time = t.format("%Y%m%d%H%M%S");
    format!(
        "MSH|^~\\&|MONITOR|ICU|VITALFLOW|HOSP|{time}||ORU^R01^ORU_R01|{prefix}{i:06}|P|2.5.1\r\
         PID|1||P{p:04}^^^HOSP^MR||Test^Patient\r\
         OBR|1|||8716-3^Vital signs^LN|||{time}\r\
         OBX|1|NM|8867-4^Heart rate^LN||{hr}|/min^beats per minute^UCUM|||||F|||{time}\r",
        p = i % 40,
        hr = 50 + i % 80,
    )
    .into_bytes()
}

/// The counts of a node in the summary table: in, out, rejected, dropped.
fn node_counts(stdout: &str, node: &str) -> [u64; 4] {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("no row for `{node}`: {stdout}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(2)
        .take(4)
        .map(|v| v.parse().unwrap())
        .collect();
    [n[0], n[1], n[2], n[3]]
}

/// The Python with the `hl7` package as well as the output readers, if there is one.
fn python_with_hl7() -> Option<String> {
    python_with("hl7.client")
}

/// Acceptance: the 139 shared HL7 samples, 200 generated ADT and ORU messages and a few that
/// cannot be accepted, over 4 connections at once, then a few more with the `hl7` package's
/// client: every message gets exactly one acknowledgement, naming its control id; `AA` for every
/// message ingestion then converted or dead-lettered for its content, `AR` for the others.
#[test]
fn every_message_over_four_connections_gets_one_ack_with_its_control_id() {
    let Some(python) = python_with_hl7() else {
        return;
    };
    let Some(data) = sample_data(&["hl7v2"]) else {
        return;
    };
    let test_started = Instant::now();
    let mut samples: Vec<PathBuf> = std::fs::read_dir(data.join("hl7v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    samples.sort();
    assert_eq!(samples.len(), 139);
    // (message, the code expected, the control id expected in MSA-2)
    let mut messages: Vec<(Vec<u8>, &str, String)> = Vec::new();
    for p in &samples {
        let m = std::fs::read(p).unwrap();
        let id = control_id(&m);
        messages.push((m, "AA", id));
    }
    for i in 0..100 {
        messages.push((adt(i), "AA", format!("ADT{i:06}")));
        messages.push((oru("ORU", i), "AA", format!("ORU{i:06}")));
    }
    // No control id; not HL7; larger than max-message-size (64 KiB).
    for i in 0..4 {
        let m = String::from_utf8(oru("", i)).unwrap();
        let m = m.replacen(&format!("|{i:06}|P|"), "||P|", 1);
        messages.push((m.into_bytes(), "AR", String::new()));
    }
    for m in ["hello", "PID|1||123", "MSH"] {
        messages.push((m.as_bytes().to_vec(), "AR", String::new()));
    }
    for i in 0..2 {
        let mut m = oru("BIG", i);
        let note = format!("NTE|1||{}\r", "x".repeat(70 * 1024));
        m.extend_from_slice(note.as_bytes());
        messages.push((m, "AR", format!("BIG{i:06}")));
    }
    let expected_aa = messages.iter().filter(|m| m.1 == "AA").count();
    let expected_ar = messages.len() - expected_aa;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let job = write_job(dir.path(), port, r#"max-message-size = "64KiB""#);
    let out = dir.path().join("out");
    let running = Job::start(&job, &out, port, 0, "info");

    // Four connections at once, message i on connection i % 4.
    let messages = Arc::new(messages);
    let sent = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let messages = Arc::clone(&messages);
            std::thread::spawn(move || {
                let mut c = Client::connect(port).unwrap();
                let mut acks = Vec::new();
                for (i, (m, _, _)) in messages.iter().enumerate().filter(|(i, _)| i % 4 == t) {
                    acks.push((i, c.call(m).unwrap()));
                }
                // Exactly one acknowledgement each: nothing more comes.
                assert!(c.silent_for(Duration::from_millis(300)), "connection {t}");
                acks
            })
        })
        .collect();
    let mut acks: BTreeMap<usize, Ack> = BTreeMap::new();
    for t in threads {
        for (i, ack) in t.join().unwrap() {
            assert!(acks.insert(i, ack).is_none());
        }
    }
    let took = sent.elapsed();
    assert_eq!(acks.len(), messages.len());
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (i, ack) in &acks {
        let (_, code, id) = &messages[*i];
        assert_eq!(&ack.code, code, "message {i}: {}", ack.text);
        assert_eq!(&ack.control_id, id, "message {i}: {}", ack.text);
        *codes.entry(ack.code.clone()).or_default() += 1;
        if ack.code == "AR" {
            assert!(ack.text.contains("\nERR|"), "{}", ack.text);
        }
    }
    eprintln!(
        "{} messages over 4 connections in {took:?}: {codes:?}",
        messages.len()
    );
    let oversize = acks
        .iter()
        .find(|(i, _)| messages[**i].2.starts_with("BIG"))
        .unwrap()
        .1;
    assert!(
        oversize
            .text
            .contains("more than max-message-size (65536 bytes)"),
        "{}",
        oversize.text
    );

    // An independent client: the `hl7` package's MLLPClient, its acknowledgements parsed by
    // `hl7.parse`.
    let mut files = Vec::new();
    for i in 0..6 {
        let f = dir.path().join(format!("py-{i}.hl7"));
        std::fs::write(&f, oru("PY", i)).unwrap();
        files.push(f.to_str().unwrap().to_owned());
    }
    let mut args = vec![
        "client".to_owned(),
        "127.0.0.1".to_owned(),
        port.to_string(),
    ];
    args.extend(files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answers = python_check(&python, "mllp_check.py", &args);
    eprintln!("hl7.client.MLLPClient: {answers}");
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 6);
    for a in answers {
        assert_eq!(a["code"], "AA", "{a}");
        assert_eq!(a["acknowledges"], a["control_id"], "{a}");
        assert_eq!(a["ack_type"], "ACK^R01^ACK", "{a}");
    }

    let (status, stdout) = running.stop();
    assert!(status.success(), "{status}: {stdout}");
    eprintln!("{stdout}");
    let aa = expected_aa + 6;
    // The source: every message acknowledged, AR ones rejected (to its dead letters).
    assert_eq!(
        node_counts(&stdout, "hl7"),
        [(aa + expected_ar) as u64, aa as u64, expected_ar as u64, 0]
    );
    // Every AA message reached ingestion, which converted it or dead-lettered it for its content.
    let [ingest_in, _, ingest_rejected, _] = node_counts(&stdout, "ingest");
    assert_eq!(ingest_in, aa as u64, "{stdout}");
    let dead = read_jsonl(&out.join("dead-letter"));
    let by_ingest: BTreeSet<&str> = dead
        .iter()
        .filter(|d| d["stage"] == "ingest")
        .map(|d| d["location"].as_str().unwrap())
        .collect();
    assert_eq!(by_ingest.len() as u64, ingest_rejected);
    let by_source: Vec<&serde_json::Value> = dead.iter().filter(|d| d["stage"] == "hl7").collect();
    assert_eq!(by_source.len(), expected_ar);
    let counts = python_check(&python, "mllp_check.py", &["count", out.to_str().unwrap()]);
    eprintln!("{counts}");
    // Converted: the 16 sample ADT messages of the five events and the 100 generated ones (a
    // Patient and an Encounter each), the 106 generated ORU messages (an Observation each), and
    // the 48 laboratory results of the 5 sample ORU^R01 messages, 3 of which convert whole (the
    // other 2 also have OBX without a result, dead-lettered).
    assert_eq!(counts["Encounter"]["rows"], 116, "{counts}");
    assert_eq!(counts["Patient"]["rows"], 116, "{counts}");
    assert_eq!(counts["Observation"]["rows"], 106 + 48, "{counts}");
    assert_eq!(ingest_in - ingest_rejected, 116 + 106 + 3, "{stdout}");
    eprintln!("the test took {:?}", test_started.elapsed());
}

/// A small xorshift generator: kill moments and garbage from a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Acceptance: the job is killed with SIGKILL at three random moments while 4 clients send
/// messages, each resending a message until it gets its `AA` (through the kills and restarts);
/// after the last restart, every message acknowledged is in the output exactly once.
#[test]
fn kill_9_three_times_and_every_acknowledged_message_is_written_once() {
    let Some(python) = python() else { return };
    let test_started = Instant::now();
    const N: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let job = write_job(dir.path(), port, "");
    let out = dir.path().join("out");
    let checkpoint = out.join("_vitalflow/checkpoint.json");
    let mut running = Job::start(&job, &out, port, 0, "warn");

    let acked = Arc::new(AtomicU64::new(0));
    let sends = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (acked, sends, done) = (Arc::clone(&acked), Arc::clone(&sends), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut client: Option<Client> = None;
                let mut i = t;
                while i < N {
                    assert!(!done.load(Ordering::SeqCst), "client {t} gave up at {i}");
                    let c = match client.as_mut() {
                        Some(c) => c,
                        None => match Client::connect(port) {
                            Ok(c) => client.insert(c),
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                        },
                    };
                    sends.fetch_add(1, Ordering::Relaxed);
                    match c.call(&oru("K", i)) {
                        Ok(ack) => {
                            assert_eq!(ack.code, "AA", "{}", ack.text);
                            assert_eq!(ack.control_id, format!("K{i:06}"));
                            acked.fetch_add(1, Ordering::Relaxed);
                            i += 4;
                            // A steady feed, at most 1,000 messages a second over the 4
                            // clients, however fast the job: the three kills (at most 3.6 s
                            // after each start) find it sending.
                            std::thread::sleep(Duration::from_millis(4));
                        }
                        // The job was killed: connect again and send the message again.
                        Err(_) => client = None,
                    }
                }
            })
        })
        .collect();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kills = Vec::new();
    for round in 1..=3 {
        let wait = Duration::from_millis(300 + rng.next() % 900);
        std::thread::sleep(wait);
        let before = acked.load(Ordering::Relaxed);
        let checkpointed = checkpoint.exists();
        running.kill();
        kills.push((round, wait, before, checkpointed));
        running = Job::start(&job, &out, port, round, "warn");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked.load(Ordering::Relaxed) < N as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    eprintln!(
        "kills (round, after, messages acknowledged by then, a checkpoint existed): {kills:?}; \
         {} sends for {N} messages",
        sends.load(Ordering::Relaxed)
    );
    // Every kill found the clients sending.
    assert!(kills.iter().all(|k| k.2 < N as u64), "{kills:?}");
    assert_eq!(acked.load(Ordering::Relaxed), N as u64);
    let (status, stdout) = running.stop();
    assert!(status.success(), "{status}: {stdout}");
    eprintln!("{stdout}");
    assert!(
        stdout.contains("resumed from the checkpoint"),
        "the last run did not resume: {stdout}"
    );
    let counts = python_check(&python, "mllp_check.py", &["count", out.to_str().unwrap()]);
    eprintln!("{counts}");
    assert_eq!(counts["Observation"]["rows"], N, "{counts}");
    assert_eq!(counts["Observation"]["distinct_ids"], N, "{counts}");
    assert!(read_jsonl(&out.join("dead-letter")).is_empty());
    eprintln!("the test took {:?}", test_started.elapsed());
}

/// A message sent again after its acknowledgement was lost (the job killed right after it
/// acknowledged it) is acknowledged again, as a duplicate, and written once.
#[test]
fn a_message_sent_again_after_a_kill_is_a_duplicate_and_written_once() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let job = write_job(dir.path(), port, "");
    let out = dir.path().join("out");
    let running = Job::start(&job, &out, port, 0, "info");
    let mut c = Client::connect(port).unwrap();
    for i in 0..3 {
        assert_eq!(c.call(&oru("D", i)).unwrap().code, "AA");
    }
    running.kill();
    let running = Job::start(&job, &out, port, 1, "info");
    let mut c = Client::connect(port).unwrap();
    // The last one again (its acknowledgement "lost"), and a new one.
    for i in [2, 3] {
        let ack = c.call(&oru("D", i)).unwrap();
        assert_eq!(
            (ack.code.as_str(), ack.control_id),
            ("AA", format!("D{i:06}"))
        );
    }
    let stderr = running.stderr.clone();
    let (status, stdout) = running.stop();
    assert!(status.success(), "{status}: {stdout}");
    let stderr = std::fs::read_to_string(stderr).unwrap();
    let totals = stderr
        .lines()
        .find(|l| l.contains("MLLP listener stopped"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(totals.contains(" accepted=2 duplicates=1 "), "{totals}");
    let counts = python_check(&python, "mllp_check.py", &["count", out.to_str().unwrap()]);
    assert_eq!(counts["Observation"]["rows"], 4, "{counts}");
    assert_eq!(counts["Observation"]["distinct_ids"], 4, "{counts}");
}

/// Back-pressure: with `max-backlog` messages acknowledged and not yet written (the sink writes
/// every 30 rows), the next message waits for its acknowledgement; a stop answers it `AE`, and
/// the next run takes it.
#[test]
fn past_max_backlog_acknowledgements_wait_and_a_stop_answers_ae() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let job = write_job(dir.path(), port, "max-backlog = 20");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace(
            r#"roll-interval = "300ms""#,
            "roll-interval = \"1h\"\nroll-rows = 30",
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let running = Job::start(&job, &out, port, 0, "info");
    let mut c = Client::connect(port).unwrap();
    for i in 0..20 {
        assert_eq!(c.call(&oru("B", i)).unwrap().code, "AA");
    }
    c.send(&oru("B", 20)).unwrap();
    assert!(
        c.silent_for(Duration::from_secs(2)),
        "acknowledged past max-backlog"
    );
    send_signal(&running.child, "TERM");
    let ack = c.ack().unwrap();
    assert_eq!(
        (ack.code.as_str(), ack.control_id.as_str()),
        ("AE", "B000020"),
        "{}",
        ack.text
    );
    assert!(ack.text.contains("send it again later"), "{}", ack.text);
    let (status, stdout) = running.finish();
    assert!(status.success(), "{status}: {stdout}");
    assert_eq!(node_counts(&stdout, "hl7")[1], 20, "{stdout}");
    // The next run takes it.
    let running = Job::start(&job, &out, port, 1, "info");
    let mut c = Client::connect(port).unwrap();
    assert_eq!(c.call(&oru("B", 20)).unwrap().code, "AA");
    let (status, stdout) = running.stop();
    assert!(status.success(), "{status}: {stdout}");
    assert_eq!(node_counts(&stdout, "hl7")[1], 1, "{stdout}");
    let counts = python_check(&python, "mllp_check.py", &["count", out.to_str().unwrap()]);
    assert_eq!(counts["Observation"]["rows"], 21, "{counts}");
}

/// Validation: an address beyond loopback needs `listen-any`; sizes, counts and durations out
/// of range are reported at their place; a job with an MLLP source reads no file source.
#[test]
fn mllp_settings_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        2575,
        "max-message-size = \"1GiB\"\nmax-backlog = 0\nread-timeout = \"0s\"",
    );
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("127.0.0.1:2575", "0.0.0.0:2575")).unwrap();
    let o = crate::support::vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "job.toml:8:10: `sources.hl7.listen`: 0.0.0.0 is not a loopback address",
        "only with `listen-any = true`",
        "`sources.hl7.max-message-size` must be between 1KiB and 512MiB",
        "`sources.hl7.max-backlog` must be at least 1",
        "`sources.hl7.read-timeout` must be at least 1ms",
    ] {
        assert!(err.contains(want), "missing `{want}`: {err}");
    }
    let text = std::fs::read_to_string(&job).unwrap();
    let fixed = text
        .replace("0.0.0.0:2575\"", "0.0.0.0:2575\"\nlisten-any = true")
        .replace(
            "max-message-size = \"1GiB\"\nmax-backlog = 0\nread-timeout = \"0s\"",
            "",
        );
    std::fs::write(&job, &fixed).unwrap();
    let o = crate::support::vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", show(&o));
    // With a file source too: refused when it runs.
    let mixed = fixed.replace(
        "[operators.ingest]",
        "[sources.files]\nkind = \"file\"\npath = \".\"\nformat = \"hl7v2\"\n\n[operators.ingest]",
    );
    let mixed = mixed.replace("inputs = [\"hl7\"]", "inputs = [\"hl7\", \"files\"]");
    std::fs::write(&job, mixed).unwrap();
    let out = dir.path().join("out");
    let o = crate::support::vitalflow(
        &["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a job with Kafka or MLLP sources reads only Kafka and MLLP sources"),
        "{err}"
    );
}

/// Test certificates made with the `openssl` command in `dir`: a CA, the listener's
/// certificate (for `localhost` and 127.0.0.1) and a client's, each with its key (P-256); `None`
/// after a loud message when there is no `openssl`.
pub(crate) fn certificates(dir: &Path) -> Option<()> {
    let openssl = |args: &[&str]| Command::new("openssl").args(args).current_dir(dir).output();
    if openssl(&["version"]).is_err() {
        assert!(
            std::env::var("VITALFLOW_REQUIRE_PYTHON").is_err(),
            "VITALFLOW_REQUIRE_PYTHON is set (a full test run) but there is no `openssl` command"
        );
        eprintln!("!!! SKIPPED: no `openssl` command to make test certificates");
        return None;
    }
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let run = |args: Vec<&str>| {
        let o = openssl(&args).unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", show(&o));
    };
    let mut ca = vec![
        "req", "-x509", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
    ];
    ca.extend(ec);
    ca.extend([
        "-subj",
        "/CN=vitalflow test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(ca);
    for (name, usage, san) in [
        (
            "server",
            "serverAuth",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ),
        ("client", "clientAuth", "subjectAltName=DNS:sender.example"),
    ] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!("basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{san}\n"),
        )
        .unwrap();
        let mut req = vec!["req", "-keyout", &key, "-out", &csr, "-subj", "/CN=test"];
        req.extend(ec);
        run(req);
        run(vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    Some(())
}

/// MLLP over TLS with client certificates: a client with a certificate the CA signed gets its
/// acknowledgements (Python's ssl module, OpenSSL); one without a certificate, and a plain-TCP
/// client, are refused at the handshake, and the listener goes on serving. A key file that is
/// not there is reported when the run starts, naming it.
#[test]
fn mllp_over_tls_takes_only_clients_with_a_certificate() {
    let Some(python) = python_with_hl7() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if certificates(d).is_none() {
        return;
    }
    let port = free_port();
    let job = write_job(
        d,
        port,
        r#"tls = { certificate = "server.pem", key = "server.key", client-ca = "ca.pem" }"#,
    );
    let out = d.join("out");
    let running = Job::start(&job, &out, port, 0, "info");
    let file = |name: &str, i: usize| {
        let f = d.join(format!("{name}-{i}.hl7"));
        std::fs::write(&f, oru(name, i)).unwrap();
        f.to_str().unwrap().to_owned()
    };
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let tls_client = |cert: &str, key: &str, files: &[String]| {
        let port = port.to_string();
        let (ca, cert, key) = (p("ca.pem"), cert.to_owned(), key.to_owned());
        let mut args: Vec<&str> = vec!["tls-client", "127.0.0.1", &port, &ca, &cert, &key];
        args.extend(files.iter().map(String::as_str));
        python_check(&python, "mllp_check.py", &args)
    };
    let (cert, key) = (p("client.pem"), p("client.key"));
    let files: Vec<String> = (0..3).map(|i| file("TLS", i)).collect();
    let answers = tls_client(&cert, &key, &files);
    eprintln!("with a client certificate: {answers}");
    let answers = answers.as_array().unwrap_or_else(|| panic!("{answers}"));
    assert_eq!(answers.len(), 3);
    for a in answers {
        assert_eq!(a["code"], "AA", "{a}");
        assert_eq!(a["acknowledges"], a["control_id"], "{a}");
    }
    // No client certificate: refused at the handshake, nothing acknowledged.
    let refused = tls_client("-", "-", &[file("NOCERT", 0)]);
    eprintln!("without one: {refused}");
    assert!(refused["error"].is_string(), "{refused}");
    assert_eq!(refused["answers"], serde_json::json!([]), "{refused}");
    // Plain TCP on the TLS port: no acknowledgement, the connection closed.
    let mut plain = Client::connect(port).unwrap();
    plain.send(&oru("PLAIN", 0)).unwrap();
    assert!(plain.ack().is_err(), "a plain-TCP client was answered");
    // Still serving.
    let answers = tls_client(&cert, &key, &[file("TLS", 3)]);
    assert_eq!(answers[0]["code"], "AA", "{answers}");
    let stderr = stopped(running, 4);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");

    // A key that is not there.
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("server.key", "missing.key")).unwrap();
    let o = crate::support::vitalflow(
        &["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`sources.hl7.tls`") && err.contains("missing.key"),
        "{err}"
    );
}

/// A job for the robustness tests, started: (its folder, the job, the port, the run).
fn robustness_job(settings: &str) -> (tempfile::TempDir, PathBuf, u16, Job) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let job = write_job(dir.path(), port, settings);
    let out = dir.path().join("out");
    let running = Job::start(&job, &out, port, 0, "info");
    (dir, job, port, running)
}

/// Another client gets its `AA`.
fn served(port: u16, i: usize) {
    let mut c = Client::connect(port).unwrap();
    let ack = c.call(&oru("OK", i)).unwrap();
    assert_eq!(ack.code, "AA", "{}", ack.text);
    assert_eq!(ack.control_id, format!("OK{i:06}"));
}

/// Stops the job; it must exit 0 and have taken `messages` messages.
fn stopped(running: Job, messages: u64) -> String {
    let stderr = running.stderr.clone();
    let (status, stdout) = running.stop();
    let stderr = std::fs::read_to_string(stderr).unwrap_or_default();
    assert!(status.success(), "{status}: {stdout}\n{stderr}");
    let [_, out, _, _] = node_counts(&stdout, "hl7");
    assert_eq!(out, messages, "{stdout}");
    stderr
}

/// Garbage bytes (a megabyte of them, start and end blocks among them) leave the listener
/// serving other clients, and the client that sent them too.
#[test]
fn garbage_bytes_leave_the_listener_serving() {
    let (_dir, _job, port, running) = robustness_job("");
    let mut rng = Rng(42);
    let garbage: Vec<u8> = (0..1 << 20).map(|_| (rng.next() >> 24) as u8).collect();
    let mut bad = Client::connect(port).unwrap();
    // Written on a thread of its own while the acknowledgements are read here: the frames the
    // garbage holds are answered, and answers nobody reads would stop the sender.
    let mut writer = bad.stream.try_clone().unwrap();
    let garbage_sender = std::thread::spawn(move || {
        writer.write_all(&garbage).unwrap();
        let message = [&[START][..], &oru("OK", 1), &[END, CR]].concat();
        writer.write_all(&message).unwrap();
    });
    served(port, 0);
    // The same connection, once its garbage is read: any frames the garbage held are answered
    // AR, then its message AA.
    let ack = loop {
        let ack = bad.ack().unwrap();
        if ack.code == "AA" {
            break ack;
        }
        assert_eq!(ack.code, "AR", "{}", ack.text);
    };
    assert_eq!(ack.control_id, "OK000001");
    garbage_sender.join().unwrap();
    served(port, 2);
    let stderr = stopped(running, 3);
    assert!(
        stderr.contains("bytes outside an MLLP frame discarded"),
        "{stderr}"
    );
}

/// A frame without an end leaves the listener serving; the connection is closed after the
/// read timeout, unacknowledged.
#[test]
fn a_frame_without_an_end_leaves_the_listener_serving() {
    let (_dir, _job, port, running) = robustness_job(r#"read-timeout = "2s""#);
    let mut bad = Client::connect(port).unwrap();
    let mut partial = vec![START];
    partial.extend_from_slice(&oru("CUT", 0)[..60]);
    bad.stream.write_all(&partial).unwrap();
    served(port, 0);
    served(port, 1);
    // No acknowledgement comes: the server closes the connection.
    match bad.ack() {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Ok(ack) => panic!("acknowledged: {}", ack.text),
    }
    served(port, 2);
    let stderr = stopped(running, 3);
    assert!(stderr.contains("read-timeout"), "{stderr}");
}

/// The resident memory of a process (`VmRSS` or `VmHWM`), in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap()
}

/// A 100 MB message is read to its end without being kept, answered AR with its control id,
/// and dead-lettered with its first 4 KiB; other clients are served meanwhile.
#[test]
fn a_100_mb_message_leaves_the_listener_serving() {
    let (dir, _job, port, running) = robustness_job("");
    let pid = running.child.id();
    let before = memory_kib(pid, "VmRSS");
    let mut big = oru("HUGE", 0);
    big.extend_from_slice(b"NTE|1||");
    big.resize(100_000_000, b'x');
    big.push(b'\r');
    let size = big.len();
    let sender = std::thread::spawn(move || {
        let mut c = Client::connect(port).unwrap();
        c.call(&big).unwrap()
    });
    // Served while the big message is under way, and after.
    served(port, 0);
    let ack = sender.join().unwrap();
    served(port, 1);
    assert_eq!(ack.code, "AR", "{}", ack.text);
    assert_eq!(ack.control_id, "HUGE000000");
    assert!(
        ack.text.contains(&format!(
            "the message has {size} bytes, more than max-message-size (1048576 bytes)"
        )),
        "{}",
        ack.text
    );
    let peak = memory_kib(pid, "VmHWM");
    eprintln!("resident memory: {before} KiB before, peak {peak} KiB");
    // Nothing near the message's size was held.
    assert!(
        peak < before + 50 * 1024,
        "{before} KiB before, peak {peak} KiB"
    );
    stopped(running, 2);
    let dead = read_jsonl(&dir.path().join("out/dead-letter"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stage"], "hl7");
    assert_eq!(dead[0]["raw"].as_str().unwrap().len(), 4096);
}

/// 500 idle connections (more than `max-connections`) leave the listener serving: at the limit,
/// a new connection closes the one idle the longest.
#[test]
fn five_hundred_idle_connections_leave_the_listener_serving() {
    let (_dir, _job, port, running) = robustness_job("");
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    served(port, 0);
    // A connection that sends a message and waits keeps being served among them.
    let mut c = Client::connect(port).unwrap();
    for i in 1..5 {
        let ack = c.call(&oru("OK", i)).unwrap();
        assert_eq!(ack.code, "AA", "{}", ack.text);
    }
    // The earliest idle connections were closed to make room.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(first.read(&mut byte), Ok(0) | Err(_)));
    drop(idle);
    served(port, 5);
    let stderr = stopped(running, 6);
    let stopped_line = stderr
        .lines()
        .find(|l| l.contains("MLLP listener stopped"))
        .unwrap_or_else(|| panic!("{stderr}"));
    eprintln!("{stopped_line}");
    assert!(stopped_line.contains("evicted="), "{stopped_line}");
}

/// PHI: no value of the messages (the synthetic corpus's identifiers) reaches standard error, at
/// the most verbose log level, nor a dead letter's reason, whatever the listener made of the
/// messages: accepted, rejected (no control id, not HL7, too large), cut short or outside frames.
#[test]
fn no_value_of_a_message_reaches_the_logs_or_a_dead_letter_reason() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let o = Command::new(&python)
        .arg(root().join("tests/python/phi_corpus.py"))
        .args([corpus.to_str().unwrap(), "--patients", "6", "--self-check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let phi: Vec<String> = std::fs::read_to_string(corpus.join("phi.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let scan = PhiScan::new(&phi);
    let mut messages: Vec<Vec<u8>> = std::fs::read_dir(corpus.join("hl7v2"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    messages.sort();
    assert_eq!(messages.len(), 24);

    let port = free_port();
    let job = write_job(dir.path(), port, r#"max-message-size = "8KiB""#);
    let out = dir.path().join("out");
    let running = Job::start(&job, &out, port, 0, "debug");
    let mut c = Client::connect(port).unwrap();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut answer = |ack: Ack| *codes.entry(ack.code).or_default() += 1;
    for m in &messages {
        // As it is.
        answer(c.call(m).unwrap());
        let text = String::from_utf8(m.clone()).unwrap();
        let id = control_id(m);
        // Without its control id.
        answer(
            c.call(text.replacen(&format!("|{id}|"), "||", 1).as_bytes())
                .unwrap(),
        );
        // Without its MSH segment: not HL7.
        let (_, rest) = text.split_once('\r').unwrap();
        answer(c.call(rest.as_bytes()).unwrap());
        // Too large: its segments again and again.
        let mut big = text.clone();
        while big.len() <= 8 * 1024 {
            big.push_str(rest);
        }
        answer(c.call(big.as_bytes()).unwrap());
        // Outside any frame, and cut short by the next frame.
        c.stream.write_all(rest.as_bytes()).unwrap();
        c.stream.write_all(&[START]).unwrap();
        c.stream.write_all(rest.as_bytes()).unwrap();
    }
    // Cut short by the end of the connection.
    c.stream.write_all(&[START]).unwrap();
    c.stream.write_all(&messages[0]).unwrap();
    drop(c);
    eprintln!("acknowledgements: {codes:?}");
    assert_eq!(codes.get("AA"), Some(&24));
    assert_eq!(codes.get("AR"), Some(&72));
    let stderr = stopped(running, 24);
    let dead = read_jsonl(&out.join("dead-letter"));
    assert!(dead.iter().filter(|d| d["stage"] == "hl7").count() == 72);
    // The scan finds what is there: the dead letters' raw messages hold PHI.
    let raw: String = dead
        .iter()
        .filter_map(|d| d["raw"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!scan.found(&raw).is_empty(), "the scan finds nothing");
    assert!(stderr.contains("DEBUG"), "not the debug level");
    // Leaks are named by their line in phi.txt, never printed.
    let lines = |found: Vec<usize>| found.iter().map(|i| i + 1).collect::<Vec<_>>();
    let in_logs = lines(scan.found(&stderr));
    assert!(
        in_logs.is_empty(),
        "standard error holds the values of phi.txt lines {in_logs:?}"
    );
    let reasons: String = dead
        .iter()
        .map(|d| format!("{}\n{}\n", d["reason"], d["location"]))
        .collect();
    let in_reasons = lines(scan.found(&reasons));
    assert!(
        in_reasons.is_empty(),
        "dead-letter reasons or locations hold the values of phi.txt lines {in_reasons:?}"
    );
    eprintln!(
        "{} dead letters ({} from the source), {} bytes of standard error at the debug level: no \
         value of phi.txt ({} values) in either",
        dead.len(),
        dead.iter().filter(|d| d["stage"] == "hl7").count(),
        stderr.len(),
        phi.len()
    );
}
