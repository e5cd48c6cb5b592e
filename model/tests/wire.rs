//! Records that cross worker boundaries survive timely's binary encoding (bincode 1.x, which
//! reads only the types the value declares), and their JSON (the job's outputs: alert events,
//! the audit log, dead letters) is the same text as before they were made to.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vitalflow_model::alert::{AlertEvent, AlertPayload};
use vitalflow_model::clinical::{
    Address, ClinicalRecord, Contact, EncounterEvent, EncounterRecord, Gender, IdClass, Identifier,
    Ingested, PatientRecord, VitalRecord,
};
use vitalflow_model::deid::{
    DeidEncounter, DeidIdentifier, DeidPatient, DeidRecord, DeidVital, KeptPhi,
};
use vitalflow_model::envelope::{
    AuditRecord, Counts, DomainEvent, Envelope, EventMetadata, StageReport,
};
use vitalflow_model::row::{KeyValue, Row, Value};
use vitalflow_model::vitals::{VitalKind, VitalValue};
use vitalflow_model::{DeadLetter, RawFormat, RawRecord};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Encodes `value` as timely does when it sends it to another process, and decodes it.
fn through_bincode<T: Serialize + DeserializeOwned>(value: &T) -> Result<T, String> {
    let bytes = bincode::serialize(value).map_err(|e| format!("encoding: {e}"))?;
    let size = bincode::serialized_size(value).map_err(|e| format!("sizing: {e}"))?;
    if size != bytes.len() as u64 {
        return Err(format!("sized {size} bytes, encoded {}", bytes.len()));
    }
    bincode::deserialize(&bytes).map_err(|e| format!("decoding: {e}"))
}

/// `value` survives bincode (in a vector, as timely sends it) and JSON, and its JSON is
/// `expected`.
fn check<T>(name: &str, value: &T, expected: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let batch = vec![value.clone(), value.clone()];
    match through_bincode(&batch) {
        Ok(back) => assert_eq!(back, batch, "{name}: changed through bincode"),
        Err(e) => panic!("{name}: does not survive bincode: {e}"),
    }
    let json = serde_json::to_string(value).unwrap();
    assert_eq!(json, expected, "{name}: its JSON changed");
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value, "{name}: changed through JSON");
}

fn raw() -> RawRecord {
    RawRecord {
        source: "feed".to_owned(),
        location: "data/v.csv:12".to_owned(),
        sequence: 11,
        format: RawFormat::VitalsCsv,
        header: Some(vec!["time".to_owned(), "hr".to_owned()]),
        context: None,
        bytes: b"2026-01-01T00:00:00Z,80".to_vec(),
        arrival_us: 1_767_225_600_000_001,
    }
}

fn patient() -> PatientRecord {
    PatientRecord {
        patient_id: "P1".to_owned(),
        mrn: Some("MRN-1".to_owned()),
        ssn: None,
        identifiers: vec![Identifier::new(IdClass::HealthPlan, "HP-9")],
        given: vec!["Ada".to_owned()],
        family: Some("Lovelace".to_owned()),
        birth_date: Some(date(1935, 12, 10)),
        deceased: None,
        gender: Some(Gender::Female),
        addresses: vec![Address {
            lines: vec!["1 Main St".to_owned()],
            city: Some("Springfield".to_owned()),
            state: Some("IL".to_owned()),
            postal_code: Some("62701".to_owned()),
            country: None,
            district: None,
        }],
        phones: vec!["555-0100".to_owned()],
        emails: Vec::new(),
        faxes: Vec::new(),
        urls: Vec::new(),
        ip_addresses: Vec::new(),
        photos: 1,
        contacts: vec![Contact {
            names: vec!["Bob".to_owned()],
            addresses: Vec::new(),
            telecom: Vec::new(),
        }],
        notes: Vec::new(),
        recorded_at: at("2026-01-01T00:00:00Z"),
    }
}

fn quantity() -> VitalRecord {
    VitalRecord {
        source_id: Some("obs-1".to_owned()),
        patient_id: "P1".to_owned(),
        kind: VitalKind::BodyTemperature,
        // 98.42 °F: its shortest decimal is long.
        value: VitalValue::Quantity {
            value: (98.42 - 32.0) * 5.0 / 9.0,
        },
        effective: at("2026-01-01T08:30:00Z"),
        device: None,
        notes: vec!["after a walk".to_owned()],
        mentioned: vec!["Ada".to_owned()],
    }
}

