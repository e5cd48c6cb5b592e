//! The generator source on several workers: a worker whose downstream is slow holds the
//! others back, so no worker's generator runs more than `MAX_AHEAD` batches in front. A file
//! source stopped gracefully reads no more. A file source on several workers: every worker
//! reads its share (the records whose sequence is its index modulo the workers), together they
//! emit what one worker does at the same times and count every file once, and none runs more
//! than `MAX_AHEAD` batches in front of a slow one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod lead;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lead::Leads;
use std::collections::BTreeMap;
use std::sync::Mutex;

use timely::dataflow::operators::Inspect;
use vitalflow_connectors::files::CHUNK_BYTES;
use vitalflow_connectors::files::{FileFormat, FileSource};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_engine::runtime::metrics::{Failure, NodeCounters};
use vitalflow_engine::runtime::sources::{MAX_AHEAD, Tally, files, generator};

/// Runs a generator of `count` events in batches of `batch` on two workers, worker 1's
/// downstream sleeping on every batch it sees; returns, for each batch worker 0 emitted, its
/// time and the latest time worker 1 had emitted by then.
fn lead_of_worker_0(count: u64, batch: u64) -> Vec<(u64, u64)> {
    let events = Arc::new(Generator::new(GeneratorConfig {
        count,
        patients: 10,
        ..GeneratorConfig::default()
    }));
    let leads = Arc::new(Leads::default());
    let (g, l) = (Arc::clone(&events), Arc::clone(&leads));
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let (g, l) = (Arc::clone(&g), Arc::clone(&l));
        worker.dataflow::<u64, _, _>(|scope| {
            generator(
                scope,
                "ehr",
                g,
                0.0,
                batch,
                false,
                Arc::new(NodeCounters::default()),
                true,
                Arc::default(),
            )
            .inspect_core(move |event| {
                if let Ok((stamp, _)) = event
                    && let Some(&time) = stamp.iter().max()
                {
                    l.observe(index, time, 1);
                }
            });
        });
    })
    .unwrap();
    leads.take()
}

#[test]
fn a_generator_waits_for_the_slowest_worker() {
    let (count, batch) = (6_000, 100);
    let leads = lead_of_worker_0(count, batch);
    let last = count / batch - 1;
    // The bound must be far below the run's length for the test to tell anything.
    assert!(
        MAX_AHEAD * 4 < last,
        "MAX_AHEAD {MAX_AHEAD} against {last} batches"
    );
    assert_eq!(leads.last().map(|l| l.0), Some(last), "{leads:?}");
    // Worker 1 was slow enough for the bound to matter: worker 0 got as far ahead as it allows.
    let lead = leads
        .iter()
        .filter(|l| l.1 > 0)
        .map(|&(time, seen)| time.saturating_sub(seen - 1))
        .max()
        .unwrap_or(0);
    assert!(
        lead >= MAX_AHEAD,
        "worker 0 never reached the bound (largest lead {lead}): worker 1 was not slow, the run \
         tells nothing: {leads:?}"
    );
    for &(time, seen) in &leads {
        // Worker 1 had emitted time `seen - 1`; worker 0 may be `MAX_AHEAD` past the time
        // worker 1 is at, and one more while worker 1's progress is on its way.
        let allowed = seen.saturating_sub(1) + MAX_AHEAD + 1;
        assert!(
            time <= allowed,
            "worker 0 emitted time {time} when worker 1 had reached {}: {leads:?}",
            seen.saturating_sub(1)
        );
    }
}

