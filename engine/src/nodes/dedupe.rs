//! `kind = "dedupe"`: drops a record whose key was already seen within `within` of its event
//! time (a device or feed sending a reading twice, a replayed batch), keeping the first.
//!
//! Records are routed by key, so every record of a key meets the same worker's state, and taken
//! in event-time order once their timestamp is complete (as windows are). A record is a
//! duplicate when a record of its key kept before it has an event time at most `within` apart
//! from its own. The state holds, per key, the event times kept within `within` of the
//! newest event time the worker has seen: a record older than that is checked against what is
//! left. Duplicates count as `dropped` in the run summary; a record whose key or event time
//! cannot be had goes to `dead-letter` with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator as _;
use toml::Spanned;
use vitalflow_model::row::{KeyValue, Row, Schema, Value};
use vitalflow_model::{DeadLetter, Time};
use vitalflow_operators::expression::Compiled;

use super::settings::Duration;
use super::{NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::PortKind;
use crate::job::schema::{event_time, expression, whole};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_rows};
use crate::runtime::ops::{StageLogic, VecStream, stage};
use crate::runtime::rows::dead_row;

/// `kind = "dedupe"`: drops records whose key was seen within `within` of their event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DedupeConfig {
    /// Always `"dedupe"`.
    pub kind: String,
    /// Upstream ports (rows of one schema, with an event-time field).
    pub inputs: Vec<Spanned<String>>,
    /// The key expression: records with equal keys are duplicates of each other (a message id,
    /// or `patient_id || ':' || code`). Required.
    pub key: Spanned<String>,
    /// How far apart (event time) two records of a key may be and still be duplicates. Required.
    pub within: Spanned<Duration>,
    /// The compiled key and the event-time field, once resolved.
    #[serde(skip)]
    pub(crate) resolved: Resolved<(Arc<Compiled>, usize)>,
}

impl NodeSpec for DedupeConfig {
    fn kind(&self) -> &'static str {
        "dedupe"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Rows),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Rows]
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let Some(input) = r.input() else {
            return Vec::new();
        };
        let path = r.path.to_owned();
        if self.within.get_ref().0.is_zero() {
            let d = r.text.diag(
                self.within.span().start,
                format!("`{path}.within` must be longer than 0"),
            );
            r.errors.push(d);
        }
        let time = event_time(r.text, r.span.start, r.path, &input, r.errors);
        let key = match expression(r.text, &self.key, &input, &format!("{path}.key")) {
            Ok(k) if k.ty().is_none() => {
                let d = whole(
                    r.text,
                    &self.key,
                    format!("`{path}.key`: a key cannot be `null`"),
                );
                r.errors.push(d);
                None
            }
            Ok(k) => Some(k),
            Err(d) => {
                r.errors.extend(d);
                None
            }
        };
        if let (Some(key), Some(time)) = (key, time) {
            self.resolved.set((Arc::new(key), time));
        }
        vec![("out", input)]
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let (key, time) = &**p.resolved(&self.resolved)?;
        Some(Box::new(DedupeOp {
            key: Arc::clone(key),
            time: *time,
            within: self.within.get_ref().millis_i64(),
            schema: Arc::new(p.rows()?),
        }))
    }
}

/// A planned dedupe node.
pub struct DedupeOp {
    /// The key expression.
    pub key: Arc<Compiled>,
    /// The event-time field.
    pub time: usize,
    /// How far apart duplicates may be (ms).
    pub within: i64,
    /// The rows' schema.
    pub schema: Arc<Schema>,
}

impl Operator for DedupeOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_rows);
        let ordered = in_event_time_order(input, Arc::clone(&self.key), self.time, name);
        let logic = Dedupe {
            stage: name.to_owned(),
            key: Arc::clone(&self.key),
            time: self.time,
            within: self.within,
            schema: Arc::clone(&self.schema),
            kept: HashMap::new(),
            newest: i64::MIN,
            pruned_at: i64::MIN,
        };
        let (o, d, _) = stage(ordered, Pipeline, name, logic, counters);
        b.output(name, "out", Port::Rows(o));
        b.output(name, "dead-letter", Port::Dead(d));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}

/// Routes rows by key and hands each timestamp's rows on once the input is complete at it, in
/// event-time order (ties in their order in the source): which of two duplicates is kept does
/// not depend on how records met on the way.
fn in_event_time_order<'s>(
    input: VecStream<'s, Row>,
    key: Arc<Compiled>,
    time: usize,
    name: &str,
) -> VecStream<'s, Row> {
    let route = Exchange::new(move |r: &Row| key.eval(&r.values).map_or(0, |v| v.route_hash()));
    let event_ms = move |r: &Row| match r.values.get(time) {
        Some(Value::Timestamp(t)) => *t,
        _ => i64::MIN,
    };
    input.unary_frontier::<CapacityContainerBuilder<Vec<Row>>, _, _, _>(
        route,
        &format!("{name}-order"),
        move |_cap, _info| {
            let mut stash: BTreeMap<Time, (Capability<Time>, Vec<Row>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let rows = &mut stash
                        .entry(*cap.time())
                        .or_insert_with(|| (cap, Vec::new()))
                        .1;
                    for batch in data {
                        rows.append(batch);
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, mut rows) = entry.remove();
                    rows.sort_by_key(|r| (event_ms(r), r.sequence));
                    output.session(&cap).give_iterator(rows.into_iter());
                }
            }
        },
    )
}

