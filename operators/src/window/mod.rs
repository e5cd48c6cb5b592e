//! Event-time windows, incrementally: tumbling, sliding (hopping) and session windows keyed by
//! a value, with aggregates, a watermark, allowed lateness and a late-data output.
//!
//! [`Windows`] is one worker's state for the keys routed to it. The engine feeds it the records
//! of one dataflow timestamp at a time ([`Windows::add`]), then moves the watermark
//! ([`Windows::advance`]), which emits the changes and releases what can no longer change.
//!
//! # Semantics
//! * The watermark `W` says no more records with an earlier event time are expected. A window
//!   `[start, end)` is emitted once `end <= W`.
//! * A record is added to each of its windows that is not yet *expired*: a window expires when
//!   `end + lateness <= W` (sessions: see below), judged against the watermark before the
//!   record's timestamp. A record that fits no window is late: it goes to the late output.
//! * Output rows are changes. A window's first result is inserted (`diff = 1`, `revision = 0`).
//!   A late record within lateness retracts that row (the same values, `diff = -1`) and inserts
//!   the corrected one (`revision + 1`). The current result of a window is the sum of the diffs
//!   of its rows: in SQL, `GROUP BY ALL HAVING sum(diff) > 0` over every column but `diff`.
//! * Sessions: a record opens the window `[t, t + gap)`; windows of one key that overlap merge,
//!   so a session is its records' span plus the gap. A record is late when its own window
//!   `[t, t + gap)` is expired. A session is kept until `end + gap + lateness <= W`, so a record
//!   that is not late always finds every session it overlaps. A merge retracts the rows of the
//!   sessions merged away.
//! * Window state is released when it expires; the emitted rows are all the sink needs.

mod aggregate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vitalflow_model::row::{KeyValue, Type, Value};

pub use aggregate::{AGG_NAMES, Acc, AggFn, split_call};

/// The shape of the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, adjacent windows of `size` milliseconds, aligned to the epoch.
    Tumbling {
        /// Window length (ms).
        size: i64,
    },
    /// Windows of `size` starting every `slide` milliseconds (a record is in `size / slide`
    /// windows).
    Sliding {
        /// Window length (ms).
        size: i64,
        /// Distance between window starts (ms), at most `size`.
        slide: i64,
    },
    /// Per key, records closer than `gap` milliseconds form one window.
    Session {
        /// Inactivity that closes a session (ms).
        gap: i64,
    },
}

/// One aggregate of a window: its function and the type of its argument.
#[derive(Clone, Debug)]
pub struct AggSpec {
    /// The function.
    pub func: AggFn,
    /// Its argument's type (`None` for `count()`).
    pub arg: Option<Type>,
}

/// What a window operator computes.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    /// Window shape.
    pub kind: WindowKind,
    /// How long after a window's end (in event time) late records still correct it (ms).
    pub lateness: i64,
    /// The aggregates, in output order.
    pub aggs: Vec<AggSpec>,
}

/// One record, prepared for windowing: its key, event time, position and aggregate arguments.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WindowRecord {
    /// The key.
    pub key: KeyValue,
    /// Event time (ms).
    pub time: i64,
    /// Position in its source (ties in `first`/`last`).
    pub seq: u64,
    /// One value per aggregate (`Null` for `count()`).
    pub args: Vec<Value>,
}

/// A change to the output: `key, window_start, window_end, aggregates..., revision, diff`.
pub type Change = Vec<Value>;

#[derive(Clone, Debug)]
struct Win {
    end: i64,
    /// Sessions: the latest event time in the window.
    last: i64,
    accs: Vec<Acc>,
    /// The row currently emitted (without revision and diff), and its revision.
    emitted: Option<(Vec<Value>, i64)>,
    /// The revision of the last row emitted, retracted or not (sessions merged away keep theirs).
    revision: i64,
}

type WinId = (KeyValue, i64);

