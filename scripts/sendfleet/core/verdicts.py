"""Verdict rules of `sendfleet vet`: what an answer means, whether a zone can be trusted, what an address
is, and whether its /24 neighbourhood lets it in. Pure. Fail closed: anything unclear is "unknown".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from sendfleet.core.zones import Kind, Zone

RCODE_NOERROR = 0
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5
#: Not DNS rcodes: no answer after every try, and an answer that could not be parsed.
RCODE_TIMEOUT = -1
RCODE_MALFORMED = -2

_RCODE_NAMES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    RCODE_TIMEOUT: "timeout",
    RCODE_MALFORMED: "malformed answer",
}


def rcode_name(rcode: int) -> str:
    return _RCODE_NAMES.get(rcode, f"rcode {rcode}")


@dataclass(frozen=True)
class Reply:
    """What came back for one query: an rcode (or timeout) and, for NOERROR, the answer records as text."""

    rcode: int
    records: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def nxdomain(self) -> bool:
        return self.rcode == RCODE_NXDOMAIN


NXDOMAIN = Reply(RCODE_NXDOMAIN)
NODATA = Reply(RCODE_NOERROR)
TIMEOUT = Reply(RCODE_TIMEOUT)


class Outcome(IntEnum):
    """Per (address, zone) and per address. The integer values are stored compactly (one byte each)."""

    PENDING = 0
    CLEAN = 1
    LISTED = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class ZoneStatus(StrEnum):
    OK = "ok"
    BROKEN = "broken"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ZoneAnswer:
    """One zone's answer about one address or domain, with what it means."""

    zone: str
    outcome: Outcome
    codes: tuple[str, ...] = ()
    meanings: tuple[str, ...] = ()
    detail: str = ""
    reason: str | None = None  # TXT reason of a listing, when the zone gives one

    def with_reason(self, reason: str | None) -> ZoneAnswer:
        return ZoneAnswer(self.zone, self.outcome, self.codes, self.meanings, self.detail, reason)


def classify(zone: Zone, reply: Reply) -> ZoneAnswer:
    """One answer of a healthy zone: listed (an answer in `listed`), clean (NXDOMAIN), otherwise unknown."""
    if reply.rcode == RCODE_NXDOMAIN:
        return ZoneAnswer(zone.name, Outcome.CLEAN)
    if reply.rcode == RCODE_TIMEOUT:
        return ZoneAnswer(zone.name, Outcome.UNKNOWN, detail="no answer (timeout after every try)")
    if reply.rcode != RCODE_NOERROR:
        return ZoneAnswer(zone.name, Outcome.UNKNOWN, detail=f"{rcode_name(reply.rcode)} from the resolver")
    if reply.truncated and not reply.records:
        return ZoneAnswer(zone.name, Outcome.UNKNOWN, detail="truncated answer")
    if not reply.records:
        return ZoneAnswer(
            zone.name, Outcome.UNKNOWN, detail="NOERROR without an A record (neither listed nor NXDOMAIN)"
        )
    codes = tuple(sorted(set(reply.records), key=_code_key))
    meanings = tuple(m for m in (zone.meaning(c) for c in codes) if m)
    errors = [c for c in codes if c in zone.errors]
    if errors:
        what = ", ".join(f"{c} ({zone.meaning(c)})" if zone.meaning(c) else c for c in errors)
        return ZoneAnswer(zone.name, Outcome.UNKNOWN, codes, meanings, f"error answer {what}: the list refused")
    listed = [c for c in codes if c in zone.listed]
    if listed:
        return ZoneAnswer(zone.name, Outcome.LISTED, codes, meanings, "")
    return ZoneAnswer(
        zone.name,
        Outcome.UNKNOWN,
        codes,
        meanings,
        f"unexpected answer {', '.join(codes)} (neither listed nor error)",
    )


def _code_key(code: str) -> tuple[int, str]:
    try:
        return int(ipaddress.IPv4Address(code)), code
    except ValueError:
        return 1 << 33, code


def unusable_zone_answer(zone: Zone, status: ZoneStatus) -> ZoneAnswer:
    """Every answer of a broken or unreachable zone is unknown."""
    return ZoneAnswer(zone.name, Outcome.UNKNOWN, detail=f"zone {status.value}: its answers cannot be trusted")


# --- zone health (RFC 5782 §5) -------------------------------------------------------------------------

#: Test points: (listed, not listed) per kind of query.
HEALTH_POINTS_V4 = ("127.0.0.2", "127.0.0.1")
HEALTH_POINTS_V6 = ("::ffff:7f00:2", "::ffff:7f00:1")
HEALTH_POINTS_DOMAIN = ("test", "invalid")


@dataclass(frozen=True)
class ZoneHealth:
    zone: str
    status: ZoneStatus
    detail: str


def _no_answer(reply: Reply) -> bool:
    return reply.rcode not in (RCODE_NOERROR, RCODE_NXDOMAIN)


