"""Hostile and broken input for sendfleet.core.feedback.parse_message: whatever the bytes, it returns a Parsed or
raises a one-line FeedbackParseError, never anything else (the processor dead-letters the message on that error;
any other exception would be a crash of the Postfix pipe). Property tests (arbitrary bytes, mutated fixtures,
random XML and JSON trees, random DSN and ARF fields) and hand-made attacks: gzip and zip bombs, billion laughs,
external entities, deep nesting, oversized messages."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import zipfile
import zlib
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendfleet.core import feedback, reports, shaping
from sendfleet.core.feedback import FeedbackParseError, Limits, Parsed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feedback"
EML = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))}
XML = (FIXTURES / "dmarc_google.xml").read_bytes()
JSON = (FIXTURES / "tlsrpt_google.json").read_bytes()
BOUNCE_DOMAINS = {"bounces.shop.test": "shop.test", "bounces.news.test": "news.test"}
FLEET = ["198.51.100.70", "198.51.100.71", "198.51.100.72", "198.51.100.73"]
CLASSES = shaping.parse_classes(shaping.default_data())
LIMITS = feedback.DEFAULT_LIMITS

# SENDFLEET_FUZZ_EXAMPLES=20000 for a longer run by hand; the suite keeps 200 to stay quick
FUZZ = settings(max_examples=int(os.environ.get("SENDFLEET_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(raw: bytes, rcpt: str = "b+a=b.test@bounces.shop.test", limits: Limits = LIMITS) -> Parsed | str:
    """The Parsed, or the FeedbackParseError's message (checked to be one line); anything else propagates."""
    try:
        parsed = feedback.parse_message(raw, rcpt, bounce_domains=BOUNCE_DOMAINS, fleet_ips=FLEET, rules=CLASSES,
                                        limits=limits)
    except FeedbackParseError as err:
        text = str(err)
        assert text and "\n" not in text and len(text) <= 500
        return text
    assert isinstance(parsed, Parsed) and parsed.kind in ("dsn", "arf", "dmarc", "tlsrpt")
    return parsed


def error_of(raw: bytes, rcpt: str = "dmarc@bounces.shop.test", limits: Limits = LIMITS) -> str:
    result = outcome(raw, rcpt, limits)
    assert isinstance(result, str), f"expected a parse error, got {result!r}"
    return result


def attach(data: bytes, ctype: str = "application/gzip", filename: str = "report.xml.gz") -> bytes:
    msg = MIMEMultipart()
    msg["From"] = "reports@isp.test"
    msg["Subject"] = "report"
    part = MIMEApplication(data)
    part.replace_header("Content-Type", ctype)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    msg.attach(part)
    return msg.as_bytes()


# ------------------------------------------------------------------------------------------- properties


@FUZZ
@given(st.binary(max_size=4000))
def test_arbitrary_bytes(raw: bytes) -> None:
    outcome(raw)


@FUZZ
@given(st.sampled_from(sorted(EML)), st.data())
def test_mutated_fixtures(name: str, data: st.DataObject) -> None:
    raw = bytearray(EML[name])
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        how = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "header"]), label="how")
        at = data.draw(st.integers(0, len(raw)), label="at")
        if how == "truncate":
            del raw[at:]
        elif how == "flip" and raw:
            i = min(at, len(raw) - 1)
            raw[i] ^= data.draw(st.integers(1, 255), label="bits")
        elif how == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=40), label="bytes")
        elif how == "delete":
            del raw[at:at + data.draw(st.integers(1, 200), label="span")]
        else:
            line = data.draw(st.sampled_from([b"Content-Type", b"Content-Transfer-Encoding", b"Final-Recipient",
                                              b"Action", b"Status", b"Diagnostic-Code", b"Feedback-Type",
                                              b"Original-Rcpt-To", b"Return-Path", b"Received", b"Source-IP",
                                              b"X-Junk"]), label="name")
            value = data.draw(st.binary(max_size=60).filter(lambda b: b"\n" not in b), label="value")
            start = raw.rfind(b"\n", 0, at) + 1
            raw[start:start] = line + b": " + value + b"\n"
    outcome(bytes(raw))


DSN_FIELDS = ["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code", "Remote-MTA",
              "Reporting-MTA"]
field_values = st.one_of(
    st.text(max_size=60).map(lambda t: " ".join(t.split())),
    st.sampled_from(["rfc822; a@b.test", "rfc822;", ";", "failed", "delayed", "delivered", "5.1.1", "4.4.7",
                     "9.9.9", "5.1.1 (x)", "smtp; 550 5.1.1 x", "smtp; 421-4.7.28 y", "dns; mx.b.test",
                     "b+x=y.test@bounces.shop.test", "<>", "@", "a@b@c", "x-unknown; ???"]),
)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(DSN_FIELDS), field_values, max_size=7), max_size=4),
       st.sampled_from(["b+a=b.test@bounces.shop.test", "postmaster@bounces.news.test", "", "garbage"]))
