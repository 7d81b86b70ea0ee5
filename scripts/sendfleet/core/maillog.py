"""Delivery results and providers' SMTP replies per (sending IP, provider class), from Postfix's log. Pure:
lines in, counts and replies out.

Each transport of the postfix role logs under its own syslog name: the per-IP transport
(`-o syslog_name=postfix/sf_198_51_100_72`, class `other`) and one per IP and provider class
(`postfix/sf_198_51_100_72_gmail`; sendfleet.core.poolmap.split_transport reads both back), so a delivery
line names the IP and the class that carried it:

    postfix/sf_198_51_100_72/smtp[812]: 4Q2...: to=<a@gmail.com>, relay=...[...]:25, delay=0.2, ...,
        dsn=4.7.0, status=deferred (host mx[...] said: 421 4.7.0 rate limited (in reply to RCPT TO command))

Lines of other services (the `retry`/`error` transports deferring mail of a suspended destination, local
delivery) carry no sending IP and are not counted per IP. One line = one recipient delivery attempt.

The destination of a count is the provider class of the transport that carried the mail, never the recipient
domain: the shaper chose the transport from the domain's MX hosts, so a Google Workspace domain counts as
`gmail`, and the counters stay bounded by IPs x classes x statuses whatever the recipients.

The sender domain of a count comes from qmgr's line for the message (`4Q2...: from=<b+a=gmail.test@bounces.shop.test>,
size=...`): the envelope sender's domain is a configured bounce domain (VERP) or sender domain, mapped to its sender
domain; anything else is `other`. smtpd's refusals of a suppressed recipient (the suppression map's reply says
"suppressed") are counted per sender domain the same way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sendfleet.core import poolmap

STATUSES = ("sent", "deferred", "bounced")

_DELIVERY = re.compile(
    r"^(?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,]*),"
    r".*? dsn=(?P<dsn>[0-9.]+), status=(?P<status>[a-z]+)(?: \((?P<text>.*)\))?$"
)
# 'Nov 27 20:30:01 host postfix/x/smtp[12]: message' (syslog / maillog_file) or ISO-8601 timestamps.
_FILE_LINE = re.compile(
    r"^(?P<ts>\S+(?: +\d+ [\d:]+)?) (?P<host>\S+) (?P<ident>[^\[: ]+)(?:\[\d+\])?: (?P<msg>.*)$"
)
# the remote server's own words in a status text: 'host mx[ip] said: 421 ...' or, for a greeting,
# 'host mx[ip] refused to talk to me: 554 ...' (possibly after 'delivery temporarily suspended: ')
_REMOTE = re.compile(r"\bhost \S+ (?:said|refused to talk to me): ")
_IN_REPLY = re.compile(r" \(in reply to (?P<cmd>[^()]*) command\)$")
_WHILE = re.compile(r" while sending (?P<cmd>MAIL FROM|RCPT TO|DATA|end of data|message body)\b")
_REPLY_CODE = re.compile(r"(?P<code>[2-5]\d\d)(?:[ -](?P<enh>[2-5]\.\d{1,3}\.\d{1,3})(?![\d.]))?(?=[ -]|$)")
_NUMBERS = re.compile(r"\b\d{4,}\b|\b[0-9a-f]{10,}\b", re.IGNORECASE)
_ADDRESS = re.compile(r"<[^>]*>|\[[0-9a-fA-F:.]+\]")
_MAX_REASON = 120
_ENVELOPE = re.compile(r"^(?P<qid>[0-9A-Za-z]+): from=<(?P<sender>[^>]*)>, size=\d+")
_REMOVED = re.compile(r"^(?P<qid>[0-9A-Za-z]+): removed$")
_REFUSAL = re.compile(r"\breject: RCPT from .*\bsuppressed\b.*; from=<(?P<sender>[^>]*)>")


@dataclass(frozen=True)
class Delivery:
    time: float  # Unix seconds
    queue_id: str
    transport: str  # e.g. sf_198_51_100_72
    recipient_domain: str
    status: str  # sent | deferred | bounced (others, e.g. expired, are ignored by the counters)
    dsn: str
    reason: str  # normalised reply/reason for deferred and bounced ("" for sent)
    klass: str = poolmap.OTHER_CLASS  # the provider class of the transport (`other`: the per-IP transport)


def transport_of(ident: str) -> str | None:
    """'postfix/sf_198_51_100_72/smtp' -> 'sf_198_51_100_72', 'postfix/sf_198_51_100_72_gmail/smtp' ->
    'sf_198_51_100_72_gmail'; other idents (postfix/smtp, postfix/qmgr, postfix/retry) -> None."""
    parts = ident.split("/")
    if len(parts) == 3 and parts[2] in ("smtp", "lmtp"):
        return parts[1]
    return None


def reply_text(reason: str) -> tuple[str, str | None]:
    """The status text of a delivery line (what `status=deferred (...)` holds) -> (the remote reply, the SMTP
    command it answered). The reply is what follows 'host mx[ip] said: ' (or 'refused to talk to me: ') up to
    ' (in reply to X command)', whole; without a remote reply, the text itself ('250 2.0.0 Ok' of a sent line,
    or Postfix's own words: 'connect to mx[ip]:25: Connection refused'). The command is X, or what Postfix was
    sending when the connection was lost or timed out, else None."""
    remote = _REMOTE.search(reason)
    text = reason[remote.end() :] if remote is not None else reason
    tail = _IN_REPLY.search(text)
    if tail is not None:
        return text[: tail.start()], tail.group("cmd")
    sending = _WHILE.search(text)
    return text, sending.group("cmd") if sending is not None else None


def normalise_reason(text: str) -> str:
    """A reason that groups well: the remote reply when there is one (code, enhanced code and text),
    with queue IDs, addresses and long numbers masked; trimmed."""
    reason = reply_text(text)[0].strip()
    reason = _ADDRESS.sub("<>", reason)
    reason = _NUMBERS.sub("#", reason)
    reason = re.sub(r"\s+", " ", reason).strip().rstrip(".")
    return reason[:_MAX_REASON]


def parse_delivery(ident: str, message: str, time: float) -> Delivery | None:
    transport = transport_of(ident)
    if transport is None:
        return None
    m = _DELIVERY.match(message)
    if m is None:
        return None
    rcpt = m.group("rcpt")
    domain = rcpt.rsplit("@", 1)[1].lower() if "@" in rcpt else ""
    status = m.group("status")
    text = m.group("text") or ""
    reason = normalise_reason(text) if status != "sent" else ""
    return Delivery(time, m.group("qid"), transport, domain, status, m.group("dsn"), reason, class_of(transport))


def sender_domain(address: str, sender_domains: Mapping[str, str]) -> str:
    """The sender domain an envelope sender belongs to: its domain when that is a configured sender domain, the
    sender domain of its bounce domain (`sender_domains`: sender domain -> bounce domain) when it is one, else
    `other` (bounded labels whatever the senders)."""
    domain = address.rsplit("@", 1)[1].lower().rstrip(".") if "@" in address else ""
    if domain in sender_domains:
        return domain
    for sender, bounce in sender_domains.items():
        if domain == str(bounce).lower():
            return sender
    return poolmap.OTHER_CLASS


def parse_envelope(ident: str, message: str) -> tuple[str, str] | None:
    """qmgr's line naming a message's envelope sender -> (queue ID, sender address)."""
    if not ident.endswith("/qmgr"):
        return None
    m = _ENVELOPE.match(message)
    return (m.group("qid"), m.group("sender")) if m is not None else None


def parse_removed(ident: str, message: str) -> str | None:
    """qmgr's line for a message that left the queue -> its queue ID."""
    if not ident.endswith("/qmgr"):
        return None
    m = _REMOVED.match(message)
    return m.group("qid") if m is not None else None


def parse_refusal(ident: str, message: str) -> str | None:
    """smtpd's reject of a recipient the suppression list holds -> the envelope sender of the attempt."""
    if not ident.endswith("/smtpd"):
        return None
    m = _REFUSAL.search(message)
    return m.group("sender") if m is not None else None


REPLY_STATUSES = ("deferred", "bounced", "sent")


@dataclass(frozen=True)
class Reply:
    """One delivery attempt of a sendfleet transport and what the provider answered to it."""

    time: float  # Unix seconds
    queue_id: str
    transport: str  # sf_198_51_100_72_gmail
    ip: str  # the sending IP the transport is bound to
    klass: str  # the provider class of the transport ('other': the per-IP transport)
    recipient: str
    recipient_domain: str  # lower case
    status: str  # deferred | bounced | sent
    dsn: str  # Postfix's status code, e.g. 4.7.28
    code: int | None  # the remote SMTP reply code (421); None when no server replied (connect failed, timeout)
    enhanced: str | None  # the enhanced status code of the reply text, else the dsn
    text: str  # the remote reply whole as Postfix logs it (code included, the lines of a multi-line reply
    # joined by spaces, each with its code), else Postfix's own reason ('connect to mx[...]:25: Connection refused')
    command: str | None  # the SMTP command answered ('RCPT TO', 'end of DATA', 'MAIL FROM'), or being sent
    # when the connection was lost or timed out; None when unknown


@functools.lru_cache(maxsize=4096)
def _path(transport: str, prefix: str) -> tuple[str, str] | None:
    return poolmap.split_transport(transport, prefix)


def parse_reply(ident: str, message: str, time: float, prefix: str = "sf") -> Reply | None:
    """A delivery line of a sendfleet transport (`<prefix>_<slug>` or `<prefix>_<slug>_<class>`) -> the reply,
    for status deferred, bounced or sent; None for any other line (other services, other messages of the
    transport, other statuses). Never raises."""
    parts = ident.split("/")
    if len(parts) != 3 or parts[2] not in ("smtp", "lmtp"):
        return None
    transport = parts[1]
    path = _path(transport, prefix)
    if path is None:
        return None
    m = _DELIVERY.match(message)
    if m is None or m.group("status") not in REPLY_STATUSES:
        return None
    rcpt = m.group("rcpt")
    dsn = m.group("dsn")
    status = m.group("status")
    code: int | None = None
    enhanced: str | None = None
    text, command = reply_text(m.group("text") or "")
    cm = _REPLY_CODE.match(text)
    if cm is not None:
        code = int(cm.group("code"))
        enhanced = cm.group("enh")
    return Reply(
        time=time,
        queue_id=m.group("qid"),
        transport=transport,
        ip=path[0],
        klass=path[1],
        recipient=rcpt,
        recipient_domain=rcpt.rsplit("@", 1)[1].lower() if "@" in rcpt else "",
        status=status,
        dsn=dsn,
        code=code,
        enhanced=enhanced or dsn,
        text=text,
        command=command,
    )


_MONTHS = {
    m: i + 1 for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))
}


