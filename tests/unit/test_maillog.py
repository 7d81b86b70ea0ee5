"""Postfix log lines -> deliveries per sending IP and provider; metrics rendering."""

from __future__ import annotations

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


def test_book_counts_per_ip_provider_and_hour() -> None:
    book = maillog.DeliveryBook({"sf_198_51_100_72": "198.51.100.72"}, {"gmail": ["gmail.test"]})
    for line, ts in ((SENT, 3600.0), (SENT, 3700.0), (DEFERRED, 7300.0), (BOUNCED, 7300.0)):
        d = maillog.parse_delivery(IDENT, line, ts)
        assert d is not None
        book.add(d)
    assert book.totals == {
        ("198.51.100.72", "gmail", "sent"): 2,
        ("198.51.100.72", "yahoo.test", "deferred"): 1,
        ("198.51.100.72", "outlook.test", "bounced"): 1,
    }
    assert set(book.hours) == {"1970-01-01T01", "1970-01-01T02"}
    assert book.last_sent == {"198.51.100.72": 3700.0}
    again = maillog.DeliveryBook(book.ips, book.providers)
    again.load(book.as_dict())
    assert again.totals == book.totals and again.hours == book.hours and again.reasons == book.reasons
    summary = maillog.summarise(book.as_dict()["hours"], "1970-01-01T02", [])
    assert summary.rows == [
        {"ip": "198.51.100.72", "provider": "outlook.test", "sent": 0, "deferred": 0, "bounced": 1},
        {"ip": "198.51.100.72", "provider": "yahoo.test", "sent": 0, "deferred": 1, "bounced": 0},
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
