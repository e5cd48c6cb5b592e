//! An HL7 v2.5 `ORU^R01` (unsolicited observation result) for a clinical notification.
//!
//! The message:
//!
//! * `MSH`: sent by `VITALFLOW` from the configured facility to the configured application and
//!   facility; MSH-10, the control id, is [`control_id`] of the notification id (at most 20
//!   characters, as HL7 2.5 allows), the same for every delivery of the notification;
//! * `PID`: PID-3 the medical record number (identifier type `MR`), PID-5 family^given;
//! * `PV1`: an inpatient (PV1-2 `I`) at ward^room^bed (PV1-3);
//! * `OBR`: the alert (a local code), OBR-7 the time of the reading that triggered it;
//! * `OBX`: the NEWS2 total score and each sub-score (numeric), then the rule, the level, the
//!   previous level, the event type, the rule's condition, the notification id (in full) and the
//!   alert id (strings). OBX-8, the abnormal flag, follows the level.
//!
//! Every text taken from the notification is escaped (`\F\ \S\ \R\ \E\ \T\`, and `\Xhh\` for
//! control characters such as the segment terminator), so no value can change the message's
//! structure. Segments end with a carriage return.

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use vitalflow_model::notification::ClinicalNotification;

use super::NotifyError;

/// The coding system of the local codes (HL7 table 0396: `L`, locally defined).
const LOCAL: &str = "L";

/// The code of the NEWS2 total score. No LOINC code for the NEWS2 aggregate score was found
/// that could be relied on (the UK's NEWS2 FHIR profiles code it with SNOMED CT, UK edition),
/// so it is a local code; a receiver maps it as it needs.
const NEWS2_TOTAL: (&str, &str) = ("NEWS2", "NEWS2 total score");

/// What the message says of its sender and receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OruSettings {
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// PID-3.4, the authority that assigned the medical record numbers (empty: none).
    pub mrn_assigning_authority: String,
    /// MSH-11 (`P` production, `T` training, `D` debugging).
    pub processing_id: String,
}

impl Default for OruSettings {
    fn default() -> Self {
        Self {
            sending_facility: String::new(),
            receiving_application: String::new(),
            receiving_facility: String::new(),
            mrn_assigning_authority: String::new(),
            processing_id: "P".to_owned(),
        }
    }
}

/// A message ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OruMessage {
    /// MSH-10: the acknowledgement names it in MSA-2.
    pub control_id: String,
    /// The message, segments ended by `\r`, without MLLP framing.
    pub bytes: Vec<u8>,
}

/// The message control id of a notification: `VF` and the first 18 hex digits of the SHA-256
/// of its id (20 characters, HL7 2.5's limit for MSH-10). Stable: every delivery of a
/// notification has the same one.
#[must_use]
pub fn control_id(notification_id: &str) -> String {
    let digest = Sha256::digest(notification_id.as_bytes());
    let mut id = String::with_capacity(20);
    id.push_str("VF");
    for b in &digest[..9] {
        id.push_str(&format!("{b:02X}"));
    }
    id
}

/// `text` with HL7's delimiters and the escape character escaped (`|` `\F\`, `^` `\S\`, `~`
/// `\R\`, `\` `\E\`, `&` `\T\`) and control characters (the segment terminator among them) as
/// `\Xhh\`.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '&' => out.push_str("\\T\\"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\X{:02X}\\", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// An HL7 timestamp (DTM), in UTC: `YYYYMMDDHHMMSS.sss+0000`.
fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S%.3f+0000").to_string()
}

/// HL7 table 0078 abnormal flag of an alert level: `AA` (critically abnormal) for high, `A`
/// for the other alert levels, `N` once resolved.
fn abnormal_flag(level: &str) -> &'static str {
    match level {
        "high" => "AA",
        "medium" | "low-medium" | "low" => "A",
        "none" => "N",
        _ => "",
    }
}

/// A local code for a NEWS2 parameter's sub-score: its name, upper case, letters, digits and
/// `-` only.
fn sub_score_code(parameter: &str) -> String {
    let mut code = String::from("NEWS2-");
    code.extend(parameter.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '-'
        }
    }));
    code
}

/// Joins components (already escaped) with `^`, without trailing empty ones.
fn components(parts: &[&str]) -> String {
    let last = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    parts[..last].join("^")
}

