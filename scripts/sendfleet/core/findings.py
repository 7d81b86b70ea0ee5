"""One result line of a check, in the spirit of Mail-in-a-Box's status checks: ok / warning / error."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warning", "error"]
_RANK = {"ok": 0, "warning": 1, "error": 2}


@dataclass(frozen=True)
class Finding:
    status: Status
    subject: str  # what it is about: an IP, a domain, "shop.test/s2026a", a record name
    check: str  # which check: "spf", "dkim", "dmarc", "ptr", "fcrdns", "record", ...
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "subject": self.subject, "check": self.check, "message": self.message}


def worst(findings: Iterable[Finding]) -> Status:
    result: Status = "ok"
    for f in findings:
        if _RANK[f.status] > _RANK[result]:
            result = f.status
    return result
