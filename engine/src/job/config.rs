//! Typed configuration of every node kind. Each struct rejects unknown fields; the doc comment of
//! each field is its reference documentation (see `docs/job-files.md`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The `[job]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobSection {
    /// Name of the job, used in domain events and the run summary. Default: the file's stem.
    pub name: Option<String>,
    /// A sentence describing the job.
    pub description: Option<String>,
    /// Worker threads when `--workers` is not given. Default: 1.
    pub workers: Option<usize>,
    /// Records per batch (timely epoch); each stage reports its domain events per batch.
    /// Default: 10000.
    pub batch_size: Option<u64>,
    /// Output folder when `--out` is not given. Default: `out/<job name>`.
    pub out: Option<String>,
    /// The run fails (exit code 1, after its summary) when more records than this were
    /// rejected: a count (`100`) or a percentage of the records read (`5%`); `--max-rejected`
    /// overrides it. Default: no limit.
    pub max_rejected: Option<Spanned<String>>,
}

/// `kind = "generator"`: synthetic patients and vital signs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GeneratorConfig {
    /// Always `"generator"`.
    pub kind: String,
    /// Random seed: the same seed gives the same events. Default: 42.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Number of patients. Default: 1000.
    #[serde(default = "defaults::patients")]
    pub patients: u64,
    /// Total events, the patients' `patient.record.created` events included. Default: 100000.
    #[serde(default = "defaults::count")]
    pub count: u64,
    /// Events per second over all workers; 0 means as fast as possible. Default: 0.
    #[serde(default)]
    pub rate: f64,
    /// Event time of the first reading, RFC 3339. Default: 2026-01-01T00:00:00Z.
    pub start: Option<String>,
    /// Seconds between two readings of one patient. Default: 60.
    #[serde(default = "defaults::interval")]
    pub interval_secs: u32,
    /// Percentage of patients who deteriorate. Default: 10.
    #[serde(default = "defaults::deteriorating")]
    pub deteriorating_percent: u8,
    /// `envelope` (patient and reading events in the platform envelope, for `ingest`) or
    /// `flat` (bedside-monitor readings as rows: `patient_id`, `ts`, `ward`, `hr`, `spo2`, `rr`,
    /// `temp`, `sbp`, `dbp`; with a `rate`, each stamped with the wall clock). Default:
    /// `envelope`.
    #[serde(default = "defaults::feed")]
    pub format: Spanned<String>,
}

/// The rows of a `flat` generator, declared as a file source's would be.
const FLAT_GENERATOR: &str = r#"
kind = "generator"
path = "generator"
format = "json"
event-time = "ts"
key = "patient_id"
fields = [
  { name = "patient_id", type = "string", phi = "hash" },
  { name = "ts", type = "timestamp", format = "epoch-ms", phi = "date" },
  { name = "ward", type = "string" },
  { name = "hr", type = "integer" },
  { name = "spo2", type = "integer" },
  { name = "rr", type = "integer" },
  { name = "temp", type = "float", nullable = true },
  { name = "sbp", type = "integer" },
  { name = "dbp", type = "integer" },
]
"#;

impl GeneratorConfig {
    /// Whether it writes flat readings (rows).
    #[must_use]
    pub fn is_flat(&self) -> bool {
        self.format.get_ref() == "flat"
    }

    /// A `flat` generator's rows, seen as a file source's (schema, event time, key).
    #[must_use]
    pub fn as_file(&self) -> Option<FileConfig> {
        if !self.is_flat() {
            return None;
        }
        toml::from_str(FLAT_GENERATOR).ok()
    }
}

