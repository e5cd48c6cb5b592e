//! Runs an alerting job whose alert events go to a Kafka topic, and consumes them from the topic
//! with rdkafka while the job runs.
//!
//! ```sh
//! cargo run --example consume_alerts                              # a broker of its own
//! cargo run --example consume_alerts -- --brokers HOST:PORT       # a Kafka cluster
//! ```
//!
//! The job is the alert node of `dataflows/icu-alerting.toml` (NEWS2, desaturation, tachycardia)
//! over 20,000 readings of the built-in generator's bedside-monitor feed, with a `kafka` sink
//! into the topic `alert-events`. vitalflow's embedded broker (`brokers = "embedded"`) lives only
//! as long as a run, so without `--brokers` the example starts the same kind of broker,
//! librdkafka's mock cluster, itself, and passes its address to the job as the sink's brokers.
//! With `--brokers`, the topic must exist; only the alerts of this run are read.
//!
//! Each alert event consumed is printed as its event type, rule, level and patient. Alert events
//! hold no PHI: the patient is a keyed pseudonym (a random key per run here), event times are
//! date-shifted. The example stops once the job has ended and every alert it sent is read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use vitalflow_engine::{Job, RunOptions, run};

const TOPIC: &str = "alert-events";
const TIMEOUT: Duration = Duration::from_secs(10);

/// `${ALERT_BROKERS}` is filled in by `Job::parse`'s variable lookup.
const JOB: &str = r#"
[job]
name = "consume-alerts"
workers = 2
batch-size = 2000

[sources.monitors]
kind = "generator"
format = "flat"
seed = 42
patients = 100
count = 20000

[operators.icu-alerts]
kind = "alert"
inputs = ["monitors"]
ward = "ward"
freshness = "15m"
resolve-after = "10m"
suppress-for = "30m"
key = "ephemeral"

[operators.icu-alerts.news2]
respiration-rate = "rr"
spo2 = "spo2"
systolic = "sbp"
pulse = "hr"
temperature = "temp"
raise-at = "medium"

[operators.icu-alerts.rules.desaturation]
when = "spo2 < 90"
for = "2m"
level = "high"

[operators.icu-alerts.rules.tachycardia]
when = "hr > 130"
level = "medium"

[sinks.alert-events]
kind = "kafka"
inputs = ["icu-alerts"]
brokers = "${ALERT_BROKERS}"
topic = "alert-events"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["icu-alerts.dead-letter"]
"#;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--brokers"), Some(brokers)) => Some(brokers),
        _ => bail!("usage: consume_alerts [--brokers HOST:PORT]"),
    };
    // Kept until the end: dropping it stops the broker.
    let mut local_broker = None;
    let brokers = match brokers {
        Some(brokers) => brokers,
        None => {
            let cluster = MockCluster::new(1).context("starting a local Kafka broker")?;
            cluster
                .create_topic(TOPIC, 4, 1)
                .with_context(|| format!("creating the topic `{TOPIC}`"))?;
            let address = cluster.bootstrap_servers();
            eprintln!("local Kafka broker at {address}");
            local_broker = Some(cluster);
            address
        }
    };

    let variables = |name: &str| (name == "ALERT_BROKERS").then(|| brokers.clone());
    let job = Job::parse(Path::new("consume-alerts.toml"), JOB.to_owned(), &variables)
        .context("parsing the alerting job")?;

    // Read each partition from its end as of now: the alerts of this run.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "vitalflow-consume-alerts")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the Kafka consumer")?;
    let mut next = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions(&consumer, &brokers)? {
        let (_, end) = consumer
            .fetch_watermarks(TOPIC, partition, TIMEOUT)
            .with_context(|| format!("reading the end of `{TOPIC}` partition {partition}"))?;
        assignment.add_partition_offset(TOPIC, partition, Offset::Offset(end))?;
        next.insert(partition, end);
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("assigning the partitions of `{TOPIC}`"))?;

    let options = RunOptions {
        out: Some(vitalflow_examples::temp_out(&job.name)),
        // The folder holds this example's previous run: replace it.
        overwrite: true,
        observer: Some(Arc::new(vitalflow_examples::Messages)),
        ..RunOptions::default()
    };
    let job_thread = std::thread::spawn(move || run(&job, &options));

    // Poll while the job runs.
    let mut consumed = 0_u64;
    while !job_thread.is_finished() {
        consume(&consumer, &mut next, &mut consumed)?;
    }
    let summary = job_thread
        .join()
        .map_err(|_| anyhow!("the job's thread panicked"))?
        .context("running the alerting job")?;

    // The job has ended, and the broker acknowledged every alert it sent: read on to the ends
    // of the partitions.
    let mut ends = BTreeMap::new();
    for &partition in next.keys() {
        let (_, end) = consumer
            .fetch_watermarks(TOPIC, partition, TIMEOUT)
            .with_context(|| format!("reading the end of `{TOPIC}` partition {partition}"))?;
        ends.insert(partition, end);
    }
    let deadline = Instant::now() + TIMEOUT;
    while ends.iter().any(|(p, end)| next.get(p) < Some(end)) {
        if Instant::now() > deadline {
            bail!("the alert events of `{TOPIC}` were not all read within {TIMEOUT:?}");
        }
        consume(&consumer, &mut next, &mut consumed)?;
    }

    vitalflow_examples::print_summary(&summary);
    let sent = summary
        .nodes
        .iter()
        .find(|n| n.name == TOPIC)
        .map_or(0, |n| n.records_out);
    println!("consumed {consumed} alert event(s) from `{TOPIC}` at {brokers}; the job sent {sent}");
    drop(local_broker);
    Ok(())
}

/// The partitions of the topic.
fn partitions(consumer: &BaseConsumer, brokers: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(TOPIC), TIMEOUT)
        .with_context(|| format!("reading the metadata of `{TOPIC}` at {brokers}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == TOPIC && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("the topic `{TOPIC}` does not exist at {brokers}: create it before the run");
    }
    Ok(partitions)
}

/// Polls once (up to 100 ms); prints the alert event that came, if any.
fn consume(
    consumer: &BaseConsumer,
    next: &mut BTreeMap<i32, i64>,
    consumed: &mut u64,
) -> anyhow::Result<()> {
    let Some(message) = consumer.poll(Duration::from_millis(100)) else {
        return Ok(());
    };
    let message = message.context("consuming alert events")?;
    let at = || {
        format!(
            "`{TOPIC}` partition {} offset {}",
            message.partition(),
            message.offset()
        )
    };
    let event: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default())
        .with_context(|| format!("the record at {} is not JSON", at()))?;
    // The alert event's own fields only; none of them is PHI.
    let field = |pointer: &str| event.pointer(pointer).and_then(serde_json::Value::as_str);
    let (Some(kind), Some(rule), Some(level), Some(patient)) = (
        field("/metadata/eventType"),
        field("/payload/rule"),
        field("/payload/level"),
        field("/payload/patient"),
    ) else {
        bail!("the record at {} is not an alert event", at());
    };
    let kind = kind.rsplit('.').next().unwrap_or(kind);
    println!("alert {kind:<9} {rule:<13} {level:<11} patient {patient}");
    next.insert(message.partition(), message.offset() + 1);
    *consumed += 1;
    Ok(())
}
