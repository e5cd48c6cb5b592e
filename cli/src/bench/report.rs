//! The harness's figures: printed as they come, then as a summary, a Markdown table (for the
//! README) and JSON.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;
use vitalflow_engine::RunSummary;
use vitalflow_engine::runtime::alerts::{Percentiles, percentiles};
use vitalflow_engine::runtime::profile::{LONG_MS, OperatorTime};

use super::Settings;
use super::work::SinkWork;

/// `count` things in `elapsed`, per second (a zero time counts as a nanosecond).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One unpaced run of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    pub scale: u64,
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub peak_rss: u64,
    pub alerts: u64,
}

impl PipelineRun {
    /// The generators' records and bytes of a run.
    pub fn of(scale: u64, summary: &RunSummary, peak_rss: u64) -> Self {
        let generators = summary.nodes.iter().filter(|n| n.kind == "generator");
        let (events, bytes) =
            generators.fold((0, 0), |(e, b), n| (e + n.records_in, b + n.bytes_in));
        Self {
            scale,
            events,
            bytes,
            elapsed: summary.elapsed,
            peak_rss,
            alerts: summary.alerts.iter().flat_map(|a| a.events.values()).sum(),
        }
    }

    /// Events per second.
    pub fn per_second(&self) -> f64 {
        per_second(self.events, self.elapsed)
    }

    fn mb_per_second(&self) -> f64 {
        per_second(self.bytes, self.elapsed) / 1e6
    }

    fn us_per_event(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.events.max(1) as f64
    }

    /// The run as a printed line.
    pub fn line(&self) -> String {
        format!(
            "pipeline {:>3}×: {:>11} events in {:>7.2} s: {:>10} events/s, {:>6.1} MB/s, {:.2} µs/event, peak RSS {}, {} alert events",
            self.scale,
            thousands(self.events),
            self.elapsed.as_secs_f64(),
            thousands(self.per_second() as u64),
            self.mb_per_second(),
            self.us_per_event(),
            mib(self.peak_rss),
            thousands(self.alerts),
        )
    }
}

/// vitalflow against a baseline: throughputs and their ratio.
#[derive(Debug, Clone)]
pub struct Ratio {
    pub what: String,
    pub vitalflow: f64,
    pub baseline: f64,
    pub target: f64,
    /// How many measurements of each side the figures come from.
    pub rounds: usize,
    /// How the figures were chosen from the rounds.
    pub taken: Taken,
}

/// How a [`Ratio`]'s figures were chosen from its rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Each side's best measurement.
    Best,
    /// The two measurements of the round whose ratio is the median of the rounds' ratios (the
    /// lower of the middle two for an even count): rounds run side by side, so a load that comes
    /// and goes on the machine moves both sides of a round alike.
    MedianPair,
}

impl Ratio {
    pub fn new(what: impl Into<String>, vitalflow: f64, baseline: f64, target: f64) -> Self {
        Self {
            what: what.into(),
            vitalflow,
            baseline,
            target,
            rounds: 1,
            taken: Taken::Best,
        }
    }

    /// The figures are each side's best of `rounds` measurements.
    pub const fn best_of(mut self, rounds: usize) -> Self {
        self.rounds = rounds;
        self
    }

    /// The figures are those of the median round of `rounds` paired ones ([`Taken::MedianPair`]).
    pub const fn median_pair_of(mut self, rounds: usize) -> Self {
        self.rounds = rounds;
        self.taken = Taken::MedianPair;
        self
    }

    /// How the figures were taken, for the tables: empty for a single measurement.
    fn how(&self) -> String {
        match (self.rounds, self.taken) {
            (0 | 1, _) => String::new(),
            (n, Taken::Best) => format!(", best of {n}"),
            (n, Taken::MedianPair) => format!(", median of {n} paired rounds"),
        }
    }

    pub fn ratio(&self) -> f64 {
        self.vitalflow / self.baseline.max(1e-9)
    }

    fn met(&self) -> bool {
        self.ratio() >= self.target
    }
}

/// The Kafka baseline's figures.
#[derive(Debug, Clone)]
pub struct KafkaFigures {
    pub records: u64,
    pub bytes: u64,
    pub raw_elapsed: Duration,
    pub engine_elapsed: Duration,
    pub ratio: Ratio,
}

