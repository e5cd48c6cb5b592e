//! Source operators: the generator and files.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::{Capability, Probe as _, probe::Handle as ProbeHandle};
use timely::scheduling::Activator;
use vitalflow_connectors::files::{FileSource, Share};
use vitalflow_connectors::generator::Generator;
use vitalflow_model::envelope::Counts;
use vitalflow_model::{RawRecord, Time};

use super::error::{Fault, RunFailure, System};
use super::metrics::{Failure, NodeCounters};
use super::ops::VecStream;

/// Records emitted per activation, so a source never holds its worker for long.
const CHUNK: u64 = 4096;

/// Records a paced generator emits per activation. A worker runs what one activation emits
/// through every operator downstream before it reads again, and a reading on another branch (or
/// sent to this worker by another) waits for that pass: at a rate the worker keeps up with, small
/// passes keep the wait (the alert latency's tail) short (`vitalflow bench` at 100,000 events/s
/// on two workers: a lower arrival → alert p99 at 256 than at 4,096 in runs side by side).
const PACED_CHUNK: u64 = 256;

/// How long a paced generator that has made every record due waits before it looks again: the
/// records due meanwhile go downstream together. Scheduled again at once, it emitted two or three
/// records per activation at 100,000 events/s on two workers, and every operator downstream paid
/// its per-activation cost for each of those passes.
const PACED_TICK: Duration = Duration::from_millis(1);

/// Times (batches) a worker's generator may run ahead of the slowest worker's. Timely does not
/// hold workers together: unpaced, one worker's generator ran ever further ahead of the other's,
/// and the operators that wait for every worker to pass a time (windows, the alert monitor, the
/// audit) held the leading worker's records meanwhile. The harness job's monitor feed alone
/// (8,000,000 readings, two workers, resident memory read each second) grew to 2,180 MB without
/// this bound and stayed at 218-333 MB with it, at the same speed (409,027 and 404,827
/// records/s). A file source read by several workers is bound the same way.
pub const MAX_AHEAD: u64 = 2;

/// How long a generator (or a file source's worker) that is `MAX_AHEAD` in front waits before
/// it looks again.
const BEHIND_TICK: Duration = Duration::from_micros(200);

/// The generator, split over workers (`counters` get the bytes read, and the records too when
/// `count_records`; a source with a declared schema counts its records as it decodes them): worker `w` of `n` emits the events `i` with `i % n == w`,
/// event `i` at time `i / batch_size`. `rate` is events per second over all workers (0: no limit).
/// `flat`: bedside-monitor readings as JSON objects instead of envelope events; with a rate,
/// stamped with the wall clock as they are made. No worker emits a time more than
/// [`MAX_AHEAD`] after the oldest time another worker has yet to finish.
#[allow(clippy::too_many_arguments)]
pub fn generator<'s>(
    scope: Scope<'s, Time>,
    name: &str,
    generator: Arc<Generator>,
    rate: f64,
    batch_size: u64,
    flat: bool,
    counters: Arc<NodeCounters>,
    count_records: bool,
    stop: Arc<AtomicBool>,
) -> VecStream<'s, RawRecord> {
    let (index, peers) = (scope.index() as u64, scope.peers() as u64);
    let node = name.to_owned();
    // The source's progress over all workers: the oldest time a worker's generator may still
    // emit records at.
    let progress = ProbeHandle::new();
    let seen = progress.clone();
    source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(scope, name, move |cap, info| {
        let mut cap = Some(cap);
        let mut state = GeneratorState {
            node,
            count: generator.count(),
            generator,
            rate,
            batch_size,
            flat,
            counters,
            count_records,
            activator: scope.activator_for(info.address),
            seen,
            peers,
            next: index,
            started: Instant::now(),
            started_us: vitalflow_model::now_us(),
            per_worker_rate: rate / peers as f64,
            emitted: 0,
            stop,
        };
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if state.activate(c, output).is_break() {
                cap = None;
            }
        }
    })
    .probe_with(&progress)
}

/// A source's output handle in an activation.
type SourceOutput<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<RawRecord>>>;

