//! The straight-line baseline of the throughput harness: a prepared job's per-record work in
//! one thread, as a plain loop, with no dataflow engine (no operators, channels, exchange or
//! progress tracking). The engine's overhead is the engine's time per record and core over this
//! loop's.
//!
//! The loop takes the timestamps in order; within one it runs the nodes in dependency order, each
//! over all its input records, with the same logic objects the dataflow's operators use
//! (ingestion, anonymization, canonization, decoding, join lookups, NEWS2 and rules, windows) and
//! the same sink writers. It does not publish the stages' domain events nor audit them (a few
//! per batch), and a join's table must be bounded (a file): it is read whole first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vitalflow_connectors::Pace;
use vitalflow_connectors::jsonl::dead_letter_json;
use vitalflow_connectors::parquet::ParquetWriter;
use vitalflow_connectors::parquet_rows::RowParquetWriter;
use vitalflow_model::alert::AlertEvent;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_model::clinical::Ingested;
use vitalflow_model::deid::DeidRecord;
use vitalflow_model::row::Row;
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};
use vitalflow_operators::anonymize::DeidReport;

use super::alerts::AlertLoop;
use super::joins::JoinLoop;
use super::ops::{SinkWriter, StageLogic};
use super::plan::{Plan, Prepared};
use super::rows::{AnonymizeRowsLogic, DecodeLogic, RowJsonlSink, RowParquetSink};
use super::stages::{AnonymizeLogic, CanonizeLogic, IngestLogic, JsonlSink, ParquetSink};
use super::windows::WindowLoop;

/// What the loop did.
#[derive(Debug, Clone)]
pub struct StraightLine {
    /// Records made by the generators (a join's table, read from a file, is not counted).
    pub source_records: u64,
    /// Bytes of the generators' records.
    pub source_bytes: u64,
    /// Rows written and the time spent writing them, by sink.
    pub written: BTreeMap<String, (u64, Duration)>,
    /// Dead letters.
    pub dead_letters: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// One batch's records at a port.
enum Data {
    Raw(Vec<RawRecord>),
    Clinical(Vec<Ingested>),
    Deid(Vec<DeidRecord>),
    Fhir(Vec<CanonicalResource>),
    Rows(Vec<Row>),
    Alerts(Vec<AlertEvent>),
}

/// A node's state across batches.
enum State {
    None,
    Ingest(IngestLogic),
    Anonymize(AnonymizeLogic),
    AnonymizeRows(AnonymizeRowsLogic),
    Canonize(CanonizeLogic),
    Decode(DecodeLogic),
    Join(JoinLoop),
    Alert(AlertLoop),
    Window(WindowLoop),
    Sink(Box<dyn SinkState>),
}

/// A sink's buffer and writer.
trait SinkState {
    fn take(&mut self, data: Data);
    fn flush(&mut self, force: bool) -> Result<(), String>;
    fn written(&self) -> u64;
    fn busy(&self) -> Duration;
}

struct Buffered<T, W> {
    rows: Vec<T>,
    roll: usize,
    writer: W,
    written: u64,
    files: u64,
    busy: Duration,
    unwrap: fn(Data) -> Option<Vec<T>>,
}

impl<T: 'static, W: SinkWriter<T>> SinkState for Buffered<T, W> {
    fn take(&mut self, data: Data) {
        if let Some(mut rows) = (self.unwrap)(data) {
            self.rows.append(&mut rows);
        }
    }

