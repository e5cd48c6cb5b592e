//! Records as ingestion parsed them. **These hold PHI**: they exist only between ingestion and
//! anonymization, and no sink accepts them.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::lab::{LabStatus, LabValue, ReferenceRange};
use crate::vitals::{VitalKind, VitalValue};

/// Administrative gender, as FHIR R4 codes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// `male`
    Male,
    /// `female`
    Female,
    /// `other`
    Other,
    /// `unknown`
    Unknown,
}

impl Gender {
    /// Parses FHIR codes and the usual abbreviations (`M`, `F`, `O`, `U`), case-insensitively.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "male" | "m" => Some(Self::Male),
            "female" | "f" => Some(Self::Female),
            "other" | "o" => Some(Self::Other),
            "unknown" | "u" => Some(Self::Unknown),
            _ => None,
        }
    }

    /// The FHIR code.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Male => "male",
            Self::Female => "female",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
}

/// A postal address (PHI).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street lines.
    pub lines: Vec<String>,
    /// City.
    pub city: Option<String>,
    /// State or province.
    pub state: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// County or district.
    #[serde(default)]
    pub district: Option<String>,
}

/// The Safe Harbor class of an identifying number or code (45 CFR 164.514(b)(2)(i)), other than
/// names, geography, dates, telecom, URLs and IP addresses, which records hold in fields of their
/// own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdClass {
    /// (H) Medical record numbers.
    Mrn,
    /// (G) Social security numbers.
    Ssn,
    /// (I) Health plan beneficiary numbers.
    HealthPlan,
    /// (J) Account numbers.
    Account,
    /// (K) Certificate and licence numbers.
    Licence,
    /// (L) Vehicle identifiers and serial numbers, licence plates.
    Vehicle,
    /// (M) Device identifiers and serial numbers.
    Device,
    /// (P) Biometric identifiers.
    Biometric,
    /// (R) Any other unique identifying number, characteristic or code.
    Other,
}

impl IdClass {
    /// Every class, in a stable order.
    pub const ALL: [Self; 9] = [
        Self::Mrn,
        Self::Ssn,
        Self::HealthPlan,
        Self::Account,
        Self::Licence,
        Self::Vehicle,
        Self::Device,
        Self::Biometric,
        Self::Other,
    ];

    /// The class name used in job files and de-identification reports.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mrn => "mrn",
            Self::Ssn => "ssn",
            Self::HealthPlan => "health-plan",
            Self::Account => "account",
            Self::Licence => "licence",
            Self::Vehicle => "vehicle",
            Self::Device => "device",
            Self::Biometric => "biometric",
            Self::Other => "other-id",
        }
    }

    /// The class of a name used in job files and envelopes ([`Self::as_str`], plus `other`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .or_else(|| (s == "other").then_some(Self::Other))
    }

    /// The class of an identifier type code of HL7 table 0203, which FHIR's
    /// `http://terminology.hl7.org/CodeSystem/v2-0203` shares. Unknown codes are [`Self::Other`].
    #[must_use]
    pub fn from_v2_type(code: &str) -> Self {
        match code.trim().to_ascii_uppercase().as_str() {
            "MR" | "MRT" | "PI" | "PT" => Self::Mrn,
            "SS" | "SSN" => Self::Ssn,
            "MB" | "MA" | "MC" | "MCD" | "MCR" | "SN" | "HC" | "NH" | "NIIP" | "PN" | "MI" => {
                Self::HealthPlan
            }
            "AN" | "ANC" | "AND" | "ANT" | "BA" | "BC" => Self::Account,
            "DL" | "LN" | "LR" | "MD" | "DN" | "RN" | "NP" | "CZ" | "BCT" | "DC" | "WC" => {
                Self::Licence
            }
            "VIN" | "VS" | "LP" => Self::Vehicle,
            "DI" | "UDI" | "SNO" | "EQ" => Self::Device,
            "BIO" | "BR" | "FP" | "RET" => Self::Biometric,
            _ => Self::Other,
        }
    }
}

/// An identifying number or code and its Safe Harbor class (PHI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// Its class.
    pub class: IdClass,
    /// The value.
    pub value: String,
}

impl Identifier {
    /// An identifier of `class`.
    #[must_use]
    pub fn new(class: IdClass, value: impl Into<String>) -> Self {
        Self {
            class,
            value: value.into(),
        }
    }
}

/// A relative, guarantor, insured or other person named in a patient's record (PHI of the
/// patient under Safe Harbor: identifiers of relatives, employers and household members).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Names (given and family names, each one entry).
    pub names: Vec<String>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Phone, fax and email.
    pub telecom: Vec<String>,
}

/// A patient demographic record (PHI).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatientRecord {
    /// The source system's patient id.
    pub patient_id: String,
    /// Medical record number.
    pub mrn: Option<String>,
    /// Social security number.
    pub ssn: Option<String>,
    /// Other identifying numbers and codes, with their class (health plan, account, licence,
    /// vehicle, device, biometric, other).
    pub identifiers: Vec<Identifier>,
    /// Given names.
    pub given: Vec<String>,
    /// Family name.
    pub family: Option<String>,
    /// Birth date.
    pub birth_date: Option<NaiveDate>,
    /// Date of death, if deceased.
    pub deceased: Option<NaiveDate>,
    /// Administrative gender.
    pub gender: Option<Gender>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Phone and fax numbers.
    pub phones: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// Fax numbers.
    #[serde(default)]
    pub faxes: Vec<String>,
    /// Web URLs (personal pages, profile links).
    #[serde(default)]
    pub urls: Vec<String>,
    /// IP addresses.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// How many photographs (full-face or comparable images) the record carried; their bytes
    /// are never kept.
    #[serde(default)]
    pub photos: u32,
    /// Relatives, guarantors, insured persons and other contacts.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// Free-text notes about the patient.
    #[serde(default)]
    pub notes: Vec<String>,
    /// When the record was created or last updated at the source.
    pub recorded_at: DateTime<Utc>,
}

