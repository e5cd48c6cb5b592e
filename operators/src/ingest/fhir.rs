//! FHIR R4 JSON documents ([`vitalflow_model::RawFormat::Fhir`]).
//!
//! A document is a Bundle (every `entry[].resource` is parsed on its own; the index of the
//! entry is the record's index within the raw record) or a single resource.
//!
//! * `Patient` → [`PatientRecord`]: `id`, `name` (the official or first one), `birthDate`,
//!   `deceasedDateTime` / `deceasedBoolean`, `gender`, `address[]`, `telecom[]` (email, fax, url;
//!   phone, pager, sms and other → phones), `identifier[]` (system
//!   `http://hl7.org/fhir/sid/us-ssn` → SSN; otherwise classed by the first `type` code of HL7
//!   table 0203, see [`IdClass::from_v2_type`]), `photo[]` (counted, never kept), `contact[]`
//!   (names, telecom, address). `recorded_at` is `meta.lastUpdated`, else the Bundle's `timestamp` or
//!   `meta.lastUpdated`, else the latest clinical date-time in the Bundle, else the time of
//!   ingestion.
//! * `Observation` with a LOINC code of a [`VitalKind`] → [`VitalRecord`]: the patient from
//!   `subject.reference` (`Patient/<id>`, `urn:uuid:<id>` or an absolute `.../Patient/<id>`),
//!   `effectiveDateTime` (else `effectiveInstant`, `effectivePeriod.start`, `issued`), the value
//!   from `valueQuantity` (`code`, else `unit`) or, for blood pressure, from the `component`s
//!   8480-6 and 8462-4; values normalized to the kind's UCUM unit. `source_id` is the resource id;
//!   `note[].text` are free-text notes; `device.identifier.value` (else `device.display`) the
//!   device. Within a Bundle, a subject given as a Patient entry's `fullUrl` resolves to that
//!   Patient's id, and the identifying values of its Patients are listed in each Observation's
//!   `mentioned`, for the free-text scrubber.
//! * `Observation` of category `laboratory` whose LOINC code is not a vital sign →
//!   [`vitalflow_model::clinical::LabRecord`] (see [`lab`]).
//! * Other Observations and every other resource type are dead-lettered with a reason.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use vitalflow_model::clinical::{
    Address, ClinicalRecord, Contact, Gender, IdClass, Identifier, PatientRecord, VitalRecord,
};
use vitalflow_model::vitals::{DIASTOLIC_LOINC, SYSTOLIC_LOINC, VitalKind, VitalValue};

use super::json::{
    Obj, Reason, as_obj, get, obj_items, opt_arr, opt_bool, opt_obj, opt_text, req_f64, req_str,
    str_items, syntax_reason,
};
use super::{DECEASED_DATE_UNKNOWN, Sink, Telecom, safe_code, time};

mod lab;

/// The LOINC code system.
pub const LOINC_SYSTEM: &str = "http://loinc.org";
/// The code system of US social security numbers.
pub const SSN_SYSTEM: &str = "http://hl7.org/fhir/sid/us-ssn";

/// Parses the raw record as one FHIR document.
pub(crate) fn parse(sink: &mut Sink<'_>) {
    let root: Value = match serde_json::from_slice(&sink.raw().bytes) {
        Ok(v) => v,
        Err(e) => return sink.reject_raw(syntax_reason(&e)),
    };
    let Some(obj) = root.as_object() else {
        return sink.reject_raw("FHIR document: expected a JSON object");
    };
    if matches!(get(obj, "resourceType"), Some(Value::String(t)) if t == "Bundle") {
        return bundle(sink, obj);
    }
    match resource(obj, None) {
        Ok(record) => sink.accept(0, record),
        Err(reason) => sink.reject_raw(reason),
    }
}

