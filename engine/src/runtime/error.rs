//! Why a run did not complete: which node failed (when known) and whose fault it was.
//!
//! Every failure of a run is a [`RunFailure`] with a [`Fault`]: the job's configuration or its
//! input (the user can fix it), an external system the run depends on ([`System`]: a Kafka
//! broker, the file system), or vitalflow itself (a bug). [`RunError`] adds when it happened:
//! before the job could start (exit code 2 in the CLI) or while it ran (exit code 1).
//!
//! Operators report failures through [`super::metrics::Failure`], either as a [`RunFailure`] or
//! as a message naming their node (`source `NAME`: …`, `sink `NAME`: …`); a message is
//! classified when the run ends by the kind of the node it names (see [`node_fault`]).

use crate::job::{Diagnostics, Job, NodeKind};

use super::metrics::Reported;

/// A system outside vitalflow that a run depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// A Kafka broker (not the embedded one: that is part of vitalflow).
    KafkaBroker,
    /// The file system: input files, the output folder, sink and checkpoint files.
    FileSystem,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KafkaBroker => "Kafka broker",
            Self::FileSystem => "file system",
        })
    }
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The job file, its inputs or the run's options: the user fixes it.
    Input,
    /// A system the run depends on failed or could not be reached.
    External(System),
    /// vitalflow itself: a bug.
    Internal,
}

impl std::fmt::Display for Fault {
    /// `configuration or input`, `external system: Kafka broker`, `external system: file
    /// system`, `internal: a bug in vitalflow`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Input => f.write_str("configuration or input"),
            Self::External(system) => write!(f, "external system: {system}"),
            Self::Internal => f.write_str("internal: a bug in vitalflow"),
        }
    }
}

/// One failure of a run: whose fault, which node (when known), and what happened. Its text is
/// the message alone, which names the node when there is one (`sink `readings`: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunFailure {
    fault: Fault,
    node: Option<String>,
    message: String,
}

impl RunFailure {
    /// A failure of no particular node.
    #[must_use]
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        Self {
            fault,
            node: None,
            message: message.into(),
        }
    }

    /// A failure of the source `node`: its text is `source `NODE`: DETAIL`.
    #[must_use]
    pub fn at_source(node: &str, fault: Fault, detail: impl std::fmt::Display) -> Self {
        Self {
            fault,
            node: Some(node.to_owned()),
            message: format!("source `{node}`: {detail}"),
        }
    }

    /// A failure of the sink `node`: its text is `sink `NODE`: DETAIL`.
    #[must_use]
    pub fn at_sink(node: &str, fault: Fault, detail: impl std::fmt::Display) -> Self {
        Self {
            fault,
            node: Some(node.to_owned()),
            message: format!("sink `{node}`: {detail}"),
        }
    }

    /// A failure reported as a message: the node it names (`source `NAME`: …` or
    /// `sink `NAME`: …`), at fault as `fault_of` says for that node; a checkpoint that cannot
    /// be stored (`checkpoint: …`) is the file system's; anything else is internal.
    #[must_use]
    pub fn from_message(message: String, fault_of: impl Fn(&str) -> Fault) -> Self {
        if let Some(node) = named_node(&message) {
            return Self {
                fault: fault_of(node),
                node: Some(node.to_owned()),
                message,
            };
        }
        let fault = if message.starts_with("checkpoint: ") {
            Fault::External(System::FileSystem)
        } else {
            Fault::Internal
        };
        Self::new(fault, message)
    }

    /// Whose fault it is.
    #[must_use]
    pub const fn fault(&self) -> Fault {
        self.fault
    }

    /// The node that failed, when known.
    #[must_use]
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// What happened, naming the node when known.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The node a message of the form `source `NAME`: …` or `sink `NAME`: …` names.
fn named_node(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("source `")
        .or_else(|| message.strip_prefix("sink `"))?;
    rest.split_once("`: ").map(|(name, _)| name)
}

