#!/usr/bin/env python3
"""Checks the output folder of a vitalflow job.

Usage: check_output.py OUT_DIR [--phi FILE] [--inputs FILE] [--expect-min-observations N]

* reads every OUT_DIR/canonical/{Observation,Patient,Encounter}/**/*.parquet with pyarrow,
  and cross-checks the row counts with DuckDB (read_parquet, hive_partitioning=true);
* validates every `resource` JSON with the FHIR R4 (4.0.1) models of fhir.resources;
* checks each vital-signs Observation: LOINC code and UCUM unit are one of the expected pairs,
  category vital-signs, subject Patient/<patient column>, and the typed columns agree with the
  resource;
* checks each laboratory Observation (category column `laboratory`): category laboratory, a
  LOINC code with a right check digit, status, subject, exactly one value or a
  dataAbsentReason, a UCUM valueQuantity (system and code) where the unit_ucum column says so
  and otherwise the unit text and the unit-not-ucum flag, referenceRange and interpretation
  (v3-ObservationInterpretation) agreeing with their columns;
* checks each Patient: columns agree with the resource, and no direct identifier is left
  (name, telecom, photo, contact, identifiers other than keyed hashes, street lines, city, full
  ZIP, birth dates finer than a year);
* checks each Encounter: status and class codes, subject Patient/<patient column>, and the
  typed columns agree with the resource;
* with --inputs FILE (the job's input, event envelopes, one a line) recomputes each vital sign's
  canonical value from its input (UCUM conversions done here: [degF], [lb_av], [in_i] and their
  spellings) and compares, per LOINC code, the values of the Observations with them;
* with --phi FILE (one PHI string a line) scans every byte of every file under OUT_DIR except
  dead-letter/, and for Parquet files also every value of every column, decoded (nested,
  dictionary, binary and date/time columns included), for every PHI string.
  Leaks are reported by file and by line number in FILE: PHI values are never printed.

Prints a JSON summary on stdout and exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import fhir.resources
from fhir.resources.encounter import Encounter
from fhir.resources.observation import Observation
from fhir.resources.patient import Patient

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# LOINC code -> UCUM unit of the value (or of the components, for the blood-pressure panel).
EXPECTED_UNITS = {
    "8867-4": "/min",
    "9279-1": "/min",
    "59408-5": "%",
    "8310-5": "Cel",
    "85354-9": "mm[Hg]",
    "8478-0": "mm[Hg]",
    "29463-7": "kg",
    "8302-2": "cm",
    "39156-5": "kg/m2",
}
BP_PANEL, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"
SPO2, SPO2_ARTERIAL = "59408-5", "2708-6"
# fhir.resources does not check required code bindings: these are checked here.
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
UNIT_NOT_UCUM = "https://vitalflow.dev/fhir/StructureDefinition/unit-not-ucum"
VALUE_KEYS = ("valueQuantity", "valueCodeableConcept", "valueString")
OBSERVATION_STATUS = {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
GENDERS = {"male", "female", "other", "unknown"}
ENCOUNTER_STATUS = {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown"}
ENCOUNTER_CLASS_SYSTEMS = {
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "http://terminology.hl7.org/CodeSystem/v2-0004",
}
MAX_REPORTED = 20  # problems printed per kind


class Problems:
    """Collects problems; prints the first few of each kind to stderr."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_REPORTED:
            print(f"PROBLEM [{kind}] {message}", file=sys.stderr)

    def total(self) -> int:
        return sum(self.counts.values())


def parquet_files(root: Path, resource_type: str) -> list[Path]:
    base = root / "canonical" / resource_type
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*.parquet") if not p.name.startswith("."))


def codings(concept: dict | None) -> list[dict]:
    return (concept or {}).get("coding") or []


def has_coding(concept: dict | None, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in codings(concept))


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def validation_errors(model, resource: dict) -> str | None:
    """None when the resource is valid; otherwise the error locations (never the values)."""
    try:
        model.parse_obj(resource)
        return None
    except Exception as e:  # pydantic.ValidationError, or errors raised by the validators
        errors = getattr(e, "errors", None)
        if callable(errors):
            return "; ".join(
                f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('type', '')}"
                for err in errors()[:5]
            )
        return type(e).__name__


