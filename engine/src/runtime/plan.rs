//! Planning: resolves a validated job into what the workers need (keys, files, folders, Kafka
//! resume points), each node kind preparing its own [`Operator`](crate::nodes::Operator); the
//! workers then build it ([`super::builder::build`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use vitalflow_connectors::kafka::ClientSettings;
use vitalflow_model::row::Schema;
use vitalflow_operators::anonymize::PseudonymKey;

use super::alerts::AlertLatency;
use super::builder::PlannedNode;
use super::checkpoint::{Checkpoint, OnCheckpoint, PositionLog, remove_uncommitted};
use super::latency::EndToEnd;
use super::metrics::NodeCounters;
use super::saga::RunIdentity;
use super::transactions::Transactions;
use crate::job::{Diagnostic, Diagnostics, Job, NodeKind};
use crate::nodes::kafka::sink::{Delivery, KafkaSinkConfig};
use crate::nodes::{KafkaPlan, Output, Prepare};

/// A job resolved for running.
pub struct Plan {
    /// Run identity.
    pub run: RunIdentity,
    /// Records per batch.
    pub batch_size: u64,
    /// The output folder.
    pub out: PathBuf,
    /// The nodes, in dependency order.
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
    /// Set to stop the sources (a graceful stop): see [`super::RunOptions::stop`].
    pub stop: Arc<AtomicBool>,
    /// In a cluster: this process's control connections to the others (set once they are
    /// made, before the workers start).
    pub cluster: std::sync::OnceLock<Arc<super::cluster::Links>>,
}

impl Plan {
    /// A planned node by name.
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&PlannedNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// A checkpointed source (Kafka or MLLP) as checkpoints see it.
pub struct SourceLog {
    /// The source node.
    pub name: String,
    /// Its topic (`mllp` for an MLLP source's log).
    pub topic: String,
    /// What its workers emitted since the last checkpoint.
    pub log: Arc<Mutex<PositionLog>>,
    /// Kafka: the client settings and the group offsets are committed under.
    pub kafka: Option<(ClientSettings, String)>,
    /// Told where each checkpoint resumes the source (an MLLP source frees the part of its log
    /// the checkpoint covers).
    pub checkpointed: Option<OnCheckpoint>,
}

/// How a job with Kafka sources checkpoints.
pub struct CheckpointPlan {
    /// The checkpoint the run resumes from (empty for a first run).
    pub base: Checkpoint,
    /// The checkpointed sources (Kafka and MLLP).
    pub sources: Vec<SourceLog>,
    /// Where the audit chain goes on: next sequence and previous hash.
    pub audit_head: Option<(u64, String)>,
    /// Watermarks reached, per Kafka source.
    pub watermarks: BTreeMap<String, (Arc<AtomicU64>, u64)>,
    /// Per Kafka source, in job order: its partitions' positions and end offsets.
    pub offsets: Vec<Arc<super::progress::SourceOffsets>>,
    /// Files of the interrupted run removed at the start.
    pub removed: u64,
    /// Checkpoints written by this run, for progress snapshots.
    pub stats: Arc<super::progress::CheckpointStats>,
    /// The transactions of exactly-once Kafka sinks (the leading process's).
    pub transactions: Option<Arc<super::transactions::Transactions>>,
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
    feeding: Option<Arc<AtomicBool>>,
    (stop, leader): (Arc<AtomicBool>, bool),
) -> Result<Plan, Diagnostics> {
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut kafka = kafka_plan(job, out, fresh, feeding, (leader, embedded))?;
    kafka.stop = Arc::clone(&stop);
    let mut alerts = BTreeMap::new();
    let ephemeral = PseudonymKey::ephemeral();
    let mut nodes = Vec::new();
    for node in &job.nodes {
        let mut p = Prepare {
            job,
            node,
            path: format!("{}.{}", node.section.as_str(), node.name),
            base: job.base_dir(),
            out,
            ephemeral: &ephemeral,
            embedded,
            kafka: &mut kafka,
            alerts: &mut alerts,
            errors: &mut errors,
        };
        let Some(op) = node.kind.spec().prepare(&mut p) else {
            continue;
        };
        nodes.push(PlannedNode {
            name: node.name.clone(),
            section: node.section,
            inputs: node
                .inputs
                .iter()
                .map(|i| (i.node.clone(), i.port.clone()))
                .collect(),
            op,
        });
    }
    if kafka.job
        && let Some(n) = job
            .nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Generator(_) | NodeKind::File(_)))
    {
        errors.push(job.diag(
            n.span.clone(),
            format!(
                "`sources.{}`: a job with Kafka or MLLP sources reads only Kafka and MLLP sources \
                 (its timestamps are event or arrival times, a {}'s are batch numbers)",
                n.name,
                n.kind.name()
            ),
        ));
    }
    let checkpoint = prepare_folders(job, out, &nodes, kafka, &mut errors);
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    Ok(Plan {
        run,
        batch_size: job.settings.batch_size.unwrap_or(10_000),
        out: out.to_owned(),
        counters: nodes
            .iter()
            .map(|n| (n.name.clone(), Arc::new(NodeCounters::default())))
            .collect(),
        nodes,
        schemas: job
            .schemas
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
            .collect(),
        checkpoint,
        alerts,
        end_to_end: None,
        stop,
        cluster: std::sync::OnceLock::new(),
    })
}

