//! Kafka, through librdkafka: client settings whose secrets come from the environment or files,
//! a reader of explicitly assigned partitions, a producer that reports every delivery, and the
//! embedded Kafka-protocol broker (librdkafka's mock cluster) that jobs use when they name no
//! brokers.
//!
//! Nothing here joins a consumer group's rebalancing: the engine decides which worker reads
//! which partition, and when offsets are committed.

pub mod embedded;
pub mod reader;
pub mod transaction;
pub mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use rdkafka;
use rdkafka::config::ClientConfig;
use serde::Deserialize;
use thiserror::Error;

pub use embedded::EmbeddedBroker;
pub use reader::{BrokerOffsets, PartitionReader, Polled};
pub use transaction::TransactionWriter;
pub use writer::{OutMessage, TopicWriter};

/// The `brokers` value that asks for the embedded broker.
pub const EMBEDDED: &str = "embedded";

/// An error of a Kafka client. Messages never hold a secret or a record's bytes.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// A client property could not be resolved (a missing variable or secret file).
    #[error("Kafka property `{name}`: {reason}")]
    Setting {
        /// The property.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// librdkafka refused or failed an operation.
    #[error("Kafka {what}: {source}")]
    Client {
        /// What was being done (`create consumer`, `fetch metadata of topic vitals`, ...).
        what: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A record was not delivered within the time its sink retries.
    #[error(
        "Kafka delivery to topic `{topic}` at {brokers} failed {attempts} times over {}, the \
         last: {reason} (the broker did not come back within the sink's `retry-for`)",
        humanize(*.retried_for)
    )]
    Delivery {
        /// How long it was retried.
        retried_for: std::time::Duration,
        /// The topic.
        topic: String,
        /// The bootstrap brokers.
        brokers: String,
        /// Sends of the record.
        attempts: u32,
        /// Why the last send failed.
        reason: String,
    },
    /// A transaction could not be used as the job needs.
    #[error("Kafka transactions: {0}")]
    Transaction(String),
    /// The embedded broker could not be started or set up.
    #[error("embedded Kafka broker: {0}")]
    Embedded(String),
}

impl KafkaError {
    pub(crate) fn client(
        what: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |source| Self::Client { what, source }
    }
}

/// The value of a client property in a job file: a literal, or a secret named by where it is.
///
/// ```toml
/// properties = { "security.protocol" = "SASL_SSL", "sasl.password" = { env = "KAFKA_PASSWORD" } }
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum PropertyValue {
    /// The value as written.
    Literal(String),
    /// The value of an environment variable.
    Env {
        /// The variable.
        env: String,
    },
    /// The contents of a file (trailing whitespace removed); relative to the job file.
    File {
        /// The file.
        file: PathBuf,
    },
}

impl fmt::Debug for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(..)"),
            Self::Env { env } => write!(f, "Env({env})"),
            Self::File { file } => write!(f, "File({})", file.display()),
        }
    }
}

/// Whether a property holds a secret: its value is never printed or logged.
#[must_use]
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password", "secret", "jaas", "token", "ssl.key.", "key.pem", "keystore",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Where a client connects and how: the bootstrap brokers and any librdkafka property.
#[derive(Clone, Default)]
pub struct ClientSettings {
    /// `host:port,...`.
    pub brokers: String,
    /// librdkafka properties (`security.protocol`, `sasl.mechanism`, `compression.type`, ...).
    pub properties: BTreeMap<String, PropertyValue>,
    /// The folder relative `file` secrets are read from (the job file's).
    pub base_dir: PathBuf,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: Vec<String> = self
            .properties
            .iter()
            .map(|(k, v)| match v {
                PropertyValue::Literal(s) if !is_secret(k) => format!("{k}={s}"),
                PropertyValue::Literal(_) => format!("{k}=<redacted>"),
                other => format!("{k}={other:?}"),
            })
            .collect();
        f.debug_struct("ClientSettings")
            .field("brokers", &self.brokers)
            .field("properties", &props)
            .finish()
    }
}

impl ClientSettings {
    /// Settings for `brokers` with no other property.
    #[must_use]
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            ..Self::default()
        }
    }

    /// The librdkafka configuration: the brokers, then every property with its secret resolved.
    ///
    /// # Errors
    /// [`KafkaError::Setting`] naming the property whose variable or file cannot be read.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        // librdkafka logs through its own logger by default; keep it quiet unless asked.
        config.set("log_level", "3");
        for (name, value) in &self.properties {
            config.set(name, resolve(name, value, &self.base_dir)?);
        }
        Ok(config)
    }
}

fn resolve(name: &str, value: &PropertyValue, base: &Path) -> Result<String, KafkaError> {
    let setting = |reason: String| KafkaError::Setting {
        name: name.to_owned(),
        reason,
    };
    match value {
        PropertyValue::Literal(s) => Ok(s.clone()),
        PropertyValue::Env { env } => std::env::var(env)
            .map_err(|_| setting(format!("environment variable `{env}` is not set"))),
        PropertyValue::File { file } => {
            let path = base.join(file);
            std::fs::read_to_string(&path)
                .map(|s| s.trim_end().to_owned())
                .map_err(|e| setting(format!("cannot read `{}`: {e}", path.display())))
        }
    }
}

/// A duration for messages: `850ms`, `12.3s`, `5m 0s`.
fn humanize(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_resolved_but_never_printed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("pw"), "s3cr3t-from-file\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut settings = ClientSettings::new("127.0.0.1:1");
        settings.base_dir = dir.path().to_owned();
        settings.properties.insert(
            "sasl.password".into(),
            PropertyValue::File { file: "pw".into() },
        );
        settings.properties.insert(
            "ssl.key.password".into(),
            PropertyValue::Literal("literal-secret".into()),
        );
        settings.properties.insert(
            "compression.type".into(),
            PropertyValue::Literal("zstd".into()),
        );
        let config = settings.client_config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.get("sasl.password"), Some("s3cr3t-from-file"));
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("literal-secret"),
            "{shown}"
        );
        assert!(shown.contains("compression.type=zstd"), "{shown}");

        settings.properties.insert(
            "sasl.username".into(),
            PropertyValue::Env {
                env: "VITALFLOW_TEST_SURELY_UNSET_VARIABLE".into(),
            },
        );
        let err = settings
            .client_config()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("sasl.username") && err.contains("VITALFLOW_TEST_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
    }
}