/// A worker's dedupe state.
struct Dedupe {
    stage: String,
    key: Arc<Compiled>,
    time: usize,
    within: i64,
    schema: Arc<Schema>,
    /// The event times kept per key, within `within` of `newest`.
    kept: HashMap<KeyValue, Vec<i64>>,
    /// The newest event time seen.
    newest: i64,
    /// `newest` when the state was last pruned.
    pruned_at: i64,
}

impl Dedupe {
    /// Forgets the times more than `within` behind the newest, once the newest has moved on by
    /// `within` since the last time (each time kept is looked at a bounded number of times).
    fn prune(&mut self) {
        if self.newest.saturating_sub(self.pruned_at) < self.within.max(1) {
            return;
        }
        let horizon = self.newest.saturating_sub(self.within);
        self.kept.retain(|_, times| {
            times.retain(|t| *t >= horizon);
            !times.is_empty()
        });
        self.pruned_at = self.newest;
    }
}

impl StageLogic<Row, Row> for Dedupe {
    fn process(&mut self, row: Row, out: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        let t = match row.values.get(self.time) {
            Some(Value::Timestamp(t)) => *t,
            _ => {
                let reason = format!("`{}`: the record has no event time", self.stage);
                dead.push(dead_row(&self.stage, &self.schema, &row, reason));
                return;
            }
        };
        let key = match self.key.eval(&row.values) {
            Ok(v) => KeyValue(v),
            Err(e) => {
                let reason = format!("`{}.key`: {e}", self.stage);
                dead.push(dead_row(&self.stage, &self.schema, &row, reason));
                return;
            }
        };
        let times = self.kept.entry(key).or_default();
        if times
            .iter()
            .any(|k| k.abs_diff(t) <= self.within.unsigned_abs())
        {
            return;
        }
        times.push(t);
        out.push(row);
        self.newest = self.newest.max(t);
        self.prune();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vitalflow_model::row::{Field, Type};

    fn logic(within: i64) -> Dedupe {
        let schema = Schema {
            fields: vec![
                Field {
                    name: "id".into(),
                    ty: Type::String,
                    nullable: false,
                    phi: None,
                },
                Field {
                    name: "ts".into(),
                    ty: Type::Timestamp,
                    nullable: false,
                    phi: None,
                },
            ],
            time: Some(1),
            key: Some(0),
        };
        let key = vitalflow_operators::expression::compile("id", &schema).unwrap();
        Dedupe {
            stage: "dedupe".into(),
            key: Arc::new(key),
            time: 1,
            within,
            schema: Arc::new(schema),
            kept: HashMap::new(),
            newest: i64::MIN,
            pruned_at: i64::MIN,
        }
    }

    fn row(id: &str, ts: i64) -> Row {
        Row {
            values: vec![Value::str(id), Value::Timestamp(ts)],
            sequence: 0,
            tombstone: false,
            arrival_us: 0,
        }
    }

    #[test]
    fn a_key_seen_within_the_duration_is_dropped_and_state_stays_bounded() {
        let mut d = logic(10_000);
        let (mut out, mut dead) = (Vec::new(), Vec::new());
        for (id, ts) in [
            ("a", 0),
            ("a", 10_000), // 10 s after a kept `a`: a duplicate
            ("b", 5_000),
            ("a", 10_001), // 10.001 s after: kept
            ("a", 3_000),  // within 10 s of both kept `a`s
            ("b", 16_000), // 11 s after `b`: kept
        ] {
            d.process(row(id, ts), &mut out, &mut dead);
        }
        let kept: Vec<(String, i64)> = out
            .iter()
            .map(|r| match (&r.values[0], &r.values[1]) {
                (Value::Str(s), Value::Timestamp(t)) => (s.to_string(), *t),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("a".into(), 0),
                ("b".into(), 5_000),
                ("a".into(), 10_001),
                ("b".into(), 16_000)
            ]
        );
        assert!(dead.is_empty());
        // A million distinct keys, one a second: only those within `within` of the newest stay.
        for i in 0..1_000_000i64 {
            d.process(row(&i.to_string(), 20_000 + i * 1_000), &mut out, &mut dead);
        }
        let held: usize = d.kept.values().map(Vec::len).sum();
        assert!(held <= 2 * 11, "{held} times held");
    }
}
