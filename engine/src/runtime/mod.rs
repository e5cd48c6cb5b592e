//! Running a job on timely dataflow.
//!
//! [`run`] resolves the job ([`plan::prepare`]), starts N timely workers that each build the same
//! dataflow ([`builder::build`]), shows progress while they run, and returns a [`RunSummary`].
//! Records are exchanged by patient key after ingestion, so a patient's records stay in order on
//! one worker; the output does not depend on the number of workers.

pub mod alerts;
pub mod builder;
pub mod checkpoint;
pub mod joins;
pub mod kafka_sink;
pub mod kafka_source;
pub mod latency;
pub mod metrics;
pub mod ops;
pub mod outdir;
pub mod plan;
pub mod profile;
pub mod rows;
pub mod saga;
pub mod sources;
pub mod stages;

pub mod windows;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use vitalflow_model::ids::uuid_from;

use crate::job::{Diagnostics, Job, Section};
use metrics::Failure;
use saga::RunIdentity;

/// Receives messages for the user (the CLI prints them).
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// How to run a job.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Worker threads (default: the job's `workers`, else 1).
    pub workers: Option<usize>,
    /// Output folder (default: the job's `out`, else `out/<job name>`).
    pub out: Option<PathBuf>,
    /// Show a live progress line on standard error.
    pub progress: bool,
    /// Ignore the checkpoint of an earlier run (jobs with Kafka sources): start over.
    pub fresh: bool,
    /// Told what a user should know as the run starts (the embedded broker's address).
    pub notify: Option<Notify>,
    /// Measure end-to-end latency (arrival at a source → durable in every sink); see
    /// [`latency`]. For measured runs: arrivals are kept until their sinks commit them.
    pub end_to_end: bool,
    /// Time every operator's activations (see [`profile`]); the summary's `operators`.
    pub profile: bool,
    /// Write into an output folder that holds another job's output or a finished run (see
    /// [`outdir::may_write`]).
    pub overwrite: bool,
    /// Print a progress line on standard error at this interval when standard error is not a
    /// terminal (a terminal gets the live line of `progress`).
    pub progress_interval: Option<Duration>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("workers", &self.workers)
            .field("out", &self.out)
            .field("progress", &self.progress)
            .field("fresh", &self.fresh)
            .field("end_to_end", &self.end_to_end)
            .field("profile", &self.profile)
            .field("overwrite", &self.overwrite)
            .field("progress_interval", &self.progress_interval)
            .finish_non_exhaustive()
    }
}

/// Counts of one node at the end of a run. Every record received is rejected, dropped, late
/// (windows) or accepted: `records_in = accepted + rejected + dropped + late`. For most nodes
/// each accepted record is one record out; an `ingest` node makes one or more clinical records
/// of each accepted message, a `window` node its window rows and an `alert` node its alert
/// events, so their `records_out` counts what they made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// Node kind.
    pub kind: String,
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
}

