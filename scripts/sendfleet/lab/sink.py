"""What the lab's sink MX received: one JSON record and one raw .eml per delivered message.

The sink's Postfix hands every message to a pipe(8) script that stores, beside the raw message, the client
IP and HELO name Postfix saw, the envelope and the TLS protocol/cipher of the session (from the sink's own
Received header, `smtpd_tls_received_header = yes`). Tests read them from the sink's tree on this machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sendfleet.lab.config import DEFAULT_STATE_DIR
from sendfleet.lab.lab import running_config
from sendfleet.lab.system import LabError
from sendfleet.lab.zonedata import SINK_SPOOL


@dataclass(frozen=True)
class SinkMessage:
    id: str
    queue_id: str
    client_ip: str
    helo: str
    mail_from: str
    rcpt_to: list[str]
    tls_protocol: str | None
    tls_cipher: str | None
    received_at: float
    raw: bytes

    @property
    def tls(self) -> bool:
        return self.tls_protocol is not None

    def header(self, name: str) -> str | None:
        import email

        msg = email.message_from_bytes(self.raw)
        value = msg.get(name)
        return None if value is None else str(value)


def sink_path(inside: str, state_dir: Path = DEFAULT_STATE_DIR) -> Path:
    """Where the running lab's sink keeps `inside` (an absolute path on the sink), seen from this machine."""
    cfg = running_config(state_dir)
    if cfg is None:
        raise LabError("the lab is not up: run 'sendfleet lab up'")
    return cfg.host_root(cfg.host("sink")) / inside.lstrip("/")


def spool_dir(state_dir: Path = DEFAULT_STATE_DIR) -> Path:
    return sink_path(SINK_SPOOL, state_dir)


def read_messages(state_dir: Path = DEFAULT_STATE_DIR) -> list[SinkMessage]:
    """Every message the sink stored, oldest first."""
    spool = spool_dir(state_dir)
    out: list[SinkMessage] = []
    for meta_path in sorted(spool.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        out.append(SinkMessage(
            id=meta["id"], queue_id=meta["queue_id"], client_ip=meta["client_ip"], helo=meta["helo"],
            mail_from=meta["mail_from"], rcpt_to=list(meta["rcpt_to"]), tls_protocol=meta["tls_protocol"],
            tls_cipher=meta["tls_cipher"], received_at=float(meta["received_at"]),
            raw=(spool / meta["eml"]).read_bytes(),
        ))
    return out


def clear(state_dir: Path = DEFAULT_STATE_DIR) -> int:
    """Remove every stored message; returns how many there were."""
    spool = spool_dir(state_dir)
    count = 0
    for path in spool.glob("*.json"):
        path.unlink()
        (spool / (path.stem + ".eml")).unlink(missing_ok=True)
        count += 1
    return count
