//! HL7 v2.x messages ([`vitalflow_model::RawFormat::Hl7v2`]), versions 2.3 to 2.8.
//!
//! A raw record is one message: segments end at `\r` (or `\n`, `\r\n`); MLLP framing (`0x0B` …
//! `0x1C 0x0D`) is removed. The delimiters come from MSH-1 and MSH-2; escape sequences are
//! decoded (see [`message::Message::decode`]); Z-segments and segments the mapping does not read
//! are tolerated and ignored.
//!
//! # Mapping
//!
//! * `ADT^A01` (admit), `A02` (transfer), `A03` (discharge), `A04` (register), `A08` (update)
//!   → a [`PatientRecord`] from PID (and NK1, GT1, IN1, IN2, which name relatives, guarantors and
//!   insured persons), then an [`EncounterRecord`] from PV1 and EVN.
//! * `ORU^R01` → one [`VitalRecord`] per OBX whose code is a vital sign: a LOINC code (system
//!   `LN`) of a [`VitalKind`], or a local code mapped in the ingest node's `codes`. Systolic
//!   (8480-6) and diastolic (8462-4) results with the same OBX-4 sub-id make one blood-pressure
//!   panel. The value (OBX-5, numeric) is normalized from its unit (OBX-6, UCUM or a usual
//!   spelling, or one mapped in `units`) to the kind's UCUM unit; the time is OBX-14, else OBR-7,
//!   else MSH-7; OBX-18 is the device; NTE segments after an OBX are its notes.
//!   Every other OBX with a LOINC code is a laboratory result ([`LabRecord`], see [`lab`]).
//! * Every other message type, every vital-sign OBX that is not final or not numeric, and every
//!   OBX that is neither a vital sign nor a laboratory result (no LOINC code, a value type that
//!   is not converted, no result yet) is dead-lettered with a reason naming the message type,
//!   segment and field.
//!
//! Times without a UTC offset are read as UTC.
//!
//! # Messages cut short
//!
//! A truncated message is dead-lettered whole, never converted in part. It is told by an MLLP
//! start block (`0x0B`) without an end block (`0x1C`); for the ADT events, a missing PV1 (which
//! each of their structures requires, and which a message cut inside PID lacks); for `ORU^R01`,
//! no OBX; and a last segment that has no terminator and ends before the last field HL7
//! requires of it (EVN-2, PID-5, PV1-2, OBR-4, OBX-11). A message cut after those fields of its
//! last segment looks like a complete one whose producer left out the final terminator (many
//! do) and is read as it is.

mod lab;
pub mod message;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use vitalflow_model::clinical::{
    Address, ClinicalRecord, Contact, EncounterEvent, EncounterRecord, Gender, IdClass, Identifier,
    LabRecord, PatientRecord, VitalRecord,
};
use vitalflow_model::vitals::{DIASTOLIC_LOINC, SYSTOLIC_LOINC, VitalKind, VitalValue};

use self::message::{Message, Segment};
use super::{DECEASED_DATE_UNKNOWN, IngestOptions, Sink, Telecom, safe_code, unit_reason};

/// The fields where a segment names a person other than the patient (relatives, guarantors,
/// insured persons): Safe Harbor counts their identifiers as the patient's.
struct PersonFields {
    segment: &'static str,
    names: &'static [usize],
    addresses: &'static [usize],
    telecom: &'static [usize],
    ids: &'static [usize],
}

const PERSONS: [PersonFields; 4] = [
    PersonFields {
        segment: "NK1",
        names: &[2, 30],
        addresses: &[4, 32],
        telecom: &[5, 6, 31, 40, 41],
        ids: &[12, 33, 37],
    },
    PersonFields {
        segment: "GT1",
        names: &[3],
        addresses: &[5],
        telecom: &[6, 7],
        ids: &[2, 12],
    },
    PersonFields {
        segment: "IN1",
        names: &[16],
        addresses: &[19],
        telecom: &[],
        ids: &[],
    },
    PersonFields {
        segment: "IN2",
        names: &[7],
        addresses: &[],
        telecom: &[63, 64],
        ids: &[],
    },
];

/// What an OBX code stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeTarget {
    /// A vital sign.
    Vital(VitalKind),
    /// The systolic half of a blood-pressure panel.
    Systolic,
    /// The diastolic half of a blood-pressure panel.
    Diastolic,
}