/// One vital-sign measurement (PHI: tied to a patient and a date).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitalRecord {
    /// The source system's id of the measurement, if it has one.
    pub source_id: Option<String>,
    /// The source system's patient id.
    pub patient_id: String,
    /// What was measured.
    pub kind: VitalKind,
    /// The value, already normalized to the kind's canonical UCUM unit.
    pub value: VitalValue,
    /// When it was measured.
    pub effective: DateTime<Utc>,
    /// The identifier or serial number of the device that measured it.
    #[serde(default)]
    pub device: Option<String>,
    /// Free-text notes on the measurement (HL7 NTE, FHIR `note`).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Identifying values of the same source message (the patient's names, identifiers, phone
    /// numbers, ...): the free-text scrubber removes them from `notes`.
    #[serde(default)]
    pub mentioned: Vec<String>,
}

/// One laboratory result (PHI: tied to a patient and a date; a text result may name anyone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabRecord {
    /// The source's identity of the result: the same for a result and the later ones that
    /// correct it (HL7 v2: the filler or placer order number, the code and OBX-4; FHIR: the
    /// resource id). `None` when the source gives none.
    pub source_id: Option<String>,
    /// The source system's patient id.
    pub patient_id: String,
    /// LOINC code of what was measured.
    pub code: String,
    /// The code's display name, as the source gave it.
    pub display: Option<String>,
    /// The value.
    pub value: LabValue,
    /// The reference range (empty when the source gave none that parses).
    pub reference_range: ReferenceRange,
    /// The FHIR `v3-ObservationInterpretation` code of the source's abnormal flag.
    pub interpretation: Option<String>,
    /// The result's status.
    pub status: LabStatus,
    /// When the specimen was taken or the observation made.
    pub effective: DateTime<Utc>,
    /// When the result was released (HL7 v2 OBR-22, FHIR `issued`), if known.
    pub issued: Option<DateTime<Utc>>,
    /// Free-text notes on the result (HL7 NTE, FHIR `note`).
    pub notes: Vec<String>,
    /// Identifying values of the same source message, for the free-text scrubber.
    pub mentioned: Vec<String>,
}

/// What happened to an encounter, as an HL7 v2 ADT trigger event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncounterEvent {
    /// A01: admitted.
    Admit,
    /// A02: transferred to another location.
    Transfer,
    /// A03: discharged.
    Discharge,
    /// A04: registered (outpatient or emergency).
    Register,
    /// A08: patient or visit information updated.
    Update,
}

impl EncounterEvent {
    /// The event name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admit => "admit",
            Self::Transfer => "transfer",
            Self::Discharge => "discharge",
            Self::Register => "register",
            Self::Update => "update",
        }
    }
}

/// An encounter (a visit or stay) as a patient-movement message describes it (PHI: tied to a
/// patient and dates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncounterRecord {
    /// The source system's visit number, if it has one.
    pub source_id: Option<String>,
    /// The source system's patient id.
    pub patient_id: String,
    /// The event that produced this record.
    pub event: EncounterEvent,
    /// The patient class code of the source (HL7 table 0004: `I`, `O`, `E`, `P`, `R`, `B`, ...).
    pub class: String,
    /// When the encounter began.
    pub start: Option<DateTime<Utc>>,
    /// When it ended (discharge).
    pub end: Option<DateTime<Utc>>,
    /// The point of care (ward or unit code) the patient is in.
    pub ward: Option<String>,
    /// The room (PHI: only identified notifications show it; anonymization drops it).
    #[serde(default)]
    pub room: Option<String>,
    /// The bed (PHI, as the room).
    #[serde(default)]
    pub bed: Option<String>,
    /// When the event was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A clinical record as ingestion parsed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClinicalRecord {
    /// Patient demographics (boxed: far larger and far rarer than measurements).
    Patient(Box<PatientRecord>),
    /// A vital-sign measurement.
    Vital(VitalRecord),
    /// An encounter.
    Encounter(EncounterRecord),
    /// A laboratory result.
    Lab(Box<LabRecord>),
}

impl ClinicalRecord {
    /// The source patient id (used to route a patient's records to one worker).
    #[must_use]
    pub fn patient_id(&self) -> &str {
        match self {
            Self::Patient(p) => &p.patient_id,
            Self::Vital(v) => &v.patient_id,
            Self::Encounter(e) => &e.patient_id,
            Self::Lab(l) => &l.patient_id,
        }
    }
}

/// A parsed record with where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ingested {
    /// Source node name.
    pub source: String,
    /// `path:line`, `generator#n`, ...
    pub location: String,
    /// Position in the source, and index within that raw record (a Bundle yields many).
    pub sequence: (u64, u32),
    /// The record.
    pub record: ClinicalRecord,
    /// When its source read the raw record (µs since the epoch; 0 when not known): alerts on
    /// rows tabulated from it are timed from here.
    #[serde(default)]
    pub arrival_us: u64,
}
