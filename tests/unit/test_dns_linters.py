"""SPF, DKIM and DMARC linters and the FCrDNS gate rules (no network: answers come from a dict)."""

from __future__ import annotations

import base64
import ipaddress
from datetime import date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sendfleet.core import dkim, dmarc, spf
from sendfleet.core.fcrdns import evaluate, generic_reasons
from sendfleet.core.findings import Finding, worst
from sendfleet.core.inventory import SendingIp
from sendfleet.core.lookup import LookupResult


class FakeDns:
    def __init__(self, data: dict[tuple[str, str], tuple[str, ...] | str]) -> None:
        self.data = data
        self.asked: list[tuple[str, str]] = []

    def __call__(self, name: str, rdtype: str) -> LookupResult:
        self.asked.append((name, rdtype))
        value = self.data.get((name, rdtype))
        if value is None:
            names = {n for n, _ in self.data}
            return LookupResult("nodata" if name in names else "nxdomain")
        if isinstance(value, str):
            return LookupResult("error", detail=value)
        return LookupResult("ok", value)


def statuses(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.status, f.message) for f in findings if f.status != "ok"]


# ------------------------------------------------------------------------------------------- SPF


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 ip4:198.51.100.70 ip4:198.51.100.64/26 ip6:2001:db8::/32 -all",
        "v=spf1 a mx/24 a:x.test//64 ~all",
        "v=spf1 include:_spf.x.test redirect=_spf.y.test",
        "V=SPF1 -ALL",
        "v=spf1 exists:%{i}.x.test foo=bar -all",
    ],
)
def test_spf_parses(record: str) -> None:
    spf.parse(record)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("v=spf2 -all", "does not start"),
        ("v=spf1 ip4:198.51.100.700 -all", "bad address"),
        ("v=spf1 ip4:2001:db8::1 -all", "ip4 with an IPv6"),
        ("v=spf1 include -all", "include needs a domain"),
        ("v=spf1 bogus:x -all", "unknown mechanism"),
        ("v=spf1 redirect=a.test redirect=b.test", "twice"),
        ("v=spf1 all:x", "'all' takes no argument"),
        ("v=spf1 a/33 -all", "bad CIDR"),
        ("v=spf1 ~redirect=x.test", "qualifier"),
    ],
)
def test_spf_syntax_errors(record: str, message: str) -> None:
    with pytest.raises(spf.SpfSyntaxError, match=message):
        spf.parse(record)
    assert statuses(spf.lint("x.test", [record]))[0][0] == "error"


def test_spf_counts_lookups_through_includes_and_void_lookups() -> None:
    dns = FakeDns(
        {
            ("x.test", "TXT"): ("v=spf1 include:a.test include:b.test mx -all", "other"),
            ("a.test", "TXT"): ("v=spf1 include:c.test a ~all",),
            ("a.test", "A"): ("198.51.100.1",),
            ("c.test", "TXT"): ("v=spf1 ip4:198.51.100.0/24 -all",),
            ("b.test", "TXT"): ("v=spf1 exists:gone.test ~all",),
            ("x.test", "MX"): ("10 mx.x.test",),
        }
    )
    counted = spf.count("x.test", "v=spf1 include:a.test include:b.test mx -all", dns)
    assert (counted.lookups, counted.void, counted.errors) == (6, 1, [])
    findings = spf.lint("x.test", dns.data[("x.test", "TXT")], dns)  # type: ignore[arg-type]
    assert worst(findings) == "ok" and "6 lookup(s), 1 void" in findings[-1].message


def test_spf_over_ten_lookups_and_two_void_lookups() -> None:
    many = "v=spf1 " + " ".join(f"a:h{i}.x.test" for i in range(11)) + " -all"
    dns = FakeDns({**{(f"h{i}.x.test", "A"): ("198.51.100.1",) for i in range(11)}})
    assert ("error", "11 DNS lookups (RFC 7208 allows 10): permerror") in statuses(spf.lint("x.test", [many], dns))
    void = "v=spf1 a:n1.x.test a:n2.x.test exists:n3.x.test -all"
    assert ("error", "3 void lookups (RFC 7208 allows 2): permerror") in statuses(
        spf.lint("x.test", [void], FakeDns({}))
    )
    missing = spf.lint("x.test", ["v=spf1 include:nothere.test -all"], FakeDns({}))
    assert ("error", "include:nothere.test: nothere.test has no SPF record (nxdomain)") in statuses(missing)