/// `kind = "file"`: records from a file or every matching file of a folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Always `"file"`.
    pub kind: String,
    /// A file, or a folder whose files (sorted by name, not recursive) are read. Relative paths
    /// are relative to the job file's folder.
    pub path: Spanned<String>,
    /// `envelope` (NDJSON event envelopes), `fhir` (FHIR R4 JSON Bundles or resources, or NDJSON
    /// of resources), `vitals-csv` (numerics CSV), `hl7v2`; or, with a declared schema in
    /// `fields`, `json` (NDJSON, or a JSON document per `.json` file) or `csv`.
    pub format: Spanned<String>,
    /// `vitals-csv` only: the source patient id of the file's readings (the CSV has none).
    pub patient_id: Option<String>,
    /// `json` and `csv` only: the declared schema, one entry per field, in output order.
    pub fields: Option<Spanned<Vec<FieldConfig>>>,
    /// `json` and `csv` only: the field holding each record's event time (a timestamp field).
    pub event_time: Option<Spanned<String>>,
    /// `json` and `csv` only: the field identifying what records are about (usually the
    /// patient); keyed operators group by it unless a `key-by` says otherwise.
    pub key: Option<Spanned<String>>,
    /// `csv` only: whether the first row names the columns. Default: true. Without a header,
    /// columns are the declared fields in order.
    pub header: Option<bool>,
}

/// `kind = "kafka"` (a source): records of one topic, read partition by partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSourceConfig {
    /// Always `"kafka"`.
    pub kind: String,
    /// Bootstrap brokers, `host:port,...`; `embedded` (or empty) starts vitalflow's embedded
    /// broker. Default: `embedded`.
    #[serde(default = "defaults::brokers")]
    pub brokers: Spanned<String>,
    /// The topic.
    pub topic: Spanned<String>,
    /// `envelope`, `fhir`, `hl7v2` (dead-lettered until HL7 v2 is supported), or, with a
    /// declared schema in `fields`, `json` (one document per record) or `csv` (one row per
    /// record, columns in declared order unless `header` names them).
    pub format: Spanned<String>,
    /// `json` and `csv` only: the declared schema, as for files.
    pub fields: Option<Spanned<Vec<FieldConfig>>>,
    /// `json` and `csv`: the timestamp field holding each record's event time. Without it, and
    /// for `fhir` and `hl7v2`, the Kafka record's timestamp is the event time; `envelope` uses
    /// the envelope's `metadata.timestamp`.
    pub event_time: Option<Spanned<String>>,
    /// `json` and `csv` only: the field identifying what records are about.
    pub key: Option<Spanned<String>>,
    /// `csv` only: the column names of every record (the header line is not in the topic).
    pub header: Option<bool>,
    /// The consumer group offsets are committed under (for monitoring and lag; vitalflow assigns
    /// partitions itself). Default: `vitalflow-<job name>`.
    pub group_id: Option<String>,
    /// How late a record may arrive, in event time, behind the latest seen on its partition
    /// before it counts as late. Default: `5s`.
    #[serde(default = "defaults::out_of_orderness")]
    pub out_of_orderness: Spanned<String>,
    /// A partition with no new record for this long (processing time) stops holding the
    /// watermark back. Default: `10s`.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Spanned<String>,
    /// Watermark alignment: how far (event time) a worker's watermark may run ahead of the
    /// slowest worker's before it stops reading until the others catch up; `off` for no
    /// limit. Default: `1m`.
    #[serde(default = "defaults::max_drift")]
    pub max_drift: Spanned<String>,
    /// Event times are rounded down to this (`100ms`, `1s`, `1m`): one dataflow timestamp, and
    /// one saga batch, per step. Default: `1s`.
    #[serde(default = "defaults::granularity")]
    pub granularity: Spanned<String>,
    /// `never` (run until stopped) or `end` (stop at the end the partitions had when the job
    /// started). Default: `never`.
    #[serde(default = "defaults::stop")]
    pub stop: Spanned<String>,
    /// Partitions the embedded broker creates the topic with. Default: 4.
    #[serde(default = "defaults::partitions")]
    pub partitions: i32,
    /// librdkafka properties (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`,
    /// ...). A secret is given as `{ env = "VAR" }` or `{ file = "path" }`, never inline.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, vitalflow_connectors::kafka::PropertyValue>,
}

impl KafkaSourceConfig {
    /// The record-format part, seen as a file source's (schema, event time, key, header).
    #[must_use]
    pub fn as_file(&self) -> FileConfig {
        FileConfig {
            kind: self.kind.clone(),
            path: self.topic.clone(),
            format: self.format.clone(),
            patient_id: None,
            fields: self.fields.clone(),
            event_time: self.event_time.clone(),
            key: self.key.clone(),
            header: self.header,
        }
    }
}