/// Whose fault a failure of the node `name` of `job` is: a Kafka source or sink's broker's
/// (unless it is the embedded broker, which is part of vitalflow), the file system's for file
/// sources and file sinks; any other node's failure is internal.
#[must_use]
pub fn node_fault(job: &Job, name: &str) -> Fault {
    let kafka = |brokers: &str| {
        if super::embedded::is_embedded(brokers) {
            Fault::Internal
        } else {
            Fault::External(System::KafkaBroker)
        }
    };
    match job.node(name).map(|n| &n.kind) {
        Some(NodeKind::Kafka(k)) => kafka(k.brokers.get_ref()),
        Some(NodeKind::KafkaSink(k)) => kafka(k.brokers.get_ref()),
        Some(NodeKind::File(_) | NodeKind::Parquet(_) | NodeKind::Jsonl(_)) => {
            Fault::External(System::FileSystem)
        }
        Some(NodeKind::DeadLetter(_)) => Fault::External(System::FileSystem),
        _ => Fault::Internal,
    }
}

/// What a run's [`Reported`] failure is, for `job`.
#[must_use]
pub fn classify(job: &Job, reported: Reported) -> RunFailure {
    match reported {
        Reported::Failure(f) => f,
        Reported::Message(message) => {
            RunFailure::from_message(message, |node| node_fault(job, node))
        }
    }
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job cannot start as configured (exit code 2): every problem at its place in the job
    /// file. Always the [`Fault::Input`].
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    /// The output folder holds what the run must not replace, or cannot be read (exit code 2).
    #[error("{0}")]
    Refused(RunFailure),
    /// The job started and failed (exit code 1).
    #[error("the job failed: {0}")]
    Failed(RunFailure),
}

impl RunError {
    /// Whose fault it is.
    #[must_use]
    pub const fn fault(&self) -> Fault {
        match self {
            Self::Invalid(_) => Fault::Input,
            Self::Refused(f) | Self::Failed(f) => f.fault,
        }
    }

    /// The node that failed, when known.
    #[must_use]
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::Invalid(_) => None,
            Self::Refused(f) | Self::Failed(f) => f.node(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Fault, RunFailure, System};

    #[test]
    fn a_message_is_classified_by_the_node_it_names() {
        let kafka = |_: &str| Fault::External(System::KafkaBroker);
        let f = RunFailure::from_message("source `vitals`: broker down".to_owned(), kafka);
        assert_eq!(f.node(), Some("vitals"));
        assert_eq!(f.fault(), Fault::External(System::KafkaBroker));
        assert_eq!(f.to_string(), "source `vitals`: broker down");

        let f = RunFailure::from_message("sink `a`: b`: c".to_owned(), |n| {
            assert_eq!(n, "a");
            Fault::External(System::FileSystem)
        });
        assert_eq!(f.node(), Some("a"));

        let f = RunFailure::from_message("checkpoint: disk full".to_owned(), kafka);
        assert_eq!(
            (f.fault(), f.node()),
            (Fault::External(System::FileSystem), None)
        );

        let f = RunFailure::from_message("a worker stopped".to_owned(), kafka);
        assert_eq!((f.fault(), f.node()), (Fault::Internal, None));
    }

    #[test]
    fn faults_read_as_whose_they_are() {
        assert_eq!(Fault::Input.to_string(), "configuration or input");
        assert_eq!(
            Fault::External(System::KafkaBroker).to_string(),
            "external system: Kafka broker"
        );
        assert_eq!(
            Fault::External(System::FileSystem).to_string(),
            "external system: file system"
        );
        assert_eq!(Fault::Internal.to_string(), "internal: a bug in vitalflow");
        let f = RunFailure::at_sink("out", Fault::Internal, "its writer stopped");
        assert_eq!(f.to_string(), "sink `out`: its writer stopped");
        assert_eq!(f.node(), Some("out"));
    }
}
