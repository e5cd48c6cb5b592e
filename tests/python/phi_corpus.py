#!/usr/bin/env python3
"""Generates a synthetic PHI corpus for vitalflow's de-identification tests.

It generates fake patients that carry every Safe Harbor identifier class, in HL7 v2, FHIR R4
and vitalflow event envelopes, and lists every identifying value so a test can check that none
reaches any output.

Usage: phi_corpus.py OUT_DIR [--patients N] [--seed S] [--self-check]

Writes (deterministically for a given N and S; standard library only):

* OUT_DIR/hl7v2/<pid>-1-adt-a01.hl7, -2-adt-a08.hl7, -3-oru-r01.hl7, -4-adt-a03.hl7: HL7 v2.5.1
  messages, segments ended by `\\r`, identifiers where real feeds put them (PID-3 repetitions,
  PID-5/6/7/11/13/14/18/19/20/29, NK1, PV1-3/7/19/44/45, IN1-16/36, a ZPI Z-segment, OBX-14/18,
  an NTE with free text full of identifiers, an ED photo OBX and a local-code OBX);
* OUT_DIR/fhir/<pid>.json: one FHIR R4 transaction Bundle a patient (Patient + vital signs);
* OUT_DIR/envelope.ndjson: a `patient.record.created` event and three
  `vitals.measurement.recorded` events a patient;
* OUT_DIR/phi.txt: every identifying value, one a line, deduplicated, in every spelling the inputs
  use (HL7-escaped and plain, `YYYYMMDD` and `YYYY-MM-DD`, ...). Every value is at least 6
  characters long and distinctive: no value a de-identified output may legitimately hold (years,
  state, country and gender codes, ZIP3s, LOINC codes, units, vital values, point-of-care codes)
  is listed;
* OUT_DIR/manifest.json: counts of files and of values per Safe Harbor class (also printed);
* OUT_DIR/expected_report.json: for each input file, the de-identification report counts it calls
  for under the default actions (`expected_report` below).

Everything is synthetic: names, streets and cities are drawn from small in-script lists, SSNs use
the never-issued 9xx area, phones the fictional 555-01xx range, e-mail and web addresses the
reserved example.* domains, IP addresses private and documentation ranges.

Notes on the value choices:

* Postal codes are ZIP+4 (`03601-4417`): a ZIP5 has 5 characters, too short to scan for without
  false hits, and the engine's ZIP3 rule reads both forms. Half the patients (the even-numbered
  ones) live in a restricted ZIP3 (036, 059, 102, 556, 692, 878), the others in ordinary ones.
* Every date-time has a time of day (HH:MM:SS) no other date-time of the corpus has, and none is
  midnight: a date shift by whole days can therefore never turn one patient's date-time into
  another listed one. Clinical dates are listed only as date-times (plus the note's
  `MM/DD/YYYY`), never as bare `YYYY-MM-DD`, which shifted output dates may legitimately equal.
* Provider names (PV1-7), insurer and plan names and codes are not PHI and are not listed.

With --self-check, after writing it re-reads the files and exits 1, listing the offenders, when
an HL7 file does not start with `MSH|^~\\&|`, a FHIR file or envelope line does not parse, or a
phi.txt value is shorter than 6 characters, is hex-only and shorter than 12 (all-digit phone local
parts and `YYYYMMDD` dates excepted: the brief asks for those spellings), occurs in no input file
or occurs in a known non-PHI string (codes, displays, systems, facility names).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")

HL7_VERSION = "2.5.1"
MIN_LEN = 6

# The Safe Harbor classes of manifest.json, in their order.
CLASSES: tuple[str, ...] = (
    "name", "geography", "date", "phone", "fax", "email", "ssn", "mrn", "health-plan",
    "account", "licence", "vehicle", "device", "url", "ip", "biometric", "photo", "other-id",
)

# ---- synthetic source lists -------------------------------------------------------------------

GIVEN_F = (
    "Marisol", "Theodora", "Rosalind", "Philippa", "Octavia", "Henrietta", "Seraphina",
    "Wilhelmina", "Clementine", "Imogene", "Georgiana", "Evangeline", "Ottilie", "Maribel",
    "Lucinda", "Annabeth",
)
GIVEN_M = (
    "Evander", "Ignatius", "Cornelius", "Lysander", "Percival", "Augustin", "Leopold",
    "Bartholomew", "Casimir", "Desmond", "Thaddeus", "Alistair", "Barnaby", "Emmerich",
    "Florentin", "Gideon",
)
MIDDLE = (
    "Beatrix", "Ambrose", "Cordelia", "Horatio", "Juliette", "Lucius", "Marguerite", "Nikolai",
    "Philomena", "Rupert", "Sylvester", "Tabitha", "Valentina", "Winifred", "Leander", "Rosamund",
)
FAMILY = (
    "Okonkwo", "Lindqvist", "Fairweather", "Castellanos", "Abernathy", "Villanueva",
    "Thistlewood", "Kowalczyk", "Nakagawa", "Oyelaran", "Brannigan", "Marchetti", "Haverford",
    "Quintanilla", "Szymanski", "Achterberg", "Delacroix", "Pemberton", "Halvorsen",
    "Ravensworth", "Ellingsen", "Blackwood", "Montalvo", "Petrosyan", "Drummond", "Yamashiro",
    "Kristiansen", "Oduyemi", "Whitcombe", "Valdivieso", "Ashdown", "Lockhart",
)
# Providers are not PHI under Safe Harbor; kept apart from the patient pools.
DOCTORS = (
    ("40117", "Ferreira", "Anneliese"), ("52290", "Nwachukwu", "Tobias"),
    ("61834", "Sorensen", "Mirela"), ("70452", "Balogun", "Frederik"),
)
STREETS = (
    "Wexford Lane", "Thornbury Court", "Quarry Hill Road", "Larkspur Terrace",
    "Old Tannery Road", "Juniper Hollow Drive", "Kestrel Way", "Saddlebrook Circle",
    "Fenmore Avenue", "Harrowgate Street", "Bellweather Parkway", "Cobblestone Row",
)
AMP_STREET = "Barrow & Finch Lane"  # needs the HL7 escape \T\
# (zip3, state, state FIPS, city pool, county)
RESTRICTED = (
    ("036", "NH", "33", ("Ashuelot Falls", "Surry Mountain"), "Cheshire County"),
    ("059", "VT", "50", ("Canaan Notch", "Averill Ponds"), "Essex County"),
    ("102", "NY", "36", ("Whitehall Landing", "Bowling Slip"), "New York County"),
    ("556", "MN", "27", ("Lutsen Harbor", "Tofte Ridge"), "Lake County"),
    ("692", "NE", "31", ("Valentine Ridge", "Merriman Flats"), "Cherry County"),
    ("878", "NM", "35", ("Socorro Flats", "Magdalena Mesa"), "Socorro County"),
)
ORDINARY = (
    ("481", "MI", "26", ("Millbrook Heights", "Saline Crossing"), "Washtenaw County"),
    ("432", "OH", "39", ("Worthington Glen", "Hilliard Commons"), "Franklin County"),
    ("601", "IL", "17", ("Lakeshore Park", "Bensenville Grove"), "DuPage County"),
    ("752", "TX", "48", ("Cedar Hollow", "Mesquite Bend"), "Dallas County"),
    ("949", "CA", "06", ("Bayview Terrace", "Corte Madera Hills"), "Marin County"),
    ("981", "WA", "53", ("Alder Point", "Shoreline Bluffs"), "King County"),
)
VIN_WMI = ("1HG", "1FT", "JTD", "WVW", "5YJ", "KNA", "2T1")
INSURERS = (
    ("PPO500^Great Lakes PPO 500^99PLAN", "GLMH", "Great Lakes Mutual Health"),
    ("HMO250^Prairie Health HMO 250^99PLAN", "PRHP", "Prairie Health Partners"),
    ("EPO100^Cascade Choice EPO^99PLAN", "CSCD", "Cascade Choice Insurance"),
)
FACILITY = "GENHOSP"
PRACTICE = "HOSP"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# (LOINC, display, UCUM code, FHIR unit text)
HR = ("8867-4", "Heart rate", "/min", "beats/minute")
RR = ("9279-1", "Respiratory rate", "/min", "breaths/minute")
SPO2 = ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%")
TEMP = ("8310-5", "Body temperature", "Cel", "C")
SBP = ("8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg")
DBP = ("8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg")
WEIGHT = ("29463-7", "Body weight", "kg", "kg")
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")

# Strings the inputs hold that are not PHI: no listed value may occur inside one of them.
BENIGN: tuple[str, ...] = tuple(
    s
    for group in (
        (c[0] for c in (HR, RR, SPO2, TEMP, SBP, DBP, WEIGHT)),
        (c[1] for c in (HR, RR, SPO2, TEMP, SBP, DBP, WEIGHT)),
        (c[3] for c in (HR, RR, SPO2, TEMP, SBP, DBP, WEIGHT)),
        BP_PANEL,
        (LOINC, UCUM, V2_0203, OBS_CATEGORY, FACILITY, PRACTICE, "ICU", "4EAST", "ED", "Pulse",
         "99LOCAL", "72170-4", "Photographic image", "vital-signs", "Vital Signs", "2.5.1",
         "REGADT", "LABVITALS", "VITALFLOW", "VFHUB", "patient.record.created",
         "vitals.measurement.recorded", "registration", "bedside-monitor",
         "http://hl7.org/fhir/sid/us-ssn", "http://hl7.org/fhir/sid/passport-USA",
         "https://genhosp.example.org/fhir/sid/mrn", "https://genhosp.example.org/fhir/sid/account",
         "https://payer.example.com/fhir/sid/member",
         "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
         "http://terminology.hl7.org/CodeSystem/v2-0131", "http://terminology.hl7.org/CodeSystem/v3-RoleCode"),
        (d[1] for d in DOCTORS), (d[2] for d in DOCTORS),
        (i[0] for i in INSURERS), (i[2] for i in INSURERS),
    )
    for s in group
)

# ---- helpers ----------------------------------------------------------------------------------


def esc(value: str) -> str:
    """HL7 v2 escaping of one leaf value (default delimiters `|^~\\&`)."""
    out = []
    for ch in value:
        out.append({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}.get(ch, ch))
    return "".join(out)


def comp(*parts: str) -> str:
    """One HL7 field (or repetition) from its components, escaped, trailing empties dropped."""
    items = [esc(p) for p in parts]
    while items and items[-1] == "":
        items.pop()
    return "^".join(items)


def raw(*parts: str) -> str:
    """Like comp, but the parts are already encoded (e.g. a CE with its own `^`)."""
    items = list(parts)
    while items and items[-1] == "":
        items.pop()
    return "^".join(items)


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: encoded value}."""
    if name == "MSH":
        last = max(fields)
        body = [fields.get(i, "") for i in range(3, last + 1)]
        return "MSH|^~\\&|" + "|".join(body)
    last = max(fields) if fields else 0
    return "|".join([name] + [fields.get(i, "") for i in range(1, last + 1)])


