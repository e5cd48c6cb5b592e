//! What a run tells its caller while it goes on: snapshots of every node's counts, and messages
//! for the user. The engine prints nothing itself; the caller's [`RunObserver`] shows them (the
//! CLI draws a live line on a terminal, plain lines in a log).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::job::{Job, Section};

use super::NodeSummary;
use super::plan::Plan;

/// A run's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Time since the workers started.
    pub elapsed: Duration,
    /// Per node, in job order: its counts so far.
    pub nodes: Vec<NodeSummary>,
    /// Records the sources have emitted so far, per second since the workers started.
    pub rate: f64,
    /// Per Kafka source, in job order: the watermark reached, as an event time (milliseconds
    /// since the epoch); `None` until its first record.
    pub watermarks: Vec<(String, Option<i64>)>,
    /// Jobs with Kafka sources: the checkpoints written so far; `None` for a job that does not
    /// checkpoint.
    pub checkpoints: Option<CheckpointProgress>,
    /// Per `alert` node, rule and event type: the alert events raised so far.
    pub alerts: Vec<AlertCount>,
    /// Per Kafka source in job order, per partition it reads in partition order: where reading
    /// is and where the partition ends.
    pub partitions: Vec<PartitionProgress>,
    /// Per `alert` node, by name: emission minus the triggering reading's arrival (µs) of its
    /// alert events so far whose reading's arrival is known, over all its rules; taken at the
    /// same moment as `alerts`. A reading from a source, through filters, maps and joins, has
    /// its arrival; a row a `window` node made has none.
    pub alert_latency: Vec<(String, Histogram<u64>)>,
    /// Arrival at a source → durable in every sink that writes (µs), of the records timed so
    /// far, when the run measures it ([`super::RunOptions::end_to_end`]) and the job has a sink
    /// that writes (see [`super::latency`]).
    pub end_to_end: Option<Histogram<u64>>,
}

/// Where a Kafka source is in one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The source node.
    pub source: String,
    /// Its topic.
    pub topic: String,
    /// The consumer group its offsets are committed under.
    pub group: String,
    /// The partition.
    pub partition: i32,
    /// The next offset to read: after the last record read, or where reading resumes (a
    /// checkpoint's offset, else the partition's first offset); `None` until known.
    pub position: Option<i64>,
    /// The offset after the partition's last record, as the broker last said (which can be
    /// before the records read since); `None` until known.
    pub end: Option<i64>,
}

impl PartitionProgress {
    /// Records in the partition not read yet: `end - position`, 0 if the end is behind the
    /// position; `None` while either is unknown.
    #[must_use]
    pub fn lag(&self) -> Option<i64> {
        Some(self.end?.saturating_sub(self.position?).max(0))
    }
}

/// A Kafka source's partitions, each written by the worker that reads it and read by progress
/// snapshots.
#[derive(Debug)]
pub struct SourceOffsets {
    source: String,
    topic: String,
    group: String,
    partitions: Mutex<BTreeMap<i32, Arc<PartitionOffsets>>>,
}

impl SourceOffsets {
    /// The offsets of source `source`, reading `topic` under group `group`; no partition yet.
    #[must_use]
    pub fn new(source: &str, topic: &str, group: &str) -> Self {
        Self {
            source: source.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            partitions: Mutex::default(),
        }
    }

    /// The offsets of `partition`, for the worker that reads it (both unknown at first).
    pub fn partition(&self, partition: i32) -> Arc<PartitionOffsets> {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(partitions.entry(partition).or_default())
    }

    /// Every partition's offsets now, in partition order.
    #[must_use]
    pub fn progress(&self) -> Vec<PartitionProgress> {
        let partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        partitions
            .iter()
            .map(|(p, offsets)| {
                let (position, end) = offsets.get();
                PartitionProgress {
                    source: self.source.clone(),
                    topic: self.topic.clone(),
                    group: self.group.clone(),
                    partition: *p,
                    position,
                    end,
                }
            })
            .collect()
    }
}

/// One partition's position and end offset (see [`PartitionProgress`]), as its worker last set
/// them.
#[derive(Debug)]
pub struct PartitionOffsets {
    position: AtomicI64,
    end: AtomicI64,
}

