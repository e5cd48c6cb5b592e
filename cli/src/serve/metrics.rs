//! `GET /metrics`: the run's latest snapshot as Prometheus metrics (OpenMetrics text), made
//! anew on every scrape. Every metric is listed in docs/operations.md; labels carry node, rule,
//! source, topic and consumer group names and partition numbers only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use hdrhistogram::Histogram;
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use vitalflow_engine::Progress;
use vitalflow_engine::runtime::NodeSummary;

use super::{Phase, Status, TIMED_EVERY};

/// The content type of the text served.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
/// Kafka offsets: whole numbers, exact whatever their size.
type Offsets = Family<Labels, Gauge>;

/// Seconds from the event time `ms` (milliseconds since the epoch) to `now`; negative when the
/// event time is ahead of the clock.
pub fn delay_seconds(ms: i64, now: SystemTime) -> f64 {
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    (now_ms - ms as f64) / 1000.0
}

/// An alert event type's level: its last dotted part (`vitalflow.alert.Urgent` → `Urgent`).
pub fn level(event: &str) -> &str {
    event.rsplit('.').next().unwrap_or(event)
}

fn counter(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> Counters {
    let family = Counters::default();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
        None => registry.register(name, help, family.clone()),
    }
    family
}

fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> Gauges {
    let family = Gauges::default();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
        None => registry.register(name, help, family.clone()),
    }
    family
}

fn offsets(registry: &mut Registry, name: &str, help: &str) -> Offsets {
    let family = Offsets::default();
    registry.register(name, help, family.clone());
    family
}

fn set(family: &Counters, labels: Labels, value: u64) {
    family
        .get_or_create(&labels)
        .inner()
        .store(value, Ordering::Relaxed);
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The metrics of `status` now, as OpenMetrics text.
///
/// # Errors
/// If the text cannot be written (it cannot: it is written to a string).
pub fn encode(status: &Status) -> Result<String, std::fmt::Error> {
    let (phase, latest) = status.latest();
    let latest = latest.as_ref();
    let now = SystemTime::now();
    let nodes = latest.map_or(&[][..], |s| s.nodes.as_slice());
    let mut r = Registry::default();
    run(&mut r, &status.job, phase, latest);
    per_node(&mut r, &graph_nodes(status, nodes), nodes);
    sources(&mut r, latest, now);
    checkpoints(&mut r, latest, now);
    alerts(&mut r, latest);
    partitions(&mut r, latest);
    platform(&mut r, nodes);
    histograms(&mut r, latest);
    let mut text = String::new();
    encode_text(&mut text, &r)?;
    Ok(text)
}

/// The run: the job's name, whether the workers run, for how long.
fn run(r: &mut Registry, job: &str, phase: Phase, latest: Option<&Progress>) {
    r.register(
        "vitalflow_run",
        "The job this process runs",
        Info::new(labels(&[("pipeline", job)])),
    );
    let running = gauge(
        r,
        "vitalflow_run_running",
        "1 while the workers run, 0 before they start and after they stop",
        None,
    );
    let elapsed = gauge(
        r,
        "vitalflow_run_elapsed",
        "Time since the workers started",
        Some(Unit::Seconds),
    );
    running
        .get_or_create(&Vec::new())
        .set(if phase == Phase::Running { 1.0 } else { 0.0 });
    elapsed
        .get_or_create(&Vec::new())
        .set(latest.map_or(0.0, |s| s.elapsed.as_secs_f64()));
}

/// Every node of the job, with its kind: the snapshot's, or the job's graph before the first
/// snapshot.
fn graph_nodes(status: &Status, nodes: &[NodeSummary]) -> Vec<(String, String)> {
    if nodes.is_empty() {
        status
            .graph
            .iter()
            .map(|g| (g.name.clone(), g.kind.clone()))
            .collect()
    } else {
        nodes
            .iter()
            .map(|n| (n.name.clone(), n.kind.clone()))
            .collect()
    }
}

/// A per-node counter: its name, help, unit and the count it serves.
type NodeCounter = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&NodeSummary) -> u64,
);