def parse_file_line(line: str, year: int) -> tuple[float, str, str] | None:
    """A syslog-style line (maillog_file, /var/log/mail.log) -> (time, ident, message). Timestamps in the
    'Nov 27 20:30:01' form are read as UTC in `year`; ISO-8601 ones as written."""
    m = _FILE_LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    ts = m.group("ts")
    try:
        if ts[:3] in _MONTHS:
            month, day, clock = ts.split()
            hh, mm, ss = (int(x) for x in clock.split(":"))
            when = datetime(year, _MONTHS[month], int(day), hh, mm, ss, tzinfo=UTC)
        else:
            when = datetime.fromisoformat(ts)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
    except ValueError:
        return None
    return when.timestamp(), m.group("ident"), m.group("msg")


def provider_label(name: str, classes: Collection[str]) -> str:
    """The provider label of a count: `name` when it is one of `classes` (or `other`), else `other`. Counts
    of a class no longer configured, and the recipient domains that labelled the counts of older state files
    (`example.org`, `unknown`), go to `other`: what the per-IP transport carries."""
    return name if name == poolmap.OTHER_CLASS or name in classes else poolmap.OTHER_CLASS


def hour_key(time: float) -> str:
    return datetime.fromtimestamp(time, UTC).strftime("%Y-%m-%dT%H")


