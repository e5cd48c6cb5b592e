//! `vitalflow bench`: the throughput and latency harness.
//!
//! It runs one job (written to `<out>/bench.toml`, so what ran can be read and rerun): the EHR
//! feed (patient and vital-sign envelopes) through ingestion → anonymization → FHIR R4
//! canonization → Parquet, with every stage's domain events audited into a hash-chained log; and
//! the bedside-monitor feed (flat readings of a declared schema) joined as of each reading's time
//! to a patient-context table, through NEWS2 and critical-value alerts (JSON lines) and
//! per-patient 5-minute windows (de-identified, to Parquet). The `N` events are split evenly
//! between the two feeds.
//!
//! In the same run it measures baselines on the same events, and prints the engine's ratio to
//! each: the same work (every sink's content, checked) as a straight-line loop in one thread; as
//! many raw rdkafka consume loops, each on a thread, as the engine's Kafka source has workers;
//! a raw arrow-rs `ArrowWriter` against the Parquet sink's writer. It reports how cost grows with the event count, and latency at a sustained rate.

mod baselines;
mod cluster;
mod endpoint;
mod report;
mod work;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_engine::baseline::straight_line;
use vitalflow_engine::runtime::plan::{Plan, prepare};
use vitalflow_engine::runtime::saga::RunIdentity;
use vitalflow_engine::{Job, RunObserver, RunOptions, RunSummary, run};

use report::{Latency, PipelineRun, Ratio, per_second};
pub use report::{Report, operator_table};
use work::SinkWork;

/// The harness's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Events of the 1× run (split evenly between the two feeds).
    pub events: u64,
    /// Worker threads.
    pub workers: usize,
    /// Event-count multiples to run the pipeline at.
    pub scales: Vec<u64>,
    /// Patients (both feeds, and the context table).
    pub patients: u64,
    /// The paced run's rate, events per second over both feeds (0: no paced run).
    pub rate: u64,
    /// The paced run's length.
    pub seconds: u64,
    /// Skip the Kafka baseline.
    pub no_kafka: bool,
    /// Measurements of each side of the Kafka and Parquet baselines, at least 1 (the best
    /// counts).
    pub rounds: usize,
    /// Paired rounds of the HTTP endpoint's cost, at least 1 (the median round counts).
    pub endpoint_rounds: usize,
    /// Profile the paced run's operators.
    pub profile: bool,
    /// Working folder (replaced).
    pub out: PathBuf,
}

