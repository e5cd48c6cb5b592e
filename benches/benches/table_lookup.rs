//! The join's as-of table lookup, per stream record (`Throughput::Elements`).
//!
//! The table lives in a differential-dataflow arrangement built and read inside the engine's
//! `join` operator; the smallest public API over it is the operator itself,
//! `vitalflow_engine::runtime::joins::join`. So this runs that operator in a one-worker timely
//! dataflow, as `dataflows/icu-alerting.toml`'s `context-at-reading` node: a left join of the
//! generator's flat readings to the patient-context table (`history = "forever"`, a file table
//! read whole before any reading joins), on `patient_id`, as of the reading's `ts`, taking
//! `ward`, `on_oxygen` and `spo2_scale`.
//!
//! * The table: the generator's context of 100,000 patients, 133,000 versions (a third of the
//!   patients move to the ICU during the run), loaded and arranged before timing.
//! * `join/as-of`: one iteration sends a batch of 10,000 readings (10,000 distinct patients, at
//!   ticks spread over the run, so both before and after a patient's move) at the next dataflow
//!   time and steps the worker until the joined batch is out. Timed: the join's key evaluation,
//!   the exchange, sorting the batch by key and the cursor seeks through the arrangement; the
//!   batch's rows are copied from a pool before the timer starts.
//!
//! `cargo bench -p vitalflow-benches --bench table_lookup`
#![allow(clippy::unwrap_used, missing_docs)]

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use timely::communication::Allocator;
use timely::communication::allocator::thread::Thread;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;
use vitalflow_benches::{CONTEXT_FIELDS, FLAT_FIELDS, decoder_of, schema_of};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_engine::runtime::joins::{JoinPlan, Missing, join};
use vitalflow_engine::runtime::metrics::NodeCounters;
use vitalflow_model::row::Row;
use vitalflow_operators::expression::compile;

const PATIENTS: u64 = 100_000;
/// Readings per batch (one iteration).
const BATCH: u64 = 10_000;
/// Batches in the pool the iterations cycle through.
const POOL: u64 = 20;

type Rows = InputHandle<u64, CapacityContainerBuilder<Vec<Row>>>;

/// The table's rows, and the pool of stream batches.
fn inputs() -> (Vec<Row>, Vec<Vec<Row>>) {
    let ticks = 10;
    let g = Generator::new(GeneratorConfig {
        seed: 42,
        patients: PATIENTS,
        count: PATIENTS * ticks,
        ..GeneratorConfig::default()
    });
    let table_decoder = decoder_of(&CONTEXT_FIELDS);
    let table = g
        .context_lines()
        .iter()
        .enumerate()
        .map(|(i, l)| table_decoder.decode_json(l.as_bytes(), i as u64).unwrap())
        .collect();
    let stream_decoder = decoder_of(&FLAT_FIELDS);
    // Batch b: readings of 10,000 consecutive patients at tick b / 2.
    let stride = PATIENTS * ticks / POOL;
    let pool = (0..POOL)
        .map(|b| {
            (b * stride..b * stride + BATCH)
                .map(|i| {
                    stream_decoder
                        .decode_json(g.flat_line(i).as_bytes(), i)
                        .unwrap()
                })
                .collect()
        })
        .collect();
    (table, pool)
}

fn plan() -> JoinPlan {
    let stream = schema_of(&FLAT_FIELDS, false);
    JoinPlan {
        name: "context-at-reading".into(),
        table: "patient-context".into(),
        key: Arc::new(compile("patient_id", &stream).unwrap()),
        time: 1,
        table_key: 0,
        table_time: Some(1),
        take: vec![2, 3, 4],
        missing: Missing::Null,
        history: i64::MAX,
        bounded_table: true,
        schema: Arc::new(stream),
    }
}

/// The join dataflow on one worker: (stream input, probe, joined rows seen, of which matched).
fn build(worker: &mut Worker, table_rows: Vec<Row>) -> (Rows, ProbeHandle<u64>, Rc<Cell<u64>>) {
    let mut stream = Rows::new();
    let mut table = Rows::new();
    let probe = ProbeHandle::new();
    let matched = Rc::new(Cell::new(0u64));
    let seen = Rc::clone(&matched);
    let plan = Arc::new(plan());
    worker.dataflow::<u64, _, _>(|scope| {
        let (rows, _dead) = join(
            stream.to_stream(scope),
            table.to_stream(scope),
            plan,
            Arc::new(NodeCounters::default()),
        );
        rows.inspect(move |r: &Row| {
            // The table's fields come last; `ward` is never null in a matched version.
            if !r.values[FLAT_FIELDS.len()].is_null() {
                seen.set(seen.get() + 1);
            }
        })
        .probe_with(&probe);
    });
    for r in table_rows {
        table.send(r);
    }
    table.close();
    (stream, probe, matched)
}

fn bench(c: &mut Criterion) {
    let (table_rows, pool) = inputs();
    let versions = table_rows.len();
    let mut worker = Worker::new(
        timely::WorkerConfig::default(),
        Allocator::Thread(Thread::default()),
        Some(Instant::now()),
    );
    let (mut input, probe, matched) = build(&mut worker, table_rows);
    let mut round = 0u64;
    // Sends the next batch of the pool and steps until it is joined; returns the time taken.
    let mut next = |worker: &mut Worker, input: &mut Rows| {
        let batch = pool[(round % POOL) as usize].clone();
        let t = *input.time();
        let started = Instant::now();
        for r in batch {
            input.send(r);
        }
        input.advance_to(t + 1);
        while probe.less_than(&(t + 1)) {
            worker.step();
        }
        round += 1;
        started.elapsed()
    };
    // The first batch waits for the whole table to be arranged: not timed.
    let load = next(&mut worker, &mut input);
    assert_eq!(matched.get(), BATCH, "every reading finds its patient");
    println!(
        "table: {versions} versions of {PATIENTS} patients, loaded and arranged with the first \
         batch in {load:.2?}"
    );

    let mut group = c.benchmark_group("table_lookup");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("join/as-of", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| next(&mut worker, &mut input))
                .sum::<Duration>()
        });
    });
    group.finish();
    assert_eq!(matched.get(), round * BATCH);
    drop(input);
    while worker.step() {}
}

criterion_group! {
    name = benches;
    config = vitalflow_benches::criterion();
    targets = bench
}
criterion_main!(benches);
