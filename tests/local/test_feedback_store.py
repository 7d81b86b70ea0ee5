"""The feedback processor and the suppression list against a real PostgreSQL 15 (a throwaway cluster on a unix
socket in a temp folder, tests/local/pgcluster.py): events, the suppression policy, the senders' lookup query,
import/export, reports stored once, the database down (exit 75, nothing written) and dead letters."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from sendfleet.cli import main as sendfleet_main
from sendfleet.core import suppression
from sendfleet.dns import mx
from sendfleet.feedback import config, processor, store
from sendfleet.feedback.__main__ import run_captured
from tests.local.pgcluster import Cluster, cluster

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MX = {"gmail.test": ["gmail-smtp-in.l.google.com."], "yahoo.test": ["mta5.am0.yahoodns.net."],
      "outlook.test": ["outlook-test.mail.protection.outlook.com."]}
_names = itertools.count()


def mx_answer(domain: str) -> mx.MxAnswer:
    """MX's hosts, and a failed lookup for any other domain."""
    return mx.MxAnswer(mx.OK, tuple(MX[domain]), 300) if domain in MX else mx.MxAnswer(mx.FAILED, detail="timeout")


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as c:
        yield c


def _write_config(path: Path, database: str, root: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "database": database,
        "dead_letter_dir": str(root / "dead-letter"),
        "textfile_dir": str(root / "textfile"),
        "bounce_domains": {"bounces.shop.test": "shop.test", "bounces.news.test": "news.test"},
        "fleet_ips": ["198.51.100.70", "198.51.100.71"],
        "policy": {"soft_bounces": 3, "soft_window_days": 7, "hard_expiry_days": None,
                   "complaint_expiry_days": None, "soft_expiry_days": 30},
        "provider_classes": {},
        "shaping_rules": [],
        "limits": {"max_message_bytes": 1_000_000, "max_uncompressed_bytes": 5_000_000, "max_ratio": 200},
    }))
    return path


@pytest.fixture
def cfg(pg: Cluster, tmp_path: Path) -> config.Config:
    conninfo = pg.create_database(f"feedback_{next(_names)}")
    path = _write_config(tmp_path / "feedback.yml", conninfo, tmp_path)
    code, out, err = run_captured(["schema", "--config", str(path), "--format", "json"])
    assert code == 0, err
    assert json.loads(out) == {"schema_version": store.SCHEMA_VERSION}
    assert run_captured(["schema", "--config", str(path)])[0] == 0  # idempotent
    return config.load(path)


def dsn(rcpt: str, status: str, *, action: str = "failed", diagnostic: str | None = None) -> bytes:
    local, _, domain = rcpt.partition("@")
    diag = diagnostic if diagnostic is not None else f"550 {status} user unknown"
    return (
        f"From: MAILER-DAEMON@mx.{domain}\r\nTo: b+{local}={domain}@bounces.shop.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        "--BB\r\nContent-Type: text/plain\r\n\r\nI could not deliver it.\r\n"
        "--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx1.shop.test\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Remote-MTA: dns; mx.{domain}\r\nDiagnostic-Code: smtp; {diag}\r\n\r\n"
        "--BB\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@shop.test\r\n"
        f"To: {rcpt}\r\nSubject: hello\r\n\r\n--BB--\r\n"
    ).encode()


def arf(rcpt: str) -> bytes:
    local, _, domain = rcpt.partition("@")
    return (
        "From: feedback@arf.mail.yahoo.test\r\nTo: fbl@bounces.shop.test\r\nSubject: complaint\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary="AA"\r\n\r\n'
        "--AA\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "--AA\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n"
        "User-Agent: Yahoo!-Mail-Feedback/2.0\r\n"
        f"Original-Mail-From: <b+{local}={domain}@bounces.shop.test>\r\nOriginal-Rcpt-To: {rcpt}\r\n"
        "Source-IP: 198.51.100.70\r\nArrival-Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n\r\n"
        "--AA\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@shop.test\r\n"
        f"To: {rcpt}\r\nSubject: hello\r\n\r\n--AA--\r\n"
    ).encode()