/// A segment: its id and the fields at their positions (1-based), the others empty.
fn segment(id: &str, fields: &[(usize, String)]) -> String {
    let n = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut all = vec![String::new(); n + 1];
    all[0] = id.to_owned();
    for (i, value) in fields {
        all[*i].clone_from(value);
    }
    all.join("|")
}

/// The `ORU^R01` message for a notification, created at `created_at` (MSH-7).
///
/// # Errors
/// [`NotifyError::NoMrn`] or [`NotifyError::NoNotificationId`]: the notification cannot name
/// its patient, or a receiver could not tell a second delivery of it.
pub fn oru_r01(
    n: &ClinicalNotification,
    settings: &OruSettings,
    created_at: DateTime<Utc>,
) -> Result<OruMessage, NotifyError> {
    if n.patient.mrn.trim().is_empty() {
        return Err(NotifyError::NoMrn);
    }
    if n.notification_id.trim().is_empty() {
        return Err(NotifyError::NoNotificationId);
    }
    let control = control_id(&n.notification_id);
    let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or_default());
    let observed = timestamp(n.event_time);
    let flag = abnormal_flag(&n.level);

    let mut segments = Vec::new();
    // MSH-1 is the field separator itself: the fields after `MSH|` start at MSH-2.
    segments.push(
        [
            "MSH",
            "^~\\&",
            "VITALFLOW",
            &escape(&settings.sending_facility),
            &escape(&settings.receiving_application),
            &escape(&settings.receiving_facility),
            &timestamp(created_at),
            "",
            "ORU^R01^ORU_R01",
            &control,
            &escape(&settings.processing_id),
            "2.5",
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        ]
        .join("|"),
    );
    let pid3 = components(&[
        &escape(n.patient.mrn.trim()),
        "",
        "",
        &escape(&settings.mrn_assigning_authority),
        "MR",
    ]);
    let pid5 = components(&[&opt(&n.patient.family_name), &opt(&n.patient.given_name)]);
    segments.push(segment("PID", &[(1, "1".into()), (3, pid3), (5, pid5)]));
    let pv13 = components(&[
        &opt(&n.patient.ward),
        &opt(&n.patient.room),
        &opt(&n.patient.bed),
    ]);
    segments.push(segment(
        "PV1",
        &[(1, "1".into()), (2, "I".into()), (3, pv13)],
    ));
    segments.push(segment(
        "OBR",
        &[
            (1, "1".into()),
            (3, control.clone()),
            (4, format!("VF-ALERT^Clinical alert^{LOCAL}")),
            (7, observed.clone()),
            (22, timestamp(n.emitted_at)),
            (25, "F".into()),
        ],
    ));

    let mut obx = Vec::new();
    if let Some(score) = n.score {
        obx.push((
            "NM",
            format!("{}^{}^{LOCAL}", NEWS2_TOTAL.0, NEWS2_TOTAL.1),
            score.to_string(),
            "{score}^^UCUM".to_owned(),
            flag,
        ));
    }
    for (parameter, sub) in &n.sub_scores {
        obx.push((
            "NM",
            format!(
                "{}^NEWS2 sub-score: {}^{LOCAL}",
                escape(&sub_score_code(parameter)),
                escape(parameter)
            ),
            sub.to_string(),
            "{score}^^UCUM".to_owned(),
            "",
        ));
    }
    let mut text = |code: &str, name: &str, value: &str, flag: &'static str| {
        obx.push((
            "ST",
            format!("{code}^{name}^{LOCAL}"),
            escape(value),
            String::new(),
            flag,
        ));
    };
    text("VF-RULE", "Alert rule", &n.rule, "");
    text("VF-LEVEL", "Alert level", &n.level, flag);
    text(
        "VF-PREVIOUS-LEVEL",
        "Previous alert level",
        &n.previous_level,
        "",
    );
    text("VF-EVENT", "Alert event type", &n.event_type, "");
    if let Some(condition) = &n.condition {
        text("VF-CONDITION", "Rule condition", condition, "");
    }
    text(
        "VF-NOTIFICATION-ID",
        "Notification id",
        &n.notification_id,
        "",
    );
    text("VF-ALERT-ID", "Alert id", &n.alert_id, "");
    for (i, (kind, code, value, units, flag)) in obx.into_iter().enumerate() {
        segments.push(segment(
            "OBX",
            &[
                (1, (i + 1).to_string()),
                (2, kind.into()),
                (3, code),
                (5, value),
                (6, units),
                (8, flag.into()),
                (11, "F".into()),
                (14, observed.clone()),
            ],
        ));
    }

    let mut bytes = segments.join("\r").into_bytes();
    bytes.push(b'\r');
    Ok(OruMessage {
        control_id: control,
        bytes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::notify::testing::{notification, unescape};

    /// The fields of the first segment `id` (index n is field n; for MSH, index 1 is MSH-2).
    fn fields<'a>(message: &'a str, id: &str) -> Vec<&'a str> {
        message
            .split('\r')
            .find(|s| s.split('|').next() == Some(id))
            .unwrap_or_else(|| panic!("no {id}"))
            .split('|')
            .collect()
    }

    #[test]
    fn the_message_names_the_patient_the_alert_and_every_score() {
        let n = notification();
        let settings = OruSettings {
            sending_facility: "WARDS".into(),
            receiving_application: "PAGER".into(),
            receiving_facility: "HOSP|1".into(),
            mrn_assigning_authority: "HOSP".into(),
            ..OruSettings::default()
        };
        let created = "2026-03-01T10:00:05.250Z".parse().unwrap();
        let m = oru_r01(&n, &settings, created).unwrap();
        let text = String::from_utf8(m.bytes.clone()).unwrap();
        assert!(text.ends_with('\r'));
        let segments: Vec<_> = text.trim_end_matches('\r').split('\r').collect();
        let ids: Vec<_> = segments.iter().map(|s| &s[..3]).collect();
        assert_eq!(ids[..4], ["MSH", "PID", "PV1", "OBR"]);
        assert!(ids[4..].iter().all(|s| *s == "OBX"), "{ids:?}");
        // 1 total score, 2 sub-scores, 7 texts.
        assert_eq!(ids.len(), 4 + 1 + 2 + 7);

        let msh = fields(&text, "MSH");
        assert_eq!(msh[1], "^~\\&");
        assert_eq!(msh[2], "VITALFLOW");
        assert_eq!(msh[3], "WARDS");
        assert_eq!(msh[4], "PAGER");
        assert_eq!(unescape(msh[5]), "HOSP|1");
        assert_eq!(msh[6], "20260301100005.250+0000");
        assert_eq!(msh[8], "ORU^R01^ORU_R01");
        assert_eq!(msh[9], m.control_id);
        assert_eq!(m.control_id.len(), 20);
        assert_eq!(m.control_id, control_id(&n.notification_id));
        assert_ne!(m.control_id, control_id("another"));
        assert_eq!(msh[10], "P");
        assert_eq!(msh[11], "2.5");

        let pid = fields(&text, "PID");
        assert_eq!(pid[3], "MRN\\F\\77\\S\\1^^^HOSP^MR");
        assert_eq!(unescape(pid[3].split('^').next().unwrap()), "MRN|77^1");
        let pid5: Vec<_> = pid[5].split('^').collect();
        assert_eq!(pid5.len(), 2);
        assert_eq!(unescape(pid5[0]), "O'Brien^|&");
        assert_eq!(unescape(pid5[1]), "Mary~Ann\\");

        let pv1 = fields(&text, "PV1");
        assert_eq!(pv1[2], "I");
        let pv13: Vec<_> = pv1[3].split('^').map(unescape).collect();
        assert_eq!(pv13, ["Ward 7&8", "12", "B"]);

        let obr = fields(&text, "OBR");
        assert_eq!(obr[4], "VF-ALERT^Clinical alert^L");
        assert_eq!(obr[7], "20260301095930.000+0000");
        assert_eq!(obr[25], "F");

        let obx: Vec<Vec<&str>> = segments[4..]
            .iter()
            .map(|s| s.split('|').collect())
            .collect();
        for (i, o) in obx.iter().enumerate() {
            assert_eq!(o[1], (i + 1).to_string());
            assert_eq!(o[11], "F");
            assert_eq!(o[14], "20260301095930.000+0000");
        }
        let by_code = |code: &str| {
            obx.iter()
                .find(|o| o[3].split('^').next() == Some(code))
                .unwrap_or_else(|| panic!("no OBX {code}"))
        };
        let total = by_code("NEWS2");
        assert_eq!(
            (total[2], total[3], total[5], total[8]),
            ("NM", "NEWS2^NEWS2 total score^L", "7", "AA")
        );
        assert_eq!(by_code("NEWS2-RESPIRATION-RATE")[5], "3");
        assert_eq!(by_code("NEWS2-SPO2")[5], "2");
        assert_eq!(by_code("VF-RULE")[5], "news2");
        let level = by_code("VF-LEVEL");
        assert_eq!((level[2], level[5], level[8]), ("ST", "high", "AA"));
        assert_eq!(by_code("VF-PREVIOUS-LEVEL")[5], "medium");
        assert_eq!(by_code("VF-EVENT")[5], "clinical.alert.escalated");
        assert_eq!(unescape(by_code("VF-CONDITION")[5]), "rr > 24 |\r^x");
        assert_eq!(by_code("VF-NOTIFICATION-ID")[5], n.notification_id);
        assert_eq!(by_code("VF-ALERT-ID")[5], n.alert_id);
    }

    #[test]
    fn escaping_covers_every_delimiter_and_control_characters() {
        assert_eq!(escape("a|b^c~d\\e&f"), "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f");
        assert_eq!(escape("x\ry\nz\u{7}"), "x\\X0D\\y\\X0A\\z\\X07\\");
        assert_eq!(escape("Zoë"), "Zoë");
        for s in ["a|b^c~d\\e&f", "x\ry\n", "O'Brien^|&", "plain"] {
            assert_eq!(unescape(&escape(s)), s);
        }
    }

    #[test]
    fn a_notification_without_mrn_or_id_is_refused_and_one_without_names_is_not() {
        let created = Utc::now();
        let mut n = notification();
        n.patient.mrn = " ".into();
        assert!(matches!(
            oru_r01(&n, &OruSettings::default(), created),
            Err(NotifyError::NoMrn)
        ));
        let mut n = notification();
        n.notification_id.clear();
        assert!(matches!(
            oru_r01(&n, &OruSettings::default(), created),
            Err(NotifyError::NoNotificationId)
        ));
        let mut n = notification();
        n.patient.family_name = None;
        n.patient.given_name = None;
        n.patient.ward = None;
        n.score = None;
        n.sub_scores.clear();
        n.condition = None;
        let text = String::from_utf8(oru_r01(&n, &OruSettings::default(), created).unwrap().bytes)
            .unwrap();
        let pid = fields(&text, "PID");
        assert_eq!(pid.len(), 6);
        assert_eq!(pid[5], "");
        assert_eq!(fields(&text, "PV1")[3], "^12^B");
        assert!(!text.contains("NEWS2"));
        assert_eq!(text.matches("\rOBX|").count(), 6);
    }

    /// An independent parser (the `hl7` Python package) reads the same values.
    #[test]
    fn the_hl7_python_package_reads_the_message() {
        let Some(python) = crate::notify::testing::python("hl7") else {
            return;
        };
        let n = notification();
        let m = oru_r01(&n, &OruSettings::default(), Utc::now()).unwrap();
        let script = r#"
import sys, json, hl7
m = hl7.parse(sys.stdin.buffer.read().decode("utf-8"))
obx = {}
for s in m.segments("OBX"):
    obx[str(s[3][0][0])] = m.unescape(str(s[5]))
print(json.dumps({
    "control": str(m.segment("MSH")[10]),
    "type": str(m.segment("MSH")[9]),
    "mrn": m["PID.F3.R1.C1"],
    "mr": m["PID.F3.R1.C5"],
    "family": m["PID.F5.R1.C1"],
    "given": m["PID.F5.R1.C2"],
    "ward": m["PV1.F3.R1.C1"],
    "obx": obx,
}))
"#;
        let out = crate::notify::testing::python_run(&python, script, &m.bytes);
        assert_eq!(out["control"], m.control_id.as_str());
        assert_eq!(out["type"], "ORU^R01^ORU_R01");
        assert_eq!(out["mrn"], "MRN|77^1");
        assert_eq!(out["mr"], "MR");
        assert_eq!(out["family"], "O'Brien^|&");
        assert_eq!(out["given"], "Mary~Ann\\");
        assert_eq!(out["ward"], "Ward 7&8");
        assert_eq!(out["obx"]["NEWS2"], "7");
        assert_eq!(out["obx"]["VF-LEVEL"], "high");
        assert_eq!(out["obx"]["VF-CONDITION"], "rr > 24 |\r^x");
        assert_eq!(out["obx"]["VF-NOTIFICATION-ID"], n.notification_id.as_str());
    }
}
