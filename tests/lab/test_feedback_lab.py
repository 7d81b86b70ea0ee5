"""The feedback loop on the lab: the sink's replies and mailed reports reach the feedback host (fb), which keeps the
suppression list on PostgreSQL that every sender reads at RCPT.

- a 550 5.1.1 at the sink: the sender's DSN (null sender, through a vetted IP) reaches fb through the VERP return
  path, the recipient is suppressed, and the next submission to it, to any sender, is refused at RCPT with the reason;
- an ARF report mailed to the FBL address suppresses its recipient; three soft bounces suppress, two do not; an entry
  that expires stops refusing;
- a DMARC aggregate report and a TLS-RPT report mailed to the rua addresses are stored and shown by
  `sendfleet report dmarc`, with the source IP outside the fleet flagged;
- PostgreSQL stopped on fb: submissions get 4xx, DSNs wait in fb's queue; none is lost and none reaches a suppressed
  address; after it returns everything flows;
- a null-sender DSN a sender makes leaves from a vetted IP whose PTR is its HELO (checked at the sink);
- a malformed report lands in the dead-letter folder and a metric counts it.
Every entry and sink reply a test adds is removed in `finally`; PostgreSQL is started again whatever happens.
"""

from __future__ import annotations

import gzip
import json
import smtplib
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from sendfleet.lab import control
from tests.lab.conftest import LabHandle, sendfleet
from tests.lab.helpers import host_address, inventory_model, make_message, submit, wait_for

pytestmark = pytest.mark.lab

FB = "fb"
SENDERS = ("mta1", "mta2", "mta3")
PG_UNIT = "postgresql@15-main"


def uid() -> str:
    return uuid.uuid4().hex[:8]


def wait_until(what: Callable[[], Any], deadline_s: float = 60, every: float = 1.0) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        got = what()
        if got or time.monotonic() > end:
            return got
        time.sleep(every)


def suppressed(lab: LabHandle) -> dict[str, dict[str, Any]]:
    out = sendfleet("suppression", "list", "-i", str(lab.inventory_dir), "--format", "json").stdout
    return {e["address"]: e for e in json.loads(out)}


def remove(lab: LabHandle, *addresses: str) -> None:
    for a in addresses:
        sendfleet("suppression", "remove", "-i", str(lab.inventory_dir), a, check=False)


def rcpt_reply(lab: LabHandle, host: str, recipient: str, sender: str = "app@shop.test") -> tuple[int, str]:
    """The sender host's reply to RCPT TO (nothing is sent: the session ends after RCPT)."""
    with smtplib.SMTP(host_address(lab.inventory_dir, host), 25, source_address=("198.51.100.33", 0),
                      timeout=30) as smtp:
        smtp.ehlo("app.lab.test")
        smtp.mail(sender)
        code, text = smtp.rcpt(recipient)
        smtp.rset()
    return code, text.decode()


def mail_to_fb(lab: LabHandle, msg: EmailMessage | bytes, rcpt: str) -> None:
    """Deliver a report straight to the feedback host's MX, as a provider would."""
    with smtplib.SMTP(lab.config.host(FB).ipv4, 25, source_address=("198.51.100.40", 0), timeout=30) as smtp:  # type: ignore[attr-defined]
        smtp.ehlo("reports.provider.test")
        if isinstance(msg, bytes):
            smtp.sendmail("reports@provider.test", [rcpt], msg)
        else:
            smtp.send_message(msg, from_addr="reports@provider.test", to_addrs=[rcpt])


def metric(lab: LabHandle, name: str, **labels: str) -> float:
    text = lab.ssh(FB, "cat /var/lib/prometheus/node-exporter/sendfleet_feedback.prom", check=False).stdout
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def fleet_ips(lab: LabHandle) -> dict[str, str]:
    """Every sending IP of the lab -> its PTR name."""
    _, hosts = inventory_model(lab.inventory_dir)
    return {str(e["ip"]): str(e["ptr"]) for entries in hosts.values() for e in entries}


@pytest.fixture(scope="module")
def fb(converged: LabHandle) -> Iterator[LabHandle]:
    yield converged
    converged.ssh(FB, f"systemctl start {PG_UNIT}", check=False)


