"""The drain/restore state machine of the DNSBL monitor. Pure: previous state + this run's verdicts ->
new state + actions. The monitor (sendfleet.monitor) applies the actions to Postfix and logs them.

Rules (per sending IP):

- in service + **listed**: drained (with `auto_drain`) — unless it is the last in-service IP of its pool
  on this host and `drain_last` is off: then it stays, flagged `drain_blocked` (mail keeps flowing; an
  alert is raised). Without `auto_drain` it stays in service and is reported.
- drained + **clean**: its clean streak grows; after `restore_after` consecutive clean checks it returns.
- drained + **listed**: stays drained, the streak restarts from 0.
- **unknown** (a zone broken or unreachable, the resolver silent, no answer): never drains, never
  restores; for a drained IP it breaks the streak of consecutive clean checks.

Every action carries the evidence it was taken on (the zones' answers), for the journal and state file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

IN_SERVICE = "in_service"
DRAINED = "drained"

CLEAN = "clean"
LISTED = "listed"
UNKNOWN = "unknown"
VERDICTS = (CLEAN, LISTED, UNKNOWN)


@dataclass(frozen=True)
class DrainSettings:
    auto_drain: bool = True
    restore_after: int = 3  # consecutive clean checks before a drained IP returns
    drain_last: bool = False  # drain even the last in-service IP of a pool on this host

    def __post_init__(self) -> None:
        if self.restore_after < 1:
            raise ValueError("restore_after must be >= 1")


@dataclass(frozen=True)
class Verdict:
    """One IP's result in one monitor run, with the evidence (zone answers) it rests on."""

    ip: str
    verdict: str  # clean | listed | unknown
    evidence: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: expected one of {', '.join(VERDICTS)}")


@dataclass(frozen=True)
class IpState:
    ip: str
    pool: str
    status: str = IN_SERVICE  # in_service | drained
    clean_streak: int = 0  # consecutive clean checks while drained
    last_verdict: str | None = None
    since: str | None = None  # when the current status began (ISO time)
    drain_blocked: bool = False  # listed, but kept: last in-service IP of its pool
    evidence: tuple[Mapping[str, Any], ...] = ()  # what the current status rests on

    def as_dict(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "pool": self.pool,
            "status": self.status,
            "clean_streak": self.clean_streak,
            "last_verdict": self.last_verdict,
            "since": self.since,
            "drain_blocked": self.drain_blocked,
            "evidence": [dict(e) for e in self.evidence],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IpState:
        status = str(data.get("status", IN_SERVICE))
        return cls(
            ip=str(data["ip"]),
            pool=str(data.get("pool", "")),
            status=status if status in (IN_SERVICE, DRAINED) else IN_SERVICE,
            clean_streak=int(data.get("clean_streak", 0)),
            last_verdict=data.get("last_verdict"),
            since=data.get("since"),
            drain_blocked=bool(data.get("drain_blocked", False)),
            evidence=tuple(dict(e) for e in data.get("evidence", ()) if isinstance(e, Mapping)),
        )


@dataclass(frozen=True)
class Action:
    kind: str  # drain | restore | blocked | listed_no_drain | forget
    ip: str
    pool: str
    reason: str
    evidence: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.kind,
            "ip": self.ip,
            "pool": self.pool,
            "reason": self.reason,
            "evidence": [dict(e) for e in self.evidence],
        }

    def message(self) -> str:
        zones = ", ".join(_evidence_text(e) for e in self.evidence)
        return f"{self.kind} {self.ip} (pool {self.pool}): {self.reason}" + (f" [{zones}]" if zones else "")


def _evidence_text(e: Mapping[str, Any]) -> str:
    parts = [str(e.get("zone", "?")), str(e.get("outcome", "?"))]
    codes = e.get("codes")
    if codes:
        parts.append("/".join(str(c) for c in codes))
    for key in ("reason", "detail"):
        if e.get(key):
            parts.append(str(e[key]))
    return " ".join(parts)


@dataclass
class Transition:
    states: dict[str, IpState] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(a.kind in ("drain", "restore") for a in self.actions)


