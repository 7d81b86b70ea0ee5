"""sendfleet.core.feedback and sendfleet.core.reports on messages as receivers send them: Postfix, Gmail and
Exchange DSNs, a delayed DSN, Yahoo CFL and Microsoft JMRP complaints, DMARC aggregate reports (XML, gzip, zip)
and TLS reports (JSON, gzip); the bounce classification over the shipped provider classes; VERP decoding."""

from __future__ import annotations

import gzip
import io
import zipfile
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from sendfleet.core import feedback, shaping
from sendfleet.core.feedback import Bounce, Complaint, FeedbackParseError, Parsed, classify_bounce, verp_decode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feedback"
BOUNCE_DOMAINS = {"bounces.shop.test": "shop.test", "bounces.news.test": "news.test"}
FLEET = ["198.51.100.70", "198.51.100.71", "198.51.100.72", "198.51.100.73"]
CLASSES = shaping.parse_classes(shaping.default_data())


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(raw: bytes, rcpt: str, fleet: list[str] | None = None) -> Parsed:
    return feedback.parse_message(raw, rcpt, bounce_domains=BOUNCE_DOMAINS, fleet_ips=FLEET if fleet is None else fleet,
                                  rules=CLASSES, limits=feedback.DEFAULT_LIMITS)


# ---------------------------------------------------------------------------------------------------- DSN


def test_postfix_dsn_hard_bounce() -> None:
    parsed = parse(fixture("postfix_dsn_hard.eml"), "b+nobody=gmail.test@bounces.shop.test")
    assert parsed.kind == "dsn" and not parsed.complaints and parsed.dmarc is None
    (b,) = parsed.bounces
    assert b.recipient == "nobody@gmail.test"
    assert b.sender_domain == "shop.test"
    assert (b.action, b.status, b.kind) == ("failed", "5.1.1", "hard")
    assert b.diagnostic.startswith("550-5.1.1 The email account that you tried to reach does not exist. Please try ")
    assert "\n" not in b.diagnostic and "smtp;" not in b.diagnostic
    assert b.remote_mta == "gmail-smtp-in.l.google.com"
    assert b.reporting_mta == "mta1.shop.test"
    # our own Postfix returns the headers as queued: no hop by a fleet IP (10.20.0.5 is the submitter)
    assert b.source_ip is None


def test_postfix_delayed_dsn_is_soft() -> None:
    (b,) = parse(fixture("postfix_dsn_delayed.eml"), "b+carol=slow.test@bounces.shop.test").bounces
    assert (b.recipient, b.action, b.status, b.kind) == ("carol@slow.test", "delayed", "4.4.7", "soft")
    assert b.diagnostic == "connect to mx.slow.test[198.18.7.9]:25: Connection timed out"
    assert b.remote_mta is None


def test_gmail_dsn_takes_the_verp_recipient_and_the_fleet_ip_of_the_returned_message() -> None:
    (b,) = parse(fixture("gmail_dsn.eml"), "b+dave=workspace.test@bounces.news.test").bounces
    # Final-Recipient is where the mail was forwarded; we sent to the VERP-encoded address
    assert b.recipient == "dave@workspace.test"
    assert b.sender_domain == "news.test"
    assert (b.status, b.kind) == ("5.1.1", "hard")
    assert b.source_ip == "198.51.100.72"
    assert b.remote_mta == "mx.forward.test"
    assert b.reporting_mta == "googlemail.com"


def test_gmail_dsn_without_verp_uses_the_dsn_recipient_and_the_returned_return_path() -> None:
    raw = fixture("gmail_dsn.eml")
    # the envelope recipient does not decode, the returned message's Return-Path does
    (b,) = parse(raw, "postmaster@bounces.news.test").bounces
    assert (b.recipient, b.sender_domain) == ("dave@workspace.test", "news.test")
    no_return_path = raw.replace(b"Return-Path: <b+dave=workspace.test@bounces.news.test>\n", b"")
    (b,) = parse(no_return_path, "postmaster@bounces.news.test").bounces
    assert b.recipient == "dave.old@forward.test"  # Final-Recipient (no Original-Recipient)
    assert b.sender_domain == "news.test"  # DKIM d=news.test of the returned message


