#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use vitalflow_model::RawFormat;
use vitalflow_model::clinical::{ClinicalRecord, EncounterEvent, Gender, IdClass, Ingested};
use vitalflow_model::lab::{LabStatus, LabValue};
use vitalflow_model::vitals::{VitalKind, VitalValue};

use super::message::{Message, text};
use super::{CodeTarget, dtm};
use crate::ingest::{IngestOptions, ingest_with};
use crate::test_support::{STAGE, XorShift, raw, run, sample_dir};

const ADT_A01: &str = "MSH|^~\\&|ADT|HOSP|VF|HUB|20260301101500+0100||ADT^A01^ADT_A01|CTL0001|P|2.5.1\r\
EVN|A01|20260301101400+0100\r\
PID|1||P0000001^^^HOSP^PI~MRN0000001^^^HOSP^MR~123-45-6789^^^SSA^SS~HP777^^^PLAN^MB||Doe^Jane^Q||19480312|F|||12 Elm St^Apt 3^Springfield^MA^02139^USA^H^^Middlesex||(555)555-0142^PRN^PH~^NET^Internet^jane@example.org~^NET^Internet^https://jane.example.org|^WPN^FX^^^555^5550199||||AC0001|987-65-4321|DL12345^MA\r\
NK1|1|Doe^John|SPO|12 Elm St^^Springfield^MA^02139|(555)555-0143\r\
PV1|1|I|ICU^101^A^HOSP||||||||||||||||V0000042|||||||||||||||||||||||||20260301100000+0100\r\
ZPI|1|10.0.0.1|custom\r";

fn hl7(text: &str) -> vitalflow_model::RawRecord {
    raw(RawFormat::Hl7v2, text.as_bytes().to_vec())
}

fn with(opts: &IngestOptions, text: &str) -> (Vec<Ingested>, Vec<vitalflow_model::DeadLetter>) {
    let (mut ok, mut dead) = (Vec::new(), Vec::new());
    ingest_with(&hl7(text), STAGE, opts, &mut ok, &mut dead);
    (ok, dead)
}

fn reasons(dead: &[vitalflow_model::DeadLetter]) -> Vec<&str> {
    dead.iter().map(|d| d.reason.as_str()).collect()
}

#[test]
fn delimiters_come_from_msh_and_escapes_decode() {
    let t = "MSH#:*@%#A#B\rPID#1##P1:x:y%sub*P2##Smith@T@Jones:Ann@F@\\@X41@\r";
    let m = Message::parse(t).unwrap();
    assert_eq!(
        (
            m.delimiters.field,
            m.delimiters.component,
            m.delimiters.repetition
        ),
        ('#', ':', '*')
    );
    assert_eq!(
        (m.delimiters.escape, m.delimiters.subcomponent),
        (Some('@'), Some('%'))
    );
    let pid = m.segment("PID").unwrap();
    assert_eq!(m.repetitions(pid, 3).len(), 2);
    assert_eq!(m.get(pid, 3, 2), "x");
    assert_eq!(m.decode(m.part(m.repetitions(pid, 3)[0], 3, 2)), "sub");
    assert_eq!(m.get(pid, 5, 1), "Smith%Jones");
    assert_eq!(m.get(pid, 5, 2), "Ann#\\A");
    assert_eq!(m.get(m.segment("MSH").unwrap(), 3, 1), "A");

    let m = Message::parse(
        "MSH|^~\\&|\rNTE|1||a\\F\\b\\S\\c\\R\\d\\E\\e\\.br\\f\\H\\g\\N\\ \\Xc3a9\\ \\Q\\ end\\",
    )
    .unwrap();
    let nte = m.segment("NTE").unwrap();
    assert_eq!(
        m.decode(nte.field(3)),
        "a|b^c~d\\e\nfg é \\Q\\ end\\",
        "unknown and unterminated escapes stay as they are"
    );
}

