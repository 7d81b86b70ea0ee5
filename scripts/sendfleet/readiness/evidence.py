"""Evidence about one received message, from DNS as the world sees it (the inventory's resolver).

Independent of the code that configured the fleet: PTR/A/AAAA/TXT through dnspython, DKIM through dkimpy
(keys fetched from DNS), SPF through pyspf. Nothing here reads the planner's records or the gate's verdicts.
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename
import spf

from sendfleet.core.dmarc import Discovery, discover, discovery_names
from sendfleet.core.inventory import ResolverSettings, normalize_name
from sendfleet.core.readiness import DkimSignature, Evidence, domain_of
from sendfleet.dns.resolve import make_resolver

_SPF_LOCK = threading.Lock()


class DnsError(Exception):
    """A lookup that failed with an error (timeout, SERVFAIL), not a plain 'no such record'."""


@dataclass(frozen=True)
class Collected:
    """One tagged message as the receiving MX saw it."""

    tag: str
    client_ip: str
    helo: str
    tls_protocol: str | None
    mail_from: str
    raw: bytes


class DnsView:
    """Lookups through the inventory's resolver (`dns_resolver`, default: the system's), cached per run."""

    def __init__(self, settings: ResolverSettings, *, timeout: float = 3.0, lifetime: float = 10.0) -> None:
        self.resolver = make_resolver(settings, timeout=timeout, lifetime=lifetime)
        self._cache: dict[tuple[str, str], list[Any] | None] = {}

    @property
    def where(self) -> str:
        return ", ".join(str(n) for n in self.resolver.nameservers) + f" port {self.resolver.port}"

    def _answer(self, name: str, rdtype: str) -> list[Any] | None:
        """The rdatas (None: NXDOMAIN; []: no data of that type). Raises DnsError on failure."""
        key = (normalize_name(name), rdtype)
        if key in self._cache:
            return self._cache[key]
        try:
            answer = self.resolver.resolve(key[0] + ".", rdtype, raise_on_no_answer=False, search=False)
            result: list[Any] | None = list(answer.rrset) if answer.rrset is not None else []
        except dns.resolver.NXDOMAIN:
            result = None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as err:
            raise DnsError(f"{rdtype} {key[0]} via {self.where}: {type(err).__name__}") from None
        self._cache[key] = result
        return result

    def ptr(self, ip: str) -> tuple[str, ...]:
        rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        return tuple(normalize_name(r.target.to_text()) for r in self._answer(rev, "PTR") or [])

    def addresses(self, name: str) -> tuple[str, ...]:
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            out += [str(ipaddress.ip_address(r.address)) for r in self._answer(name, rdtype) or []]
        return tuple(out)

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._answer(name, "TXT") or []]

    # --- for dkimpy: dnsfunc(name, timeout=5) -> the TXT bytes or None -------------------------------
    def dkim_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        try:
            rdatas = self._answer(text, "TXT")
        except DnsError as err:
            raise dkim.DnsTimeoutError(str(err)) from None
        for r in rdatas or []:
            return b"".join(r.strings)
        return None

    # --- for pyspf: DNSLookup(name, qtype, strict, timeout) -> [((name, qtype), value)] ----------------
    def spf_lookup(self, name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
        try:
            rdatas = self._answer(name, qtype)
        except DnsError as err:
            raise spf.TempError(f"DNS {err}") from None
        out: list[Any] = []
        for r in rdatas or []:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), r.address))
            elif qtype == "MX":
                out.append(((name, qtype), (r.preference, r.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), r.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), r.strings))
            elif qtype == "CNAME":
                out.append(((name, qtype), r.target.to_text(True)))
        return out

    def spf_check(self, ip: str, mail_from: str, helo: str) -> tuple[str, str]:
        """pyspf's check2 with every lookup through this resolver (pyspf has one module-level hook)."""
        sender = mail_from or f"postmaster@{helo}"
        with _SPF_LOCK:
            original = spf.DNSLookup
            spf.DNSLookup = self.spf_lookup
            try:
                result, explanation = spf.check2(i=ip, s=sender, h=helo, querytime=20)
            finally:
                spf.DNSLookup = original
        return str(result), str(explanation)


_TAG = re.compile(r"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


def _sig_tags(value: str) -> dict[str, str]:
    return {m.group(1): "".join(m.group(2).split()) for m in _TAG.finditer(value)}


def dkim_signatures(view: DnsView, raw: bytes) -> tuple[DkimSignature, ...]:
    """Every DKIM-Signature of the message, each verified by dkimpy with its key fetched from DNS."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # stores often keep LF line ends
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    headers = msg.get_all("DKIM-Signature") or []
    out: list[DkimSignature] = []
    for idx, value in enumerate(headers):
        tags = _sig_tags(" ".join(str(value).split()))
        d, s = tags.get("d", ""), tags.get("s", "")
        try:
            ok = bool(dkim.DKIM(raw).verify(idx=idx, dnsfunc=view.dkim_txt))
            error = "" if ok else "signature does not verify against the key in DNS"
        except dkim.DKIMException as err:
            ok, error = False, str(err)
        out.append(DkimSignature(domain=normalize_name(d), selector=s, valid=ok, error=error))
    return tuple(out)


def gather(view: DnsView, msg: Collected, host: str, domain: str) -> Evidence:
    """Look up everything `judge` needs about one message."""
    errors: list[str] = []
    parsed = email.message_from_bytes(msg.raw, policy=email.policy.compat32)
    header_from = str(parsed.get("From", ""))

    ptr_names: tuple[str, ...] | None = None
    ptr_error = ""
    forward: dict[str, tuple[str, ...]] = {}
    try:
        ptr_names = view.ptr(msg.client_ip)
        for name in ptr_names:
            forward[name] = view.addresses(name)
    except (DnsError, ValueError) as err:
        ptr_error = str(err)
        errors.append(str(err))

    sigs = dkim_signatures(view, msg.raw)
    spf_result, spf_detail = view.spf_check(msg.client_ip, msg.mail_from, msg.helo)

    from_domain = domain_of(header_from)
    try:
        policy = discover(from_domain, view.txt)
    except DnsError as err:
        errors.append(str(err))
        policy = Discovery(next(iter(discovery_names(from_domain)), ""))

    return Evidence(
        tag=msg.tag,
        host=host,
        domain=domain,
        client_ip=msg.client_ip,
        helo=msg.helo,
        tls_protocol=msg.tls_protocol,
        mail_from=msg.mail_from,
        header_from=header_from,
        ptr_names=ptr_names,
        forward=forward,
        dkim=sigs,
        spf_result=spf_result,
        spf_detail=spf_detail,
        dmarc_records=policy.records,
        dmarc_name=policy.name,
        ptr_error=ptr_error,
        dns_error="; ".join(errors),
    )


def gather_all(view: DnsView, items: Sequence[tuple[Collected, str, str]]) -> list[Evidence]:
    return [gather(view, msg, host, domain) for msg, host, domain in items]
