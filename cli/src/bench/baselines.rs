//! The harness's baselines outside the engine: a raw rdkafka consume loop, a raw arrow-rs
//! `ArrowWriter`, and the process's peak memory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_connectors::kafka::EmbeddedBroker;
use vitalflow_connectors::kafka::embedded::{FeedTopics, feed_generator};
use vitalflow_connectors::parquet::writer_properties;
use vitalflow_connectors::sync_filesystem;

use super::Settings;
use super::report::{KafkaFigures, Ratio};

/// Resets the process's peak resident memory (Linux; elsewhere nothing happens).
pub fn reset_peak_rss() {
    super::settle();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last reset, in bytes (0 where unknown).
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// What the raw writer did.
pub struct RawWrite {
    pub rows: u64,
    pub elapsed: Duration,
}

/// Rewrites every Parquet file under `from` with a bare `ArrowWriter` (the sinks' writer
/// properties, one file each, made durable together as the sink makes its files), timing only
/// the writing: the batches are read into memory first.
pub fn raw_arrow_writer(from: &Path, to: &Path) -> anyhow::Result<RawWrite> {
    let mut files = Vec::new();
    collect_parquet(from, &mut files)?;
    std::fs::create_dir_all(to)?;
    let mut result = RawWrite {
        rows: 0,
        elapsed: Duration::ZERO,
    };
    let mut targets = Vec::with_capacity(files.len());
    for (i, path) in files.iter().enumerate() {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let schema = builder.schema().clone();
        let reader = builder.build()?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        let target = to.join(format!("part-{i:06}.parquet"));
        let started = Instant::now();
        let out = File::create(&target)?;
        let mut writer = ArrowWriter::try_new(out, schema, Some(writer_properties()))?;
        for b in &batches {
            writer.write(b)?;
            result.rows += b.num_rows() as u64;
        }
        writer.close()?;
        result.elapsed += started.elapsed();
        targets.push(target);
    }
    let started = Instant::now();
    sync_filesystem(to, &targets)?;
    result.elapsed += started.elapsed();
    Ok(result)
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_parquet(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// Partitions of the harness's topic (the embedded broker keeps 5 MiB of compressed records per
/// partition).
const PARTITIONS: i32 = 32;

/// The EHR feed's events in a topic of the embedded broker, read by a raw rdkafka consume loop
/// and by the engine's Kafka source (into a `blackhole` sink).
pub fn kafka(s: &Settings, out: &Path) -> anyhow::Result<KafkaFigures> {
    let count = s.events / 2;
    let broker = EmbeddedBroker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = "bench.ehr";
    broker.create_topic(topic, PARTITIONS)?;
    let generator = Generator::new(GeneratorConfig {
        seed: 42,
        patients: s.patients,
        count,
        ..GeneratorConfig::default()
    });
    let topics = FeedTopics {
        patients: topic.to_owned(),
        vitals: topic.to_owned(),
    };
    let produced = feed_generator(
        &bootstrap,
        &generator,
        &topics,
        Duration::from_secs(600),
        |_| {},
    )?;

    // The raw loop: one consumer, every partition from the beginning, until every record is in.
    super::settle();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "vitalflow-bench-raw")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut quiet = Instant::now();
    while records < produced {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload().map_or(0, <[u8]>::len) as u64;
                quiet = Instant::now();
            }
            Some(Err(e)) => bail!("raw consume loop: {e}"),
            None if quiet.elapsed() > Duration::from_secs(30) => {
                bail!("raw consume loop: {records} of {produced} records, then nothing for 30 s")
            }
            None => {}
        }
    }
    let raw_elapsed = started.elapsed();
    drop(consumer);

    // The engine's Kafka source over the same topic, into a sink that drops.
    let text = format!(
        r#"# Written by `vitalflow bench`: the Kafka source alone.
[job]
name = "bench-kafka-source"
workers = {workers}
out = "{out}"

[sources.ehr]
kind = "kafka"
brokers = "{bootstrap}"
topic = "{topic}"
format = "envelope"
stop = "end"
idle-timeout = "1s"

[sinks.discard]
kind = "blackhole"
inputs = ["ehr"]
"#,
        workers = s.workers,
        out = out.join("kafka-run").display(),
    );
    let path = out.join("bench-kafka-source.toml");
    let job = super::parse_job(&path, text)?;
    super::settle();
    let summary = super::run_job(&job, s.workers, false, false)?;
    let engine_records = summary.source_records();
    if engine_records != produced {
        bail!("the Kafka source read {engine_records} of {produced} records");
    }
    let raw_rate = records as f64 / raw_elapsed.as_secs_f64().max(1e-9);
    let engine_rate = engine_records as f64 / summary.elapsed.as_secs_f64().max(1e-9);
    Ok(KafkaFigures {
        records,
        bytes,
        raw_elapsed,
        engine_elapsed: summary.elapsed,
        ratio: Ratio::new(
            "Kafka source vs raw rdkafka consume loop (records/s)",
            engine_rate,
            raw_rate,
            0.8,
        ),
    })
}
