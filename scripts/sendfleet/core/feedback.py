"""What receivers send back to the bounce domains: delivery status notifications (RFC 3464), complaint feedback
loops (ARF, RFC 5965), DMARC aggregate and SMTP TLS reports (`sendfleet.core.reports`). Pure: the bytes of one
message and the configuration in, frozen records out. Every problem is a one-line `FeedbackParseError` (the
processor writes the message to its dead-letter directory); any other exception out of `parse_message` is a bug.

Which kind a message is comes from its structure, not from the address it was sent to: a part
message/feedback-report (or multipart/report; report-type=feedback-report) is ARF, a part message/delivery-status
(or report-type=delivery-status) a DSN, else the first report attachment (gzip, zip, XML or JSON, recognised by its
content) is a DMARC aggregate report (XML) or a TLS report (JSON). A bounce without a delivery-status part (free
text, as Exim and qmail send by default) is read only when it is simple: sent to a VERP address (the recipient),
from MAILER-DAEMON or postmaster or with a bounce's subject, with a '5xx 5.x.x' reply line in its text; anything
else goes to the dead letters, where an operator reads it.

Who a report is about, in order of trust:
- the VERP address we sent from (`verp_decode`): the envelope recipient of the report, the ARF Original-Mail-From,
  the Return-Path of the returned message;
- DSN: the block's Original-Recipient, else its Final-Recipient; ARF: Original-Rcpt-To, else Microsoft's
  X-HmXmrOriginalRecipient in the returned message (Yahoo and Microsoft redact or omit the recipient).
- the sender domain: the VERP bounce domain's, else the DKIM d= or From domain of the returned message, when it
  is one of the sender domains (or below one).

`source_ip` is a fleet IP: ARF Source-IP when it is one, else the first fleet IP named by a Received header of the
returned message or headers (top-most first), else None (a DSN written by our own Postfix returns the headers as
queued, before they left by one of the fleet's IPs: None).
"""

from __future__ import annotations

import email
import email.parser
import email.utils
import ipaddress
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.message import Message
from email.policy import compat32

from sendfleet.core.reports import (
    DEFAULT_LIMITS,
    DmarcRecord,
    DmarcReport,
    FeedbackParseError,
    Limits,
    TlsPolicy,
    TlsReport,
    inflate,
    parse_dmarc,
    parse_tlsrpt,
    sniff,
)
from sendfleet.core.shaping import OTHER, ProviderClass, Rule, match_rule, rules_for

__all__ = [
    "DEFAULT_LIMITS",
    "HARD_STATUSES",
    "Bounce",
    "Complaint",
    "DmarcRecord",
    "DmarcReport",
    "FeedbackParseError",
    "Limits",
    "Parsed",
    "TlsPolicy",
    "TlsReport",
    "classify_bounce",
    "normalise_address",
    "parse_message",
    "reply_rules",
    "verp_decode",
]

HARD_STATUSES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"})  # the recipient is gone
SENDER_STATUSES = frozenset({"5.1.7", "5.1.8"})  # our sender address refused: a block, not the recipient's fault
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\Z")
_REPLY = re.compile(r"^(?P<code>[245]\d\d)(?:[ -](?P<enh>[245]\.\d{1,3}\.\d{1,3})(?![\d.]))?(?=[ -]|$)")
# words of a policy or reputation refusal, for a reply whose status says nothing (x.0.0 or no enhanced code)
_POLICY_WORDS = re.compile(r"(?i)\b(?:spam\w*|blocked|block\s*list(?:ed)?|black\s*list(?:ed)?|reputation|policy|"
                           r"spamhaus|dnsbl|rbl|dmarc|not authori[sz]ed|authentication)\b")
_ADDR_LOCAL = re.compile(r"^[^\s<>@\x00-\x1f\x7f]{1,128}\Z")
_LABEL = r"[^\s<>@()\[\],;:\"\\\x00-\x1f\x7f.]+"
_ADDR_DOMAIN = re.compile(rf"^(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+\Z")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}\Z")
_DIAGNOSTIC_CAP = 1000
_MAX_PARTS = 500

DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
ARF_TYPE = "message/feedback-report"
RETURNED_TYPES = ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers")
_REPORT_TYPES = ("application/gzip", "application/x-gzip", "application/zip", "application/x-zip",
                 "application/x-zip-compressed", "application/xml", "text/xml", "application/tlsrpt+gzip",
                 "application/tlsrpt+json", "application/json", "application/octet-stream")