/// One worker's window state.
#[derive(Debug)]
pub struct Windows {
    spec: Arc<WindowSpec>,
    watermark: i64,
    windows: BTreeMap<WinId, Win>,
    /// Windows not emitted, by end.
    pending: BTreeSet<(i64, KeyValue, i64)>,
    /// Every window, by the watermark that expires it.
    expiry: BTreeSet<(i64, KeyValue, i64)>,
    /// Emitted windows changed since the last [`Windows::advance`].
    dirty: BTreeSet<WinId>,
    /// Changes made by [`Windows::add`] (session merges retract at once).
    out: Vec<Change>,
}

impl Windows {
    /// Empty state; the watermark starts before all time.
    #[must_use]
    pub fn new(spec: Arc<WindowSpec>) -> Self {
        Self {
            spec,
            watermark: i64::MIN,
            windows: BTreeMap::new(),
            pending: BTreeSet::new(),
            expiry: BTreeSet::new(),
            dirty: BTreeSet::new(),
            out: Vec::new(),
        }
    }

    /// The current watermark.
    #[must_use]
    pub const fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Windows held (not yet expired).
    #[must_use]
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no window is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    fn expires_at(&self, end: i64) -> i64 {
        let extra = match self.spec.kind {
            WindowKind::Session { gap } => gap,
            _ => 0,
        };
        end.saturating_add(self.spec.lateness).saturating_add(extra)
    }

    /// Whether a window ending at `end` no longer takes records.
    fn expired(&self, end: i64) -> bool {
        end.saturating_add(self.spec.lateness) <= self.watermark
    }

    fn apply(spec: &WindowSpec, accs: &mut [Acc], r: &WindowRecord) {
        for ((acc, a), v) in accs.iter_mut().zip(&spec.aggs).zip(&r.args) {
            acc.add(a.arg.is_some().then_some(v), r.time, r.seq);
        }
    }

    /// Adds a record, judged against the current watermark. Returns `false` if it is late (it
    /// fits no window that still takes records): the caller sends it to the late output.
    pub fn add(&mut self, r: &WindowRecord) -> bool {
        match self.spec.kind {
            WindowKind::Tumbling { size } => {
                let start = r.time.div_euclid(size).saturating_mul(size);
                self.add_fixed(r, start, size)
            }
            WindowKind::Sliding { size, slide } => {
                let last = r.time.div_euclid(slide).saturating_mul(slide);
                let mut start = last;
                let mut any = false;
                while start > r.time.saturating_sub(size) {
                    any |= self.add_fixed(r, start, size);
                    match start.checked_sub(slide) {
                        Some(s) => start = s,
                        None => break,
                    }
                }
                any
            }
            WindowKind::Session { gap } => self.add_session(r, gap),
        }
    }