impl NodeSummary {
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
    /// End-to-end latencies (µs), when the run measured them.
    pub end_to_end: Option<Box<hdrhistogram::Histogram<u64>>>,
    /// Per operator, the busiest first, when the run was profiled.
    pub operators: Vec<profile::OperatorTime>,
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

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job cannot start as configured (exit code 2).
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    /// The output folder holds what the run must not replace (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// The job started and failed (exit code 1).
    #[error("the job failed: {0}")]
    Failed(String),
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
/// [`RunError::Failed`] if a worker failed.
pub fn run(job: &Job, options: &RunOptions) -> Result<RunSummary, RunError> {
    let workers = options.workers.or(job.settings.workers).unwrap_or(1).max(1);
    let out = options
        .out
        .clone()
        .or_else(|| job.settings.out.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("out").join(&job.name));
    let started_at = Utc::now();
    let run_id = uuid_from(&[
        job.name.as_bytes(),
        started_at.to_rfc3339().as_bytes(),
        &std::process::id().to_le_bytes(),
    ]);
    let run = RunIdentity {
        job: job.name.clone(),
        run_id: run_id.clone(),
    };
    // A job reading Kafka (not the embedded broker, whose records live only as long as a run)
    // goes on from its checkpoint in its own output folder.
    let resumes = !options.fresh
        && job.nodes.iter().any(|n| match &n.kind {
            crate::job::NodeKind::Kafka(k) => !is_embedded(k.brokers.get_ref()),
            _ => false,
        });
    outdir::may_write(&out, &job.name, resumes, options.overwrite).map_err(RunError::Refused)?;
    let (broker, fresh, feeder) = embedded_broker(job, options)?;
    let bootstrap = broker
        .as_ref()
        .map(vitalflow_connectors::kafka::EmbeddedBroker::bootstrap);
    let mut plan = plan::prepare(
        job,
        &out,
        run,
        bootstrap.as_deref(),
        options.fresh || fresh,
        feeder.as_ref().map(|(flag, _)| Arc::clone(flag)),
    )?;
    plan.end_to_end = options.end_to_end.then(Arc::default);
    let mut record = outdir::RunRecord {
        job: job.name.clone(),
        run_id: run_id.clone(),
        finished: false,
    };
    outdir::record(&out, &record).map_err(|e| {
        RunError::Failed(format!(
            "cannot write {}: {e}",
            out.join(outdir::RUN_FILE).display()
        ))
    })?;
    let plan = Arc::new(plan);
    if let (Some(cp), Some(notify)) = (&plan.checkpoint, &options.notify)
        && cp.base.time > 0
    {
        notify(&format!(
            "resuming from the checkpoint at {} ({} files kept, {} uncommitted files removed)",
            checkpoint_time(cp),
            cp.base.files.len(),
            cp.removed
        ));
    }
    tracing::info!(job = %job.name, %run_id, workers, out = %out.display(), "starting");

    let failure = Failure::default();
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let tty = std::io::stderr().is_terminal();
    let show = if options.progress && tty {
        Some(Progress::Live)
    } else {
        options
            .progress_interval
            .filter(|i| !tty && !i.is_zero())
            .map(Progress::Lines)
    };
    let progress = show.map(|show| {
        let (plan, done) = (Arc::clone(&plan), Arc::clone(&done));
        let nodes: Vec<(String, bool)> = job
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.section == Section::Sources))
            .collect();
        std::thread::spawn(move || show_progress(&plan, &nodes, &done, started, show))
    });

    let worker_plan = Arc::clone(&plan);
    let worker_failure = failure.clone();
    let config = timely::Config::process(workers);
    let profiled = options
        .profile
        .then(|| Arc::new(profile::Profile::default()));
    let worker_profile = profiled.clone();
    let result = timely::execute(config, move |worker| {
        let failure = worker_failure.clone();
        if let Some(p) = &worker_profile {
            profile::install(worker, p);
        }
        worker.dataflow::<vitalflow_model::Time, _, _>(|scope| {
            builder::build(scope, &worker_plan, failure.clone())
        });
        while worker.step_or_park(Some(Duration::from_millis(1))) {
            if failure.failed() {
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
                break;
            }
        }
    });
    let joined = match result {
        Ok(guards) => guards.join(),
        Err(e) => vec![Err(e)],
    };
    done.store(true, Ordering::SeqCst);
    if let Some(handle) = progress {
        let _ = handle.join();
    }
    for r in joined {
        if let Err(e) = r {
            failure.fail(format!("a worker stopped: {e}"));
        }
    }
    let live_feed = match feeder {
        Some((_, handle)) => match handle.join() {
            Ok(Ok(fed)) => Some(fed),
            Ok(Err(e)) => {
                failure.fail(format!("the embedded broker's live feed: {e}"));
                None
            }
            Err(_) => {
                failure.fail("the embedded broker's live feed stopped".to_owned());
                None
            }
        },
        None => None,
    };
    if let Some(message) = failure.message() {
        return Err(RunError::Failed(message));
    }
    let nodes = job
        .nodes
        .iter()
        .map(|n| {
            let (records_in, records_out, rejected, files) = plan
                .counters
                .get(&n.name)
                .map(|c| c.snapshot())
                .unwrap_or_default();
            NodeSummary {
                name: n.name.clone(),
                kind: n.kind.name().to_owned(),
                records_in,
                records_out,
                rejected,
                files,
                dropped: plan
                    .counters
                    .get(&n.name)
                    .map_or(0, |c| c.dropped.load(Ordering::Relaxed)),
                dead_letters: plan
                    .counters
                    .get(&n.name)
                    .map_or(0, |c| c.dead_letters.load(Ordering::Relaxed)),
                late: plan
                    .counters
                    .get(&n.name)
                    .map_or(0, |c| c.late.load(Ordering::Relaxed)),
                bytes_in: plan
                    .counters
                    .get(&n.name)
                    .map_or(0, |c| c.bytes.load(Ordering::Relaxed)),
            }
        })
        .collect();
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
    drop(broker);
    record.finished = true;
    outdir::record(&out, &record).map_err(|e| {
        RunError::Failed(format!(
            "cannot write {}: {e}",
            out.join(outdir::RUN_FILE).display()
        ))
    })?;
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
    Ok(RunSummary {
        alerts,
        missing_context,
        live_feed,
        end_to_end: plan.end_to_end.as_ref().map(|e| Box::new(e.histogram())),
        operators: profiled.map(|p| p.operators()).unwrap_or_default(),
        job: job.name.clone(),
        run_id,
        workers,
        out,
        elapsed: started.elapsed(),
        nodes,
        watermarks,
        removed_files: plan.checkpoint.as_ref().map_or(0, |c| c.removed),
        resumed_at: plan
            .checkpoint
            .as_ref()
            .filter(|c| c.base.time > 0)
            .map(checkpoint_time),
    })
}