def test_exchange_dsn() -> None:
    (b,) = parse(fixture("exchange_dsn.eml"), "b+erin=contoso.test@bounces.shop.test").bounces
    assert (b.recipient, b.status, b.kind) == ("erin@contoso.test", "5.1.10", "hard")
    assert b.diagnostic == "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    assert b.source_ip == "198.51.100.73"  # 'Received: from mta1.shop.test (198.51.100.73) by ...'
    assert b.reporting_mta == "am6pr04mb1234.eurprd04.prod.outlook.com"


def test_exchange_dsn_without_verp_keeps_the_local_part_and_lowers_the_domain() -> None:
    (b,) = parse(fixture("exchange_dsn.eml"), "postmaster@bounces.shop.test").bounces
    assert b.recipient == "Erin@contoso.test"  # Original-Recipient: rfc822;Erin@Contoso.test
    assert b.sender_domain == "shop.test"
    (b,) = parse(fixture("exchange_dsn.eml"), "postmaster@bounces.shop.test", fleet=[]).bounces
    assert b.source_ip is None


def _dsn(blocks: str, *, envelope_extra: str = "") -> bytes:
    return f"""From: MAILER-DAEMON@mta1.shop.test
To: b+x=y.test@bounces.shop.test{envelope_extra}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

The mail system
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mta1.shop.test

{blocks}
--B--
""".encode()


def test_dsn_with_several_recipients_reports_each_failed_or_delayed_one() -> None:
    raw = _dsn("""Final-Recipient: rfc822; a@one.test
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full

Final-Recipient: rfc822; b@two.test
Action: delivered
Status: 2.0.0

Final-Recipient: rfc822; c@three.test
Action: failed
Status: 5.7.1
Diagnostic-Code: smtp; 554 5.7.1 Service unavailable; Client host [198.51.100.70] blocked using zen.spamhaus.org
""")
    bounces = parse(raw, "mta-bounces@bounces.shop.test").bounces
    assert [(b.recipient, b.kind) for b in bounces] == [("a@one.test", "soft"), ("c@three.test", "block")]
    # with a VERP envelope recipient, it names the block whose own address it is; the others keep theirs
    bounces = parse(raw, "b+c=three.test@bounces.shop.test").bounces
    assert [(b.recipient, b.sender_domain) for b in bounces] == [("a@one.test", "shop.test"),
                                                                 ("c@three.test", "shop.test")]


def test_dsn_status_comes_from_the_diagnostic_when_the_field_is_missing() -> None:
    raw = _dsn("""Final-Recipient: rfc822; a@one.test
Action: failed
Diagnostic-Code: smtp; 550 5.1.1 <a@one.test>: Recipient address rejected: User unknown
""")
    (b,) = parse(raw, "x@bounces.shop.test").bounces
    assert (b.status, b.kind) == ("5.1.1", "hard")


def test_dsn_with_only_delivered_recipients_is_a_parse_error() -> None:
    raw = _dsn("Final-Recipient: rfc822; a@one.test\nAction: delivered\nStatus: 2.0.0\n")
    with pytest.raises(FeedbackParseError, match="no failed or delayed recipient"):
        parse(raw, "x@bounces.shop.test")


def test_dsn_without_a_readable_recipient_is_a_parse_error() -> None:
    raw = _dsn("Final-Recipient: rfc822; not an address\nAction: failed\nStatus: 5.1.1\n")
    with pytest.raises(FeedbackParseError, match="no readable recipient"):
        parse(raw, "x@bounces.shop.test")


def test_exim_plain_text_bounce_at_a_verp_address() -> None:
    # Exim before 4.83 sent bounces as plain text, with the returned message inline
    parsed = parse(fixture("exim_plain_bounce.eml"), "b+greg=oldisp.test@bounces.shop.test")
    assert parsed.bounces == (Bounce(
        "greg@oldisp.test", "shop.test", "failed", "5.1.1", "hard",
        "550 5.1.1 <greg@oldisp.test>: Recipient address rejected: User unknown in virtual mailbox table",
        None, None),)