/// The Parquet baseline: each side's best time, and where the sink writer's went.
#[derive(Debug, Clone)]
pub struct ParquetFigures {
    pub rows: u64,
    pub sink_elapsed: Duration,
    /// Of the sink writer's best time: grouping the rows by file and building Arrow batches.
    pub convert: Duration,
    /// Of the sink writer's best time: encoding and writing with `ArrowWriter`.
    pub encode: Duration,
    /// Copying the rows' FHIR JSON alone, in the order the sink reads them (best round).
    pub json_copy: Duration,
    /// The bytes of FHIR JSON that copy took.
    pub json_bytes: u64,
    pub raw_elapsed: Duration,
    pub ratio: Ratio,
}

impl ParquetFigures {
    /// Where the sink writer's best round went, against the raw writer's time.
    fn split(&self) -> String {
        format!(
            "the sink writer's best round took {:.3} s for {} rows, of which {:.3} s grouping the \
             rows by file and building Arrow batches and {:.3} s encoding and writing them; the \
             raw ArrowWriter, given the batches, {:.3} s; a bare loop copying the rows' FHIR \
             JSON in the sink's order, {:.3} s",
            self.sink_elapsed.as_secs_f64(),
            thousands(self.rows),
            self.convert.as_secs_f64(),
            self.encode.as_secs_f64(),
            self.raw_elapsed.as_secs_f64(),
            self.json_copy.as_secs_f64()
        )
    }
}

fn cells(p: &Percentiles) -> String {
    format!("{:.2} | {:.2} | {:.2} | {:.2}", p.p50, p.p99, p.p999, p.max)
}

/// A histogram of microseconds as milliseconds (all zero when there is none, or it is empty).
fn of_us(h: Option<&Histogram<u64>>) -> Percentiles {
    h.and_then(|h| percentiles(h, 1000.0))
        .unwrap_or(Percentiles {
            count: 0,
            p50: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
        })
}

/// The paced run's latencies.
#[derive(Debug, Clone)]
pub struct Latency {
    pub rate: u64,
    /// Records of every source (the context table's too): each has an end-to-end latency.
    pub source_records: u64,
    pub achieved: f64,
    pub end_to_end: Percentiles,
    pub alert: Percentiles,
}

impl Latency {
    pub fn of(rate: u64, summary: &RunSummary) -> Self {
        let run = PipelineRun::of(1, summary, 0);
        let end_to_end = of_us(summary.end_to_end.as_deref());
        let mut alerts: Option<Histogram<u64>> = None;
        for a in &summary.alerts {
            match &mut alerts {
                Some(h) => {
                    let _ = h.add(&a.histograms.arrival);
                }
                None => alerts = Some(a.histograms.arrival.clone()),
            }
        }
        Self {
            rate,
            source_records: summary.source_records(),
            achieved: run.per_second(),
            end_to_end,
            alert: of_us(alerts.as_ref()),
        }
    }
}

