"""Readiness verdicts (pure): judging one message, aggregating per IP and domain, reading Received headers."""

from __future__ import annotations

from dataclasses import replace

from sendfleet.core.readiness import (
    DkimSignature,
    Evidence,
    Route,
    Submission,
    build_report,
    domain_of,
    hop_from_fleet,
    judge,
    messages_for_round,
    parse_received,
)

ROUTE = Route(
    host="mta1",
    address="198.51.100.10",
    domain="shop.test",
    pool="transactional",
    ips=("198.51.100.64", "198.51.100.65"),
    ptrs={"198.51.100.64": "o64.mta1.lab.test", "198.51.100.65": "o65.mta1.lab.test"},
    helos={"198.51.100.64": "o64.mta1.lab.test", "198.51.100.65": "o65.mta1.lab.test"},
)


def good(ip: str = "198.51.100.64", tag: str = "t1") -> Evidence:
    name = ROUTE.ptrs[ip]
    return Evidence(
        tag=tag,
        host="mta1",
        domain="shop.test",
        client_ip=ip,
        helo=name,
        tls_protocol="TLSv1.3",
        mail_from="readiness@shop.test",
        header_from="sendfleet readiness <readiness@shop.test>",
        ptr_names=(name,),
        forward={name: (ip,)},
        dkim=(DkimSignature("shop.test", "s2026a", True),),
        spf_result="pass",
        dmarc_records=("v=DMARC1; p=none; rua=mailto:dmarc@shop.test",),
        dmarc_name="_dmarc.shop.test",
    )


def test_a_good_message_passes_every_check() -> None:
    checks = judge(ROUTE, good())
    assert {k: c.ok for k, c in checks.items()} == dict.fromkeys(checks, True)
    assert set(checks) == {"ip", "fcrdns", "helo", "dkim", "spf", "dmarc", "tls"}


def test_wrong_helo_names_the_ip_and_the_ptr() -> None:
    checks = judge(ROUTE, replace(good(), helo="wrong.example.test"))
    assert not checks["helo"].ok
    assert "198.51.100.64" in checks["helo"].detail and "o64.mta1.lab.test" in checks["helo"].detail
    assert all(c.ok for k, c in checks.items() if k != "helo")


def test_missing_ptr_fails_fcrdns_and_helo() -> None:
    checks = judge(ROUTE, replace(good(), ptr_names=(), forward={}))
    assert not checks["fcrdns"].ok and "no PTR" in checks["fcrdns"].detail
    assert not checks["helo"].ok


def test_ptr_not_resolving_back_fails() -> None:
    checks = judge(ROUTE, replace(good(), forward={"o64.mta1.lab.test": ("198.51.100.99",)}))
    assert not checks["fcrdns"].ok and "198.51.100.99" in checks["fcrdns"].detail


def test_ip_outside_the_pool_fails() -> None:
    checks = judge(ROUTE, replace(good(), client_ip="198.51.100.96"))
    assert not checks["ip"].ok and "transactional" in checks["ip"].detail


def test_spf_fail_keeps_dmarc_pass_through_dkim() -> None:
    checks = judge(ROUTE, replace(good(), spf_result="fail", spf_detail="SPF fail - not authorized"))
    assert not checks["spf"].ok and "shop.test" in checks["spf"].detail
    assert checks["dmarc"].ok and "DKIM" in checks["dmarc"].detail


def test_dmarc_fails_when_neither_aligned_passes() -> None:
    ev = replace(good(), spf_result="fail", dkim=(DkimSignature("shop.test", "s2026a", False, "bad sig"),))
    checks = judge(ROUTE, ev)
    assert not checks["dkim"].ok and not checks["dmarc"].ok


def test_dkim_of_another_domain_is_not_aligned() -> None:
    checks = judge(ROUTE, replace(good(), dkim=(DkimSignature("esp.test", "x", True),)))
    assert not checks["dkim"].ok and "not aligned" in checks["dkim"].detail


def test_strict_alignment_from_dmarc() -> None:
    ev = replace(good(), dkim=(DkimSignature("mail.shop.test", "s", True),), spf_result="fail")
    assert judge(ROUTE, ev)["dmarc"].ok  # relaxed by default: mail.shop.test is in shop.test's organization
    ev = replace(ev, dmarc_records=("v=DMARC1; p=reject; adkim=s",))
    assert not judge(ROUTE, ev)["dmarc"].ok


def test_no_tls_and_no_dmarc_record() -> None:
    checks = judge(ROUTE, replace(good(), tls_protocol=None, dmarc_records=()))
    assert not checks["tls"].ok and not checks["dmarc"].ok
    assert checks["dmarc"].detail == "no DMARC record at _dmarc.shop.test"


def test_domain_of() -> None:
    assert domain_of('"A" <a@Shop.Test>') == "shop.test"
    assert domain_of("no address") == ""