def dmarc_message(report_id: str) -> bytes:
    xml = f"""<?xml version="1.0"?>
<feedback>
  <report_metadata><org_name>google.test</org_name><email>noreply@google.test</email>
    <report_id>{report_id}</report_id><date_range><begin>1764633600</begin><end>1764719999</end></date_range>
  </report_metadata>
  <policy_published><domain>shop.test</domain><p>reject</p></policy_published>
  <record><row><source_ip>198.51.100.70</source_ip><count>40</count>
    <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>shop.test</header_from></identifiers>
    <auth_results><dkim><domain>shop.test</domain><result>pass</result></dkim>
      <spf><domain>bounces.shop.test</domain><result>pass</result></spf></auth_results></record>
  <record><row><source_ip>192.0.2.99</source_ip><count>3</count>
    <policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>shop.test</header_from></identifiers>
    <auth_results><spf><domain>shop.test</domain><result>fail</result></spf></auth_results></record>
</feedback>"""
    msg = MIMEMultipart()
    msg["From"] = "noreply-dmarc-support@google.test"
    msg["To"] = "dmarc@bounces.shop.test"
    msg["Subject"] = f"Report domain: shop.test Submitter: google.test Report-ID: {report_id}"
    msg.attach(MIMEText("DMARC aggregate report"))
    part = MIMEApplication(gzip.compress(xml.encode()), "gzip")
    part.add_header("Content-Disposition", "attachment", filename=f"google.test!shop.test!{report_id}.xml.gz")
    msg.attach(part)
    return msg.as_bytes()


def tlsrpt_message(report_id: str) -> bytes:
    report = {"organization-name": "Google Inc.", "report-id": report_id, "contact-info": "tls@google.test",
              "date-range": {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"},
              "policies": [{"policy": {"policy-type": "sts", "policy-domain": "shop.test"},
                            "summary": {"total-successful-session-count": 90, "total-failure-session-count": 2},
                            "failure-details": [{"result-type": "certificate-expired", "failed-session-count": 2}]}]}
    msg = MIMEMultipart()
    msg["From"] = "noreply-smtp-tls-reporting@google.test"
    msg["To"] = "tlsrpt@bounces.shop.test"
    msg["Subject"] = f"Report Domain: shop.test Submitter: google.test Report-ID: <{report_id}>"
    msg.attach(MIMEText("TLS report"))
    part = MIMEApplication(gzip.compress(json.dumps(report).encode()), "tlsrpt+gzip")
    part.add_header("Content-Disposition", "attachment", filename=f"google.test!shop.test!{report_id}.json.gz")
    msg.attach(part)
    return msg.as_bytes()


def process(cfg: config.Config, raw: bytes, envelope: str, now: datetime = NOW) -> processor.Outcome:
    classifier = processor.MxClassifier(cfg.classes, lookup=mx_answer)
    code, outcome = processor.process(cfg, io.BytesIO(raw), envelope, "MAILER-DAEMON", now=now,
                                      classifier=classifier, err=io.StringIO())
    assert code == 0 and outcome is not None and outcome.outcome != "dead_letter", outcome
    return outcome


def verp(rcpt: str) -> str:
    local, _, domain = rcpt.partition("@")
    return f"b+{local}={domain}@bounces.shop.test"


def lookup(cfg: config.Config, address: str) -> str | None:
    with store.connect(cfg.database) as conn:
        return store.check(conn, address)


def metrics(cfg: config.Config) -> dict[str, float]:
    """The series of the metrics textfile: {'name{labels}': value}."""
    assert cfg.textfile_dir is not None
    text = (cfg.textfile_dir / processor.METRICS_FILE).read_text()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines()
            if line and not line.startswith("#")}


# ------------------------------------------------------------------------------------------- the policy


