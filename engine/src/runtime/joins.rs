//! The `join` operator: a stream joined, as of each record's event time, to a table kept as a
//! differential-dataflow arrangement.
//!
//! * The table side: rows (upserts; Kafka tombstones delete) are routed by key to a *versioner*,
//!   which turns each into a version `(valid_from, sequence, fields)` of its key and emits it as
//!   a differential update. `valid_from` is the row's event time (a table without an event-time
//!   field: valid from the start of time); the sequence (Kafka offset, file line) orders versions
//!   of one key with the same `valid_from`, so changelog order is kept. The versions are arranged
//!   by key (`arrange_core`, partitioned like the stream).
//! * A version superseded by one whose `valid_from` is `history` behind the stream's watermark
//!   can no longer be chosen by a record that is not older than that: the versioner retracts it,
//!   and the arrangement's compaction releases it. A key whose last version is such a tombstone
//!   disappears.
//! * The stream side: each record waits until the table has every update at or before its
//!   dataflow timestamp (for a file table: the whole table), then reads the arrangement: of the
//!   versions of its key present at that timestamp, the one with the latest `valid_from` at or
//!   before the record's event time. An update the table receives later does not change output
//!   already produced.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::ControlFlow;
use std::sync::Arc;

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::cursor::{BatchCursor, CursorList, cursor_list};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use differential_dataflow::trace::{Cursor, TraceReader};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::{Capability, Concat};
use timely::progress::Antichain;
use timely::progress::frontier::MutableAntichain;
use timely::progress::timestamp::Timestamp;
use vitalflow_model::row::{KeyValue, Row, Schema, Value};
use vitalflow_model::{DeadLetter, Time};
use vitalflow_operators::expression::Compiled;

use super::metrics::NodeCounters;
use super::ops::{StageLogic, VecStream, prepare_stage, split_results};
use super::rows::{dead_row, event_time_and_key};
use super::windows::{add_marks, event_time_marks};

/// What a `join` does with a stream record whose key has no row in the table at its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Drop it (an inner join).
    Drop,
    /// Pass it on with the table's fields null (a left join).
    Null,
    /// Send it to the dead-letter output (an inner join that keeps what it drops).
    DeadLetter,
}

/// A `join` node resolved for running.
pub struct JoinPlan {
    /// The node.
    pub name: String,
    /// The table node (for messages).
    pub table: String,
    /// The stream's key expression.
    pub key: Arc<Compiled>,
    /// The stream's event-time field.
    pub time: usize,
    /// The table's key field.
    pub table_key: usize,
    /// The table's event-time field (`None`: versions are valid from the start of time).
    pub table_time: Option<usize>,
    /// The table fields appended to each stream record.
    pub take: Vec<usize>,
    /// Unmatched records.
    pub missing: Missing,
    /// How far behind the stream's watermark superseded versions are kept (ms).
    pub history: i64,
    /// The table is bounded (a file): records wait for all of it.
    pub bounded_table: bool,
    /// The stream's schema (dead letters).
    pub schema: Arc<Schema>,
}

/// One version of a table key: valid from its event time, ordered by it and then by changelog
/// position. `fields` is `None` for a deletion.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Event time from which the version holds (ms).
    pub valid_from: i64,
    /// Position in the table's changelog.
    pub seq: u64,
    /// The table fields the join takes; `None` once the key is deleted.
    pub fields: Option<Vec<KeyValue>>,
}

type Update = ((TableKey, Version), Time, isize);

/// A key as the join's table orders it: by its routing hash (`Value::route_hash`, which also
/// sends a key's table rows and stream records to one worker), then by the key. Seeking a probe's
/// key in the arrangement compares the hashes, kept beside the keys, instead of dereferencing and
/// comparing key strings (2% of the harness job's CPU time went to that `memcmp`). In the
/// harness's job the join's busy time went from 267-324 ms to 217-229 ms, and whole runs used
/// 2.3% less CPU time (5 runs each, alternating; 4 of 5 pairs lower).
pub(crate) type TableKey = (u64, KeyValue);

/// `key` with its routing hash.
fn table_key(key: KeyValue) -> TableKey {
    (key.0.route_hash(), key)
}

struct Prepare(Arc<JoinPlan>);

/// A stream record ready to join: key, event time, row.
pub(crate) type Probe = (TableKey, i64, Row);

impl StageLogic<Row, Probe> for Prepare {
    fn process(&mut self, row: Row, out: &mut Vec<Probe>, dead: &mut Vec<DeadLetter>) {
        let p = &self.0;
        match event_time_and_key(&p.name, &p.schema, p.time, &p.key, &row) {
            Ok((time, key)) => out.push((table_key(key), time, row)),
            Err(reason) => dead.push(dead_row(&p.name, &p.schema, &row, reason)),
        }
    }
}