fn pressure() -> VitalRecord {
    VitalRecord {
        source_id: None,
        patient_id: "P2".to_owned(),
        kind: VitalKind::BloodPressure,
        value: VitalValue::BloodPressure {
            systolic: 120.0,
            diastolic: 80.5,
        },
        effective: at("2026-01-01T09:00:00.250Z"),
        device: Some("DEV-7".to_owned()),
        notes: Vec::new(),
        mentioned: Vec::new(),
    }
}

fn encounter() -> EncounterRecord {
    EncounterRecord {
        source_id: Some("V1".to_owned()),
        patient_id: "P1".to_owned(),
        event: EncounterEvent::Transfer,
        class: "I".to_owned(),
        start: Some(at("2026-01-01T00:00:00Z")),
        end: None,
        ward: Some("ICU".to_owned()),
        room: Some("12".to_owned()),
        bed: None,
        recorded_at: at("2026-01-01T01:00:00Z"),
    }
}

fn ingested(n: u32, record: ClinicalRecord) -> Ingested {
    Ingested {
        source: "feed".to_owned(),
        location: format!("generator#{n}"),
        sequence: (7, n),
        record,
        arrival_us: 1_767_225_600_000_000,
    }
}

fn deid_vital(value: VitalValue) -> DeidVital {
    DeidVital {
        id: "obs".to_owned(),
        pseudonym: "ab12".to_owned(),
        kind: VitalKind::HeartRate,
        value,
        effective: at("2026-01-01T08:30:00Z"),
        device: Some(DeidIdentifier {
            class: IdClass::Device,
            value: "0f".to_owned(),
            hashed: true,
        }),
        notes: Vec::new(),
    }
}

fn row(tombstone: bool) -> Row {
    Row {
        values: vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(0.1 + 0.2),
            Value::str("P1"),
            Value::Timestamp(1_767_225_600_123),
        ],
        sequence: 42,
        tombstone,
        arrival_us: 0,
    }
}

fn metadata(causation: Option<&str>, trace: Option<&str>) -> EventMetadata {
    EventMetadata {
        event_id: "e1".to_owned(),
        event_type: "DataIngestionFinished".to_owned(),
        event_source: "vitalflow.ingest".to_owned(),
        correlation_id: "c1".to_owned(),
        causation_id: causation.map(str::to_owned),
        timestamp: at("2026-01-01T00:00:01Z"),
        version: "1.0".to_owned(),
        trace_id: trace.map(str::to_owned),
    }
}

fn domain_event(detail: serde_json::Value, causation: Option<&str>) -> DomainEvent {
    Envelope {
        metadata: metadata(causation, None),
        payload: StageReport {
            job: "quickstart".to_owned(),
            run_id: "r1".to_owned(),
            stage: "ingest".to_owned(),
            batch: 3,
            counts: Counts {
                records_in: 10,
                records_out: 9,
                rejected: 1,
            },
            outputs: vec!["canonical/Observation/x.parquet".to_owned()],
            detail,
            files: Vec::new(),
        },
    }
}

fn alert(full: bool) -> AlertEvent {
    let mut sub_scores = BTreeMap::new();
    if full {
        sub_scores.insert("pulse".to_owned(), 3);
        sub_scores.insert("spo2".to_owned(), 0);
    }
    AlertEvent {
        metadata: metadata(Some("obs-1"), full.then_some("t1")),
        payload: AlertPayload {
            alert_id: "a1".to_owned(),
            rule: "news2".to_owned(),
            patient: "ab12".to_owned(),
            ward: full.then(|| "ICU".to_owned()),
            level: "medium".to_owned(),
            previous_level: "none".to_owned(),
            score: full.then_some(5),
            sub_scores,
            spo2_scale: full.then_some(1),
            missing: if full {
                vec!["consciousness".to_owned()]
            } else {
                Vec::new()
            },
            stale: Vec::new(),
            condition: (!full).then(|| "hr > 120".to_owned()),
            observations: vec!["feed#1".to_owned()],
            event_time: at("2026-01-01T08:30:00Z"),
            raised_at: at("2026-01-01T08:30:00Z"),
            emitted_at: at("2026-01-01T08:30:00.5Z"),
            latency_ms: full.then_some(1.25),
            parameter: None,
            value: None,
            unit: None,
            threshold: None,
            direction: None,
            severity: None,
            detected_at: None,
        },
    }
}