fn bundle(sink: &mut Sink<'_>, obj: &Obj) {
    let entries = match opt_arr(obj, "Bundle", "entry") {
        Ok(e) if !e.is_empty() => e,
        Ok(_) => return sink.reject_raw("Bundle.entry: missing or empty"),
        Err(reason) => return sink.reject_raw(reason),
    };
    let fallback = bundle_time(obj, entries);
    let first = sink.ok.len();
    for (i, entry) in entries.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let resource_value = entry.as_object().and_then(|e| get(e, "resource"));
        let Some(res) = resource_value else {
            let bytes = serde_json::to_vec(entry).unwrap_or_default();
            sink.reject(format!("Bundle.entry[{i}].resource: missing"), bytes);
            continue;
        };
        let parsed =
            as_obj(res, &format!("Bundle.entry[{i}].resource")).and_then(|r| resource(r, fallback));
        match parsed {
            Ok(record) => sink.accept(index, record),
            Err(reason) => sink.reject(reason, serde_json::to_vec(res).unwrap_or_default()),
        }
    }
    resolve_full_urls(sink, entries, first);
    sink.mention_patients(first);
}

/// Points the records of a Bundle that reference a Patient by its entry's `fullUrl`
/// (`urn:uuid:…`) at that Patient's id, when the two differ.
fn resolve_full_urls(sink: &mut Sink<'_>, entries: &[Value], first: usize) {
    let by_url: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| {
            let r = e.get("resource")?;
            if r.get("resourceType")?.as_str()? != "Patient" {
                return None;
            }
            let url = patient_ref(e.get("fullUrl")?.as_str()?)
                .or_else(|| Some(e.get("fullUrl")?.as_str()?.trim().to_owned()))?;
            let id = r.get("id")?.as_str()?.trim().to_owned();
            (url != id).then_some((url, id))
        })
        .collect();
    if by_url.is_empty() {
        return;
    }
    for i in sink.ok.get_mut(first..).unwrap_or_default() {
        let patient_id = match &mut i.record {
            ClinicalRecord::Vital(v) => &mut v.patient_id,
            ClinicalRecord::Lab(l) => &mut l.patient_id,
            _ => continue,
        };
        if let Some((_, id)) = by_url.iter().find(|(url, _)| url == patient_id) {
            patient_id.clone_from(id);
        }
    }
}

/// The Bundle's own date, else the latest clinical date-time of its entries.
fn bundle_time(obj: &Obj, entries: &[Value]) -> Option<DateTime<Utc>> {
    let own = get(obj, "timestamp")
        .or_else(|| get(obj, "meta")?.get("lastUpdated"))
        .and_then(Value::as_str)
        .and_then(time::instant);
    if own.is_some() {
        return own;
    }
    let field = |r: &Value, path: &[&str]| -> Option<DateTime<Utc>> {
        let mut v = r;
        for key in path {
            v = v.get(key)?;
        }
        v.as_str().and_then(time::instant)
    };
    entries
        .iter()
        .filter_map(|e| e.get("resource"))
        .flat_map(|r| {
            [
                field(r, &["effectiveDateTime"]),
                field(r, &["effectivePeriod", "end"]),
                field(r, &["issued"]),
                field(r, &["period", "end"]),
                field(r, &["period", "start"]),
            ]
        })
        .flatten()
        .max()
}

fn resource(r: &Obj, fallback: Option<DateTime<Utc>>) -> Result<ClinicalRecord, Reason> {
    match req_str(r, "resource", "resourceType")
        .map_err(|_| "resourceType: missing or not a string".to_owned())?
    {
        "Patient" => patient(r, fallback).map(|p| ClinicalRecord::Patient(Box::new(p))),
        "Observation" if !is_vital(r) && lab::is_laboratory(r) => {
            lab::observation(r).map(|l| ClinicalRecord::Lab(Box::new(l)))
        }
        "Observation" => observation(r).map(ClinicalRecord::Vital),
        other => Err(format!(
            "resource type {} is not supported yet (supported: Patient, vital-signs and \
             laboratory Observation)",
            safe_code(other)
        )),
    }
}

