"""The shipped provider classes' rules against providers' replies as Postfix logs them: the log line goes through
the shaper's own pipeline (maillog.parse_reply, then the class's rules, then `other`'s) and must reach the action
the rule's source documents."""

from __future__ import annotations

import pytest

from sendfleet.core import maillog, shaping

CLASSES = shaping.parse_classes(shaping.default_data())
IP = "198.51.100.70"

G = "gmail-smtp-in.l.google.com[142.250.102.27]"
Y = "mta7.am0.yahoodns.net[67.195.204.72]"
M = "contoso-com.mail.protection.outlook.com[52.101.40.1]"
CASES = [
    ("gmail", G, "4.7.28", "421-4.7.28 [198.51.100.70 15] Our system has detected an unusual rate of 421-4.7.28 "
     "unsolicited mail originating from your IP address. To protect our 421-4.7.28 users from spam, mail sent from "
     "your IP address has been temporarily 421-4.7.28 rate limited. For more information, go to 421-4.7.28 "
     "https://support.google.com/mail/answer/81126 421 4.7.28 - gsmtp", "throttle"),
    ("gmail", G, "4.7.28", "421-4.7.28 [198.51.100.70] Our system has detected an unusual rate of 421-4.7.28 "
     "unsolicited mail originating from your IP address. To protect our 421-4.7.28 users from spam, mail sent from "
     "your IP address has been temporarily 421-4.7.28 blocked. 421 4.7.28 - gsmtp", "suspend"),
    ("gmail", G, "4.7.0", "421-4.7.0 TLS required for RCPT domain, closing connection. 421 4.7.0 - gsmtp",
     "throttle"),
    ("gmail", G, "5.7.26", "550-5.7.26 This mail is unauthenticated, which poses a security risk to the 550-5.7.26 "
     "sender and Gmail users, and has been blocked. 550 5.7.26 - gsmtp", "throttle"),
    ("gmail", G, "5.7.1", "550-5.7.1 [198.51.100.70] Our system has detected that this message is 550-5.7.1 likely "
     "unsolicited mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this message has been blocked. "
     "550 5.7.1 - gsmtp", "suspend"),
    ("gmail", G, "4.7.0", "421-4.7.0 [198.51.100.70] Our system has detected that this message is 421-4.7.0 "
     "suspicious due to the very low reputation of the sending IP address. 421 4.7.0 - gsmtp", "suspend"),
    ("yahoo", Y, "4.7.0", "421 4.7.0 [TSS04] Messages from 198.51.100.70 temporarily deferred due to unexpected "
     "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", "suspend"),
    ("yahoo", Y, "4.7.0", "421 4.7.0 [TSS09] All messages from 198.51.100.70 will be permanently deferred; Retrying "
     "will NOT succeed. See https://postmaster.yahooinc.com/error-codes", "suspend"),
    ("yahoo", Y, "5.7.1", "553 5.7.1 [BL21] Connections will not be accepted from 198.51.100.70, because the ip is "
     "in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes", "drain"),
    ("outlook", M, "5.7.1", "550 5.7.1 Unfortunately, messages from [198.51.100.70] weren't sent. Please contact "
     "your Internet service provider since part of their network is on our block list (S3150). You can also refer "
     "your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.", "suspend"),
    ("outlook", M, "5.7.1", "550 5.7.1 Unfortunately, messages from [198.51.100.70] weren't sent. Please contact "
     "your Internet service provider since part of their network is on our block list (S3140).", "suspend"),
    ("outlook", M, "5.7.515", "550 5.7.515 Access denied, sending domain shop.test doesn't meet the required "
     "authentication level.", "throttle"),
    ("outlook", M, "5.7.606", "550 5.7.606 Access denied, banned sending IP [198.51.100.70]. To request removal from "
     "this list please visit https://sender.office.com/ and follow the directions.", "suspend"),
    ("other", "mx.smallbiz.test[198.51.100.20]", "5.7.1", "554 5.7.1 Service unavailable; Client host "
     "[198.51.100.70] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/198.51.100.70", "drain"),
    ("other", "mx.smallbiz.test[198.51.100.20]", "5.7.1", "554 5.7.1 <a@shop.test>: Sender address rejected: "
     "sender is blacklisted", None),
    ("other", "mx.smallbiz.test[198.51.100.20]", "5.7.1", "550 5.7.1 message contains a URL blacklisted by SURBL",
     None),
]


def transport(klass: str) -> str:
    base = "sf_198_51_100_70"
    return base if klass == "other" else f"{base}_{klass}"


@pytest.mark.parametrize(("klass", "host", "dsn", "text", "action"), CASES, ids=[
    f"{c[0]}-{c[3][:40]}" for c in CASES])
def test_a_provider_reply_reaches_its_documented_action(klass: str, host: str, dsn: str, text: str,
                                                        action: str | None) -> None:
    status = "bounced" if text.startswith("5") else "deferred"
    line = (f"4QABC123: to=<u@example.test>, relay={host}:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn={dsn}, "
            f"status={status} (host {host} said: {text} (in reply to RCPT TO command))")
    reply = maillog.parse_reply(f"postfix/{transport(klass)}/smtp", line, 1000.0)
    assert reply is not None and reply.klass == klass and reply.ip == IP
    rules = list(CLASSES[klass].rules) + ([] if klass == "other" else list(CLASSES["other"].rules))
    rule = shaping.match_rule(rules, reply.code, reply.enhanced, reply.text)
    got = None if rule is None else rule.action
    assert got == action, f"{text[:60]}: rule {rule.name if rule else None} ({got}), expected {action}"