fn audit() -> AuditRecord {
    AuditRecord {
        sequence: 4,
        recorded_at: at("2026-01-01T00:00:02Z"),
        event: domain_event(serde_json::json!({"name:redact": 2}), None),
        chain: vitalflow_model::envelope::ChainScheme::HmacSha256,
        prev_hash: "0".repeat(64),
        hash: "ff".repeat(32),
    }
}

fn dead_letter() -> DeadLetter {
    DeadLetter {
        stage: "ingest".to_owned(),
        source: "feed".to_owned(),
        location: "data/v.csv:3".to_owned(),
        format: RawFormat::Csv,
        reason: "`hr`: not a number".to_owned(),
        bytes: b"x,y".to_vec(),
    }
}

fn deid_patient() -> DeidPatient {
    DeidPatient {
        pseudonym: "ab12".to_owned(),
        birth_year: None,
        age_group: Some("90 or older".to_owned()),
        deceased_year: None,
        deceased: false,
        gender: Some(Gender::Other),
        state: Some("IL".to_owned()),
        zip3: Some("627".to_owned()),
        country: None,
        recorded_at: at("2026-01-01T00:00:00Z"),
        identifiers: Vec::new(),
        kept: KeptPhi {
            names: vec![(Some("L".to_owned()), vec!["A".to_owned()])],
            birth_date: Some(date(1930, 1, 2)),
            telecom: vec![("phone".to_owned(), "555".to_owned())],
            ..KeptPhi::default()
        },
    }
}

fn deid_encounter() -> DeidEncounter {
    DeidEncounter {
        id: "enc".to_owned(),
        pseudonym: "ab12".to_owned(),
        event: EncounterEvent::Discharge,
        class: "E".to_owned(),
        start: None,
        end: Some(at("2026-01-02T00:00:00Z")),
        ward: None,
        recorded_at: at("2026-01-02T00:00:00Z"),
    }
}

#[test]
fn raw_records_and_dead_letters() {
    check(
        "RawRecord",
        &raw(),
        r#"{"source":"feed","location":"data/v.csv:12","sequence":11,"format":"vitals-csv","header":["time","hr"],"context":null,"bytes":[50,48,50,54,45,48,49,45,48,49,84,48,48,58,48,48,58,48,48,90,44,56,48],"arrival_us":1767225600000001}"#,
    );
    check(
        "DeadLetter",
        &dead_letter(),
        r#"{"stage":"ingest","source":"feed","location":"data/v.csv:3","format":"csv","reason":"`hr`: not a number","bytes":[120,44,121]}"#,
    );
}

#[test]
fn ingested_records_of_every_kind() {
    check(
        "Ingested patient",
        &ingested(0, ClinicalRecord::Patient(Box::new(patient()))),
        r#"{"source":"feed","location":"generator#0","sequence":[7,0],"record":{"Patient":{"patient_id":"P1","mrn":"MRN-1","ssn":null,"identifiers":[{"class":"health-plan","value":"HP-9"}],"given":["Ada"],"family":"Lovelace","birth_date":"1935-12-10","deceased":null,"gender":"female","addresses":[{"lines":["1 Main St"],"city":"Springfield","state":"IL","postal_code":"62701","country":null,"district":null}],"phones":["555-0100"],"emails":[],"faxes":[],"urls":[],"ip_addresses":[],"photos":1,"contacts":[{"names":["Bob"],"addresses":[],"telecom":[]}],"notes":[],"recorded_at":"2026-01-01T00:00:00Z"}},"arrival_us":1767225600000000}"#,
    );
    check(
        "Ingested quantity",
        &ingested(1, ClinicalRecord::Vital(quantity())),
        r#"{"source":"feed","location":"generator#1","sequence":[7,1],"record":{"Vital":{"source_id":"obs-1","patient_id":"P1","kind":"body-temperature","value":{"type":"quantity","value":36.900000000000006},"effective":"2026-01-01T08:30:00Z","device":null,"notes":["after a walk"],"mentioned":["Ada"]}},"arrival_us":1767225600000000}"#,
    );
    check(
        "Ingested blood pressure",
        &ingested(2, ClinicalRecord::Vital(pressure())),
        r#"{"source":"feed","location":"generator#2","sequence":[7,2],"record":{"Vital":{"source_id":null,"patient_id":"P2","kind":"blood-pressure","value":{"type":"blood-pressure","systolic":120.0,"diastolic":80.5},"effective":"2026-01-01T09:00:00.250Z","device":"DEV-7","notes":[],"mentioned":[]}},"arrival_us":1767225600000000}"#,
    );
    check(
        "Ingested encounter",
        &ingested(3, ClinicalRecord::Encounter(encounter())),
        r#"{"source":"feed","location":"generator#3","sequence":[7,3],"record":{"Encounter":{"source_id":"V1","patient_id":"P1","event":"transfer","class":"I","start":"2026-01-01T00:00:00Z","end":null,"ward":"ICU","room":"12","bed":null,"recorded_at":"2026-01-01T01:00:00Z"}},"arrival_us":1767225600000000}"#,
    );
}

