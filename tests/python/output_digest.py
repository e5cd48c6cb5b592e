#!/usr/bin/env python3
"""Digests every sink of a vitalflow output folder: its row count and an order-independent
digest of its rows, all columns, with the per-run fields left out by name.

usage: output_digest.py OUT_DIR [--root NAME=DIR ...]

Prints JSON: {"job": NAME, "sinks": {SINK: {"rows": N, "digest": HEX}}}. The job's name is the
one OUT_DIR/_vitalflow/run.json records. Two runs of a job with the same inputs and the same
pseudonym key print the same JSON, whatever the number and names of the files, the workers that
wrote them and the order of the rows; `cli/tests/shipped.rs` compares each shipped job's with
`cli/tests/golden/shipped-outputs.json`.

Sinks. Every folder of OUT_DIR but `_vitalflow/` is a sink's. Its rows are those of its
`*.parquet` and `*.jsonl` files (other files are not rows). Parquet files are read together by
DuckDB (read_parquet, hive_partitioning = true, union_by_name = true), so the partition the
engine writes a row under (`month=2026-01/`) is a column of the row; a sink whose files lie in
folders of their own below it (canonical/Observation, canonical/Patient: tables of different
columns) is digested per folder, partition folders left out of the name. A JSON-lines file gives
a row per line. A sink folder without any of those files is a sink of 0 rows.

The digest (SHA-256, hex). Each row is rendered as canonical text: for Parquet, DuckDB's
to_json of the row with the columns in name order (timestamps in UTC); for JSON lines, the line
parsed and written again with every object's keys sorted and no spaces. Each text is hashed
with SHA-256 in DuckDB; the digest is the SHA-256 of the row hashes sorted and concatenated,
preceded for Parquet by the columns' names and DuckDB types, so it counts each row as often as
it occurs, and nothing else about the files or the order of the rows. This is the engine's own
same-work digest (cli/src/bench/work.rs), with DuckDB as the reader. The texts are DuckDB's and
json's renderings: with another DuckDB than requirements.txt pins, record the golden digests again
(scripts/shipped-outputs, with the release build of the main branch).

Per-run fields, left out by name (JSON pointers). The engine's own list (AUDIT_PER_RUN and
ALERT_PER_RUN in cli/src/bench/work.rs) is the wall-clock times and what follows from them, and
file names:
* audit records: /recordedAt, /event/metadata/timestamp (wall clock), /hash and /prevHash (the
  chain's hashes cover those times), /event/payload/outputs and /event/payload/files (the
  names of the files a stage wrote, which follow the rolls, hence the wall clock, and their sizes
  and SHA-256, which follow the rows each roll holds);
* alert events: /metadata/timestamp, /payload/emittedAt and /payload/detectedAt (wall clock),
  /payload/latencyMs.
The engine's same-work check gives both sides one run id; two runs have two, so these are left
out as well:
* audit records: /event/payload/runId and /event/metadata/traceId (the run id), and
  /event/metadata/eventId, /event/metadata/correlationId and /event/metadata/causationId (each a
  hash of the run id: a stage's event per batch, the batch's saga, the event before).
Nothing else differs between two runs of the same shipped job with the same key, except:
* icu-alerting's alert events: its embedded live feed stamps each reading with the wall clock
  as it is produced (the readings' times, and the patients' context history, end "now"). So the
  alert's /payload/eventTime and /payload/raisedAt (a reading's time, date-shifted) differ, and
  with them /payload/alertId and /metadata/correlationId (a hash of the raise time) and
  /metadata/eventId (a hash of the alert id and the event time). Left out for that job; what
  the alerts are (rule, level, previous level, pseudonym, ward, score, sub-scores, missing and
  stale parameters, condition, the Kafka records that caused them) is compared.
* ward-vitals' vitals-5m: `stddev(spo2)` (spo2_sd) adds a window's readings in the order they
  reach it and merges the two workers' partial sums, so it varies in its last bits (1e-15)
  between runs. Compared rounded to 6 decimals.
* dead letters of file sources: /location is the input file's path, which is where the
  checkout or the sample data lies (not per run, per machine). Each --root NAME=DIR turns a
  location under DIR into NAME followed by the rest of the path.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa

# Left out of every audit record (a line with `event`, `hash`, `prevHash`, `recordedAt`).
AUDIT_PER_RUN = [
    "/recordedAt",
    "/hash",
    "/prevHash",
    "/event/metadata/timestamp",
    "/event/payload/outputs",
    "/event/payload/files",
    "/event/payload/runId",
    "/event/metadata/traceId",
    "/event/metadata/eventId",
    "/event/metadata/correlationId",
    "/event/metadata/causationId",
]
# Left out of every alert event (a line whose /metadata/eventType is `clinical.alert.*` or
# `critical_value_detected`).
ALERT_PER_RUN = [
    "/metadata/timestamp",
    "/payload/emittedAt",
    "/payload/latencyMs",
    "/payload/detectedAt",
]
# Left out of the alert events of jobs whose readings are stamped with the wall clock.
LIVE_FEED_ALERT_PER_RUN = {
    "icu-alerting": [
        "/payload/eventTime",
        "/payload/raisedAt",
        "/payload/alertId",
        "/metadata/correlationId",
        "/metadata/eventId",
    ],
}
# (job, sink) -> {column: decimals}: floating-point aggregates whose last bits follow the order
# the rows reach them.
ROUNDED = {
    ("ward-vitals", "vitals-5m"): {"spo2_sd": 6},
}

DIGEST_SQL = """
SELECT count(*), sha256(? || coalesce(string_agg(h, '' ORDER BY h), ''))
FROM (SELECT sha256(text) AS h FROM rows)
"""


def remove(value: object, pointer: str) -> None:
    """Removes the field at a JSON pointer, if there is one."""
    *parents, key = pointer.split("/")[1:]
    for p in parents:
        if not isinstance(value, dict):
            return
        value = value.get(p)
    if isinstance(value, dict):
        value.pop(key, None)


def per_run(row: object, job: str) -> list[str]:
    """The per-run fields of a JSON-lines row, by what the row is."""
    if not isinstance(row, dict):
        return []
    if {"event", "hash", "prevHash", "recordedAt"} <= row.keys():
        return AUDIT_PER_RUN
    metadata = row.get("metadata")
    event_type = str(metadata.get("eventType", "")) if isinstance(metadata, dict) else ""
    if event_type.startswith("clinical.alert.") or event_type == "critical_value_detected":
        return ALERT_PER_RUN + LIVE_FEED_ALERT_PER_RUN.get(job, [])
    return []


def relocate(row: object, roots: list[tuple[str, str]]) -> None:
    """A dead letter's input path, below one of `roots`, named from the root's name."""
    if not isinstance(row, dict) or not {"stage", "reason", "location"} <= row.keys():
        return
    location = row["location"]
    if not isinstance(location, str):
        return
    for name, root in roots:
        if location == root or location.startswith(root + "/"):
            row["location"] = name + location[len(root):]
            return


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(con: duckdb.DuckDBPyConnection, rows: duckdb.DuckDBPyRelation, header: str) -> dict:
    """Row count and digest of a relation with one VARCHAR column `text`."""
    con.register("rows", rows)
    try:
        [(count, hexdigest)] = con.execute(DIGEST_SQL, [header]).fetchall()
    finally:
        con.unregister("rows")
    return {"rows": count, "digest": hexdigest}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parquet_digest(con, files: list[Path], job: str, sink: str) -> dict:
    source = con.sql(
        "SELECT * FROM read_parquet(?, hive_partitioning = true, union_by_name = true)",
        params=[[str(f) for f in files]],
    )
    types = dict(zip(source.columns, (str(t) for t in source.types)))
    rounded = ROUNDED.get((job, sink), {})
    columns = []
    for name in sorted(types):
        if name in rounded:
            columns.append(f"round({quote(name)}, {int(rounded[name])}) AS {quote(name)}")
        else:
            columns.append(quote(name))
    con.register("source", source)
    try:
        rows = con.sql(f"SELECT to_json(r)::VARCHAR AS text FROM (SELECT {', '.join(columns)} FROM source) r")
        header = ",".join(f"{name} {types[name]}" for name in sorted(types)) + "\n"
        return digest(con, rows, header)
    finally:
        con.unregister("source")


def lines_digest(con, files: list[Path], job: str, roots: list[tuple[str, str]]) -> dict:
    texts = []
    for f in files:
        with f.open(encoding="utf-8") as lines:
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{f}:{n}: not JSON: {e.msg}") from None
                for pointer in per_run(row, job):
                    remove(row, pointer)
                relocate(row, roots)
                texts.append(canonical(row))
    rows = con.from_arrow(pa.table({"text": pa.array(texts, type=pa.string())}))
    return digest(con, rows, "")


def sinks(out: Path) -> dict[str, list[Path]]:
    """Sink name -> its data files (sorted); a sink folder without any maps to []."""
    found: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "_vitalflow"):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".parquet", ".jsonl"))
        if not files:
            found[folder.name] = []
        for f in files:
            parts = [p for p in f.parent.relative_to(out).parts if "=" not in p]
            found["/".join(parts)].append(f)
    return dict(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="name dead letters' input paths below DIR from NAME (repeatable)",
    )
    args = parser.parse_args()
    out: Path = args.out_dir
    roots = []
    for r in args.root:
        name, sep, folder = r.partition("=")
        if not sep or not folder:
            parser.error(f"--root {r}: not NAME=DIR")
        roots.append((name, folder.rstrip("/")))
    try:
        job = json.loads((out / "_vitalflow" / "run.json").read_text())["job"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{out}: no job name in _vitalflow/run.json ({e})") from None

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    result = {}
    for sink, files in sinks(out).items():
        kinds = {f.suffix for f in files}
        if len(kinds) > 1:
            raise SystemExit(f"{out / sink}: both Parquet and JSON-lines files")
        if kinds == {".parquet"}:
            result[sink] = parquet_digest(con, files, job, sink)
        else:
            result[sink] = lines_digest(con, files, job, roots)
    print(json.dumps({"job": job, "sinks": result}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
