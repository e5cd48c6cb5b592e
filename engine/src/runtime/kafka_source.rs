//! The Kafka source operator: reads the partitions a worker owns (`partition % workers == worker`),
//! stamps each record with its coarsened event time, and holds a capability at the watermark: the
//! minimum, over the worker's partitions that are not idle, of the latest event time seen minus the
//! allowed out-of-orderness (a partition is idle when it has had no record for the idle timeout and
//! the broker has none after the last one read). Records behind the watermark (late) are stamped
//! with the watermark, and counted (the run summary prints how many). Every record emitted is
//! logged by partition and offset in the [`PositionLog`], from which checkpoints compute where a
//! restart resumes.
//!
//! Workers are kept together in event time (watermark alignment): a worker whose watermark is
//! more than `max_drift` ahead of the slowest worker's progress stops reading until the others
//! catch up. Timely does not hold workers together, and the operators that wait for every worker
//! to pass a time (windows, the alert monitor, the audit) hold the leading worker's records
//! meanwhile: during a catch-up (a backlog after an outage) that is as much of the backlog as
//! the leading worker can read before the slowest one is done. Replaying 6,000,000 readings of
//! the `icu-alerting` job from 3 partitions on 2 workers peaked at 984-1,256 MB resident without
//! the limit and at 715-760 MB with it (1 minute), and took 31.6-36.9 s against 27.0-28.2 s
//! (docs/job-files.md has the figures, and what the limit costs where nothing waits).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::{Capability, Probe as _, probe::Handle as ProbeHandle};
use timely::scheduling::{Activator, SyncActivator};
use vitalflow_connectors::kafka::reader::{Poll, Polled};
use vitalflow_connectors::kafka::{ClientSettings, KafkaError, PartitionReader};
use vitalflow_model::envelope::Counts;
use vitalflow_model::{RawFormat, RawRecord, Time};
use vitalflow_operators::decode::Decoder;

use super::checkpoint::{PartitionResume, PositionLog, SourceResume};
use super::error::{Fault, RunFailure};
use super::metrics::{Failure, NodeCounters};
use super::ops::VecStream;
use super::progress::{PartitionOffsets, SourceOffsets};

/// Records emitted per activation, so a source never holds its worker for long.
const CHUNK: usize = 4096;
/// `stop = "end"`: how long a partition at its end must stay quiet before it counts as read
/// (some brokers report a high watermark before every record below it can be fetched).
const END_QUIET: Duration = Duration::from_millis(100);
/// How often an idle source looks at its partitions' idleness and the metadata (arrivals wake
/// it at once).
const TICK: Duration = Duration::from_millis(20);
/// How often a worker looks for new partitions of its topic.
const METADATA_INTERVAL: Duration = Duration::from_secs(5);
/// How long one look at the topic's metadata may hold the worker (the operators sharing it
/// wait meanwhile).
const METADATA_ATTEMPT: Duration = Duration::from_secs(1);
/// How long a source keeps looking its topic up at the start before it fails the job; a
/// graceful stop ends the looking at once.
const METADATA_AT_START: Duration = Duration::from_secs(10);
/// How often the client reports where its partitions end (it does while polled): what a
/// partition's lag is measured against.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a worker that is `max_drift` ahead waits before it looks again (a Kafka-only job
/// on 2 workers read 2,000,000 records in 2.78-2.98 s with 100 µs, 3.12-3.74 s with 500 µs).
const BEHIND_TICK: Duration = Duration::from_micros(100);

/// Where a record's event time comes from.
#[derive(Clone)]
pub enum EventTime {
    /// The envelope's `metadata.timestamp`.
    Envelope,
    /// A timestamp field of the declared schema (a decoder of that one field).
    Field(Arc<Decoder>),
    /// The Kafka record's timestamp.
    Kafka,
}

/// A Kafka source resolved for running.
pub struct KafkaSource {
    /// The source node.
    pub name: String,
    /// Whose fault the source's failures are: its broker's, or vitalflow's for the embedded one.
    pub fault: Fault,
    /// Set to stop reading (a graceful stop): the source finishes at its next activation.
    pub stop: Arc<AtomicBool>,
    /// Client settings (brokers resolved: never `embedded`).
    pub settings: ClientSettings,
    /// The topic.
    pub topic: String,
    /// The group offsets are committed under.
    pub group_id: String,
    /// How ingestion parses the records.
    pub format: RawFormat,
    /// CSV column names.
    pub header: Option<Vec<String>>,
    /// Where event time comes from.
    pub time: EventTime,
    /// Milliseconds per dataflow timestamp.
    pub granularity_ms: u64,
    /// Allowed lateness, in dataflow timestamps.
    pub out_of_orderness: u64,
    /// When a silent partition stops holding the watermark.
    pub idle_timeout: Duration,
    /// How far (dataflow timestamps) a worker's watermark may run ahead of the slowest
    /// worker's progress on this source before the worker stops reading (`None`: no limit).
    pub max_drift: Option<Time>,
    /// Stop at the partitions' end as of the start.
    pub stop_at_end: bool,
    /// Records without a payload are tombstones (the source is a join's table): they are
    /// passed on as the key and the record's timestamp.
    pub tombstones: bool,
    /// Where to resume, from the last checkpoint.
    pub resume: Option<SourceResume>,
    /// The highest watermark any worker of this process reached on this source (the run
    /// summary reports it).
    pub watermark: Arc<AtomicU64>,
    /// The highest watermark any Kafka source of the job reached in this process: a source
    /// whose partitions are all idle, or that has none, follows it.
    pub job_watermark: Arc<AtomicU64>,
    /// What every worker emitted, for checkpoints.
    pub log: Arc<Mutex<PositionLog>>,
    /// Where reading is in each partition and where it ends, for progress snapshots.
    pub offsets: Arc<SourceOffsets>,
    /// Set while the embedded broker's live feed is producing: `stop = "end"` reads to the end
    /// the partitions have once it is done.
    pub feeding: Option<Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(serde::Deserialize)]