impl CodeTarget {
    /// The target of a LOINC code, or of a vital-sign name (`heart-rate`, ...).
    #[must_use]
    pub fn parse(code: &str) -> Option<Self> {
        let code = code.trim();
        match code {
            SYSTOLIC_LOINC => Some(Self::Systolic),
            DIASTOLIC_LOINC => Some(Self::Diastolic),
            _ => VitalKind::from_loinc(code)
                .or_else(|| VitalKind::from_name(code))
                .map(Self::Vital),
        }
    }
}

/// The versions accepted in MSH-12.
fn supported_version(v: &str) -> bool {
    let mut parts = v.split('.');
    let (Some("2"), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    matches!(minor, "3" | "4" | "5" | "6" | "7" | "8")
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The last field HL7 requires of a segment the mapping reads, for the truncation check.
fn last_required_field(segment: &str) -> Option<usize> {
    match segment {
        "EVN" | "PV1" => Some(2),
        "OBR" => Some(4),
        "PID" => Some(5),
        "OBX" => Some(11),
        _ => None,
    }
}

/// Whether the message's last segment ends with a terminator (`\r` or `\n`), before an MLLP
/// end block and trailing blanks.
fn terminated(bytes: &[u8]) -> bool {
    let b = bytes
        .iter()
        .rposition(|&x| x == 0x1C)
        .map_or(bytes, |end| &bytes[..end]);
    let blank = b
        .iter()
        .rev()
        .take_while(|&&x| x == b' ' || x == b'\t')
        .count();
    matches!(b[..b.len() - blank].last(), Some(b'\r' | b'\n'))
}

/// Parses the raw record as one HL7 v2 message.
pub(crate) fn parse(sink: &mut Sink<'_>, opts: &IngestOptions) {
    let raw = sink.raw;
    if raw.bytes.trim_ascii_start().first() == Some(&0x0B) && !raw.bytes.contains(&0x1C) {
        return sink
            .reject_raw("MLLP: the frame has no end block (0x1C): the message was cut short");
    }
    let text = message::text(&raw.bytes);
    let msg = match Message::parse(&text) {
        Ok(m) => m,
        Err(e) => return sink.reject_raw(e.to_string()),
    };
    let Some(msh) = msg.segments.first() else {
        return sink.reject_raw("MSH: segment missing");
    };
    let version = msg.get(msh, 12, 1);
    if version.is_empty() {
        return sink.reject_raw("MSH-12: version missing");
    }
    if !supported_version(&version) {
        return sink.reject_raw(format!(
            "MSH-12: version `{}` is not supported (2.3 to 2.8)",
            safe_code(&version)
        ));
    }
    let (code, trigger) = (msg.get(msh, 9, 1), msg.get(msh, 9, 2));
    let kind = format!("{}^{}", safe_code(&code), safe_code(&trigger));
    let message_time = match dtm(&msg.get(msh, 7, 1)) {
        Ok(t) => t,
        Err(()) => return sink.reject_raw(format!("{kind} MSH-7: not an HL7 date-time")),
    };
    let event = match (code.as_ref(), trigger.as_ref()) {
        ("ADT", "A01") => Some(EncounterEvent::Admit),
        ("ADT", "A02") => Some(EncounterEvent::Transfer),
        ("ADT", "A03") => Some(EncounterEvent::Discharge),
        ("ADT", "A04") => Some(EncounterEvent::Register),
        ("ADT", "A08") => Some(EncounterEvent::Update),
        ("ORU", "R01") => None,
        _ => {
            return sink.reject_raw(format!(
                "MSH-9: message type {kind} is not converted (ADT^A01, ADT^A02, ADT^A03, \
                 ADT^A04, ADT^A08 and ORU^R01 are)"
            ));
        }
    };
    if !terminated(&raw.bytes)
        && let Some(last) = msg.segments.last()
        && let Some(n) = last_required_field(last.id)
        && last.len() < n
    {
        return sink.reject_raw(format!(
            "{kind} {id}: the message ends inside this segment, before {id}-{n} (required), \
             with no segment terminator: it was cut short",
            id = last.id
        ));
    }
    let mut m = Mapper {
        msg: &msg,
        kind: &kind,
        message_time,
    };
    match event {
        Some(event) => m.adt(sink, event),
        None => m.oru(sink, opts),
    }
}

struct Mapper<'m, 'a> {
    msg: &'m Message<'a>,
    /// `ADT^A01`, ... for reasons.
    kind: &'m str,
    message_time: Option<DateTime<Utc>>,
}

type Reason = String;

impl<'a> Mapper<'_, 'a> {
    fn get(&self, seg: &Segment<'a>, field: usize, component: usize) -> Cow<'a, str> {
        self.msg.get(seg, field, component)
    }

    /// A date-time field, with a reason naming it when it is not one.
    fn time(&self, seg: &Segment<'a>, field: usize) -> Result<Option<DateTime<Utc>>, Reason> {
        dtm(&self.get(seg, field, 1))
            .map_err(|()| format!("{} {}-{field}: not an HL7 date-time", self.kind, seg.id))
    }

    fn adt(&mut self, sink: &mut Sink<'_>, event: EncounterEvent) {
        let msg = self.msg;
        let Some(pid) = msg.segment("PID") else {
            return sink.reject_raw(format!("{} PID: segment missing", self.kind));
        };
        // Every converted ADT structure requires PV1: a message without one is incomplete
        // (often cut short inside PID), and none of it is taken.
        let Some(pv1) = msg.segment("PV1") else {
            return sink.reject_raw(format!(
                "{} PV1: segment missing (required; the message may have been cut short)",
                self.kind
            ));
        };
        let evn = msg.segment("EVN");
        let recorded = match evn.map(|e| self.time(e, 2)).transpose() {
            Ok(t) => t.flatten().or(self.message_time),
            Err(reason) => return sink.reject_raw(reason),
        };
        let Some(recorded_at) = recorded else {
            return sink.reject_raw(format!(
                "{} EVN-2 and MSH-7: no date-time the event was recorded",
                self.kind
            ));
        };
        let patient = match self.patient(pid, recorded_at) {
            Ok(p) => p,
            Err(reason) => return sink.reject_raw(reason),
        };
        let encounter = self.encounter(pv1, evn, &patient.patient_id, event, recorded_at);
        sink.accept(0, ClinicalRecord::Patient(Box::new(patient)));
        match encounter {
            Ok(e) => sink.accept(1, ClinicalRecord::Encounter(e)),
            Err(reason) => sink.reject_raw(reason),
        }
    }

    /// The source patient id: PID-3's first identifier, else PID-2 (HL7 2.3's external id).
    fn patient_id(&self, pid: &Segment<'a>) -> Result<String, Reason> {
        let id = self.get(pid, 3, 1);
        let id = if id.is_empty() {
            self.get(pid, 2, 1)
        } else {
            id
        };
        if id.is_empty() {
            return Err(format!(
                "{} PID-3: patient identifier list is empty",
                self.kind
            ));
        }
        Ok(id.into_owned())
    }

    fn patient(
        &self,
        pid: &Segment<'a>,
        recorded_at: DateTime<Utc>,
    ) -> Result<PatientRecord, Reason> {
        let msg = self.msg;
        let patient_id = self.patient_id(pid)?;
        let (mut mrn, mut ssn, mut identifiers) = (None, None, Vec::new());
        for (i, rep) in msg.repetitions(pid, 3).into_iter().enumerate() {
            let value = msg.decode(msg.part(rep, 1, 0));
            if i == 0 || value.is_empty() {
                continue; // the first one is the patient id, pseudonymized
            }
            let class = IdClass::from_v2_type(&msg.decode(msg.part(rep, 5, 0)));
            match class {
                IdClass::Mrn if mrn.is_none() => mrn = Some(value.into_owned()),
                IdClass::Ssn if ssn.is_none() => ssn = Some(value.into_owned()),
                _ => identifiers.push(Identifier::new(class, value)),
            }
        }
        let pid_ssn = self.get(pid, 19, 1);
        if !pid_ssn.is_empty() {
            if ssn.is_none() {
                ssn = Some(pid_ssn.into_owned());
            } else {
                identifiers.push(Identifier::new(IdClass::Ssn, pid_ssn));
            }
        }
        let mut push = |class, seg: &Segment<'a>, field| {
            for rep in msg.repetitions(seg, field) {
                let value = msg.decode(msg.part(rep, 1, 0));
                if !value.is_empty() {
                    identifiers.push(Identifier::new(class, value));
                }
            }
        };
        if !self.get(pid, 3, 1).is_empty() {
            push(IdClass::Other, pid, 2);
        }
        push(IdClass::Other, pid, 4);
        push(IdClass::Account, pid, 18);
        push(IdClass::Licence, pid, 20);
        push(IdClass::Other, pid, 21);
        if let Some(pv1) = msg.segment("PV1") {
            push(IdClass::Other, pv1, 19);
            push(IdClass::Other, pv1, 50);
        }
        for in1 in msg.segments.iter().filter(|s| s.id == "IN1") {
            push(IdClass::HealthPlan, in1, 36);
            push(IdClass::HealthPlan, in1, 49);
        }
        for in2 in msg.segments.iter().filter(|s| s.id == "IN2") {
            push(IdClass::Other, in2, 1);
            push(IdClass::Ssn, in2, 2);
            push(IdClass::HealthPlan, in2, 8);
        }

        let mut names = msg.repetitions(pid, 5).into_iter().map(|r| self.name(r));
        let (family, given) = names.next().unwrap_or_default();
        let mut contacts = Vec::new();
        let other_names: Vec<String> = names
            .chain(msg.repetitions(pid, 6).into_iter().map(|r| self.name(r)))
            .chain(msg.repetitions(pid, 9).into_iter().map(|r| self.name(r)))
            .flat_map(|(f, g)| f.into_iter().chain(g))
            .collect();
        if !other_names.is_empty() {
            contacts.push(Contact {
                names: other_names,
                ..Contact::default()
            });
        }
        let birth_text = self.get(pid, 7, 1);
        let birth_date = match dtm(&birth_text) {
            Ok(t) => t.map(|t| t.date_naive()),
            // Some feeds append junk to a birth date: its first 8 digits are still the date.
            Err(()) => Some(
                date_only(&birth_text)
                    .ok_or_else(|| format!("{} PID-7: not an HL7 date-time", self.kind))?,
            ),
        };
        let death = self.time(pid, 29)?.map(|t| t.date_naive());
        let deceased = death.or_else(|| {
            (self.get(pid, 30, 1).eq_ignore_ascii_case("Y")).then_some(DECEASED_DATE_UNKNOWN)
        });
        let gender = match self.get(pid, 8, 1).as_ref() {
            "A" => Some(Gender::Other),
            "N" => Some(Gender::Unknown),
            s => Gender::parse(s),
        };
        let mut addresses = self.addresses(pid, 11);
        if let Some(a) = addresses.first_mut()
            && a.district.is_none()
        {
            let county = self.get(pid, 12, 1);
            a.district = (!county.is_empty()).then(|| county.into_owned());
        }
        let mut telecom = Telecom::default();
        for field in [13, 14, 40] {
            for rep in msg.repetitions(pid, field) {
                add_xtn(&mut telecom, msg, rep);
            }
        }
        for seg in &msg.segments {
            let Some(person) = PERSONS.iter().find(|p| p.segment == seg.id) else {
                continue;
            };
            let mut c = Contact::default();
            for &field in person.names {
                for rep in msg.repetitions(seg, field) {
                    let (f, g) = self.name(rep);
                    c.names.extend(f.into_iter().chain(g));
                }
            }
            for &field in person.addresses {
                c.addresses.extend(self.addresses(seg, field));
            }
            let mut t = Telecom::default();
            for &field in person.telecom {
                for rep in msg.repetitions(seg, field) {
                    add_xtn(&mut t, msg, rep);
                }
            }
            c.telecom = t.all();
            for &field in person.ids {
                for rep in msg.repetitions(seg, field) {
                    let value = msg.decode(msg.part(rep, 1, 0));
                    if !value.is_empty() {
                        identifiers.push(Identifier::new(IdClass::Other, value));
                    }
                }
            }
            if c != Contact::default() {
                contacts.push(c);
            }
        }
        let photos = msg
            .segments
            .iter()
            .filter(|s| s.id == "OBX" && is_image(msg, s))
            .count();
        let notes = msg
            .segments
            .iter()
            .filter(|s| s.id == "NTE")
            .map(|s| self.text(s, 3))
            .filter(|t| !t.is_empty())
            .collect();
        Ok(PatientRecord {
            patient_id,
            mrn,
            ssn,
            identifiers,
            given,
            family,
            birth_date,
            deceased,
            gender,
            addresses,
            phones: telecom.phones,
            emails: telecom.emails,
            faxes: telecom.faxes,
            urls: telecom.urls,
            ip_addresses: Vec::new(),
            photos: u32::try_from(photos).unwrap_or(u32::MAX),
            contacts,
            notes,
            recorded_at,
        })
    }

    /// An XPN/XCN repetition: (family, [given, middle]).
    fn name(&self, rep: &'a str) -> (Option<String>, Vec<String>) {
        let msg = self.msg;
        let family = msg.decode(msg.part(rep, 1, 1));
        let given = [2, 3]
            .into_iter()
            .map(|c| msg.decode(msg.part(rep, c, 0)))
            .filter(|s| !s.is_empty())
            .map(Cow::into_owned)
            .collect();
        ((!family.is_empty()).then(|| family.into_owned()), given)
    }

    /// The XAD repetitions of a field.
    fn addresses(&self, seg: &Segment<'a>, field: usize) -> Vec<Address> {
        let msg = self.msg;
        let mut out = Vec::new();
        for rep in msg.repetitions(seg, field) {
            let c = |n| {
                let s = msg.decode(msg.part(rep, n, 0));
                (!s.is_empty()).then(|| s.into_owned())
            };
            let street = msg.decode(msg.part(rep, 1, 1));
            let address = Address {
                lines: [Some(street.into_owned()), c(2)]
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect(),
                city: c(3),
                state: c(4),
                postal_code: c(5),
                country: c(6),
                district: c(9),
            };
            if address != Address::default() {
                out.push(address);
            }
        }
        out
    }

    /// A text field's repetitions, decoded and joined by line breaks.
    fn text(&self, seg: &Segment<'a>, field: usize) -> String {
        let msg = self.msg;
        msg.repetitions(seg, field)
            .into_iter()
            .map(|r| msg.decode(r))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn encounter(
        &self,
        pv1: &Segment<'a>,
        evn: Option<&Segment<'a>>,
        patient_id: &str,
        event: EncounterEvent,
        recorded_at: DateTime<Utc>,
    ) -> Result<EncounterRecord, Reason> {
        let start = self.time(pv1, 44)?;
        let mut end = self.time(pv1, 45)?;
        if event == EncounterEvent::Discharge && end.is_none() {
            end = match evn {
                Some(e) => self.time(e, 6)?,
                None => None,
            }
            .or(Some(recorded_at));
        }
        let visit = self.get(pv1, 19, 1);
        let class = self.get(pv1, 2, 1);
        // PV1-3: point of care ^ room ^ bed.
        let location = self.msg.repetitions(pv1, 3).first().copied().unwrap_or("");
        let part = |component| {
            let text = self.msg.decode(self.msg.part(location, component, 1));
            (!text.is_empty()).then(|| text.into_owned())
        };
        let (ward, room, bed) = (part(1), part(2), part(3));
        Ok(EncounterRecord {
            source_id: (!visit.is_empty()).then(|| visit.into_owned()),
            patient_id: patient_id.to_owned(),
            event,
            class: if class.is_empty() {
                "U".to_owned()
            } else {
                class.into_owned()
            },
            start,
            end,
            ward,
            room,
            bed,
            recorded_at,
        })
    }

    fn oru(&mut self, sink: &mut Sink<'_>, opts: &IngestOptions) {
        let msg = self.msg;
        let control_id = msg
            .segments
            .first()
            .map(|msh| self.get(msh, 10, 1).into_owned())
            .unwrap_or_default();
        let mut out = Oru::default();
        let mut patient: Option<String> = None;
        // The PID of the results that follow, and its identifying values, made only for notes.
        let mut pid: Option<&Segment<'a>> = None;
        let mut mentions: Option<Vec<String>> = None;
        let mut obr_time = None;
        let mut obr: Option<&Segment<'a>> = None;
        let mut obx_n = 0usize;
        // The record the NTE segments that follow belong to: an index into `out.vitals`, or a
        // pending blood-pressure half.
        let mut notes_to: Option<NotesTo> = None;
        for seg in &msg.segments {
            match seg.id {
                "PID" => {
                    notes_to = None;
                    match self.patient_id(seg) {
                        Ok(id) => {
                            (pid, mentions) = (Some(seg), None);
                            patient = Some(id);
                        }
                        Err(reason) => {
                            (pid, mentions) = (None, None);
                            patient = None;
                            out.rejects.push(reason);
                        }
                    }
                }
                "OBR" => {
                    notes_to = None;
                    obr = Some(seg);
                    obr_time = match self.time(seg, 7) {
                        Ok(t) => t,
                        Err(reason) => {
                            out.rejects.push(reason);
                            None
                        }
                    };
                }
                "OBX" => {
                    obx_n += 1;
                    notes_to = None;
                    let Some(patient_id) = &patient else {
                        out.rejects.push(format!(
                            "{} OBX[{obx_n}]: no PID segment before it",
                            self.kind
                        ));
                        continue;
                    };
                    let target = match self.vital_target(seg, obx_n, opts) {
                        Ok(Some(target)) => target,
                        Ok(None) => {
                            match self.lab(seg, obx_n, obr, obr_time, patient_id, &control_id, opts)
                            {
                                Ok(record) => {
                                    out.labs.push(record);
                                    notes_to = Some(NotesTo::Lab(out.labs.len() - 1));
                                    if let Some(LabRecord {
                                        value: vitalflow_model::lab::LabValue::Text(_),
                                        mentioned,
                                        ..
                                    }) = out.labs.last_mut()
                                    {
                                        *mentioned = self.mentioned(pid, &mut mentions).to_vec();
                                    }
                                }
                                Err(reason) => out.rejects.push(reason),
                            }
                            continue;
                        }
                        Err(reason) => {
                            out.rejects.push(reason);
                            continue;
                        }
                    };
                    match self.obx(seg, obx_n, target, obr_time, opts) {
                        Ok((target, value, effective)) => {
                            let record = VitalRecord {
                                source_id: Some(format!("{control_id}/{obx_n}")),
                                patient_id: patient_id.clone(),
                                kind: VitalKind::BloodPressure,
                                value: VitalValue::Quantity { value },
                                effective,
                                device: Some(self.get(seg, 18, 1).into_owned())
                                    .filter(|d| !d.is_empty()),
                                notes: Vec::new(),
                                mentioned: Vec::new(),
                            };
                            notes_to = Some(out.add(target, record, self.get(seg, 4, 1)));
                        }
                        Err(reason) => out.rejects.push(reason),
                    }
                }
                "NTE" => {
                    if let Some(to) = notes_to {
                        let text = self.text(seg, 3);
                        if !text.is_empty() {
                            let values = self.mentioned(pid, &mut mentions);
                            out.note(to, text, values);
                        }
                    }
                }
                _ => {}
            }
        }
        if obx_n == 0 {
            return sink.reject_raw(format!("{}: no OBX segment", self.kind));
        }
        for (half, _) in out.pending.values() {
            let which = match half {
                Half::Systolic(_) => "systolic (8480-6) without its diastolic (8462-4)",
                Half::Diastolic(_) => "diastolic (8462-4) without its systolic (8480-6)",
            };
            out.rejects.push(format!(
                "{} OBX: {which} result with the same OBX-4 sub-id",
                self.kind
            ));
        }
        let vitals = out.vitals.into_iter().map(ClinicalRecord::Vital);
        let labs = out
            .labs
            .into_iter()
            .map(|l| ClinicalRecord::Lab(Box::new(l)));
        for (index, record) in (0u32..).zip(vitals.chain(labs)) {
            sink.accept(index, record);
        }
        for reason in out.rejects {
            sink.reject_raw(reason);
        }
    }

    /// The identifying values of the message's patient (PID), made once, for the free-text
    /// scrubber.
    fn mentioned<'v>(
        &self,
        pid: Option<&Segment<'a>>,
        cache: &'v mut Option<Vec<String>>,
    ) -> &'v [String] {
        cache.get_or_insert_with(|| {
            pid.and_then(|p| self.patient(p, self.message_time.unwrap_or_default()).ok())
                .map(|p| super::identifying_values(&p))
                .unwrap_or_default()
        })
    }

    /// What an OBX's code stands for when it is a vital sign (or a code mapped in `codes`);
    /// `None` when it is not one.
    fn vital_target(
        &self,
        seg: &Segment<'a>,
        n: usize,
        opts: &IngestOptions,
    ) -> Result<Option<CodeTarget>, Reason> {
        let at = format!("{} OBX[{n}]", self.kind);
        let code = self.get(seg, 3, 1);
        let system = self.get(seg, 3, 3);
        let alt_code = self.get(seg, 3, 4);
        let alt_system = self.get(seg, 3, 6);
        let is_loinc = |s: &str| s.eq_ignore_ascii_case("LN") || s.eq_ignore_ascii_case("LOINC");
        let lookup = |system: &str, code: &str| -> Option<CodeTarget> {
            if code.is_empty() {
                return None;
            }
            opts.codes
                .get(&format!("{system}^{code}"))
                .or_else(|| opts.codes.get(code))
                .copied()
                .or_else(|| is_loinc(system).then(|| CodeTarget::parse(code)).flatten())
        };
        if code.is_empty() && alt_code.is_empty() {
            return Err(format!("{at}-3: observation code missing"));
        }
        Ok(lookup(&system, &code).or_else(|| lookup(&alt_system, &alt_code)))
    }

    /// One vital-sign OBX of `target`: its target, value in the target's unit, and time.
    fn obx(
        &self,
        seg: &Segment<'a>,
        n: usize,
        target: CodeTarget,
        obr_time: Option<DateTime<Utc>>,
        opts: &IngestOptions,
    ) -> Result<(CodeTarget, f64, DateTime<Utc>), Reason> {
        let msg = self.msg;
        let at = format!("{} OBX[{n}]", self.kind);
        let status = self.get(seg, 11, 1);
        if !matches!(status.as_ref(), "" | "F" | "C" | "A" | "U") {
            return Err(format!(
                "{at}-11: result status `{}` is not final",
                safe_code(&status)
            ));
        }
        let value_type = self.get(seg, 2, 1);
        if !matches!(value_type.as_ref(), "NM" | "SN" | "ST" | "") {
            return Err(format!(
                "{at}-2: value type `{}` is not numeric",
                safe_code(&value_type)
            ));
        }
        let reps = msg.repetitions(seg, 5);
        let raw = reps.first().copied().unwrap_or("");
        let value_text = if value_type == "SN" {
            // Structured numeric: comparator^number; only an exact value (no comparator) is used.
            if !msg.decode(msg.part(raw, 1, 0)).is_empty() {
                return Err(format!("{at}-5: a structured numeric with a comparator"));
            }
            msg.decode(msg.part(raw, 2, 0))
        } else {
            msg.decode(raw)
        };
        let value: f64 = value_text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("{at}-5: value missing or not a number"))?;
        let mut unit = self.get(seg, 6, 1);
        if unit.is_empty() {
            unit = self.get(seg, 6, 2);
        }
        let unit = opts
            .units
            .get(unit.as_ref())
            .map_or(unit.as_ref(), String::as_str);
        let kind = match target {
            CodeTarget::Vital(kind) => kind,
            CodeTarget::Systolic | CodeTarget::Diastolic => VitalKind::BloodPressure,
        };
        let value = kind
            .normalize(value, unit)
            .map_err(|e| unit_reason(&format!("{at}-6"), &e))?;
        let effective = self
            .time(seg, 14)?
            .or(obr_time)
            .or(self.message_time)
            .ok_or_else(|| format!("{at}-14, OBR-7 and MSH-7: no observation date-time"))?;
        Ok((target, value, effective))
    }
}