#[test]
fn framing_and_line_endings_are_tolerated() {
    let framed = format!("\u{b}{}\u{1c}\r", ADT_A01.replace('\r', "\r\n"));
    assert_eq!(
        text(framed.as_bytes()).lines().next(),
        ADT_A01.split('\r').next()
    );
    let (ok, dead) = run(&hl7(&framed));
    assert!(dead.is_empty(), "{:?}", reasons(&dead));
    assert_eq!(ok.len(), 2);
    // ISO 8859-1 bytes do not stop the parser.
    let mut latin1 = ADT_A01.as_bytes().to_vec();
    let at = latin1.windows(3).position(|w| w == b"Elm").unwrap();
    latin1[at] = 0xC9;
    let (ok, _) = run(&raw(RawFormat::Hl7v2, latin1));
    let ClinicalRecord::Patient(p) = &ok[0].record else {
        panic!()
    };
    assert_eq!(p.addresses[0].lines[0], "12 \u{c9}lm St");
}

#[test]
fn adt_a01_maps_patient_and_encounter() {
    let (ok, dead) = run(&hl7(ADT_A01));
    assert!(dead.is_empty(), "{:?}", reasons(&dead));
    let ClinicalRecord::Patient(p) = &ok[0].record else {
        panic!("{ok:?}")
    };
    assert_eq!(p.patient_id, "P0000001");
    assert_eq!(p.mrn.as_deref(), Some("MRN0000001"));
    assert_eq!(p.ssn.as_deref(), Some("123-45-6789"));
    assert_eq!(
        (p.family.as_deref(), p.given.clone()),
        (Some("Doe"), vec!["Jane".to_owned(), "Q".to_owned()])
    );
    assert_eq!(p.birth_date.unwrap().to_string(), "1948-03-12");
    assert_eq!(p.gender, Some(Gender::Female));
    let a = &p.addresses[0];
    assert_eq!(a.lines, vec!["12 Elm St".to_owned(), "Apt 3".to_owned()]);
    assert_eq!(
        (
            a.city.as_deref(),
            a.state.as_deref(),
            a.postal_code.as_deref(),
            a.district.as_deref()
        ),
        (
            Some("Springfield"),
            Some("MA"),
            Some("02139"),
            Some("Middlesex")
        )
    );
    assert_eq!(p.phones, vec!["(555)555-0142".to_owned()]);
    assert_eq!(p.emails, vec!["jane@example.org".to_owned()]);
    assert_eq!(p.urls, vec!["https://jane.example.org".to_owned()]);
    assert_eq!(p.faxes, vec!["(555)5550199".to_owned()]);
    let classes: Vec<(IdClass, &str)> = p
        .identifiers
        .iter()
        .map(|i| (i.class, i.value.as_str()))
        .collect();
    for expected in [
        (IdClass::HealthPlan, "HP777"),
        (IdClass::Account, "AC0001"),
        (IdClass::Ssn, "987-65-4321"),
        (IdClass::Licence, "DL12345"),
        (IdClass::Other, "V0000042"),
    ] {
        assert!(classes.contains(&expected), "{expected:?} in {classes:?}");
    }
    assert_eq!(p.contacts.len(), 1, "the next of kin");
    assert_eq!(
        p.contacts[0].names,
        vec!["Doe".to_owned(), "John".to_owned()]
    );
    assert_eq!(
        p.recorded_at,
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 14, 0).unwrap()
    );

    let ClinicalRecord::Encounter(e) = &ok[1].record else {
        panic!("{ok:?}")
    };
    assert_eq!(e.event, EncounterEvent::Admit);
    assert_eq!((e.class.as_str(), e.ward.as_deref()), ("I", Some("ICU")));
    assert_eq!(
        (e.room.as_deref(), e.bed.as_deref()),
        (Some("101"), Some("A"))
    );
    assert_eq!(e.source_id.as_deref(), Some("V0000042"));
    assert_eq!(
        e.start,
        Some(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap())
    );
    assert_eq!((e.end, e.patient_id.as_str()), (None, "P0000001"));
}