fn patient(r: &Obj, fallback: Option<DateTime<Utc>>) -> Result<PatientRecord, Reason> {
    const P: &str = "Patient";
    let patient_id = req_str(r, P, "id")?.trim().to_owned();
    let names = obj_items(r, P, "name")?;
    let preferred = names
        .iter()
        .find(|(_, n)| {
            matches!(
                get(n, "use").and_then(Value::as_str),
                Some("official" | "usual")
            )
        })
        .or_else(|| names.first());
    let (mut given, mut family) = (Vec::new(), None);
    for (path, name) in &names {
        // Every name is validated; only the preferred one is kept.
        let g = str_items(name, path, "given")?;
        let f = opt_text(name, path, "family")?;
        let text = opt_text(name, path, "text")?;
        if preferred.is_some_and(|(p, _)| p == path) {
            given = g.into_iter().map(str::to_owned).collect();
            family = f.map(str::to_owned);
            if given.is_empty() && family.is_none() {
                given.extend(text.map(str::to_owned));
            }
        }
    }
    let birth_date = opt_text(r, P, "birthDate")?
        .map(|s| time::date(s).ok_or_else(|| "Patient.birthDate: not a FHIR date".to_owned()))
        .transpose()?;
    let deceased = match opt_text(r, P, "deceasedDateTime")? {
        Some(s) => Some(
            time::date_of_datetime(s)
                .ok_or_else(|| "Patient.deceasedDateTime: not a FHIR dateTime".to_owned())?,
        ),
        None => opt_bool(r, P, "deceasedBoolean")?
            .filter(|d| *d)
            .map(|_| DECEASED_DATE_UNKNOWN),
    };
    let gender = opt_text(r, P, "gender")?
        .map(|s| {
            Gender::parse(s)
                .ok_or_else(|| "Patient.gender: not an administrative gender code".to_owned())
        })
        .transpose()?;
    let mut addresses = Vec::new();
    for (path, a) in obj_items(r, P, "address")? {
        addresses.push(address(a, &path)?);
    }
    let mut t = Telecom::default();
    for (path, point) in obj_items(r, P, "telecom")? {
        add_contact_point(&mut t, point, &path)?;
    }
    let mut identifiers = Vec::new();
    let (mut mrn, mut ssn) = (None, None);
    for (path, id) in obj_items(r, P, "identifier")? {
        let system = opt_text(id, &path, "system")?;
        let mut type_codes = Vec::new();
        if let Some(ty) = opt_obj(id, &path, "type")? {
            for (cpath, coding) in obj_items(ty, &format!("{path}.type"), "coding")? {
                type_codes.extend(opt_text(coding, &cpath, "code")?);
            }
        }
        let Some(value) = opt_text(id, &path, "value")? else {
            continue;
        };
        let value = value.to_owned();
        let class = if system == Some(SSN_SYSTEM) {
            IdClass::Ssn
        } else {
            type_codes
                .first()
                .map_or(IdClass::Other, |c| IdClass::from_v2_type(c))
        };
        match class {
            IdClass::Ssn if ssn.is_none() => ssn = Some(value),
            IdClass::Mrn if mrn.is_none() => mrn = Some(value),
            _ => identifiers.push(Identifier::new(class, value)),
        }
    }
    let photos = u32::try_from(obj_items(r, P, "photo")?.len()).unwrap_or(u32::MAX);
    let mut contacts = Vec::new();
    for (path, c) in obj_items(r, P, "contact")? {
        let mut contact = Contact::default();
        if let Some(name) = opt_obj(c, &path, "name")? {
            let npath = format!("{path}.name");
            contact.names.extend(
                str_items(name, &npath, "given")?
                    .into_iter()
                    .chain(opt_text(name, &npath, "family")?)
                    .chain(opt_text(name, &npath, "text")?)
                    .map(str::to_owned),
            );
        }
        let mut ct = Telecom::default();
        for (tpath, point) in obj_items(c, &path, "telecom")? {
            add_contact_point(&mut ct, point, &tpath)?;
        }
        contact.telecom = ct.all();
        if let Some(a) = opt_obj(c, &path, "address")? {
            contact
                .addresses
                .push(address(a, &format!("{path}.address"))?);
        }
        contacts.push(contact);
    }
    let last_updated = match opt_obj(r, P, "meta")? {
        Some(meta) => opt_text(meta, "Patient.meta", "lastUpdated")?
            .map(|s| {
                time::instant(s)
                    .ok_or_else(|| "Patient.meta.lastUpdated: not a FHIR instant".to_owned())
            })
            .transpose()?,
        None => None,
    };
    let recorded_at = last_updated
        .or(fallback)
        .unwrap_or_else(|| Utc::now().trunc_subsecs(0));
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
        phones: t.phones,
        emails: t.emails,
        faxes: t.faxes,
        urls: t.urls,
        ip_addresses: Vec::new(),
        photos,
        contacts,
        notes: Vec::new(),
        recorded_at,
    })
}