def test_plain_text_bounce_with_the_returned_message_attached() -> None:
    raw = (b"From: MAILER-DAEMON@x.test\nSubject: Returned mail: see transcript for details\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
           b"----- Transcript of session follows -----\n... while talking to mx.x.test.:\n"
           b">>> RCPT To:<ann@x.test>\n<<< 550-5.7.1 [198.51.100.70] blocked using zen.spamhaus.org\n\n"
           b"--B\nContent-Type: message/rfc822\n\nReceived: from mta1.shop.test ([198.51.100.70]) by mx.x.test\n"
           b"Subject: hi\n\nhi\n--B--\n")
    (b,) = parse(raw, "b+ann=x.test@bounces.shop.test").bounces
    assert (b.recipient, b.status, b.kind, b.source_ip) == ("ann@x.test", "5.7.1", "block", "198.51.100.70")
    assert b.diagnostic == "550-5.7.1 [198.51.100.70] blocked using zen.spamhaus.org"


def test_qmail_plain_text_bounce_at_a_verp_address() -> None:
    (b,) = parse(fixture("qmail_plain_bounce.eml"), "b+hal=tinyhost.test@bounces.news.test").bounces
    assert (b.recipient, b.sender_domain, b.status, b.kind) == ("hal@tinyhost.test", "news.test", "5.2.1", "hard")
    assert b.diagnostic == "550 5.2.1 <hal@tinyhost.test>: mailbox disabled"
    assert b.source_ip is None  # the copy is in the text, not a MIME part


@pytest.mark.parametrize(("raw", "rcpt", "error"), [
    # not at a VERP address: nothing says whose bounce it is
    (b"From: MAILER-DAEMON@old.test\nSubject: failure notice\n\n<a@old.test>: 550 5.1.1 user unknown\n",
     "postmaster@bounces.shop.test", "not a DSN, ARF report, DMARC or TLS report"),
    # an auto-reply at the VERP address: neither from a mailer daemon nor a bounce's subject
    (b"From: Alice <a@old.test>\nSubject: Out of office\n\nBack on Monday; 550 5.1.1 is a code I like\n",
     "b+a=old.test@bounces.shop.test", "not a DSN, ARF report, DMARC or TLS report"),
    # a bounce that names no permanent reply
    (b"From: MAILER-DAEMON@old.test\nSubject: Warning: message delayed\n\n451 4.3.0 try again\n",
     "b+a=old.test@bounces.shop.test", "names no 5xx 5.x.x reply"),
    (b"From: postmaster@old.test\nSubject: Undeliverable\n\nit did not work\n",
     "b+a=old.test@bounces.shop.test", "names no 5xx 5.x.x reply"),
], ids=["no-verp", "auto-reply", "only-4xx", "no-reply"])
def test_free_text_that_is_not_simple_is_a_parse_error(raw: bytes, rcpt: str, error: str) -> None:
    with pytest.raises(FeedbackParseError, match=error):
        parse(raw, rcpt)


# ---------------------------------------------------------------------------------------------------- ARF


def test_yahoo_cfl_recipient_comes_from_the_verp_return_path() -> None:
    parsed = parse(fixture("yahoo_cfl.eml"), "fbl@bounces.shop.test")
    assert parsed.kind == "arf" and not parsed.bounces
    assert parsed.complaints == (Complaint(
        recipient="Carol.Smith@yahoo.test", sender_domain="shop.test", source_ip="198.51.100.70",
        feedback_type="abuse", reporter="arf.mail.yahoo.com", arrival="2026-12-02T10:00:03+00:00",
        user_agent="Yahoo!-Mail-Feedback/2.0"),)


def test_microsoft_jmrp() -> None:
    (c,) = parse(fixture("microsoft_jmrp.eml"), "fbl@bounces.news.test").complaints
    assert (c.recipient, c.sender_domain, c.source_ip) == ("frank@outlook.test", "news.test", "198.51.100.72")
    assert (c.feedback_type, c.reporter) == ("abuse", "hotmail.com")
    assert c.user_agent == "Microsoft Junk Mail Reporting Program"
    assert c.arrival == "2026-12-02T18:58:00+00:00"


def test_jmrp_without_verp_takes_microsofts_original_recipient_and_the_dkim_domain() -> None:
    raw = fixture("microsoft_jmrp.eml").replace(b"Return-Path: <b+frank=outlook.test@bounces.news.test>\n", b"")
    (c,) = parse(raw, "fbl@bounces.news.test").complaints
    assert c.recipient == "frank@outlook.test"  # X-HmXmrOriginalRecipient
    assert c.sender_domain == "news.test"  # DKIM d=mail.news.test, below a sender domain


