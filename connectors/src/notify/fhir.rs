//! A FHIR R4 `Communication` for a clinical notification: an alert (category `alert`) sent to
//! the care team about a patient.
//!
//! * `identifier`: the notification id in the system [`NOTIFICATION_SYSTEM`]; the client posts
//!   with `If-None-Exist` on it, so a second delivery creates nothing;
//! * `status` `completed`, `priority` from the level (`high` `stat`, `medium` `urgent`, else
//!   `routine`), `sent` the time vitalflow emitted the alert;
//! * `subject`: a logical reference to the patient by medical record number, with the name as
//!   display;
//! * `about`: the alert, by its id (system `urn:vitalflow:alert`);
//! * `reasonCode` and `payload`: the rule, level, previous level and NEWS2 score in words, and
//!   the patient's location.

use chrono::SecondsFormat;
use serde_json::{Value, json};
use vitalflow_model::notification::ClinicalNotification;

use super::NotifyError;

/// The identifier system of notification ids.
pub const NOTIFICATION_SYSTEM: &str = "urn:vitalflow:notification";

/// The identifier system of alert ids.
pub const ALERT_SYSTEM: &str = "urn:vitalflow:alert";

/// What the resource says beyond the notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirSettings {
    /// The identifier system (a URI) of the medical record numbers.
    pub mrn_system: String,
}

/// A text without leading and trailing whitespace, or `None` when nothing is left (FHIR
/// strings may not be empty).
fn text(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

/// The resource's priority for an alert level.
fn priority(level: &str) -> &'static str {
    match level {
        "high" => "stat",
        "medium" => "urgent",
        _ => "routine",
    }
}

/// What happened to the alert, from the event type (`clinical.alert.raised` → `raised`).
fn happened(event_type: &str) -> &str {
    event_type.rsplit('.').next().unwrap_or(event_type)
}

