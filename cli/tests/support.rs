//! Helpers shared by the end-to-end tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs the `vitalflow` binary.
pub fn vitalflow(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vitalflow"));
    cmd.args(args).current_dir(root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// stdout and stderr of a run, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The Python with the test dependencies, or `None` (after a loud message) when it is missing
/// and not required.
pub fn python() -> Option<String> {
    python_with("pyarrow, duckdb, fhir.resources")
}

/// [`python`], if it also imports `modules` (`import` syntax: `a, b.c`).
pub fn python_with(modules: &str) -> Option<String> {
    let python = std::env::var("VITALFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let wanted = if modules.contains("pyarrow") {
        modules.to_owned()
    } else {
        format!("pyarrow, duckdb, fhir.resources, {modules}")
    };
    let ok = Command::new(&python)
        .args(["-c", &format!("import {wanted}")])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("VITALFLOW_REQUIRE_PYTHON").is_err(),
        "VITALFLOW_REQUIRE_PYTHON is set but {python} cannot import {wanted} \
         (tests/python/requirements.txt)"
    );
    eprintln!("!!! SKIPPED: {python} cannot import {wanted}; run scripts/test");
    None
}

/// A port nothing listens on now (a job binds it again; the kernel lets it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shared sample data, when every one of `parts` (paths below it) is there; otherwise `None`
/// after a loud message, or a failure when `VITALFLOW_REQUIRE_SAMPLE_DATA` is set (CI), so that
/// a partial copy cannot pass unnoticed.
pub fn sample_data(parts: &[&str]) -> Option<PathBuf> {
    let dir = std::env::var("VITALFLOW_SAMPLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/data"));
    let missing: Vec<String> = parts
        .iter()
        .map(|p| dir.join(p))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(dir.canonicalize().unwrap());
    }
    let required = std::env::var_os("VITALFLOW_REQUIRE_SAMPLE_DATA")
        .is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "VITALFLOW_REQUIRE_SAMPLE_DATA is set but the sample data lacks {missing:?}"
    );
    eprintln!("!!! SKIPPED: sample data not found: {missing:?}");
    None
}

/// Runs `tests/python/<script>` and returns its stdout as JSON; panics with its output on failure.
pub fn python_check(python: &str, script: &str, args: &[&str]) -> serde_json::Value {
    let o = Command::new(python)
        .arg(root().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script} failed: {}", show(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", show(&o)))
}

/// A copy of a shipped job file with `replacements` applied, written into `dir`.
pub fn job_variant(shipped: &str, dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join(shipped)).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{shipped} no longer contains `{from}`");
        text = text.replace(from, to);
    }
    let path = dir.join(Path::new(shipped).file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

/// A pseudonymization key file.
pub fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("pseudonym.key");
    std::fs::write(&path, "test-key-0123456789abcdef-not-a-secret\n").unwrap();
    path
}

/// Every file below `dir`, except those under `dead-letter/`.
pub fn output_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "dead-letter") {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Writes `text` as a job file in `dir`, runs it into `dir/out` with `envs`, and returns the
/// output folder and what the run printed; panics (with the output) if the run fails.
pub fn run_job(dir: &Path, text: &str, envs: &[(&str, &str)]) -> (PathBuf, Output) {
    let job = dir.join("job.toml");
    std::fs::write(&job, text).unwrap();
    let out = dir.join("out");
    let o = vitalflow(
        &["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()],
        envs,
    );
    assert!(o.status.success(), "{}", show(&o));
    (out, o)
}

/// Every JSON line of every file below `dir`.
pub fn read_jsonl(dir: &Path) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for f in output_files(dir) {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            rows.push(serde_json::from_str(line).unwrap());
        }
    }
    rows
}