/// An `Address`.
fn address(a: &Obj, path: &str) -> Result<Address, Reason> {
    let text = |key| Ok::<_, Reason>(opt_text(a, path, key)?.map(str::to_owned));
    Ok(Address {
        lines: str_items(a, path, "line")?
            .into_iter()
            .map(str::to_owned)
            .collect(),
        city: text("city")?,
        state: text("state")?,
        postal_code: text("postalCode")?,
        country: text("country")?,
        district: text("district")?,
    })
}

/// Files a `ContactPoint` by its `system`.
fn add_contact_point(t: &mut Telecom, point: &Obj, path: &str) -> Result<(), Reason> {
    let Some(value) = opt_text(point, path, "value")? else {
        return Ok(());
    };
    let list = match opt_text(point, path, "system")? {
        Some("email") => &mut t.emails,
        Some("fax") => &mut t.faxes,
        Some("url") => &mut t.urls,
        _ => &mut t.phones,
    };
    list.push(value.to_owned());
    Ok(())
}

/// Whether an Observation's code has a LOINC coding of a vital sign.
fn is_vital(r: &Obj) -> bool {
    opt_obj(r, "Observation", "code")
        .ok()
        .flatten()
        .and_then(|c| loinc_codes(c, "Observation.code").ok())
        .is_some_and(|codes| codes.iter().any(|c| VitalKind::from_loinc(c).is_some()))
}

fn observation(r: &Obj) -> Result<VitalRecord, Reason> {
    const O: &str = "Observation";
    if let Some(status) = opt_text(r, O, "status")?
        && matches!(status, "entered-in-error" | "cancelled")
    {
        return Err(format!(
            "Observation.status: {status} observations are not used"
        ));
    }
    let code = opt_obj(r, O, "code")?.ok_or_else(|| "Observation.code: missing".to_owned())?;
    let loinc = loinc_codes(code, "Observation.code")?;
    let kind = match loinc.iter().find_map(|c| VitalKind::from_loinc(c)) {
        Some(kind) => kind,
        None => {
            return Err(match loinc.first() {
                Some(c) => format!(
                    "Observation code {} is not a supported vital sign",
                    safe_code(c)
                ),
                None => "Observation.code: no LOINC coding".to_owned(),
            });
        }
    };
    let subject =
        opt_obj(r, O, "subject")?.ok_or_else(|| "Observation.subject: missing".to_owned())?;
    let patient_id = patient_ref(req_str(subject, "Observation.subject", "reference")?)
        .ok_or_else(|| "Observation.subject.reference: not a Patient reference".to_owned())?;
    let effective = effective(r)?;
    let value = if kind == VitalKind::BloodPressure {
        let (mut systolic, mut diastolic) = (None, None);
        for (path, c) in obj_items(r, O, "component")? {
            let Some(ccode) = opt_obj(c, &path, "code")? else {
                continue;
            };
            let codes = loinc_codes(ccode, &format!("{path}.code"))?;
            let slot = if codes.contains(&SYSTOLIC_LOINC) {
                &mut systolic
            } else if codes.contains(&DIASTOLIC_LOINC) {
                &mut diastolic
            } else {
                continue;
            };
            *slot = Some(quantity(c, &path, kind)?);
        }
        VitalValue::BloodPressure {
            systolic: systolic.ok_or_else(|| {
                format!("Observation.component: no systolic ({SYSTOLIC_LOINC}) value")
            })?,
            diastolic: diastolic.ok_or_else(|| {
                format!("Observation.component: no diastolic ({DIASTOLIC_LOINC}) value")
            })?,
        }
    } else {
        VitalValue::Quantity {
            value: quantity(r, O, kind)?,
        }
    };
    let mut notes = Vec::new();
    for (path, note) in obj_items(r, O, "note")? {
        notes.extend(opt_text(note, &path, "text")?.map(str::to_owned));
    }
    let device = match opt_obj(r, O, "device")? {
        Some(d) => {
            let identifier = match opt_obj(d, "Observation.device", "identifier")? {
                Some(i) => opt_text(i, "Observation.device.identifier", "value")?,
                None => None,
            };
            identifier
                .or(opt_text(d, "Observation.device", "display")?)
                .map(str::to_owned)
        }
        None => None,
    };
    Ok(VitalRecord {
        source_id: opt_text(r, O, "id")?.map(str::to_owned),
        patient_id,
        kind,
        value,
        effective,
        device,
        notes,
        mentioned: Vec::new(),
    })
}

