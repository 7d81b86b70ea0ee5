"""PTR generic-looking names, Team-Cymru TXT parsing, holder warnings, resolver parsing, query names."""

from __future__ import annotations

import ipaddress

import dns.reversename
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sendfleet.core.dnsnames import name_wire, ptr_name, query_name, question, question_suffix
from sendfleet.core.holder import (
    AsnOrigin,
    announced_covers,
    holder_warnings,
    parse_asname_txt,
    parse_origin_txt,
)
from sendfleet.core.ptrname import looks_generic
from sendfleet.core.resolvers import (
    Resolver,
    parse_resolver,
    public_resolver_warnings,
    resolv_conf_nameservers,
)
from sendfleet.core.zones import DEFAULT_CLOUD_ASNS
from sendfleet.errors import UsageError


@pytest.mark.parametrize(
    "name",
    [
        "1-2-3-4.dyn.isp.example",
        "4.3.2.1.in-addr.example",
        "host-1-2-3-4.example.net",
        "dhcp123.example.net",
        "pool-1-2-3-4.cable.example",
        "cpe-001002003004.example.com",
        "01020304.example.com",
        "ip-1-2-3-4.ec2.internal",
        "static.4.3.2.1.clients.your-server.example",
        "adsl-3-4.example.net",
    ],
)
def test_generic_ptrs(name: str) -> None:
    assert looks_generic(name, "1.2.3.4")


@pytest.mark.parametrize("name", ["o70.mta1.lab.test", "mail.shop.test", "mx1.example.com", "smtp-out-7.news.test"])
def test_specific_ptrs(name: str) -> None:
    assert not looks_generic(name, "1.2.3.4")


def test_generic_ipv6_ptr() -> None:
    assert looks_generic("2001-db8-0-0-0-0-0-5.dyn.example", "2001:db8::5") or looks_generic(
        "dyn-00000000000000000005.example", "2001:db8::5"
    )
    assert not looks_generic("mail.shop.test", "2001:db8::5")


def test_origin_txt() -> None:
    o = parse_origin_txt(["64500 | 198.51.100.0/24 | ZZ | lab | 2026-01-01"])
    assert o == AsnOrigin((64500,), "198.51.100.0/24", "ZZ", "lab", "2026-01-01")
    best = parse_origin_txt(["64501 | 198.18.0.0/15 | ZZ | lab |", "64502 64503 | 198.18.7.0/24 | ZZ | lab |"])
    assert best is not None and best.asns == (64502, 64503) and best.prefix == "198.18.7.0/24"
    assert parse_origin_txt(["garbage"]) is None
    assert parse_origin_txt(["x | y"]) is None


def test_asname_txt() -> None:
    assert parse_asname_txt(["64500 | ZZ | lab | 2026-01-01 | SENDFLEET-LAB, ZZ"]) == "SENDFLEET-LAB, ZZ"
    assert parse_asname_txt(["64500 | ZZ"]) is None


def test_holder_warnings() -> None:
    kw = {"cloud_asns": DEFAULT_CLOUD_ASNS, "small_prefix": 24, "small_prefix6": 48}
    cloud = holder_warnings(AsnOrigin((16509,), "198.18.0.0/15"), "AMAZON-02", **kw)  # type: ignore[arg-type]
    assert len(cloud) == 1 and "large cloud provider" in cloud[0] and "AMAZON-02" in cloud[0]
    small = holder_warnings(AsnOrigin((64500,), "198.51.100.0/24"), None, **kw)  # type: ignore[arg-type]
    assert len(small) == 1 and "larger subnets mitigate this risk" in small[0]
    assert holder_warnings(AsnOrigin((64500,), "198.18.0.0/15"), None, **kw) == []  # type: ignore[arg-type]
    assert holder_warnings(AsnOrigin((64500,), "2001:db8::/32"), None, **kw) == []  # type: ignore[arg-type]