/// The generator's state on one worker.
struct GeneratorState {
    /// The source node.
    node: String,
    /// The events.
    generator: Arc<Generator>,
    /// Events per second over all workers (0: no limit).
    rate: f64,
    /// Events per dataflow timestamp.
    batch_size: u64,
    /// Bedside-monitor readings as JSON objects instead of envelope events.
    flat: bool,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// Whether the source counts its records (it does not when it decodes them into rows).
    count_records: bool,
    /// Schedules the source again.
    activator: Activator,
    /// The source's progress over all workers (see [`MAX_AHEAD`]).
    seen: ProbeHandle<Time>,
    /// The number of workers: the step from one of this worker's events to its next.
    peers: u64,
    /// The next event this worker emits.
    next: u64,
    /// The number of events.
    count: u64,
    /// When the source started on this worker.
    started: Instant,
    /// `started` in µs since the epoch (paced records' arrival times count from it).
    started_us: u64,
    /// Events per second on this worker (0: no limit).
    per_worker_rate: f64,
    /// Events this worker emitted.
    emitted: u64,
    /// Set to stop making events (a graceful stop).
    stop: Arc<AtomicBool>,
}

impl GeneratorState {
    /// One activation: emits the records due, and moves the capability to the next one's
    /// time. `Break` once every event is emitted.
    fn activate(
        &mut self,
        cap: &mut Capability<Time>,
        output: &mut SourceOutput<'_>,
    ) -> ControlFlow<()> {
        if self.stop.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        let (budget, caught_up) = self.budget();
        if budget == 0 {
            self.activator.activate_after(PACED_TICK);
            return ControlFlow::Continue(());
        }
        let (n, bytes, held) = self.emit(budget, cap, output);
        self.emitted += n;
        read(&self.counters, self.count_records, n, bytes);
        if self.next >= self.count {
            return ControlFlow::Break(());
        }
        let time = self.next / self.batch_size;
        if *cap.time() < time {
            cap.downgrade(&time);
        }
        if held {
            self.activator.activate_after(BEHIND_TICK);
        } else if caught_up {
            self.activator.activate_after(PACED_TICK);
        } else {
            self.activator.activate();
        }
        ControlFlow::Continue(())
    }

    /// How many records this activation may emit, and whether that is every record due (a
    /// paced generator then waits for the next tick). Unpaced: `CHUNK`.
    fn budget(&self) -> (u64, bool) {
        if self.per_worker_rate > 0.0 {
            let allowed = (self.started.elapsed().as_secs_f64() * self.per_worker_rate) as u64 + 1;
            let due = allowed.saturating_sub(self.emitted);
            (PACED_CHUNK.min(due), due <= PACED_CHUNK)
        } else {
            (CHUNK, false)
        }
    }

    /// Emits up to `budget` records, in one session per time: how many, their bytes, and
    /// whether another worker is too far behind for the next time (see [`MAX_AHEAD`]).
    fn emit(
        &mut self,
        budget: u64,
        cap: &mut Capability<Time>,
        output: &mut SourceOutput<'_>,
    ) -> (u64, u64, bool) {
        let (mut n, mut bytes) = (0, 0);
        // One clock reading per activation: an unpaced record made now arrived by now.
        let now_us = vitalflow_model::now_us();
        while self.next < self.count && n < budget {
            let time = self.next / self.batch_size;
            if self.seen.less_than(&time.saturating_sub(MAX_AHEAD)) {
                return (n, bytes, true);
            }
            if *cap.time() < time {
                cap.downgrade(&time);
            }
            let mut session = output.session(&*cap);
            while self.next < self.count && n < budget && self.next / self.batch_size == time {
                let raw = self.record(n, now_us);
                bytes += raw.bytes.len() as u64;
                session.give(raw);
                self.next += self.peers;
                n += 1;
            }
        }
        (n, bytes, false)
    }

    /// The next event, the `n`th of this activation, as a record; an unpaced one arrived at
    /// `now_us`.
    fn record(&self, n: u64, now_us: u64) -> RawRecord {
        let next = self.next;
        let mut raw = if self.flat {
            let line = if self.rate > 0.0 {
                self.generator
                    .flat_line_at(next, chrono::Utc::now().timestamp_millis())
            } else {
                self.generator.flat_line(next)
            };
            RawRecord {
                source: self.node.clone(),
                location: format!("generator#{next}"),
                sequence: next,
                format: vitalflow_model::RawFormat::Json,
                header: None,
                context: None,
                bytes: line.into_bytes(),
                arrival_us: 0,
            }
        } else {
            self.generator.raw(&self.node, next)
        };
        // A paced record arrives when it is due, so the wait for the next tick counts in its
        // latency.
        raw.arrival_us = if self.per_worker_rate > 0.0 {
            self.started_us + ((self.emitted + n) as f64 * 1e6 / self.per_worker_rate) as u64
        } else {
            now_us
        };
        raw
    }
}

/// Counts what a source read: its bytes, and its records unless it decodes them into rows (its
/// decoding stage counts those).
fn read(counters: &NodeCounters, count_records: bool, records: u64, bytes: u64) {
    if count_records {
        counters.add(&Counts {
            records_in: records,
            records_out: records,
            rejected: 0,
        });
    }
    counters.add_bytes(bytes);
}