/// Where the NTE segments after an OBX go.
#[derive(Clone, Copy, Debug)]
enum NotesTo {
    Vital(usize),
    Lab(usize),
    Pending(usize),
}

#[derive(Debug)]
enum Half {
    Systolic(f64),
    Diastolic(f64),
}

/// The records of an ORU being built.
#[derive(Default)]
struct Oru {
    vitals: Vec<VitalRecord>,
    labs: Vec<LabRecord>,
    /// Blood-pressure halves waiting for their pair, by (patient, OBX-4 sub-id, time), with the
    /// record they will complete (numbered for the notes).
    pending: BTreeMap<(String, String, DateTime<Utc>), (Half, VitalRecord)>,
    pending_ids: Vec<(String, String, DateTime<Utc>)>,
    rejects: Vec<String>,
}

impl Oru {
    fn add(
        &mut self,
        target: CodeTarget,
        mut record: VitalRecord,
        sub_id: Cow<'_, str>,
    ) -> NotesTo {
        let value = match record.value {
            VitalValue::Quantity { value } => value,
            VitalValue::BloodPressure { systolic, .. } => systolic,
        };
        let half = match target {
            CodeTarget::Vital(kind) => {
                record.kind = kind;
                self.vitals.push(record);
                return NotesTo::Vital(self.vitals.len() - 1);
            }
            CodeTarget::Systolic => Half::Systolic(value),
            CodeTarget::Diastolic => Half::Diastolic(value),
        };
        let key = (
            record.patient_id.clone(),
            sub_id.into_owned(),
            record.effective,
        );
        match (self.pending.remove(&key), half) {
            (Some((Half::Systolic(systolic), mut first)), Half::Diastolic(diastolic))
            | (Some((Half::Diastolic(diastolic), mut first)), Half::Systolic(systolic)) => {
                first.value = VitalValue::BloodPressure {
                    systolic,
                    diastolic,
                };
                first.kind = VitalKind::BloodPressure;
                first.notes.append(&mut record.notes);
                if first.mentioned.is_empty() {
                    first.mentioned = record.mentioned;
                }
                self.vitals.push(first);
                NotesTo::Vital(self.vitals.len() - 1)
            }
            (previous, half) => {
                // A first half, or a second of the same side (the later one wins).
                record.notes = previous.map(|(_, r)| r.notes).unwrap_or_default();
                self.pending.insert(key.clone(), (half, record));
                self.pending_ids.push(key);
                NotesTo::Pending(self.pending_ids.len() - 1)
            }
        }
    }

