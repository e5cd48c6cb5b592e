//! Source operators: the generator and files.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::{Capability, Probe as _, probe::Handle as ProbeHandle};
use timely::scheduling::Activator;
use vitalflow_connectors::files::{ChunkCount, ChunkStart, FileError, FileSource, Share};
use vitalflow_connectors::generator::Generator;
use vitalflow_model::envelope::Counts;
use vitalflow_model::{RawRecord, Time};

use super::cluster::Links;
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
/// records/s). A file source read by several workers is bound the same way, beyond what its
/// chunks need (see [`read_files`]).
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

/// How often a worker waiting for the other workers' chunk counts looks again.
const COUNTS_TICK: Duration = Duration::from_millis(20);

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
    /// Bytes of a JSON lines file that one worker reads as one chunk (see
    /// [`FileSource::chunks`]).
    pub chunk_bytes: u64,
    /// Where this process's workers leave their chunk counts for each other.
    pub tally: Arc<Tally>,
    /// In a cluster: the other processes, which the chunk counts go to and come from.
    pub cluster: Option<Arc<Links>>,
}

/// The chunk counts of a file source that the workers of one process have made, for each
/// other.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<usize, ChunkCount>>,
    changed: Condvar,
}

/// A file source read by the workers, each on a thread of its own (see [`read_files`]), cut
/// into chunks of `chunk_bytes`; `tally` is shared by the workers of the process.
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
    (tally, chunk_bytes): (Arc<Tally>, u64),
) -> VecStream<'s, RawRecord> {
    let input = FileInput {
        source: files,
        files: None,
        counters,
        count_records,
        failure,
        stop,
        chunk_bytes,
        tally,
        cluster: None,
    };
    read_files(scope, name, batch_size, input)
}