/// The per-node counters.
const PER_NODE: [NodeCounter; 9] = [
    (
        "vitalflow_node_records_in",
        "Records a node received (sources: read)",
        None,
        |n| n.records_in,
    ),
    (
        "vitalflow_node_records_out",
        "Records a node emitted (sinks: wrote)",
        None,
        |n| n.records_out,
    ),
    (
        "vitalflow_node_records_rejected",
        "Records a node received and sent to dead-letter",
        None,
        |n| n.rejected,
    ),
    (
        "vitalflow_node_records_dropped",
        "Records a node received that ended there with neither output nor dead letter",
        None,
        |n| n.dropped,
    ),
    (
        "vitalflow_node_dead_letters",
        "Dead letters a node sent (a record with several bad parts has one for each)",
        None,
        |n| n.dead_letters,
    ),
    (
        "vitalflow_node_records_late",
        "Records later than the allowed lateness (windows) or behind the watermark when read \
         (Kafka sources)",
        None,
        |n| n.late,
    ),
    (
        "vitalflow_node_read",
        "Bytes of the records a source read",
        Some(Unit::Bytes),
        |n| n.bytes_in,
    ),
    (
        "vitalflow_node_files",
        "Files a sink wrote or a file source read",
        None,
        |n| n.files,
    ),
    (
        "vitalflow_node_written",
        "Bytes a sink made durable: of its files, or of the records Kafka acknowledged",
        Some(Unit::Bytes),
        |n| n.bytes_written,
    ),
];

/// The per-node counters of every node of `graph` (name, kind), 0 for a node not in `nodes`.
fn per_node(r: &mut Registry, graph: &[(String, String)], nodes: &[NodeSummary]) {
    for (name, help, unit, field) in PER_NODE {
        let family = counter(r, name, help, unit);
        for (node, kind) in graph {
            let counts = nodes.iter().find(|n| &n.name == node);
            set(
                &family,
                labels(&[("node", node), ("kind", kind)]),
                counts.map_or(0, field),
            );
        }
    }
}

/// The Kafka sources' watermarks and how far behind the clock they are.
fn sources(r: &mut Registry, latest: Option<&Progress>, now: SystemTime) {
    let watermark = gauge(
        r,
        "vitalflow_source_watermark",
        "A Kafka source's watermark, as an event time (seconds since the epoch)",
        Some(Unit::Seconds),
    );
    let delay = gauge(
        r,
        "vitalflow_source_watermark_delay",
        "How far a Kafka source's watermark is behind the wall clock",
        Some(Unit::Seconds),
    );
    let Some(s) = latest else { return };
    for (source, ms) in &s.watermarks {
        if let Some(ms) = ms {
            let l = labels(&[("source", source)]);
            watermark.get_or_create(&l).set(*ms as f64 / 1000.0);
            delay.get_or_create(&l).set(delay_seconds(*ms, now));
        }
    }
}

/// The checkpoints written, the last one's duration and age.
fn checkpoints(r: &mut Registry, latest: Option<&Progress>, now: SystemTime) {
    let checkpoints = counter(
        r,
        "vitalflow_checkpoints",
        "Checkpoints written by this run (jobs with Kafka sources)",
        None,
    );
    let last_duration = gauge(
        r,
        "vitalflow_checkpoint_last_duration",
        "How long the last checkpoint took to write, offset commits included",
        Some(Unit::Seconds),
    );
    let age = gauge(
        r,
        "vitalflow_checkpoint_age",
        "Time since the last checkpoint was written",
        Some(Unit::Seconds),
    );
    let Some(c) = latest.and_then(|s| s.checkpoints) else {
        return;
    };
    set(&checkpoints, Vec::new(), c.written);
    if let Some(d) = c.last_duration {
        last_duration
            .get_or_create(&Vec::new())
            .set(d.as_secs_f64());
    }
    if let Some(t) = c.last_written {
        age.get_or_create(&Vec::new())
            .set(now.duration_since(t).unwrap_or_default().as_secs_f64());
    }
}

