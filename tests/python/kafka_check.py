#!/usr/bin/env python3
"""Kafka and Parquet checks for vitalflow's Kafka tests, with clients that are not vitalflow's.

  kafka_check.py count OUT_DIR
      Observation and Patient rows and distinct ids in OUT_DIR/canonical (DuckDB).
  kafka_check.py topic BOOTSTRAP TOPIC
      Records of an envelope topic, and distinct event ids among them.
  kafka_check.py produce BOOTSTRAP TOPIC FILE [TOPIC FILE ...]
      Produces every line of each FILE to its TOPIC with confluent-kafka (librdkafka's own Python
      client), keyed by the envelope's payload patientId.
  kafka_check.py consume BOOTSTRAP EVENTS_TOPIC INPUT_TOPIC GROUP
      Reads the domain events topic to its end; reports the event types seen, and for GROUP the
      committed offsets and the lag on INPUT_TOPIC.

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


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "count":
        result = count(args[0])
    elif cmd == "topic":
        records = read_all(args[0], args[1], "vitalflow-test-topic-reader")
        ids = [json.loads(v)["metadata"]["eventId"] for _, _, v in records]
        result = {"records": len(ids), "distinct": len(set(ids))}
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