#[test]
fn de_identified_records_of_every_kind() {
    check(
        "DeidRecord vital",
        &DeidRecord::Vital(deid_vital(VitalValue::Quantity { value: 72.0 })),
        r#"{"Vital":{"id":"obs","pseudonym":"ab12","kind":"heart-rate","value":{"type":"quantity","value":72.0},"effective":"2026-01-01T08:30:00Z","device":{"class":"device","value":"0f","hashed":true},"notes":[]}}"#,
    );
    check(
        "DeidRecord patient",
        &DeidRecord::Patient(deid_patient()),
        r#"{"Patient":{"pseudonym":"ab12","birth_year":null,"age_group":"90 or older","deceased_year":null,"deceased":false,"gender":"other","state":"IL","zip3":"627","country":null,"recorded_at":"2026-01-01T00:00:00Z","identifiers":[],"kept":{"names":[["L",["A"]]],"lines":[],"city":null,"district":null,"postal_code":null,"birth_date":"1930-01-02","telecom":[["phone","555"]]}}}"#,
    );
    check(
        "DeidRecord encounter",
        &DeidRecord::Encounter(deid_encounter()),
        r#"{"Encounter":{"id":"enc","pseudonym":"ab12","event":"discharge","class":"E","start":null,"end":"2026-01-02T00:00:00Z","ward":null,"recorded_at":"2026-01-02T00:00:00Z"}}"#,
    );
}

#[test]
fn rows_and_tombstones() {
    check(
        "Row",
        &row(false),
        r#"{"values":["Null",{"Bool":true},{"Int":-3},{"Float":0.30000000000000004},{"Str":"P1"},{"Timestamp":1767225600123}],"sequence":42,"arrival_us":0}"#,
    );
    check(
        "Row tombstone",
        &row(true),
        r#"{"values":["Null",{"Bool":true},{"Int":-3},{"Float":0.30000000000000004},{"Str":"P1"},{"Timestamp":1767225600123}],"sequence":42,"tombstone":true,"arrival_us":0}"#,
    );
    check(
        "keyed row",
        &(KeyValue(Value::str("P1")), 3u64),
        r#"[{"Str":"P1"},3]"#,
    );
}

/// A float JSON cannot hold (NaN, infinities) and one whose shortest decimal is long cross
/// processes bit for bit.
#[test]
fn row_floats_cross_bit_for_bit() {
    for f in [
        f64::NAN,
        f64::INFINITY,
        -0.0,
        1.0 / 3.0,
        f64::MIN_POSITIVE / 3.0,
    ] {
        let r = Row {
            values: vec![Value::Float(f), Value::Str(Arc::from("x"))],
            sequence: 1,
            tombstone: false,
            arrival_us: 9,
        };
        let back = through_bincode(&r).unwrap();
        let Some(Value::Float(g)) = back.values.first() else {
            panic!("{back:?}")
        };
        assert_eq!(g.to_bits(), f.to_bits(), "{f}");
    }
}

#[test]
fn domain_events_and_audit_records() {
    check(
        "DomainEvent",
        &domain_event(
            serde_json::json!({"name:redact": 2, "ratio": 0.1}),
            Some("c0"),
        ),
        r#"{"metadata":{"eventId":"e1","eventType":"DataIngestionFinished","eventSource":"vitalflow.ingest","correlationId":"c1","causationId":"c0","timestamp":"2026-01-01T00:00:01Z","version":"1.0"},"payload":{"job":"quickstart","runId":"r1","stage":"ingest","batch":3,"counts":{"recordsIn":10,"recordsOut":9,"rejected":1},"outputs":["canonical/Observation/x.parquet"],"detail":{"name:redact":2,"ratio":0.1}}}"#,
    );
    check(
        "DomainEvent without detail",
        &domain_event(serde_json::Value::Null, None),
        r#"{"metadata":{"eventId":"e1","eventType":"DataIngestionFinished","eventSource":"vitalflow.ingest","correlationId":"c1","timestamp":"2026-01-01T00:00:01Z","version":"1.0"},"payload":{"job":"quickstart","runId":"r1","stage":"ingest","batch":3,"counts":{"recordsIn":10,"recordsOut":9,"rejected":1},"outputs":["canonical/Observation/x.parquet"]}}"#,
    );
    check(
        "AuditRecord",
        &audit(),
        r#"{"sequence":4,"recordedAt":"2026-01-01T00:00:02Z","event":{"metadata":{"eventId":"e1","eventType":"DataIngestionFinished","eventSource":"vitalflow.ingest","correlationId":"c1","timestamp":"2026-01-01T00:00:01Z","version":"1.0"},"payload":{"job":"quickstart","runId":"r1","stage":"ingest","batch":3,"counts":{"recordsIn":10,"recordsOut":9,"rejected":1},"outputs":["canonical/Observation/x.parquet"],"detail":{"name:redact":2}}},"chain":"hmac-sha256","prevHash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"}"#,
    );
}