@dataclass
class DeliveryBook:
    """Counters per (ip, provider, status) in total and per hour, and reasons per (ip, provider, status);
    the provider is the class of the transport that carried the mail (`provider_label`).

    `classes`: the configured provider classes (`other` is always known). `ips`: transport -> IP (the per-IP
    transports). A class transport (`sf_<slug>_gmail`) counts under the IP of its per-IP transport. A transport
    the book does not know (an IP since removed) is counted under the IP its name encodes when it can be read
    back, else under the transport name.

    `sender_domains` (sender domain -> bounce domain): the counts per sender domain and status (`sender_domain`),
    in total and per hour, and the suppression refusals per sender domain; `envelopes` remembers the sender domain
    of each message qmgr named until it leaves the queue."""

    ips: Mapping[str, str]
    classes: Collection[str]
    sender_domains: Mapping[str, str] = field(default_factory=dict)
    totals: dict[tuple[str, str, str], int] = field(default_factory=dict)
    hours: dict[str, dict[tuple[str, str, str], int]] = field(default_factory=dict)
    reasons: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    last_sent: dict[str, float] = field(default_factory=dict)  # ip -> time of its last 'sent'
    domain_totals: dict[tuple[str, str], int] = field(default_factory=dict)  # (sender domain, status)
    domain_hours: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)  # sender domain -> refused suppressed recipients
    envelopes: dict[str, tuple[str, float]] = field(default_factory=dict)  # queue ID -> (sender domain, time)
    _ip_of: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # transport -> IP (memo)

    def feed(self, ident: str, message: str, time: float) -> bool:
        """One log line: a delivery, qmgr's envelope or removal of a message, or a suppression refusal. True when
        it was one of them."""
        d = parse_delivery(ident, message, time)
        if d is not None:
            self.add(d)
            return True
        envelope = parse_envelope(ident, message)
        if envelope is not None:
            self.envelopes[envelope[0]] = (sender_domain(envelope[1], self.sender_domains), time)
            return True
        removed = parse_removed(ident, message)
        if removed is not None:
            self.envelopes.pop(removed, None)
            return True
        refused = parse_refusal(ident, message)
        if refused is not None:
            domain = sender_domain(refused, self.sender_domains)
            self.refusals[domain] = self.refusals.get(domain, 0) + 1
            return True
        return False

    def domain_label(self, name: str) -> str:
        """A configured sender domain, else `other` (a domain no longer configured)."""
        return name if name in self.sender_domains else poolmap.OTHER_CLASS

    def ip_of(self, transport: str) -> str:
        ip = self._ip_of.get(transport)
        if ip is None:
            ip = self._ip_of[transport] = self._read_ip(transport)
        return ip

    def _read_ip(self, transport: str) -> str:
        if transport in self.ips:
            return self.ips[transport]
        base = base_transport(transport)
        if base is not None and base in self.ips:
            return self.ips[base]
        return ip_from_transport(transport) or transport

    def add(self, d: Delivery) -> None:
        if d.status not in STATUSES:
            return
        ip = self.ip_of(d.transport)
        key = (ip, provider_label(d.klass, self.classes), d.status)
        self.totals[key] = self.totals.get(key, 0) + 1
        hour = hour_key(d.time)
        bucket = self.hours.setdefault(hour, {})
        bucket[key] = bucket.get(key, 0) + 1
        envelope = self.envelopes.get(d.queue_id)
        dkey = (envelope[0] if envelope is not None else poolmap.OTHER_CLASS, d.status)
        self.domain_totals[dkey] = self.domain_totals.get(dkey, 0) + 1
        dbucket = self.domain_hours.setdefault(hour, {})
        dbucket[dkey] = dbucket.get(dkey, 0) + 1
        if d.status == "sent":
            self.last_sent[ip] = max(self.last_sent.get(ip, 0.0), d.time)
        elif d.reason:
            rkey = (*key, d.reason)
            self.reasons[rkey] = self.reasons.get(rkey, 0) + 1

    def prune(self, keep_hours: int, now: float) -> None:
        oldest = hour_key(now - keep_hours * 3600)
        for hour in [h for h in self.hours if h < oldest]:
            del self.hours[hour]
        for hour in [h for h in self.domain_hours if h < oldest]:
            del self.domain_hours[hour]
        # a message qmgr never reported removed (its line before the log kept) is forgotten with its hour
        cutoff = now - keep_hours * 3600
        for qid in [q for q, (_, t) in self.envelopes.items() if t < cutoff]:
            del self.envelopes[qid]

    def top_reasons(self, limit: int) -> list[tuple[tuple[str, str, str, str], int]]:
        return sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    # -- state file (JSON) -------------------------------------------------------------------------------

    def as_dict(self, reasons_limit: int = 50) -> dict[str, Any]:
        def rows(counts: Mapping[tuple[str, str, str], int]) -> list[dict[str, Any]]:
            return [
                {"ip": ip, "provider": prov, "status": st, "count": n}
                for (ip, prov, st), n in sorted(counts.items())
            ]

        return {
            "totals": rows(self.totals),
            "hours": {h: rows(c) for h, c in sorted(self.hours.items())},
            "reasons": [
                {"ip": ip, "provider": prov, "status": st, "reason": r, "count": n}
                for (ip, prov, st, r), n in self.top_reasons(reasons_limit)
            ],
            "last_sent": dict(sorted(self.last_sent.items())),
            "sender_domain_totals": _by_domain(self.domain_totals),
            "by_sender_domain": {h: _by_domain(c) for h, c in sorted(self.domain_hours.items())},
            "suppression_refusals": dict(sorted(self.refusals.items())),
            "envelopes": {q: [d, t] for q, (d, t) in sorted(self.envelopes.items())},
        }

    def load(self, data: Mapping[str, Any]) -> None:
        """Read a state file back; rows whose provider is not a known class (a recipient domain of an older
        file) are summed into `other`, so no count is lost and no old label comes back."""

        def label(r: Mapping[str, Any]) -> str:
            return provider_label(str(r["provider"]), self.classes)

        def read(rows: Any) -> dict[tuple[str, str, str], int]:
            out: dict[tuple[str, str, str], int] = {}
            for r in rows or []:
                key = (str(r["ip"]), label(r), str(r["status"]))
                out[key] = out.get(key, 0) + int(r["count"])
            return out

        self.totals = read(data.get("totals"))
        self.hours = {str(h): read(rows) for h, rows in (data.get("hours") or {}).items()}
        self.reasons = {}
        for r in data.get("reasons") or []:
            rkey = (str(r["ip"]), label(r), str(r["status"]), str(r["reason"]))
            self.reasons[rkey] = self.reasons.get(rkey, 0) + int(r["count"])
        self.last_sent = {str(k): float(v) for k, v in (data.get("last_sent") or {}).items()}

        def read_domains(cells: Any) -> dict[tuple[str, str], int]:
            out: dict[tuple[str, str], int] = {}
            for domain, counts in (cells or {}).items():
                for st, n in (counts or {}).items():
                    if st in STATUSES and int(n):
                        dkey = (self.domain_label(str(domain)), str(st))
                        out[dkey] = out.get(dkey, 0) + int(n)
            return out

        self.domain_totals = read_domains(data.get("sender_domain_totals"))
        self.domain_hours = {str(h): read_domains(c) for h, c in (data.get("by_sender_domain") or {}).items()}
        self.refusals = {}
        for domain, n in (data.get("suppression_refusals") or {}).items():
            dlabel = self.domain_label(str(domain))
            self.refusals[dlabel] = self.refusals.get(dlabel, 0) + int(n)
        self.envelopes = {
            str(q): (self.domain_label(str(v[0])), float(v[1])) for q, v in (data.get("envelopes") or {}).items()
        }


