//! Vital-sign kinds, their LOINC codes and UCUM units, and unit normalization.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The vital signs vitalflow canonizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitalKind {
    /// Heart rate, LOINC 8867-4, `/min`.
    HeartRate,
    /// Respiratory rate, LOINC 9279-1, `/min`.
    RespiratoryRate,
    /// Oxygen saturation by pulse oximetry, LOINC 59408-5 (and 2708-6), `%`.
    Spo2,
    /// Body temperature, LOINC 8310-5, `Cel`.
    BodyTemperature,
    /// Blood pressure panel, LOINC 85354-9, components 8480-6 / 8462-4 in `mm[Hg]`.
    BloodPressure,
    /// Mean arterial pressure, LOINC 8478-0, `mm[Hg]`.
    MeanArterialPressure,
    /// Body weight, LOINC 29463-7, `kg`.
    BodyWeight,
    /// Body height, LOINC 8302-2, `cm`.
    BodyHeight,
    /// Body mass index, LOINC 39156-5, `kg/m2`.
    Bmi,
}

/// The LOINC and UCUM description of a [`VitalKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VitalCode {
    /// The primary LOINC code.
    pub loinc: &'static str,
    /// The LOINC display name.
    pub display: &'static str,
    /// The canonical UCUM unit code of the value (or of each component).
    pub ucum: &'static str,
    /// The name of the FHIR R4 vital-signs profile the resource follows (`heartrate`, `bp`, ...).
    pub profile: &'static str,
}

/// LOINC code of the systolic component of a blood-pressure panel.
pub const SYSTOLIC_LOINC: &str = "8480-6";
/// LOINC code of the diastolic component of a blood-pressure panel.
pub const DIASTOLIC_LOINC: &str = "8462-4";
/// The second LOINC code of oxygen saturation required by the FHIR R4 oxygensat profile.
pub const SPO2_ARTERIAL_LOINC: &str = "2708-6";

impl VitalKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 9] = [
        Self::HeartRate,
        Self::RespiratoryRate,
        Self::Spo2,
        Self::BodyTemperature,
        Self::BloodPressure,
        Self::MeanArterialPressure,
        Self::BodyWeight,
        Self::BodyHeight,
        Self::Bmi,
    ];

    /// LOINC code, display, UCUM unit and the name of the FHIR profile (see [`Self::profile_url`]).
    #[must_use]
    pub const fn code(self) -> VitalCode {
        let (loinc, display, ucum, profile) = match self {
            Self::HeartRate => ("8867-4", "Heart rate", "/min", "heartrate"),
            Self::RespiratoryRate => ("9279-1", "Respiratory rate", "/min", "resprate"),
            Self::Spo2 => (
                "59408-5",
                "Oxygen saturation in Arterial blood by Pulse oximetry",
                "%",
                "oxygensat",
            ),
            Self::BodyTemperature => ("8310-5", "Body temperature", "Cel", "bodytemp"),
            Self::BloodPressure => (
                "85354-9",
                "Blood pressure panel with all children optional",
                "mm[Hg]",
                "bp",
            ),
            Self::MeanArterialPressure => ("8478-0", "Mean blood pressure", "mm[Hg]", "vitalsigns"),
            Self::BodyWeight => ("29463-7", "Body weight", "kg", "bodyweight"),
            Self::BodyHeight => ("8302-2", "Body height", "cm", "bodyheight"),
            Self::Bmi => ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "bmi"),
        };
        VitalCode {
            loinc,
            display,
            ucum,
            profile,
        }
    }

    /// The canonical URL of the FHIR R4 profile of this kind.
    #[must_use]
    pub fn profile_url(self) -> String {
        format!(
            "http://hl7.org/fhir/StructureDefinition/{}",
            self.code().profile
        )
    }

    /// The kind of a LOINC code, accepting the alternative codes sources use (2708-6 for SpO2,
    /// 8331-1 oral, 8332-8 axillary, 8310-5 body temperature, 8480-6/8462-4 alone are not panels).
    #[must_use]
    pub fn from_loinc(code: &str) -> Option<Self> {
        Some(match code {
            "8867-4" => Self::HeartRate,
            "9279-1" => Self::RespiratoryRate,
            "59408-5" | "2708-6" => Self::Spo2,
            "8310-5" | "8331-1" | "8332-8" | "8333-6" | "8328-7" => Self::BodyTemperature,
            "85354-9" | "55284-4" => Self::BloodPressure,
            "8478-0" => Self::MeanArterialPressure,
            "29463-7" | "3141-9" => Self::BodyWeight,
            "8302-2" | "8306-3" => Self::BodyHeight,
            "39156-5" => Self::Bmi,
            _ => return None,
        })
    }

    /// The name used in job files and the vital-signs payload (`heart-rate`, `spo2`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HeartRate => "heart-rate",
            Self::RespiratoryRate => "respiratory-rate",
            Self::Spo2 => "spo2",
            Self::BodyTemperature => "body-temperature",
            Self::BloodPressure => "blood-pressure",
            Self::MeanArterialPressure => "mean-arterial-pressure",
            Self::BodyWeight => "body-weight",
            Self::BodyHeight => "body-height",
            Self::Bmi => "bmi",
        }
    }

    /// Parses the name used in job files and payloads.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Converts `value` in `unit` to this kind's canonical UCUM unit.
    ///
    /// Accepts UCUM codes and the spellings devices and feeds use (`bpm`, `degF`, `[degF]`, `°F`,
    /// `lb`, `[lb_av]`, `in`, `mmHg`, ...).
    ///
    /// # Errors
    /// [`UnitError`] when the unit is not one this kind can be measured in.
    pub fn normalize(self, value: f64, unit: &str) -> Result<f64, UnitError> {
        let u = unit.trim();
        let converted = match self {
            Self::HeartRate | Self::RespiratoryRate => match u {
                "/min" | "bpm" | "beats/min" | "{beats}/min" | "breaths/min" | "{breaths}/min"
                | "/pm" | "min-1" | "1/min" => Some(value),
                _ => None,
            },
            Self::Spo2 => match u {
                "%" | "percent" => Some(value),
                "1" | "{ratio}" if value <= 1.0 => Some(value * 100.0),
                _ => None,
            },
            Self::BodyTemperature => match u {
                "Cel" | "C" | "°C" | "degC" | "celsius" => Some(value),
                "[degF]" | "degF" | "F" | "°F" | "fahrenheit" => Some((value - 32.0) * 5.0 / 9.0),
                "K" => Some(value - 273.15),
                _ => None,
            },
            Self::BloodPressure | Self::MeanArterialPressure => match u {
                "mm[Hg]" | "mmHg" | "mm Hg" => Some(value),
                "kPa" => Some(value * 7.500_616_827),
                _ => None,
            },
            Self::BodyWeight => match u {
                "kg" => Some(value),
                "g" => Some(value / 1000.0),
                "[lb_av]" | "lb" | "lbs" | "pound" => Some(value * 0.453_592_37),
                "[oz_av]" | "oz" => Some(value * 0.028_349_523_125),
                _ => None,
            },
            Self::BodyHeight => match u {
                "cm" => Some(value),
                "m" => Some(value * 100.0),
                "mm" => Some(value / 10.0),
                "[in_i]" | "in" | "inch" => Some(value * 2.54),
                "[ft_i]" | "ft" => Some(value * 30.48),
                _ => None,
            },
            Self::Bmi => match u {
                "kg/m2" | "kg/m^2" | "kg/m²" => Some(value),
                _ => None,
            },
        };
        match converted {
            Some(v) if v.is_finite() => Ok(v),
            Some(_) => Err(UnitError::NotFinite { kind: self }),
            None => Err(UnitError::Unsupported {
                kind: self,
                unit: u.to_owned(),
            }),
        }
    }
}

