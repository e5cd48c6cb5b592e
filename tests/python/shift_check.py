"""Date shifting of clinical records, checked independently of vitalflow.

Reads the platform-envelope events a job read (`vitals.measurement.recorded` readings), and
every output file the job wrote: Parquet (with pyarrow: every timestamp column, and every
date-time inside string columns such as the FHIR resource JSON) and JSON lines (every date-time
string). It checks that
* no reading time of the input occurs anywhere in the output, as an instant or as its text;
* each patient's Observations (found by the keyed pseudonym, recomputed here with HMAC-SHA256)
  are the patient's readings moved by one number of whole days, not 0, at most MAX_DAYS either
  way.

usage: shift_check.py INPUT.ndjson KEY_FILE OUT_DIR MAX_DAYS
prints a JSON summary.
"""

import collections
import datetime
import glob
import hashlib
import hmac
import json
import os
import re
import sys

import pyarrow as pa
import pyarrow.parquet as pq

DAY_MS = 86_400_000
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")


def ms_of_text(s):
    t = datetime.datetime.fromisoformat(s.replace("Z", "+00:00").replace(" ", "T"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return round(t.timestamp() * 1000)


def instants_in(value, found):
    """Every date-time written in a string, or in the strings of a JSON value."""
    if isinstance(value, str):
        for m in DATE_TIME.finditer(value):
            found.append(ms_of_text(m.group(0)))
        if value[:1] in "{[":
            try:
                instants_in(json.loads(value), found)
            except ValueError:
                pass
    elif isinstance(value, dict):
        for v in value.values():
            instants_in(v, found)
    elif isinstance(value, list):
        for v in value:
            instants_in(v, found)


def main():
    input_path, key_path, out_dir, max_days = sys.argv[1:5]
    max_days = int(max_days)
    key = open(key_path, "rb").read().rstrip(b"\r\n")

    readings = collections.defaultdict(list)
    texts = set()
    for line in open(input_path, encoding="utf-8"):
        event = json.loads(line)
        if event["metadata"]["eventType"] != "vitals.measurement.recorded":
            continue
        p = event["payload"]
        readings[p["patientId"]].append(ms_of_text(p["effectiveAt"]))
        texts.add(p["effectiveAt"])
    input_instants = {t for ts in readings.values() for t in ts}

    output_instants = []
    text_hits = 0
    observations = collections.defaultdict(list)
    files = 0
    for path in sorted(glob.glob(os.path.join(out_dir, "**", "*"), recursive=True)):
        rel = os.path.relpath(path, out_dir)
        if not os.path.isfile(path) or rel.split(os.sep)[0] == "dead-letter":
            continue
        files += 1
        raw = open(path, "rb").read()
        text_hits += sum(1 for t in texts if t.encode() in raw)
        if path.endswith(".parquet"):
            table = pq.read_table(path)
            for name, column in zip(table.schema.names, table.columns):
                if pa.types.is_timestamp(column.type):
                    ms = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
                    output_instants.extend(v for v in ms.to_pylist() if v is not None)
                elif pa.types.is_string(column.type):
                    for v in column.to_pylist():
                        instants_in(v, output_instants)
            if "effective" in table.schema.names and "patient" in table.schema.names:
                effective = table.column("effective").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
                for patient, t in zip(table.column("patient").to_pylist(), effective.to_pylist()):
                    observations[patient].append(t)
        elif path.endswith(".jsonl"):
            for line in raw.decode("utf-8").splitlines():
                instants_in(json.loads(line), output_instants)

    leaked = sorted(input_instants.intersection(output_instants))
    shifts = {}
    inconsistent, out_of_range, zero = [], [], []
    for patient, times in readings.items():
        pseudonym = hmac.new(key, b"patient\0" + patient.encode(), hashlib.sha256).hexdigest()[:32]
        got = sorted(observations.get(pseudonym, []))
        want = sorted(times)
        if len(got) != len(want) or not got:
            inconsistent.append(patient)
            continue
        d = got[0] - want[0]
        if [t + d for t in want] != got or d % DAY_MS != 0:
            inconsistent.append(patient)
            continue
        days = d // DAY_MS
        shifts[patient] = days
        if days == 0:
            zero.append(patient)
        elif abs(days) > max_days:
            out_of_range.append(patient)

    print(
        json.dumps(
            {
                "patients": len(readings),
                "readings": sum(len(t) for t in readings.values()),
                "observations": sum(len(t) for t in observations.values()),
                "files": files,
                "output_instants": len(output_instants),
                "leaked": len(leaked),
                "leaked_text": text_hits,
                "inconsistent": len(inconsistent),
                "zero_shift": len(zero),
                "out_of_range": len(out_of_range),
                "distinct_shifts": len(set(shifts.values())),
                "min_shift": min(shifts.values(), default=None),
                "max_shift": max(shifts.values(), default=None),
            }
        )
    )


if __name__ == "__main__":
    main()
