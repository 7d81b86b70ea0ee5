"""Where the tagged messages are collected: the lab's sink, or a directory of raw messages (a seed mailbox
synchronised by the operator's own tool: Maildir, or one .eml file per message).

Every collector finds messages by the `X-Sendfleet-Readiness` header that readiness puts in each one, and
returns what the receiving MX saw: client IP, HELO and TLS (the lab's sink records them for each session;
for a real mailbox they come from the Received header the provider's MX added for the hop from one of the
fleet's IPs).
"""

from __future__ import annotations

import email
import email.parser
import email.policy
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from sendfleet.core.readiness import TAG_HEADER, hop_from_fleet
from sendfleet.errors import CannotCheckError, UsageError
from sendfleet.readiness.evidence import Collected

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def tag_of(raw: bytes) -> str | None:
    value = _HEADERS.parsebytes(raw).get(TAG_HEADER)
    return None if value is None else " ".join(str(value).split())


class Collector(Protocol):
    description: str

    def collect(self, tags: set[str]) -> dict[str, Collected]:
        """The messages among `tags` that have arrived so far (tag -> message)."""
        ...


class LabSinkCollector:
    """The lab's sink MX (`sendfleet.lab.sink`): it records client IP, HELO and TLS of every session."""

    description = "the lab's sink"

    def __init__(self) -> None:
        self._seen: dict[str, Collected] = {}  # kept: another test may clear the sink while we wait
        self._ids: set[str] = set()

    def collect(self, tags: set[str]) -> dict[str, Collected]:
        from sendfleet.lab import sink
        from sendfleet.lab.system import LabError

        try:
            messages = sink.read_messages()
        except (LabError, OSError) as err:
            raise CannotCheckError(f"cannot read the lab's sink: {err}") from None
        for m in messages:
            if m.id in self._ids:
                continue
            self._ids.add(m.id)
            tag = tag_of(m.raw)
            if tag is None:
                continue
            self._seen[tag] = Collected(
                tag=tag,
                client_ip=m.client_ip,
                helo=m.helo,
                tls_protocol=m.tls_protocol,
                mail_from=m.mail_from,
                raw=m.raw,
            )
        return {t: c for t, c in self._seen.items() if t in tags}


class DirectoryCollector:
    """Raw messages under a directory (Maildir `cur/` and `new/`, or `*.eml` files, searched recursively).

    The hop from the fleet is read from the Received header whose client IP is one of `fleet_ips`; the
    envelope sender from Return-Path.
    """

    def __init__(self, path: Path, fleet_ips: Iterable[str]) -> None:
        if not path.is_dir():
            raise UsageError(f"--collect-from {path}: no such directory")
        self.path = path
        self.description = f"messages under {path}"
        self.fleet_ips = set(fleet_ips)
        self._parsed: dict[Path, tuple[float, Collected | None]] = {}

    def _read(self, file: Path) -> Collected | None:
        raw = file.read_bytes()
        headers = _HEADERS.parsebytes(raw)
        value = headers.get(TAG_HEADER)
        if value is None:
            return None
        hop = hop_from_fleet([str(v) for v in headers.get_all("Received") or []], self.fleet_ips)
        return_path = str(headers.get("Return-Path", "")).strip().strip("<>")
        return Collected(
            tag=" ".join(str(value).split()),
            client_ip=hop.ip if hop else "",
            helo=hop.helo if hop else "",
            tls_protocol=hop.tls_protocol if hop else None,
            mail_from=return_path,
            raw=raw,
        )

    def collect(self, tags: set[str]) -> dict[str, Collected]:
        found: dict[str, Collected] = {}
        for file in sorted(self.path.rglob("*")):
            if not file.is_file() or file.name.startswith("."):
                continue
            try:
                mtime = file.stat().st_mtime
                cached = self._parsed.get(file)
                if cached is None or cached[0] != mtime:
                    cached = (mtime, self._read(file))
                    self._parsed[file] = cached
            except OSError:
                continue
            msg = cached[1]
            if msg is not None and msg.tag in tags:
                found[msg.tag] = msg
        return found