/// The alert events raised, by node, rule and level.
fn alerts(r: &mut Registry, latest: Option<&Progress>) {
    let alerts = counter(
        r,
        "vitalflow_alerts",
        "Alert events raised, by alert node, rule and level",
        None,
    );
    for a in latest.map_or(&[][..], |s| s.alerts.as_slice()) {
        set(
            &alerts,
            labels(&[
                ("node", &a.node),
                ("rule", &a.rule),
                ("level", level(&a.event)),
            ]),
            a.count,
        );
    }
}

/// Per Kafka partition a source reads: its offset, its end and the lag between them.
fn partitions(r: &mut Registry, latest: Option<&Progress>) {
    let offset = offsets(
        r,
        "vitalflow_kafka_partition_offset",
        "The next offset a Kafka source reads in a partition",
    );
    let end = offsets(
        r,
        "vitalflow_kafka_partition_end_offset",
        "The offset after a partition's last record, as its broker last said",
    );
    let lag = offsets(
        r,
        "kafka_consumergroup_lag",
        "Records of a partition a Kafka source has not read yet (end offset minus offset)",
    );
    for p in latest.map_or(&[][..], |s| s.partitions.as_slice()) {
        let number = p.partition.to_string();
        let at = labels(&[
            ("source", &p.source),
            ("topic", &p.topic),
            ("partition", &number),
        ]);
        if let Some(o) = p.position {
            offset.get_or_create(&at).set(o);
        }
        if let Some(e) = p.end {
            end.get_or_create(&at).set(e);
        }
        if let Some(l) = p.lag() {
            let group = labels(&[
                ("consumergroup", &p.group),
                ("topic", &p.topic),
                ("partition", &number),
                ("source", &p.source),
            ]);
            lag.get_or_create(&group).set(l);
        }
    }
}

/// The platform's names for the job's totals.
fn platform(r: &mut Registry, nodes: &[NodeSummary]) {
    let processed = counter(
        r,
        "events_processed",
        "Records the job's sources read",
        None,
    );
    let failed = counter(
        r,
        "events_failed",
        "Records rejected by any node (sent to dead-letter)",
        None,
    );
    let dead_letter_queue = gauge(
        r,
        "dead_letter_queue_size",
        "Dead letters sent by all nodes so far",
        None,
    );
    set(
        &processed,
        Vec::new(),
        nodes
            .iter()
            .filter(|n| n.source)
            .map(|n| n.records_out)
            .sum(),
    );
    set(&failed, Vec::new(), nodes.iter().map(|n| n.rejected).sum());
    dead_letter_queue
        .get_or_create(&Vec::new())
        .set(nodes.iter().map(|n| n.dead_letters).sum::<u64>() as f64);
}

/// The upper bounds of the latency histograms' buckets, in microseconds, from 1 ms to 5 min;
/// a `+Inf` bucket follows.
const BOUNDS_US: [u64; 17] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];

/// A latency histogram kept in microseconds by hdrhistogram, as a Prometheus histogram in
/// seconds: its counts in buckets at [`BOUNDS_US`], each value counted in the first bucket
/// whose bound is not below the lowest value of its hdrhistogram bin, and its sum taken from
/// the histogram, each value at the middle of its bin (3 significant digits, as the histogram
/// keeps them).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Every value's bucket: the bound in seconds and the values in it (not cumulative; the
    /// encoder adds them up), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    /// The values, in seconds.
    pub sum: f64,
    /// How many there are.
    pub count: u64,
}