def check_quantity(q: dict | None, unit: str, value: float | None, where: str, problems: Problems) -> None:
    if not q:
        problems.add("observation", f"{where}: no valueQuantity")
        return
    if q.get("system") != UCUM or q.get("code") != unit:
        problems.add("observation", f"{where}: quantity is {q.get('system')}|{q.get('code')}, expected {UCUM}|{unit}")
    if value is not None and not close(q.get("value"), value):
        problems.add("observation", f"{where}: quantity value disagrees with its column")


def check_observation(row: dict, where: str, problems: Problems, by_code: Counter) -> None:
    code, unit = row["code"], row["unit"]
    by_code[code] += 1
    expected = EXPECTED_UNITS.get(code)
    if expected is None:
        problems.add("observation", f"{where}: unexpected code {code}")
    elif unit != expected:
        problems.add("observation", f"{where}: code {code} has unit {unit}, expected {expected}")
    try:
        r = json.loads(row["resource"])
    except (TypeError, ValueError):
        problems.add("fhir_invalid", f"{where}: resource is not JSON")
        return
    if r.get("resourceType") != "Observation" or r.get("id") != row["id"]:
        problems.add("observation", f"{where}: resourceType/id disagree with the columns")
    if r.get("status") not in OBSERVATION_STATUS:
        problems.add("fhir_invalid", f"{where}: status is not an ObservationStatus code")
    if not has_coding(r.get("code"), LOINC, code):
        problems.add("observation", f"{where}: code.coding lacks {LOINC}|{code}")
    if code == SPO2 and not has_coding(r.get("code"), LOINC, SPO2_ARTERIAL):
        problems.add("observation", f"{where}: SpO2 lacks the {SPO2_ARTERIAL} coding")
    if not any(has_coding(c, CATEGORY, "vital-signs") for c in r.get("category") or []):
        problems.add("observation", f"{where}: category is not vital-signs")
    if (r.get("subject") or {}).get("reference") != f"Patient/{row['patient']}":
        problems.add("observation", f"{where}: subject is not Patient/<patient column>")
    effective = r.get("effectiveDateTime")
    try:
        t = datetime.fromisoformat(str(effective).replace("Z", "+00:00"))
        col = row["effective"]
        if t.tzinfo is None or col is None or abs((t - col).total_seconds()) >= 1:
            problems.add("observation", f"{where}: effectiveDateTime disagrees with the effective column")
    except ValueError:
        problems.add("observation", f"{where}: effectiveDateTime missing or not a dateTime")
    if code == BP_PANEL:
        if r.get("valueQuantity") is not None or row["value"] is not None:
            problems.add("observation", f"{where}: blood-pressure panel with a value")
        components = {}
        for c in r.get("component") or []:
            for k in (SYSTOLIC, DIASTOLIC):
                if has_coding(c.get("code"), LOINC, k):
                    components[k] = c.get("valueQuantity")
        for k, col in ((SYSTOLIC, "systolic"), (DIASTOLIC, "diastolic")):
            if k not in components:
                problems.add("observation", f"{where}: blood-pressure panel lacks component {k}")
            else:
                check_quantity(components[k], "mm[Hg]", row[col], f"{where} component {k}", problems)
    elif expected is not None:
        check_quantity(r.get("valueQuantity"), expected, row["value"], where, problems)
        if row["systolic"] is not None or row["diastolic"] is not None:
            problems.add("observation", f"{where}: systolic/diastolic set on a {code}")
    error = validation_errors(Observation, r)
    if error is not None:
        problems.add("fhir_invalid", f"{where}: not a valid FHIR R4 Observation: {error}")


def loinc_check_digit_ok(code: str) -> bool:
    """LOINC's mod-10 check digit, computed here independently of the engine."""
    number, sep, check = code.partition("-")
    if not sep or not number.isdigit() or len(check) != 1 or not check.isdigit() or len(number) > 7:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d // 10 + d % 10
        total += d
    return int(check) == (10 - total % 10) % 10