def test_random_dsn_fields(blocks: list[dict[str, str]], rcpt: str) -> None:
    text = "\n\n".join("\n".join(f"{k}: {v}" for k, v in b.items()) for b in blocks if b)
    raw = ("From: MAILER-DAEMON@x.test\nMIME-Version: 1.0\nContent-Type: multipart/report; "
           f'report-type=delivery-status; boundary="B"\n\n--B\nContent-Type: message/delivery-status\n\n{text}\n'
           "--B--\n").encode("utf-8", "surrogateescape")
    result = outcome(raw, rcpt)
    if isinstance(result, Parsed):
        assert result.kind == "dsn" and result.bounces
        for b in result.bounces:
            assert b.action in ("failed", "delayed") and b.kind in ("hard", "soft", "block")
            assert "@" in b.recipient


ARF_FIELDS = ["Feedback-Type", "User-Agent", "Version", "Original-Mail-From", "Original-Rcpt-To", "Arrival-Date",
              "Reported-Domain", "Source-IP"]


@FUZZ
@given(st.dictionaries(st.sampled_from(ARF_FIELDS), field_values | st.sampled_from(
    ["abuse", "not-spam", "198.51.100.70", "Thu, 3 Dec 2026 01:02:03 +0100", "Thu, 99 Foo 2026"]), max_size=8),
    st.sampled_from(["message/rfc822", "text/rfc822-headers", "text/plain"]),
    st.text(max_size=200))
def test_random_arf_fields(fields: dict[str, str], returned_type: str, returned: str) -> None:
    text = "\n".join(f"{k}: {v}" for k, v in fields.items())
    raw = ("From: fbl@isp.test\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; "
           f'boundary="B"\n\n--B\nContent-Type: message/feedback-report\n\n{text}\n--B\n'
           f"Content-Type: {returned_type}\n\n{returned}\n--B--\n").encode("utf-8", "surrogateescape")
    result = outcome(raw, "fbl@bounces.shop.test")
    if isinstance(result, Parsed):
        (c,) = result.complaints
        assert "@" in c.recipient and c.feedback_type


DMARC_TAGS = ["feedback", "report_metadata", "org_name", "report_id", "date_range", "begin", "end",
              "policy_published", "domain", "p", "record", "row", "source_ip", "count", "policy_evaluated",
              "disposition", "dkim", "spf", "identifiers", "header_from", "auth_results", "result", "selector", "x"]
xml_text = st.one_of(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=20),
                     st.sampled_from(["1796169600", "-1", "12", "198.51.100.70", "::1", "pass",
                                      "99999999999999999999"]))


def _xml(tree: Any) -> str:
    if isinstance(tree, tuple):
        tag, children = tree
        return f"<{tag}>{''.join(_xml(c) for c in children)}</{tag}>"
    return str(tree).replace("&", "&amp;").replace("<", "&lt;")


xml_trees = st.recursive(xml_text, lambda kids: st.tuples(st.sampled_from(DMARC_TAGS), st.lists(kids, max_size=4)),
                         max_leaves=30)


@FUZZ
@given(st.lists(xml_trees, max_size=6), st.sampled_from(["gzip", "zip", "plain"]))
def test_random_xml_trees(children: list[Any], packing: str) -> None:
    xml = _xml(("feedback", children)).encode()
    if packing == "gzip":
        raw = attach(gzip.compress(xml))
    elif packing == "zip":
        raw = attach(_zip({"r.xml": xml}), "application/zip", "r.zip")
    else:
        raw = attach(xml, "text/xml", "r.xml")
    result = outcome(raw)
    if isinstance(result, Parsed):
        assert result.kind == "dmarc" and result.dmarc is not None
        assert all(r.count >= 0 for r in result.dmarc.records)
    else:
        assert result.startswith("DMARC report: ")


DMARC_LEAVES = ["org_name", "report_id", "begin", "end", "domain", "p", "source_ip", "count", "disposition",
                "header_from", "result", "selector"]


@FUZZ
@given(st.sampled_from(DMARC_LEAVES), st.integers(0, 2), xml_text)
def test_dmarc_report_with_one_value_replaced(tag: str, nth: int, value: str) -> None:
    text = XML.decode()
    start = -1
    for _ in range(nth + 1):
        start = text.find(f"<{tag}>", start + 1)
    if start < 0:
        start = text.find(f"<{tag}>")
    end = text.find(f"</{tag}>", start)
    mutated = text[: start + len(tag) + 2] + _xml(value) + text[end:]
    result = outcome(attach(gzip.compress(mutated.encode())))
    if isinstance(result, Parsed):
        assert result.dmarc is not None and len(result.dmarc.records) == 2
    else:
        assert result.startswith("DMARC report: ")


