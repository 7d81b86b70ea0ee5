"""SPF (RFC 7208): build, parse and lint records, counting DNS lookups and void lookups (pure).

The lookup and void-lookup limits are counted over the whole evaluation tree (include/redirect are
followed through the injected `lookup`); with an offline lookup (status "unknown") nested records are not
followed and each DNS-querying term counts once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sendfleet.core.findings import Finding
from sendfleet.core.lookup import Lookup, unknown_lookup

MAX_LOOKUPS = 10  # RFC 7208 4.6.4
MAX_VOID_LOOKUPS = 2  # RFC 7208 4.6.4 (SHOULD)
MAX_MX_NAMES = 10
RECOMMENDED_MAX_BYTES = 450  # RFC 7208 3.4: keep the answer within 512-byte UDP

_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")
_TERM = re.compile(r"^([+\-~?]?)([a-z][a-z0-9_.-]*?)(?:([:=/])(.*))?$", re.IGNORECASE)
_DUAL_CIDR = re.compile(r"^(.*?)(?:/(\d{1,2}))?(?://(\d{1,3}))?$")


class SpfSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    qualifier: str  # "+", "-", "~", "?" ("" for modifiers)
    name: str  # mechanism or modifier name, lower case
    value: str  # domain-spec, address, or "" (without the /cidr part for a and mx)
    modifier: bool = False


@dataclass
class SpfCount:
    lookups: int = 0
    void: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_spf(text: str) -> bool:
    low = text.lower()
    return low == "v=spf1" or low.startswith("v=spf1 ")


def build(
    networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network], includes: Sequence[str], all_term: str
) -> str:
    """`v=spf1 ip4:.. ip6:.. include:.. ~all`; single addresses without /32 or /128."""
    terms = ["v=spf1"]
    for net in networks:
        kind = "ip4" if net.version == 4 else "ip6"
        single = net.prefixlen == net.max_prefixlen
        terms.append(f"{kind}:{net.network_address if single else net}")
    terms += [f"include:{d}" for d in includes]
    terms.append(all_term)
    return " ".join(terms)


def parse(record: str) -> list[Term]:
    """Parse one SPF record; SpfSyntaxError on anything RFC 7208 would call a permerror."""
    words = record.split()
    if not words or words[0].lower() != "v=spf1":
        raise SpfSyntaxError("does not start with 'v=spf1'")
    terms: list[Term] = []
    seen_mod: set[str] = set()
    for word in words[1:]:
        m = _TERM.match(word)
        if not m:
            raise SpfSyntaxError(f"bad term {word!r}")
        qual, name, sep, value = m.group(1), m.group(2).lower(), m.group(3), m.group(4) or ""
        if sep == "/":  # a/24, mx//64: a CIDR length without a domain
            sep, value = "", "/" + value
        if sep == "=":
            if qual:
                raise SpfSyntaxError(f"modifier {word!r} cannot have a qualifier")
            if name in ("redirect", "exp"):
                if name in seen_mod:
                    raise SpfSyntaxError(f"{name}= appears twice")
                seen_mod.add(name)
                _check_domain_spec(value, word)
            terms.append(Term("", name, value, modifier=True))
            continue
        if name not in _MECHANISMS:
            raise SpfSyntaxError(f"unknown mechanism {word!r}")
        qual = qual or "+"
        if name == "all":
            if sep:
                raise SpfSyntaxError(f"'all' takes no argument: {word!r}")
        elif name in ("ip4", "ip6"):
            if sep != ":" or not value:
                raise SpfSyntaxError(f"{name} needs an address: {word!r}")
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise SpfSyntaxError(f"bad address in {word!r}") from None
            if net.version != (4 if name == "ip4" else 6):
                raise SpfSyntaxError(f"{name} with an IPv{net.version} address: {word!r}")
        elif name in ("include", "exists"):
            if sep != ":" or not value:
                raise SpfSyntaxError(f"{name} needs a domain: {word!r}")
            _check_domain_spec(value, word)
        elif name in ("a", "mx", "ptr"):
            if sep == ":" and not value:
                raise SpfSyntaxError(f"empty domain in {word!r}")
            domain, v4, v6 = _DUAL_CIDR.match(value).groups()  # type: ignore[union-attr]
            if name == "ptr" and (v4 or v6):
                raise SpfSyntaxError(f"ptr takes no CIDR length: {word!r}")
            if (v4 and int(v4) > 32) or (v6 and int(v6) > 128):
                raise SpfSyntaxError(f"bad CIDR length in {word!r}")
            if domain:
                _check_domain_spec(domain, word)
            value = domain
        terms.append(Term(qual, name, value))
    return terms


def _check_domain_spec(value: str, word: str) -> None:
    if not value or " " in value or value.startswith(".") or ".." in value:
        raise SpfSyntaxError(f"bad domain in {word!r}")


def _has_macro(value: str) -> bool:
    return "%{" in value


def count(domain: str, record: str, lookup: Lookup = unknown_lookup) -> SpfCount:
    """Count DNS-querying terms and void lookups over the evaluation tree of `record` at `domain`."""
    result = SpfCount()
    _count(domain, record, lookup, result, {domain.lower()}, 0)
    return result


def _fetch_spf(target: str, lookup: Lookup, result: SpfCount, why: str) -> str | None:
    answer = lookup(target, "TXT")
    if answer.status == "unknown":
        result.notes.append(f"{why}: not followed offline")
        return None
    if answer.void:
        result.void += 1
        result.errors.append(f"{why}: {target} has no SPF record ({answer.status})")
        return None
    if answer.status == "error":
        result.errors.append(f"{why}: lookup of {target} failed ({answer.detail or 'error'})")
        return None
    spfs = [v for v in answer.values if is_spf(v)]
    if not spfs:
        result.errors.append(f"{why}: {target} has no SPF record")
        return None
    if len(spfs) > 1:
        result.errors.append(f"{why}: {target} has {len(spfs)} SPF records")
        return None
    return spfs[0]


def _count(domain: str, record: str, lookup: Lookup, result: SpfCount, seen: set[str], depth: int) -> None:
    try:
        terms = parse(record)
    except SpfSyntaxError as err:
        result.errors.append(f"{domain}: {err}")
        return
    for term in terms:
        if term.modifier and term.name != "redirect":
            continue
        if not term.modifier and term.name not in _LOOKUP_MECHANISMS:
            continue
        result.lookups += 1
        target = (term.value or domain).lower()
        if _has_macro(target):
            result.notes.append(f"{term.name}:{target}: macro, not expanded")
            continue
        if term.name in ("include", "redirect"):
            if target in seen:
                result.errors.append(f"{term.name}:{target}: loop")
                continue
            if depth > 10:
                continue
            nested = _fetch_spf(target, lookup, result, f"{term.name}:{target}")
            if nested is not None:
                _count(target, nested, lookup, result, seen | {target}, depth + 1)
        elif term.name in ("a", "exists"):
            answers = [lookup(target, "A")] + ([lookup(target, "AAAA")] if term.name == "a" else [])
            if all(a.void for a in answers):
                result.void += 1
        elif term.name == "mx":
            answer = lookup(target, "MX")
            if answer.void:
                result.void += 1
            elif len(answer.values) > MAX_MX_NAMES:
                result.errors.append(f"mx:{target}: {len(answer.values)} MX names (more than {MAX_MX_NAMES})")


def lint(
    domain: str, txt_values: Sequence[str], lookup: Lookup = unknown_lookup, *, check: str = "spf"
) -> list[Finding]:
    """Lint the SPF of `domain` given all its TXT values (as published)."""
    spfs = [v for v in txt_values if is_spf(v)]
    if not spfs:
        return [Finding("error", domain, check, "no SPF record (v=spf1)")]
    if len(spfs) > 1:
        return [Finding("error", domain, check, f"{len(spfs)} SPF records: receivers treat this as a permerror")]
    record = spfs[0]
    findings: list[Finding] = []
    try:
        terms = parse(record)
    except SpfSyntaxError as err:
        return [Finding("error", domain, check, f"syntax: {err}")]
    counted = count(domain, record, lookup)
    for error in counted.errors:
        findings.append(Finding("error", domain, check, error))
    if counted.lookups > MAX_LOOKUPS:
        findings.append(
            Finding(
                "error",
                domain,
                check,
                f"{counted.lookups} DNS lookups (RFC 7208 allows {MAX_LOOKUPS}): permerror",
            )
        )
    if counted.void > MAX_VOID_LOOKUPS:
        findings.append(
            Finding(
                "error",
                domain,
                check,
                f"{counted.void} void lookups (RFC 7208 allows {MAX_VOID_LOOKUPS}): permerror",
            )
        )
    all_terms = [t for t in terms if not t.modifier and t.name == "all"]
    redirect = any(t.modifier and t.name == "redirect" for t in terms)
    if all_terms and all_terms[0].qualifier == "+":
        findings.append(Finding("error", domain, check, "'+all' lets every host on the internet pass SPF"))
    elif all_terms and all_terms[0].qualifier == "?":
        findings.append(Finding("warning", domain, check, "'?all' is neutral: unlisted senders are not failed"))
    elif not all_terms and not redirect:
        findings.append(Finding("warning", domain, check, "no 'all' term: unlisted senders get neutral"))
    if any(not t.modifier and t.name == "ptr" for t in terms):
        findings.append(Finding("warning", domain, check, "'ptr' mechanism: RFC 7208 says do not use it"))
    size = len(record.encode())
    if size > RECOMMENDED_MAX_BYTES:
        findings.append(Finding("warning", domain, check, f"record is {size} bytes (RFC 7208 3.4: keep it under 450)"))
    if not any(f.status == "error" for f in findings):
        extra = f"; {'; '.join(counted.notes)}" if counted.notes else ""
        findings.append(
            Finding("ok", domain, check, f"SPF valid: {counted.lookups} lookup(s), {counted.void} void{extra}")
        )
    return findings