def _by_domain(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """(sender domain, status) -> n as {domain: {"sent": n, "deferred": n, "bounced": n}} (delivery.json)."""
    out: dict[str, dict[str, int]] = {}
    for (domain, st), n in sorted(counts.items()):
        out.setdefault(domain, dict.fromkeys(STATUSES, 0))[st] = n
    return out


def _split(transport: str) -> tuple[str, str] | None:
    """(IP, class) of a sendfleet transport of any prefix (the text before the first '_')."""
    prefix, sep, _ = transport.partition("_")
    return poolmap.split_transport(transport, prefix) if sep else None


def ip_from_transport(transport: str) -> str | None:
    """'sf_198_51_100_72' -> '198.51.100.72'; 'sf_20010db8...' (32 hex digits) -> the IPv6 address; a class
    transport ('sf_198_51_100_72_gmail') -> the IP it sends from."""
    split = _split(transport)
    return split[0] if split else None


def class_of(transport: str) -> str:
    """The provider class a transport carries: 'gmail' for 'sf_198_51_100_72_gmail', 'other' for the per-IP
    transport and for any name that is not a sendfleet transport."""
    split = _split(transport)
    return split[1] if split else poolmap.OTHER_CLASS


def base_transport(transport: str) -> str | None:
    """The per-IP transport of a class transport ('sf_198_51_100_72_gmail' -> 'sf_198_51_100_72'); the
    per-IP transport itself; None for a name that is not a sendfleet transport."""
    split = _split(transport)
    if split is None:
        return None
    return poolmap.transport_name(split[0], transport.partition("_")[0])


@dataclass(frozen=True)
class Summary:
    """Per (ip, provider): sent, deferred, bounced over a window, and the top reasons."""

    rows: list[dict[str, Any]]
    reasons: list[dict[str, Any]]


def summarise(
    hours: Mapping[str, Iterable[Mapping[str, Any]]],
    since_hour: str,
    reasons: Iterable[Mapping[str, Any]],
    classes: Collection[str],
) -> Summary:
    """Sum hourly rows (ip, provider, status, count) from `since_hour` on, into rows per (ip, provider); a
    provider that is not one of `classes` counts as `other` (`provider_label`), in the rows and the reasons."""
    acc: dict[tuple[str, str], dict[str, int]] = {}
    for hour, rows in hours.items():
        if hour < since_hour:
            continue
        for r in rows:
            cell = acc.setdefault((str(r["ip"]), provider_label(str(r["provider"]), classes)),
                                  dict.fromkeys(STATUSES, 0))
            if r["status"] in cell:
                cell[str(r["status"])] += int(r["count"])
    out = [{"ip": ip, "provider": prov, **counts} for (ip, prov), counts in sorted(acc.items())]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in reasons:
        row = {**r, "provider": provider_label(str(r["provider"]), classes)}
        key = (row.get("ip"), row["provider"], row.get("status"), row.get("reason"))
        if key in merged:
            merged[key]["count"] = int(merged[key]["count"]) + int(row["count"])
        else:
            merged[key] = row
    return Summary(out, list(merged.values()))