struct EnvelopeTime {
    metadata: MetadataTime,
}
#[derive(serde::Deserialize)]
struct MetadataTime {
    timestamp: Stamp,
}

/// `metadata.timestamp` as ingestion takes it: an RFC 3339 string or epoch milliseconds. Read
/// by a visitor of its own: an untagged enum would buffer every value before trying each form.
enum Stamp {
    Text(chrono::DateTime<chrono::Utc>),
    Millis(i64),
}

impl<'de> serde::Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StampVisitor;
        impl serde::de::Visitor<'_> for StampVisitor {
            type Value = Stamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 date-time or epoch milliseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Stamp, E> {
                v.parse().map(Stamp::Text).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Stamp, E> {
                Ok(Stamp::Millis(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Stamp, E> {
                i64::try_from(v).map(Stamp::Millis).map_err(E::custom)
            }
        }
        d.deserialize_any(StampVisitor)
    }
}

impl Stamp {
    /// Milliseconds since the Unix epoch, if within the range of a date-time.
    fn ms(&self) -> Option<i64> {
        match self {
            Self::Text(t) => Some(t.timestamp_millis()),
            Self::Millis(ms) => chrono::DateTime::from_timestamp_millis(*ms).map(|_| *ms),
        }
    }
}

/// An envelope's `metadata.timestamp` in milliseconds. Envelopes put their metadata first, so
/// reading stops there instead of scanning the payload (ingestion parses and checks the whole
/// record later). Anything unusual (escaped keys, metadata after the payload) takes the full
/// parse.
fn envelope_ms(payload: &[u8]) -> Option<i64> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

    /// Looks for `path` (an object's key, then a key of that value, ...) and stops reading where
    /// it found it; the caller ignores the error that leaves behind.
    struct Find<'a> {
        path: &'static [&'static str],
        found: &'a mut Option<i64>,
    }
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an envelope")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let Some((want, rest)) = self.path.split_first() else {
                return Ok(());
            };
            while let Some(key) = map.next_key::<&str>()? {
                if key != *want {
                    map.next_value::<IgnoredAny>()?;
                } else if rest.is_empty() {
                    let t: Stamp = map.next_value()?;
                    *self.found = t.ms();
                    return Ok(());
                } else {
                    return map.next_value_seed(Find {
                        path: rest,
                        found: self.found,
                    });
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Find<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(payload);
    let _ = Find {
        path: &["metadata", "timestamp"],
        found: &mut found,
    }
    .deserialize(&mut de);
    found.or_else(|| {
        serde_json::from_slice::<EnvelopeTime>(payload)
            .ok()
            .and_then(|e| e.metadata.timestamp.ms())
    })
}

impl KafkaSource {
    /// Whether a live feed is still producing into the topic.
    fn is_feeding(&self) -> bool {
        self.feeding
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// The event time of a record, in milliseconds.
    fn event_ms(&self, payload: &[u8], kafka_ms: Option<i64>) -> Option<i64> {
        match &self.time {
            EventTime::Kafka => kafka_ms,
            EventTime::Envelope => envelope_ms(payload),
            EventTime::Field(decoder) => {
                let row = match self.format {
                    RawFormat::Csv => decoder.decode_csv(self.header.as_deref(), payload, 0),
                    _ => decoder.decode_json(payload, 0),
                };
                match row.ok()?.values.first()? {
                    vitalflow_model::row::Value::Timestamp(ms) => Some(*ms),
                    _ => None,
                }
            }
        }
    }

    /// The dataflow timestamp of an event time.
    fn stamp(&self, ms: i64) -> Time {
        u64::try_from(ms.max(0)).unwrap_or(0) / self.granularity_ms
    }

    /// The time reading resumes at: the last checkpoint's, 0 without one.
    fn resume_time(&self) -> Time {
        self.resume.as_ref().map_or(0, |r| r.time)
    }
}

/// One owned partition's state on a worker.
struct Partition {
    /// Latest event time seen (dataflow timestamp).
    max_seen: Option<Time>,
    /// When the last record arrived.
    last_record: Instant,
    /// When the broker was last asked whether this silent partition has records after `next`.
    asked_end: Option<Instant>,
    /// When the broker last said it had none (or could not tell).
    empty_at: Option<Instant>,
    /// Offset after the last record emitted.
    next: i64,
    /// Whether `next` is known: a record was read, or reading resumes from a checkpoint.
    positioned: bool,
    /// Stop-at-end: the offset to stop at.
    end: Option<i64>,
    /// The partition's first offset on the broker, as last heard (where reading starts without
    /// a checkpoint).
    log_start: Option<i64>,
    /// The offset after the partition's last record on the broker, as last heard.
    broker_end: Option<i64>,
    /// Where progress snapshots read the position and the end.
    offsets: Arc<PartitionOffsets>,
    /// Replay after a restart: which records read again are in the kept files already (they are
    /// skipped; see [`PartitionResume::durable`]).
    replay: Option<PartitionResume>,
    /// After a restart: the offset reading must start at, until a record at or before it came.
    resume_from: Option<i64>,
    /// How far back the last re-seek went (some brokers answer a fetch from the middle of a
    /// record batch with the next batch: reading from further back finds the batch start).
    rewound: i64,
    /// Stop-at-end: the end the client's first statistics gave (taken from fetch answers).
    /// Some brokers answer the question "where does the partition end" with the start of its
    /// last record batch plus one, short of its end; where the client sends statistics, a
    /// partition ends only once read to this end too.
    stats_end: Option<i64>,
    /// Whether the client sends statistics (the settings leave `statistics.interval.ms` to
    /// vitalflow).
    statistics: bool,
}

/// What a polled record is to its partition (see [`Partition::admit`]).
enum Admit {
    /// Next to read: it is emitted (unless durable already).
    Read,
    /// Before the resume point: durable already (a re-seek went back).
    Before,
    /// After the resume point: the broker skipped records after the seek, and reading goes
    /// back to `back`.
    Rewind {
        /// The resume point.
        from: i64,
        /// Where reading goes on from.
        back: i64,
    },
    /// A record delivered again (some brokers repeat record batches): each offset is
    /// processed once.
    Again,
}

impl Partition {
    /// The next offset to read, if known: after the last record read, where reading resumed,
    /// or the partition's first offset.
    fn position(&self) -> Option<i64> {
        if self.positioned {
            Some(self.next)
        } else {
            self.log_start
        }
    }

    /// Whether the partition still has records to read before its end (`stop = "end"`).
    fn before_end(&self) -> bool {
        self.end.is_none_or(|e| self.next < e)
    }

    /// `stop = "end"`: whether the partition reached its end and stayed quiet since.
    fn read_to_end(&self) -> bool {
        self.end.is_some_and(|e| self.next >= e)
            && self.last_record.elapsed() >= END_QUIET
            && (!self.statistics || self.stats_end.is_some_and(|s| self.next >= s))
    }

    /// What the record at `offset` is to the partition; a rewind is remembered.
    fn admit(&mut self, offset: i64) -> Admit {
        if let Some(from) = self.resume_from {
            if offset < from {
                return Admit::Before;
            }
            if offset > from && self.rewound < from {
                self.rewound = (self.rewound * 4).max(1_000).min(from);
                let back = from - self.rewound;
                return Admit::Rewind { from, back };
            }
            // At the resume point (or the records before it are gone for good).
            self.resume_from = None;
        } else if offset < self.next {
            return Admit::Again;
        }
        Admit::Read
    }

    /// Takes a record's event time into the latest seen; whether it raised it.
    fn see(&mut self, event: Option<Time>) -> bool {
        let Some(t) = event else { return false };
        let raised = self.max_seen.is_none_or(|s| t > s);
        self.max_seen = Some(self.max_seen.map_or(t, |s| s.max(t)));
        raised
    }
}

/// The source's output handle in an activation.
type Output<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<RawRecord>>>;

/// The Kafka source on this worker.
pub fn kafka<'s>(
    scope: Scope<'s, Time>,
    source_plan: Arc<KafkaSource>,
    counters: Arc<NodeCounters>,
    count_records: bool,
    failure: Failure,
) -> VecStream<'s, RawRecord> {
    let name = source_plan.name.clone();
    // The source's progress over all workers: the oldest time a worker may still emit records
    // at, or that a worker's records wait at before the next operator takes them.
    let progress = ProbeHandle::<Time>::new();
    let slowest = progress.clone();
    source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(scope, &name, move |cap, info| {
        let wake = scope.worker().sync_activator_for(info.address.to_vec());
        let activator = scope.activator_for(info.address);
        let plan = source_plan;
        let start = plan.resume_time();
        let mut cap = Some(cap);
        if let Some(c) = cap.as_mut()
            && start > 0
        {
            c.downgrade(&start);
        }
        let reader = open_reader(&plan, wake, &failure);
        let mut state = SourceState::new(
            plan,
            scope,
            activator,
            slowest,
            counters,
            count_records,
            failure,
        );
        move |output| {
            let (Some(reader), Some(c)) = (reader.as_ref(), cap.as_mut()) else {
                cap = None;
                return;
            };
            if state.activate(reader, c, output).is_break() {
                cap = None;
            }
        }
    })
    .probe_with(&progress)
}

