//! Rejected records: the `max-rejected` limit, and the nodes whose rejected records no node
//! reads (they are discarded).

use std::fmt;
use std::str::FromStr;

use super::{Diagnostic, Job, Node};
use crate::nodes::NodeKind;

/// How many rejected records a run tolerates before it fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxRejected {
    /// At most this many records.
    Count(u64),
    /// At most this percentage of the records read by the sources.
    Percent(f64),
}

impl FromStr for MaxRejected {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            match p.trim().parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(Self::Percent(v)),
                _ => Err(format!(
                    "`{s}` is not a percentage from 0% to 100% (expected e.g. `5%`)"
                )),
            }
        } else {
            t.parse::<u64>().map(Self::Count).map_err(|_| {
                format!("`{s}` is not a count or a percentage (expected e.g. `100` or `5%`)")
            })
        }
    }
}

impl fmt::Display for MaxRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl MaxRejected {
    /// Whether `rejected` records of `read` are more than allowed.
    #[must_use]
    pub fn exceeded(self, rejected: u64, read: u64) -> bool {
        match self {
            Self::Count(n) => rejected > n,
            Self::Percent(p) => rejected as f64 > read as f64 * p / 100.0,
        }
    }
}

impl Job {
    /// The nodes that can reject records while no node reads their `dead-letter` port: what
    /// they reject is discarded.
    #[must_use]
    pub fn unread_dead_letters(&self) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|n| n.port_kind("dead-letter").is_some())
            .filter(|n| {
                !self.nodes.iter().any(|m| {
                    m.inputs
                        .iter()
                        .any(|i| i.node == n.name && i.port == "dead-letter")
                })
            })
            .collect()
    }

    /// Problems that do not stop the job from running: a warning for each node whose rejected
    /// records would be discarded, and for each Kafka secret written in the job file.
    #[must_use]
    pub fn warnings(&self) -> Vec<Diagnostic> {
        let discarded = self.unread_dead_letters().into_iter().map(|n| {
            self.diag(
                n.span.clone(),
                format!(
                    "warning: `{0}` can reject records and no node reads `{0}.dead-letter`: its \
                     rejected records will be discarded (add it to a `dead-letter` sink's inputs)",
                    n.name
                ),
            )
        });
        let secrets = self.nodes.iter().flat_map(|n| {
            let properties = match &n.kind {
                NodeKind::Kafka(k) => Some(&k.properties),
                NodeKind::KafkaSink(k) => Some(&k.properties),
                _ => None,
            };
            properties
                .map(crate::nodes::kafka::literal_secrets)
                .unwrap_or_default()
                .into_iter()
                .map(|name| {
                    self.diag(
                        n.span.clone(),
                        format!(
                            "warning: `{}.{}`: the secret property `{name}` is written in the job \
                             file: give it as {{ env = \"VAR\" }} or {{ file = \"path\" }}",
                            n.section.as_str(),
                            n.name
                        ),
                    )
                })
                .collect::<Vec<_>>()
        });
        discarded.chain(secrets).collect()
    }

    /// The job's `max-rejected`, if set and valid (the parser checked it).
    #[must_use]
    pub fn max_rejected(&self) -> Option<MaxRejected> {
        self.settings
            .max_rejected
            .as_ref()
            .and_then(|m| m.get_ref().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::MaxRejected;

    #[test]
    fn max_rejected_reads_counts_and_percentages() {
        assert_eq!("100".parse(), Ok(MaxRejected::Count(100)));
        assert_eq!(" 5% ".parse(), Ok(MaxRejected::Percent(5.0)));
        assert!("5 records".parse::<MaxRejected>().is_err());
        assert!("150%".parse::<MaxRejected>().is_err());
        assert!(MaxRejected::Percent(10.0).exceeded(411, 1000));
        assert!(!MaxRejected::Percent(50.0).exceeded(411, 1000));
        assert!(MaxRejected::Count(0).exceeded(1, 1000));
        assert!(!MaxRejected::Count(0).exceeded(0, 1000));
    }
}
