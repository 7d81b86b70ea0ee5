"""Readiness verdicts: what a receiving MX saw of each test message, judged per sending IP and per domain.

Pure: no I/O. The adapter (`sendfleet.readiness`) submits uniquely tagged messages through every sender
host for every sender domain of its pools, collects them where they arrived (the lab's sink, or a seed
mailbox in production), gathers the DNS/DKIM/SPF evidence through the inventory's resolver and hands it
here as `Evidence`. This module decides, INDEPENDENTLY of the code that configured the fleet (it reads
only the inventory's intent and what the receiving side saw):

- ip      the connecting IP is one of the in-service IPs of the domain's pool on the host submitted to
- fcrdns  the IP has exactly one PTR, that name resolves back to the IP, and it is the inventory's PTR
- helo    the HELO name the MX saw equals that PTR name
- dkim    a DKIM signature verifies (key from DNS) with d= aligned to the From domain
- spf     SPF evaluates to pass for the connecting IP and the envelope sender
- dmarc   a DMARC record is published and DKIM or SPF passes aligned with the From domain
- tls     the message arrived over TLS

A pool picks one of its per-IP transports at random for each message, so readiness cannot aim at one
IP: it sends enough messages per (host, domain) for every IP of the pool to be exercised (rounds, until
each was seen or a cap is reached) and reports per IP which were seen. An IP never seen while others of
the same pool on the same host delivered is a failure (not in service); a (host, domain) from which
nothing arrived at all could not be checked (exit 3) unless the host refused the submissions (exit 1).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sendfleet.core.dmarc import DmarcError, DmarcRecord, aligned, discovery_names
from sendfleet.core.dmarc import policy as dmarc_policy
from sendfleet.core.inventory import Inventory, normalize_name

CHECKS = ("ip", "fcrdns", "helo", "dkim", "spf", "dmarc", "tls")
Verdict = Literal["pass", "fail", "unknown"]
_RANK: dict[str, int] = {"pass": 0, "unknown": 1, "fail": 2}
TAG_HEADER = "X-Sendfleet-Readiness"


# ------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Route:
    """Messages submitted to `host` (at `address`) for `domain` leave by one of `ips` (its pool's IPs there)."""

    host: str
    address: str
    domain: str
    pool: str
    ips: tuple[str, ...]
    ptrs: Mapping[str, str]  # ip -> the inventory's PTR name
    helos: Mapping[str, str]  # ip -> the inventory's HELO name


def plan_routes(
    inv: Inventory, *, hosts: Sequence[str] = (), domains: Sequence[str] = (), group: str = "senders"
) -> list[Route]:
    """One route per (sender host, sender domain whose pool has IPs on that host)."""
    routes: list[Route] = []
    candidates = inv.group(group) or [h for h in inv.hosts.values() if h.sending_ips]
    for host in candidates:
        if hosts and host.name not in hosts:
            continue
        address = str(host.vars.get("ansible_host") or host.name)
        for domain in sorted(inv.sender_domains.values(), key=lambda d: d.name):
            if domains and domain.name not in domains:
                continue
            sips = [s for s in host.sending_ips if s.pool == domain.pool]
            if not sips:
                continue
            routes.append(
                Route(
                    host=host.name,
                    address=address,
                    domain=domain.name,
                    pool=domain.pool,
                    ips=tuple(str(s.ip) for s in sips),
                    ptrs={str(s.ip): s.ptr for s in sips},
                    helos={str(s.ip): s.helo for s in sips},
                )
            )
    return routes


def make_tag(run_id: str, serial: int) -> str:
    """A tag unique to one message of one run; safe in a local part, a header and a Message-ID."""
    return f"sfr{run_id}x{serial:04d}"


def recipient_for(template: str, tag: str) -> str:
    """`readiness+{tag}@gmail.test` -> `readiness+sfr...@gmail.test`."""
    return template.replace("{tag}", tag)


def messages_for_round(route: Route, seen_ips: set[str], sent: int, cap_per_ip: int) -> int:
    """How many more messages to submit on `route`: two per IP not seen yet, within the route's cap."""
    missing = [ip for ip in route.ips if ip not in seen_ips]
    if not missing:
        return 0
    cap = cap_per_ip * len(route.ips)
    return max(0, min(2 * len(route.ips), cap - sent))


# ------------------------------------------------------------------------------------------- evidence


@dataclass(frozen=True)
class DkimSignature:
    domain: str  # d=
    selector: str  # s=
    valid: bool
    error: str = ""


@dataclass(frozen=True)
class Evidence:
    """Everything the receiving side saw of one message, plus DNS answers about it (from the resolver)."""

    tag: str
    host: str  # the sender host it was submitted to
    domain: str  # the sender domain it was sent for
    client_ip: str
    helo: str
    tls_protocol: str | None
    mail_from: str  # envelope sender ('' for the null sender)
    header_from: str  # address in From:
    ptr_names: tuple[str, ...] | None  # None: the PTR lookup failed (error in ptr_error)
    forward: Mapping[str, tuple[str, ...]]  # PTR name -> its A/AAAA addresses
    dkim: tuple[DkimSignature, ...]
    spf_result: str  # pass, fail, softfail, neutral, none, temperror, permerror
    spf_detail: str = ""
    dmarc_records: tuple[str, ...] = ()  # the DMARC records found by policy discovery (RFC 7489 6.6.3)
    dmarc_name: str = ""  # where they were found (or first looked for)
    ptr_error: str = ""
    dns_error: str = ""  # a lookup that failed with an error (not NXDOMAIN): evidence incomplete


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def domain_of(address: str) -> str:
    """The domain of an address (`"A" <a@b.test>` -> `b.test`), '' when there is none."""
    match = re.search(r"<([^<>]*)>", address)
    addr = match.group(1) if match else address
    return normalize_name(addr.rsplit("@", 1)[1]) if "@" in addr else ""


def judge(route: Route, ev: Evidence) -> dict[str, Check]:
    """The verdict of every check for one message that arrived (see the module docstring)."""
    checks: dict[str, Check] = {}
    ip = ev.client_ip

    if ip in route.ips:
        checks["ip"] = Check(True, f"{ip} is in pool {route.pool} on {route.host}")
    else:
        checks["ip"] = Check(
            False,
            f"came from {ip or '(unknown)'}, not an IP of pool {route.pool} on {route.host} "
            f"(expected one of {', '.join(route.ips)})",
        )

    expected_ptr = route.ptrs.get(ip)
    names = ev.ptr_names
    if names is None:
        checks["fcrdns"] = Check(False, f"PTR lookup of {ip} failed: {ev.ptr_error or 'no answer'}")
    elif not names:
        checks["fcrdns"] = Check(False, f"{ip} has no PTR (expected {expected_ptr or 'one'})")
    elif len(names) > 1:
        checks["fcrdns"] = Check(False, f"{ip} has {len(names)} PTRs ({', '.join(names)}); expected exactly one")
    else:
        name = names[0]
        back = ev.forward.get(name, ())
        if ip not in back:
            checks["fcrdns"] = Check(
                False,
                f"PTR {ip} -> {name}, but {name} resolves to {', '.join(back) or 'nothing'}, not {ip}",
            )
        elif expected_ptr is not None and normalize_name(name) != normalize_name(expected_ptr):
            checks["fcrdns"] = Check(False, f"PTR {ip} -> {name}; the inventory says {expected_ptr}")
        else:
            checks["fcrdns"] = Check(True, f"{ip} -> {name} -> {ip}")

    helo = normalize_name(ev.helo)
    if names:
        if len(names) == 1 and helo == normalize_name(names[0]):
            checks["helo"] = Check(True, f"HELO {helo} = PTR")
        else:
            checks["helo"] = Check(False, f"HELO {helo or '(none)'} from {ip} is not its PTR {', '.join(names)}")
    else:
        checks["helo"] = Check(False, f"HELO {helo or '(none)'} from {ip}: no PTR name to match")

    from_domain = domain_of(ev.header_from)
    where = ev.dmarc_name or next(iter(discovery_names(from_domain)), "_dmarc (no From domain)")
    policy: DmarcRecord | None = None
    no_policy = ""
    try:
        policy = dmarc_policy(ev.dmarc_records, where)
    except DmarcError as err:
        no_policy = str(err)
    adkim = policy.adkim if policy else "r"
    aspf = policy.aspf if policy else "r"

    good = [s for s in ev.dkim if s.valid]
    good_aligned = [s for s in good if aligned(s.domain, from_domain, adkim)]
    if good_aligned:
        sig = good_aligned[0]
        checks["dkim"] = Check(True, f"d={sig.domain} s={sig.selector} valid, aligned with From {from_domain}")
    elif good:
        sig = good[0]
        checks["dkim"] = Check(False, f"d={sig.domain} valid but not aligned with From {from_domain}")
    elif ev.dkim:
        checks["dkim"] = Check(
            False,
            "; ".join(f"d={s.domain} s={s.selector} invalid: {s.error or 'bad signature'}" for s in ev.dkim),
        )
    else:
        checks["dkim"] = Check(False, f"no DKIM-Signature (From {from_domain})")

    spf_domain = domain_of(ev.mail_from) or normalize_name(ev.helo)
    if ev.spf_result == "pass":
        checks["spf"] = Check(True, f"pass for {ip} (MAIL FROM {ev.mail_from or '<>'})")
    else:
        checks["spf"] = Check(
            False,
            f"{ev.spf_result} for {ip} in SPF of {spf_domain}" + (f": {ev.spf_detail}" if ev.spf_detail else ""),
        )

    if policy is None:
        checks["dmarc"] = Check(False, no_policy)
    elif policy.problems:
        checks["dmarc"] = Check(False, f"{where}: {'; '.join(policy.problems)}")
    else:
        # the organizational domain's record speaks for a subdomain From with sp= (RFC 7489 6.3)
        p = policy.sp if policy.sp and where != f"_dmarc.{from_domain}" else policy.p
        spf_aligned = ev.spf_result == "pass" and aligned(spf_domain, from_domain, aspf)
        via = [n for n, ok in (("DKIM", bool(good_aligned)), ("SPF", spf_aligned)) if ok]
        if via:
            checks["dmarc"] = Check(True, f"p={p} ({where}), pass via {' and '.join(via)}")
        else:
            checks["dmarc"] = Check(
                False, f"p={p} ({where}): neither DKIM nor SPF passes aligned with From {from_domain}"
            )

    if ev.tls_protocol:
        checks["tls"] = Check(True, ev.tls_protocol)
    else:
        checks["tls"] = Check(False, f"{ip} delivered without TLS")

    if ev.dns_error:  # evidence incomplete: say so on the checks that failed
        for name, check in checks.items():
            if not check.ok:
                checks[name] = Check(False, f"{check.detail} (DNS error: {ev.dns_error})")
    return checks


# ------------------------------------------------------------------------------------ received header


@dataclass(frozen=True)
class Hop:
    helo: str
    ip: str
    tls_protocol: str | None


_FROM = re.compile(r"^\s*from\s+(\S+)", re.IGNORECASE)
_BRACKETED = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]", re.IGNORECASE)
_BARE = re.compile(r"^(?:IPv6:)?([0-9A-Fa-f:.]+)$", re.IGNORECASE)
_EHLO = re.compile(r"\b(?:EHLO|HELO)\s+\"?([^\s\"()\[\]]+|\[[^\]\s]*\])", re.IGNORECASE)  # Yahoo, qmail, "EHLO x"
_HELO_EQ = re.compile(r"\bhelo=([^\s()]+)", re.IGNORECASE)  # Exim
_TLS_PROTO = re.compile(r"(TLS\s?v?1[._]\d|TLS1_\d|SSLv3)", re.IGNORECASE)
_WITH = re.compile(r"\bwith\s+(E?SMTPS?A?|UTF8SMTPS?A?|LMTPS?A?)\b", re.IGNORECASE)


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _from_clause(text: str) -> tuple[str, list[str]]:
    """The `from` clause of a Received header (`text` starts with `from`; the clause ends at `by` outside
    parentheses): its first word, and the rest of it: the top-level comments (the text inside each outermost
    pair of parentheses), then the other words."""
    depth, start = 0, 0
    comments: list[str] = []
    words: list[str] = []
    i = len("from")
    word = ""
    while i < len(text):
        ch = text[i]
        if ch == "(":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                comments.append(text[start:i])
        elif depth == 0 and ch.isspace():
            if word:
                if word.lower() == "by" and words:
                    break
                words.append(word)
            word = ""
        elif depth == 0:
            word += ch
        i += 1
    else:
        if word and word.lower() != "by":
            words.append(word)
    return (words[0] if words else ""), comments + words[1:]