/// Opens the worker's reader of the topic. Records arriving into its empty queue schedule the
/// source at once (`wake`). `None`, with the job failed, when the client cannot be made.
fn open_reader(
    plan: &KafkaSource,
    wake: SyncActivator,
    failure: &Failure,
) -> Option<PartitionReader> {
    match PartitionReader::with_broker_offsets(
        &plan.settings,
        &plan.topic,
        &plan.group_id,
        STATISTICS_INTERVAL,
    ) {
        Ok(mut r) => {
            r.on_ready(move || {
                let _ = wake.activate();
            });
            Some(r)
        }
        Err(e) => {
            failure.fail(RunFailure::at_source(&plan.name, plan.fault, e));
            None
        }
    }
}

/// The Kafka source's state on one worker, kept between activations. The operator holds the
/// reader and the capability, and hands them to [`SourceState::activate`].
struct SourceState {
    /// The source.
    plan: Arc<KafkaSource>,
    /// This worker.
    index: usize,
    /// The number of workers.
    peers: usize,
    /// Schedules the source again.
    activator: Activator,
    /// The source's progress over all workers (see `max_drift`).
    slowest: ProbeHandle<Time>,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// Whether the source counts its records (it does not when it decodes them into rows).
    count_records: bool,
    /// Where the job's failure is reported.
    failure: Failure,
    /// The time reading resumes at (0 without a checkpoint).
    start: Time,
    /// Asks the broker whether silent partitions have records waiting (see [`ask_broker`]);
    /// `None` when its thread could not be started.
    ask: Option<std::sync::mpsc::Sender<(i32, i64, Instant)>>,
    /// The broker's answers: (partition, when asked, nothing waiting).
    answers: std::sync::mpsc::Receiver<(i32, Instant, bool)>,
    /// The partitions this worker reads.
    owned: BTreeMap<i32, Partition>,
    /// How many partitions the topic had at the last look.
    known_partitions: i32,
    /// When the topic's partitions were last looked up.
    last_metadata: Option<Instant>,
    /// When the source first looked its topic up.
    first_lookup: Option<Instant>,
    /// When the source started on this worker.
    started: Instant,
    /// Records polled since the start (for the end-of-reading message).
    polled_total: u64,
    /// Records delivered again and skipped.
    redelivered: u64,
    /// Whether redelivery has been warned about.
    warned_redelivery: bool,
    /// Records emitted since the start.
    emitted_total: u64,
    /// Since when the worker has been too far ahead to read (see `max_drift`).
    held_since: Option<Instant>,
}

