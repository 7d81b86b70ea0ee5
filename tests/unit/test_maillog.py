"""Postfix log lines -> deliveries per sending IP and provider; metrics rendering."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sendfleet.core import maillog, metrics

SENT = (
    "4QzYJ12abcz: to=<alice@gmail.test>, relay=sink.lab.test[198.51.100.20]:25, delay=0.31, "
    "delays=0.05/0.01/0.13/0.12, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4QzYJ1xyz)"
)
DEFERRED = (
    "4QzYJ13defz: to=<bob@yahoo.test>, relay=sink.lab.test[198.51.100.20]:25, delay=0.2, "
    "delays=0.05/0/0.1/0.05, dsn=4.7.0, status=deferred (host sink.lab.test[198.51.100.20] said: "
    "421 4.7.0 rate limited (in reply to RCPT TO command))"
)
BOUNCED = (
    "4QzYJ14ghiz: to=<carol@outlook.test>, orig_to=<c@x.test>, relay=sink.lab.test[198.51.100.20]:25, "
    "delay=0.2, delays=0/0/0.1/0.05, dsn=5.7.515, status=bounced (host sink.lab.test[198.51.100.20] said: "
    "550 5.7.515 Access denied, sending domain 12345678 does not meet authentication (in reply to end of DATA "
    "command))"
)
IDENT = "postfix/sf_198_51_100_72/smtp"
TRANSPORT_IDENT = "postfix/sf_198_51_100_72"


def test_parse_sent_deferred_bounced() -> None:
    s = maillog.parse_delivery(IDENT, SENT, 1.0)
    assert s is not None and s.status == "sent" and s.transport == "sf_198_51_100_72"
    assert s.recipient_domain == "gmail.test" and s.reason == ""
    d = maillog.parse_delivery(IDENT, DEFERRED, 2.0)
    assert d is not None and d.status == "deferred" and d.dsn == "4.7.0"
    assert d.reason == "421 4.7.0 rate limited"
    b = maillog.parse_delivery(IDENT, BOUNCED, 3.0)
    assert b is not None and b.status == "bounced" and b.recipient_domain == "outlook.test"
    assert b.reason.startswith("550 5.7.515 Access denied, sending domain # does not")


def test_lines_without_a_sending_ip_are_ignored() -> None:
    assert maillog.parse_delivery("postfix/smtp", SENT, 1.0) is None
    assert maillog.parse_delivery("postfix/retry", DEFERRED, 1.0) is None
    assert maillog.parse_delivery(IDENT, "4QzYJ12abcz: removed", 1.0) is None
    assert maillog.parse_delivery(IDENT, "connect to x[1.2.3.4]:25: Connection refused", 1.0) is None


def test_file_lines() -> None:
    parsed = maillog.parse_file_line(f"Nov 27 20:30:01 mta1 {IDENT}[812]: {SENT}\n", 2026)
    assert parsed is not None
    ts, ident, msg = parsed
    assert ident == IDENT and msg == SENT and ts == 1795811401.0
    iso = maillog.parse_file_line(f"2026-11-27T20:30:01.123456+00:00 mta1 {IDENT}[812]: {SENT}", 2026)
    assert iso is not None and iso[1] == IDENT


CLASSES = ("gmail", "yahoo", "outlook")


def test_book_counts_per_ip_class_and_hour() -> None:
    book = maillog.DeliveryBook({"sf_198_51_100_72": "198.51.100.72"}, CLASSES)
    # the transport says the class, whatever the recipient domain (gmail.test through the IP's own transport
    # is `other`; yahoo.test and outlook.test through their class transports are yahoo and outlook)
    for ident, line, ts in ((IDENT, SENT, 3600.0), (f"{TRANSPORT_IDENT}_gmail/smtp", SENT, 3700.0),
                            (f"{TRANSPORT_IDENT}_yahoo/smtp", DEFERRED, 7300.0),
                            (f"{TRANSPORT_IDENT}_outlook/smtp", BOUNCED, 7300.0)):
        d = maillog.parse_delivery(ident, line, ts)
        assert d is not None
        book.add(d)
    assert book.totals == {
        ("198.51.100.72", "other", "sent"): 1,
        ("198.51.100.72", "gmail", "sent"): 1,
        ("198.51.100.72", "yahoo", "deferred"): 1,
        ("198.51.100.72", "outlook", "bounced"): 1,
    }
    assert set(book.hours) == {"1970-01-01T01", "1970-01-01T02"}
    assert book.last_sent == {"198.51.100.72": 3700.0}
    again = maillog.DeliveryBook(book.ips, book.classes)
    again.load(book.as_dict())
    assert again.totals == book.totals and again.hours == book.hours and again.reasons == book.reasons
    summary = maillog.summarise(book.as_dict()["hours"], "1970-01-01T02", [], CLASSES)
    assert summary.rows == [
        {"ip": "198.51.100.72", "provider": "outlook", "sent": 0, "deferred": 0, "bounced": 1},
        {"ip": "198.51.100.72", "provider": "yahoo", "sent": 0, "deferred": 1, "bounced": 0},
    ]
    book.prune(1, 7300.0 + 3600)
    assert set(book.hours) == {"1970-01-01T02"}


def test_transport_names_decode_to_ips() -> None:
    assert maillog.ip_from_transport("sf_198_51_100_72") == "198.51.100.72"
    assert maillog.ip_from_transport("sf_20010db8005f00000000000000000042") == "2001:db8:5f::42"
    assert maillog.ip_from_transport("relay") is None


def test_metrics_render_and_parse() -> None:
    fam = metrics.Family("sendfleet_delivery_total", "x", "counter")
    fam.add(3, ip="198.51.100.72", provider="gmail", status="sent")
    fam.add(1, ip="198.51.100.72", provider="yahoo", status="deferred", reason='say "hi"\n')
    text = metrics.render([fam, metrics.Family("sendfleet_monitor_last_run_timestamp_seconds", "t")])
    assert "# TYPE sendfleet_delivery_total counter" in text
    parsed = metrics.parse(text)
    rows = metrics.samples_of(parsed, "sendfleet_delivery_total")
    assert ({"ip": "198.51.100.72", "provider": "gmail", "status": "sent"}, 3.0) in rows
    assert any(labels.get("reason") == 'say "hi"\n' for labels, _ in rows)


def test_class_transports_count_under_their_ip() -> None:
    assert maillog.transport_of("postfix/sf_198_51_100_72_gmail/smtp") == "sf_198_51_100_72_gmail"
    assert maillog.ip_from_transport("sf_198_51_100_72_gmail") == "198.51.100.72"
    assert maillog.ip_from_transport("sf_20010db8005f00000000000000000042_abc") == "2001:db8:5f::42"
    assert maillog.class_of("sf_198_51_100_72_gmail") == "gmail"
    assert maillog.class_of("sf_198_51_100_72") == "other" and maillog.class_of("relay") == "other"
    assert maillog.base_transport("sf_198_51_100_72_gmail") == "sf_198_51_100_72"
    assert maillog.base_transport("relay") is None
    d = maillog.parse_delivery("postfix/sf_198_51_100_72_gmail/smtp", SENT, 1.0)
    assert d is not None and d.transport == "sf_198_51_100_72_gmail" and d.klass == "gmail"
    plain = maillog.parse_delivery(IDENT, SENT, 1.0)
    assert plain is not None and plain.klass == "other"
    # the book's own name for the IP wins over the one the transport encodes
    book = maillog.DeliveryBook({"sf_198_51_100_72": "ip-a"}, CLASSES)
    book.add(d)
    book.add(plain)
    g = maillog.parse_delivery("postfix/sf_198_51_100_73_gmail/smtp", SENT, 1.0)
    assert g is not None
    book.add(g)
    assert book.totals == {("ip-a", "gmail", "sent"): 1, ("ip-a", "other", "sent"): 1,
                           ("198.51.100.73", "gmail", "sent"): 1}


GMAIL_421 = (
    "4QzYJ15jklz: to=<Dan@Gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.102.27]:25, conn_use=3, "
    "delay=0.52, delays=0.1/0/0.2/0.22, dsn=4.7.28, status=deferred (host gmail-smtp-in.l.google.com"
    "[142.250.102.27] said: 421-4.7.28 [198.51.100.72      15] Our system has detected an unusual rate of "
    "421-4.7.28 unsolicited mail originating from your IP address. To protect our 421-4.7.28 users from spam, "
    "mail sent from your IP address has been temporarily 421-4.7.28 rate limited. Please visit 421 4.7.28 "
    "https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk Email Senders Guidelines. "
    "d2e1a72fcca58-70b- gsmtp (in reply to RCPT TO command))"
)
OUTLOOK_550 = (
    "4QzYJ16mnoz: to=<erin@outlook.com>, relay=outlook-com.olc.protection.outlook.com[52.101.42.9]:25, "
    "delay=1.1, delays=0.1/0/0.6/0.4, dsn=5.7.1, status=bounced (host outlook-com.olc.protection.outlook.com"
    "[52.101.42.9] said: 550 5.7.1 Unfortunately, messages from [198.51.100.72] weren't sent. Please contact "
    "your Internet service provider since part of their network is on our block list (S3150). You can also "
    "refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. "
    "[AM4PEPF00027A6C.eurprd04.prod.outlook.com 2026-11-27T20:30:01.000Z 08DCF1234] (in reply to MAIL FROM "
    "command))"
)
YAHOO_421 = (
    "4QzYJ17pqrz: to=<fay@yahoo.com>, relay=mta6.am0.yahoodns.net[67.195.204.77]:25, delay=2.3, "
    "delays=0.1/0/2.2/0, dsn=4.7.0, status=deferred (host mta6.am0.yahoodns.net[67.195.204.77] said: 421 4.7.0 "
    "[TSS04] Messages from 198.51.100.72 temporarily deferred due to unexpected volume or user complaints - "
    "4.16.55.1; see https://postmaster.yahooinc.com/error-codes (in reply to MAIL FROM command))"
)


def test_reply_of_a_multi_line_gmail_421() -> None:
    r = maillog.parse_reply("postfix/sf_198_51_100_72_gmail/smtp", GMAIL_421, 5.0)
    assert r == maillog.Reply(
        time=5.0, queue_id="4QzYJ15jklz", transport="sf_198_51_100_72_gmail", ip="198.51.100.72", klass="gmail",
        recipient="Dan@Gmail.com", recipient_domain="gmail.com", status="deferred", dsn="4.7.28", code=421,
        enhanced="4.7.28", text=GMAIL_421[GMAIL_421.index("421-4.7.28 [") : GMAIL_421.index(" (in reply")],
        command="RCPT TO",
    )
    assert r.text.startswith("421-4.7.28 [198.51.100.72      15] Our system has detected an unusual rate of")
    assert r.text.endswith("Senders Guidelines. d2e1a72fcca58-70b- gsmtp")


def test_replies_with_parentheses_and_brackets_in_the_text() -> None:
    r = maillog.parse_reply(IDENT, OUTLOOK_550, 6.0)
    assert r is not None and (r.status, r.code, r.enhanced, r.command, r.klass) == (
        "bounced", 550, "5.7.1", "MAIL FROM", "other")
    assert "(S3150)" in r.text and r.text.endswith("08DCF1234]")
    y = maillog.parse_reply("postfix/sf_20010db8005f00000000000000000042_yahoo/smtp", YAHOO_421, 7.0)
    assert y is not None and (y.ip, y.klass, y.code, y.enhanced) == ("2001:db8:5f::42", "yahoo", 421, "4.7.0")
    assert y.text.startswith("421 4.7.0 [TSS04] Messages from 198.51.100.72 temporarily deferred")
    assert y.text.endswith("error-codes")
    b = maillog.parse_reply(IDENT, BOUNCED, 3.0)
    assert b is not None and b.recipient == "carol@outlook.test" and b.command == "end of DATA"
    assert b.text.startswith("550 5.7.515 Access denied, sending domain 12345678")


def _line(dsn: str, status: str, reason: str) -> str:
    return f"4QzYJ18stuz: to=<gus@x.test>, relay=none, delay=30, delays=0/0/30/0, dsn={dsn}, status={status} ({reason})"


def test_replies_without_a_remote_code() -> None:
    cases = {
        "connect to mx.x.test[198.51.100.25]:25: Connection refused": None,
        "connect to mx.x.test[198.51.100.25]:25: Connection timed out": None,
        "conversation with mx.x.test[198.51.100.25] timed out while receiving the initial server greeting": None,
        "conversation with mx.x.test[198.51.100.25] timed out while sending end of data -- message may be sent "
        "more than once": "end of data",
        "lost connection with mx.x.test[198.51.100.25] while sending RCPT TO": "RCPT TO",
        "delivery temporarily suspended: connect to mx.x.test[198.51.100.25]:25: Connection refused": None,
        "Host or domain name not found. Name service error for name=x.test type=MX: Host not found, try again":
            None,
    }
    for reason, command in cases.items():
        r = maillog.parse_reply(IDENT, _line("4.4.1", "deferred", reason), 8.0)
        assert r is not None and r.code is None and r.enhanced == "4.4.1", reason
        assert r.text == reason and r.command == command, reason


def test_reply_codes_without_an_enhanced_code_and_greetings() -> None:
    r = maillog.parse_reply(IDENT, _line("5.0.0", "bounced", "host mx[198.51.100.25] said: 554 Transaction failed "
                                         "(in reply to end of DATA command)"), 9.0)
    assert r is not None and (r.code, r.enhanced, r.text) == (554, "5.0.0", "554 Transaction failed")
    g = maillog.parse_reply(IDENT, _line("4.7.0", "deferred", "delivery temporarily suspended: host mx[198.51.100.25] "
                                         "refused to talk to me: 421 4.7.0 Try again later"), 9.0)
    assert g is not None and (g.code, g.enhanced, g.text, g.command) == (421, "4.7.0", "421 4.7.0 Try again later",
                                                                         None)
    s = maillog.parse_reply(IDENT, SENT, 1.0)
    assert s is not None and (s.status, s.code, s.enhanced) == ("sent", 250, "2.0.0")
    assert s.text == "250 2.0.0 Ok: queued as 4QzYJ1xyz" and s.command is None


def test_reply_only_for_sendfleet_delivery_lines() -> None:
    assert maillog.parse_reply("postfix/smtp", DEFERRED, 1.0) is None
    assert maillog.parse_reply("postfix/relay/smtp", DEFERRED, 1.0) is None
    assert maillog.parse_reply("postfix/retry", DEFERRED, 1.0) is None
    assert maillog.parse_reply("postfix/sf_198_51_100_72/qmgr", DEFERRED, 1.0) is None
    assert maillog.parse_reply(IDENT, "4QzYJ12abcz: removed", 1.0) is None
    assert maillog.parse_reply(IDENT, _line("5.0.0", "expired", "x"), 1.0) is None
    assert maillog.parse_reply("x/x_198_51_100_72/smtp", DEFERRED, 1.0, prefix="x") is not None


FRAGMENTS = [GMAIL_421, OUTLOOK_550, YAHOO_421, DEFERRED, BOUNCED, SENT, "said: ", "(in reply to ", " command)",
             "dsn=", "status=", "to=<", "relay=", "421-4.7.28 ", "while sending ", ")", "(", " ", "\n", "\x00"]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=40), st.sampled_from([IDENT, "postfix/sf_198_51_100_72_gmail/smtp"])),
    st.one_of(
        st.text(),
        st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=12).map("".join),
    ),
)
def test_parse_reply_never_raises(ident: str, message: str) -> None:
    r = maillog.parse_reply(ident, message, 0.0)
    assert r is None or (r.status in maillog.REPLY_STATUSES and r.text in message)


def test_reasons_keep_the_whole_reply_and_group_greetings_refused() -> None:
    said = "host mx[198.51.100.25] said: 451 4.7.650 Rate limited (S775) (in reply to MAIL FROM command)"
    o = maillog.parse_delivery(IDENT, _line("4.7.650", "deferred", said), 1.0)
    assert o is not None and o.reason == "451 4.7.650 Rate limited (S775)"  # not cut at its first parenthesis
    refused = "delivery temporarily suspended: host mx[198.51.100.25] refused to talk to me: 421 4.7.0 Try again later"
    g = maillog.parse_delivery(IDENT, _line("4.7.0", "deferred", refused), 1.0)
    assert g is not None and g.reason == "421 4.7.0 Try again later"


def test_an_older_state_file_labelled_by_domain_loads_into_other() -> None:
    # delivery.json written when the label was the recipient domain (or a name of a domain list)
    old = {
        "totals": [
            {"ip": "198.51.100.72", "provider": "gmail", "status": "sent", "count": 5},
            {"ip": "198.51.100.72", "provider": "smallbiz.test", "status": "sent", "count": 2},
            {"ip": "198.51.100.72", "provider": "example.org", "status": "sent", "count": 3},
            {"ip": "198.51.100.72", "provider": "unknown", "status": "bounced", "count": 1},
        ],
        "hours": {"1970-01-01T01": [{"ip": "198.51.100.72", "provider": "example.org", "status": "deferred",
                                      "count": 7}]},
        "reasons": [
            {"ip": "198.51.100.72", "provider": "a.test", "status": "deferred", "reason": "421 busy", "count": 2},
            {"ip": "198.51.100.72", "provider": "b.test", "status": "deferred", "reason": "421 busy", "count": 3},
        ],
    }
    book = maillog.DeliveryBook({"sf_198_51_100_72": "198.51.100.72"}, CLASSES)
    book.load(old)
    assert book.totals == {
        ("198.51.100.72", "gmail", "sent"): 5,
        ("198.51.100.72", "other", "sent"): 5,
        ("198.51.100.72", "other", "bounced"): 1,
    }
    assert book.hours == {"1970-01-01T01": {("198.51.100.72", "other", "deferred"): 7}}
    assert book.reasons == {("198.51.100.72", "other", "deferred", "421 busy"): 5}
    # a class the config no longer has counts as other too
    assert maillog.DeliveryBook({}, ("yahoo",)).classes == ("yahoo",)
    assert maillog.provider_label("gmail", ("yahoo",)) == "other"
    assert maillog.provider_label("other", ()) == "other"
    summary = maillog.summarise(old["hours"], "1970-01-01T00", old["reasons"], CLASSES)
    assert summary.rows == [{"ip": "198.51.100.72", "provider": "other", "sent": 0, "deferred": 7, "bounced": 0}]
    assert summary.reasons == [
        {"ip": "198.51.100.72", "provider": "other", "status": "deferred", "reason": "421 busy", "count": 5}
    ]


SENDER_DOMAINS = {"shop.test": "bounces.shop.test", "news.test": "bounces.news.test"}


def envelope(qid: str, sender: str) -> tuple[str, str]:
    return "postfix/qmgr", f"{qid}: from=<{sender}>, size=1834, nrcpt=1 (queue active)"


def delivery(qid: str, status: str, klass: str = "") -> tuple[str, str]:
    text = {"sent": "250 2.0.0 Ok", "deferred": "host mx[198.51.100.20] said: 421 4.7.0 busy (in reply to RCPT TO "
            "command)", "bounced": "host mx[198.51.100.20] said: 550 5.1.1 unknown (in reply to RCPT TO command)"}
    dsn = {"sent": "2.0.0", "deferred": "4.7.0", "bounced": "5.1.1"}[status]
    return (f"postfix/sf_198_51_100_72{klass}/smtp",
            f"{qid}: to=<a@gmail.test>, relay=mx[198.51.100.20]:25, delay=0.1, dsn={dsn}, status={status} "
            f"({text[status]})")


def test_sender_domain_of_verp_bounce_and_plain_senders() -> None:
    assert maillog.sender_domain("b+a=gmail.test@bounces.shop.test", SENDER_DOMAINS) == "shop.test"
    assert maillog.sender_domain("b+x=y@BOUNCES.NEWS.TEST", SENDER_DOMAINS) == "news.test"
    assert maillog.sender_domain("info@shop.test", SENDER_DOMAINS) == "shop.test"
    assert maillog.sender_domain("someone@elsewhere.test", SENDER_DOMAINS) == "other"
    assert maillog.sender_domain("", SENDER_DOMAINS) == "other"  # the null sender (a bounce of ours)


def test_counts_per_sender_domain_follow_qmgr_envelopes() -> None:
    book = maillog.DeliveryBook({"sf_198_51_100_72": "198.51.100.72"}, CLASSES, SENDER_DOMAINS)
    lines = [
        envelope("Q1", "b+a=gmail.test@bounces.shop.test"),
        envelope("Q2", "b+b=gmail.test@bounces.news.test"),
        envelope("Q3", "noreply@elsewhere.test"),
        delivery("Q1", "deferred", "_gmail"),
        delivery("Q1", "sent", "_gmail"),
        delivery("Q2", "bounced"),
        delivery("Q3", "sent"),
        delivery("Q9", "sent"),  # qmgr's line not seen: other
        ("postfix/qmgr", "Q1: removed"),
        ("postfix/cleanup", "Q4: message-id=<x@y>"),  # not one of ours
    ]
    fed = [book.feed(ident, msg, 3600.0 * 2) for ident, msg in lines]
    assert fed == [True] * 9 + [False]
    assert book.domain_totals == {("shop.test", "deferred"): 1, ("shop.test", "sent"): 1,
                                  ("news.test", "bounced"): 1, ("other", "sent"): 2}
    assert set(book.envelopes) == {"Q2", "Q3"}  # Q1 left the queue
    data = book.as_dict()
    assert data["by_sender_domain"] == {"1970-01-01T02": {
        "news.test": {"sent": 0, "deferred": 0, "bounced": 1},
        "other": {"sent": 2, "deferred": 0, "bounced": 0},
        "shop.test": {"sent": 1, "deferred": 1, "bounced": 0}}}
    # per IP and class the same lines count as before
    assert book.totals[("198.51.100.72", "gmail", "sent")] == 1
    again = maillog.DeliveryBook({}, CLASSES, SENDER_DOMAINS)
    again.load(data)
    assert (again.domain_totals, again.domain_hours, again.envelopes) == \
        (book.domain_totals, book.domain_hours, book.envelopes)
    # a sender domain the config no longer has loads into other
    fewer = maillog.DeliveryBook({}, CLASSES, {"shop.test": "bounces.shop.test"})
    fewer.load(data)
    assert fewer.domain_totals[("other", "bounced")] == 1
    fewer.prune(1, 3600.0 * 5)  # the hour and the envelopes of before the kept hours go
    assert fewer.domain_hours == {} and fewer.envelopes == {}


def test_suppression_refusals_per_sender_domain() -> None:
    reject = ("NOQUEUE: reject: RCPT from client.lab.test[198.51.100.5]: 550 5.1.1 <gone@gmail.test>: "
              "Recipient address rejected: 550 5.1.1 <gone@gmail.test>: suppressed since 2026-12-01 (hard-bounce); "
              "from=<b+gone=gmail.test@bounces.shop.test> to=<gone@gmail.test> proto=ESMTP helo=<client>")
    other_reject = ("NOQUEUE: reject: RCPT from client[198.51.100.5]: 554 5.7.1 <x@y.test>: Relay access denied; "
                    "from=<a@shop.test> to=<x@y.test> proto=ESMTP helo=<client>")
    book = maillog.DeliveryBook({}, CLASSES, SENDER_DOMAINS)
    assert book.feed("postfix/submission/smtpd", reject, 1.0)
    assert book.feed("postfix/smtpd", reject.replace("bounces.shop.test", "x.test"), 1.0)
    assert not book.feed("postfix/smtpd", other_reject, 1.0)
    assert not book.feed("postfix/qmgr", reject, 1.0)  # only smtpd refuses recipients
    assert book.refusals == {"shop.test": 1, "other": 1}
    again = maillog.DeliveryBook({}, CLASSES, SENDER_DOMAINS)
    again.load(book.as_dict())
    assert again.refusals == book.refusals