/// A value that cannot be normalized to its kind's canonical unit.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UnitError {
    /// The unit is not one of the kind's known units.
    #[error("unit `{unit}` is not a unit of {}", kind.as_str())]
    Unsupported {
        /// The kind measured.
        kind: VitalKind,
        /// The unit given.
        unit: String,
    },
    /// The converted value is NaN or infinite.
    #[error("value of {} is not a finite number", kind.as_str())]
    NotFinite {
        /// The kind measured.
        kind: VitalKind,
    },
}

/// The measured value of a vital sign.
///
/// JSON tags it inside (`{"type": "quantity", "value": 72.0}`); binary formats, which cannot
/// read such a tag, write the variant's index first (see [`crate::wire`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "type", rename_all = "kebab-case")]
pub enum VitalValue {
    /// A single quantity in the kind's canonical unit.
    Quantity {
        /// The value.
        value: f64,
    },
    /// A blood-pressure pair in mm[Hg].
    BloodPressure {
        /// Systolic pressure.
        systolic: f64,
        /// Diastolic pressure.
        diastolic: f64,
    },
}

/// [`VitalValue`] in binary formats: externally tagged.
#[derive(Serialize, Deserialize)]
enum BinaryVitalValue {
    Quantity(f64),
    BloodPressure(f64, f64),
}

impl Serialize for VitalValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return Self::serialize(self, serializer);
        }
        match *self {
            Self::Quantity { value } => BinaryVitalValue::Quantity(value),
            Self::BloodPressure {
                systolic,
                diastolic,
            } => BinaryVitalValue::BloodPressure(systolic, diastolic),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for VitalValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return Self::deserialize(deserializer);
        }
        Ok(match BinaryVitalValue::deserialize(deserializer)? {
            BinaryVitalValue::Quantity(value) => Self::Quantity { value },
            BinaryVitalValue::BloodPressure(systolic, diastolic) => Self::BloodPressure {
                systolic,
                diastolic,
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fahrenheit_and_pounds_normalize() {
        let c = VitalKind::BodyTemperature
            .normalize(98.6, "[degF]")
            .unwrap();
        assert!((c - 37.0).abs() < 1e-9, "{c}");
        let kg = VitalKind::BodyWeight.normalize(220.0, "lb").unwrap();
        assert!((kg - 99.790_321_4).abs() < 1e-6, "{kg}");
        assert!(VitalKind::HeartRate.normalize(80.0, "kg").is_err());
    }

    #[test]
    fn names_and_loinc_round_trip() {
        for kind in VitalKind::ALL {
            assert_eq!(VitalKind::from_name(kind.as_str()), Some(kind));
            assert_eq!(VitalKind::from_loinc(kind.code().loinc), Some(kind));
        }
    }
}
