//! The FHIR R4 JSON shapes canonization writes, with members in a fixed order.

use serde::Serialize;

/// `meta.security` system of the `PSEUDED` tag.
pub const OBSERVATION_VALUE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";
/// The observation-category code system.
pub const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

#[derive(Serialize)]
pub(super) struct Coding {
    system: &'static str,
    code: &'static str,
    display: &'static str,
}

/// A Coding whose code comes from the data.
#[derive(Serialize)]
pub(super) struct OwnedCoding<'a> {
    pub(super) system: &'static str,
    pub(super) code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) display: Option<&'static str>,
}

#[derive(Serialize)]
pub(super) struct TypeText<'a> {
    pub(super) text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Identifier<'a> {
    #[serde(rename = "type")]
    pub(super) type_: TypeText<'a>,
    pub(super) system: String,
    pub(super) value: &'a str,
}

#[derive(Serialize)]
pub(super) struct HumanName<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) family: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) given: &'a [String],
}

#[derive(Serialize)]
pub(super) struct ContactPoint<'a> {
    pub(super) system: &'a str,
    pub(super) value: &'a str,
}

#[derive(Serialize)]
pub(super) struct Annotation<'a> {
    pub(super) text: &'a str,
}

#[derive(Serialize)]
pub(super) struct IdentifierReference<'a> {
    pub(super) identifier: Identifier<'a>,
}

#[derive(Serialize)]
pub(super) struct Period {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end: Option<String>,
}

#[derive(Serialize)]
pub(super) struct LocationDisplay<'a> {
    pub(super) display: &'a str,
}

#[derive(Serialize)]
pub(super) struct EncounterLocation<'a> {
    pub(super) location: LocationDisplay<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Encounter<'a> {
    pub(super) resource_type: &'static str,
    pub(super) id: &'a str,
    pub(super) meta: Meta,
    pub(super) status: &'static str,
    pub(super) class: OwnedCoding<'a>,
    pub(super) subject: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) period: Option<Period>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) location: Vec<EncounterLocation<'a>>,
}

impl Coding {
    pub(super) const fn new(
        system: &'static str,
        code: &'static str,
        display: &'static str,
    ) -> Self {
        Self {
            system,
            code,
            display,
        }
    }
}

#[derive(Serialize)]
pub(super) struct CodeableConcept {
    pub(super) coding: Vec<Coding>,
    pub(super) text: &'static str,
}

impl CodeableConcept {
    pub(super) fn vital_signs() -> Self {
        Self {
            coding: vec![Coding::new(CATEGORY_SYSTEM, "vital-signs", "Vital Signs")],
            text: "Vital Signs",
        }
    }
}

#[derive(Serialize)]
pub(super) struct Meta {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<String>,
    security: [Coding; 1],
}

impl Meta {
    pub(super) fn pseudonymized(profile: Option<String>) -> Self {
        Self {
            profile: profile.into_iter().collect(),
            security: [Coding::new(
                OBSERVATION_VALUE_SYSTEM,
                "PSEUDED",
                "pseudonymized",
            )],
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Address<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) line: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) city: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) district: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) postal_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) country: Option<&'a str>,
}

impl Address<'_> {
    pub(super) const fn is_empty(&self) -> bool {
        self.line.is_empty()
            && self.city.is_none()
            && self.district.is_none()
            && self.state.is_none()
            && self.postal_code.is_none()
            && self.country.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Extension<'a> {
    pub(super) url: &'static str,
    pub(super) value_string: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Patient<'a> {
    pub(super) resource_type: &'static str,
    pub(super) id: &'a str,
    pub(super) meta: Meta,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) identifier: Vec<Identifier<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) name: Vec<HumanName<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) telecom: Vec<ContactPoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gender: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) birth_date: Option<String>,
    pub(super) deceased_boolean: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) address: Vec<Address<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) extension: Vec<Extension<'a>>,
}

#[derive(Serialize)]
pub(super) struct Quantity {
    pub(super) value: f64,
    pub(super) unit: &'static str,
    pub(super) system: &'static str,
    pub(super) code: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Component {
    code: CodeableConcept,
    value_quantity: Quantity,
}

impl Component {
    pub(super) fn new(loinc: &'static str, display: &'static str, value: Quantity) -> Self {
        Self {
            code: CodeableConcept {
                coding: vec![Coding::new(super::LOINC, loinc, display)],
                text: display,
            },
            value_quantity: value,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Reference {
    pub(super) reference: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Observation<'a> {
    pub(super) resource_type: &'static str,
    pub(super) id: &'a str,
    pub(super) meta: Meta,
    pub(super) status: &'static str,
    pub(super) category: Vec<CodeableConcept>,
    pub(super) code: CodeableConcept,
    pub(super) subject: Reference,
    pub(super) effective_date_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value_quantity: Option<Quantity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) component: Vec<Component>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<IdentifierReference<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) note: Vec<Annotation<'a>>,
}
