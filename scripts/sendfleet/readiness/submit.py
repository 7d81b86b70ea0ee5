"""Submit tagged test messages to a sender host over SMTP, from an address of the app networks."""

from __future__ import annotations

import contextlib
import email.utils
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from sendfleet.core.readiness import TAG_HEADER, Submission


@dataclass(frozen=True)
class Outgoing:
    tag: str
    host: str
    domain: str
    mail_from: str
    rcpt: str
    data: bytes


def compose(tag: str, host: str, domain: str, from_local: str, rcpt: str) -> Outgoing:
    sender = f"{from_local}@{domain}"
    msg = EmailMessage()
    msg["From"] = f"sendfleet readiness <{sender}>"
    msg["To"] = rcpt
    msg["Subject"] = f"sendfleet readiness {tag} ({domain} via {host})"
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = f"<{tag}@{domain}>"
    msg[TAG_HEADER] = tag
    msg.set_content(
        f"sendfleet readiness check {tag}\n"
        f"Submitted to {host} for {domain}. This message verifies the sending path (IP, PTR, HELO, DKIM,\n"
        "SPF, DMARC, TLS) and can be deleted.\n"
    )
    return Outgoing(tag, host, domain, sender, rcpt, msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))


def _reply(err: smtplib.SMTPException) -> str:
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        rcode, rtext = next(iter(err.recipients.values()))
        return f"{rcode} {rtext.decode(errors='replace') if isinstance(rtext, bytes) else rtext}"
    code: Any = getattr(err, "smtp_code", None)
    text: Any = getattr(err, "smtp_error", b"")
    if code is not None:
        return f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
    return str(err) or type(err).__name__


def submit(
    address: str,
    port: int,
    messages: Sequence[Outgoing],
    *,
    source: str | None = None,
    timeout: float = 30.0,
) -> list[Submission]:
    """Submit `messages` in one SMTP session; a refused message does not stop the others."""
    results: list[Submission] = []
    try:
        smtp = smtplib.SMTP(
            address, port, timeout=timeout, source_address=(source, 0) if source else None
        )
    except (OSError, smtplib.SMTPException) as err:
        where = f"{address}:{port}" + (f" from {source}" if source else "")
        error = f"cannot connect to {where}: {err}"
        if isinstance(err, smtplib.SMTPConnectError):
            return [Submission(m.tag, m.host, m.domain, False, _reply(err), refused=True) for m in messages]
        return [Submission(m.tag, m.host, m.domain, False, error) for m in messages]
    try:
        smtp.ehlo_or_helo_if_needed()
        for i, m in enumerate(messages):
            try:
                smtp.sendmail(m.mail_from, [m.rcpt], m.data)
                results.append(Submission(m.tag, m.host, m.domain, True))
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as err:
                results.append(Submission(m.tag, m.host, m.domain, False, _reply(err), refused=True))
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    smtp.rset()
            except (smtplib.SMTPServerDisconnected, OSError) as err:
                rest = messages[i:]
                results += [
                    Submission(r.tag, r.host, r.domain, False, f"{address}:{port} dropped the session: {err}")
                    for r in rest
                ]
                break
    except smtplib.SMTPException as err:  # EHLO refused
        done = {r.tag for r in results}
        results += [
            Submission(m.tag, m.host, m.domain, False, _reply(err), refused=True)
            for m in messages
            if m.tag not in done
        ]
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
    return results
