//! Compensation: what a failed run had begun is undone, and the audit trail says so.
//!
//! When a run fails (a sink cannot write, a broker is gone for good, a stage cannot finish),
//! the batches its saga had begun but not completed cannot be completed by it. Before the run
//! stops, the process that leads it:
//!
//! 1. undoes what the run did for them: the sinks' files that no checkpoint covers are removed
//!    (for a job without checkpoints, the files still being written), and the input offsets
//!    read past the last checkpoint are left uncommitted (the next run reads them again);
//! 2. publishes one `BatchCompensated` event per such batch (its correlation id is the batch's),
//!    naming the batch, the stage that failed, the stages that had begun it and the events
//!    they had published, and what was undone (the files removed, the offsets not committed);
//! 3. records them in the audit trail: chained to the last record the trail keeps, in a file
//!    `compensation-<run id>.jsonl` of each audit sink's folder, which the checkpoint then
//!    lists, so the next run's chain goes on after them.
//!
//! The batches' other events are not in the trail: the audit stage records a batch's events
//! once every stage has completed it, and the records of batches after the last checkpoint
//! are in files the checkpoint does not cover (removed with the rest). A run that is killed
//! (`kill -9`) publishes nothing: its next run undoes the same things at its start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use serde_json::{Value, json};
use vitalflow_connectors::jsonl::JsonlFile;
use vitalflow_model::envelope::{AuditRecord, BATCH_COMPENSATED, Counts, DomainEvent};

use super::checkpoint::{Checkpoint, files_below, relative, remove_where};
use super::error::RunFailure;
use super::plan::{Plan, audit_head};
use super::saga::{Chain, SagaRole, envelope};
use crate::job::Job;
use crate::nodes::Output;
use crate::nodes::audit::AuditOp;

/// What a failed run compensated.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compensated {
    /// The batches, by number.
    pub batches: Vec<u64>,
    /// The files removed, relative to the output folder.
    pub files_removed: Vec<String>,
    /// Input records read past the last checkpoint, whose offsets were not committed.
    pub offsets_not_committed: u64,
    /// The audit files written, relative to the output folder.
    pub written: Vec<String>,
}

/// One stage's part of a batch, as its events say.
#[derive(Default)]
struct Begun {
    events: BTreeSet<String>,
    closed: bool,
}

/// Undoes what the failed run had begun and records the compensation (see the module's
/// documentation). Called by the leading process after the dataflow has stopped.
///
/// # Errors
/// A message naming the file that could not be read, removed or written.
pub fn compensate(job: &Job, plan: &Plan, failure: &RunFailure) -> Result<Compensated, String> {
    let out = plan.out.as_path();
    let folders: Vec<PathBuf> = plan
        .nodes
        .iter()
        .filter_map(|n| match n.op.output() {
            Output::Folder { dir, .. } => Some(dir),
            Output::Ports | Output::External => None,
        })
        .collect();
    let audits: Vec<(&str, &AuditOp)> = plan
        .nodes
        .iter()
        .filter_map(|n| n.op::<AuditOp>().map(|op| (n.name.as_str(), op)))
        .collect();
    let audit_names: Vec<&str> = audits.iter().map(|(n, _)| *n).collect();
    let audit_dirs: Vec<PathBuf> = plan
        .nodes
        .iter()
        .filter(|n| {
            n.inputs
                .iter()
                .any(|(i, _)| audit_names.contains(&i.as_str()))
        })
        .filter_map(|n| match n.op.output() {
            Output::Folder { dir, .. } => Some(dir),
            Output::Ports | Output::External => None,
        })
        .collect();

    // What the trail keeps, and the events it does not.
    let mut events: Vec<DomainEvent> = Vec::new();
    let (kept, mut checkpoint) = match &plan.checkpoint {
        Some(cp) => {
            // A first run that fails before its first checkpoint stores one at time 0, of this
            // job, to list the compensation records.
            let stored = Checkpoint::load(out)?.unwrap_or_else(|| Checkpoint {
                job: plan.run.job.clone(),
                run_id: plan.run.run_id.clone(),
                ..cp.base.clone()
            });
            (stored.files.clone(), Some(stored))
        }
        None => {
            let mut written = files_under(out, &audit_dirs)?;
            written.retain(|f| !f.ends_with(".inprogress"));
            (written, None)
        }
    };
    for dir in &audit_dirs {
        events.extend(uncommitted_events(out, dir, &kept)?);
    }
    for (_, op) in &audits {
        let mut pending = op.pending.lock().unwrap_or_else(PoisonError::into_inner);
        events.extend(std::mem::take(&mut *pending).into_values().flatten());
    }

    // Undo: the files no checkpoint covers (every sink's), or the ones still being written.
    let removed = match &checkpoint {
        Some(cp) => remove_where(out, &folders, |rel| !cp.files.contains(rel))?,
        None => remove_where(out, &folders, |rel| rel.ends_with(".inprogress"))?,
    };
    let offsets = uncommitted_offsets(plan, checkpoint.as_ref());
    let offsets_not_committed = offsets
        .iter()
        .map(|o| o["to"].as_i64().unwrap_or(0) - o["from"].as_i64().unwrap_or(0))
        .sum::<i64>()
        .unsigned_abs();

    // Which batches each stage had begun, and whether it had closed them.
    let mut batches: BTreeMap<u64, BTreeMap<String, Begun>> = BTreeMap::new();
    for e in &events {
        let begun = batches
            .entry(e.payload.batch)
            .or_default()
            .entry(e.payload.stage.clone())
            .or_default();
        begun.events.insert(e.metadata.event_type.clone());
        begun.closed |= closing(&e.metadata.event_type);
    }
    let mut result = Compensated {
        batches: batches.keys().copied().collect(),
        files_removed: removed.clone(),
        offsets_not_committed,
        written: Vec::new(),
    };
    if batches.is_empty() || audits.is_empty() {
        return Ok(result);
    }
    let failed_stage = failure.node().map_or_else(
        || {
            batches
                .values()
                .flat_map(|stages| stages.iter().filter(|(_, b)| !b.closed))
                .map(|(s, _)| s.clone())
                .next()
                .unwrap_or_default()
        },
        str::to_owned,
    );
    let compensations: Vec<DomainEvent> = batches
        .iter()
        .map(|(batch, stages)| {
            let stages: Vec<Value> = stages
                .iter()
                .map(
                    |(stage, b)| json!({"stage": stage, "events": b.events, "completed": b.closed}),
                )
                .collect();
            compensation(
                plan,
                &failed_stage,
                *batch,
                json!({
                    "failedNode": failure.node(),
                    "fault": failure.fault().to_string(),
                    "reason": failure.message(),
                    "stages": stages,
                    "undone": {"filesRemoved": removed, "offsetsNotCommitted": offsets},
                }),
            )
        })
        .collect();

    // Record them after the last record the trail keeps, in each audit sink's folder.
    let head = audit_head(job, &plan.nodes, out, &with_files(kept));
    let key = audits.first().and_then(|(_, op)| op.key.clone());
    let records = Chain::new(head, key).record(compensations);
    let name = format!("compensation-{}.jsonl", plan.run.run_id);
    for dir in &audit_dirs {
        let mut file = JsonlFile::create(dir, &name, false).map_err(|e| e.to_string())?;
        for r in &records {
            file.write_line(&audit_json(r)).map_err(|e| e.to_string())?;
        }
        let path = file.commit().map_err(|e| e.to_string())?;
        result.written.push(relative(out, &path));
    }
    if let Some(cp) = checkpoint.as_mut() {
        cp.files.extend(result.written.iter().cloned());
        cp.store(out)?;
    }
    Ok(result)
}

