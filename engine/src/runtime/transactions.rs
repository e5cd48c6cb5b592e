//! Exactly-once Kafka sinks (`delivery = "exactly-once"`): every such sink of a job hands the
//! records of each completed timestamp to one transactional producer of the leading process,
//! and the checkpoint coordinator writes them in one Kafka transaction per checkpoint, committed
//! with the checkpoint:
//!
//! 1. the checkpoint at `T` is written as `_vitalflow/checkpoint.pending.json`, with its marker
//!    ([`marker_of`]: unique to the run and `T`) and the topic that keeps it (partition 0 of the
//!    first exactly-once sink's topic);
//! 2. the records stamped before `T` are sent in a transaction that also commits the marker
//!    (see [`TransactionWriter`]), and the transaction is committed;
//! 3. the pending checkpoint is renamed over `_vitalflow/checkpoint.json`.
//!
//! A run that stops between 1 and 3 leaves a pending checkpoint. The next run opens the
//! producer (which aborts a transaction left open, or completes one being committed), reads the
//! marker from the topic the pending checkpoint names (the job's sinks may have changed since),
//! and keeps the pending checkpoint if the marker is its own (the transaction was
//! committed), or removes it otherwise (the transaction was aborted, and the run resumes from
//! the checkpoint before, reading those records again). Either way what `read_committed`
//! readers see of the topics and what the checkpoint covers agree: every record once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use vitalflow_connectors::kafka::{ClientSettings, KafkaError, OutMessage, TransactionWriter};
use vitalflow_model::Time;

use super::checkpoint::{CHECKPOINT, Checkpoint, rename_durably};
use super::error::Fault;

/// The pending checkpoint, relative to the output folder.
pub const PENDING: &str = "_vitalflow/checkpoint.pending.json";

/// The job's transactional producer and the records waiting for the next checkpoint.
pub struct Transactions {
    writer: TransactionWriter,
    /// Records of completed timestamps not yet in a transaction, by timestamp.
    outbox: Mutex<BTreeMap<Time, Vec<OutMessage>>>,
    /// The transactional id.
    id: String,
    /// Whose fault a failed transaction is: its brokers', or vitalflow's (embedded broker).
    fault: Fault,
}

/// What a run found of the transaction of the run before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// No checkpoint was pending.
    Nothing,
    /// The pending checkpoint's transaction was committed: it is the checkpoint now.
    Committed(Time),
    /// It was not: the pending checkpoint is removed.
    Aborted(Time),
}

/// The marker of the transaction committed with the checkpoint at `time` of run `run_id`: a
/// number no other checkpoint has (a run started afresh reaches the same times again).
#[must_use]
pub fn marker_of(run_id: &str, time: Time) -> i64 {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    digest.update(run_id.as_bytes());
    digest.update(time.to_le_bytes());
    let bytes: [u8; 8] = digest.finalize()[..8].try_into().unwrap_or_default();
    i64::from_le_bytes(bytes) & i64::MAX
}

/// The transactional id (and marker group) of `job` writing into the output folder `out`: a
/// job's runs into one folder share it (so a run fences the one before), two folders do not.
#[must_use]
pub fn transactional_id(job: &str, out: &Path) -> String {
    use sha2::Digest as _;
    let folder = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_owned());
    let digest = sha2::Sha256::digest(folder.to_string_lossy().as_bytes());
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("vitalflow.{job}.{short}")
}

impl Transactions {
    /// Opens the producer (fencing the previous run's) for `job` writing into `out`; the marker
    /// is kept on partition 0 of `marker_topic`.
    ///
    /// # Errors
    /// If the producer cannot be made or the brokers do not answer within `timeout`.
    pub fn open(
        settings: &ClientSettings,
        job: &str,
        out: &Path,
        marker_topic: &str,
        timeout: Duration,
        fault: Fault,
    ) -> Result<Self, KafkaError> {
        let id = transactional_id(job, out);
        let writer = TransactionWriter::open(settings, &id, marker_topic, timeout)?;
        Ok(Self {
            writer,
            outbox: Mutex::new(BTreeMap::new()),
            id,
            fault,
        })
    }

    /// The transactional id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The topic whose partition 0 holds this run's markers.
    #[must_use]
    pub fn marker_topic(&self) -> &str {
        self.writer.marker_topic()
    }

    /// Whose fault a failed transaction is.
    #[must_use]
    pub const fn fault(&self) -> Fault {
        self.fault
    }

    /// Keeps the records of completed timestamp `time` for the next transaction.
    pub fn hold(&self, time: Time, mut records: Vec<OutMessage>) {
        let mut outbox = self
            .outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        outbox.entry(time).or_default().append(&mut records);
    }

    /// Writes the records stamped before `time` in one transaction carrying `marker`, and
    /// commits it; returns how many records it held.
    ///
    /// # Errors
    /// If the transaction cannot be committed (it is then aborted).
    pub fn commit_below(&self, time: Time, marker: i64) -> Result<usize, KafkaError> {
        let records: Vec<OutMessage> = {
            let mut outbox = self
                .outbox
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let later = outbox.split_off(&time);
            std::mem::replace(&mut *outbox, later)
                .into_values()
                .flatten()
                .collect()
        };
        self.writer.commit(&records, marker)?;
        Ok(records.len())
    }

    /// Settles a checkpoint a run left pending in `out` (see the module's documentation).
    ///
    /// # Errors
    /// A message naming the file, or the marker that could not be read.
    pub fn resolve(&self, out: &Path) -> Result<Resolved, String> {
        let path = out.join(PENDING);
        let pending: Checkpoint = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{}: {e} (a pending checkpoint that cannot be read: remove it to resume from \
                     the last committed checkpoint)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resolved::Nothing),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // Where the run that wrote it kept its marker (a checkpoint written before that was
        // recorded: where this run keeps its own).
        let topic = pending
            .transaction_topic
            .as_deref()
            .unwrap_or_else(|| self.writer.marker_topic());
        let marker = self
            .writer
            .committed_marker(topic)
            .map_err(|e| e.to_string())?;
        let committed = marker.is_some() && marker == pending.transaction;
        if committed {
            promote(out)?;
            Ok(Resolved::Committed(pending.time))
        } else {
            discard(out)?;
            Ok(Resolved::Aborted(pending.time))
        }
    }
}

/// Makes the pending checkpoint the checkpoint (a rename, then an fsync of the folder).
///
/// # Errors
/// A message naming the file.
pub fn promote(out: &Path) -> Result<(), String> {
    let to = out.join(CHECKPOINT);
    rename_durably(&out.join(PENDING), &to).map_err(|e| format!("{}: {e}", to.display()))
}

/// Removes a pending checkpoint, if there is one.
///
/// # Errors
/// A message naming the file.
pub fn discard(out: &Path) -> Result<(), String> {
    let path = out.join(PENDING);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
