//! The straight-line baseline of the throughput harness: a prepared job's per-record work in
//! one thread, as a plain loop, with no dataflow engine (no operators, channels, exchange or
//! progress tracking). The engine's overhead is the engine's time per record and core over this
//! loop's.
//!
//! The loop takes the timestamps in order; within one it runs the nodes in dependency order, each
//! over all its input records, with the same logic objects the dataflow's operators use
//! (ingestion, anonymization, canonization, decoding, join lookups, NEWS2 and rules, windows) and
//! the same sink writers. It publishes the stages' domain events as the saga does (a stage's
//! closing event once every sink fed by its output has written the batch), chains them into the
//! audit trail batch by batch, and writes dead letters to their sink. A join's table must be
//! bounded (a file): it is read whole first.

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
use vitalflow_model::envelope::{AuditRecord, Counts, DomainEvent};
use vitalflow_model::row::Row;
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};
use vitalflow_operators::anonymize::DeidReport;

use crate::job::Section;

use super::alerts::AlertLoop;
use super::joins::JoinLoop;
use super::ops::{SinkWriter, StageLogic};
use super::plan::{Plan, Prepared};
use super::rows::{AnonymizeRowsLogic, DecodeLogic, RowJsonlSink, RowParquetSink};
use super::saga::{Chain, SagaRole, make_event};
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
    Dead(Vec<DeadLetter>),
    Events(Vec<DomainEvent>),
    Audit(Vec<AuditRecord>),
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
    /// An audit node: its chain, and the events of batches not yet complete.
    Audit(Chain, BTreeMap<u64, Vec<DomainEvent>>),
}

/// A sink's buffer and writer.
trait SinkState {
    /// Buffers a batch's rows.
    fn take(&mut self, data: Data, batch: u64);
    fn flush(&mut self, force: bool) -> Result<(), String>;
    fn written(&self) -> u64;
    fn busy(&self) -> Duration;
    /// Every batch before this one is written (all of them while nothing is buffered).
    fn durable_below(&self) -> u64;
    /// The files a written batch's rows went to.
    fn files_of(&self, batch: u64) -> Vec<String>;
}

struct Buffered<T, W> {
    rows: Vec<T>,
    roll: usize,
    writer: W,
    written: u64,
    writes: u64,
    busy: Duration,
    unwrap: fn(Data) -> Option<Vec<T>>,
    /// Batches with buffered rows.
    buffered: BTreeSet<u64>,
    /// Files of written batches.
    files: BTreeMap<u64, Vec<String>>,
}

impl<T, W> Buffered<T, W> {
    fn new(roll: usize, writer: W, unwrap: fn(Data) -> Option<Vec<T>>) -> Self {
        Self {
            rows: Vec::new(),
            roll,
            writer,
            written: 0,
            writes: 0,
            busy: Duration::ZERO,
            unwrap,
            buffered: BTreeSet::new(),
            files: BTreeMap::new(),
        }
    }
}