def test_arf_source_ip_outside_the_fleet_falls_back_to_received() -> None:
    raw = fixture("microsoft_jmrp.eml").replace(b"Source-IP: 198.51.100.72", b"Source-IP: 198.18.99.1")
    (c,) = parse(raw, "fbl@bounces.news.test").complaints
    assert c.source_ip == "198.51.100.72"  # 'Received: from mta1.news.test ([198.51.100.72]) by ...'
    (c,) = parse(raw, "fbl@bounces.news.test", fleet=["198.51.100.99"]).complaints
    assert c.source_ip is None


def _arf(fields: str, returned: str) -> bytes:
    return f"""From: fbl@isp.test
To: abuse@bounces.shop.test
Subject: abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="B"

--B
Content-Type: text/plain

An abuse report.
--B
Content-Type: message/feedback-report

{fields}
--B
Content-Type: text/rfc822-headers

{returned}
--B--
""".encode()


def test_arf_original_rcpt_to_and_original_mail_from() -> None:
    raw = _arf("Feedback-Type: fraud\nVersion: 1\nOriginal-Rcpt-To: <Gina@ISP.test>\n"
               "Arrival-Date: Thu, 3 Dec 2026 01:02:03 +0100\n",
               "From: Shop <news@shop.test>\nSubject: x\n")
    (c,) = parse(raw, "abuse@bounces.shop.test").complaints
    assert (c.recipient, c.sender_domain, c.feedback_type) == ("Gina@isp.test", "shop.test", "fraud")
    assert c.arrival == "2026-12-03T00:02:03+00:00"
    assert (c.reporter, c.user_agent, c.source_ip) == ("isp.test", None, None)
    # the VERP Original-Mail-From wins over what the reporter says the recipient was
    raw = _arf("Feedback-Type: abuse\nOriginal-Mail-From: <b+hank=isp.test@bounces.news.test>\n"
               "Original-Rcpt-To: <someone-else@isp.test>\n", "Subject: x\n")
    (c,) = parse(raw, "abuse@bounces.shop.test").complaints
    assert (c.recipient, c.sender_domain) == ("hank@isp.test", "news.test")


def test_arf_with_a_redacted_recipient_and_no_verp_is_a_parse_error() -> None:
    raw = _arf("Feedback-Type: abuse\nOriginal-Rcpt-To: <redacted@isp.test>\n", "From: news@shop.test\n")
    with pytest.raises(FeedbackParseError, match="ARF: no recipient"):
        parse(raw, "abuse@bounces.shop.test")


def test_arf_without_feedback_type_is_a_parse_error() -> None:
    raw = _arf("Version: 1\nOriginal-Rcpt-To: <a@isp.test>\n", "From: news@shop.test\n")
    with pytest.raises(FeedbackParseError, match="Feedback-Type"):
        parse(raw, "abuse@bounces.shop.test")


def test_the_structure_wins_over_the_address() -> None:
    # an ARF report sent to a bounce (VERP) address is a complaint, not a bounce
    raw = _arf("Feedback-Type: abuse\n", "From: news@shop.test\n")
    parsed = parse(raw, "b+ivy=isp.test@bounces.shop.test")
    assert parsed.kind == "arf" and parsed.complaints[0].recipient == "ivy@isp.test"


# -------------------------------------------------------------------------------------------- DMARC, TLS


def _with_attachment(data: bytes, ctype: str, filename: str | None, *, inline: bool = False) -> bytes:
    msg = MIMEMultipart()
    msg["From"] = "noreply-dmarc-support@google.com"
    msg["To"] = "dmarc@bounces.shop.test"
    msg["Subject"] = "Report domain: shop.test Submitter: google.com Report-ID: <9391651994964116463>"
    msg.attach(MIMEText("This is an aggregate report from google.com.", "plain"))
    subtype = ctype.split("/")[1]
    if inline:
        part = MIMEText(data.decode(), subtype)
    else:
        part = MIMEApplication(data, subtype)
        part.replace_header("Content-Type", ctype)
    if filename:
        part.add_header("Content-Disposition", "attachment", filename=filename)
    msg.attach(part)
    return msg.as_bytes()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