/// Everything one harness run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub settings: Settings,
    pub command: String,
    pub machine: String,
    pub pipeline: Vec<PipelineRun>,
    pub engine: Option<Ratio>,
    pub parquet: Option<ParquetFigures>,
    pub kafka: Option<KafkaFigures>,
    pub latency: Option<Latency>,
    /// Throughput with the HTTP endpoint served and scraped against without it: per second of
    /// wall-clock time, then per second of the process's CPU time.
    pub endpoint: Vec<Ratio>,
    /// Two processes of one worker against one process of two workers.
    pub cluster: Option<Ratio>,
    /// What every sink held, the same after the engine's 1× run and the straight-line loop.
    pub same_work: Vec<SinkWork>,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| {
            format!(", {:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .map_or_else(String::new, |m| format!(", {m}"));
    format!("{cores} cores{memory}{cpu}")
}

impl Report {
    pub fn new(settings: &Settings) -> Self {
        Self {
            settings: settings.clone(),
            command: std::env::args()
                .skip(1)
                .fold("vitalflow".to_owned(), |s, a| s + " " + &a),
            machine: machine(),
            pipeline: Vec::new(),
            engine: None,
            parquet: None,
            kafka: None,
            latency: None,
            endpoint: Vec::new(),
            cluster: None,
            same_work: Vec::new(),
        }
    }

    pub fn heading(&self) -> String {
        format!(
            "vitalflow bench: {} events at 1× (half EHR events, half monitor readings), {} patients, {} workers; machine: {}",
            thousands(self.settings.events),
            thousands(self.settings.patients),
            self.settings.workers,
            self.machine
        )
    }

    fn growth(&self) -> Option<(u64, f64)> {
        let first = self.pipeline.first()?;
        let last = self.pipeline.last()?;
        Some((
            last.scale,
            last.us_per_event() / first.us_per_event().max(1e-12),
        ))
    }

    fn ratios(&self) -> Vec<&Ratio> {
        [
            self.engine.as_ref(),
            self.kafka.as_ref().map(|k| &k.ratio),
            self.parquet.as_ref().map(|p| &p.ratio),
        ]
        .into_iter()
        .flatten()
        .chain(&self.endpoint)
        .chain(self.cluster.as_ref())
        .collect()
    }

    /// The closing summary, with each target.
    pub fn summary(&self) -> String {
        let mut s = String::from("\nsummary\n");
        if let Some(first) = self.pipeline.first() {
            let rate = first.per_second();
            let _ = writeln!(
                s,
                "  pipeline: {} events/s with {} workers (target 1,000,000: {})",
                thousands(rate as u64),
                self.settings.workers,
                met(rate >= 1_000_000.0)
            );
        }
        if let Some((scale, growth)) = self.growth() {
            let _ = writeln!(
                s,
                "  time per event at {scale}× the events: {growth:.2}× the 1× run's"
            );
        }
        if !self.same_work.is_empty() {
            let _ = writeln!(s, "  {}", self.same_work_line());
        }
        for r in self.ratios() {
            let _ = writeln!(
                s,
                "  {}{}: {} vs {} = {:.2}× (target ≥ {}×: {})",
                r.what,
                r.how(),
                thousands(r.vitalflow as u64),
                thousands(r.baseline as u64),
                r.ratio(),
                r.target,
                met(r.met())
            );
        }
        if let Some(k) = &self.kafka {
            let _ = writeln!(
                s,
                "    ({} records, {:.1} MB: raw consumers {:.2} s, Kafka source {:.2} s)",
                thousands(k.records),
                k.bytes as f64 / 1e6,
                k.raw_elapsed.as_secs_f64(),
                k.engine_elapsed.as_secs_f64()
            );
        }
        if let Some(p) = &self.parquet {
            let _ = writeln!(s, "    (Parquet: {})", p.split());
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "  paced at {} events/s (achieved {}), ms p50 / p99 / p99.9 / max:",
                thousands(l.rate),
                thousands(l.achieved as u64)
            );
            let _ = writeln!(
                s,
                "    end to end (arrival → durable in every sink): {} ({} records)",
                cells(&l.end_to_end).replace(" | ", " / "),
                thousands(l.end_to_end.count)
            );
            let _ = writeln!(
                s,
                "    arrival → alert: {} ({} alerts; target p99 ≤ 10 ms: {})",
                cells(&l.alert).replace(" | ", " / "),
                thousands(l.alert.count),
                met(l.alert.count > 0 && l.alert.p99 <= 10.0)
            );
        }
        s
    }

    /// The README's results table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Machine: {}. Command: `{}`.\n",
            self.machine, self.command
        );
        let _ = writeln!(
            s,
            "| run | events | seconds | events/s | MB/s | µs/event | peak RSS |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for r in &self.pipeline {
            let _ = writeln!(
                s,
                "| pipeline {}× | {} | {:.2} | {} | {:.1} | {:.2} | {} |",
                r.scale,
                thousands(r.events),
                r.elapsed.as_secs_f64(),
                thousands(r.per_second() as u64),
                r.mb_per_second(),
                r.us_per_event(),
                mib(r.peak_rss)
            );
        }
        let _ = writeln!(
            s,
            "\n| vitalflow against | vitalflow | baseline | ratio | target |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for r in self.ratios() {
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {:.2}× | ≥ {}× |",
                r.what,
                r.how(),
                thousands(r.vitalflow as u64),
                thousands(r.baseline as u64),
                r.ratio(),
                r.target
            );
        }
        if !self.same_work.is_empty() {
            let _ = writeln!(s, "\n{}.", self.same_work_line());
        }
        if let Some(p) = &self.parquet {
            let _ = writeln!(s, "\nParquet: {}.", p.split());
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "\n| paced at {} events/s (achieved {}) | p50 ms | p99 ms | p99.9 ms | max ms |",
                thousands(l.rate),
                thousands(l.achieved as u64)
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            let _ = writeln!(
                s,
                "| end to end: arrival → durable in every sink | {} |",
                cells(&l.end_to_end)
            );
            let _ = writeln!(s, "| arrival → alert | {} |", cells(&l.alert));
        }
        s
    }

    /// The sinks the straight-line loop was checked on.
    fn same_work_line(&self) -> String {
        let sinks: Vec<String> = self
            .same_work
            .iter()
            .map(|w| format!("`{}` {} rows", w.sink, thousands(w.rows)))
            .collect();
        format!(
            "Same work: the straight-line loop's sinks held the rows of the engine's 1× run \
             (content digests, per-run fields left out): {}",
            sinks.join(", ")
        )
    }

    /// Every figure, as JSON.
    pub fn json(&self) -> serde_json::Value {
        let ratio = |r: &Ratio| {
            json!({"what": r.what, "vitalflow": r.vitalflow, "baseline": r.baseline,
                   "ratio": r.ratio(), "target": r.target, "rounds": r.rounds,
                   "taken": match r.taken { Taken::Best => "best", Taken::MedianPair => "median pair" }})
        };
        let pct = |p: &Percentiles| json!({"count": p.count, "p50_ms": p.p50, "p99_ms": p.p99, "p999_ms": p.p999, "max_ms": p.max});
        json!({
            "command": self.command,
            "machine": self.machine,
            "workers": self.settings.workers,
            "pipeline": self.pipeline.iter().map(|r| json!({
                "scale": r.scale, "events": r.events, "bytes": r.bytes,
                "seconds": r.elapsed.as_secs_f64(), "events_per_s": r.per_second(),
                "mb_per_s": r.mb_per_second(), "us_per_event": r.us_per_event(),
                "peak_rss_bytes": r.peak_rss, "alert_events": r.alerts,
            })).collect::<Vec<_>>(),
            "ratios": self.ratios().into_iter().map(ratio).collect::<Vec<_>>(),
            "same_work": self.same_work.iter().map(|w| json!({
                "sink": w.sink, "rows": w.rows, "digest": w.digest,
            })).collect::<Vec<_>>(),
            "parquet": self.parquet.as_ref().map(|p| json!({
                "rows": p.rows, "sink_seconds": p.sink_elapsed.as_secs_f64(),
                "sink_convert_seconds": p.convert.as_secs_f64(),
                "sink_encode_seconds": p.encode.as_secs_f64(),
                "json_copy_seconds": p.json_copy.as_secs_f64(),
                "json_copy_bytes": p.json_bytes,
                "raw_seconds": p.raw_elapsed.as_secs_f64(),
            })),
            "latency": self.latency.as_ref().map(|l| json!({
                "rate": l.rate, "achieved": l.achieved, "source_records": l.source_records,
                "end_to_end": pct(&l.end_to_end), "arrival_to_alert": pct(&l.alert),
            })),
        })
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The operators of a profiled run, the busiest first (those with at least 0.1% of the busy
/// time, or a long activation).
#[must_use]
pub fn operator_table(operators: &[OperatorTime]) -> String {
    let total: f64 = operators.iter().map(|o| o.busy.as_secs_f64()).sum();
    let mut out = format!(
        "{:<40} {:>11} {:>10} {:>6} {:>12} {:>8}\n",
        "operator",
        "activations",
        "busy (ms)",
        "share",
        "longest (ms)",
        format!("≥{LONG_MS} ms"),
    );
    for o in operators {
        let busy = o.busy.as_secs_f64();
        if busy < total * 0.001 && o.long == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<40} {:>11} {:>10.1} {:>5.1}% {:>12.2} {:>8}",
            o.name,
            thousands(o.activations),
            busy * 1000.0,
            100.0 * busy / total.max(1e-9),
            o.longest.as_secs_f64() * 1000.0,
            o.long,
        );
    }
    out
}