_REPORT_SUFFIXES = (".xml", ".gz", ".gzip", ".zip", ".json")


@dataclass(frozen=True)
class Bounce:
    recipient: str  # local part as sent, domain lower-cased
    sender_domain: str | None
    action: str  # failed | delayed
    status: str  # enhanced status code, e.g. 5.1.1
    kind: str  # hard | soft | block
    diagnostic: str  # the Diagnostic-Code without its type ('550-5.1.1 The email account ...'), or ''
    remote_mta: str | None
    source_ip: str | None  # a fleet IP, or None
    reporting_mta: str | None = None


@dataclass(frozen=True)
class Complaint:
    recipient: str
    sender_domain: str | None
    source_ip: str | None  # a fleet IP, or None
    feedback_type: str  # abuse | fraud | virus | other | not-spam | auth-failure ... (lower case)
    reporter: str | None  # the domain of the report's From address ('arf.mail.yahoo.com')
    arrival: str | None  # Arrival-Date as ISO 8601 UTC ('2026-12-02T10:00:00+00:00'), None when absent or unreadable
    user_agent: str | None = None  # the reporter's User-Agent ('Yahoo!-Mail-Feedback/2.0')


@dataclass(frozen=True)
class Parsed:
    kind: str  # dsn | arf | dmarc | tlsrpt
    bounces: tuple[Bounce, ...] = ()
    complaints: tuple[Complaint, ...] = ()
    dmarc: DmarcReport | None = None
    tlsrpt: TlsReport | None = None


# --------------------------------------------------------------------------------------- addresses


def normalise_address(value: str) -> str | None:
    """'<Alice@Gmail.TEST>', 'rfc822; Alice@Gmail.TEST' -> 'Alice@gmail.test' (local part kept, domain lower-cased);
    None when it is not a plain mailbox address."""
    text = str(value).strip()
    if ";" in text:
        kind, _, rest = text.partition(";")
        if _TOKEN.match(kind.strip().lower()):
            text = rest.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at, domain = text.rpartition("@")
    domain = domain.lower().rstrip(".")
    if not at or not _ADDR_LOCAL.match(local) or not _ADDR_DOMAIN.match(domain):
        return None
    return f"{local}@{domain}"


def verp_decode(address: str, bounce_domains: Mapping[str, str]) -> tuple[str, str] | None:
    """A VERP envelope sender at a bounce domain -> (recipient, sender domain):
    'b+alice=gmail.test@bounces.shop.test' -> ('alice@gmail.test', 'shop.test') with bounce_domains
    {'bounces.shop.test': 'shop.test'}. The local part splits at its first '+', the rest at its last '='
    (Postfix's VERP with delimiters '+='). None when the address is not at a bounce domain or carries no VERP."""
    text = str(address).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return None
    domains = {str(k).lower().rstrip("."): str(v).lower().rstrip(".") for k, v in bounce_domains.items()}
    sender = domains.get(domain.lower().rstrip("."))
    if sender is None:
        return None
    _, plus, rest = local.partition("+")
    rlocal, eq, rdomain = rest.rpartition("=")
    if not plus or not eq:
        return None
    recipient = normalise_address(f"{rlocal}@{rdomain}")
    return None if recipient is None else (recipient, sender)


def _sender_domain_of(domain: str, sender_domains: Collection[str]) -> str | None:
    d = domain.lower().strip().rstrip(".")
    for sd in sender_domains:
        if d == sd or d.endswith("." + sd):
            return sd
    return None


# ---------------------------------------------------------------------------------------- classification


def reply_rules(classes: Mapping[str, ProviderClass], klass: str | None = None) -> tuple[Rule, ...]:
    """The reply rules a bounce's diagnostic is matched against: when the recipient's provider class is known and
    configured, those the shaper tries for it (`shaping.rules_for`: its own, then `other`'s generic ones); else
    every class's (the recipient's class is not known while parsing: it needs the MX lookup the processor does),
    each class's rules in their order, `other` last."""
    if klass is not None and klass in classes:
        return rules_for(classes, klass)
    ordered = sorted(classes.values(), key=lambda c: (c.name == OTHER, c.name))
    return tuple(r for c in ordered for r in c.rules)


def _reply_code(diagnostic: str) -> tuple[int | None, str | None]:
    m = _REPLY.match(diagnostic)
    if m is None:
        return None, None
    return int(m.group("code")), m.group("enh")