def parse_received(value: str) -> Hop | None:
    """The hop a Received header records: HELO name, client IP, TLS protocol (None: not TLS); None when the
    header names no client IP.

    The forms the receiving MTAs of seed mailboxes write (tests/unit/test_readiness_received.py has a published
    example of each):

    - Postfix, Gmail: `from HELO (rDNS [IP]) (using TLSv1.3 ...) by MX with ESMTPS` / `... (version=TLS1_3 ...)`
    - Microsoft 365 / Outlook: `from HELO (IP) by MX (IP) with Microsoft SMTP Server (version=TLS1_2, ...)`
    - Yahoo: `from IP (EHLO HELO) by MX with SMTPs`, `from 127.0.0.1 (EHLO HELO) (IP) by MX with SMTPS`
    - Exim: `from rDNS ([IP]:port helo=HELO) by MX with esmtps (TLS1.3) ...`, `from [IP] (helo=HELO) ...`;
      Exim leaves out helo= when the HELO name is the verified host name, so the first word is the HELO then.

    Only the `from` clause is read for the client (the `by` part names the receiving server's own address).
    """
    text = " ".join(value.split())
    if not _FROM.match(text):
        return None
    first, comments = _from_clause(text)
    helo = first
    for comment in comments:
        named = _EHLO.search(comment) or _HELO_EQ.search(comment)
        if named:
            helo = named.group(1)
            break
    candidates = [m.group(1) for c in comments for m in _BRACKETED.finditer(c)]  # [IP], rDNS [IP], [IP]:port
    candidates += [c.strip() for c in comments if _BARE.match(c.strip())]  # (IP): Microsoft, Yahoo
    candidates += [m.group(1) for m in (_BRACKETED.match(first), _BARE.match(first)) if m]  # from [IP], from IP
    ip = next((a for a in map(_ip, (c.removeprefix("IPv6:") for c in candidates)) if a), None)
    if ip is None:
        return None
    rest = text[len("from ") + len(first):]
    proto_match = _TLS_PROTO.search(rest)
    with_match = _WITH.search(rest)
    tls: str | None = None
    if proto_match:
        raw = proto_match.group(1).replace(" ", "")
        minor = re.search(r"1[._](\d)", raw)
        tls = f"TLSv1.{minor.group(1)}" if minor and raw.upper().startswith("TLS") else raw
    elif with_match and with_match.group(1).upper().rstrip("A").endswith("S"):
        tls = "TLS"
    return Hop(helo=normalize_name(helo), ip=ip, tls_protocol=tls)


