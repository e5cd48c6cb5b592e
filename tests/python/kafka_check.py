#!/usr/bin/env python3
"""Kafka and Parquet checks for vitalflow's Kafka tests, with clients that are not vitalflow's.

  kafka_check.py count OUT_DIR
      Observation and Patient rows and distinct ids in OUT_DIR/canonical (DuckDB).
  kafka_check.py topic BOOTSTRAP TOPIC
      Records of an envelope topic, and distinct event ids among them.
  kafka_check.py produce BOOTSTRAP TOPIC FILE [TOPIC FILE ...]
      Produces every line of each FILE to its TOPIC with confluent-kafka (librdkafka's own Python
      client), keyed by the envelope's payload patientId.
  kafka_check.py compare OUT_A OUT_B
      Whether two output folders of one job over the same input hold the same data: every
      Parquet table under canonical/ row by row (a digest over all columns, by id), the
      dead-letter files line by line, and the audit log's events (see `audit_digests`).
  kafka_check.py consume BOOTSTRAP EVENTS_TOPIC INPUT_TOPIC GROUP
      Reads the domain events topic to its end; reports the event types seen, and for GROUP the
      committed offsets and the lag on INPUT_TOPIC.

  kafka_check.py create BOOTSTRAP TOPIC PARTITIONS
      Creates TOPIC with the admin client.
  kafka_check.py pairs BOOTSTRAP TOPIC FIELD_A FIELD_B
      Records of a topic of JSON rows, and the distinct (FIELD_A, FIELD_B) pairs among them.

Prints a JSON summary on stdout.
"""

from __future__ import annotations

import json
import sys

EVENT_TYPES = [
    "DataIngestionCreated",
    "DataIngestionStarted",
    "DataIngestionFinished",
    "EventoAnonimizacionIniciada",
    "EventoAnonimizacionFinalizada",
    "EventDataCanonizationCreated",
    "EventDataCanonizationStarted",
    "EventDataCanonizationCompleted",
]


def count(out: str) -> dict:
    import duckdb

    con = duckdb.connect()
    obs = con.execute(
        "SELECT count(*), count(DISTINCT id) FROM read_parquet(?, hive_partitioning = true)",
        [f"{out}/canonical/Observation/**/*.parquet"],
    ).fetchone()
    pat = con.execute(
        "SELECT count(*), count(DISTINCT id) FROM read_parquet(?, hive_partitioning = true)",
        [f"{out}/canonical/Patient/**/*.parquet"],
    ).fetchone()
    return {
        "observations": obs[0],
        "distinct_ids": obs[1],
        "patients": pat[0],
        "distinct_patients": pat[1],
    }


