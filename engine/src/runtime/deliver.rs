//! The clinical delivery operator: sends each identified notification to a receiving system
//! (an MLLP receiver, a FHIR server) on a thread of its own, and holds its timestamp's
//! capability until the receiver has answered. A delivery becomes a PHI-disclosure audit event
//! (`healthcare.audit.phi_access`: which sink, which alert, which patient pseudonym, when;
//! never the PHI itself); a notification the receiver refuses, or that could not be delivered
//! in the time allowed, becomes a dead letter whose reason names no PHI.
//!
//! Because the capability is held, checkpoints never pass a notification that is not
//! delivered: after a crash, the replayed input raises it again and it is sent again, with the
//! same id (at-least-once; receivers drop a second copy by the id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Duration;

use chrono::Utc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;
use timely::scheduling::Activator;
use vitalflow_connectors::notify::Outcome;
use vitalflow_model::envelope::{
    Counts, DomainEvent, ENVELOPE_VERSION, EventMetadata, StageReport,
};
use vitalflow_model::ids::uuid_from;
use vitalflow_model::notification::ClinicalNotification;
use vitalflow_model::{DeadLetter, RawFormat, Time};

use super::error::{Fault, RunFailure, System};
use super::metrics::{Failure, NodeCounters};
use super::ops::{SinkCommit, VecStream, split_results};
use super::saga::RunIdentity;

/// The event type of a PHI disclosure.
pub const PHI_ACCESS: &str = "healthcare.audit.phi_access";

/// A receiving system, one notification at a time: sends it, retrying as its settings say.
pub trait Transport: Send {
    /// Delivers `n`; blocks until the receiver answered or the retries are over.
    fn deliver(&mut self, n: &ClinicalNotification) -> Outcome;
}

/// Makes a sink's transport on each worker (or says why it cannot, without PHI).
pub type MakeTransport = Arc<dyn Fn() -> Result<Box<dyn Transport>, String> + Send + Sync>;

/// What a notification that could not be delivered does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGiveUp {
    /// It is dead-lettered and the run goes on.
    DeadLetter,
    /// The run fails (and a restart sends it again).
    Fail,
}

/// A clinical delivery sink resolved for running.
#[derive(Clone)]
pub struct DeliveryPlan {
    /// The sink node.
    pub sink: String,
    /// Where it sends, as audit events name it (`mllp://host:port`, a FHIR base URL).
    pub destination: String,
    /// The transport, per worker.
    pub make: MakeTransport,
    /// The run (audit events).
    pub run: RunIdentity,
    /// What a notification that could not be delivered does.
    pub on_give_up: OnGiveUp,
}

/// Sends `input` and returns the PHI-disclosure audit events, the dead letters, and the
/// sink's commits (a time is committed once each of its notifications has an answer).
pub fn deliver<'s>(
    input: VecStream<'s, ClinicalNotification>,
    plan: DeliveryPlan,
    counters: Arc<NodeCounters>,
    failure: Failure,
) -> (
    VecStream<'s, DomainEvent>,
    VecStream<'s, DeadLetter>,
    VecStream<'s, SinkCommit>,
) {
    let scope = input.scope();
    let name = plan.sink.clone();
    let results = input
        .unary_frontier::<CapacityContainerBuilder<Vec<Result<DomainEvent, DeadLetter>>>, _, _, _>(
            Pipeline,
            &name,
            move |_cap, info| {
                let activator = scope.activator_for(info.address);
                let mut state = start(&plan, &failure).map(|(tx, rx)| State {
                    plan: plan.clone(),
                    counters,
                    failure,
                    activator,
                    tx,
                    rx,
                    next: 0,
                    open: BTreeMap::new(),
                });
                move |(input, _frontier), output| {
                    let Some(state) = state.as_mut() else {
                        input.for_each(|_, _| {});
                        return;
                    };
                    input.for_each_stamp(|cap, data| {
                        let Some(cap) = cap.retain_least(output.output_index()) else {
                            return;
                        };
                        for n in data.flat_map(|batch| batch.drain(..)) {
                            state.send(cap.clone(), n);
                        }
                    });
                    for (cap, result) in state.answers() {
                        output.session(&cap).give(result);
                    }
                    if !state.open.is_empty() {
                        state.activator.activate_after(Duration::from_millis(5));
                    }
                }
            },
        );
    let (events, dead) = split_results(results);
    let commits = events
        .clone()
        .unary::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
            Pipeline,
            "delivered",
            |_, _| |input, _output| input.for_each(|_, _| {}),
        );
    (events, dead, commits)
}

/// A delivery thread's queue, and its answers.
type Channels = (
    Sender<(u64, ClinicalNotification)>,
    Receiver<(u64, ClinicalNotification, Outcome)>,
);

