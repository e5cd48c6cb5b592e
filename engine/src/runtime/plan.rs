//! Planning: resolves a validated job into what the workers need (keys, files, folders), then
//! builds its timely dataflow on each worker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Concatenate;
use timely::dataflow::operators::generic::operator::Operator as _;
use timely::dataflow::operators::generic::operator::empty;
use vitalflow_connectors::files::{FileFormat, FileSource};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_connectors::jsonl::dead_letter_json;
use vitalflow_connectors::parquet::{ParquetWriter, Partitioning};
use vitalflow_model::alert::AlertEvent;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_model::clinical::Ingested;
use vitalflow_model::deid::DeidRecord;
use vitalflow_model::envelope::{AuditRecord, DomainEvent};
use vitalflow_model::ids::route_hash;
use vitalflow_model::{DeadLetter, RawRecord, Time};
use vitalflow_operators::anonymize::{
    AnonymizeConfig, Anonymizer, DatePolicy, Policy, PseudonymKey,
};
use vitalflow_operators::ingest::{CodeTarget, IngestOptions};

use super::alerts::{self, AlertLatency, AlertPlan, ObservationId};
use super::checkpoint::{Checkpoint, CheckpointSource, PositionLog, remove_uncommitted};
use super::joins::{self, JoinPlan};
use super::kafka_sink::{Render, kafka_sink};
use super::kafka_source::{EventTime, KafkaSource, kafka};
use super::latency::{self, EndToEnd};
use super::metrics::{Failure, NodeCounters};
use super::ops::{RollPolicy, SinkCommit, StageStat, VecStream, blackhole, rolling_sink, stage};
use super::rows::Slot;
use super::rows::{
    AnonymizeRowsLogic, DecodeLogic, FilterLogic, KeyLogic, MapLogic, PassLogic, RowJsonlSink,
    RowParquetSink, Tombstone,
};
use super::saga::{RunIdentity, SagaRole, audit, reporter};
use super::sources;
use super::stages::{
    AnonymizeLogic, CanonizeLogic, IngestLogic, JsonlSink, ParquetSink, keep_none, merge_counts,
};
use super::windows::{self, WindowPlan};
use crate::job::config::{FieldConfig, IngestConfig};
use crate::job::schema;
use crate::job::{Diagnostic, Diagnostics, Job, Node, NodeKind, Section, parse_duration};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use timely::dataflow::operators::Exchange as _;
use toml::Spanned;
use vitalflow_connectors::kafka::{ClientSettings, EMBEDDED, PartitionReader};
use vitalflow_connectors::parquet_rows::RowParquetWriter;
use vitalflow_model::RawFormat;
use vitalflow_model::row::{Row, Schema, Type, Value};
use vitalflow_operators::anonymize::DeidReport;
use vitalflow_operators::anonymize::RowPlan;
use vitalflow_operators::decode::{Decoder, FieldSpec, TimeFormat};
use vitalflow_operators::expression::Compiled;
use vitalflow_operators::window::WindowSpec;

/// A node resolved for running.
pub enum Prepared {
    /// The generator.
    Generator(Arc<Generator>, f64),
    /// The generator's flat readings, decoded into rows.
    SchemaGenerator(Arc<Generator>, f64, Arc<Decoder>),
    /// Files.
    File(Arc<FileSource>),
    /// Files of a declared schema, decoded into rows.
    SchemaFile(Arc<FileSource>, Arc<Decoder>),
    /// A Kafka topic; with a declared schema, decoded into rows.
    Kafka(Arc<KafkaSource>, Option<Arc<Decoder>>),
    /// A Kafka topic to write to.
    KafkaSink(ClientSettings, String),
    /// Ingestion.
    Ingest(Arc<IngestOptions>),
    /// Anonymization with its key; over rows, with what to do with each field.
    Anonymize(Arc<Anonymizer>, Option<(Arc<RowPlan>, Arc<Schema>)>),
    /// `filter` over rows of a schema.
    Filter(Arc<Compiled>, Arc<Schema>),
    /// `map` / `project`: one slot per output field.
    Map(Arc<Vec<Slot>>, Arc<Schema>),
    /// `key-by`: the key field of the output rows, and the expression if it is computed.
    KeyBy(usize, Option<Arc<Compiled>>, Arc<Schema>),
    /// `window`.
    Window(Arc<WindowPlan>),
    /// `join`, with the table's node and port.
    Join(Arc<JoinPlan>, (String, String)),
    /// Canonization.
    Canonize,
    /// Auditing.
    Audit,
    /// Parquet sink: folder and roll policy; the schema when it writes rows.
    Parquet(PathBuf, RollPolicy, Option<Arc<Schema>>, Partitioning),
    /// JSON-lines sink; the schema when it writes rows.
    Jsonl(PathBuf, RollPolicy, Option<Arc<Schema>>),
    /// Dead-letter sink.
    DeadLetter(PathBuf),
    /// `alert`.
    Alert(Arc<AlertPlan>),
    /// Console sink: at most this many lines a second.
    Console(u32),
    /// A sink that counts and drops.
    Blackhole,
}

/// A node of a plan: name, section, inputs (node, port), resolved kind.
pub type PlannedNode = (String, Section, Vec<(String, String)>, Prepared);

/// A job resolved for running.
pub struct Plan {
    /// Run identity.
    pub run: RunIdentity,
    /// Records per batch.
    pub batch_size: u64,
    /// The output folder.
    pub out: PathBuf,
    /// Nodes: name, section, inputs (node, port), resolved kind.
    pub nodes: Vec<PlannedNode>,
    /// Counters, by node name.
    pub counters: BTreeMap<String, Arc<NodeCounters>>,
    /// The schema of every rows port, by node.
    pub schemas: BTreeMap<String, Arc<Schema>>,
    /// Jobs with Kafka sources: checkpoints (where the last one left off, and what to log).
    pub checkpoint: Option<CheckpointPlan>,
    /// Alert counts and latencies, by `alert` node.
    pub alerts: BTreeMap<String, Arc<AlertLatency>>,
    /// End-to-end latency, when the run measures it.
    pub end_to_end: Option<Arc<EndToEnd>>,
}

/// A Kafka source's name, topic, position log, client settings and group.
pub type KafkaLog = (
    String,
    String,
    Arc<Mutex<PositionLog>>,
    ClientSettings,
    String,
);

/// How a job with Kafka sources checkpoints.
pub struct CheckpointPlan {
    /// The checkpoint the run resumes from (empty for a first run).
    pub base: Checkpoint,
    /// The Kafka sources: name, topic, position log, settings and group for commits.
    pub sources: Vec<KafkaLog>,
    /// Where the audit chain goes on: next sequence and previous hash.
    pub audit_head: Option<(u64, String)>,
    /// Watermarks reached, per Kafka source.
    pub watermarks: BTreeMap<String, (Arc<AtomicU64>, u64)>,
    /// Files of the interrupted run removed at the start.
    pub removed: u64,
}

