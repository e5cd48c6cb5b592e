//! The `window` operator on timely: records are prepared (key, event time and aggregate
//! arguments evaluated; failures dead-lettered), routed by key, and fed to one
//! [`Windows`] state per worker, one completed dataflow timestamp at a time.
//!
//! The event-time watermark is the same on every worker: the largest event time of every
//! completed timestamp, over all workers (each worker broadcasts the largest event time of each
//! of its batches), minus the node's `watermark-delay`. For sources stamped with event time
//! (Kafka), the input frontier also moves it: timestamp `t` complete means every record before
//! `t × granularity` arrived, unless late. Timestamps are processed in order, so the results do
//! not depend on how many workers run the job.

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::scheduling::Activator;
use vitalflow_model::row::{Row, Schema, Value};
use vitalflow_model::{DeadLetter, Time};
use vitalflow_operators::expression::Compiled;
use vitalflow_operators::window::{WindowRecord, WindowSpec, Windows};

use super::metrics::NodeCounters;
use super::ops::{StageLogic, VecStream, fork, prepare_stage};
use super::rows::{dead_row, event_time_and_key};

/// A `window` node resolved for running.
pub struct WindowPlan {
    /// The node.
    pub name: String,
    /// Window shape, lateness, aggregates.
    pub spec: Arc<WindowSpec>,
    /// The key expression.
    pub key: Arc<Compiled>,
    /// The input's event-time field.
    pub time: usize,
    /// Per aggregate: its argument (`None` for `count()`).
    pub args: Vec<Option<Arc<Compiled>>>,
    /// How far the watermark stays behind the largest event time seen (ms).
    pub delay: i64,
    /// For event-time stamped inputs: milliseconds per dataflow timestamp.
    pub granularity_ms: Option<u64>,
    /// The input rows' schema (dead letters).
    pub schema: Arc<Schema>,
}

struct Prepare(Arc<WindowPlan>);

impl StageLogic<Row, (WindowRecord, Row)> for Prepare {
    fn process(
        &mut self,
        row: Row,
        out: &mut Vec<(WindowRecord, Row)>,
        dead: &mut Vec<DeadLetter>,
    ) {
        let p = &self.0;
        let prepared =
            event_time_and_key(&p.name, &p.schema, p.time, &p.key, &row).and_then(|(time, key)| {
                let args = p
                    .args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| match a {
                        None => Ok(Value::Null),
                        Some(c) => c
                            .eval(&row.values)
                            .map_err(|e| format!("`{}.aggregates` #{}: {e}", p.name, i + 1)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((time, key, args))
            });
        let (time, key, args) = match prepared {
            Ok(p) => p,
            Err(reason) => {
                dead.push(dead_row(&p.name, &p.schema, &row, reason));
                return;
            }
        };
        let record = WindowRecord {
            key,
            time,
            seq: row.sequence,
            args,
        };
        out.push((record, row));
    }
}

/// Builds a `window` node: (window changes, late rows, dead letters).
pub fn window<'s>(
    input: VecStream<'s, Row>,
    plan: Arc<WindowPlan>,
    counters: Arc<NodeCounters>,
) -> (
    VecStream<'s, Row>,
    VecStream<'s, Row>,
    VecStream<'s, DeadLetter>,
) {
    let scope = input.scope();
    let worker = scope.index() as u64;
    let (prepared, dead, _) = prepare_stage(
        input,
        Pipeline,
        &plan.name,
        Prepare(Arc::clone(&plan)),
        Arc::clone(&counters),
    );
    let (prepared, marks) = event_time_marks(prepared, |(r, _)| r.time);
    let emitted_counters = Arc::clone(&counters);
    let route = Exchange::new(|(r, _): &(WindowRecord, Row)| r.key.0.route_hash());
    let name = plan.name.clone();
    let tagged = prepared
        .binary_frontier::<_, CapacityContainerBuilder<Vec<(bool, Row)>>, _, _, _, _>(
            marks,
            route,
            Pipeline,
            &name,
            move |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = Some(cap);
                let mut op = WindowOperator::new(plan, counters, activator, worker);
                move |(records, f1), (marks, f2), output| {
                    let mut arrived = 0usize;
                    records.for_each_stamp(|c, data| arrived += op.stash(c.least().copied(), data));
                    marks.for_each_stamp(|c, data| {
                        if let Some(t) = c.least() {
                            add_marks(&mut op.maxima, *t, data);
                        }
                    });
                    let Some(c) = cap.as_mut() else { return };
                    let lower = f1
                        .frontier()
                        .iter()
                        .chain(f2.frontier().iter())
                        .min()
                        .copied();
                    if op.activate(c, lower, arrived, output).is_break() {
                        cap = None;
                    }
                }
            },
        );
    // The node's output is its window rows (late rows are counted as late).
    let rows = tagged.clone().flat_map(move |(late, row)| {
        if !late {
            emitted_counters.add_out(1);
        }
        (!late).then_some(row)
    });
    let late = tagged.flat_map(|(late, row)| late.then_some(row));
    (rows, late, dead)
}

