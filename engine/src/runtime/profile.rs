//! Where a worker's time goes, when a run asks for it ([`super::RunOptions::profile`]): every
//! operator's activations from timely's own scheduling log, summed per operator name over the
//! workers, with the longest single activation and how many held their worker past
//! [`LONG_MS`]. A long activation delays every record queued behind it on that worker, so this
//! is the table to read when latency percentiles have a tail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// Activations at least this long are counted as long (ms).
pub const LONG_MS: u64 = 10;

/// One operator's activations over the run, summed over the workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorTime {
    /// The operator's name (a node's name, or the engine's name for one of its parts).
    pub name: String,
    /// Activations.
    pub activations: u64,
    /// Time spent in them.
    pub busy: Duration,
    /// The longest one.
    pub longest: Duration,
    /// Activations of at least [`LONG_MS`].
    pub long: u64,
}

/// The workers' operator times, merged as each worker's log is flushed.
#[derive(Debug, Default)]
pub struct Profile {
    operators: Mutex<HashMap<String, OperatorTime>>,
}

impl Profile {
    /// Every operator that was activated, the busiest first.
    #[must_use]
    pub fn operators(&self) -> Vec<OperatorTime> {
        let map = self
            .operators
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<OperatorTime> = map.values().cloned().collect();
        all.sort_by(|a, b| b.busy.cmp(&a.busy).then_with(|| a.name.cmp(&b.name)));
        all
    }

    fn merge(&self, worker: &[&OperatorTime]) {
        let mut map = self
            .operators
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for op in worker.iter().filter(|o| o.activations > 0) {
            let total = map.entry(op.name.clone()).or_insert_with(|| OperatorTime {
                name: op.name.clone(),
                ..OperatorTime::default()
            });
            total.activations += op.activations;
            total.busy += op.busy;
            total.longest = total.longest.max(op.longest);
            total.long += op.long;
        }
    }
}

/// Registers a logger on `worker` that times its operators' activations into `profile` (merged
/// when the worker's log is dropped, as the worker shuts down).
pub fn install(worker: &mut Worker, profile: &Arc<Profile>) {
    let Some(mut registry) = worker.log_register() else {
        return;
    };
    let mut log = WorkerLog {
        profile: Arc::clone(profile),
        operators: HashMap::new(),
        started: Vec::new(),
    };
    registry.insert::<TimelyEventBuilder, _>("timely", move |_, data| {
        if let Some(events) = data {
            for (at, event) in events.iter() {
                log.event(*at, event);
            }
        }
    });
}

struct WorkerLog {
    profile: Arc<Profile>,
    /// By operator id: its address and times.
    operators: HashMap<usize, (Vec<usize>, OperatorTime)>,
    /// Activations under way: a scope's (the dataflow's) encloses its operators'.
    started: Vec<(usize, Duration)>,
}

impl WorkerLog {
    fn event(&mut self, at: Duration, event: &TimelyEvent) {
        match event {
            TimelyEvent::Operates(op) => {
                self.operators.insert(
                    op.id,
                    (
                        op.addr.clone(),
                        OperatorTime {
                            name: op.name.clone(),
                            ..OperatorTime::default()
                        },
                    ),
                );
            }
            TimelyEvent::Schedule(s) => match s.start_stop {
                StartStop::Start => {
                    self.started.push((s.id, at));
                }
                StartStop::Stop => {
                    let Some((id, start)) = self.started.pop() else {
                        return;
                    };
                    if id != s.id {
                        return;
                    }
                    let Some((_, op)) = self.operators.get_mut(&s.id) else {
                        return;
                    };
                    let took = at.saturating_sub(start);
                    op.activations += 1;
                    op.busy += took;
                    op.longest = op.longest.max(took);
                    if took >= Duration::from_millis(LONG_MS) {
                        op.long += 1;
                    }
                }
            },
            _ => {}
        }
    }
}

impl Drop for WorkerLog {
    /// Hands the worker's operators to the profile; not the scopes (a dataflow, a region),
    /// whose time is their operators'.
    fn drop(&mut self) {
        let scopes: std::collections::HashSet<&[usize]> = self
            .operators
            .values()
            .filter_map(|(addr, _)| addr.split_last().map(|(_, parent)| parent))
            .collect();
        let operators: Vec<&OperatorTime> = self
            .operators
            .values()
            .filter(|(addr, _)| !scopes.contains(addr.as_slice()))
            .map(|(_, op)| op)
            .collect();
        self.profile.merge(&operators);
    }
}
