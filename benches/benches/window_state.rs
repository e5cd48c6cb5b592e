//! Window state over a long run: 10M readings of 100,000 patients into 5-minute tumbling
//! windows (count, mean, max, min, last), on 2 workers. Prints the process's resident memory
//! after 1M, 5M and 10M readings, and the same run with windows never released (lateness
//! longer than the run) as the baseline: flat against growing.
//!
//! Then criterion times the window update itself, per reading (`Throughput::Elements`):
//! `vitalflow_operators::window::Windows::add` for each reading of a batch of 10,000 (10,000
//! patients, one reading a minute each: a batch is one minute of event time; same aggregates),
//! then `Windows::advance` to the batch's largest event time less a 30 s delay (1 minute
//! lateness), which emits the closed windows and releases the expired ones. The state carries
//! over from batch to batch, event time moving on, as in a live feed; batches are made outside
//! the timing. Ids: `window_state/update/tumbling-5m` (windows close every fifth batch),
//! `update/sliding-5m-every-1m` (five windows a reading, some close every batch) and
//! `update/session-gap-10m` (sessions stay open: readings come every minute).
//!
//! `cargo bench -p vitalflow-benches --bench window_state` (`-- --events N` for another size of
//! the memory run, `-- --update-only` for the criterion benchmarks alone).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use vitalflow_engine::runtime::metrics::NodeCounters;
use vitalflow_engine::runtime::windows::{WindowPlan, window};
use vitalflow_model::row::{Field, KeyValue, Row, Schema, Type, Value};
use vitalflow_operators::expression::compile;
use vitalflow_operators::window::{
    AggSpec, WindowKind, WindowRecord, WindowSpec, Windows, split_call,
};

const KEYS: u64 = 100_000;
const BATCH: u64 = 10_000;
const START: i64 = 1_767_225_600_000;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn plan(lateness: i64) -> WindowPlan {
    let f = |name: &str, ty| Field {
        name: name.into(),
        ty,
        nullable: false,
        phi: None,
    };
    let schema = Schema {
        fields: vec![
            f("patient", Type::Int),
            f("ts", Type::Timestamp),
            f("hr", Type::Int),
            f("spo2", Type::Int),
        ],
        time: Some(1),
        key: Some(0),
    };
    let mut aggs = Vec::new();
    let mut args = Vec::new();
    for a in ["count()", "mean(hr)", "max(hr)", "min(spo2)", "last(spo2)"] {
        let (func, arg) = split_call(a).unwrap();
        let c = arg.map(|(t, _)| Arc::new(compile(t, &schema).unwrap()));
        aggs.push(AggSpec {
            func,
            arg: c.as_ref().and_then(|c| c.ty()),
        });
        args.push(c);
    }
    WindowPlan {
        name: "per-patient".into(),
        spec: Arc::new(WindowSpec {
            kind: WindowKind::Tumbling { size: 300_000 },
            lateness,
            aggs,
        }),
        key: Arc::new(compile("patient", &schema).unwrap()),
        time: 1,
        args,
        delay: 30_000,
        granularity_ms: None,
        schema: Arc::new(schema),
    }
}