def check_lab_observation(row: dict, where: str, problems: Problems, labs: Counter) -> None:
    code = row["code"]
    labs["laboratory"] += 1
    labs[f"status:{row['status']}"] += 1
    try:
        r = json.loads(row["resource"])
    except (TypeError, ValueError):
        problems.add("fhir_invalid", f"{where}: resource is not JSON")
        return
    error = validation_errors(Observation, r)
    if error is not None:
        problems.add("fhir_invalid", f"{where}: not a valid FHIR R4 Observation: {error}")
    if r.get("resourceType") != "Observation" or r.get("id") != row["id"]:
        problems.add("lab", f"{where}: resourceType/id disagree with the columns")
    if r.get("status") not in OBSERVATION_STATUS or r.get("status") != row["status"]:
        problems.add("fhir_invalid", f"{where}: status is not an ObservationStatus code or disagrees")
    if not any(has_coding(c, CATEGORY, "laboratory") for c in r.get("category") or []):
        problems.add("lab", f"{where}: category is not laboratory")
    if not loinc_check_digit_ok(code) or not has_coding(r.get("code"), LOINC, code):
        problems.add("lab", f"{where}: code is not a LOINC coding with a right check digit")
    if (r.get("subject") or {}).get("reference") != f"Patient/{row['patient']}":
        problems.add("lab", f"{where}: subject is not Patient/<patient column>")
    values = [k for k in VALUE_KEYS if k in r]
    absent = r.get("dataAbsentReason")
    if len(values) + (absent is not None) != 1:
        problems.add("lab", f"{where}: {len(values)} values and dataAbsentReason {absent is not None}")
    if absent is not None and [c.get("system") for c in codings(absent)][:1] != [DATA_ABSENT]:
        problems.add("lab", f"{where}: dataAbsentReason not from {DATA_ABSENT}")
    flags = [e for e in r.get("extension") or [] if e.get("url") == UNIT_NOT_UCUM]
    q = r.get("valueQuantity")
    if q is not None:
        labs["quantity"] += 1
        if not close(q.get("value"), row["value"]):
            problems.add("lab", f"{where}: valueQuantity.value disagrees with its column")
        if row["unit_ucum"]:
            if q.get("system") != UCUM or q.get("code") != row["unit"] or flags:
                problems.add("lab", f"{where}: unit_ucum but the quantity is not {UCUM}|unit, or flagged")
        else:
            if "system" in q or "code" in q:
                problems.add("lab", f"{where}: an unmapped unit with a system or code")
            if row["unit"]:
                labs["unit_not_ucum"] += 1
                if q.get("unit") != row["unit"] or len(flags) != 1 or flags[0].get("valueString") != row["unit"]:
                    problems.add("lab", f"{where}: an unmapped unit not kept as text and flagged")
    elif row["value"] is not None:
        problems.add("lab", f"{where}: a value column without valueQuantity")
    if "valueCodeableConcept" in r:
        labs["coded"] += 1
        c = codings(r["valueCodeableConcept"])[:1]
        text = (c[0].get("system") + "|" if c and c[0].get("system") else "") + (c[0].get("code", "") if c else "")
        if row["value_text"] != text:
            problems.add("lab", f"{where}: value_text disagrees with valueCodeableConcept")
    if "valueString" in r:
        labs["text"] += 1
        if row["value_text"] != r["valueString"]:
            problems.add("lab", f"{where}: value_text disagrees with valueString")
    if absent is not None:
        labs["absent"] += 1
    ranges = r.get("referenceRange") or []
    low = (ranges[0].get("low") or {}).get("value") if ranges else None
    high = (ranges[0].get("high") or {}).get("value") if ranges else None
    if not close(low, row["ref_low"]) or not close(high, row["ref_high"]):
        problems.add("lab", f"{where}: referenceRange disagrees with ref_low/ref_high")
    interp = [c for concept in r.get("interpretation") or [] for c in codings(concept)]
    if row["interpretation"] is None:
        if interp:
            problems.add("lab", f"{where}: interpretation without its column")
    else:
        labs[f"interpretation:{row['interpretation']}"] += 1
        if not has_coding({"coding": interp}, INTERPRETATION, row["interpretation"]):
            problems.add("lab", f"{where}: interpretation is not {INTERPRETATION}|<column>")
    if row["systolic"] is not None or row["diastolic"] is not None:
        problems.add("lab", f"{where}: systolic/diastolic set on a laboratory result")


