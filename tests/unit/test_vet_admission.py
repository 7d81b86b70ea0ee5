"""Admission into `vetted_ips.yml` (pure merge) and the per-address reports of a VetBook."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from sendfleet import yamlfile
from sendfleet.core.admission import admit, check_pool_name, existing_vetted
from sendfleet.core.targets import parse_targets
from sendfleet.core.verdicts import NXDOMAIN, TIMEOUT, Outcome, Reply, ZoneHealth, ZoneStatus
from sendfleet.core.vetbook import VetBook
from sendfleet.core.zones import parse_zones
from sendfleet.errors import UsageError


def _admit(data: dict[str, Any], pool: str, ips: list[str]) -> Any:
    return admit(data, pool, [{"ip": ip} for ip in ips], "v.yml", new_map=dict, new_list=list)


def test_admit_creates_pool_and_never_duplicates() -> None:
    data: dict[str, Any] = {}
    r = _admit(data, "transactional", ["198.51.100.64", "198.51.100.65"])
    assert r.added == ["198.51.100.64", "198.51.100.65"]
    r = _admit(data, "transactional", ["198.51.100.65", "198.51.100.69"])
    assert r.added == ["198.51.100.69"] and r.already == ["198.51.100.65"]
    assert [e["ip"] for e in data["vetted_ips"]["transactional"]] == ["198.51.100.64", "198.51.100.65", "198.51.100.69"]


def test_admit_leaves_other_pools_and_keys() -> None:
    data: dict[str, Any] = {"other": 1, "vetted_ips": {"marketing": [{"ip": "198.51.100.64", "vetted": "x"}]}}
    r = _admit(data, "transactional", ["198.51.100.64", "198.51.100.70"])
    assert r.elsewhere == [("198.51.100.64", "marketing")] and r.added == ["198.51.100.70"]
    assert data["other"] == 1 and data["vetted_ips"]["marketing"] == [{"ip": "198.51.100.64", "vetted": "x"}]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([1], "must be a mapping"),
        ({"vetted_ips": [1]}, "vetted_ips: must be a mapping"),
        ({"vetted_ips": {"t": {"ip": "x"}}}, "vetted_ips.t: must be a list"),
        ({"vetted_ips": {"t": ["198.51.100.1"]}}, "vetted_ips.t[0]: must be a mapping with an 'ip'"),
        ({"vetted_ips": {"t": [{"ip": "nope"}]}}, "vetted_ips.t[0].ip: 'nope' is not an IP address"),
    ],
)
def test_malformed_vetted_file_is_refused_untouched(data: Any, fragment: str) -> None:
    before = repr(data)
    with pytest.raises(UsageError, match=r"v\.yml") as err:
        admit(data, "t", [{"ip": "198.51.100.64"}], "v.yml", new_map=dict, new_list=list)
    assert fragment in str(err.value)
    assert repr(data) == before


def test_existing_vetted_reads_round_trip_yaml(tmp_path: Any) -> None:
    path = tmp_path / "vetted_ips.yml"
    path.write_text("# keep me\nvetted_ips:\n  transactional:\n    - {ip: 198.51.100.64, vetted: 2026-11-27}\n")
    assert existing_vetted(yamlfile.load(path), str(path)) == {"198.51.100.64": "transactional"}
    assert existing_vetted(None, "x") == {}


def test_pool_names() -> None:
    assert check_pool_name("transactional") == "transactional"
    for bad in ("Trans", "a b", "", "../x"):
        with pytest.raises(UsageError, match="--pool"):
            check_pool_name(bad)


# --- VetBook -------------------------------------------------------------------------------------------

CFG = parse_zones(
    {
        "zones": [
            {"zone": "zen.lab.test", "listed": ["127.0.0.2-127.0.0.11"], "errors": ["127.255.255.0/24"], "ipv6": True},
            {"zone": "l2.lab.test", "listed": ["127.0.0.2"], "scope": "network"},
            {"zone": "dbl.lab.test", "kind": "domain", "listed": ["127.0.1.2-127.0.1.106"]},
        ]
    },
    "t",
)


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def book_for(targets: list[str], status: dict[str, ZoneStatus] | None = None, **kw: Any) -> VetBook:
    status = status or {}
    health = {z.name: ZoneHealth(z.name, status.get(z.name, ZoneStatus.OK), "") for z in CFG.zones}
    return VetBook(parse_targets(targets), CFG, health, kw.get("threshold", 0.05), kw.get("accept", False))


def fill(book: VetBook, listed: dict[str, tuple[int, str]], default: Reply = NXDOMAIN) -> None:
    for base in book.targets.networks24():
        book.block(base)
        for value in range(base, base + 256):
            for zi in range(len(book.v4_ok)):
                book.record4(value, zi, default)
    for ip, (zi, code) in listed.items():
        book.record4(v4(ip), zi, Reply(0, (code,)) if code != "timeout" else TIMEOUT)


def test_lab_like_range() -> None:
    book = book_for(["198.51.100.64/26"])
    listed = {"198.51.100.66": (0, "127.0.0.2"), "198.51.100.67": (0, "127.0.0.4"), "198.51.100.71": (0, "127.0.0.10")}
    listed["198.51.100.68"] = (0, "127.255.255.254")
    for host in range(120, 128):
        listed[f"198.51.100.{host}"] = (1, "127.0.0.2")
    fill(book, listed)
    reports = list(book.reports())
    assert len(reports) == 64
    admitted = [r.ip for r in reports if r.admission.admitted]
    assert len(admitted) == 52
    assert "198.51.100.68" not in admitted and "198.51.100.65" in admitted
    by_ip = {r.ip: r for r in reports}
    assert by_ip["198.51.100.68"].verdict is Outcome.UNKNOWN
    assert by_ip["198.51.100.121"].verdict is Outcome.LISTED
    score = book.network_score(v4("198.51.100.0"))
    assert (score.listed, score.unknown, score.total) == (11, 1, 256)
    d = by_ip["198.51.100.66"].as_dict({"zen.lab.test": "address"})
    assert d["ip"] == "198.51.100.66" and d["verdict"] == "listed" and d["admitted"] is False
    assert d["listings"][0]["zone"] == "zen.lab.test" and d["listings"][0]["codes"] == ["127.0.0.2"]
    assert by_ip["198.51.100.68"].as_dict({})["errors"][0]["detail"].startswith("error answer")


def test_poor_neighbourhood_blocks_clean_address_and_override_admits_loudly() -> None:
    listed = {f"198.18.7.{h}": (0, "127.0.0.3") for h in range(1, 17)}
    book = book_for(["198.18.7.100"])
    fill(book, listed)
    (report,) = list(book.reports())
    assert report.verdict is Outcome.CLEAN and not report.admission.admitted
    assert book.cell_state(v4("198.18.7.100")) == "neighbourhood"
    forced = book_for(["198.18.7.100"], accept=True)
    fill(forced, listed)
    (report,) = list(forced.reports())
    assert report.admission.admitted and any("ADMITTED DESPITE" in w for w in report.warnings)


def test_broken_zone_makes_every_answer_unknown_never_clean() -> None:
    book = book_for(["198.51.100.70"], {"l2.lab.test": ZoneStatus.BROKEN})
    assert [z.name for z in book.v4_ok] == ["zen.lab.test"]
    fill(book, {})
    (report,) = list(book.reports())
    assert report.verdict is Outcome.UNKNOWN and not report.admission.admitted
    assert any("zone broken" in e.detail for e in report.errors)


def test_listing_by_healthy_zone_wins_over_broken_zone() -> None:
    book = book_for(["198.51.100.66"], {"l2.lab.test": ZoneStatus.UNREACHABLE})
    fill(book, {"198.51.100.66": (0, "127.0.0.2")})
    assert next(book.reports()).verdict is Outcome.LISTED
    assert book.outcome4(v4("198.51.100.66")) is Outcome.LISTED
    assert book.outcome4(v4("198.51.100.67")) is Outcome.UNKNOWN


def test_network_scope_listing_lists_the_address() -> None:
    book = book_for(["198.51.100.121"])
    fill(book, {"198.51.100.121": (1, "127.0.0.2")})
    (report,) = list(book.reports())
    assert report.verdict is Outcome.LISTED
    assert report.as_dict({"l2.lab.test": "network"})["listings"][0]["scope"] == "network"


def test_ipv6_and_domains() -> None:
    book = book_for(["2001:db8::5", "2001:db8::6", "spammy.test", "shop.test"])
    book.record6(int(ipaddress.IPv6Address("2001:db8::5")), 0, Reply(0, ("127.0.0.2",)))
    book.record6(int(ipaddress.IPv6Address("2001:db8::6")), 0, NXDOMAIN)
    book.record_domain("spammy.test", 0, Reply(0, ("127.0.1.2",)))
    book.record_domain("shop.test", 0, NXDOMAIN)
    reports = {r.ip: r for r in book.reports()}
    assert reports["2001:db8::5"].verdict is Outcome.LISTED
    assert reports["2001:db8::6"].verdict is Outcome.CLEAN and reports["2001:db8::6"].admission.admitted
    assert reports["spammy.test"].verdict is Outcome.LISTED
    assert reports["shop.test"].verdict is Outcome.CLEAN and not reports["shop.test"].admission.admitted
    assert reports["shop.test"].as_dict({})["domain"] == "shop.test"


def test_unanswered_slots_are_unknown() -> None:
    book = book_for(["198.51.100.70"])
    book.block(v4("198.51.100.0"))
    (report,) = list(book.reports())
    assert report.verdict is Outcome.UNKNOWN


def test_reasons_are_attached_to_listings() -> None:
    book = book_for(["198.51.100.66"])
    fill(book, {"198.51.100.66": (0, "127.0.0.2")})
    [(family, value, zi, zone)] = list(book.listed_targets())
    assert (family, zone.name) == (4, "zen.lab.test")
    book.add_reason(family, value, zi, "SBL listed 198.51.100.66")
    assert next(book.reports()).listings[0].reason == "SBL listed 198.51.100.66"


def test_a_zone_broken_for_ipv6_only_still_serves_ipv4() -> None:
    health = {z.name: ZoneHealth(z.name, ZoneStatus.OK, "") for z in CFG.zones}
    health6 = {"zen.lab.test": ZoneHealth("zen.lab.test", ZoneStatus.BROKEN, "::ffff:7f00:2 not listed")}
    book = VetBook(parse_targets(["198.51.100.64", "2001:db8::6"]), CFG, health, 0.05, False, health6)
    assert [z.name for z in book.v4_ok] == ["zen.lab.test", "l2.lab.test"]
    assert book.v6_ok == () and [z.name for z in book.v6_bad] == ["zen.lab.test"]
    fill(book, {})
    reports = {r.ip: r for r in book.reports()}
    assert reports["198.51.100.64"].verdict is Outcome.CLEAN
    v6 = reports["2001:db8::6"]
    assert v6.verdict is Outcome.UNKNOWN and "zone broken" in v6.errors[0].detail