XML = fixture("dmarc_google.xml")
NAME = "google.com!shop.test!1796169600!1796255999"


@pytest.mark.parametrize(("data", "ctype", "filename", "inline"), [
    (XML, "text/xml", f"{NAME}.xml", True),
    (gzip.compress(XML), "application/gzip", f"{NAME}.xml.gz", False),
    (_zip(f"{NAME}.xml", XML), "application/zip", f"{NAME}.zip", False),
    (_zip(f"{NAME}.xml", XML), "application/octet-stream", f"{NAME}.zip", False),
    (gzip.compress(XML), "application/octet-stream", f"{NAME}.xml.gz", False),
], ids=["xml", "gzip", "zip", "octet-zip", "octet-gzip"])
def test_dmarc_aggregate_report(data: bytes, ctype: str, filename: str, inline: bool) -> None:
    parsed = parse(_with_attachment(data, ctype, filename, inline=inline), "dmarc@bounces.shop.test")
    assert parsed.kind == "dmarc" and parsed.dmarc is not None and not parsed.bounces
    r = parsed.dmarc
    assert (r.org_name, r.report_id, r.domain, r.policy) == ("google.com", "9391651994964116463", "shop.test",
                                                             "quarantine")
    assert (r.begin, r.end) == (1796169600, 1796255999)
    first, second = r.records
    assert (first.source_ip, first.count, first.disposition, first.dkim, first.spf) == (
        "198.51.100.70", 412, "none", "pass", "pass")
    assert first.header_from == "shop.test"
    assert first.dkim_results == (("shop.test", "pass"),) and first.dkim_selectors == ("s2026",)
    assert first.spf_results == (("bounces.shop.test", "pass"),)
    assert (second.source_ip, second.count, second.disposition, second.header_from) == (
        "2001:db8:5::25", 3, "quarantine", "shop.test")
    assert second.dkim_results == (("elsewhere.test", "pass"), ("shop.test", "fail"))
    assert second.dkim_selectors == ("k1", "s2026")
    assert second.spf_results == (("elsewhere.test", "softfail"),)


def test_dmarc_2_namespace_and_missing_auth_results() -> None:
    xml = (b'<?xml version="1.0"?><feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0"><report_metadata>'
           b"<org_name>Mail.Ru</org_name><report_id>r1</report_id><date_range><begin>10</begin><end>20</end>"
           b"</date_range></report_metadata><policy_published><domain>News.test</domain><p>reject</p>"
           b"</policy_published><record><row><source_ip>198.51.100.72</source_ip><count>1</count>"
           b"<policy_evaluated><disposition>none</disposition><dkim>pass</dkim></policy_evaluated></row>"
           b"<identifiers><header_from>news.test</header_from></identifiers></record></feedback>")
    r = parse(_with_attachment(gzip.compress(xml), "application/gzip", "r.xml.gz"), "dmarc@bounces.news.test").dmarc
    assert r is not None and (r.domain, r.policy, r.begin, r.end) == ("news.test", "reject", 10, 20)
    (rec,) = r.records
    assert (rec.dkim, rec.spf, rec.dkim_results, rec.spf_results) == ("pass", "none", (), ())


@pytest.mark.parametrize(("xml", "error"), [
    (b"<feedback/>", "report_metadata is missing"),
    (b"<report/>", "root element is <report>"),
    (XML.replace(b"<count>412</count>", b"<count>many</count>"), r"record\[0\]/row/count: expected a whole number"),
    (XML.replace(b"<source_ip>198.51.100.70</source_ip>", b"<source_ip>mta1</source_ip>"), "not an IP address"),
    (XML.replace(b"<report_id>9391651994964116463</report_id>", b""), "report_id is missing"),
    (XML.replace(b"<begin>1796169600</begin>", b"<begin>1796355999</begin>"), "ends .* before it begins"),
    (XML[:300], "not well-formed XML"),
])
def test_bad_dmarc_reports(xml: bytes, error: str) -> None:
    with pytest.raises(FeedbackParseError, match=error):
        parse(_with_attachment(gzip.compress(xml), "application/gzip", "r.xml.gz"), "dmarc@bounces.shop.test")