/// Starts the thread that delivers a worker's notifications (a failure to is the run's).
fn start(plan: &DeliveryPlan, failure: &Failure) -> Option<Channels> {
    {
        let mut transport = match (plan.make)() {
            Ok(t) => t,
            Err(e) => {
                failure.fail(RunFailure::at_sink(
                    &plan.sink,
                    Fault::External(System::ClinicalReceiver),
                    e,
                ));
                return None;
            }
        };
        let (tx, queue) = std::sync::mpsc::channel::<(u64, ClinicalNotification)>();
        let (answer, rx) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name(format!("deliver-{}", plan.sink))
            .spawn(move || {
                for (id, n) in queue {
                    let outcome = transport.deliver(&n);
                    if answer.send((id, n, outcome)).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = started {
            failure.fail(RunFailure::at_sink(
                &plan.sink,
                Fault::Internal,
                format!("cannot start its delivery thread: {e}"),
            ));
            return None;
        }
        Some((tx, rx))
    }
}

/// The delivery operator's state on one worker.
struct State {
    plan: DeliveryPlan,
    counters: Arc<NodeCounters>,
    failure: Failure,
    /// Schedules the operator again while answers are awaited.
    activator: Activator,
    /// The delivery thread's queue.
    tx: Sender<(u64, ClinicalNotification)>,
    /// Its answers.
    rx: Receiver<(u64, ClinicalNotification, Outcome)>,
    /// The next notification's number.
    next: u64,
    /// The capability of each notification sent and not answered, by number.
    open: BTreeMap<u64, Capability<Time>>,
}

impl State {
    fn send(&mut self, cap: Capability<Time>, n: ClinicalNotification) {
        let id = self.next;
        self.next += 1;
        if self.tx.send((id, n)).is_ok() {
            self.open.insert(id, cap);
        } else {
            self.failure.fail(RunFailure::at_sink(
                &self.plan.sink,
                Fault::Internal,
                "its delivery thread has stopped",
            ));
        }
    }

    /// The answers so far: an audit event or a dead letter, each with its capability.
    fn answers(&mut self) -> Vec<(Capability<Time>, Result<DomainEvent, DeadLetter>)> {
        let mut out = Vec::new();
        loop {
            let (id, n, outcome) = match self.rx.try_recv() {
                Ok(answer) => answer,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !self.open.is_empty() {
                        self.failure.fail(RunFailure::at_sink(
                            &self.plan.sink,
                            Fault::Internal,
                            "its delivery thread has stopped",
                        ));
                    }
                    break;
                }
            };
            let Some(cap) = self.open.remove(&id) else {
                continue;
            };
            let result = match outcome {
                Outcome::Delivered { attempts, code } => {
                    self.counters.add(&Counts {
                        records_in: 1,
                        records_out: 1,
                        rejected: 0,
                    });
                    Ok(disclosure(&self.plan, &n, *cap.time(), attempts, &code))
                }
                Outcome::Rejected {
                    attempts,
                    code,
                    text,
                } => {
                    let detail = if text.is_empty() {
                        code
                    } else {
                        format!("{code} ({text})")
                    };
                    Err(self.refused(
                        &n,
                        format!("refused by the receiver after {attempts} send(s): {detail}"),
                    ))
                }
                Outcome::GaveUp { attempts, reason } => {
                    let why = format!("not delivered after {attempts} send(s): {reason}");
                    if self.plan.on_give_up == OnGiveUp::Fail {
                        self.failure.fail(RunFailure::at_sink(
                            &self.plan.sink,
                            Fault::External(System::ClinicalReceiver),
                            format!(
                                "{why} (a restart sends it again; `on-give-up = \"dead-letter\"` \
                                 goes on without it)"
                            ),
                        ));
                    }
                    Err(self.refused(&n, why))
                }
            };
            out.push((cap, result));
        }
        out
    }

    /// A dead letter for a notification not delivered: the notification itself (PHI, as the
    /// dead-letter output holds raw input), and a reason without PHI.
    fn refused(&self, n: &ClinicalNotification, reason: String) -> DeadLetter {
        self.counters.add(&Counts {
            records_in: 1,
            records_out: 0,
            rejected: 1,
        });
        self.counters.add_dead_letters(1);
        DeadLetter {
            stage: self.plan.sink.clone(),
            source: n.event_source.clone(),
            location: format!("notification {}", n.notification_id),
            format: RawFormat::Json,
            reason,
            bytes: serde_json::to_vec(n).unwrap_or_default(),
        }
    }
}

/// The audit event of one delivery: which sink and destination, which alert and notification,
/// which patient pseudonym, when, after how many sends, and the receiver's answer.
fn disclosure(
    plan: &DeliveryPlan,
    n: &ClinicalNotification,
    time: Time,
    attempts: u32,
    response: &str,
) -> DomainEvent {
    let delivered_at = Utc::now();
    DomainEvent {
        metadata: EventMetadata {
            event_id: uuid_from(&[
                plan.run.run_id.as_bytes(),
                plan.sink.as_bytes(),
                n.notification_id.as_bytes(),
            ]),
            event_type: PHI_ACCESS.to_owned(),
            event_source: format!("vitalflow/{}/{}", plan.run.job, plan.sink),
            correlation_id: n.alert_id.clone(),
            causation_id: Some(n.notification_id.clone()),
            timestamp: delivered_at,
            version: ENVELOPE_VERSION.to_owned(),
            trace_id: Some(plan.run.run_id.clone()),
        },
        payload: StageReport {
            job: plan.run.job.clone(),
            run_id: plan.run.run_id.clone(),
            stage: plan.sink.clone(),
            batch: time,
            counts: Counts {
                records_in: 1,
                records_out: 1,
                rejected: 0,
            },
            outputs: vec![plan.destination.clone()],
            detail: serde_json::json!({
                "sink": plan.sink,
                "destination": plan.destination,
                "alertId": n.alert_id,
                "notificationId": n.notification_id,
                "alertEventType": n.event_type,
                "patient": n.patient_pseudonym,
                "deliveredAt": delivered_at,
                "attempts": attempts,
                "response": response,
            }),
            files: Vec::new(),
        },
    }
}
