//! `ORU^R01` OBX results that are not vital signs: laboratory results ([`LabRecord`]).
//!
//! * Code (OBX-3): the LOINC coding, the first or the alternate one. A coding is LOINC when its
//!   system is `LN` (or `LOINC`), or when its code has the form of a LOINC code with a right
//!   check digit and its system is not one known to be another (`SCT`, `L`, `99…`, ...): some
//!   senders label LOINC codes with a name of their own.
//! * Status (OBX-11): `P`, `R`, `S` preliminary; `F`, `U` final; `A` amended; `C` corrected; `X`
//!   cancelled; `W`, `D` entered in error; empty unknown. `I` (pending), `O` (order detail) and
//!   `N` (not asked) carry no result and are dead-lettered.
//! * Value (OBX-2, OBX-5): `NM` a number; `SN` a number with an optional comparator (`<^0.04`);
//!   `CE`, `CWE`, `CNE` a coding; `ST`, `TX`, `FT` text (repetitions joined by new lines). A
//!   cancelled result, or one entered in error, may have none. Every other value type (`ED`,
//!   `RP`, `DT`, `TS`, ...) and SN ranges and ratios are dead-lettered, naming the type.
//! * Unit (OBX-6, the code else the text): mapped to UCUM ([`vitalflow_model::lab::ucum_unit`],
//!   after the ingest node's `units`); an unknown unit is kept as written and flagged.
//! * Reference range (OBX-7), interpretation (OBX-8, table 0078), time (OBX-14, else OBR-7, else
//!   MSH-7), issued (OBR-22), notes (the NTE segments after the OBX).
//! * Identity: the filler order number (OBR-3), else the placer's (OBR-2), with the code and the
//!   sub-id (OBX-4): a corrected result in a later message has the identity of the one it
//!   corrects. Without an order number, the message control id and the OBX's position.

use chrono::{DateTime, Utc};
use vitalflow_model::clinical::LabRecord;
use vitalflow_model::lab::{
    Comparator, LabStatus, LabUnit, LabValue, ReferenceRange, interpretation_from_v2,
    is_loinc_code, system_uri,
};

use super::message::Segment;
use super::{Mapper, Reason};
use crate::ingest::{IngestOptions, safe_code};

/// Coding systems (HL7 table 0396 names) that are not LOINC, whatever their codes look like.
fn other_system(system: &str) -> bool {
    let s = system.trim().to_ascii_uppercase();
    matches!(
        s.as_str(),
        "SCT"
            | "SNM"
            | "SNM3"
            | "SNOMED"
            | "SNOMEDCT"
            | "L"
            | "LOCAL"
            | "C4"
            | "C5"
            | "CPT4"
            | "I9"
            | "I9C"
            | "I10"
            | "I10P"
            | "ICD10"
            | "NDC"
            | "RXNORM"
            | "UCUM"
    ) || s.starts_with("99")
        || s.starts_with("HL7")
}

/// The name of an HL7 v2 value type (table 0125) for reasons.
fn value_type_name(t: &str) -> &'static str {
    match t {
        "ED" => "encapsulated data",
        "RP" => "reference pointer",
        "DT" => "date",
        "TM" => "time",
        "TS" | "DTM" => "date-time",
        "CP" => "composite price",
        "MO" => "money",
        "CX" => "extended composite id",
        "XPN" => "person name",
        "XAD" => "address",
        "XCN" => "person and id",
        "XON" => "organization",
        "XTN" => "telecommunication number",
        "NA" => "numeric array",
        "MA" => "multiplexed array",
        "CQ" => "composite quantity",
        "CK" => "composite id with check digit",
        "AD" => "address",
        "PN" => "person name",
        "TN" => "telephone number",
        "ID" | "IS" => "coded value",
        _ => "not converted",
    }
}

/// A result status's name, for reasons.
fn status_name(s: &str) -> &'static str {
    match s {
        "I" => "pending",
        "O" => "order detail only",
        "N" => "not asked",
        _ => "unknown",
    }
}

