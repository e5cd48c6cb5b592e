//! Synthetic physiology: per-patient baselines, measurement noise and, for deteriorating
//! patients, a drift towards sepsis-like values.
//!
//! Every number is a pure function of `(seed, patient, tick, kind)` through a counter-based
//! hash RNG, so that any reading can be generated without generating the ones before it.

use vitalflow_model::vitals::VitalKind;

/// The SplitMix64 finalizer: a fast, well-mixed 64-bit hash.
#[must_use]
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic random stream keyed by `(seed, a, b, c)`: no state is shared between keys.
#[derive(Clone, Copy, Debug)]
pub struct HashRng {
    state: u64,
}

impl HashRng {
    /// The stream for a key.
    #[must_use]
    pub const fn new(seed: u64, a: u64, b: u64, c: u64) -> Self {
        let h = splitmix64(seed ^ 0x5652_4954_414c_464c); // "VRITALFL"
        let h = splitmix64(h ^ a);
        let h = splitmix64(h ^ b.rotate_left(21));
        let h = splitmix64(h ^ c.rotate_left(42));
        Self { state: h }
    }

    /// The next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.state)
    }

    /// Uniform in `[0, 1)`.
    #[allow(clippy::cast_precision_loss)] // 53 bits are exact in an f64
    pub const fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub const fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Approximately standard normal (Irwin–Hall of four uniforms, rescaled): only arithmetic,
    /// so results are bit-identical on every platform.
    pub fn normal(&mut self) -> f64 {
        let s = self.unit() + self.unit() + self.unit() + self.unit();
        // Sum of 4 U(0,1) has mean 2 and variance 1/3.
        (s - 2.0) * 3f64.sqrt()
    }
}

/// Key namespaces, so that different uses of the same patient never share a stream.
pub(crate) mod stream {
    pub const BASELINE: u64 = 1;
    pub const DETERIORATION: u64 = 2;
    pub const NOISE: u64 = 3;
    pub const IDENTITY: u64 = 4;
    pub const TIMING: u64 = 5;
}

/// One value per vital sign the generator emits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vitals {
    /// Heart rate, /min.
    pub heart_rate: f64,
    /// Respiratory rate, /min.
    pub respiratory_rate: f64,
    /// SpO2, %.
    pub spo2: f64,
    /// Body temperature, Cel.
    pub temperature: f64,
    /// Systolic blood pressure, `mm[Hg]`.
    pub systolic: f64,
    /// Diastolic blood pressure, `mm[Hg]`.
    pub diastolic: f64,
}

/// A patient's physiology: baselines and, if deteriorating, the sepsis-like course.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Physiology {
    /// Normal values.
    pub baseline: Vitals,
    /// Where a deteriorating patient's values drift to; `None` for stable patients.
    pub septic: Option<Vitals>,
    /// First tick of the drift.
    pub onset_tick: u64,
    /// Ticks from onset to the full septic values.
    pub ramp_ticks: u64,
}

impl Physiology {
    /// The physiology of `patient`. `total_ticks` is the length of the run, `interval_secs` the
    /// time between two readings: the drift lasts about two hours, compressed to fit the run.
    #[must_use]
    pub fn of(
        seed: u64,
        patient: u64,
        deteriorating_percent: u8,
        total_ticks: u64,
        interval_secs: u32,
    ) -> Self {
        let mut r = HashRng::new(seed, stream::BASELINE, patient, 0);
        let systolic = r.range(105.0, 140.0);
        let baseline = Vitals {
            heart_rate: r.range(60.0, 95.0),
            respiratory_rate: r.range(12.0, 18.0),
            spo2: r.range(95.0, 99.0),
            temperature: r.range(36.4, 37.3),
            systolic,
            diastolic: r.range(60.0, 85.0).min(systolic - 30.0),
        };
        let mut d = HashRng::new(seed, stream::DETERIORATION, patient, 0);
        let deteriorating = d.below(100) < u64::from(deteriorating_percent);
        let septic = Vitals {
            heart_rate: d.range(120.0, 140.0),
            respiratory_rate: d.range(24.0, 30.0),
            spo2: d.range(88.0, 92.0),
            temperature: d.range(38.5, 39.5),
            systolic: d.range(85.0, 95.0),
            diastolic: d.range(48.0, 58.0),
        };
        let two_hours = (7200 / u64::from(interval_secs.max(1))).max(1);
        let ramp_ticks = two_hours.min(total_ticks / 2).max(1);
        // Onset somewhere in the first 5–35 % of the run, so the drift completes within it.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let onset_tick = (total_ticks as f64 * d.range(0.05, 0.35)) as u64;
        Self {
            baseline,
            septic: deteriorating.then_some(septic),
            onset_tick,
            ramp_ticks,
        }
    }

