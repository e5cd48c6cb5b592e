//! The harness's baselines outside the engine: raw rdkafka consume loops, a raw arrow-rs
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
use vitalflow_connectors::parquet::{
    BATCH_ROWS, ParquetWriter, Partitioning, WriteTimes, canonical_writer_properties,
};
use vitalflow_connectors::sync_filesystem;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_operators::anonymize::{
    AnonymizeConfig, Anonymizer, DatePolicy, DeidReport, Policy, PseudonymKey,
};
use vitalflow_operators::canonize::canonize;
use vitalflow_operators::ingest::ingest;

use super::Settings;
use super::report::{KafkaFigures, ParquetFigures, Ratio, per_second};

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
        let mut writer = ArrowWriter::try_new(out, schema, Some(canonical_writer_properties()))?;
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

/// The harness job's EHR events (`each` of them: the generator of its `ehr` source) as the
/// Parquet sink receives them: ingested, de-identified as its `anonymize` stage does (a
/// per-run key, each patient's dates shifted by up to 365 days) and canonized to FHIR R4.
fn canonical_rows(s: &Settings, each: u64) -> anyhow::Result<Vec<CanonicalResource>> {
    let generator = Generator::new(GeneratorConfig {
        seed: 42,
        patients: s.patients,
        count: each,
        ..GeneratorConfig::default()
    });
    let anonymizer = Anonymizer::new(AnonymizeConfig {
        key: PseudonymKey::ephemeral(),
        dates: DatePolicy::Shift { max_days: 365 },
        restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
        policy: Policy::default(),
    });
    let mut report = DeidReport::default();
    let (mut ingested, mut dead) = (Vec::new(), Vec::new());
    let mut rows = Vec::with_capacity(usize::try_from(each).unwrap_or(0));
    for i in 0..each {
        ingested.clear();
        ingest(&generator.raw("ehr", i), "ingest", &mut ingested, &mut dead);
        for record in &ingested {
            let deid = anonymizer
                .apply(record, &mut report)
                .map_err(|e| anyhow::anyhow!("de-identifying event {i}: {e}"))?;
            rows.push(canonize(&deid).map_err(|e| anyhow::anyhow!("canonizing event {i}: {e}"))?);
        }
    }
    if !dead.is_empty() {
        bail!(
            "{} of the generator's events were dead-lettered",
            dead.len()
        );
    }
    Ok(rows)
}

/// The Parquet sink's writer against a raw `ArrowWriter`, on the rows the job's `fhir` sink
/// receives (`expected` of them, as the straight-line loop wrote): `rounds` rounds, each
/// writing all the rows with the sink's writer and then rewriting its files with the raw one;
/// the best time of each side counts. Before each side the file system is synced, so neither
/// pays to flush what an earlier run left dirty. Each round then times [`json_copy`], whose best
/// is the floor of the sink's conversion.
pub fn parquet(s: &Settings, expected: u64, out: &Path) -> anyhow::Result<ParquetFigures> {
    let rows = canonical_rows(s, s.events / 2)?;
    if rows.len() as u64 != expected {
        bail!(
            "the Parquet baseline made {} canonical rows, the straight-line loop wrote {expected}: \
             they are not the same rows",
            rows.len()
        );
    }
    let mut best = Best::new("Parquet", ["sink writer", "raw ArrowWriter"]);
    let mut raw_rows = 0;
    // Where the sink writer's best round spent its time.
    let mut split = WriteTimes::default();
    let (mut json, mut json_bytes) = (Duration::MAX, 0);
    let first = out.join("parquet-sink-0");
    for round in 0..s.rounds {
        let sink_dir = out.join(format!("parquet-sink-{round}"));
        settle_disk(out)?;
        let mut writer = ParquetWriter::new(sink_dir.clone(), Partitioning::Month);
        let started = Instant::now();
        writer
            .write("bench", &rows)
            .map_err(|e| anyhow::anyhow!("the Parquet sink's writer: {e}"))?;
        let sink = started.elapsed();
        settle_disk(out)?;
        let raw_dir = out.join("parquet-raw");
        let raw = raw_arrow_writer(&first, &raw_dir)?;
        let _ = std::fs::remove_dir_all(&raw_dir);
        let (copy, bytes) = json_copy(&writer, &rows);
        json = json.min(copy);
        json_bytes = bytes;
        if round > 0 {
            let _ = std::fs::remove_dir_all(&sink_dir);
        }
        if sink < best.best[0] {
            split = writer.last_write();
        }
        best.record(round, [sink, raw.elapsed]);
        raw_rows = raw.rows;
    }
    if raw_rows != expected {
        bail!("the raw ArrowWriter rewrote {raw_rows} rows of {expected}");
    }
    Ok(ParquetFigures {
        rows: expected,
        sink_elapsed: best.best[0],
        convert: split.convert,
        encode: split.encode,
        json_copy: json,
        json_bytes,
        raw_elapsed: best.best[1],
        ratio: Ratio::new(
            "Parquet sink vs raw ArrowWriter (rows/s)",
            per_second(expected, best.best[0]),
            per_second(raw_rows, best.best[1]),
            0.8,
        )
        .best_of(s.rounds),
    })
}