def test_spf_all_and_count_warnings() -> None:
    assert statuses(spf.lint("x.test", ["v=spf1 +all"])) == [
        ("error", "'+all' lets every host on the internet pass SPF")
    ]
    assert statuses(spf.lint("x.test", ["v=spf1 ip4:198.51.100.1 ?all"]))[0][0] == "warning"
    assert statuses(spf.lint("x.test", ["v=spf1 ip4:198.51.100.1"]))[0] == (
        "warning",
        "no 'all' term: unlisted senders get neutral",
    )
    assert statuses(spf.lint("x.test", ["v=spf1 ptr -all"], FakeDns({})))[0][0] == "warning"
    assert statuses(spf.lint("x.test", ["v=spf1 -all", "v=spf1 ~all"]))[0][1].startswith("2 SPF records")
    assert statuses(spf.lint("x.test", ["something else"])) == [("error", "no SPF record (v=spf1)")]
    long = "v=spf1 " + " ".join(f"ip4:198.51.{i}.0/24" for i in range(30)) + " -all"
    assert statuses(spf.lint("x.test", [long]))[0][1].startswith("record is 5")


def test_spf_build() -> None:
    nets = [
        ipaddress.ip_network("198.51.100.70/32"),
        ipaddress.ip_network("198.51.100.72/30"),
        ipaddress.ip_network("2001:db8::1/128"),
    ]
    assert (
        spf.build(nets, ["x.test"], "-all")
        == "v=spf1 ip4:198.51.100.70 ip4:198.51.100.72/30 ip6:2001:db8::1 include:x.test -all"
    )


# ------------------------------------------------------------------------------------------- DKIM


def _p(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def p2048() -> str:
    return _p(2048)


def test_dkim_good_key(p2048: str) -> None:
    findings = dkim.lint("x.test/s1", [f"v=DKIM1; k=rsa; p={p2048}"], p2048)
    assert [f.status for f in findings] == ["ok"] and "2048 bits" in findings[0].message
    assert statuses(dkim.lint("x.test/s1", [f"v=DKIM1; k=rsa; p={p2048}"], "AAAA"))[0][1].startswith(
        "published key differs"
    )


def test_dkim_problems(p2048: str) -> None:
    assert statuses(dkim.lint("s", [f"v=DKIM1; k=rsa; p={_p(1024)}"]))[0][0] == "warning"
    assert statuses(dkim.lint("s", ["v=DKIM1; p=AAAA"])) == [("error", "p= does not hold an RSA public key")]
    assert statuses(dkim.lint("s", ["v=DKIM1; k=rsa; p="])) == [("error", "p= is empty: the key is revoked")]
    assert statuses(dkim.lint("s", ["v=DKIM1; k=rsa; p="], active=False))[0][0] == "warning"
    assert statuses(dkim.lint("s", ["v=DKIM1; k=rsa; p=!!!"])) == [("error", "p= is not valid base64")]
    assert statuses(dkim.lint("s", ["k=rsa; v=DKIM1; p=x"]))[0][1] == "v= must be the first tag and equal DKIM1"
    assert statuses(dkim.lint("s", [])) == [("error", "no DKIM record")]
    assert statuses(dkim.lint("s", [f"v=DKIM1; t=y; p={p2048}"]))[0][0] == "warning"
    assert statuses(dkim.lint("s", [f"v=DKIM1; h=sha1; p={p2048}"]))[0][1] == "h=sha1: sha256 not allowed"


def test_dkim_small_key_is_an_error() -> None:
    # cryptography no longer generates 512-bit keys: build the public half from numbers
    public = rsa.RSAPublicNumbers(65537, (1 << 511) + 0x1234567).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    p512 = base64.b64encode(der).decode()
    assert dkim.key_bits("rsa", p512) == 512
    assert statuses(dkim.lint("s", [f"v=DKIM1; p={p512}"])) == [("error", "RSA key of 512 bits (at least 1024 needed)")]


# ------------------------------------------------------------------------------------------ DMARC


def test_dmarc() -> None:
    ok = dmarc.lint("shop.test", ["v=DMARC1; p=none; rua=mailto:d@shop.test; adkim=r; aspf=r"])
    assert [f.status for f in ok] == ["ok"] and "monitoring only" in ok[0].message
    assert statuses(dmarc.lint("shop.test", [])) == [("error", "no DMARC record at _dmarc.shop.test")]
    assert statuses(dmarc.lint("shop.test", ["v=DMARC1; p=block"]))[0][0] == "error"
    assert statuses(dmarc.lint("shop.test", ["v=DMARC1; rua=mailto:d@shop.test; p=none"]))[0][1] == (
        "_dmarc.shop.test: p= must be present and follow v=DMARC1"
    )
    assert statuses(dmarc.lint("shop.test", ["v=DMARC1; p=reject; adkim=x; rua=mailto:a@shop.test"])) == [
        ("error", "adkim=x: alignment must be r or s")
    ]
    warn = statuses(dmarc.lint("shop.test", ["v=DMARC1; p=quarantine; pct=50; rua=mailto:d@reports.example"]))
    assert [w[0] for w in warn] == ["warning", "warning"]
    assert "shop.test._report._dmarc.reports.example" in warn[1][1]
    assert statuses(dmarc.lint("shop.test", ["v=DMARC1; p=none"])) == [
        ("warning", "no rua=: you will receive no aggregate reports")
    ]
    assert statuses(dmarc.lint("shop.test", ["v=DMARC1; p=none", "v=DMARC1; p=reject"])) == [
        ("error", "2 DMARC records at _dmarc.shop.test: receivers apply none")
    ]


# ------------------------------------------------------------------------------------ FCrDNS gate

SIP = SendingIp(
    ipaddress.ip_address("198.51.100.70"),
    "transactional",
    "o70.mta1.lab.test",
    "mta1",
    "o70.mta1.lab.test",
    date(2026, 11, 27),
)
REV = "70.100.51.198.in-addr.arpa"


def test_gate_passes() -> None:
    dns = FakeDns(
        {(REV, "PTR"): ("o70.mta1.lab.test",), ("o70.mta1.lab.test", "A"): ("198.51.100.70", "198.51.100.71")}
    )
    v = evaluate(SIP, dns)
    assert v.passed and v.fcrdns and v.reasons == () and v.ptr == "o70.mta1.lab.test"
    assert v.as_dict() == {
        "ip": "198.51.100.70",
        "host": "mta1",
        "pool": "transactional",
        "ptr": "o70.mta1.lab.test",
        "helo": "o70.mta1.lab.test",
        "passed": True,
        "fcrdns": True,
        "mode": "enforce",
        "reasons": [],
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "no PTR record"),
        ({(REV, "PTR"): "timeout"}, "PTR lookup failed (timeout)"),
        (
            {(REV, "PTR"): ("o70.mta1.lab.test", "mail.lab.test")},
            "2 PTR records (mail.lab.test, o70.mta1.lab.test); exactly one needed",
        ),
        (
            {(REV, "PTR"): ("o70.mta1.lab.test",)},
            "o70.mta1.lab.test has no A record (nxdomain): no forward confirmation",
        ),
        (
            {(REV, "PTR"): ("o70.mta1.lab.test",), ("o70.mta1.lab.test", "A"): ("198.51.100.99",)},
            "o70.mta1.lab.test resolves to 198.51.100.99, not back to 198.51.100.70",
        ),
        (
            {(REV, "PTR"): ("mail.lab.test",), ("mail.lab.test", "A"): ("198.51.100.70",)},
            "PTR name mail.lab.test differs from the HELO name o70.mta1.lab.test",
        ),
        (
            {(REV, "PTR"): ("198-51-100-70.dyn.isp.test",), ("198-51-100-70.dyn.isp.test", "A"): ("198.51.100.70",)},
            "PTR name 198-51-100-70.dyn.isp.test looks generic (contains dyn)",
        ),
    ],
)
def test_gate_fails(data: dict[tuple[str, str], tuple[str, ...] | str], reason: str) -> None:
    v = evaluate(SIP, FakeDns(data))
    assert not v.passed and not v.fcrdns and reason in v.reasons
    w = evaluate(SIP, FakeDns(data), "warn")
    assert w.passed and not w.fcrdns and w.reasons == v.reasons and w.mode == "warn"


