"""Prints a digest of every canonical row of a vitalflow output folder, read with DuckDB.

usage: rows.py OUT_DIR

Output (JSON): row counts per resource type and a SHA-256 over the sorted rows, so two runs can
be compared for the same *set* of rows regardless of file layout.
"""
import hashlib
import json
import pathlib
import sys

import duckdb


def main() -> int:
    out = pathlib.Path(sys.argv[1])
    con = duckdb.connect()
    result = {}
    for rtype in ("Observation", "Patient"):
        files = sorted(str(p) for p in (out / "canonical" / rtype).rglob("*.parquet"))
        if not files:
            result[rtype] = {"rows": 0, "digest": None}
            continue
        rows = con.execute(
            "SELECT * EXCLUDE (month) FROM read_parquet(?, hive_partitioning = true) ORDER BY id",
            [files],
        ).fetchall()
        digest = hashlib.sha256()
        for row in rows:
            digest.update(repr(row).encode())
        result[rtype] = {"rows": len(rows), "distinct_ids": len({r[0] for r in rows}), "digest": digest.hexdigest()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
