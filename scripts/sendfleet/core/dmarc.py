"""DMARC (RFC 7489), pure: organizational domains, policy discovery names, identifier alignment, and the record
linter of `sendfleet dns check`.

Organizational domain (RFC 7489 3.2): the public suffix of a name plus one label, from the Public Suffix List
shipped by the pinned `publicsuffixlist` package. Both sections of the list are used, ICANN and private (as
OpenDMARC and the receivers that load the whole list do): `a.github.io` and `b.github.io` belong to different
owners, so they are different organizations and never align in relaxed mode. A name that is not under a known
suffix uses its last label as the suffix (the list's default rule `*`): the lab's `mta1.shop.test` belongs to
`shop.test`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from publicsuffixlist import PublicSuffixList

from sendfleet.core.dkim import parse_tags
from sendfleet.core.findings import Finding

_POLICIES = ("none", "quarantine", "reject")
_URI = re.compile(r"^(mailto:[^@\s]+@[^@\s!]+|https?://\S+)(![0-9]+[kmgt]?)?$", re.IGNORECASE)


def is_dmarc(text: str) -> bool:
    return text.replace(" ", "").lower().startswith("v=dmarc1")


# ----------------------------------------------------------------------- organizational domain, alignment


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList(only_icann=False, accept_unknown=True)


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def org_domain(name: str) -> str:
    """The organizational domain (RFC 7489 3.2): public suffix + one label (`mailer.evil.co.uk` -> `evil.co.uk`).
    A name that is itself a public suffix (or not a domain name) is its own organizational domain."""
    domain = _name(name)
    if not domain:
        return ""
    org = _psl().privatesuffix(domain)
    return str(org) if org else domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """Identifier alignment (RFC 7489 3.1): strict = the same name, relaxed = the same organizational domain."""
    a, b = _name(identifier), _name(from_domain)
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return org_domain(a) == org_domain(b)


def discovery_names(from_domain: str) -> list[str]:
    """Where a receiver looks for the policy (RFC 7489 6.6.3): `_dmarc.<From domain>`, then `_dmarc.<its
    organizational domain>` when that is another name."""
    domain = _name(from_domain)
    if not domain:
        return []
    names = [f"_dmarc.{domain}"]
    org = org_domain(domain)
    if org != domain:
        names.append(f"_dmarc.{org}")
    return names


# ------------------------------------------------------------------------------------------- linter


def lint(domain: str, txt_values: Sequence[str]) -> list[Finding]:
    """Lint the TXT values at _dmarc.<domain>."""
    check = "dmarc"
    records = [v for v in txt_values if is_dmarc(v)]
    if not records:
        return [Finding("error", domain, check, "no DMARC record at _dmarc")]
    if len(records) > 1:
        return [Finding("error", domain, check, f"{len(records)} DMARC records: receivers ignore them all")]
    try:
        tags = parse_tags(records[0])
    except ValueError as err:
        return [Finding("error", domain, check, f"syntax: {err}")]
    if next(iter(tags)) != "v" or tags["v"] != "DMARC1":
        return [Finding("error", domain, check, "v=DMARC1 must come first")]
    if list(tags)[1:2] != ["p"]:
        return [Finding("error", domain, check, "p= must be present and follow v=DMARC1")]
    findings: list[Finding] = []
    p = tags["p"].lower()
    if p not in _POLICIES:
        return [Finding("error", domain, check, f"p={tags['p']}: not none, quarantine or reject")]
    if "sp" in tags and tags["sp"].lower() not in _POLICIES:
        findings.append(Finding("error", domain, check, f"sp={tags['sp']}: not none, quarantine or reject"))
    for tag in ("adkim", "aspf"):
        if tag in tags and tags[tag].lower() not in ("r", "s"):
            findings.append(Finding("error", domain, check, f"{tag}={tags[tag]}: alignment must be r or s"))
    if "pct" in tags:
        if not tags["pct"].isdigit() or int(tags["pct"]) > 100:
            findings.append(Finding("error", domain, check, f"pct={tags['pct']}: not 0..100"))
        elif int(tags["pct"]) < 100:
            findings.append(Finding("warning", domain, check, f"pct={tags['pct']}: policy applies to part of the mail"))
    for tag in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(tag, "").split(","))):
            if not _URI.match(uri):
                findings.append(Finding("error", domain, check, f"{tag}: {uri!r} is not a mailto:/https: URI"))
            elif uri.lower().startswith("mailto:"):
                target = uri.split("@", 1)[1].split("!", 1)[0].lower()
                if target != domain and not target.endswith("." + domain) and not domain.endswith("." + target):
                    findings.append(
                        Finding(
                            "warning",
                            domain,
                            check,
                            f"{tag} goes to {target}: it must publish {domain}._report._dmarc.{target} (RFC 7489 7.1)",
                        )
                    )
    if "rua" not in tags:
        findings.append(Finding("warning", domain, check, "no rua=: you will receive no aggregate reports"))
    if not any(f.status == "error" for f in findings):
        align = f"adkim={tags.get('adkim', 'r')}, aspf={tags.get('aspf', 'r')}"
        note = " (monitoring only)" if p == "none" else ""
        findings.append(Finding("ok", domain, check, f"DMARC p={p}{note}, {align}"))
    return findings
