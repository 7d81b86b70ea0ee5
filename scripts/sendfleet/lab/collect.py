"""The readiness collector of the lab: tagged messages as the lab's sink MX stored them (`sendfleet.lab.sink`).

The sink records client IP, HELO and TLS of every session itself, so nothing is read from Received headers.
Production collectors (a seed mailbox over IMAP, a directory of raw messages) are in `sendfleet.readiness.collect`;
`sendfleet readiness` picks this one when the inventory is the lab's.
"""

from __future__ import annotations

from sendfleet.errors import CannotCheckError
from sendfleet.lab import sink
from sendfleet.lab.system import LabError
from sendfleet.readiness.collect import tag_of
from sendfleet.readiness.evidence import Collected


class LabSinkCollector:
    """The lab's sink MX: it records client IP, HELO and TLS of every session."""

    description = "the lab's sink"

    def __init__(self) -> None:
        self._seen: dict[str, Collected] = {}  # kept: another test may clear the sink while we wait
        self._ids: set[str] = set()

    def collect(self, tags: set[str]) -> dict[str, Collected]:
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
