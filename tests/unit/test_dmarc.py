"""DMARC (RFC 7489) in core.dmarc: organizational domains from the Public Suffix List, the names of policy
discovery, identifier alignment."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sendfleet.core import dmarc
from sendfleet.core.readiness import DkimSignature, Evidence, judge
from tests.unit.test_readiness_core import ROUTE, good


def sent_as(domain: str, **changes: object) -> Evidence:
    """A good message of the readiness tests, sent for `domain` (From and envelope sender in it)."""
    base = replace(good(), domain=domain, header_from=f"<readiness@{domain}>", mail_from=f"readiness@{domain}")
    return replace(base, **changes)  # type: ignore[arg-type]

# --------------------------------------------------------------------------- organizational domain (3.2)


@pytest.mark.parametrize(
    ("name", "org"),
    [
        ("mailer.evil.co.uk", "evil.co.uk"),
        ("shop.co.uk", "shop.co.uk"),
        ("news.shop.co.uk", "shop.co.uk"),
        ("a.b.shop.com.au", "shop.com.au"),
        ("mail.example.com", "example.com"),
        ("Mail.Shop.CO.UK.", "shop.co.uk"),  # case and the root dot do not matter
        ("co.uk", "co.uk"),  # a public suffix is its own organizational domain
        ("mta1.shop.test", "shop.test"),  # unknown TLD: the list's default rule (the lab's names)
        # private section: github.io hands out names to different owners
        ("a.b.shop.github.io", "shop.github.io"),
        ("evil.github.io", "evil.github.io"),
    ],
)
def test_organizational_domain_is_public_suffix_plus_one_label(name: str, org: str) -> None:
    assert dmarc.org_domain(name) == org


def test_relaxed_alignment_across_a_multi_label_suffix_is_no_longer_a_false_pass() -> None:
    """The last-two-labels rule took co.uk for the organization of both names."""
    assert not dmarc.aligned("mailer.evil.co.uk", "shop.co.uk", "r")
    assert not dmarc.aligned("evil.com.au", "shop.com.au", "r")
    assert not dmarc.aligned("evil.github.io", "shop.github.io", "r")  # private suffixes count
    assert dmarc.aligned("mailer.shop.co.uk", "shop.co.uk", "r")
    assert dmarc.aligned("bounce.shop.co.uk", "news.shop.co.uk", "r")
    assert not dmarc.aligned("mailer.shop.co.uk", "shop.co.uk", "s")
    assert dmarc.aligned("Shop.Co.Uk.", "shop.co.uk", "s")
    assert not dmarc.aligned("", "shop.co.uk", "r")


def test_readiness_fails_dkim_signed_by_another_owner_under_the_same_suffix() -> None:
    route = replace(ROUTE, domain="shop.co.uk")
    ev = sent_as("shop.co.uk", dkim=(DkimSignature("mailer.evil.co.uk", "s1", True),), spf_result="fail",
                 dmarc_record="v=DMARC1; p=reject", dmarc_name="_dmarc.shop.co.uk")
    checks = judge(route, ev)
    assert not checks["dkim"].ok and "not aligned with From shop.co.uk" in checks["dkim"].detail
    assert not checks["dmarc"].ok
    ev = replace(ev, dkim=(DkimSignature("mailer.shop.co.uk", "s1", True),))
    assert judge(route, ev)["dmarc"].ok


# ------------------------------------------------------------------------------ policy discovery (6.6.3)


def test_discovery_asks_the_from_domain_then_its_organizational_domain() -> None:
    assert dmarc.discovery_names("news.shop.co.uk") == ["_dmarc.news.shop.co.uk", "_dmarc.shop.co.uk"]
    assert dmarc.discovery_names("shop.co.uk") == ["_dmarc.shop.co.uk"]  # never _dmarc.co.uk
    assert dmarc.discovery_names("a.b.shop.github.io") == ["_dmarc.a.b.shop.github.io", "_dmarc.shop.github.io"]
    assert dmarc.discovery_names("") == []