/// `kind = "kafka"` (a sink): domain events, audit records, FHIR resources, de-identified rows
/// or dead letters, one JSON document per record (dead letters: the original bytes, with the
/// reason in headers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSinkConfig {
    /// Always `"kafka"`.
    pub kind: String,
    /// Upstream ports, all of one kind.
    pub inputs: Vec<Spanned<String>>,
    /// Bootstrap brokers, as for sources. Default: `embedded`.
    #[serde(default = "defaults::brokers")]
    pub brokers: Spanned<String>,
    /// The topic.
    pub topic: Spanned<String>,
    /// Partitions the embedded broker creates the topic with. Default: 4.
    #[serde(default = "defaults::partitions")]
    pub partitions: i32,
    /// librdkafka properties, as for sources.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, vitalflow_connectors::kafka::PropertyValue>,
}

/// `[embedded]`: what the embedded broker is filled with before the job starts (only when a
/// Kafka node uses it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmbeddedConfig {
    /// Generator seed. Default: 42.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Patients. Default: 1000.
    #[serde(default = "defaults::patients")]
    pub patients: u64,
    /// Events, patients' included. Default: 100000.
    #[serde(default = "defaults::count")]
    pub count: u64,
    /// Seconds between two readings of one patient. Default: 60.
    #[serde(default = "defaults::interval")]
    pub interval_secs: u32,
    /// The topic of the `patient.record.created` events. Default: `patients`.
    #[serde(default = "defaults::patients_topic")]
    pub patients_topic: String,
    /// The topic of the vital-sign readings. Default: `vitals`.
    #[serde(default = "defaults::vitals_topic")]
    pub vitals_topic: String,
    /// What the generator writes: `envelope` (patient and reading events in the platform
    /// envelope, to `patients-topic` and `vitals-topic`) or `flat` (a bedside-monitor feed: flat
    /// JSON readings to `vitals-topic`, the patients' context table to `context-topic`).
    /// Default: `envelope`.
    #[serde(default = "defaults::feed")]
    pub feed: Spanned<String>,
    /// `flat`: the topic of the patients' context. Default: `patient-context`.
    #[serde(default = "defaults::context_topic")]
    pub context_topic: String,
    /// `flat`: readings a second, produced while the job runs and stamped with the wall clock
    /// (a live feed); 0 fills the topic before the job starts, with simulated times. Default: 0.
    #[serde(default)]
    pub rate: u64,
    /// A live feed starts this long after the job (its tables are read meanwhile). Default:
    /// `2s`.
    #[serde(default = "defaults::start_after")]
    pub start_after: Spanned<String>,
}

/// One field of a declared schema (`fields = [{ name = "hr", type = "integer" }, ...]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FieldConfig {
    /// The name expressions and sinks use.
    pub name: Spanned<String>,
    /// `string`, `integer`, `float`, `boolean` or `timestamp`.
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    /// Whether the field may be missing or null. Default: false (a record without it is
    /// dead-lettered).
    #[serde(default)]
    pub nullable: bool,
    /// JSON: where the value is, as a dotted path into nested objects (`vitals.hr`). Default:
    /// the name.
    pub path: Option<Spanned<String>>,
    /// CSV: the header column holding the value. Default: the name.
    pub column: Option<String>,
    /// Timestamp fields: `epoch-ms`, `epoch-s`, `iso8601`, or `auto` (numbers are epoch
    /// milliseconds, text is ISO-8601). Default: `auto`.
    pub format: Option<Spanned<String>>,
    /// Whether the field is PHI and what anonymization does with it: `hash` (keyed pseudonym),
    /// `date` (shifted or generalized to the year), `redact`, `zip3`, `age`. Rows with PHI
    /// fields reach sinks only through an `anonymize` operator.
    pub phi: Option<Spanned<String>>,
}

/// `kind = "filter"`: keeps the records for which a condition is true.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilterConfig {
    /// Always `"filter"`.
    pub kind: String,
    /// Upstream ports (rows of one schema).
    pub inputs: Vec<Spanned<String>>,
    /// A boolean expression; records where it is false or null are dropped.
    pub condition: Spanned<String>,
}