/// A file source, read by the workers, each on a thread of its own; record `i` is emitted at
/// time `i / batch_size`, numbered and located as one reader would. One worker reads every
/// file. Several workers (of one process or of several) split the files between them: the
/// files are cut into chunks ([`FileSource::chunks`]: a file each, a JSON lines file larger
/// than `chunk_bytes` into byte ranges), chunk `c` is read by worker `c % n`; each worker
/// first counts the records and lines of its chunks, the workers share their counts (through
/// a [`Tally`] in a process, over the control connections between processes), and each then
/// reads its chunks, numbering their records from the counts of the chunks before. The worker
/// of a file's first chunk counts the file. The threads hand records over through bounded
/// channels, so a file is streamed, never held in memory whole, and reading stops waiting when
/// the dataflow falls behind. No worker emits a time more than [`MAX_AHEAD`] after the oldest
/// time another has yet to finish, beyond the times the chunks of the other workers before
/// its chunk span. On a graceful stop the threads read no more, and the source ends once they
/// have.
pub fn read_files<'s>(
    scope: Scope<'s, Time>,
    name: &str,
    batch_size: u64,
    input: FileInput,
) -> VecStream<'s, RawRecord> {
    let (index, peers) = (scope.index(), scope.peers());
    // The source's progress over all workers: the oldest time a worker may still emit at.
    let progress = ProbeHandle::new();
    let seen = progress.clone();
    let records = source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(
        scope,
        name,
        move |cap, info| {
            let mut cap = Some(cap);
            let (tx, rx) = std::sync::mpsc::sync_channel::<(RawRecord, Time)>(FILE_BUFFER);
            input.counters.add_worker_reads(index, 0);
            let reading = Reading {
                source: Arc::clone(&input.source),
                listed: input.files.clone(),
                counters: Arc::clone(&input.counters),
                failure: input.failure.clone(),
                stop: Arc::clone(&input.stop),
                chunk_bytes: input.chunk_bytes,
                tally: Arc::clone(&input.tally),
                cluster: input.cluster.clone(),
                batch_size: batch_size.max(1),
                worker: index,
                workers: peers,
                tx,
            };
            let thread = reading.start();
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
                reached: 0,
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

/// What a worker's reading thread needs.
struct Reading {
    source: Arc<FileSource>,
    /// The files, listed for every worker; `None`: listed by the thread.
    listed: Option<Arc<[PathBuf]>>,
    counters: Arc<NodeCounters>,
    failure: Failure,
    stop: Arc<AtomicBool>,
    chunk_bytes: u64,
    tally: Arc<Tally>,
    cluster: Option<Arc<Links>>,
    /// Records per dataflow timestamp (at least 1).
    batch_size: u64,
    /// This worker's index, over all processes.
    worker: usize,
    /// The workers, over all processes.
    workers: usize,
    /// Where the records go, each with the times it may run ahead by beyond [`MAX_AHEAD`].
    tx: std::sync::mpsc::SyncSender<(RawRecord, Time)>,
}

impl Reading {
    /// Starts the thread that reads this worker's part of the source into `tx` (counting the
    /// files it starts, those without records too) until its part ends, `stop` is set or the
    /// records are no longer taken; a thread that cannot be started fails the job.
    fn start(self) -> Option<std::thread::JoinHandle<()>> {
        let (name, failure) = (self.source.name.clone(), self.failure.clone());
        let thread = std::thread::Builder::new()
            .name(format!("read-{name}"))
            .spawn(move || {
                let files = match self.listed.clone() {
                    Some(files) => Ok(files),
                    None => self.source.files().map(Arc::from),
                };
                let result = files.and_then(|files| {
                    if self.workers > 1 {
                        self.split(&files)
                    } else {
                        self.whole(&files)
                    }
                });
                if let Err(e) = result {
                    self.failure.fail(RunFailure::at_source(
                        &self.source.name,
                        Fault::External(System::FileSystem),
                        e,
                    ));
                }
            });
        thread
            .inspect_err(|e| {
                failure.fail(RunFailure::at_source(
                    &name,
                    Fault::Internal,
                    format!("cannot start its reader: {e}"),
                ));
            })
            .ok()
    }

    /// Hands `record` over: `Break` when stopped, or when the source has ended (a graceful
    /// stop) or the dataflow is gone (it failed): nothing to hand the rest to.
    fn send(&self, record: RawRecord, slack: Time) -> ControlFlow<()> {
        if self.stop.load(Ordering::SeqCst) || self.tx.send((record, slack)).is_err() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// One worker: reads every file.
    fn whole(&self, files: &[PathBuf]) -> Result<(), FileError> {
        self.source
            .read_share(
                files,
                Share::WHOLE,
                |_, _| self.counters.add_files(1),
                |record| self.send(record, 0),
            )
            .map(|_| ())
    }

    /// One worker of several: counts its chunks, waits for every chunk's count, and reads its
    /// chunks.
    fn split(&self, files: &[PathBuf]) -> Result<(), FileError> {
        let chunks = self.source.chunks(files, self.chunk_bytes)?;
        let mine: Vec<usize> = (self.worker..chunks.len()).step_by(self.workers).collect();
        let mut counted = BTreeMap::new();
        for &c in &mine {
            if self.stopped() {
                return Ok(());
            }
            counted.insert(c, self.source.count_chunk(files, chunks[c])?);
        }
        {
            let mut tally = self
                .tally
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            tally.extend(counted.iter().map(|(c, n)| (*c, *n)));
        }
        self.tally.changed.notify_all();
        if let Some(links) = &self.cluster {
            let counts = counted
                .iter()
                .map(|(c, n)| (*c, (n.records, n.lines)))
                .collect();
            links.share_counts(&self.source.name, chunks.len(), &counts);
        }
        if mine.is_empty() {
            return Ok(());
        }
        let Some(counts) = self.every_count(chunks.len()) else {
            return Ok(());
        };
        let starts = ChunkStart::of(&chunks, &counts);
        let time = |c: usize| starts[c].sequence / self.batch_size;
        for &c in &mine {
            // The workers of the chunks just before this one read theirs meanwhile: this one
            // may run as far ahead of the oldest of them as its chunk starts after theirs.
            let slack = time(c).saturating_sub(time((c + 1).saturating_sub(self.workers)));
            let read = self
                .source
                .read_chunk(files, chunks[c], starts[c], |record| {
                    self.send(record, slack)
                })?;
            if chunks[c].starts_file() {
                self.counters.add_files(1);
            }
            if read.stopped {
                return Ok(());
            }
            read.check(files, chunks[c], counts[c])?;
        }
        Ok(())
    }

    /// Whether to stop: a graceful stop, or the run has failed.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.failure.failed()
    }

    /// Waits until every one of `chunks` chunks is counted, by this process's workers or (in
    /// a cluster) another's: the counts, or `None` when the run stops or fails first (a
    /// process whose files are cut otherwise fails it).
    fn every_count(&self, chunks: usize) -> Option<Vec<ChunkCount>> {
        let mut tally = self
            .tally
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.stopped() {
                return None;
            }
            let others = self
                .cluster
                .as_ref()
                .map(|links| (links.lost(), links.counted(&self.source.name)));
            if let Some((lost, others)) = &others {
                if *lost {
                    return None;
                }
                if let Some((process, n)) = others.chunks.iter().find(|(_, n)| **n != chunks) {
                    self.failure.fail(RunFailure::at_source(
                        &self.source.name,
                        Fault::Input,
                        format!(
                            "process {process} cuts its files into {n} chunks, this one into \
                             {chunks}: every process must see the same files, unchanged while \
                             the run lasts"
                        ),
                    ));
                    return None;
                }
            }
            let every: Option<Vec<ChunkCount>> = (0..chunks)
                .map(|c| {
                    tally.get(&c).copied().or_else(|| {
                        let (_, others) = others.as_ref()?;
                        let &(records, lines) = others.counts.get(&c)?;
                        Some(ChunkCount { records, lines })
                    })
                })
                .collect();
            if every.is_some() {
                return every;
            }
            tally = self
                .tally
                .changed
                .wait_timeout(tally, COUNTS_TICK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A file source's state on one worker: the records its thread hands over.
struct FileRecords {
    /// The records, in order, each with the times it may run ahead by beyond [`MAX_AHEAD`];
    /// dropped when the source ends.
    rx: Option<std::sync::mpsc::Receiver<(RawRecord, Time)>>,
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
    pending: Option<(RawRecord, Time)>,
    /// With several workers: the source's progress over all of them (see [`MAX_AHEAD`]).
    seen: Option<ProbeHandle<Time>>,
    /// A time the source's progress is known to have reached.
    reached: Time,
}

impl FileRecords {
    /// One activation: emits up to `CHUNK` records handed over, each at its time. `Break`
    /// once the thread is done and every record is emitted, or on a graceful stop (once the
    /// thread has ended). A record handed over with a slack of `s` times waits while its time
    /// is more than [`MAX_AHEAD`]` + s` after the oldest time a worker has yet to finish.
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
                Ok((record, slack)) => {
                    let time = record.sequence / self.batch_size;
                    if *cap.time() < time {
                        cap.downgrade(&time);
                    }
                    if ahead(self.seen.as_ref(), &mut self.reached, time, slack) {
                        self.pending = Some((record, slack));
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
                            Ok((r, s)) if r.sequence / self.batch_size == time && s == slack => {
                                record = r;
                            }
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

/// Whether `time` is more than [`MAX_AHEAD`]` + slack` after the oldest time a worker of the
/// source (`seen`, with several workers) has yet to finish; `reached`: a time that oldest time
/// is known to have reached. The asking worker's capability is already at `time`, so the
/// slowest worker is never held.
fn ahead(seen: Option<&ProbeHandle<Time>>, reached: &mut Time, time: Time, slack: Time) -> bool {
    let floor = time.saturating_sub(MAX_AHEAD.saturating_add(slack));
    let Some(seen) = seen.filter(|_| floor > *reached) else {
        return false;
    };
    if seen.less_than(&floor) {
        return true;
    }
    *reached = floor;
    false
}