def test_a_hard_bounce_suppresses_at_once(cfg: config.Config) -> None:
    out = process(cfg, dsn("Alice@gmail.test", "5.1.1"), verp("Alice@gmail.test"))
    assert (out.kind, out.outcome, out.suppressed) == ("dsn", "stored", ("alice@gmail.test",))
    assert lookup(cfg, "ALICE@gmail.test") == "550 5.1.1 suppressed since 2026-12-02 (hard-bounce)"
    # the query text as the senders' Postfix runs it: %u and %d replaced by the recipient's parts
    with store.connect(cfg.database) as conn:
        row = conn.execute(store.LOOKUP_QUERY.replace("%u", "Alice").replace("%d", "Gmail.test")).fetchone()
    assert row == (lookup(cfg, "alice@gmail.test"),)
    # the verb answers what the senders' map answers
    code, text, _ = run_captured(["suppression", "check", "alice@gmail.test", "--config", str(cfg.path),
                                  "--format", "json"])
    assert code == 0 and json.loads(text)["reply"] == lookup(cfg, "alice@gmail.test")
    with store.connect(cfg.database) as conn:
        rows = conn.execute("SELECT kind, class, action, recipient, sender_domain, provider, status FROM events"
                            ).fetchall()
    assert rows == [("bounce", "hard", "failed", "alice@gmail.test", "shop.test", "gmail", "5.1.1")]
    m = metrics(cfg)
    labels = 'class="hard",ip="unknown",provider="gmail",sender_domain="shop.test"'
    assert m["sendfleet_feedback_bounces_total{" + labels + "}"] == 1
    assert m['sendfleet_feedback_messages_total{kind="dsn",outcome="stored"}'] == 1
    assert m['sendfleet_suppression_entries{reason="hard-bounce"}'] == 1
    assert m["sendfleet_feedback_last_processed_timestamp_seconds"] == NOW.timestamp()


def test_a_complaint_suppresses_at_once(cfg: config.Config) -> None:
    out = process(cfg, arf("carol@yahoo.test"), "fbl@bounces.shop.test")
    assert (out.kind, out.suppressed) == ("arf", ("carol@yahoo.test",))
    reply = lookup(cfg, "carol@yahoo.test")
    assert reply is not None and reply.endswith("(complaint)")
    m = metrics(cfg)
    assert m['sendfleet_feedback_complaints_total{ip="198.51.100.70",provider="yahoo",sender_domain="shop.test"}'] == 1
    assert m['sendfleet_suppression_entries{reason="complaint"}'] == 1


def test_three_soft_bounces_in_the_window_suppress_two_do_not(cfg: config.Config) -> None:
    rcpt = "bob@gmail.test"
    for days in (3, 1):
        assert process(cfg, dsn(rcpt, "4.2.2", diagnostic="452 4.2.2 mailbox full"), verp(rcpt),
                       NOW - timedelta(days=days)).suppressed == ()
    assert lookup(cfg, rcpt) is None
    assert process(cfg, dsn(rcpt, "4.2.2", diagnostic="452 4.2.2 mailbox full"), verp(rcpt)).suppressed == (rcpt,)
    reply = lookup(cfg, rcpt)
    assert reply is not None and reply.endswith("(soft-bounces)")
    with store.connect(cfg.database) as conn:
        expires = conn.execute("SELECT expires FROM suppression WHERE address = %s", (rcpt,)).fetchone()
    assert expires == (NOW + timedelta(days=30),)


def test_soft_bounces_processed_at_once_still_count(cfg: config.Config) -> None:
    """Postfix runs several processors at once: three soft bounces of one recipient arriving together (each
    processor past its MX lookup at the same moment) still suppress."""
    rcpt = "gina@gmail.test"
    barrier = threading.Barrier(3)

    def mx_lookup(domain: str) -> mx.MxAnswer:
        barrier.wait(timeout=30)
        return mx_answer(domain)

    def one(_: int) -> processor.Outcome | None:
        raw = dsn(rcpt, "4.2.2", diagnostic="452 4.2.2 mailbox full")
        return processor.process(cfg, io.BytesIO(raw), verp(rcpt), "MAILER-DAEMON",  # dated as they are stored
                                 classifier=processor.MxClassifier(cfg.classes, lookup=mx_lookup), err=io.StringIO())[1]

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(one, range(3)))
    assert sorted(len(o.suppressed) for o in outcomes if o is not None) == [0, 0, 1]
    reply = lookup(cfg, rcpt)
    assert reply is not None and reply.endswith("(soft-bounces)")