/// What one activation read: its records by dataflow timestamp, and what it counted.
struct Batch {
    /// The capability's time while reading.
    current: Time,
    /// How far this worker's watermark may go (see `max_drift`); `None`: no limit.
    limit: Option<Time>,
    /// When the records were polled: one clock reading per activation, records polled now
    /// arrived by now.
    polled_at: Instant,
    /// `polled_at` as the records' arrival time (µs since the epoch).
    arrival_us: u64,
    /// Whether reading stopped because the watermark passed the limit.
    held: bool,
    /// Records polled (emitted or not).
    polled: usize,
    /// The records to emit, by dataflow timestamp.
    records: BTreeMap<Time, Vec<RawRecord>>,
    /// Records emitted.
    emitted: u64,
    /// Their bytes.
    bytes: u64,
    /// Those behind the watermark already emitted (late).
    late: u64,
}

impl Batch {
    /// An activation's reading, with the capability at `current`; `held` when the worker is
    /// too far ahead to read at all.
    fn new(current: Time, limit: Option<Time>, held: bool) -> Self {
        Self {
            current,
            limit,
            polled_at: Instant::now(),
            arrival_us: vitalflow_model::now_us(),
            held,
            polled: 0,
            records: BTreeMap::new(),
            emitted: 0,
            bytes: 0,
            late: 0,
        }
    }

    /// Whether `watermark` is past the limit.
    fn ahead(&self, watermark: Time) -> bool {
        self.limit.is_some_and(|l| watermark > l)
    }
}

impl SourceState {
    /// The state of a worker's source before its first activation; starts the thread that
    /// asks the broker about silent partitions.
    fn new(
        plan: Arc<KafkaSource>,
        scope: Scope<'_, Time>,
        activator: Activator,
        slowest: ProbeHandle<Time>,
        counters: Arc<NodeCounters>,
        count_records: bool,
        failure: Failure,
    ) -> Self {
        let index = scope.index();
        // Whether silent partitions have records waiting: asked of the broker on a thread, as
        // (partition, next offset to read, when asked); answered (partition, when asked, nothing
        // waiting).
        let (answer, answers) = std::sync::mpsc::channel::<(i32, Instant, bool)>();
        let ask = match ask_broker(&plan, index, answer) {
            Ok(ask) => Some(ask),
            Err(e) => {
                failure.fail(RunFailure::at_source(&plan.name, plan.fault, e));
                None
            }
        };
        Self {
            start: plan.resume_time(),
            plan,
            index,
            peers: scope.peers(),
            activator,
            slowest,
            counters,
            count_records,
            failure,
            ask,
            answers,
            owned: BTreeMap::new(),
            known_partitions: 0,
            last_metadata: None,
            first_lookup: None,
            started: Instant::now(),
            polled_total: 0,
            redelivered: 0,
            warned_redelivery: false,
            emitted_total: 0,
            held_since: None,
        }
    }

    /// Fails the job with `e`: the source stops.
    fn fail(&self, e: impl std::fmt::Display) -> ControlFlow<()> {
        self.failure
            .fail(RunFailure::at_source(&self.plan.name, self.plan.fault, e));
        ControlFlow::Break(())
    }

