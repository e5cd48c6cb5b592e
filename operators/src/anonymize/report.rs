//! What anonymization removed or generalized.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// Counts of de-identification actions by identifier class and action, e.g. (`name`, `redact`),
/// (`patient-id`, `crypto-hash`), (`birth-date`, `generalize`), (`date`, `shift`),
/// (`zip`, `generalize`), (`zip`, `restrict-000`), (`age-over-89`, `generalize`),
/// (`free-text`, `drop`).
///
/// Keys are static names, so counting allocates nothing (it runs for every record). Serializes
/// as a flat JSON object of counts keyed `"class:action"`. Holds no PHI: only counts.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct DeidReport {
    counts: BTreeMap<(&'static str, &'static str), u64>,
}

impl DeidReport {
    /// Counts `n` actions `action` on identifiers of class `class` (nothing when `n` is 0).
    pub fn add(&mut self, class: &'static str, action: &'static str, n: u64) {
        if n > 0 {
            let count = self.counts.entry((class, action)).or_default();
            *count = count.saturating_add(n);
        }
    }

    /// Counts one action `action` on an identifier of class `class`.
    pub fn record(&mut self, class: &'static str, action: &'static str) {
        self.add(class, action, 1);
    }

    /// How many actions `action` on class `class` were counted.
    #[must_use]
    pub fn count(&self, class: &str, action: &str) -> u64 {
        self.counts
            .iter()
            .find(|((c, a), _)| *c == class && *a == action)
            .map_or(0, |(_, n)| *n)
    }

    /// Adds `other`'s counts into `self`.
    pub fn merge(&mut self, other: &Self) {
        for (key, n) in &other.counts {
            let count = self.counts.entry(*key).or_default();
            *count = count.saturating_add(*n);
        }
    }

    /// Whether nothing was counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
    }
}

impl Serialize for DeidReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.counts.len()))?;
        for ((class, action), n) in &self.counts {
            map.serialize_entry(&format!("{class}:{action}"), n)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_serializes_flat() {
        let mut a = DeidReport::default();
        assert!(a.is_empty());
        a.record("name", "redact");
        a.add("phone", "redact", 2);
        a.add("email", "redact", 0);
        let mut b = DeidReport::default();
        b.record("name", "redact");
        b.merge(&a);
        assert_eq!(b.count("name", "redact"), 2);
        assert_eq!(b.count("phone", "redact"), 2);
        assert_eq!(b.count("email", "redact"), 0);
        assert!(!b.is_empty());
        assert_eq!(
            serde_json::to_string(&b).ok().as_deref(),
            Some(r#"{"name:redact":2,"phone:redact":2}"#)
        );
    }
}
