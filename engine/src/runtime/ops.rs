//! Generic timely operators the planner assembles: a stage with its three outputs, a rolling
//! sink that reports what it made durable, and small helpers.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::progress::frontier::MutableAntichain;
use timely::scheduling::Activator;
use vitalflow_connectors::Pace;
use vitalflow_model::envelope::{Counts, FileDigest};
use vitalflow_model::{DeadLetter, Time, batch_of};

use super::error::{Fault, RunFailure, System};
use super::metrics::{Failure, NodeCounters};
use crate::audit_trail::digests;

/// A stream of vectors of `D` at `Time`.
pub type VecStream<'s, D> = Stream<'s, Time, Vec<D>>;

/// What one stage did for one batch, on one worker, in one activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageStat {
    /// The batch.
    pub batch: u64,
    /// Records in, out, rejected.
    pub counts: Counts,
    /// Stage-specific detail to merge (the de-identification report), as JSON.
    #[serde(with = "vitalflow_model::wire::optional_json")]
    pub detail: Option<serde_json::Value>,
}

/// What a sink made durable: files renamed into place, covering these batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCommit {
    /// The sink node.
    pub sink: String,
    /// The batches whose rows the files hold.
    pub batches: Vec<u64>,
    /// The files, relative to the output folder.
    pub files: Vec<String>,
    /// The files' size and SHA-256 (the audit trail records them).
    #[serde(default)]
    pub digests: Vec<FileDigest>,
    /// Rows written.
    pub rows: u64,
    /// The first timestamp the files hold.
    pub first: Time,
    /// The last timestamp the files hold.
    pub last: Time,
}

/// Per-record logic of a stage: consumes one record, pushes outputs and dead letters.
pub trait StageLogic<I, O>: 'static {
    /// Processes one record.
    fn process(&mut self, record: I, out: &mut Vec<O>, dead: &mut Vec<DeadLetter>);
    /// Takes the stage-specific detail accumulated since the last call.
    fn take_detail(&mut self) -> Option<serde_json::Value> {
        None
    }
}

/// The outputs of a stage: records, dead letters, per-batch stats.
type StageStreams<'s, O> = (
    VecStream<'s, O>,
    VecStream<'s, DeadLetter>,
    VecStream<'s, StageStat>,
);

/// A stage operator: `logic` per record; outputs (records, dead letters, per-batch stats).
/// `counters` get every record in, the records out, the records rejected (a record with at least
/// one dead letter) and those dropped (neither output nor dead letter).
pub fn stage<'s, I, O, P, L>(
    input: VecStream<'s, I>,
    pact: P,
    name: &str,
    logic: L,
    counters: Arc<NodeCounters>,
) -> StageStreams<'s, O>
where
    I: Clone + Send + 'static,
    O: Clone + Send + 'static,
    P: ParallelizationContract<Time, Vec<I>>,
    L: StageLogic<I, O>,
{
    counted_stage(input, pact, name, logic, counters, true)
}

/// A stage that prepares the records of a node whose output is made later (window, join,
/// alert): as [`stage`], except that its outputs are not counted as the node's output, which
/// the node counts where it makes it.
pub fn prepare_stage<'s, I, O, P, L>(
    input: VecStream<'s, I>,
    pact: P,
    name: &str,
    logic: L,
    counters: Arc<NodeCounters>,
) -> StageStreams<'s, O>
where
    I: Clone + Send + 'static,
    O: Clone + Send + 'static,
    P: ParallelizationContract<Time, Vec<I>>,
    L: StageLogic<I, O>,
{
    counted_stage(input, pact, name, logic, counters, false)
}

fn counted_stage<'s, I, O, P, L>(
    input: VecStream<'s, I>,
    pact: P,
    name: &str,
    logic: L,
    counters: Arc<NodeCounters>,
    count_out: bool,
) -> StageStreams<'s, O>
where
    I: Clone + Send + 'static,
    O: Clone + Send + 'static,
    P: ParallelizationContract<Time, Vec<I>>,
    L: StageLogic<I, O>,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), input.scope());
    let mut input = builder.new_input(input, pact);
    let (out, out_stream) = builder.new_output::<Vec<O>>();
    let (dead, dead_stream) = builder.new_output::<Vec<DeadLetter>>();
    let (stats, stats_stream) = builder.new_output::<Vec<StageStat>>();
    let mut out = OutputBuilder::<_, CapacityContainerBuilder<Vec<O>>>::from(out);
    let mut dead = OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead);
    let mut stats = OutputBuilder::<_, CapacityContainerBuilder<Vec<StageStat>>>::from(stats);
    builder.build(move |_caps| {
        let mut stage = StageState {
            logic,
            produced: Vec::new(),
            rejected: Vec::new(),
            counters,
            count_out,
        };
        move |_frontiers| {
            let mut out = out.activate();
            let mut dead = dead.activate();
            let mut stats = stats.activate();
            input.for_each_stamp(|cap, data| {
                let Some(time) = cap.least().copied() else {
                    return;
                };
                let counts = stage.process(data);
                out.session(&cap).give_iterator(stage.produced.drain(..));
                dead.session(&cap).give_iterator(stage.rejected.drain(..));
                stats.session(&cap).give(StageStat {
                    batch: batch_of(time),
                    counts,
                    detail: stage.logic.take_detail(),
                });
            });
        }
    });
    (out_stream, dead_stream, stats_stream)
}