def row_digest(row: dict) -> str:
    import hashlib

    text = json.dumps(row, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def table_digests(folder: str) -> dict[str, list[str]]:
    """Digests of every row of the hive-partitioned Parquet table in `folder`, by id (a list:
    an id written twice shows as two digests)."""
    import pyarrow.dataset as ds

    by_id: dict[str, list[str]] = {}
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    for row in table.to_pylist():
        by_id.setdefault(str(row["id"]), []).append(row_digest(row))
    return by_id


def jsonl_lines(folder: str) -> list[str]:
    import pathlib

    lines = []
    for f in sorted(pathlib.Path(folder).rglob("*.jsonl")):
        lines.extend(line for line in f.read_text(encoding="utf-8").splitlines() if line)
    return lines


def audit_digests(folder: str) -> tuple[dict[str, list[str]], dict[str, list[int]], int]:
    """The audit log as far as two runs over the same input must agree.

    Per (batch, stage, event type), a digest of the event without what belongs to the run that
    recorded it: `recordedAt`, `sequence`, `prevHash`, `hash` (the chain, checked on its own),
    the event's id, correlation id (made from the run id and the batch) and causation id (an
    event id), its timestamp and trace id (the run id), and `outputs` (file names, which depend
    on when a file rolled); nor its counts and the de-identification report: late records are
    stamped with the watermark when read, which depends on timing, so which batch counts them
    differs between any two runs. The counts are compared as totals per stage and event type
    instead. What the correlation id does show: every event of a batch comes from one run (the
    batches whose events carry more than one are counted under `split`).

    `BatchCompensated` events belong to a run that failed, not to the output: they are counted
    (the third value) and left out of the rest (their batches are done again by the next run,
    under its correlation ids)."""
    events: dict[str, list[str]] = {}
    totals: dict[str, list[int]] = {}
    correlation: dict[int, set[str]] = {}
    compensated = 0
    for line in jsonl_lines(folder):
        event = json.loads(line)["event"]
        meta, payload = event["metadata"], event["payload"]
        if meta["eventType"] == "BatchCompensated":
            compensated += 1
            continue
        key = f"{payload['batch']}/{payload['stage']}/{meta['eventType']}"
        kept = {
            "eventType": meta["eventType"],
            "eventSource": meta.get("eventSource"),
            "version": meta.get("version"),
            "stage": payload["stage"],
            "batch": payload["batch"],
        }
        events.setdefault(key, []).append(row_digest(kept))
        correlation.setdefault(payload["batch"], set()).add(meta.get("correlationId"))
        counts = payload.get("counts") or {}
        total = totals.setdefault(
            f"{payload['stage']}/{meta['eventType']}", [0, 0, 0]
        )
        for i, k in enumerate(["recordsIn", "recordsOut", "rejected"]):
            total[i] += int(counts.get(k, 0))
    totals["split"] = [sum(len(c) > 1 for c in correlation.values())]
    return events, totals, compensated


def differences(a: dict, b: dict) -> dict:
    """Keys only in `a`, only in `b`, and with different values (five of each), and counts."""
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    differ = [k for k in a if k in b and sorted(a[k]) != sorted(b[k])]
    return {
        "only_in_a": len(only_a),
        "only_in_b": len(only_b),
        "differ": len(differ),
        "examples": {
            "only_in_a": sorted(only_a)[:5],
            "only_in_b": sorted(only_b)[:5],
            "differ": [(k, a[k], b[k]) for k in sorted(differ)[:5]],
        },
    }


def compare(out_a: str, out_b: str) -> dict:
    import pathlib

    result: dict = {}
    tables = sorted(
        {p.name for p in pathlib.Path(out_a, "canonical").iterdir() if p.is_dir()}
        | {p.name for p in pathlib.Path(out_b, "canonical").iterdir() if p.is_dir()}
    )
    for name in tables:
        a = table_digests(f"{out_a}/canonical/{name}")
        b = table_digests(f"{out_b}/canonical/{name}")
        diff = differences(a, b)
        diff["rows"] = [sum(map(len, a.values())), sum(map(len, b.values()))]
        diff["ids_written_twice"] = [
            sum(len(v) > 1 for v in a.values()),
            sum(len(v) > 1 for v in b.values()),
        ]
        result[name] = diff
    letters = [
        {line: [] for line in jsonl_lines(f"{out}/dead-letter")} for out in (out_a, out_b)
    ]
    for out, by_line in zip((out_a, out_b), letters):
        for line in jsonl_lines(f"{out}/dead-letter"):
            by_line[line].append(line)
    result["dead-letter"] = differences(letters[0], letters[1])
    result["dead-letter"]["rows"] = [sum(map(len, d.values())) for d in letters]
    (events_a, totals_a, compensated_a), (events_b, totals_b, compensated_b) = (
        audit_digests(f"{out_a}/audit"),
        audit_digests(f"{out_b}/audit"),
    )
    result["audit"] = differences(events_a, events_b)
    result["audit"]["rows"] = [sum(map(len, e.values())) for e in (events_a, events_b)]
    result["audit"]["totals"] = [totals_a, totals_b]
    result["audit"]["compensated"] = [compensated_a, compensated_b]
    result["same"] = all(
        r["only_in_a"] == 0 and r["only_in_b"] == 0 and r["differ"] == 0
        for k, r in result.items()
        if isinstance(r, dict)
    ) and totals_a == totals_b
    return result


def produce(bootstrap: str, pairs: list[str]) -> dict:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors = []
    delivered = 0

    def report(err, _msg):
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
        else:
            delivered += 1

    for topic, path in zip(pairs[0::2], pairs[1::2]):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                key = json.loads(line).get("payload", {}).get("patientId", "")
                producer.produce(topic, line.encode(), key.encode(), on_delivery=report)
                producer.poll(0)
    producer.flush(60)
    return {"produced": delivered, "errors": errors[:5]}


def read_all(bootstrap: str, topic: str, group: str) -> list:
    """Every record of `topic` (which is no longer written), read until 3 s pass without one.

    The end is found by reading rather than by asking for the high watermark: some
    Kafka-compatible brokers report it per record batch."""
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    meta = reader.list_topics(topic, timeout=10).topics[topic]
    reader.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    records, quiet = [], 0
    while quiet < 3:
        msg = reader.poll(1)
        if msg is None:
            quiet += 1
            continue
        quiet = 0
        if not msg.error():
            records.append((msg.partition(), msg.offset(), msg.value()))
    reader.close()
    return records


def consume(bootstrap: str, events_topic: str, input_topic: str, group: str) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    events = read_all(bootstrap, events_topic, f"{group}-events-reader")
    types = {json.loads(v)["metadata"]["eventType"] for _, _, v in events}

    ends: dict[int, int] = {}
    for p, o, _ in read_all(bootstrap, input_topic, f"{group}-input-reader"):
        ends[p] = max(ends.get(p, 0), o + 1)
    lag_reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    meta = lag_reader.list_topics(input_topic, timeout=10).topics[input_topic]
    tps = [TopicPartition(input_topic, p) for p in meta.partitions]
    committed = lag_reader.committed(tps, timeout=10)
    total, lag, broker_lag = 0, 0, 0
    for tp in committed:
        off = max(tp.offset, 0)
        total += off
        lag += ends.get(tp.partition, 0) - off
        high = lag_reader.get_watermark_offsets(TopicPartition(input_topic, tp.partition), timeout=10)[1]
        broker_lag += high - off
    lag_reader.close()
    return {
        "events": len(events),
        "event_types_missing": [t for t in EVENT_TYPES if t not in types],
        "committed": total,
        "lag": lag,
        "broker_reported_lag": broker_lag,
    }


def create(bootstrap: str, topic: str, partitions: int) -> dict:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result()
    return {"created": topic}


def against_audit(bootstrap: str, topic: str, audit: str) -> dict:
    """The events of `topic` against those the audit log in `audit` records, by event id."""
    records = read_all(bootstrap, topic, f"{topic}-audit-reader")
    held = [json.loads(v)["metadata"]["eventId"] for _, _, v in records]
    audited = set()
    for line in jsonl_lines(audit):
        event = json.loads(line).get("event", {})
        if event.get("metadata", {}).get("eventType") != "BatchCompensated":
            audited.add(event.get("metadata", {}).get("eventId"))
    return {
        "records": len(held),
        "distinct": len(set(held)),
        "audited": len(audited),
        "not_audited": len(set(held) - audited),
        "missing": len(audited - set(held)),
    }


def pairs(bootstrap: str, topic: str, a: str, b: str) -> dict:
    records = read_all(bootstrap, topic, f"{topic}-pairs-reader")
    seen = set()
    for _, _, value in records:
        row = json.loads(value)
        seen.add((row.get(a), row.get(b)))
    return {"records": len(records), "distinct": len(seen)}


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "count":
        result = count(args[0])
    elif cmd == "topic":
        records = read_all(args[0], args[1], "vitalflow-test-topic-reader")
        ids = [json.loads(v)["metadata"]["eventId"] for _, _, v in records]
        result = {"records": len(ids), "distinct": len(set(ids))}
    elif cmd == "compare":
        result = compare(args[0], args[1])
    elif cmd == "create":
        result = create(args[0], args[1], int(args[2]))
    elif cmd == "against-audit":
        result = against_audit(args[0], args[1], args[2])
    elif cmd == "pairs":
        result = pairs(args[0], args[1], args[2], args[3])
    elif cmd == "produce":
        result = produce(args[0], args[1:])
    elif cmd == "consume":
        result = consume(*args)
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
