"""sendfleet.dns.mx, the one MX lookup, against a fake resolver that answers with real dnspython messages and
raises dnspython's own errors; and its three callers (the shaper, the agent's queue classification and the
feedback processor) giving one domain the same class, or all saying they cannot tell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from sendfleet.core import shaping
from sendfleet.dns import mx
from sendfleet.feedback import processor
from sendfleet.monitor import agent
from sendfleet.monitor import shaper as sh

SOA = "ns.example.test. hostmaster.example.test. 1 3600 600 86400 900"
CLASS_DATA = {"gmail": {"mx_suffixes": ["google.test"]}, "outlook": {"mx_suffixes": ["outlook.test"]},
              "other": {"limits": {"connections": 6, "messages_per_connection": 100}}}
CLASSES = shaping.parse_classes(CLASS_DATA)


def response(qname: str, *, answer: list[str] = (), ttl: int = 300, rcode: int = dns.rcode.NOERROR,
             soa_ttl: int | None = 1800) -> dns.message.Message:
    query = dns.message.make_query(qname, "MX")
    msg = dns.message.make_response(query)
    msg.set_rcode(rcode)
    if answer:
        msg.answer.append(dns.rrset.from_text_list(qname, ttl, "IN", "MX", list(answer)))
    if soa_ttl is not None and not answer:
        msg.authority.append(dns.rrset.from_text("example.test.", soa_ttl, "IN", "SOA", SOA))
    return dns.message.from_wire(msg.to_wire())  # as a server's reply arrives (and indexed like one)


class FakeResolver:
    """dnspython's Resolver.resolve for MX, from a table: domain -> MX rdata texts, or one of the outcomes."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def resolve(self, qname: str, rdtype: str, **kwargs: Any) -> dns.resolver.Answer:
        self.asked.append((qname, kwargs))
        assert rdtype == "MX"
        name = dns.name.from_text(qname)
        what = self.table.get(qname.rstrip("."), "timeout")
        if what == "timeout":
            raise dns.resolver.LifetimeTimeout(timeout=kwargs.get("lifetime", 5.0), errors=[])
        if what == "servfail":
            msg = response(qname, rcode=dns.rcode.SERVFAIL, soa_ttl=None)
            raise dns.resolver.NoNameservers(request=dns.message.make_query(qname, "MX"),
                                             errors=[("198.51.100.4", False, 53, "SERVFAIL", msg)])
        if what == "nxdomain":
            raise dns.resolver.NXDOMAIN(qnames=[name], responses={name: response(qname, rcode=dns.rcode.NXDOMAIN)})
        if what == "nodata":
            msg = response(qname)
        elif what == "nodata-no-soa":
            msg = response(qname, soa_ttl=None)
        else:
            msg = response(qname, answer=list(what), ttl=600)
        return dns.resolver.Answer(name, dns.rdatatype.MX, 1, msg)


TABLE = {
    "corp.test": ["20 backup.corp.test.", "10 ALT1.aspmx.l.Google.test."],
    "shop.test": "nodata",
    "bare.test": "nodata-no-soa",
    "mail.outlook.test": "nodata",
    "gone.test": "nxdomain",
    "nomail.test": ["0 ."],
    "broken.test": "servfail",
    "slow.test": "timeout",
}


@pytest.fixture()
def lookup() -> mx.MxLookup:
    return mx.MxLookup(resolver=FakeResolver(TABLE), timeout=1.5)


def test_mx_hosts_by_preference_in_lower_case_with_the_records_ttl(lookup: mx.MxLookup) -> None:
    assert lookup("Corp.TEST.") == mx.MxAnswer(mx.OK, ("alt1.aspmx.l.google.test", "backup.corp.test"), 600.0)
    qname, kwargs = lookup.resolver.asked[0]
    assert qname == "corp.test." and kwargs["lifetime"] == 1.5 and kwargs["search"] is False
    assert kwargs["raise_on_no_answer"] is False


