//! Spreading a sink write's work over time.
//!
//! A sink that rolls every few seconds writes everything it gathered in one go: at 100,000
//! events/s, a canonical Parquet write is a few hundred milliseconds of encoding on the sink's
//! writer thread, and every sink of every worker rolls at about the same moment. On a machine
//! with as many cores as workers, that burst takes cores from the workers, and the records in
//! flight (the readings an alert is waiting for) queue behind it. A [`Pace`] lets a writer
//! spread the write instead: after each piece of work it sleeps until the share of the span it
//! has done, so the same encoding runs as short slices with the cores free in between.
//!
//! A write is only paced when the sink has slack: the engine gives it a span of half the time its
//! rows took to gather, and sets the pace's hurry flag when a worker has to wait for
//! the write (the next roll fell due, or the input ended), after which it no longer sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Rows per Arrow batch of a paced write: the longest stretch it runs without a pause. Batches
/// of 8,192 rows (about 15 ms of encoding for canonical resources) put arrival → alert p99 at
/// 560-760 ms in the harness's paced job on a loaded machine, against 260-450 ms at 1,024 rows,
/// in runs one after the other.
pub const PACED_BATCH_ROWS: usize = 1024;

/// Rows between two looks at the clock (a writer may advance a row at a time), fewer for a
/// write too small to be spread over 16 of them.
const CHECK_ROWS: usize = 1024;

/// The longest single sleep, so that a raised hurry flag is seen within it.
const NAP: Duration = Duration::from_millis(5);

/// Paces one write: `advance` after each piece of work, with the rows it covered.
#[derive(Debug)]
pub struct Pace {
    started: Instant,
    span: Duration,
    total: usize,
    done: usize,
    /// `done` when the clock was last looked at.
    checked: usize,
    hurry: Option<Arc<AtomicBool>>,
}

impl Pace {
    /// No pacing: the write runs flat out.
    #[must_use]
    pub fn none() -> Self {
        Self {
            started: Instant::now(),
            span: Duration::ZERO,
            total: 0,
            done: 0,
            checked: 0,
            hurry: None,
        }
    }

    /// Spreads the work on `total` rows over `span` from now, unless `hurry` is raised.
    #[must_use]
    pub fn over(span: Duration, total: usize, hurry: Arc<AtomicBool>) -> Self {
        Self {
            started: Instant::now(),
            span,
            total,
            done: 0,
            checked: 0,
            hurry: Some(hurry),
        }
    }

    /// Whether this pace can sleep at all.
    #[must_use]
    pub fn is_paced(&self) -> bool {
        self.total > 0 && !self.span.is_zero() && self.hurry.is_some()
    }

    /// Rows per piece of work: `flat_out` unpaced, at most [`PACED_BATCH_ROWS`] paced.
    #[must_use]
    pub fn batch_rows(&self, flat_out: usize) -> usize {
        if self.is_paced() {
            flat_out.min(PACED_BATCH_ROWS)
        } else {
            flat_out
        }
    }

    /// Records that `rows` more rows are done and, every [`CHECK_ROWS`] rows or so, sleeps until
    /// their share of the span has passed (at once when the write is behind, or hurried).
    pub fn advance(&mut self, rows: usize) {
        self.done = self.done.saturating_add(rows);
        if !self.is_paced() || self.done - self.checked < CHECK_ROWS.min(self.total.div_ceil(16)) {
            return;
        }
        self.checked = self.done;
        let share = self.done.min(self.total) as f64 / self.total as f64;
        let target = self.span.mul_f64(share);
        loop {
            if self.hurried() {
                return;
            }
            let elapsed = self.started.elapsed();
            if elapsed >= target {
                return;
            }
            std::thread::sleep((target - elapsed).min(NAP));
        }
    }

    fn hurried(&self) -> bool {
        self.hurry
            .as_ref()
            .is_none_or(|h| h.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpaced_write_never_sleeps() {
        let mut pace = Pace::none();
        pace.advance(1);
        assert!(!pace.is_paced());
        let hurry = Arc::new(AtomicBool::new(false));
        assert!(!Pace::over(Duration::ZERO, 10, Arc::clone(&hurry)).is_paced());
        assert!(!Pace::over(Duration::from_secs(1), 0, hurry).is_paced());
    }

    #[test]
    fn a_paced_write_takes_its_span() {
        let hurry = Arc::new(AtomicBool::new(false));
        let span = Duration::from_millis(60);
        let mut pace = Pace::over(span, 4, Arc::clone(&hurry));
        let started = Instant::now();
        pace.advance(2);
        let half = started.elapsed();
        pace.advance(2);
        assert!(half >= span / 2, "half the rows took {half:?}");
        assert!(started.elapsed() >= span);
    }

    #[test]
    fn a_hurried_write_stops_sleeping() {
        let hurry = Arc::new(AtomicBool::new(false));
        let mut pace = Pace::over(Duration::from_secs(3600), 10, Arc::clone(&hurry));
        let raiser = {
            let hurry = Arc::clone(&hurry);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                hurry.store(true, Ordering::Relaxed);
            })
        };
        let started = Instant::now();
        pace.advance(5);
        pace.advance(5);
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(raiser.join().is_ok());
    }
}