/// The `Communication` for a notification.
///
/// # Errors
/// [`NotifyError::NoMrn`] or [`NotifyError::NoNotificationId`].
pub fn communication(
    n: &ClinicalNotification,
    settings: &FhirSettings,
) -> Result<Value, NotifyError> {
    let mrn = text(&n.patient.mrn).ok_or(NotifyError::NoMrn)?;
    let id = text(&n.notification_id).ok_or(NotifyError::NoNotificationId)?;

    let mut subject = json!({ "identifier": { "value": mrn } });
    if let Some(system) = text(&settings.mrn_system) {
        subject["identifier"]["system"] = json!(system);
    }
    let name: Vec<&str> = [&n.patient.given_name, &n.patient.family_name]
        .into_iter()
        .filter_map(|p| p.as_deref().and_then(text))
        .collect();
    if !name.is_empty() {
        subject["display"] = json!(name.join(" "));
    }

    let rule = text(&n.rule).unwrap_or("alert");
    let mut summary = format!(
        "{rule} alert {}: level {}",
        happened(&n.event_type),
        text(&n.level).unwrap_or("unknown")
    );
    if let Some(previous) = text(&n.previous_level) {
        summary.push_str(&format!(" (was {previous})"));
    }
    let mut reason = format!("{rule} level {}", text(&n.level).unwrap_or("unknown"));
    if let Some(score) = n.score {
        summary.push_str(&format!(", NEWS2 score {score}"));
        reason.push_str(&format!(", NEWS2 score {score}"));
        if !n.sub_scores.is_empty() {
            let parts: Vec<String> = n
                .sub_scores
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            summary.push_str(&format!(" ({})", parts.join(", ")));
        }
    }
    if let Some(condition) = n.condition.as_deref().and_then(text) {
        summary.push_str(&format!("; condition: {condition}"));
    }
    let mut payload = vec![json!({ "contentString": summary })];
    let location: Vec<String> = [
        ("ward", &n.patient.ward),
        ("room", &n.patient.room),
        ("bed", &n.patient.bed),
    ]
    .into_iter()
    .filter_map(|(what, v)| v.as_deref().and_then(text).map(|v| format!("{what} {v}")))
    .collect();
    if !location.is_empty() {
        payload.push(json!({ "contentString": format!("Location: {}", location.join(", ")) }));
    }

    let mut resource = json!({
        "resourceType": "Communication",
        "identifier": [{ "system": NOTIFICATION_SYSTEM, "value": id }],
        "status": "completed",
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                "code": "alert",
                "display": "Alert"
            }]
        }],
        "priority": priority(n.level.trim()),
        "subject": subject,
        "sent": n.emitted_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "sender": { "display": "vitalflow" },
        "reasonCode": [{ "text": reason }],
        "payload": payload,
    });
    if let Some(alert) = text(&n.alert_id) {
        resource["about"] = json!([{
            "identifier": { "system": ALERT_SYSTEM, "value": alert },
            "display": format!("{rule} alert")
        }]);
    }
    Ok(resource)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::notify::testing::{notification, python, python_run};

    fn settings() -> FhirSettings {
        FhirSettings {
            mrn_system: "https://hospital.example/mrn".into(),
        }
    }

    #[test]
    fn the_communication_names_the_patient_the_alert_and_the_notification() {
        let r = communication(&notification(), &settings()).unwrap();
        assert_eq!(r["resourceType"], "Communication");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["priority"], "stat");
        assert_eq!(r["identifier"][0]["system"], NOTIFICATION_SYSTEM);
        assert_eq!(
            r["identifier"][0]["value"],
            "3f2a9c1e-7b44-4d0e-9a51-0c6d2e8f1a77"
        );
        assert_eq!(r["category"][0]["coding"][0]["code"], "alert");
        assert_eq!(
            r["subject"]["identifier"]["system"],
            "https://hospital.example/mrn"
        );
        assert_eq!(r["subject"]["identifier"]["value"], "MRN|77^1");
        assert_eq!(r["subject"]["display"], "Mary~Ann\\ O'Brien^|&");
        assert_eq!(r["sent"], "2026-03-01T10:00:01.500Z");
        assert_eq!(r["about"][0]["identifier"]["value"], "alert-42");
        let summary = r["payload"][0]["contentString"].as_str().unwrap();
        assert_eq!(
            summary,
            "news2 alert escalated: level high (was medium), NEWS2 score 7 \
             (respiration_rate 3, spo2 2); condition: rr > 24 |\r^x"
        );
        assert_eq!(
            r["payload"][1]["contentString"],
            "Location: ward Ward 7&8, room 12, bed B"
        );
        assert_eq!(
            r["reasonCode"][0]["text"],
            "news2 level high, NEWS2 score 7"
        );

        let mut n = notification();
        for (level, want) in [
            ("medium", "urgent"),
            ("low-medium", "routine"),
            ("low", "routine"),
            ("none", "routine"),
        ] {
            n.level = level.into();
            assert_eq!(communication(&n, &settings()).unwrap()["priority"], want);
        }
        n.patient.mrn = String::new();
        assert!(matches!(
            communication(&n, &settings()),
            Err(NotifyError::NoMrn)
        ));
    }

    /// The FHIR R4 models of `fhir.resources` take the resource, a full one and a sparse one.
    #[test]
    fn the_communication_is_valid_fhir_r4() {
        let Some(python) = python("fhir.resources") else {
            return;
        };
        let mut sparse = notification();
        sparse.patient.family_name = None;
        sparse.patient.given_name = None;
        sparse.patient.ward = None;
        sparse.patient.room = None;
        sparse.patient.bed = None;
        sparse.score = None;
        sparse.sub_scores.clear();
        sparse.condition = None;
        sparse.previous_level = String::new();
        sparse.alert_id = String::new();
        let resources = json!([
            communication(&notification(), &settings()).unwrap(),
            communication(
                &sparse,
                &FhirSettings {
                    mrn_system: String::new()
                }
            )
            .unwrap(),
        ]);
        let script = r#"
import sys, json
from fhir.resources.communication import Communication
out = []
for r in json.load(sys.stdin):
    c = Communication.parse_obj(r)
    out.append({"status": c.status, "priority": c.priority, "id": c.identifier[0].value})
print(json.dumps(out))
"#;
        let out = python_run(&python, script, resources.to_string().as_bytes());
        assert_eq!(out[0]["status"], "completed");
        assert_eq!(out[0]["priority"], "stat");
        assert_eq!(out[1]["id"], "3f2a9c1e-7b44-4d0e-9a51-0c6d2e8f1a77");
    }
}
