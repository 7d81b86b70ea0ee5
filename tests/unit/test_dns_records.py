"""The record planner and the diff (no network)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sendfleet.core.dnsdiff import Current, ManagedKey, diff, prune_keys
from sendfleet.core.inventory import HostSource, Inventory, VarSource, build_inventory
from sendfleet.core.records import json_text, plan_records, txt_chunks, txt_presentation, zone_text
from sendfleet.errors import InventoryError


def inventory(extra: dict[str, object] | None = None, ips: dict[str, list[dict[str, str]]] | None = None) -> Inventory:
    data: dict[str, object] = {
        "pools": {"transactional": {}, "marketing": {}},
        "sender_domains": {
            "shop.test": {
                "pool": "transactional",
                "selectors": ["s2026a"],
                "dmarc": {"p": "none", "rua": "mailto:d@shop.test"},
            },
            "news.test": {"pool": "marketing", "selectors": ["s1"]},
        },
        "dns_zones": ["lab.test", "shop.test", "news.test", "100.51.198.in-addr.arpa"],
        "dns_ttl": 300,
        "host_domain": "lab.test",
        "admin_networks": ["198.51.100.0/28"],
        "sending_ips_require_vetted": False,
    }
    data.update(extra or {})
    ips = (
        ips
        if ips is not None
        else {
            "mta1": [
                {"ip": "198.51.100.70", "pool": "transactional", "ptr": "o70.mta1.lab.test"},
                {"ip": "198.51.100.80", "pool": "marketing", "ptr": "o80.mta1.lab.test"},
            ],
            "mta2": [
                {"ip": "198.51.100.71", "pool": "transactional", "ptr": "o71.mta2.lab.test"},
                {"ip": "2001:db8:5f::71", "pool": "transactional", "ptr": "o71.mta2.lab.test"},
            ],
        }
    )
    hosts = [HostSource(h, ("senders",), [VarSource(f"host_vars/{h}.yml", {"sending_ips": v})]) for h, v in ips.items()]
    return build_inventory(Path("/inv"), [VarSource("group_vars/all/x.yml", data)], hosts)


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def keys(rsa_key: rsa.RSAPrivateKey) -> dict[tuple[str, str], bytes | None]:
    return {("shop.test", "s2026a"): pem(rsa_key), ("news.test", "s1"): pem(rsa_key)}


def by(plan_recs: object, name: str, rtype: str) -> object:
    return next(r for r in plan_recs if r.name == name and r.rtype == rtype)  # type: ignore[attr-defined]


def test_plan_has_every_record(rsa_key: rsa.RSAPrivateKey) -> None:
    plan = plan_records(inventory(), keys(rsa_key))
    recs = {(r.name, r.rtype): r for r in plan.records}
    assert recs[("70.100.51.198.in-addr.arpa", "PTR")].values == ("o70.mta1.lab.test",)
    assert recs[("70.100.51.198.in-addr.arpa", "PTR")].zone == "100.51.198.in-addr.arpa"
    assert recs[("o71.mta2.lab.test", "A")].values == ("198.51.100.71",)
    assert recs[("o71.mta2.lab.test", "AAAA")].values == ("2001:db8:5f::71",)
    # the IPv6 PTR is outside our zones: ask the provider
    v6 = recs[("1.7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.5.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR")]
    assert v6.zone is None and not v6.publishable and v6 in plan.outside()
    # SPF covers exactly the pool's IPs (contiguous ones collapse into a CIDR)
    spf = recs[("shop.test", "TXT")]
    assert spf.values == ("v=spf1 ip4:198.51.100.70/31 ip6:2001:db8:5f::71 ~all",) and spf.match == "v=spf1"
    assert recs[("news.test", "TXT")].values == ("v=spf1 ip4:198.51.100.80 ~all",)
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert recs[("s2026a._domainkey.shop.test", "TXT")].values == (
        f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}",
    )
    assert recs[("_dmarc.shop.test", "TXT")].values == ("v=DMARC1; p=none; rua=mailto:d@shop.test; adkim=r; aspf=r",)
    assert recs[("_dmarc.news.test", "TXT")].values == (
        "v=DMARC1; p=none; rua=mailto:dmarc@news.test; adkim=r; aspf=r",
    )
    assert all(r.ttl == 300 for r in plan.records)
    assert plan.errors() == []


def test_missing_or_bad_key_is_an_error_item_not_a_record(rsa_key: rsa.RSAPrivateKey) -> None:
    plan = plan_records(inventory(), {("shop.test", "s2026a"): None, ("news.test", "s1"): b"not a key"})
    shop = by(plan.records, "s2026a._domainkey.shop.test", "TXT")
    assert shop.values == () and "DKIM key file missing: /inv/dkim/shop.test/s2026a.pem" in shop.error  # type: ignore[attr-defined]
    news = by(plan.records, "s1._domainkey.news.test", "TXT")
    assert news.values == () and "not a PEM private key" in news.error  # type: ignore[attr-defined]
    assert len(plan.errors()) == 2
    assert "NOT PLANNED: DKIM key file missing" in zone_text(plan)


def test_small_rsa_and_ed25519_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ed = ed25519.Ed25519PrivateKey.generate()
    inv = inventory({"sender_domains": {
        "shop.test": {"pool": "transactional", "selectors": ["s2026a"]},
        "news.test": {"pool": "marketing", "selectors": ["r1"], "ed25519_selectors": ["s1"]},
    }})
    plan = plan_records(inv, {("shop.test", "s2026a"): pem(small), ("news.test", "s1"): pem(ed),
                              ("news.test", "r1"): pem(rsa_key)})
    warnings = [p.message for p in plan.problems if p.check == "dkim"]
    assert [p.status for p in plan.problems if p.check == "dkim"] == ["warning"]
    assert "1024 bits" in warnings[0]
    raw = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    rec = by(plan.records, "s1._domainkey.news.test", "TXT")
    assert rec.values == (f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}",)  # type: ignore[attr-defined]


def test_dual_signing_publishes_both_keys_and_refuses_a_key_of_the_wrong_type(rsa_key: rsa.RSAPrivateKey) -> None:
    """RSA selectors must hold RSA keys and Ed25519 selectors Ed25519 keys: OpenDKIM's RSA instance cannot sign
    with an Ed25519 key (mail would wait in the queue), so a mismatch is an error with no record planned."""
    ed = ed25519.Ed25519PrivateKey.generate()
    inv = inventory({"sender_domains": {
        "shop.test": {"pool": "transactional", "selectors": ["s2026a"], "ed25519_selectors": ["e2026a"]},
        "news.test": {"pool": "marketing", "selectors": ["s1"], "ed25519_selectors": ["e1"]},
    }})
    plan = plan_records(inv, {
        ("shop.test", "s2026a"): pem(rsa_key), ("shop.test", "e2026a"): pem(ed),
        ("news.test", "s1"): pem(ed), ("news.test", "e1"): pem(rsa_key),
    })
    assert by(plan.records, "s2026a._domainkey.shop.test", "TXT").values[0].startswith("v=DKIM1; k=rsa;")  # type: ignore[attr-defined]
    assert by(plan.records, "e2026a._domainkey.shop.test", "TXT").values[0].startswith("v=DKIM1; k=ed25519;")  # type: ignore[attr-defined]
    errors = sorted(p.message for p in plan.problems if p.status == "error")
    assert len(errors) == 2
    assert any("a ED25519 key, but s1 is listed in selectors (which holds RSA keys)" in e for e in errors)
    assert any("a RSA key, but e1 is listed in ed25519_selectors (which holds ED25519 keys)" in e for e in errors)
    assert by(plan.records, "s1._domainkey.news.test", "TXT").values == ()  # type: ignore[attr-defined]


def test_spf_lookup_limit_is_an_error(rsa_key: rsa.RSAPrivateKey) -> None:
    includes = [f"_spf{i}.esp.example" for i in range(11)]
    inv = inventory(
        {"sender_domains": {"shop.test": {"pool": "transactional", "selectors": ["s2026a"], "spf_include": includes}}}
    )
    plan = plan_records(inv, keys(rsa_key))
    rec = by(plan.records, "shop.test", "TXT")
    assert rec.values == () and "11 DNS lookups (RFC 7208 allows 10)" in rec.error  # type: ignore[attr-defined]
    assert [p.message for p in plan.errors()] == [rec.error]  # type: ignore[attr-defined]


def test_pool_spf_domain_is_included(rsa_key: rsa.RSAPrivateKey) -> None:
    inv = inventory({"pools": {"transactional": {"spf_domain": "_spf-tx.lab.test"}, "marketing": {}}})
    plan = plan_records(inv, keys(rsa_key))
    assert by(plan.records, "_spf-tx.lab.test", "TXT").values == (  # type: ignore[attr-defined]
        "v=spf1 ip4:198.51.100.70/31 ip6:2001:db8:5f::71 -all",
    )
    shop = by(plan.records, "shop.test", "TXT")
    assert shop.values == ("v=spf1 include:_spf-tx.lab.test ~all",)  # type: ignore[attr-defined]
    assert "1 lookup(s) counted offline" in shop.notes  # type: ignore[attr-defined]


def test_mta_sts_and_tls_rpt() -> None:
    inv = inventory(
        {
            "sender_domains": {
                "shop.test": {
                    "pool": "transactional",
                    "selectors": ["s2026a"],
                    "mta_sts": {"mode": "enforce", "mx": ["mx.shop.test"]},
                    "tls_rpt": {"rua": ["mailto:tls@shop.test"]},
                }
            }
        }
    )
    plan = plan_records(inv, {})
    sts = by(plan.records, "_mta-sts.shop.test", "TXT")
    assert sts.values[0].startswith("v=STSv1; id=")  # type: ignore[attr-defined]
    assert by(plan.records, "_smtp._tls.shop.test", "TXT").values == ("v=TLSRPTv1; rua=mailto:tls@shop.test",)  # type: ignore[attr-defined]
    assert "mode: enforce\r\nmx: mx.shop.test\r\n" in plan.extras["shop.test"]
    # the id follows the policy
    other = plan_records(
        inventory(
            {
                "sender_domains": {
                    "shop.test": {"pool": "transactional", "selectors": ["s2026a"],
                                  "mta_sts": {"mode": "testing", "mx": ["mx.shop.test"]}}
                }
            }
        ),
        {},
    )
    assert by(other.records, "_mta-sts.shop.test", "TXT").values != sts.values  # type: ignore[attr-defined]


def test_txt_split_in_255_byte_strings() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 400
    chunks = txt_chunks(value)
    assert [len(c) for c in chunks] == [255, 163] and b"".join(chunks) == value.encode()
    assert txt_presentation('a"b') == '"a\\"b"'
    assert [len(c) for c in txt_chunks("é" * 200)] == [254, 146]  # never splits a UTF-8 sequence


def test_output_formats(rsa_key: rsa.RSAPrivateKey) -> None:
    plan = plan_records(inventory(), keys(rsa_key))
    text = zone_text(plan, "/inv")
    assert "; ---- zone shop.test" in text and "; ---- outside the zones" in text
    assert 'IN TXT   "v=spf1 ip4:198.51.100.70/31 ip6:2001:db8:5f::71 ~all"' in text
    dkim_line = next(line for line in text.splitlines() if line.startswith("s2026a._domainkey.shop.test."))
    assert dkim_line.count('" "') == 1  # 392 bytes -> two strings
    import json

    data = json.loads(json_text(plan, "/inv"))
    ptr = next(r for r in data["records"] if r["type"] == "PTR" and r["subject"] == "198.51.100.70")
    assert ptr["publish"] == "rfc2136" and ptr["rdata"] == ["o70.mta1.lab.test."]


def test_diff_is_minimal_and_keeps_foreign_txt(rsa_key: rsa.RSAPrivateKey) -> None:
    plan = plan_records(inventory(), keys(rsa_key))
    current = {r.key: Current(r.ttl, r.values) for r in plan.publishable()}
    assert diff(plan.publishable(), current) == []
    # the apex also holds a TXT that is not ours, and an old SPF
    current[("shop.test", "TXT")] = Current(300, ("google-site-verification=x", "v=spf1 ip4:198.51.100.9 ~all"))
    current[("o80.mta1.lab.test", "A")] = Current(300, ("198.51.100.80", "198.51.100.81"))
    current[("_dmarc.shop.test", "TXT")] = Current(60, current[("_dmarc.shop.test", "TXT")].values)
    ours = {("o80.mta1.lab.test", "A"): frozenset({"198.51.100.80", "198.51.100.81"})}
    changes = {(c.name, c.rtype): c for c in diff(plan.publishable(), current, published=ours)}
    assert set(changes) == {("shop.test", "TXT"), ("o80.mta1.lab.test", "A"), ("_dmarc.shop.test", "TXT")}
    spf = changes[("shop.test", "TXT")]
    assert spf.delete == ("v=spf1 ip4:198.51.100.9 ~all",) and not spf.delete_rrset
    assert spf.add == ("v=spf1 ip4:198.51.100.70/31 ip6:2001:db8:5f::71 ~all",)
    a = changes[("o80.mta1.lab.test", "A")]
    assert a.delete == ("198.51.100.81",) and a.add == ()
    assert changes[("_dmarc.shop.test", "TXT")].delete_rrset  # TTL differs: the RRset is rewritten
    assert spf.lines()[0] == '- shop.test. TXT "v=spf1 ip4:198.51.100.9 ~all"'


def test_prune_only_what_sendfleet_published(rsa_key: rsa.RSAPrivateKey) -> None:
    plan = plan_records(inventory(), keys(rsa_key))
    old = [
        ManagedKey("lab.test", "o99.mta1.lab.test", "A", ""),
        ManagedKey("shop.test", "s2025._domainkey.shop.test", "TXT", ""),
        ManagedKey("shop.test", "shop.test", "TXT", "v=spf1"),  # still planned: kept
    ]
    prune = prune_keys(plan.records, old)
    assert [k.name for k in prune] == ["o99.mta1.lab.test", "s2025._domainkey.shop.test"]
    current = {
        ("o99.mta1.lab.test", "A"): Current(300, ("198.51.100.99",)),
        ("s2025._domainkey.shop.test", "TXT"): Current(None, ()),
    }
    changes = diff([], current, prune, {("o99.mta1.lab.test", "A"): frozenset({"198.51.100.99"})})
    assert [(c.name, c.delete, c.delete_rrset) for c in changes] == [("o99.mta1.lab.test", ("198.51.100.99",), True)]
    # a record whose key went missing is still planned (with an error): it is not deleted
    broken = plan_records(inventory(), {("shop.test", "s2026a"): None, ("news.test", "s1"): None})
    assert prune_keys(broken.records, [ManagedKey("shop.test", "s2026a._domainkey.shop.test", "TXT", "")]) == []


def test_addresses_sendfleet_did_not_publish_are_never_removed(rsa_key: rsa.RSAPrivateKey) -> None:
    """A PTR name may be a host's own name: its other addresses stay, only ours come and go."""
    plan = plan_records(inventory(), keys(rsa_key))
    recs = [r for r in plan.publishable() if r.key == ("o80.mta1.lab.test", "A")]
    current = {("o80.mta1.lab.test", "A"): Current(600, ("198.51.100.10", "198.51.100.81"))}
    # first run (nothing published before): add ours, touch nothing else, not even the TTL
    (change,) = diff(recs, current)
    assert (change.delete, change.add, change.delete_rrset) == ((), ("198.51.100.80",), False)
    # .81 was ours before: it goes, .10 stays
    (change,) = diff(recs, current, published={("o80.mta1.lab.test", "A"): frozenset({"198.51.100.81"})})
    assert (change.delete, change.add, change.delete_rrset) == (("198.51.100.81",), ("198.51.100.80",), False)
    # the name is no longer planned: only our address is deleted, never the RRset
    key = ManagedKey("lab.test", "o80.mta1.lab.test", "A", "")
    current = {("o80.mta1.lab.test", "A"): Current(600, ("198.51.100.10", "198.51.100.80"))}
    (change,) = diff([], current, [key], {("o80.mta1.lab.test", "A"): frozenset({"198.51.100.80"})})
    assert (change.delete, change.delete_rrset) == (("198.51.100.80",), False)
    assert diff([], current, [key], {}) == []