#[test]
fn discharge_transfer_register_and_update() {
    for (trigger, event) in [
        ("A02", EncounterEvent::Transfer),
        ("A03", EncounterEvent::Discharge),
        ("A04", EncounterEvent::Register),
        ("A08", EncounterEvent::Update),
    ] {
        let t = ADT_A01.replace("ADT^A01^ADT_A01", &format!("ADT^{trigger}"));
        let (ok, dead) = run(&hl7(&t));
        assert!(dead.is_empty(), "{trigger}: {:?}", reasons(&dead));
        let ClinicalRecord::Encounter(e) = &ok[1].record else {
            panic!()
        };
        assert_eq!(e.event, event);
        // A discharge without PV1-45 ends when the event was recorded.
        assert_eq!(e.end.is_some(), trigger == "A03", "{trigger}");
    }
}

#[test]
fn other_messages_and_versions_dead_letter_with_reasons() {
    let cases = [
        (
            ADT_A01.replace("ADT^A01^ADT_A01", "ADT^A05^ADT_A05"),
            "MSH-9: message type ADT^A05 is not converted",
        ),
        (
            ADT_A01.replace("ADT^A01^ADT_A01", "SIU^S12"),
            "MSH-9: message type SIU^S12",
        ),
        (
            ADT_A01.replace("|2.5.1\r", "|2.2\r"),
            "MSH-12: version `2.2` is not supported (2.3 to 2.8)",
        ),
        (
            ADT_A01.replace("|2.5.1\r", "|2.9\r"),
            "MSH-12: version `2.9`",
        ),
        (
            ADT_A01.replace("PID|", "XXX|"),
            "ADT^A01 PID: segment missing",
        ),
        (
            ADT_A01.replace("19480312", "1948-03-12"),
            "ADT^A01 PID-7: not an HL7 date-time",
        ),
        (
            "PID|1\r".to_owned(),
            "MSH: the message does not start with an MSH segment",
        ),
        (
            "MSH|\r".to_owned(),
            "MSH-2: encoding characters missing or invalid",
        ),
        ("\u{b}\u{1c}\r".to_owned(), "empty message"),
    ];
    for (text, reason) in cases {
        let (ok, dead) = run(&hl7(&text));
        assert!(ok.is_empty(), "{reason}");
        assert_eq!(dead.len(), 1, "{reason}");
        assert!(
            dead[0].reason.contains(reason),
            "{} vs {reason}",
            dead[0].reason
        );
        assert!(!dead[0].reason.contains("Doe"), "no values in reasons");
    }
    for version in ["2.3", "2.3.1", "2.4", "2.5", "2.6", "2.7.1", "2.8", "2.8.2"] {
        let (ok, _) = run(&hl7(&ADT_A01.replace("|2.5.1\r", &format!("|{version}\r"))));
        assert_eq!(ok.len(), 2, "{version}");
    }
    // Without PV1, which the structure requires, none of the message is taken.
    let (ok, dead) = run(&hl7(&ADT_A01.replace("PV1|", "ZV1|")));
    assert_eq!(
        (ok.len(), reasons(&dead)),
        (
            0,
            vec!["ADT^A01 PV1: segment missing (required; the message may have been cut short)"]
        )
    );
}