JSON = fixture("tlsrpt_google.json")


@pytest.mark.parametrize(("data", "ctype", "filename"), [
    (gzip.compress(JSON), "application/tlsrpt+gzip", "google.com!shop.test!1796083200!1796169599.json.gz"),
    (JSON, "application/tlsrpt+json", "google.com!shop.test!1796083200!1796169599.json"),
], ids=["gzip", "json"])
def test_tls_report(data: bytes, ctype: str, filename: str) -> None:
    parsed = parse(_with_attachment(data, ctype, filename), "tlsrpt@bounces.shop.test")
    assert parsed.kind == "tlsrpt" and parsed.tlsrpt is not None
    t = parsed.tlsrpt
    assert (t.org_name, t.report_id) == ("Google Inc.", "2026-12-01T00:00:00Z_shop.test")
    assert (t.begin, t.end) == (1796083200, 1796083200 + 86399)
    sts, none = t.policies
    assert (sts.policy_type, sts.policy_domain, sts.success, sts.failure) == ("sts", "shop.test", 120, 4)
    assert sts.failures == (("certificate-expired", 3), ("starttls-not-supported", 1))
    assert (none.policy_type, none.policy_domain, none.success, none.failure, none.failures) == (
        "no-policy-found", "bounces.shop.test", 7, 0, ())


@pytest.mark.parametrize(("replace", "error"), [
    ((b'"total-successful-session-count": 120', b'"total-successful-session-count": "120"'),
     r"policies\[0\]/summary/total-successful-session-count: expected a whole number"),
    ((b'"policies": [', b'"policies": {"x": ['), "not valid JSON"),
    ((b'"2026-12-01T00:00:00Z",\n', b'"yesterday",\n'), "start-datetime: expected an RFC 3339"),
    ((b'"organization-name": "Google Inc."', b'"organization-name": 7'), "organization-name: expected a non-empty"),
    ((b'"failed-session-count": 1', b'"failed-session-count": -1'), "expected a whole number >= 0"),
    ((b'"failed-session-count": 1', b'"failed-session-count": true'), "expected a whole number >= 0"),
])
def test_bad_tls_reports(replace: tuple[bytes, bytes], error: str) -> None:
    data = JSON.replace(*replace)
    assert data != JSON
    with pytest.raises(FeedbackParseError, match=error):
        parse(_with_attachment(data, "application/tlsrpt+json", "r.json"), "tlsrpt@bounces.shop.test")


def test_rfc3339_offsets() -> None:
    from sendfleet.core.reports import rfc3339

    assert rfc3339("2026-12-01T02:00:00+02:00", "x", "t") == rfc3339("2026-12-01T00:00:00Z", "x", "t")
    assert rfc3339("2026-12-01T00:00:00", "x", "t") == 1796083200  # no offset: UTC


# ---------------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(("status", "diagnostic", "kind"), [
    ("5.1.1", "550 5.1.1 <a@b.test>: Recipient address rejected: User unknown", "hard"),
    ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound", "hard"),
    ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", "hard"),
    ("5.1.3", "501 5.1.3 Bad recipient address syntax", "hard"),
    ("5.2.2", "552 5.2.2 The email account that you tried to reach is over quota", "soft"),
    ("5.4.4", "Host or domain name not found", "soft"),
    ("5.3.0", "554 5.3.0 Mail system full", "soft"),
    ("4.4.1", "connect to mx[198.18.1.1]:25: Connection timed out", "soft"),
    ("5.7.1", "554 5.7.1 Message rejected", "block"),
    ("5.1.8", "553 5.1.8 Sender address rejected: Domain not found", "block"),
    # Gmail's authentication and rate answers: the shaper's rules (gmail-unauthenticated, gmail-rate-limited)
    ("5.7.26", "550-5.7.26 This mail has been blocked because the sender is unauthenticated. 550-5.7.26 Gmail "
               "requires all senders to authenticate with either SPF or DKIM.", "block"),
    ("4.7.28", "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP "
               "address. To protect our users from spam, mail sent from your IP address has been temporarily "
               "rate limited.", "block"),
    # Yahoo TSS04 carries no enhanced code: a 4xx would be soft, the rule makes it a block
    ("4.0.0", "421 4.7.0 [TSS04] Messages from 198.51.100.70 temporarily deferred due to unexpected volume or "
              "user complaints", "block"),
    ("", "421 [TSS04] Messages from 198.51.100.70 temporarily deferred", "block"),
    # Microsoft's network block list
    ("5.7.1", "550 5.7.1 Unfortunately, messages from [198.51.100.70] weren't sent. (S3150) [X.prod.protection]",
     "block"),
    ("5.0.0", "550 5.0.0 Mail rejected: sender IP listed at a DNS blocklist", "block"),  # policy words
    ("5.0.0", "550 5.0.0 No such mailbox", "hard"),  # a bare 5xx
    ("", "550 Requested action not taken: mailbox unavailable", "hard"),
    ("", "450 Requested mail action not taken", "soft"),
    ("", "", "soft"),
    ("5.0.0", "", "hard"),
])
def test_classify_bounce(status: str, diagnostic: str, kind: str) -> None:
    assert classify_bounce(status, diagnostic, CLASSES) == kind