/// A table row as a version of its key.
fn version_of(plan: &JoinPlan, row: &Row) -> (TableKey, Version) {
    let key = table_key(KeyValue(
        row.values
            .get(plan.table_key)
            .cloned()
            .unwrap_or(Value::Null),
    ));
    let valid_from = match plan.table_time.and_then(|i| row.values.get(i)) {
        Some(Value::Timestamp(ms)) => *ms,
        _ => i64::MIN,
    };
    let fields = (!row.tombstone).then(|| {
        plan.take
            .iter()
            .map(|i| KeyValue(row.values.get(*i).cloned().unwrap_or(Value::Null)))
            .collect()
    });
    let version = Version {
        valid_from,
        seq: row.sequence,
        fields,
    };
    (key, version)
}

/// A stream record with the fields of the version found for it; without one, what `missing`
/// says: nothing, nulls, or a dead letter.
fn joined(
    plan: &JoinPlan,
    mut row: Row,
    found: Option<Vec<KeyValue>>,
) -> Option<Result<Row, DeadLetter>> {
    match (found, plan.missing) {
        (Some(fields), _) => {
            row.values.extend(fields.into_iter().map(|k| k.0));
            Some(Ok(row))
        }
        (None, Missing::Drop) => None,
        (None, Missing::Null) => {
            row.values
                .extend(std::iter::repeat_n(Value::Null, plan.take.len()));
            Some(Ok(row))
        }
        (None, Missing::DeadLetter) => {
            let reason = format!(
                "`{}`: no row of table `{}` for the record's key at its event time",
                plan.name, plan.table
            );
            Some(Err(dead_row(&plan.name, &plan.schema, &row, reason)))
        }
    }
}

/// The smallest element of the frontiers, `None` when all are empty.
fn lower(frontiers: &[&MutableAntichain<Time>]) -> Option<Time> {
    frontiers
        .iter()
        .filter_map(|f| f.frontier().iter().min().copied())
        .min()
}

/// The table's versions as the arrangement keeps them.
type Trace = TraceAgent<ValSpine<TableKey, Version, Time, isize>>;
/// A cursor over the table's batches up to the trace's upper frontier.
type TableCursor = CursorList<BatchCursor<Trace>>;
/// The batches a [`TableCursor`] reads.
type TableStorage = <TableCursor as Cursor>::Storage;
/// The join operator's output handle in an activation.
type JoinOutput<'a> =
    OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<Result<Row, DeadLetter>>>>;

/// Builds a `join` node: (joined rows, dead letters).
pub fn join<'s>(
    stream: VecStream<'s, Row>,
    table: VecStream<'s, Row>,
    plan: Arc<JoinPlan>,
    counters: Arc<NodeCounters>,
) -> (VecStream<'s, Row>, VecStream<'s, DeadLetter>) {
    let (probes, dead, _) = prepare_stage(
        stream,
        Pipeline,
        &plan.name,
        Prepare(Arc::clone(&plan)),
        Arc::clone(&counters),
    );
    // The stream's watermark, for the versioner.
    let (probes, marks) = event_time_marks(probes, |p| p.1);
    let versions = versioner(table, marks, Arc::clone(&plan));
    let arranged = arrange_core::<
        _,
        _,
        ValBatcher<TableKey, Version, Time, isize>,
        ValSpine<TableKey, Version, Time, isize>,
    >(
        versions,
        Pipeline,
        &format!("{}-table", plan.name),
        ValBatcher::new,
    );
    let trace = arranged.trace.clone();
    let route = Exchange::new(|p: &Probe| p.0.0);
    let name = plan.name.clone();
    let joined = probes
        .binary_frontier::<_, CapacityContainerBuilder<Vec<Result<Row, DeadLetter>>>, _, _, _, _>(
            arranged.stream,
            route,
            Pipeline,
            &name,
            move |cap, _info| {
                let mut cap = Some(cap);
                let mut lookup = Lookup {
                    plan,
                    counters,
                    stash: BTreeMap::new(),
                    trace,
                    upper: Antichain::from_elem(Time::minimum()),
                };
                move |(input, f1), (batches, f2), output| {
                    input.for_each_stamp(|c, data| lookup.stash(c.least().copied(), data));
                    // The arrangement's batches are read through the trace.
                    batches.for_each_stamp(|_, data| data.for_each(Vec::clear));
                    let Some(c) = cap.as_mut() else { return };
                    if lookup.activate(c, f1, f2, output).is_break() {
                        cap = None;
                    }
                }
            },
        );
    let (rows, rejected) = split_results(joined);
    (rows, dead.concat(rejected))
}