/// The harness job: `ehr` and `monitors` generators of `each` events each (`rate_each` per
/// second each, 0: unpaced), the patient context from `context`, sinks rolling every `roll`.
fn job_text(s: &Settings, out: &Path, each: u64, rate_each: u64, roll: &str) -> String {
    let context = out.join("context.jsonl");
    format!(
        r#"# Written by `vitalflow bench`: the job its pipeline runs measure.
[job]
name = "bench"
description = "EHR feed through the four stages; monitor feed through a join, NEWS2 alerts and windows"
workers = {workers}
batch-size = 10000
out = "{out}"

[sources.ehr]
kind = "generator"
seed = 42
patients = {patients}
count = {each}
rate = {rate_each}

[sources.monitors]
kind = "generator"
format = "flat"
seed = 7
patients = {patients}
count = {each}
rate = {rate_each}

[sources.context]
kind = "file"
path = "{context}"
format = "json"
event-time = "since"
key = "patient_id"
fields = [
  {{ name = "patient_id", type = "string", phi = "hash" }},
  {{ name = "since", type = "timestamp", format = "epoch-ms", phi = "date" }},
  {{ name = "ward", type = "string" }},
  {{ name = "on_oxygen", type = "boolean" }},
  {{ name = "spo2_scale", type = "integer" }},
]

[operators.ingest]
kind = "ingest"
inputs = ["ehr"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "file:bench.key"
dates = "shift"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[operators.audit]
kind = "audit"
inputs = ["ingest.events", "anonymize.events", "canonize.events", "monitors.events", "deidentify.events"]

[operators.context-at-reading]
kind = "join"
inputs = ["monitors"]
table = "context"
type = "left"
fields = ["ward", "on_oxygen", "spo2_scale"]
prefix = "adt_"
history = "forever"

[operators.alerts]
kind = "alert"
inputs = ["context-at-reading"]
ward = "coalesce(adt_ward, ward)"
freshness = "15m"
resolve-after = "10m"
suppress-for = "30m"
key = "file:bench.key"

[operators.alerts.news2]
respiration-rate = "rr"
spo2 = "spo2"
oxygen = "coalesce(adt_on_oxygen, false)"
scale2 = "adt_spo2_scale = 2"
systolic = "sbp"
pulse = "hr"
temperature = "temp"
raise-at = "medium"

[operators.alerts.rules.desaturation]
when = "spo2 < 90"
level = "high"

[operators.alerts.rules.tachycardia]
when = "hr > 130"
level = "medium"

[operators.per-patient]
kind = "window"
inputs = ["context-at-reading"]
window = "tumbling"
key = "patient_id"
size = "5m"
watermark-delay = "0s"

[operators.per-patient.aggregates]
readings = "count()"
hr_mean = "mean(hr)"
spo2_min = "min(spo2)"
sbp_max = "max(sbp)"
on_oxygen = "last(adt_on_oxygen)"

[operators.deidentify]
kind = "anonymize"
inputs = ["per-patient"]
key = "file:bench.key"
dates = "shift"

[sinks.fhir]
kind = "parquet"
inputs = ["canonize"]
path = "canonical"
roll-interval = "{roll}"

[sinks.vitals-5m]
kind = "parquet"
inputs = ["deidentify"]
path = "vitals-5m"
roll-interval = "{roll}"

[sinks.alert-events]
kind = "jsonl"
inputs = ["alerts"]
path = "alerts"
roll-interval = "{roll}"

[sinks.audit-log]
kind = "jsonl"
inputs = ["audit"]
path = "audit"
roll-interval = "{roll}"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["ingest.dead-letter", "anonymize.dead-letter", "canonize.dead-letter", "monitors.dead-letter", "context.dead-letter", "context-at-reading.dead-letter", "alerts.dead-letter", "per-patient.dead-letter", "deidentify.dead-letter"]
"#,
        workers = s.workers,
        out = out.join("run").display(),
        patients = s.patients,
        context = context.display(),
    )
}

fn parse_job(path: &Path, text: String) -> anyhow::Result<Job> {
    std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    Job::parse(path, text, &|_| None).map_err(|d| anyhow::anyhow!("{d}"))
}

/// Replaces the working folder with one holding what the harness job reads: the patient
/// context table and the pseudonym key. Returns its absolute path.
fn working_folder(s: &Settings) -> anyhow::Result<PathBuf> {
    let _ = std::fs::remove_dir_all(&s.out);
    std::fs::create_dir_all(&s.out)
        .with_context(|| format!("cannot create {}", s.out.display()))?;
    let out = std::fs::canonicalize(&s.out)?;
    let context = Generator::new(GeneratorConfig {
        patients: s.patients,
        count: s.patients * 10,
        ..GeneratorConfig::default()
    })
    .context_lines();
    std::fs::write(out.join("context.jsonl"), context.join("\n") + "\n")?;
    write_key(&out.join("bench.key"))?;
    Ok(out)
}

/// Runs the harness, printing as it goes; returns the report.
///
/// # Errors
/// If a run fails or the working folder cannot be written.
pub fn bench(s: &Settings) -> anyhow::Result<Report> {
    if s.events < 2 || s.workers == 0 || s.scales.is_empty() {
        bail!("bench: --events must be at least 2, --workers at least 1, --scales not empty");
    }
    let out = working_folder(s)?;
    let mut report = Report::new(s);
    println!("{}", report.heading());

    // The pipeline at every scale.
    let job_path = out.join("bench.toml");
    // The engine's 1× run that the straight-line loop must match: its run id and what its sinks
    // hold.
    let mut engine_1x: Option<(String, Vec<SinkWork>)> = None;
    // A warm-up run at 1×, not reported: the first run of a process pays for growing the
    // allocator's memory and for cold caches, which no later run (nor the loop) does.
    let warm_up = parse_job(&job_path, job_text(s, &out, s.events / 2, 0, "1m"))?;
    run_job(&warm_up, s, Watch::plain())?;
    println!("(warm-up run at 1× done)");
    for &scale in &s.scales {
        let each = s.events * scale / 2;
        let job = parse_job(&job_path, job_text(s, &out, each, 0, "1m"))?;
        baselines::reset_peak_rss();
        let summary = run_job(&job, s, Watch::plain())?;
        let run = PipelineRun::of(scale, &summary, baselines::peak_rss());
        println!("{}", run.line());
        if scale == 1 && engine_1x.is_none() {
            engine_1x = Some(engine_work(&job, &out, &summary)?);
        }
        report.pipeline.push(run);
    }

    // The same per-record work, one thread, no dataflow: `rounds` times, alternately with the
    // pipeline at 1× again (its first round is the 1× run above); each side's best counts, as
    // in the other baselines.
    let each = s.events / 2;
    let job = parse_job(&job_path, job_text(s, &out, each, 0, "1m"))?;
    let straight_out = out.join("straight");
    let mut best = baselines::Best::new("engine", ["pipeline at 1×", "straight-line loop"]);
    let mut reported_1x = report
        .pipeline
        .first()
        .filter(|r| r.scale == 1)
        .map(|r| (r.events, r.elapsed));
    let mut events_1x = 0;
    let mut line = None;
    for round in 0..s.rounds {
        let (events, pipeline_elapsed) = match reported_1x.take() {
            Some(run) => run,
            None => {
                baselines::settle_disk(&out)?;
                let again = parse_job(&job_path, job_text(s, &out, each, 0, "1m"))?;
                let summary = run_job(&again, s, Watch::plain())?;
                if engine_1x.is_none() {
                    engine_1x = Some(engine_work(&again, &out, &summary)?);
                }
                let run = PipelineRun::of(1, &summary, 0);
                (run.events, run.elapsed)
            }
        };
        let Some((run_id, engine_sinks)) = &engine_1x else {
            bail!("no 1× run of the pipeline to check the straight-line loop against")
        };
        events_1x = events;
        baselines::settle_disk(&out)?;
        let _ = std::fs::remove_dir_all(&straight_out);
        let plan = loop_plan(&job, &straight_out, run_id)?;
        baselines::reset_peak_rss();
        let this =
            straight_line(&plan).map_err(|e| anyhow::anyhow!("straight-line baseline: {e}"))?;
        let loop_rss = baselines::peak_rss();
        // The loop must have done the engine's work: the same rows in every sink of the job.
        let loop_sinks = work::digest_sinks(&plan, &straight_out)?;
        work::same_work(engine_sinks, &loop_sinks)?;
        println!(
            "straight-line loop: {} events in {:.2} s: {} events/s in one thread (peak RSS {}); \
             the same rows as the engine's 1× run in every sink",
            report::thousands(this.source_records),
            this.elapsed.as_secs_f64(),
            report::thousands(per_second(this.source_records, this.elapsed) as u64),
            report::mib(loop_rss),
        );
        report.same_work.clone_from(engine_sinks);
        best.record(round, [pipeline_elapsed, this.elapsed]);
        line = Some(this);
    }
    let Some(line) = line else {
        bail!("no straight-line round ran")
    };
    report.engine = Some(
        Ratio::new(
            "engine per worker vs straight-line loop",
            per_second(events_1x, best.best[0]) / s.workers as f64,
            per_second(line.source_records, best.best[1]),
            0.7,
        )
        .best_of(s.rounds),
    );

    // What serving the HTTP endpoint costs, at 1×.
    report.endpoint = endpoint::endpoint(s, &job, &out)?;

    // Two processes of one worker against one process of two, on the same job.
    report.cluster = Some(cluster::cluster(s, &job_path, &out, events_1x)?);

    // The Parquet sink's writer against a raw ArrowWriter, on the rows the loop wrote.
    if let Some((rows, _)) = line.written.get("fhir") {
        report.parquet = Some(baselines::parquet(s, *rows, &out)?);
    }

    // Latency at a sustained rate.
    if s.rate > 0 {
        let each = s.rate * s.seconds / 2;
        let job = parse_job(
            &job_path,
            job_text(s, &out, each, (s.rate / 2).max(1), "5s"),
        )?;
        baselines::reset_peak_rss();
        let summary = run_job(&job, s, Watch::paced(s.profile))?;
        report.latency = Some(Latency::of(s.rate, &summary));
        if s.profile {
            print!("{}", operator_table(&summary.operators));
        }
    }
    // The Kafka source against raw consume loops over the same topic (last: the embedded
    // broker's client threads may outlive it for a while).
    if !s.no_kafka {
        report.kafka = Some(baselines::kafka(s, &out)?);
    }

    println!("{}", report.summary());
    Ok(report)
}

/// The straight-line loop's plan of `job`, writing under `out`, with the engine run's id (the
/// saga's event ids derive from it).
fn loop_plan(job: &Job, out: &Path, run_id: &str) -> anyhow::Result<Plan> {
    prepare(
        job,
        out,
        RunIdentity {
            job: job.name.clone(),
            run_id: run_id.to_owned(),
        },
        None,
        true,
        None,
        (std::sync::Arc::default(), true),
    )
    .map_err(|d| anyhow::anyhow!("{d}"))
}

/// What an engine run of `job` left in its sinks, and its run id.
fn engine_work(
    job: &Job,
    out: &Path,
    summary: &RunSummary,
) -> anyhow::Result<(String, Vec<SinkWork>)> {
    // A plan only to name the sinks' folders (preparing it empties them under the loop's
    // folder, which each round replaces anyway).
    let plan = loop_plan(job, &out.join("straight"), &summary.run_id)?;
    let sinks = work::digest_sinks(&plan, &summary.out)?;
    Ok((summary.run_id.clone(), sinks))
}

/// The job's pseudonym key (`file:bench.key`): random, as an ephemeral key is, but one for the
/// engine's runs and the loop, so that the same-work check compares their pseudonyms and
/// shifted dates as they are.
fn write_key(path: &Path) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the job's pseudonym key")?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    let mut file = file
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, vitalflow_model::ids::hex(&bytes).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// How a harness run is watched.
pub(crate) struct Watch {
    /// Measure end-to-end latency (the paced run).
    end_to_end: bool,
    /// With `end_to_end`: time one record in this many (0: every record).
    end_to_end_every: u64,
    /// Time the operators.
    profile: bool,
    /// Who gets the run's snapshots, and how often.
    observer: Option<(Arc<dyn RunObserver>, Duration)>,
}

impl Watch {
    /// Not watched: the throughput runs.
    pub(crate) const fn plain() -> Self {
        Self {
            end_to_end: false,
            end_to_end_every: 0,
            profile: false,
            observer: None,
        }
    }

    /// End-to-end latency measured, operators timed if `profile`.
    pub(crate) const fn paced(profile: bool) -> Self {
        Self {
            end_to_end: true,
            end_to_end_every: 0,
            profile,
            observer: None,
        }
    }

    /// As `run --listen` runs: snapshots handed to `observer` every `every`, one record in
    /// `timed` timed from arrival to durable.
    pub(crate) fn served(observer: Arc<dyn RunObserver>, every: Duration, timed: u64) -> Self {
        Self {
            end_to_end: true,
            end_to_end_every: timed,
            profile: false,
            observer: Some((observer, every)),
        }
    }
}

/// Runs `job` afresh with the harness's workers, watched as `watch` says.
pub(crate) fn run_job(job: &Job, s: &Settings, watch: Watch) -> anyhow::Result<RunSummary> {
    let (observer, progress_interval) = watch.observer.unzip();
    run(
        job,
        &RunOptions {
            workers: Some(s.workers),
            end_to_end: watch.end_to_end,
            end_to_end_every: watch.end_to_end_every,
            profile: watch.profile,
            observer,
            progress_interval,
            fresh: true,
            overwrite: true,
            ..RunOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A pause between runs, so one's writer threads and freed memory are gone before the next.
pub(crate) fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}
