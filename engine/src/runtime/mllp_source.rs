//! The MLLP source operator: on worker 0, starts the listener and reads its log into the
//! dataflow, in order, as records become durable.
//!
//! Each record is stamped with its arrival time in steps of `granularity`; arrival times never
//! go back along the log. The source holds its capability at the oldest time a record not yet
//! read can have: the writer's floor (no record stored from now on arrives before it), once
//! every durable record is read. So the dataflow's frontiers follow the clock while messages
//! arrive or not, and a sink writes a step's rows once the step is over.
//!
//! Checkpoints treat the log as a Kafka partition (number 0) whose offsets are the log's: every
//! record read is noted in the [`PositionLog`], a checkpoint says where a restarted run resumes
//! and which records read again are in the kept files already (see
//! [`super::checkpoint`]), and each checkpoint tells the writer how far the log is durable
//! downstream, which frees its older segments and bounds its backlog. A run killed at any moment
//! and started again writes every message acknowledged before the kill exactly once.
//!
//! On a graceful stop the listener stops accepting and answers what it handed to the writer;
//! once the listener and the writer have ended, the source reads the log to its end and drops
//! its capability.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::source;
use timely::scheduling::Activator;
use vitalflow_connectors::mllp::{self, Kind, Opened, Reader, Record, Running, Settings, Shared};
use vitalflow_model::envelope::Counts;
use vitalflow_model::{DeadLetter, RawFormat, RawRecord, Time};

use super::checkpoint::{PartitionResume, PositionLog, SourceResume};
use super::error::{Fault, RunFailure, System};
use super::metrics::{Failure, NodeCounters};
use super::ops::VecStream;

/// The topic name an MLLP source's checkpoint entries carry.
pub const TOPIC: &str = "mllp";

/// Records emitted per activation, so the source never holds its worker for long.
const CHUNK: usize = 1024;

/// How often the source looks at the clock, the stop flag and the writer when no record wakes
/// it.
const TICK: Duration = Duration::from_millis(20);

/// The socket and the log, until worker 0 starts serving them.
pub struct Parts {
    /// The bound socket.
    pub listener: std::net::TcpListener,
    /// The log, opened.
    pub opened: Opened,
    /// The listener's settings.
    pub settings: Settings,
}

/// An MLLP source resolved for running.
pub struct MllpSource {
    /// The source node.
    pub name: String,
    /// Milliseconds per dataflow timestamp.
    pub granularity_ms: u64,
    /// Set to stop (a graceful stop).
    pub stop: Arc<AtomicBool>,
    /// Where the last checkpoint resumes the source.
    pub resume: Option<SourceResume>,
    /// The first offset to read.
    pub from: u64,
    /// What the source emitted, for checkpoints.
    pub log: Arc<Mutex<PositionLog>>,
    /// The highest timestamp the source's capability reached (the run summary's watermark).
    pub watermark: Arc<AtomicU64>,
    /// The job's highest watermark.
    pub job_watermark: Arc<AtomicU64>,
    /// What the listener's writer publishes.
    pub shared: Arc<Shared>,
    /// The log's folder.
    pub dir: PathBuf,
    /// The socket, the log and the settings, taken by worker 0.
    pub parts: Mutex<Option<Parts>>,
}

impl MllpSource {
    /// The dataflow timestamp of an arrival time.
    fn stamp(&self, ms: i64) -> Time {
        u64::try_from(ms.max(0)).unwrap_or(0) / self.granularity_ms
    }
}

/// What the source emits before timely's `ok_err` splits it: messages, or rejected ones. (Both
/// are moved, never copied: the size of a dead letter in a `Result` costs nothing here.)
type Item = Result<RawRecord, DeadLetter>;

/// The source's output handle in an activation.
type Output<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<Item>>>;

/// The MLLP source: its messages (raw HL7 v2 records) and the messages it rejected.
#[allow(clippy::result_large_err)]
pub fn mllp<'s>(
    scope: Scope<'s, Time>,
    plan: Arc<MllpSource>,
    counters: Arc<NodeCounters>,
    failure: Failure,
) -> (VecStream<'s, RawRecord>, VecStream<'s, DeadLetter>) {
    let name = plan.name.clone();
    let stream =
        source::<_, CapacityContainerBuilder<Vec<Item>>, _, _>(scope, &name, move |cap, info| {
            let mut cap = (scope.index() == 0).then_some(cap);
            let mut state = None;
            if let Some(c) = cap.as_mut() {
                let wake = Mutex::new(scope.worker().sync_activator_for(info.address.to_vec()));
                let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    if let Ok(w) = wake.lock() {
                        let _ = w.activate();
                    }
                });
                let activator = scope.activator_for(info.address);
                state = State::start(plan, wake, activator, counters, failure);
                if let Some(s) = &state
                    && s.start > 0
                {
                    c.downgrade(&s.start);
                }
            }
            move |output| {
                let (Some(c), Some(s)) = (cap.as_mut(), state.as_mut()) else {
                    cap = None;
                    state = None;
                    return;
                };
                if s.activate(c, output).is_break() {
                    cap = None;
                    state = None;
                }
            }
        });
    stream.ok_err(|item| item)
}

/// The source's state on worker 0.
struct State {
    plan: Arc<MllpSource>,
    /// The listener and its writer.
    running: Running,
    /// Reads the log.
    reader: Reader,
    /// Where a resumed run's records read again are durable already.
    replay: Option<PartitionResume>,
    /// The timestamp reading resumes at (0 without a checkpoint).
    start: Time,
    activator: Activator,
    counters: Arc<NodeCounters>,
    failure: Failure,
    /// Whether the listener has been told to stop.
    stopping: bool,
}

