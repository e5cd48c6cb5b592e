//! The Kafka sink operator: sends every record as it arrives, and holds a capability for each
//! timestamp until the timestamp is complete and every record of it is acknowledged; then it
//! reports the timestamp durable (a [`SinkCommit`] without files), which is what checkpoints and
//! the stages' closing events wait for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::Operator;
use timely::progress::frontier::MutableAntichain;
use timely::scheduling::Activator;
use vitalflow_connectors::kafka::{ClientSettings, OutMessage, TopicWriter};
use vitalflow_model::envelope::Counts;
use vitalflow_model::{Time, batch_of};

use super::error::{Fault, RunFailure};
use super::metrics::{Failure, NodeCounters};
use super::ops::{SinkCommit, VecStream};

/// How a record becomes a Kafka record: key, value, headers.
pub type Render<T> =
    Arc<dyn Fn(&T) -> (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>) + Send + Sync>;

/// Where a Kafka sink writes, and whose fault a failure to write is.
#[derive(Clone)]
pub struct Target {
    /// The brokers.
    pub settings: ClientSettings,
    /// The topic.
    pub topic: String,
    /// Its broker's, or vitalflow's for the embedded broker.
    pub fault: Fault,
    /// How long a failing record is sent again before the job fails.
    pub retry_for: Duration,
}

/// Writes `input` to `topic`.
pub fn kafka_sink<'s, T>(
    input: VecStream<'s, T>,
    name: &str,
    target: Target,
    render: Render<T>,
    counters: Arc<NodeCounters>,
    failure: Failure,
) -> VecStream<'s, SinkCommit>
where
    T: Clone + Send + 'static,
{
    let sink = name.to_owned();
    let Target {
        settings,
        topic,
        fault,
        retry_for,
    } = target;
    let scope = input.scope();
    input.unary_frontier::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
        Pipeline,
        name,
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let writer = match TopicWriter::new(&settings, retry_for) {
                Ok(w) => Some(w),
                Err(e) => {
                    failure.fail(RunFailure::at_sink(&sink, fault, e));
                    None
                }
            };
            let mut state = writer.map(|writer| SinkState {
                sink,
                topic,
                render,
                counters,
                failure,
                fault,
                activator,
                writer,
                open: BTreeMap::new(),
                tokens: HashMap::new(),
            });
            move |(input, frontier), output| {
                let Some(state) = state.as_mut() else {
                    input.for_each(|_, _| {});
                    return;
                };
                let mut error = None;
                input.for_each_stamp(|cap, data| {
                    let cap = cap.retain_least(output.output_index());
                    state.send(cap, data, &mut error);
                });
                state.activate(error, frontier, output);
            }
        },
    )
}

/// The Kafka sink's output handle in an activation.
type SinkOutput<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<SinkCommit>>>;

/// The Kafka sink's state on one worker: its producer, and the timestamps whose records are
/// not all acknowledged or that are not complete yet.
struct SinkState<T> {
    /// The sink node.
    sink: String,
    /// The topic.
    topic: String,
    /// How a record becomes a Kafka record.
    render: Render<T>,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// Where the job's failure is reported.
    failure: Failure,
    /// Whose fault the sink's failures are: its broker's, or vitalflow's for the embedded one.
    fault: Fault,
    /// Schedules the sink again while acknowledgements are awaited.
    activator: Activator,
    /// The producer.
    writer: TopicWriter,
    /// Per timestamp: its capability, records sent, records not yet acknowledged, and the
    /// bytes of the records sent (key, value, header names and values).
    open: BTreeMap<Time, (Capability<Time>, u64, u64, u64)>,
    /// The timestamp of each record sent and not yet acknowledged, by its token.
    tokens: HashMap<usize, Time>,
}

