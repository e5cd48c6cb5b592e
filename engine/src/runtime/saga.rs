//! The choreography saga: each stage's domain events per batch, emitted from the dataflow's
//! frontiers, and the audit stage's hash chain over all of them.
//!
//! A stage's `Started` event is published when its first record of a batch arrives; its
//! `Finished`/`Finalizada`/`Completed` event only when the stage's input frontier has passed the
//! batch **and** every sink fed by the stage's output has made the batch durable.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use chrono::Utc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;
use vitalflow_model::envelope::{
    AuditRecord, ChainScheme, Counts, DomainEvent, DomainEventType, ENVELOPE_VERSION,
    EventMetadata, FileDigest, StageReport,
};
use vitalflow_model::ids::uuid_from;
use vitalflow_model::{Time, batch_of};

use super::ops::{SinkCommit, StageStat, VecStream};
use crate::audit_trail::{AuditKey, GENESIS, canonical_record, record_hash};

/// The saga role of a stage: which events it publishes and what causes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SagaRole {
    /// Ingestion: Created, Started, Finished.
    Ingestion,
    /// Anonymization: Iniciada, Finalizada.
    Anonymization,
    /// Canonization: Created, Started, Completed.
    Canonization,
}

impl SagaRole {
    /// The events published when a batch's first record arrives, then the closing event.
    #[must_use]
    pub const fn events(self) -> (&'static [DomainEventType], DomainEventType) {
        use DomainEventType as E;
        match self {
            Self::Ingestion => (
                &[E::DataIngestionCreated, E::DataIngestionStarted],
                E::DataIngestionFinished,
            ),
            Self::Anonymization => (
                &[E::EventoAnonimizacionIniciada],
                E::EventoAnonimizacionFinalizada,
            ),
            Self::Canonization => (
                &[
                    E::EventDataCanonizationCreated,
                    E::EventDataCanonizationStarted,
                ],
                E::EventDataCanonizationCompleted,
            ),
        }
    }

    /// The upstream event that starts this stage's chain for a batch (records began to flow).
    #[must_use]
    pub const fn trigger(self) -> Option<(SagaRole, DomainEventType)> {
        match self {
            Self::Ingestion => None,
            Self::Anonymization => Some((Self::Ingestion, DomainEventType::DataIngestionStarted)),
            Self::Canonization => Some((
                Self::Anonymization,
                DomainEventType::EventoAnonimizacionIniciada,
            )),
        }
    }
}

/// Identity of the run, shared by every event.
#[derive(Clone, Debug)]
pub struct RunIdentity {
    /// Job name.
    pub job: String,
    /// Run id.
    pub run_id: String,
}

impl RunIdentity {
    /// The deterministic id of a stage's event for a batch.
    #[must_use]
    pub fn event_id(&self, stage: &str, batch: u64, kind: DomainEventType) -> String {
        self.event_id_of(stage, batch, kind.as_str())
    }

    /// [`Self::event_id`] of an event type by name (also those outside the saga's eight).
    #[must_use]
    pub fn event_id_of(&self, stage: &str, batch: u64, event_type: &str) -> String {
        uuid_from(&[
            self.run_id.as_bytes(),
            stage.as_bytes(),
            &batch.to_le_bytes(),
            event_type.as_bytes(),
        ])
    }

    /// The correlation id of a batch: the same for every stage.
    #[must_use]
    pub fn correlation_id(&self, batch: u64) -> String {
        uuid_from(&[self.run_id.as_bytes(), b"batch", &batch.to_le_bytes()])
    }
}

struct Pending {
    cap: Capability<Time>,
    counts: Counts,
    detail: Option<serde_json::Value>,
}

/// Builds a stage's domain events from its stats (all workers) and the commits of the sinks fed by
/// its output. Runs on worker 0.
#[allow(clippy::too_many_arguments)]
pub fn reporter<'s>(
    stats: VecStream<'s, StageStat>,
    durable: VecStream<'s, SinkCommit>,
    stage: String,
    role: SagaRole,
    upstream: Option<String>,
    run: RunIdentity,
    merge_detail: fn(&mut Option<serde_json::Value>, Option<serde_json::Value>),
) -> VecStream<'s, DomainEvent> {
    stats.binary_frontier::<_, CapacityContainerBuilder<Vec<DomainEvent>>, _, _, _, _>(
        durable,
        Exchange::new(|_: &StageStat| 0),
        Exchange::new(|_: &SinkCommit| 0),
        &format!("Saga({stage})"),
        move |_cap, _info| {
            let mut saga = Saga {
                stage,
                role,
                upstream,
                run,
                merge_detail,
                pending: BTreeMap::new(),
                outputs: BTreeMap::new(),
            };
            move |(stats, stats_frontier), (commits, commits_frontier), output| {
                stats.for_each_stamp(|cap, data| {
                    if cap.least().is_none() {
                        return;
                    }
                    for stat in data.flat_map(|batch| batch.drain(..)) {
                        saga.stat(&cap, stat, output);
                    }
                });
                commits.for_each_stamp(|_cap, data| {
                    for commit in data.flat_map(|batch| batch.drain(..)) {
                        saga.commit(&commit);
                    }
                });
                saga.close(stats_frontier, commits_frontier, output);
            }
        },
    )
}

