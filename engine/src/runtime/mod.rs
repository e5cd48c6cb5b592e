//! Running a job on timely dataflow.
//!
//! [`run`] resolves the job ([`plan::prepare`]), starts N timely workers that each build the same
//! dataflow ([`builder::build`]), hands the caller's [`RunObserver`] snapshots of the counts while
//! they run, and returns a [`RunSummary`], or a [`RunError`] that says whose fault a failure was.
//! The engine prints nothing: showing progress and messages is the caller's.
//! Records are exchanged by patient key after ingestion, so a patient's records stay in order on
//! one worker; the output does not depend on the number of workers.

pub mod alerts;
pub mod builder;
pub mod checkpoint;
pub mod cluster;
pub mod compensate;
pub mod deliver;
pub(crate) mod embedded;
pub mod error;
pub mod joins;
pub mod kafka_sink;
pub mod kafka_source;
pub mod latency;
pub mod metrics;
pub mod mllp_source;
pub mod ops;
pub mod outdir;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod rows;
pub mod saga;
pub mod sources;
pub mod stages;
pub mod transactions;
pub mod windows;

#[cfg(test)]
mod exchanged;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use vitalflow_model::ids::uuid_from;

use crate::job::{Job, NodeKind};
use crate::nodes::file::FileOp;
use builder::PlannedNode;
use embedded::Embedded;
use metrics::Failure;
use progress::{Reporter, Snapshots};
use saga::RunIdentity;

pub use error::{Fault, RunError, RunFailure, System};
pub use progress::{Progress, RunObserver};

/// How to run a job.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Worker threads (default: the job's `workers`, else 1).
    pub workers: Option<usize>,
    /// Output folder (default: the job's `out`, else `out/<job name>`).
    pub out: Option<PathBuf>,
    /// Ignore the checkpoint of an earlier run (jobs with Kafka sources): start over.
    pub fresh: bool,
    /// Told what a user should know as the run starts (the embedded broker's address), handed
    /// snapshots of the counts while the workers run (every `progress_interval`) and their
    /// final counts when they stop.
    pub observer: Option<Arc<dyn RunObserver>>,
    /// Measure end-to-end latency (arrival at a source → durable in every sink that writes);
    /// see [`latency`]. Arrivals are kept until their sinks commit them: 8 bytes for each
    /// record timed, for as long as the slowest sink takes to commit it.
    pub end_to_end: bool,
    /// With `end_to_end`: time one record in this many of each source on each worker (0 or 1:
    /// every record), which keeps that many times fewer arrivals waiting.
    pub end_to_end_every: u64,
    /// Time every operator's activations (see [`profile`]); the summary's `operators`.
    pub profile: bool,
    /// Write into an output folder that holds another job's output or a finished run (see
    /// [`outdir::may_write`]).
    pub overwrite: bool,
    /// How often the observer gets a snapshot while the workers run (`None` or zero: never).
    pub progress_interval: Option<Duration>,
    /// A graceful stop: once set, the sources read nothing more (nor does the embedded broker's
    /// live feed produce more); what they read flows through every operator into the sinks,
    /// which write it, a Kafka job writes its final checkpoint and commits its offsets, and the
    /// run ends as if its input had ended ([`RunSummary::stopped`]).
    pub stop: Option<Arc<AtomicBool>>,
    /// Run as one process of a cluster (see [`cluster`]); `None`: this process alone.
    pub cluster: Option<cluster::Cluster>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("workers", &self.workers)
            .field("out", &self.out)
            .field("fresh", &self.fresh)
            .field("end_to_end", &self.end_to_end)
            .field("end_to_end_every", &self.end_to_end_every)
            .field("profile", &self.profile)
            .field("overwrite", &self.overwrite)
            .field("progress_interval", &self.progress_interval)
            .field("observer", &self.observer.is_some())
            .field("stop", &self.stop.is_some())
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Counts of one node at the end of a run. Every record received is rejected, dropped, late
/// (windows) or accepted: `records_in = accepted + rejected + dropped + late`. For most nodes
/// each accepted record is one record out; an `ingest` node makes one or more clinical records
/// of each accepted message, a `window` node its window rows and an `alert` node its alert
/// events, so their `records_out` counts what they made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// Node kind.
    pub kind: String,
    /// Whether it is a source (of the job's `[sources]`).
    pub source: bool,
    /// Records received (sources: read).
    pub records_in: u64,
    /// Records emitted (sinks: written).
    pub records_out: u64,
    /// Records received and sent to dead-letter.
    pub rejected: u64,
    /// Records received that ended here with neither output nor dead letter (see
    /// [`metrics::NodeCounters::dropped`]).
    pub dropped: u64,
    /// Dead letters sent: more than `rejected` when a record was rejected for several faults
    /// (an ingested bundle or message with several bad parts).
    pub dead_letters: u64,
    /// Files written (sinks), or read (file sources, empty ones included).
    pub files: u64,
    /// Records later than the allowed lateness (windows), or behind the watermark when read
    /// (Kafka sources).
    pub late: u64,
    /// Bytes of the records read (sources).
    pub bytes_in: u64,
    /// Bytes written (sinks; see [`metrics::NodeCounters::written`]).
    pub bytes_written: u64,
    /// Records each worker read, by global worker index (file sources, which every worker
    /// reads; empty for other nodes).
    #[serde(default)]
    pub read_by_worker: BTreeMap<usize, u64>,
    /// How long the node's deliveries have been failing and retried (a Kafka sink whose broker
    /// is away), in ms; 0 while they succeed.
    #[serde(default)]
    pub failing_for_ms: u64,
}

