//! NEWS2, the National Early Warning Score 2, as the Royal College of Physicians' 2017 chart
//! defines it: seven physiological parameters, each scored 0–3, summed; the clinical response
//! level follows from the sum and from any single parameter scoring 3.
//!
//! | parameter | 3 | 2 | 1 | 0 | 1 | 2 | 3 |
//! | --- | --- | --- | --- | --- | --- | --- | --- |
//! | respiration rate (/min) | ≤8 | | 9–11 | 12–20 | | 21–24 | ≥25 |
//! | SpO2 scale 1 (%) | ≤91 | 92–93 | 94–95 | ≥96 | | | |
//! | SpO2 scale 2 (%) | ≤83 | 84–85 | 86–87 | 88–92, ≥93 on air | 93–94 on oxygen | 95–96 on oxygen | ≥97 on oxygen |
//! | air or oxygen | | oxygen | | air | | | |
//! | systolic BP (mmHg) | ≤90 | 91–100 | 101–110 | 111–219 | | | ≥220 |
//! | pulse (/min) | ≤40 | | 41–50 | 51–90 | 91–110 | 111–130 | ≥131 |
//! | consciousness | | | | alert | | | new confusion, voice, pain, unresponsive |
//! | temperature (°C) | ≤35.0 | | 35.1–36.0 | 36.1–38.0 | 38.1–39.0 | ≥39.1 | |
//!
//! Scale 2 is for patients with a prescribed 88–92 % saturation target (hypercapnic respiratory
//! failure), a clinician's decision recorded elsewhere (the patient table). Values are scored as
//! charted: rates, saturation and pressure rounded to whole numbers, temperature to one decimal.

use serde::{Deserialize, Serialize};

/// A NEWS2 parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parameter {
    /// Respiration rate, breaths per minute.
    RespirationRate,
    /// Oxygen saturation, %.
    Spo2,
    /// Air or supplemental oxygen.
    AirOrOxygen,
    /// Systolic blood pressure, mmHg.
    SystolicBp,
    /// Pulse, beats per minute.
    Pulse,
    /// Level of consciousness (ACVPU).
    Consciousness,
    /// Temperature, °C.
    Temperature,
}

impl Parameter {
    /// Every parameter, in chart order.
    pub const ALL: [Self; 7] = [
        Self::RespirationRate,
        Self::Spo2,
        Self::AirOrOxygen,
        Self::SystolicBp,
        Self::Pulse,
        Self::Consciousness,
        Self::Temperature,
    ];
}

/// Which SpO2 scale applies to the patient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Spo2Scale {
    /// The default.
    #[default]
    One,
    /// Prescribed 88–92 % target (hypercapnic respiratory failure).
    Two,
}

/// ACVPU: alert, new confusion, voice, pain, unresponsive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acvpu {
    /// Alert.
    Alert,
    /// New confusion (or new disorientation, or new agitation).
    NewConfusion,
    /// Responds to voice.
    Voice,
    /// Responds to pain.
    Pain,
    /// Unresponsive.
    Unresponsive,
}

impl Acvpu {
    /// Parses `A`, `C`, `V`, `P`, `U` or the words (any case).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "a" | "alert" => Self::Alert,
            "c" | "confusion" | "new-confusion" | "new confusion" => Self::NewConfusion,
            "v" | "voice" => Self::Voice,
            "p" | "pain" => Self::Pain,
            "u" | "unresponsive" => Self::Unresponsive,
            _ => return None,
        })
    }
}

/// The latest observations of a patient (each `None` when missing or stale).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observations {
    /// Breaths per minute.
    pub respiration_rate: Option<f64>,
    /// Saturation, %.
    pub spo2: Option<f64>,
    /// On supplemental oxygen.
    pub on_oxygen: Option<bool>,
    /// Systolic blood pressure, mmHg.
    pub systolic_bp: Option<f64>,
    /// Beats per minute.
    pub pulse: Option<f64>,
    /// ACVPU.
    pub consciousness: Option<Acvpu>,
    /// °C.
    pub temperature: Option<f64>,
}

/// The clinical response the score calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Aggregate 0.
    None,
    /// Aggregate 1–4.
    Low,
    /// A single parameter scoring 3 (aggregate under 5): urgent ward-based response.
    LowMedium,
    /// Aggregate 5–6: key threshold for urgent response.
    Medium,
    /// Aggregate 7 or more: emergency response.
    High,
}

