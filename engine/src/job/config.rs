//! The job's own tables: `[job]` and `[embedded]`. (Each node kind's settings live in its module
//! under `nodes/`.) Each struct rejects unknown fields; the doc comment of each field is its
//! reference documentation (see `docs/job-files.md`).

use serde::Deserialize;
use toml::Spanned;

use crate::nodes::generator::Feed;
use crate::nodes::settings::Duration;

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
    pub feed: Spanned<Feed>,
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
    pub start_after: Duration,
}

mod defaults {
    use toml::Spanned;

    // The generator's own.
    pub use crate::nodes::generator::defaults::{count, interval, patients, seed};

    pub fn patients_topic() -> String {
        "patients".into()
    }
    pub fn vitals_topic() -> String {
        "vitals".into()
    }
    pub fn feed() -> Spanned<super::Feed> {
        Spanned::new(0..0, super::Feed::Envelope)
    }
    pub fn context_topic() -> String {
        "patient-context".into()
    }
    pub const fn start_after() -> super::Duration {
        super::Duration::from_millis(2_000)
    }
}
