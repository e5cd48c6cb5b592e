//! Generic timely operators the planner assembles: a stage with its three outputs, a rolling
//! sink that reports what it made durable, and small helpers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::Operator;
use vitalflow_connectors::Pace;
use vitalflow_model::envelope::Counts;
use vitalflow_model::{DeadLetter, Time, batch_of};

use super::metrics::{Failure, NodeCounters};

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
    mut logic: L,
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
        let mut produced = Vec::new();
        let mut rejected = Vec::new();
        move |_frontiers| {
            let mut out = out.activate();
            let mut dead = dead.activate();
            let mut stats = stats.activate();
            input.for_each_stamp(|cap, data| {
                let Some(time) = cap.least().copied() else {
                    return;
                };
                let mut records_in = 0u64;
                let (mut rejected_in, mut dropped_in) = (0u64, 0u64);
                for batch in data {
                    records_in += batch.len() as u64;
                    for record in batch.drain(..) {
                        let before = (produced.len(), rejected.len());
                        logic.process(record, &mut produced, &mut rejected);
                        if rejected.len() > before.1 {
                            rejected_in += 1;
                        } else if produced.len() == before.0 {
                            dropped_in += 1;
                        }
                    }
                }
                let counts = Counts {
                    records_in,
                    records_out: produced.len() as u64,
                    rejected: rejected.len() as u64,
                };
                counters.add(&Counts {
                    records_in,
                    records_out: if count_out { counts.records_out } else { 0 },
                    rejected: rejected_in,
                });
                counters.add_dropped(dropped_in);
                counters.add_dead_letters(counts.rejected);
                out.session(&cap).give_iterator(produced.drain(..));
                dead.session(&cap).give_iterator(rejected.drain(..));
                stats.session(&cap).give(StageStat {
                    batch: batch_of(time),
                    counts,
                    detail: logic.take_detail(),
                });
            });
        }
    });
    (out_stream, dead_stream, stats_stream)
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
    let mut builder = OperatorBuilder::new(name.to_owned(), input.scope());
    let mut input = builder.new_input(input, Pipeline);
    let (first, first_stream) = builder.new_output::<Vec<A>>();
    let (second, second_stream) = builder.new_output::<Vec<B>>();
    let mut first = OutputBuilder::<_, CapacityContainerBuilder<Vec<A>>>::from(first);
    let mut second = OutputBuilder::<_, CapacityContainerBuilder<Vec<B>>>::from(second);
    builder.build(move |_caps| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        move |_frontiers| {
            let mut first = first.activate();
            let mut second = second.activate();
            input.for_each_stamp(|cap, data| {
                for batch in data {
                    split(batch, &mut a, &mut b);
                    if !a.is_empty() {
                        first.session(&cap).give_container(&mut a);
                        a.clear();
                    }
                    if !b.is_empty() {
                        second.session(&cap).give_container(&mut b);
                        b.clear();
                    }
                }
            });
        }
    });
    (first_stream, second_stream)
}