def test_hard_bounce_suppresses_at_every_sender(fb: LabHandle) -> None:
    rcpt = f"gone-{uid()}@smallbiz.test"
    control.sink_reply(rcpt, f"550 5.1.1 <{rcpt}>: User unknown")
    try:
        submit(host_address(fb.inventory_dir, "mta1"), [make_message("app@shop.test", rcpt, f"hard-{uid()}")])
        entry = wait_until(lambda: suppressed(fb).get(rcpt), 90)
        assert entry, f"{rcpt} was not suppressed after the sink's 550 5.1.1"
        assert entry["reason"] == "hard-bounce" and "5.1.1" in entry["detail"]
        for host in SENDERS:  # any sender, any sender domain
            code, text = rcpt_reply(fb, host, rcpt, sender="app@news.test")
            assert code == 550 and "5.1.1" in text and "suppressed since" in text and "hard-bounce" in text, (
                host, code, text)
        code, _ = rcpt_reply(fb, "mta2", f"fine-{uid()}@smallbiz.test")
        assert code == 250
    finally:
        control.sink_reply(rcpt, None)
        remove(fb, rcpt)


def arf_report(recipient_verp: str, source_ip: str) -> bytes:
    """A complaint as Yahoo's CFL sends it (RFC 5965): the recipient redacted, the VERP return path kept."""
    boundary = f"arf-{uid()}"
    return (
        "From: feedback@arf.yahoo.test\r\nTo: fbl@bounces.shop.test\r\nSubject: FW: complaint\r\n"
        f"Message-ID: <{uid()}@arf.yahoo.test>\r\nDate: Thu, 03 Dec 2026 02:05:00 +0000\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\n"
        f"This is an email abuse report for an email message received from IP {source_ip}.\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: Yahoo!-Mail-Feedback/2.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <{recipient_verp}>\r\nArrival-Date: Thu, 03 Dec 2026 02:00:00 +0000\r\n"
        f"Source-IP: {source_ip}\r\nReported-Domain: shop.test\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{recipient_verp}>\r\nFrom: app@shop.test\r\nTo: redacted@yahoo.test\r\n"
        "Subject: hello\r\nMessage-ID: <x@shop.test>\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def test_complaint_suppresses(fb: LabHandle) -> None:
    rcpt = f"complainer-{uid()}@yahoo.test"
    local, domain = rcpt.split("@")
    ip = next(iter(fleet_ips(fb)))
    try:
        mail_to_fb(fb, arf_report(f"b+{local}={domain}@bounces.shop.test", ip), "fbl@bounces.shop.test")
        entry = wait_until(lambda: suppressed(fb).get(rcpt), 60)
        assert entry and entry["reason"] == "complaint", entry
        code, text = rcpt_reply(fb, "mta3", rcpt)
        assert code == 550 and "complaint" in text
    finally:
        remove(fb, rcpt)


def test_three_soft_bounces_suppress_two_do_not(fb: LabHandle) -> None:
    two, three = f"full2-{uid()}@smallbiz.test", f"full3-{uid()}@smallbiz.test"
    for r in (two, three):
        control.sink_reply(r, f"552 5.2.2 <{r}>: mailbox full")
    try:
        server = host_address(fb.inventory_dir, "mta1")
        for i in range(3):
            msgs = [make_message("app@shop.test", three, f"soft3-{i}-{uid()}")]
            if i < 2:
                msgs.append(make_message("app@shop.test", two, f"soft2-{i}-{uid()}"))
            submit(server, msgs)
            time.sleep(1)
        assert wait_until(lambda: three in suppressed(fb), 90), f"{three}: three soft bounces did not suppress"
        assert suppressed(fb)[three]["reason"] == "soft-bounces"
        # the two soft bounces of the other address arrived before the third of this one: not suppressed
        assert two not in suppressed(fb)
        assert rcpt_reply(fb, "mta2", two)[0] == 250
    finally:
        for r in (two, three):
            control.sink_reply(r, None)
        remove(fb, two, three)


def test_expired_entry_stops_refusing(fb: LabHandle) -> None:
    rcpt = f"expiring-{uid()}@smallbiz.test"
    try:
        # an entry whose expiry is seconds away, as a policy with an expiry writes it
        fb.ssh(FB, "cd /tmp && runuser -u sendfleet -- psql -X -q -d sendfleet -c \"INSERT INTO suppression "
               f"(address, reason, source, created, expires, detail) VALUES ('{rcpt}', 'soft-bounces', 'test', now(), "
               "now() + interval '4 seconds', 'lab test')\"")
        assert rcpt_reply(fb, "mta1", rcpt)[0] == 550
        time.sleep(5)
        assert rcpt_reply(fb, "mta1", rcpt)[0] == 250
        assert rcpt not in suppressed(fb)
    finally:
        remove(fb, rcpt)


def dmarc_report(report_id: str, fleet_ip: str, foreign_ip: str) -> EmailMessage:
    end = int(time.time()) // 86400 * 86400 - 1  # yesterday, as a day's report arrives
    begin = end - 86399
    xml = f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata><org_name>google.test</org_name><email>noreply-dmarc@google.test</email>
    <report_id>{report_id}</report_id><date_range><begin>{begin}</begin><end>{end}</end></date_range>
  </report_metadata>
  <policy_published><domain>shop.test</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp>
    <pct>100</pct></policy_published>
  <record><row><source_ip>{fleet_ip}</source_ip><count>120</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>shop.test</header_from></identifiers>
    <auth_results><dkim><domain>shop.test</domain><result>pass</result><selector>s2026a</selector></dkim>
      <spf><domain>bounces.shop.test</domain><result>pass</result></spf></auth_results></record>
  <record><row><source_ip>{foreign_ip}</source_ip><count>7</count>
      <policy_evaluated><disposition>none</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>shop.test</header_from></identifiers>
    <auth_results><spf><domain>shop.test</domain><result>fail</result></spf></auth_results></record>
</feedback>
"""
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc@google.test"
    msg["To"] = "dmarc@bounces.shop.test"
    msg["Subject"] = f"Report domain: shop.test Submitter: google.test Report-ID: {report_id}"
    msg.set_content("DMARC aggregate report\n")
    msg.add_attachment(gzip.compress(xml.encode()), maintype="application", subtype="gzip",
                       filename=f"google.test!shop.test!{begin}!{end}!{report_id}.xml.gz")
    return msg


def tlsrpt_report(report_id: str, domain: str) -> EmailMessage:
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    body = {
        "organization-name": "Google Test", "report-id": report_id, "contact-info": "smtp-tls@google.test",
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "policies": [{"policy": {"policy-type": "sts", "policy-domain": domain},
                      "summary": {"total-successful-session-count": 95, "total-failure-session-count": 5},
                      "failure-details": [{"result-type": "certificate-expired", "failed-session-count": 5}]}],
    }
    msg = EmailMessage()
    msg["From"] = "noreply-smtp-tls@google.test"
    msg["To"] = "tlsrpt@bounces.shop.test"
    msg["Subject"] = f"Report Domain: shop.test Submitter: google.test Report-ID: <{report_id}>"
    msg["TLS-Report-Domain"] = "shop.test"
    msg["TLS-Report-Submitter"] = "google.test"
    msg.set_content("TLS report\n")
    msg.add_attachment(gzip.compress(json.dumps(body).encode()), maintype="application", subtype="tlsrpt+gzip",
                       filename=f"google.test!{domain}!{day}!{report_id}.json.gz")
    return msg


def test_dmarc_and_tlsrpt_reports_are_stored_and_reported(fb: LabHandle) -> None:
    fleet_ip = next(iter(fleet_ips(fb)))
    foreign = f"198.51.100.{200 + int(uid(), 16) % 50}"  # in no pool: a spoofer, or a sender forgotten
    rid = f"dmarc-{uid()}"
    mail_to_fb(fb, dmarc_report(rid, fleet_ip, foreign), "dmarc@bounces.shop.test")
    mail_to_fb(fb, dmarc_report(rid, fleet_ip, foreign), "dmarc@bounces.shop.test")  # sent twice: stored once
    tls_domain = f"t{uid()}.shop.test"  # a policy domain of its own, so earlier runs' reports do not add up
    mail_to_fb(fb, tlsrpt_report(f"tls-{uid()}", tls_domain), "tlsrpt@bounces.shop.test")

    def report() -> dict[str, Any] | None:
        proc = sendfleet("report", "dmarc", "-i", str(fb.inventory_dir), "--days", "7", "--format", "json",
                         check=False)
        assert proc.returncode in (0, 1), proc.stderr
        data = json.loads(proc.stdout)
        sources = {r["source_ip"] for r in data["rows"]}
        policies = {t["policy_domain"] for t in data.get("tlsrpt", [])}
        return data if foreign in sources and tls_domain in policies else None

    data = wait_until(report, 60)
    assert data, "the DMARC or TLS-RPT report was not stored"
    row = next(r for r in data["rows"] if r["source_ip"] == foreign)
    assert row["in_fleet"] is False and row["messages"] == 7 and row["reports"] == 1  # stored once
    assert row["dkim_pass"] == 0 and row["spf_pass"] == 0
    assert next(r for r in data["rows"] if r["source_ip"] == fleet_ip)["in_fleet"] is True
    tls = next(t for t in data["tlsrpt"] if t["policy_domain"] == tls_domain)
    assert (tls["success"], tls["failure"], tls["failures"]) == (95, 5, {"certificate-expired": 5})
    table = sendfleet("report", "dmarc", "-i", str(fb.inventory_dir), "--days", "7", check=False).stdout
    assert "NOT IN FLEET" in table and foreign in table and "not in the fleet" in table
    assert tls_domain in table and "certificate-expired 5" in table


def test_malformed_report_goes_to_dead_letter(fb: LabHandle) -> None:
    before = metric(fb, "sendfleet_feedback_messages_total", outcome="dead_letter")
    count = int(fb.ssh(FB, "ls /var/lib/sendfleet/feedback/dead-letter | grep -vc '.json$' || true").stdout.strip())
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc@broken.test"
    msg["To"] = "dmarc@bounces.shop.test"
    msg["Subject"] = "Report domain: shop.test"
    msg.set_content("report attached\n")
    msg.add_attachment(b"\x1f\x8b\x08\x00not really gzip" * 3, maintype="application", subtype="gzip",
                       filename="broken.xml.gz")
    mail_to_fb(fb, msg, "dmarc@bounces.shop.test")
    assert wait_until(lambda: metric(fb, "sendfleet_feedback_messages_total", outcome="dead_letter") > before, 60)
    after = int(fb.ssh(FB, "ls /var/lib/sendfleet/feedback/dead-letter | grep -vc '.json$' || true").stdout.strip())
    assert after == count + 1
    # fb's Postfix delivered it (exit 0): nothing waits in its queue
    assert "Mail queue is empty" in fb.ssh(FB, "postqueue -p").stdout


def test_null_sender_dsn_leaves_from_a_vetted_ip_with_fcrdns(fb: LabHandle) -> None:
    tag = f"nulldsn-{uid()}"
    sender = f"origin-{tag}@smallbiz.test"
    # local mail to a user the sender does not have: the sender's bounce daemon writes a DSN (null sender) to
    # the original sender, outside the fleet: it goes to the sink
    fb.ssh("mta1", f"printf 'Subject: {tag}\\nX-Sendfleet-Tag: {tag}\\n\\nhello\\n' | "
           f"/usr/sbin/sendmail -f {sender} nosuchuser-{tag}@mta1.lab.test")
    end = time.monotonic() + 90
    dsn = None
    from sendfleet.lab.sink import read_messages

    while dsn is None and time.monotonic() < end:
        dsn = next((m for m in read_messages() if m.rcpt_to == [sender]), None)
        time.sleep(1)
    assert dsn is not None, "the DSN did not reach the sink"
    assert dsn.mail_from in ("", "MAILER-DAEMON")  # the sink's pipe(8) names the null sender MAILER-DAEMON
    ptrs = fleet_ips(fb)
    assert dsn.client_ip in ptrs, f"DSN left from {dsn.client_ip}, not a vetted sending IP"
    assert dsn.helo == ptrs[dsn.client_ip]


def test_database_down_mail_waits_nothing_lost(fb: LabHandle) -> None:
    gone = f"gone-{uid()}@smallbiz.test"
    fresh = f"fresh-{uid()}@smallbiz.test"
    other = f"other-{uid()}@smallbiz.test"
    sendfleet("suppression", "add", "-i", str(fb.inventory_dir), gone, "--detail", "lab test")
    # a message the sink defers for now: it bounces later, while the database is down
    control.sink_reply(other, "450 4.2.1 try again later")
    submit(host_address(fb.inventory_dir, "mta2"), [make_message("app@shop.test", other, f"dbdown-{uid()}")])
    try:
        fb.ssh(FB, f"systemctl stop {PG_UNIT}")
        # submissions wait: 4xx at RCPT, for a suppressed and an unknown recipient alike
        for rcpt in (gone, fresh):
            code, text = rcpt_reply(fb, "mta1", rcpt)
            assert 400 <= code < 500, (rcpt, code, text)
        # a DSN arriving meanwhile waits in fb's queue (the processor exits 75)
        control.sink_reply(other, f"550 5.1.1 <{other}>: User unknown")
        fb.ssh("mta2", "postqueue -f")
        assert wait_until(lambda: "bounces.shop.test" in fb.ssh(FB, "postqueue -p").stdout, 60), \
            "the DSN did not wait in the feedback host's queue"
    finally:
        fb.ssh(FB, f"systemctl start {PG_UNIT}")
    try:
        fb.ssh(FB, "postqueue -f")
        assert wait_until(lambda: other in suppressed(fb), 90), "the queued DSN was not processed after the restart"
        assert "Mail queue is empty" in fb.ssh(FB, "postqueue -p").stdout
        # Postfix's pgsql client leaves a failed server alone for 60 s: then the lookups answer again
        assert wait_until(lambda: rcpt_reply(fb, "mta1", gone)[0] == 550, 120, every=5), \
            "the suppressed address was not refused again after PostgreSQL returned"
        assert "suppressed" in rcpt_reply(fb, "mta1", gone)[1]
        tag = f"after-{uid()}"
        submit(host_address(fb.inventory_dir, "mta1"), [make_message("app@shop.test", fresh, tag)])
        assert wait_for(tag, 1, 90), "mail did not flow after PostgreSQL returned"
    finally:
        control.sink_reply(other, None)
        remove(fb, gone, other)