def test_soft_bounces_spread_over_more_than_the_window_do_not_suppress(cfg: config.Config) -> None:
    rcpt = "dave@gmail.test"
    for days in (12, 6, 0):  # 12 days ago is out of the 7-day window at the third one
        assert process(cfg, dsn(rcpt, "4.2.2", diagnostic="452 4.2.2 mailbox full"), verp(rcpt),
                       NOW - timedelta(days=days)).suppressed == ()
    assert lookup(cfg, rcpt) is None


def test_delayed_dsns_and_blocks_never_suppress(cfg: config.Config) -> None:
    for _ in range(3):
        process(cfg, dsn("erin@gmail.test", "4.4.1", action="delayed", diagnostic="421 4.4.1 timeout"),
                verp("erin@gmail.test"))
    block = "550 5.7.26 This mail has been blocked because the sender is unauthenticated"
    out = process(cfg, dsn("frank@gmail.test", "5.7.26", diagnostic=block), verp("frank@gmail.test"))
    assert out.suppressed == ()
    assert lookup(cfg, "erin@gmail.test") is None and lookup(cfg, "frank@gmail.test") is None
    with store.connect(cfg.database) as conn:
        classes = conn.execute("SELECT recipient, class, action FROM events ORDER BY id").fetchall()
    assert classes[-1] == ("frank@gmail.test", "block", "failed")
    assert {c for c in classes[:-1]} == {("erin@gmail.test", "soft", "delayed")}


def test_an_expired_entry_is_not_returned_by_the_lookup(cfg: config.Config) -> None:
    with store.connect(cfg.database) as conn, conn.transaction(), conn.cursor() as cur:
        now = datetime.now(UTC)
        Entry = suppression.Entry
        store.upsert(cur, Entry("old@gmail.test", "soft-bounces", "dsn", now - timedelta(days=40),
                                now - timedelta(days=10), "4.2.2"))
        store.upsert(cur, Entry("live@gmail.test", "soft-bounces", "dsn", now - timedelta(days=1),
                                now + timedelta(days=29), "4.2.2"))
    assert lookup(cfg, "old@gmail.test") is None
    assert lookup(cfg, "live@gmail.test") is not None
    code, out, _ = run_captured(["suppression", "list", "--config", str(cfg.path), "--format", "json"])
    assert code == 0 and [e["address"] for e in json.loads(out)] == ["live@gmail.test"]
    code, out, _ = run_captured(["suppression", "list", "--all", "--config", str(cfg.path), "--format", "json"])
    assert [e["address"] for e in json.loads(out)] == ["live@gmail.test", "old@gmail.test"]
    # a new hard bounce replaces the expired entry
    process(cfg, dsn("old@gmail.test", "5.1.1"), verp("old@gmail.test"))
    reply = lookup(cfg, "old@gmail.test")
    assert reply is not None and reply.endswith("(hard-bounce)")