def classify_bounce(status: str, diagnostic: str, rules: Mapping[str, ProviderClass],
                    klass: str | None = None) -> str:
    """'hard' | 'soft' | 'block' for a failed delivery. `status`: the DSN's Status ('5.1.1', may be ''),
    `diagnostic`: the remote reply as Postfix logs it ('550-5.1.1 The email account ...', may be ''), `rules`: the
    provider classes (`sendfleet.core.shaping.parse_classes` of the inventory's provider_classes and
    shaping_rules), `klass`: the recipient's provider class when known (then only its rules and `other`'s apply, see
    `reply_rules`).

    In order: an enhanced status saying the mailbox is gone (`HARD_STATUSES`) is hard; a reply any receiver's
    reply rule matches (the shaper's table: rate limits, reputation, authentication) is a block; then by the
    enhanced status: 4.x.x soft, 5.7.x and 5.1.7/5.1.8 (our sender refused) block, 5.1.x hard, 5.2.x-5.6.x soft
    (mailbox full, system, network, protocol, content); a status that says nothing (x.0.0 or none) goes by the
    text (policy or reputation words: block) and the reply code (5xx hard, 4xx soft); nothing at all: soft."""
    text = " ".join(str(diagnostic).split())
    code, text_enh = _reply_code(text)
    given = str(status).strip()
    enhanced = given if _STATUS.match(given) else text_enh
    if enhanced in HARD_STATUSES:
        return "hard"
    if match_rule(reply_rules(rules, klass), code, text_enh or enhanced, text) is not None:
        return "block"
    if enhanced is not None:
        cls, subject, detail = enhanced.split(".")
        if cls in ("2", "4"):
            return "soft"
        if subject == "7" or enhanced in SENDER_STATUSES:
            return "block"
        if subject == "1" and detail != "0":
            return "hard"
        if subject in ("2", "3", "4", "5", "6"):
            return "soft"
    if _POLICY_WORDS.search(text):
        return "block"
    if code is not None:
        return "hard" if code >= 500 else "soft"
    if enhanced is not None:
        return "hard" if enhanced.startswith("5.") else "soft"
    return "soft"


# ------------------------------------------------------------------------------------------ MIME helpers


def _h(msg: Message, name: str) -> str:
    """A header's value, unfolded and stripped ('' when absent)."""
    value = msg.get(name)
    return "" if value is None else " ".join(str(value).split())


def _all(msg: Message, name: str) -> list[str]:
    return [" ".join(str(v).split()) for v in msg.get_all(name) or ()]


def _param(msg: Message, name: str) -> str:
    value = msg.get_param(name)
    if not isinstance(value, str | tuple):
        return ""
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return str(value).strip().lower()


def _filename(msg: Message) -> str:
    name = msg.get_filename()
    return str(name).strip().lower() if name else ""


def _parts(msg: Message) -> Iterator[Message]:
    """The message and its parts, depth first, not descending into returned messages (message/rfc822)."""
    todo: list[Message] = [msg]
    seen = 0
    while todo:
        part = todo.pop(0)
        seen += 1
        if seen > _MAX_PARTS:
            raise FeedbackParseError(f"more than {_MAX_PARTS} MIME parts")
        yield part
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                todo[0:0] = [p for p in payload if isinstance(p, Message)]