/// The stream side of a `join` on one worker: records wait until the table has every update at
/// or before their dataflow timestamp, then read the versions of their key in the trace.
struct Lookup {
    /// The node.
    plan: Arc<JoinPlan>,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// The records waiting for the table, by dataflow timestamp.
    stash: BTreeMap<Time, Vec<Probe>>,
    /// The table's versions.
    trace: Trace,
    /// The trace's upper frontier, as last read.
    upper: Antichain<Time>,
}

impl Lookup {
    /// Keeps the records that arrived at `time` until the table is ready for them.
    fn stash<'a>(&mut self, time: Option<Time>, data: impl Iterator<Item = &'a mut Vec<Probe>>) {
        let Some(t) = time else { return };
        let entry = self.stash.entry(t).or_default();
        for batch in data {
            entry.append(batch);
        }
    }

    /// Joins the records the table is ready for (`table` is its frontier), then moves the
    /// capability and the trace's compaction on to the oldest time a record may still come at
    /// (`stream` is the records' frontier). `Break` when none may: the operator is done.
    fn activate(
        &mut self,
        cap: &mut Capability<Time>,
        stream: &MutableAntichain<Time>,
        table: &MutableAntichain<Time>,
        output: &mut JoinOutput<'_>,
    ) -> ControlFlow<()> {
        let table_lower = lower(&[table]);
        let bounded = self.plan.bounded_table;
        let ready: Vec<Time> = self
            .stash
            .keys()
            .copied()
            .filter(|t| match table_lower {
                None => true,
                Some(l) => !bounded && *t < l,
            })
            .collect();
        if !ready.is_empty() {
            self.join_ready(ready, cap, output);
        }
        let next = self
            .stash
            .keys()
            .next()
            .copied()
            .into_iter()
            .chain(lower(&[stream]))
            .min();
        self.compact(next, cap)
    }

    /// Joins the records of the `ready` times, each time's at the records' own time: the
    /// stream may still send records of earlier times (the table, not the stream, made these
    /// ready), so the capability stays where it is.
    fn join_ready(
        &mut self,
        ready: Vec<Time>,
        cap: &Capability<Time>,
        output: &mut JoinOutput<'_>,
    ) {
        self.trace.read_upper(&mut self.upper);
        let Some(storage) = self.trace.batches_through(self.upper.borrow()) else {
            return;
        };
        let (mut cursor, storage) = cursor_list(storage);
        for t in ready {
            let probes = self.stash.remove(&t).unwrap_or_default();
            let probed = probes.len() as u64;
            let out = join_at(&self.plan, t, probes, &mut cursor, &storage);
            let at = cap.delayed(&t.max(*cap.time()));
            // One row or dead letter per record, none if dropped.
            let failed = out.iter().filter(|r| r.is_err()).count() as u64;
            let made = out.len() as u64;
            self.counters.add_out(made - failed);
            self.counters.add_rejected(failed);
            self.counters.add_dead_letters(failed);
            self.counters.add_dropped(probed.saturating_sub(made));
            output.session(&at).give_iterator(out.into_iter());
        }
    }

    /// Moves the capability to `next`, the oldest time a record may still come at, and lets
    /// the trace compact up to it; with no such time, releases the trace. `Break` then.
    fn compact(&mut self, next: Option<Time>, cap: &mut Capability<Time>) -> ControlFlow<()> {
        let Some(n) = next else {
            self.trace.set_logical_compaction(Antichain::new().borrow());
            self.trace
                .set_physical_compaction(Antichain::new().borrow());
            return ControlFlow::Break(());
        };
        if *cap.time() < n {
            cap.downgrade(&n);
        }
        let frontier = Antichain::from_elem(n);
        self.trace.set_logical_compaction(frontier.borrow());
        self.trace.read_upper(&mut self.upper);
        self.trace.set_physical_compaction(self.upper.borrow());
        ControlFlow::Continue(())
    }
}

/// The records `probes` of dataflow timestamp `t` joined to the table's versions present at
/// `t`: one row or dead letter per record, none for a record dropped.
fn join_at(
    plan: &JoinPlan,
    t: Time,
    mut probes: Vec<Probe>,
    cursor: &mut TableCursor,
    storage: &TableStorage,
) -> Vec<Result<Row, DeadLetter>> {
    let mut out = Vec::new();
    // Probes in table order: the cursor only moves forward.
    probes.sort_by(|a, b| a.0.cmp(&b.0));
    cursor.rewind_keys(storage);
    for (key, time, row) in probes {
        let found = latest_version(plan, t, &key, time, cursor, storage);
        out.extend(joined(plan, row, found.and_then(|v| v.fields.clone())));
    }
    out
}