/// A NEWS2 score: the aggregate, each parameter's sub-score, what was missing, the level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct News2 {
    /// Sum of the sub-scores of the parameters present.
    pub total: u8,
    /// Sub-score per parameter, in [`Parameter::ALL`] order (`None`: missing).
    pub sub: [Option<u8>; 7],
    /// The parameters missing (or stale): the score is a lower bound without them.
    pub missing: Vec<Parameter>,
    /// The clinical response level.
    pub level: Level,
}

fn whole(v: f64) -> f64 {
    v.round()
}

fn tenth(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Respiration rate sub-score.
#[must_use]
pub fn respiration_rate(v: f64) -> u8 {
    match whole(v) {
        x if x <= 8.0 => 3,
        x if x <= 11.0 => 1,
        x if x <= 20.0 => 0,
        x if x <= 24.0 => 2,
        _ => 3,
    }
}

/// SpO2 sub-score on a scale; `on_oxygen` matters on scale 2 only (unknown counts as air).
#[must_use]
pub fn spo2(v: f64, scale: Spo2Scale, on_oxygen: bool) -> u8 {
    let x = whole(v);
    match scale {
        Spo2Scale::One => match x {
            x if x <= 91.0 => 3,
            x if x <= 93.0 => 2,
            x if x <= 95.0 => 1,
            _ => 0,
        },
        Spo2Scale::Two => match x {
            x if x <= 83.0 => 3,
            x if x <= 85.0 => 2,
            x if x <= 87.0 => 1,
            x if x <= 92.0 => 0,
            _ if !on_oxygen => 0,
            x if x <= 94.0 => 1,
            x if x <= 96.0 => 2,
            _ => 3,
        },
    }
}

/// Air or oxygen sub-score.
#[must_use]
pub const fn air_or_oxygen(on_oxygen: bool) -> u8 {
    if on_oxygen { 2 } else { 0 }
}

/// Systolic blood pressure sub-score.
#[must_use]
pub fn systolic_bp(v: f64) -> u8 {
    match whole(v) {
        x if x <= 90.0 => 3,
        x if x <= 100.0 => 2,
        x if x <= 110.0 => 1,
        x if x <= 219.0 => 0,
        _ => 3,
    }
}

/// Pulse sub-score.
#[must_use]
pub fn pulse(v: f64) -> u8 {
    match whole(v) {
        x if x <= 40.0 => 3,
        x if x <= 50.0 => 1,
        x if x <= 90.0 => 0,
        x if x <= 110.0 => 1,
        x if x <= 130.0 => 2,
        _ => 3,
    }
}

/// Consciousness sub-score: new confusion counts like V, P and U.
#[must_use]
pub const fn consciousness(c: Acvpu) -> u8 {
    match c {
        Acvpu::Alert => 0,
        _ => 3,
    }
}

/// Temperature sub-score.
#[must_use]
pub fn temperature(v: f64) -> u8 {
    match tenth(v) {
        x if x <= 35.0 => 3,
        x if x <= 36.0 => 1,
        x if x <= 38.0 => 0,
        x if x <= 39.0 => 1,
        _ => 2,
    }
}

/// The level for an aggregate and whether any single parameter scored 3.
#[must_use]
pub const fn level(total: u8, any_three: bool) -> Level {
    match total {
        t if t >= 7 => Level::High,
        t if t >= 5 => Level::Medium,
        _ if any_three => Level::LowMedium,
        0 => Level::None,
        _ => Level::Low,
    }
}

/// Scores a patient's latest observations on their SpO2 scale. A non-finite value counts as
/// missing.
#[must_use]
pub fn score(obs: &Observations, scale: Spo2Scale) -> News2 {
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    let on_oxygen = obs.on_oxygen.unwrap_or(false);
    let sub = [
        finite(obs.respiration_rate).map(respiration_rate),
        finite(obs.spo2).map(|v| spo2(v, scale, on_oxygen)),
        obs.on_oxygen.map(air_or_oxygen),
        finite(obs.systolic_bp).map(systolic_bp),
        finite(obs.pulse).map(pulse),
        obs.consciousness.map(consciousness),
        finite(obs.temperature).map(temperature),
    ];
    let total = sub.iter().flatten().sum();
    let any_three = sub.iter().flatten().any(|s| *s == 3);
    let missing = Parameter::ALL
        .iter()
        .zip(&sub)
        .filter(|(_, s)| s.is_none())
        .map(|(p, _)| *p)
        .collect();
    News2 {
        total,
        sub,
        missing,
        level: level(total, any_three),
    }
}

#[cfg(test)]
mod tests;
