"""IP warm-up: from an IP's `warmup_start` date to its stage today, its weight in its pool and the limits of
its transport. Pure: dates in, numbers out. The CLI (`sendfleet warmup plan`), the Ansible filter plugin
(`sf_warmup_plan`, which the dnsbl_monitor role uses) and the tests all call `plan_ip` below.

The default schedule follows published ESP schedules:

- SendGrid's automated warm-up grows about x1.4 a day, from ~20 messages/hour on day 0 to ~16,700/hour by
  day 20, and is done by day 41 (about six weeks); other ESPs publish 50-300 on day 1 and about +30 %/day.
- Re-warm after 30 idle days: reputation decays when an IP stops sending.

Model, for day d = (today - start) in days (day 0 is the start date):

    hourly(d) = min(day0_hourly * growth ** d, full_hourly)      while d < duration_days
    warm (no limit)                                                once d >= duration_days

How that is expressed in Postfix (one transport per sending IP, a pool = randmap of transports):

- weight: the number of times the IP's transport is repeated in its pool's randmap. A warm IP has
  `resolution` entries; a warming one max(1, round(resolution * hourly(d) / full_hourly)). The weights of a
  pool are divided by their greatest common divisor, so a pool of equal IPs is `randmap:{a, b, c}`.
- limits of its transport, per destination (Postfix keys queue limits by transport and destination
  domain, so this is "per IP and per provider"): `rate_delay` = ceil(3600 / hourly(d)) seconds while that
  is at least 1 s (Postfix cannot express a finer delay), and a `concurrency_limit` of 1 while
  hourly(d) < `single_connection_below` (a rate delay forces one connection anyway), then 2 while
  hourly(d) < `two_connections_below`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from typing import Any

from sendfleet.core import poolmap
from sendfleet.errors import UsageError


@dataclass(frozen=True)
class WarmupSettings:
    """The schedule. Every field can be set from a mapping (`settings_from`), e.g. inventory `warmup:`."""

    day0_hourly: float = 20.0  # messages/hour on the start date (SendGrid: 20/h)
    growth: float = 1.4  # daily growth factor (SendGrid: ~x1.4/day; others ~x1.3)
    full_hourly: float = 20_000.0  # the cap a warm IP is treated as able to send, per hour
    duration_days: int = 42  # warm from this day on (SendGrid: done by day 41, about six weeks)
    restart_after_idle_days: int = 30  # an IP idle longer than this warms up again
    resolution: int = 20  # randmap entries of a warm IP (a warming IP has 1..resolution)
    single_connection_below: float = 1_000.0  # hourly volume under which the transport uses 1 connection
    two_connections_below: float = 5_000.0  # ... and 2 connections under this

    def __post_init__(self) -> None:
        checks = [
            (self.day0_hourly > 0, "day0_hourly must be > 0"),
            (self.growth >= 1.0, "growth must be >= 1"),
            (self.full_hourly >= self.day0_hourly, "full_hourly must be >= day0_hourly"),
            (self.duration_days >= 1, "duration_days must be >= 1"),
            (self.restart_after_idle_days >= 1, "restart_after_idle_days must be >= 1"),
            (1 <= self.resolution <= 100, "resolution must be 1..100"),
            (self.single_connection_below >= 0, "single_connection_below must be >= 0"),
            (self.two_connections_below >= 0, "two_connections_below must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"warmup: {message}")


_FLOAT_FIELDS = ("day0_hourly", "growth", "full_hourly", "single_connection_below", "two_connections_below")
_INT_FIELDS = ("duration_days", "restart_after_idle_days", "resolution")


def settings_from(data: Mapping[str, Any] | None, where: str = "warmup") -> WarmupSettings:
    """Settings from a mapping (unknown keys are refused, naming them)."""
    if not data:
        return WarmupSettings()
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: expected a mapping of schedule settings")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _FLOAT_FIELDS:
            kind: type = float
        elif key in _INT_FIELDS:
            kind = int
        else:
            known = ", ".join(_FLOAT_FIELDS + _INT_FIELDS)
            raise UsageError(f"{where}.{key}: unknown setting (known: {known})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{where}.{key}: expected a number, got {value!r}")
        if kind is int and value != int(value):
            raise UsageError(f"{where}.{key}: expected a whole number, got {value!r}")
        values[key] = kind(value)
    try:
        return replace(WarmupSettings(), **values)
    except UsageError as err:
        raise UsageError(f"{where}: {str(err).removeprefix('warmup: ')}") from None


@dataclass(frozen=True)
class Limits:
    """Per-destination limits of a transport; None = the postfix role's default."""

    concurrency_limit: int | None = None
    rate_delay: int | None = None  # seconds

    def as_dict(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.concurrency_limit is not None:
            out["concurrency_limit"] = self.concurrency_limit
        if self.rate_delay is not None:
            out["rate_delay"] = self.rate_delay
        return out


@dataclass(frozen=True)
class Stage:
    """Where one IP is in its warm-up on one day."""

    day: int | None  # days since the (effective) start; None = no warm-up (warm)
    warm: bool
    hourly: float | None  # scheduled messages/hour (None: no limit)
    daily: float | None
    weight: int  # randmap entries (before the pool's gcd normalisation)
    limits: Limits = field(default_factory=Limits)
    restarted: bool = False  # the start was moved because the IP was idle too long
    start: date | None = None  # the effective start date

    @property
    def label(self) -> str:
        if self.warm:
            return "warm"
        if self.day is not None and self.day < 0:
            return "not started"
        return f"day {self.day}"


def hourly_volume(day: int, settings: WarmupSettings) -> float:
    """Scheduled messages/hour on warm-up day `day` (0 = the start date), capped at full_hourly."""
    if day < 0:
        return 0.0
    # growth ** day overflows floats for long schedules: compare in log space first
    if math.log(settings.full_hourly / settings.day0_hourly) <= day * math.log(settings.growth):
        return settings.full_hourly
    return min(settings.day0_hourly * settings.growth**day, settings.full_hourly)


def effective_start(
    warmup_start: date | None, today: date, last_sent: date | None, settings: WarmupSettings
) -> tuple[date | None, bool]:
    """The start date that counts today, and whether it was restarted after an idle period.

    An IP that has not sent for more than restart_after_idle_days warms up again from the day it resumes:
    `last_sent` is the last day it delivered mail (None: unknown, no restart).
    """
    if last_sent is not None and (today - last_sent).days > settings.restart_after_idle_days:
        return today, True
    return warmup_start, False


def as_date(value: Any) -> date | None:
    """A date, datetime or ISO date (None or "" -> None); ValueError for other text."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def recorded_day(value: Any) -> date | None:
    """A day the monitor recorded on a host: as_date, or Unix seconds (its last_sent) as a UTC date."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC).date()
    return as_date(value)


def start_with_restart(warmup_start: date | None, restart: date | None) -> date | None:
    """The inventory's warmup_start, or a later restart recorded on the host after an idle period."""
    if restart is not None and (warmup_start is None or restart > warmup_start):
        return restart
    return warmup_start


def stage_on(
    warmup_start: date | None,
    today: date,
    settings: WarmupSettings,
    last_sent: date | None = None,
) -> Stage:
    start, restarted = effective_start(warmup_start, today, last_sent, settings)
    if start is None:
        return Stage(None, True, None, None, settings.resolution, Limits(), restarted, None)
    day = (today - start).days
    if day >= settings.duration_days:
        return Stage(day, True, None, None, settings.resolution, Limits(), restarted, start)
    if day < 0:
        # scheduled to start later: not in rotation yet beyond the smallest share, strictest limits
        hourly = settings.day0_hourly
        return Stage(day, False, 0.0, 0.0, 1, _limits(hourly, settings), restarted, start)
    hourly = hourly_volume(day, settings)
    weight = max(1, min(settings.resolution, round(settings.resolution * hourly / settings.full_hourly)))
    return Stage(day, False, hourly, hourly * 24, weight, _limits(hourly, settings), restarted, start)


def _limits(hourly: float, settings: WarmupSettings) -> Limits:
    delay = math.ceil(3600 / hourly) if hourly > 0 else 3600
    rate_delay = delay if 3600 / hourly >= 1 else None
    if hourly < settings.single_connection_below or rate_delay is not None:
        concurrency: int | None = 1
    elif hourly < settings.two_connections_below:
        concurrency = 2
    else:
        concurrency = None
    return Limits(concurrency, rate_delay)


def normalise_weights(weights: Sequence[int]) -> list[int]:
    """Divide a pool's positive weights by their gcd (zeros stay zero: drained IPs)."""
    positive = [w for w in weights if w > 0]
    if not positive:
        return list(weights)
    g = reduce(math.gcd, positive)
    return [w // g for w in weights]


@dataclass(frozen=True)
class IpPlan:
    ip: str
    pool: str
    host: str
    warmup_start: date | None
    stage: Stage
    weight: int  # after the pool's normalisation (on its host)
    share: float  # of its pool's selections on its host


def plan_pool_members(
    members: Iterable[tuple[str, str, str, date | None]],
    today: date,
    settings: WarmupSettings,
    last_sent: Mapping[str, date] | None = None,
) -> list[IpPlan]:
    """Plan every (ip, pool, host, warmup_start) for `today`. Weights are normalised per (host, pool):
    each host has its own randmap for a pool."""
    items = list(members)
    stages = [stage_on(start, today, settings, (last_sent or {}).get(ip)) for ip, _, _, start in items]
    groups: dict[tuple[str, str], list[int]] = {}
    for index, (_, pool, host, _) in enumerate(items):
        groups.setdefault((host, pool), []).append(index)
    weights = [s.weight for s in stages]
    for indexes in groups.values():
        for i, w in zip(indexes, normalise_weights([weights[i] for i in indexes]), strict=True):
            weights[i] = w
    share = poolmap.shares([(host, pool) for _, pool, host, _ in items], weights)
    return [
        IpPlan(ip, pool, host, start, stage, weights[i], share[i])
        for i, ((ip, pool, host, start), stage) in enumerate(zip(items, stages, strict=True))
    ]


def schedule_table(settings: WarmupSettings, days: int) -> list[tuple[int, float, int, Limits]]:
    """(day, hourly, weight, limits) for days 0..days-1 of a schedule: the documentation's table."""
    out = []
    start = date(2000, 1, 1)
    for d in range(days):
        stage = stage_on(start, start + timedelta(days=d), settings)
        out.append((d, stage.hourly if stage.hourly is not None else math.inf, stage.weight, stage.limits))
    return out