impl NodeSummary {
    /// Adds another process's counts of the same node.
    pub fn add(&mut self, other: &Self) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.dead_letters += other.dead_letters;
        self.files += other.files;
        self.late += other.late;
        self.bytes_in += other.bytes_in;
        self.bytes_written += other.bytes_written;
        self.failing_for_ms = self.failing_for_ms.max(other.failing_for_ms);
        for (worker, n) in &other.read_by_worker {
            *self.read_by_worker.entry(*worker).or_default() += n;
        }
    }

    /// Records received and neither rejected, dropped nor late (for a Kafka source, `late`
    /// records are still read and emitted, so they are not taken off).
    #[must_use]
    pub fn accepted(&self) -> u64 {
        let late = if self.kind == "window" { self.late } else { 0 };
        self.records_in
            .saturating_sub(self.rejected)
            .saturating_sub(self.dropped)
            .saturating_sub(late)
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Job name.
    pub job: String,
    /// Run id (the `traceId` of every domain event).
    pub run_id: String,
    /// Workers used.
    pub workers: usize,
    /// Output folder.
    pub out: PathBuf,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Per node, in job order.
    pub nodes: Vec<NodeSummary>,
    /// Per Kafka source: the highest watermark reached, as an event time (milliseconds).
    pub watermarks: Vec<(String, i64)>,
    /// Files of an interrupted run removed before the run (they held uncheckpointed records).
    pub removed_files: u64,
    /// The time of the checkpoint the run resumed from (see [`checkpoint_time`]), if it resumed
    /// from one.
    pub resumed_at: Option<String>,
    /// Per `alert` node and rule: alert events and latencies.
    pub alerts: Vec<AlertSummary>,
    /// Per `alert` node: readings scored without their air/oxygen or SpO2 scale (mapped, but
    /// null: no context), by parameter; nodes without any are left out.
    pub missing_context: Vec<(String, Vec<(&'static str, u64)>)>,
    /// The embedded broker's live feed: readings produced, and in how long.
    pub live_feed: Option<(u64, Duration)>,
    /// End-to-end latencies (µs) of the records timed, when the run measured them.
    pub end_to_end: Option<Box<hdrhistogram::Histogram<u64>>>,
    /// Per operator, the busiest first, when the run was profiled.
    pub operators: Vec<profile::OperatorTime>,
    /// Whether the run was stopped ([`RunOptions::stop`]) before its input ended.
    pub stopped: bool,
}

/// One rule of one `alert` node over a run.
#[derive(Debug, Clone)]
pub struct AlertSummary {
    /// The `alert` node.
    pub node: String,
    /// `news2` or the rule's name.
    pub rule: String,
    /// Alert events, by event type.
    pub events: std::collections::BTreeMap<String, u64>,
    /// Emission minus the triggering reading's arrival (ms).
    pub arrival: Option<alerts::Percentiles>,
    /// Emission minus the triggering reading's event time (ms).
    pub event: Option<alerts::Percentiles>,
    /// The raw histograms (emission − arrival in µs, emission − event time in ms), for
    /// benchmarks.
    pub histograms: Box<alerts::RuleLatency>,
}

impl RunSummary {
    /// Records read by all sources (for a source with a declared schema: read, before
    /// decoding).
    #[must_use]
    pub fn source_records(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| {
                matches!(n.kind.as_str(), "generator" | "file") || self.is_kafka_source(&n.name)
            })
            .map(|n| n.records_in)
            .sum()
    }
}

impl RunSummary {
    fn is_kafka_source(&self, name: &str) -> bool {
        self.watermarks.iter().any(|(n, _)| n == name)
    }
}

/// Runs a validated job to completion.
///
/// # Examples
///
/// ```
/// use std::path::Path;
///
/// use vitalflow_engine::{Job, RunOptions, run};
///
/// let text = r#"
/// [job]
/// batch-size = 50
///
/// [sources.generator]
/// kind = "generator"
/// patients = 10
/// count = 100
///
/// [operators.ingest]
/// kind = "ingest"
/// inputs = ["generator"]
///
/// [operators.anonymize]
/// kind = "anonymize"
/// inputs = ["ingest"]
/// key = "ephemeral"
///
/// [operators.canonize]
/// kind = "canonize"
/// inputs = ["anonymize"]
///
/// [sinks.fhir]
/// kind = "parquet"
/// inputs = ["canonize"]
/// "#;
/// let job = Job::parse(Path::new("tiny.toml"), text.to_owned(), &|_| None)?;
/// let out = tempfile::tempdir()?;
/// let options = RunOptions {
///     out: Some(out.path().to_owned()),
///     ..RunOptions::default()
/// };
///
/// let summary = run(&job, &options)?;
/// assert_eq!(summary.source_records(), 100);
/// let fhir = summary.nodes.iter().find(|n| n.name == "fhir").ok_or("no sink")?;
/// assert_eq!((fhir.records_in, fhir.records_out), (100, 100));
/// assert!(out.path().join("canonical/Observation").is_dir());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`RunError::Invalid`] if keys, inputs or output folders cannot be resolved;
/// [`RunError::Refused`] if the output folder holds what the run must not replace;
/// [`RunError::Failed`] if the job failed, saying whose fault it was.
pub fn run(job: &Job, options: &RunOptions) -> Result<RunSummary, RunError> {
    let mut start = Start::new(job, options);
    let say = |message: &str| {
        if let Some(observer) = &options.observer {
            observer.message(message);
        }
    };
    let stop = options.stop.clone().unwrap_or_default();
    let cluster = options.cluster.as_ref().filter(|c| c.processes() > 1);
    if cluster.is_some()
        && let Some(n) = job
            .nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Mllp(_)))
    {
        return Err(RunError::Refused(RunFailure::new(
            Fault::Input,
            format!(
                "`sources.{}`: an MLLP source listens in one process, with its log in that \
                 process's output folder: run the job as one process",
                n.name
            ),
        )));
    }
    let mut joined = match cluster {
        Some(c) => {
            if let Some(node) = ephemeral_key(job) {
                return Err(RunError::Refused(RunFailure::new(
                    Fault::Input,
                    format!(
                        "`operators.{node}.key`: `ephemeral` draws a random key in each process, \
                         so the processes of a cluster would pseudonymize one patient \
                         differently: give them one key (`file:PATH` or `env:NAME`)"
                    ),
                )));
            }
            say(&format!(
                "process {} of {}: waiting for the others to join on {}",
                c.process,
                c.processes(),
                c.addresses.join(", ")
            ));
            let joining =
                cluster::Joining::listen(c, start.workers, cluster::digest(job, start.workers))
                    .map_err(RunError::Failed)?;
            Some(joining.join().map_err(RunError::Failed)?)
        }
        None => None,
    };
    let leader = joined.as_ref().is_none_or(|j| j.process() == 0);
    let (mut embedded, plan) = if leader {
        match lead(job, options, &start, &say, &stop) {
            Ok(prepared) => prepared,
            Err(e) => {
                if let Some(j) = joined.as_mut() {
                    j.refuse(&e.to_string());
                }
                return Err(e);
            }
        }
    } else {
        let welcome = joined
            .as_mut()
            .map(cluster::Joined::welcomed)
            .transpose()
            .map_err(RunError::Failed)?;
        let bootstrap = welcome.as_ref().and_then(|w| w.bootstrap.clone());
        let files = welcome
            .as_ref()
            .map(|w| w.files.clone())
            .unwrap_or_default();
        if let Some(w) = welcome {
            start.run.run_id = w.run_id;
        }
        let plan = start.prepare(job, options, bootstrap, None, (Arc::clone(&stop), false))?;
        for (name, names) in &files {
            if let Some(op) = plan.node(name).and_then(PlannedNode::op::<FileOp>) {
                op.take_names(names);
            }
        }
        (None, plan)
    };
    let plan = Arc::new(plan);
    if let Some(j) = joined.as_mut().filter(|_| leader) {
        j.welcome(&cluster::Welcome {
            run_id: start.run.run_id.clone(),
            bootstrap: embedded.as_ref().map(Embedded::bootstrap),
            files: file_names(&plan),
        })
        .map_err(RunError::Failed)?;
    }
    let mut record = outdir::RunRecord {
        job: job.name.clone(),
        run_id: start.run.run_id.clone(),
        finished: false,
    };
    if leader {
        write_record(&start.out, &record)?;
    }
    if let Some(cp) = plan.checkpoint.as_ref().filter(|cp| cp.base.time > 0) {
        say(&format!(
            "resuming from the checkpoint at {} ({} files kept, {} uncommitted files removed)",
            checkpoint_time(cp),
            cp.base.files.len(),
            cp.removed
        ));
    }
    tracing::info!(job = %job.name, run_id = %start.run.run_id, workers = start.workers, out = %start.out.display(), "starting");

    let snapshots = Snapshots::new(job, Arc::clone(&plan));
    let failure = Failure::default();
    let (sockets, links) = match joined {
        Some(j) => {
            let (sockets, links) = j
                .connect(&failure, &plan.stop, position_logs(&plan))
                .map_err(RunError::Failed)?;
            let links = Arc::new(links);
            let _ = plan.cluster.set(Arc::clone(&links));
            pass_stop_on(&links, &plan.stop);
            (Some(sockets), Some(links))
        }
        None => (None, None),
    };
    let profiled = execute(&plan, start.workers, options, &snapshots, &failure, sockets);
    let mut last = snapshots.take();
    if let Some(links) = &links {
        finish_cluster(links, leader, &failure, &mut last);
    }
    if let Some(observer) = &options.observer {
        observer.finished(&last);
    }
    let live_feed = embedded
        .as_mut()
        .map_or(Ok(None), Embedded::finish_feed)
        .unwrap_or_else(|f| {
            failure.fail(f);
            None
        });
    if let Some(reported) = failure.reported() {
        if leader {
            compensate_failed(job, &plan, &reported, &say);
        }
        return Err(RunError::Failed(reported));
    }
    drop(embedded);
    if leader {
        record.finished = true;
        write_record(&start.out, &record)?;
    }
    Ok(RunSummary {
        live_feed,
        end_to_end: plan.end_to_end.as_ref().map(|e| Box::new(e.histogram())),
        operators: profiled.map(|p| p.operators()).unwrap_or_default(),
        elapsed: snapshots.started().elapsed(),
        ..summary(&plan, start, last.nodes)
    })
}