/// The `window` operator's output handle in an activation: rows tagged late (`true`) or
/// window changes (`false`).
type WindowOutput<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<(bool, Row)>>>;

/// The `window` operator's state on one worker: the windows, and the records and event-time
/// marks of the times not yet complete.
struct WindowOperator {
    /// The node.
    plan: Arc<WindowPlan>,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// Schedules the operator again (for work left over from an activation).
    activator: Activator,
    /// This worker (window changes' sequence numbers).
    worker: u64,
    /// The watermark of a time whose closed windows are not all emitted yet.
    backlog: Option<i64>,
    /// The windows.
    state: Windows,
    /// The records of each time not yet taken into the windows.
    stash: BTreeMap<Time, Arrived<(WindowRecord, Row)>>,
    /// The largest event time of each time not yet complete, over all workers.
    maxima: BTreeMap<Time, i64>,
    /// The largest event time of the completed times.
    seen: i64,
    /// Window changes emitted (their sequence numbers).
    emitted: u64,
    /// Rows to give in this activation.
    out: Vec<(bool, Row)>,
}

impl WindowOperator {
    /// A worker's `window` operator before its first activation.
    fn new(
        plan: Arc<WindowPlan>,
        counters: Arc<NodeCounters>,
        activator: Activator,
        worker: u64,
    ) -> Self {
        Self {
            state: Windows::new(Arc::clone(&plan.spec)),
            plan,
            counters,
            activator,
            worker,
            backlog: None,
            stash: BTreeMap::new(),
            maxima: BTreeMap::new(),
            seen: i64::MIN,
            emitted: 0,
            out: Vec::new(),
        }
    }