/// The latest version of `key` valid at event time `time` among those present at dataflow
/// timestamp `t` (of a bounded table: among all its versions).
fn latest_version<'a>(
    plan: &JoinPlan,
    t: Time,
    key: &TableKey,
    time: i64,
    cursor: &mut TableCursor,
    storage: &'a TableStorage,
) -> Option<&'a Version> {
    let mut found = None;
    cursor.seek_key(storage, key);
    if cursor.get_key(storage) != Some(key) {
        return None;
    }
    cursor.rewind_vals(storage);
    while let Some(v) = cursor.get_val(storage) {
        if v.valid_from > time {
            break;
        }
        let mut count = 0isize;
        cursor.map_times(storage, |at, diff| {
            if plan.bounded_table || *at <= t {
                count += *diff;
            }
        });
        if count > 0 {
            found = Some(v);
        }
        cursor.step_val(storage);
    }
    found
}

/// The versioner's output handle in an activation.
type VersionsOutput<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<Update>>>;

/// Table rows to versions (differential updates), retracting versions no record can choose.
fn versioner<'s>(
    table: VecStream<'s, Row>,
    marks: VecStream<'s, i64>,
    plan: Arc<JoinPlan>,
) -> timely::dataflow::Stream<'s, Time, Vec<Update>> {
    let k = plan.table_key;
    let route = Exchange::new(move |r: &Row| r.values.get(k).map_or(0, Value::route_hash));
    // Without releases (`history = "forever"`), the marks input is not connected to the
    // output: the versions' frontier follows the table alone, so a complete table stops holding
    // the stream's records back. With releases, it follows the stream's watermark too: a
    // release at `t + 1` must be in the table before records of `t + 1` read it.
    let releases = plan.history != i64::MAX;
    let mut builder = OperatorBuilder::new("Versions".to_owned(), table.scope());
    let (output, stream) = builder.new_output::<Vec<Update>>();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Vec<Update>>>::from(output);
    let mut rows = builder.new_input(table, route);
    let connection: Vec<(usize, Antichain<<Time as Timestamp>::Summary>)> = if releases {
        vec![(0, Antichain::from_elem(Default::default()))]
    } else {
        Vec::new()
    };
    let mut marks = builder.new_input_connection(marks, Pipeline, connection);
    builder.build(move |mut caps| {
        let mut cap = caps.pop();
        let mut versions = Versions {
            plan,
            releases,
            keys: BTreeMap::new(),
            schedule: BinaryHeap::new(),
            maxima: BTreeMap::new(),
            watermark: i64::MIN,
        };
        move |frontiers| {
            let (f1, f2) = (&frontiers[0], &frontiers[1]);
            let mut output = output.activate();
            rows.for_each_stamp(|c, data| {
                let Some(t) = c.least().copied() else { return };
                let mut session = output.session(&c);
                for row in data.flat_map(|batch| batch.drain(..)) {
                    session.give((versions.add(&row), t, 1));
                }
            });
            marks.for_each_stamp(|c, data| {
                if let Some(t) = c.least() {
                    add_marks(&mut versions.maxima, *t, data);
                }
            });
            let Some(c) = cap.as_mut() else { return };
            if versions.release(c, f1, f2, &mut output).is_break() {
                cap = None;
            }
        }
    });
    stream
}

/// The versioner's state on one worker: the versions of its keys, and when each can be
/// released.
struct Versions {
    /// The node.
    plan: Arc<JoinPlan>,
    /// Whether superseded versions are released (`history` is not "forever").
    releases: bool,
    /// Every key's versions, in order.
    keys: BTreeMap<TableKey, Vec<Version>>,
    /// When (the stream's watermark, ms) a key's versions are looked at for release, soonest
    /// first.
    schedule: BinaryHeap<Reverse<(i64, TableKey)>>,
    /// The stream's largest event time per dataflow timestamp, until the timestamp completes.
    maxima: BTreeMap<Time, i64>,
    /// The stream's watermark: its largest event time over the completed timestamps.
    watermark: i64,
}

impl Versions {
    /// A table row as a version of its key, kept (and scheduled for release).
    fn add(&mut self, row: &Row) -> (TableKey, Version) {
        let (key, version) = version_of(&self.plan, row);
        let valid_from = version.valid_from;
        let list = self.keys.entry(key.clone()).or_default();
        let at = list.partition_point(|v| v < &version);
        list.insert(at, version.clone());
        if self.releases {
            self.schedule.push(Reverse((
                valid_from.saturating_add(self.plan.history),
                key.clone(),
            )));
        }
        (key, version)
    }