/// Whether an event type closes a stage's part of a batch.
fn closing(event_type: &str) -> bool {
    [
        SagaRole::Ingestion,
        SagaRole::Anonymization,
        SagaRole::Canonization,
    ]
    .iter()
    .any(|r| r.events().1.as_str() == event_type)
}

/// A `BatchCompensated` event of `batch`, published by `stage`.
fn compensation(plan: &Plan, stage: &str, batch: u64, detail: Value) -> DomainEvent {
    let event = (batch, BATCH_COMPENSATED, None);
    envelope(
        &plan.run,
        stage,
        event,
        Counts::default(),
        (Vec::new(), Vec::new()),
        Some(detail),
    )
}

/// An audit record as the JSON-lines sink writes it (keys sorted).
fn audit_json(record: &AuditRecord) -> Value {
    serde_json::to_value(record).unwrap_or_default()
}

/// A checkpoint that lists `files` (where [`audit_head`] looks for the trail's last record).
fn with_files(files: BTreeSet<String>) -> Checkpoint {
    Checkpoint {
        files,
        ..Checkpoint::default()
    }
}

/// Every file under `dirs`, relative to `out`.
fn files_under(out: &Path, dirs: &[PathBuf]) -> Result<BTreeSet<String>, String> {
    Ok(files_below(dirs)?
        .iter()
        .map(|p| relative(out, p))
        .collect())
}

/// The events of the audit records in `dir`'s files that `kept` does not list (in sequence
/// order): recorded by this run after its last checkpoint.
fn uncommitted_events(
    out: &Path,
    dir: &Path,
    kept: &BTreeSet<String>,
) -> Result<Vec<DomainEvent>, String> {
    let mut records: Vec<(u64, DomainEvent)> = Vec::new();
    for path in files_under(out, &[dir.to_owned()])? {
        if kept.contains(&path) {
            continue;
        }
        let full = out.join(&path);
        let text =
            std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", full.display()))?;
        for line in text.lines() {
            if let Ok(r) = serde_json::from_str::<AuditRecord>(line) {
                records.push((r.sequence, r.event));
            }
        }
    }
    records.sort_by_key(|(s, _)| *s);
    Ok(records.into_iter().map(|(_, e)| e).collect())
}

/// Per checkpointed source partition this process read past the last checkpoint: the offsets
/// not committed (`from` the checkpoint's resume point, or without a checkpoint the first
/// offset this run read; `to` the next unread).
fn uncommitted_offsets(plan: &Plan, checkpoint: Option<&Checkpoint>) -> Vec<Value> {
    let Some(cp_plan) = &plan.checkpoint else {
        return Vec::new();
    };
    let mut offsets = Vec::new();
    for source in &cp_plan.sources {
        let log = source.log.lock().unwrap_or_else(PoisonError::into_inner);
        let resume = checkpoint.and_then(|c| c.sources.get(&source.name));
        for (partition, to) in log.read_to() {
            let from = match resume.and_then(|r| r.partitions.get(partition)) {
                Some(p) => p.from,
                None => log.first_read(*partition).unwrap_or(*to),
            };
            if *to > from {
                offsets.push(json!({
                    "source": source.name,
                    "topic": source.topic,
                    "partition": partition,
                    "from": from,
                    "to": to,
                }));
            }
        }
    }
    offsets
}
