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
use vitalflow_model::envelope::{AuditRecord, Counts, DomainEvent, FileDigest};
use vitalflow_model::row::Row;
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};
use vitalflow_operators::anonymize::DeidReport;

use crate::job::Section;

use crate::nodes::anonymize::AnonymizeOp;
use crate::nodes::dead_letter::DeadLetterOp;
use crate::nodes::file::FileOp;
use crate::nodes::generator::GeneratorOp;
use crate::nodes::ingest::IngestOp;
use crate::nodes::jsonl::JsonlOp;
use crate::nodes::kafka::source::KafkaSourceOp;
use crate::nodes::parquet::ParquetOp;
use crate::nodes::{alert, audit, blackhole, canonize, join, window};
use crate::runtime::alerts::{AlertLoop, AlertPlan};
use crate::runtime::builder::PlannedNode;
use crate::runtime::joins::{JoinLoop, JoinPlan};
use crate::runtime::ops::{RollPolicy, SinkWriter, StageLogic};
use crate::runtime::plan::Plan;
use crate::runtime::rows::{AnonymizeRowsLogic, DecodeLogic, RowJsonlSink, RowParquetSink};
use crate::runtime::saga::{Chain, SagaRole, make_event};
use crate::runtime::stages::{AnonymizeLogic, CanonizeLogic, IngestLogic, JsonlSink, ParquetSink};
use crate::runtime::windows::{WindowLoop, WindowPlan};

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
    /// Their size and SHA-256.
    fn digests_of(&self, batch: u64) -> Vec<FileDigest>;
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
    /// Files of written batches, and their digests.
    files: BTreeMap<u64, (Vec<String>, Vec<FileDigest>)>,
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
            .write(&tag, std::slice::from_ref(&self.rows), &mut Pace::none())?
            .files;
        // As the engine's writer threads do: each file read back once for its digest.
        let digests = crate::audit_trail::digests(self.writer.out(), &files)?;
        self.busy += started.elapsed();
        self.writes += 1;
        self.written += self.rows.len() as u64;
        self.rows.clear();
        for batch in std::mem::take(&mut self.buffered) {
            self.files.insert(batch, (files.clone(), digests.clone()));
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
        self.files
            .get(&batch)
            .map(|(f, _)| f.clone())
            .unwrap_or_default()
    }

    fn digests_of(&self, batch: u64) -> Vec<FileDigest> {
        self.files
            .get(&batch)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
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

/// What the loop knows of a planned node: the kinds it runs, as their operators prepared them.
pub enum Prepared<'a> {
    /// A generator: its events, and the decoder of `flat` rows.
    Generator(&'a GeneratorOp),
    /// Files: their source, and the decoder of declared records.
    File(&'a FileOp),
    /// A Kafka source (not run by the loop).
    Kafka(&'a KafkaSourceOp),
    /// Ingestion.
    Ingest(&'a IngestOp),
    /// Anonymization.
    Anonymize(&'a AnonymizeOp),
    /// Canonization.
    Canonize,
    /// Auditing.
    Audit,
    /// A join.
    Join(&'a Arc<JoinPlan>),
    /// An alert node.
    Alert(&'a Arc<AlertPlan>),
    /// A window.
    Window(&'a Arc<WindowPlan>),
    /// A Parquet sink.
    Parquet(&'a ParquetOp),
    /// A JSON-lines sink.
    Jsonl(&'a JsonlOp),
    /// A dead-letter sink.
    DeadLetter(&'a DeadLetterOp),
    /// A blackhole.
    Blackhole,
    /// A kind the loop does not run.
    Other,
}

/// The loop's view of a planned node.
#[must_use]
pub fn prepared(node: &PlannedNode) -> Prepared<'_> {
    if let Some(g) = node.op::<GeneratorOp>() {
        Prepared::Generator(g)
    } else if let Some(f) = node.op::<FileOp>() {
        Prepared::File(f)
    } else if let Some(k) = node.op::<KafkaSourceOp>() {
        Prepared::Kafka(k)
    } else if let Some(i) = node.op::<IngestOp>() {
        Prepared::Ingest(i)
    } else if let Some(a) = node.op::<AnonymizeOp>() {
        Prepared::Anonymize(a)
    } else if node.op::<canonize::CanonizeOp>().is_some() {
        Prepared::Canonize
    } else if node.op::<audit::AuditOp>().is_some() {
        Prepared::Audit
    } else if let Some(j) = node.op::<join::JoinOp>() {
        Prepared::Join(&j.plan)
    } else if let Some(a) = node.op::<alert::AlertOp>() {
        Prepared::Alert(&a.plan)
    } else if let Some(w) = node.op::<window::WindowOp>() {
        Prepared::Window(&w.plan)
    } else if let Some(p) = node.op::<ParquetOp>() {
        Prepared::Parquet(p)
    } else if let Some(j) = node.op::<JsonlOp>() {
        Prepared::Jsonl(j)
    } else if let Some(d) = node.op::<DeadLetterOp>() {
        Prepared::DeadLetter(d)
    } else if node.op::<blackhole::BlackholeOp>().is_some() {
        Prepared::Blackhole
    } else {
        Prepared::Other
    }
}

/// Runs `plan`'s per-record work in this thread; outputs go to the plan's output folder.
///
/// # Errors
/// A node kind the loop does not run (Kafka, console, filter, map, key-by, ...), or a sink that
/// cannot write.
pub fn straight_line(plan: &Plan) -> Result<StraightLine, String> {
    let started = Instant::now();
    let mut run = Straight::new(plan)?;
    for batch in 0..run.batches {
        run.batch(batch)?;
    }
    for (name, state) in &run.states {
        if let State::Sink(sink) = state {
            run.summary
                .written
                .insert((*name).to_owned(), (sink.written(), sink.busy()));
        }
    }
    run.summary.elapsed = started.elapsed();
    Ok(run.summary)
}

/// The loop over a plan: every node's state across batches.
struct Straight<'p> {
    plan: &'p Plan,
    /// Node indices, each after the nodes it reads.
    order: Vec<usize>,
    states: BTreeMap<&'p str, State>,
    /// The stages whose domain events are read.
    sagas: BTreeMap<&'p str, Saga>,
    /// The nodes reading domain events (audit nodes, and sinks of events or audit records):
    /// those run after the batch's other nodes, once its sinks have written what they will, as
    /// the engine's saga waits for them.
    deferred: BTreeSet<&'p str>,
    batches: u64,
    summary: StraightLine,
}

/// One batch's records on the ports, each taken by its last reader (readers before it get a
/// copy, as timely hands a stream to several operators).
struct Ports<'p> {
    plan: &'p Plan,
    data: BTreeMap<(String, String), Data>,
    /// Readers of each port still to come in this batch.
    unread: BTreeMap<(String, String), usize>,
}

impl Ports<'_> {
    fn take(&mut self, port: &(String, String)) -> Option<Data> {
        let left = self
            .unread
            .entry(port.clone())
            .or_insert_with(|| readers_of(self.plan, port));
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.data.remove(port)
        } else {
            self.data.get(port).map(clone_data)
        }
    }

    /// Keeps a port's records if a node reads them.
    fn put(&mut self, port: (String, String), data: Data) {
        if readers_of(self.plan, &port) > 0 {
            self.data.insert(port, data);
        }
    }

    /// Every record of the ports `inputs` that `unwrap` takes.
    fn gather<T>(
        &mut self,
        inputs: &[(String, String)],
        unwrap: impl Fn(Data) -> Option<Vec<T>>,
    ) -> Vec<T> {
        let mut all = Vec::new();
        for port in inputs {
            if let Some(mut v) = self.take(port).and_then(&unwrap) {
                all.append(&mut v);
            }
        }
        all
    }

    /// Hands a batch's inputs to a sink and lets it write what is due.
    fn sink(
        &mut self,
        sink: &mut dyn SinkState,
        inputs: &[(String, String)],
        batch: u64,
        last: bool,
    ) -> Result<(), String> {
        for port in inputs {
            if let Some(d) = self.take(port) {
                sink.take(d, batch);
            }
        }
        sink.flush(last)
    }
}

/// What one node did with a batch: its output ports, dead letters and, for a stage, records in
/// and out and its detail.
#[derive(Default)]
struct Step {
    produced: Vec<(&'static str, Data)>,
    dead: Vec<DeadLetter>,
    stat: Option<(usize, usize, Option<serde_json::Value>)>,
}

impl Step {
    /// A stage's output and counts.
    fn stage(&mut self, n: usize, out: Data, len: usize, detail: Option<serde_json::Value>) {
        self.stat = Some((n, len, detail));
        self.produced.push(("out", out));
    }
}

impl<'p> Straight<'p> {
    fn new(plan: &'p Plan) -> Result<Self, String> {
        let mut states = BTreeMap::new();
        let mut batches = 1u64;
        for node in &plan.nodes {
            if let Prepared::Generator(g) = prepared(node) {
                batches = batches.max(g.generator.count().div_ceil(plan.batch_size.max(1)));
            }
            states.insert(node.name.as_str(), state_of(plan, node)?);
        }
        let deferred = plan
            .nodes
            .iter()
            .filter(|n| {
                n.inputs.iter().any(|(i, p)| {
                    p == "events"
                        || plan
                            .node(i)
                            .is_some_and(|m| matches!(prepared(m), Prepared::Audit))
                })
            })
            .map(|n| n.name.as_str())
            .collect();
        Ok(Self {
            plan,
            order: dependency_order(plan),
            states,
            sagas: sagas(plan),
            deferred,
            batches,
            summary: StraightLine {
                source_records: 0,
                source_bytes: 0,
                written: BTreeMap::new(),
                dead_letters: 0,
                elapsed: Duration::ZERO,
            },
        })
    }

    /// Runs one batch through every node.
    fn batch(&mut self, batch: u64) -> Result<(), String> {
        let plan = self.plan;
        let last = batch + 1 == self.batches;
        let mut ports = Ports {
            plan,
            data: BTreeMap::new(),
            unread: BTreeMap::new(),
        };
        // Each stage's counts and detail for this batch, for its saga.
        let mut stats: Vec<(&str, Counts, Option<serde_json::Value>)> = Vec::new();
        for &index in &self.order {
            let node = &plan.nodes[index];
            if self.deferred.contains(node.name.as_str()) {
                continue;
            }
            let Some(state) = self.states.get_mut(node.name.as_str()) else {
                continue;
            };
            let step = run_node(
                plan,
                node,
                state,
                batch,
                last,
                &mut ports,
                &mut self.summary,
            )?;
            // A stage reports a batch it had records of (the engine's stage operator reports
            // each time it is given records at).
            if let Some((records_in, records_out, detail)) = step.stat
                && records_in > 0
            {
                let counts = Counts {
                    records_in: records_in as u64,
                    records_out: records_out as u64,
                    rejected: step.dead.len() as u64,
                };
                stats.push((node.name.as_str(), counts, detail));
            }
            self.summary.dead_letters += step.dead.len() as u64;
            let key = |p: &str| (node.name.clone(), p.to_owned());
            for (port, data) in step.produced {
                ports.put(key(port), data);
            }
            ports.put(key("dead-letter"), Data::Dead(step.dead));
        }
        for (stage, events) in self.publish(batch, stats) {
            ports.data.insert(
                (stage.to_owned(), "events".to_owned()),
                Data::Events(events),
            );
        }
        for index in self.order.clone() {
            let node = &plan.nodes[index];
            if !self.deferred.contains(node.name.as_str()) {
                continue;
            }
            self.run_deferred(node, batch, last, &mut ports)?;
        }
        Ok(())
    }

    /// The batch's domain events: a stage's opening events for the batch it reported, and the
    /// closing event of every open batch its sinks have written.
    fn publish(
        &mut self,
        batch: u64,
        stats: Vec<(&'p str, Counts, Option<serde_json::Value>)>,
    ) -> BTreeMap<&'p str, Vec<DomainEvent>> {
        let run = &self.plan.run;
        let mut published: BTreeMap<&str, Vec<DomainEvent>> = BTreeMap::new();
        for (stage, counts, detail) in stats {
            let Some(saga) = self.sagas.get_mut(stage) else {
                continue;
            };
            let (opening, _) = saga.role.events();
            let mut cause = saga
                .role
                .trigger()
                .zip(saga.upstream.as_ref())
                .map(|((_, kind), up)| run.event_id(up, batch, kind));
            let out = published.entry(stage).or_default();
            for kind in opening {
                let event = make_event(
                    run,
                    stage,
                    batch,
                    *kind,
                    cause.take(),
                    Counts::default(),
                    (vec![], vec![]),
                    None,
                );
                cause = Some(event.metadata.event_id.clone());
                out.push(event);
            }
            // Only the de-identification report is kept as a stage's detail.
            let detail = detail.filter(|_| saga.role == SagaRole::Anonymization);
            saga.open.insert(batch, (counts, detail));
        }
        for (stage, saga) in &mut self.sagas {
            let sinks: Vec<&dyn SinkState> = saga
                .sinks
                .iter()
                .filter_map(|s| match self.states.get(s.as_str()) {
                    Some(State::Sink(sink)) => Some(sink.as_ref()),
                    _ => None,
                })
                .collect();
            published
                .entry(stage)
                .or_default()
                .extend(close_batches(run, stage, saga, &sinks));
        }
        published.retain(|_, events| !events.is_empty());
        published
    }

    /// An audit node, or a sink of events or audit records, over the batch.
    fn run_deferred(
        &mut self,
        node: &PlannedNode,
        batch: u64,
        last: bool,
        ports: &mut Ports<'_>,
    ) -> Result<(), String> {
        let Some(state) = self.states.get_mut(node.name.as_str()) else {
            return Ok(());
        };
        let inputs = &node.inputs;
        let produced = match state {
            State::Audit(chain, stash) => {
                for event in ports.gather(inputs, events) {
                    stash.entry(event.payload.batch).or_default().push(event);
                }
                // A batch joins the chain once no stage it audits has it open (the engine's
                // audit waits for its input frontier to pass the batch).
                let below = inputs
                    .iter()
                    .filter_map(|(n, _)| self.sagas.get(n.as_str()))
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
                Some(Data::Audit(records))
            }
            State::Sink(sink) => {
                ports.sink(sink.as_mut(), inputs, batch, last)?;
                None
            }
            _ => {
                for port in inputs {
                    ports.take(port);
                }
                None
            }
        };
        if let Some(data) = produced {
            ports.put((node.name.clone(), "out".to_owned()), data);
        }
        Ok(())
    }
}

/// The closing events of a saga's open batches that its sinks have written.
fn close_batches(
    run: &crate::runtime::saga::RunIdentity,
    stage: &str,
    saga: &mut Saga,
    sinks: &[&dyn SinkState],
) -> Vec<DomainEvent> {
    let below = sinks
        .iter()
        .map(|s| s.durable_below())
        .min()
        .unwrap_or(u64::MAX);
    let (opening, closing) = saga.role.events();
    let mut events = Vec::new();
    while let Some(entry) = saga.open.first_entry() {
        let b = *entry.key();
        if b >= below {
            break;
        }
        let (counts, detail) = entry.remove();
        let mut outputs: Vec<String> = sinks.iter().flat_map(|s| s.files_of(b)).collect();
        outputs.sort();
        outputs.dedup();
        let mut files: Vec<FileDigest> = sinks.iter().flat_map(|s| s.digests_of(b)).collect();
        files.sort();
        files.dedup();
        let cause = run.event_id(stage, b, *opening.last().unwrap_or(&closing));
        events.push(make_event(
            run,
            stage,
            b,
            closing,
            Some(cause),
            counts,
            (outputs, files),
            detail,
        ));
    }
    events
}

/// A node (other than the deferred ones) over one batch.
fn run_node(
    plan: &Plan,
    node: &PlannedNode,
    state: &mut State,
    batch: u64,
    last: bool,
    ports: &mut Ports<'_>,
    summary: &mut StraightLine,
) -> Result<Step, String> {
    let (name, inputs) = (node.name.as_str(), &node.inputs);
    let mut step = Step::default();
    let mut source = |raw: &[RawRecord]| {
        summary.source_records += raw.len() as u64;
        summary.source_bytes += raw.iter().map(|r| r.bytes.len() as u64).sum::<u64>();
    };
    match (prepared(node), state) {
        (Prepared::Generator(g), State::Decode(logic)) => {
            let raw = generate(plan, &g.generator, name, batch, true);
            source(&raw);
            let n = raw.len();
            let out = run_logic(logic, raw, &mut step.dead);
            let len = out.len();
            step.stage(n, Data::Rows(out), len, None);
        }
        (Prepared::Generator(g), _) => {
            let raw = generate(plan, &g.generator, name, batch, false);
            source(&raw);
            step.produced.push(("out", Data::Raw(raw)));
        }
        (Prepared::File(f), state) if batch == 0 => {
            let mut raw = Vec::new();
            f.source
                .read(|r| raw.push(r))
                .map_err(|e| format!("`{name}`: {e}"))?;
            match state {
                State::Decode(logic) => {
                    let n = raw.len();
                    let out = run_logic(logic, raw, &mut step.dead);
                    let len = out.len();
                    step.stage(n, Data::Rows(out), len, None);
                }
                _ => step.produced.push(("out", Data::Raw(raw))),
            }
        }
        (_, State::Ingest(logic)) => {
            let input = ports.gather(inputs, |d| match d {
                Data::Raw(v) => Some(v),
                _ => None,
            });
            let n = input.len();
            let out = run_logic(logic, input, &mut step.dead);
            let len = out.len();
            step.stage(n, Data::Clinical(out), len, None);
        }
        (_, State::Anonymize(logic)) => {
            let input = ports.gather(inputs, |d| match d {
                Data::Clinical(v) => Some(v),
                _ => None,
            });
            let n = input.len();
            let out = run_logic(logic, input, &mut step.dead);
            let len = out.len();
            step.stage(n, Data::Deid(out), len, logic.take_detail());
        }
        (_, State::AnonymizeRows(logic)) => {
            let input = ports.gather(inputs, rows);
            let n = input.len();
            let out = run_logic(logic, input, &mut step.dead);
            let len = out.len();
            step.stage(n, Data::Rows(out), len, logic.take_detail());
        }
        (_, State::Canonize(logic)) => {
            let input = ports.gather(inputs, |d| match d {
                Data::Deid(v) => Some(v),
                _ => None,
            });
            let n = input.len();
            let out = run_logic(logic, input, &mut step.dead);
            let len = out.len();
            step.stage(n, Data::Fhir(out), len, None);
        }
        (_, State::Join(join)) => {
            // The table is the last input.
            if let Some((table, stream)) = inputs.split_last() {
                for row in ports.gather(std::slice::from_ref(table), rows) {
                    join.insert(&row);
                }
                let mut out = Vec::new();
                for row in ports.gather(stream, rows) {
                    join.probe(row, &mut out, &mut step.dead);
                }
                step.produced.push(("out", Data::Rows(out)));
            }
        }
        (_, State::Alert(alert)) => {
            let mut out = Vec::new();
            for row in ports.gather(inputs, rows) {
                alert.observe(row, &mut out, &mut step.dead);
            }
            step.produced.push(("out", Data::Alerts(out)));
        }
        (_, State::Window(window)) => {
            let (mut out, mut late) = (Vec::new(), Vec::new());
            for row in ports.gather(inputs, rows) {
                window.add(row, &mut late, &mut step.dead);
            }
            window.advance(last, &mut out);
            step.produced.push(("out", Data::Rows(out)));
            step.produced.push(("late", Data::Rows(late)));
        }
        (_, State::Sink(sink)) => ports.sink(sink.as_mut(), inputs, batch, last)?,
        _ => {
            for port in inputs {
                ports.take(port);
            }
        }
    }
    Ok(step)
}

/// A node's state for the loop.
fn state_of(plan: &Plan, node: &PlannedNode) -> Result<State, String> {
    let stage = node.name.clone();
    let decode = |decoder: &Option<Arc<vitalflow_operators::decode::Decoder>>| match decoder {
        Some(decoder) => State::Decode(DecodeLogic {
            stage: stage.clone(),
            decoder: Arc::clone(decoder),
            tombstone: None,
        }),
        None => State::None,
    };
    Ok(match prepared(node) {
        Prepared::Generator(g) => decode(&g.decoder),
        Prepared::File(f) => decode(&f.decoder),
        Prepared::Blackhole => State::None,
        Prepared::Audit => State::Audit(
            Chain::new(
                None,
                node.op::<audit::AuditOp>().and_then(|a| a.key.clone()),
            ),
            BTreeMap::new(),
        ),
        Prepared::Ingest(i) => State::Ingest(IngestLogic {
            stage,
            options: Arc::clone(&i.options),
        }),
        Prepared::Anonymize(a) => match &a.rows {
            None => State::Anonymize(AnonymizeLogic {
                stage,
                anonymizer: Arc::clone(&a.anonymizer),
                report: DeidReport::default(),
            }),
            Some((row_plan, schema)) => State::AnonymizeRows(AnonymizeRowsLogic {
                stage,
                anonymizer: Arc::clone(&a.anonymizer),
                plan: Arc::clone(row_plan),
                schema: Arc::clone(schema),
                report: DeidReport::default(),
            }),
        },
        Prepared::Canonize => State::Canonize(CanonizeLogic { stage }),
        Prepared::Join(p) => State::Join(JoinLoop::new(p)),
        Prepared::Alert(p) => State::Alert(AlertLoop::new(p)),
        Prepared::Window(p) => State::Window(WindowLoop::new(p)),
        Prepared::Parquet(p) => State::Sink(parquet_sink(plan, p)),
        Prepared::Jsonl(j) => {
            State::Sink(jsonl_sink(plan, node, &j.dir, j.policy, j.rows.as_ref()))
        }
        // Dead letters: one file at the end (the engine's sink rolls every 5 s instead; the
        // rows are the same).
        Prepared::DeadLetter(d) => State::Sink(Box::new(Buffered::new(
            usize::MAX,
            JsonlSink {
                out: plan.out.clone(),
                dir: d.dir.clone(),
                private: true,
                render: dead_letter_json,
            },
            dead_letters,
        ))),
        Prepared::Kafka(_) | Prepared::Other => {
            return Err(format!(
                "`{}`: the straight-line baseline does not run this kind of node",
                node.name
            ));
        }
    })
}

/// A Parquet sink's buffer and writer.
fn parquet_sink(plan: &Plan, p: &ParquetOp) -> Box<dyn SinkState> {
    let out = plan.out.clone();
    match &p.rows {
        None => Box::new(Buffered::new(
            p.policy.rows,
            ParquetSink {
                out,
                writer: ParquetWriter::new(p.dir.clone(), p.partitioning),
            },
            fhir,
        )),
        Some(schema) => Box::new(Buffered::new(
            p.policy.rows,
            RowParquetSink {
                out,
                writer: RowParquetWriter::new(p.dir.clone(), schema),
            },
            rows,
        )),
    }
}

/// A JSON-lines sink's buffer and writer, by what its first input carries.
fn jsonl_sink(
    plan: &Plan,
    node: &PlannedNode,
    dir: &std::path::Path,
    policy: RollPolicy,
    schema: Option<&Arc<vitalflow_model::row::Schema>>,
) -> Box<dyn SinkState> {
    let (out, dir, roll) = (plan.out.clone(), dir.to_path_buf(), policy.rows);
    if let Some(schema) = schema {
        let writer = RowJsonlSink {
            out,
            dir,
            schema: Arc::clone(schema),
        };
        return Box::new(Buffered::new(roll, writer, rows));
    }
    let first = node
        .inputs
        .first()
        .and_then(|(n, _)| plan.node(n))
        .map(prepared);
    match first {
        Some(Prepared::Audit) => Box::new(Buffered::new(
            roll,
            lines_of(&out, &dir, to_json::<AuditRecord>),
            audit_records,
        )),
        Some(Prepared::Alert(_)) => Box::new(Buffered::new(
            roll,
            lines_of(&out, &dir, to_json::<AlertEvent>),
            alerts,
        )),
        _ if node.inputs.iter().any(|(_, port)| port == "events") => Box::new(Buffered::new(
            roll,
            lines_of(&out, &dir, to_json::<DomainEvent>),
            events,
        )),
        _ => Box::new(Buffered::new(
            roll,
            lines_of(&out, &dir, resource_json),
            fhir,
        )),
    }
}

/// A FHIR resource as the JSON-lines sink writes it.
fn resource_json(r: &CanonicalResource) -> serde_json::Value {
    serde_json::from_str(&r.resource).unwrap_or_default()
}

/// A JSON-lines writer of records rendered by `render`.
fn lines_of<T>(
    out: &std::path::Path,
    dir: &std::path::Path,
    render: fn(&T) -> serde_json::Value,
) -> JsonlSink<T> {
    JsonlSink {
        out: out.to_path_buf(),
        dir: dir.to_path_buf(),
        private: false,
        render,
    }
}

/// The stages whose domain events are read, with the stage upstream of each and the sinks of
/// its output.
fn sagas(plan: &Plan) -> BTreeMap<&str, Saga> {
    let mut sagas = BTreeMap::new();
    for node in &plan.nodes {
        let Some(role) = saga_role(node) else {
            continue;
        };
        let name = &node.name;
        if readers_of(plan, &(name.clone(), "events".to_owned())) == 0 {
            continue;
        }
        let upstream = node
            .inputs
            .iter()
            .map(|(n, _)| n)
            .find(|n| plan.node(n).is_some_and(|m| saga_role(m).is_some()))
            .cloned();
        let sinks = plan
            .nodes
            .iter()
            .filter(|m| {
                m.section == Section::Sinks && m.inputs.iter().any(|(n, p)| n == name && p == "out")
            })
            .map(|m| m.name.clone())
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
    sagas
}

/// The saga role of a stage node (the engine's planner gives the same).
fn saga_role(node: &PlannedNode) -> Option<SagaRole> {
    match prepared(node) {
        Prepared::Generator(GeneratorOp {
            decoder: Some(_), ..
        })
        | Prepared::File(FileOp {
            decoder: Some(_), ..
        })
        | Prepared::Ingest(_)
        | Prepared::Kafka(KafkaSourceOp {
            decoder: Some(_), ..
        }) => Some(SagaRole::Ingestion),
        Prepared::Anonymize(..) => Some(SagaRole::Anonymization),
        Prepared::Canonize => Some(SagaRole::Canonization),
        _ => None,
    }
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
        .filter(|n| n.inputs.contains(port))
        .count()
}

/// Node indices, each after the nodes it reads.
fn dependency_order(plan: &Plan) -> Vec<usize> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    loop {
        let mut progressed = false;
        for (i, node) in plan.nodes.iter().enumerate() {
            if !done.contains(node.name.as_str())
                && node.inputs.iter().all(|(n, _)| done.contains(n.as_str()))
            {
                done.insert(node.name.as_str());
                order.push(i);
                progressed = true;
            }
        }
        if !progressed {
            return order;
        }
    }
}