/// `kind = "map"` (the input fields plus these) or `"project"` (only these): computed fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MapConfig {
    /// `"map"` or `"project"`.
    pub kind: String,
    /// Upstream ports (rows of one schema).
    pub inputs: Vec<Spanned<String>>,
    /// Output field name → expression, in order. `map` replaces an input field of the same
    /// name in place and appends new ones. (Read with its positions by the job parser.)
    pub fields: Spanned<serde::de::IgnoredAny>,
}

/// `kind = "key-by"`: routes records by a key, so all records of one key meet on one worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyByConfig {
    /// Always `"key-by"`.
    pub kind: String,
    /// Upstream ports (rows of one schema).
    pub inputs: Vec<Spanned<String>>,
    /// The key expression. A bare field name keys by that field; anything else is computed
    /// into the field named by `as`.
    pub key: Spanned<String>,
    /// The field a computed key is stored in. Default: `key`.
    #[serde(rename = "as")]
    pub field: Option<String>,
}

/// `kind = "window"`: event-time windows per key, with aggregates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WindowConfig {
    /// Always `"window"`.
    pub kind: String,
    /// Upstream ports (rows of one schema, with an event-time field).
    pub inputs: Vec<Spanned<String>>,
    /// `tumbling`, `sliding` or `session`. Required.
    pub window: Option<Spanned<String>>,
    /// The key expression: windows are per value of it. Required.
    pub key: Option<Spanned<String>>,
    /// The output field of a computed key. Default: `key` (a bare field keeps its name).
    #[serde(rename = "as")]
    pub key_as: Option<String>,
    /// Tumbling and sliding windows: their length (`5m`, `30s`). Required for them.
    pub size: Option<Spanned<String>>,
    /// Sliding windows: how far apart window starts are; at most `size`. Required for them.
    pub slide: Option<Spanned<String>>,
    /// Session windows: the inactivity that ends a session. Required for them.
    pub gap: Option<Spanned<String>>,
    /// How long after a window's end (in event time) late records still correct it. Default:
    /// `0s`.
    #[serde(default = "defaults::zero")]
    pub allowed_lateness: Spanned<String>,
    /// How far the watermark stays behind the largest event time seen (bounded
    /// out-of-orderness). Default: `0s`.
    #[serde(default = "defaults::zero")]
    pub watermark_delay: Spanned<String>,
    /// Output field name → aggregate (`count()`, `mean(hr)`, ...), in order. Required. (Read
    /// with its positions by the job parser.)
    pub aggregates: Option<Spanned<serde::de::IgnoredAny>>,
}

/// `kind = "alert"`: NEWS2 and critical-value rules over vital-sign rows; outputs alert events
/// (no PHI: the patient is pseudonymized and event times date-shifted here, with the same key
/// and policy as `anonymize`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertConfig {
    /// Always `"alert"`.
    pub kind: String,
    /// Upstream ports (rows of one schema, with an event-time field).
    pub inputs: Vec<Spanned<String>>,
    /// The patient: an expression. Default: the rows' declared key.
    pub patient: Option<Spanned<String>>,
    /// The patient's ward (a text expression). Default: none.
    pub ward: Option<Spanned<String>>,
    /// The observation's id (an expression), named as the alert's cause. Default: the reading's
    /// place in its source (`topic/partition@offset` for Kafka, `source#record` for files).
    pub observation_id: Option<Spanned<String>>,
    /// NEWS2: a reading counts for this long. Default: `1h`.
    #[serde(default = "defaults::freshness")]
    pub freshness: Spanned<String>,
    /// An alert resolves once its condition has been normal this long. Default: `15m`.
    #[serde(default = "defaults::resolve_after")]
    pub resolve_after: Spanned<String>,
    /// Repeats at the same level are suppressed for this long. Default: `30m`.
    #[serde(default = "defaults::suppress_for")]
    pub suppress_for: Spanned<String>,
    /// Where the pseudonymization key comes from, as for `anonymize`: `env:NAME`, `file:PATH`
    /// or `ephemeral`. Required.
    pub key: Spanned<String>,
    /// `shift` or `year`, as for `anonymize`. Default: `shift`.
    #[serde(default = "defaults::dates")]
    pub dates: Spanned<String>,
    /// Largest date shift, in days, either way. Default: 365.
    #[serde(default = "defaults::max_shift_days")]
    pub max_shift_days: u32,
    /// The NEWS2 parameters, each an expression over the rows.
    pub news2: Option<News2Config>,
    /// Critical-value and trend rules, by name.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleConfig>,
}

