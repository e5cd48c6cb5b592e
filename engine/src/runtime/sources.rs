//! Source operators: the generator and files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::{Probe as _, probe::Handle as ProbeHandle};
use vitalflow_connectors::files::FileSource;
use vitalflow_connectors::generator::Generator;
use vitalflow_model::envelope::Counts;
use vitalflow_model::{RawRecord, Time};

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
/// records/s).
pub const MAX_AHEAD: u64 = 2;

/// How long a generator that is `MAX_AHEAD` in front waits before it looks again.
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
) -> VecStream<'s, RawRecord> {
    let (index, peers) = (scope.index() as u64, scope.peers() as u64);
    let node = name.to_owned();
    // The source's progress over all workers: the oldest time a worker's generator may still
    // emit records at.
    let progress = ProbeHandle::new();
    let seen = progress.clone();
    source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(scope, name, move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut next = index;
        let count = generator.count();
        let started = Instant::now();
        let started_us = vitalflow_model::now_us();
        let per_worker_rate = rate / peers as f64;
        let mut emitted = 0u64;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let mut budget = CHUNK;
            let mut caught_up = false;
            if per_worker_rate > 0.0 {
                let allowed = (started.elapsed().as_secs_f64() * per_worker_rate) as u64 + 1;
                let due = allowed.saturating_sub(emitted);
                budget = PACED_CHUNK.min(due);
                caught_up = due <= PACED_CHUNK;
                if budget == 0 {
                    activator.activate_after(PACED_TICK);
                    return;
                }
            }
            let (mut n, mut bytes) = (0, 0);
            // Whether another worker is too far behind for the next time (see `MAX_AHEAD`).
            let mut held = false;
            // One clock reading per activation: an unpaced record made now arrived by now.
            let now_us = vitalflow_model::now_us();
            while next < count && n < budget {
                let time = next / batch_size;
                if seen.less_than(&time.saturating_sub(MAX_AHEAD)) {
                    held = true;
                    break;
                }
                if *c.time() < time {
                    c.downgrade(&time);
                }
                // One session for the records of this time.
                let mut session = output.session(&*c);
                while next < count && n < budget && next / batch_size == time {
                    let mut raw = if flat {
                        let line = if rate > 0.0 {
                            generator.flat_line_at(next, chrono::Utc::now().timestamp_millis())
                        } else {
                            generator.flat_line(next)
                        };
                        RawRecord {
                            source: node.clone(),
                            location: format!("generator#{next}"),
                            sequence: next,
                            format: vitalflow_model::RawFormat::Json,
                            header: None,
                            context: None,
                            bytes: line.into_bytes(),
                            arrival_us: 0,
                        }
                    } else {
                        generator.raw(&node, next)
                    };
                    // A paced record arrives when it is due, so the wait for the next tick
                    // counts in its latency.
                    raw.arrival_us = if per_worker_rate > 0.0 {
                        started_us + ((emitted + n) as f64 * 1e6 / per_worker_rate) as u64
                    } else {
                        now_us
                    };
                    bytes += raw.bytes.len() as u64;
                    session.give(raw);
                    next += peers;
                    n += 1;
                }
            }
            emitted += n;
            read(&counters, count_records, n, bytes);
            if next >= count {
                cap = None;
            } else {
                let time = next / batch_size;
                if *c.time() < time {
                    c.downgrade(&time);
                }
                if held {
                    activator.activate_after(BEHIND_TICK);
                } else if caught_up {
                    activator.activate_after(PACED_TICK);
                } else {
                    activator.activate();
                }
            }
        }
    })
    .probe_with(&progress)
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

/// Records a file source keeps in flight between its reading thread and the dataflow.
const FILE_BUFFER: usize = 2 * CHUNK as usize;

/// A file source, read by worker 0 on a thread of its own; record `i` at time `i / batch_size`.
/// The thread hands records over through a bounded channel, so a file is streamed, never held
/// in memory whole, and reading stops waiting when the dataflow falls behind.
pub fn files<'s>(
    scope: Scope<'s, Time>,
    name: &str,
    files: Arc<FileSource>,
    batch_size: u64,
    counters: Arc<NodeCounters>,
    count_records: bool,
    failure: Failure,
) -> VecStream<'s, RawRecord> {
    let reader = scope.index() == 0;
    source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(scope, name, move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = reader.then_some(cap);
        let (tx, rx) = std::sync::mpsc::sync_channel::<RawRecord>(FILE_BUFFER);
        if reader {
            let (source, failed) = (Arc::clone(&files), failure.clone());
            let read_files = Arc::clone(&counters);
            let thread = std::thread::Builder::new()
                .name(format!("read-{}", files.name))
                .spawn(move || {
                    // Every file read is counted, one without records too.
                    let result = source.read_counting(
                        |_, _| read_files.add_files(1),
                        |record| {
                            // The dataflow is gone (it failed): nothing to hand the rest to.
                            let _ = tx.send(record);
                        },
                    );
                    if let Err(e) = result {
                        failed.fail(format!("source `{}`: {e}", source.name));
                    }
                });
            if let Err(e) = thread {
                failure.fail(format!(
                    "source `{}`: cannot start its reader: {e}",
                    files.name
                ));
            }
        }
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let (mut n, mut bytes) = (0u64, 0u64);
            // One clock reading per activation: records taken now arrived by now.
            let now_us = vitalflow_model::now_us();
            loop {
                match rx.try_recv() {
                    Ok(record) => {
                        let time = record.sequence / batch_size;
                        if *c.time() < time {
                            c.downgrade(&time);
                        }
                        let mut record = record;
                        record.arrival_us = now_us;
                        bytes += record.bytes.len() as u64;
                        output.session(&*c).give(record);
                        n += 1;
                        if n == CHUNK {
                            activator.activate();
                            break;
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        activator.activate_after(Duration::from_millis(1));
                        break;
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        cap = None;
                        break;
                    }
                }
            }
            read(&counters, count_records, n, bytes);
        }
    })
}