def test_the_recipients_class_decides_which_reply_rules_apply(cfg: config.Config) -> None:
    """Microsoft's network block-list code (S3150) is a rule of class outlook only: from the server of a gmail-class
    recipient it is no Microsoft block. With an enhanced status that says nothing (5.0.0) and no policy word, that
    reply is then a bare 5xx: hard, and the recipient is suppressed; the same reply from an outlook-class recipient
    matches ms-network-block-list: a block, nobody suppressed."""
    s3150 = "550 5.0.0 Unfortunately, messages from [198.51.100.70] weren't sent. (S3150)"
    assert process(cfg, dsn("ann@gmail.test", "5.0.0", diagnostic=s3150), verp("ann@gmail.test")).suppressed == (
        "ann@gmail.test",)
    assert process(cfg, dsn("bea@outlook.test", "5.0.0", diagnostic=s3150), verp("bea@outlook.test")).suppressed == ()
    # the lookup fails (no MX known for the domain): the class is unknown, every class's rules apply, as parsed
    assert process(cfg, dsn("cid@nomx.test", "5.0.0", diagnostic=s3150), verp("cid@nomx.test")).suppressed == ()
    # Microsoft's real S3150 reply carries 5.7.1: a block for any recipient, by its status (5.7.x), not the rule
    real = "550 5.7.1 Unfortunately, messages from [198.51.100.70] weren't sent. (S3150)"
    assert process(cfg, dsn("dan@gmail.test", "5.7.1", diagnostic=real), verp("dan@gmail.test")).suppressed == ()
    with store.connect(cfg.database) as conn:
        rows = conn.execute("SELECT recipient, provider, class FROM events ORDER BY id").fetchall()
    assert rows == [("ann@gmail.test", "gmail", "hard"), ("bea@outlook.test", "outlook", "block"),
                    ("cid@nomx.test", "other", "block"), ("dan@gmail.test", "gmail", "block")]
    m = metrics(cfg)
    gmail = 'ip="unknown",provider="gmail",sender_domain="shop.test"'
    assert m['sendfleet_feedback_bounces_total{class="hard",' + gmail + "}"] == 1
    assert m['sendfleet_feedback_bounces_total{class="block",' + gmail + "}"] == 1


# ------------------------------------------------------------------------------------------------ metrics


def _series_count(cfg: config.Config) -> int:
    d, i, c = len(cfg.sender_domains) + 1, len(cfg.fleet_ips) + 1, len(cfg.classes)
    return d * i * c * 3 + d * i * c + len(processor.MESSAGE_SERIES) + len(suppression.REASONS) + 1


def test_metrics_hold_every_series_at_zero_before_any_message(cfg: config.Config) -> None:
    code, out, err = run_captured(["metrics", "--config", str(cfg.path), "--format", "json"])
    assert code == 0, err
    assert cfg.textfile_dir is not None and json.loads(out)["file"] == str(cfg.textfile_dir / processor.METRICS_FILE)
    m = metrics(cfg)
    assert len(m) == _series_count(cfg) == 3 * 3 * 9 * 4 + 5 + 5 + 1  # 2 sender domains, 2 fleet IPs, 9 classes
    assert set(m.values()) == {0}
    for series in ('sendfleet_feedback_messages_total{kind="unknown",outcome="dead_letter"}',
                   'sendfleet_feedback_messages_total{kind="dsn",outcome="stored"}',
                   'sendfleet_feedback_bounces_total{class="hard",ip="unknown",provider="gmail",sender_domain="shop.test"}',
                   'sendfleet_feedback_bounces_total{class="block",ip="198.51.100.71",provider="other",'
                   'sender_domain="other"}',
                   'sendfleet_feedback_complaints_total{ip="198.51.100.70",provider="yahoo",sender_domain="news.test"}',
                   'sendfleet_suppression_entries{reason="complaint"}',
                   "sendfleet_feedback_last_processed_timestamp_seconds"):
        assert m[series] == 0, series
    # the processor writes the same series: a count replaces a zero, nothing appears or disappears
    process(cfg, arf("carol@yahoo.test"), "fbl@bounces.shop.test")
    after = metrics(cfg)
    assert set(after) == set(m)
    assert {k for k in after if after[k] != m[k]} == {
        'sendfleet_feedback_complaints_total{ip="198.51.100.70",provider="yahoo",sender_domain="shop.test"}',
        'sendfleet_feedback_messages_total{kind="arf",outcome="stored"}',
        'sendfleet_suppression_entries{reason="complaint"}',
        "sendfleet_feedback_last_processed_timestamp_seconds"}


