"""Reference computation for dataflows/vitals-flat.toml, independent of vitalflow.

Reads the flat vital-sign JSON lines a job read, decides which lines match the declared schema,
computes the score and the filter, de-identifies the selected rows with the same keyed HMAC
construction (pseudonym and per-patient day shift), and compares the expected rows with what
the job wrote: its JSON-lines sink (read as JSON) and its Parquet sink (read with pyarrow and
with DuckDB).

usage: flat_reference.py INPUT.jsonl KEY_FILE OUT_DIR
prints a JSON summary.
"""

import collections
import datetime
import glob
import hashlib
import hmac
import json
import math
import os
import sys

import duckdb
import pyarrow.parquet as pq

MAX_SHIFT_DAYS = 365
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

INTS = ["hr", "spo2", "rr", "sbp", "dbp"]


def is_int(v):
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and v.is_integer()


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def decode(line):
    """The row the declared schema gives for a line, or None if it must be dead-lettered."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if not isinstance(obj.get("patient_id"), str) or not isinstance(obj.get("ward"), str):
        return None
    if not is_int(obj.get("ts")):
        return None
    if not all(is_int(obj.get(f)) for f in INTS):
        return None
    temp = obj.get("temp")
    if temp is not None and not is_number(temp):
        return None
    row = {f: int(obj[f]) for f in INTS}
    row.update(patient_id=obj["patient_id"], ward=obj["ward"], ts=int(obj["ts"]))
    row["temp"] = None if temp is None else float(temp)
    return row


def score(r):
    """NEWS2 (Royal College of Physicians, 2017) over the five parameters the feed carries: SpO2
    on scale 1, no air/oxygen or consciousness (missing, so they add nothing)."""
    hr, spo2, rr, sbp, temp = r["hr"], r["spo2"], r["rr"], r["sbp"], r["temp"]
    s = 3 if hr <= 40 else 1 if hr <= 50 else 0 if hr <= 90 else 1 if hr <= 110 else 2 if hr <= 130 else 3
    s += 3 if spo2 <= 91 else 2 if spo2 <= 93 else 1 if spo2 <= 95 else 0
    s += 3 if rr <= 8 else 1 if rr <= 11 else 0 if rr <= 20 else 2 if rr <= 24 else 3
    s += 3 if sbp <= 90 else 2 if sbp <= 100 else 1 if sbp <= 110 else 0 if sbp <= 219 else 3
    if temp is not None:
        t = math.floor(temp * 10 + 0.5) / 10
        s += 3 if t <= 35.0 else 1 if t <= 36.0 else 0 if t <= 38.0 else 1 if t <= 39.0 else 2
    return s


def deidentify(r, key):
    pid = r["patient_id"].encode()
    pseudonym = hmac.new(key, b"patient\0" + pid, hashlib.sha256).hexdigest()[:32]
    digest = hmac.new(key, b"shift\0" + pid, hashlib.sha256).digest()
    # 1 to MAX_SHIFT_DAYS days earlier or later, never 0.
    n = int.from_bytes(digest[:8], "little") % (2 * MAX_SHIFT_DAYS)
    days = n - MAX_SHIFT_DAYS if n < MAX_SHIFT_DAYS else n - MAX_SHIFT_DAYS + 1
    out = dict(r)
    out["patient_id"] = pseudonym
    out["ts"] = r["ts"] + days * DAY_MS
    out["hour"] = r["ts"] - r["ts"] % HOUR_MS + days * DAY_MS
    return out


FIELDS = ["patient_id", "ts", "ward", "hr", "spo2", "rr", "temp", "sbp", "dbp", "score", "hour"]


def key_of(r):
    temp = r["temp"]
    return tuple(round(temp, 6) if (f == "temp" and temp is not None) else r[f] for f in FIELDS)


def ms_of_text(s):
    t = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000)


def ms_of_datetime(t):
    if t is None:
        return None
    return round(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000) if t.tzinfo is None else round(t.timestamp() * 1000)


def main():
    input_path, key_path, out_dir = sys.argv[1:4]
    key = open(key_path, "rb").read().rstrip(b"\r\n")

    lines = [l for l in open(input_path, encoding="utf-8", errors="replace").read().split("\n") if l.strip()]
    rows = [decode(l) for l in lines]
    valid = [r for r in rows if r is not None]
    selected = []
    for r in valid:
        r = dict(r)
        r["score"] = score(r)
        if r["score"] >= 5 or r["spo2"] < 90:
            selected.append(deidentify(r, key))
    expected = collections.Counter(key_of(r) for r in selected)

    # The JSON-lines sink.
    jsonl_rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, "flagged", "*.jsonl"))):
        for line in open(path, encoding="utf-8"):
            o = json.loads(line)
            if list(o.keys()) != FIELDS:
                raise SystemExit(f"{path}: fields {list(o.keys())}, expected {FIELDS}")
            o["ts"] = ms_of_text(o["ts"])
            o["hour"] = ms_of_text(o["hour"])
            jsonl_rows.append(o)
    got_jsonl = collections.Counter(key_of(r) for r in jsonl_rows)

    # The Parquet sink, with pyarrow.
    files = sorted(glob.glob(os.path.join(out_dir, "flagged-parquet", "**", "*.parquet"), recursive=True))
    pa_rows = []
    schema_types = None
    for f in files:
        t = pq.read_table(f)
        schema_types = {n: str(t.schema.field(n).type) for n in t.schema.names}
        for r in t.to_pylist():
            r["ts"] = ms_of_datetime(r["ts"])
            r["hour"] = ms_of_datetime(r["hour"])
            pa_rows.append(r)
    got_parquet = collections.Counter(key_of(r) for r in pa_rows)

    # The Parquet sink, with DuckDB: count and score histogram.
    glob_path = os.path.join(out_dir, "flagged-parquet", "**", "*.parquet")
    con = duckdb.connect()
    duck_count = con.execute(f"select count(*) from read_parquet('{glob_path}')").fetchone()[0] if files else 0
    duck_hist = (
        dict(con.execute(f"select score, count(*) from read_parquet('{glob_path}') group by score").fetchall())
        if files
        else {}
    )
    ref_hist = collections.Counter(r["score"] for r in selected)

    print(
        json.dumps(
            {
                "lines": len(lines),
                "valid": len(valid),
                "invalid": len(lines) - len(valid),
                "expected": len(selected),
                "jsonl": len(jsonl_rows),
                "parquet": len(pa_rows),
                "jsonl_matches": got_jsonl == expected,
                "parquet_matches": got_parquet == expected,
                "duckdb_count": duck_count,
                "duckdb_histogram_matches": {int(k): v for k, v in duck_hist.items()} == dict(ref_hist),
                "parquet_types": schema_types,
                "missing_from_jsonl": [list(k) for k in list((expected - got_jsonl).keys())[:3]],
                "unexpected_in_jsonl": [list(k) for k in list((got_jsonl - expected).keys())[:3]],
            }
        )
    )


if __name__ == "__main__":
    main()