    /// Whether the patient deteriorates during the run.
    #[must_use]
    pub const fn deteriorating(&self) -> bool {
        self.septic.is_some()
    }

    /// How far along the drift the patient is at `tick`, in `[0, 1]` (smoothstep).
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn progress(&self, tick: u64) -> f64 {
        if self.septic.is_none() || tick < self.onset_tick {
            return 0.0;
        }
        let x = ((tick - self.onset_tick) as f64 / self.ramp_ticks as f64).min(1.0);
        x * x * (3.0 - 2.0 * x)
    }

    /// The true (noise-free) values at `tick`.
    #[must_use]
    pub fn expected(&self, tick: u64) -> Vitals {
        let Some(s) = self.septic else {
            return self.baseline;
        };
        let p = self.progress(tick);
        let b = self.baseline;
        let mix = |from: f64, to: f64| from + (to - from) * p;
        Vitals {
            heart_rate: mix(b.heart_rate, s.heart_rate),
            respiratory_rate: mix(b.respiratory_rate, s.respiratory_rate),
            spo2: mix(b.spo2, s.spo2),
            temperature: mix(b.temperature, s.temperature),
            systolic: mix(b.systolic, s.systolic),
            diastolic: mix(b.diastolic, s.diastolic),
        }
    }

    /// A measured reading of `kind` at `tick`: expected value plus noise, clamped to a
    /// physiological range and rounded like a monitor would. Blood pressure yields
    /// `(systolic, Some(diastolic))`, every other kind `(value, None)`, in canonical units.
    #[must_use]
    pub fn measure(
        &self,
        seed: u64,
        patient: u64,
        tick: u64,
        kind: VitalKind,
    ) -> (f64, Option<f64>) {
        let e = self.expected(tick);
        let mut n = HashRng::new(seed, stream::NOISE, patient, (tick << 4) | kind as u64);
        match kind {
            VitalKind::HeartRate => (
                (e.heart_rate + 3.0 * n.normal()).clamp(30.0, 220.0).round(),
                None,
            ),
            VitalKind::RespiratoryRate => (
                (e.respiratory_rate + 1.0 * n.normal())
                    .clamp(4.0, 60.0)
                    .round(),
                None,
            ),
            VitalKind::Spo2 => ((e.spo2 + 0.8 * n.normal()).clamp(70.0, 100.0).round(), None),
            VitalKind::BodyTemperature => (
                round1((e.temperature + 0.1 * n.normal()).clamp(33.0, 42.0)),
                None,
            ),
            _ => {
                let sys = (e.systolic + 4.0 * n.normal()).clamp(60.0, 250.0).round();
                let dia = (e.diastolic + 3.0 * n.normal())
                    .clamp(30.0, sys - 15.0)
                    .round();
                (sys, Some(dia))
            }
        }
    }
}

/// Rounds to one decimal.
#[must_use]
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Celsius to Fahrenheit, rounded to one decimal.
#[must_use]
pub fn to_fahrenheit(celsius: f64) -> f64 {
    round1(celsius * 9.0 / 5.0 + 32.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut state = 0u64;
        let mut next = || {
            let out = splitmix64(state);
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            out
        };
        assert_eq!(next(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(next(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = HashRng::new(1, 2, 3, 4);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / 20_000.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 20_000.0;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn deteriorating_patient_reaches_septic_values() {
        let p = (0..1000)
            .map(|i| Physiology::of(7, i, 10, 200, 60))
            .find(Physiology::deteriorating)
            .expect("some patient deteriorates");
        let end = p.expected(199);
        assert!(end.heart_rate >= 120.0 && end.spo2 <= 92.0, "{end:?}");
        assert!(p.progress(p.onset_tick) == 0.0);
        let b = p.expected(0);
        assert!(b.heart_rate < 96.0 && b.spo2 >= 95.0, "{b:?}");
    }
}
