//! Helpers shared by the unit tests.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use vitalflow_model::clinical::Ingested;
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};

use crate::anonymize::{AnonymizeConfig, Anonymizer, DatePolicy, PseudonymKey};
use crate::ingest::ingest;

/// The stage name the tests ingest with.
pub(crate) const STAGE: &str = "ingest-test";

/// `$VITALFLOW_SAMPLE_DATA/<sub>` (default: the repository's `shared/data`), or `None` with a
/// loud message when it does not exist (a failure under `VITALFLOW_REQUIRE_SAMPLE_DATA`).
pub(crate) fn sample_dir(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("VITALFLOW_SAMPLE_DATA").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")),
        PathBuf::from,
    );
    let dir = base.join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        sample_missing(&dir);
        None
    }
}

/// Reports a missing part of the sample data: a skip with a loud message, or a failure when
/// `VITALFLOW_REQUIRE_SAMPLE_DATA` is set (CI), so that a partial copy cannot pass unnoticed.
pub(crate) fn sample_missing(path: &Path) {
    let required = std::env::var_os("VITALFLOW_REQUIRE_SAMPLE_DATA")
        .is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "VITALFLOW_REQUIRE_SAMPLE_DATA is set but the sample data {} is missing",
        path.display()
    );
    eprintln!("!!! SKIPPED: sample data not found at {}", path.display());
}

/// A raw record of `format` at sequence 7.
pub(crate) fn raw(format: RawFormat, bytes: impl Into<Vec<u8>>) -> RawRecord {
    RawRecord {
        source: "src".to_owned(),
        location: "test:1".to_owned(),
        sequence: 7,
        format,
        header: None,
        context: None,
        bytes: bytes.into(),
        arrival_us: 0,
    }
}

/// Ingests one raw record, checking the invariants every output must satisfy.
pub(crate) fn run(raw: &RawRecord) -> (Vec<Ingested>, Vec<DeadLetter>) {
    let (mut ok, mut dead) = (Vec::new(), Vec::new());
    ingest(raw, STAGE, &mut ok, &mut dead);
    for d in &dead {
        assert_eq!(d.stage, STAGE);
        assert_eq!(
            (&d.source, &d.location, d.format),
            (&raw.source, &raw.location, raw.format)
        );
        assert!(!d.reason.is_empty());
    }
    for r in &ok {
        assert_eq!(r.sequence.0, raw.sequence);
        assert_eq!((&r.source, &r.location), (&raw.source, &raw.location));
    }
    let mut seqs: Vec<_> = ok.iter().map(|r| r.sequence).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), ok.len(), "sequences are distinct");
    (ok, dead)
}

/// A tiny xorshift64* generator.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }
}

/// A fixed test key (`fill` repeated 32 times).
pub(crate) fn key(fill: u8) -> PseudonymKey {
    PseudonymKey::from_bytes(vec![fill; 32]).unwrap()
}

/// An anonymizer with `key(fill)`, `dates` and the default restricted ZIP3s.
pub(crate) fn anonymizer(fill: u8, dates: DatePolicy) -> Anonymizer {
    Anonymizer::new(AnonymizeConfig {
        key: key(fill),
        dates,
        restricted_zip3: AnonymizeConfig::default_restricted_zip3(),
        policy: crate::anonymize::Policy::default(),
    })
}