/// A stage operator's state on one worker: its logic, and what it made of the records of the
/// time it is processing.
struct StageState<L, O> {
    /// The per-record logic.
    logic: L,
    /// The records out.
    produced: Vec<O>,
    /// The dead letters.
    rejected: Vec<DeadLetter>,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// Whether the records out count as the node's output.
    count_out: bool,
}

impl<L, O> StageState<L, O> {
    /// Runs the logic over the batches of one time, into `produced` and `rejected`, and counts
    /// them: every record in, the records out (when they are the node's), those rejected (at
    /// least one dead letter) and those dropped (neither output nor dead letter). The batch's
    /// counts: records in, records out, dead letters.
    fn process<'a, I: 'a>(&mut self, data: impl Iterator<Item = &'a mut Vec<I>>) -> Counts
    where
        L: StageLogic<I, O>,
    {
        let mut records_in = 0u64;
        let (mut rejected_in, mut dropped_in) = (0u64, 0u64);
        for batch in data {
            records_in += batch.len() as u64;
            for record in batch.drain(..) {
                let before = (self.produced.len(), self.rejected.len());
                self.logic
                    .process(record, &mut self.produced, &mut self.rejected);
                if self.rejected.len() > before.1 {
                    rejected_in += 1;
                } else if self.produced.len() == before.0 {
                    dropped_in += 1;
                }
            }
        }
        let counts = Counts {
            records_in,
            records_out: self.produced.len() as u64,
            rejected: self.rejected.len() as u64,
        };
        self.counters.add(&Counts {
            records_in,
            records_out: if self.count_out {
                counts.records_out
            } else {
                0
            },
            rejected: rejected_in,
        });
        self.counters.add_dropped(dropped_in);
        self.counters.add_dead_letters(counts.rejected);
        counts
    }
}

/// Splits a stream of results into its values and its errors, moving each record to the one
/// stream it belongs to (a stream read twice has every batch cloned for the first reader: for a
/// join's output, a deep copy of every joined row).
pub fn split_results<'s, T: 'static, E: 'static>(
    results: VecStream<'s, Result<T, E>>,
) -> (VecStream<'s, T>, VecStream<'s, E>) {
    fork("SplitResults", results, |batch, values, errors| {
        for record in batch.drain(..) {
            match record {
                Ok(v) => values.push(v),
                Err(e) => errors.push(e),
            }
        }
    })
}

/// An operator with one input and two outputs, in the same worker: `split` moves each batch
/// of the input into the two (empty) vectors it is given, which go out as batches of their
/// own. Moving a whole batch with `std::mem::swap` passes it on without touching its records.
pub fn fork<'s, I, A, B, F>(
    name: &str,
    input: VecStream<'s, I>,
    mut split: F,
) -> (VecStream<'s, A>, VecStream<'s, B>)
where
    I: 'static,
    A: 'static,
    B: 'static,
    F: FnMut(&mut Vec<I>, &mut Vec<A>, &mut Vec<B>) + 'static,
{
    let (first, second, _) = fork3(name, input, move |batch, a, b, _: &mut Vec<()>| {
        split(batch, a, b);
    });
    (first, second)
}

