//! Node kinds: one module each, holding everything about the kind.
//!
//! A kind's module has its settings struct (the `[sources.NAME]`, `[operators.NAME]` or
//! `[sinks.NAME]` table, typed and parsed once, every field documented), its checks, the schema
//! of the rows it outputs, and the operator it builds on each worker. [`NodeSpec`] is what the
//! job parser, the validator and the planner ask of a kind; [`Operator`] is what a planned node
//! builds. The registry at the end of this file is the one other place a kind is named.

pub mod records;
pub mod settings;

pub mod alert;
pub mod anonymize;
pub mod audit;
pub mod blackhole;
pub mod canonize;
pub mod console;
pub mod dead_letter;
pub mod dedupe;
pub mod file;
pub mod filter;
pub mod generator;
pub mod ingest;
pub mod join;
pub mod jsonl;
pub mod kafka;
pub mod key_by;
pub mod map;
pub mod mllp;
pub mod notify;
pub mod parquet;
pub mod tabulate;
pub mod window;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use vitalflow_model::row::Schema;
use vitalflow_operators::anonymize::PseudonymKey;

use crate::job::schema::{self, Gaps, Schemas};
use crate::job::{Diagnostic, InputRef, Job, JobText, Node, PortKind, Section};
use crate::runtime::alerts::AlertLatency;
use crate::runtime::builder::{Builder, PlannedNode};
use crate::runtime::checkpoint::Checkpoint;
use crate::runtime::plan::SourceLog;

/// What the job parser, the validator and the planner ask of a node kind.
pub trait NodeSpec: fmt::Debug + Send + Sync {
    /// Reads the node's table. The default deserializes the settings struct, reporting every
    /// unknown field and wrong value at its place.
    fn parse(d: &mut Decode<'_, '_>) -> Option<Self>
    where
        Self: Sized + DeserializeOwned,
    {
        d.decode()
    }

    /// The `kind` string.
    fn kind(&self) -> &'static str;

    /// The upstream ports as written, in order.
    fn inputs(&self) -> Vec<Spanned<String>>;

    /// Output ports and what they carry. (An `anonymize` node over rows outputs rows.)
    fn outputs(&self) -> &'static [(&'static str, PortKind)];

    /// The port kinds the node takes on its inputs.
    fn accepts(&self) -> &'static [PortKind];

    /// Whether the node is a stage that publishes domain events.
    fn is_stage(&self) -> bool {
        false
    }

    /// Checks of the settings that need nothing but the node.
    fn check(&self, _c: &mut Check<'_>) {}

    /// The schema of each of the node's rows ports, its expressions compiled against its input
    /// (kept in the node for the planner). Problems go to `r.errors`.
    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        // Only the check that rows inputs have the same fields.
        let _ = r.input();
        Vec::new()
    }

    /// Resolves what the node needs to run (keys, files, folders); `None` after reporting
    /// problems in `p.errors`.
    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>>;
}

/// Where a planned node's output goes, besides its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Only to its ports (sources and operators).
    Ports,
    /// Files in a folder the run owns (cleaned up on restart, checkpointed); `private` (dead
    /// letters hold raw PHI): owner-only.
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Whether the folder is owner-only.
        private: bool,
    },
    /// Outside the run: a Kafka topic, standard output, nowhere.
    External,
}

/// A planned node: what it builds on each worker.
pub trait Operator: Any + Send + Sync {
    /// Builds the node's operators on a worker, reading its inputs' ports and adding its own.
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode);

    /// Where its output goes.
    fn output(&self) -> Output;
}

/// A node's table as the parser reads it.
pub struct Decode<'a, 'de> {
    pub(crate) text: &'a JobText,
    pub(crate) value: &'a Spanned<DeValue<'de>>,
    pub(crate) table: &'a DeTable<'de>,
    /// `section.name`.
    pub(crate) path: &'a str,
    /// The span of the table's name.
    pub(crate) span: Range<usize>,
    pub(crate) errors: &'a mut Vec<Diagnostic>,
}