    /// Adds a note to a record, with the identifying values of its message for the scrubber.
    fn note(&mut self, to: NotesTo, text: String, mentioned: &[String]) {
        if let NotesTo::Lab(i) = to {
            if let Some(l) = self.labs.get_mut(i) {
                l.notes.push(text);
                if l.mentioned.is_empty() {
                    l.mentioned = mentioned.to_vec();
                }
            }
            return;
        }
        let record = match to {
            NotesTo::Lab(_) => None,
            NotesTo::Vital(i) => self.vitals.get_mut(i),
            NotesTo::Pending(i) => self
                .pending_ids
                .get(i)
                .and_then(|key| self.pending.get_mut(key))
                .map(|(_, v)| v),
        };
        if let Some(v) = record {
            v.notes.push(text);
            if v.mentioned.is_empty() {
                v.mentioned = mentioned.to_vec();
            }
        }
    }
}

/// Files one XTN repetition: `[formatted]^use^equipment^email^country^area^local^ext…`.
fn add_xtn(t: &mut Telecom, msg: &Message<'_>, rep: &str) {
    let c = |n| msg.decode(msg.part(rep, n, 0));
    let (use_code, equipment, address) = (c(2), c(3), c(4));
    let number = {
        let formatted = c(1);
        if formatted.is_empty() {
            let (area, local, unformatted) = (c(6), c(7), c(12));
            if !local.is_empty() {
                if area.is_empty() {
                    local.into_owned()
                } else {
                    format!("({area}){local}")
                }
            } else {
                unformatted.into_owned()
            }
        } else {
            formatted.into_owned()
        }
    };
    let url_like = |s: &str| {
        let l = s.to_ascii_lowercase();
        l.starts_with("http://") || l.starts_with("https://") || l.starts_with("www.")
    };
    if !address.is_empty() {
        if url_like(&address) {
            t.urls.push(address.into_owned());
        } else {
            t.emails.push(address.into_owned());
        }
    }
    if number.is_empty() {
        return;
    }
    if equipment.eq_ignore_ascii_case("FX") {
        t.faxes.push(number);
    } else if url_like(&number) {
        t.urls.push(number);
    } else if number.contains('@') || use_code.eq_ignore_ascii_case("NET") {
        t.emails.push(number);
    } else {
        t.phones.push(number);
    }
}

