//! The embedded broker: librdkafka's mock cluster, a real Kafka-protocol broker inside the
//! process, so that a job runs end to end with no services and any Kafka client can attach to
//! it while it runs. It keeps records in memory: they are gone when the process ends.

use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::{ClientSettings, KafkaError, OutMessage, TopicWriter};
use crate::generator::Generator;

/// A running embedded broker.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a broker (one node) listening on a free loopback port.
    ///
    /// # Errors
    /// If librdkafka cannot start it.
    pub fn start() -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(1).map_err(|e| KafkaError::Embedded(e.to_string()))?;
        Ok(Self { cluster })
    }

    /// Its bootstrap address, `127.0.0.1:PORT`.
    #[must_use]
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates `topic` with `partitions` partitions.
    ///
    /// # Errors
    /// If the broker refuses (for example, the topic exists already).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        self.cluster
            .create_topic(topic, partitions.max(1), 1)
            .map_err(|e| KafkaError::Embedded(format!("create topic `{topic}`: {e}")))
    }
}

/// Where the generator's events go: patient events to one topic, readings to another.
#[derive(Clone, Debug)]
pub struct FeedTopics {
    /// The topic of `patient.record.created` events.
    pub patients: String,
    /// The topic of `vitals.measurement.recorded` events.
    pub vitals: String,
}

/// Produces the generator's events `0..count` into `topics` at `bootstrap`, keyed by the source
/// patient id (so each patient's events stay in order on one partition); waits until every one
/// is acknowledged. `progress` is called now and then with the count acknowledged.
///
/// # Errors
/// If a record cannot be produced or is not acknowledged within `timeout`.
pub fn feed_generator(
    bootstrap: &str,
    generator: &Generator,
    topics: &FeedTopics,
    timeout: Duration,
    mut progress: impl FnMut(u64),
) -> Result<u64, KafkaError> {
    // The embedded broker keeps the newest 5 MiB of record batches per partition: compress.
    let mut settings = ClientSettings::new(bootstrap);
    for (k, v) in [
        ("compression.type", "lz4"),
        ("linger.ms", "20"),
        ("batch.size", "1000000"),
    ] {
        settings
            .properties
            .insert(k.to_owned(), super::PropertyValue::Literal(v.to_owned()));
    }
    let mut writer = TopicWriter::new(&settings, FEED_RETRY)?;
    let started = Instant::now();
    let mut acked = 0u64;
    for i in 0..generator.count() {
        let topic = if generator.is_patient_event(i) {
            &topics.patients
        } else {
            &topics.vitals
        };
        let key = generator.patient_id(generator.patient_of(i));
        writer.send(OutMessage {
            topic: topic.clone(),
            key: Some(key.into_bytes()),
            payload: generator.event(i),
            headers: Vec::new(),
        })?;
        if i % 10_000 == 9_999 {
            acked += writer.poll()?.len() as u64;
            progress(acked);
        }
    }
    let left = timeout.saturating_sub(started.elapsed());
    acked += writer.flush(left)?.len() as u64;
    progress(acked);
    if writer.in_flight() > 0 {
        return Err(KafkaError::Embedded(format!(
            "{} generated records not acknowledged within {timeout:?}",
            writer.in_flight()
        )));
    }
    // Check that the broker kept every record.
    for topic in [&topics.patients, &topics.vitals] {
        let reader =
            super::PartitionReader::new(&ClientSettings::new(bootstrap), topic, "vitalflow-feed")?;
        for p in 0..reader.partition_count(Duration::from_secs(10))? {
            let (low, _) = reader.watermarks(p, Duration::from_secs(10))?;
            if low > 0 {
                return Err(KafkaError::Embedded(format!(
                    "topic `{topic}` partition {p} dropped its first {low} records: the embedded \
                     broker keeps 5 MiB per partition; give the topic more partitions or \
                     generate fewer events"
                )));
            }
        }
    }
    Ok(acked)
}

/// Where a bedside-monitor feed goes: flat readings to one topic, the patients' context (a
/// table of upserts keyed by patient id) to another.
#[derive(Clone, Debug)]
pub struct FlatTopics {
    /// Flat readings ([`Generator::flat_line`]).
    pub vitals: String,
    /// The patients' context ([`Generator::context_lines`]).
    pub context: String,
}

