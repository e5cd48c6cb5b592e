//! The common envelope, a vital-sign measurement, read straight into its fields.
//!
//! The general parser reads an envelope into a JSON tree (an allocated string for every key and
//! value, a map per object) and then looks its fields up: in the harness's pipeline that was 9 %
//! of the CPU. A `vitals.measurement.recorded` envelope whose strings need no unescaping is read
//! here into borrowed fields instead. Anything this path does not take as it stands (another
//! event type, a field missing, null, blank or of another type, an escaped string, a repeated
//! key, a unit that does not convert) makes it give up, and the general parser decides, with its
//! reasons: this path only ever accepts what the general one accepts, as the same record (the
//! tests compare both on the generator's envelopes and on hand-made ones).

use serde::Deserialize;
use vitalflow_model::clinical::{ClinicalRecord, VitalRecord};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::super::time;
use super::VITALS_RECORDED;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    metadata: Metadata<'a>,
    #[serde(borrow)]
    payload: Payload<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    event_id: &'a str,
    event_type: &'a str,
    event_source: &'a str,
    correlation_id: &'a str,
    // Checked for their type only, as the general parser does.
    #[allow(dead_code)]
    causation_id: Option<&'a str>,
    timestamp: &'a str,
    version: &'a str,
    #[allow(dead_code)]
    trace_id: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    patient_id: &'a str,
    measurement_id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    value: Option<f64>,
    unit: Option<&'a str>,
    systolic: Option<f64>,
    diastolic: Option<f64>,
    effective_at: &'a str,
    device_id: Option<&'a str>,
    note: Option<&'a str>,
}

/// `s` unless blank.
fn text(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

/// The record of a vital-sign envelope, or `None` where the general parser must decide.
pub(super) fn vital(bytes: &[u8]) -> Option<ClinicalRecord> {
    let Envelope {
        metadata: m,
        payload: p,
    } = serde_json::from_slice(bytes).ok()?;
    let required = [
        m.event_id,
        m.event_source,
        m.correlation_id,
        m.version,
        m.event_type,
    ];
    if m.event_type != VITALS_RECORDED || required.iter().any(|s| s.trim().is_empty()) {
        return None;
    }
    time::rfc3339(m.timestamp)?;
    if [p.patient_id, p.kind].iter().any(|s| s.trim().is_empty()) {
        return None;
    }
    let kind = VitalKind::from_name(p.kind.trim())?;
    let effective = time::rfc3339(p.effective_at)?;
    let unit = text(p.unit);
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let value = if kind == VitalKind::BloodPressure {
        let unit = unit.unwrap_or(kind.code().ucum);
        VitalValue::BloodPressure {
            systolic: kind.normalize(finite(p.systolic)?, unit).ok()?,
            diastolic: kind.normalize(finite(p.diastolic)?, unit).ok()?,
        }
    } else {
        VitalValue::Quantity {
            value: kind.normalize(finite(p.value)?, unit?).ok()?,
        }
    };
    Some(ClinicalRecord::Vital(VitalRecord {
        source_id: text(p.measurement_id).map(str::to_owned),
        patient_id: p.patient_id.trim().to_owned(),
        kind,
        value,
        effective,
        device: text(p.device_id).map(str::to_owned),
        notes: text(p.note).map(str::to_owned).into_iter().collect(),
        mentioned: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};
    use vitalflow_model::vitals::VitalKind;

    use super::super::parse_record;
    use super::vital;

    fn envelope(metadata: &Value, payload: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"metadata": metadata, "payload": payload})).unwrap()
    }

    fn metadata() -> Value {
        json!({
            "eventId": "e-1", "eventType": "vitals.measurement.recorded", "eventSource": "monitor",
            "correlationId": "c-1", "causationId": "e-0", "timestamp": "2026-01-01T00:00:05Z",
            "version": "1.0"
        })
    }

    /// The fast path either declines or gives what the general parser gives; returns whether it
    /// took the envelope.
    fn agrees(bytes: &[u8]) -> bool {
        let general = parse_record(bytes);
        match vital(bytes) {
            None => false,
            Some(fast) => {
                assert_eq!(
                    Ok(&fast),
                    general.as_ref(),
                    "{}",
                    String::from_utf8_lossy(bytes)
                );
                true
            }
        }
    }

    #[test]
    fn takes_every_plain_measurement_as_the_general_parser_does() {
        let mut taken = 0;
        for (i, kind) in VitalKind::ALL.into_iter().enumerate() {
            let unit = kind.code().ucum;
            let mut payload = json!({
                "patientId": format!(" P{i:09} "), "type": kind.as_str(), "unit": unit,
                "value": 36.6 + i as f64, "systolic": 120, "diastolic": 80,
                "effectiveAt": "2026-01-01T00:00:07.250+02:00",
            });
            assert!(agrees(&envelope(&metadata(), &payload)), "{kind:?}");
            for (key, value) in [
                ("measurementId", json!("m-1")),
                ("measurementId", json!("  ")),
                ("deviceId", json!("SN-7")),
                ("note", json!("restless")),
                ("note", Value::Null),
                ("unit", json!("bpm")),
                ("unit", json!("[degF]")),
                ("unit", json!("mmHg")),
                ("extra", json!({"nested": [1, 2]})),
            ] {
                payload[key] = value;
                taken += usize::from(agrees(&envelope(&metadata(), &payload)));
            }
        }
        assert!(taken > 40, "the fast path took only {taken}");
    }

    #[test]
    fn declines_what_it_does_not_take_as_it_stands() {
        let payload = json!({
            "patientId": "P1", "type": "heart-rate", "value": 72, "unit": "/min",
            "effectiveAt": "2026-01-01T00:00:07Z"
        });
        assert!(agrees(&envelope(&metadata(), &payload)));
        let mut declined = Vec::new();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for (key, value) in [
            ("patientId", json!("")),
            ("patientId", json!("P\u{e9}\"1")),
            ("patientId", Value::Null),
            ("patientId", json!(7)),
            ("type", json!("weight")),
            ("value", json!("72")),
            ("value", Value::Null),
            ("unit", json!("kg")),
            ("unit", Value::Null),
            ("effectiveAt", json!("yesterday")),
            ("deviceId", json!(3)),
            ("note", json!("line\nbreak")),
        ] {
            let mut p = payload.clone();
            p[key] = value;
            cases.push(envelope(&metadata(), &p));
        }
        for (key, value) in [
            ("eventType", json!("patient.record.created")),
            ("eventId", json!(" ")),
            ("timestamp", json!("2026-13-01")),
            ("traceId", json!(5)),
            ("version", Value::Null),
        ] {
            let mut m = metadata();
            m[key] = value;
            cases.push(envelope(&m, &payload));
        }
        cases.push(br#"{"metadata": {}, "payload": {}}"#.to_vec());
        cases.push(b"[1, 2]".to_vec());
        cases.push(b"{\"metadata\": ".to_vec());
        let text = String::from_utf8(envelope(&metadata(), &payload)).unwrap();
        cases.push(
            text.replacen("\"unit\"", "\"unit\":\"/min\",\"unit\"", 1)
                .into_bytes(),
        );
        for case in &cases {
            declined.push(!agrees(case));
        }
        // Blood pressure ignores `value` whatever it holds, as the general parser does.
        let bp = json!({
            "patientId": "P1", "type": "blood-pressure", "systolic": 120, "diastolic": 80,
            "effectiveAt": "2026-01-01T00:00:07Z", "value": 3
        });
        assert!(agrees(&envelope(&metadata(), &bp)));
        assert!(declined.iter().all(|d| *d), "{declined:?}");
    }
}