#[test]
fn messages_cut_short_are_dead_lettered_whole() {
    // Cut inside PID, at every byte: never a patient, always one dead letter.
    let pid = ADT_A01.find("PID|").unwrap();
    let pv1 = ADT_A01.find("PV1|").unwrap();
    for cut in pid + 4..pv1 {
        let (ok, dead) = run(&hl7(&ADT_A01[..cut]));
        assert!(ok.is_empty(), "cut at {cut}: {ok:?}");
        assert_eq!(dead.len(), 1, "cut at {cut}");
        assert!(
            dead[0].reason.starts_with("ADT^A01 PV1: segment missing")
                || dead[0]
                    .reason
                    .starts_with("ADT^A01 PID: the message ends inside"),
            "cut at {cut}: {}",
            dead[0].reason
        );
    }
    // Cut inside the last OBX, before its result status: the whole message goes, as a value
    // may have lost digits (`72` read as `7`).
    let full = "MSH|^~\\&|MON|ICU|VF|HUB|20260301120000||ORU^R01|C3|P|2.5.1\r\
                PID|1||P0000001^^^HOSP^PI||Doe^Jane\r\
                OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F\r\
                OBX|2|NM|8867-4^Heart rate^LN||72|/min|||||F";
    let (ok, dead) = run(&hl7(full));
    assert_eq!((ok.len(), dead.len()), (2, 0), "{dead:?}");
    let cut = full.rfind("||72").unwrap() + 3;
    let (ok, dead) = run(&hl7(&full[..cut]));
    assert!(ok.is_empty(), "{ok:?}");
    assert_eq!(
        reasons(&dead),
        [
            "ORU^R01 OBX: the message ends inside this segment, before OBX-11 (required), with no \
          segment terminator: it was cut short"
        ]
    );
    // A short last segment with its terminator is a message as its producer wrote it; without
    // one, it was cut.
    let short = &full[..full.rfind("/min").unwrap() + 4];
    let (ok, dead) = run(&hl7(&format!("{short}\r")));
    assert_eq!((ok.len(), dead.len()), (2, 0), "{dead:?}");
    let (ok, dead) = run(&hl7(short));
    assert_eq!((ok.len(), dead.len()), (0, 1), "{ok:?}");
    // An MLLP frame without its end block.
    let (ok, dead) = run(&hl7(&format!("\u{b}{ADT_A01}")));
    assert!(ok.is_empty(), "{ok:?}");
    assert_eq!(
        reasons(&dead),
        ["MLLP: the frame has no end block (0x1C): the message was cut short"]
    );
    let (ok, _) = run(&hl7(&format!("\u{b}{ADT_A01}\u{1c}\r")));
    assert_eq!(ok.len(), 2);
}

const ORU: &str = "MSH|^~\\&|MON|ICU|VF|HUB|20260301120000||ORU^R01^ORU_R01|CTL0002|P|2.5.1\r\
PID|1||P0000001^^^HOSP^PI||Doe^Jane||19480312|F|||||(555)555-0142\r\
OBR|1|||85353-1^Vital signs^LN|||20260301115500\r\
OBX|1|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F|||20260301115900||||DEV-9\r\
NTE|1||Jane Doe called from (555)555-0142\r\
OBX|2|NM|8480-6^Systolic^LN|1|121|mm[Hg]|||||F\r\
OBX|3|NM|8462-4^Diastolic^LN|1|79|mmHg|||||F\r\
OBX|4|NM|HR^Pulse^99LOCAL||66|beats per minute|||||F\r\
OBX|5|NM|8310-5^Temp^LN||98.6|[degF]|||||P\r\
OBX|6|ST|625-4^Culture^LN||positive||||||F\r\
OBX|7|NM|8867-4^Heart rate^LN||abc|/min|||||F\r\
OBX|8|NM|59408-5^SpO2^LN||97|%|||||F\r\
ZXX|whatever\r";