def test_report_marks_exactly_the_affected_ip() -> None:
    evs = [good("198.51.100.64", "t1"), replace(good("198.51.100.65", "t2"), helo="bad.test")]
    subs = [Submission(t, "mta1", "shop.test", True) for t in ("t1", "t2")]
    report = build_report([ROUTE], subs, evs)
    verdicts = {r.ip: r.verdict for r in report.rows}
    assert verdicts == {"198.51.100.64": "pass", "198.51.100.65": "fail"}
    assert report.exit_code == 1
    assert {s.key: s.verdict for s in report.by_ip} == {"198.51.100.64": "pass", "198.51.100.65": "fail"}
    assert report.to_json()["by_domain"]["shop.test"]["verdict"] == "fail"


def test_ip_never_seen_while_others_delivered_is_a_failure() -> None:
    subs = [Submission(f"t{i}", "mta1", "shop.test", True) for i in range(4)]
    evs = [good("198.51.100.64", f"t{i}") for i in range(4)]
    report = build_report([ROUTE], subs, evs)
    row = next(r for r in report.rows if r.ip == "198.51.100.65")
    assert row.verdict == "fail" and "not in service" in row.problems[0]


def test_nothing_arrived_is_could_not_check() -> None:
    subs = [Submission("t1", "mta1", "shop.test", True)]
    report = build_report([ROUTE], subs, [], waited=90)
    assert {r.verdict for r in report.rows} == {"unknown"}
    assert report.exit_code == 3 and report.missing == ["t1 (mta1, shop.test)"]
    assert "no message arrived from mta1 for shop.test" in report.rows[0].problems[0]


def test_refused_submission_fails_the_route() -> None:
    subs = [Submission("t1", "mta1", "shop.test", False, "451 4.7.1 Service unavailable", refused=True)]
    report = build_report([ROUTE], subs, [])
    assert {r.verdict for r in report.rows} == {"fail"}
    assert "451 4.7.1" in report.rows[0].problems[0]


def test_unreachable_host_is_could_not_check() -> None:
    subs = [Submission("t1", "mta1", "shop.test", False, "cannot connect: refused")]
    assert build_report([ROUTE], subs, []).exit_code == 3


def test_rounds_stop_when_every_ip_was_seen_or_the_cap_is_reached() -> None:
    assert messages_for_round(ROUTE, set(), 0, 12) == 4
    assert messages_for_round(ROUTE, {"198.51.100.64"}, 4, 12) == 4
    assert messages_for_round(ROUTE, {"198.51.100.64", "198.51.100.65"}, 4, 12) == 0
    assert messages_for_round(ROUTE, set(), 22, 12) == 2
    assert messages_for_round(ROUTE, set(), 24, 12) == 0


POSTFIX_RECEIVED = (
    "from o64.mta1.lab.test (o64.mta1.lab.test [198.51.100.64])\n\t(using TLSv1.3 with cipher "
    "TLS_AES_256_GCM_SHA384 (256/256 bits)\n\t key-exchange X25519 server-signature RSA-PSS (2048 bits))\n\t"
    "(No client certificate requested)\n\tby sink.lab.test (Postfix) with ESMTPS id 4ABC\n\tfor <r@gmail.test>; "
    "Fri, 27 Nov 2026 20:00:00 +0000 (UTC)"
)
GMAIL_RECEIVED = (
    "from o65.mta1.example.com (o65.mta1.example.com. [198.51.100.65])\n        by mx.google.com with ESMTPS "
    "id x11si\n        for <seed@gmail.com>\n        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);"
    "\n        Fri, 27 Nov 2026 12:00:00 -0800 (PST)"
)


def test_parse_received_postfix_and_provider_forms() -> None:
    hop = parse_received(POSTFIX_RECEIVED)
    assert hop is not None and (hop.helo, hop.ip, hop.tls_protocol) == ("o64.mta1.lab.test", "198.51.100.64", "TLSv1.3")
    hop = parse_received(GMAIL_RECEIVED)
    assert hop is not None
    assert (hop.helo, hop.ip, hop.tls_protocol) == ("o65.mta1.example.com", "198.51.100.65", "TLSv1.3")
    plain = parse_received("from a.test (a.test [198.51.100.9]) by mx.test with ESMTP id 1; date")
    assert plain is not None and plain.tls_protocol is None
    assert parse_received("by localhost with LMTP") is None


def test_hop_from_fleet_picks_the_header_naming_a_fleet_ip() -> None:
    internal = "from mx.google.com (mx.google.com [10.0.0.1]) by internal.google.com with ESMTPS id 1"
    hop = hop_from_fleet([internal, GMAIL_RECEIVED], ["198.51.100.65"])
    assert hop is not None and hop.ip == "198.51.100.65"


def test_unseen_ip_with_messages_missing_is_could_not_check() -> None:
    """A message may still sit in the queue of the IP never seen: that IP cannot be judged yet."""
    subs = [Submission(f"t{i}", "mta1", "shop.test", True) for i in range(5)]
    evs = [good("198.51.100.64", f"t{i}") for i in range(4)]
    report = build_report([ROUTE], subs, evs, waited=90)
    row = next(r for r in report.rows if r.ip == "198.51.100.65")
    assert row.verdict == "unknown" and "1 accepted message(s) never arrived within 90 s" in row.problems[0]
    assert report.exit_code == 3