ZIP5 = re.compile(r"\d{5}")


def check_patient(row: dict, where: str, problems: Problems) -> None:
    try:
        r = json.loads(row["resource"])
    except (TypeError, ValueError):
        problems.add("fhir_invalid", f"{where}: resource is not JSON")
        return
    if r.get("resourceType") != "Patient" or r.get("id") != row["id"]:
        problems.add("patient", f"{where}: resourceType/id disagree with the columns")
    if r.get("gender") is not None and r.get("gender") not in GENDERS:
        problems.add("fhir_invalid", f"{where}: gender is not an AdministrativeGender code")
    if r.get("gender") != row["gender"]:
        problems.add("patient", f"{where}: gender disagrees with its column")
    for field in ("name", "telecom", "photo", "contact"):
        if r.get(field):
            problems.add("deid", f"{where}: Patient.{field} present")
    for i in r.get("identifier") or []:
        if not str(i.get("system", "")).startswith("urn:vitalflow:hashed:"):
            problems.add("deid", f"{where}: Patient.identifier that is not a keyed hash")
    for a in r.get("address") or []:
        for field in ("line", "city", "district", "text"):
            if a.get(field):
                problems.add("deid", f"{where}: Patient.address.{field} present")
        if ZIP5.search(str(a.get("postalCode") or "")):
            problems.add("deid", f"{where}: Patient.address.postalCode finer than ZIP3")
    birth = r.get("birthDate")
    if birth is not None:
        if not re.fullmatch(r"\d{4}", str(birth)):
            problems.add("deid", f"{where}: birthDate finer than a year")
        elif int(birth) != row["birth_year"]:
            problems.add("patient", f"{where}: birthDate disagrees with birth_year")
    if row["age_group"] is not None and (row["birth_year"] is not None or birth is not None):
        problems.add("deid", f"{where}: birth year given for an age group")
    deceased_at = r.get("deceasedDateTime")
    if deceased_at is not None and not re.fullmatch(r"\d{4}", str(deceased_at)):
        problems.add("deid", f"{where}: deceasedDateTime finer than a year")
    if bool(r.get("deceasedBoolean") or deceased_at) != bool(row["deceased"]):
        problems.add("patient", f"{where}: deceased disagrees with its column")
    error = validation_errors(Patient, r)
    if error is not None:
        problems.add("fhir_invalid", f"{where}: not a valid FHIR R4 Patient: {error}")


def micros(text: str | None) -> int | None:
    if text is None:
        return None
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(t.timestamp() * 1_000_000)


def check_encounter(row: dict, where: str, problems: Problems) -> None:
    try:
        r = json.loads(row["resource"])
    except (TypeError, ValueError):
        problems.add("fhir_invalid", f"{where}: resource is not JSON")
        return
    if r.get("resourceType") != "Encounter" or r.get("id") != row["id"]:
        problems.add("encounter", f"{where}: resourceType/id disagree with the columns")
    if r.get("status") not in ENCOUNTER_STATUS:
        problems.add("fhir_invalid", f"{where}: status is not an EncounterStatus code")
    if r.get("status") != row["status"]:
        problems.add("encounter", f"{where}: status disagrees with its column")
    klass = r.get("class") or {}
    if klass.get("system") not in ENCOUNTER_CLASS_SYSTEMS or klass.get("code") != row["class"]:
        problems.add("encounter", f"{where}: class is not a v3 ActCode / v2 patient class or disagrees with its column")
    if (r.get("subject") or {}).get("reference") != f"Patient/{row['patient']}":
        problems.add("encounter", f"{where}: subject is not Patient/<patient>")
    period = r.get("period") or {}
    for key in ("start", "end"):
        column = row[key]
        column_us = None if column is None else round(column.timestamp() * 1_000_000)
        if micros(period.get(key)) != column_us:
            problems.add("encounter", f"{where}: period.{key} disagrees with its column")
    if r.get("status") == "finished" and not period.get("end"):
        problems.add("encounter", f"{where}: finished without period.end")
    error = validation_errors(Encounter, r)
    if error is not None:
        problems.add("fhir_invalid", f"{where}: not a valid FHIR R4 Encounter: {error}")