    /// One activation: reads what the worker may, emits it, and moves the capability to the
    /// watermark. `Break` when the source is done (read to its end, or failed): the operator
    /// drops its capability.
    fn activate(
        &mut self,
        reader: &PartitionReader,
        cap: &mut Capability<Time>,
        output: &mut Output<'_>,
    ) -> ControlFlow<()> {
        if self.plan.stop.load(Ordering::SeqCst) {
            tracing::info!(source = %self.plan.name, worker = self.index, "stopping: reading no more");
            return ControlFlow::Break(());
        }
        self.refresh_partitions(reader)?;
        if self.known_partitions == 0 {
            // The topic has not been looked up yet: nothing to read, and no watermark to move.
            self.activator.activate_after(TICK);
            return ControlFlow::Continue(());
        }
        // Watermark alignment: the furthest this worker's watermark may go.
        let limit = self.plan.max_drift.and_then(|drift| {
            self.slowest
                .with_frontier(|f| f.iter().min().map(|t| t.saturating_add(drift)))
        });
        // Too far ahead already: no reading, and the watermark stays (the partitions are not
        // idle, only unread).
        let waiting = limit.is_some_and(|l| *cap.time() > l);
        self.wait(waiting);
        let batch = self.poll(reader, *cap.time(), limit, waiting);
        let (held, polled) = (batch.held, batch.polled);
        self.emit(batch, cap, output);
        let read_to_end = self.stop_at_end(reader);
        self.publish(reader);
        read_to_end?;
        if !waiting {
            self.ask_idle();
        }
        self.advance(cap, waiting);
        if held {
            self.activator.activate_after(BEHIND_TICK);
        } else if polled >= CHUNK {
            self.activator.activate();
        } else {
            // Arrivals wake the source; this is for idle partitions and metadata.
            self.activator.activate_after(TICK);
        }
        ControlFlow::Continue(())
    }

    /// Picks up the worker's partitions, and any new ones, every `METADATA_INTERVAL`; at the
    /// start, looks again at every activation until the topic is found. `Break` when the topic
    /// cannot be looked up for `METADATA_AT_START`, or a partition cannot be adopted.
    fn refresh_partitions(&mut self, reader: &PartitionReader) -> ControlFlow<()> {
        if self
            .last_metadata
            .is_some_and(|t| t.elapsed() < METADATA_INTERVAL)
        {
            return ControlFlow::Continue(());
        }
        self.last_metadata = Some(Instant::now());
        let first = *self.first_lookup.get_or_insert_with(Instant::now);
        match reader.partition_count(METADATA_ATTEMPT) {
            Ok(n) if n > self.known_partitions => self.adopt(reader, n),
            Ok(_) => ControlFlow::Continue(()),
            // A topic the brokers do not have is not waited for.
            Err(e @ KafkaError::Setting { .. }) if self.known_partitions == 0 => self.fail(e),
            Err(e) if self.known_partitions == 0 && first.elapsed() >= METADATA_AT_START => {
                self.fail(e)
            }
            Err(_) if self.known_partitions == 0 => {
                self.last_metadata = None;
                ControlFlow::Continue(())
            }
            Err(e) => {
                tracing::warn!(source = %self.plan.name, error = %e, "metadata refresh failed");
                ControlFlow::Continue(())
            }
        }
    }

    /// The topic has `n` partitions, more than before: this worker's new ones are read.
    fn adopt(&mut self, reader: &PartitionReader, n: i32) -> ControlFlow<()> {
        let (index, peers) = (self.index, self.peers);
        let new: Vec<i32> = (self.known_partitions..n)
            .filter(|p| reader_of(*p, peers) == Some(index))
            .collect();
        // Stop-at-end reads the partitions there were at the start only.
        let adopt = !(self.plan.stop_at_end && self.known_partitions > 0);
        self.known_partitions = n;
        if adopt && !new.is_empty() {
            if let Err(e) = adopt_partitions(&self.plan, reader, &new, &mut self.owned) {
                return self.fail(e);
            }
            tracing::info!(source = %self.plan.name, worker = index, partitions = ?new, "reading partitions");
        }
        ControlFlow::Continue(())
    }

    /// Notes whether the worker is too far ahead to read (`waiting`). The time spent waiting
    /// does not count towards a partition's idleness.
    fn wait(&mut self, waiting: bool) {
        if waiting {
            self.held_since.get_or_insert_with(Instant::now);
        } else if let Some(since) = self.held_since.take() {
            let (waited, now) = (since.elapsed(), Instant::now());
            for part in self.owned.values_mut() {
                part.last_record = (part.last_record + waited).min(now);
            }
        }
    }

    /// Polls up to `CHUNK` records, unless `held` (too far ahead already), and logs every one
    /// it keeps in the position log.
    fn poll(
        &mut self,
        reader: &PartitionReader,
        current: Time,
        limit: Option<Time>,
        held: bool,
    ) -> Batch {
        let plan = Arc::clone(&self.plan);
        let mut log = plan
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = Batch::new(current, limit, held);
        while batch.polled < CHUNK && !batch.held {
            let m = match reader.poll(plan.tombstones) {
                Poll::Idle => break,
                Poll::End(_) => continue,
                Poll::Warning(w) => {
                    tracing::warn!(source = %plan.name, warning = %w, "Kafka client");
                    break;
                }
                Poll::Record(m) => m,
            };
            batch.polled += 1;
            self.polled_total += 1;
            self.take(reader, m, &mut log, &mut batch);
        }
        batch
    }

