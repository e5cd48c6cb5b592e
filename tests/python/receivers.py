#!/usr/bin/env python3
"""Receiving systems for vitalflow's clinical delivery tests, written without vitalflow's code.

  receivers.py mllp PORT_FILE OUT [--refuse CONTROL_ID_SUFFIX]
      An MLLP receiver on 127.0.0.1 (port written to PORT_FILE once listening). Each framed
      message is parsed with the `hl7` package; a JSON line per message is appended to OUT
      (control id, MRN, names, location, the OBX values) and the message is acknowledged `AA`
      with its control id (MSA-2), or `AR` with an ERR segment when its control id ends with
      CONTROL_ID_SUFFIX.
  receivers.py fhir PORT_FILE OUT CERT KEY TOKEN [--unavailable N]
      A FHIR server over HTTPS (Python's ssl module) on 127.0.0.1. Each POST to
      /Communication must carry `Authorization: Bearer TOKEN` (401 otherwise) and a FHIR R4
      Communication (validated with fhir.resources; 400 otherwise); a JSON line per request is
      appended to OUT and the answer is 201. The first N requests are answered 503.

Both run until killed.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

START, END = b"\x0b", b"\x1c\x0d"
LOCK = threading.Lock()


def append(out: str, record: dict) -> None:
    with LOCK, open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def field(message, segment: str, index: int, component: int = 1) -> str:
    """One component of the first repetition of a field (the `hl7` package's accessor), or ''."""
    try:
        return str(message.extract_field(segment, 1, index, 1, component) or "")
    except (IndexError, KeyError):
        return ""


def unescape(text: str) -> str:
    for code, char in (("\\F\\", "|"), ("\\S\\", "^"), ("\\T\\", "&"), ("\\R\\", "~"), ("\\E\\", "\\")):
        text = text.replace(code, char)
    return text


def mllp(port_file: str, out: str, refuse: str | None) -> None:
    import hl7

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    Path(port_file).write_text(str(server.getsockname()[1]))

    def serve(conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                while START in buffer and END in buffer:
                    start = buffer.index(START)
                    end = buffer.index(END, start)
                    frame, buffer = buffer[start + 1 : end], buffer[end + 2 :]
                    text = frame.decode("utf-8")
                    message = hl7.parse(text)
                    control = str(message.segment("MSH")[10])
                    obx = []
                    for seg in message.segments("OBX"):
                        obx.append({"code": str(seg[3][0][0]) if len(seg) > 3 else "",
                                    "type": str(seg[2]) if len(seg) > 2 else "",
                                    "value": unescape(str(seg[5])) if len(seg) > 5 else ""})
                    refused = refuse is not None and control.endswith(refuse)
                    append(out, {
                        "control_id": control,
                        "type": str(message.segment("MSH")[9]),
                        "mrn": unescape(field(message, "PID", 3, 1)),
                        "family": unescape(field(message, "PID", 5, 1)),
                        "given": unescape(field(message, "PID", 5, 2)),
                        "ward": unescape(field(message, "PV1", 3, 1)),
                        "room": unescape(field(message, "PV1", 3, 2)),
                        "bed": unescape(field(message, "PV1", 3, 3)),
                        "obx": obx,
                        "refused": refused,
                    })
                    code = "AR" if refused else "AA"
                    ack = (f"MSH|^~\\&|RECEIVER|WARD|VITALFLOW||20260101000000||ACK^R01^ACK|A{control}|P|2.5\r"
                           f"MSA|{code}|{control}\r")
                    if refused:
                        ack += "ERR|||207^Application internal error^HL70357|E\r"
                    conn.sendall(START + ack.encode() + END)

    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def fhir(port_file: str, out: str, cert: str, key: str, token: str, unavailable: int) -> None:
    from fhir.resources.communication import Communication

    state = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def answer(self, status: int, body: dict | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 (the handler's name)
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with LOCK:
                state["requests"] += 1
                n = state["requests"]
            record = {
                "path": self.path,
                "authorized": self.headers.get("Authorization") == f"Bearer {token}",
                "content_type": self.headers.get("Content-Type"),
                "if_none_exist": self.headers.get("If-None-Exist"),
                "request": n,
            }
            if n <= unavailable:
                record["status"] = 503
                append(out, record)
                return self.answer(503)
            if not record["authorized"]:
                record["status"] = 401
                append(out, record)
                return self.answer(401)
            try:
                resource = json.loads(body)
                Communication.parse_obj(resource)
                record["valid"] = True
            except Exception as e:  # noqa: BLE001 (any failure is the answer)
                record.update(status=400, valid=False, error=str(e)[:500])
                append(out, record)
                return self.answer(400)
            record["status"] = 201
            record["resource"] = resource
            append(out, record)
            self.answer(201, resource)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def main(argv: list[str]) -> None:
    if argv[1] == "mllp":
        refuse = argv[argv.index("--refuse") + 1] if "--refuse" in argv else None
        mllp(argv[2], argv[3], refuse)
    elif argv[1] == "fhir":
        unavailable = int(argv[argv.index("--unavailable") + 1]) if "--unavailable" in argv else 0
        fhir(argv[2], argv[3], argv[4], argv[5], argv[6], unavailable)
    else:
        sys.exit(f"unknown command {argv[1]}")


if __name__ == "__main__":
    main(sys.argv)