def duckdb_count(root: Path, resource_type: str) -> int:
    if not parquet_files(root, resource_type):
        return 0
    glob = str(root / "canonical" / resource_type / "**" / "*.parquet").replace("'", "''")
    # Monthly folders (`month=YYYY-MM`, the default) or daily ones (`date=YYYY-MM-DD`).
    folders = {p.parent.name.split("=")[0] for p in parquet_files(root, resource_type)}
    if len(folders) != 1 or not folders <= {"month", "date"}:
        raise ValueError(f"{resource_type}: partition folders {sorted(folders)}")
    key = folders.pop()
    # Observations: the folder is the effective time's month or day.
    fmt = "%Y-%m" if key == "month" else "%Y-%m-%d"
    misplaced = (
        f"count(*) FILTER (WHERE CAST({key} AS VARCHAR) <> strftime(effective, '{fmt}'))"
        if resource_type == "Observation"
        else "0"
    )
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {key} IS NULL), {misplaced} "
            f"FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchone()
    finally:
        con.close()
    if row[1]:
        raise ValueError(f"{row[1]} {resource_type} rows without a {key} partition")
    if row[2]:
        raise ValueError(f"{row[2]} {resource_type} rows in another {key}'s folder")
    return int(row[0])


# ---- values against the inputs -----------------------------------------------------------

VITALS_RECORDED = "vitals.measurement.recorded"
KIND_LOINC = {
    "heart-rate": "8867-4",
    "respiratory-rate": "9279-1",
    "spo2": "59408-5",
    "body-temperature": "8310-5",
    "blood-pressure": BP_PANEL,
    "mean-arterial-pressure": "8478-0",
    "body-weight": "29463-7",
    "body-height": "8302-2",
    "bmi": "39156-5",
}
# Input unit spelling -> (canonical UCUM unit, conversion).
CONVERSIONS = {
    "[degF]": ("Cel", lambda v: (v - 32.0) * 5.0 / 9.0),
    "degF": ("Cel", lambda v: (v - 32.0) * 5.0 / 9.0),
    "[lb_av]": ("kg", lambda v: v * 0.45359237),
    "lb": ("kg", lambda v: v * 0.45359237),
    "[in_i]": ("cm", lambda v: v * 2.54),
    "in": ("cm", lambda v: v * 2.54),
    "bpm": ("/min", lambda v: v),
}