/// `[operators.NAME.news2]`: where each NEWS2 parameter comes from. A parameter left out is
/// always missing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct News2Config {
    /// Breaths per minute.
    pub respiration_rate: Option<Spanned<String>>,
    /// Saturation, %.
    pub spo2: Option<Spanned<String>>,
    /// On supplemental oxygen (boolean).
    pub oxygen: Option<Spanned<String>>,
    /// SpO2 scale 2 applies (boolean: a prescribed 88–92 % target). Default: scale 1.
    pub scale2: Option<Spanned<String>>,
    /// Systolic blood pressure, mmHg.
    pub systolic: Option<Spanned<String>>,
    /// Beats per minute.
    pub pulse: Option<Spanned<String>>,
    /// ACVPU as text (`A`, `C`, `V`, `P`, `U` or the words).
    pub consciousness: Option<Spanned<String>>,
    /// °C.
    pub temperature: Option<Spanned<String>>,
    /// The level from which an alert is raised: `low`, `low-medium`, `medium` or `high`.
    /// Default: `low-medium`.
    #[serde(default = "defaults::raise_at")]
    pub raise_at: Spanned<String>,
}

/// `[operators.NAME.rules.RULE]`: a critical-value or trend rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// The condition: a boolean expression over the row and the rule's aggregates. Required.
    pub when: Spanned<String>,
    /// How long the condition must hold at every reading before the alert is raised. Default:
    /// at once.
    #[serde(rename = "for")]
    pub sustain: Option<Spanned<String>>,
    /// The alert's level: `low`, `low-medium`, `medium` or `high`. Default: `high`.
    #[serde(default = "defaults::rule_level")]
    pub level: Spanned<String>,
    /// The window of the aggregates, back from each reading. Required with `aggregates`.
    pub window: Option<Spanned<String>>,
    /// Name → aggregate over the patient's readings in the window (`max(sbp)`; `count`, `sum`,
    /// `min`, `max`, `mean`, `first`, `last`).
    #[serde(default)]
    pub aggregates: BTreeMap<String, Spanned<String>>,
}

/// `kind = "console"`: a human-readable line per alert on standard output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsoleConfig {
    /// Always `"console"`.
    pub kind: String,
    /// Upstream ports (alert events).
    pub inputs: Vec<Spanned<String>>,
    /// At most this many lines a second; the rest are counted in one line. Default: 50.
    #[serde(default = "defaults::console_limit")]
    pub limit: u32,
}

/// `kind = "blackhole"`: counts its input records and keeps none, to measure the nodes upstream
/// of it without the cost of writing their output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BlackholeConfig {
    /// Always `"blackhole"`.
    pub kind: String,
    /// Upstream ports (anything but PHI-bearing parsed records and dead letters).
    pub inputs: Vec<Spanned<String>>,
}

/// `kind = "join"`: each stream record joined to the table's version valid at its event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JoinConfig {
    /// Always `"join"`.
    pub kind: String,
    /// The stream: upstream ports (rows of one schema, with an event-time field).
    pub inputs: Vec<Spanned<String>>,
    /// The table: a rows port (`node` or `node.port`) of upserts, keyed. Required.
    pub table: Option<Spanned<String>>,
    /// The stream's key expression. Default: the stream's declared key.
    pub key: Option<Spanned<String>>,
    /// The table's key field. Default: the table's declared key.
    pub table_key: Option<Spanned<String>>,
    /// The table fields added to each record. Default: all but its key and event time.
    pub fields: Option<Vec<Spanned<String>>>,
    /// Prepended to the names of the added fields. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// `inner` or `left`. Default: `inner`.
    #[serde(rename = "type", default = "defaults::inner")]
    pub join: Spanned<String>,
    /// A record whose key has no row at its time: `drop`, `null` (pass it with the table's
    /// fields null) or `dead-letter`. Default: `drop` for inner joins, `null` for left joins.
    pub on_missing: Option<Spanned<String>>,
    /// How long (in event time, behind the stream's watermark) a superseded table version is
    /// kept for records that arrive late. Default: `1h`.
    #[serde(default = "defaults::history")]
    pub history: Spanned<String>,
}