/// A pseudonymization key from its source; `ephemeral` is one key for the whole run, so every
/// node of the job makes the same pseudonyms.
fn key_from(spec: &str, base: &Path, ephemeral: &PseudonymKey) -> Result<PseudonymKey, String> {
    if spec == "ephemeral" {
        return Ok(ephemeral.clone());
    }
    if let Some(var) = spec.strip_prefix("env:") {
        return PseudonymKey::from_env(var).map_err(|e| e.to_string());
    }
    if let Some(path) = spec.strip_prefix("file:") {
        return PseudonymKey::from_file(&base.join(path)).map_err(|e| e.to_string());
    }
    Err(format!(
        "`{spec}` is not `env:NAME`, `file:PATH` or `ephemeral`"
    ))
}

/// `dates = "shift"` or `"year"` (validated), as `anonymize` and `alert` take it.
fn date_policy(dates: &str, max_days: u32) -> DatePolicy {
    if dates == "year" {
        DatePolicy::Year
    } else {
        DatePolicy::Shift { max_days }
    }
}

/// The ingest node's options (its `codes` were validated with the job).
fn ingest_options(c: &IngestConfig) -> IngestOptions {
    IngestOptions {
        codes: c
            .codes
            .iter()
            .filter_map(|(code, target)| Some((code.clone(), CodeTarget::parse(target.get_ref())?)))
            .collect(),
        units: c.units.clone().into_iter().collect(),
    }
}

/// The source a node's records come from (following first inputs), with its Kafka topic.
fn origin_source(job: &Job, node: &Node) -> Option<(String, Option<String>)> {
    let mut n = node;
    for _ in 0..job.nodes.len() {
        match &n.kind {
            NodeKind::Kafka(k) => return Some((n.name.clone(), Some(k.topic.get_ref().clone()))),
            NodeKind::File(_) | NodeKind::Generator(_) => return Some((n.name.clone(), None)),
            _ => {}
        }
        let up = n.inputs.first()?;
        n = job.nodes.iter().find(|m| m.name == up.node)?;
    }
    None
}

/// The schema of the rows a node reads, if it reads rows.
fn input_schema<'j>(job: &'j Job, node: &Node) -> Option<&'j Schema> {
    node.inputs
        .iter()
        .find_map(|i| job.schemas.get(&schema::port_key(&i.node, &i.port)))
}

/// The decoder of a declared schema.
fn decoder(fields: &[FieldConfig]) -> Decoder {
    let specs = fields
        .iter()
        .map(|f| FieldSpec {
            name: f.name.get_ref().clone(),
            ty: Type::parse(f.ty.get_ref()).unwrap_or(Type::String),
            nullable: f.nullable,
            path: f.path.as_ref().map_or_else(
                || vec![f.name.get_ref().clone()],
                |p| p.get_ref().split('.').map(str::to_owned).collect(),
            ),
            column: f.column.clone(),
            time_format: match f.format.as_ref().map(|s| s.get_ref().as_str()) {
                Some("epoch-ms") => TimeFormat::EpochMillis,
                Some("epoch-s") => TimeFormat::EpochSeconds,
                Some("iso8601") => TimeFormat::Iso8601,
                _ => TimeFormat::Auto,
            },
        })
        .collect();
    Decoder::new(specs)
}

/// The slots of a `map` / `project`: each output field copied from the input or computed.
fn slots(
    job: &Job,
    project: bool,
    fields: &[(Spanned<String>, Spanned<String>)],
    input: &Schema,
    output: &Schema,
) -> Result<Vec<Slot>, Vec<Diagnostic>> {
    let mut slots = Vec::with_capacity(output.fields.len());
    for field in &output.fields {
        let declared = fields.iter().find(|(n, _)| *n.get_ref() == field.name);
        let slot = match declared {
            Some((name, source)) => match schema::bare_field(source.get_ref(), input) {
                Some(i) => Slot::Copy(i),
                None => Slot::Compute(
                    Arc::new(schema::expression(
                        &job.text,
                        source,
                        input,
                        name.get_ref(),
                    )?),
                    name.get_ref().clone(),
                ),
            },
            None if !project => Slot::Copy(input.index(&field.name).unwrap_or(0)),
            None => continue,
        };
        slots.push(slot);
    }
    Ok(slots)
}