/// An operator with one input and three outputs, as [`fork`]: `split` moves each batch of the
/// input into the three (empty) vectors it is given.
pub fn fork3<'s, I, A, B, C, F>(
    name: &str,
    input: VecStream<'s, I>,
    mut split: F,
) -> (VecStream<'s, A>, VecStream<'s, B>, VecStream<'s, C>)
where
    I: 'static,
    A: 'static,
    B: 'static,
    C: 'static,
    F: FnMut(&mut Vec<I>, &mut Vec<A>, &mut Vec<B>, &mut Vec<C>) + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), input.scope());
    let mut input = builder.new_input(input, Pipeline);
    let (first, first_stream) = builder.new_output::<Vec<A>>();
    let (second, second_stream) = builder.new_output::<Vec<B>>();
    let (third, third_stream) = builder.new_output::<Vec<C>>();
    let mut first = OutputBuilder::<_, CapacityContainerBuilder<Vec<A>>>::from(first);
    let mut second = OutputBuilder::<_, CapacityContainerBuilder<Vec<B>>>::from(second);
    let mut third = OutputBuilder::<_, CapacityContainerBuilder<Vec<C>>>::from(third);
    builder.build(move |_caps| {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        move |_frontiers| {
            let mut first = first.activate();
            let mut second = second.activate();
            let mut third = third.activate();
            input.for_each_stamp(|cap, data| {
                for batch in data {
                    split(batch, &mut a, &mut b, &mut c);
                    if !a.is_empty() {
                        first.session(&cap).give_container(&mut a);
                        a.clear();
                    }
                    if !b.is_empty() {
                        second.session(&cap).give_container(&mut b);
                        b.clear();
                    }
                    if !c.is_empty() {
                        third.session(&cap).give_container(&mut c);
                        c.clear();
                    }
                }
            });
        }
    });
    (first_stream, second_stream, third_stream)
}

/// What a sink's writer made durable in one write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The files, relative to the output folder.
    pub files: Vec<String>,
    /// Their size.
    pub bytes: u64,
    /// Their size and SHA-256 each (filled in by the writer thread).
    pub digests: Vec<FileDigest>,
}

/// Writes a sink's rows; returns the files made durable (relative to the output folder) and
/// their size.
pub trait SinkWriter<T>: 'static {
    /// Writes the rows of `parts`, in order, durably under names derived from `tag`. The rows
    /// come as the parts they were buffered in (one per completed time): joining them into one
    /// vector would copy every row on the worker. The writer advances `pace` as it goes (after
    /// each Arrow batch, or each line), which spreads the write over the span the sink gave it.
    ///
    /// # Errors
    /// A message naming the file that could not be written.
    fn write(&mut self, tag: &str, parts: &[Vec<T>], pace: &mut Pace) -> Result<Written, String>;

    /// The job's output folder, which the files written are relative to.
    fn out(&self) -> &Path;
}

/// The share of the time a write's rows took to gather that the write may be spread over
/// (see [`Pace`]), as its denominator: half, so that a writer that keeps up is done well before
/// the next roll falls due. In the harness's paced job (100,000 events/s, every sink of both
/// workers rolling every 5 s), writes at full speed put arrival → alert p99 at 43.6 ms, writes
/// spread over a quarter at 24.1 ms; on a busier machine, in runs one after the other, a
/// quarter gave 480-520 ms and half 260-450 ms.
const PACE_SHARE: u32 = 2;

/// When a rolling sink writes its buffered, completed rows.
#[derive(Clone, Copy, Debug)]
pub struct RollPolicy {
    /// Write once this many completed rows are buffered.
    pub rows: usize,
    /// Write at least this often while completed rows are buffered.
    pub interval: Duration,
}

/// A sink that buffers rows per time, and writes the rows of every completed time (the input
/// frontier has passed it) when the roll policy says so. It holds a capability for each buffered
/// time, so its output, one [`SinkCommit`] per write, tells downstream what is durable.
pub fn rolling_sink<'s, T, W>(
    input: VecStream<'s, T>,
    name: &str,
    worker: usize,
    policy: RollPolicy,
    writer: W,
    counters: Arc<NodeCounters>,
    failure: Failure,
) -> VecStream<'s, SinkCommit>
where
    T: Clone + Send + 'static,
    W: SinkWriter<T> + Send,
{
    let sink = name.to_owned();
    let scope = input.scope();
    let writer = WriterThread::start(&sink, worker, writer, &failure);
    input.unary_frontier::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
        Pipeline,
        name,
        move |_cap, info| {
            let mut state = RollingSink {
                sink,
                worker,
                policy,
                counters,
                failure,
                activator: scope.activator_for(info.address),
                writer,
                pending: BTreeMap::new(),
                in_flight: VecDeque::new(),
                last_write: Instant::now(),
            };
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    state.buffer(cap.retain_least(output.output_index()), data);
                });
                state.activate(frontier, output);
            }
        },
    )
}

/// Writes a rolling sink queues for its writer before a new one waits for the oldest to finish.
const MAX_IN_FLIGHT: usize = 1;

/// A write handed to a sink's writer thread: the times it holds, and what to commit.
struct InFlight {
    caps: Vec<Capability<Time>>,
    batches: Vec<u64>,
    rows: u64,
    first: Time,
    last: Time,
}