/// A file source stopped (the graceful stop's flag set as its first record goes by) reads no
/// more: it ends with a fraction of its files read and counted, and only once its reading thread
/// has ended, so nothing of it outlives the run (the thread holds the last other reference to
/// the source).
#[test]
fn a_stopped_file_source_reads_no_more() {
    let (file_count, lines) = (40u64, 20_000u64);
    let dir = tempfile::tempdir().unwrap();
    for f in 0..file_count {
        let mut text = String::new();
        for i in 0..lines {
            let _ = writeln!(text, "{{\"file\":{f},\"n\":{i}}}");
        }
        std::fs::write(dir.path().join(format!("part-{f:02}.jsonl")), text).unwrap();
    }
    let source = Arc::new(FileSource {
        name: "readings".into(),
        path: dir.path().to_owned(),
        format: FileFormat::Json,
    });
    let counters = Arc::new(NodeCounters::default());
    let failure = Failure::default();
    let (s, c, f) = (Arc::clone(&source), Arc::clone(&counters), failure.clone());
    timely::execute(timely::Config::process(1), move |worker| {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, c, f) = (Arc::clone(&s), Arc::clone(&c), f.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            let seen = Arc::clone(&stop);
            let split = (Arc::new(Tally::default()), CHUNK_BYTES);
            files(scope, "readings", s, 1000, c, true, f, stop, split).inspect(move |_| {
                seen.store(true, Ordering::SeqCst);
            });
        });
    })
    .unwrap();
    assert!(!failure.failed());
    assert_eq!(
        Arc::strong_count(&source),
        1,
        "the reading thread outlived the stopped source"
    );
    let (records, _, _, files_read) = counters.snapshot();
    assert!(records > 0, "nothing read before the stop");
    // At most what the thread had handed over (a bounded channel) when the source stopped.
    assert!(
        records < lines * 2 && files_read < 3,
        "{records} records of {files_read} files read after the stop"
    );
}

/// Writes `files` JSON-lines files of `lines` records each into `dir` (blank lines between
/// some, the last line of each without its line break), and one empty file.
fn json_lines(dir: &std::path::Path, files: u64, lines: u64) {
    for f in 0..files {
        let mut text = String::new();
        for i in 0..lines {
            let _ = write!(text, "{{\"file\":{f},\"n\":{i}}}");
            if i + 1 < lines {
                text.push_str(if i % 7 == 3 { "\r\n\n" } else { "\n" });
            }
        }
        std::fs::write(dir.join(format!("part-{f:02}.jsonl")), text).unwrap();
    }
    std::fs::write(dir.join("part-99-empty.jsonl"), "").unwrap();
}

/// What each worker of a file source emitted: (sequence, time, location), by worker.
type Emitted = BTreeMap<usize, Vec<(u64, u64, String)>>;

/// Runs a file source over `dir` on `workers` workers with batches of `batch`: what each
/// emitted, and the source's counters.
fn read_on(dir: &std::path::Path, workers: usize, batch: u64) -> (Emitted, Arc<NodeCounters>) {
    let source = Arc::new(FileSource {
        name: "readings".into(),
        path: dir.to_owned(),
        format: FileFormat::Json,
    });
    let counters = Arc::new(NodeCounters::default());
    let failure = Failure::default();
    let emitted: Arc<Mutex<Emitted>> = Arc::default();
    let tally = Arc::new(Tally::default());
    let (s, c, f, e) = (
        Arc::clone(&source),
        Arc::clone(&counters),
        failure.clone(),
        Arc::clone(&emitted),
    );
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let (s, c, f, e) = (Arc::clone(&s), Arc::clone(&c), f.clone(), Arc::clone(&e));
        let split = (Arc::clone(&tally), CHUNK_BYTES);
        worker.dataflow::<u64, _, _>(|scope| {
            files(
                scope,
                "readings",
                s,
                batch,
                c,
                true,
                f,
                Arc::default(),
                split,
            )
            .inspect_core(move |event| {
                if let Ok((stamp, records)) = event
                    && let Some(&time) = stamp.iter().max()
                {
                    let mut e = e.lock().unwrap();
                    let mine = e.entry(index).or_default();
                    mine.extend(
                        records
                            .iter()
                            .map(|r| (r.sequence, time, r.location.clone())),
                    );
                }
            });
        });
    })
    .unwrap();
    assert!(!failure.failed(), "{:?}", failure.message());
    let emitted = std::mem::take(&mut *emitted.lock().unwrap());
    (emitted, counters)
}