/// Undoes what a failed run had begun and records it in the audit trail (see
/// [`compensate`]); says what it did, or why it could not.
fn compensate_failed(job: &Job, plan: &plan::Plan, failure: &RunFailure, say: &dyn Fn(&str)) {
    match compensate::compensate(job, plan, failure) {
        Ok(c) if c.written.is_empty() && c.files_removed.is_empty() => {}
        Ok(c) => {
            let batches = c.batches.len();
            say(&format!(
                "compensated {batches} unfinished {}: {} uncommitted {} removed, {} input \
                 {} not committed{}",
                if batches == 1 { "batch" } else { "batches" },
                c.files_removed.len(),
                if c.files_removed.len() == 1 {
                    "file"
                } else {
                    "files"
                },
                c.offsets_not_committed,
                if c.offsets_not_committed == 1 {
                    "offset"
                } else {
                    "offsets"
                },
                if c.written.is_empty() {
                    String::new()
                } else {
                    format!("; recorded in {}", c.written.join(", "))
                }
            ));
            tracing::warn!(job = %job.name, batches, files_removed = c.files_removed.len(), offsets_not_committed = c.offsets_not_committed, "compensated");
        }
        Err(e) => {
            say(&format!("could not compensate the unfinished batches: {e}"));
            tracing::error!(job = %job.name, error = %e, "compensation failed");
        }
    }
}