/// `kind = "canonize"`, `"audit"`: stages without settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StageConfig {
    /// The stage kind.
    pub kind: String,
    /// Upstream ports, `node` or `node.port`.
    pub inputs: Vec<Spanned<String>>,
}

/// `kind = "ingest"`: parses the raw records of its sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestConfig {
    /// Always `"ingest"`.
    pub kind: String,
    /// Upstream ports.
    pub inputs: Vec<Spanned<String>>,
    /// Local observation codes of HL7 v2 OBX-3, keyed `SYSTEM^CODE` (or `CODE`, any system), and
    /// the LOINC code or vital-sign name each stands for (`"99LOCAL^HR" = "8867-4"`,
    /// `"PULSE" = "heart-rate"`; `8480-6` / `8462-4` for blood-pressure halves).
    #[serde(default)]
    pub codes: std::collections::BTreeMap<String, Spanned<String>>,
    /// Local unit spellings of HL7 v2 OBX-6 and the UCUM unit each stands for
    /// (`"beats per minute" = "/min"`).
    #[serde(default)]
    pub units: std::collections::BTreeMap<String, String>,
}

/// `kind = "anonymize"`: HIPAA Safe Harbor de-identification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnonymizeConfig {
    /// Always `"anonymize"`.
    pub kind: String,
    /// Upstream ports.
    pub inputs: Vec<Spanned<String>>,
    /// Where the pseudonymization key comes from: `env:NAME` (an environment variable),
    /// `file:PATH` (a file; relative to the job file), or `ephemeral` (a random key for this run
    /// only: pseudonyms change every run; for demos). Required.
    pub key: Spanned<String>,
    /// `shift` (every date of a patient moved by one consistent random number of days) or `year`
    /// (dates generalized to their year). Default: `shift`.
    #[serde(default = "defaults::dates")]
    pub dates: Spanned<String>,
    /// Largest date shift, in days, either way. Default: 365.
    #[serde(default = "defaults::max_shift_days")]
    pub max_shift_days: u32,
    /// Three-digit ZIP prefixes replaced by `000`. Default: the HHS list of ZIP3 areas with
    /// 20,000 people or fewer.
    pub restricted_zip3: Option<Vec<String>>,
    /// The action of each identifier class, where it differs from Safe Harbor's (`name`,
    /// `address`, `zip`, `birth-date`, `phone`, `fax`, `email`, `url`, `ip`, `mrn`, `ssn`,
    /// `health-plan`, `account`, `licence`, `vehicle`, `device`, `biometric`, `other-id`,
    /// `photo`, `free-text` → `redact`, `crypto-hash`, `keep`, `generalize`, `drop`, `scrub`, as
    /// each class allows).
    #[serde(default)]
    pub actions: std::collections::BTreeMap<String, Spanned<String>>,
}

/// `kind = "parquet"`: canonical FHIR resources as Parquet, Hive-partitioned by month or day
/// (rows of a declared schema: one folder).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ParquetConfig {
    /// Always `"parquet"`.
    pub kind: String,
    /// Upstream ports (FHIR resources).
    pub inputs: Vec<Spanned<String>>,
    /// Folder under the output folder. Default: `canonical`.
    #[serde(default = "defaults::canonical")]
    pub path: String,
    /// Write files once this many completed rows are buffered. Default: 250000.
    #[serde(default = "defaults::roll_rows")]
    pub roll_rows: usize,
    /// Write files at least this often while rows are buffered (`500ms`, `5s`, `1m`). Default: `5s`.
    #[serde(default = "defaults::roll_interval")]
    pub roll_interval: Spanned<String>,
    /// FHIR resources: folders per `month` (`month=YYYY-MM`, the default) or `day`
    /// (`date=YYYY-MM-DD`) of their partition date.
    #[serde(default)]
    pub partition: vitalflow_connectors::parquet::Partitioning,
}

