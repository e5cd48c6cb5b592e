//! What anonymization removed or generalized.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counts of de-identification actions, keyed `"<identifier class>:<action>"`, e.g.
/// `"name:redact"`, `"patient-id:crypto-hash"`, `"birth-date:generalize"`, `"date:shift"`,
/// `"zip:generalize"`, `"zip:restrict-000"`, `"age-over-89:generalize"`, `"free-text:drop"`.
///
/// Serializes as a flat JSON object of counts. Holds no PHI: only counts.
#[derive(Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeidReport {
    /// The counts, keyed `"class:action"`.
    pub counts: BTreeMap<String, u64>,
}

impl DeidReport {
    /// Counts `n` actions `action` on identifiers of class `class` (nothing when `n` is 0).
    pub fn add(&mut self, class: &str, action: &str, n: u64) {
        if n > 0 {
            let count = self.counts.entry(format!("{class}:{action}")).or_default();
            *count = count.saturating_add(n);
        }
    }

    /// Counts one action `action` on an identifier of class `class`.
    pub fn record(&mut self, class: &str, action: &str) {
        self.add(class, action, 1);
    }

    /// How many actions `action` on class `class` were counted.
    #[must_use]
    pub fn count(&self, class: &str, action: &str) -> u64 {
        self.counts
            .get(&format!("{class}:{action}"))
            .copied()
            .unwrap_or(0)
    }

    /// Adds `other`'s counts into `self`.
    pub fn merge(&mut self, other: &Self) {
        for (key, n) in &other.counts {
            let count = self.counts.entry(key.clone()).or_default();
            *count = count.saturating_add(*n);
        }
    }

    /// Whether nothing was counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
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