def expected_values(inputs: Path, problems: Problems) -> dict[tuple[str, str], list[float]]:
    """(LOINC code, column) -> the canonical values the inputs' vital signs should give."""
    expected: dict[tuple[str, str], list[float]] = {}
    for n, line in enumerate(inputs.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        event = json.loads(line)
        if (event.get("metadata") or {}).get("eventType") != VITALS_RECORDED:
            continue
        p = event.get("payload") or {}
        code = KIND_LOINC.get(p.get("type"))
        if code is None:
            problems.add("inputs", f"{inputs.name}:{n}: unknown type {p.get('type')!r}")
            continue
        unit = p.get("unit")
        canonical, convert = CONVERSIONS.get(unit, (unit, lambda v: v))
        if code == BP_PANEL:
            for column in ("systolic", "diastolic"):
                expected.setdefault((code, column), []).append(float(p[column]))
        else:
            if canonical != EXPECTED_UNITS[code]:
                problems.add("inputs", f"{inputs.name}:{n}: unit {unit!r} for {code} has no conversion here")
            expected.setdefault((code, "value"), []).append(convert(float(p["value"])))
    return expected


def compare_with_inputs(expected: dict[tuple[str, str], list[float]], got: dict[tuple[str, str], list[float]],
                        problems: Problems) -> int:
    """Compares the sorted values of each (code, column); returns the values that differ."""
    differ = 0
    for key in sorted(set(expected) | set(got)):
        e, g = sorted(expected.get(key, [])), sorted(got.get(key, []))
        if len(e) != len(g):
            problems.add("inputs", f"{key[0]} {key[1]}: {len(g)} values in the output, {len(e)} in the inputs")
            differ += abs(len(e) - len(g))
            continue
        # The canonical value is rounded to 2 decimals.
        bad = [(x, y) for x, y in zip(e, g) if not math.isclose(x, y, abs_tol=0.005 + 1e-9)]
        if bad:
            differ += len(bad)
            problems.add("inputs", f"{key[0]} {key[1]}: {len(bad)} values differ from the inputs' (first: "
                                   f"expected {bad[0][0]}, got {bad[0][1]})")
    return differ


# ---- PHI scan -----------------------------------------------------------------------------


def trie_regex(words: list[bytes]) -> re.Pattern[bytes]:
    """One regex matching any of `words`, preferring the longest (a trie of alternations)."""
    trie: dict = {}
    for w in words:
        node = trie
        for b in w:
            node = node.setdefault(b, {})
        node[None] = True

    def build(node: dict) -> bytes:
        end = None in node
        branches = [re.escape(bytes([b])) + build(child) for b, child in sorted((k, v) for k, v in node.items() if k is not None)]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        return b"(?:" + body + b")?" if end else body

    return re.compile(build(trie))


class PhiScanner:
    def __init__(self, phi_file: Path) -> None:
        self.lines: dict[bytes, int] = {}
        for n, line in enumerate(phi_file.read_text(encoding="utf-8").splitlines(), start=1):
            value = line.strip()
            if value:
                self.lines.setdefault(value.encode("utf-8"), n)
        self.pattern = trie_regex(list(self.lines)) if self.lines else None

    def find(self, data: bytes) -> set[int]:
        """Line numbers (in the PHI file) of the PHI values in `data`."""
        if self.pattern is None:
            return set()
        matches = {m.group(0) for m in self.pattern.finditer(data)}
        # A match may contain shorter PHI values (a full name holds the given name).
        return {n for value, n in self.lines.items() if any(value in m for m in matches)}


def decoded_values(value, parts: list[str]) -> None:
    """Appends the text of `value` and of everything nested in it (lists, structs, maps)."""
    if value is None:
        return
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, (bytes, bytearray)):
        parts.append(bytes(value).decode("utf-8", errors="replace"))
    elif isinstance(value, dict):
        for v in value.values():
            decoded_values(v, parts)
    elif isinstance(value, (list, tuple)):
        for v in value:
            decoded_values(v, parts)
    elif hasattr(value, "isoformat"):
        parts.append(value.isoformat())
    else:
        parts.append(str(value))


def parquet_values(path: Path) -> bytes:
    """Every value of every column (nested, dictionary-encoded, binary and temporal ones too),
    decoded, one a line: compressed and encoded pages hide values from a byte search."""
    table = pq.read_table(path)
    parts: list[str] = []
    for column in table.columns:
        for value in column.to_pylist():
            decoded_values(value, parts)
    return "\n".join(parts).encode("utf-8")


def scan_phi(root: Path, scanner: PhiScanner, problems: Problems) -> tuple[int, int, int]:
    """Returns (files scanned, bytes scanned, PHI hits)."""
    files = scanned = hits = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.parts[0] == "dead-letter":
            continue
        data = path.read_bytes()
        found = scanner.find(str(rel).encode("utf-8")) | scanner.find(data)
        if path.suffix == ".parquet" and not path.name.startswith("."):
            try:
                found |= scanner.find(parquet_values(path))
            except (OSError, pa.ArrowException) as e:
                problems.add("parquet", f"{rel}: cannot decode for the PHI scan: {type(e).__name__}")
        files += 1
        scanned += len(data)
        if found:
            hits += len(found)
            lines = ", ".join(str(n) for n in sorted(found)[:MAX_REPORTED])
            more = "" if len(found) <= MAX_REPORTED else f" (+{len(found) - MAX_REPORTED} more)"
            problems.add("phi", f"{rel} holds PHI values from lines {lines}{more} of the PHI file")
    return files, scanned, hits