/// A bare loop copying each row's FHIR JSON (most of the bytes a write converts) into a buffer,
/// the rows in the order `writer` reads them and the buffer emptied every [`BATCH_ROWS`] rows of
/// a file, as the sink's string columns are: the least the sink's conversion can cost with the
/// rows where they lie in memory (one file's rows are spread through it). Returns the time and
/// the bytes copied.
fn json_copy(writer: &ParquetWriter, rows: &[CanonicalResource]) -> (Duration, u64) {
    let files = writer.files(rows);
    let mut buffer: Vec<u8> = Vec::new();
    let mut bytes = 0;
    let started = Instant::now();
    for rows in files.values() {
        for batch in rows.chunks(BATCH_ROWS) {
            buffer.clear();
            for row in batch {
                buffer.extend_from_slice(row.resource.as_bytes());
            }
            bytes += std::hint::black_box(&buffer).len() as u64;
        }
    }
    (started.elapsed(), bytes)
}

/// Each side's best time over a baseline's rounds, each round printed as it is measured.
pub struct Best {
    what: &'static str,
    sides: [&'static str; 2],
    pub best: [Duration; 2],
}

impl Best {
    pub const fn new(what: &'static str, sides: [&'static str; 2]) -> Self {
        Self {
            what,
            sides,
            best: [Duration::MAX; 2],
        }
    }

    pub fn record(&mut self, round: usize, times: [Duration; 2]) {
        println!(
            "{} round {}: {} {:.3} s, {} {:.3} s",
            self.what,
            round + 1,
            self.sides[0],
            times[0].as_secs_f64(),
            self.sides[1],
            times[1].as_secs_f64()
        );
        for (best, time) in self.best.iter_mut().zip(times) {
            *best = (*best).min(time);
        }
    }
}