def hl7_ts(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S")


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


class Deck(Generic[T]):
    """Draws from a list without repeats until it is exhausted, then reshuffles."""

    def __init__(self, rng: random.Random, items: Sequence[T]) -> None:
        self.rng = rng
        self.items = list(items)
        self.pile: list[T] = []

    def draw(self, avoid: Sequence[T] = ()) -> T:
        for _ in range(len(self.items) * 2 + 2):
            if not self.pile:
                self.pile = list(self.items)
                self.rng.shuffle(self.pile)
            item = self.pile.pop()
            if item not in avoid:
                return item
        return item


class Clock:
    """Date-times whose time of day is unique in the corpus and never midnight."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[tuple[int, int, int]] = set()

    def at(self, base: datetime, lo_s: int, hi_s: int) -> datetime:
        t = base + timedelta(seconds=self.rng.randint(lo_s, hi_s))
        if len(self.used) < 80_000:  # best effort for huge corpora
            while (t.hour, t.minute, t.second) in self.used or (t.hour, t.minute, t.second) == (0, 0, 0):
                t += timedelta(seconds=1)
        self.used.add((t.hour, t.minute, t.second))
        return t


class Unique:
    """Fresh identifiers: never the same string twice in the corpus."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()

    def make(self, build: Callable[[random.Random], str]) -> str:
        while True:
            value = build(self.rng)
            if value not in self.seen:
                self.seen.add(value)
                return value


def vin(rng: random.Random) -> str:
    """A 17-character VIN with a valid check digit (position 9)."""
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    alnum = letters + "0123456789"
    body = rng.choice(VIN_WMI) + "".join(rng.choice(alnum) for _ in range(5))
    year = rng.choice("FGHJKLMNPR")  # model years 2015-2024
    plant = rng.choice(letters)
    chars = list(body + "0" + year + plant + "".join(str(rng.randint(0, 9)) for _ in range(6)))
    trans = {c: v for c, v in zip("ABCDEFGH", range(1, 9))}
    trans.update({c: v for c, v in zip("JKLMN", range(1, 6))})
    trans.update({"P": 7, "R": 9})
    trans.update({c: v for c, v in zip("STUVWXYZ", range(2, 10))})
    weights = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
    total = sum((int(c) if c.isdigit() else trans[c]) * w for c, w in zip(chars, weights))
    check = total % 11
    chars[8] = "X" if check == 10 else str(check)
    return "".join(chars)


def new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# ---- the patient model ------------------------------------------------------------------------


@dataclass
class Person:
    given: str
    family: str
    middle: str = ""


@dataclass
class Address:
    line1: str
    line2: str
    city: str
    state: str
    zip: str
    county: str


@dataclass
class Phone:
    local: str  # "5550142"

    @property
    def hl7(self) -> str:
        return f"(555){self.local[:3]}-{self.local[3:]}"

    @property
    def dashed(self) -> str:
        return f"555-{self.local[:3]}-{self.local[3:]}"


@dataclass
class Vitals:
    hr: int
    rr: int
    spo2: int
    temp: float
    sbp: int
    dbp: int
    weight: float
    pulse_local: int


@dataclass
class Patient:
    index: int
    pid: str
    name: Person
    prefix: str
    sex: str  # F / M
    maiden: str
    birth: date
    address: Address
    phone: Phone
    fax: Phone
    email: str
    url: str
    portal_url: str
    photo_url: str
    ip: str
    photo_b64: str
    ssn: str
    mrn: str
    account: str
    member_id: str
    policy: str
    licence: str
    licence_expiry: str
    vin: str
    device: str
    biometric: str
    passport: str
    visit: str
    order_placer: str
    order_filler: str
    relative: Person
    relationship: tuple[str, str]  # (v2 0063 code, text)
    relative_address: Address
    relative_phone: Phone
    insured: Person
    insured_rel: str  # SEL / SPO / ...
    insurer: tuple[str, str, str]
    patient_class: str
    location: str
    doctor: tuple[str, str, str]
    fips: str
    # date-times
    registered: datetime
    admit: datetime
    a01_evn: datetime
    a01_msh: datetime
    a08_evn: datetime
    a08_msh: datetime
    observed: datetime
    observed_local: datetime
    oru_msh: datetime
    discharge: datetime
    a03_evn: datetime
    a03_msh: datetime
    death: datetime | None
    envelope_times: list[tuple[datetime, datetime]]  # (effectiveAt, event timestamp)
    control_ids: list[str]
    vitals: Vitals
    env_vitals: list[tuple[int, int]]  # (heart rate, SpO2) of each envelope event
    env_bp: tuple[int, int]  # (systolic, diastolic) of the envelope's blood pressure
    note: str = ""

    @property
    def gender(self) -> str:
        return "female" if self.sex == "F" else "male"


def make_patients(n: int, seed: int) -> list[Patient]:
    rng = random.Random(seed)
    clock = Clock(rng)
    uniq = Unique(rng)
    given_f, given_m = Deck(rng, GIVEN_F), Deck(rng, GIVEN_M)
    middles, families, streets = Deck(rng, MIDDLE), Deck(rng, FAMILY), Deck(rng, STREETS)
    phones = Deck(rng, [f"55501{d:02d}" for d in range(100)])
    old = set(rng.sample(range(n), min(2, n)))
    deceased = rng.randrange(n)
    used_ips: set[str] = set()
    patients: list[Patient] = []
    for i in range(n):
        sex = rng.choice("FM")
        given = (given_f if sex == "F" else given_m).draw()
        family = families.draw()
        middle = middles.draw(avoid=(given,))
        maiden = families.draw(avoid=(family,))
        if i in old:
            birth = date(rng.randint(1925, 1934), rng.randint(1, 12), rng.randint(1, 28))
        else:
            birth = date(rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28))
        zip3, state, fips, cities, county = (RESTRICTED if i % 2 == 0 else ORDINARY)[(i // 2) % 6]

        def zip4(r: random.Random, z3: str = zip3) -> str:
            return f"{z3}{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"

        street = AMP_STREET if i == 0 else streets.draw()
        line1 = f"{rng.randint(12, 9890)} {street}"
        line2 = rng.choice(["", f"Apt {rng.randint(101, 999)}{rng.choice('ABCD')}", f"Unit {rng.randint(10, 99)}-{rng.choice('ABC')}"])
        address = Address(line1, line2, rng.choice(cities), state, uniq.make(zip4), county)

        admit_day = datetime(2026, 1, 5, tzinfo=timezone.utc) + timedelta(days=rng.randint(0, 330))
        age = 2026 - birth.year
        if age < 25:
            relationship = ("MTH", "Mother")
            relative = Person(given_f.draw(avoid=(given,)), family)
        elif age <= 70:
            relationship = ("SPO", "Spouse")
            relative = Person((given_m if sex == "F" else given_f).draw(), family)
        else:
            relationship = ("CHD", "Child")
            relative = Person(rng.choice([given_f, given_m]).draw(avoid=(given,)), families.draw(avoid=(family,)))
        if relationship[0] == "SPO":
            relative_address = address
        else:
            rstreet = streets.draw(avoid=(street,))
            relative_address = Address(
                f"{rng.randint(12, 9890)} {rstreet}", "", rng.choice(cities), state, uniq.make(zip4), county
            )
        if relationship[0] in ("SPO", "MTH") and rng.random() < 0.6:
            insured, insured_rel = relative, relationship[0]
        else:
            insured, insured_rel = Person(given, family, middle), "SEL"

        slug = f"{given}.{family}".lower()
        ip = ""
        while not ip or ip in used_ips:
            net = rng.choice(("10.{a}.{b}.{c}", "172.{a16}.{b}.{c}", "192.168.{b}.{c}", "198.51.100.{c}", "203.0.113.{c}"))
            ip = net.format(a=rng.randint(10, 250), a16=rng.randint(16, 31), b=rng.randint(10, 250), c=rng.randint(10, 99))
        used_ips.add(ip)
        url_style = i % 3
        if url_style == 0:
            url = f"https://www.example.net/~{given[0].lower()}{family.lower()}"
        elif url_style == 1:
            url = f"https://{family.lower()}-family.example.com/{given.lower()}"
        else:
            url = f"https://example.org/people/{given.lower()}-{family.lower()}"
        pid = uniq.make(lambda r: "P" + digits(r, 7))
        mrn = uniq.make(lambda r: "MRN" + digits(r, 8))
        visit = uniq.make(lambda r: "V" + digits(r, 9))
        photo = bytes.fromhex("ffd8ffe000104a4649460001") + bytes(rng.getrandbits(8) for _ in range(48))

        # Date-times, each with a time of day of its own.
        admit = clock.at(admit_day, 0, 86_399)
        patient_class, location = (("I", "ICU^{r}^{b}^HOSP"), ("O", "4EAST^{r}^{b}^HOSP"), ("E", "ED^{r}^^HOSP"))[i % 3]
        if patient_class == "I":
            location = location.format(r=rng.randint(101, 120), b=rng.choice("AB"))
        elif patient_class == "O":
            location = location.format(r=rng.randint(401, 430), b=rng.choice("AB"))
        else:
            location = location.format(r=rng.randint(1, 24))
        registered = clock.at(admit, -900, -120)
        a01_evn = clock.at(admit, 20, 90)
        a01_msh = clock.at(a01_evn, 1, 30)
        a08_evn = clock.at(admit, 3_600, 3 * 3_600)
        a08_msh = clock.at(a08_evn, 1, 30)
        observed = clock.at(admit, 1_800, 4 * 3_600)
        oru_msh = clock.at(observed, 60, 600)
        observed_local = clock.at(observed, 300, 1_200)
        stay = {"I": (86_400, 6 * 86_400), "O": (6 * 3_600, 20 * 3_600), "E": (3_600, 4 * 3_600)}[patient_class]
        discharge = clock.at(max(observed_local, a08_msh), *stay)
        a03_evn = clock.at(discharge, 10, 120)
        a03_msh = clock.at(a03_evn, 1, 30)
        death = clock.at(discharge, -600, -120) if i == deceased else None
        span = (discharge - observed_local).total_seconds()
        envelope_times = []
        for k in (1, 2, 3):
            eff = clock.at(observed_local + timedelta(seconds=span * k / 4), -30, 30)
            envelope_times.append((eff, clock.at(eff, 2, 30)))

        sick = patient_class != "O" and rng.random() < 0.5
        vitals = Vitals(
            hr=rng.randint(92, 128) if sick else rng.randint(58, 96),
            rr=rng.randint(21, 28) if sick else rng.randint(12, 19),
            spo2=rng.randint(88, 93) if sick else rng.randint(95, 100),
            temp=round(rng.uniform(38.1, 39.4) if sick else rng.uniform(36.2, 37.4), 1),
            sbp=rng.randint(88, 104) if sick else rng.randint(108, 142),
            dbp=rng.randint(48, 62) if sick else rng.randint(64, 90),
            weight=round(rng.uniform(48.0, 112.0), 1),
            pulse_local=0,
        )
        vitals.pulse_local = max(40, vitals.hr + rng.randint(-6, 6))
        env_vitals = [(vitals.hr + rng.randint(-8, 8), min(100, vitals.spo2 + rng.randint(-2, 2))) for _ in range(3)]

        p = Patient(
            index=i,
            pid=pid,
            name=Person(given, family, middle),
            prefix=rng.choice(("Ms.", "Mrs.", "Dr.")) if sex == "F" else rng.choice(("Mr.", "Dr.")),
            sex=sex,
            maiden=maiden,
            birth=birth,
            address=address,
            phone=Phone(phones.draw()),
            fax=Phone(phones.draw()),
            email=f"{slug}@example.org",
            url=url,
            portal_url=f"https://portal.example.com/chart?mrn={mrn}&visit={visit}",
            photo_url=f"https://photos.example.com/id/{pid}.jpg",
            ip=ip,
            photo_b64=base64.b64encode(photo).decode("ascii"),
            ssn=uniq.make(lambda r: f"{r.randint(900, 999)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}"),
            mrn=mrn,
            account=uniq.make(lambda r: "AC" + digits(r, 10)),
            member_id=uniq.make(lambda r: "HP" + "".join(r.choice("BCKMRXZ") for _ in range(3)) + digits(r, 9)),
            policy=uniq.make(lambda r: "POL" + digits(r, 10)),
            licence=uniq.make(lambda r, s=state: "DL" + s[0] + digits(r, 9)),
            licence_expiry=f"{rng.randint(2027, 2031)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
            vin=uniq.make(vin),
            device=uniq.make(lambda r: "DEV-" + "".join(r.choice("MXPKWZ") for _ in range(2)) + digits(r, 8)),
            biometric=uniq.make(lambda r: "FP-" + "".join(r.choice("0123456789ABCDEF") for _ in range(24))),
            passport=uniq.make(lambda r: "PPN" + digits(r, 9)),
            visit=visit,
            order_placer=uniq.make(lambda r: "ORD" + digits(r, 8)),
            order_filler=uniq.make(lambda r: "FIL" + digits(r, 8)),
            relative=relative,
            relationship=relationship,
            relative_address=relative_address,
            relative_phone=Phone(phones.draw()),
            insured=insured,
            insured_rel=insured_rel,
            insurer=rng.choice(INSURERS),
            patient_class=patient_class,
            location=location,
            doctor=rng.choice(DOCTORS),
            fips=fips,
            registered=registered,
            admit=admit,
            a01_evn=a01_evn,
            a01_msh=a01_msh,
            a08_evn=a08_evn,
            a08_msh=a08_msh,
            observed=observed,
            observed_local=observed_local,
            oru_msh=oru_msh,
            discharge=discharge,
            a03_evn=a03_evn,
            a03_msh=a03_msh,
            death=death,
            envelope_times=envelope_times,
            control_ids=[uniq.make(lambda r: "MSG" + digits(r, 10)) for _ in range(4)],
            vitals=vitals,
            env_vitals=env_vitals,
            env_bp=(vitals.sbp + rng.randint(-10, 10), vitals.dbp + rng.randint(-6, 6)),
        )
        p.note = (
            f"Spoke with {given} {middle} {family} at {p.phone.hl7}, {p.email}, SSN {p.ssn}, "
            f"MRN {p.mrn}, see {p.portal_url}, from {p.ip} on {admit.strftime('%m/%d/%Y')}"
        )
        patients.append(p)
    return patients


# ---- PHI registry -----------------------------------------------------------------------------


@dataclass
class Registry:
    values: dict[str, str] = field(default_factory=dict)  # value -> class, insertion-ordered
    per_patient: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, p: Patient, cls: str, value: str, *, hl7: bool = False) -> None:
        assert cls in CLASSES, cls
        spellings = [value] + ([esc(value)] if hl7 and esc(value) != value else [])
        for v in spellings:
            self.values.setdefault(v, cls)
            counts = self.per_patient.setdefault(p.pid, {})
            counts[cls] = counts.get(cls, 0) + 1


def register(p: Patient, reg: Registry) -> None:
    """Every identifying value of `p`, in every spelling the inputs use."""
    names = [p.name.given, p.name.family, p.name.middle, p.maiden,
             p.relative.given, p.relative.family, p.insured.given, p.insured.family]
    for n in names:
        if len(n) >= 4:
            reg.add(p, "name", n, hl7=True)
    for a in (p.address, p.relative_address):
        for v in (a.line1, a.line2, a.city, a.county, a.zip):
            if v:
                reg.add(p, "geography", v, hl7=True)
    reg.add(p, "date", p.birth.strftime("%Y%m%d"))
    reg.add(p, "date", p.birth.isoformat())
    reg.add(p, "date", p.licence_expiry)
    reg.add(p, "date", p.admit.strftime("%m/%d/%Y"))
    for t in (p.a01_evn, p.a01_msh, p.a08_evn, p.a08_msh, p.admit, p.oru_msh, p.observed_local,
              p.discharge, p.a03_evn, p.a03_msh):
        reg.add(p, "date", hl7_ts(t))
    reg.add(p, "date", hl7_ts(p.observed))
    reg.add(p, "date", rfc3339(p.observed))
    reg.add(p, "date", rfc3339(p.registered))
    for eff, stamp in p.envelope_times:
        reg.add(p, "date", rfc3339(eff))
        reg.add(p, "date", rfc3339(stamp))
    if p.death is not None:
        reg.add(p, "date", hl7_ts(p.death))
        reg.add(p, "date", rfc3339(p.death))
    for ph in (p.phone, p.relative_phone):
        reg.add(p, "phone", ph.hl7)
        reg.add(p, "phone", ph.dashed)
        reg.add(p, "phone", ph.local)
    reg.add(p, "fax", p.fax.dashed)
    reg.add(p, "fax", p.fax.local)
    reg.add(p, "email", p.email)
    reg.add(p, "ssn", p.ssn)
    reg.add(p, "mrn", p.mrn)
    reg.add(p, "health-plan", p.member_id)
    reg.add(p, "health-plan", p.policy)
    reg.add(p, "account", p.account)
    reg.add(p, "licence", p.licence)
    reg.add(p, "vehicle", p.vin)
    reg.add(p, "device", p.device)
    for u in (p.url, p.portal_url, p.photo_url):
        reg.add(p, "url", u, hl7=True)
    reg.add(p, "ip", p.ip)
    reg.add(p, "biometric", p.biometric)
    reg.add(p, "photo", p.photo_b64)
    for v in (p.pid, p.passport, p.visit, p.order_placer, p.order_filler, *p.control_ids):
        reg.add(p, "other-id", v)


# ---- HL7 v2 -----------------------------------------------------------------------------------


def msh(p: Patient, app: str, t: datetime, kind: str, control: str) -> str:
    return segment("MSH", {
        3: app, 4: FACILITY, 5: "VITALFLOW", 6: "VFHUB", 7: hl7_ts(t), 9: kind, 10: control,
        11: "P", 12: HL7_VERSION, 15: "AL", 16: "NE",
    })


def xad(a: Address) -> str:
    return comp(a.line1, a.line2, a.city, a.state, a.zip, "USA", "H", "", a.county)


def xtn_phone(ph: Phone, use: str = "PRN", equipment: str = "PH", formatted: bool = True) -> str:
    return comp(ph.hl7 if formatted else "", use, equipment, "", "", "555", ph.local)


def pid_segment(p: Patient, with_death: bool) -> str:
    cx = [
        comp(p.pid, "", "", FACILITY, "PI"),
        comp(p.mrn, "", "", FACILITY, "MR"),
        comp(p.ssn, "", "", "USSSA", "SS"),
        comp(p.account, "", "", FACILITY, "AN"),
        comp(p.licence, "", "", p.address.state, "DL"),
        comp(p.member_id, "", "", p.insurer[1], "MB"),
        comp(p.vin, "", "", p.address.state + "DMV", "VIN"),
        comp(p.biometric, "", "", FACILITY, "BIO"),
        comp(p.passport, "", "", "USDOS", "PPN"),
    ]
    phones = "~".join([
        xtn_phone(p.phone),
        comp("", "NET", "Internet", p.email),
        comp("", "NET", "X.400", p.url),
    ])
    fields = {
        1: "1",
        3: "~".join(cx),
        5: comp(p.name.family, p.name.given, p.name.middle, "", p.prefix, "", "L"),
        6: comp(p.maiden, "", "", "", "", "", "M"),
        7: p.birth.strftime("%Y%m%d"),
        8: p.sex,
        11: xad(p.address),
        13: phones,
        14: xtn_phone(p.fax, "WPN", "FX", formatted=False),
        15: "eng^English^ISO6392",
        18: comp(p.account),
        19: p.ssn,
        20: comp(p.licence, p.address.state, p.licence_expiry),
    }
    if with_death and p.death is not None:
        fields[29] = hl7_ts(p.death)
        fields[30] = "Y"
    return segment("PID", fields)


def nk1_segment(p: Patient) -> str:
    return segment("NK1", {
        1: "1",
        2: comp(p.relative.family, p.relative.given),
        3: comp(p.relationship[0], p.relationship[1], "HL70063"),
        4: xad(p.relative_address),
        5: xtn_phone(p.relative_phone),
        7: "N^Next-of-Kin^HL70131",
    })


def pv1_segment(p: Patient, discharged: bool) -> str:
    doc = comp(p.doctor[0], p.doctor[1], p.doctor[2], "", "", "Dr.")
    fields = {
        1: "1",
        2: p.patient_class,
        3: p.location,
        4: {"I": "U", "O": "R", "E": "E"}[p.patient_class],
        7: doc,
        10: {"I": "MED", "O": "MED", "E": "EM"}[p.patient_class],
        17: doc,
        18: p.patient_class,
        19: comp(p.visit, "", "", FACILITY, "VN"),
        44: hl7_ts(p.admit),
    }
    if discharged:
        fields[36] = "20" if p.death is not None else "01"
        fields[45] = hl7_ts(p.discharge)
    return segment("PV1", fields)


def in1_segment(p: Patient) -> str:
    plan, company_id, company = p.insurer
    return segment("IN1", {
        1: "1",
        2: plan,
        3: comp(company_id, "", "", "NAIC", "NIIP"),
        4: comp(company),
        16: comp(p.insured.family, p.insured.given, p.insured.middle),
        17: comp(p.insured_rel, {"SEL": "Self", "SPO": "Spouse", "MTH": "Mother"}[p.insured_rel], "HL70063"),
        36: comp(p.policy),
    })


def zpi_segment(p: Patient) -> str:
    return segment("ZPI", {1: "1", 2: comp(p.ip), 3: comp(p.vin), 4: comp(p.biometric)})


def adt(p: Patient, event: str) -> str:
    n, evn_t, msh_t, structure = {
        "A01": (0, p.a01_evn, p.a01_msh, "ADT_A01"),
        "A08": (1, p.a08_evn, p.a08_msh, "ADT_A01"),
        "A03": (3, p.a03_evn, p.a03_msh, "ADT_A03"),
    }[event]
    segs = [
        msh(p, "REGADT", msh_t, f"ADT^{event}^{structure}", p.control_ids[n]),
        segment("EVN", {1: event, 2: hl7_ts(evn_t)}),
        pid_segment(p, with_death=event == "A03"),
        nk1_segment(p),
        pv1_segment(p, discharged=event == "A03"),
    ]
    if event != "A03":
        segs.append(in1_segment(p))
    segs.append(zpi_segment(p))
    return "\r".join(segs) + "\r"


def obx(set_id: int, value_type: str, code: str, sub_id: str, value: str, units: str, ref: str,
        flag: str, t: datetime, device: str) -> str:
    return segment("OBX", {
        1: str(set_id), 2: value_type, 3: code, 4: sub_id, 5: value, 6: units, 7: ref, 8: flag,
        11: "F", 14: hl7_ts(t), 18: comp(device),
    })


def flag(value: float, lo: float, hi: float) -> str:
    return "L" if value < lo else "H" if value > hi else "N"


def oru(p: Patient) -> str:
    v, t, dev = p.vitals, p.observed, p.device

    def loinc(c: tuple[str, ...]) -> str:
        return raw(esc(c[0]), esc(c[1]), "LN")

    def unit(u: str) -> str:
        return raw(esc(u), esc(u), "UCUM")

    segs = [
        msh(p, "LABVITALS", p.oru_msh, "ORU^R01^ORU_R01", p.control_ids[2]),
        pid_segment(p, with_death=False),
        pv1_segment(p, discharged=False),
        segment("OBR", {
            1: "1", 2: comp(p.order_placer, FACILITY), 3: comp(p.order_filler, "VITALFLOW"),
            4: "85353-1^Vital signs, weight, height, head circumference, oxygen saturation and BMI panel^LN",
            7: hl7_ts(t), 25: "F",
        }),
        obx(1, "NM", loinc(HR), "", str(v.hr), unit("/min"), "60-100", flag(v.hr, 60, 100), t, dev),
        segment("NTE", {1: "1", 3: esc(p.note)}),
        obx(2, "NM", loinc(RR), "", str(v.rr), unit("/min"), "12-20", flag(v.rr, 12, 20), t, dev),
        obx(3, "NM", loinc(SPO2), "", str(v.spo2), unit("%"), "95-100", flag(v.spo2, 95, 100), t, dev),
        obx(4, "NM", loinc(TEMP), "", f"{v.temp:.1f}", unit("Cel"), "36.1-37.8", flag(v.temp, 36.1, 37.8), t, dev),
        obx(5, "NM", loinc(SBP), "1", str(v.sbp), unit("mm[Hg]"), "90-140", flag(v.sbp, 90, 140), t, dev),
        obx(6, "NM", loinc(DBP), "1", str(v.dbp), unit("mm[Hg]"), "60-90", flag(v.dbp, 60, 90), t, dev),
        obx(7, "NM", loinc(WEIGHT), "", f"{v.weight:.1f}", unit("kg"), "", "", t, dev),
        obx(8, "NM", "HR^Pulse^99LOCAL", "", str(v.pulse_local), "bpm", "60-100",
            flag(v.pulse_local, 60, 100), p.observed_local, dev),
        obx(9, "ED", "72170-4^Photographic image^LN", "", raw("", "IM", "JPEG", "Base64", p.photo_b64),
            "", "", "", t, dev),
    ]
    return "\r".join(segs) + "\r"


# ---- FHIR R4 ----------------------------------------------------------------------------------


def v2_type(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": V2_0203, "code": code, "display": display}], "text": display}


def fhir_address(a: Address) -> dict[str, Any]:
    return {
        "use": "home", "type": "physical", "line": [x for x in (a.line1, a.line2) if x],
        "city": a.city, "district": a.county, "state": a.state, "postalCode": a.zip, "country": "US",
    }


def quantity(value: float, c: tuple[str, ...]) -> dict[str, Any]:
    return {"value": value, "unit": c[3], "system": UCUM, "code": c[2]}


def coding(c: tuple[str, ...]) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": c[0], "display": c[1]}], "text": c[1]}


def bundle(p: Patient, rng: random.Random) -> dict[str, Any]:
    patient_uuid = new_uuid(rng)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": p.pid,
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
            "valueString": p.maiden,
        }],
        "identifier": [
            {"use": "usual", "type": v2_type("MR", "Medical record number"),
             "system": "https://genhosp.example.org/fhir/sid/mrn", "value": p.mrn},
            {"use": "official", "type": v2_type("SS", "Social Security number"),
             "system": "http://hl7.org/fhir/sid/us-ssn", "value": p.ssn},
            {"type": v2_type("DL", "Driver's license number"),
             "system": f"urn:oid:2.16.840.1.113883.4.3.{int(p.fips)}", "value": p.licence},
            {"type": v2_type("MB", "Member Number"),
             "system": "https://payer.example.com/fhir/sid/member", "value": p.member_id},
            {"type": v2_type("AN", "Account number"),
             "system": "https://genhosp.example.org/fhir/sid/account", "value": p.account},
            {"type": v2_type("PPN", "Passport number"),
             "system": "http://hl7.org/fhir/sid/passport-USA", "value": p.passport},
        ],
        "active": True,
        "name": [{"use": "official", "family": p.name.family, "given": [p.name.given, p.name.middle],
                  "prefix": [p.prefix]}],
        "telecom": [
            {"system": "phone", "value": p.phone.dashed, "use": "home", "rank": 1},
            {"system": "fax", "value": p.fax.dashed, "use": "work"},
            {"system": "email", "value": p.email, "use": "home"},
            {"system": "url", "value": p.url, "use": "home"},
        ],
        "gender": p.gender,
        "birthDate": p.birth.isoformat(),
    }
    if p.death is not None:
        patient["deceasedDateTime"] = rfc3339(p.death)
    patient.update({
        "address": [fhir_address(p.address)],
        "photo": [{"contentType": "image/jpeg", "data": p.photo_b64, "url": p.photo_url,
                   "title": "Registration photo"}],
        "contact": [{
            "relationship": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N",
                             "display": "Next-of-Kin"}]},
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                             "code": {"SPO": "SPS", "MTH": "MTH", "CHD": "CHILD"}[p.relationship[0]],
                             "display": p.relationship[1].lower()}]},
            ],
            "name": {"family": p.relative.family, "given": [p.relative.given]},
            "telecom": [{"system": "phone", "value": p.relative_phone.dashed, "use": "home"}],
            "address": fhir_address(p.relative_address),
        }],
    })
    subject = {"reference": f"urn:uuid:{patient_uuid}"}
    category = [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}],
                 "text": "Vital Signs"}]
    t = rfc3339(p.observed)
    v = p.vitals

    def obs(code: tuple[str, ...], value: float, **extra: Any) -> dict[str, Any]:
        o: dict[str, Any] = {
            "resourceType": "Observation", "status": "final", "category": category,
            "code": coding(code), "subject": subject, "effectiveDateTime": t,
            "valueQuantity": quantity(value, code),
        }
        o.update(extra)
        return o

    observations = [
        obs(HR, v.hr, note=[{"text": p.note}], device={"display": p.device}),
        obs(RR, v.rr),
        obs(SPO2, v.spo2),
        obs(TEMP, v.temp),
        {
            "resourceType": "Observation", "status": "final", "category": category,
            "code": {"coding": [{"system": LOINC, "code": BP_PANEL[0], "display": BP_PANEL[1]}],
                     "text": "Blood pressure"},
            "subject": subject, "effectiveDateTime": t,
            "component": [
                {"code": coding(SBP), "valueQuantity": quantity(v.sbp, SBP)},
                {"code": coding(DBP), "valueQuantity": quantity(v.dbp, DBP)},
            ],
        },
        obs(WEIGHT, v.weight),
    ]
    entries = [{"fullUrl": f"urn:uuid:{patient_uuid}", "resource": patient,
                "request": {"method": "PUT", "url": f"Patient/{p.pid}"}}]
    for o in observations:
        entries.append({"fullUrl": f"urn:uuid:{new_uuid(rng)}", "resource": o,
                        "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# ---- envelopes --------------------------------------------------------------------------------


def envelopes(p: Patient, rng: random.Random) -> list[dict[str, Any]]:
    correlation = new_uuid(rng)

    def meta(event_type: str, source: str, t: datetime) -> dict[str, Any]:
        return {"eventId": new_uuid(rng), "eventType": event_type, "eventSource": source,
                "correlationId": correlation, "timestamp": rfc3339(t), "version": "1.0"}

    a = p.address
    lines = [{
        "metadata": meta("patient.record.created", "registration", p.registered),
        "payload": {
            "patientId": p.pid,
            "firstName": p.name.given,
            "lastName": p.name.family,
            "dateOfBirth": p.birth.isoformat(),
            "gender": p.gender,
            "address": {"street": a.line1, "city": a.city, "state": a.state, "postalCode": a.zip,
                        "country": "US"},
            "phoneNumber": p.phone.dashed,
            "fax": p.fax.dashed,
            "email": p.email,
            "url": p.url,
            "ipAddress": p.ip,
            "photo": p.photo_b64,
            "ssn": p.ssn,
            "mrn": p.mrn,
            "identifiers": [
                {"type": "account", "value": p.account},
                {"type": "health-plan", "value": p.member_id},
                {"type": "licence", "value": p.licence},
                {"type": "vehicle", "value": p.vin},
                {"type": "device", "value": p.device},
                {"type": "biometric", "value": p.biometric},
                {"type": "other", "value": p.passport},
            ],
            "notes": p.note,
        },
    }]
    kinds = ("heart-rate", "spo2", "blood-pressure")
    for k, (kind, (eff, stamp)) in enumerate(zip(kinds, p.envelope_times)):
        hr, spo2 = p.env_vitals[k]
        payload: dict[str, Any] = {
            "patientId": p.pid, "measurementId": new_uuid(rng), "type": kind,
            "value": None, "unit": None, "systolic": None, "diastolic": None,
            "effectiveAt": rfc3339(eff), "deviceId": p.device, "note": p.note,
        }
        if kind == "heart-rate":
            payload.update(value=hr, unit="/min")
        elif kind == "spo2":
            payload.update(value=spo2, unit="%")
        else:
            payload.update(unit="mm[Hg]", systolic=p.env_bp[0], diastolic=p.env_bp[1])
        lines.append({"metadata": meta("vitals.measurement.recorded", "bedside-monitor", stamp),
                      "payload": payload})
    return lines


# ---- the de-identification report the inputs call for ----------------------------------------
#
# What the anonymize node must count for each input file under the default actions (identifiers
# redacted; patient, measurement and visit ids pseudonymized), worked out here from the values
# written above and the ingest mapping (HL7 v2 PID, NK1, IN1, PV1, OBX; FHIR Patient and
# Observation; envelope patients and readings). Date counts are keyed `date:*`: their action is the
# job's `dates` policy. Kept apart from the engine's code so that the test compares two accounts.


def _zip_action(zip_code: str) -> str:
    digits = zip_code.replace("-", "")
    if not digits.isdigit() or len(digits) not in (5, 9):
        return "zip:redact"
    return "zip:restrict-000" if digits[:3] in {z[0] for z in RESTRICTED} else "zip:generalize"


def _birth(p: Patient, death: bool, c: Counter) -> None:
    # Ages are drawn far from the 89/90 boundary (born 1925-1934 or 1940-2005).
    over_89 = p.birth.year <= 1934
    if over_89:
        c["age-over-89:generalize"] += 1
        c["birth-date:redact"] += 1
    else:
        c["birth-date:generalize"] += 1
    if death and p.death is not None:
        c["death-date:redact" if over_89 else "death-date:generalize"] += 1


def _parts(*values: str) -> int:
    return sum(1 for v in values if v)


def _patient_common(p: Patient, c: Counter) -> None:
    c["patient-id:crypto-hash"] += 1
    c["date:*"] += 1  # recorded_at
    c[_zip_action(p.address.zip)] += 1


def _adt_counts(p: Patient, event: str) -> Counter:
    c: Counter = Counter()
    # The patient record: PID, NK1, IN1 (A01 and A08), PV1-19 as another identifier.
    _patient_common(p, c)
    _birth(p, death=event == "A03", c=c)
    a, r = p.address, p.relative_address
    c["name:redact"] += _parts(p.name.family, p.name.given, p.name.middle)  # PID-5
    c["name:redact"] += _parts(p.maiden)  # PID-6
    c["name:redact"] += _parts(p.relative.family, p.relative.given)  # NK1-2
    c["address:redact"] += _parts(a.line1, a.line2, a.city, a.county)  # PID-11
    c["address:redact"] += _parts(r.line1, r.line2, r.city, r.county)  # NK1-4
    c["zip:redact"] += 1  # NK1-4's ZIP
    c["phone:redact"] += 2  # PID-13 and NK1-5
    for cls in ("email", "url", "fax", "mrn", "vehicle", "biometric"):
        c[f"{cls}:redact"] += 1
    for cls in ("ssn", "account", "licence"):  # PID-3 and PID-19 / PID-18 / PID-20
        c[f"{cls}:redact"] += 2
    c["health-plan:redact"] += 1  # PID-3 MB
    c["other-id:redact"] += 2  # PID-3 PPN, PV1-19
    if event != "A03":
        c["name:redact"] += _parts(p.insured.family, p.insured.given, p.insured.middle)  # IN1-16
        c["health-plan:redact"] += 1  # IN1-36
    # The encounter record: PV1-19, PV1-44, PV1-45 (A03).
    c["patient-id:crypto-hash"] += 1
    c["visit-number:crypto-hash"] += 1
    c["date:*"] += 3 if event == "A03" else 2
    return c


def _reading(c: Counter, *, measurement_id: bool, device: bool, notes: int) -> None:
    c["patient-id:crypto-hash"] += 1
    c["date:*"] += 1
    if measurement_id:
        c["measurement-id:crypto-hash"] += 1
    if device:
        c["device:redact"] += 1
    c["free-text:drop"] += notes


def _oru_counts(p: Patient) -> Counter:
    # Seven readings: OBX 1-8 with systolic and diastolic as one blood pressure; the image of
    # OBX 9 is not a vital sign and makes no record. The NTE after OBX 1 is its note.
    c: Counter = Counter()
    for k in range(7):
        _reading(c, measurement_id=True, device=True, notes=1 if k == 0 else 0)
    return c


def _bundle_counts(p: Patient) -> Counter:
    c: Counter = Counter()
    _patient_common(p, c)
    _birth(p, death=True, c=c)
    a, r = p.address, p.relative_address
    c["name:redact"] += _parts(p.name.family, p.name.given, p.name.middle)
    c["name:redact"] += _parts(p.relative.family, p.relative.given)  # contact
    c["address:redact"] += _parts(a.line1, a.line2, a.city, a.county)
    c["address:redact"] += _parts(r.line1, r.line2, r.city, r.county)
    c["zip:redact"] += 1  # the contact's
    c["phone:redact"] += 2
    for cls in ("fax", "email", "url", "mrn", "ssn", "licence", "health-plan", "account", "other-id",
                "photo"):
        c[f"{cls}:redact"] += 1
    # Six Observations without ids; the heart rate's carries the note and the device.
    for k in range(6):
        _reading(c, measurement_id=False, device=k == 0, notes=1 if k == 0 else 0)
    return c


def _envelope_counts(p: Patient) -> Counter:
    c: Counter = Counter()
    _patient_common(p, c)
    _birth(p, death=False, c=c)
    c["name:redact"] += _parts(p.name.given, p.name.family)
    c["address:redact"] += _parts(p.address.line1, p.address.city)
    for cls in ("phone", "fax", "email", "url", "ip", "photo", "ssn", "mrn", "account",
                "health-plan", "licence", "vehicle", "device", "biometric", "other-id"):
        c[f"{cls}:redact"] += 1
    c["free-text:drop"] += 1
    for _ in p.envelope_times[:3]:
        _reading(c, measurement_id=True, device=True, notes=1)
    return c


def expected_report(patients: Sequence[Patient]) -> dict[str, dict[str, int]]:
    """The report counts each input (`hl7v2/FILE`, `fhir/FILE`, `envelope.ndjson`) calls for."""
    out: dict[str, dict[str, int]] = {}
    envelope: Counter = Counter()
    for p in patients:
        out[f"hl7v2/{p.pid}-1-adt-a01.hl7"] = dict(_adt_counts(p, "A01"))
        out[f"hl7v2/{p.pid}-2-adt-a08.hl7"] = dict(_adt_counts(p, "A08"))
        out[f"hl7v2/{p.pid}-3-oru-r01.hl7"] = dict(_oru_counts(p))
        out[f"hl7v2/{p.pid}-4-adt-a03.hl7"] = dict(_adt_counts(p, "A03"))
        out[f"fhir/{p.pid}.json"] = dict(_bundle_counts(p))
        envelope += _envelope_counts(p)
    out["envelope.ndjson"] = dict(envelope)
    return out


# ---- writing and checking ---------------------------------------------------------------------


def write_corpus(out: Path, n: int, seed: int) -> tuple[dict[str, Any], list[str]]:
    patients = make_patients(n, seed)
    rng = random.Random(seed * 7919 + 1)  # uuids of bundles and events
    reg = Registry()
    hl7_dir, fhir_dir = out / "hl7v2", out / "fhir"
    hl7_dir.mkdir(parents=True, exist_ok=True)
    fhir_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*hl7_dir.glob("*.hl7"), *fhir_dir.glob("*.json")]:  # of an earlier, larger run
        stale.unlink()
    hl7_files = fhir_files = 0
    env_lines: list[str] = []
    for p in patients:
        register(p, reg)
        for name, text in ((f"{p.pid}-1-adt-a01.hl7", adt(p, "A01")),
                           (f"{p.pid}-2-adt-a08.hl7", adt(p, "A08")),
                           (f"{p.pid}-3-oru-r01.hl7", oru(p)),
                           (f"{p.pid}-4-adt-a03.hl7", adt(p, "A03"))):
            (hl7_dir / name).write_bytes(text.encode("utf-8"))
            hl7_files += 1
        (fhir_dir / f"{p.pid}.json").write_text(json.dumps(bundle(p, rng), indent=2) + "\n", encoding="utf-8")
        fhir_files += 1
        env_lines.extend(json.dumps(e, separators=(",", ":")) for e in envelopes(p, rng))
        missing = [c for c in CLASSES if not reg.per_patient.get(p.pid, {}).get(c)]
        if missing:
            raise AssertionError(f"patient {p.index} has no value of {missing}")
    (out / "envelope.ndjson").write_text("\n".join(env_lines) + "\n", encoding="utf-8")
    values = list(reg.values)
    (out / "phi.txt").write_text("\n".join(values) + "\n", encoding="utf-8")
    classes = {c: 0 for c in CLASSES}
    for cls in reg.values.values():
        classes[cls] += 1
    manifest = {
        "patients": n,
        "seed": seed,
        "files": {"hl7v2": hl7_files, "fhir": fhir_files, "envelope_lines": len(env_lines)},
        "values": len(values),
        "classes": classes,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    report = json.dumps(expected_report(patients), indent=1, sort_keys=True)
    (out / "expected_report.json").write_text(report + "\n", encoding="utf-8")
    return manifest, values


def self_check(out: Path) -> list[str]:
    """Problems with the corpus under `out`, read back from disk (values are printed: synthetic)."""
    problems: list[str] = []
    texts: list[str] = []
    for f in sorted((out / "hl7v2").glob("*.hl7")):
        t = f.read_bytes().decode("utf-8")
        texts.append(t)
        if not t.startswith("MSH|^~\\&|"):
            problems.append(f"{f.name}: does not start with MSH|^~\\&|")
        if not t.endswith("\r") or "\n" in t:
            problems.append(f"{f.name}: segments must be ended by \\r only")
        if t.split("\r", 1)[0].split("|")[11] != HL7_VERSION:
            problems.append(f"{f.name}: MSH-12 is not {HL7_VERSION}")
    for f in sorted((out / "fhir").glob("*.json")):
        t = f.read_text(encoding="utf-8")
        texts.append(t)
        try:
            b = json.loads(t)
            if b.get("resourceType") != "Bundle" or b.get("type") != "transaction":
                problems.append(f"{f.name}: not a transaction Bundle")
        except json.JSONDecodeError as e:
            problems.append(f"{f.name}: invalid JSON: {e}")
    env = (out / "envelope.ndjson").read_text(encoding="utf-8")
    texts.append(env)
    for n, line in enumerate(env.splitlines(), start=1):
        try:
            e = json.loads(line)
            if set(e) != {"metadata", "payload"}:
                problems.append(f"envelope.ndjson:{n}: not a metadata/payload envelope")
        except json.JSONDecodeError as ex:
            problems.append(f"envelope.ndjson:{n}: invalid JSON: {ex}")
    blob = "\n".join(texts)
    values = [v for v in (out / "phi.txt").read_text(encoding="utf-8").split("\n") if v]
    if len(set(values)) != len(values):
        problems.append("phi.txt: duplicate values")
    for n, v in enumerate(values, start=1):
        if len(v) < MIN_LEN:
            problems.append(f"phi.txt:{n}: shorter than {MIN_LEN} characters: {v!r}")
        if v != v.strip():
            problems.append(f"phi.txt:{n}: surrounding whitespace: {v!r}")
        if len(v) < 12 and not v.isdigit() and all(c in "0123456789abcdefABCDEF" for c in v):
            problems.append(f"phi.txt:{n}: short pure-hex value, may occur in a hash by chance: {v!r}")
        if v not in blob:
            problems.append(f"phi.txt:{n}: occurs in no input file: {v!r}")
        benign = [b for b in BENIGN if v in b]
        if benign:
            problems.append(f"phi.txt:{n}: occurs in the non-PHI string {benign[0]!r}: {v!r}")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("values") != len(values):
        problems.append("manifest.json: values does not match phi.txt")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--patients", type=int, default=12, metavar="N")
    parser.add_argument("--seed", type=int, default=7, metavar="S")
    parser.add_argument("--self-check", action="store_true",
                        help="re-read the corpus and exit 1 listing any problem")
    args = parser.parse_args(argv)
    if args.patients < 1:
        parser.error("--patients must be at least 1")
    manifest, _ = write_corpus(args.out_dir, args.patients, args.seed)
    print(json.dumps(manifest, indent=2))
    if args.self_check:
        problems = self_check(args.out_dir)
        if problems:
            for prob in problems:
                print(f"self-check: {prob}", file=sys.stderr)
            return 1
        print(f"self-check: ok ({manifest['values']} values)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