def _decoded(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part (the email package
    parses them as messages; when it did not, e.g. for an encoded part, the decoded text split at blank lines)."""
    payload = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        blocks = [p for p in payload if isinstance(p, Message) and p.keys()]
    else:
        text = _decoded(part).decode("utf-8", "replace").replace("\r\n", "\n")
        parser = email.parser.HeaderParser(policy=compat32)
        blocks = [b for b in (parser.parsestr(chunk) for chunk in re.split(r"\n[ \t]*\n", text) if chunk.strip())
                  if b.keys()]
    return blocks


def _returned(parts: Sequence[Message]) -> Message | None:
    """The headers of the returned message (message/rfc822 or text/rfc822-headers part), if any."""
    for part in parts:
        if part.get_content_type() not in RETURNED_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            inner = next((p for p in payload if isinstance(p, Message)), None)
            if inner is not None:
                return inner
        data = _decoded(part)
        return email.parser.BytesHeaderParser(policy=compat32).parsebytes(data)
    return None


def _fleet(fleet_ips: Collection[str]) -> frozenset[str]:
    out = set()
    for ip in fleet_ips:
        try:
            out.add(str(ipaddress.ip_address(str(ip).strip())))
        except ValueError:
            continue
    return frozenset(out)


def _ip(token: str) -> str | None:
    text = token.strip()
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    text = text.strip(".:")
    if not text or len(text) > 45:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _received_fleet_ip(headers: Message | None, fleet: frozenset[str]) -> str | None:
    if headers is None or not fleet:
        return None
    for value in _all(headers, "Received"):
        for token in re.split(r"[^0-9A-Za-z.:]+", value):
            ip = _ip(token)
            if ip is not None and ip in fleet:
                return ip
    return None


def _dkim_domains(headers: Message) -> list[str]:
    out = []
    for sig in _all(headers, "DKIM-Signature"):
        m = re.search(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", sig)
        if m:
            out.append(m.group(1))
    return out


def _header_sender_domain(headers: Message | None, sender_domains: Collection[str]) -> str | None:
    if headers is None:
        return None
    candidates = list(_dkim_domains(headers))
    for value in _all(headers, "From"):
        addr = normalise_address(email.utils.parseaddr(value)[1])
        if addr is not None:
            candidates.append(addr.rpartition("@")[2])
    for domain in candidates:
        found = _sender_domain_of(domain, sender_domains)
        if found is not None:
            return found
    return None


def _verp_of(values: Sequence[str], bounce_domains: Mapping[str, str]) -> tuple[str, str] | None:
    for value in values:
        found = verp_decode(email.utils.parseaddr(value)[1] or value, bounce_domains)
        if found is not None:
            return found
    return None


def _typed(value: str) -> str:
    """'dns; mx.example' -> 'mx.example', 'smtp; 550 ...' -> '550 ...' (the type of an RFC 3464 field dropped)."""
    kind, sep, rest = value.partition(";")
    if sep and _TOKEN.match(kind.strip().lower()):
        return rest.strip()
    return value.strip()


# ------------------------------------------------------------------------------------------------- DSN


def _parse_dsn(parts: Sequence[Message], envelope: str, bounce_domains: Mapping[str, str],
               fleet: frozenset[str], rules: Mapping[str, ProviderClass]) -> Parsed:
    status_part = next(p for p in parts if p.get_content_type() in DSN_TYPES)
    blocks = _blocks(status_part)
    if blocks and not (_h(blocks[0], "Final-Recipient") or _h(blocks[0], "Action")):
        per_message, per_recipient = blocks[0], blocks[1:]
    else:  # no per-message block (not RFC 3464, but seen)
        per_message, per_recipient = Message(), blocks
    if not per_recipient:
        raise FeedbackParseError("DSN: the delivery-status part has no per-recipient fields")
    returned = _returned(parts)
    sender_domains = set(bounce_domains.values())
    verp = verp_decode(envelope, bounce_domains) or (
        _verp_of(_all(returned, "Return-Path"), bounce_domains) if returned is not None else None)
    sender = verp[1] if verp else _header_sender_domain(returned, {s.lower() for s in sender_domains})
    source_ip = _received_fleet_ip(returned, fleet)
    reporting = _typed(_h(per_message, "Reporting-MTA")).lower() or None
    relevant = [b for b in per_recipient if _h(b, "Action").split(" ")[0].lower() in ("failed", "delayed")]
    if not relevant:
        actions = sorted({_h(b, "Action").lower()[:20] or "none" for b in per_recipient})
        raise FeedbackParseError(f"DSN: no failed or delayed recipient (actions: {', '.join(actions)})")
    bounces = []
    for i, block in enumerate(relevant):
        action = _h(block, "Action").split(" ")[0].lower()
        own = normalise_address(_h(block, "Original-Recipient")) or normalise_address(_h(block, "Final-Recipient"))
        if verp is not None and (len(relevant) == 1 or own is None or own.lower() == verp[0].lower()):
            recipient: str | None = verp[0]
        else:
            recipient = own
        if recipient is None:
            raise FeedbackParseError(f"DSN: recipient block {i + 1} names no readable recipient "
                                     f"(Final-Recipient {_h(block, 'Final-Recipient')[:80]!r})")
        diagnostic = _typed(_h(block, "Diagnostic-Code"))[:_DIAGNOSTIC_CAP]
        status = _h(block, "Status").split(" ")[0]
        if not _STATUS.match(status):
            status = _reply_code(diagnostic)[1] or ("4.0.0" if action == "delayed" else "5.0.0")
        kind = "soft" if action == "delayed" else classify_bounce(status, diagnostic, rules)
        remote = _typed(_h(block, "Remote-MTA")).split(" ")[0].lower().rstrip(".") or None
        bounces.append(Bounce(recipient, sender, action, status, kind, diagnostic, remote, source_ip, reporting))
    return Parsed("dsn", bounces=tuple(bounces))


# ------------------------------------------------------------------------------------------------- ARF


def _redacted(address: str) -> bool:
    local = address.rpartition("@")[0].lower()
    return "redacted" in local or set(local) <= {"x", "*", "."}


def _arrival(value: str) -> str | None:
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC).isoformat()
    except (OverflowError, ValueError):
        return None


def _parse_arf(msg: Message, parts: Sequence[Message], envelope: str, bounce_domains: Mapping[str, str],
               fleet: frozenset[str]) -> Parsed:
    report = next((p for p in parts if p.get_content_type() == ARF_TYPE), None)
    if report is None:
        raise FeedbackParseError("ARF: no message/feedback-report part")
    blocks = _blocks(report)
    if not blocks:
        raise FeedbackParseError("ARF: the feedback-report part is empty")

    def field(name: str) -> str:
        return next((v for b in blocks if (v := _h(b, name))), "")

    def fields(name: str) -> list[str]:
        return [v for b in blocks for v in _all(b, name) if v]

    feedback_type = field("Feedback-Type").split(" ")[0].lower()
    if not _TOKEN.match(feedback_type):
        raise FeedbackParseError(f"ARF: Feedback-Type missing or unreadable: {feedback_type[:40]!r}")
    returned = _returned(parts)
    sender_domains = {s.lower() for s in bounce_domains.values()}
    verp = (verp_decode(envelope, bounce_domains) or _verp_of(fields("Original-Mail-From"), bounce_domains)
            or (_verp_of(_all(returned, "Return-Path"), bounce_domains) if returned is not None else None))
    recipient = verp[0] if verp else None
    if recipient is None:
        stated = [*fields("Original-Rcpt-To"), *(_all(returned, "X-HmXmrOriginalRecipient") if returned else [])]
        for value in stated:
            addr = normalise_address(email.utils.parseaddr(value)[1] or value)
            if addr is not None and not _redacted(addr):
                recipient = addr
                break
    if recipient is None:
        raise FeedbackParseError("ARF: no recipient (no VERP address, Original-Rcpt-To or original recipient header)")
    sender = verp[1] if verp else (_header_sender_domain(returned, sender_domains)
                                   or _sender_domain_of(field("Reported-Domain"), sender_domains))
    source = _ip(field("Source-IP"))
    source_ip = source if source is not None and source in fleet else _received_fleet_ip(returned, fleet)
    from_addr = normalise_address(email.utils.parseaddr(_h(msg, "From"))[1])
    return Parsed("arf", complaints=(Complaint(
        recipient=recipient,
        sender_domain=sender,
        source_ip=source_ip,
        feedback_type=feedback_type,
        reporter=from_addr.rpartition("@")[2] if from_addr else None,
        arrival=_arrival(field("Arrival-Date") or field("Received-Date")),
        user_agent=field("User-Agent")[:200] or None,
    ),))


# ------------------------------------------------------------------------------------ plain-text bounces


_BOUNCER = re.compile(r"(?i)^(?:mailer-daemon|mail-daemon|postmaster|mdaemon)@")
_BOUNCE_SUBJECT = re.compile(r"(?i)undeliver|delivery (?:status notification|failure|has failed)|"
                             r"mail delivery failed|returned mail|failure notice|could not be delivered")
_TEXT_REPLY = re.compile(r"(?<![\w.])(?P<code>5\d\d)[ -](?P<enh>5\.\d{1,3}\.\d{1,3})(?![\w.])[^\n]*")


def _looks_like_bounce(msg: Message) -> bool:
    sender = normalise_address(email.utils.parseaddr(_h(msg, "From"))[1]) or ""
    return _BOUNCER.match(sender) is not None or _BOUNCE_SUBJECT.search(_h(msg, "Subject")) is not None


def _parse_plain_bounce(msg: Message, parts: Sequence[Message], verp: tuple[str, str], fleet: frozenset[str],
                        rules: Mapping[str, ProviderClass]) -> Parsed:
    """A bounce in free text (Exim's and qmail's default) at a VERP address: the recipient is the VERP one, the
    first '5xx 5.x.x ...' line of the first text/plain part says why. Anything less clear is a parse error."""
    body = next((p for p in parts if p.get_content_type() == "text/plain" and not p.is_multipart()), None)
    text = _decoded(body).decode("utf-8", "replace") if body is not None else ""
    m = _TEXT_REPLY.search(text)
    if m is None:
        raise FeedbackParseError("plain-text bounce without a delivery-status part names no 5xx 5.x.x reply")
    diagnostic = " ".join(m.group(0).split())[:_DIAGNOSTIC_CAP]
    status = m.group("enh")
    return Parsed("dsn", bounces=(Bounce(verp[0], verp[1], "failed", status, classify_bounce(status, diagnostic, rules),
                                         diagnostic, None, _received_fleet_ip(_returned(parts), fleet)),))


# --------------------------------------------------------------------------------------------- reports


def _report_candidates(parts: Sequence[Message]) -> list[Message]:
    out = []
    for part in parts:
        if part.is_multipart() or part.get_content_maintype() in ("multipart", "message"):
            continue
        ctype = part.get_content_type()
        if ctype in _REPORT_TYPES or _filename(part).endswith(_REPORT_SUFFIXES):
            out.append(part)
    return out


def _parse_report(parts: Sequence[Message], limits: Limits) -> Parsed:
    candidates = _report_candidates(parts)
    if not candidates:
        raise FeedbackParseError("not a DSN, ARF report, DMARC or TLS report: no delivery-status, "
                                 "feedback-report or report attachment")
    for part in candidates:
        ctype = part.get_content_type()
        name = _filename(part) or ctype
        content = inflate(_decoded(part), name, limits, f"attachment {name[:80]!r}")
        # the content says what it is when it can; else the type or name it was sent with
        hint = ("json" if ctype.startswith("application/tlsrpt") or ".json" in name
                else "xml" if ctype in ("text/xml", "application/xml") or ".xml" in name else None)
        what = sniff(content) or hint
        if what == "xml":
            return Parsed("dmarc", dmarc=parse_dmarc(content))
        if what == "json":
            return Parsed("tlsrpt", tlsrpt=parse_tlsrpt(content))
    raise FeedbackParseError("no attachment holds an XML (DMARC) or JSON (TLS) report")


# ------------------------------------------------------------------------------------------------ entry


def parse_message(raw: bytes, recipient: str, *, bounce_domains: Mapping[str, str], fleet_ips: Collection[str],
                  rules: Mapping[str, ProviderClass], limits: Limits = DEFAULT_LIMITS) -> Parsed:
    """One message as received by the feedback host -> what it reports. `recipient`: its envelope recipient
    (the VERP address of a bounce, 'dmarc@bounces.shop.test' ...); `bounce_domains`: bounce domain -> sender
    domain; `fleet_ips`: every sending IP; `rules`: the provider classes (`shaping.parse_classes`), for
    `classify_bounce`. Raises FeedbackParseError (one line) for anything it cannot read."""
    if len(raw) > limits.max_message_bytes:
        raise FeedbackParseError(f"message of {len(raw)} bytes is larger than {limits.max_message_bytes} "
                                 "(max_message_bytes)")
    if not raw.strip():
        raise FeedbackParseError("empty message")
    try:
        msg = email.message_from_bytes(bytes(raw), policy=compat32)
        parts = list(_parts(msg))
    except RecursionError:
        raise FeedbackParseError("MIME structure nested too deep") from None
    fleet = _fleet(fleet_ips)
    report_type = _param(msg, "report-type") if msg.get_content_type() == "multipart/report" else ""
    types = {p.get_content_type() for p in parts}
    if report_type == "feedback-report" or ARF_TYPE in types:
        return _parse_arf(msg, parts, recipient, bounce_domains, fleet)
    if report_type in ("delivery-status", "global-delivery-status") or types & set(DSN_TYPES):
        if not types & set(DSN_TYPES):
            raise FeedbackParseError("DSN: multipart/report; report-type=delivery-status without a "
                                     "message/delivery-status part")
        return _parse_dsn(parts, recipient, bounce_domains, fleet, rules)
    if report_type:
        raise FeedbackParseError(f"unsupported report-type {report_type[:40]!r}")
    verp = verp_decode(recipient, bounce_domains)
    if verp is not None and _looks_like_bounce(msg):
        return _parse_plain_bounce(msg, parts, verp, fleet, rules)
    return _parse_report(parts, limits)
