//! Realistic synthetic clinical events, as platform envelopes.
//!
//! Event `i` is a pure function of the configuration and `i`: workers generate disjoint sets of
//! indices (`i % workers == worker`) and together produce exactly the events one worker would.
//!
//! * events `0..patients` are `patient.record.created` events, one per patient, with names,
//!   birth date, address, phone, email, SSN and MRN ([`phi`]);
//! * every later event `i` is a `vitals.measurement.recorded` reading of patient
//!   `(i - patients) % patients` at tick `(i - patients) / patients`; the kind rotates with the
//!   tick through heart rate, respiratory rate, SpO2, body temperature and blood pressure
//!   ([`physiology`]). About 20 % of patients report temperatures in `[degF]`.

pub mod flat;
pub mod labs;
pub mod phi;
pub mod physiology;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, TimeZone, Utc};
use serde::Serialize;
use serde_json::Number;
use vitalflow_model::envelope::{ENVELOPE_VERSION, Envelope, EventMetadata};
use vitalflow_model::ids::{hex, uuid_from};
use vitalflow_model::vitals::VitalKind;
use vitalflow_model::{RawFormat, RawRecord};

use self::phi::{Identity, patient_id};
use self::physiology::{HashRng, Physiology, stream, to_fahrenheit};

/// `eventSource` of every generated event.
pub const EVENT_SOURCE: &str = "vitalflow-generator";
/// `eventType` of the demographic events.
pub const PATIENT_CREATED: &str = "patient.record.created";
/// `eventType` of the vital-sign readings.
pub const VITALS_RECORDED: &str = "vitals.measurement.recorded";

/// The vital signs a generated patient is measured for, in rotation order.
pub const ROTATION: [VitalKind; 5] = [
    VitalKind::HeartRate,
    VitalKind::RespiratoryRate,
    VitalKind::Spo2,
    VitalKind::BodyTemperature,
    VitalKind::BloodPressure,
];

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// The seed: the same seed gives byte-identical events.
    pub seed: u64,
    /// Number of patients (at least 1 is used).
    pub patients: u64,
    /// Total number of events, including the `patients` patient-created events.
    pub count: u64,
    /// Time of the first reading.
    pub start: DateTime<Utc>,
    /// Seconds between two readings of one patient.
    pub interval_secs: u32,
    /// Percentage of patients who deteriorate towards sepsis during the run.
    pub deteriorating_percent: u8,
    /// Laboratory results (`lab_result_available`, see [`labs`]) instead of patient and
    /// vital-sign events: every event is a result.
    pub labs: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            patients: 1000,
            count: 100_000,
            start: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            interval_secs: 60,
            deteriorating_percent: 10,
            labs: false,
        }
    }
}

/// The generator. Cheap to create; [`Generator::event`] needs no state of earlier events.
#[derive(Clone, Debug)]
pub struct Generator {
    cfg: GeneratorConfig,
    patients: u64,
    total_ticks: u64,
    today: NaiveDate,
    seed_bytes: [u8; 8],
    /// What every reading of a patient repeats, made on its first reading (shared by clones).
    constants: Arc<OnceLock<PatientCache>>,
}

/// Patients up to this count have their [`PatientConstants`] cached (about 200 bytes each);
/// beyond it they are computed for every reading.
const CACHED_PATIENTS: u64 = 1 << 17;

/// What every reading of one patient repeats: its ids, physiology, temperature unit and ward. Each is
/// a pure function of the configuration and the patient, like everything the generator makes.
#[derive(Clone, Debug)]
struct PatientConstants {
    patient_id: String,
    /// `correlationId`: the patient's unit of work.
    correlation_id: String,
    /// `causationId` of its readings: its `patient.record.created` event.
    created_event_id: String,
    physiology: Physiology,
    fahrenheit: bool,
    /// The ward of its flat monitor readings.
    ward: &'static str,
}

/// One lazily made [`PatientConstants`] per patient.
struct PatientCache(Box<[OnceLock<PatientConstants>]>);