/// `kind = "jsonl"`: JSON lines (audit records, domain events, FHIR resources as NDJSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JsonlConfig {
    /// Always `"jsonl"`.
    pub kind: String,
    /// Upstream ports, all of one kind.
    pub inputs: Vec<Spanned<String>>,
    /// Folder under the output folder. Required.
    pub path: String,
    /// Write files at least this often while lines are buffered. Default: `5s`.
    #[serde(default = "defaults::roll_interval")]
    pub roll_interval: Spanned<String>,
}

/// `kind = "dead-letter"`: rejected input with the reason. Holds raw PHI: owner-only folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeadLetterConfig {
    /// Always `"dead-letter"`.
    pub kind: String,
    /// Upstream `dead-letter` ports.
    pub inputs: Vec<Spanned<String>>,
    /// Folder under the output folder. Default: `dead-letter`.
    #[serde(default = "defaults::dead_letter")]
    pub path: String,
}

mod defaults {
    use toml::Spanned;

    pub const fn seed() -> u64 {
        42
    }
    pub const fn patients() -> u64 {
        1000
    }
    pub const fn count() -> u64 {
        100_000
    }
    pub const fn interval() -> u32 {
        60
    }
    pub const fn deteriorating() -> u8 {
        10
    }
    pub fn dates() -> Spanned<String> {
        Spanned::new(0..0, "shift".into())
    }
    pub const fn max_shift_days() -> u32 {
        365
    }
    pub fn canonical() -> String {
        "canonical".into()
    }
    pub fn dead_letter() -> String {
        "dead-letter".into()
    }
    pub const fn roll_rows() -> usize {
        250_000
    }
    pub fn brokers() -> Spanned<String> {
        Spanned::new(0..0, "embedded".into())
    }
    pub fn out_of_orderness() -> Spanned<String> {
        Spanned::new(0..0, "5s".into())
    }
    pub fn idle_timeout() -> Spanned<String> {
        Spanned::new(0..0, "10s".into())
    }
    pub fn max_drift() -> Spanned<String> {
        Spanned::new(0..0, "1m".into())
    }
    pub fn granularity() -> Spanned<String> {
        Spanned::new(0..0, "1s".into())
    }
    pub fn stop() -> Spanned<String> {
        Spanned::new(0..0, "never".into())
    }
    pub const fn partitions() -> i32 {
        4
    }
    pub fn patients_topic() -> String {
        "patients".into()
    }
    pub fn vitals_topic() -> String {
        "vitals".into()
    }
    pub fn zero() -> Spanned<String> {
        Spanned::new(0..0, "0s".into())
    }
    pub fn inner() -> Spanned<String> {
        Spanned::new(0..0, "inner".into())
    }
    pub fn freshness() -> Spanned<String> {
        Spanned::new(0..0, "1h".into())
    }
    pub fn resolve_after() -> Spanned<String> {
        Spanned::new(0..0, "15m".into())
    }
    pub fn suppress_for() -> Spanned<String> {
        Spanned::new(0..0, "30m".into())
    }
    pub fn raise_at() -> Spanned<String> {
        Spanned::new(0..0, "low-medium".into())
    }
    pub fn rule_level() -> Spanned<String> {
        Spanned::new(0..0, "high".into())
    }
    pub const fn console_limit() -> u32 {
        50
    }
    pub fn feed() -> Spanned<String> {
        Spanned::new(0..0, "envelope".into())
    }
    pub fn context_topic() -> String {
        "patient-context".into()
    }
    pub fn start_after() -> Spanned<String> {
        Spanned::new(0..0, "2s".into())
    }
    pub fn history() -> Spanned<String> {
        Spanned::new(0..0, "1h".into())
    }
    pub fn roll_interval() -> Spanned<String> {
        Spanned::new(0..0, "5s".into())
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}
