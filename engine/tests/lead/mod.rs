//! What the tests of a source's skew bound observe: two workers, worker 1's downstream slow,
//! and how far worker 0's output runs ahead of worker 1's meanwhile.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Worker 1's latest time seen, and worker 0's output against it.
#[derive(Default)]
pub struct Leads {
    /// Worker 1's latest time seen, plus one (0: none yet).
    slow_seen: AtomicU64,
    /// For each of worker 0's records: its time, and `slow_seen` when it was emitted.
    leads: Mutex<Vec<(u64, u64)>>,
}

impl Leads {
    /// Worker `index` emitted `records` records at `time`: worker 1 notes the time and sleeps
    /// 2 ms (its downstream is slow); worker 0 notes, for each record, its time and how far
    /// worker 1 had got.
    pub fn observe(&self, index: usize, time: u64, records: usize) {
        if index == 1 {
            self.slow_seen.fetch_max(time + 1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
        } else {
            let behind = self.slow_seen.load(Ordering::SeqCst);
            let mut leads = self
                .leads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            leads.extend(std::iter::repeat_n((time, behind), records));
        }
    }

    /// What worker 0 noted, in order.
    pub fn take(&self) -> Vec<(u64, u64)> {
        std::mem::take(
            &mut *self
                .leads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}
