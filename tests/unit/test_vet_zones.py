"""Zones files: the YAML contract, one-line errors naming the bad field, the shipped files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendfleet import yamlfile
from sendfleet.core.zones import Kind, Scope, parse_zones
from sendfleet.errors import UsageError

ZONES_DIR = Path(__file__).resolve().parents[2] / "scripts" / "sendfleet" / "zones"


def zen(**extra: Any) -> dict[str, Any]:
    zone: dict[str, Any] = {"zone": "zen.lab.test", "listed": ["127.0.0.2-127.0.0.11"]}
    zone.update(extra)
    return zone


def test_minimal_zone_defaults() -> None:
    cfg = parse_zones({"zones": [zen()]}, "z.yml")
    z = cfg.zones[0]
    assert (z.name, z.scope, z.kind, z.ipv6, z.qps, z.enabled) == (
        "zen.lab.test",
        Scope.ADDRESS,
        Kind.IP,
        False,
        None,
        True,
    )
    assert "127.0.0.2" in z.listed and "127.0.0.11" in z.listed and "127.0.0.12" not in z.listed
    assert "127.0.0.1" not in z.listed
    assert cfg.asn is None


def test_full_zone() -> None:
    cfg = parse_zones(
        {
            "zones": [
                zen(
                    errors=["127.255.255.0/24"],
                    meanings={"127.0.0.2": "SBL"},
                    scope="network",
                    ipv6=True,
                    qps=50,
                    note="x",
                ),
                {"zone": "dbl.lab.test", "kind": "domain", "listed": "127.0.1.2-127.0.1.106"},
            ],
            "asn": {"origin": "origin.asn.lab.test", "names": "asn.lab.test", "small_prefix": 22},
        },
        "z.yml",
    )
    z = cfg.zones[0]
    assert "127.255.255.254" in z.errors and z.meaning("127.0.0.2") == "SBL" and z.qps == 50.0
    assert z.scope is Scope.NETWORK and z.ipv6
    assert cfg.zones[1].kind is Kind.DOMAIN and "127.0.1.106" in cfg.zones[1].listed
    assert cfg.asn is not None and cfg.asn.origin == "origin.asn.lab.test" and cfg.asn.small_prefix == 22
    assert 16509 in cfg.asn.cloud_asns


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "must be a mapping"),
        ({}, "zones: must be a non-empty list"),
        ({"zones": []}, "zones: must be a non-empty list"),
        ({"zones": [zen()], "resolver": 1}, "resolver: unknown key"),
        ({"zones": ["zen"]}, "zones[0]: must be a mapping"),
        ({"zones": [{"listed": ["127.0.0.2"]}]}, "zones[0].zone: required"),
        ({"zones": [{"zone": "zen", "listed": ["127.0.0.2"]}]}, "zones[0].zone: 'zen' is not a valid DNS zone name"),
        ({"zones": [{"zone": "zen.lab.test"}]}, "zones[0].listed: required"),
        ({"zones": [zen(listed=[])]}, "zones[0].listed: must be a non-empty list"),
        ({"zones": [zen(listed=["127.0.0.x"])]}, "zones[0].listed[0]: '127.0.0.x' is not an IPv4"),
        ({"zones": [zen(listed=["127.0.0.5-127.0.0.2"])]}, "ends before it starts"),
        ({"zones": [zen(listed=["127.0.0.1/24"])]}, "zones[0].listed[0]"),
        ({"zones": [zen(errors=["127.0.0.2"])]}, "listed and errors both hold 127.0.0.2"),
        ({"zones": [zen(scoop="address")]}, "zones[0].scoop: unknown key"),
        ({"zones": [zen(scope="allocation")]}, "zones[0].scope: 'allocation' is not one of"),
        ({"zones": [zen(kind="url")]}, "zones[0].kind: 'url' is not one of"),
        ({"zones": [zen(ipv6="yes")]}, "zones[0].ipv6: must be true or false"),
        ({"zones": [zen(qps=0)]}, "zones[0].qps: must be a positive number"),
        ({"zones": [zen(qps=True)]}, "zones[0].qps"),
        ({"zones": [zen(meanings={"SBL": "127.0.0.2"})]}, "zones[0].meanings: 'SBL' is not an IPv4"),
        ({"zones": [zen(meanings=["SBL"])]}, "zones[0].meanings: must be a mapping"),
        ({"zones": [zen(kind="domain", ipv6=True)]}, "zones[0].ipv6: a kind: domain zone"),
        ({"zones": [zen(kind="domain", scope="network")]}, "zones[0].scope: a kind: domain zone"),
        ({"zones": [zen(), zen()]}, "zones[1].zone: zen.lab.test is listed twice"),
        ({"zones": [zen(enabled=False)]}, "every zone has enabled: false"),
        ({"zones": [zen()], "asn": {"names": "asn.lab.test"}}, "asn.origin: required"),
        ({"zones": [zen()], "asn": {"origin": "o.test", "cloud_asns": {"ASX": "a"}}}, "asn.cloud_asns: 'ASX'"),
        ({"zones": [zen()], "asn": {"origin": "o.test", "small_prefix": 40}}, "asn.small_prefix"),
    ],
)
def test_bad_zones_files_name_the_field(data: Any, fragment: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_zones(data, "z.yml")
    message = str(err.value)
    assert fragment in message, message
    assert message.startswith("z.yml")
    assert "\n" not in message


def test_shipped_public_zones() -> None:
    cfg = parse_zones(yamlfile.load(ZONES_DIR / "public.yml"), "public.yml")
    by_name = {z.name: z for z in cfg.zones}
    assert not any("sorbs" in name for name in by_name)
    zen_ = by_name["zen.spamhaus.org"]
    for code in ("127.255.255.252", "127.255.255.254", "127.255.255.255"):
        assert code in zen_.errors and code not in zen_.listed
    assert zen_.meaning(
        "127.0.0.4",
    ).startswith("XBL")  # type: ignore[union-attr]
    assert zen_.meaning("127.0.0.10").startswith("PBL")  # type: ignore[union-attr]
    assert by_name["dnsbl-2.uceprotect.net"].scope is Scope.NETWORK
    assert by_name["dnsbl-3.uceprotect.net"].scope is Scope.ASN
    assert not by_name["b.barracudacentral.org"].enabled
    assert "registration" in (by_name["b.barracudacentral.org"].note or "")
    dbl = by_name["dbl.spamhaus.org"]
    assert dbl.kind is Kind.DOMAIN and "127.0.1.255" in dbl.errors and "127.0.1.2" in dbl.listed
    for name in ("bl.spamcop.net", "psbl.surriel.com", "z.mailspike.net", "all.spamrats.com"):
        assert name in by_name
    assert cfg.asn is not None and cfg.asn.origin == "origin.asn.cymru.com" and cfg.asn.names == "asn.cymru.com"
    text = (ZONES_DIR / "public.yml").read_text()
    assert "zen.dq.spamhaus.net" in text and "300k queries/day" in text


def test_shipped_lab_zones() -> None:
    cfg = parse_zones(yamlfile.load(ZONES_DIR / "lab.yml"), "lab.yml")
    by_name = {z.name: z for z in cfg.zones}
    assert set(by_name) == {"zen.lab.test", "l2.lab.test", "dbl.lab.test"}
    assert by_name["zen.lab.test"].ipv6 and "127.255.255.254" in by_name["zen.lab.test"].errors
    assert by_name["l2.lab.test"].scope is Scope.NETWORK
    assert by_name["dbl.lab.test"].kind is Kind.DOMAIN
    assert cfg.asn is not None and (cfg.asn.origin, cfg.asn.names) == ("origin.asn.lab.test", "asn.lab.test")


# --- properties ---------------------------------------------------------------------------------------

labels = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
zone_names = st.lists(labels, min_size=2, max_size=4).map(".".join)
codes = st.integers(0x7F000000, 0x7F0001FF)


def _ip(v: int) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(
    st.lists(zone_names, min_size=1, max_size=5, unique=True),
    st.lists(st.tuples(codes, st.integers(0, 20)), min_size=1, max_size=4),
    st.sampled_from(["address", "network", "asn"]),
    st.booleans(),
)
def test_valid_zones_parse_and_codes_are_members(
    names: list[str], ranges: list[tuple[int, int]], scope: str, v6: bool
) -> None:
    listed = [f"{_ip(a)}-{_ip(a + n)}" for a, n in ranges]
    data = {"zones": [{"zone": n, "listed": listed, "scope": scope, "ipv6": v6} for n in names]}
    cfg = parse_zones(data, "z.yml")
    assert [z.name for z in cfg.zones] == names
    for z in cfg.zones:
        for a, n in ranges:
            assert a in z.listed and a + n in z.listed
        assert z.scope.value == scope and z.ipv6 is v6


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 1000) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(json_values)
def test_any_data_is_parsed_or_refused_with_one_line(data: Any) -> None:
    try:
        parse_zones(data, "z.yml")
    except UsageError as err:
        assert "\n" not in str(err) and str(err).startswith("z.yml")


@settings(deadline=None)  # no timing in tests: a loaded machine is not a failure
@given(
    st.dictionaries(
        st.sampled_from(
            ["zone", "listed", "errors", "meanings", "scope", "ipv6", "qps", "kind", "enabled", "note", "x"]
        ),
        json_values,
        max_size=6,
    )
)
def test_any_zone_entry_is_parsed_or_refused_with_one_line(entry: dict[str, Any]) -> None:
    try:
        parse_zones({"zones": [entry]}, "z.yml")
    except UsageError as err:
        assert "\n" not in str(err) and "zones[0]" in str(err)