/// What [`PartitionOffsets`] hold for an offset not known (offsets are never negative).
const UNKNOWN: i64 = -1;

impl Default for PartitionOffsets {
    fn default() -> Self {
        Self {
            position: AtomicI64::new(UNKNOWN),
            end: AtomicI64::new(UNKNOWN),
        }
    }
}

impl PartitionOffsets {
    /// Sets the position and the end.
    pub fn set(&self, position: Option<i64>, end: Option<i64>) {
        self.position
            .store(position.unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.end.store(end.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// The position and the end.
    #[must_use]
    pub fn get(&self) -> (Option<i64>, Option<i64>) {
        let known = |o: i64| (o >= 0).then_some(o);
        (
            known(self.position.load(Ordering::Relaxed)),
            known(self.end.load(Ordering::Relaxed)),
        )
    }
}

/// The checkpoints a run has written so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointProgress {
    /// Checkpoints written.
    pub written: u64,
    /// How long the last one took to write (file, folder sync, offset commits).
    pub last_duration: Option<Duration>,
    /// When the last one was written.
    pub last_written: Option<SystemTime>,
}

/// Alert events of one rule of one `alert` node, of one event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertCount {
    /// The `alert` node.
    pub node: String,
    /// `news2` or the rule's name.
    pub rule: String,
    /// The event type.
    pub event: String,
    /// Events raised.
    pub count: u64,
}

/// What the checkpoint coordinator has written, read by progress snapshots.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    written: AtomicU64,
    last_duration_us: AtomicU64,
    /// Milliseconds since the epoch; 0 before the first.
    last_written_ms: AtomicU64,
}