/// What the Kafka and MLLP sources share: the checkpoint the run resumes from and the
/// granularity of their timestamps.
fn kafka_plan(
    job: &Job,
    out: &Path,
    fresh: bool,
    feeding: Option<Arc<AtomicBool>>,
    (leader, embedded): (bool, Option<&str>),
) -> Result<KafkaPlan, Diagnostics> {
    // Milliseconds per timestamp of each source that checkpoints.
    let granularities: Vec<u64> = job
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Kafka(k) => Some(k.granularity_ms()),
            NodeKind::Mllp(m) => Some(m.granularity_ms()),
            _ => None,
        })
        .collect();
    let kafka_job = !granularities.is_empty();
    let transactions = if leader {
        open_transactions(job, out, kafka_job, fresh, embedded)?
    } else {
        None
    };
    let previous = if kafka_job && !fresh {
        let checkpoint = Checkpoint::load(out).map_err(|e| {
            Diagnostics(vec![job.diag(
                0..0,
                format!(
                    "cannot read the checkpoint: {e} (it is damaged: restore it, or start over \
                     with --fresh, which re-reads the sources from their start)"
                ),
            )])
        })?;
        if let Some(c) = &checkpoint {
            check_checkpoint(job, out, c)?;
        }
        checkpoint
    } else {
        None
    };
    // Milliseconds per timestamp, if every source agrees.
    let granularities: BTreeSet<u64> = granularities.into_iter().collect();
    Ok(KafkaPlan {
        job: kafka_job,
        job_watermark: Arc::new(AtomicU64::new(previous.as_ref().map_or(0, |c| c.time))),
        previous,
        granularity_ms: (granularities.len() == 1)
            .then(|| granularities.first().copied())
            .flatten(),
        feeding,
        sources: Vec::new(),
        watermarks: BTreeMap::new(),
        offsets: Vec::new(),
        stop: Arc::default(),
        transactions,
    })
}

/// Opens the transactions of the job's exactly-once Kafka sinks (fencing the previous run's
/// producer) and settles a checkpoint the previous run left pending (see
/// [`super::transactions`]); `None` if the job has no such sink.
fn open_transactions(
    job: &Job,
    out: &Path,
    kafka_job: bool,
    fresh: bool,
    embedded: Option<&str>,
) -> Result<Option<Arc<Transactions>>, Diagnostics> {
    let sinks: Vec<(&crate::job::Node, &KafkaSinkConfig)> = job
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::KafkaSink(k) if k.delivery == Delivery::ExactlyOnce => Some((n, &**k)),
            _ => None,
        })
        .collect();
    let Some(&(first_node, first)) = sinks.first() else {
        return Ok(None);
    };
    let refuse = |span, message: String| Err(Diagnostics(vec![job.diag(span, message)]));
    if !kafka_job {
        return refuse(
            first_node.span.clone(),
            format!(
                "`sinks.{}`: `delivery = \"exactly-once\"` needs a job that checkpoints (one \
                 reading Kafka or MLLP sources): its transactions are committed with the \
                 checkpoints",
                first_node.name
            ),
        );
    }
    if let Some((n, _)) = sinks.iter().find(|(_, k)| {
        k.brokers.get_ref() != first.brokers.get_ref() || k.properties != first.properties
    }) {
        return refuse(
            n.span.clone(),
            format!(
                "`sinks.{}`: the exactly-once Kafka sinks of a job write in one transaction, so \
                 they need the same `brokers` and `properties` as `sinks.{}`",
                n.name, first_node.name
            ),
        );
    }
    let settings = crate::nodes::kafka::client_settings(
        &first.brokers,
        &first.properties,
        &job.base_dir(),
        embedded,
    );
    let fault = crate::nodes::kafka::fault(&first.brokers);
    let transactions = Transactions::open(
        &settings,
        &job.name,
        out,
        first.topic.get_ref(),
        first.retry_for.0,
        fault,
    )
    .map_err(|e| Diagnostics(vec![job.diag(first_node.span.clone(), e.to_string())]))?;
    let settled = if fresh {
        super::transactions::discard(out)
    } else {
        transactions.resolve(out).map(|r| {
            tracing::info!(transactional_id = transactions.id(), resolved = ?r, "transactions opened");
        })
    };
    settled.map_err(|e| Diagnostics(vec![job.diag(0..0, format!("pending checkpoint: {e}"))]))?;
    Ok(Some(Arc::new(transactions)))
}

