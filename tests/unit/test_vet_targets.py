"""Target parsing of `sendfleet vet`: addresses, CIDRs, ranges, domains, merging, limits."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendfleet.core.targets import (
    AddressRange,
    merge_ranges,
    parse_target,
    parse_targets,
    special_kind,
    targets_from_lines,
)
from sendfleet.errors import UsageError


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def test_single_address() -> None:
    assert parse_target("198.51.100.70") == AddressRange(4, v4("198.51.100.70"), v4("198.51.100.70"))


def test_cidr_includes_network_and_broadcast() -> None:
    r = parse_target("198.51.100.64/26")
    assert isinstance(r, AddressRange)
    assert (r.first, r.last, r.size) == (v4("198.51.100.64"), v4("198.51.100.127"), 64)


def test_range() -> None:
    r = parse_target("198.51.100.250-198.51.101.3")
    assert isinstance(r, AddressRange) and r.size == 10


def test_ipv6_address_and_range() -> None:
    r = parse_target("2001:db8::1")
    assert isinstance(r, AddressRange) and r.version == 6 and r.size == 1
    r = parse_target("2001:db8::1-2001:db8::ff")
    assert isinstance(r, AddressRange) and r.size == 255
    r = parse_target("2001:db8::/120")
    assert isinstance(r, AddressRange) and r.size == 256


def test_domain_lower_cased_without_final_dot() -> None:
    assert parse_target("Shop.Test.") == "shop.test"
    assert parse_target("my-shop.example") == "my-shop.example"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("198.51.100.70/26", "host bits set (did you mean 198.51.100.64/26?)"),
        ("198.51.100.9-198.51.100.1", "ends before it starts"),
        ("198.51.100.1-2001:db8::1", "mixes IPv4 and IPv6"),
        ("198.51.100.1-foo", "two addresses"),
        ("1.2.3.999", "not a valid address"),
        ("198.51.100.0/33", "not a CIDR"),
        ("", "empty"),
        ("-shop.test", "not an address"),
        ("localhost", "not an address"),
        ("bücher.test", "xn--"),
    ],
)
def test_bad_targets_are_one_line_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_target(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_dedupe_and_merge() -> None:
    ts = parse_targets(["198.51.100.64/26", "198.51.100.70", "198.51.100.128-198.51.100.130", "shop.test", "SHOP.test"])
    assert ts.address_count == 67  # .64-.127 and .128-.130 merge (adjacent), .70 is inside
    assert len(ts.ranges) == 1
    assert ts.domains == ("shop.test",)


def test_max_addresses() -> None:
    with pytest.raises(UsageError, match="--max-addresses 65536"):
        parse_targets(["198.18.0.0/15"])
    assert parse_targets(["198.18.0.0/15"], max_addresses=131072).address_count == 131072
    assert parse_targets(["198.18.0.0/16"]).address_count == 65536


def test_no_target() -> None:
    with pytest.raises(UsageError, match="no target"):
        parse_targets([])


def test_non_global_ranges_warn_but_are_kept() -> None:
    ts = parse_targets(["198.51.100.64/26", "198.18.7.0/24", "10.0.0.1"])
    assert ts.address_count == 64 + 256 + 1
    text = " ".join(ts.warnings)
    assert "documentation" in text and "benchmarking" in text and "private" in text
    assert parse_targets(["8.8.8.8"]).warnings == ()


def test_special_kind() -> None:
    assert special_kind(AddressRange(4, v4("8.8.8.8"), v4("8.8.8.8"))) is None
    assert (
        special_kind(
            AddressRange(6, int(ipaddress.IPv6Address("2001:db8::")), 1 + int(ipaddress.IPv6Address("2001:db8::")))
        )
        == "documentation"
    )


def test_lazy_iteration_and_lookups() -> None:
    ts = parse_targets(["198.51.100.250-198.51.101.3", "198.51.103.7"])
    assert [str(a) for a in ts.addresses()][:2] == ["198.51.100.250", "198.51.100.251"]
    assert list(ts.networks24()) == [v4("198.51.100.0"), v4("198.51.101.0"), v4("198.51.103.0")]
    assert list(ts.targets_in24(v4("198.51.101.0"))) == [v4("198.51.101.0") + i for i in range(4)]
    assert ts.contains(4, v4("198.51.101.3")) and not ts.contains(4, v4("198.51.101.4"))
    assert not ts.contains(6, v4("198.51.101.3"))


def test_iteration_creates_nothing_up_front() -> None:
    ts = parse_targets(["10.0.0.0/8"], max_addresses=1 << 24)
    it = ts.values(4)
    assert next(it) == v4("10.0.0.0")  # a generator: 16 M addresses, no list


def test_targets_from_lines() -> None:
    lines = ["# purchased 2026-11", "198.51.100.64/28, 198.51.100.80  # two", "", "shop.test"]
    assert targets_from_lines(lines, "f") == ["198.51.100.64/28", "198.51.100.80", "shop.test"]


def test_range_str() -> None:
    assert str(AddressRange(4, v4("198.51.100.64"), v4("198.51.100.127"))) == "198.51.100.64/26"
    assert str(AddressRange(4, v4("198.51.100.1"), v4("198.51.100.3"))) == "198.51.100.1-198.51.100.3"


# --- properties ---------------------------------------------------------------------------------------

ipv4_nets = st.builds(
    lambda addr, plen: ipaddress.IPv4Network((addr, plen), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(16, 32),
)


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(ipv4_nets)
def test_cidr_round_trip(net: ipaddress.IPv4Network) -> None:
    r = parse_target(str(net))
    assert isinstance(r, AddressRange)
    assert (r.first, r.last) == (int(net.network_address), int(net.broadcast_address))


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_range_round_trip(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    r = parse_target(f"{ipaddress.IPv4Address(lo)}-{ipaddress.IPv4Address(hi)}")
    assert r == AddressRange(4, lo, hi)


small_ranges = st.lists(
    st.tuples(st.integers(0, 600), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])), min_size=1, max_size=12
)


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(small_ranges, st.randoms())
def test_merge_equals_set_union_and_ignores_order(pairs: list[tuple[int, int]], rnd: object) -> None:
    base = v4("198.18.0.0")
    texts = [f"{ipaddress.IPv4Address(base + a)}-{ipaddress.IPv4Address(base + b)}" for a, b in pairs]
    expected = set()
    for a, b in pairs:
        expected.update(range(base + a, base + b + 1))
    ts = parse_targets(texts)
    assert ts.address_count == len(expected)
    assert set(ts.values(4)) == expected
    shuffled = list(texts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert parse_targets(shuffled).ranges == ts.ranges
    # merged ranges never overlap nor touch
    for left, right in zip(ts.ranges, ts.ranges[1:], strict=False):
        assert left.last + 1 < right.first
    assert set(ts.networks24()) == {v & ~0xFF for v in expected}


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(st.text(max_size=40))
def test_parse_target_only_raises_usage_errors(text: str) -> None:
    try:
        parse_target(text)
    except UsageError as err:
        assert "\n" not in str(err)


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 100)), max_size=8))
def test_merge_ranges_is_idempotent(pairs: list[tuple[int, int]]) -> None:
    ranges = [AddressRange(4, a, min(a + n, 2**32 - 1)) for a, n in pairs]
    once = merge_ranges(ranges)
    assert merge_ranges(once) == once