# ---- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--phi", type=Path, help="file with one PHI string a line")
    parser.add_argument("--inputs", type=Path, help="the job's input: event envelopes, one a line")
    parser.add_argument("--expect-min-observations", type=int, default=0, metavar="N")
    args = parser.parse_args()
    root: Path = args.out_dir
    problems = Problems()
    if fhir.resources.__fhir_version__ != "4.0.1":
        problems.add("setup", f"fhir.resources models are FHIR {fhir.resources.__fhir_version__}, not R4 4.0.1")
    if not (root / "canonical").is_dir():
        problems.add("layout", f"{root}/canonical does not exist")

    by_code: Counter[str] = Counter()
    labs: Counter[str] = Counter()
    # (code, column) -> the Observations' values, for --inputs.
    values: dict[tuple[str, str], list[float]] = {}
    counts = {}
    observation_patients: set[str] = set()
    patient_ids: set[str] = set()
    files = 0
    for resource_type in ("Observation", "Patient", "Encounter"):
        total = 0
        for path in parquet_files(root, resource_type):
            files += 1
            rel = path.relative_to(root)
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowException) as e:
                problems.add("parquet", f"{rel}: unreadable: {type(e).__name__}: {e}")
                continue
            if resource_type == "Observation":
                effective = table.schema.field("effective").type if "effective" in table.schema.names else None
                if not (pa.types.is_timestamp(effective) and effective.unit == "us" and effective.tz == "UTC"):
                    problems.add("parquet", f"{rel}: effective is {effective}, expected timestamp[us, tz=UTC]")
                    continue
            for i, row in enumerate(table.to_pylist()):
                where = f"{rel} row {i}"
                if resource_type == "Observation" and row.get("category") == "laboratory":
                    check_lab_observation(row, where, problems, labs)
                    observation_patients.add(row["patient"])
                elif resource_type == "Observation":
                    check_observation(row, where, problems, by_code)
                    for column in ("value", "systolic", "diastolic"):
                        if row[column] is not None:
                            values.setdefault((row["code"], column), []).append(row[column])
                    observation_patients.add(row["patient"])
                elif resource_type == "Encounter":
                    check_encounter(row, where, problems)
                else:
                    check_patient(row, where, problems)
                    patient_ids.add(row["id"])
            total += table.num_rows
        counts[resource_type] = total
        try:
            in_duckdb = duckdb_count(root, resource_type)
            if in_duckdb != total:
                problems.add("duckdb", f"DuckDB reads {in_duckdb} {resource_type} rows, pyarrow {total}")
        except (duckdb.Error, ValueError) as e:
            problems.add("duckdb", f"{resource_type}: {type(e).__name__}: {e}")

    if counts["Observation"] < args.expect_min_observations:
        problems.add("count", f"{counts['Observation']} observations, expected at least {args.expect_min_observations}")

    summary = {
        "observations": counts["Observation"],
        "patients": counts["Patient"],
        "encounters": counts["Encounter"],
        "files": files,
        "by_code": dict(sorted(by_code.items())),
        "laboratory": dict(sorted(labs.items())),
        "fhir_invalid": problems.counts["fhir_invalid"],
        "phi_hits": 0,
        "observation_patients_without_patient": len(observation_patients - patient_ids) if patient_ids else None,
    }
    if args.inputs is not None:
        expected = expected_values(args.inputs, problems)
        summary["input_values"] = sum(len(v) for v in expected.values())
        summary["input_mismatches"] = compare_with_inputs(expected, values, problems)
    if args.phi is not None:
        scanned_files, scanned_bytes, hits = scan_phi(root, PhiScanner(args.phi), problems)
        summary.update(phi_hits=hits, phi_scanned_files=scanned_files, phi_scanned_bytes=scanned_bytes)
    summary["problems"] = dict(sorted(problems.counts.items()))
    print(json.dumps(summary, indent=2))
    return 1 if problems.total() else 0


if __name__ == "__main__":
    sys.exit(main())