/// Every JSON value a stage's detail may hold crosses as it was: numbers of each kind, nested
/// arrays and objects (keys in their order), the empty ones.
#[test]
fn details_of_every_json_shape() {
    let detail = serde_json::json!({
        "z": [1, -2, 2.5, u64::MAX, i64::MIN, 1e300, null, true, "é", [], {}],
        "a": {"nested": {"deep": [false]}},
        "empty": ""
    });
    let event = domain_event(detail.clone(), None);
    let back = through_bincode(&event).unwrap();
    assert_eq!(back, event);
    assert_eq!(
        serde_json::to_string(&back.payload.detail).unwrap(),
        serde_json::to_string(&detail).unwrap()
    );
}

#[test]
fn alert_events() {
    check(
        "AlertEvent NEWS2",
        &alert(true),
        r#"{"metadata":{"eventId":"e1","eventType":"DataIngestionFinished","eventSource":"vitalflow.ingest","correlationId":"c1","causationId":"obs-1","timestamp":"2026-01-01T00:00:01Z","version":"1.0","traceId":"t1"},"payload":{"alertId":"a1","rule":"news2","patient":"ab12","ward":"ICU","level":"medium","previousLevel":"none","score":5,"subScores":{"pulse":3,"spo2":0},"spo2Scale":1,"missing":["consciousness"],"observations":["feed#1"],"eventTime":"2026-01-01T08:30:00Z","raisedAt":"2026-01-01T08:30:00Z","emittedAt":"2026-01-01T08:30:00.500Z","latencyMs":1.25}}"#,
    );
    check(
        "AlertEvent rule",
        &alert(false),
        r#"{"metadata":{"eventId":"e1","eventType":"DataIngestionFinished","eventSource":"vitalflow.ingest","correlationId":"c1","causationId":"obs-1","timestamp":"2026-01-01T00:00:01Z","version":"1.0"},"payload":{"alertId":"a1","rule":"news2","patient":"ab12","level":"medium","previousLevel":"none","condition":"hr > 120","observations":["feed#1"],"eventTime":"2026-01-01T08:30:00Z","raisedAt":"2026-01-01T08:30:00Z","emittedAt":"2026-01-01T08:30:00.500Z"}}"#,
    );
    let mut critical = alert(false);
    let p = &mut critical.payload;
    p.parameter = Some("potassium".to_owned());
    p.value = Some(6.8);
    p.unit = Some("mmol/L".to_owned());
    p.threshold = Some(6.0);
    p.direction = Some("high".to_owned());
    p.severity = Some("critical".to_owned());
    p.detected_at = Some(at("2026-01-01T08:30:00.5Z"));
    check(
        "AlertEvent critical value",
        &critical,
        r#"{"metadata":{"eventId":"e1","eventType":"DataIngestionFinished","eventSource":"vitalflow.ingest","correlationId":"c1","causationId":"obs-1","timestamp":"2026-01-01T00:00:01Z","version":"1.0"},"payload":{"alertId":"a1","rule":"news2","patient":"ab12","level":"medium","previousLevel":"none","condition":"hr > 120","observations":["feed#1"],"eventTime":"2026-01-01T08:30:00Z","raisedAt":"2026-01-01T08:30:00Z","emittedAt":"2026-01-01T08:30:00.500Z","parameter":"potassium","value":6.8,"unit":"mmol/L","threshold":6.0,"direction":"high","severity":"critical","detectedAt":"2026-01-01T08:30:00.500Z"}}"#,
    );
}