def zone_health(zone: Zone, checks: Iterable[tuple[str, Reply, Reply]]) -> ZoneHealth:
    """Judge a zone from its test points: `(family, reply for the listed point, reply for the clean point)`.

    ok: every positive test point listed and every negative one NXDOMAIN. broken: a wrong answer (the negative
    point listed, e.g. a parked domain answering everything, or the positive one missing). unreachable: no
    usable answer (timeouts, SERVFAIL, REFUSED, or the list's own error codes: it refuses to answer us).
    """
    problems: list[str] = []
    unreachable: list[str] = []
    for family, positive, negative in checks:
        pos_point, neg_point = _points(zone, family)
        pos = classify(zone, positive)
        neg = classify(zone, negative)
        for point, reply, answer in ((pos_point, positive, pos), (neg_point, negative, neg)):
            if _no_answer(reply):
                unreachable.append(f"{point}: {rcode_name(reply.rcode)}")
            elif answer.codes and all(c in zone.errors for c in answer.codes):
                unreachable.append(f"{point}: {answer.detail}")
        if not _no_answer(positive) and pos.outcome is not Outcome.LISTED and not _all_errors(zone, pos):
            problems.append(f"test point {pos_point} not listed ({_describe(positive)})")
        if not _no_answer(negative) and neg.outcome is not Outcome.CLEAN and not _all_errors(zone, neg):
            problems.append(f"{neg_point} must not be listed but answers {_describe(negative)}")
    if problems:
        return ZoneHealth(zone.name, ZoneStatus.BROKEN, "; ".join(problems))
    if unreachable:
        return ZoneHealth(zone.name, ZoneStatus.UNREACHABLE, "; ".join(unreachable))
    return ZoneHealth(zone.name, ZoneStatus.OK, "test points answer as RFC 5782 requires")


def _all_errors(zone: Zone, answer: ZoneAnswer) -> bool:
    return bool(answer.codes) and all(c in zone.errors for c in answer.codes)


def _points(zone: Zone, family: str) -> tuple[str, str]:
    if zone.kind is Kind.DOMAIN:
        return HEALTH_POINTS_DOMAIN
    return HEALTH_POINTS_V6 if family == "ipv6" else HEALTH_POINTS_V4


def _describe(reply: Reply) -> str:
    if reply.rcode == RCODE_NOERROR:
        return ", ".join(reply.records) if reply.records else "NOERROR without records"
    return rcode_name(reply.rcode)


# --- per address ---------------------------------------------------------------------------------------


def address_outcome(outcomes: Iterable[Outcome]) -> Outcome:
    """listed if any (healthy) zone lists it; else unknown if any answer is unknown (or none was asked);
    else clean."""
    seen = False
    unknown = False
    for outcome in outcomes:
        seen = True
        if outcome is Outcome.LISTED:
            return Outcome.LISTED
        if outcome is not Outcome.CLEAN:
            unknown = True
    if not seen or unknown:
        return Outcome.UNKNOWN
    return Outcome.CLEAN


def combine_states(states: bytes | bytearray) -> Outcome:
    """`address_outcome` over compact one-byte states (PENDING counts as unknown)."""
    if not states:
        return Outcome.UNKNOWN
    if Outcome.LISTED in states:
        return Outcome.LISTED
    if Outcome.UNKNOWN in states or Outcome.PENDING in states:
        return Outcome.UNKNOWN
    return Outcome.CLEAN


# --- neighbourhood -------------------------------------------------------------------------------------

DEFAULT_NEIGHBOURHOOD_THRESHOLD = 0.05


@dataclass(frozen=True)
class NetworkScore:
    """An IPv4 /24 that holds a target: how many of its addresses are listed or unknown."""

    cidr: str
    listed: int
    unknown: int
    total: int

    @property
    def listed_share(self) -> float:
        return self.listed / self.total if self.total else 0.0

    def poor(self, threshold: float) -> bool:
        """More than `threshold` of the /24 is listed."""
        return self.listed > threshold * self.total

    def uncertain(self, threshold: float) -> bool:
        """Not provably within the threshold: listed plus unknown addresses exceed it."""
        return not self.poor(threshold) and self.listed + self.unknown > threshold * self.total


def score_network(cidr: str, outcomes: Iterable[Outcome]) -> NetworkScore:
    listed = unknown = total = 0
    for outcome in outcomes:
        total += 1
        if outcome is Outcome.LISTED:
            listed += 1
        elif outcome is not Outcome.CLEAN:
            unknown += 1
    return NetworkScore(cidr, listed, unknown, total)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str | None  # why not admitted (or why admitted despite the neighbourhood)


def admission(
    outcome: Outcome,
    network: NetworkScore | None,
    *,
    threshold: float = DEFAULT_NEIGHBOURHOOD_THRESHOLD,
    accept_neighbourhood: bool = False,
) -> Admission:
    """Only a clean address whose neighbourhood is provably within the threshold is admitted.

    `accept_neighbourhood` lets a clean address of a poor (or uncertain) /24 in, and says so.
    """
    if outcome is Outcome.LISTED:
        return Admission(False, "listed")
    if outcome is not Outcome.CLEAN:
        return Admission(False, "unknown: not every zone gave a clean answer")
    if network is None:
        return Admission(True, None)
    pct = f"{network.listed}/{network.total} listed, {network.unknown} unknown"
    limit = f"threshold {threshold:.1%}"
    if network.poor(threshold):
        if accept_neighbourhood:
            return Admission(True, f"ADMITTED DESPITE A POOR NEIGHBOURHOOD ({network.cidr}: {pct}; {limit})")
        return Admission(False, f"poor neighbourhood: {network.cidr} has {pct} ({limit})")
    if network.uncertain(threshold):
        if accept_neighbourhood:
            return Admission(True, f"ADMITTED DESPITE AN UNCERTAIN NEIGHBOURHOOD ({network.cidr}: {pct}; {limit})")
        return Admission(False, f"uncertain neighbourhood: {network.cidr} has {pct}, could exceed {limit}")
    return Admission(True, None)
