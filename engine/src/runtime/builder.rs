//! Building a plan's dataflow on a worker: each planned node's [`Operator`] reads the ports of
//! its inputs and adds its own, in rounds until every node is built.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::operators::generic::operator::Operator as _;
use timely::dataflow::operators::generic::operator::empty;
use vitalflow_connectors::kafka::PartitionReader;
use vitalflow_model::alert::AlertEvent;
use vitalflow_model::canonical::CanonicalResource;
use vitalflow_model::clinical::Ingested;
use vitalflow_model::deid::DeidRecord;
use vitalflow_model::envelope::{AuditRecord, DomainEvent};
use vitalflow_model::notification::ClinicalNotification;
use vitalflow_model::row::{Row, Schema};
use vitalflow_model::{DeadLetter, RawRecord, Time};

use super::checkpoint::CheckpointSource;
use super::latency;
use super::metrics::{Failure, NodeCounters};
use super::ops::{RollPolicy, SinkCommit, StageStat, VecStream, rolling_sink};
use super::plan::Plan;
use super::saga::{SagaRole, reporter};
use super::stages::{JsonlSink, keep_none, merge_counts};
use crate::job::{Section, schema};
use crate::nodes::Operator;

/// A node of a plan: its name, section, inputs (node, port) and what it builds.
pub struct PlannedNode {
    /// The node's name.
    pub name: String,
    /// Its section.
    pub section: Section,
    /// Its inputs: (node, port).
    pub inputs: Vec<(String, String)>,
    /// What it builds.
    pub op: Box<dyn Operator>,
}

impl PlannedNode {
    /// The node's operator as the concrete type `T`, if it is one.
    #[must_use]
    pub fn op<T: Operator>(&self) -> Option<&T> {
        let any: &dyn std::any::Any = &*self.op;
        any.downcast_ref()
    }
}