/// The saga reporter's output handle in an activation.
type SagaOutput<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<DomainEvent>>>;

/// A stage's saga reporter: the batches it has opened and not yet closed, and the files the
/// sinks fed by the stage made durable for each batch.
struct Saga {
    /// The stage.
    stage: String,
    /// Which events it publishes.
    role: SagaRole,
    /// The stage whose event starts this one's chain for a batch.
    upstream: Option<String>,
    /// The run.
    run: RunIdentity,
    /// Merges a stat's stage-specific detail into a batch's.
    merge_detail: fn(&mut Option<serde_json::Value>, Option<serde_json::Value>),
    /// The batches opened and not yet closed.
    pending: BTreeMap<u64, Pending>,
    /// Per batch, the files made durable, and their digests.
    outputs: BTreeMap<u64, (Vec<String>, Vec<FileDigest>)>,
}

impl Saga {
    /// A stage's stat for a batch (`cap` is its time's): the batch's opening events when it is
    /// the first (the batch then holds that time), and its counts and detail added up.
    fn stat(&mut self, cap: &InputCapability<Time>, stat: StageStat, output: &mut SagaOutput<'_>) {
        let b = stat.batch;
        #[allow(clippy::map_entry)]
        if !self.pending.contains_key(&b) {
            let Some(owned) = cap.retain_least(output.output_index()) else {
                return;
            };
            self.open(b, &owned, output);
            self.pending.insert(
                b,
                Pending {
                    cap: owned,
                    counts: Counts::default(),
                    detail: None,
                },
            );
        }
        if let Some(p) = self.pending.get_mut(&b) {
            p.counts.add(&stat.counts);
            (self.merge_detail)(&mut p.detail, stat.detail);
        }
    }

    /// Publishes the events that open batch `b`, at `cap`, each caused by the one before (the
    /// first by the upstream stage's event that started the batch).
    fn open(&self, b: u64, cap: &Capability<Time>, output: &mut SagaOutput<'_>) {
        let (opening, _) = self.role.events();
        let mut session = output.session(cap);
        let mut cause = self
            .role
            .trigger()
            .zip(self.upstream.as_ref())
            .map(|((_, kind), up)| self.run.event_id(up, b, kind));
        for kind in opening {
            let event = make_event(
                &self.run,
                &self.stage,
                b,
                *kind,
                cause.take(),
                Counts::default(),
                (vec![], vec![]),
                None,
            );
            cause = Some(event.metadata.event_id.clone());
            session.give(event);
        }
    }

    /// A sink's commit: its files are outputs of the batches it covers.
    fn commit(&mut self, commit: &SinkCommit) {
        for b in &commit.batches {
            let (files, digests) = self.outputs.entry(*b).or_default();
            files.extend(commit.files.iter().cloned());
            digests.extend(commit.digests.iter().cloned());
        }
    }