/// Records a file source keeps in flight between a worker's reading thread and the dataflow.
const FILE_BUFFER: usize = 2 * CHUNK as usize;

/// What the workers of a file source share.
pub struct FileInput {
    /// The source.
    pub source: Arc<FileSource>,
    /// Its files, listed once for every worker (of every process); `None`: each worker lists
    /// them as it starts.
    pub files: Option<Arc<[PathBuf]>>,
    /// The node's counters: the bytes read, the records too when `count_records`, the files,
    /// and the records each worker read.
    pub counters: Arc<NodeCounters>,
    /// Whether the source counts its records (it does not when it decodes them into rows).
    pub count_records: bool,
    /// Where a read error goes.
    pub failure: Failure,
    /// Set to stop reading (a graceful stop).
    pub stop: Arc<AtomicBool>,
}

/// A file source, read by every worker, each on a thread of its own: worker `w` of `n` makes
/// the records `i` with `i % n == w` (record `i` at time `i / batch_size`) and counts the files
/// at places `f % n == w` of the reading order (see [`Share`]). Each thread goes through every
/// file with the format's splitter, so every worker numbers the records as one reader would;
/// the records a worker makes are the ones the decoding that follows (exchanged by sequence)
/// sends to it. The threads hand records over through bounded channels, so a file is streamed,
/// never held in memory whole, and reading stops waiting when the dataflow falls behind. With
/// several workers, none emits a time more than [`MAX_AHEAD`] after the oldest time another
/// has yet to finish. On a graceful stop the threads read no more, and the source ends once
/// they have.
#[allow(clippy::too_many_arguments)]
pub fn files<'s>(
    scope: Scope<'s, Time>,
    name: &str,
    files: Arc<FileSource>,
    batch_size: u64,
    counters: Arc<NodeCounters>,
    count_records: bool,
    failure: Failure,
    stop: Arc<AtomicBool>,
) -> VecStream<'s, RawRecord> {
    let input = FileInput {
        source: files,
        files: None,
        counters,
        count_records,
        failure,
        stop,
    };
    read_files(scope, name, batch_size, input)
}

/// [`files`], of a [`FileInput`].
pub fn read_files<'s>(
    scope: Scope<'s, Time>,
    name: &str,
    batch_size: u64,
    input: FileInput,
) -> VecStream<'s, RawRecord> {
    let (index, peers) = (scope.index(), scope.peers());
    let share = Share {
        reader: index as u64,
        readers: peers as u64,
    };
    // The source's progress over all workers: the oldest time a worker may still emit at.
    let progress = ProbeHandle::new();
    let seen = progress.clone();
    let records = source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(
        scope,
        name,
        move |cap, info| {
            let mut cap = Some(cap);
            let (tx, rx) = std::sync::mpsc::sync_channel::<RawRecord>(FILE_BUFFER);
            input.counters.add_worker_reads(index, 0);
            let thread = start_reading(&input, share, tx);
            let mut state = FileRecords {
                rx: Some(rx),
                reader: thread,
                batch_size,
                activator: scope.activator_for(info.address),
                counters: Arc::clone(&input.counters),
                count_records: input.count_records,
                stop: Arc::clone(&input.stop),
                worker: index,
                pending: None,
                seen: (peers > 1).then_some(seen),
                allowed: 0,
            };
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if state.activate(c, output).is_break() {
                    cap = None;
                }
            }
        },
    );
    // One worker waits for no other.
    if peers > 1 {
        records.probe_with(&progress)
    } else {
        records
    }
}

