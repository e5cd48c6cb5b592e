//! `kind = "kafka"`: a topic read as a source ([`source`]) or written as a sink ([`sink`]).

pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;
use vitalflow_connectors::kafka::{ClientSettings, EMBEDDED, PropertyValue};

use super::Check;
use crate::runtime::error::{Fault, System};

/// Client settings of a Kafka node; `embedded` (or no brokers) means the embedded broker.
pub(crate) fn client_settings(
    brokers: &Spanned<String>,
    properties: &BTreeMap<String, PropertyValue>,
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

/// The properties among `properties` that hold a secret (a password, a client secret, a JAAS
/// configuration, an inline private key) written in the job file itself rather than taken from
/// the environment or a file: `validate` warns about each, naming it and never its value.
pub(crate) fn literal_secrets(properties: &BTreeMap<String, PropertyValue>) -> Vec<&str> {
    properties
        .iter()
        .filter(|(name, value)| {
            let n = name.to_ascii_lowercase();
            matches!(value, PropertyValue::Literal(_))
                && ["password", "secret", "jaas", "key.pem"]
                    .iter()
                    .any(|s| n.contains(s))
        })
        .map(|(name, _)| name.as_str())
        .collect()
}

/// Whose fault a Kafka node's failures are: its broker's, or vitalflow's when it is the embedded
/// broker (part of vitalflow).
pub(crate) fn fault(brokers: &Spanned<String>) -> Fault {
    if crate::runtime::embedded::is_embedded(brokers.get_ref()) {
        Fault::Internal
    } else {
        Fault::External(System::KafkaBroker)
    }
}

/// The topic name and partition count every Kafka node has.
pub(crate) fn check_topic(c: &mut Check<'_>, topic: &Spanned<String>, partitions: i32) {
    let path = c.path.to_owned();
    let name = topic.get_ref();
    let legal = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-');
    if name.is_empty() || name.len() > 249 || !name.chars().all(legal) {
        c.at(
            topic.span().start,
            format!(
                "`{path}.topic`: `{name}` is not a Kafka topic name \
                 (1 to 249 of a-z, A-Z, 0-9, `.`, `_`, `-`)"
            ),
        );
    }
    if partitions < 1 {
        c.at_node(format!("`{path}.partitions` must be at least 1"));
    }
}

/// Defaults of the settings Kafka sources and sinks share.
pub(crate) mod defaults {
    use toml::Spanned;

    pub fn brokers() -> Spanned<String> {
        Spanned::new(0..0, "embedded".into())
    }
    pub const fn partitions() -> i32 {
        4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_node_fails_as_its_broker_unless_the_broker_is_vitalflow_own() {
        let at = |b: &str| fault(&Spanned::new(0..0, b.to_owned()));
        assert_eq!(at("embedded"), Fault::Internal);
        assert_eq!(at(""), Fault::Internal);
        assert_eq!(
            at("kafka-1:9092,kafka-2:9092"),
            Fault::External(System::KafkaBroker)
        );
    }
}