def test_announced_covers() -> None:
    base = int(ipaddress.IPv4Address("198.51.100.0"))
    assert announced_covers(AsnOrigin((1,), "198.51.100.0/24"), base)
    assert announced_covers(AsnOrigin((1,), "198.51.0.0/16"), base)
    assert not announced_covers(AsnOrigin((1,), "198.51.100.0/25"), base)
    assert not announced_covers(AsnOrigin((1,), "198.51.101.0/24"), base)


# --- resolvers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.4", Resolver("198.51.100.4", 53)),
        ("127.0.0.1:5353", Resolver("127.0.0.1", 5353)),
        ("::1", Resolver("::1", 53)),
        ("[::1]:5353", Resolver("::1", 5353)),
        ("[2001:db8::53]", Resolver("2001:db8::53", 53)),
    ],
)
def test_parse_resolver(text: str, expected: Resolver) -> None:
    assert parse_resolver(text) == expected


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:0", "127.0.0.1:70000", "[::1]:x", "1.2.3"])
def test_bad_resolver(text: str) -> None:
    with pytest.raises(UsageError, match="--resolver"):
        parse_resolver(text)


def test_resolver_str() -> None:
    assert str(Resolver("127.0.0.1", 5353)) == "127.0.0.1:5353"
    assert str(Resolver("::1", 5353)) == "[::1]:5353"
    assert str(Resolver("198.51.100.4")) == "198.51.100.4"


def test_resolv_conf() -> None:
    text = "# x\nsearch lab.test\nnameserver 198.51.100.4\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\n"
    assert resolv_conf_nameservers(text) == [Resolver("198.51.100.4"), Resolver("fe80::1")]


def test_public_resolvers_warned() -> None:
    for addr in ("8.8.8.8", "1.1.1.1", "9.9.9.9", "208.67.222.222"):
        warnings = public_resolver_warnings([Resolver(addr)])
        assert len(warnings) == 1 and "127.255.255.254" in warnings[0]
    assert public_resolver_warnings([Resolver("198.51.100.4")]) == []


# --- query names ---------------------------------------------------------------------------------------


def test_query_names_match_dnspython() -> None:
    assert query_name(4, int(ipaddress.IPv4Address("198.51.100.66")), "zen.lab.test") == "66.100.51.198.zen.lab.test"
    v6 = int(ipaddress.IPv6Address("2001:db8::5"))
    expected = dns.reversename.from_address("2001:db8::5").to_text(omit_final_dot=True)
    assert ptr_name(6, v6) == expected
    # RFC 5782 test point for IPv6 zones: all 32 nibbles (dnspython would use in-addr.arpa for a mapped address)
    mapped = int(ipaddress.IPv6Address("::ffff:7f00:2"))
    assert query_name(6, mapped, "zen.lab.test") == "2.0.0.0.0.0.f.7.f.f.f.f" + ".0" * 20 + ".zen.lab.test"


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(st.integers(0, 2**32 - 1))
def test_ipv4_wire_matches_dnspython(value: int) -> None:
    addr = str(ipaddress.IPv4Address(value))
    name = dns.reversename.from_address(addr).to_text(omit_final_dot=True).replace("in-addr.arpa", "zen.lab.test")
    wire = question(4, value, question_suffix("zen.lab.test"))
    assert wire == name_wire(name) + b"\x00\x01\x00\x01"


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(st.integers(0, 2**128 - 1))
def test_ipv6_wire_matches_dnspython(value: int) -> None:
    assume(ipaddress.IPv6Address(value).ipv4_mapped is None)
    addr = str(ipaddress.IPv6Address(value))
    name = dns.reversename.from_address(addr).to_text(omit_final_dot=True).replace("ip6.arpa", "zen.lab.test")
    assert question(6, value, question_suffix("zen.lab.test")) == name_wire(name) + b"\x00\x01\x00\x01"


def test_name_wire_rejects_bad_labels() -> None:
    with pytest.raises(ValueError):
        name_wire("a..b")
    with pytest.raises(ValueError):
        name_wire("x" * 64 + ".test")