impl Buckets {
    /// The buckets of `h` (µs).
    pub fn of(h: &Histogram<u64>) -> Self {
        let mut buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .map(|us| (*us as f64 / 1e6, 0))
            .chain(std::iter::once((f64::INFINITY, 0)))
            .collect();
        let (mut sum_us, mut count) = (0.0, 0);
        for v in h.iter_recorded() {
            let n = v.count_at_value();
            let lowest = h.lowest_equivalent(v.value_iterated_to());
            sum_us += h.median_equivalent(lowest) as f64 * n as f64;
            count += n;
            let i = BOUNDS_US.partition_point(|bound| *bound < lowest);
            if let Some(bucket) = buckets.get_mut(i) {
                bucket.1 += n;
            }
        }
        Self {
            buckets,
            sum: sum_us / 1e6,
            count,
        }
    }
}

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Histograms of one family, by label set; absent from the text when it has none.
#[derive(Debug, Default)]
struct HistogramFamily(Vec<(Labels, Buckets)>);

impl EncodeMetric for HistogramFamily {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (labels, buckets) in &self.0 {
            buckets.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The latency histograms: per `alert` node, the triggering reading's arrival to the alert;
/// and, when the run times records, a source record's arrival to its durability in every sink
/// that writes (the platform's name).
fn histograms(r: &mut Registry, latest: Option<&Progress>) {
    let alert_latency = HistogramFamily(
        latest
            .map_or(&[][..], |s| s.alert_latency.as_slice())
            .iter()
            .map(|(node, h)| (labels(&[("node", node)]), Buckets::of(h)))
            .collect(),
    );
    r.register_with_unit(
        "vitalflow_alert_latency",
        "Per alert node: from the arrival of the reading that raised an alert event to the \
         event's emission (events whose reading's arrival is known)",
        Unit::Seconds,
        alert_latency,
    );
    if let Some(h) = latest.and_then(|s| s.end_to_end.as_ref()) {
        r.register_with_unit(
            "event_processing_duration",
            format!(
                "From a source record's arrival to the moment every sink that writes has made it \
                 durable (one record in {TIMED_EVERY} of each source on each worker)"
            ),
            Unit::Seconds,
            Buckets::of(h),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hdrhistogram::Histogram;

    use super::Buckets;

    /// Values at a bound fall in its bucket, values past the last bound in `+Inf`; every value
    /// is in one bucket; the sum is the values' (in seconds) to the histogram's precision.
    #[test]
    fn an_hdr_histogram_is_served_in_buckets_at_the_bounds() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        h.auto(true);
        // µs: below 1 ms, at 1 ms, just past it, 7 ms, 2 s (three times), 10 min.
        let values = [
            400,
            1_000,
            1_001,
            7_000,
            2_000_000,
            2_000_000,
            2_000_000,
            600_000_000,
        ];
        for v in values {
            h.record(v).unwrap();
        }
        let b = Buckets::of(&h);
        let count = |bound: f64| b.buckets.iter().find(|(le, _)| *le == bound).unwrap().1;
        assert_eq!(b.buckets.len(), 18);
        assert_eq!(b.buckets.last().unwrap().0, f64::INFINITY);
        assert_eq!(count(0.001), 2, "{b:?}");
        assert_eq!(count(0.0025), 1, "{b:?}");
        assert_eq!(count(0.01), 1, "{b:?}");
        assert_eq!(count(2.5), 3, "{b:?}");
        assert_eq!(count(f64::INFINITY), 1, "{b:?}");
        assert_eq!(b.buckets.iter().map(|(_, n)| n).sum::<u64>(), 8);
        assert_eq!(b.count, 8);
        let sum: f64 = values.iter().map(|us| *us as f64 / 1e6).sum();
        assert!((b.sum - sum).abs() <= sum * 1e-3, "{} against {sum}", b.sum);
    }

    /// An empty histogram: every bucket empty, nothing summed.
    #[test]
    fn an_empty_histogram_has_empty_buckets() {
        let b = Buckets::of(&Histogram::<u64>::new(3).unwrap());
        assert_eq!(b.count, 0);
        assert_eq!(b.sum, 0.0);
        assert!(b.buckets.iter().all(|(_, n)| *n == 0));
    }
}
