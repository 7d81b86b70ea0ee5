"""DMARC (RFC 7489) record linter (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sendfleet.core.dkim import parse_tags
from sendfleet.core.findings import Finding

_POLICIES = ("none", "quarantine", "reject")
_URI = re.compile(r"^(mailto:[^@\s]+@[^@\s!]+|https?://\S+)(![0-9]+[kmgt]?)?$", re.IGNORECASE)


def is_dmarc(text: str) -> bool:
    return text.replace(" ", "").lower().startswith("v=dmarc1")


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
