"""DMARC (RFC 7489) in core.dmarc: organizational domains from the Public Suffix List, policy discovery, alignment,
and the one record parser that the DNS linter and readiness share."""

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
                 dmarc_records=("v=DMARC1; p=reject",), dmarc_name="_dmarc.shop.co.uk")
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


def test_discover_stops_at_the_first_name_with_a_record() -> None:
    published = {
        "_dmarc.shop.co.uk": ["v=spf1 -all", "v=DMARC1; p=reject; sp=quarantine"],
        "_dmarc.co.uk": ["v=DMARC1; p=none"],
    }
    asked: list[str] = []

    def txt(name: str) -> list[str]:
        asked.append(name)
        return published.get(name, [])

    found = dmarc.discover("news.shop.co.uk", txt)
    assert asked == ["_dmarc.news.shop.co.uk", "_dmarc.shop.co.uk"]
    assert (found.name, found.record) == ("_dmarc.shop.co.uk", "v=DMARC1; p=reject; sp=quarantine")
    nothing = dmarc.discover("other.co.uk", txt)
    assert (nothing.name, nothing.records, nothing.record) == ("_dmarc.other.co.uk", (), None)


def test_two_records_at_the_from_domain_end_discovery_without_a_policy() -> None:
    published = {"_dmarc.news.shop.test": ["v=DMARC1; p=none", "v=DMARC1; p=reject"], "_dmarc.shop.test": ["x"]}
    found = dmarc.discover("news.shop.test", lambda name: published.get(name, []))
    assert found.name == "_dmarc.news.shop.test" and len(found.records) == 2 and found.record is None
    ev = replace(good(), dmarc_records=found.records, dmarc_name=found.name)
    detail = judge(ROUTE, ev)["dmarc"].detail
    assert detail == "2 DMARC records at _dmarc.news.shop.test: receivers apply none"


def test_a_subdomain_from_is_judged_with_sp_of_the_organizational_record() -> None:
    route = replace(ROUTE, domain="news.shop.test")
    ev = sent_as("news.shop.test", dmarc_records=("v=DMARC1; p=reject; sp=quarantine",), dmarc_name="_dmarc.shop.test")
    check = judge(route, ev)["dmarc"]
    assert check.ok and check.detail.startswith("p=quarantine (_dmarc.shop.test)")


# ------------------------------------------------------------------------------------ the one parser


def test_parse_fills_in_defaults_and_keeps_the_tags() -> None:
    record = dmarc.parse("v=DMARC1; p=Reject; rua=mailto:d@shop.test,mailto:x@y.test; pct=20")
    assert (record.p, record.sp, record.adkim, record.aspf, record.pct) == ("reject", None, "r", "r", 20)
    assert record.rua == ("mailto:d@shop.test", "mailto:x@y.test") and record.problems == ()
    assert list(record.tags) == ["v", "p", "rua", "pct"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("v=DMARC1; rua=mailto:x@y.test; p=none", "p= must be present and follow v=DMARC1"),
        ("p=none; v=DMARC1", "v=DMARC1 must come first"),
        ("v=dmarc1; p=none", "v=DMARC1 must come first"),
        ("v=DMARC1; p=block", "p=block: not none, quarantine or reject"),
        ("v=DMARC1; p=none; junk", "syntax: bad tag 'junk'"),
        ("v=DMARC1; p=none; P=reject", "syntax: tag 'p' appears twice"),
    ],
)
def test_parse_refuses_records_receivers_cannot_use(text: str, error: str) -> None:
    with pytest.raises(dmarc.DmarcError) as err:
        dmarc.parse(text)
    assert str(err.value) == error


def test_invalid_optional_tags_are_problems_with_defaults() -> None:
    record = dmarc.parse("v=DMARC1; p=none; sp=maybe; adkim=x; pct=150; ruf=ftp://x")
    assert (record.sp, record.adkim, record.pct, record.ruf) == (None, "r", 100, ())
    assert record.problems == (
        "sp=maybe: not none, quarantine or reject",
        "adkim=x: alignment must be r or s",
        "pct=150: not 0..100",
        "ruf: 'ftp://x' is not a mailto:/https: URI",
    )


def test_linter_and_readiness_read_a_record_the_same_way() -> None:
    """Readiness took `v=DMARC1; p=none; adkim=x` for a valid policy while the linter refused it."""
    text = "v=DMARC1; p=none; adkim=x; rua=mailto:d@shop.test"
    lint = dmarc.lint("shop.test", [text])
    assert [(f.status, f.message) for f in lint] == [("error", "adkim=x: alignment must be r or s")]
    check = judge(ROUTE, replace(good(), dmarc_records=(text,)))["dmarc"]
    assert not check.ok and check.detail == "_dmarc.shop.test: adkim=x: alignment must be r or s"
    for broken in ("v=DMARC1; p=none; junk", "v=DMARC1; p=none; p=reject"):
        assert dmarc.lint("shop.test", [broken])[0].status == "error"
        assert not judge(ROUTE, replace(good(), dmarc_records=(broken,)))["dmarc"].ok


def test_is_dmarc_recognises_the_version_tag_only() -> None:
    assert dmarc.is_dmarc("v=DMARC1; p=none") and dmarc.is_dmarc(" v = DMARC1 ;p=none") and dmarc.is_dmarc("v=DMARC1")
    assert not dmarc.is_dmarc("v=DMARC10; p=none") and not dmarc.is_dmarc("v=spf1 -all")
    assert not dmarc.is_dmarc("p=none; v=DMARC1")
