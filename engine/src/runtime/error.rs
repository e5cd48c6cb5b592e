//! Why a run did not complete: which node failed (when known) and whose fault it was.
//!
//! Every failure of a run is a [`RunFailure`] with a [`Fault`]: the job's configuration or its
//! input (the user can fix it), an external system the run depends on ([`System`]: a Kafka
//! broker, the file system), or vitalflow itself (a bug). [`RunError`] adds when it happened:
//! before the job could start (exit code 2 in the CLI) or while it ran (exit code 1).
//!
//! Operators report failures through [`super::metrics::Failure`] as a [`RunFailure`], made where
//! the failure happens: a file source's read error is the file system's, a Kafka node's the
//! broker's (vitalflow's own for the embedded broker), a sink writer that stopped a bug.

use crate::job::Diagnostics;

/// A system outside vitalflow that a run depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// A Kafka broker (not the embedded one: that is part of vitalflow).
    KafkaBroker,
    /// The file system: input files, the output folder, sink and checkpoint files.
    FileSystem,
    /// Another process of the cluster, or the network between them.
    Cluster,
    /// A system clinical notifications are delivered to (an MLLP receiver, a FHIR server).
    ClinicalReceiver,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KafkaBroker => "Kafka broker",
            Self::FileSystem => "file system",
            Self::Cluster => "cluster",
            Self::ClinicalReceiver => "clinical receiving system",
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
