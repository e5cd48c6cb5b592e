"""One line of `scripts/soak run`: what changed between two scrapes of a job's /metrics.

    python3 scripts/soak_minute.py PREVIOUS NOW MINUTE RATE

Prints the generator's records read so far, how many seconds of input (at RATE) the job is
behind the clock, the alert events raised since PREVIOUS, and the p99 arrival → alert latency of
those alerts in milliseconds: the upper bound of the histogram bucket that holds the 99th
percentile (`-` when no alert was timed). PREVIOUS may be empty (the first minute).
"""

import re
import sys

RECORDS = re.compile(r'vitalflow_node_records_out_total\{node="gen"[^}]*\} (\S+)')
ALERTS = re.compile(r"vitalflow_alerts_total\{[^}]*\} (\S+)")
BUCKET = re.compile(r'vitalflow_alert_latency_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)')


def parse(path: str) -> tuple[float, float, dict[float, float]]:
    read, alerts, buckets = 0.0, 0.0, {}
    with open(path) as f:
        for line in f:
            if m := RECORDS.match(line):
                read = float(m.group(1))
            elif m := ALERTS.match(line):
                alerts += float(m.group(1))
            elif m := BUCKET.match(line):
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    return read, alerts, buckets


def main() -> None:
    before, now, minute, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    _, a0, b0 = parse(before)
    r1, a1, b1 = parse(now)
    delta = {le: n - b0.get(le, 0.0) for le, n in b1.items()}
    total = max(delta.values(), default=0.0)
    p99 = "-"
    for le in sorted(delta):
        if total > 0 and delta[le] >= 0.99 * total:
            p99 = "inf" if le == float("inf") else f"{le * 1000:g}"
            break
    behind = max(0.0, (minute * 60 * rate - r1) / rate)
    print(f"{int(r1):12d}  {behind:8.1f}  {int(a1 - a0):6d}  {p99:>12}")


if __name__ == "__main__":
    main()