    /// Keeps the records that arrived at `time` until it is complete; how many they were.
    fn stash<'a>(
        &mut self,
        time: Option<Time>,
        data: impl Iterator<Item = &'a mut Vec<(WindowRecord, Row)>>,
    ) -> usize {
        let Some(t) = time else { return 0 };
        let entry = self.stash.entry(t).or_default();
        let mut arrived = 0;
        for batch in data {
            arrived += batch.len();
            entry.push(std::mem::take(batch));
        }
        arrived
    }

    /// One activation, with `arrived` records new and `lower` the inputs' frontier. A
    /// completed time's records go into the windows, and the windows its watermark closed go
    /// out, a slice per activation (at most `WORK_PER_ACTIVATION` of both), so that neither
    /// holds the worker; the slices keep the times' order, so the results are those of one
    /// pass. As much work as arrived, and a slice of what waits: the stash never grows for
    /// want of activations, however fast records come. `Break` once both inputs are closed
    /// and every window is final.
    fn activate(
        &mut self,
        cap: &mut Capability<Time>,
        lower: Option<Time>,
        arrived: usize,
        output: &mut WindowOutput<'_>,
    ) -> ControlFlow<()> {
        let mut budget = WORK_PER_ACTIVATION.saturating_add(arrived);
        if let Some(mark) = self.backlog {
            let (changes, more) = self.state.advance_at_most(mark, budget);
            budget = budget.saturating_sub(changes.len());
            self.push(changes);
            output.session(&*cap).give_iterator(self.out.drain(..));
            if more {
                self.activator.activate();
                return ControlFlow::Continue(());
            }
            self.backlog = None;
        }
        let done: Vec<Time> = self
            .stash
            .keys()
            .chain(self.maxima.keys())
            .copied()
            .filter(|t| lower.is_none_or(|l| *t < l))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for t in done {
            if budget == 0 {
                output.session(&*cap).give_iterator(self.out.drain(..));
                self.activator.activate();
                return ControlFlow::Continue(());
            }
            let Some(left) = self.complete(t, lower, budget, cap, output) else {
                return ControlFlow::Continue(());
            };
            budget = left;
        }
        self.follow(lower, budget, cap, output)
    }

    /// Completed time `t`: its records into the windows, then the windows its watermark
    /// closes out, within `budget`. The budget left, or `None` when the rest waits for the
    /// next activation (scheduled), before any later time's records.
    fn complete(
        &mut self,
        t: Time,
        lower: Option<Time>,
        budget: usize,
        cap: &mut Capability<Time>,
        output: &mut WindowOutput<'_>,
    ) -> Option<usize> {
        let (budget, rest) = self.add(t, budget);
        if rest {
            // The rest of this time's records next time.
            if *cap.time() < t {
                cap.downgrade(&t);
            }
            output.session(&*cap).give_iterator(self.out.drain(..));
            self.activator.activate();
            return None;
        }
        if let Some(m) = self.maxima.remove(&t) {
            self.seen = self.seen.max(m);
        }
        let mut mark = self.seen.saturating_sub(self.plan.delay);
        if let Some(frontier) = self.frontier_mark(lower) {
            mark = mark.max(frontier);
        }
        let (changes, more) = self.state.advance_at_most(mark, budget.max(1));
        let budget = budget.saturating_sub(changes.len());
        self.push(changes);
        if *cap.time() < t {
            cap.downgrade(&t);
        }
        output.session(&*cap).give_iterator(self.out.drain(..));
        if more {
            self.backlog = Some(mark);
            self.activator.activate();
            return None;
        }
        Some(budget)
    }

    /// Adds up to `budget` of time `t`'s records to the windows (late ones go out tagged): the
    /// budget left, and whether records of `t` are left.
    fn add(&mut self, t: Time, mut budget: usize) -> (usize, bool) {
        let Some(records) = self.stash.get_mut(&t) else {
            return (budget, false);
        };
        let take = records.len().min(budget);
        budget -= take;
        let mut late = 0u64;
        for (record, row) in std::iter::from_fn(|| records.pop()).take(take) {
            if !self.state.add(&record) {
                late += 1;
                self.out.push((true, row));
            }
        }
        self.counters.add_late(late);
        if !records.is_empty() {
            return (budget, true);
        }
        self.stash.remove(&t);
        (budget, false)
    }

    /// After the completed times, the capability follows the inputs' frontier `lower`. For
    /// event-time stamps the frontier alone moves the watermark, so windows close while the
    /// input is quiet. Both inputs closed (no frontier): every window is final, and `Break`.
    fn follow(
        &mut self,
        lower: Option<Time>,
        budget: usize,
        cap: &mut Capability<Time>,
        output: &mut WindowOutput<'_>,
    ) -> ControlFlow<()> {
        let Some(l) = lower else {
            let changes = self.state.advance(i64::MAX);
            self.push(changes);
            output.session(&*cap).give_iterator(self.out.drain(..));
            return ControlFlow::Break(());
        };
        if *cap.time() < l {
            cap.downgrade(&l);
        }
        if let Some(mark) = self.frontier_mark(lower)
            && mark > self.state.watermark()
        {
            let (changes, more) = self.state.advance_at_most(mark, budget.max(1));
            self.push(changes);
            output.session(&*cap).give_iterator(self.out.drain(..));
            if more {
                self.backlog = Some(mark);
                self.activator.activate();
            }
        }
        ControlFlow::Continue(())
    }

    /// For event-time stamps, the watermark the inputs' frontier `lower` makes: timestamp `t`
    /// complete means every record before `t × granularity` arrived, unless late.
    fn frontier_mark(&self, lower: Option<Time>) -> Option<i64> {
        let (g, l) = (self.plan.granularity_ms?, lower?);
        let ms = i64::try_from(l.saturating_mul(g)).unwrap_or(i64::MAX);
        Some(ms.saturating_sub(self.plan.delay))
    }

    /// Window changes into the rows to give.
    fn push(&mut self, changes: Vec<Vec<Value>>) {
        push_changes(&mut self.out, changes, self.worker, &mut self.emitted);
    }
}