impl<T: 'static, W: SinkWriter<T>> SinkState for Buffered<T, W> {
    fn take(&mut self, data: Data, batch: u64) {
        if let Some(mut rows) = (self.unwrap)(data)
            && !rows.is_empty()
        {
            self.rows.append(&mut rows);
            self.buffered.insert(batch);
        }
    }

    fn flush(&mut self, force: bool) -> Result<(), String> {
        if self.rows.is_empty() || (!force && self.rows.len() < self.roll) {
            return Ok(());
        }
        let tag = format!("straight-{:06}", self.writes);
        let started = Instant::now();
        let files = self
            .writer
            .write(&tag, std::slice::from_ref(&self.rows), &mut Pace::none())?;
        self.busy += started.elapsed();
        self.writes += 1;
        self.written += self.rows.len() as u64;
        self.rows.clear();
        for batch in std::mem::take(&mut self.buffered) {
            self.files.insert(batch, files.clone());
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn busy(&self) -> Duration {
        self.busy
    }

    fn durable_below(&self) -> u64 {
        self.buffered.first().copied().unwrap_or(u64::MAX)
    }

    fn files_of(&self, batch: u64) -> Vec<String> {
        self.files.get(&batch).cloned().unwrap_or_default()
    }
}

/// A stage whose domain events are read: the saga of its batches, as the engine's reporter
/// publishes it.
struct Saga {
    role: SagaRole,
    /// The stage upstream of it, whose event starts its chain.
    upstream: Option<String>,
    /// Sinks fed by its output: a batch closes once they have written it.
    sinks: Vec<String>,
    /// Open batches: counts and detail so far.
    open: BTreeMap<u64, (Counts, Option<serde_json::Value>)>,
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

fn dead_letters(d: Data) -> Option<Vec<DeadLetter>> {
    match d {
        Data::Dead(v) => Some(v),
        _ => None,
    }
}

fn events(d: Data) -> Option<Vec<DomainEvent>> {
    match d {
        Data::Events(v) => Some(v),
        _ => None,
    }
}

fn audit_records(d: Data) -> Option<Vec<AuditRecord>> {
    match d {
        Data::Audit(v) => Some(v),
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
            Prepared::File(_) | Prepared::Blackhole => State::None,
            Prepared::Audit => State::Audit(Chain::new(None), BTreeMap::new()),
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
            Prepared::Parquet(dir, policy, None, partitioning) => {
                State::Sink(Box::new(Buffered::new(
                    policy.rows,
                    ParquetSink {
                        out: plan.out.clone(),
                        writer: ParquetWriter::new(dir.clone(), *partitioning),
                    },
                    fhir,
                )))
            }
            Prepared::Parquet(dir, policy, Some(schema), _) => {
                State::Sink(Box::new(Buffered::new(
                    policy.rows,
                    RowParquetSink {
                        out: plan.out.clone(),
                        writer: RowParquetWriter::new(dir.clone(), schema),
                    },
                    rows,
                )))
            }
            Prepared::Jsonl(dir, policy, Some(schema)) => State::Sink(Box::new(Buffered::new(
                policy.rows,
                RowJsonlSink {
                    out: plan.out.clone(),
                    dir: dir.clone(),
                    schema: Arc::clone(schema),
                },
                rows,
            ))),
            Prepared::Jsonl(dir, policy, None) => {
                let (out, dir, roll) = (plan.out.clone(), dir.clone(), policy.rows);
                let sink: Box<dyn SinkState> = match input_kind(plan, inputs) {
                    Some(Prepared::Audit) => Box::new(Buffered::new(
                        roll,
                        JsonlSink {
                            out,
                            dir,
                            private: false,
                            render: to_json::<AuditRecord>,
                        },
                        audit_records,
                    )),
                    Some(Prepared::Alert(_)) => Box::new(Buffered::new(
                        roll,
                        JsonlSink {
                            out,
                            dir,
                            private: false,
                            render: to_json::<AlertEvent>,
                        },
                        alerts,
                    )),
                    _ if inputs.iter().any(|(_, port)| port == "events") => {
                        Box::new(Buffered::new(
                            roll,
                            JsonlSink {
                                out,
                                dir,
                                private: false,
                                render: to_json::<DomainEvent>,
                            },
                            events,
                        ))
                    }
                    _ => Box::new(Buffered::new(
                        roll,
                        JsonlSink {
                            out,
                            dir,
                            private: false,
                            render: |r: &CanonicalResource| {
                                serde_json::from_str(&r.resource).unwrap_or_default()
                            },
                        },
                        fhir,
                    )),
                };
                State::Sink(sink)
            }
            // Dead letters: one file at the end (the engine's sink rolls every 5 s instead; the
            // rows are the same).
            Prepared::DeadLetter(dir) => State::Sink(Box::new(Buffered::new(
                usize::MAX,
                JsonlSink {
                    out: plan.out.clone(),
                    dir: dir.clone(),
                    private: true,
                    render: dead_letter_json,
                },
                dead_letters,
            ))),
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

    // The stages whose domain events are read, and the nodes reading them (audit nodes, and
    // sinks of events or audit records): those run after the batch's other nodes, once its sinks
    // have written what they will, as the engine's saga waits for them.
    let mut sagas: BTreeMap<&str, Saga> = BTreeMap::new();
    for (name, _, inputs, prepared) in &plan.nodes {
        let Some(role) = saga_role(prepared) else {
            continue;
        };
        if readers_of(plan, &(name.clone(), "events".to_owned())) == 0 {
            continue;
        }
        let upstream = inputs
            .iter()
            .map(|(n, _)| n)
            .find(|n| node(plan, n).is_some_and(|p| saga_role(p).is_some()))
            .cloned();
        let sinks = plan
            .nodes
            .iter()
            .filter(|(_, section, inputs, _)| {
                *section == Section::Sinks && inputs.iter().any(|(n, p)| n == name && p == "out")
            })
            .map(|(sink, ..)| sink.clone())
            .collect();
        sagas.insert(
            name.as_str(),
            Saga {
                role,
                upstream,
                sinks,
                open: BTreeMap::new(),
            },
        );
    }
    let deferred: BTreeSet<&str> = plan
        .nodes
        .iter()
        .filter(|(_, _, inputs, _)| {
            inputs
                .iter()
                .any(|(n, p)| p == "events" || matches!(node(plan, n), Some(Prepared::Audit)))
        })
        .map(|(name, ..)| name.as_str())
        .collect();

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
        // Each stage's counts and detail for this batch, for its saga.
        let mut stats: Vec<(&str, Counts, Option<serde_json::Value>)> = Vec::new();
        for &index in &order {
            let (name, _, inputs, prepared) = &plan.nodes[index];
            if deferred.contains(name.as_str()) {
                continue;
            }
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
            let mut dead: Vec<DeadLetter> = Vec::new();
            // A stage's records in and out, and its detail.
            let mut stat: Option<(usize, usize, Option<serde_json::Value>)> = None;
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
                    let n = raw.len();
                    let out = run_logic(logic, raw, &mut dead);
                    stat = Some((n, out.len(), None));
                    produced.push((key("out"), Data::Rows(out)));
                }
                (Prepared::SchemaFile(f, _), State::Decode(logic)) if batch == 0 => {
                    let mut raw = Vec::new();
                    f.read(|r| raw.push(r))
                        .map_err(|e| format!("`{name}`: {e}"))?;
                    let n = raw.len();
                    let out = run_logic(logic, raw, &mut dead);
                    stat = Some((n, out.len(), None));
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
                    let n = input.len();
                    let out = run_logic(logic, input, &mut dead);
                    stat = Some((n, out.len(), None));
                    produced.push((key("out"), Data::Clinical(out)));
                }
                (_, State::Anonymize(logic)) => {
                    let input = gather(inputs, &mut take, |d| match d {
                        Data::Clinical(v) => Some(v),
                        _ => None,
                    });
                    let n = input.len();
                    let out = run_logic(logic, input, &mut dead);
                    stat = Some((n, out.len(), logic.take_detail()));
                    produced.push((key("out"), Data::Deid(out)));
                }
                (_, State::AnonymizeRows(logic)) => {
                    let input = gather(inputs, &mut take, rows);
                    let n = input.len();
                    let out = run_logic(logic, input, &mut dead);
                    stat = Some((n, out.len(), logic.take_detail()));
                    produced.push((key("out"), Data::Rows(out)));
                }
                (_, State::Canonize(logic)) => {
                    let input = gather(inputs, &mut take, |d| match d {
                        Data::Deid(v) => Some(v),
                        _ => None,
                    });
                    let n = input.len();
                    let out = run_logic(logic, input, &mut dead);
                    stat = Some((n, out.len(), None));
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
                            sink.take(d, batch);
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
            // A stage reports a batch it had records of (the engine's stage operator reports
            // each time it is given records at).
            if let Some((records_in, records_out, detail)) = stat
                && records_in > 0
            {
                let counts = Counts {
                    records_in: records_in as u64,
                    records_out: records_out as u64,
                    rejected: dead.len() as u64,
                };
                stats.push((name.as_str(), counts, detail));
            }
            summary.dead_letters += dead.len() as u64;
            produced.push((key("dead-letter"), Data::Dead(dead)));
            for (port, data) in produced {
                if readers_of(plan, &port) > 0 {
                    ports.insert(port, data);
                }
            }
        }

        // The batch's domain events: a stage's opening events for the batch it reported, and
        // the closing event of every open batch its sinks have written.
        let mut published: BTreeMap<&str, Vec<DomainEvent>> = BTreeMap::new();
        for (stage, counts, detail) in stats {
            let Some(saga) = sagas.get_mut(stage) else {
                continue;
            };
            let (opening, _) = saga.role.events();
            let mut cause = saga
                .role
                .trigger()
                .zip(saga.upstream.as_ref())
                .map(|((_, kind), up)| plan.run.event_id(up, batch, kind));
            let out = published.entry(stage).or_default();
            for kind in opening {
                let event = make_event(
                    &plan.run,
                    stage,
                    batch,
                    *kind,
                    cause.take(),
                    Counts::default(),
                    vec![],
                    None,
                );
                cause = Some(event.metadata.event_id.clone());
                out.push(event);
            }
            // Only the de-identification report is kept as a stage's detail.
            let detail = detail.filter(|_| saga.role == SagaRole::Anonymization);
            saga.open.insert(batch, (counts, detail));
        }
        for (stage, saga) in &mut sagas {
            let sinks: Vec<&dyn SinkState> = saga
                .sinks
                .iter()
                .filter_map(|s| match states.get(s.as_str()) {
                    Some(State::Sink(sink)) => Some(sink.as_ref()),
                    _ => None,
                })
                .collect();
            let below = sinks
                .iter()
                .map(|s| s.durable_below())
                .min()
                .unwrap_or(u64::MAX);
            let (opening, closing) = saga.role.events();
            while let Some(entry) = saga.open.first_entry() {
                let b = *entry.key();
                if b >= below {
                    break;
                }
                let (counts, detail) = entry.remove();
                let mut outputs: Vec<String> = sinks.iter().flat_map(|s| s.files_of(b)).collect();
                outputs.sort();
                outputs.dedup();
                let cause = plan
                    .run
                    .event_id(stage, b, *opening.last().unwrap_or(&closing));
                let event = make_event(
                    &plan.run,
                    stage,
                    b,
                    closing,
                    Some(cause),
                    counts,
                    outputs,
                    detail,
                );
                published.entry(stage).or_default().push(event);
            }
        }
        for (stage, events) in published {
            ports.insert(
                (stage.to_owned(), "events".to_owned()),
                Data::Events(events),
            );
        }

        // The audit nodes and the sinks of events and audit records.
        for &index in &order {
            let (name, _, inputs, _) = &plan.nodes[index];
            if !deferred.contains(name.as_str()) {
                continue;
            }
            let Some(state) = states.get_mut(name.as_str()) else {
                continue;
            };
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
            let mut produced = None;
            match state {
                State::Audit(chain, stash) => {
                    for event in gather(inputs, &mut take, events) {
                        stash.entry(event.payload.batch).or_default().push(event);
                    }
                    // A batch joins the chain once no stage it audits has it open (the engine's
                    // audit waits for its input frontier to pass the batch).
                    let below = inputs
                        .iter()
                        .filter_map(|(n, _)| sagas.get(n.as_str()))
                        .filter_map(|s| s.open.keys().next().copied())
                        .min()
                        .unwrap_or(u64::MAX);
                    let mut records = Vec::new();
                    while let Some(entry) = stash.first_entry() {
                        if *entry.key() >= below {
                            break;
                        }
                        records.append(&mut chain.record(entry.remove()));
                    }
                    produced = Some(Data::Audit(records));
                }
                State::Sink(sink) => {
                    for port in inputs {
                        if let Some(d) = take(port) {
                            sink.take(d, batch);
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
            let port = (name.clone(), "out".to_owned());
            if let Some(data) = produced
                && readers_of(plan, &port) > 0
            {
                ports.insert(port, data);
            }
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

/// The saga role of a stage node (the engine's planner gives the same).
const fn saga_role(prepared: &Prepared) -> Option<SagaRole> {
    match prepared {
        Prepared::SchemaGenerator(..)
        | Prepared::SchemaFile(..)
        | Prepared::Ingest(_)
        | Prepared::Kafka(_, Some(_)) => Some(SagaRole::Ingestion),
        Prepared::Anonymize(..) => Some(SagaRole::Anonymization),
        Prepared::Canonize => Some(SagaRole::Canonization),
        _ => None,
    }
}

fn node<'p>(plan: &'p Plan, name: &str) -> Option<&'p Prepared> {
    plan.nodes.iter().find(|(n, ..)| n == name).map(|(.., p)| p)
}

/// What a sink's first input is.
fn input_kind<'p>(plan: &'p Plan, inputs: &[(String, String)]) -> Option<&'p Prepared> {
    inputs.first().and_then(|(n, _)| node(plan, n))
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
        Data::Dead(v) => Data::Dead(v.clone()),
        Data::Events(v) => Data::Events(v.clone()),
        Data::Audit(v) => Data::Audit(v.clone()),
    }
}

fn readers_of(plan: &Plan, port: &(String, String)) -> usize {
    plan.nodes
        .iter()
        .filter(|(_, _, inputs, _)| inputs.contains(port))
        .count()
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