/// Whether a Kafka node's `brokers` names the embedded broker.
fn is_embedded(brokers: &str) -> bool {
    brokers.trim().is_empty() || brokers.trim() == vitalflow_connectors::kafka::EMBEDDED
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

/// A live feed into the embedded broker: set while it produces; what it produced, and how long
/// it took.
type Feeder = (
    Arc<AtomicBool>,
    std::thread::JoinHandle<Result<(u64, Duration), vitalflow_connectors::kafka::KafkaError>>,
);

/// Starts the embedded broker if a Kafka node uses it: creates the job's topics and fills them
/// from the `[embedded]` generator. Its records live only as long as the run, so a job on it
/// never resumes from an earlier checkpoint (the second value).
fn embedded_broker(
    job: &Job,
    options: &RunOptions,
) -> Result<
    (
        Option<vitalflow_connectors::kafka::EmbeddedBroker>,
        bool,
        Option<Feeder>,
    ),
    RunError,
> {
    use crate::job::NodeKind;
    use vitalflow_connectors::kafka::embedded::{FeedTopics, feed_generator};
    let topics: Vec<(String, i32)> = job
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Kafka(k) if is_embedded(k.brokers.get_ref()) => {
                Some((k.topic.get_ref().clone(), k.partitions))
            }
            NodeKind::KafkaSink(k) if is_embedded(k.brokers.get_ref()) => {
                Some((k.topic.get_ref().clone(), k.partitions))
            }
            _ => None,
        })
        .collect();
    if topics.is_empty() {
        return Ok((None, false, None));
    }
    let failed = |e: vitalflow_connectors::kafka::KafkaError| RunError::Failed(e.to_string());
    let broker = vitalflow_connectors::kafka::EmbeddedBroker::start().map_err(failed)?;
    let mut created = std::collections::BTreeSet::new();
    for (topic, partitions) in &topics {
        if created.insert(topic.clone()) {
            broker.create_topic(topic, *partitions).map_err(failed)?;
        }
    }
    let notify = |m: &str| {
        if let Some(n) = &options.notify {
            n(m);
        }
    };
    notify(&format!(
        "embedded Kafka broker at {} (topics: {})",
        broker.bootstrap(),
        created.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    let mut feeder = None;
    if let Some(e) = job.embedded.as_ref().filter(|e| e.feed.get_ref() == "flat") {
        use vitalflow_connectors::kafka::embedded::{FlatTopics, feed_context, feed_flat};
        let live = e.rate > 0;
        let span_ms = i64::try_from(
            e.count
                .div_ceil(e.patients.max(1))
                .saturating_mul(u64::from(e.interval_secs))
                .saturating_mul(1000),
        )
        .unwrap_or(0);
        let generator = vitalflow_connectors::generator::Generator::new(
            vitalflow_connectors::generator::GeneratorConfig {
                seed: e.seed,
                patients: e.patients,
                count: e.count,
                interval_secs: e.interval_secs,
                // A live feed: the context's history ends now.
                start: if live {
                    Utc::now() - chrono::Duration::milliseconds(span_ms)
                } else {
                    vitalflow_connectors::generator::GeneratorConfig::default().start
                },
                ..Default::default()
            },
        );
        let topics = FlatTopics {
            vitals: e.vitals_topic.clone(),
            context: e.context_topic.clone(),
        };
        for topic in [&topics.vitals, &topics.context] {
            if created.insert(topic.clone()) {
                broker.create_topic(topic, 4).map_err(failed)?;
            }
        }
        let n = feed_context(
            &broker.bootstrap(),
            &generator,
            &topics,
            Duration::from_secs(60),
        )
        .map_err(failed)?;
        notify(&format!(
            "embedded broker: {n} patient-context records in `{}`",
            topics.context
        ));
        if live {
            let flag = Arc::new(AtomicBool::new(true));
            let (bootstrap, rate) = (broker.bootstrap(), e.rate);
            let delay = crate::job::parse_duration(e.start_after.get_ref()).unwrap_or_default();
            let running = Arc::clone(&flag);
            let handle = std::thread::spawn(move || {
                std::thread::sleep(delay);
                let started = Instant::now();
                let r = feed_flat(
                    &bootstrap,
                    &generator,
                    &topics,
                    rate,
                    Duration::from_secs(60),
                );
                running.store(false, Ordering::SeqCst);
                r.map(|n| (n, started.elapsed()))
            });
            notify(&format!(
                "embedded broker: a live feed of {} readings at {} a second into `{}` starts in {:?}",
                e.count, e.rate, e.vitals_topic, delay
            ));
            feeder = Some((flag, handle));
        } else {
            let started = Instant::now();
            let n = feed_flat(
                &broker.bootstrap(),
                &generator,
                &topics,
                0,
                Duration::from_secs(300),
            )
            .map_err(failed)?;
            notify(&format!(
                "embedded broker filled with {n} readings in {:.2} s",
                started.elapsed().as_secs_f64()
            ));
        }
        return Ok((Some(broker), true, feeder));
    }
    if let Some(e) = &job.embedded {
        let generator = vitalflow_connectors::generator::Generator::new(
            vitalflow_connectors::generator::GeneratorConfig {
                seed: e.seed,
                patients: e.patients,
                count: e.count,
                interval_secs: e.interval_secs,
                ..Default::default()
            },
        );
        for topic in [&e.patients_topic, &e.vitals_topic] {
            if created.insert(topic.clone()) {
                broker.create_topic(topic, 4).map_err(failed)?;
            }
        }
        let feed = FeedTopics {
            patients: e.patients_topic.clone(),
            vitals: e.vitals_topic.clone(),
        };
        let started = Instant::now();
        let n = feed_generator(
            &broker.bootstrap(),
            &generator,
            &feed,
            Duration::from_secs(300),
            |_| {},
        )
        .map_err(failed)?;
        notify(&format!(
            "embedded broker filled with {n} generated events in {:.2} s",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok((Some(broker), true, None))
}

fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// How progress is shown on standard error.
#[derive(Debug, Clone, Copy)]
enum Progress {
    /// A terminal: one line, redrawn four times a second.
    Live,
    /// Not a terminal (a log file, a pipe): a plain line at this interval.
    Lines(Duration),
}

/// One progress report: per source the records read, per other node in → out and rejections,
/// and the sources' rate so far. `plain` spells it without symbols, for logs.
fn progress_line(
    plan: &plan::Plan,
    nodes: &[(String, bool)],
    started: Instant,
    plain: bool,
) -> String {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let mut parts = Vec::new();
    let mut read = 0;
    for (name, is_source) in nodes {
        if let Some(c) = plan.counters.get(name) {
            let (i, o, r, _) = c.snapshot();
            let mut part = if *is_source {
                read += o;
                format!("{name} {}", human(o as f64))
            } else if plain {
                format!("{name} {} -> {}", human(i as f64), human(o as f64))
            } else {
                format!("{name} {}→{}", human(i as f64), human(o as f64))
            };
            if r > 0 {
                if plain {
                    part.push_str(&format!(" ({} rejected)", human(r as f64)));
                } else {
                    part.push_str(&format!(" ✗{}", human(r as f64)));
                }
            }
            parts.push(part);
        }
    }
    let rate = human(read as f64 / secs);
    if plain {
        format!(
            "progress {secs:.1}s: {} | {rate} records/s",
            parts.join(" | ")
        )
    } else {
        format!("{secs:6.1}s | {} | {rate}/s", parts.join(" | "))
    }
}

fn show_progress(
    plan: &plan::Plan,
    nodes: &[(String, bool)],
    done: &AtomicBool,
    started: Instant,
    show: Progress,
) {
    let step = Duration::from_millis(250);
    let mut last = Instant::now();
    while !done.load(Ordering::SeqCst) {
        match show {
            Progress::Live => {
                std::thread::sleep(step);
                let line = progress_line(plan, nodes, started, false);
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            Progress::Lines(interval) => {
                let due = interval.saturating_sub(last.elapsed());
                std::thread::sleep(due.min(step));
                if last.elapsed() >= interval && !done.load(Ordering::SeqCst) {
                    last = Instant::now();
                    eprintln!("{}", progress_line(plan, nodes, started, true));
                }
            }
        }
    }
    if matches!(show, Progress::Live) {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}