def test_no_mx_record_is_the_implicit_mx_the_domain_itself(lookup: mx.MxLookup) -> None:
    assert lookup("shop.test") == mx.MxAnswer(mx.IMPLICIT, ("shop.test",), 900.0)  # min(SOA TTL, MINIMUM)
    assert lookup("bare.test") == mx.MxAnswer(mx.IMPLICIT, ("bare.test",), mx.NEGATIVE_TTL)


def test_a_domain_that_takes_no_mail_has_no_host_and_is_not_a_failure(lookup: mx.MxLookup) -> None:
    gone, null = lookup("gone.test"), lookup("nomail.test")
    assert (gone.status, gone.hosts, gone.ttl, gone.failed) == (mx.NOMAIL, (), 900.0, False)
    assert (null.status, null.hosts, null.ttl, null.failed) == (mx.NOMAIL, (), 600.0, False)


def test_servfail_and_timeout_are_failures_with_nothing_to_cache(lookup: mx.MxLookup) -> None:
    for domain, detail in (("broken.test", "SERVFAIL"), ("slow.test", "timeout after 1.5 s")):
        answer = lookup(domain)
        assert answer.failed and answer.hosts == () and answer.ttl == 0.0 and detail in answer.detail
    assert lookup("").failed and len(lookup.resolver.asked) == 2  # no domain: nothing asked


def test_provider_class_of_each_answer(lookup: mx.MxLookup) -> None:
    got = {d: mx.provider_class(lookup(d), CLASSES) for d in TABLE}
    assert got == {"corp.test": "gmail", "shop.test": "other", "bare.test": "other", "mail.outlook.test": "outlook",
                   "gone.test": "other", "nomail.test": "other", "broken.test": None, "slow.test": None}


def test_the_resolver_is_made_at_the_first_lookup_with_the_timeout() -> None:
    made = mx.MxLookup(["127.0.0.1"], port=5353, timeout=0.5)
    assert made._resolver is None  # nothing made (nor dnspython imported for it) before a lookup
    r = made.resolver
    assert (r.nameservers, r.port, r.lifetime) == (["127.0.0.1"], 5353, 0.5) and r.timeout <= 0.5


def test_feedback_processor_does_not_import_dnspython_before_a_lookup() -> None:
    import subprocess

    code = ("import sys\nfrom sendfleet.feedback import processor\nfrom sendfleet.dns import mx\n"
            "processor.MxClassifier({})\nprint(sorted(m for m in sys.modules if m == 'dns' or m.startswith('dns.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_three_callers_agree_on_every_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shaper, the agent's queue classification and the feedback processor give each domain one class, and
    all three say `unknown` (shaper None, agent not cached, processor not known) for the same failures."""
    fake = FakeResolver(TABLE)
    real = mx.MxLookup
    monkeypatch.setattr(mx, "MxLookup", lambda *a, **k: real(resolver=fake))  # the one the agent makes
    domains = sorted(TABLE)
    shaper = {d: sh.lookup_class(real(resolver=fake), d, CLASSES)[0] for d in domains}
    cfg = agent.Config({"zones_file": "/x/zones.yml", "members": [], "shaping": {"classes": CLASS_DATA},
                        "queue": {"lookups_per_run": len(domains), "class_cache_file": str(tmp_path / "c.json")}},
                       "test")
    queue = agent.classify_domains(cfg, domains, 0.0)
    cached = set(__import__("json").loads((tmp_path / "c.json").read_text()))
    feedback = processor.MxClassifier(CLASSES, lookup=real(resolver=fake))
    for d in domains:
        klass = feedback(f"someone@{d}")
        assert (shaper[d] is None) == (d not in cached) == (not feedback.known(f"someone@{d}")), d
        if shaper[d] is not None:
            assert shaper[d] == queue[d] == klass, d
        else:
            assert queue[d] == klass == shaping.OTHER, d
    assert {d for d in domains if shaper[d] is None} == {"broken.test", "slow.test"}