impl Decode<'_, '_> {
    /// Deserializes the table (see [`NodeSpec::parse`]).
    pub(crate) fn decode<T: DeserializeOwned>(&mut self) -> Option<T> {
        crate::job::decode(self.text, self.value, self.path, self.errors)
    }

    /// A table of `name = "text"` (a `map`'s `fields`, a `window`'s `aggregates`), in declared
    /// order, with positions; `None` when it is missing.
    pub(crate) fn named_strings(
        &mut self,
        key: &str,
        what: &str,
    ) -> Option<Vec<(Spanned<String>, Spanned<String>)>> {
        crate::job::named_strings(self.text, self.table, self.path, key, what, self.errors)
    }

    /// Reports a problem at the node's name.
    pub(crate) fn at_node(&mut self, message: String) {
        let d = self.text.diag(self.span.start, message);
        self.errors.push(d);
    }
}

/// A node being checked.
pub struct Check<'a> {
    pub(crate) text: &'a JobText,
    /// The node's name, section and span.
    pub(crate) node: &'a Node,
    /// `section.name`.
    pub(crate) path: &'a str,
    pub(crate) errors: &'a mut Vec<Diagnostic>,
}

impl Check<'_> {
    /// Reports a problem at a byte offset.
    pub(crate) fn at(&mut self, offset: usize, message: String) {
        let d = self.text.diag(offset, message);
        self.errors.push(d);
    }

    /// Reports a problem at the node's name.
    pub(crate) fn at_node(&mut self, message: String) {
        self.at(self.node.span.start, message);
    }
}

/// A node whose schemas are being inferred.
pub struct Resolve<'a> {
    pub(crate) text: &'a JobText,
    /// The span of its table name.
    pub(crate) span: Range<usize>,
    /// Its upstream ports.
    pub(crate) inputs: &'a [InputRef],
    /// `section.name`.
    pub(crate) path: &'a str,
    /// The schemas of the ports resolved so far.
    pub(crate) schemas: &'a Schemas,
    /// What its output lacks because of problems reported upstream (starts as its input's).
    pub(crate) gaps: &'a mut Gaps,
    pub(crate) errors: &'a mut Vec<Diagnostic>,
}

impl Resolve<'_> {
    /// The schema of the node's rows inputs (all the same), if it takes rows.
    pub(crate) fn input(&mut self) -> Option<Schema> {
        schema::input_schema(self.text, self.inputs, self.path, self.schemas, self.errors)
    }

    /// Reports a problem at the node's name.
    pub(crate) fn at_node(&mut self, message: String) {
        let d = self.text.diag(self.span.start, message);
        self.errors.push(d);
    }
}

/// What compiling a node's expressions gave, kept in the node for the planner.
pub struct Resolved<T>(Option<Arc<T>>);

impl<T> Clone for Resolved<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Resolved<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> fmt::Debug for Resolved<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "resolved"
        } else {
            "unresolved"
        })
    }
}

impl<T> Resolved<T> {
    /// Keeps what resolving gave.
    pub(crate) fn set(&mut self, value: T) {
        self.0 = Some(Arc::new(value));
    }

    /// What resolving gave, if it succeeded.
    pub(crate) fn get(&self) -> Option<&Arc<T>> {
        self.0.as_ref()
    }
}

/// What the planner knows while it prepares the nodes.
pub struct Prepare<'a> {
    pub(crate) job: &'a Job,
    /// The node being prepared.
    pub(crate) node: &'a Node,
    /// `section.name`.
    pub(crate) path: String,
    /// The job file's folder (relative paths).
    pub(crate) base: PathBuf,
    /// The output folder.
    pub(crate) out: &'a Path,
    /// The run's one random key, for `ephemeral`.
    pub(crate) ephemeral: &'a PseudonymKey,
    /// The embedded broker's address, when it runs.
    pub(crate) embedded: Option<&'a str>,
    /// Kafka sources: where they resume and what they log.
    pub(crate) kafka: &'a mut KafkaPlan,
    /// Alert counts and latencies, by `alert` node.
    pub(crate) alerts: &'a mut BTreeMap<String, Arc<AlertLatency>>,
    pub(crate) errors: &'a mut Vec<Diagnostic>,
}

