"""The record of one `sendfleet vet` run, and the per-address reports derived from it. Pure.

Results are kept compactly: one byte per (address, zone) for every IPv4 /24 that holds a target (the
neighbourhood is scanned whole), details only for the targets' non-clean answers. Per-address reports are
built on demand while the report is written, never all at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sendfleet.core.holder import AsnOrigin, PtrInfo
from sendfleet.core.targets import TargetSet
from sendfleet.core.verdicts import (
    NXDOMAIN,
    Admission,
    NetworkScore,
    Outcome,
    Reply,
    ZoneAnswer,
    ZoneHealth,
    ZoneStatus,
    admission,
    classify,
    combine_states,
    unusable_zone_answer,
)
from sendfleet.core.zones import Kind, Zone, ZonesConfig

_CLEAN = int(Outcome.CLEAN)
#: bytes.translate table: 0 for a clean state, 1 for any other (pending, listed, unknown)
_NOT_CLEAN = bytes(0 if i == _CLEAN else 1 for i in range(256))


@dataclass(frozen=True)
class Holder:
    origin: AsnOrigin | None
    name: str | None = None
    detail: str | None = None  # why the lookup failed
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        if self.origin is None:
            return {"asn": None, "detail": self.detail}
        return {
            "asn": self.origin.asns[0],
            "asns": list(self.origin.asns),
            "name": self.name,
            "prefix": self.origin.prefix,
            "country": self.origin.country,
            "registry": self.origin.registry,
        }


@dataclass(frozen=True)
class AddressReport:
    ip: str
    verdict: Outcome
    admission: Admission
    answers: tuple[ZoneAnswer, ...]
    network: NetworkScore | None
    ptr: PtrInfo | None
    holder: Holder | None
    warnings: tuple[str, ...]
    kind: str = "ip"  # "ip" | "domain"

    @property
    def listings(self) -> tuple[ZoneAnswer, ...]:
        return tuple(a for a in self.answers if a.outcome is Outcome.LISTED)

    @property
    def errors(self) -> tuple[ZoneAnswer, ...]:
        return tuple(a for a in self.answers if a.outcome is not Outcome.LISTED and a.outcome is not Outcome.CLEAN)

    def as_dict(self, scopes: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ip" if self.kind == "ip" else "domain": self.ip,
            "verdict": self.verdict.label,
            "admitted": self.admission.admitted,
            "reason": self.admission.reason,
            "listings": [
                {
                    "zone": a.zone,
                    "scope": scopes.get(a.zone, "address"),
                    "codes": list(a.codes),
                    "meanings": list(a.meanings),
                    "reason": a.reason,
                }
                for a in self.listings
            ],
            "errors": [{"zone": a.zone, "codes": list(a.codes), "detail": a.detail} for a in self.errors],
        }
        if self.kind == "ip":
            out["network"] = self.network.cidr if self.network else None
            out["ptr"] = (
                None
                if self.ptr is None
                else {
                    "present": self.ptr.present,
                    "name": self.ptr.name,
                    "generic": self.ptr.generic,
                    "detail": self.ptr.detail,
                }
            )
            out["holder"] = None if self.holder is None else self.holder.as_dict()
        out["warnings"] = list(self.warnings)
        return out


@dataclass
class VetBook:
    """Everything one run learned. Fill it from the scanner's deliveries; read it with `reports()`."""

    targets: TargetSet
    config: ZonesConfig
    health: dict[str, ZoneHealth]
    threshold: float
    accept_neighbourhood: bool
    #: IPv6 test points of `ipv6: true` zones, judged apart: a zone whose IPv6 side fails stays usable for IPv4
    health6: dict[str, ZoneHealth] = field(default_factory=dict)
    v4_ok: tuple[Zone, ...] = ()
    v4_bad: tuple[Zone, ...] = ()
    v6_ok: tuple[Zone, ...] = ()
    v6_bad: tuple[Zone, ...] = ()
    dom_ok: tuple[Zone, ...] = ()
    dom_bad: tuple[Zone, ...] = ()
    blocks: dict[int, bytearray] = field(default_factory=dict)
    v6_states: dict[int, bytearray] = field(default_factory=dict)
    dom_states: dict[str, bytearray] = field(default_factory=dict)
    details: dict[tuple[int, int | str, int], ZoneAnswer] = field(default_factory=dict)
    ptrs: dict[tuple[int, int], PtrInfo] = field(default_factory=dict)
    holders24: dict[int, Holder] = field(default_factory=dict)
    holders: dict[tuple[int, int], Holder] = field(default_factory=dict)
    _scores: dict[int, NetworkScore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def ok(z: Zone) -> bool:
            return self.health[z.name].status is ZoneStatus.OK

        def ok6(z: Zone) -> bool:
            return ok(z) and self.status6(z) is ZoneStatus.OK

        ip_zones = [z for z in self.config.enabled if z.kind is Kind.IP]
        v6_zones = [z for z in ip_zones if z.ipv6]
        dom_zones = [z for z in self.config.enabled if z.kind is Kind.DOMAIN]
        self.v4_ok = tuple(z for z in ip_zones if ok(z))
        self.v4_bad = tuple(z for z in ip_zones if not ok(z))
        self.v6_ok = tuple(z for z in v6_zones if ok6(z))
        self.v6_bad = tuple(z for z in v6_zones if not ok6(z))
        self.dom_ok = tuple(z for z in dom_zones if ok(z))
        self.dom_bad = tuple(z for z in dom_zones if not ok(z))
        self._clean4 = tuple(ZoneAnswer(z.name, Outcome.CLEAN) for z in self.v4_ok)
        self._all_clean4 = bytes([int(Outcome.CLEAN)] * len(self.v4_ok))

    def status6(self, zone: Zone) -> ZoneStatus:
        """The zone's status for IPv6 queries: its own status if broken, else its IPv6 test points'."""
        if self.health[zone.name].status is not ZoneStatus.OK:
            return self.health[zone.name].status
        h6 = self.health6.get(zone.name)
        return h6.status if h6 is not None else ZoneStatus.OK

    # -- recording ---------------------------------------------------------------------------------------

    def block(self, base: int) -> bytearray:
        states = self.blocks.get(base)
        if states is None:
            states = self.blocks[base] = bytearray(256 * len(self.v4_ok))
        return states

    def record4(self, value: int, zi: int, reply: Reply) -> None:
        """One answer about an IPv4 address (a target or a neighbour in its /24) from healthy zone `zi`."""
        states = self.block(value & ~0xFF)
        slot = (value & 0xFF) * len(self.v4_ok) + zi
        if reply is NXDOMAIN:
            states[slot] = _CLEAN
            return
        answer = classify(self.v4_ok[zi], reply)
        states[slot] = int(answer.outcome)
        if answer.outcome is not Outcome.CLEAN and self.targets.contains(4, value):
            self.details[(4, value, zi)] = answer

    def record6(self, value: int, zi: int, reply: Reply) -> None:
        states = self.v6_states.get(value)
        if states is None:
            states = self.v6_states[value] = bytearray(len(self.v6_ok))
        answer = classify(self.v6_ok[zi], reply)
        states[zi] = int(answer.outcome)
        if answer.outcome is not Outcome.CLEAN:
            self.details[(6, value, zi)] = answer

    def record_domain(self, domain: str, zi: int, reply: Reply) -> None:
        states = self.dom_states.get(domain)
        if states is None:
            states = self.dom_states[domain] = bytearray(len(self.dom_ok))
        answer = classify(self.dom_ok[zi], reply)
        states[zi] = int(answer.outcome)
        if answer.outcome is not Outcome.CLEAN:
            self.details[(0, domain, zi)] = answer

    def add_reason(self, family: int, value: int | str, zi: int, reason: str | None) -> None:
        answer = self.details.get((family, value, zi))
        if answer is not None and reason:
            self.details[(family, value, zi)] = answer.with_reason(reason)

    def listed_targets(self) -> Iterator[tuple[int, int | str, int, Zone]]:
        """(family, value, zone index, zone) of every listing of a target: worth asking its TXT reason."""
        for (family, value, zi), answer in list(self.details.items()):
            if answer.outcome is Outcome.LISTED:
                zones = self.v4_ok if family == 4 else self.v6_ok if family == 6 else self.dom_ok
                yield family, value, zi, zones[zi]

    # -- reading -----------------------------------------------------------------------------------------

    def outcome4(self, value: int) -> Outcome:
        """An IPv4 address's outcome over every zone (unusable zones count as unknown)."""
        z = len(self.v4_ok)
        host = value & 0xFF
        states = self.blocks.get(value & ~0xFF)
        own = states[host * z : host * z + z] if states is not None and z else b""
        if Outcome.LISTED in own:
            return Outcome.LISTED
        if self.v4_bad or not z or states is None:
            return Outcome.UNKNOWN
        return combine_states(own)

    def network_score(self, base: int) -> NetworkScore:
        score = self._scores.get(base)
        if score is None:
            listed = unknown = 0
            for host in self._unclean_hosts(base):
                outcome = self.outcome4(base + host)
                if outcome is Outcome.LISTED:
                    listed += 1
                elif outcome is not Outcome.CLEAN:
                    unknown += 1
            score = NetworkScore(f"{ipaddress.IPv4Address(base)}/24", listed, unknown, 256)
            self._scores[base] = score
        return score

    def _unclean_hosts(self, base: int) -> Iterator[int]:
        """Hosts of the /24 that may not be clean: every host, unless its block was scanned by usable zones
        only; then those with a state other than clean (most addresses are clean: one C-level search each)."""
        z = len(self.v4_ok)
        states = self.blocks.get(base)
        if states is None or not z or self.v4_bad:
            yield from range(256)
            return
        flags = states.translate(_NOT_CLEAN)
        pos = flags.find(1)
        while pos >= 0:
            host = pos // z
            yield host
            pos = flags.find(1, (host + 1) * z)

    def networks(self) -> Iterator[NetworkScore]:
        for base in self.targets.networks24():
            yield self.network_score(base)

    def cell_state(self, value: int) -> str:
        """For the heat map: clean | listed | unknown | neighbourhood (clean but not admitted for its /24)."""
        outcome = self.outcome4(value)
        if outcome is Outcome.CLEAN:
            adm = admission(
                outcome,
                self.network_score(value & ~0xFF),
                threshold=self.threshold,
                accept_neighbourhood=self.accept_neighbourhood,
            )
            return "clean" if adm.admitted else "neighbourhood"
        return outcome.label

    def answers4(self, value: int) -> tuple[ZoneAnswer, ...]:
        z = len(self.v4_ok)
        states = self.blocks.get(value & ~0xFF)
        host = value & 0xFF
        if states is not None and not self.v4_bad and states[host * z : host * z + z] == self._all_clean4:
            return self._clean4  # the common case: every zone said NXDOMAIN (no details are kept for clean)
        out: list[ZoneAnswer] = []
        for zi, zone in enumerate(self.v4_ok):
            state = Outcome(states[host * z + zi]) if states is not None else Outcome.PENDING
            detail = self.details.get((4, value, zi))
            if detail is not None:
                out.append(detail)
            elif state is Outcome.CLEAN:
                out.append(ZoneAnswer(zone.name, Outcome.CLEAN))
            else:
                out.append(ZoneAnswer(zone.name, Outcome.UNKNOWN, detail="no answer recorded"))
        out.extend(unusable_zone_answer(zone, self.health[zone.name].status) for zone in self.v4_bad)
        return tuple(out)

    def _answers(
        self,
        family: int,
        value: int | str,
        ok: tuple[Zone, ...],
        bad: tuple[Zone, ...],
        states: bytearray | None,
    ) -> tuple[ZoneAnswer, ...]:
        out: list[ZoneAnswer] = []
        for zi, zone in enumerate(ok):
            detail = self.details.get((family, value, zi))
            if detail is not None:
                out.append(detail)
            elif states is not None and states[zi] == _CLEAN:
                out.append(ZoneAnswer(zone.name, Outcome.CLEAN))
            else:
                out.append(ZoneAnswer(zone.name, Outcome.UNKNOWN, detail="no answer recorded"))
        statuses = {z.name: (self.status6(z) if family == 6 else self.health[z.name].status) for z in bad}
        out.extend(unusable_zone_answer(zone, statuses[zone.name]) for zone in bad)
        return tuple(out)

    def reports(self) -> Iterator[AddressReport]:
        """One report per target, in order: IPv4, IPv6, then domains. Built lazily."""
        for r in self.targets.ranges:
            for value in range(r.first, r.last + 1):
                yield self.report(r.version, value)
        for domain in self.targets.domains:
            yield self.domain_report(domain)

    def shared_report_keys(self, base: int) -> list[tuple[int, PtrInfo | None] | None]:
        """Per host of the IPv4 /24 at `base`, for the common case (every zone answered clean, no PTR name, no
        holder of its own): a key such that every address with the same key has the same report but for `ip`
        (its /24 and its absent PTR; verdict, admission, neighbourhood, holder and warnings are the /24's).
        None for any other host, whose report is its own: a writer may render a report once per key and reuse
        it for the other addresses of that key."""
        if self.v4_bad or not self.v4_ok or base not in self.blocks:
            return [None] * 256
        shared = (base, None)
        keys: list[tuple[int, PtrInfo | None] | None] = [shared] * 256
        for host in self._unclean_hosts(base):
            keys[host] = None
        if self.ptrs or self.holders:
            for host, key in enumerate(keys):
                if key is None:
                    continue
                ptr = self.ptrs.get((4, base + host))
                if (ptr is not None and ptr.present) or (4, base + host) in self.holders:
                    keys[host] = None
                elif ptr is not None:
                    keys[host] = (base, ptr)
        return keys

    def report(self, version: int, value: int) -> AddressReport:
        if version == 4:
            answers = self.answers4(value)
            network: NetworkScore | None = self.network_score(value & ~0xFF)
            ip = str(ipaddress.IPv4Address(value))
        else:
            answers = self._answers(6, value, self.v6_ok, self.v6_bad, self.v6_states.get(value))
            network = None
            ip = str(ipaddress.IPv6Address(value))
        outcome = _outcome(answers)
        warnings: list[str] = []
        if not answers:
            warnings.append("no zone of the zones file is asked about IPv6 addresses (ipv6: true): unknown")
        adm = admission(outcome, network, threshold=self.threshold, accept_neighbourhood=self.accept_neighbourhood)
        if adm.admitted and adm.reason:
            warnings.append(adm.reason)
        holder = self.holders.get((version, value))
        if holder is None and version == 4:
            holder = self.holders24.get(value & ~0xFF)
        if holder is not None:
            warnings.extend(holder.warnings)
        ptr = self.ptrs.get((version, value))
        if ptr is not None and ptr.present and ptr.generic:
            warnings.append(f"PTR {ptr.name} looks generic: mailbox providers distrust generic reverse DNS")
        return AddressReport(ip, outcome, adm, answers, network, ptr, holder, tuple(warnings))

    def domain_report(self, domain: str) -> AddressReport:
        answers = self._answers(0, domain, self.dom_ok, self.dom_bad, self.dom_states.get(domain))
        outcome = _outcome(answers)
        warnings = [] if answers else ["no kind: domain zone in the zones file: unknown"]
        reason = "domains are never admitted as IPs" if outcome is Outcome.CLEAN else outcome.label
        return AddressReport(
            domain,
            outcome,
            Admission(False, reason),
            answers,
            None,
            None,
            None,
            tuple(warnings),
            kind="domain",
        )


def _outcome(answers: tuple[ZoneAnswer, ...]) -> Outcome:
    if not answers:
        return Outcome.UNKNOWN
    if any(a.outcome is Outcome.LISTED for a in answers):
        return Outcome.LISTED
    if any(a.outcome is not Outcome.CLEAN for a in answers):
        return Outcome.UNKNOWN
    return Outcome.CLEAN