def hop_from_fleet(received: Sequence[str], fleet_ips: Iterable[str]) -> Hop | None:
    """The Received header (newest first) whose client IP is one of the fleet's: the MX's record of us."""
    ips = set(fleet_ips)
    parsed = [h for h in (parse_received(r) for r in received) if h is not None]
    for hop in parsed:
        if hop.ip in ips:
            return hop
    return parsed[0] if parsed else None


# ----------------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Submission:
    """What happened when one tagged message was submitted."""

    tag: str
    host: str
    domain: str
    accepted: bool
    error: str = ""  # SMTP reply when refused, or the connection error
    refused: bool = False  # the host answered with an SMTP error (vs could not connect)


@dataclass
class Row:
    host: str
    ip: str
    pool: str
    domain: str
    messages: int = 0
    checks: dict[str, Check | None] = field(default_factory=dict)
    verdict: Verdict = "unknown"
    problems: list[str] = field(default_factory=list)
    expected: bool = True  # False: an IP that is not in the route (mail came from somewhere unexpected)


@dataclass
class Summary:
    key: str
    verdict: Verdict
    rows: int
    problems: list[str]


@dataclass
class Report:
    rows: list[Row]
    by_ip: list[Summary]
    by_domain: list[Summary]
    sent: int
    accepted: int
    arrived: int
    missing: list[str]  # "tag (host, domain)" of accepted messages that never arrived

    @property
    def exit_code(self) -> int:
        verdicts = {r.verdict for r in self.rows}
        if "fail" in verdicts:
            return 1
        if "unknown" in verdicts or not self.rows:
            return 3
        return 0

    def to_json(self) -> dict[str, Any]:
        def row(r: Row) -> dict[str, Any]:
            return {
                "host": r.host,
                "ip": r.ip,
                "pool": r.pool,
                "domain": r.domain,
                "messages": r.messages,
                "verdict": r.verdict,
                "expected": r.expected,
                "checks": {
                    name: (None if c is None else {"ok": c.ok, "detail": c.detail}) for name, c in r.checks.items()
                },
                "problems": r.problems,
            }

        def summary(s: Summary) -> dict[str, Any]:
            return {"verdict": s.verdict, "rows": s.rows, "problems": s.problems}

        return {
            "verdict": {0: "pass", 1: "fail", 3: "unknown"}[self.exit_code],
            "exit_code": self.exit_code,
            "sent": self.sent,
            "accepted": self.accepted,
            "arrived": self.arrived,
            "missing": self.missing,
            "rows": [row(r) for r in self.rows],
            "by_ip": {s.key: summary(s) for s in self.by_ip},
            "by_domain": {s.key: summary(s) for s in self.by_domain},
        }