/// The records of one time, in the batches they came in: appended into one queue, every record
/// was moved once more, and the queue copied itself each time it grew.
struct Arrived<T> {
    batches: VecDeque<std::vec::IntoIter<T>>,
    len: usize,
}

impl<T> Default for Arrived<T> {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Arrived<T> {
    fn push(&mut self, batch: Vec<T>) {
        if !batch.is_empty() {
            self.len += batch.len();
            self.batches.push_back(batch.into_iter());
        }
    }

    /// The first record not taken yet.
    fn pop(&mut self) -> Option<T> {
        loop {
            let front = self.batches.front_mut()?;
            if let Some(record) = front.next() {
                self.len -= 1;
                return Some(record);
            }
            self.batches.pop_front();
        }
    }

    const fn len(&self) -> usize {
        self.len
    }

    const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Passes `stream` through and, beside it, each worker's largest event time per batch, sent to
/// every worker: from these, every worker computes the same watermark. The batches move through
/// (a stream read by two operators would be copied for one of them).
pub fn event_time_marks<'s, T: 'static>(
    stream: VecStream<'s, T>,
    time: fn(&T) -> i64,
) -> (VecStream<'s, T>, VecStream<'s, i64>) {
    let (records, marks) = fork("EventTimeMarks", stream, move |batch, records, marks| {
        marks.extend(batch.iter().map(time).max());
        std::mem::swap(batch, records);
    });
    (records, marks.broadcast())
}

/// Folds received event-time marks into the largest per timestamp.
pub fn add_marks<'a>(
    maxima: &mut BTreeMap<Time, i64>,
    t: Time,
    data: impl Iterator<Item = &'a mut Vec<i64>>,
) {
    let m = maxima.entry(t).or_insert(i64::MIN);
    for batch in data {
        *m = batch.drain(..).fold(*m, i64::max);
    }
}

/// Records a `window` operator adds to its windows, plus closed windows it emits, per
/// activation, beyond as many as arrived in it. Adding a completed batch at once (5,000 records
/// on each of two workers, in the harness's paced job) held a worker 5-13 ms per batch, and
/// every reading queued on that worker waited for it. A fixed budget alone made the operator
/// fall behind a source emitting 4,096 records per activation: at 16,000,000 events its stash
/// took the harness's peak RSS to 7,088 MiB.
const WORK_PER_ACTIVATION: usize = 1024;

fn push_changes(out: &mut Vec<(bool, Row)>, changes: Vec<Vec<Value>>, worker: u64, n: &mut u64) {
    for values in changes {
        out.push((
            false,
            Row {
                values,
                sequence: (worker << 40) | *n,
                tombstone: false,
                arrival_us: 0,
            },
        ));
        *n += 1;
    }
}

/// A `window` node's per-record work in one thread, with no dataflow around it: the throughput
/// harness's straight-line baseline.
#[cfg(feature = "baseline")]
pub(crate) struct WindowLoop {
    plan: Arc<WindowPlan>,
    prepare: Prepare,
    state: Windows,
    seen: i64,
    emitted: u64,
}

#[cfg(feature = "baseline")]
impl WindowLoop {
    pub(crate) fn new(plan: &Arc<WindowPlan>) -> Self {
        Self {
            plan: Arc::clone(plan),
            prepare: Prepare(Arc::clone(plan)),
            state: Windows::new(Arc::clone(&plan.spec)),
            seen: i64::MIN,
            emitted: 0,
        }
    }

    /// Adds one record; late ones go to `late`.
    pub(crate) fn add(&mut self, row: Row, late: &mut Vec<Row>, dead: &mut Vec<DeadLetter>) {
        let mut prepared = Vec::with_capacity(1);
        self.prepare.process(row, &mut prepared, dead);
        for (record, row) in prepared {
            self.seen = self.seen.max(record.time);
            if !self.state.add(&record) {
                late.push(row);
            }
        }
    }

    /// The end of a batch (`last`: of the input): the windows the watermark closes.
    pub(crate) fn advance(&mut self, last: bool, out: &mut Vec<Row>) {
        let mark = if last {
            i64::MAX
        } else {
            self.seen.saturating_sub(self.plan.delay)
        };
        let mut tagged = Vec::new();
        push_changes(&mut tagged, self.state.advance(mark), 0, &mut self.emitted);
        out.extend(tagged.into_iter().map(|(_, row)| row));
    }
}
