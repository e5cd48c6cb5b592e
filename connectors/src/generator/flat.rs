//! A bedside-monitor gateway's feed: flat JSON, one object per reading with every vital sign.
//!
//! ```json
//! {"patient_id":"P000000123","ts":1767225600000,"ward":"ICU","hr":88,"spo2":97,"rr":16,"temp":36.8,"sbp":121,"dbp":78}
//! ```
//!
//! Reading `i` is patient `i % patients` at tick `i / patients`, with the same physiology as the
//! envelope events (deteriorating patients drift towards sepsis). `ts` is epoch milliseconds.
//! About 5 % of readings have no temperature (`"temp": null`), as monitors without a probe send.

use std::fmt::Write as _;

use vitalflow_model::vitals::VitalKind;

use super::physiology::{HashRng, stream};
use super::{Generator, PatientConstants};

/// The wards readings come from, by patient.
pub const WARDS: [&str; 4] = ["ICU", "HDU", "WARD-A", "WARD-B"];

impl Generator {
    /// Flat reading `i` (0-based) as one JSON line, without the line break.
    #[must_use]
    pub fn flat_line(&self, i: u64) -> String {
        let (p, tick) = (i % self.patients, i / self.patients);
        self.flat_line_at(i, self.reading_time(p, tick).timestamp_millis())
    }

    /// Flat reading `i` stamped `ts` (epoch ms) instead of its simulated time: a live feed.
    #[must_use]
    pub fn flat_line_at(&self, i: u64, ts: i64) -> String {
        let (p, tick) = (i % self.patients, i / self.patients);
        self.with_constants(p, |c| self.flat_line_of(p, tick, ts, c))
    }

    #[allow(clippy::cast_possible_truncation)]
    pub(super) fn flat_line_of(&self, p: u64, tick: u64, ts: i64, c: &PatientConstants) -> String {
        let seed = self.cfg.seed;
        let measure = |kind| c.physiology.measure(seed, p, tick, kind);
        let (hr, _) = measure(VitalKind::HeartRate);
        let (rr, _) = measure(VitalKind::RespiratoryRate);
        let (spo2, _) = measure(VitalKind::Spo2);
        let (temp, _) = measure(VitalKind::BodyTemperature);
        let (sbp, dbp) = measure(VitalKind::BloodPressure);
        let ward = c.ward;
        let no_probe = HashRng::new(seed, stream::TIMING, p, tick + 11).below(20) == 0;
        let mut line = String::with_capacity(160);
        let _ = write!(
            line,
            r#"{{"patient_id":"{}","ts":{ts},"ward":"{ward}","hr":{},"spo2":{},"rr":{},"#,
            c.patient_id, hr as i64, spo2 as i64, rr as i64,
        );
        if no_probe {
            line.push_str(r#""temp":null,"#);
        } else {
            let _ = write!(line, r#""temp":{temp:.1},"#);
        }
        let _ = write!(
            line,
            r#""sbp":{},"dbp":{}}}"#,
            sbp as i64,
            dbp.unwrap_or(sbp - 40.0) as i64
        );
        line
    }

    /// The ward patient `p`'s readings come from.
    #[allow(clippy::cast_possible_truncation)]
    pub(super) fn ward(&self, p: u64) -> &'static str {
        WARDS[(HashRng::new(self.cfg.seed, stream::IDENTITY, p, 9).below(4)) as usize]
    }
}

impl Generator {
    /// The patients' context, as a reference table for joins: one JSON line per version of a
    /// patient's ward, oxygen and NEWS2 SpO2 scale, ordered by `since` (epoch ms), from which the
    /// version holds. Every patient has a version from an hour before the first reading, in the
    /// ward `flat_line` reports; about a third move to the ICU on oxygen during the readings.
    ///
    /// ```json
    /// {"patient_id":"P000000123","since":1767222000000,"ward":"HDU","on_oxygen":false,"spo2_scale":1}
    /// ```
    #[must_use]
    pub fn context_lines(&self) -> Vec<String> {
        let seed = self.cfg.seed;
        let start = self.cfg.start.timestamp_millis();
        let ticks = self.count().div_ceil(self.patients).max(1);
        let span_ms = i64::try_from(ticks.saturating_mul(u64::from(self.cfg.interval_secs)))
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let mut lines: Vec<(i64, u64, String)> = Vec::new();
        for p in 0..self.patients {
            let id = self.patient_id(p);
            let ward = self.ward(p);
            let scale = if HashRng::new(seed, stream::IDENTITY, p, 10).below(10) == 0 {
                2
            } else {
                1
            };
            let since = start - 3_600_000;
            lines.push((
                since,
                p,
                format!(
                    r#"{{"patient_id":"{id}","since":{since},"ward":"{ward}","on_oxygen":false,"spo2_scale":{scale}}}"#
                ),
            ));
            if HashRng::new(seed, stream::IDENTITY, p, 11).below(3) == 0 {
                let at = HashRng::new(seed, stream::TIMING, p, 12)
                    .below(u64::try_from(span_ms.max(1)).unwrap_or(1));
                let since = start + i64::try_from(at).unwrap_or(0);
                lines.push((
                    since,
                    p,
                    format!(
                        r#"{{"patient_id":"{id}","since":{since},"ward":"ICU","on_oxygen":true,"spo2_scale":{scale}}}"#
                    ),
                ));
            }
        }
        lines.sort_by_key(|(since, p, _)| (*since, *p));
        lines.into_iter().map(|(_, _, l)| l).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::generator::{Generator, GeneratorConfig};

    #[test]
    fn lines_are_json_objects_with_every_field_and_repeatable() {
        let g = Generator::new(GeneratorConfig {
            seed: 7,
            patients: 10,
            count: 1000,
            ..GeneratorConfig::default()
        });
        let mut nulls = 0;
        for i in 0..1000 {
            let line = g.flat_line(i);
            assert_eq!(line, g.flat_line(i));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            for f in ["patient_id", "ts", "ward", "hr", "spo2", "rr", "sbp", "dbp"] {
                assert!(!v[f].is_null(), "{f} in {line}");
            }
            assert!(v["hr"].is_i64() && v["ts"].is_i64());
            nulls += usize::from(v["temp"].is_null());
        }
        assert!(
            (10..150).contains(&nulls),
            "{nulls} readings without temperature"
        );
    }
}