/// Writes a sink's rows; returns the files made durable (relative to the output folder).
pub trait SinkWriter<T>: 'static {
    /// Writes the rows of `parts`, in order, durably under names derived from `tag`. The rows
    /// come as the parts they were buffered in (one per completed time): joining them into one
    /// vector would copy every row on the worker. The writer advances `pace` as it goes (after
    /// each Arrow batch, or each line), which spreads the write over the span the sink gave it.
    ///
    /// # Errors
    /// A message naming the file that could not be written.
    fn write(
        &mut self,
        tag: &str,
        parts: &[Vec<T>],
        pace: &mut Pace,
    ) -> Result<Vec<String>, String>;
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
    mut writer: W,
    counters: Arc<NodeCounters>,
    failure: Failure,
) -> VecStream<'s, SinkCommit>
where
    T: Clone + Send + 'static,
    W: SinkWriter<T> + Send,
{
    let sink = name.to_owned();
    let scope = input.scope();
    // Files are written on a thread of the sink's own, so a write (encoding, fsync) does not
    // hold the worker: the operator keeps the written times' capabilities until their write is
    // back. Only a write falling due while the previous one is still out waits for it. A write
    // is spread over a share of the time its rows took to gather, unless `hurry` is raised (a
    // worker waits for it).
    let (jobs, todo) = std::sync::mpsc::channel::<(String, Vec<Vec<T>>, Duration)>();
    let (done_tx, done) = std::sync::mpsc::channel::<Result<Vec<String>, String>>();
    let hurry = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hurry_writer = Arc::clone(&hurry);
    let spawned = std::thread::Builder::new()
        .name(format!("sink-{sink}-w{worker}"))
        .spawn(move || {
            for (tag, parts, span) in todo {
                let rows = parts.iter().map(Vec::len).sum();
                let mut pace = Pace::over(span, rows, Arc::clone(&hurry_writer));
                if done_tx.send(writer.write(&tag, &parts, &mut pace)).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        failure.fail(format!("sink `{sink}`: cannot start its writer: {e}"));
    }
    input.unary_frontier::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
        Pipeline,
        name,
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut pending: BTreeMap<Time, (Capability<Time>, Vec<T>)> = BTreeMap::new();
            let mut in_flight: std::collections::VecDeque<InFlight> =
                std::collections::VecDeque::new();
            let mut last_write = Instant::now();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let entry = pending
                            .entry(*cap.time())
                            .or_insert_with(|| (cap, Vec::new()));
                        for batch in data {
                            entry.1.append(batch);
                        }
                    }
                });
                // The completed times, and whether their rows are due to be written.
                let complete: Vec<Time> = pending
                    .keys()
                    .copied()
                    .filter(|t| !frontier.less_equal(t))
                    .collect();
                let rows: usize = complete
                    .iter()
                    .map(|t| pending.get(t).map_or(0, |p| p.1.len()))
                    .sum();
                let due = !complete.is_empty()
                    && (rows >= policy.rows
                        || last_write.elapsed() >= policy.interval
                        || frontier.is_empty());
                // Writes that are back, in order: commit them and release their times. When a
                // write is due while `MAX_IN_FLIGHT` are queued, the worker waits for the oldest:
                // a writer that cannot keep up (a slow disk) slows the dataflow down rather than
                // letting rows pile up in memory.
                if (due && in_flight.len() >= MAX_IN_FLIGHT) || frontier.is_empty() {
                    hurry.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                while let Some(front) = in_flight.front() {
                    let result = if due && in_flight.len() >= MAX_IN_FLIGHT {
                        done.recv()
                            .unwrap_or_else(|_| Err("its writer stopped".to_owned()))
                    } else {
                        match done.try_recv() {
                            Ok(r) => r,
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                Err("its writer stopped".to_owned())
                            }
                        }
                    };
                    match result {
                        Ok(files) => {
                            counters.add(&Counts {
                                records_in: front.rows,
                                records_out: front.rows,
                                rejected: 0,
                            });
                            counters.add_files(files.len() as u64);
                            if let Some(cap) = front.caps.first() {
                                output.session(cap).give(SinkCommit {
                                    sink: sink.clone(),
                                    batches: front.batches.clone(),
                                    files,
                                    rows: front.rows,
                                    first: front.first,
                                    last: front.last,
                                });
                            }
                        }
                        Err(message) => failure.fail(format!("sink `{sink}`: {message}")),
                    }
                    in_flight.pop_front();
                }
                if !in_flight.is_empty() {
                    activator.activate_after(Duration::from_millis(1));
                }
                if complete.is_empty() {
                    return;
                }
                if !due {
                    activator.activate_after(policy.interval.saturating_sub(last_write.elapsed()));
                    return;
                }
                let mut caps = Vec::with_capacity(complete.len());
                let mut parts = Vec::with_capacity(complete.len());
                for t in &complete {
                    if let Some((cap, data)) = pending.remove(t) {
                        parts.push(data);
                        caps.push(cap);
                    }
                }
                let (first, last) = (complete[0], complete[complete.len() - 1]);
                let tag = format!("{first:010}-{last:010}-w{worker}");
                let mut batches: Vec<u64> = complete.iter().map(|t| batch_of(*t)).collect();
                batches.dedup();
                in_flight.push_back(InFlight {
                    caps,
                    batches,
                    rows: rows as u64,
                    first,
                    last,
                });
                // The input's end is written at once.
                let span = if frontier.is_empty() {
                    Duration::ZERO
                } else {
                    last_write.elapsed() / PACE_SHARE
                };
                hurry.store(false, std::sync::atomic::Ordering::Relaxed);
                if jobs.send((tag, parts, span)).is_err() {
                    failure.fail(format!("sink `{sink}`: its writer stopped"));
                }
                activator.activate_after(Duration::from_millis(1));
                last_write = Instant::now();
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
