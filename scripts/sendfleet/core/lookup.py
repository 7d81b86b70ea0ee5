"""What a DNS lookup returned, as the pure checkers see it (the I/O lives in sendfleet.dns)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

LookupStatus = Literal["ok", "nxdomain", "nodata", "error", "unknown"]


@dataclass(frozen=True)
class LookupResult:
    """status: ok (values present), nxdomain, nodata, error (timeout, SERVFAIL...: see detail), unknown
    (not looked up, e.g. offline planning). values: TXT as the joined character-strings of each record;
    PTR/CNAME/NS as lower-case names without the trailing dot; MX as "PREF NAME"; A/AAAA as addresses."""

    status: LookupStatus
    values: tuple[str, ...] = ()
    detail: str = ""

    @property
    def void(self) -> bool:
        return self.status in ("nxdomain", "nodata")


Lookup = Callable[[str, str], LookupResult]  # (name, rdtype) -> result


def unknown_lookup(name: str, rdtype: str) -> LookupResult:
    return LookupResult("unknown", detail="not looked up")
