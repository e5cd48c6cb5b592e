#!/usr/bin/env python3
"""Checks for vitalflow's MLLP tests, with a client and readers that are not vitalflow's.

  mllp_check.py count OUT_DIR
      Rows and distinct ids of each canonical table (Observation, Patient, Encounter) in
      OUT_DIR/canonical, read with DuckDB.
  mllp_check.py client HOST PORT FILE...
      Sends each FILE (one HL7 v2 message) with the `hl7` package's MLLPClient, one connection,
      and parses each acknowledgement with `hl7.parse`: its MSA-1 (code) and MSA-2 (the control
      id it acknowledges), and the message's own MSH-10.
  mllp_check.py tls-client HOST PORT CA CERT KEY FILE...
      The same over TLS with Python's ssl module (OpenSSL), the server checked against CA for
      the name `localhost`; CERT and KEY (or `-` for none) are the client's certificate. A
      handshake or connection that fails gives {"error": ...} instead of the answers.

  mllp_check.py alerts FOLDER
      The alert events of a Parquet sink's FOLDER, read with DuckDB: one object per row with
      its event id, type, pseudonym, rule and level.

Prints a JSON summary on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def count(out: str) -> dict:
    import duckdb

    con = duckdb.connect()
    result = {}
    for table in ("Observation", "Patient", "Encounter"):
        files = [p for p in Path(out, "canonical", table).rglob("*.parquet") if not p.name.startswith(".")]
        if not files:
            result[table] = {"rows": 0, "distinct_ids": 0}
            continue
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT id) FROM read_parquet(?, hive_partitioning = true)",
            [f"{out}/canonical/{table}/**/*.parquet"],
        ).fetchone()
        result[table] = {"rows": rows, "distinct_ids": distinct}
    return result


def client(host: str, port: int, files: list[str]) -> list[dict]:
    import hl7
    from hl7.client import MLLPClient

    answers = []
    with MLLPClient(host, port) as c:
        for f in files:
            message = Path(f).read_bytes()
            parsed = hl7.parse(message.decode("utf-8"))
            raw = c.send_message(message)
            # Strip the MLLP framing: start block, end block and carriage return.
            text = raw.decode("utf-8").strip("\x0b\x1c\r")
            ack = hl7.parse(text)
            answers.append(
                {
                    "file": Path(f).name,
                    "control_id": str(parsed.segment("MSH")[10]),
                    "code": str(ack.segment("MSA")[1]),
                    "acknowledges": str(ack.segment("MSA")[2]),
                    "ack_type": str(ack.segment("MSH")[9]),
                }
            )
    return answers


def tls_client(host: str, port: int, ca: str, cert: str, key: str, files: list[str]):
    import socket
    import ssl

    import hl7

    context = ssl.create_default_context(cafile=ca)
    if cert != "-":
        context.load_cert_chain(cert, key)
    answers = []
    try:
        with socket.create_connection((host, port), timeout=30) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                for f in files:
                    message = Path(f).read_bytes()
                    parsed = hl7.parse(message.decode("utf-8"))
                    s.sendall(b"\x0b" + message + b"\x1c\r")
                    reply = b""
                    while not reply.endswith(b"\x1c\r"):
                        chunk = s.recv(4096)
                        if not chunk:
                            raise ConnectionError("the connection ended before the acknowledgement")
                        reply += chunk
                    ack = hl7.parse(reply.decode("utf-8").strip("\x0b\x1c\r"))
                    answers.append(
                        {
                            "control_id": str(parsed.segment("MSH")[10]),
                            "code": str(ack.segment("MSA")[1]),
                            "acknowledges": str(ack.segment("MSA")[2]),
                            "tls": s.version(),
                        }
                    )
    except (OSError, ssl.SSLError) as e:
        return {"error": type(e).__name__, "answers": answers}
    return answers


def alerts(folder: str) -> list:
    import duckdb

    rows = duckdb.connect().execute(
        "SELECT event_id, event_type, patient, rule, level, CAST(event_time AS VARCHAR) "
        "FROM read_parquet(?) ORDER BY event_id",
        [f"{folder}/**/*.parquet"],
    ).fetchall()
    keys = ("event_id", "event_type", "patient", "rule", "level", "event_time")
    return [dict(zip(keys, r)) for r in rows]


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "count":
        result = count(args[0])
    elif cmd == "client":
        result = client(args[0], int(args[1]), args[2:])
    elif cmd == "alerts":
        result = alerts(args[0])
    elif cmd == "tls-client":
        result = tls_client(args[0], int(args[1]), args[2], args[3], args[4], args[5:])
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