def test_gate_ipv6_uses_aaaa() -> None:
    sip = SendingIp(ipaddress.ip_address("2001:db8:5f::70"), "t", "o70.mta1.lab.test", "mta1", "o70.mta1.lab.test")
    rev = sip.ip.reverse_pointer
    dns = FakeDns({(rev, "PTR"): ("o70.mta1.lab.test",), ("o70.mta1.lab.test", "AAAA"): ("2001:db8:5f:0::70",)})
    assert evaluate(sip, dns).fcrdns
    assert ("o70.mta1.lab.test", "AAAA") in dns.asked and ("o70.mta1.lab.test", "A") not in dns.asked


@pytest.mark.parametrize(
    ("name", "ip", "generic"),
    [
        ("o70.mta1.lab.test", "198.51.100.70", False),
        ("o100.mta1.lab.test", "198.51.100.100", False),
        ("mail.example.com", "198.51.100.70", False),
        ("mta-transactional-1.example.com", "198.51.100.1", False),
        ("198-51-100-70.example.net", "198.51.100.70", True),
        ("70-100-51-198.rev.example.net", "198.51.100.70", True),
        ("host100-70.example.net", "198.51.100.70", True),
        ("c6336446.example.net", "198.51.100.70", True),
        ("dhcp123.example.net", "198.51.100.9", True),
        ("pool-5.customers.example.net", "198.51.100.9", True),
        ("static.9.example.net", "198.51.100.9", True),
        ("adsl-line.example.net", "198.51.100.9", True),
        ("2001-db8-5f-0-0-0-0-70.ip6.example", "2001:db8:5f::70", True),
        ("o70.mta1.lab.test", "2001:db8:5f::70", False),
    ],
)
def test_generic_names(name: str, ip: str, generic: bool) -> None:
    assert bool(generic_reasons(name, ipaddress.ip_address(ip))) is generic