def test_metrics_drop_an_expired_entry_with_no_message(cfg: config.Config) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    with store.connect(cfg.database) as conn:
        store.import_entries(conn, [suppression.Entry("soon@gmail.test", "soft-bounces", "dsn", NOW, expires, "")])
    assert run_captured(["metrics", "--config", str(cfg.path)])[0] == 0
    assert metrics(cfg)['sendfleet_suppression_entries{reason="soft-bounces"}'] == 1
    while datetime.now(UTC) <= expires:
        time.sleep(0.1)
    assert run_captured(["metrics", "--config", str(cfg.path)])[0] == 0
    assert metrics(cfg)['sendfleet_suppression_entries{reason="soft-bounces"}'] == 0


# ---------------------------------------------------------------------------------------- import, export


def _host(cfg: config.Config, *words: str, stdin: bytes = b"") -> tuple[int, str, str]:
    return run_captured([*words, "--config", str(cfg.path)], stdin)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_import_export_round_trip(cfg: config.Config, pg: Cluster, tmp_path: Path, fmt: str) -> None:
    process(cfg, dsn("alice@gmail.test", "5.1.1"), verp("alice@gmail.test"))
    process(cfg, arf("carol@yahoo.test"), "fbl@bounces.shop.test")
    code, _, err = _host(cfg, "suppression", "add", "Op.Entry@Example.NET", "--detail", "by phone", "--expires-days",
                         "90")
    assert code == 0, err
    code, exported, err = _host(cfg, "suppression", "export", "--output-format", fmt)
    assert code == 0, err
    assert "alice@gmail.test" in exported and "op.entry@example.net" in exported and "by phone" in exported
    # into a fresh database, and out again: the same text
    other = _write_config(tmp_path / "other.yml", pg.create_database(f"feedback_{next(_names)}"), tmp_path / "o")
    assert run_captured(["schema", "--config", str(other)])[0] == 0
    other_cfg = config.load(other)
    code, out, err = _host(other_cfg, "suppression", "import", "--input-format", fmt, "--name", f"list.{fmt}",
                           "--format", "json", stdin=exported.encode())
    assert code == 0, err
    assert json.loads(out)["imported"] == 3
    assert _host(other_cfg, "suppression", "export", "--output-format", fmt)[1] == exported
    assert lookup(other_cfg, "alice@gmail.test") == lookup(cfg, "alice@gmail.test")


def test_import_of_another_esps_csv(cfg: config.Config) -> None:
    src = (b"Email,Type,Created_At,Campaign\n"
           b"one@gmail.test,bounce,2025-05-01 10:00:00,x\n"
           b"two@yahoo.test,spamreport,2025-05-02,y\n"
           b"not-an-address,bounce,2025-05-02,z\n"
           b"three@gmail.test,unsubscribe,someday,w\n"
           b"four@gmail.test,,,v\n")
    code, _, err = _host(cfg, "suppression", "import", "--name", "esp.csv", stdin=src)
    assert code == 2
    assert "esp.csv: row 3: not a mail address: 'not-an-address'" in err
    assert "esp.csv: row 4: not a date or time: 'someday'" in err
    assert "nothing imported" in err
    assert json.loads(_host(cfg, "suppression", "list", "--format", "json")[1]) == []
    code, out, err = _host(cfg, "suppression", "import", "--name", "esp.csv", "--skip-bad", "--format", "json",
                           stdin=src)
    assert code == 0, err
    assert json.loads(out)["imported"] == 3
    entries = json.loads(_host(cfg, "suppression", "list", "--format", "json")[1])
    got = {e["address"]: (e["reason"], e["created"], e["source"]) for e in entries}
    assert got["one@gmail.test"] == ("hard-bounce", "2025-05-01T10:00:00Z", "import:esp.csv")
    assert got["two@yahoo.test"] == ("complaint", "2025-05-02T00:00:00Z", "import:esp.csv")
    assert got["four@gmail.test"][0] == "import"
    assert lookup(cfg, "one@gmail.test") == "550 5.1.1 suppressed since 2025-05-01 (hard-bounce)"