def test_bounce_domain_gets_mx_to_the_feedback_host_and_the_domains_spf(rsa_key: rsa.RSAPrivateKey) -> None:
    inv = inventory({"feedback_mx": ["fb.lab.test"]})
    assert inv.bounce_domains == {"bounces.shop.test": "shop.test", "bounces.news.test": "news.test"}
    plan = plan_records(inv, {("shop.test", "s2026a"): pem(rsa_key), ("news.test", "s1"): pem(rsa_key)})
    by_key = {(r.name, r.rtype): r for r in plan.records}
    mx = by_key[("bounces.shop.test", "MX")]
    assert mx.values == ("10 fb.lab.test",) and mx.rdata_texts() == ["10 fb.lab.test."]
    assert mx.zone == "shop.test" and mx.purpose == "bounce-mx"
    # SPF is checked on the envelope sender's domain: the bounce domain authorizes what the sender domain does
    assert by_key[("bounces.shop.test", "TXT")].values == by_key[("shop.test", "TXT")].values
    # as the authoritative server holds it (normalised), the MX record needs no change
    current = {("bounces.shop.test", "MX"): Current(300, ("10 fb.lab.test",))}
    assert not [c for c in diff([mx], current) if c.name == "bounces.shop.test"]


def test_no_feedback_host_no_bounce_domain_unless_named() -> None:
    inv = inventory()
    assert inv.bounce_domains == {}
    named = inventory({"sender_domains": {"shop.test": {"pool": "transactional", "selectors": ["s1"],
                                                        "bounce_domain": "rp.shop.test"}}})
    assert named.bounce_domains == {"rp.shop.test": "shop.test"}
    off = inventory({"feedback_mx": "fb.lab.test", "sender_domains": {
        "shop.test": {"pool": "transactional", "selectors": ["s1"], "bounce_domain": False}}})
    assert off.bounce_domains == {}