/// Runs `events` readings; returns (RSS in MiB at each checkpoint, window rows out, seconds).
fn run(events: u64, lateness: i64, checkpoints: &[u64]) -> (Vec<(u64, f64)>, u64, f64) {
    let plan = Arc::new(plan(lateness));
    let out = Arc::new(AtomicU64::new(0));
    let fed = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let checkpoints = checkpoints.to_vec();
    let started = Instant::now();
    let (o2, f2, s2) = (Arc::clone(&out), Arc::clone(&fed), Arc::clone(&samples));
    timely::execute(timely::Config::process(2), move |worker| {
        let (index, peers) = (worker.index() as u64, worker.peers() as u64);
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Row>>>::new();
        let probe = ProbeHandle::new();
        let o3 = Arc::clone(&o2);
        let p = Arc::clone(&plan);
        worker.dataflow::<u64, _, _>(|scope| {
            let (rows, _late, _dead) =
                window(input.to_stream(scope), p, Arc::new(NodeCounters::default()));
            use timely::dataflow::operators::Inspect;
            rows.inspect(move |_| {
                o3.fetch_add(1, Ordering::Relaxed);
            })
            .probe_with(&probe);
        });
        let mut next_checkpoint = 0;
        for batch in 0..events.div_ceil(BATCH) {
            // Each worker feeds its share of the batch: reading i is patient i % KEYS, once a
            // minute, spread over the minute.
            let first = batch * BATCH;
            let last = (first + BATCH).min(events);
            let mut i = first + index;
            while i < last {
                let (patient, round) = (i % KEYS, i / KEYS);
                let ts = START + i64::try_from(round * 60_000 + patient * 60_000 / KEYS).unwrap();
                input.send(Row {
                    values: vec![
                        Value::Int(i64::try_from(patient).unwrap()),
                        Value::Timestamp(ts),
                        Value::Int(i64::try_from(60 + i % 50).unwrap()),
                        Value::Int(i64::try_from(90 + i % 10).unwrap()),
                    ],
                    sequence: i,
                    tombstone: false,
                    arrival_us: 0,
                });
                i += peers;
            }
            input.advance_to(batch + 1);
            // At most two batches in flight.
            while probe.less_than(&batch.saturating_sub(1)) {
                worker.step();
            }
            if index == 0 {
                let done = f2.fetch_add(last - first, Ordering::Relaxed) + (last - first);
                if next_checkpoint < checkpoints.len() && done >= checkpoints[next_checkpoint] {
                    s2.lock().unwrap().push((done, rss_mib()));
                    next_checkpoint += 1;
                }
            }
        }
        input.close();
        while worker.step() {}
    })
    .unwrap();
    let samples = samples.lock().unwrap().clone();
    (
        samples,
        out.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

/// Patients of the update benchmark: one batch is one reading of each.
const UPDATE_KEYS: u64 = BATCH;

/// Batch `round` of the update benchmark: readings `round × BATCH ..` (reading i is patient
/// i % UPDATE_KEYS, once a minute, spread over the minute), as the window operator prepares
/// them.
fn update_batch(round: u64) -> Vec<WindowRecord> {
    (round * BATCH..(round + 1) * BATCH)
        .map(|i| {
            let (patient, minute) = (i % UPDATE_KEYS, i / UPDATE_KEYS);
            let hr = Value::Int(i64::try_from(60 + i % 50).unwrap());
            let spo2 = Value::Int(i64::try_from(90 + i % 10).unwrap());
            WindowRecord {
                key: KeyValue(Value::Int(i64::try_from(patient).unwrap())),
                time: START
                    + i64::try_from(minute * 60_000 + patient * 60_000 / UPDATE_KEYS).unwrap(),
                seq: i,
                args: vec![Value::Null, hr.clone(), hr, spo2.clone(), spo2],
            }
        })
        .collect()
}

/// Criterion: `Windows::add` per reading and `Windows::advance` per batch, for three kinds.
fn update_benchmarks() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let spec_of = |kind| {
        let p = plan(60_000);
        Arc::new(WindowSpec {
            kind,
            lateness: p.spec.lateness,
            aggs: p.spec.aggs.clone(),
        })
    };
    let mut group = c.benchmark_group("window_state");
    // Samples of equal size: each averages over several window closings.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BATCH));
    for (id, kind) in [
        ("update/tumbling-5m", WindowKind::Tumbling { size: 300_000 }),
        (
            "update/sliding-5m-every-1m",
            WindowKind::Sliding {
                size: 300_000,
                slide: 60_000,
            },
        ),
        (
            "update/session-gap-10m",
            WindowKind::Session { gap: 600_000 },
        ),
    ] {
        let mut windows = Windows::new(spec_of(kind));
        let mut round = 0;
        group.bench_function(id, |b| {
            b.iter_batched(
                || {
                    round += 1;
                    update_batch(round - 1)
                },
                |batch| {
                    let mut late = 0u64;
                    for r in &batch {
                        late += u64::from(!windows.add(std::hint::black_box(r)));
                    }
                    let max = batch.iter().map(|r| r.time).max().unwrap_or(i64::MIN);
                    (windows.advance(max - 30_000), late, batch)
                },
                BatchSize::LargeInput,
            );
        });
        assert!(!windows.is_empty());
    }
    group.finish();
    c.final_summary();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The memory run first, in a fresh process: its RSS figures owe nothing to the benchmarks.
    if !args.iter().any(|a| a == "--update-only") {
        memory_run(&args);
    }
    update_benchmarks();
}

/// The long run, with the process's memory at checkpoints.
fn memory_run(args: &[String]) {
    let events = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(10_000_000u64);
    let checkpoints = [events / 10, events / 2, events];
    println!(
        "window_state: {events} readings, {KEYS} patients, 5-minute tumbling windows, 2 workers"
    );
    let (bounded, rows, secs) = run(events, 60_000, &checkpoints);
    println!(
        "released after 1m lateness: {rows} window rows, {:.1} s ({:.0} readings/s)",
        secs,
        events as f64 / secs
    );
    for (n, mib) in &bounded {
        println!("  RSS after {n:>10} readings: {mib:8.1} MiB");
    }
    let (kept, rows, secs) = run(events / 2, i64::MAX / 4, &checkpoints[..2]);
    println!(
        "baseline, never released (lateness longer than the run), {} readings: {rows} window rows, {:.1} s",
        events / 2,
        secs
    );
    for (n, mib) in &kept {
        println!("  RSS after {n:>10} readings: {mib:8.1} MiB");
    }
    if let (Some(first), Some(last)) = (bounded.first(), bounded.last()) {
        println!(
            "ratio RSS {}M / {}M readings, released: {:.2}",
            last.0 / 1_000_000,
            first.0 / 1_000_000,
            last.1 / first.1.max(1e-9)
        );
    }
    if let (Some(first), Some(last)) = (kept.first(), kept.last()) {
        println!(
            "ratio RSS {}M / {}M readings, never released: {:.2}",
            last.0 / 1_000_000,
            first.0 / 1_000_000,
            last.1 / first.1.max(1e-9)
        );
    }
}
