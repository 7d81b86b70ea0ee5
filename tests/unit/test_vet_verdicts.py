"""Verdict rules: answers, zone health (RFC 5782 §5), per-address verdicts, neighbourhood, admission."""

from __future__ import annotations

import pytest

from sendfleet.core.verdicts import (
    NODATA,
    NXDOMAIN,
    TIMEOUT,
    NetworkScore,
    Outcome,
    Reply,
    ZoneStatus,
    address_outcome,
    admission,
    classify,
    combine_states,
    score_network,
    zone_health,
)
from sendfleet.core.zones import parse_zones

CFG = parse_zones(
    {
        "zones": [
            {
                "zone": "zen.lab.test",
                "listed": ["127.0.0.2-127.0.0.11"],
                "errors": ["127.255.255.0/24"],
                "meanings": {"127.0.0.2": "SBL", "127.255.255.254": "public resolver"},
                "ipv6": True,
            },
            {"zone": "dbl.lab.test", "kind": "domain", "listed": ["127.0.1.2-127.0.1.106"], "errors": ["127.0.1.255"]},
        ]
    },
    "t",
)
ZEN, DBL = CFG.zones


def a(*codes: str) -> Reply:
    return Reply(0, codes)


def test_listed_with_code_and_meaning() -> None:
    ans = classify(ZEN, a("127.0.0.2"))
    assert ans.outcome is Outcome.LISTED and ans.codes == ("127.0.0.2",) and ans.meanings == ("SBL",)


def test_nxdomain_is_clean() -> None:
    assert classify(ZEN, NXDOMAIN).outcome is Outcome.CLEAN


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (a("127.255.255.254"), "error answer 127.255.255.254 (public resolver)"),
        (a("127.0.0.99"), "unexpected answer 127.0.0.99"),
        (a("127.0.0.1"), "unexpected answer"),
        (TIMEOUT, "timeout"),
        (Reply(2), "SERVFAIL"),
        (Reply(5), "REFUSED"),
        (NODATA, "neither listed nor NXDOMAIN"),
        (Reply(-2), "malformed"),
        (a("127.0.0.2", "127.255.255.254"), "error answer"),
    ],
)
def test_everything_else_is_unknown(reply: Reply, fragment: str) -> None:
    ans = classify(ZEN, reply)
    assert ans.outcome is Outcome.UNKNOWN
    assert fragment in ans.detail


def test_listed_wins_over_unexpected_extra_code() -> None:
    assert classify(ZEN, a("127.0.0.2", "127.0.0.99")).outcome is Outcome.LISTED


def test_domain_zone_error_code() -> None:
    assert classify(DBL, a("127.0.1.255")).outcome is Outcome.UNKNOWN
    assert classify(DBL, a("127.0.1.2")).outcome is Outcome.LISTED


# --- zone health -------------------------------------------------------------------------------------


def test_healthy_zone() -> None:
    h = zone_health(ZEN, [("ipv4", a("127.0.0.2"), NXDOMAIN), ("ipv6", a("127.0.0.2"), NXDOMAIN)])
    assert h.status is ZoneStatus.OK


def test_wildcard_zone_is_broken() -> None:
    h = zone_health(ZEN, [("ipv4", a("127.0.0.2"), a("127.0.0.2"))])
    assert h.status is ZoneStatus.BROKEN and "127.0.0.1 must not be listed" in h.detail


def test_missing_test_entry_is_broken() -> None:
    h = zone_health(ZEN, [("ipv4", NXDOMAIN, NXDOMAIN)])
    assert h.status is ZoneStatus.BROKEN and "test point 127.0.0.2 not listed" in h.detail


def test_ipv6_test_points_count() -> None:
    h = zone_health(ZEN, [("ipv4", a("127.0.0.2"), NXDOMAIN), ("ipv6", NXDOMAIN, NXDOMAIN)])
    assert h.status is ZoneStatus.BROKEN and "::ffff:7f00:2" in h.detail


@pytest.mark.parametrize("reply", [TIMEOUT, Reply(2), Reply(5)])
def test_silent_or_refusing_zone_is_unreachable(reply: Reply) -> None:
    assert zone_health(ZEN, [("ipv4", reply, reply)]).status is ZoneStatus.UNREACHABLE


def test_error_codes_for_test_point_mean_unreachable() -> None:
    h = zone_health(ZEN, [("ipv4", a("127.255.255.254"), a("127.255.255.254"))])
    assert h.status is ZoneStatus.UNREACHABLE and "refused" in h.detail


def test_domain_zone_health_points() -> None:
    assert zone_health(DBL, [("domain", a("127.0.1.2"), NXDOMAIN)]).status is ZoneStatus.OK
    h = zone_health(DBL, [("domain", a("127.0.1.2"), a("127.0.1.2"))])
    assert h.status is ZoneStatus.BROKEN and "invalid" in h.detail


# --- per address ---------------------------------------------------------------------------------------


def test_address_outcome() -> None:
    C, L, U = Outcome.CLEAN, Outcome.LISTED, Outcome.UNKNOWN
    assert address_outcome([C, C]) is C
    assert address_outcome([C, U]) is U
    assert address_outcome([U, L]) is L
    assert address_outcome([]) is U
    assert combine_states(bytes([1, 1])) is C
    assert combine_states(bytes([1, 3])) is U
    assert combine_states(bytes([3, 2])) is L
    assert combine_states(bytes([1, 0])) is U  # never answered counts as unknown
    assert combine_states(b"") is U


# --- neighbourhood and admission -----------------------------------------------------------------------


def test_score_network_counts() -> None:
    s = score_network("198.18.7.0/24", [Outcome.LISTED] * 16 + [Outcome.UNKNOWN] + [Outcome.CLEAN] * 239)
    assert (s.listed, s.unknown, s.total) == (16, 1, 256)
    assert s.listed_share == pytest.approx(0.0625)


def test_threshold_is_strictly_more_than() -> None:
    at = NetworkScore("n", 12, 0, 256)  # 4.69 %
    over = NetworkScore("n", 13, 0, 256)  # 5.08 %
    assert not at.poor(0.05) and over.poor(0.05)
    exactly = NetworkScore("n", 5, 0, 100)
    assert not exactly.poor(0.05)


def test_uncertain_when_unknowns_could_cross() -> None:
    s = NetworkScore("n", 10, 5, 256)
    assert not s.poor(0.05) and s.uncertain(0.05)
    assert not NetworkScore("n", 11, 1, 256).uncertain(0.05)  # the lab /24: 11 listed + .68 unknown


def test_admission() -> None:
    good = NetworkScore("198.51.100.0/24", 11, 1, 256)
    poor = NetworkScore("198.18.7.0/24", 16, 0, 256)
    assert admission(Outcome.CLEAN, good).admitted
    assert not admission(Outcome.LISTED, good).admitted
    assert not admission(Outcome.UNKNOWN, good).admitted
    refused = admission(Outcome.CLEAN, poor)
    assert not refused.admitted and "poor neighbourhood" in (refused.reason or "")
    forced = admission(Outcome.CLEAN, poor, accept_neighbourhood=True)
    assert forced.admitted and "ADMITTED DESPITE A POOR NEIGHBOURHOOD" in (forced.reason or "")
    assert admission(Outcome.CLEAN, poor, threshold=0.10).admitted
    assert not admission(Outcome.LISTED, poor, accept_neighbourhood=True).admitted
    assert admission(Outcome.CLEAN, None).admitted  # IPv6: no /24
    unsure = admission(Outcome.CLEAN, NetworkScore("n", 10, 5, 256))
    assert not unsure.admitted and "uncertain" in (unsure.reason or "")