impl State {
    /// Starts the listener; `None` after failing the job when it cannot.
    fn start(
        plan: Arc<MllpSource>,
        wake: Arc<dyn Fn() + Send + Sync>,
        activator: Activator,
        counters: Arc<NodeCounters>,
        failure: Failure,
    ) -> Option<Self> {
        let parts = plan.parts.lock().ok().and_then(|mut p| p.take());
        let Some(parts) = parts else {
            failure.fail(RunFailure::at_source(
                &plan.name,
                Fault::Internal,
                "its listener was started twice",
            ));
            return None;
        };
        let running = match mllp::start(
            parts.listener,
            parts.opened,
            parts.settings,
            Arc::clone(&plan.shared),
            wake,
        ) {
            Ok(r) => r,
            Err(e) => {
                failure.fail(RunFailure::at_source(
                    &plan.name,
                    Fault::Internal,
                    format!("cannot start its listener: {e}"),
                ));
                return None;
            }
        };
        let replay = plan
            .resume
            .as_ref()
            .and_then(|r| r.partitions.get(&0))
            .cloned();
        Some(Self {
            reader: Reader::new(&plan.dir, plan.from),
            start: plan.resume.as_ref().map_or(0, |r| r.time),
            replay,
            plan,
            running,
            activator,
            counters,
            failure,
            stopping: false,
        })
    }

    /// One activation: emits what became durable, moves the capability with the clock, and
    /// ends the source once a graceful stop has finished. `Break` when the source is done (or
    /// failed): the operator drops its capability.
    fn activate(&mut self, cap: &mut Capability<Time>, output: &mut Output<'_>) -> ControlFlow<()> {
        let plan = Arc::clone(&self.plan);
        if let Some(e) = plan.shared.failure() {
            self.failure.fail(RunFailure::at_source(
                &plan.name,
                Fault::External(System::FileSystem),
                format!("its log: {e}"),
            ));
            return ControlFlow::Break(());
        }
        if !self.stopping && plan.stop.load(Ordering::SeqCst) {
            tracing::info!(source = %plan.name, "stopping: the MLLP listener accepts no more messages");
            self.stopping = true;
            self.running.stop();
        }
        // Whether the listener and the writer are done: read before what is durable, which
        // is then final.
        let finished = self.stopping && self.running.finished();
        let floor = plan.shared.floor_ms.load(Ordering::SeqCst);
        let durable = plan.shared.durable.load(Ordering::SeqCst);
        let mut read = 0;
        let mut batch: BTreeMap<Time, Vec<Item>> = BTreeMap::new();
        let mut counts = (Counts::default(), 0u64, 0u64);
        {
            let mut log = plan
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while self.reader.next_offset() < durable && read < CHUNK {
                let record = match self.reader.read() {
                    Ok(r) => r,
                    Err(e) => {
                        self.failure.fail(RunFailure::at_source(
                            &plan.name,
                            Fault::External(System::FileSystem),
                            format!("its log: {e}"),
                        ));
                        return ControlFlow::Break(());
                    }
                };
                read += 1;
                let Ok(offset) = i64::try_from(record.offset) else {
                    continue;
                };
                log.seen(0, offset);
                let stamp = plan.stamp(record.arrival_ms);
                if self
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.durable(self.start, offset, Some(stamp)))
                {
                    // Durable before the checkpoint: in the kept files already.
                    continue;
                }
                let time = stamp.max(*cap.time());
                log.record(0, offset, time, *cap.time());
                counts.0.records_in += 1;
                counts.1 += record.bytes.len() as u64;
                let item = item(&plan.name, record);
                if item.is_ok() {
                    counts.0.records_out += 1;
                } else {
                    counts.0.rejected += 1;
                    counts.2 += 1;
                }
                batch.entry(time).or_default().push(item);
            }
        }
        for (time, items) in batch {
            let at = cap.delayed(&time);
            output.session(&at).give_iterator(items.into_iter());
        }
        self.counters.add(&counts.0);
        self.counters.add_bytes(counts.1);
        self.counters.add_dead_letters(counts.2);
        let caught_up = self.reader.next_offset() >= durable;
        if caught_up {
            // Every record not yet read arrives at or after the floor.
            let t = plan.stamp(floor);
            if t > *cap.time() {
                cap.downgrade(&t);
                plan.watermark.fetch_max(t, Ordering::Relaxed);
                plan.job_watermark.fetch_max(t, Ordering::Relaxed);
            }
            if finished {
                tracing::info!(source = %plan.name, next = self.reader.next_offset(), "read the MLLP log to its end");
                return ControlFlow::Break(());
            }
            self.activator.activate_after(TICK);
        } else {
            self.activator.activate();
        }
        ControlFlow::Continue(())
    }
}

/// A record of the log as the source emits it: a message as a raw HL7 v2 record, a rejected
/// one as a dead letter (its reason names the problem, never a value).
#[allow(clippy::result_large_err)]
fn item(source: &str, record: Record) -> Item {
    let arrival_us = u64::try_from(record.arrival_ms)
        .unwrap_or(0)
        .saturating_mul(1_000);
    match record.kind {
        Kind::Message => Ok(RawRecord {
            source: source.to_owned(),
            location: format!("{source}@{}", record.offset),
            sequence: record.offset,
            format: RawFormat::Hl7v2,
            header: None,
            context: None,
            bytes: record.bytes,
            arrival_us,
        }),
        Kind::Rejected => Err(DeadLetter {
            stage: source.to_owned(),
            source: source.to_owned(),
            location: format!("{source}@{} ({})", record.offset, record.peer),
            format: RawFormat::Hl7v2,
            reason: record.reason,
            bytes: record.bytes,
        }),
    }
}
