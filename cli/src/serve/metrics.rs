//! `GET /metrics`: the run's latest snapshot as Prometheus metrics (OpenMetrics text), made
//! anew on every scrape. Every metric is listed in docs/operations.md; labels carry node, rule
//! and source names only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use vitalflow_engine::Progress;
use vitalflow_engine::runtime::NodeSummary;

use super::{Phase, Status};

/// The content type of the text served.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

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
    platform(&mut r, nodes);
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