/// Lets writer threads of earlier runs finish, then syncs the file system under `dir`.
pub fn settle_disk(dir: &Path) -> anyhow::Result<()> {
    super::settle();
    sync_filesystem(dir, &[]).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Partitions of the harness's topic (the embedded broker keeps 5 MiB of compressed records per
/// partition).
const PARTITIONS: i32 = 32;

/// Raw rdkafka consume loops, `consumers` of them on threads of their own, as the engine's Kafka
/// source splits a topic over its workers: consumer `c` reads the partitions `p % consumers == c`
/// from the beginning to their high watermarks (asked of the broker first). Returns the time from
/// the moment every consumer is assigned to the last one's last record, and the payload bytes.
fn raw_consume(
    bootstrap: &str,
    topic: &str,
    records: u64,
    consumers: usize,
) -> anyhow::Result<(Duration, u64)> {
    let consumers = consumers.max(1);
    let ready = std::sync::Barrier::new(consumers);
    let results: Vec<anyhow::Result<(Instant, Instant, u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..consumers)
            .map(|c| {
                let ready = &ready;
                scope.spawn(move || {
                    // Every consumer meets the others at the barrier, even one that failed, so
                    // that none waits for ever.
                    let consumer = raw_consumer(bootstrap, topic, c, consumers);
                    ready.wait();
                    let (consumer, expected) = consumer?;
                    raw_read(&consumer, expected)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a raw consumer's thread panicked")))
            })
            .collect()
    });
    let (mut first, mut last, mut read, mut bytes) = (None::<Instant>, None::<Instant>, 0, 0);
    for r in results {
        let (started, ended, n, b) = r?;
        first = Some(first.map_or(started, |f| f.min(started)));
        last = Some(last.map_or(ended, |l| l.max(ended)));
        read += n;
        bytes += b;
    }
    if read != records {
        bail!("the raw consumers read {read} of {records} records");
    }
    let elapsed = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => Duration::ZERO,
    };
    Ok((elapsed, bytes))
}

/// Consumer `c` of `consumers`, assigned its partitions from the beginning, and the records they
/// hold.
fn raw_consumer(
    bootstrap: &str,
    topic: &str,
    c: usize,
    consumers: usize,
) -> anyhow::Result<(BaseConsumer, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "vitalflow-bench-raw")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0u64;
    for p in (0..PARTITIONS).filter(|p| usize::try_from(*p).is_ok_and(|p| p % consumers == c)) {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        expected += u64::try_from(high - low).unwrap_or(0);
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok((consumer, expected))
}

/// Reads `expected` records; returns when it started and ended, the records and payload bytes.
fn raw_read(
    consumer: &BaseConsumer,
    expected: u64,
) -> anyhow::Result<(Instant, Instant, u64, u64)> {
    let started = Instant::now();
    let (mut read, mut bytes) = (0u64, 0u64);
    let mut quiet = Instant::now();
    while read < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                read += 1;
                bytes += m.payload().map_or(0, <[u8]>::len) as u64;
                quiet = Instant::now();
            }
            Some(Err(e)) => bail!("raw consume loop: {e}"),
            None if quiet.elapsed() > Duration::from_secs(30) => {
                bail!("raw consume loop: {read} of {expected} records, then nothing for 30 s")
            }
            None => {}
        }
    }
    Ok((started, Instant::now(), read, bytes))
}

/// The EHR feed's events in a topic of the embedded broker, read by `W` raw rdkafka consume
/// loops on `W` threads (a partition each to one of them, as the engine's source splits them
/// over its `W` workers) and by the engine's Kafka source with `W` workers (into a `blackhole`
/// sink), alternately, `rounds` times each; the best time of each side counts.
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

    let mut best = Best::new("Kafka", ["raw consume loops", "Kafka source"]);
    let mut bytes = 0;
    for round in 0..s.rounds {
        super::settle();
        let (raw, payload) = raw_consume(&bootstrap, topic, produced, s.workers)?;
        bytes = payload;

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
        let summary = super::run_job(&job, s, super::Watch::plain())?;
        let engine_records = summary.source_records();
        if engine_records != produced {
            bail!("the Kafka source read {engine_records} of {produced} records");
        }
        best.record(round, [raw, summary.elapsed]);
    }
    let rate = |d: Duration| per_second(produced, d);
    Ok(KafkaFigures {
        records: produced,
        bytes,
        raw_elapsed: best.best[0],
        engine_elapsed: best.best[1],
        ratio: Ratio::new(
            format!(
                "Kafka source, {w} worker{s}, vs {w} raw rdkafka consumer{s} on {w} thread{s} \
                 (records/s)",
                w = s.workers,
                s = if s.workers == 1 { "" } else { "s" }
            ),
            rate(best.best[1]),
            rate(best.best[0]),
            0.8,
        )
        .best_of(s.rounds),
    })
}