/// Resolves keys, files and folders. Problems are reported at their place in the job file.
///
/// # Errors
/// Diagnostics for keys that cannot be loaded, missing input paths, output folders that cannot
/// be created.
pub fn prepare(
    job: &Job,
    out: &Path,
    run: RunIdentity,
    embedded: Option<&str>,
    fresh: bool,
    feeding: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<Plan, Diagnostics> {
    let base = job.base_dir();
    let kafka_job = job
        .nodes
        .iter()
        .any(|n| matches!(n.kind, NodeKind::Kafka(_)));
    let previous = if kafka_job && !fresh {
        match Checkpoint::load(out) {
            Ok(c) => c.filter(|c| c.job == job.name),
            Err(e) => {
                return Err(Diagnostics(vec![
                    job.diag(0..0, format!("cannot read the checkpoint: {e}")),
                ]));
            }
        }
    } else {
        None
    };
    let mut kafka_sources = Vec::new();
    let mut watermarks = BTreeMap::new();
    let job_watermark = Arc::new(AtomicU64::new(previous.as_ref().map_or(0, |c| c.time)));
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut nodes = Vec::new();
    let mut counters = BTreeMap::new();
    let mut alerts = BTreeMap::new();
    let ephemeral = PseudonymKey::ephemeral();
    let batch_size = job.settings.batch_size.unwrap_or(10_000);
    // Event-time stamps (Kafka sources): milliseconds per timestamp, if every source agrees.
    let granularities: BTreeSet<u64> = job
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Kafka(k) => parse_duration(k.granularity.get_ref())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            _ => None,
        })
        .collect();
    let event_granularity = (granularities.len() == 1)
        .then(|| granularities.first().copied())
        .flatten();
    for node in &job.nodes {
        let prepared = match &node.kind {
            NodeKind::Generator(g) => {
                let mut cfg = GeneratorConfig {
                    seed: g.seed,
                    patients: g.patients,
                    count: g.count,
                    interval_secs: g.interval_secs,
                    deteriorating_percent: g.deteriorating_percent,
                    ..GeneratorConfig::default()
                };
                if let Some(start) = g
                    .start
                    .as_ref()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                {
                    cfg.start = start.with_timezone(&chrono::Utc);
                }
                let generator = Arc::new(Generator::new(cfg));
                match g.as_file().and_then(|f| f.fields) {
                    Some(fields) => Prepared::SchemaGenerator(
                        generator,
                        g.rate,
                        Arc::new(decoder(fields.get_ref())),
                    ),
                    None => Prepared::Generator(generator, g.rate),
                }
            }
            NodeKind::File(f) => {
                let path = base.join(f.path.get_ref());
                if !path.exists() {
                    errors.push(job.diag(
                        f.path.span(),
                        format!("`{}` does not exist", path.display()),
                    ));
                }
                let format = match f.format.get_ref().as_str() {
                    "envelope" => FileFormat::Envelope,
                    "fhir" => FileFormat::Fhir,
                    "hl7v2" => FileFormat::Hl7v2,
                    "json" => FileFormat::Json,
                    "csv" => FileFormat::Csv {
                        header: f.header.unwrap_or(true),
                    },
                    _ => FileFormat::VitalsCsv {
                        patient_id: f.patient_id.clone().unwrap_or_default(),
                    },
                };
                let source = Arc::new(FileSource {
                    name: node.name.clone(),
                    path,
                    format,
                });
                match &f.fields {
                    Some(fields) => {
                        Prepared::SchemaFile(source, Arc::new(decoder(fields.get_ref())))
                    }
                    None => Prepared::File(source),
                }
            }
            NodeKind::Kafka(k) => {
                let settings = client_settings(&k.brokers, &k.properties, &base, embedded);
                let format = match k.format.get_ref().as_str() {
                    "envelope" => RawFormat::Envelope,
                    "fhir" => RawFormat::Fhir,
                    "json" => RawFormat::Json,
                    "csv" => RawFormat::Csv,
                    _ => RawFormat::Hl7v2,
                };
                let ms = |d: &Spanned<String>| {
                    parse_duration(d.get_ref())
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                };
                let granularity_ms = ms(&k.granularity).max(1);
                let schema_decoder = k.fields.as_ref().map(|f| Arc::new(decoder(f.get_ref())));
                let time = match (&k.event_time, &k.fields) {
                    (Some(t), Some(fields)) => {
                        let field: Vec<FieldConfig> = fields
                            .get_ref()
                            .iter()
                            .filter(|f| f.name.get_ref() == t.get_ref())
                            .cloned()
                            .collect();
                        EventTime::Field(Arc::new(decoder(&field)))
                    }
                    _ if format == RawFormat::Envelope => EventTime::Envelope,
                    _ => EventTime::Kafka,
                };
                let header = if format == RawFormat::Csv {
                    k.fields.as_ref().map(|f| {
                        f.get_ref()
                            .iter()
                            .map(|f| f.column.clone().unwrap_or_else(|| f.name.get_ref().clone()))
                            .collect()
                    })
                } else {
                    None
                };
                let group_id = k
                    .group_id
                    .clone()
                    .unwrap_or_else(|| format!("vitalflow-{}", job.name));
                let resume = previous
                    .as_ref()
                    .and_then(|c| c.sources.get(&node.name))
                    .filter(|r| r.topic == *k.topic.get_ref())
                    .cloned();
                let log = Arc::new(Mutex::new(PositionLog::resuming(resume.as_ref())));
                let watermark = Arc::new(AtomicU64::new(resume.as_ref().map_or(0, |r| r.time)));
                watermarks.insert(node.name.clone(), (Arc::clone(&watermark), granularity_ms));
                kafka_sources.push((
                    node.name.clone(),
                    k.topic.get_ref().clone(),
                    Arc::clone(&log),
                    settings.clone(),
                    group_id.clone(),
                ));
                let tombstones = job.nodes.iter().any(|m| {
                    matches!(m.kind, NodeKind::Join(_))
                        && m.inputs.last().is_some_and(|i| i.node == node.name)
                });
                Prepared::Kafka(
                    Arc::new(KafkaSource {
                        tombstones,
                        name: node.name.clone(),
                        settings,
                        topic: k.topic.get_ref().clone(),
                        group_id,
                        format,
                        header,
                        time,
                        granularity_ms,
                        out_of_orderness: ms(&k.out_of_orderness) / granularity_ms,
                        idle_timeout: parse_duration(k.idle_timeout.get_ref()).unwrap_or_default(),
                        max_drift: (k.max_drift.get_ref() != "off")
                            .then(|| ms(&k.max_drift) / granularity_ms),
                        stop_at_end: k.stop.get_ref() == "end",
                        resume,
                        watermark,
                        job_watermark: Arc::clone(&job_watermark),
                        log,
                        // Only the topic a live feed writes to is still growing.
                        feeding: feeding.clone().filter(|_| {
                            job.embedded.as_ref().is_some_and(|e| {
                                e.feed.get_ref() == "flat" && e.vitals_topic == *k.topic.get_ref()
                            })
                        }),
                    }),
                    schema_decoder,
                )
            }
            NodeKind::KafkaSink(k) => Prepared::KafkaSink(
                client_settings(&k.brokers, &k.properties, &base, embedded),
                k.topic.get_ref().clone(),
            ),
            NodeKind::Window(c, aggregates) => {
                let Some(input) = input_schema(job, node) else {
                    continue;
                };
                let path = format!("operators.{}", node.name);
                match schema::window_parts(&job.text, node, &path, c, aggregates, input) {
                    Ok(p) => {
                        let (aggs, args): (Vec<_>, Vec<_>) = p.aggs.into_iter().unzip();
                        Prepared::Window(Arc::new(WindowPlan {
                            name: node.name.clone(),
                            spec: Arc::new(WindowSpec {
                                kind: p.kind,
                                lateness: p.lateness,
                                aggs,
                            }),
                            key: Arc::new(p.key),
                            time: p.time,
                            args: args.into_iter().map(|a| a.map(Arc::new)).collect(),
                            delay: p.delay,
                            granularity_ms: event_granularity,
                            schema: Arc::new(input.clone()),
                        }))
                    }
                    Err(d) => {
                        errors.extend(d);
                        continue;
                    }
                }
            }
            NodeKind::Join(c) => {
                let path = format!("operators.{}", node.name);
                match schema::join_parts(&job.text, node, &path, c, &job.schemas) {
                    Ok(p) => Prepared::Join(
                        Arc::new(JoinPlan {
                            name: node.name.clone(),
                            table: p.table.0.clone(),
                            key: Arc::new(p.key),
                            time: p.time,
                            table_key: p.table_key,
                            table_time: p.table_time,
                            take: p.take,
                            missing: p.missing,
                            history: p.history,
                            bounded_table: !kafka_job,
                            schema: Arc::new(p.stream),
                        }),
                        p.table,
                    ),
                    Err(d) => {
                        errors.extend(d);
                        continue;
                    }
                }
            }
            NodeKind::Alert(c) => {
                let Some(input) = input_schema(job, node) else {
                    continue;
                };
                let path = format!("operators.{}", node.name);
                let key = match key_from(c.key.get_ref(), &base, &ephemeral) {
                    Ok(k) => k,
                    Err(message) => {
                        errors.push(job.diag(c.key.span(), format!("{path}.key: {message}")));
                        continue;
                    }
                };
                let parts = match schema::alert_parts(&job.text, node, &path, c, input) {
                    Ok(p) => p,
                    Err(d) => {
                        errors.extend(d);
                        continue;
                    }
                };
                let id = match (parts.observation_id, origin_source(job, node)) {
                    (Some(e), _) => ObservationId::Expr(Arc::new(e)),
                    (None, Some((_, Some(topic)))) => ObservationId::Kafka(topic),
                    (None, Some((name, None))) => ObservationId::Position(name),
                    (None, None) => ObservationId::Position(node.name.clone()),
                };
                let latency = Arc::new(AlertLatency::default());
                alerts.insert(node.name.clone(), Arc::clone(&latency));
                Prepared::Alert(Arc::new(AlertPlan {
                    name: node.name.clone(),
                    job: job.name.clone(),
                    spec: Arc::new(parts.spec),
                    patient: Arc::new(parts.patient),
                    time: parts.time,
                    ward: parts.ward.map(Arc::new),
                    id,
                    params: parts
                        .params
                        .into_iter()
                        .map(|(p, e)| (p, Arc::new(e)))
                        .collect(),
                    scale2: parts.scale2.map(Arc::new),
                    anonymizer: Arc::new(Anonymizer::new(AnonymizeConfig {
                        key,
                        dates: date_policy(c.dates.get_ref(), c.max_shift_days),
                        restricted_zip3: Vec::new(),
                        policy: Policy::default(),
                    })),
                    // Kafka and paced generator readings are taken as they arrive.
                    ordered: !kafka_job
                        && !job
                            .nodes
                            .iter()
                            .any(|n| matches!(&n.kind, NodeKind::Generator(g) if g.rate > 0.0)),
                    schema: Arc::new(input.clone()),
                    latency,
                }))
            }
            NodeKind::Console(c) => Prepared::Console(c.limit.max(1)),
            NodeKind::Blackhole(_) => Prepared::Blackhole,
            NodeKind::Ingest(c) => Prepared::Ingest(Arc::new(ingest_options(c))),
            NodeKind::Canonize => Prepared::Canonize,
            NodeKind::Audit => Prepared::Audit,
            NodeKind::Filter(c) => {
                let Some(input) = input_schema(job, node) else {
                    continue;
                };
                match schema::expression(&job.text, &c.condition, input, "condition") {
                    Ok(e) => Prepared::Filter(Arc::new(e), Arc::new(input.clone())),
                    Err(d) => {
                        errors.extend(d);
                        continue;
                    }
                }
            }
            NodeKind::Map { project, fields } => {
                let (Some(input), Some(output)) =
                    (input_schema(job, node), job.schemas.get(&node.name))
                else {
                    continue;
                };
                match slots(job, *project, fields, input, output) {
                    Ok(slots) => Prepared::Map(Arc::new(slots), Arc::new(input.clone())),
                    Err(d) => {
                        errors.extend(d);
                        continue;
                    }
                }
            }
            NodeKind::KeyBy(c) => {
                let (Some(input), Some(output)) =
                    (input_schema(job, node), job.schemas.get(&node.name))
                else {
                    continue;
                };
                let key = output.key.unwrap_or(0);
                if schema::bare_field(c.key.get_ref(), input).is_some() {
                    Prepared::KeyBy(key, None, Arc::new(input.clone()))
                } else {
                    match schema::expression(&job.text, &c.key, input, "key") {
                        Ok(e) => Prepared::KeyBy(key, Some(Arc::new(e)), Arc::new(input.clone())),
                        Err(d) => {
                            errors.extend(d);
                            continue;
                        }
                    }
                }
            }
            NodeKind::Anonymize(a) => match key_from(a.key.get_ref(), &base, &ephemeral) {
                Ok(key) => {
                    let dates = date_policy(a.dates.get_ref(), a.max_shift_days);
                    let restricted_zip3 = a
                        .restricted_zip3
                        .clone()
                        .unwrap_or_else(AnonymizeConfig::default_restricted_zip3);
                    let rows = input_schema(job, node).map(|input| {
                        let plan = RowPlan::new(input, schema::patient_field(input));
                        (Arc::new(plan), Arc::new(input.clone()))
                    });
                    Prepared::Anonymize(
                        Arc::new(Anonymizer::new(AnonymizeConfig {
                            key,
                            dates,
                            restricted_zip3,
                            policy: Policy::with(
                                a.actions
                                    .iter()
                                    .map(|(c, act)| (c.as_str(), act.get_ref().as_str())),
                            )
                            .unwrap_or_default(),
                        })),
                        rows,
                    )
                }
                Err(message) => {
                    errors.push(job.diag(
                        a.key.span(),
                        format!("operators.{}.key: {message}", node.name),
                    ));
                    continue;
                }
            },
            NodeKind::Parquet(p) => Prepared::Parquet(
                out.join(&p.path),
                RollPolicy {
                    rows: p.roll_rows.max(1),
                    interval: parse_duration(p.roll_interval.get_ref()).unwrap_or_default(),
                },
                input_schema(job, node).map(|s| Arc::new(s.clone())),
                p.partition,
            ),
            NodeKind::Jsonl(j) => Prepared::Jsonl(
                out.join(&j.path),
                RollPolicy {
                    rows: usize::MAX,
                    interval: parse_duration(j.roll_interval.get_ref()).unwrap_or_default(),
                },
                input_schema(job, node).map(|s| Arc::new(s.clone())),
            ),
            NodeKind::DeadLetter(d) => Prepared::DeadLetter(out.join(&d.path)),
        };
        counters.insert(node.name.clone(), Arc::new(NodeCounters::default()));
        let inputs = node
            .inputs
            .iter()
            .map(|i| (i.node.clone(), i.port.clone()))
            .collect();
        nodes.push((node.name.clone(), node.section, inputs, prepared));
    }
    if kafka_job
        && let Some(n) = job
            .nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Generator(_) | NodeKind::File(_)))
    {
        errors.push(job.diag(
            n.span.clone(),
            format!(
                "`sources.{}`: a job with Kafka sources reads only Kafka sources (its timestamps \
                 are event times, a {}'s are batch numbers)",
                n.name,
                n.kind.name()
            ),
        ));
    }
    let sink_dirs: Vec<(String, PathBuf)> = nodes
        .iter()
        .filter_map(|(name, _, _, prepared)| match prepared {
            Prepared::Parquet(dir, ..) | Prepared::Jsonl(dir, ..) | Prepared::DeadLetter(dir) => {
                Some((name.clone(), dir.clone()))
            }
            _ => None,
        })
        .collect();
    // Dead letters hold raw PHI: their folder is owner-only from the start, whether or not the
    // run rejects anything.
    let private: Vec<PathBuf> = nodes
        .iter()
        .filter_map(|(_, _, _, prepared)| match prepared {
            Prepared::DeadLetter(dir) => Some(dir.clone()),
            _ => None,
        })
        .collect();
    let create_dir = |dir: &Path| create_sink_dir(dir, private.contains(&dir.to_path_buf()));
    let mut checkpoint = None;
    if kafka_job {
        // Files no checkpoint covers are from an interrupted run: they go, and their records
        // are read again.
        let base_checkpoint = previous.unwrap_or_default();
        let dirs: Vec<PathBuf> = sink_dirs.iter().map(|(_, d)| d.clone()).collect();
        let removed = match remove_uncommitted(out, &dirs, &base_checkpoint.files) {
            Ok(n) => n,
            Err(e) => {
                errors.push(job.diag(0..0, format!("cannot clean the output folder: {e}")));
                0
            }
        };
        for (name, dir) in &sink_dirs {
            if let Err(e) = create_dir(dir) {
                let span = job.node(name).map_or(0..0, |n| n.span.clone());
                errors.push(job.diag(
                    span,
                    format!("cannot prepare the output folder `{}`: {e}", dir.display()),
                ));
            }
        }
        let audit_head = audit_head(job, &nodes, out, &base_checkpoint);
        checkpoint = Some(CheckpointPlan {
            base: base_checkpoint,
            sources: kafka_sources,
            audit_head,
            watermarks,
            removed,
        });
    } else {
        // Each run replaces its sinks' folders: a job's output is the result of one run.
        for (name, dir) in &sink_dirs {
            let result = if dir.exists() {
                std::fs::remove_dir_all(dir)
            } else {
                Ok(())
            };
            if let Err(e) = result.and_then(|()| create_dir(dir)) {
                let span = job.node(name).map_or(0..0, |n| n.span.clone());
                errors.push(job.diag(
                    span,
                    format!("cannot prepare the output folder `{}`: {e}", dir.display()),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    Ok(Plan {
        run,
        batch_size,
        out: out.to_owned(),
        nodes,
        counters,
        schemas: job
            .schemas
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
            .collect(),
        checkpoint,
        alerts,
        end_to_end: None,
    })
}

/// Client settings of a Kafka node; `embedded` (or no brokers) means the embedded broker.
fn client_settings(
    brokers: &Spanned<String>,
    properties: &BTreeMap<String, vitalflow_connectors::kafka::PropertyValue>,
    base: &Path,
    embedded: Option<&str>,
) -> ClientSettings {
    let b = brokers.get_ref().trim();
    let brokers = if b.is_empty() || b == EMBEDDED {
        embedded.unwrap_or_default().to_owned()
    } else {
        b.to_owned()
    };
    ClientSettings {
        brokers,
        properties: properties.clone(),
        base_dir: base.to_owned(),
    }
}

/// The last audit record the checkpoint kept, as (next sequence, its hash).
fn audit_head(
    job: &Job,
    nodes: &[PlannedNode],
    out: &Path,
    checkpoint: &Checkpoint,
) -> Option<(u64, String)> {
    let audit_nodes: Vec<&str> = job
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Audit))
        .map(|n| n.name.as_str())
        .collect();
    let mut head: Option<(u64, String)> = None;
    for (_, _, inputs, prepared) in nodes {
        let Prepared::Jsonl(dir, ..) = prepared else {
            continue;
        };
        if !inputs
            .iter()
            .any(|(n, _)| audit_nodes.contains(&n.as_str()))
        {
            continue;
        }
        let rel = dir
            .strip_prefix(out)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        for file in checkpoint.files.iter().filter(|f| f.starts_with(&rel)) {
            let Ok(text) = std::fs::read_to_string(out.join(file)) else {
                continue;
            };
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if let (Some(seq), Some(hash)) = (v["sequence"].as_u64(), v["hash"].as_str())
                    && head.as_ref().is_none_or(|(next, _)| seq + 1 > *next)
                {
                    head = Some((seq + 1, hash.to_owned()));
                }
            }
        }
    }
    head
}

/// A built output port.
#[derive(Clone)]
enum Port<'s> {
    Raw(VecStream<'s, RawRecord>),
    Clinical(VecStream<'s, Ingested>),
    Deid(VecStream<'s, DeidRecord>),
    Fhir(VecStream<'s, CanonicalResource>),
    Events(VecStream<'s, DomainEvent>),
    Audit(VecStream<'s, AuditRecord>),
    Dead(VecStream<'s, DeadLetter>),
    Rows(VecStream<'s, Row>),
    Alerts(VecStream<'s, AlertEvent>),
}

macro_rules! port_getter {
    ($fn:ident, $variant:ident, $ty:ty) => {
        fn $fn<'s>(p: &Port<'s>) -> Option<VecStream<'s, $ty>> {
            match p {
                Port::$variant(s) => Some(s.clone()),
                _ => None,
            }
        }
    };
}
port_getter!(as_raw, Raw, RawRecord);
port_getter!(as_clinical, Clinical, Ingested);
port_getter!(as_deid, Deid, DeidRecord);
port_getter!(as_fhir, Fhir, CanonicalResource);
port_getter!(as_events, Events, DomainEvent);
port_getter!(as_audit, Audit, AuditRecord);
port_getter!(as_dead, Dead, DeadLetter);
port_getter!(as_rows, Rows, Row);
port_getter!(as_alerts, Alerts, AlertEvent);

struct Builder<'s, 'p> {
    scope: Scope<'s, Time>,
    plan: &'p Plan,
    failure: Failure,
    ports: BTreeMap<(String, String), Port<'s>>,
    stats: BTreeMap<String, (VecStream<'s, StageStat>, SagaRole, Option<String>)>,
    commits: BTreeMap<String, VecStream<'s, SinkCommit>>,
    built: BTreeSet<String>,
    /// Source streams whose progress checkpoints wait for.
    progress: Vec<VecStream<'s, RawRecord>>,
    /// Schemas of rows ports, by node.
    schemas: BTreeMap<String, Arc<Schema>>,
}

impl<'s> Builder<'s, '_> {
    /// Sinks reading `node.out`: a stage's closing event waits for them.
    fn sinks_of(&self, node: &str) -> Vec<String> {
        self.plan
            .nodes
            .iter()
            .filter(|(_, section, inputs, _)| {
                *section == Section::Sinks && inputs.iter().any(|(n, p)| n == node && p == "out")
            })
            .map(|(name, ..)| name.clone())
            .collect()
    }

    fn ready(&self, inputs: &[(String, String)]) -> bool {
        inputs.iter().all(|(n, p)| {
            self.built.contains(n)
                && (p != "events" || self.sinks_of(n).iter().all(|s| self.built.contains(s)))
        })
    }

    fn port(&mut self, node: &str, port: &str) -> Option<Port<'s>> {
        let key = (node.to_owned(), port.to_owned());
        if let Some(p) = self.ports.get(&key) {
            return Some(p.clone());
        }
        if port != "events" {
            return None;
        }
        let (stats, role, upstream) = self.stats.get(node)?.clone();
        let commits: Vec<_> = self
            .sinks_of(node)
            .iter()
            .filter_map(|s| self.commits.get(s).cloned())
            .collect();
        let durable = if commits.is_empty() {
            empty(self.scope)
        } else {
            self.scope.concatenate(commits)
        };
        let merge = if role == SagaRole::Anonymization {
            merge_counts
        } else {
            keep_none
        };
        let events = Port::Events(reporter(
            stats,
            durable,
            node.to_owned(),
            role,
            upstream,
            self.plan.run.clone(),
            merge,
        ));
        self.ports.insert(key, events.clone());
        Some(events)
    }

    fn inputs<T: Clone + 'static>(
        &mut self,
        inputs: &[(String, String)],
        get: fn(&Port<'s>) -> Option<VecStream<'s, T>>,
    ) -> VecStream<'s, T> {
        let streams: Vec<_> = inputs
            .iter()
            .filter_map(|(n, p)| self.port(n, p))
            .filter_map(|p| get(&p))
            .collect();
        if streams.len() == 1 {
            streams
                .into_iter()
                .next()
                .unwrap_or_else(|| empty(self.scope))
        } else {
            self.scope.concatenate(streams)
        }
    }

    /// A source's records, their arrivals noted when the run measures end-to-end latency.
    fn arrivals(&self, raw: VecStream<'s, RawRecord>) -> VecStream<'s, RawRecord> {
        match &self.plan.end_to_end {
            Some(e2e) => latency::track(raw, e2e),
            None => raw,
        }
    }

    fn upstream_stage(&self, inputs: &[(String, String)]) -> Option<String> {
        inputs
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| self.stats.contains_key(n))
    }

    /// A JSON-lines sink over the node's inputs of one kind.
    #[allow(clippy::too_many_arguments)]
    fn jsonl<T: Clone + Send + 'static>(
        &mut self,
        name: &str,
        inputs: &[(String, String)],
        get: fn(&Port<'s>) -> Option<VecStream<'s, T>>,
        dir: &Path,
        policy: RollPolicy,
        private: bool,
        render: fn(&T) -> serde_json::Value,
    ) -> VecStream<'s, SinkCommit> {
        let input = self.inputs(inputs, get);
        let counters = self.plan.counters.get(name).cloned().unwrap_or_default();
        let writer = JsonlSink {
            out: self.plan.out.clone(),
            dir: dir.to_owned(),
            private,
            render,
        };
        rolling_sink(
            input,
            name,
            self.scope.index(),
            policy,
            writer,
            counters,
            self.failure.clone(),
        )
    }

    /// The schema of the rows a node reads, and its key field.
    fn row_schema(&self, inputs: &[(String, String)]) -> Arc<(Schema, Option<usize>)> {
        let schema = inputs
            .iter()
            .find_map(|(n, p)| self.schemas.get(&schema::port_key(n, p)))
            .map_or_else(Schema::default, |s| (**s).clone());
        let key = schema.key;
        Arc::new((schema, key))
    }

    fn build_node(&mut self, name: &str, inputs: &[(String, String)], prepared: &Prepared) {
        let plan = self.plan;
        let counters = plan.counters.get(name).cloned().unwrap_or_default();
        let worker = self.scope.index();
        let out = |b: &mut Self, port: &str, p: Port<'s>| {
            b.ports.insert((name.to_owned(), port.to_owned()), p);
        };
        match prepared {
            Prepared::Generator(g, rate) => {
                let s = sources::generator(
                    self.scope,
                    name,
                    Arc::clone(g),
                    *rate,
                    plan.batch_size,
                    false,
                    counters,
                    true,
                );
                let s = self.arrivals(s);
                out(self, "out", Port::Raw(s));
            }
            Prepared::SchemaGenerator(g, rate, decoder) => {
                let raw = sources::generator(
                    self.scope,
                    name,
                    Arc::clone(g),
                    *rate,
                    plan.batch_size,
                    true,
                    Arc::clone(&counters),
                    false,
                );
                let raw = self.arrivals(raw);
                let logic = DecodeLogic {
                    stage: name.to_owned(),
                    decoder: Arc::clone(decoder),
                    tombstone: None,
                };
                // Each worker decodes what it generated: a patient's readings stay in order.
                let (o, d, s) = stage(raw, Pipeline, name, logic, counters);
                out(self, "out", Port::Rows(o));
                out(self, "dead-letter", Port::Dead(d));
                self.stats
                    .insert(name.to_owned(), (s, SagaRole::Ingestion, None));
            }
            Prepared::File(f) => {
                let s = sources::files(
                    self.scope,
                    name,
                    Arc::clone(f),
                    plan.batch_size,
                    counters,
                    true,
                    self.failure.clone(),
                );
                let s = self.arrivals(s);
                out(self, "out", Port::Raw(s));
            }
            Prepared::SchemaFile(f, decoder) => {
                let raw = sources::files(
                    self.scope,
                    name,
                    Arc::clone(f),
                    plan.batch_size,
                    Arc::clone(&counters),
                    false,
                    self.failure.clone(),
                );
                let raw = self.arrivals(raw);
                let logic = DecodeLogic {
                    stage: name.to_owned(),
                    decoder: Arc::clone(decoder),
                    tombstone: None,
                };
                // Worker 0 reads; every worker decodes.
                let pact = Exchange::new(|r: &RawRecord| r.sequence);
                let (o, d, s) = stage(raw, pact, name, logic, counters);
                out(self, "out", Port::Rows(o));
                out(self, "dead-letter", Port::Dead(d));
                self.stats
                    .insert(name.to_owned(), (s, SagaRole::Ingestion, None));
            }
            Prepared::Kafka(source, decoder) => {
                let raw = kafka(
                    self.scope,
                    Arc::clone(source),
                    Arc::clone(&counters),
                    decoder.is_none(),
                    self.failure.clone(),
                );
                self.progress.push(raw.clone());
                let raw = self.arrivals(raw);
                match decoder {
                    None => out(self, "out", Port::Raw(raw)),
                    Some(decoder) => {
                        let tombstone = source
                            .tombstones
                            .then(|| self.schemas.get(name).and_then(|s| Tombstone::of(s)))
                            .flatten();
                        let logic = DecodeLogic {
                            stage: name.to_owned(),
                            decoder: Arc::clone(decoder),
                            tombstone,
                        };
                        let (o, d, s) = stage(raw, Pipeline, name, logic, counters);
                        out(self, "out", Port::Rows(o));
                        out(self, "dead-letter", Port::Dead(d));
                        self.stats
                            .insert(name.to_owned(), (s, SagaRole::Ingestion, None));
                    }
                }
            }
            Prepared::KafkaSink(settings, topic) => {
                let kind = inputs.first().and_then(|(n, port)| self.port(n, port));
                let (s, t) = (settings.clone(), topic.clone());
                let f = self.failure.clone();
                let c = match kind {
                    Some(Port::Audit(_)) => {
                        let input = self.inputs(inputs, as_audit);
                        let render = keyed_json(|r: &AuditRecord| &r.event.metadata.correlation_id);
                        kafka_sink(input, name, s, t, render, counters, f)
                    }
                    Some(Port::Events(_)) => {
                        let input = self.inputs(inputs, as_events);
                        let render = keyed_json(|e: &DomainEvent| &e.metadata.correlation_id);
                        kafka_sink(input, name, s, t, render, counters, f)
                    }
                    Some(Port::Dead(_)) => {
                        let input = self.inputs(inputs, as_dead);
                        let render: Render<DeadLetter> = Arc::new(|d: &DeadLetter| {
                            let headers = vec![
                                ("vitalflow-reason".to_owned(), d.reason.clone().into_bytes()),
                                ("vitalflow-stage".to_owned(), d.stage.clone().into_bytes()),
                                ("vitalflow-source".to_owned(), d.source.clone().into_bytes()),
                                (
                                    "vitalflow-location".to_owned(),
                                    d.location.clone().into_bytes(),
                                ),
                                (
                                    "vitalflow-format".to_owned(),
                                    d.format.as_str().as_bytes().to_vec(),
                                ),
                            ];
                            (None, d.bytes.clone(), headers)
                        });
                        kafka_sink(input, name, s, t, render, counters, f)
                    }
                    Some(Port::Alerts(_)) => {
                        let input = self.inputs(inputs, as_alerts);
                        let render = keyed_json(|e: &AlertEvent| &e.payload.patient);
                        kafka_sink(input, name, s, t, render, counters, f)
                    }
                    Some(Port::Rows(_)) => {
                        let input = self.inputs(inputs, as_rows);
                        let key_of = self.row_schema(inputs);
                        let render: Render<Row> = Arc::new(move |r: &Row| {
                            let (schema, key) = &*key_of;
                            let key =
                                key.and_then(|k| r.values.get(k))
                                    .map(|v| match v.to_json() {
                                        serde_json::Value::String(s) => s.into_bytes(),
                                        other => other.to_string().into_bytes(),
                                    });
                            (
                                key,
                                serde_json::to_vec(&schema.to_json(r)).unwrap_or_default(),
                                Vec::new(),
                            )
                        });
                        kafka_sink(input, name, s, t, render, counters, f)
                    }
                    _ => {
                        let input = self.inputs(inputs, as_fhir);
                        let render: Render<CanonicalResource> =
                            Arc::new(|r: &CanonicalResource| {
                                (
                                    Some(r.patient.clone().into_bytes()),
                                    r.resource.clone().into_bytes(),
                                    Vec::new(),
                                )
                            });
                        kafka_sink(input, name, s, t, render, counters, f)
                    }
                };
                self.commits.insert(name.to_owned(), c);
            }
            Prepared::Filter(condition, schema) => {
                let input = self.inputs(inputs, as_rows);
                let logic = FilterLogic {
                    stage: name.to_owned(),
                    condition: Arc::clone(condition),
                    schema: Arc::clone(schema),
                };
                let (o, d, _) = stage(input, Pipeline, name, logic, counters);
                out(self, "out", Port::Rows(o));
                out(self, "dead-letter", Port::Dead(d));
            }
            Prepared::Map(slots, schema) => {
                let input = self.inputs(inputs, as_rows);
                let logic = MapLogic {
                    stage: name.to_owned(),
                    slots: Arc::clone(slots),
                    schema: Arc::clone(schema),
                };
                let (o, d, _) = stage(input, Pipeline, name, logic, counters);
                out(self, "out", Port::Rows(o));
                out(self, "dead-letter", Port::Dead(d));
            }
            Prepared::KeyBy(key, expr, schema) => {
                let input = self.inputs(inputs, as_rows);
                let k = *key;
                let route =
                    Exchange::new(move |r: &Row| r.values.get(k).map_or(0, Value::route_hash));
                let (o, d) = match expr {
                    None => {
                        let (o, d, _) = stage(input, route, name, PassLogic, counters);
                        (o, d)
                    }
                    Some(e) => {
                        let logic = KeyLogic {
                            stage: name.to_owned(),
                            key: Arc::clone(e),
                            schema: Arc::clone(schema),
                        };
                        let (o, d, _) = stage(input, Pipeline, name, logic, counters);
                        (
                            o.exchange(move |r: &Row| r.values.get(k).map_or(0, Value::route_hash)),
                            d,
                        )
                    }
                };
                out(self, "out", Port::Rows(o));
                out(self, "dead-letter", Port::Dead(d));
            }
            Prepared::Window(p) => {
                let input = self.inputs(inputs, as_rows);
                let (o, late, d) = windows::window(input, Arc::clone(p), counters);
                out(self, "out", Port::Rows(o));
                out(self, "late", Port::Rows(late));
                out(self, "dead-letter", Port::Dead(d));
            }
            Prepared::Join(p, (table_node, table_port)) => {
                let stream_inputs = &inputs[..inputs.len().saturating_sub(1)];
                let stream = self.inputs(stream_inputs, as_rows);
                let table = self
                    .port(table_node, table_port)
                    .and_then(|t| as_rows(&t))
                    .unwrap_or_else(|| empty(self.scope));
                let (o, d) = joins::join(stream, table, Arc::clone(p), counters);
                out(self, "out", Port::Rows(o));
                out(self, "dead-letter", Port::Dead(d));
            }
            Prepared::Alert(p) => {
                let input = self.inputs(inputs, as_rows);
                let (o, d) = alerts::alerts(input, Arc::clone(p), counters);
                out(self, "out", Port::Alerts(o));
                out(self, "dead-letter", Port::Dead(d));
            }
            Prepared::Console(limit) => {
                let input = self.inputs(inputs, as_alerts);
                alerts::console(input, *limit, counters);
            }
            Prepared::Blackhole => {
                for (n, p) in inputs {
                    match self.port(n, p) {
                        Some(Port::Raw(s)) => blackhole(&s, &counters),
                        Some(Port::Clinical(s)) => blackhole(&s, &counters),
                        Some(Port::Deid(s)) => blackhole(&s, &counters),
                        Some(Port::Fhir(s)) => blackhole(&s, &counters),
                        Some(Port::Events(s)) => blackhole(&s, &counters),
                        Some(Port::Audit(s)) => blackhole(&s, &counters),
                        Some(Port::Dead(s)) => blackhole(&s, &counters),
                        Some(Port::Rows(s)) => blackhole(&s, &counters),
                        Some(Port::Alerts(s)) => blackhole(&s, &counters),
                        None => {}
                    }
                }
            }
            Prepared::Ingest(options) => {
                let input = self.inputs(inputs, as_raw);
                let logic = IngestLogic {
                    stage: name.to_owned(),
                    options: Arc::clone(options),
                };
                let (o, d, s) = stage(
                    input,
                    Exchange::new(|r: &RawRecord| r.sequence),
                    name,
                    logic,
                    counters,
                );
                out(self, "out", Port::Clinical(o));
                out(self, "dead-letter", Port::Dead(d));
                self.stats
                    .insert(name.to_owned(), (s, SagaRole::Ingestion, None));
            }
            Prepared::Anonymize(anonymizer, Some((row_plan, schema))) => {
                let input = self.inputs(inputs, as_rows);
                let upstream = self.upstream_stage(inputs);
                let logic = AnonymizeRowsLogic {
                    stage: name.to_owned(),
                    anonymizer: Arc::clone(anonymizer),
                    plan: Arc::clone(row_plan),
                    schema: Arc::clone(schema),
                    report: DeidReport::default(),
                };
                let (o, d, s) = stage(input, Pipeline, name, logic, counters);
                out(self, "out", Port::Rows(o));
                out(self, "dead-letter", Port::Dead(d));
                self.stats
                    .insert(name.to_owned(), (s, SagaRole::Anonymization, upstream));
            }
            Prepared::Anonymize(anonymizer, None) => {
                let input = self.inputs(inputs, as_clinical);
                let upstream = self.upstream_stage(inputs);
                let logic = AnonymizeLogic {
                    stage: name.to_owned(),
                    anonymizer: Arc::clone(anonymizer),
                    report: Default::default(),
                };
                let pact = Exchange::new(|r: &Ingested| route_hash(r.record.patient_id()));
                let (o, d, s) = stage(input, pact, name, logic, counters);
                out(self, "out", Port::Deid(o));
                out(self, "dead-letter", Port::Dead(d));
                self.stats
                    .insert(name.to_owned(), (s, SagaRole::Anonymization, upstream));
            }
            Prepared::Canonize => {
                let input = self.inputs(inputs, as_deid);
                let upstream = self.upstream_stage(inputs);
                let (o, d, s) = stage(
                    input,
                    Pipeline,
                    name,
                    CanonizeLogic {
                        stage: name.to_owned(),
                    },
                    counters,
                );
                out(self, "out", Port::Fhir(o));
                out(self, "dead-letter", Port::Dead(d));
                self.stats
                    .insert(name.to_owned(), (s, SagaRole::Canonization, upstream));
            }
            Prepared::Audit => {
                let input = self.inputs(inputs, as_events);
                let head = plan.checkpoint.as_ref().and_then(|c| c.audit_head.clone());
                let records = audit(input, name, counters, head);
                out(self, "out", Port::Audit(records));
            }
            Prepared::Parquet(dir, policy, Some(schema), _) => {
                let input = self.inputs(inputs, as_rows);
                let writer = RowParquetSink {
                    out: plan.out.clone(),
                    writer: RowParquetWriter::new(dir.clone(), schema),
                };
                let c = rolling_sink(
                    input,
                    name,
                    worker,
                    *policy,
                    writer,
                    counters,
                    self.failure.clone(),
                );
                self.commits.insert(name.to_owned(), c);
            }
            Prepared::Jsonl(dir, policy, Some(schema)) => {
                let input = self.inputs(inputs, as_rows);
                let writer = RowJsonlSink {
                    out: plan.out.clone(),
                    dir: dir.clone(),
                    schema: Arc::clone(schema),
                };
                let c = rolling_sink(
                    input,
                    name,
                    worker,
                    *policy,
                    writer,
                    counters,
                    self.failure.clone(),
                );
                self.commits.insert(name.to_owned(), c);
            }
            Prepared::Parquet(dir, policy, None, partitioning) => {
                let input = self.inputs(inputs, as_fhir);
                let writer = ParquetSink {
                    out: plan.out.clone(),
                    writer: ParquetWriter::new(dir.clone(), *partitioning),
                };
                let c = rolling_sink(
                    input,
                    name,
                    worker,
                    *policy,
                    writer,
                    counters,
                    self.failure.clone(),
                );
                self.commits.insert(name.to_owned(), c);
            }
            Prepared::Jsonl(dir, policy, None) => {
                let kind = inputs.first().and_then(|(n, port)| self.port(n, port));
                let c = match kind {
                    Some(Port::Audit(_)) => self.jsonl(
                        name,
                        inputs,
                        as_audit,
                        dir,
                        *policy,
                        false,
                        to_json::<AuditRecord>,
                    ),
                    Some(Port::Events(_)) => self.jsonl(
                        name,
                        inputs,
                        as_events,
                        dir,
                        *policy,
                        false,
                        to_json::<DomainEvent>,
                    ),
                    Some(Port::Alerts(_)) => self.jsonl(
                        name,
                        inputs,
                        as_alerts,
                        dir,
                        *policy,
                        false,
                        to_json::<AlertEvent>,
                    ),
                    _ => self.jsonl(
                        name,
                        inputs,
                        as_fhir,
                        dir,
                        *policy,
                        false,
                        |r: &CanonicalResource| {
                            serde_json::from_str(&r.resource).unwrap_or_default()
                        },
                    ),
                };
                self.commits.insert(name.to_owned(), c);
            }
            Prepared::DeadLetter(dir) => {
                let policy = RollPolicy {
                    rows: usize::MAX,
                    interval: std::time::Duration::from_secs(5),
                };
                let c = self.jsonl(name, inputs, as_dead, dir, policy, true, dead_letter_json);
                self.commits.insert(name.to_owned(), c);
            }
        }
        self.built.insert(name.to_owned());
    }
}

/// Creates a sink's folder (and its missing parents); a `private` one (dead letters) is made, or
/// made again, `0700`.
fn create_sink_dir(dir: &Path, private: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

/// A Kafka rendering: the record as JSON, keyed by a string of it (its saga's correlation id).
fn keyed_json<T: serde::Serialize + 'static>(key: fn(&T) -> &String) -> Render<T> {
    Arc::new(move |r: &T| {
        (
            Some(key(r).clone().into_bytes()),
            serde_json::to_vec(r).unwrap_or_default(),
            Vec::new(),
        )
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Builds the job's dataflow in `scope` (called on every worker).
pub fn build<'s>(scope: Scope<'s, Time>, plan: &Plan, failure: Failure) {
    let mut b = Builder {
        scope,
        plan,
        failure,
        ports: BTreeMap::new(),
        stats: BTreeMap::new(),
        commits: BTreeMap::new(),
        built: BTreeSet::new(),
        progress: Vec::new(),
        schemas: plan.schemas.clone(),
    };
    // Build in rounds: a node is built once its inputs are, and a stage's `events` port once the
    // sinks of that stage's output are (its closing event waits for their durability).
    loop {
        let mut progressed = false;
        for (name, _, inputs, prepared) in &plan.nodes {
            if !b.built.contains(name) && b.ready(inputs) {
                b.build_node(name, inputs, prepared);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    if let Some(e2e) = &plan.end_to_end {
        let commits: Vec<_> = b.commits.values().cloned().collect();
        latency::complete(&b.scope.concatenate(commits), e2e);
    }
    if let Some(cp) = &plan.checkpoint {
        let mut streams: Vec<VecStream<'s, SinkCommit>> = b.commits.values().cloned().collect();
        for raw in b.progress.clone() {
            streams.push(
                raw.unary::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
                    Pipeline,
                    "progress",
                    |_, _| |input, _output| input.for_each(|_, _| {}),
                ),
            );
        }
        let commits = b.scope.concatenate(streams);
        let sources = cp
            .sources
            .iter()
            .map(|(name, topic, log, settings, group)| CheckpointSource {
                name: name.clone(),
                topic: topic.clone(),
                log: Arc::clone(log),
                committer: (b.scope.index() == 0)
                    .then(|| PartitionReader::new(settings, topic, group).ok())
                    .flatten()
                    .map(|r| Arc::new(Mutex::new(r))),
            })
            .collect();
        super::checkpoint::coordinator(
            commits,
            plan.run.job.clone(),
            plan.run.run_id.clone(),
            plan.out.clone(),
            cp.base.clone(),
            sources,
            std::time::Duration::from_secs(1),
            b.failure.clone(),
        );
    }
}