    /// Publishes the closing event of every batch whose time both inputs have passed: the
    /// stage's stats (`stats` is their frontier) and the sinks' commits (`commits`).
    fn close(
        &mut self,
        stats: &MutableAntichain<Time>,
        commits: &MutableAntichain<Time>,
        output: &mut SagaOutput<'_>,
    ) {
        let (opening, closing) = self.role.events();
        let done: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !stats.less_equal(p.cap.time()) && !commits.less_equal(p.cap.time()))
            .map(|(b, _)| *b)
            .collect();
        for b in done {
            let Some(p) = self.pending.remove(&b) else {
                continue;
            };
            let (mut outputs, mut files) = self.outputs.remove(&b).unwrap_or_default();
            outputs.sort();
            outputs.dedup();
            files.sort();
            files.dedup();
            let cause = self
                .run
                .event_id(&self.stage, b, *opening.last().unwrap_or(&closing));
            let event = make_event(
                &self.run,
                &self.stage,
                b,
                closing,
                Some(cause),
                p.counts,
                (outputs, files),
                p.detail,
            );
            output.session(&p.cap).give(event);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn make_event(
    run: &RunIdentity,
    stage: &str,
    batch: u64,
    kind: DomainEventType,
    causation_id: Option<String>,
    counts: Counts,
    outputs: (Vec<String>, Vec<FileDigest>),
    detail: Option<serde_json::Value>,
) -> DomainEvent {
    let event = (batch, kind.as_str(), causation_id);
    envelope(run, stage, event, counts, outputs, detail)
}

/// A stage's event of type `event_type` for `batch` (with its causation id), in the platform's
/// envelope; its id is [`RunIdentity::event_id_of`] the type.
pub(crate) fn envelope(
    run: &RunIdentity,
    stage: &str,
    (batch, event_type, causation_id): (u64, &str, Option<String>),
    counts: Counts,
    (outputs, files): (Vec<String>, Vec<FileDigest>),
    detail: Option<serde_json::Value>,
) -> DomainEvent {
    DomainEvent {
        metadata: EventMetadata {
            event_id: run.event_id_of(stage, batch, event_type),
            event_type: event_type.to_owned(),
            event_source: format!("vitalflow/{}/{stage}", run.job),
            correlation_id: run.correlation_id(batch),
            causation_id,
            timestamp: Utc::now(),
            version: ENVELOPE_VERSION.to_owned(),
            trace_id: Some(run.run_id.clone()),
        },
        payload: StageReport {
            job: run.job.clone(),
            run_id: run.run_id.clone(),
            stage: stage.to_owned(),
            batch,
            counts,
            outputs,
            detail: detail.unwrap_or(serde_json::Value::Null),
            files,
        },
    }
}

/// The audit stage: every domain event, in saga order per batch, chained by SHA-256 (or
/// HMAC-SHA256 with `key`; see [`crate::audit_trail`]). Runs on worker 0 so the chain is one
/// sequence.
pub fn audit<'s>(
    events: VecStream<'s, DomainEvent>,
    name: &str,
    counters: std::sync::Arc<super::metrics::NodeCounters>,
    (head, key): (Option<(u64, String)>, Option<AuditKey>),
    pending: Unrecorded,
) -> VecStream<'s, AuditRecord> {
    events.unary_frontier::<CapacityContainerBuilder<Vec<AuditRecord>>, _, _, _>(
        Exchange::new(|_: &DomainEvent| 0),
        name,
        move |_cap, _info| {
            let mut caps: BTreeMap<Time, Capability<Time>> = BTreeMap::new();
            // A resumed job goes on from the last record its checkpoint kept.
            let mut chain = Chain::new(head.clone(), key.clone());
            move |(input, frontier), output| {
                let mut stash = pending.lock().unwrap_or_else(PoisonError::into_inner);
                input.for_each_stamp(|cap, data| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let time = *cap.time();
                        caps.entry(time).or_insert(cap);
                        let entry = stash.entry(time).or_default();
                        for batch in data {
                            entry.append(batch);
                        }
                    }
                });
                let ready: Vec<Time> = caps
                    .keys()
                    .copied()
                    .filter(|t| !frontier.less_equal(t))
                    .collect();
                for t in ready {
                    let (Some(cap), events) = (caps.remove(&t), stash.remove(&t)) else {
                        continue;
                    };
                    let events = events.unwrap_or_default();
                    let n = events.len() as u64;
                    counters.add(&Counts {
                        records_in: n,
                        records_out: n,
                        rejected: 0,
                    });
                    output
                        .session(&cap)
                        .give_iterator(chain.record(events).into_iter());
                    let _ = batch_of(t);
                }
            }
        },
    )
}

/// The events an audit node has received for times not yet complete: not in the trail yet.
/// Shared with the run, which compensates them when it fails.
pub type Unrecorded = std::sync::Arc<std::sync::Mutex<BTreeMap<Time, Vec<DomainEvent>>>>;

/// The audit trail's hash chain: where it goes on, its key, and how a completed time's events
/// join it.
pub(crate) struct Chain {
    sequence: u64,
    prev_hash: String,
    key: Option<AuditKey>,
}

impl Chain {
    /// A chain going on from `head` (next sequence, previous hash), or a new one; keyed with
    /// `key` (HMAC-SHA256), else SHA-256.
    pub(crate) fn new(head: Option<(u64, String)>, key: Option<AuditKey>) -> Self {
        let (sequence, prev_hash) = head.unwrap_or_else(|| (0, GENESIS.to_owned()));
        Self {
            sequence,
            prev_hash,
            key,
        }
    }

    /// The audit records of one completed time's events, in saga order (batch, event type,
    /// stage, event id), each chained to the one before.
    pub(crate) fn record(&mut self, mut events: Vec<DomainEvent>) -> Vec<AuditRecord> {
        events.sort_by(|a, b| {
            (
                a.payload.batch,
                order(&a.metadata.event_type),
                &a.payload.stage,
                &a.metadata.event_id,
            )
                .cmp(&(
                    b.payload.batch,
                    order(&b.metadata.event_type),
                    &b.payload.stage,
                    &b.metadata.event_id,
                ))
        });
        let chain = if self.key.is_some() {
            ChainScheme::HmacSha256
        } else {
            ChainScheme::Sha256
        };
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            let recorded_at = Utc::now();
            // The hash covers the record as the JSON-lines sink writes it (keys sorted), so that
            // a verifier recomputes it from the line.
            let event_json = serde_json::to_value(&event).unwrap_or_default();
            let stamp = serde_json::to_value(recorded_at).unwrap_or_default();
            let canonical = canonical_record(chain, &event_json, &stamp, self.sequence);
            let hash = record_hash(self.key.as_ref(), &self.prev_hash, &canonical);
            records.push(AuditRecord {
                sequence: self.sequence,
                recorded_at,
                event,
                chain,
                prev_hash: std::mem::replace(&mut self.prev_hash, hash.clone()),
                hash,
            });
            self.sequence += 1;
        }
        records
    }
}

fn order(event_type: &str) -> usize {
    DomainEventType::ALL
        .iter()
        .position(|k| k.as_str() == event_type)
        .unwrap_or(usize::MAX)
}