    fn add_fixed(&mut self, r: &WindowRecord, start: i64, size: i64) -> bool {
        let end = start.saturating_add(size);
        if self.expired(end) {
            return false;
        }
        let expires = self.expires_at(end);
        let win = match self.windows.entry((r.key.clone(), start)) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                self.pending.insert((end, r.key.clone(), start));
                self.expiry.insert((expires, r.key.clone(), start));
                v.insert(Win {
                    end,
                    last: r.time,
                    accs: fresh_accs(&self.spec),
                    emitted: None,
                    revision: -1,
                })
            }
        };
        Self::apply(&self.spec, &mut win.accs, r);
        if win.emitted.is_some() {
            self.dirty.insert((r.key.clone(), start));
        }
        true
    }

    fn add_session(&mut self, r: &WindowRecord, gap: i64) -> bool {
        let end = r.time.saturating_add(gap);
        if self.expired(end) {
            return false;
        }
        // Sessions of this key overlapping [time, time + gap): disjoint and ordered by start,
        // so walk down from the last one starting before `end`.
        let lower = (r.key.clone(), i64::MIN);
        let upper = (r.key.clone(), end);
        let overlapping: Vec<WinId> = self
            .windows
            .range(lower..upper)
            .rev()
            .take_while(|(_, w)| w.end > r.time)
            .map(|(id, _)| id.clone())
            .collect();
        let mut merged = Win {
            end,
            last: r.time,
            accs: fresh_accs(&self.spec),
            emitted: None,
            revision: -1,
        };
        let mut start = r.time;
        for id in overlapping {
            let Some(w) = self.windows.remove(&id) else {
                continue;
            };
            self.pending.remove(&(w.end, id.0.clone(), id.1));
            self.expiry
                .remove(&(self.expires_at(w.end), id.0.clone(), id.1));
            self.dirty.remove(&id);
            if let Some((row, rev)) = &w.emitted {
                self.out.push(change(row, *rev, -1));
            }
            merged.revision = merged.revision.max(w.revision);
            start = start.min(id.1);
            merged.last = merged.last.max(w.last);
            for (a, b) in merged.accs.iter_mut().zip(w.accs) {
                a.merge(b);
            }
        }
        merged.end = merged.last.saturating_add(gap);
        Self::apply(&self.spec, &mut merged.accs, r);
        let key = r.key.clone();
        self.pending.insert((merged.end, key.clone(), start));
        self.expiry
            .insert((self.expires_at(merged.end), key.clone(), start));
        self.windows.insert((key, start), merged);
        true
    }

    /// Moves the watermark to `watermark` (it never moves back) and returns every change since
    /// the last call: retractions, corrections of emitted windows, and windows whose end the
    /// watermark passed. Then releases the windows that expired.
    pub fn advance(&mut self, watermark: i64) -> Vec<Change> {
        self.advance_at_most(watermark, usize::MAX).0
    }

    /// [`advance`](Self::advance), emitting the first results of at most `limit` windows; the
    /// flag says whether closed windows remain, for the next call. Calls repeated until the flag
    /// is down, with no record added in between, give the changes of one `advance`.
    pub fn advance_at_most(&mut self, watermark: i64, limit: usize) -> (Vec<Change>, bool) {
        let mut out = std::mem::take(&mut self.out);
        self.watermark = self.watermark.max(watermark);
        let w = self.watermark;
        // Corrections of emitted windows.
        for id in std::mem::take(&mut self.dirty) {
            let Some(win) = self.windows.get_mut(&id) else {
                continue;
            };
            let Some((old, rev)) = win.emitted.take() else {
                continue;
            };
            let row = result(&id, win);
            if row == old {
                win.emitted = Some((old, rev));
                continue;
            }
            out.push(change(&old, rev, -1));
            win.revision = rev + 1;
            out.push(change(&row, win.revision, 1));
            win.emitted = Some((row, win.revision));
        }
        // First results of windows the watermark passed.
        let mut emitted = 0usize;
        while let Some(first) = self.pending.first().cloned() {
            if first.0 > w {
                break;
            }
            if emitted >= limit {
                // Closed windows wait for the next call; none may expire before it.
                return (out, true);
            }
            emitted += 1;
            self.pending.pop_first();
            let id = (first.1, first.2);
            if let Some(win) = self.windows.get_mut(&id) {
                let row = result(&id, win);
                win.revision += 1;
                out.push(change(&row, win.revision, 1));
                win.emitted = Some((row, win.revision));
            }
        }
        // Release what can no longer change.
        while let Some(first) = self.expiry.first().cloned() {
            if first.0 > w {
                break;
            }
            self.expiry.pop_first();
            self.windows.remove(&(first.1, first.2));
        }
        (out, false)
    }
}

fn fresh_accs(spec: &WindowSpec) -> Vec<Acc> {
    spec.aggs.iter().map(|a| Acc::new(a.func, a.arg)).collect()
}

fn result(id: &WinId, win: &Win) -> Vec<Value> {
    let mut row = Vec::with_capacity(win.accs.len() + 3);
    row.push(id.0.0.clone());
    row.push(Value::Timestamp(id.1));
    row.push(Value::Timestamp(win.end));
    row.extend(win.accs.iter().map(Acc::value));
    row
}

fn change(row: &[Value], revision: i64, diff: i64) -> Change {
    let mut c = Vec::with_capacity(row.len() + 2);
    c.extend_from_slice(row);
    c.push(Value::Int(revision));
    c.push(Value::Int(diff));
    c
}

#[cfg(test)]
mod tests;