impl<T> SinkState<T> {
    /// Sends the records that arrived (with their time's capability; `None` if it is not
    /// held), counted under their time as sent and not yet acknowledged. A record that cannot
    /// be sent leaves its error in `error`.
    fn send<'a>(
        &mut self,
        cap: Option<Capability<Time>>,
        data: impl Iterator<Item = &'a mut Vec<T>>,
        error: &mut Option<String>,
    ) where
        T: 'a,
    {
        let Some(cap) = cap else { return };
        let time = *cap.time();
        let entry = self.open.entry(time).or_insert_with(|| (cap, 0, 0, 0));
        for record in data.flat_map(|batch| batch.drain(..)) {
            let (key, payload, headers) = (self.render)(&record);
            let message = OutMessage {
                topic: self.topic.clone(),
                key,
                payload,
                headers,
            };
            let size = message.bytes();
            match self.writer.send(message) {
                Ok(token) => {
                    self.tokens.insert(token, time);
                    entry.1 += 1;
                    entry.2 += 1;
                    entry.3 += size as u64;
                }
                Err(e) => *error = Some(e.to_string()),
            }
        }
    }

    /// After the records of an activation are sent (`error`: the last that could not be):
    /// takes the acknowledgements, and reports every complete timestamp (`frontier` is the
    /// input's) whose records are all acknowledged durable. An error fails the job.
    fn activate(
        &mut self,
        mut error: Option<String>,
        frontier: &MutableAntichain<Time>,
        output: &mut SinkOutput<'_>,
    ) {
        match self.writer.poll() {
            Ok(acked) => self.acknowledged(acked),
            Err(e) => error = Some(e.to_string()),
        }
        // While its broker is away the sink says so (the readiness probe, the metrics).
        self.counters
            .set_failing(self.writer.outage().map(|(since, _)| {
                let ago = u64::try_from(since.elapsed().as_millis()).unwrap_or(0);
                (vitalflow_model::now_us() / 1000).saturating_sub(ago)
            }));
        if let Some(e) = error {
            self.failure
                .fail(RunFailure::at_sink(&self.sink, self.fault, e));
            return;
        }
        let durable: Vec<Time> = self
            .open
            .iter()
            .filter(|(t, (_, _, pending, _))| *pending == 0 && !frontier.less_equal(t))
            .map(|(t, _)| *t)
            .collect();
        for t in durable {
            if let Some((cap, sent, _, bytes)) = self.open.remove(&t) {
                self.commit(t, &cap, (sent, bytes), output);
            }
        }
        if !self.open.is_empty() {
            self.activator.activate_after(Duration::from_millis(5));
        }
    }

    /// Counts the acknowledged records (by their tokens) off their timestamps.
    fn acknowledged(&mut self, acked: Vec<usize>) {
        for token in acked {
            if let Some(t) = self.tokens.remove(&token)
                && let Some(entry) = self.open.get_mut(&t)
            {
                entry.2 -= 1;
            }
        }
    }

    /// Counts the `sent` records of timestamp `t` and their `bytes`, and reports it durable, at
    /// `cap`.
    fn commit(
        &self,
        t: Time,
        cap: &Capability<Time>,
        (sent, bytes): (u64, u64),
        output: &mut SinkOutput<'_>,
    ) {
        output
            .session(cap)
            .give(durable(&self.sink, t, (sent, bytes), &self.counters));
    }
}

/// Counts the `sent` records of timestamp `t` and their `bytes` on the sink's counters, and
/// reports the timestamp durable.
fn durable(sink: &str, t: Time, (sent, bytes): (u64, u64), counters: &NodeCounters) -> SinkCommit {
    counters.add(&Counts {
        records_in: sent,
        records_out: sent,
        rejected: 0,
    });
    counters.add_written(bytes);
    SinkCommit {
        sink: sink.to_owned(),
        batches: vec![batch_of(t)],
        files: Vec::new(),
        digests: Vec::new(),
        rows: sent,
        first: t,
        last: t,
    }
}

/// Writes `input` to `topic` exactly once (`delivery = "exactly-once"`): records are rendered
/// where they are, then gathered on worker 0, which hands each completed timestamp's records
/// to the job's transactions (see [`super::transactions`]) and reports the timestamp. The
/// checkpoint that covers it commits them.
pub fn kafka_txn_sink<'s, T>(
    input: VecStream<'s, T>,
    name: &str,
    topic: String,
    render: Render<T>,
    counters: Arc<NodeCounters>,
    transactions: Option<Arc<super::transactions::Transactions>>,
    failure: Failure,
) -> VecStream<'s, SinkCommit>
where
    T: Clone + Send + 'static,
{
    let rendered = input.unary::<CapacityContainerBuilder<Vec<OutMessage>>, _, _, _>(
        Pipeline,
        &format!("{name}-render"),
        move |_cap, _info| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut session = output.session(&cap);
                    for record in data.flat_map(|batch| batch.drain(..)) {
                        let (key, payload, headers) = render(&record);
                        session.give(OutMessage {
                            topic: topic.clone(),
                            key,
                            payload,
                            headers,
                        });
                    }
                });
            }
        },
    );
    let sink = name.to_owned();
    let mut open: BTreeMap<Time, (Capability<Time>, Vec<OutMessage>)> = BTreeMap::new();
    let mut missing = true;
    rendered.unary_frontier::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
        timely::dataflow::channels::pact::Exchange::new(|_: &OutMessage| 0),
        name,
        move |_cap, _info| {
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let entry = open.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                    for batch in data {
                        entry.1.append(batch);
                    }
                });
                let complete: Vec<Time> = open
                    .keys()
                    .filter(|t| !frontier.less_equal(t))
                    .copied()
                    .collect();
                for t in complete {
                    let Some((cap, records)) = open.remove(&t) else {
                        continue;
                    };
                    let Some(tx) = &transactions else {
                        if std::mem::take(&mut missing) {
                            failure.fail(RunFailure::new(
                                Fault::Internal,
                                format!("sink `{sink}`: no Kafka transactions on this worker"),
                            ));
                        }
                        continue;
                    };
                    let sent = records.len() as u64;
                    let bytes: usize = records.iter().map(OutMessage::bytes).sum();
                    tx.hold(t, records);
                    output
                        .session(&cap)
                        .give(durable(&sink, t, (sent, bytes as u64), &counters));
                }
            }
        },
    )
}