TLS_KEYS = ["organization-name", "date-range", "start-datetime", "end-datetime", "report-id", "policies", "policy",
            "policy-type", "policy-domain", "summary", "total-successful-session-count",
            "total-failure-session-count", "failure-details", "result-type", "failed-session-count"]
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**70), st.floats(allow_nan=True),
                        st.text(max_size=20), st.sampled_from(["2026-12-01T00:00:00Z", "sts", "x"]))
json_trees = st.recursive(json_leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(TLS_KEYS) | st.text(max_size=5), kids, max_size=6)),
    max_leaves=40)


@FUZZ
@given(json_trees)
def test_random_json_trees(tree: Any) -> None:
    result = outcome(attach(gzip.compress(json.dumps(tree).encode()), "application/tlsrpt+gzip", "r.json.gz"))
    if isinstance(result, Parsed):
        assert result.kind == "tlsrpt" and result.tlsrpt is not None
    else:
        assert result.startswith("TLS report: ")


@FEW
@given(st.sampled_from(["organization-name", "date-range", "report-id", "policies"]), json_leaves | json_trees)
def test_tls_report_with_one_key_replaced(key: str, value: Any) -> None:
    report = json.loads(JSON)
    report[key] = value
    result = outcome(attach(json.dumps(report).encode(), "application/tlsrpt+json", "r.json"))
    if isinstance(result, Parsed):
        assert result.tlsrpt is not None


# --------------------------------------------------------------------------------------------- attacks


