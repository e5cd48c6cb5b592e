//! `vitalflow`: run, validate and draw clinical stream-processing jobs.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod cluster;
mod log;
mod progress;
mod serve;
mod stop;

/// mimalloc: the workers allocate and free many small records and buffers from several threads,
/// where it is faster than the system allocator and returns less memory to the system only to
/// fault it back in.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_engine::graph::{GraphFormat, render};
use vitalflow_engine::job::MaxRejected;
use vitalflow_engine::{Diagnostics, Fault, Job, RunError, RunOptions, RunSummary, run};

use crate::log::{Entry, Log, LogFormat};

/// vitalflow runs declarative clinical event pipelines (ingestion → anonymization → FHIR R4
/// canonization → auditing) on timely dataflow.
#[derive(Parser)]
#[command(name = "vitalflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job to completion and print a summary.
    ///
    /// Exit codes: 0 success, 1 the job failed, 2 invalid job or usage.
    Run(RunArgs),
    /// Run the embedded Kafka-protocol broker on its own until stopped: prints its address,
    /// creates the topics given (and those named by `create NAME PARTITIONS` lines on standard
    /// input). Records live in memory; each partition keeps its newest 5 MiB.
    Broker {
        /// Topics to create, `NAME` or `NAME:PARTITIONS` (default 4 partitions).
        #[arg(short, long = "topic")]
        topics: Vec<String>,
    },
    /// Check job files; print every problem as `path:line:col: message`.
    ///
    /// Exit codes: 0 all valid, 2 at least one problem.
    Validate {
        /// Job files.
        #[arg(required = true)]
        jobs: Vec<PathBuf>,
    },
    /// Write synthetic input files (for trying jobs and measuring them).
    Generate {
        /// What to write.
        #[arg(value_enum)]
        what: Generated,
        /// Number of records.
        #[arg(short = 'n', long, default_value_t = 100_000)]
        count: u64,
        /// Number of patients.
        #[arg(short, long, default_value_t = 500)]
        patients: u64,
        /// Random seed: the same seed writes the same file.
        #[arg(short, long, default_value_t = 42)]
        seed: u64,
        /// Percentage of patients who deteriorate.
        #[arg(long, default_value_t = 10)]
        deteriorating_percent: u8,
        /// Output file [default: standard output].
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Measure throughput and latency against baselines run in the same process on the same
    /// events (see docs/benchmarks.md).
    ///
    /// Runs the pipeline (EHR feed through ingestion, anonymization, canonization and Parquet;
    /// monitor feed through a join, NEWS2 alerts and windows; everything audited) at each scale,
    /// then the baselines (a straight-line loop doing the same work in one thread, a raw rdkafka
    /// consume loop, a raw ArrowWriter), then a paced run for latency. Build with `--release`.
    Bench {
        /// Events of the 1× run, split evenly between the EHR and monitor feeds.
        #[arg(short = 'n', long, default_value_t = 1_000_000)]
        events: u64,
        /// Worker threads.
        #[arg(short, long, default_value_t = 2)]
        workers: usize,
        /// Multiples of `--events` to run the pipeline at (time per event should stay flat).
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        scales: Vec<u64>,
        /// Patients of both feeds and of the context table.
        #[arg(short, long, default_value_t = 10_000)]
        patients: u64,
        /// The paced run's rate, events per second over both feeds (0: no paced run).
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// The paced run's length in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Skip the Kafka baseline.
        #[arg(long)]
        no_kafka: bool,
        /// Measurements of each side of the engine, Kafka and Parquet baselines, alternately;
        /// each side's best counts (this machine's noise is far larger than the effects
        /// measured).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Paired rounds (one run without the HTTP endpoint, one with it) of the endpoint's
        /// cost; the median round counts.
        #[arg(long, default_value_t = 9)]
        endpoint_rounds: usize,
        /// Profile the paced run: print each operator's busy time and longest activations.
        #[arg(long)]
        profile: bool,
        /// Working folder, replaced on each run.
        #[arg(short, long, default_value = "out/bench")]
        out: PathBuf,
        /// Also write every figure as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the results as a Markdown table (the README's) to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// Work with audit trails.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print a job's graph (Mermaid by default: it renders on GitHub).
    Graph {
        /// The job file.
        job: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Verify an audit trail written as JSON lines: its hash chain (HMAC-SHA256 with the audit
    /// key when the records are keyed), every stage's events per batch, the causation links,
    /// and the size and SHA-256 of every output file the stages' closing events list. Prints
    /// `ok: ...`, or the first problem with its record number. Audit trails in Kafka are not
    /// verified: export the topic to a JSON-lines file first.
    ///
    /// Exit codes: 0 verified, 1 the trail does not verify, 2 it cannot be verified (usage, a
    /// log that cannot be read, keyed records without `--key`).
    Verify {
        /// The audit sink's folder (its `*.jsonl` files), or one JSON-lines file.
        path: PathBuf,
        /// The audit key: `env:NAME` (an environment variable) or `file:PATH` (a file).
        /// Required for keyed (`hmac-sha256`) records.
        #[arg(long, value_name = "env:NAME|file:PATH")]
        key: Option<vitalflow_engine::audit_trail::AuditKeySource>,
        /// The job's output folder, where the listed files are [default: the parent of the
        /// audit folder].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

// `vitalflow run`'s arguments (its help is the `Run` command's).
#[derive(clap::Args)]
struct RunArgs {
    /// The job file (TOML).
    job: PathBuf,
    /// Worker threads [default: the job's `workers`, else 1].
    #[arg(short, long)]
    workers: Option<usize>,
    /// Output folder [default: the job's `out`, else out/<job name>]. A run refuses a
    /// folder holding another job's output or a finished run (a job reading Kafka resumes
    /// from its checkpoint there) unless `--overwrite` is given.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Replace what the output folder holds: the folders of the job's sinks are written
    /// anew.
    #[arg(long)]
    overwrite: bool,
    /// Fail the run (exit code 1, after the summary) when more records than this were
    /// rejected: a count (`100`) or a percentage of the records read (`5%`) [default: the
    /// job's `max-rejected`, else no limit].
    #[arg(long, value_name = "COUNT|PERCENT%")]
    max_rejected: Option<MaxRejected>,
    /// Don't show progress (the live line on a terminal, the periodic lines elsewhere).
    #[arg(long)]
    no_progress: bool,
    /// How standard error is written: `text` for people, or `json` for log shippers: one JSON
    /// object a line (`ts`, `level`, `msg` and the figures as fields; the exit code on the last
    /// line), no live line (see docs/operations.md). Standard output is the same either way.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// When standard error is not a terminal (or with `--log-format json`), print a progress
    /// line this often (`10s`, `500ms`, `1m`; `0s` for none).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    progress_interval: std::time::Duration,
    /// Jobs with Kafka sources: ignore the checkpoint of an earlier run and start over.
    #[arg(long)]
    fresh: bool,
    /// Time every operator's activations and print, per operator, its busy time, its
    /// longest activation and how many held a worker 10 ms or more.
    #[arg(long)]
    profile: bool,
    /// After SIGINT or SIGTERM (a graceful stop: the sources read no more, what they read is
    /// written, the summary printed, exit code 0), exit at once with 130 or 143 if the stop
    /// takes longer than this; a second signal exits at once too.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    stop_timeout: std::time::Duration,
    /// Serve metrics, health checks and a status page over HTTP at this address
    /// (`127.0.0.1:9898`) while the job runs (see docs/operations.md). Only a loopback address
    /// unless `--listen-any` is given. The run then also times a sample of the source records
    /// from their arrival until every sink has made them durable.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Allow `--listen` on an address other than loopback. The endpoint has no authentication:
    /// put it on a network only its scrapers and probes reach.
    #[arg(long, requires = "listen")]
    listen_any: bool,
    /// With `--listen`: keep serving this long after the run ends (`30s`), so that the final
    /// counts can be scraped.
    #[arg(long, value_name = "DURATION", requires = "listen", value_parser = duration)]
    linger: Option<std::time::Duration>,
    /// Run as this process of a cluster (see docs/scaling-out.md): its index from 0, or a
    /// name ending in `-N` (a StatefulSet pod's name). Needs `--hosts`.
    #[arg(long, env = "VITALFLOW_PROCESS", value_name = "I", value_parser = cluster::process_index)]
    process: Option<usize>,
    /// The cluster's processes: a file with one `host:port` a line, process 0 first; each
    /// process listens on its own line's port.
    #[arg(long, env = "VITALFLOW_HOSTS", value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// The cluster's size, checked against `--hosts`.
    #[arg(long, env = "VITALFLOW_PROCESSES", value_name = "N")]
    processes: Option<usize>,
    /// How long a cluster process waits for the others to join.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    join_timeout: std::time::Duration,
    /// Run the job as N processes of a cluster on this machine (loopback ports), each with
    /// `--workers` threads; process 0 prints the summary.
    #[arg(long, value_name = "N", conflicts_with_all = ["process", "hosts", "processes"])]
    spawn: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Generated {
    /// Flat vital-sign JSON lines, as a bedside-monitor gateway sends them (see
    /// dataflows/vitals-flat.toml).
    VitalsFlat,
    /// The patients' ward, oxygen and NEWS2 SpO2 scale over time, a reference table for joins
    /// (see dataflows/ward-vitals.toml); `--count` sizes the span of readings it covers.
    PatientContext,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

/// Runs the harness and writes its figures where asked.
fn run_bench(
    settings: &bench::Settings,
    json: Option<&Path>,
    markdown: Option<&Path>,
) -> anyhow::Result<()> {
    let report = bench::bench(settings)?;
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = markdown {
        std::fs::write(path, report.markdown())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// How long mimalloc keeps memory it no longer uses before returning it to the system (ms).
/// Its default, 1 s, is shorter than the cycle of a sink's buffered rows (a few seconds to fill
/// `roll-rows`, then all freed after the write), so that memory went back to the system after
/// every write and was faulted in and zeroed again for the next rows. In the harness's job at
/// 8× (8,000,000 events), runs one after the other on the 2-core machine: with the default,
/// 336,641 and 346,370 events/s, 4.41 and 4.81 s of kernel time; with 10 s, 359,794 and
/// 368,566 events/s, 2.26 and 2.38 s; peak RSS 1.8-2.2 GB either way. At 16×: 314,180 and
/// 316,480 against 344,659 and 350,947 events/s, peak RSS 2,266 and 2,411 against 3,325 and
/// 2,382 MiB (memory held longer can raise the peak). At 1× (one write per worker) nothing
/// changes.
const ALLOCATOR_PURGE_DELAY_MS: &str = "10000";

/// mimalloc reads its options from the environment when the process starts, and the workspace
/// has no unsafe code to set them later, so `vitalflow` first starts itself again with
/// `MIMALLOC_PURGE_DELAY` set (see [`ALLOCATOR_PURGE_DELAY_MS`]), unless it is set already: a
/// user's own setting is kept. Where the process cannot be replaced it goes on as it is.
#[cfg(target_os = "linux")]
fn tune_allocator() {
    use std::os::unix::process::CommandExt as _;
    const VAR: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let Some(argv0) = args.next() else { return };
    // `exec` returns only when it failed.
    let _failed = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(VAR, ALLOCATOR_PURGE_DELAY_MS)
        .exec();
}

#[cfg(not(target_os = "linux"))]
const fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let format = match &cli.command {
        Command::Run(args) => args.log_format,
        _ => LogFormat::Text,
    };
    log::start_tracing(format, std::io::stderr().is_terminal());
    if format == LogFormat::Json {
        log::json_panics();
    }
    match cli.command {
        Command::Validate { jobs } => validate(&jobs),
        Command::Broker { topics } => match broker(&topics) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Generate {
            what,
            count,
            patients,
            seed,
            deteriorating_percent,
            out,
        } => {
            let config = GeneratorConfig {
                seed,
                patients: patients.max(1),
                count,
                deteriorating_percent,
                ..GeneratorConfig::default()
            };
            match generate(&Generator::new(config), what, out.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Bench {
            events,
            workers,
            scales,
            patients,
            rate,
            seconds,
            no_kafka,
            rounds,
            endpoint_rounds,
            profile,
            out,
            json,
            markdown,
        } => {
            let settings = bench::Settings {
                events,
                workers,
                scales,
                patients: patients.max(1),
                rate,
                seconds: seconds.max(1),
                no_kafka,
                rounds: rounds.max(1),
                endpoint_rounds: endpoint_rounds.max(1),
                profile,
                out,
            };
            match run_bench(&settings, json.as_deref(), markdown.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Audit {
            action: AuditAction::Verify { path, key, out },
        } => audit_verify(&path, key.as_ref(), out),
        Command::Graph { job, format } => match Job::load(&job) {
            Ok(job) => {
                let format = match format {
                    Format::Mermaid => GraphFormat::Mermaid,
                    Format::Dot => GraphFormat::Dot,
                };
                print!("{}", render(&job, format));
                ExitCode::SUCCESS
            }
            Err(d) => {
                eprintln!("{d}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => {
            let log = Log::new(args.log_format);
            let code = run_job(&args, log);
            log.exit(code);
            ExitCode::from(code)
        }
    }
}

/// `vitalflow audit verify`: prints `ok: ...` or the first problem on standard output; errors
/// that keep the trail from being verified on standard error (exit code 2).
fn audit_verify(
    path: &Path,
    key: Option<&vitalflow_engine::audit_trail::AuditKeySource>,
    out: Option<PathBuf>,
) -> ExitCode {
    use vitalflow_engine::audit_trail::{AuditKey, VerifyOptions, verify};
    let key = match key.map(|k| AuditKey::load(k, Path::new("."))).transpose() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: --key: {e}");
            return ExitCode::from(2);
        }
    };
    match verify(path, &VerifyOptions { key, out }) {
        Ok(verified) => {
            println!("{verified}");
            ExitCode::SUCCESS
        }
        Err(e) if e.exit_code() == 1 => {
            println!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The command line, or the exit code of a usage error (or of `--help`), which clap has
/// printed; with `--log-format json`, a usage error is a JSON line and the exit code another.
fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let e = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    if e.use_stderr() && log::asked_for_json(&args) {
        let rendered = e.to_string();
        let message = rendered.lines().next().unwrap_or_default();
        Entry::error(message.trim_start_matches("error: "))
            .field("fault", Fault::Input.to_string())
            .emit();
        log::exit_entry(code).emit();
    } else {
        let _ = e.print();
    }
    Err(ExitCode::from(code))
}

/// `vitalflow run`: runs the job, prints its summary on standard output; progress, messages
/// and errors on standard error, as `log` writes them; returns the exit code. An error says
/// whose fault it was: `error (FAULT): MESSAGE` (see [`Fault`]'s wording).
fn run_job(args: &RunArgs, log: Log) -> u8 {
    if let Some(n) = args.spawn {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        return cluster::spawn(n, &cluster::without_spawn(&argv));
    }
    let job = match Job::load(&args.job) {
        Ok(job) => job,
        Err(d) => {
            report_diagnostics(&d, log);
            return 2;
        }
    };
    let cluster = match cluster::from_args(
        args.process,
        args.hosts.as_deref(),
        args.processes,
        args.join_timeout,
    ) {
        Ok(c) => c,
        Err(e) => {
            report_error(Fault::Input, None, &format!("{e:#}"), log);
            return 2;
        }
    };
    // The other processes of a cluster leave the summary and progress to process 0; each
    // serves its own endpoint, but those `--spawn` started after process 0 (they would all ask
    // for the same port).
    let follower = cluster.as_ref().is_some_and(|c| c.process > 0);
    let spawned_follower = follower && std::env::var_os(cluster::SPAWNED).is_some();
    let display = progress::Display::choose(
        args.no_progress || follower,
        std::io::stderr().is_terminal() && !log.json(),
        args.progress_interval,
    );
    let stop = stop::on_signals(args.stop_timeout, log)
        .inspect_err(|e| {
            let text = format!("{e:#}: a signal ends the run at once");
            log.say(format_args!("warning: {text}"), || Entry::warn(&text));
        })
        .ok();
    let stderr = progress::Stderr::new(display, log);
    let (observer, progress_interval): (std::sync::Arc<dyn vitalflow_engine::RunObserver>, _) =
        match args.listen.as_ref().filter(|_| !spawned_follower) {
            None => (std::sync::Arc::new(stderr), display.interval()),
            Some(addr) => match listen(&job, addr, args.listen_any, log) {
                Ok(status) => (
                    std::sync::Arc::new(serve::Observer::new(stderr, display.interval(), status)),
                    Some(serve::SNAPSHOT_INTERVAL),
                ),
                Err(e) => {
                    report_error(Fault::Input, None, &format!("{e:#}"), log);
                    return 2;
                }
            },
        };
    let options = RunOptions {
        stop,
        workers: args.workers,
        out: args.out.clone(),
        fresh: args.fresh,
        observer: Some(observer),
        // The endpoint serves how long records take to be durable in the sinks.
        end_to_end: args.listen.is_some() && !spawned_follower,
        end_to_end_every: serve::TIMED_EVERY,
        profile: args.profile,
        overwrite: args.overwrite,
        progress_interval,
        cluster,
    };
    let code = run_and_report(&job, args, &options, log);
    if let Some(linger) = args.linger {
        std::thread::sleep(linger);
    }
    code
}

/// Opens the HTTP endpoint of `--listen` for a run of `job`.
fn listen(
    job: &Job,
    addr: &str,
    any: bool,
    log: Log,
) -> anyhow::Result<std::sync::Arc<serve::Status>> {
    let listener = serve::bind(addr, any)?;
    let local = listener
        .local_addr()
        .with_context(|| format!("--listen {addr}"))?;
    let status = std::sync::Arc::new(serve::Status::new(job));
    serve::start(listener, std::sync::Arc::clone(&status))?;
    let text = format!("listening on http://{local} (metrics at /metrics, status page at /)");
    log.say(&text, || {
        Entry::info(&text).field("address", local.to_string())
    });
    Ok(status)
}

/// Runs the job with `options` and reports it: the summary (on standard output, and with JSON
/// logs as a line of its figures), or what went wrong.
fn run_and_report(job: &Job, args: &RunArgs, options: &RunOptions, log: Log) -> u8 {
    let summary = match run(job, options) {
        Ok(summary) => summary,
        Err(e) => return run_failed(job, e, log),
    };
    if let Some(c) = options.cluster.as_ref().filter(|c| c.process > 0) {
        let text = format!(
            "process {}: finished; its counts are in process 0's summary",
            c.process
        );
        log.say(&text, || Entry::info(&text).field("process", c.process));
        return 0;
    }
    let processes = options
        .cluster
        .as_ref()
        .map_or(1, vitalflow_engine::runtime::cluster::Cluster::processes);
    print_summary(&summary, job, processes);
    if args.profile {
        print!("{}", bench::operator_table(&summary.operators));
    }
    // The summary is out before a `--linger` wait, for whoever reads it through a pipe.
    let _ = std::io::stdout().flush();
    if log.json() {
        summary_entry(&summary).emit();
    }
    print_rejections(&summary, job, log);
    match too_many_rejected(&summary, args.max_rejected.or_else(|| job.max_rejected())) {
        Some(message) => {
            report_error(Fault::Input, None, &message, log);
            1
        }
        None => 0,
    }
}

/// Reports a run that did not complete: problems in the job file as `path:line:col: message`
/// (exit code 2), anything else as `error (FAULT): MESSAGE`, with exit code 2 when the run did
/// not start (the output folder) and 1 when the job failed; with JSON logs, as JSON lines.
fn run_failed(job: &Job, e: RunError, log: Log) -> u8 {
    let (fault, node) = (e.fault(), e.node().map(str::to_owned));
    match e {
        RunError::Invalid(d) => {
            report_diagnostics(&d, log);
            2
        }
        RunError::Refused(f) => {
            report_error(fault, node.as_deref(), &f.to_string(), log);
            2
        }
        e @ RunError::Failed(_) => {
            let e = anyhow::Error::new(e).context(format!("running job `{}`", job.name));
            report_error(fault, node.as_deref(), &format!("{e:#}"), log);
            1
        }
    }
}

/// An error of the run: `error (FAULT): MESSAGE`, or a JSON line with its `fault` and the
/// `node` that failed.
fn report_error(fault: Fault, node: Option<&str>, message: &str, log: Log) {
    log.say(format_args!("error ({fault}): {message}"), || {
        Entry::error(message)
            .field("fault", fault.to_string())
            .field_opt("node", node)
    });
}

/// Problems in the job file: `path:line:col: message`, or a JSON line each with its `file`,
/// `line`, `column` and, when the message names one, the job file's key (`field`).
fn report_diagnostics(d: &Diagnostics, log: Log) {
    if !log.json() {
        eprintln!("{d}");
        return;
    }
    for p in &d.0 {
        Entry::error(&p.message)
            .field("fault", Fault::Input.to_string())
            .field("file", p.path.display().to_string())
            .field("line", p.line)
            .field("column", p.col)
            .field_opt("field", p.key())
            .emit();
    }
}

/// The summary's figures as a JSON line: the job, run id and workers, the elapsed seconds, the
/// records the sources read and their rate, per node (in job order) the table's columns, and
/// whether the run was stopped; the watermarks, alert events and checkpoint resumed from when
/// there are any.
fn summary_entry(s: &RunSummary) -> Entry {
    let records = s.source_records();
    let secs = s.elapsed.as_secs_f64();
    let nodes: Vec<serde_json::Value> = s
        .nodes
        .iter()
        .map(|n| {
            let mut node = serde_json::json!({
                "name": n.name,
                "kind": n.kind,
                "in": n.records_in,
                "out": n.records_out,
                "rejected": n.rejected,
                "dropped": n.dropped,
                "files": n.files,
            });
            if !n.read_by_worker.is_empty() {
                node["read_by_worker"] = n.read_by_worker.values().copied().collect();
            }
            node
        })
        .collect();
    let watermarks: serde_json::Map<String, serde_json::Value> = s
        .watermarks
        .iter()
        .map(|(name, ms)| {
            let at = chrono::DateTime::from_timestamp_millis(*ms)
                .map_or_else(|| ms.to_string(), |t| t.to_rfc3339());
            (name.clone(), at.into())
        })
        .collect();
    let alerts: Vec<serde_json::Value> = s
        .alerts
        .iter()
        .map(|a| serde_json::json!({"node": a.node, "rule": a.rule, "events": a.events}))
        .collect();
    let stopped = if s.stopped {
        " (stopped on request)"
    } else {
        ""
    };
    Entry::info(format!(
        "job {} finished{stopped}: {records} source records in {secs:.2} s",
        s.job
    ))
    .field("job", s.job.as_str())
    .field("run_id", s.run_id.as_str())
    .field("workers", s.workers)
    .field("elapsed_s", progress::seconds(s.elapsed))
    .field("records_read", records)
    .field(
        "rate",
        progress::per_second(records as f64 / secs.max(1e-9)),
    )
    .field("nodes", nodes)
    .field("stopped", s.stopped)
    .field("out", s.out.display().to_string())
    .field_opt("watermarks", (!watermarks.is_empty()).then_some(watermarks))
    .field_opt("alerts", (!alerts.is_empty()).then_some(alerts))
    .field_opt("resumed_at", s.resumed_at.as_deref())
}

/// Writes the generator's flat readings as JSON lines to `out` (or standard output).
/// The embedded broker on its own: prints `bootstrap: HOST:PORT` and serves until killed.
fn broker(topics: &[String]) -> anyhow::Result<()> {
    let broker = vitalflow_connectors::kafka::EmbeddedBroker::start()?;
    for t in topics {
        let (name, partitions) = match t.split_once(':') {
            Some((n, p)) => (
                n,
                p.parse::<i32>()
                    .with_context(|| format!("`{t}`: partitions must be a number"))?,
            ),
            None => (t.as_str(), 4),
        };
        broker.create_topic(name, partitions)?;
    }
    println!("bootstrap: {}", broker.bootstrap());
    std::io::stdout().flush().context("writing the address")?;
    // Lines `create NAME PARTITIONS` on standard input add topics (the embedded broker has no
    // CreateTopics request); at the end of the input it serves on until killed.
    for line in std::io::stdin().lines() {
        let line = line.context("reading standard input")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["create", name, partitions] => match partitions.parse::<i32>() {
                Ok(p) => broker
                    .create_topic(name, p)
                    .map_or_else(|e| format!("error: {e}"), |()| format!("created {name}")),
                Err(_) => format!("error: `{partitions}` is not a number of partitions"),
            },
            [] => continue,
            _ => "error: expected `create NAME PARTITIONS`".to_owned(),
        };
        println!("{reply}");
        std::io::stdout().flush().context("writing a reply")?;
    }
    loop {
        std::thread::park();
    }
}

fn generate(generator: &Generator, what: Generated, out: Option<&Path>) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = match out {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    let name = out.map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    match what {
        Generated::VitalsFlat => {
            for i in 0..generator.count() {
                writeln!(w, "{}", generator.flat_line(i))
                    .with_context(|| format!("writing {name}"))?;
            }
        }
        Generated::PatientContext => {
            for line in generator.context_lines() {
                writeln!(w, "{line}").with_context(|| format!("writing {name}"))?;
            }
        }
    }
    w.flush().with_context(|| format!("writing {name}"))?;
    Ok(())
}

fn validate(jobs: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in jobs {
        match Job::load(path).with_context(|| format!("validating {}", path.display())) {
            Ok(job) => {
                let warnings = job.warnings();
                for w in &warnings {
                    eprintln!("{w}");
                }
                match warnings.len() {
                    0 => println!("{}: ok ({} nodes)", path.display(), job.nodes.len()),
                    n => println!(
                        "{}: ok ({} nodes, {n} warning(s))",
                        path.display(),
                        job.nodes.len()
                    ),
                }
            }
            Err(e) => {
                ok = false;
                if let Some(d) = e.downcast_ref::<vitalflow_engine::Diagnostics>() {
                    eprintln!("{d}");
                    eprintln!("{}: {} problem(s)", path.display(), d.0.len());
                } else {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// A latency for people: ms below a minute, else minutes, hours or days.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 60_000.0 {
        format!("{v:.0} ms")
    } else if v < 3_600_000.0 {
        format!("{:.1} min", v / 60_000.0)
    } else if v < 86_400_000.0 {
        format!("{:.1} h", v / 3_600_000.0)
    } else {
        format!("{:.1} d", v / 86_400_000.0)
    }
}

/// Parses a `--progress-interval`.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    vitalflow_engine::job::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration (expected e.g. `10s`, `500ms`, `1m`)"))
}

/// The records rejected over all nodes, and the share of the records read they are.
fn rejected_share(s: &RunSummary) -> (u64, u64, f64) {
    let rejected: u64 = s.nodes.iter().map(|n| n.rejected).sum();
    let read = s.source_records();
    let share = if read == 0 {
        0.0
    } else {
        rejected as f64 * 100.0 / read as f64
    };
    (rejected, read, share)
}

/// Why the run failed its `max-rejected`, if it did.
fn too_many_rejected(s: &RunSummary, max: Option<MaxRejected>) -> Option<String> {
    let max = max?;
    let (rejected, read, share) = rejected_share(s);
    max.exceeded(rejected, read).then(|| {
        format!("{rejected} record(s) rejected ({share:.1}% of {read} read), more than max-rejected {max}")
    })
}

/// The run's summary; `processes`: the processes of its cluster (1 alone), each running
/// `s.workers` workers.
fn print_summary(s: &RunSummary, job: &Job, processes: usize) {
    let secs = s.elapsed.as_secs_f64();
    let workers = if processes > 1 {
        format!("{processes} processes × {} worker(s)", s.workers)
    } else {
        format!("{} worker(s)", s.workers)
    };
    println!("job {} · run {} · {workers} · {secs:.2} s", s.job, s.run_id);
    println!(
        "{:<16} {:<12} {:>12} {:>12} {:>10} {:>10} {:>7}",
        "node", "kind", "in", "out", "rejected", "dropped", "files"
    );
    for n in &s.nodes {
        let files = if n.files > 0 {
            n.files.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:<16} {:<12} {:>12} {:>12} {:>10} {:>10} {:>7}",
            n.name, n.kind, n.records_in, n.records_out, n.rejected, n.dropped, files
        );
    }
    println!(
        "in = out + rejected + dropped, except where a note below says how a node's output is made"
    );
    for n in &s.nodes {
        let accepted = n.accepted();
        match n.kind.as_str() {
            "ingest" if n.records_out != accepted => println!(
                "ingest {}: in counts messages, out the clinical records made of them: {accepted} \
                 message(s) accepted made {} record(s) (a message can hold several)",
                n.name, n.records_out
            ),
            "window" => println!(
                "window {}: {} late record(s) beyond the allowed lateness (to `{}.late`); \
                 {accepted} row(s) went into windows, out counts the window rows emitted",
                n.name, n.late, n.name
            ),
            "alert" => println!(
                "alert {}: {accepted} reading(s) evaluated; out counts the alert events they \
                 raised",
                n.name
            ),
            _ => {}
        }
        if n.dead_letters != n.rejected {
            println!(
                "{} {}: {} record(s) rejected with {} dead letter(s) (a record with several bad \
                 parts has one for each)",
                n.kind, n.name, n.rejected, n.dead_letters
            );
        }
    }
    if s.workers * processes > 1 {
        for n in s.nodes.iter().filter(|n| !n.read_by_worker.is_empty()) {
            let each: Vec<String> = n
                .read_by_worker
                .iter()
                .map(|(w, records)| format!("w{w} {records}"))
                .collect();
            println!(
                "{} {}: records read by each worker: {}",
                n.kind,
                n.name,
                each.join(", ")
            );
        }
    }
    for n in s.nodes.iter().filter(|n| n.kind == "kafka" && n.late > 0) {
        let lateness = job.node(&n.name).and_then(|node| match &node.kind {
            vitalflow_engine::job::NodeKind::Kafka(k) => Some(k.out_of_orderness.to_string()),
            _ => None,
        });
        println!(
            "source {}: {} late record(s): read when the watermark (the latest event time seen on \
             the worker's partitions, minus `out-of-orderness` = {}) had passed their event \
             time; they were stamped with the watermark and still processed. Records that \
             arrive out of order by more than `out-of-orderness` are late",
            n.name,
            n.late,
            lateness.as_deref().unwrap_or("?")
        );
    }
    for a in &s.alerts {
        let events: Vec<String> = a
            .events
            .iter()
            .map(|(t, n)| format!("{n} {}", t.rsplit('.').next().unwrap_or(t)))
            .collect();
        println!("alert {} · {}: {}", a.node, a.rule, events.join(", "));
        for (what, p) in [
            ("arrival → alert", &a.arrival),
            ("event time → alert", &a.event),
        ] {
            if let Some(p) = p {
                println!(
                    "    {what:<19} p50 {} · p99 {} · p99.9 {} · max {} ({} alerts)",
                    ms(p.p50),
                    ms(p.p99),
                    ms(p.p999),
                    ms(p.max),
                    p.count
                );
            }
        }
    }
    for (node, missing) in &s.missing_context {
        let counts: Vec<String> = missing
            .iter()
            .map(|(what, n)| format!("{what} in {n} reading(s)"))
            .collect();
        println!("alert {node} · missing context: {}", counts.join(", "));
    }
    let records = s.source_records();
    println!(
        "{} source records in {:.2} s: {:.0} records/s",
        records,
        secs,
        records as f64 / secs.max(1e-9)
    );
    for (name, ms) in &s.watermarks {
        let at = chrono::DateTime::from_timestamp_millis(*ms)
            .map_or_else(|| ms.to_string(), |t| t.to_rfc3339());
        println!("watermark {name}: {at}");
    }
    if let Some(t) = &s.resumed_at {
        println!(
            "resumed from the checkpoint at {t}; {} uncommitted file(s) removed",
            s.removed_files
        );
    }
    if s.stopped {
        println!(
            "stopped on request: the sources read no more after the signal; all they had read \
             was written (a Kafka or MLLP job resumes after it)"
        );
    }
    println!("output: {}", s.out.display());
}

/// A loud line on standard error when records were rejected: how many, by which nodes, and
/// which of them were discarded for want of a dead-letter sink.
fn print_rejections(s: &RunSummary, job: &Job, log: Log) {
    let (rejected, read, share) = rejected_share(s);
    if rejected == 0 {
        return;
    }
    let by: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| n.rejected > 0)
        .map(|n| format!("{} {}", n.name, n.rejected))
        .collect();
    let text = format!(
        "{rejected} record(s) rejected ({share:.1}% of {read} read): {}",
        by.join(", ")
    );
    log.say(format_args!("warning: {text}"), || {
        let by: serde_json::Map<String, serde_json::Value> = s
            .nodes
            .iter()
            .filter(|n| n.rejected > 0)
            .map(|n| (n.name.clone(), n.rejected.into()))
            .collect();
        Entry::warn(&text)
            .field("rejected", rejected)
            .field("records_read", read)
            .field("percent", (share * 10.0).round() / 10.0)
            .field("by_node", by)
    });
    let unread: Vec<&str> = job
        .unread_dead_letters()
        .into_iter()
        .map(|n| n.name.as_str())
        .collect();
    let discarded: u64 = s
        .nodes
        .iter()
        .filter(|n| unread.contains(&n.name.as_str()))
        .map(|n| n.rejected)
        .sum();
    if discarded > 0 {
        let text = format!(
            "{discarded} rejected record(s) were discarded: no dead-letter sink reads them (add \
             `NODE.dead-letter` to a `dead-letter` sink's inputs)"
        );
        log.say(format_args!("warning: {text}"), || {
            let by: serde_json::Map<String, serde_json::Value> = s
                .nodes
                .iter()
                .filter(|n| n.rejected > 0 && unread.contains(&n.name.as_str()))
                .map(|n| (n.name.clone(), n.rejected.into()))
                .collect();
            Entry::warn(&text)
                .field("discarded", discarded)
                .field("by_node", by)
        });
    }
}
