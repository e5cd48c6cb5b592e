//! `GET /metrics`: the run's latest snapshot as Prometheus metrics (OpenMetrics text), made
//! anew on every scrape. Every metric is listed in docs/operations.md; labels carry node, rule,
//! source, topic and consumer group names and partition numbers only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use vitalflow_engine::runtime::NodeSummary;

use super::{Phase, Status};

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
    let now = SystemTime::now();
    let mut r = Registry::default();

    r.register(
        "vitalflow_run",
        "The job this process runs",
        Info::new(labels(&[("pipeline", &status.job)])),
    );
    let running = gauge(
        &mut r,
        "vitalflow_run_running",
        "1 while the workers run, 0 before they start and after they stop",
        None,
    );
    let elapsed = gauge(
        &mut r,
        "vitalflow_run_elapsed",
        "Time since the workers started",
        Some(Unit::Seconds),
    );
    running
        .get_or_create(&Vec::new())
        .set(if phase == Phase::Running { 1.0 } else { 0.0 });
    elapsed
        .get_or_create(&Vec::new())
        .set(latest.as_ref().map_or(0.0, |s| s.elapsed.as_secs_f64()));

    type Field = fn(&NodeSummary) -> u64;
    let per_node: [(&str, &str, Option<Unit>, Field); 8] = [
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
    ];
    let families: Vec<(Counters, Field)> = per_node
        .into_iter()
        .map(|(name, help, unit, field)| (counter(&mut r, name, help, unit), field))
        .collect();

    let watermark = gauge(
        &mut r,
        "vitalflow_source_watermark",
        "A Kafka source's watermark, as an event time (seconds since the epoch)",
        Some(Unit::Seconds),
    );
    let delay = gauge(
        &mut r,
        "vitalflow_source_watermark_delay",
        "How far a Kafka source's watermark is behind the wall clock",
        Some(Unit::Seconds),
    );
    let checkpoints = counter(
        &mut r,
        "vitalflow_checkpoints",
        "Checkpoints written by this run (jobs with Kafka sources)",
        None,
    );
    let last_duration = gauge(
        &mut r,
        "vitalflow_checkpoint_last_duration",
        "How long the last checkpoint took to write, offset commits included",
        Some(Unit::Seconds),
    );
    let age = gauge(
        &mut r,
        "vitalflow_checkpoint_age",
        "Time since the last checkpoint was written",
        Some(Unit::Seconds),
    );
    let alerts = counter(
        &mut r,
        "vitalflow_alerts",
        "Alert events raised, by alert node, rule and level",
        None,
    );
    let partition_offset = offsets(
        &mut r,
        "vitalflow_kafka_partition_offset",
        "The next offset a Kafka source reads in a partition",
    );
    let partition_end = offsets(
        &mut r,
        "vitalflow_kafka_partition_end_offset",
        "The offset after a partition's last record, as its broker last said",
    );
    let lag = offsets(
        &mut r,
        "kafka_consumergroup_lag",
        "Records of a partition a Kafka source has not read yet (end offset minus offset)",
    );
    let processed = counter(
        &mut r,
        "events_processed",
        "Records the job's sources read",
        None,
    );
    let failed = counter(
        &mut r,
        "events_failed",
        "Records rejected by any node (sent to dead-letter)",
        None,
    );
    let dead_letter_queue = gauge(
        &mut r,
        "dead_letter_queue_size",
        "Dead letters sent by all nodes so far",
        None,
    );

    let nodes = latest.as_ref().map_or(&[][..], |s| s.nodes.as_slice());
    let graph_nodes: Vec<(String, String)> = if nodes.is_empty() {
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
    };
    for (name, kind) in &graph_nodes {
        let counts = nodes.iter().find(|n| &n.name == name);
        for (family, field) in &families {
            set(
                family,
                labels(&[("node", name), ("kind", kind)]),
                counts.map_or(0, field),
            );
        }
    }
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

    if let Some(s) = &latest {
        for (source, ms) in &s.watermarks {
            if let Some(ms) = ms {
                let l = labels(&[("source", source)]);
                watermark.get_or_create(&l).set(*ms as f64 / 1000.0);
                delay.get_or_create(&l).set(delay_seconds(*ms, now));
            }
        }
        if let Some(c) = s.checkpoints {
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
        for p in &s.partitions {
            let number = p.partition.to_string();
            let at = labels(&[
                ("source", &p.source),
                ("topic", &p.topic),
                ("partition", &number),
            ]);
            if let Some(o) = p.position {
                partition_offset.get_or_create(&at).set(o);
            }
            if let Some(e) = p.end {
                partition_end.get_or_create(&at).set(e);
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
        for a in &s.alerts {
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

    let mut text = String::new();
    encode_text(&mut text, &r)?;
    Ok(text)
}