def _deflate_zeros(megabytes: int) -> bytes:
    """A raw deflate stream of `megabytes` MiB of zeros, built from one compressed MiB repeated (after a full
    flush the compressor starts afresh, so every MiB compresses to the same bytes): about 1 KiB per MiB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + c.flush()


def _gzip_zeros(megabytes: int) -> bytes:
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", 0, (megabytes << 20) & 0xFFFFFFFF)  # the CRC is never reached
    return header + _deflate_zeros(megabytes) + trailer


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _zip_zeros(megabytes: int, declared: int) -> bytes:
    """A zip whose one deflated member inflates to `megabytes` MiB of zeros and declares `declared` bytes."""
    data = _deflate_zeros(megabytes)
    name = b"bomb.xml"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0, len(data), declared, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, 0, len(data), declared, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def test_the_bomb_builder_builds_what_it_says() -> None:
    assert len(zlib.decompress(_deflate_zeros(3), -15)) == 3 << 20


def test_gzip_bomb_stops_at_max_uncompressed_bytes() -> None:
    bomb = _gzip_zeros(1024)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 2 << 20
    limits = Limits(max_message_bytes=10 << 20, max_uncompressed_bytes=50 << 20, max_ratio=10_000)
    assert "max_uncompressed_bytes" in error_of(attach(bomb), limits=limits)


def test_gzip_bomb_stops_at_max_ratio() -> None:
    assert "max_ratio" in error_of(attach(_gzip_zeros(100)))  # 100 MiB in 100 KiB: 200 x 100 KiB < 50 MiB
    assert "max_ratio" in error_of(attach(gzip.compress(b" " * (4 << 20))))  # 4 MiB of blanks in 4 KiB


def test_zip_bomb_declaring_its_size_is_refused_before_inflating() -> None:
    message = error_of(attach(_zip_zeros(1, declared=1 << 30), "application/zip", "r.zip"))
    assert "inflates past" in message


def test_zip_bomb_lying_about_its_size_stops_while_inflating() -> None:
    limits = Limits(max_message_bytes=10 << 20, max_uncompressed_bytes=20 << 20, max_ratio=10_000)
    # declares 20 MiB (within the limits), holds 1 GiB
    bomb = _zip_zeros(1024, declared=20 << 20)
    message = error_of(attach(bomb, "application/zip", "r.zip"), limits=limits)
    assert "zip" in message  # zipfile stops at the declared size and finds the CRC wrong: a parse error either way
    # declares more than it may: refused at once
    bomb = _zip_zeros(1024, declared=(20 << 20) + 1)
    assert "max_uncompressed_bytes" in error_of(attach(bomb, "application/zip", "r.zip"), limits=limits)


def test_nested_zip_and_zip_with_several_members() -> None:
    inner = _zip({"r.xml": XML})
    assert "no attachment holds" in error_of(attach(_zip({"r.zip": inner}), "application/zip", "r.zip"))
    assert "exactly one file" in error_of(attach(_zip({"a.xml": XML, "b.xml": XML}), "application/zip", "r.zip"))


def test_billion_laughs_is_refused() -> None:
    lol = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    xml = f'<?xml version="1.0"?><!DOCTYPE feedback [{"".join(lol)}]><feedback>&lol9;</feedback>'.encode()
    assert "DOCTYPE" in error_of(attach(gzip.compress(xml)))


@pytest.mark.parametrize("xml", [
    b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b"<feedback><report_metadata><org_name>&xxe;</org_name></report_metadata></feedback>",
    b'<!DOCTYPE feedback SYSTEM "http://198.51.100.1/x.dtd"><feedback/>',
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE f [<!ENTITY a "b">]><feedback>&a;</feedback>'.encode("utf-16"),
], ids=["external-entity", "external-dtd", "utf-16"])
def test_doctypes_are_refused(xml: bytes) -> None:
    assert "DOCTYPE" in error_of(attach(xml, "text/xml", "r.xml"))


def test_an_undeclared_entity_is_a_parse_error() -> None:
    assert "not well-formed" in error_of(attach(b"<feedback>&xxe;</feedback>", "text/xml", "r.xml"))


def test_deep_nesting() -> None:
    assert "nested too deep" in error_of(attach(b"[" * 100_000 + b"]" * 100_000, "application/tlsrpt+json", "r.json"))
    deep_xml = b"<feedback>" + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</feedback>"
    assert "report_metadata is missing" in error_of(attach(deep_xml, "text/xml", "r.xml"))
    deep_mime = b"Content-Type: multipart/mixed; boundary=b0\n\n" + b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(3000))
    assert "nested too deep" in error_of(deep_mime)


def test_json_with_wrong_types() -> None:
    for bad in (b"[]", b'"report"', b"{}", b'{"organization-name": "x", "date-range": []}', b"1e999999",
                b"9" * 5000):
        outcome_text = error_of(attach(bad, "application/tlsrpt+json", "r.json"))
        assert outcome_text.startswith("TLS report: ")


def test_dsn_without_per_recipient_fields() -> None:
    raw = (b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\n"
           b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.b.test\n\n--B--\n")
    assert "no per-recipient fields" in error_of(raw, "b+a=b.test@bounces.shop.test")
    raw = (b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\n"
           b"Content-Type: text/plain\n\nx\n--B--\n")
    assert "without a message/delivery-status part" in error_of(raw, "b+a=b.test@bounces.shop.test")


def test_arf_without_a_feedback_report_part() -> None:
    raw = (b"Content-Type: multipart/report; report-type=feedback-report; boundary=B\n\n--B\n"
           b"Content-Type: text/plain\n\nThis is an abuse report.\n--B\nContent-Type: message/rfc822\n\n"
           b"Return-Path: <b+a=b.test@bounces.shop.test>\n\nhi\n--B--\n")
    assert "no message/feedback-report part" in error_of(raw, "fbl@bounces.shop.test")


def test_empty_and_blank_messages() -> None:
    assert error_of(b"") == "empty message"
    assert error_of(b"\r\n \n") == "empty message"
    assert "not a DSN" in error_of(b"Subject: hello\n\nhi\n")


def test_a_message_over_max_message_bytes_is_refused_unread() -> None:
    raw = EML["postfix_dsn_hard.eml"] + b"x" * (20 << 20)
    assert "max_message_bytes" in error_of(raw)
    small = Limits(max_message_bytes=1000, max_uncompressed_bytes=LIMITS.max_uncompressed_bytes, max_ratio=200)
    assert "max_message_bytes" in error_of(EML["postfix_dsn_hard.eml"], limits=small)


def test_plain_attachment_over_max_uncompressed_bytes() -> None:
    limits = Limits(max_message_bytes=10 << 20, max_uncompressed_bytes=1000, max_ratio=200)
    assert "larger than 1000 bytes" in error_of(attach(XML + b" " * 2000, "text/xml", "r.xml"), limits=limits)


def test_truncated_and_corrupt_gzip() -> None:
    packed = gzip.compress(XML)
    assert "truncated gzip" in error_of(attach(packed[: len(packed) // 2]))
    assert "not valid gzip" in error_of(attach(packed[:10] + b"\xff" * 50))


def test_reports_module_limits_directly() -> None:
    # the helpers the parser uses, on their own: a ratio of exactly max_ratio passes, one byte more does not
    data = gzip.compress(b"a" * 1000)
    limits = Limits(max_message_bytes=1 << 20, max_uncompressed_bytes=1000, max_ratio=1000)
    assert reports.gunzip(data, limits) == b"a" * 1000
    with pytest.raises(FeedbackParseError, match="max_uncompressed_bytes"):
        reports.gunzip(data, Limits(1 << 20, 999, 1000))