impl Prepare<'_> {
    /// The schema of the rows the node reads, if it reads rows.
    pub(crate) fn input_schema(&self) -> Option<&Schema> {
        self.node
            .inputs
            .iter()
            .find_map(|i| self.job.schemas.get(&schema::port_key(&i.node, &i.port)))
    }

    /// The schema of the rows the node reads; reported when missing (a job that validated has
    /// it: its absence is a bug, never a node left out in silence).
    pub(crate) fn rows(&mut self) -> Option<Schema> {
        let rows = self.input_schema().cloned();
        if rows.is_none() {
            self.missing("the schema of its input rows");
        }
        rows
    }

    /// What validation compiled for the node; reported when missing, as for [`Self::rows`].
    pub(crate) fn resolved<'r, T>(&mut self, r: &'r Resolved<T>) -> Option<&'r Arc<T>> {
        let got = r.get();
        if got.is_none() {
            self.missing("what validation compiled for it");
        }
        got
    }

    fn missing(&mut self, what: &str) {
        let message = format!(
            "`{}`: {what} is missing after validation (a bug in vitalflow)",
            self.path
        );
        self.at(self.node.span.clone(), message);
    }

    /// Reports a problem at a byte span of the job file.
    pub(crate) fn at(&mut self, span: Range<usize>, message: String) {
        let d = self.job.diag(span, message);
        self.errors.push(d);
    }
}

/// The Kafka side of a plan, filled as Kafka nodes are prepared.
#[derive(Default)]
pub struct KafkaPlan {
    /// Whether the job reads Kafka or MLLP (its timestamps are event or arrival times, and it
    /// checkpoints).
    pub(crate) job: bool,
    /// The checkpoint the run resumes from.
    pub(crate) previous: Option<Checkpoint>,
    /// The watermark every source has reached.
    pub(crate) job_watermark: Arc<std::sync::atomic::AtomicU64>,
    /// Milliseconds per timestamp, if every source agrees.
    pub(crate) granularity_ms: Option<u64>,
    /// Set while the embedded broker's live feed is producing.
    pub(crate) feeding: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The sources' logs, for checkpoints.
    pub(crate) sources: Vec<SourceLog>,
    /// Watermarks reached, per source, with its granularity.
    pub(crate) watermarks: BTreeMap<String, (Arc<std::sync::atomic::AtomicU64>, u64)>,
    /// Partition offsets, per source in job order.
    pub(crate) offsets: Vec<Arc<crate::runtime::progress::SourceOffsets>>,
    /// Set to stop the sources (a graceful stop).
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    /// The transactions of exactly-once Kafka sinks (the leading process's).
    pub(crate) transactions: Option<Arc<crate::runtime::transactions::Transactions>>,
}

/// One entry of the registry.
pub struct Kind {
    /// Its section.
    pub section: Section,
    /// Its `kind` strings.
    pub names: &'static [&'static str],
    /// The names of its settings, as a job file writes them.
    pub settings: fn() -> &'static [&'static str],
    /// Reads a node of it.
    pub(crate) parse: fn(&mut Decode<'_, '_>) -> Option<NodeKind>,
}

/// Every node kind of the registry.
#[must_use]
pub fn kinds() -> &'static [Kind] {
    KINDS
}

/// The names of a settings struct's fields as a job file writes them (`roll-interval`), read from
/// its deserializer: what the reference documentation must describe.
#[must_use]
pub fn setting_names<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error};

    /// A deserializer that only notes the field names a struct asks for.
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Names<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("names noted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut names));
    names
}