    fn flush(&mut self, force: bool) -> Result<(), String> {
        if self.rows.is_empty() || (!force && self.rows.len() < self.roll) {
            return Ok(());
        }
        let tag = format!("straight-{:06}", self.files);
        let started = Instant::now();
        self.writer
            .write(&tag, std::slice::from_ref(&self.rows), &mut Pace::none())?;
        self.busy += started.elapsed();
        self.files += 1;
        self.written += self.rows.len() as u64;
        self.rows.clear();
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn busy(&self) -> Duration {
        self.busy
    }
}

fn fhir(d: Data) -> Option<Vec<CanonicalResource>> {
    match d {
        Data::Fhir(v) => Some(v),
        _ => None,
    }
}

fn rows(d: Data) -> Option<Vec<Row>> {
    match d {
        Data::Rows(v) => Some(v),
        _ => None,
    }
}

fn alerts(d: Data) -> Option<Vec<AlertEvent>> {
    match d {
        Data::Alerts(v) => Some(v),
        _ => None,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Runs `plan`'s per-record work in this thread; outputs go to the plan's output folder.
///
/// # Errors
/// A node kind the loop does not run (Kafka, console, filter, map, key-by), or a sink that
/// cannot write.
#[allow(clippy::too_many_lines)]
pub fn straight_line(plan: &Plan) -> Result<StraightLine, String> {
    let started = Instant::now();
    let order = dependency_order(plan);
    let mut states: BTreeMap<&str, State> = BTreeMap::new();
    let mut batches = 1u64;
    for (name, _, inputs, prepared) in &plan.nodes {
        let stage = name.clone();
        let state = match prepared {
            Prepared::Generator(g, _) | Prepared::SchemaGenerator(g, ..) => {
                batches = batches.max(g.count().div_ceil(plan.batch_size.max(1)));
                match prepared {
                    Prepared::SchemaGenerator(_, _, decoder) => State::Decode(DecodeLogic {
                        stage,
                        decoder: Arc::clone(decoder),
                        tombstone: None,
                    }),
                    _ => State::None,
                }
            }
            Prepared::SchemaFile(_, decoder) => State::Decode(DecodeLogic {
                stage,
                decoder: Arc::clone(decoder),
                tombstone: None,
            }),
            Prepared::File(_) | Prepared::Audit | Prepared::DeadLetter(_) | Prepared::Blackhole => {
                State::None
            }
            Prepared::Ingest(options) => State::Ingest(IngestLogic {
                stage,
                options: Arc::clone(options),
            }),
            Prepared::Anonymize(anonymizer, None) => State::Anonymize(AnonymizeLogic {
                stage,
                anonymizer: Arc::clone(anonymizer),
                report: DeidReport::default(),
            }),
            Prepared::Anonymize(anonymizer, Some((row_plan, schema))) => {
                State::AnonymizeRows(AnonymizeRowsLogic {
                    stage,
                    anonymizer: Arc::clone(anonymizer),
                    plan: Arc::clone(row_plan),
                    schema: Arc::clone(schema),
                    report: DeidReport::default(),
                })
            }
            Prepared::Canonize => State::Canonize(CanonizeLogic { stage }),
            Prepared::Join(p, _) => State::Join(JoinLoop::new(p)),
            Prepared::Alert(p) => State::Alert(AlertLoop::new(p)),
            Prepared::Window(p) => State::Window(WindowLoop::new(p)),
            Prepared::Parquet(dir, policy, None, partitioning) => State::Sink(Box::new(Buffered {
                rows: Vec::new(),
                roll: policy.rows,
                writer: ParquetSink {
                    out: plan.out.clone(),
                    writer: ParquetWriter::new(dir.clone(), *partitioning),
                },
                written: 0,
                files: 0,
                busy: Duration::ZERO,
                unwrap: fhir,
            })),
            Prepared::Parquet(dir, policy, Some(schema), _) => State::Sink(Box::new(Buffered {
                rows: Vec::new(),
                roll: policy.rows,
                writer: RowParquetSink {
                    out: plan.out.clone(),
                    writer: RowParquetWriter::new(dir.clone(), schema),
                },
                written: 0,
                files: 0,
                busy: Duration::ZERO,
                unwrap: rows,
            })),
            Prepared::Jsonl(dir, policy, Some(schema)) => State::Sink(Box::new(Buffered {
                rows: Vec::new(),
                roll: policy.rows,
                writer: RowJsonlSink {
                    out: plan.out.clone(),
                    dir: dir.clone(),
                    schema: Arc::clone(schema),
                },
                written: 0,
                files: 0,
                busy: Duration::ZERO,
                unwrap: rows,
            })),
            Prepared::Jsonl(dir, policy, None) if inputs_are_alerts(plan, inputs) => {
                State::Sink(Box::new(Buffered {
                    rows: Vec::new(),
                    roll: policy.rows,
                    writer: JsonlSink {
                        out: plan.out.clone(),
                        dir: dir.clone(),
                        private: false,
                        render: to_json::<AlertEvent>,
                    },
                    written: 0,
                    files: 0,
                    busy: Duration::ZERO,
                    unwrap: alerts,
                }))
            }
            // Audit logs: the loop publishes no domain events.
            Prepared::Jsonl(_, _, None) => State::None,
            Prepared::Kafka(..)
            | Prepared::KafkaSink(..)
            | Prepared::Console(_)
            | Prepared::Filter(..)
            | Prepared::Map(..)
            | Prepared::KeyBy(..) => {
                return Err(format!(
                    "`{name}`: the straight-line baseline does not run this kind of node"
                ));
            }
        };
        states.insert(name.as_str(), state);
    }

    let mut summary = StraightLine {
        source_records: 0,
        source_bytes: 0,
        written: BTreeMap::new(),
        dead_letters: 0,
        elapsed: Duration::ZERO,
    };
    for batch in 0..batches {
        let last = batch + 1 == batches;
        let mut ports: BTreeMap<(String, String), Data> = BTreeMap::new();
        // Readers of each port still to come in this batch.
        let mut unread: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut dead: Vec<DeadLetter> = Vec::new();
        for &index in &order {
            let (name, _, inputs, prepared) = &plan.nodes[index];
            let Some(state) = states.get_mut(name.as_str()) else {
                continue;
            };
            // A port's last reader takes its data; readers before it get a copy (as timely
            // hands a stream to several operators).
            let mut take = |port: &(String, String)| -> Option<Data> {
                let left = unread
                    .entry(port.clone())
                    .or_insert_with(|| readers_of(plan, port));
                *left = left.saturating_sub(1);
                if *left == 0 {
                    ports.remove(port)
                } else {
                    ports.get(port).map(clone_data)
                }
            };
            let key = |p: &str| (name.clone(), p.to_owned());
            let mut produced: Vec<((String, String), Data)> = Vec::new();
            match (prepared, state) {
                (Prepared::Generator(g, _), _) => {
                    let raw = generate(plan, g, name, batch, false);
                    summary.source_records += raw.len() as u64;
                    summary.source_bytes += raw.iter().map(|r| r.bytes.len() as u64).sum::<u64>();
                    produced.push((key("out"), Data::Raw(raw)));
                }
                (Prepared::SchemaGenerator(g, ..), State::Decode(logic)) => {
                    let raw = generate(plan, g, name, batch, true);
                    summary.source_records += raw.len() as u64;
                    summary.source_bytes += raw.iter().map(|r| r.bytes.len() as u64).sum::<u64>();
                    let out = run_logic(logic, raw, &mut dead);
                    produced.push((key("out"), Data::Rows(out)));
                }
                (Prepared::SchemaFile(f, _), State::Decode(logic)) if batch == 0 => {
                    let mut raw = Vec::new();
                    f.read(|r| raw.push(r))
                        .map_err(|e| format!("`{name}`: {e}"))?;
                    let out = run_logic(logic, raw, &mut dead);
                    produced.push((key("out"), Data::Rows(out)));
                }
                (Prepared::File(f), _) if batch == 0 => {
                    let mut raw = Vec::new();
                    f.read(|r| raw.push(r))
                        .map_err(|e| format!("`{name}`: {e}"))?;
                    produced.push((key("out"), Data::Raw(raw)));
                }
                (_, State::Ingest(logic)) => {
                    let input = gather(inputs, &mut take, |d| match d {
                        Data::Raw(v) => Some(v),
                        _ => None,
                    });
                    let out = run_logic(logic, input, &mut dead);
                    produced.push((key("out"), Data::Clinical(out)));
                }
                (_, State::Anonymize(logic)) => {
                    let input = gather(inputs, &mut take, |d| match d {
                        Data::Clinical(v) => Some(v),
                        _ => None,
                    });
                    let out = run_logic(logic, input, &mut dead);
                    logic.report = DeidReport::default();
                    produced.push((key("out"), Data::Deid(out)));
                }
                (_, State::AnonymizeRows(logic)) => {
                    let input = gather(inputs, &mut take, rows);
                    let out = run_logic(logic, input, &mut dead);
                    logic.report = DeidReport::default();
                    produced.push((key("out"), Data::Rows(out)));
                }
                (_, State::Canonize(logic)) => {
                    let input = gather(inputs, &mut take, |d| match d {
                        Data::Deid(v) => Some(v),
                        _ => None,
                    });
                    let out = run_logic(logic, input, &mut dead);
                    produced.push((key("out"), Data::Fhir(out)));
                }
                (_, State::Join(join)) => {
                    // The table is the last input.
                    if let Some((table, stream)) = inputs.split_last() {
                        for row in gather(std::slice::from_ref(table), &mut take, rows) {
                            join.insert(&row);
                        }
                        let mut out = Vec::new();
                        for row in gather(stream, &mut take, rows) {
                            join.probe(row, &mut out, &mut dead);
                        }
                        produced.push((key("out"), Data::Rows(out)));
                    }
                }
                (_, State::Alert(alert)) => {
                    let mut out = Vec::new();
                    for row in gather(inputs, &mut take, rows) {
                        alert.observe(row, &mut out, &mut dead);
                    }
                    produced.push((key("out"), Data::Alerts(out)));
                }
                (_, State::Window(window)) => {
                    let (mut out, mut late) = (Vec::new(), Vec::new());
                    for row in gather(inputs, &mut take, rows) {
                        window.add(row, &mut late, &mut dead);
                    }
                    window.advance(last, &mut out);
                    produced.push((key("out"), Data::Rows(out)));
                    produced.push((key("late"), Data::Rows(late)));
                }
                (_, State::Sink(sink)) => {
                    for port in inputs {
                        if let Some(d) = take(port) {
                            sink.take(d);
                        }
                    }
                    sink.flush(last)?;
                }
                _ => {
                    for port in inputs {
                        take(port);
                    }
                }
            }
            for (port, data) in produced {
                if readers_of(plan, &port) > 0 {
                    ports.insert(port, data);
                }
            }
        }
        summary.dead_letters += dead.len() as u64;
        // Dead letters are rendered as the dead-letter sink renders them.
        for d in &dead {
            std::hint::black_box(dead_letter_json(d));
        }
    }
    for (name, state) in &states {
        if let State::Sink(sink) = state {
            summary
                .written
                .insert((*name).to_owned(), (sink.written(), sink.busy()));
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The batch's records of a generator, as its source operator makes them.
fn generate(
    plan: &Plan,
    g: &vitalflow_connectors::generator::Generator,
    name: &str,
    batch: u64,
    flat: bool,
) -> Vec<RawRecord> {
    let from = batch * plan.batch_size;
    let to = (from + plan.batch_size).min(g.count());
    // One clock reading per batch, as the generator source reads one per activation.
    let now_us = vitalflow_model::now_us();
    (from..to)
        .map(|i| {
            let mut raw = if flat {
                RawRecord {
                    source: name.to_owned(),
                    location: format!("generator#{i}"),
                    sequence: i,
                    format: RawFormat::Json,
                    header: None,
                    context: None,
                    bytes: g.flat_line(i).into_bytes(),
                    arrival_us: 0,
                }
            } else {
                g.raw(name, i)
            };
            raw.arrival_us = now_us;
            raw
        })
        .collect()
}

fn run_logic<I, O, L: StageLogic<I, O>>(
    logic: &mut L,
    input: Vec<I>,
    dead: &mut Vec<DeadLetter>,
) -> Vec<O> {
    let mut out = Vec::with_capacity(input.len());
    for record in input {
        logic.process(record, &mut out, dead);
    }
    out
}

fn gather<T>(
    inputs: &[(String, String)],
    take: &mut impl FnMut(&(String, String)) -> Option<Data>,
    unwrap: impl Fn(Data) -> Option<Vec<T>>,
) -> Vec<T> {
    let mut all = Vec::new();
    for port in inputs {
        if let Some(mut v) = take(port).and_then(&unwrap) {
            all.append(&mut v);
        }
    }
    all
}

fn clone_data(d: &Data) -> Data {
    match d {
        Data::Raw(v) => Data::Raw(v.clone()),
        Data::Clinical(v) => Data::Clinical(v.clone()),
        Data::Deid(v) => Data::Deid(v.clone()),
        Data::Fhir(v) => Data::Fhir(v.clone()),
        Data::Rows(v) => Data::Rows(v.clone()),
        Data::Alerts(v) => Data::Alerts(v.clone()),
    }
}

fn readers_of(plan: &Plan, port: &(String, String)) -> usize {
    plan.nodes
        .iter()
        .filter(|(_, _, inputs, _)| inputs.contains(port))
        .count()
}

fn inputs_are_alerts(plan: &Plan, inputs: &[(String, String)]) -> bool {
    inputs.iter().all(|(n, _)| {
        plan.nodes
            .iter()
            .any(|(name, _, _, p)| name == n && matches!(p, Prepared::Alert(_)))
    })
}

/// Node indices, each after the nodes it reads.
fn dependency_order(plan: &Plan) -> Vec<usize> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    loop {
        let mut progressed = false;
        for (i, (name, _, inputs, _)) in plan.nodes.iter().enumerate() {
            if !done.contains(name.as_str())
                && inputs.iter().all(|(n, _)| done.contains(n.as_str()))
            {
                done.insert(name.as_str());
                order.push(i);
                progressed = true;
            }
        }
        if !progressed {
            return order;
        }
    }
}
