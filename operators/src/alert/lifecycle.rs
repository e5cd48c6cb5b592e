//! The life of an alert, per patient and rule: raised when the severity leaves normal, escalated
//! when it rises, repeated at the same level no more often than the suppression interval, and
//! resolved once the severity has been normal for the resolution time. Times are event times
//! (ms); a key's clock never goes back (an earlier reading counts at the latest time seen).

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

/// Lifecycle settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// How long the severity must stay normal (0) before the alert resolves (ms).
    pub resolve_after: i64,
    /// Repeats at the same level within this interval of the last alert event are suppressed
    /// (ms).
    pub suppress_for: i64,
}

/// What happened to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transition {
    /// The severity left normal.
    Raised,
    /// The severity rose above the alert's level.
    Escalated,
    /// The same level again, after the suppression interval.
    Repeated,
    /// Normal for the resolution time.
    Resolved,
}

impl Transition {
    /// The event type of the alert event.
    #[must_use]
    pub const fn event_type(self) -> &'static str {
        match self {
            Self::Raised => "clinical.alert.raised",
            Self::Escalated => "clinical.alert.escalated",
            Self::Repeated => "clinical.alert.repeated",
            Self::Resolved => "clinical.alert.resolved",
        }
    }
}

/// One alert event: the transition, the alert's level before and after, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertChange {
    /// What happened.
    pub transition: Transition,
    /// The alert's level before (0: none).
    pub from: u8,
    /// The alert's level after (0 once resolved).
    pub to: u8,
    /// Event time (ms).
    pub at: i64,
    /// When the alert was raised (ms): identifies the alert.
    pub raised_at: i64,
}

#[derive(Clone, Copy, Debug)]
struct Active {
    level: u8,
    raised_at: i64,
    last_event: i64,
    normal_since: Option<i64>,
    /// The latest event time seen for the key while the alert stands: its clock never goes
    /// back. A key with no alert needs none, so it has no entry at all.
    clock: i64,
}

/// The alerts of every key (patient, or patient and rule). A reading of a key with no alert
/// that raises none costs one lookup and changes nothing.
#[derive(Debug)]
pub struct Lifecycle<K> {
    config: LifecycleConfig,
    active: HashMap<K, Active, foldhash::fast::RandomState>,
}

impl<K: Hash + Eq + Clone> Lifecycle<K> {
    /// No alert active.
    #[must_use]
    pub fn new(config: LifecycleConfig) -> Self {
        Self {
            config,
            active: HashMap::default(),
        }
    }

    /// Alerts currently active.
    #[must_use]
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// A new severity for `key` at event time `at` (0: normal); the alert event it causes, if
    /// any.
    pub fn observe(&mut self, key: &K, severity: u8, at: i64) -> Option<AlertChange> {
        let Some(a) = self.active.get_mut(key) else {
            if severity == 0 {
                return None;
            }
            self.active.insert(
                key.clone(),
                Active {
                    level: severity,
                    raised_at: at,
                    last_event: at,
                    normal_since: None,
                    clock: at,
                },
            );
            return Some(AlertChange {
                transition: Transition::Raised,
                from: 0,
                to: severity,
                at,
                raised_at: at,
            });
        };
        a.clock = a.clock.max(at);
        let at = a.clock;
        if severity == 0 {
            let since = *a.normal_since.get_or_insert(at);
            if at - since < self.config.resolve_after {
                return None;
            }
            let change = AlertChange {
                transition: Transition::Resolved,
                from: a.level,
                to: 0,
                at,
                raised_at: a.raised_at,
            };
            self.active.remove(key);
            return Some(change);
        }
        a.normal_since = None;
        let transition = if severity > a.level {
            Transition::Escalated
        } else if severity == a.level && at - a.last_event >= self.config.suppress_for {
            Transition::Repeated
        } else {
            // A repeat within the interval, or a lower level while the alert stands.
            return None;
        };
        let change = AlertChange {
            transition,
            from: a.level,
            to: severity,
            at,
            raised_at: a.raised_at,
        };
        a.level = severity;
        a.last_event = at;
        Some(change)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn run(steps: &[(u8, i64)]) -> Vec<(Transition, u8, u8, i64)> {
        let mut l = Lifecycle::new(LifecycleConfig {
            resolve_after: 10 * MIN,
            suppress_for: 15 * MIN,
        });
        steps
            .iter()
            .filter_map(|(s, t)| l.observe(&"P1", *s, *t))
            .map(|c| (c.transition, c.from, c.to, c.at))
            .collect()
    }

    #[test]
    fn raise_escalate_resolve() {
        use Transition::*;
        let got = run(&[
            (0, 0),
            (1, MIN),      // raised at 1
            (1, 2 * MIN),  // same level, suppressed
            (3, 3 * MIN),  // escalated to 3
            (2, 4 * MIN),  // lower, the alert stands
            (0, 5 * MIN),  // normal from 5 min
            (0, 14 * MIN), // 9 min normal: not yet
            (0, 15 * MIN), // 10 min normal: resolved
            (0, 16 * MIN), // nothing active
        ]);
        assert_eq!(
            got,
            vec![
                (Raised, 0, 1, MIN),
                (Escalated, 1, 3, 3 * MIN),
                (Resolved, 3, 0, 15 * MIN)
            ]
        );
    }

    #[test]
    fn repeats_are_suppressed_within_the_interval_and_a_relapse_resets_resolution() {
        use Transition::*;
        let got = run(&[
            (2, 0),
            (2, 14 * MIN), // within 15 min of the raise: suppressed
            (2, 15 * MIN), // repeated
            (0, 16 * MIN), // normal...
            (2, 20 * MIN), // ...relapse: the resolution clock restarts; within 15 min: quiet
            (0, 21 * MIN),
            (0, 30 * MIN), // 9 min: not yet
            (0, 31 * MIN), // resolved
            (1, 32 * MIN), // a new alert
        ]);
        assert_eq!(
            got,
            vec![
                (Raised, 0, 2, 0),
                (Repeated, 2, 2, 15 * MIN),
                (Resolved, 2, 0, 31 * MIN),
                (Raised, 0, 1, 32 * MIN)
            ]
        );
    }

    #[test]
    fn a_late_reading_counts_at_the_latest_time_and_keys_are_independent() {
        let mut l = Lifecycle::new(LifecycleConfig {
            resolve_after: 0,
            suppress_for: MIN,
        });
        assert!(l.observe(&"P1", 2, 10 * MIN).is_some());
        assert!(l.observe(&"P2", 1, 0).is_some());
        let late = l.observe(&"P1", 3, 5 * MIN).unwrap();
        assert_eq!(
            (late.transition, late.at),
            (Transition::Escalated, 10 * MIN)
        );
        assert_eq!(late.raised_at, 10 * MIN);
        assert_eq!(l.active(), 2);
        assert_eq!(
            l.observe(&"P2", 0, MIN).map(|c| c.transition),
            Some(Transition::Resolved)
        );
        assert_eq!(l.active(), 1);
        assert_eq!(
            Transition::Escalated.event_type(),
            "clinical.alert.escalated"
        );
    }
}
