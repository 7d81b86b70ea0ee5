"""DNS as the world sees it for this host's sending IPs (from this machine, through the inventory's
`dns_resolver`): FCrDNS of every sending IP, and SPF of every sender domain of its pool authorising it."""

from __future__ import annotations

from typing import Any

from sendfleet.readiness.evidence import DnsView
from tests.infra.conftest import Expect


def test_fcrdns_of_sending_ips(host: Any, expect: Expect) -> None:
    bad = [f"{s.ip} (pool {s.pool}): {expect.gate[str(s.ip)].detail}" for s in expect.sending_ips
           if not expect.gate[str(s.ip)].ok]
    assert not bad, f"{expect.name}: FCrDNS fails (expected PTR -> ptr name -> same IP):\n  - " + "\n  - ".join(bad)


def test_spf_authorizes_sending_ips(host: Any, expect: Expect, dnsview: DnsView) -> None:
    """pyspf evaluates each in-service IP against the SPF of each sender domain of its pool: pass."""
    problems = []
    for domain in expect.domains_here():
        for s in expect.in_service:
            if s.pool != domain.pool:
                continue
            result, why = dnsview.spf_check(str(s.ip), f"readiness@{domain.name}", s.helo)
            if result != "pass":
                problems.append(f"{s.ip} for {domain.name}: SPF {result} ({why}); expected pass")
    assert not problems, f"{expect.name}:\n  - " + "\n  - ".join(problems)
