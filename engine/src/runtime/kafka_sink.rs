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
use timely::dataflow::operators::generic::operator::Operator;
use vitalflow_connectors::kafka::{ClientSettings, OutMessage, TopicWriter};
use vitalflow_model::envelope::Counts;
use vitalflow_model::{Time, batch_of};

use super::metrics::{Failure, NodeCounters};
use super::ops::{SinkCommit, VecStream};

/// How a record becomes a Kafka record: key, value, headers.
pub type Render<T> =
    Arc<dyn Fn(&T) -> (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>) + Send + Sync>;

/// Writes `input` to `topic`.
pub fn kafka_sink<'s, T>(
    input: VecStream<'s, T>,
    name: &str,
    settings: ClientSettings,
    topic: String,
    render: Render<T>,
    counters: Arc<NodeCounters>,
    failure: Failure,
) -> VecStream<'s, SinkCommit>
where
    T: Clone + Send + 'static,
{
    let sink = name.to_owned();
    let scope = input.scope();
    input.unary_frontier::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
        Pipeline,
        name,
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut writer = match TopicWriter::new(&settings) {
                Ok(w) => Some(w),
                Err(e) => {
                    failure.fail(format!("sink `{sink}`: {e}"));
                    None
                }
            };
            // Per timestamp: its capability, records sent, records not yet acknowledged.
            let mut open: BTreeMap<Time, (Capability<Time>, u64, u64)> = BTreeMap::new();
            let mut tokens: HashMap<usize, Time> = HashMap::new();
            move |(input, frontier), output| {
                let Some(w) = writer.as_mut() else {
                    input.for_each(|_, _| {});
                    return;
                };
                let mut error = None;
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let time = *cap.time();
                    let entry = open.entry(time).or_insert_with(|| (cap, 0, 0));
                    for batch in data {
                        for record in batch.drain(..) {
                            let (key, payload, headers) = render(&record);
                            match w.send(OutMessage {
                                topic: topic.clone(),
                                key,
                                payload,
                                headers,
                            }) {
                                Ok(token) => {
                                    tokens.insert(token, time);
                                    entry.1 += 1;
                                    entry.2 += 1;
                                }
                                Err(e) => error = Some(e.to_string()),
                            }
                        }
                    }
                });
                match w.poll() {
                    Ok(acked) => {
                        for token in acked {
                            if let Some(t) = tokens.remove(&token)
                                && let Some(entry) = open.get_mut(&t)
                            {
                                entry.2 -= 1;
                            }
                        }
                    }
                    Err(e) => error = Some(e.to_string()),
                }
                if let Some(e) = error {
                    failure.fail(format!("sink `{sink}`: {e}"));
                    return;
                }
                let durable: Vec<Time> = open
                    .iter()
                    .filter(|(t, (_, _, pending))| *pending == 0 && !frontier.less_equal(t))
                    .map(|(t, _)| *t)
                    .collect();
                for t in durable {
                    if let Some((cap, sent, _)) = open.remove(&t) {
                        counters.add(&Counts {
                            records_in: sent,
                            records_out: sent,
                            rejected: 0,
                        });
                        output.session(&cap).give(SinkCommit {
                            sink: sink.clone(),
                            batches: vec![batch_of(t)],
                            files: Vec::new(),
                            rows: sent,
                            first: t,
                            last: t,
                        });
                    }
                }
                if !open.is_empty() {
                    activator.activate_after(Duration::from_millis(5));
                }
            }
        },
    )
}