impl std::fmt::Debug for PatientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = self.0.iter().filter(|c| c.get().is_some()).count();
        write!(f, "PatientCache({made} of {} made)", self.0.len())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PatientPayload<'a> {
    patient_id: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    date_of_birth: String,
    gender: &'a str,
    address: AddressPayload<'a>,
    phone_number: &'a str,
    email: &'a str,
    ssn: &'a str,
    mrn: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddressPayload<'a> {
    street: &'a str,
    city: &'a str,
    state: &'a str,
    postal_code: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VitalPayload<'a> {
    patient_id: &'a str,
    measurement_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Number>,
    unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    systolic: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diastolic: Option<Number>,
    effective_at: String,
}

impl Generator {
    /// A generator for `cfg`.
    #[must_use]
    pub fn new(cfg: GeneratorConfig) -> Self {
        let patients = cfg.patients.max(1);
        let total_ticks = cfg.count.saturating_sub(patients).div_ceil(patients);
        let today = cfg.start.date_naive();
        let seed_bytes = cfg.seed.to_le_bytes();
        Self {
            cfg,
            patients,
            total_ticks,
            today,
            seed_bytes,
            constants: Arc::new(OnceLock::new()),
        }
    }

    /// Patient `p`'s reading constants, made anew.
    fn constants(&self, p: u64) -> PatientConstants {
        PatientConstants {
            patient_id: self.patient_id(p),
            correlation_id: self.correlation_id(p),
            created_event_id: self.event_id(p),
            physiology: self.physiology(p),
            fahrenheit: self.uses_fahrenheit(p),
            ward: self.ward(p),
        }
    }