def step(
    previous: Mapping[str, IpState],
    members: Sequence[tuple[str, str]],
    verdicts: Mapping[str, Verdict],
    settings: DrainSettings,
    now: str,
) -> Transition:
    """One monitor run. `members`: this host's in-service (ip, pool) pairs from the inventory, in order;
    `verdicts`: this run's result per IP (a missing IP counts as unknown). Returns the new states and the
    actions to apply (drain/restore) or report."""
    out = Transition()
    member_ips = {ip for ip, _ in members}
    for ip, old in previous.items():
        if ip not in member_ips:
            out.actions.append(Action("forget", ip, old.pool, "no longer a sending IP of this host"))
    # IPs in service after this run, per pool (updated as we go, so two listings in one pool cannot
    # drain its last two IPs).
    in_service: dict[str, set[str]] = {}
    for ip, pool in members:
        prior = previous.get(ip)
        if prior is None or prior.status == IN_SERVICE:
            in_service.setdefault(pool, set()).add(ip)

    for ip, pool in members:
        old = replace(previous.get(ip) or IpState(ip, pool, since=now), pool=pool)
        v = verdicts.get(ip) or Verdict(ip, UNKNOWN, ({"zone": "*", "outcome": UNKNOWN, "detail": "not checked"},))
        new, action = _one(old, v, settings, now, in_service.setdefault(pool, set()))
        out.states[ip] = new
        if action is not None:
            out.actions.append(action)
    return out


def _one(
    old: IpState, v: Verdict, settings: DrainSettings, now: str, pool_in_service: set[str]
) -> tuple[IpState, Action | None]:
    ip, pool = old.ip, old.pool
    if old.status == IN_SERVICE:
        if v.verdict != LISTED:
            return replace(old, last_verdict=v.verdict, drain_blocked=False, clean_streak=0), None
        if not settings.auto_drain:
            state = replace(old, last_verdict=LISTED, drain_blocked=False, evidence=v.evidence)
            return state, Action("listed_no_drain", ip, pool, "listed; auto_drain is off", v.evidence)
        others = pool_in_service - {ip}
        if not others and not settings.drain_last:
            state = replace(old, last_verdict=LISTED, drain_blocked=True, evidence=v.evidence)
            reason = "listed, NOT drained: last in-service IP of its pool on this host (drain_last is off)"
            return state, Action("blocked", ip, pool, reason, v.evidence)
        pool_in_service.discard(ip)
        state = IpState(ip, pool, DRAINED, 0, LISTED, now, False, v.evidence)
        return state, Action("drain", ip, pool, "listed", v.evidence)

    # drained
    if v.verdict == LISTED:
        return replace(old, last_verdict=LISTED, clean_streak=0, evidence=v.evidence), None
    if v.verdict == UNKNOWN:
        # neither evidence of a listing nor of a clean record: hold, and break the streak
        return replace(old, last_verdict=UNKNOWN, clean_streak=0), None
    streak = old.clean_streak + 1
    if streak >= settings.restore_after:
        pool_in_service.add(ip)
        state = IpState(ip, pool, IN_SERVICE, 0, CLEAN, now, False, v.evidence)
        reason = f"clean in {streak} consecutive checks (restore_after {settings.restore_after})"
        return state, Action("restore", ip, pool, reason, v.evidence)
    return replace(old, last_verdict=CLEAN, clean_streak=streak), None


def drained_ips(states: Mapping[str, IpState]) -> set[str]:
    return {ip for ip, s in states.items() if s.status == DRAINED}


def listed_by(
    previous: Mapping[str, IpState],
    members: Sequence[tuple[str, str]],
    ip: str,
    evidence: Sequence[Mapping[str, Any]],
    settings: DrainSettings,
    now: str,
) -> Transition:
    """A listing learnt outside a check (a receiver's reply quoting a blocklist): `ip` is judged listed on
    `evidence` by the same rules as a check (auto_drain, the last in-service IP of its pool); every other IP keeps
    its state. A drained IP comes back by the checks' restore rule (`restore_after` clean checks)."""
    out = Transition(states=dict(previous))
    pool = next((p for i, p in members if i == ip), None)
    if pool is None:
        return out
    in_service = {i for i, p in members if p == pool and (previous.get(i) is None or previous[i].status == IN_SERVICE)}
    old = replace(previous.get(ip) or IpState(ip, pool, since=now), pool=pool)
    new, action = _one(old, Verdict(ip, LISTED, tuple(evidence)), settings, now, in_service)
    out.states[ip] = new
    if action is not None:
        out.actions.append(action)
    return out