def _worst(verdicts: Iterable[Verdict]) -> Verdict:
    out: Verdict = "pass"
    for v in verdicts:
        if _RANK[v] > _RANK[out]:
            out = v
    return out


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def build_report(
    routes: Sequence[Route],
    submissions: Sequence[Submission],
    evidence: Sequence[Evidence],
    *,
    waited: float = 0.0,
) -> Report:
    """Per (IP, domain) rows and per-IP / per-domain summaries (see the module docstring for the rules)."""
    route_of = {(r.host, r.domain): r for r in routes}
    rows: dict[tuple[str, str, str], Row] = {}
    for r in routes:
        for ip in r.ips:
            rows[(r.host, ip, r.domain)] = Row(r.host, ip, r.pool, r.domain)

    arrived_tags = {e.tag for e in evidence}
    for ev in evidence:
        route = route_of.get((ev.host, ev.domain))
        if route is None:
            continue
        key = (ev.host, ev.client_ip, ev.domain)
        if key not in rows:
            rows[key] = Row(ev.host, ev.client_ip, route.pool, ev.domain, expected=False)
        row = rows[key]
        row.messages += 1
        for name, check in judge(route, ev).items():
            prev = row.checks.get(name)
            if prev is None or (prev.ok and not check.ok):
                row.checks[name] = check
            if not check.ok:
                row.problems.append(f"{name}: {check.detail}")

    per_route_sub: dict[tuple[str, str], list[Submission]] = {}
    for sub in submissions:
        per_route_sub.setdefault((sub.host, sub.domain), []).append(sub)
    per_route_arrived: dict[tuple[str, str], int] = {}
    for ev in evidence:
        per_route_arrived[(ev.host, ev.domain)] = per_route_arrived.get((ev.host, ev.domain), 0) + 1

    for (host, ip, domain), row in rows.items():
        row.problems = _unique(row.problems)
        if row.messages:
            for name in CHECKS:
                row.checks.setdefault(name, None)
            row.verdict = "fail" if row.problems else "pass"
            continue
        subs = per_route_sub.get((host, domain), [])
        refused = [s for s in subs if s.refused]
        unreachable = [s for s in subs if not s.accepted and not s.refused]
        accepted = [s for s in subs if s.accepted]
        row.checks = dict.fromkeys(CHECKS)
        lost = len(accepted) - per_route_arrived.get((host, domain), 0)
        if per_route_arrived.get((host, domain)) and lost > 0:
            row.verdict = "unknown"
            row.problems = [
                f"no message left by {ip} among {per_route_arrived[(host, domain)]} that arrived from {host} "
                f"for {domain}, and {lost} accepted message(s) never arrived"
                + (f" within {waited:.0f} s" if waited else "")
                + f": they may be queued on {host} for this IP (see its queue)"
            ]
        elif per_route_arrived.get((host, domain)):
            row.verdict = "fail"
            row.problems = [
                f"ip: no message left by {ip} among {per_route_arrived[(host, domain)]} that arrived from "
                f"{host} for {domain} (other IPs of pool {row.pool} were used): not in service (left out by "
                "the FCrDNS gate, or drained by the DNSBL monitor: journalctl -t sendfleet-monitor on the host)"
            ]
        elif refused and not accepted:
            row.verdict = "fail"
            row.problems = [f"submission: {host} refused mail for {domain}: {refused[0].error}"]
        elif unreachable and not accepted:
            row.verdict = "unknown"
            row.problems = [f"could not submit to {host} for {domain}: {unreachable[0].error}"]
        elif accepted:
            row.verdict = "unknown"
            row.problems = [
                f"no message arrived from {host} for {domain}: {len(accepted)} accepted, none arrived"
                + (f" within {waited:.0f} s" if waited else "")
            ]
        else:
            row.verdict = "unknown"
            row.problems = [f"nothing was submitted to {host} for {domain}"]

    ordered = sorted(rows.values(), key=lambda r: (r.host, _ip_key(r.ip), r.domain))

    def summarize(key_of: str) -> list[Summary]:
        groups: dict[str, list[Row]] = {}
        for r in ordered:
            groups.setdefault(getattr(r, key_of), []).append(r)
        return [
            Summary(
                key=k,
                verdict=_worst(r.verdict for r in rs),
                rows=len(rs),
                problems=_unique(
                    f"{r.host} {r.ip} {r.domain}: {p}" if key_of == "domain" else f"{r.domain}: {p}"
                    for r in rs
                    for p in r.problems
                ),
            )
            for k, rs in groups.items()
        ]

    by_sub = {s.tag: s for s in submissions}
    missing = [
        f"{s.tag} ({s.host}, {s.domain})" for s in submissions if s.accepted and s.tag not in arrived_tags
    ]
    return Report(
        rows=ordered,
        by_ip=summarize("ip"),
        by_domain=sorted(summarize("domain"), key=lambda s: s.key),
        sent=len(submissions),
        accepted=sum(1 for s in by_sub.values() if s.accepted),
        arrived=len(arrived_tags),
        missing=missing,
    )


def _ip_key(ip: str) -> tuple[int, int]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0)
    return (addr.version, int(addr))