impl CheckpointStats {
    /// A checkpoint was written, in `took`.
    pub fn written(&self, took: Duration) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_duration_us.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last_written_ms.store(now.max(1), Ordering::Relaxed);
        self.written.fetch_add(1, Ordering::Release);
    }

    /// The checkpoints written so far.
    #[must_use]
    pub fn progress(&self) -> CheckpointProgress {
        let written = self.written.load(Ordering::Acquire);
        let ms = self.last_written_ms.load(Ordering::Relaxed);
        CheckpointProgress {
            written,
            last_duration: (written > 0)
                .then(|| Duration::from_micros(self.last_duration_us.load(Ordering::Relaxed))),
            last_written: (written > 0 && ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

impl Progress {
    /// Records the sources have emitted so far.
    #[must_use]
    pub fn source_records(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.source)
            .map(|n| n.records_out)
            .sum()
    }
}

/// Receives what a run reports while it goes on. Every method has a default that ignores it.
/// Calls come from the thread that called [`super::run`] (messages before the workers start)
/// and from a thread of the run's own (snapshots).
pub trait RunObserver: Send + Sync {
    /// A snapshot, every [`super::RunOptions::progress_interval`] while the workers run.
    fn progress(&self, snapshot: &Progress) {
        let _ = snapshot;
    }

    /// The workers have stopped (finished or failed): their final counts. No snapshot follows.
    fn finished(&self, snapshot: &Progress) {
        let _ = snapshot;
    }

    /// Something the user should know as the run starts: the embedded broker's address and
    /// what it was filled with, the checkpoint the run resumes from.
    fn message(&self, message: &str) {
        let _ = message;
    }
}

/// Takes snapshots of a plan's counters.
#[derive(Clone)]
pub(super) struct Snapshots {
    plan: Arc<Plan>,
    /// Per node of the job, in job order: name, kind, whether it is a source.
    nodes: Arc<[(String, &'static str, bool)]>,
    started: Instant,
}

impl Snapshots {
    /// Snapshots of `plan`'s counters for `job`'s nodes, timed from now.
    pub(super) fn new(job: &Job, plan: Arc<Plan>) -> Self {
        let nodes = job
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.kind.name(), n.section == Section::Sources))
            .collect();
        Self {
            plan,
            nodes,
            started: Instant::now(),
        }
    }

    /// The counts now.
    pub(super) fn take(&self) -> Progress {
        let elapsed = self.started.elapsed();
        let nodes: Vec<NodeSummary> = self
            .nodes
            .iter()
            .map(|(name, kind, source)| self.node(name, kind, *source))
            .collect();
        let read: u64 = nodes
            .iter()
            .filter(|n| n.source)
            .map(|n| n.records_out)
            .sum();
        let checkpoint = self.plan.checkpoint.as_ref();
        let watermarks = checkpoint
            .map(|cp| {
                cp.watermarks
                    .iter()
                    .map(|(name, (w, granularity))| {
                        let t = w.load(Ordering::Relaxed);
                        let ms = (t > 0).then(|| {
                            i64::try_from(t.saturating_mul(*granularity)).unwrap_or(i64::MAX)
                        });
                        (name.clone(), ms)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut alerts = Vec::new();
        let mut alert_latency = Vec::new();
        for (node, latency) in &self.plan.alerts {
            let (events, arrival) = latency.progress();
            alerts.extend(events.into_iter().map(|(rule, event, count)| AlertCount {
                node: node.clone(),
                rule,
                event,
                count,
            }));
            alert_latency.push((node.clone(), arrival));
        }
        let partitions = checkpoint
            .map(|cp| cp.offsets.iter().flat_map(|o| o.progress()).collect())
            .unwrap_or_default();
        Progress {
            elapsed,
            nodes,
            rate: read as f64 / elapsed.as_secs_f64().max(1e-3),
            watermarks,
            checkpoints: checkpoint.map(|cp| cp.stats.progress()),
            alerts,
            partitions,
            alert_latency,
            end_to_end: self
                .plan
                .end_to_end
                .as_ref()
                .filter(|e| e.is_on())
                .map(|e| e.histogram()),
        }
    }

    fn node(&self, name: &str, kind: &str, source: bool) -> NodeSummary {
        let c = self.plan.counters.get(name).cloned().unwrap_or_default();
        let (records_in, records_out, rejected, files) = c.snapshot();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NodeSummary {
            name: name.to_owned(),
            kind: kind.to_owned(),
            source,
            records_in,
            records_out,
            rejected,
            files,
            dropped: load(&c.dropped),
            dead_letters: load(&c.dead_letters),
            late: load(&c.late),
            bytes_in: load(&c.bytes),
            bytes_written: load(&c.written),
            read_by_worker: c.worker_reads(),
            failing_for_ms: c.failing_for_ms(vitalflow_model::now_us() / 1000),
        }
    }

    /// When the workers started.
    pub(super) const fn started(&self) -> Instant {
        self.started
    }
}

/// A thread that hands the observer a snapshot at every interval until stopped.
pub(super) struct Reporter {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Reporter {
    /// Starts reporting, the first snapshot one `interval` from now.
    pub(super) fn start(
        snapshots: Snapshots,
        observer: Arc<dyn RunObserver>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("progress".to_owned())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                loop {
                    match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
                        Err(RecvTimeoutError::Timeout) => {
                            next = Instant::now() + interval;
                            observer.progress(&snapshots.take());
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops reporting: no snapshot is handed over after this returns.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{Progress, RunObserver};
    use crate::job::Job;
    use crate::runtime::{RunOptions, run};

    #[derive(Default)]
    struct Seen {
        progress: Mutex<Vec<Progress>>,
        finished: Mutex<Vec<Progress>>,
    }

    impl RunObserver for Seen {
        fn progress(&self, snapshot: &Progress) {
            self.progress.lock().unwrap().push(snapshot.clone());
        }
        fn finished(&self, snapshot: &Progress) {
            self.finished.lock().unwrap().push(snapshot.clone());
        }
    }

    /// A paced generator through a filter and de-identification into a JSON lines sink: snapshots while it runs, and
    /// final counts equal to the summary's.
    #[test]
    fn the_observer_sees_the_counts_the_summary_reports() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"[job]
name = "observed"

[sources.g]
kind = "generator"
format = "flat"
patients = 5
count = 300
rate = 1000

[operators.high]
kind = "filter"
inputs = ["g"]
condition = "hr > 80"

[operators.anon]
kind = "anonymize"
inputs = ["high"]
key = "ephemeral"

[sinks.rows]
kind = "jsonl"
inputs = ["anon"]
path = "rows"
"#;
        let job = Job::parse(Path::new("observed.toml"), text.to_owned(), &|_| None)
            .unwrap_or_else(|d| panic!("{d}"));
        let seen = Arc::new(Seen::default());
        let options = RunOptions {
            out: Some(dir.path().join("out")),
            workers: Some(2),
            observer: Some(Arc::clone(&seen) as Arc<dyn RunObserver>),
            progress_interval: Some(Duration::from_millis(20)),
            ..RunOptions::default()
        };
        let summary = run(&job, &options).unwrap();

        let finished = seen.finished.lock().unwrap().clone();
        assert_eq!(finished.len(), 1, "one final snapshot");
        let last = &finished[0];
        assert_eq!(last.nodes, summary.nodes);
        assert_eq!(last.source_records(), 300);
        assert!(
            summary.nodes.iter().all(|n| n.records_in > 0),
            "{summary:?}"
        );
        assert!(last.elapsed <= summary.elapsed);

        let progress = seen.progress.lock().unwrap().clone();
        assert!(!progress.is_empty(), "no snapshot while the run went on");
        for (a, b) in progress.iter().zip(progress.iter().skip(1)) {
            assert!(a.elapsed <= b.elapsed);
        }
        for snapshot in &progress {
            assert!(snapshot.elapsed <= last.elapsed);
            assert!(snapshot.rate >= 0.0);
            let names: Vec<&str> = snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(names, ["g", "high", "anon", "rows"]);
            for (n, end) in snapshot.nodes.iter().zip(&last.nodes) {
                assert!(n.records_in <= end.records_in && n.records_out <= end.records_out);
            }
        }
    }

    /// A partition's lag: its end less its position, 0 when the end (as the broker last said)
    /// is behind the position, unknown while either is.
    #[test]
    fn a_partitions_lag_is_what_lies_between_its_position_and_its_end() {
        let offsets = super::SourceOffsets::new("s", "t", "g");
        let lag = |position, end| {
            offsets.partition(3).set(position, end);
            let all = offsets.progress();
            assert_eq!(all.len(), 1);
            assert_eq!((all[0].position, all[0].end), (position, end));
            all[0].lag()
        };
        assert_eq!(lag(None, None), None);
        assert_eq!(lag(Some(5), None), None);
        assert_eq!(lag(None, Some(9)), None);
        assert_eq!(lag(Some(5), Some(9)), Some(4));
        assert_eq!(lag(Some(9), Some(9)), Some(0));
        assert_eq!(lag(Some(12), Some(9)), Some(0));
        assert_eq!(lag(Some(0), Some(0)), Some(0));
    }

    /// The bytes of the files under `dir`, and how many files there are.
    fn folder_size(dir: &Path) -> (u64, u64) {
        let (mut bytes, mut files) = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                let (b, f) = folder_size(&entry.path());
                bytes += b;
                files += f;
            } else {
                bytes += meta.len();
                files += 1;
            }
        }
        (bytes, files)
    }

    /// Every kind of file a sink writes (FHIR and row Parquet, JSON lines of rows and of audit
    /// records, dead letters): each sink counts the bytes of the files it committed, which are
    /// the sizes of the files in its folder; no other node counts any.
    #[test]
    fn sinks_count_the_bytes_of_the_files_they_commit() {
        let dir = tempfile::tempdir().unwrap();
        // Every tenth reading's heart rate is not a number: a dead letter.
        let csv: String = std::iter::once("id,hr\n".to_owned())
            .chain((0..300).map(|i| match i % 10 {
                0 => format!("{i},n/a\n"),
                _ => format!("{i},{}\n", 60 + i % 50),
            }))
            .collect();
        std::fs::write(dir.path().join("readings.csv"), csv).unwrap();
        let text = format!(
            r#"[job]
name = "written"
batch-size = 100

[sources.readings]
kind = "file"
path = "{}"
format = "csv"
fields = [
  {{ name = "id", type = "integer" }},
  {{ name = "hr", type = "integer" }},
]

[operators.high]
kind = "filter"
inputs = ["readings"]
condition = "hr > 80"

[sinks.rows]
kind = "jsonl"
inputs = ["high"]
path = "rows"

[sinks.table]
kind = "parquet"
inputs = ["high"]
path = "table"

[sources.ehr]
kind = "generator"
patients = 5
count = 300

[operators.ingest]
kind = "ingest"
inputs = ["ehr"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "ephemeral"

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
inputs = ["readings.dead-letter", "ingest.dead-letter"]
"#,
            dir.path().join("readings.csv").display()
        );
        let job = Job::parse(Path::new("written.toml"), text, &|_| None)
            .unwrap_or_else(|d| panic!("{d}"));
        let out = dir.path().join("out");
        let options = RunOptions {
            out: Some(out.clone()),
            workers: Some(2),
            ..RunOptions::default()
        };
        let summary = run(&job, &options).unwrap();
        let folders = [
            ("rows", "rows"),
            ("table", "table"),
            ("fhir", "canonical"),
            ("audit-log", "audit"),
            ("dead-letter", "dead-letter"),
        ];
        for n in &summary.nodes {
            match folders.iter().find(|(sink, _)| *sink == n.name) {
                Some((_, folder)) => {
                    let (bytes, files) = folder_size(&out.join(folder));
                    assert!(files > 0 && bytes > 0, "{}: nothing written", n.name);
                    assert_eq!(n.files, files, "{}", n.name);
                    assert_eq!(n.bytes_written, bytes, "{}", n.name);
                }
                None => assert_eq!(n.bytes_written, 0, "{}", n.name),
            }
        }
    }

    /// Timing one record in 7 from arrival to durability: the final snapshot's histogram holds
    /// one value for every seventh record of each worker's source; a job whose only sink writes
    /// nothing times nothing.
    #[test]
    fn snapshots_carry_the_times_to_durability_of_one_record_in_n() {
        let run_with = |sink: &str| {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                "[job]\nbatch-size = 50\n\n[sources.g]\nkind = \"generator\"\nformat = \"flat\"\n\
                 count = 1000\n\n[operators.anon]\nkind = \"anonymize\"\ninputs = [\"g\"]\n\
                 key = \"ephemeral\"\n\n[sinks.out]\n{sink}\ninputs = [\"anon\"]\n"
            );
            let job = Job::parse(Path::new("timed.toml"), text, &|_| None)
                .unwrap_or_else(|d| panic!("{d}"));
            let seen = Arc::new(Seen::default());
            let options = RunOptions {
                out: Some(dir.path().join("out")),
                workers: Some(2),
                observer: Some(Arc::clone(&seen) as Arc<dyn RunObserver>),
                end_to_end: true,
                end_to_end_every: 7,
                ..RunOptions::default()
            };
            run(&job, &options).unwrap();
            let finished = seen.finished.lock().unwrap();
            finished[0].end_to_end.clone()
        };
        let timed = run_with("kind = \"jsonl\"\npath = \"rows\"").unwrap().len();
        // Each worker's source times its 1st, 8th, 15th, … record: 1000 / 7 and one more at
        // most for each of the two workers.
        assert!((1000 / 7..=1000 / 7 + 2).contains(&timed), "{timed}");
        assert!(run_with("kind = \"blackhole\"").is_none());
    }

    /// Without an interval the observer gets no snapshot while the run goes on, only the final
    /// one.
    #[test]
    fn without_an_interval_only_the_final_counts_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[sources.g]\nkind = \"generator\"\ncount = 50\n\n\
                    [sinks.none]\nkind = \"blackhole\"\ninputs = [\"g\"]\n";
        let job = Job::parse(Path::new("quiet.toml"), text.to_owned(), &|_| None)
            .unwrap_or_else(|d| panic!("{d}"));
        let seen = Arc::new(Seen::default());
        let options = RunOptions {
            out: Some(dir.path().join("out")),
            observer: Some(Arc::clone(&seen) as Arc<dyn RunObserver>),
            ..RunOptions::default()
        };
        let summary = run(&job, &options).unwrap();
        assert!(seen.progress.lock().unwrap().is_empty());
        let finished = seen.finished.lock().unwrap();
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].nodes, summary.nodes);
    }
}