def test_feedback_hosts_are_the_default_mx() -> None:
    data = {"pools": {"p": {}}, "sender_domains": {"shop.test": {"pool": "p", "selectors": ["s1"]}},
            "host_domain": "lab.test", "admin_networks": ["198.51.100.0/28"]}
    inv = build_inventory(Path("/inv"), [VarSource("group_vars/all/x.yml", data)],
                          [HostSource("fb", ("feedback",), [])])
    assert inv.feedback_mx == ("fb.lab.test",)
    assert inv.bounce_domains == {"bounces.shop.test": "shop.test"}


def test_report_addresses_default_to_the_bounce_domain_the_feedback_host_reads() -> None:
    """With a feedback host, a sender domain that gives no DMARC or TLS-RPT rua has its reports sent to dmarc@ and
    tlsrpt@ of its bounce domain (default or named); an explicit rua stays as written; without a feedback host, or
    with `bounce_domain: false`, the default is the sender domain itself. `tls_rpt: true` or `{}`: TLS-RPT with
    the default rua; `false` or absent: none."""
    domains = {
        "shop.test": {"pool": "transactional", "selectors": ["s1"], "tls_rpt": True},
        "news.test": {"pool": "marketing", "selectors": ["s1"], "bounce_domain": "rp.news.test",
                      "tls_rpt": {"rua": "mailto:tls@reports.example"}},
        "mail.test": {"pool": "marketing", "selectors": ["s1"], "dmarc": {"p": "reject", "rua": "mailto:d@mail.test"},
                      "tls_rpt": {"rua": ["mailto:t@mail.test"]}},
        "quiet.test": {"pool": "marketing", "selectors": ["s1"], "bounce_domain": False, "tls_rpt": {}},
    }
    dns_zones = ["lab.test", "shop.test", "news.test", "mail.test", "quiet.test"]

    def reports(inv: Inventory) -> dict[str, tuple[str, str]]:
        plan = plan_records(inv, {})
        txt = {(r.name, r.rtype): r.values[0] for r in plan.records if r.values}  # type: ignore[attr-defined]
        return {d: (txt[(f"_dmarc.{d}", "TXT")], txt.get((f"_smtp._tls.{d}", "TXT"), "")) for d in domains}

    fed = reports(inventory({"feedback_mx": ["fb.lab.test"], "sender_domains": domains, "dns_zones": dns_zones}))
    assert fed == {
        "shop.test": ("v=DMARC1; p=none; rua=mailto:dmarc@bounces.shop.test; adkim=r; aspf=r",
                      "v=TLSRPTv1; rua=mailto:tlsrpt@bounces.shop.test"),
        "news.test": ("v=DMARC1; p=none; rua=mailto:dmarc@rp.news.test; adkim=r; aspf=r",
                      "v=TLSRPTv1; rua=mailto:tls@reports.example"),
        "mail.test": ("v=DMARC1; p=reject; rua=mailto:d@mail.test; adkim=r; aspf=r",
                      "v=TLSRPTv1; rua=mailto:t@mail.test"),
        "quiet.test": ("v=DMARC1; p=none; rua=mailto:dmarc@quiet.test; adkim=r; aspf=r",
                       "v=TLSRPTv1; rua=mailto:tlsrpt@quiet.test"),
    }
    alone = reports(inventory({"sender_domains": domains, "dns_zones": dns_zones}))  # no feedback host
    assert alone["shop.test"] == ("v=DMARC1; p=none; rua=mailto:dmarc@shop.test; adkim=r; aspf=r",
                                  "v=TLSRPTv1; rua=mailto:tlsrpt@shop.test")
    assert alone["news.test"][0] == "v=DMARC1; p=none; rua=mailto:dmarc@news.test; adkim=r; aspf=r"  # nobody reads rp
    assert alone["mail.test"] == fed["mail.test"] and alone["quiet.test"] == fed["quiet.test"]
    off = reports(inventory({"sender_domains": {**domains, "shop.test": {**domains["shop.test"], "tls_rpt": False}},
                             "dns_zones": dns_zones}))
    assert off["shop.test"][1] == ""


def test_report_addresses_at_the_bounce_domain_are_what_the_feedback_host_parses() -> None:
    """The default DMARC and TLS-RPT addresses lie at a bounce domain the feedback host is configured with, under
    the local parts its parser gives a meaning (a DMARC report to dmarc@, a TLS report to tlsrpt@)."""
    inv = inventory({"feedback_mx": ["fb.lab.test"]})
    for domain in inv.sender_domains.values():
        assert domain.dmarc is not None
        (address,) = domain.dmarc.rua
        local, _, at = address.removeprefix("mailto:").partition("@")
        if domain.name == "shop.test":  # its rua is explicit
            assert address == "mailto:d@shop.test"
            continue
        assert local == "dmarc" and inv.bounce_domains[at] == domain.name


def test_bounce_domain_outside_the_sender_domain_is_refused() -> None:
    with pytest.raises(InventoryError, match=r"sender_domains\.shop\.test\.bounce_domain: bounces\.other\.test is not "
                                             r"under shop\.test"):
        inventory({"sender_domains": {"shop.test": {"pool": "transactional", "selectors": ["s1"],
                                                    "bounce_domain": "bounces.other.test"}}})