/// A checkpoint is resumed only when it is this job's and every file it lists is there: a run
/// that resumed from another job's checkpoint, or without files it lists, would lose or
/// duplicate records without a word.
fn check_checkpoint(job: &Job, out: &Path, c: &Checkpoint) -> Result<(), Diagnostics> {
    let path = out.join(super::checkpoint::CHECKPOINT);
    if c.job != job.name {
        return Err(Diagnostics(vec![job.diag(
            0..0,
            format!(
                "{} is the checkpoint of job `{}`, not of `{}`: give this job an output folder \
                 of its own (`--out`), or start over with --fresh",
                path.display(),
                c.job,
                job.name
            ),
        )]));
    }
    let missing: Vec<&String> = c.files.iter().filter(|f| !out.join(f).is_file()).collect();
    if let Some(first) = missing.first() {
        return Err(Diagnostics(vec![job.diag(
            0..0,
            format!(
                "{} lists {} file(s) that are not in the output folder, the first `{first}`: \
                 the output was changed after the checkpoint (restore the files, or start over \
                 with --fresh)",
                path.display(),
                missing.len()
            ),
        )]));
    }
    Ok(())
}

/// Prepares the sinks' folders: a Kafka or MLLP job keeps what its last checkpoint covers and removes
/// the rest (an interrupted run's files, whose records are read again); any other run replaces
/// them (a job's output is the result of one run).
fn prepare_folders(
    job: &Job,
    out: &Path,
    nodes: &[PlannedNode],
    kafka: KafkaPlan,
    errors: &mut Vec<Diagnostic>,
) -> Option<CheckpointPlan> {
    // Dead letters hold raw PHI: their folder is owner-only from the start, whether or not the
    // run rejects anything.
    let folders: Vec<(&str, PathBuf, bool)> = nodes
        .iter()
        .filter_map(|n| match n.op.output() {
            Output::Folder { dir, private } => Some((n.name.as_str(), dir, private)),
            Output::Ports | Output::External => None,
        })
        .collect();
    let create = |name: &str, dir: &Path, private: bool, replace: bool| {
        let result = if replace && dir.exists() {
            std::fs::remove_dir_all(dir)
        } else {
            Ok(())
        };
        result
            .and_then(|()| create_sink_dir(dir, private))
            .err()
            .map(|e| {
                let span = job.node(name).map_or(0..0, |n| n.span.clone());
                job.diag(
                    span,
                    format!("cannot prepare the output folder `{}`: {e}", dir.display()),
                )
            })
    };
    if !kafka.job {
        for (name, dir, private) in &folders {
            errors.extend(create(name, dir, *private, true));
        }
        return None;
    }
    let base = kafka.previous.unwrap_or_default();
    let dirs: Vec<PathBuf> = folders.iter().map(|(_, d, _)| d.clone()).collect();
    let removed = match remove_uncommitted(out, &dirs, &base.files) {
        Ok(n) => n,
        Err(e) => {
            errors.push(job.diag(0..0, format!("cannot clean the output folder: {e}")));
            0
        }
    };
    for (name, dir, private) in &folders {
        errors.extend(create(name, dir, *private, false));
    }
    let audit_head = audit_head(job, nodes, out, &base);
    Some(CheckpointPlan {
        base,
        sources: kafka.sources,
        audit_head,
        watermarks: kafka.watermarks,
        offsets: kafka.offsets,
        removed,
        stats: Arc::default(),
        transactions: kafka.transactions,
    })
}

/// The last audit record the checkpoint kept, as (next sequence, its hash).
pub(crate) fn audit_head(
    job: &Job,
    nodes: &[PlannedNode],
    out: &Path,
    checkpoint: &Checkpoint,
) -> Option<(u64, String)> {
    let audit_nodes: Vec<&str> = job
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Audit(_)))
        .map(|n| n.name.as_str())
        .collect();
    let mut head: Option<(u64, String)> = None;
    for node in nodes {
        let Output::Folder { dir, .. } = node.op.output() else {
            continue;
        };
        if !node
            .inputs
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
