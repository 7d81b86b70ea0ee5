"""The lab's alert receiver: records every alert Alertmanager sends it, one JSON line per alert.

This file runs on the sink as it is (`python3 alertrecorder.py`, standard library only, installed by `lab up` as the
`alert-recorder` systemd unit); the controller on this machine imports its pure parts (the record format, parsing
and matching) and reads the file from the sink's tree (`sendfleet.lab.alerts`).

- POST / (the webhook URL the lab's Alertmanager is given, http://<sink>:<ALERT_PORT>/): an Alertmanager webhook
  payload, JSON version 4. Each of its alerts is appended to the file as one line: status, labels, annotations,
  startsAt, endsAt, fingerprint, the receiver and when it was received (seconds since the epoch). One POST is one
  write of all its lines (O_APPEND, under a lock): a reader never sees half of a notification's alerts, only,
  at worst, a last line still without its newline, which it leaves for the next read. A body that is not such a
  payload is answered 400 and nothing is written.
- GET /alerts: every recorded alert, as a JSON array, oldest first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ALERT_PORT = 9095
ALERT_FILE = "/var/spool/alerts/alerts.jsonl"
MAX_BODY = 8 * 1024 * 1024
STATUSES = ("firing", "resolved")


@dataclass(frozen=True)
class Alert:
    """One alert of one notification, as recorded."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    fingerprint: str
    receiver: str
    received: float

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def matches(self, name: str, status: str | None = None, labels: Mapping[str, str] | None = None) -> bool:
        """This alert is `name` (its alertname), in `status` (any when None), with every label of `labels`."""
        return (self.name == name and (status is None or self.status == status)
                and all(self.labels.get(k) == v for k, v in (labels or {}).items()))


def _str_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{what} must be an object of strings")
    return dict(value)


def parse_payload(body: bytes, received: float) -> list[Alert]:
    """The alerts of an Alertmanager webhook body (version 4); ValueError says what is wrong with it."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ValueError("the payload must be a JSON object")
    if payload.get("version") != "4":
        raise ValueError(f"version {payload.get('version')!r}: expected Alertmanager's webhook version \"4\"")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("alerts must be a list")
    receiver = payload.get("receiver", "")
    out: list[Alert] = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise ValueError(f"alerts[{i}] must be an object")
        status = alert.get("status")
        if status not in STATUSES:
            raise ValueError(f"alerts[{i}].status {status!r}: expected firing or resolved")
        out.append(Alert(
            status=status, labels=_str_map(alert.get("labels"), f"alerts[{i}].labels"),
            annotations=_str_map(alert.get("annotations", {}), f"alerts[{i}].annotations"),
            starts_at=str(alert.get("startsAt", "")), ends_at=str(alert.get("endsAt", "")),
            fingerprint=str(alert.get("fingerprint", "")), receiver=str(receiver), received=received,
        ))
    return out


def to_record(alert: Alert) -> dict[str, Any]:
    return {"status": alert.status, "labels": alert.labels, "annotations": alert.annotations,
            "startsAt": alert.starts_at, "endsAt": alert.ends_at, "fingerprint": alert.fingerprint,
            "receiver": alert.receiver, "received": alert.received}


def from_record(record: Mapping[str, Any]) -> Alert:
    return Alert(status=record["status"], labels=dict(record["labels"]), annotations=dict(record["annotations"]),
                 starts_at=record["startsAt"], ends_at=record["endsAt"], fingerprint=record["fingerprint"],
                 receiver=record["receiver"], received=float(record["received"]))


def read_file(path: Path) -> list[Alert]:
    """Every complete line of the file (none when it does not exist yet), oldest first."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # the part after the last newline is a line still being written
    return [from_record(json.loads(line)) for line in lines if line]


def find(alerts: Sequence[Alert], name: str, status: str | None = None,
         labels: Mapping[str, str] | None = None, since: float | None = None) -> list[Alert]:
    """The alerts that match (see Alert.matches), received at or after `since` when given."""
    return [a for a in alerts if a.matches(name, status, labels) and (since is None or a.received >= since)]


# ---- the server (runs on the sink) ------------------------------------------------------------------------------
class Recorder:
    """Appends alerts to the file, one write per notification."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        data = "".join(json.dumps(to_record(a), sort_keys=True) + "\n" for a in alerts).encode()
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode() + b"\n"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.path not in ("/", "/alerts"):
                self._answer(404, {"error": f"no such path {self.path}: POST to /"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, {"error": "Content-Length required"})
                return
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                self._answer(413, {"error": f"a body of {length} bytes (at most {MAX_BODY})"})
                return
            body = self.rfile.read(length)
            try:
                alerts = parse_payload(body, time.time())
            except ValueError as err:
                self._answer(400, {"error": str(err)})
                return
            recorder.append(alerts)
            self._answer(200, {"recorded": len(alerts)})

        def do_GET(self) -> None:
            if self.path != "/alerts":
                self._answer(404, {"error": f"no such path {self.path}: GET /alerts"})
                return
            self._answer(200, [to_record(a) for a in read_file(recorder.path)])

        def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def make_server(host: str, port: int, path: Path) -> ThreadingHTTPServer:
    """A server bound to (host, port) recording into path; port 0 picks a free one (server.server_address)."""
    server = ThreadingHTTPServer((host, port), _handler(Recorder(path)))
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Record Alertmanager webhook notifications as JSON lines.")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=ALERT_PORT)
    parser.add_argument("--file", type=Path, default=Path(ALERT_FILE))
    args = parser.parse_args(argv)
    make_server(args.host, args.port, args.file).serve_forever()


if __name__ == "__main__":
    main()
