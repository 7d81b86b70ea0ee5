"""One generic-PTR rule (sendfleet.core.ptrname): `sendfleet vet` reports it and the FCrDNS gate refuses on it,
so both give the same verdict on every name."""

from __future__ import annotations

import ipaddress
from datetime import date

import pytest

from sendfleet.core import fcrdns, ptrname
from sendfleet.core.inventory import SendingIp
from sendfleet.core.lookup import LookupResult
from sendfleet.core.verdicts import RCODE_NOERROR, Reply
from sendfleet.dns import vetting

NAMES = [
    # words of end-user / unassigned space, alone or with digits on either side
    ("pool-5.customers.example.net", "198.51.100.9", True),
    ("dyn.isp.example", "198.51.100.9", True),
    ("dhcp123.example.net", "198.51.100.9", True),
    ("5dsl.example.net", "198.51.100.9", True),
    ("static.9.example.net", "198.51.100.9", True),
    ("adsl-line.example.net", "198.51.100.9", True),
    ("cpe.example.com", "198.51.100.9", True),
    ("home2.example.com", "198.51.100.9", True),
    ("vps12.example.com", "198.51.100.9", True),
    # digits of the address
    ("198-51-100-70.example.net", "198.51.100.70", True),
    ("70-100-51-198.rev.example.net", "198.51.100.70", True),
    ("70.100.51.198.in-addr.example", "198.51.100.70", True),
    ("host100-70.example.net", "198.51.100.70", True),
    ("c6336446.example.net", "198.51.100.70", True),
    ("198051100070.example.com", "198.51.100.70", True),
    ("3325256774.example.com", "198.51.100.70", True),
    ("2001-db8-5f-0-0-0-0-70.ip6.example", "2001:db8:5f::70", True),
    ("mx-00000000000000000070.example", "2001:db8:5f::70", True),
    # clean names, also with digits that are not the address's
    ("o70.mta1.lab.test", "198.51.100.70", False),
    ("o100.mta1.lab.test", "198.51.100.100", False),
    ("o6-80.mta2.example.net", "2001:db8:5f::80", False),
    ("mail.example.com", "198.51.100.70", False),
    ("mta-transactional-1.example.com", "198.51.100.1", False),
    ("smtp-out-7.news.test", "198.51.100.9", False),
    ("o70.mta1.lab.test", "2001:db8:5f::70", False),
    ("mail.example.static", "198.51.100.9", False),  # the TLD says nothing
]


def vet_says(name: str, ip: str) -> bool:
    """`sendfleet vet`'s PTR report for an answer carrying `name`."""
    addr = ipaddress.ip_address(ip)
    info = vetting._ptr_info(addr.version, int(addr), Reply(RCODE_NOERROR, (name,)))
    assert info.present and info.name == name
    return info.generic


def gate_says(name: str, ip: str) -> bool:
    """The FCrDNS gate on an IP whose PTR is `name`, resolving back, equal to its HELO: refused only as generic."""
    addr = ipaddress.ip_address(ip)
    sip = SendingIp(addr, "t", name, "mta1", name, date(2026, 11, 27))

    def lookup(qname: str, rdtype: str) -> LookupResult:
        if (qname, rdtype) == (addr.reverse_pointer, "PTR"):
            return LookupResult("ok", (name,))
        if (qname, rdtype) == (name, "A" if addr.version == 4 else "AAAA"):
            return LookupResult("ok", (str(addr),))
        return LookupResult("nxdomain")

    verdict = fcrdns.evaluate(sip, lookup)
    assert all("generic" in r for r in verdict.reasons), verdict.reasons
    return not verdict.fcrdns


@pytest.mark.parametrize(("name", "ip", "generic"), NAMES)
def test_vet_and_gate_agree(name: str, ip: str, generic: bool) -> None:
    assert vet_says(name, ip) is generic
    assert gate_says(name, ip) is generic
    assert bool(ptrname.generic_reasons(name, ipaddress.ip_address(ip))) is generic


def test_reasons_name_the_words_and_the_digits() -> None:
    reasons = ptrname.generic_reasons("dyn-198-51-100-70.pool.example.net.", "198.51.100.70")
    assert reasons == [
        "PTR name dyn-198-51-100-70.pool.example.net looks generic (contains dyn, pool)",
        "PTR name dyn-198-51-100-70.pool.example.net looks generic (built from the digits of 198.51.100.70)",
    ]
    assert ptrname.generic_reasons("O70.MTA1.Lab.Test.", "198.51.100.70") == []