    /// Patient `p`'s reading constants, from the cache when the generator has one.
    fn with_constants<R>(&self, p: u64, f: impl FnOnce(&PatientConstants) -> R) -> R {
        let make = || self.constants(p);
        if self.patients > CACHED_PATIENTS {
            return f(&make());
        }
        let cache = self
            .constants
            .get_or_init(|| PatientCache((0..self.patients).map(|_| OnceLock::new()).collect()));
        match usize::try_from(p).ok().and_then(|i| cache.0.get(i)) {
            Some(cell) => f(cell.get_or_init(make)),
            None => f(&make()),
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// Number of patients.
    #[must_use]
    pub const fn patients(&self) -> u64 {
        self.patients
    }

    /// Total number of events.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.cfg.count
    }

    /// The source patient id (`P` + 9 digits) of patient `index`.
    #[must_use]
    pub fn patient_id(&self, index: u64) -> String {
        patient_id(self.cfg.seed, index)
    }

    /// The demographics of patient `index`.
    #[must_use]
    pub fn identity(&self, index: u64) -> Identity {
        Identity::of(self.cfg.seed, index, self.today)
    }

    /// The physiology of patient `index` (baselines, whether and when it deteriorates).
    #[must_use]
    pub fn physiology(&self, index: u64) -> Physiology {
        Physiology::of(
            self.cfg.seed,
            index,
            self.cfg.deteriorating_percent,
            self.total_ticks,
            self.cfg.interval_secs,
        )
    }

    /// Whether patient `index` reports body temperature in `[degF]`.
    #[must_use]
    pub fn uses_fahrenheit(&self, index: u64) -> bool {
        HashRng::new(self.cfg.seed, stream::TIMING, index, 1).below(5) == 0
    }

    /// Event `i` (0-based, `i < count`) as platform-envelope JSON bytes. Events `0..patients`
    /// are `patient.record.created` for patient `i`; after that event `i` is a
    /// `vitals.measurement.recorded` reading of patient `(i - patients) % patients` at tick
    /// `(i - patients) / patients`. With `labs`, every event is a laboratory result
    /// ([`Generator::lab_event`]).
    #[must_use]
    pub fn event(&self, i: u64) -> Vec<u8> {
        if self.cfg.labs {
            return self.lab_event(i, None);
        }
        let bytes = if i < self.patients {
            self.patient_event(i)
        } else {
            let n = i - self.patients;
            self.vital_event(i, n % self.patients, n / self.patients)
        };
        // Serializing these plain structs cannot fail; an empty record would be dead-lettered.
        bytes.unwrap_or_default()
    }

    /// The patient event `i` is about.
    #[must_use]
    pub const fn patient_of(&self, i: u64) -> u64 {
        if i < self.patients {
            i
        } else {
            (i - self.patients) % self.patients
        }
    }

    /// Whether event `i` is a `patient.record.created` event (else a vital-sign reading).
    #[must_use]
    pub const fn is_patient_event(&self, i: u64) -> bool {
        i < self.patients
    }

    /// Event `i` as a [`RawRecord`] of `source`, located at `generator#i`.
    #[must_use]
    pub fn raw(&self, source: &str, i: u64) -> RawRecord {
        RawRecord {
            source: source.to_owned(),
            location: format!("generator#{i}"),
            sequence: i,
            format: RawFormat::Envelope,
            header: None,
            context: None,
            bytes: self.event(i),
            arrival_us: 0,
        }
    }

    /// Every PHI string the generator puts in events `0..count` (patient ids, given and family
    /// names, full names, birth dates `YYYY-MM-DD`, street lines, cities, phone numbers, emails,
    /// SSNs, MRNs), sorted and deduplicated: for tests that scan outputs for leaks.
    #[must_use]
    pub fn phi_values(&self) -> Vec<String> {
        // Readings exist only when every patient's created event does (`count > patients`).
        let mut all = BTreeSet::new();
        for p in 0..self.patients.min(self.cfg.count) {
            all.extend(self.identity(p).phi());
        }
        all.into_iter().collect()
    }

    fn patient_event(&self, p: u64) -> serde_json::Result<Vec<u8>> {
        let id = self.identity(p);
        let payload = PatientPayload {
            patient_id: &id.patient_id,
            first_name: id.first,
            last_name: id.last,
            date_of_birth: id.birth_date.format("%Y-%m-%d").to_string(),
            gender: id.gender,
            address: AddressPayload {
                street: &id.street,
                city: id.city,
                state: id.state,
                postal_code: &id.postal_code,
            },
            phone_number: &id.phone,
            email: &id.email,
            ssn: &id.ssn,
            mrn: &id.mrn,
        };
        let metadata = self.metadata(
            p,
            PATIENT_CREATED,
            self.reading_time(p, 0),
            self.correlation_id(p),
            None,
        );
        vitalflow_model::json::to_vec(&Envelope { metadata, payload })
    }

    fn vital_event(&self, i: u64, p: u64, tick: u64) -> serde_json::Result<Vec<u8>> {
        self.with_constants(p, |c| self.vital_event_of(i, p, tick, c))
    }

    fn vital_event_of(
        &self,
        i: u64,
        p: u64,
        tick: u64,
        c: &PatientConstants,
    ) -> serde_json::Result<Vec<u8>> {
        let kind = ROTATION[usize::try_from(tick % 5).unwrap_or(0)];
        let (v, diastolic) = c.physiology.measure(self.cfg.seed, p, tick, kind);
        let (value, unit, systolic, diastolic) = match (kind, diastolic) {
            (VitalKind::BloodPressure, Some(d)) => (None, "mm[Hg]", Some(v), Some(d)),
            (VitalKind::BodyTemperature, _) if c.fahrenheit => {
                (Some(to_fahrenheit(v)), "[degF]", None, None)
            }
            (VitalKind::BodyTemperature, _) => (Some(v), "Cel", None, None),
            _ => (Some(v), kind.code().ucum, None, None),
        };
        let effective = self.reading_time(p, tick);
        let payload = VitalPayload {
            patient_id: &c.patient_id,
            measurement_id: uuid_from(&[b"measurement", &self.seed_bytes, &i.to_le_bytes()]),
            kind: kind.as_str(),
            // Temperatures keep their decimal (`37.0`), counts are integers (`72`).
            value: value.and_then(|v| {
                if kind == VitalKind::BodyTemperature {
                    Number::from_f64(v)
                } else {
                    number(v)
                }
            }),
            unit,
            systolic: systolic.and_then(number),
            diastolic: diastolic.and_then(number),
            effective_at: effective.to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        // Devices report a few seconds after measuring.
        let delay = HashRng::new(self.cfg.seed, stream::TIMING, p, tick + 2).below(5);
        let sent = effective
            .checked_add_signed(TimeDelta::seconds(1 + i64::try_from(delay).unwrap_or(0)))
            .unwrap_or(effective);
        let metadata = self.metadata(
            i,
            VITALS_RECORDED,
            sent,
            c.correlation_id.clone(),
            Some(c.created_event_id.clone()),
        );
        vitalflow_model::json::to_vec(&Envelope { metadata, payload })
    }

    fn event_id(&self, i: u64) -> String {
        uuid_from(&[b"event", &self.seed_bytes, &i.to_le_bytes()])
    }

    /// All events of patient `p` form one unit of work: their `correlationId`.
    fn correlation_id(&self, p: u64) -> String {
        uuid_from(&[b"patient", &self.seed_bytes, &p.to_le_bytes()])
    }

    fn metadata(
        &self,
        i: u64,
        event_type: &str,
        timestamp: DateTime<Utc>,
        correlation_id: String,
        causation_id: Option<String>,
    ) -> EventMetadata {
        let mut trace = HashRng::new(self.cfg.seed, stream::TIMING, i, 3);
        let mut trace_bytes = [0u8; 16];
        trace_bytes[..8].copy_from_slice(&trace.next_u64().to_be_bytes());
        trace_bytes[8..].copy_from_slice(&trace.next_u64().to_be_bytes());
        EventMetadata {
            event_id: self.event_id(i),
            event_type: event_type.to_owned(),
            event_source: EVENT_SOURCE.to_owned(),
            correlation_id,
            causation_id,
            timestamp,
            version: ENVELOPE_VERSION.to_owned(),
            trace_id: Some(hex(&trace_bytes)),
        }
    }

    /// `start + tick × interval + offset`, with a per-patient offset below one interval (at most
    /// a minute) so that patients are not all measured on the same second.
    fn reading_time(&self, p: u64, tick: u64) -> DateTime<Utc> {
        let interval = u64::from(self.cfg.interval_secs);
        let offset = HashRng::new(self.cfg.seed, stream::TIMING, p, 0).below(interval.min(60));
        let secs = tick.saturating_mul(interval).saturating_add(offset);
        i64::try_from(secs)
            .ok()
            .and_then(|s| {
                self.cfg
                    .start
                    .checked_add_signed(TimeDelta::try_seconds(s)?)
            })
            .unwrap_or(self.cfg.start)
    }
}

/// A JSON number: integral values without a fraction (`72`), others as the shortest decimal.
#[allow(clippy::cast_possible_truncation)]
fn number(v: f64) -> Option<Number> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        Some(Number::from(v as i64))
    } else {
        Number::from_f64(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A reading made from the cached constants is the one made from constants computed anew,
    /// whichever reading of a patient filled the cache.
    #[test]
    fn cached_constants_make_the_same_readings() {
        let g = Generator::new(GeneratorConfig {
            patients: 7,
            count: 7 * 12,
            ..GeneratorConfig::default()
        });
        for i in (7..g.count()).rev() {
            let (p, tick) = ((i - 7) % 7, (i - 7) / 7);
            let fresh = g.vital_event_of(i, p, tick, &g.constants(p)).unwrap();
            assert_eq!(g.event(i), fresh, "event {i}");
            assert_eq!(g.event(i), fresh, "event {i}, from the cache");
            let flat = g.flat_line_of(i % 7, i / 7, 1_767_225_600_000, &g.constants(i % 7));
            assert_eq!(g.flat_line_at(i, 1_767_225_600_000), flat);
        }
        // The constants are the patient's own.
        let c = g.constants(3);
        assert_eq!(c.patient_id, g.patient_id(3));
        assert_eq!(c.created_event_id, g.event_id(3));
        assert_ne!(c.correlation_id, g.constants(4).correlation_id);
    }
}