/// A built output port.
#[derive(Clone)]
pub enum Port<'s> {
    /// Raw input records.
    Raw(VecStream<'s, RawRecord>),
    /// Parsed clinical records.
    Clinical(VecStream<'s, Ingested>),
    /// De-identified records.
    Deid(VecStream<'s, DeidRecord>),
    /// Canonical FHIR resources.
    Fhir(VecStream<'s, CanonicalResource>),
    /// Domain events.
    Events(VecStream<'s, DomainEvent>),
    /// Audit records.
    Audit(VecStream<'s, AuditRecord>),
    /// Dead letters.
    Dead(VecStream<'s, DeadLetter>),
    /// Rows of a declared schema.
    Rows(VecStream<'s, Row>),
    /// Alert events.
    Alerts(VecStream<'s, AlertEvent>),
    /// Identified clinical notifications.
    Notices(VecStream<'s, ClinicalNotification>),
}

macro_rules! port_getter {
    ($fn:ident, $variant:ident, $ty:ty) => {
        /// The port's stream, if it is of this kind.
        pub fn $fn<'s>(p: &Port<'s>) -> Option<VecStream<'s, $ty>> {
            match p {
                Port::$variant(s) => Some(s.clone()),
                _ => None,
            }
        }
    };
}
port_getter!(as_raw, Raw, RawRecord);
port_getter!(as_clinical, Clinical, Ingested);
port_getter!(as_deid, Deid, DeidRecord);
port_getter!(as_fhir, Fhir, CanonicalResource);
port_getter!(as_events, Events, DomainEvent);
port_getter!(as_audit, Audit, AuditRecord);
port_getter!(as_dead, Dead, DeadLetter);
port_getter!(as_rows, Rows, Row);
port_getter!(as_alerts, Alerts, AlertEvent);
port_getter!(as_notices, Notices, ClinicalNotification);

/// A worker's dataflow while it is built.
pub struct Builder<'s, 'p> {
    /// The worker's scope.
    pub scope: Scope<'s, Time>,
    /// The plan.
    pub plan: &'p Plan,
    /// Where operators report a failure.
    pub failure: Failure,
    ports: BTreeMap<(String, String), Port<'s>>,
    stats: BTreeMap<String, (VecStream<'s, StageStat>, SagaRole, Option<String>)>,
    commits: BTreeMap<String, VecStream<'s, SinkCommit>>,
    built: BTreeSet<String>,
    /// Source streams whose progress checkpoints wait for.
    pub progress: Vec<VecStream<'s, RawRecord>>,
    /// Schemas of rows ports, by node.
    pub schemas: BTreeMap<String, Arc<Schema>>,
}

impl<'s> Builder<'s, '_> {
    /// Sinks reading `node.out`: a stage's closing event waits for them.
    fn sinks_of(&self, node: &str) -> Vec<String> {
        self.plan
            .nodes
            .iter()
            .filter(|n| {
                n.section == Section::Sinks && n.inputs.iter().any(|(i, p)| i == node && p == "out")
            })
            .map(|n| n.name.clone())
            .collect()
    }

    fn ready(&self, inputs: &[(String, String)]) -> bool {
        inputs.iter().all(|(n, p)| {
            self.built.contains(n)
                && (p != "events" || self.sinks_of(n).iter().all(|s| self.built.contains(s)))
        })
    }

    /// Port `port` of node `node`, once built (a stage's `events` port is built on first use).
    pub fn port(&mut self, node: &str, port: &str) -> Option<Port<'s>> {
        let key = (node.to_owned(), port.to_owned());
        if let Some(p) = self.ports.get(&key) {
            return Some(p.clone());
        }
        if port != "events" {
            return None;
        }
        let (stats, role, upstream) = self.stats.get(node)?.clone();
        let commits: Vec<_> = self
            .sinks_of(node)
            .iter()
            .filter_map(|s| self.commits.get(s).cloned())
            .collect();
        let durable = if commits.is_empty() {
            empty(self.scope)
        } else {
            self.scope.concatenate(commits)
        };
        let merge = if role == SagaRole::Anonymization {
            merge_counts
        } else {
            keep_none
        };
        let events = Port::Events(reporter(
            stats,
            durable,
            node.to_owned(),
            role,
            upstream,
            self.plan.run.clone(),
            merge,
        ));
        self.ports.insert(key, events.clone());
        Some(events)
    }

    /// The streams of `inputs` that `get` takes, as one.
    pub fn inputs<T: Clone + 'static>(
        &mut self,
        inputs: &[(String, String)],
        get: fn(&Port<'s>) -> Option<VecStream<'s, T>>,
    ) -> VecStream<'s, T> {
        let streams: Vec<_> = inputs
            .iter()
            .filter_map(|(n, p)| self.port(n, p))
            .filter_map(|p| get(&p))
            .collect();
        if streams.len() == 1 {
            streams
                .into_iter()
                .next()
                .unwrap_or_else(|| empty(self.scope))
        } else {
            self.scope.concatenate(streams)
        }
    }

    /// A source's records, their arrivals noted when the run measures end-to-end latency.
    pub fn arrivals(&self, raw: VecStream<'s, RawRecord>) -> VecStream<'s, RawRecord> {
        match &self.plan.end_to_end {
            Some(e2e) => latency::track(raw, e2e),
            None => raw,
        }
    }

    /// The first of `inputs` that is a stage (whose events start this stage's saga).
    pub fn upstream_stage(&self, inputs: &[(String, String)]) -> Option<String> {
        inputs
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| self.stats.contains_key(n))
    }

    /// A JSON-lines sink over the node's inputs of one kind.
    #[allow(clippy::too_many_arguments)]
    pub fn jsonl<T: Clone + Send + 'static>(
        &mut self,
        name: &str,
        inputs: &[(String, String)],
        get: fn(&Port<'s>) -> Option<VecStream<'s, T>>,
        dir: &Path,
        policy: RollPolicy,
        private: bool,
        render: fn(&T) -> serde_json::Value,
    ) -> VecStream<'s, SinkCommit> {
        let input = self.inputs(inputs, get);
        let counters = self.plan.counters.get(name).cloned().unwrap_or_default();
        let writer = JsonlSink {
            out: self.plan.out.clone(),
            dir: dir.to_owned(),
            private,
            render,
        };
        rolling_sink(
            input,
            name,
            self.scope.index(),
            policy,
            writer,
            counters,
            self.failure.clone(),
        )
    }

    /// The schema of the rows a node reads, and its key field.
    pub fn row_schema(&self, inputs: &[(String, String)]) -> Arc<(Schema, Option<usize>)> {
        let schema = inputs
            .iter()
            .find_map(|(n, p)| self.schemas.get(&schema::port_key(n, p)))
            .map_or_else(Schema::default, |s| (**s).clone());
        let key = schema.key;
        Arc::new((schema, key))
    }

    /// The counters of node `name`.
    #[must_use]
    pub fn counters(&self, name: &str) -> Arc<NodeCounters> {
        self.plan.counters.get(name).cloned().unwrap_or_default()
    }

    /// Adds port `port` of node `node`.
    pub fn output(&mut self, node: &str, port: &str, p: Port<'s>) {
        self.ports.insert((node.to_owned(), port.to_owned()), p);
    }

    /// A stage's statistics, which its `events` port reports once its sinks are durable.
    pub fn stage_stats(
        &mut self,
        node: &str,
        stats: VecStream<'s, StageStat>,
        role: SagaRole,
        upstream: Option<String>,
    ) {
        self.stats.insert(node.to_owned(), (stats, role, upstream));
    }

    /// A sink's commits (checkpoints and stage closings wait for them).
    pub fn commit(&mut self, node: &str, commits: VecStream<'s, SinkCommit>) {
        self.commits.insert(node.to_owned(), commits);
    }

    /// A JSON-lines sink of node `node` over its inputs of one kind, its commits kept.
    #[allow(clippy::too_many_arguments)]
    pub fn jsonl_sink<T: Clone + Send + 'static>(
        &mut self,
        node: &PlannedNode,
        get: fn(&Port<'s>) -> Option<VecStream<'s, T>>,
        dir: &Path,
        policy: RollPolicy,
        private: bool,
        render: fn(&T) -> serde_json::Value,
    ) {
        let c = self.jsonl(&node.name, &node.inputs, get, dir, policy, private, render);
        self.commit(&node.name, c);
    }
}

/// Builds the job's dataflow in `scope` (called on every worker).
pub fn build<'s>(scope: Scope<'s, Time>, plan: &Plan, failure: Failure) {
    let mut b = Builder {
        scope,
        plan,
        failure,
        ports: BTreeMap::new(),
        stats: BTreeMap::new(),
        commits: BTreeMap::new(),
        built: BTreeSet::new(),
        progress: Vec::new(),
        schemas: plan.schemas.clone(),
    };
    // Build in rounds: a node is built once its inputs are, and a stage's `events` port once the
    // sinks of that stage's output are (its closing event waits for their durability).
    loop {
        let mut progressed = false;
        for node in &plan.nodes {
            if !b.built.contains(&node.name) && b.ready(&node.inputs) {
                node.op.build(&mut b, node);
                b.built.insert(node.name.clone());
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    // A job without a sink that writes has no commits to time records to.
    if let Some(e2e) = plan.end_to_end.as_ref().filter(|_| !b.commits.is_empty()) {
        let commits: Vec<_> = b.commits.values().cloned().collect();
        latency::complete(&b.scope.concatenate(commits), e2e);
        e2e.turn_on();
    }
    if let Some(cp) = &plan.checkpoint {
        let mut streams: Vec<VecStream<'s, SinkCommit>> = b.commits.values().cloned().collect();
        for raw in b.progress.clone() {
            streams.push(
                raw.unary::<CapacityContainerBuilder<Vec<SinkCommit>>, _, _, _>(
                    Pipeline,
                    "progress",
                    |_, _| |input, _output| input.for_each(|_, _| {}),
                ),
            );
        }
        let commits = b.scope.concatenate(streams);
        let sources = cp
            .sources
            .iter()
            .map(|s| CheckpointSource {
                name: s.name.clone(),
                topic: s.topic.clone(),
                log: Arc::clone(&s.log),
                committer: s
                    .kafka
                    .as_ref()
                    .filter(|_| b.scope.index() == 0)
                    .and_then(|(settings, group)| {
                        PartitionReader::new(settings, &s.topic, group).ok()
                    })
                    .map(|r| Arc::new(Mutex::new(r))),
                checkpointed: s.checkpointed.clone(),
            })
            .collect();
        super::checkpoint::coordinator(
            commits,
            plan.run.job.clone(),
            plan.run.run_id.clone(),
            plan.out.clone(),
            cp.base.clone(),
            sources,
            std::time::Duration::from_secs(1),
            b.failure.clone(),
            Arc::clone(&cp.stats),
            plan.cluster.get().cloned(),
            cp.transactions.clone(),
        );
    }
}