def test_classify_bounce_with_the_recipients_class_uses_only_its_rules() -> None:
    yahoo_reply = "421 [TSS04] Messages from 198.51.100.70 temporarily deferred"
    assert classify_bounce("4.0.0", yahoo_reply, CLASSES, "yahoo") == "block"
    assert classify_bounce("4.0.0", yahoo_reply, CLASSES, "gmail") == "soft"  # not a Gmail rule
    assert classify_bounce("4.0.0", yahoo_reply, {}) == "soft"  # no rules at all


def test_classify_bounce_uses_the_inventorys_extra_rules() -> None:
    reply = "550 5.5.0 [XYZ-17] refused"
    assert classify_bounce("5.5.0", reply, CLASSES) == "soft"
    extra = [{"class": "other", "name": "xyz-refusal", "text": r"\[XYZ-17\]", "action": "suspend",
              "duration": "1h"}]
    classes = shaping.parse_classes(shaping.default_data(), rules=extra)
    assert classify_bounce("5.5.0", reply, classes) == "block"


def test_classify_never_overrides_a_gone_mailbox() -> None:
    # a rule matching the text does not turn a missing mailbox into a block
    text = "550 5.1.1 user unknown (policy: spamhaus)"
    assert classify_bounce("5.1.1", text, CLASSES) == "hard"


def test_delayed_dsn_is_soft_whatever_its_reply() -> None:
    raw = _dsn("Final-Recipient: rfc822; a@one.test\nAction: delayed\nStatus: 4.7.28\n"
               "Diagnostic-Code: smtp; 421-4.7.28 Gmail has detected an unusual rate of unsolicited mail\n")
    (b,) = parse(raw, "x@bounces.shop.test").bounces
    assert (b.action, b.kind) == ("delayed", "soft")


# ---------------------------------------------------------------------------------------------------- VERP


@pytest.mark.parametrize(("address", "expected"), [
    ("b+alice=gmail.test@bounces.shop.test", ("alice@gmail.test", "shop.test")),
    ("<b+Alice=Gmail.TEST@Bounces.Shop.Test>", ("Alice@gmail.test", "shop.test")),
    ("b+first.last+tag=x.test@bounces.news.test", ("first.last+tag@x.test", "news.test")),
    ("b+we=ird=x.test@bounces.shop.test", ("we=ird@x.test", "shop.test")),  # the LAST '=' splits
    ("b+alice=gmail.test@bounces.other.test", None),  # not a bounce domain
    ("dmarc@bounces.shop.test", None),
    ("b+alice@bounces.shop.test", None),
    ("b+=gmail.test@bounces.shop.test", None),
    ("b+alice=@bounces.shop.test", None),
    ("b+alice=nodot@bounces.shop.test", None),
    ("", None),
])
def test_verp_decode(address: str, expected: tuple[str, str] | None) -> None:
    assert verp_decode(address, BOUNCE_DOMAINS) == expected


def test_bounce_is_frozen() -> None:
    b = Bounce("a@b.test", None, "failed", "5.1.1", "hard", "", None, None)
    with pytest.raises(AttributeError):
        b.kind = "soft"  # type: ignore[misc]