/// Starts the thread that reads a worker's share of a file source into `tx` (counting the
/// files of the share, those without records too) until the files end, `stop` is set or the
/// records are no longer taken; a thread that cannot be started fails the job.
fn start_reading(
    input: &FileInput,
    share: Share,
    tx: std::sync::mpsc::SyncSender<RawRecord>,
) -> Option<std::thread::JoinHandle<()>> {
    let (source, failed) = (Arc::clone(&input.source), input.failure.clone());
    let listed = input.files.clone();
    let read_files = Arc::clone(&input.counters);
    let stop = Arc::clone(&input.stop);
    let thread = std::thread::Builder::new()
        .name(format!("read-{}", input.source.name))
        .spawn(move || {
            let files = match listed {
                Some(files) => Ok(files),
                None => source.files().map(Arc::from),
            };
            let result = files.and_then(|files| {
                source.read_share(
                    &files,
                    share,
                    |_, _| read_files.add_files(1),
                    |record| {
                        // Stopped, or the source has ended (a graceful stop) or the dataflow
                        // is gone (it failed): nothing to hand the rest to.
                        if stop.load(Ordering::SeqCst) || tx.send(record).is_err() {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    },
                )
            });
            if let Err(e) = result {
                failed.fail(RunFailure::at_source(
                    &source.name,
                    Fault::External(System::FileSystem),
                    e,
                ));
            }
        });
    thread
        .inspect_err(|e| {
            input.failure.fail(RunFailure::at_source(
                &input.source.name,
                Fault::Internal,
                format!("cannot start its reader: {e}"),
            ));
        })
        .ok()
}

/// A file source's state on one worker: the records its thread hands over.
struct FileRecords {
    /// The records, in order; dropped when the source ends.
    rx: Option<std::sync::mpsc::Receiver<RawRecord>>,
    /// The thread that reads the files, until it is waited for.
    reader: Option<std::thread::JoinHandle<()>>,
    /// Records per dataflow timestamp.
    batch_size: u64,
    /// Schedules the source again.
    activator: Activator,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// Whether the source counts its records (it does not when it decodes them into rows).
    count_records: bool,
    /// Set to stop reading (a graceful stop).
    stop: Arc<AtomicBool>,
    /// This worker's index.
    worker: usize,
    /// A record handed over but held back: its time is too far ahead of another worker's.
    pending: Option<RawRecord>,
    /// With several workers: the source's progress over all of them (see [`MAX_AHEAD`]).
    seen: Option<ProbeHandle<Time>>,
    /// A time this worker may emit at, as far as `seen` has told.
    allowed: Time,
}

impl FileRecords {
    /// One activation: emits up to `CHUNK` records handed over, each at its time. `Break`
    /// once the thread is done and every record is emitted, or on a graceful stop (once the
    /// thread has ended).
    fn activate(
        &mut self,
        cap: &mut Capability<Time>,
        output: &mut SourceOutput<'_>,
    ) -> ControlFlow<()> {
        let Some(rx) = self
            .rx
            .as_ref()
            .filter(|_| !self.stop.load(Ordering::SeqCst))
        else {
            self.end();
            return ControlFlow::Break(());
        };
        let (mut n, mut bytes) = (0u64, 0u64);
        // One clock reading per activation: records taken now arrived by now.
        let now_us = vitalflow_model::now_us();
        let mut next = match self.pending.take() {
            Some(record) => Ok(record),
            None => rx.try_recv(),
        };
        let flow = 'activation: loop {
            match next {
                Ok(record) => {
                    let time = record.sequence / self.batch_size;
                    if *cap.time() < time {
                        cap.downgrade(&time);
                    }
                    if ahead(self.seen.as_ref(), &mut self.allowed, time) {
                        self.pending = Some(record);
                        self.activator.activate_after(BEHIND_TICK);
                        break ControlFlow::Continue(());
                    }
                    // One session for the records of a time taken together: each session
                    // sends what it holds when it closes.
                    let mut session = output.session(&*cap);
                    let mut record = record;
                    loop {
                        record.arrival_us = now_us;
                        bytes += record.bytes.len() as u64;
                        session.give(record);
                        n += 1;
                        if n == CHUNK {
                            self.activator.activate();
                            break 'activation ControlFlow::Continue(());
                        }
                        match rx.try_recv() {
                            Ok(r) if r.sequence / self.batch_size == time => record = r,
                            other => {
                                next = other;
                                break;
                            }
                        }
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    self.activator.activate_after(Duration::from_millis(1));
                    break ControlFlow::Continue(());
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break ControlFlow::Break(()),
            }
        };
        read(&self.counters, self.count_records, n, bytes);
        if n > 0 {
            self.counters.add_worker_reads(self.worker, n);
        }
        if flow.is_break() {
            self.end();
        }
        flow
    }

    /// Ends the source: drops the channel, so that a reading thread waiting to hand a record
    /// over reads no more, and waits for the thread, so that the files it counted are final.
    fn end(&mut self) {
        self.pending = None;
        self.rx = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Whether `time` is more than [`MAX_AHEAD`] after the oldest time a worker of the source
/// (`seen`, with several workers) has yet to finish; `allowed`: a time known not to be. The
/// asking worker's capability is already at `time`, so the slowest worker is never held.
fn ahead(seen: Option<&ProbeHandle<Time>>, allowed: &mut Time, time: Time) -> bool {
    let Some(seen) = seen.filter(|_| time > *allowed) else {
        return false;
    };
    if seen.less_than(&time.saturating_sub(MAX_AHEAD)) {
        return true;
    }
    *allowed = time;
    false
}