/// Whether an OBX carries an image (value type ED or RP with an image type).
fn is_image(msg: &Message<'_>, obx: &Segment<'_>) -> bool {
    let value_type = msg.get(obx, 2, 1);
    let data_type = msg.get(obx, 5, 2);
    let subtype = msg.get(obx, 5, 3);
    matches!(value_type.as_ref(), "ED" | "RP")
        && (data_type.eq_ignore_ascii_case("IM")
            || data_type.eq_ignore_ascii_case("image")
            || ["JPEG", "PNG", "GIF", "TIFF", "BMP"]
                .iter()
                .any(|t| subtype.eq_ignore_ascii_case(t)))
}

/// An HL7 DTM/TS (`YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`): `Ok(None)` when empty, `Err` when
/// malformed. Missing parts are the start of the period; no offset is UTC.
fn dtm(s: &str) -> Result<Option<DateTime<Utc>>, ()> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let (body, offset) = match s.find(['+', '-']) {
        Some(at) => (&s[..at], Some(&s[at..])),
        None => (s, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        || fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(());
    }
    let num = |from: usize, to: usize, default: u32| -> u32 {
        digits
            .get(from..to)
            .and_then(|p| p.parse().ok())
            .unwrap_or(default)
    };
    let year = i32::try_from(num(0, 4, 0)).map_err(|_| ())?;
    let date = NaiveDate::from_ymd_opt(year, num(4, 6, 1), num(6, 8, 1)).ok_or(())?;
    let nanos = fraction.map_or(0, |f| {
        let f = &f[..f.len().min(9)];
        f.parse::<u32>().unwrap_or(0) * 10u32.pow(9 - u32::try_from(f.len()).unwrap_or(9))
    });
    let naive: NaiveDateTime = date
        .and_hms_nano_opt(num(8, 10, 0), num(10, 12, 0), num(12, 14, 0), nanos)
        .ok_or(())?;
    let offset_seconds = match offset {
        None => 0,
        Some(o) => {
            let (sign, hhmm) = o.split_at(1);
            if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let h: i32 = hhmm[..2].parse().map_err(|_| ())?;
            let m: i32 = hhmm[2..].parse().map_err(|_| ())?;
            let secs = h * 3600 + m * 60;
            if sign == "-" { -secs } else { secs }
        }
    };
    let tz = FixedOffset::east_opt(offset_seconds).ok_or(())?;
    let local = tz.from_local_datetime(&naive).single().ok_or(())?;
    Ok(Some(local.with_timezone(&Utc)))
}

/// The `YYYYMMDD` date at the start of `s`.
fn date_only(s: &str) -> Option<NaiveDate> {
    let d = s.get(..8)?;
    NaiveDate::parse_from_str(d, "%Y%m%d").ok()
}
