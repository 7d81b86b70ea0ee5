"""The warm-up schedule (sendfleet.core.warmup): published defaults, weights, limits, idle restart."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendfleet.core import warmup
from sendfleet.errors import UsageError

S = warmup.WarmupSettings()
D0 = date(2026, 11, 1)


def test_defaults_follow_the_published_schedule() -> None:
    # SendGrid: ~20/h on day 0, ~16,700/h by day 20 (x1.4 a day), done by day 41.
    assert warmup.hourly_volume(0, S) == 20
    assert warmup.hourly_volume(1, S) == pytest.approx(28)
    assert 16_000 < warmup.hourly_volume(20, S) < 17_500
    assert warmup.stage_on(D0, D0 + timedelta(days=41), S).warm is False
    assert warmup.stage_on(D0, D0 + timedelta(days=42), S).warm is True
    assert S.restart_after_idle_days == 30


def test_volume_grows_and_is_capped() -> None:
    volumes = [warmup.hourly_volume(d, S) for d in range(60)]
    assert volumes == sorted(volumes)
    assert max(volumes) == S.full_hourly
    assert warmup.hourly_volume(10_000, S) == S.full_hourly  # no float overflow


def test_day_one_weight_and_limits() -> None:
    stage = warmup.stage_on(D0, D0 + timedelta(days=1), S)
    assert stage.label == "day 1"
    assert stage.weight == 1
    # 28 messages/hour per destination: one every 129 s, one connection
    assert stage.limits == warmup.Limits(concurrency_limit=1, rate_delay=129)
    assert stage.daily == pytest.approx(28 * 24)


def test_no_start_date_means_warm() -> None:
    stage = warmup.stage_on(None, D0, S)
    assert stage.warm and stage.weight == S.resolution and stage.limits == warmup.Limits()


def test_future_start_is_smallest_share() -> None:
    stage = warmup.stage_on(D0 + timedelta(days=3), D0, S)
    assert stage.label == "not started" and stage.weight == 1 and stage.limits.concurrency_limit == 1


def test_idle_ip_restarts_warmup() -> None:
    today = D0 + timedelta(days=100)
    kept = warmup.stage_on(D0, today, S, last_sent=today - timedelta(days=30))
    assert kept.warm and not kept.restarted
    again = warmup.stage_on(D0, today, S, last_sent=today - timedelta(days=31))
    assert again.restarted and again.day == 0 and not again.warm and again.weight == 1


def test_pool_weights_are_normalised_per_host_and_pool() -> None:
    today = D0 + timedelta(days=1)
    plans = warmup.plan_pool_members(
        [
            ("198.51.100.70", "t", "mta1", D0),  # day 1
            ("198.51.100.72", "t", "mta1", None),  # warm
            ("198.51.100.73", "t", "mta1", None),  # warm
            ("198.51.100.74", "m", "mta1", None),
            ("198.51.100.75", "m", "mta1", None),
        ],
        today,
        S,
    )
    by_ip = {p.ip: p for p in plans}
    assert by_ip["198.51.100.70"].weight == 1
    assert by_ip["198.51.100.72"].weight == S.resolution
    assert by_ip["198.51.100.70"].share == pytest.approx(1 / (1 + 2 * S.resolution))
    # a pool of equal IPs is one entry each
    assert by_ip["198.51.100.74"].weight == 1 and by_ip["198.51.100.75"].weight == 1


def test_normalise_keeps_zeros() -> None:
    assert warmup.normalise_weights([20, 0, 10]) == [2, 0, 1]
    assert warmup.normalise_weights([0, 0]) == [0, 0]


def test_settings_from_mapping_and_errors() -> None:
    s = warmup.settings_from({"growth": 1.3, "duration_days": 30})
    assert s.growth == 1.3 and s.duration_days == 30
    with pytest.raises(UsageError, match=r"warmup\.speed: unknown setting"):
        warmup.settings_from({"speed": 2})
    with pytest.raises(UsageError, match=r"growth must be >= 1"):
        warmup.settings_from({"growth": 0.5})
    with pytest.raises(UsageError, match="expected a number"):
        warmup.settings_from({"growth": "fast"})


@given(st.integers(min_value=0, max_value=200))
def test_weight_and_limits_are_monotonic(day: int) -> None:
    a = warmup.stage_on(D0, D0 + timedelta(days=day), S)
    b = warmup.stage_on(D0, D0 + timedelta(days=day + 1), S)
    assert 1 <= a.weight <= b.weight <= S.resolution
    if a.limits.rate_delay is not None and b.limits.rate_delay is not None:
        assert b.limits.rate_delay <= a.limits.rate_delay


def _plugin() -> Any:
    from tests.unit.plugins import load_plugin

    return load_plugin("filter", "sendfleet_warmup")


def test_filter_plan_and_idle_restart_is_kept() -> None:
    f = _plugin()
    ips = [{"ip": "198.51.100.70", "pool": "t", "ptr": "o70"}, {"ip": "198.51.100.72", "pool": "t", "ptr": "o72"}]
    plan = f.sf_warmup_plan(ips, "mta1", {}, "2026-11-27")
    assert [e["weight"] for e in plan] == [1, 1] and plan[0]["transport"] == "sf_198_51_100_70"
    # .70 last sent 40 days ago: it warms up again from today, and the restart is recorded ...
    idle = {"198.51.100.70": "2026-10-18"}
    plan = f.sf_warmup_plan(ips, "mta1", {}, "2026-11-27", "sf", idle, {})
    assert plan[0]["warmup"]["restarted"] and plan[0]["warmup"]["day"] == 0 and plan[0]["weight"] == 1
    assert plan[1]["weight"] == 20
    restarts = f.sf_warmup_restarts(plan, {"198.51.100.99": "2026-01-01"})
    assert restarts == {"198.51.100.70": "2026-11-27"}
    # ... so that the next day, having sent again, it is on day 1, not back to warm
    plan = f.sf_warmup_plan(ips, "mta1", {}, "2026-11-28", "sf", {"198.51.100.70": 1795852800.0}, restarts)
    assert plan[0]["warmup"]["label"] == "day 1" and not plan[0]["warmup"]["restarted"]
    assert f.sf_warmup_restarts(plan, restarts) == restarts
    assert f.sf_apply_drained(plan, ["198.51.100.72"])[1]["weight"] == 0