fn feed_settings(bootstrap: &str, linger_ms: &str) -> ClientSettings {
    // The embedded broker keeps the newest 5 MiB of record batches per partition: compress.
    let mut settings = ClientSettings::new(bootstrap);
    for (k, v) in [
        ("compression.type", "lz4"),
        ("linger.ms", linger_ms),
        ("batch.size", "1000000"),
    ] {
        settings
            .properties
            .insert(k.to_owned(), super::PropertyValue::Literal(v.to_owned()));
    }
    settings
}

/// How long a paced feed sleeps at most before it asks `stop` again.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// Sleeps until `due`, asking `stop` every [`STOP_CHECK`]: whether it answered `true` (the
/// sleep is then cut short).
pub fn sleep_until(due: Instant, stop: &impl Fn() -> bool) -> bool {
    loop {
        if stop() {
            return true;
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(STOP_CHECK));
    }
}

fn patient_key(line: &str) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(v["patient_id"].as_str()?.as_bytes().to_vec())
}

/// Produces the patients' context into `topics.context` and waits until it is acknowledged.
///
/// # Errors
/// If a record cannot be produced or is not acknowledged within `timeout`.
pub fn feed_context(
    bootstrap: &str,
    generator: &Generator,
    topics: &FlatTopics,
    timeout: Duration,
) -> Result<u64, KafkaError> {
    let mut writer = TopicWriter::new(&feed_settings(bootstrap, "5"), FEED_RETRY)?;
    for line in generator.context_lines() {
        writer.send(OutMessage {
            topic: topics.context.clone(),
            key: patient_key(&line),
            payload: line.into_bytes(),
            headers: Vec::new(),
        })?;
    }
    let acked = writer.flush(timeout)?.len() as u64;
    if writer.in_flight() > 0 {
        return Err(KafkaError::Embedded(format!(
            "{} context records not acknowledged within {timeout:?}",
            writer.in_flight()
        )));
    }
    Ok(acked)
}

/// Produces the generator's flat readings `0..count` into `topics.vitals`, keyed by patient id.
/// `rate` > 0: a live feed, at `rate` readings a second, each stamped with the wall clock as it
/// is produced; 0: as fast as possible, with the simulated reading times. `stop` is asked before
/// each reading and while the feed waits for the next ones to be due: once it answers `true`,
/// no more readings are produced (those produced are still waited for). Returns the readings
/// acknowledged.
///
/// # Errors
/// If a record cannot be produced or is not acknowledged within `timeout` of the end.
pub fn feed_flat(
    bootstrap: &str,
    generator: &Generator,
    topics: &FlatTopics,
    rate: u64,
    timeout: Duration,
    stop: impl Fn() -> bool,
) -> Result<u64, KafkaError> {
    let linger = if rate > 0 { "1" } else { "20" };
    let mut writer = TopicWriter::new(&feed_settings(bootstrap, linger), FEED_RETRY)?;
    let started = Instant::now();
    let mut acked = 0u64;
    for i in 0..generator.count() {
        if stop() {
            break;
        }
        if rate > 0 && i % 100 == 0 {
            // Pace: reading i is due at i / rate seconds.
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if sleep_until(due, &stop) {
                break;
            }
        }
        let line = if rate > 0 {
            let now = chrono::Utc::now().timestamp_millis();
            generator.flat_line_at(i, now)
        } else {
            generator.flat_line(i)
        };
        let key = generator.patient_id(i % generator.patients());
        writer.send(OutMessage {
            topic: topics.vitals.clone(),
            key: Some(key.into_bytes()),
            payload: line.into_bytes(),
            headers: Vec::new(),
        })?;
        if i % 1_000 == 999 {
            acked += writer.poll()?.len() as u64;
        }
    }
    acked += writer.flush(timeout)?.len() as u64;
    if writer.in_flight() > 0 {
        return Err(KafkaError::Embedded(format!(
            "{} generated readings not acknowledged within {timeout:?}",
            writer.in_flight()
        )));
    }
    Ok(acked)
}

/// How long the embedded broker's feeds send a failing record again (the broker runs in this
/// process: a failure that lasts is a fault of its own).
const FEED_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