    /// In time order, the watermark after each completed timestamp `t` of the stream (`marks`
    /// is its frontier), and the versions it releases, retracted at `t + 1` (so the result does
    /// not depend on scheduling); then moves the capability on. `Break` once the versioner is
    /// done (`table` is the table's frontier).
    fn release(
        &mut self,
        cap: &mut Capability<Time>,
        table: &MutableAntichain<Time>,
        marks: &MutableAntichain<Time>,
        output: &mut VersionsOutput<'_>,
    ) -> ControlFlow<()> {
        let marks_lower = lower(&[marks]);
        let done: Vec<Time> = self
            .maxima
            .keys()
            .copied()
            .filter(|t| marks_lower.is_none_or(|l| *t < l))
            .collect();
        for t in done {
            if let Some(m) = self.maxima.remove(&t) {
                self.watermark = self.watermark.max(m);
            }
            let at_time = (t + 1).max(*cap.time());
            let history = self.plan.history;
            let retract = prune(
                &mut self.keys,
                &mut self.schedule,
                self.watermark,
                history,
                at_time,
            );
            if !retract.is_empty() {
                let at = cap.delayed(&at_time);
                output.session(&at).give_iterator(retract.into_iter());
            }
        }
        // Without releases, a complete table (its input closed: a file, a topic read to its
        // end) has nothing more to do.
        let now = if self.releases {
            lower(&[table, marks])
        } else {
            lower(&[table]).and(lower(&[table, marks]))
        };
        match now {
            Some(n) if *cap.time() < n => cap.downgrade(&n),
            Some(_) => {}
            None => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }
}

/// Releases the versions superseded `history` behind the watermark (and keys whose only version
/// left is such a deletion): their retractions, at `at`.
fn prune(
    keys: &mut BTreeMap<TableKey, Vec<Version>>,
    schedule: &mut BinaryHeap<Reverse<(i64, TableKey)>>,
    watermark: i64,
    history: i64,
    at: Time,
) -> Vec<Update> {
    let mut retract = Vec::new();
    while let Some(Reverse((due, _))) = schedule.peek() {
        if *due > watermark {
            break;
        }
        let Some(Reverse((_, key))) = schedule.pop() else {
            break;
        };
        let Some(list) = keys.get_mut(&key) else {
            continue;
        };
        let old = |v: &Version| v.valid_from.saturating_add(history) <= watermark;
        let keep_from = list.iter().rposition(old).unwrap_or(0);
        for v in list.drain(..keep_from) {
            retract.push(((key.clone(), v), at, -1));
        }
        if list.len() == 1 && list[0].fields.is_none() && old(&list[0]) {
            for v in list.drain(..) {
                retract.push(((key.clone(), v), at, -1));
            }
        }
        if list.is_empty() {
            keys.remove(&key);
        }
    }
    retract
}

/// A `join` node's table and per-record lookup in one thread, with no dataflow around it: the
/// throughput harness's straight-line baseline. The table is bounded (read whole first).
#[cfg(feature = "baseline")]
pub(crate) struct JoinLoop {
    plan: Arc<JoinPlan>,
    prepare: Prepare,
    table: BTreeMap<TableKey, Vec<Version>>,
}

#[cfg(feature = "baseline")]
impl JoinLoop {
    pub(crate) fn new(plan: &Arc<JoinPlan>) -> Self {
        Self {
            plan: Arc::clone(plan),
            prepare: Prepare(Arc::clone(plan)),
            table: BTreeMap::new(),
        }
    }

    /// Adds a table row.
    pub(crate) fn insert(&mut self, row: &Row) {
        let (key, version) = version_of(&self.plan, row);
        let list = self.table.entry(key).or_default();
        let at = list.partition_point(|v| v < &version);
        list.insert(at, version);
    }

    /// Joins one stream record to the table version valid at its event time.
    pub(crate) fn probe(&mut self, row: Row, out: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        let mut probes = Vec::with_capacity(1);
        self.prepare.process(row, &mut probes, dead);
        let p = &self.plan;
        for (key, time, row) in probes {
            let found = self.table.get(&key).and_then(|versions| {
                let valid = versions.partition_point(|v| v.valid_from <= time);
                valid
                    .checked_sub(1)
                    .and_then(|i| versions.get(i))
                    .and_then(|v| v.fields.clone())
            });
            match joined(p, row, found) {
                Some(Ok(row)) => out.push(row),
                Some(Err(d)) => dead.push(d),
                None => {}
            }
        }
    }
}
