//! A patient's latest value of each NEWS2 parameter, with its event time, so a score uses only
//! readings within a freshness window and says which parameters were missing or stale.

use serde::{Deserialize, Serialize};

use super::monitor::ObservationRef;
use super::news2::{Acvpu, Observations, Parameter};

/// One parameter's value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reading {
    /// A number (rates, saturation, pressure, temperature).
    Number(f64),
    /// Air (false) or oxygen (true).
    Oxygen(bool),
    /// ACVPU.
    Consciousness(Acvpu),
}

/// Why a parameter did not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Absence {
    /// Never read.
    Missing,
    /// Read, but longer ago than the freshness window.
    Stale,
}

/// The latest reading of each parameter of one patient.
#[derive(Clone, Debug, Default)]
pub struct Latest {
    values: [Option<(i64, Reading)>; 7],
    ids: [Option<ObservationRef>; 7],
}

fn slot(p: Parameter) -> usize {
    Parameter::ALL.iter().position(|q| *q == p).unwrap_or(0)
}

impl Latest {
    /// Records a reading at event time `at`; an older reading than the one held is ignored.
    pub fn update(&mut self, p: Parameter, reading: Reading, at: i64) {
        let s = &mut self.values[slot(p)];
        if s.is_none_or(|(t, _)| at >= t) {
            *s = Some((at, reading));
        }
    }

    /// Records a reading with the id of the observation it came from.
    pub fn update_observed(
        &mut self,
        p: Parameter,
        reading: Reading,
        at: i64,
        id: &ObservationRef,
    ) {
        let s = slot(p);
        if self.values[s].is_none_or(|(t, _)| at >= t) {
            self.values[s] = Some((at, reading));
            self.ids[s] = Some(id.clone());
        }
    }

    /// The ids of the observations whose readings are fresh at `now`, each once, in parameter
    /// order.
    #[must_use]
    pub fn fresh_ids(&self, now: i64, freshness: i64) -> Vec<ObservationRef> {
        let mut ids: Vec<ObservationRef> = Vec::new();
        for (v, id) in self.values.iter().zip(&self.ids) {
            if let (Some((t, _)), Some(id)) = (v, id)
                && *t <= now
                && now - *t <= freshness
                && !ids.contains(id)
            {
                ids.push(id.clone());
            }
        }
        ids
    }

    /// The observations fresh at `now` (read within `freshness` ms before it, and not after
    /// it), and each parameter that did not count with the reason.
    #[must_use]
    pub fn at(&self, now: i64, freshness: i64) -> (Observations, Vec<(Parameter, Absence)>) {
        let mut obs = Observations::default();
        let mut absent = Vec::new();
        for (p, v) in Parameter::ALL.iter().zip(&self.values) {
            let fresh = match v {
                None => {
                    absent.push((*p, Absence::Missing));
                    continue;
                }
                Some((t, r)) if *t <= now && now - *t <= freshness => *r,
                Some(_) => {
                    absent.push((*p, Absence::Stale));
                    continue;
                }
            };
            match (p, fresh) {
                (Parameter::RespirationRate, Reading::Number(x)) => obs.respiration_rate = Some(x),
                (Parameter::Spo2, Reading::Number(x)) => obs.spo2 = Some(x),
                (Parameter::AirOrOxygen, Reading::Oxygen(o)) => obs.on_oxygen = Some(o),
                (Parameter::SystolicBp, Reading::Number(x)) => obs.systolic_bp = Some(x),
                (Parameter::Pulse, Reading::Number(x)) => obs.pulse = Some(x),
                (Parameter::Consciousness, Reading::Consciousness(c)) => {
                    obs.consciousness = Some(c);
                }
                (Parameter::Temperature, Reading::Number(x)) => obs.temperature = Some(x),
                // A reading of the wrong kind for its parameter does not count.
                _ => absent.push((*p, Absence::Missing)),
            }
        }
        (obs, absent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::news2::{Level, Spo2Scale, score};

    const MIN: i64 = 60_000;

    #[test]
    fn only_fresh_readings_count_and_the_rest_are_named() {
        let mut l = Latest::default();
        l.update(Parameter::Pulse, Reading::Number(135.0), 0);
        l.update(Parameter::Pulse, Reading::Number(80.0), 50 * MIN);
        // An older reading arriving late does not replace the newer one.
        l.update(Parameter::Pulse, Reading::Number(140.0), 10 * MIN);
        l.update(Parameter::RespirationRate, Reading::Number(26.0), 0);
        l.update(Parameter::AirOrOxygen, Reading::Oxygen(true), 55 * MIN);
        let (obs, absent) = l.at(60 * MIN, 30 * MIN);
        assert_eq!(obs.pulse, Some(80.0));
        assert_eq!(obs.respiration_rate, None, "an hour old: stale");
        assert_eq!(obs.on_oxygen, Some(true));
        assert!(absent.contains(&(Parameter::RespirationRate, Absence::Stale)));
        assert!(absent.contains(&(Parameter::Temperature, Absence::Missing)));
        assert_eq!(absent.len(), 5);
        let s = score(&obs, Spo2Scale::One);
        assert_eq!((s.total, s.level), (2, Level::Low));
        // With a long enough freshness window, the old respiration rate counts (3): 3 + 2.
        let (obs, _) = l.at(60 * MIN, 60 * MIN);
        let s = score(&obs, Spo2Scale::One);
        assert_eq!((s.total, s.level), (5, Level::Medium));
    }
}