impl<'a> Mapper<'_, 'a> {
    /// The LOINC code of an OBX (OBX-3, else its alternate coding) and its display.
    fn lab_code(&self, seg: &Segment<'a>, at: &str) -> Result<(String, Option<String>), Reason> {
        let candidates = [(1, 2, 3), (4, 5, 6)];
        let mut first = None;
        for (c, d, s) in candidates {
            let code = self.get(seg, 3, c);
            let system = self.get(seg, 3, s);
            if code.is_empty() {
                continue;
            }
            let loinc = system.eq_ignore_ascii_case("LN")
                || system.eq_ignore_ascii_case("LOINC")
                || (!other_system(&system) && is_loinc_code(&code));
            if loinc {
                let display = self.get(seg, 3, d);
                return Ok((
                    code.trim().to_owned(),
                    (!display.is_empty()).then(|| display.into_owned()),
                ));
            }
            first.get_or_insert((code, system));
        }
        Err(match first {
            Some((code, system)) => format!(
                "{at}-3: code `{}` (system `{}`) is neither a vital sign nor a LOINC code: a \
                 laboratory result needs a LOINC code",
                safe_code(&code),
                safe_code(&system)
            ),
            None => format!("{at}-3: observation code missing"),
        })
    }

    /// One OBX that is not a vital sign, as a laboratory result of `patient_id`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lab(
        &self,
        seg: &Segment<'a>,
        n: usize,
        obr: Option<&Segment<'a>>,
        obr_time: Option<DateTime<Utc>>,
        patient_id: &str,
        control_id: &str,
        opts: &IngestOptions,
    ) -> Result<LabRecord, Reason> {
        let msg = self.msg;
        let at = format!("{} OBX[{n}]", self.kind);
        let (code, display) = self.lab_code(seg, &at)?;
        let status_code = self.get(seg, 11, 1);
        let status = LabStatus::from_v2(&status_code).ok_or_else(|| {
            format!(
                "{at}-11: result status `{}` ({}) carries no result to convert",
                safe_code(&status_code),
                status_name(&status_code)
            )
        })?;
        let value_type = self.get(seg, 2, 1);
        let reps = msg.repetitions(seg, 5);
        let raw = reps.first().copied().unwrap_or("");
        let empty = reps.iter().all(|r| msg.decode(r).trim().is_empty());
        let missing = || {
            if status.may_lack_value() {
                Ok(LabValue::Absent)
            } else {
                Err(format!("{at}-5: value missing"))
            }
        };
        let value = match value_type.as_ref() {
            "NM" | "SN" | "CE" | "CWE" | "CNE" | "ST" | "TX" | "FT" if empty => missing()?,
            "NM" => LabValue::Quantity {
                value: number(&msg.decode(raw))
                    .ok_or_else(|| format!("{at}-5: value of type NM is not a number"))?,
                comparator: None,
                unit: self.lab_unit(seg, &code, opts),
            },
            "SN" => {
                let part = |i| msg.decode(msg.part(raw, i, 0)).trim().to_owned();
                let (comparator, num, separator, second) = (part(1), part(2), part(3), part(4));
                if !separator.is_empty() || !second.is_empty() {
                    return Err(format!(
                        "{at}-5: a structured numeric (SN) range or ratio is not supported, \
                         only a number with an optional comparator"
                    ));
                }
                let comparator = match comparator.as_str() {
                    "" | "=" => None,
                    c => Some(Comparator::parse(c).ok_or_else(|| {
                        format!("{at}-5: structured numeric comparator is not <, <=, >, >= or =")
                    })?),
                };
                LabValue::Quantity {
                    value: number(&num).ok_or_else(|| {
                        format!("{at}-5: structured numeric (SN) without a number")
                    })?,
                    comparator,
                    unit: self.lab_unit(seg, &code, opts),
                }
            }
            "CE" | "CWE" | "CNE" => {
                let part = |i| msg.decode(msg.part(raw, i, 0)).trim().to_owned();
                let (mut c, mut d, mut s) = (part(1), part(2), part(3));
                if c.is_empty() {
                    (c, d, s) = (part(4), part(5), part(6));
                }
                if c.is_empty() {
                    // Text without a code is free text.
                    let text = part(2);
                    if text.is_empty() {
                        missing()?
                    } else {
                        LabValue::Text(text)
                    }
                } else {
                    LabValue::Coded {
                        system: system_uri(&s).map(str::to_owned),
                        code: c,
                        display: (!d.is_empty()).then_some(d),
                    }
                }
            }
            "ST" | "TX" | "FT" => {
                let text: Vec<String> = reps
                    .iter()
                    .map(|r| msg.decode(r).trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect();
                LabValue::Text(text.join("\n"))
            }
            "" if empty => missing()?,
            "" => return Err(format!("{at}-2: value type missing")),
            other => {
                return Err(format!(
                    "{at}-2: value type `{}` ({}) is not supported for laboratory results \
                     (NM, SN, CE, CWE, CNE, ST, TX and FT are)",
                    safe_code(other),
                    value_type_name(other)
                ));
            }
        };
        let range = ReferenceRange::parse_v2(&self.get(seg, 7, 1)).unwrap_or_default();
        let interpretation =
            interpretation_from_v2(&self.get(seg, 8, 1)).map(|(code, _)| code.to_owned());
        let effective = self
            .time(seg, 14)?
            .or(obr_time)
            .or(self.message_time)
            .ok_or_else(|| format!("{at}-14, OBR-7 and MSH-7: no observation date-time"))?;
        let issued = obr.map(|o| self.time(o, 22)).transpose()?.flatten();
        let order = obr
            .map(|o| {
                let filler = self.get(o, 3, 1);
                let (number, namespace) = if filler.is_empty() {
                    (self.get(o, 2, 1), self.get(o, 2, 2))
                } else {
                    (filler, self.get(o, 3, 2))
                };
                (number.into_owned(), namespace.into_owned())
            })
            .filter(|(number, _)| !number.is_empty());
        let source_id = match order {
            Some((number, namespace)) => {
                format!("{number}^{namespace}/{code}/{}", self.get(seg, 4, 1))
            }
            None => format!("{control_id}/{n}"),
        };
        Ok(LabRecord {
            source_id: Some(source_id),
            patient_id: patient_id.to_owned(),
            code,
            display,
            value,
            reference_range: range,
            interpretation,
            status,
            effective,
            issued,
            notes: Vec::new(),
            mentioned: Vec::new(),
        })
    }

    /// The unit of a numeric OBX (OBX-6: the code, else the text), after the node's `units`.
    fn lab_unit(&self, seg: &Segment<'a>, code: &str, opts: &IngestOptions) -> LabUnit {
        let mut unit = self.get(seg, 6, 1);
        if unit.is_empty() {
            unit = self.get(seg, 6, 2);
        }
        let unit = opts
            .units
            .get(unit.as_ref())
            .map_or(unit.as_ref(), String::as_str);
        LabUnit::map(unit, code)
    }
}

/// A finite number.
fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}