/// A rolling sink's writer thread. Files are written on a thread of the sink's own, so a write
/// (encoding, fsync) does not hold the worker: the operator keeps the written times'
/// capabilities until their write is back. Only a write falling due while the previous one is
/// still out waits for it. A write is spread over a share of the time its rows took to gather,
/// unless `hurry` is raised (a worker waits for it).
struct WriterThread<T> {
    /// Writes to do: the files' tag, the rows, the time to spread the write over.
    jobs: std::sync::mpsc::Sender<(String, Vec<Vec<T>>, Duration)>,
    /// The writes' results, in order: the files made durable, or what went wrong.
    done: std::sync::mpsc::Receiver<Result<Written, String>>,
    /// Raised when a worker waits for the writes: the writer stops spreading them.
    hurry: Arc<AtomicBool>,
}

impl<T: Send + 'static> WriterThread<T> {
    /// Starts the writer thread of `sink` on `worker`; a thread that cannot be started fails
    /// the job.
    fn start<W: SinkWriter<T> + Send>(
        sink: &str,
        worker: usize,
        mut writer: W,
        failure: &Failure,
    ) -> Self {
        let (jobs, todo) = std::sync::mpsc::channel::<(String, Vec<Vec<T>>, Duration)>();
        let (done_tx, done) = std::sync::mpsc::channel::<Result<Written, String>>();
        let hurry = Arc::new(AtomicBool::new(false));
        let hurry_writer = Arc::clone(&hurry);
        let spawned = std::thread::Builder::new()
            .name(format!("sink-{sink}-w{worker}"))
            .spawn(move || {
                for (tag, parts, span) in todo {
                    let rows = parts.iter().map(Vec::len).sum();
                    let mut pace = Pace::over(span, rows, Arc::clone(&hurry_writer));
                    // Each file is read back once for its digest, which the stage's closing
                    // event records.
                    let result = writer.write(&tag, &parts, &mut pace).and_then(|mut w| {
                        w.digests = digests(writer.out(), &w.files)?;
                        Ok(w)
                    });
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            failure.fail(RunFailure::at_sink(
                sink,
                Fault::Internal,
                format!("cannot start its writer: {e}"),
            ));
        }
        Self { jobs, done, hurry }
    }
}

/// A rolling sink's output handle in an activation.
type SinkOutput<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<SinkCommit>>>;

/// A rolling sink's state on one worker: the rows of each time not yet written, and the
/// writes out.
struct RollingSink<T> {
    /// The sink node.
    sink: String,
    /// This worker (the files' tags).
    worker: usize,
    /// When to write.
    policy: RollPolicy,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// Where the job's failure is reported.
    failure: Failure,
    /// Schedules the sink again (a write due later, or one out).
    activator: Activator,
    /// The writer thread.
    writer: WriterThread<T>,
    /// The rows of each time not yet written, with the time's capability.
    pending: BTreeMap<Time, (Capability<Time>, Vec<T>)>,
    /// The writes handed to the writer, oldest first.
    in_flight: VecDeque<InFlight>,
    /// When the last write was handed over (or the sink started).
    last_write: Instant,
}

impl<T> RollingSink<T> {
    /// Buffers rows that arrived (with their time's capability; `None` if it is not held).
    fn buffer<'a>(
        &mut self,
        cap: Option<Capability<Time>>,
        data: impl Iterator<Item = &'a mut Vec<T>>,
    ) where
        T: 'a,
    {
        let Some(cap) = cap else { return };
        let entry = self
            .pending
            .entry(*cap.time())
            .or_insert_with(|| (cap, Vec::new()));
        for batch in data {
            entry.1.append(batch);
        }
    }

    /// One activation: commits the writes that are back, and hands the completed times' rows
    /// to the writer when they are due (`frontier` is the input's).
    fn activate(&mut self, frontier: &MutableAntichain<Time>, output: &mut SinkOutput<'_>) {
        // The completed times, and whether their rows are due to be written.
        let complete: Vec<Time> = self
            .pending
            .keys()
            .copied()
            .filter(|t| !frontier.less_equal(t))
            .collect();
        let rows: usize = complete
            .iter()
            .map(|t| self.pending.get(t).map_or(0, |p| p.1.len()))
            .sum();
        let due = !complete.is_empty()
            && (rows >= self.policy.rows
                || self.last_write.elapsed() >= self.policy.interval
                || frontier.is_empty());
        if (due && self.in_flight.len() >= MAX_IN_FLIGHT) || frontier.is_empty() {
            self.writer.hurry.store(true, Ordering::Relaxed);
        }
        self.commit_returned(due, output);
        if !self.in_flight.is_empty() {
            self.activator.activate_after(Duration::from_millis(1));
        }
        if complete.is_empty() {
            return;
        }
        if !due {
            self.activator.activate_after(
                self.policy
                    .interval
                    .saturating_sub(self.last_write.elapsed()),
            );
            return;
        }
        self.write(&complete, rows, frontier.is_empty());
    }

    /// Writes that are back, in order: commit them and release their times. When a write is
    /// due while `MAX_IN_FLIGHT` are queued, the worker waits for the oldest: a writer that
    /// cannot keep up (a slow disk) slows the dataflow down rather than letting rows pile up
    /// in memory.
    fn commit_returned(&mut self, due: bool, output: &mut SinkOutput<'_>) {
        while let Some(front) = self.in_flight.front() {
            let Some(result) = self.returned(due) else {
                break;
            };
            match result {
                Ok(written) => self.commit(front, written, output),
                Err(message) => self.failure.fail(RunFailure::at_sink(
                    &self.sink,
                    Fault::External(System::FileSystem),
                    message,
                )),
            }
            self.in_flight.pop_front();
        }
    }

    /// The result of the oldest write out: waited for when a write is `due` while
    /// `MAX_IN_FLIGHT` are queued, otherwise `None` while it is not back.
    fn returned(&self, due: bool) -> Option<Result<Written, String>> {
        if due && self.in_flight.len() >= MAX_IN_FLIGHT {
            return Some(
                self.writer
                    .done
                    .recv()
                    .unwrap_or_else(|_| Err("its writer stopped".to_owned())),
            );
        }
        match self.writer.done.try_recv() {
            Ok(r) => Some(r),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Some(Err("its writer stopped".to_owned()))
            }
        }
    }

    /// Counts a write that is back and reports it durable (`written`).
    fn commit(&self, write: &InFlight, written: Written, output: &mut SinkOutput<'_>) {
        self.counters.add(&Counts {
            records_in: write.rows,
            records_out: write.rows,
            rejected: 0,
        });
        self.counters.add_files(written.files.len() as u64);
        self.counters.add_written(written.bytes);
        if let Some(cap) = write.caps.first() {
            output.session(cap).give(SinkCommit {
                sink: self.sink.clone(),
                batches: write.batches.clone(),
                files: written.files,
                digests: written.digests,
                rows: write.rows,
                first: write.first,
                last: write.last,
            });
        }
    }

    /// Hands the rows of the `complete` times (`rows` of them) to the writer, spread over a
    /// share of the time they took to gather; the input's end (`end`) is written at once.
    fn write(&mut self, complete: &[Time], rows: usize, end: bool) {
        let (Some(&first), Some(&last)) = (complete.first(), complete.last()) else {
            return;
        };
        let mut caps = Vec::with_capacity(complete.len());
        let mut parts = Vec::with_capacity(complete.len());
        for t in complete {
            if let Some((cap, data)) = self.pending.remove(t) {
                parts.push(data);
                caps.push(cap);
            }
        }
        let tag = format!("{first:010}-{last:010}-w{}", self.worker);
        let mut batches: Vec<u64> = complete.iter().map(|t| batch_of(*t)).collect();
        batches.dedup();
        self.in_flight.push_back(InFlight {
            caps,
            batches,
            rows: rows as u64,
            first,
            last,
        });
        let span = if end {
            Duration::ZERO
        } else {
            self.last_write.elapsed() / PACE_SHARE
        };
        self.writer.hurry.store(false, Ordering::Relaxed);
        if self.writer.jobs.send((tag, parts, span)).is_err() {
            self.failure.fail(RunFailure::at_sink(
                &self.sink,
                Fault::Internal,
                "its writer stopped",
            ));
        }
        self.activator.activate_after(Duration::from_millis(1));
        self.last_write = Instant::now();
    }
}

/// A sink that counts its records and drops them.
pub fn blackhole<T: Clone + 'static>(input: &VecStream<'_, T>, counters: &Arc<NodeCounters>) {
    let counters = Arc::clone(counters);
    input
        .clone()
        .sink(Pipeline, "blackhole", move |(input, _frontier)| {
            let mut n = 0u64;
            input.for_each(|_, data| {
                n += data.len() as u64;
                data.clear();
            });
            if n > 0 {
                counters.add(&Counts {
                    records_in: n,
                    records_out: 0,
                    rejected: 0,
                });
                counters.add_dropped(n);
            }
        });
}