/// The LOINC codes of a CodeableConcept.
fn loinc_codes<'a>(concept: &'a Obj, path: &str) -> Result<Vec<&'a str>, Reason> {
    let mut codes = Vec::new();
    for (cpath, coding) in obj_items(concept, path, "coding")? {
        if opt_text(coding, &cpath, "system")?.map(str::trim) == Some(LOINC_SYSTEM)
            && let Some(code) = opt_text(coding, &cpath, "code")?
        {
            codes.push(code.trim());
        }
    }
    Ok(codes)
}

/// `valueQuantity` of `obj`, normalized to `kind`'s unit.
fn quantity(obj: &Obj, path: &str, kind: VitalKind) -> Result<f64, Reason> {
    let Some(q) = opt_obj(obj, path, "valueQuantity")? else {
        let why = if get(obj, "dataAbsentReason").is_some() {
            " (dataAbsentReason given)"
        } else {
            ""
        };
        return Err(format!("{path}.valueQuantity: missing{why}"));
    };
    let qpath = format!("{path}.valueQuantity");
    let value = req_f64(q, &qpath, "value")?;
    let unit = match opt_text(q, &qpath, "code")? {
        Some(code) => code,
        None => opt_text(q, &qpath, "unit")?
            .ok_or_else(|| format!("{qpath}.code: missing (and no unit)"))?,
    };
    kind.normalize(value, unit)
        .map_err(|e| super::unit_reason(&qpath, &e))
}

fn effective(r: &Obj) -> Result<DateTime<Utc>, Reason> {
    const O: &str = "Observation";
    let parse = |s: &str, field: &str| {
        time::instant(s).ok_or_else(|| format!("Observation.{field}: not a FHIR dateTime"))
    };
    for field in ["effectiveDateTime", "effectiveInstant"] {
        if let Some(s) = opt_text(r, O, field)? {
            return parse(s, field);
        }
    }
    if let Some(period) = opt_obj(r, O, "effectivePeriod")?
        && let Some(s) = opt_text(period, "Observation.effectivePeriod", "start")?
    {
        return parse(s, "effectivePeriod.start");
    }
    match opt_text(r, O, "issued")? {
        Some(s) => parse(s, "issued"),
        None => Err("Observation.effective[x]: missing (and no issued)".to_owned()),
    }
}

/// The patient id of a reference: `Patient/<id>`, `urn:uuid:<id>`, `.../Patient/<id>`, with
/// any `/_history/<version>` removed.
pub(crate) fn patient_ref(reference: &str) -> Option<String> {
    let s = reference.trim();
    let id = if let Some(rest) = s.strip_prefix("urn:uuid:") {
        rest
    } else {
        let at = s.rfind("Patient/")?;
        if at > 0 && !s[..at].ends_with('/') {
            return None;
        }
        s[at + "Patient/".len()..].split('/').next()?
    };
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests;