    /// One polled record: into the batch, stamped with its event time, unless its partition
    /// is not this worker's, it is not the next to read, or it is durable already.
    fn take(
        &mut self,
        reader: &PartitionReader,
        m: Polled,
        log: &mut PositionLog,
        batch: &mut Batch,
    ) {
        let plan = &*self.plan;
        let Some(part) = self.owned.get_mut(&m.partition) else {
            return;
        };
        match part.admit(m.offset) {
            Admit::Read => {}
            Admit::Before => return,
            Admit::Rewind { from, back } => {
                tracing::warn!(source = %plan.name, partition = m.partition, from, got = m.offset, back, "the broker skipped records after a seek; reading from further back");
                if let Err(e) = reader.seek(m.partition, back) {
                    self.failure
                        .fail(RunFailure::at_source(&plan.name, plan.fault, e));
                }
                return;
            }
            Admit::Again => {
                self.redelivered += 1;
                return;
            }
        }
        part.next = m.offset + 1;
        part.positioned = true;
        part.last_record = batch.polled_at;
        log.seen(m.partition, m.offset);
        let tombstone = plan.tombstones && m.payload.is_empty() && m.key.is_some();
        let event = if tombstone {
            m.timestamp_ms
        } else {
            plan.event_ms(&m.payload, m.timestamp_ms)
        }
        .map(|ms| plan.stamp(ms));
        if part
            .replay
            .as_ref()
            .is_some_and(|r| r.durable(self.start, m.offset, event))
        {
            // Durable before the checkpoint: already in the output.
            return;
        }
        // A record this far ahead may move the watermark past the limit: the worker reads on
        // only while it does not.
        if part.see(event)
            && let (Some(t), Some(l)) = (event, batch.limit)
            && t > l.saturating_add(plan.out_of_orderness)
        {
            let w = watermark(
                &self.owned,
                plan,
                batch.current,
                self.started,
                batch.polled_at,
            );
            batch.held = batch.ahead(w);
        }
        // Behind the watermark already emitted: late, stamped with the watermark.
        batch.late += u64::from(event.is_some_and(|t| t < batch.current));
        let time = event.map_or(batch.current, |t| t.max(batch.current));
        log.record(m.partition, m.offset, time, batch.current);
        batch.emitted += 1;
        self.emitted_total += 1;
        batch.bytes += m.payload.len() as u64;
        let record = raw_record(plan, m, tombstone, batch.arrival_us);
        batch.records.entry(time).or_default().push(record);
    }

    /// Shares every owned partition's position and end with progress snapshots, the ends (and
    /// first offsets) from the client's latest statistics if any came since the last time.
    fn publish(&mut self, reader: &PartitionReader) {
        if let Some(broker) = reader.broker_offsets() {
            for o in broker {
                if let Some(part) = self.owned.get_mut(&o.partition) {
                    part.log_start = o.start.or(part.log_start);
                    part.broker_end = o.end.or(part.broker_end);
                    part.stats_end = part.stats_end.or(o.end);
                }
            }
        }
        for part in self.owned.values() {
            part.offsets.set(part.position(), part.broker_end);
        }
    }

    /// Emits a batch's records at their times, and counts them.
    fn emit(&mut self, batch: Batch, cap: &Capability<Time>, output: &mut Output<'_>) {
        if self.redelivered > 0 && !self.warned_redelivery {
            self.warned_redelivery = true;
            tracing::warn!(source = %self.plan.name, worker = self.index, redelivered = self.redelivered, "the broker delivered records again; each offset is processed once");
        }
        for (time, records) in batch.records {
            let at = cap.delayed(&time);
            output.session(&at).give_iterator(records.into_iter());
        }
        self.counters.add_bytes(batch.bytes);
        if batch.late > 0 {
            self.counters.add_late(batch.late);
        }
        if batch.emitted > 0 && self.count_records {
            self.counters.add(&Counts {
                records_in: batch.emitted,
                records_out: batch.emitted,
                rejected: 0,
            });
        }
    }