/// Two and three workers read a file source of 5 files together: file `f` (a chunk each, the
/// files being small) is worker `f % n`'s; each emits its files' records only, in order, and
/// all of them together emit what one worker does, each record at the same time and with the
/// same location; every file is counted once, and each worker's records are counted as its
/// own.
#[test]
fn every_worker_reads_its_share_of_a_file_source() {
    let (file_count, lines, batch) = (5u64, 3_001u64, 1_000u64);
    let dir = tempfile::tempdir().unwrap();
    json_lines(dir.path(), file_count, lines);
    let total = file_count * lines;
    let (one, one_counters) = read_on(dir.path(), 1, batch);
    let mut whole: Vec<(u64, u64, String)> = one.into_values().flatten().collect();
    whole.sort();
    assert_eq!(whole.len() as u64, total);
    for (i, (sequence, time, _)) in whole.iter().enumerate() {
        assert_eq!((*sequence, *time), (i as u64, i as u64 / batch));
    }
    assert_eq!(one_counters.worker_reads(), BTreeMap::from([(0, total)]));
    for workers in [2usize, 3] {
        let (emitted, counters) = read_on(dir.path(), workers, batch);
        let mut all = Vec::new();
        for w in 0..workers {
            let mine = emitted.get(&w).cloned().unwrap_or_default();
            assert!(
                !mine.is_empty(),
                "worker {w} of {workers} emitted nothing: {:?}",
                emitted.keys()
            );
            // `…/part-03.jsonl:17` → 3.
            let file_of = |location: &str| -> u64 {
                let name = location.rsplit('/').next().unwrap_or_default();
                name["part-".len().."part-00".len()].parse().unwrap()
            };
            assert!(
                mine.iter()
                    .all(|(_, _, l)| file_of(l) % workers as u64 == w as u64),
                "worker {w} of {workers} emitted another worker's records"
            );
            assert!(
                mine.windows(2).all(|p| p[0].0 < p[1].0),
                "worker {w} of {workers} emitted out of order"
            );
            all.extend(mine);
        }
        all.sort();
        assert_eq!(
            all, whole,
            "{workers} workers emitted other records than one"
        );
        let (records, _, _, files_read) = counters.snapshot();
        assert_eq!(records, total);
        assert_eq!(files_read, file_count + 1, "every file counted once");
        let reads = counters.worker_reads();
        assert_eq!(reads.len(), workers, "{reads:?}");
        assert_eq!(reads.values().sum::<u64>(), total, "{reads:?}");
        for (w, n) in &reads {
            let files = (0..file_count)
                .filter(|f| f % workers as u64 == *w as u64)
                .count();
            assert_eq!(
                *n,
                files as u64 * lines,
                "worker {w} of {workers}: {reads:?}"
            );
        }
    }
}

/// Two workers read a file source cut into chunks of 4 KiB (about 220 lines, under a batch)
/// that they take in turns, worker 1's downstream sleeping on every batch it sees: worker 0
/// waits for it, never more than `MAX_AHEAD` batches in front, plus the batch the chunk of
/// worker 1's before its own may span.
#[test]
fn a_file_source_waits_for_the_slowest_worker() {
    let (lines, batch) = (30_000u64, 500u64);
    let dir = tempfile::tempdir().unwrap();
    json_lines(dir.path(), 1, lines);
    let source = Arc::new(FileSource {
        name: "readings".into(),
        path: dir.path().to_owned(),
        format: FileFormat::Json,
    });
    let leads = Arc::new(Leads::default());
    let tally = Arc::new(Tally::default());
    let (s, l) = (Arc::clone(&source), Arc::clone(&leads));
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let (s, l) = (Arc::clone(&s), Arc::clone(&l));
        let split = (Arc::clone(&tally), 4096);
        worker.dataflow::<u64, _, _>(|scope| {
            let counters = Arc::new(NodeCounters::default());
            files(
                scope,
                "readings",
                s,
                batch,
                counters,
                true,
                Failure::default(),
                Arc::default(),
                split,
            )
            .inspect_core(move |event| {
                if let Ok((stamp, records)) = event
                    && let Some(&time) = stamp.iter().max()
                {
                    l.observe(index, time, records.len());
                }
            });
        });
    })
    .unwrap();
    let leads = leads.take();
    let last = (lines - 1) / batch;
    assert!(
        MAX_AHEAD * 4 < last,
        "MAX_AHEAD {MAX_AHEAD} against {last} batches"
    );
    assert_eq!(leads.last().map(|l| l.0), Some(last), "{leads:?}");
    let lead = leads
        .iter()
        .filter(|l| l.1 > 0)
        .map(|&(time, seen)| time.saturating_sub(seen - 1))
        .max()
        .unwrap_or(0);
    assert!(
        lead >= MAX_AHEAD,
        "worker 0 never reached the bound (largest lead {lead}): worker 1 was not slow, the run \
         tells nothing"
    );
    for &(time, seen) in &leads {
        let allowed = seen.saturating_sub(1) + MAX_AHEAD + 2;
        assert!(
            time <= allowed,
            "worker 0 emitted time {time} when worker 1 had reached {}",
            seen.saturating_sub(1)
        );
    }
}
