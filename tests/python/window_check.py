"""Checks vitalflow's window and join output against the same queries run by DuckDB over the
input files.

usage:
  window_check.py window INPUT.jsonl OUT_PARQUET_DIR SIZE_MINUTES
      The net window rows (every column but `diff`, grouped, sum(diff) > 0) against a GROUP BY
      over 5-minute buckets of the input; `live_duplicates` counts the windows with more than
      one live row (a revision whose retraction is missing).
  window_check.py asof STREAM.jsonl TABLE.jsonl OUT_PARQUET_DIR
      The joined rows against DuckDB's ASOF LEFT JOIN.

Prints JSON: counts, and the rows that differ (at most 5 of each kind).
"""
import json
import math
import sys
from collections import Counter

import duckdb


def close(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is None and b is None
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def compare(expected, got, key_len):
    exp = {tuple(r[:key_len]): r for r in expected}
    out = {tuple(r[:key_len]): r for r in got}
    missing = [list(map(str, k)) for k in exp if k not in out][:5]
    extra = [list(map(str, k)) for k in out if k not in exp][:5]
    differ = []
    for k, e in exp.items():
        g = out.get(k)
        if g is not None and not all(close(x, y) for x, y in zip(e, g)):
            differ.append({"expected": [str(x) for x in e], "got": [str(x) for x in g]})
    return {
        "expected": len(exp),
        "got": len(out),
        "got_rows": len(got),
        "missing": missing,
        "extra": extra,
        "differ": differ[:5],
        "differ_count": len(differ),
    }


def window(con, source, out, size):
    quoted = source.replace("'", "''")
    con.execute(
        f"""
        CREATE VIEW input AS
        SELECT *, to_timestamp(ts / 1000.0) AS t
        FROM read_json('{quoted}', format = 'newline_delimited')
        """
    )
    expected = con.execute(
        f"""
        SELECT patient_id, time_bucket(INTERVAL '{size} minutes', t, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS window_start,
               count(*), sum(hr), min(spo2), max(temp), avg(hr), stddev_samp(hr),
               arg_min(rr, ts), arg_max(rr, ts), count(DISTINCT ward)
        FROM input GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    files = out + "/**/*.parquet"
    got = con.execute(
        """
        WITH net AS (SELECT * EXCLUDE (diff), sum(diff) AS n FROM read_parquet(?)
                     GROUP BY ALL HAVING sum(diff) > 0)
        SELECT patient_id, window_start, readings, hr_sum, spo2_min, temp_max, hr_mean, hr_sd,
               rr_first, rr_last, wards
        FROM net ORDER BY ALL
        """,
        [files],
    ).fetchall()
    bad_sums = con.execute(
        """SELECT count(*) FROM (SELECT * EXCLUDE (diff), sum(diff) AS n FROM read_parquet(?)
           GROUP BY ALL) WHERE n NOT IN (0, 1)""",
        [files],
    ).fetchone()[0]
    result = compare(expected, got, 2)
    result["bad_diff_sums"] = bad_sums
    live = Counter(tuple(r[:2]) for r in got)
    result["live_duplicates"] = sum(1 for n in live.values() if n > 1)
    return result


def asof(con, stream, table, out):
    expected = con.execute(
        """
        SELECT m.patient_id, m.ts, c.ward, c.on_oxygen, c.spo2_scale
        FROM read_json(?, format = 'newline_delimited') m
        ASOF LEFT JOIN read_json(?, format = 'newline_delimited') c
          ON m.patient_id = c.patient_id AND m.ts >= c.since
        ORDER BY ALL
        """,
        [stream, table],
    ).fetchall()
    got = con.execute(
        """
        SELECT patient_id, epoch_ms(ts), adt_ward, adt_on_oxygen, adt_spo2_scale
        FROM read_parquet(?) ORDER BY ALL
        """,
        [out + "/**/*.parquet"],
    ).fetchall()
    return compare(expected, got, 2)


def main() -> int:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    mode = sys.argv[1]
    if mode == "window":
        result = window(con, sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "asof":
        result = asof(con, sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