/// What a PHI scan reads of an output file: for Parquet, every value of every column (nested
/// ones included) decoded by the parquet crate's record reader, one a line, since compressed and
/// encoded pages hide values from a byte search; for any other file, its bytes.
pub fn scannable_text(path: &Path) -> String {
    use parquet::file::reader::SerializedFileReader;
    use parquet::record::Field;

    fn push(field: &Field, out: &mut String) {
        match field {
            Field::Str(s) => out.push_str(s),
            Field::Bytes(b) => out.push_str(&String::from_utf8_lossy(b.data())),
            Field::Group(row) => {
                for (_, f) in row.get_column_iter() {
                    push(f, out);
                }
            }
            Field::ListInternal(list) => {
                for f in list.elements() {
                    push(f, out);
                }
            }
            Field::MapInternal(map) => {
                for (k, v) in map.entries() {
                    push(k, out);
                    push(v, out);
                }
            }
            other => out.push_str(&other.to_string()),
        }
        out.push('\n');
    }

    if path.extension().is_none_or(|e| e != "parquet") {
        return String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    }
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not readable Parquet: {e}", path.display()));
    let mut text = String::new();
    for row in reader {
        let row = row.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (_, field) in row.get_column_iter() {
            push(field, &mut text);
        }
    }
    text
}

/// The embedded broker in a process of its own (`vitalflow broker`), so that what a job writes
/// to it outlives the job and can be read back; killed on drop.
pub struct BrokerProcess {
    child: std::process::Child,
    /// Its address, `HOST:PORT`.
    pub bootstrap: String,
}

impl BrokerProcess {
    /// Starts the broker with `topics` (`NAME:PARTITIONS`).
    pub fn start(topics: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_vitalflow"))
            .arg("broker")
            .args(topics.iter().flat_map(|t| ["--topic", t]))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap: ")
            .unwrap_or_else(|| panic!("the broker printed `{line}`"))
            .to_owned();
        Self { child, bootstrap }
    }

    /// Every record of `topic`, partition by partition from its first offset to its end (each
    /// offset once), as payloads.
    pub fn read_topic(&self, topic: &str) -> Vec<Vec<u8>> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Message;
        use rdkafka::{ClientConfig, Offset, TopicPartitionList};
        use std::collections::BTreeMap;
        use std::time::{Duration, Instant};

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let timeout = Duration::from_secs(30);
        let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
        let partitions = metadata.topics()[0].partitions().len();
        assert!(partitions > 0, "topic `{topic}` has no partitions");
        let mut assignment = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..i32::try_from(partitions).unwrap() {
            let (low, high) = consumer.fetch_watermarks(topic, p, timeout).unwrap();
            assert_eq!(low, 0, "topic `{topic}` partition {p} dropped records");
            if high > 0 {
                assignment
                    .add_partition_offset(topic, p, Offset::Beginning)
                    .unwrap();
                ends.insert(p, high);
            }
        }
        let mut records: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
        let total: i64 = ends.values().sum();
        if total > 0 {
            consumer.assign(&assignment).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while i64::try_from(records.len()).unwrap() < total {
            assert!(
                Instant::now() < deadline,
                "read {} of the {total} records of `{topic}` in 60 s",
                records.len()
            );
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                records.insert(
                    (m.partition(), m.offset()),
                    m.payload().unwrap_or_default().to_vec(),
                );
            }
        }
        records.into_values().collect()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of every Parquet file below `dir`, as their footers count them.
pub fn parquet_rows(dir: &Path) -> i64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    output_files(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            SerializedFileReader::new(std::fs::File::open(p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .sum()
}

/// Finds PHI values in text, all of them in one pass (a scan of decoded Parquet is megabytes
/// against thousands of values).
pub struct PhiScan {
    finder: aho_corasick::AhoCorasick,
    /// The index in the caller's list of each pattern (empty values are left out).
    index: Vec<usize>,
}

impl PhiScan {
    pub fn new<S: AsRef<str>>(values: &[S]) -> Self {
        let (index, patterns): (Vec<usize>, Vec<&str>) = values
            .iter()
            .map(AsRef::as_ref)
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .unzip();
        Self {
            finder: aho_corasick::AhoCorasick::new(patterns).unwrap(),
            index,
        }
    }

    /// The indexes (in the list given to `new`) of the values found in `text`, each once.
    pub fn found(&self, text: &str) -> Vec<usize> {
        let found: std::collections::BTreeSet<usize> = self
            .finder
            .find_overlapping_iter(text)
            .map(|m| self.index[m.pattern().as_usize()])
            .collect();
        found.into_iter().collect()
    }
}

/// Sends `signal` (`TERM`, `INT`) to a child process.
pub fn send_signal(child: &std::process::Child, signal: &str) {
    send_signal_to(child.id(), signal);
}

/// Sends `signal` (`TERM`, `KILL`, …) to the process `pid`.
pub fn send_signal_to(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}