    /// `stop = "end"`: learns the partitions' ends once a live feed is done (the end is where
    /// it stopped). `Break` once every owned partition reached its end and stayed quiet, or
    /// when an end cannot be learnt.
    fn stop_at_end(&mut self, reader: &PartitionReader) -> ControlFlow<()> {
        if !self.plan.stop_at_end {
            return ControlFlow::Continue(());
        }
        if !self.plan.is_feeding() {
            for (p, part) in self.owned.iter_mut().filter(|(_, part)| part.end.is_none()) {
                match reader.high_watermark(*p, Duration::from_secs(10)) {
                    Ok(end) => {
                        part.end = Some(end);
                        part.broker_end = Some(end);
                    }
                    Err(e) => {
                        self.failure.fail(RunFailure::at_source(
                            &self.plan.name,
                            self.plan.fault,
                            e,
                        ));
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        if self.known_partitions > 0 && self.owned.values().all(Partition::read_to_end) {
            tracing::debug!(source = %self.plan.name, worker = self.index, partitions = ?self.owned.iter().map(|(p, s)| (*p, s.next)).collect::<Vec<_>>(), polled_total = self.polled_total, emitted_total = self.emitted_total, redelivered = self.redelivered, "read to the end");
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// A partition silent for `idle_timeout` is idle only if the broker has nothing after it
    /// (see [`idle`]). During a catch-up a partition can go seconds without a record while the
    /// client fetches the others: counted idle, it let the watermark past its backlog, whose
    /// records were then late. The broker is asked on a thread of the source's own (an answer
    /// can take half a second), each partition at most once per timeout; a partition without
    /// an answer yet is not idle yet. This takes the answers that came, and asks again.
    fn ask_idle(&mut self) {
        let now = Instant::now();
        for (p, asked_at, empty) in self.answers.try_iter() {
            if let Some(part) = self.owned.get_mut(&p)
                && empty
            {
                part.empty_at = Some(asked_at);
            }
        }
        let plan = &*self.plan;
        for (p, part) in self.owned.iter_mut().filter(|(_, part)| {
            silent(part, plan, now)
                && part.before_end()
                && part
                    .asked_end
                    .is_none_or(|a| now.duration_since(a) >= plan.idle_timeout)
        }) {
            part.asked_end = Some(now);
            if let Some(ask) = self.ask.as_ref() {
                let _ = ask.send((*p, part.next, now));
            }
        }
    }

    /// Moves the capability to the watermark (held where it is while `waiting`), and shares it
    /// with the run summary and the job's other sources.
    fn advance(&self, cap: &mut Capability<Time>, waiting: bool) {
        let watermark = if waiting {
            *cap.time()
        } else {
            watermark(
                &self.owned,
                &self.plan,
                *cap.time(),
                self.started,
                Instant::now(),
            )
        };
        if watermark > *cap.time() {
            cap.downgrade(&watermark);
            self.plan.watermark.fetch_max(watermark, Ordering::Relaxed);
            self.plan
                .job_watermark
                .fetch_max(watermark, Ordering::Relaxed);
        }
    }
}

/// A polled record as the source emits it. A tombstone (`tombstone`) is passed on as its key
/// and the record's timestamp.
fn raw_record(plan: &KafkaSource, m: Polled, tombstone: bool, arrival_us: u64) -> RawRecord {
    RawRecord {
        source: plan.name.clone(),
        location: location(&plan.topic, m.partition, m.offset),
        sequence: sequence(m.partition, m.offset),
        format: plan.format,
        header: plan.header.clone(),
        context: tombstone
            .then(|| RawRecord::tombstone_context(m.timestamp_ms.unwrap_or_default())),
        bytes: if tombstone {
            m.key.unwrap_or_default()
        } else {
            m.payload
        },
        arrival_us,
    }
}

/// A thread that asks the broker whether partitions have records after an offset: it takes
/// (partition, next offset to read, when asked) and answers (partition, when asked, nothing
/// waiting), with a client of its own, until the sender is dropped. One offset more than read
/// is what a transaction's commit marker leaves: nothing waiting. A broker that cannot tell
/// counts as nothing waiting (the partition is idle, as without asking).
fn ask_broker(
    plan: &KafkaSource,
    worker: usize,
    answer: std::sync::mpsc::Sender<(i32, Instant, bool)>,
) -> Result<std::sync::mpsc::Sender<(i32, i64, Instant)>, String> {
    let reader = PartitionReader::new(&plan.settings, &plan.topic, &plan.group_id)
        .map_err(|e| e.to_string())?;
    let (ask, asked) = std::sync::mpsc::channel::<(i32, i64, Instant)>();
    let name = plan.name.clone();
    std::thread::Builder::new()
        .name(format!("kafka-idle-{name}-w{worker}"))
        .spawn(move || {
            for (p, next, at) in asked {
                let empty = match reader.watermarks(p, Duration::from_secs(5)) {
                    Ok((low, high)) => high - next.max(low) <= 1,
                    Err(e) => {
                        tracing::debug!(source = %name, partition = p, error = %e, "cannot tell whether a silent partition has records waiting; it counts as idle");
                        true
                    }
                };
                if answer.send((p, at, empty)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start its idle check: {e}"))?;
    Ok(ask)
}

/// Bits of a Kafka record's sequence number that hold its offset; its partition is above them.
const OFFSET_BITS: u32 = 40;

/// A Kafka record's sequence number in its source: partition and offset in one number.
fn sequence(partition: i32, offset: i64) -> u64 {
    (u64::try_from(partition).unwrap_or(0) << OFFSET_BITS) | u64::try_from(offset).unwrap_or(0)
}

/// Where a Kafka record came from, as records and alerts name it: `topic/partition@offset`.
fn location(
    topic: &str,
    partition: impl std::fmt::Display,
    offset: impl std::fmt::Display,
) -> String {
    format!("{topic}/{partition}@{offset}")
}

/// The location of the record of `topic` whose sequence number is `sequence` (see [`sequence`]).
pub(crate) fn location_of(topic: &str, sequence: u64) -> String {
    location(
        topic,
        sequence >> OFFSET_BITS,
        sequence & ((1 << OFFSET_BITS) - 1),
    )
}

/// Whether a partition has had no record for `idle_timeout`.
fn silent(p: &Partition, plan: &KafkaSource, now: Instant) -> bool {
    now.duration_since(p.last_record) >= plan.idle_timeout
}

/// Whether a partition no longer holds its worker's watermark: silent, and the broker said
/// since its last record that it had nothing after it.
fn idle(p: &Partition, plan: &KafkaSource, now: Instant) -> bool {
    silent(p, plan, now) && p.empty_at.is_some_and(|e| e > p.last_record)
}

/// The watermark of a worker's partitions at `now` (`current` is its capability's time):
/// partitions not idle hold it at their latest time minus lateness.
fn watermark(
    owned: &BTreeMap<i32, Partition>,
    plan: &KafkaSource,
    current: Time,
    started: Instant,
    now: Instant,
) -> Time {
    // Over the partitions not idle: whether there is one, whether one has no event time yet,
    // and their oldest latest time. (No allocation: the source may ask once per record.)
    let (mut any, mut unknown, mut oldest) = (false, false, None::<Time>);
    for p in owned
        .values()
        .filter(|p| p.before_end())
        .filter(|p| !idle(p, plan, now))
    {
        any = true;
        match p.max_seen {
            Some(m) => oldest = Some(oldest.map_or(m, |o| o.min(m))),
            None => unknown = true,
        }
    }
    if !any {
        // Every partition is idle (or the worker has none): the latest event time seen,
        // minus the lateness, or the job's watermark if that is further.
        let latest = owned
            .values()
            .filter_map(|p| p.max_seen)
            .max()
            .map_or(0, |m| m.saturating_sub(plan.out_of_orderness));
        if now.duration_since(started) >= plan.idle_timeout {
            latest.max(plan.job_watermark.load(Ordering::Relaxed))
        } else {
            current
        }
    } else if unknown {
        current
    } else {
        oldest.map_or(current, |m| m.saturating_sub(plan.out_of_orderness))
    }
}

/// The worker (of `peers`, over every process) that reads `partition`: `partition % peers`.
/// Checkpoints in a cluster ask each process for the partitions its workers read by this rule.
#[must_use]
pub fn reader_of(partition: i32, peers: usize) -> Option<usize> {
    usize::try_from(partition).ok().map(|p| p % peers.max(1))
}

fn adopt_partitions(
    plan: &KafkaSource,
    reader: &PartitionReader,
    new: &[i32],
    owned: &mut BTreeMap<i32, Partition>,
) -> Result<(), KafkaError> {
    let mut assign = Vec::with_capacity(new.len());
    for p in new {
        let resume = plan.resume.as_ref().and_then(|r| r.partitions.get(p));
        let from = resume.map(|r| r.from);
        let end = if plan.stop_at_end && !plan.is_feeding() {
            Some(reader.high_watermark(*p, Duration::from_secs(10))?)
        } else {
            None
        };
        let start_next = from.unwrap_or(0);
        tracing::debug!(source = %plan.name, partition = p, ?from, ?end, "adopting partition");
        owned.insert(
            *p,
            Partition {
                max_seen: None,
                last_record: Instant::now(),
                next: start_next,
                positioned: from.is_some(),
                end,
                log_start: None,
                broker_end: end,
                offsets: plan.offsets.partition(*p),
                replay: resume.cloned(),
                resume_from: from.filter(|f| *f > 0),
                rewound: 0,
                stats_end: None,
                statistics: !plan
                    .settings
                    .properties
                    .contains_key("statistics.interval.ms"),
                asked_end: None,
                empty_at: None,
            },
        );
        assign.push((*p, from));
    }
    reader.assign(&assign)
}

#[cfg(test)]
mod tests {
    use super::envelope_ms;

    #[test]
    fn envelope_time_is_read_wherever_the_metadata_is() {
        let ms = 1_767_258_000_123;
        let first = br#"{"metadata":{"id":"e1","timestamp":"2026-01-01T09:00:00.123Z"},"payload":{"x":[1,2,{"timestamp":"1999-01-01T00:00:00Z"}]}}"#;
        let last = br#"{"payload":{"metadata":{"timestamp":"1999-01-01T00:00:00Z"}},"metadata":{"timestamp":"2026-01-01T09:00:00.123Z"}}"#;
        let escaped = br#"{"p\u0061yload":1,"metadata":{"timestamp":"2026-01-01T09:00:00.123Z"}}"#;
        assert_eq!(envelope_ms(first), Some(ms));
        assert_eq!(envelope_ms(last), Some(ms));
        assert_eq!(envelope_ms(escaped), Some(ms));
        // Whatever follows the metadata is ingestion's to judge.
        assert_eq!(
            envelope_ms(br#"{"metadata":{"timestamp":"2026-01-01T09:00:00.123Z"},"payload":"#),
            Some(ms)
        );
        // Epoch milliseconds, as ingestion takes them.
        assert_eq!(
            envelope_ms(br#"{"metadata":{"timestamp":1767258000123},"payload":{}}"#),
            Some(ms)
        );
        for bad in [
            &b"not json"[..],
            br#"{"metadata":{"timestamp":"yesterday"}}"#,
            br#"{"metadata":{"timestamp":1.5}}"#,
            br#"{"metadata":{"timestamp":9223372036854775807}}"#,
            br#"{"payload":{}}"#,
            b"",
        ] {
            assert_eq!(envelope_ms(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