/// Declares the node kinds: the [`NodeKind`] enum and the registry [`KINDS`]. A kind is one line:
/// its variant, its settings struct (which implements [`NodeSpec`]), its section and its names.
macro_rules! registry {
    ($( $variant:ident($ty:ty) in $section:ident as [$($name:literal),+] ),+ $(,)?) => {
        /// A node's kind and settings.
        #[derive(Debug, Clone)]
        pub enum NodeKind {
            $(
                #[doc = concat!("`kind = \"", $($name, "\"` ",)+ "(", stringify!($section), ").")]
                $variant(Box<$ty>),
            )+
        }

        impl NodeKind {
            /// What the kind is asked.
            #[must_use]
            pub fn spec(&self) -> &dyn NodeSpec {
                match self {
                    $( Self::$variant(n) => &**n, )+
                }
            }

            /// What the kind is asked, to resolve it.
            pub fn spec_mut(&mut self) -> &mut dyn NodeSpec {
                match self {
                    $( Self::$variant(n) => &mut **n, )+
                }
            }
        }

        /// Every node kind: its section, its `kind` strings and its parser.
        pub(crate) const KINDS: &[Kind] = &[
            $( Kind {
                section: Section::$section,
                names: &[$($name),+],
                settings: setting_names::<$ty>,
                parse: |d| <$ty as NodeSpec>::parse(d).map(|n| NodeKind::$variant(Box::new(n))),
            }, )+
        ];
    };
}

registry! {
    Generator(generator::GeneratorConfig) in Sources as ["generator"],
    File(file::FileConfig) in Sources as ["file"],
    Kafka(kafka::source::KafkaSourceConfig) in Sources as ["kafka"],
    Mllp(mllp::MllpConfig) in Sources as ["mllp"],
    Ingest(ingest::IngestConfig) in Operators as ["ingest"],
    Anonymize(anonymize::AnonymizeConfig) in Operators as ["anonymize"],
    Canonize(canonize::CanonizeConfig) in Operators as ["canonize"],
    Audit(audit::AuditConfig) in Operators as ["audit"],
    Filter(filter::FilterConfig) in Operators as ["filter"],
    Map(map::MapConfig) in Operators as ["map", "project"],
    KeyBy(key_by::KeyByConfig) in Operators as ["key-by"],
    Dedupe(dedupe::DedupeConfig) in Operators as ["dedupe"],
    Window(window::WindowConfig) in Operators as ["window"],
    Join(join::JoinConfig) in Operators as ["join"],
    Alert(alert::AlertConfig) in Operators as ["alert"],
    Tabulate(tabulate::TabulateConfig) in Operators as ["tabulate"],
    Parquet(parquet::ParquetConfig) in Sinks as ["parquet"],
    Jsonl(jsonl::JsonlConfig) in Sinks as ["jsonl"],
    DeadLetter(dead_letter::DeadLetterConfig) in Sinks as ["dead-letter"],
    KafkaSink(kafka::sink::KafkaSinkConfig) in Sinks as ["kafka"],
    Console(console::ConsoleConfig) in Sinks as ["console"],
    Blackhole(blackhole::BlackholeConfig) in Sinks as ["blackhole"],
    MllpNotify(notify::MllpNotifyConfig) in Sinks as ["mllp-notify"],
    FhirNotify(notify::FhirNotifyConfig) in Sinks as ["fhir-notify"],
}

/// The `kind` strings of a section, for messages.
pub(crate) fn kind_names(section: Section) -> Vec<&'static str> {
    KINDS
        .iter()
        .filter(|k| k.section == section)
        .flat_map(|k| k.names.iter().copied())
        .collect()
}

/// The registry entry of a section's kind.
pub(crate) fn find(section: Section, name: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.section == section && k.names.contains(&name))
}

impl NodeKind {
    /// The `kind` string.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.spec().kind()
    }

    /// Output ports and what they carry. (An `anonymize` node over rows outputs rows: see
    /// [`crate::job::Job::port_kind`].)
    #[must_use]
    pub fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        self.spec().outputs()
    }

    /// The port kinds this node accepts on its inputs.
    #[must_use]
    pub fn accepts(&self) -> &'static [PortKind] {
        self.spec().accepts()
    }

    /// Whether this node is a stage that publishes domain events.
    #[must_use]
    pub fn is_stage(&self) -> bool {
        self.spec().is_stage()
    }
}