/// Passes a graceful stop of this process on to the others (once), from a thread of its own
/// that ends with the run.
fn pass_stop_on(links: &Arc<cluster::Links>, stop: &Arc<AtomicBool>) {
    let (links, stop) = (Arc::downgrade(links), Arc::clone(stop));
    let _ = std::thread::Builder::new()
        .name("cluster-stop".to_owned())
        .spawn(move || {
            while let Some(links) = links.upgrade() {
                if stop.load(Ordering::SeqCst) {
                    links.stop();
                    return;
                }
                drop(links);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
}

/// The position logs of the plan's Kafka sources, by name.
fn position_logs(plan: &plan::Plan) -> cluster::Logs {
    plan.checkpoint
        .as_ref()
        .map(|cp| {
            cp.sources
                .iter()
                .map(|s| (s.name.clone(), Arc::clone(&s.log)))
                .collect()
        })
        .unwrap_or_default()
}

/// Lists the files of every file source, once for every worker (see [`FileOp::files`]).
///
/// # Errors
/// A source whose path or folder cannot be read (the file system's fault).
fn list_files(plan: &plan::Plan) -> Result<(), RunFailure> {
    for node in &plan.nodes {
        if let Some(op) = node.op::<FileOp>() {
            op.list().map_err(|e| {
                RunFailure::at_source(&node.name, Fault::External(System::FileSystem), e)
            })?;
        }
    }
    Ok(())
}

/// The files process 0 listed for each file source reading a folder, as names in it.
fn file_names(plan: &plan::Plan) -> BTreeMap<String, Vec<PathBuf>> {
    plan.nodes
        .iter()
        .filter_map(|node| Some((node.name.clone(), node.op::<FileOp>()?.names()?)))
        .collect()
}

/// The first node whose pseudonym key is `ephemeral`.
fn ephemeral_key(job: &Job) -> Option<&str> {
    job.nodes
        .iter()
        .find(|n| {
            let key = match &n.kind {
                NodeKind::Anonymize(a) => a.key.get_ref(),
                NodeKind::Alert(a) => a.key.get_ref(),
                _ => return false,
            };
            matches!(key, crate::nodes::settings::KeySource::Ephemeral)
        })
        .map(|n| n.name.as_str())
}

/// What the run's first process (the only one, out of a cluster) does before the workers
/// start: checks the output folder, starts the embedded broker (its live feed stopping on
/// `stop`), prepares the plan and lists the files the file sources read.
fn lead(
    job: &Job,
    options: &RunOptions,
    start: &Start,
    say: &dyn Fn(&str),
    stop: &Arc<AtomicBool>,
) -> Result<(Option<Embedded>, plan::Plan), RunError> {
    start.check_out_folder(job, options.overwrite)?;
    let embedded = Embedded::start(job, say, Arc::clone(stop)).map_err(RunError::Failed)?;
    let plan = start.prepare(
        job,
        options,
        embedded.as_ref().map(Embedded::bootstrap),
        embedded.as_ref().and_then(Embedded::feeding),
        (Arc::clone(stop), true),
    )?;
    list_files(&plan).map_err(RunError::Failed)?;
    Ok((embedded, plan))
}

/// The end of a cluster process's run: the others learn how it went; process 0 adds their
/// counts to its own (waiting for them a while).
fn finish_cluster(links: &cluster::Links, leader: bool, failure: &Failure, last: &mut Progress) {
    if let Some(f) = failure.reported() {
        links.failed(&f.to_string());
        return;
    }
    if leader {
        let missing = links.gather(&mut last.nodes, Duration::from_secs(60));
        links.release();
        if !missing.is_empty() && failure.reported().is_none() {
            failure.fail(RunFailure::new(
                Fault::External(System::Cluster),
                format!("process(es) {missing:?} did not report their counts at the end"),
            ));
        }
    } else {
        links.finished(&last.nodes);
        links.wait_released(Duration::from_secs(120));
    }
}

/// What a run is before it starts: its workers, output folder and identity, and whether it
/// resumes from a checkpoint.
struct Start {
    workers: usize,
    out: PathBuf,
    run: RunIdentity,
    /// A job reading Kafka (not the embedded broker, whose records live only as long as a run)
    /// or MLLP goes on from its checkpoint in its own output folder, unless started afresh.
    resumes: bool,
}

impl Start {
    fn new(job: &Job, options: &RunOptions) -> Self {
        let started_at = Utc::now();
        let run_id = uuid_from(&[
            job.name.as_bytes(),
            started_at.to_rfc3339().as_bytes(),
            &std::process::id().to_le_bytes(),
        ]);
        Self {
            workers: options.workers.or(job.settings.workers).unwrap_or(1).max(1),
            out: options
                .out
                .clone()
                .or_else(|| job.settings.out.as_ref().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("out").join(&job.name)),
            run: RunIdentity {
                job: job.name.clone(),
                run_id,
            },
            resumes: !options.fresh
                && job.nodes.iter().any(|n| match &n.kind {
                    NodeKind::Kafka(k) => !embedded::is_embedded(k.brokers.get_ref()),
                    NodeKind::Mllp(_) => true,
                    _ => false,
                }),
        }
    }

    /// Whether the run may write into its output folder (see [`outdir::may_write`]). What the
    /// folder holds, or a path that is not a folder, is the user's to settle; a folder that
    /// cannot be read is the file system's fault.
    fn check_out_folder(&self, job: &Job, overwrite: bool) -> Result<(), RunError> {
        outdir::may_write(&self.out, &job.name, self.resumes, overwrite).map_err(|message| {
            let fault = match std::fs::read_dir(&self.out) {
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Fault::Input,
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Fault::External(System::FileSystem)
                }
                _ => Fault::Input,
            };
            RunError::Refused(RunFailure::new(fault, message))
        })
    }

    /// Resolves the job for running (see [`plan::prepare`]), its sources stopping on `stop`.
    fn prepare(
        &self,
        job: &Job,
        options: &RunOptions,
        bootstrap: Option<String>,
        feeding: Option<Arc<AtomicBool>>,
        (stop, leader): (Arc<AtomicBool>, bool),
    ) -> Result<plan::Plan, RunError> {
        let embedded = bootstrap.is_some();
        let mut plan = plan::prepare(
            job,
            &self.out,
            self.run.clone(),
            bootstrap.as_deref(),
            options.fresh || embedded,
            feeding,
            (stop, leader),
        )?;
        plan.end_to_end = options
            .end_to_end
            .then(|| Arc::new(latency::EndToEnd::sampled(options.end_to_end_every)));
        Ok(plan)
    }
}

/// Writes the output folder's run file (see [`outdir::record`]).
fn write_record(out: &Path, record: &outdir::RunRecord) -> Result<(), RunError> {
    outdir::record(out, record).map_err(|e| {
        RunError::Failed(RunFailure::new(
            Fault::External(System::FileSystem),
            format!("cannot write {}: {e}", out.join(outdir::RUN_FILE).display()),
        ))
    })
}

/// Runs the plan's dataflow on `workers` timely workers until it completes or fails, handing
/// the observer a snapshot every `progress_interval` meanwhile; the operators' times when the
/// run is profiled.
fn execute(
    plan: &Arc<plan::Plan>,
    workers: usize,
    options: &RunOptions,
    snapshots: &Snapshots,
    failure: &Failure,
    cluster: Option<Vec<Option<std::net::TcpStream>>>,
) -> Option<Arc<profile::Profile>> {
    let interval = options.progress_interval.filter(|i| !i.is_zero());
    let reporter = match (&options.observer, interval) {
        (Some(observer), Some(interval)) => {
            Reporter::start(snapshots.clone(), Arc::clone(observer), interval)
                .inspect_err(|e| tracing::warn!(error = %e, "no progress: cannot start its thread"))
                .ok()
        }
        _ => None,
    };
    let profiled = options
        .profile
        .then(|| Arc::new(profile::Profile::default()));
    let (worker_plan, worker_failure, worker_profile) =
        (Arc::clone(plan), failure.clone(), profiled.clone());
    let work = move |worker: &mut timely::worker::Worker| {
        let failure = worker_failure.clone();
        if let Some(p) = &worker_profile {
            profile::install(worker, p);
        }
        worker.dataflow::<vitalflow_model::Time, _, _>(|scope| {
            builder::build(scope, &worker_plan, failure.clone());
        });
        while worker.step_or_park(Some(Duration::from_millis(1))) {
            if failure.failed() {
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
                break;
            }
        }
    };
    let joined = match cluster {
        None => match timely::execute(timely::Config::process(workers), work) {
            Ok(guards) => guards.join(),
            Err(e) => vec![Err(e)],
        },
        Some(sockets) => cluster::execute(sockets, workers, work, failure),
    };
    if let Some(reporter) = reporter {
        reporter.stop();
    }
    for e in joined.into_iter().filter_map(Result::err) {
        failure.fail(RunFailure::new(
            Fault::Internal,
            format!("a worker stopped: {e}"),
        ));
    }
    profiled
}

/// The summary of a completed run: its nodes' final counts, the Kafka sources' watermarks,
/// the alerts; what only the run knows (time, live feed, latencies, profile) is left empty.
fn summary(plan: &plan::Plan, start: Start, nodes: Vec<NodeSummary>) -> RunSummary {
    let watermarks = plan
        .checkpoint
        .as_ref()
        .map(|cp| {
            cp.watermarks
                .iter()
                .map(|(name, (w, granularity))| {
                    let t = w.load(Ordering::Relaxed).saturating_mul(*granularity);
                    (name.clone(), i64::try_from(t).unwrap_or(i64::MAX))
                })
                .collect()
        })
        .unwrap_or_default();
    let alerts = plan
        .alerts
        .iter()
        .flat_map(|(node, latency)| {
            latency
                .snapshot()
                .into_iter()
                .map(|(rule, r)| AlertSummary {
                    node: node.clone(),
                    rule,
                    events: r.events.clone(),
                    arrival: r.arrival_ms(),
                    event: r.event_ms(),
                    histograms: Box::new(r),
                })
        })
        .collect();
    let missing_context = plan
        .alerts
        .iter()
        .map(|(node, a)| (node.clone(), a.missing_context()))
        .filter(|(_, m)| !m.is_empty())
        .collect();
    RunSummary {
        job: start.run.job,
        run_id: start.run.run_id,
        workers: start.workers,
        out: start.out,
        elapsed: Duration::ZERO,
        nodes,
        watermarks,
        removed_files: plan.checkpoint.as_ref().map_or(0, |c| c.removed),
        resumed_at: plan
            .checkpoint
            .as_ref()
            .filter(|c| c.base.time > 0)
            .map(checkpoint_time),
        alerts,
        missing_context,
        live_feed: None,
        end_to_end: None,
        operators: Vec::new(),
        stopped: plan.stop.load(Ordering::SeqCst),
    }
}

/// A checkpoint's timestamp for people: the event time it stands for, in RFC 3339, when every
/// Kafka source stamps event times in steps of one length; the bare timestamp otherwise.
#[must_use]
pub fn checkpoint_time(cp: &plan::CheckpointPlan) -> String {
    let steps: std::collections::BTreeSet<u64> = cp.watermarks.values().map(|(_, g)| *g).collect();
    let time = match (steps.len(), steps.first()) {
        (1, Some(step)) => i64::try_from(cp.base.time.saturating_mul(*step))
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis),
        _ => None,
    };
    time.map_or_else(
        || format!("timestamp {}", cp.base.time),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
}