def test_remove_lifts_the_suppression(cfg: config.Config) -> None:
    process(cfg, dsn("alice@gmail.test", "5.1.1"), verp("alice@gmail.test"))
    assert _host(cfg, "suppression", "remove", "Alice@Gmail.test")[0] == 0
    assert lookup(cfg, "alice@gmail.test") is None
    assert _host(cfg, "suppression", "remove", "alice@gmail.test")[0] == 1  # nothing left to remove


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_the_controller_cli_round_trip(cfg: config.Config, pg: Cluster, tmp_path: Path, fmt: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`sendfleet suppression ... --local`: the controller's command, run in-process against the database."""

    def cli(c: config.Config, *words: str) -> tuple[int, str, str]:
        code = sendfleet_main(["suppression", *words, "--local", "--feedback-config", str(c.path)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    process(cfg, dsn("alice@gmail.test", "5.1.1"), verp("alice@gmail.test"))
    process(cfg, arf("carol@yahoo.test"), "fbl@bounces.shop.test")
    assert cli(cfg, "add", "Op@Example.NET", "--detail", "by phone", "--expires-days", "90")[0] == 0
    first = tmp_path / f"first.{fmt}"
    assert cli(cfg, "export", "--output", str(first))[0] == 0
    other = _write_config(tmp_path / "other.yml", pg.create_database(f"feedback_{next(_names)}"), tmp_path / "o")
    assert run_captured(["schema", "--config", str(other)])[0] == 0
    other_cfg = config.load(other)
    code, out, err = cli(other_cfg, "import", str(first))
    assert (code, out) == (0, "3 entries imported\n"), err
    second = tmp_path / f"second.{fmt}"
    assert cli(other_cfg, "export", "--output", str(second))[0] == 0
    assert second.read_text() == first.read_text()
    code, out, _ = cli(other_cfg, "check", "op@example.net")
    assert code == 0 and out.startswith("550 5.1.1 suppressed since ") and "(manual)" in out
    assert cli(other_cfg, "remove", "op@example.net")[0] == 0
    assert cli(other_cfg, "check", "op@example.net")[1] == "op@example.net: not suppressed\n"


# ---------------------------------------------------------------------------------------------- reports


def test_a_report_received_twice_is_stored_once(cfg: config.Config) -> None:
    assert process(cfg, dmarc_message("r-1"), "dmarc@bounces.shop.test").outcome == "stored"
    assert process(cfg, dmarc_message("r-1"), "dmarc@bounces.shop.test").outcome == "duplicate"
    assert process(cfg, dmarc_message("r-2"), "dmarc@bounces.shop.test").outcome == "stored"
    with store.connect(cfg.database) as conn:
        assert conn.execute("SELECT count(*) FROM dmarc_reports").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM dmarc_records").fetchone() == (4,)
    assert process(cfg, tlsrpt_message("t-1"), "tlsrpt@bounces.shop.test").outcome == "stored"
    assert process(cfg, tlsrpt_message("t-1"), "tlsrpt@bounces.shop.test").outcome == "duplicate"
    with store.connect(cfg.database) as conn:
        assert conn.execute("SELECT count(*) FROM tlsrpt_reports").fetchone() == (1,)
        assert conn.execute("SELECT policy_domain, success, failure, failures FROM tlsrpt_policies").fetchall() == [
            ("shop.test", 90, 2, [["certificate-expired", 2]])]
    assert metrics(cfg)['sendfleet_feedback_messages_total{kind="tlsrpt",outcome="stored"}'] == 2
    code, _, err = run_captured(["report", "dmarc", "--days", "3650", "--config", str(cfg.path), "--format", "json"])
    assert code == 2 and "--days 3650" in err
    with store.connect(cfg.database) as conn:
        rows = store.dmarc_summary(conn, datetime(2025, 1, 1, tzinfo=UTC))
    assert [(r["source_ip"], r["messages"], r["dmarc_pass"], r["reports"]) for r in rows] == [
        ("198.51.100.70", 80, 80, 2), ("192.0.2.99", 6, 0, 2)]


def test_report_feedback_counts_per_sender_domain_ip_and_provider(cfg: config.Config) -> None:
    now = datetime.now(UTC)
    process(cfg, dsn("alice@gmail.test", "5.1.1"), verp("alice@gmail.test"), now)
    process(cfg, arf("carol@yahoo.test"), "fbl@bounces.shop.test", now)
    process(cfg, dsn("old@gmail.test", "5.1.1"), verp("old@gmail.test"), now - timedelta(days=9))
    code, out, err = run_captured(["report", "feedback", "--days", "7", "--config", str(cfg.path), "--format", "json"])
    assert code == 0, err
    rows = {(r["sender_domain"], r["ip"], r["provider"]): r for r in json.loads(out)["rows"]}
    assert rows[("shop.test", "", "gmail")]["hard"] == 1  # the one of 9 days ago is out of the window
    assert rows[("shop.test", "198.51.100.70", "yahoo")]["complaints"] == 1


# -------------------------------------------------------------------------------- failure: DB down, garbage


def _run_module(config_path: Path, raw: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    return subprocess.run([sys.executable, "-m", "sendfleet.feedback", "process", "--config", str(config_path),
                           *extra, "--recipient", verp("alice@gmail.test"), "--sender", "MAILER-DAEMON"],
                          input=raw, capture_output=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize("raw", [b"hello", None], ids=["garbage", "dsn"])
def test_database_down_exits_75_and_writes_nothing(tmp_path: Path, raw: bytes | None) -> None:
    empty = tmp_path / "no-server"
    empty.mkdir()
    path = _write_config(tmp_path / "feedback.yml", f"host={empty} dbname=sendfleet connect_timeout=3", tmp_path)
    proc = _run_module(path, raw if raw is not None else dsn("alice@gmail.test", "5.1.1"))
    assert proc.returncode == 75, proc.stderr
    assert b"database unreachable" in proc.stderr
    assert not (tmp_path / "dead-letter").exists() and not (tmp_path / "textfile").exists()


def test_a_database_refusing_connections_is_75_too(cfg: config.Config, pg: Cluster) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(cfg.database)["dbname"]
    with psycopg.connect(pg.conninfo(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    try:
        proc = _run_module(cfg.path, dsn("alice@gmail.test", "5.1.1"))
    finally:
        with psycopg.connect(pg.conninfo(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    assert proc.returncode == 75, proc.stderr
    assert lookup(cfg, "alice@gmail.test") is None
    assert not cfg.dead_letter_dir.exists()


def test_a_parse_error_is_a_dead_letter_and_a_metric(cfg: config.Config) -> None:
    raw = b"From: someone@example.test\r\nSubject: out of office\r\n\r\nI am away.\r\n"
    proc = _run_module(cfg.path, raw)
    assert proc.returncode == 0, proc.stderr
    letters = sorted(cfg.dead_letter_dir.iterdir())
    assert [p.suffix for p in letters] == [".eml", ".json"]
    assert letters[0].read_bytes() == raw
    meta: dict[str, Any] = json.loads(letters[1].read_text())
    assert meta["recipient"] == verp("alice@gmail.test") and meta["sender"] == "MAILER-DAEMON"
    assert meta["error"] and meta["message"] == letters[0].name and meta["time"].endswith("Z")
    assert not [p for p in cfg.dead_letter_dir.iterdir() if p.name.startswith(".")]  # no temp file left
    assert metrics(cfg)['sendfleet_feedback_messages_total{kind="unknown",outcome="dead_letter"}'] == 1
    # a message over the size limit is kept whole, not cut
    big = b"Subject: big\r\n\r\n" + b"x" * 1_200_000
    assert _run_module(cfg.path, big).returncode == 0
    kept = [p for p in cfg.dead_letter_dir.glob("*.eml") if p.stat().st_size > 1_000_000]
    assert len(kept) == 1 and kept[0].read_bytes() == big
    assert metrics(cfg)['sendfleet_feedback_messages_total{kind="unknown",outcome="dead_letter"}'] == 2