#[test]
fn oru_obx_become_vitals_and_the_rest_dead_letters() {
    let mut opts = IngestOptions::default();
    let (ok, dead) = with(&opts, ORU);
    let vitals: Vec<_> = ok
        .iter()
        .filter_map(|i| match &i.record {
            ClinicalRecord::Vital(v) => Some(v),
            _ => None,
        })
        .collect();
    let labs: Vec<_> = ok
        .iter()
        .filter_map(|i| match &i.record {
            ClinicalRecord::Lab(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(ok.len(), vitals.len() + labs.len());
    // The culture is a laboratory result with a text value.
    assert_eq!(labs.len(), 1);
    assert_eq!(labs[0].code, "625-4");
    assert_eq!(labs[0].value, LabValue::Text("positive".to_owned()));
    assert_eq!(labs[0].status, LabStatus::Final);
    assert!(labs[0].mentioned.contains(&"Jane".to_owned()));
    assert_eq!(
        vitals.iter().map(|v| v.kind).collect::<Vec<_>>(),
        vec![
            VitalKind::HeartRate,
            VitalKind::BloodPressure,
            VitalKind::Spo2
        ]
    );
    let hr = vitals[0];
    assert_eq!(hr.value, VitalValue::Quantity { value: 72.0 });
    assert_eq!(
        hr.effective,
        Utc.with_ymd_and_hms(2026, 3, 1, 11, 59, 0).unwrap()
    );
    assert_eq!(hr.device.as_deref(), Some("DEV-9"));
    assert_eq!(
        hr.notes,
        vec!["Jane Doe called from (555)555-0142".to_owned()]
    );
    assert!(
        hr.mentioned.contains(&"Jane".to_owned())
            && hr.mentioned.contains(&"(555)555-0142".to_owned())
    );
    assert_eq!(hr.source_id.as_deref(), Some("CTL0002/1"));
    assert_eq!(
        vitals[1].value,
        VitalValue::BloodPressure {
            systolic: 121.0,
            diastolic: 79.0
        }
    );
    assert_eq!(
        vitals[1].effective,
        Utc.with_ymd_and_hms(2026, 3, 1, 11, 55, 0).unwrap(),
        "OBR-7"
    );
    assert_eq!(
        reasons(&dead),
        vec![
            "ORU^R01 OBX[4]-3: code `HR` (system `99LOCAL`) is neither a vital sign nor a LOINC code: a laboratory result needs a LOINC code",
            "ORU^R01 OBX[5]-11: result status `P` is not final",
            "ORU^R01 OBX[7]-5: value missing or not a number",
        ]
    );

    // The local code, mapped, with a local unit spelling.
    opts.codes = [(
        "99LOCAL^HR".to_owned(),
        CodeTarget::parse("heart-rate").unwrap(),
    )]
    .into();
    let (ok, dead) = with(&opts, ORU);
    assert_eq!(ok.len(), 4, "{:?}", reasons(&dead));
    assert!(reasons(&dead)[0].contains("OBX[4]-6: unit `beats per minute`"));
    opts.units = [("beats per minute".to_owned(), "/min".to_owned())].into();
    let (ok, _) = with(&opts, ORU);
    assert_eq!(ok.len(), 5);
    // An unpaired blood-pressure half is named.
    let (_, dead) = run(&hl7(
        &ORU.replace("OBX|3|NM|8462-4^Diastolic^LN|1|79|mmHg|||||F\r", "")
    ));
    assert!(
        reasons(&dead)
            .iter()
            .any(|r| r.contains("systolic (8480-6) without its diastolic"))
    );
}

#[test]
fn hl7_times() {
    let at = |s| dtm(s).unwrap().unwrap().to_rfc3339();
    assert_eq!(at("2026"), "2026-01-01T00:00:00+00:00");
    assert_eq!(at("202603011015"), "2026-03-01T10:15:00+00:00");
    assert_eq!(
        at("20260301101530.25-0500"),
        "2026-03-01T15:15:30.250+00:00"
    );
    assert_eq!(dtm(""), Ok(None));
    for bad in [
        "20261301",
        "2026030",
        "20260301+05",
        "abc",
        "20260301+9900",
        "-0500",
    ] {
        assert!(dtm(bad).is_err(), "{bad}");
    }
}

#[test]
fn no_input_makes_it_panic_or_go_silent() {
    // Every prefix and random byte flips of two messages: each accepts or dead-letters.
    let mut rng = XorShift(0x5eed);
    for base in [ADT_A01, ORU] {
        for end in 0..=base.len() {
            let (ok, dead) = run(&hl7(&base[..end]));
            assert!(!ok.is_empty() || !dead.is_empty(), "prefix {end} vanished");
        }
        for _ in 0..2000 {
            let mut bytes = base.as_bytes().to_vec();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.bytes(1)[0];
            }
            let (ok, dead) = run(&raw(RawFormat::Hl7v2, bytes));
            assert!(!ok.is_empty() || !dead.is_empty());
        }
    }
}

#[test]
fn every_sample_message_converts_or_dead_letters() {
    let Some(dir) = sample_dir("hl7v2") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 139);
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let (mut converted, mut records) = (0, 0);
    for f in &files {
        let (ok, dead) = run(&raw(RawFormat::Hl7v2, std::fs::read(f).unwrap()));
        assert!(!ok.is_empty() || !dead.is_empty(), "{}", f.display());
        let msh = String::from_utf8_lossy(&std::fs::read(f).unwrap())
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches('\u{feff}')
            .to_owned();
        let message_type = msh.split('|').nth(8).unwrap_or_default().to_owned();
        let convertible = [
            "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A08", "ORU^R01",
        ]
        .iter()
        .any(|t| message_type.starts_with(t));
        if !ok.is_empty() {
            converted += 1;
            records += ok.len();
            assert!(convertible, "{} ({message_type}) converted", f.display());
        } else if !convertible {
            assert!(dead[0].reason.starts_with("MSH-9"), "{}", dead[0].reason);
        }
        if convertible && ok.len() < 2 {
            eprintln!(
                "{}: {} record(s), {:?}",
                f.display(),
                ok.len(),
                reasons(&dead)
            );
        }
        for d in &dead {
            // The reason up to its colon, without the OBX number.
            let head = d.reason.split(':').next().unwrap_or_default();
            let key = match (head.find('['), head.find(']')) {
                (Some(a), Some(b)) if a < b => format!("{}{}", &head[..a], &head[b + 1..]),
                _ => head.to_owned(),
            };
            *by_outcome.entry(key).or_default() += 1;
        }
    }
    eprintln!(
        "HL7 v2 sample: {} files, {converted} converted into {records} records; dead letters by reason: {by_outcome:?}",
        files.len()
    );
    assert!(converted >= 10, "{converted}");
}

/// Issue 37: every OBX of the ORU^R01 samples becomes a record (a vital sign or a laboratory
/// result) or a dead letter whose reason names its OBX and says why, never "not a vital sign".
#[test]
fn issue_37_every_oru_sample_obx_is_accounted_for() {
    let Some(dir) = sample_dir("hl7v2") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains("|ORU^R01"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    let (mut total, mut converted, mut dead_obx) = (0, 0, 0);
    let mut by_id: BTreeMap<String, Vec<LabStatus>> = BTreeMap::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes).replace('\n', "\r");
        let obx = text.split('\r').filter(|s| s.starts_with("OBX|")).count();
        let (ok, dead) = run(&raw(RawFormat::Hl7v2, bytes));
        let mut indices = std::collections::BTreeSet::new();
        for d in &dead {
            assert!(!d.reason.contains("not a vital sign"), "{}", d.reason);
            let n: usize = d
                .reason
                .split_once("OBX[")
                .and_then(|(_, rest)| rest.split_once(']'))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or_else(|| panic!("{}: not about one OBX: {}", f.display(), d.reason));
            assert!(indices.insert(n), "OBX[{n}] dead-lettered twice");
            assert!((1..=obx).contains(&n));
        }
        for r in &ok {
            if let ClinicalRecord::Lab(l) = &r.record {
                assert!(vitalflow_model::lab::is_loinc_code(&l.code), "{}", l.code);
                by_id
                    .entry(l.source_id.clone().unwrap())
                    .or_default()
                    .push(l.status);
            }
        }
        eprintln!(
            "{}: {obx} OBX, {} converted, {} dead-lettered: {:?}",
            f.file_name().unwrap().to_string_lossy(),
            ok.len(),
            dead.len(),
            reasons(&dead)
        );
        assert_eq!(ok.len() + dead.len(), obx, "{}", f.display());
        total += obx;
        converted += ok.len();
        dead_obx += dead.len();
    }
    eprintln!("{total} OBX: {converted} converted, {dead_obx} dead-lettered");
    assert_eq!(total, 54);
    assert_eq!(converted + dead_obx, total);
    // LAB-ORU-2 reports again the 8 results of LAB-ORU-1 (7 of them preliminary there, now
    // final): same identities, so the later result replaces the earlier one.
    let twice = by_id.values().filter(|s| s.len() == 2).count();
    let superseded = by_id
        .values()
        .filter(|s| s.contains(&LabStatus::Preliminary) && s.contains(&LabStatus::Final))
        .count();
    assert_eq!((twice, superseded), (8, 7), "{by_id:?}");
}
